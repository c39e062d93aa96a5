//! Neutron logic against a real (in-memory SQLite) core: every validation
//! rule, and that a rejected command changes nothing.
//!
//! Bad inputs tried: unknown attributes, wrong types, missing required
//! attributes, public/overlapping/non-canonical/too-small CIDRs, IPv6,
//! gateways outside the subnet, pools overlapping/outside/containing the
//! gateway, too many DNS servers, duplicate host routes, fixed IPs on
//! foreign subnets/outside the subnet/taken/the gateway, exhausted pools,
//! duplicate and multicast MACs, address pairs without port security,
//! non-admin binding, reserved device owners, deletes in the wrong order,
//! router interfaces on overlapping subnets or twice on one subnet, routes
//! with unreachable nexthops, interfaces needed by routes, quotas, If-Match
//! mismatches, readers writing, other projects' resources.

use serde_json::{json, Value};

use super::{
    testkit::{auth, core, member, run},
    *,
};
use crate::{auth::Auth, commit::Core};

fn net(c: &Core, a: &Auth) -> String {
    run(c, |s| {
        networks::create(s, a, &json!({"network": {"name": "n"}}))
    })
    .expect("network")
    .meta
    .id
}

fn subnet(c: &Core, a: &Auth, network: &str, cidr: &str) -> Result<crate::model::Subnet, ApiError> {
    run(c, |s| {
        subnets::create(
            s,
            a,
            &json!({"subnet": {"network_id": network, "cidr": cidr, "ip_version": 4}}),
        )
    })
}

fn port(c: &Core, a: &Auth, body: Value) -> Result<crate::model::Port, ApiError> {
    run(c, |s| ports::create(s, a, &json!({ "port": body })))
}

#[test]
fn networks_vni_visibility_and_errors() {
    let c = core();
    let (a1, a2) = (member("p1"), member("p2"));
    let n1 = net(&c, &a1);
    let n2 = net(&c, &a2);
    let s = c.read();
    assert_ne!(s.networks[&n1].vni, s.networks[&n2].vni);
    assert_eq!(s.networks[&n1].mtu, networks::OVERLAY_MTU);
    assert_eq!(
        networks::get(&s, &a2, &n1).unwrap_err().status,
        404,
        "other project's network must be invisible"
    );
    drop(s);
    for bad in [
        json!({"network": {"name": 5}}),
        json!({"network": {"colour": "red"}}),
        json!({"network": {"admin_state_up": "maybe"}}),
        json!({"network": {"mtu": 9000}}),
        json!({"network": {"shared": true}}),
        json!({"networks": [{}]}),
        json!({"network": []}),
        json!({"network": {"router:external": true}}),
        json!({"network": {"project_id": "p2"}}),
    ] {
        let e = run(&c, |s| networks::create(s, &a1, &bad)).unwrap_err();
        assert!(matches!(e.status, 400 | 403), "{bad}: {e}");
    }
    let reader = auth("p1", "reader");
    assert_eq!(
        run(&c, |s| networks::create(
            s,
            &reader,
            &json!({"network": {}})
        ))
        .unwrap_err()
        .status,
        403
    );
    assert_eq!(
        run(&c, |s| networks::delete(s, &reader, &n1, None))
            .unwrap_err()
            .status,
        403
    );
    assert_eq!(
        run(&c, |s| networks::delete(s, &a2, &n1, None))
            .unwrap_err()
            .status,
        404
    );
    // If-Match.
    let e = run(&c, |s| {
        networks::update(
            s,
            &a1,
            &n1,
            &json!({"network": {"name": "x"}}),
            Some("revision_number=7"),
        )
    })
    .unwrap_err();
    assert_eq!(e.status, 412);
    let n = run(&c, |s| {
        networks::update(
            s,
            &a1,
            &n1,
            &json!({"network": {"name": "x"}}),
            Some("revision_number=1"),
        )
    })
    .unwrap();
    assert_eq!((n.meta.name.as_str(), n.meta.revision_number), ("x", 2));
    assert_eq!(
        run(&c, |s| networks::update(
            s,
            &a1,
            &n1,
            &json!({"network": {"id": "y"}}),
            None
        ))
        .unwrap_err()
        .status,
        400
    );
}

#[test]
fn subnets_validate_like_neutron() {
    let c = core();
    let a = member("p1");
    let n = net(&c, &a);
    let s1 = subnet(&c, &a, &n, "10.0.1.0/24").expect("subnet");
    assert_eq!(s1.gateway_ip.as_deref(), Some("10.0.1.1"));
    assert_eq!(s1.allocation_pools[0].start, "10.0.1.2");
    assert!(s1.enable_dhcp);
    for (cidr, status) in [
        ("8.8.8.0/24", 400),
        ("10.0.1.128/25", 400), // overlaps s1
        ("10.0.2.1/24", 400),
        ("10.0.2.0/30", 400),
        ("fd00::/64", 400),
        ("nonsense", 400),
    ] {
        assert_eq!(
            subnet(&c, &a, &n, cidr).unwrap_err().status,
            status,
            "{cidr}"
        );
    }
    // Same CIDR in another project's network is fine (VPCs are isolated).
    let b = member("p2");
    let nb = net(&c, &b);
    subnet(&c, &b, &nb, "10.0.1.0/24").expect("same CIDR in another project");
    let bad =
        |body: Value| run(&c, |s| subnets::create(s, &a, &json!({ "subnet": body }))).unwrap_err();
    assert_eq!(
        bad(json!({"network_id": n, "cidr": "10.0.3.0/24", "gateway_ip": "10.0.4.1"})).status,
        400
    );
    assert_eq!(
        bad(json!({"network_id": n, "cidr": "10.0.3.0/24", "gateway_ip": "10.0.3.255"})).status,
        400
    );
    assert_eq!(bad(json!({"network_id": n, "cidr": "10.0.3.0/24", "allocation_pools": [{"start": "10.0.3.1", "end": "10.0.3.9"}]})).status, 409);
    assert_eq!(bad(json!({"network_id": n, "cidr": "10.0.3.0/24", "allocation_pools": [{"start": "10.0.3.5", "end": "10.0.4.9"}]})).status, 400);
    assert_eq!(bad(json!({"network_id": n, "cidr": "10.0.3.0/24", "allocation_pools": [{"start": "10.0.3.5"}]})).status, 400);
    assert_eq!(bad(json!({"network_id": n, "cidr": "10.0.3.0/24", "dns_nameservers": ["1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4", "1.1.1.5", "1.1.1.6"]})).status, 400);
    assert_eq!(bad(json!({"network_id": n, "cidr": "10.0.3.0/24", "dns_nameservers": ["1.1.1.1", "1.1.1.1"]})).status, 400);
    assert_eq!(bad(json!({"network_id": n, "cidr": "10.0.3.0/24", "host_routes": [{"destination": "0.0.0.0/0", "nexthop": "10.0.3.9"}, {"destination": "0.0.0.0/0", "nexthop": "10.0.3.9"}]})).status, 400);
    assert_eq!(
        bad(json!({"network_id": n, "cidr": "10.0.3.0/24", "ip_version": 6})).status,
        400
    );
    assert_eq!(bad(json!({"cidr": "10.0.3.0/24"})).status, 400);
    assert_eq!(bad(json!({"network_id": n})).status, 400);
    assert_eq!(
        bad(json!({"network_id": nb, "cidr": "10.0.3.0/24"})).status,
        404
    );
    // No gateway at all is allowed.
    let s = run(&c, |s| {
        subnets::create(
            s,
            &a,
            &json!({"subnet": {"network_id": n, "cidr": "10.0.5.0/24", "gateway_ip": null}}),
        )
    })
    .unwrap();
    assert_eq!(s.gateway_ip, None);
    assert_eq!(s.allocation_pools[0].start, "10.0.5.1");
    // Read-only attributes.
    assert_eq!(
        run(&c, |st| subnets::update(
            st,
            &a,
            Edit::new(&s1.meta.id, &json!({"subnet": {"cidr": "10.9.0.0/24"}}))
        ))
        .unwrap_err()
        .status,
        400
    );
}

