//! The workspace's layout rules, checked from the sources (unit tier):
//!
//! - **Crates depend only downward** ([`CRATE_RULES`]): the contract
//!   (`strato-proto`) and the dataplane loader never link the controller or
//!   the agent; the controller never links BPF; the agent never links the
//!   controller's store or API.
//! - **No import cycle between the top-level modules of a crate**: a module
//!   that is needed by another never needs it back (test modules excepted:
//!   a test may reach anywhere).
//! - **The kernel programs are layered** ([`KERNEL_LAYERS`]): a layer
//!   imports only the layers below it, and a feature never imports another
//!   feature (where two features meet, a path puts them together).
//!
//! Module edges are read from `crate::` paths in the sources (`use`
//! declarations and qualified paths), with comments and `#[cfg(test)]`
//! modules left out. A rule broken names the edge or the cycle.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Workspace crates (by package name) and the workspace crates each may
/// depend on. The tests crate may depend on anything and is not listed.
pub const CRATE_RULES: &[(&str, &[&str])] = &[
    ("dataplane-common", &[]),
    ("dataplane-ebpf", &["dataplane-common"]),
    ("strato-proto", &["dataplane-common"]),
    ("strato-dataplane", &["dataplane-common", "strato-proto"]),
    ("strato-lb", &[]),
    ("strato-vpn", &[]),
    (
        "strato-agent",
        &[
            "dataplane-common",
            "strato-proto",
            "strato-dataplane",
            "strato-lb",
        ],
    ),
    (
        "stratoctl",
        &["dataplane-common", "strato-proto", "strato-dataplane"],
    ),
    ("strato-controller", &["strato-proto"]),
    ("netns-harness", &[]),
];

/// The kernel programs' layers, lowest first: (layer, its top-level
/// modules). A module imports only modules of lower layers, or of its own
/// layer when the layer allows it (`true`); `main` (the entry points) may
/// import every layer.
pub const KERNEL_LAYERS: &[(&str, &[&str], bool)] = &[
    ("base", &["base"], true),
    ("net", &["net"], true),
    ("features", &["features"], false),
    ("paths", &["paths"], true),
];

/// Package name -> (its folder, the workspace packages it depends on).
pub fn workspace_crates(root: &Path) -> Result<BTreeMap<String, (PathBuf, Vec<String>)>, String> {
    let members = std::fs::read_to_string(root.join("Cargo.toml"))
        .map_err(|e| format!("reading the workspace Cargo.toml: {e}"))?;
    let list = members
        .split("members = [")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .ok_or("the workspace Cargo.toml has no members list")?;
    let dirs: Vec<String> = list
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    let mut names = BTreeMap::new();
    let mut manifests = Vec::new();
    for d in &dirs {
        let text = std::fs::read_to_string(root.join(d).join("Cargo.toml"))
            .map_err(|e| format!("reading {d}/Cargo.toml: {e}"))?;
        let name = text
            .lines()
            .find_map(|l| l.strip_prefix("name = "))
            .map(|n| n.trim().trim_matches('"').to_owned())
            .ok_or(format!("{d}/Cargo.toml has no package name"))?;
        names.insert(name.clone(), root.join(d));
        manifests.push((name, text));
    }
    let mut out = BTreeMap::new();
    for (name, text) in manifests {
        let mut deps = Vec::new();
        let mut in_deps = false;
        for line in text.lines() {
            let l = line.trim();
            if l.starts_with('[') {
                in_deps = l == "[dependencies]" || l == "[build-dependencies]";
                continue;
            }
            if !in_deps {
                continue;
            }
            let Some(dep) = l.split(['=', '.', ' ']).next() else {
                continue;
            };
            if names.contains_key(dep) {
                deps.push(dep.to_owned());
            }
        }
        out.insert(name.clone(), (names[&name].clone(), deps));
    }
    Ok(out)
}

