//! End to end, control plane: the real controller and agents in the default
//! region, driven only through the API. Ports bound to a host turn ACTIVE
//! once its agent realised them and DOWN when unplugged; every 2xx survives
//! a SIGKILL of the controller; a restarted agent adopts its pinned state;
//! with the controller down agents keep their configuration and catch up
//! when it returns.

use std::{path::Path, thread, time::Duration};

use netns_harness::{Topology, VmSpec};
use serde_json::{json, Value};
use strato_dataplane::read_pinned_ports;
use strato_tests::e2e::{Api, Cloud};

/// A network with one subnet; returns (network id, subnet id).
fn network(api: &Api, cidr: &str) -> (String, String) {
    let n = api.expect(
        201,
        "POST",
        "/v2.0/networks",
        Some(json!({"network": {"name": "net"}})),
    );
    let nid = n["network"]["id"].as_str().expect("id").to_owned();
    let s = api.expect(
        201,
        "POST",
        "/v2.0/subnets",
        Some(json!({"subnet": {"network_id": nid, "cidr": cidr, "ip_version": 4}})),
    );
    (nid, s["subnet"]["id"].as_str().expect("id").to_owned())
}

/// An unbound port on `net`, as the API returned it.
/// A new port on `net` (201): the port and its id.
fn new_port(api: &Api, net: &str) -> (Value, String) {
    let port = api.expect(
        201,
        "POST",
        "/v2.0/ports",
        Some(json!({"port": {"network_id": net}})),
    )["port"]
        .clone();
    let id = port["id"].as_str().expect("port id").to_owned();
    (port, id)
}

fn port_status(api: &Api, id: &str) -> String {
    api.expect(200, "GET", &format!("/v2.0/ports/{id}"), None)["port"]["status"]
        .as_str()
        .expect("status")
        .to_owned()
}

/// Plays Nova: a VM namespace whose tap is named after the port, then the
/// binding (admin) to the host.
fn boot(cloud: &Cloud, admin: &Api, port: &Value, vm: &str, host: &netns_harness::Host) {
    let id = port["id"].as_str().expect("id");
    let mut spec = VmSpec::new(vm, &host.name, &strato_proto::naming::tap_name(id));
    spec.mac = Some(
        port["mac_address"]
            .as_str()
            .expect("mac")
            .parse()
            .expect("mac"),
    );
    let ip = port["fixed_ips"][0]["ip_address"].as_str().expect("ip");
    spec.addr = Some(format!("{ip}/24").parse().expect("cidr"));
    cloud.region.vm_create(&spec).expect("vm create");
    admin.expect(
        200,
        "PUT",
        &format!("/v2.0/ports/{id}"),
        Some(json!({"port": {"binding:host_id": Cloud::host_id(host), "device_id": vm, "device_owner": "compute:az1"}})),
    );
}

fn wait_status(cloud: &Cloud, api: &Api, id: &str, want: &str) {
    cloud.wait_until(
        &format!("port {id} is {want}"),
        Duration::from_secs(10),
        || port_status(api, id) == want,
    );
}

