//! The library's top-level modules import one another in one direction only:
//! data flows source → capture/ingest → hub → egress, with the supervisor
//! beside it (see lib.rs). This reads every `crate::…` path in the sources,
//! builds the graph of top-level modules, and fails on a cycle — naming the
//! files that close it — and on an import against the declared layers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lower layers first. A module may import its own layer's neighbours only
/// if that makes no cycle, and any module of a lower layer.
const LAYERS: &[&[&str]] = &[
    &["token", "net", "logging", "media", "view", "heap"],
    &["hub"],
    &["supervisor"],
    &["ingest", "config"],
    &["capture", "ffmpeg", "whip"],
    &["registry"],
    &["egress"],
    &["restream"],
    &["http"],
    &["host", "doctor"],
    // The fuzz targets' way in: hands input to any of the above.
    &["fuzzing"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/hub/rtp.rs` → `hub`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib").then(|| name.to_owned())
}

/// Top-level modules named by `crate::NAME` in `text`, with the line.
fn imports(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `crate::{a, b}` groups: every name in the braces.
            if name.is_empty() && after.starts_with('{') {
                let group = after[1..].split('}').next().unwrap_or("");
                for part in group.split(',') {
                    let m: String = part
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !m.is_empty() {
                        out.push((m, n + 1));
                    }
                }
            } else if !name.is_empty() {
                out.push((name, n + 1));
            }
            rest = after;
        }
    }
    out
}

#[test]
fn top_level_modules_import_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // module → module it imports → where.
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for file in &files {
        // Unit-test files may drive a module through a higher one (the WHEP
        // status codes through the router): not an import of the product.
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let rel = file.strip_prefix(&src).unwrap_or(file);
        let in_tests_dir = rel.components().any(|c| c.as_os_str() == "tests");
        if name == "tests.rs" || name.ends_with("_tests.rs") || in_tests_dir {
            continue;
        }
        let Some(from) = module_of(&src, file) else {
            continue;
        };
        assert!(
            layer_of(&from).is_some(),
            "module `{from}` ({}) is in no layer of this test: add it to LAYERS where it belongs",
            file.display()
        );
        let text = std::fs::read_to_string(file).expect("a source file");
        for (to, line) in imports(&text) {
            if to == from || to == "self" || to == "super" {
                continue;
            }
            let Some(to_layer) = layer_of(&to) else {
                continue;
            };
            let at = format!(
                "{}:{line}",
                file.strip_prefix(&src).unwrap_or(file).display()
            );
            if to_layer > layer_of(&from).unwrap_or(0) {
                problems.push(format!("{at}: `{from}` imports `{to}`, a higher layer"));
            }
            edges
                .entry(from.clone())
                .or_default()
                .entry(to)
                .or_insert(at);
        }
    }
    // Cycles (within a layer), by depth-first search.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeMap<String, String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        problems: &mut Vec<String>,
    ) {
        if let Some(i) = stack.iter().position(|n| n == node) {
            let cycle = &stack[i..];
            let mut via = Vec::new();
            for (k, from) in cycle.iter().enumerate() {
                let to = cycle.get(k + 1).map(String::as_str).unwrap_or(node);
                via.push(format!("{from} → {to} ({})", edges[from][to]));
            }
            problems.push(format!("import cycle: {}", via.join(", ")));
            return;
        }
        if done.contains(node) {
            return;
        }
        stack.push(node.to_owned());
        if let Some(next) = edges.get(node) {
            for to in next.keys() {
                visit(to, edges, stack, done, problems);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        visit(node, &edges, &mut Vec::new(), &mut done, &mut problems);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_reader_finds_grouped_and_inline_paths() {
    let got = imports(
        "use crate::{hub::Hub, token};\nlet x = crate::media::ts::scan(); // crate::http\n",
    );
    let names: Vec<&str> = got.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(names, ["hub", "token", "media"]);
}
