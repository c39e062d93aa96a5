//! The host agent: owns one host's dataplane and realises the configuration
//! the controller compiled for it.
//!
//! - Loads the eBPF object with its maps pinned under
//!   `/sys/fs/bpf/strato/<host>/`, attaches the uplink program to the
//!   host's underlay NIC(s) and the port program to every tap device, all
//!   through pinned bpf links: when the agent exits, forwarding goes on;
//!   when it starts again it adopts maps and links and swaps in its program
//!   atomically.
//! - Watches its configuration (`/internal/v1/hosts/<host>/watch`, see
//!   [`crate::watch`]): a snapshot, then deltas; resumes from the last
//!   applied revision after a disconnect; keeps the last configuration (and
//!   forwarding) while the controller is away.
//! - Writes each bound port into the `PORTS` map once its tap exists, removes
//!   what the configuration no longer has (only after a snapshot, so a
//!   restart without a controller disturbs nothing), and reports ports,
//!   interfaces, counters and the realised revision.
//!
//! [`Agent`] only orders the work of its parts: the configuration
//! ([`crate::desired`]), the attached interfaces ([`crate::interfaces`]),
//! host networking ([`crate::host`]), the realisers ([`crate::realise`])
//! and the reporter ([`crate::report`]). The agent never decides policy; it
//! realises what it is told.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use strato_dataplane::{Attach, Dataplane};
use strato_proto::{
    config::{Entry, Update},
    report::{HostReport, PortReport, Role},
    time::now_ms,
};

pub use crate::config::AgentConfig;
use crate::{
    desired::{Applied, Desired},
    dhcp, host,
    host::HostNet,
    interfaces::{port_report, role_of, Attached, Interfaces},
    realise::{lb::LbRealiser, security_groups::SgRealiser, vpc::VpcRealiser},
    report::{self, Due, Outgoing, Reporter},
    sys, watch,
};

pub use crate::sys::interfaces;

/// Every how many passes the agent lists every interface (others check only
/// the ones it knows).
const FULL_SCAN_EVERY: u64 = 5;

pub struct Agent {
    cfg: AgentConfig,
    dp: Dataplane,
    /// The configuration: entries by key, and its revision.
    desired: Desired,
    ifaces: Interfaces,
    host: HostNet,
    vpc: VpcRealiser,
    sg: SgRealiser,
    lb: LbRealiser,
    reporter: Reporter,
    /// The L7 instances' supervisor (with a state directory), and the set
    /// it was last given.
    l7: Option<crate::lb::l7::Supervisor>,
    l7_sent: Vec<strato_proto::config::L7InstanceEntry>,
}

/// Loads the dataplane, adopting what a previous agent pinned: its policies
/// (ours are numbered above them) and its VPC tables and host record.
fn load(cfg: &AgentConfig) -> anyhow::Result<(Dataplane, SgRealiser, VpcRealiser)> {
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
    let sg = SgRealiser::new(max_policy, max_class);
    dp.resync_port_index()
        .context("rewriting the dense port index")?;
    let have = dp.tables().context("reading the adopted tables")?;
    let host_info = dp.host().context("reading the adopted host record")?;
    tracing::info!(host = %cfg.host, pin_dir = %pin_dir.display(), adopted_ports = have.ports.len(), adopted_endpoints = have.endpoints.len(), "dataplane loaded (pinned maps adopted if present)");
    Ok((dp, sg, VpcRealiser::adopt(have, host_info)))
}

impl Agent {
    pub fn start(cfg: AgentConfig) -> anyhow::Result<Agent> {
        sys::check_bpffs(&cfg.pin_root)?;
        let (dp, sg, vpc) = load(&cfg)?;
        let mut agent = Agent {
            cfg,
            dp,
            desired: Desired::new(),
            ifaces: Interfaces::default(),
            host: HostNet::default(),
            vpc,
            sg,
            lb: LbRealiser::default(),
            reporter: Reporter::new(now_ms()),
            l7: None,
            l7_sent: Vec::new(),
        };
        agent.open_access_log();
        // The load balancer's numbering is this agent's: what a previous
        // one left is cleared (a connection's next packet hashes to the
        // same member again: the tables depend only on the members).
        if let Err(e) = agent.dp.lb_clear() {
            tracing::warn!(error = %e, "cannot clear the load balancer maps");
        }
        agent.forget_vanished_pins()?;
        sys::disable_ipv6_by_default();
        Ok(agent)
    }

