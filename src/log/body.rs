//! [`LogBody`]: passes the response body through and completes the request's log event when
//! the body ends (or is dropped), so durations cover the whole response.

use std::{
    any::Any,
    error::Error as StdError,
    fmt::{self, Write as _},
    net::IpAddr,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Buf;
use http::{HeaderValue, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tracing::{Level, Span};

use super::{RequestId, layer::LogSettings, route::Route};
use crate::{
    BoxError, Rejection,
    marker::{BULWARK_FALLBACK, CACHE_STATUS, IDEMPOTENT_REPLAYED},
};

/// What the event needs from the request; gathered only when a subscriber listens.
pub(super) struct LogInfo {
    pub(super) span: Span,
    pub(super) method: &'static str,
    pub(super) method_original: Option<String>,
    pub(super) uri: Uri,
    /// The query with its secrets redacted, if it has any; else the URI's query is logged.
    pub(super) redacted_query: Option<String>,
    pub(super) scheme: &'static str,
    /// The `Host` header (else the URI's authority is logged).
    pub(super) host: Option<HeaderValue>,
    pub(super) version: &'static str,
    pub(super) route: Option<Route>,
    pub(super) client: Option<IpAddr>,
    pub(super) user_agent: Option<HeaderValue>,
    pub(super) headers: Option<String>,
    pub(super) trace: Option<(String, String)>,
}

impl LogInfo {
    fn query(&self) -> Option<&str> {
        self.redacted_query.as_deref().or_else(|| self.uri.query())
    }

    /// `server.address` and `server.port`: the `Host` (or the URI's authority) split into the
    /// name and the port, as OpenTelemetry has them. Called inside the event macros, which
    /// evaluate fields only for an event a subscriber wants (an INFO line under a WARN filter
    /// costs nothing here).
    fn server(&self) -> (Option<&str>, Option<u16>) {
        let authority = match &self.host {
            Some(host) => host.to_str().ok(),
            None => self.uri.authority().map(http::uri::Authority::as_str),
        };
        authority.map_or((None, None), |a| {
            let (address, port) = split_host_port(a);
            (Some(address), port)
        })
    }
}

/// `host[:port]`, `[v6]` or `[v6]:port` as the name (an IPv6 address without its brackets)
/// and the port. Anything else (a port that is not a number) is all name.
fn split_host_port(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some((v6, after)) = rest.split_once(']') {
            match after.strip_prefix(':').map(str::parse) {
                None if after.is_empty() => return (v6, None),
                Some(Ok(port)) => return (v6, Some(port)),
                _ => {}
            }
        }
        return (authority, None);
    }
    match authority.split_once(':') {
        Some((host, port)) => match port.parse() {
            Ok(port) => (host, Some(port)),
            Err(_) => (authority, None),
        },
        None => (authority, None),
    }
}

/// What the request-duration histogram needs.
pub(super) struct MetricInfo {
    pub(super) method: super::metrics::HttpMethod,
    pub(super) route: Option<Route>,
}

/// The bulwark decisions visible on the response.
#[derive(Default)]
pub(super) struct Markers {
    rejection: Option<&'static str>,
    fallback: Option<HeaderValue>,
    cache_status: Option<HeaderValue>,
    replayed: bool,
}

impl Markers {
    /// Above this many fields, the response's markers are looked up rather than scanned for.
    const SCAN_UP_TO: usize = 16;

    /// The markers on `res`.
    ///
    /// A response has a handful of fields, and these names are not standard ones, so a lookup
    /// hashes each name byte by byte: one walk over the fields, comparing names (a standard name
    /// never equals one of these, and differing lengths end the comparison at once), costs less
    /// than three lookups.
    pub(super) fn of<B>(res: &Response<B>) -> Self {
        let h = res.headers();
        let mut markers = Self {
            rejection: res.extensions().get::<Rejection>().map(Rejection::kind),
            ..Self::default()
        };
        if h.len() > Self::SCAN_UP_TO {
            markers.fallback = h.get(&BULWARK_FALLBACK).cloned();
            markers.cache_status = h.get(&CACHE_STATUS).cloned();
            markers.replayed = h.contains_key(&IDEMPOTENT_REPLAYED);
            return markers;
        }
        for (name, value) in h {
            if *name == CACHE_STATUS {
                markers.cache_status.get_or_insert_with(|| value.clone());
            } else if *name == BULWARK_FALLBACK {
                markers.fallback.get_or_insert_with(|| value.clone());
            } else if *name == IDEMPOTENT_REPLAYED {
                markers.replayed = true;
            }
        }
        markers
    }
}

/// What a measured or logged request carries from its call to the end of its body. Small, so
/// that a response (moved several times on its way to the connection) and a response future
/// stay small: what only the log line needs is in [`Logged`], allocated once.
pub(super) struct Tracked {
    pub(super) start: Instant,
    pub(super) config: Arc<LogSettings>,
    /// Known when the response's head is ready.
    pub(super) status: StatusCode,
    /// For the request-duration histogram (metrics on).
    pub(super) metrics: Option<MetricInfo>,
    /// For the log line (a subscriber listens).
    pub(super) log: Option<Box<Logged>>,
}

/// What the log line needs beyond [`Tracked`].
pub(super) struct Logged {
    pub(super) info: LogInfo,
    pub(super) id: RequestId,
    /// The rest is known when the response's head is ready, or later.
    pub(super) markers: Markers,
    pub(super) head: Duration,
    pub(super) bytes: u64,
    /// The body was at its end when the head was ready (servers may never poll it).
    pub(super) empty: bool,
}

impl Logged {
    pub(super) fn new(info: LogInfo, id: RequestId) -> Self {
        Self {
            info,
            id,
            markers: Markers::default(),
            head: Duration::ZERO,
            bytes: 0,
            empty: false,
        }
    }
}

/// How the body ended.
enum End<'a> {
    Complete,
    Dropped,
    Failed(&'a dyn fmt::Display),
}

pin_project! {
    /// The response body of [`RequestLog`](super::RequestLog): the inner body, untouched.
    pub struct LogBody<B> {
        #[pin]
        inner: B,
        completion: Option<Tracked>,
    }

    impl<B> PinnedDrop for LogBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(c) = this.completion.take() {
                let complete = c.log.as_ref().is_none_or(|l| l.empty);
                let end = if complete { End::Complete } else { End::Dropped };
                c.finish(&end);
            }
        }
    }
}

