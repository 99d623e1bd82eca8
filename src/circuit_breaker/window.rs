//! Lock-free sliding windows.
//!
//! Both windows record an outcome with one or two atomic read-modify-writes and no lock:
//!
//! - **Count window**: a ring of one-byte outcome codes and one packed totals word (calls,
//!   failures and slow calls in 21 bits each). A call takes a slot with `fetch_add` on the
//!   cursor, swaps its code in, and adds the difference between the new and the old code to
//!   the totals in one `fetch_add`, which also returns the totals the breaker decides on. The
//!   cursor has a cache line of its own and walks the ring in steps that put two successive
//!   calls' slots in different cache lines, so two cores recording at once contend on the
//!   cursor alone.
//! - **Time window**: one 64-bit word per bucket holding the bucket's tick tag (22 bits) and its
//!   calls, failures and slow calls (14 bits each), updated by compare-and-swap. A word whose tag
//!   is not the current tick belongs to an older tick and is restarted by the same CAS, so a
//!   bucket rotates without a lock and without losing a count. Totals are the sum of the buckets
//!   whose tags are inside the window.

use crate::sync::{AtomicU8, AtomicU64, Ordering};

/// Counts over the window at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

/// One recorded call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) failure: bool,
    pub(crate) slow: bool,
}

pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    /// Records one call at `tick` (time windows) and returns the totals when the breaker should
    /// look at them: always for count windows (they come for free), and for time windows when
    /// the call was bad or a bad call is still inside the window.
    #[inline]
    pub(crate) fn record(&self, r: Record, tick: u64) -> Option<Totals> {
        match self {
            Self::Count(w) => Some(w.record(r)),
            Self::Time(w) => w.record(r, tick),
        }
    }

    pub(crate) fn totals(&self, tick: u64) -> Totals {
        match self {
            Self::Count(w) => w.totals(),
            Self::Time(w) => w.totals(tick),
        }
    }

    pub(crate) fn reset(&self) {
        match self {
            Self::Count(w) => w.reset(),
            Self::Time(w) => w.reset(),
        }
    }
}

// --- count window --------------------------------------------------------------------------

const EMPTY: u8 = 0;
const FIELD: u32 = 21;
const MASK21: u64 = (1 << FIELD) - 1;

pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    /// How far the cursor moves per call: coprime with the window's size, so any `size`
    /// consecutive calls still take `size` distinct slots, and large enough that two calls
    /// made one after the other (on two cores) write slots in different cache lines.
    stride: u64,
    /// Read by every call, written only when a call's outcome differs from the one it replaces.
    totals: AtomicU64,
    /// Written by every call: on a cache line of its own, so that its traffic between cores
    /// does not also evict the totals and the breaker's state word, which every call reads.
    cursor: CacheLine<AtomicU64>,
}

/// A value alone on its (64-byte) cache line.
#[repr(align(64))]
struct CacheLine<T>(T);

/// The cursor step for a window of `size` slots: 1 for a window of at most one cache line,
/// else the smallest step of at least 64 (or `size / 2` for a window under two lines) that
/// shares no factor with `size`.
fn stride_for(size: u64) -> u64 {
    fn gcd(mut a: u64, mut b: u64) -> u64 {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    }
    if size <= 64 {
        return 1;
    }
    let mut step = (size / 2).min(64);
    while gcd(step, size) != 1 {
        step += 1;
    }
    step
}

fn code(r: Record) -> u8 {
    1 + u8::from(r.failure) + 2 * u8::from(r.slow)
}

/// The packed totals contribution of a slot code.
fn weight(code: u8) -> u64 {
    if code == EMPTY {
        return 0;
    }
    let c = code - 1;
    let failure = u64::from(c & 1);
    let slow = u64::from(c >> 1);
    1 | (failure << FIELD) | (slow << (2 * FIELD))
}

