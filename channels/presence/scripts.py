"""Lua scripts of ``RedisPresence``: every change of presence state is one atomic script.

Keys (``P`` is the Redis prefix followed by ``pr:``):

* ``P ids``            zset identity -> deadline (ms, Redis clock)
* ``P id:<identity>``  hash of the identity's entries: ``c\\n<conn>`` (a connection)
                       or ``m\\n<channel>\\n<conn>`` (a membership) -> user
* ``P c:<channel>``    hash ``<identity>/<conn>`` -> ``{"u": user, "i": info}``
* ``P n:<channel>``    hash user -> connections joined (first/last are decided here)
* ``P u``              hash user -> connections open, across instances

Times come from Redis (``TIME``), so instance clocks may disagree. The reaper
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

# KEYS: ids; ARGV: identity. Added even if already reaped: entries written under it
# after the reap (by an instance that had not noticed yet) are reaped too.
RETIRE = """
redis.call('ZADD', KEYS[1], 0, ARGV[1])
return 1
"""

# KEYS: ids -> identities whose deadline has passed
EXPIRED = _NOW + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, 100)
"""

# KEYS: identity hash, user counts; ARGV: field, user, limit -> count, or -1 refused
CONNECT = """
local n = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return n end
local limit = tonumber(ARGV[3])
if limit > 0 and n >= limit then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
"""

# KEYS: identity hash, user counts; ARGV: field, user
DISCONNECT = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return -1 end
local n = redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
if n <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]) end
return n
"""

# KEYS: identity hash, channel entries, channel counts; ARGV: field, user, entry, value
# -> the user's connections in the channel after joining, or -1 if already joined
JOIN = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return -1 end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
return redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
"""

# KEYS: identity hash, channel entries, channel counts; ARGV: field, user, entry
# -> the user's connections left in the channel, or -1 if it was not joined
LEAVE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return -1 end
redis.call('HDEL', KEYS[2], ARGV[3])
local n = redis.call('HINCRBY', KEYS[3], ARGV[2], -1)
if n <= 0 then redis.call('HDEL', KEYS[3], ARGV[2]) end
return n
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
