//! L7 policies: on an HTTP or TERMINATED_HTTPS listener, an action
//! (`REJECT`, `REDIRECT_TO_URL`, `REDIRECT_PREFIX`, `REDIRECT_TO_POOL`)
//! taken when all the policy's rules match a request. A listener's
//! policies are numbered 1..=n (`position`, first match wins), as Octavia
//! numbers them: a policy created or moved to a position shifts the ones
//! at and after it, a position past the end means last, a deleted
//! policy's successors move up. The action and its target follow
//! Octavia's `sanitize_l7policy_api_args`: giving `redirect_pool_id`,
//! `redirect_url` or `redirect_prefix` sets the action, an action clears
//! the targets that are not its own. A redirect pool is a pool of the
//! same load balancer whose protocol the listener may use; a pool
//! redirected to cannot be deleted (409), a listener takes its policies
//! and their rules when deleted.

use serde_json::{json, Map, Value};

use super::{
    check_mutable, child_owner, created, id_refs, l7check, l7policy, l7rules, listener,
    listener_policies, load_balancer, mandatory, parent_pending, policy_rules, quotas, read_only,
    render_base, updated, wire, writable, PROVIDER,
};
use crate::{
    auth::Auth,
    error::ApiError,
    model::{Change, Kind, L7Action, L7Policy, LbProtocol, Listener, ProvisioningStatus},
    network::{new_meta, require_write, update_attrs, Attrs, Made},
    state::Resource as _,
    state::State,
};

/// Octavia's `MIN_POLICY_POSITION`, `MAX_POLICY_POSITION` (the default:
/// last).
pub const MAX_POSITION: i64 = 2_147_483_647;
/// Octavia's `SUPPORTED_L7POLICY_REDIRECT_HTTP_CODES` and default.
pub const REDIRECT_CODES: &[u16] = &[301, 302, 303, 307, 308];
pub const DEFAULT_REDIRECT_CODE: u16 = 302;

/// Attributes a policy renders besides `network::STANDARD_ATTRS` (what
/// filters and sort keys may name).
pub const ATTRS: &[&str] = &[
    "admin_state_up",
    "provisioning_status",
    "operating_status",
    "listener_id",
    "action",
    "position",
    "redirect_pool_id",
    "redirect_url",
    "redirect_prefix",
    "redirect_http_code",
    "rules",
    "tags",
];

/// Octavia's 400 `InvalidL7PolicyArgs`.
fn args(msg: &str) -> ApiError {
    ApiError::bad_request(format!("Invalid L7 Policy arguments: {msg}"))
}

/// Octavia's answer (through the provider) for a listener that cannot
/// have policies: 501.
fn unsupported_listener(l: &Listener) -> ApiError {
    ApiError::new(
        501,
        "ProviderUnsupportedOptionError",
        format!(
            "Provider '{PROVIDER}' does not support a requested option: {} protocol listeners do not support L7 policies",
            l.protocol.as_str()
        ),
    )
}

/// Tags: a list of strings of at most 255 characters.
pub fn tags(a: &mut Attrs<'_>) -> Result<Option<Vec<String>>, ApiError> {
    let Some(v) = a.strings("tags")? else {
        return Ok(None);
    };
    if let Some(t) = v.iter().find(|t| t.chars().count() > 255) {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute tags. Value: '{t}'. Value should have a maximum character requirement of 255"
        )));
    }
    Ok(Some(v))
}

/// The action and targets a request gives (`Some(None)`: null).
#[derive(Default)]
struct Target {
    action: Option<L7Action>,
    pool: Option<Option<String>>,
    url: Option<Option<String>>,
    prefix: Option<Option<String>>,
    code: Option<Option<u16>>,
}

fn present(x: &Option<Option<String>>) -> bool {
    matches!(x, Some(Some(s)) if !s.is_empty())
}

/// A URL attribute (Octavia's `URLType`).
fn url_attr(a: &mut Attrs<'_>, key: &str) -> Result<Option<Option<String>>, ApiError> {
    let v = a.nullable_string(key, 2048)?;
    if let Some(Some(u)) = &v {
        if !l7check::url(u) {
            return Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute {key}. Value: '{u}'. Value must be a valid URL string"
            )));
        }
    }
    Ok(v)
}

