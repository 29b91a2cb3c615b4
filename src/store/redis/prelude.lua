-- Shared by every script (prepended by scripts.rs). ARGV[1] is the account's key prefix "ar:{<tag>}:",
-- ARGV[2] the publish command (PUBLISH on a single node, SPUBLISH on Cluster).
local PREFIX = ARGV[1]
local PUB = ARGV[2]
local AUDIT_CAP = 1000
local REFUSED_CAP = 200 -- store::trail::REFUSED_CAP: unauthenticated refusals, capped apart
local LONG_TTL_MS = 34560000000 -- 400 days: devices and audit trails of active accounts are refreshed
local RENEW_EVERY_MS = 86400000 -- a device's TTL is renewed by its first accepted call of a day

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Trails whose TTL this script already renewed: one PEXPIRE per trail per script, however many records.
local renewed = {}
local function renew(key)
  if not renewed[key] then
    redis.call('PEXPIRE', key, LONG_TTL_MS)
    renewed[key] = true
  end
end

-- Appends to the account's audit trail without renewing its TTL; the trail's key.
local function append_audit(account, now, kind, actor, challenge, device, detail)
  local key = PREFIX .. 'audit:' .. account
  redis.call('XADD', key, 'MAXLEN', '~', AUDIT_CAP, '*', 'at', now, 'kind', kind, 'actor', actor,
    'challenge', challenge or '', 'device', device or '', 'detail', detail or '')
  return key
end

local function audit(account, now, kind, actor, challenge, device, detail)
  renew(append_audit(account, now, kind, actor, challenge, device, detail))
end

-- A record of a challenge that still exists (its hash was read in this script): create.lua renewed the
-- trail to 400 days when it made the challenge, at most its TTL plus retention ago, so renewing again
-- would cost a PEXPIRE per push outcome batch and decision for nothing.
local audit_challenge = append_audit

-- A refusal of a request that failed authentication, in the account's trail of such refusals: capped apart
-- from the real records, so that no number of them can push a real record out (store/trail.rs).
local function audit_refused(account, now, kind, device, detail)
  local key = PREFIX .. 'refused:' .. account
  redis.call('XADD', key, 'MAXLEN', '~', REFUSED_CAP, '*', 'at', now, 'kind', kind, 'actor', 'unauthenticated',
    'challenge', '', 'device', device or '', 'detail', detail or '')
  renew(key)
end

local function publish(challenge_id, seq, now, kind, device, extra)
  redis.call(PUB, PREFIX .. 'ev:' .. challenge_id,
    seq .. '\t' .. now .. '\t' .. kind .. '\t' .. (device or '') .. '\t' .. (extra or ''))
end

-- One push outcome of a pending challenge (challenge::Challenge::record_delivery): published with the next
-- sequence number, which is returned, and its `dl:<device>` field appended to `fields` for the caller's
-- one HSET of them all with the last sequence number (one write per script, not one per outcome).
-- `value` is as stored in `dl:<device>` (codec::delivery_value): 'delivered:<channel>' or 'failed:<reason>'.
local function record_push(fields, challenge_id, seq, now, device_id, value)
  seq = seq + 1
  table.insert(fields, 'dl:' .. device_id)
  table.insert(fields, value)
  if string.sub(value, 1, 7) == 'failed:' then
    publish(challenge_id, seq, now, 'failed', device_id, string.sub(value, 8))
  else
    publish(challenge_id, seq, now, 'delivered', device_id, string.sub(value, 11))
  end
  return seq
end

-- A field of a flat HGETALL reply (nil when absent).
local function hash_get(flat, name)
  for i = 1, #flat - 1, 2 do
    if flat[i] == name then return flat[i + 1] end
  end
  return nil
end

-- A flat HGETALL reply as a table of its fields.
local function hash_table(flat)
  local h = {}
  for i = 1, #flat - 1, 2 do h[flat[i]] = flat[i + 1] end
  return h
end

-- Keeps a flat HGETALL reply as the hash now is after this script's HSET of `written` (name, value, ...):
-- the script returns it without reading the hash again.
local function hash_put(flat, written)
  for p = 1, #written - 1, 2 do
    local name, value, found = written[p], tostring(written[p + 1]), false
    for i = 1, #flat - 1, 2 do
      if flat[i] == name then flat[i + 1], found = value, true break end
    end
    if not found then table.insert(flat, name) table.insert(flat, value) end
  end
end

