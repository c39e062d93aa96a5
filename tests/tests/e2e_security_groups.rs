//! End to end, security groups, in the default region, configured only
//! through the API, with real TCP, UDP and ICMP between VMs:
//!
//! - the project's default group: its members reach each other; a port in
//!   another group cannot reach them;
//! - a group allowing TCP 7000 from 10.0.1.0/24 and nothing else: reached
//!   from that subnet on the same host, another host and the other AZ;
//!   refused from the other subnet, for UDP and for ping;
//! - remote_group_id: a database port open only to members of that group;
//! - rule removal cuts an established connection while another one on the
//!   same ports pair of VMs carries on; a rule addition disturbs neither;
//! - 10,000 rules on one group (one bulk request): applied and enforced,
//!   with the time from the POST to enforcement printed.

use std::time::{Duration, Instant};

use netns_harness::Topology;
use serde_json::{json, Value};
use strato_tests::e2e::{Api, Cloud, Servers, Vm};

const CIDRS: [&str; 2] = ["10.0.1.0/24", "10.0.2.0/24"];
const SGCONN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/sgconn.py");
const PYTHON: &str = "/usr/bin/python3";

/// Servers started in VMs: reaped at the end (the region's teardown kills
/// them anyway).
static SERVERS: Servers = Servers::new();

fn keep(c: std::process::Child) {
    SERVERS.keep(c);
}

fn id(v: &Value, kind: &str) -> String {
    v[kind]["id"].as_str().expect("id").to_owned()
}

/// Plays Nova (see `Cloud::boot`), and starts the TCP service on 7000.
fn boot(
    cloud: &Cloud,
    admin: &Api,
    api: &Api,
    net: &str,
    name: &str,
    host: &str,
    groups: Option<&[&str]>,
) -> Vm {
    let vm = cloud.boot(admin, api, net, name, host, groups);
    keep(cloud.hello_server(name));
    vm
}

fn group(api: &Api, name: &str) -> String {
    id(
        &api.expect(
            201,
            "POST",
            "/v2.0/security-groups",
            Some(json!({"security_group": {"name": name}})),
        ),
        "security_group",
    )
}

fn rule(api: &Api, group: &str, mut r: Value) -> String {
    r["security_group_id"] = json!(group);
    id(
        &api.expect(
            201,
            "POST",
            "/v2.0/security-group-rules",
            Some(json!({ "security_group_rule": r })),
        ),
        "security_group_rule",
    )
}

