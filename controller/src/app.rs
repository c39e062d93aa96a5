//! The controller process's shared state: configuration, the desired state
//! (`Core`), the host registry, the agents' load-balancer reports. Handed
//! to every HTTP handler and to the reconcile loops (`reconcile`).

use std::{path::PathBuf, time::Duration};

use crate::{
    commit::Core,
    hosts::Hosts,
    lbaas::health::{LbHealth, LbStats},
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
