//! The host agent: owns one host's dataplane and realises the configuration
//! the controller compiled for it.
//!
//! - Loads the eBPF object with its maps pinned under
//!   `/sys/fs/bpf/strato/<host>/`, attaches the uplink program to the
//!   host's underlay NIC(s) and the port program to every tap device, all
//!   through pinned bpf links: when the agent exits, forwarding goes on;
//!   when it starts again it adopts maps and links and swaps in its program
//!   atomically.
//! - Watches its configuration (`/internal/v1/hosts/<host>/watch`): a
//!   snapshot, then deltas; resumes from the last applied revision after a
//!   disconnect; keeps the last configuration (and forwarding) while the
//!   controller is away.
//! - Writes each bound port into the `PORTS` map once its tap exists, removes
//!   what the configuration no longer has (only after a snapshot, so a
//!   restart without a controller disturbs nothing), and reports ports,
//!   interfaces, counters and the realised revision.
//!
//! The agent never decides policy; it realises what it is told.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context as _;
use dataplane_common::{PortInfo, PORT_F_ADMIN_UP, PORT_F_SECURITY};
use http_body_util::BodyExt as _;

use crate::{
    client::{self, Endpoint},
    compile::{Entry, PortEntry, Update, UpdateKind},
    dataplane::{Attach, Dataplane},
    report::{
        now_ms, DropReport, HostReport, IfCounters, InterfaceReport, PortReport, PortState, Role,
        StatusReport,
    },
};

/// Every how many passes the agent lists every interface (others check only
/// the ones it knows).
const FULL_SCAN_EVERY: u64 = 5;

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub host: String,
    pub controller: Option<Endpoint>,
    pub uplinks: Vec<String>,
    /// Interfaces whose name starts with one of these are VM ports.
    pub port_prefixes: Vec<String>,
    pub pin_root: PathBuf,
    pub interval: Duration,
    /// How often a full report (every interface's counters, every port)
    /// goes out; in between, status reports carry only what changed.
    pub full_report_interval: Duration,
}

impl AgentConfig {
    pub fn pin_dir(&self) -> PathBuf {
        self.pin_root.join(&self.host)
    }
}

struct Attached {
    ifindex: u32,
    role: Role,
    error: Option<String>,
}

pub struct Agent {
    cfg: AgentConfig,
    dp: Dataplane,
    attached: BTreeMap<String, Attached>,
    /// The configuration: entries by key, and its revision.
    desired: BTreeMap<String, Entry>,
    revision: Arc<AtomicU64>,
    /// A snapshot arrived since start (until then nothing is removed).
    have_snapshot: bool,
    /// Port or network entries changed since the ports table was reconciled.
    ports_dirty: bool,
    ports: BTreeMap<String, PortReport>,
    /// What the pinned `PORTS` map holds (read once at start: adopted).
    written: BTreeMap<u32, PortInfo>,
    started_at_ms: u64,
    /// The uplink's IPv4 address, refreshed on every full reconcile (a
    /// netlink dump is too costly to repeat on every update).
    underlay_ip: Option<String>,
    /// The port states the controller holds (`None`: send a full report).
    reported: Option<BTreeMap<String, PortReport>>,
    last_full: Option<std::time::Instant>,
    /// Counters read off the agent's loop (see `run`).
    counters: Arc<std::sync::Mutex<Option<crate::dataplane::Counters>>>,
    /// Reports go out through one task, in order, off the loop.
    outbox: Option<tokio::sync::mpsc::UnboundedSender<Outgoing>>,
    /// Set by the sender when the controller must get a full report.
    need_full: Arc<std::sync::atomic::AtomicBool>,
}

/// A report queued for the controller.
enum Outgoing {
    Full(Box<HostReport>),
    Status(StatusReport),
}

