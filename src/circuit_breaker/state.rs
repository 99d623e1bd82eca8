//! The breaker's state machine, shared by the HTTP and the generic services.
//!
//! All of it is atomics; nothing here takes a lock.
//!
//! - `state` packs a generation counter with the state code. Every transition is one
//!   compare-and-swap from the exact word the deciding thread saw to `generation + 1` and the new
//!   state, so concurrent deciders produce exactly one transition (and one hook call), and a
//!   result that arrives for an older generation is dropped.
//! - Values a new state needs (`open_until`, `half_open_since`, the probe word) are written
//!   before the CAS publishes the state, so a thread that sees the state sees them.
//! - `half_open` packs the half-open generation (24 bits) with the probes issued, succeeded,
//!   failed and slow (10 bits each). Taking a probe slot, recording a probe and freeing a slot
//!   are CASes that check the generation, so a stale probe never touches a newer phase and there
//!   are never more probes in flight than configured.

use std::{
    fmt,
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio::time::Instant;

use crate::sync::{AtomicU32, AtomicU64, Ordering};

use crate::clock::Monotonic;

use super::{
    config::{CircuitBreakerConfig, SlidingWindow},
    window::{CountWindow, Record, TimeWindow, Totals, Window},
};
use crate::classify::Outcome;

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const FORCED_OPEN: u64 = 3;
const FORCED_CLOSED: u64 = 4;

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CircuitState {
    /// Calls go through; outcomes are counted.
    Closed,
    /// Calls are rejected until the open time is over.
    Open,
    /// A few probe calls go through; their outcomes decide between closed and open.
    HalfOpen,
    /// Opened by hand ([`CircuitBreakerHandle::force_open`](super::CircuitBreakerHandle::force_open)):
    /// rejects every call until reset.
    ForcedOpen,
    /// Closed by hand ([`CircuitBreakerHandle::force_closed`](super::CircuitBreakerHandle::force_closed)):
    /// lets every call through and counts nothing until reset.
    ForcedClosed,
}

impl CircuitState {
    /// `"closed"`, `"open"`, `"half_open"`, `"forced_open"` or `"forced_closed"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
            Self::ForcedOpen => "forced_open",
            Self::ForcedClosed => "forced_closed",
        }
    }

    fn from_code(code: u64) -> Self {
        match code {
            OPEN => Self::Open,
            HALF_OPEN => Self::HalfOpen,
            FORCED_OPEN => Self::ForcedOpen,
            FORCED_CLOSED => Self::ForcedClosed,
            _ => Self::Closed,
        }
    }

    /// The gauge value: 0 closed, 1 open, 2 half-open, 3 forced open, 4 forced closed.
    #[must_use]
    pub fn as_gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::Open => 1.0,
            Self::HalfOpen => 2.0,
            Self::ForcedOpen => 3.0,
            Self::ForcedClosed => 4.0,
        }
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transition, as the `on_state_change` hook sees it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StateChange {
    /// The breaker's name.
    pub name: Arc<str>,
    /// The state it left.
    pub from: CircuitState,
    /// The state it entered.
    pub to: CircuitState,
    /// The transition's sequence number: consecutive for one breaker, so hooks running on
    /// different threads can be put back in order.
    pub generation: u64,
}

pub(crate) type OnStateChange = Arc<dyn Fn(&StateChange) + Send + Sync>;

// half-open word: issued | succeeded | failed | slow (10 bits each) | generation (24 bits)
const P_BITS: u32 = 10;
const P_MASK: u64 = (1 << P_BITS) - 1;
const P_ISSUED: u32 = 0;
const P_OK: u32 = P_BITS;
const P_FAIL: u32 = 2 * P_BITS;
const P_SLOW: u32 = 3 * P_BITS;
const P_GEN: u32 = 4 * P_BITS;
const GEN_MASK: u64 = (1 << (64 - P_GEN)) - 1;

fn field(w: u64, shift: u32) -> u64 {
    (w >> shift) & P_MASK
}

fn half_gen(gen_: u64) -> u64 {
    gen_ & GEN_MASK
}

