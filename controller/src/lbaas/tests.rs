//! Octavia logic against a real (in-memory SQLite) core: every validation
//! rule with its status, and that a rejected request changes nothing (the
//! global revision does not move).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use strato_proto::lb::{CountersOf, StatsReport};

use super::{
    health::{aggregate, LbHealth, LbStats},
    *,
};
use crate::{
    auth::Auth,
    commit::Core,
    model::{Change, Kind, Object, ProvisioningStatus, Quota},
    network::{
        networks, ports, routers, subnets,
        testkit::{auth, core, member as member_of, refused, run},
    },
};

/// A project's VPC: networks n1 (10.0.1.0/24), n2 (10.0.2.0/24) joined by
/// a router, and n3 (10.0.3.0/24) on its own.
struct Fixture {
    c: Core,
    a: Auth,
    s1: String,
    s2: String,
    s3: String,
    n1: String,
    foreign_subnet: String,
}

fn network(c: &Core, a: &Auth, cidr: &str) -> (String, String) {
    let n = run(c, |s| {
        networks::create(s, a, &json!({"network": {"name": cidr}}))
    })
    .expect("network")
    .meta
    .id;
    let sn = run(c, |s| {
        subnets::create(
            s,
            a,
            &json!({"subnet": {"network_id": n, "cidr": cidr, "ip_version": 4}}),
        )
    })
    .expect("subnet")
    .meta
    .id;
    (n, sn)
}

fn fixture() -> Fixture {
    let c = core();
    let a = member_of("p1");
    let (n1, s1) = network(&c, &a, "10.0.1.0/24");
    let (_, s2) = network(&c, &a, "10.0.2.0/24");
    let (_, s3) = network(&c, &a, "10.0.3.0/24");
    let r = run(&c, |s| {
        routers::create(s, &a, &json!({"router": {"name": "r"}}))
    })
    .expect("router")
    .meta
    .id;
    for sn in [&s1, &s2] {
        run(&c, |s| {
            routers::add_interface(s, &a, &r, &json!({"subnet_id": sn}))
        })
        .expect("interface");
    }
    let (_, foreign_subnet) = network(&c, &member_of("p2"), "10.0.1.0/24");
    Fixture {
        c,
        a,
        s1,
        s2,
        s3,
        n1,
        foreign_subnet,
    }
}

