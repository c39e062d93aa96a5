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
//! - **holds its listening sockets**: made here in the namespace (one per
//!   listener port) and handed to the process (inherited descriptors, named
//!   in `STRATO_L7_LISTEN_FDS=<port>:<fd>,...`). A process that dies
//!   leaves them open: connections that arrive meanwhile wait in their
//!   backlog for the restarted process instead of being refused, so only
//!   what was in flight on the dead process is lost;
//! - **writes** its configuration to `<state dir>/l7/<id>/l7.json`
//!   (atomically) and **starts** `strato-l7 --state-dir <that dir>` in the
//!   namespace; a changed configuration is rewritten and the process gets
//!   `SIGHUP`, except when its listener ports changed: then a new process
//!   starts with the new set of sockets and the old one is drained
//!   (`SIGTERM`: it stops accepting, finishes what is in flight), the way
//!   a seamless proxy reload works;
//! - **restarts** a process that exited (at once the first time, then
//!   after 1 s doubling to 30 s while it keeps failing), and reports an
//!   instance down while its process is not serving (no answer on its
//!   control socket), up when it serves again;
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
    os::fd::OwnedFd,
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
    lb::{CountersOf, InstanceLoad, StatsReport},
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

/// Told when instances start or stop serving: (instance id, serving).
pub type HealthSink = Box<dyn Fn(Vec<(String, bool)>) + Send>;

/// The handle the agent keeps.
pub struct Supervisor {
    tx: mpsc::Sender<Vec<L7InstanceEntry>>,
    /// Each running instance's latest stats.
    pub stats: Arc<Mutex<BTreeMap<String, L7Stats>>>,
}

