-- logs: ARGV id -> its lines (JSON) in order
return redis.call('LRANGE', P .. ':log:' .. ARGV[1], 0, -1)
