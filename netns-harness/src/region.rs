//! A running region: `up`, `attach`, `down`, exec, VMs, faults, processes.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use serde::Serialize;

use crate::dhcp::{self, Lease};
use crate::error::HarnessError;
use crate::ip;
use crate::netns;
use crate::plan::{End, Host, Link, LinkKind, Plan};
use crate::procs::{self, ProcId};
pub use crate::state::FailTarget;
use crate::state::{self, Phase, State, STATE_VERSION};
use crate::status::{self, Status};
use crate::topology::Topology;
use crate::vm::{MacAddr, Vm, VmSpec};

/// Parent of every run's state directory `/run/strato/<prefix>/`.
pub const RUN_DIR: &str = "/run/strato";
/// Parent of the agents' pin directories; `down` removes `<prefix>-*` in it.
pub const BPF_DIR: &str = "/sys/fs/bpf/strato";
/// How long `down` waits after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// `ethtool -K eth0` in every VM. VMs keep their TSO/GSO and checksum
/// offloads (virtio VMs have them): the dataplane's port program runs at TC,
/// where the kernel still knows segment sizes and pending checksums. GRO is
/// on: it enables NAPI on the VM end, which a frame that the uplink's XDP
/// program redirects into the tap needs to be delivered.
const VM_OFFLOADS: &[&str] = &["gro", "on"];

/// `ethtool -K eth0` on every host's uplink, like a NIC without tunnel
/// offloads: a VM's TSO/GSO aggregate that the port program encapsulates
/// (as a UDP tunnel GSO packet) is segmented, and its pending checksums are
/// filled in, before it leaves the host. Otherwise the veth would carry the
/// aggregate through the fabric (which no wire does) and the receiving
/// host's XDP program would see one 64 KB frame with its checksums unfilled.
const UPLINK_OFFLOADS: &[&str] = &["gro", "on", "tx", "off", "tso", "off", "gso", "off"];

/// The other segmentation offloads a veth has (on the uplink): `tso off gso
/// off` leaves them on, and UDP tunnel GSO in particular would pass an
/// encapsulated aggregate through unsegmented. A separate `ethtool` run, so
/// an ethtool that does not know a name cannot undo the above.
const UPLINK_SEGMENTATION_OFF: &[&str] = &[
    "tx-udp-segmentation",
    "off",
    "tx-sctp-segmentation",
    "off",
    "tx-gso-list",
    "off",
    "tx-gre-segmentation",
    "off",
    "tx-gre-csum-segmentation",
    "off",
    "tx-ipxip4-segmentation",
    "off",
    "tx-ipxip6-segmentation",
    "off",
    "tx-udp_tnl-segmentation",
    "off",
    "tx-udp_tnl-csum-segmentation",
    "off",
];

/// The interfaces `up` turns GRO on, per namespace (in plan order). A veth
/// delivers a frame that an XDP program redirected out of one end
/// (`ndo_xdp_xmit`) only if the *peer* end has NAPI, i.e. an XDP program of
/// its own or GRO on. The hosts' programs redirect out of `eth0` (towards
/// the fabric) and, on gateways, out of `ext0` (towards the internet), so
/// the peers there get GRO: the `<az>-fab` end of every host uplink and the
/// internet router's end of every gateway's external link. The hosts' own
/// `eth0` gets it too (harmless, and ready for frames redirected towards a
/// host). VM ends get it in [`Region::vm_create`].
fn gro_targets(plan: &Plan) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut add = |end: &End| match out.iter_mut().find(|(ns, _)| *ns == end.netns) {
        Some((_, devs)) => devs.push(end.ifname.clone()),
        None => out.push((end.netns.clone(), vec![end.ifname.clone()])),
    };
    for l in &plan.links {
        match l.kind {
            LinkKind::HostUplink => {
                add(&l.a);
                add(&l.b);
            }
            LinkKind::GatewayExternal => add(&l.a),
            _ => {}
        }
    }
    out
}

/// Runs `ethtool -K DEV ARGS...` for each of `runs` inside `netns`. Returns
/// the runs that failed (or could not start) with the reason; callers only
/// warn about those. Fails only if the namespace cannot be entered.
fn ethtool(netns: &str, runs: &[(&str, &[&str])]) -> Result<Vec<(String, String)>, HarnessError> {
    netns::run_in(netns, || {
        let mut failed = Vec::new();
        for (dev, args) in runs {
            let line = format!("ethtool -K {dev} {}", args.join(" "));
            let out = ip::helper("ethtool")
                .args(["-K", dev])
                .args(*args)
                .stdin(Stdio::null())
                .output();
            match out {
                Ok(o) if o.status.success() => {}
                Ok(o) => failed.push((
                    line,
                    format!(
                        "{}: {}",
                        o.status,
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                )),
                Err(e) => failed.push((line, e.to_string())),
            }
        }
        failed
    })
}

/// Checks a run prefix: `[a-z][a-z0-9]{0,7}` (no dash, so `<prefix>-` never
/// matches another run's names).
pub fn validate_prefix(prefix: &str) -> Result<(), HarnessError> {
    let bad = |reason| {
        Err(HarnessError::InvalidPrefix {
            prefix: prefix.to_string(),
            reason,
        })
    };
    let b = prefix.as_bytes();
    if b.is_empty() {
        return bad("it is empty");
    }
    if b.len() > 8 {
        return bad("it is longer than 8 characters");
    }
    if !b[0].is_ascii_lowercase() {
        return bad("it must start with a lowercase letter");
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        return bad("it may contain only lowercase letters and digits");
    }
    Ok(())
}

/// What `down` removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DownReport {
    pub prefix: String,
    /// Pids that were sent SIGTERM (and SIGKILL if they ignored it).
    pub processes_killed: Vec<i32>,
    pub namespaces_deleted: Vec<String>,
    pub pin_dirs_removed: Vec<PathBuf>,
    pub state_dir_removed: bool,
}

