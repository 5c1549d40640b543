//! The Redis backend, for several MX hosts sharing one state. Each
//! operation is one Lua script (atomic on the server), every key carries
//! an expiry so Redis forgets old records by itself, and every key starts
//! with `[store] prefix`. The size cap is Redis's own `maxmemory`.
//!
//! Standalone Redis (or a replicated primary, Sentinel's included) only,
//! version 5 or later (ZPOPMIN): the greylist script touches keys it does
//! not declare (an evicted triplet, its network's index), which Redis
//! Cluster refuses.
//!
//! The connection ([`redis_connect::Link`]: one server, or the master a
//! Sentinel names) is made on first use and remade after a failure, so
//! rpol starts, and keeps answering, while Redis is down. Times come from
//! the rpol host (keep MX hosts on NTP, as mail needs anyway).

mod admin;

use std::time::Duration;

use super::greylist::{
    AWL_INCREMENT_EVERY, GreylistParams, NotStored, TripletInfo, TripletKey, Verdict,
};
use super::rate::{self, Hold, RateKey, RateParams};
use super::redis_connect::Link;
use super::{Limits, StoreError};

/// Stale index entries a script removes from an index it adds to (the
/// greylist script: or compares with its budget): more than the one a
/// call adds, so the indexes keep up, at a bounded cost per script.
pub const INDEX_TRIM: u64 = 100;

/// greylist::decide in Lua, with rpol's budgets. KEYS: triplet, client,
/// unconfirmed index (sorted set of "net hex" by first seen), the
/// network's unconfirmed (hex by first seen), passed index (hex by last
/// seen), client index (address by last count). ARGV: now, delay,
/// retry_window, max_age, auto_whitelist_clients, awl increment period,
/// network, triplet hex, client address, key prefix, max_triplets,
/// max_unconfirmed_per_network, max_clients, INDEX_TRIM, the triplet's
/// encoded details (TripletInfo, "" for none).
/// Records are "first,last" and "count,last", as postgrey stores them; a
/// triplet's goes on with ",seen,details" (requests seen since first
/// seen, the details at most MAX_DETAILS bytes), which older records lack
/// until their next write.
/// Returns {kind, a, b}: 1 auto-whitelisted (count), 2 greylisted
/// (missing, first seen), 3 passed (delayed, whitelisted now), 4 known,
/// 5 not stored (missing, NotStored code).
const GREYLIST_LUA: &str = include_str!("redis/greylist.lua");

pub struct RedisStore {
    manager: Link,
    prefix: String,
    limits: Limits,
    greylist: redis::Script,
}

fn backend(e: redis::RedisError) -> StoreError {
    StoreError::Backend(format!("redis: {e}"))
}

impl RedisStore {
    /// Checks the URL and prepares the connection; connects on first use.
    /// `tls_ca`: the PEM text of `[store] tls_ca`.
    pub fn new(
        url: &str,
        tls_ca: Option<&[u8]>,
        prefix: &str,
        timeout: Duration,
        limits: Limits,
    ) -> Result<RedisStore, StoreError> {
        let manager = Link::new(url, tls_ca, timeout).map_err(backend)?;
        Ok(RedisStore {
            manager,
            prefix: prefix.to_string(),
            limits,
            greylist: redis::Script::new(GREYLIST_LUA),
        })
    }

    pub async fn greylist(
        &self,
        key: TripletKey,
        info: Option<&TripletInfo>,
        net: &str,
        client: &str,
        p: GreylistParams,
    ) -> Result<Verdict, StoreError> {
        let mut con = self.manager.clone();
        let (pre, hex) = (&self.prefix, key.hex());
        let (kind, a, b): (u64, u64, u64) = self
            .greylist
            .key(format!("{pre}greylist:{hex}"))
            .key(format!("{pre}awl:{client}"))
            .key(format!("{pre}greylist:unconfirmed"))
            .key(format!("{pre}greylist:net:{net}"))
            .key(format!("{pre}greylist:passed"))
            .key(format!("{pre}awl:index"))
            .arg(p.now)
            .arg(p.delay)
            .arg(p.retry_window)
            .arg(p.max_age)
            .arg(p.auto_whitelist_clients)
            .arg(AWL_INCREMENT_EVERY)
            .arg(net)
            .arg(&hex)
            .arg(client)
            .arg(pre)
            .arg(self.limits.triplets)
            .arg(self.limits.unconfirmed_per_network)
            .arg(self.limits.clients)
            .arg(INDEX_TRIM)
            .arg(info.map(TripletInfo::encode).unwrap_or_default())
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
            5 => Ok(Verdict::NotStored {
                missing: a,
                why: NotStored::from_code(b),
            }),
            other => Err(StoreError::Backend(format!(
                "redis: greylist script answered {other}"
            ))),
        }
    }
}

