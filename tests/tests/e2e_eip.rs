//! End to end, elastic IPs, in the default region (two AZs, a gateway host
//! in each, an internet namespace with a client), configured only through
//! the API, with real TCP, UDP and ICMP:
//!
//! - the operator creates the external network and its EIP pool; a tenant
//!   gives its router an external gateway and binds an EIP to a VM;
//! - the internet client reaches the VM by its EIP only on the port its
//!   security group allows (TCP 7000 yes; ping and TCP 7001 no);
//! - the VM reaches the internet with its EIP as the source (TCP and UDP,
//!   as the client sees them);
//! - a VM without an EIP reaches the internet through the router's SNAT,
//!   with the router's gateway address as its source; with SNAT off it does
//!   not (counted as `no_elastic_ip`);
//! - the gateway host doing the router's SNAT fails: SNAT moves to the
//!   other zone's gateway host, and the EIP keeps working;
//! - unbinding stops inbound traffic; deleting the VM's port keeps the EIP
//!   allocated (DOWN, unbound); binding it to a VM in the other AZ works;
//! - moving the EIP to another VM resets the connections held to the old one
//!   (no hang), and new connections reach the new one.

use std::time::Duration;

use netns_harness::Topology;
use serde_json::{json, Value};
use strato_tests::e2e::{json_lines, Api, Cloud, Servers};

const CLIENT: &str = "inet-client1";
const CLIENT_IP: &str = "203.0.113.5";
const WHOAMI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/whoami.py");
const SGCONN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/sgconn.py");
const PYTHON: &str = "/usr/bin/python3";

static SERVERS: Servers = Servers::new();

fn keep(c: std::process::Child) {
    SERVERS.keep(c);
}

fn exec(cloud: &Cloud, node: &str, argv: &[&str]) -> (bool, String) {
    let o = cloud.region.exec(node, argv).expect("exec");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).trim().to_owned(),
    )
}

/// The banner of `addr`:`port` as `node` reads it ("" when unreachable).
fn banner(cloud: &Cloud, node: &str, addr: &str, port: u16) -> String {
    exec(
        cloud,
        node,
        &["busybox", "nc", "-w", "2", addr, &port.to_string()],
    )
    .1
}

/// The source address the client sees for `node`'s UDP datagram.
fn udp_source(cloud: &Cloud, node: &str) -> String {
    let script = format!(
        "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2); \
         s.sendto(b'x', ('{CLIENT_IP}', 8000)); print(s.recv(100).decode().strip())"
    );
    exec(cloud, node, &[PYTHON, "-c", &script]).1
}

/// Binds the elastic IP `fip` to `port` (unbinds it with `None`): 200.
fn bind(api: &Api, fip: &str, port: Option<&str>) {
    api.expect(
        200,
        "PUT",
        &format!("/v2.0/floatingips/{fip}"),
        Some(json!({"floatingip": {"port_id": port}})),
    );
}

fn fip_status(api: &Api, fip: &str) -> Value {
    api.expect(200, "GET", &format!("/v2.0/floatingips/{fip}"), None)["floatingip"].clone()
}

#[test]
fn elastic_ips_end_to_end() {
    let cloud = Cloud::up("eip", &Topology::default_region());
    SERVERS.run_then_reap(|| run(&cloud), || {});
}