fn unpack21(w: u64) -> Totals {
    Totals {
        calls: w & MASK21,
        failures: (w >> FIELD) & MASK21,
        slow: (w >> (2 * FIELD)) & MASK21,
    }
}

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        Self {
            slots: (0..size).map(|_| AtomicU8::new(EMPTY)).collect(),
            stride: stride_for(u64::from(size)),
            totals: AtomicU64::new(0),
            cursor: CacheLine(AtomicU64::new(0)),
        }
    }

    fn record(&self, r: Record) -> Totals {
        // The cursor counts in steps of `stride` (wrapping after 2^64 / stride calls, at which
        // point one window's worth of calls may reuse a slot early: centuries at any real rate).
        let i = self.cursor.0.fetch_add(self.stride, Ordering::Relaxed) % self.slots.len() as u64;
        let new = code(r);
        let old = self.slots[i as usize].swap(new, Ordering::AcqRel);
        // Wrapping arithmetic: the packed word is a sum of per-slot weights, so adding the
        // difference keeps it exact even if another thread's update lands in between.
        let delta = weight(new).wrapping_sub(weight(old));
        if delta == 0 {
            // The common steady state (a success replacing a success): the totals do not
            // change, so skip the read-modify-write on the one word every caller shares.
            return self.totals();
        }
        let prev = self.totals.fetch_add(delta, Ordering::AcqRel);
        self.checked(unpack21(prev.wrapping_add(delta)))
    }

    fn totals(&self) -> Totals {
        self.checked(unpack21(self.totals.load(Ordering::Acquire)))
    }

    /// The sum is exact once every update has landed, but two updates of one slot (a full ring
    /// apart, or a `reset` racing a call) may land in the other order: for that moment a field
    /// has borrowed from the next one. Such a reading says nothing; it is taken as empty rather
    /// than let a success open the breaker on a failure count of two million.
    fn checked(&self, t: Totals) -> Totals {
        if t.calls > self.slots.len() as u64 || t.failures > t.calls || t.slow > t.calls {
            return Totals::default();
        }
        t
    }

    fn reset(&self) {
        for s in &*self.slots {
            let old = s.swap(EMPTY, Ordering::AcqRel);
            self.totals.fetch_sub(weight(old), Ordering::AcqRel);
        }
        self.cursor.0.store(0, Ordering::Relaxed);
    }
}

// --- time window ---------------------------------------------------------------------------

const TAG_BITS: u32 = 22;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
const COUNT_BITS: u32 = 14;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const CALLS_SHIFT: u32 = TAG_BITS;
const FAILS_SHIFT: u32 = TAG_BITS + COUNT_BITS;
const SLOW_SHIFT: u32 = TAG_BITS + 2 * COUNT_BITS;
/// A tag no tick has: marks an empty bucket.
const NO_TAG: u64 = TAG_MASK;

pub(crate) struct TimeWindow {
    buckets: Box<[AtomicU64]>,
    /// The last tick at which a failure or slow call was recorded, plus one (0: never).
    last_bad: AtomicU64,
    /// The latest tick recorded: tells a bucket written by a later tick (whose data must stay)
    /// from one written long ago (whose tag may look "later" once tags have wrapped around).
    latest: AtomicU64,
}

fn tag(tick: u64) -> u64 {
    // NO_TAG is never a tick's tag.
    (tick % TAG_MASK) & TAG_MASK
}

/// Ticks from tag `b` forward to tag `a` (tags wrap around).
fn ahead(a: u64, b: u64) -> u64 {
    (a + TAG_MASK - b) % TAG_MASK
}

fn bucket_totals(w: u64) -> Totals {
    Totals {
        calls: (w >> CALLS_SHIFT) & COUNT_MAX,
        failures: (w >> FAILS_SHIFT) & COUNT_MAX,
        slow: (w >> SLOW_SHIFT) & COUNT_MAX,
    }
}

impl TimeWindow {
    pub(crate) fn new(buckets: u32) -> Self {
        Self {
            buckets: (0..buckets).map(|_| AtomicU64::new(NO_TAG)).collect(),
            last_bad: AtomicU64::new(0),
            latest: AtomicU64::new(0),
        }
    }

    fn len(&self) -> u64 {
        self.buckets.len() as u64
    }

