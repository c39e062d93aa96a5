//! End to end, the L4 load balancer, in the default region (two AZs), set
//! up only through the Octavia API, with real TCP and UDP from VMs:
//!
//! - four members across both AZs and both subnets of a VPC (weights 1, 1,
//!   2, 2), a TCP health monitor; 1,000 connections from a VM in each AZ
//!   are spread by weight, none fails;
//! - a UDP listener; a listener whose pool has session persistence by
//!   source address (every connection of a client on one member); a
//!   listener without members refuses at once (reset, not a time-out);
//! - a member disabled while a connection to it is held: the connection
//!   goes on, new connections avoid the member;
//! - a member's VM is deleted: its health check marks it ERROR within
//!   delay x max_retries_down plus an interval, and no new connection
//!   fails or reaches it afterwards;
//! - a floating IP on the VIP port: the internet client's connections are
//!   balanced by the gateway hosts and answered as the floating IP;
//! - the listener's stats count the connections and bytes;
//! - provisioning status becomes ACTIVE once every host programmed it.

use std::{
    collections::BTreeMap,
    io::{BufRead, Write},
    time::{Duration, Instant},
};

use netns_harness::Topology;
use serde_json::{json, Value};
use strato_tests::e2e::{id, Api, Cloud, Servers, Vm};

const SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/lbserver.py");
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/lbclient.py");
const PYTHON: &str = "/usr/bin/python3";
/// The internet namespace's client.
const INTERNET: &str = "inet-client1";
/// The health monitor: a check a second, down after two failures.
const DELAY_S: u64 = 1;
const RETRIES_DOWN: u64 = 2;

static SERVERS: Servers = Servers::new();

#[test]
fn load_balancer_end_to_end() {
    let cloud = Cloud::up("lb", &Topology::default_region());
    SERVERS.run_then_reap(
        || run(&cloud),
        || {
            eprintln!("{}", cloud.log_tail("controller", 30));
            for h in cloud.region.hosts() {
                eprintln!("{}", cloud.log_tail(&format!("agent-{}", h.name), 15));
            }
        },
    );
}

/// What `lbclient.py count` saw.
struct Counts {
    counts: BTreeMap<String, u64>,
    failed: u64,
    refused: u64,
}

fn count(cloud: &Cloud, from: &str, vip: &str, port: u16, n: u32, udp: bool) -> Counts {
    let mut argv = vec![
        PYTHON.to_owned(),
        CLIENT.to_owned(),
        "count".into(),
        vip.to_owned(),
        port.to_string(),
        n.to_string(),
    ];
    if udp {
        argv.push("udp".into());
    }
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let o = cloud.region.exec(from, &argv).expect("exec");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "lbclient on {from}: {e}: {} {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    Counts {
        counts: v["counts"]
            .as_object()
            .expect("counts")
            .iter()
            .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
            .collect(),
        failed: v["failed"].as_u64().unwrap_or(0),
        refused: v["refused"].as_u64().unwrap_or(0),
    }
}

/// Operating status of every member of the load balancer, by member id.
fn member_status(api: &Api, lb: &str) -> BTreeMap<String, String> {
    let v = api.expect(
        200,
        "GET",
        &format!("/v2/lbaas/loadbalancers/{lb}/status"),
        None,
    );
    let mut out = BTreeMap::new();
    for l in v["statuses"]["loadbalancer"]["listeners"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for p in l["pools"].as_array().into_iter().flatten() {
            for m in p["members"].as_array().into_iter().flatten() {
                out.insert(
                    m["id"].as_str().unwrap_or("").to_owned(),
                    m["operating_status"].as_str().unwrap_or("").to_owned(),
                );
            }
        }
    }
    out
}

struct Lb<'a> {
    api: &'a Api,
    id: String,
    vip: String,
    vip_port: String,
}

