-- Removes a push token a provider reported dead, if it is still the device's token (the phone may have
-- sent a fresh one meanwhile). KEYS[1] device hash. ARGV[3] device id, ARGV[4] token, ARGV[5] reason.
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[4] then return 0 end
redis.call('HDEL', KEYS[1], 'token')
audit(redis.call('HGET', KEYS[1], 'account'), now_ms(), 'push_token_pruned', 'relay', '', ARGV[3], ARGV[5])
return 1
