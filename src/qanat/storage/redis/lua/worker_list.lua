-- worker_list: every registered worker -> flat list of (id, JSON [host, pid, at], held
-- ids, latest lease end or false); held: its live (running or waiting) executions
local out = {}
local flat = redis.call('HGETALL', P .. ':workers')
for i = 1, #flat, 2 do
  local wid, held, untl = flat[i], {}, false
  for _, id in ipairs(redis.call('SMEMBERS', P .. ':own:' .. wid)) do
    local r = load(id)
    if r and r.owner == wid and (r.status == 'running' or r.status == 'waiting') then
      held[#held + 1] = id
      local a = tonumber(r.available_at or '')
      if a and (not untl or a > untl) then untl = a end
    end
  end
  out[#out + 1] = wid; out[#out + 1] = flat[i + 1]; out[#out + 1] = held
  out[#out + 1] = untl and fmt(untl) or false
end
return out
