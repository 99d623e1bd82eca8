//! The soak's HTTP/1.1 client: keep-alive connections to every shop, one timeout per request,
//! and what the invariants read from an answer.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

/// The `Host` every request names.
pub(crate) const HOST: &str = "shop.soak.test";

/// No request may take longer than this (the client gives up and counts it as a hang).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One answer, with the parts the invariants look at.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) content_type: String,
    /// `bulwark-fallback` was set: a fallback answered.
    pub(crate) fallback: bool,
    pub(crate) replayed: bool,
    pub(crate) cache_status: String,
    pub(crate) body: Bytes,
}

impl Answer {
    /// The problem document's `type` ends in this variant name (`BackendUnavailable`, ...).
    pub(crate) fn problem_is(&self, variant: &str) -> bool {
        self.content_type.starts_with("application/problem+json")
            && serde_json::from_slice::<serde_json::Value>(&self.body)
                .ok()
                .and_then(|v| v.get("type")?.as_str().map(str::to_owned))
                .is_some_and(|t| t.ends_with(&format!("#variant.{variant}")))
    }

    pub(crate) fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Why no answer came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Nothing listens (a shop that is down).
    Refused,
    /// The connection broke: reset, closed mid-answer, or an unreadable answer.
    Broken,
    /// No answer within [`REQUEST_TIMEOUT`].
    TimedOut,
}

/// The client, shared by every workload task.
#[derive(Clone, Debug)]
pub(crate) struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Http {
    pub(crate) fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(1)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(16)
            .build(connector);
        Self { client }
    }

    /// Sends one request; the answer or why none came, and how long it took.
    pub(crate) async fn send(
        &self,
        addr: SocketAddr,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> (Result<Answer, Failure>, Duration) {
        let start = Instant::now();
        // One host name for every instance, as behind a load balancer: the cache keys
        // answers by it, so instances share entries only if clients name the same host.
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header("host", HOST);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("a valid request");
        let exchange = async {
            let res = self.client.request(req).await.map_err(|e| {
                if e.is_connect() {
                    Failure::Refused
                } else {
                    Failure::Broken
                }
            })?;
            let (parts, body) = res.into_parts();
            let header = |name: &str| {
                parts
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned()
            };
            let answer = Answer {
                status: parts.status.as_u16(),
                content_type: header("content-type"),
                fallback: parts.headers.contains_key("bulwark-fallback"),
                replayed: header("idempotent-replayed") == "true",
                cache_status: header("cache-status"),
                body: Bytes::new(),
            };
            let body = Limited::new(body, 1 << 20)
                .collect()
                .await
                .map_err(|_| Failure::Broken)?
                .to_bytes();
            Ok(Answer { body, ..answer })
        };
        let result = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Failure::TimedOut),
        };
        (result, start.elapsed())
    }
}
