//! The load balancer realiser: keeps the load balancer maps (services,
//! Maglev tables, backends) in step with the desired load balancers, tells
//! the prober which local members to check, and turns the maps' counters
//! and flows into the access log, the metrics file and the counters
//! reported to the controller.
//!
//! Owns the numbering and tables ([`LbState`]), the prober and the access
//! log. Which members are probed ([`probe_targets`]) and the counters
//! report ([`stats_report`]) are pure functions of given state, tested
//! here. It never writes the VPC or policy maps and never talks to the
//! controller (the agent queues what it returns).

use std::{collections::BTreeMap, net::Ipv4Addr, path::Path, time::Duration};

use dataplane_common::{EpKey, LbFlow, LbFlowKey, LbStats};
use strato_dataplane::Dataplane;
use strato_proto::{
    config::{Entry, NetworkEntry, PortEntry},
    lb::{CountersOf, StatsReport},
    naming::parse_mac,
};

use crate::{
    lb::{
        access_log::{self, AccessLog},
        probe::{self, Kind, Prober, Target},
        LbState,
    },
    vpc,
};

/// A connection is active with a packet in the last minute.
const ACTIVE_NS: u64 = 60_000_000_000;

#[derive(Default)]
pub(crate) struct LbRealiser {
    /// Load balancer numbering, tables and drains.
    state: LbState,
    /// Health checks of the load balancer members on this host.
    pub prober: Option<Prober>,
    /// Connections followed for the access log.
    pub access_log: Option<AccessLog>,
}

impl LbRealiser {
    /// Writes the load balancers' services, backends and tables, and hands
    /// the prober the local members to check (`taps`: working port taps).
    pub fn sync(
        &mut self,
        dp: &mut Dataplane,
        desired: &BTreeMap<String, Entry>,
        endpoints: &BTreeMap<EpKey, dataplane_common::Endpoint>,
        taps: &BTreeMap<String, u32>,
    ) {
        let doms = vpc::domains(desired);
        let lbs = desired.values().filter_map(|e| match e {
            Entry::LoadBalancer(l) => Some(l),
            _ => None,
        });
        let specs = crate::lb::specs(lbs, &doms, endpoints);
        let ops = self.state.sync(&specs, strato_dataplane::coarse_now_ns());
        if let Some(p) = &self.prober {
            p.set(probe_targets(desired, &doms, taps));
        }
        if ops.is_empty() {
            return;
        }
        match dp.lb_apply(&ops) {
            Ok(()) => tracing::info!(
                services = ops.services.len(),
                backends = ops.backends.len(),
                tables = ops.tables.len(),
                "load balancer tables written"
            ),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot write the load balancer tables")
            }
        }
    }

    /// Ends drains that are over, and forgets idle balanced connections.
    pub fn housekeeping(&mut self, dp: &mut Dataplane) {
        let now = strato_dataplane::coarse_now_ns();
        let ops = self.state.tick(now);
        if !ops.is_empty() {
            if let Err(e) = dp.lb_apply(&ops) {
                tracing::warn!(error = %format!("{e:#}"), "cannot release drained members");
            }
        }
        // The programs choose again after a service's idle timeout; the
        // entries go after the longest one allowed (1 day).
        if let Err(e) = dp.lb_gc(now, 86_400 * 1_000_000_000) {
            tracing::warn!(error = %format!("{e:#}"), "load balancer sweep failed");
        }
    }

    /// Writes the access log and metrics file (into `state_dir`) and, if
    /// `reporting`, returns this host's load balancer counters: per
    /// listener and member, totals since the agent started, and the
    /// connections held now. Nothing without services.
    pub fn observe(
        &mut self,
        dp: &Dataplane,
        host: &str,
        state_dir: Option<&Path>,
        reporting: bool,
    ) -> Option<StatsReport> {
        let services = self.state.services();
        if services.is_empty() {
            return None;
        }
        if let Some(dir) = state_dir {
            self.write_files(dp, host, dir, &services);
        }
        if !reporting {
            return None;
        }
        let backends = self.state.backends();
        let (Ok(sstats), Ok(bstats), Ok(flows)) = (
            dp.lb_stats(services.keys().copied(), false),
            dp.lb_stats(backends.keys().copied(), true),
            dp.lb_flows(),
        ) else {
            return None;
        };
        let now = strato_dataplane::coarse_now_ns();
        let stats = Stats {
            services: &services,
            backends: &backends,
            sstats: &sstats,
            bstats: &bstats,
        };
        // Open connections as the access log follows them (ends seen
        // through connection tracking) when it runs, else those with a
        // packet in the last minute.
        let open = self.access_log.as_ref().map(|l| l.open_counts());
        Some(stats_report(&stats, &flows, open.as_ref(), now))
    }

    /// The access log's new lines and the metrics file.
    fn write_files(
        &mut self,
        dp: &Dataplane,
        host: &str,
        dir: &Path,
        services: &BTreeMap<u32, String>,
    ) {
        let backends = self.state.backends();
        let (Ok(flows), Ok(revs), Ok(sstats), Ok(bstats)) = (
            dp.lb_flows(),
            dp.lb_replies(),
            dp.lb_stats(services.keys().copied(), false),
            dp.lb_stats(backends.keys().copied(), true),
        ) else {
            return;
        };
        let now = strato_dataplane::coarse_now_ns();
        self.tick_access_log(dp, services, &backends, &flows, &revs, now);
        let stats = Stats {
            services,
            backends: &backends,
            sstats: &sstats,
            bstats: &bstats,
        };
        let text = metrics_text(host, &stats, &flows, now);
        if let Err(e) = access_log::write_metrics(dir, &text) {
            tracing::warn!(error = %e, "cannot write the metrics file");
        }
    }

    /// Gives the access log the flows (and their replies) as they are now.
    fn tick_access_log(
        &mut self,
        dp: &Dataplane,
        services: &BTreeMap<u32, String>,
        backends: &BTreeMap<u32, (String, String)>,
        flows: &[(LbFlowKey, LbFlow)],
        revs: &[(LbFlowKey, dataplane_common::LbRev)],
        now: u64,
    ) {
        let idle: BTreeMap<u32, u64> = self
            .state
            .service_idle()
            .into_iter()
            .map(|(n, s)| (n, s as u64 * 1_000_000_000))
            .collect();
        let names = |s: u32, b: u32| {
            (
                services.get(&s).cloned().unwrap_or_default(),
                backends.get(&b).map(|x| x.1.clone()).unwrap_or_default(),
            )
        };
        let closed = |k: &LbFlowKey, r: &LbFlowKey| {
            if k.proto != 6 {
                return false;
            }
            let (ck, _) = dataplane_common::CtKey::of_flow(
                k.domain,
                k.client,
                r.remote,
                k.client_port,
                r.remote_port,
                k.proto,
            );
            dp.ct_get(&ck).ok().flatten().is_some_and(|e| {
                e.state == dataplane_common::CT_TCP_TIME_WAIT
                    || e.state == dataplane_common::CT_TCP_CLOSE
            })
        };
        let idle_of = |s: u32| idle.get(&s).copied().unwrap_or(50_000_000_000);
        if let Some(log) = self.access_log.as_mut() {
            if let Err(e) = log.tick(now, flows, revs, &names, &closed, &idle_of) {
                tracing::warn!(error = %e, "cannot write the access log");
            }
        }
    }
}

