//! VPNaaS logic against a real (in-memory) core: Neutron's defaults and
//! what Strato refuses of them, the two connection forms, the checks in
//! Neutron's order, in-use refusals, statuses, quotas, and the router and
//! subnet guards. Every refusal is checked to change nothing (`run`).
//!
//! Bad inputs tried: IKEv1 (also as the default), aggressive mode, SHA-1
//! (also as the default), 3DES, AES-CTR, short GCM ICVs, unknown
//! algorithms, DH group 5 (also as the default) and 2, lifetimes in
//! kilobytes, under 60 s, of the wrong type and with unknown keys, AH,
//! AH-ESP and transport mode; a router without a gateway, a subnet not on
//! the router, a flavor; endpoint groups empty, with duplicates, with bad
//! CIDRs, IPv6, host bits, bad and unknown subnet ids, another project's
//! subnet, an unknown type; connections missing each required attribute,
//! with an empty PSK, a peer name or IPv6 peer, peer CIDRs with endpoint
//! groups, groups with a subnet service, missing groups, wrong group
//! types, a local subnet off the router, DPD timeout <= interval, MTU 67
//! and over 9216, a peer inside its own CIDRs, duplicate and invalid peer
//! CIDRs, read-only attributes on update, updates while pending, other
//! projects' resources, and quotas exceeded.

use serde_json::{json, Value};

use super::{connections, endpoint_groups, policies, services};
use crate::{
    auth::Auth,
    commit::Core,
    error::ApiError,
    model::{Change, Object, VpnStatus},
    network::{
        networks, routers, subnets,
        testkit::{auth, core, member, refused, run},
        Edit,
    },
};

struct Vpc {
    c: Core,
    a: Auth,
    router: String,
    /// Attached to the router: 10.0.1.0/24 and 10.0.2.0/24.
    s1: String,
    s2: String,
    /// Not attached: 10.0.3.0/24.
    s3: String,
}

fn subnet(c: &Core, a: &Auth, cidr: &str) -> String {
    let n = run(c, |s| networks::create(s, a, &json!({"network": {}})))
        .expect("network")
        .meta
        .id;
    run(c, |s| {
        subnets::create(
            s,
            a,
            &json!({"subnet": {"network_id": n, "cidr": cidr, "ip_version": 4}}),
        )
    })
    .expect("subnet")
    .meta
    .id
}

fn vpc() -> Vpc {
    let c = core();
    let admin = auth("ops", "admin");
    let ext = run(&c, |s| {
        networks::create(s, &admin, &json!({"network": {"router:external": true}}))
    })
    .expect("external")
    .meta
    .id;
    run(&c, |s| {
        subnets::create(
            s,
            &admin,
            &json!({"subnet": {"network_id": ext, "cidr": "198.51.100.0/24", "ip_version": 4,
                "enable_dhcp": false}}),
        )
    })
    .expect("external subnet");
    let a = member("p1");
    let (s1, s2, s3) = (
        subnet(&c, &a, "10.0.1.0/24"),
        subnet(&c, &a, "10.0.2.0/24"),
        subnet(&c, &a, "10.0.3.0/24"),
    );
    let router = run(&c, |s| {
        routers::create(
            s,
            &a,
            &json!({"router": {"external_gateway_info": {"network_id": ext}}}),
        )
    })
    .expect("router")
    .meta
    .id;
    for sn in [&s1, &s2] {
        run(&c, |s| {
            routers::add_interface(s, &a, &router, &json!({"subnet_id": sn}))
        })
        .expect("interface");
    }
    Vpc {
        c,
        a,
        router,
        s1,
        s2,
        s3,
    }
}

const IKE: &str = r#"{"ike_version": "v2", "auth_algorithm": "sha256", "pfs": "group14"}"#;

