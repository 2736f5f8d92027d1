-- needs: flow ops
-- checkpoint_many: several checkpoints of one worker in one call. ARGV: per checkpoint
-- the count of its arguments, then those arguments (as ``checkpoint`` takes them).
-- Returns per item what ``checkpoint`` would: '' where it returns nothing (a nil would
-- end the reply's list), else the reason the step was not stored or a pause is asked.
local out, i = {}, 1
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  out[#out + 1] = checkpoint(load(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV,
    i + 6, tonumber(ARGV[i + 5])) or ''
  i = i + n + 1
end
bell()
return out
