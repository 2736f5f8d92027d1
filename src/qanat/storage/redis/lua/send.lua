-- needs: flow ops
-- send: ARGV id, pipe, data, sent_at, source (opt), shape/value pairs, records (count,
-- then each with its batch item), failures (count, then source, JSON, at).
-- Returns {'stored', event} or {'need', shapes...} (waiters exist on shapes the caller
-- did not project the data on: call again with them; nothing was written).
local id, pipe, data = ARGV[1], ARGV[2], ARGV[3]
local stored = event_reply(id)
if stored then return {'stored', stored} end
local pairs_, i = read_pairs(ARGV, 6)
local missing = shapes_cover(pipe, pairs_)
if #missing > 0 then
  local out = {'need'}
  for _, s in ipairs(redis.call('HKEYS', P .. ':wsh:' .. pipe)) do out[#out + 1] = s end
  return out
end
local execs = {}
local n = tonumber(ARGV[i])
i = i + 1
for _ = 1, n do
  local item = ARGV[i]
  local _kind, eid
  _kind, eid, i = insert(ARGV, i + 1, item)
  execs[#execs + 1] = eid
end
local woke = serve_waiters(id, pipe, data, pairs_, now())
store_event(id, pipe, data, ARGV[4], opt(ARGV[5]), execs, woke)
record_failures(ARGV, i)
bell()
return {'stored', event_reply(id)}
