-- Newest-first pages over sorted sets scored by time (members: ids), with a keyset
-- cursor (at, id): items strictly before it in (score, id) descending order.
local function chunk_below(key, at, ident, n, floor)
  local out = {}
  local top = '+inf'
  if at ~= nil and (floor == '-inf' or at >= tonumber(floor)) then
    local ties = redis.call('ZREVRANGEBYSCORE', key, fmt(at), fmt(at), 'WITHSCORES')
    for i = 1, #ties, 2 do
      if ties[i] < ident and #out < n then out[#out + 1] = {ties[i], at} end
    end
    top = '(' .. fmt(at)
  end
  if #out < n then
    local got = redis.call('ZREVRANGEBYSCORE', key, top, floor, 'WITHSCORES', 'LIMIT', 0, n - #out)
    for i = 1, #got, 2 do out[#out + 1] = {got[i], tonumber(got[i + 1])} end
  end
  return out
end
local function newer(a, b)
  if a[2] ~= b[2] then return a[2] > b[2] end
  return a[1] > b[1]
end
-- walk ``keys`` merged newest first below the cursor; ``accept(id)`` returns the reply
-- entry of a matching item or nil. Returns entries (up to limit + 1) and the (score, id)
-- of each entry. At most ``budget`` items are looked at in one call.
local function merged_page(keys, at, ident, limit, accept, budget, floor)
  floor = floor or '-inf'
  local items, pos = {}, {}
  local seen = 0
  while #items <= limit and seen < budget do
    local want = math.max(limit + 1 - #items, 50)
    local cands = {}
    for _, k in ipairs(keys) do
      for _, c in ipairs(chunk_below(k, at, ident, want, floor)) do cands[#cands + 1] = c end
    end
    if #cands == 0 then break end
    table.sort(cands, newer)
    local last = nil
    for i = 1, math.min(want, #cands) do
      local c = cands[i]
      if last == nil or c[1] ~= last[1] or c[2] ~= last[2] then
        seen = seen + 1
        local entry = accept(c[1])
        if entry ~= nil then items[#items + 1] = entry; pos[#pos + 1] = c end
        last = c
        if #items > limit then break end
      end
    end
    at, ident = last[2], last[1]
  end
  return items, pos, seen >= budget and #items <= limit, at, ident
end
-- sort candidate ids (id, score) newest first and keep those below the cursor
local function sorted_below(cands, at, ident)
  table.sort(cands, newer)
  if at == nil then return cands end
  local out = {}
  for _, c in ipairs(cands) do
    if c[2] < at or (c[2] == at and c[1] < ident) then out[#out + 1] = c end
  end
  return out
end
