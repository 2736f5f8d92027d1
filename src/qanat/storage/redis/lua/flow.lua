-- Flow control: the rules of qanat/storage/flow.py, expressed once for Redis.
-- Gates are hashes P:g:<gate> (ref, n, first_at, last_at); marks (starts, accepted
-- triggers) a sorted set P:m:<gate> by time; window slots P:slot:<gate> (running
-- executions scored by lease end); parked executions P:pk:<gate>; gates due to open
-- P:wake (score: when).
local function gate_rule(gate) return cjson.decode(gate)[2] end

local function gate_get(gate)
  local v = redis.call('HMGET', P .. ':g:' .. gate, 'ref', 'n', 'first_at', 'last_at')
  return {ref = v[1] or nil, n = tonumber(v[2] or '0'), first_at = num(v[3] or nil), last_at = num(v[4] or nil)}
end
local function gate_save(gate, g)
  local k = P .. ':g:' .. gate
  redis.call('DEL', k)
  local args = {'n', fmt(g.n or 0)}
  if g.ref then args[#args + 1] = 'ref'; args[#args + 1] = g.ref end
  if g.first_at then args[#args + 1] = 'first_at'; args[#args + 1] = fmt(g.first_at) end
  if g.last_at then args[#args + 1] = 'last_at'; args[#args + 1] = fmt(g.last_at) end
  redis.call('HSET', k, unpack(args))
end
-- up to ``limit`` mark times later than ``after``, newest first
local function marks(gate, after, limit)
  local got = redis.call('ZREVRANGEBYSCORE', P .. ':m:' .. gate, '+inf', '(' .. fmt(after),
    'WITHSCORES', 'LIMIT', 0, limit)
  local out = {}
  for i = 2, #got, 2 do out[#out + 1] = tonumber(got[i]) end
  return out
end
local function add_mark(gate, at, forget_before)
  local k = P .. ':m:' .. gate
  redis.call('ZREMRANGEBYSCORE', k, '-inf', fmt(forget_before))
  local seq = redis.call('INCR', P .. ':mseq')
  redis.call('ZADD', k, fmt(at), tostring(seq))
end
local function running(gate) return redis.call('ZCARD', P .. ':slot:' .. gate) end

local function window_opens_at(recent, count, period, at)
  local inside = {}
  for _, t in ipairs(recent) do if t > at - period then inside[#inside + 1] = t end end
  if #inside < count then return nil end
  return inside[count] + period
end

local function set_wake(gate, at) redis.call('ZADD', P .. ':wake', 'LT', fmt(at), gate) end

local function unpark(gate, n)
  if n <= 0 then return 0 end
  local ids = redis.call('ZRANGE', P .. ':pk:' .. gate, 0, n - 1)
  for _, id in ipairs(ids) do
    local r = load(id)
    set(r, 'available_at', r.run_at); set(r, 'gate', nil); set(r, 'reason', nil)
    flush(r)
  end
  return #ids
end

local function freed(slot) if slot ~= nil then unpark(slot, 1) end end

local function park(r, gate, opens_at, reason)
  set(r, 'available_at', nil); set(r, 'gate', gate); set(r, 'reason', reason)
  flush(r)
  if opens_at ~= nil then set_wake(gate, opens_at) end
end

-- the spec of a flow JSON text, decoded once per script
local _specs = {}
local function spec_of(flow)
  local s = _specs[flow]
  if s == nil then
    s = cjson.decode(flow)
    s.rolling = s.rolling or {}
    s.gated = s.window ~= nil or #s.rolling > 0
    _specs[flow] = s
  end
  return s
end

-- Block or nil: {gate, opens_at, reason}; ``taking``: window gate -> taken in this claim
local function blocked(r, spec, at, taking)
  if spec.window ~= nil and r.status ~= 'running' then
    local gate, limit = spec.window[1], tonumber(spec.window[2])
    if running(gate) + (taking[gate] or 0) >= limit then return {gate, nil, 'concurrency'} end
  end
  if r.started_at == nil then
    for _, w in ipairs(spec.rolling) do
      local gate, count, period = w[1], tonumber(w[2]), tonumber(w[3])
      local opens = window_opens_at(marks(gate, at - period, count), count, period, at)
      if opens ~= nil then
        local why = 'rolling'
        if gate_rule(gate) == 'throttle' then why = 'throttle' end
        return {gate, opens, why}
      end
    end
  end
  return nil
end

-- how many parked behind ``gate`` may start at ``at`` (and, with none, when it opens)
local function room(gate, spec, at)
  if gate_rule(gate) == 'window' and spec.window ~= nil then
    return tonumber(spec.window[2]) - running(gate), nil
  end
  for _, w in ipairs(spec.rolling) do
    if w[1] == gate then
      local count, period = tonumber(w[2]), tonumber(w[3])
      local inside = marks(gate, at - period, count)
      if #inside < count then return count - #inside, nil end
      local opens = window_opens_at(inside, count, period, at)
      return 0, opens or at
    end
  end
  return 0, nil
end

local function refill_gate(gate, at)
  local head = redis.call('ZRANGE', P .. ':pk:' .. gate, 0, 0)
  if #head == 0 then return 0 end
  local flow = redis.call('HGET', ekey(head[1]), 'flow')
  if not flow then return 0 end
  local n, opens = room(gate, spec_of(flow), at)
  if opens ~= nil then set_wake(gate, opens) end
  if n > 0 then return unpark(gate, n) end
  return 0
end

local function open_due_gates(at)
  local due = redis.call('ZRANGEBYSCORE', P .. ':wake', '-inf', fmt(at), 'LIMIT', 0, 100)
  for _, gate in ipairs(due) do
    redis.call('ZREM', P .. ':wake', gate)
    refill_gate(gate, at)
  end
end

-- may ``r`` be claimed at ``at``? Counted if so, else parked.
local function admit_claim(r, at)
  local spec = spec_of(r.flow)
  if not spec.gated then return true end
  local b = blocked(r, spec, at, {})
  if b ~= nil then park(r, b[1], b[2], b[3]); return false, b end
  if r.started_at == nil then
    for _, w in ipairs(spec.rolling) do add_mark(w[1], at, at - tonumber(w[3])) end
    for _, w in ipairs(spec.rolling) do
      local gate, count, period = w[1], tonumber(w[2]), tonumber(w[3])
      if redis.call('EXISTS', P .. ':pk:' .. gate) == 1 then
        set_wake(gate, window_opens_at(marks(gate, at - period, count), count, period, at) or at)
      end
    end
  end
  -- (the caller flushes it as running at once, so ``running`` counts it from here)
  return true
end

local function allows_running(r)
  if r.slot == nil or r.flow == nil then return true end
  local spec = spec_of(r.flow)
  return spec.window == nil or running(r.slot) < tonumber(spec.window[2])
end

-- a window gate found full: park its other due executions with the same rules at once
-- (the slot count cannot drop inside this script), at most ``bound`` of them
local function park_gate(gate, flow, at, bound)
  local n = 0
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':sq:' .. gate, '-inf', fmt(at), 'LIMIT', 0, bound)) do
    local r = load(id)
    if r.flow == flow and r.status ~= 'running' then
      park(r, gate, nil, 'concurrency')
      n = n + 1
    end
  end
  return n
end
