-- Counter rule for a device call, with an optional change: a new push token or a new key.
-- KEYS[1] device hash. ARGV[3] device id, ARGV[4] counter, ARGV[5] op (touch|token|key), ARGV[6], ARGV[7] values
-- (token: the new token and the new fallback token or ''; key: the algorithm and the key), ARGV[8] the key
-- the call's signature verified with.
-- Returns {'refused', reason} or {'ok', now, the device hash as the step left it} (no second read); op
-- 'challenge' (KEYS[2] a challenge hash in the device's slot) adds that challenge's hash, read after the
-- counter rule let the call through.
local device_id = ARGV[3]
local now = now_ms()
local refused, account = accept_counter(KEYS[1], device_id, ARGV[4], ARGV[8], now)
if refused then return {'refused', refused} end
if ARGV[5] == 'token' then
  -- Two phones with one key take turns registering their own token (auth::is_token_flip).
  local t = redis.call('HMGET', KEYS[1], 'token', 'ptoken', 'tchanged')
  if ARGV[6] ~= t[1] then
    if t[2] and t[2] ~= '' and t[2] == ARGV[6] and now - tonumber(t[3] or 0) < 86400000 then
      redis.call('HSET', KEYS[1], 'state', 'clone')
      audit(account, now, 'clone_suspected', 'device:' .. device_id, '', device_id,
        'push token switched back within a day')
      return {'refused', 'token_flip'}
    end
    redis.call('HSET', KEYS[1], 'token', ARGV[6], 'ptoken', t[1] or '', 'tchanged', now)
  end
  -- A new fallback token ('' leaves it), for a device that registered a fallback channel.
  if ARGV[7] ~= '' and redis.call('HEXISTS', KEYS[1], 'fb_platform') == 1 then
    redis.call('HSET', KEYS[1], 'fb_token', ARGV[7])
  end
  audit(account, now, 'push_token_updated', 'device:' .. device_id, '', device_id, '')
elseif ARGV[5] == 'key' then
  -- The counter starts again with the new key (a way out near 2^53; no copy of the old key signs for it).
  -- The new key is not attested: the device's verdict falls to none, as in the memory store.
  redis.call('HSET', KEYS[1], 'alg', ARGV[6], 'key', ARGV[7], 'counter', 0,
    'assurance', 'none', 'rank', 0, 'attested_app', '', 'boot', '')
  audit(account, now, 'key_rotated', 'device:' .. device_id, '', device_id, 'assurance=none')
end
if ARGV[5] == 'challenge' then
  return {'ok', now, redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
end
return {'ok', now, redis.call('HGETALL', KEYS[1])}