/// Interfaces of this process's network namespace: (ifindex, name).
pub fn interfaces() -> anyhow::Result<Vec<(u32, String)>> {
    let list = nix::net::if_::if_nameindex().context("listing interfaces (if_nameindex)")?;
    Ok(list
        .iter()
        .map(|i| (i.index(), i.name().to_string_lossy().into_owned()))
        .collect())
}

/// The first IPv4 address of `iface`.
/// (One SIOCGIFADDR ioctl: a netlink dump would list every interface.)
fn ipv4_of(iface: &str) -> Option<Ipv4Addr> {
    use std::os::fd::AsRawFd as _;
    let name = iface.as_bytes();
    if name.len() >= libc::IFNAMSIZ {
        return None;
    }
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFADDR reads ifr_name and writes ifr_addr of the ifreq we
    // own, on a socket we own; the name is NUL-terminated (zeroed, shorter
    // than IFNAMSIZ).
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFADDR, &mut req) };
    if rc != 0 {
        return None;
    }
    // SAFETY: on success the kernel stored an AF_INET sockaddr in ifru_addr.
    let sin: libc::sockaddr_in = unsafe { std::mem::transmute_copy(&req.ifr_ifru.ifru_addr) };
    Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
}

fn check_bpffs(root: &Path) -> anyhow::Result<()> {
    let bpffs = Path::new("/sys/fs/bpf");
    let st = nix::sys::statfs::statfs(bpffs).with_context(|| {
        format!(
            "{} is not accessible: mount bpffs there (mount -t bpf bpf /sys/fs/bpf)",
            bpffs.display()
        )
    })?;
    if st.filesystem_type() != nix::sys::statfs::BPF_FS_MAGIC {
        anyhow::bail!(
            "{} is not a bpf filesystem: mount -t bpf bpf /sys/fs/bpf",
            bpffs.display()
        );
    }
    if !root.starts_with(bpffs) {
        tracing::warn!(pin_root = %root.display(), "pin root is outside /sys/fs/bpf");
    }
    Ok(())
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .filter_map(|p| u8::from_str_radix(p, 16).ok())
        .collect();
    v.try_into().ok()
}

/// The `PORTS` value of a port entry (with the subnet's prefix length from
/// its network entry).
fn port_info(p: &PortEntry, desired: &BTreeMap<String, Entry>) -> PortInfo {
    let mut flags = 0;
    if p.port_security_enabled {
        flags |= PORT_F_SECURITY;
    }
    if p.admin_state_up {
        flags |= PORT_F_ADMIN_UP;
    }
    let (ipv4, prefix_len) = p
        .ips
        .first()
        .and_then(|(subnet, ip)| {
            let ip: Ipv4Addr = ip.parse().ok()?;
            let prefix = match desired.get(&format!("network/{}", p.network_id)) {
                Some(Entry::Network(n)) => n
                    .subnets
                    .iter()
                    .find(|s| &s.id == subnet)
                    .and_then(|s| s.cidr.split('/').nth(1)?.parse().ok()),
                _ => None,
            };
            Some((ip.octets(), prefix.unwrap_or(32)))
        })
        .unwrap_or(([0; 4], 0));
    PortInfo {
        vni: p.vni,
        flags,
        mac: parse_mac(&p.mac).unwrap_or_default(),
        mtu: p.mtu as u16,
        ipv4,
        prefix_len,
        _pad: [0; 3],
    }
}

