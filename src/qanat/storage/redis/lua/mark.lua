-- needs: flow
-- mark: ARGV id, owner, status (running or waiting); the owner and lease are kept
local r = load(ARGV[1])
if not owns(r, ARGV[2]) then return 0 end
local status = ARGV[3]
if status == 'running' and not allows_running(r) then return 0 end
if status == 'waiting' then freed(r.slot) end
set(r, 'status', status)
flush(r)
bell()
return 1