    fn record(&self, r: Record, tick: u64) -> Option<Totals> {
        let bucket = &self.buckets[(tick % self.len()) as usize];
        let t = tag(tick);
        let delta = (1 << CALLS_SHIFT)
            | (u64::from(r.failure) << FAILS_SHIFT)
            | (u64::from(r.slow) << SLOW_SHIFT);
        let latest = self.latest.load(Ordering::Acquire);
        if latest < tick {
            self.latest.fetch_max(tick, Ordering::AcqRel);
        }
        // Only a tick up to the latest one recorded can have written a later tag.
        let later = latest.saturating_sub(tick);
        let mut cur = bucket.load(Ordering::Acquire);
        loop {
            let cur_tag = cur & TAG_MASK;
            if cur_tag != NO_TAG && cur_tag != t && ahead(cur_tag, t) <= later {
                break; // a thread that slept through a whole window: its tick is gone
            }
            let next = if cur_tag == t {
                if bucket_totals(cur).calls >= COUNT_MAX {
                    break; // full: this bucket's rates are those of its first calls
                }
                cur + delta
            } else {
                t | delta
            };
            match bucket.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        let bad = r.failure || r.slow;
        if bad {
            self.last_bad.fetch_max(tick + 1, Ordering::AcqRel);
        }
        let last_bad = self.last_bad.load(Ordering::Acquire);
        (bad || (last_bad > 0 && last_bad - 1 + self.len() > tick)).then(|| self.totals(tick))
    }

    fn totals(&self, tick: u64) -> Totals {
        let n = self.len();
        let mut sum = Totals::default();
        for (i, b) in self.buckets.iter().enumerate() {
            // The one tick inside the window that maps to bucket i.
            let back = (tick % n + n - i as u64) % n;
            let Some(t) = tick.checked_sub(back) else {
                continue;
            };
            let w = b.load(Ordering::Acquire);
            if w & TAG_MASK == tag(t) {
                let t = bucket_totals(w);
                sum.calls += t.calls;
                sum.failures += t.failures;
                sum.slow += t.slow;
            }
        }
        sum
    }

    fn reset(&self) {
        for b in &*self.buckets {
            b.store(NO_TAG, Ordering::Release);
        }
        self.last_bad.store(0, Ordering::Release);
        self.latest.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Record = Record {
        failure: false,
        slow: false,
    };
    const FAIL: Record = Record {
        failure: true,
        slow: false,
    };
    const SLOW: Record = Record {
        failure: false,
        slow: true,
    };

    #[test]
    fn count_window_keeps_the_last_n() {
        let w = Window::Count(CountWindow::new(4));
        w.record(FAIL, 0);
        w.record(FAIL, 0);
        w.record(OK, 0);
        let t = w.record(SLOW, 0).unwrap();
        assert_eq!((t.calls, t.failures, t.slow), (4, 2, 1));
        // Two more successes push both failures out.
        w.record(OK, 0);
        let t = w.record(OK, 0).unwrap();
        assert_eq!((t.calls, t.failures, t.slow), (4, 0, 1));
        w.reset();
        assert_eq!(w.totals(0), Totals::default());
        let t = w.record(FAIL, 0).unwrap();
        assert_eq!((t.calls, t.failures), (1, 1));
    }

    #[test]
    fn strides_visit_every_slot_and_leave_the_cache_line() {
        for size in [
            1_u64, 2, 63, 64, 65, 100, 128, 129, 1_000, 1_024, 4_096, 65_536,
        ] {
            let step = stride_for(size);
            if size > 64 {
                assert!(step >= (size / 2).min(64), "size {size}: step {step}");
            }
            let mut seen = vec![false; usize::try_from(size).unwrap()];
            for k in 0..size {
                seen[usize::try_from((k * step) % size).unwrap()] = true;
            }
            assert!(
                seen.iter().all(|&s| s),
                "size {size}: step {step} skips a slot"
            );
        }
    }

    #[test]
    fn a_strided_window_keeps_exactly_the_last_n() {
        for size in [100_u32, 1_000] {
            let w = CountWindow::new(size);
            assert!(w.stride > 1);
            for _ in 0..size {
                w.record(OK);
            }
            // Each failure replaces the oldest success, one at a time.
            for n in 1..=u64::from(size) {
                let t = w.record(FAIL);
                assert_eq!((t.calls, t.failures), (u64::from(size), n), "size {size}");
            }
            // And successes push the failures out in the order they came.
            for n in 1..=u64::from(size) {
                let t = w.record(OK);
                assert_eq!(t.failures, u64::from(size) - n, "size {size}");
            }
        }
    }

    #[test]
    fn count_window_is_exact_under_threads() {
        let w = std::sync::Arc::new(CountWindow::new(1_000));
        std::thread::scope(|s| {
            for t in 0..4 {
                let w = w.clone();
                s.spawn(move || {
                    for i in 0..10_000 {
                        w.record(Record {
                            failure: (i + t) % 4 == 0,
                            slow: false,
                        });
                    }
                });
            }
        });
        let total = w.totals();
        assert_eq!(total.calls, 1_000);
        // The totals match what the slots hold.
        let fails = w
            .slots
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) == code(FAIL))
            .count() as u64;
        assert_eq!(total.failures, fails);
    }

