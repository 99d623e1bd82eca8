//! How a stored entry answers a request now: fresh, to revalidate, stale but servable, or not
//! at all (another variant); its `Age` and TTL.

use std::{borrow::Cow, time::Duration};

use http::{HeaderMap, header, request};
use http_cache_semantics::BeforeRequest;

use super::{
    clock::Wall,
    entry::Stored,
    policy::{CacheSettings, is_restricted},
    storable::{Presented, rebuild_policy},
    vary::vary_key,
};

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

    pub(crate) fn freshness(
        &self,
        cfg: &CacheSettings,
        req: &request::Parts,
        now: Wall,
    ) -> Freshness {
        self.freshness_for(cfg, req, now, false)
    }

    /// Whether a request with these headers selects another variant than this entry's (its
    /// `Vary` fields have other values). An entry that varies on nothing answers every
    /// request without building the request's (empty) variant key: comparing two empty
    /// strings still calls `memcmp` on their dangling pointers, which costs a masked load's
    /// fault-suppression assist on x86 (about 90 ns per hit, found by `perf`).
    pub(crate) fn varies_from(&self, headers: &HeaderMap) -> bool {
        if self.vary.is_empty() {
            return !self.vary_key.is_empty();
        }
        self.vary_key != vary_key(&self.vary, headers)
    }

    /// [`freshness`](Self::freshness), told that the request is [`plain`] (so there is no need
    /// to look its fields up again).
    pub(crate) fn freshness_for(
        &self,
        cfg: &CacheSettings,
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
                self.response.status,
                &self.response.headers,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    use bytes::Bytes;

    use crate::cache::{
        policy::testing::{policy, req, res},
        storable::decide,
    };

    /// An entry answers only the requests of its variant; one that varies on nothing answers
    /// every request, unless what it says it varies on was lost (a damaged shared entry).
    #[test]
    pub(crate) fn an_entry_answers_its_own_variant() {
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::with_cases(
                std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
            )
        })]

        /// Freshness and age as RFC 9111 section 4.2 writes them, for a response whose `Date`
        /// is the time it was received: the lifetime is `s-maxage` (a shared cache), else
        /// `max-age`, else `Expires - Date`; the current age is the `Age` it arrived with plus
        /// the time resident; it is fresh while the lifetime exceeds the age. Checked at
        /// generated instants around the end of the lifetime.
        #[test]
        fn freshness_follows_rfc_9111_section_4_2(
            max_age in proptest::option::of(0u64..100_000),
            s_maxage in proptest::option::of(0u64..100_000),
            expires_in in proptest::option::of(0u64..100_000),
            age in proptest::option::of(0u64..200_000),
            resident_ms in proptest::collection::vec(0u64..300_000_000, 1..6),
        ) {
            let received = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
            let date = httpdate::fmt_http_date(received);
            let mut cc = Vec::new();
            if let Some(m) = max_age {
                cc.push(format!("max-age={m}"));
            }
            if let Some(s) = s_maxage {
                cc.push(format!("s-maxage={s}"));
            }
            let cc = cc.join(", ");
            let age_text = age.map(|a| a.to_string());
            let expires = expires_in.map(|e| httpdate::fmt_http_date(received + Duration::from_secs(e)));
            let mut headers: Vec<(&str, &str)> = vec![("date", &date)];
            if !cc.is_empty() {
                headers.push(("cache-control", &cc));
            }
            if let Some(a) = &age_text {
                headers.push(("age", a));
            }
            if let Some(e) = &expires {
                headers.push(("expires", e));
            }
            let r = res(200, &headers);
            let lifetime = s_maxage.or(max_age).or(expires_in);
            let arrived_age = age.unwrap_or(0);
            let Ok(decision) = decide(&policy(), &req(&[]), &r, received) else {
                // Not stored: only when it would never be fresh (no lifetime, or used up on
                // arrival) and it has no validator to be revalidated with.
                proptest::prop_assert!(lifetime.is_none_or(|l| l <= arrived_age));
                return Ok(());
            };
            let stored = decision.into_stored(&r, Bytes::new());
            let lifetime = lifetime.expect("stored with a lifetime");
            let t0 = Wall::of(received);
            // The generated instants, and the last millisecond of freshness and the first of
            // staleness.
            let end = (lifetime - arrived_age) * 1_000;
            let instants = resident_ms.into_iter().chain([end - 1, end, end + 1]);
            for ms in instants {
                let now = t0.after(Duration::from_millis(ms));
                let resident = ms / 1_000;
                let current_age = arrived_age + resident;
                proptest::prop_assert_eq!(stored.age(now), current_age);
                let fresh = lifetime * 1_000 > arrived_age * 1_000 + ms;
                let f = stored.freshness(&policy(), &req(&[]), now);
                proptest::prop_assert_eq!(
                    f == Freshness::Fresh,
                    fresh,
                    "lifetime {} age {} at {} ms: {:?}",
                    lifetime,
                    arrived_age,
                    ms,
                    f
                );
                let left_ms = i128::from(lifetime * 1_000) - i128::from(arrived_age * 1_000 + ms);
                let ttl = i64::try_from(left_ms / 1_000).unwrap();
                proptest::prop_assert_eq!(stored.ttl(now), ttl, "TTL, whole seconds toward zero");
            }
        }
    }

    /// `Age` counts whole seconds stored (plus the age the response arrived with); the TTL
    /// is whole seconds left, rounded toward zero on both sides of the freshness lifetime.
    #[test]
    pub(crate) fn age_and_ttl_are_whole_seconds() {
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