impl Vpc {
    fn ike(&self, body: Value) -> Result<crate::model::IkePolicy, ApiError> {
        run(&self.c, |s| {
            policies::create_ike(s, &self.a, &json!({ "ikepolicy": body }))
        })
    }
    fn ipsec(&self, body: Value) -> Result<crate::model::IpsecPolicy, ApiError> {
        run(&self.c, |s| {
            policies::create_ipsec(s, &self.a, &json!({ "ipsecpolicy": body }))
        })
    }
    fn service(&self, body: Value) -> Result<crate::model::VpnService, ApiError> {
        run(&self.c, |s| {
            services::create(s, &self.a, &json!({ "vpnservice": body }))
        })
    }
    fn group(&self, body: Value) -> Result<crate::model::EndpointGroup, ApiError> {
        run(&self.c, |s| {
            endpoint_groups::create(s, &self.a, &json!({ "endpoint_group": body }))
        })
    }
    fn connection(&self, body: Value) -> Result<crate::model::IpsecSiteConnection, ApiError> {
        run(&self.c, |s| {
            connections::create(s, &self.a, &json!({ "ipsec_site_connection": body }))
        })
    }
    /// Supported policies, a service without a subnet and the two groups.
    fn parts(&self) -> (String, String, String, String, String) {
        let ike = self
            .ike(serde_json::from_str(IKE).expect("json"))
            .expect("ike")
            .meta
            .id;
        let ipsec = self
            .ipsec(json!({"auth_algorithm": "sha256", "encryption_algorithm": "aes-128-gcm-16", "pfs": "group19"}))
            .expect("ipsec")
            .meta
            .id;
        let svc = self
            .service(json!({"router_id": self.router}))
            .expect("service")
            .meta
            .id;
        let local = self
            .group(json!({"type": "subnet", "endpoints": [self.s1, self.s2]}))
            .expect("local")
            .meta
            .id;
        let peer = self
            .group(json!({"type": "cidr", "endpoints": ["192.168.10.0/24", "192.168.20.0/24"]}))
            .expect("peer")
            .meta
            .id;
        (ike, ipsec, svc, local, peer)
    }
}

