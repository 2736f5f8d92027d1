-- get_many: ARGV payloads ("1"/"0"), ids... -> the fields of those that exist
local out = {}
for i = 2, #ARGV do
  local flat = full(ARGV[i])
  if #flat > 0 then
    if ARGV[1] == '0' then
      local bare = {}
      for j = 1, #flat, 2 do
        local k = flat[j]
        if k ~= 'input' and k ~= 'output' and k ~= 'error' then
          bare[#bare + 1] = k; bare[#bare + 1] = flat[j + 1]
        end
      end
      flat = bare
    end
    out[#out + 1] = flat
  end
end
return out
