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
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context as _;
use dataplane_common::HostInfo;
use http_body_util::BodyExt as _;

use strato_dataplane::{
    tables::{Diff, Tables},
    Attach, Dataplane,
};
use strato_proto::{
    client::{self, Endpoint},
    config::{Entry, Update, UpdateKind},
    naming::parse_mac,
    report::{
        DropReport, HostReport, IfCounters, InterfaceReport, PortReport, PortState, Role,
        StatusReport,
    },
    time::now_ms,
};

use crate::{dhcp, vpc};

/// Every how many passes the agent lists every interface (others check only
/// the ones it knows).
const FULL_SCAN_EVERY: u64 = 5;
/// Seconds between sweeps of the connection table.
const CT_GC_EVERY_S: u64 = 5;

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
    /// Size of the connection tracking table (flows); `None`: the default
    /// (`dataplane_common::maps::CT_MAX_DEFAULT`).
    pub ct_max: Option<u32>,
    /// Availability zone of this host (reported; the controller picks the
    /// gateway hosts of a VM's zone for its internet traffic).
    pub az: String,
    /// Gateway hosts: the interface towards the internet (external network).
    pub external: Option<String>,
    /// Where the agent writes what it observes for operators: the load
    /// balancer access log and metrics (`lblog`). `None`: nothing written.
    pub state_dir: Option<PathBuf>,
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
    /// Something other than remote ports changed (or taps did): the next
    /// reconcile rebuilds every table; otherwise only the remote ports in
    /// `dirty_remotes` are recomputed.
    full_needed: bool,
    dirty_remotes: std::collections::BTreeSet<String>,
    dirty_ports: std::collections::BTreeSet<String>,
    /// Who provides each endpoint (from the last full build, kept current).
    providers: vpc::Providers,
    ports: BTreeMap<String, PortReport>,
    /// What the pinned VPC maps hold (read once at start: adopted).
    have: Tables,
    /// Counter slot of every interface that has one (ports, uplink).
    slots: BTreeMap<u32, u32>,
    /// What `HOST[0]` holds.
    host_info: HostInfo,
    /// DHCP leases by tap ifindex, read by the DHCP server thread.
    leases: Arc<std::sync::RwLock<std::collections::HashMap<u32, dhcp::Lease>>>,
    /// The uplink's next hop, and when its neighbour entry was last checked.
    neighbour_checked: Option<std::time::Instant>,
    started_at_ms: u64,
    /// The uplink's IPv4 address, refreshed on every full reconcile (a
    /// netlink dump is too costly to repeat on every update).
    underlay_ip: Option<String>,
    /// The port states the controller holds (`None`: send a full report).
    reported: Option<BTreeMap<String, PortReport>>,
    last_full: Option<std::time::Instant>,
    /// Counters read off the agent's loop (see `run`).
    counters: Arc<std::sync::Mutex<Option<strato_dataplane::Counters>>>,
    /// Reports go out through one task, in order, off the loop.
    outbox: Option<tokio::sync::mpsc::UnboundedSender<Outgoing>>,
    /// Set by the sender when the controller must get a full report.
    need_full: Arc<std::sync::atomic::AtomicBool>,
    /// Security group policies written to the maps.
    policies: crate::security_groups::Policies,
    /// Groups or remote-group members changed since the last plan.
    policies_dirty: bool,
    /// The policies must be planned in full (not only `member_adds`).
    policies_full: bool,
    /// Ports that joined remote groups since the last sync: (group, port,
    /// addresses).
    member_adds: Vec<(String, String, Vec<String>)>,
    /// Entries of a previous agent's policies were swept (once, after the
    /// first complete build).
    policies_swept: bool,
    /// When the connection table was last swept of expired entries.
    ct_gc_at: Option<std::time::Instant>,
    /// Live entries at the last sweep, and entries the sweeps removed.
    ct_live: u64,
    ct_swept: u64,
    /// Load balancer numbering, tables and drains (see `lbmaps`).
    lb: crate::lb::LbState,
    /// Health checks of the load balancer members on this host.
    prober: Option<crate::lb::probe::Prober>,
    /// Connections followed for the access log.
    access_log: Option<crate::lb::access_log::AccessLog>,
}

/// A report queued for the controller.
enum Outgoing {
    Full(Box<HostReport>),
    Status(StatusReport),
    /// Health of the members this host checks.
    LbHealth(strato_proto::lb::HealthReport),
    /// Load balancer counters of this host.
    LbStats(strato_proto::lb::StatsReport),
}

/// Interfaces of this process's network namespace: (ifindex, name).
pub fn interfaces() -> anyhow::Result<Vec<(u32, String)>> {
    let list = nix::net::if_::if_nameindex().context("listing interfaces (if_nameindex)")?;
    Ok(list
        .iter()
        .map(|i| (i.index(), i.name().to_string_lossy().into_owned()))
        .collect())
}

/// One SIOCGIF* ioctl for `iface` on a throwaway socket: the filled
/// `ifreq` (a netlink dump would list every interface; sysfs shows the mount
/// namespace's interfaces, and an agent only enters a network namespace).
fn ifreq(iface: &str, request: libc::c_ulong) -> Option<libc::ifreq> {
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
    // SAFETY: the SIOCGIF* requests read ifr_name and write ifr_ifru of the
    // ifreq we own, on a socket we own; the name is NUL-terminated (zeroed,
    // shorter than IFNAMSIZ).
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request, &mut req) };
    (rc == 0).then_some(req)
}

/// The first IPv4 address of `iface` (SIOCGIFADDR).
fn ipv4_of(iface: &str) -> Option<Ipv4Addr> {
    let req = ifreq(iface, libc::SIOCGIFADDR)?;
    // SAFETY: on success the kernel stored an AF_INET sockaddr in ifru_addr.
    let sin: libc::sockaddr_in = unsafe { std::mem::transmute_copy(&req.ifr_ifru.ifru_addr) };
    Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
}

/// The host's own stack must not talk to VMs through their taps: no IPv6
/// (router solicitations, MLD reports) on a port's host end.
fn quiet_tap(tap: &str) {
    let path = format!("/proc/sys/net/ipv6/conf/{tap}/disable_ipv6");
    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() != "1") {
        let _ = std::fs::write(&path, "1");
    }
}

/// Lease time handed to VMs (Neutron's default).
const LEASE_SECS: u32 = 86_400;

/// The DHCP lease of every written port whose subnet has DHCP enabled.
fn leases(
    desired: &BTreeMap<String, Entry>,
    have: &Tables,
) -> std::collections::HashMap<u32, dhcp::Lease> {
    let by_mac: BTreeMap<[u8; 6], u32> = have.ports.iter().map(|(i, p)| (p.mac, *i)).collect();
    let mut out = std::collections::HashMap::new();
    for e in desired.values() {
        let Entry::Port(p) = e else { continue };
        let Some(ifindex) = parse_mac(&p.mac).and_then(|m| by_mac.get(&m).copied()) else {
            continue;
        };
        if let Some(l) = lease_for(desired, p) {
            out.insert(ifindex, l);
        }
    }
    out
}

