//! The pure compilation of a load balancer's HTTP and TERMINATED_HTTPS
//! listeners into what one L7 proxy instance runs
//! ([`strato_proto::l7::L7Config`]). The instance plumbing fills in
//! `instance_id` and `address` and splits `connection_limit` between the
//! instances; this module reads the state and nothing else (certificates
//! come through the caller's `certs`), never writes, never renders HTTP.
//!
//! What goes in, as Octavia's amphora driver builds its HAProxy
//! configuration: listeners that are administratively up (none when the
//! load balancer is down); their enabled policies in `position` order,
//! each with its enabled rules, leaving out policies with no enabled rule
//! and `REDIRECT_TO_POOL` policies whose pool is down; the default pools
//! and redirect pools they name, with every member in its state (as the
//! L4 compiler derives it: `lbaas::member_state`), session persistence,
//! the listener's timeouts, inserted headers (a header whose value is
//! `true` in any case), allowed CIDRs, and for TERMINATED_HTTPS its TLS
//! (certificates resolved through `certs`; without a default certificate
//! the first SNI certificate serves by default).

use std::collections::BTreeSet;

use strato_proto::l7::{
    InsertHeaders, L7Certificate, L7Config, L7Listener, L7Member, L7Persistence, L7Policy, L7Pool,
    L7Rule, L7Tls,
};

use super::{
    listener_policies, member_state, members::monitored, policy_rules, pool_members, pool_monitor,
};
use crate::{
    error::ApiError,
    model::{L7Action, LbProtocol, Listener, PersistenceType, Pool},
    state::State,
};

/// Resolves a certificate reference as a project sees it:
/// `certs(project_id, reference)`.
pub type Certs<'a> = &'a dyn Fn(&str, &str) -> Result<L7Certificate, ApiError>;

/// The configuration an instance of load balancer `lb_id` runs: `None`
/// when the load balancer does not exist or has no HTTP or
/// TERMINATED_HTTPS listener (it needs no instance). An error of `certs`
/// is returned as is (the caller decides what a listener whose
/// certificate cannot be read does: nothing is half-compiled).
pub fn l7_config(
    state: &State,
    lb_id: &str,
    certs: Certs<'_>,
) -> Result<Option<L7Config>, ApiError> {
    let Some(lb) = state.load_balancers.get(lb_id) else {
        return Ok(None);
    };
    let l7: Vec<&Listener> = state
        .listeners
        .values()
        .filter(|l| l.loadbalancer_id == lb_id)
        .filter(|l| matches!(l.protocol, LbProtocol::Http | LbProtocol::TerminatedHttps))
        .collect();
    if l7.is_empty() {
        return Ok(None);
    }
    let mut pools = BTreeSet::new();
    let mut listeners = Vec::new();
    for l in l7
        .into_iter()
        .filter(|l| l.admin_state_up && lb.admin_state_up)
    {
        let c = listener(state, l, certs)?;
        pools.extend(c.default_pool_id.clone());
        pools.extend(c.policies.iter().filter_map(|p| p.redirect_pool_id.clone()));
        listeners.push(c);
    }
    listeners.sort_by(|a, b| a.id.cmp(&b.id));
    let pools = pools
        .iter()
        .filter_map(|id| state.pools.get(id))
        .map(|p| pool(state, p))
        .collect();
    Ok(Some(L7Config {
        instance_id: String::new(),
        loadbalancer_id: lb_id.to_owned(),
        address: String::new(),
        listeners,
        pools,
    }))
}

/// A pool that takes requests (exists and is administratively up).
fn usable<'s>(state: &'s State, id: Option<&str>) -> Option<&'s Pool> {
    id.and_then(|id| state.pools.get(id))
        .filter(|p| p.admin_state_up)
}

