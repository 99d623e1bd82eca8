//! The flags' counters: `bulwark_flag_evaluations_total`, `bulwark_flag_reloads_total` and
//! `bulwark_flag_reload_errors_total` (see the [catalogue](crate::metrics)).

use super::Reason;
#[cfg(feature = "metrics")]
use crate::metrics::Held;

/// The evaluation counters of one defined flag, [`Held`] from when the flags snapshot is built,
/// so counting an evaluation allocates nothing; a recorder installed after the flags were
/// defined still sees them.
pub(crate) struct FlagCounters {
    #[cfg(feature = "metrics")]
    counters: Box<[Held<metrics::Counter>]>,
}

#[cfg(feature = "metrics")]
const FLAG_RESULTS: [(bool, Reason); 8] = {
    [
        (true, Reason::Static),
        (false, Reason::Disabled),
        (true, Reason::TargetingMatch),
        (false, Reason::TargetingMatch),
        (true, Reason::Split),
        (false, Reason::Split),
        (true, Reason::Default),
        (false, Reason::Default),
    ]
};

impl FlagCounters {
    pub(crate) fn new(label: &std::sync::Arc<str>) -> Self {
        #[cfg(feature = "metrics")]
        {
            let counters = FLAG_RESULTS
                .iter()
                .map(|&(enabled, reason)| {
                    Held::new(&metrics::Key::from_parts(
                        "bulwark_flag_evaluations_total",
                        vec![
                            metrics::Label::new("flag", label.clone()),
                            metrics::Label::new("result", if enabled { "on" } else { "off" }),
                            metrics::Label::new("reason", reason.otel_value()),
                        ],
                    ))
                })
                .collect();
            Self { counters }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = label;
            Self {}
        }
    }

    /// One evaluation of this flag.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(clippy::unused_self))]
    pub(crate) fn record(&self, enabled: bool, reason: Reason) {
        #[cfg(feature = "metrics")]
        match FLAG_RESULTS.iter().position(|&r| r == (enabled, reason)) {
            Some(i) => self.counters[i].increment(1),
            None => flag_evaluation(None, enabled, reason.otel_value()),
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (enabled, reason);
    }
}

/// One feature-flag evaluation. `label` is the flag's bounded label (`None` for a flag that
/// is not defined, counted as `_unknown` so arbitrary names cannot grow the label set).
#[inline]
pub(crate) fn flag_evaluation(
    label: Option<&std::sync::Arc<str>>,
    enabled: bool,
    reason: &'static str,
) {
    #[cfg(feature = "metrics")]
    {
        let flag: metrics::SharedString = match label {
            Some(l) => l.clone().into(),
            None => metrics::SharedString::const_str("_unknown"),
        };
        metrics::counter!(
            "bulwark_flag_evaluations_total",
            "flag" => flag,
            "result" => if enabled { "on" } else { "off" },
            "reason" => reason
        )
        .increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (label, enabled, reason);
}

/// One flag reload from `source` (`file`, `redis`): applied, or failed (last flags kept).
#[inline]
pub(crate) fn flag_reload(source: &'static str, ok: bool) {
    #[cfg(feature = "metrics")]
    if ok {
        metrics::counter!("bulwark_flag_reloads_total", "source" => source).increment(1);
    } else {
        metrics::counter!("bulwark_flag_reload_errors_total", "source" => source).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (source, ok);
}
