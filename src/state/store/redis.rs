//! The Redis backend, for several MX hosts sharing one state. Each
//! operation is one Lua script (atomic on the server), every key carries
//! an expiry so Redis forgets old records by itself, and every key starts
//! with `[store] prefix`. The size cap is Redis's own `maxmemory`.
//!
//! The connection is a `ConnectionManager`: made on first use and remade
//! after a failure, so rpol starts, and keeps answering, while Redis is
//! down. Times come from the rpol host (keep MX hosts on NTP, as mail
//! needs anyway).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::StoreError;
use super::greylist::{AWL_INCREMENT_EVERY, GreylistParams, TripletKey, Verdict};
use super::rate::{self, RateKey, RateParams};

/// greylist::decide in Lua. KEYS: triplet, client. ARGV: now, delay,
/// retry_window, max_age, auto_whitelist_clients, awl increment period.
/// Records are "first,last" and "count,last", as postgrey stores them.
/// Returns {kind, a, b}: 1 auto-whitelisted (count), 2 greylisted
/// (missing, first seen), 3 passed (delayed, whitelisted now), 4 known.
const GREYLIST_LUA: &str = r#"
local now, delay, retry, max_age, awl, every =
  tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local function record(key)
  local v = redis.call('GET', key)
  if not v then return nil end
  local a, b = string.match(v, '^(%d+),(%d+)$')
  if not a then return nil end
  a, b = tonumber(a), tonumber(b)
  if now - b > max_age then return nil end
  return a, b
end
local function put(key, a, b, ttl)
  redis.call('SET', key, string.format('%d,%d', a, b), 'EX', ttl)
end
local ccount, clast = record(KEYS[2])
if awl > 0 and ccount and ccount >= awl then
  if now >= clast + every or clast > now then put(KEYS[2], ccount + 1, now, max_age) end
  return {1, ccount, 0}
end
local first, last = record(KEYS[1])
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
if waited < delay then
  -- Not passed yet: useless once the retry window is over.
  put(KEYS[1], first, now, math.min(max_age, retry + 1))
  local fresh = 0
  if first == now then fresh = 1 end
  return {2, delay - waited, fresh}
end
put(KEYS[1], first, now, max_age)
if known then return {4, 0, 0} end
local whitelisted = 0
if awl > 0 and ((not ccount) or now >= clast + every) then
  local count = (ccount or 0) + 1
  put(KEYS[2], count, now, max_age)
  if count == awl then whitelisted = 1 end
end
return {3, waited, whitelisted}
"#;

pub struct RedisStore {
    manager: ConnectionManager,
    prefix: String,
    greylist: redis::Script,
}

fn backend(e: redis::RedisError) -> StoreError {
    StoreError::Backend(format!("redis: {e}"))
}

impl RedisStore {
    /// Checks the URL and prepares the connection; connects on first use.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url).map_err(backend)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Reconnect attempts happen per call; the store's timeout bounds them.
            .set_number_of_retries(1)
            .set_max_delay(timeout);
        let manager = ConnectionManager::new_lazy_with_config(client, config).map_err(backend)?;
        Ok(RedisStore {
            manager,
            prefix: prefix.to_string(),
            greylist: redis::Script::new(GREYLIST_LUA),
        })
    }

    pub async fn greylist(
        &self,
        key: TripletKey,
        client: &str,
        p: GreylistParams,
    ) -> Result<Verdict, StoreError> {
        let mut con = self.manager.clone();
        let (kind, a, b): (u64, u64, u64) = self
            .greylist
            .key(format!("{}greylist:{}", self.prefix, key.hex()))
            .key(format!("{}awl:{client}", self.prefix))
            .arg(p.now)
            .arg(p.delay)
            .arg(p.retry_window)
            .arg(p.max_age)
            .arg(p.auto_whitelist_clients)
            .arg(AWL_INCREMENT_EVERY)
            .invoke_async(&mut con)
            .await
            .map_err(backend)?;
        match kind {
            1 => Ok(Verdict::AutoWhitelisted { count: a }),
            2 => Ok(Verdict::Greylisted {
                missing: a,
                first_seen: b == 1,
            }),
            3 => Ok(Verdict::Passed {
                delayed: a,
                whitelisted_now: b == 1,
            }),
            4 => Ok(Verdict::Known),
            other => Err(StoreError::Backend(format!(
                "redis: greylist script answered {other}"
            ))),
        }
    }
}

/// rate::check and rate::count share this: the record (JSON, by Redis's
/// cjson) as of now. KEYS[1]: the record. ARGV: now, slice length, window,
/// messages, recipients, distinct_clients (0: no limit), network.
const RATE_PRELUDE: &str = r#"
local now, len, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local maxm, maxr, maxd = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local net = ARGV[7]
local rec
local raw = redis.call('GET', KEYS[1])
if raw then
  local ok, v = pcall(cjson.decode, raw)
  if ok and type(v) == 'table' and type(v.m) == 'table' and type(v.r) == 'table' then rec = v end
