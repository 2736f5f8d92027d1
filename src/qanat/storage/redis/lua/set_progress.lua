-- set_progress: ARGV id, owner (opt), progress
local r = load(ARGV[1])
local owner = opt(ARGV[2])
if r == nil or (owner ~= nil and not owns(r, owner)) then return 0 end
set(r, 'progress', ARGV[3])
flush(r)
bell()
return 1
