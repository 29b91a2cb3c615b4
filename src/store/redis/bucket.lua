-- The creation-rate bucket of one sign-in source (limits::source_key), shared by every account: its own
-- step because the source's key lives in its own slot. KEYS[1] the bucket; ARGV[3] per minute, ARGV[4]
-- burst. Returns {0} when a token was taken, or {wait_ms}.
local wait = take_token(KEYS[1], now_ms(), tonumber(ARGV[3]), tonumber(ARGV[4]))
if wait then return {math.max(wait, 1)} end
return {0}