fn read_target(a: &mut Attrs<'_>) -> Result<Target, ApiError> {
    let mut t = Target {
        action: wire(a, "action", L7Action::ALL, L7Action::as_str)?,
        pool: a.nullable_string("redirect_pool_id", 36)?,
        url: url_attr(a, "redirect_url")?,
        prefix: url_attr(a, "redirect_prefix")?,
        code: None,
    };
    if a.is_null("redirect_http_code") {
        a.raw("redirect_http_code");
        t.code = Some(None);
    } else if let Some(v) = a.raw("redirect_http_code") {
        match v.as_u64().map(|c| c as u16).filter(|c| REDIRECT_CODES.contains(c)) {
            Some(c) => t.code = Some(Some(c)),
            None => {
                return Err(ApiError::bad_request(format!(
                    "Invalid input for field/attribute redirect_http_code. Value: '{v}'. Value should be one of: 301, 302, 303, 307, 308"
                )))
            }
        }
    }
    Ok(t)
}

/// Octavia's `sanitize_l7policy_api_args`: the action a request's targets
/// imply, and the targets its action clears.
fn sanitize(t: &mut Target, create: bool) -> Result<(), ApiError> {
    match t.action {
        Some(L7Action::Reject) => {
            t.url = Some(None);
            t.pool = Some(None);
        }
        Some(L7Action::RedirectToUrl) => {
            if !present(&t.url) {
                return Err(args("redirect_url must not be None"));
            }
            t.pool = Some(None);
        }
        Some(L7Action::RedirectToPool) => {
            if !present(&t.pool) {
                return Err(args("redirect_pool_id or redirect_pool must not be None"));
            }
            t.url = Some(None);
        }
        Some(L7Action::RedirectPrefix) if !present(&t.prefix) => {
            return Err(args("redirect_prefix must not be None"));
        }
        Some(L7Action::RedirectPrefix) | None => {}
    }
    if present(&t.pool) && (present(&t.url) || present(&t.prefix)) {
        return Err(args(
            "Cannot specify redirect_pool_id and redirect_url or redirect_prefix at the same time",
        ));
    }
    if present(&t.pool) {
        t.action = Some(L7Action::RedirectToPool);
        t.url = Some(None);
        t.prefix = Some(None);
        t.code = Some(None);
    }
    for (is_url, action) in [
        (true, L7Action::RedirectToUrl),
        (false, L7Action::RedirectPrefix),
    ] {
        let given = if is_url { &t.url } else { &t.prefix };
        if present(given) {
            t.action = Some(action);
            t.pool = Some(None);
            if is_url {
                t.prefix = Some(None);
            } else {
                t.url = Some(None);
            }
            if !matches!(t.code, Some(Some(_))) {
                t.code = Some(Some(DEFAULT_REDIRECT_CODE));
            }
        }
    }
    if create && t.action.is_none() {
        return Err(ApiError::bad_request(
            "Invalid L7 Policy action specified: None",
        ));
    }
    Ok(())
}

/// Applies a sanitised request to `p`: its targets, then the clearing its
/// action implies (Octavia's repository update), then the invariants.
fn apply_target(p: &mut L7Policy, t: Target) -> Result<(), ApiError> {
    if let Some(v) = t.pool {
        p.redirect_pool_id = v;
    }
    if let Some(v) = t.url {
        p.redirect_url = v;
    }
    if let Some(v) = t.prefix {
        p.redirect_prefix = v;
    }
    if let Some(v) = t.code {
        p.redirect_http_code = v;
    }
    if let Some(a) = t.action {
        p.action = a;
    }
    match p.action {
        L7Action::Reject => {
            p.redirect_url = None;
            p.redirect_pool_id = None;
            p.redirect_prefix = None;
            p.redirect_http_code = None;
        }
        L7Action::RedirectToUrl => {
            p.redirect_pool_id = None;
            p.redirect_prefix = None;
        }
        L7Action::RedirectToPool => {
            p.redirect_url = None;
            p.redirect_prefix = None;
            p.redirect_http_code = None;
        }
        L7Action::RedirectPrefix => {
            p.redirect_url = None;
            p.redirect_pool_id = None;
        }
    }
    match p.action {
        L7Action::RedirectToUrl if p.redirect_url.is_none() => {
            return Err(args("redirect_url must not be None"))
        }
        L7Action::RedirectPrefix if p.redirect_prefix.is_none() => {
            return Err(args("redirect_prefix must not be None"))
        }
        L7Action::RedirectToPool if p.redirect_pool_id.is_none() => {
            return Err(args("redirect_pool_id or redirect_pool must not be None"))
        }
        L7Action::RedirectToUrl | L7Action::RedirectPrefix if p.redirect_http_code.is_none() => {
            p.redirect_http_code = Some(DEFAULT_REDIRECT_CODE);
        }
        _ => {}
    }
    Ok(())
}

