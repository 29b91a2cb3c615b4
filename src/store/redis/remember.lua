-- Remembers an approved sign-in's keys (prelude's remember_known, the rules of known::remember).
-- KEYS[1] the account's known set; ARGV[3] window ms, ARGV[4] device cap, ARGV[5] place cap, ARGV[6..] the
-- fields.
local fields = {}
for i = 6, #ARGV do table.insert(fields, ARGV[i]) end
remember_known(KEYS[1], now_ms(), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), fields)
return 1
