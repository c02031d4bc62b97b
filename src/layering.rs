//! The layering rule, checked rather than remembered (as rust-analyzer's tidy tests do).
//!
//! Every top-level module of the crate has a layer (core, edge, feature, application). A module
//! may import only from its own layer or a lower one, and the graph of imports between
//! top-level modules has no cycle. Some modules are further fenced: the hooks never name the
//! analysis, the job workers or the models, so "hooks never run a model" cannot regress.
//!
//! The check reads the sources: every `crate::name` path (in `use` lines, grouped
//! `use crate::{a, b}` lines, and inline paths) names module `name`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and its layer: 0 core, 1 edge, 2 feature, 3 application.
const LAYERS: &[(&str, u8)] = &[
    ("domain", 0),
    ("imaging", 0),
    ("configuration", 0),
    ("store", 0),
    ("audit", 0),
    ("auth", 0),
    ("keys", 0),
    ("http_client", 0),
    ("telemetry", 0),
    ("state", 0),
    ("http", 1),
    ("mllp", 1),
    ("dicomweb", 2),
    ("results", 2),
    ("analysis", 2),
    ("jobs", 2),
    ("backend_auth", 2),
    ("outbox", 2),
    ("hl7", 2),
    ("notifications", 2),
    ("cds_hooks", 2),
    ("smart", 2),
    ("audit_api", 2),
    ("health", 2),
    ("demo", 3),
    ("startup", 3),
    ("cli", 3),
];

/// Names a module must never use, with the reason.
const FENCES: &[(&str, &str, &str)] = &[
    ("cds_hooks", "analysis", "hooks never run a model"),
    ("cds_hooks", "jobs", "hooks never run a model"),
    ("cds_hooks", "radsight_vision", "hooks never run a model"),
    ("cds_hooks", "radsight_dicom", "hooks never decode images"),
    ("smart", "analysis", "the SMART API only reads stored results"),
    ("smart", "radsight_vision", "the SMART API only reads stored results"),
    ("results", "radsight_vision", "results are stored data, not models"),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under `src/` belongs to (`None` for the crate root files).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" | "layering.rs" => None,
        name => Some(name.trim_end_matches(".rs").to_owned()),
    }
}

/// The names a source text imports: `crate::x`, `crate::{x, y::z}`, and crate names such as
/// `radsight_vision`. Comments are left out.
fn imported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let ident = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                let group = group.split('}').next().unwrap_or_default();
                names.extend(group.split(',').map(|part| ident(part.trim())).filter(|n| !n.is_empty()));
            } else {
                names.insert(ident(after));
            }
            rest = after;
        }
        for krate in ["radsight_vision", "radsight_dicom", "radsight_demo_ehr"] {
            if code.contains(krate) {
                names.insert(krate.to_owned());
            }
        }
    }
    names
}

/// Module → the modules (and fenced crates) it imports, over every file in `src/`.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else { continue };
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        let imports: Vec<String> = imported_names(&text).into_iter().filter(|n| *n != module).collect();
        graph.entry(module).or_default().extend(imports);
    }
    graph
}

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// A cycle through the graph, if there is one (depth-first search with colours).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten().filter(|n| graph.contains_key(*n)) {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = path.iter().position(|p| p == next).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(next, graph, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0
            && let Some(c) = visit(node, graph, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn every_module_has_a_layer() {
    let unknown: Vec<_> = import_graph().into_keys().filter(|m| layer(m).is_none()).collect();
    assert!(unknown.is_empty(), "give these modules a layer in src/layering.rs and ARCHITECTURE.md: {unknown:?}");
}

#[test]
fn modules_import_only_from_their_layer_or_below() {
    let mut violations = Vec::new();
    for (module, imports) in import_graph() {
        let Some(own) = layer(&module) else { continue };
        for import in imports {
            if let Some(theirs) = layer(&import)
                && theirs > own
            {
                violations.push(format!("{module} (layer {own}) imports {import} (layer {theirs})"));
            }
        }
    }
    assert!(violations.is_empty(), "imports that point up a layer:\n{}", violations.join("\n"));
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = import_graph();
    assert_eq!(find_cycle(&graph), None, "a cycle of imports between top-level modules");
}

#[test]
fn fenced_modules_never_name_what_they_must_not_use() {
    let graph = import_graph();
    let broken: Vec<_> = FENCES
        .iter()
        .filter(|(module, forbidden, _)| graph.get(*module).is_some_and(|i| i.contains(*forbidden)))
        .map(|(module, forbidden, why)| format!("{module} names {forbidden}: {why}"))
        .collect();
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn the_checker_sees_imports_and_cycles() {
    let names = imported_names(
        "use crate::{audit, store::entities};\nuse crate::state::AppState; // crate::startup in a comment\nlet x = radsight_vision::Registry;",
    );
    assert_eq!(names, ["audit", "radsight_vision", "state", "store"].into_iter().map(String::from).collect());
    let cyclic: BTreeMap<String, BTreeSet<String>> =
        [("a", "b"), ("b", "c"), ("c", "a")].into_iter().map(|(x, y)| (x.to_owned(), BTreeSet::from([y.to_owned()]))).collect();
    assert_eq!(find_cycle(&cyclic), Some(vec!["a".to_owned(), "b".to_owned(), "c".to_owned(), "a".to_owned()]));
    let acyclic: BTreeMap<String, BTreeSet<String>> =
        [("a", "b"), ("b", "c"), ("c", "d")].into_iter().map(|(x, y)| (x.to_owned(), BTreeSet::from([y.to_owned()]))).collect();
    assert_eq!(find_cycle(&acyclic), None);
}
