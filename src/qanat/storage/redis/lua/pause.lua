-- needs: flow
-- pause: ARGV id -> the status after, or nil
local r = load(ARGV[1])
if r == nil then return nil end
if r.status == 'pending' or (r.status == 'waiting' and r.owner == nil) then
  set(r, 'status', 'paused'); set(r, 'available_at', nil); set(r, 'gate', nil)
elseif OWNED[r.status] then
  set(r, 'pause_requested', '1')
end
flush(r)
bell()
return r.status
