-- find_cached: ARGV job, input hash, since -> newest completed with that input
local got = redis.call('ZREVRANGEBYSCORE', P .. ':c:' .. ARGV[1] .. NUL .. ARGV[2], '+inf',
  fmt(tonumber(ARGV[3])), 'LIMIT', 0, 5)
local out = {}
for _, id in ipairs(got) do out[#out + 1] = full(id) end
return out
