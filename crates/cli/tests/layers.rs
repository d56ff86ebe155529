//! The shape of the code, held by a test: inside each crate no module imports another that
//! (directly or not) imports it back, and in the host and the runner a lower layer never imports
//! a higher one. A module is a file under `src/` (its submodules count as part of it); an import
//! is any `crate::name` path, grouped imports (`crate::{a, b}`) included. Tests are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module of the crate at `src` and the modules of that crate it names.
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    walk(src, &mut files);
    files.retain(|f| {
        let stem = f.file_stem().unwrap().to_string_lossy();
        stem != "tests" && !stem.ends_with("_tests")
    });
    let top_of = |f: &Path| -> String {
        let rel = f.strip_prefix(src).unwrap().with_extension("");
        let first = rel.components().next().unwrap();
        first.as_os_str().to_string_lossy().into_owned()
    };
    let mut modules: BTreeMap<String, BTreeSet<String>> = files.iter().map(|f| (top_of(f), BTreeSet::new())).collect();
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    for f in &files {
        let top = top_of(f);
        let text = std::fs::read_to_string(f).unwrap();
        let code = text.split("#[cfg(test)]\nmod tests {").next().unwrap_or_default();
        let named = modules.get_mut(&top).unwrap();
        for used in crate_paths(code) {
            if used != top && known.contains(&used) && !["lib", "main"].contains(&used.as_str()) {
                named.insert(used);
            }
        }
    }
    modules.remove("lib");
    modules.remove("main");
    for m in modules.values_mut() {
        m.remove("lib");
        m.remove("main");
    }
    modules
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The first segment of every `crate::…` path in `code`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            out.extend(group.split(',').map(|p| ident(p.trim())).filter(|n| !n.is_empty()));
        } else {
            let n = ident(rest);
            if !n.is_empty() {
                out.insert(n);
            }
        }
    }
    out
}

