//! Storability and freshness: forced-TTL mode, RFC 9111 policy mode (through
//! `http-cache-semantics`), stale-while-revalidate and stale-if-error on top, `Vary`, targeted
//! cache control (RFC 9213), and the never-store rules.

use std::{
    borrow::Cow,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header, request, response};
use http_cache_semantics::{BeforeRequest, CacheOptions, CachePolicy, RequestLike};

use super::store::StoredParts;
use crate::{
    clock::{Monotonic, nanos},
    marker::StandIn,
};

/// How freshness is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Every storable 2xx answer is fresh for this long, whatever its headers say.
    Forced(Duration),
    /// RFC 9111 shared-cache rules from the response's headers.
    Policy,
}

/// The layer's settings, shared by all its services.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) name: HeaderValue,
    pub(crate) mode: Mode,
    pub(crate) heuristic: f32,
    pub(crate) target: Option<HeaderName>,
    pub(crate) allow_authorized: bool,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    pub(crate) validator_retention: Duration,
    pub(crate) max_body: usize,
    pub(crate) coalesce_wait: Duration,
}

impl Config {
    pub(crate) fn new(mode: Mode) -> Self {
        Self {
            name: HeaderValue::from_static("bulwark"),
            mode,
            heuristic: 0.0,
            target: None,
            allow_authorized: false,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            validator_retention: Duration::from_secs(300),
            max_body: 1024 * 1024,
            coalesce_wait: Duration::from_secs(10),
        }
    }

    fn options(&self) -> CacheOptions {
        CacheOptions {
            shared: true,
            cache_heuristic: self.heuristic,
            immutable_min_time_to_live: Duration::ZERO,
            ignore_cargo_cult: false,
        }
    }
}

/// The cache's clock: wall-clock time that follows tokio's clock, so tests can pause and advance
/// it (`tokio::time::pause`), while production sees ordinary `SystemTime`.
///
/// It is the wall time at a base instant plus tokio's time since then. While tokio's clock
/// follows the real one (always, outside a paused runtime), the wall time at the base is read
/// again from the system once a second, so a process that started before its clock was set
/// (NTP not yet synchronised) or whose clock is stepped later follows the system within a
/// second, instead of keeping the error for its whole life: entries it writes to a shared
/// store carry absolute times. Once tokio's clock is seen running apart from the real one (a
/// test advanced it), the base is left alone, so virtual time stays continuous.
#[derive(Debug)]
pub(crate) struct Clock {
    base: Monotonic,
    real_base: std::time::Instant,
    /// The wall time at `base`, in nanoseconds since the Unix epoch.
    wall_at_base: AtomicU64,
    /// Nanoseconds of tokio time since `base` at which to read the system's clock again.
    next_sync: AtomicU64,
    /// The system's clock ([`system_nanos`]; a test's own in tests).
    system: fn() -> u64,
}

impl Clock {
    /// How often the wall time is read again.
    const SYNC_EVERY: u64 = 1_000_000_000;
    /// How far tokio's clock may be from the real one for it to count as the real one: far
    /// above the time between two clock reads, far below any step a test makes.
    const REAL_WITHIN: u64 = 20_000_000;

    pub(crate) fn new() -> Self {
        Self::with_system(system_nanos)
    }

    fn with_system(system: fn() -> u64) -> Self {
        let base = Monotonic::start();
        let real_base = std::time::Instant::now();
        Self {
            base,
            real_base,
            wall_at_base: AtomicU64::new(system()),
            next_sync: AtomicU64::new(Self::SYNC_EVERY),
            system,
        }
    }

    #[inline]
    pub(crate) fn now(&self) -> Wall {
        let since = self.base.nanos();
        if since >= self.next_sync.load(Ordering::Relaxed) {
            self.sync(since);
        }
        Wall(
            self.wall_at_base
                .load(Ordering::Relaxed)
                .saturating_add(since),
        )
    }

    /// Reads the system's clock again if tokio's clock is the real one. Two threads may both
    /// get here; each stores a whole value, so either result is right.
    #[cold]
    fn sync(&self, since: u64) {
        self.next_sync
            .store(since.saturating_add(Self::SYNC_EVERY), Ordering::Relaxed);
        let real = nanos(self.real_base.elapsed());
        if real.abs_diff(since) < Self::REAL_WITHIN {
            let wall = (self.system)().saturating_sub(since);
            self.wall_at_base.store(wall, Ordering::Relaxed);
        }
    }
}

/// A wall-clock time in nanoseconds since the Unix epoch (0 before it, saturating far after
/// it): what the clock gives and entries keep, so that a hit's freshness, `Age` and TTL are
/// integer arithmetic. (A `SystemTime` difference normalises two `timespec`s and returns a
/// `Result`: with the addition that made `now`, about 30 ns of every hit.) Converted to a
/// `SystemTime` only for RFC 9111 policy calls, on the policy mode's paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Wall(u64);

impl Wall {
    /// The time `t` is.
    pub(crate) fn of(t: SystemTime) -> Self {
        Self(t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, nanos))
    }

    /// The time `d` after the Unix epoch.
    pub(crate) fn from_epoch(d: Duration) -> Self {
        Self(nanos(d))
    }

    /// How long after the Unix epoch this is.
    pub(crate) fn since_epoch(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// This time as the standard library's type (for RFC 9111 policy calls).
    pub(crate) fn system(self) -> SystemTime {
        SystemTime::UNIX_EPOCH + self.since_epoch()
    }

    /// The time `d` later.
    pub(crate) fn after(self, d: Duration) -> Self {
        Self(self.0.saturating_add(nanos(d)))
    }

    /// Nanoseconds from `earlier` to this time; zero if `earlier` is later.
    fn nanos_since(self, earlier: Self) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// The system's wall time in nanoseconds since the Unix epoch (0 before it).
pub(crate) fn system_nanos() -> u64 {
    Wall::of(SystemTime::now()).0
}

/// The `Cache-Control` directives the layer itself looks at.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Directives {
    pub(crate) no_store: bool,
    pub(crate) no_cache: bool,
    pub(crate) private: bool,
    pub(crate) public: bool,
    pub(crate) s_maxage: bool,
    pub(crate) max_age: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    pub(crate) only_if_cached: bool,
    pub(crate) stale_while_revalidate: Option<u64>,
    pub(crate) stale_if_error: Option<u64>,
}