impl Agent {
    pub fn start(cfg: AgentConfig) -> anyhow::Result<Agent> {
        check_bpffs(&cfg.pin_root)?;
        let pin_dir = cfg.pin_dir();
        let mut dp = Dataplane::load(Some(&pin_dir)).context("loading the dataplane")?;
        let written = dp.ports().context("reading the adopted ports table")?;
        tracing::info!(host = %cfg.host, pin_dir = %pin_dir.display(), adopted_ports = written.len(), "dataplane loaded (pinned maps adopted if present)");
        let mut agent = Agent {
            cfg,
            dp,
            attached: BTreeMap::new(),
            desired: BTreeMap::new(),
            revision: Arc::new(AtomicU64::new(0)),
            have_snapshot: false,
            ports_dirty: true,
            ports: BTreeMap::new(),
            written,
            started_at_ms: now_ms(),
            underlay_ip: None,
            reported: None,
            last_full: None,
            counters: Arc::new(std::sync::Mutex::new(None)),
            outbox: None,
            need_full: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        agent.forget_vanished_pins()?;
        Ok(agent)
    }

    /// Removes link pins of interfaces that no longer exist (the port was
    /// deleted while no agent ran).
    fn forget_vanished_pins(&mut self) -> anyhow::Result<()> {
        let links = self.cfg.pin_dir().join("links");
        let present: Vec<String> = interfaces()?.into_iter().map(|(_, n)| n).collect();
        if let Ok(rd) = std::fs::read_dir(&links) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !present.contains(&name) {
                    tracing::info!(iface = %name, "forgetting link pin of a vanished interface");
                    let _ = self.dp.detach(&name);
                }
            }
        }
        Ok(())
    }

    fn role_of(&self, name: &str) -> Option<Role> {
        if self.cfg.uplinks.iter().any(|u| u == name) {
            Some(Role::Uplink)
        } else if self
            .cfg
            .port_prefixes
            .iter()
            .any(|p| name.starts_with(p.as_str()))
        {
            Some(Role::Port)
        } else {
            None
        }
    }

    /// Applies an update from the controller. Returns false if it does not
    /// follow from what this agent has (the watch must restart from 0).
    pub fn apply(&mut self, u: Update) -> bool {
        let current = self.revision.load(Ordering::SeqCst);
        match u.kind {
            UpdateKind::Snapshot => {
                self.desired = u.upserts.into_iter().map(|e| (e.key(), e)).collect();
                self.have_snapshot = true;
                self.ports_dirty = true;
            }
            UpdateKind::Delta => {
                if u.from != current || !self.have_snapshot {
                    tracing::warn!(
                        from = u.from,
                        have = current,
                        "delta does not follow the applied revision; resyncing"
                    );
                    return false;
                }
                // Only port and network entries shape the ports table;
                // remote entries (other hosts' ports) do not, yet.
                let shapes = |k: &str| k.starts_with("port/") || k.starts_with("network/");
                self.ports_dirty |= u.deletes.iter().any(|k| shapes(k))
                    || u.upserts.iter().any(|e| shapes(&e.key()));
                for k in &u.deletes {
                    self.desired.remove(k);
                }
                for e in u.upserts {
                    self.desired.insert(e.key(), e);
                }
            }
        }
        self.revision.store(u.revision, Ordering::SeqCst);
        tracing::debug!(
            revision = u.revision,
            entries = self.desired.len(),
            "configuration applied"
        );
        true
    }

    /// After an update: resolve just the taps of configured ports that are
    /// not attached yet (one ioctl each, no interface dump), then write and
    /// remove ports. Cost: proportional to the host's ports, not to every
    /// interface's details.
    pub fn realise(&mut self) -> anyhow::Result<()> {
        if !self.ports_dirty {
            return Ok(());
        }
        let missing: Vec<String> = self
            .desired
            .values()
            .filter_map(|e| {
                if let Entry::Port(p) = e {
                    Some(p.tap.clone())
                } else {
                    None
                }
            })
            .filter(|t| self.attached.get(t).is_none_or(|a| a.error.is_some()))
            .collect();
        for tap in missing {
            let Ok(ifindex) = nix::net::if_::if_nametoindex(tap.as_str()) else {
                continue;
            };
            let error = match self.dp.attach(Attach::Port, &tap) {
                Ok(()) => {
                    tracing::info!(iface = %tap, ifindex, program = Attach::Port.program(), "attached");
                    None
                }
                Err(e) => Some(format!("{e:#}")),
            };
            self.attached.insert(
                tap,
                Attached {
                    ifindex,
                    role: Role::Port,
                    error,
                },
            );
        }
        self.reconcile_ports()
    }

    /// One full reconcile pass: attach to new interfaces, forget vanished
    /// ones, write and remove ports.
    /// `scan`: every interface of the host (from a full listing); without
    /// it only known interfaces are checked.
    pub fn reconcile(&mut self, scan: Option<Vec<(u32, String)>>) -> anyhow::Result<()> {
        self.underlay_ip = self
            .cfg
            .uplinks
            .iter()
            .find_map(|u| ipv4_of(u))
            .map(|ip| ip.to_string());
        // Without a full scan, check only what we know (uplinks, attached
        // interfaces) with one ioctl each: a netlink dump of thousands of
        // taps costs tens of milliseconds.
        let candidates: Vec<(u32, String)> = if let Some(all) = scan {
            all
        } else {
            self.cfg
                .uplinks
                .iter()
                .chain(self.attached.keys())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .filter_map(|n| {
                    nix::net::if_::if_nametoindex(n.as_str())
                        .ok()
                        .map(|i| (i, n.clone()))
                })
                .collect()
        };
        let present: std::collections::HashSet<&str> =
            candidates.iter().map(|(_, n)| n.as_str()).collect();
        let gone: Vec<String> = self
            .attached
            .keys()
            .filter(|n| !present.contains(n.as_str()))
            .cloned()
            .collect();
        for (ifindex, name) in &candidates {
            let Some(role) = self.role_of(name) else {
                continue;
            };
            if let Some(a) = self.attached.get(name) {
                if a.ifindex == *ifindex && a.error.is_none() {
                    continue;
                }
            }
            let which = if role == Role::Uplink {
                Attach::Uplink
            } else {
                Attach::Port
            };
            let error = match self.dp.attach(which, name) {
                Ok(()) => {
                    tracing::info!(iface = %name, ifindex, program = which.program(), "attached");
                    None
                }
                Err(e) => {
                    let prev = self.attached.get(name).and_then(|a| a.error.clone());
                    let msg = format!("{e:#}");
                    if prev.as_deref() != Some(msg.as_str()) {
                        tracing::warn!(iface = %name, error = %msg, "attach failed; will retry");
                    }
                    Some(msg)
                }
            };
            self.attached.insert(
                name.clone(),
                Attached {
                    ifindex: *ifindex,
                    role,
                    error,
                },
            );
        }
        for name in gone {
            tracing::info!(iface = %name, "interface gone; detaching");
            self.attached.remove(&name);
            let _ = self.dp.detach(&name);
        }
        // Taps of configured ports that appeared since (a periodic pass
        // always looks).
        self.ports_dirty = true;
        self.realise()
    }

    fn reconcile_ports(&mut self) -> anyhow::Result<()> {
        self.ports_dirty = false;
        let mut wanted: BTreeMap<u32, PortInfo> = BTreeMap::new();
        let mut reports = BTreeMap::new();
        for e in self.desired.values() {
            let Entry::Port(p) = e else { continue };
            let attached = self.attached.get(&p.tap);
            let (state, ifindex, error) = match attached {
                None => (PortState::Waiting, None, None),
                Some(a) if a.error.is_some() => {
                    (PortState::Error, Some(a.ifindex), a.error.clone())
                }
                Some(a) => {
                    let info = port_info(p, &self.desired);
                    wanted.insert(a.ifindex, info);
                    if self.written.get(&a.ifindex) != Some(&info) {
                        match self.dp.set_port(a.ifindex, info) {
                            Ok(()) => {
                                self.written.insert(a.ifindex, info);
                                tracing::info!(port = %p.id, tap = %p.tap, ifindex = a.ifindex, vni = p.vni, "port written")
                            }
                            Err(e) => {
                                reports.insert(
                                    p.id.clone(),
                                    PortReport {
                                        id: p.id.clone(),
                                        tap: p.tap.clone(),
                                        ifindex: Some(a.ifindex),
                                        state: PortState::Error,
                                        error: Some(format!("{e:#}")),
                                    },
                                );
                                continue;
                            }
                        }
                    }
                    (PortState::Active, Some(a.ifindex), None)
                }
            };
            reports.insert(
                p.id.clone(),
                PortReport {
                    id: p.id.clone(),
                    tap: p.tap.clone(),
                    ifindex,
                    state,
                    error,
                },
            );
        }
        // Entries the configuration no longer has: removed once we know the
        // whole configuration (a snapshot arrived).
        if self.have_snapshot {
            let stale: Vec<u32> = self
                .written
                .keys()
                .filter(|i| !wanted.contains_key(i))
                .copied()
                .collect();
            for ifindex in stale {
                self.dp.remove_port(ifindex).context("removing a port")?;
                self.written.remove(&ifindex);
                tracing::info!(ifindex, "port removed from the ports table");
            }
        }
        self.ports = reports;
        Ok(())
    }

    pub fn report(&mut self) -> anyhow::Result<HostReport> {
        let snapshot = self
            .counters
            .lock()
            .expect("counters lock poisoned")
            .clone();
        let counters = match snapshot {
            Some(c) => c,
            None => self.dp.counters().context("reading counters")?,
        };
        let names: BTreeMap<u32, &str> = self
            .attached
            .iter()
            .map(|(n, a)| (a.ifindex, n.as_str()))
            .collect();
        let interfaces = self
            .attached
            .iter()
            .map(|(name, a)| InterfaceReport {
                name: name.clone(),
                ifindex: a.ifindex,
                role: a.role.clone(),
                error: a.error.clone(),
                counters: counters
                    .interfaces
                    .get(&a.ifindex)
                    .copied()
                    .map(IfCounters::from)
                    .unwrap_or_default(),
            })
            .collect();
        let drops = counters
            .drops
            .iter()
            .filter_map(|((ifindex, reason), s)| {
                names.get(ifindex).map(|n| DropReport::new(n, *reason, *s))
            })
            .collect();
        let mut maps = BTreeMap::new();
        maps.insert(
            dataplane_common::maps::PORTS.to_owned(),
            self.written.len() as u64,
        );
        maps.insert(
            dataplane_common::maps::IF_STATS.to_owned(),
            counters.interfaces.len() as u64,
        );
        maps.insert(
            dataplane_common::maps::DROP_STATS.to_owned(),
            counters.drops.len() as u64,
        );
        Ok(HostReport {
            host: self.cfg.host.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            started_at_ms: self.started_at_ms,
            pin_dir: self.cfg.pin_dir().display().to_string(),
            interfaces,
            drops,
            underlay_ip: self.underlay_ip.clone(),
            realised_revision: self.revision.load(Ordering::SeqCst),
            ports: self.ports.values().cloned().collect(),
            maps,
        })
    }

    /// Queues a report: a full one when due (or when the controller lacks
    /// one), else a status report with the ports whose state changed; with
    /// `only_if_changed`, nothing when nothing changed. Standalone agents
    /// (no controller) report nothing.
    fn send_report(&mut self, only_if_changed: bool) {
        let Some(outbox) = self.outbox.clone() else {
            return;
        };
        if self.need_full.swap(false, Ordering::SeqCst) {
            self.reported = None;
        }
        let full_due = self
            .last_full
            .is_none_or(|t| t.elapsed() >= self.cfg.full_report_interval);
        if let (Some(reported), false) = (&self.reported, full_due) {
            let changed: Vec<PortReport> = self
                .ports
                .iter()
                .filter(|(id, p)| reported.get(*id) != Some(*p))
                .map(|(_, p)| p.clone())
                .collect();
            let removed: Vec<String> = reported
                .keys()
                .filter(|id| !self.ports.contains_key(*id))
                .cloned()
                .collect();
            if only_if_changed && changed.is_empty() && removed.is_empty() {
                return;
            }
            let status = StatusReport {
                host: self.cfg.host.clone(),
                realised_revision: self.revision.load(Ordering::SeqCst),
                changed,
                removed,
            };
            let _ = outbox.send(Outgoing::Status(status));
            self.reported = Some(self.ports.clone());
            return;
        }
        match self.report() {
            Ok(r) => {
                let _ = outbox.send(Outgoing::Full(Box::new(r)));
                self.reported = Some(self.ports.clone());
                self.last_full = Some(std::time::Instant::now());
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot build report"),
        }
    }

    /// Runs until `shutdown` resolves. Programs stay attached afterwards
    /// unless `detach_on_exit`.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
        detach_on_exit: bool,
    ) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<Update>>(64);
        let resync = Arc::new(AtomicU64::new(0));
        if let Some(ep) = self.cfg.controller.clone() {
            let (out_tx, out_rx) = tokio::sync::mpsc::unbounded_channel();
            self.outbox = Some(out_tx);
            tokio::spawn(sender(
                ep,
                self.cfg.host.clone(),
                out_rx,
                self.need_full.clone(),
            ));
        }
        {
            // Counters are read from the pinned maps on their own thread:
            // thousands of per-CPU entries must not delay configuration.
            let (slot, pin_dir, every) = (
                self.counters.clone(),
                self.cfg.pin_dir(),
                self.cfg.full_report_interval,
            );
            std::thread::Builder::new()
                .name("counters".into())
                .spawn(move || loop {
                    if let Ok(c) = crate::dataplane::Counters::read_pinned(&pin_dir) {
                        *slot.lock().expect("counters lock poisoned") = Some(c);
                    }
                    std::thread::sleep(every.min(Duration::from_secs(1)));
                })
                .context("starting the counters thread")?;
        }
        if let Some(ep) = self.cfg.controller.clone() {
            tokio::spawn(watch(
                ep,
                self.cfg.host.clone(),
                self.revision.clone(),
                resync.clone(),
                tx,
            ));
        }
        let mut tick = tokio::time::interval(self.cfg.interval);
        let mut ticks: u64 = 0;
        // Unconfigured taps (which get the port program too, so they are
        // denied by default) and vanished interfaces are found by listing
        // every interface, a netlink dump that is slow with thousands of
        // taps: done on its own thread, every few passes.
        let (scan_tx, mut scan_rx) = tokio::sync::mpsc::channel::<Vec<(u32, String)>>(1);
        {
            let every = self.cfg.interval * FULL_SCAN_EVERY as u32;
            std::thread::Builder::new()
                .name("scanner".into())
                .spawn(move || loop {
                    std::thread::sleep(every);
                    match interfaces() {
                        Ok(all) => {
                            if scan_tx.blocking_send(all).is_err() {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "listing interfaces failed")
                        }
                    }
                })
                .context("starting the scanner thread")?;
        }
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Configuration first: a queued update beats a periodic pass.
                biased;
                _ = &mut shutdown => break,
                Some(u) = rx.recv() => {
                    let Some(u) = u else { continue };
                    let _span = tracing::info_span!("apply", host = %self.cfg.host, revision = u.revision).entered();
                    if !self.apply(u) {
                        resync.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    // Drain what else is queued before touching maps once.
                    while let Ok(Some(more)) = rx.try_recv() {
                        if !self.apply(more) {
                            resync.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                    }
                    drop(_span);
                    if let Err(e) = self.realise() {
                        tracing::warn!(error = %format!("{e:#}"), "reconcile failed");
                    }
                    self.send_report(true);
                }
                Some(all) = scan_rx.recv() => {
                    if let Err(e) = self.reconcile(Some(all)) {
                        tracing::warn!(error = %format!("{e:#}"), "reconcile failed");
                    }
                }
                _ = tick.tick() => {
                    ticks += 1;
                    // The first pass lists every interface itself; later
                    // full listings come from the scanner thread.
                    let scan = if ticks == 1 { Some(interfaces()?) } else { None };
                    if let Err(e) = self.reconcile(scan) {
                        tracing::warn!(error = %format!("{e:#}"), "reconcile failed");
                    }
                    self.send_report(false);
                }
            }
        }
        if detach_on_exit {
            let names: Vec<String> = self.attached.keys().cloned().collect();
            for n in names {
                let _ = self.dp.detach(&n);
            }
            let _ = std::fs::remove_dir_all(self.cfg.pin_dir());
            tracing::info!("detached from every interface and removed pins");
        } else {
            tracing::info!("exiting; programs stay attached through their pinned links");
        }
        Ok(())
    }
}

