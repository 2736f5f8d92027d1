-- paused_jobs
return redis.call('SMEMBERS', P .. ':paused')