#[test]
fn ike_policies_keep_neutron_defaults_strato_speaks_and_refuse_the_rest() {
    let v = vpc();
    // Neutron's defaults (v1, sha1, group5) are refused, naming what is
    // supported: first the version.
    refused(v.ike(json!({"name": "x"})), 400, "v1 is not supported");
    refused(
        v.ike(json!({"ike_version": "v2"})),
        400,
        "auth_algorithm. Reason: sha1 is not supported by Strato's VPN; supported: sha256, sha384, sha512",
    );
    refused(
        v.ike(json!({"ike_version": "v2", "auth_algorithm": "sha256"})),
        400,
        "pfs. Reason: group5 is not supported by Strato's VPN; supported: group14, group19, group31",
    );
    let ok = v
        .ike(serde_json::from_str(IKE).expect("json"))
        .expect("supported policy");
    assert_eq!(
        (
            ok.encryption_algorithm.as_str(),
            ok.phase1_negotiation_mode.as_str(),
            ok.lifetime_s
        ),
        ("aes-128", "main", 3600)
    );
    let r = policies::render_ike(&ok);
    assert_eq!(r["lifetime"], json!({"units": "seconds", "value": 3600}));
    assert_eq!(r["tenant_id"], "p1");
    for (k, bad, text) in [
        ("ike_version", json!("v1"), "v1 is not supported"),
        ("ike_version", json!("v3"), "v3 is not in valid_values"),
        (
            "phase1_negotiation_mode",
            json!("aggressive"),
            "aggressive is not supported",
        ),
        (
            "auth_algorithm",
            json!("aes-xcbc"),
            "aes-xcbc is not supported",
        ),
        ("auth_algorithm", json!("md5"), "md5 is not in valid_values"),
        (
            "encryption_algorithm",
            json!("3des"),
            "3des is not supported",
        ),
        (
            "encryption_algorithm",
            json!("aes-256-ctr"),
            "aes-256-ctr is not supported",
        ),
        (
            "encryption_algorithm",
            json!("aes-128-gcm-8"),
            "aes-128-gcm-8 is not supported",
        ),
        (
            "encryption_algorithm",
            json!("blowfish"),
            "blowfish is not in valid_values",
        ),
        ("pfs", json!("group2"), "group2 is not supported"),
        ("pfs", json!("group1"), "group1 is not in valid_values"),
        (
            "lifetime",
            json!({"units": "kilobytes", "value": 1000}),
            "kilobytes is not in valid_values",
        ),
        (
            "lifetime",
            json!({"value": 59}),
            "too small - must be at least '60'",
        ),
        ("lifetime", json!({"value": "soon"}), "is not an integer"),
        ("lifetime", json!({"value": "3600"}), "is not an integer"),
        (
            "lifetime",
            json!({"value": 18_446_744_073_709_551_614u64}),
            "too large - must be no more than '2147483647'",
        ),
        (
            "lifetime",
            json!({"seconds": 600}),
            "Unexpected keys supplied: seconds",
        ),
        ("lifetime", json!(600), "is not a dictionary"),
        (
            "colour",
            json!("blue"),
            "Unrecognized attribute(s) 'colour'",
        ),
    ] {
        let mut body: Value = serde_json::from_str(IKE).expect("json");
        body[k] = bad;
        refused(v.ike(body), 400, text);
    }
    // A lifetime written with a zero fraction is an integer (as Neutron's
    // converters and JSON Schema take it).
    let mut body: Value = serde_json::from_str(IKE).expect("json");
    body["lifetime"] = json!({"units": "seconds", "value": 7200.0});
    assert_eq!(v.ike(body).expect("7200.0").lifetime_s, 7200);
    // Every supported choice, and a lifetime in range.
    for (k, good) in [
        ("encryption_algorithm", "aes-256-gcm-16"),
        ("encryption_algorithm", "aes-192"),
        ("auth_algorithm", "sha512"),
        ("pfs", "group31"),
    ] {
        let mut body: Value = serde_json::from_str(IKE).expect("json");
        body[k] = json!(good);
        body["lifetime"] = json!({"units": "seconds", "value": 28800});
        let p = v.ike(body).expect(good);
        assert_eq!(p.lifetime_s, 28800);
    }
    // Updates: a supported change is taken, an unsupported one refused.
    let id = ok.meta.id.clone();
    let body = json!({"ikepolicy": {"pfs": "group19", "name": "ike-1"}});
    let p = run(&v.c, |s| {
        policies::update_ike(s, &v.a, Edit::new(&id, &body))
    })
    .expect("update");
    assert_eq!((p.pfs.as_str(), p.meta.name.as_str()), ("group19", "ike-1"));
    let body = json!({"ikepolicy": {"ike_version": "v1"}});
    refused(
        run(&v.c, |s| {
            policies::update_ike(s, &v.a, Edit::new(&id, &body))
        }),
        400,
        "v1 is not supported",
    );
    // Another project does not see it.
    let other = member("p2");
    refused(
        run(&v.c, |s| policies::delete_ike(s, &other, &id, None)),
        404,
        "could not be found",
    );
}

#[test]
fn ipsec_policies_are_esp_tunnels() {
    let v = vpc();
    let base = json!({"auth_algorithm": "sha384", "pfs": "group14"});
    let p = v.ipsec(base.clone()).expect("policy");
    assert_eq!(
        (
            p.transform_protocol.as_str(),
            p.encapsulation_mode.as_str(),
            p.encryption_algorithm.as_str()
        ),
        ("esp", "tunnel", "aes-128")
    );
    for (k, bad, text) in [
        (
            "transform_protocol",
            "ah",
            "ah is not supported by Strato's VPN; supported: esp",
        ),
        ("transform_protocol", "ah-esp", "ah-esp is not supported"),
        (
            "encapsulation_mode",
            "transport",
            "transport is not supported by Strato's VPN; supported: tunnel",
        ),
        (
            "phase1_negotiation_mode",
            "main",
            "Unrecognized attribute(s) 'phase1_negotiation_mode'",
        ),
    ] {
        let mut body = base.clone();
        body[k] = json!(bad);
        refused(v.ipsec(body), 400, text);
    }
    refused(
        v.ipsec(json!({"pfs": "group14"})),
        400,
        "sha1 is not supported",
    );
}

