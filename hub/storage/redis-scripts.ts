/**
 * The Lua scripts of the Redis storage. Each runs on one shard: every key it touches carries the
 * shard's hash tag (redis-keys.ts), so on a Redis Cluster a script is one slot, atomic, and its
 * keys are declared (KEYS) where they are known before it runs. Keys a script finds by reading
 * (the parcel of a pickup being acknowledged, the stores of a shard being pruned) are built from
 * the same shard prefix, hence in the same slot.
 *
 * A store's counters hash `c:<store>` holds: a count per state (pickup, in-transit, delivered,
 * failed, returned, cancelled: parcels in it), wait (its pickups waiting for or held by drivers:
 * its quota), act (those of them in the shard's pickups stream; past ACTIVE_PER_STORE the rest
 * wait in the store's list `pw:<store>` and enter the stream one by one as its pickups leave it),
 * seqp and seql (the last seq of its pickups and of its vendors' messages), lastl (the stream id
 * of its last vendor message). The shard's `meta` hash counts its pickups waiting for or held by
 * drivers (`waiting`, in the stream or in the stores' lists).
 *
 * A parcel's hash `p:<store>\0<order>` holds customer, address, state, created, driver, `pid`
 * (while its pickup is queued: the pickup's stream id, or `w` and its entry in the store's list
 * while it waits its turn there), `to:<driver>` (each driver with a token it was handed to, by any
 * hub) and its history: a parcel that took only the course's steps, once each, with nothing beside
 * them (storage.ts isPlainHistory) keeps each step in `h:<event>` (JSON), as it always did; any
 * other keeps its whole history in `hist` (a JSON array of ParcelStep) and no `h:` field.
 *
 * Entries of the pickups streams and of the stores' logs carry `n` (the attempt, from the second),
 * a log entry `x` (the step's details, JSON) and, for a failed step, `r` ('1': re-attempted).
 */
import { COURSE_EVENTS, DEFAULT_MAX_ATTEMPTS, FINAL_REASONS, FINAL_STATES, PARCEL_EVENTS, TRANSITIONS, stateInWords } from '../../protocol/lifecycle.js';

/** A Lua string literal of a plain word or phrase (the lifecycle's names, never input). */
function luaString(text: string): string {
  if (!/^[\w ,.:-]*$/.test(text)) throw new Error(`not a plain Lua string: ${text}`);
  return `'${text}'`;
}

function luaSet(names: Iterable<string>): string {
  return `{${[...names].map((name) => `[${luaString(name)}] = true`).join(', ')}}`;
}

/**
 * The lifecycle (protocol/lifecycle.ts) for the scripts: its tables are generated here from the
 * protocol's own, so the state machine stays in one place; `judge` is checkStep (storage-core.ts)
 * step by step, isDuplicate and move included, and a property test holds the two to the same
 * verdicts (tests/lifecycle-storage.test.ts).
 *
 * judge(state, event, current, recorded, named, maxAttempts, reason, oid, store): `state` nil for
 * a parcel not recorded, `current` its attempt (attemptOf), `recorded(e, n)` whether step `e` of
 * attempt `n` is in its history, `named` the attempt the step names (nil: none). Replies
 * {'ok', state after, reattempt} | {'duplicate'} | {'refused', code, reason}. For a history held
 * as a list of steps, attemptOf(steps) and recordedIn(steps) give `current` and `recorded`: RECORD_STEP
 * and the test's JUDGE share them, so the property test holds the code that runs.
 */