    #[test]
    fn time_window_forgets_old_buckets() {
        let w = Window::Time(TimeWindow::new(3));
        w.record(FAIL, 10);
        w.record(OK, 11);
        let t = w.record(OK, 12).unwrap();
        assert_eq!((t.calls, t.failures), (3, 1));
        // At tick 13 the failure at tick 10 has left the window.
        assert_eq!(w.totals(13).failures, 0);
        assert_eq!(w.totals(13).calls, 2);
        // A long silence empties it entirely, even buckets never rotated.
        assert_eq!(w.totals(100), Totals::default());
        w.record(OK, 100);
        assert_eq!(w.totals(100).calls, 1);
    }

    #[test]
    fn time_window_reports_totals_only_while_bad_calls_are_inside() {
        let w = Window::Time(TimeWindow::new(3));
        assert_eq!(w.record(OK, 1), None, "no bad call yet");
        assert!(w.record(FAIL, 2).is_some());
        assert!(
            w.record(OK, 4).is_some(),
            "the failure at 2 is still inside"
        );
        assert_eq!(w.record(OK, 5), None, "it has left");
    }

    #[test]
    fn a_full_bucket_keeps_its_first_calls() {
        let w = TimeWindow::new(1);
        for _ in 0..COUNT_MAX + 10 {
            w.record(FAIL, 7);
        }
        let t = w.totals(7);
        assert_eq!((t.calls, t.failures), (COUNT_MAX, COUNT_MAX));
    }

    #[test]
    fn time_window_is_exact_under_threads() {
        let w = std::sync::Arc::new(TimeWindow::new(10));
        std::thread::scope(|s| {
            for _ in 0..4 {
                let w = w.clone();
                s.spawn(move || {
                    for tick in 0..10 {
                        for _ in 0..500 {
                            w.record(FAIL, tick);
                        }
                    }
                });
            }
        });
        assert_eq!(w.totals(9).calls, 4 * 10 * 500);
    }

    #[test]
    fn a_stale_tick_never_overwrites_a_newer_bucket() {
        let w = TimeWindow::new(2);
        w.record(FAIL, 10);
        w.record(OK, 8); // same bucket, older tick: dropped
        assert_eq!(w.totals(10).calls, 1);
        assert_eq!(w.totals(10).failures, 1);
    }

    #[test]
    fn a_torn_reading_of_the_count_totals_is_taken_as_empty() {
        let w = CountWindow::new(2);
        w.record(OK);
        // A slot's FAIL -> OK update landing before its OK -> FAIL one: the failures field
        // borrows for a moment.
        let torn = weight(code(OK)).wrapping_sub(weight(code(FAIL)));
        w.totals.fetch_add(torn, Ordering::AcqRel);
        assert!(unpack21(w.totals.load(Ordering::Acquire)).failures > 2);
        let t = w.totals();
        assert_eq!((t.calls, t.failures, t.slow), (0, 0, 0));
        // The late update lands: exact again.
        w.totals.fetch_add(torn.wrapping_neg(), Ordering::AcqRel);
        let t = w.totals();
        assert_eq!((t.calls, t.failures), (1, 0));
    }

    /// After a quiet spell of more than half the tags' range (24 days of one-second buckets,
    /// 35 minutes of one-millisecond ones), a bucket's old tag can look later than the tick:
    /// it is still overwritten, or the window would drop every call until the tags wrapped.
    #[test]
    fn a_long_quiet_spell_does_not_blind_the_window() {
        for quiet in [3_000_000, TAG_MASK / 2 + 1, TAG_MASK - 1, TAG_MASK + 5] {
            let w = TimeWindow::new(1);
            w.record(OK, 0);
            w.record(FAIL, quiet);
            assert_eq!(w.totals(quiet).failures, 1, "after {quiet} ticks");
            assert_eq!(w.totals(quiet).calls, 1, "after {quiet} ticks");
        }
        let w = TimeWindow::new(4);
        for tick in 0..8 {
            w.record(OK, tick);
        }
        let later = 8 + 3_000_000;
        for tick in later..later + 4 {
            w.record(FAIL, tick);
        }
        let t = w.totals(later + 3);
        assert_eq!((t.calls, t.failures), (4, 4));
    }
}
