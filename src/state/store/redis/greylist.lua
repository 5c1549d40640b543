local now, delay, retry, max_age, awl, every =
  tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local net, hex, ip, prefix = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local max_t, max_net, max_c, trim =
  tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
local info = ARGV[15]
-- Stale index entries (an unconfirmed triplet first seen beyond the retry
-- window, which starts over; a passed triplet or a client not written for
-- max_age, whose record has expired) go, `trim` at most, from an index
-- before it is compared with its budget and before it is added to, so
-- they go faster than they come; once a call. Returns how many went.
local trimmed = {}
local function trim_before(key, cutoff)
  if trimmed[key] then return 0 end
  trimmed[key] = true
  local old = redis.call('ZRANGEBYSCORE', key, '-inf', '(' .. cutoff, 'LIMIT', 0, trim)
  if #old > 0 then redis.call('ZREM', key, unpack(old)) end
  return #old
end
-- An index expires max_age after its last addition: by then every record
-- it names has expired.
local function index(key, score, member)
  redis.call('ZADD', key, score, member)
  redis.call('EXPIRE', key, max_age)
end
local function parse(v)
  if not v then return nil end
  local a, b = string.match(v, '^(%d+),(%d+)')
  if not a then return nil end
  a, b = tonumber(a), tonumber(b)
  if now - b > max_age then return nil end
  return a, b
end
local function record(key)
  return parse(redis.call('GET', key))
end
local function put(key, a, b, ttl)
  redis.call('SET', key, string.format('%d,%d', a, b), 'EX', ttl)
end
-- The triplet with its details: seen once more (once if it started over),
-- this call's details, else those stored (read by run with its times).
local old_seen, old_info = 0, ''
local function put_triplet(first, old_first, ttl)
  local seen = old_seen + 1
  if old_first ~= first then seen = 1 end
  local text = info
  if text == '' then text = old_info end
  redis.call('SET', KEYS[1], string.format('%d,%d,%d,', first, now, seen) .. text, 'EX', ttl)
end
local function put_client(count)
  trim_before(KEYS[6], now - max_age)
  if count == 1 and redis.call('ZSCORE', KEYS[6], ip) == false
     and redis.call('ZCARD', KEYS[6]) >= max_c then
    return false
  end
  put(KEYS[2], count, now, max_age)
  index(KEYS[6], now, ip)
  return true
end
local function evict(ohex, onet)
  redis.call('DEL', prefix .. 'greylist:' .. ohex)
  if onet then redis.call('ZREM', prefix .. 'greylist:net:' .. onet, ohex) end
end
-- Room for one more triplet: false when the store is full and holds no
-- indexed triplet to make room. The oldest unconfirmed triplet makes
-- room, else the least recently seen passed one: one sender waits once
-- more, not every new one.
local function make_room()
  local n = redis.call('ZCARD', KEYS[3]) + redis.call('ZCARD', KEYS[5])
  if n < max_t then return true end
  n = n - trim_before(KEYS[3], now - retry) - trim_before(KEYS[5], now - max_age)
  if n < max_t then return true end
  local oldest = redis.call('ZPOPMIN', KEYS[3])
  if #oldest > 0 then
    local onet, ohex = string.match(oldest[1], '^(%S+) (%x+)$')
    if ohex then evict(ohex, onet) end
    return true
  end
  oldest = redis.call('ZPOPMIN', KEYS[5])
  if #oldest == 0 then return false end
  evict(oldest[1])
  return true
end
local function run()
  local ccount, clast = record(KEYS[2])
  if awl > 0 and ccount and ccount >= awl then
    if now >= clast + every or clast > now then put_client(ccount + 1) end
    return {1, ccount, 0}
  end
  -- The triplet's value, read once: its times, requests seen, details.
  local value = redis.call('GET', KEYS[1])
  local exists = value ~= false
  if value then
    local n, rest = string.match(value, '^%d+,%d+,(%d+),(.*)$')
    if n then old_seen, old_info = tonumber(n), rest end
  end
  local first, last = parse(value)
  local old_first = first
  local known = false
  if not first then
    first = now
  elseif last - first >= delay then
    known = true
  elseif now - first > retry then
    first = now
  end
  if first > now then first = now end
  local waited = now - first
  local pending = waited < delay
  -- The index this call adds to.
  if pending then
    trim_before(KEYS[3], now - retry)
  else
    trim_before(KEYS[5], now - max_age)
  end
  local room = false
  if not exists and pending then
    local n = redis.call('ZCARD', KEYS[4])
    if n >= max_net then
      n = n - redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. (now - retry))
    end
    if n >= max_net then
      -- The network's own oldest unconfirmed triplet makes room.
      local oldest = redis.call('ZPOPMIN', KEYS[4])
      if #oldest == 0 then return {5, delay - waited, 1} end
      evict(oldest[1])
      redis.call('ZREM', KEYS[3], net .. ' ' .. oldest[1])
      room = true
    end
  end
  if not exists and not room and not make_room() then
    if pending then return {5, delay - waited, 2} end
    return {3, waited, 0}
  end
  local member = net .. ' ' .. hex
  if pending then
    -- Not passed yet: useless once the retry window is over.
    put_triplet(first, old_first, math.min(max_age, retry + 1))
    index(KEYS[3], first, member)
    redis.call('ZADD', KEYS[4], first, hex)
    redis.call('EXPIRE', KEYS[4], retry + 1)
    redis.call('ZREM', KEYS[5], hex)
    local fresh = 0
    if first == now then fresh = 1 end
    return {2, delay - waited, fresh}
  end
  put_triplet(first, old_first, max_age)
  redis.call('ZREM', KEYS[3], member)
  redis.call('ZREM', KEYS[4], hex)
  index(KEYS[5], now, hex)
  if known then return {4, 0, 0} end
  local whitelisted = 0
  if awl > 0 and ((not ccount) or now >= clast + every) then
    local count = (ccount or 0) + 1
    if put_client(count) and count == awl then whitelisted = 1 end
  end
  return {3, waited, whitelisted}
end
return run()