#[test]
fn ports_allocate_and_conflict() {
    let c = core();
    let a = member("p1");
    let n = net(&c, &a);
    let sn = subnet(&c, &a, &n, "10.0.1.0/29").expect("subnet"); // hosts .1-.6, gw .1
    let p1 = port(&c, &a, json!({"network_id": n})).expect("port");
    assert_eq!(p1.fixed_ips[0].ip_address, "10.0.1.2");
    assert!(p1.mac_address.starts_with("fa:16:3e:"));
    assert!(p1.port_security_enabled);
    let p2 = port(
        &c,
        &a,
        json!({"network_id": n, "fixed_ips": [{"ip_address": "10.0.1.5"}]}),
    )
    .expect("port");
    assert_eq!(p2.fixed_ips[0].subnet_id, sn.meta.id);
    assert_eq!(
        port(
            &c,
            &a,
            json!({"network_id": n, "fixed_ips": [{"ip_address": "10.0.1.5"}]})
        )
        .unwrap_err()
        .status,
        409
    );
    assert_eq!(
        port(
            &c,
            &a,
            json!({"network_id": n, "fixed_ips": [{"ip_address": "10.0.1.1"}]})
        )
        .unwrap_err()
        .status,
        409
    );
    assert_eq!(
        port(
            &c,
            &a,
            json!({"network_id": n, "fixed_ips": [{"ip_address": "10.0.2.5"}]})
        )
        .unwrap_err()
        .status,
        400
    );
    assert_eq!(
        port(
            &c,
            &a,
            json!({"network_id": n, "fixed_ips": [{"subnet_id": "nope"}]})
        )
        .unwrap_err()
        .status,
        400
    );
    assert_eq!(port(&c, &a, json!({"network_id": n, "fixed_ips": [{"subnet_id": sn.meta.id, "ip_address": "10.0.1.7"}]})).unwrap_err().status, 400);
    assert_eq!(
        port(
            &c,
            &a,
            json!({"network_id": n, "mac_address": p1.mac_address})
        )
        .unwrap_err()
        .status,
        409
    );
    assert_eq!(
        port(
            &c,
            &a,
            json!({"network_id": n, "mac_address": "01:00:5e:00:00:01"})
        )
        .unwrap_err()
        .status,
        400
    );
    assert_eq!(
        port(&c, &a, json!({"network_id": n, "binding:host_id": "h1"}))
            .unwrap_err()
            .status,
        403
    );
    assert_eq!(
        port(
            &c,
            &a,
            json!({"network_id": n, "device_owner": "network:dhcp"})
        )
        .unwrap_err()
        .status,
        403
    );
    assert_eq!(port(&c, &a, json!({"network_id": n, "port_security_enabled": false, "allowed_address_pairs": [{"ip_address": "10.0.1.100"}]})).unwrap_err().status, 409);
    assert_eq!(
        port(
            &c,
            &a,
            json!({"network_id": n, "security_groups": ["not-a-uuid"]})
        )
        .unwrap_err()
        .status,
        400
    );
    assert_eq!(
        port(&c, &a, json!({"network_id": n, "fixed_ips": "10.0.1.3"}))
            .unwrap_err()
            .status,
        400
    );
    // Pool exhaustion: .3 .4 .6 left.
    for _ in 0..3 {
        port(&c, &a, json!({"network_id": n})).expect("port");
    }
    assert_eq!(
        port(&c, &a, json!({"network_id": n})).unwrap_err().status,
        409
    );
    // Admin binds; pairs default to the port's MAC.
    let admin = auth("p1", "admin");
    let p = port(&c, &admin, json!({"network_id": n, "fixed_ips": [], "binding:host_id": "h1", "allowed_address_pairs": [{"ip_address": "10.0.9.0/24"}]})).expect("bound port");
    assert_eq!(p.binding_host_id, "h1");
    assert_eq!(p.allowed_address_pairs[0].mac_address, p.mac_address);
    // Updates keep own IPs and may move them.
    let u = run(&c, |s| {
        ports::update(
            s,
            &a,
            &p2.meta.id,
            &json!({"port": {"fixed_ips": [{"ip_address": "10.0.1.5"}], "name": "x"}}),
            None,
        )
    })
    .unwrap();
    assert_eq!(u.fixed_ips[0].ip_address, "10.0.1.5");
    assert_eq!(
        run(&c, |s| ports::update(
            s,
            &a,
            &p2.meta.id,
            &json!({"port": {"network_id": n}}),
            None
        ))
        .unwrap_err()
        .status,
        400
    );
    // Deleting in the wrong order.
    assert_eq!(
        run(&c, |s| subnets::delete(s, &a, &sn.meta.id, None))
            .unwrap_err()
            .status,
        409
    );
    assert_eq!(
        run(&c, |s| networks::delete(s, &a, &n, None))
            .unwrap_err()
            .status,
        409
    );
    // Another project cannot see or delete the port.
    assert_eq!(
        run(&c, |s| ports::delete(s, &member("p2"), &p1.meta.id, None))
            .unwrap_err()
            .status,
        404
    );
}

#[test]
fn routers_interfaces_routes_and_order() {
    let c = core();
    let a = member("p1");
    let n1 = net(&c, &a);
    let n2 = net(&c, &a);
    let n3 = net(&c, &a);
    let s1 = subnet(&c, &a, &n1, "10.0.1.0/24").unwrap();
    let s2 = subnet(&c, &a, &n2, "10.0.2.0/24").unwrap();
    let s3 = subnet(&c, &a, &n3, "10.0.0.0/16").unwrap(); // overlaps both
    let r = run(&c, |s| {
        routers::create(s, &a, &json!({"router": {"name": "r"}}))
    })
    .unwrap();
    let rid = r.meta.id.clone();
    let add = |sid: &str| {
        run(&c, |s| {
            routers::add_interface(s, &a, &rid, &json!({"subnet_id": sid}))
        })
    };
    let info = add(&s1.meta.id).unwrap();
    assert_eq!(info["subnet_id"], s1.meta.id.as_str());
    add(&s2.meta.id).unwrap();
    assert_eq!(
        add(&s1.meta.id).unwrap_err().status,
        400,
        "twice on one subnet"
    );
    assert_eq!(
        add(&s3.meta.id).unwrap_err().status,
        400,
        "overlapping subnet"
    );
    let bad = |b: Value| {
        run(&c, |s| routers::add_interface(s, &a, &rid, &b))
            .unwrap_err()
            .status
    };
    assert_eq!(bad(json!({})), 400);
    assert_eq!(bad(json!({"subnet_id": s1.meta.id, "port_id": "x"})), 400);
    assert_eq!(bad(json!({"subnet_id": "nope"})), 404);
    // The interface port holds the gateway address and cannot be deleted directly.
    let iface = routers::interfaces(&c.read(), &rid)
        .into_iter()
        .find(|p| p.fixed_ips[0].subnet_id == s1.meta.id)
        .cloned()
        .unwrap();
    assert_eq!(iface.fixed_ips[0].ip_address, "10.0.1.1");
    assert_eq!(
        run(&c, |s| ports::delete(s, &a, &iface.meta.id, None))
            .unwrap_err()
            .status,
        409
    );
    // Static routes: nexthop must be in an attached subnet, not the router itself.
    let route = |hop: &str| {
        run(&c, |s| {
            routers::update(
                s,
                &a,
                Edit::new(
                    &rid,
                    &json!({"router": {"routes": [{"destination": "192.168.0.0/16", "nexthop": hop}]}}),
                ),
            )
        })
    };
    assert_eq!(route("10.0.9.5").unwrap_err().status, 400);
    assert_eq!(route("10.0.1.1").unwrap_err().status, 400);
    route("10.0.2.10").unwrap();
    // Wrong order: router with interfaces, subnet with interface, interface needed by a route.
    assert_eq!(
        run(&c, |s| routers::delete(s, &a, &rid, None))
            .unwrap_err()
            .status,
        409
    );
    assert_eq!(
        run(&c, |s| subnets::delete(s, &a, &s1.meta.id, None))
            .unwrap_err()
            .status,
        409
    );
    let rm = |sid: &str| {
        run(&c, |s| {
            routers::remove_interface(s, &a, &rid, &json!({"subnet_id": sid}))
        })
    };
    assert_eq!(rm(&s2.meta.id).unwrap_err().status, 409);
    assert_eq!(rm(&s3.meta.id).unwrap_err().status, 404);
    // Right order.
    run(&c, |s| {
        routers::update(s, &a, Edit::new(&rid, &json!({"router": {"routes": []}})))
    })
    .unwrap();
    rm(&s1.meta.id).unwrap();
    rm(&s2.meta.id).unwrap();
    run(&c, |s| routers::delete(s, &a, &rid, None)).unwrap();
    run(&c, |s| subnets::delete(s, &a, &s1.meta.id, None)).unwrap();
    run(&c, |s| networks::delete(s, &a, &n2, None)).unwrap(); // takes its subnet along
    assert!(!c.read().subnets.contains_key(&s2.meta.id));
}

