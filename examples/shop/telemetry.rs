//! `GET /metrics`: every bulwark metric in the Prometheus text format; and the demo's log tap,
//! which keeps the last log lines in memory so a scenario can check what was logged.

use std::{
    collections::VecDeque,
    io,
    sync::{Arc, Mutex, OnceLock},
};

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

/// The last [`LogTap::CAPACITY`] JSON log lines, kept in memory (bounded: the oldest line goes
/// first). In demo mode the request log is written here as well, so a scenario can find the
/// completion line of a request by its id.
#[derive(Clone, Debug, Default)]
pub(crate) struct LogTap(Arc<Mutex<VecDeque<String>>>);

impl LogTap {
    /// How many lines the tap keeps.
    pub(crate) const CAPACITY: usize = 512;

    /// The process's tap (one per process, like the subscriber it feeds).
    pub(crate) fn global() -> &'static LogTap {
        static TAP: OnceLock<LogTap> = OnceLock::new();
        TAP.get_or_init(LogTap::default)
    }

    /// The kept lines that contain `needle`, oldest first.
    pub(crate) fn lines_containing(&self, needle: &str) -> Vec<String> {
        let lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        lines
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    fn push(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line).trim_end().to_owned();
        if line.is_empty() {
            return;
        }
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == Self::CAPACITY {
            lines.pop_front();
        }
        lines.push_back(line);
    }
}

/// One formatted event on its way into the tap: the subscriber writes an event in one or more
/// `write` calls, and the line is kept when the writer is dropped.
#[derive(Debug)]
pub(crate) struct TapWriter {
    tap: LogTap,
    buf: Vec<u8>,
}

impl io::Write for TapWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for TapWriter {
    fn drop(&mut self) {
        self.tap.push(&self.buf);
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogTap {
    type Writer = TapWriter;

    fn make_writer(&'a self) -> Self::Writer {
        TapWriter {
            tap: self.clone(),
            buf: Vec::with_capacity(512),
        }
    }
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

    #[test]
    fn the_log_tap_keeps_the_last_lines_only() {
        use std::io::Write;
        use tracing_subscriber::fmt::MakeWriter;

        let tap = super::LogTap::default();
        for i in 0..super::LogTap::CAPACITY + 10 {
            let mut w = tap.make_writer();
            write!(w, "{{\"n\":{i},").unwrap();
            writeln!(w, "\"end\":true}}").unwrap();
        }
        assert!(
            tap.lines_containing("\"n\":9,").is_empty(),
            "the oldest lines went"
        );
        let last = tap.lines_containing(&format!("\"n\":{},", super::LogTap::CAPACITY + 9));
        assert_eq!(last.len(), 1);
        assert!(
            last[0].ends_with("\"end\":true}"),
            "one line per event: {last:?}"
        );
    }
}
