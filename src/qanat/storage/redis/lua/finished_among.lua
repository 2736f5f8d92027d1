-- finished_among: ARGV ids... -> the fields of those that exist and have finished
-- (one HGET for each of the others: a waiter's re-read skips what has not finished)
local out = {}
for i = 1, #ARGV do
  local status = redis.call('HGET', ekey(ARGV[i]), 'status')
  if status and FINISHED[status] then out[#out + 1] = full(ARGV[i]) end
end
return out