/// Whether 24-bit generation `a` is later than `b`.
fn gen_newer(a: u64, b: u64) -> bool {
    let diff = a.wrapping_sub(b) & GEN_MASK;
    diff != 0 && diff < GEN_MASK / 2
}

/// The shared state of one breaker.
pub(crate) struct Breaker {
    pub(crate) config: CircuitBreakerConfig,
    base: Monotonic,
    bucket_nanos: u64,
    state: AtomicU64,
    open_until: AtomicU64,
    half_open_since: AtomicU64,
    half_open: AtomicU64,
    consecutive_opens: AtomicU32,
    window: Window,
    rejected: AtomicU64,
    /// Its counter in `bulwark_circuit_breaker_rejections_total`.
    rejections: super::metrics::BreakerRejections,
    /// Read on transitions only (rare), so a lock is fine here. A per-key layer's breakers
    /// all share the cell of the layer's shared breaker, so one hook serves every key,
    /// including keys seen before the hook was set.
    on_change: HookCell,
    /// For a per-key breaker, its layer's name: metrics are labelled with it (never with a
    /// key), and no state gauge is set (one gauge cannot show a state per key).
    keyed_under: Option<Arc<str>>,
}

/// Where a breaker's `on_state_change` hook lives.
pub(crate) type HookCell = Arc<RwLock<Option<OnStateChange>>>;

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("name", &self.config.name)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// The right to make one call, and the duty to report its outcome.
pub(crate) struct Permit {
    breaker: Arc<Breaker>,
    generation: u64,
    kind: PermitKind,
    start: Option<Instant>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PermitKind {
    Closed,
    Probe,
    Untracked,
    Reported,
}

impl Breaker {
    pub(crate) fn new(config: CircuitBreakerConfig) -> Self {
        let rejections = super::metrics::BreakerRejections::new(&config.name);
        let breaker = Self::build(config, None, HookCell::default(), rejections);
        super::metrics::breaker_state(&breaker.config.name, CircuitState::Closed);
        breaker
    }

    /// One key's breaker of the per-key layer named `layer`, whose shared breaker is `shared`
    /// (its hook and its rejection counter serve this one too).
    pub(crate) fn keyed(config: CircuitBreakerConfig, layer: Arc<str>, shared: &Breaker) -> Self {
        Self::build(
            config,
            Some(layer),
            shared.on_change.clone(),
            shared.rejections.clone(),
        )
    }

    fn build(
        config: CircuitBreakerConfig,
        keyed_under: Option<Arc<str>>,
        on_change: HookCell,
        rejections: super::metrics::BreakerRejections,
    ) -> Self {
        let (window, bucket_nanos) = match config.window {
            SlidingWindow::Count { size } => (Window::Count(CountWindow::new(size)), 0),
            SlidingWindow::Time { size, bucket } => {
                let n = size.as_nanos().div_ceil(bucket.as_nanos()) as u32;
                (
                    Window::Time(TimeWindow::new(n)),
                    bucket.as_nanos().min(u128::from(u64::MAX)) as u64,
                )
            }
        };
        Self {
            config,
            base: Monotonic::start(),
            bucket_nanos,
            state: AtomicU64::new(CLOSED),
            open_until: AtomicU64::new(0),
            half_open_since: AtomicU64::new(0),
            half_open: AtomicU64::new(0),
            consecutive_opens: AtomicU32::new(0),
            window,
            rejected: AtomicU64::new(0),
            rejections,
            on_change,
            keyed_under,
        }
    }

    fn now(&self) -> u64 {
        self.base.nanos()
    }

    fn tick(&self, now: u64) -> u64 {
        now.checked_div(self.bucket_nanos).unwrap_or(0)
    }

    pub(crate) fn state(&self) -> CircuitState {
        CircuitState::from_code(self.state.load(Ordering::Acquire) & 7)
    }

    pub(crate) fn name(&self) -> &Arc<str> {
        &self.config.name
    }

