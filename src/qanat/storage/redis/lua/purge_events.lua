-- needs: flow ops
-- purge_events: ARGV before (opt), keep (opt), batch -> events deleted (at most batch;
-- the caller calls again until fewer come back)
local before, keep, batch = num(opt(ARGV[1])), num(opt(ARGV[2])), tonumber(ARGV[3])
local k = P .. ':ev:ix'
local doomed, seen = {}, {}
if keep ~= nil then
  for _, id in ipairs(redis.call('ZREVRANGE', k, math.max(keep, 0), math.max(keep, 0) + batch - 1)) do
    if not seen[id] then seen[id] = true; doomed[#doomed + 1] = id end
  end
end
if before ~= nil and #doomed < batch then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', k, '-inf', '(' .. fmt(before), 'LIMIT', 0, batch)) do
    if not seen[id] and #doomed < batch then seen[id] = true; doomed[#doomed + 1] = id end
  end
end
for _, id in ipairs(doomed) do
  local pipe = redis.call('HGET', P .. ':ev:' .. id, 'pipe')
  redis.call('ZREM', k, id)
  if pipe then redis.call('ZREM', k .. ':' .. pipe, id) end
  redis.call('DEL', P .. ':ev:' .. id, P .. ':f:' .. id)
  redis.call('ZREM', P .. ':fq', id)
end
if before ~= nil and #doomed < batch then
  -- failed triggers of job outputs recorded before ``before``
  for _, source in ipairs(redis.call('ZRANGEBYSCORE', P .. ':fq', '-inf', '(' .. fmt(before), 'LIMIT', 0, batch)) do
    local fk = P .. ':f:' .. source
    local kept, oldest = {}, nil
    for _, text in ipairs(redis.call('LRANGE', fk, 0, -1)) do
      local t = tonumber(cjson.decode(text).at)
      if t >= before then
        kept[#kept + 1] = text
        if oldest == nil or t < oldest then oldest = t end
      end
    end
    redis.call('DEL', fk)
    if #kept > 0 then
      redis.call('RPUSH', fk, unpack(kept))
      redis.call('ZADD', P .. ':fq', fmt(oldest), source)
    else
      redis.call('ZREM', P .. ':fq', source)
    end
  end
end
if #doomed > 0 then touch() end
bell()
return #doomed