#[test]
fn quotas_limit_creation() {
    let c = core();
    let a = member("p1");
    let admin = auth("p1", "admin");
    let set = |who: &Auth, project: &str, q: Value| {
        run(&c, |s| {
            quotas::update(s, who, project, &json!({ "quota": q }))
        })
    };
    // An integral number with a fraction is an integer (JSON Schema's and
    // Neutron's int() reading); a real fraction is not.
    for (who, project, q, status) in [
        (&a, "p1", json!({"network": 1}), 403),
        (&admin, "p1", json!({"network": -2}), 400),
        (&admin, "p1", json!({"subnet": 7.5}), 400),
        (&admin, "p1", json!({"colour": 1}), 400),
        (&admin, "nope", json!({"network": 1}), 404),
    ] {
        let e = set(who, project, q.clone()).expect_err("refused");
        assert_eq!(e.status, status, "{q}");
    }
    let q = set(&admin, "p1", json!({"subnet": 7.0})).unwrap();
    assert_eq!(q["quota"]["subnet"], 7);
    run(&c, |s| {
        quotas::update(s, &admin, "p1", &json!({"quota": {"network": 1}}))
    })
    .unwrap();
    net(&c, &a);
    let e = run(&c, |s| networks::create(s, &a, &json!({"network": {}}))).unwrap_err();
    assert_eq!((e.status, e.kind.as_str()), (409, "OverQuota"));
    net(&c, &member("p2"));
    run(&c, |s| quotas::reset(s, &admin, "p1")).unwrap();
    net(&c, &a);
}

// ------------------------------------------------------------ security groups

use crate::model::{Direction, Ethertype, Kind, SecurityGroup, SecurityGroupRule};
use security_groups as sg;

fn group(c: &Core, a: &Auth, body: Value) -> Result<SecurityGroup, ApiError> {
    run(c, |s| sg::create(s, a, &json!({ "security_group": body })))
}

fn rule(c: &Core, a: &Auth, body: Value) -> Result<SecurityGroupRule, ApiError> {
    run(c, |s| {
        sg::create_rules(s, a, &json!({ "security_group_rule": body }))
            .map(|(c, mut r)| (c, r.remove(0)))
    })
}

fn rules(c: &Core, a: &Auth, body: Vec<Value>) -> Result<Vec<SecurityGroupRule>, ApiError> {
    run(c, |s| {
        sg::create_rules(s, a, &json!({ "security_group_rules": body }))
    })
}

/// The project's default group, made (or found) the way the list handler
/// does: through `Core::mutate`.
fn default_sg(c: &Core, project: &str) -> String {
    c.mutate(|s| Ok(sg::ensure_default(s, project))).unwrap()
}

fn set_quota(c: &Core, project: &str, q: Value) {
    run(c, |s| {
        quotas::update(s, &auth(project, "admin"), project, &json!({ "quota": q }))
    })
    .expect("quota");
}

#[test]
fn default_security_group_once_with_neutron_rules() {
    let c = core();
    let before = c.read().revision;
    let id = default_sg(&c, "p1");
    assert_eq!(c.read().revision, before + 1, "one commit");
    assert_eq!(default_sg(&c, "p1"), id, "idempotent");
    assert_eq!(c.read().revision, before + 1, "no changes, no revision");
    let s = c.read();
    let g = &s.security_groups[&id];
    assert_eq!((g.meta.name.as_str(), g.stateful), ("default", true));
    let mut shape: Vec<(Direction, Ethertype, Option<String>)> = s
        .group_rules(&id)
        .map(|r| {
            assert!(r.protocol.is_none() && r.remote_ip_prefix.is_none());
            assert!(r.port_range_min.is_none() && r.port_range_max.is_none());
            assert_eq!(r.meta.project_id, "p1");
            (r.direction, r.ethertype, r.remote_group_id.clone())
        })
        .collect();
    shape.sort();
    assert_eq!(
        shape,
        vec![
            (Direction::Ingress, Ethertype::IPv4, Some(id.clone())),
            (Direction::Ingress, Ethertype::IPv6, Some(id.clone())),
            (Direction::Egress, Ethertype::IPv4, None),
            (Direction::Egress, Ethertype::IPv6, None),
        ]
    );
    let r = sg::render(&s, g);
    assert_eq!(r["security_group_rules"].as_array().unwrap().len(), 4);
    assert_eq!(r["security_group_rules"][0]["belongs_to_default_sg"], true);
    assert_eq!(r["shared"], false);
    assert_eq!(r["tenant_id"], "p1");
    drop(s);

    // A port without groups gets its project's default group, created in
    // the port's own commit if the project has none yet.
    let a2 = member("p2");
    let n = net(&c, &a2);
    let rev = c.read().revision;
    let p = port(&c, &a2, json!({"network_id": n})).unwrap();
    assert_eq!(
        c.read().revision,
        rev + 1,
        "group, rules and port: one commit"
    );
    let d2 = sg::default_group(&c.read(), "p2").unwrap().meta.id.clone();
    assert_eq!(p.security_groups, vec![d2.clone()]);
    let p = port(&c, &a2, json!({"network_id": n})).unwrap();
    assert_eq!(p.security_groups, vec![d2]);
    assert_eq!(
        c.read()
            .security_groups
            .values()
            .filter(|g| g.meta.project_id == "p2")
            .count(),
        1
    );
    // Port security off, or an explicit empty list: no groups.
    let p = port(
        &c,
        &a2,
        json!({"network_id": n, "port_security_enabled": false}),
    )
    .unwrap();
    assert!(p.security_groups.is_empty());
    let p = port(&c, &a2, json!({"network_id": n, "security_groups": []})).unwrap();
    assert!(p.security_groups.is_empty());
}

