-- unregister_worker: ARGV worker id
redis.call('HDEL', P .. ':workers', ARGV[1])
return 1
