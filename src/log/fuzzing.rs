//! Entry points for the fuzz targets in `fuzz/`, compiled only with `--cfg fuzzing` (as
//! `cargo fuzz` builds): the request log's parsers of request headers, which are crate-private.
//! Not part of the API.

/// The trace and parent ids of a W3C `traceparent` value, as the log reads them.
#[must_use]
pub fn traceparent(value: &[u8]) -> Option<(&str, &str)> {
    super::trace_context::traceparent(value)
}

/// Whether an `x-request-id` value is kept as the request's id (else one is generated).
#[must_use]
pub fn is_valid_request_id(value: &[u8]) -> bool {
    super::request_id::is_valid(value)
}
