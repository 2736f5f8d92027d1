-- workers: every registered worker (id, JSON [host, pid, at]); the caller filters by host
return redis.call('HGETALL', P .. ':workers')
