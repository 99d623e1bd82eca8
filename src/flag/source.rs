use std::{
    borrow::Cow,
    collections::{BTreeMap, hash_map::DefaultHasher},
    ffi::OsString,
    hash::{Hash, Hasher},
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{FlagDefinition, Flags};
use crate::ConfigError;

/// A flag source could not be read; the flags it feeds keep their last good definitions.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The file could not be read (missing, unreadable).
    #[error("cannot read flag file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is larger than the limit (1 MiB).
    #[error("flag file {path} is larger than {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// The file's contents are not valid flag definitions.
    #[error("invalid flag file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its position.
        reason: String,
    },
    /// A shared store failed (see [`RedisFlags`](super::RedisFlags)).
    #[error(transparent)]
    Store(#[from] crate::StoreError),
}

/// The format of a flag file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// JSON: an object from flag names to [definitions](FlagDefinition).
    Json,
    /// TOML: a table per flag, with the same fields as JSON (feature `toml`).
    #[cfg(feature = "toml")]
    #[cfg_attr(docsrs, doc(cfg(feature = "toml")))]
    Toml,
}

impl Format {
    /// Parses flag definitions from `text`.
    ///
    /// # Errors
    ///
    /// What is wrong with the text, with its position.
    pub fn parse(self, text: &str) -> Result<BTreeMap<String, FlagDefinition>, String> {
        match self {
            Self::Json => serde_json::from_str::<UniqueNames>(text)
                .map(|u| u.0)
                .map_err(|e| e.to_string()),
            #[cfg(feature = "toml")]
            Self::Toml => toml::from_str(text).map_err(|e| e.to_string()),
        }
    }
}

/// A JSON object of flag definitions in which a name appears once. serde's map would keep the
/// last of two entries with one name, so a kill switch added at the top of a long file could be
/// silently overridden by an older entry further down; TOML refuses duplicate keys itself.
struct UniqueNames(BTreeMap<String, FlagDefinition>);

impl<'de> serde::Deserialize<'de> for UniqueNames {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UniqueNames;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of flag definitions")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut flags = BTreeMap::new();
                while let Some((name, def)) = map.next_entry::<String, FlagDefinition>()? {
                    if flags.contains_key(&name) {
                        return Err(serde::de::Error::custom(format_args!(
                            "flag {name:?} is defined twice"
                        )));
                    }
                    flags.insert(name, def);
                }
                Ok(UniqueNames(flags))
            }
        }
        d.deserialize_map(Visitor)
    }
}

const MAX_FILE: u64 = 1 << 20;

/// Flag definitions from a JSON file (or TOML, feature `toml`), reloaded without restart.
///
/// The file maps flag names to [definitions](FlagDefinition):
///
/// ```json
/// {
///   "ai-summary": { "rules": [{ "attribute": "tier", "equals": "premium" }] },
///   "new-checkout": { "rollout": { "percentage": 10 } },
///   "legacy-export": { "enabled": false }
/// }
/// ```
///
/// [`watch`](Self::watch) loads the file into a [`Flags`] and then checks it every
/// [`poll_interval`](Self::poll_interval) (1 s by default): when its contents changed, the whole
/// file is parsed and, only if every definition is valid, swapped in as a whole. A file that
/// fails to parse, is deleted or cannot be read is logged (`error`, once per distinct problem)
/// and counted in `bulwark_flag_reload_errors_total`; the last good flags stay.
///
/// The check reads the file and compares a hash of its bytes, so it sees every kind of
/// replacement: atomic ones (write a temporary file and rename it over the old one, as editors
/// and Kubernetes ConfigMap volumes do through a symlink swap) defeat inotify watches on the
/// file itself, and network file systems often send no events at all. One read of a file under
/// 1 MiB per second is cheap. With the `file-events` feature the watcher also listens to the
/// OS's events for the file's directory (inotify, kqueue, FSEvents, ReadDirectoryChangesW) and
/// checks at once when one arrives, so a change is applied in milliseconds; polling remains the
/// fallback. The feature is off by default because the platform layer is about ten crates.
///
/// ```no_run
/// # async fn run() -> Result<(), bulwark::flag::SourceError> {
/// use std::time::Duration;
/// use bulwark::flag::{FileSource, Flags};
///
/// let flags = Flags::new();
/// let _watch = FileSource::new("flags.json")
///     .poll_interval(Duration::from_millis(500))
///     .watch(flags.clone())?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
    format: Format,
    interval: Duration,
}

