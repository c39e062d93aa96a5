//! Octavia v2 logic: load balancers (a VIP port in a tenant subnet),
//! listeners (TCP, UDP, HTTPS passthrough, HTTP and TERMINATED_HTTPS ports
//! on the VIP), pools, members, health monitors, L7 policies and L7 rules
//! ([`l7policies`], [`l7rules`], their character-level checks in
//! [`l7check`]), and the quotas on them. As in `network`, each command
//! validates its input against the current `State` (Octavia's rules:
//! hierarchy, protocol compatibility, duplicates, immutable attributes,
//! tenancy) and returns the `Change`s of the whole request, which
//! `commit::Core::mutate` commits in one revision; a rejected request changes
//! nothing. Operating status and statistics are not stored: they come from
//! the agents' reports ([`health`]). The dataplane (Maglev tables, health
//! checks) compiles from the stored objects and never calls into here
//! ([`l7config`] is the pure compilation of what an L7 proxy instance
//! runs, for the instance plumbing to call); the
//! only writer outside the API is `app::watch_lb_provisioning`, through
//! [`mark_active`]. Like `network`, this module never renders an HTTP
//! response and never commits: it returns changes.
//!
//! Provisioning status: a created resource is `PENDING_CREATE`, a changed
//! one `PENDING_UPDATE`; creating, changing or deleting a child also puts its
//! load balancer in `PENDING_UPDATE` (unless it is still `PENDING_CREATE`),
//! as Octavia does. [`mark_active`] turns them `ACTIVE` once every host has
//! programmed the revision. Deletes are synchronous (204, the objects are
//! gone): there is no `PENDING_DELETE` phase to observe.

pub mod amphorae;
pub mod health;
pub mod health_monitors;
pub mod l7check;
pub mod l7config;
pub mod l7policies;
pub mod l7rules;
pub mod listeners;
pub mod load_balancers;
pub mod members;
pub mod pools;
pub mod quotas;

#[cfg(test)]
mod l7tests;
#[cfg(test)]
mod tests;

use serde_json::{json, Map, Value};

use crate::{
    auth::Auth,
    error::ApiError,
    model::{
        Change, HealthMonitor, L7Policy, L7Rule, Listener, LoadBalancer, Member, Object, Pool,
        ProvisioningStatus,
    },
    network::{find, find_own, require_write, touch, Attrs, Made},
    state::Resource,
    state::State,
};

/// Octavia answers 409 "Invalid state PENDING_UPDATE of loadbalancer
/// resource `<id>`" to any change under a load balancer that is still
/// `PENDING_*`, so that a client serialises its changes behind the
/// dataplane. The acknowledgement that ends `PENDING_*` is wired
/// ([`mark_active`], called by `app::watch_lb_provisioning` once every
/// reporting host has programmed the latest revision), but a controller
/// without reporting hosts never acknowledges, and clients of this API
/// do not wait for `ACTIVE` between requests today: turning the check on is
/// an API change. So the check exists ([`check_mutable`]) but is off.
pub const STRICT_PENDING: bool = false;

/// A member's state as the balancers see it: `draining` when disabled or
/// at weight 0 (no new connections, established ones continue), `down`
/// when its pool is monitored (`monitored`: a monitor that is up) and the
/// checks find it down, else `active`.
pub fn member_state(m: &crate::model::Member, monitored: bool) -> &'static str {
    if !m.admin_state_up || m.weight == 0 {
        "draining"
    } else if monitored && m.health_down {
        "down"
    } else {
        "active"
    }
}

/// The only provider.
pub const PROVIDER: &str = "strato";

/// Device owner of the VIP ports load balancers create (device id
/// `lb-<load balancer id>`).
pub const OWNER_OCTAVIA: &str = "Octavia";

/// The `device_id` of a load balancer's own VIP port.
pub fn vip_device_id(lb_id: &str) -> String {
    format!("lb-{lb_id}")
}

/// Octavia's 400 for a required attribute the request lacks.
pub fn mandatory(key: &str) -> ApiError {
    ApiError::bad_request(format!(
        "Invalid input for field/attribute {key}. Value: 'None'. Mandatory field missing."
    ))
}

