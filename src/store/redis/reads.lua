-- Read-only helpers in one round trip. ARGV[3] what: 'devices' (KEYS[1] device list) returns every device
-- hash; 'sign_in' (KEYS[1] device list, KEYS[2] known sign-ins, KEYS[3] authenticators) returns what
-- evaluating a sign-in reads: {devices as 'devices' does, the known hash, the authenticators hash, now};
-- 'pending' (KEYS[1] pending index, ARGV[4] device id) returns the hashes of pending challenges
-- targeting the device, oldest first.
local now = now_ms()
local out = {}
if ARGV[3] == 'devices' or ARGV[3] == 'sign_in' then
  for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
    local d = redis.call('HGETALL', PREFIX .. 'dev:' .. id)
    if #d > 0 then table.insert(out, {id, d}) end
  end
  if ARGV[3] == 'sign_in' then
    return {out, redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]), now}
  end
else
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
    local c = redis.call('HGETALL', PREFIX .. 'ch:' .. id)
    local h = {}
    for i = 1, #c, 2 do h[c[i]] = c[i + 1] end
    if h.state == 'pending' and string.find(h.targets or '', ',' .. ARGV[4] .. ',', 1, true) then
      table.insert(out, {id, c})
    end
  end
end
return out