impl FileSource {
    /// Reads `path`, as TOML if its name ends in `.toml` and the `toml` feature is on, as JSON
    /// otherwise.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        #[cfg(feature = "toml")]
        let format = if path.extension().is_some_and(|e| e == "toml") {
            Format::Toml
        } else {
            Format::Json
        };
        #[cfg(not(feature = "toml"))]
        let format = Format::Json;
        Self {
            path,
            format,
            interval: Duration::from_secs(1),
        }
    }

    /// Reads `path` as `format`.
    #[must_use]
    pub fn with_format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// How often [`watch`](Self::watch) checks the file (1 s by default; at least 10 ms).
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// The file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and parses the file.
    ///
    /// # Errors
    ///
    /// [`SourceError`] if it cannot be read or is not valid.
    pub fn load(&self) -> Result<BTreeMap<String, FlagDefinition>, SourceError> {
        let bytes = self.read()?;
        self.parse(&bytes)
    }

    fn read(&self) -> Result<Vec<u8>, SourceError> {
        let io = |source| SourceError::Io {
            path: self.path.clone(),
            source,
        };
        let len = std::fs::metadata(&self.path).map_err(io)?.len();
        if len > MAX_FILE {
            return Err(SourceError::TooLarge {
                path: self.path.clone(),
                limit: MAX_FILE,
            });
        }
        std::fs::read(&self.path).map_err(io)
    }

    fn parse(&self, bytes: &[u8]) -> Result<BTreeMap<String, FlagDefinition>, SourceError> {
        let invalid = |reason: String| SourceError::Invalid {
            path: self.path.clone(),
            reason,
        };
        let text = std::str::from_utf8(bytes).map_err(|e| invalid(e.to_string()))?;
        self.format.parse(text).map_err(invalid)
    }

    /// A watcher that keeps `flags` in step with the file; call
    /// [`check`](FileWatcher::check) yourself, or [`run`](FileWatcher::run) it on a task.
    #[must_use]
    pub fn watcher(self, flags: Flags) -> FileWatcher {
        FileWatcher {
            source: self,
            flags,
            last: None,
        }
    }

    /// Loads the file into `flags` now, then keeps checking it on a tokio task (stopped by
    /// aborting the returned handle; dropping the handle leaves it running).
    ///
    /// # Errors
    ///
    /// [`SourceError`] if the first load fails: a service should not start with flags it
    /// could not read. Nothing is spawned then.
    pub fn watch(self, flags: Flags) -> Result<tokio::task::JoinHandle<()>, SourceError> {
        let mut watcher = self.watcher(flags);
        watcher.check()?;
        Ok(tokio::spawn(watcher.run()))
    }
}

/// Keeps a [`Flags`] in step with a [`FileSource`] (made by [`FileSource::watcher`]).
#[derive(Debug)]
pub struct FileWatcher {
    source: FileSource,
    flags: Flags,
    /// A hash of the last contents seen (good or bad), or of the last error, so one problem is
    /// logged once and not every interval.
    last: Option<u64>,
}

