-- needs: flow
-- refill: ARGV at (opt): unpark what every gate with parked work lets start
local at = at_arg(ARGV[1])
local n = 0
for _, gate in ipairs(redis.call('SMEMBERS', P .. ':pkgates')) do n = n + refill_gate(gate, at) end
bell()
return n
