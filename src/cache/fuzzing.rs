//! Entry points for the fuzz targets in `fuzz/`, compiled only with `--cfg fuzzing` (as
//! `cargo fuzz` builds): the cache's storing decision and freshness on arbitrary request and
//! response heads, which are crate-private. Not part of the API.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderName, request, response};

use super::{
    clock::Wall,
    freshness::Freshness,
    policy::{CacheSettings, Mode},
    storable::decide as decide_storing,
    store::Entry,
};

/// How the layer is configured for one decision.
#[derive(Debug, Clone, Copy, Default)]
pub struct Settings {
    /// Honour `CDN-Cache-Control` (RFC 9213) over `Cache-Control`.
    pub cdn: bool,
    /// Heuristic freshness for responses with `Last-Modified` and no lifetime (10 %).
    pub heuristic: bool,
    /// Store answers to requests with credentials.
    pub allow_authorized: bool,
    /// Stale-while-revalidate and stale-if-error defaults, in seconds.
    pub stale_defaults: u32,
    /// Every storable 2xx answer fresh for this many seconds, whatever its headers say.
    pub forced_ttl: Option<u32>,
}

/// A response the layer decided to store, as it stored it.
#[derive(Debug)]
pub struct Decided {
    /// The freshness lifetime left when stored (`fresh_until - response_time`).
    pub ttl: Duration,
    /// How long the entry is kept.
    pub keep_for: Duration,
    /// How long it may be served stale while a refresh runs.
    pub stale_while_revalidate: Duration,
    /// How long it may be served stale when the inner service fails.
    pub stale_if_error: Duration,
    /// The `Age` it was stored with, in seconds.
    pub initial_age: u64,
    /// The entry as a store keeps it.
    pub entry: Entry,
    /// Whether the entry is fresh for the request it answered, at the time it was stored.
    pub fresh_for_its_request: bool,
    /// Whether the entry answers its own request at all (fresh or stale), then.
    pub usable_for_its_request: bool,
}

/// The layer's decision for `res` answering `req` at `now`: stored (and how), or the reason
/// it is not.
///
/// # Errors
///
/// The reason the response is not stored, as the `bulwark_cache_not_stored_total` label.
pub fn decide(
    settings: Settings,
    req: &request::Parts,
    res: &response::Parts,
    body: Bytes,
    now: SystemTime,
) -> Result<Decided, &'static str> {
    let mode = settings.forced_ttl.map_or(Mode::Policy, |s| {
        Mode::Forced(Duration::from_secs(u64::from(s)))
    });
    let mut cfg = CacheSettings::new(mode);
    if settings.cdn {
        cfg.target = Some(HeaderName::from_static("cdn-cache-control"));
    }
    if settings.heuristic {
        cfg.heuristic = 0.1;
    }
    cfg.allow_authorized = settings.allow_authorized;
    cfg.stale_while_revalidate = Duration::from_secs(u64::from(settings.stale_defaults));
    cfg.stale_if_error = cfg.stale_while_revalidate;
    let decision = decide_storing(&cfg, req, res, now).map_err(|n| n.as_str())?;
    let stored = decision.into_stored(res, body);
    let at = Wall::of(now);
    let freshness = stored.freshness(&cfg, req, at);
    Ok(Decided {
        ttl: Duration::from_nanos(stored.fresh_until.nanos_since(stored.response_time)),
        keep_for: stored.keep_for,
        stale_while_revalidate: stored.stale_while_revalidate,
        stale_if_error: stored.stale_if_error,
        initial_age: stored.initial_age,
        fresh_for_its_request: freshness == Freshness::Fresh,
        usable_for_its_request: freshness != Freshness::Unusable,
        entry: Entry::response(stored),
    })
}

/// The longest lifetime the layer gives any response (a year).
pub const MAX_LIFETIME: Duration = super::directives::MAX_LIFETIME;
