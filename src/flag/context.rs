use std::{borrow::Cow, fmt, sync::Arc};

use http::{HeaderName, HeaderValue, Request};

/// What a flag is evaluated against: named string attributes of the request, such as
/// `user_id` and `tier`.
///
/// Built per request by a [`ContextExtractor`] ([`HeaderContext`] by default), or by hand:
///
/// ```
/// use bulwark::flag::EvaluationContext;
///
/// let ctx = EvaluationContext::new()
///     .with("user_id", "u-42")
///     .with("tier", "premium");
/// assert_eq!(ctx.get("tier"), Some("premium"));
/// assert_eq!(ctx.get("country"), None);
/// ```
///
/// Attributes are few, so they are kept in a small list; setting an attribute twice keeps the
/// last value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EvaluationContext {
    attrs: Vec<(Cow<'static, str>, Value)>,
}

#[derive(Clone, PartialEq, Eq)]
enum Value {
    Text(Box<str>),
    /// A header value already checked to be visible ASCII: kept as is, so extracting it costs
    /// no copy of its bytes.
    Header(HeaderValue),
}

impl Value {
    #[inline]
    fn as_str(&self) -> &str {
        match self {
            Self::Text(s) => s,
            Self::Header(v) => v.to_str().unwrap_or_default(),
        }
    }
}

impl EvaluationContext {
    /// An empty context.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty context with room for `n` attributes.
    #[must_use]
    pub fn with_capacity(n: usize) -> Self {
        Self {
            attrs: Vec::with_capacity(n),
        }
    }

    /// Sets `attribute` to `value`.
    #[must_use]
    pub fn with(
        mut self,
        attribute: impl Into<Cow<'static, str>>,
        value: impl Into<String>,
    ) -> Self {
        self.insert(attribute, value);
        self
    }

    /// Sets `attribute` to `value`, replacing an earlier value.
    pub fn insert(&mut self, attribute: impl Into<Cow<'static, str>>, value: impl Into<String>) {
        self.put(attribute.into(), Value::Text(value.into().into_boxed_str()));
    }

    /// Sets `attribute` to a header's value, if it is visible ASCII and not empty (anything
    /// else leaves the attribute unset). The value is not copied.
    pub fn insert_header(&mut self, attribute: impl Into<Cow<'static, str>>, value: &HeaderValue) {
        if !value.is_empty() && value.to_str().is_ok() {
            self.put(attribute.into(), Value::Header(value.clone()));
        }
    }

    fn put(&mut self, key: Cow<'static, str>, value: Value) {
        if let Some(slot) = self.attrs.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else {
            self.attrs.push((key, value));
        }
    }

    /// The value of `attribute`.
    #[inline]
    #[must_use]
    pub fn get(&self, attribute: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == attribute)
            .map(|(_, v)| v.as_str())
    }

    /// Removes `attribute`, returning whether it was set.
    pub fn remove(&mut self, attribute: &str) -> bool {
        let before = self.attrs.len();
        self.attrs.retain(|(k, _)| k != attribute);
        self.attrs.len() != before
    }

    /// The attributes, in the order they were first set.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attrs.iter().map(|(k, v)| (k.as_ref(), v.as_str()))
    }

    /// The number of attributes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.attrs.len()
    }

    /// Whether no attribute is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.attrs.is_empty()
    }
}

impl fmt::Debug for EvaluationContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K, V> FromIterator<(K, V)> for EvaluationContext
where
    K: Into<Cow<'static, str>>,
    V: Into<String>,
{
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut ctx = Self::new();
        for (k, v) in iter {
            ctx.insert(k, v);
        }
        ctx
    }
}

/// Builds the [`EvaluationContext`] of a request, for
/// [`FeatureFlagLayer`](super::FeatureFlagLayer).
///
/// Implemented by [`HeaderContext`] (the default: `x-user-id` and `x-user-tier` headers) and by
/// closures `Fn(&Request<B>) -> EvaluationContext`, for contexts made from your own
/// authentication extensions:
///
/// ```
/// use bulwark::flag::{ContextExtractor, EvaluationContext};
/// use http::Request;
///
/// #[derive(Clone)]
/// struct User { id: String, plan: &'static str }
///
/// let from_auth = |req: &Request<()>| {
///     let mut ctx = EvaluationContext::new();
///     if let Some(user) = req.extensions().get::<User>() {
///         ctx.insert("user_id", user.id.clone());
///         ctx.insert("tier", user.plan);
///     }
///     ctx
/// };
/// let mut req = Request::new(());
/// req.extensions_mut().insert(User { id: "u-1".into(), plan: "premium" });
/// assert_eq!(from_auth.extract(&req).get("tier"), Some("premium"));
/// ```
pub trait ContextExtractor<B>: Clone + Send + Sync + 'static {
    /// The context of `req`.
    fn extract(&self, req: &Request<B>) -> EvaluationContext;
}

