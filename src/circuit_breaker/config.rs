use std::{sync::Arc, time::Duration};

use crate::ConfigError;

/// Which recent calls the failure and slow-call rates are computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlidingWindow {
    /// The last `size` calls (1 to 1,000,000).
    Count {
        /// How many calls.
        size: u32,
    },
    /// The calls of the last `size`, counted in buckets of `bucket` (memory is constant:
    /// `size / bucket` buckets of 8 bytes, at most 3,600).
    ///
    /// A bucket counts at most 16,383 calls; past that, the bucket's rates are those of its
    /// first 16,383 calls (a sample, still an honest estimate). Use smaller buckets for more
    /// traffic per breaker.
    Time {
        /// The window's length.
        size: Duration,
        /// One bucket's length.
        bucket: Duration,
    },
}

/// Settings of one circuit breaker. `Default` gives the table in the
/// [module docs](super#defaults); [`CircuitBreakerConfig::builder`] changes them with checks.
#[derive(Debug, Clone)]
pub struct CircuitBreakerConfig {
    pub(crate) name: Arc<str>,
    pub(crate) window: SlidingWindow,
    pub(crate) minimum_calls: u32,
    pub(crate) failure_rate: f64,
    pub(crate) slow_call: Option<SlowCalls>,
    pub(crate) wait_in_open: Duration,
    pub(crate) open_backoff: f64,
    pub(crate) max_wait_in_open: Duration,
    pub(crate) half_open_probes: u32,
    pub(crate) max_wait_in_half_open: Duration,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct SlowCalls {
    pub(crate) duration: Duration,
    pub(crate) rate: f64,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            name: Arc::from("default"),
            window: SlidingWindow::Time {
                size: Duration::from_secs(30),
                bucket: Duration::from_secs(1),
            },
            minimum_calls: 20,
            failure_rate: 50.0,
            slow_call: None,
            wait_in_open: Duration::from_secs(30),
            open_backoff: 2.0,
            max_wait_in_open: Duration::from_secs(300),
            half_open_probes: 3,
            max_wait_in_half_open: Duration::from_secs(60),
        }
    }
}

impl CircuitBreakerConfig {
    /// Starts from the defaults.
    pub fn builder() -> CircuitBreakerConfigBuilder {
        CircuitBreakerConfigBuilder {
            config: Self::default(),
        }
    }

    /// The breaker's name, used in logs, metrics and `Debug` output.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long the breaker stays open after its `n`-th consecutive opening (0 for the first).
    pub(crate) fn open_duration(&self, n: u32) -> Duration {
        let factor = self.open_backoff.powi(n.min(64) as i32);
        let secs = self.wait_in_open.as_secs_f64() * factor;
        if !secs.is_finite() || secs >= self.max_wait_in_open.as_secs_f64() {
            self.max_wait_in_open
        } else {
            Duration::from_secs_f64(secs)
        }
    }
}

/// Builds a [`CircuitBreakerConfig`]; [`build`](Self::build) checks every setting.
#[derive(Debug, Clone)]
#[must_use]
pub struct CircuitBreakerConfigBuilder {
    config: CircuitBreakerConfig,
}

impl CircuitBreakerConfigBuilder {
    /// Names the breaker (logs, metrics, the handle). Default `"default"`.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Rates over the last `size` calls.
    pub fn count_window(mut self, size: u32) -> Self {
        self.config.window = SlidingWindow::Count { size };
        self
    }

    /// Rates over the last `size` of time, in one-second buckets (or `size` itself if shorter).
    pub fn time_window(mut self, size: Duration) -> Self {
        let bucket = Duration::from_secs(1).min(size);
        self.config.window = SlidingWindow::Time { size, bucket };
        self
    }

    /// Rates over the last `size` of time, in buckets of `bucket`.
    pub fn time_window_with_buckets(mut self, size: Duration, bucket: Duration) -> Self {
        self.config.window = SlidingWindow::Time { size, bucket };
        self
    }