/// The services and backends this host numbers, with their counters.
pub(crate) struct Stats<'a> {
    /// Service number -> listener id.
    pub services: &'a BTreeMap<u32, String>,
    /// Backend number -> (listener id, member id).
    pub backends: &'a BTreeMap<u32, (String, String)>,
    pub sstats: &'a BTreeMap<u32, LbStats>,
    pub bstats: &'a BTreeMap<u32, LbStats>,
}

/// The metrics file's text (Prometheus).
fn metrics_text(host: &str, s: &Stats, flows: &[(LbFlowKey, LbFlow)], now: u64) -> String {
    let (sg, bg) = access_log::gauges(now, flows);
    let listeners: Vec<_> = s
        .services
        .iter()
        .map(|(n, l)| {
            (
                l.clone(),
                s.sstats.get(n).copied().unwrap_or_default(),
                sg.get(n).copied().unwrap_or_default(),
            )
        })
        .collect();
    let members: Vec<_> = s
        .backends
        .iter()
        .map(|(n, (l, m))| {
            (
                l.clone(),
                m.clone(),
                s.bstats.get(n).copied().unwrap_or_default(),
                bg.get(n).copied().unwrap_or_default(),
            )
        })
        .collect();
    access_log::prometheus(host, &listeners, &members)
}