impl Lb<'_> {
    /// A listener on `port` with a default pool; returns (listener, pool).
    fn listener(&self, protocol: &str, port: u16, persistence: bool) -> (String, String) {
        let l = id(
            &self.api.expect(
                201,
                "POST",
                "/v2/lbaas/listeners",
                Some(
                    json!({"listener": {"loadbalancer_id": self.id, "protocol": protocol,
                    "protocol_port": port, "name": format!("{protocol}-{port}")}}),
                ),
            ),
            "listener",
        );
        let mut pool = json!({"pool": {"listener_id": l, "protocol": protocol,
            "lb_algorithm": "ROUND_ROBIN", "name": format!("pool-{port}")}});
        if persistence {
            pool["pool"]["session_persistence"] = json!({"type": "SOURCE_IP"});
        }
        let p = id(
            &self.api.expect(201, "POST", "/v2/lbaas/pools", Some(pool)),
            "pool",
        );
        (l, p)
    }

    fn member(&self, pool: &str, vm: &Vm, subnet: &str, weight: u16) -> String {
        id(
            &self.api.expect(
                201,
                "POST",
                &format!("/v2/lbaas/pools/{pool}/members"),
                Some(json!({"member": {"address": vm.ip, "protocol_port": 7000,
                    "subnet_id": subnet, "weight": weight, "name": vm.name}})),
            ),
            "member",
        )
    }
}

