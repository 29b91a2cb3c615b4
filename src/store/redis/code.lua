-- One offline-code check (factor::CodeCheck; store::Store::check_code). KEYS[1] the account's
-- authenticators, KEYS[2] its budget of wrong codes; ARGV[3] per minute (0: no budget), ARGV[4] burst,
-- ARGV[5] account, ARGV[6] the authenticator the relay found the code to match ('' for none), ARGV[7] the
-- time step it matched, ARGV[8] its device ('' for none), ARGV[9] every how many refusals in a row to
-- alert (factor::STREAK_ALERT). The match counts only if the authenticator still exists, is not past its
-- activation deadline and its device is still active (all read again here, atomically).
-- Returns {'limited', wait ms, 1 if this attempt tripped the budget}, {'accepted'}, or {'replayed' or
-- 'wrong', 1 if this refusal completes a streak to alert on else 0}.
local now = now_ms()
local per_min, burst = tonumber(ARGV[3]), tonumber(ARGV[4])
local account, id = ARGV[5], ARGV[6]
local function refused(kind, detail)
  local key = PREFIX .. 'refused:' .. account
  redis.call('XADD', key, 'MAXLEN', '~', REFUSED_CAP, '*', 'at', now, 'kind', kind, 'actor', 'backend',
    'challenge', '', 'device', '', 'detail', detail)
  redis.call('PEXPIRE', key, LONG_TTL_MS)
end
if per_min > 0 then
  local milli = bucket_level(redis.call('HMGET', KEYS[2], 'milli', 'at'), now, per_min, burst * 1000)
  if milli < 1000 then
    local wait, first = take_failure(KEYS[2], now, per_min, burst)
    local tripped = 0
    if first then
      refused('rate_limited', 'code_failures')
      tripped = 1
    end
    return {'limited', wait, tripped}
  end
end
local outcome = 'wrong'
local function counts()
  if id == '' or redis.call('HEXISTS', KEYS[1], id) == 0 then return false end
  local pending = redis.call('HGET', KEYS[1], id .. ':p')
  if pending and tonumber(pending) <= now then return false end
  if ARGV[8] ~= '' and redis.call('HGET', PREFIX .. 'dev:' .. ARGV[8], 'state') ~= 'active' then return false end
  return true
end
if counts() then
  local used = tonumber(redis.call('HGET', KEYS[1], id .. ':u') or '-1')
  if tonumber(ARGV[7]) > used then
    redis.call('HSET', KEYS[1], id .. ':u', ARGV[7])
    local detail = id
    if redis.call('HDEL', KEYS[1], id .. ':p') == 1 then detail = id .. ' activated' end
    audit(account, now, 'code_verified', 'backend', '', ARGV[8], detail)
    redis.call('HDEL', KEYS[1], 'streak:n')
    redis.call('PEXPIRE', KEYS[1], LONG_TTL_MS)
    return {'accepted'}
  end
  outcome = 'replayed'
end
if per_min > 0 then take_failure(KEYS[2], now, per_min, burst) end
refused('code_refused', outcome)
local streak = redis.call('HINCRBY', KEYS[1], 'streak:n', 1)
local alert = 0
if streak % tonumber(ARGV[9]) == 0 then alert = 1 end
return {outcome, alert}
