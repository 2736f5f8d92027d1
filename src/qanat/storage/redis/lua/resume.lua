-- resume: ARGV id -> the status after, or nil
local r = load(ARGV[1])
if r == nil then return nil end
if r.status == 'paused' then set(r, 'status', 'pending'); set(r, 'available_at', now()) end
set(r, 'pause_requested', '0')
flush(r)
bell()
return r.status