/// Splits a `Cache-Control` value into `(name, argument, raw text)` directives, honouring quoted
/// arguments (`no-cache="a, b"` is one directive).
fn split_directives(value: &str) -> Vec<(&str, Option<&str>, &str)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let bytes = value.as_bytes();
    for i in 0..=bytes.len() {
        let end = i == bytes.len();
        if !end && bytes[i] == b'"' {
            quoted = !quoted;
        }
        if end || (bytes[i] == b',' && !quoted) {
            let raw = value[start..i].trim();
            start = i + 1;
            if raw.is_empty() {
                continue;
            }
            let (name, arg) = match raw.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (raw, None),
            };
            out.push((name, arg, raw));
        }
    }
    out
}

impl Directives {
    pub(crate) fn parse<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> Self {
        let mut d = Self::default();
        for value in values {
            let Ok(value) = value.to_str() else { continue };
            for (name, arg, _) in split_directives(value) {
                let secs = || arg.and_then(|a| a.parse::<u64>().ok());
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => d.no_store = true,
                    // The qualified forms (`no-cache="field"`, `private="field"`) only keep the
                    // listed fields out of the cache (see `effective_headers`).
                    "no-cache" if arg.is_none() => d.no_cache = true,
                    "private" if arg.is_none() => d.private = true,
                    "public" => d.public = true,
                    "s-maxage" => d.s_maxage = true,
                    "max-age" => d.max_age = true,
                    "must-revalidate" => d.must_revalidate = true,
                    "proxy-revalidate" => d.proxy_revalidate = true,
                    "only-if-cached" => d.only_if_cached = true,
                    "stale-while-revalidate" => d.stale_while_revalidate = secs(),
                    "stale-if-error" => d.stale_if_error = secs(),
                    _ => {}
                }
            }
        }
        d
    }

    /// `public`, `s-maxage` or `must-revalidate`: the response may be stored for, and served to,
    /// requests with `Authorization` (RFC 9111 section 3.5).
    fn allows_authorized(&self) -> bool {
        self.public || self.s_maxage || self.must_revalidate
    }
}

/// The largest `Age` a cache reports (RFC 9111 section 5.1): larger or unparsable-but-numeric
/// values are replaced by it before the policy sees them.
const MAX_AGE_VALUE: u64 = 2_147_483_648;
/// The longest any entry is kept or considered fresh, whatever its headers say: keeps time
/// arithmetic far from overflow and stores' expiry values sane.
const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// The response headers that decide caching: with targeted cache control (RFC 9213), the target
/// field's value stands in for `Cache-Control`, and `Expires` and `Pragma` are ignored. An
/// `Age` beyond 2^31 seconds is capped.
fn effective_headers<'a>(
    target: Option<&HeaderName>,
    headers: &'a HeaderMap,
) -> Cow<'a, HeaderMap> {
    let mut out = Cow::Borrowed(headers);
    if let Some(target) = target.filter(|t| headers.contains_key(*t)) {
        let h = out.to_mut();
        h.remove(header::CACHE_CONTROL);
        h.remove(header::EXPIRES);
        h.remove(header::PRAGMA);
        for v in headers.get_all(target) {
            h.append(header::CACHE_CONTROL, v.clone());
        }
    }
    // Qualified `no-cache="a, b"` and `private="a"` (RFC 9111 sections 5.2.2.4 and 5.2.2.7):
    // the response may be stored without the listed fields, so the policy sees the directive
    // removed and `omitted_fields` lists the fields to drop from the stored copy.
    let qualified = out
        .get_all(header::CACHE_CONTROL)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| !qualified_fields(v).is_empty()));
    if qualified {
        let values: Vec<String> = out
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| {
                split_directives(v)
                    .into_iter()
                    .filter(|(n, a, _)| {
                        !(a.is_some()
                            && (n.eq_ignore_ascii_case("no-cache")
                                || n.eq_ignore_ascii_case("private")))
                    })
                    .map(|(_, _, raw)| raw)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .collect();
        let h = out.to_mut();
        h.remove(header::CACHE_CONTROL);
        for v in values.into_iter().filter(|v| !v.is_empty()) {
            if let Ok(v) = HeaderValue::try_from(v) {
                h.append(header::CACHE_CONTROL, v);
            }
        }
    }
    // Directive names are case-insensitive (RFC 9111 section 5.2), but the policy library
    // looks them up as written: `No-Cache` would be ignored. Lowercased whole: the arguments
    // that matter (numbers, field names) are case-insensitive too.
    let upper = out
        .get_all(header::CACHE_CONTROL)
        .iter()
        .any(|v| v.as_bytes().iter().any(u8::is_ascii_uppercase));
    if upper {
        let values: Vec<HeaderValue> = out
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| HeaderValue::from_bytes(&v.as_bytes().to_ascii_lowercase()).ok())
            .collect();
        let h = out.to_mut();
        h.remove(header::CACHE_CONTROL);
        for v in values {
            h.append(header::CACHE_CONTROL, v);
        }
    }
    match headers.get(header::AGE).map(|v| age_value(v.as_bytes())) {
        None | Some(Age::Valid) => {}
        Some(Age::TooBig) => {
            out.to_mut()
                .insert(header::AGE, HeaderValue::from(MAX_AGE_VALUE));
        }
        // Not `1*DIGIT` (RFC 9111 section 5.1), e.g. `+5`, which the policy library would
        // still parse (and overflow on, if huge): ignored, as the RFC asks.
        Some(Age::Invalid) => {
            out.to_mut().remove(header::AGE);
        }
    }
    out
}

enum Age {
    Valid,
    TooBig,
    Invalid,
}

/// How an `Age` value reads: digits only (surrounding spaces allowed), at most 2^31.
fn age_value(v: &[u8]) -> Age {
    let v = v.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Age::Invalid;
    }
    // Digits only, so UTF-8; too many digits fail to parse as u64.
    match std::str::from_utf8(v)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(n) if n <= MAX_AGE_VALUE => Age::Valid,
        _ => Age::TooBig,
    }
}

