//! The circuit breaker (the generic, non-HTTP one; the HTTP layer shares its state machine)
//! against a reference model written from its documented rules, with a count window and with a
//! time window. Generated operations: calls started and left in flight, finished as successes
//! or failures after any delay (so slow or not), cancelled (dropped), time steps past open
//! waits and half-open limits, and `force_open`, `force_closed` and `reset` at any point.
//! After every operation the breaker's state, window counts, rejections and remaining open
//! time are compared with the model's, and every call's admission or `retry_after` too. So
//! half-open never admits more probes than configured, never stays stuck, and every probe's
//! outcome counts once.

mod support;

use std::{
    collections::VecDeque,
    future::Future,
    pin::Pin,
    task::{Context, Poll, Waker},
    time::Duration,
};

use bulwark::{
    BoxError,
    circuit_breaker::{
        CircuitBreakerConfig, CircuitBreakerHandle, CircuitState,
        generic::{CircuitOpen, GenericCircuitBreakerLayer},
    },
};
use proptest::prelude::*;
use tokio::sync::oneshot;
use tower::{Layer, Service, service_fn};

const MIN_CALLS: u32 = 3;
const RATE: f64 = 50.0;
const SLOW: Duration = Duration::from_millis(100);
const WAIT: Duration = Duration::from_secs(1);
const MAX_WAIT: Duration = Duration::from_secs(4);
const PROBES: u32 = 2;
const HALF_OPEN_LIMIT: Duration = Duration::from_secs(3);
const COUNT: u32 = 5;
const TIME: Duration = Duration::from_secs(3);
const BUCKET: Duration = Duration::from_secs(1);

fn config(time_window: bool) -> CircuitBreakerConfig {
    let b = CircuitBreakerConfig::builder()
        .name("model")
        .minimum_calls(MIN_CALLS)
        .failure_rate_threshold(RATE)
        .slow_calls(SLOW, RATE)
        .wait_in_open(WAIT)
        .open_backoff(2.0, MAX_WAIT)
        .half_open_probes(PROBES)
        .max_wait_in_half_open(HALF_OPEN_LIMIT);
    let b = if time_window {
        b.time_window_with_buckets(TIME, BUCKET)
    } else {
        b.count_window(COUNT)
    };
    b.build().unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    Start,
    /// Finish the in-flight call at this index (modulo their count).
    Finish {
        which: usize,
        failure: bool,
    },
    Cancel {
        which: usize,
    },
    Advance {
        ms: u64,
    },
    ForceOpen,
    ForceClosed,
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Start),
        6 => (any::<usize>(), any::<bool>()).prop_map(|(which, failure)| Op::Finish { which, failure }),
        1 => any::<usize>().prop_map(|which| Op::Cancel { which }),
        4 => prop_oneof![1u64..150, Just(100), Just(1_000), 200u64..3_500].prop_map(|ms| Op::Advance { ms }),
        1 => prop_oneof![Just(Op::ForceOpen), Just(Op::ForceClosed), Just(Op::Reset)],
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed,
    Open {
        until: u64,
    },
    HalfOpen {
        since: u64,
        issued: u32,
        ok: u32,
        failed: u32,
        slow: u32,
    },
    ForcedOpen,
    ForcedClosed,
}

#[derive(Debug, Clone, Copy)]
enum Permit {
    Closed { generation: u64, start: u64 },
    Probe { generation: u64, start: u64 },
    Untracked,
}

struct Model {
    time_window: bool,
    state: State,
    generation: u64,
    consecutive_opens: u32,
    /// Calls recorded while closed: (tick, failure, slow), oldest first.
    window: VecDeque<(u64, bool, bool)>,
    rejected: u64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap()
}

fn open_duration(n: u32) -> u64 {
    let secs = WAIT.as_secs_f64() * 2f64.powi(n.min(64) as i32);
    if secs >= MAX_WAIT.as_secs_f64() {
        nanos(MAX_WAIT)
    } else {
        nanos(Duration::from_secs_f64(secs))
    }
}

fn trips(calls: u64, failures: u64, slow: u64, needed: u64) -> bool {
    calls > 0
        && calls >= needed
        && (failures as f64 * 100.0 / calls as f64 >= RATE
            || slow as f64 * 100.0 / calls as f64 >= RATE)
}

impl Model {
    fn tick(&self, now: u64) -> u64 {
        if self.time_window {
            now / nanos(BUCKET)
        } else {
            0
        }
    }

