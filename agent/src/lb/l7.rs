//! L7 instances on this host: each a `strato-l7` process in a network
//! namespace plugged into its port like a VM, supervised here.
//!
//! The supervisor runs on a thread of its own (plumbing a namespace and
//! starting a process take tens of milliseconds, which the agent's
//! configuration pass must not wait for). It is handed the desired
//! instances ([`L7InstanceEntry`]) after every update, and for each:
//! - **plumbs** namespace `<host>-l7-<first 8 of its id>` (the harness
//!   removes `<prefix>-*` namespaces with their processes): a veth pair
//!   whose host end is the port's tap (which the agent attaches the port
//!   program to, as for a VM) and whose other end is `eth0` with the port's
//!   MAC, MTU and address, and a default route through the subnet's
//!   gateway;
//! - **writes** its configuration to `<state dir>/l7/<id>/l7.json`
//!   (atomically) and **starts** `strato-l7 --state-dir <that dir>` in the
//!   namespace; a changed configuration is rewritten and the process gets
//!   `SIGHUP`;
//! - **restarts** a process that exited (after 1 s, doubling to 30 s while
//!   it keeps failing);
//! - **drains** one marked `draining` or no longer desired: `SIGTERM` (the
//!   process stops accepting and finishes what is in flight), then, once it
//!   exited or after [`STOP_GRACE`], `SIGKILL` and the namespace and tap
//!   are removed.
//!
//! A process left by a previous agent (its pid file names a live
//! `strato-l7`) is adopted, not restarted: an agent restart does not cut
//! connections. Every few seconds the supervisor reads each instance's
//! `GET /stats` for the agent's load balancer report.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use strato_proto::{
    config::L7InstanceEntry,
    l7::{L7Stats, CONFIG_FILE, CONTROL_SOCKET},
    naming::tap_name,
};

/// How long a stopping instance may take before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(35);
/// The pid file in an instance's directory.
const PID_FILE: &str = "l7.pid";
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where instances live and what runs them.
#[derive(Clone, Debug)]
pub struct Settings {
    /// This host's name (namespace names start with it).
    pub host: String,
    /// `<state dir>/l7`.
    pub root: PathBuf,
    /// The `strato-l7` executable.
    pub binary: PathBuf,
}

/// The handle the agent keeps.
pub struct Supervisor {
    tx: mpsc::Sender<Vec<L7InstanceEntry>>,
    /// Each running instance's latest stats.
    pub stats: Arc<Mutex<BTreeMap<String, L7Stats>>>,
}

impl Supervisor {
    pub fn spawn(settings: Settings) -> std::io::Result<Supervisor> {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(Mutex::new(BTreeMap::new()));
        let out = stats.clone();
        std::thread::Builder::new()
            .name("l7".into())
            .spawn(move || run(settings, rx, out))?;
        Ok(Supervisor { tx, stats })
    }

    /// The instances this host must run now.
    pub fn set(&self, desired: Vec<L7InstanceEntry>) {
        let _ = self.tx.send(desired);
    }
}

/// The process of an instance.
enum Proc {
    Child(Child),
    /// Left by a previous agent.
    Adopted(i32),
}

impl Proc {
    fn pid(&self) -> i32 {
        match self {
            Proc::Child(c) => c.id() as i32,
            Proc::Adopted(p) => *p,
        }
    }

    /// Whether it still runs (reaping it if it is ours).
    fn alive(&mut self) -> bool {
        match self {
            Proc::Child(c) => matches!(c.try_wait(), Ok(None)),
            Proc::Adopted(p) => is_l7_process(*p),
        }
    }

    fn signal(&self, s: Signal) {
        let _ = kill(Pid::from_raw(self.pid()), s);
    }
}

struct Instance {
    entry: L7InstanceEntry,
    netns: String,
    dir: PathBuf,
    plumbed: bool,
    proc: Option<Proc>,
    failures: u32,
    next_start: Instant,
    /// When SIGTERM was sent.
    stopping: Option<Instant>,
}

fn netns_of(host: &str, id: &str) -> String {
    format!("{host}-l7-{}", &id[..id.len().min(8)])
}

fn run(
    s: Settings,
    rx: mpsc::Receiver<Vec<L7InstanceEntry>>,
    stats: Arc<Mutex<BTreeMap<String, L7Stats>>>,
) {
    let mut instances: BTreeMap<String, Instance> = BTreeMap::new();
    let mut last_stats = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(mut desired) => {
                while let Ok(more) = rx.try_recv() {
                    desired = more;
                }
                reconcile(&s, &mut instances, desired);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        supervise(&s, &mut instances);
        if last_stats.elapsed() >= Duration::from_secs(2) {
            last_stats = Instant::now();
            let now: BTreeMap<String, L7Stats> = instances
                .iter()
                .filter(|(_, i)| i.proc.is_some())
                .filter_map(|(id, i)| read_stats(&i.dir).map(|st| (id.clone(), st)))
                .collect();
            *stats.lock().expect("l7 stats lock") = now;
        }
    }
}

