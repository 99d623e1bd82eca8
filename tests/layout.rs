//! The crate's dependency rule, checked on its source: arrows point down.
//!
//! The crate-level modules (`src/*.rs`) sit below the seven layers and never name one, and no
//! layer names another; what two layers need lives in a crate-level module. `lib.rs` and
//! `prelude.rs` are the exceptions: they declare and re-export the layers. Doc comments may link
//! anywhere (a link is not a dependency), so comments are left out of the check.

use std::{fs, path::Path};

const LAYERS: [&str; 7] = [
    "cache",
    "circuit_breaker",
    "fallback",
    "flag",
    "idempotency",
    "log",
    "rate_limit",
];

/// The source without `//` comments (doc comments included) and without string literals' text,
/// roughly: good enough for paths, which never sit inside either in this crate.
fn code(source: &str) -> String {
    source
        .lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The layers `code` names through `crate::`, in a path or in a grouped `use crate::{..}`.
fn named_layers(code: &str) -> Vec<&'static str> {
    let mut named = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let scope = if let Some(group) = rest.strip_prefix('{') {
            let end = group.find("};").unwrap_or(group.len());
            &group[..end]
        } else {
            rest
        };
        for layer in LAYERS {
            let at_start = scope.starts_with(&format!("{layer}::"))
                || scope.starts_with(&format!("{layer};"))
                || scope.starts_with(&format!("{layer},"));
            let in_group = rest.starts_with('{')
                && scope
                    .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .any(|p| p == layer || p.starts_with(&format!("{layer}::")));
            if (at_start || in_group) && !named.contains(&layer) {
                named.push(layer);
            }
        }
    }
    named
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn arrows_point_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 50, "found the sources");
    let mut wrong = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let own = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .filter(|_| rel.components().count() > 1);
        if matches!(rel.to_str(), Some("lib.rs" | "prelude.rs")) {
            continue;
        }
        let code = code(&fs::read_to_string(file).unwrap());
        for layer in named_layers(&code) {
            if Some(layer) != own {
                wrong.push(format!("{} names the {layer} layer", rel.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "arrows that point up or sideways:\n{}",
        wrong.join("\n")
    );
}

/// The check itself sees both forms of a path.
#[test]
fn the_check_sees_paths_and_groups() {
    assert_eq!(named_layers("use crate::cache::CacheStore;"), ["cache"]);
    assert_eq!(
        named_layers("use crate::{Rejection, fallback::FallbackReason};"),
        ["fallback"]
    );
    assert_eq!(named_layers("let x = crate::log::redact::key(k);"), ["log"]);
    assert!(named_layers("use crate::{Rejection, body::ResponseBody};").is_empty());
    assert!(named_layers(&code("/// see [`x`](crate::cache::CacheLayer)")).is_empty());
}
