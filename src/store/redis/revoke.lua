-- Revokes a device of an account. KEYS[1] device hash. ARGV[3] account, ARGV[4] device id, ARGV[5] actor.
local d = redis.call('HMGET', KEYS[1], 'account', 'state')
if not d[1] or d[1] ~= ARGV[3] then return 'missing' end
if d[2] == 'revoked' then return 'already' end
redis.call('HSET', KEYS[1], 'state', 'revoked')
audit(ARGV[3], now_ms(), 'device_revoked', ARGV[5], '', ARGV[4], '')
return 'ok'
