//! L7 instances (Octavia's amphorae): where an L7 load balancer's
//! `strato-l7` processes run, and their life.
//!
//! A load balancer with an HTTP or TERMINATED_HTTPS listener gets at least
//! one instance in every availability zone that holds one of its members
//! (the zones of the members' ports' hosts; with none known, the load
//! balancer's own zone or the first zone with a compute host), each on a
//! compute host of that zone that reports, the least loaded first. An
//! instance is a port of the load balancing service's project in the VIP's
//! subnet, bound to its host (so the host's agent plugs and starts it like
//! a VM), and an [`Amphora`] record. The L4 tier balances the L7
//! listeners over the instances that are `READY`.
//!
//! [`plan`] is the reconcile step (`reconcile::l7_instances` runs it every
//! second): it places missing instances, marks those whose host stopped
//! reporting `ERROR`, replaces `ERROR` ones after [`REPLACE_AFTER_S`], and
//! drains (`PENDING_DELETE`, then deletes after [`DRAIN_S`]) those no
//! longer wanted, and makes `READY` those that serve with their port
//! realised. [`on_health`] takes a `READY` instance whose agent says it
//! stopped serving to `ERROR` at once.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::{
    auth::Auth,
    error::ApiError,
    model::{Amphora, AmphoraStatus, Change, Kind, LbProtocol, LoadBalancer, Object, Quota},
    network::{new_meta, ports},
    state::State,
};

/// The project that owns the instances' ports (tenants never see them;
/// its quotas are unlimited).
pub const SERVICE_PROJECT: &str = "strato-lb-service";

/// An `ERROR` instance is replaced (deleted, so a new one is placed) this
/// long after it failed: long enough to ride out an agent restart.
pub const REPLACE_AFTER_S: u64 = 10;

/// How long an instance being removed keeps running after the L4 tier
/// stopped sending it new connections, so what is in flight finishes.
pub const DRAIN_S: u64 = 30;

/// The `device_id` of an instance's port.
pub fn device_id(amphora_id: &str) -> String {
    format!("amphora-{amphora_id}")
}

/// Listener protocols served by L7 instances (HTTPS passthrough is
/// balanced at L4 like TCP).
pub fn is_l7(p: LbProtocol) -> bool {
    matches!(p, LbProtocol::Http | LbProtocol::TerminatedHttps)
}

/// Whether a load balancer needs L7 instances.
pub fn needs_instances(state: &State, lb_id: &str) -> bool {
    state
        .listeners
        .values()
        .any(|l| l.loadbalancer_id == lb_id && is_l7(l.protocol))
}

/// A load balancer's instances, by id.
pub fn of_lb<'s>(state: &'s State, lb_id: &'s str) -> impl Iterator<Item = &'s Amphora> + 's {
    state
        .amphorae
        .values()
        .filter(move |a| a.loadbalancer_id == lb_id)
}

/// The zones of a load balancer's members (their ports' hosts' zones).
fn member_zones(state: &State, lb: &LoadBalancer) -> BTreeSet<String> {
    let pools: BTreeSet<&str> = state
        .pools
        .values()
        .filter(|p| p.loadbalancer_id == lb.meta.id)
        .map(|p| p.meta.id.as_str())
        .collect();
    let addresses: BTreeSet<&str> = state
        .members
        .values()
        .filter(|m| pools.contains(m.pool_id.as_str()))
        .map(|m| m.address.as_str())
        .collect();
    state
        .ports
        .values()
        .filter(|p| !p.binding_host_id.is_empty() && p.device_owner != super::OWNER_OCTAVIA)
        .filter(|p| {
            p.fixed_ips
                .iter()
                .any(|f| addresses.contains(f.ip_address.as_str()))
        })
        .filter_map(|p| state.hosts.get(&p.binding_host_id))
        .filter(|h| !h.az.is_empty())
        .map(|h| h.az.clone())
        .collect()
}

/// Compute hosts (not gateways) that report, by zone.
fn compute_hosts<'s>(
    state: &'s State,
    up: &dyn Fn(&str) -> bool,
) -> BTreeMap<&'s str, Vec<&'s str>> {
    let mut out: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for h in state.hosts.values().filter(|h| !h.gateway && up(&h.name)) {
        out.entry(h.az.as_str()).or_default().push(h.name.as_str());
    }
    out
}

