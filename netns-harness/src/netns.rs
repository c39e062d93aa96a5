//! Named network namespaces (`/run/netns/<name>`, as iproute2 makes them):
//! listing a prefix's namespaces, finding the processes inside them (what
//! `ip netns pids` does, for all namespaces in one pass over /proc), and
//! running code inside one from a short-lived thread (`setns` affects only
//! the calling thread).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

use crate::error::HarnessError;

/// Where iproute2 keeps named network namespaces.
pub(crate) const NETNS_DIR: &str = "/run/netns";

/// Path of a named namespace.
pub(crate) fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Names of existing namespaces that start with `<prefix>-`, sorted.
pub(crate) fn list(prefix: &str) -> Vec<String> {
    let start = format!("{prefix}-");
    let mut names: Vec<String> = match std::fs::read_dir(NETNS_DIR) {
        Ok(dir) => dir
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(&start))
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Whether the named namespace exists.
pub(crate) fn exists(name: &str) -> bool {
    path(name).exists()
}

/// For each of `names`, the pids whose network namespace it is. Our own
/// process is never listed.
pub(crate) fn pids(names: &[String]) -> HashMap<String, Vec<i32>> {
    let mut by_inode: HashMap<(u64, u64), String> = HashMap::new();
    for n in names {
        if let Ok(md) = std::fs::metadata(path(n)) {
            by_inode.insert((md.dev(), md.ino()), n.clone());
        }
    }
    let mut out: HashMap<String, Vec<i32>> =
        names.iter().map(|n| (n.clone(), Vec::new())).collect();
    if by_inode.is_empty() {
        return out;
    }
    let me = std::process::id() as i32;
    let Ok(proc_dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in proc_dir.filter_map(|e| e.ok()) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(md) = std::fs::metadata(entry.path().join("ns/net")) else {
            continue;
        };
        if let Some(n) = by_inode.get(&(md.dev(), md.ino())) {
            out.get_mut(n).expect("listed").push(pid);
        }
    }
    for v in out.values_mut() {
        v.sort_unstable();
    }
    out
}

/// Runs `f` on a fresh thread that has entered namespace `name`.
pub(crate) fn run_in<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> Result<T, HarnessError> {
    let file = File::open(path(name)).map_err(|source| HarnessError::Netns {
        netns: name.to_string(),
        source,
    })?;
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| HarnessError::Netns {
                netns: name.to_string(),
                source: e.into(),
            })?;
            Ok(f())
        })
        .join()
        .expect("netns worker thread does not panic")
    })
}

/// Writes `net.*` sysctls (`("net/ipv4/ip_forward", "1")`, paths under
/// /proc/sys) inside namespace `name`, without forking.
pub(crate) fn sysctls(name: &str, values: &[(&str, &str)]) -> Result<(), HarnessError> {
    run_in(name, || {
        for (key, value) in values {
            let p = Path::new("/proc/sys").join(key);
            std::fs::write(&p, value)
                .map_err(|e| HarnessError::io("cannot write sysctl", &p, e))?;
        }
        Ok(())
    })?
    .map_err(|e| match e {
        HarnessError::Io { what, path, source } => HarnessError::Io {
            what,
            path: PathBuf::from(format!("{} (in netns {name})", path.display())),
            source,
        },
        other => other,
    })
}
