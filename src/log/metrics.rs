//! The request-duration histogram, `http_server_request_duration_seconds` (see the
//! [catalogue](crate::metrics)), and the method table the log's `http.request.method` field
//! shares with it.

#[cfg(feature = "metrics")]
use crate::metrics::{Handle, Held};

/// One HTTP request served, for the `http_server_request_duration_seconds` histogram;
/// `status` is `None` when the request ended without a response (status class `error`).
///
/// `keys` keeps the [`Held`] histograms of the routes seen, so a request builds no label set and
/// allocates nothing once its route, method and status class have been seen.
#[inline]
pub(crate) fn http_request(
    keys: &HttpKeys,
    method: HttpMethod,
    route: &str,
    status: Option<http::StatusCode>,
    elapsed: std::time::Duration,
) {
    #[cfg(feature = "metrics")]
    {
        let class = status.map_or(STATUS_CLASSES.len() - 1, |s| {
            usize::from((s.as_u16() / 100).clamp(1, 5) - 1)
        });
        let seconds = elapsed.as_secs_f64();
        let held = || Held::new(&http_key(method, route, class));
        let slot = method.slot() * STATUS_CLASSES.len() + class;
        // A request no route matched (a 404 flood, say) has its own slots: no map lookup, and
        // no comparison of empty strings, whose `memcmp` reads through a dangling pointer
        // (an assisted masked load on x86, ~90 ns).
        if route.is_empty() {
            keys.unrouted.get_or_init(HttpKeys::slots)[slot]
                .get_or_init(held)
                .record(seconds);
            return;
        }
        // The common case: the route is known; no reference count is touched.
        if let Some(slots) = keys.routes.load().get(route) {
            slots[slot].get_or_init(held).record(seconds);
            return;
        }
        match keys.add(route) {
            Some(slots) => slots[slot].get_or_init(held).record(seconds),
            None => metrics::with_recorder(|r| {
                <metrics::Histogram as Handle>::register(r, &http_key(method, route, class))
                    .record(seconds);
            }),
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (keys, method, route, status, elapsed);
}

/// A request's method as OpenTelemetry reports it: one of the nine standard methods, or
/// `_OTHER`. The request log's `http.request.method` field and the duration histogram's
/// `method` label and slot all come from this one table, so they cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HttpMethod(u8);

impl HttpMethod {
    /// The labels, by index; `_OTHER` last.
    const LABELS: [&'static str; 10] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "_OTHER",
    ];

    /// `_OTHER`: a method that is not one of the standard nine.
    pub(crate) const OTHER: Self = Self(9);

    /// The method of a request.
    pub(crate) fn of(m: &http::Method) -> Self {
        use http::Method;
        Self(match *m {
            Method::GET => 0,
            Method::HEAD => 1,
            Method::POST => 2,
            Method::PUT => 3,
            Method::DELETE => 4,
            Method::CONNECT => 5,
            Method::OPTIONS => 6,
            Method::TRACE => 7,
            Method::PATCH => 8,
            _ => return Self::OTHER,
        })
    }

    /// The OpenTelemetry value: the method's name, or `_OTHER`.
    pub(crate) fn label(self) -> &'static str {
        Self::LABELS[usize::from(self.0)]
    }

    /// Its index among [`HttpKeys`]' slots.
    #[cfg(feature = "metrics")]
    fn slot(self) -> usize {
        usize::from(self.0)
    }
}

#[cfg(feature = "metrics")]
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];

#[cfg(feature = "metrics")]
type HttpSlots = std::sync::Arc<[std::sync::OnceLock<Held<metrics::Histogram>>]>;

#[cfg(feature = "metrics")]
fn http_key(method: HttpMethod, route: &str, class: usize) -> metrics::Key {
    metrics::Key::from_parts(
        "http_server_request_duration_seconds",
        vec![
            metrics::Label::new("method", method.label()),
            metrics::Label::new("route", route.to_owned()),
            metrics::Label::new("status_class", STATUS_CLASSES[class]),
        ],
    )
}

/// The request-duration histograms by route ([`Held`]), one per method and status class, made
/// on first use. Read without a lock (a copy-on-write map swapped whole when a route is first
/// seen); bounded at [`HttpKeys::MAX_ROUTES`] routes, past which keys are built per request.
#[derive(Default)]
pub(crate) struct HttpKeys {
    #[cfg(feature = "metrics")]
    /// Route templates from the application's router (at most [`HttpKeys::MAX_ROUTES`]).
    routes: arc_swap::ArcSwap<
        std::collections::HashMap<Box<str>, HttpSlots, crate::name_hash::NameHash>,
    >,
    #[cfg(feature = "metrics")]
    grow: std::sync::Mutex<()>,
    /// The slots of requests no route matched.
    #[cfg(feature = "metrics")]
    unrouted: std::sync::OnceLock<HttpSlots>,
}

impl HttpKeys {
    /// Routes are templates (`/payments/{id}`), so a service has a few dozen; the bound only
    /// guards against a router that reports raw paths.
    #[cfg(feature = "metrics")]
    const MAX_ROUTES: usize = 1_024;

    /// One route's slots: a histogram handle per method (and `_OTHER`) and status class, each
    /// registered on first use.
    #[cfg(feature = "metrics")]
    fn slots() -> HttpSlots {
        (0..HttpMethod::LABELS.len() * STATUS_CLASSES.len())
            .map(|_| std::sync::OnceLock::new())
            .collect()
    }

    /// Adds `route` (first seen), unless the bound is reached.
    #[cfg(feature = "metrics")]
    fn add(&self, route: &str) -> Option<HttpSlots> {
        let _grow = self.grow.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.routes.load_full();
        if let Some(slots) = current.get(route) {
            return Some(slots.clone());
        }
        if current.len() >= Self::MAX_ROUTES {
            return None;
        }
        let slots = Self::slots();
        let mut next = (*current).clone();
        next.insert(route.into(), slots.clone());
        self.routes.store(std::sync::Arc::new(next));
        Some(slots)
    }
}

impl std::fmt::Debug for HttpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpKeys").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::HttpMethod;
    use http::Method;

    /// Each standard method's index names that method; anything else is `_OTHER`.
    #[test]
    fn a_method_is_labelled_by_its_own_name() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::CONNECT,
            Method::OPTIONS,
            Method::TRACE,
            Method::PATCH,
        ] {
            assert_eq!(HttpMethod::of(&m).label(), m.as_str());
            assert_ne!(HttpMethod::of(&m), HttpMethod::OTHER);
        }
        let purge = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(HttpMethod::of(&purge), HttpMethod::OTHER);
        assert_eq!(HttpMethod::OTHER.label(), "_OTHER");
    }
}
