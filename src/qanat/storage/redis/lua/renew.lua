-- renew: ARGV owner, lease, at (opt), ids... -> flat list of (id, why) to stop
local owner = ARGV[1]
local untl = at_arg(ARGV[3]) + tonumber(ARGV[2])
for _, m in ipairs(redis.call('SMEMBERS', P .. ':sown:' .. owner)) do
  local cut = string.find(m, NUL, 1, true)
  local name, holder = string.sub(m, 1, cut - 1), string.sub(m, cut + 1)
  if redis.call('ZSCORE', P .. ':ss:' .. name, holder) then
    redis.call('ZADD', P .. ':ss:' .. name, 'XX', fmt(untl), holder)
  else
    redis.call('SREM', P .. ':sown:' .. owner, m)
  end
end
local stops = {}
for i = 4, #ARGV do
  local r = load(ARGV[i])
  local why = stop_reason(r, owner)
  if why ~= nil then
    stops[#stops + 1] = ARGV[i]; stops[#stops + 1] = why
  else
    set(r, 'available_at', untl)
    flush(r)
  end
end
-- a lease extension is nobody else's business: no doorbell
return stops
