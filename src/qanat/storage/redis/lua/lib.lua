-- Shared helpers, prepended to every operation's script (see scripts.py).
-- KEYS[1] is the key prefix "{name}" (one hash slot); every key is P .. ":...".
-- Records are hashes, one field per ExecutionRecord field; an absent field is None.
-- Numbers are written with %.17g (exact doubles) and returned as strings: a Lua
-- number in a reply would be truncated to an integer.
local P = KEYS[1]
local NUL = '\0'
local _now = nil
local function now()
  if _now == nil then
    local t = redis.call('TIME')
    _now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  end
  return _now
end
local function fmt(x)
  if x == nil then return nil end
  if type(x) == 'number' then
    if x == math.floor(x) and math.abs(x) < 1e15 then return string.format('%d', x) end
    return string.format('%.17g', x)
  end
  return x
end
local function num(s) if s == nil then return nil end return tonumber(s) end
-- an optional string argument: "" is None, "=text" is text
local function opt(s) if s == nil or s == '' then return nil end return string.sub(s, 2) end
local function at_arg(s) local v = opt(s); if v == nil then return now() end return tonumber(v) end

local LIVE = {pending = true, running = true, waiting = true, paused = true}
local CLAIMABLE = {pending = true, running = true, waiting = true}
local OWNED = {running = true, waiting = true}
local FINISHED = {completed = true, failed = true, cancelled = true, skipped = true}
local DEADLINE_ERROR = '{"type": "Timeout", "module": "qanat.errors", "message": "deadline passed before it finished"}'
-- every field but the payloads: what control operations read
local CTRL = {'id', 'job', 'status', 'priority', 'key', 'group', 'parent_id', 'attempt',
  'max_attempts', 'created_at', 'run_at', 'available_at', 'deadline', 'started_at',
  'completed_at', 'owner', 'pause_requested', 'claims', 'flow', 'slot', 'gate',
  'recoveries', 'step_in_flight', 'reason', '_items', '_ih'}

local function ekey(id) return P .. ':e:' .. id end

local function snapshot(r)
  return {status = r.status, available_at = r.available_at, owner = r.owner, gate = r.gate,
    attempt = r.attempt, priority = r.priority, completed_at = r.completed_at,
    started_at = r.started_at, slot = r.slot, run_at = r.run_at, job = r.job,
    created_at = r.created_at, _ih = r._ih}
end

-- the record ``id`` (control fields only unless ``full``), or nil
local function load(id, full)
  local r = {}
  if full then
    local flat = redis.call('HGETALL', ekey(id))
    if #flat == 0 then return nil end
    for i = 1, #flat, 2 do r[flat[i]] = flat[i + 1] end
  else
    local vals = redis.call('HMGET', ekey(id), unpack(CTRL))
    if not vals[1] then return nil end
    for i, k in ipairs(CTRL) do if vals[i] then r[k] = vals[i] end end
  end
  r.__old = snapshot(r)
  r.__dirty = {}
  return r
end

local function set(r, k, v) r[k] = fmt(v); r.__dirty[k] = true end

local function rkey(job, prio) return P .. ':q:' .. job .. NUL .. prio end
local function in_ready(s) return s.available_at ~= nil and CLAIMABLE[s.status] end
local function is_parked(s)
  return s.gate ~= nil and s.available_at == nil and (s.status == 'pending' or s.status == 'waiting')
end
local function park_score(s) return tonumber(s.run_at or '0') - tonumber(s.priority or '0') * 1e10 end
local function in_slot(s) return s.slot ~= nil and s.status == 'running' end
local function cache_key(s) return P .. ':c:' .. s.job .. NUL .. (s._ih or '') end

-- priority levels known to be in ``prios:<job>`` during this script (job NUL priority):
-- a claim or a fan-out's enqueue moves hundreds of executions of one level
local _prios = {}