/// Brings the set of instances to `desired`.
fn reconcile(
    s: &Settings,
    instances: &mut BTreeMap<String, Instance>,
    desired: Vec<L7InstanceEntry>,
) {
    let mut wanted: BTreeMap<String, L7InstanceEntry> =
        desired.into_iter().map(|e| (e.id.clone(), e)).collect();
    for (id, i) in instances.iter_mut() {
        match wanted.remove(id) {
            Some(e) if !e.draining => {
                if e.config != i.entry.config {
                    if let Err(err) = write_config(&i.dir, &e) {
                        tracing::warn!(instance = %id, error = %err, "cannot write an L7 instance's configuration");
                    } else if let Some(p) = &i.proc {
                        p.signal(Signal::SIGHUP);
                        tracing::info!(instance = %id, "L7 instance reconfigured");
                    }
                }
                if plumbing(&e) != plumbing(&i.entry) {
                    i.plumbed = false;
                }
                i.entry = e;
            }
            // Draining, or gone: stop it (once).
            _ => {
                if i.stopping.is_none() {
                    i.stopping = Some(Instant::now());
                    if let Some(p) = &i.proc {
                        p.signal(Signal::SIGTERM);
                    }
                    tracing::info!(instance = %id, "L7 instance draining");
                }
            }
        }
    }
    for (id, e) in wanted {
        if e.draining {
            continue;
        }
        let dir = s.root.join(&id);
        let mut i = Instance {
            netns: netns_of(&s.host, &id),
            dir,
            plumbed: false,
            proc: None,
            failures: 0,
            next_start: Instant::now(),
            stopping: None,
            entry: e,
        };
        if let Err(err) =
            std::fs::create_dir_all(&i.dir).and_then(|()| write_config(&i.dir, &i.entry))
        {
            tracing::warn!(instance = %id, error = %err, "cannot prepare an L7 instance's directory");
        }
        i.proc = adopt(&i.dir).map(Proc::Adopted);
        if let Some(p) = &i.proc {
            // A previous agent's process: it may have an older
            // configuration.
            p.signal(Signal::SIGHUP);
            i.plumbed = true;
            tracing::info!(instance = %id, pid = p.pid(), "L7 instance adopted");
        }
        instances.insert(id, i);
    }
}

/// What the namespace's plumbing depends on.
fn plumbing(e: &L7InstanceEntry) -> (&str, &str, &str, u8, Option<&str>, u32) {
    (
        &e.port_id,
        &e.mac,
        &e.address,
        e.prefix_len,
        e.gateway_ip.as_deref(),
        e.mtu,
    )
}

/// Starts, restarts and removes processes.
fn supervise(s: &Settings, instances: &mut BTreeMap<String, Instance>) {
    let mut gone = Vec::new();
    for (id, i) in instances.iter_mut() {
        let alive = i.proc.as_mut().is_some_and(Proc::alive);
        if let Some(since) = i.stopping {
            if alive && since.elapsed() < STOP_GRACE {
                continue;
            }
            if alive {
                tracing::warn!(instance = %id, "L7 instance did not drain in time; killed");
                if let Some(p) = &i.proc {
                    p.signal(Signal::SIGKILL);
                }
            }
            if let Some(Proc::Child(c)) = &mut i.proc {
                let _ = c.wait();
            }
            unplumb(i);
            let _ = std::fs::remove_dir_all(&i.dir);
            tracing::info!(instance = %id, "L7 instance removed");
            gone.push(id.clone());
            continue;
        }
        if alive {
            continue;
        }
        if i.proc.take().is_some() {
            i.failures += 1;
            let backoff =
                (Duration::from_secs(1) * 2u32.saturating_pow(i.failures - 1)).min(MAX_BACKOFF);
            i.next_start = Instant::now() + backoff;
            tracing::warn!(instance = %id, failures = i.failures, backoff_ms = backoff.as_millis() as u64, "L7 instance exited; restarting");
        }
        if Instant::now() < i.next_start {
            continue;
        }
        if !i.plumbed {
            match plumb(i) {
                Ok(()) => i.plumbed = true,
                Err(e) => {
                    tracing::warn!(instance = %id, netns = %i.netns, error = %e, "cannot plumb an L7 instance");
                    i.next_start = Instant::now() + Duration::from_secs(2);
                    continue;
                }
            }
        }
        match start(s, i) {
            Ok(c) => {
                tracing::info!(instance = %id, pid = c.id(), netns = %i.netns, "L7 instance started");
                let _ = std::fs::write(i.dir.join(PID_FILE), c.id().to_string());
                i.proc = Some(Proc::Child(c));
            }
            Err(e) => {
                tracing::warn!(instance = %id, error = %e, "cannot start an L7 instance");
                i.failures += 1;
                i.next_start = Instant::now() + Duration::from_secs(2);
            }
        }
    }
    for id in gone {
        instances.remove(&id);
    }
}

