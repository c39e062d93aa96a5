//! The controller's reconcile loops: work that follows observed state (the
//! agents' reports) rather than a request, each a named task the binary
//! spawns once. They change desired state only through `Core::mutate`,
//! like a request would.
//!
//! - [`gateway_failover`]: a gateway host that stops reporting is marked
//!   unavailable, so its routers' SNAT and the VMs' way out move.
//! - [`lb_provisioning`]: load-balancing resources become `ACTIVE` once
//!   every reporting host has realised them.
//! - [`l7_instances`]: L7 load balancers' instances are placed, replaced
//!   when they fail and drained when no longer wanted
//!   (`lbaas::amphorae::plan`).

use std::{sync::Arc, time::Duration};

use crate::app::App;

/// Watches the gateway hosts' liveness: a gateway whose agent stops
/// reporting is marked unavailable (a durable change, so the compiler moves
/// the routers' SNAT and the VMs' way out to the other gateways); its next
/// report marks it available again (see the report handler).
pub async fn gateway_failover(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let down: Vec<crate::model::HostRecord> = app
            .core
            .read()
            .hosts
            .values()
            .filter(|h| h.gateway && h.available && !app.hosts.is_up(&h.name))
            .cloned()
            .collect();
        for mut h in down {
            h.available = false;
            let name = h.name.clone();
            let r = app.core.mutate(|s| {
                // Still the same record, still down: mark it.
                let changes = match s.hosts.get(&name) {
                    Some(cur) if cur.available && !app.hosts.is_up(&name) => {
                        vec![crate::model::Change::Put(crate::model::Object::Host(
                            h.clone(),
                        ))]
                    }
                    _ => vec![],
                };
                Ok((changes, ()))
            });
            match r {
                Ok(()) => {
                    tracing::warn!(host = %name, "gateway host stopped reporting; marked unavailable")
                }
                Err(e) => {
                    tracing::warn!(host = %name, error = %e.message, "cannot mark a gateway host unavailable")
                }
            }
        }
    }
}

/// Moves load balancing resources from `PENDING_CREATE` / `PENDING_UPDATE`
/// to `ACTIVE` once every host that reports has realised its latest
/// configuration (so whatever carried them is programmed everywhere it
/// matters). Checked every 200 ms while something is pending.
pub async fn lb_provisioning(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let pending = crate::lbaas::pending_ids(&app.core.read());
        if pending.is_empty() {
            continue;
        }
        let hosts = app.hosts.realised();
        let caught_up = !hosts.is_empty()
            && hosts
                .iter()
                .all(|(h, r)| app.core.host_update(h, *r, false).is_none());
        if !caught_up {
            continue;
        }
        let r = app.core.mutate(|s| {
            Ok((
                crate::lbaas::mark_active(s, pending.iter().map(String::as_str)),
                (),
            ))
        });
        if let Err(e) = r {
            tracing::warn!(error = %e.message, "cannot mark load balancers active");
        }
    }
}

/// Keeps the L7 instances where the load balancers need them, as many as
/// their load asks for (see `lbaas::amphorae`), once a second. It starts after the hosts had time
/// to report to a freshly started controller (before that every host looks
/// down, and every instance would be failed).
pub async fn l7_instances(app: Arc<App>) {
    tokio::time::sleep(crate::hosts::HOST_LIVENESS * 2).await;
    let mut scaler = crate::lbaas::amphorae::Scaler::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = crate::model::now_unix();
        {
            let s = app.core.read();
            app.lb_stats.retain_loads(|id| s.amphorae.contains_key(id));
            scaler.update(&s, &|id| app.lb_stats.utilisation(id), now);
        }
        let r = app.core.mutate(|s| {
            Ok((
                crate::lbaas::amphorae::plan(
                    s,
                    &|h| app.hosts.is_up(h),
                    &|a| {
                        app.lb_health.latest(&a.meta.id) == Some(true)
                            && app.hosts.port_active(&a.host, &a.port_id)
                    },
                    &|lb, zone| scaler.want(lb, zone),
                    now,
                ),
                (),
            ))
        });
        if let Err(e) = r {
            tracing::warn!(error = %e.message, "cannot reconcile the L7 instances");
        }
        // Members whose checks ran on hosts that are down: nothing vouches
        // for them, so they take no new requests until a host reports
        // them up again.
        let unchecked = app.lb_health.forget_hosts(|h| !app.hosts.is_up(h));
        if !unchecked.is_empty() {
            let r = app.core.mutate(|s| {
                let changes = crate::lbaas::health::unchecked_down(s, &unchecked);
                for c in &changes {
                    if let crate::model::Change::Put(crate::model::Object::Member(m)) = c {
                        tracing::warn!(member = %m.meta.id, "no live host checks the member: down");
                    }
                }
                Ok((changes, ()))
            });
            if let Err(e) = r {
                tracing::warn!(error = %e.message, "cannot mark unchecked members down");
            }
        }
    }
}