#[test]
fn vpn_services_need_a_router_with_a_gateway() {
    let v = vpc();
    let s = v
        .service(json!({"router_id": v.router, "name": "vpn"}))
        .expect("service");
    assert_eq!(s.status, VpnStatus::PendingCreate);
    let r = services::render(&v.c.read(), &s);
    assert_eq!(r["status"], "PENDING_CREATE");
    assert!(
        r["external_v4_ip"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("198.51.100.")),
        "{r:?}"
    );
    assert_eq!(r["subnet_id"], Value::Null);
    // The legacy form with a subnet on the router.
    v.service(json!({"router_id": v.router, "subnet_id": v.s1}))
        .expect("legacy service");
    refused(
        v.service(json!({"router_id": v.router, "subnet_id": v.s3})),
        400,
        &format!("Subnet {} is not connected to Router {}", v.s3, v.router),
    );
    refused(v.service(json!({})), 400, "Required attribute 'router_id'");
    refused(
        v.service(json!({"router_id": v.router, "flavor_id": "f"})),
        404,
        "Flavors plugin not found",
    );
    let bare = run(&v.c, |s| routers::create(s, &v.a, &json!({"router": {}})))
        .expect("router")
        .meta
        .id;
    refused(
        v.service(json!({"router_id": bare})),
        400,
        &format!("Router {bare} has no external network gateway set"),
    );
    refused(
        v.service(json!({"router_id": "nope"})),
        404,
        "could not be found",
    );
    // Pending: no update (Neutron's VPNStateInvalidToUpdate); read-only
    // attributes first.
    let id = s.meta.id.clone();
    let body = json!({"vpnservice": {"name": "renamed"}});
    refused(
        run(&v.c, |st| services::update(st, &v.a, Edit::new(&id, &body))),
        400,
        "Invalid state PENDING_CREATE",
    );
    let body = json!({"vpnservice": {"router_id": bare}});
    refused(
        run(&v.c, |st| services::update(st, &v.a, Edit::new(&id, &body))),
        400,
        "Cannot update read-only attribute router_id",
    );
    // Once the gateway reports it, updates go through.
    v.c.mutate(|st| {
        let mut x = st.vpnservices[&id].clone();
        x.status = VpnStatus::Active;
        Ok((vec![Change::Put(Object::VpnService(x))], ()))
    })
    .expect("status");
    let body = json!({"vpnservice": {"name": "renamed", "admin_state_up": false}});
    let s = run(&v.c, |st| services::update(st, &v.a, Edit::new(&id, &body))).expect("update");
    assert!(!s.admin_state_up);
    // The router keeps its gateway while a service is on it.
    refused(
        run(&v.c, |st| {
            routers::update(
                st,
                &v.a,
                Edit::new(
                    &v.router,
                    &json!({"router": {"external_gateway_info": null}}),
                ),
            )
        }),
        409,
        "is currently used by VPN service",
    );
    refused(
        run(&v.c, |st| routers::delete(st, &v.a, &v.router, None)),
        409,
        "",
    );
    // Nor another address on it (the tunnels' local end would move).
    refused(
        run(&v.c, |st| {
            routers::update(
                st,
                &v.a,
                Edit::new(
                    &v.router,
                    &json!({"router": {"external_gateway_info": {"network_id": st.routers[&v.router].gateway.as_ref().map(|g| g.network_id.clone()), "external_fixed_ips": [{"ip_address": "198.51.100.77"}]}}}),
                ),
            )
        }),
        409,
        "is currently used by VPN service",
    );
    // Another project's policy in use is still a 404, never a 409.
    let ike = v
        .ike(serde_json::from_str(IKE).expect("json"))
        .expect("ike")
        .meta
        .id;
    let other = member("p2");
    refused(
        run(&v.c, |st| policies::delete_ike(st, &other, &ike, None)),
        404,
        "could not be found",
    );
}