/// Every crate dependency that [`CRATE_RULES`] does not allow.
pub fn crate_violations(root: &Path) -> Result<Vec<String>, String> {
    let crates = workspace_crates(root)?;
    let rules: BTreeMap<&str, &[&str]> = CRATE_RULES.iter().copied().collect();
    let mut bad = Vec::new();
    for (name, (_, deps)) in &crates {
        if name == "strato-tests" {
            continue;
        }
        let Some(allowed) = rules.get(name.as_str()) else {
            bad.push(format!(
                "{name} has no rule in CRATE_RULES: say what it may depend on"
            ));
            continue;
        };
        for d in deps {
            if !allowed.contains(&d.as_str()) {
                bad.push(format!(
                    "{name} depends on {d}, which CRATE_RULES does not allow"
                ));
            }
        }
    }
    Ok(bad)
}

/// `text` without comments, string literals' contents and `#[cfg(test)]`
/// items (a test module or function, with its braces).
fn production_code(text: &str) -> String {
    // Comments and strings first, so braces inside them do not count.
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i = text[i..].find("*/").map_or(b.len(), |e| i + e + 2);
        } else if b[i] == b'"' {
            out.push('"');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            out.push('"');
            i += 1;
        } else {
            let c = text[i..].chars().next().expect("in bounds");
            out.push(c);
            i += c.len_utf8();
        }
    }
    // Then every `#[cfg(test)]` item: up to its `;` or its balanced braces.
    let mut s = out;
    while let Some(at) = s.find("#[cfg(test)]") {
        let rest = &s[at..];
        let semi = rest.find(';');
        let brace = rest.find('{');
        let end = match (semi, brace) {
            (Some(sc), Some(br)) if sc < br => at + sc + 1,
            (_, Some(br)) => {
                let mut depth = 0usize;
                let mut end = s.len();
                for (k, ch) in s[at + br..].char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = at + br + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (Some(sc), None) => at + sc + 1,
            (None, None) => s.len(),
        };
        s.replace_range(at..end, "");
    }
    s
}

/// The first segments of every `crate::` path in `code`, including those in
/// `use crate::{a::x, b, c::{..}}` groups.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1usize;
            let mut item_start = true;
            let mut k = 0;
            let chars: Vec<char> = group.chars().collect();
            while k < chars.len() && depth > 0 {
                let c = chars[k];
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => {
                        item_start = true;
                        k += 1;
                        continue;
                    }
                    _ => {}
                }
                if depth == 1 && item_start && !c.is_whitespace() {
                    let name = ident(&chars[k..].iter().collect::<String>());
                    if !name.is_empty() && name != "self" {
                        out.insert(name);
                    }
                    item_start = false;
                }
                k += 1;
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// Top-level module -> the top-level modules its production code names,
/// for the crate whose sources are in `src`. The crate root (`lib.rs` or
/// `main.rs`) is the module `main`; `bin/` targets are left out.
pub fn module_graph(src: &Path) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.is_dir() {
                walk(&p, files)?;
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(src, &mut files).map_err(|e| format!("reading {}: {e}", src.display()))?;
    // Files that only exist as `#[cfg(test)] mod x;` are test code.
    let mut test_files = BTreeSet::new();
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for w in lines.windows(2) {
            if w[0] == "#[cfg(test)]" {
                if let Some(m) = w[1].strip_prefix("mod ").and_then(|m| m.strip_suffix(';')) {
                    let dir = f.parent().expect("a file has a parent");
                    let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                    let base = if matches!(stem, "mod" | "lib" | "main") {
                        dir.to_path_buf()
                    } else {
                        dir.join(stem)
                    };
                    test_files.insert(base.join(format!("{m}.rs")));
                    test_files.insert(base.join(m).join("mod.rs"));
                }
            }
        }
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(src).expect("under src");
        let first = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or("");
        if first == "bin" || test_files.contains(f) {
            continue;
        }
        let module = match first.strip_suffix(".rs").unwrap_or(first) {
            "lib" | "main" => "main".to_owned(),
            m => m.to_owned(),
        };
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let refs = crate_refs(&production_code(&text));
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(refs.into_iter().filter(|r| *r != module));
    }
    // Only edges to modules (not to items re-exported at the root).
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| modules.contains(d));
    }
    Ok(graph)
}

