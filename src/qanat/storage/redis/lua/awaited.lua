-- awaited: ARGV prefix -> the pipes starting with it that open waiters wait on
local out = {}
local flat = redis.call('HGETALL', P .. ':wpipes')
for i = 1, #flat, 2 do
  if string.sub(flat[i], 1, #ARGV[1]) == ARGV[1] and tonumber(flat[i + 1]) > 0 then out[#out + 1] = flat[i] end
end
return out