/// The fields listed by qualified `no-cache="..."` and `private="..."` directives.
fn qualified_fields(value: &str) -> Vec<HeaderName> {
    split_directives(value)
        .into_iter()
        .filter(|(n, _, _)| n.eq_ignore_ascii_case("no-cache") || n.eq_ignore_ascii_case("private"))
        .filter_map(|(_, a, _)| a)
        .flat_map(|a| a.split(','))
        .filter_map(|f| HeaderName::from_bytes(f.trim().as_bytes()).ok())
        .collect()
}

/// The status the RFC 9111 policy evaluates. The policy library only stores the statuses it
/// lists as understood; any other final status is storable with explicit freshness
/// (RFC 9111 section 3), so it is evaluated as a `200` when the response has `max-age`,
/// `s-maxage` or `Expires`.
fn policy_status(status: StatusCode, headers: &HeaderMap, d: &Directives) -> StatusCode {
    const UNDERSTOOD: &[u16] = &[
        200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501,
    ];
    let s = status.as_u16();
    if UNDERSTOOD.contains(&s) || s < 200 || s == 206 || s == 304 {
        return status;
    }
    if d.max_age || d.s_maxage || headers.contains_key(header::EXPIRES) {
        StatusCode::OK
    } else {
        status
    }
}

/// The header names a response varies on, or `None` for `Vary: *`.
pub(crate) fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for v in headers.get_all(header::VARY) {
        let Ok(v) = v.to_str() else { continue };
        for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Some(names)
}

/// The request's values of the `Vary` headers, as one string that identifies its variant. The
/// values of credential headers (`Authorization`, `Cookie`, API keys: see
/// [`is_secret_header`](crate::redact::is_secret_header)) are replaced by their digest
/// ([`secret_digest`]): the key becomes a store key name (a Redis key anyone with `SCAN` or
/// `MONITOR` reads) and may be logged.
pub(crate) fn vary_key(names: &[HeaderName], headers: &HeaderMap) -> String {
    let mut key = String::new();
    for name in names {
        key.push('\u{1}');
        let mut values = headers.get_all(name).iter().peekable();
        if values.peek().is_none() {
            key.push('\u{2}');
            continue;
        }
        if crate::redact::is_secret_header(name) {
            key.push_str(&secret_digest(values));
            continue;
        }
        for (i, v) in values.enumerate() {
            if i > 0 {
                key.push_str(", ");
            }
            key.push_str(&String::from_utf8_lossy(v.as_bytes()));
        }
    }
    key
}

/// What stands for a credential header's values in cache keys and stored requests:
/// `sha256:` and the first 16 bytes of the SHA-256 of the values, in hex. Stable across
/// processes (instances sharing a store must agree on keys), and long enough that two users'
/// credentials never name the same variant.
fn secret_digest<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> String {
    let mut h = crate::digest::Digester::new(b"bulwark cache vary v1");
    for v in values {
        h.field(v.as_bytes());
    }
    format!("sha256:{}", crate::digest::Hex(&h.finish()[..16]))
}

/// Whether a request is "restricted": it carries credentials (`Authorization`, `Cookie`) and the
/// layer was not told to cache such requests.
/// Whether a request has none of the fields the hit path looks at (`Range`, `Authorization`,
/// `Cookie`, `Cache-Control`, `Pragma`, `If-None-Match`, `If-Modified-Since`), found in one pass
/// over its few fields instead of a lookup (a hash) per name. Requests with many fields are not
/// scanned: `false` only means "look each up".
pub(crate) fn plain(headers: &HeaderMap) -> bool {
    headers.len() <= 16
        && headers.keys().all(|n| {
            n != header::RANGE
                && n != header::AUTHORIZATION
                && n != header::COOKIE
                && n != header::CACHE_CONTROL
                && n != header::PRAGMA
                && n != header::IF_NONE_MATCH
                && n != header::IF_MODIFIED_SINCE
        })
}

pub(crate) fn is_restricted(cfg: &Config, headers: &HeaderMap) -> bool {
    !cfg.allow_authorized
        && (headers.contains_key(header::AUTHORIZATION) || headers.contains_key(header::COOKIE))
}

/// A response the layer may store, and everything needed to serve it later.
pub(crate) struct Stored {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) req: StoredParts,
    /// The RFC 9111 policy (policy mode). Entries read back from bytes rebuild it on use.
    pub(crate) policy: Option<Box<CachePolicy>>,
    pub(crate) policy_mode: bool,
    pub(crate) response_time: Wall,
    /// The `Age` the response arrived with, in seconds (read once, not on every hit).
    pub(crate) initial_age: u64,
    pub(crate) fresh_until: Wall,
    pub(crate) keep_for: Duration,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    pub(crate) allows_authorized: bool,
    pub(crate) vary: Vec<HeaderName>,
    pub(crate) vary_key: String,
    /// The headers of the last fresh hit served from this entry (with `Age` and `Cache-Status`):
    /// hits in the same second (the values change once a second) clone them instead of
    /// formatting both values and inserting them again.
    pub(crate) hit_values: HitMemo,
}

/// The last value made, with what it was made for: a value that repeats (the headers of hits
/// within one second, the `Cache-Status` of answers with one status) is cloned instead of made
/// again. Lock-free; replaced only when the next one is for something else.
pub(crate) struct LastValue<K, V>(arc_swap::ArcSwapOption<(K, V)>);

impl<K, V> Default for LastValue<K, V> {
    fn default() -> Self {
        Self(arc_swap::ArcSwapOption::empty())
    }
}

impl<K, V: Clone> LastValue<K, V> {
    /// The last value if `matches` says it was made for this, else the one `make` returns
    /// (with what it is for), kept for the next call.
    pub(crate) fn get_or_make(
        &self,
        matches: impl FnOnce(&K) -> bool,
        make: impl FnOnce() -> (K, V),
    ) -> V {
        if let Some(last) = &*self.0.load() {
            if matches(&last.0) {
                return last.1.clone();
            }
        }
        let (key, value) = make();
        self.0
            .store(Some(std::sync::Arc::new((key, value.clone()))));
        value
    }
}

