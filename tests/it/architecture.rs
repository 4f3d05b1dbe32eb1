//! The rules ARCHITECTURE.md §4 states about the rooms of `src/`, checked
//! from the source: which room may import which, no import circles between
//! rooms or between the files of one folder, and `anyhow`, `clap` and
//! printing only in the command-line room. Read from the text of `src/`
//! (the code outside `#[cfg(test)]`), so a new import that breaks a rule
//! fails here with the file and the path it named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The rooms from the bottom up: a room may import its own layer and the
/// ones below, never one above (ARCHITECTURE.md §4).
const LAYERS: &[&[&str]] = &[
    // Shared types and helpers: every room may use them.
    &[
        "error",
        "batch",
        "reject",
        "timestamp",
        "schema",
        "instance",
        "charts",
        "http",
        "telemetry",
    ],
    &["state"],
    // The domain: each stage's own logic, knowing no pipeline file.
    &[
        "decode",
        "transform",
        "windows",
        "model",
        "drift",
        "fraud_metrics",
        "simulate",
    ],
    &["outcomes", "output"],
    // Settings: the file, checked and built into the domain's types.
    &["config"],
    // The I/O-free engine, then what runs it.
    &["engine"],
    &["train"],
    &["kafka", "serve"],
    &["pipeline", "admin"],
    &["app"],
    &["cli"],
];

/// Rooms inside a room, from the bottom up, with the same rule.
const INNER_LAYERS: &[(&str, &[&str])] = &[("model", &["maths", "bundle", "serving"])];

/// Only these may name `anyhow` or `clap`, or print.
const COMMAND_LINE: &[&str] = &["cli", "main"];

/// A source file: its module path (`model/trees`) and its code outside
/// tests, without comments.
struct SourceFile {
    module: String,
    path: PathBuf,
    code: String,
}

fn source_files() -> Vec<SourceFile> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(&root).unwrap().with_extension("");
                let mut parts: Vec<String> = relative
                    .iter()
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect();
                if parts.len() > 1 && parts.last().is_some_and(|p| p == "mod") {
                    parts.pop();
                }
                let text = std::fs::read_to_string(&path).unwrap();
                files.push(SourceFile {
                    module: parts.join("/"),
                    path,
                    code: code_of(&text),
                });
            }
        }
    }
    files.sort_by(|a, b| a.module.cmp(&b.module));
    files
}

/// The text before `#[cfg(test)]`, each line cut at `//`.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path the code names from `crate::` or `super::`, `use` trees
/// flattened (`use crate::a::{b, c::d}` gives `crate::a::b`, `crate::a::c::d`).
fn named_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut offset = 0;
    for line in code.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let visibility = ["pub use ", "pub(crate) use ", "pub(super) use ", "use "]
            .iter()
            .find(|v| trimmed.starts_with(**v));
        if let Some(visibility) = visibility {
            let start = offset + (line.len() - trimmed.len()) + visibility.len();
            let statement = &code[start..];
            let end = statement.find(';').unwrap_or(statement.len());
            flatten(
                "",
                &statement[..end].replace(char::is_whitespace, ""),
                &mut paths,
            );
        }
        offset += line.len();
    }
    // Paths written inline, outside `use`.
    for start in ["crate::", "super::"] {
        let mut rest = code;
        while let Some(at) = rest.find(start) {
            let path: String = rest[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            paths.push(path.trim_end_matches(':').to_owned());
            rest = &rest[at + start.len()..];
        }
    }
    // A `use` line is also found inline; name each path once.
    paths.sort();
    paths.dedup();
    paths
}

/// Appends the paths of one `use` tree (whitespace removed) under `prefix`.
fn flatten(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let Some(open) = tree.find('{') else {
        out.push(format!("{prefix}{tree}"));
        return;
    };
    let head = format!("{prefix}{}", &tree[..open]);
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                flatten(&head, &inner[start..i], out);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < inner.len() {
        flatten(&head, &inner[start..], out);
    }
}

/// The file module a path names, resolved against `from`: the longest
/// prefix that is a file of `src/`.
fn target(path: &str, from: &str, modules: &BTreeSet<String>) -> Option<String> {
    let mut segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<&str> = match segments.first() {
        Some(&"crate") => Vec::new(),
        Some(&"super") => {
            let mut parent: Vec<&str> = from.split('/').collect();
            parent.pop();
            parent
        }
        _ => return None,
    };
    segments.remove(0);
    base.extend(segments);
    (1..=base.len())
        .rev()
        .map(|n| base[..n].join("/"))
        .find(|candidate| modules.contains(candidate))
}

/// For two modules of one room with inner layers (`model/maths/trees`,
/// `model/serving/slot`), why the import of `to` breaks them, if it does.
fn inner_layer_broken(from: &str, to: &str) -> Option<String> {
    let (outer, layers) = INNER_LAYERS.iter().find(|(r, _)| *r == room(from))?;
    let inner = |m: &str| m.split('/').nth(1).map(str::to_owned);
    let (from_inner, to_inner) = (inner(from)?, inner(to)?);
    let position = |name: &str| layers.iter().position(|l| *l == name);
    match (position(&from_inner), position(&to_inner)) {
        (Some(a), Some(b)) if b <= a => None,
        (Some(_), Some(_)) => Some(format!(
            "imports `{outer}/{to_inner}`, a room above `{outer}/{from_inner}`"
        )),
        _ => None,
    }
}

fn layer_of(room: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&room))
}

fn room(module: &str) -> &str {
    module.split('/').next().unwrap_or(module)
}

