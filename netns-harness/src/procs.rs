//! Processes: pid files that survive a crash of whoever wrote them, and
//! termination that never signals a process it cannot prove is the one that
//! was recorded (pid + /proc start time, so a reused pid is left alone).

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::HarnessError;

/// A process as recorded: pid and start time (clock ticks since boot, field
/// 22 of /proc/<pid>/stat).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcId {
    pub pid: i32,
    pub starttime: u64,
}

/// Fields of /proc/<pid>/stat after the command name: (state, starttime).
fn stat(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); starttime is field 22.
    let state = fields.first()?.chars().next()?;
    let starttime = fields.get(19)?.parse().ok()?;
    Some((state, starttime))
}

/// The process as it is now, if it exists.
pub(crate) fn identify(pid: i32) -> Option<ProcId> {
    stat(pid).map(|(_, starttime)| ProcId { pid, starttime })
}

/// Whether this exact process still runs (a zombie counts as dead).
pub(crate) fn alive(p: ProcId) -> bool {
    matches!(stat(p.pid), Some((state, st)) if st == p.starttime && state != 'Z' && state != 'X')
}

/// Sends `sig` to `p` if it is still that process.
pub(crate) fn signal(p: ProcId, sig: Signal) -> bool {
    if p.pid <= 1 || p.pid == std::process::id() as i32 || !alive(p) {
        return false;
    }
    kill(Pid::from_raw(p.pid), sig).is_ok()
}

/// SIGTERM (plus SIGCONT, in case it was stopped by `fail`), wait up to
/// `grace`, then SIGKILL what is left and wait up to a second for it.
/// Returns the pids that were signalled.
pub(crate) fn terminate(procs: &[ProcId], grace: Duration) -> Vec<i32> {
    let mut signalled = Vec::new();
    for p in procs {
        if signal(*p, Signal::SIGTERM) {
            signal(*p, Signal::SIGCONT);
            signalled.push(p.pid);
        }
    }
    let wait = |limit: Duration| {
        let deadline = Instant::now() + limit;
        while procs.iter().any(|p| alive(*p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait(grace);
    let left: Vec<ProcId> = procs.iter().copied().filter(|p| alive(*p)).collect();
    for p in &left {
        tracing::warn!(pid = p.pid, "process ignored SIGTERM, sending SIGKILL");
        signal(*p, Signal::SIGKILL);
    }
    if !left.is_empty() {
        wait(Duration::from_secs(1));
    }
    signalled
}

/// Writes `<pid> <starttime>` to `path`.
pub(crate) fn write_pidfile(path: &Path, p: ProcId) -> Result<(), HarnessError> {
    std::fs::write(path, format!("{} {}\n", p.pid, p.starttime))
        .map_err(|e| HarnessError::io("cannot write pid file", path, e))
}

/// Reads a pid file written by [`write_pidfile`].
pub(crate) fn read_pidfile(path: &Path) -> Option<ProcId> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut it = text.split_whitespace();
    let pid = it.next()?.parse().ok()?;
    let starttime = it.next()?.parse().ok()?;
    Some(ProcId { pid, starttime })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifies_self_and_rejects_reused_pid() {
        let me = identify(std::process::id() as i32).expect("own stat");
        assert!(alive(me));
        assert!(
            !alive(ProcId {
                pid: me.pid,
                starttime: me.starttime + 1
            }),
            "other start time = other process"
        );
        // Never signals itself.
        assert!(!signal(me, Signal::SIGCONT));
    }

    #[test]
    fn pidfile_roundtrip_and_terminate() {
        let dir = std::env::temp_dir().join(format!("nh-procs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .expect("sleep");
        let p = identify(child.id() as i32).expect("child stat");
        let file = dir.join("x.pid");
        write_pidfile(&file, p).expect("write");
        assert_eq!(read_pidfile(&file), Some(p));
        assert_eq!(terminate(&[p], Duration::from_secs(3)), vec![p.pid]);
        assert!(!alive(p));
        let status = child.wait().expect("reap");
        assert!(!status.success());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
