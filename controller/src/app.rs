//! The controller process's shared state: configuration, the desired state
//! (`Core`), the host registry. Handed to every HTTP handler.

use std::{path::PathBuf, time::Duration};

use crate::{
    hosts::Hosts,
    lbaas::health::{LbHealth, LbStats},
    state::Core,
};

#[derive(Clone, Debug)]
pub struct Config {
    /// SQLite database file.
    pub db: PathBuf,
    /// Base URL clients reach this API at (catalog endpoints are built from it).
    pub public_url: String,
    /// Region name in the catalog.
    pub region: String,
    /// Lifetime of issued tokens.
    pub token_ttl: Duration,
    /// Bootstrap administrator (created or reset at start-up).
    pub admin_user: String,
    pub admin_password: String,
    pub admin_project: String,
}

pub struct App {
    pub config: Config,
    pub core: Core,
    pub hosts: Hosts,
    /// Load-balancer member health as the agents report it (operating
    /// status is derived from it, never stored).
    pub lb_health: LbHealth,
    /// Load-balancer traffic counters as the agents report them (the
    /// latest report of each host).
    pub lb_stats: LbStats,
    /// Becomes true when the controller is stopping: long-lived responses
    /// (configuration watches) end so the servers can drain.
    pub stopping: tokio::sync::watch::Sender<bool>,
}

impl App {
    pub fn new(config: Config, core: Core) -> App {
        App {
            config,
            core,
            hosts: Hosts::new(),
            lb_health: LbHealth::new(),
            lb_stats: LbStats::new(),
            stopping: tokio::sync::watch::Sender::new(false),
        }
    }
}

/// Watches the gateway hosts' liveness: a gateway whose agent stops
/// reporting is marked unavailable (a durable change, so the compiler moves
/// the routers' SNAT and the VMs' way out to the other gateways); its next
/// report marks it available again (see the report handler).
pub async fn watch_gateways(app: std::sync::Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let down: Vec<crate::model::HostRecord> = app
            .core
            .read()
            .hosts
            .values()
            .filter(|h| h.gateway && h.available && !app.hosts.is_up(&h.name))
            .cloned()
            .collect();
        for mut h in down {
            h.available = false;
            let name = h.name.clone();
            let r = app.core.mutate(|s| {
                // Still the same record, still down: mark it.
                let changes = match s.hosts.get(&name) {
                    Some(cur) if cur.available && !app.hosts.is_up(&name) => {
                        vec![crate::model::Change::Put(crate::model::Object::Host(
                            h.clone(),
                        ))]
                    }
                    _ => vec![],
                };
                Ok((changes, ()))
            });
            match r {
                Ok(()) => {
                    tracing::warn!(host = %name, "gateway host stopped reporting; marked unavailable")
                }
                Err(e) => {
                    tracing::warn!(host = %name, error = %e.message, "cannot mark a gateway host unavailable")
                }
            }
        }
    }
}

/// Moves load balancing resources from `PENDING_CREATE` / `PENDING_UPDATE`
/// to `ACTIVE` once every host that reports has realised its latest
/// configuration (so whatever carried them is programmed everywhere it
/// matters). Checked every 200 ms while something is pending.
pub async fn watch_lb_provisioning(app: std::sync::Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let pending = crate::lbaas::pending_ids(&app.core.read());
        if pending.is_empty() {
            continue;
        }
        let hosts = app.hosts.realised();
        let caught_up = !hosts.is_empty()
            && hosts
                .iter()
                .all(|(h, r)| app.core.host_update(h, *r, false).is_none());
        if !caught_up {
            continue;
        }
        let r = app.core.mutate(|s| {
            Ok((
                crate::lbaas::mark_active(s, pending.iter().map(String::as_str)),
                (),
            ))
        });
        if let Err(e) = r {
            tracing::warn!(error = %e.message, "cannot mark load balancers active");
        }
    }
}
