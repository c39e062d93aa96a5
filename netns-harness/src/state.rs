//! The run's state file, `/run/strato/<prefix>/state.json`: what `attach`
//! needs to reopen a running region (the region file text, VMs, injected
//! failures). Writers hold an exclusive `flock` on `<dir>/lock` around
//! read-modify-write and replace the file atomically (write + rename).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::error::HarnessError;
use crate::vm::Vm;

/// Bumped when the format changes incompatibly.
pub(crate) const STATE_VERSION: u32 = 1;

/// Whether `up` finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Phase {
    /// `up` is running, or died before it finished.
    Creating,
    /// `up` finished.
    Up,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct State {
    pub version: u32,
    pub prefix: String,
    pub phase: Phase,
    /// Pid of the process that ran `up` (information only).
    pub created_by_pid: u32,
    pub created_unix: u64,
    pub topology_origin: String,
    pub topology_source: String,
    pub vms: Vec<Vm>,
    pub failures: Vec<FailTarget>,
}

pub(crate) fn state_path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

impl State {
    pub(crate) fn load(dir: &Path) -> Result<State, HarnessError> {
        let path = state_path(dir);
        let text = std::fs::read(&path)
            .map_err(|e| HarnessError::io("cannot read state file", &path, e))?;
        serde_json::from_slice(&text).map_err(|source| HarnessError::State { path, source })
    }

    pub(crate) fn save(&self, dir: &Path) -> Result<(), HarnessError> {
        let path = state_path(dir);
        let tmp = dir.join("state.json.tmp");
        let text = serde_json::to_vec_pretty(self).expect("state serializes");
        std::fs::write(&tmp, text)
            .map_err(|e| HarnessError::io("cannot write state file", &tmp, e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| HarnessError::io("cannot replace state file", &path, e))
    }
}

/// Exclusive lock on the run directory, released on drop.
pub(crate) fn lock(dir: &Path) -> Result<Flock<File>, HarnessError> {
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| HarnessError::io("cannot open lock file", &path, e))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| HarnessError::io("cannot lock", &path, errno.into()))
}

/// What `fail` breaks. Names are logical: a host `az1-c1`, a link `az1-spine`
/// (see [`crate::plan`] for link names; a VM's link is `vm-<name>`), an AZ `az1`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum FailTarget {
    /// All the host's links down (both ends, its VMs' ports too) and every
    /// process in its namespace and its VMs' namespaces stopped (SIGSTOP).
    Host(String),
    /// One link down, both ends.
    Link(String),
    /// The AZ's spine link down and every host of the AZ failed as by `Host`.
    Az(String),
}

impl fmt::Display for FailTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailTarget::Host(n) => write!(f, "host {n}"),
            FailTarget::Link(n) => write!(f, "link {n}"),
            FailTarget::Az(n) => write!(f, "az {n}"),
        }
    }
}