/// Octavia's 404: `"<Resource> <id> not found."`.
pub fn not_found(what: &str, id: &str) -> ApiError {
    ApiError::new(404, "NotFound", format!("{what} {id} not found."))
}

pub fn load_balancer<'s>(
    state: &'s State,
    auth: &Auth,
    id: &str,
) -> Result<&'s LoadBalancer, ApiError> {
    find_own(state, auth, id, || not_found("Load Balancer", id))
}

pub fn listener<'s>(state: &'s State, auth: &Auth, id: &str) -> Result<&'s Listener, ApiError> {
    find_own(state, auth, id, || not_found("Listener", id))
}

pub fn pool<'s>(state: &'s State, auth: &Auth, id: &str) -> Result<&'s Pool, ApiError> {
    find_own(state, auth, id, || not_found("Pool", id))
}

/// A member of `pool_id` (a member of another pool is not found).
pub fn member<'s>(
    state: &'s State,
    auth: &Auth,
    pool_id: &str,
    id: &str,
) -> Result<&'s Member, ApiError> {
    pool(state, auth, pool_id)?;
    find(
        state,
        id,
        |x: &Member| x.pool_id == pool_id && auth.can_see(&x.meta.project_id),
        || not_found("Member", id),
    )
}

pub fn health_monitor<'s>(
    state: &'s State,
    auth: &Auth,
    id: &str,
) -> Result<&'s HealthMonitor, ApiError> {
    find_own(state, auth, id, || not_found("Health Monitor", id))
}

pub fn l7policy<'s>(state: &'s State, auth: &Auth, id: &str) -> Result<&'s L7Policy, ApiError> {
    find_own(state, auth, id, || not_found("L7 Policy", id))
}

/// The policy of a `.../l7policies/{id}/rules` route: Octavia's routing
/// answers "L7Policy <id> not found." (no space) there.
pub fn rules_policy<'s>(state: &'s State, auth: &Auth, id: &str) -> Result<&'s L7Policy, ApiError> {
    find_own(state, auth, id, || not_found("L7Policy", id))
}

/// A rule of `policy_id` (a rule of another policy is not found).
pub fn l7rule<'s>(
    state: &'s State,
    auth: &Auth,
    policy_id: &str,
    id: &str,
) -> Result<&'s L7Rule, ApiError> {
    rules_policy(state, auth, policy_id)?;
    find(
        state,
        id,
        |x: &L7Rule| x.l7policy_id == policy_id && auth.can_see(&x.meta.project_id),
        || not_found("L7 Rule", id),
    )
}

/// A listener's policies, in `position` order.
pub fn listener_policies<'s>(state: &'s State, listener_id: &str) -> Vec<&'s L7Policy> {
    let mut v: Vec<&L7Policy> = state
        .l7policies
        .values()
        .filter(|p| p.listener_id == listener_id)
        .collect();
    v.sort_by(|a, b| (a.position, &a.meta.id).cmp(&(b.position, &b.meta.id)));
    v
}

/// A policy's rules, in id order.
pub fn policy_rules<'s>(state: &'s State, policy_id: &str) -> impl Iterator<Item = &'s L7Rule> {
    let policy_id = policy_id.to_owned();
    state
        .l7rules
        .values()
        .filter(move |r| r.l7policy_id == policy_id)
}

/// The health monitor of a pool, if it has one.
pub fn pool_monitor<'s>(state: &'s State, pool_id: &str) -> Option<&'s HealthMonitor> {
    state
        .health_monitors
        .values()
        .find(|m| m.pool_id == pool_id)
}

/// The members of a pool.
pub fn pool_members<'s>(state: &'s State, pool_id: &str) -> impl Iterator<Item = &'s Member> {
    let pool_id = pool_id.to_owned();
    state.members.values().filter(move |m| m.pool_id == pool_id)
}