impl<F, B> ContextExtractor<B> for F
where
    F: Fn(&Request<B>) -> EvaluationContext + Clone + Send + Sync + 'static,
{
    #[inline]
    fn extract(&self, req: &Request<B>) -> EvaluationContext {
        self(req)
    }
}

/// Reads context attributes from request headers.
///
/// The default maps `x-user-id` to `user_id` and `x-user-tier` to `tier`. Headers that are
/// missing, empty or not visible ASCII leave their attribute unset. Only use headers that your
/// own edge (an authenticating proxy, a gateway) sets or overwrites: a client can send any
/// header it likes.
///
/// ```
/// use bulwark::flag::{ContextExtractor, HeaderContext};
/// use http::{HeaderName, Request};
///
/// let extractor = HeaderContext::default()
///     .header(HeaderName::from_static("x-country"), "country");
/// let req = Request::builder()
///     .header("x-user-id", "u-7")
///     .header("x-country", "de")
///     .body(())
///     .unwrap();
/// let ctx = extractor.extract(&req);
/// assert_eq!(ctx.get("user_id"), Some("u-7"));
/// assert_eq!(ctx.get("country"), Some("de"));
/// assert_eq!(ctx.get("tier"), None);
/// ```
#[derive(Clone)]
pub struct HeaderContext {
    map: Arc<[(HeaderName, Cow<'static, str>)]>,
}

static X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
static X_USER_TIER: HeaderName = HeaderName::from_static("x-user-tier");

impl Default for HeaderContext {
    /// `x-user-id` → `user_id`, `x-user-tier` → `tier`.
    fn default() -> Self {
        Self {
            map: Arc::from([
                (X_USER_ID.clone(), Cow::Borrowed("user_id")),
                (X_USER_TIER.clone(), Cow::Borrowed("tier")),
            ]),
        }
    }
}

impl HeaderContext {
    /// A mapping with no headers (add them with [`header`](Self::header)).
    #[must_use]
    pub fn empty() -> Self {
        Self { map: Arc::from([]) }
    }

    /// Also reads header `name` into `attribute`.
    #[must_use]
    pub fn header(self, name: HeaderName, attribute: impl Into<Cow<'static, str>>) -> Self {
        let mut map = self.map.to_vec();
        map.push((name, attribute.into()));
        Self { map: map.into() }
    }
}

impl fmt::Debug for HeaderContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.map.iter().map(|(h, a)| (h.as_str(), a.as_ref())))
            .finish()
    }
}

impl<B> ContextExtractor<B> for HeaderContext {
    #[inline]
    fn extract(&self, req: &Request<B>) -> EvaluationContext {
        let headers = req.headers();
        let mut ctx = EvaluationContext::new();
        for (name, attribute) in self.map.iter() {
            if let Some(value) = headers.get(name) {
                if ctx.attrs.capacity() == 0 {
                    ctx.attrs.reserve_exact(self.map.len());
                }
                ctx.insert_header(attribute.clone(), value);
            }
        }
        ctx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_value_wins_and_remove() {
        let mut ctx = EvaluationContext::new().with("a", "1").with("a", "2");
        assert_eq!(ctx.len(), 1);
        assert_eq!(ctx.get("a"), Some("2"));
        assert!(ctx.remove("a"));
        assert!(ctx.is_empty());
    }

    #[test]
    fn bad_and_empty_headers_are_unset() {
        let req = Request::builder()
            .header("x-user-id", "")
            .header("x-user-tier", HeaderValue::from_bytes(b"caf\xe9").unwrap())
            .body(())
            .unwrap();
        assert!(HeaderContext::default().extract(&req).is_empty());
    }
}