/// The zones a load balancer's instances go to.
fn wanted_zones(
    state: &State,
    lb: &LoadBalancer,
    hosts: &BTreeMap<&str, Vec<&str>>,
) -> BTreeSet<String> {
    let zones = member_zones(state, lb);
    if !zones.is_empty() {
        return zones;
    }
    if let Some(z) = lb
        .availability_zone
        .as_ref()
        .filter(|z| hosts.contains_key(z.as_str()))
    {
        return BTreeSet::from([z.clone()]);
    }
    hosts
        .keys()
        .next()
        .map(|z| BTreeSet::from([z.to_string()]))
        .unwrap_or_default()
}

/// The service's caller for the ports it makes.
fn service_auth() -> Auth {
    Auth {
        user_id: "octavia".into(),
        user_name: "octavia".into(),
        project_id: SERVICE_PROJECT.into(),
        project_name: SERVICE_PROJECT.into(),
        roles: vec![crate::auth::ADMIN.into()],
        expires_unix: u64::MAX,
    }
}

fn with_status(a: &Amphora, status: AmphoraStatus, now: u64) -> Change {
    let mut a = a.clone();
    a.status = status;
    a.status_since = now;
    a.meta.updated_at = crate::model::timestamp(now);
    a.meta.revision_number += 1;
    Change::Put(Object::Amphora(a))
}

/// Deleting an instance: the record and its port.
fn remove(state: &State, a: &Amphora) -> Vec<Change> {
    let mut v = vec![Change::Delete(Kind::Amphora, a.meta.id.clone())];
    if state.ports.contains_key(&a.port_id) {
        v.push(Change::Delete(Kind::Port, a.port_id.clone()));
    }
    v
}

/// Everything a load balancer's deletion removes of its instances (no
/// drain: its listeners go at the same time).
pub fn remove_all(state: &State, lb_id: &str) -> Vec<Change> {
    of_lb(state, lb_id).flat_map(|a| remove(state, a)).collect()
}

/// A new instance of `lb` on `host`: its port and record.
fn place(
    state: &State,
    lb: &LoadBalancer,
    host: &str,
    zone: &str,
    now: u64,
) -> Result<Vec<Change>, ApiError> {
    let meta = new_meta(lb.meta.project_id.clone(), None, None);
    let body = json!({"port": {
        "network_id": lb.vip_network_id,
        "fixed_ips": [{"subnet_id": lb.vip_subnet_id}],
        "name": format!("octavia-amphora-{}", meta.id),
        "device_owner": super::OWNER_OCTAVIA,
        "device_id": device_id(&meta.id),
        "project_id": SERVICE_PROJECT,
        "port_security_enabled": false,
        "security_groups": [],
        "binding:host_id": host,
    }});
    let (mut changes, port) = ports::create(state, &service_auth(), &body)?;
    let address = port
        .fixed_ips
        .first()
        .map(|f| f.ip_address.clone())
        .ok_or_else(|| {
            ApiError::conflict(
                "IpAddressGenerationFailure",
                "no address for an L7 instance",
            )
        })?;
    let a = Amphora {
        meta,
        loadbalancer_id: lb.meta.id.clone(),
        port_id: port.meta.id.clone(),
        address,
        host: host.to_owned(),
        availability_zone: zone.to_owned(),
        status: AmphoraStatus::Booting,
        status_since: now,
    };
    tracing::info!(amphora = %a.meta.id, loadbalancer = %lb.meta.id, host, zone, address = %a.address, "L7 instance placed");
    changes.push(Change::Put(Object::Amphora(a)));
    Ok(changes)
}

