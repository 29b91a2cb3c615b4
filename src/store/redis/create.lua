-- Creates a challenge for every active device of the account except the signing-in one, or returns the
-- challenge that holds the idempotency key. One atomic step (guarantee 8).
-- KEYS[1] account's device list, KEYS[2] idempotency key (or the challenge key when none), KEYS[3] challenge
-- hash, KEYS[4] account's pending index, KEYS[5] (single node only) the challenge's overdue-index shard.
-- ARGV[3] challenge id, ARGV[4] account, ARGV[5] ttl ms, ARGV[6] excluded device id, ARGV[7] '1' if an
-- idempotency key is given, ARGV[8] retention ms, ARGV[9] most pending challenges per account,
-- ARGV[10] account creation rate per minute (0: off), ARGV[11] its burst, ARGV[12] '1' to supersede the
-- oldest pending challenges at the cap instead of refusing, ARGV[13] the least assurance rank a target
-- needs (attest::Assurance::rank; 0 for any), ARGV[14] the push-work member for the index
-- (keys::push_member), ARGV[15] its lease ms, ARGV[16..] field/value pairs of the challenge.
local id, account, ttl, excluded, retention = ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[8])
if ARGV[7] == '1' then
  local existing = redis.call('GET', KEYS[2])
  if existing then return {'existing', existing} end
end
local now = now_ms()
-- Push-bombing limits (limits.rs): the cool-down or fraud mute, then the pending cap.
local cool = redis.call('HMGET', PREFIX .. 'cool:' .. account, 'until', 'muted')
if cool[1] and tonumber(cool[1]) > now then
  local reason = 'cooling_down'
  if cool[2] == '1' then reason = 'muted_after_fraud_report' end
  audit(account, now, 'rate_limited', 'backend', '', '', reason)
  return {'limited', reason, tonumber(cool[1]) - now}
end
-- The whole index in one read (it holds about the pending cap's worth of ids): those whose deadline is
-- ahead are checked, and entries past retention (their challenge gone without ending) are pruned below
-- only when there are any.
local pending, first_end, stale = {}, nil, false
local indexed = redis.call('ZRANGE', KEYS[4], 0, -1, 'WITHSCORES')
for i = 1, #indexed, 2 do
  local ends = tonumber(indexed[i + 1])
  if ends > now then
    local c = redis.call('HMGET', PREFIX .. 'ch:' .. indexed[i], 'state', 'created')
    if c[1] == 'pending' then
      table.insert(pending, {tonumber(c[2]), indexed[i]})
      if not first_end or ends < first_end then first_end = ends end
    end
  elseif ends <= now - retention then
    stale = true
  end
end
local max_pending, supersede = tonumber(ARGV[9]), ARGV[12] == '1'
if #pending >= max_pending and not supersede then
  audit(account, now, 'rate_limited', 'backend', '', '', 'too_many_pending')
  return {'limited', 'too_many_pending', first_end - now}
end
local per_min = tonumber(ARGV[10])
if per_min > 0 then
  local wait = take_token(PREFIX .. 'bucket:' .. account, now, per_min, tonumber(ARGV[11]))
  if wait then
    audit(account, now, 'rate_limited', 'backend', '', '', 'account_rate')
    return {'limited', 'account_rate', wait}
  end
end
local targets, devices = active_devices(KEYS[1], excluded, excluded)
if #targets == 0 then return {'nodevices'} end
local min_rank = tonumber(ARGV[13])
if min_rank > 0 then
  -- As the memory store: a device meets the minimum when its rank is at least it (absent: 0, none).
  local kept_ids, kept = {}, {}
  for i, device_id in ipairs(targets) do
    if (tonumber(hash_get(devices[i], 'rank')) or 0) >= min_rank then
      table.insert(kept_ids, device_id)
      table.insert(kept, devices[i])
    end
  end
  if #kept_ids == 0 then return {'noassurance'} end
  targets, devices = kept_ids, kept
end
-- Supersede only once nothing can refuse the new challenge any more, so a refusal changes nothing.
-- Cancelled as end.lua cancels (cancellation leaves the cool-down alone), oldest first.
local superseded = {}
if #pending >= max_pending then
  table.sort(pending, function(a, b) return a[1] < b[1] end)
  for i = 1, #pending - max_pending + 1 do
    local old_id = pending[i][2]
    local old_key = PREFIX .. 'ch:' .. old_id
    local seq = redis.call('HINCRBY', old_key, 'seq', 1)
    redis.call('HSET', old_key, 'state', 'cancelled', 'ended', now)
    redis.call('ZREM', KEYS[4], old_id)
    audit(account, now, 'challenge_cancelled', 'relay', old_id, '', 'superseded')
    publish(old_id, seq, now, 'cancelled', '', '')
    local old = redis.call('HGETALL', old_key)
    table.insert(superseded, {old_id, old, withdraw_targets(redis.call('HGET', old_key, 'targets'), '')})
  end
end
local expires = now + ttl
local fields = {}
for i = 16, #ARGV do table.insert(fields, ARGV[i]) end
-- Poll-only targets are never pushed: their outcome is set now (Challenge::mark_poll_only), so no sweep
-- takes their pushes for unfinished.
for i, device_id in ipairs(targets) do
  if hash_get(devices[i], 'platform') == 'poll_only' then
    table.insert(fields, 'dl:' .. device_id)
    table.insert(fields, 'poll')
  end
end
redis.call('HSET', KEYS[3], 'account', account, 'state', 'pending', 'seq', 0, 'created', now, 'expires', expires,
  'ended', 0, 'by', '', 'reason', '', 'targets', ',' .. table.concat(targets, ',') .. ',', unpack(fields))
redis.call('PEXPIREAT', KEYS[3], expires + retention)
if ARGV[7] == '1' then redis.call('SET', KEYS[2], id, 'PXAT', expires + retention) end
redis.call('ZADD', KEYS[4], expires, id)
if stale then redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - retention) end
redis.call('PEXPIREAT', KEYS[4], expires + retention)
audit(account, now, 'challenge_created', 'backend', id, '', 'devices=' .. #targets)
if KEYS[5] then
  -- On a single node the overdue index is written in this step (on Cluster it is in another slot, and
  -- written just before): the challenge at its deadline, and the pushes this replica owes after a lease
  -- (challenge::pushes). NX gives a new shard a TTL; GT extends it.
  redis.call('ZADD', KEYS[5], expires, id, now + tonumber(ARGV[15]), ARGV[14])
  redis.call('PEXPIRE', KEYS[5], ttl + retention, 'NX')
  redis.call('PEXPIRE', KEYS[5], ttl + retention, 'GT')
end
return {'created', now, expires, targets, devices, superseded}
