-- needs: flow ops
-- checkpoint_many: several checkpoints of one worker in one call. ARGV: per checkpoint
-- the count of its arguments, then those arguments (as ``checkpoint`` takes them).
-- Returns per item what ``checkpoint`` would: '' where it returns nothing (a nil would
-- end the reply's list), else the reason the step was not stored or a pause is asked.
-- Items are mostly one execution's (a fan-out's child starts): its record is read once
-- and kept, as the checkpoints change it, until a child's flow control may have changed it.
local out, i = {}, 1
local kept_id, kept = nil, nil
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local id = ARGV[i + 1]
  if id ~= kept_id or _admitted then
    kept_id, kept, _admitted = id, load(id), false
  end
  out[#out + 1] = checkpoint(kept, ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV,
    i + 6, tonumber(ARGV[i + 5])) or ''
  i = i + n + 1
end
bell()
return out