impl DownReport {
    /// Whether there was nothing to remove.
    pub fn is_empty(&self) -> bool {
        self.processes_killed.is_empty()
            && self.namespaces_deleted.is_empty()
            && self.pin_dirs_removed.is_empty()
            && !self.state_dir_removed
    }
}

impl fmt::Display for DownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(f, "prefix {}: nothing to remove", self.prefix);
        }
        write!(
            f,
            "prefix {}: killed {} processes, deleted {} namespaces, removed {} pin dirs{}",
            self.prefix,
            self.processes_killed.len(),
            self.namespaces_deleted.len(),
            self.pin_dirs_removed.len(),
            if self.state_dir_removed {
                ", removed the state directory"
            } else {
                ""
            }
        )
    }
}

/// A region that is up: its prefix, topology, plan and state directory
/// `/run/strato/<prefix>/`. Dropping it changes nothing; [`Region::down`]
/// removes the run.
#[derive(Debug)]
pub struct Region {
    prefix: String,
    topology: Topology,
    plan: Plan,
    dir: PathBuf,
    state: Mutex<State>,
}

fn run_dir(prefix: &str) -> PathBuf {
    Path::new(RUN_DIR).join(prefix)
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and has no side effects.
    unsafe { libc::geteuid() == 0 }
}

fn mkdir(path: &Path) -> Result<(), HarnessError> {
    std::fs::create_dir_all(path).map_err(|e| HarnessError::io("cannot create directory", path, e))
}

/// Deletes a named namespace the way `ip netns del` does (lazy unmount of the
/// bind mount, then unlink). The kernel frees it once no process uses it.
fn delete_netns(name: &str) -> Result<(), HarnessError> {
    let p = netns::path(name);
    match nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(HarnessError::io("cannot unmount namespace", &p, e.into())),
    }
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(HarnessError::io("cannot remove namespace", &p, e)),
    }
}

/// Sysctls every namespace gets; routers also forward.
fn sysctls(router: bool) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![
        ("net/ipv4/conf/all/rp_filter", "0"),
        ("net/ipv4/conf/default/rp_filter", "0"),
    ];
    if router {
        v.push(("net/ipv4/ip_forward", "1"));
    }
    v
}