#[test]
fn security_groups_create_update_delete_like_neutron() {
    let c = core();
    let a = member("p1");
    let admin = auth("p1", "admin");
    let rev = c.read().revision;
    let web = group(&c, &a, json!({"name": "web", "description": "d"})).unwrap();
    assert_eq!(c.read().revision, rev + 1);
    assert!(web.stateful);
    {
        let s = c.read();
        // The first group of a project brings the default group along.
        let d = sg::default_group(&s, "p1").expect("default group");
        assert_eq!(s.group_rules(&d.meta.id).count(), 4);
        let mut e: Vec<Ethertype> = s
            .group_rules(&web.meta.id)
            .map(|r| {
                assert_eq!(r.direction, Direction::Egress);
                assert!(r.remote_group_id.is_none() && r.protocol.is_none());
                r.ethertype
            })
            .collect();
        e.sort();
        assert_eq!(e, vec![Ethertype::IPv4, Ethertype::IPv6]);
    }
    let stateless = group(&c, &a, json!({"name": "sl", "stateful": false})).unwrap();
    assert!(!stateless.stateful);
    assert_eq!(c.read().group_rules(&stateless.meta.id).count(), 2);
    let d = sg::default_group(&c.read(), "p1").unwrap().meta.id.clone();

    for (bad, status) in [
        (json!({"name": "default"}), 409),
        (json!({"name": "Default"}), 409),
        (json!({"name": 5}), 400),
        (json!({"colour": "red"}), 400),
        (json!({"stateful": "maybe"}), 400),
        (json!({"project_id": "p2"}), 403),
        (json!({"name": "x".repeat(256)}), 400),
    ] {
        let e = group(&c, &a, bad.clone()).unwrap_err();
        assert_eq!(e.status, status, "{bad}: {e}");
    }
    assert_eq!(
        group(&c, &auth("p1", "reader"), json!({}))
            .unwrap_err()
            .status,
        403
    );
    let upd = |id: &str, who: &Auth, b: Value, m: Option<&str>| {
        run(&c, |s| {
            sg::update(
                s,
                who,
                Edit::new(id, &json!({ "security_group": b })).if_match(m),
            )
        })
    };
    assert_eq!(
        upd(&d, &a, json!({"name": "x"}), None).unwrap_err().kind,
        "SecurityGroupCannotUpdateDefault"
    );
    assert_eq!(
        upd(&d, &admin, json!({"name": "default"}), None)
            .unwrap_err()
            .status,
        409
    );
    upd(&d, &a, json!({"description": "ours"}), None).unwrap();
    assert_eq!(
        upd(&web.meta.id, &a, json!({"name": "DEFAULT"}), None)
            .unwrap_err()
            .status,
        409
    );
    assert_eq!(
        upd(
            &web.meta.id,
            &a,
            json!({"name": "w"}),
            Some("revision_number=9")
        )
        .unwrap_err()
        .status,
        412
    );
    assert_eq!(
        upd(&web.meta.id, &a, json!({"id": "x"}), None)
            .unwrap_err()
            .status,
        400
    );
    let w = upd(
        &web.meta.id,
        &a,
        json!({"name": "w", "stateful": false}),
        Some("revision_number=1"),
    )
    .unwrap();
    assert_eq!(
        (w.meta.name.as_str(), w.stateful, w.meta.revision_number),
        ("w", false, 2)
    );
    assert_eq!(
        upd(&web.meta.id, &member("p2"), json!({"name": "x"}), None)
            .unwrap_err()
            .status,
        404
    );

    // In use by a port: no delete, no stateful switch.
    let n = net(&c, &a);
    let p = port(
        &c,
        &a,
        json!({"network_id": n, "security_groups": [web.meta.id]}),
    )
    .unwrap();
    assert_eq!(p.security_groups, vec![web.meta.id.clone()]);
    let del = |id: &str, who: &Auth| run(&c, |s| sg::delete(s, who, id, None));
    let e = del(&web.meta.id, &a).unwrap_err();
    assert_eq!((e.status, e.kind.as_str()), (409, "SecurityGroupInUse"));
    assert_eq!(
        upd(&web.meta.id, &a, json!({"stateful": true}), None)
            .unwrap_err()
            .kind,
        "SecurityGroupInUse"
    );
    upd(&web.meta.id, &a, json!({"stateful": false}), None).unwrap();
    let e = del(&d, &a).unwrap_err();
    assert_eq!(
        (e.status, e.message.as_str()),
        (
            409,
            "Insufficient rights for removing default security group."
        )
    );
    assert_eq!(del(&web.meta.id, &member("p2")).unwrap_err().status, 404);
    assert_eq!(
        del(&web.meta.id, &auth("p1", "reader")).unwrap_err().status,
        403
    );

    // Cascade: the group's rules, and other groups' rules naming it.
    let other = group(&c, &a, json!({"name": "other"})).unwrap();
    let via = rule(&c, &a, json!({"security_group_id": other.meta.id, "direction": "ingress", "remote_group_id": stateless.meta.id})).unwrap();
    let own = rule(&c, &a, json!({"security_group_id": stateless.meta.id, "direction": "ingress", "protocol": "tcp", "port_range_min": 22, "port_range_max": 22})).unwrap();
    del(&stateless.meta.id, &a).unwrap();
    let s = c.read();
    assert!(!s.security_groups.contains_key(&stateless.meta.id));
    assert!(!s.security_group_rules.contains_key(&via.meta.id));
    assert!(!s.security_group_rules.contains_key(&own.meta.id));
    assert_eq!(s.group_rules(&stateless.meta.id).count(), 0);
    assert_eq!(s.group_rules(&other.meta.id).count(), 2);
    drop(s);
    // Admins may remove the default group (when no port uses it).
    del(&d, &admin).unwrap();
    assert!(sg::default_group(&c.read(), "p1").is_none());
}

