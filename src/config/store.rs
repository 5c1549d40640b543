//! `[store]`: where greylisting records live, compiled into
//! [`StoreSettings`]. Part of the server settings, not of the policy: the
//! store is runtime state, opened once at start, and a change takes a
//! restart (the reload names it).

use super::values::{millis, secs};
use super::{Compiler, schema};
use crate::state::store::{Backend, StoreSettings, redis_connect};

/// Most records one `max_*` budget may allow: ~170 bytes each on disk,
/// so 17 GB.
pub const MAX_RECORDS: usize = 100_000_000;

/// Longest Redis key prefix: it is repeated in every key.
const MAX_PREFIX: usize = 64;

/// The line a PEM certificate starts with.
const PEM_CERT: &[u8] = b"-----BEGIN CERTIFICATE-----";

/// Whether a Redis url connects with TLS.
fn is_tls(url: &str) -> bool {
    url.starts_with("rediss://") || url.starts_with("rediss+sentinel://")
}

/// What `[store] url` may be; the error says what is wrong with it.
fn check_url(url: &str) -> Result<(), String> {
    const FORMS: &str = "expected redis://HOST[:PORT][/DB], rediss://HOST[:PORT][/DB], \
         redis+unix:///PATH or redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB]";
    if redis_connect::is_sentinel(url) {
        return redis_connect::parse_sentinel(url).map(|_| ());
    }
    if !["redis://", "rediss://", "redis+unix://", "unix://"]
        .iter()
        .any(|s| url.starts_with(s))
    {
        return Err(FORMS.into());
    }
    if url.ends_with("#insecure") {
        return Err(
            "#insecure turns off the TLS certificate check: give the server's CA as \
             tls_ca instead"
                .into(),
        );
    }
    // redis's own reading, as at start (its errors name no part of the url).
    redis::Client::open(url)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

impl Compiler<'_> {
    pub(super) fn store(&mut self, s: Option<schema::StoreSection>) -> Option<StoreSettings> {
        let schema::StoreSection {
            backend,
            path,
            url,
            tls_ca,
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
                    Some(u) => {
                        if let Err(e) = check_url(u.get_ref()) {
                            self.error(u.span(), "store.url", e);
                        } else {
                            out.backend = Backend::Redis {
                                url: u.into_inner(),
                            }
                        }
                    }
                    None => {
                        let b = backend.as_ref().map_or(0..0, |b| b.span());
                        self.error(b, "store.url", "backend = \"redis\" needs a url");
                    }
                }
            }
        }
        if let Some(ca) = tls_ca {
            let tls = matches!(&out.backend, Backend::Redis { url } if is_tls(url));
            if !tls {
                self.error(
                    ca.span(),
                    "store.tls_ca",
                    "only with a TLS url (rediss:// or rediss+sentinel://)",
                );
            } else {
                let path = self.base.join(ca.get_ref());
                match std::fs::read(&path) {
                    Err(e) => self.error(
                        ca.span(),
                        "store.tls_ca",
                        format!("{}: {e}", path.display()),
                    ),
                    Ok(pem) if !pem.windows(PEM_CERT.len()).any(|w| w == PEM_CERT) => self.error(
                        ca.span(),
                        "store.tls_ca",
                        format!("{}: no PEM certificate in it", path.display()),
                    ),
                    Ok(_) => out.tls_ca = Some(path),
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
