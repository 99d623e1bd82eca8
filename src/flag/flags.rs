use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::{
    ErrorCode, EvaluationContext, FlagDefinition,
    definition::CompiledFlag,
    evaluation::{Evaluation, Variant},
};
use crate::{flag::Reason, name_hash::NameHash};

/// Distinct flag names that get their own metric label; later ones share `_other`, so a
/// flag file with thousands of entries cannot blow up a metrics backend.
const MAX_LABELS: usize = 256;
/// Unknown flag names remembered for "warn once"; past this, unknown names warn no more.
const MAX_WARNED: usize = 256;

/// The run-time flag definitions: a cheap handle to shared state.
///
/// Clones share one set of flags. Reads ([`evaluate`](Self::evaluate), which every
/// [`FeatureFlagLayer`](super::FeatureFlagLayer) call makes) load the current snapshot without a
/// lock; writes ([`set`](Self::set), [`remove`](Self::remove), [`replace`](Self::replace), and
/// the [sources](super#sources)) build a new snapshot and swap it in atomically, so a request
/// sees either the old flags or the new ones, never half of a change.
///
/// ```
/// use bulwark::flag::{EvaluationContext, FlagDefinition, Flags, Rule};
///
/// let flags = Flags::new().with(
///     "ai-summary",
///     FlagDefinition::on().with_rule(Rule::equals("tier", "premium")),
/// );
/// let premium = EvaluationContext::new().with("tier", "premium");
/// let free = EvaluationContext::new().with("tier", "free");
/// assert!(flags.is_enabled("ai-summary", &premium));
/// assert!(!flags.is_enabled("ai-summary", &free));
///
/// // The kill switch, effective at once for every clone of the handle.
/// flags.clone().set("ai-summary", FlagDefinition::off());
/// assert!(!flags.is_enabled("ai-summary", &premium));
/// ```
#[derive(Clone)]
pub struct Flags {
    inner: Arc<Inner>,
}

struct Inner {
    snapshot: ArcSwap<Snapshot>,
    /// Serialises writers (readers never take it).
    write: Mutex<Writer>,
    changes: watch::Sender<u64>,
    warned: Mutex<HashSet<Box<str>>>,
}

/// What writers keep beside the published snapshot.
struct Writer {
    definitions: BTreeMap<Arc<str>, FlagDefinition>,
    /// Environment overrides, by normalised name (see [`env_key`]).
    overrides: HashMap<String, bool>,
    labels: HashMap<Arc<str>, Arc<str>>,
    version: u64,
}