/// The headers a fresh hit was last served with (by cache name, `Age` and TTL); see
/// [`Stored::hit_values`].
#[derive(Default)]
pub(crate) struct HitMemo(LastValue<(Box<str>, u64, i64), HeaderMap>);

impl HitMemo {
    /// The headers of a fresh hit by cache `cache` with this `age` and `ttl` (the stored ones,
    /// `Age` and `Cache-Status`), made by `make` unless the last hit had the same.
    pub(crate) fn headers(
        &self,
        cache: &str,
        age: u64,
        ttl: i64,
        make: impl FnOnce() -> HeaderMap,
    ) -> HeaderMap {
        self.0.get_or_make(
            |(c, a, t)| *a == age && *t == ttl && **c == *cache,
            || ((cache.into(), age, ttl), make()),
        )
    }
}

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotStored {
    Method,
    Status,
    Marked,
    SetCookie,
    VaryStar,
    Directive,
    Credentials,
    NoFreshness,
    Stream,
}

/// Whether a `Content-Type` is `text/event-stream` (any case, any parameters).
fn is_event_stream(v: &[u8]) -> bool {
    let essence = v.split(|&b| b == b';').next().unwrap_or_default();
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(b"text/event-stream")
}

impl NotStored {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Method => "method",
            Self::Status => "status",
            Self::Marked => "bulwark-answer",
            Self::SetCookie => "set-cookie",
            Self::VaryStar => "vary-star",
            Self::Directive => "directive",
            Self::Credentials => "credentials",
            Self::NoFreshness => "no-freshness",
            Self::Stream => "event-stream",
        }
    }
}

/// The decision to store a response, made from its head before its body is read.
pub(crate) struct Decision {
    policy: Option<Box<CachePolicy>>,
    req: StoredParts,
    response_time: SystemTime,
    fresh_until: SystemTime,
    keep_for: Duration,
    swr: Duration,
    sie: Duration,
    allows_authorized: bool,
    vary: Vec<HeaderName>,
    vary_key: String,
}

impl Decision {
    pub(crate) fn into_stored(self, res: &response::Parts, body: Bytes) -> Stored {
        let mut headers = res.headers.clone();
        strip_hop_by_hop(&mut headers);
        let omitted: Vec<HeaderName> = res
            .headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(qualified_fields)
            .collect();
        for name in omitted {
            headers.remove(name);
        }
        Stored {
            status: res.status,
            initial_age: initial_age(&headers),
            headers,
            body,
            req: self.req,
            policy_mode: self.policy.is_some(),
            policy: self.policy,
            response_time: Wall::of(self.response_time),
            fresh_until: Wall::of(self.fresh_until),
            keep_for: self.keep_for,
            stale_while_revalidate: self.swr,
            stale_if_error: self.sie,
            allows_authorized: self.allows_authorized,
            vary: self.vary,
            vary_key: self.vary_key,
            hit_values: HitMemo::default(),
        }
    }
}

pub(crate) use crate::strip_hop_by_hop;

/// The `Age` a response arrived with, in seconds; 0 without a valid one.
pub(crate) fn initial_age(headers: &HeaderMap) -> u64 {
    let Some(v) = headers.get(header::AGE) else {
        return 0;
    };
    match age_value(v.as_bytes()) {
        Age::Valid => std::str::from_utf8(v.as_bytes().trim_ascii())
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        Age::TooBig => MAX_AGE_VALUE,
        Age::Invalid => 0,
    }
}

/// Whether a response was produced by bulwark instead of a handler (a rejection, a fallback, an
/// idempotent replay): such answers are never stored.
pub(crate) fn is_bulwark_answer(res: &response::Parts) -> bool {
    StandIn::of(&res.extensions, &res.headers).is_some()
}

/// The stored view of the request a response answered: method, URI, `Host`, the `Vary`-named
/// headers (credential headers as their digest), and whether it carried `Authorization` (never
/// its value).
fn stored_request(
    cfg: &Config,
    req: &request::Parts,
    vary: &[HeaderName],
    method: &Method,
) -> StoredParts {
    let mut headers = HeaderMap::new();
    if let Some(h) = req.headers.get(header::HOST) {
        headers.insert(header::HOST, h.clone());
    }
    for name in vary {
        let values = req.headers.get_all(name);
        if crate::redact::is_secret_header(name) {
            // Never a credential in an entry (a Redis value): its digest, as in the key.
            if values.iter().next().is_some() {
                let digest = secret_digest(values.iter());
                if let Ok(v) = HeaderValue::try_from(digest) {
                    headers.append(name.clone(), v);
                }
            }
            continue;
        }
        for v in values {
            headers.append(name.clone(), v.clone());
        }
    }
    if !cfg.allow_authorized && req.headers.contains_key(header::AUTHORIZATION) {
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("redacted"));
    }
    StoredParts {
        method: method.clone(),
        uri: req.uri.clone(),
        headers,
    }
}