    /// (calls, failures, slow) in the window at `now`.
    fn totals(&self, now: u64) -> (u64, u64, u64) {
        let tick = self.tick(now);
        let buckets = nanos(TIME) / nanos(BUCKET);
        let live = self
            .window
            .iter()
            .filter(|(t, _, _)| !self.time_window || (*t <= tick && *t + buckets > tick));
        live.fold((0, 0, 0), |(c, f, s), &(_, fail, slow)| {
            (c + 1, f + u64::from(fail), s + u64::from(slow))
        })
    }

    fn to(&mut self, state: State) {
        self.generation += 1;
        self.state = state;
    }

    fn reopen(&mut self, now: u64) {
        let n = self.consecutive_opens + 1;
        self.to(State::Open {
            until: now + open_duration(n),
        });
        self.consecutive_opens = n;
    }

    fn acquire(&mut self, now: u64) -> Result<Permit, u64> {
        loop {
            match self.state {
                State::Closed => {
                    return Ok(Permit::Closed {
                        generation: self.generation,
                        start: now,
                    });
                }
                State::ForcedClosed => return Ok(Permit::Untracked),
                State::ForcedOpen => {
                    self.rejected += 1;
                    return Err(nanos(WAIT));
                }
                State::Open { until } if now < until => {
                    self.rejected += 1;
                    return Err(until - now);
                }
                State::Open { .. } => self.to(State::HalfOpen {
                    since: now,
                    issued: 0,
                    ok: 0,
                    failed: 0,
                    slow: 0,
                }),
                State::HalfOpen {
                    since,
                    issued,
                    ok,
                    failed,
                    slow,
                } => {
                    let mut since = since;
                    if now - since >= nanos(HALF_OPEN_LIMIT) {
                        if issued > ok + failed {
                            // Probes that never answered: open again rather than wait forever.
                            self.reopen(now);
                            continue;
                        }
                        since = now;
                    }
                    if issued >= PROBES {
                        self.state = State::HalfOpen {
                            since,
                            issued,
                            ok,
                            failed,
                            slow,
                        };
                        self.rejected += 1;
                        return Err(nanos(Duration::from_secs(1)));
                    }
                    self.state = State::HalfOpen {
                        since: now,
                        issued: issued + 1,
                        ok,
                        failed,
                        slow,
                    };
                    return Ok(Permit::Probe {
                        generation: self.generation,
                        start: now,
                    });
                }
            }
        }
    }

    fn finish(&mut self, permit: Permit, failure: bool, now: u64) {
        match permit {
            Permit::Closed { generation, start } => {
                if self.state != State::Closed || self.generation != generation {
                    return; // decided under an earlier state
                }
                let slow = now - start >= nanos(SLOW);
                let tick = self.tick(now);
                self.window.push_back((tick, failure, slow));
                if !self.time_window && self.window.len() > COUNT as usize {
                    self.window.pop_front();
                }
                let (c, f, s) = self.totals(now);
                if trips(c, f, s, u64::from(MIN_CALLS)) {
                    self.to(State::Open {
                        until: now + open_duration(0),
                    });
                    self.consecutive_opens = 0;
                }
            }
            Permit::Probe { generation, start } => {
                let State::HalfOpen {
                    since,
                    issued,
                    ok,
                    failed,
                    slow,
                } = self.state
                else {
                    return;
                };
                if self.generation != generation {
                    return;
                }
                let is_slow = now - start >= nanos(SLOW);
                let (ok, failed) = if failure {
                    (ok, failed + 1)
                } else {
                    (ok + 1, failed)
                };
                let slow = slow + u32::from(is_slow);
                self.state = State::HalfOpen {
                    since,
                    issued,
                    ok,
                    failed,
                    slow,
                };
                if trips(u64::from(PROBES), u64::from(failed), u64::from(slow), 0) {
                    self.reopen(now);
                } else if ok + failed >= PROBES {
                    self.window.clear();
                    self.to(State::Closed);
                    self.consecutive_opens = 0;
                }
            }
            Permit::Untracked => {}
        }
    }

    fn cancel(&mut self, permit: Permit) {
        if let (
            Permit::Probe { generation, .. },
            State::HalfOpen {
                since,
                issued,
                ok,
                failed,
                slow,
            },
        ) = (permit, self.state)
        {
            if generation == self.generation && issued > 0 {
                self.state = State::HalfOpen {
                    since,
                    issued: issued - 1,
                    ok,
                    failed,
                    slow,
                };
            }
        }
    }

    fn circuit_state(&self) -> CircuitState {
        match self.state {
            State::Closed => CircuitState::Closed,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
            State::ForcedOpen => CircuitState::ForcedOpen,
            State::ForcedClosed => CircuitState::ForcedClosed,
        }
    }
}

type Call = Pin<Box<dyn Future<Output = Result<(), BoxError>>>>;

