//! [`Quota`]: a rate per period, a burst, and a name.

use std::{fmt, num::NonZeroU32, sync::Arc, time::Duration};

use crate::ConfigError;

/// The longest time a burst may take to refill: the GCRA tolerance is capped here so that its
/// arithmetic stays inside `u64` nanoseconds (memory store) and exact `f64` microseconds (the
/// Redis script). No real quota comes near it.
pub(crate) const MAX_TOLERANCE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How many requests a key may make: `rate` per `period`, with bursts of up to `burst`
/// requests (default: `rate`), under a name that the `RateLimit-Policy` header and metrics
/// carry (default `"default"`).
///
/// The limit is a GCRA (generic cell rate algorithm), the algorithm of a token bucket without
/// a refill task: a key starts with `burst` requests available, and one more becomes available
/// every `period / rate`. `Quota::per_minute(5)` allows 5 requests at once, then one every 12
/// seconds; `.burst(20)` on `Quota::per_second(10)` allows 20 at once, then 10 per second.
///
/// Every value of this type is valid: the constructors take [`NonZeroU32`] counts, and the one
/// that takes a [`Duration`] checks it.
///
/// ```
/// use std::{num::NonZeroU32, time::Duration};
/// use bulwark::rate_limit::Quota;
///
/// let n = |n| NonZeroU32::new(n).unwrap();
/// let login = Quota::per_minute(n(5)).named("login");
/// assert_eq!(login.replenish_interval(), Duration::from_secs(12));
///
/// let api = Quota::per_second(n(10)).burst(n(20));
/// assert_eq!(api.burst_size().get(), 20);
///
/// let daily = Quota::new(n(1_000), Duration::from_secs(86_400))?.named("daily");
/// assert_eq!(daily.period(), Duration::from_secs(86_400));
///
/// assert!(Quota::new(n(1), Duration::ZERO).is_err());
/// # Ok::<(), bulwark::ConfigError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Quota {
    name: Arc<str>,
    rate: NonZeroU32,
    period: Duration,
    burst: NonZeroU32,
}

impl Quota {
    /// `rate` requests per second, bursts of `rate`.
    #[must_use]
    pub fn per_second(rate: NonZeroU32) -> Self {
        Self::unchecked(rate, Duration::from_secs(1))
    }

    /// `rate` requests per minute, bursts of `rate`.
    #[must_use]
    pub fn per_minute(rate: NonZeroU32) -> Self {
        Self::unchecked(rate, Duration::from_secs(60))
    }

    /// `rate` requests per hour, bursts of `rate`.
    #[must_use]
    pub fn per_hour(rate: NonZeroU32) -> Self {
        Self::unchecked(rate, Duration::from_secs(3_600))
    }

    /// `rate` requests per `period`, bursts of `rate`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] (setting `quota`) if `period` is zero, shorter than one
    /// nanosecond per request, or longer than 100 years.
    pub fn new(rate: NonZeroU32, period: Duration) -> Result<Self, ConfigError> {
        if period.is_zero() {
            return Err(ConfigError::invalid("quota", "period must be > 0"));
        }
        if period.as_nanos() < u128::from(rate.get()) {
            return Err(ConfigError::invalid(
                "quota",
                format!("{rate} requests per {period:?} is more than one per nanosecond"),
            ));
        }
        if period > MAX_TOLERANCE {
            return Err(ConfigError::invalid(
                "quota",
                "period must be at most 100 years",
            ));
        }
        Ok(Self::unchecked(rate, period))
    }

    fn unchecked(rate: NonZeroU32, period: Duration) -> Self {
        Self {
            name: Arc::from("default"),
            rate,
            period,
            burst: rate,
        }
    }

    /// Allows bursts of up to `burst` requests (default: the rate). The steady rate stays the
    /// same. A burst is capped at what refills in 100 years.
    #[must_use]
    pub fn burst(mut self, burst: NonZeroU32) -> Self {
        self.burst = burst;
        self
    }

