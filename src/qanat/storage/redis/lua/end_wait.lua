-- needs: flow ops
-- end_wait: as checkpoint, and the waiter at the step's key is forgotten
local why = checkpoint(load(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV, 6, tonumber(ARGV[5]))
if why == nil or why == 'paused' then forget_waiter(ARGV[1], ARGV[3]) end
bell()
return why