/// rate::hold, rate::settle and rate::release share this: the record
/// (JSON, by Redis's cjson) as of now. KEYS: the record, the index of
/// records (hex by expiry). ARGV: now, slice length, window, messages,
/// recipients, distinct_clients (0: no limit), network, the record's hex,
/// max_rate_records, INDEX_TRIM, instance tag, RESERVATION_TTL,
/// MAX_RESERVATIONS. Reservations are {tag, expires, recipients, network,
/// last recipient}. Every script answers {code, messages, recipients,
/// networks, held messages, held recipients, created}; a key without a
/// record when the index is full answers code 4: no room (live records are
/// never evicted).
const RATE_PRELUDE: &str = r#"
local now, len, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local maxm, maxr, maxd = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local net, member, maxrec, trim = ARGV[7], ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[10])
local tag, ttl, maxh = ARGV[11], tonumber(ARGV[12]), tonumber(ARGV[13])
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, trim)
if #stale > 0 then redis.call('ZREM', KEYS[2], unpack(stale)) end
local rec
local raw = redis.call('GET', KEYS[1])
if not raw and redis.call('ZCARD', KEYS[2]) >= maxrec then return {4, 0, 0, '', 0, 0, 0} end
if raw then
  local ok, v = pcall(cjson.decode, raw)
  if ok and type(v) == 'table' and type(v.m) == 'table' and type(v.r) == 'table' then rec = v end
