-- needs: flow ops
-- restart: ARGV id, at -> the record, or nil unless failed or cancelled
local r = load(ARGV[1])
if r == nil or (r.status ~= 'failed' and r.status ~= 'cancelled') then return nil end
local at = tonumber(ARGV[2])
set(r, 'status', 'pending'); set(r, 'attempt', 1); set(r, 'owner', nil)
for _, k in ipairs({'output', 'error', 'reason', 'progress', 'started_at', 'completed_at', 'step_in_flight'}) do
  set(r, k, nil)
end
set(r, 'available_at', at); set(r, 'run_at', at); set(r, 'claims', 0); set(r, 'recoveries', 0)
flush(r)
redis.call('DEL', P .. ':st:' .. r.id, P .. ':log:' .. r.id)
drop_waiters(r.id)
bell()
return full(r.id)
