-- needs: flow ops fin
-- finish_many: several finishes of one worker in one call. ARGV: per finish the count
-- of its arguments, then those arguments (as ``finish`` takes them). Returns the list
-- of what each would return alone; an item answered {'need', ...} changed nothing.
local out, i = {}, 1
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local A = {}
  for k = 1, n do A[k] = ARGV[i + k] end
  out[#out + 1] = finish_one(A)
  i = i + n + 1
end
bell()
return out