/// The DHCP lease of one port, if its subnet has DHCP enabled.
fn lease_for(
    desired: &BTreeMap<String, Entry>,
    p: &strato_proto::config::PortEntry,
) -> Option<dhcp::Lease> {
    let Some(Entry::Network(n)) = desired.get(&format!("network/{}", p.network_id)) else {
        return None;
    };
    let mac = parse_mac(&p.mac)?;
    let (sid, ip) = p.ips.first()?;
    let s = n.subnets.iter().find(|s| &s.id == sid)?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let cidr: ipnetwork::Ipv4Network = s.cidr.parse().ok()?;
    if !s.enable_dhcp {
        return None;
    }
    let gateway = s.gateway_ip.as_deref().and_then(|g| g.parse().ok());
    let server_mac = s
        .gateway_mac
        .as_deref()
        .and_then(parse_mac)
        .unwrap_or([0xfa, 0x16, 0x3e, 0xff, 0xff, 0xfe]);
    Some(dhcp::Lease {
        client_mac: mac,
        ip,
        prefix_len: cidr.prefix(),
        gateway,
        server_ip: gateway.unwrap_or_else(|| cidr.nth(1).unwrap_or(cidr.ip())),
        server_mac,
        dns: s
            .dns_nameservers
            .iter()
            .filter_map(|d| d.parse().ok())
            .collect(),
        routes: s
            .host_routes
            .iter()
            .filter_map(|r| Some((r.destination.parse().ok()?, r.nexthop.parse().ok()?)))
            .collect(),
        mtu: n.mtu as u16,
        lease_secs: LEASE_SECS,
        domain_name: None,
    })
}

/// The gateways of `iface`'s routes (the default route's first), from
/// /proc/net/route.
fn gateways_of(iface: &str) -> Vec<Ipv4Addr> {
    let Ok(text) = std::fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    let mut out: Vec<(bool, Ipv4Addr)> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 3 || f[0] != iface {
                return None;
            }
            let gw = u32::from_str_radix(f[2], 16).ok()?;
            // The file prints the raw (network order) word as a host integer.
            (gw != 0).then(|| (f[1] != "00000000", Ipv4Addr::from(gw.to_ne_bytes())))
        })
        .collect();
    out.sort();
    out.dedup();
    out.into_iter().map(|(_, g)| g).collect()
}

/// bpf_fib_lookup answers only for interfaces with IPv4 forwarding on (even
/// for an output lookup): the uplink (encapsulation) and a gateway's
/// external interface need it.
fn enable_forwarding(iface: &str) {
    let fwd = format!("/proc/sys/net/ipv4/conf/{iface}/forwarding");
    if std::fs::read_to_string(&fwd)
        .map(|v| v.trim() != "1")
        .unwrap_or(false)
    {
        match std::fs::write(&fwd, "1") {
            Ok(()) => {
                tracing::info!(iface, "IPv4 forwarding enabled (for bpf_fib_lookup)")
            }
            Err(e) => {
                tracing::warn!(iface, error = %e, "cannot enable forwarding; lookups from XDP will fail")
            }
        }
    }
}

/// The MAC address of `iface` (SIOCGIFHWADDR).
fn mac_of(iface: &str) -> Option<[u8; 6]> {
    let req = ifreq(iface, libc::SIOCGIFHWADDR)?;
    // SAFETY: on success the kernel stored the hardware address in ifru_hwaddr.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *m = *b as u8;
    }
    Some(mac)
}

/// Whether the kernel holds a usable MAC for `ip` on `iface` (/proc/net/arp).
fn neighbour_resolved(iface: &str, ip: Ipv4Addr) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/net/arp") else {
        return false;
    };
    let ip = ip.to_string();
    text.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 6 && f[0] == ip && f[5] == iface && f[2] != "0x0"
    })
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

