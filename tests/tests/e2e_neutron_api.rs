//! The Neutron API over HTTP against the real controller process (no
//! namespaces needed): every error class gets its status and a NeutronError
//! body, and a rejected request changes nothing (the global revision, read
//! from the internal API, does not move).
//!
//! Bad inputs tried: no token, a garbage token, malformed JSON, a JSON array,
//! the wrong top-level key, an unknown attribute, a wrong type, a body over
//! 1 MiB, a public CIDR, overlapping subnets, a taken IP, a stale If-Match,
//! an invalid If-Match, an unknown filter, a bad limit, deletes in the wrong
//! order, exceeding a quota, another project's resources, a reader writing.

use serde_json::{json, Value};
use strato_tests::e2e::{call, call_raw, Api, ADMIN_PASSWORD};

/// The controller under test.
use strato_tests::e2e::LocalController as Controller;

/// Each listed object's `field`.
fn each<'a>(list: &'a Value, field: &str) -> Vec<&'a str> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|o| o[field].as_str().expect("a string"))
        .collect()
}

/// `api`'s calls that must be refused: with `status`, a NeutronError (of
/// type `kind` where given), and no change to the compiled revision.
struct Refusals<'a> {
    c: &'a Controller,
    api: &'a Api,
}

impl Refusals<'_> {
    fn refused(
        &self,
        status: u16,
        kind: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) {
        let (c, api) = (self.c, self.api);
        let before = c.revision();
        let (s, v) = api.call(method, path, body);
        assert_eq!(s, status, "{method} {path}: {v}");
        assert!(
            v["NeutronError"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{method} {path}: not a NeutronError: {v}"
        );
        if let Some(k) = kind {
            assert_eq!(v["NeutronError"]["type"], k, "{method} {path}: {v}");
        }
        assert_eq!(
            c.revision(),
            before,
            "{method} {path} was refused but changed the state"
        );
    }
}

