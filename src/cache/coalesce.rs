//! Request coalescing: while one request for a key calls the inner service (the *leader*),
//! others for the same key wait for its entry instead of calling too.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::watch;

use super::store::Entry;

#[derive(Clone)]
enum FlightState {
    Pending,
    Done(Option<Entry>),
}

/// The calls in flight, by key. Bounded by the number of requests in flight: an entry lives
/// exactly as long as its leader's call.
pub(super) struct Flights {
    table: Mutex<HashMap<String, Arc<watch::Sender<FlightState>>>>,
    /// Flights that ended with an entry stored, ever. A request that missed and then finds no
    /// flight to join looks again if this moved since its lookup: the flight it missed may
    /// have stored its entry and left the table in between.
    landed: AtomicU64,
}

impl Flights {
    pub(super) fn new() -> Self {
        Self {
            table: Mutex::new(HashMap::new()),
            landed: AtomicU64::new(0),
        }
    }

    /// How many flights have landed with an entry so far (see [`Join::Lead`]'s caller).
    pub(super) fn landed(&self) -> u64 {
        self.landed.load(Ordering::Acquire)
    }

    /// Leads the flight for `key`, or waits for the one already in the air.
    pub(super) fn join(self: &Arc<Self>, key: &str) -> Join {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = table.get(key) {
            return Join::Wait(Waiter(tx.subscribe()));
        }
        let tx = Arc::new(watch::Sender::new(FlightState::Pending));
        table.insert(key.to_owned(), tx.clone());
        Join::Lead(FlightGuard {
            flights: self.clone(),
            key: key.to_owned(),
            tx,
            done: false,
        })
    }
}

/// What [`Flights::join`] made of a request.
pub(super) enum Join {
    Lead(FlightGuard),
    Wait(Waiter),
}

/// A request waiting for another's flight.
pub(super) struct Waiter(watch::Receiver<FlightState>);

impl Waiter {
    /// The entry the leader stored, if it stored one within `deadline`.
    pub(super) async fn entry(mut self, deadline: Duration) -> Option<Entry> {
        let waited = tokio::time::timeout(
            deadline,
            self.0.wait_for(|s| matches!(s, FlightState::Done(_))),
        )
        .await;
        match waited {
            Ok(Ok(state)) => match &*state {
                FlightState::Done(Some(e)) => Some(e.clone()),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The leader of a coalesced call. Publishes its entry (or `None`: waiters call on their own)
/// and leaves the flight table, also when its future is dropped.
pub(super) struct FlightGuard {
    flights: Arc<Flights>,
    key: String,
    tx: Arc<watch::Sender<FlightState>>,
    done: bool,
}

impl FlightGuard {
    pub(super) fn finish(mut self, entry: Option<Entry>) {
        self.complete(entry);
    }

    fn complete(&mut self, entry: Option<Entry>) {
        if self.done {
            return;
        }
        self.done = true;
        if entry.is_some() {
            // Before leaving the table: whoever then finds no flight sees this (see `landed`).
            self.flights.landed.fetch_add(1, Ordering::Release);
        }
        {
            let mut table = self.flights.table.lock().unwrap_or_else(|e| e.into_inner());
            if table
                .get(&self.key)
                .is_some_and(|tx| Arc::ptr_eq(tx, &self.tx))
            {
                table.remove(&self.key);
            }
        }
        self.tx.send_replace(FlightState::Done(entry));
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.complete(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::store::Entry;

    fn entry() -> Entry {
        Entry::index(1, Vec::new(), Duration::from_secs(1))
    }

    #[tokio::test]
    async fn the_second_request_for_a_key_waits_for_the_first() {
        let flights = Arc::new(Flights::new());
        let Join::Lead(lead) = flights.join("k") else {
            panic!("the first request leads")
        };
        let Join::Wait(wait) = flights.join("k") else {
            panic!("the second waits")
        };
        assert!(matches!(flights.join("other"), Join::Lead(_)));
        let before = flights.landed();
        lead.finish(Some(entry()));
        assert!(wait.entry(Duration::from_secs(1)).await.is_some());
        assert_eq!(flights.landed(), before + 1);
        assert!(
            matches!(flights.join("k"), Join::Lead(_)),
            "the flight left"
        );
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_its_waiters_with_nothing() {
        let flights = Arc::new(Flights::new());
        let Join::Lead(lead) = flights.join("k") else {
            panic!()
        };
        let Join::Wait(wait) = flights.join("k") else {
            panic!()
        };
        drop(lead);
        assert!(wait.entry(Duration::from_secs(1)).await.is_none());
        assert_eq!(flights.landed(), 0, "nothing stored, nothing landed");
        assert!(matches!(flights.join("k"), Join::Lead(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gives_up_after_its_deadline() {
        let flights = Arc::new(Flights::new());
        let Join::Lead(_lead) = flights.join("k") else {
            panic!()
        };
        let Join::Wait(wait) = flights.join("k") else {
            panic!()
        };
        assert!(wait.entry(Duration::from_millis(10)).await.is_none());
    }
}
