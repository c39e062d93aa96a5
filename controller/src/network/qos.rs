//! QoS policies with bandwidth-limit rules (Neutron `qos` and
//! `qos-bw-limit-direction`): what a floating IP's `qos_policy_id` applies.
//! Rates are 1 Mbit/s to 1 Gbit/s (the elastic IP bandwidth range); one
//! rule per direction. Rules live inside their policy: changing one is a
//! change of the policy (its revision).

use serde_json::{json, Map, Value};

use super::{
    creating, find, new_meta, owned, render_meta, require_write, touch, update_attrs, updated,
    writable, Attrs, Edit, Made,
};
use crate::{
    auth::Auth,
    error::ApiError,
    model::{BandwidthLimitRule, Change, Direction, Kind, Object, QosPolicy},
    state::State,
};

/// Allowed `max_kbps`: 1 Mbit/s to 1 Gbit/s.
pub const MIN_KBPS: i64 = 1_000;
pub const MAX_KBPS: i64 = 1_000_000;
/// Largest `max_burst_kbps` (10 Gbit of burst).
pub const MAX_BURST_KBITS: i64 = 10_000_000;

/// A policy the caller may see: its own, or shared.
pub fn get<'s>(state: &'s State, auth: &Auth, id: &str) -> Result<&'s QosPolicy, ApiError> {
    find(
        state,
        id,
        |p: &QosPolicy| p.shared || auth.can_see(&p.meta.project_id),
        || {
            ApiError::new(
                404,
                "QosPolicyNotFound",
                format!("QoS policy {id} could not be found."),
            )
        },
    )
}

fn get_owned<'s>(state: &'s State, auth: &Auth, id: &str) -> Result<&'s QosPolicy, ApiError> {
    owned(get(state, auth, id)?, auth, || {
        format!("QoS policy {id} is shared with you; only its owner may change it.")
    })
}

fn reject_default(a: &mut Attrs<'_>) -> Result<(), ApiError> {
    if a.boolean("is_default")? == Some(true) {
        return Err(ApiError::invalid(
            "Invalid input for is_default. Reason: default QoS policies are not supported.",
        ));
    }
    Ok(())
}

pub fn create(state: &State, auth: &Auth, body: &Value) -> Made<QosPolicy> {
    let (mut a, project) = creating(state, auth, body, "policy")?;
    let (name, description) = a.names()?;
    let shared = a.boolean("shared")?.unwrap_or(false);
    reject_default(&mut a)?;
    a.finish()?;
    let p = QosPolicy {
        meta: new_meta(project, name, description),
        shared,
        is_default: false,
        bandwidth_limit_rules: vec![],
    };
    tracing::info!(qos_policy = %p.meta.id, project = %p.meta.project_id, "QoS policy created");
    Ok((vec![Change::Put(Object::QosPolicy(p.clone()))], p))
}

pub fn update(state: &State, auth: &Auth, e: Edit) -> Made<QosPolicy> {
    let Edit { id, body, if_match } = e;
    const READ_ONLY: &[&str] = &["id", "project_id", "tenant_id", "rules"];
    let mut p = writable(auth, || get_owned(state, auth, id), if_match)?.clone();
    update_attrs(body, "policy", READ_ONLY, |a| {
        a.rename(&mut p.meta)?;
        if let Some(v) = a.boolean("shared")? {
            p.shared = v;
        }
        reject_default(a)
    })?;
    Ok(updated(p, vec![]))
}

pub fn delete(state: &State, auth: &Auth, id: &str, if_match: Option<&str>) -> Made<()> {
    writable(auth, || get_owned(state, auth, id), if_match)?;
    if let Some(f) = state
        .floating_ips
        .values()
        .find(|f| f.qos_policy_id.as_deref() == Some(id))
    {
        return Err(ApiError::conflict(
            "QosPolicyInUse",
            format!("QoS Policy {id} is used by floatingip {}.", f.meta.id),
        ));
    }
    Ok((vec![Change::Delete(Kind::QosPolicy, id.to_owned())], ()))
}

pub const ATTRS: &[&str] = &["shared", "is_default", "rules"];

pub fn render(p: &QosPolicy) -> Map<String, Value> {
    let mut o = Map::new();
    render_meta(&p.meta, &mut o);
    o.insert("shared".into(), p.shared.into());
    o.insert("is_default".into(), p.is_default.into());
    o.insert(
        "rules".into(),
        Value::Array(
            p.bandwidth_limit_rules
                .iter()
                .map(|r| Value::Object(render_rule(p, r)))
                .collect(),
        ),
    );
    o
}

pub fn render_rule(p: &QosPolicy, r: &BandwidthLimitRule) -> Map<String, Value> {
    let v = json!({"id": r.id, "qos_policy_id": p.meta.id, "max_kbps": r.max_kbps,
        "max_burst_kbps": r.max_burst_kbps, "direction": r.direction.as_str(),
        "type": "bandwidth_limit"});
    v.as_object().expect("object").clone()
}

