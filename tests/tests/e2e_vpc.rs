//! End to end, VPC dataplane, in the default region, configured only
//! through the API: two projects, each with a router, two subnets and four
//! VMs spread over hosts in both AZs, both using the same CIDRs. Within a
//! project every VM reaches every other (ping and TCP, answered by the right
//! VM); across projects not a packet arrives, also with crafted frames.

use std::{collections::BTreeMap, time::Duration};

use netns_harness::{Topology, VmSpec};
use serde_json::{json, Value};
use strato_tests::e2e::{Api, Cloud};

const CIDRS: [&str; 2] = ["10.0.1.0/24", "10.0.2.0/24"];

struct Vpc {
    nets: Vec<String>,
    subnets: Vec<String>,
}

fn id(v: &Value, kind: &str) -> String {
    v[kind]["id"].as_str().expect("id").to_owned()
}

/// A router with two networks and subnets attached.
fn vpc(api: &Api) -> Vpc {
    let r = id(
        &api.expect(
            201,
            "POST",
            "/v2.0/routers",
            Some(json!({"router": {"name": "vpc"}})),
        ),
        "router",
    );
    let mut out = Vpc {
        nets: vec![],
        subnets: vec![],
    };
    for (i, cidr) in CIDRS.iter().enumerate() {
        let n = id(
            &api.expect(
                201,
                "POST",
                "/v2.0/networks",
                Some(json!({"network": {"name": format!("net{i}")}})),
            ),
            "network",
        );
        let s = id(
            &api.expect(
                201,
                "POST",
                "/v2.0/subnets",
                Some(
                    json!({"subnet": {"network_id": n, "cidr": cidr, "ip_version": 4,
                    "dns_nameservers": ["10.0.1.53"]}}),
                ),
            ),
            "subnet",
        );
        api.expect(
            200,
            "PUT",
            &format!("/v2.0/routers/{r}/add_router_interface"),
            Some(json!({"subnet_id": s})),
        );
        out.nets.push(n);
        out.subnets.push(s);
    }
    out
}

#[derive(Clone, Debug)]
struct Vm {
    name: String,
    ip: String,
    mac: String,
    port: String,
}

/// Plays Nova: a port on `net`, a VM namespace with its tap, the binding.
fn boot(cloud: &Cloud, admin: &Api, api: &Api, net: &str, name: &str, host: &str) -> Vm {
    let p = api.expect(
        201,
        "POST",
        "/v2.0/ports",
        Some(json!({"port": {"network_id": net, "name": name}})),
    )["port"]
        .clone();
    let pid = p["id"].as_str().expect("id").to_owned();
    let ip = p["fixed_ips"][0]["ip_address"]
        .as_str()
        .expect("ip")
        .to_owned();
    let mac = p["mac_address"].as_str().expect("mac").to_owned();
    let h = cloud
        .region
        .hosts()
        .into_iter()
        .find(|h| h.name == host)
        .expect("host");
    let mut spec = VmSpec::new(name, host, &strato::network::ports::tap_name(&pid));
    spec.mac = Some(mac.parse().expect("mac"));
    let gw = ip.rsplit_once('.').expect("ip").0.to_owned() + ".1";
    spec.addr = Some(format!("{ip}/24").parse().expect("cidr"));
    spec.gateway = Some(gw.parse().expect("gw"));
    spec.mtu = Some(1450);
    cloud.region.vm_create(&spec).expect("vm create");
    admin.expect(
        200,
        "PUT",
        &format!("/v2.0/ports/{pid}"),
        Some(
            json!({"port": {"binding:host_id": Cloud::host_id(&h), "device_id": name,
            "device_owner": format!("compute:{}", h.az)}}),
        ),
    );
    // A TCP service that says who answers.
    let server = cloud
        .region
        .command(
            name,
            &[
                "busybox",
                "nc",
                "-ll",
                "-p",
                "7000",
                "-e",
                "/bin/echo",
                &format!("hello-from-{name}"),
            ],
        )
        .expect("command");
    cloud
        .region
        .spawn(&format!("tcp-{name}"), None, server)
        .expect("spawn tcp server");
    Vm {
        name: name.to_owned(),
        ip,
        mac,
        port: pid,
    }
}