fn run(cloud: &Cloud) {
    let admin = cloud.admin();
    let api = cloud.tenant("eipt");
    // The operator's external network and its EIP pool.
    let ext = Cloud::external_network(&admin);
    // The tenant's VPC, its way out, and a group open on TCP 7000 only.
    let vpc = Cloud::vpc(&api, &["10.0.1.0/24", "10.0.2.0/24"], &[]);
    Cloud::router_gateway(&api, &vpc.router, &ext);
    let web = api.security_group("web");
    api.allow_tcp_from_cidr(&web, 7000, "0.0.0.0/0");
    let vm1 = cloud.boot(&admin, &api, &vpc.nets[0], "vm1", "az1-c1", Some(&[&web]));
    let vm2 = cloud.boot(&admin, &api, &vpc.nets[1], "vm2", "az2-c1", None);
    for vm in [&vm1, &vm2] {
        keep(cloud.hello_server(&vm.name));
    }
    keep(
        cloud
            .region
            .command(
                &vm1.name,
                &[
                    "busybox",
                    "nc",
                    "-ll",
                    "-p",
                    "7001",
                    "-e",
                    "/bin/echo",
                    "seven-thousand-one",
                ],
            )
            .expect("command")
            .spawn()
            .expect("spawn"),
    );
    keep(
        cloud
            .region
            .command(CLIENT, &[PYTHON, WHOAMI, "8000"])
            .expect("command")
            .spawn()
            .expect("spawn"),
    );
    cloud.wait_until_active(&api, &[&vm1, &vm2]);

    // Allocate from the pool, then bind.
    let f = api.expect(
        201,
        "POST",
        "/v2.0/floatingips",
        Some(json!({"floatingip": {"floating_network_id": ext}})),
    )["floatingip"]
        .clone();
    let fip = f["id"].as_str().expect("id").to_owned();
    let eip = f["floating_ip_address"]
        .as_str()
        .expect("address")
        .to_owned();
    assert_eq!(f["status"], "DOWN", "unbound: {f}");
    bind(&api, &fip, Some(&vm1.port));
    cloud.wait_until("the EIP is ACTIVE", Duration::from_secs(10), || {
        fip_status(&api, &fip)["status"] == "ACTIVE"
    });
    let bound = fip_status(&api, &fip);
    assert_eq!(bound["fixed_ip_address"], vm1.ip.as_str());
    assert_eq!(bound["router_id"], vpc.router.as_str());

    // Inbound: only what the group allows.
    cloud.wait_until(
        "the client reaches vm1 by its EIP",
        Duration::from_secs(10),
        || banner(cloud, CLIENT, &eip, 7000) == "hello-from-vm1",
    );
    // Refused by vm1's group, counted on vm1's host.
    cloud.assert_dropped(
        "az1-c1",
        "policy_denied_ingress",
        "TCP 7001 by the EIP (not allowed)",
        || !banner(cloud, CLIENT, &eip, 7001).is_empty(),
    );
    cloud.assert_dropped(
        "az1-c1",
        "policy_denied_ingress",
        "ICMP by the EIP (not allowed)",
        || cloud.ping(CLIENT, &eip),
    );
    // An operator's trace of the way out runs the live programs and
    // changes nothing (it once replaced the agent's tail programs).
    let trace = std::process::Command::new(strato_tests::e2e::bin("stratoctl"))
        .arg("--controller")
        .arg(format!("unix:{}", cloud.socket.display()))
        .args([
            "trace", "--port", &vm1.port, "--to", CLIENT_IP, "--proto", "tcp", "--dport", "8000",
        ])
        .output()
        .expect("stratoctl trace");
    let text = String::from_utf8_lossy(&trace.stdout);
    assert!(
        trace.status.success(),
        "trace: {text} {}",
        String::from_utf8_lossy(&trace.stderr)
    );
    assert!(
        text.contains("XDP_REDIRECT") && text.contains("VXLAN encapsulation"),
        "the trace shows the way out through a gateway host: {text}"
    );
    // Outbound: the client sees the EIP.
    assert_eq!(banner(cloud, &vm1.name, CLIENT_IP, 8000), eip, "TCP source");
    assert_eq!(udp_source(cloud, &vm1.name), eip, "UDP source");
    assert!(cloud.ping(&vm1.name, CLIENT_IP), "vm1 pings the client");

    // A VM without an EIP gets out through the router's SNAT, with the
    // router's gateway address as its source (TCP, UDP, ICMP echo).
    let router =
        api.expect(200, "GET", &format!("/v2.0/routers/{}", vpc.router), None)["router"].clone();
    let snat_ip = router["external_gateway_info"]["external_fixed_ips"][0]["ip_address"]
        .as_str()
        .expect("gateway address")
        .to_owned();
    assert_eq!(
        router["external_gateway_info"]["enable_snat"], true,
        "{router}"
    );
    cloud.wait_until(
        "vm2 reaches the client through SNAT",
        Duration::from_secs(10),
        || banner(cloud, &vm2.name, CLIENT_IP, 8000) == snat_ip,
    );
    assert_eq!(udp_source(cloud, &vm2.name), snat_ip, "UDP through SNAT");
    assert!(
        cloud.ping(&vm2.name, CLIENT_IP),
        "vm2 pings the client through SNAT"
    );
    // ICMP errors about SNAT'd flows come back translated: a datagram to a
    // closed port of the client gets "connection refused".
    let refused = "import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.connect(('203.0.113.5', 9))\ns.send(b'x')\ntime.sleep(0.5)\ntry:\n    s.send(b'x')\n    s.settimeout(1)\n    s.recv(10)\n    print('no error')\nexcept ConnectionRefusedError:\n    print('refused')\nexcept socket.timeout:\n    print('timeout')\n";
    assert_eq!(
        exec(cloud, &vm2.name, &[PYTHON, "-c", refused]).1,
        "refused",
        "the port unreachable reaches the VM behind SNAT"
    );
    // Nothing comes in through the SNAT address unasked: the gateway host
    // doing the router's SNAT drops it as a flow it does not know.
    let snat_host = format!(
        "{}-gw1",
        api.expect(200, "GET", &format!("/v2.0/routers/{}", vpc.router), None)["router"]
            ["availability_zones"][0]
            .as_str()
            .expect("router scheduled")
    );
    cloud.assert_dropped(
        &snat_host,
        "snat_no_flow",
        "the client -> the SNAT address:7000, unasked",
        || !banner(cloud, CLIENT, &snat_ip, 7000).is_empty(),
    );

    // SNAT off: vm2 no longer gets out (counted); vm1 still does by its EIP.
    api.expect(
        200,
        "PUT",
        &format!("/v2.0/routers/{}", vpc.router),
        Some(
            json!({"router": {"external_gateway_info": {"network_id": ext, "enable_snat": false}}}),
        ),
    );
    cloud.wait_until(
        "SNAT off: vm2 no longer gets out",
        Duration::from_secs(30),
        || banner(cloud, &vm2.name, CLIENT_IP, 8000).is_empty(),
    );
    cloud.assert_dropped(
        "az2-c1",
        "no_elastic_ip",
        "SNAT off: vm2 -> the client",
        || !banner(cloud, &vm2.name, CLIENT_IP, 8000).is_empty(),
    );
    assert_eq!(banner(cloud, &vm1.name, CLIENT_IP, 8000), eip);
    api.expect(
        200,
        "PUT",
        &format!("/v2.0/routers/{}", vpc.router),
        Some(
            json!({"router": {"external_gateway_info": {"network_id": ext, "enable_snat": true}}}),
        ),
    );
    cloud.wait_until("SNAT on again", Duration::from_secs(10), || {
        banner(cloud, &vm2.name, CLIENT_IP, 8000) == snat_ip
    });

    // The gateway host doing the router's SNAT fails: SNAT moves to the
    // other zone's gateway host (the router's availability zone says where).
    let zones = |api: &Api| {
        api.expect(200, "GET", &format!("/v2.0/routers/{}", vpc.router), None)["router"]
            ["availability_zones"]
            .clone()
    };
    let az = zones(&api)[0]
        .as_str()
        .expect("router scheduled")
        .to_owned();
    let failed = format!("{az}-gw1");
    cloud
        .region
        .fail(&netns_harness::FailTarget::Host(failed.clone()))
        .expect("fail gateway");
    cloud.wait_until(
        "the router's SNAT moves to the other zone",
        Duration::from_secs(15),
        || zones(&api)[0].as_str().is_some_and(|z| z != az),
    );
    cloud.wait_until(
        "vm2 gets out through the other gateway",
        Duration::from_secs(10),
        || banner(cloud, &vm2.name, CLIENT_IP, 8000) == snat_ip,
    );
    cloud.wait_until(
        "the client still reaches vm1 by its EIP",
        Duration::from_secs(10),
        || banner(cloud, CLIENT, &eip, 7000) == "hello-from-vm1",
    );
    cloud.region.heal().expect("heal");
    eprintln!("gateway {failed} failed and healed; SNAT moved away from {az}");

    // Unbind: inbound stops.
    bind(&api, &fip, None);
    cloud.wait_until(
        "unbound: the client no longer reaches vm1",
        Duration::from_secs(10),
        || banner(cloud, CLIENT, &eip, 7000).is_empty(),
    );
    assert_eq!(fip_status(&api, &fip)["status"], "DOWN");

    // Rebind, delete the port: the EIP stays allocated; bind it to vm3 in the other AZ.
    bind(&api, &fip, Some(&vm1.port));
    cloud.wait_until("rebound to vm1", Duration::from_secs(10), || {
        banner(cloud, CLIENT, &eip, 7000) == "hello-from-vm1"
    });
    api.expect(204, "DELETE", &format!("/v2.0/ports/{}", vm1.port), None);
    let kept = fip_status(&api, &fip);
    assert_eq!(kept["port_id"], Value::Null, "{kept}");
    assert_eq!(kept["status"], "DOWN");
    assert_eq!(kept["floating_ip_address"], eip.as_str());
    let vm3 = cloud.boot(&admin, &api, &vpc.nets[0], "vm3", "az2-c2", Some(&[&web]));
    keep(cloud.hello_server(&vm3.name));
    cloud.wait_until_active(&api, &[&vm3]);
    bind(&api, &fip, Some(&vm3.port));
    cloud.wait_until(
        "the client reaches vm3 by the same EIP",
        Duration::from_secs(10),
        || banner(cloud, CLIENT, &eip, 7000) == "hello-from-vm3",
    );
    assert_eq!(banner(cloud, &vm3.name, CLIENT_IP, 8000), eip);

    // Rebinding ends the old flows cleanly: a connection to the EIP held
    // while the EIP moves to another VM (whose group admits the port but
    // which has no such socket) is reset by that VM, not left hanging.
    api.allow_tcp_from_cidr(&web, 7100, "0.0.0.0/0");
    keep(
        cloud
            .region
            .command(&vm3.name, &[PYTHON, SGCONN, "serve", "7100"])
            .expect("command")
            .spawn()
            .expect("spawn"),
    );
    api.expect(
        200,
        "PUT",
        &format!("/v2.0/ports/{}", vm2.port),
        Some(json!({"port": {"security_groups": [web]}})),
    );
    cloud.wait_until(
        "the client reaches vm3:7100 by the EIP",
        Duration::from_secs(10),
        || {
            cloud
                .region
                .exec(CLIENT, &[PYTHON, SGCONN, "connect", &eip, "7100", "1"])
                .is_ok_and(|o| o.status.success())
        },
    );
    // The client follows the connection (tracked by the region: killed
    // by its teardown on failure) until it ends.
    let mut follow = std::process::Command::new(PYTHON);
    follow
        .args([SGCONN, "follow", &eip, "7100"])
        .stdin(std::process::Stdio::piped());
    let mut hold = cloud
        .region
        .spawn("sgconn-eip", Some(CLIENT), follow)
        .expect("spawn follow");
    let log = cloud.region.state_dir().join("logs/sgconn-eip.log");
    let events = || json_lines(&log);
    cloud.wait_until(
        "the held connection works before the move",
        Duration::from_secs(60),
        || events().iter().filter(|e| e["echo"].is_u64()).count() >= 5,
    );
    bind(&api, &fip, Some(&vm2.port));
    cloud.wait_until(
        "the old flow ends after the move",
        Duration::from_secs(60),
        || events().iter().any(|e| e["final"] == true),
    );
    drop(hold.stdin.take());
    let _ = hold.wait();
    let all = events();
    let c = all.iter().find(|e| e["final"] == true).expect("final");
    assert_eq!(
        c["error"], "reset",
        "the old flow ends with a reset after the move: {c}"
    );
    assert_eq!(
        banner(cloud, CLIENT, &eip, 7000),
        "hello-from-vm2",
        "new connections reach vm2"
    );
}