/// 409 if changes under `lb` must wait for the dataplane (`strict`:
/// [`STRICT_PENDING`], a parameter so that the rule itself is tested).
pub fn check_mutable_with(strict: bool, lb: &LoadBalancer) -> Result<(), ApiError> {
    if strict && lb.provisioning_status.is_pending() {
        return Err(ApiError::conflict(
            "ImmutableObject",
            format!(
                "Invalid state {} of loadbalancer resource {}",
                lb.provisioning_status.as_str(),
                lb.meta.id
            ),
        ));
    }
    Ok(())
}

/// [`check_mutable_with`] under [`STRICT_PENDING`].
pub fn check_mutable(lb: &LoadBalancer) -> Result<(), ApiError> {
    check_mutable_with(STRICT_PENDING, lb)
}

/// The change that puts a load balancer in `PENDING_UPDATE` because one of
/// its children changed (none if it is still `PENDING_CREATE`, or gone).
pub fn parent_pending(state: &State, lb_id: &str) -> Option<Change> {
    let lb = state.load_balancers.get(lb_id)?;
    if lb.provisioning_status == ProvisioningStatus::PendingCreate {
        return None;
    }
    let mut lb = lb.clone();
    lb.provisioning_status = ProvisioningStatus::PendingUpdate;
    Some(Change::Put(Object::LoadBalancer(lb)))
}

/// The attributes an update of a child resource refuses: the standard
/// ones and `specific`, in the order Octavia's validation names them.
pub fn read_only<'a>(specific: &[&'a str]) -> Vec<&'a str> {
    let head = ["id", "project_id", "tenant_id"];
    let tail = [
        "provisioning_status",
        "operating_status",
        "created_at",
        "updated_at",
    ];
    [&head[..], specific, &tail[..]].concat()
}

/// What a load-balancing resource hangs from.
pub enum Under<'a> {
    /// Nothing: it is a load balancer.
    Nothing,
    LoadBalancer(&'a str),
    Pool(&'a str),
    Listener(&'a str),
    L7Policy(&'a str),
}

/// A load-balancing resource: it has a provisioning status, and hangs
/// from a load balancer that must let it change ([`check_mutable`]).
pub trait Provisioned: Resource {
    fn provisioning_status(&self) -> ProvisioningStatus;
    fn provisioning_status_mut(&mut self) -> &mut ProvisioningStatus;
    fn under(&self) -> Under<'_>;

    /// The load balancer it is under (itself, for a load balancer), as the
    /// caller sees it.
    fn load_balancer<'s>(
        &self,
        state: &'s State,
        auth: &Auth,
    ) -> Result<&'s LoadBalancer, ApiError> {
        match self.under() {
            Under::Nothing => load_balancer(state, auth, &self.meta().id),
            Under::LoadBalancer(id) => load_balancer(state, auth, id),
            Under::Pool(id) => load_balancer(state, auth, &pool(state, auth, id)?.loadbalancer_id),
            Under::Listener(id) => {
                load_balancer(state, auth, &listener(state, auth, id)?.loadbalancer_id)
            }
            Under::L7Policy(id) => {
                let l = &l7policy(state, auth, id)?.listener_id;
                load_balancer(state, auth, &listener(state, auth, l)?.loadbalancer_id)
            }
        }
    }

    /// The load balancer a change of it puts in `PENDING_UPDATE`
    /// ([`parent_pending`]): none for a load balancer itself.
    fn parent(&self, state: &State) -> Option<String> {
        match self.under() {
            Under::Nothing => None,
            Under::LoadBalancer(id) => Some(id.to_owned()),
            Under::Pool(id) => state.pools.get(id).map(|p| p.loadbalancer_id.clone()),
            Under::Listener(id) => state.listeners.get(id).map(|l| l.loadbalancer_id.clone()),
            Under::L7Policy(id) => state
                .l7policies
                .get(id)
                .and_then(|p| state.listeners.get(&p.listener_id))
                .map(|l| l.loadbalancer_id.clone()),
        }
    }
}

macro_rules! provisioned {
    ($($ty:ty => |$x:ident| $under:expr),* $(,)?) => {$(
        impl Provisioned for $ty {
            fn provisioning_status(&self) -> ProvisioningStatus {
                self.provisioning_status
            }
            fn provisioning_status_mut(&mut self) -> &mut ProvisioningStatus {
                &mut self.provisioning_status
            }
            fn under(&self) -> Under<'_> {
                let $x = self;
                $under
            }
        }
    )*};
}

