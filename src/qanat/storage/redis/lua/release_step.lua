-- needs: flow
-- release_step: ARGV name, holder
local name, holder = ARGV[1], ARGV[2]
redis.call('ZREM', P .. ':ss:' .. name, holder)
local owner = redis.call('HGET', P .. ':sso:' .. name, holder)
if owner then
  redis.call('SREM', P .. ':sown:' .. owner, name .. NUL .. holder)
  redis.call('HDEL', P .. ':sso:' .. name, holder)
end
touch()
bell()
return 1
