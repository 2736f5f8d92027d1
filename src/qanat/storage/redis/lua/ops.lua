-- Shared state changes: insert (with the enqueue-time flow rules), final states,
-- cancel of a tree, waiters, deletion.

-- waiters: hash P:w:<eid>\0<key>; keys of an execution P:wk:<eid>; open dict waiters
-- P:wi:<pipe>\0<shape>\0<value> (set of eid\0key); shapes in use P:wsh:<pipe> (hash
-- shape -> count); open predicate waiters P:wp:<pipe>; open waiters per pipe P:wpipes;
-- every open waiter of a pipe P:wo:<pipe> (set of eid\0key, for the dashboard's list)
local function wkey(eid, key) return P .. ':w:' .. eid .. NUL .. key end
local function index_waiter(w, eid, key)
  local member = eid .. NUL .. key
  if w.shape == nil then
    redis.call('SADD', P .. ':wp:' .. w.pipe, member)
  else
    redis.call('SADD', P .. ':wi:' .. w.pipe .. NUL .. w.shape .. NUL .. (w.value or ''), member)
    redis.call('HINCRBY', P .. ':wsh:' .. w.pipe, w.shape, 1)
  end
  redis.call('HINCRBY', P .. ':wpipes', w.pipe, 1)
  redis.call('SADD', P .. ':wo:' .. w.pipe, member)
end
local function unindex_waiter(w, eid, key)
  local member = eid .. NUL .. key
  local removed
  if w.shape == nil then
    removed = redis.call('SREM', P .. ':wp:' .. w.pipe, member)
  else
    removed = redis.call('SREM', P .. ':wi:' .. w.pipe .. NUL .. w.shape .. NUL .. (w.value or ''), member)
    if removed == 1 then
      local left = redis.call('HINCRBY', P .. ':wsh:' .. w.pipe, w.shape, -1)
      if left <= 0 then redis.call('HDEL', P .. ':wsh:' .. w.pipe, w.shape) end
    end
  end
  redis.call('SREM', P .. ':wo:' .. w.pipe, member)
  if removed == 1 then
    local left = redis.call('HINCRBY', P .. ':wpipes', w.pipe, -1)
    if left <= 0 then redis.call('HDEL', P .. ':wpipes', w.pipe) end
  end
end
local function waiter_get(eid, key)
  local flat = redis.call('HGETALL', wkey(eid, key))
  if #flat == 0 then return nil end
  local w = {}
  for i = 1, #flat, 2 do w[flat[i]] = flat[i + 1] end
  return w
end
local function drop_waiters(eid)
  for _, key in ipairs(redis.call('SMEMBERS', P .. ':wk:' .. eid)) do
    local w = waiter_get(eid, key)
    if w then
      if w.event_id == nil then unindex_waiter(w, eid, key) end
      redis.call('DEL', wkey(eid, key))
    end
  end
  redis.call('DEL', P .. ':wk:' .. eid)
end
local function forget_waiter(eid, key)
  local w = waiter_get(eid, key)
  if w then
    if w.event_id == nil then unindex_waiter(w, eid, key) end
    redis.call('DEL', wkey(eid, key))
    redis.call('SREM', P .. ':wk:' .. eid, key)
  end
end
local function has_waiters(pipe) return redis.call('HEXISTS', P .. ':wpipes', pipe) == 1 end

-- final states ------------------------------------------------------------------------
local function final(r, status, output, err, at, reason)
  if OWNED[r.status] and r.gate == nil then freed(r.slot) end
  set(r, 'gate', nil); set(r, 'status', status); set(r, 'output', output); set(r, 'error', err)
  set(r, 'reason', reason); set(r, 'owner', nil); set(r, 'available_at', nil)
  set(r, 'completed_at', at); set(r, 'pause_requested', '0')
  flush(r)
  wake_parent(r, at)
end

-- cancel live executions and their live children; returns their ids (before: records)
local function cancel_tree(ids, reason, at, before)
  local todo = {}
  for _, id in ipairs(ids) do todo[#todo + 1] = id end
  local n = 0
  while #todo > 0 do
    local id = table.remove(todo)
    local r = load(id)
    if r and LIVE[r.status] then
      if before then before[#before + 1] = full(id) end
      local owner = r.owner
      final(r, 'cancelled', nil, nil, at, reason)
      if owner then set(r, 'owner', owner); flush(r) end -- the owner notices through renew
      n = n + 1
      for _, c in ipairs(redis.call('SMEMBERS', P .. ':kids:' .. id)) do todo[#todo + 1] = c end
    end
  end
  return n
end

-- the enqueue-time flow rules (flow.admit): nil to store ``r``, or the id of an
-- existing execution that takes the trigger instead (an open batch)
local function live_id(id)
  if id == nil then return false end
  local st = redis.call('HGET', ekey(id), 'status')
  return st and LIVE[st]
end
local function drop_one(id, reason, at)
  local r = load(id)
  if r and r.status == 'pending' then
    set(r, 'status', 'skipped'); set(r, 'reason', reason); set(r, 'available_at', nil)
    set(r, 'completed_at', at); set(r, 'gate', nil)
    flush(r)
  end
end
local function debounce_plan(g, burst_open, delay, leading, timeout, at, new_id)
  local in_window = g.last_at ~= nil and at < g.last_at + delay
  if leading and not burst_open and not in_window then
    return at, nil, {ref = nil, n = 0, first_at = at, last_at = at}
  end
  local first = at
  if burst_open or (leading and in_window) then first = g.first_at or at end
  local due = at + delay
  if timeout ~= nil then due = math.max(at, math.min(due, first + timeout)) end
  local replaces = nil
  if burst_open then replaces = g.ref end
  return due, replaces, {ref = new_id, n = 0, first_at = first, last_at = at}
end
local function admit(r, spec, item)
  local at = tonumber(r.created_at)
  if spec.window ~= nil then set(r, 'slot', spec.window[1]) end
  if r.status ~= 'pending' then return nil end
  local why = nil
  if spec.singleton ~= nil and not spec.singleton[2] then
    local ref = gate_get(spec.singleton[1]).ref
    if live_id(ref) then why = 'singleton: ' .. ref .. ' is live' end
  end
  if why == nil and spec.discard ~= nil then
    local last = gate_get(spec.discard[1]).last_at
    if last ~= nil and at < last + tonumber(spec.discard[2]) then why = 'throttled' end
  end
  if why == nil and spec.rate ~= nil then
    local gate, count, period = spec.rate[1], tonumber(spec.rate[2]), tonumber(spec.rate[3])
    if window_opens_at(marks(gate, at - period, count), count, period, at) ~= nil then
      why = 'rate_limited'
    end
  end
  if why ~= nil then
    set(r, 'status', 'skipped'); set(r, 'reason', why); set(r, 'available_at', nil)
    set(r, 'completed_at', at); set(r, 'slot', nil)
    return nil
  end
  if spec.rate ~= nil then add_mark(spec.rate[1], at, at - tonumber(spec.rate[3])) end
  if spec.discard ~= nil then
    local g = gate_get(spec.discard[1]); g.last_at = at; gate_save(spec.discard[1], g)
  end
  if spec.singleton ~= nil then
    local gate, cancel = spec.singleton[1], spec.singleton[2]
    local g = gate_get(gate)
    if cancel and live_id(g.ref) then cancel_tree({g.ref}, 'singleton: replaced by ' .. r.id, at, nil) end
    g.ref = r.id
    gate_save(gate, g)
  end
  if spec.debounce ~= nil then
    local d = spec.debounce
    local gate, delay, leading, timeout = d[1], tonumber(d[2]), d[3], d[4]
    if timeout == cjson.null then timeout = nil end
    local g = gate_get(gate)
    local burst_open = false
    if g.ref ~= nil then
      local v = redis.call('HMGET', ekey(g.ref), 'status', 'claims')
      burst_open = v[1] == 'pending' and v[2] == '0'
    end
    local due, replaces, state = debounce_plan(g, burst_open, delay, leading, timeout and tonumber(timeout), at, r.id)
    if replaces ~= nil then drop_one(replaces, 'debounced: replaced by ' .. r.id, at) end
    due = math.max(due, tonumber(r.run_at))
    set(r, 'run_at', due); set(r, 'available_at', due)
    gate_save(gate, state)
  end
  if spec.batch ~= nil then
    local gate, size, timeout = spec.batch[1], tonumber(spec.batch[2]), tonumber(spec.batch[3])
    local g = gate_get(gate)
    if g.ref ~= nil and g.n < size then
      local o = load(g.ref)
      if o and o.status == 'pending' and o.claims == '0' then
        g.n = g.n + 1
        -- the item joins the open batch's list (merged into its input when read)
        local items = item
        if o._items then items = o._items .. ',' .. item end
        set(o, '_items', items)
        if g.n >= size then
          set(o, 'run_at', at)
          if o.available_at ~= nil then set(o, 'available_at', at) end
        end
        flush(o)
        gate_save(gate, g)
        return g.ref
      end
    end
    local due = tonumber(r.run_at)
    if size > 1 then due = math.max(due, at + timeout) end
    set(r, 'run_at', due); set(r, 'available_at', due)
    gate_save(gate, {ref = r.id, n = 1})
  end
  return nil
end

-- set once a record's flow control ran in this script: its rules may have changed other
-- executions (a singleton cancels the one it replaces), so records read before are stale
local _admitted = false

-- store a new execution (read from ARGV at i by read_record). Returns (kind, id, next i):
-- kind 'new' (stored as given), 'changed' (stored, flow changed it), 'existing'.
local function insert(argv, i, item)
  local r, nexti = read_record(argv, i)
  local id = r.id
  if redis.call('EXISTS', ekey(id)) == 1 then return 'existing', id, nexti end -- a replay
  local kk = nil
  if r.key ~= nil then
    kk = r.job .. NUL .. r.key
    local existing = redis.call('HGET', P .. ':keys', kk)
    if existing and redis.call('EXISTS', ekey(existing)) == 1 then return 'existing', existing, nexti end
  end
  local kind = 'new'
  if r.flow ~= nil then
    _admitted = true
    local instead = admit(r, spec_of(r.flow), item)
    if instead ~= nil then return 'existing', instead, nexti end
    kind = 'changed'
  end
  if kk then redis.call('HSET', P .. ':keys', kk, id) end
  flush(r)
  redis.call('ZADD', P .. ':ix:all', r.created_at, id)
  redis.call('ZADD', P .. ':ix:j:' .. r.job, r.created_at, id)
  if r.parent_id then redis.call('SADD', P .. ':kids:' .. r.parent_id, id) end
  touch()
  return kind, id, nexti
end

-- insert ``count`` records from ARGV at i (each preceded by its batch item or "");
-- returns the reply entries (see RedisStorage._records_reply) and the next i
local function insert_many(argv, i, count, out)
  for _ = 1, count do
    local item = argv[i]
    local kind, id
    kind, id, i = insert(argv, i + 1, item)
    if kind == 'new' then out[#out + 1] = {'new', id} else out[#out + 1] = full(id) end
  end
  return i
end

local function delete_execution(r)
  local id = r.id
  if r.key ~= nil then
    local kk = r.job .. NUL .. r.key
    if redis.call('HGET', P .. ':keys', kk) == id then redis.call('HDEL', P .. ':keys', kk) end
  end
  reindex(id, r.__old, nil)
  redis.call('ZREM', P .. ':ix:all', id)
  redis.call('ZREM', P .. ':ix:j:' .. r.job, id)
  if r.parent_id then redis.call('SREM', P .. ':kids:' .. r.parent_id, id) end
  drop_waiters(id)
  redis.call('DEL', ekey(id), P .. ':st:' .. id, P .. ':log:' .. id, P .. ':kids:' .. id)
end

local function log_lines(argv, i, count, owner)
  -- count lines of (execution_id, json); with an owner only lines of executions it owns
  local n = 0
  local ok = {}
  for _ = 1, count do
    local eid, line = argv[i], argv[i + 1]
    i = i + 2
    local allowed = ok[eid]
    if allowed == nil then
      allowed = owner == nil or owns(load(eid), owner) or false
      ok[eid] = allowed
    end
    if allowed then redis.call('RPUSH', P .. ':log:' .. eid, line); n = n + 1 end
  end
  if n > 0 then touch() end
  return n, i
end

local function checkpoint(r, owner, key, step_json, argv, i, nkids)
  local why = stop_reason(r, owner)
  if why ~= nil and why ~= 'paused' then return why end
  redis.call('HSET', P .. ':st:' .. r.id, key, step_json)
  if r.recoveries ~= nil and r.recoveries ~= '0' then
    set(r, 'recoveries', 0); set(r, 'step_in_flight', nil); flush(r)
  end
  insert_many(argv, i, nkids, {})
  touch()
  return why
end

-- events --------------------------------------------------------------------------------
-- event hash P:ev:<id> (pipe, data, sent_at, source, executions, woke as JSON lists);
-- newest-first indexes P:ev:ix and P:ev:ix:<pipe>; failed triggers P:f:<source> (list of
-- JSON) with the oldest failure time of each source in P:fq
local function shapes_cover(pipe, pairs_)
  local given = {}
  for _, pv in ipairs(pairs_) do given[pv[1]] = true end
  local missing = {}
  for _, shape in ipairs(redis.call('HKEYS', P .. ':wsh:' .. pipe)) do
    if not given[shape] then missing[#missing + 1] = shape end
  end
  return missing
end
-- read n (shape, value) pairs at i ("" value: the event lacks a path of that shape)
local function read_pairs(argv, i)
  local n = tonumber(argv[i])
  local out = {}
  for j = 1, n do out[j] = {argv[i + 2 * j - 1], argv[i + 2 * j]} end
  return out, i + 1 + 2 * n
end
local function serve_waiters(eid, pipe, data, pairs_, at)
  local woke = {}
  for _, pv in ipairs(pairs_) do
    if pv[2] ~= '' then
      local set_ = P .. ':wi:' .. pipe .. NUL .. pv[1] .. NUL .. pv[2]
      for _, m in ipairs(redis.call('SMEMBERS', set_)) do
        local cut = string.find(m, NUL, 1, true)
        local wid, key = string.sub(m, 1, cut - 1), string.sub(m, cut + 1)
        local w = waiter_get(wid, key)
        if w then
          unindex_waiter(w, wid, key)
          redis.call('HSET', wkey(wid, key), 'event_id', eid, 'data', data)
          woke[#woke + 1] = wid
          wake_one(wid, at)
        end
      end
    end
  end
  for _, m in ipairs(redis.call('SMEMBERS', P .. ':wp:' .. pipe)) do
    local cut = string.find(m, NUL, 1, true)
    local wid, key = string.sub(m, 1, cut - 1), string.sub(m, cut + 1)
    redis.call('HINCRBY', wkey(wid, key), 'pokes', 1)
    wake_one(wid, at)
  end
  return woke
end
local function store_event(id, pipe, data, sent_at, source, execs, woke)
  local args = {'pipe', pipe, 'data', data, 'sent_at', sent_at, 'executions', json_list(execs),
    'woke', json_list(woke)}
  if source then args[#args + 1] = 'source'; args[#args + 1] = source end
  redis.call('HSET', P .. ':ev:' .. id, unpack(args))
  redis.call('ZADD', P .. ':ev:ix', sent_at, id)
  redis.call('ZADD', P .. ':ev:ix:' .. pipe, sent_at, id)
  touch()
end
local function record_failures(argv, i)
  local n = tonumber(argv[i])
  i = i + 1
  for _ = 1, n do
    local source, text, at = argv[i], argv[i + 1], argv[i + 2]
    redis.call('RPUSH', P .. ':f:' .. source, text)
    redis.call('ZADD', P .. ':fq', 'LT', at, source)
    i = i + 3
  end
  if n > 0 then touch() end
  return i
end
local function event_reply(id)
  local v = redis.call('HMGET', P .. ':ev:' .. id, 'pipe', 'data', 'sent_at', 'source', 'executions', 'woke')
  if not v[1] then return nil end
  local src = ''
  if v[4] then src = '=' .. v[4] end
  return {id, v[1], v[2], v[3], src, v[5], v[6], redis.call('LRANGE', P .. ':f:' .. id, 0, -1)}
end