#[test]
fn neutron_errors_over_http_change_nothing() {
    let c = Controller::start("neutron");
    let admin = Api::login(&c.api, "admin", ADMIN_PASSWORD, "admin");
    // Authentication.
    for token in [None, Some("st1-garbage")] {
        let (s, _, v) = call(&c.api, token, "GET", "/v2.0/networks", None);
        assert_eq!(s, 401, "{v}");
        assert_eq!(v["NeutronError"]["type"], "Unauthorized");
    }
    let net = admin.expect(
        201,
        "POST",
        "/v2.0/networks",
        Some(json!({"network": {"name": "n1"}})),
    )["network"]
        .clone();
    let nid = net["id"].as_str().unwrap().to_owned();
    assert_eq!(net["tenant_id"], net["project_id"]);
    assert_eq!(net["revision_number"], 1);
    assert_eq!(net["status"], "ACTIVE");
    let sub = admin.expect(
        201,
        "POST",
        "/v2.0/subnets",
        Some(json!({"subnet": {"network_id": nid, "cidr": "10.1.0.0/24", "ip_version": 4}})),
    );
    let sid = sub["subnet"]["id"].as_str().unwrap().to_owned();
    let port = admin.expect(
        201,
        "POST",
        "/v2.0/ports",
        Some(json!({"port": {"network_id": nid, "fixed_ips": [{"ip_address": "10.1.0.10"}]}})),
    );
    let pid = port["port"]["id"].as_str().unwrap().to_owned();

    // Malformed bodies.
    let raw = |body: &[u8]| {
        let h = [
            ("x-auth-token", admin.token.as_str()),
            ("content-type", "application/json"),
        ];
        let (s, _, v) = call_raw(&c.api, &h, "POST", "/v2.0/networks", Some(body.to_vec()));
        (s, v)
    };
    let before = c.revision();
    let (s, v) = raw(b"{\"network\": ");
    assert_eq!(s, 400, "{v}");
    assert!(v["NeutronError"].is_object());
    // Over 1 MiB: refused before the body is read. The server answers 413
    // and closes; a client still writing may see the close first, which
    // is a refusal too.
    let big = format!("{{\"network\": {{\"name\": \"{}\"}}}}", "x".repeat(1 << 20));
    match strato_tests::e2e::try_call_raw(
        &c.api,
        &[
            ("x-auth-token", admin.token.as_str()),
            ("content-type", "application/json"),
        ],
        "POST",
        "/v2.0/networks",
        Some(big.into_bytes()),
    ) {
        Ok((status, _, _)) => assert_eq!(status, 413),
        Err(e) => assert!(e.contains("writing a body"), "{e}"),
    }
    assert_eq!(c.revision(), before);

    let as_admin = Refusals { c: &c, api: &admin };
    as_admin.refused(400, None, "POST", "/v2.0/networks", Some(json!([])));
    as_admin.refused(
        400,
        None,
        "POST",
        "/v2.0/networks",
        Some(json!({"net": {}})),
    );
    as_admin.refused(
        400,
        None,
        "POST",
        "/v2.0/networks",
        Some(json!({"network": {"colour": "red"}})),
    );
    as_admin.refused(
        400,
        Some("InvalidInput"),
        "POST",
        "/v2.0/networks",
        Some(json!({"network": {"admin_state_up": 3}})),
    );
    as_admin.refused(
        400,
        None,
        "POST",
        "/v2.0/networks",
        Some(json!({"networks": [{"name": "bulk"}]})),
    );
    as_admin.refused(
        400,
        Some("InvalidInput"),
        "POST",
        "/v2.0/subnets",
        Some(json!({"subnet": {"network_id": nid, "cidr": "100.64.0.0/24", "ip_version": 4}})),
    );
    as_admin.refused(
        400,
        None,
        "POST",
        "/v2.0/subnets",
        Some(json!({"subnet": {"network_id": nid, "cidr": "10.1.0.128/25", "ip_version": 4}})),
    );
    as_admin.refused(
        409,
        Some("IpAddressAlreadyAllocated"),
        "POST",
        "/v2.0/ports",
        Some(json!({"port": {"network_id": nid, "fixed_ips": [{"ip_address": "10.1.0.10"}]}})),
    );
    as_admin.refused(
        404,
        Some("NetworkNotFound"),
        "GET",
        "/v2.0/networks/00000000-0000-0000-0000-000000000000",
        None,
    );
    as_admin.refused(400, None, "GET", "/v2.0/networks?colour=red", None);
    as_admin.refused(400, None, "GET", "/v2.0/networks?limit=many", None);
    as_admin.refused(
        409,
        Some("NetworkInUse"),
        "DELETE",
        &format!("/v2.0/networks/{nid}"),
        None,
    );
    as_admin.refused(
        409,
        Some("SubnetInUse"),
        "DELETE",
        &format!("/v2.0/subnets/{sid}"),
        None,
    );

    // If-Match over HTTP.
    let put = |if_match: &str| {
        let h = [
            ("x-auth-token", admin.token.as_str()),
            ("if-match", if_match),
        ];
        let body = serde_json::to_vec(&json!({"port": {"name": "renamed"}})).unwrap();
        let (s, _, v) = call_raw(&c.api, &h, "PUT", &format!("/v2.0/ports/{pid}"), Some(body));
        (s, v)
    };
    let before = c.revision();
    assert_eq!(put("revision_number=99").0, 412);
    assert_eq!(put("whatever").0, 400);
    assert_eq!(c.revision(), before);
    let (s, v) = put("revision_number=1");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["port"]["revision_number"], 2);
    assert_eq!(v["port"]["name"], "renamed");

    // Filters, fields, pagination.
    for i in 0..4 {
        admin.expect(
            201,
            "POST",
            "/v2.0/networks",
            Some(json!({"network": {"name": format!("page{i}")}})),
        );
    }
    let v = admin.expect(
        200,
        "GET",
        "/v2.0/networks?name=page1&name=page2&fields=name&fields=id",
        None,
    );
    let names = each(&v["networks"], "name");
    assert_eq!(names.len(), 2);
    assert!(v["networks"][0].as_object().unwrap().len() == 2);
    let v = admin.expect(200, "GET", "/v2.0/networks?limit=2", None);
    assert_eq!(v["networks"].as_array().unwrap().len(), 2);
    let next = v["networks_links"][0]["href"].as_str().expect("next link");
    assert!(next.contains("marker="), "{next}");
    let v = admin.expect(
        200,
        "GET",
        "/v2.0/ports?fixed_ips=ip_address%3D10.1.0.10",
        None,
    );
    assert_eq!(v["ports"].as_array().unwrap().len(), 1, "{v}");

    // Quotas, another project, a reader.
    let (_, _, me) = call(
        &c.api,
        Some(&admin.token),
        "GET",
        "/v3/projects?name=admin",
        None,
    );
    let admin_pid = me["projects"][0]["id"].as_str().unwrap().to_owned();
    admin.expect(
        201,
        "POST",
        "/v3/projects",
        Some(json!({"project": {"name": "other", "domain_id": "default"}})),
    );
    admin.expect(201, "POST", "/v3/users", Some(json!({"user": {"name": "olga", "password": "olga-pass-1", "default_project_id": null, "domain_id": "default"}})));
    let other_pid = admin.expect(200, "GET", "/v3/projects?name=other", None)["projects"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let olga = admin.expect(200, "GET", "/v3/users?name=olga", None)["users"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reader_role = admin.expect(200, "GET", "/v3/roles?name=reader", None)["roles"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let member_role = admin.expect(200, "GET", "/v3/roles?name=member", None)["roles"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    admin.expect(
        204,
        "PUT",
        &format!("/v3/projects/{other_pid}/users/{olga}/roles/{member_role}"),
        None,
    );
    let o = Api::login(&c.api, "olga", "olga-pass-1", "other");
    let as_o = Refusals { c: &c, api: &o };
    as_o.refused(
        404,
        Some("NetworkNotFound"),
        "GET",
        &format!("/v2.0/networks/{nid}"),
        None,
    );
    as_o.refused(404, None, "DELETE", &format!("/v2.0/ports/{pid}"), None);
    as_o.refused(
        403,
        None,
        "PUT",
        &format!("/v2.0/quotas/{other_pid}"),
        Some(json!({"quota": {"network": 1}})),
    );
    admin.expect(
        200,
        "PUT",
        &format!("/v2.0/quotas/{other_pid}"),
        Some(json!({"quota": {"network": 1}})),
    );
    o.expect(
        201,
        "POST",
        "/v2.0/networks",
        Some(json!({"network": {"name": "only-one"}})),
    );
    as_o.refused(
        409,
        Some("OverQuota"),
        "POST",
        "/v2.0/networks",
        Some(json!({"network": {"name": "two"}})),
    );
    let q = o.expect(
        200,
        "GET",
        &format!("/v2.0/quotas/{other_pid}/details"),
        None,
    );
    assert_eq!(q["quota"]["network"]["used"], 1);
    as_o.refused(403, None, "GET", &format!("/v2.0/quotas/{admin_pid}"), None);
    admin.expect(
        204,
        "DELETE",
        &format!("/v3/projects/{other_pid}/users/{olga}/roles/{member_role}"),
        None,
    );
    admin.expect(
        204,
        "PUT",
        &format!("/v3/projects/{other_pid}/users/{olga}/roles/{reader_role}"),
        None,
    );
    let r = Api::login(&c.api, "olga", "olga-pass-1", "other");
    assert_eq!(
        r.expect(200, "GET", "/v2.0/networks", None)["networks"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let as_r = Refusals { c: &c, api: &r };
    as_r.refused(
        403,
        None,
        "POST",
        "/v2.0/networks",
        Some(json!({"network": {}})),
    );
    // The extensions list names what is implemented.
    let ext = admin.expect(200, "GET", "/v2.0/extensions", None);
    let aliases = each(&ext["extensions"], "alias");
    for a in [
        "router",
        "extraroute",
        "quotas",
        "port-security",
        "allowed-address-pairs",
        "binding",
        "revision-if-match",
    ] {
        assert!(aliases.contains(&a), "{a} missing from {aliases:?}");
    }
}

#[test]
fn security_groups_over_http() {
    let c = Controller::start("neutron");
    let admin = Api::login(&c.api, "admin", ADMIN_PASSWORD, "admin");
    // A list refused for its filters creates nothing; the first good list
    // gives the project its default group, once.
    let as_admin = Refusals { c: &c, api: &admin };
    as_admin.refused(400, None, "GET", "/v2.0/security-groups?colour=red", None);
    let groups = admin.expect(200, "GET", "/v2.0/security-groups", None);
    let rev = c.revision();
    let groups = groups["security_groups"].as_array().unwrap().clone();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0]["name"], "default");
    assert_eq!(
        groups[0]["security_group_rules"].as_array().unwrap().len(),
        4
    );
    let default_id = groups[0]["id"].as_str().unwrap().to_owned();
    admin.expect(200, "GET", "/v2.0/security-groups", None);
    assert_eq!(c.revision(), rev, "listing again changes nothing");

    let g = admin.expect(
        201,
        "POST",
        "/v2.0/security-groups",
        Some(json!({"security_group": {"name": "web", "stateful": false}})),
    )["security_group"]
        .clone();
    let gid = g["id"].as_str().unwrap().to_owned();
    assert_eq!(g["stateful"], false);
    assert_eq!(g["shared"], false);
    assert_eq!(g["security_group_rules"].as_array().unwrap().len(), 2);
    let r = admin.expect(
        201,
        "POST",
        "/v2.0/security-group-rules",
        Some(json!({"security_group_rule": {"security_group_id": gid, "direction": "ingress", "protocol": "TCP", "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "10.1.0.9/24"}})),
    )["security_group_rule"]
        .clone();
    assert_eq!(r["protocol"], "tcp");
    assert_eq!(r["remote_ip_prefix"], "10.1.0.0/24");
    assert_eq!(r["normalized_cidr"], "10.1.0.0/24");
    assert_eq!(r["belongs_to_default_sg"], false);
    let rid = r["id"].as_str().unwrap().to_owned();
    let bulk = admin.expect(
        201,
        "POST",
        "/v2.0/security-group-rules",
        Some(json!({"security_group_rules": [
            {"security_group_id": gid, "direction": "ingress", "protocol": "tcp", "port_range_min": 80, "port_range_max": 80},
            {"security_group_id": gid, "direction": "ingress", "protocol": "icmp", "port_range_min": 8},
        ]})),
    );
    assert_eq!(bulk["security_group_rules"].as_array().unwrap().len(), 2);

    let rules = "/v2.0/security-group-rules";
    as_admin.refused(409,
        Some("SecurityGroupRuleExists"),
        "POST",
        rules,
        Some(
            json!({"security_group_rule": {"security_group_id": gid, "direction": "ingress", "protocol": "6", "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "10.1.0.0/24"}}),
        ),
    );
    as_admin.refused(409,
        Some("DuplicateSecurityGroupRuleInPost"),
        "POST",
        rules,
        Some(json!({"security_group_rules": [
            {"security_group_id": gid, "direction": "egress", "protocol": "udp", "port_range_min": 53, "port_range_max": 53},
            {"security_group_id": gid, "direction": "egress", "protocol": "udp", "port_range_min": 53, "port_range_max": 53},
        ]})),
    );
    as_admin.refused(400,
        Some("SecurityGroupRuleInvalidProtocol"),
        "POST",
        rules,
        Some(
            json!({"security_group_rule": {"security_group_id": gid, "direction": "ingress", "protocol": "tcpp"}}),
        ),
    );
    as_admin.refused(400,
        Some("SecurityGroupRemoteGroupAndRemoteIpPrefix"),
        "POST",
        rules,
        Some(
            json!({"security_group_rule": {"security_group_id": gid, "direction": "ingress", "remote_group_id": gid, "remote_ip_prefix": "10.0.0.0/8"}}),
        ),
    );
    as_admin.refused(404,
        Some("SecurityGroupNotFound"),
        "POST",
        rules,
        Some(
            json!({"security_group_rule": {"security_group_id": "3b0c1bd6-1c42-4b4e-a6e2-4e4f6fe2c0c1", "direction": "ingress"}}),
        ),
    );
    as_admin.refused(
        409,
        Some("SecurityGroupCannotUpdateDefault"),
        "PUT",
        &format!("/v2.0/security-groups/{default_id}"),
        Some(json!({"security_group": {"name": "x"}})),
    );
    as_admin.refused(
        409,
        Some("SecurityGroupDefaultAlreadyExists"),
        "POST",
        "/v2.0/security-groups",
        Some(json!({"security_group": {"name": "default"}})),
    );
    as_admin.refused(
        400,
        None,
        "PUT",
        &format!("{rules}/{rid}"),
        Some(json!({"security_group_rule": {"port_range_min": 23}})),
    );

    // Filters, pagination over the hyphenated path.
    let tcp = admin.expect(
        200,
        "GET",
        &format!("{rules}?security_group_id={gid}&protocol=tcp"),
        None,
    );
    assert_eq!(tcp["security_group_rules"].as_array().unwrap().len(), 2);
    let page = admin.expect(
        200,
        "GET",
        &format!("{rules}?security_group_id={gid}&limit=2"),
        None,
    );
    assert!(page["security_group_rules_links"][0]["href"]
        .as_str()
        .unwrap()
        .contains("/v2.0/security-group-rules?"));
    let res = admin.expect(200, "GET", "/v2.0/", None);
    assert!(res["resources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["collection"] == "security_groups"));
    let ext = admin.expect(200, "GET", "/v2.0/extensions", None);
    for a in ["security-group", "stateful-security-group"] {
        assert!(
            ext["extensions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["alias"] == a),
            "{a}"
        );
    }

    // 10,000 rules in one request (about 2 MB: bulk rule creation may post
    // up to 16 MiB), one commit.
    let project = g["project_id"].as_str().unwrap();
    admin.expect(
        200,
        "PUT",
        &format!("/v2.0/quotas/{project}"),
        Some(json!({"quota": {"security_group_rule": -1}})),
    );
    let many: Vec<Value> = (0..10_000u32)
        .map(|i| json!({"security_group_id": gid, "direction": "ingress", "protocol": "udp", "port_range_min": 1000 + i, "port_range_max": 1000 + i, "remote_ip_prefix": "172.16.0.0/12", "description": format!("rule {i}")}))
        .collect();
    let before = c.revision();
    // (How fast is a benchmark figure: no clock here.)
    let made = admin.expect(
        201,
        "POST",
        rules,
        Some(json!({ "security_group_rules": many })),
    );
    assert_eq!(
        made["security_group_rules"].as_array().unwrap().len(),
        10_000
    );
    assert_eq!(c.revision(), before + 1);
    let g = admin.expect(200, "GET", &format!("/v2.0/security-groups/{gid}"), None);
    assert_eq!(
        g["security_group"]["security_group_rules"]
            .as_array()
            .unwrap()
            .len(),
        10_005
    );

    // Deleting the group takes its rules.
    let (s, _) = admin.call("DELETE", &format!("/v2.0/security-groups/{gid}"), None);
    assert_eq!(s, 204);
    as_admin.refused(
        404,
        Some("SecurityGroupRuleNotFound"),
        "GET",
        &format!("{rules}/{rid}"),
        None,
    );
}
