//! The run's state file, `/run/strato/<prefix>/state.json`: what `attach`
//! needs to reopen a running region (the region file text, VMs, injected
//! failures). Writers hold an exclusive `flock` on `<dir>/lock` around
//! read-modify-write and replace the file atomically (write + rename).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::error::HarnessError;
use crate::region::FailTarget;
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
