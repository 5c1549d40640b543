//! `rpol store ...` on Redis: records found by SCAN (never KEYS, which
//! blocks the server), each call bounded by the connection's response
//! timeout; imports one Lua script per record, with the budgets of the
//! greylist script.

use redis::AsyncCommands;

use super::super::admin::{ClientRow, Import, Imported, RateRow, Stats, TripletRow};
use super::super::greylist::TripletInfo;
use super::super::{StoreError, cap_network};
use super::{RedisStore, backend};

/// Keys a SCAN step asks for.
const SCAN_COUNT: u64 = 1000;

/// Writes an imported triplet unless it is held or a budget is full.
/// KEYS: the triplet, the unconfirmed index, the network's index, the
/// passed index. ARGV: value, pending (1/0), ttl, "net hex" member, hex,
/// first, last, max_triplets, max_unconfirmed_per_network, max_age.
/// Returns 1 written, 0 held, 2 no room.
const IMPORT_TRIPLET_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local pending, ttl = ARGV[2] == '1', tonumber(ARGV[3])
if redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[8]) then return 2 end
if pending and redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[9]) then return 2 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
if pending then
  redis.call('ZADD', KEYS[2], ARGV[6], ARGV[4])
  redis.call('ZADD', KEYS[3], ARGV[6], ARGV[5])
  if redis.call('TTL', KEYS[3]) < ttl then redis.call('EXPIRE', KEYS[3], ttl) end
else
  redis.call('ZADD', KEYS[4], ARGV[7], ARGV[5])
end
for _, k in ipairs({KEYS[2], KEYS[4]}) do
  if redis.call('EXISTS', k) == 1 then redis.call('EXPIRE', k, ARGV[10]) end
end
return 1
"#;