export const LIFECYCLE = `
local FOLLOWS = {${PARCEL_EVENTS.map((state) => `[${luaString(state)}] = ${luaSet(TRANSITIONS[state])}`).join(', ')}}
local FINAL_STATE = ${luaSet(FINAL_STATES)}
local FINAL_REASON = ${luaSet(FINAL_REASONS)}
local COURSE = ${luaSet(COURSE_EVENTS)}
local IN_WORDS = {${PARCEL_EVENTS.map((state) => `[${luaString(state)}] = ${luaString(stateInWords(state))}`).join(', ')}}
local DEFAULT_MAX_ATTEMPTS = ${DEFAULT_MAX_ATTEMPTS}
local function judge(state, event, current, recorded, named, maxAttempts, reason, oid, store)
  if not state then
    if event ~= 'pickup' then return {'refused', 'CAPS_ERR_UNKNOWN_PARCEL', 'no pickup was recorded for order ' .. oid .. ' of ' .. store} end
    return {'ok', 'pickup', false}
  end
  local follows = FOLLOWS[state][event] == true
  -- isDuplicate
  if event == 'pickup' then return {'duplicate'} end
  if named then
    if named <= current and recorded(event, named) then return {'duplicate'} end
  elseif recorded(event, current) or (not follows and current > 1 and recorded(event, current - 1)) then
    return {'duplicate'}
  end
  if named and named ~= current then return {'refused', 'CAPS_ERR_OUT_OF_ORDER', 'order ' .. oid .. ' is on attempt ' .. current .. ', not ' .. named} end
  -- move
  if not follows then return {'refused', 'CAPS_ERR_OUT_OF_ORDER', 'order ' .. oid .. ' of ' .. store .. ': it is ' .. IN_WORDS[state] .. ': ' .. event .. ' cannot follow'} end
  if event == 'failed' then
    local again = current < (maxAttempts or DEFAULT_MAX_ATTEMPTS) and not (reason and FINAL_REASON[reason])
    return {'ok', again and 'pickup' or 'failed', again}
  end
  return {'ok', event, false}
end
-- the attempt a history (a list of ParcelStep) is on: attemptOf
local function attemptOf(steps)
  local pickups = 0
  for _, s in ipairs(steps) do if s.event == 'pickup' then pickups = pickups + 1 end end
  return math.max(1, pickups)
end
-- judge's recorded(e, n) over a history: whether step e of attempt n is in it
local function recordedIn(steps)
  return function(e, n)
    for _, s in ipairs(steps) do if s.event == e and (s.attempt or 1) == n then return true end end
    return false
  end
end
-- a history step as JSON (ParcelStep); details is JSON already ('' for none)
local function stepJson(event, time, driver, attempt, details)
  local s = '{"event":' .. cjson.encode(event) .. ',"time":' .. cjson.encode(time)
  if driver ~= '' then s = s .. ',"driver":' .. cjson.encode(driver) end
  if attempt > 1 then s = s .. ',"attempt":' .. attempt end
  if details ~= '' then s = s .. ',"details":' .. details end
  return s .. '}'
end
-- a pickup's entry in its store's waiting list, always written the same way (it is taken off by value)
local function waitingEntry(oid, seq, time, customer, address, attempt)
  local s = '{"o":' .. cjson.encode(oid) .. ',"q":' .. seq .. ',"t":' .. cjson.encode(time) .. ',"c":' .. cjson.encode(customer) .. ',"a":' .. cjson.encode(address)
  if attempt > 1 then s = s .. ',"n":' .. attempt end
  return s .. '}'
end
`;

/**
 * For tests: the judge alone, on a history given whole. ARGV: history (JSON array of steps, '' for
 * a parcel not recorded), state, event, named attempt (''), maxAttempts (''), reason ('').
 * Replies what `judge` does, the reattempt as 1 or 0.
 */
export const JUDGE = `${LIFECYCLE}
local history, state, event, named, maxAttempts, reason = unpack(ARGV)
local steps = history ~= '' and cjson.decode(history) or {}
local v = judge(history ~= '' and state or nil, event, attemptOf(steps), recordedIn(steps), tonumber(named), tonumber(maxAttempts), reason ~= '' and reason or nil, 'o', 's')
if v[1] == 'ok' then v[3] = v[3] and 1 or 0 end
return v
`;

/**
 * One of a store's pickups left the shard's stream: the next of its waiting list takes the place
 * (a pickup whose parcel moved on meanwhile no longer waits), or the store has one fewer there.
 */
