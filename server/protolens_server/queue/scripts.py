"""Lua scripts: every state change of a job happens in exactly one of these.

Each script is atomic in Redis, so a job's state, its queue entry, the
dedup/idempotency indexes and its progress stream never disagree, and two
racing callers (two identical submits, a cancel racing a worker, a worker
racing the worker that reclaimed its job) see one winner.

Conventions: every key a script touches is passed in KEYS (Redis Cluster rule);
the last five KEYS are the by-state indexes in JobState order; the job hash is
KEYS[1] except in SUBMIT. Finished states are final: no script rewrites them.
"""

from __future__ import annotations

# Shared helpers, prepended to every script.
_PRELUDE = r"""
local NSTATE = 5
local SBASE = #KEYS - NSTATE
local STATES = {'QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED'}
local function state_index(state)
  for i, s in ipairs(STATES) do
    if s == state then return KEYS[SBASE + i] end
  end
  return nil
end
local function is_finished(state)
  return state == 'SUCCEEDED' or state == 'FAILED' or state == 'CANCELLED'
end
local function move(jobkey, job_id, new_state, now)
  for i = 1, NSTATE do redis.call('ZREM', KEYS[SBASE + i], job_id) end
  redis.call('ZADD', state_index(new_state), now, job_id)
  redis.call('HSET', jobkey, 'state', new_state)
end
local function event(jobkey, eventskey, message, retention)
  local v = redis.call('HMGET', jobkey, 'state', 'step', 'total_steps', 'best_probability',
    'phase', 'phase_message')
  redis.call('XADD', eventskey, 'MAXLEN', '~', 1000, '*',
    'state', v[1] or '', 'step', v[2] or '0', 'total_steps', v[3] or '0',
    'best_probability', v[4] or '0', 'message', message or '',
    'phase', v[5] or '', 'phase_message', v[6] or '')
  redis.call('EXPIRE', eventskey, retention)
end
local function drop_entry(stream, group, entry)
  if entry and entry ~= '' then
    redis.call('XACK', stream, group, entry)
    redis.call('XDEL', stream, entry)
  end
end
local function clear_inflight(inflightkey, job_id)
  if redis.call('GET', inflightkey) == job_id then redis.call('DEL', inflightkey) end
end
-- A new entry is delivered at once to the PARKED consumer: it waits there until a
-- worker TAKEs its job (round robin over tenants) and XCLAIMs it.
local function park(stream, group, parked)
  -- (the group may be missing if the keys were flushed since ensure_groups ran)
  redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
  redis.call('XREADGROUP', 'GROUP', group, parked, 'COUNT', 1000, 'STREAMS', stream, '>')
end
-- A tenant that had nothing waiting joins the ring at its head, so the next take
-- serves it (it has had no turn while others' batches ran): with configs that
-- cannot share a batch, its job heads the next batch formed (docs/tenancy.md).
local function tenant_push(tq, ring, ringset, base, job_id)
  redis.call('RPUSH', tq, job_id)
  if redis.call('SADD', ringset, base) == 1 then redis.call('LPUSH', ring, base) end
end
"""

