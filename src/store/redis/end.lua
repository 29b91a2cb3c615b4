-- Expires (if due by Redis time) or cancels a pending challenge. KEYS[1] challenge hash.
-- ARGV[3] challenge id, ARGV[4] 'expired' or 'cancelled', ARGV[5..7] cool-down base, max, fraud mute (ms).
local id, target = ARGV[3], ARGV[4]
-- The whole hash, read once: its fields decide, and it is returned as it ends up (hash_put).
local flat = redis.call('HGETALL', KEYS[1])
local h = hash_table(flat)
local c = {h.account, h.state, h.expires, h.seq, h.targets}
if not c[1] then return {'missing'} end
if c[2] ~= 'pending' then return {'ended', c[2], flat} end
local now = now_ms()
if target == 'expired' and now < tonumber(c[3]) then return {'notdue', tonumber(c[3]) - now} end
-- Nothing but expiry happens after the deadline (challenge::State, Challenge::cancel).
if now >= tonumber(c[3]) then target = 'expired' end
local at = now
local seq = tonumber(c[4]) + 1
local ended = {'state', target, 'ended', at, 'seq', seq}
redis.call('HSET', KEYS[1], unpack(ended))
hash_put(flat, ended)
unpend(c[1], id)
local actor = 'backend'
if target == 'expired' then actor = 'relay' end
audit_challenge(c[1], now, ended_kind(target), actor, id, '', '')
publish(id, seq, at, target, '', '')
cool_after(c[1], target, now, tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]))
return {'ok', seq, at, flat, withdraw_targets(c[5], '')}