impl Agent {
    pub fn start(cfg: AgentConfig) -> anyhow::Result<Agent> {
        check_bpffs(&cfg.pin_root)?;
        let pin_dir = cfg.pin_dir();
        let mut dp =
            Dataplane::load_with(Some(&pin_dir), cfg.ct_max).context("loading the dataplane")?;
        dp.preload(&[Attach::Uplink, Attach::PortTc])
            .context("loading the dataplane programs")?;
        // Policies of a previous agent stay in force until ours replace
        // them; ours are numbered above theirs.
        let (max_policy, max_class) = dp
            .policy_sweep(&|_| true, &|_| true)
            .context("reading the adopted policies")?;
        let mut policies = crate::security_groups::Policies::default();
        policies.start_after(max_policy, max_class);
        dp.resync_port_index()
            .context("rewriting the dense port index")?;
        let have = dp.tables().context("reading the adopted tables")?;
        let host_info = dp.host().context("reading the adopted host record")?;
        let mut slots: BTreeMap<u32, u32> = have.ports.iter().map(|(i, p)| (*i, p.slot)).collect();
        if host_info.uplink_ifindex != 0 {
            slots.insert(host_info.uplink_ifindex, host_info.uplink_slot);
        }
        if host_info.ext_ifindex != 0 {
            slots.insert(host_info.ext_ifindex, host_info.ext_slot);
        }
        tracing::info!(host = %cfg.host, pin_dir = %pin_dir.display(), adopted_ports = have.ports.len(), adopted_endpoints = have.endpoints.len(), "dataplane loaded (pinned maps adopted if present)");
        let mut agent = Agent {
            cfg,
            dp,
            attached: BTreeMap::new(),
            desired: BTreeMap::new(),
            revision: Arc::new(AtomicU64::new(0)),
            have_snapshot: false,
            full_needed: true,
            dirty_remotes: std::collections::BTreeSet::new(),
            dirty_ports: std::collections::BTreeSet::new(),
            providers: vpc::Providers::default(),
            ports: BTreeMap::new(),
            have,
            slots,
            host_info,
            neighbour_checked: None,
            leases: Arc::default(),
            started_at_ms: now_ms(),
            underlay_ip: None,
            reported: None,
            last_full: None,
            counters: Arc::new(std::sync::Mutex::new(None)),
            outbox: None,
            need_full: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            policies,
            policies_dirty: true,
            policies_full: true,
            member_adds: Vec::new(),
            policies_swept: false,
            ct_gc_at: None,
            ct_live: 0,
            ct_swept: 0,
            lb: crate::lb::LbState::default(),
            prober: None,
            access_log: None,
        };
        if let Some(dir) = &agent.cfg.state_dir {
            match std::fs::create_dir_all(dir) {
                Ok(()) => agent.access_log = Some(crate::lb::access_log::AccessLog::new(dir)),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "no state directory; no access log or metrics files")
                }
            }
        }
        // The load balancer's numbering is this agent's: what a previous
        // one left is cleared (a connection's next packet hashes to the
        // same member again: the tables depend only on the members).
        if let Err(e) = agent.dp.lb_clear() {
            tracing::warn!(error = %e, "cannot clear the load balancer maps");
        }
        agent.forget_vanished_pins()?;
        // Taps created from now on start without IPv6 (turning it off on a
        // live interface waits for an RCU grace period, ~10 ms, on the
        // path from binding to ACTIVE); quiet_tap covers older ones.
        let default = "/proc/sys/net/ipv6/conf/default/disable_ipv6";
        if std::fs::read_to_string(default).is_ok_and(|v| v.trim() != "1") {
            if let Err(e) = std::fs::write(default, "1") {
                tracing::warn!(error = %e, "cannot make new interfaces start without IPv6");
            }
        }
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
        } else if self.cfg.external.as_deref() == Some(name) {
            Some(Role::External)
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
                self.full_needed = true;
                self.policies_dirty = true;
                self.policies_full = true;
                self.member_adds.clear();
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
                let deleted: std::collections::HashSet<&String> = u.deletes.iter().collect();
                let keys = u
                    .deletes
                    .iter()
                    .map(|k| (k.clone(), None))
                    .chain(u.upserts.iter().map(|e| (e.key(), Some(e))));
                for (k, upsert) in keys {
                    if k.starts_with("remote/") {
                        self.dirty_remotes.insert(k);
                    } else if k.starts_with("port/") {
                        self.dirty_ports.insert(k);
                    } else if k.starts_with("sg/") || k.starts_with("sgmember/") {
                        self.policies_dirty = true;
                        // A new member entry is an addition the policies
                        // take in place; anything else is planned in full.
                        match upsert {
                            Some(Entry::SgMember(m))
                                if !self.desired.contains_key(&k) && !deleted.contains(&k) =>
                            {
                                self.member_adds.push((
                                    m.group_id.clone(),
                                    m.port_id.clone(),
                                    m.ips.clone(),
                                ))
                            }
                            _ => self.policies_full = true,
                        }
                    } else {
                        self.full_needed = true;
                    }
                }
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
            // A tap appeared (or an attach is retried): its port changes.
            if let Some(k) = self.port_key_of_tap(&tap) {
                self.dirty_ports.insert(k);
            }
            quiet_tap(&tap);
            let error = match self.dp.attach(Attach::PortTc, &tap) {
                Ok(()) => {
                    tracing::info!(iface = %tap, ifindex, program = Attach::PortTc.program(), "attached");
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
        if !self.tables_dirty() {
            return Ok(());
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
                .chain(self.cfg.external.iter())
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
            let which = match role {
                Role::Uplink => Attach::Uplink,
                Role::External => Attach::External,
                Role::Port => Attach::PortTc,
            };
            match (role == Role::Port)
                .then(|| self.port_key_of_tap(name))
                .flatten()
            {
                Some(k) => {
                    self.dirty_ports.insert(k);
                }
                None if role != Role::Port => self.full_needed = true,
                // An unconfigured tap (denied by default): no table changes.
                None => {}
            }
            if role == Role::Port {
                quiet_tap(name);
            }
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
            self.full_needed = true;
        }
        self.reconcile_host();
        self.warm_neighbour();
        // Taps of configured ports that appeared since are found by
        // realise; the tables are rebuilt only when something changed.
        self.realise()
    }

    /// A counter slot for `ifindex` (new ones start from zero).
    fn slot_for(&mut self, ifindex: u32) -> u32 {
        if let Some(s) = self.slots.get(&ifindex) {
            return *s;
        }
        let used: std::collections::BTreeSet<u32> = self.slots.values().copied().collect();
        let slot = (1..dataplane_common::maps::IF_STATS_MAX)
            .find(|s| !used.contains(s))
            .unwrap_or(0);
        if slot != 0 {
            if let Err(e) = self.dp.reset_slot(slot) {
                tracing::warn!(slot, error = %e, "cannot reset a counter slot");
            }
        }
        self.slots.insert(ifindex, slot);
        slot
    }

    /// Writes `HOST[0]` when the uplink (ifindex, address) changed.
    fn reconcile_host(&mut self) {
        let Some((name, ifindex)) = self
            .attached
            .iter()
            .find(|(_, a)| a.role == Role::Uplink && a.error.is_none())
            .map(|(n, a)| (n.clone(), a.ifindex))
        else {
            return;
        };
        let ip = ipv4_of(&name).map(|i| i.octets()).unwrap_or([0; 4]);
        enable_forwarding(&name);
        let slot = self.slot_for(ifindex);
        let mut want = HostInfo {
            underlay_ip: ip,
            uplink_ifindex: ifindex,
            uplink_slot: slot,
            ..HostInfo::default()
        };
        // A gateway host: its external interface, once attached.
        let ext = self
            .attached
            .iter()
            .find(|(_, a)| a.role == Role::External && a.error.is_none())
            .map(|(n, a)| (n.clone(), a.ifindex));
        if self
            .desired
            .values()
            .any(|e| matches!(e, Entry::LoadBalancer(_)))
        {
            want.flags |= dataplane_common::HOST_F_LB;
        }
        if let Some((ext, ext_ifindex)) = ext {
            enable_forwarding(&ext);
            want.flags |= dataplane_common::HOST_F_GATEWAY;
            want.ext_ifindex = ext_ifindex;
            want.ext_slot = self.slot_for(ext_ifindex);
            want.ext_mac = mac_of(&ext).unwrap_or([0; 6]);
        }
        if want != self.host_info {
            match self.dp.set_host(want) {
                Ok(()) => {
                    tracing::info!(uplink = %name, ifindex, underlay = %Ipv4Addr::from(ip), "host underlay written");
                    self.host_info = want;
                }
                Err(e) => tracing::warn!(error = %e, "cannot write the host record"),
            }
        }
    }

    /// Keeps the uplink's next hop resolved in the kernel's neighbour table,
    /// where the encapsulation path (`bpf_fib_lookup`) reads it: the host
    /// itself sends nothing on the underlay, so nothing else would.
    fn warm_neighbour(&mut self) {
        if self
            .neighbour_checked
            .is_some_and(|t| t.elapsed() < Duration::from_secs(5))
        {
            return;
        }
        self.neighbour_checked = Some(std::time::Instant::now());
        let ifaces = self.cfg.uplinks.iter().chain(self.cfg.external.iter());
        for up in ifaces {
            let Some(gw) = gateways_of(up).into_iter().next() else {
                continue;
            };
            if neighbour_resolved(up, gw) {
                continue;
            }
            // Any datagram makes the kernel resolve the next hop; the discard
            // port of the fabric router (a namespace of this region).
            if let Ok(sock) = std::net::UdpSocket::bind("0.0.0.0:0") {
                let _ = sock.send_to(b"strato", (gw, 9));
                tracing::debug!(uplink = %up, gateway = %gw, "resolving the underlay next hop");
            }
        }
    }

    /// Whether the tables must be reconciled: something changed since.
    fn tables_dirty(&self) -> bool {
        self.full_needed
            || self.policies_dirty
            || !self.dirty_remotes.is_empty()
            || !self.dirty_ports.is_empty()
    }

    /// Policy of every local port (by port id).
    fn port_policies(&self) -> std::collections::HashMap<String, vpc::PortPolicy> {
        self.policies.port_policies(&self.desired)
    }

    /// Builds and writes the policies the ports need (before the ports
    /// refer to them); ports whose policy changed become dirty.
    fn sync_policies(&mut self) {
        if !self.have_snapshot {
            return;
        }
        let check = std::mem::take(&mut self.policies_dirty);
        let full = std::mem::take(&mut self.policies_full);
        let adds = std::mem::take(&mut self.member_adds);
        let planned = std::time::Instant::now();
        // Ports joining remote groups (a VM booting into the default
        // group): written in place, without flattening the policies again;
        // anything else is planned in full.
        let mut fast = Vec::new();
        let in_place = check
            && !full
            && !adds.is_empty()
            && match self.policies.add_members(&adds) {
                Some(ops) => {
                    fast = ops;
                    true
                }
                None => false,
            };
        let mut plan = self.policies.plan(&self.desired, check && !in_place);
        fast.append(&mut plan.ops);
        plan.ops = fast;
        let plan_ms = planned.elapsed().as_millis() as u64;
        if plan.ops.is_empty() && plan_ms >= 10 {
            tracing::debug!(plan_ms, "security policies checked, nothing to write");
        }
        for ops in &plan.ops {
            let started = std::time::Instant::now();
            match self.dp.policy_apply(ops) {
                Ok(()) => {
                    let (rules, _) = self
                        .policies
                        .installed()
                        .find(|(_, p)| p.id == ops.id)
                        .map(|(_, p)| (p.rules, p.id))
                        .unwrap_or_default();
                    tracing::info!(
                        policy = ops.id,
                        rules,
                        writes = ops.len(),
                        addresses_added = ops.addr_upserts.len(),
                        addresses_removed = ops.addr_deletes.len(),
                        classes_added = ops.new_classes.len(),
                        plan_ms,
                        write_ms = started.elapsed().as_millis() as u64,
                        "security policy written"
                    )
                }
                Err(e) => {
                    tracing::warn!(policy = ops.id, error = %format!("{e:#}"), "cannot write a security policy; will rebuild it");
                    self.policies.forget(ops.id);
                    self.policies_dirty = true;
                    self.policies_full = true;
                    self.policies_swept = false;
                }
            }
        }
        for id in plan.moved_ports {
            self.dirty_ports.insert(format!("port/{id}"));
        }
    }

    /// Removes replaced policies (after the ports moved to their successors)
    /// and, once, whatever a previous agent left.
    fn retire_policies(&mut self) {
        for ops in std::mem::take(&mut self.policies.retired) {
            if let Err(e) = self.dp.policy_apply(&ops) {
                tracing::warn!(policy = ops.id, error = %format!("{e:#}"), "cannot remove an unused security policy");
                self.policies_swept = false;
            }
        }
        if !self.policies_swept && self.have_snapshot && !self.full_needed {
            let pol = &self.policies;
            let classes = pol.live_classes();
            match self
                .dp
                .policy_sweep(&|id| pol.is_live(id), &|c| classes.contains(&c))
            {
                Ok(_) => self.policies_swept = true,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot sweep adopted policies")
                }
            }
        }
    }

    /// Writes the load balancers' services, backends and tables.
    fn sync_lb(
        &mut self,
        endpoints: &BTreeMap<dataplane_common::EpKey, dataplane_common::Endpoint>,
    ) {
        let doms = vpc::domains(&self.desired);
        let lbs = self.desired.values().filter_map(|e| match e {
            Entry::LoadBalancer(l) => Some(l),
            _ => None,
        });
        let specs = crate::lb::specs(lbs, &doms, endpoints);
        let ops = self.lb.sync(&specs, strato_dataplane::coarse_now_ns());
        if let Some(p) = &self.prober {
            p.set(self.probe_targets(&doms));
        }
        if ops.is_empty() {
            return;
        }
        match self.dp.lb_apply(&ops) {
            Ok(()) => tracing::info!(
                services = ops.services.len(),
                backends = ops.backends.len(),
                tables = ops.tables.len(),
                "load balancer tables written"
            ),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot write the load balancer tables")
            }
        }
    }

    /// The members on this host whose pool has a health monitor: checked
    /// here, from their subnet's gateway address, through their tap.
    fn probe_targets(&self, doms: &BTreeMap<String, u32>) -> Vec<crate::lb::probe::Target> {
        use crate::lb::probe::{Kind, Target};
        let nets: BTreeMap<&str, &strato_proto::config::NetworkEntry> = self
            .desired
            .values()
            .filter_map(|e| match e {
                Entry::Network(n) => Some((n.id.as_str(), n)),
                _ => None,
            })
            .collect();
        let taps = self.port_taps();
        let mut out = Vec::new();
        for e in self.desired.values() {
            let Entry::LoadBalancer(lb) = e else { continue };
            let Some(&domain) = doms.get(&lb.vip_network_id) else {
                continue;
            };
            for l in &lb.listeners {
                let Some(mon) = &l.monitor else { continue };
                let kind = match mon.kind.as_str() {
                    "PING" => Kind::Ping,
                    "TCP" => Kind::Tcp,
                    "UDP-CONNECT" => Kind::UdpConnect,
                    "HTTP" => Kind::Http {
                        method: mon.http_method.clone(),
                        path: mon.url_path.clone(),
                        expected: crate::lb::probe::parse_expected(&mon.expected_codes)
                            .unwrap_or_else(|| vec![(200, 200)]),
                    },
                    _ => continue,
                };
                for m in &l.members {
                    let addr = m.monitor_address.as_deref().unwrap_or(&m.address);
                    let Ok(ip) = addr.parse::<Ipv4Addr>() else {
                        continue;
                    };
                    // The local port with that address in the VPC.
                    let found = self.desired.values().find_map(|e| match e {
                        Entry::Port(p)
                            if doms.get(&p.network_id) == Some(&domain)
                                && p.ips.iter().any(|(_, a)| a == addr) =>
                        {
                            Some(p)
                        }
                        _ => None,
                    });
                    let Some(p) = found else { continue };
                    // A member whose tap is gone (its VM died) is still
                    // checked: every check fails.
                    let ifindex = taps.get(&p.tap).copied().unwrap_or(0);
                    let Some(mac) = parse_mac(&p.mac) else {
                        continue;
                    };
                    let gw = nets.get(p.network_id.as_str()).and_then(|n| {
                        n.subnets.iter().find(|s| {
                            s.cidr
                                .parse::<ipnetwork::Ipv4Network>()
                                .is_ok_and(|c| c.contains(ip))
                        })
                    });
                    let Some((Some(gw_ip), Some(gw_mac))) = gw.map(|s| {
                        (
                            s.gateway_ip
                                .as_deref()
                                .and_then(|g| g.parse::<Ipv4Addr>().ok()),
                            s.gateway_mac.as_deref().and_then(parse_mac),
                        )
                    }) else {
                        continue;
                    };
                    out.push(Target {
                        member_id: m.id.clone(),
                        ifindex,
                        src_ip: gw_ip.octets(),
                        src_mac: gw_mac,
                        dst_ip: ip.octets(),
                        dst_mac: mac,
                        port: m.monitor_port.unwrap_or(m.protocol_port),
                        kind: kind.clone(),
                        delay: Duration::from_secs(mon.delay.max(1) as u64),
                        timeout: Duration::from_secs(mon.timeout.max(1) as u64),
                        max_retries: mon.max_retries,
                        max_retries_down: mon.max_retries_down,
                    });
                }
            }
        }
        out
    }

    /// Queues this host's load balancer counters: per listener and member,
    /// totals since the agent started, and the connections held now; writes
    /// the metrics file and the access log.
    fn send_lb_stats(&mut self) {
        let services = self.lb.services();
        if services.is_empty() {
            return;
        }
        self.write_lb_files(&services);
        let Some(outbox) = self.outbox.clone() else {
            return;
        };
        let backends = self.lb.backends();
        let (Ok(sstats), Ok(bstats), Ok(flows)) = (
            self.dp.lb_stats(services.keys().copied(), false),
            self.dp.lb_stats(backends.keys().copied(), true),
            self.dp.lb_flows(),
        ) else {
            return;
        };
        // Active: a connection with a packet in the last minute.
        let now = strato_dataplane::coarse_now_ns();
        let mut active_s: BTreeMap<u32, u64> = BTreeMap::new();
        let mut active_b: BTreeMap<u32, u64> = BTreeMap::new();
        for (_, f) in &flows {
            if now.saturating_sub(f.last_seen_ns) < 60_000_000_000 {
                *active_s.entry(f.service).or_default() += 1;
                *active_b.entry(f.backend).or_default() += 1;
            }
        }
        let of =
            |id: String, s: &dataplane_common::LbStats, active: u64| strato_proto::lb::CountersOf {
                id,
                bytes_in: s.bytes_in,
                bytes_out: s.bytes_out,
                active_connections: active,
                total_connections: s.connections,
                request_errors: s.refused,
            };
        let listeners = services
            .iter()
            .filter_map(|(n, l)| {
                let s = sstats.get(n)?;
                Some(of(l.clone(), s, active_s.get(n).copied().unwrap_or(0)))
            })
            .collect();
        // A member may serve several listeners: summed.
        let mut members: BTreeMap<String, strato_proto::lb::CountersOf> = BTreeMap::new();
        for (n, (_, m)) in &backends {
            let Some(s) = bstats.get(n) else { continue };
            let c = of(m.clone(), s, active_b.get(n).copied().unwrap_or(0));
            members
                .entry(m.clone())
                .and_modify(|x| {
                    x.bytes_in += c.bytes_in;
                    x.bytes_out += c.bytes_out;
                    x.active_connections += c.active_connections;
                    x.total_connections += c.total_connections;
                    x.request_errors += c.request_errors;
                })
                .or_insert(c);
        }
        let _ = outbox.send(Outgoing::LbStats(strato_proto::lb::StatsReport {
            listeners,
            members: members.into_values().collect(),
        }));
    }

    /// The access log's new lines and the metrics file.
    fn write_lb_files(&mut self, services: &BTreeMap<u32, String>) {
        let Some(dir) = self.cfg.state_dir.clone() else {
            return;
        };
        let backends = self.lb.backends();
        let (Ok(flows), Ok(revs), Ok(sstats), Ok(bstats)) = (
            self.dp.lb_flows(),
            self.dp.lb_replies(),
            self.dp.lb_stats(services.keys().copied(), false),
            self.dp.lb_stats(backends.keys().copied(), true),
        ) else {
            return;
        };
        let now = strato_dataplane::coarse_now_ns();
        let idle: BTreeMap<u32, u64> = self
            .lb
            .service_idle()
            .into_iter()
            .map(|(n, s)| (n, s as u64 * 1_000_000_000))
            .collect();
        let dp = &self.dp;
        let names = |s: u32, b: u32| {
            (
                services.get(&s).cloned().unwrap_or_default(),
                backends.get(&b).map(|x| x.1.clone()).unwrap_or_default(),
            )
        };
        let closed = |k: &dataplane_common::LbFlowKey, r: &dataplane_common::LbFlowKey| {
            if k.proto != 6 {
                return false;
            }
            let (ck, _) = dataplane_common::CtKey::of_flow(
                k.domain,
                k.client,
                r.remote,
                k.client_port,
                r.remote_port,
                k.proto,
            );
            dp.ct_get(&ck).ok().flatten().is_some_and(|e| {
                e.state == dataplane_common::CT_TCP_TIME_WAIT
                    || e.state == dataplane_common::CT_TCP_CLOSE
            })
        };
        let idle_of = |s: u32| idle.get(&s).copied().unwrap_or(50_000_000_000);
        if let Some(log) = self.access_log.as_mut() {
            if let Err(e) = log.tick(now, &flows, &revs, &names, &closed, &idle_of) {
                tracing::warn!(error = %e, "cannot write the access log");
            }
        }
        let (sg, bg) = crate::lb::access_log::gauges(now, &flows);
        let listeners: Vec<_> = services
            .iter()
            .map(|(n, l)| {
                (
                    l.clone(),
                    sstats.get(n).copied().unwrap_or_default(),
                    sg.get(n).copied().unwrap_or_default(),
                )
            })
            .collect();
        let members: Vec<_> = backends
            .iter()
            .map(|(n, (l, m))| {
                (
                    l.clone(),
                    m.clone(),
                    bstats.get(n).copied().unwrap_or_default(),
                    bg.get(n).copied().unwrap_or_default(),
                )
            })
            .collect();
        let text = crate::lb::access_log::prometheus(&self.cfg.host, &listeners, &members);
        if let Err(e) = crate::lb::access_log::write_metrics(&dir, &text) {
            tracing::warn!(error = %e, "cannot write the metrics file");
        }
    }

    /// Ends drains that are over, and forgets idle balanced connections.
    fn lb_housekeeping(&mut self) {
        let now = strato_dataplane::coarse_now_ns();
        let ops = self.lb.tick(now);
        if !ops.is_empty() {
            if let Err(e) = self.dp.lb_apply(&ops) {
                tracing::warn!(error = %format!("{e:#}"), "cannot release drained members");
            }
        }
        // The programs choose again after a service's idle timeout; the
        // entries go after the longest one allowed (1 day).
        if let Err(e) = self.dp.lb_gc(now, 86_400 * 1_000_000_000) {
            tracing::warn!(error = %format!("{e:#}"), "load balancer sweep failed");
        }
    }

    /// Drops expired connection entries and those of vanished ports (every
    /// few seconds; the programs ignore expired entries anyway).
    fn ct_gc(&mut self) {
        if self
            .ct_gc_at
            .is_some_and(|t| t.elapsed() < Duration::from_secs(CT_GC_EVERY_S))
        {
            return;
        }
        self.ct_gc_at = Some(std::time::Instant::now());
        self.lb_housekeeping();
        // Entries are keyed by routing domain: a domain without local
        // ports left has no flows here any more.
        let domains: std::collections::HashSet<u32> =
            self.have.ports.values().map(|p| p.domain).collect();
        match self.dp.ct_gc(strato_dataplane::coarse_now_ns(), &|z| {
            !domains.contains(&z)
        }) {
            Ok((live, removed)) => {
                self.ct_live = live;
                self.ct_swept += removed;
                if removed > 0 {
                    tracing::debug!(live, removed, "connection table swept");
                }
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "connection table sweep failed"),
        }
        if self.cfg.external.is_some() {
            match self.dp.snat_gc(strato_dataplane::coarse_now_ns()) {
                Ok((live, removed)) if removed > 0 => {
                    tracing::debug!(live, removed, "SNAT mappings swept")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "SNAT sweep failed"),
            }
        }
    }

    /// Working port taps: name -> ifindex.
    fn port_taps(&self) -> BTreeMap<String, u32> {
        self.attached
            .iter()
            .filter(|(_, a)| a.role == Role::Port && a.error.is_none())
            .map(|(n, a)| (n.clone(), a.ifindex))
            .collect()
    }

    /// The `port/` key of the configured port whose tap is `tap`.
    fn port_key_of_tap(&self, tap: &str) -> Option<String> {
        self.desired.values().find_map(|e| match e {
            Entry::Port(p) if p.tap == tap => Some(e.key()),
            _ => None,
        })
    }

    /// Only ports changed (remote ones, or local ones without a change to
    /// networks or routers): recompute just their contributions and write
    /// the difference, instead of rebuilding every table (whose cost grows
    /// with the ports in the host's VPCs). Returns false when a full
    /// rebuild is needed after all (an address with several providers is
    /// involved); the full rebuild then recomputes the providers.
    fn reconcile_incremental(&mut self) -> anyhow::Result<bool> {
        use dataplane_common::{Endpoint as Ep, EpKey};
        let doms = vpc::domains(&self.desired);
        let nets: BTreeMap<&str, &strato_proto::config::NetworkEntry> = self
            .desired
            .values()
            .filter_map(|e| match e {
                Entry::Network(n) => Some((n.id.as_str(), n)),
                _ => None,
            })
            .collect();
        let pols = self.port_policies();
        let mut prov = std::mem::take(&mut self.providers);
        let mut ep_ups: BTreeMap<EpKey, Ep> = BTreeMap::new();
        let mut ep_dels = std::collections::BTreeSet::new();
        let mut diff = Diff::default();
        // Endpoints one entry stops providing / starts providing.
        let release =
            |prov: &mut vpc::Providers, e: EpKey, dels: &mut std::collections::BTreeSet<EpKey>| {
                match prov.count.get(&e).copied() {
                    Some(1) => {
                        prov.count.remove(&e);
                        dels.insert(e);
                        true
                    }
                    Some(_) => false,
                    None => true,
                }
            };
        let mut conflict = false;
        for k in &self.dirty_remotes {
            for e in prov.remote.remove(k).unwrap_or_default() {
                conflict |= !release(&mut prov, e, &mut ep_dels);
            }
            let Some(Entry::Remote(r)) = self.desired.get(k) else {
                continue;
            };
            let eps = vpc::remote_endpoints(&doms, &nets, r);
            let mut keys = Vec::with_capacity(eps.len());
            for (ek, ev) in eps {
                conflict |= prov.count.contains_key(&ek);
                prov.count.insert(ek, 1);
                ep_dels.remove(&ek);
                keys.push(ek);
                ep_ups.insert(ek, ev);
            }
            prov.remote.insert(k.clone(), keys);
        }
        let members = vpc::lb_members(&self.desired, &doms);
        let mut new_ports = Vec::new();
        for k in &self.dirty_ports {
            let old = prov.ports.remove(k);
            let new = match self.desired.get(k) {
                Some(Entry::Port(p)) => self
                    .attached
                    .get(&p.tap)
                    .filter(|a| a.error.is_none() && a.role == Role::Port)
                    .map(|a| a.ifindex)
                    .and_then(|ifindex| {
                        let slot = self.slots.get(&ifindex).copied();
                        vpc::port_part(
                            &doms,
                            &nets,
                            p,
                            ifindex,
                            slot.unwrap_or(0),
                            pols.get(&p.id).copied().unwrap_or_default(),
                        )
                        .map(|mut part| {
                            let key = dataplane_common::EpKey {
                                domain: part.info.domain,
                                ip: part.info.ipv4,
                            };
                            if members.contains(&key) {
                                part.info.flags |= dataplane_common::PORT_F_LB_MEMBER;
                            }
                            (part, slot.is_none())
                        })
                    }),
                _ => None,
            };
            if let Some(o) = &old {
                for (e, _) in &o.endpoints {
                    conflict |= !release(&mut prov, *e, &mut ep_dels);
                }
                let keep = |m: &vpc::MacOrLpm| {
                    new.as_ref().is_some_and(|(n, _)| match m {
                        vpc::MacOrLpm::Mac(k) => n.macs.iter().any(|(x, _)| x == k),
                        vpc::MacOrLpm::Lpm(k) => n.allowed.iter().any(|(x, _)| x == k),
                    })
                };
                for (m, _) in &o.macs {
                    if !keep(&vpc::MacOrLpm::Mac(*m)) {
                        diff.macs.1.push(*m);
                    }
                }
                for (a, _) in &o.allowed {
                    if !keep(&vpc::MacOrLpm::Lpm(*a)) {
                        diff.allowed.1.push(*a);
                    }
                }
                if new.as_ref().is_none_or(|(n, _)| n.ifindex != o.ifindex) {
                    diff.ports.1.push(o.ifindex);
                }
            }
            if let Some((n, _)) = &new {
                for (ek, ev) in &n.endpoints {
                    conflict |= prov.count.contains_key(ek);
                    prov.count.insert(*ek, 1);
                    ep_dels.remove(ek);
                    ep_ups.insert(*ek, *ev);
                }
            }
            new_ports.push((k.clone(), new));
        }
        if conflict {
            // Several entries claim one address: let a full build decide.
            return Ok(false);
        }
        // Slots for new ports (the part was built with slot 0 for them).
        let mut parts = Vec::new();
        for (k, new) in new_ports {
            if let Some((mut part, needs_slot)) = new {
                if needs_slot {
                    part.info.slot = self.slot_for(part.ifindex);
                }
                parts.push((k, part));
            }
        }
        for (_, part) in &parts {
            if self.have.ports.get(&part.ifindex) != Some(&part.info) {
                diff.ports.0.push((part.ifindex, part.info));
            }
            for (m, v) in &part.macs {
                if self.have.macs.get(m) != Some(v) {
                    diff.macs.0.push((*m, *v));
                }
            }
            for (a, v) in &part.allowed {
                if self.have.allowed.get(a) != Some(v) {
                    diff.allowed.0.push((*a, *v));
                }
            }
        }
        diff.ports
            .1
            .retain(|i| !parts.iter().any(|(_, p)| p.ifindex == *i));
        diff.endpoints = (
            ep_ups
                .iter()
                .filter(|(k, v)| self.have.endpoints.get(k) != Some(v))
                .map(|(k, v)| (*k, *v))
                .collect(),
            ep_dels.iter().copied().collect(),
        );
        self.dp.apply(&diff).context("writing changed ports")?;
        for k in &ep_dels {
            self.have.endpoints.remove(k);
        }
        self.have.endpoints.extend(ep_ups);
        for i in &diff.ports.1 {
            self.have.ports.remove(i);
            self.slots.remove(i);
            self.leases.write().expect("leases lock poisoned").remove(i);
        }
        for m in &diff.macs.1 {
            self.have.macs.remove(m);
        }
        for a in &diff.allowed.1 {
            self.have.allowed.remove(a);
        }
        for (_, part) in &parts {
            self.have.ports.insert(part.ifindex, part.info);
            self.have.macs.extend(part.macs.iter().copied());
            self.have.allowed.extend(part.allowed.iter().copied());
        }
        // Leases and reports of the changed ports.
        for k in &self.dirty_ports {
            let id = k.trim_start_matches("port/").to_owned();
            match self.desired.get(k) {
                Some(Entry::Port(p)) => {
                    let part = parts.iter().find(|(pk, _)| pk == k).map(|(_, p)| p);
                    if let Some(part) = part {
                        let mut leases = self.leases.write().expect("leases lock poisoned");
                        match lease_for(&self.desired, p) {
                            Some(l) => leases.insert(part.ifindex, l),
                            None => leases.remove(&part.ifindex),
                        };
                    }
                    let (state, ifindex, error) = match self.attached.get(&p.tap) {
                        None => (PortState::Waiting, None, None),
                        Some(a) if a.error.is_some() => {
                            (PortState::Error, Some(a.ifindex), a.error.clone())
                        }
                        Some(a) if part.is_some() => (PortState::Active, Some(a.ifindex), None),
                        Some(a) => (
                            PortState::Error,
                            Some(a.ifindex),
                            Some("port not written (bad MAC or network missing)".to_owned()),
                        ),
                    };
                    self.ports.insert(
                        id.clone(),
                        PortReport {
                            id,
                            tap: p.tap.clone(),
                            ifindex,
                            state,
                            error,
                        },
                    );
                }
                _ => {
                    self.ports.remove(&id);
                }
            }
        }
        for (k, part) in parts {
            prov.ports.insert(k, part);
        }
        self.providers = prov;
        if !diff.is_empty() {
            tracing::debug!(
                operations = diff.len(),
                remotes = self.dirty_remotes.len(),
                ports = self.dirty_ports.len(),
                "changed ports written"
            );
        }
        self.dirty_remotes.clear();
        self.dirty_ports.clear();
        // Debug builds (every test tier) check the incremental result
        // against a full build.
        #[cfg(debug_assertions)]
        {
            let taps = self.port_taps();
            let slots = self.slots.clone();
            let full = vpc::build(
                &self.desired,
                &|t| taps.get(t).copied(),
                &mut |i| slots.get(&i).copied().unwrap_or(0),
                &|id| pols.get(id).copied().unwrap_or_default(),
            );
            let d = full.diff(&self.have);
            assert!(
                d.is_empty(),
                "incremental tables differ from a full build: {d:?}"
            );
        }
        Ok(true)
    }

    fn reconcile_ports(&mut self) -> anyhow::Result<()> {
        self.sync_policies();
        // Only policies changed (a remote-group member, a rule) and no port
        // moved to another policy: the tables are as they were. Rebuilding
        // them here made every host of a large group rebuild all its tables
        // whenever any port of the group was bound.
        let r = if self.have_snapshot
            && !self.full_needed
            && self.dirty_remotes.is_empty()
            && self.dirty_ports.is_empty()
        {
            Ok(())
        } else {
            self.reconcile_tables()
        };
        self.retire_policies();
        r
    }

    fn reconcile_tables(&mut self) -> anyhow::Result<()> {
        if self.have_snapshot
            && !self.full_needed
            && !(self.dirty_remotes.is_empty() && self.dirty_ports.is_empty())
        {
            match self.reconcile_incremental() {
                Ok(true) => {
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "incremental update failed; rebuilding")
                }
            }
        }
        self.reconcile_host();
        self.warm_neighbour();
        let taps = self.port_taps();
        // Slots for every attached tap of a configured port, allocated
        // before the build (which only reads them).
        let wanted_taps: Vec<u32> = self
            .desired
            .values()
            .filter_map(|e| match e {
                Entry::Port(p) => taps.get(&p.tap).copied(),
                _ => None,
            })
            .collect();
        for i in wanted_taps {
            self.slot_for(i);
        }
        let slots = self.slots.clone();
        let pols = self.port_policies();
        let (want, providers) = vpc::build_parts(
            &self.desired,
            &|tap| taps.get(tap).copied(),
            &mut |i| slots.get(&i).copied().unwrap_or(0),
            &|id| pols.get(id).copied().unwrap_or_default(),
        );
        let mut error = None;
        // Until the first snapshot the adopted tables stay as they are.
        if self.have_snapshot {
            // Listeners before their VIPs appear.
            self.sync_lb(&want.endpoints);
            let diff = want.diff(&self.have);
            if !diff.is_empty() {
                match self.dp.apply(&diff) {
                    Ok(()) => {
                        tracing::info!(
                            operations = diff.len(),
                            ports = want.ports.len(),
                            endpoints = want.endpoints.len(),
                            routes = want.routes.len(),
                            "tables written"
                        );
                        self.have = want.clone();
                    }
                    Err(e) => {
                        let msg = format!("{e:#}");
                        tracing::warn!(error = %msg, "cannot write the tables; will retry");
                        error = Some(msg);
                        self.have = self.dp.tables().unwrap_or_default();
                        self.full_needed = true;
                    }
                }
            }
            if error.is_none() {
                self.providers = providers;
                self.full_needed = false;
                self.dirty_remotes.clear();
                self.dirty_ports.clear();
            }
            let uplinks: Vec<u32> = self
                .attached
                .values()
                .filter(|a| a.role != Role::Port)
                .map(|a| a.ifindex)
                .collect();
            self.slots
                .retain(|i, _| want.ports.contains_key(i) || uplinks.contains(i));
        }
        let mut reports = BTreeMap::new();
        for e in self.desired.values() {
            let Entry::Port(p) = e else { continue };
            let (state, ifindex, err) = match self.attached.get(&p.tap) {
                None => (PortState::Waiting, None, None),
                Some(a) if a.error.is_some() => {
                    (PortState::Error, Some(a.ifindex), a.error.clone())
                }
                Some(a) if error.is_some() => (PortState::Error, Some(a.ifindex), error.clone()),
                Some(a) if self.have.ports.contains_key(&a.ifindex) => {
                    (PortState::Active, Some(a.ifindex), None)
                }
                Some(a) => (
                    PortState::Error,
                    Some(a.ifindex),
                    Some("port not written (bad MAC or network missing)".to_owned()),
                ),
            };
            reports.insert(
                p.id.clone(),
                PortReport {
                    id: p.id.clone(),
                    tap: p.tap.clone(),
                    ifindex,
                    state,
                    error: err,
                },
            );
        }
        self.ports = reports;
        let leases = leases(&self.desired, &self.have);
        *self.leases.write().expect("leases lock poisoned") = leases;
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
        for (name, n) in [
            (dataplane_common::maps::PORTS, self.have.ports.len()),
            (dataplane_common::maps::ENDPOINTS, self.have.endpoints.len()),
            (dataplane_common::maps::ROUTES, self.have.routes.len()),
            (dataplane_common::maps::VNIS, self.have.vnis.len()),
            (dataplane_common::maps::MACS, self.have.macs.len()),
            (dataplane_common::maps::ALLOWED, self.have.allowed.len()),
        ] {
            maps.insert(name.to_owned(), n as u64);
        }
        maps.insert(
            dataplane_common::maps::IF_STATS.to_owned(),
            counters.interfaces.len() as u64,
        );
        maps.insert(
            dataplane_common::maps::DROP_STATS.to_owned(),
            counters.drops.len() as u64,
        );
        let (mut addr, mut host, mut port, mut exact) = (0u64, 0u64, 0u64, 0u64);
        for (_, p) in self.policies.installed() {
            let (a, h) = p.addr_entries();
            let (r, e) = p.port_entries();
            addr += a as u64;
            host += h as u64;
            port += r as u64;
            exact += e as u64;
        }
        maps.insert(dataplane_common::maps::POLICY_ADDR.to_owned(), addr);
        maps.insert(dataplane_common::maps::POLICY_HOST.to_owned(), host);
        maps.insert(dataplane_common::maps::POLICY_PORT.to_owned(), port);
        maps.insert(dataplane_common::maps::POLICY_EXACT.to_owned(), exact);
        maps.insert(dataplane_common::maps::CT.to_owned(), self.ct_live);
        let conntrack = self
            .dp
            .ct_stats()
            .ok()
            .map(|s| strato_proto::report::ConntrackReport {
                entries: self.ct_live,
                capacity: self
                    .cfg
                    .ct_max
                    .unwrap_or(dataplane_common::maps::CT_MAX_DEFAULT)
                    as u64,
                inserts: s.inserts,
                insert_failures: s.insert_failures,
                evictions: s
                    .inserts
                    .saturating_sub(s.removed + self.ct_swept + self.ct_live),
                expired: self.ct_swept,
                revoked: s.removed,
                hits: s.hits,
                policy_lookups: s.policy_lookups,
                related: s.related,
                rechecked: s.rechecked,
            });
        Ok(HostReport {
            host: self.cfg.host.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            started_at_ms: self.started_at_ms,
            pin_dir: self.cfg.pin_dir().display().to_string(),
            interfaces,
            drops,
            underlay_ip: self.underlay_ip.clone(),
            az: self.cfg.az.clone(),
            external: self.cfg.external.clone(),
            realised_revision: self.revision.load(Ordering::SeqCst),
            ports: self.ports.values().cloned().collect(),
            maps,
            conntrack,
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
        // Health checks of local load balancer members, reported as they
        // change.
        if let Some(out) = self.outbox.clone() {
            let report = move |states: Vec<(String, bool)>| {
                let members = states
                    .into_iter()
                    .map(|(id, up)| strato_proto::lb::MemberHealth { id, up })
                    .collect();
                let _ = out.send(Outgoing::LbHealth(strato_proto::lb::HealthReport {
                    members,
                }));
            };
            match crate::lb::probe::Prober::spawn(Box::new(report)) {
                Ok(p) => self.prober = Some(p),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start health checks; members are not checked")
                }
            }
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
                    if let Ok(c) = strato_dataplane::Counters::read_pinned(&pin_dir) {
                        *slot.lock().expect("counters lock poisoned") = Some(c);
                    }
                    std::thread::sleep(every.min(Duration::from_secs(1)));
                })
                .context("starting the counters thread")?;
        }
        let dhcp_stop = Arc::new(AtomicBool::new(false));
        {
            // DHCP: the port program passes requests to the stack; one
            // packet socket on every interface answers them.
            let (leases, stop) = (self.leases.clone(), dhcp_stop.clone());
            std::thread::Builder::new()
                .name("dhcp".into())
                .spawn(move || {
                    let server = match dhcp::Server::open() {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot open the DHCP socket; VMs get no DHCP");
                            return;
                        }
                    };
                    let lookup = |ifindex: u32| {
                        leases
                            .read()
                            .expect("leases lock poisoned")
                            .get(&ifindex)
                            .cloned()
                    };
                    if let Err(e) = server.serve(lookup, &stop) {
                        tracing::error!(error = %e, "DHCP server stopped");
                    }
                })
                .context("starting the DHCP thread")?;
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
                    let started = std::time::Instant::now();
                    if let Err(e) = self.realise() {
                        tracing::warn!(error = %format!("{e:#}"), "reconcile failed");
                    }
                    let realised_us = started.elapsed().as_micros() as u64;
                    self.send_report(true);
                    tracing::debug!(
                        revision = self.revision.load(Ordering::SeqCst),
                        realised_us,
                        total_us = started.elapsed().as_micros() as u64,
                        "update realised and reported"
                    );
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
                    self.ct_gc();
                    self.send_report(false);
                    self.send_lb_stats();
                }
            }
        }
        dhcp_stop.store(true, Ordering::SeqCst);
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
            // Observations: one lost is replaced by the next.
            Outgoing::LbHealth(h) => {
                if let Err(e) =
                    client::put_json(&ep, &format!("/internal/v1/hosts/{host}/lb-health"), &h).await
                {
                    tracing::debug!(error = %e, "health report not delivered");
                }
                continue;
            }
            Outgoing::LbStats(s) => {
                if let Err(e) =
                    client::put_json(&ep, &format!("/internal/v1/hosts/{host}/lb-stats"), &s).await
                {
                    tracing::debug!(error = %e, "load balancer counters not delivered");
                }
                continue;
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
