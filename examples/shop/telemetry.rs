//! `GET /metrics`: every bulwark metric in the Prometheus text format.

use std::sync::OnceLock;

use axum::{
    http::{HeaderValue, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The OpenTelemetry HTTP server duration buckets, in seconds, set explicitly so the exporter
/// emits a histogram rather than a summary.
pub(crate) const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The process's Prometheus recorder, installed on first use (once per process: the `metrics`
/// facade has one global recorder).
pub(crate) fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("http_server_request_duration_seconds".to_owned()),
                &DURATION_BUCKETS,
            )
            .expect("the bucket list is not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows nothing");
        }
        handle
    })
}

/// `GET /metrics`.
pub(crate) async fn metrics() -> Response {
    let mut res = handle().render().into_response();
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request};

    use crate::tests::{send, test_state};

    #[tokio::test]
    async fn metrics_are_exposed_as_prometheus_text() {
        let state = test_state();
        // One request, then the exposition shows its duration histogram with buckets.
        send(
            state.clone(),
            Request::get("/healthz").body(Body::empty()).unwrap(),
        )
        .await;
        let res = send(state, Request::get("/metrics").body(Body::empty()).unwrap()).await;
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        let text = String::from_utf8(
            axum::body::to_bytes(res.into_body(), 1 << 20)
                .await
                .unwrap()
                .to_vec(),
        )
        .unwrap();
        assert!(
            text.contains("http_server_request_duration_seconds_bucket{"),
            "a histogram with buckets: {text}"
        );
        assert!(text.contains("route=\"/healthz\""), "{text}");
        assert!(text.contains("le=\"0.005\""), "{text}");
    }
}
