//! `check_rate_limit NAME`: a `[[rate_limit]]` budget per login, client or
//! sender. It refuses once a budget is spent, or when the request would be
//! the key's next distinct client network beyond `distinct_clients`. What
//! is spent is what was counted plus what transactions under way hold:
//! each RCPT reserves its recipient (and its transaction's one message) in
//! the same atomic store step that checks the room, so parallel
//! transactions cannot all pass one reading. At END-OF-MESSAGE the
//! message's `recipient_count` is held the same way (refused when it does
//! not fit), and the chain turns the reservation into the count once its
//! answer is not a refusal: only accepted mail counts. A refused
//! transaction releases its reservation; one that is abandoned (Postfix
//! says nothing at QUIT or RSET) lets it lapse after
//! [`rate::RESERVATION_TTL`]. The store counts an instance once. MAIL and
//! other states only read.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::Context;
use crate::common::unix_now;
use crate::log::Escaped;
use crate::protocol::{ProtocolState, Request};
use crate::state::State;
use crate::state::store::StoreError;
use crate::state::store::rate::{
    self, Exceeded, Hold, RateKey, RateParams, Usage, instance_tag, network_of,
};
use crate::vocab::OnStoreError;
use crate::vocab::outcome::Outcome;
use crate::vocab::reply::Reply;

/// Recipients one message may add: Postfix's smtpd_recipient_limit is
/// 1000 by default; a larger `recipient_count` is cut to this.
pub const MAX_RECIPIENTS_PER_MESSAGE: u32 = 100_000;

/// What a limit counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    SaslUsername,
    ClientAddress,
    Sender,
}

impl KeyKind {
    pub const NAMES: [&str; 3] = ["sasl_username", "client_address", "sender"];

    pub fn parse(s: &str) -> Option<KeyKind> {
        match s {
            "sasl_username" => Some(KeyKind::SaslUsername),
            "client_address" => Some(KeyKind::ClientAddress),
            "sender" => Some(KeyKind::Sender),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// The key's value in `req`, as counted, or `None` when the request
    /// has none (no login: a login limit does not apply). Logins and
    /// senders are lowercased (case does not make another account); an
    /// IPv6 client counts by its /64 (it can pick any address in it); the
    /// null sender counts as `<>`.
    pub fn value(self, req: &Request) -> Option<String> {
        match self {
            KeyKind::SaslUsername if req.sasl_username.is_empty() => None,
            KeyKind::SaslUsername => Some(req.sasl_username.to_lowercase()),
            KeyKind::Sender if req.sender.is_empty() => Some("<>".into()),
            KeyKind::Sender => Some(req.sender.to_lowercase()),
            KeyKind::ClientAddress => match req.client_ip() {
                Some(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
                    Some(network_of(IpAddr::V6(v6)))
                }
                Some(ip) => Some(ip.to_canonical().to_string()),
                None if req.client_address.is_empty() => None,
                None => Some(req.client_address.to_lowercase()),
            },
        }
    }
}

/// What a refusal answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitAction {
    /// `450 4.7.1`: the client tries again later.
    Defer,
    /// `550 5.7.1`.
    Reject,
}

/// One `[[rate_limit]]`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub name: String,
    pub key: KeyKind,
    /// 0: no such budget.
    pub messages: u64,
    pub recipients: u64,
    pub distinct_clients: u64,
    pub window: Duration,
    /// The window as the admin wrote it, for replies and logs ("1h").
    pub window_text: String,
    pub action: LimitAction,
    pub on_store_error: OnStoreError,
}

impl RateLimit {
    fn params(&self, now: u64) -> RateParams {
        RateParams {
            now,
            window: self.window.as_secs(),
            messages: self.messages,
            recipients: self.recipients,
            distinct_clients: self.distinct_clients,
        }
    }