impl<B> LogBody<B> {
    pub(super) fn passthrough(inner: B) -> Self {
        Self {
            inner,
            completion: None,
        }
    }

    pub(super) fn new(inner: B, completion: Tracked) -> Self {
        Self {
            inner,
            completion: Some(completion),
        }
    }
}

impl<B> fmt::Debug for LogBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LogBody")
    }
}

impl<B> Body for LogBody<B>
where
    B: Body,
    B::Error: fmt::Display,
{
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if let Some(c) = this.completion {
            match &frame {
                Some(Ok(f)) => {
                    if let (Some(log), Some(data)) = (&mut c.log, f.data_ref()) {
                        log.bytes += data.remaining() as u64;
                    }
                }
                Some(Err(e)) => {
                    if let Some(c) = this.completion.take() {
                        c.finish(&End::Failed(e));
                    }
                }
                None => {
                    if let Some(c) = this.completion.take() {
                        c.finish(&End::Complete);
                    }
                }
            }
        }
        Poll::Ready(frame)
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `tracing` levels are constants in its macros; pick the macro at run time.
macro_rules! event_at {
    ($level:expr, $($rest:tt)+) => {
        match $level {
            Level::ERROR => tracing::error!(target: "bulwark::log", $($rest)+),
            Level::WARN => tracing::warn!(target: "bulwark::log", $($rest)+),
            _ => tracing::info!(target: "bulwark::log", $($rest)+),
        }
    };
}

fn opt_str(v: Option<&HeaderValue>) -> Option<&str> {
    v.and_then(|v| v.to_str().ok())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Tracked {
    fn finish(&self, end: &End<'_>) {
        let elapsed = self.record(Some(self.status));
        let Some(logged) = &self.log else {
            return;
        };
        let log = &logged.info;
        let failed = matches!(end, End::Failed(_));
        let level = if self.status.is_server_error() || failed {
            Level::ERROR
        } else if self.status.is_client_error() || elapsed > self.config.slow {
            Level::WARN
        } else {
            Level::INFO
        };
        if level == Level::INFO && self.config.sample_every > 1 {
            let n = self.config.shared.sampled.fetch_add(1, Ordering::Relaxed);
            if n % self.config.sample_every != 0 {
                return;
            }
        }
        let error_type = if failed {
            Some("body")
        } else if self.status.is_server_error() {
            Some(self.status.as_str())
        } else {
            None
        };
        let error_message = match end {
            End::Failed(e) => Some(e.to_string()),
            _ => None,
        };
        let m = &logged.markers;
        // Not inside the request span: the line carries every field the span has (request id,
        // trace ids, method, route), and a subscriber that writes the current span and the span
        // list with each event (tracing-subscriber's JSON format does, by default) would write
        // them twice more and re-parse them on every request. Events of the inner service, which
        // run inside the span, keep their grouping.
        event_at!(
            level,
            {
                http.request.method = log.method,
                http.request.method_original = log.method_original.as_deref(),
                url.scheme = log.scheme,
                url.path = log.uri.path(),
                url.query = log.query(),
                http.route = log.route.as_ref().map(Route::as_str),
                server.address = log.server().0,
                server.port = log.server().1,
                network.protocol.version = log.version,
                http.response.status_code = self.status.as_u16(),
                http.response.body.size = logged.bytes,
                http.response.body.complete = !matches!(end, End::Dropped),
                client.address = log.client.map(tracing::field::display),
                user_agent.original = opt_str(log.user_agent.as_ref()),
                http.request.headers = log.headers.as_deref(),
                request_id = logged.id.as_str(),
                trace_id = log.trace.as_ref().map(|t| t.0.as_str()),
                span_id = log.trace.as_ref().map(|t| t.1.as_str()),
                duration_ms = ms(elapsed),
                time_to_first_byte_ms = ms(logged.head),
                error.r#type = error_type,
                error.message = error_message.as_deref(),
                bulwark.rejection = m.rejection,
                bulwark.fallback = opt_str(m.fallback.as_ref()),
                bulwark.cache_status = opt_str(m.cache_status.as_ref()),
                bulwark.replayed = m.replayed.then_some(true),
            },
            "request completed"
        );
    }
}

impl Tracked {
    /// The inner service failed: no response. The duration is recorded under status class
    /// `error`, and one `ERROR` event carries the error and its sources.
    pub(super) fn failed<E: fmt::Display + 'static>(&self, err: &E) {
        let elapsed = self.record(None);
        if let Some(logged) = &self.log {
            let (error_type, message) = describe(err);
            unanswered(
                Level::ERROR,
                logged,
                elapsed,
                error_type,
                Some(&message),
                "request failed",
            );
        }
    }

    /// The response future was dropped before the response head was ready: the client went
    /// away, or an outer timeout gave up. The duration is recorded under status class `error`,
    /// and one `WARN` event says so (`error.type = "cancelled"`).
    pub(super) fn cancelled(&self) {
        let elapsed = self.record(None);
        if let Some(logged) = &self.log {
            unanswered(
                Level::WARN,
                logged,
                elapsed,
                "cancelled",
                None,
                "request cancelled",
            );
        }
    }

    /// Records the request in the duration histogram (metrics on) and returns its duration.
    fn record(&self, status: Option<StatusCode>) -> Duration {
        let elapsed = self.start.elapsed();
        if let Some(m) = &self.metrics {
            super::metrics::http_request(
                &self.config.shared.keys,
                m.method,
                m.route.as_ref().map_or("", Route::as_str),
                status,
                elapsed,
            );
        }
        elapsed
    }
}

/// The event of a request that got no response (failed or cancelled): the request's fields,
/// no status code.
fn unanswered(
    level: Level,
    logged: &Logged,
    elapsed: Duration,
    error_type: &str,
    message: Option<&str>,
    text: &'static str,
) {
    let log = &logged.info;
    // Outside the request span, as the completion event (see `Tracked::finish`).
    event_at!(
        level,
        {
            http.request.method = log.method,
            http.request.method_original = log.method_original.as_deref(),
            url.scheme = log.scheme,
            url.path = log.uri.path(),
            url.query = log.query(),
            http.route = log.route.as_ref().map(Route::as_str),
            server.address = log.server().0,
            server.port = log.server().1,
            network.protocol.version = log.version,
            client.address = log.client.map(tracing::field::display),
            user_agent.original = opt_str(log.user_agent.as_ref()),
            http.request.headers = log.headers.as_deref(),
            request_id = logged.id.as_str(),
            trace_id = log.trace.as_ref().map(|t| t.0.as_str()),
            span_id = log.trace.as_ref().map(|t| t.1.as_str()),
            duration_ms = ms(elapsed),
            error.r#type = error_type,
            error.message = message,
        },
        "{text}"
    );
}

/// The error type (`timeout` or `_OTHER`) and its message followed by its sources. The chain is
/// walked for `BoxError` and `io::Error` (what tower stacks return); other error types give
/// their `Display` text.
fn describe<E: fmt::Display + 'static>(err: &E) -> (&'static str, String) {
    let any: &dyn Any = err;
    let root: Option<&(dyn StdError + 'static)> = if let Some(b) = any.downcast_ref::<BoxError>() {
        Some(&**b)
    } else if let Some(io) = any.downcast_ref::<std::io::Error>() {
        Some(io)
    } else {
        None
    };
    let Some(root) = root else {
        return ("_OTHER", err.to_string());
    };
    let mut message = root.to_string();
    let mut next = root.source();
    while let Some(e) = next {
        let _ = write!(message, ": {e}");
        next = e.source();
    }
    let kind = if crate::classify::is_timeout(root) {
        "timeout"
    } else {
        "_OTHER"
    };
    (kind, message)
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn host_and_port_are_split_as_opentelemetry_has_them() {
        assert_eq!(split_host_port("shop.example"), ("shop.example", None));
        assert_eq!(
            split_host_port("shop.example:8443"),
            ("shop.example", Some(8443))
        );
        assert_eq!(split_host_port("10.0.0.7:80"), ("10.0.0.7", Some(80)));
        assert_eq!(split_host_port("[2001:db8::1]"), ("2001:db8::1", None));
        assert_eq!(
            split_host_port("[2001:db8::1]:3000"),
            ("2001:db8::1", Some(3000))
        );
        // Not a port: logged as it came.
        assert_eq!(
            split_host_port("shop.example:http"),
            ("shop.example:http", None)
        );
        assert_eq!(
            split_host_port("shop.example:99999"),
            ("shop.example:99999", None)
        );
        assert_eq!(split_host_port("[2001:db8::1]x"), ("[2001:db8::1]x", None));
        assert_eq!(split_host_port("[2001:db8::1"), ("[2001:db8::1", None));
    }
}