#[test]
fn security_group_rules_validate_like_neutron() {
    let c = core();
    let a = member("p1");
    let g = group(&c, &a, json!({"name": "g"})).unwrap().meta.id;
    let foreign = group(&c, &member("p2"), json!({"name": "f"}))
        .unwrap()
        .meta
        .id;
    let r = |extra: Value| {
        let mut b = json!({"security_group_id": g, "direction": "ingress"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"direction": "ingress"}), 400, "BadRequest"),
        (json!({"security_group_id": g}), 400, "BadRequest"),
        (r(json!({"direction": "inbound"})), 400, "InvalidInput"),
        (
            r(json!({"ethertype": "IPv5"})),
            400,
            "SecurityGroupRuleInvalidEtherType",
        ),
        (
            r(json!({"protocol": "tcpp"})),
            400,
            "SecurityGroupRuleInvalidProtocol",
        ),
        (
            r(json!({"protocol": 256})),
            400,
            "SecurityGroupRuleInvalidProtocol",
        ),
        (
            r(json!({"protocol": "-1"})),
            400,
            "SecurityGroupRuleInvalidProtocol",
        ),
        (
            r(json!({"protocol": true})),
            400,
            "SecurityGroupRuleInvalidProtocol",
        ),
        (
            r(json!({"port_range_min": 22})),
            400,
            "SecurityGroupProtocolRequiredWithPorts",
        ),
        (
            r(json!({"protocol": "tcp", "port_range_min": 22})),
            400,
            "SecurityGroupInvalidPortRange",
        ),
        (
            r(json!({"protocol": "tcp", "port_range_max": 22})),
            400,
            "SecurityGroupInvalidPortRange",
        ),
        (
            r(json!({"protocol": "tcp", "port_range_min": 23, "port_range_max": 22})),
            400,
            "SecurityGroupInvalidPortRange",
        ),
        (
            r(json!({"protocol": "tcp", "port_range_min": 0, "port_range_max": 22})),
            400,
            "SecurityGroupInvalidPortValue",
        ),
        (
            r(json!({"protocol": "udp", "port_range_min": 1, "port_range_max": 65536})),
            400,
            "SecurityGroupInvalidPortValue",
        ),
        (
            r(json!({"protocol": "udp", "port_range_min": -1, "port_range_max": 5})),
            400,
            "SecurityGroupInvalidPortValue",
        ),
        (
            r(json!({"protocol": "udp", "port_range_min": "x", "port_range_max": 5})),
            400,
            "SecurityGroupInvalidPortValue",
        ),
        (
            r(json!({"protocol": "gre", "port_range_min": 1, "port_range_max": 5})),
            400,
            "SecurityGroupInvalidProtocolForPort",
        ),
        (
            r(json!({"protocol": "icmp", "port_range_min": 256})),
            400,
            "SecurityGroupInvalidIcmpValue",
        ),
        (
            r(json!({"protocol": "icmp", "port_range_min": 8, "port_range_max": 256})),
            400,
            "SecurityGroupInvalidIcmpValue",
        ),
        (
            r(json!({"protocol": "icmp", "port_range_max": 0})),
            400,
            "SecurityGroupMissingIcmpType",
        ),
        (
            r(json!({"protocol": "ipv6-icmp"})),
            400,
            "SecurityGroupEthertypeConflictWithProtocol",
        ),
        (
            r(json!({"protocol": "icmpv6", "ethertype": "IPv4"})),
            400,
            "SecurityGroupEthertypeConflictWithProtocol",
        ),
        (
            r(json!({"protocol": "58"})),
            400,
            "SecurityGroupEthertypeConflictWithProtocol",
        ),
        (
            r(json!({"remote_ip_prefix": "10.0.0.0/33"})),
            400,
            "InvalidCIDR",
        ),
        (r(json!({"remote_ip_prefix": "nope"})), 400, "InvalidCIDR"),
        (
            r(json!({"remote_ip_prefix": "2001:db8::/64"})),
            400,
            "SecurityGroupRuleParameterConflict",
        ),
        (
            r(json!({"remote_ip_prefix": "10.0.0.0/8", "ethertype": "IPv6"})),
            400,
            "SecurityGroupRuleParameterConflict",
        ),
        (
            r(json!({"remote_ip_prefix": "10.0.0.0/8", "remote_group_id": g})),
            400,
            "SecurityGroupRemoteGroupAndRemoteIpPrefix",
        ),
        (
            r(json!({"remote_group_id": foreign})),
            404,
            "SecurityGroupNotFound",
        ),
        (
            r(json!({"remote_group_id": "3b0c1bd6-1c42-4b4e-a6e2-4e4f6fe2c0c1"})),
            404,
            "SecurityGroupNotFound",
        ),
        (
            r(json!({"security_group_id": foreign})),
            404,
            "SecurityGroupNotFound",
        ),
        (
            r(json!({"security_group_id": "nope"})),
            404,
            "SecurityGroupNotFound",
        ),
        (r(json!({"colour": "red"})), 400, "BadRequest"),
        (
            r(json!({"remote_address_group_id": "x"})),
            400,
            "InvalidInput",
        ),
        (r(json!({"project_id": "p2"})), 403, "Forbidden"),
    ];
    for (body, status, kind) in cases {
        let e = rule(&c, &a, body.clone()).unwrap_err();
        assert_eq!((e.status, e.kind.as_str()), (status, kind), "{body}: {e}");
    }
    for bad in [
        json!({}),
        json!({"security_group_rule": []}),
        json!({"security_group_rules": {}}),
        json!({"security_group_rules": []}),
        json!({"security_group_rules": [5]}),
        json!({"security_group_rule": {}, "security_group_rules": []}),
        json!({"rule": {}}),
    ] {
        let e = run(&c, |s| sg::create_rules(s, &a, &bad)).unwrap_err();
        assert_eq!(e.status, 400, "{bad}: {e}");
    }
    assert_eq!(
        rule(&c, &auth("p1", "reader"), r(json!({})))
            .unwrap_err()
            .status,
        403
    );
    // Admins may add rules to any project's group; they are that project's.
    let x = rule(&c, &auth("p1", "admin"), r(json!({"security_group_id": foreign, "protocol": "tcp", "port_range_min": 80, "port_range_max": 80}))).unwrap();
    assert_eq!(x.meta.project_id, "p2");

    // What is accepted, and how it is stored.
    let ok = |extra: Value| rule(&c, &a, r(extra)).unwrap();
    let t = ok(
        json!({"protocol": "TCP", "port_range_min": "22", "port_range_max": 22, "remote_ip_prefix": "10.1.0.7/24", "description": "ssh"}),
    );
    assert_eq!(t.protocol.as_deref(), Some("tcp"));
    assert_eq!((t.port_range_min, t.port_range_max), (Some(22), Some(22)));
    assert_eq!(t.remote_ip_prefix.as_deref(), Some("10.1.0.0/24"));
    assert_eq!(t.ethertype, Ethertype::IPv4);
    assert_eq!(t.meta.description, "ssh");
    let h = ok(json!({"protocol": 17, "remote_ip_prefix": "192.168.0.1"}));
    assert_eq!(h.protocol.as_deref(), Some("17"));
    assert_eq!(h.remote_ip_prefix.as_deref(), Some("192.168.0.1/32"));
    let v6 = ok(
        json!({"ethertype": "ipv6", "protocol": "icmp", "port_range_min": 128, "remote_ip_prefix": "2001:db8::1/64"}),
    );
    assert_eq!(v6.protocol.as_deref(), Some("ipv6-icmp"));
    assert_eq!(v6.ethertype, Ethertype::IPv6);
    assert_eq!(v6.remote_ip_prefix.as_deref(), Some("2001:db8::/64"));
    let any = ok(json!({"protocol": "any", "remote_group_id": g}));
    assert!(any.protocol.is_none());
    let icmp = ok(json!({"protocol": "icmp", "port_range_min": 8, "port_range_max": 0}));
    assert_eq!(
        (icmp.port_range_min, icmp.port_range_max),
        (Some(8), Some(0))
    );
    let rendered = sg::render_rule(&c.read(), &t);
    for (k, v) in [
        ("normalized_cidr", json!("10.1.0.0/24")),
        ("remote_address_group_id", Value::Null),
        ("belongs_to_default_sg", json!(false)),
        ("tenant_id", json!("p1")),
        ("port_range_min", json!(22)),
        ("protocol", json!("tcp")),
        ("direction", json!("ingress")),
        ("ethertype", json!("IPv4")),
    ] {
        assert_eq!(rendered[k], v, "{k}");
    }

    // Only the description may change; other projects see nothing.
    let upd = |id: &str, who: &Auth, b: Value| {
        run(&c, |s| {
            sg::update_rule(s, who, Edit::new(id, &json!({ "security_group_rule": b })))
        })
    };
    assert_eq!(
        upd(&t.meta.id, &a, json!({"description": "x"}))
            .unwrap()
            .meta
            .revision_number,
        2
    );
    assert_eq!(
        upd(&t.meta.id, &a, json!({"protocol": "udp"}))
            .unwrap_err()
            .status,
        400
    );
    assert_eq!(
        upd(&t.meta.id, &member("p2"), json!({"description": "y"}))
            .unwrap_err()
            .status,
        404
    );
    assert_eq!(
        run(&c, |s| sg::delete_rule(s, &member("p2"), &t.meta.id, None))
            .unwrap_err()
            .status,
        404
    );
    run(&c, |s| sg::delete_rule(s, &a, &t.meta.id, None)).unwrap();
    assert_eq!(
        run(&c, |s| sg::delete_rule(s, &a, &t.meta.id, None))
            .unwrap_err()
            .kind,
        "SecurityGroupRuleNotFound"
    );
}

