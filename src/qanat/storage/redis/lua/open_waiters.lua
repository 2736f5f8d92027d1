-- needs: flow ops
-- open_waiters: ARGV pipe ('' = every pipe) -> flat list of (eid, key, waiter fields) of
-- the waiters with no delivery yet; the caller sorts by ``since`` and cuts to its limit
local pipes = {}
if ARGV[1] ~= '' then
  pipes[1] = ARGV[1]
else
  pipes = redis.call('HKEYS', P .. ':wpipes')
end
local out = {}
for _, pipe in ipairs(pipes) do
  for _, m in ipairs(redis.call('SMEMBERS', P .. ':wo:' .. pipe)) do
    local cut = string.find(m, NUL, 1, true)
    local eid, key = string.sub(m, 1, cut - 1), string.sub(m, cut + 1)
    local flat = redis.call('HGETALL', wkey(eid, key))
    if #flat > 0 then
      out[#out + 1] = eid; out[#out + 1] = key; out[#out + 1] = flat
    end
  end
end
return out
