-- needs: pages
-- query: ARGV limit, cursor at (opt), cursor id (opt), filter JSON
-- Walks the most selective index (job+status, job, status, or all; a parent's
-- children; given ids) newest first and filters the rest here.
local limit = tonumber(ARGV[1])
local cat, cid = num(opt(ARGV[2])), opt(ARGV[3])
local f = cjson.decode(ARGV[4])
local function null(x) return x == nil or x == cjson.null end
local function inlist(list, v)
  for _, x in ipairs(list) do if x == v then return true end end
  return false
end
local function lt(a, b) return a ~= nil and tonumber(a) < b end
local function gt(a, b) return a ~= nil and tonumber(a) > b end
local function matches(r)
  if not null(f.ids) and not inlist(f.ids, r.id) then return false end
  if not null(f.job) and not inlist(f.job, r.job) then return false end
  if not null(f.status) and not inlist(f.status, r.status) then return false end
  if not null(f.group) and r.group ~= f.group then return false end
  if not null(f.parent_id) and r.parent_id ~= f.parent_id then return false end
  if not null(f.started_before) and not lt(r.started_at, f.started_before) then return false end
  if not null(f.started_after) and not gt(r.started_at, f.started_after) then return false end
  if not null(f.completed_before) and not lt(r.completed_at, f.completed_before) then return false end
  if not null(f.completed_after) and not gt(r.completed_at, f.completed_after) then return false end
  local att = tonumber(r.attempt or '1')
  if not null(f.attempts) and att ~= f.attempts then return false end
  if not null(f.attempts_lt) and not (att < f.attempts_lt) then return false end
  if not null(f.attempts_gt) and not (att > f.attempts_gt) then return false end
  return true
end
local function accept(id)
  local r = load(id)
  if r ~= nil and matches(r) then return full(id) end
  return nil
end
local items, pos, exhausted, lat, lid
if not null(f.ids) or not null(f.parent_id) then
  local ids = {}
  if not null(f.ids) then ids = f.ids else ids = redis.call('SMEMBERS', P .. ':kids:' .. f.parent_id) end
  local cands, seen = {}, {}
  for _, id in ipairs(ids) do
    if not seen[id] then
      seen[id] = true
      local c = redis.call('HGET', ekey(id), 'created_at')
      if c then cands[#cands + 1] = {id, tonumber(c)} end
    end
  end
  items, pos = {}, {}
  for _, c in ipairs(sorted_below(cands, cat, cid)) do
    local e = accept(c[1])
    if e then items[#items + 1] = e; pos[#pos + 1] = c end
    if #items > limit then break end
  end
  exhausted = false
else
  local keys = {}
  local jobs, sts = f.job, f.status
  if not null(jobs) and not null(sts) then
    for _, j in ipairs(jobs) do for _, s in ipairs(sts) do keys[#keys + 1] = P .. ':ix:js:' .. j .. NUL .. s end end
  elseif not null(jobs) then
    for _, j in ipairs(jobs) do keys[#keys + 1] = P .. ':ix:j:' .. j end
  elseif not null(sts) then
    for _, s in ipairs(sts) do keys[#keys + 1] = P .. ':ix:s:' .. s end
  else
    keys[1] = P .. ':ix:all'
  end
  items, pos, exhausted, lat, lid = merged_page(keys, cat, cid, limit, accept, 20000)
end
local out = {''}
if #items > limit then
  out[1] = fmt(pos[limit][2]) .. '|' .. pos[limit][1]
elseif exhausted and lat ~= nil then
  out[1] = fmt(lat) .. '|' .. lid -- looked at enough for one call: the page goes on
end
for i = 1, math.min(limit, #items) do out[#out + 1] = items[i] end
return out
