//! `[store]`: where greylisting records live, compiled into
//! [`StoreSettings`]. Part of the server settings, not of the policy: the
//! store is runtime state, opened once at start, and a change takes a
//! restart (the reload names it).

use super::values::{millis, secs};
use super::{Compiler, schema};
use crate::state::store::{Backend, StoreSettings};

/// Most records one `max_*` budget may allow: ~170 bytes each on disk,
/// so 17 GB.
pub const MAX_RECORDS: usize = 100_000_000;

/// Longest Redis key prefix: it is repeated in every key.
const MAX_PREFIX: usize = 64;

impl Compiler<'_> {
    pub(super) fn store(&mut self, s: Option<schema::StoreSection>) -> Option<StoreSettings> {
        let schema::StoreSection {
            backend,
            path,
            url,
            prefix,
            timeout,
            max_entries,
            max_triplets,
            max_unconfirmed_per_network,
            max_clients,
            max_rate_records,
        } = s?;
        let mut out = StoreSettings::default();
        let redis = match backend.as_ref().map(|b| b.get_ref().as_str()) {
            None | Some("embedded") => false,
            Some("redis") => true,
            Some(_) => {
                let b = backend.as_ref().map_or(0..0, |b| b.span());
                self.error(b, "store.backend", "expected \"embedded\" or \"redis\"");
                false
            }
        };
        match (redis, path, url) {
            (false, path, url) => {
                if let Some(u) = url {
                    self.error(u.span(), "store.url", "only with backend = \"redis\"");
                }
                if let Some(p) = path {
                    if p.get_ref().trim().is_empty() {
                        self.error(p.span(), "store.path", "must not be empty");
                    } else {
                        out.backend = Backend::Embedded {
                            path: self.base.join(p.get_ref()),
                        };
                    }
                }
            }
            (true, path, url) => {
                if let Some(p) = path {
                    self.error(p.span(), "store.path", "only with backend = \"embedded\"");
                }
                match url {
                    Some(u)
                        if u.get_ref().starts_with("redis://")
                            || u.get_ref().starts_with("rediss://")
                            || u.get_ref().starts_with("redis+unix://")
                            || u.get_ref().starts_with("unix://") =>
                    {
                        out.backend = Backend::Redis {
                            url: u.into_inner(),
                        }
                    }
                    Some(u) => self.error(
                        u.span(),
                        "store.url",
                        "expected redis://HOST[:PORT][/DB] or redis+unix:///PATH",
                    ),
                    None => {
                        let b = backend.as_ref().map_or(0..0, |b| b.span());
                        self.error(b, "store.url", "backend = \"redis\" needs a url");
                    }
                }
            }
        }
        if let Some(p) = prefix {
            let v = p.get_ref();
            if v.len() > MAX_PREFIX || !v.bytes().all(|b| b.is_ascii_graphic()) {
                self.error(
                    p.span(),
                    "store.prefix",
                    format!("must be at most {MAX_PREFIX} printable characters without spaces"),
                );
            } else {
                out.prefix = v.clone();
            }
        }
        self.duration(
            timeout,
            "store.timeout",
            millis(10)..=secs(60),
            &mut out.timeout,
        );
        if let Some(m) = max_entries {
            self.error(
                m.span(),
                "store.max_entries",
                "replaced by max_triplets, max_unconfirmed_per_network, max_clients and \
                 max_rate_records: each kind of record has its own budget",
            );
        }
        let l = &mut out.limits;
        for (value, key, slot) in [
            (max_triplets, "store.max_triplets", &mut l.triplets),
            (
                max_unconfirmed_per_network,
                "store.max_unconfirmed_per_network",
                &mut l.unconfirmed_per_network,
            ),
            (max_clients, "store.max_clients", &mut l.clients),
            (
                max_rate_records,
                "store.max_rate_records",
                &mut l.rate_records,
            ),
        ] {
            let mut n = *slot as usize;
            self.count(value, key, 1..=MAX_RECORDS, &mut n);
            *slot = n as u64;
        }
        Some(out)
    }
}