    /// The reply naming the budget that is spent.
    pub fn reply(&self, exceeded: Exceeded) -> Reply {
        let window = &self.window_text;
        let budget = match exceeded {
            Exceeded::Messages => format!("{} messages per {window}", self.messages),
            Exceeded::Recipients => format!("{} recipients per {window}", self.recipients),
            Exceeded::DistinctClients => format!(
                "{} distinct client networks per {window}",
                self.distinct_clients
            ),
            Exceeded::Transactions => format!("{} transactions at once", rate::MAX_RESERVATIONS),
        };
        let text = format!("Rate limit \"{}\" reached: {budget}", self.name);
        match (self.action, exceeded) {
            // Transactions end: too many at once is never a lasting refusal.
            (LimitAction::Defer, _) | (_, Exceeded::Transactions) => {
                Reply::new(450, "4.7.1", format!("{text}; try again later"))
            }
            (LimitAction::Reject, _) => Reply::new(550, "5.7.1", text),
        }
    }
}

/// A reservation the chain settles or releases once it has its answer.
#[derive(Debug)]
pub struct Count {
    limit: Arc<RateLimit>,
    key: RateKey,
    value: String,
    network: String,
    recipients: u32,
    tag: String,
    /// END-OF-MESSAGE: counted when accepted, released when refused. A
    /// RCPT that made its transaction's reservation: released when
    /// refused (nothing else of the transaction holds it yet).
    end_of_message: bool,
}

/// Recipients a message adds: `recipient_count`, at most
/// [`MAX_RECIPIENTS_PER_MESSAGE`] (a number too long for u64 too); 1 when
/// it is not a number (the message had a recipient).
fn recipients(count: &str) -> u32 {
    let count = count.trim();
    if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
        return 1;
    }
    let n = count.parse::<u64>().unwrap_or(u64::MAX);
    n.min(u64::from(MAX_RECIPIENTS_PER_MESSAGE)) as u32
}

/// The client's network, `unknown` when `client_address` holds no address.
fn network(req: &Request) -> String {
    req.client_ip().map_or_else(|| "unknown".into(), network_of)
}

