//! Octavia v2 logic for L4 load balancers: load balancers (a VIP port in a
//! tenant subnet), listeners (TCP/UDP ports on the VIP), pools, members and
//! health monitors, and the quotas on them. As in `network`, each command
//! validates its input against the current `State` (Octavia's rules:
//! hierarchy, protocol compatibility, duplicates, immutable attributes,
//! tenancy) and returns the `Change`s of the whole request, which
//! `commit::Core::mutate` commits in one revision; a rejected request changes
//! nothing. Operating status and statistics are not stored: they come from
//! the agents' reports ([`health`]). The dataplane (Maglev tables, health
//! checks) compiles from the stored objects and never calls into here except
//! [`mark_active`].
//!
//! Provisioning status: a created resource is `PENDING_CREATE`, a changed
//! one `PENDING_UPDATE`; creating, changing or deleting a child also puts its
//! load balancer in `PENDING_UPDATE` (unless it is still `PENDING_CREATE`),
//! as Octavia does. [`mark_active`] turns them `ACTIVE` once every host has
//! programmed the revision. Deletes are synchronous (204, the objects are
//! gone): there is no `PENDING_DELETE` phase to observe.

pub mod health;
pub mod health_monitors;
pub mod listeners;
pub mod load_balancers;
pub mod members;
pub mod pools;
pub mod quotas;

#[cfg(test)]
mod tests;

use serde_json::{json, Map, Value};

use crate::{
    auth::Auth,
    error::ApiError,
    model::{
        Change, HealthMonitor, Listener, LoadBalancer, Member, Meta, Object, Pool,
        ProvisioningStatus,
    },
    network::Attrs,
    state::State,
};

/// Octavia answers 409 "Invalid state PENDING_UPDATE of loadbalancer
/// resource <id>" to any change under a load balancer that is still
/// `PENDING_*`, so that a client serialises its changes behind the
/// dataplane. That needs the dataplane's acknowledgement ([`mark_active`],
/// called when every host has programmed a revision), which lands with the
/// load balancer compiler; until it is wired, nothing would ever leave
/// `PENDING_*` and every second request would be refused. So the check
/// exists ([`check_mutable`]) but is off.
pub const STRICT_PENDING: bool = false;

/// The only provider.
pub const PROVIDER: &str = "strato";

/// Device owner of the VIP ports load balancers create (device id
/// `lb-<load balancer id>`).
pub const OWNER_OCTAVIA: &str = "Octavia";

/// The `device_id` of a load balancer's own VIP port.
pub fn vip_device_id(lb_id: &str) -> String {
    format!("lb-{lb_id}")
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
    state
        .load_balancers
        .get(id)
        .filter(|x| auth.can_see(&x.meta.project_id))
        .ok_or_else(|| not_found("Load Balancer", id))
}

pub fn listener<'s>(state: &'s State, auth: &Auth, id: &str) -> Result<&'s Listener, ApiError> {
    state
        .listeners
        .get(id)
        .filter(|x| auth.can_see(&x.meta.project_id))
        .ok_or_else(|| not_found("Listener", id))
}

pub fn pool<'s>(state: &'s State, auth: &Auth, id: &str) -> Result<&'s Pool, ApiError> {
    state
        .pools
        .get(id)
        .filter(|x| auth.can_see(&x.meta.project_id))
        .ok_or_else(|| not_found("Pool", id))
}

/// A member of `pool_id` (a member of another pool is not found).
pub fn member<'s>(
    state: &'s State,
    auth: &Auth,
    pool_id: &str,
    id: &str,
) -> Result<&'s Member, ApiError> {
    pool(state, auth, pool_id)?;
    state
        .members
        .get(id)
        .filter(|x| x.pool_id == pool_id && auth.can_see(&x.meta.project_id))
        .ok_or_else(|| not_found("Member", id))
}

pub fn health_monitor<'s>(
    state: &'s State,
    auth: &Auth,
    id: &str,
) -> Result<&'s HealthMonitor, ApiError> {
    state
        .health_monitors
        .get(id)
        .filter(|x| auth.can_see(&x.meta.project_id))
        .ok_or_else(|| not_found("Health Monitor", id))
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

