-- Counter rule for a device call, with an optional change: a new push token or a new key.
-- KEYS[1] device hash. ARGV[3] device id, ARGV[4] counter, ARGV[5] op (touch|token|key), ARGV[6], ARGV[7] values.
local device_id = ARGV[3]
local now = now_ms()
local refused, account = accept_counter(KEYS[1], device_id, ARGV[4], now)
if refused then return {'refused', refused} end
if ARGV[5] == 'token' then
  redis.call('HSET', KEYS[1], 'token', ARGV[6])
  audit(account, now, 'push_token_updated', 'device:' .. device_id, '', device_id, '')
elseif ARGV[5] == 'key' then
  redis.call('HSET', KEYS[1], 'alg', ARGV[6], 'key', ARGV[7])
  audit(account, now, 'key_rotated', 'device:' .. device_id, '', device_id, '')
end
return {'ok', now}