    /// Names the quota, for the `RateLimit-Policy` header, logs, metrics and Redis keys
    /// (default `"default"`). Quotas on one layer need distinct names.
    #[must_use]
    pub fn named(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// The quota's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Requests per [`period`](Self::period).
    #[must_use]
    pub fn rate(&self) -> NonZeroU32 {
        self.rate
    }

    /// The period the rate is counted over.
    #[must_use]
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The largest burst, after the 100-year cap (see [`burst`](Self::burst)).
    #[must_use]
    pub fn burst_size(&self) -> NonZeroU32 {
        let t = self.emission_nanos();
        let max = 1 + MAX_TOLERANCE.as_nanos() / u128::from(t);
        if u128::from(self.burst.get()) <= max {
            self.burst
        } else {
            // `max` < `burst` <= u32::MAX, and max >= 1.
            NonZeroU32::new(u32::try_from(max).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN)
        }
    }

    /// The time one request's worth of quota takes to come back: `period / rate`.
    #[must_use]
    pub fn replenish_interval(&self) -> Duration {
        Duration::from_nanos(self.emission_nanos())
    }

    /// `period / rate` in nanoseconds, at least 1.
    pub(crate) fn emission_nanos(&self) -> u64 {
        let t = self.period.as_nanos() / u128::from(self.rate.get());
        u64::try_from(t).unwrap_or(u64::MAX).max(1)
    }

    pub(crate) fn shared_name(&self) -> &Arc<str> {
        &self.name
    }
}

impl fmt::Debug for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quota")
            .field("name", &self.name)
            .field("rate", &self.rate)
            .field("period", &self.period)
            .field("burst", &self.burst_size())
            .finish()
    }
}

/// Checks a quota list for a layer: 1 to 16 quotas with distinct names.
pub(crate) fn check_quotas(quotas: &[Quota]) -> Result<(), ConfigError> {
    if quotas.is_empty() {
        return Err(ConfigError::invalid(
            "quotas",
            "at least one quota is needed",
        ));
    }
    if quotas.len() > MAX_QUOTAS {
        return Err(ConfigError::invalid(
            "quotas",
            format!("at most {MAX_QUOTAS} quotas per layer"),
        ));
    }
    for (i, q) in quotas.iter().enumerate() {
        if quotas[..i].iter().any(|p| p.name == q.name) {
            return Err(ConfigError::invalid(
                "quotas",
                format!("two quotas are named {:?}; give each its own name", q.name),
            ));
        }
    }
    Ok(())
}

/// The most quotas one layer holds.
pub(crate) const MAX_QUOTAS: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn n(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn constructors_and_intervals() {
        assert_eq!(
            Quota::per_second(n(4)).replenish_interval(),
            Duration::from_millis(250)
        );
        assert_eq!(
            Quota::per_minute(n(5)).replenish_interval(),
            Duration::from_secs(12)
        );
        assert_eq!(
            Quota::per_hour(n(1)).replenish_interval(),
            Duration::from_secs(3_600)
        );
        let q = Quota::per_second(n(10)).burst(n(20)).named("api");
        assert_eq!(
            (q.name(), q.rate().get(), q.burst_size().get()),
            ("api", 10, 20)
        );
        assert_eq!(Quota::per_second(n(7)).burst_size().get(), 7);
    }

    #[test]
    fn durations_are_checked() {
        assert!(Quota::new(n(1), Duration::ZERO).is_err());
        assert!(Quota::new(n(10), Duration::from_nanos(9)).is_err());
        assert!(Quota::new(n(10), Duration::from_nanos(10)).is_ok());
        assert!(Quota::new(n(1), MAX_TOLERANCE).is_ok());
        let err = Quota::new(n(1), MAX_TOLERANCE + Duration::from_secs(1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid quota: period must be at most 100 years"
        );
    }

    #[test]
    fn huge_bursts_are_capped_not_overflowed() {
        let q = Quota::per_hour(n(1)).burst(n(u32::MAX));
        let cap = q.burst_size().get();
        assert!(cap < u32::MAX && cap > 800_000, "{cap}");
        let tolerance = q.emission_nanos() as u128 * u128::from(cap - 1);
        assert!(tolerance <= MAX_TOLERANCE.as_nanos());
        assert_eq!(
            Quota::per_second(n(u32::MAX)).burst_size().get(),
            u32::MAX,
            "fine at one nanosecond per request"
        );
    }

    #[test]
    fn quota_lists_are_checked() {
        let a = Quota::per_second(n(1)).named("a");
        assert!(check_quotas(&[]).is_err());
        assert!(check_quotas(&[a.clone(), a.clone()]).is_err());
        assert!(check_quotas(&[a.clone(), a.named("b")]).is_ok());
        let many: Vec<_> = (0..17)
            .map(|i| Quota::per_second(n(1)).named(i.to_string()))
            .collect();
        assert!(check_quotas(&many).is_err());
        assert!(check_quotas(&many[..16]).is_ok());
    }
}
