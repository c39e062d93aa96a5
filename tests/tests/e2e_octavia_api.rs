//! The Octavia v2 API over HTTP against the real controller process (no
//! namespaces needed): a tenant builds a VPC through Neutron (two networks
//! joined by a router, a third one apart), then a load balancer with TCP and
//! UDP listeners, pools, members in two subnets and a health monitor
//! through Octavia; renders are Octavia's; every refusal has its status and
//! an Octavia fault body and changes nothing (the global revision, read
//! from the internal API, does not move); the status tree follows member
//! health reported on the agents' socket, the stats are the agents'
//! counters summed over hosts; a cascade delete removes everything with the
//! VIP port. The same API answers below the catalog's load-balancer
//! endpoint.

use serde_json::{json, Value};
use strato_tests::e2e::{call, id, new_tenant, Api, ADMIN_PASSWORD};

/// The controller under test.
use strato_tests::e2e::LocalController as Controller;

/// `api`'s calls that must be refused: with `status`, an Octavia fault
/// whose faultstring contains `text`, and no change to the compiled
/// revision.
struct Refusals<'a> {
    c: &'a Controller,
    api: &'a Api,
}

impl Refusals<'_> {
    #[track_caller]
    fn refused(&self, status: u16, text: &str, method: &str, path: &str, body: Option<Value>) {
        let (c, api) = (self.c, self.api);
        assert!(
            !text.is_empty(),
            "{method} {path}: an empty expected message would match any"
        );
        let before = c.revision();
        let (s, v) = api.call(method, path, body);
        assert_eq!(s, status, "{method} {path}: {v}");
        assert_eq!(
            v["faultcode"], "Client",
            "{method} {path}: not an Octavia fault: {v}"
        );
        assert!(v.get("debuginfo").is_some(), "{v}");
        let msg = v["faultstring"].as_str().unwrap_or_default();
        assert!(
            msg.contains(text),
            "{method} {path}: {msg:?} lacks {text:?}"
        );
        assert_eq!(
            c.revision(),
            before,
            "{method} {path} was refused but changed the state"
        );
    }
}

/// A network with one subnet: (network, subnet).
fn network(api: &Api, cidr: &str) -> (String, String) {
    let n = api.create("/v2.0/networks", "network", json!({"name": cidr}));
    let s = api.create(
        "/v2.0/subnets",
        "subnet",
        json!({"network_id": n, "cidr": cidr, "ip_version": 4}),
    );
    (n, s)
}

