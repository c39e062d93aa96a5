//! The desired state in memory, and the one way to change it.
//!
//! [`Core::mutate`] is the only writer: it runs a command's validation
//! against the current [`State`], commits the resulting [`Change`]s to the
//! store (durable), then applies them in memory and bumps the global
//! revision. A command that fails validation, or whose commit fails,
//! changes nothing. Reads take a shared lock and never wait on disk except
//! behind a writer.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::Path,
    sync::{Mutex, RwLock, RwLockReadGuard},
};

use strato_proto::config::Update;

use crate::{
    compile::Compiler,
    error::ApiError,
    model::{
        Assignment, Change, FloatingIp, HealthMonitor, HostRecord, Kind, Listener, LoadBalancer,
        Member, Network, Object, Pool, Port, Project, QosPolicy, Quota, Role, Router,
        SecurityGroup, SecurityGroupRule, Subnet, Token, User,
    },
    store::{Store, StoreError},
};

/// Everything the controller knows, as of `revision`.
#[derive(Clone, Debug, Default)]
pub struct State {
    /// Global revision: bumped once per committed request.
    pub revision: u64,
    pub projects: BTreeMap<String, Project>,
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Role>,
    pub assignments: BTreeMap<String, Assignment>,
    /// By token hash.
    pub tokens: HashMap<String, Token>,
    pub networks: BTreeMap<String, Network>,
    pub subnets: BTreeMap<String, Subnet>,
    pub ports: BTreeMap<String, Port>,
    pub routers: BTreeMap<String, Router>,
    pub quotas: BTreeMap<String, Quota>,
    /// Registered hosts, by name.
    pub hosts: BTreeMap<String, HostRecord>,
    pub security_groups: BTreeMap<String, SecurityGroup>,
    pub security_group_rules: BTreeMap<String, SecurityGroupRule>,
    pub floating_ips: BTreeMap<String, FloatingIp>,
    pub qos_policies: BTreeMap<String, QosPolicy>,
    /// Octavia: load balancers and their listeners, pools, members and
    /// health monitors, by id.
    pub load_balancers: BTreeMap<String, LoadBalancer>,
    pub listeners: BTreeMap<String, Listener>,
    pub pools: BTreeMap<String, Pool>,
    pub members: BTreeMap<String, Member>,
    pub health_monitors: BTreeMap<String, HealthMonitor>,
    /// Group id -> ids of its rules (maintained by `apply`).
    pub rules_by_group: HashMap<String, BTreeSet<String>>,
}

impl State {
    pub fn apply(&mut self, c: &Change) {
        match c {
            Change::Put(o) => match o.clone() {
                Object::Project(x) => drop(self.projects.insert(x.id.clone(), x)),
                Object::User(x) => drop(self.users.insert(x.id.clone(), x)),
                Object::Role(x) => drop(self.roles.insert(x.id.clone(), x)),
                Object::Assignment(x) => drop(self.assignments.insert(x.id(), x)),
                Object::Token(x) => drop(self.tokens.insert(x.id_hash.clone(), x)),
                Object::Network(x) => drop(self.networks.insert(x.meta.id.clone(), x)),
                Object::Subnet(x) => drop(self.subnets.insert(x.meta.id.clone(), x)),
                Object::Port(x) => drop(self.ports.insert(x.meta.id.clone(), x)),
                Object::Router(x) => drop(self.routers.insert(x.meta.id.clone(), x)),
                Object::Quota(x) => drop(self.quotas.insert(x.project_id.clone(), x)),
                Object::Host(x) => drop(self.hosts.insert(x.name.clone(), x)),
                Object::SecurityGroup(x) => drop(self.security_groups.insert(x.meta.id.clone(), x)),
                Object::FloatingIp(x) => drop(self.floating_ips.insert(x.meta.id.clone(), x)),
                Object::QosPolicy(x) => drop(self.qos_policies.insert(x.meta.id.clone(), x)),
                Object::LoadBalancer(x) => drop(self.load_balancers.insert(x.meta.id.clone(), x)),
                Object::Listener(x) => drop(self.listeners.insert(x.meta.id.clone(), x)),
                Object::Pool(x) => drop(self.pools.insert(x.meta.id.clone(), x)),
                Object::Member(x) => drop(self.members.insert(x.meta.id.clone(), x)),
                Object::HealthMonitor(x) => drop(self.health_monitors.insert(x.meta.id.clone(), x)),
                Object::SecurityGroupRule(x) => {
                    self.rules_by_group
                        .entry(x.security_group_id.clone())
                        .or_default()
                        .insert(x.meta.id.clone());
                    if let Some(old) = self.security_group_rules.insert(x.meta.id.clone(), x) {
                        self.unindex_rule_if_moved(&old);
                    }
                }
            },
            Change::Delete(kind, id) => match kind {
                Kind::Project => drop(self.projects.remove(id)),
                Kind::User => drop(self.users.remove(id)),
                Kind::Role => drop(self.roles.remove(id)),
                Kind::Assignment => drop(self.assignments.remove(id)),
                Kind::Token => drop(self.tokens.remove(id)),
                Kind::Network => drop(self.networks.remove(id)),
                Kind::Subnet => drop(self.subnets.remove(id)),
                Kind::Port => drop(self.ports.remove(id)),
                Kind::Router => drop(self.routers.remove(id)),
                Kind::Quota => drop(self.quotas.remove(id)),
                Kind::Host => drop(self.hosts.remove(id)),
                Kind::SecurityGroup => drop(self.security_groups.remove(id)),
                Kind::FloatingIp => drop(self.floating_ips.remove(id)),
                Kind::QosPolicy => drop(self.qos_policies.remove(id)),
                Kind::LoadBalancer => drop(self.load_balancers.remove(id)),
                Kind::Listener => drop(self.listeners.remove(id)),
                Kind::Pool => drop(self.pools.remove(id)),
                Kind::Member => drop(self.members.remove(id)),
                Kind::HealthMonitor => drop(self.health_monitors.remove(id)),
                Kind::SecurityGroupRule => {
                    if let Some(old) = self.security_group_rules.remove(id) {
                        self.unindex_rule(&old);
                    }
                }
            },
        }
    }

