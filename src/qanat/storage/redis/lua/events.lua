-- needs: flow ops pages
-- events: ARGV pipe (opt), since (opt), limit, cursor at (opt), cursor id (opt)
local pipe, since, limit = opt(ARGV[1]), num(opt(ARGV[2])), tonumber(ARGV[3])
local cat, cid = num(opt(ARGV[4])), opt(ARGV[5])
local key = P .. ':ev:ix'
if pipe then key = key .. ':' .. pipe end
local floor = '-inf'
if since ~= nil then floor = fmt(since) end
local items, pos = merged_page({key}, cat, cid, math.max(limit, 0), event_reply, 100000, floor)
local out = {''}
if #items > limit and limit > 0 then out[1] = fmt(pos[limit][2]) .. '|' .. pos[limit][1] end
for j = 1, math.min(limit, #items) do out[#out + 1] = items[j] end
return out