/// The counters report: per listener, and per member summed over the
/// listeners it serves; active connections are `open`'s (per service and
/// backend number), or without it those with a packet in the last minute
/// before `now`.
pub(crate) fn stats_report(
    s: &Stats,
    flows: &[(LbFlowKey, LbFlow)],
    open: Option<&crate::lb::access_log::OpenCounts>,
    now: u64,
) -> StatsReport {
    let (active_s, active_b) = match open {
        Some((s, b)) => (s.clone(), b.clone()),
        None => {
            let mut active_s: BTreeMap<u32, u64> = BTreeMap::new();
            let mut active_b: BTreeMap<u32, u64> = BTreeMap::new();
            for (_, f) in flows {
                if now.saturating_sub(f.last_seen_ns) < ACTIVE_NS {
                    *active_s.entry(f.service).or_default() += 1;
                    *active_b.entry(f.backend).or_default() += 1;
                }
            }
            (active_s, active_b)
        }
    };
    let of = |id: String, s: &LbStats, active: u64| CountersOf {
        id,
        bytes_in: s.bytes_in,
        bytes_out: s.bytes_out,
        active_connections: active,
        total_connections: s.connections,
        request_errors: s.refused,
    };
    let listeners = s
        .services
        .iter()
        .filter_map(|(n, l)| {
            let st = s.sstats.get(n)?;
            Some(of(l.clone(), st, active_s.get(n).copied().unwrap_or(0)))
        })
        .collect();
    // A member may serve several listeners: summed.
    let mut members: BTreeMap<String, CountersOf> = BTreeMap::new();
    for (n, (_, m)) in s.backends {
        let Some(st) = s.bstats.get(n) else { continue };
        let c = of(m.clone(), st, active_b.get(n).copied().unwrap_or(0));
        members
            .entry(m.clone())
            .and_modify(|x| {
                x.bytes_in += c.bytes_in;
                x.bytes_out += c.bytes_out;
                x.active_connections += c.active_connections;
                x.total_connections += c.total_connections;
                x.request_errors += c.request_errors;
            })
            .or_insert(c);
    }
    StatsReport {
        listeners,
        members: members.into_values().collect(),
        instances: Vec::new(),
    }
}

