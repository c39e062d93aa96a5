//! What every connection of the instance shares: the current
//! configuration (swapped whole on reload) with each pool's live parts
//! resolved once per reload (balancing state, member connections and
//! counters: a request looks nothing up by name), the counters and the
//! access log.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use crate::access_log::AccessLog;
use crate::balance::{PoolConfig, PoolState};
use crate::config::Compiled;
use crate::metrics::{MemberStats, Metrics};
use crate::upstream::{MemberConns, Upstreams};

/// A member's live parts.
pub struct LiveMember {
    pub stats: Arc<MemberStats>,
    pub conns: Arc<MemberConns>,
}

/// A pool's configuration with its live parts; `members[i]` belongs to
/// `config.members[i]`.
pub struct LivePool {
    pub config: Arc<PoolConfig>,
    pub state: Arc<PoolState>,
    pub members: Vec<LiveMember>,
}

/// One configuration and the live parts of its pools.
pub struct Snapshot {
    pub config: Arc<Compiled>,
    pub pools: BTreeMap<String, LivePool>,
}

pub struct State {
    current: RwLock<Arc<Snapshot>>,
    /// Balancing state by pool id, kept across reloads.
    pool_states: Mutex<HashMap<String, Arc<PoolState>>>,
    pub upstreams: Upstreams,
    pub metrics: Metrics,
    pub log: AccessLog,
}

impl State {
    pub fn new(config: Compiled, log: AccessLog) -> State {
        let state = State {
            current: RwLock::new(Arc::new(Snapshot {
                config: Arc::new(Compiled::default()),
                pools: BTreeMap::new(),
            })),
            pool_states: Mutex::default(),
            upstreams: Upstreams::default(),
            metrics: Metrics::new(),
            log,
        };
        state.install(config);
        state
    }

    pub fn config(&self) -> Arc<Compiled> {
        self.snapshot().config.clone()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.read().expect("config lock poisoned").clone()
    }

    /// Installs a new configuration; members that no longer take requests
    /// get their idle connections closed.
    pub fn install(&self, config: Compiled) {
        let config = Arc::new(config);
        self.upstreams.retain(|pool, member| {
            config
                .pools
                .get(pool)
                .and_then(|p| p.member(member))
                .filter(|m| m.active)
                .map(|m| m.addr)
        });
        let pools = {
            let mut states = self.pool_states.lock().expect("pool states poisoned");
            states.retain(|id, _| config.pools.contains_key(id));
            config
                .pools
                .iter()
                .map(|(id, pool)| {
                    let members = pool
                        .members
                        .iter()
                        .map(|m| LiveMember {
                            stats: self.metrics.member(id, &m.id),
                            // A member taking no new request is never
                            // chosen: it gets no pooled connections.
                            conns: if m.active {
                                self.upstreams.get(id, &m.id, m.addr)
                            } else {
                                Arc::new(MemberConns::closed(m.addr))
                            },
                        })
                        .collect();
                    let live = LivePool {
                        config: pool.clone(),
                        state: states.entry(id.clone()).or_default().clone(),
                        members,
                    };
                    (id.clone(), live)
                })
                .collect()
        };
        *self.current.write().expect("config lock poisoned") = Arc::new(Snapshot { config, pools });
    }
}