impl Region {
    /// Builds the region of `topology` under `prefix`: every namespace, veth
    /// pair, address, route and sysctl of the [`crate::plan`], and GRO on
    /// the veth ends that frames XDP_REDIRECTed out of a host's `eth0` or
    /// `ext0` arrive on (the fabric's and the internet router's ends; the
    /// hosts' `eth0` too), so that such frames are delivered (an `ethtool`
    /// failure is only a warning). Writes the VMs' udhcpc event script into
    /// the state directory. All or nothing: on any failure it tears down
    /// what it made (via [`Region::down`]) and returns the error. Refuses if
    /// anything of `prefix` exists already (namespaces or state directory).
    pub fn up(topology: &Topology, prefix: &str) -> Result<Region, HarnessError> {
        validate_prefix(prefix)?;
        if !is_root() {
            return Err(HarnessError::NeedsRoot { what: "region up" });
        }
        let existing = netns::list(prefix);
        if !existing.is_empty() {
            return Err(HarnessError::AlreadyUp {
                prefix: prefix.to_string(),
                what: format!("{} namespaces exist, e.g. {}", existing.len(), existing[0]),
            });
        }
        mkdir(Path::new(RUN_DIR))?;
        let dir = run_dir(prefix);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(HarnessError::AlreadyUp {
                    prefix: prefix.to_string(),
                    what: format!("state directory {} exists", dir.display()),
                })
            }
            Err(e) => return Err(HarnessError::io("cannot create state directory", &dir, e)),
        }
        // From here on everything we find under the prefix is ours.
        match Self::build(topology, prefix, dir) {
            Ok(region) => Ok(region),
            Err(e) => {
                tracing::error!(prefix, error = %e, "region up failed, tearing down");
                if let Err(down) = Region::down(prefix) {
                    tracing::error!(prefix, error = %down, "teardown after failed up also failed");
                }
                Err(e)
            }
        }
    }

    fn build(topology: &Topology, prefix: &str, dir: PathBuf) -> Result<Region, HarnessError> {
        let started = Instant::now();
        let plan = Plan::new(topology, prefix);
        let span = tracing::info_span!("up", prefix, region = topology.name());
        let _enter = span.enter();
        mkdir(&dir.join("pids"))?;
        mkdir(&dir.join("logs"))?;
        dhcp::write_script(&dir)?;
        let mut state = State {
            version: STATE_VERSION,
            prefix: prefix.to_string(),
            phase: Phase::Creating,
            created_by_pid: std::process::id(),
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            topology_origin: topology.origin().to_string(),
            topology_source: topology.source().to_string(),
            vms: Vec::new(),
            failures: Vec::new(),
        };
        state.save(&dir)?;

        let lines: Vec<String> = plan
            .nodes
            .iter()
            .map(|n| format!("netns add {}", n.netns))
            .collect();
        ip::batch(None, &lines, false)?;
        tracing::info!(
            namespaces = plan.nodes.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "namespaces created"
        );

        for node in &plan.nodes {
            netns::sysctls(&node.netns, &sysctls(node.router))?;
        }
        for node in &plan.nodes {
            ip::batch(Some(&node.netns), &ip::create_lines(&plan, node), false)?;
        }
        tracing::info!(
            links = plan.links.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "links created"
        );

        for node in &plan.nodes {
            let lines = ip::config_lines(&plan, node);
            tracing::debug!(node = %node.name, netns = %node.netns, commands = lines.len(), "configure");
            ip::batch(Some(&node.netns), &lines, false)?;
        }
        let mut offload_warnings = 0;
        // Ends that behave like a NIC on a wire (complete checksums, no
        // aggregates): the hosts' uplinks, and the internet router's end of
        // each gateway's external link (what arrives at a gateway's ext0
        // from the internet is what a physical NIC would hand XDP).
        let mut uplinks: Vec<(&str, &str)> = plan
            .hosts
            .iter()
            .map(|h| (h.netns.as_str(), h.uplink.as_str()))
            .collect();
        uplinks.extend(
            plan.links
                .iter()
                .filter(|l| l.kind == LinkKind::GatewayExternal)
                .map(|l| (l.a.netns.as_str(), l.a.ifname.as_str())),
        );
        for (ns, devs) in gro_targets(&plan) {
            let mut runs: Vec<(&str, &[&str])> = Vec::new();
            for d in &devs {
                if uplinks.contains(&(ns.as_str(), d.as_str())) {
                    runs.push((d.as_str(), UPLINK_OFFLOADS));
                    runs.push((d.as_str(), UPLINK_SEGMENTATION_OFF));
                } else {
                    runs.push((d.as_str(), &["gro", "on"][..]));
                }
            }
            for (command, reason) in ethtool(&ns, &runs)? {
                offload_warnings += 1;
                tracing::warn!(netns = %ns, %command, %reason, "ethtool failed; frames XDP_REDIRECTed towards this interface may not be delivered");
            }
        }
        tracing::info!(
            warnings = offload_warnings,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "offloads set"
        );
        state.phase = Phase::Up;
        state.save(&dir)?;
        tracing::info!(
            hosts = plan.hosts.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            state = %state::state_path(&dir).display(),
            "region up"
        );
        Ok(Region {
            prefix: prefix.to_string(),
            topology: topology.clone(),
            plan,
            dir,
            state: Mutex::new(state),
        })
    }

    /// Reopens a running region from `/run/strato/<prefix>/state.json`.
    pub fn attach(prefix: &str) -> Result<Region, HarnessError> {
        validate_prefix(prefix)?;
        let dir = run_dir(prefix);
        let path = state::state_path(&dir);
        if !path.exists() {
            return Err(HarnessError::NotUp {
                prefix: prefix.to_string(),
                path,
                reason: "no state file".into(),
            });
        }
        let state = State::load(&dir)?;
        if state.phase != Phase::Up {
            return Err(HarnessError::NotUp {
                prefix: prefix.to_string(),
                path,
                reason: "`up` did not finish (still running or crashed); run down".into(),
            });
        }
        let topology = Topology::parse(&state.topology_source, &state.topology_origin)?;
        let plan = Plan::new(&topology, prefix);
        Ok(Region {
            prefix: prefix.to_string(),
            topology,
            plan,
            dir,
            state: Mutex::new(state),
        })
    }

    /// Removes everything of `prefix`, from what is on the machine (no state
    /// file needed, so it works after a crash or SIGKILL): processes recorded
    /// by [`Region::spawn`] (if still the same process) and every process in
    /// a `<prefix>-*` namespace get SIGTERM, then SIGKILL after 3 s; the
    /// namespaces are deleted; `/sys/fs/bpf/strato/<prefix>-*` and
    /// `/run/strato/<prefix>/` are removed. Idempotent.
    pub fn down(prefix: &str) -> Result<DownReport, HarnessError> {
        validate_prefix(prefix)?;
        if !is_root() {
            return Err(HarnessError::NeedsRoot {
                what: "region down",
            });
        }
        let span = tracing::info_span!("down", prefix);
        let _enter = span.enter();
        let started = Instant::now();
        let dir = run_dir(prefix);
        let mut report = DownReport {
            prefix: prefix.to_string(),
            ..DownReport::default()
        };

        let mut recorded = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir.join("pids")) {
            for e in entries.filter_map(|e| e.ok()) {
                if let Some(p) = procs::read_pidfile(&e.path()) {
                    if procs::alive(p) {
                        recorded.push(p);
                    }
                }
            }
        }
        // Repeat until a pass finds nothing: an `ip` that was still running
        // when its `up` was killed may add a namespace after the first pass.
        for round in 0..20 {
            let names = netns::list(prefix);
            let mut victims = std::mem::take(&mut recorded);
            for pids in netns::pids(&names).into_values() {
                victims.extend(pids.into_iter().filter_map(procs::identify));
            }
            if names.is_empty() && victims.is_empty() {
                if round > 0 {
                    break;
                }
            } else {
                tracing::info!(
                    namespaces = names.len(),
                    processes = victims.len(),
                    "removing"
                );
                report
                    .processes_killed
                    .extend(procs::terminate(&victims, TERM_GRACE));
                for n in &names {
                    delete_netns(n)?;
                    report.namespaces_deleted.push(n.clone());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }

        if let Ok(entries) = std::fs::read_dir(BPF_DIR) {
            let start = format!("{prefix}-");
            for e in entries.filter_map(|e| e.ok()) {
                if e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(&start))
                {
                    let p = e.path();
                    let r = if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                    r.map_err(|err| HarnessError::io("cannot remove pin directory", &p, err))?;
                    report.pin_dirs_removed.push(p);
                }
            }
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => report.state_dir_removed = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(HarnessError::io("cannot remove state directory", &dir, e)),
        }
        report.namespaces_deleted.sort();
        report.namespaces_deleted.dedup();
        report.processes_killed.sort_unstable();
        report.processes_killed.dedup();
        tracing::info!(
            processes = report.processes_killed.len(),
            namespaces = report.namespaces_deleted.len(),
            pin_dirs = report.pin_dirs_removed.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "down"
        );
        Ok(report)
    }

    /// The run prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The topology the region was built from.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The address plan (nodes, links, addresses, routes).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The run's state directory, `/run/strato/<prefix>/`.
    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    /// Compute and gateway hosts, in address-plan order.
    pub fn hosts(&self) -> Vec<Host> {
        self.plan.hosts.clone()
    }

    /// A fresh copy of the state (from disk if readable).
    fn current(&self) -> State {
        let mut cached = self.state.lock().expect("state lock not poisoned");
        if let Ok(s) = State::load(&self.dir) {
            *cached = s;
        }
        cached.clone()
    }

    /// Read-modify-write of the state file under the run's lock.
    fn update<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, HarnessError>,
    ) -> Result<T, HarnessError> {
        let _lock = state::lock(&self.dir)?;
        let mut st = State::load(&self.dir)?;
        let out = f(&mut st)?;
        st.save(&self.dir)?;
        *self.state.lock().expect("state lock not poisoned") = st;
        Ok(out)
    }

    /// Namespace of a logical node: a plan node (`az1-c1`, `az1-fab`,
    /// `spine`, `internet`, `inet-client1`, `onprem-gw`, `onprem-h1`) or a
    /// VM (`<name>` or `vm-<name>`).
    pub fn netns(&self, node: &str) -> Result<String, HarnessError> {
        if let Some(n) = self.plan.node(node) {
            return Ok(n.netns.clone());
        }
        let vms = self.vms();
        let vm_name = node
            .strip_prefix("vm-")
            .filter(|n| vms.iter().any(|v| v.name == *n))
            .unwrap_or(node);
        if let Some(vm) = vms.iter().find(|v| v.name == vm_name) {
            return Ok(vm.netns.clone());
        }
        let mut known: Vec<String> = self.plan.nodes.iter().map(|n| n.name.clone()).collect();
        known.extend(vms.iter().map(|v| v.name.clone()));
        Err(HarnessError::UnknownNode {
            node: node.to_string(),
            known: known.join(", "),
        })
    }

    /// `ip netns exec <netns> argv...` as a `Command`, for callers that want
    /// to stream or pass through its I/O.
    pub fn command(&self, node: &str, argv: &[&str]) -> Result<Command, HarnessError> {
        if argv.is_empty() {
            return Err(HarnessError::invalid("command", "", "is empty"));
        }
        let ns = self.netns(node)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns]).args(argv);
        Ok(cmd)
    }

    /// Runs `argv` in `node`'s namespace (via `ip netns exec`) and returns
    /// its output; a non-zero exit is not an error here, check `status`.
    pub fn exec(&self, node: &str, argv: &[&str]) -> Result<Output, HarnessError> {
        let mut cmd = self.command(node, argv)?;
        tracing::debug!(node, argv = ?argv, "exec");
        cmd.stdin(Stdio::null())
            .output()
            .map_err(|source| HarnessError::Spawn {
                command: format!("ip netns exec {node} {}", argv.join(" ")),
                source,
            })
    }

    /// Namespaces, links (ends, up/down), addresses, VMs and injected failures.
    pub fn status(&self) -> Result<Status, HarnessError> {
        let st = self.current();
        let links = self.all_links(&st.vms);
        let mut status = status::collect(&self.prefix, &self.plan, &links, &st.vms, &st.failures);
        status.leases = self.leases(&st.vms);
        Ok(status)
    }

    /// The current leases of the DHCP VMs among `vms` (those that have
    /// one; an unreadable lease file is left out with a warning).
    fn leases(&self, vms: &[Vm]) -> BTreeMap<String, Lease> {
        vms.iter()
            .filter(|v| v.dhcp)
            .filter_map(|v| match Lease::load(&self.vm_lease_path(&v.name)) {
                Ok(l) => Some((v.name.clone(), l?)),
                Err(e) => {
                    tracing::warn!(vm = %v.name, error = %e, "lease file");
                    None
                }
            })
            .collect()
    }

    /// Links of the plan plus one per VM.
    fn all_links(&self, vms: &[Vm]) -> Vec<Link> {
        let mut links = self.plan.links.clone();
        links.extend(vms.iter().map(|vm| self.vm_link(vm)));
        links
    }

    fn vm_link(&self, vm: &Vm) -> Link {
        let host_ns = format!("{}-{}", self.prefix, vm.host);
        Link {
            name: vm.link_name(),
            kind: LinkKind::Vm,
            a: End {
                node: vm.host.clone(),
                netns: host_ns,
                ifname: vm.port.clone(),
                addr: None,
                master: None,
            },
            b: End {
                node: format!("vm-{}", vm.name),
                netns: vm.netns.clone(),
                ifname: "eth0".into(),
                addr: vm.addr,
                master: None,
            },
            mtu: Some(vm.mtu),
        }
    }

    /// Configuration of a VM's two ends (idempotent; `heal` re-applies it).
    fn vm_lines(vm: &Vm) -> (Vec<String>, Vec<String>) {
        let host = vec![
            format!("link set dev {} mtu {}", vm.port, vm.mtu),
            format!("link set dev {} up", vm.port),
        ];
        let mut guest = vec![
            "link set dev lo up".to_string(),
            format!("link set dev eth0 address {}", vm.mac),
            format!("link set dev eth0 mtu {}", vm.mtu),
        ];
        if let Some(a) = vm.addr {
            guest.push(format!("addr replace {a} dev eth0"));
        }
        guest.push("link set dev eth0 up".to_string());
        if let Some(gw) = vm.gateway {
            guest.push(format!("route replace default via {gw}"));
        }
        (host, guest)
    }

    /// Creates a VM: namespace `<prefix>-vm-<name>`, a veth pair whose host
    /// end (in the host's namespace) is named `spec.port` and left up without
    /// an address (the agent owns it), and whose VM end is `eth0` with the
    /// MAC and MTU of the spec, and either the spec's static address and
    /// default route or, by default ([`VmSpec::uses_dhcp`]), a DHCP client:
    /// `busybox udhcpc -f` in the VM's namespace, started like
    /// [`Region::spawn`] as process `vm-<name>-udhcpc` (so `vm delete` and
    /// `down` kill it), retrying every second until a server answers and
    /// renewing its lease for as long as it runs; see [`Region::vm_lease`].
    ///
    /// Offloads of the VM's `eth0`: `ethtool -K eth0 gro on tso off gso off`
    /// and every other segmentation offload off, so each frame the VM sends
    /// is at most its MTU when the dataplane's XDP program on the tap sees
    /// it (XDP has no GSO segment size, and the dataplane enforces the
    /// overlay MTU and encapsulates in XDP), while GRO gives the VM end the
    /// NAPI that frames XDP_REDIRECTed into the tap need. An ethtool
    /// failure is only a warning.
    pub fn vm_create(&self, spec: &VmSpec) -> Result<Vm, HarnessError> {
        spec.validate()?;
        let host = planned_host(&self.plan, &spec.host)?;
        if self.plan.node(&spec.name).is_some() {
            return Err(HarnessError::invalid(
                "VM name",
                &spec.name,
                "is the name of a node of the region",
            ));
        }
        let span = tracing::info_span!("vm_create", prefix = %self.prefix, vm = %spec.name, host = %spec.host, port = %spec.port);
        let _enter = span.enter();
        self.update(|st| {
            if st.vms.iter().any(|v| v.name == spec.name) {
                return Err(HarnessError::invalid(
                    "VM name",
                    &spec.name,
                    "already exists",
                ));
            }
            if let Some(other) = st
                .vms
                .iter()
                .find(|v| v.host == spec.host && v.port == spec.port)
            {
                return Err(HarnessError::invalid(
                    "port name",
                    &spec.port,
                    format!("is already used by VM {:?} on {}", other.name, spec.host),
                ));
            }
            let ns = format!("{}-vm-{}", self.prefix, spec.name);
            if netns::exists(&ns) {
                return Err(HarnessError::invalid(
                    "VM name",
                    &spec.name,
                    format!("namespace {ns} exists already"),
                ));
            }
            let mut vm = Vm {
                name: spec.name.clone(),
                host: spec.host.clone(),
                port: spec.port.clone(),
                netns: ns.clone(),
                mac: spec.mac.unwrap_or(MacAddr([0; 6])),
                addr: spec.addr,
                gateway: spec.gateway,
                mtu: spec.mtu.unwrap_or(1500),
                dhcp: spec.uses_dhcp(),
            };
            match self.vm_build(&mut vm, spec.mac.is_some(), &host.netns) {
                Ok(()) => {
                    tracing::info!(netns = %ns, mac = %vm.mac, addr = ?vm.addr, "vm created");
                    st.vms.push(vm.clone());
                    Ok(vm)
                }
                Err(e) => {
                    let _ = ip::batch(
                        Some(&host.netns),
                        &[format!("link del dev {}", spec.port)],
                        false,
                    );
                    let pids: Vec<ProcId> = netns::pids(std::slice::from_ref(&ns))
                        .into_values()
                        .flatten()
                        .filter_map(procs::identify)
                        .collect();
                    procs::terminate(&pids, TERM_GRACE);
                    let _ = delete_netns(&ns);
                    self.vm_remove_files(&vm);
                    Err(e)
                }
            }
        })
    }

    fn vm_build(&self, vm: &mut Vm, mac_given: bool, host_ns: &str) -> Result<(), HarnessError> {
        ip::batch(None, &[format!("netns add {}", vm.netns)], false)?;
        netns::sysctls(&vm.netns, &sysctls(false))?;
        ip::batch(
            Some(host_ns),
            &[format!(
                "link add {} type veth peer name eth0 netns {}",
                vm.port, vm.netns
            )],
            false,
        )?;
        if !mac_given {
            let v = ip::json(&vm.netns, &["link", "show", "dev", "eth0"])?;
            let mac = v[0]["address"]
                .as_str()
                .ok_or_else(|| HarnessError::Parse {
                    command: format!("ip -j -n {} link show dev eth0", vm.netns),
                    reason: "no address".into(),
                })?;
            vm.mac = mac.parse()?;
        }
        let (host_lines, guest_lines) = Self::vm_lines(vm);
        ip::batch(Some(host_ns), &host_lines, false)?;
        ip::batch(Some(&vm.netns), &guest_lines, false)?;
        for (command, reason) in ethtool(&vm.netns, &[("eth0", VM_OFFLOADS)])? {
            tracing::warn!(
                netns = %vm.netns,
                %command,
                %reason,
                "ethtool failed; XDP_REDIRECT into this VM may not deliver, or the VM may send frames larger than its MTU"
            );
        }
        if vm.dhcp {
            self.vm_start_dhcp(vm)?;
        }
        Ok(())
    }

    /// Starts the VM's DHCP client (see [`Region::vm_create`]).
    fn vm_start_dhcp(&self, vm: &Vm) -> Result<(), HarnessError> {
        let script = dhcp::write_script(&self.dir)?;
        let lease = self.vm_lease_path(&vm.name);
        // A lease of an earlier VM of this name is not this VM's.
        match std::fs::remove_file(&lease) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(HarnessError::io("cannot remove lease file", &lease, e)),
        }
        let mut cmd = Command::new(dhcp::busybox());
        cmd.args(dhcp::udhcpc_args(&script, &vm.name))
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
            )
            .env("STRATO_LEASE_FILE", &lease)
            .stdin(Stdio::null());
        let mut child = self.spawn_tracked(&vm.dhcp_process(), Some(&vm.netns), cmd)?;
        // Reap it when it exits (`vm delete`, `down`), so a long-lived
        // caller collects no zombies; the thread dies with a short-lived one.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok(())
    }

    /// Removes the VM's DHCP pid file and lease file (its log stays until
    /// `down`).
    fn vm_remove_files(&self, vm: &Vm) {
        for p in [
            self.dir
                .join("pids")
                .join(format!("{}.pid", vm.dhcp_process())),
            self.vm_lease_path(&vm.name),
        ] {
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %p.display(), error = %e, "cannot remove");
                }
            }
        }
    }

    /// Where VM `name`'s DHCP client records its lease:
    /// `/run/strato/<prefix>/vm-<name>.lease` (see [`Region::vm_lease`]).
    pub fn vm_lease_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("vm-{name}.lease"))
    }

    /// Log of VM `name`'s DHCP client:
    /// `/run/strato/<prefix>/logs/vm-<name>-udhcpc.log`.
    pub fn vm_dhcp_log(&self, name: &str) -> PathBuf {
        self.dir
            .join("logs")
            .join(format!("{}.log", crate::vm::dhcp_process(name)))
    }

    fn vm(&self, name: &str) -> Result<Vm, HarnessError> {
        self.vms()
            .into_iter()
            .find(|v| v.name == name)
            .ok_or_else(|| HarnessError::UnknownVm {
                prefix: self.prefix.clone(),
                name: name.to_string(),
            })
    }

    /// The current DHCP lease of VM `name`: `None` while it has none (or if
    /// it has a static address). The lease file exists only while a lease is
    /// bound, and is written after the address, MTU and routes of the lease
    /// are set on the VM's `eth0`.
    pub fn vm_lease(&self, name: &str) -> Result<Option<Lease>, HarnessError> {
        let vm = self.vm(name)?;
        if !vm.dhcp {
            return Ok(None);
        }
        Lease::load(&self.vm_lease_path(name))
    }

    /// Waits up to `timeout` for VM `name` to have a DHCP lease (polling
    /// every 50 ms). Fails at once for a VM with a static address or whose
    /// client is not running, and after `timeout` with an error that quotes
    /// the end of the client's log.
    pub fn vm_wait_lease(&self, name: &str, timeout: Duration) -> Result<Lease, HarnessError> {
        let vm = self.vm(name)?;
        if !vm.dhcp {
            return Err(HarnessError::invalid(
                "VM",
                name,
                "has a static address, not DHCP: there is no lease to wait for",
            ));
        }
        let path = self.vm_lease_path(name);
        let pidfile = self
            .dir
            .join("pids")
            .join(format!("{}.pid", vm.dhcp_process()));
        let log = self.vm_dhcp_log(name);
        let fail = |reason: String| HarnessError::Dhcp {
            vm: name.to_string(),
            reason,
            tail: dhcp::tail(&log, 10),
            log: log.clone(),
        };
        let started = Instant::now();
        loop {
            if let Some(lease) = Lease::load(&path)? {
                return Ok(lease);
            }
            if !procs::read_pidfile(&pidfile).is_some_and(procs::alive) {
                return Err(fail("its DHCP client (udhcpc) is not running".into()));
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(fail(format!(
                    "no DHCP lease after {:.1} s: no DHCP server answered on port {} of host {} \
                     (udhcpc sends a discover every {} s)",
                    waited.as_secs_f64(),
                    vm.port,
                    vm.host,
                    dhcp::DISCOVER_INTERVAL_SECS
                )));
            }
            std::thread::sleep((timeout - waited).min(Duration::from_millis(50)));
        }
    }

    /// Deletes a VM: its processes, its port and its namespace.
    pub fn vm_delete(&self, name: &str) -> Result<(), HarnessError> {
        self.update(|st| {
            let i = st.vms.iter().position(|v| v.name == name).ok_or_else(|| {
                HarnessError::UnknownVm {
                    prefix: self.prefix.clone(),
                    name: name.to_string(),
                }
            })?;
            let vm = st.vms[i].clone();
            let pids: Vec<ProcId> = netns::pids(std::slice::from_ref(&vm.netns))
                .into_values()
                .flatten()
                .filter_map(procs::identify)
                .collect();
            procs::terminate(&pids, TERM_GRACE);
            // Delete the port explicitly: namespace teardown is asynchronous
            // and the name must be free for the next VM at once.
            let host_ns = format!("{}-{}", self.prefix, vm.host);
            if let Err(e) = ip::batch(
                Some(&host_ns),
                &[format!("link del dev {}", vm.port)],
                false,
            ) {
                tracing::warn!(vm = name, error = %e, "port already gone");
            }
            delete_netns(&vm.netns)?;
            self.vm_remove_files(&vm);
            st.vms.remove(i);
            st.failures
                .retain(|f| *f != FailTarget::Link(vm.link_name()));
            tracing::info!(prefix = %self.prefix, vm = name, "vm deleted");
            Ok(())
        })
    }

    /// The run's VMs.
    pub fn vms(&self) -> Vec<Vm> {
        self.current().vms
    }

    /// Injects a failure (see [`FailTarget`]) and records it in the state
    /// file, so `status` shows it, until [`Region::heal`].
    pub fn fail(&self, target: &FailTarget) -> Result<(), HarnessError> {
        let span = tracing::info_span!("fail", prefix = %self.prefix, target = %target);
        let _enter = span.enter();
        self.update(|st| {
            let all = self.all_links(&st.vms);
            let mut names: Vec<String> = Vec::new();
            let mut stop_ns: Vec<String> = Vec::new();
            let mut fail_host = |h: &Host, names: &mut Vec<String>| {
                names.extend(
                    all.iter()
                        .filter(|l| l.a.node == h.name || l.b.node == h.name)
                        .map(|l| l.name.clone()),
                );
                stop_ns.push(h.netns.clone());
                stop_ns.extend(
                    st.vms
                        .iter()
                        .filter(|v| v.host == h.name)
                        .map(|v| v.netns.clone()),
                );
            };
            match target {
                FailTarget::Host(name) => {
                    let h = planned_host(&self.plan, name)?;
                    fail_host(h, &mut names);
                }
                FailTarget::Link(name) => {
                    if !all.iter().any(|l| l.name == *name) {
                        return Err(HarnessError::UnknownTarget {
                            kind: "link",
                            name: name.clone(),
                            known: all
                                .iter()
                                .map(|l| l.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                        });
                    }
                    names.push(name.clone());
                }
                FailTarget::Az(name) => {
                    let az = self
                        .topology
                        .azs()
                        .iter()
                        .find(|a| a.name == *name)
                        .ok_or_else(|| HarnessError::UnknownTarget {
                            kind: "AZ",
                            name: name.clone(),
                            known: self
                                .topology
                                .azs()
                                .iter()
                                .map(|a| a.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                        })?;
                    names.push(format!("{}-spine", az.name));
                    for h in self.plan.hosts.iter().filter(|h| h.az == az.name) {
                        fail_host(h, &mut names);
                    }
                }
            }
            let links: Vec<&Link> = all.iter().filter(|l| names.contains(&l.name)).collect();
            for l in &links {
                for end in [&l.a, &l.b] {
                    ip::batch(
                        Some(&end.netns),
                        &[format!("link set dev {} down", end.ifname)],
                        true,
                    )?;
                }
                tracing::info!(link = %l.name, "link down");
            }
            let pids = netns::pids(&stop_ns);
            let mut stopped = 0;
            for p in pids.into_values().flatten().filter_map(procs::identify) {
                if procs::signal(p, Signal::SIGSTOP) {
                    stopped += 1;
                }
            }
            tracing::info!(links = links.len(), stopped, "failure injected");
            if !st.failures.contains(target) {
                st.failures.push(target.clone());
            }
            Ok(())
        })
    }

    /// Undoes every failure: re-applies the configuration of every node and
    /// VM (links up, addresses, routes, which the kernel deleted when the
    /// links went down) and sends SIGCONT to every process in the run's
    /// namespaces.
    pub fn heal(&self) -> Result<(), HarnessError> {
        let span = tracing::info_span!("heal", prefix = %self.prefix);
        let _enter = span.enter();
        self.update(|st| {
            for node in &self.plan.nodes {
                ip::batch(
                    Some(&node.netns),
                    &ip::config_lines(&self.plan, node),
                    false,
                )?;
            }
            for vm in &st.vms {
                let (host, guest) = Self::vm_lines(vm);
                ip::batch(Some(&format!("{}-{}", self.prefix, vm.host)), &host, false)?;
                ip::batch(Some(&vm.netns), &guest, false)?;
            }
            // DHCP VMs: the lease's MTU and routes as the client set them
            // (it renews only at T1, and the link going down deleted them).
            let leases = self.leases(&st.vms);
            for vm in &st.vms {
                let Some(lease) = leases.get(&vm.name) else {
                    continue;
                };
                if let Err(e) = ip::batch(Some(&vm.netns), &lease.config_lines(), false) {
                    tracing::warn!(vm = %vm.name, error = %e, "cannot re-apply the DHCP lease");
                }
            }
            let names = netns::list(&self.prefix);
            let mut resumed = 0;
            for p in netns::pids(&names)
                .into_values()
                .flatten()
                .filter_map(procs::identify)
            {
                if procs::signal(p, Signal::SIGCONT) {
                    resumed += 1;
                }
            }
            let healed: Vec<String> = st.failures.iter().map(ToString::to_string).collect();
            st.failures.clear();
            tracing::info!(healed = ?healed, resumed, "healed");
            Ok(())
        })
    }

    /// Starts `cmd` as process `name` of the run: in the root namespace
    /// (`node` None, e.g. the controller) or in `node`'s network namespace
    /// (entered with `setns(CLONE_NEWNET)` only, so the process still sees
    /// the root's /sys and /sys/fs/bpf). Stdout and stderr go to
    /// `/run/strato/<prefix>/logs/<name>.log` (appended); pid and start time
    /// go to `/run/strato/<prefix>/pids/<name>.pid`, so `down` kills it,
    /// and only it, even after this process is gone.
    pub fn spawn(
        &self,
        name: &str,
        node: Option<&str>,
        cmd: Command,
    ) -> Result<Child, HarnessError> {
        if name.is_empty()
            || name.len() > 64
            || name.starts_with('.')
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(HarnessError::invalid(
                "process name",
                name,
                "must be 1 to 64 characters of [A-Za-z0-9_.-]",
            ));
        }
        let ns = node.map(|n| self.netns(n)).transpose()?;
        self.spawn_tracked(name, ns.as_deref(), cmd)
    }

    /// [`Region::spawn`] with the namespace itself (`None`: the root's) and
    /// a name already checked.
    fn spawn_tracked(
        &self,
        name: &str,
        netns: Option<&str>,
        mut cmd: Command,
    ) -> Result<Child, HarnessError> {
        let pidfile = self.dir.join("pids").join(format!("{name}.pid"));
        if let Some(p) = procs::read_pidfile(&pidfile) {
            if procs::alive(p) {
                return Err(HarnessError::invalid(
                    "process name",
                    name,
                    format!("is already running as pid {}", p.pid),
                ));
            }
        }
        mkdir(&self.dir.join("logs"))?;
        mkdir(&self.dir.join("pids"))?;
        let log_path = self.dir.join("logs").join(format!("{name}.log"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| HarnessError::io("cannot open log file", &log_path, e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| HarnessError::io("cannot open log file", &log_path, e))?;
        cmd.stdout(log).stderr(log2);
        let ns_file: Option<File> = match netns {
            Some(ns) => {
                Some(
                    File::open(netns::path(ns)).map_err(|source| HarnessError::Netns {
                        netns: ns.to_string(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        if let Some(f) = &ns_file {
            let fd = f.as_raw_fd();
            // SAFETY: runs in the forked child before exec; setns(2) is a
            // plain syscall (async-signal-safe) on an fd that stays open in
            // the parent until after spawn() returns (ns_file outlives cmd's
            // spawn below), and the hook allocates nothing.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child = cmd.spawn().map_err(|source| HarnessError::Spawn {
            command: program.clone(),
            source,
        })?;
        drop(ns_file);
        let id = procs::identify(child.id() as i32).unwrap_or(ProcId {
            pid: child.id() as i32,
            starttime: 0,
        });
        procs::write_pidfile(&pidfile, id)?;
        tracing::info!(
            prefix = %self.prefix,
            name,
            netns = netns.unwrap_or("(root)"),
            pid = id.pid,
            program = %program,
            log = %log_path.display(),
            "spawned"
        );
        Ok(child)
    }
}

/// The planned host called `name`, or an error that lists the hosts.
fn planned_host<'a>(plan: &'a Plan, name: &str) -> Result<&'a Host, HarnessError> {
    plan.hosts
        .iter()
        .find(|h| h.name == name)
        .ok_or_else(|| HarnessError::UnknownTarget {
            kind: "host",
            name: name.to_string(),
            known: plan
                .hosts
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        for ok in ["a", "strato", "h1234567", "z9"] {
            validate_prefix(ok).expect(ok);
        }
        for (bad, why) in [
            ("", "empty"),
            ("h12345678", "longer"),
            ("1abc", "start"),
            ("ab-c", "only"),
            ("Abc", "start"),
            ("abC", "only"),
        ] {
            let e = validate_prefix(bad).expect_err(bad);
            assert!(e.to_string().contains(why), "{e}");
        }
    }

    #[test]
    fn gro_on_the_peers_of_redirecting_ends() {
        let plan = Plan::new(&Topology::default_region(), "t");
        let targets = gro_targets(&plan);
        let of = |ns: &str| {
            targets
                .iter()
                .find(|(n, _)| n == ns)
                .map(|(_, d)| d.clone())
                .unwrap_or_default()
        };
        // The fabric end of every host uplink.
        assert_eq!(of("t-az1-fab"), ["c1", "c2", "gw1"]);
        assert_eq!(of("t-az2-fab"), ["c1", "c2", "gw1"]);
        // The internet router's end of every gateway's ext0.
        assert_eq!(of("t-internet"), ["az1-gw1", "az2-gw1"]);
        // Every host's own uplink, and nothing else there.
        for h in &plan.hosts {
            assert_eq!(of(&h.netns), ["eth0"], "{}", h.name);
        }
        assert!(of("t-spine").is_empty() && of("t-inet-client1").is_empty());
        assert_eq!(targets.len(), 2 + 1 + plan.hosts.len());
    }

    #[test]
    fn fail_target_serde_and_display() {
        let t = FailTarget::Link("az1-spine".into());
        assert_eq!(t.to_string(), "link az1-spine");
        let j = serde_json::to_string(&t).expect("ser");
        assert_eq!(j, r#"{"kind":"link","name":"az1-spine"}"#);
        assert_eq!(serde_json::from_str::<FailTarget>(&j).expect("de"), t);
    }
}