/// Marks the named load balancers, listeners, pools, members and health
/// monitors `ACTIVE` if they are `PENDING_CREATE` or `PENDING_UPDATE` (and
/// clears a load balancer's `error_reason`): for the compiler to call
/// (inside `Core::mutate`) once every host concerned has programmed the
/// revision that carries them. Unknown ids and resources in other states
/// are skipped; no change at all if nothing is pending.
pub fn mark_active<'a>(state: &State, ids: impl IntoIterator<Item = &'a str>) -> Vec<Change> {
    let pending = |s: ProvisioningStatus| {
        matches!(
            s,
            ProvisioningStatus::PendingCreate | ProvisioningStatus::PendingUpdate
        )
    };
    let mut out = Vec::new();
    for id in ids {
        if let Some(x) = state
            .load_balancers
            .get(id)
            .filter(|x| pending(x.provisioning_status))
        {
            let mut x = x.clone();
            x.provisioning_status = ProvisioningStatus::Active;
            x.error_reason = None;
            out.push(Change::Put(Object::LoadBalancer(x)));
        } else if let Some(x) = state
            .listeners
            .get(id)
            .filter(|x| pending(x.provisioning_status))
        {
            let mut x = x.clone();
            x.provisioning_status = ProvisioningStatus::Active;
            out.push(Change::Put(Object::Listener(x)));
        } else if let Some(x) = state
            .pools
            .get(id)
            .filter(|x| pending(x.provisioning_status))
        {
            let mut x = x.clone();
            x.provisioning_status = ProvisioningStatus::Active;
            out.push(Change::Put(Object::Pool(x)));
        } else if let Some(x) = state
            .members
            .get(id)
            .filter(|x| pending(x.provisioning_status))
        {
            let mut x = x.clone();
            x.provisioning_status = ProvisioningStatus::Active;
            out.push(Change::Put(Object::Member(x)));
        } else if let Some(x) = state
            .health_monitors
            .get(id)
            .filter(|x| pending(x.provisioning_status))
        {
            let mut x = x.clone();
            x.provisioning_status = ProvisioningStatus::Active;
            out.push(Change::Put(Object::HealthMonitor(x)));
        }
    }
    out
}

/// Ids of every load-balancing resource that is `PENDING_CREATE` or
/// `PENDING_UPDATE` (what [`mark_active`] would act on).
pub fn pending_ids(state: &State) -> Vec<String> {
    let p = |s: ProvisioningStatus| {
        matches!(
            s,
            ProvisioningStatus::PendingCreate | ProvisioningStatus::PendingUpdate
        )
    };
    let mut v: Vec<String> = Vec::new();
    v.extend(
        state
            .load_balancers
            .values()
            .filter(|x| p(x.provisioning_status))
            .map(|x| x.meta.id.clone()),
    );
    v.extend(
        state
            .listeners
            .values()
            .filter(|x| p(x.provisioning_status))
            .map(|x| x.meta.id.clone()),
    );
    v.extend(
        state
            .pools
            .values()
            .filter(|x| p(x.provisioning_status))
            .map(|x| x.meta.id.clone()),
    );
    v.extend(
        state
            .members
            .values()
            .filter(|x| p(x.provisioning_status))
            .map(|x| x.meta.id.clone()),
    );
    v.extend(
        state
            .health_monitors
            .values()
            .filter(|x| p(x.provisioning_status))
            .map(|x| x.meta.id.clone()),
    );
    v
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

/// Attributes every Octavia resource renders.
pub fn render_meta(m: &Meta, o: &mut Map<String, Value>) {
    o.insert("id".into(), m.id.clone().into());
    o.insert("name".into(), m.name.clone().into());
    o.insert("description".into(), m.description.clone().into());
    o.insert("project_id".into(), m.project_id.clone().into());
    o.insert("created_at".into(), m.created_at.clone().into());
    o.insert("updated_at".into(), m.updated_at.clone().into());
    o.insert("tags".into(), Value::Array(vec![]));
}

/// `[{"id": ...}, ...]`, as Octavia renders references.
pub fn id_refs<'a>(ids: impl IntoIterator<Item = &'a str>) -> Value {
    Value::Array(ids.into_iter().map(|id| json!({ "id": id })).collect())
}