/// The rule, for `Run::Limit`.
/// `check_rate_limit NAME`: refuses with the limit's reply once the key's
/// budget is spent (`450 4.7.1 Rate limit "NAME" reached: 200 messages per
/// 1h; try again later`, or `550 5.7.1` with `action = "reject"`).
pub async fn check_rate_limit(ctx: &mut Context<'_>, limit: &Arc<RateLimit>) -> Outcome {
    let req = ctx.request;
    let Some(value) = limit.key.value(req) else {
        ctx.note(|| format!("no {}: the limit does not apply", limit.key.name()));
        return Outcome::Dunno;
    };
    let key = RateKey::new(&limit.name, limit.key.name(), &value);
    let net = network(req);
    let Some(store) = ctx.state.store() else {
        ctx.note(|| "no store open (--test-request): not checked".into());
        return Outcome::Dunno;
    };
    let state = req.state();
    if state == ProtocolState::Data {
        // DATA adds no recipient: the RCPTs reserved what the message
        // needs, and END-OF-MESSAGE checks again. A probe here would count
        // one recipient too many (Postfix asks at DATA when a header waits).
        ctx.note(|| "DATA: held at RCPT, checked again at END-OF-MESSAGE".into());
        return Outcome::Dunno;
    }
    let now = unix_now();
    let p = limit.params(now);
    let mut tag = instance_tag(&req.instance);
    let answer = match state {
        ProtocolState::Rcpt => {
            let to = instance_tag(&req.recipient);
            store.rate_hold(key, &net, &tag, Hold::Rcpt(to), p).await
        }
        ProtocolState::EndOfMessage => {
            // Without an instance the message still needs a reservation
            // of its own to settle: a tag no other transaction has.
            if tag.is_empty() {
                tag = unique_tag();
            }
            let recipients = recipients(&req.recipient_count);
            ctx.counts.push(Count {
                limit: limit.clone(),
                key,
                value: value.clone(),
                network: net.clone(),
                recipients,
                tag: tag.clone(),
                end_of_message: true,
            });
            ctx.note(|| {
                format!(
                    "holds 1 message, {recipients} recipient(s) from {net}; counted once accepted"
                )
            });
            store
                .rate_hold(key, &net, &tag, Hold::Message(recipients), p)
                .await
        }
        _ => store.rate_check(key, &net, &tag, p).await,
    };
    match answer {
        Ok(rate::Check {
            exceeded: None,
            usage,
            created,
        }) => {
            ctx.note(|| describe(limit, &usage));
            if created && state == ProtocolState::Rcpt {
                ctx.counts.push(Count {
                    limit: limit.clone(),
                    key,
                    value,
                    network: net,
                    recipients: 0,
                    tag,
                    end_of_message: false,
                });
            }
            Outcome::Dunno
        }
        Ok(rate::Check {
            exceeded: Some(exceeded),
            usage,
            ..
        }) => {
            ctx.note(|| describe(limit, &usage));
            let slot = now / limit.window.as_secs().max(1);
            if ctx.state.rate_events.crossed(&limit.name, key, slot) {
                tracing::warn!(
                    "rate limit {:?}: {}={} reached its budget ({}), {}; client {}",
                    limit.name,
                    limit.key.name(),
                    Escaped(&value),
                    limit.reply(exceeded).text,
                    describe(limit, &usage),
                    Escaped(&req.client_address),
                );
            }
            Outcome::Reject(limit.reply(exceeded))
        }
        // No room for the key's record, or no turn at the store: the
        // message could not be counted, so it waits (never uncounted).
        Err(e @ (StoreError::Full(_) | StoreError::Busy(_))) => {
            ctx.note(|| format!("store: {e}"));
            Outcome::Reject(Reply::new(451, "4.3.0", "Temporary lookup failure"))
        }
        // After the data a broken store does not refuse the message: it is
        // only not counted (the settle fails too, logged and counted).
        Err(e) if state == ProtocolState::EndOfMessage => {
            ctx.note(|| format!("store failed: {e}"));
            Outcome::Dunno
        }
        Err(e) => {
            ctx.note(|| format!("store failed: {e}"));
            match limit.on_store_error {
                OnStoreError::Dunno => Outcome::Dunno,
                OnStoreError::Defer => {
                    Outcome::Reject(Reply::new(451, "4.3.0", "Temporary lookup failure"))
                }
            }
        }
    }
}

/// A tag for a message without an instance: unique to this process and
/// moment, so its reservation is its own.
fn unique_tag() -> String {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    instance_tag(&format!("\0rpol {} {at} {seq}", std::process::id()))
}

fn describe(limit: &RateLimit, usage: &Usage) -> String {
    let held = match usage.held_messages {
        0 => String::new(),
        n => format!(
            "; {n} transaction(s) under way hold {} recipient(s)",
            usage.held_recipients
        ),
    };
    format!(
        "{} message(s), {} recipient(s) in the last {} from {} network(s): {}{held}",
        usage.messages,
        usage.recipients,
        limit.window_text,
        usage.networks.len(),
        if usage.networks.is_empty() {
            "none".into()
        } else {
            usage.networks.join(" ")
        }
    )
}

/// Settles the reservations of a message the chain accepted: each
/// becomes the count. A failed call is logged and counted by the store and
/// changes nothing: the message is already accepted.
pub async fn commit(state: &State, counts: Vec<Count>, trace: Option<&mut Vec<String>>) {
    let Some(store) = state.store() else {
        return;
    };
    let mut lines = Vec::new();
    for c in counts.into_iter().filter(|c| c.end_of_message) {
        let p = c.limit.params(unix_now());
        let r = store
            .rate_settle(c.key, &c.network, c.recipients, &c.tag, p)
            .await;
        let who = format!("{}={}", c.limit.key.name(), Escaped(&c.value));
        lines.push(match r {
            Ok(counted) if counted.repeated => format!(
                "rate limit {:?}: {who}: instance counted before; {}",
                c.limit.name,
                describe(&c.limit, &counted.usage)
            ),
            Ok(counted) => format!(
                "rate limit {:?}: {who} counted; {}",
                c.limit.name,
                describe(&c.limit, &counted.usage)
            ),
            Err(e) => format!("rate limit {:?}: {who} not counted: {e}", c.limit.name),
        });
    }
    if let Some(trace) = trace {
        trace.extend(lines);
    }
}