/// Whether the response to `req` may be stored, and for how long. Made from the response head,
/// before its body is read.
pub(crate) fn decide(
    cfg: &Config,
    req: &request::Parts,
    res: &response::Parts,
    now: SystemTime,
) -> Result<Decision, NotStored> {
    if req.method != Method::GET {
        return Err(NotStored::Method);
    }
    let status = res.status.as_u16();
    if status < 200 || status == 206 || status == 304 {
        return Err(NotStored::Status);
    }
    if is_bulwark_answer(res) {
        return Err(NotStored::Marked);
    }
    if res.headers.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    // An event stream never ends: buffering it to store it would hold its head back forever
    // (with a forced TTL, any 2xx GET is stored whatever its headers say).
    if res
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| is_event_stream(v.as_bytes()))
    {
        return Err(NotStored::Stream);
    }
    let Some(vary) = vary_names(&res.headers) else {
        return Err(NotStored::VaryStar);
    };
    let effective = effective_headers(cfg.target.as_ref(), &res.headers);
    let d = Directives::parse(effective.get_all(header::CACHE_CONTROL));
    if d.no_store || d.private {
        return Err(NotStored::Directive);
    }
    let req_d = Directives::parse(req.headers.get_all(header::CACHE_CONTROL));
    if req_d.no_store && cfg.mode == Mode::Policy {
        return Err(NotStored::Directive);
    }
    if is_restricted(cfg, &req.headers) && !d.allows_authorized() {
        return Err(NotStored::Credentials);
    }
    let allows_authorized = d.allows_authorized();
    let stored_req = stored_request(cfg, req, &vary, &Method::GET);
    let vary_key = vary_key(&vary, &req.headers);
    let no_stale = d.must_revalidate || d.proxy_revalidate || d.no_cache;
    let pick = |directive: Option<u64>, default: Duration| {
        if no_stale {
            Duration::ZERO
        } else {
            directive
                .map_or(default, Duration::from_secs)
                .min(MAX_LIFETIME)
        }
    };
    match cfg.mode {
        Mode::Forced(ttl) => {
            let ttl = ttl.min(MAX_LIFETIME);
            if !res.status.is_success() {
                return Err(NotStored::Status);
            }
            let swr = pick(None, cfg.stale_while_revalidate);
            let sie = pick(None, cfg.stale_if_error);
            Ok(Decision {
                policy: None,
                req: stored_req,
                response_time: now,
                fresh_until: now + ttl,
                keep_for: (ttl + swr.max(sie)).min(MAX_LIFETIME),
                swr,
                sie,
                allows_authorized,
                vary,
                vary_key,
            })
        }
        Mode::Policy => {
            let head = PolicyResponse {
                status: policy_status(res.status, &effective, &d),
                headers: &effective,
            };
            let policy = CachePolicy::new_options(&stored_req, &head, now, cfg.options());
            if !policy.is_storable() {
                return Err(NotStored::Directive);
            }
            let ttl = policy.time_to_live(now).min(MAX_LIFETIME);
            let validator = res.headers.contains_key(header::ETAG)
                || res.headers.contains_key(header::LAST_MODIFIED);
            let swr = pick(d.stale_while_revalidate, cfg.stale_while_revalidate);
            let sie = pick(d.stale_if_error, cfg.stale_if_error);
            if ttl.is_zero() && !validator && swr.is_zero() && sie.is_zero() {
                return Err(NotStored::NoFreshness);
            }
            let retention = if validator {
                cfg.validator_retention
            } else {
                Duration::ZERO
            };
            Ok(Decision {
                policy: Some(Box::new(policy)),
                req: stored_req,
                response_time: now,
                fresh_until: now + ttl,
                keep_for: (ttl + swr.max(sie).max(retention)).min(MAX_LIFETIME),
                swr,
                sie,
                allows_authorized,
                vary,
                vary_key,
            })
        }
    }
}

/// Rebuilds the policy of an entry read back from bytes.
pub(crate) fn rebuild_policy(
    options: CacheOptions,
    target: Option<&HeaderName>,
    req: &StoredParts,
    status: StatusCode,
    headers: &HeaderMap,
    response_time: SystemTime,
) -> CachePolicy {
    let effective = effective_headers(target, headers);
    let d = Directives::parse(effective.get_all(header::CACHE_CONTROL));
    let head = PolicyResponse {
        status: policy_status(status, &effective, &d),
        headers: &effective,
    };
    CachePolicy::new_options(req, &head, response_time, options)
}

struct PolicyResponse<'a> {
    status: StatusCode,
    headers: &'a HeaderMap,
}

impl http_cache_semantics::ResponseLike for PolicyResponse<'_> {
    fn status(&self) -> StatusCode {
        self.status
    }
    fn headers(&self) -> &HeaderMap {
        self.headers
    }
}

impl RequestLike for StoredParts {
    fn uri(&self) -> http::Uri {
        self.uri.clone()
    }
    fn is_same_uri(&self, other: &http::Uri) -> bool {
        &self.uri == other
    }
    fn method(&self) -> &Method {
        &self.method
    }
    fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

/// A request whose own directives (`Cache-Control`, `Pragma`) decide whether a stored response
/// is fresh for it, as the policy library is shown it: the stored request's identity (method
/// `GET`, URI, `Host`, the `Vary`-named fields), which bulwark has already matched through the
/// key and the `Vary` key, and the request's directives with their names lowercased.
///
/// Not the request itself: its URI form differs between HTTP/1.1 (`/p` and `Host`) and HTTP/2
/// (`https://a/p`), a custom key may ignore parts of it, and credential headers are stored as
/// their digest; the library would call each of these another resource or variant.
struct Presented<'a> {
    stored: &'a StoredParts,
    headers: HeaderMap,
}

static GET: Method = Method::GET;

impl<'a> Presented<'a> {
    fn new(stored: &'a StoredParts, req: &request::Parts) -> Self {
        let mut headers = stored.headers.clone();
        for name in [header::CACHE_CONTROL, header::PRAGMA] {
            for v in req.headers.get_all(&name) {
                let lower = HeaderValue::from_bytes(&v.as_bytes().to_ascii_lowercase())
                    .unwrap_or_else(|_| v.clone());
                headers.append(name.clone(), lower);
            }
        }
        Self { stored, headers }
    }
}

impl RequestLike for Presented<'_> {
    fn uri(&self) -> http::Uri {
        self.stored.uri.clone()
    }
    fn is_same_uri(&self, other: &http::Uri) -> bool {
        &self.stored.uri == other
    }
    fn method(&self) -> &Method {
        &GET
    }
    fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

/// What a stored response is worth for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// Serve it.
    Fresh,
    /// It must be revalidated (or served stale where allowed); `by_request` when it is still
    /// fresh but the request's own directives (`no-cache`, `max-age=0`) ask for revalidation.
    Stale { by_request: bool },
    /// It does not answer this request (another variant, an expired entry).
    Unusable,
}

