//! The host agent: owns one host's dataplane. It loads the eBPF object with
//! its maps pinned under `/sys/fs/bpf/strato/<host>/`, attaches the uplink
//! program to the host's underlay NIC(s) and the port program to every VM
//! port (tap device) that appears, detaches from ports that go away, and
//! reports interfaces and counters to the controller.
//!
//! Programs are attached through pinned bpf links: when the agent exits,
//! forwarding goes on; when it starts again it adopts the links and swaps in
//! its program atomically. The agent never decides policy; it realises what
//! it is told (today: which interfaces to cover).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;

use crate::{
    client::{self, Endpoint},
    dataplane::{Attach, Dataplane},
    report::{now_ms, DropReport, HostReport, IfCounters, InterfaceReport, Role},
};

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub host: String,
    pub controller: Option<Endpoint>,
    pub uplinks: Vec<String>,
    /// Interfaces whose name starts with one of these are VM ports.
    pub port_prefixes: Vec<String>,
    pub pin_root: PathBuf,
    pub interval: Duration,
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
    started_at_ms: u64,
    controller_ok: Option<bool>,
}

/// Interfaces of this process's network namespace: (ifindex, name).
pub fn interfaces() -> anyhow::Result<Vec<(u32, String)>> {
    let list = nix::net::if_::if_nameindex().context("listing interfaces (if_nameindex)")?;
    Ok(list
        .iter()
        .map(|i| (i.index(), i.name().to_string_lossy().into_owned()))
        .collect())
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
        let dp = Dataplane::load(Some(&pin_dir)).context("loading the dataplane")?;
        tracing::info!(host = %cfg.host, pin_dir = %pin_dir.display(), "dataplane loaded");
        let mut agent = Agent {
            cfg,
            dp,
            attached: BTreeMap::new(),
            started_at_ms: now_ms(),
            controller_ok: None,
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

    /// One reconcile pass: attach to new interfaces, forget vanished ones.
    pub fn reconcile(&mut self) -> anyhow::Result<()> {
        let present = interfaces()?;
        for (ifindex, name) in &present {
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
        let gone: Vec<String> = self
            .attached
            .keys()
            .filter(|n| !present.iter().any(|(_, p)| p == *n))
            .cloned()
            .collect();
        for name in gone {
            tracing::info!(iface = %name, "interface gone; detaching");
            self.attached.remove(&name);
            let _ = self.dp.detach(&name);
        }
        for up in &self.cfg.uplinks {
            if !present.iter().any(|(_, n)| n == up) && !self.attached.contains_key(up) {
                tracing::debug!(iface = %up, "uplink not present yet");
            }
        }
        Ok(())
    }

    pub fn report(&self) -> anyhow::Result<HostReport> {
        let counters = self.dp.counters().context("reading counters")?;
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
        Ok(HostReport {
            host: self.cfg.host.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            started_at_ms: self.started_at_ms,
            pin_dir: self.cfg.pin_dir().display().to_string(),
            interfaces,
            drops,
        })
    }

    async fn send_report(&mut self) {
        let Some(ep) = self.cfg.controller.clone() else {
            return;
        };
        let report = match self.report() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot build report");
                return;
            }
        };
        let path = format!("/internal/v1/hosts/{}", self.cfg.host);
        match client::put_json(&ep, &path, &report).await {
            Ok(()) => {
                if self.controller_ok != Some(true) {
                    tracing::info!(controller = %ep, "reporting to the controller");
                }
                self.controller_ok = Some(true);
            }
            Err(e) => {
                // Keep forwarding with what is loaded; say so once per outage.
                if self.controller_ok != Some(false) {
                    tracing::warn!(controller = %ep, error = %e, "controller unreachable; forwarding goes on");
                }
                self.controller_ok = Some(false);
            }
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
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {
                    if let Err(e) = self.reconcile() {
                        tracing::warn!(error = %format!("{e:#}"), "reconcile failed");
                    }
                    self.send_report().await;
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