fn listener(state: &State, l: &Listener, certs: Certs<'_>) -> Result<L7Listener, ApiError> {
    let on = |h: &str| {
        l.l7.insert_headers
            .get(h)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    };
    let tls = if l.protocol == LbProtocol::TerminatedHttps {
        let project = &l.meta.project_id;
        let mut refs: Vec<&str> =
            l.l7.default_tls_container_ref
                .iter()
                .map(String::as_str)
                .collect();
        refs.extend(l.l7.sni_container_refs.iter().map(String::as_str));
        let mut resolved = refs
            .iter()
            .map(|r| certs(project, r))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter();
        let default_certificate = resolved.next().ok_or_else(|| {
            ApiError::internal(format!("listener {} has no certificate", l.meta.id))
        })?;
        let sni_certificates = if l.l7.default_tls_container_ref.is_some() {
            resolved.collect()
        } else {
            // The first SNI certificate also serves by default.
            std::iter::once(default_certificate.clone())
                .chain(resolved)
                .collect()
        };
        Some(L7Tls {
            default_certificate,
            sni_certificates,
            versions: l.l7.tls_versions.clone().unwrap_or_default(),
            alpn_protocols: l.l7.alpn_protocols.clone().unwrap_or_default(),
        })
    } else {
        None
    };
    let policies = listener_policies(state, &l.meta.id)
        .into_iter()
        .filter(|p| p.admin_state_up)
        .filter(|p| {
            p.action != L7Action::RedirectToPool
                || usable(state, p.redirect_pool_id.as_deref()).is_some()
        })
        .filter_map(|p| {
            let mut rules: Vec<L7Rule> = policy_rules(state, &p.meta.id)
                .filter(|r| r.admin_state_up)
                .map(|r| L7Rule {
                    id: r.meta.id.clone(),
                    kind: r.kind.as_str().to_owned(),
                    compare_type: r.compare_type.as_str().to_owned(),
                    key: r.key.clone().filter(|_| {
                        matches!(
                            r.kind,
                            crate::model::L7RuleType::Header | crate::model::L7RuleType::Cookie
                        )
                    }),
                    value: r.value.clone(),
                    invert: r.invert,
                })
                .collect();
            rules.sort_by(|a, b| a.id.cmp(&b.id));
            (!rules.is_empty()).then(|| L7Policy {
                id: p.meta.id.clone(),
                position: p.position,
                action: p.action.as_str().to_owned(),
                redirect_pool_id: p.redirect_pool_id.clone(),
                redirect_url: p.redirect_url.clone(),
                redirect_prefix: p.redirect_prefix.clone(),
                redirect_http_code: p.redirect_http_code,
                rules,
            })
        })
        .collect();
    Ok(L7Listener {
        id: l.meta.id.clone(),
        protocol: l.protocol.as_str().to_owned(),
        protocol_port: l.protocol_port,
        connection_limit: l.connection_limit,
        timeout_client_data_ms: l.timeout_client_data,
        timeout_member_connect_ms: l.timeout_member_connect,
        timeout_member_data_ms: l.timeout_member_data,
        insert_headers: InsertHeaders {
            x_forwarded_for: on("X-Forwarded-For"),
            x_forwarded_port: on("X-Forwarded-Port"),
            x_forwarded_proto: on("X-Forwarded-Proto"),
        },
        tls,
        default_pool_id: usable(state, l.default_pool_id.as_deref()).map(|p| p.meta.id.clone()),
        policies,
        allowed_cidrs: l.l7.allowed_cidrs.clone(),
    })
}

fn pool(state: &State, p: &Pool) -> L7Pool {
    let watched = monitored(pool_monitor(state, &p.meta.id));
    let mut members: Vec<L7Member> = pool_members(state, &p.meta.id)
        .map(|m| L7Member {
            id: m.meta.id.clone(),
            address: m.address.clone(),
            protocol_port: m.protocol_port,
            weight: m.weight,
            backup: m.backup,
            state: member_state(m, watched).to_owned(),
        })
        .collect();
    members.sort_by(|a, b| a.id.cmp(&b.id));
    L7Pool {
        id: p.meta.id.clone(),
        lb_algorithm: p.lb_algorithm.as_str().to_owned(),
        session_persistence: p.session_persistence.as_ref().map(|s| L7Persistence {
            kind: s.kind.as_str().to_owned(),
            cookie_name: s
                .cookie_name
                .clone()
                .filter(|_| s.kind == PersistenceType::AppCookie),
            timeout_s: s.persistence_timeout,
        }),
        members,
    }
}