impl Stored {
    pub(crate) fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 16)
            .sum();
        let policy = if self.policy.is_some() {
            // The policy keeps its own copy of the headers.
            headers + 256
        } else {
            0
        };
        256 + self.body.len() + headers + policy + self.vary_key.len()
    }

    /// A copy with other headers, to serve (never to store).
    pub(crate) fn with_headers(&self, headers: HeaderMap) -> Self {
        Self {
            status: self.status,
            initial_age: initial_age(&headers),
            headers,
            body: self.body.clone(),
            req: self.req.clone(),
            policy: None,
            policy_mode: false,
            response_time: self.response_time,
            fresh_until: self.fresh_until,
            keep_for: self.keep_for,
            stale_while_revalidate: self.stale_while_revalidate,
            stale_if_error: self.stale_if_error,
            allows_authorized: self.allows_authorized,
            vary: self.vary.clone(),
            vary_key: self.vary_key.clone(),
            hit_values: HitMemo::default(),
        }
    }

    pub(crate) fn time_to_keep(&self) -> Duration {
        self.keep_for
    }

    pub(crate) fn keep_until(&self) -> Wall {
        self.response_time.after(self.keep_for)
    }

    /// The response's age now, in whole seconds (RFC 9111 section 4.2.3): the `Age` it arrived
    /// with plus the time it has been stored.
    pub(crate) fn age(&self, now: Wall) -> u64 {
        let resident = now.nanos_since(self.response_time) / 1_000_000_000;
        self.initial_age.saturating_add(resident)
    }

    /// Seconds of freshness left (whole seconds, rounded toward zero); negative once stale.
    pub(crate) fn ttl(&self, now: Wall) -> i64 {
        let secs = |nanos: u64| i64::try_from(nanos / 1_000_000_000).unwrap_or(i64::MAX);
        if self.fresh_until >= now {
            secs(self.fresh_until.nanos_since(now))
        } else {
            -secs(now.nanos_since(self.fresh_until))
        }
    }

    /// How long it has been stale; zero while fresh.
    pub(crate) fn staleness(&self, now: Wall) -> Duration {
        Duration::from_nanos(now.nanos_since(self.fresh_until))
    }

    /// Whether it may be served while a refresh runs in the background.
    pub(crate) fn may_serve_while_revalidating(&self, now: Wall) -> bool {
        !self.stale_while_revalidate.is_zero() && self.staleness(now) < self.stale_while_revalidate
    }

    /// Whether it may be served because the inner service failed.
    pub(crate) fn may_serve_on_error(&self, now: Wall) -> bool {
        !self.stale_if_error.is_zero() && self.staleness(now) < self.stale_if_error
    }

    pub(crate) fn freshness(&self, cfg: &Config, req: &request::Parts, now: Wall) -> Freshness {
        self.freshness_for(cfg, req, now, false)
    }

    /// Whether a request with these headers selects another variant than this entry's (its
    /// `Vary` fields have other values). An entry that varies on nothing answers every
    /// request without building the request's (empty) variant key: comparing two empty
    /// strings still calls `memcmp` on their dangling pointers, which costs a masked load's
    /// fault-suppression assist on x86 (about 90 ns per hit, found by `perf`).
    fn varies_from(&self, headers: &HeaderMap) -> bool {
        if self.vary.is_empty() {
            return !self.vary_key.is_empty();
        }
        self.vary_key != vary_key(&self.vary, headers)
    }

    /// [`freshness`](Self::freshness), told that the request is [`plain`] (so there is no need
    /// to look its fields up again).
    pub(crate) fn freshness_for(
        &self,
        cfg: &Config,
        req: &request::Parts,
        now: Wall,
        plain: bool,
    ) -> Freshness {
        if now >= self.keep_until() {
            return Freshness::Unusable;
        }
        if self.varies_from(&req.headers) {
            return Freshness::Unusable;
        }
        if !plain && is_restricted(cfg, &req.headers) && !self.allows_authorized {
            return Freshness::Unusable;
        }
        let policy = match &self.policy {
            Some(p) => Some(Cow::Borrowed(&**p)),
            None if self.policy_mode => Some(Cow::Owned(rebuild_policy(
                cfg.options(),
                cfg.target.as_ref(),
                &self.req,
                self.status,
                &self.headers,
                self.response_time.system(),
            ))),
            None => None,
        };
        match policy {
            None => {
                if now < self.fresh_until {
                    Freshness::Fresh
                } else {
                    Freshness::Stale { by_request: false }
                }
            }
            // The common case, a request without its own directives: fresh while the policy's
            // lifetime lasts (what `before_request` decides too, without building its answer).
            Some(policy)
                if plain
                    || !req.headers.contains_key(header::CACHE_CONTROL)
                        && !req.headers.contains_key(header::PRAGMA) =>
            {
                if policy.time_to_live(now.system()).is_zero() {
                    Freshness::Stale { by_request: false }
                } else {
                    Freshness::Fresh
                }
            }
            Some(policy) => {
                match policy.before_request(&Presented::new(&self.req, req), now.system()) {
                    BeforeRequest::Fresh(_) => Freshness::Fresh,
                    BeforeRequest::Stale { matches: false, .. } => Freshness::Unusable,
                    BeforeRequest::Stale { matches: true, .. } => Freshness::Stale {
                        by_request: now < self.fresh_until,
                    },
                }
            }
        }
    }

    /// Adds this entry's validators to a request that is about to revalidate it, unless the client
    /// sent its own conditional fields. Returns whether it added any.
    pub(crate) fn add_validators(&self, headers: &mut HeaderMap) -> bool {
        if headers.contains_key(header::IF_NONE_MATCH)
            || headers.contains_key(header::IF_MODIFIED_SINCE)
            || headers.contains_key(header::IF_MATCH)
            || headers.contains_key(header::IF_UNMODIFIED_SINCE)
            || headers.contains_key(header::IF_RANGE)
        {
            return false;
        }
        if let Some(etag) = self.headers.get(header::ETAG) {
            headers.insert(header::IF_NONE_MATCH, etag.clone());
            true
        } else if let Some(lm) = self.headers.get(header::LAST_MODIFIED) {
            headers.insert(header::IF_MODIFIED_SINCE, lm.clone());
            true
        } else {
            false
        }
    }

    /// The stored headers updated with a `304 Not Modified` answer's (RFC 9111 section 3.2).
    pub(crate) fn refreshed_head(&self, not_modified: &response::Parts) -> response::Parts {
        let mut headers = self.headers.clone();
        for name in not_modified.headers.keys() {
            if name == header::CONTENT_LENGTH
                || name == header::CONTENT_ENCODING
                || name == header::TRANSFER_ENCODING
            {
                continue;
            }
            headers.remove(name);
            for v in not_modified.headers.get_all(name) {
                headers.append(name.clone(), v.clone());
            }
        }
        strip_hop_by_hop(&mut headers);
        let mut parts = http::Response::new(()).into_parts().0;
        parts.status = self.status;
        parts.headers = headers;
        parts
    }

    /// Whether a `304` from the origin speaks about this entry (its validator matches, or it
    /// carries none to compare).
    pub(crate) fn matches_not_modified(&self, not_modified: &response::Parts) -> bool {
        match (
            not_modified.headers.get(header::ETAG),
            self.headers.get(header::ETAG),
        ) {
            (Some(new), Some(old)) => weak_eq(new.as_bytes(), old.as_bytes()),
            (Some(_), None) => false,
            (None, _) => true,
        }
    }

    /// Whether the client's own conditional request (`If-None-Match`, else `If-Modified-Since`)
    /// is satisfied by this entry, so the answer is `304 Not Modified`.
    pub(crate) fn not_modified_for(&self, req: &request::Parts) -> bool {
        not_modified(self.status, &self.headers, req)
    }
}

