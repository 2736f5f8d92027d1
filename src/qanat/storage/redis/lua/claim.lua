-- needs: flow ops
-- claim: ARGV owner, lease, at (opt), limit, n jobs, jobs...
-- Per job and priority a sorted set by available_at holds what is claimable: due
-- executions and leased ones (scored by lease end), so expired leases are found in
-- O(expired). Highest priority first, then oldest available_at, then id.
local owner, lease, at, limit = ARGV[1], tonumber(ARGV[2]), at_arg(ARGV[3]), tonumber(ARGV[4])
local MAX_SKIP = 1000
local jobs = {}
for i = 6, 5 + tonumber(ARGV[5]) do
  if redis.call('SISMEMBER', P .. ':paused', ARGV[i]) == 0 then jobs[#jobs + 1] = ARGV[i] end
end
local taken = {}
if limit > 0 and #jobs > 0 then
  if redis.call('EXISTS', P .. ':wake') == 1 then open_due_gates(at) end
  local levels, seen = {}, {}
  for _, job in ipairs(jobs) do
    for _, p in ipairs(redis.call('ZRANGE', P .. ':prios:' .. job, 0, -1)) do
      if not seen[p] then seen[p] = true; levels[#levels + 1] = p end
    end
  end
  table.sort(levels, function(a, b) return tonumber(a) > tonumber(b) end)
  local skipped = 0
  local done = {}
  local full = {}
  local top = fmt(at)
  for _, prio in ipairs(levels) do
    while #taken < limit and skipped < MAX_SKIP do
      local want = limit - #taken
      local cands = {}
      for _, job in ipairs(jobs) do
        local got = redis.call('ZRANGEBYSCORE', rkey(job, prio), '-inf', top, 'WITHSCORES', 'LIMIT', 0, want + #taken)
        for i = 1, #got, 2 do
          if not done[got[i]] then cands[#cands + 1] = {got[i], tonumber(got[i + 1])} end
        end
      end
      if #cands == 0 then break end
      table.sort(cands, function(a, b)
        if a[2] ~= b[2] then return a[2] < b[2] end
        return a[1] < b[1]
      end)
      for i = 1, math.min(want, #cands) do
        local id = cands[i][1]
        done[id] = true
        local r = load(id)
        if r == nil or r.available_at == nil or tonumber(r.available_at) > at or not CLAIMABLE[r.status] then
          -- parked or changed by this claim meanwhile (a full gate's backlog)
        elseif r.deadline ~= nil and tonumber(r.deadline) <= at then
          final(r, 'failed', nil, DEADLINE_ERROR, at, nil)
          skipped = skipped + 1
        elseif r.flow ~= nil and not admit_claim(r, at) then
          skipped = skipped + 1
          local gate = r.gate
          if r.reason == 'concurrency' and not full[gate] then
            full[gate] = true
            park_gate(gate, r.flow, at, 5000)
          end
        else
          if r.owner ~= nil then set(r, 'recoveries', tonumber(r.recoveries or '0') + 1) end
          set(r, 'status', 'running'); set(r, 'owner', owner); set(r, 'available_at', at + lease)
          set(r, 'claims', tonumber(r.claims or '0') + 1)
          if r.started_at == nil then set(r, 'started_at', at) end
          flush(r)
          taken[#taken + 1] = id
        end
      end
    end
    if #taken >= limit or skipped >= MAX_SKIP then break end
  end
end
local wake = redis.call('ZRANGE', P .. ':wake', 0, 0, 'WITHSCORES')
local out = {fmt(now()), wake[2] or ''}
for _, id in ipairs(taken) do out[#out + 1] = full(id) end
bell()
return out
