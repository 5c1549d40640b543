//! viaspf's `Lookup` over rpol's one resolver, so SPF queries share the
//! cache and its single-flight behaviour with every other rule (viaspf's
//! own hickory feature is not used: it would pin another hickory and
//! another cache).
//!
//! Mapping: records -> `Ok`; NXDOMAIN and NODATA -> `NoRecords` (RFC 7208
//! 4.4: both count as "no records", and as void lookups); a timeout ->
//! `Timeout`; any other temporary failure -> `Dns` (temperror).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use viaspf::lookup::{Lookup, LookupError, LookupResult, Name};

use crate::common::lock;
use crate::dns::{self, Answer, Outcome, RecordKind, Resolver};

/// A `Lookup` that also remembers each lookup it made, for traces.
pub struct SpfLookup<'a> {
    resolver: &'a Resolver,
    log: Option<Mutex<Vec<String>>>,
    /// Some TXT record read held an `l` or `s` macro (see
    /// [`SpfLookup::saw_local_part_macro`]).
    local_part_macro: AtomicBool,
}

impl<'a> SpfLookup<'a> {
    /// `record`: keep a line per lookup (for `--test-request`).
    pub fn new(resolver: &'a Resolver, record: bool) -> SpfLookup<'a> {
        SpfLookup {
            resolver,
            log: record.then(|| Mutex::new(Vec::new())),
            local_part_macro: AtomicBool::new(false),
        }
    }

    /// Whether a TXT record read so far (an SPF record, or an explanation)
    /// holds a `%{l...}` or `%{s...}` macro, in any case. Every macro an
    /// evaluation expands comes from such a record (its terms, domain-specs
    /// and `exp=`, and the explanation text), and a TXT record's strings
    /// reach here joined, so a result that did not see one cannot depend
    /// on the local part. Records read but not expanded count too: the
    /// answer errs towards "depends", which only costs a cache entry.
    pub fn saw_local_part_macro(&self) -> bool {
        self.local_part_macro.load(Ordering::Relaxed)
    }

    /// The lookups made so far, one line each.
    pub fn take_log(&self) -> Vec<String> {
        match &self.log {
            Some(log) => std::mem::take(&mut *lock(log)),
            None => Vec::new(),
        }
    }

    async fn query(&self, name: &str, kind: RecordKind) -> LookupResult<std::sync::Arc<Answer>> {
        let lookup = self.resolver.lookup(name, kind).await;
        self.remember(&lookup);
        to_result(lookup.outcome)
    }

    fn remember(&self, lookup: &dns::Lookup) {
        if let Some(log) = &self.log {
            let mut line = lookup.describe();
            if !lookup.from_cache {
                line.push_str(" (queried)");
            }
            lock(log).push(line);
        }
    }
}

fn to_result(outcome: Outcome) -> LookupResult<std::sync::Arc<Answer>> {
    match outcome {
        Outcome::Found(answer) => Ok(answer),
        Outcome::NxDomain | Outcome::NoData => Err(LookupError::NoRecords),
        Outcome::TempFail(why) if why.contains("timeout") || why.contains("timed out") => {
            Err(LookupError::Timeout)
        }
        Outcome::TempFail(why) => Err(LookupError::Dns(Some(why.into()))),
    }
}

/// `%{l` or `%{s` (RFC 7208 7.1: macro letters in either case). Every
/// record of every evaluation is scanned, so by `%` with memchr.
fn mentions_local_part(text: &[u8]) -> bool {
    memchr::memchr_iter(b'%', text).any(|i| {
        text.get(i + 1) == Some(&b'{') && matches!(text.get(i + 2), Some(b'l' | b'L' | b's' | b'S'))
    })
}

fn wrong_type() -> LookupError {
    LookupError::Dns(Some("answer of an unexpected record type".into()))
}

fn to_name(text: &str) -> LookupResult<Name> {
    Name::new(text).map_err(|e| LookupError::Dns(Some(Box::new(e))))
}

#[async_trait]
impl Lookup for SpfLookup<'_> {
    async fn lookup_a<'lookup, 'n>(&'lookup self, name: &'n Name) -> LookupResult<Vec<Ipv4Addr>> {
        match &*self.query(name.as_str(), RecordKind::A).await? {
            Answer::A(v) => Ok(v.clone()),
            _ => Err(wrong_type()),
        }
    }

    async fn lookup_aaaa<'lookup, 'n>(
        &'lookup self,
        name: &'n Name,
    ) -> LookupResult<Vec<Ipv6Addr>> {
        match &*self.query(name.as_str(), RecordKind::Aaaa).await? {
            Answer::Aaaa(v) => Ok(v.clone()),
            _ => Err(wrong_type()),
        }
    }

    /// MX hosts in order of preference. The null MX "." (RFC 7505) names
    /// no host, so it contributes none.
    async fn lookup_mx<'lookup, 'n>(&'lookup self, name: &'n Name) -> LookupResult<Vec<Name>> {
        match &*self.query(name.as_str(), RecordKind::Mx).await? {
            Answer::Mx(v) => {
                let mut mx = v.clone();
                mx.sort_by_key(|m| m.preference);
                mx.iter()
                    .filter(|m| !m.exchange.is_empty())
                    .map(|m| to_name(&m.exchange))
                    .collect()
            }
            _ => Err(wrong_type()),
        }
    }

    /// One string per TXT record, its character-strings concatenated
    /// (RFC 7208 3.3); bytes that are not UTF-8 become U+FFFD, which the
    /// SPF record parser then rejects as it should.
    async fn lookup_txt<'lookup, 'n>(&'lookup self, name: &'n Name) -> LookupResult<Vec<String>> {
        match &*self.query(name.as_str(), RecordKind::Txt).await? {
            Answer::Txt(v) => {
                if v.iter().any(|t| mentions_local_part(t)) {
                    self.local_part_macro.store(true, Ordering::Relaxed);
                }
                Ok(v.iter()
                    .map(|t| String::from_utf8_lossy(t).into_owned())
                    .collect())
            }
            _ => Err(wrong_type()),
        }
    }

    async fn lookup_ptr<'lookup>(&'lookup self, ip: IpAddr) -> LookupResult<Vec<Name>> {
        let lookup = self.resolver.lookup_ptr(ip).await;
        self.remember(&lookup);
        match &*to_result(lookup.outcome)? {
            // Names that are not valid domain names are skipped, as an
            // unusable PTR name cannot validate anything.
            Answer::Ptr(v) => Ok(v.iter().filter_map(|n| Name::new(n).ok()).collect()),
            _ => Err(wrong_type()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mentions_local_part;

    #[test]
    fn local_part_macros_in_either_case() {
        for text in [
            "v=spf1 exists:%{l}.x -all",
            "exists:%{S}._s.%{d}",
            "%{L1r}",
            "%{s}",
            "%%{l}",
            "x%{%{S}",
        ] {
            assert!(mentions_local_part(text.as_bytes()), "{text}");
        }
        for text in [
            "v=spf1 a mx -all",
            "exists:%{d}.%{i}",
            "%{h} %{o}",
            "%{",
            "%l",
            "%",
            "%{ l}",
            "%%{d}",
        ] {
            assert!(!mentions_local_part(text.as_bytes()), "{text}");
        }
    }
}