# KEYS: idem, result, inflight, inflight_job, tenant_jobs, new_job, new_events, stream,
#       p0, p1, p2, tenant_q0, tenant_q1, tenant_q2, ready, ready_set, <5 state indexes>
# ARGV: expected_idem, expected_inflight, expected_cached(0/1), job_id, tenant, retention,
#       max_queued, result_ttl, now, new_state, use_idem(0/1), nfields, field, value, ...,
#       then tenant_max_queued (0 = none), group, parked, tenant_base, priority
SUBMIT = (
    _PRELUDE
    + r"""
local use_idem = ARGV[11] == '1'
local idem = ''
if use_idem then idem = redis.call('GET', KEYS[1]) or '' end
if idem ~= ARGV[1] then return {'retry', ''} end
local infl = redis.call('GET', KEYS[3]) or ''
if infl ~= ARGV[2] then return {'retry', ''} end
local cached = tostring(redis.call('EXISTS', KEYS[2]))
if cached ~= ARGV[3] then return {'retry', ''} end
local job_id, tenant = ARGV[4], ARGV[5]
local retention, now = tonumber(ARGV[6]), tonumber(ARGV[9])
local function attach(jobkey, id)
  redis.call('HINCRBY', jobkey, 't:' .. tenant, 1)
  if use_idem then redis.call('SET', KEYS[1], id, 'EX', retention) end
  redis.call('ZADD', KEYS[5], 0, id)
  redis.call('EXPIRE', KEYS[5], retention)
end
if cached == '0' and infl ~= '' then
  local v = redis.call('HMGET', KEYS[4], 'state', 'cancel')
  if (v[1] == 'QUEUED' or v[1] == 'RUNNING') and v[2] ~= '1' then
    attach(KEYS[4], infl)
    return {'dedup_join', infl}
  end
end
local n = tonumber(ARGV[12])
local after = 12 + 2 * n
if cached == '0' then
  local total = redis.call('XLEN', KEYS[9]) + redis.call('XLEN', KEYS[10])
    + redis.call('XLEN', KEYS[11])
  if total >= tonumber(ARGV[7]) then return {'full', tostring(total)} end
  local tmax = tonumber(ARGV[after + 1])
  if tmax > 0 then
    local waiting = redis.call('LLEN', KEYS[12]) + redis.call('LLEN', KEYS[13])
      + redis.call('LLEN', KEYS[14])
    if waiting >= tmax then return {'tenant_full', tostring(waiting)} end
  end
end
local fields = {}
for i = 1, 2 * n do fields[i] = ARGV[12 + i] end
redis.call('HSET', KEYS[6], unpack(fields))
move(KEYS[6], job_id, ARGV[10], now)
attach(KEYS[6], job_id)
redis.call('EXPIRE', KEYS[6], retention)
if cached == '1' then
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[8]))
  event(KEYS[6], KEYS[7], 'served from the result cache', retention)
  return {'cache_hit', job_id}
end
local entry = redis.call('XADD', KEYS[8], '*', 'job', job_id)
park(KEYS[8], ARGV[after + 2], ARGV[after + 3])
local tq = KEYS[12 + tonumber(ARGV[after + 5])]
tenant_push(tq, KEYS[15], KEYS[16], ARGV[after + 4], job_id)
redis.call('HSET', KEYS[6], 'stream', KEYS[8], 'entry', entry, 'tq', tq)
redis.call('SET', KEYS[3], job_id, 'EX', retention)
event(KEYS[6], KEYS[7], 'queued', retention)
return {'queued', job_id}
"""
)

# KEYS: job, events, stream, dead, inflight, <5 state indexes>
# ARGV: job_id, entry, token, worker, consumer, group, now, max_attempts, retention
CLAIM = (
    _PRELUDE
    + r"""
local job_id, entry, group = ARGV[1], ARGV[2], ARGV[6]
local now, retention = tonumber(ARGV[7]), tonumber(ARGV[9])
local pending = redis.call('XPENDING', KEYS[3], group, entry, entry, 1)
if #pending == 0 or pending[1][2] ~= ARGV[5] then return {'lost', ''} end
if redis.call('EXISTS', KEYS[1]) == 0 then
  drop_entry(KEYS[3], group, entry)
  return {'gone', ''}
end
local state = redis.call('HGET', KEYS[1], 'state')
if is_finished(state) then
  drop_entry(KEYS[3], group, entry)
  return {'skip', state}
end
if redis.call('HGET', KEYS[1], 'cancel') == '1' then
  move(KEYS[1], job_id, 'CANCELLED', now)
  redis.call('HSET', KEYS[1], 'finished_at', ARGV[7])
  drop_entry(KEYS[3], group, entry)
  clear_inflight(KEYS[5], job_id)
  event(KEYS[1], KEYS[2], 'cancelled before it ran again', retention)
  return {'cancelled', ''}
end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if attempts > tonumber(ARGV[8]) then
  local err = redis.call('HGET', KEYS[1], 'error') or ''
  if err == '' then
    err = 'gave up after ' .. (attempts - 1) .. ' deliveries (the worker running it stopped)'
  end
  redis.call('HSET', KEYS[1], 'error', err, 'finished_at', ARGV[7], 'attempts', attempts - 1)
  move(KEYS[1], job_id, 'FAILED', now)
  redis.call('XADD', KEYS[4], '*', 'job', job_id, 'error', err,
    'attempts', tostring(attempts - 1), 'stream', KEYS[3])
  drop_entry(KEYS[3], group, entry)
  clear_inflight(KEYS[5], job_id)
  redis.call('HDEL', KEYS[1], 'owner')
  redis.call('EXPIRE', KEYS[1], retention)
  event(KEYS[1], KEYS[2], err, retention)
  return {'dead', err}
end
local started = tonumber(redis.call('HGET', KEYS[1], 'started_at') or '0') or 0
if started == 0 then redis.call('HSET', KEYS[1], 'started_at', ARGV[7]) end
redis.call('HSET', KEYS[1], 'owner', ARGV[3], 'worker', ARGV[4],
  'stream', KEYS[3], 'entry', entry)
move(KEYS[1], job_id, 'RUNNING', now)
event(KEYS[1], KEYS[2], 'running on ' .. ARGV[4], retention)
local out = {'run', tostring(attempts), state}
for _, v in ipairs(redis.call('HGETALL', KEYS[1])) do out[#out + 1] = v end
return out
"""
)