-- The counter rule (auth::counter_is_fresh, device::Device::accept_counter) for a call whose signature
-- verified with `key` (the bytes a device hash keeps). Returns nil when the call is accepted, or the
-- refusal reason.
local function accept_counter(dev_key, device_id, counter, key, now)
  local d = redis.call('HMGET', dev_key, 'state', 'counter', 'account', 'renewed', 'key')
  if not d[1] then return 'unknown_device', nil end
  if d[1] == 'revoked' then return 'revoked', d[3] end
  if d[1] == 'clone' then return 'suspected_clone', d[3] end
  -- A key read before this step (or cached by the replica) may have been rotated away since.
  if d[5] ~= key then return 'key_changed', d[3] end
  if tonumber(counter) <= tonumber(d[2]) then
    redis.call('HSET', dev_key, 'state', 'clone')
    audit(d[3], now, 'clone_suspected', 'device:' .. device_id, '', device_id, 'counter ' .. counter .. ' after ' .. d[2])
    return 'counter_replayed', d[3]
  end
  -- The 400-day TTLs are renewed at most daily (`renewed`): a PEXPIRE a day per device, not one per call.
  -- The account's device list with it, so an account in use keeps its list past 400 days after its last
  -- enrollment.
  if now - tonumber(d[4] or '0') < RENEW_EVERY_MS then
    redis.call('HSET', dev_key, 'counter', counter, 'seen', now)
  else
    redis.call('HSET', dev_key, 'counter', counter, 'seen', now, 'renewed', now)
    redis.call('PEXPIRE', dev_key, LONG_TTL_MS)
    redis.call('PEXPIRE', PREFIX .. 'devs:' .. d[3], LONG_TTL_MS)
  end
  return nil, d[3]
end

-- The active devices of an account's device list (KEYS-given `list_key`) other than `skip_a` and
-- `skip_b`: their ids, and their hashes in the same order.
local function active_devices(list_key, skip_a, skip_b)
  local ids, hashes = {}, {}
  for _, device_id in ipairs(redis.call('LRANGE', list_key, 0, -1)) do
    if device_id ~= skip_a and device_id ~= skip_b then
      -- One HGETALL, the state read from it: the hash is returned anyway.
      local hash = redis.call('HGETALL', PREFIX .. 'dev:' .. device_id)
      if hash_get(hash, 'state') == 'active' then
        table.insert(ids, device_id)
        table.insert(hashes, hash)
      end
    end
  end
  return ids, hashes
end

-- The devices a challenge was pushed to (its ',a,b,' target list) other than `except`, as {id, hash}
-- pairs: whom to withdraw the prompt from, returned with the transition so no second round trip reads them.
local function withdraw_targets(targets, except)
  local out = {}
  for id in string.gmatch(targets or '', '[^,]+') do
    if id ~= except then
      local d = redis.call('HGETALL', PREFIX .. 'dev:' .. id)
      if #d > 0 then table.insert(out, {id, d}) end
    end
  end
  return out
end