/// Watches the directory of `path` for changes; each event is a nudge to check the file (the
/// check itself decides whether anything changed). `None` when the OS refuses the watch, which
/// is logged: polling still works.
#[cfg(feature = "file-events")]
fn file_events(
    path: &Path,
) -> (
    Option<notify::RecommendedWatcher>,
    Option<tokio::sync::mpsc::Receiver<()>>,
) {
    use notify::Watcher as _;

    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            // A full channel already holds a nudge; one is enough.
            let _ = tx.try_send(());
        }
    })
    .and_then(|mut w| {
        w.watch(&dir, notify::RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    match watcher {
        Ok(w) => (Some(w), Some(rx)),
        Err(e) => {
            tracing::warn!(
                target: "bulwark::flag",
                dir = %dir.display(),
                error = %e,
                "cannot watch the flag file's directory; polling only"
            );
            (None, None)
        }
    }
}

fn hash_of(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

impl FileWatcher {
    /// Reads the file once: when its contents changed since the last check and are valid,
    /// replaces the flags with them and returns `Ok(true)`; unchanged, `Ok(false)`.
    ///
    /// # Errors
    ///
    /// [`SourceError`] when the file cannot be read or is invalid; the flags are left as they
    /// were, and the error is logged and counted once per distinct problem (a file that stays
    /// missing is one problem, not one per check).
    pub fn check(&mut self) -> Result<bool, SourceError> {
        let (fingerprint, result) = match self.source.read() {
            Ok(bytes) => {
                let fingerprint = hash_of(&bytes);
                if self.last == Some(fingerprint) {
                    return Ok(false);
                }
                (fingerprint, self.source.parse(&bytes))
            }
            Err(e) => {
                let fingerprint = hash_of(e.to_string().as_bytes()) ^ 0x5eed;
                (fingerprint, Err(e))
            }
        };
        let first_time = self.last != Some(fingerprint);
        self.last = Some(fingerprint);
        let path = self.source.path.display();
        match result {
            Ok(defs) => {
                let n = defs.len();
                self.flags.replace(defs);
                super::metrics::flag_reload("file", true);
                tracing::info!(
                    target: "bulwark::flag",
                    source = "file",
                    path = %path,
                    flags = n,
                    version = self.flags.version(),
                    "feature flags reloaded"
                );
                Ok(true)
            }
            Err(e) => {
                if first_time {
                    super::metrics::flag_reload("file", false);
                    tracing::error!(
                        target: "bulwark::flag",
                        source = "file",
                        path = %path,
                        error = %error_chain(&e),
                        "feature flag reload failed; keeping the last good flags"
                    );
                }
                Err(e)
            }
        }
    }

    /// Checks the file every poll interval, forever (run it on a task). With the
    /// `file-events` feature it also checks at once when the OS reports a change in the file's
    /// directory (the directory, not the file, is watched, so atomic renames and symlink swaps
    /// are seen); polling stays on as the fallback for file systems that send no events.
    pub async fn run(mut self) {
        let interval = self.source.interval;
        #[cfg(feature = "file-events")]
        let (_watcher, mut events) = file_events(&self.source.path);
        // With events, check once right after the watch starts: a change made between the
        // first load and the watch would otherwise wait for the next poll.
        #[cfg(feature = "file-events")]
        let mut skip_wait = true;
        loop {
            #[cfg(feature = "file-events")]
            if !std::mem::take(&mut skip_wait) {
                // Whichever comes first: the poll interval, or an event from the OS.
                let mut sleep = std::pin::pin!(tokio::time::sleep(interval));
                let event = std::future::poll_fn(|cx| {
                    if sleep.as_mut().poll(cx).is_ready() {
                        return std::task::Poll::Ready(Some(()));
                    }
                    match events.as_mut().map(|rx| rx.poll_recv(cx)) {
                        Some(std::task::Poll::Ready(got)) => std::task::Poll::Ready(got),
                        _ => std::task::Poll::Pending,
                    }
                })
                .await;
                if event.is_none() {
                    // The watcher is gone: poll only.
                    events = None;
                }
            }
            #[cfg(not(feature = "file-events"))]
            tokio::time::sleep(interval).await;
            // File reads block; keep them off the async worker threads.
            self = match tokio::task::spawn_blocking(move || {
                let _ = self.check();
                self
            })
            .await
            {
                Ok(me) => me,
                // The check panicked (it does not, short of a bug) or the runtime is shutting
                // down: stop watching.
                Err(_) => return,
            };
        }
    }
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Environment overrides for emergencies: `BULWARK_FLAG_<NAME>=on|off` forces a flag on or off
/// over its definition (and over every reload), without touching the flag file or Redis.
///
/// `<NAME>` is the flag's name in upper case with every character other than a letter or a
/// digit turned into `_`: `BULWARK_FLAG_AI_SUMMARY=off` forces `ai-summary` off. Values are
/// `on`, `off`, `true`, `false`, `1`, `0` (any case). A forced-on flag evaluates with reason
/// `STATIC`, a forced-off one with `DISABLED`.
///
/// ```
/// use bulwark::flag::{EnvOverrides, EvaluationContext, FlagDefinition, Flags};
///
/// let flags = Flags::new().with("ai-summary", FlagDefinition::on());
/// EnvOverrides::new().apply_from(&flags, [("BULWARK_FLAG_AI_SUMMARY", "off")])?;
/// assert!(!flags.is_enabled("ai-summary", &EvaluationContext::new()));
/// # Ok::<(), bulwark::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct EnvOverrides {
    prefix: Cow<'static, str>,
}

impl Default for EnvOverrides {
    fn default() -> Self {
        Self::new()
    }
}

impl EnvOverrides {
    /// Variables named `BULWARK_FLAG_*`.
    #[must_use]
    pub fn new() -> Self {
        Self {
            prefix: Cow::Borrowed("BULWARK_FLAG_"),
        }
    }

    /// Variables named `<prefix>*` instead.
    #[must_use]
    pub fn prefix(prefix: impl Into<Cow<'static, str>>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// Applies the overrides in the process environment to `flags`; returns how many.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the first variable with a value that is not on or off;
    /// no override is applied then.
    pub fn apply(&self, flags: &Flags) -> Result<usize, ConfigError> {
        let vars = std::env::vars_os().filter_map(|(k, v): (OsString, OsString)| {
            Some((k.into_string().ok()?, v.into_string().unwrap_or_default()))
        });
        self.apply_from(flags, vars)
    }

    /// Applies overrides from `vars` (name, value pairs, as from the environment).
    ///
    /// # Errors
    ///
    /// As [`apply`](Self::apply).
    pub fn apply_from<I, K, V>(&self, flags: &Flags, vars: I) -> Result<usize, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut found = Vec::new();
        for (key, value) in vars {
            let Some(name) = key.as_ref().strip_prefix(&*self.prefix) else {
                continue;
            };
            if name.is_empty() {
                continue;
            }
            let on = match value.as_ref().trim().to_ascii_lowercase().as_str() {
                "on" | "true" | "1" => true,
                "off" | "false" | "0" => false,
                other => {
                    return Err(ConfigError::invalid(
                        "flag environment override",
                        format!(
                            "{}={other:?}: expected on, off, true, false, 1 or 0",
                            key.as_ref()
                        ),
                    ));
                }
            };
            found.push((name.to_owned(), on));
        }
        for (name, on) in &found {
            let forced = if *on { "on" } else { "off" };
            tracing::warn!(
                target: "bulwark::flag",
                {
                    feature_flag.key = name.as_str(),
                    forced,
                },
                "feature flag forced by an environment override"
            );
        }
        let n = found.len();
        flags.apply_overrides(found);
        Ok(n)
    }
}