/// The members on this host whose pool has a health monitor: checked
/// here, from their subnet's gateway address, through their tap (`taps`:
/// working port taps; a member whose tap is gone is checked on ifindex 0,
/// and every check fails).
pub(crate) fn probe_targets(
    desired: &BTreeMap<String, Entry>,
    doms: &BTreeMap<String, u32>,
    taps: &BTreeMap<String, u32>,
) -> Vec<Target> {
    let nets: BTreeMap<&str, &NetworkEntry> = desired
        .values()
        .filter_map(|e| match e {
            Entry::Network(n) => Some((n.id.as_str(), n)),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for e in desired.values() {
        let Entry::LoadBalancer(lb) = e else { continue };
        let Some(&domain) = doms.get(&lb.vip_network_id) else {
            continue;
        };
        // Listeners' pools, and the pools only L7 instances balance.
        let checked = lb
            .listeners
            .iter()
            .filter_map(|l| l.monitor.as_ref().map(|m| (m, &l.members)))
            .chain(lb.checked_pools.iter().map(|p| (&p.monitor, &p.members)));
        for (mon, members) in checked {
            let Some(kind) = monitor_kind(mon) else {
                continue;
            };
            for m in members {
                let addr = m.monitor_address.as_deref().unwrap_or(&m.address);
                let Ok(ip) = addr.parse::<Ipv4Addr>() else {
                    continue;
                };
                // The local port with that address in the VPC.
                let found = desired.values().find_map(|e| match e {
                    Entry::Port(p)
                        if doms.get(&p.network_id) == Some(&domain)
                            && p.ips.iter().any(|(_, a)| a == addr) =>
                    {
                        Some(p)
                    }
                    _ => None,
                });
                let Some(p) = found else { continue };
                let Some(((src_ip, src_mac), dst_mac)) =
                    gateway_of(&nets, p, ip).zip(parse_mac(&p.mac))
                else {
                    continue;
                };
                out.push(Target {
                    member_id: m.id.clone(),
                    ifindex: taps.get(&p.tap).copied().unwrap_or(0),
                    src_ip: src_ip.octets(),
                    src_mac,
                    dst_ip: ip.octets(),
                    dst_mac,
                    port: m.monitor_port.unwrap_or(m.protocol_port),
                    kind: kind.clone(),
                    delay: Duration::from_secs(mon.delay.max(1) as u64),
                    timeout: Duration::from_secs(mon.timeout.max(1) as u64),
                    max_retries: mon.max_retries,
                    max_retries_down: mon.max_retries_down,
                });
            }
        }
    }
    out
}

/// The check a monitor asks for, if the prober knows it.
fn monitor_kind(mon: &strato_proto::config::MonitorEntry) -> Option<Kind> {
    Some(match mon.kind.as_str() {
        "PING" => Kind::Ping,
        "TCP" => Kind::Tcp,
        "UDP-CONNECT" => Kind::UdpConnect,
        "HTTPS" | "TLS-HELLO" => Kind::TlsHello,
        "HTTP" => Kind::Http {
            method: mon.http_method.clone(),
            path: mon.url_path.clone(),
            expected: probe::parse_expected(&mon.expected_codes)
                .unwrap_or_else(|| vec![(200, 200)]),
        },
        _ => return None,
    })
}

/// The gateway (address, MAC) of the subnet of port `p` holding `ip`.
fn gateway_of(
    nets: &BTreeMap<&str, &NetworkEntry>,
    p: &PortEntry,
    ip: Ipv4Addr,
) -> Option<(Ipv4Addr, [u8; 6])> {
    let s = nets.get(p.network_id.as_str())?.subnets.iter().find(|s| {
        s.cidr
            .parse::<ipnetwork::Ipv4Network>()
            .is_ok_and(|c| c.contains(ip))
    })?;
    let gw_ip = s.gateway_ip.as_deref()?.parse::<Ipv4Addr>().ok()?;
    let gw_mac = s.gateway_mac.as_deref().and_then(parse_mac)?;
    Some((gw_ip, gw_mac))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::tests::{network, port};
    use strato_proto::config::{ListenerEntry, LoadBalancerEntry, MemberEntry, MonitorEntry};

    fn monitor(kind: &str) -> MonitorEntry {
        MonitorEntry {
            id: "m1".into(),
            kind: kind.into(),
            delay: 0,
            timeout: 3,
            max_retries: 2,
            max_retries_down: 3,
            http_method: "GET".into(),
            url_path: "/health".into(),
            expected_codes: "200-204".into(),
        }
    }

    fn member(id: &str, address: &str) -> MemberEntry {
        MemberEntry {
            id: id.into(),
            address: address.into(),
            protocol_port: 80,
            weight: 1,
            backup: false,
            state: "ACTIVE".into(),
            monitor_address: None,
            monitor_port: None,
            location: None,
        }
    }

    fn lb(mon: Option<MonitorEntry>, members: Vec<MemberEntry>) -> Entry {
        Entry::LoadBalancer(LoadBalancerEntry {
            id: "lb1".into(),
            vip_network_id: "n1".into(),
            vip_address: "10.0.0.100".into(),
            vip_mac: "fa:16:3e:00:01:00".into(),
            admin_state_up: true,
            listeners: vec![ListenerEntry {
                id: "l1".into(),
                protocol: "TCP".into(),
                protocol_port: 80,
                idle_timeout_s: 50,
                drain_timeout_s: 0,
                source_ip: false,
                pool_id: Some("pool1".into()),
                at_limit: false,
                monitor: mon,
                members,
            }],
            domain: 0,
            floating_ip: None,
            gateway: false,
            checked_pools: vec![],
        })
    }

    fn targets(entries: Vec<Entry>, taps: &[(&str, u32)]) -> Vec<Target> {
        let desired: BTreeMap<String, Entry> = entries.into_iter().map(|e| (e.key(), e)).collect();
        let taps = taps.iter().map(|(t, i)| (t.to_string(), *i)).collect();
        probe_targets(&desired, &vpc::domains(&desired), &taps)
    }

    #[test]
    fn local_members_with_a_monitor_are_probed_from_their_gateway() {
        let mut far = member("m-far", "10.0.0.77");
        far.monitor_port = Some(8080);
        let t = targets(
            vec![
                network("n1", "10.0.0.0/24", true),
                port("p1", "n1", "tap1", "fa:16:3e:00:00:01", "10.0.0.5"),
                port("p2", "n1", "tap2", "fa:16:3e:00:00:02", "10.0.0.6"),
                lb(
                    Some(monitor("HTTP")),
                    vec![member("m1", "10.0.0.5"), member("m2", "10.0.0.6"), far],
                ),
            ],
            &[("tap1", 7)],
        );
        assert_eq!(
            t.len(),
            2,
            "a member without a local port is not probed here: {t:?}"
        );
        assert_eq!((t[0].member_id.as_str(), t[0].ifindex), ("m1", 7));
        assert_eq!(t[0].src_ip, [10, 0, 0, 1]);
        assert_eq!(t[0].src_mac, [0xfa, 0x16, 0x3e, 0, 0, 0xfe]);
        assert_eq!(
            (t[0].dst_ip, t[0].dst_mac),
            ([10, 0, 0, 5], [0xfa, 0x16, 0x3e, 0, 0, 1])
        );
        assert_eq!(t[0].port, 80);
        assert_eq!(t[0].delay, Duration::from_secs(1), "a delay of 0 is 1 s");
        assert_eq!(
            t[0].kind,
            Kind::Http {
                method: "GET".into(),
                path: "/health".into(),
                expected: vec![(200, 204)]
            }
        );
        assert_eq!(
            (t[1].member_id.as_str(), t[1].ifindex),
            ("m2", 0),
            "tap gone: ifindex 0"
        );
    }

    #[test]
    fn members_of_pools_only_l7_instances_balance_are_probed_too() {
        // An L7 listener: its L4 members are instances, without a monitor;
        // the pool's own members are in `checked_pools`.
        let mut e = lb(None, vec![member("amphora1", "10.0.0.9")]);
        if let Entry::LoadBalancer(l) = &mut e {
            l.checked_pools.push(strato_proto::config::CheckedPool {
                id: "pool2".into(),
                monitor: monitor("TCP"),
                members: vec![member("m1", "10.0.0.5")],
            });
        }
        let t = targets(
            vec![
                network("n1", "10.0.0.0/24", true),
                port("p1", "n1", "tap1", "fa:16:3e:00:00:01", "10.0.0.5"),
                e,
            ],
            &[("tap1", 7)],
        );
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!(
            (t[0].member_id.as_str(), t[0].kind.clone()),
            ("m1", Kind::Tcp)
        );
    }

    #[test]
    fn no_probes_without_a_known_monitor_or_a_gateway() {
        let base = || {
            vec![
                network("n1", "10.0.0.0/24", true),
                port("p1", "n1", "tap1", "fa:16:3e:00:00:01", "10.0.0.5"),
            ]
        };
        let with = |mon: Option<MonitorEntry>| {
            let mut e = base();
            e.push(lb(mon, vec![member("m1", "10.0.0.5")]));
            targets(e, &[("tap1", 7)])
        };
        assert!(with(None).is_empty());
        assert!(with(Some(monitor("SCTP"))).is_empty());
        assert_eq!(with(Some(monitor("PING")))[0].kind, Kind::Ping);
        assert_eq!(with(Some(monitor("UDP-CONNECT")))[0].kind, Kind::UdpConnect);
        let mut e = base();
        if let Some(Entry::Network(n)) = e.first_mut() {
            n.subnets[0].gateway_mac = None;
        }
        e.push(lb(Some(monitor("TCP")), vec![member("m1", "10.0.0.5")]));
        assert!(
            targets(e, &[("tap1", 7)]).is_empty(),
            "no gateway MAC to probe from"
        );
    }

    #[test]
    fn counters_are_per_listener_and_summed_per_member() {
        let services: BTreeMap<u32, String> = [(1, "l1".into()), (2, "l2".into())].into();
        let backends: BTreeMap<u32, (String, String)> = [
            (10, ("l1".into(), "m1".into())),
            (20, ("l2".into(), "m1".into())),
            (21, ("l2".into(), "m2".into())),
        ]
        .into();
        let st = |b: u64| LbStats {
            bytes_in: b,
            bytes_out: 2 * b,
            connections: 1,
            refused: 0,
            ..Default::default()
        };
        let sstats: BTreeMap<u32, LbStats> = [(1, st(100))].into();
        let bstats: BTreeMap<u32, LbStats> = [(10, st(5)), (20, st(7)), (21, st(9))].into();
        let now = 100 * ACTIVE_NS;
        let flow = |service, backend, last_seen_ns| {
            let f = LbFlow {
                service,
                backend,
                last_seen_ns,
                ..Default::default()
            };
            (LbFlowKey::default(), f)
        };
        let flows = [
            flow(1, 10, now - 1),
            flow(2, 20, now - ACTIVE_NS / 2),
            flow(2, 21, now - ACTIVE_NS),
        ];
        let s = Stats {
            services: &services,
            backends: &backends,
            sstats: &sstats,
            bstats: &bstats,
        };
        let r = stats_report(&s, &flows, None, now);
        assert_eq!(
            r.listeners.len(),
            1,
            "a listener without counters is left out"
        );
        assert_eq!(
            (r.listeners[0].id.as_str(), r.listeners[0].bytes_in),
            ("l1", 100)
        );
        assert_eq!(r.listeners[0].active_connections, 1);
        let m1 = r
            .members
            .iter()
            .find(|m| m.id == "m1")
            .expect("m1 reported");
        assert_eq!(
            (m1.bytes_in, m1.bytes_out, m1.total_connections),
            (12, 24, 2)
        );
        assert_eq!(m1.active_connections, 2);
        let m2 = r
            .members
            .iter()
            .find(|m| m.id == "m2")
            .expect("m2 reported");
        assert_eq!(
            m2.active_connections, 0,
            "a minute without packets is not active"
        );
    }
}