#[test]
fn ports_turn_active_when_realised_and_down_when_unplugged() {
    let cloud = Cloud::up("prt", &Topology::default_region());
    let admin = cloud.admin();
    let hosts = cloud.region.hosts();
    let host = &hosts[0];
    let (net, _) = network(&admin, "10.0.1.0/24");
    let (port, id) = new_port(&admin, &net);
    assert_eq!(port["status"], "DOWN", "an unbound port is DOWN");
    boot(&cloud, &admin, &port, "v1", host);
    wait_status(&cloud, &admin, &id, "ACTIVE");

    // The agent wrote the port into its pinned table, with the network's VNI.
    let pin = Path::new(strato_proto::naming::PIN_ROOT).join(Cloud::host_id(host));
    let table = read_pinned_ports(&pin).expect("pinned PORTS");
    assert_eq!(table.len(), 1, "{table:?}");
    let info = table.values().next().unwrap();
    let vni = admin.expect(200, "GET", &format!("/v2.0/networks/{net}"), None)["network"]
        ["provider:segmentation_id"]
        .as_u64()
        .unwrap();
    assert_eq!(info.vni as u64, vni);
    assert_eq!(
        info.mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
        port["mac_address"].as_str().unwrap()
    );
    let st = cloud.host(host);
    assert!(st.report.realised_revision > 0);
    assert!(
        st.report.ports.iter().any(|p| p.id == id),
        "{:?}",
        st.report.ports
    );

    // stratoctl shows it per project, and says clearly when a host is unknown.
    let ctl = |args: &[&str]| {
        std::process::Command::new(strato_tests::e2e::bin("stratoctl"))
            .arg("--controller")
            .arg(format!("unix:{}", cloud.socket.display()))
            .args(args)
            .output()
            .expect("stratoctl")
    };
    let out = ctl(&["--json", "resources", "--project", "admin"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("stratoctl JSON");
    let listed = v[0]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["id"] == id.as_str())
        .cloned()
        .expect("port listed");
    assert_eq!(listed["status"], "ACTIVE");
    assert_eq!(listed["host"], Cloud::host_id(host).as_str());
    // stratoctl trace runs a synthetic packet through the live port program
    // and its live table, as if it came from the VM.
    let hid = Cloud::host_id(host);
    let out = ctl(&[
        "--json",
        "trace",
        "--host",
        &hid,
        "--port",
        &id,
        "--to",
        "10.0.1.99",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t: Value = serde_json::from_slice(&out.stdout).expect("trace JSON");
    // Nobody holds 10.0.1.99 on the port's network: dropped, with the reason.
    assert_eq!(t["verdict"], "XDP_DROP", "{t}");
    assert_eq!(
        t["drop_reasons"],
        serde_json::json!(["unknown_destination"]),
        "{t}"
    );
    assert_eq!(t["port_known"], true, "{t}");
    assert_eq!(t["vni"].as_u64(), Some(vni), "{t}");
    assert_eq!(
        t["packet"]["from"], port["fixed_ips"][0]["ip_address"],
        "{t}"
    );
    for (args, needle) in [
        (
            vec![
                "trace",
                "--host",
                "no-such-host",
                "--port",
                id.as_str(),
                "--to",
                "10.0.1.99",
            ],
            "no pinned dataplane",
        ),
        (
            vec![
                "trace",
                "--host",
                hid.as_str(),
                "--port",
                "00000000-dead",
                "--to",
                "10.0.1.99",
            ],
            "no interface",
        ),
        (
            vec!["trace", "--host", hid.as_str(), "--to", "10.0.1.99"],
            "--port or an --iface",
        ),
    ] {
        let out = ctl(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = ctl(&["host", "no-such-host"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl(&["resources", "--project", "nope"]);
    assert!(!out.status.success());

    // Unplugged (the VM is deleted): DOWN, and the table entry goes.
    cloud.region.vm_delete("v1").expect("vm delete");
    wait_status(&cloud, &admin, &id, "DOWN");
    cloud.wait_until("the port left the table", Duration::from_secs(5), || {
        read_pinned_ports(&pin)
            .map(|t| t.is_empty())
            .unwrap_or(false)
    });

    // Plugged again, then the port deleted through the API.
    boot(&cloud, &admin, &port, "v1", host);
    wait_status(&cloud, &admin, &id, "ACTIVE");
    admin.expect(204, "DELETE", &format!("/v2.0/ports/{id}"), None);
    cloud.wait_until(
        "a deleted port leaves the table",
        Duration::from_secs(5),
        || {
            read_pinned_ports(&pin)
                .map(|t| t.is_empty())
                .unwrap_or(false)
        },
    );

    // A host that goes away takes its ports DOWN.
    let (port2, id2) = new_port(&admin, &net);
    boot(&cloud, &admin, &port2, "v2", host);
    wait_status(&cloud, &admin, &id2, "ACTIVE");
    cloud
        .region
        .fail(&netns_harness::FailTarget::Host(host.name.clone()))
        .expect("fail host");
    cloud.wait_until(
        "the port of a failed host is DOWN",
        Duration::from_secs(15),
        || port_status(&admin, &id2) == "DOWN",
    );
    cloud.region.heal().expect("heal");
    wait_status(&cloud, &admin, &id2, "ACTIVE");
}

#[test]
fn every_2xx_survives_a_controller_sigkill() {
    let cloud = Cloud::up("dur", &Topology::default_region());
    let admin = cloud.admin();
    let mut ids = Vec::new();
    for i in 0..10 {
        let (n, s) = network(&admin, &format!("10.{i}.0.0/24"));
        ids.push(n);
        ids.push(s);
    }
    let r = admin.expect(
        201,
        "POST",
        "/v2.0/routers",
        Some(json!({"router": {"name": "r"}})),
    );
    let rid = r["router"]["id"].as_str().unwrap().to_owned();
    admin.expect(
        200,
        "PUT",
        &format!("/v2.0/routers/{rid}/add_router_interface"),
        Some(json!({"subnet_id": ids[1]})),
    );
    let last = admin.expect(
        201,
        "POST",
        "/v2.0/ports",
        Some(json!({"port": {"network_id": ids[0], "name": "last"}})),
    );
    // SIGKILL right after the last answer.
    let before = admin;
    cloud.kill("controller");
    cloud.start_controller();
    let admin = cloud.admin();
    assert_ne!(admin.token, before.token, "a new login gets a new token");
    let nets = admin.expect(200, "GET", "/v2.0/networks", None);
    let subnets = admin.expect(200, "GET", "/v2.0/subnets", None);
    for id in &ids {
        let found = nets["networks"]
            .as_array()
            .unwrap()
            .iter()
            .chain(subnets["subnets"].as_array().unwrap())
            .any(|x| x["id"] == id.as_str());
        assert!(found, "{id} lost in the SIGKILL");
    }
    let p = admin.expect(
        200,
        "GET",
        &format!("/v2.0/ports/{}", last["port"]["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(p["port"]["name"], "last");
    let ifaces = admin.expect(200, "GET", &format!("/v2.0/ports?device_id={rid}"), None);
    assert_eq!(
        ifaces["ports"].as_array().unwrap().len(),
        1,
        "router interface lost"
    );
    // Tokens are durable too: the one issued before the kill still works
    // (an unknown token answers 401).
    let unknown = Api {
        endpoint: before.endpoint.clone(),
        token: format!("{}x", before.token),
    };
    assert_eq!(unknown.call("GET", "/v2.0/routers", None).0, 401);
    let routers = before.expect(200, "GET", "/v2.0/routers", None);
    assert!(
        routers["routers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == rid.as_str()),
        "the old token sees the router: {routers}"
    );
}

#[test]
fn agent_restart_adopts_and_controller_outage_is_survived() {
    let cloud = Cloud::up("adp", &Topology::default_region());
    let admin = cloud.admin();
    let hosts = cloud.region.hosts();
    let host = &hosts[1];
    let (net, _) = network(&admin, "10.0.1.0/24");
    let (port, id) = new_port(&admin, &net);
    boot(&cloud, &admin, &port, "v1", host);
    wait_status(&cloud, &admin, &id, "ACTIVE");
    let pin = Path::new(strato_proto::naming::PIN_ROOT).join(Cloud::host_id(host));
    let before = read_pinned_ports(&pin).expect("table");

    // Agent restart: the pinned table is adopted, not rewritten.
    let agent = format!("agent-{}", host.name);
    cloud.stop(&agent);
    assert_eq!(
        read_pinned_ports(&pin).expect("table"),
        before,
        "the table must outlive the agent"
    );
    let log_len = cloud.log_tail(&agent, 100_000).lines().count();
    cloud.start_agent(host);
    cloud.wait_until(
        "the restarted agent reports the port active",
        Duration::from_secs(10),
        || {
            let s = cloud.host(host);
            s.last_seen_ms_ago < 500
                && s.report
                    .ports
                    .iter()
                    .any(|p| p.id == id && p.state == strato_proto::report::PortState::Active)
        },
    );
    assert_eq!(read_pinned_ports(&pin).expect("table"), before);
    let after: Vec<String> = cloud
        .log_tail(&agent, 100_000)
        .lines()
        .skip(log_len)
        .map(str::to_owned)
        .collect();
    assert!(
        !after.iter().any(|l| l.contains("port written")),
        "adopted entries were rewritten:\n{}",
        after.join("\n")
    );

    // Controller down: the agent keeps its configuration.
    cloud.stop("controller");
    thread::sleep(Duration::from_secs(1));
    assert_eq!(
        read_pinned_ports(&pin).expect("table"),
        before,
        "configuration lost with the controller down"
    );
    // Back: agents resync, and new configuration reaches them.
    cloud.start_controller();
    let admin = cloud.admin();
    let (port2, _) = new_port(&admin, &net);
    boot(&cloud, &admin, &port2, "v2", host);
    wait_status(&cloud, &admin, port2["id"].as_str().unwrap(), "ACTIVE");
    assert_eq!(port_status(&admin, &id), "ACTIVE");
    assert_eq!(read_pinned_ports(&pin).expect("table").len(), 2);
}
