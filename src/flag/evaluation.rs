use std::{fmt, sync::Arc};

use super::EvaluationContext;

/// Why an evaluation gave its result, in OpenFeature's vocabulary.
///
/// [`as_str`](Self::as_str) gives OpenFeature's spelling (`TARGETING_MATCH`);
/// [`otel_value`](Self::otel_value) the OpenTelemetry semantic-convention value for
/// `feature_flag.result.reason` (`targeting_match`), which is what bulwark's tracing events and
/// metric labels carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// Fixed by an environment override: no rule was looked at.
    Static,
    /// No rule matched and the roll-out did not decide (or there is none): the flag's default.
    Default,
    /// A targeting rule matched.
    TargetingMatch,
    /// The percentage roll-out decided (the request's key is inside or outside it).
    Split,
    /// The flag is switched off (its kill switch, or an environment override to off).
    Disabled,
    /// The flag could not be evaluated (see [`Evaluation::error_code`]); the result is off.
    Error,
}

impl Reason {
    /// OpenFeature's name: `STATIC`, `DEFAULT`, `TARGETING_MATCH`, `SPLIT`, `DISABLED`, `ERROR`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Static => "STATIC",
            Self::Default => "DEFAULT",
            Self::TargetingMatch => "TARGETING_MATCH",
            Self::Split => "SPLIT",
            Self::Disabled => "DISABLED",
            Self::Error => "ERROR",
        }
    }

    /// The OpenTelemetry `feature_flag.result.reason` value: `static`, `default`,
    /// `targeting_match`, `split`, `disabled`, `error`.
    #[must_use]
    pub fn otel_value(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Default => "default",
            Self::TargetingMatch => "targeting_match",
            Self::Split => "split",
            Self::Disabled => "disabled",
            Self::Error => "error",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an evaluation failed, in OpenFeature's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// No flag of that name is defined (and no environment override names it).
    FlagNotFound,
}

impl ErrorCode {
    /// OpenFeature's name, e.g. `FLAG_NOT_FOUND`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FlagNotFound => "FLAG_NOT_FOUND",
        }
    }

    /// The lower-case form OpenTelemetry's `error.type` uses, e.g. `flag_not_found`.
    #[must_use]
    pub fn otel_value(self) -> &'static str {
        match self {
            Self::FlagNotFound => "flag_not_found",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of evaluating one flag for one context: on or off, the variant's name, and why.
///
/// Cheap to clone (no allocation).
#[derive(Clone, PartialEq, Eq)]
pub struct Evaluation {
    enabled: bool,
    variant: Variant,
    reason: Reason,
    error: Option<ErrorCode>,
}

/// A variant name: the built-in `"on"`/`"off"`, or a name from the flag's definition.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Variant {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Variant {
    #[inline]
    fn as_str(&self) -> &str {
        match self {
            Self::Static(s) => s,
            Self::Shared(s) => s,
        }
    }
}

impl Evaluation {
    #[inline]
    pub(crate) fn new(enabled: bool, variant: Variant, reason: Reason) -> Self {
        Self {
            enabled,
            variant,
            reason,
            error: None,
        }
    }

    /// Off, with reason `ERROR` and `error`.
    #[inline]
    pub(crate) fn error(error: ErrorCode) -> Self {
        Self {
            enabled: false,
            variant: Variant::Static("off"),
            reason: Reason::Error,
            error: Some(error),
        }
    }

    /// Whether the feature is on.
    #[inline]
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The variant served: `"on"` or `"off"` unless the flag names its variants.
    #[inline]
    #[must_use]
    pub fn variant(&self) -> &str {
        self.variant.as_str()
    }

    /// Why this result.
    #[inline]
    #[must_use]
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// What went wrong, when [`reason`](Self::reason) is [`Reason::Error`].
    #[inline]
    #[must_use]
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.error
    }
}

impl fmt::Debug for Evaluation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Evaluation");
        d.field("enabled", &self.enabled)
            .field("variant", &self.variant())
            .field("reason", &self.reason);
        if let Some(e) = self.error {
            d.field("error", &e);
        }
        d.finish()
    }
}

/// The flags a [`FeatureFlagLayer`](super::FeatureFlagLayer) evaluated for a request, and the
/// context it evaluated them with, as a request extension for handlers.
///
/// Stacked gates add to the same extension; the context is the outermost gate's.
///
/// ```
/// use axum::{Extension, Router, routing::get};
/// use bulwark::flag::{EvaluatedFlags, FeatureFlagLayer, FlagDefinition, Flags};
///
/// async fn checkout(Extension(flags): Extension<EvaluatedFlags>) -> &'static str {
///     if flags.is_enabled("one-click") { "one click" } else { "classic" }
/// }
///
/// let flags = Flags::new()
///     .with("checkout", FlagDefinition::on())
///     .with("one-click", FlagDefinition::off());
/// let app: Router = Router::new()
///     .route("/checkout", get(checkout))
///     .layer(FeatureFlagLayer::new(flags, "checkout").also_evaluate(["one-click"]));
/// ```
#[derive(Clone, Debug)]
pub struct EvaluatedFlags {
    context: EvaluationContext,
    first: (Arc<str>, Evaluation),
    rest: Vec<(Arc<str>, Evaluation)>,
}

impl EvaluatedFlags {
    pub(crate) fn new(context: EvaluationContext, name: Arc<str>, eval: Evaluation) -> Self {
        Self {
            context,
            first: (name, eval),
            rest: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, name: Arc<str>, eval: Evaluation) {
        if let Some(slot) = self.iter_mut().find(|(n, _)| **n == *name) {
            slot.1 = eval;
        } else {
            self.rest.push((name, eval));
        }
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut (Arc<str>, Evaluation)> {
        std::iter::once(&mut self.first).chain(self.rest.iter_mut())
    }

    /// The evaluation of flag `name`, if a gate evaluated it for this request.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Evaluation> {
        self.iter().find(|(n, _)| *n == name).map(|(_, e)| e)
    }

    /// Whether flag `name` was evaluated on for this request (`false` if it was not evaluated).
    #[must_use]
    pub fn is_enabled(&self, name: &str) -> bool {
        self.get(name).is_some_and(Evaluation::is_enabled)
    }

    /// Every evaluated flag, in evaluation order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Evaluation)> {
        std::iter::once(&self.first)
            .chain(self.rest.iter())
            .map(|(n, e)| (n.as_ref(), e))
    }

    /// The context the flags were evaluated with, to evaluate more flags with
    /// [`Flags::evaluate`](super::Flags::evaluate).
    #[must_use]
    pub fn context(&self) -> &EvaluationContext {
        &self.context
    }
}
