-- open: ARGV layout version this code writes, "1" if the prefix was seen empty
-- -> {'ok'|'created'|'foreign'|'newer', stored version}
local meta = P .. ':meta'
local app = redis.call('HGET', meta, 'app')
if app then
  if app ~= 'qanat' then return {'foreign', app} end
  local v = redis.call('HGET', meta, 'layout') or '0'
  if tonumber(v) > tonumber(ARGV[1]) then return {'newer', v} end
  return {'ok', v}
end
if ARGV[2] ~= '1' then return {'foreign', ''} end
redis.call('HSET', meta, 'app', 'qanat', 'layout', ARGV[1])
return {'created', ARGV[1]}
