-- stats: the counters (status and job+status counts, retries, run-time sum) and the
-- run times' count and 95th percentile (nearest rank, as stats.runtime_stats)
local st = redis.call('HGETALL', P .. ':stats')
local n = redis.call('ZCARD', P .. ':rt')
local p95 = ''
if n > 0 then
  local x = 0.95 * n + 0.5
  local fl = math.floor(x)
  local rounded
  if x - fl > 0.5 or (x - fl == 0.5 and fl % 2 == 1) then rounded = fl + 1 else rounded = fl end
  local rank = math.max(0, math.min(n - 1, rounded - 1))
  p95 = redis.call('ZRANGE', P .. ':rt', rank, rank, 'WITHSCORES')[2]
end
return {st, tostring(n), p95}
