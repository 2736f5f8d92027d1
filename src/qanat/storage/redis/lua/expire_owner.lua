-- expire_owner: ARGV owner, at (opt): its executions become claimable at ``at``
local owner = ARGV[1]
local at = at_arg(ARGV[2])
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', P .. ':own:' .. owner)) do
  local r = load(id)
  if owns(r, owner) then set(r, 'available_at', at); flush(r); n = n + 1 end
end
redis.call('HDEL', P .. ':workers', owner)
bell()
return n