const PROMOTE = `
local function promote(shard, store, pickups, meta, ck)
  local waiting = shard .. 'pw:' .. store
  while true do
    local raw = redis.call('LPOP', waiting)
    if not raw then
      if tonumber(redis.call('HINCRBY', ck, 'act', -1)) < 0 then redis.call('HSET', ck, 'act', 0) end
      return
    end
    local e = cjson.decode(raw)
    local pk = shard .. 'p:' .. store .. '\\0' .. e.o
    if redis.call('HGET', pk, 'state') == 'pickup' then
      local id
      if e.n then
        id = redis.call('XADD', pickups, '*', 's', store, 'o', e.o, 'q', e.q, 't', e.t, 'c', e.c, 'a', e.a, 'n', e.n)
      else
        id = redis.call('XADD', pickups, '*', 's', store, 'o', e.o, 'q', e.q, 't', e.t, 'c', e.c, 'a', e.a)
      end
      redis.call('HSET', pk, 'pid', id)
      redis.call('SPUBLISH', shard .. 'bell', '')
      return
    end
    if tonumber(redis.call('HINCRBY', ck, 'wait', -1)) < 0 then redis.call('HSET', ck, 'wait', 0) end
    redis.call('HINCRBY', meta, 'waiting', -1)
  end
end
`;

/** The KEYS of RECORD_STEP, in order: the lists by state follow, one per PARCEL_EVENTS. */
export const RECORD_STEP_KEYS = 9 + PARCEL_EVENTS.length;

/**
 * KEYS: parcel, counts, shard stores, shard order index (o:<order>), shard pickups stream, store
 * log stream, shard meta, shard done index (ended parcels by end time, for retention), list all,
 * then the store's list of each state, in PARCEL_EVENTS order.
 * ARGV: event, store, orderId, customer, address, driver, time, maxDepth, dispatched ('', '0', '1'),
 * maxPickups (this shard's share), pickup bell channel, store bell channel, ACTIVE_PER_STORE, time
 * (ms), the attempt the step names (''), the store's maximum of attempts (''), a failed step's
 * reason (''), details (JSON, ''; a pickup has none).
 * Replies {'accepted', streamId ('' when the pickup waits in the store's list), seq, created,
 * customer, address, attempt, reattempt ('1' | ''), requeued pickup's stream id ('' when it waits
 * in the store's list), its seq, withdrawn pickup's stream id ('')} | {'duplicate'} |
 * {'refused', code, reason}.
 */