/// A circle in `edges`, if any, as the modules on it.
fn circle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        on_path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = on_path.iter().position(|n| n == node) {
            return Some(on_path[at..].to_vec());
        }
        if done.contains(node) {
            return None;
        }
        on_path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, edges, on_path, done) {
                return Some(found);
            }
        }
        on_path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

#[test]
fn every_room_has_a_layer_and_imports_only_its_own_or_lower() {
    let files = source_files();
    let modules: BTreeSet<String> = files.iter().map(|f| f.module.clone()).collect();
    let mut broken = Vec::new();
    for file in &files {
        let from = room(&file.module);
        if matches!(from, "lib" | "main") {
            continue;
        }
        let Some(from_layer) = layer_of(from) else {
            broken.push(format!(
                "{}: room `{from}` is in no layer",
                file.path.display()
            ));
            continue;
        };
        for path in named_paths(&file.code) {
            let Some(to) = target(&path, &file.module, &modules) else {
                continue;
            };
            let to_room = room(&to);
            if to_room == from {
                if let Some(problem) = inner_layer_broken(&file.module, &to) {
                    broken.push(format!("{}: `{path}` {problem}", file.path.display()));
                }
                continue;
            }
            match layer_of(to_room) {
                Some(layer) if layer <= from_layer => {}
                _ => broken.push(format!(
                    "{}: `{path}` imports `{to_room}`, a room above `{from}`",
                    file.path.display()
                )),
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn no_import_circles_between_rooms_or_between_the_files_of_a_folder() {
    let files = source_files();
    let modules: BTreeSet<String> = files.iter().map(|f| f.module.clone()).collect();
    let mut rooms: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut siblings: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        for path in named_paths(&file.code) {
            let Some(to) = target(&path, &file.module, &modules) else {
                continue;
            };
            let (from_room, to_room) = (room(&file.module), room(&to));
            if from_room != to_room && !matches!(from_room, "lib" | "main") {
                rooms
                    .entry(from_room.to_owned())
                    .or_default()
                    .insert(to_room.to_owned());
            }
            // Two files of one folder (a folder's mod.rs declares its
            // files, so edges to and from it are not circles).
            let parent = |m: &str| m.rsplit_once('/').map(|(p, _)| p.to_owned());
            if to != file.module && parent(&to).is_some() && parent(&to) == parent(&file.module) {
                siblings.entry(file.module.clone()).or_default().insert(to);
            }
        }
    }
    assert_eq!(circle(&rooms), None, "an import circle between rooms");
    assert_eq!(circle(&siblings), None, "an import circle inside a folder");
}

#[test]
fn only_the_command_line_uses_anyhow_or_clap_or_prints() {
    let mut found = Vec::new();
    for file in source_files() {
        if COMMAND_LINE.contains(&room(&file.module)) {
            continue;
        }
        for word in [
            "anyhow",
            "clap::",
            "println!",
            "print!(",
            "eprintln!",
            "eprint!(",
        ] {
            if file.code.contains(word) {
                found.push(format!("{} names `{word}`", file.path.display()));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// Longer than this, a function outside tests is split (ARCHITECTURE.md §4).
const MAX_FUNCTION_LINES: usize = 100;

#[test]
fn no_function_outside_tests_is_longer_than_a_hundred_lines() {
    let mut long = Vec::new();
    for file in source_files() {
        let lines: Vec<&str> = file.code.lines().collect();
        for (start, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            let words: Vec<&str> = trimmed.split_whitespace().take(4).collect();
            let Some(at) = words.iter().position(|w| *w == "fn") else {
                continue;
            };
            // `fn` opens the line, after at most `pub(crate) async` and the like.
            if !words[..at]
                .iter()
                .all(|w| w.starts_with("pub") || *w == "async" || *w == "const")
            {
                continue;
            }
            // A declaration without a body (in a trait) ends at its `;`.
            let opens = lines[start..]
                .iter()
                .find(|l| l.contains('{') || l.trim_end().ends_with(';'));
            if opens.is_none_or(|l| !l.contains('{')) {
                continue;
            }
            let indent = &line[..line.len() - trimmed.len()];
            let end = lines[start..]
                .iter()
                .position(|l| l.starts_with(&format!("{indent}}}")))
                .map_or(lines.len(), |n| start + n);
            let length = end - start + 1;
            if length > MAX_FUNCTION_LINES {
                let name = words
                    .get(at + 1)
                    .map_or("?", |w| w.split(['(', '<']).next().unwrap_or(w));
                long.push(format!(
                    "{}:{} `{name}` {length} lines",
                    file.path.display(),
                    start + 1
                ));
            }
        }
    }
    assert!(long.is_empty(), "{}", long.join("\n"));
}

/// The layout ARCHITECTURE.md lists names every room and top-level file of
/// `src/`, and only ones that exist.
#[test]
fn the_layout_in_architecture_md_matches_src() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root.join("src")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let named = match path.is_dir() {
            true => text.contains(&format!("src/{name}/")),
            false => {
                let stem = name.trim_end_matches(".rs");
                text.contains(&format!("src/{name}"))
                    || text.contains(&format!(",{stem},"))
                    || text.contains(&format!("{{{stem},"))
                    || text.contains(&format!(",{stem}}}"))
            }
        };
        if !named {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's layout does not name {missing:?}"
    );
    let mut rest = text.as_str();
    let mut unknown = Vec::new();
    while let Some(at) = rest.find("src/") {
        let path: String = rest[at..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || matches!(c, '/' | '_' | '.'))
            .collect();
        let path = path.trim_end_matches('.');
        if !path.contains('{') && !root.join(path).exists() {
            unknown.push(path.to_owned());
        }
        rest = &rest[at + 4..];
    }
    assert!(
        unknown.is_empty(),
        "ARCHITECTURE.md names paths that do not exist: {unknown:?}"
    );
}