-- A challenge that ended leaves its account's pending index (keys::pending): creates and ListPending read
-- only the pending challenges there, and an ended one left in it until its deadline cost every later
-- create of the account an HMGET (rate x TTL / accounts of them in steady state: 9 at 300/s over 1,000
-- accounts with a 30 s TTL; the load test's 23 s fixed-rate run made 2.9 fewer per challenge).
local function unpend(account, challenge_id)
  redis.call('ZREM', PREFIX .. 'pend:' .. account, challenge_id)
end

local function ended_kind(state)
  if state == 'approved' then return 'challenge_approved' end
  if state == 'denied' then return 'challenge_denied' end
  if state == 'fraud_reported' then return 'fraud_reported' end
  if state == 'expired' then return 'challenge_expired' end
  return 'challenge_cancelled'
end

-- The cool-down rule (limits::Cooldown::after): approval resets it, a denial or expiry doubles it from
-- BASE up to MAX, a fraud report mutes the account for MUTE; cancellation leaves it alone.
local function cool_after(account, state, now, base, max, mute)
  local key = PREFIX .. 'cool:' .. account
  if state == 'approved' then redis.call('DEL', key) return end
  if state == 'cancelled' then return end
  local c = redis.call('HMGET', key, 'level', 'until', 'muted')
  local level, until_at, muted = tonumber(c[1] or '0'), tonumber(c[2] or '0'), c[3] or '0'
  level = level + 1
  if state == 'fraud_reported' then
    until_at = math.max(until_at, now + mute)
    muted = '1'
  else
    local wait = math.min(base * math.pow(2, math.min(level - 1, 20)), max)
    until_at = math.max(until_at, now + math.floor(wait))
  end
  redis.call('HSET', key, 'level', level, 'until', until_at, 'muted', muted)
  redis.call('PEXPIREAT', key, until_at + max + 1)
end

-- A token bucket's level (limits::Bucket::level, the same integer arithmetic): thousandths of a token, from
-- its stored thousandths and last take's time (a full bucket when the key is gone).
local function bucket_level(b, now, per_min, cap)
  if not b[1] then return cap end
  return math.min(cap, tonumber(b[1]) + math.floor(math.max(0, now - tonumber(b[2])) * per_min / 60))
end

local function bucket_wait(milli, per_min)
  return math.floor(((1000 - milli) * 60 + per_min - 1) / per_min)
end

-- A token bucket (limits::Bucket::take): takes one token and returns nil, or returns the milliseconds until
-- one is there.
local function take_token(key, now, per_min, burst)
  local cap = burst * 1000
  local milli = bucket_level(redis.call('HMGET', key, 'milli', 'at'), now, per_min, cap)
  if milli < 1000 then return bucket_wait(milli, per_min) end
  redis.call('HSET', key, 'milli', milli - 1000, 'at', now)
  -- Gone once it would be full again: an idle bucket costs nothing.
  redis.call('PEXPIRE', key, math.floor(cap * 60 / per_min) + 1000)
  return nil
end

-- A budget of authentication failures (limits::FailureBudget::take): a bucket that remembers it tripped
-- until it is full again. Returns nil when within it, or the wait and whether this failure tripped it. A
-- refusal leaves the bucket's state (its refill runs from the last take) and only marks the trip.
local function take_failure(key, now, per_min, burst)
  local cap = burst * 1000
  local b = redis.call('HMGET', key, 'milli', 'at', 'tripped')
  local milli = bucket_level(b, now, per_min, cap)
  local tripped = b[3] == '1' and milli < cap
  if milli < 1000 then
    redis.call('HSET', key, 'tripped', '1')
    return bucket_wait(milli, per_min), not tripped
  end
  local flag = '0'
  if tripped then flag = '1' end
  redis.call('HSET', key, 'milli', milli - 1000, 'at', now, 'tripped', flag)
  redis.call('PEXPIRE', key, math.floor(cap * 60 / per_min) + 1000)
  return nil, false
end

-- Remembers an approved sign-in's keys (known::remember, the same rules): drops keys last seen before the
-- window, writes each key with its first-seen kept and its last-seen now, drops the least recently seen
-- of a kind past its cap (ties by field), and keeps the set for the window. `key` the account's known
-- set, `fields` its fields to mark (known::KnownKey::field).
local function bytes_less(a, b)
  -- Byte order, as Rust compares strings (Lua's < follows the server's collation locale).
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

local function remember_known(key, now, window, device_cap, place_cap, fields)
  local since = now - window
  local all = redis.call('HGETALL', key)
  -- `drop`: fields to delete, decided in full before anything is written, so that one HSET and one HDEL
  -- of disjoint fields leave the hash as deleting, writing and trimming in turn would.
  local set, drop = {}, {}
  for i = 1, #all, 2 do
    local first, last = string.match(all[i + 1], '^(%-?%d+):(%-?%d+)$')
    if first and tonumber(last) >= since then
      set[all[i]] = {tonumber(first), tonumber(last)}
    else
      drop[all[i]] = true
    end
  end
  for _, f in ipairs(fields) do
    local first = now
    if set[f] then first = set[f][1] end
    set[f] = {first, now}
    drop[f] = nil
  end
  local function trim(is_kind, cap)
    local of_kind = {}
    for f, seen in pairs(set) do
      if is_kind(f) then table.insert(of_kind, {f, seen[2]}) end
    end
    table.sort(of_kind, function(a, b)
      if a[2] ~= b[2] then return a[2] < b[2] end
      return bytes_less(a[1], b[1])
    end)
    for i = 1, #of_kind - cap do drop[of_kind[i][1]] = true end
  end
  trim(function(f) return string.sub(f, 1, 2) == 'd:' end, device_cap)
  trim(function(f) local p = string.sub(f, 1, 2) return p == 'n:' or p == 'l:' end, place_cap)
  local writes, deletes = {}, {}
  for _, f in ipairs(fields) do
    if not drop[f] then
      table.insert(writes, f)
      table.insert(writes, string.format('%d:%d', set[f][1], now))
    end
  end
  for f in pairs(drop) do table.insert(deletes, f) end
  if #writes > 0 then redis.call('HSET', key, unpack(writes)) end
  if #deletes > 0 then redis.call('HDEL', key, unpack(deletes)) end
  redis.call('PEXPIRE', key, window)
end