/// The redirect pool must be a pool of the listener's load balancer (404
/// otherwise, as Octavia's repository answers) that the listener's
/// protocol may use (400).
fn check_pool(state: &State, auth: &Auth, l: &Listener, pool_id: &str) -> Result<(), ApiError> {
    let p = super::pool(state, auth, pool_id)?;
    if p.loadbalancer_id != l.loadbalancer_id {
        return Err(super::not_found("Pool", pool_id));
    }
    if !l7check::pool_protocol_allowed(l.protocol, p.protocol) {
        return Err(l7check::protocol_mismatch(p.protocol, l.protocol));
    }
    Ok(())
}

/// Puts `moving` at `want` (1-based; past the end: last) among its
/// listener's policies and renumbers them 1..=n: the changes for the
/// others whose position moved (`moving` gets its position, unstored).
fn place(state: &State, moving: &mut L7Policy, want: i64) -> Vec<Change> {
    let mut order: Vec<&L7Policy> = listener_policies(state, &moving.listener_id)
        .into_iter()
        .filter(|p| p.meta.id != moving.meta.id)
        .collect();
    let at = ((want.max(1) - 1) as usize).min(order.len());
    let me = moving.clone();
    order.insert(at, &me);
    let mut changes = Vec::new();
    for (i, p) in order.iter().enumerate() {
        let pos = i as u32 + 1;
        if p.meta.id == moving.meta.id {
            moving.position = pos;
        } else if p.position != pos {
            let mut p = (*p).clone();
            p.position = pos;
            changes.push(p.put());
        }
    }
    changes
}

/// The changes that renumber a listener's policies once `gone` left.
fn close_gap(state: &State, listener_id: &str, gone: &str) -> Vec<Change> {
    listener_policies(state, listener_id)
        .into_iter()
        .filter(|p| p.meta.id != gone)
        .enumerate()
        .filter(|(i, p)| p.position != *i as u32 + 1)
        .map(|(i, p)| {
            let mut p = p.clone();
            p.position = i as u32 + 1;
            p.put()
        })
        .collect()
}

pub fn create(state: &State, auth: &Auth, body: &Value) -> Made<L7Policy> {
    require_write(auth)?;
    let mut a = Attrs::from_body(body, "l7policy")?;
    let listener_id = a
        .string("listener_id", 36)?
        .ok_or_else(|| mandatory("listener_id"))?;
    if !a.has("action") {
        return Err(mandatory("action"));
    }
    let mut target = read_target(&mut a)?;
    let name = a.nullable_string("name", 255)?.flatten();
    let description = a.nullable_string("description", 255)?.flatten();
    let admin_state_up = a.boolean("admin_state_up")?.unwrap_or(true);
    let position = a
        .integer("position", 1, MAX_POSITION)?
        .unwrap_or(MAX_POSITION);
    let tags = tags(&mut a)?.unwrap_or_default();
    let rules = a.list("rules")?.cloned().unwrap_or_default();
    let l = listener(state, auth, &listener_id)?;
    let lb = load_balancer(state, auth, &l.loadbalancer_id)?;
    let project = child_owner(&mut a, lb)?;
    a.finish()?;
    if let Some(Some(pid)) = &target.pool {
        check_pool(state, auth, l, pid)?;
    }
    if !matches!(l.protocol, LbProtocol::Http | LbProtocol::TerminatedHttps) {
        return Err(unsupported_listener(l));
    }
    quotas::check(state, &project, Kind::L7Policy, 1)?;
    sanitize(&mut target, true)?;
    let mut p = L7Policy {
        meta: new_meta(project.clone(), name, description),
        listener_id: listener_id.clone(),
        action: L7Action::Reject,
        position: 0,
        redirect_pool_id: None,
        redirect_url: None,
        redirect_prefix: None,
        redirect_http_code: None,
        admin_state_up,
        tags,
        provisioning_status: ProvisioningStatus::PendingCreate,
    };
    apply_target(&mut p, target)?;
    check_mutable(lb)?;
    let mut changes = place(state, &mut p, position);
    // Rules given with the policy (Octavia's `rules` of a POST): all
    // valid, at most `l7rules::MAX_PER_POLICY`, within the quota.
    if rules.len() > l7rules::MAX_PER_POLICY {
        return Err(l7rules::too_many(&p.meta.id));
    }
    quotas::check(state, &project, Kind::L7Rule, rules.len() as i64)?;
    for r in &rules {
        let o = r.as_object().ok_or_else(|| {
            ApiError::bad_request(format!(
                "Invalid input for field/attribute rules. Value: '{r}'. Value should be a list of rules"
            ))
        })?;
        let rule = l7rules::parse_new(Attrs::from_map(o), &p, false)?;
        changes.push(rule.put());
    }
    tracing::info!(l7policy = %p.meta.id, listener = %listener_id, action = p.action.as_str(), position = p.position, "L7 policy created");
    created(state, p, changes)
}

