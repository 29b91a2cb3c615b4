-- Remembers an approved sign-in's keys (known::remember, the same rules): drops keys last seen before the
-- window, writes each key with its first-seen kept and its last-seen now, drops the least recently seen
-- of a kind past its cap (ties by field), and keeps the set for the window. KEYS[1] the account's known
-- set; ARGV[3] window ms, ARGV[4] device cap, ARGV[5] place cap, ARGV[6..] the fields.
local now = now_ms()
local window = tonumber(ARGV[3])
local since = now - window
local all = redis.call('HGETALL', KEYS[1])
local set = {}
for i = 1, #all, 2 do
  local first, last = string.match(all[i + 1], '^(%-?%d+):(%-?%d+)$')
  if first and tonumber(last) >= since then
    set[all[i]] = {tonumber(first), tonumber(last)}
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
for i = 6, #ARGV do
  local f = ARGV[i]
  local first = now
  if set[f] then first = set[f][1] end
  set[f] = {first, now}
  redis.call('HSET', KEYS[1], f, string.format('%d:%d', first, now))
end
-- Byte order, as Rust compares strings (Lua's < follows the server's collation locale).
local function bytes_less(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
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
  for i = 1, #of_kind - cap do redis.call('HDEL', KEYS[1], of_kind[i][1]) end
end
trim(function(f) return string.sub(f, 1, 2) == 'd:' end, tonumber(ARGV[4]))
trim(function(f) local p = string.sub(f, 1, 2) return p == 'n:' or p == 'l:' end, tonumber(ARGV[5]))
redis.call('PEXPIRE', KEYS[1], window)
return 1