    /// Calls the window must hold before the rates can open the breaker. Default 20; with a
    /// count window, at most the window's size (a larger value is lowered to it).
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.config.minimum_calls = calls;
        self
    }

    /// Failure rate, in percent (0 excluded, 100 included), at which the breaker opens.
    /// Default 50.
    pub fn failure_rate_threshold(mut self, percent: f64) -> Self {
        self.config.failure_rate = percent;
        self
    }

    /// Counts calls slower than `duration` as slow, and opens when the slow-call rate reaches
    /// `percent`. Off by default.
    pub fn slow_calls(mut self, duration: Duration, percent: f64) -> Self {
        self.config.slow_call = Some(SlowCalls {
            duration,
            rate: percent,
        });
        self
    }

    /// How long the breaker stays open before letting probes through. Default 30 s.
    pub fn wait_in_open(mut self, wait: Duration) -> Self {
        self.config.wait_in_open = wait;
        self
    }

    /// Multiplies the open time by `factor` at each consecutive re-opening (a failed half-open
    /// phase), up to `max`. Default ×2 up to 5 min; `factor` 1 keeps it constant.
    pub fn open_backoff(mut self, factor: f64, max: Duration) -> Self {
        self.config.open_backoff = factor;
        self.config.max_wait_in_open = max;
        self
    }

    /// Keeps the open time constant (no growth on re-opening).
    pub fn constant_wait_in_open(mut self) -> Self {
        self.config.open_backoff = 1.0;
        self.config.max_wait_in_open = self.config.wait_in_open;
        self
    }

    /// How many probe calls half-open lets through. Default 3.
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.config.half_open_probes = probes;
        self
    }

    /// How long half-open waits for a probe that has not answered before it opens again,
    /// counted from the latest probe let through. Default 60 s. A quiet half-open phase (no
    /// probe out, too little traffic to finish the probes) is not cut short: it keeps probing.
    pub fn max_wait_in_half_open(mut self, wait: Duration) -> Self {
        self.config.max_wait_in_half_open = wait;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the first setting that cannot work.
    pub fn build(self) -> Result<CircuitBreakerConfig, ConfigError> {
        let mut c = self.config;
        match c.window {
            SlidingWindow::Count { size } => {
                if !(1..=1_000_000).contains(&size) {
                    return Err(ConfigError::invalid(
                        "count_window",
                        "size must be 1 to 1,000,000 calls",
                    ));
                }
            }
            SlidingWindow::Time { size, bucket } => {
                if bucket < Duration::from_millis(1) {
                    return Err(ConfigError::invalid(
                        "time_window",
                        "buckets must be at least 1 ms",
                    ));
                }
                if size < bucket {
                    return Err(ConfigError::invalid(
                        "time_window",
                        "the window must be at least one bucket long",
                    ));
                }
                let buckets = size.as_nanos().div_ceil(bucket.as_nanos());
                if buckets > 3_600 {
                    return Err(ConfigError::invalid(
                        "time_window",
                        format!("{buckets} buckets; at most 3,600 (use larger buckets)"),
                    ));
                }
            }
        }
        if c.minimum_calls == 0 {
            return Err(ConfigError::invalid("minimum_calls", "must be > 0"));
        }
        // A count window never holds more than `size` calls: a larger minimum (such as the
        // default 20 with `count_window(10)`) would keep the breaker closed forever. As in
        // resilience4j, the minimum is the window's size then.
        if let SlidingWindow::Count { size } = c.window {
            c.minimum_calls = c.minimum_calls.min(size);
        }
        check_percent("failure_rate_threshold", c.failure_rate)?;
        if let Some(slow) = c.slow_call {
            check_percent("slow_calls", slow.rate)?;
            if slow.duration.is_zero() {
                return Err(ConfigError::invalid("slow_calls", "duration must be > 0"));
            }
        }
        if c.wait_in_open.is_zero() {
            return Err(ConfigError::invalid("wait_in_open", "must be > 0"));
        }
        if !(c.open_backoff.is_finite() && c.open_backoff >= 1.0) {
            return Err(ConfigError::invalid("open_backoff", "factor must be >= 1"));
        }
        if c.max_wait_in_open < c.wait_in_open {
            return Err(ConfigError::invalid(
                "open_backoff",
                "max must be >= wait_in_open",
            ));
        }
        if !(1..=1_000).contains(&c.half_open_probes) {
            return Err(ConfigError::invalid(
                "half_open_probes",
                "must be 1 to 1,000",
            ));
        }
        if c.max_wait_in_half_open.is_zero() {
            return Err(ConfigError::invalid("max_wait_in_half_open", "must be > 0"));
        }
        Ok(c)
    }
}

