/**
 * The Lua scripts of the Redis storage. Each runs on one shard: every key it touches carries the
 * shard's hash tag (redis-keys.ts), so on a Redis Cluster a script is one slot, atomic, and its
 * keys are declared (KEYS) where they are known before it runs. Keys a script finds by reading
 * (the parcel of a pickup being acknowledged, the stores of a shard being pruned) are built from
 * the same shard prefix, hence in the same slot.
 *
 * A store's counters hash `c:<store>` holds: pickup, in-transit, delivered (parcels in each
 * state), wait (its pickups waiting for or held by drivers: its quota), act (those of them in
 * the shard's pickups stream; past ACTIVE_PER_STORE the rest wait in the store's list `pw:<store>`
 * and enter the stream one by one as its pickups leave it), seqp and seql (the last
 * seq of its pickups and of its vendors' messages), lastl (the stream id of its last vendor
 * message). The shard's `meta` hash counts its pickups waiting for or held by drivers (`waiting`,
 * in the stream or in the stores' lists).
 *
 * A parcel's hash `p:<store>\0<order>` holds customer, address, state, created, driver, `pid`
 * (its pickup's stream id while the pickup is queued), `to:<driver>` (each driver with a token it
 * was handed to, by any hub) and `h:<event>` (each step, JSON).
 */

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
      local id = redis.call('XADD', pickups, '*', 's', store, 'o', e.o, 'q', e.q, 't', e.t, 'c', e.c, 'a', e.a)
      redis.call('HSET', pk, 'pid', id)
      redis.call('SPUBLISH', shard .. 'bell', '')
      return
    end
    if tonumber(redis.call('HINCRBY', ck, 'wait', -1)) < 0 then redis.call('HSET', ck, 'wait', 0) end
    redis.call('HINCRBY', meta, 'waiting', -1)
  end
end
`;

/**
 * KEYS: parcel, counts, list all, list pickup, list in-transit, list delivered, shard stores,
 * shard order index (o:<order>), shard pickups stream, store log stream, shard meta, shard done
 * index (delivered parcels by delivery time, for retention).
 * ARGV: event, store, orderId, customer, address, driver, time, maxDepth, dispatched ('', '0', '1'),
 * maxPickups (this shard's share), pickup bell channel, store bell channel, ACTIVE_PER_STORE, time (ms).
 * Replies {'accepted', streamId ('' when the pickup waits in the store's list), seq, created,
 * customer, address} | {'duplicate'} | {'refused', code, reason}.
 */
export const RECORD_STEP = `${PROMOTE}
local pk, ck, all, lp, lt, ld, stores, oidx, pickups, log, meta, done = unpack(KEYS)
local event, store, oid, customer, address, driver, time, maxDepth, dispatched, maxPickups, pbell, sbell, activeMax, timeMs = unpack(ARGV)
local shard = string.sub(meta, 1, -5)
local lists = {pickup = lp, ['in-transit'] = lt, delivered = ld}
local p = redis.call('HMGET', pk, 'state', 'driver', 'h:' .. event, 'created', 'customer', 'address', 'pid', 'to:' .. driver)
local state = p[1]
-- a driver the pickup was handed to, by any hub (to:<name>), or the one carrying it
if dispatched == '0' and (not state or (p[2] ~= driver and not p[8])) then
  return {'refused', 'CAPS_ERR_NOT_DISPATCHED', 'order ' .. oid .. ' of ' .. store .. ' was not dispatched to ' .. driver}
end
if p[3] then return {'duplicate'} end
local c = redis.call('HMGET', ck, 'wait', 'seqp', 'seql', state or 'pickup', event, 'act')
if event == 'pickup' then
  if customer == '' or address == '' then return {'refused', 'CAPS_ERR_INVALID_PAYLOAD', 'a pickup needs customer and address'} end
  local waiting = tonumber(c[1] or '0')
  if waiting >= tonumber(maxDepth) then return {'refused', 'CAPS_ERR_QUEUE_FULL', 'store ' .. store .. ' has ' .. waiting .. ' pickups waiting for drivers, its quota'} end
  local inShard = tonumber(redis.call('HGET', meta, 'waiting') or '0')
  if inShard >= tonumber(maxPickups) then return {'refused', 'CAPS_ERR_QUEUE_FULL', inShard .. " pickups wait for drivers in this store's shard, the hub's limit"} end
