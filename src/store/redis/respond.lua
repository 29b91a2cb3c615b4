-- Counter rule, then a device's answer: one atomic step (DESIGN.md guarantees 1, 2, 4, 5).
-- KEYS[1] device hash, KEYS[2] challenge hash.
-- ARGV[3] device id, ARGV[4] counter, ARGV[5] challenge id, ARGV[6] decision (approved|denied|fraud_reported),
-- ARGV[7] deny reason, ARGV[8] number answered, ARGV[9..11] cool-down base, max and fraud mute in ms,
-- ARGV[12..14] the remember window in ms and the caps of remembered devices and places, ARGV[15] the key
-- the answer's signature verified with.
local device_id, counter, challenge_id = ARGV[3], ARGV[4], ARGV[5]
local now = now_ms()
local refused, account = accept_counter(KEYS[1], device_id, counter, ARGV[15], now)
if refused then return {'refused', refused} end

local function refuse(reason, detail)
  audit(account, now, 'request_refused', 'device:' .. device_id, challenge_id, device_id, detail or reason)
  return {'refused', reason}
end

-- The whole hash, read once: its fields decide, and it is returned as it ends up (hash_put).
local flat = redis.call('HGETALL', KEYS[2])
local h = hash_table(flat)
local c = {h.account, h.state, h.targets, h.expires, h.mode, h.number, h.seq, h.tries}
if not c[1] or c[1] ~= account then return refuse('not_found', 'not_targeted') end
if not string.find(c[3], ',' .. device_id .. ',', 1, true) then return refuse('not_targeted') end
if c[2] ~= 'pending' then return refuse('ended:' .. c[2], 'already_' .. c[2]) end
if now >= tonumber(c[4]) then return refuse('late') end
local decision, reason = ARGV[6], ARGV[7]
-- Number matching (challenge::Challenge::respond): a wrong number ends the challenge DENIED once the
-- challenge's allowance of wrong numbers is used up (always at once in mode choose).
if decision == 'approved' and c[5] == 'none' and ARGV[8] ~= '0' then return refuse('unexpected_number') end
if decision == 'approved' and c[5] ~= 'none' then
  if ARGV[8] == '0' then return refuse('missing_number') end
  if ARGV[8] ~= c[6] then
    local allowed = tonumber(c[8] or '1')
    local wrong = redis.call('HINCRBY', KEYS[2], 'wrong', 1)
    hash_put(flat, {'wrong', wrong})
    if wrong < allowed then
      audit(account, now, 'request_refused', 'device:' .. device_id, challenge_id, device_id, 'wrong_number')
      return {'refused', 'wrong_number', allowed - wrong}
    end
    decision, reason = 'denied', 'wrong_number'
  end
end
local seq = tonumber(c[7]) + 1
local ended = {'state', decision, 'by', device_id, 'reason', reason, 'ended', now, 'seq', seq}
redis.call('HSET', KEYS[2], unpack(ended))
hash_put(flat, ended)
unpend(account, challenge_id)
audit_challenge(account, now, ended_kind(decision), 'device:' .. device_id, challenge_id, device_id, reason)
publish(challenge_id, seq, now, decision, device_id, reason)
cool_after(account, decision, now, tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11]))
if decision == 'approved' then
  -- The sign-in's keys, as create.lua stored them (codec::remember_fields), become known in this step.
  local fields = {}
  for _, name in ipairs({'kd', 'kn', 'kl'}) do
    if h[name] and h[name] ~= '' then table.insert(fields, h[name]) end
  end
  if #fields > 0 then
    remember_known(PREFIX .. 'known:' .. account, now, tonumber(ARGV[12]), tonumber(ARGV[13]),
      tonumber(ARGV[14]), fields)
  end
end
-- The challenge as it now is and the devices to withdraw it from, so the caller reads nothing more.
return {'ok', seq, now, flat, withdraw_targets(c[3], device_id)}
