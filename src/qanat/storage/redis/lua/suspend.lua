-- needs: flow
-- suspend: ARGV id, owner, status, available_at (opt)
local r = load(ARGV[1])
if r == nil or r.owner ~= ARGV[2] or not OWNED[r.status] then return 0 end
local status = ARGV[3]
if r.pause_requested == '1' then status = 'paused' end
freed(r.slot)
set(r, 'status', status); set(r, 'owner', nil); set(r, 'pause_requested', '0')
if status == 'paused' then set(r, 'available_at', nil) else set(r, 'available_at', opt(ARGV[4])) end
flush(r)
bell()
return 1
