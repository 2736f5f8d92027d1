-- enter_step: ARGV id, owner, step key
local r = load(ARGV[1])
if not owns(r, ARGV[2]) then return 0 end
set(r, 'step_in_flight', ARGV[3])
flush(r)
bell()
return 1
