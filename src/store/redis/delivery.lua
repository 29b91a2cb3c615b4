-- Records a push outcome: an event while the challenge is pending, an audit record always.
-- KEYS[1] challenge hash. ARGV[3] challenge id, ARGV[4] device id, ARGV[5] failure reason ('' when delivered).
local id, device_id, failure = ARGV[3], ARGV[4], ARGV[5]
local now = now_ms()
local c = redis.call('HMGET', KEYS[1], 'account', 'state', 'targets', 'seq')
if not c[1] then return 0 end
local kind = 'push_delivered'
if failure ~= '' then kind = 'push_failed' end
audit(c[1], now, kind, 'relay', id, device_id, failure)
if c[2] ~= 'pending' or not string.find(c[3], ',' .. device_id .. ',', 1, true) then return 0 end
local seq = tonumber(c[4]) + 1
redis.call('HSET', KEYS[1], 'seq', seq)
if failure == '' then publish(id, seq, now, 'delivered', device_id, '') else publish(id, seq, now, 'failed', device_id, failure) end
return 1
