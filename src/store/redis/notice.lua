-- Creates a notice for every active device of the account except the one it is about and the one signing
-- in, keeps the account's newest notices listed (older ones leave the list, not the store), and audits it. One atomic step.
-- KEYS[1] account's device list, KEYS[2] notice hash, KEYS[3] account's notice index.
-- ARGV[3] notice id, ARGV[4] account, ARGV[5] ttl ms, ARGV[6] subject device id or '', ARGV[7] signing-in
-- device id or '', ARGV[8] notices kept per account, ARGV[9] kind, ARGV[10] challenge id or '',
-- ARGV[11..] field/value pairs (login context, sign-in reference).
local id, account, subject, excluded = ARGV[3], ARGV[4], ARGV[6], ARGV[7]
local targets, devices = active_devices(KEYS[1], subject, excluded)
if #targets == 0 then return {'nodevices'} end
local now = now_ms()
local expires = now + tonumber(ARGV[5])
local fields = {}
for i = 11, #ARGV do table.insert(fields, ARGV[i]) end
redis.call('HSET', KEYS[2], 'account', account, 'kind', ARGV[9], 'created', now, 'expires', expires,
  'targets', ',' .. table.concat(targets, ',') .. ',', 'subject', subject, 'challenge', ARGV[10], unpack(fields))
redis.call('PEXPIREAT', KEYS[2], expires)
-- Scored by creation time, but strictly increasing, so that notices of the same millisecond keep their order.
local score = now
local top = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
if top[2] and tonumber(top[2]) >= score then score = tonumber(top[2]) + 1 end
redis.call('ZADD', KEYS[3], score, id)
-- The newest ones are listed; each notice stays fetchable until its own expiry (7 days).
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[8]) + 1))
redis.call('PEXPIREAT', KEYS[3], expires)
audit(account, now, 'notice_sent', 'relay', ARGV[10], subject, ARGV[9] .. ' ' .. id)
return {'ok', now, targets, devices}
