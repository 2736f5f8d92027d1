-- needs: flow ops
-- wait: ARGV id, owner, key, pipe, shape (opt), value (opt), since, deadline (opt),
-- pokes (opt), at (opt) -> {why ('' none), suspended (0/1), waiter fields...}
local eid, owner, key = ARGV[1], ARGV[2], ARGV[3]
local at = at_arg(ARGV[10])
local r = load(eid)
local why = stop_reason(r, owner)
if r == nil or (why ~= nil and why ~= 'paused') then return {why or '', '0'} end
local w = waiter_get(eid, key)
if w == nil then
  local args = {'pipe', ARGV[4], 'since', ARGV[7], 'pokes', '0'}
  local shape, value, deadline = opt(ARGV[5]), opt(ARGV[6]), opt(ARGV[8])
  if shape then args[#args + 1] = 'shape'; args[#args + 1] = shape end
  if value then args[#args + 1] = 'value'; args[#args + 1] = value end
  if deadline then args[#args + 1] = 'deadline'; args[#args + 1] = deadline end
  redis.call('HSET', wkey(eid, key), unpack(args))
  redis.call('SADD', P .. ':wk:' .. eid, key)
  w = waiter_get(eid, key)
  index_waiter(w, eid, key)
end
local done = w.deadline ~= nil and tonumber(w.deadline) <= at
local pokes = num(opt(ARGV[9]))
local suspended = '0'
if w.event_id == nil and not done and (pokes == nil or pokes == tonumber(w.pokes)) then
  local status = 'waiting'
  if r.pause_requested == '1' then status = 'paused' end
  freed(r.slot)
  set(r, 'status', status); set(r, 'owner', nil); set(r, 'pause_requested', '0')
  if status == 'paused' then set(r, 'available_at', nil) else set(r, 'available_at', w.deadline) end
  flush(r)
  suspended = '1'
end
touch()
bell()
return {why or '', suspended, redis.call('HGETALL', wkey(eid, key))}