# KEYS: job, stream
# ARGV: token, group, consumer, entry
# Returns -1 when this worker no longer owns the job, else the cancel flag (0/1).
HEARTBEAT = r"""
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return -1 end
if redis.call('HGET', KEYS[1], 'state') ~= 'RUNNING' then return -1 end
redis.call('XCLAIM', KEYS[2], ARGV[2], ARGV[3], 0, ARGV[4], 'JUSTID')
if redis.call('HGET', KEYS[1], 'cancel') == '1' then return 1 end
return 0
"""

# Which of the jobs a worker holds were asked to cancel (the worker's cancel poll).
# KEYS: job, ...; ARGV: the cancel field. Returns the (1-based) positions of those flagged.
CANCEL_FLAGS = r"""
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('HGET', key, ARGV[1]) == '1' then out[#out + 1] = i end
end
return out
"""

# Keep an entry this worker holds but has not started (read ahead of its batch).
# KEYS: stream; ARGV: group, consumer, entry. Returns 1 if still ours.
HOLD = r"""
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pending == 0 or pending[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""

# KEYS: job, events
# ARGV: token, step, total_steps, best_probability, retention, phase, phase_message, now
PROGRESS = (
    _PRELUDE
    + r"""
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'state') ~= 'RUNNING' then return 0 end
redis.call('HSET', KEYS[1], 'step', ARGV[2], 'total_steps', ARGV[3],
  'best_probability', ARGV[4], 'phase', ARGV[6], 'phase_message', ARGV[7],
  'progress_at', ARGV[8])
event(KEYS[1], KEYS[2], '', tonumber(ARGV[5]))
return 1
"""
)

# KEYS: job, events, stream, inflight, result, <5 state indexes>
# ARGV: token, group, entry, job_id, now, retention, result_ttl, prototypes_json,
#       step, best_probability, nresult, field, value, ...  (result hash fields)
FINISH = (
    _PRELUDE
    + r"""
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 'lost' end
if redis.call('HGET', KEYS[1], 'state') ~= 'RUNNING' then return 'lost' end
local job_id, retention = ARGV[4], tonumber(ARGV[6])
redis.call('HSET', KEYS[1], 'prototypes', ARGV[8], 'finished_at', ARGV[5],
  'step', ARGV[9], 'best_probability', ARGV[10], 'error', '', 'error_reason', '',
  'error_metadata', '{}')
move(KEYS[1], job_id, 'SUCCEEDED', tonumber(ARGV[5]))
if redis.call('EXISTS', KEYS[5]) == 0 then
  local n = tonumber(ARGV[11])
  local fields = {}
  for i = 1, 2 * n do fields[i] = ARGV[11 + i] end
  redis.call('HSET', KEYS[5], unpack(fields))