end
if not rec then rec = {s = 0, m = {}, r = {}, n = {}, i = {}, h = {}} end
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
local held = {}
for _, e in ipairs(type(rec.h) == 'table' and rec.h or {}) do
  if type(e) == 'table' and (tonumber(e[2]) or 0) > now then
    held[#held + 1] = {tostring(e[1]), tonumber(e[2]), tonumber(e[3]) or 0, tostring(e[4]), tostring(e[5])}
  end
end
rec.h = held
local function answer(code, created)
  local m, r, nets = 0, 0, {}
  for k = 1, 12 do m = m + rec.m[k]; r = r + rec.r[k] end
  for _, e in ipairs(rec.n) do nets[#nets + 1] = e[1] end
  local hr = 0
  for _, e in ipairs(rec.h) do hr = hr + e[3] end
  return {code, m, r, table.concat(nets, ' '), #rec.h, hr, created}
end
local function counted()
  if tag == '' then return false end
  for _, t in ipairs(rec.i) do if t == tag then return true end end
  return false
end
local function mine()
  if tag == '' then return nil end
  for j, e in ipairs(rec.h) do if e[1] == tag then return j end end
  return nil
end
local function save()
  -- As Record::expires: a record holding nothing goes (a released RCPT's
  -- must not take a place for the window); one holding reservations alone
  -- goes when the last lapses.
  local counts = #rec.n > 0 or #rec.i > 0
  for k = 1, 12 do if rec.m[k] > 0 or rec.r[k] > 0 then counts = true end end
  local keep = math.max(len * 12, ttl)
  if not counts then
    if #rec.h == 0 then
      redis.call('DEL', KEYS[1])
      redis.call('ZREM', KEYS[2], member)
      return
    end
    keep = 1
    for _, e in ipairs(rec.h) do keep = math.max(keep, e[2] - now) end
  end
  redis.call('SET', KEYS[1], cjson.encode(rec), 'EX', keep)
  redis.call('ZADD', KEYS[2], now + keep, member)
  -- EXPIRE's GT needs Redis 7: compared here, for Redis 5 and 6.
  if redis.call('TTL', KEYS[2]) < keep then redis.call('EXPIRE', KEYS[2], keep) end
end
"#;

/// rate::hold (and rate::check: mode 0, nothing written). ARGV also (14
/// on): mode (0 probe, 1 RCPT, 2 END-OF-MESSAGE), the recipient's tag (1)
/// or the recipient count (2). Code: the Exceeded code, 0 when it fits.
const RATE_HOLD_LUA: &str = r#"
local mode, arg = tonumber(ARGV[14]), ARGV[15]
if mode == 2 and counted() then return answer(0, 0) end
local j = mine()
local om, orc = #rec.h, 0
for _, e in ipairs(rec.h) do orc = orc + e[3] end
local rc, last = 0, ''
if j then
  om = om - 1; orc = orc - rec.h[j][3]; rc = rec.h[j][3]; last = rec.h[j][5]
end
if mode == 2 then rc = tonumber(arg)
elseif mode == 1 and j and arg ~= '' and arg == last then last = arg
else
  rc = rc + 1
  if mode == 1 then last = arg end
end
local m, r = 0, 0
for k = 1, 12 do m = m + rec.m[k]; r = r + rec.r[k] end
local code = 0
if maxm > 0 and m + om + 1 > maxm then code = 1
elseif maxr > 0 and r + orc + rc > maxr then code = 2
elseif maxd > 0 then
  local seen, count = {}, 0
  for _, e in ipairs(rec.n) do
    if not seen[e[1]] then seen[e[1]] = true; count = count + 1 end
  end
  for k, e in ipairs(rec.h) do
    if k ~= j and not seen[e[4]] then seen[e[4]] = true; count = count + 1 end
  end
  if not seen[net] and count >= maxd then code = 3 end
end
if code == 0 and not j and om >= maxh then code = 5 end
if code ~= 0 or mode == 0 or tag == '' then return answer(code, 0) end
if j then table.remove(rec.h, j) end
rec.h[#rec.h + 1] = {tag, now + ttl, rc, net, last}
save()
if j then return answer(0, 0) end
return answer(0, 1)
"#;

/// rate::settle. ARGV also (14 on): recipients, networks kept, instances
/// kept. Code 1 counted, 0 repeated.
const RATE_SETTLE_LUA: &str = r#"
local rcpts, netmax, instmax = tonumber(ARGV[14]), tonumber(ARGV[15]), tonumber(ARGV[16])
local j = mine()
if j then table.remove(rec.h, j) end
if counted() then
  if j then save() end
  return answer(0, 0)
end
-- The newest slice, as rate::settle (not `cur`: a clock behind another
-- MX host's would count into an older slice).
local k = rec.s % 12 + 1
rec.m[k] = rec.m[k] + 1
rec.r[k] = rec.r[k] + rcpts
local at = nil
for x, e in ipairs(rec.n) do if e[1] == net then at = x end end
if at then table.remove(rec.n, at)
elseif #rec.n >= netmax then table.remove(rec.n, 1) end
rec.n[#rec.n + 1] = {net, now}
if tag ~= '' then
  if #rec.i >= instmax then table.remove(rec.i, 1) end
  rec.i[#rec.i + 1] = tag
end
save()
return answer(1, 0)
"#;

/// rate::release. Code 1 released, 0 nothing to release.
const RATE_RELEASE_LUA: &str = r#"
local j = mine()
if not j then return answer(0, 0) end
table.remove(rec.h, j)
save()
return answer(1, 0)
"#;

fn rate_script(op: &str) -> redis::Script {
    redis::Script::new(&format!("{RATE_PRELUDE}{op}"))
}

static RATE_HOLD: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| rate_script(RATE_HOLD_LUA));
static RATE_SETTLE: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| rate_script(RATE_SETTLE_LUA));
static RATE_RELEASE: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| rate_script(RATE_RELEASE_LUA));

/// The rate scripts' answer when a new key finds no room.
const FULL: u64 = 4;

/// What every rate script answers (see [`RATE_PRELUDE`]).
type RateAnswer = (u64, u64, u64, String, u64, u64, u64);

fn rate_usage(a: &RateAnswer) -> rate::Usage {
    rate::Usage {
        messages: a.1,
        recipients: a.2,
        networks: a.3.split_whitespace().map(String::from).collect(),
        held_messages: a.4,
        held_recipients: a.5,
    }
}

impl RedisStore {
    /// Runs `script` for `key` with the shared ARGV and `extra` after them.
    async fn rate_call(
        &self,
        script: &'static redis::Script,
        key: RateKey,
        network: &str,
        tag: &str,
        p: &RateParams,
        extra: &[String],
    ) -> Result<RateAnswer, StoreError> {
        let hex = key.hex();
        let mut inv = script.key(format!("{}rate:{hex}", self.prefix));
        inv.key(format!("{}rate:index", self.prefix))
            .arg(p.now)
            .arg(p.slice_len())
            .arg(p.window)
            .arg(p.messages)
            .arg(p.recipients)
            .arg(p.distinct_clients)
            .arg(network)
            .arg(hex)
            .arg(self.limits.rate_records)
            .arg(INDEX_TRIM)
            .arg(tag)
            .arg(rate::RESERVATION_TTL)
            .arg(rate::MAX_RESERVATIONS);
        for a in extra {
            inv.arg(a);
        }
        let mut con = self.manager.clone();
        let answer: RateAnswer = inv.invoke_async(&mut con).await.map_err(backend)?;
        if answer.0 == FULL {
            return Err(StoreError::Full(self.limits.rate_records));
        }
        Ok(answer)
    }

    pub async fn rate_check(
        &self,
        key: RateKey,
        network: &str,
        tag: &str,
        p: RateParams,
    ) -> Result<rate::Check, StoreError> {
        self.rate_hold(key, network, tag, &Hold::Probe, p).await
    }

    pub async fn rate_hold(
        &self,
        key: RateKey,
        network: &str,
        tag: &str,
        hold: &Hold,
        p: RateParams,
    ) -> Result<rate::Check, StoreError> {
        let extra = match hold {
            Hold::Probe => ["0".to_string(), String::new()],
            Hold::Rcpt(to) => ["1".to_string(), to.clone()],
            Hold::Message(n) => ["2".to_string(), n.to_string()],
        };
        let a = self
            .rate_call(&RATE_HOLD, key, network, tag, &p, &extra)
            .await?;
        Ok(rate::Check {
            usage: rate_usage(&a),
            exceeded: rate::Exceeded::from_code(a.0),
            created: a.6 == 1,
        })
    }

    pub async fn rate_settle(
        &self,
        key: RateKey,
        network: &str,
        recipients: u32,
        tag: &str,
        p: RateParams,
    ) -> Result<rate::Counted, StoreError> {
        let extra = [
            recipients.to_string(),
            p.networks_kept().to_string(),
            rate::INSTANCES_KEPT.to_string(),
        ];
        let a = self
            .rate_call(&RATE_SETTLE, key, network, tag, &p, &extra)
            .await?;
        Ok(rate::Counted {
            usage: rate_usage(&a),
            repeated: a.0 == 0,
        })
    }

    /// A key without a record has nothing to release, full store or not.
    pub async fn rate_release(
        &self,
        key: RateKey,
        tag: &str,
        p: RateParams,
    ) -> Result<(), StoreError> {
        match self.rate_call(&RATE_RELEASE, key, "", tag, &p, &[]).await {
            Ok(_) | Err(StoreError::Full(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review item 10: the scripts run on Redis 5 and 6 too. Only Redis 7
    /// is installed here, so this reads them: no `EXPIRE ... GT|LT|NX|XX`
    /// (Redis 7's options), which fail after earlier writes landed.
    #[test]
    fn the_scripts_use_no_redis_7_options() {
        for script in [GREYLIST_LUA, RATE_PRELUDE, RATE_HOLD_LUA, RATE_SETTLE_LUA] {
            for line in script.lines().filter(|l| l.contains("'EXPIRE'")) {
                for opt in ["'GT'", "'LT'", "'NX'", "'XX'"] {
                    assert!(!line.contains(opt), "Redis >= 7 only: {line}");
                }
            }
        }
    }
}
