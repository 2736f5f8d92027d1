-- needs: flow ops
-- checkpoint: ARGV execution id, owner, step key, step JSON, n children, children...
local why = checkpoint(load(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV, 6, tonumber(ARGV[5]))
bell()
return why