    fn unindex_rule(&mut self, r: &SecurityGroupRule) {
        if let Some(set) = self.rules_by_group.get_mut(&r.security_group_id) {
            set.remove(&r.meta.id);
            if set.is_empty() {
                self.rules_by_group.remove(&r.security_group_id);
            }
        }
    }

    /// A replaced rule that changed groups (never done by the API, but the
    /// index must stay true whatever is stored).
    fn unindex_rule_if_moved(&mut self, old: &SecurityGroupRule) {
        let moved = self
            .security_group_rules
            .get(&old.meta.id)
            .is_some_and(|new| new.security_group_id != old.security_group_id);
        if moved {
            self.unindex_rule(old);
        }
    }

    /// The rules of a group, in id order.
    pub fn group_rules<'s>(
        &'s self,
        group_id: &str,
    ) -> impl Iterator<Item = &'s SecurityGroupRule> {
        self.rules_by_group
            .get(group_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.security_group_rules.get(id))
    }

    /// The quota of a project (defaults if never set).
    pub fn quota(&self, project_id: &str) -> Quota {
        self.quotas
            .get(project_id)
            .cloned()
            .unwrap_or_else(|| Quota::default_for(project_id))
    }
}

/// Revisions of change log kept in the store, and how often it is trimmed.
const CHANGE_LOG_KEEP: u64 = 100_000;
const CHANGE_LOG_COMPACT_EVERY: u64 = 1_000;

/// The state, its store, and notification of new revisions.
pub struct Core {
    state: RwLock<State>,
    store: Mutex<Store>,
    /// Per-host compiled configuration; updated under the state write lock,
    /// so it always matches `state.revision`.
    compiler: Mutex<Compiler>,
    revisions: tokio::sync::watch::Sender<u64>,
}

impl Core {
    /// Opens the store at `db` and loads everything into memory.
    pub fn open(db: &Path) -> Result<Core, StoreError> {
        let store = Store::open(db)?;
        let loaded = store.load()?;
        let mut state = State {
            revision: loaded.revision,
            ..State::default()
        };
        let n = loaded.objects.len();
        for o in loaded.objects {
            state.apply(&Change::Put(o));
        }
        let compiler = Compiler::new(&state);
        tracing::info!(db = %db.display(), revision = state.revision, objects = n, hosts = compiler.sizes().len(), "state loaded and compiled");
        let (revisions, _) = tokio::sync::watch::channel(state.revision);
        Ok(Core {
            state: RwLock::new(state),
            store: Mutex::new(store),
            compiler: Mutex::new(compiler),
            revisions,
        })
    }

    /// A consistent read view (held briefly: writers wait for it).
    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().expect("state lock poisoned")
    }

    /// Subscribes to new global revisions.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revisions.subscribe()
    }

    /// Runs `f` against the current state; commits the changes it returns
    /// (durably, as one revision) and applies them. Nothing changes if `f`
    /// or the commit fails.
    pub fn mutate<T>(
        &self,
        f: impl FnOnce(&State) -> Result<(Vec<Change>, T), ApiError>,
    ) -> Result<T, ApiError> {
        let mut state = self.state.write().expect("state lock poisoned");
        let (changes, out) = f(&state)?;
        if changes.is_empty() {
            return Ok(out);
        }
        let revision = state.revision + 1;
        {
            let mut store = self.store.lock().expect("store lock poisoned");
            store.commit(revision, &changes).map_err(|e| {
                tracing::error!(error = %e, revision, "commit failed");
                ApiError::internal("the change could not be stored; nothing was changed")
            })?;
        }
        for c in &changes {
            state.apply(c);
        }
        state.revision = revision;
        if revision.is_multiple_of(CHANGE_LOG_COMPACT_EVERY) {
            // The change log is an audit trail of recent revisions; objects
            // themselves are never dropped by this.
            let keep_from = revision.saturating_sub(CHANGE_LOG_KEEP);
            if let Err(e) = self
                .store
                .lock()
                .expect("store lock poisoned")
                .compact(keep_from)
            {
                tracing::warn!(error = %e, "change log compaction failed");
            }
        }
        self.compiler
            .lock()
            .expect("compiler lock poisoned")
            .on_commit(&state, &changes);
        drop(state);
        self.revisions.send_replace(revision);
        Ok(out)
    }

    /// What `host`'s agent needs after `since` (see `Compiler::update`).
    pub fn host_update(&self, host: &str, since: u64, snapshot: bool) -> Option<Update> {
        self.compiler
            .lock()
            .expect("compiler lock poisoned")
            .update(host, since, snapshot)
    }

    /// Checks the incrementally maintained configuration against a full
    /// compilation; returns (full recompiles, incremental commits).
    pub fn verify_compiled(&self) -> Result<(u64, u64), String> {
        let state = self.read();
        let c = self.compiler.lock().expect("compiler lock poisoned");
        c.verify(&state)?;
        Ok((c.compiles, c.incremental))
    }

    /// Compiled entries per host.
    pub fn compiled_sizes(&self) -> std::collections::BTreeMap<String, usize> {
        self.compiler
            .lock()
            .expect("compiler lock poisoned")
            .sizes()
    }
}