    /// Asks to make a call: a permit, or the time after which to retry.
    pub(crate) fn acquire(self: &Arc<Self>) -> Result<Permit, Duration> {
        let mut probe_races = 0;
        loop {
            let word = self.state.load(Ordering::Acquire);
            let generation = word >> 3;
            match word & 7 {
                CLOSED => {
                    let start = self.config.slow_call.is_some().then(Instant::now);
                    return Ok(self.permit(generation, PermitKind::Closed, start));
                }
                FORCED_CLOSED => return Ok(self.permit(generation, PermitKind::Untracked, None)),
                FORCED_OPEN => return Err(self.reject(self.config.wait_in_open)),
                OPEN => {
                    let now = self.now();
                    let until = self.open_until.load(Ordering::Acquire);
                    if now < until {
                        return Err(self.reject(Duration::from_nanos(until - now)));
                    }
                    self.enter_half_open(word, now);
                }
                _ => {
                    let now = self.now();
                    let since = self.half_open_since.load(Ordering::Acquire);
                    let limit = self.config.max_wait_in_half_open.as_nanos() as u64;
                    if now.saturating_sub(since) >= limit {
                        if self.probes_in_flight(generation) > 0 {
                            tracing::warn!(
                                target: "bulwark::circuit_breaker",
                                breaker = %self.config.name,
                                "half-open probes did not finish in time; opening again"
                            );
                            self.reopen(word, now);
                            continue;
                        }
                        // No probe is out: the phase is only quiet (little traffic), not stuck.
                        // Keep probing; the bound runs from now.
                        self.half_open_since.store(now, Ordering::Release);
                    }
                    match self.take_probe(generation) {
                        Some(true) => {
                            // The bound on a hung probe runs from the latest probe let through.
                            self.half_open_since.store(now, Ordering::Release);
                            let start = Some(Instant::now());
                            return Ok(self.permit(generation, PermitKind::Probe, start));
                        }
                        Some(false) => return Err(self.reject(Duration::from_secs(1))),
                        // The phase moved on meanwhile: look again, a few times at most.
                        None if probe_races < 3 => probe_races += 1,
                        None => return Err(self.reject(Duration::from_secs(1))),
                    }
                }
            }
        }
    }

    fn permit(
        self: &Arc<Self>,
        generation: u64,
        kind: PermitKind,
        start: Option<Instant>,
    ) -> Permit {
        Permit {
            breaker: Arc::clone(self),
            generation,
            kind,
            start,
        }
    }

    fn reject(&self, retry_after: Duration) -> Duration {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.rejections.count();
        retry_after
    }

    /// `Some(true)`: a slot was taken; `Some(false)`: all slots are taken; `None`: the probe
    /// word belongs to another phase.
    fn take_probe(&self, generation: u64) -> Option<bool> {
        let hg = half_gen(generation);
        let max = u64::from(self.config.half_open_probes);
        let mut h = self.half_open.load(Ordering::Acquire);
        loop {
            if h >> P_GEN != hg {
                return None;
            }
            if field(h, P_ISSUED) >= max {
                return Some(false);
            }
            match self.half_open.compare_exchange_weak(
                h,
                h + (1 << P_ISSUED),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(true),
                Err(actual) => h = actual,
            }
        }
    }

    /// Probes of this half-open phase let through and not yet reported.
    fn probes_in_flight(&self, generation: u64) -> u64 {
        let h = self.half_open.load(Ordering::Acquire);
        if h >> P_GEN != half_gen(generation) {
            return 0;
        }
        field(h, P_ISSUED).saturating_sub(field(h, P_OK) + field(h, P_FAIL))
    }