fn port_status(api: &Api, id: &str) -> String {
    api.expect(200, "GET", &format!("/v2.0/ports/{id}"), None)["port"]["status"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// Every host's non-zero counters and drop reasons (for failure messages).
fn dump(cloud: &Cloud) -> String {
    let mut out = String::new();
    for h in cloud.region.hosts() {
        let dir = std::path::Path::new(strato::dataplane::PIN_ROOT).join(Cloud::host_id(&h));
        match strato::dataplane::Counters::read_pinned(&dir) {
            Ok(c) => {
                out += &format!("{}:\n", h.name);
                for (i, s) in &c.interfaces {
                    out += &format!("  if {i}: {s:?}\n");
                }
                for ((i, r), s) in &c.drops {
                    out += &format!("  drop if {i} {}: {}\n", r.label(), s.packets);
                }
            }
            Err(e) => out += &format!("{}: {e}\n", h.name),
        }
    }
    out
}

/// IPv4 packets a VM's stack received (Ip InReceives in its /proc/net/snmp).
fn rx_packets(cloud: &Cloud, vm: &str) -> u64 {
    let o = cloud
        .region
        .exec(vm, &["cat", "/proc/net/snmp"])
        .expect("exec");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut lines = text.lines().filter(|l| l.starts_with("Ip:"));
    let (Some(h), Some(v)) = (lines.next(), lines.next()) else {
        panic!("no Ip: lines in {vm}'s /proc/net/snmp");
    };
    let i = h
        .split_whitespace()
        .position(|f| f == "InReceives")
        .expect("InReceives");
    v.split_whitespace()
        .nth(i)
        .expect("value")
        .parse()
        .expect("number")
}

fn tcp_banner(cloud: &Cloud, from: &str, to_ip: &str) -> String {
    let o = cloud
        .region
        .exec(from, &["busybox", "nc", "-w", "2", to_ip, "7000"])
        .expect("exec");
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

#[test]
fn two_projects_same_cidrs_full_mesh_and_isolation() {
    let cloud = Cloud::up("vpc", &Topology::default_region());
    let admin = cloud.admin();
    let tenants = [cloud.tenant("red"), cloud.tenant("blue")];
    // Placement: per project, subnet 0 has two VMs on one host (local L2),
    // subnet 1 one VM on the other host of AZ1 and one in AZ2.
    let placement = [
        [(0, "az1-c1"), (0, "az1-c1"), (1, "az1-c2"), (1, "az2-c1")],
        [(0, "az2-c2"), (0, "az1-c2"), (1, "az2-c2"), (1, "az1-c1")],
    ];
    let mut vms: Vec<Vec<Vm>> = vec![];
    for (t, api) in tenants.iter().enumerate() {
        let v = vpc(api);
        let mut list = vec![];
        for (i, (net, host)) in placement[t].iter().enumerate() {
            let name = format!("{}{}", ["r", "b"][t], i + 1);
            list.push(boot(&cloud, &admin, api, &v.nets[*net], &name, host));
        }
        vms.push(list);
    }
    for (t, api) in tenants.iter().enumerate() {
        for vm in &vms[t] {
            cloud.wait_until(
                &format!("port of {} ACTIVE", vm.name),
                Duration::from_secs(15),
                || port_status(api, &vm.port) == "ACTIVE",
            );
        }
    }
    // Same addresses in both projects: the VPCs overlap completely.
    let ips = |t: usize| vms[t].iter().map(|v| v.ip.clone()).collect::<Vec<_>>();
    assert_eq!(ips(0), ips(1), "both projects got the same addresses");

    for t in 0..2 {
        let other = 1 - t;
        let before: BTreeMap<String, u64> = vms[other]
            .iter()
            .map(|v| (v.name.clone(), rx_packets(&cloud, &v.name)))
            .collect();
        for a in &vms[t] {
            // The gateway answers pings.
            let gw = a.ip.rsplit_once('.').expect("ip").0.to_owned() + ".1";
            assert!(
                cloud.ping(&a.name, &gw) || cloud.ping(&a.name, &gw),
                "{} cannot ping its gateway {gw}\n{}",
                a.name,
                dump(&cloud)
            );
            for b in &vms[t] {
                if a.name == b.name {
                    continue;
                }
                let ok = cloud.ping(&a.name, &b.ip) || cloud.ping(&a.name, &b.ip);
                assert!(
                    ok,
                    "{} ({}) cannot ping {} ({})\n{}",
                    a.name,
                    a.ip,
                    b.name,
                    b.ip,
                    dump(&cloud)
                );
                let banner = tcp_banner(&cloud, &a.name, &b.ip);
                assert_eq!(
                    banner,
                    format!("hello-from-{}", b.name),
                    "TCP {} -> {}",
                    a.name,
                    b.name
                );
            }
        }
        let after: BTreeMap<String, u64> = vms[other]
            .iter()
            .map(|v| (v.name.clone(), rx_packets(&cloud, &v.name)))
            .collect();
        assert_eq!(
            before, after,
            "project {t}'s traffic reached the other project's VMs"
        );
        let _ = &vms[t][0].mac;
    }
}
