use std::{fmt, sync::Arc};

use http::StatusCode;
use tower_layer::Layer;

use super::{Flags, HeaderContext, service::FeatureFlag};
use crate::{ConfigError, DefaultResponseForRejection, ResponseForRejection};

/// Gates a service behind a feature flag: requests for which the flag is off get
/// [`Rejection::FeatureDisabled`](crate::Rejection::FeatureDisabled) (404 by default) or go to
/// an alternative service ([`or_else`](Self::or_else)).
///
/// See the [module docs](super) for the evaluation order, sources and defaults.
#[must_use]
pub struct FeatureFlagLayer<X = HeaderContext, O = Disabled> {
    pub(super) gate: Arc<Gate>,
    pub(super) extractor: X,
    pub(super) off: O,
}

/// What the layer shares with every service it makes.
pub(crate) struct Gate {
    pub(crate) flags: Flags,
    pub(crate) name: Arc<str>,
    pub(crate) also: Box<[Arc<str>]>,
}

/// The off behaviour of a gate that answers with
/// [`Rejection::FeatureDisabled`](crate::Rejection::FeatureDisabled) (the default).
#[derive(Clone, Debug)]
pub struct Disabled<R = DefaultResponseForRejection> {
    pub(super) status: StatusCode,
    pub(super) hook: R,
}

/// The off behaviour of a gate that calls an alternative service (see
/// [`FeatureFlagLayer::or_else`]).
#[derive(Clone)]
pub struct OrElse<A> {
    pub(super) service: A,
}

impl<A> fmt::Debug for OrElse<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrElse")
            .field("service", &std::any::type_name::<A>())
            .finish()
    }
}

impl FeatureFlagLayer {
    /// Gates on flag `name` of `flags`, with the evaluation context read from the `x-user-id`
    /// and `x-user-tier` headers ([`HeaderContext`]), answering 404 when the flag is off.
    ///
    /// A flag that is not defined (now; it may be later) is off, with one warning in the log.
    pub fn new(flags: Flags, name: impl Into<Arc<str>>) -> Self {
        Self {
            gate: Arc::new(Gate {
                flags,
                name: name.into(),
                also: Box::new([]),
            }),
            extractor: HeaderContext::default(),
            off: Disabled {
                status: StatusCode::NOT_FOUND,
                hook: DefaultResponseForRejection,
            },
        }
    }
}

impl<X, O> FeatureFlagLayer<X, O> {
    /// Builds the evaluation context with `extractor`: a [`HeaderContext`] with other headers,
    /// or a closure `Fn(&Request<B>) -> EvaluationContext` (see
    /// [`ContextExtractor`](super::ContextExtractor)).
    pub fn context<X2>(self, extractor: X2) -> FeatureFlagLayer<X2, O> {
        FeatureFlagLayer {
            gate: self.gate,
            extractor,
            off: self.off,
        }
    }

    /// Also evaluates `names` for every request (whether the gate's flag is on or off) and
    /// puts them in the [`EvaluatedFlags`](super::EvaluatedFlags) extension, for handlers that
    /// branch on flags without gating on them.
    pub fn also_evaluate<I, N>(self, names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: Into<Arc<str>>,
    {
        let gate = Gate {
            flags: self.gate.flags.clone(),
            name: self.gate.name.clone(),
            also: names.into_iter().map(Into::into).collect(),
        };
        Self {
            gate: Arc::new(gate),
            ..self
        }
    }

    /// Sends requests for which the flag is off to `service` instead of answering
    /// `FeatureDisabled`. `service` must answer with the inner service's response and error
    /// types; it is cloned per off request and polled ready before it is called.
    pub fn or_else<A>(self, service: A) -> FeatureFlagLayer<X, OrElse<A>> {
        FeatureFlagLayer {
            gate: self.gate,
            extractor: self.extractor,
            off: OrElse { service },
        }
    }

    /// The flag's name.
    #[must_use]
    pub fn flag(&self) -> &str {
        &self.gate.name
    }

    /// The flags the gate reads.
    #[must_use]
    pub fn flags(&self) -> &Flags {
        &self.gate.flags
    }
}

impl<X, R> FeatureFlagLayer<X, Disabled<R>> {
    /// The status of the `FeatureDisabled` answer (404 by default; 403 or 503 are other
    /// common choices).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] for a status that is not `4xx` or `5xx`: servers cannot send a
    /// `1xx` as a final answer (hyper sends a 500 instead), and a `2xx` or `3xx` would make the
    /// rejection look like success to the fallback, circuit breaker and log layers.
    pub fn status(mut self, status: StatusCode) -> Result<Self, ConfigError> {
        if !(status.is_client_error() || status.is_server_error()) {
            return Err(ConfigError::Invalid {
                setting: "status",
                reason: format!("{status} is not a 4xx or 5xx status"),
            });
        }
        self.off.status = status;
        Ok(self)
    }

    /// Builds the `FeatureDisabled` answer with `hook` instead of the default problem+json
    /// (the [`Rejection`](crate::Rejection) extension is added to whatever it returns).
    pub fn on_rejection<R2: ResponseForRejection>(
        self,
        hook: R2,
    ) -> FeatureFlagLayer<X, Disabled<R2>> {
        FeatureFlagLayer {
            gate: self.gate,
            extractor: self.extractor,
            off: Disabled {
                status: self.off.status,
                hook,
            },
        }
    }
}

impl<X: Clone, O: Clone> Clone for FeatureFlagLayer<X, O> {
    fn clone(&self) -> Self {
        Self {
            gate: self.gate.clone(),
            extractor: self.extractor.clone(),
            off: self.off.clone(),
        }
    }
}

impl<X, O> fmt::Debug for FeatureFlagLayer<X, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeatureFlagLayer")
            .field("flag", &self.gate.name)
            .field("also", &self.gate.also)
            .field("extractor", &std::any::type_name::<X>())
            .field("off", &std::any::type_name::<O>())
            .finish()
    }
}

impl<S, X: Clone, O: Clone> Layer<S> for FeatureFlagLayer<X, O> {
    type Service = FeatureFlag<S, X, O>;

    fn layer(&self, inner: S) -> Self::Service {
        FeatureFlag {
            inner,
            gate: self.gate.clone(),
            extractor: self.extractor.clone(),
            off: self.off.clone(),
        }
    }
}
