-- needs: flow ops
-- purge: ARGV status, before (opt), keep (opt), batch -> how many deleted (at most
-- batch: the caller calls again until fewer come back)
local k = P .. ':done:' .. ARGV[1]
local before, keep, batch = num(opt(ARGV[2])), num(opt(ARGV[3])), tonumber(ARGV[4])
local doomed, seen = {}, {}
if keep ~= nil then
  for _, id in ipairs(redis.call('ZREVRANGE', k, keep, keep + batch - 1)) do
    if not seen[id] then seen[id] = true; doomed[#doomed + 1] = id end
  end
end
if before ~= nil and #doomed < batch then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', k, '-inf', '(' .. fmt(before), 'LIMIT', 0, batch)) do
    if not seen[id] and #doomed < batch then seen[id] = true; doomed[#doomed + 1] = id end
  end
end
for _, id in ipairs(doomed) do
  local r = load(id)
  if r then delete_execution(r) end
end
if #doomed > 0 then touch() end
bell()
return #doomed
