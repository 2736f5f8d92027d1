-- needs: flow ops
-- waiter: ARGV execution id, key -> its fields (empty: none)
return redis.call('HGETALL', wkey(ARGV[1], ARGV[2]))