/// Sends queued reports in order. After a failure (or a 404 for a status
/// report: the controller lost this host) it drops status reports until the
/// agent queues a full one.
async fn sender(
    ep: Endpoint,
    host: String,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Outgoing>,
    need_full: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut ok: Option<bool> = None;
    let mut skipping = false;
    while let Some(msg) = rx.recv().await {
        let r = match msg {
            Outgoing::Status(_) if skipping => continue,
            Outgoing::Status(s) => {
                client::put_json(&ep, &format!("/internal/v1/hosts/{host}/status"), &s).await
            }
            Outgoing::Full(r) => {
                skipping = false;
                client::put_json(&ep, &format!("/internal/v1/hosts/{host}"), &r).await
            }
        };
        match r {
            Ok(()) => {
                if ok != Some(true) {
                    tracing::info!(controller = %ep, "reporting to the controller");
                }
                ok = Some(true);
            }
            Err(e) => {
                let lost_host = matches!(&e, client::ClientError::Status { status, .. } if *status == client::StatusCode::NOT_FOUND);
                if !lost_host && ok != Some(false) {
                    // Keep forwarding with what is loaded; say so once per outage.
                    tracing::warn!(controller = %ep, error = %e, "controller unreachable; forwarding goes on");
                    ok = Some(false);
                }
                skipping = true;
                need_full.store(true, Ordering::SeqCst);
            }
        }
    }
}