/// Releases the reservations of a transaction the chain refused: at
/// END-OF-MESSAGE the transaction is over; at RCPT only one the refused
/// RCPT made (its transaction's first). A failed call is logged and
/// counted by the store; the reservation then lapses by itself.
pub async fn release(state: &State, counts: Vec<Count>, trace: Option<&mut Vec<String>>) {
    let Some(store) = state.store() else {
        return;
    };
    let mut lines = Vec::new();
    for c in counts {
        let p = c.limit.params(unix_now());
        let r = store.rate_release(c.key, &c.tag, p).await;
        let who = format!("{}={}", c.limit.key.name(), Escaped(&c.value));
        lines.push(match r {
            Ok(()) => format!("rate limit {:?}: {who}: reservation released", c.limit.name),
            Err(e) => format!("rate limit {:?}: {who}: not released: {e}", c.limit.name),
        });
    }
    if let Some(trace) = trace {
        trace.extend(lines);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipient_counts() {
        assert_eq!(recipients("3"), 3);
        assert_eq!(recipients(" 7 "), 7);
        assert_eq!(
            recipients("99999999999999999999999"),
            MAX_RECIPIENTS_PER_MESSAGE
        );
        assert_eq!(recipients(""), 1);
        assert_eq!(recipients("-5"), 1);
        assert_eq!(recipients("0"), 0);
    }

    #[test]
    fn key_values() {
        let req = |pairs: &[(&str, &str)]| Request::from_pairs(pairs.iter().copied());
        let r = req(&[
            ("sasl_username", "Alice@Example.COM"),
            ("sender", ""),
            ("client_address", "2001:db8:1:2:3::9"),
        ]);
        assert_eq!(
            KeyKind::SaslUsername.value(&r).as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(KeyKind::Sender.value(&r).as_deref(), Some("<>"));
        assert_eq!(
            KeyKind::ClientAddress.value(&r).as_deref(),
            Some("2001:db8:1:2::/64")
        );
        let r = req(&[("client_address", "::ffff:203.0.113.9")]);
        assert_eq!(KeyKind::SaslUsername.value(&r), None);
        assert_eq!(
            KeyKind::ClientAddress.value(&r).as_deref(),
            Some("203.0.113.9")
        );
    }

    #[test]
    fn replies_name_the_limit() {
        let mut limit = RateLimit {
            name: "per_login".into(),
            key: KeyKind::SaslUsername,
            messages: 200,
            recipients: 1000,
            distinct_clients: 5,
            window: Duration::from_secs(3600),
            window_text: "1h".into(),
            action: LimitAction::Defer,
            on_store_error: OnStoreError::Dunno,
        };
        assert_eq!(
            limit.reply(Exceeded::Messages).to_string(),
            Reply::new(
                450,
                "4.7.1",
                "Rate limit \"per_login\" reached: 200 messages per 1h; try again later"
            )
            .to_string()
        );
        limit.action = LimitAction::Reject;
        let r = limit.reply(Exceeded::DistinctClients);
        assert_eq!((r.code, r.dsn.as_str()), (550, "5.7.1"));
        assert_eq!(
            r.text,
            "Rate limit \"per_login\" reached: 5 distinct client networks per 1h"
        );
        // Too many transactions at once passes: deferred even so.
        let r = limit.reply(Exceeded::Transactions);
        assert_eq!((r.code, r.dsn.as_str()), (450, "4.7.1"));
        assert_eq!(
            r.text,
            "Rate limit \"per_login\" reached: 64 transactions at once; try again later"
        );
    }
}
