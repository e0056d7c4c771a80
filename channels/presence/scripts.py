"""Lua scripts of ``RedisPresence``: every change of presence state is one atomic script.

Keys (``P`` is the Redis prefix followed by ``pr:``):

* ``P ids``            zset identity -> deadline (ms, Redis clock)
* ``P id:<identity>``  hash of the identity's entries: ``c\\n<conn>`` (a connection)
                       or ``m\\n<channel>\\n<conn>`` (a membership) -> user
* ``P c:<channel>``    hash ``<identity>/<conn>`` -> ``{"u": user, "i": info}``
* ``P n:<channel>``    hash user -> connections joined (first/last are decided here)
* ``P u``              hash user -> connections open, across instances

Times come from Redis (``TIME``), so instance clocks may disagree. Every write
under an identity checks that its deadline has not passed, so once the reaper may
have started on an identity nothing can be added under it again. The reaper
touches keys it derives from entries (not declared in KEYS): fine on one Redis
(or a replicated one), not on Redis Cluster.
"""

from __future__ import annotations

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: ids; ARGV: identity, ttl_ms, register ('1' or '0') -> 1 alive, 0 dead
HEARTBEAT = _NOW + """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if ARGV[3] ~= '1' and ((not s) or tonumber(s) < now) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
"""

# KEYS: ids; ARGV: identity. Added even if already reaped (the reaper then finds
# nothing and drops it again): APPLY refuses every write under it from now on.
RETIRE = """
redis.call('ZADD', KEYS[1], 0, ARGV[1])
return 1
"""

# KEYS: ids -> identities whose deadline has passed
EXPIRED = _NOW + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, 100)
"""

# KEYS: ids, identity hash, user counts, then the entries and counts hash of each
# channel the batch touches; ARGV: identity, ttl_ms, then six per op: kind ('c'
# connect, 'd' disconnect, 'j' join, 'l' leave), field, user, n (connect: the
# limit; join/leave: the index in KEYS of the channel's entries hash, its counts
# hash follows), entry, value.
# -> {0} if the identity is unknown or its deadline has passed (nothing changed:
#    a reaped instance's late writes are refused), else {1, result per op}:
#    connect: the user's open connections after it, -1 refused (limit)
#    disconnect: connections left, -1 not counted
#    join: the user's connections in the channel after it, -1 already joined
#    leave: connections left there, -1 not joined
# A batch that is applied pushes the identity's deadline (it is a heartbeat).
APPLY = _NOW + """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not s) or tonumber(s) < now then return {0} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local own, users, out = KEYS[2], KEYS[3], {1}
for i = 3, #ARGV, 6 do
  local kind, field, user, k = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local r
  if kind == 'c' then
    r = tonumber(redis.call('HGET', users, user) or '0')
    if redis.call('HEXISTS', own, field) == 0 then
      if k > 0 and r >= k then r = -1 else
        redis.call('HSET', own, field, user)
        r = redis.call('HINCRBY', users, user, 1)
      end
    end
  elseif kind == 'd' then
    r = -1
    if redis.call('HDEL', own, field) == 1 then
      r = redis.call('HINCRBY', users, user, -1)
      if r <= 0 then redis.call('HDEL', users, user); r = 0 end
    end
  elseif kind == 'j' then
    r = -1
    if redis.call('HSETNX', own, field, user) == 1 then
      redis.call('HSET', KEYS[k], ARGV[i + 4], ARGV[i + 5])
      r = redis.call('HINCRBY', KEYS[k + 1], user, 1)
    end
  else
    r = -1
    if redis.call('HDEL', own, field) == 1 then
      redis.call('HDEL', KEYS[k], ARGV[i + 4])
      r = redis.call('HINCRBY', KEYS[k + 1], user, -1)
      if r <= 0 then redis.call('HDEL', KEYS[k + 1], user); r = 0 end
    end
  end
  out[#out + 1] = r
end
return out
"""

# KEYS: ids, identity hash; ARGV: identity, batch, key prefix P
# -> {done (0/1), channel, user, channel, user, ...} for every user whose last
#    connection in a channel was removed. Nothing happens while the identity lives.
REAP = _NOW + """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) >= now then return {1} end
local out = {0}
local fields = redis.call('HRANDFIELD', KEYS[2], tonumber(ARGV[2]), 'WITHVALUES')
for i = 1, #fields, 2 do
  local field, user = fields[i], fields[i + 1]
  redis.call('HDEL', KEYS[2], field)
  if string.sub(field, 1, 1) == 'c' then
    local n = redis.call('HINCRBY', ARGV[3] .. 'u', user, -1)
    if n <= 0 then redis.call('HDEL', ARGV[3] .. 'u', user) end
  else
    local rest = string.sub(field, 3)
    local sep = string.find(rest, '\\n', 1, true)
    local channel, conn = string.sub(rest, 1, sep - 1), string.sub(rest, sep + 1)
    redis.call('HDEL', ARGV[3] .. 'c:' .. channel, ARGV[1] .. '/' .. conn)
    local counts = ARGV[3] .. 'n:' .. channel
    local n = redis.call('HINCRBY', counts, user, -1)
    if n <= 0 then
      redis.call('HDEL', counts, user)
      table.insert(out, channel)
      table.insert(out, user)
    end
  end
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  out[1] = 1
end
return out
"""