end
if not rec then rec = {s = 0, m = {}, r = {}, n = {}, i = {}} end
rec.n = rec.n or {}
rec.i = rec.i or {}
for k = 1, 12 do rec.m[k] = tonumber(rec.m[k]) or 0; rec.r[k] = tonumber(rec.r[k]) or 0 end
local cur = math.floor(now / len)
rec.s = tonumber(rec.s) or 0
if cur > rec.s then
  if cur - rec.s >= 12 then
    for k = 1, 12 do rec.m[k] = 0; rec.r[k] = 0 end
  else
    for s = rec.s + 1, cur do rec.m[s % 12 + 1] = 0; rec.r[s % 12 + 1] = 0 end
  end
  rec.s = cur
end
local kept = {}
for _, e in ipairs(rec.n) do
  if now - tonumber(e[2]) < window then kept[#kept + 1] = e end
end
rec.n = kept
local function usage()
  local m, r, nets = 0, 0, {}
  for k = 1, 12 do m = m + rec.m[k]; r = r + rec.r[k] end
  for _, e in ipairs(rec.n) do nets[#nets + 1] = e[1] end
  return m, r, table.concat(nets, ' ')
end
"#;

/// rate::check. Returns {exceeded code, messages, recipients, networks}.
const RATE_CHECK_LUA: &str = r#"
local m, r, nets = usage()
local known = false
for _, e in ipairs(rec.n) do if e[1] == net then known = true end end
local code = 0
if maxm > 0 and m >= maxm then code = 1
elseif maxr > 0 and r >= maxr then code = 2
elseif maxd > 0 and not known and #rec.n >= maxd then code = 3 end
return {code, m, r, nets}
"#;

/// rate::count. ARGV also: recipients, instance tag, networks kept,
/// instances kept. Returns {1 counted / 0 repeated, messages, recipients,
/// networks}; the record expires when its newest count leaves the window.
const RATE_COUNT_LUA: &str = r#"
local rcpts, tag, netmax, instmax = tonumber(ARGV[8]), ARGV[9], tonumber(ARGV[10]), tonumber(ARGV[11])
if tag ~= '' then
  for _, t in ipairs(rec.i) do
    if t == tag then
      local m, r, nets = usage()
      return {0, m, r, nets}
    end
  end
end
local k = cur % 12 + 1
rec.m[k] = rec.m[k] + 1
rec.r[k] = rec.r[k] + rcpts
local at = nil
for j, e in ipairs(rec.n) do if e[1] == net then at = j end end
if at then table.remove(rec.n, at)
elseif #rec.n >= netmax then table.remove(rec.n, 1) end
rec.n[#rec.n + 1] = {net, now}
if tag ~= '' then
  if #rec.i >= instmax then table.remove(rec.i, 1) end
  rec.i[#rec.i + 1] = tag
end
redis.call('SET', KEYS[1], cjson.encode(rec), 'EX', len * 12)
local m, r, nets = usage()
return {1, m, r, nets}
"#;

static RATE_CHECK: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(&format!("{RATE_PRELUDE}{RATE_CHECK_LUA}")));
static RATE_COUNT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(&format!("{RATE_PRELUDE}{RATE_COUNT_LUA}")));

fn rate_usage(m: u64, r: u64, nets: &str) -> rate::Usage {
    rate::Usage {
        messages: m,
        recipients: r,
        networks: nets.split_whitespace().map(String::from).collect(),
    }
}

impl RedisStore {
    fn rate_invocation(
        &self,
        script: &'static redis::Script,
        key: RateKey,
        network: &str,
        p: &RateParams,
    ) -> redis::ScriptInvocation<'static> {
        let mut inv = script.key(format!("{}rate:{}", self.prefix, key.hex()));
        inv.arg(p.now)
            .arg(p.slice_len())
            .arg(p.window)
            .arg(p.messages)
            .arg(p.recipients)
            .arg(p.distinct_clients)
            .arg(network);
        inv
    }

    pub async fn rate_check(
        &self,
        key: RateKey,
        network: &str,
        p: RateParams,
    ) -> Result<rate::Check, StoreError> {
        let mut con = self.manager.clone();
        let (code, m, r, nets): (u64, u64, u64, String) = self
            .rate_invocation(&RATE_CHECK, key, network, &p)
            .invoke_async(&mut con)
            .await
            .map_err(backend)?;
        Ok(rate::Check {
            usage: rate_usage(m, r, &nets),
            exceeded: rate::Exceeded::from_code(code),
        })
    }

    pub async fn rate_count(
        &self,
        key: RateKey,
        network: &str,
        recipients: u32,
        tag: &str,
        p: RateParams,
    ) -> Result<rate::Counted, StoreError> {
        let mut con = self.manager.clone();
        let mut inv = self.rate_invocation(&RATE_COUNT, key, network, &p);
        inv.arg(recipients)
            .arg(tag)
            .arg(p.networks_kept())
            .arg(rate::INSTANCES_KEPT);
        let (counted, m, r, nets): (u64, u64, u64, String) =
            inv.invoke_async(&mut con).await.map_err(backend)?;
        Ok(rate::Counted {
            usage: rate_usage(m, r, &nets),
            repeated: counted == 0,
        })
    }
}