    fn release_probe(&self, generation: u64) {
        let hg = half_gen(generation);
        let _ = self
            .half_open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                (h >> P_GEN == hg && field(h, P_ISSUED) > 0).then(|| h - (1 << P_ISSUED))
            });
    }

    fn enter_half_open(&self, word: u64, now: u64) {
        let next_gen = (word >> 3) + 1;
        let hg = half_gen(next_gen);
        // Initialise the probe word for the coming phase, unless a newer phase already did.
        let _ = self
            .half_open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                gen_newer(hg, h >> P_GEN).then_some(hg << P_GEN)
            });
        self.half_open_since.store(now, Ordering::Release);
        self.transition(word, HALF_OPEN);
    }

    fn open_from_closed(&self, word: u64, now: u64) {
        if self.state.load(Ordering::Acquire) != word {
            return;
        }
        let until = now.saturating_add(self.config.open_duration(0).as_nanos() as u64);
        self.open_until.store(until, Ordering::Release);
        if self.transition(word, OPEN) {
            self.consecutive_opens.store(0, Ordering::Release);
        }
    }

    /// Opens again from half-open, for the next step of the backoff. `open_until` is written
    /// before the state so that a caller who sees `OPEN` reads its deadline; it is written only
    /// while the state is still `word`, so a probe that answers after its phase ended (another
    /// probe already reopened the breaker) does not stretch the current open wait to the next
    /// step. Two threads that race past the check both computed the deadline from the same
    /// phase, and one of their two nearly equal values stays.
    fn reopen(&self, word: u64, now: u64) {
        if self.state.load(Ordering::Acquire) != word {
            return;
        }
        let n = self
            .consecutive_opens
            .load(Ordering::Acquire)
            .saturating_add(1);
        let until = now.saturating_add(self.config.open_duration(n).as_nanos() as u64);
        self.open_until.store(until, Ordering::Release);
        if self.transition(word, OPEN) {
            self.consecutive_opens.store(n, Ordering::Release);
        }
    }

    /// Closes from half-open with an empty window, unless the state is no longer `word` (a
    /// probe that answered after the breaker was forced or reopened must not wipe the window).
    fn close_from_half_open(&self, word: u64) {
        if self.state.load(Ordering::Acquire) != word {
            return;
        }
        self.window.reset();
        if self.transition(word, CLOSED) {
            self.consecutive_opens.store(0, Ordering::Release);
        }
    }

    /// One CAS from `word` to the next generation in state `to`; the winner notifies.
    fn transition(&self, word: u64, to: u64) -> bool {
        let next = (((word >> 3) + 1) << 3) | to;
        if self
            .state
            .compare_exchange(word, next, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        self.notify(
            CircuitState::from_code(word & 7),
            CircuitState::from_code(to),
            next >> 3,
        );
        true
    }

    /// Moves to `to` from whatever state, as the manual controls do.
    fn force(&self, to: u64) {
        let mut word = self.state.load(Ordering::Acquire);
        let next = loop {
            let next = (((word >> 3) + 1) << 3) | to;
            match self
                .state
                .compare_exchange(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break next,
                Err(actual) => word = actual,
            }
        };
        self.notify(
            CircuitState::from_code(word & 7),
            CircuitState::from_code(to),
            next >> 3,
        );
    }

    pub(crate) fn set_on_state_change(&self, hook: OnStateChange) {
        *self
            .on_change
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(hook);
    }

    pub(crate) fn force_open(&self) {
        self.force(FORCED_OPEN);
    }

    pub(crate) fn force_closed(&self) {
        self.force(FORCED_CLOSED);
    }

    pub(crate) fn reset(&self) {
        self.window.reset();
        self.consecutive_opens.store(0, Ordering::Release);
        self.force(CLOSED);
    }

    fn notify(&self, from: CircuitState, to: CircuitState, generation: u64) {
        let name = &*self.config.name;
        match to {
            CircuitState::Open | CircuitState::ForcedOpen => tracing::warn!(
                target: "bulwark::circuit_breaker",
                breaker = name, from = from.as_str(), to = to.as_str(),
                "circuit breaker opened"
            ),
            _ => tracing::info!(
                target: "bulwark::circuit_breaker",
                breaker = name, from = from.as_str(), to = to.as_str(),
                "circuit breaker state changed"
            ),
        }
        match &self.keyed_under {
            None => super::metrics::breaker_transition(&self.config.name, to, true),
            Some(layer) => super::metrics::breaker_transition(layer, to, false),
        }
        let hook = self
            .on_change
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(hook) = hook {
            hook(&StateChange {
                name: self.config.name.clone(),
                from,
                to,
                generation,
            });
        }
    }

    fn trips(&self, t: Totals, calls_needed: u64) -> bool {
        if t.calls == 0 || t.calls < calls_needed {
            return false;
        }
        let calls = t.calls as f64;
        t.failures as f64 * 100.0 / calls >= self.config.failure_rate
            || self
                .config
                .slow_call
                .is_some_and(|s| t.slow as f64 * 100.0 / calls >= s.rate)
    }

    fn record_closed(&self, generation: u64, r: Record) {
        let word = self.state.load(Ordering::Acquire);
        if word != (generation << 3) | CLOSED {
            return; // decided under an earlier state: not a signal for this one
        }
        let now = if self.bucket_nanos > 0 { self.now() } else { 0 };
        if let Some(totals) = self.window.record(r, self.tick(now)) {
            if self.trips(totals, u64::from(self.config.minimum_calls)) {
                let now = if now == 0 { self.now() } else { now };
                self.open_from_closed(word, now);
            }
        }
    }

    fn record_probe(&self, generation: u64, r: Record) {
        let hg = half_gen(generation);
        let add = if r.failure { 1 << P_FAIL } else { 1 << P_OK } | (u64::from(r.slow) << P_SLOW);
        let Ok(prev) = self
            .half_open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                (h >> P_GEN == hg).then_some(h + add)
            })
        else {
            return;
        };
        let h = prev + add;
        let probes = u64::from(self.config.half_open_probes);
        let (ok, failed, slow) = (field(h, P_OK), field(h, P_FAIL), field(h, P_SLOW));
        let word = (generation << 3) | HALF_OPEN;
        // Opens as soon as the failures among all probes can no longer stay under the threshold.
        let doomed = self.trips(
            Totals {
                calls: probes,
                failures: failed,
                slow,
            },
            0,
        );
        if doomed {
            self.reopen(word, self.now());
        } else if ok + failed >= probes {
            self.close_from_half_open(word);
        }
    }

    pub(crate) fn metrics(&self) -> (CircuitState, Totals, u64) {
        let now = self.now();
        (
            self.state(),
            self.window.totals(self.tick(now)),
            self.rejected.load(Ordering::Relaxed),
        )
    }

    /// Time left in the open state, if open.
    pub(crate) fn remaining_open(&self) -> Option<Duration> {
        match self.state() {
            CircuitState::Open => Some(Duration::from_nanos(
                self.open_until
                    .load(Ordering::Acquire)
                    .saturating_sub(self.now()),
            )),
            _ => None,
        }
    }
}