/// Follows the host's configuration stream, reconnecting with the last
/// applied revision (or 0 after a failed delta, which yields a snapshot).
async fn watch(
    ep: Endpoint,
    host: String,
    applied: Arc<AtomicU64>,
    resync: Arc<AtomicU64>,
    tx: tokio::sync::mpsc::Sender<Option<Update>>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut seen_resync = 0;
    let mut first = true;
    loop {
        let r = resync.load(Ordering::SeqCst);
        // At start and after a failed delta: ask for a snapshot.
        let since = if first || r != seen_resync {
            0
        } else {
            applied.load(Ordering::SeqCst)
        };
        seen_resync = r;
        first = false;
        let path = format!("/internal/v1/hosts/{host}/watch?since={since}");
        match follow(&ep, &path, &tx, &resync, r).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), "watch interrupted");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

/// Reads one watch response until it ends, fails, goes silent for 3
/// heartbeats, or a resync is requested.
async fn follow(
    ep: &Endpoint,
    path: &str,
    tx: &tokio::sync::mpsc::Sender<Option<Update>>,
    resync: &AtomicU64,
    resync_at_start: u64,
) -> anyhow::Result<()> {
    let resp = client::stream(ep, path).await?;
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(16), body.frame())
            .await
            .context("watch silent for 16 s")?;
        let Some(frame) = frame else { return Ok(()) };
        let frame = frame.context("reading the watch stream")?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let v: serde_json::Value =
                serde_json::from_slice(&line).context("watch line is not JSON")?;
            if v.get("kind").and_then(|k| k.as_str()) == Some("heartbeat") {
                continue;
            }
            let u: Update = serde_json::from_value(v).context("watch line is not an update")?;
            if tx.send(Some(u)).await.is_err() {
                return Ok(());
            }
        }
        if resync.load(Ordering::SeqCst) != resync_at_start {
            anyhow::bail!("resync requested");
        }
    }
}