impl Fixture {
    fn lb(&self, body: Value) -> Result<crate::model::LoadBalancer, ApiError> {
        run(&self.c, |s| {
            load_balancers::create(s, &self.a, &json!({ "loadbalancer": body }))
        })
    }
    fn listener(&self, body: Value) -> Result<crate::model::Listener, ApiError> {
        run(&self.c, |s| {
            listeners::create(s, &self.a, &json!({ "listener": body }))
        })
    }
    fn pool(&self, body: Value) -> Result<crate::model::Pool, ApiError> {
        run(&self.c, |s| {
            pools::create(s, &self.a, &json!({ "pool": body }))
        })
    }
    fn member(&self, pool: &str, body: Value) -> Result<crate::model::Member, ApiError> {
        run(&self.c, |s| {
            members::create(s, &self.a, pool, &json!({ "member": body }))
        })
    }
    fn monitor(&self, body: Value) -> Result<crate::model::HealthMonitor, ApiError> {
        run(&self.c, |s| {
            health_monitors::create(s, &self.a, &json!({ "healthmonitor": body }))
        })
    }
    /// A load balancer with a TCP:80 listener and its ROUND_ROBIN pool.
    fn stack(&self) -> (String, String, String) {
        let lb = self
            .lb(json!({"vip_subnet_id": self.s1}))
            .expect("lb")
            .meta
            .id;
        let l = self
            .listener(json!({"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": 80}))
            .expect("listener")
            .meta
            .id;
        let p = self
            .pool(json!({"listener_id": l, "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}))
            .expect("pool")
            .meta
            .id;
        (lb, l, p)
    }
}

#[test]
fn load_balancers_take_a_vip_port_through_the_port_logic() {
    let f = fixture();
    let lb = f
        .lb(json!({"vip_subnet_id": f.s1, "name": "web"}))
        .expect("lb");
    assert_eq!(lb.provisioning_status, ProvisioningStatus::PendingCreate);
    assert_eq!(lb.provider, "strato");
    assert_eq!(lb.vip_network_id, f.n1);
    {
        let s = f.c.read();
        let port = &s.ports[&lb.vip_port_id];
        assert_eq!(port.device_owner, OWNER_OCTAVIA);
        assert_eq!(port.device_id, format!("lb-{}", lb.meta.id));
        assert_eq!(port.meta.project_id, "p1");
        assert_eq!(port.fixed_ips[0].ip_address, lb.vip_address);
        assert!(lb.vip_address.starts_with("10.0.1."), "{}", lb.vip_address);
        let r = load_balancers::render(&s, &LbHealth::new(), &lb);
        assert_eq!(r["provisioning_status"], "PENDING_CREATE");
        assert_eq!(r["operating_status"], "ONLINE");
        assert_eq!(r["vip_subnet_id"], f.s1.as_str());
        assert!(r.get("tenant_id").is_none());
        // The VIP port cannot be deleted under the load balancer.
        refused(ports::delete(&s, &f.a, &lb.vip_port_id, None), 409, "VIP");
    }
    // A chosen address; taken; outside the subnet; a network only.
    let lb2 = f
        .lb(json!({"vip_subnet_id": f.s1, "vip_address": "10.0.1.50"}))
        .expect("lb with address");
    assert_eq!(lb2.vip_address, "10.0.1.50");
    refused(
        f.lb(json!({"vip_subnet_id": f.s1, "vip_address": "10.0.1.50"})),
        409,
        "already allocated",
    );
    refused(
        f.lb(json!({"vip_subnet_id": f.s1, "vip_address": "10.0.2.5"})),
        400,
        "not in subnet",
    );
    let lb3 = f.lb(json!({"vip_network_id": f.n1})).expect("by network");
    assert_eq!(lb3.vip_subnet_id, f.s1);
    // Bad requests.
    refused(f.lb(json!({})), 400, "VIP must contain one of");
    refused(
        f.lb(json!({"vip_subnet_id": f.s1, "colour": "red"})),
        400,
        "colour",
    );
    refused(
        f.lb(json!({"vip_subnet_id": f.s1, "provider": "amphora"})),
        400,
        "not enabled",
    );
    refused(
        f.lb(json!({"vip_subnet_id": f.s1, "flavor_id": "x"})),
        400,
        "flavor",
    );
    refused(
        f.lb(json!({"vip_subnet_id": f.s1, "admin_state_up": "maybe"})),
        400,
        "boolean",
    );
    refused(
        f.lb(json!({"vip_subnet_id": f.s1, "vip_address": "nope"})),
        400,
        "",
    );
    refused(
        f.lb(json!({"vip_subnet_id": f.foreign_subnet})),
        404,
        "could not be found",
    );
    refused(
        run(&f.c, |s| {
            load_balancers::create(
                s,
                &auth("p1", "reader"),
                &json!({"loadbalancer": {"vip_subnet_id": f.s1}}),
            )
        }),
        403,
        "reader",
    );
    // Another project sees none of it.
    let s = f.c.read();
    refused(
        load_balancer(&s, &member_of("p2"), &lb.meta.id),
        404,
        "not found",
    );
}

#[test]
fn a_user_vip_port_stays_and_own_vip_ports_go() {
    let f = fixture();
    let port = run(&f.c, |s| {
        ports::create(s, &f.a, &json!({"port": {"network_id": f.n1}}))
    })
    .expect("port");
    let lb = f
        .lb(json!({"vip_port_id": port.meta.id}))
        .expect("lb on a port");
    assert_eq!(lb.vip_address, port.fixed_ips[0].ip_address);
    refused(
        f.lb(json!({"vip_port_id": port.meta.id})),
        409,
        "already the VIP port",
    );
    run(&f.c, |s| {
        load_balancers::delete(s, &f.a, &lb.meta.id, false)
    })
    .expect("delete");
    assert!(
        f.c.read().ports.contains_key(&port.meta.id),
        "the user's port stays"
    );
    let own = f.lb(json!({"vip_subnet_id": f.s1})).expect("lb");
    run(&f.c, |s| {
        load_balancers::delete(s, &f.a, &own.meta.id, false)
    })
    .expect("delete");
    assert!(
        !f.c.read().ports.contains_key(&own.vip_port_id),
        "its own VIP port goes"
    );
}

#[test]
fn listeners_validate_like_octavia() {
    let f = fixture();
    let lb = f.lb(json!({"vip_subnet_id": f.s1})).expect("lb").meta.id;
    let l = f
        .listener(json!({"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": 80}))
        .expect("listener");
    assert_eq!(
        (
            l.timeout_client_data,
            l.timeout_member_connect,
            l.timeout_member_data,
            l.timeout_tcp_inspect
        ),
        (50_000, 5_000, 50_000, 0)
    );
    assert_eq!(l.connection_drain_timeout, 60_000);
    assert_eq!(l.connection_limit, -1);
    assert_eq!(
        f.c.read().load_balancers[&lb].provisioning_status,
        ProvisioningStatus::PendingCreate,
        "a PENDING_CREATE parent stays PENDING_CREATE"
    );
    refused(
        f.listener(json!({"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": 80})),
        409,
        "Another Listener on this Load Balancer is already using protocol TCP and protocol_port 80",
    );
    f.listener(json!({"loadbalancer_id": lb, "protocol": "UDP", "protocol_port": 80}))
        .expect("UDP on the same port");
    for (body, status, text) in [
        // HTTP shares TCP's ports: 409 as Octavia.
        (
            json!({"loadbalancer_id": lb, "protocol": "HTTP", "protocol_port": 80}),
            409,
            "already using protocol TCP and protocol_port 80",
        ),
        (
            json!({"loadbalancer_id": lb, "protocol": "TERMINATED_HTTPS", "protocol_port": 81}),
            400,
            "An SNI or default certificate container reference must be provided",
        ),
        (
            json!({"loadbalancer_id": lb, "protocol": "SCTP", "protocol_port": 81}),
            400,
            "Protocol SCTP is not supported",
        ),
        (
            json!({"loadbalancer_id": lb, "protocol": "BOGUS", "protocol_port": 81}),
            400,
            "should be one of",
        ),
        (
            json!({"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": 0}),
            400,
            "range",
        ),
        (
            json!({"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": 65536}),
            400,
            "range",
        ),
        (
            json!({"loadbalancer_id": lb, "protocol": "TCP"}),
            400,
            "protocol_port",
        ),
        (
            json!({"loadbalancer_id": lb, "protocol_port": 81}),
            400,
            "protocol",
        ),
        (
            json!({"protocol": "TCP", "protocol_port": 81}),
            400,
            "loadbalancer_id",
        ),
        (
            json!({"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": 81, "timeout_client_data": 86_400_001}),
            400,
            "range",
        ),
        (
            json!({"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": 81, "connection_drain_timeout": 3_600_001}),
            400,
            "range",
        ),
        (
            json!({"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": 81, "connection_limit": -2}),
            400,
            "range",
        ),
        (
            json!({"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": 81, "sni_container_refs": ["x"]}),
            400,
            "Certificate container references are not allowed on TCP protocol listeners",
        ),
        (
            json!({"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": 81, "colour": 1}),
            400,
            "colour",
        ),
        (
            json!({"loadbalancer_id": "nope", "protocol": "TCP", "protocol_port": 81}),
            404,
            "not found",
        ),
        (
            json!({"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": 81, "project_id": "p2"}),
            400,
            "project",
        ),
    ] {
        refused(f.listener(body.clone()), status, text);
    }
    // Another project's load balancer does not exist for p2.
    refused(
        run(&f.c, |s| {
            listeners::create(
                s,
                &member_of("p2"),
                &json!({"listener": {"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": 90}}),
            )
        }),
        404,
        "not found",
    );
    // Updates: mutable ones, immutable ones refused.
    let u = run(&f.c, |s| {
        listeners::update(s, &f.a, &l.meta.id, &json!({"listener": {"connection_drain_timeout": 0, "timeout_client_data": 1000, "name": "x"}}))
    })
    .expect("update");
    assert_eq!(
        (u.connection_drain_timeout, u.timeout_client_data),
        (0, 1000)
    );
    for k in ["protocol", "protocol_port", "loadbalancer_id"] {
        refused(
            run(&f.c, |s| {
                listeners::update(s, &f.a, &l.meta.id, &json!({"listener": {k: "UDP"}}))
            }),
            400,
            "read-only",
        );
    }
}

#[test]
fn pools_join_their_listener_in_one_commit() {
    let f = fixture();
    let (lb, l, p) = f.stack();
    {
        let s = f.c.read();
        assert_eq!(s.listeners[&l].default_pool_id.as_deref(), Some(p.as_str()));
        assert_eq!(s.pools[&p].listener_id.as_deref(), Some(l.as_str()));
        assert_eq!(s.pools[&p].loadbalancer_id, lb);
    }
    refused(
        f.pool(json!({"listener_id": l, "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"})),
        409,
        "already has default pool",
    );
    let udp = f
        .listener(json!({"loadbalancer_id": lb, "protocol": "UDP", "protocol_port": 53}))
        .expect("udp listener")
        .meta
        .id;
    refused(
        f.pool(json!({"listener_id": udp, "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"})),
        400,
        "The pool protocol 'TCP' is invalid while the listener protocol is 'UDP'",
    );
    let sp = f
        .pool(
            json!({"listener_id": udp, "protocol": "UDP", "lb_algorithm": "SOURCE_IP",
                     "session_persistence": {"type": "SOURCE_IP"}}),
        )
        .expect("udp pool");
    let persistence = sp.session_persistence.expect("persistence");
    assert_eq!(persistence.persistence_timeout, 360);
    for (body, status, text) in [
        (
            json!({"loadbalancer_id": lb, "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN", "session_persistence": {"type": "APP_COOKIE", "cookie_name": "c"}}),
            400,
            "not supported for TCP protocol pools",
        ),
        (
            json!({"loadbalancer_id": lb, "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN", "session_persistence": {"type": "HTTP_COOKIE"}}),
            400,
            "not supported for TCP protocol pools",
        ),
        (
            json!({"loadbalancer_id": lb, "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN", "session_persistence": {"type": "SOURCE_IP", "persistence_granularity": "255.0.255.0"}}),
            400,
            "netmask",
        ),
        (
            json!({"loadbalancer_id": lb, "protocol": "TCP", "lb_algorithm": "RANDOM"}),
            400,
            "should be one of",
        ),
        (
            json!({"loadbalancer_id": lb, "protocol": "TCP"}),
            400,
            "lb_algorithm",
        ),
        (
            json!({"loadbalancer_id": lb, "protocol": "PROXY", "lb_algorithm": "ROUND_ROBIN"}),
            400,
            "Protocol PROXY is not supported",
        ),
        (
            json!({"protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}),
            400,
            "loadbalancer_id or listener_id",
        ),
        (
            json!({"loadbalancer_id": "nope", "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}),
            404,
            "not found",
        ),
        (
            json!({"loadbalancer_id": lb, "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN", "tls_enabled": true}),
            400,
            "TLS",
        ),
    ] {
        refused(f.pool(body.clone()), status, text);
    }
    // A pool without a listener becomes a listener's default by update.
    let loose = f
        .pool(
            json!({"loadbalancer_id": lb, "protocol": "TCP", "lb_algorithm": "LEAST_CONNECTIONS"}),
        )
        .expect("loose pool")
        .meta
        .id;
    let l2 = f
        .listener(json!({"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": 443, "default_pool_id": loose}))
        .expect("listener with default pool")
        .meta
        .id;
    assert_eq!(
        f.c.read().pools[&loose].listener_id.as_deref(),
        Some(l2.as_str())
    );
    refused(
        run(&f.c, |s| {
            listeners::update(s, &f.a, &l2, &json!({"listener": {"default_pool_id": p}}))
        }),
        409,
        "already the default pool",
    );
    refused(
        run(&f.c, |s| {
            pools::update(s, &f.a, &p, &json!({"pool": {"protocol": "UDP"}}))
        }),
        400,
        "read-only",
    );
    let up = run(&f.c, |s| {
        pools::update(
            s,
            &f.a,
            &p,
            &json!({"pool": {"lb_algorithm": "SOURCE_IP", "session_persistence": null}}),
        )
    })
    .expect("pool update");
    assert_eq!(up.lb_algorithm, crate::model::LbAlgorithm::SourceIp);
    // Deleting a listener leaves its pool; deleting a pool frees its listener.
    run(&f.c, |s| listeners::delete(s, &f.a, &l2)).expect("delete listener");
    assert_eq!(f.c.read().pools[&loose].listener_id, None);
    run(&f.c, |s| pools::delete(s, &f.a, &p)).expect("delete pool");
    assert_eq!(f.c.read().listeners[&l].default_pool_id, None);
}

#[test]
fn members_must_be_routable_from_the_vip() {
    let f = fixture();
    let (_, _, p) = f.stack();
    let m = f
        .member(&p, json!({"address": "10.0.1.10", "protocol_port": 8080}))
        .expect("member in the VIP subnet (subnet_id omitted)");
    assert_eq!(m.subnet_id, f.s1);
    assert_eq!(m.weight, 1);
    f.member(
        &p,
        json!({"address": "10.0.2.10", "protocol_port": 8080, "subnet_id": f.s2, "weight": 256}),
    )
    .expect("member across the router");
    for (body, status, text) in [
        (
            json!({"address": "10.0.1.10", "protocol_port": 8080}),
            409,
            "already using ip 10.0.1.10 on protocol_port 8080",
        ),
        (
            json!({"address": "10.0.2.11", "protocol_port": 80}),
            400,
            "subnet_id is required",
        ),
        (
            json!({"address": "10.0.3.10", "protocol_port": 80, "subnet_id": f.s3}),
            409,
            "not routable from the VIP",
        ),
        (
            json!({"address": "10.0.1.10", "protocol_port": 80, "subnet_id": f.s2}),
            400,
            "not a host address",
        ),
        (
            json!({"address": "10.0.1.255", "protocol_port": 80}),
            400,
            "not a host address",
        ),
        (
            json!({"address": "10.0.1.10", "protocol_port": 80, "subnet_id": f.foreign_subnet}),
            404,
            "Subnet",
        ),
        (
            json!({"address": "10.0.1.11", "protocol_port": 80, "weight": 257}),
            400,
            "range",
        ),
        (
            json!({"address": "10.0.1.11", "protocol_port": 80, "weight": -1}),
            400,
            "range",
        ),
        (
            json!({"address": "10.0.1.11", "protocol_port": 0}),
            400,
            "range",
        ),
        (json!({"address": "10.0.1.11"}), 400, "protocol_port"),
        (json!({"protocol_port": 80}), 400, "address"),
        (json!({"address": "fe80::1", "protocol_port": 80}), 400, ""),
        (
            json!({"address": "10.0.1.11", "protocol_port": 80, "monitor_port": 70000}),
            400,
            "range",
        ),
        (
            json!({"address": "10.0.1.11", "protocol_port": 80, "colour": 1}),
            400,
            "colour",
        ),
    ] {
        refused(f.member(&p, body.clone()), status, text);
    }
    let u = run(&f.c, |s| {
        members::update(
            s,
            &f.a,
            &p,
            &m.meta.id,
            &json!({"member": {"weight": 0, "backup": true}}),
        )
    })
    .expect("member update");
    assert_eq!((u.weight, u.backup), (0, true));
    for k in ["address", "protocol_port", "subnet_id"] {
        refused(
            run(&f.c, |s| {
                members::update(s, &f.a, &p, &m.meta.id, &json!({"member": {k: "1"}}))
            }),
            400,
            "read-only",
        );
    }
    // Another project: the pool is not found.
    refused(
        run(&f.c, |s| {
            members::create(
                s,
                &member_of("p2"),
                &p,
                &json!({"member": {"address": "10.0.1.12", "protocol_port": 80}}),
            )
        }),
        404,
        "not found",
    );
}

#[test]
fn batch_member_update_replaces_the_list() {
    let f = fixture();
    let (_, _, p) = f.stack();
    let keep = f
        .member(&p, json!({"address": "10.0.1.10", "protocol_port": 80}))
        .expect("m1")
        .meta
        .id;
    let gone = f
        .member(&p, json!({"address": "10.0.1.11", "protocol_port": 80}))
        .expect("m2")
        .meta
        .id;
    let body = json!({"members": [
        {"address": "10.0.1.10", "protocol_port": 80, "weight": 5},
        {"address": "10.0.2.20", "protocol_port": 80, "subnet_id": f.s2},
    ]});
    run(&f.c, |s| members::batch(s, &f.a, &p, &body, false)).expect("batch");
    {
        let s = f.c.read();
        let ms: Vec<_> = pool_members(&s, &p).collect();
        assert_eq!(ms.len(), 2);
        assert_eq!(
            s.members[&keep].weight, 5,
            "matched by address and port, updated"
        );
        assert!(!s.members.contains_key(&gone), "unlisted member deleted");
        assert!(ms.iter().any(|m| m.address == "10.0.2.20"));
    }
    for (body, status, text) in [
        (
            json!({"members": [{"address": "10.0.1.30", "protocol_port": 80}, {"address": "10.0.1.30", "protocol_port": 80}]}),
            400,
            "twice",
        ),
        (
            json!({"members": [{"address": "10.0.3.30", "protocol_port": 80, "subnet_id": f.s3}]}),
            409,
            "not routable",
        ),
        (
            json!({"members": [{"address": "10.0.1.10", "protocol_port": 80, "subnet_id": f.s2}]}),
            400,
            "read-only",
        ),
        (json!({"member": []}), 400, "'members'"),
        (json!({"members": [5]}), 400, "not a JSON object"),
    ] {
        refused(
            run(&f.c, |s| members::batch(s, &f.a, &p, &body, false)),
            status,
            text,
        );
    }
    // additive_only keeps the unlisted.
    let body = json!({"members": [{"address": "10.0.1.40", "protocol_port": 80}]});
    run(&f.c, |s| members::batch(s, &f.a, &p, &body, true)).expect("additive");
    assert_eq!(pool_members(&f.c.read(), &p).count(), 3);
    // Quota counts what the batch removes.
    set_quota(&f.c, "p1", |q| q.member = 3);
    let body = json!({"members": [{"address": "10.0.1.50", "protocol_port": 80}]});
    run(&f.c, |s| members::batch(s, &f.a, &p, &body, false)).expect("3 removed, 1 added");
    let body = json!({"members": [{"address": "10.0.1.51", "protocol_port": 80}, {"address": "10.0.1.52", "protocol_port": 80}, {"address": "10.0.1.53", "protocol_port": 80}, {"address": "10.0.1.54", "protocol_port": 80}]});
    refused(
        run(&f.c, |s| members::batch(s, &f.a, &p, &body, false)),
        403,
        "Quota has been met for resources: Member",
    );
}

#[test]
fn health_monitors_validate_like_octavia() {
    let f = fixture();
    let (lb, _, p) = f.stack();
    let hm = f
        .monitor(
            json!({"pool_id": p, "type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 2,
                        "url_path": "/healthz", "expected_codes": "200-204"}),
        )
        .expect("monitor");
    assert_eq!(hm.max_retries_down, 3);
    assert_eq!(hm.http_method, "GET");
    refused(
        f.monitor(json!({"pool_id": p, "type": "TCP", "delay": 5, "timeout": 3, "max_retries": 2})),
        409,
        "already has a health monitor",
    );
    let p2 = f
        .pool(json!({"loadbalancer_id": lb, "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}))
        .expect("pool 2")
        .meta
        .id;
    let base = |extra: Value| {
        let mut b =
            json!({"pool_id": p2, "type": "TCP", "delay": 5, "timeout": 3, "max_retries": 3});
        for (k, v) in extra.as_object().expect("object") {
            b[k] = v.clone();
        }
        b
    };
    for (extra, status, text) in [
        (json!({"type": "UDP-CONNECT"}), 400, "pool protocol is TCP"),
        (
            json!({"type": "HTTPS"}),
            400,
            "only a PING, TCP, HTTP health monitor",
        ),
        (json!({"type": "TLS-HELLO"}), 400, "not supported yet"),
        (json!({"type": "BOGUS"}), 400, "should be one of"),
        (
            json!({"timeout": 6}),
            400,
            "should be larger than the request timeout",
        ),
        (json!({"delay": 0}), 400, "range"),
        (json!({"max_retries": 11}), 400, "range"),
        (json!({"max_retries_down": 0}), 400, "range"),
        (
            json!({"http_method": "GET"}),
            400,
            "for HTTP and HTTPS health monitors",
        ),
        (
            json!({"type": "HTTP", "http_method": "FETCH"}),
            400,
            "should be one of",
        ),
        (
            json!({"type": "HTTP", "url_path": "healthz"}),
            400,
            "starting with '/'",
        ),
        (
            json!({"type": "HTTP", "expected_codes": "99"}),
            400,
            "status code",
        ),
        (
            json!({"type": "HTTP", "expected_codes": "200,abc"}),
            400,
            "status code",
        ),
        (
            json!({"type": "HTTP", "expected_codes": "204-200"}),
            400,
            "status code",
        ),
        (
            json!({"type": "HTTP", "expected_codes": "600"}),
            400,
            "status code",
        ),
        (json!({"pool_id": "nope"}), 404, "not found"),
    ] {
        refused(f.monitor(base(extra.clone())), status, text);
    }
    let mut no_delay = base(json!({}));
    no_delay.as_object_mut().expect("object").remove("delay");
    refused(f.monitor(no_delay), 400, "delay");
    f.monitor(base(json!({"type": "HTTP", "expected_codes": "200,202"})))
        .expect("a list of codes");
    // UDP pools: UDP-CONNECT yes, PING no.
    let ul = f
        .listener(json!({"loadbalancer_id": lb, "protocol": "UDP", "protocol_port": 53}))
        .expect("udp listener")
        .meta
        .id;
    let up = f
        .pool(json!({"listener_id": ul, "protocol": "UDP", "lb_algorithm": "ROUND_ROBIN"}))
        .expect("udp pool")
        .meta
        .id;
    refused(
        f.monitor(
            json!({"pool_id": up, "type": "PING", "delay": 5, "timeout": 3, "max_retries": 3}),
        ),
        400,
        "pool protocol is UDP",
    );
    f.monitor(
        json!({"pool_id": up, "type": "UDP-CONNECT", "delay": 5, "timeout": 3, "max_retries": 3}),
    )
    .expect("udp monitor");
    // Updates.
    refused(
        run(&f.c, |s| {
            health_monitors::update(
                s,
                &f.a,
                &hm.meta.id,
                &json!({"healthmonitor": {"type": "TCP"}}),
            )
        }),
        400,
        "read-only",
    );
    refused(
        run(&f.c, |s| {
            health_monitors::update(
                s,
                &f.a,
                &hm.meta.id,
                &json!({"healthmonitor": {"timeout": 10}}),
            )
        }),
        400,
        "larger",
    );
    let u = run(&f.c, |s| {
        health_monitors::update(
            s,
            &f.a,
            &hm.meta.id,
            &json!({"healthmonitor": {"delay": 10, "timeout": 10, "url_path": "/x"}}),
        )
    })
    .expect("monitor update");
    assert_eq!((u.delay, u.timeout, u.url_path.as_str()), (10, 10, "/x"));
}

fn set_quota(c: &Core, project: &str, f: impl FnOnce(&mut Quota)) {
    c.mutate(|s| {
        let mut q = s.quota(project);
        f(&mut q);
        Ok((vec![Change::Put(Object::Quota(q))], ()))
    })
    .expect("quota");
}

#[test]
fn quotas_refuse_with_403_as_octavia() {
    let f = fixture();
    set_quota(&f.c, "p1", |q| q.loadbalancer = 1);
    let lb = f.lb(json!({"vip_subnet_id": f.s1})).expect("first").meta.id;
    refused(
        f.lb(json!({"vip_subnet_id": f.s1})),
        403,
        "Quota has been met for resources: Load Balancer",
    );
    set_quota(&f.c, "p1", |q| q.listener = 0);
    refused(
        f.listener(json!({"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": 80})),
        403,
        "Quota has been met for resources: Listener",
    );
    set_quota(&f.c, "p1", |q| q.pool = 0);
    refused(
        f.pool(json!({"loadbalancer_id": lb, "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"})),
        403,
        "Pool",
    );
    // The Octavia quota API: admins set, members read.
    let admin = auth("p1", "admin");
    let v = run(&f.c, |s| {
        quotas::update(
            s,
            &admin,
            "p1",
            &json!({"quota": {"load_balancer": 5, "healthmonitor": 7}}),
        )
    })
    .expect("set");
    assert_eq!(v["quota"]["loadbalancer"], 5);
    assert_eq!(v["quota"]["health_monitor"], 7);
    refused(
        run(&f.c, |s| {
            quotas::update(s, &f.a, "p1", &json!({"quota": {"pool": 5}}))
        }),
        403,
        "administrator",
    );
    refused(
        run(&f.c, |s| {
            quotas::update(s, &admin, "p1", &json!({"quota": {"pool": -2}}))
        }),
        400,
        "range",
    );
    assert_eq!(
        quotas::show(&f.c.read(), &f.a, "p1").expect("show")["quota"]["load_balancer"],
        5
    );
    refused(quotas::show(&f.c.read(), &f.a, "p2"), 403, "administrator");
    run(&f.c, |s| quotas::reset(s, &admin, "p1")).expect("reset");
    assert_eq!(f.c.read().quota("p1").loadbalancer, 10);
}

#[test]
fn cascade_delete_takes_everything_and_the_vip_port() {
    let f = fixture();
    let (lb, _, p) = f.stack();
    f.member(&p, json!({"address": "10.0.1.10", "protocol_port": 80}))
        .expect("member");
    f.monitor(json!({"pool_id": p, "type": "TCP", "delay": 5, "timeout": 3, "max_retries": 3}))
        .expect("monitor");
    let vip = f.c.read().load_balancers[&lb].vip_port_id.clone();
    refused(
        run(&f.c, |s| load_balancers::delete(s, &f.a, &lb, false)),
        409,
        "it has children",
    );
    refused(
        run(&f.c, |s| {
            load_balancers::delete(s, &member_of("p2"), &lb, true)
        }),
        404,
        "not found",
    );
    run(&f.c, |s| load_balancers::delete(s, &f.a, &lb, true)).expect("cascade");
    let s = f.c.read();
    assert!(s.load_balancers.is_empty() && s.listeners.is_empty() && s.pools.is_empty());
    assert!(s.members.is_empty() && s.health_monitors.is_empty());
    assert!(!s.ports.contains_key(&vip), "VIP port removed");
}

#[test]
fn pool_delete_takes_members_and_monitor() {
    let f = fixture();
    let (_, _, p) = f.stack();
    f.member(&p, json!({"address": "10.0.1.10", "protocol_port": 80}))
        .expect("member");
    f.monitor(json!({"pool_id": p, "type": "PING", "delay": 5, "timeout": 3, "max_retries": 3}))
        .expect("monitor");
    run(&f.c, |s| pools::delete(s, &f.a, &p)).expect("delete pool");
    let s = f.c.read();
    assert!(s.members.is_empty() && s.health_monitors.is_empty());
}

#[test]
fn provisioning_status_pending_and_mark_active() {
    let f = fixture();
    let (lb, l, p) = f.stack();
    let ids = pending_ids(&f.c.read());
    assert_eq!(ids.len(), 3, "{ids:?}");
    let n =
        f.c.mutate(|s| {
            let c = mark_active(s, ids.iter().map(String::as_str));
            let n = c.len();
            Ok((c, n))
        })
        .expect("mark active");
    assert_eq!(n, 3);
    assert!(pending_ids(&f.c.read()).is_empty());
    assert!(mark_active(&f.c.read(), [lb.as_str(), "unknown"]).is_empty());
    // A child changes: the load balancer goes PENDING_UPDATE.
    let m = f
        .member(&p, json!({"address": "10.0.1.10", "protocol_port": 80}))
        .expect("member");
    {
        let s = f.c.read();
        assert_eq!(
            s.load_balancers[&lb].provisioning_status,
            ProvisioningStatus::PendingUpdate
        );
        assert_eq!(
            s.members[&m.meta.id].provisioning_status,
            ProvisioningStatus::PendingCreate
        );
        assert_eq!(
            s.listeners[&l].provisioning_status,
            ProvisioningStatus::Active
        );
        // Octavia's rule, off until the dataplane acknowledges revisions.
        const { assert!(!STRICT_PENDING) };
        refused(
            check_mutable_with(true, &s.load_balancers[&lb]),
            409,
            "Invalid state PENDING_UPDATE of loadbalancer resource",
        );
        assert!(check_mutable(&s.load_balancers[&lb]).is_ok());
    }
    let u = run(&f.c, |s| {
        listeners::update(s, &f.a, &l, &json!({"listener": {"name": "n"}}))
    })
    .expect("update");
    assert_eq!(u.provisioning_status, ProvisioningStatus::PendingUpdate);
}

#[test]
fn operating_status_from_health_reports() {
    let f = fixture();
    let (lb, l, p) = f.stack();
    let m1 = f
        .member(&p, json!({"address": "10.0.1.10", "protocol_port": 80}))
        .expect("m1")
        .meta
        .id;
    let m2 = f
        .member(&p, json!({"address": "10.0.1.11", "protocol_port": 80}))
        .expect("m2")
        .meta
        .id;
    let h = LbHealth::new();
    let status = |h: &LbHealth| {
        let s = f.c.read();
        let ms = |id: &str| {
            let m = &s.members[id];
            h.member_status(m, members::monitored(pool_monitor(&s, &m.pool_id)))
        };
        (
            ms(&m1),
            ms(&m2),
            h.pool_status(&s, &s.pools[&p]),
            h.listener_status(&s, &s.listeners[&l]),
            h.lb_status(&s, &s.load_balancers[&lb]),
        )
    };
    // No monitor: NO_MONITOR, all ONLINE above.
    assert_eq!(
        status(&h),
        ("NO_MONITOR", "NO_MONITOR", "ONLINE", "ONLINE", "ONLINE")
    );
    let hm = f
        .monitor(json!({"pool_id": p, "type": "TCP", "delay": 5, "timeout": 3, "max_retries": 3}))
        .expect("monitor")
        .meta
        .id;
    // Monitored, no report yet: OFFLINE (not counted).
    assert_eq!(
        status(&h),
        ("OFFLINE", "OFFLINE", "ONLINE", "ONLINE", "ONLINE")
    );
    let t0 = Instant::now();
    h.report("h1", &m1, true, t0);
    h.report("h1", &m2, true, t0);
    assert_eq!(
        status(&h),
        ("ONLINE", "ONLINE", "ONLINE", "ONLINE", "ONLINE")
    );
    // The latest report from any host wins.
    h.report("h2", &m2, false, t0 + Duration::from_millis(1));
    assert_eq!(
        status(&h),
        ("ONLINE", "ERROR", "DEGRADED", "DEGRADED", "DEGRADED")
    );
    h.report("h1", &m1, false, t0 + Duration::from_millis(2));
    assert_eq!(status(&h), ("ERROR", "ERROR", "ERROR", "ERROR", "ERROR"));
    h.report("h1", &m2, true, t0 + Duration::from_millis(3));
    assert_eq!(status(&h).1, "ONLINE");
    // Weight 0: DRAINING (not counted); admin down: OFFLINE.
    run(&f.c, |s| {
        members::update(s, &f.a, &p, &m2, &json!({"member": {"weight": 0}}))
    })
    .expect("drain");
    assert_eq!(status(&h), ("ERROR", "DRAINING", "ERROR", "ERROR", "ERROR"));
    run(&f.c, |s| {
        members::update(
            s,
            &f.a,
            &p,
            &m1,
            &json!({"member": {"admin_state_up": false}}),
        )
    })
    .expect("down");
    assert_eq!(
        status(&h),
        ("OFFLINE", "DRAINING", "ONLINE", "ONLINE", "ONLINE")
    );
    // Monitor admin down: NO_MONITOR.
    run(&f.c, |s| {
        members::update(
            s,
            &f.a,
            &p,
            &m1,
            &json!({"member": {"admin_state_up": true}}),
        )
    })
    .expect("up");
    run(&f.c, |s| {
        health_monitors::update(
            s,
            &f.a,
            &hm,
            &json!({"healthmonitor": {"admin_state_up": false}}),
        )
    })
    .expect("hm down");
    assert_eq!(status(&h).0, "NO_MONITOR");
    // Admin down parents: OFFLINE.
    run(&f.c, |s| {
        pools::update(s, &f.a, &p, &json!({"pool": {"admin_state_up": false}}))
    })
    .expect("pool down");
    assert_eq!(status(&h).2, "OFFLINE");
    run(&f.c, |s| {
        load_balancers::update(
            s,
            &f.a,
            &lb,
            &json!({"loadbalancer": {"admin_state_up": false}}),
        )
    })
    .expect("lb down");
    assert_eq!(status(&h).4, "OFFLINE");
    // The status tree carries the same.
    let s = f.c.read();
    let tree = load_balancers::status_tree(&s, &h, &s.load_balancers[&lb]);
    let t = &tree["statuses"]["loadbalancer"];
    assert_eq!(t["operating_status"], "OFFLINE");
    assert_eq!(t["listeners"][0]["id"], l.as_str());
    assert_eq!(t["listeners"][0]["pools"][0]["operating_status"], "OFFLINE");
    assert_eq!(
        t["listeners"][0]["pools"][0]["health_monitor"]["operating_status"],
        "OFFLINE"
    );
    assert_eq!(
        t["listeners"][0]["pools"][0]["members"]
            .as_array()
            .expect("members")
            .len(),
        2
    );
    // Deleted members are forgotten.
    h.retain(|id| id != m1);
    assert_eq!(h.latest(&m1), None);
    assert_eq!(aggregate([]), "ONLINE");
}

#[test]
fn stats_are_summed_over_hosts() {
    let f = fixture();
    let (lb, l, _) = f.stack();
    let l2 = f
        .listener(json!({"loadbalancer_id": lb, "protocol": "UDP", "protocol_port": 53}))
        .expect("udp")
        .meta
        .id;
    let st = LbStats::new();
    let entry = |id: &str, n: u64| CountersOf {
        id: id.into(),
        bytes_in: n,
        bytes_out: 2 * n,
        active_connections: 1,
        total_connections: n,
        request_errors: 0,
    };
    st.report(
        "h1",
        StatsReport {
            listeners: vec![entry(&l, 100), entry(&l2, 5)],
            members: vec![],
            instances: vec![],
        },
    );
    st.report(
        "h2",
        StatsReport {
            listeners: vec![entry(&l, 10)],
            members: vec![],
            instances: vec![],
        },
    );
    let c = st.listener(&l);
    assert_eq!(
        (
            c.bytes_in,
            c.bytes_out,
            c.active_connections,
            c.total_connections
        ),
        (110, 220, 2, 110)
    );
    // A host's new report replaces its old one.
    st.report(
        "h2",
        StatsReport {
            listeners: vec![entry(&l, 1)],
            members: vec![],
            instances: vec![],
        },
    );
    assert_eq!(st.listener(&l).bytes_in, 101);
    let total = st.load_balancer(&f.c.read(), &lb);
    assert_eq!((total.bytes_in, total.active_connections), (106, 3));
    assert_eq!(st.listener("unknown").bytes_in, 0);
    // Reports parse strictly.
    assert!(
        serde_json::from_value::<StatsReport>(json!({"listeners": [{"id": "x", "bytes": 1}]}))
            .is_err()
    );
    assert!(serde_json::from_value::<StatsReport>(
        json!({"listeners": [{"id": "x", "bytes_in": 1}]})
    )
    .is_ok());
}

#[test]
fn kinds_are_stored_and_deleted_like_the_others() {
    let f = fixture();
    let (lb, l, p) = f.stack();
    let s = f.c.read();
    for (k, id) in [
        (Kind::LoadBalancer, &lb),
        (Kind::Listener, &l),
        (Kind::Pool, &p),
    ] {
        let mut copy = s.clone();
        copy.apply(&Change::Delete(k, id.clone()));
        assert_ne!(
            (
                copy.load_balancers.len(),
                copy.listeners.len(),
                copy.pools.len()
            ),
            (s.load_balancers.len(), s.listeners.len(), s.pools.len())
        );
    }
}

#[test]
fn a_member_subnet_stays_while_members_are_in_it() {
    let f = fixture();
    let (_, _, p) = f.stack();
    // A second subnet on the VIP's network: routable, no port in it.
    let s5 = run(&f.c, |s| {
        subnets::create(
            s,
            &f.a,
            &json!({"subnet": {"network_id": f.n1, "cidr": "10.0.5.0/24", "ip_version": 4}}),
        )
    })
    .expect("subnet")
    .meta
    .id;
    let m = f
        .member(
            &p,
            json!({"address": "10.0.5.9", "protocol_port": 80, "subnet_id": s5}),
        )
        .expect("member on the VIP network")
        .meta
        .id;
    refused(
        run(&f.c, |s| subnets::delete(s, &f.a, &s5, None)),
        409,
        "load balancer member",
    );
    run(&f.c, |s| members::delete(s, &f.a, &p, &m)).expect("member deleted");
    run(&f.c, |s| subnets::delete(s, &f.a, &s5, None)).expect("then the subnet goes");
}

/// A member checked only from a host that fails: its report is dropped,
/// it is stored down (no new connections: `member_state` "down") and shows
/// ERROR; a report from a live host brings it back. A member also checked
/// from a live host keeps that host's word.
#[test]
fn members_checked_only_by_a_failed_host_go_down() {
    let f = fixture();
    let (_lb, _l, p) = f.stack();
    f.monitor(json!({"pool_id": p, "type": "TCP", "delay": 5, "timeout": 3, "max_retries": 3}))
        .expect("monitor");
    let m1 = f
        .member(&p, json!({"address": "10.0.1.10", "protocol_port": 80}))
        .expect("m1")
        .meta
        .id;
    let m2 = f
        .member(&p, json!({"address": "10.0.1.11", "protocol_port": 80}))
        .expect("m2")
        .meta
        .id;
    let h = LbHealth::new();
    let t0 = Instant::now();
    h.report("h1", &m1, true, t0);
    h.report("h1", &m2, true, t0);
    h.report("h2", &m2, true, t0);
    // Nothing is down: nothing changes.
    assert!(h.forget_hosts(|_| false).is_empty());
    // h1 fails: m1 is left unchecked, m2 still has h2's report.
    let unchecked = h.forget_hosts(|host| host == "h1");
    assert_eq!(unchecked, vec![m1.clone()]);
    run(&f.c, |s| Ok((health::unchecked_down(s, &unchecked), ()))).expect("store");
    let s = f.c.read();
    let (a, b) = (&s.members[&m1], &s.members[&m2]);
    assert!(a.health_down && !b.health_down);
    assert_eq!(h.member_status(a, true), "ERROR");
    assert_eq!(h.member_status(b, true), "ONLINE");
    assert_eq!(super::member_state(a, true), "down");
    // Asked again: already down, no change.
    assert!(health::unchecked_down(&s, &unchecked).is_empty());
    drop(s);
    // A live host reports it up again.
    h.report("h2", &m1, true, t0 + Duration::from_millis(1));
    assert_eq!(h.member_status(&f.c.read().members[&m1], true), "ONLINE");
}