/// The modules on some import cycle, as one sorted list per cycle.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Two modules share a cycle when each reaches the other.
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(m) = todo.pop() {
            for n in graph.get(&m).into_iter().flatten() {
                if seen.insert(n.clone()) {
                    todo.push(n.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&String, BTreeSet<String>> = graph.keys().map(|m| (m, reach(m))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    for (m, r) in &reached {
        if !r.contains(*m) {
            continue;
        }
        let mut cycle: Vec<String> = r.iter().filter(|n| reached[n].contains(*m)).cloned().collect();
        cycle.sort();
        if !out.contains(&cycle) {
            out.push(cycle);
        }
    }
    out
}

fn crate_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name).join("src")
}

/// Checks `layers` (lowest first) against the crate's imports: every module is in one layer, and
/// none imports a module of a higher layer.
fn check_layers(krate: &str, layers: &[&[&str]]) -> Vec<String> {
    let graph = imports(&crate_src(krate));
    let layer_of = |m: &str| layers.iter().position(|l| l.contains(&m));
    let mut wrong = Vec::new();
    for (m, uses) in &graph {
        let Some(mine) = layer_of(m) else {
            wrong.push(format!("{krate}: module {m} is in no layer; add it to this test"));
            continue;
        };
        for u in uses {
            if layer_of(u).is_some_and(|theirs| theirs > mine) {
                wrong.push(format!("{krate}: {m} (layer {mine}) imports {u}, a higher layer"));
            }
        }
    }
    wrong
}

#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    let crates = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap();
    let mut found = Vec::new();
    for c in crates {
        let src = c.unwrap().path().join("src");
        if src.is_dir() {
            for cycle in cycles(&imports(&src)) {
                found.push(format!("{}: {}", src.display(), cycle.join(" ↔ ")));
            }
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

/// The host in three layers: who asks and what they may do (`auth`) with the pieces every
/// service shares; services that own their state and rules; transports that only translate.
#[test]
fn the_host_imports_only_downwards() {
    let base: &[&str] = &[
        "auth",
        "backup",
        "clock",
        "cluster_view",
        "config",
        "entrances",
        "events",
        "init",
        "join_failures",
        "ops",
        "reply",
        "secrets",
        "sessions",
        "streams",
        "usage",
    ];
    let services: &[&str] = &[
        "api_tokens",
        "web_logins",
        "approvals",
        "env_edit",
        "envs",
        "groups",
        "lifecycle",
        "limits",
        "overlay",
        "registry",
        "reports",
        "submit",
        "tasks",
        "users",
        "vps",
        "waiting",
    ];
    let transports: &[&str] = &[
        "api", "gateway", "join", "logs", "mesh", "rpc", "terminal", "udp", "web",
    ];
    let wrong = check_layers("host", &[base, services, transports]);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The runner: the node's means (engine images, processes and cgroups, the overlay, forwards,
/// terminals, SFTP), the executor that runs tasks with them, and the sessions that drive it.
#[test]
fn the_runner_imports_only_downwards() {
    let means: &[&str] = &[
        "backend", "cgroup", "config", "forward", "images", "nosuid", "overlay", "process", "sftp", "terminal",
    ];
    let work: &[&str] = &["exec"];
    let sessions: &[&str] = &["renew", "session", "ssh", "testing"];
    let wrong = check_layers("runner", &[means, work, sessions]);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Each heavy library is named by one crate, which wraps it in river's own types: swapping it,
/// or testing around it, touches that crate only.
const HEAVY: &[(&str, &str)] = &[
    ("bollard", "docker"),
    ("nvml-wrapper", "inventory"),
    ("quinn", "mesh"),
    ("rcgen", "pki"),
    ("rtnetlink", "overlay"),
    ("russh", "ssh"),
    ("sqlx", "store"),
];

/// The dependencies (not dev-dependencies) a `Cargo.toml` names.
fn dependencies(manifest: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_deps = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
        } else if in_deps && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.', ' ']).next().unwrap_or_default();
            out.insert(name.to_owned());
        }
    }
    out
}

/// Where each heavy library is named other than in its own crate.
fn heavy_misplaced(manifests: &BTreeMap<String, String>) -> Vec<String> {
    let mut wrong = Vec::new();
    for (krate, manifest) in manifests {
        for dep in dependencies(manifest) {
            if let Some((_, home)) = HEAVY.iter().find(|(lib, _)| *lib == dep) {
                if krate != home {
                    wrong.push(format!(
                        "{krate} depends on {dep}, which only the {home} crate may name"
                    ));
                }
            }
        }
    }
    wrong
}

#[test]
fn each_heavy_library_is_named_by_one_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut manifests = BTreeMap::new();
    for c in std::fs::read_dir(&root).unwrap() {
        let dir = c.unwrap().path();
        if let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) {
            manifests.insert(dir.file_name().unwrap().to_string_lossy().into_owned(), text);
        }
    }
    for (lib, home) in HEAVY {
        assert!(
            dependencies(&manifests[*home]).contains(*lib),
            "{home} no longer names {lib}: update this test"
        );
    }
    let wrong = heavy_misplaced(&manifests);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The checks above catch what they are for: a made-up cycle, and imports however written.
#[test]
fn the_checks_find_a_cycle_and_read_grouped_imports() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut edge = |a: &str, b: &str| {
        g.entry(a.into()).or_default().insert(b.into());
        g.entry(b.into()).or_default();
    };
    edge("tasks", "groups");
    edge("groups", "lifecycle");
    edge("lifecycle", "tasks");
    edge("mesh", "tasks");
    assert_eq!(
        cycles(&g),
        vec![vec!["groups".to_owned(), "lifecycle".into(), "tasks".into()]]
    );
    assert_eq!(
        crate_paths("use crate::{auth::Caller, mesh};\nlet x = crate::tasks::view(a);"),
        ["auth", "mesh", "tasks"].map(String::from).into_iter().collect()
    );
    // A second crate naming russh is found, however it is written; a dev-dependency is not.
    let host = "[package]\nname = \"river-host\"\n\n[dependencies]\nriver-ssh.workspace = true\nrussh = { workspace = true }\n\n[dev-dependencies]\nsqlx.workspace = true\n";
    let manifests = BTreeMap::from([("host".to_owned(), host.to_owned())]);
    assert_eq!(
        heavy_misplaced(&manifests),
        ["host depends on russh, which only the ssh crate may name"]
    );
}