fn check_percent(setting: &'static str, p: f64) -> Result<(), ConfigError> {
    if p.is_finite() && p > 0.0 && p <= 100.0 {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            setting,
            format!("rate must be in (0, 100] percent, got {p}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_build() {
        let c = CircuitBreakerConfig::builder().build().unwrap();
        assert_eq!(c.minimum_calls, 20);
        assert_eq!(c.half_open_probes, 3);
    }

    #[test]
    fn bad_settings_are_named() {
        let cases = [
            (
                CircuitBreakerConfig::builder().count_window(0),
                "count_window",
            ),
            (
                CircuitBreakerConfig::builder()
                    .time_window_with_buckets(Duration::from_secs(3_601), Duration::from_secs(1)),
                "time_window",
            ),
            (
                CircuitBreakerConfig::builder().minimum_calls(0),
                "minimum_calls",
            ),
            (
                CircuitBreakerConfig::builder().failure_rate_threshold(0.0),
                "failure_rate_threshold",
            ),
            (
                CircuitBreakerConfig::builder().failure_rate_threshold(f64::NAN),
                "failure_rate_threshold",
            ),
            (
                CircuitBreakerConfig::builder().slow_calls(Duration::ZERO, 50.0),
                "slow_calls",
            ),
            (
                CircuitBreakerConfig::builder().wait_in_open(Duration::ZERO),
                "wait_in_open",
            ),
            (
                CircuitBreakerConfig::builder().open_backoff(0.5, Duration::from_secs(60)),
                "open_backoff",
            ),
            (
                CircuitBreakerConfig::builder().half_open_probes(0),
                "half_open_probes",
            ),
        ];
        for (builder, setting) in cases {
            match builder.build() {
                Err(ConfigError::Invalid { setting: s, .. }) => assert_eq!(s, setting),
                other => panic!("{setting}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_count_window_caps_the_minimum_calls() {
        let c = CircuitBreakerConfig::builder()
            .count_window(10)
            .build()
            .unwrap();
        assert_eq!(c.minimum_calls, 10);
        let c = CircuitBreakerConfig::builder()
            .count_window(10)
            .minimum_calls(4)
            .build()
            .unwrap();
        assert_eq!(c.minimum_calls, 4);
        let c = CircuitBreakerConfig::builder()
            .time_window(Duration::from_secs(10))
            .build()
            .unwrap();
        assert_eq!(c.minimum_calls, 20);
    }

    #[test]
    fn open_duration_grows_and_caps() {
        let c = CircuitBreakerConfig::default();
        assert_eq!(c.open_duration(0), Duration::from_secs(30));
        assert_eq!(c.open_duration(1), Duration::from_secs(60));
        assert_eq!(c.open_duration(3), Duration::from_secs(240));
        assert_eq!(c.open_duration(4), Duration::from_secs(300));
        assert_eq!(c.open_duration(1_000), Duration::from_secs(300));
        let constant = CircuitBreakerConfig::builder()
            .wait_in_open(Duration::from_secs(5))
            .constant_wait_in_open()
            .build()
            .unwrap();
        assert_eq!(constant.open_duration(7), Duration::from_secs(5));
    }
}