-- keep every index of an execution in step with its state: ``o`` before, ``n`` after
-- (nil: did not exist / deleted)
local function reindex(id, o, n)
  local oe = o or {}
  local ne = n or {}
  -- the claim index: per job and priority, scored by available_at
  local was, is = o and in_ready(o), n and in_ready(n)
  if was and not (is and oe.priority == ne.priority and oe.job == ne.job) then
    local k = rkey(oe.job, oe.priority)
    redis.call('ZREM', k, id)
    if redis.call('EXISTS', k) == 0 then
      redis.call('ZREM', P .. ':prios:' .. oe.job, oe.priority)
      _prios[oe.job .. NUL .. oe.priority] = nil
    end
  end
  if is and not (was and oe.available_at == ne.available_at and oe.priority == ne.priority) then
    redis.call('ZADD', rkey(ne.job, ne.priority), ne.available_at, id)
    local level = ne.job .. NUL .. ne.priority
    if not _prios[level] then
      redis.call('ZADD', P .. ':prios:' .. ne.job, ne.priority, ne.priority)
      _prios[level] = true
    end
  end
  -- parked behind a gate
  local wp, ip = o and is_parked(o), n and is_parked(n)
  if wp and not (ip and oe.gate == ne.gate) then
    local k = P .. ':pk:' .. oe.gate
    redis.call('ZREM', k, id)
    if redis.call('EXISTS', k) == 0 then redis.call('SREM', P .. ':pkgates', oe.gate) end
  end
  if ip then
    redis.call('ZADD', P .. ':pk:' .. ne.gate, park_score(ne), id)
    redis.call('SADD', P .. ':pkgates', ne.gate)
  end
  -- window slots held: running executions per gate, scored by lease end
  local ws, is_ = o and in_slot(o), n and in_slot(n)
  if ws and not (is_ and oe.slot == ne.slot) then redis.call('ZREM', P .. ':slot:' .. oe.slot, id) end
  if is_ then redis.call('ZADD', P .. ':slot:' .. ne.slot, ne.available_at or 0, id) end
  -- due executions that would take a window slot (for parking a full gate's backlog)
  local wq, iq = o and in_ready(o) and oe.slot ~= nil and oe.status ~= 'running',
    n and in_ready(n) and ne.slot ~= nil and ne.status ~= 'running'
  if wq and not (iq and oe.slot == ne.slot) then redis.call('ZREM', P .. ':sq:' .. oe.slot, id) end
  if iq and not (wq and oe.slot == ne.slot and oe.available_at == ne.available_at) then
    redis.call('ZADD', P .. ':sq:' .. ne.slot, ne.available_at, id)
  end
  -- owner
  if oe.owner ~= ne.owner then
    if oe.owner then redis.call('SREM', P .. ':own:' .. oe.owner, id) end
    if ne.owner then redis.call('SADD', P .. ':own:' .. ne.owner, id) end
  end
  -- status indexes and counters
  if oe.status ~= ne.status or n == nil then
    local st = P .. ':stats'
    if o then
      redis.call('ZREM', P .. ':ix:s:' .. oe.status, id)
      redis.call('ZREM', P .. ':ix:js:' .. oe.job .. NUL .. oe.status, id)
      redis.call('HINCRBY', st, 's:' .. oe.status, -1)
      redis.call('HINCRBY', st, 'js:' .. oe.job .. NUL .. oe.status, -1)
      if FINISHED[oe.status] then redis.call('ZREM', P .. ':done:' .. oe.status, id) end
      if oe.status == 'completed' then
        local rt = redis.call('ZSCORE', P .. ':rt', id)
        if rt then
          redis.call('ZREM', P .. ':rt', id)
          redis.call('HINCRBYFLOAT', st, 'rtsum', -tonumber(rt))
        end
        redis.call('ZREM', cache_key(oe), id)
      end
    end
    if n then
      redis.call('ZADD', P .. ':ix:s:' .. ne.status, ne.created_at, id)
      redis.call('ZADD', P .. ':ix:js:' .. ne.job .. NUL .. ne.status, ne.created_at, id)
      redis.call('HINCRBY', st, 's:' .. ne.status, 1)
      redis.call('HINCRBY', st, 'js:' .. ne.job .. NUL .. ne.status, 1)
      if FINISHED[ne.status] then
        redis.call('ZADD', P .. ':done:' .. ne.status, ne.completed_at or 0, id)
      end
      if ne.status == 'completed' then
        if ne.started_at and ne.completed_at then
          local rt = tonumber(ne.completed_at) - tonumber(ne.started_at)
          redis.call('ZADD', P .. ':rt', rt, id)
          redis.call('HINCRBYFLOAT', st, 'rtsum', rt)
        end
        redis.call('ZADD', cache_key(ne), ne.completed_at or 0, id)
      end
    end
  elseif ne.status == 'completed' and oe.completed_at ~= ne.completed_at then
    redis.call('ZADD', P .. ':done:completed', ne.completed_at or 0, id)
  end
  local oa, na = tonumber(oe.attempt or '1'), tonumber(ne.attempt or '1')
  if o == nil then oa = 1 end
  if n == nil then na = 1 end
  if oa ~= na then redis.call('HINCRBY', P .. ':stats', 'retries', na - oa) end
end

-- write a record's changed fields and move it in the indexes
local _changed = false
local function flush(r)
  _changed = true
  local hs, hd = {}, {}
  for k, _ in pairs(r.__dirty) do
    if r[k] == nil then hd[#hd + 1] = k else hs[#hs + 1] = k; hs[#hs + 1] = r[k] end
  end
  if #hs > 0 then redis.call('HSET', ekey(r.id), unpack(hs)) end
  if #hd > 0 then redis.call('HDEL', ekey(r.id), unpack(hd)) end
  local n = snapshot(r)
  reindex(r.id, r.__old, n)
  r.__old = n
  r.__dirty = {}
end

local function full(id) return redis.call('HGETALL', ekey(id)) end

-- why ``owner`` must stop working on ``r`` (nil: it may go on)
local function stop_reason(r, owner)
  if r == nil or r.owner ~= owner then return 'lost' end
  if r.status == 'cancelled' then return 'cancelled' end
  if not OWNED[r.status] then return 'lost' end
  if r.pause_requested == '1' then return 'paused' end
  return nil
end
local function owns(r, owner) return r ~= nil and r.owner == owner and OWNED[r.status] end

local function touch() _changed = true end
-- ring the doorbell: one stream entry (MAXLEN 1) that every listener's XREAD sees
local function bell()
  if _changed then
    redis.call('INCR', P .. ':ver')
    redis.call('XADD', P .. ':bell', 'MAXLEN', '1', '*', 'v', '1')
  end
end

local function wake_one(id, at)
  local r = load(id)
  if r and r.status == 'waiting' and r.owner == nil then set(r, 'available_at', at); flush(r) end
end

-- parents seen by wake_parent in this script, with the time they were seen at: for the
-- same time a second child's finish would find the parent as the first left it (a
-- finish_many of a fan-out's children reads their parent once)
local _parents = {}
local function wake_parent(r, at)
  if r.parent_id == nil or _parents[r.parent_id] == at then return end
  _parents[r.parent_id] = at
  local p = load(r.parent_id)
  if p and p.status == 'waiting' and p.owner == nil then
    if p.available_at == nil or tonumber(p.available_at) > at then
      set(p, 'available_at', at)
      flush(p)
    end
  end
end

-- a JSON array of strings (cjson would write {} for an empty table)
local function json_list(t) if #t == 0 then return '[]' end return cjson.encode(t) end

-- read a record given as ARGV: a count then field/value pairs, from position i
local function read_record(argv, i)
  local n = tonumber(argv[i])
  local r = {__old = nil, __dirty = {}}
  for j = i + 1, i + 2 * n, 2 do r[argv[j]] = argv[j + 1]; r.__dirty[argv[j]] = true end
  return r, i + 1 + 2 * n
end
