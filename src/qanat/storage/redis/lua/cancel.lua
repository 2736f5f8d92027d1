-- needs: flow ops
-- cancel: ARGV reason (opt), ids... -> the records as they were before
local before = {}
local ids = {}
for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
cancel_tree(ids, opt(ARGV[1]), now(), before)
bell()
return before