end
redis.call('EXPIRE', KEYS[5], tonumber(ARGV[7]))
drop_entry(KEYS[3], ARGV[2], ARGV[3])
clear_inflight(KEYS[4], job_id)
redis.call('HDEL', KEYS[1], 'owner', 'cancel')
redis.call('EXPIRE', KEYS[1], retention)
event(KEYS[1], KEYS[2], 'succeeded', retention)
return 'ok'
"""
)

# How a worker gives a job up: retry (back to the tail of its stream), fail (FAILED +
# dead letter), cancel (CANCELLED), handback (shutdown: let another worker reclaim now).
# KEYS: job, events, stream, inflight, dead, tenant_q, ready, ready_set, <5 state indexes>
# ARGV: token, group, entry, job_id, now, retention, mode, error (message), max_attempts,
#       consumer, step, parked, tenant_base, error_reason, error_metadata (JSON)
END = (
    _PRELUDE
    + r"""
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 'lost' end
if redis.call('HGET', KEYS[1], 'state') ~= 'RUNNING' then return 'lost' end
local group, entry, job_id, mode = ARGV[2], ARGV[3], ARGV[4], ARGV[7]
local now, retention = tonumber(ARGV[5]), tonumber(ARGV[6])
redis.call('HDEL', KEYS[1], 'owner')
if mode == 'handback' then
  redis.call('HINCRBY', KEYS[1], 'attempts', -1)
  redis.call('XCLAIM', KEYS[3], group, ARGV[10], 0, entry, 'IDLE', 31536000000, 'JUSTID')
  move(KEYS[1], job_id, 'QUEUED', now)
  event(KEYS[1], KEYS[2], 'handed back by a worker shutting down', retention)
  return 'handback'
end
if mode == 'cancel' then
  redis.call('HSET', KEYS[1], 'finished_at', ARGV[5], 'step', ARGV[11])
  move(KEYS[1], job_id, 'CANCELLED', now)
  drop_entry(KEYS[3], group, entry)
  clear_inflight(KEYS[4], job_id)
  redis.call('HDEL', KEYS[1], 'cancel')
  event(KEYS[1], KEYS[2], 'cancelled at step ' .. ARGV[11], retention)
  return 'cancelled'
end
redis.call('HSET', KEYS[1], 'error', ARGV[8], 'error_reason', ARGV[14],
  'error_metadata', ARGV[15])
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
if mode == 'retry' and attempts < tonumber(ARGV[9]) then
  drop_entry(KEYS[3], group, entry)
  local new_entry = redis.call('XADD', KEYS[3], '*', 'job', job_id)
  park(KEYS[3], group, ARGV[12])
  tenant_push(KEYS[6], KEYS[7], KEYS[8], ARGV[13], job_id)
  redis.call('HSET', KEYS[1], 'entry', new_entry)
  move(KEYS[1], job_id, 'QUEUED', now)
  event(KEYS[1], KEYS[2], 'retrying after: ' .. ARGV[8], retention)
  return 'retry'
end
redis.call('HSET', KEYS[1], 'finished_at', ARGV[5])
move(KEYS[1], job_id, 'FAILED', now)
redis.call('XADD', KEYS[5], '*', 'job', job_id, 'error', ARGV[8],
  'attempts', tostring(attempts), 'stream', KEYS[3])
drop_entry(KEYS[3], group, entry)
clear_inflight(KEYS[4], job_id)
redis.call('EXPIRE', KEYS[1], retention)
event(KEYS[1], KEYS[2], ARGV[8], retention)
return 'dead'
"""
)

# KEYS: job, events, stream, inflight, tenant_jobs, tenant_q, <5 state indexes>
# ARGV: job_id, tenant ('' = any), now, retention, group
CANCEL = (
    _PRELUDE
    + r"""
local job_id, tenant = ARGV[1], ARGV[2]
local now, retention = tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('EXISTS', KEYS[1]) == 0 then return {'notfound', ''} end
if tenant ~= '' and redis.call('HEXISTS', KEYS[1], 't:' .. tenant) == 0 then
  return {'notfound', ''}
end
local state = redis.call('HGET', KEYS[1], 'state')
if is_finished(state) then return {'finished', state} end
if tenant ~= '' then
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(f, 1, 2) == 't:' and f ~= 't:' .. tenant then
      redis.call('HDEL', KEYS[1], 't:' .. tenant)
      redis.call('ZREM', KEYS[5], job_id)
      return {'detached', state}
    end
  end
