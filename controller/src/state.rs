//! The desired state in memory ([`State`]): every object by kind, the
//! global revision, and how a committed [`Change`] applies to it. Pure data
//! and lookups; the one way to change it is `commit::Core::mutate`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::model::{
    Amphora, Assignment, Change, FloatingIp, HealthMonitor, HostRecord, Kind, L7Policy, L7Rule,
    Listener, LoadBalancer, Member, Meta, Network, Object, Pool, Port, Project, QosPolicy, Quota,
    Role, Router, SecurityGroup, SecurityGroupRule, Subnet, Token, User,
};
use crate::model::{EndpointGroup, IkePolicy, IpsecPolicy, IpsecSiteConnection, VpnService};
use crate::model::{Secret, SecretContainer};

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
    /// L7 instances, by id.
    pub amphorae: BTreeMap<String, Amphora>,
    /// Octavia L7: listeners' policies and their rules, by id.
    pub l7policies: BTreeMap<String, L7Policy>,
    pub l7rules: BTreeMap<String, L7Rule>,
    /// Group id -> ids of its rules (maintained by `apply`).
    pub rules_by_group: HashMap<String, BTreeSet<String>>,
    /// Key Manager: secrets (payloads sealed) and containers, by id.
    pub secrets: BTreeMap<String, Secret>,
    pub secret_containers: BTreeMap<String, SecretContainer>,
    /// VPNaaS: policies, services, endpoint groups and connections, by id.
    pub ikepolicies: BTreeMap<String, IkePolicy>,
    pub ipsecpolicies: BTreeMap<String, IpsecPolicy>,
    pub vpnservices: BTreeMap<String, VpnService>,
    pub endpoint_groups: BTreeMap<String, EndpointGroup>,
    pub ipsec_site_connections: BTreeMap<String, IpsecSiteConnection>,
    /// The key-encryption key that opens the secrets' payloads: runtime
    /// only, never stored (`kek`; installed at start-up by
    /// `Core::install_secret_key`). None: secrets cannot be stored or read.
    pub secret_key: Option<std::sync::Arc<crate::kek::Kek>>,
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
                Object::Amphora(x) => drop(self.amphorae.insert(x.meta.id.clone(), x)),
                Object::Secret(x) => drop(self.secrets.insert(x.id.clone(), x)),
                Object::SecretContainer(x) => drop(self.secret_containers.insert(x.id.clone(), x)),
                Object::L7Policy(x) => drop(self.l7policies.insert(x.meta.id.clone(), x)),
                Object::L7Rule(x) => drop(self.l7rules.insert(x.meta.id.clone(), x)),
                Object::IkePolicy(x) => drop(self.ikepolicies.insert(x.meta.id.clone(), x)),
                Object::IpsecPolicy(x) => drop(self.ipsecpolicies.insert(x.meta.id.clone(), x)),
                Object::VpnService(x) => drop(self.vpnservices.insert(x.meta.id.clone(), x)),
                Object::EndpointGroup(x) => drop(self.endpoint_groups.insert(x.meta.id.clone(), x)),
                Object::IpsecSiteConnection(x) => {
                    drop(self.ipsec_site_connections.insert(x.meta.id.clone(), x))
                }
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
                Kind::Amphora => drop(self.amphorae.remove(id)),
                Kind::Secret => drop(self.secrets.remove(id)),
                Kind::SecretContainer => drop(self.secret_containers.remove(id)),
                Kind::L7Policy => drop(self.l7policies.remove(id)),
                Kind::L7Rule => drop(self.l7rules.remove(id)),
                Kind::IkePolicy => drop(self.ikepolicies.remove(id)),
                Kind::IpsecPolicy => drop(self.ipsecpolicies.remove(id)),
                Kind::VpnService => drop(self.vpnservices.remove(id)),
                Kind::EndpointGroup => drop(self.endpoint_groups.remove(id)),
                Kind::IpsecSiteConnection => drop(self.ipsec_site_connections.remove(id)),
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

/// A resource with Neutron's or Octavia's bookkeeping ([`Meta`]), stored
/// as one [`Object`] kind in one table of the desired state: what the
/// generic lookups, updates, deletes and quota counts of `network` and
/// `lbaas` need to know of it.
pub trait Resource: Clone + 'static {
    /// Its stored kind.
    const KIND: Kind;
    fn meta(&self) -> &Meta;
    fn meta_mut(&mut self) -> &mut Meta;
    /// The change that stores it.
    fn put(self) -> Change;
    /// Its table, by id.
    fn table(state: &State) -> &std::collections::BTreeMap<String, Self>;
}

macro_rules! resources {
    ($($ty:ident => $table:ident),* $(,)?) => {$(
        impl Resource for $ty {
            const KIND: Kind = Kind::$ty;
            fn meta(&self) -> &Meta {
                &self.meta
            }
            fn meta_mut(&mut self) -> &mut Meta {
                &mut self.meta
            }
            fn put(self) -> Change {
                Change::Put(Object::$ty(self))
            }
            fn table(state: &State) -> &std::collections::BTreeMap<String, Self> {
                &state.$table
            }
        }
    )*};
}

resources! {
    Network => networks,
    Subnet => subnets,
    Port => ports,
    Router => routers,
    SecurityGroup => security_groups,
    SecurityGroupRule => security_group_rules,
    FloatingIp => floating_ips,
    QosPolicy => qos_policies,
    LoadBalancer => load_balancers,
    Listener => listeners,
    Pool => pools,
    Member => members,
    HealthMonitor => health_monitors,
    Amphora => amphorae,
    L7Policy => l7policies,
    L7Rule => l7rules,
    IkePolicy => ikepolicies,
    IpsecPolicy => ipsecpolicies,
    VpnService => vpnservices,
    EndpointGroup => endpoint_groups,
    IpsecSiteConnection => ipsec_site_connections,
}
