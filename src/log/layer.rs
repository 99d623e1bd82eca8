use std::time::Duration;

use tower_layer::Layer;

use super::{DefaultMakeRequestId, MakeRequestId, RequestLog};

/// Logs every request once and gives it a request id. See the [module docs](super).
#[derive(Debug, Clone)]
#[must_use]
pub struct RequestLogLayer<M = DefaultMakeRequestId> {
    pub(super) make_id: M,
    pub(super) slow: Duration,
}

impl RequestLogLayer {
    /// Logs with the defaults: UUIDv7 ids, requests slower than 1 s logged at `WARN`.
    pub fn new() -> Self {
        Self {
            make_id: DefaultMakeRequestId,
            slow: Duration::from_secs(1),
        }
    }
}

impl Default for RequestLogLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<M> RequestLogLayer<M> {
    /// Requests slower than `threshold` are logged at `WARN` even when they succeed.
    pub fn slow_threshold(mut self, threshold: Duration) -> Self {
        self.slow = threshold;
        self
    }

    /// Makes ids for requests that arrive without a valid one with `make_id`.
    pub fn make_request_id<M2: MakeRequestId>(self, make_id: M2) -> RequestLogLayer<M2> {
        RequestLogLayer {
            make_id,
            slow: self.slow,
        }
    }
}

impl<S, M: Clone> Layer<S> for RequestLogLayer<M> {
    type Service = RequestLog<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestLog {
            inner,
            make_id: self.make_id.clone(),
            slow: self.slow,
        }
    }
}
