//! End to end, VPC dataplane, in the default region, configured only
//! through the API: two projects, each with a router, two subnets and four
//! VMs spread over hosts in both AZs, both using the same CIDRs. VMs get
//! their configuration by DHCP (busybox udhcpc). Within a project every VM
//! reaches every other (ping and TCP, answered by the right VM); across
//! projects not a packet arrives, also with crafted frames (scapy: foreign
//! MACs and addresses, VXLAN with forged VNIs towards the underlay, spoofed
//! sources, ARP claims). Path MTU discovery carries a 4 MB TCP transfer
//! between VMs that believe in a 1500-byte MTU; an AZ spine failure cuts
//! only cross-AZ traffic until healed; an agent restart loses no packet of
//! a 50/s ping.

use std::{collections::BTreeMap, time::Duration};

use netns_harness::Topology;
use serde_json::{json, Value};
use strato_tests::e2e::{Api, Cloud, Servers, Vm, Vpc};

const CIDRS: [&str; 2] = ["10.0.1.0/24", "10.0.2.0/24"];

/// Servers started in VMs: reaped at the end (the region's teardown kills them).
static SERVERS: Servers = Servers::new();

fn vpc(api: &Api) -> Vpc {
    Cloud::vpc(api, &CIDRS, &["10.0.1.53"])
}

