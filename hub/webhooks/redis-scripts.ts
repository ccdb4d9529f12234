/**
 * The shared outbox's Lua scripts (layout: redis-keys.ts). Each declares one key and builds the
 * others from the shard prefix it is given (ARGV[1]), which is that key's own, so each runs on
 * one Cluster slot, atomically across hubs. Their names end with their key count.
 */

/** A parcel's line of an endpoint, from a row. */
const LINE = `
local function lineOf(shard, eid, store, oid) return shard .. 'whl:' .. eid .. ':' .. store .. '\\0' .. oid end
`;

/**
 * enqueue-1. KEYS: the shard's endpoints. ARGV: shard, now, then per delivery endpoint id, event
 * id, store, order id, position, body. A delivery is left alone when its endpoint is gone or not
 * active, or the event is pending or was delivered within the retention (idempotent). A new row
 * heads its parcel's line (due now) when nothing earlier waits; one enqueued after a later step of
 * its parcel (two answers racing) goes first and the later one waits again. Replies rows added.
 */
export const ENQUEUE = `${LINE}
local shard, now = ARGV[1], tonumber(ARGV[2])
local added = 0
local i = 3
while i + 5 <= #ARGV do
  local eid, id, store, oid, pos, body = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4]), ARGV[i + 5]
  i = i + 6
  local ej = redis.call('HGET', KEYS[1], eid)
  local rows = shard .. 'whr:' .. eid
  if ej and cjson.decode(ej).state == 'active' and redis.call('HEXISTS', rows, id) == 0 and not redis.call('ZSCORE', shard .. 'whx:' .. eid, id) then
    local seq = redis.call('INCR', shard .. 'whq')
    redis.call('HSET', rows, id, cjson.encode({s = store, o = oid, p = pos, b = body, a = 0, q = seq}))
    local line = lineOf(shard, eid, store, oid)
    local due = shard .. 'whd:' .. eid
    local first = redis.call('ZRANGE', line, 0, 0, 'WITHSCORES')
    redis.call('ZADD', line, pos, id)
    if first[1] == nil then
      redis.call('ZADD', due, now, id)
    elseif pos < tonumber(first[2]) then
      redis.call('ZREM', due, first[1])
      redis.call('ZADD', due, now, id)
    end
    added = added + 1
  end
end
return added
`;

/**
 * claim-1. KEYS: the endpoint's due set. ARGV: shard, endpoint id, now, limit, lease (ms), holder.
 * Takes up to `limit` heads due at `now` (a lapsed claim is due again): each is now held by a new
 * claim, and due again when the lease lapses. Replies {id, store, order, body, attempts, seq, claim}...
 */
export const CLAIM = `
local shard, eid, now, limit, lease, holder = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local rows = shard .. 'whr:' .. eid
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)) do
  local rj = redis.call('HGET', rows, id)
  if not rj then
    redis.call('ZREM', KEYS[1], id)
  else
    local r = cjson.decode(rj)
    r.h = holder .. ':' .. redis.call('INCR', shard .. 'whq')
    redis.call('HSET', rows, id, cjson.encode(r))
    redis.call('ZADD', KEYS[1], now + lease, id)
    out[#out + 1] = {id, r.s, r.o, r.b, r.a, r.q, r.h}
  end
end
return out
`;

/**
 * delivered-1. KEYS: the endpoint's rows. ARGV: shard, endpoint id, event id, now. Whoever's claim
 * it was (a 2xx is the truth): the row goes, the event is remembered as delivered, and its parcel's
 * next event, if any, is due at once. Replies 1, or 0 when it was not pending.
 */
export const DELIVERED = `${LINE}
local shard, eid, id, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local rj = redis.call('HGET', KEYS[1], id)
if not rj then return 0 end
local r = cjson.decode(rj)
local due = shard .. 'whd:' .. eid
redis.call('HDEL', KEYS[1], id)
redis.call('ZREM', due, id)
redis.call('ZADD', shard .. 'whx:' .. eid, now, id)
local line = lineOf(shard, eid, r.s, r.o)
redis.call('ZREM', line, id)
local head = redis.call('ZRANGE', line, 0, 0)[1]
if head and not redis.call('ZSCORE', due, head) then redis.call('ZADD', due, now, head) end
return 1
`;

