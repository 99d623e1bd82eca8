use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use http::{
    HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode,
    header::{HOST, USER_AGENT},
};
use tokio::time::Instant;
use tower_service::Service;
use tracing::Level;

use super::metrics::HttpMethod;
use super::{
    MakeRequestId, RequestId, X_REQUEST_ID,
    body::{LogInfo, Logged, MetricInfo, Tracked},
    future::ResponseFuture,
    layer::LogSettings,
    route::{Route, route},
    trace_context::traceparent,
};

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The service made by [`RequestLogLayer`](super::RequestLogLayer).
#[derive(Debug, Clone)]
#[must_use]
pub struct RequestLog<S, M> {
    pub(super) inner: S,
    pub(super) make_id: M,
    pub(super) config: Arc<LogSettings>,
}

crate::macros::define_inner_service_accessors!(RequestLog<S, M>);

impl<S, M, ReqB, ResB> Service<Request<ReqB>> for RequestLog<S, M>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: http_body::Body,
    S::Error: fmt::Display + 'static,
    M: MakeRequestId,
{
    type Response = Response<super::LogBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let log = tracing::enabled!(target: "bulwark::log", Level::ERROR);
        let metrics = cfg!(feature = "metrics") && self.config.metrics;
        let (sent_id, fields) = {
            let seen = Seen::of(req.headers(), log);
            (
                seen.id.and_then(RequestId::parse),
                log.then(|| seen.into_fields()),
            )
        };
        let id = match sent_id {
            Some(id) => id,
            None => {
                let id = self.make_id.make_request_id(&req);
                req.headers_mut()
                    .insert(X_REQUEST_ID.clone(), id.header_value().clone());
                id
            }
        };
        req.extensions_mut().insert(id.clone());

        if !log && !metrics {
            // Nobody listens: no clock read, no span, nothing shared with the layer.
            return ResponseFuture::new(self.inner.call(req), id, None);
        }
        let start = Instant::now();
        let route = route(&req);
        let log = fields.map(|fields| {
            Box::new(Logged::new(
                log_info(&req, fields, &id, route.as_ref(), &self.config),
                id.clone(),
            ))
        });
        let metrics = metrics.then(|| MetricInfo {
            method: HttpMethod::of(req.method()),
            route: route.clone(),
        });
        let future = match &log {
            Some(log) => log.info.span.in_scope(|| self.inner.call(req)),
            None => self.inner.call(req),
        };
        let tracked = Tracked {
            start,
            config: self.config.clone(),
            status: StatusCode::OK,
            metrics,
            log,
        };
        ResponseFuture::new(future, id, Some(tracked))
    }
}

/// The request fields the layer reads: the first value of each.
#[derive(Default)]
struct Seen<'a> {
    id: Option<&'a HeaderValue>,
    traceparent: Option<&'a HeaderValue>,
    host: Option<&'a HeaderValue>,
    user_agent: Option<&'a HeaderValue>,
}

/// What the log line keeps of [`Seen`]'s fields.
struct Fields {
    host: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    trace: Option<(String, String)>,
}

impl<'a> Seen<'a> {
    /// `x-request-id` alone, by one lookup, unless `all`: then every field, found in one walk
    /// over the headers. Four hashed lookups (two of them hashing a custom name's bytes) cost
    /// more than the walk for any request with fewer than a few dozen fields.
    fn of(headers: &'a HeaderMap, all: bool) -> Self {
        if !all {
            return Self {
                id: headers.get(&X_REQUEST_ID),
                ..Self::default()
            };
        }
        let mut seen = Self::default();
        for (name, value) in headers {
            let slot = if name == HOST {
                &mut seen.host
            } else if name == USER_AGENT {
                &mut seen.user_agent
            } else if name == X_REQUEST_ID {
                &mut seen.id
            } else if name == TRACEPARENT {
                &mut seen.traceparent
            } else {
                continue;
            };
            // Later values of a repeated field do not replace the first.
            slot.get_or_insert(value);
        }
        seen
    }

    fn into_fields(self) -> Fields {
        Fields {
            host: self.host.cloned(),
            user_agent: self.user_agent.cloned(),
            trace: self
                .traceparent
                .and_then(|v| traceparent(v.as_bytes()))
                .map(|(t, s)| (t.to_owned(), s.to_owned())),
        }
    }
}

fn log_info<B>(
    req: &Request<B>,
    fields: Fields,
    id: &RequestId,
    route: Option<&Route>,
    config: &LogSettings,
) -> LogInfo {
    let method = HttpMethod::of(req.method());
    let label = method.label();
    let uri = req.uri();
    let route_str = route.map(Route::as_str);
    let Fields {
        host,
        user_agent,
        trace,
    } = fields;
    // The span carries what the inner service's events need to be grouped and found: its
    // OpenTelemetry name (method and route), the request id and the trace ids. It is kept this
    // small because a subscriber formats span fields when the span opens and may write them
    // again with every event inside it; the completion event, written outside the span, carries
    // every field itself.
    let span = tracing::info_span!(
        target: "bulwark::log",
        "request",
        otel.name = %SpanName(label, route_str),
        otel.kind = "server",
        request_id = id.as_str(),
        trace_id = trace.as_ref().map(|t| t.0.as_str()),
        span_id = trace.as_ref().map(|t| t.1.as_str()),
    );
    LogInfo {
        span,
        method: label,
        method_original: (method == HttpMethod::OTHER).then(|| req.method().as_str().to_owned()),
        uri: uri.clone(),
        redacted_query: uri.query().and_then(|q| config.redactor.redacted_query(q)),
        scheme: if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
            "https"
        } else {
            "http"
        },
        host,
        version: version(req.version()),
        route: route.cloned(),
        client: crate::key::peer_ip(req),
        user_agent,
        headers: config
            .log_headers
            .then(|| config.redactor.headers(req.headers())),
        trace,
    }
}

/// `{METHOD} {route}`, or the method alone without a route, written without allocating.
struct SpanName<'a>(&'static str, Option<&'a str>);

impl fmt::Display for SpanName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(route) => write!(f, "{} {route}", self.0),
            None => f.write_str(self.0),
        }
    }
}

fn version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}
