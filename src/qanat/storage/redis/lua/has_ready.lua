-- has_ready: ARGV at, n jobs, jobs... -> 1 if a claim might find something
local at = fmt(tonumber(ARGV[1]))
for i = 3, 2 + tonumber(ARGV[2]) do
  local job = ARGV[i]
  if redis.call('SISMEMBER', P .. ':paused', job) == 0 then
    for _, p in ipairs(redis.call('ZRANGE', P .. ':prios:' .. job, 0, -1)) do
      if #redis.call('ZRANGEBYSCORE', rkey(job, p), '-inf', at, 'LIMIT', 0, 1) > 0 then return 1 end
    end
  end
end
if #redis.call('ZRANGEBYSCORE', P .. ':wake', '-inf', at, 'LIMIT', 0, 1) > 0 then return 1 end
return 0
