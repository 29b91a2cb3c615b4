-- Stores an enrollment ticket digest until it expires. KEYS[1] enrollment hash.
-- ARGV[3] account, ARGV[4] ttl ms.
local now = now_ms()
local expires = now + tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'account', ARGV[3], 'expires', expires)
redis.call('PEXPIREAT', KEYS[1], expires)
audit(ARGV[3], now, 'enrollment_created', 'backend', '', '', '')
return expires