export const RECORD_STEP = `${PROMOTE}${LIFECYCLE}
local pk, ck, stores, oidx, pickups, log, meta, done, all = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local lists = {${PARCEL_EVENTS.map((state, i) => `[${luaString(state)}] = KEYS[${10 + i}]`).join(', ')}}
local event, store, oid, customer, address, driver, time, maxDepth, dispatched, maxPickups, pbell, sbell, activeMax, timeMs, named, maxAttempts, reason, details = unpack(ARGV)
local shard = string.sub(meta, 1, -5)
local p = redis.call('HMGET', pk, 'state', 'driver', 'h:' .. event, 'created', 'customer', 'address', 'pid', 'to:' .. driver, 'hist')
local state = p[1] or nil
-- a driver the pickup was handed to, by any hub (to:<name>), or the one carrying it
local notMine = dispatched == '0' and (not state or (p[2] ~= driver and not p[8]))
local function notDispatched()
  return {'refused', 'CAPS_ERR_NOT_DISPATCHED', 'order ' .. oid .. ' of ' .. store .. ' was not dispatched to ' .. driver}
end
if notMine and not state then return notDispatched() end
-- the history as far as the lifecycle looks: a plain parcel's is attempt 1, its steps its h: fields
local hist = p[9] or nil
local steps = hist and cjson.decode(hist)
local current, recorded
if steps then
  current, recorded = attemptOf(steps), recordedIn(steps)
else
  current = 1
  recorded = function(e, n)
    if n ~= 1 then return false end
    if e == 'pickup' then return state ~= nil end
    return e == event and p[3] ~= false
  end
end
local verdict = judge(state, event, current, recorded, tonumber(named), tonumber(maxAttempts), reason ~= '' and reason or nil, oid, store)
if notMine then
  -- a driver's own step sent again is a duplicate, whatever became of the parcel since (a failure
  -- sent it back to the pool and another driver has it): its retry is what re-queues its webhooks
  local own = false
  if verdict[1] == 'duplicate' then
    if steps then
      for _, s in ipairs(steps) do if s.event == event and s.driver == driver then own = true end end
    elseif p[3] then
      own = cjson.decode(p[3]).driver == driver
    end
  end
  if not own then return notDispatched() end
end
if verdict[1] ~= 'ok' then return verdict end
local after, again = verdict[2], verdict[3]
local c = redis.call('HMGET', ck, 'wait', 'seqp', 'seql', state or 'pickup', after, 'act')
-- a pickup's room among those waiting for drivers: the store's quota, then the shard's share of
-- the hub's limit; own (0 or 1) is the parcel's own pickup still counted there, which leaves first.
-- Replies the refusal, or nil
local function pickupRoom(own)
  local waiting = tonumber(c[1] or '0') - own
  if waiting >= tonumber(maxDepth) then return {'refused', 'CAPS_ERR_QUEUE_FULL', 'store ' .. store .. ' has ' .. waiting .. ' pickups waiting for drivers, its quota'} end
  local inShard = tonumber(redis.call('HGET', meta, 'waiting') or '0') - own
  if inShard >= tonumber(maxPickups) then return {'refused', 'CAPS_ERR_QUEUE_FULL', inShard .. " pickups wait for drivers in this store's shard, the hub's limit"} end
  return nil
end
if event == 'pickup' then
  if customer == '' or address == '' then return {'refused', 'CAPS_ERR_INVALID_PAYLOAD', 'a pickup needs customer and address'} end
  local refused = pickupRoom(0)
  if refused then return refused end
else
  local depth = redis.call('XLEN', log)
  if depth >= tonumber(maxDepth) then return {'refused', 'CAPS_ERR_QUEUE_FULL', 'queue ' .. store .. ' holds ' .. depth .. ' messages, its limit'} end
  if again then
    -- the next attempt's pickup takes a place in the store's quota as a new pickup does (the
    -- parcel's own pickup, if still queued, leaves first)
    local refused = pickupRoom(p[7] and 1 or 0)
    if refused then return refused end
  end
end
local step = {time = time}
if driver ~= '' then step.driver = driver end
local created, seq, id
local requeued, requeuedSeq, withdrawn = '', '', ''
if event == 'pickup' then
  created, customer, address = time, customer, address
  seq = tonumber(c[2] or '0') + 1
  local active = tonumber(c[6] or '0')
  local fields = {'customer', customer, 'address', address, 'state', 'pickup', 'created', time, 'h:pickup', cjson.encode(step)}
  if active < tonumber(activeMax) then
    -- drivers of any hub may take it now
    id = redis.call('XADD', pickups, '*', 's', store, 'o', oid, 'q', seq, 't', time, 'c', customer, 'a', address)
    table.insert(fields, 'pid'); table.insert(fields, id)
    redis.call('SPUBLISH', pbell, '')
    active = active + 1
  else
    -- the store has its share of the stream already: this one waits its turn, so that the
    -- pickups of the other stores of the shard are not behind all of it
    id = ''
    local entry = waitingEntry(oid, seq, time, customer, address, 1)
    redis.call('RPUSH', shard .. 'pw:' .. store, entry)
    table.insert(fields, 'pid'); table.insert(fields, 'w' .. entry)
  end
  redis.call('HSET', pk, unpack(fields))
  redis.call('HSET', ck, 'wait', tonumber(c[1] or '0') + 1, 'seqp', seq, 'pickup', tonumber(c[5] or '0') + 1, 'act', active)
  redis.call('HINCRBY', meta, 'waiting', 1)
  redis.call('ZADD', all, 0, time .. '\\0' .. oid)
  redis.call('ZADD', lists.pickup, 0, time .. '\\0' .. oid)
  redis.call('SADD', stores, store)
  redis.call('SADD', oidx, store)
else
  created, customer, address = p[4], p[5], p[6]
  seq = tonumber(c[3] or '0') + 1
  local entry = {'o', oid, 'e', event, 'q', seq, 't', time, 'd', driver, 'c', customer, 'a', address}
  if current > 1 then table.insert(entry, 'n'); table.insert(entry, current) end
  if details ~= '' then table.insert(entry, 'x'); table.insert(entry, details) end
  if event == 'failed' then table.insert(entry, 'r'); table.insert(entry, again and '1' or '0') end
  id = redis.call('XADD', log, '*', unpack(entry))
  local fields = {'state', after}
  if not steps and current == 1 and details == '' and COURSE[event] then
    table.insert(fields, 'h:' .. event); table.insert(fields, cjson.encode(step))
  else
    -- past the course's plain story: the whole history from now on, a plain one's steps first
    if not hist then
      local h = redis.call('HMGET', pk, ${COURSE_EVENTS.map((e) => luaString(`h:${e}`)).join(', ')})
      local parts = {}
      for i, e in ipairs({${COURSE_EVENTS.map(luaString).join(', ')}}) do
        if h[i] then table.insert(parts, '{"event":"' .. e .. '",' .. string.sub(h[i], 2)) end
      end
      hist = '[' .. table.concat(parts, ',') .. ']'
      redis.call('HDEL', pk, ${COURSE_EVENTS.map((e) => luaString(`h:${e}`)).join(', ')})
    end
    local added = stepJson(event, time, driver, current, details)
    if again then added = added .. ',' .. stepJson('pickup', time, '', current + 1, '') end
    hist = (hist == '[]' and '[' or string.sub(hist, 1, -2) .. ',') .. added .. ']'
    table.insert(fields, 'hist'); table.insert(fields, hist)
  end
  if driver ~= '' and not again then table.insert(fields, 'driver'); table.insert(fields, driver) end
  redis.call('HSET', pk, unpack(fields))
  local counts = {'seql', seq, 'lastl', id}
  if state ~= after then
    table.insert(counts, after); table.insert(counts, tonumber(c[5] or '0') + 1)
    table.insert(counts, state); table.insert(counts, math.max(0, tonumber(c[4] or '0') - 1))
  end
  -- a step of a parcel whose pickup is still queued (its driver never acknowledged it) settles it
  local settled, inStream = false, false
  if p[7] then
    if string.sub(p[7], 1, 1) == 'w' then
      settled = redis.call('LREM', shard .. 'pw:' .. store, 1, string.sub(p[7], 2)) == 1
    else
      redis.call('XACK', pickups, 'drivers', p[7])
      settled = redis.call('XDEL', pickups, p[7]) == 1
      inStream = settled
      -- a cancel withdraws it: no driver is to carry it
      if settled and event == 'cancelled' then withdrawn = p[7] end
    end
    if settled then
      table.insert(counts, 'wait'); table.insert(counts, math.max(0, tonumber(c[1] or '0') - 1))
      redis.call('HINCRBY', meta, 'waiting', -1)
    end
    redis.call('HDEL', pk, 'pid')
  end
  redis.call('HSET', ck, unpack(counts))
  if inStream then promote(shard, store, pickups, meta, ck) end
  redis.call('ZREM', lists[state], created .. '\\0' .. oid)
  redis.call('ZADD', lists[after], 0, created .. '\\0' .. oid)
  -- retention goes by the time the parcel's story ended, shard-wide
  if FINAL_STATE[after] then redis.call('ZADD', done, timeMs, store .. '\\0' .. oid) end
  if again then
    -- the failed attempt goes back to the driver pool as the next attempt's pickup, like a new
    -- pickup: no driver holds the parcel any more, nor may report its steps unless handed it again
    local gone = {'driver'}
    for _, f in ipairs(redis.call('HKEYS', pk)) do
      if string.sub(f, 1, 3) == 'to:' then table.insert(gone, f) end
    end
    redis.call('HDEL', pk, unpack(gone))
    local n = current + 1
    local pseq = tonumber(c[2] or '0') + 1
    local pid
    if tonumber(redis.call('HGET', ck, 'act') or '0') < tonumber(activeMax) then
      requeued = redis.call('XADD', pickups, '*', 's', store, 'o', oid, 'q', pseq, 't', time, 'c', customer, 'a', address, 'n', n)
      pid = requeued
      redis.call('HINCRBY', ck, 'act', 1)
      redis.call('SPUBLISH', pbell, '')
    else
      local waiting = waitingEntry(oid, pseq, time, customer, address, n)
      redis.call('RPUSH', shard .. 'pw:' .. store, waiting)
      pid = 'w' .. waiting
    end
    redis.call('HSET', pk, 'pid', pid)
    redis.call('HSET', ck, 'seqp', pseq)
    redis.call('HINCRBY', ck, 'wait', 1)
    redis.call('HINCRBY', meta, 'waiting', 1)
    requeuedSeq = tostring(pseq)
  end
  -- hubs following the store hear the message itself: their vendors get it without a read
  local bell = {id = id, o = oid, e = event, q = seq, t = time, d = driver, c = customer, a = address}
  if current > 1 then bell.n = current end
  if details ~= '' then bell.x = details end
  if event == 'failed' then bell.r = again and 1 or 0 end
  redis.call('SPUBLISH', sbell, 'm ' .. cjson.encode(bell))
end
return {'accepted', id, tostring(seq), created, customer, address, tostring(current), again and '1' or '', requeued, requeuedSeq, withdrawn}
`;