fn banner(cloud: &Cloud, from: &Vm, to: &Vm) -> String {
    let o = cloud
        .region
        .exec(&from.name, &["busybox", "nc", "-w", "2", &to.ip, "7000"])
        .expect("exec");
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn reaches(cloud: &Cloud, from: &Vm, to: &Vm) -> bool {
    banner(cloud, from, to) == format!("hello-from-{}", to.name)
}

fn connects(cloud: &Cloud, from: &Vm, to: &Vm, port: u16, timeout: &str) -> bool {
    cloud
        .region
        .exec(
            &from.name,
            &[
                PYTHON,
                SGCONN,
                "connect",
                &to.ip,
                &port.to_string(),
                timeout,
            ],
        )
        .expect("exec")
        .status
        .success()
}

/// Every host's drop counters for `reason`, summed.
fn drops(cloud: &Cloud, reason: &str) -> u64 {
    let mut n = 0;
    for h in cloud.region.hosts() {
        let dir = std::path::Path::new(strato::dataplane::PIN_ROOT).join(Cloud::host_id(&h));
        if let Ok(c) = strato::dataplane::Counters::read_pinned(&dir) {
            n += c
                .drops
                .iter()
                .filter(|((_, r), _)| r.label() == reason)
                .map(|(_, s)| s.packets)
                .sum::<u64>();
        }
    }
    n
}

#[test]
fn security_groups_end_to_end() {
    let cloud = Cloud::up("sg", &Topology::default_region());
    let admin = cloud.admin();
    let api = cloud.tenant("sgt");
    let nets = Cloud::vpc(&api, &CIDRS, &[]).nets;
    let web = group(&api, "web");
    let db = group(&api, "db");
    rule(
        &api,
        &web,
        json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 7000,
               "port_range_max": 7000, "remote_ip_prefix": "10.0.1.0/24"}),
    );
    rule(
        &api,
        &db,
        json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 7000,
               "port_range_max": 7000, "remote_group_id": web}),
    );
    let web1 = boot(
        &cloud,
        &admin,
        &api,
        &nets[0],
        "web1",
        "az1-c1",
        Some(&[&web]),
    );
    let db1 = boot(
        &cloud,
        &admin,
        &api,
        &nets[1],
        "db1",
        "az2-c2",
        Some(&[&db]),
    );
    // Clients in the default group: net0 on web1's host, another az1 host
    // and az2; net1 in az2.
    let cl1 = boot(&cloud, &admin, &api, &nets[0], "cl1", "az1-c2", None);
    let cl2 = boot(&cloud, &admin, &api, &nets[1], "cl2", "az2-c1", None);
    let cl3 = boot(&cloud, &admin, &api, &nets[0], "cl3", "az1-c1", None);
    let cl4 = boot(&cloud, &admin, &api, &nets[0], "cl4", "az2-c1", None);
    let all = [&web1, &db1, &cl1, &cl2, &cl3, &cl4];
    for vm in all {
        cloud.wait_until(
            &format!("port of {} ACTIVE", vm.name),
            Duration::from_secs(15),
            || {
                api.expect(200, "GET", &format!("/v2.0/ports/{}", vm.port), None)["port"]["status"]
                    == "ACTIVE"
            },
        );
        // DHCP passes whatever the groups say.
        cloud
            .region
            .vm_wait_lease(&vm.name, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{}: {e}", vm.name));
    }
    let port = api.expect(200, "GET", &format!("/v2.0/ports/{}", cl1.port), None);
    let default: Vec<Value> = api.expect(200, "GET", "/v2.0/security-groups?name=default", None)
        ["security_groups"]
        .as_array()
        .expect("list")
        .clone();
    assert_eq!(default.len(), 1);
    assert_eq!(port["port"]["security_groups"], json!([default[0]["id"]]));

    // The default group: members reach each other (TCP and ping, across
    // subnets, hosts and AZs); a port outside it does not reach them.
    for (a, b) in [(&cl1, &cl2), (&cl2, &cl3), (&cl3, &cl4), (&cl4, &cl1)] {
        assert!(
            reaches(&cloud, a, b),
            "{} -> {} (default group)",
            a.name,
            b.name
        );
    }
    assert!(
        cloud.ping(&cl1.name, &cl3.ip),
        "ping within the default group"
    );
    assert!(
        !reaches(&cloud, &web1, &cl1),
        "web1 is not in the default group"
    );
    assert!(!cloud.ping(&web1.name, &cl3.ip));

    // web: TCP 7000 from 10.0.1.0/24 only.
    for c in [&cl1, &cl3, &cl4] {
        assert!(
            reaches(&cloud, c, &web1),
            "{} (10.0.1.0/24) -> web1:7000",
            c.name
        );
    }
    // Each refusal is counted: TCP from the other subnet, then ICMP and
    // UDP from the allowed one (only TCP 7000 is open).
    let denied = drops(&cloud, "policy_denied_ingress");
    assert!(
        !reaches(&cloud, &cl2, &web1),
        "cl2 (10.0.2.0/24) must not reach web1"
    );
    let after_tcp = drops(&cloud, "policy_denied_ingress");
    assert!(
        after_tcp > denied,
        "TCP from cl2 counted as policy_denied_ingress"
    );
    assert!(!cloud.ping(&cl1.name, &web1.ip), "no ICMP rule on web");
    let after_ping = drops(&cloud, "policy_denied_ingress");
    assert!(
        after_ping > after_tcp,
        "ping from cl1 counted as policy_denied_ingress"
    );
    // One datagram (bash's /dev/udp: busybox nc has no UDP here).
    let sent = cloud
        .region
        .command(
            &cl1.name,
            &[
                "bash",
                "-c",
                &format!("echo udp-probe > /dev/udp/{}/7000", web1.ip),
            ],
        )
        .expect("command")
        .status()
        .expect("bash");
    assert!(sent.success(), "the UDP probe was sent");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while drops(&cloud, "policy_denied_ingress") == after_ping
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        drops(&cloud, "policy_denied_ingress") > after_ping,
        "the UDP datagram to 7000 counted as policy_denied_ingress"
    );

    // remote_group_id: db1 only for members of web.
    assert!(reaches(&cloud, &web1, &db1), "web1 (in web) -> db1:7000");
    assert!(!reaches(&cloud, &cl2, &db1), "cl2 is not in web");
    assert!(!reaches(&cloud, &cl1, &db1), "cl1 is not in web");

    // stratoctl trace names the rule and the group, from the live maps
    // (cl3 and web1 share a host: both ports' rules are checked there).
    let ctl = |args: &[&str]| -> Value {
        let o = std::process::Command::new(strato_tests::e2e::bin("stratoctl"))
            .arg("--controller")
            .arg(format!("unix:{}", cloud.socket.display()))
            .args(args)
            .output()
            .expect("stratoctl");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).expect("stratoctl JSON")
    };
    let t = ctl(&[
        "--json", "trace", "--port", &cl3.port, "--to", &web1.ip, "--dport", "7000",
    ]);
    let sec = t["security"].as_array().expect("security");
    assert_eq!(sec.len(), 2, "{t}");
    assert_eq!(sec[0]["direction"], "egress", "{t}");
    assert_eq!(sec[0]["rule"]["group"], default[0]["id"], "{t}");
    assert_eq!(sec[1]["direction"], "ingress", "{t}");
    assert_eq!(sec[1]["rule"]["group"], web.as_str(), "{t}");
    assert_eq!(t["verdict"], "XDP_REDIRECT", "{t}");
    let t = ctl(&[
        "--json", "trace", "--port", &cl3.port, "--to", &web1.ip, "--dport", "7001",
    ]);
    assert_eq!(t["drop_reasons"], json!(["policy_denied_ingress"]), "{t}");
    assert!(
        t["security"][1]["decision"]
            .as_str()
            .unwrap_or("")
            .contains("no ingress rule"),
        "{t}"
    );

    // Long-lived connections cl1 -> web1 on 7100 and 7200: removing the
    // 7100 rule cuts that one; the 7200 one carries on, also through a rule
    // addition.
    let r7100 = rule(
        &api,
        &web,
        json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 7100,
               "port_range_max": 7100, "remote_ip_prefix": "10.0.1.0/24"}),
    );
    rule(
        &api,
        &web,
        json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 7200,
               "port_range_max": 7200, "remote_ip_prefix": "10.0.1.0/24"}),
    );
    let server = cloud
        .region
        .command(
            &web1.name,
            &[PYTHON, SGCONN, "serve", "7100", "7200", "25000", "30000"],
        )
        .expect("command");
    keep(
        cloud
            .region
            .spawn("sgconn-web1", None, server)
            .expect("spawn"),
    );
    cloud.wait_until("web1 serves 7100", Duration::from_secs(10), || {
        connects(&cloud, &cl1, &web1, 7100, "1")
    });
    let client = cloud
        .region
        .command(
            &cl1.name,
            &[PYTHON, SGCONN, "hold", &web1.ip, "7", "7100", "7200"],
        )
        .expect("command")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn client");
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    api.expect(
        204,
        "DELETE",
        &format!("/v2.0/security-group-rules/{r7100}"),
        None,
    );
    let cut_at = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(1500));
    rule(
        &api,
        &web,
        json!({"direction": "ingress", "protocol": "udp", "port_range_min": 9000,
               "port_range_max": 9100}),
    );
    let added_at = t0.elapsed().as_secs_f64();
    let out = client.wait_with_output().expect("client");
    let held: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "client output {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let echoes = |p: &str| -> Vec<f64> {
        held[p]["echoes"]
            .as_array()
            .expect("echoes")
            .iter()
            .map(|v| v.as_f64().expect("time"))
            .collect()
    };
    let (e7100, e7200) = (echoes("7100"), echoes("7200"));
    eprintln!(
        "rule removed at {cut_at:.2}s, added at {added_at:.2}s; 7100 echoes {} (last {:?}), 7200 echoes {} (last {:?})",
        e7100.len(),
        e7100.last(),
        e7200.len(),
        e7200.last()
    );
    assert!(e7100.len() >= 5, "7100 worked before the removal: {held}");
    assert!(
        e7100.iter().all(|t| *t < cut_at + 0.5),
        "no echo on 7100 after its rule went: {held}"
    );
    assert!(
        e7200.last().copied().unwrap_or(0.0) > 6.0,
        "7200 lasted: {held}"
    );
    let gap = e7200.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(
        gap < 0.9,
        "7200 was never interrupted (largest gap {gap:.2}s): {held}"
    );

    // 10,000 rules on web in one request: ports 20000-29999 from net0.
    let project = api.expect(200, "GET", &format!("/v2.0/security-groups/{web}"), None)
        ["security_group"]["project_id"]
        .as_str()
        .expect("project")
        .to_owned();
    admin.expect(
        200,
        "PUT",
        &format!("/v2.0/quotas/{project}"),
        Some(json!({"quota": {"security_group_rule": 20_000}})),
    );
    let rules: Vec<Value> = (20_000..30_000)
        .map(|p| {
            json!({"security_group_id": web, "direction": "ingress", "protocol": "tcp",
                   "port_range_min": p, "port_range_max": p, "remote_ip_prefix": "10.0.1.0/24"})
        })
        .collect();
    assert!(
        !connects(&cloud, &cl1, &web1, 25_000, "0.5"),
        "25000 closed before"
    );
    let posted = Instant::now();
    let r = api.expect(
        201,
        "POST",
        "/v2.0/security-group-rules",
        Some(json!({ "security_group_rules": rules })),
    );
    let post_ms = posted.elapsed().as_millis();
    assert_eq!(
        r["security_group_rules"].as_array().map(Vec::len),
        Some(10_000)
    );
    let mut tries = 0;
    while !connects(&cloud, &cl1, &web1, 25_000, "0.2") {
        tries += 1;
        assert!(
            posted.elapsed() < Duration::from_secs(30),
            "10,000 rules not enforced in 30 s"
        );
    }
    eprintln!(
        "10,000 rules: POST answered in {post_ms} ms, enforced {} ms after the POST ({tries} refused tries)",
        posted.elapsed().as_millis()
    );
    assert!(
        !connects(&cloud, &cl1, &web1, 30_000, "1"),
        "30000 is not in the rules"
    );
    assert!(
        !connects(&cloud, &cl2, &web1, 25_000, "1"),
        "cl2 is not in 10.0.1.0/24"
    );
    assert!(reaches(&cloud, &cl1, &web1), "the first rule still holds");
    SERVERS.reap();
}