#[test]
fn octavia_over_http() {
    let c = Controller::start("octavia");
    let admin = Api::login(&c.api, "admin", ADMIN_PASSWORD, "admin");
    let (t, pid) = new_tenant(&admin, "acme", "member");

    // The catalog's load-balancer endpoint and its version document.
    let (s, _, v) = call(
        &c.api,
        None,
        "POST",
        "/v3/auth/tokens",
        Some(&strato_tests::e2e::password_auth(
            "acme",
            "acme-password",
            "acme",
        )),
    );
    assert_eq!(s, 201, "{v}");
    let lb_ep = v["token"]["catalog"]
        .as_array()
        .expect("catalog")
        .iter()
        .find(|s| s["type"] == "load-balancer")
        .expect("a load-balancer service")["endpoints"][0]["url"]
        .as_str()
        .expect("url")
        .to_owned();
    assert!(lb_ep.ends_with("/load-balancer"), "{lb_ep}");
    let (s, _, v) = call(&c.api, None, "GET", "/load-balancer/", None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["versions"][0]["id"], "v2.0");
    assert_eq!(v["versions"][0]["links"][0]["href"], format!("{lb_ep}/v2"));

    // The VPC, through Neutron.
    let (n1, s1) = network(&t, "10.20.1.0/24");
    let (_, s2) = network(&t, "10.20.2.0/24");
    let (_, s3) = network(&t, "10.20.3.0/24");
    let router = t.create("/v2.0/routers", "router", json!({"name": "r"}));
    for s in [&s1, &s2] {
        t.expect(
            200,
            "PUT",
            &format!("/v2.0/routers/{router}/add_router_interface"),
            Some(json!({"subnet_id": s})),
        );
    }

    // The load balancer and its VIP port.
    let lb = t.expect(201, "POST", "/v2/lbaas/loadbalancers", Some(json!({"loadbalancer": {"name": "web", "vip_subnet_id": s1, "vip_address": "10.20.1.100"}})))["loadbalancer"].clone();
    let lbid = lb["id"].as_str().expect("id").to_owned();
    assert_eq!(lb["vip_address"], "10.20.1.100");
    assert_eq!(lb["vip_network_id"], n1.as_str());
    assert_eq!(lb["provisioning_status"], "PENDING_CREATE");
    assert_eq!(lb["operating_status"], "ONLINE");
    assert_eq!(lb["provider"], "strato");
    assert_eq!(lb["project_id"], pid.as_str());
    assert_eq!(lb["listeners"], json!([]));
    let vip_port = lb["vip_port_id"].as_str().expect("vip port").to_owned();
    let port = t.expect(200, "GET", &format!("/v2.0/ports/{vip_port}"), None)["port"].clone();
    assert_eq!(port["device_owner"], "Octavia");
    assert_eq!(port["device_id"], format!("lb-{lbid}"));
    assert_eq!(port["fixed_ips"][0]["ip_address"], "10.20.1.100");

    // Listeners: TCP and UDP on port 80.
    let tcp = id(&t.expect(201, "POST", "/v2/lbaas/listeners", Some(json!({"listener": {"loadbalancer_id": lbid, "protocol": "TCP", "protocol_port": 80, "connection_drain_timeout": 30000}}))), "listener");
    let udp_l = t.expect(
        201,
        "POST",
        "/v2.0/lbaas/listeners",
        Some(
            json!({"listener": {"loadbalancer_id": lbid, "protocol": "UDP", "protocol_port": 80}}),
        ),
    )["listener"]
        .clone();
    let udp = udp_l["id"].as_str().expect("id").to_owned();
    assert_eq!(udp_l["timeout_client_data"], 50000);
    assert_eq!(udp_l["connection_drain_timeout"], 60000);
    assert_eq!(udp_l["loadbalancers"], json!([{"id": lbid}]));
    let as_t = Refusals { c: &c, api: &t };
    as_t.refused(
        409,
        "Another Listener on this Load Balancer is already using protocol TCP and protocol_port 80",
        "POST",
        "/v2/lbaas/listeners",
        Some(
            json!({"listener": {"loadbalancer_id": lbid, "protocol": "TCP", "protocol_port": 80}}),
        ),
    );
    as_t.refused(
        400,
        "Protocol SCTP is not supported",
        "POST",
        "/v2/lbaas/listeners",
        Some(
            json!({"listener": {"loadbalancer_id": lbid, "protocol": "SCTP", "protocol_port": 8080}}),
        ),
    );
    as_t.refused(
        400,
        "read-only",
        "PUT",
        &format!("/v2/lbaas/listeners/{tcp}"),
        Some(json!({"listener": {"protocol_port": 81}})),
    );

    // Pools on the listeners.
    let pool = t.expect(201, "POST", "/v2/lbaas/pools", Some(json!({"pool": {"listener_id": tcp, "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN", "session_persistence": {"type": "SOURCE_IP"}}})))["pool"].clone();
    let pool_id = pool["id"].as_str().expect("id").to_owned();
    assert_eq!(pool["listeners"], json!([{"id": tcp}]));
    assert_eq!(pool["session_persistence"]["persistence_timeout"], 360);
    let l = t.expect(200, "GET", &format!("/v2/lbaas/listeners/{tcp}"), None);
    assert_eq!(l["listener"]["default_pool_id"], pool_id.as_str());
    as_t.refused(
        409,
        "already has default pool",
        "POST",
        "/v2/lbaas/pools",
        Some(
            json!({"pool": {"listener_id": tcp, "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}}),
        ),
    );
    as_t.refused(
        400,
        "invalid while the listener protocol is 'UDP'",
        "POST",
        "/v2/lbaas/pools",
        Some(
            json!({"pool": {"listener_id": udp, "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}}),
        ),
    );
    let udp_pool = id(&t.expect(201, "POST", "/v2/lbaas/pools", Some(json!({"pool": {"listener_id": udp, "protocol": "UDP", "lb_algorithm": "SOURCE_IP"}}))), "pool");

    // Members in two subnets (one across the router); refusals.
    let members = format!("/v2/lbaas/pools/{pool_id}/members");
    let m1 = id(
        &t.expect(
            201,
            "POST",
            &members,
            Some(json!({"member": {"address": "10.20.1.10", "protocol_port": 8080}})),
        ),
        "member",
    );
    let m2v = t.expect(201, "POST", &members, Some(json!({"member": {"address": "10.20.2.10", "protocol_port": 8080, "subnet_id": s2, "weight": 3}})))["member"].clone();
    let m2 = m2v["id"].as_str().expect("id").to_owned();
    assert_eq!(m2v["weight"], 3);
    assert_eq!(m2v["operating_status"], "NO_MONITOR");
    as_t.refused(
        409,
        "already using ip 10.20.1.10 on protocol_port 8080",
        "POST",
        &members,
        Some(json!({"member": {"address": "10.20.1.10", "protocol_port": 8080}})),
    );
    as_t.refused(
        409,
        "not routable from the VIP",
        "POST",
        &members,
        Some(json!({"member": {"address": "10.20.3.10", "protocol_port": 8080, "subnet_id": s3}})),
    );
    as_t.refused(
        400,
        "not a host address",
        "POST",
        &members,
        Some(json!({"member": {"address": "10.20.9.10", "protocol_port": 8080, "subnet_id": s2}})),
    );
    as_t.refused(
        400,
        "range",
        "POST",
        &members,
        Some(json!({"member": {"address": "10.20.1.11", "protocol_port": 8080, "weight": 257}})),
    );
    as_t.refused(
        400,
        "read-only",
        "PUT",
        &format!("{members}/{m1}"),
        Some(json!({"member": {"address": "10.20.1.12"}})),
    );
    t.expect(
        201,
        "POST",
        &format!("/v2/lbaas/pools/{udp_pool}/members"),
        Some(json!({"member": {"address": "10.20.2.20", "protocol_port": 53, "subnet_id": s2}})),
    );

    // The health monitor.
    let hm = t.expect(201, "POST", "/v2/lbaas/healthmonitors", Some(json!({"healthmonitor": {"pool_id": pool_id, "type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 2, "url_path": "/health"}})))["healthmonitor"].clone();
    assert_eq!(hm["expected_codes"], "200");
    assert_eq!(hm["max_retries_down"], 3);
    assert_eq!(hm["pools"], json!([{"id": pool_id}]));
    as_t.refused(409,
        "already has a health monitor",
        "POST",
        "/v2/lbaas/healthmonitors",
        Some(
            json!({"healthmonitor": {"pool_id": pool_id, "type": "TCP", "delay": 5, "timeout": 3, "max_retries": 2}}),
        ),
    );
    as_t.refused(400,
        "larger than the request timeout",
        "POST",
        "/v2/lbaas/healthmonitors",
        Some(
            json!({"healthmonitor": {"pool_id": udp_pool, "type": "UDP-CONNECT", "delay": 1, "timeout": 3, "max_retries": 2}}),
        ),
    );

    // Generic refusals.
    as_t.refused(
        400,
        "colour",
        "POST",
        "/v2/lbaas/loadbalancers",
        Some(json!({"loadbalancer": {"vip_subnet_id": s1, "colour": "red"}})),
    );
    as_t.refused(
        400,
        "must be a JSON object with a 'loadbalancer' key",
        "POST",
        "/v2/lbaas/loadbalancers",
        Some(json!([])),
    );
    as_t.refused(
        404,
        "not found",
        "GET",
        "/v2/lbaas/loadbalancers/00000000-0000-0000-0000-000000000000",
        None,
    );
    as_t.refused(
        400,
        "invalid attribute for filtering",
        "GET",
        "/v2/lbaas/loadbalancers?colour=red",
        None,
    );
    as_t.refused(
        409,
        "it has children",
        "DELETE",
        &format!("/v2/lbaas/loadbalancers/{lbid}"),
        None,
    );
    let before = c.revision();
    let (s, v) = t.call("DELETE", &format!("/v2.0/ports/{vip_port}"), None);
    assert_eq!(
        (s, v["NeutronError"]["type"].as_str()),
        (409, Some("PortInUse")),
        "{v}"
    );
    assert_eq!(c.revision(), before);
    let (s, _, v) = call(&c.api, None, "GET", "/v2/lbaas/loadbalancers", None);
    assert_eq!(s, 401, "{v}");

    // Lists: filters, fields, sort; the same under the catalog endpoint.
    let v = t.expect(
        200,
        "GET",
        "/v2/lbaas/listeners?protocol=UDP&fields=id&fields=protocol",
        None,
    );
    assert_eq!(v["listeners"], json!([{"id": udp, "protocol": "UDP"}]));
    assert_eq!(v["listeners_links"], json!([]));
    let v = t.expect(200, "GET", "/v2/lbaas/listeners?sort=protocol:desc", None);
    assert_eq!(v["listeners"][0]["protocol"], "UDP");
    let v = t.expect(200, "GET", "/load-balancer/v2/lbaas/loadbalancers", None);
    assert_eq!(v["loadbalancers"][0]["id"], lbid.as_str());
    assert_eq!(
        t.expect(
            200,
            "GET",
            &format!("/load-balancer/v2.0/lbaas/pools/{pool_id}/members"),
            None
        )["members"]
            .as_array()
            .expect("members")
            .len(),
        2
    );

    // Another project and a reader.
    let (other, _) = new_tenant(&admin, "other", "member");
    let as_other = Refusals { c: &c, api: &other };
    as_other.refused(
        404,
        "not found",
        "GET",
        &format!("/v2/lbaas/loadbalancers/{lbid}"),
        None,
    );
    as_other.refused(
        404,
        "not found",
        "POST",
        "/v2/lbaas/listeners",
        Some(
            json!({"listener": {"loadbalancer_id": lbid, "protocol": "TCP", "protocol_port": 81}}),
        ),
    );
    as_other.refused(
        404,
        "Subnet",
        "POST",
        "/v2/lbaas/loadbalancers",
        Some(json!({"loadbalancer": {"vip_subnet_id": s1}})),
    );
    assert_eq!(
        other.expect(200, "GET", "/v2/lbaas/loadbalancers", None)["loadbalancers"],
        json!([])
    );
    let (reader, _) = new_tenant(&admin, "peek", "reader");
    let (rn, rs) = network(&admin, "10.30.0.0/24");
    let _ = rn;
    let as_reader = Refusals {
        c: &c,
        api: &reader,
    };
    as_reader.refused(
        403,
        "reader",
        "POST",
        "/v2/lbaas/loadbalancers",
        Some(json!({"loadbalancer": {"vip_subnet_id": rs}})),
    );

    // Quota: Octavia's 403.
    admin.expect(
        202,
        "PUT",
        &format!("/v2/lbaas/quotas/{pid}"),
        Some(json!({"quota": {"loadbalancer": 1}})),
    );
    let q = t.expect(200, "GET", &format!("/v2/lbaas/quotas/{pid}"), None);
    assert_eq!(q["quota"]["load_balancer"], 1);
    as_t.refused(
        403,
        "Quota has been met for resources: Load Balancer",
        "POST",
        "/v2/lbaas/loadbalancers",
        Some(json!({"loadbalancer": {"vip_subnet_id": s2}})),
    );
    as_t.refused(
        403,
        "administrator",
        "PUT",
        &format!("/v2/lbaas/quotas/{pid}"),
        Some(json!({"quota": {"loadbalancer": 5}})),
    );

    // Health and stats from the agents' socket.
    let agent = c.agent();
    let (s, _, v) = call(
        &agent,
        None,
        "PUT",
        "/internal/v1/hosts/az1-c1/lb-health",
        Some(
            &json!({"members": [{"id": m1, "up": true}, {"id": m2, "up": false}, {"id": "gone", "up": true}]}),
        ),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v, json!({"accepted": 2, "unknown": 1}));
    let (s, _, v) = call(
        &agent,
        None,
        "PUT",
        "/internal/v1/hosts/az1-c1/lb-health",
        Some(&json!({"members": "nope"})),
    );
    assert_eq!(s, 400, "{v}");
    let tree = t.expect(
        200,
        "GET",
        &format!("/v2/lbaas/loadbalancers/{lbid}/status"),
        None,
    );
    let root = &tree["statuses"]["loadbalancer"];
    assert_eq!(root["id"], lbid.as_str());
    assert_eq!(root["operating_status"], "DEGRADED");
    let lt = root["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .find(|l| l["id"] == tcp.as_str())
        .expect("tcp listener")
        .clone();
    assert_eq!(lt["operating_status"], "DEGRADED");
    assert_eq!(lt["pools"][0]["operating_status"], "DEGRADED");
    assert_eq!(lt["pools"][0]["health_monitor"]["type"], "HTTP");
    let ms = lt["pools"][0]["members"].as_array().expect("members");
    let st =
        |m: &str| ms.iter().find(|x| x["id"] == m).expect("member")["operating_status"].clone();
    assert_eq!((st(&m1), st(&m2)), (json!("ONLINE"), json!("ERROR")));
    t.expect(
        200,
        "PUT",
        &format!("{members}/{m2}"),
        Some(json!({"member": {"weight": 0}})),
    );
    let v = t.expect(200, "GET", &format!("{members}/{m2}"), None);
    assert_eq!(v["member"]["operating_status"], "DRAINING");
    assert_eq!(
        t.expect(200, "GET", &format!("/v2/lbaas/loadbalancers/{lbid}"), None)["loadbalancer"]
            ["operating_status"],
        "ONLINE"
    );
    let report = |host: &str, n: u64| {
        let (s, _, v) = call(
            &agent,
            None,
            "PUT",
            &format!("/internal/v1/hosts/{host}/lb-stats"),
            Some(
                &json!({"listeners": [{"id": tcp, "bytes_in": n, "bytes_out": 2 * n, "active_connections": 1, "total_connections": n, "request_errors": 0}, {"id": udp, "bytes_in": 1}], "members": [{"id": m1, "bytes_in": n}]}),
            ),
        );
        assert_eq!(s, 200, "{v}");
    };
    report("az1-c1", 100);
    report("az2-c1", 10);
    report("az2-c1", 20);
    let v = t.expect(
        200,
        "GET",
        &format!("/v2/lbaas/listeners/{tcp}/stats"),
        None,
    );
    assert_eq!(
        v["stats"],
        json!({"bytes_in": 120, "bytes_out": 240, "active_connections": 2, "total_connections": 120, "request_errors": 0})
    );
    let v = t.expect(
        200,
        "GET",
        &format!("/v2/lbaas/loadbalancers/{lbid}/stats"),
        None,
    );
    assert_eq!(v["stats"]["bytes_in"], 122);
    let (s, _, v) = call(
        &agent,
        None,
        "PUT",
        "/internal/v1/hosts/az1-c1/lb-stats",
        Some(&json!({"listeners": [{"id": tcp, "bogus": 1}]})),
    );
    assert_eq!(s, 400, "{v}");
    // Not on the public port.
    let (s, _, _) = call(
        &c.api,
        Some(&admin.token),
        "PUT",
        "/internal/v1/hosts/az1-c1/lb-stats",
        Some(&json!({})),
    );
    assert!(s == 404 || s == 405, "{s}");

    // Batch member update: one kept (updated), one new, one gone.
    let (s, v) = t.call("PUT", &members, Some(json!({"members": [{"address": "10.20.1.10", "protocol_port": 8080, "weight": 7}, {"address": "10.20.2.30", "protocol_port": 8080, "subnet_id": s2}]})));
    assert_eq!(s, 202, "{v}");
    let list = t.expect(200, "GET", &members, None)["members"]
        .as_array()
        .expect("members")
        .clone();
    assert_eq!(list.len(), 2);
    assert!(list
        .iter()
        .any(|m| m["id"] == m1.as_str() && m["weight"] == 7));
    assert!(list.iter().all(|m| m["id"] != m2.as_str()));

    // Cascade delete: everything goes, the VIP port with it.
    t.expect(
        204,
        "DELETE",
        &format!("/v2/lbaas/loadbalancers/{lbid}?cascade=true"),
        None,
    );
    as_t.refused(
        404,
        "not found",
        "GET",
        &format!("/v2/lbaas/pools/{pool_id}"),
        None,
    );
    as_t.refused(
        404,
        "not found",
        "GET",
        &format!("/v2/lbaas/listeners/{udp}"),
        None,
    );
    for path in [
        "/v2/lbaas/loadbalancers",
        "/v2/lbaas/listeners",
        "/v2/lbaas/pools",
        "/v2/lbaas/healthmonitors",
    ] {
        let v = t.expect(200, "GET", path, None);
        let key = path.rsplit('/').next().expect("collection");
        assert_eq!(v[key], json!([]), "{path}");
    }
    let (s, v) = t.call("GET", &format!("/v2.0/ports/{vip_port}"), None);
    assert_eq!(s, 404, "the VIP port must be gone: {v}");
    // The quota is free again.
    t.expect(
        201,
        "POST",
        "/v2/lbaas/loadbalancers",
        Some(json!({"loadbalancer": {"vip_network_id": n1}})),
    );
}
