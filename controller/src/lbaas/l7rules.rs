//! L7 rules: the conditions of an L7 policy (all must match). A rule
//! compares a part of the request (`HOST_NAME`, `PATH`, `FILE_TYPE`, a
//! `HEADER` or a `COOKIE` named by `key`) with `value` (`REGEX`,
//! `STARTS_WITH`, `ENDS_WITH`, `CONTAINS`, `EQUAL_TO`; `FILE_TYPE` only
//! `EQUAL_TO` and `REGEX`), optionally inverted. Validated as Octavia's
//! `validate.l7rule_data` (400 "Error parsing L7Rule: ..."): a key for
//! `HEADER` and `COOKIE` (header-name characters), values of header or
//! cookie characters, regular expressions that compile (with Rust's
//! `regex`: see `l7check::regex` for how it differs from Python's `re`),
//! no CR or LF in keys and values. The `SSL_*` types (client
//! certificates) are refused. At most [`MAX_PER_POLICY`] rules per policy.

use serde_json::{json, Map, Value};

use super::{
    check_mutable, created, l7check, l7policies, l7rule, listener, load_balancer, mandatory,
    parent_pending, policy_rules, quotas, read_only, render_base, updated, wire, writable,
};
use crate::{
    auth::Auth,
    error::ApiError,
    model::{Change, Kind, L7CompareType, L7Policy, L7Rule, L7RuleType, ProvisioningStatus},
    network::{new_meta, require_write, update_attrs, Attrs, Made},
    state::State,
};

/// Octavia's `MAX_L7RULES_PER_L7POLICY`.
pub const MAX_PER_POLICY: usize = 50;

/// Attributes a rule renders besides `network::STANDARD_ATTRS` (what
/// filters and sort keys may name).
pub const ATTRS: &[&str] = &[
    "admin_state_up",
    "provisioning_status",
    "operating_status",
    "type",
    "compare_type",
    "key",
    "value",
    "invert",
    "tags",
];

/// Octavia's 409 `TooManyL7RulesOnL7Policy`.
pub fn too_many(policy_id: &str) -> ApiError {
    ApiError::conflict(
        "TooManyL7RulesOnL7Policy",
        format!("Too many rules on L7 policy {policy_id}"),
    )
}

/// Octavia's 400 `L7RuleValidation`.
fn invalid_rule(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("Error parsing L7Rule: {e}"))
}

/// A `key` or `value`: at most 255 characters, no CR or LF (the pattern
/// `^[^\r\n]*$` of Octavia's rule types).
fn text(a: &mut Attrs<'_>, key: &str) -> Result<Option<Option<String>>, ApiError> {
    let v = a.nullable_string(key, 255)?;
    if let Some(Some(s)) = &v {
        if s.contains(['\r', '\n']) {
            return Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute {key}. Value: '{}'. Value should match the pattern ^[^\\r\\n]*$",
                s.escape_debug()
            )));
        }
    }
    Ok(v)
}

/// Octavia's `validate.l7rule_data`, and the `SSL_*` refusal.
pub fn check(r: &L7Rule) -> Result<(), ApiError> {
    use L7CompareType as C;
    use L7RuleType as T;
    if matches!(
        r.kind,
        T::SslConnHasCert | T::SslVerifyResult | T::SslDnField
    ) {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute type. Value: '{t}'. L7 rule type {t} is not supported: Strato listeners do not authenticate clients by certificate (HOST_NAME, PATH, FILE_TYPE, HEADER, COOKIE are supported).",
            t = r.kind.as_str()
        )));
    }
    let regex = |v: &str| {
        l7check::regex(v)
            .map_err(|e| invalid_rule(format!("Unable to parse regular expression: {e}")))
    };
    let chars = |ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(invalid_rule(format!("Invalid characters in {what}")))
        }
    };
    let bad_compare = || invalid_rule("Invalid L7 Rule: invalid comparison type for rule type");
    match r.kind {
        T::Header | T::Cookie => {
            let key = r
                .key
                .as_deref()
                .filter(|k| !k.is_empty())
                .ok_or_else(|| invalid_rule("Invalid L7 Rule: L7 rule type requires a key"))?;
            chars(l7check::header_name(key), "key")?;
            match r.compare_type {
                C::Regex => regex(&r.value),
                _ if r.kind == T::Header => chars(l7check::header_value(&r.value), "header value"),
                _ => chars(l7check::cookie_value(&r.value), "cookie value"),
            }
        }
        T::HostName | T::Path => match r.compare_type {
            C::Regex => regex(&r.value),
            _ => chars(l7check::header_value(&r.value), "comparison value"),
        },
        T::FileType => match r.compare_type {
            C::Regex => regex(&r.value),
            C::EqualTo => chars(l7check::header_value(&r.value), "comparison value"),
            _ => Err(bad_compare()),
        },
        T::SslConnHasCert | T::SslVerifyResult | T::SslDnField => Err(bad_compare()),
    }
}

