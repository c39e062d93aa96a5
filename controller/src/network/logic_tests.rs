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

use super::*;
use crate::{
    auth::Auth,
    model::{Change, Project},
    state::Core,
};

fn core() -> Core {
    let c = Core::open(std::path::Path::new(":memory:")).expect("in-memory core");
    c.mutate(|_| {
        let p = |id: &str| {
            Change::Put(crate::model::Object::Project(Project {
                id: id.into(),
                name: id.into(),
                description: String::new(),
                domain_id: "default".into(),
                enabled: true,
            }))
        };
        Ok((vec![p("p1"), p("p2")], ()))
    })
    .expect("projects");
    c
}

fn auth(project: &str, role: &str) -> Auth {
    Auth {
        user_id: format!("u-{project}"),
        user_name: format!("u-{project}"),
        project_id: project.into(),
        project_name: project.into(),
        roles: vec![role.into()],
        expires_unix: u64::MAX,
    }
}

fn member(p: &str) -> Auth {
    auth(p, "member")
}

/// Runs a command; on error asserts nothing changed (same revision).
fn run<T>(
    c: &Core,
    f: impl FnOnce(&State) -> Result<(Vec<Change>, T), ApiError>,
) -> Result<T, ApiError> {
    let before = c.read().revision;
    let r = c.mutate(f);
    if r.is_err() {
        assert_eq!(
            c.read().revision,
            before,
            "a rejected command changed the state"
        );
    }
    r
}

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
            &s1.meta.id,
            &json!({"subnet": {"cidr": "10.9.0.0/24"}}),
            None
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
                &rid,
                &json!({"router": {"routes": [{"destination": "192.168.0.0/16", "nexthop": hop}]}}),
                None,
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
        routers::update(s, &a, &rid, &json!({"router": {"routes": []}}), None)
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
    assert_eq!(
        run(&c, |s| quotas::update(
            s,
            &a,
            "p1",
            &json!({"quota": {"network": 1}})
        ))
        .unwrap_err()
        .status,
        403
    );
    assert_eq!(
        run(&c, |s| quotas::update(
            s,
            &admin,
            "p1",
            &json!({"quota": {"network": -2}})
        ))
        .unwrap_err()
        .status,
        400
    );
    assert_eq!(
        run(&c, |s| quotas::update(
            s,
            &admin,
            "p1",
            &json!({"quota": {"colour": 1}})
        ))
        .unwrap_err()
        .status,
        400
    );
    assert_eq!(
        run(&c, |s| quotas::update(
            s,
            &admin,
            "nope",
            &json!({"quota": {"network": 1}})
        ))
        .unwrap_err()
        .status,
        404
    );
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
