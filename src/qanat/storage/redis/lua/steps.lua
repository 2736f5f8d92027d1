-- steps: ARGV id -> the step records' JSON texts
return redis.call('HVALS', P .. ':st:' .. ARGV[1])