/** Whether stream id a came after b ("ms-seq" ids). */
const ID_AFTER = `
local function after(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if not am or not bm then return true end
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end
`;

/**
 * A pickup taken off the drivers' queue. KEYS: shard pickups stream, shard meta. ARGV: shard
 * prefix, stream id. Its store's quota and its parcel's `pid` are found from the entry itself.
 */
export const ACK_PICKUP = `${ID_AFTER}${PROMOTE}
local pickups, meta = KEYS[1], KEYS[2]
local prefix, id = ARGV[1], ARGV[2]
local entry = redis.call('XRANGE', pickups, id, id)[1]
if not entry then
  local info = redis.call('XINFO', 'STREAM', pickups)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' and not after(id, info[i + 1]) then return 'already-acknowledged' end
  end
  return 'unknown-message'
end
redis.call('XACK', pickups, 'drivers', id)
redis.call('XDEL', pickups, id)
local f = entry[2]
local store, oid
for i = 1, #f, 2 do
  if f[i] == 's' then store = f[i + 1] elseif f[i] == 'o' then oid = f[i + 1] end
end
local ck = prefix .. 'c:' .. store
if tonumber(redis.call('HINCRBY', ck, 'wait', -1)) < 0 then redis.call('HSET', ck, 'wait', 0) end
redis.call('HINCRBY', meta, 'waiting', -1)
redis.call('HDEL', prefix .. 'p:' .. store .. '\\0' .. oid, 'pid')
promote(prefix, store, pickups, meta, ck)
return 'removed'
`;

