-- Saves an offline-code authenticator (factor::Authenticator) in the account's set: field <id> holds
-- "<device id>\t<created ms>\t<sealed secret>", <id>:p a pending one's activation deadline, <id>:u the last
-- used time step. Pending ones past their deadline are dropped first; a standalone one (no device) is
-- refused when the account has ARGV[6] already. KEYS[1] the set; ARGV[3] id, ARGV[4] device id ('' for
-- standalone), ARGV[5] sealed secret, ARGV[6] standalone cap, ARGV[7] how long it may stay pending, ms ('' when
-- active), ARGV[8] account, ARGV[9] actor. Returns 1 when saved, 0 when refused.
local now = now_ms()
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  local id = string.match(f, '^(.*):p$')
  if id and tonumber(redis.call('HGET', KEYS[1], f)) <= now then
    redis.call('HDEL', KEYS[1], id, id .. ':p', id .. ':u')
  end
end
local standalone = 0
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if not string.find(f, ':', 1, true) and string.sub(redis.call('HGET', KEYS[1], f), 1, 1) == '\t' then
    standalone = standalone + 1
  end
end
if ARGV[4] == '' and standalone >= tonumber(ARGV[6]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4] .. '\t' .. now .. '\t' .. ARGV[5], ARGV[3] .. ':u', -1)
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], ARGV[3] .. ':p', now + tonumber(ARGV[7])) end
redis.call('PEXPIRE', KEYS[1], LONG_TTL_MS)
audit(ARGV[8], now, 'authenticator_created', ARGV[9], '', ARGV[4], ARGV[3])
return 1
