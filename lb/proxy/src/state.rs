//! What every connection of the instance shares: the current
//! configuration (swapped whole on reload), the pools' balancing state,
//! the member connections, the counters and the access log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::access_log::AccessLog;
use crate::balance::PoolState;
use crate::config::Compiled;
use crate::metrics::Metrics;
use crate::upstream::Upstreams;

pub struct State {
    config: RwLock<Arc<Compiled>>,
    pools: Mutex<HashMap<String, Arc<PoolState>>>,
    pub upstreams: Upstreams,
    pub metrics: Metrics,
    pub log: AccessLog,
}

impl State {
    pub fn new(config: Compiled, log: AccessLog) -> State {
        State {
            config: RwLock::new(Arc::new(config)),
            pools: Mutex::default(),
            upstreams: Upstreams::default(),
            metrics: Metrics::new(),
            log,
        }
    }

    pub fn config(&self) -> Arc<Compiled> {
        self.config.read().expect("config lock poisoned").clone()
    }

    /// Installs a new configuration; members that no longer take requests
    /// get their idle connections closed.
    pub fn install(&self, config: Compiled) {
        let config = Arc::new(config);
        *self.config.write().expect("config lock poisoned") = config.clone();
        self.upstreams.retain(|pool, member| {
            config
                .pools
                .get(pool)
                .and_then(|p| p.member(member))
                .filter(|m| m.active)
                .map(|m| m.addr)
        });
        self.pools
            .lock()
            .expect("pool states poisoned")
            .retain(|id, _| config.pools.contains_key(id));
    }

    pub fn pool_state(&self, pool: &str) -> Arc<PoolState> {
        self.pools
            .lock()
            .expect("pool states poisoned")
            .entry(pool.to_string())
            .or_default()
            .clone()
    }
}
