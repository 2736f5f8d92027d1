-- trigger_failures: ARGV source -> the failures' JSON texts
return redis.call('LRANGE', P .. ':f:' .. ARGV[1], 0, -1)