/**
 * settle-1. KEYS: the endpoint's rows. ARGV: shard, endpoint id, event id, when due again, claim,
 * counted ('1': a failed attempt; '0': released unattempted). Only the claim's holder settles it (a
 * lapsed claim taken by another hub is that hub's now). It is due at `at` if it still heads its
 * line (an earlier event may have been enqueued meanwhile). Replies 1, or 0 when not this claim's.
 */
export const SETTLE = `${LINE}
local shard, eid, id, at, claim, counted = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
local rj = redis.call('HGET', KEYS[1], id)
if not rj then return 0 end
local r = cjson.decode(rj)
if r.h ~= claim then return 0 end
r.h = nil
if counted == '1' then r.a = r.a + 1 end
redis.call('HSET', KEYS[1], id, cjson.encode(r))
local due = shard .. 'whd:' .. eid
if redis.call('ZRANGE', lineOf(shard, eid, r.s, r.o), 0, 0)[1] == id then redis.call('ZADD', due, at, id) else redis.call('ZREM', due, id) end
return 1
`;

/**
 * wake-1. KEYS: the endpoint's due set. ARGV: shard, endpoint id, now, offset, limit. Heads due
 * later than `now` and not claimed are due now; a page at a time (those skipped, being claimed,
 * are the next page's offset). Replies {woken, skipped}.
 */
export const WAKE = `
local shard, eid, now, offset, limit = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local rows = shard .. 'whr:' .. eid
local woken, skipped = 0, 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'LIMIT', offset, limit)) do
  local rj = redis.call('HGET', rows, id)
  if rj and cjson.decode(rj).h then
    skipped = skipped + 1
  else
    redis.call('ZADD', KEYS[1], now, id)
    woken = woken + 1
  end
end
return {woken, skipped}
`;

/**
 * save-endpoint-1. KEYS: the shard's endpoints. ARGV: id, the endpoint as a hub saw it (JSON),
 * enable ('1'). Hubs save what came of their attempts from their own cache, which may be behind:
 * the failure clock keeps its first start, a save never makes an endpoint active again unless it
 * is `enable`, and one removed stays removed. Replies {state changed (1/0), the endpoint (JSON)},
 * or {-1} when it is gone.
 */
export const SAVE_ENDPOINT = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return {-1} end
local c = cjson.decode(cur)
local u = cjson.decode(ARGV[2])
local changed = 0
c.lastError, c.lastErrorAt, c.lastSuccessAt = u.lastError, u.lastErrorAt, u.lastSuccessAt
if u.failingSince == nil then c.failingSince = nil elseif c.failingSince == nil then c.failingSince = u.failingSince end
if ARGV[3] == '1' then
  if c.state ~= 'active' then changed = 1 end
  c.state, c.disabledReason, c.disabledAt, c.failingSince = 'active', nil, nil, nil
elseif u.state == 'disabled' and c.state == 'active' then
  c.state, c.disabledReason, c.disabledAt = 'disabled', u.disabledReason, u.disabledAt
  changed = 1
end
local json = cjson.encode(c)
redis.call('HSET', KEYS[1], ARGV[1], json)
return {changed, json}
`;

/**
 * remove-endpoint-1. KEYS: the shard's endpoints. ARGV: shard, id, rows per call. The endpoint,
 * its due and delivered sets at once (nothing of it can be claimed or queued after the first
 * call), then its rows and their parcels' lines, `rows per call` at a time, so that an endpoint
 * with a large backlog does not hold Redis in one long script. Replies {1 or 0 (it was there), rows
 * left}: call again until none are left.
 */
export const REMOVE_ENDPOINT = `${LINE}
local shard, eid, count = ARGV[1], ARGV[2], tonumber(ARGV[3])
local removed = redis.call('HDEL', KEYS[1], eid)
redis.call('DEL', shard .. 'whd:' .. eid, shard .. 'whx:' .. eid)
local rows = shard .. 'whr:' .. eid
local page = redis.call('HSCAN', rows, 0, 'COUNT', count)[2]
for i = 1, #page, 2 do
  local r = cjson.decode(page[i + 1])
  redis.call('DEL', lineOf(shard, eid, r.s, r.o))
  redis.call('HDEL', rows, page[i])
end
return {removed, redis.call('HLEN', rows)}
`;
