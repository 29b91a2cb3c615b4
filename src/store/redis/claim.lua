-- Claims a challenge's unfinished pushes for this replica (challenge::Challenge::claim_pushes): one atomic
-- step, so that of racing claimants one wins. KEYS[1] challenge hash.
-- ARGV[3] challenge id, ARGV[4] the owner the claimant saw, ARGV[5] the claimant, ARGV[6] most claims,
-- ARGV[7] ms before the deadline when pushes are given up, ARGV[8] the reason recorded for given-up pushes.
-- Returns {'gone'} | {'ended'} | {'done'} | {'moved', owner} | {'gaveup', n} | {'send', hash, devices}.
local id = ARGV[3]
local c = redis.call('HMGET', KEYS[1], 'state', 'targets', 'pusher', 'claims', 'expires', 'account', 'seq')
if not c[1] then return {'gone'} end
if c[1] ~= 'pending' then return {'ended'} end
local left = {}
for device_id in string.gmatch(c[2] or '', '[^,]+') do
  if redis.call('HEXISTS', KEYS[1], 'dl:' .. device_id) == 0 then table.insert(left, device_id) end
end
if #left == 0 then return {'done'} end
if (c[3] or '') ~= ARGV[4] then return {'moved', c[3] or ''} end
local now = now_ms()
if tonumber(c[4] or '0') >= tonumber(ARGV[6]) or now >= tonumber(c[5]) - tonumber(ARGV[7]) then
  local seq, fields = tonumber(c[7]), {}
  for _, device_id in ipairs(left) do
    audit_challenge(c[6], now, 'push_failed', 'relay', id, device_id, ARGV[8])
    seq = record_push(fields, id, seq, now, device_id, 'failed:' .. ARGV[8])
  end
  redis.call('HSET', KEYS[1], 'seq', seq, unpack(fields))
  return {'gaveup', #left}
end
redis.call('HSET', KEYS[1], 'pusher', ARGV[5])
redis.call('HINCRBY', KEYS[1], 'claims', 1)
local devices = {}
for _, device_id in ipairs(left) do
  local d = redis.call('HGETALL', PREFIX .. 'dev:' .. device_id)
  if #d > 0 then table.insert(devices, {device_id, d}) end
end
return {'send', redis.call('HGETALL', KEYS[1]), devices}