/**
 * A vendor message taken off its store's queue (the first of its vendors to acknowledge it). KEYS:
 * store log stream, store counts. ARGV: stream id, store bell channel (told, so that other hubs
 * following the store forget it too).
 */
export const ACK_STORE = `${ID_AFTER}
local log, ck = KEYS[1], KEYS[2]
local id, bell = ARGV[1], ARGV[2]
if redis.call('XDEL', log, id) == 1 then
  redis.call('SPUBLISH', bell, 'a ' .. id)
  return 'removed'
end
local last = redis.call('HGET', ck, 'lastl')
if not last then return 'unknown-queue' end
if not after(id, last) then return 'already-acknowledged' end
return 'unknown-message'
`;

/**
 * Keeps (or lets go of) pickups this hub's consumer has read: of the ids given, those still
 * pending to `consumer` are claimed again by it (their idle time starts over) or, with `release`,
 * handed to the consumer 'released' already idle, so that any hub's next XAUTOCLAIM takes them.
 * KEYS: shard pickups stream. ARGV: consumer, mode ('keep' | 'release'), ids...
 * Replies the ids still this consumer's (keep) or released (release).
 */
export const HOLD = `
local pickups, consumer, mode = KEYS[1], ARGV[1], ARGV[2]
local wanted = {}
for i = 3, #ARGV do wanted[ARGV[i]] = true end
-- the ids must come last to unpack whole: XCLAIM key group consumer min-idle id... [IDLE ms] JUSTID
local args = {pickups, 'drivers', mode == 'release' and 'released' or consumer, 0}
for _, e in ipairs(redis.call('XPENDING', pickups, 'drivers', '-', '+', #ARGV + 10000, consumer)) do
  if wanted[e[1]] then table.insert(args, e[1]) end
end
if #args == 4 then return {} end
if mode == 'release' then table.insert(args, 'IDLE'); table.insert(args, 86400000) end
table.insert(args, 'JUSTID')
return redis.call('XCLAIM', unpack(args))
`;