/// A new rule of `p` from `a` (`a` finished here), validated.
pub fn parse_new(mut a: Attrs<'_>, p: &L7Policy, own_body: bool) -> Result<L7Rule, ApiError> {
    let kind = wire(&mut a, "type", L7RuleType::ALL, L7RuleType::as_str)?
        .ok_or_else(|| mandatory("type"))?;
    let compare_type = wire(
        &mut a,
        "compare_type",
        L7CompareType::ALL,
        L7CompareType::as_str,
    )?
    .ok_or_else(|| mandatory("compare_type"))?;
    let key = text(&mut a, "key")?.flatten();
    let value = text(&mut a, "value")?
        .flatten()
        .ok_or_else(|| mandatory("value"))?;
    let invert = a.boolean("invert")?.unwrap_or(false);
    let admin_state_up = a.boolean("admin_state_up")?.unwrap_or(true);
    let tags = l7policies::tags(&mut a)?.unwrap_or_default();
    if own_body {
        for k in ["project_id", "tenant_id"] {
            if let Some(v) = a.string(k, 255)? {
                if v != p.meta.project_id {
                    return Err(ApiError::bad_request(format!(
                        "{k} {v} is not the project of L7 policy {} ({}).",
                        p.meta.id, p.meta.project_id
                    )));
                }
            }
        }
    }
    a.finish()?;
    let r = L7Rule {
        meta: new_meta(p.meta.project_id.clone(), None, None),
        l7policy_id: p.meta.id.clone(),
        kind,
        compare_type,
        key,
        value,
        invert,
        admin_state_up,
        tags,
        provisioning_status: ProvisioningStatus::PendingCreate,
    };
    check(&r)?;
    Ok(r)
}

pub fn create(state: &State, auth: &Auth, policy_id: &str, body: &Value) -> Made<L7Rule> {
    require_write(auth)?;
    let p = super::rules_policy(state, auth, policy_id)?;
    let l = listener(state, auth, &p.listener_id)?;
    let lb = load_balancer(state, auth, &l.loadbalancer_id)?;
    let r = parse_new(Attrs::from_body(body, "rule")?, p, true)?;
    if policy_rules(state, policy_id).count() >= MAX_PER_POLICY {
        return Err(too_many(policy_id));
    }
    quotas::check(state, &r.meta.project_id, Kind::L7Rule, 1)?;
    check_mutable(lb)?;
    tracing::info!(l7rule = %r.meta.id, l7policy = policy_id, kind = r.kind.as_str(), "L7 rule created");
    created(state, r, vec![])
}

pub fn update(state: &State, auth: &Auth, policy_id: &str, id: &str, body: &Value) -> Made<L7Rule> {
    let mut r = writable(state, auth, || l7rule(state, auth, policy_id, id))?;
    update_attrs(body, "rule", &read_only(&["l7policy_id"]), |a| {
        if let Some(v) = wire(a, "type", L7RuleType::ALL, L7RuleType::as_str)? {
            r.kind = v;
        }
        if let Some(v) = wire(a, "compare_type", L7CompareType::ALL, L7CompareType::as_str)? {
            r.compare_type = v;
        }
        if let Some(v) = text(a, "key")? {
            r.key = v;
        }
        match text(a, "value")? {
            Some(Some(v)) => r.value = v,
            Some(None) => return Err(mandatory("value")),
            None => {}
        }
        // Octavia: a null `invert` is false.
        if a.is_null("invert") {
            a.raw("invert");
            r.invert = false;
        } else if let Some(v) = a.boolean("invert")? {
            r.invert = v;
        }
        if let Some(v) = a.boolean("admin_state_up")? {
            r.admin_state_up = v;
        }
        if let Some(v) = l7policies::tags(a)? {
            r.tags = v;
        }
        Ok(())
    })?;
    check(&r)?;
    updated(state, r, vec![])
}

pub fn delete(state: &State, auth: &Auth, policy_id: &str, id: &str) -> Made<()> {
    require_write(auth)?;
    let r = l7rule(state, auth, policy_id, id)?;
    use super::Provisioned as _;
    check_mutable(r.load_balancer(state, auth)?)?;
    let mut changes = vec![Change::Delete(Kind::L7Rule, id.to_owned())];
    changes.extend(r.parent(state).and_then(|lb| parent_pending(state, &lb)));
    tracing::info!(l7rule = id, "L7 rule deleted");
    Ok((changes, ()))
}

pub fn render(r: &L7Rule) -> Map<String, Value> {
    let mut o = render_base(
        r,
        r.admin_state_up,
        l7policies::operating_status(r.admin_state_up),
    );
    o.remove("name");
    o.remove("description");
    o.insert("tags".into(), json!(r.tags));
    o.insert("type".into(), r.kind.as_str().into());
    o.insert("compare_type".into(), r.compare_type.as_str().into());
    o.insert("key".into(), json!(r.key));
    o.insert("value".into(), r.value.clone().into());
    o.insert("invert".into(), r.invert.into());
    o
}