/// Writes an imported auto-whitelist record unless it is held or
/// max_clients are. KEYS: the record, the client index. ARGV: count,
/// last, ttl, address, max_clients, max_age. Returns as above.
const IMPORT_CLIENT_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then return 2 end
redis.call('SET', KEYS[1], ARGV[1] .. ',' .. ARGV[2], 'EX', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return 1
"#;

/// A rate record's counts, as RATE_PRELUDE reads it. KEYS: the record.
/// Returns {ttl, messages, recipients, networks}.
const RATE_SUMS_LUA: &str = r#"
local raw = redis.call('GET', KEYS[1])
local ttl = redis.call('TTL', KEYS[1])
if not raw then return {ttl, 0, 0, 0} end
local ok, v = pcall(cjson.decode, raw)
if not ok or type(v) ~= 'table' then return {ttl, 0, 0, 0} end
local m, r = 0, 0
for _, n in ipairs(type(v.m) == 'table' and v.m or {}) do m = m + (tonumber(n) or 0) end
for _, n in ipairs(type(v.r) == 'table' and v.r or {}) do r = r + (tonumber(n) or 0) end
local nets = type(v.n) == 'table' and #v.n or 0
return {ttl, m, r, nets}
"#;

fn is_key_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// "first,last[,seen,details]" as the greylist script writes it.
fn triplet_value(v: &str) -> Option<(u64, u64, Option<u64>, Option<TripletInfo>)> {
    let mut f = v.splitn(4, ',');
    let first = f.next()?.parse().ok()?;
    let last = f.next()?.parse().ok()?;
    let seen = f.next().and_then(|n| n.parse().ok());
    let info = f.next().and_then(TripletInfo::decode);
    Some((first, last, seen, info))
}

impl RedisStore {
    /// Every key matching `pattern`, by SCAN.
    async fn scan(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        let mut con = self.manager.clone();
        let mut cursor = 0u64;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut con)
                .await
                .map_err(backend)?;
            keys.extend(batch);
            if next == 0 {
                keys.sort();
                keys.dedup();
                return Ok(keys);
            }
            cursor = next;
        }
    }

    fn escaped_prefix(&self) -> String {
        let mut out = String::new();
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out
    }

    async fn triplet_keys(&self, hex_prefix: &str) -> Result<Vec<String>, StoreError> {
        let pattern = format!("{}greylist:{hex_prefix}*", self.escaped_prefix());
        let at = self.prefix.len() + "greylist:".len();
        let mut keys = self.scan(&pattern).await?;
        keys.retain(|k| k.get(at..).is_some_and(is_key_hex));
        Ok(keys)
    }

    pub async fn stats(&self) -> Result<Stats, StoreError> {
        let triplets = self.triplets().await?;
        Ok(Stats {
            triplets: triplets.len() as u64,
            unconfirmed: triplets.iter().filter(|t| !t.passed).count() as u64,
            passed: triplets.iter().filter(|t| t.passed).count() as u64,
            with_details: triplets.iter().filter(|t| t.info.is_some()).count() as u64,
            clients: self.clients().await?.len() as u64,
            rate_records: self.rate_keys("").await?.len() as u64,
        })
    }

    pub async fn triplets(&self) -> Result<Vec<TripletRow>, StoreError> {
        let mut con = self.manager.clone();
        let passed_index = format!("{}greylist:passed", self.prefix);
        let mut rows = Vec::new();
        let at = self.prefix.len() + "greylist:".len();
        for key in self.triplet_keys("").await? {
            let (value, passed): (Option<String>, Option<f64>) = redis::pipe()
                .get(&key)
                .zscore(&passed_index, &key[at..])
                .query_async(&mut con)
                .await
                .map_err(backend)?;
            let Some((first, last, seen, info)) = value.as_deref().and_then(triplet_value) else {
                continue;
            };
            rows.push(TripletRow {
                key: key[at..].to_string(),
                first,
                last,
                seen,
                passed: passed.is_some(),
                info,
            });
        }
        Ok(rows)
    }

    pub async fn clients(&self) -> Result<Vec<ClientRow>, StoreError> {
        let mut con = self.manager.clone();
        let at = self.prefix.len() + "awl:".len();
        let mut rows = Vec::new();
        for key in self
            .scan(&format!("{}awl:*", self.escaped_prefix()))
            .await?
        {
            if key[at..] == *"index" {
                continue;
            }
            let value: Option<String> = con.get(&key).await.map_err(backend)?;
            let parsed = value.as_deref().and_then(|v| {
                let (count, last) = v.split_once(',')?;
                Some((count.parse().ok()?, last.parse().ok()?))
            });
            if let Some((count, last)) = parsed {
                rows.push(ClientRow {
                    address: key[at..].to_string(),
                    count,
                    last,
                });
            }
        }
        Ok(rows)
    }

    async fn rate_keys(&self, hex_prefix: &str) -> Result<Vec<String>, StoreError> {
        let pattern = format!("{}rate:{hex_prefix}*", self.escaped_prefix());
        let at = self.prefix.len() + "rate:".len();
        let mut keys = self.scan(&pattern).await?;
        keys.retain(|k| k.get(at..).is_some_and(is_key_hex));
        Ok(keys)
    }

    pub async fn rates(&self, now: u64) -> Result<Vec<RateRow>, StoreError> {
        let mut con = self.manager.clone();
        let script = redis::Script::new(RATE_SUMS_LUA);
        let at = self.prefix.len() + "rate:".len();
        let mut rows = Vec::new();
        for key in self.rate_keys("").await? {
            let (ttl, messages, recipients, networks): (i64, u64, u64, u64) = script
                .key(&key)
                .invoke_async(&mut con)
                .await
                .map_err(backend)?;
            if ttl < 0 {
                continue;
            }
            rows.push(RateRow {
                key: key[at..].to_string(),
                expires: now + ttl as u64,
                messages,
                recipients,
                networks,
            });
        }
        Ok(rows)
    }

    /// Removes a triplet (hex key) and its index entries.
    async fn delete_triplet(&self, hex: &str) -> Result<bool, StoreError> {
        let mut con = self.manager.clone();
        let pre = &self.prefix;
        let unconfirmed = format!("{pre}greylist:unconfirmed");
        // Its unconfirmed member names its network ("net hex").
        let mut cursor = 0u64;
        loop {
            let (next, found): (u64, Vec<String>) = redis::cmd("ZSCAN")
                .arg(&unconfirmed)
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("* {hex}"))
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut con)
                .await
                .map_err(backend)?;
            for member in found.iter().step_by(2) {
                if let Some((net, _)) = member.split_once(' ') {
                    let _: () = redis::pipe()
                        .zrem(&unconfirmed, member)
                        .zrem(format!("{pre}greylist:net:{net}"), hex)
                        .query_async(&mut con)
                        .await
                        .map_err(backend)?;
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let (gone, _): (u64, u64) = redis::pipe()
            .del(format!("{pre}greylist:{hex}"))
            .zrem(format!("{pre}greylist:passed"), hex)
            .query_async(&mut con)
            .await
            .map_err(backend)?;
        Ok(gone > 0)
    }

    async fn delete_client(&self, address: &str) -> Result<bool, StoreError> {
        let mut con = self.manager.clone();
        let pre = &self.prefix;
        let (gone, _): (u64, u64) = redis::pipe()
            .del(format!("{pre}awl:{address}"))
            .zrem(format!("{pre}awl:index"), address)
            .query_async(&mut con)
            .await
            .map_err(backend)?;
        Ok(gone > 0)
    }

    pub async fn delete(&self, key: &str) -> Result<u64, StoreError> {
        let mut gone = 0;
        let hex_like = (8..=64).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_hexdigit());
        if hex_like {
            let key = key.to_ascii_lowercase();
            let at = self.prefix.len() + "greylist:".len();
            for k in self.triplet_keys(&key).await? {
                gone += u64::from(self.delete_triplet(&k[at..]).await?);
            }
            let mut con = self.manager.clone();
            let at = self.prefix.len() + "rate:".len();
            for k in self.rate_keys(&key).await? {
                let (n, _): (u64, u64) = redis::pipe()
                    .del(&k)
                    .zrem(format!("{}rate:index", self.prefix), &k[at..])
                    .query_async(&mut con)
                    .await
                    .map_err(backend)?;
                gone += n;
            }
        }
        if key != "index" && !key.contains(['*', '?', '[']) {
            gone += u64::from(self.delete_client(key).await?);
        }
        Ok(gone)
    }

    pub async fn delete_older_than(&self, cutoff: u64) -> Result<u64, StoreError> {
        let mut gone = 0;
        for t in self.triplets().await? {
            if t.last < cutoff {
                gone += u64::from(self.delete_triplet(&t.key).await?);
            }
        }
        for c in self.clients().await? {
            if c.last < cutoff {
                gone += u64::from(self.delete_client(&c.address).await?);
            }
        }
        Ok(gone)
    }

    pub async fn import(
        &self,
        batch: Vec<Import>,
        max_age: u64,
        retry_window: u64,
        now: u64,
    ) -> Result<Imported, StoreError> {
        let mut con = self.manager.clone();
        let pre = &self.prefix;
        let triplet_script = redis::Script::new(IMPORT_TRIPLET_LUA);
        let client_script = redis::Script::new(IMPORT_CLIENT_LUA);
        let mut done = Imported::default();
        for item in batch {
            let code: u64 = match item {
                Import::Triplet {
                    key,
                    info,
                    cap_net,
                    first,
                    last,
                    pending,
                } => {
                    // As the greylist script: unpassed, kept for the
                    // retry window; passed, for max_age; from last seen.
                    let keep = if pending {
                        max_age.min(retry_window + 1)
                    } else {
                        max_age
                    };
                    let ttl = keep.saturating_sub(now.saturating_sub(last)).max(1);
                    let hex = key.hex();
                    let text = info.as_ref().map(TripletInfo::encode).unwrap_or_default();
                    let value = format!("{first},{last},1,{text}");
                    let net = cap_network(&cap_net);
                    triplet_script
                        .key(format!("{pre}greylist:{hex}"))
                        .key(format!("{pre}greylist:unconfirmed"))
                        .key(format!("{pre}greylist:net:{net}"))
                        .key(format!("{pre}greylist:passed"))
                        .arg(value)
                        .arg(if pending { "1" } else { "0" })
                        .arg(ttl)
                        .arg(format!("{net} {hex}"))
                        .arg(&hex)
                        .arg(first)
                        .arg(last)
                        .arg(self.limits.triplets)
                        .arg(self.limits.unconfirmed_per_network)
                        .arg(max_age)
                        .invoke_async(&mut con)
                        .await
                        .map_err(backend)?
                }
                Import::Client {
                    address,
                    count,
                    last,
                } => {
                    let ttl = max_age.saturating_sub(now.saturating_sub(last)).max(1);
                    let code: u64 = client_script
                        .key(format!("{pre}awl:{address}"))
                        .key(format!("{pre}awl:index"))
                        .arg(count)
                        .arg(last)
                        .arg(ttl)
                        .arg(&address)
                        .arg(self.limits.clients)
                        .arg(max_age)
                        .invoke_async(&mut con)
                        .await
                        .map_err(backend)?;
                    if code == 1 {
                        done.clients += 1;
                    }
                    code + 10
                }
            };
            match code {
                1 => done.triplets += 1,
                0 | 10 => done.known += 1,
                2 | 12 => done.no_room += 1,
                _ => {}
            }
        }
        Ok(done)
    }
}
