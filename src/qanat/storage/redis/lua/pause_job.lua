-- pause_job: ARGV job, "1" pause / "0" resume -> 1 if this changed the job's state
local n
if ARGV[2] == '1' then n = redis.call('SADD', P .. ':paused', ARGV[1])
else n = redis.call('SREM', P .. ':paused', ARGV[1]) end
if n > 0 then touch() end
bell()
return n