fn direction(s: &str) -> Result<Direction, ApiError> {
    match s {
        "egress" => Ok(Direction::Egress),
        "ingress" => Ok(Direction::Ingress),
        other => Err(ApiError::invalid(format!(
            "Invalid input for direction. Reason: '{other}' is not in ['egress', 'ingress']."
        ))),
    }
}

fn kbps(a: &mut Attrs<'_>) -> Result<Option<u64>, ApiError> {
    match a.integer("max_kbps", i64::MIN, i64::MAX)? {
        None => Ok(None),
        Some(v) if (MIN_KBPS..=MAX_KBPS).contains(&v) => Ok(Some(v as u64)),
        Some(v) => Err(ApiError::invalid(format!(
            "Invalid input for max_kbps. Reason: '{v}' is outside the allowed bandwidth, 1 Mbit/s to 1 Gbit/s ({MIN_KBPS} to {MAX_KBPS} kbps)."
        ))),
    }
}

fn conflict_direction(p: &QosPolicy, d: Direction, except: &str) -> Result<(), ApiError> {
    if p.bandwidth_limit_rules
        .iter()
        .any(|r| r.direction == d && r.id != except)
    {
        return Err(ApiError::conflict(
            "QoSRuleParameterConflict",
            format!(
                "QoS policy {} already has a bandwidth limit rule for direction {}.",
                p.meta.id,
                d.as_str()
            ),
        ));
    }
    Ok(())
}

pub fn rule_create(
    state: &State,
    auth: &Auth,
    policy_id: &str,
    body: &Value,
) -> Made<Map<String, Value>> {
    require_write(auth)?;
    let mut p = get_owned(state, auth, policy_id)?.clone();
    let mut a = Attrs::from_body(body, "bandwidth_limit_rule")?;
    let max_kbps = kbps(&mut a)?
        .ok_or_else(|| ApiError::bad_request("Invalid input: 'max_kbps' is required."))?;
    let max_burst_kbps = a
        .integer("max_burst_kbps", 0, MAX_BURST_KBITS)?
        .unwrap_or(0) as u64;
    let d = match a.string("direction", 16)? {
        Some(s) => direction(&s)?,
        None => Direction::Egress,
    };
    a.finish()?;
    conflict_direction(&p, d, "")?;
    let r = BandwidthLimitRule {
        id: uuid::Uuid::new_v4().to_string(),
        max_kbps,
        max_burst_kbps,
        direction: d,
    };
    p.bandwidth_limit_rules.push(r.clone());
    touch(&mut p.meta);
    let out = render_rule(&p, &r);
    tracing::info!(qos_policy = policy_id, rule = %r.id, max_kbps, direction = d.as_str(), "bandwidth limit rule created");
    Ok((vec![Change::Put(Object::QosPolicy(p))], out))
}

pub fn rule_get<'s>(
    state: &'s State,
    auth: &Auth,
    policy_id: &str,
    rule_id: &str,
) -> Result<(&'s QosPolicy, &'s BandwidthLimitRule), ApiError> {
    let p = get(state, auth, policy_id)?;
    let r = p
        .bandwidth_limit_rules
        .iter()
        .find(|r| r.id == rule_id)
        .ok_or_else(|| {
            ApiError::new(
                404,
                "QosRuleNotFound",
                format!("QoS rule {rule_id} for policy {policy_id} could not be found."),
            )
        })?;
    Ok((p, r))
}

pub fn rule_update(
    state: &State,
    auth: &Auth,
    policy_id: &str,
    rule_id: &str,
    body: &Value,
) -> Made<Map<String, Value>> {
    require_write(auth)?;
    get_owned(state, auth, policy_id)?;
    let (p, r) = rule_get(state, auth, policy_id, rule_id)?;
    let (mut p, mut r) = (p.clone(), r.clone());
    let mut a = Attrs::from_body(body, "bandwidth_limit_rule")?;
    a.reject_read_only(&["id", "qos_policy_id", "type"])?;
    if let Some(v) = kbps(&mut a)? {
        r.max_kbps = v;
    }
    if let Some(v) = a.integer("max_burst_kbps", 0, MAX_BURST_KBITS)? {
        r.max_burst_kbps = v as u64;
    }
    if let Some(s) = a.string("direction", 16)? {
        r.direction = direction(&s)?;
    }
    a.finish()?;
    conflict_direction(&p, r.direction, &r.id)?;
    for x in p.bandwidth_limit_rules.iter_mut() {
        if x.id == r.id {
            *x = r.clone();
        }
    }
    touch(&mut p.meta);
    let out = render_rule(&p, &r);
    Ok((vec![Change::Put(Object::QosPolicy(p))], out))
}

pub fn rule_delete(state: &State, auth: &Auth, policy_id: &str, rule_id: &str) -> Made<()> {
    require_write(auth)?;
    get_owned(state, auth, policy_id)?;
    let (p, _) = rule_get(state, auth, policy_id, rule_id)?;
    let mut p = p.clone();
    p.bandwidth_limit_rules.retain(|r| r.id != rule_id);
    touch(&mut p.meta);
    Ok((vec![Change::Put(Object::QosPolicy(p))], ()))
}
