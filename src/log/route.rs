//! The route a request matched in the application's router (axum's `MatchedPath`), for the
//! log line's `http.route` and the duration histogram's `route` label.

use http::Request;

/// The matched route template (axum's `MatchedPath`, an `Arc` clone), if any.
#[derive(Clone, Debug)]
pub(super) struct Route {
    #[cfg(feature = "axum")]
    inner: axum::extract::MatchedPath,
}

impl Route {
    #[cfg_attr(not(feature = "axum"), allow(clippy::unused_self))]
    pub(super) fn as_str(&self) -> &str {
        #[cfg(feature = "axum")]
        return self.inner.as_str();
        #[cfg(not(feature = "axum"))]
        ""
    }
}

#[cfg(feature = "axum")]
pub(super) fn route<B>(req: &Request<B>) -> Option<Route> {
    req.extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| Route { inner: p.clone() })
}

#[cfg(not(feature = "axum"))]
pub(super) fn route<B>(_: &Request<B>) -> Option<Route> {
    None
}
