-- needs: flow ops fin
-- finish: ARGV as ``finish_one`` in fin.lua takes it; returns what it returns.
local out = finish_one(ARGV)
bell()
return out