provisioned! {
    LoadBalancer => |_x| Under::Nothing,
    Listener => |x| Under::LoadBalancer(&x.loadbalancer_id),
    Pool => |x| Under::LoadBalancer(&x.loadbalancer_id),
    Member => |x| Under::Pool(&x.pool_id),
    HealthMonitor => |x| Under::Pool(&x.pool_id),
    L7Policy => |x| Under::Listener(&x.listener_id),
    L7Rule => |x| Under::L7Policy(&x.l7policy_id),
}

/// The course every update opens with: the caller may write, `found`
/// gives the resource, and its load balancer lets it change now
/// ([`check_mutable`]). Returns a copy to change and store with
/// [`updated`].
pub fn writable<'s, T: Provisioned>(
    state: &State,
    auth: &Auth,
    found: impl FnOnce() -> Result<&'s T, ApiError>,
) -> Result<T, ApiError> {
    require_write(auth)?;
    let x = found()?;
    check_mutable(x.load_balancer(state, auth)?)?;
    Ok(x.clone())
}

/// Marks a changed resource: its next revision, and `PENDING_UPDATE`
/// unless it is still `PENDING_CREATE`.
pub fn pending_update<T: Provisioned>(x: &mut T) {
    touch(x.meta_mut());
    if x.provisioning_status() != ProvisioningStatus::PendingCreate {
        *x.provisioning_status_mut() = ProvisioningStatus::PendingUpdate;
    }
}

/// A new resource stored after `changes`, then its load balancer put in
/// `PENDING_UPDATE` ([`Provisioned::parent`]).
pub fn created<T: Provisioned>(state: &State, x: T, mut changes: Vec<Change>) -> Made<T> {
    changes.push(x.clone().put());
    changes.extend(x.parent(state).and_then(|lb| parent_pending(state, &lb)));
    Ok((changes, x))
}

/// A changed resource ([`pending_update`]) stored as [`created`] stores a
/// new one.
pub fn updated<T: Provisioned>(state: &State, mut x: T, changes: Vec<Change>) -> Made<T> {
    pending_update(&mut x);
    created(state, x, changes)
}

fn is_pending(s: ProvisioningStatus) -> bool {
    matches!(
        s,
        ProvisioningStatus::PendingCreate | ProvisioningStatus::PendingUpdate
    )
}

/// `id` of kind `T`, `ACTIVE`, if it is `PENDING_*`.
fn activated<T: Provisioned>(state: &State, id: &str) -> Option<T> {
    let mut x = T::table(state)
        .get(id)
        .filter(|x| is_pending(x.provisioning_status()))?
        .clone();
    *x.provisioning_status_mut() = ProvisioningStatus::Active;
    Some(x)
}

/// Marks the named load balancers, listeners, pools, members, health
/// monitors, L7 policies and L7 rules `ACTIVE` if they are `PENDING_CREATE` or `PENDING_UPDATE` (and
/// clears a load balancer's `error_reason`): `app::watch_lb_provisioning`
/// calls it (inside `Core::mutate`) once every host that reports has
/// programmed the latest revision. Unknown ids and resources in other
/// states are skipped; no change at all if nothing is pending.
pub fn mark_active<'a>(state: &State, ids: impl IntoIterator<Item = &'a str>) -> Vec<Change> {
    ids.into_iter()
        .filter_map(|id| {
            activated::<LoadBalancer>(state, id)
                .map(|mut lb| {
                    lb.error_reason = None;
                    lb.put()
                })
                .or_else(|| activated::<Listener>(state, id).map(Resource::put))
                .or_else(|| activated::<Pool>(state, id).map(Resource::put))
                .or_else(|| activated::<Member>(state, id).map(Resource::put))
                .or_else(|| activated::<HealthMonitor>(state, id).map(Resource::put))
                .or_else(|| activated::<L7Policy>(state, id).map(Resource::put))
                .or_else(|| activated::<L7Rule>(state, id).map(Resource::put))
        })
        .collect()
}