else
  if not state then return {'refused', 'CAPS_ERR_UNKNOWN_PARCEL', 'no pickup was recorded for order ' .. oid .. ' of ' .. store} end
  if event == 'in-transit' and state == 'delivered' then return {'refused', 'CAPS_ERR_OUT_OF_ORDER', 'order ' .. oid .. ' is already delivered'} end
  local depth = redis.call('XLEN', log)
  if depth >= tonumber(maxDepth) then return {'refused', 'CAPS_ERR_QUEUE_FULL', 'queue ' .. store .. ' holds ' .. depth .. ' messages, its limit'} end
end
local step = {time = time}
if driver ~= '' then step.driver = driver end
local created, seq, id
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
    redis.call('RPUSH', shard .. 'pw:' .. store, cjson.encode({o = oid, q = seq, t = time, c = customer, a = address}))
  end
  redis.call('HSET', pk, unpack(fields))
  redis.call('HSET', ck, 'wait', tonumber(c[1] or '0') + 1, 'seqp', seq, 'pickup', tonumber(c[5] or '0') + 1, 'act', active)
  redis.call('HINCRBY', meta, 'waiting', 1)
  redis.call('ZADD', all, 0, time .. '\\0' .. oid)
  redis.call('ZADD', lp, 0, time .. '\\0' .. oid)
  redis.call('SADD', stores, store)
  redis.call('SADD', oidx, store)
else
  created, customer, address = p[4], p[5], p[6]
  seq = tonumber(c[3] or '0') + 1
  id = redis.call('XADD', log, '*', 'o', oid, 'e', event, 'q', seq, 't', time, 'd', driver, 'c', customer, 'a', address)
  local fields = {'state', event, 'h:' .. event, cjson.encode(step)}
  if driver ~= '' then table.insert(fields, 'driver'); table.insert(fields, driver) end
  redis.call('HSET', pk, unpack(fields))
  local counts = {'seql', seq, 'lastl', id, event, tonumber(c[5] or '0') + 1}
  if state ~= event then table.insert(counts, state); table.insert(counts, math.max(0, tonumber(c[4] or '0') - 1)) end
  -- a step of a parcel whose pickup is still queued (its driver never acknowledged it) settles it
  local settled = false
  if p[7] then
    redis.call('XACK', pickups, 'drivers', p[7])
    settled = redis.call('XDEL', pickups, p[7]) == 1
    if settled then
      table.insert(counts, 'wait'); table.insert(counts, math.max(0, tonumber(c[1] or '0') - 1))
      redis.call('HINCRBY', meta, 'waiting', -1)
    end
    redis.call('HDEL', pk, 'pid')
  end
  redis.call('HSET', ck, unpack(counts))
  if settled then promote(shard, store, pickups, meta, ck) end
  redis.call('ZREM', lists[state], created .. '\\0' .. oid)
  redis.call('ZADD', lists[event], 0, created .. '\\0' .. oid)
  -- retention goes by delivery time, shard-wide
  if event == 'delivered' then redis.call('ZADD', done, timeMs, store .. '\\0' .. oid) end
  -- hubs following the store hear the message itself: their vendors get it without a read
  redis.call('SPUBLISH', sbell, 'm ' .. cjson.encode({id = id, o = oid, e = event, q = seq, t = time, d = driver, c = customer, a = address}))
end
return {'accepted', id, tostring(seq), created, customer, address}
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
 * Retention on one shard: its parcels delivered before the cutoff, oldest delivery first (the
 * shard's `done` index), go with their place in the lists and their count; so do their stores'
 * notifications older than the cutoff, and a store left with no parcel and nothing queued. The
 * work is that of the parcels removed, whatever the number of stores. KEYS: shard done index,
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
  local created = redis.call('HGET', pk, 'created')
  if created then
    local listed = created .. '\\0' .. oid
    redis.call('DEL', pk)
    redis.call('SREM', p .. 'o:' .. oid, store)
    redis.call('ZREM', p .. 'sp:' .. store .. ':delivered', listed)
    redis.call('ZREM', p .. 'sp:' .. store .. ':all', listed)
    if tonumber(redis.call('HINCRBY', p .. 'c:' .. store, 'delivered', -1)) < 0 then redis.call('HSET', p .. 'c:' .. store, 'delivered', 0) end
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