fn write_config(dir: &Path, e: &L7InstanceEntry) -> std::io::Result<()> {
    let tmp = dir.join(format!("{CONFIG_FILE}.tmp"));
    let body = serde_json::to_vec_pretty(&e.config).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, dir.join(CONFIG_FILE))
}

/// Runs `ip` with `args`; an error carries its stderr.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The namespace, the veth pair and the instance's addressing (idempotent:
/// what exists is kept, the rest made).
fn plumb(i: &Instance) -> Result<(), String> {
    let e = &i.entry;
    let ns = i.netns.as_str();
    let tap = tap_name(&e.port_id);
    if !Path::new("/run/netns").join(ns).exists() {
        ip(&["netns", "add", ns])?;
    }
    if crate::sys::ifindex_of(&tap).is_none() {
        ip(&[
            "link", "add", &tap, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])?;
    }
    let mtu = e.mtu.to_string();
    let addr = format!("{}/{}", e.address, e.prefix_len);
    ip(&["link", "set", "dev", &tap, "mtu", &mtu, "up"])?;
    ip(&["-n", ns, "link", "set", "dev", "lo", "up"])?;
    ip(&[
        "-n", ns, "link", "set", "dev", "eth0", "address", &e.mac, "mtu", &mtu,
    ])?;
    ip(&["-n", ns, "addr", "replace", &addr, "dev", "eth0"])?;
    ip(&["-n", ns, "link", "set", "dev", "eth0", "up"])?;
    if let Some(gw) = &e.gateway_ip {
        ip(&["-n", ns, "route", "replace", "default", "via", gw])?;
    }
    // GRO gives the instance's end the NAPI that frames redirected into
    // the tap by XDP need (as the harness does for VMs).
    let _ = Command::new("ip")
        .args(["netns", "exec", ns, "ethtool", "-K", "eth0", "gro", "on"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    Ok(())
}

fn unplumb(i: &Instance) {
    let tap = tap_name(&i.entry.port_id);
    if crate::sys::ifindex_of(&tap).is_some() {
        if let Err(e) = ip(&["link", "del", "dev", &tap]) {
            tracing::warn!(tap = %tap, error = %e, "cannot remove an L7 instance's tap");
        }
    }
    if Path::new("/run/netns").join(&i.netns).exists() {
        if let Err(e) = ip(&["netns", "del", &i.netns]) {
            tracing::warn!(netns = %i.netns, error = %e, "cannot remove an L7 instance's namespace");
        }
    }
}

fn start(s: &Settings, i: &Instance) -> std::io::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(i.dir.join("l7.log"))?;
    Command::new("ip")
        .arg("netns")
        .arg("exec")
        .arg(&i.netns)
        .arg(&s.binary)
        .arg("--state-dir")
        .arg(&i.dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
}

/// A live `strato-l7` whose pid `dir`'s pid file names.
fn adopt(dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(dir.join(PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    is_l7_process(pid).then_some(pid)
}

fn is_l7_process(pid: i32) -> bool {
    // A zombie or another program reusing the pid is not it.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
    stat.contains("(strato-l7)") && state.is_some_and(|c| c != 'Z' && c != 'X')
}

/// `GET /stats` on the instance's control socket.
fn read_stats(dir: &Path) -> Option<L7Stats> {
    let mut s = UnixStream::connect(dir.join(CONTROL_SOCKET)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.set_write_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(b"GET /stats HTTP/1.0\r\nHost: l7\r\n\r\n")
        .ok()?;
    let mut buf = Vec::new();
    s.take(4 << 20).read_to_end(&mut buf).ok()?;
    let at = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    serde_json::from_slice(&buf[at + 4..]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_start_with_the_host() {
        assert_eq!(
            netns_of("p-az1-c1", "0123456789abcdef"),
            "p-az1-c1-l7-01234567"
        );
        assert_eq!(netns_of("h", "ab"), "h-l7-ab");
    }

    #[test]
    fn only_a_live_strato_l7_is_adopted() {
        let dir = std::env::temp_dir().join(format!("strato-l7-adopt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        // No pid file, garbage, and a live process that is not strato-l7
        // (this test).
        assert_eq!(adopt(&dir), None);
        std::fs::write(dir.join(PID_FILE), "not a pid").expect("write");
        assert_eq!(adopt(&dir), None);
        std::fs::write(dir.join(PID_FILE), std::process::id().to_string()).expect("write");
        assert_eq!(adopt(&dir), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