#[test]
fn endpoint_groups_validate_their_endpoints() {
    let v = vpc();
    let g = v
        .group(json!({"type": "cidr", "endpoints": "192.168.1.0/24", "name": "peer"}))
        .expect("one CIDR as a string");
    assert_eq!(g.endpoints, vec!["192.168.1.0/24".to_owned()]);
    let r = endpoint_groups::render(&g);
    assert_eq!(r["type"], "cidr");
    let other = subnet(&v.c, &member("p2"), "10.9.0.0/24");
    for (body, status, text) in [
        (
            json!({"endpoints": ["10.0.0.0/8"]}),
            400,
            "Required attribute 'type'",
        ),
        (
            json!({"type": "vpn", "endpoints": ["x"]}),
            400,
            "vpn is not in valid_values",
        ),
        (
            json!({"type": "cidr", "endpoints": []}),
            400,
            "No endpoints specified",
        ),
        (json!({"type": "cidr"}), 400, "No endpoints specified"),
        (
            json!({"type": "cidr", "endpoints": ["10.0.0.0/8", "10.0.0.0/8"]}),
            400,
            "Endpoints have to be unique",
        ),
        (
            json!({"type": "cidr", "endpoints": ["10.0.0.0"]}),
            400,
            "Invalid CIDR",
        ),
        (
            json!({"type": "cidr", "endpoints": ["10.0.0.1/8"]}),
            400,
            "host bits set",
        ),
        (
            json!({"type": "cidr", "endpoints": ["2001:db8::/64"]}),
            400,
            "IPv6 is not supported",
        ),
        (
            json!({"type": "cidr", "endpoints": [5]}),
            400,
            "is not a valid string",
        ),
        (
            json!({"type": "subnet", "endpoints": ["not-a-uuid"]}),
            400,
            "Invalid UUID",
        ),
        (
            json!({"type": "subnet", "endpoints": [uuid::Uuid::new_v4().to_string()]}),
            400,
            "in endpoint group does not exist",
        ),
        (
            json!({"type": "subnet", "endpoints": [other]}),
            400,
            "in endpoint group does not exist",
        ),
    ] {
        refused(v.group(body), status, text);
    }
    v.group(json!({"type": "subnet", "endpoints": [v.s1, v.s3]}))
        .expect("subnets (attachment is checked by connections)");
    // Only names change.
    let id = g.meta.id.clone();
    let body = json!({"endpoint_group": {"endpoints": ["10.1.0.0/16"]}});
    refused(
        run(&v.c, |st| {
            endpoint_groups::update(st, &v.a, Edit::new(&id, &body))
        }),
        400,
        "Cannot update read-only attribute endpoints",
    );
}