/// A VM in the project's default group, with the TCP service that names it.
fn boot(cloud: &Cloud, admin: &Api, api: &Api, net: &str, name: &str, host: &str) -> Vm {
    let vm = cloud.boot(admin, api, net, name, host, None);
    SERVERS.keep(cloud.hello_server(name));
    vm
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
        let dir = std::path::Path::new(strato_proto::naming::PIN_ROOT).join(Cloud::host_id(&h));
        match strato_dataplane::Counters::read_pinned(&dir) {
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

fn ping_ok(cloud: &Cloud, from: &str, to: &str) -> bool {
    cloud.ping(from, to) || cloud.ping(from, to)
}

/// Every host's drop counters summed by reason.
fn drops(cloud: &Cloud) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for h in cloud.region.hosts() {
        let dir = std::path::Path::new(strato_proto::naming::PIN_ROOT).join(Cloud::host_id(&h));
        if let Ok(c) = strato_dataplane::Counters::read_pinned(&dir) {
            for ((_, r), st) in &c.drops {
                *out.entry(r.label().to_owned()).or_default() += st.packets;
            }
        }
    }
    out
}

fn grew(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, reason: &str) -> u64 {
    after.get(reason).copied().unwrap_or(0) - before.get(reason).copied().unwrap_or(0)
}

#[test]
fn vpc_end_to_end() {
    let cloud = Cloud::up("vpc", &Topology::default_region());
    let admin = cloud.admin();
    let tenants = [cloud.tenant("red"), cloud.tenant("blue")];
    // Placement: per project, subnet 0 has two VMs on one host (local L2),
    // subnet 1 one VM on the other host of the AZ and one in the other AZ.
    let placement = [
        [(0, "az1-c1"), (0, "az1-c1"), (1, "az1-c2"), (1, "az2-c1")],
        [(0, "az2-c2"), (0, "az1-c2"), (1, "az2-c2"), (1, "az1-c1")],
    ];
    let mut vms: Vec<Vec<Vm>> = vec![];
    let mut vpcs = vec![];
    for (t, api) in tenants.iter().enumerate() {
        let v = vpc(api);
        let mut list = vec![];
        for (i, (net, host)) in placement[t].iter().enumerate() {
            let name = format!("{}{}", ["r", "b"][t], i + 1);
            list.push(boot(&cloud, &admin, api, &v.nets[*net], &name, host));
        }
        vms.push(list);
        vpcs.push(v);
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

    // DHCP: every VM got its port's address and the subnet's settings from
    // the host it runs on (busybox udhcpc, a real client).
    for vm in vms.iter().flatten() {
        let lease = cloud
            .region
            .vm_wait_lease(&vm.name, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", vm.name, dump(&cloud)));
        assert_eq!(
            lease.ip.ip().to_string(),
            vm.ip,
            "{}: leased address",
            vm.name
        );
        assert_eq!(lease.ip.prefix(), 24, "{}", vm.name);
        let gw = vm.ip.rsplit_once('.').expect("ip").0.to_owned() + ".1";
        assert_eq!(
            lease.router.map(|r| r.to_string()),
            Some(gw.clone()),
            "{}",
            vm.name
        );
        assert_eq!(
            lease.server_id.map(|r| r.to_string()),
            Some(gw),
            "{}",
            vm.name
        );
        assert_eq!(lease.mtu, Some(1450), "{}: overlay MTU", vm.name);
        assert_eq!(
            lease.dns,
            vec!["10.0.1.53".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        assert_eq!(lease.lease_secs, Some(86_400));
    }
    // Same addresses in both projects: the VPCs overlap completely.
    let ips = |t: usize| vms[t].iter().map(|v| v.ip.clone()).collect::<Vec<_>>();
    assert_eq!(ips(0), ips(1), "both projects got the same addresses");

    // Full mesh within each project (ping and TCP, answered by the right
    // VM); not one IPv4 packet reaches the other project's VMs.
    for t in 0..2 {
        let other = 1 - t;
        let before: BTreeMap<String, u64> = vms[other]
            .iter()
            .map(|v| (v.name.clone(), rx_packets(&cloud, &v.name)))
            .collect();
        for a in &vms[t] {
            let gw = a.ip.rsplit_once('.').expect("ip").0.to_owned() + ".1";
            assert!(
                ping_ok(&cloud, &a.name, &gw),
                "{} cannot ping its gateway {gw}\n{}",
                a.name,
                dump(&cloud)
            );
            for b in &vms[t] {
                if a.name == b.name {
                    continue;
                }
                assert!(
                    ping_ok(&cloud, &a.name, &b.ip),
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
    }

    trace(&cloud, &vms[0]);
    static_route(&cloud, &tenants[0], &vpcs[0], &vms[0]);
    dhcp_renewal(&cloud, &vms[0][1]);
    crafted_frames(&cloud, &vms);
    path_mtu(&cloud, &vms[0]);
    spine_failure(&cloud, &vms[0]);
    agent_restart(&cloud, &vms[0]);
    SERVERS.reap();
}

/// `stratoctl trace` runs synthetic packets from r1's port through
/// az1-c1's live program and names the path each takes.
fn trace(cloud: &Cloud, red: &[Vm]) {
    let host = cloud.host_named("az1-c1");
    let hid = Cloud::host_id(&host);
    let run = |to: &str| -> Value {
        let o = std::process::Command::new(strato_tests::e2e::bin("stratoctl"))
            .args([
                "--json",
                "trace",
                "--host",
                &hid,
                "--port",
                &red[0].port,
                "--to",
                to,
            ])
            .args(["--proto", "tcp", "--dport", "7000"])
            .output()
            .expect("stratoctl");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).expect("trace JSON")
    };
    // r2: same subnet, same host.
    let t = run(&red[1].ip);
    assert_eq!(t["verdict"], "XDP_REDIRECT", "{t}");
    let path = t["path"].as_str().unwrap_or_default();
    assert!(
        path.contains("switched") && path.contains("redirect to local tap"),
        "{t}"
    );
    // r4: other subnet, other AZ.
    let t = run(&red[3].ip);
    assert_eq!(t["verdict"], "XDP_REDIRECT", "{t}");
    let path = t["path"].as_str().unwrap_or_default();
    assert!(
        path.contains("routed") && path.contains("VXLAN") && path.contains("198.18.2.1"),
        "{t}"
    );
    // Without --host: the controller says where the port is bound.
    let o = std::process::Command::new(strato_tests::e2e::bin("stratoctl"))
        .arg("--controller")
        .arg(format!("unix:{}", cloud.socket.display()))
        .args([
            "--json",
            "trace",
            "--port",
            &red[0].port,
            "--to",
            &red[1].ip,
        ])
        .output()
        .expect("stratoctl");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t: Value = serde_json::from_slice(&o.stdout).expect("trace JSON");
    assert_eq!(t["host"], hid.as_str(), "{t}");
    assert_eq!(t["verdict"], "XDP_REDIRECT", "{t}");
    // Nobody: host unreachable, answered by the gateway.
    let t = run("10.0.2.200");
    assert_eq!(t["drop_reasons"], json!(["host_unreachable"]), "{t}");
    let t = run("192.168.7.7");
    assert_eq!(t["drop_reasons"], json!(["no_route"]), "{t}");
}

/// The router's static route sends a prefix to a VM (r3) that owns it
/// through an allowed address pair (a VM acting as a router, Neutron's way).
fn static_route(cloud: &Cloud, api: &Api, vpc: &Vpc, red: &[Vm]) {
    let (r1, r3) = (&red[0], &red[2]);
    api.expect(
        200,
        "PUT",
        &format!("/v2.0/routers/{}", vpc.router),
        Some(json!({"router": {"routes": [{"destination": "192.168.50.0/24", "nexthop": r3.ip}]}})),
    );
    api.expect(
        200,
        "PUT",
        &format!("/v2.0/ports/{}", r3.port),
        Some(json!({"port": {"allowed_address_pairs": [{"ip_address": "192.168.50.0/24"}]}})),
    );
    let o = cloud
        .region
        .exec(
            &r3.name,
            &["ip", "addr", "add", "192.168.50.1/32", "dev", "lo"],
        )
        .expect("exec");
    assert!(o.status.success());
    cloud.wait_until(
        "r1 reaches 192.168.50.1 through the static route to r3",
        Duration::from_secs(10),
        || cloud.ping(&r1.name, "192.168.50.1"),
    );
    // Removing the route removes the path (ICMP network unreachable).
    api.expect(
        200,
        "PUT",
        &format!("/v2.0/routers/{}", vpc.router),
        Some(json!({"router": {"routes": []}})),
    );
    cloud.wait_until("the route is gone", Duration::from_secs(10), || {
        !cloud.ping(&r1.name, "192.168.50.1")
    });
}

/// udhcpc renews its lease (SIGUSR1): a unicast REQUEST to the server
/// identifier (the gateway), answered by the host's DHCP server.
fn dhcp_renewal(cloud: &Cloud, vm: &Vm) {
    let dir = cloud.region.state_dir();
    let lease = dir.join(format!("vm-{}.lease", vm.name));
    let before = std::fs::metadata(&lease)
        .and_then(|m| m.modified())
        .expect("lease file");
    let pid = std::fs::read_to_string(dir.join("pids").join(format!("vm-{}-udhcpc.pid", vm.name)))
        .expect("udhcpc pid file");
    let pid = pid.split_whitespace().next().expect("pid").to_owned();
    std::thread::sleep(Duration::from_millis(20));
    let o = std::process::Command::new("kill")
        .args(["-USR1", &pid])
        .output()
        .expect("kill");
    assert!(o.status.success(), "kill -USR1 {pid}");
    cloud.wait_until("the lease is renewed", Duration::from_secs(10), || {
        std::fs::metadata(&lease)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t > before)
    });
    let l = cloud
        .region
        .vm_lease(&vm.name)
        .expect("lease")
        .expect("a lease");
    assert_eq!(l.ip.ip().to_string(), vm.ip);
}

/// A red VM forges frames with scapy: blue's MAC and address as
/// destination, its own VNI-tagged VXLAN to a host's underlay address,
/// spoofed source MAC and IP, a gratuitous ARP. None reaches a blue VM;
/// each is dropped with its reason.
fn crafted_frames(cloud: &Cloud, vms: &[Vec<Vm>]) {
    let (r1, r3) = (&vms[0][0], &vms[0][2]);
    let (b1, b2) = (&vms[1][0], &vms[1][1]);
    let gw_mac = {
        let o = cloud
            .region
            .exec(&r1.name, &["ip", "neigh", "show", "10.0.1.1"])
            .expect("exec");
        let t = String::from_utf8_lossy(&o.stdout).into_owned();
        t.split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .unwrap_or_else(|| panic!("no gateway MAC in {t:?}"))
            .to_owned()
    };
    let script = format!(
        r#"
import logging; logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
from scapy.all import Ether, IP, UDP, ICMP, ARP, Raw, sendp
from scapy.layers.vxlan import VXLAN
me, mine = "{me}", "{myip}"
f = []
# blue's MAC and (overlapping) address: switched in red's VPC only
f.append(Ether(src=me, dst="{bmac}")/IP(src=mine, dst="{bip}")/ICMP())
f.append(Ether(src=me, dst="{bmac2}")/IP(src=mine, dst="{bip2}")/UDP(dport=7000)/Raw(b"x"*20))
# VXLAN with another VNI to a host's underlay address, routed via the gateway
for vni in range(1, 200):
    inner = Ether(dst="{bmac}")/IP(src=mine, dst="{bip}")/ICMP()
    f.append(Ether(src=me, dst="{gw}")/IP(src=mine, dst="198.18.2.3")/UDP(sport=4789, dport=4789)/VXLAN(vni=vni)/inner)
# spoofed source MAC (blue's), spoofed source IP (red r3's)
f.append(Ether(src="{bmac}", dst="{gw}")/IP(src=mine, dst="{r3ip}")/ICMP())
f.append(Ether(src=me, dst="{gw}")/IP(src="{r3ip}", dst="{bip}")/ICMP())
# ARP claiming another VM's address; a gratuitous ARP for its own
f.append(Ether(src=me, dst="ff:ff:ff:ff:ff:ff")/ARP(op=2, hwsrc=me, psrc="{r3ip}", pdst="{r3ip}"))
f.append(Ether(src=me, dst="ff:ff:ff:ff:ff:ff")/ARP(op=2, hwsrc=me, psrc=mine, pdst=mine))
sendp(f, iface="eth0", verbose=False)
print(len(f))
"#,
        me = r1.mac,
        myip = r1.ip,
        bmac = b2.mac,
        bip = b2.ip,
        bmac2 = b1.mac,
        bip2 = b1.ip,
        gw = gw_mac,
        r3ip = r3.ip,
    );
    let blue_before: Vec<u64> = vms[1].iter().map(|v| rx_packets(cloud, &v.name)).collect();
    let before = drops(cloud);
    cloud.python(&r1.name, &script, "scapy");
    std::thread::sleep(Duration::from_millis(300));
    let after = drops(cloud);
    let blue_after: Vec<u64> = vms[1].iter().map(|v| rx_packets(cloud, &v.name)).collect();
    assert_eq!(blue_before, blue_after, "a forged frame reached a blue VM");
    for (reason, at_least) in [
        ("unknown_destination", 2),
        ("no_route", 199),
        ("spoofed_mac", 1),
        ("spoofed_ip", 2),
        ("arp_not_request", 1),
    ] {
        let n = grew(&before, &after, reason);
        assert!(
            n >= at_least,
            "{reason}: {n} drops, want >= {at_least}\n{after:?}"
        );
    }
}

/// Two VMs that believe in a 1500-byte MTU (more than the overlay's 1450)
/// in different AZs and subnets: a large TCP transfer completes because the
/// gateway answers oversized DF packets with ICMP fragmentation needed.
fn path_mtu(cloud: &Cloud, red: &[Vm]) {
    let (a, b) = (&red[0], &red[3]); // az1-c1 subnet 0, az2-c1 subnet 1
    for v in [a, b] {
        let o = cloud
            .region
            .exec(&v.name, &["ip", "link", "set", "eth0", "mtu", "1500"])
            .expect("exec");
        assert!(o.status.success());
        // Forget any learnt path MTU.
        let _ = cloud
            .region
            .exec(&v.name, &["ip", "route", "flush", "cache"]);
    }
    // A receiver that counts every byte until the sender closes, then closes.
    let done = cloud.region.state_dir().join("pmtu-received");
    let server_py = format!(
        "import socket\ns = socket.socket(); s.setsockopt(1, 2, 1); s.bind(('', 7001)); s.listen()\n\
         c, _ = s.accept(); n = 0\nwhile True:\n    d = c.recv(65536)\n    if not d: break\n    n += len(d)\n\
         open('{p}.tmp', 'w').write(str(n))\nimport os; os.rename('{p}.tmp', '{p}')\nc.close()\n",
        p = done.display()
    );
    let server = cloud
        .region
        .command(&b.name, &["/usr/bin/python3", "-c", &server_py])
        .expect("command");
    let child = cloud
        .region
        .spawn("pmtu-server", None, server)
        .expect("spawn");
    SERVERS.keep(child);
    std::thread::sleep(Duration::from_millis(500));
    let before = drops(cloud);
    // 4 MB in full-size segments: the first ones are all too big.
    let client_py = format!(
        "import socket\ns = socket.create_connection(('{}', 7001), timeout=20)\n\
         s.sendall(b'\\0' * 4000000); s.shutdown(socket.SHUT_WR); s.recv(1)\n",
        b.ip
    );
    cloud.python(
        &a.name,
        &client_py,
        "transfer across AZs with a 1500-byte MTU failed",
    );
    cloud.wait_until(
        "the receiver counted the bytes",
        Duration::from_secs(10),
        || done.exists(),
    );
    let got = std::fs::read_to_string(&done).expect("read");
    assert_eq!(got.trim(), "4000000", "bytes received");
    let after = drops(cloud);
    assert!(
        grew(&before, &after, "fragmentation_needed") >= 1,
        "no ICMP fragmentation needed was sent: {after:?}"
    );
    let o = cloud
        .region
        .exec(&a.name, &["ip", "route", "get", &b.ip])
        .expect("exec");
    let route = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        route.contains("mtu 1450"),
        "sender learnt no path MTU: {route}"
    );
    for v in [a, b] {
        let _ = cloud
            .region
            .exec(&v.name, &["ip", "link", "set", "eth0", "mtu", "1450"]);
    }
}

/// AZ1's spine link fails: cross-AZ traffic stops, traffic within AZ1
/// (across hosts) goes on; healing restores it.
fn spine_failure(cloud: &Cloud, red: &[Vm]) {
    let (a, same_az, other_az) = (&red[0], &red[2], &red[3]);
    cloud
        .region
        .fail(&netns_harness::FailTarget::Link("az1-spine".into()))
        .expect("fail");
    assert!(
        ping_ok(cloud, &a.name, &same_az.ip),
        "within AZ1 broken by the spine failure"
    );
    assert!(
        !cloud.ping(&a.name, &other_az.ip),
        "cross-AZ still works with the spine down"
    );
    cloud.region.heal().expect("heal");
    cloud.wait_until(
        "cross-AZ works again after heal",
        Duration::from_secs(10),
        || cloud.ping(&a.name, &other_az.ip),
    );
}

/// The agent of az1-c1 is killed and restarted while a VM there pings a VM
/// in the other AZ every 20 ms: forwarding never depended on the agent.
/// Programs stay attached through their pinned links and read pinned maps,
/// and the restarted agent adopts them (its port filter replaced in place),
/// so not one probe may be lost. The ping runs from before the kill until
/// after the new agent has reported.
fn agent_restart(cloud: &Cloud, red: &[Vm]) {
    let (a, b) = (&red[0], &red[3]);
    let host = cloud.host_named("az1-c1");
    assert!(ping_ok(cloud, &a.name, &b.ip), "no path before the restart");
    let old = cloud.host(&host).report;
    let pinger = cloud.pinger("ping-agent-restart", &a.name, &b.ip);
    std::thread::sleep(Duration::from_millis(800));
    cloud.kill("agent-az1-c1");
    std::thread::sleep(Duration::from_millis(500));
    let restarted_ms = strato_proto::time::now_ms();
    cloud.start_agent(&host);
    cloud.wait_until(
        "the restarted agent reports (a report newer than the restart)",
        Duration::from_secs(60),
        || {
            let s = cloud.host(&host);
            s.state == "up" && s.report.pid != old.pid && s.report.started_at_ms >= restarted_ms
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    let ping = pinger.stop();
    eprintln!(
        "agent restart: {} of {} pings answered",
        ping.received, ping.transmitted
    );
    // The restarted agent replaced its TC filter on the port, not added one.
    let tap = strato_proto::naming::tap_name(&a.port);
    let o = cloud
        .region
        .exec("az1-c1", &["tc", "filter", "show", "dev", &tap, "ingress"])
        .expect("tc");
    let filters = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains("strato_port_tc"))
        .count();
    assert_eq!(filters, 1, "{}", String::from_utf8_lossy(&o.stdout));
    ping.assert_all_answered("across an agent restart");
}