/// One reconcile step (see the module documentation): the changes that
/// move the instances towards what the load balancers need, given which
/// hosts report (`up`) and the time (`now`, Unix seconds). At most one
/// instance is placed per load balancer and step (so a failure costs one
/// port, and placements see each other's load).
pub fn plan(
    state: &State,
    up: &dyn Fn(&str) -> bool,
    serving: &dyn Fn(&Amphora) -> bool,
    want: &dyn Fn(&str, &str) -> usize,
    now: u64,
) -> Vec<Change> {
    let mut changes = Vec::new();
    if !state.quotas.contains_key(SERVICE_PROJECT)
        && state
            .load_balancers
            .keys()
            .any(|id| needs_instances(state, id))
    {
        // The service's ports are not limited; the quota must exist
        // before the ports are checked against it (next step).
        let mut q = Quota::default_for(SERVICE_PROJECT);
        for k in Kind::ALL {
            if let Some(v) = q.slot(k) {
                *v = -1;
            }
        }
        return vec![Change::Put(Object::Quota(q))];
    }
    // Instances of load balancers that are gone (their deletion removes
    // them, but a record must never outlive its load balancer).
    for a in state.amphorae.values() {
        if !state.load_balancers.contains_key(&a.loadbalancer_id) {
            changes.extend(remove(state, a));
        }
    }
    let hosts = compute_hosts(state, up);
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    for a in state.amphorae.values() {
        *load.entry(a.host.as_str()).or_default() += 1;
    }
    for lb in state.load_balancers.values() {
        let need = needs_instances(state, &lb.meta.id);
        let zones = if need {
            wanted_zones(state, lb, &hosts)
        } else {
            BTreeSet::new()
        };
        // Live instances per zone, oldest first: the first `want` stay.
        let mut live: BTreeMap<&str, usize> = BTreeMap::new();
        let mut failed_hosts: BTreeSet<&str> = BTreeSet::new();
        let mut lb_hosts: BTreeSet<&str> = BTreeSet::new();
        let mut mine: Vec<&Amphora> = of_lb(state, &lb.meta.id).collect();
        mine.sort_by(|a, b| {
            (&a.meta.created_at, &a.meta.id).cmp(&(&b.meta.created_at, &b.meta.id))
        });
        for a in mine {
            let since = now.saturating_sub(a.status_since);
            let zone = a.availability_zone.as_str();
            match a.status {
                AmphoraStatus::Booting | AmphoraStatus::Ready if !up(&a.host) => {
                    tracing::warn!(amphora = %a.meta.id, host = %a.host, "L7 instance's host stopped reporting");
                    changes.push(with_status(a, AmphoraStatus::Error, now));
                }
                AmphoraStatus::Booting | AmphoraStatus::Ready
                    if !zones.contains(zone)
                        || live.get(zone).copied().unwrap_or(0) >= want(&lb.meta.id, zone) =>
                {
                    // Not wanted (any more), or more than its zone needs
                    // (the older ones stay): drain it.
                    tracing::info!(amphora = %a.meta.id, host = %a.host, zone, "L7 instance not needed: draining");
                    changes.push(with_status(a, AmphoraStatus::PendingDelete, now));
                }
                AmphoraStatus::Booting | AmphoraStatus::Ready => {
                    *live.entry(zone).or_default() += 1;
                    lb_hosts.insert(a.host.as_str());
                    if a.status == AmphoraStatus::Booting && serving(a) {
                        tracing::info!(amphora = %a.meta.id, host = %a.host, "L7 instance READY");
                        changes.push(with_status(a, AmphoraStatus::Ready, now));
                    }
                }
                AmphoraStatus::Error if up(&a.host) && serving(a) && since < REPLACE_AFTER_S => {
                    // Back (its process restarted, its host reports again).
                    tracing::info!(amphora = %a.meta.id, host = %a.host, "L7 instance READY again");
                    changes.push(with_status(a, AmphoraStatus::Ready, now));
                    *live.entry(zone).or_default() += 1;
                    lb_hosts.insert(a.host.as_str());
                }
                AmphoraStatus::Error => {
                    failed_hosts.insert(a.host.as_str());
                    if since >= REPLACE_AFTER_S || !need {
                        tracing::info!(amphora = %a.meta.id, host = %a.host, "failed L7 instance removed");
                        changes.extend(remove(state, a));
                    }
                }
                AmphoraStatus::PendingDelete => {
                    if since >= DRAIN_S {
                        tracing::info!(amphora = %a.meta.id, host = %a.host, "drained L7 instance removed");
                        changes.extend(remove(state, a));
                    }
                }
            }
        }
        // One placement per step: the first zone with fewer live instances
        // than it needs.
        let Some(zone) = zones
            .iter()
            .find(|z| live.get(z.as_str()).copied().unwrap_or(0) < want(&lb.meta.id, z))
        else {
            continue;
        };
        let candidates = hosts.get(zone.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        // A host that failed this load balancer's instance last, or already
        // runs one of them, only when there is no other.
        let host = candidates
            .iter()
            .min_by_key(|h| {
                (
                    failed_hosts.contains(**h),
                    lb_hosts.contains(**h),
                    load.get(**h).copied().unwrap_or(0),
                )
            })
            .copied();
        let Some(host) = host else {
            tracing::warn!(loadbalancer = %lb.meta.id, zone = %zone, "no compute host that reports in this zone for an L7 instance");
            continue;
        };
        match place(state, lb, host, zone, now) {
            Ok(c) => {
                *load.entry(host).or_default() += 1;
                changes.extend(c);
                // Ports are allocated against `state`: a second placement
                // in this step could be given the same address.
                break;
            }
            Err(e) => {
                tracing::warn!(loadbalancer = %lb.meta.id, host, error = %e.message, "cannot place an L7 instance");
            }
        }
    }
    changes
}

/// Scaling: an instance's CPU use (cores, smoothed over its reports) is
/// the signal. It measures what limits an instance whatever the traffic
/// is made of (a TLS handshake costs far more than a keep-alive request,
/// an idle connection nearly nothing), which requests/s or connections
/// would not. A zone whose ready instances average above
/// [`SCALE_OUT_ABOVE`] for [`SCALE_OUT_AFTER_S`] gets one more (up to
/// [`MAX_PER_ZONE`]); below [`SCALE_IN_BELOW`] for [`SCALE_IN_AFTER_S`],
/// one fewer (never under one), drained like any removed instance. The
/// gap between the thresholds and the longer wait to scale in keep it
/// from flapping; one step at a time, and not while an instance of the
/// zone is still booting (its load is not in the average yet).
pub const SCALE_OUT_ABOVE: f64 = 0.6;
pub const SCALE_IN_BELOW: f64 = 0.15;
pub const SCALE_OUT_AFTER_S: u64 = 15;
pub const SCALE_IN_AFTER_S: u64 = 60;
pub const MAX_PER_ZONE: usize = 4;

/// How many instances each (load balancer, zone) needs, from their load.
#[derive(Debug, Default)]
pub struct Scaler {
    zones: BTreeMap<(String, String), ZoneScale>,
}

#[derive(Debug, Clone, Copy)]
struct ZoneScale {
    target: usize,
    above_since: Option<u64>,
    below_since: Option<u64>,
}

impl Scaler {
    /// The instances `zone` of `lb` needs now (1 unless load said more).
    pub fn want(&self, lb: &str, zone: &str) -> usize {
        self.zones
            .get(&(lb.to_owned(), zone.to_owned()))
            .map_or(1, |z| z.target)
    }

    /// Follows the load of the ready instances (`load`: an instance's CPU
    /// use in cores, when known) at `now` (Unix seconds).
    pub fn update(&mut self, state: &State, load: &dyn Fn(&str) -> Option<f64>, now: u64) {
        let mut seen = BTreeSet::new();
        let mut groups: BTreeMap<(String, String), (usize, bool, Vec<f64>)> = BTreeMap::new();
        for a in state.amphorae.values() {
            let g = groups
                .entry((a.loadbalancer_id.clone(), a.availability_zone.clone()))
                .or_default();
            match a.status {
                AmphoraStatus::Ready => {
                    g.0 += 1;
                    g.2.extend(load(&a.meta.id));
                }
                AmphoraStatus::Booting => g.1 = true,
                _ => {}
            }
        }
        for (key, (ready, booting, loads)) in groups {
            seen.insert(key.clone());
            let z = self.zones.entry(key.clone()).or_insert(ZoneScale {
                target: 1,
                above_since: None,
                below_since: None,
            });
            if booting || loads.is_empty() || loads.len() < ready {
                z.above_since = None;
                z.below_since = None;
                continue;
            }
            let avg = loads.iter().sum::<f64>() / loads.len() as f64;
            if avg > SCALE_OUT_ABOVE && z.target < MAX_PER_ZONE {
                z.below_since = None;
                let since = *z.above_since.get_or_insert(now);
                if now.saturating_sub(since) >= SCALE_OUT_AFTER_S && ready >= z.target {
                    z.target += 1;
                    z.above_since = None;
                    tracing::info!(loadbalancer = %key.0, zone = %key.1, cpu = avg, target = z.target, "L7 instances scale out");
                }
            } else if avg < SCALE_IN_BELOW && z.target > 1 {
                z.above_since = None;
                let since = *z.below_since.get_or_insert(now);
                if now.saturating_sub(since) >= SCALE_IN_AFTER_S {
                    z.target -= 1;
                    z.below_since = None;
                    tracing::info!(loadbalancer = %key.0, zone = %key.1, cpu = avg, target = z.target, "L7 instances scale in");
                }
            } else {
                z.above_since = None;
                z.below_since = None;
            }
        }
        // Zones without instances any more start over at one.
        self.zones.retain(|k, _| seen.contains(k));
    }
}

/// The change an agent's report that instance `id` stopped serving makes,
/// if any: `READY` -> `ERROR` at once (the L4 tier stops sending it new
/// connections). Coming back is [`plan`]'s: an instance is `READY` once it
/// serves *and* its port is realised on its host (`serving`), so the L4
/// tier never sends connections to a port the dataplane does not have yet.
pub fn on_health(state: &State, id: &str, up: bool, now: u64) -> Option<Change> {
    let a = state.amphorae.get(id)?;
    let to = match (a.status, up) {
        (AmphoraStatus::Ready, false) => AmphoraStatus::Error,
        _ => return None,
    };
    tracing::info!(amphora = id, host = %a.host, from = a.status.as_str(), to = to.as_str(), "L7 instance health changed");
    Some(with_status(a, to, now))
}

/// Octavia's amphora view (`GET /v2/octavia/amphorae`, admin only).
pub fn render(state: &State, a: &Amphora) -> Map<String, Value> {
    let lb = state.load_balancers.get(&a.loadbalancer_id);
    let v = json!({
        "id": a.meta.id,
        "loadbalancer_id": a.loadbalancer_id,
        "compute_id": a.host,
        "lb_network_ip": a.address,
        "vrrp_ip": a.address,
        "ha_ip": lb.map(|l| l.vip_address.clone()),
        "vrrp_port_id": a.port_id,
        "ha_port_id": lb.map(|l| l.vip_port_id.clone()),
        "cert_expiration": null,
        "cert_busy": false,
        "role": "STANDALONE",
        "status": a.status.as_str(),
        "vrrp_interface": "eth0",
        "vrrp_id": null,
        "vrrp_priority": null,
        "cached_zone": a.availability_zone,
        "created_at": a.meta.created_at,
        "updated_at": a.meta.updated_at,
        "image_id": null,
        "compute_flavor": null,
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!("a JSON object literal"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        commit::Core,
        lbaas::{listeners, load_balancers, members, pools},
        model::{HostRecord, LbProtocol},
        network::{
            networks, ports, subnets,
            testkit::{auth, core, member, run},
        },
    };

    /// Hosts az1-c1, az1-c2, az2-c1 (compute) and az1-g1 (gateway); a
    /// network with a member VM port on az2-c1; an LB with an HTTP
    /// listener and a pool holding that member.
    fn setup() -> (Core, String) {
        let c = core();
        let a = member("p1");
        c.mutate(|_| {
            let h = |name: &str, az: &str, gateway: bool| {
                Change::Put(Object::Host(HostRecord {
                    name: name.into(),
                    underlay_ip: "192.0.2.1".into(),
                    az: az.into(),
                    gateway,
                    available: true,
                }))
            };
            Ok((
                vec![
                    h("az1-c1", "az1", false),
                    h("az1-c2", "az1", false),
                    h("az2-c1", "az2", false),
                    h("az1-g1", "az1", true),
                ],
                (),
            ))
        })
        .expect("hosts");
        let n = run(&c, |s| networks::create(s, &a, &json!({"network": {}})))
            .expect("network")
            .meta
            .id;
        let sn = run(&c, |s| {
            subnets::create(
                s,
                &a,
                &json!({"subnet": {"network_id": n, "cidr": "10.0.0.0/24", "ip_version": 4}}),
            )
        })
        .expect("subnet")
        .meta
        .id;
        let admin = auth("p1", "admin");
        let vm = run(&c, |s| {
            ports::create(
                s,
                &admin,
                &json!({"port": {"network_id": n, "binding:host_id": "az2-c1"}}),
            )
        })
        .expect("vm port");
        let vm_ip = vm.fixed_ips[0].ip_address.clone();
        let lb = run(&c, |s| {
            load_balancers::create(s, &a, &json!({"loadbalancer": {"vip_subnet_id": sn}}))
        })
        .expect("lb")
        .meta
        .id;
        let l = run(&c, |s| {
            listeners::create(s, &a, &json!({"listener": {"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": 80}}))
        })
        .expect("listener");
        let p = run(&c, |s| {
            pools::create(s, &a, &json!({"pool": {"listener_id": l.meta.id, "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}}))
        })
        .expect("pool")
        .meta
        .id;
        run(&c, |s| {
            members::create(
                s,
                &a,
                &p,
                &json!({"member": {"address": vm_ip, "protocol_port": 8080, "subnet_id": sn}}),
            )
        })
        .expect("member");
        // The listener as the L7 API makes it (protocols are the API's
        // business, tested there).
        c.mutate(|_| {
            let mut l = l.clone();
            l.protocol = LbProtocol::Http;
            Ok((vec![Change::Put(Object::Listener(l))], ()))
        })
        .expect("http listener");
        (c, lb)
    }

    fn step(c: &Core, up: &dyn Fn(&str) -> bool, now: u64) -> usize {
        c.mutate(|s| {
            let ch = plan(s, up, &|_| true, &|_, _| 1, now);
            let n = ch.len();
            Ok((ch, n))
        })
        .expect("plan")
    }

    fn amphorae(c: &Core) -> Vec<Amphora> {
        c.read().amphorae.values().cloned().collect()
    }

    #[test]
    fn one_instance_in_the_members_zone_replaced_when_its_host_fails() {
        let (c, lb) = setup();
        let all = |_: &str| true;
        // First the service quota, then one placement.
        step(&c, &all, 100);
        assert!(c.read().quotas.contains_key(SERVICE_PROJECT));
        step(&c, &all, 100);
        let a = amphorae(&c);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(
            (a[0].host.as_str(), a[0].status),
            ("az2-c1", AmphoraStatus::Booting)
        );
        let port = c
            .read()
            .ports
            .get(&a[0].port_id)
            .cloned()
            .expect("its port");
        assert_eq!(port.binding_host_id, "az2-c1");
        assert_eq!(port.meta.project_id, SERVICE_PROJECT);
        assert!(port.fixed_ips[0].ip_address.starts_with("10.0.0."));
        // Not serving yet (or its port not realised): it stays BOOTING,
        // nothing more to do.
        let none = c
            .mutate(|s| Ok((plan(s, &all, &|_| false, &|_, _| 1, 101), ())))
            .map(|()| 0);
        assert_eq!(none.ok(), Some(0));
        assert_eq!(amphorae(&c)[0].status, AmphoraStatus::Booting);
        // Serving with its port realised: READY.
        step(&c, &all, 102);
        assert_eq!(amphorae(&c)[0].status, AmphoraStatus::Ready);
        // Its agent says it stopped serving: ERROR at once.
        c.mutate(|s| {
            Ok((
                on_health(s, &a[0].meta.id, false, 103)
                    .into_iter()
                    .collect(),
                (),
            ))
        })
        .expect("health");
        assert_eq!(amphorae(&c)[0].status, AmphoraStatus::Error);
        // Serving again within the replacement time: READY again.
        step(&c, &all, 104);
        assert_eq!(amphorae(&c)[0].status, AmphoraStatus::Ready);
        // Its host stops reporting: ERROR; a replacement needs another
        // host of az2, and there is none: the failed one stays until
        // REPLACE_AFTER_S, then goes with its port.
        let not_az2 = |h: &str| h != "az2-c1";
        step(&c, &not_az2, 110);
        assert_eq!(amphorae(&c)[0].status, AmphoraStatus::Error);
        step(&c, &not_az2, 110 + REPLACE_AFTER_S);
        assert!(amphorae(&c).is_empty());
        assert!(
            !c.read().ports.contains_key(&a[0].port_id),
            "its port went too"
        );
        // The host is back: a new instance there.
        step(&c, &all, 200);
        assert_eq!(amphorae(&c).len(), 1);
        // The load balancer goes: its instances and their ports with it.
        let admin = auth("p1", "admin");
        run(&c, |s| load_balancers::delete(s, &admin, &lb, true)).expect("cascade");
        assert!(amphorae(&c).is_empty());
        assert!(!c
            .read()
            .ports
            .values()
            .any(|p| p.device_id.starts_with("amphora-")));
    }

    #[test]
    fn instances_drain_when_no_listener_needs_them() {
        let (c, lb) = setup();
        let all = |_: &str| true;
        step(&c, &all, 100);
        step(&c, &all, 100);
        assert_eq!(amphorae(&c).len(), 1);
        // The HTTP listener goes back to TCP: no L7 listener left.
        c.mutate(|s| {
            let mut l = s
                .listeners
                .values()
                .find(|l| l.loadbalancer_id == lb)
                .cloned()
                .expect("listener");
            l.protocol = LbProtocol::Tcp;
            Ok((vec![Change::Put(Object::Listener(l))], ()))
        })
        .expect("tcp");
        step(&c, &all, 120);
        assert_eq!(amphorae(&c)[0].status, AmphoraStatus::PendingDelete);
        step(&c, &all, 120 + DRAIN_S - 1);
        assert_eq!(amphorae(&c).len(), 1, "still draining");
        step(&c, &all, 120 + DRAIN_S);
        assert!(amphorae(&c).is_empty());
    }

    /// Every BOOTING instance serves, its port realised: READY.
    fn ready_all(c: &Core, now: u64) {
        c.mutate(|s| {
            Ok((
                s.amphorae
                    .values()
                    .filter(|a| a.status == AmphoraStatus::Booting)
                    .map(|a| with_status(a, AmphoraStatus::Ready, now))
                    .collect(),
                (),
            ))
        })
        .expect("ready");
    }

    #[test]
    fn load_scales_a_zone_out_and_back_in() {
        let (c, lb) = setup();
        let all = |_: &str| true;
        let mut scaler = Scaler::default();
        step(&c, &all, 100);
        step(&c, &all, 100);
        ready_all(&c, 101);
        let busy = |_: &str| Some(0.9);
        let idle = |_: &str| Some(0.05);
        let step_with = |c: &Core, scaler: &Scaler, now: u64| {
            c.mutate(|s| {
                let ch = plan(s, &all, &|_| false, &|l, z| scaler.want(l, z), now);
                Ok((ch, ()))
            })
            .expect("plan")
        };
        // Busy, but not for long enough yet: one.
        scaler.update(&c.read(), &busy, 110);
        scaler.update(&c.read(), &busy, 110 + SCALE_OUT_AFTER_S - 1);
        assert_eq!(scaler.want(&lb, "az2"), 1);
        // Busy for the whole window: two, the second on the zone's only
        // host (az2 has one compute host).
        scaler.update(&c.read(), &busy, 110 + SCALE_OUT_AFTER_S);
        assert_eq!(scaler.want(&lb, "az2"), 2);
        step_with(&c, &scaler, 130);
        let a = amphorae(&c);
        assert_eq!(a.len(), 2, "{a:?}");
        assert!(a.iter().all(|a| a.availability_zone == "az2"));
        // While one boots, load does not move the target.
        scaler.update(&c.read(), &busy, 200);
        scaler.update(&c.read(), &busy, 300);
        assert_eq!(scaler.want(&lb, "az2"), 2);
        ready_all(&c, 301);
        // Idle for a minute: back to one; the newer instance drains.
        scaler.update(&c.read(), &idle, 400);
        scaler.update(&c.read(), &idle, 400 + SCALE_IN_AFTER_S);
        assert_eq!(scaler.want(&lb, "az2"), 1);
        step_with(&c, &scaler, 470);
        let mut a = amphorae(&c);
        a.sort_by(|x, y| (&x.meta.created_at, &x.meta.id).cmp(&(&y.meta.created_at, &y.meta.id)));
        let statuses: Vec<AmphoraStatus> = a.iter().map(|a| a.status).collect();
        assert_eq!(
            statuses
                .iter()
                .filter(|s| **s == AmphoraStatus::PendingDelete)
                .count(),
            1,
            "{statuses:?}"
        );
        assert_eq!(
            statuses
                .iter()
                .filter(|s| **s == AmphoraStatus::Ready)
                .count(),
            1,
            "{statuses:?}"
        );
        // Never below one, however idle.
        for t in 0..5 {
            scaler.update(&c.read(), &idle, 600 + t * SCALE_IN_AFTER_S);
        }
        assert_eq!(scaler.want(&lb, "az2"), 1);
    }
}
