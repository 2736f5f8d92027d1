-- needs: flow ops
-- finish: ARGV id, owner, status, output, error, attempt, available_at, reason (opt
-- each), then the completion event: id (opt), pipe, data (opt), sent_at, source (opt),
-- shape/value pairs; then children, failures, logs (each a count and its items).
-- Returns 1, 0 (not owned), or {'need', shapes...}: waiters exist on the event's pipe,
-- call again with the event's data and its values on these shapes.
local r = load(ARGV[1])
if r == nil or r.owner ~= ARGV[2] or not OWNED[r.status] then return 0 end
local at = now()
local status = ARGV[3]
local evid, pipe = opt(ARGV[9]), ARGV[10]
local pairs_, i = read_pairs(ARGV, 14)
local serve = false
if status == 'completed' and evid ~= nil and redis.call('EXISTS', P .. ':ev:' .. evid) == 0
    and has_waiters(pipe) then
  local missing = shapes_cover(pipe, pairs_)
  if opt(ARGV[11]) == nil or #missing > 0 then
    local out = {'need'}
    for _, s in ipairs(redis.call('HKEYS', P .. ':wsh:' .. pipe)) do out[#out + 1] = s end
    return out
  end
  serve = true
end
if status == 'pending' then
  freed(r.slot)
  local avail = num(opt(ARGV[7])) or at
  set(r, 'status', 'pending'); set(r, 'owner', nil); set(r, 'error', opt(ARGV[5]))
  set(r, 'attempt', num(opt(ARGV[6])) or (tonumber(r.attempt) + 1))
  set(r, 'available_at', avail); set(r, 'run_at', avail)
  set(r, 'recoveries', 0); set(r, 'step_in_flight', nil)
  flush(r)
else
  final(r, status, opt(ARGV[4]), opt(ARGV[5]), at, opt(ARGV[8]))
end
-- children and failures come with ``completed`` only (the counts are 0 otherwise)
i = insert_many(ARGV, i + 1, tonumber(ARGV[i]), {})
i = record_failures(ARGV, i)
if serve then
  local data = opt(ARGV[11])
  local woke = serve_waiters(evid, pipe, data, pairs_, at)
  store_event(evid, pipe, data, ARGV[12], opt(ARGV[13]), {}, woke)
end
log_lines(ARGV, i + 1, tonumber(ARGV[i]), nil)
bell()
return 1
