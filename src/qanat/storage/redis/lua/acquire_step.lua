-- needs: flow
-- acquire_step: ARGV name, holder, owner, limit, lease, at (opt)
-- slots P:ss:<name> (holder scored by lease end), their owners P:sso:<name>, and per
-- owner the slots it renews P:sown:<owner> (name\0holder)
local name, holder, owner, limit = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local at = at_arg(ARGV[6])
local untl = fmt(at + tonumber(ARGV[5]))
local k = P .. ':ss:' .. name
for _, h in ipairs(redis.call('ZRANGEBYSCORE', k, '-inf', '(' .. fmt(at))) do
  redis.call('ZREM', k, h)
  redis.call('HDEL', P .. ':sso:' .. name, h)
end
touch()
if redis.call('ZSCORE', k, holder) then
  redis.call('ZADD', k, untl, holder)
  bell()
  return 1
end
if redis.call('ZCARD', k) >= limit then bell(); return 0 end
redis.call('ZADD', k, untl, holder)
redis.call('HSET', P .. ':sso:' .. name, holder, owner)
redis.call('SADD', P .. ':sown:' .. owner, name .. NUL .. holder)
bell()
return 1
