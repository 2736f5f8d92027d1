-- needs: flow ops
-- enqueue: ARGV count, then per record its batch item ("" none) and its fields
local out = {}
insert_many(ARGV, 2, tonumber(ARGV[1]), out)
bell()
return out