#[test]
fn connections_follow_neutrons_checks() {
    let v = vpc();
    let (ike, ipsec, svc, local, peer) = v.parts();
    let base = json!({"vpnservice_id": svc, "ikepolicy_id": ike, "ipsecpolicy_id": ipsec,
        "peer_address": "203.0.113.5", "peer_id": "203.0.113.5", "psk": "s3cret",
        "local_ep_group_id": local, "peer_ep_group_id": peer});
    let c = v.connection(base.clone()).expect("connection");
    assert_eq!(c.status, VpnStatus::PendingCreate);
    assert_eq!(
        (
            c.mtu,
            c.initiator.as_str(),
            c.dpd_action.as_str(),
            c.dpd_interval,
            c.dpd_timeout
        ),
        (1500, "bi-directional", "hold", 30, 120)
    );
    let r = connections::render(&c);
    assert_eq!(
        r["dpd"],
        json!({"action": "hold", "interval": 30, "timeout": 120})
    );
    assert_eq!(
        (r["route_mode"].as_str(), r["auth_mode"].as_str()),
        (Some("static"), Some("psk"))
    );
    assert_eq!(r["peer_cidrs"], json!([]));
    assert_eq!(crate::network::quotas::vpn_subnets(&v.c.read(), "p1"), 4);

    let with = |k: &str, val: Value| {
        let mut b = base.clone();
        if val.is_null() {
            b.as_object_mut().expect("object").remove(k);
        } else {
            b[k] = val;
        }
        b
    };
    let off_router = v
        .group(json!({"type": "subnet", "endpoints": [v.s3]}))
        .expect("group")
        .meta
        .id;
    let peer_as_local = v
        .group(json!({"type": "cidr", "endpoints": ["10.50.0.0/16"]}))
        .expect("group")
        .meta
        .id;
    let around_peer = v
        .group(json!({"type": "cidr", "endpoints": ["203.0.113.0/24"]}))
        .expect("group")
        .meta
        .id;
    for attr in [
        "peer_address",
        "peer_id",
        "psk",
        "vpnservice_id",
        "ikepolicy_id",
        "ipsecpolicy_id",
    ] {
        refused(
            v.connection(with(attr, Value::Null)),
            400,
            &format!("Required attribute '{attr}' not specified"),
        );
    }
    for (body, status, text) in [
        (with("psk", json!("")), 400, "must not be empty"),
        (
            with("peer_address", json!("vpn.example.com")),
            400,
            "cannot be resolved",
        ),
        (
            with("peer_address", json!("2001:db8::1")),
            400,
            "unicast IPv4 address",
        ),
        (
            with("peer_cidrs", json!(["192.168.30.0/24"])),
            400,
            "Peer CIDRs cannot be specified, when using endpoint groups",
        ),
        (
            with("local_ep_group_id", Value::Null),
            400,
            "Missing endpoint group local for IPSec site-to-site connection",
        ),
        (
            with("local_ep_group_id", json!(peer_as_local)),
            400,
            "type is 'cidr' and should be 'subnet'",
        ),
        (
            with("peer_ep_group_id", json!(local)),
            400,
            "type is 'subnet' and should be 'cidr'",
        ),
        (
            with("local_ep_group_id", json!(off_router)),
            400,
            "is not connected to Router",
        ),
        (
            with("peer_ep_group_id", json!(around_peer)),
            400,
            "inside the peer CIDR",
        ),
        (
            with("local_ep_group_id", json!("nope")),
            400,
            "is not a valid UUID",
        ),
        (
            with("local_ep_group_id", json!(uuid::Uuid::new_v4().to_string())),
            404,
            "Endpoint group",
        ),
        (
            with("dpd", json!({"interval": 30, "timeout": 30})),
            400,
            "dpd_timeout is equal to or less than dpd_interval",
        ),
        (
            with("dpd", json!({"action": "explode"})),
            400,
            "is not in valid_values",
        ),
        (
            with("dpd", json!({"interval": -1})),
            400,
            "should be non-negative",
        ),
        (
            with("dpd", json!({"every": 5})),
            400,
            "Unexpected keys supplied: every",
        ),
        (with("mtu", json!(67)), 400, "MTU 67 is too small for ipv4"),
        (with("mtu", json!(9217)), 400, "larger than 9216"),
        (
            with("mtu", json!("big")),
            400,
            "Invalid input for mtu. Reason: '\"big\"' is not an integer",
        ),
        (with("mtu", json!(1400.5)), 400, "is not an integer"),
        (
            with("initiator", json!("sometimes")),
            400,
            "is not in valid_values",
        ),
        (
            with("vpnservice_id", json!(uuid::Uuid::new_v4().to_string())),
            404,
            "VPNService",
        ),
        (
            with("ikepolicy_id", json!(uuid::Uuid::new_v4().to_string())),
            404,
            "IKEPolicy",
        ),
        (
            with("status", json!("ACTIVE")),
            400,
            "Unrecognized attribute(s) 'status'",
        ),
    ] {
        refused(v.connection(body), status, text);
    }
    // DPD keys left out keep Neutron's defaults; the MTU may be lowered.
    let c2 = v
        .connection(with("dpd", json!({"action": "restart", "timeout": 60})).tap_mtu(1400))
        .expect("connection");
    assert_eq!(
        (
            c2.dpd_action.as_str(),
            c2.dpd_interval,
            c2.dpd_timeout,
            c2.mtu
        ),
        ("restart", 30, 60, 1400)
    );

    // Legacy form: a service with a subnet takes peer CIDRs only.
    let legacy = v
        .service(json!({"router_id": v.router, "subnet_id": v.s1}))
        .expect("legacy")
        .meta
        .id;
    let lbase = json!({"vpnservice_id": legacy, "ikepolicy_id": ike, "ipsecpolicy_id": ipsec,
        "peer_address": "203.0.113.9", "peer_id": "peer@example", "psk": "k",
        "peer_cidrs": ["192.168.40.0/24"]});
    v.connection(lbase.clone()).expect("legacy connection");
    let mut b = lbase.clone();
    b["peer_cidrs"] = json!([]);
    refused(v.connection(b), 400, "Missing peer CIDRs");
    let mut b = lbase.clone();
    b["local_ep_group_id"] = json!(local);
    refused(
        v.connection(b),
        400,
        "Endpoint group local cannot be specified, when VPN Service has subnet specified",
    );
    let mut b = lbase.clone();
    b["peer_cidrs"] = json!(["192.168.40.0/24", "192.168.40.0/24"]);
    refused(v.connection(b), 400, "Duplicate items");
    let mut b = lbase.clone();
    b["peer_cidrs"] = json!(["192.168.40.0"]);
    refused(v.connection(b), 400, "not a valid IPv4 subnet");

    // In use: policies, groups and the service refuse change and deletion.
    let id = |x: &str| x.to_owned();
    refused(
        run(&v.c, |s| policies::delete_ike(s, &v.a, &id(&ike), None)),
        409,
        "is in use by existing IPsecSiteConnection",
    );
    let rename = json!({"ikepolicy": {"name": "x"}});
    refused(
        run(&v.c, |s| {
            policies::update_ike(s, &v.a, Edit::new(&ike, &rename))
        }),
        409,
        "can't be updated or deleted",
    );
    refused(
        run(&v.c, |s| policies::delete_ipsec(s, &v.a, &id(&ipsec), None)),
        409,
        "is in use by existing IPsecSiteConnection",
    );
    refused(
        run(&v.c, |s| endpoint_groups::delete(s, &v.a, &local, None)),
        400,
        "is in use and cannot be deleted",
    );
    refused(
        run(&v.c, |s| services::delete(s, &v.a, &svc, None)),
        409,
        "is still in use",
    );
    // The router's interfaces and subnets the connections use stay.
    refused(
        run(&v.c, |s| {
            routers::remove_interface(s, &v.a, &v.router, &json!({"subnet_id": v.s2}))
        }),
        409,
        "is used by",
    );
    refused(
        run(&v.c, |s| subnets::delete(s, &v.a, &v.s2, None)),
        409,
        "",
    );

    // Updates: pending refuses (after validation), read-only first.
    let cid = c.meta.id.clone();
    let body = json!({"ipsec_site_connection": {"ikepolicy_id": ike}});
    refused(
        run(&v.c, |s| {
            connections::update(s, &v.a, Edit::new(&cid, &body))
        }),
        400,
        "Cannot update read-only attribute ikepolicy_id",
    );
    let body = json!({"ipsec_site_connection": {"mtu": 10}});
    refused(
        run(&v.c, |s| {
            connections::update(s, &v.a, Edit::new(&cid, &body))
        }),
        400,
        "too small",
    );
    let body = json!({"ipsec_site_connection": {"mtu": 1400}});
    refused(
        run(&v.c, |s| {
            connections::update(s, &v.a, Edit::new(&cid, &body))
        }),
        400,
        "Invalid state PENDING_CREATE",
    );
    v.c.mutate(|st| {
        let mut x = st.ipsec_site_connections[&cid].clone();
        x.status = VpnStatus::Down;
        Ok((vec![Change::Put(Object::IpsecSiteConnection(x))], ()))
    })
    .expect("status");
    let body =
        json!({"ipsec_site_connection": {"mtu": 1400, "dpd": {"timeout": 90}, "psk": "new"}});
    let u = run(&v.c, |s| {
        connections::update(s, &v.a, Edit::new(&cid, &body))
    })
    .expect("update");
    assert_eq!(
        (u.mtu, u.dpd_interval, u.dpd_timeout, u.psk.as_str()),
        (1400, 30, 90, "new")
    );

    // Deleting the connections frees everything.
    let all: Vec<String> = v.c.read().ipsec_site_connections.keys().cloned().collect();
    for c in all {
        run(&v.c, |s| connections::delete(s, &v.a, &c, None)).expect("delete");
    }
    run(&v.c, |s| endpoint_groups::delete(s, &v.a, &local, None)).expect("group");
    run(&v.c, |s| services::delete(s, &v.a, &svc, None)).expect("service");
    run(&v.c, |s| policies::delete_ike(s, &v.a, &ike, None)).expect("ike");
}