/// Whether a response (`status`, `headers`) satisfies the client's own conditional request
/// (`If-None-Match`, else `If-Modified-Since`), so the client is answered `304 Not Modified`.
pub(crate) fn not_modified(status: StatusCode, headers: &HeaderMap, req: &request::Parts) -> bool {
    if status != StatusCode::OK {
        return false;
    }
    if let Some(inm) = req.headers.get(header::IF_NONE_MATCH) {
        let Some(etag) = headers.get(header::ETAG) else {
            return false;
        };
        let Ok(inm) = inm.to_str() else { return false };
        return inm.trim() == "*"
            || inm
                .split(',')
                .any(|t| weak_eq(t.trim().as_bytes(), etag.as_bytes()));
    }
    if let Some(ims) = req.headers.get(header::IF_MODIFIED_SINCE) {
        let parse = |v: &HeaderValue| {
            v.to_str()
                .ok()
                .and_then(|s| httpdate::parse_http_date(s).ok())
        };
        let (Some(ims), Some(lm)) = (
            parse(ims),
            headers.get(header::LAST_MODIFIED).and_then(parse),
        ) else {
            return false;
        };
        return lm <= ims;
    }
    false
}

/// Takes the client's cache-validating conditionals (`If-None-Match`, `If-Modified-Since`) off
/// a request the cache forwards to fill or refresh an entry.
///
/// Forwarded as they are, they make the origin answer `304`, which cannot be stored: the entry
/// stays empty or stale for as long as clients revalidate, and every request waiting on this
/// one calls the origin itself. Without them the origin sends the full answer (or, for a
/// stale entry, a `304` to the cache's own validators), the cache stores it, and answers the
/// client `304` itself when its conditional matches (RFC 9111 section 4.3.2).
pub(crate) fn take_client_validators(headers: &mut HeaderMap) {
    headers.remove(header::IF_NONE_MATCH);
    headers.remove(header::IF_MODIFIED_SINCE);
}