/// iperf3 from `client` to `server_addr` (the server runs in `server`):
/// the rate received, in Mbit/s. `reverse`: the server sends. `udp`: UDP
/// offered at `udp_mbps`.
fn iperf(
    cloud: &Cloud,
    server: &str,
    client: &str,
    server_addr: &str,
    reverse: bool,
    udp: Option<u32>,
) -> f64 {
    let mut s = cloud
        .region
        .command(server, &["iperf3", "-s", "-1"])
        .expect("command")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("iperf3 server");
    strato_tests::benchvpc::wait_listening(&cloud.region, server, 5201, Duration::from_secs(30))
        .expect("the iperf3 server listens");
    // The first 2 s are left out: they hold the bucket's initial burst and
    // TCP's start.
    let mut argv = vec!["iperf3", "-c", server_addr, "-t", "6", "-O", "2", "-J"];
    if reverse {
        argv.push("-R");
    }
    let rate;
    if let Some(m) = udp {
        rate = format!("{m}M");
        argv.extend(["-u", "-b", &rate, "-l", "1200"]);
    }
    let o = cloud.region.exec(client, &argv).expect("iperf3 client");
    let _ = s.kill();
    let _ = s.wait();
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("iperf3 JSON: {e}: {}", String::from_utf8_lossy(&o.stdout)));
    let end = &v["end"];
    let bps = if udp.is_some() {
        match end["sum_received"]["bits_per_second"].as_f64() {
            Some(b) => b,
            None => {
                let sum = &end["sum"];
                sum["bits_per_second"].as_f64().unwrap_or(0.0)
                    * (1.0 - sum["lost_percent"].as_f64().unwrap_or(0.0) / 100.0)
            }
        }
    } else {
        end["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or_else(|| panic!("iperf3: no end.sum_received: {v}"))
    };
    bps / 1e6
}