#[test]
fn quotas_bound_vpn_objects_and_vpn_subnets() {
    let v = vpc();
    let (ike, ipsec, svc, local, _) = v.parts();
    v.c.mutate(|s| {
        let mut q = s.quota("p1");
        q.vpn_subnet = 5;
        q.ikepolicy = 1;
        Ok((vec![Change::Put(Object::Quota(q))], ()))
    })
    .expect("quota");
    refused(
        v.ike(serde_json::from_str(IKE).expect("json")),
        409,
        "Quota exceeded for resources: ['ikepolicy']",
    );
    let peer3 = v
        .group(json!({"type": "cidr", "endpoints": ["192.168.1.0/24", "192.168.2.0/24", "192.168.3.0/24"]}))
        .expect("group")
        .meta
        .id;
    let peer4 = v
        .group(json!({"type": "cidr", "endpoints": ["172.16.1.0/24", "172.16.2.0/24", "172.16.3.0/24", "172.16.4.0/24"]}))
        .expect("group")
        .meta
        .id;
    let body = |peer: &str| {
        json!({"vpnservice_id": svc, "ikepolicy_id": ike, "ipsecpolicy_id": ipsec,
            "peer_address": "203.0.113.5", "peer_id": "x", "psk": "k",
            "local_ep_group_id": local, "peer_ep_group_id": peer})
    };
    // 2 local + 4 peer = 6 > 5.
    refused(v.connection(body(&peer4)), 409, "['vpn_subnet']");
    // 2 + 3 = 5.
    v.connection(body(&peer3)).expect("at the limit");
    assert_eq!(crate::network::quotas::vpn_subnets(&v.c.read(), "p1"), 5);
}

trait TapMtu {
    fn tap_mtu(self, mtu: u32) -> Value;
}

impl TapMtu for Value {
    fn tap_mtu(mut self, mtu: u32) -> Value {
        self["mtu"] = json!(mtu);
        self
    }
}
