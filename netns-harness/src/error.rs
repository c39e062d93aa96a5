//! The harness's error type: every variant says what failed and with what value.

use std::path::PathBuf;

use crate::topology::TopologyError;

/// Everything that can go wrong while building, inspecting or tearing down a
/// region. Messages name the failing value (prefix, node, command, path) and,
/// for `ip` failures, the exact command line and iproute2's stderr.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The region file did not validate.
    #[error(transparent)]
    Topology(#[from] TopologyError),

    /// A run prefix that is not `[a-z][a-z0-9]{0,7}`.
    #[error("invalid prefix {prefix:?}: {reason} (a prefix is [a-z][a-z0-9]{{0,7}}, no dash)")]
    InvalidPrefix {
        prefix: String,
        reason: &'static str,
    },

    /// The operation needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN).
    #[error("{what} needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); run it as root")]
    NeedsRoot { what: &'static str },

    /// `up` found something of this prefix on the machine already.
    #[error("prefix {prefix:?} is already up ({what}); run `strato-harness --prefix {prefix} down` first")]
    AlreadyUp { prefix: String, what: String },

    /// `attach` found no state file, or an incomplete one.
    #[error("prefix {prefix:?} is not up: {reason} (state file {path})")]
    NotUp {
        prefix: String,
        path: PathBuf,
        reason: String,
    },

    /// A logical node name that the region does not have.
    #[error("unknown node {node:?}; known nodes: {known}")]
    UnknownNode { node: String, known: String },

    /// A fault target (host, link or AZ) that the region does not have.
    #[error("unknown {kind} {name:?}; known: {known}")]
    UnknownTarget {
        kind: &'static str,
        name: String,
        known: String,
    },

    /// A VM name that is not in the run.
    #[error("unknown VM {name:?} in prefix {prefix:?}")]
    UnknownVm { prefix: String, name: String },

    /// Input (a VM spec, a process name, ...) that is not acceptable.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidInput {
        what: &'static str,
        value: String,
        reason: String,
    },

    /// An `ip` (or other helper) command exited non-zero.
    #[error("`{command}` failed ({status}){line}: {stderr}")]
    Command {
        command: String,
        status: String,
        line: String,
        stderr: String,
    },

    /// A helper command could not be started at all.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },

    /// A file system operation on the run's state failed.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The state file exists but cannot be read back.
    #[error("state file {path} is corrupt: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// Entering a network namespace failed.
    #[error("cannot enter network namespace {netns:?}: {source}")]
    Netns {
        netns: String,
        #[source]
        source: std::io::Error,
    },

    /// Output of `ip -j` that could not be understood.
    #[error("cannot parse output of `{command}`: {reason}")]
    Parse { command: String, reason: String },

    /// A VM's lease file that cannot be parsed.
    #[error("lease file {path} is malformed: {reason}")]
    Lease { path: PathBuf, reason: String },

    /// A DHCP VM has no lease in time, or its client is not running; `tail`
    /// is the end of the client's log.
    #[error("VM {vm:?}: {reason}; last lines of the udhcpc log {log}:\n{tail}")]
    Dhcp {
        vm: String,
        reason: String,
        log: PathBuf,
        tail: String,
    },
}

impl HarnessError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        HarnessError::Io {
            what,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(
        what: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        HarnessError::InvalidInput {
            what,
            value: value.into(),
            reason: reason.into(),
        }
    }
}
