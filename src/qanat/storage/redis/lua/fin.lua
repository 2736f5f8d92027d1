-- One execution's finish (the operation ``finish``, and each item of ``finish_many``).
-- A: id, owner, status, output, error, attempt, available_at, reason (opt each), then the
-- completion event: id (opt), pipe, data (opt), sent_at, source (opt), shape/value
-- pairs; then children, failures, logs (each a count and its items). Returns 1, 0 (not
-- owned), or {'need', shapes...}: waiters exist on the event's pipe, call again with the
-- event's data and its values on these shapes (nothing was written). The caller rings.
local function finish_one(A)
  local r = load(A[1])
  if r == nil or r.owner ~= A[2] or not OWNED[r.status] then return 0 end
  local at = now()
  local status = A[3]
  local evid, pipe = opt(A[9]), A[10]
  local pairs_, i = read_pairs(A, 14)
  local serve = false
  if status == 'completed' and evid ~= nil and redis.call('EXISTS', P .. ':ev:' .. evid) == 0
      and has_waiters(pipe) then
    local missing = shapes_cover(pipe, pairs_)
    if opt(A[11]) == nil or #missing > 0 then
      local out = {'need'}
      for _, s in ipairs(redis.call('HKEYS', P .. ':wsh:' .. pipe)) do out[#out + 1] = s end
      return out
    end
    serve = true
  end
  if status == 'pending' then
    freed(r.slot)
    local avail = num(opt(A[7])) or at
    set(r, 'status', 'pending'); set(r, 'owner', nil); set(r, 'error', opt(A[5]))
    set(r, 'attempt', num(opt(A[6])) or (tonumber(r.attempt) + 1))
    set(r, 'available_at', avail); set(r, 'run_at', avail)
    set(r, 'recoveries', 0); set(r, 'step_in_flight', nil)
    flush(r)
  else
    final(r, status, opt(A[4]), opt(A[5]), at, opt(A[8]))
  end
  -- children and failures come with ``completed`` only (the counts are 0 otherwise)
  i = insert_many(A, i + 1, tonumber(A[i]), {})
  i = record_failures(A, i)
  if serve then
    local data = opt(A[11])
    local woke = serve_waiters(evid, pipe, data, pairs_, at)
    store_event(evid, pipe, data, A[12], opt(A[13]), {}, woke)
  end
  log_lines(A, i + 1, tonumber(A[i]), nil)
  return 1
end