/**
 * The next messages of a store's log for a hub following it, with where the log stands (its last
 * seq and stream id), read together: a hub that has read everything there is moves its cursor to
 * the end, past messages other hubs' vendors already took off. KEYS: store log, store counts.
 * ARGV: start ('-' or an exclusive '(id'), count. Replies {entries, seql, lastl}.
 */
export const READ_LOG = `
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))
local c = redis.call('HMGET', KEYS[2], 'seql', 'lastl')
return {entries, c[1] or '0', c[2] or ''}
`;

/**
 * The consumer group of a pickups stream, made with the stream if need be; 0 when it was there.
 * A script so that a Redis Cluster routes it by its key (XGROUP's key follows a subcommand).
 * KEYS: shard pickups stream. ARGV: group.
 */
export const CREATE_GROUP = `
local ok = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
if type(ok) == 'table' and ok.err then
  if string.find(ok.err, 'BUSYGROUP', 1, true) then return 0 end
  return redis.error_reply(ok.err)
end
return 1
`;

/**
 * Consumers of a pickups stream's group that hold nothing and were idle this long (hubs gone,
 * each process having a consumer of its own) leave the group. KEYS: shard pickups stream. ARGV:
 * group, this hub's consumer (kept), idle (ms). Replies how many left.
 */
export const DROP_CONSUMERS = `
local dropped = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info.name ~= ARGV[2] and tonumber(info.pending) == 0 and tonumber(info.idle) >= tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info.name)
    dropped = dropped + 1
  end
end
return dropped
`;

/**
 * Retention on one shard: its parcels whose story ended (delivered, returned, cancelled) before
 * the cutoff, oldest end first (the shard's `done` index), go with their place in their state's
 * list and their count; so do their stores' notifications older than the cutoff, and a store
 * left with no parcel and nothing queued. The work is that of the parcels removed, whatever the
 * number of stores. KEYS: shard done index,
 * shard stores. ARGV: shard prefix, cutoff (ms), limit.
 */
export const PRUNE = `
local done, stores = KEYS[1], KEYS[2]
local p, beforeMs, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local removed = 0
local touched = {}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', done, '-inf', '(' .. beforeMs, 'LIMIT', 0, limit)) do
  local cut = string.find(member, '\\0', 1, true)
  local store, oid = string.sub(member, 1, cut - 1), string.sub(member, cut + 1)
  local pk = p .. 'p:' .. store .. '\\0' .. oid
  local parcel = redis.call('HMGET', pk, 'created', 'state')
  local created, state = parcel[1], parcel[2]
  if created and state then
    local listed = created .. '\\0' .. oid
    redis.call('DEL', pk)
    redis.call('SREM', p .. 'o:' .. oid, store)
    redis.call('ZREM', p .. 'sp:' .. store .. ':' .. state, listed)
    redis.call('ZREM', p .. 'sp:' .. store .. ':all', listed)
    if tonumber(redis.call('HINCRBY', p .. 'c:' .. store, state, -1)) < 0 then redis.call('HSET', p .. 'c:' .. store, state, 0) end
    removed = removed + 1
  end
  redis.call('ZREM', done, member)
  touched[store] = true
end
for store in pairs(touched) do
  redis.call('XTRIM', p .. 'log:' .. store, 'MINID', beforeMs)
  -- a store with no parcels and nothing queued is no longer listed
  if redis.call('ZCARD', p .. 'sp:' .. store .. ':all') == 0 and redis.call('XLEN', p .. 'log:' .. store) == 0 then
    redis.call('SREM', stores, store)
    redis.call('DEL', p .. 'c:' .. store, p .. 'log:' .. store, p .. 'pw:' .. store)
  end
end
return removed
`;
