//! Octavia quotas: load balancers, listeners, pools, members, health
//! monitors, L7 policies and L7 rules per project, stored in the project's
//! `Quota` record beside the Neutron ones. Defaults (Octavia's are
//! unlimited): 10 load balancers, 50 listeners, 50 pools, 500 members, 50
//! health monitors, 50 L7 policies, 500 L7 rules. A create that
//! would exceed one is refused as Octavia refuses it: 403 "Quota has been
//! met for resources: Load Balancer".

use serde_json::{json, Value};

use crate::{
    auth::Auth,
    error::ApiError,
    model::{
        Change, HealthMonitor, Kind, L7Policy, L7Rule, Listener, LoadBalancer, Member, Object,
        Pool, Quota,
    },
    network::{
        quotas::{exceeded, held, require_admin},
        Attrs, Made,
    },
    state::State,
};

/// The kinds Octavia quotas count, with the names the API uses for them
/// (the first is the current one, the second the deprecated spelling) and
/// the one its error message uses.
pub const KINDS: [(Kind, &str, &str, &str); 7] = [
    (
        Kind::LoadBalancer,
        "load_balancer",
        "loadbalancer",
        "Load Balancer",
    ),
    (Kind::Listener, "listener", "listener", "Listener"),
    (Kind::Pool, "pool", "pool", "Pool"),
    (Kind::Member, "member", "member", "Member"),
    (
        Kind::HealthMonitor,
        "health_monitor",
        "healthmonitor",
        "Health Monitor",
    ),
    (Kind::L7Policy, "l7policy", "l7policy", "L7 Policy"),
    (Kind::L7Rule, "l7rule", "l7rule", "L7 Rule"),
];

/// Resources of `kind` that `project` holds.
pub fn used(state: &State, project: &str, kind: Kind) -> i64 {
    match kind {
        Kind::LoadBalancer => held::<LoadBalancer>(state, project),
        Kind::Listener => held::<Listener>(state, project),
        Kind::Pool => held::<Pool>(state, project),
        Kind::Member => held::<Member>(state, project),
        Kind::HealthMonitor => held::<HealthMonitor>(state, project),
        Kind::L7Policy => held::<L7Policy>(state, project),
        Kind::L7Rule => held::<L7Rule>(state, project),
        _ => 0,
    }
}

/// 403 if `n` more resources of `kind` would exceed `project`'s quota.
pub fn check(state: &State, project: &str, kind: Kind, n: i64) -> Result<(), ApiError> {
    if n > 0 && exceeded(state, project, kind, used(state, project, kind) + n) {
        let name = KINDS
            .iter()
            .find(|k| k.0 == kind)
            .map(|k| k.3)
            .unwrap_or("resource");
        return Err(ApiError::new(
            403,
            "QuotaException",
            format!("Quota has been met for resources: {name}"),
        ));
    }
    Ok(())
}

/// Octavia's quota body (both spellings of the renamed keys, as Octavia
/// renders them).
pub fn render(q: &Quota) -> Value {
    let mut o = serde_json::Map::new();
    for (kind, name, old, _) in KINDS {
        let v = q.limit(kind);
        o.insert(name.into(), v.into());
        o.insert(old.into(), v.into());
    }
    Value::Object(o)
}

pub fn show(state: &State, auth: &Auth, project: &str) -> Result<Value, ApiError> {
    if !auth.can_see(project) {
        return Err(ApiError::forbidden(
            "Only an administrator may read other projects' quotas.",
        ));
    }
    Ok(json!({"quota": render(&state.quota(project))}))
}

pub fn list(state: &State, auth: &Auth) -> Result<Value, ApiError> {
    let quotas: Vec<Value> = state
        .quotas
        .values()
        .filter(|q| auth.can_see(&q.project_id))
        .map(|q| {
            let mut v = render(q);
            v["project_id"] = q.project_id.clone().into();
            v
        })
        .collect();
    Ok(json!({"quotas": quotas, "quotas_links": []}))
}

pub fn defaults(auth: &Auth) -> Result<Value, ApiError> {
    Ok(json!({"quota": render(&Quota::default_for(&auth.project_id))}))
}

/// PUT /v2/lbaas/quotas/{project} (administrators).
pub fn update(state: &State, auth: &Auth, project: &str, body: &Value) -> Made<Value> {
    require_admin(auth)?;
    if !state.projects.contains_key(project) {
        return Err(crate::lbaas::not_found("Project", project));
    }
    let mut q = state.quota(project);
    let mut a = Attrs::from_body(body, "quota")?;
    for (kind, name, old, _) in KINDS {
        for key in [name, old] {
            if let Some(v) = a.integer(key, -1, i32::MAX as i64)? {
                *q.slot(kind).expect("an Octavia kind") = v;
            }
        }
    }
    a.finish()?;
    let out = json!({"quota": render(&q)});
    Ok((vec![Change::Put(Object::Quota(q))], out))
}

/// DELETE /v2/lbaas/quotas/{project}: back to the defaults (the Neutron
/// quotas of the project too: they share the record).
pub fn reset(state: &State, auth: &Auth, project: &str) -> Made<()> {
    require_admin(auth)?;
    let Some(cur) = state.quotas.get(project) else {
        return Ok((vec![], ()));
    };
    let mut q = cur.clone();
    let d = Quota::default_for(project);
    for (kind, ..) in KINDS {
        *q.slot(kind).expect("an Octavia kind") = d.limit(kind);
    }
    Ok((vec![Change::Put(Object::Quota(q))], ()))
}