/// Ids of the resources of kind `T` that are `PENDING_*`.
fn pending_of<T: Provisioned>(state: &State) -> impl Iterator<Item = String> + '_ {
    T::table(state)
        .values()
        .filter(|x| is_pending(x.provisioning_status()))
        .map(|x| x.meta().id.clone())
}

/// Ids of every load-balancing resource that is `PENDING_CREATE` or
/// `PENDING_UPDATE` (what [`mark_active`] would act on).
pub fn pending_ids(state: &State) -> Vec<String> {
    pending_of::<LoadBalancer>(state)
        .chain(pending_of::<Listener>(state))
        .chain(pending_of::<Pool>(state))
        .chain(pending_of::<Member>(state))
        .chain(pending_of::<HealthMonitor>(state))
        .chain(pending_of::<L7Policy>(state))
        .chain(pending_of::<L7Rule>(state))
        .collect()
}

/// The owner of a child resource: its load balancer's project. A
/// `project_id`/`tenant_id` in the request must name that project.
pub fn child_owner(a: &mut Attrs<'_>, lb: &LoadBalancer) -> Result<String, ApiError> {
    for k in ["project_id", "tenant_id"] {
        if let Some(p) = a.string(k, 255)? {
            if p != lb.meta.project_id {
                return Err(ApiError::bad_request(format!(
                    "{k} {p} is not the project of load balancer {} ({}).",
                    lb.meta.id, lb.meta.project_id
                )));
            }
        }
    }
    Ok(lb.meta.project_id.clone())
}

/// A port number attribute (1..=65535).
pub fn port_number(a: &mut Attrs<'_>, key: &str) -> Result<Option<u16>, ApiError> {
    Ok(a.integer(key, 1, 65535)?.map(|n| n as u16))
}

/// A nullable port number: absent `None`, null `Some(None)`.
pub fn nullable_port(a: &mut Attrs<'_>, key: &str) -> Result<Option<Option<u16>>, ApiError> {
    if a.is_null(key) {
        a.raw(key);
        return Ok(Some(None));
    }
    Ok(port_number(a, key)?.map(Some))
}

/// An enum attribute: one of `E::ALL` as Octavia spells it (400 otherwise).
pub fn wire<E: Copy>(
    a: &mut Attrs<'_>,
    key: &str,
    all: &[E],
    as_str: fn(E) -> &'static str,
) -> Result<Option<E>, ApiError> {
    let Some(v) = a.string(key, 64)? else {
        return Ok(None);
    };
    all.iter()
        .copied()
        .find(|e| as_str(*e) == v)
        .map(Some)
        .ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|e| as_str(*e)).collect();
            ApiError::bad_request(format!(
                "Invalid input for field/attribute {key}. Value: '{v}'. Value should be one of: {}.",
                names.join(", ")
            ))
        })
}

/// What every Octavia resource renders first: its bookkeeping (without
/// Neutron's `tenant_id` and `revision_number`), `admin_state_up`,
/// `provisioning_status` and the `operating_status` the agents' reports
/// give it.
pub fn render_base<T: Provisioned>(
    x: &T,
    admin_state_up: bool,
    operating_status: &str,
) -> Map<String, Value> {
    let m = x.meta();
    let mut o = Map::new();
    o.insert("id".into(), m.id.clone().into());
    o.insert("name".into(), m.name.clone().into());
    o.insert("description".into(), m.description.clone().into());
    o.insert("project_id".into(), m.project_id.clone().into());
    o.insert("created_at".into(), m.created_at.clone().into());
    o.insert("updated_at".into(), m.updated_at.clone().into());
    o.insert("tags".into(), Value::Array(vec![]));
    o.insert("admin_state_up".into(), admin_state_up.into());
    o.insert(
        "provisioning_status".into(),
        x.provisioning_status().as_str().into(),
    );
    o.insert("operating_status".into(), operating_status.into());
    o
}

/// `[{"id": ...}, ...]`, as Octavia renders references.
pub fn id_refs<'a>(ids: impl IntoIterator<Item = &'a str>) -> Value {
    Value::Array(ids.into_iter().map(|id| json!({ "id": id })).collect())
}