fn run(cloud: &Cloud) {
    let admin = cloud.admin();
    let api = cloud.tenant("lbt");
    let vpc = Cloud::vpc(&api, &["10.0.1.0/24", "10.0.2.0/24"], &[]);
    let placement = [
        ("b1", 0, "az1-c1", 1u16),
        ("b2", 1, "az1-c2", 1),
        ("b3", 0, "az2-c1", 2),
        ("b4", 1, "az2-c2", 2),
    ];
    let mut backends = Vec::new();
    for (name, net, host, w) in placement {
        let vm = cloud.boot(&admin, &api, &vpc.nets[net], name, host, None);
        backends.push((vm, net, w));
    }
    let c1 = cloud.boot(&admin, &api, &vpc.nets[0], "c1", "az1-c1", None);
    let c2 = cloud.boot(&admin, &api, &vpc.nets[1], "c2", "az2-c2", None);
    let mut all: Vec<&Vm> = backends.iter().map(|(v, _, _)| v).collect();
    all.extend([&c1, &c2]);
    cloud.wait_until_active(&api, &all);
    for (vm, _, _) in &backends {
        SERVERS.keep(
            cloud
                .region
                .command(&vm.name, &[PYTHON, SERVER, &vm.name, "7000"])
                .expect("command")
                .spawn()
                .expect("spawn"),
        );
    }

    // The load balancer, in the first subnet.
    let v = api.expect(
        201,
        "POST",
        "/v2/lbaas/loadbalancers",
        Some(json!({"loadbalancer": {"name": "web", "vip_subnet_id": vpc.subnets[0]}})),
    );
    let lb = Lb {
        api: &api,
        id: id(&v, "loadbalancer"),
        vip: v["loadbalancer"]["vip_address"]
            .as_str()
            .expect("vip")
            .to_owned(),
        vip_port: v["loadbalancer"]["vip_port_id"]
            .as_str()
            .expect("vip port")
            .to_owned(),
    };
    let (l80, p80) = lb.listener("TCP", 80, false);
    let mut members = BTreeMap::new();
    for (vm, net, w) in &backends {
        members.insert(vm.name.clone(), lb.member(&p80, vm, &vpc.subnets[*net], *w));
    }
    api.expect(
        201,
        "POST",
        "/v2/lbaas/healthmonitors",
        Some(
            json!({"healthmonitor": {"pool_id": p80, "type": "TCP", "delay": DELAY_S,
            "timeout": 1, "max_retries": 1, "max_retries_down": RETRIES_DOWN}}),
        ),
    );
    cloud.wait_until("every member ONLINE", Duration::from_secs(20), || {
        let s = member_status(&api, &lb.id);
        s.len() == 4 && s.values().all(|v| v == "ONLINE")
    });
    // Every host has programmed it.
    cloud.wait_until("the load balancer ACTIVE", Duration::from_secs(10), || {
        api.expect(
            200,
            "GET",
            &format!("/v2/lbaas/loadbalancers/{}", lb.id),
            None,
        )["loadbalancer"]["provisioning_status"]
            == "ACTIVE"
    });

    // 1,000 connections, 500 from a VM in each AZ, spread by weight.
    let mut total: BTreeMap<String, u64> = BTreeMap::new();
    for c in [&c1, &c2] {
        let r = count(cloud, &c.name, &lb.vip, 80, 500, false);
        assert_eq!(
            (r.failed, r.refused),
            (0, 0),
            "from {}: {:?}",
            c.name,
            r.counts
        );
        for (k, n) in r.counts {
            *total.entry(k).or_default() += n;
        }
    }
    eprintln!("1,000 connections over weights 1, 1, 2, 2: {total:?}");
    let weight_sum: u64 = backends.iter().map(|(_, _, w)| *w as u64).sum();
    for (vm, _, w) in &backends {
        let p = *w as f64 / weight_sum as f64;
        let want = 1000.0 * p;
        let got = *total.get(&vm.name).unwrap_or(&0) as f64;
        // Within 10% of its share, or (each connection's source port is
        // random, so the split is a binomial sample) four standard
        // deviations when that is more.
        let allowed = (want * 0.10).max(4.0 * (1000.0 * p * (1.0 - p)).sqrt());
        assert!(
            (got - want).abs() <= allowed,
            "{}: {got} connections, want {want:.0} +- {allowed:.0}: {total:?}",
            vm.name
        );
    }

    // UDP.
    let (_, p81) = lb.listener("UDP", 81, false);
    for (vm, net, _) in &backends {
        lb.member(&p81, vm, &vpc.subnets[*net], 1);
    }
    cloud.wait_until("UDP listener answers", Duration::from_secs(10), || {
        count(cloud, "c1", &lb.vip, 81, 1, true).counts.len() == 1
    });
    let r = count(cloud, "c2", &lb.vip, 81, 100, true);
    assert_eq!(r.failed, 0, "UDP: {:?}", r.counts);
    assert!(r.counts.len() >= 2, "UDP datagrams spread: {:?}", r.counts);

    // Session persistence by source address.
    let (_, p82) = lb.listener("TCP", 82, true);
    for (vm, net, _) in &backends {
        lb.member(&p82, vm, &vpc.subnets[*net], 1);
    }
    cloud.wait_until(
        "persistent listener answers",
        Duration::from_secs(10),
        || count(cloud, "c1", &lb.vip, 82, 1, false).counts.len() == 1,
    );
    for c in [&c1, &c2] {
        let r = count(cloud, &c.name, &lb.vip, 82, 50, false);
        assert_eq!(r.failed, 0);
        assert_eq!(
            r.counts.len(),
            1,
            "every connection of {} on one member: {:?}",
            c.name,
            r.counts
        );
    }

    // Public: a floating IP on the VIP port; the internet client reaches
    // the members through the gateway hosts (which balance), the members
    // answer as the floating IP.
    let ext = Cloud::external_network(&admin);
    Cloud::router_gateway(&api, &vpc.router, &ext);
    let groups = api.expect(200, "GET", "/v2.0/security-groups?name=default", None);
    let default_sg = groups["security_groups"][0]["id"]
        .as_str()
        .expect("default group")
        .to_owned();
    api.expect(
        201,
        "POST",
        "/v2.0/security-group-rules",
        Some(
            json!({"security_group_rule": {"security_group_id": default_sg,
            "direction": "ingress", "protocol": "tcp", "port_range_min": 7000,
            "port_range_max": 7000, "remote_ip_prefix": "0.0.0.0/0"}}),
        ),
    );
    let fip = api.expect(
        201,
        "POST",
        "/v2.0/floatingips",
        Some(json!({"floatingip": {"floating_network_id": ext, "port_id": lb.vip_port}})),
    )["floatingip"]["floating_ip_address"]
        .as_str()
        .expect("floating ip")
        .to_owned();
    cloud.wait_until("the public VIP answers", Duration::from_secs(15), || {
        count(cloud, INTERNET, &fip, 80, 1, false).counts.len() == 1
    });
    let r = count(cloud, INTERNET, &fip, 80, 200, false);
    eprintln!(
        "200 connections from the internet to {fip}:80: {:?}",
        r.counts
    );
    assert_eq!((r.failed, r.refused), (0, 0), "{:?}", r.counts);
    assert!(
        r.counts.len() >= 3,
        "spread over the members: {:?}",
        r.counts
    );
    // The same members serve listener 82 (persistence): a member's host
    // answers each connection as the listener it came for.
    let r = count(cloud, INTERNET, &fip, 82, 20, false);
    assert_eq!((r.failed, r.refused), (0, 0), "{:?}", r.counts);
    assert_eq!(r.counts.len(), 1, "one client, one member: {:?}", r.counts);

    // No member: refused at once.
    lb.listener("TCP", 83, false);
    cloud.wait_until("empty listener refuses", Duration::from_secs(10), || {
        count(cloud, "c1", &lb.vip, 83, 1, false).refused == 1
    });
    // Refused, not timed out: the client tells a reset (refused) from a
    // connection that never answers (failed), so no clock is needed here.
    let no_backend = cloud.drops("lb_no_backend");
    let r = count(cloud, "c1", &lb.vip, 83, 5, false);
    assert_eq!(
        (r.refused, r.failed),
        (5, 0),
        "a listener without members resets"
    );
    assert!(
        cloud.drops("lb_no_backend") >= no_backend + 5,
        "each refused SYN is counted as lb_no_backend"
    );

    // Draining: a held connection survives its member being disabled.
    let mut hold = cloud
        .region
        .command("c1", &[PYTHON, "-u", CLIENT, "hold", &lb.vip, "80"])
        .expect("command")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = std::io::BufReader::new(hold.stdout.take().expect("stdout"));
    let mut holder = String::new();
    out.read_line(&mut holder).expect("the holder's member");
    let holder = holder.trim().to_owned();
    assert!(members.contains_key(&holder), "held on {holder:?}");
    api.expect(
        200,
        "PUT",
        &format!("/v2/lbaas/pools/{p80}/members/{}", members[&holder]),
        Some(json!({"member": {"admin_state_up": false}})),
    );
    cloud.wait_until(
        "the disabled member drains",
        Duration::from_secs(10),
        || {
            member_status(&api, &lb.id)
                .get(&members[&holder])
                .map(String::as_str)
                == Some("OFFLINE")
        },
    );
    // From here on the held connection must keep echoing: the client
    // counts its echoes after this mark and goes on for 10 more after its
    // stdin closes, so the count cannot be met before the disable.
    let mut holder_in = hold.stdin.take().expect("stdin");
    holder_in.write_all(b"mark\n").expect("mark the holder");
    // The hosts apply the disable (new connections avoid the member).
    cloud.wait_until(
        "new connections avoid the disabled member",
        Duration::from_secs(60),
        || {
            !count(cloud, "c2", &lb.vip, 80, 10, false)
                .counts
                .contains_key(&holder)
        },
    );
    let r = count(cloud, "c2", &lb.vip, 80, 100, false);
    assert_eq!(r.failed, 0);
    assert!(
        !r.counts.contains_key(&holder),
        "the disabled member {holder} takes no new connection: {:?}",
        r.counts
    );
    drop(holder_in);
    let mut line = String::new();
    let _ = out.read_line(&mut line);
    let _ = hold.wait();
    let held: Value = serde_json::from_str(line.trim()).expect("hold result");
    assert!(
        held["error"].is_null() && held["after_mark"].as_u64().unwrap_or(0) >= 10,
        "the held connection went on after its member was disabled: {held}"
    );
    eprintln!("held connection on {holder}: {held}");
    // Its start and end in the access log of the client's host, through
    // stratoctl; the host's metrics file counts the listener's connections.
    let c1_host = cloud.host_named("az1-c1");
    let dir = cloud.agent_dir(&c1_host);
    let c1_client = format!("{}:", c1.ip);
    let mut logged: Option<(Vec<Value>, usize)> = None;
    cloud.wait_until(
        "the held connection's end is logged",
        Duration::from_secs(30),
        || {
            let o = std::process::Command::new(strato_tests::e2e::bin("stratoctl"))
                .args(["--json", "lb-log", "--listener", &l80, "--state-dir"])
                .arg(&dir)
                .output()
                .expect("stratoctl lb-log");
            let lines: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap_or_default();
            let end = lines.iter().position(|l| {
                l["event"] == "end"
                    && l["client"]
                        .as_str()
                        .is_some_and(|c| c.starts_with(&c1_client))
                    && l["duration_ms"].as_u64().unwrap_or(0) >= 5_000
                    && l["bytes_in"].as_u64().unwrap_or(0) > 1_000
                    && l["bytes_out"].as_u64().unwrap_or(0) > 1_000
                    && l["member"] == members[&holder].as_str()
            });
            logged = end.map(|i| (lines, i));
            logged.is_some()
        },
    );
    // Its start: an earlier line of the same connection (client address
    // and port, VIP, listener, member), no later than the end.
    let (lines, end_at) = logged.expect("logged");
    let end = &lines[end_at];
    let start = lines[..end_at]
        .iter()
        .rfind(|l| l["event"] == "start" && l["client"] == end["client"] && l["vip"] == end["vip"])
        .unwrap_or_else(|| {
            panic!("no start line before the held connection's end {end}: {lines:?}")
        });
    for field in ["listener", "member", "protocol"] {
        assert_eq!(
            start[field], end[field],
            "{field} of start {start} and end {end}"
        );
    }
    assert_eq!(start["listener"], l80.as_str());
    assert!(
        start["time"].as_str().unwrap_or("~") <= end["time"].as_str().unwrap_or(""),
        "start {start} after end {end}"
    );
    let metrics = std::fs::read_to_string(dir.join("metrics.prom")).expect("metrics.prom");
    let total: u64 = metrics
        .lines()
        .find(|l| {
            l.starts_with("strato_lb_listener_connections_total{")
                && l.contains(&format!("listener=\"{l80}\""))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!(
        total >= 500,
        "c1's host gave at least its 500 connections a member: {total}"
    );
    api.expect(
        200,
        "PUT",
        &format!("/v2/lbaas/pools/{p80}/members/{}", members[&holder]),
        Some(json!({"member": {"admin_state_up": true}})),
    );
    cloud.wait_until("members back", Duration::from_secs(10), || {
        let s = member_status(&api, &lb.id);
        members
            .values()
            .all(|m| s.get(m).map(String::as_str) == Some("ONLINE"))
    });

    // A member's VM dies: it turns ERROR (after max_retries_down failed
    // checks; how soon is a benchmark figure, here only that it happens
    // within a generous bound), then no new connection reaches it or fails.
    cloud.region.vm_delete("b4").expect("delete b4");
    let died = Instant::now();
    cloud.wait_until("b4 ERROR", Duration::from_secs(60), || {
        member_status(&api, &lb.id)
            .get(&members["b4"])
            .map(String::as_str)
            == Some("ERROR")
    });
    let took = died.elapsed();
    eprintln!(
        "b4 marked ERROR {:.1} s after its VM was deleted",
        took.as_secs_f64()
    );
    for c in [&c1, &c2] {
        cloud.wait_until(
            &format!("{}'s new connections avoid b4", c.name),
            Duration::from_secs(60),
            || {
                !count(cloud, &c.name, &lb.vip, 80, 10, false)
                    .counts
                    .contains_key("b4")
            },
        );
        let r = count(cloud, &c.name, &lb.vip, 80, 100, false);
        assert_eq!(
            (r.failed, r.refused),
            (0, 0),
            "after b4 died, from {}",
            c.name
        );
        assert!(!r.counts.contains_key("b4"), "{:?}", r.counts);
    }

    // Stats: the agents' counters, summed by the API.
    cloud.wait_until("listener stats", Duration::from_secs(10), || {
        let s = api.expect(
            200,
            "GET",
            &format!("/v2/lbaas/listeners/{l80}/stats"),
            None,
        );
        s["stats"]["total_connections"].as_u64().unwrap_or(0) >= 1200
            && s["stats"]["bytes_in"].as_u64().unwrap_or(0) > 0
            && s["stats"]["bytes_out"].as_u64().unwrap_or(0) > 0
    });

    // Cascade delete takes the VIP with it: the address no longer answers.
    api.expect(
        204,
        "DELETE",
        &format!("/v2/lbaas/loadbalancers/{}?cascade=true", lb.id),
        None,
    );
    cloud.wait_until("VIP gone", Duration::from_secs(10), || {
        let r = count(cloud, "c1", &lb.vip, 80, 1, false);
        r.counts.is_empty()
    });
}
