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

/// The sibling files `code` (a file of `folder`) names through `super::`, in a path or in a
/// grouped `use super::{..}`: its arrows inside its folder.
fn named_siblings(code: &str, siblings: &[String]) -> Vec<String> {
    let mut named = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("super::") {
        rest = &rest[i + "super::".len()..];
        let scope = match rest.strip_prefix('{') {
            Some(group) => &group[..group.find("};").unwrap_or(group.len())],
            None => rest,
        };
        let words: Vec<&str> = if rest.starts_with('{') {
            // In a group, a sibling is a word followed by `::` or standing alone.
            scope
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map(|p| p.split("::").next().unwrap_or(""))
                .collect()
        } else {
            vec![
                scope
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or(""),
            ]
        };
        for w in words {
            if siblings.iter().any(|s| s == w) && !named.iter().any(|n| n == w) {
                named.push(w.to_owned());
            }
        }
    }
    named
}

/// A circle through the graph's files, if any, as the files on it.
fn find_circle(graph: &[(String, Vec<String>)]) -> Option<Vec<String>> {
    fn visit(
        graph: &[(String, Vec<String>)],
        node: &str,
        path: &mut Vec<String>,
        done: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            return Some(path[at..].to_vec());
        }
        if done.iter().any(|d| d == node) {
            return None;
        }
        path.push(node.to_owned());
        let next = graph
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, e)| e.clone());
        for to in next.unwrap_or_default() {
            if let Some(circle) = visit(graph, &to, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.push(node.to_owned());
        None
    }
    let mut done = Vec::new();
    for (node, _) in graph {
        if let Some(c) = visit(graph, node, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

/// Inside a folder, files name each other in one direction only. The one pair allowed both
/// ways is a layer and the service it makes (as tower-http pairs them); `mod.rs` declares and
/// re-exports, and is left out. Unit tests are left out too: they may reach anywhere.
#[test]
fn no_circle_between_the_files_of_a_folder() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut folders: Vec<std::path::PathBuf> = files
        .iter()
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .collect();
    folders.sort();
    folders.dedup();
    let mut circles = Vec::new();
    for folder in folders.iter().filter(|f| **f != src) {
        let in_folder: Vec<_> = files
            .iter()
            .filter(|f| f.parent() == Some(folder) && !f.ends_with("mod.rs"))
            .collect();
        let names: Vec<String> = in_folder
            .iter()
            .map(|f| f.file_stem().unwrap().to_str().unwrap().to_owned())
            .collect();
        let graph: Vec<(String, Vec<String>)> = in_folder
            .iter()
            .zip(&names)
            .map(|(file, name)| {
                let source = fs::read_to_string(file).unwrap();
                let before_tests = source.split("#[cfg(test)]").next().unwrap_or("");
                let mut edges = named_siblings(&code(before_tests), &names);
                edges.retain(|to| to != name && !(name == "layer" && to == "service"));
                (name.clone(), edges)
            })
            .collect();
        if let Some(circle) = find_circle(&graph) {
            circles.push(format!(
                "{}: {}",
                folder.strip_prefix(&src).unwrap().display(),
                circle.join(" -> ")
            ));
        }
    }
    assert!(circles.is_empty(), "circles:\n{}", circles.join("\n"));
}

/// The circle check sees grouped and plain paths, and a circle when there is one.
#[test]
fn the_circle_check_sees_circles() {
    let names = [
        "shared".to_owned(),
        "respond".to_owned(),
        "entry".to_owned(),
    ];
    assert_eq!(
        named_siblings("use super::{entry::Stored, shared::Shared};", &names),
        ["entry", "shared"]
    );
    assert_eq!(
        named_siblings("let x = super::respond::serve(a);", &names),
        ["respond"]
    );
    assert!(named_siblings("use super::{CacheStatus, other::X};", &names).is_empty());
    let graph = |edges: &[(&str, &[&str])]| -> Vec<(String, Vec<String>)> {
        edges
            .iter()
            .map(|(n, e)| (n.to_string(), e.iter().map(|s| s.to_string()).collect()))
            .collect()
    };
    assert_eq!(find_circle(&graph(&[("a", &["b"]), ("b", &[])])), None);
    assert_eq!(
        find_circle(&graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])])),
        Some(vec!["a".into(), "b".into(), "c".into()])
    );
}

/// Each file holds one concern: none runs past about 800 lines before its unit tests.
#[test]
fn no_file_is_over_800_lines_before_its_tests() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let source = fs::read_to_string(f).unwrap();
            let lines = source
                .split("#[cfg(test)]")
                .next()
                .unwrap_or("")
                .lines()
                .count();
            (lines > 800).then(|| {
                format!(
                    "{} ({lines} lines)",
                    f.strip_prefix(&src).unwrap().display()
                )
            })
        })
        .collect();
    assert!(long.is_empty(), "files too long:\n{}", long.join("\n"));
}