#[test]
fn security_group_rule_duplicates_bulk_and_quota() {
    let c = core();
    let a = member("p1");
    let g = group(&c, &a, json!({"name": "g"})).unwrap().meta.id;
    let base = |extra: Value| {
        let mut b = json!({"security_group_id": g, "direction": "ingress"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let ssh = rule(
        &c,
        &a,
        base(json!({"protocol": "tcp", "port_range_min": 22, "port_range_max": 22})),
    )
    .unwrap();
    for dup in [
        json!({"protocol": "6", "port_range_min": 22, "port_range_max": 22}),
        json!({"protocol": 6, "port_range_min": "22", "port_range_max": 22, "ethertype": "IPv4"}),
        json!({"protocol": "TCP", "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "0.0.0.0/0"}),
    ] {
        let e = rule(&c, &a, base(dup.clone())).unwrap_err();
        assert_eq!(
            (e.status, e.kind.as_str()),
            (409, "SecurityGroupRuleExists"),
            "{dup}"
        );
        assert!(
            e.message.ends_with(&format!("Rule id is {}.", ssh.meta.id)),
            "{e}"
        );
    }
    // The automatic egress rules count as existing rules too.
    assert_eq!(
        rule(
            &c,
            &a,
            base(json!({"direction": "egress", "ethertype": "IPv6"}))
        )
        .unwrap_err()
        .kind,
        "SecurityGroupRuleExists"
    );
    let net = rule(&c, &a, base(json!({"remote_ip_prefix": "10.0.0.0/24"}))).unwrap();
    let e = rule(&c, &a, base(json!({"remote_ip_prefix": "10.0.0.9/24"}))).unwrap_err();
    assert!(
        e.message.contains(&net.meta.id),
        "host bits do not make a rule new"
    );
    rule(
        &c,
        &a,
        base(json!({"ethertype": "IPv6", "protocol": "icmp"})),
    )
    .unwrap();
    assert_eq!(
        rule(&c, &a, base(json!({"ethertype": "IPv6", "protocol": "58"})))
            .unwrap_err()
            .kind,
        "SecurityGroupRuleExists"
    );
    // Same rule in another group is no duplicate.
    let g2 = group(&c, &a, json!({"name": "g2"})).unwrap().meta.id;
    rule(&c, &a, json!({"security_group_id": g2, "direction": "ingress", "protocol": "tcp", "port_range_min": 22, "port_range_max": 22})).unwrap();

    // Bulk: all or nothing.
    let n_before = c.read().security_group_rules.len();
    let port_rule =
        |p: u32| base(json!({"protocol": "udp", "port_range_min": p, "port_range_max": p}));
    let e = rules(
        &c,
        &a,
        vec![port_rule(1000), port_rule(1001), port_rule(1000)],
    )
    .unwrap_err();
    assert_eq!(
        (e.status, e.kind.as_str()),
        (409, "DuplicateSecurityGroupRuleInPost")
    );
    let e = rules(
        &c,
        &a,
        vec![
            port_rule(1000),
            base(json!({"protocol": "tcp", "port_range_min": 22, "port_range_max": 22})),
        ],
    )
    .unwrap_err();
    assert_eq!(e.kind, "SecurityGroupRuleExists");
    let e = rules(
        &c,
        &a,
        vec![port_rule(1000), base(json!({"protocol": "bogus"}))],
    )
    .unwrap_err();
    assert_eq!(e.status, 400);
    assert_eq!(c.read().security_group_rules.len(), n_before);
    let rev = c.read().revision;
    let made = rules(&c, &a, vec![port_rule(1000), port_rule(1001), json!({"security_group_id": g2, "direction": "egress", "protocol": "tcp", "port_range_min": 1, "port_range_max": 65535})]).unwrap();
    assert_eq!(made.len(), 3);
    assert_eq!(c.read().revision, rev + 1, "one commit");

    // Quota: the rule count of the project (default group's rules included).
    let used = quotas::used(&c.read(), "p1", Kind::SecurityGroupRule);
    set_quota(&c, "p1", json!({"security_group_rule": used + 2}));
    let e = rules(
        &c,
        &a,
        vec![port_rule(2000), port_rule(2001), port_rule(2002)],
    )
    .unwrap_err();
    assert_eq!((e.status, e.kind.as_str()), (409, "OverQuota"));
    rules(&c, &a, vec![port_rule(2000), port_rule(2001)]).unwrap();
    assert_eq!(rule(&c, &a, port_rule(2003)).unwrap_err().kind, "OverQuota");
    // A new group needs room for its two egress rules, as in Neutron.
    assert_eq!(
        group(&c, &a, json!({"name": "full"})).unwrap_err().kind,
        "OverQuota"
    );
    set_quota(
        &c,
        "p1",
        json!({"security_group_rule": -1, "security_group": 3}),
    );
    // default, g, g2: full.
    assert_eq!(
        group(&c, &a, json!({"name": "x"})).unwrap_err().kind,
        "OverQuota"
    );
}

#[test]
fn ten_thousand_rules_in_one_bulk_request() {
    let c = core();
    let a = member("p1");
    set_quota(&c, "p1", json!({"security_group_rule": -1}));
    let g = group(&c, &a, json!({"name": "big"})).unwrap().meta.id;
    let body = |from: u32, n: u32| -> Vec<Value> {
        (from..from + n)
            .map(|i| json!({"security_group_id": g, "direction": "ingress", "protocol": "tcp", "port_range_min": 1 + i % 60000, "port_range_max": 1 + i % 60000, "remote_ip_prefix": format!("10.{}.0.0/16", i / 60000)}))
            .collect()
    };
    // (How fast is the benchmarks' business: no wall clock here.)
    let made = rules(&c, &a, body(0, 10_000)).unwrap();
    assert_eq!(made.len(), 10_000);
    let made = rules(&c, &a, body(10_000, 10_000)).unwrap();
    assert_eq!(made.len(), 10_000);
    assert_eq!(c.read().group_rules(&g).count(), 20_002);
    // A duplicate at the end of a big batch: rejected, nothing stored.
    let mut b = body(20_000, 9_999);
    b.push(body(5, 1).remove(0));
    assert_eq!(
        rules(&c, &a, b).unwrap_err().kind,
        "SecurityGroupRuleExists"
    );
    assert_eq!(c.read().group_rules(&g).count(), 20_002);
}

#[test]
fn ports_take_only_their_projects_groups() {
    let c = core();
    let a = member("p1");
    let n = net(&c, &a);
    let mine = group(&c, &a, json!({"name": "mine"})).unwrap().meta.id;
    let theirs = group(&c, &member("p2"), json!({"name": "theirs"}))
        .unwrap()
        .meta
        .id;
    let missing = "3b0c1bd6-1c42-4b4e-a6e2-4e4f6fe2c0c1";
    for bad in [vec![theirs.clone()], vec![mine.clone(), missing.to_owned()]] {
        let e = port(&c, &a, json!({"network_id": n, "security_groups": bad})).unwrap_err();
        assert_eq!((e.status, e.kind.as_str()), (404, "SecurityGroupNotFound"));
    }
    // An admin's port for p1 still needs p1's groups.
    let e = port(
        &c,
        &auth("p2", "admin"),
        json!({"network_id": n, "project_id": "p1", "security_groups": [theirs]}),
    )
    .unwrap_err();
    assert_eq!(e.status, 404);
    assert_eq!(
        port(
            &c,
            &a,
            json!({"network_id": n, "port_security_enabled": false, "security_groups": [mine]})
        )
        .unwrap_err()
        .status,
        400
    );
    let p = port(
        &c,
        &a,
        json!({"network_id": n, "security_groups": [mine, mine]}),
    )
    .unwrap();
    assert_eq!(p.security_groups, vec![mine.clone()]);
    let upd = |b: Value| {
        run(&c, |s| {
            ports::update(s, &a, &p.meta.id, &json!({ "port": b }), None)
        })
    };
    assert_eq!(
        upd(json!({"security_groups": [theirs]}))
            .unwrap_err()
            .status,
        404
    );
    let d = sg::default_group(&c.read(), "p1").unwrap().meta.id.clone();
    assert_eq!(
        upd(json!({"security_groups": [d, mine]}))
            .unwrap()
            .security_groups,
        vec![d.clone(), mine.clone()]
    );
    assert!(upd(json!({"security_groups": []}))
        .unwrap()
        .security_groups
        .is_empty());
    // Network-owned ports (admin-made) get no default group.
    let dhcp = port(
        &c,
        &auth("p1", "admin"),
        json!({"network_id": n, "device_owner": "network:dhcp"}),
    )
    .unwrap();
    assert!(dhcp.security_groups.is_empty());
}

#[test]
fn deleting_a_project_takes_its_default_group_not_others() {
    let c = core();
    let a = member("p1");
    let admin = auth("p2", "admin");
    let boot = crate::identity::Bootstrap {
        admin_user: "admin".into(),
        admin_project: "admin".into(),
    };
    let g = group(&c, &a, json!({"name": "web"})).unwrap().meta.id;
    let d = sg::default_group(&c.read(), "p1").unwrap().meta.id.clone();
    let e = run(&c, |s| {
        crate::identity::delete_project(s, &admin, &boot, "p1")
    })
    .unwrap_err();
    assert_eq!(e.status, 409);
    assert!(e.message.contains("1 security groups"), "{e}");
    run(&c, |s| sg::delete(s, &a, &g, None)).unwrap();
    run(&c, |s| {
        crate::identity::delete_project(s, &admin, &boot, "p1")
    })
    .unwrap();
    let s = c.read();
    assert!(!s.security_groups.contains_key(&d));
    assert_eq!(s.group_rules(&d).count(), 0);
    assert!(s
        .security_group_rules
        .values()
        .all(|r| r.meta.project_id != "p1"));
}

// ------------------------------------------------------------ elastic IPs
//
// Bad inputs tried: a tenant creating an external network or a port on
// one; a router gateway on a network that is not external or unknown, with
// unknown keys or wrong types; floating IPs on a non-external network,
// with an address outside the pool or in use, beyond the quota, with DNS
// attributes, bound to another project's port, to a router-owned port, to
// a fixed IP the port lacks, to a port whose subnet has no router with a
// gateway, twice to one fixed IP, changing read-only attributes; clearing
// a gateway or removing an interface that a floating IP needs; QoS rates
// below 1 Mbit/s and above 1 Gbit/s, bad directions, two rules in one
// direction, deleting a policy in use.

/// The operator (its own project).
fn admin() -> Auth {
    auth("ops", "admin")
}

/// The operator's external network with pool 198.51.100.10-.20.
fn external(c: &Core) -> String {
    let a = admin();
    let n = run(c, |s| {
        networks::create(
            s,
            &a,
            &json!({"network": {"name": "internet", "router:external": true}}),
        )
    })
    .expect("external network")
    .meta
    .id;
    run(c, |s| {
        subnets::create(
            s,
            &a,
            &json!({"subnet": {"network_id": n, "cidr": "198.51.100.0/24", "ip_version": 4,
                "enable_dhcp": false,
                "allocation_pools": [{"start": "198.51.100.10", "end": "198.51.100.20"}]}}),
        )
    })
    .expect("pool subnet");
    n
}

/// A tenant VPC: router with a gateway on `ext` and one attached subnet;
/// returns (router, network, a VM port).
fn vpc(c: &Core, a: &Auth, ext: &str, cidr: &str) -> (String, String, crate::model::Port) {
    let n = net(c, a);
    let s = subnet(c, a, &n, cidr).expect("subnet").meta.id;
    let r = run(c, |st| {
        routers::create(
            st,
            a,
            &json!({"router": {"external_gateway_info": {"network_id": ext}}}),
        )
    })
    .expect("router")
    .meta
    .id;
    run(c, |st| {
        routers::add_interface(st, a, &r, &json!({"subnet_id": s}))
    })
    .expect("interface");
    let p = port(c, a, json!({"network_id": n})).expect("port");
    (r, n, p)
}

fn fip(c: &Core, a: &Auth, body: Value) -> Result<crate::model::FloatingIp, ApiError> {
    run(c, |s| {
        floating_ips::create(s, a, &json!({ "floatingip": body }))
    })
}

fn fip_update(
    c: &Core,
    a: &Auth,
    id: &str,
    body: Value,
) -> Result<crate::model::FloatingIp, ApiError> {
    run(c, |s| {
        floating_ips::update(s, a, Edit::new(id, &json!({ "floatingip": body })))
    })
}

#[test]
fn external_networks_are_the_operators() {
    let c = core();
    let a1 = member("p1");
    let e = run(&c, |s| {
        networks::create(s, &a1, &json!({"network": {"router:external": true}}))
    })
    .unwrap_err();
    assert_eq!(e.status, 403);
    let ext = external(&c);
    let s = c.read();
    assert!(s.networks[&ext].external);
    // Visible to every project, rendered as external.
    let n = networks::get(&s, &member("p2"), &ext).expect("visible");
    assert_eq!(
        networks::render(&s, &member("p2"), n)["router:external"],
        true
    );
    drop(s);
    // Tenants make no ports or subnets on it.
    assert_eq!(
        port(&c, &a1, json!({"network_id": ext}))
            .unwrap_err()
            .status,
        403
    );
    assert_eq!(
        subnet(&c, &a1, &ext, "10.9.0.0/24").unwrap_err().status,
        403
    );
    // Tenant subnets stay private; the external one need not be.
    let n = net(&c, &a1);
    assert_eq!(
        subnet(&c, &a1, &n, "198.51.101.0/24").unwrap_err().status,
        400
    );
}

#[test]
fn router_gateways() {
    let c = core();
    let a1 = member("p1");
    let ext = external(&c);
    let plain = net(&c, &a1);
    let r = run(&c, |s| routers::create(s, &a1, &json!({"router": {}})))
        .unwrap()
        .meta
        .id;
    let set = |body: Value| {
        run(&c, |s| {
            routers::update(
                s,
                &a1,
                Edit::new(&r, &json!({"router": {"external_gateway_info": body}})),
            )
        })
    };
    assert_eq!(set(json!({"network_id": plain})).unwrap_err().status, 400);
    assert_eq!(set(json!({"network_id": "nope"})).unwrap_err().status, 404);
    assert_eq!(
        set(json!({"network_id": ext, "colour": 1}))
            .unwrap_err()
            .status,
        400
    );
    assert_eq!(
        set(json!({"network_id": ext, "enable_snat": "yes"}))
            .unwrap_err()
            .status,
        400
    );
    assert_eq!(set(json!("x")).unwrap_err().status, 400);
    let g = set(json!({"network_id": ext}))
        .unwrap()
        .gateway
        .expect("gateway");
    assert!(g.enable_snat, "SNAT is on by default");
    let s = c.read();
    let gp = &s.ports[&g.port_id];
    assert_eq!(gp.device_owner, crate::model::OWNER_ROUTER_GATEWAY);
    assert_eq!(gp.fixed_ips[0].ip_address, "198.51.100.10");
    let rendered = routers::render(&s, &s.routers[&r]);
    assert_eq!(
        rendered["external_gateway_info"]["external_fixed_ips"][0]["ip_address"],
        "198.51.100.10"
    );
    drop(s);
    // SNAT off keeps the port (and its address).
    let g2 = set(json!({"network_id": ext, "enable_snat": false}))
        .unwrap()
        .gateway
        .unwrap();
    assert_eq!(
        (g2.port_id.as_str(), g2.enable_snat),
        (g.port_id.as_str(), false)
    );
    // Cleared: the port goes.
    assert!(set(Value::Null).unwrap().gateway.is_none());
    assert!(!c.read().ports.contains_key(&g.port_id));
    // A requested address outside the subnet or taken.
    assert_eq!(
        set(json!({"network_id": ext, "external_fixed_ips": [{"ip_address": "198.51.100.15"}]}))
            .unwrap()
            .gateway
            .map(|g| c.read().ports[&g.port_id].fixed_ips[0].ip_address.clone())
            .unwrap(),
        "198.51.100.15"
    );
    let r2 = run(&c, |s| routers::create(s, &a1, &json!({"router": {}})))
        .unwrap()
        .meta
        .id;
    let e = run(&c, |s| {
        routers::update(s, &a1, Edit::new(&r2, &json!({"router": {"external_gateway_info": {"network_id": ext, "external_fixed_ips": [{"ip_address": "198.51.100.15"}]}}})))
    })
    .unwrap_err();
    assert_eq!(e.status, 409);
    // Deleting the router releases its gateway port.
    let gp = c.read().routers[&r].gateway.clone().unwrap().port_id;
    run(&c, |s| routers::delete(s, &a1, &r, None)).unwrap();
    assert!(!c.read().ports.contains_key(&gp));
}

#[test]
fn floating_ips_allocate_bind_release() {
    let c = core();
    let (a1, a2) = (member("p1"), member("p2"));
    let ext = external(&c);
    let (r, n, p) = vpc(&c, &a1, &ext, "10.0.1.0/24");
    let (_, _, p2) = vpc(&c, &a2, &ext, "10.0.1.0/24");
    // Allocation: from the pool (the router gateway took .10), or asked for.
    let f = fip(&c, &a1, json!({"floating_network_id": ext})).unwrap();
    assert_eq!(f.floating_ip_address, "198.51.100.12");
    assert!(f.port_id.is_none());
    let asked = fip(
        &c,
        &a1,
        json!({"floating_network_id": ext, "floating_ip_address": "198.51.100.20"}),
    )
    .unwrap();
    assert_eq!(asked.floating_ip_address, "198.51.100.20");
    for (body, status) in [
        (
            json!({"floating_network_id": ext, "floating_ip_address": "198.51.100.20"}),
            409,
        ),
        (
            json!({"floating_network_id": ext, "floating_ip_address": "198.51.100.99"}),
            409,
        ),
        (
            json!({"floating_network_id": ext, "floating_ip_address": "10.0.0.1"}),
            409,
        ),
        (json!({"floating_network_id": n}), 400),
        (json!({"floating_network_id": "nope"}), 404),
        (json!({}), 400),
        (json!({"floating_network_id": ext, "dns_name": "www"}), 400),
        (json!({"floating_network_id": ext, "colour": "red"}), 400),
        (
            json!({"floating_network_id": ext, "port_id": p2.meta.id}),
            404,
        ),
        (
            json!({"floating_network_id": ext, "port_id": p.meta.id, "fixed_ip_address": "10.0.1.99"}),
            400,
        ),
    ] {
        assert_eq!(
            fip(&c, &a1, body.clone()).unwrap_err().status,
            status,
            "{body}"
        );
    }
    // Bind: the router on the way is recorded.
    let b = fip_update(&c, &a1, &f.meta.id, json!({"port_id": p.meta.id})).unwrap();
    assert_eq!(b.router_id.as_deref(), Some(r.as_str()));
    assert_eq!(b.fixed_ip_address, Some(p.fixed_ips[0].ip_address.clone()));
    // One floating IP per fixed IP; another project's port is not found.
    assert_eq!(
        fip_update(&c, &a1, &asked.meta.id, json!({"port_id": p.meta.id}))
            .unwrap_err()
            .status,
        409
    );
    assert_eq!(
        fip_update(&c, &a1, &asked.meta.id, json!({"port_id": p2.meta.id}))
            .unwrap_err()
            .status,
        404
    );
    assert_eq!(
        fip_update(
            &c,
            &a1,
            &asked.meta.id,
            json!({"floating_ip_address": "198.51.100.13"})
        )
        .unwrap_err()
        .status,
        400
    );
    // Another project sees none of it.
    assert_eq!(
        floating_ips::get(&c.read(), &a2, &f.meta.id)
            .unwrap_err()
            .status,
        404
    );
    // The interface and gateway the binding needs cannot go.
    let sid = p.fixed_ips[0].subnet_id.clone();
    let e = run(&c, |s| {
        routers::remove_interface(s, &a1, &r, &json!({"subnet_id": sid}))
    })
    .unwrap_err();
    assert_eq!(e.status, 409);
    let e = run(&c, |s| {
        routers::update(
            s,
            &a1,
            Edit::new(&r, &json!({"router": {"external_gateway_info": null}})),
        )
    })
    .unwrap_err();
    assert_eq!(e.status, 409);
    // Unbind, rebind, delete the port: the floating IP stays, unbound.
    let u = fip_update(&c, &a1, &f.meta.id, json!({"port_id": null})).unwrap();
    assert!(u.port_id.is_none() && u.router_id.is_none() && u.fixed_ip_address.is_none());
    fip_update(&c, &a1, &f.meta.id, json!({"port_id": p.meta.id})).unwrap();
    run(&c, |s| ports::delete(s, &a1, &p.meta.id, None)).unwrap();
    let kept = c.read().floating_ips[&f.meta.id].clone();
    assert!(kept.port_id.is_none());
    assert_eq!(kept.floating_ip_address, "198.51.100.12");
    // Rebind to another VM.
    let p3 = port(&c, &a1, json!({"network_id": n})).unwrap();
    fip_update(&c, &a1, &f.meta.id, json!({"port_id": p3.meta.id})).unwrap();
    // The holder port cannot be deleted on its own; releasing frees the address.
    let holder = kept.floating_port_id.clone();
    assert_eq!(
        run(&c, |s| ports::delete(s, &admin(), &holder, None))
            .unwrap_err()
            .status,
        409
    );
    run(&c, |s| floating_ips::delete(s, &a1, &f.meta.id, None)).unwrap();
    assert!(!c.read().ports.contains_key(&holder));
    let again = fip(
        &c,
        &a1,
        json!({"floating_network_id": ext, "floating_ip_address": "198.51.100.12"}),
    );
    assert!(again.is_ok(), "a released address is free again");
}

#[test]
fn floating_ip_needs_a_router_with_a_gateway() {
    let c = core();
    let a1 = member("p1");
    let ext = external(&c);
    let n = net(&c, &a1);
    let s = subnet(&c, &a1, &n, "10.0.5.0/24").unwrap().meta.id;
    let r = run(&c, |st| routers::create(st, &a1, &json!({"router": {}})))
        .unwrap()
        .meta
        .id;
    run(&c, |st| {
        routers::add_interface(st, &a1, &r, &json!({"subnet_id": s}))
    })
    .unwrap();
    let p = port(&c, &a1, json!({"network_id": n})).unwrap();
    let f = fip(&c, &a1, json!({"floating_network_id": ext})).unwrap();
    let e = fip_update(&c, &a1, &f.meta.id, json!({"port_id": p.meta.id})).unwrap_err();
    // Neutron's fault is a NotFound: 404, not 409, with its message.
    assert_eq!(
        (e.status, e.kind.as_str()),
        (404, "ExternalGatewayForFloatingIPNotFound")
    );
    assert_eq!(
        e.message,
        format!(
            "External network {ext} is not reachable from subnet {s}.  Therefore, cannot associate Port {} with a Floating IP.",
            p.meta.id
        )
    );
    assert!(c.read().floating_ips[&f.meta.id].port_id.is_none());
    // The same on create with port_id: 404 and nothing allocated.
    let before = c.read().floating_ips.len();
    let e = fip(
        &c,
        &a1,
        json!({"floating_network_id": ext, "port_id": p.meta.id}),
    )
    .unwrap_err();
    assert_eq!(
        (e.status, e.kind.as_str()),
        (404, "ExternalGatewayForFloatingIPNotFound")
    );
    assert_eq!(c.read().floating_ips.len(), before);
}

#[test]
fn floating_ip_quota() {
    let c = core();
    let a1 = member("p1");
    let ext = external(&c);
    run(&c, |s| {
        quotas::update(s, &admin(), "p1", &json!({"quota": {"floatingip": 2}}))
    })
    .unwrap();
    for _ in 0..2 {
        fip(&c, &a1, json!({"floating_network_id": ext})).unwrap();
    }
    let ports_before = c.read().ports.len();
    let e = fip(&c, &a1, json!({"floating_network_id": ext})).unwrap_err();
    assert_eq!(e.status, 409);
    assert!(e.message.contains("floatingip"), "{}", e.message);
    assert_eq!(c.read().ports.len(), ports_before, "no address was taken");
}

#[test]
fn qos_policies_and_bandwidth_rules() {
    let c = core();
    let (a1, a2) = (member("p1"), member("p2"));
    let p = run(&c, |s| {
        qos::create(s, &a1, &json!({"policy": {"name": "10M"}}))
    })
    .unwrap()
    .meta
    .id;
    let rule = |body: Value| {
        run(&c, |s| {
            qos::rule_create(s, &a1, &p, &json!({ "bandwidth_limit_rule": body }))
        })
    };
    for (body, status) in [
        (json!({"max_kbps": 999}), 400),
        (json!({"max_kbps": 1_000_001}), 400),
        (json!({"max_kbps": "fast"}), 400),
        (json!({}), 400),
        (json!({"max_kbps": 10_000, "direction": "sideways"}), 400),
        (json!({"max_kbps": 10_000, "max_burst_kbps": -1}), 400),
    ] {
        assert_eq!(rule(body.clone()).unwrap_err().status, status, "{body}");
    }
    let egress = rule(json!({"max_kbps": 10_000, "max_burst_kbps": 1_000})).unwrap();
    assert_eq!(egress["direction"], "egress");
    rule(json!({"max_kbps": 200_000, "direction": "ingress"})).unwrap();
    assert_eq!(rule(json!({"max_kbps": 5_000})).unwrap_err().status, 409);
    // Another project neither sees nor uses it (unless shared).
    assert_eq!(qos::get(&c.read(), &a2, &p).unwrap_err().status, 404);
    // In use by a floating IP: not deleted.
    let ext = external(&c);
    let f = fip(
        &c,
        &a1,
        json!({"floating_network_id": ext, "qos_policy_id": p}),
    )
    .unwrap();
    assert_eq!(f.qos_policy_id.as_deref(), Some(p.as_str()));
    assert_eq!(
        run(&c, |s| qos::delete(s, &a1, &p, None))
            .unwrap_err()
            .status,
        409
    );
    assert_eq!(
        fip(
            &c,
            &a2,
            json!({"floating_network_id": ext, "qos_policy_id": p})
        )
        .unwrap_err()
        .status,
        404
    );
    fip_update(&c, &a1, &f.meta.id, json!({"qos_policy_id": null})).unwrap();
    run(&c, |s| qos::delete(s, &a1, &p, None)).unwrap();
}