/// Per-EIP bandwidth limits (Neutron QoS on the floating IP), enforced in
/// the dataplane in both directions: iperf3 TCP and UDP at 10 and 200
/// Mbit/s, none more than 10% above the limit and none below half of it.
#[test]
fn elastic_ip_bandwidth_limits() {
    let cloud = Cloud::up("eqs", &Topology::default_region());
    let admin = cloud.admin();
    let api = cloud.tenant("eqst");
    let ext = Cloud::external_network(&admin);
    let vpc = Cloud::vpc(&api, &["10.0.1.0/24"], &[]);
    Cloud::router_gateway(&api, &vpc.router, &ext);
    let open = api.security_group("open");
    api.security_group_rule(
        &open,
        json!({"direction": "ingress",
            "remote_ip_prefix": "0.0.0.0/0"}),
    );
    let vm = cloud.boot(&admin, &api, &vpc.nets[0], "vq", "az2-c1", Some(&[&open]));
    cloud.wait_until_active(&api, &[&vm]);
    let policy = api.create(
        "/v2.0/qos/policies",
        "policy",
        json!({"name": "eip-bandwidth"}),
    );
    let rule = |dir: &str| {
        api.expect(
            201,
            "POST",
            &format!("/v2.0/qos/policies/{policy}/bandwidth_limit_rules"),
            Some(json!({"bandwidth_limit_rule": {"max_kbps": 10_000, "direction": dir}})),
        )["bandwidth_limit_rule"]["id"]
            .as_str()
            .expect("rule id")
            .to_owned()
    };
    let rules = [rule("ingress"), rule("egress")];
    let f = api.expect(
        201,
        "POST",
        "/v2.0/floatingips",
        Some(
            json!({"floatingip": {"floating_network_id": ext, "port_id": vm.port,
            "qos_policy_id": policy}}),
        ),
    )["floatingip"]
        .clone();
    let eip = f["floating_ip_address"].as_str().expect("eip").to_owned();
    cloud.wait_until(
        "the client reaches the VM by its EIP",
        Duration::from_secs(15),
        || cloud.ping(CLIENT, &eip),
    );
    let mut report = Vec::new();
    for mbps in [10.0, 200.0] {
        if mbps != 10.0 {
            for r in &rules {
                api.expect(
                    200,
                    "PUT",
                    &format!("/v2.0/qos/policies/{policy}/bandwidth_limit_rules/{r}"),
                    Some(json!({"bandwidth_limit_rule": {"max_kbps": (mbps * 1000.0) as u64}})),
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let offered = (mbps * 1.5) as u32;
        let runs = [
            ("TCP in", iperf(&cloud, &vm.name, CLIENT, &eip, false, None)),
            ("TCP out", iperf(&cloud, &vm.name, CLIENT, &eip, true, None)),
            (
                "UDP in",
                iperf(&cloud, &vm.name, CLIENT, &eip, false, Some(offered)),
            ),
            (
                "UDP out",
                iperf(&cloud, &vm.name, CLIENT, &eip, true, Some(offered)),
            ),
        ];
        for (what, got) in runs {
            eprintln!(
                "limit {mbps} Mbit/s, {what}: {got:.1} Mbit/s ({:.2}x)",
                got / mbps
            );
            report.push((mbps, what, got));
        }
    }
    // The promise is the ceiling: no direction carries more than the limit
    // (10% for the measurement window's edges). The floor only shows the
    // limit is a rate and not a block: how close TCP gets under a policer
    // depends on its congestion control and on the CPU left on a shared
    // machine (CI saw 0.86x at 200 Mbit/s), so it is not held to 10% here.
    for (mbps, what, got) in report {
        assert!(
            got / mbps <= 1.10,
            "limit {mbps} Mbit/s, {what}: measured {got:.1} Mbit/s, more than 10% above the limit"
        );
        assert!(
            got / mbps >= 0.5,
            "limit {mbps} Mbit/s, {what}: measured {got:.1} Mbit/s, less than half the limit"
        );
    }
    assert!(
        cloud.drops("qos_rate_exceeded") > 0,
        "the limit dropped something"
    );
}
