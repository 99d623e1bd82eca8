use std::{
    num::NonZeroU64,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use http::HeaderName;
use tower_layer::Layer;

use super::{DefaultMakeRequestId, MakeRequestId, RequestLog};
use crate::redact::Redactor;

/// Settings shared by every service of one layer.
#[derive(Debug, Clone)]
pub(super) struct LogSettings {
    pub(super) slow: Duration,
    pub(super) sample_every: u64,
    pub(super) redactor: Redactor,
    pub(super) log_headers: bool,
    pub(super) metrics: bool,
    /// The state every service of the layer updates. Kept in the settings so that a service,
    /// and each request it tracks, holds one reference-counted pointer: axum clones a route's
    /// services for every request, and every `Arc` they hold is then written by every core.
    pub(super) shared: Arc<Shared>,
}

/// What every service of one layer shares and updates: the sampling counter and the
/// request-duration histogram's keys.
#[derive(Debug, Default)]
pub(super) struct Shared {
    pub(super) sampled: AtomicU64,
    pub(super) keys: super::metrics::HttpKeys,
}

/// Logs every request once and gives it a request id. See the [module docs](super).
#[derive(Debug, Clone)]
#[must_use]
pub struct RequestLogLayer<M = DefaultMakeRequestId> {
    pub(super) make_id: M,
    pub(super) config: Arc<LogSettings>,
}

impl RequestLogLayer {
    /// Logs with the defaults: UUIDv7 ids, requests slower than 1 s at `WARN`, every request
    /// logged, no headers logged, request metrics recorded (feature `metrics`).
    pub fn new() -> Self {
        Self {
            make_id: DefaultMakeRequestId,
            config: Arc::new(LogSettings {
                slow: Duration::from_secs(1),
                sample_every: 1,
                redactor: Redactor::default(),
                log_headers: false,
                metrics: true,
                shared: Arc::default(),
            }),
        }
    }
}

impl Default for RequestLogLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<M> RequestLogLayer<M> {
    fn config_mut(&mut self) -> &mut LogSettings {
        Arc::make_mut(&mut self.config)
    }

    /// Requests slower than `threshold` (to the end of the response body) are logged at `WARN`
    /// and never sampled away.
    pub fn slow_threshold(mut self, threshold: Duration) -> Self {
        self.config_mut().slow = threshold;
        self
    }

    /// Logs only one in `every` successful, fast requests; errors, 4xx, 5xx and slow requests
    /// are always logged.
    pub fn sample_successes(mut self, every: NonZeroU64) -> Self {
        self.config_mut().sample_every = every.get();
        self
    }

    /// Adds the request headers to the event (field `http.request.headers`), sensitive ones
    /// shown as `REDACTED`: every name containing `auth`, `cookie`, `token`, `secret`, `key`,
    /// `session`, `password`, `signature`, `jwt` or `credential` (so `Authorization`,
    /// `X-Forwarded-Authorization`, `Cookie`, `X-Api-Key`, `X-Session-Id`, ...), and the names
    /// added with [`redact_header`](Self::redact_header). A `Referer`'s query is redacted like
    /// the request's own.
    pub fn log_request_headers(mut self, on: bool) -> Self {
        self.config_mut().log_headers = on;
        self
    }

    /// Never logs the value of header `name`.
    pub fn redact_header(mut self, name: HeaderName) -> Self {
        self.config_mut().redactor.add_header(name);
        self
    }

    /// Never logs the value of query parameters whose name contains `name` (case-insensitive).
    pub fn redact_query_param(mut self, name: &str) -> Self {
        self.config_mut().redactor.add_query(name);
        self
    }

    /// Whether to record the `http_server_request_duration_seconds` histogram (default on; a
    /// no-op without the `metrics` feature).
    pub fn request_metrics(mut self, on: bool) -> Self {
        self.config_mut().metrics = on;
        self
    }

    /// Makes ids for requests that arrive without a valid one with `make_id`.
    pub fn make_request_id<M2: MakeRequestId>(self, make_id: M2) -> RequestLogLayer<M2> {
        RequestLogLayer {
            make_id,
            config: self.config,
        }
    }
}

impl<S, M: Clone> Layer<S> for RequestLogLayer<M> {
    type Service = RequestLog<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestLog {
            inner,
            make_id: self.make_id.clone(),
            config: self.config.clone(),
        }
    }
}
