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
