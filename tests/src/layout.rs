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
    ("strato-l7", &["strato-proto", "strato-lb"]),
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

/// The kernel programs' layers, lowest first: (layer, its modules, whether
/// modules of the layer may import one another). A module imports only
/// modules of lower layers, or of its own layer where allowed. `features`
/// is split into its features (`features::lb`, ...), which never import
/// one another: where two features meet, a path puts them together. The
/// top layer holds the objects' roots and entry points.
pub const KERNEL_LAYERS: &[(&str, &[&str], bool)] = &[
    ("base", &["base"], true),
    ("net", &["net"], true),
    ("features", &["features", "features::*"], false),
    ("paths", &["paths"], true),
    (
        "entry points",
        &["main", "bench_main", "entry", "bench"],
        true,
    ),
];

/// Top-level modules of the kernel crate whose submodules are nodes of
/// their own in the module graph.
pub const KERNEL_SPLIT: &[&str] = &["features"];

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

/// The first segments of every path starting with `prefix` (`crate::` or
/// `super::`) in `code`, including those in `use crate::{a::x, b, c::{..}}`
/// groups; for a module in `split`, its first two (`features::lb`).
fn crate_refs(code: &str, prefix: &str, split: &[&str]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    // `name` followed by `::sub` (or `::{a, b}`) in `rest`.
    let named = |name: String, rest: &str, out: &mut BTreeSet<String>| {
        if name.is_empty() || name == "self" || name == "super" {
            return;
        }
        if split.contains(&name.as_str()) {
            if let Some(after) = rest[name.len()..].strip_prefix("::") {
                let subs: Vec<String> = match after.strip_prefix('{') {
                    Some(g) => g
                        .split('}')
                        .next()
                        .unwrap_or("")
                        .split(',')
                        .map(|x| ident(x.trim()))
                        .collect(),
                    None => vec![ident(after)],
                };
                for sub in subs.into_iter().filter(|x| !x.is_empty() && x != "self") {
                    out.insert(format!("{name}::{sub}"));
                }
                return;
            }
        }
        out.insert(name);
    };
    for (at, _) in code.match_indices(prefix) {
        // `super::` must not be the tail of `crate::super::` or a longer path.
        if at > 0 && code[..at].ends_with("::") {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1usize;
            let mut item_start = true;
            for (k, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => {
                        item_start = true;
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
                if depth == 1 && item_start && !c.is_whitespace() {
                    named(ident(&group[k..]), &group[k..], &mut out);
                    item_start = false;
                }
            }
        } else {
            named(ident(rest), rest, &mut out);
        }
    }
    out
}

/// Top-level module -> the top-level modules its production code names,
/// for the crate whose sources are in `src`. The crate root (`lib.rs` or
/// `main.rs`) is the module `main`; `bin/` targets are left out.
pub fn module_graph(
    src: &Path,
    split: &[&str],
) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
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
                let decl = w[1]
                    .trim_start_matches("pub(crate) ")
                    .trim_start_matches("pub(super) ")
                    .trim_start_matches("pub ");
                if let Some(m) = decl.strip_prefix("mod ").and_then(|m| m.strip_suffix(';')) {
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
        let top = match first.strip_suffix(".rs").unwrap_or(first) {
            "lib" | "main" => "main".to_owned(),
            m => m.to_owned(),
        };
        // In a split module, `features/lb.rs` and `features/lb/*` are the
        // node `features::lb`; `features/mod.rs` is `features`.
        let sub = rel
            .components()
            .nth(1)
            .and_then(|c| c.as_os_str().to_str())
            .map(|c| c.strip_suffix(".rs").unwrap_or(c).to_owned())
            .filter(|c| c != "mod" && split.contains(&top.as_str()));
        let module = match &sub {
            Some(c) => format!("{top}::{c}"),
            None => top.clone(),
        };
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let code = production_code(&text);
        let mut refs = crate_refs(&code, "crate::", split);
        // `super::x` in a file directly below a split module names a sibling.
        let depth = rel.components().count();
        let direct = depth == 2 || (depth == 3 && rel.ends_with("mod.rs"));
        if sub.is_some() && direct {
            for r in crate_refs(&code, "super::", &[]) {
                refs.insert(format!("{top}::{r}"));
            }
        }
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(refs.into_iter().filter(|r| *r != module));
    }
    // Only edges to modules (not to items re-exported at the root): a
    // reference into a split module's item (`features::x` that is not a
    // node) is an edge to the split module itself.
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        *deps = deps
            .iter()
            .filter_map(|d| {
                if modules.contains(d) {
                    Some(d.clone())
                } else {
                    let top = d.split("::").next().unwrap_or(d);
                    (d.contains("::") && modules.contains(top)).then(|| top.to_owned())
                }
            })
            .collect();
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
        KERNEL_LAYERS.iter().position(|(_, mods, _)| {
            mods.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => m.starts_with(prefix),
                None => *p == m,
            })
        })
    };
    let mut bad = Vec::new();
    for (m, deps) in graph {
        let Some(l) = layer_of(m) else {
            bad.push(format!("kernel module {m} is in no layer of KERNEL_LAYERS"));
            continue;
        };
        for d in deps {
            match layer_of(d) {
                Some(dl) if dl < l => {}
                // A feature may use what its layer's `mod.rs` holds.
                Some(dl) if dl == l && (KERNEL_LAYERS[l].2 || !d.contains("::")) => {}
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
            let split: &[&str] = if name == "dataplane-ebpf" {
                KERNEL_SPLIT
            } else {
                &[]
            };
            let graph = module_graph(&dir.join("src"), split).expect("the sources read");
            for c in cycles(&graph) {
                bad.push(format!("{name}: {}", c.join(" <-> ")));
            }
        }
        assert!(bad.is_empty(), "import cycles:\n{}", bad.join("\n"));
    }

    #[test]
    fn the_kernel_programs_are_layered() {
        let graph = module_graph(&root().join("dataplane-ebpf/src"), KERNEL_SPLIT)
            .expect("the sources read");
        assert!(
            graph.keys().filter(|m| m.starts_with("features::")).count() >= 4,
            "the features are nodes of their own: {:?}",
            graph.keys().collect::<Vec<_>>()
        );
        let bad = kernel_violations(&graph);
        assert!(bad.is_empty(), "kernel layering:\n{}", bad.join("\n"));
    }

    #[test]
    fn the_checks_can_fail() {
        // A cycle, a test module that must not count, and a group import.
        let a = "use crate::{b::x, c};\nfn f() { crate::d::g(); }\n\
                 #[cfg(test)]\nmod tests { use crate::e; }\n// crate::f\n";
        let refs = crate_refs(&production_code(a), "crate::", &[]);
        assert_eq!(
            refs.into_iter().collect::<Vec<_>>(),
            ["b", "c", "d"],
            "edges of the sample"
        );
        let f = "use crate::features::{lb, snat::x};\nuse crate::base::y;\nfn g() { crate::features::elastic_ips::f(); }";
        assert_eq!(
            crate_refs(f, "crate::", &["features"])
                .into_iter()
                .collect::<Vec<_>>(),
            [
                "base",
                "features::elastic_ips",
                "features::lb",
                "features::snat"
            ]
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
            ("features", vec!["base"]),
            ("features::lb", vec!["features", "base", "features::snat"]),
            ("features::snat", vec!["paths"]),
            ("paths", vec!["features::lb"]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
        .collect();
        assert_eq!(
            kernel_violations(&k),
            [
                "kernel: features::lb (features) imports features::snat (features)",
                "kernel: features::snat (features) imports paths (paths)"
            ]
        );
    }
}