end
if state == 'QUEUED' then
  local entry = redis.call('HGET', KEYS[1], 'entry')
  drop_entry(KEYS[3], ARGV[5], entry)
  redis.call('LREM', KEYS[6], 0, job_id)
  redis.call('HSET', KEYS[1], 'finished_at', ARGV[3])
  move(KEYS[1], job_id, 'CANCELLED', now)
  clear_inflight(KEYS[4], job_id)
  event(KEYS[1], KEYS[2], 'cancelled while queued', retention)
  return {'cancelled', 'CANCELLED'}
end
redis.call('HSET', KEYS[1], 'cancel', '1')
event(KEYS[1], KEYS[2], 'cancel requested', retention)
return {'cancelling', state}
"""
)

# Take up to ``count`` waiting jobs for ``consumer``, fairly: rotate the ring of tenants
# with waiting jobs, pop the next job of each in turn (p0 before p1 before p2 within a
# tenant), skip a tenant at its running limit, and XCLAIM the job's entry from PARKED.
# Job ids that are no longer QUEUED (cancelled) are dropped on the way.
# Keys of tenants and jobs are found at run time (not in KEYS): on Redis Cluster this
# needs ``key_prefix`` to be one hash tag, as the other multi-key scripts do.
# KEYS: ready, ready_set
# ARGV: prefix, group, parked, consumer, count, default_max_running, overrides (JSON)
# Returns a flat list: stream, entry, job_id, stream, entry, job_id, ...
TAKE = r"""
local prefix, group, parked, consumer = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local want = tonumber(ARGV[5])
local default_running = tonumber(ARGV[6])
local overrides = cjson.decode(ARGV[7])
local out = {}
local ring = redis.call('LLEN', KEYS[1])
local budget = ring + 4 * want + 50
local limited = 0  -- tenants passed over in a row for being at their running limit
local function running(runkey)
  for _, id in ipairs(redis.call('SMEMBERS', runkey)) do
    local v = redis.call('HMGET', prefix .. ':job:{' .. id .. '}', 'state', 'stream', 'entry')
    local keep = v[1] == 'RUNNING'
    if v[1] == 'QUEUED' and v[3] then
      local p = redis.call('XPENDING', v[2], group, v[3], v[3], 1)
      keep = #p > 0 and p[1][2] ~= parked
    end
    if not keep then redis.call('SREM', runkey, id) end
  end
  return redis.call('SCARD', runkey)
end
while #out < 3 * want and budget > 0 and limited < ring do
  budget = budget - 1
  local base = redis.call('LMOVE', KEYS[1], KEYS[1], 'LEFT', 'RIGHT')
  if not base then break end
  local tenant = string.match(base, '^.-:tq:%d+:(.*)$') or ''
  local limit = tonumber(overrides[tenant] or default_running)
  local runkey = base .. ':running'
  if limit > 0 and running(runkey) >= limit then
    limited = limited + 1
  else
    limited = 0
    local id = false
    for p = 0, 2 do
      id = redis.call('LPOP', base .. ':p' .. p)
      if id then break end
    end
    if id then
      local v = redis.call('HMGET', prefix .. ':job:{' .. id .. '}', 'state', 'stream', 'entry')
      if v[1] == 'QUEUED' and v[3] and v[3] ~= '' then
        local p = redis.call('XPENDING', v[2], group, v[3], v[3], 1)
        if #p > 0 and p[1][2] == parked then
          redis.call('XCLAIM', v[2], group, consumer, 0, v[3], 'JUSTID')
          if limit > 0 then redis.call('SADD', runkey, id) end
          out[#out + 1] = v[2]
          out[#out + 1] = v[3]
          out[#out + 1] = id
        end
      end
    end
    if redis.call('LLEN', base .. ':p0') + redis.call('LLEN', base .. ':p1')
        + redis.call('LLEN', base .. ':p2') == 0 then
      redis.call('LREM', KEYS[1], 0, base)
      redis.call('SREM', KEYS[2], base)
    end
  end
end
return out
"""
