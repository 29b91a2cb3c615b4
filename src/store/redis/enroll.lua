-- Consumes an enrollment ticket and registers the device. KEYS[1] enrollment hash.
-- ARGV[3] device id, ARGV[4] max devices, ARGV[5] its sealed offline-code secret ('' for none; saved in
-- the account's authenticators as authenticator.lua does), ARGV[6] the audit detail (its attestation
-- verdict, attest::Verdict::summary), ARGV[7..] device field/value pairs.
local e = redis.call('HMGET', KEYS[1], 'account', 'expires')
local now = now_ms()
if not e[1] or tonumber(e[2]) <= now then return {'bad_ticket'} end
local account, device_id = e[1], ARGV[3]
local list = PREFIX .. 'devs:' .. account
local count = 0
for _, id in ipairs(redis.call('LRANGE', list, 0, -1)) do
  local st = redis.call('HGET', PREFIX .. 'dev:' .. id, 'state')
  if st and st ~= 'revoked' then count = count + 1 end
end
if count >= tonumber(ARGV[4]) then return {'too_many'} end
redis.call('DEL', KEYS[1])
local fields = {}
for i = 7, #ARGV do table.insert(fields, ARGV[i]) end
local dev_key = PREFIX .. 'dev:' .. device_id
redis.call('HSET', dev_key, 'account', account, 'state', 'active', 'counter', 0, 'created', now, 'seen', now,
  'renewed', now, unpack(fields))
redis.call('PEXPIRE', dev_key, LONG_TTL_MS)
redis.call('RPUSH', list, device_id)
redis.call('PEXPIRE', list, LONG_TTL_MS)
audit(account, now, 'device_enrolled', 'device:' .. device_id, '', device_id, ARGV[6])
if ARGV[5] ~= '' then
  local otp = PREFIX .. 'otp:' .. account
  redis.call('HSET', otp, device_id, device_id .. '\t' .. now .. '\t' .. ARGV[5], device_id .. ':u', -1)
  redis.call('PEXPIRE', otp, LONG_TTL_MS)
  audit(account, now, 'authenticator_created', 'device:' .. device_id, '', device_id, device_id)
end
return {'ok', account, now}
