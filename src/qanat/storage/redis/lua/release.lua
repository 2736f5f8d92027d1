-- needs: flow
-- release: ARGV owner, ids...: given back, due now; not a recovery
local at = now()
for i = 2, #ARGV do
  local r = load(ARGV[i])
  if owns(r, ARGV[1]) then
    freed(r.slot)
    set(r, 'owner', nil); set(r, 'status', 'pending'); set(r, 'available_at', at)
    flush(r)
  end
end
bell()
return 1
