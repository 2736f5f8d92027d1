-- needs: flow ops
-- append_logs: ARGV owner (opt), count, then (execution id, line JSON) pairs
local n = log_lines(ARGV, 3, tonumber(ARGV[2]), opt(ARGV[1]))
bell()
return n
