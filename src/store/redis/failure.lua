-- Counts a device request that failed authentication against one budget (limits::FailureBudget) and, while
-- within it, records it in the account's refusal trail (store/trail.rs). Called for the peer address's
-- budget (its own slot, no account) and then for the claimed device's (the account's slot).
-- KEYS[1] the budget. ARGV[3] per minute (0: no budget), ARGV[4] burst, ARGV[5] account ('' for none),
-- ARGV[6] device id, ARGV[7] failure reason, ARGV[8] this budget's limit name, ARGV[9] the limit name of an
-- earlier budget this request just tripped ('' for none): then only that trip is recorded.
-- Returns {'ok'}, {'noted'}, or {'limited', wait ms, 1 if this failure tripped the budget else 0}.
local now = now_ms()
local account, device = ARGV[5], ARGV[6]
local function note(kind, detail)
  if account ~= '' then audit_refused(account, now, kind, device, detail) end
end
if ARGV[9] ~= '' then
  note('rate_limited', ARGV[9])
  return {'noted'}
end
local per_min = tonumber(ARGV[3])
if per_min > 0 then
  local wait, first = take_failure(KEYS[1], now, per_min, tonumber(ARGV[4]))
  if wait then
    if first then note('rate_limited', ARGV[8]) end
    local tripped = 0
    if first then tripped = 1 end
    return {'limited', wait, tripped}
  end
end
note('request_refused', ARGV[7])
return {'ok'}
