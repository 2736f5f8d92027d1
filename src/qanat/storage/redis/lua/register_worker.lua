-- register_worker: ARGV worker id, JSON [host, pid, at]
redis.call('HSET', P .. ':workers', ARGV[1], ARGV[2])
return 1