fn poll_once(call: &mut Call) -> Poll<Result<(), BoxError>> {
    call.as_mut().poll(&mut Context::from_waker(Waker::noop()))
}

fn compare(
    handle: &CircuitBreakerHandle,
    model: &Model,
    now: u64,
    n: usize,
) -> Result<(), TestCaseError> {
    let m = handle.metrics();
    prop_assert_eq!(m.state, model.circuit_state(), "operation {}: state", n);
    let (calls, failures, slow) = model.totals(now);
    prop_assert_eq!(
        (m.calls, m.failures, m.slow_calls),
        (calls, failures, slow),
        "operation {}: window",
        n
    );
    prop_assert_eq!(m.rejected, model.rejected, "operation {}: rejections", n);
    let open = match model.state {
        State::Open { until } => Some(Duration::from_nanos(until.saturating_sub(now))),
        _ => None,
    };
    prop_assert_eq!(m.open_remaining, open, "operation {}: time left open", n);
    Ok(())
}

fn run(time_window: bool, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = support::paused_runtime();
    rt.block_on(async move {
        let layer = GenericCircuitBreakerLayer::new(config(time_window));
        let handle = layer.handle();
        let mut svc = layer.layer(service_fn(|done: oneshot::Receiver<bool>| async move {
            if done.await.unwrap() {
                Err::<(), BoxError>("failed".into())
            } else {
                Ok(())
            }
        }));
        let mut model = Model {
            time_window,
            state: State::Closed,
            generation: 0,
            consecutive_opens: 0,
            window: VecDeque::new(),
            rejected: 0,
        };
        let start = tokio::time::Instant::now();
        let mut in_flight: Vec<(oneshot::Sender<bool>, Call, Permit)> = Vec::new();
        for (n, op) in ops.into_iter().enumerate() {
            let now = u64::try_from(start.elapsed().as_nanos()).unwrap();
            match op {
                Op::Start => {
                    let (tx, rx) = oneshot::channel();
                    let mut cx = Context::from_waker(Waker::noop());
                    prop_assert!(svc.poll_ready(&mut cx).is_ready());
                    let mut call: Call = Box::pin(svc.call(rx));
                    let want = model.acquire(now);
                    match (poll_once(&mut call), want) {
                        (Poll::Pending, Ok(permit)) => in_flight.push((tx, call, permit)),
                        (Poll::Ready(Err(e)), Err(wait)) => {
                            let open = e
                                .downcast_ref::<CircuitOpen>()
                                .expect("a CircuitOpen error");
                            prop_assert_eq!(
                                open.retry_after(),
                                Duration::from_nanos(wait),
                                "operation {}",
                                n
                            );
                        }
                        (got, want) => prop_assert!(
                            false,
                            "operation {}: call {:?}, model {:?}",
                            n,
                            got.map(|r| r.is_ok()),
                            want
                        ),
                    }
                }
                Op::Finish { which, failure } if !in_flight.is_empty() => {
                    let (tx, mut call, permit) = in_flight.remove(which % in_flight.len());
                    tx.send(failure).unwrap();
                    let Poll::Ready(result) = poll_once(&mut call) else {
                        panic!("a finished call is ready")
                    };
                    prop_assert_eq!(result.is_err(), failure);
                    model.finish(permit, failure, now);
                }
                Op::Cancel { which } if !in_flight.is_empty() => {
                    let (_, call, permit) = in_flight.remove(which % in_flight.len());
                    drop(call);
                    model.cancel(permit);
                }
                Op::Finish { .. } | Op::Cancel { .. } => {}
                Op::Advance { ms } => tokio::time::advance(Duration::from_millis(ms)).await,
                Op::ForceOpen => {
                    handle.force_open();
                    model.to(State::ForcedOpen);
                }
                Op::ForceClosed => {
                    handle.force_closed();
                    model.to(State::ForcedClosed);
                }
                Op::Reset => {
                    handle.reset();
                    model.window.clear();
                    model.consecutive_opens = 0;
                    model.to(State::Closed);
                }
            }
            let now = u64::try_from(start.elapsed().as_nanos()).unwrap();
            compare(&handle, &model, now, n)?;
            if let State::HalfOpen { issued, .. } = model.state {
                prop_assert!(issued <= PROBES, "never more probes than configured");
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        // A failure prints its minimal case; it becomes a named regression test, not a file.
        failure_persistence: None,
        ..ProptestConfig::with_cases(support::proptest_cases(128))
    })]

    #[test]
    fn a_count_window_breaker_answers_as_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(false, ops)?;
    }

    #[test]
    fn a_time_window_breaker_answers_as_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(true, ops)?;
    }
}