    fn open_access_log(&mut self) {
        let Some(dir) = &self.cfg.state_dir else {
            return;
        };

        match std::fs::create_dir_all(dir) {
            Ok(()) => self.lb.access_log = Some(crate::lb::access_log::AccessLog::new(dir)),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "no state directory; no access log or metrics files")
            }
        }
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

    /// Applies an update from the controller. Returns false if it does not
    /// follow from what this agent has (the watch must restart from 0).
    pub fn apply(&mut self, u: Update) -> bool {
        match self.desired.apply(u) {
            Applied::Stale => false,
            Applied::Snapshot => {
                self.vpc.full_needed = true;
                self.sg.mark_all();
                true
            }
            Applied::Delta(c) => {
                self.vpc.mark(c.remotes, c.ports, c.full);
                self.sg.mark(c.policies, c.policies_full, c.member_adds);
                true
            }
        }
    }

    /// After an update: resolve just the taps of configured ports that are
    /// not attached yet (one ioctl each, no interface dump), then write and
    /// remove ports. Cost: proportional to the host's ports, not to every
    /// interface's details.
    pub fn realise(&mut self) -> anyhow::Result<()> {
        self.hand_l7_instances();
        self.attach_new_taps();
        if !self.tables_dirty() {
            return Ok(());
        }
        self.reconcile_ports()
    }

    /// Gives the L7 supervisor this host's instances when they changed.
    fn hand_l7_instances(&mut self) {
        let Some(sup) = &self.l7 else { return };
        let now: Vec<strato_proto::config::L7InstanceEntry> = self
            .desired
            .entries
            .values()
            .filter_map(|e| match e {
                Entry::L7Instance(i) => Some(i.clone()),
                _ => None,
            })
            .collect();
        if now != self.l7_sent {
            sup.set(now.clone());
            self.l7_sent = now;
        }
    }

    /// Attaches the port program to taps of configured ports that appeared
    /// (or whose attach failed before).
    fn attach_new_taps(&mut self) {
        let missing: Vec<String> = self
            .desired
            .entries
            .values()
            .filter_map(|e| match e {
                Entry::Port(p) => Some(p.tap.clone()),
                _ => None,
            })
            .filter(|t| self.ifaces.get(t).is_none_or(|a| a.error.is_some()))
            .collect();
        for tap in missing {
            let Some(ifindex) = sys::ifindex_of(&tap) else {
                continue;
            };
            // A tap appeared (or an attach is retried): its port changes.
            if let Some(k) = self.port_key_of_tap(&tap) {
                self.vpc.dirty_ports.insert(k);
            }
            sys::quiet_tap(&tap);
            let error = match self.dp.attach(Attach::PortTc, &tap) {
                Ok(()) => {
                    tracing::info!(iface = %tap, ifindex, program = Attach::PortTc.program(), "attached");
                    None
                }
                Err(e) => Some(format!("{e:#}")),
            };
            let a = Attached {
                ifindex,
                role: Role::Port,
                error,
            };
            self.ifaces.attached.insert(tap, a);
        }
    }

    /// One full reconcile pass: attach to new interfaces, forget vanished
    /// ones, write and remove ports.
    /// `scan`: every interface of the host (from a full listing); without
    /// it only known interfaces are checked.
    pub fn reconcile(&mut self, scan: Option<Vec<(u32, String)>>) -> anyhow::Result<()> {
        self.host.refresh_underlay(&self.cfg.uplinks);
        let candidates = scan.unwrap_or_else(|| self.known_interfaces());
        let present: HashSet<&str> = candidates.iter().map(|(_, n)| n.as_str()).collect();
        let gone: Vec<String> = self
            .ifaces
            .attached
            .keys()
            .filter(|n| !present.contains(n.as_str()))
            .cloned()
            .collect();
        for (ifindex, name) in &candidates {
            self.attach_interface(*ifindex, name);
        }
        for name in gone {
            tracing::info!(iface = %name, "interface gone; detaching");
            self.ifaces.attached.remove(&name);
            let _ = self.dp.detach(&name);
            self.vpc.full_needed = true;
        }
        self.write_host();
        self.warm_neighbour();
        // Taps of configured ports that appeared since are found by
        // realise; the tables are rebuilt only when something changed.
        self.realise()
    }

    /// Without a full scan, check only what we know (uplinks, attached
    /// interfaces) with one ioctl each: a netlink dump of thousands of
    /// taps costs tens of milliseconds.
    fn known_interfaces(&self) -> Vec<(u32, String)> {
        self.cfg
            .uplinks
            .iter()
            .chain(self.cfg.external.iter())
            .chain(self.ifaces.attached.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter_map(|n| sys::ifindex_of(n).map(|i| (i, n.clone())))
            .collect()
    }

    /// Attaches the program of its role to interface `name` unless it is
    /// attached already (as `ifindex`, without error).
    fn attach_interface(&mut self, ifindex: u32, name: &str) {
        let Some(role) = role_of(&self.cfg, name) else {
            return;
        };
        if let Some(a) = self.ifaces.get(name) {
            if a.ifindex == ifindex && a.error.is_none() {
                return;
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
                self.vpc.dirty_ports.insert(k);
            }
            None if role != Role::Port => self.vpc.full_needed = true,
            // An unconfigured tap (denied by default): no table changes.
            None => {}
        }
        if role == Role::Port {
            sys::quiet_tap(name);
        }
        let error = match self.dp.attach(which, name) {
            Ok(()) => {
                tracing::info!(iface = %name, ifindex, program = which.program(), "attached");
                None
            }
            Err(e) => {
                let prev = self.ifaces.get(name).and_then(|a| a.error.clone());
                let msg = format!("{e:#}");
                if prev.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(iface = %name, error = %msg, "attach failed; will retry");
                }
                Some(msg)
            }
        };
        let a = Attached {
            ifindex,
            role,
            error,
        };
        self.ifaces.attached.insert(name.to_owned(), a);
    }

    /// Writes `HOST[0]` when the uplink (ifindex, address) changed.
    fn write_host(&mut self) {
        let has_lb = self
            .desired
            .entries
            .values()
            .any(|e| matches!(e, Entry::LoadBalancer(_)));
        self.vpc.write_host(&mut self.dp, &self.ifaces, has_lb);
    }

    /// Keeps the uplinks' next hops resolved.
    fn warm_neighbour(&mut self) {
        let ifaces = self.cfg.uplinks.iter().chain(self.cfg.external.iter());
        self.host.warm_neighbour(ifaces);
    }

    /// Whether the tables must be reconciled: something changed since.
    fn tables_dirty(&self) -> bool {
        self.vpc.dirty() || self.sg.dirty()
    }

    /// Builds and writes the policies the ports need (before the ports
    /// refer to them); ports whose policy changed become dirty.
    fn sync_policies(&mut self) {
        if !self.desired.have_snapshot() {
            return;
        }
        let (plan, plan_ms) = self.sg.plan(&self.desired.entries);
        for id in self.sg.apply(&mut self.dp, plan, plan_ms) {
            self.vpc.dirty_ports.insert(format!("port/{id}"));
        }
    }

    fn reconcile_ports(&mut self) -> anyhow::Result<()> {
        self.sync_policies();
        // Only policies changed (a remote-group member, a rule) and no port
        // moved to another policy: the tables are as they were. Rebuilding
        // them here made every host of a large group rebuild all its tables
        // whenever any port of the group was bound.
        let have_snapshot = self.desired.have_snapshot();
        let r = if self.vpc.unchanged(have_snapshot) {
            Ok(())
        } else {
            self.reconcile_tables()
        };
        // Replaced policies go after the ports moved to their successors;
        // a previous agent's, once the tables are complete.
        let settled = have_snapshot && !self.vpc.full_needed;
        self.sg.retire(&mut self.dp, settled);
        r
    }

    fn reconcile_tables(&mut self) -> anyhow::Result<()> {
        if self.vpc.only_ports_changed(self.desired.have_snapshot()) {
            match self.realise_incremental() {
                Ok(true) => {
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "incremental update failed; rebuilding")
                }
            }
        }
        self.realise_full();
        Ok(())
    }

    /// Only ports changed: writes just their contributions, then their
    /// leases and reports. Returns false when a full rebuild is needed.
    fn realise_incremental(&mut self) -> anyhow::Result<bool> {
        let pols = self.sg.port_policies(&self.desired.entries);
        let written =
            self.vpc
                .incremental(&mut self.dp, &self.desired.entries, &self.ifaces, &pols)?;
        let Some(written) = written else {
            return Ok(false);
        };
        for i in &written.removed {
            self.host.set_lease(*i, None);
        }
        for (k, ifindex) in &written.ports {
            self.port_written(k, *ifindex);
        }
        Ok(true)
    }

    /// The lease and report of changed port `key`, whose entry was written
    /// for `ifindex` (`None`: not written).
    fn port_written(&mut self, key: &str, ifindex: Option<u32>) {
        let id = key.trim_start_matches("port/").to_owned();
        let Some(Entry::Port(p)) = self.desired.entries.get(key) else {
            self.reporter.ports.remove(&id);
            return;
        };
        if let Some(i) = ifindex {
            self.host
                .set_lease(i, host::lease_for(&self.desired.entries, p));
        }
        let attached = self.ifaces.get(&p.tap);
        let r = port_report(&id, &p.tap, attached, None, |_| ifindex.is_some());
        self.reporter.ports.insert(id, r);
    }

    /// Rebuilds every table from the desired entries and writes the
    /// difference (after a snapshot), the load balancers first; then every
    /// port's report and lease.
    fn realise_full(&mut self) {
        self.write_host();
        self.warm_neighbour();
        let taps = self.ifaces.port_taps();
        self.vpc
            .allocate_slots(&mut self.dp, &self.desired.entries, &taps);
        let pols = self.sg.port_policies(&self.desired.entries);
        let (want, providers) = self.vpc.plan_full(&self.desired.entries, &taps, &pols);
        let mut error = None;
        // Until the first snapshot the adopted tables stay as they are.
        if self.desired.have_snapshot() {
            // Listeners before their VIPs appear.
            self.lb
                .sync(&mut self.dp, &self.desired.entries, &want.endpoints, &taps);
            let keep = self.ifaces.non_ports();
            error = self.vpc.apply_full(&mut self.dp, want, providers, &keep);
        }
        self.reporter.ports = self.port_reports(error.as_ref());
        let leases = host::leases(&self.desired.entries, &self.vpc.have);
        self.host.set_leases(leases);
    }

    /// Every configured port's report (`error`: the tables' write failed).
    fn port_reports(&self, error: Option<&String>) -> BTreeMap<String, PortReport> {
        let have = &self.vpc.have;
        self.desired
            .entries
            .values()
            .filter_map(|e| match e {
                Entry::Port(p) => Some(p),
                _ => None,
            })
            .map(|p| {
                let attached = self.ifaces.get(&p.tap);
                let written = |i| have.ports.contains_key(&i);
                let r = port_report(&p.id, &p.tap, attached, error, written);
                (p.id.clone(), r)
            })
            .collect()
    }

    /// Drops expired connection entries and those of vanished ports (every
    /// few seconds; the programs ignore expired entries anyway).
    fn ct_gc(&mut self) {
        if !self.sg.ct_gc_due() {
            return;
        }
        self.lb.housekeeping(&mut self.dp);
        // Entries are keyed by routing domain: a domain without local
        // ports left has no flows here any more.
        let domains: HashSet<u32> = self.vpc.have.ports.values().map(|p| p.domain).collect();
        let gateway = self.cfg.external.is_some();
        self.sg.sweep_conntrack(&mut self.dp, &domains, gateway);
    }

    /// Writes the access log and metrics file, and queues this host's load
    /// balancer counters.
    fn send_lb_stats(&mut self) {
        let reporting = self.reporter.outbox.is_some();
        let dir = self.cfg.state_dir.as_deref();
        let mut stats = self.lb.observe(&self.dp, &self.cfg.host, dir, reporting);
        if let Some(sup) = self.l7.as_ref().filter(|_| reporting) {
            let l7 = sup.stats.lock().expect("l7 stats lock").clone();
            if !l7.is_empty() {
                crate::lb::l7::add_to_report(stats.get_or_insert_with(Default::default), &l7);
            }
        }
        if let Some(stats) = stats {
            self.reporter.queue(Outgoing::LbStats(stats));
        }
    }

    /// The `port/` key of the configured port whose tap is `tap`.
    fn port_key_of_tap(&self, tap: &str) -> Option<String> {
        self.desired.entries.values().find_map(|e| match e {
            Entry::Port(p) if p.tap == tap => Some(e.key()),
            _ => None,
        })
    }

    pub fn report(&mut self) -> anyhow::Result<HostReport> {
        let snapshot = self
            .reporter
            .counters
            .lock()
            .expect("counters lock poisoned")
            .clone();
        let counters = match snapshot {
            Some(c) => c,
            None => self.dp.counters().context("reading counters")?,
        };
        let (interfaces, drops) = report::interface_reports(&self.ifaces, &counters);
        let (live, swept) = (self.sg.ct_live, self.sg.ct_swept);
        let maps = report::map_sizes(&self.vpc.have, &counters, &self.sg.policies, live);
        let capacity = self
            .cfg
            .ct_max
            .unwrap_or(dataplane_common::maps::CT_MAX_DEFAULT);
        let conntrack = self
            .dp
            .ct_stats()
            .ok()
            .map(|s| report::conntrack_report(s, live, swept, capacity));
        Ok(HostReport {
            host: self.cfg.host.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            started_at_ms: self.reporter.started_at_ms,
            pin_dir: self.cfg.pin_dir().display().to_string(),
            interfaces,
            drops,
            underlay_ip: self.host.underlay_ip.clone(),
            az: self.cfg.az.clone(),
            external: self.cfg.external.clone(),
            realised_revision: self.desired.revision(),
            ports: self.reporter.ports.values().cloned().collect(),
            maps,
            conntrack,
        })
    }

    /// Queues a report: a full one when due (or when the controller lacks
    /// one), else a status report with the ports whose state changed; with
    /// `only_if_changed`, nothing when nothing changed. Standalone agents
    /// (no controller) report nothing.
    fn send_report(&mut self, only_if_changed: bool) {
        if self.reporter.outbox.is_none() {
            return;
        }
        let (every, revision) = (self.cfg.full_report_interval, self.desired.revision());
        match self
            .reporter
            .due(only_if_changed, every, &self.cfg.host, revision)
        {
            Due::Nothing => {}
            Due::Status(status) => self.reporter.queue(Outgoing::Status(status)),
            Due::Full => match self.report() {
                Ok(r) => {
                    self.reporter.queue(Outgoing::Full(Box::new(r)));
                    self.reporter.sent_full();
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot build report"),
            },
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
        self.start_sender();
        self.start_prober();
        self.start_l7();
        spawn_counters(&self.cfg, self.reporter.counters.clone())?;
        let dhcp_stop = Arc::new(AtomicBool::new(false));
        spawn_dhcp(self.host.leases.clone(), dhcp_stop.clone())?;
        if let Some(ep) = self.cfg.controller.clone() {
            let revision = self.desired.revision_handle();
            let host = self.cfg.host.clone();
            tokio::spawn(watch::watch(ep, host, revision, resync.clone(), tx));
        }
        let mut tick = tokio::time::interval(self.cfg.interval);
        let mut ticks: u64 = 0;
        let mut scan_rx = spawn_scanner(self.cfg.interval * FULL_SCAN_EVERY as u32)?;
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Configuration first: a queued update beats a periodic pass.
                biased;
                _ = &mut shutdown => break,
                Some(u) = rx.recv() => self.on_update(u, &mut rx, &resync),
                Some(all) = scan_rx.recv() => {
                    if let Err(e) = self.reconcile(Some(all)) {
                        tracing::warn!(error = %format!("{e:#}"), "reconcile failed");
                    }
                }
                _ = tick.tick() => {
                    ticks += 1;
                    self.on_tick(ticks)?;
                }
            }
        }
        dhcp_stop.store(true, Ordering::SeqCst);
        self.stop(detach_on_exit);
        Ok(())
    }

    /// Reports go out through one task, in order (with a controller).
    fn start_sender(&mut self) {
        let Some(ep) = self.cfg.controller.clone() else {
            return;
        };
        let (out_tx, out_rx) = tokio::sync::mpsc::unbounded_channel();
        self.reporter.outbox = Some(out_tx);
        let need_full = self.reporter.need_full.clone();
        tokio::spawn(report::sender(ep, self.cfg.host.clone(), out_rx, need_full));
    }

    /// Health checks of local load balancer members, reported as they
    /// change.
    fn start_prober(&mut self) {
        let Some(out) = self.reporter.outbox.clone() else {
            return;
        };
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
            Ok(p) => self.lb.prober = Some(p),
            Err(e) => {
                tracing::error!(error = %e, "cannot start health checks; members are not checked")
            }
        }
    }

    /// The L7 instances' supervisor (with a state directory and a
    /// controller to report their health to).
    fn start_l7(&mut self) {
        let (Some(dir), Some(out)) = (&self.cfg.state_dir, self.reporter.outbox.clone()) else {
            return;
        };
        let settings = crate::lb::l7::Settings {
            host: self.cfg.host.clone(),
            root: dir.join("l7"),
            binary: self.cfg.l7_binary.clone(),
        };
        let health = move |states: Vec<(String, bool)>| {
            let members = states
                .into_iter()
                .map(|(id, up)| strato_proto::lb::MemberHealth { id, up })
                .collect();
            let _ = out.send(Outgoing::LbHealth(strato_proto::lb::HealthReport {
                members,
            }));
        };
        match crate::lb::l7::Supervisor::spawn(settings, Box::new(health)) {
            Ok(s) => {
                self.l7 = Some(s);
                // What arrived before it existed.
                self.l7_sent.clear();
                self.hand_l7_instances();
            }
            Err(e) => tracing::error!(error = %e, "cannot start the L7 instance supervisor"),
        }
    }

    /// One update from the watch, and whatever else is queued: applied,
    /// realised, reported.
    fn on_update(
        &mut self,
        u: Option<Update>,
        rx: &mut tokio::sync::mpsc::Receiver<Option<Update>>,
        resync: &AtomicU64,
    ) {
        let Some(u) = u else { return };
        let span =
            tracing::info_span!("apply", host = %self.cfg.host, revision = u.revision).entered();
        if !self.apply(u) {
            resync.fetch_add(1, Ordering::SeqCst);
            return;
        }
        // Drain what else is queued before touching maps once.
        while let Ok(Some(more)) = rx.try_recv() {
            if !self.apply(more) {
                resync.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
        drop(span);
        let started = Instant::now();
        if let Err(e) = self.realise() {
            tracing::warn!(error = %format!("{e:#}"), "reconcile failed");
        }
        let realised_us = started.elapsed().as_micros() as u64;
        self.send_report(true);
        tracing::debug!(
            revision = self.desired.revision(),
            realised_us,
            total_us = started.elapsed().as_micros() as u64,
            "update realised and reported"
        );
    }

    /// The periodic pass: reconcile, sweep, report.
    fn on_tick(&mut self, ticks: u64) -> anyhow::Result<()> {
        // The first pass lists every interface itself; later full listings
        // come from the scanner thread.
        let scan = if ticks == 1 {
            Some(interfaces()?)
        } else {
            None
        };
        if let Err(e) = self.reconcile(scan) {
            tracing::warn!(error = %format!("{e:#}"), "reconcile failed");
        }
        self.ct_gc();
        self.send_report(false);
        self.send_lb_stats();
        Ok(())
    }

    /// On exit: programs stay attached unless `detach`.
    fn stop(&mut self, detach: bool) {
        if !detach {
            tracing::info!("exiting; programs stay attached through their pinned links");
            return;
        }
        let names: Vec<String> = self.ifaces.attached.keys().cloned().collect();
        for n in names {
            let _ = self.dp.detach(&n);
        }
        let _ = std::fs::remove_dir_all(self.cfg.pin_dir());
        tracing::info!("detached from every interface and removed pins");
    }
}

/// Counters are read from the pinned maps on their own thread: thousands
/// of per-CPU entries must not delay configuration.
fn spawn_counters(
    cfg: &AgentConfig,
    slot: Arc<std::sync::Mutex<Option<strato_dataplane::Counters>>>,
) -> anyhow::Result<()> {
    let (pin_dir, every) = (cfg.pin_dir(), cfg.full_report_interval);
    std::thread::Builder::new()
        .name("counters".into())
        .spawn(move || loop {
            if let Ok(c) = strato_dataplane::Counters::read_pinned(&pin_dir) {
                *slot.lock().expect("counters lock poisoned") = Some(c);
            }
            std::thread::sleep(every.min(Duration::from_secs(1)));
        })
        .context("starting the counters thread")?;
    Ok(())
}

/// DHCP: the port program passes requests to the stack; one packet socket
/// on every interface answers them, until `stop`.
fn spawn_dhcp(leases: host::Leases, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
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
    Ok(())
}

/// Unconfigured taps (which get the port program too, so they are denied
/// by default) and vanished interfaces are found by listing every
/// interface, a netlink dump that is slow with thousands of taps: done on
/// its own thread, `every` so often.
fn spawn_scanner(
    every: Duration,
) -> anyhow::Result<tokio::sync::mpsc::Receiver<Vec<(u32, String)>>> {
    let (scan_tx, scan_rx) = tokio::sync::mpsc::channel::<Vec<(u32, String)>>(1);
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
    Ok(scan_rx)
}