impl Permit {
    /// Reports the call's outcome.
    pub(crate) fn record(mut self, outcome: Outcome) {
        let kind = std::mem::replace(&mut self.kind, PermitKind::Reported);
        let b = &self.breaker;
        if outcome == Outcome::Ignore {
            if kind == PermitKind::Probe {
                b.release_probe(self.generation);
            }
            return;
        }
        let slow = match (b.config.slow_call, self.start) {
            (Some(s), Some(start)) => start.elapsed() >= s.duration,
            _ => false,
        };
        let r = Record {
            failure: outcome == Outcome::Failure,
            slow,
        };
        match kind {
            PermitKind::Closed => b.record_closed(self.generation, r),
            PermitKind::Probe => b.record_probe(self.generation, r),
            PermitKind::Untracked | PermitKind::Reported => {}
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // A call whose caller went away says nothing about the service; a probe's slot is freed
        // so the breaker never stays half-open for want of a result.
        if self.kind == PermitKind::Probe {
            self.breaker.release_probe(self.generation);
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &self.breaker.config.name)
            .finish_non_exhaustive()
    }
}

/// The breaker's transitions under every interleaving of two threads (loom; run with
/// `RUSTFLAGS="--cfg bulwark_loom" cargo test --release --lib loom_`, see RELIABILITY.md).
#[cfg(all(test, bulwark_loom))]
mod loom_tests {
    use std::sync::atomic::AtomicUsize as StdCounter;

    use super::*;

    /// Transitions seen by the hook, as (from, to).
    type Seen = Arc<std::sync::Mutex<Vec<(CircuitState, CircuitState)>>>;

