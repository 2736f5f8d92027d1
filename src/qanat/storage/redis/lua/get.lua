-- get: ARGV id -> its fields (empty: none)
return full(ARGV[1])
