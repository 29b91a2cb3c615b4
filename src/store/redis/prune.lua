-- Removes a push token a provider reported dead, if it is still the device's token or its fallback's (the
-- phone may have sent a fresh one meanwhile). KEYS[1] device hash. ARGV[3] device id, ARGV[4] token,
-- ARGV[5] reason.
local t = redis.call('HMGET', KEYS[1], 'token', 'fb_token', 'account')
local detail = ARGV[5]
if t[1] == ARGV[4] then
  redis.call('HDEL', KEYS[1], 'token')
elseif t[2] == ARGV[4] then
  redis.call('HDEL', KEYS[1], 'fb_token')
  detail = 'fallback: ' .. detail
else
  return 0
end
audit(t[3], now_ms(), 'push_token_pruned', 'relay', '', ARGV[3], detail)
return 1