    /// A breaker opened by two failures, whose first open lasts a nanosecond (so callers find
    /// it ready to probe) and any reopen 1,000 s (so a reopened breaker stays open).
    fn opened(probes: u32) -> (Arc<Breaker>, Seen) {
        let config = CircuitBreakerConfig::builder()
            .count_window(2)
            .minimum_calls(2)
            .wait_in_open(Duration::from_nanos(1))
            .open_backoff(1e12, Duration::from_secs(1_000))
            .half_open_probes(probes)
            .build()
            .unwrap();
        let b = Arc::new(Breaker::new(config));
        for _ in 0..2 {
            b.acquire().unwrap().record(Outcome::Failure);
        }
        assert_eq!(b.state(), CircuitState::Open);
        let seen = Seen::default();
        let s = seen.clone();
        b.set_on_state_change(Arc::new(move |c: &StateChange| {
            s.lock().unwrap().push((c.from, c.to));
        }));
        (b, seen)
    }

    /// Runs `f` under every interleaving with up to three preemptions, and prints how many
    /// there were (RELIABILITY.md quotes them).
    fn model(name: &str, f: impl Fn() + Sync + Send + 'static) {
        let runs = Arc::new(StdCounter::new(0));
        let r = runs.clone();
        let mut m = loom::model::Builder::new();
        m.preemption_bound = Some(3);
        m.check(move || {
            r.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            f();
        });
        eprintln!(
            "{name}: {} interleavings",
            runs.load(std::sync::atomic::Ordering::Relaxed)
        );
    }

    /// With one probe allowed, two callers racing into half-open get one permit between them.
    #[test]
    fn loom_half_open_admits_no_more_probes_than_allowed() {
        model("half-open admission", || {
            let (b, _) = opened(1);
            let callers: Vec<_> = (0..2)
                .map(|_| {
                    let b = b.clone();
                    loom::thread::spawn(move || b.acquire().ok())
                })
                .collect();
            let permits: Vec<Permit> = callers
                .into_iter()
                .filter_map(|t| t.join().unwrap())
                .collect();
            assert_eq!(permits.len(), 1, "one probe");
            assert_eq!(b.state(), CircuitState::HalfOpen);
            for p in permits {
                p.record(Outcome::Success);
            }
            assert_eq!(
                b.state(),
                CircuitState::Closed,
                "the probe's success closes it"
            );
        });
    }

    /// Two probes, one failing: whatever the order, the breaker ends open, reopened exactly
    /// once, and never closed by the success that arrived before or after the failure.
    #[test]
    fn loom_every_probe_outcome_counts_once() {
        model("probe outcomes", || {
            let (b, seen) = opened(2);
            let callers: Vec<_> = [Outcome::Success, Outcome::Failure]
                .into_iter()
                .map(|outcome| {
                    let b = b.clone();
                    loom::thread::spawn(move || {
                        if let Ok(p) = b.acquire() {
                            p.record(outcome);
                        }
                    })
                })
                .collect();
            for t in callers {
                t.join().unwrap();
            }
            assert_eq!(b.state(), CircuitState::Open);
            let seen = seen.lock().unwrap();
            let reopened = seen
                .iter()
                .filter(|t| **t == (CircuitState::HalfOpen, CircuitState::Open))
                .count();
            assert_eq!(reopened, 1, "{seen:?}");
            assert!(
                !seen.iter().any(|(_, to)| *to == CircuitState::Closed),
                "{seen:?}"
            );
        });
    }

    /// Two failures recorded at once by two threads open a closed breaker exactly once.
    #[test]
    fn loom_concurrent_failures_open_once() {
        model("concurrent failures", || {
            let config = CircuitBreakerConfig::builder()
                .count_window(2)
                .minimum_calls(2)
                .build()
                .unwrap();
            let b = Arc::new(Breaker::new(config));
            let opens = Arc::new(StdCounter::new(0));
            let o = opens.clone();
            b.set_on_state_change(Arc::new(move |c: &StateChange| {
                if c.to == CircuitState::Open {
                    o.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }));
            let callers: Vec<_> = (0..2)
                .map(|_| {
                    let b = b.clone();
                    loom::thread::spawn(move || b.acquire().unwrap().record(Outcome::Failure))
                })
                .collect();
            for t in callers {
                t.join().unwrap();
            }
            assert_eq!(b.state(), CircuitState::Open);
            assert_eq!(opens.load(std::sync::atomic::Ordering::SeqCst), 1);
        });
    }
}