impl Supervisor {
    pub fn spawn(settings: Settings, health: HealthSink) -> std::io::Result<Supervisor> {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(Mutex::new(BTreeMap::new()));
        let out = stats.clone();
        std::thread::Builder::new()
            .name("l7".into())
            .spawn(move || run(settings, rx, out, health))?;
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
    /// The listening sockets, by port.
    listeners: BTreeMap<u16, OwnedFd>,
    proc: Option<Proc>,
    /// When `proc` started.
    started: Instant,
    /// Processes replaced by a newer one, draining.
    retired: Vec<(Proc, Instant)>,
    /// Serving, as last reported.
    up: Option<bool>,
    failures: u32,
    next_start: Instant,
    /// When SIGTERM was sent.
    stopping: Option<Instant>,
}

impl Instance {
    fn ports(e: &L7InstanceEntry) -> std::collections::BTreeSet<u16> {
        e.config.listeners.iter().map(|l| l.protocol_port).collect()
    }
}

fn netns_of(host: &str, id: &str) -> String {
    format!("{host}-l7-{}", &id[..id.len().min(8)])
}

fn run(
    s: Settings,
    rx: mpsc::Receiver<Vec<L7InstanceEntry>>,
    stats: Arc<Mutex<BTreeMap<String, L7Stats>>>,
    health: HealthSink,
) {
    let mut instances: BTreeMap<String, Instance> = BTreeMap::new();
    let mut last_stats = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
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
        // Who serves: stats answer. Read every pass while something is not
        // known up (a start, a restart), else every two seconds.
        let pending = instances
            .values()
            .any(|i| i.stopping.is_none() && i.up != Some(true));
        if pending || last_stats.elapsed() >= Duration::from_secs(2) {
            last_stats = Instant::now();
            let mut now = BTreeMap::new();
            let mut changed = Vec::new();
            for (id, i) in instances.iter_mut().filter(|(_, i)| i.stopping.is_none()) {
                let st = i.proc.as_ref().and_then(|_| read_stats(&i.dir));
                // A process that just started is given two seconds before
                // it counts as not serving.
                let serving = match st {
                    Some(_) => Some(true),
                    None if i.proc.is_some() && i.started.elapsed() < Duration::from_secs(2) => {
                        None
                    }
                    None => Some(false),
                };
                if let Some(up) = serving {
                    if i.up != Some(up) {
                        i.up = Some(up);
                        changed.push((id.clone(), up));
                        tracing::info!(instance = %id, serving = up, "L7 instance health");
                    }
                }
                if let Some(st) = st {
                    now.insert(id.clone(), st);
                }
            }
            *stats.lock().expect("l7 stats lock") = now;
            if !changed.is_empty() {
                health(changed);
            }
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
            Some(e) if !e.draining && i.stopping.is_none() => {
                if plumbing(&e) != plumbing(&i.entry) {
                    i.plumbed = false;
                }
                let ports_changed = Instance::ports(&e) != Instance::ports(&i.entry);
                if e.config != i.entry.config {
                    if let Err(err) = write_config(&i.dir, &e) {
                        tracing::warn!(instance = %id, error = %err, "cannot write an L7 instance's configuration");
                    } else if ports_changed {
                        // New sockets, a new process; the old one drains.
                        if let Some(p) = i.proc.take() {
                            p.signal(Signal::SIGTERM);
                            i.retired.push((p, Instant::now()));
                        }
                        i.next_start = Instant::now();
                        tracing::info!(instance = %id, "L7 instance's listeners changed: replacing its process");
                    } else if let Some(p) = &i.proc {
                        p.signal(Signal::SIGHUP);
                        tracing::info!(instance = %id, "L7 instance reconfigured");
                    }
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
            listeners: BTreeMap::new(),
            proc: None,
            started: Instant::now(),
            retired: Vec::new(),
            up: None,
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
        if let Some(pid) = adopt(&i.dir) {
            // A previous agent's process: take its sockets back (so they
            // outlive it again) and keep it; one that cannot be taken
            // over is replaced and drains.
            let p = Proc::Adopted(pid);
            match take_listeners(pid) {
                Ok(l)
                    if l.keys().copied().collect::<std::collections::BTreeSet<_>>()
                        == Instance::ports(&i.entry) =>
                {
                    i.listeners = l;
                    i.plumbed = true;
                    p.signal(Signal::SIGHUP);
                    i.proc = Some(p);
                    tracing::info!(instance = %id, pid, "L7 instance of a previous agent adopted");
                }
                r => {
                    if let Err(e) = r {
                        tracing::warn!(instance = %id, pid, error = %e, "cannot take over an L7 instance's sockets: replacing it");
                    }
                    p.signal(Signal::SIGTERM);
                    i.retired.push((p, Instant::now()));
                }
            }
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
        // Replaced processes: reaped once they drained, killed after the
        // grace.
        i.retired.retain_mut(|(p, since)| {
            if !p.alive() {
                return false;
            }
            if since.elapsed() >= STOP_GRACE {
                p.signal(Signal::SIGKILL);
            }
            true
        });
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
            for (p, _) in &i.retired {
                p.signal(Signal::SIGKILL);
            }
            i.listeners.clear();
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
            // A process that served a while failed once; one that keeps
            // failing waits longer each time.
            if i.started.elapsed() > Duration::from_secs(60) {
                i.failures = 0;
            }
            i.failures += 1;
            let backoff = if i.failures == 1 {
                Duration::ZERO
            } else {
                (Duration::from_secs(1) * 2u32.saturating_pow(i.failures - 2)).min(MAX_BACKOFF)
            };
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
        if let Err(e) = ensure_listeners(i) {
            tracing::warn!(instance = %id, netns = %i.netns, error = %e, "cannot open an L7 instance's listening sockets");
            i.next_start = Instant::now() + Duration::from_secs(2);
            continue;
        }
        match start(s, i) {
            Ok(c) => {
                tracing::info!(instance = %id, pid = c.id(), netns = %i.netns, "L7 instance started");
                let _ = std::fs::write(i.dir.join(PID_FILE), c.id().to_string());
                i.proc = Some(Proc::Child(c));
                i.started = Instant::now();
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

/// Opens the listening sockets of ports that lack one, in the instance's
/// namespace, and closes those of ports no longer listened on.
fn ensure_listeners(i: &mut Instance) -> std::io::Result<()> {
    let want = Instance::ports(&i.entry);
    i.listeners.retain(|p, _| want.contains(p));
    let missing: Vec<u16> = want
        .into_iter()
        .filter(|p| !i.listeners.contains_key(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let made = crate::sys::in_netns(&i.netns, || {
        missing
            .iter()
            .map(|&p| crate::sys::tcp_listener(p, 4096).map(|fd| (p, fd)))
            .collect::<std::io::Result<Vec<_>>>()
    })??;
    i.listeners.extend(made);
    Ok(())
}

/// The listening sockets of a running instance (as a previous agent gave
/// them: `STRATO_L7_LISTEN_FDS` in its environment), duplicated here.
fn take_listeners(pid: i32) -> std::io::Result<BTreeMap<u16, OwnedFd>> {
    let env = std::fs::read(format!("/proc/{pid}/environ"))?;
    let spec = env
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(format!("{LISTEN_FDS_ENV}=").as_bytes()))
        .ok_or_else(|| std::io::Error::other("no listening sockets in its environment"))?;
    let spec = String::from_utf8_lossy(spec).into_owned();
    let mut out = BTreeMap::new();
    for (port, fd) in parse_listen_fds(&spec).map_err(std::io::Error::other)? {
        out.insert(port, crate::sys::fd_of_process(pid, fd)?);
    }
    Ok(out)
}

/// The environment variable naming the inherited listening sockets:
/// `<port>:<fd>,...`.
pub const LISTEN_FDS_ENV: &str = "STRATO_L7_LISTEN_FDS";

fn parse_listen_fds(s: &str) -> Result<Vec<(u16, i32)>, String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| {
            let (p, f) = x
                .split_once(':')
                .ok_or_else(|| format!("{x:?}: not port:fd"))?;
            Ok((
                p.parse().map_err(|_| format!("{p:?}: not a port"))?,
                f.parse().map_err(|_| format!("{f:?}: not a descriptor"))?,
            ))
        })
        .collect()
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
    use std::os::{fd::AsRawFd, unix::process::CommandExt};
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(i.dir.join("l7.log"))?;
    let fds: Vec<(u16, i32)> = i
        .listeners
        .iter()
        .map(|(p, fd)| (*p, fd.as_raw_fd()))
        .collect();
    let spec: Vec<String> = fds.iter().map(|(p, fd)| format!("{p}:{fd}")).collect();
    let mut cmd = Command::new("ip");
    cmd.arg("netns")
        .arg("exec")
        .arg(&i.netns)
        .arg(&s.binary)
        .arg("--state-dir")
        .arg(&i.dir)
        .env(LISTEN_FDS_ENV, spec.join(","))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let raw: Vec<i32> = fds.iter().map(|(_, fd)| *fd).collect();
    // SAFETY: between fork and exec only async-signal-safe calls (fcntl)
    // on descriptors this process owns.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &raw {
                if libc::fcntl(*fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn()
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

/// Adds the instances' counters to this host's load balancer report: per
/// member of their pools (requests as connections: an instance's member
/// connections are pooled), per listener the requests the instances
/// answered with an error themselves, and each instance's CPU time.
pub fn add_to_report(r: &mut StatsReport, stats: &BTreeMap<String, L7Stats>) {
    let mut members: BTreeMap<&str, CountersOf> = BTreeMap::new();
    for (id, st) in stats {
        r.instances.push(InstanceLoad {
            id: id.clone(),
            cpu_us: st.cpu_us,
        });
        for m in &st.members {
            let c = members.entry(&m.id).or_insert_with(|| CountersOf {
                id: m.id.clone(),
                bytes_in: 0,
                bytes_out: 0,
                active_connections: 0,
                total_connections: 0,
                request_errors: 0,
            });
            c.bytes_in += m.bytes_in;
            c.bytes_out += m.bytes_out;
            c.active_connections += m.active_requests;
            c.total_connections += m.total_requests;
            c.request_errors += m.request_errors;
        }
        for l in &st.listeners {
            match r.listeners.iter_mut().find(|x| x.id == l.id) {
                Some(x) => x.request_errors += l.request_errors,
                None => r.listeners.push(CountersOf {
                    id: l.id.clone(),
                    bytes_in: 0,
                    bytes_out: 0,
                    active_connections: 0,
                    total_connections: 0,
                    request_errors: l.request_errors,
                }),
            }
        }
    }
    r.members.extend(members.into_values());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_counters_join_the_report() {
        use strato_proto::l7::{L7ListenerStats, L7MemberStats};
        let st = |errors: u64, requests: u64| L7Stats {
            listeners: vec![L7ListenerStats {
                id: "l1".into(),
                request_errors: errors,
                ..Default::default()
            }],
            members: vec![L7MemberStats {
                id: "m1".into(),
                pool_id: "p1".into(),
                bytes_in: 10,
                bytes_out: 20,
                active_requests: 1,
                total_requests: requests,
                request_errors: 0,
            }],
            cpu_us: 0,
        };
        let stats = BTreeMap::from([("a1".to_string(), st(2, 5)), ("a2".to_string(), st(1, 7))]);
        let mut r = StatsReport {
            listeners: vec![CountersOf {
                id: "l1".into(),
                bytes_in: 100,
                bytes_out: 200,
                active_connections: 3,
                total_connections: 9,
                request_errors: 0,
            }],
            members: vec![],
            instances: vec![],
        };
        add_to_report(&mut r, &stats);
        assert_eq!(r.instances.len(), 2, "each instance's CPU time");
        assert_eq!(r.listeners.len(), 1);
        assert_eq!(
            (
                r.listeners[0].total_connections,
                r.listeners[0].request_errors
            ),
            (9, 3)
        );
        assert_eq!(r.members.len(), 1);
        let m = &r.members[0];
        assert_eq!(
            (
                m.bytes_in,
                m.bytes_out,
                m.active_connections,
                m.total_connections
            ),
            (20, 40, 2, 12)
        );
    }

    #[test]
    fn namespace_names_start_with_the_host() {
        assert_eq!(
            netns_of("p-az1-c1", "0123456789abcdef"),
            "p-az1-c1-l7-01234567"
        );
        assert_eq!(netns_of("h", "ab"), "h-l7-ab");
    }

    #[test]
    fn listen_fds_parse_and_refuse_garbage() {
        assert_eq!(parse_listen_fds("80:3,443:4"), Ok(vec![(80, 3), (443, 4)]));
        assert_eq!(parse_listen_fds(""), Ok(vec![]));
        // Bad inputs: no colon, a port out of range, a non-number.
        assert!(parse_listen_fds("80").is_err());
        assert!(parse_listen_fds("70000:3").is_err());
        assert!(parse_listen_fds("80:x").is_err());
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