/// Weak entity-tag comparison (RFC 9110 section 8.8.3.2).
fn weak_eq(a: &[u8], b: &[u8]) -> bool {
    fn strip(t: &[u8]) -> &[u8] {
        t.strip_prefix(b"W/").unwrap_or(t)
    }
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000_000_000;
    const T0: u64 = 1_800_000_000_000_000_000;

    fn secs_since(t0: u64, t: SystemTime) -> f64 {
        let t = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as f64;
        (t - t0 as f64) / 1e9
    }

    /// A process whose system clock is stepped (NTP synchronised late) follows it within a
    /// second instead of keeping its start-up error.
    #[test]
    fn the_clock_follows_a_stepped_system_clock() {
        static SYSTEM: AtomicU64 = AtomicU64::new(T0);
        let clock = Clock::with_system(|| SYSTEM.load(Ordering::Relaxed));
        assert!(secs_since(T0, clock.now().system()) < 1.0);
        SYSTEM.store(T0 + HOUR, Ordering::Relaxed);
        // The next read past the sync interval (brought forward here, not waited for).
        clock.next_sync.store(0, Ordering::Relaxed);
        let after = secs_since(T0, clock.now().system());
        assert!((3_600.0..3_601.0).contains(&after), "{after}");
    }

    /// Time a test advances is kept: the system's clock is not read back over it.
    #[tokio::test(start_paused = true)]
    async fn advanced_time_stays_continuous() {
        static SYSTEM: AtomicU64 = AtomicU64::new(T0);
        let clock = Clock::with_system(|| SYSTEM.load(Ordering::Relaxed));
        tokio::time::advance(Duration::from_secs(30)).await;
        SYSTEM.store(T0 + HOUR, Ordering::Relaxed);
        assert_eq!(secs_since(T0, clock.now().system()), 30.0);
        clock.next_sync.store(0, Ordering::Relaxed);
        assert_eq!(secs_since(T0, clock.now().system()), 30.0);
    }

    #[test]
    fn plain_requests() {
        let mut h = HeaderMap::new();
        assert!(plain(&h));
        h.insert("x-request-id", HeaderValue::from_static("a"));
        h.insert(header::USER_AGENT, HeaderValue::from_static("b"));
        assert!(plain(&h));
        for name in [
            header::RANGE,
            header::AUTHORIZATION,
            header::COOKIE,
            header::CACHE_CONTROL,
            header::PRAGMA,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
        ] {
            let mut with = h.clone();
            with.insert(name.clone(), HeaderValue::from_static("x"));
            assert!(!plain(&with), "{name}");
        }
        for i in 0..20 {
            h.insert(
                HeaderName::try_from(format!("x-{i}")).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        assert!(!plain(&h), "many fields are looked up one by one");
    }

    fn req(headers: &[(&str, &str)]) -> request::Parts {
        let mut b = http::Request::get("/p");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn res(status: u16, headers: &[(&str, &str)]) -> response::Parts {
        let mut b = http::Response::builder().status(status);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn policy() -> Config {
        Config::new(Mode::Policy)
    }

    #[test]
    fn directives_parse() {
        let v = HeaderValue::from_static(
            "public, max-age=10, stale-while-revalidate=30, Stale-If-Error=\"60\"",
        );
        let d = Directives::parse([&v]);
        assert!(d.public && !d.private);
        assert_eq!(d.stale_while_revalidate, Some(30));
        assert_eq!(d.stale_if_error, Some(60));
    }

    #[test]
    fn never_stores() {
        let now = SystemTime::now();
        let cfg = policy();
        let cases = [
            (
                res(
                    200,
                    &[("cache-control", "max-age=5"), ("set-cookie", "a=b")],
                ),
                NotStored::SetCookie,
            ),
            (
                res(200, &[("cache-control", "max-age=5, private")]),
                NotStored::Directive,
            ),
            (
                res(200, &[("cache-control", "no-store")]),
                NotStored::Directive,
            ),
            (
                res(200, &[("cache-control", "max-age=5"), ("vary", "*")]),
                NotStored::VaryStar,
            ),
            (res(200, &[]), NotStored::NoFreshness),
            (
                res(206, &[("cache-control", "max-age=5")]),
                NotStored::Status,
            ),
            (
                res(
                    200,
                    &[
                        ("cache-control", "max-age=5"),
                        ("idempotent-replayed", "true"),
                    ],
                ),
                NotStored::Marked,
            ),
        ];
        for (r, why) in cases {
            assert_eq!(decide(&cfg, &req(&[]), &r, now).err(), Some(why));
        }
        let auth = req(&[("authorization", "Bearer x")]);
        let r = res(200, &[("cache-control", "max-age=5")]);
        assert_eq!(
            decide(&cfg, &auth, &r, now).err(),
            Some(NotStored::Credentials)
        );
        let r = res(200, &[("cache-control", "s-maxage=5")]);
        assert!(decide(&cfg, &auth, &r, now).is_ok());
    }

    #[test]
    fn targeted_field_wins() {
        let now = SystemTime::now();
        let mut cfg = policy();
        cfg.target = Some(HeaderName::from_static("cdn-cache-control"));
        let r = res(
            200,
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=60"),
            ],
        );
        let d = decide(&cfg, &req(&[]), &r, now).ok().unwrap();
        assert_eq!(d.fresh_until, now + Duration::from_secs(60));
        let r = res(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "no-store"),
            ],
        );
        assert!(decide(&cfg, &req(&[]), &r, now).is_err());
    }

    #[test]
    fn s_maxage_beats_max_age() {
        let now = SystemTime::now();
        let r = res(200, &[("cache-control", "max-age=1, s-maxage=100")]);
        let d = decide(&policy(), &req(&[]), &r, now).ok().unwrap();
        assert_eq!(d.fresh_until, now + Duration::from_secs(100));
    }

    #[test]
    fn conditional_matching() {
        let now = SystemTime::now();
        let r = res(
            200,
            &[
                ("cache-control", "max-age=5"),
                ("etag", "W/\"v1\""),
                ("last-modified", "Tue, 24 Nov 2026 10:00:00 GMT"),
            ],
        );
        let s = decide(&policy(), &req(&[]), &r, now)
            .ok()
            .unwrap()
            .into_stored(&r, Bytes::new());
        assert!(s.not_modified_for(&req(&[("if-none-match", "\"v0\", \"v1\"")])));
        assert!(!s.not_modified_for(&req(&[("if-none-match", "\"v2\"")])));
        assert!(s.not_modified_for(&req(&[(
            "if-modified-since",
            "Tue, 24 Nov 2026 11:00:00 GMT"
        )])));
        assert!(!s.not_modified_for(&req(&[(
            "if-modified-since",
            "Tue, 24 Nov 2026 09:00:00 GMT"
        )])));
    }

    /// An entry answers only the requests of its variant; one that varies on nothing answers
    /// every request, unless what it says it varies on was lost (a damaged shared entry).
    #[test]
    fn an_entry_answers_its_own_variant() {
        let now = SystemTime::now();
        let stored = |headers: &[(&str, &str)]| {
            let r = res(200, headers);
            decide(&policy(), &req(&[("accept-language", "de")]), &r, now)
                .ok()
                .unwrap()
                .into_stored(&r, Bytes::new())
        };
        let plain = stored(&[("cache-control", "max-age=5")]);
        assert!(!plain.varies_from(&req(&[("accept-language", "fr")]).headers));
        let varied = stored(&[("cache-control", "max-age=5"), ("vary", "accept-language")]);
        assert!(!varied.varies_from(&req(&[("accept-language", "de")]).headers));
        assert!(varied.varies_from(&req(&[("accept-language", "fr")]).headers));
        assert!(varied.varies_from(&req(&[]).headers));
        let mut damaged = stored(&[("cache-control", "max-age=5")]);
        damaged.vary_key = "\u{1}de".into();
        assert!(damaged.varies_from(&req(&[]).headers));
    }

    /// `Age` counts whole seconds stored (plus the age the response arrived with); the TTL
    /// is whole seconds left, rounded toward zero on both sides of the freshness lifetime.
    #[test]
    fn age_and_ttl_are_whole_seconds() {
        let r = res(200, &[("cache-control", "max-age=5"), ("age", "3")]);
        let mut s = decide(&policy(), &req(&[]), &r, SystemTime::now())
            .ok()
            .unwrap()
            .into_stored(&r, Bytes::new());
        let t0 = Wall::from_epoch(Duration::from_secs(1_800_000_000));
        s.response_time = t0;
        s.fresh_until = t0.after(Duration::from_secs(10));
        let at = |ms: u64| t0.after(Duration::from_millis(ms));
        assert_eq!(s.age(at(0)), 3);
        assert_eq!(s.age(at(1_999)), 4);
        assert_eq!(s.age(Wall::from_epoch(Duration::from_secs(1))), 3);
        assert_eq!(s.ttl(at(0)), 10);
        assert_eq!(s.ttl(at(8_500)), 1);
        assert_eq!(s.ttl(at(10_000)), 0);
        assert_eq!(s.ttl(at(10_999)), 0);
        assert_eq!(s.ttl(at(12_500)), -2);
        assert_eq!(s.staleness(at(9_000)), Duration::ZERO);
        assert_eq!(s.staleness(at(12_500)), Duration::from_millis(2_500));
        s.keep_for = Duration::from_secs(20);
        assert_eq!(s.keep_until(), at(20_000));
    }
}