/// The cycles (strongly connected sets of two or more modules) of `graph`.
pub fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Two modules are in one cycle when each reaches the other.
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(m) = todo.pop() {
            for d in graph.get(&m).into_iter().flatten() {
                if seen.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
        seen
    };
    let all: BTreeMap<&String, BTreeSet<String>> = graph.keys().map(|m| (m, reach(m))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for m in graph.keys() {
        if done.contains(m) || !all[m].contains(m) {
            continue;
        }
        let set: Vec<String> = graph
            .keys()
            .filter(|o| all[m].contains(*o) && all[*o].contains(m))
            .cloned()
            .collect();
        done.extend(set.iter().cloned());
        out.push(set);
    }
    out
}

/// Kernel module edges that go up a layer, or across features.
pub fn kernel_violations(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let layer_of = |m: &str| {
        KERNEL_LAYERS
            .iter()
            .position(|(_, mods, _)| mods.contains(&m))
    };
    let mut bad = Vec::new();
    for (m, deps) in graph {
        if m == "main" {
            continue;
        }
        let Some(l) = layer_of(m) else {
            bad.push(format!("kernel module {m} is in no layer of KERNEL_LAYERS"));
            continue;
        };
        for d in deps {
            match layer_of(d) {
                Some(dl) if dl < l => {}
                Some(dl) if dl == l && KERNEL_LAYERS[l].2 => {}
                Some(dl) => bad.push(format!(
                    "kernel: {m} ({}) imports {d} ({})",
                    KERNEL_LAYERS[l].0, KERNEL_LAYERS[dl].0
                )),
                None => bad.push(format!("kernel: {m} imports {d}, which is in no layer")),
            }
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ has a parent")
            .to_path_buf()
    }

    #[test]
    fn crates_depend_only_downward() {
        let bad = crate_violations(&root()).expect("the manifests read");
        assert!(
            bad.is_empty(),
            "crate dependencies break the layout:\n{}",
            bad.join("\n")
        );
    }

    #[test]
    fn no_crate_has_an_import_cycle_between_its_modules() {
        let crates = workspace_crates(&root()).expect("the manifests read");
        let mut bad = Vec::new();
        for (name, (dir, _)) in &crates {
            let graph = module_graph(&dir.join("src")).expect("the sources read");
            for c in cycles(&graph) {
                bad.push(format!("{name}: {}", c.join(" <-> ")));
            }
        }
        assert!(bad.is_empty(), "import cycles:\n{}", bad.join("\n"));
    }

    #[test]
    fn the_kernel_programs_are_layered() {
        let graph = module_graph(&root().join("dataplane-ebpf/src")).expect("the sources read");
        let bad = kernel_violations(&graph);
        assert!(bad.is_empty(), "kernel layering:\n{}", bad.join("\n"));
    }

    #[test]
    fn the_checks_can_fail() {
        // A cycle, a test module that must not count, and a group import.
        let a = "use crate::{b::x, c};\nfn f() { crate::d::g(); }\n\
                 #[cfg(test)]\nmod tests { use crate::e; }\n// crate::f\n";
        let refs = crate_refs(&production_code(a));
        assert_eq!(
            refs.into_iter().collect::<Vec<_>>(),
            ["b", "c", "d"],
            "edges of the sample"
        );
        let g: BTreeMap<String, BTreeSet<String>> = [
            ("a", vec!["b"]),
            ("b", vec!["c"]),
            ("c", vec!["a"]),
            ("d", vec!["a"]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
        .collect();
        assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
        let k: BTreeMap<String, BTreeSet<String>> = [
            ("base", vec![]),
            ("features", vec!["paths", "base"]),
            ("paths", vec!["features"]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
        .collect();
        assert_eq!(
            kernel_violations(&k),
            ["kernel: features (features) imports paths (paths)"]
        );
    }
}
