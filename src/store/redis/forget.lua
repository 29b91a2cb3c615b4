-- Forgets one remembered sign-in key (ARGV[3], a field) or, with ARGV[3] '', all of them; audited when
-- anything was forgotten. KEYS[1] the account's known set; ARGV[4] account, ARGV[5] actor, ARGV[6] why.
-- Returns how many keys were forgotten.
local n
if ARGV[3] == '' then
  n = redis.call('HLEN', KEYS[1])
  redis.call('DEL', KEYS[1])
else
  n = redis.call('HDEL', KEYS[1], ARGV[3])
end
if n > 0 then audit(ARGV[4], now_ms(), 'known_sign_ins_forgotten', ARGV[5], '', '', ARGV[6]) end
return n