pub(crate) struct Snapshot {
    version: u64,
    /// Names come from the application's configuration, never from requests (see [`NameHash`]).
    flags: HashMap<Arc<str>, CompiledFlag, NameHash>,
    /// Overrides that name no defined flag, by normalised name.
    orphan_overrides: HashMap<String, bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the maps half-updated in a way that matters
    // (each write is one insert/remove), so poisoning is ignored.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The environment form of a flag name: upper case, every character other than ASCII letters
/// and digits turned into `_` (`ai-summary` → `AI_SUMMARY`).
pub(crate) fn env_key(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

impl Default for Flags {
    fn default() -> Self {
        Self::new()
    }
}

impl Flags {
    /// A handle with no flags.
    #[must_use]
    pub fn new() -> Self {
        let (changes, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                snapshot: ArcSwap::from_pointee(Snapshot {
                    version: 0,
                    flags: HashMap::default(),
                    orphan_overrides: HashMap::new(),
                }),
                write: Mutex::new(Writer {
                    definitions: BTreeMap::new(),
                    overrides: HashMap::new(),
                    labels: HashMap::new(),
                    version: 0,
                }),
                changes,
                warned: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// Adds (or replaces) flag `name`, for building a handle in code.
    #[must_use]
    pub fn with(self, name: impl Into<Arc<str>>, definition: FlagDefinition) -> Self {
        self.set(name, definition);
        self
    }

    /// Defines flag `name`, replacing its earlier definition; effective for the next request.
    pub fn set(&self, name: impl Into<Arc<str>>, definition: FlagDefinition) {
        let name = name.into();
        self.update(|defs| {
            defs.insert(name, definition);
        });
    }

    /// Removes flag `name`, returning its definition. Gates on it then answer as for an
    /// unknown flag: off.
    pub fn remove(&self, name: &str) -> Option<FlagDefinition> {
        let mut removed = None;
        self.update(|defs| removed = defs.remove(name));
        removed
    }

    /// Replaces every definition at once (what the file and Redis sources do on reload).
    /// Environment overrides stay.
    pub fn replace<I, N>(&self, definitions: I)
    where
        I: IntoIterator<Item = (N, FlagDefinition)>,
        N: Into<Arc<str>>,
    {
        let new: BTreeMap<Arc<str>, FlagDefinition> = definitions
            .into_iter()
            .map(|(n, d)| (n.into(), d))
            .collect();
        self.update(|defs| *defs = new);
    }

    /// Forces flag `name` on (`Some(true)`) or off (`Some(false)`) whatever its definition
    /// says, or lifts the override (`None`). This is what [environment
    /// overrides](super::EnvOverrides) set; an override survives reloads of the definitions and
    /// applies even to a flag that is not defined.
    pub fn set_override(&self, name: &str, value: Option<bool>) {
        let key = env_key(name);
        self.write(|w| match value {
            Some(on) => {
                w.overrides.insert(key, on);
            }
            None => {
                w.overrides.remove(&key);
            }
        });
    }

    /// Sets environment overrides by their normalised names (already upper case).
    pub(crate) fn apply_overrides(&self, overrides: Vec<(String, bool)>) {
        self.write(|w| {
            for (key, on) in overrides {
                w.overrides.insert(env_key(&key), on);
            }
        });
    }

    fn update(&self, change: impl FnOnce(&mut BTreeMap<Arc<str>, FlagDefinition>)) {
        self.write(|w| change(&mut w.definitions));
    }

    fn write(&self, change: impl FnOnce(&mut Writer)) {
        let mut w = lock(&self.inner.write);
        change(&mut w);
        w.version += 1;
        let version = w.version;
        let Writer {
            definitions,
            overrides,
            labels,
            ..
        } = &mut *w;
        let mut orphan_overrides = overrides.clone();
        let flags = definitions
            .iter()
            .map(|(name, def)| {
                let key = env_key(name);
                let forced = overrides.get(&key).copied();
                orphan_overrides.remove(&key);
                let label = match labels.get(name) {
                    Some(label) => label.clone(),
                    None if labels.len() < MAX_LABELS => {
                        labels.insert(name.clone(), name.clone());
                        name.clone()
                    }
                    None => Arc::from("_other"),
                };
                (
                    name.clone(),
                    CompiledFlag::new(name, def.clone(), forced, label),
                )
            })
            .collect();
        self.inner.snapshot.store(Arc::new(Snapshot {
            version,
            flags,
            orphan_overrides,
        }));
        // Under the lock, so receivers never see versions go backwards.
        self.inner.changes.send_replace(version);
        drop(w);
    }

    /// Evaluates flag `name` for `ctx`. A flag that is not defined is off, with reason
    /// [`Reason::Error`] and [`ErrorCode::FlagNotFound`] (and one warning per name in the log).
    #[must_use]
    pub fn evaluate(&self, name: &str, ctx: &EvaluationContext) -> Evaluation {
        let snapshot = self.inner.snapshot.load();
        match snapshot.flags.get(name) {
            Some(flag) => flag.evaluate(ctx),
            None => self.unknown(&snapshot, name),
        }
    }

    /// Like [`evaluate`](Self::evaluate), also counting the evaluation
    /// (`bulwark_flag_evaluations_total`), as gates do.
    #[inline]
    pub(crate) fn evaluate_counted(&self, name: &str, ctx: &EvaluationContext) -> Evaluation {
        let snapshot = self.inner.snapshot.load();
        match snapshot.flags.get(name) {
            Some(flag) => {
                let eval = flag.evaluate(ctx);
                flag.counters.record(eval.is_enabled(), eval.reason());
                eval
            }
            None => {
                let eval = self.unknown(&snapshot, name);
                super::metrics::flag_evaluation(
                    None,
                    eval.is_enabled(),
                    eval.reason().otel_value(),
                );
                eval
            }
        }
    }

    #[cold]
    fn unknown(&self, snapshot: &Snapshot, name: &str) -> Evaluation {
        if let Some(&on) = snapshot.orphan_overrides.get(&env_key(name)) {
            let variant = Variant::Static(if on { "on" } else { "off" });
            let reason = if on { Reason::Static } else { Reason::Disabled };
            return Evaluation::new(on, variant, reason);
        }
        let mut warned = lock(&self.inner.warned);
        if warned.len() < MAX_WARNED && warned.insert(name.into()) {
            drop(warned);
            tracing::warn!(
                target: "bulwark::flag",
                {
                    feature_flag.key = name,
                    error.r#type = ErrorCode::FlagNotFound.otel_value(),
                },
                "feature flag is not defined; it is off"
            );
        }
        Evaluation::error(ErrorCode::FlagNotFound)
    }

    /// Whether flag `name` is on for `ctx` (off if it is not defined).
    #[must_use]
    pub fn is_enabled(&self, name: &str, ctx: &EvaluationContext) -> bool {
        self.evaluate(name, ctx).is_enabled()
    }

    /// The definition of flag `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<FlagDefinition> {
        self.inner
            .snapshot
            .load()
            .flags
            .get(name)
            .map(|f| f.definition.clone())
    }

    /// Every definition, sorted by name: a consistent copy of the flags at one moment.
    #[must_use]
    pub fn snapshot(&self) -> BTreeMap<String, FlagDefinition> {
        self.inner
            .snapshot
            .load()
            .flags
            .iter()
            .map(|(n, f)| (n.to_string(), f.definition.clone()))
            .collect()
    }

    /// The environment override on flag `name`, if any.
    #[must_use]
    pub fn override_of(&self, name: &str) -> Option<bool> {
        let key = env_key(name);
        let snapshot = self.inner.snapshot.load();
        match snapshot.flags.get(name) {
            Some(f) => f.forced,
            None => snapshot.orphan_overrides.get(&key).copied(),
        }
    }

    /// The version of the flags: it grows by one with every change.
    #[must_use]
    pub fn version(&self) -> u64 {
        self.inner.snapshot.load().version
    }

    /// Change notifications: the receiver sees the new [`version`](Self::version) after every
    /// change (intermediate versions may be skipped, as with any `watch` channel).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use bulwark::flag::{FlagDefinition, Flags};
    ///
    /// let flags = Flags::new();
    /// let mut changes = flags.subscribe();
    /// flags.set("beta", FlagDefinition::on());
    /// changes.changed().await.unwrap();
    /// assert_eq!(*changes.borrow_and_update(), flags.version());
    /// # }
    /// ```
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Whether `self` and `other` are handles to the same flags.
    #[must_use]
    pub fn same_as(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snapshot = self.inner.snapshot.load();
        let mut names: Vec<&str> = snapshot.flags.keys().map(|n| &**n).collect();
        names.sort_unstable();
        f.debug_struct("Flags")
            .field("version", &snapshot.version)
            .field("flags", &names)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flag::Rule;

    #[test]
    fn env_keys() {
        assert_eq!(env_key("ai-summary"), "AI_SUMMARY");
        assert_eq!(env_key("new.checkout v2"), "NEW_CHECKOUT_V2");
    }

    #[test]
    fn override_beats_kill_switch_and_survives_replace() {
        let flags = Flags::new().with("a", FlagDefinition::off());
        let ctx = EvaluationContext::new();
        flags.set_override("a", Some(true));
        let e = flags.evaluate("a", &ctx);
        assert!(e.is_enabled());
        assert_eq!(e.reason(), Reason::Static);
        flags.replace([("a", FlagDefinition::off())]);
        assert!(flags.is_enabled("a", &ctx));
        flags.set_override("a", None);
        assert!(!flags.is_enabled("a", &ctx));
    }

    #[test]
    fn labels_are_capped() {
        let flags = Flags::new();
        flags.replace((0..MAX_LABELS + 10).map(|i| (format!("f{i:04}"), FlagDefinition::on())));
        let snap = flags.inner.snapshot.load();
        let other = snap
            .flags
            .values()
            .filter(|f| &*f.label == "_other")
            .count();
        assert_eq!(other, 10);
        // The same flag keeps its label across changes.
        let before = snap.flags["f0000"].label.clone();
        flags.set(
            "f0000",
            FlagDefinition::on().with_rule(Rule::equals("a", "b")),
        );
        assert_eq!(flags.inner.snapshot.load().flags["f0000"].label, before);
    }
}
