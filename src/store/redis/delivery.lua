-- Records push outcomes in order: an event each while the challenge is pending, an audit record always.
-- KEYS[1] challenge hash. ARGV[3] challenge id, ARGV[4..] device id / outcome pairs, the outcome as
-- stored in `dl:<device>` (codec::delivery_value): 'delivered:<channel>' or 'failed:<reason>'.
-- Returns the number of events published.
local id = ARGV[3]
local now = now_ms()
local c = redis.call('HMGET', KEYS[1], 'account', 'state', 'targets', 'seq')
if not c[1] then return 0 end
local seq, published, fields = tonumber(c[4]), 0, {}
for i = 4, #ARGV - 1, 2 do
  local device_id, value = ARGV[i], ARGV[i + 1]
  local kind, detail = 'push_delivered', string.sub(value, 11)
  if string.sub(value, 1, 7) == 'failed:' then kind, detail = 'push_failed', string.sub(value, 8) end
  audit_challenge(c[1], now, kind, 'relay', id, device_id, detail)
  if c[2] == 'pending' and string.find(c[3], ',' .. device_id .. ',', 1, true) then
    seq = record_push(fields, id, seq, now, device_id, value)
    published = published + 1
  end
end
if published > 0 then redis.call('HSET', KEYS[1], 'seq', seq, unpack(fields)) end
return published
