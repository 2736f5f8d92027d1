-- wake: ARGV at, ids...
local at = tonumber(ARGV[1])
for i = 2, #ARGV do wake_one(ARGV[i], at) end
bell()
return 1
