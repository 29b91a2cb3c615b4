-- Records push outcomes in order: an event each while the challenge is pending, an audit record always.
-- KEYS[1] challenge hash. ARGV[3] challenge id, ARGV[4..] device id / failure reason pairs (reason ''
-- when delivered). Returns the number of events published.
local id = ARGV[3]
local now = now_ms()
local c = redis.call('HMGET', KEYS[1], 'account', 'state', 'targets', 'seq')
if not c[1] then return 0 end
local seq, published = tonumber(c[4]), 0
for i = 4, #ARGV - 1, 2 do
  local device_id, failure = ARGV[i], ARGV[i + 1]
  local kind = 'push_delivered'
  if failure ~= '' then kind = 'push_failed' end
  audit(c[1], now, kind, 'relay', id, device_id, failure)
  if c[2] == 'pending' and string.find(c[3], ',' .. device_id .. ',', 1, true) then
    seq = record_push(KEYS[1], id, seq, now, device_id, failure)
    published = published + 1
  end
end
if published > 0 then redis.call('HSET', KEYS[1], 'seq', seq) end
return published
