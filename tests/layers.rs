//! The top-level modules form layers: each imports only modules below it,
//! so no two modules import each other, directly or around a circle.
//! (docs/ARCHITECTURE.md describes the layers; this keeps it true.)
//!
//! Reads the source rather than the compiler's graph: `crate::name` paths,
//! `use crate::{a, b::c}` groups, and the crate's macros (`error!`, …) as
//! uses of the module that defines them. Comments do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top to bottom. A module may import modules of lower layers only.
const LAYERS: &[&[&str]] = &[
    // The master process, and the man pages generated from the settings.
    &["master", "docs", "ctl"],
    // A worker process: boot, accept, serve, dispatch to the app side.
    &["worker"],
    // The I/O side (hyper) and the two app sides; none knows the others.
    &["http", "wsgi", "asgi"],
    // What a request carries between them.
    &["request"],
    &["listen"],
    &["config"],
    &["python", "systemd", "privileges"],
    &["log", "proto", "proctitle", "metrics", "statsd", "tls"],
    &["sys"],
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/http/idle.rs` → `http`).
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The source without comments (line comments only: the code has no block comments).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.trim_start().starts_with("//") {
            true => "",
            false => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first segment of every `crate::` path in `code`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::{c, d}, e}`: the first identifier of each
            // top-level item of the group.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_ascii_alphabetic() || c == '_') => {
                        out.push(ident(&group[i..]).to_string());
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.push(name.to_string());
            }
        }
    }
    out
}

struct Graph {
    modules: BTreeSet<String>,
    /// module → (module it imports → one file that does)
    edges: BTreeMap<String, BTreeMap<String, String>>,
}

fn graph() -> Graph {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let texts: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|p| {
            let t = std::fs::read_to_string(&p).unwrap();
            (p, t)
        })
        .collect();
    // Exported macros are named at the crate root; they belong to the module
    // that defines them.
    let mut macros = BTreeMap::new();
    for (path, text) in &texts {
        for (at, _) in text.match_indices("macro_rules! ") {
            let name = ident(&text[at + "macro_rules! ".len()..]);
            macros.insert(name.to_string(), module_of(path));
        }
    }
    let mut g = Graph {
        modules: BTreeSet::new(),
        edges: BTreeMap::new(),
    };
    for (path, text) in &texts {
        let from = module_of(path);
        g.modules.insert(from.clone());
        let code = code(text);
        let mut uses = crate_paths(&code);
        for name in macros.keys() {
            let call = format!("{name}!(");
            if code.contains(&call) {
                uses.push(name.clone());
            }
        }
        for name in uses {
            let to = macros.get(&name).cloned().unwrap_or(name);
            if to != from && to != "VERSION" {
                let rel = path.strip_prefix(src()).unwrap().display().to_string();
                g.edges
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_insert(rel);
            }
        }
    }
    g.modules.remove("main");
    g.edges.remove("main");
    g
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

#[test]
fn every_module_has_a_layer() {
    let g = graph();
    let unplaced: Vec<_> = g.modules.iter().filter(|m| layer_of(m).is_none()).collect();
    assert!(
        unplaced.is_empty(),
        "modules missing from LAYERS in tests/layers.rs: {unplaced:?}"
    );
    let listed: Vec<_> = LAYERS
        .iter()
        .flat_map(|l| l.iter())
        .filter(|m| !g.modules.contains(**m))
        .collect();
    assert!(
        listed.is_empty(),
        "LAYERS names modules that do not exist: {listed:?}"
    );
}

#[test]
fn modules_import_only_lower_layers() {
    let g = graph();
    let mut wrong = Vec::new();
    for (from, tos) in &g.edges {
        let Some(lf) = layer_of(from) else { continue };
        for (to, file) in tos {
            match layer_of(to) {
                Some(lt) if lt > lf => {}
                _ => wrong.push(format!("{from} imports {to} (in src/{file})")),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_cycle_between_top_level_modules() {
    // Independent of LAYERS: a depth-first search for a back edge.
    let g = graph();
    fn visit(
        g: &Graph,
        m: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut cycle = path[i..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for to in g.edges.get(m).into_iter().flat_map(|t| t.keys()) {
            if let Some(c) = visit(g, to, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in &g.modules {
        let cycle = visit(&g, m, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "module cycle: {}",
            cycle.unwrap().join(" → ")
        );
    }
}

#[test]
fn the_reader_sees_imports_in_all_their_forms() {
    // The checks above are only as good as this reader.
    let code = code(
        "use crate::{error, http::idle::{A, B}, wsgi};\n\
         // use crate::asgi::X;\n\
         let x = crate::worker::Jobs::new();",
    );
    assert_eq!(crate_paths(&code), ["error", "http", "wsgi", "worker"]);
    let g = graph();
    assert!(
        g.edges["worker"].contains_key("log"),
        "worker logs through the log module's macros"
    );
    assert!(g.edges["http"].contains_key("request"));
}