pub fn update(state: &State, auth: &Auth, id: &str, body: &Value) -> Made<L7Policy> {
    let mut p = writable(state, auth, || l7policy(state, auth, id))?;
    let specific = ["listener_id", "rules"];
    let (mut target, position) = update_attrs(body, "l7policy", &read_only(&specific), |a| {
        a.rename_nullable(&mut p.meta, true)?;
        if let Some(v) = a.boolean("admin_state_up")? {
            p.admin_state_up = v;
        }
        if let Some(v) = tags(a)? {
            p.tags = v;
        }
        let position = a.integer("position", 1, MAX_POSITION)?;
        Ok((read_target(a)?, position))
    })?;
    sanitize(&mut target, false)?;
    let l = listener(state, auth, &p.listener_id)?;
    if let Some(Some(pid)) = &target.pool {
        check_pool(state, auth, l, pid)?;
    }
    apply_target(&mut p, target)?;
    let changes = match position {
        Some(pos) if pos != p.position as i64 => place(state, &mut p, pos),
        _ => vec![],
    };
    updated(state, p, changes)
}

/// The changes that delete a policy and its rules (the others keep their
/// numbers: see [`delete`]).
fn removal(state: &State, p: &L7Policy) -> Vec<Change> {
    let mut changes: Vec<Change> = policy_rules(state, &p.meta.id)
        .map(|r| Change::Delete(Kind::L7Rule, r.meta.id.clone()))
        .collect();
    changes.push(Change::Delete(Kind::L7Policy, p.meta.id.clone()));
    changes
}

/// The changes that delete a listener's policies and their rules.
pub fn removal_of_listener(state: &State, listener_id: &str) -> Vec<Change> {
    listener_policies(state, listener_id)
        .into_iter()
        .flat_map(|p| removal(state, p))
        .collect()
}

/// The first policy redirecting to `pool_id`, if any.
pub fn redirecting_to<'s>(state: &'s State, pool_id: &str) -> Option<&'s L7Policy> {
    state
        .l7policies
        .values()
        .find(|p| p.redirect_pool_id.as_deref() == Some(pool_id))
}

pub fn delete(state: &State, auth: &Auth, id: &str) -> Made<()> {
    require_write(auth)?;
    let p = l7policy(state, auth, id)?;
    use super::Provisioned as _;
    check_mutable(p.load_balancer(state, auth)?)?;
    let mut changes = removal(state, p);
    changes.extend(close_gap(state, &p.listener_id, id));
    changes.extend(p.parent(state).and_then(|lb| parent_pending(state, &lb)));
    tracing::info!(l7policy = id, "L7 policy deleted");
    Ok((changes, ()))
}

/// Octavia's operating status of a policy or rule: ONLINE when enabled,
/// OFFLINE when not.
pub fn operating_status(admin_state_up: bool) -> &'static str {
    if admin_state_up {
        "ONLINE"
    } else {
        "OFFLINE"
    }
}

pub fn render(state: &State, p: &L7Policy) -> Map<String, Value> {
    let mut o = render_base(p, p.admin_state_up, operating_status(p.admin_state_up));
    o.insert("tags".into(), json!(p.tags));
    o.insert("listener_id".into(), p.listener_id.clone().into());
    o.insert("action".into(), p.action.as_str().into());
    o.insert("position".into(), p.position.into());
    o.insert("redirect_pool_id".into(), json!(p.redirect_pool_id));
    o.insert("redirect_url".into(), json!(p.redirect_url));
    o.insert("redirect_prefix".into(), json!(p.redirect_prefix));
    o.insert("redirect_http_code".into(), json!(p.redirect_http_code));
    o.insert(
        "rules".into(),
        id_refs(policy_rules(state, &p.meta.id).map(|r| r.meta.id.as_str())),
    );
    o
}
