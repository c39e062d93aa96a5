//! The L7 API against a real (in-memory SQLite) core: every validation
//! rule of HTTP/HTTPS/TERMINATED_HTTPS listeners, cookie persistence,
//! HTTP(S) monitors, L7 policies and rules with Octavia's status and
//! message, and that a rejected request changes nothing (`run` asserts
//! the revision did not move after every refusal); position renumbering,
//! cascade deletes, quotas; and the L7 compile function.

use serde_json::{json, Value};

use super::*;
use crate::{
    auth::Auth,
    commit::Core,
    error::ApiError,
    model::{
        Kind, L7Action, L7Policy, L7Rule, Listener, LoadBalancer, Pool, ProvisioningStatus, Quota,
    },
    network::{
        networks, subnets,
        testkit::{core, member as member_of, refused, run},
    },
};
use strato_proto::l7::L7Certificate;

struct F {
    c: Core,
    a: Auth,
    lb: String,
    /// Certificate containers of p1 (Key Manager references) by the names
    /// the tests use: c1, c2, c3.
    tls: std::collections::BTreeMap<&'static str, String>,
    /// A certificate container of project p2.
    foreign: String,
}

fn fixture() -> F {
    let c = core();
    let a = member_of("p1");
    let n = run(&c, |s| {
        networks::create(s, &a, &json!({"network": {"name": "n"}}))
    })
    .expect("network")
    .meta
    .id;
    let sn = run(&c, |s| {
        subnets::create(
            s,
            &a,
            &json!({"subnet": {"network_id": n, "cidr": "10.0.1.0/24", "ip_version": 4}}),
        )
    })
    .expect("subnet")
    .meta
    .id;
    let lb = run(&c, |s| {
        load_balancers::create(s, &a, &json!({"loadbalancer": {"vip_subnet_id": sn}}))
    })
    .expect("lb")
    .meta
    .id;
    let tls = ["c1", "c2", "c3"]
        .into_iter()
        .map(|n| {
            (
                n,
                crate::keymanager::test_certificate(&c, "p1", &format!("{n}.test")),
            )
        })
        .collect();
    let foreign = crate::keymanager::test_certificate(&c, "p2", "p2.test");
    F {
        c,
        a,
        lb,
        tls,
        foreign,
    }
}

impl F {
    /// The reference of certificate container `name`.
    fn r(&self, name: &str) -> String {
        self.tls[name].clone()
    }

    /// A `certs` for `l7_config` that knows c1, c2, c3 (by their real
    /// references, answering with their names) and fails on anything else.
    fn certs(&self, project: &str, r: &str) -> Result<L7Certificate, ApiError> {
        assert_eq!(project, "p1", "resolved as the listener's project");
        match self.tls.iter().find(|(_, v)| v.as_str() == r) {
            Some((name, _)) => Ok(L7Certificate {
                reference: (*name).into(),
                chain_pem: format!("CERT {name}"),
                key_pem: format!("KEY {name}"),
            }),
            None => Err(ApiError::bad_request(format!(
                "Could not retrieve certificate: {r}"
            ))),
        }
    }

    fn listener(&self, body: Value) -> Result<Listener, ApiError> {
        let mut b = json!({"loadbalancer_id": self.lb});
        for (k, v) in body.as_object().expect("object") {
            b[k] = v.clone();
        }
        run(&self.c, |s| {
            listeners::create(s, &self.a, &json!({ "listener": b }))
        })
    }
    fn update_listener(&self, id: &str, body: Value) -> Result<Listener, ApiError> {
        run(&self.c, |s| {
            listeners::update(s, &self.a, id, &json!({ "listener": body }))
        })
    }
    fn http(&self, port: u16) -> String {
        self.listener(json!({"protocol": "HTTP", "protocol_port": port}))
            .expect("HTTP listener")
            .meta
            .id
    }
    fn pool(&self, body: Value) -> Result<Pool, ApiError> {
        let mut b = json!({"loadbalancer_id": self.lb, "lb_algorithm": "ROUND_ROBIN"});
        for (k, v) in body.as_object().expect("object") {
            b[k] = v.clone();
        }
        run(&self.c, |s| {
            pools::create(s, &self.a, &json!({ "pool": b }))
        })
    }
    fn policy(&self, body: Value) -> Result<L7Policy, ApiError> {
        run(&self.c, |s| {
            l7policies::create(s, &self.a, &json!({ "l7policy": body }))
        })
    }
    fn update_policy(&self, id: &str, body: Value) -> Result<L7Policy, ApiError> {
        run(&self.c, |s| {
            l7policies::update(s, &self.a, id, &json!({ "l7policy": body }))
        })
    }
    fn rule(&self, policy: &str, body: Value) -> Result<L7Rule, ApiError> {
        run(&self.c, |s| {
            l7rules::create(s, &self.a, policy, &json!({ "rule": body }))
        })
    }
    fn update_rule(&self, policy: &str, id: &str, body: Value) -> Result<L7Rule, ApiError> {
        run(&self.c, |s| {
            l7rules::update(s, &self.a, policy, id, &json!({ "rule": body }))
        })
    }
    /// The policies of a listener as (name, position), in position order.
    fn order(&self, listener: &str) -> Vec<(String, u32)> {
        let s = self.c.read();
        listener_policies(&s, listener)
            .into_iter()
            .map(|p| (p.meta.name.clone(), p.position))
            .collect()
    }
    fn reject(&self, listener: &str, name: &str, position: Option<u32>) -> String {
        let mut b = json!({"listener_id": listener, "action": "REJECT", "name": name});
        if let Some(p) = position {
            b["position"] = p.into();
        }
        self.policy(b).expect("policy").meta.id
    }
}

#[test]
fn l7_listeners_validate_like_octavia() {
    let f = fixture();
    let http = f
        .listener(json!({"protocol": "HTTP", "protocol_port": 80,
            "insert_headers": {"X-Forwarded-For": "true", "X-Forwarded-Proto": "True"},
            "allowed_cidrs": ["10.0.0.0/8", "192.168.1.0/24"]}))
        .expect("HTTP");
    assert_eq!(http.l7.insert_headers.len(), 2);
    assert_eq!(
        http.l7.tls_versions, None,
        "TLS versions only for TERMINATED_HTTPS"
    );
    let tls = f
        .listener(json!({"protocol": "TERMINATED_HTTPS", "protocol_port": 443,
            "default_tls_container_ref": f.r("c1"),
            "sni_container_refs": [f.r("c2")]}))
        .expect("TERMINATED_HTTPS");
    assert_eq!(
        tls.l7.tls_versions.as_deref(),
        Some(&["TLSv1.2".to_owned(), "TLSv1.3".to_owned()][..]),
        "Octavia's default versions"
    );
    assert_eq!(
        tls.l7.alpn_protocols.as_deref(),
        Some(
            &[
                "h2".to_owned(),
                "http/1.1".to_owned(),
                "http/1.0".to_owned()
            ][..]
        )
    );
    f.listener(json!({"protocol": "HTTPS", "protocol_port": 8443}))
        .expect("HTTPS (passthrough)");
    f.listener(
        json!({"protocol": "TERMINATED_HTTPS", "protocol_port": 9443,
        "sni_container_refs": [f.r("c3")], "tls_versions": ["TLSv1.3"], "alpn_protocols": ["h2"]}),
    )
    .expect("SNI only, as Octavia");
    // Bad inputs: each refused with Octavia's status and message, nothing changed.
    for (body, status, text) in [
        // A port of the same L4 protocol.
        (json!({"protocol": "TCP", "protocol_port": 80}), 409, "already using protocol HTTP and protocol_port 80"),
        (json!({"protocol": "TERMINATED_HTTPS", "protocol_port": 80, "default_tls_container_ref": "x"}), 409, "protocol_port 80"),
        // References the Key Manager does not resolve for this project:
        // unknown, garbage, another project's certificate.
        (json!({"protocol": "TERMINATED_HTTPS", "protocol_port": 81, "default_tls_container_ref": "x"}), 400,
            "Could not retrieve certificate: ['x']"),
        (json!({"protocol": "TERMINATED_HTTPS", "protocol_port": 81, "default_tls_container_ref": f.r("c1"),
            "sni_container_refs": ["http://km.test/key-manager/v1/containers/00000000-0000-0000-0000-000000000000"]}), 400,
            "Could not retrieve certificate"),
        (json!({"protocol": "TERMINATED_HTTPS", "protocol_port": 81, "default_tls_container_ref": f.foreign.clone()}), 400,
            "Could not retrieve certificate"),
        (json!({"protocol": "PROXY", "protocol_port": 81}), 400, "Protocol PROXY is not supported"),
        (json!({"protocol": "PROMETHEUS", "protocol_port": 81}), 400, "not supported"),
        // Certificates.
        (json!({"protocol": "TERMINATED_HTTPS", "protocol_port": 81}), 400,
            "Validation failure: An SNI or default certificate container reference must be provided for TERMINATED_HTTPS protocol listeners."),
        (json!({"protocol": "HTTP", "protocol_port": 81, "default_tls_container_ref": "x"}), 400,
            "Certificate container references are not allowed on HTTP protocol listeners."),
        (json!({"protocol": "HTTPS", "protocol_port": 81, "sni_container_refs": ["x"]}), 400,
            "not allowed on HTTPS protocol listeners"),
        (json!({"protocol": "UDP", "protocol_port": 81, "default_tls_container_ref": "x"}), 400,
            "UDP protocol listener does not support TLS."),
        (json!({"protocol": "HTTP", "protocol_port": 81, "default_tls_container_ref": "x".repeat(256)}), 400, "maximum length"),
        // Inserted headers.
        (json!({"protocol": "TCP", "protocol_port": 81, "insert_headers": {"X-Forwarded-For": "true"}}), 400,
            "insert-headers is not a valid option for a TCP protocol listener."),
        (json!({"protocol": "HTTPS", "protocol_port": 81, "insert_headers": {"X-Forwarded-For": "true"}}), 400,
            "insert-headers is not a valid option for a HTTPS protocol listener."),
        (json!({"protocol": "HTTP", "protocol_port": 81, "insert_headers": {"X-Bogus": "true"}}), 400,
            "['X-Bogus'] is not a valid option for insert_headers"),
        (json!({"protocol": "HTTP", "protocol_port": 81, "insert_headers": {"X-SSL-Client-DN": "true"}}), 400,
            "['X-SSL-Client-DN'] is not a valid option for HTTP protocol listener."),
        (json!({"protocol": "TERMINATED_HTTPS", "protocol_port": 81, "default_tls_container_ref": "x",
            "insert_headers": {"X-SSL-Client-CN": "true"}}), 400, "X-Forwarded-For, X-Forwarded-Port, X-Forwarded-Proto"),
        (json!({"protocol": "HTTP", "protocol_port": 81, "insert_headers": ["X-Forwarded-For"]}), 400, "dictionary"),
        (json!({"protocol": "HTTP", "protocol_port": 81, "insert_headers": {"X-Forwarded-For": true}}), 400, "dictionary"),
        // TLS versions and ALPN.
        (json!({"protocol": "TERMINATED_HTTPS", "protocol_port": 81, "default_tls_container_ref": "x", "tls_versions": []}), 400,
            "Empty TLS version list"),
        (json!({"protocol": "TERMINATED_HTTPS", "protocol_port": 81, "default_tls_container_ref": "x", "tls_versions": ["TLSv9"]}), 400,
            "Invalid TLS versions: TLSv9"),
        (json!({"protocol": "TERMINATED_HTTPS", "protocol_port": 81, "default_tls_container_ref": "x", "tls_versions": ["TLSv1.1", "TLSv1.2"]}), 400,
            "Requested TLS versions are less than the minimum: TLSv1.1 < TLSv1.2"),
        (json!({"protocol": "TERMINATED_HTTPS", "protocol_port": 81, "default_tls_container_ref": "x", "tls_versions": ["SSLv3"]}), 400,
            "SSLv3 < TLSv1.2"),
        (json!({"protocol": "TERMINATED_HTTPS", "protocol_port": 81, "default_tls_container_ref": "x", "alpn_protocols": []}), 400,
            "Empty ALPN protocol list"),
        (json!({"protocol": "TERMINATED_HTTPS", "protocol_port": 81, "default_tls_container_ref": "x", "alpn_protocols": ["h3"]}), 400,
            "Value should be one of: h2, http/1.1, http/1.0"),
        (json!({"protocol": "HTTP", "protocol_port": 81, "tls_versions": ["TLSv1.2"]}), 400, "only for TERMINATED_HTTPS"),
        // Allowed CIDRs.
        (json!({"protocol": "HTTP", "protocol_port": 81, "allowed_cidrs": ["10.0.0.0/33"]}), 400, "CIDR format"),
        (json!({"protocol": "HTTP", "protocol_port": 81, "allowed_cidrs": ["nope"]}), 400, "CIDR format"),
        (json!({"protocol": "HTTP", "protocol_port": 81, "allowed_cidrs": ["2001:db8::/32"]}), 400,
            "IP version incompatible with all VIPs"),
        (json!({"protocol": "TCP", "protocol_port": 81, "allowed_cidrs": ["10.0.0.0/8"]}), 400, "allowed_cidrs is not supported on TCP"),
        // Attributes Strato does not have.
        (json!({"protocol": "TERMINATED_HTTPS", "protocol_port": 81, "default_tls_container_ref": "x", "client_ca_tls_container_ref": "ca"}), 400, "not supported"),
        (json!({"protocol": "TERMINATED_HTTPS", "protocol_port": 81, "default_tls_container_ref": "x", "client_authentication": "MANDATORY"}), 400, "not supported"),
        (json!({"protocol": "TERMINATED_HTTPS", "protocol_port": 81, "default_tls_container_ref": "x", "tls_ciphers": "ECDHE"}), 400, "not supported"),
        (json!({"protocol": "TERMINATED_HTTPS", "protocol_port": 81, "default_tls_container_ref": "x", "hsts_max_age": 10}), 400, "not supported"),
        (json!({"protocol": "HTTP", "protocol_port": 81, "l7policies": [{"action": "REJECT"}]}), 400, "one by one"),
    ] {
        refused(f.listener(body.clone()), status, text);
    }
    // Updates: validated against the listener's protocol.
    let u = f
        .update_listener(
            &http.meta.id,
            json!({"insert_headers": {"X-Forwarded-Port": "true"}, "allowed_cidrs": null}),
        )
        .expect("update");
    assert_eq!(
        u.l7.insert_headers.keys().collect::<Vec<_>>(),
        ["X-Forwarded-Port"]
    );
    assert!(u.l7.allowed_cidrs.is_empty());
    refused(
        f.update_listener(&http.meta.id, json!({"default_tls_container_ref": "x"})),
        400,
        "not allowed on HTTP protocol listeners",
    );
    refused(
        f.update_listener(
            &tls.meta.id,
            json!({"default_tls_container_ref": null, "sni_container_refs": []}),
        ),
        400,
        "An SNI or default certificate container reference must be provided",
    );
    refused(
        f.update_listener(&tls.meta.id, json!({"tls_versions": ["TLSv1"]})),
        400,
        "less than the minimum: TLSv1 < TLSv1.2",
    );
    let u = f
        .update_listener(
            &tls.meta.id,
            json!({"tls_versions": null, "sni_container_refs": []}),
        )
        .expect("reset to the defaults");
    assert_eq!(u.l7.tls_versions.as_ref().map(Vec::len), Some(2));
    assert!(u.l7.sni_container_refs.is_empty());
    // Rendering.
    let s = f.c.read();
    let r = listeners::render(&s, &health::LbHealth::new(), &s.listeners[&tls.meta.id]);
    assert_eq!(r["default_tls_container_ref"], f.r("c1"));
    assert_eq!(r["tls_versions"], json!(["TLSv1.2", "TLSv1.3"]));
    assert_eq!(r["l7policies"], json!([]));
    let r = listeners::render(&s, &health::LbHealth::new(), &s.listeners[&http.meta.id]);
    assert_eq!(r["insert_headers"], json!({"X-Forwarded-Port": "true"}));
    assert_eq!(r["allowed_cidrs"], Value::Null);
    assert_eq!(r["tls_versions"], Value::Null);
}

#[test]
fn listener_pool_protocol_compatibility_is_octavias_map() {
    let f = fixture();
    let tcp = f
        .listener(json!({"protocol": "TCP", "protocol_port": 1}))
        .expect("tcp")
        .meta
        .id;
    let udp = f
        .listener(json!({"protocol": "UDP", "protocol_port": 1}))
        .expect("udp")
        .meta
        .id;
    let http = f.http(2);
    let https = f
        .listener(json!({"protocol": "HTTPS", "protocol_port": 3}))
        .expect("https")
        .meta
        .id;
    let term = f
        .listener(json!({"protocol": "TERMINATED_HTTPS", "protocol_port": 4, "default_tls_container_ref": f.r("c1")}))
        .expect("terminated")
        .meta
        .id;
    let pairs = [
        (&tcp, "TCP", true),
        (&tcp, "HTTP", true),
        (&tcp, "HTTPS", true),
        (&tcp, "UDP", false),
        (&udp, "UDP", true),
        (&udp, "TCP", false),
        (&udp, "HTTP", false),
        (&http, "HTTP", true),
        (&http, "TCP", false),
        (&http, "HTTPS", false),
        (&https, "HTTPS", true),
        (&https, "TCP", true),
        (&https, "HTTP", false),
        (&term, "HTTP", true),
        (&term, "HTTPS", false),
        (&term, "TCP", false),
    ];
    for (l, proto, ok) in pairs {
        // Through pool create with listener_id ...
        let r = f.pool(json!({"listener_id": l, "protocol": proto}));
        if ok {
            let p = r.expect("compatible");
            // ... freed again for the next row.
            run(&f.c, |s| pools::delete(s, &f.a, &p.meta.id)).expect("delete");
        } else {
            refused(
                r,
                400,
                &format!("The pool protocol '{proto}' is invalid while the listener protocol is"),
            );
        }
        // ... and through default_pool_id on the listener.
        let p = f.pool(json!({"protocol": proto})).expect("loose pool");
        let r = f.update_listener(l, json!({"default_pool_id": p.meta.id}));
        if ok {
            r.expect("compatible default pool");
            f.update_listener(l, json!({"default_pool_id": null}))
                .expect("clear");
        } else {
            refused(r, 400, "is invalid while the listener protocol is");
        }
    }
    refused(
        f.pool(json!({"protocol": "TERMINATED_HTTPS"})),
        400,
        "should be one of",
    );
    refused(
        f.pool(json!({"protocol": "PROXYV2"})),
        400,
        "Protocol PROXYV2 is not supported",
    );
    refused(
        f.pool(json!({"protocol": "SCTP"})),
        400,
        "Protocol SCTP is not supported",
    );
}

#[test]
fn cookie_persistence_and_http_monitors() {
    let f = fixture();
    let p = f
        .pool(
            json!({"protocol": "HTTP", "lb_algorithm": "LEAST_CONNECTIONS",
            "session_persistence": {"type": "APP_COOKIE", "cookie_name": "JSESSIONID"}}),
        )
        .expect("APP_COOKIE");
    let sp = p.session_persistence.clone().expect("persistence");
    assert_eq!(sp.cookie_name.as_deref(), Some("JSESSIONID"));
    f.pool(json!({"protocol": "HTTP", "session_persistence": {"type": "HTTP_COOKIE"}}))
        .expect("HTTP_COOKIE");
    f.pool(json!({"protocol": "HTTP", "session_persistence": {"type": "SOURCE_IP"}}))
        .expect("SOURCE_IP on HTTP");
    for (sp, text) in [
        (json!({"type": "APP_COOKIE"}), "Field \"cookie_name\" must be specified when using the \"APP_COOKIE\" session persistence type."),
        (json!({"type": "HTTP_COOKIE", "cookie_name": "c"}), "Field \"cookie_name\" can only be specified with session persistence of type \"APP_COOKIE\"."),
        (json!({"type": "SOURCE_IP", "cookie_name": "c"}), "can only be specified"),
        (json!({"type": "APP_COOKIE", "cookie_name": "a b"}), "Supplied \"cookie_name\" is invalid."),
        (json!({"type": "APP_COOKIE", "cookie_name": "a;b"}), "is invalid"),
        (json!({"type": "APP_COOKIE", "cookie_name": "a=b"}), "is invalid"),
        (json!({"type": "APP_COOKIE", "cookie_name": "é@"}), "is invalid"),
        (json!({"type": "APP_COOKIE", "cookie_name": "c", "persistence_timeout": 10}), "only for UDP and SCTP"),
        (json!({"type": "HTTP_COOKIE", "persistence_granularity": "255.255.255.0"}), "only for UDP and SCTP"),
        (json!({"type": "NONE"}), "must be one of"),
    ] {
        refused(f.pool(json!({"protocol": "HTTP", "session_persistence": sp})), 400, text);
    }
    refused(
        f.pool(json!({"protocol": "HTTPS", "session_persistence": {"type": "HTTP_COOKIE"}})),
        400,
        "not supported for HTTPS protocol pools",
    );
    // Update keeps the rules.
    refused(
        run(&f.c, |s| {
            pools::update(
                s,
                &f.a,
                &p.meta.id,
                &json!({"pool": {"session_persistence": {"type": "APP_COOKIE"}}}),
            )
        }),
        400,
        "must be specified",
    );
    let s = f.c.read();
    let r = pools::render(&s, &health::LbHealth::new(), &s.pools[&p.meta.id]);
    assert_eq!(r["session_persistence"]["cookie_name"], "JSESSIONID");
    assert_eq!(r["lb_algorithm"], "LEAST_CONNECTIONS");
    drop(s);
    // Health monitors of HTTP pools.
    let mon = |body: Value| {
        let mut b = json!({"pool_id": p.meta.id, "delay": 5, "timeout": 3, "max_retries": 3});
        for (k, v) in body.as_object().expect("object") {
            b[k] = v.clone();
        }
        run(&f.c, |s| {
            health_monitors::create(s, &f.a, &json!({ "healthmonitor": b }))
        })
    };
    for (body, status, text) in [
        (
            json!({"type": "UDP-CONNECT"}),
            400,
            "only a PING, TCP, HTTP, HTTPS health monitor",
        ),
        (json!({"type": "TLS-HELLO"}), 400, "not supported yet"),
        (
            json!({"type": "HTTP", "http_version": 2.0}),
            400,
            "Value should be one of: 1.0, 1.1",
        ),
        (
            json!({"type": "HTTP", "domain_name": "example.com"}),
            400,
            "'http_version' must be specified when 'domain_name' is provided.",
        ),
        (
            json!({"type": "HTTP", "http_version": 1.0, "domain_name": "example.com"}),
            400,
            "HTTP 1.1 domain name health check",
        ),
        (
            json!({"type": "HTTP", "http_version": 1.1, "domain_name": "-bad.com"}),
            400,
            "should match the pattern",
        ),
        (
            json!({"type": "TCP", "http_version": 1.1}),
            400,
            "for HTTP and HTTPS health monitors",
        ),
        (json!({"type": "HTTPS", "url_path": "x"}), 400, "url_path"),
    ] {
        refused(mon(body.clone()), status, text);
    }
    let m = mon(
        json!({"type": "HTTPS", "http_method": "HEAD", "url_path": "/health",
        "expected_codes": "200-204", "http_version": 1.1, "domain_name": "app.example.com"}),
    )
    .expect("HTTPS monitor");
    let r = health_monitors::render(&m);
    assert_eq!(r["http_version"], json!(1.1));
    assert_eq!(r["domain_name"], "app.example.com");
    assert_eq!(r["url_path"], "/health");
}

#[test]
fn l7_policies_validate_like_octavia() {
    let f = fixture();
    let l = f.http(80);
    let tcp = f
        .listener(json!({"protocol": "TCP", "protocol_port": 81}))
        .expect("tcp")
        .meta
        .id;
    let pool = f.pool(json!({"protocol": "HTTP"})).expect("pool").meta.id;
    let tcp_pool = f
        .pool(json!({"protocol": "TCP"}))
        .expect("tcp pool")
        .meta
        .id;
    let url = f
        .policy(json!({"listener_id": l, "action": "REDIRECT_TO_URL", "redirect_url": "https://example.com/x"}))
        .expect("redirect");
    assert_eq!(url.redirect_http_code, Some(302), "Octavia's default code");
    assert_eq!(url.position, 1);
    assert_eq!(url.provisioning_status, ProvisioningStatus::PendingCreate);
    let prefix = f
        .policy(json!({"listener_id": l, "action": "REDIRECT_PREFIX", "redirect_prefix": "https://example.com", "redirect_http_code": 308}))
        .expect("prefix");
    assert_eq!(prefix.redirect_http_code, Some(308));
    let to_pool = f
        .policy(json!({"listener_id": l, "action": "REDIRECT_TO_POOL", "redirect_pool_id": pool, "redirect_http_code": 301}))
        .expect("to pool");
    assert_eq!(
        to_pool.redirect_http_code, None,
        "dropped for REDIRECT_TO_POOL, as Octavia"
    );
    // The target implies the action (Octavia's sanitize).
    let implied = f
        .policy(
            json!({"listener_id": l, "action": "REJECT", "redirect_prefix": "http://a.example"}),
        )
        .expect("prefix wins over REJECT, as Octavia");
    assert_eq!(implied.action, L7Action::RedirectPrefix);
    let reject = f
        .policy(json!({"listener_id": l, "action": "REJECT", "redirect_url": "http://a.example", "redirect_http_code": 303}))
        .expect("REJECT drops the URL");
    assert_eq!(
        (
            reject.action,
            reject.redirect_url.clone(),
            reject.redirect_http_code
        ),
        (L7Action::Reject, None, None)
    );
    for (body, status, text) in [
        (json!({"listener_id": l}), 400, "action"),
        (json!({"action": "REJECT"}), 400, "listener_id"),
        (json!({"listener_id": l, "action": "DROP"}), 400, "should be one of"),
        (json!({"listener_id": "nope", "action": "REJECT"}), 404, "Listener nope not found."),
        (json!({"listener_id": tcp, "action": "REJECT"}), 501,
            "Provider 'strato' does not support a requested option: TCP protocol listeners do not support L7 policies"),
        (json!({"listener_id": l, "action": "REDIRECT_TO_URL"}), 400, "Invalid L7 Policy arguments: redirect_url must not be None"),
        (json!({"listener_id": l, "action": "REDIRECT_PREFIX"}), 400, "redirect_prefix must not be None"),
        (json!({"listener_id": l, "action": "REDIRECT_TO_POOL"}), 400, "redirect_pool_id or redirect_pool must not be None"),
        (json!({"listener_id": l, "action": "REDIRECT_PREFIX", "redirect_pool_id": pool, "redirect_prefix": "http://a.example"}), 400,
            "Cannot specify redirect_pool_id and redirect_url or redirect_prefix at the same time"),
        (json!({"listener_id": l, "action": "REDIRECT_TO_POOL", "redirect_pool_id": "nope"}), 404, "Pool nope not found."),
        (json!({"listener_id": l, "action": "REDIRECT_TO_POOL", "redirect_pool_id": tcp_pool}), 400,
            "The pool protocol 'TCP' is invalid while the listener protocol is 'HTTP'."),
        (json!({"listener_id": l, "action": "REDIRECT_TO_URL", "redirect_url": "example.com"}), 400, "Value must be a valid URL string"),
        (json!({"listener_id": l, "action": "REDIRECT_TO_URL", "redirect_url": "ftp://example.com"}), 400, "valid URL"),
        (json!({"listener_id": l, "action": "REDIRECT_TO_URL", "redirect_url": "http://example.com/\r\nSet-Cookie: a=b"}), 400, "valid URL"),
        (json!({"listener_id": l, "action": "REDIRECT_TO_URL", "redirect_url": "http://example.com/a b"}), 400, "valid URL"),
        (json!({"listener_id": l, "action": "REDIRECT_PREFIX", "redirect_prefix": "http://exa mple.com"}), 400, "valid URL"),
        (json!({"listener_id": l, "action": "REDIRECT_TO_URL", "redirect_url": "http://a.example", "redirect_http_code": 304}), 400,
            "Value should be one of: 301, 302, 303, 307, 308"),
        (json!({"listener_id": l, "action": "REJECT", "position": 0}), 400, "range"),
        (json!({"listener_id": l, "action": "REJECT", "tags": ["x".repeat(256)]}), 400, "maximum"),
        (json!({"listener_id": l, "action": "REJECT", "colour": 1}), 400, "colour"),
        (json!({"listener_id": l, "action": "REJECT", "rules": [{"type": "PATH", "compare_type": "REGEX", "value": "("}]}), 400,
            "Unable to parse regular expression"),
    ] {
        refused(f.policy(body.clone()), status, text);
    }
    // Another project sees no listener.
    refused(
        run(&f.c, |s| {
            l7policies::create(
                s,
                &member_of("p2"),
                &json!({"l7policy": {"listener_id": l, "action": "REJECT"}}),
            )
        }),
        404,
        "not found",
    );
    refused(
        f.update_policy("nope", json!({"name": "x"})),
        404,
        "L7 Policy nope not found.",
    );
    // Updates: the action follows the targets; clearing as Octavia.
    let u = f
        .update_policy(&url.meta.id, json!({"redirect_pool_id": pool}))
        .expect("to pool");
    assert_eq!(
        (u.action, u.redirect_url.clone(), u.redirect_http_code),
        (L7Action::RedirectToPool, None, None)
    );
    let u = f
        .update_policy(&u.meta.id, json!({"action": "REJECT"}))
        .expect("reject");
    assert_eq!(
        (u.action, u.redirect_pool_id.clone()),
        (L7Action::Reject, None)
    );
    let u = f
        .update_policy(&u.meta.id, json!({"action": "REDIRECT_TO_URL", "redirect_url": "https://b.example/", "redirect_http_code": 307}))
        .expect("url");
    assert_eq!(
        (u.action, u.redirect_http_code),
        (L7Action::RedirectToUrl, Some(307))
    );
    refused(
        f.update_policy(&u.meta.id, json!({"action": "REDIRECT_TO_POOL"})),
        400,
        "must not be None",
    );
    refused(
        f.update_policy(&u.meta.id, json!({"redirect_url": null})),
        400,
        "redirect_url must not be None",
    );
    refused(
        f.update_policy(&u.meta.id, json!({"listener_id": tcp})),
        400,
        "read-only",
    );
    refused(
        f.update_policy(&u.meta.id, json!({"rules": []})),
        400,
        "read-only",
    );
    refused(
        f.update_policy(&u.meta.id, json!({"redirect_pool_id": tcp_pool})),
        400,
        "is invalid while",
    );
    // The pool a policy redirects to stays while it does.
    refused(
        run(&f.c, |s| pools::delete(s, &f.a, &pool)),
        409,
        &format!("Pool {pool} is in use by L7 policy {}", to_pool.meta.id),
    );
    // Rendering, and the listener's references in position order.
    let s = f.c.read();
    let r = l7policies::render(&s, &s.l7policies[&prefix.meta.id]);
    assert_eq!(r["action"], "REDIRECT_PREFIX");
    assert_eq!(r["redirect_http_code"], 308);
    assert_eq!(r["operating_status"], "ONLINE");
    assert_eq!(r["rules"], json!([]));
    assert_eq!(r["listener_id"], l.as_str());
    let lr = listeners::render(&s, &health::LbHealth::new(), &s.listeners[&l]);
    let ids: Vec<&str> = listener_policies(&s, &l)
        .iter()
        .map(|p| p.meta.id.as_str())
        .collect();
    assert_eq!(lr["l7policies"], id_refs(ids));
}

#[test]
fn policy_positions_renumber_as_octavia() {
    let f = fixture();
    let l = f.http(80);
    let a = f.reject(&l, "a", None);
    f.reject(&l, "b", None);
    f.reject(&l, "c", Some(1));
    assert_eq!(
        f.order(&l),
        [("c".into(), 1), ("a".into(), 2), ("b".into(), 3)]
    );
    f.reject(&l, "d", Some(2));
    assert_eq!(
        f.order(&l),
        [
            ("c".into(), 1),
            ("d".into(), 2),
            ("a".into(), 3),
            ("b".into(), 4)
        ]
    );
    // Past the end: last.
    f.reject(&l, "e", Some(99));
    assert_eq!(f.order(&l).last(), Some(&("e".into(), 5)));
    // Moving one shifts the others.
    f.update_policy(&a, json!({"position": 1}))
        .expect("move a first");
    assert_eq!(
        f.order(&l),
        [
            ("a".into(), 1),
            ("c".into(), 2),
            ("d".into(), 3),
            ("b".into(), 4),
            ("e".into(), 5)
        ]
    );
    f.update_policy(&a, json!({"position": 1000}))
        .expect("move a last");
    assert_eq!(
        f.order(&l),
        [
            ("c".into(), 1),
            ("d".into(), 2),
            ("b".into(), 3),
            ("e".into(), 4),
            ("a".into(), 5)
        ]
    );
    // Deleting closes the gap.
    let d =
        f.c.read()
            .l7policies
            .values()
            .find(|p| p.meta.name == "d")
            .expect("d")
            .meta
            .id
            .clone();
    run(&f.c, |s| l7policies::delete(s, &f.a, &d)).expect("delete");
    assert_eq!(
        f.order(&l),
        [
            ("c".into(), 1),
            ("b".into(), 2),
            ("e".into(), 3),
            ("a".into(), 4)
        ]
    );
    // Policies of another listener are numbered apart.
    let l2 = f.http(81);
    f.reject(&l2, "x", Some(3));
    assert_eq!(f.order(&l2), [("x".into(), 1)]);
}

#[test]
fn l7_rules_validate_like_octavia() {
    let f = fixture();
    let l = f.http(80);
    let p = f.reject(&l, "p", None);
    let r = f
        .rule(&p, json!({"type": "HEADER", "compare_type": "EQUAL_TO", "key": "X-Env", "value": "staging"}))
        .expect("header rule");
    assert!(!r.invert);
    for body in [
        json!({"type": "HOST_NAME", "compare_type": "ENDS_WITH", "value": ".example.com"}),
        json!({"type": "PATH", "compare_type": "STARTS_WITH", "value": "/api"}),
        json!({"type": "PATH", "compare_type": "REGEX", "value": "^/v[0-9]+/"}),
        json!({"type": "FILE_TYPE", "compare_type": "EQUAL_TO", "value": "jpg"}),
        json!({"type": "FILE_TYPE", "compare_type": "REGEX", "value": "jpe?g"}),
        json!({"type": "COOKIE", "compare_type": "CONTAINS", "key": "session", "value": "a,b"}),
        json!({"type": "HEADER", "compare_type": "EQUAL_TO", "key": "X-Q", "value": "\"a quoted value\""}),
        // A key on other types is accepted and ignored, as Octavia.
        json!({"type": "PATH", "compare_type": "CONTAINS", "key": "ignored", "value": "x", "invert": true}),
    ] {
        f.rule(&p, body.clone())
            .unwrap_or_else(|e| panic!("{body}: {e}"));
    }
    for (body, status, text) in [
        (
            json!({"type": "HEADER", "compare_type": "EQUAL_TO", "value": "v"}),
            400,
            "Error parsing L7Rule: Invalid L7 Rule: L7 rule type requires a key",
        ),
        (
            json!({"type": "COOKIE", "compare_type": "EQUAL_TO", "key": "", "value": "v"}),
            400,
            "requires a key",
        ),
        (
            json!({"type": "HEADER", "compare_type": "EQUAL_TO", "key": "X Env", "value": "v"}),
            400,
            "Error parsing L7Rule: Invalid characters in key",
        ),
        (
            json!({"type": "COOKIE", "compare_type": "EQUAL_TO", "key": "a:b", "value": "v"}),
            400,
            "Invalid characters in key",
        ),
        (
            json!({"type": "HEADER", "compare_type": "EQUAL_TO", "key": "X", "value": "two words"}),
            400,
            "Invalid characters in header value",
        ),
        (
            json!({"type": "COOKIE", "compare_type": "EQUAL_TO", "key": "c", "value": "a;b"}),
            400,
            "Invalid characters in cookie value",
        ),
        (
            json!({"type": "PATH", "compare_type": "EQUAL_TO", "value": "/a b"}),
            400,
            "Invalid characters in comparison value",
        ),
        (
            json!({"type": "HOST_NAME", "compare_type": "EQUAL_TO", "value": "é.example"}),
            400,
            "comparison value",
        ),
        (
            json!({"type": "FILE_TYPE", "compare_type": "STARTS_WITH", "value": "jp"}),
            400,
            "Invalid L7 Rule: invalid comparison type for rule type",
        ),
        (
            json!({"type": "FILE_TYPE", "compare_type": "CONTAINS", "value": "jp"}),
            400,
            "invalid comparison type",
        ),
        (
            json!({"type": "PATH", "compare_type": "REGEX", "value": "(unclosed"}),
            400,
            "Error parsing L7Rule: Unable to parse regular expression:",
        ),
        // Valid in Python's re, not in Rust's regex (look-ahead).
        (
            json!({"type": "PATH", "compare_type": "REGEX", "value": "^/(?!admin)"}),
            400,
            "Unable to parse regular expression",
        ),
        (
            json!({"type": "HEADER", "compare_type": "REGEX", "key": "X", "value": "a{2,1}"}),
            400,
            "Unable to parse",
        ),
        (
            json!({"type": "PATH", "compare_type": "EQUAL_TO", "value": "/a\r\nX-Injected: 1"}),
            400,
            "Value should match the pattern ^[^\\r\\n]*$",
        ),
        (
            json!({"type": "HEADER", "compare_type": "EQUAL_TO", "key": "X\nY", "value": "v"}),
            400,
            "pattern",
        ),
        (
            json!({"type": "PATH", "compare_type": "EQUAL_TO", "value": "x".repeat(256)}),
            400,
            "maximum length",
        ),
        (
            json!({"type": "SSL_CONN_HAS_CERT", "compare_type": "EQUAL_TO", "value": "True"}),
            400,
            "L7 rule type SSL_CONN_HAS_CERT is not supported",
        ),
        (
            json!({"type": "SSL_DN_FIELD", "compare_type": "EQUAL_TO", "key": "CN", "value": "x"}),
            400,
            "not supported",
        ),
        (
            json!({"type": "SSL_VERIFY_RESULT", "compare_type": "EQUAL_TO", "value": "0"}),
            400,
            "not supported",
        ),
        (
            json!({"type": "QUERY", "compare_type": "EQUAL_TO", "value": "x"}),
            400,
            "should be one of",
        ),
        (
            json!({"type": "PATH", "compare_type": "LIKE", "value": "x"}),
            400,
            "should be one of",
        ),
        (json!({"type": "PATH", "value": "x"}), 400, "compare_type"),
        (
            json!({"type": "PATH", "compare_type": "EQUAL_TO"}),
            400,
            "value",
        ),
        (
            json!({"type": "PATH", "compare_type": "EQUAL_TO", "value": "x", "invert": "perhaps"}),
            400,
            "boolean",
        ),
        (
            json!({"type": "PATH", "compare_type": "EQUAL_TO", "value": "x", "project_id": "p2"}),
            400,
            "project",
        ),
    ] {
        refused(f.rule(&p, body.clone()), status, text);
    }
    refused(
        f.rule(
            "nope",
            json!({"type": "PATH", "compare_type": "EQUAL_TO", "value": "x"}),
        ),
        404,
        "L7Policy nope not found.",
    );
    // Updates merge, then validate the whole rule (Octavia).
    refused(
        f.update_rule(&p, &r.meta.id, json!({"key": null})),
        400,
        "requires a key",
    );
    refused(
        f.update_rule(
            &p,
            &r.meta.id,
            json!({"type": "FILE_TYPE", "compare_type": "ENDS_WITH"}),
        ),
        400,
        "invalid comparison type",
    );
    refused(
        f.update_rule(&p, &r.meta.id, json!({"value": "a\nb"})),
        400,
        "pattern",
    );
    refused(
        f.update_rule(&p, &r.meta.id, json!({"l7policy_id": p})),
        400,
        "read-only",
    );
    let u = f
        .update_rule(&p, &r.meta.id, json!({"compare_type": "REGEX", "value": "^stag", "invert": null, "admin_state_up": false}))
        .expect("update");
    assert_eq!((u.invert, u.admin_state_up), (false, false));
    let rendered = l7rules::render(&u);
    assert_eq!(rendered["operating_status"], "OFFLINE");
    assert_eq!(rendered["key"], "X-Env");
    assert!(rendered.get("name").is_none());
    refused(
        f.update_rule(&p, "nope", json!({"invert": true})),
        404,
        "L7 Rule nope not found.",
    );
    // A rule of another policy is not found under this one.
    let p2 = f.reject(&l, "p2", None);
    refused(
        f.update_rule(&p2, &r.meta.id, json!({"invert": true})),
        404,
        "not found",
    );
    // At most 50 rules per policy (409, as Octavia).
    let many = f.reject(&l, "many", None);
    for i in 0..l7rules::MAX_PER_POLICY {
        f.rule(
            &many,
            json!({"type": "PATH", "compare_type": "EQUAL_TO", "value": format!("/{i}")}),
        )
        .expect("rule");
    }
    refused(
        f.rule(
            &many,
            json!({"type": "PATH", "compare_type": "EQUAL_TO", "value": "/x"}),
        ),
        409,
        &format!("Too many rules on L7 policy {many}"),
    );
}

#[test]
fn deletes_take_policies_and_rules_along() {
    let f = fixture();
    let l = f.http(80);
    let keep = f.http(81);
    let pool = f.pool(json!({"protocol": "HTTP"})).expect("pool").meta.id;
    let p = f
        .policy(
            json!({"listener_id": l, "action": "REDIRECT_TO_POOL", "redirect_pool_id": pool,
            "rules": [{"type": "PATH", "compare_type": "STARTS_WITH", "value": "/a"},
                      {"type": "HOST_NAME", "compare_type": "EQUAL_TO", "value": "a.example"}]}),
        )
        .expect("policy with inline rules");
    let q = f.reject(&keep, "q", None);
    f.rule(
        &q,
        json!({"type": "PATH", "compare_type": "EQUAL_TO", "value": "/q"}),
    )
    .expect("rule");
    assert_eq!(f.c.read().l7rules.len(), 3);
    assert_eq!(
        f.c.read()
            .l7rules
            .values()
            .filter(|r| r.l7policy_id == p.meta.id)
            .count(),
        2
    );
    // Deleting the listener takes its policies and their rules, not the pool.
    run(&f.c, |s| listeners::delete(s, &f.a, &l)).expect("listener delete");
    {
        let s = f.c.read();
        assert!(!s.l7policies.contains_key(&p.meta.id));
        assert_eq!(s.l7rules.len(), 1);
        assert!(s.pools.contains_key(&pool));
    }
    // Now the pool may go.
    run(&f.c, |s| pools::delete(s, &f.a, &pool)).expect("pool delete");
    // A policy delete takes its rules.
    let r = f.reject(&keep, "r", None);
    f.rule(
        &r,
        json!({"type": "PATH", "compare_type": "EQUAL_TO", "value": "/r"}),
    )
    .expect("rule");
    run(&f.c, |s| l7policies::delete(s, &f.a, &r)).expect("policy delete");
    assert_eq!(f.c.read().l7rules.len(), 1);
    // Cascade delete of the load balancer takes everything.
    run(&f.c, |s| load_balancers::delete(s, &f.a, &f.lb, true)).expect("cascade");
    let s = f.c.read();
    assert!(s.l7policies.is_empty() && s.l7rules.is_empty() && s.listeners.is_empty());
}

#[test]
fn l7_quotas_and_provisioning() {
    let f = fixture();
    let l = f.http(80);
    {
        let s = f.c.read();
        let q = quotas::render(&s.quota("p1"));
        assert_eq!(
            (q["l7policy"].clone(), q["l7rule"].clone()),
            (json!(50), json!(500))
        );
    }
    let admin = crate::network::testkit::auth("p1", "admin");
    run(&f.c, |s| {
        quotas::update(
            s,
            &admin,
            "p1",
            &json!({"quota": {"l7policy": 1, "l7rule": 2}}),
        )
    })
    .expect("set quotas");
    let p = f.reject(&l, "one", None);
    refused(
        f.policy(json!({"listener_id": l, "action": "REJECT"})),
        403,
        "Quota has been met for resources: L7 Policy",
    );
    for v in ["/a", "/b"] {
        f.rule(
            &p,
            json!({"type": "PATH", "compare_type": "EQUAL_TO", "value": v}),
        )
        .expect("rule");
    }
    refused(
        f.rule(
            &p,
            json!({"type": "PATH", "compare_type": "EQUAL_TO", "value": "/c"}),
        ),
        403,
        "Quota has been met for resources: L7 Rule",
    );
    refused(
        run(&f.c, |s| {
            quotas::update(s, &admin, "p1", &json!({"quota": {"l7rule": -2}}))
        }),
        400,
        "range",
    );
    // PENDING_* until the agents programmed it, then ACTIVE, with the LB.
    let s = f.c.read();
    let pending = pending_ids(&s);
    assert!(pending.contains(&p));
    let rule = s.l7rules.values().next().expect("rule").meta.id.clone();
    assert!(pending.contains(&rule));
    drop(s);
    f.c.mutate(|s| Ok((mark_active(s, pending.iter().map(String::as_str)), ())))
        .expect("mark active");
    let s = f.c.read();
    assert_eq!(
        s.l7policies[&p].provisioning_status,
        ProvisioningStatus::Active
    );
    assert_eq!(
        s.l7rules[&rule].provisioning_status,
        ProvisioningStatus::Active
    );
    assert_eq!(
        s.load_balancers[&f.lb].provisioning_status,
        ProvisioningStatus::Active
    );
    drop(s);
    f.update_rule(&p, &rule, json!({"invert": true}))
        .expect("update");
    let s = f.c.read();
    assert_eq!(
        s.l7rules[&rule].provisioning_status,
        ProvisioningStatus::PendingUpdate
    );
    assert_eq!(
        s.load_balancers[&f.lb].provisioning_status,
        ProvisioningStatus::PendingUpdate
    );
    // Stored like every other kind (the store round-trips them).
    let _: &Quota = &s.quota("p1");
    assert_eq!(Kind::parse("l7policy"), Some(Kind::L7Policy));
}

#[test]
fn l7_config_compiles_listeners_policies_pools_and_tls() {
    let f = fixture();
    assert_eq!(
        l7config::l7_config(&f.c.read(), &f.lb, &|p, r| f.certs(p, r)).expect("ok"),
        None,
        "no L7 listener"
    );
    f.listener(json!({"protocol": "TCP", "protocol_port": 22}))
        .expect("tcp");
    assert_eq!(
        l7config::l7_config(&f.c.read(), &f.lb, &|p, r| f.certs(p, r)).expect("ok"),
        None,
        "L4 only"
    );
    let web = f
        .pool(
            json!({"protocol": "HTTP", "lb_algorithm": "LEAST_CONNECTIONS",
        "session_persistence": {"type": "APP_COOKIE", "cookie_name": "SID"}}),
        )
        .expect("web")
        .meta
        .id;
    let api = f
        .pool(json!({"protocol": "HTTP", "session_persistence": {"type": "HTTP_COOKIE"}}))
        .expect("api")
        .meta
        .id;
    let off = f
        .pool(json!({"protocol": "HTTP", "admin_state_up": false}))
        .expect("off")
        .meta
        .id;
    let unused = f.pool(json!({"protocol": "HTTP"})).expect("unused").meta.id;
    let member = |pool: &str, address: &str, extra: Value| {
        let mut b = json!({"address": address, "protocol_port": 8080});
        for (k, v) in extra.as_object().expect("object") {
            b[k] = v.clone();
        }
        run(&f.c, |s| {
            members::create(s, &f.a, pool, &json!({ "member": b }))
        })
        .expect("member")
    };
    let m1 = member(&web, "10.0.1.11", json!({"weight": 3}));
    let m2 = member(&web, "10.0.1.12", json!({"admin_state_up": false}));
    let m3 = member(&web, "10.0.1.13", json!({"backup": true}));
    member(&api, "10.0.1.21", json!({}));
    // m3 fails its checks: down only while the pool has a monitor.
    f.c.mutate(|s| {
        let mut m = s.members[&m3.meta.id].clone();
        m.health_down = true;
        Ok((
            vec![crate::model::Change::Put(crate::model::Object::Member(m))],
            (),
        ))
    })
    .expect("health");
    run(&f.c, |s| {
        health_monitors::create(
            s,
            &f.a,
            &json!({"healthmonitor":
        {"pool_id": web, "type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 2}}),
        )
    })
    .expect("monitor");
    let http = f
        .listener(json!({"protocol": "HTTP", "protocol_port": 80, "default_pool_id": web, "connection_limit": 1000,
            "timeout_client_data": 10000, "insert_headers": {"X-Forwarded-For": "TRUE", "X-Forwarded-Port": "false"},
            "allowed_cidrs": ["10.0.0.0/8"]}))
        .expect("http")
        .meta
        .id;
    let tls = f
        .listener(json!({"protocol": "TERMINATED_HTTPS", "protocol_port": 443, "default_tls_container_ref": f.r("c1"),
            "sni_container_refs": [f.r("c2"), f.r("c3")], "tls_versions": ["TLSv1.3"], "alpn_protocols": ["http/1.1"],
            "default_pool_id": off}))
        .expect("tls")
        .meta
        .id;
    f.listener(json!({"protocol": "HTTP", "protocol_port": 8080, "admin_state_up": false}))
        .expect("disabled listener");
    // Policies: p2 (position 1) to api, p1 redirect, a disabled one, one without enabled rules, one to a disabled pool.
    let p1 = f.policy(json!({"listener_id": http, "action": "REDIRECT_PREFIX", "redirect_prefix": "https://secure.example"})).expect("p1").meta.id;
    let p2 = f.policy(json!({"listener_id": http, "action": "REDIRECT_TO_POOL", "redirect_pool_id": api, "position": 1})).expect("p2").meta.id;
    let disabled = f
        .policy(json!({"listener_id": http, "action": "REJECT", "admin_state_up": false}))
        .expect("disabled")
        .meta
        .id;
    let ruleless = f
        .policy(json!({"listener_id": http, "action": "REJECT"}))
        .expect("ruleless")
        .meta
        .id;
    let to_off = f
        .policy(json!({"listener_id": http, "action": "REDIRECT_TO_POOL", "redirect_pool_id": off}))
        .expect("to off")
        .meta
        .id;
    let r1 = f
        .rule(
            &p2,
            json!({"type": "PATH", "compare_type": "STARTS_WITH", "value": "/api"}),
        )
        .expect("r1")
        .meta
        .id;
    let r2 = f.rule(&p2, json!({"type": "HEADER", "compare_type": "EQUAL_TO", "key": "X-V", "value": "2", "invert": true})).expect("r2").meta.id;
    f.rule(&p2, json!({"type": "PATH", "compare_type": "EQUAL_TO", "value": "/off", "admin_state_up": false})).expect("disabled rule");
    f.rule(&p1, json!({"type": "HOST_NAME", "compare_type": "EQUAL_TO", "key": "dropped", "value": "old.example"})).expect("p1 rule");
    f.rule(
        &ruleless,
        json!({"type": "PATH", "compare_type": "EQUAL_TO", "value": "/x", "admin_state_up": false}),
    )
    .expect("disabled");
    for p in [&disabled, &to_off] {
        f.rule(
            p,
            json!({"type": "PATH", "compare_type": "EQUAL_TO", "value": "/y"}),
        )
        .expect("rule");
    }
    let c = l7config::l7_config(&f.c.read(), &f.lb, &|p, r| f.certs(p, r))
        .expect("compiles")
        .expect("an L7 config");
    assert_eq!(
        (
            c.loadbalancer_id.as_str(),
            c.instance_id.as_str(),
            c.address.as_str()
        ),
        (f.lb.as_str(), "", "")
    );
    let ids: Vec<&str> = c.listeners.iter().map(|l| l.id.as_str()).collect();
    let mut want = vec![http.as_str(), tls.as_str()];
    want.sort();
    assert_eq!(
        ids, want,
        "enabled HTTP and TERMINATED_HTTPS listeners, by id"
    );
    let h = c.listeners.iter().find(|l| l.id == http).expect("http");
    assert_eq!(
        (h.protocol.as_str(), h.protocol_port, h.connection_limit),
        ("HTTP", 80, 1000)
    );
    assert_eq!(
        (
            h.timeout_client_data_ms,
            h.timeout_member_connect_ms,
            h.timeout_member_data_ms
        ),
        (10_000, 5_000, 50_000)
    );
    assert!(
        h.insert_headers.x_forwarded_for
            && !h.insert_headers.x_forwarded_port
            && !h.insert_headers.x_forwarded_proto
    );
    assert_eq!(h.allowed_cidrs, ["10.0.0.0/8"]);
    assert_eq!(h.tls, None);
    assert_eq!(h.default_pool_id.as_deref(), Some(web.as_str()));
    let pol: Vec<(&str, u32)> = h
        .policies
        .iter()
        .map(|p| (p.id.as_str(), p.position))
        .collect();
    assert_eq!(
        pol,
        [(p2.as_str(), 1), (p1.as_str(), 2)],
        "enabled, with enabled rules, by position"
    );
    let first = &h.policies[0];
    assert_eq!(
        (first.action.as_str(), first.redirect_pool_id.as_deref()),
        ("REDIRECT_TO_POOL", Some(api.as_str()))
    );
    let mut want_rules = vec![r1.as_str(), r2.as_str()];
    want_rules.sort();
    assert_eq!(
        first
            .rules
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        want_rules
    );
    let header = first.rules.iter().find(|r| r.id == r2).expect("r2");
    assert_eq!(
        (header.kind.as_str(), header.key.as_deref(), header.invert),
        ("HEADER", Some("X-V"), true)
    );
    let second = &h.policies[1];
    assert_eq!(
        (
            second.redirect_prefix.as_deref(),
            second.redirect_http_code,
            second.rules[0].key.as_deref()
        ),
        (Some("https://secure.example"), Some(302), None),
        "a key only for HEADER and COOKIE"
    );
    let t = c.listeners.iter().find(|l| l.id == tls).expect("tls");
    let tls_cfg = t.tls.as_ref().expect("TLS");
    assert_eq!(tls_cfg.default_certificate.reference, "c1");
    assert_eq!(tls_cfg.default_certificate.key_pem, "KEY c1");
    assert_eq!(
        tls_cfg
            .sni_certificates
            .iter()
            .map(|c| c.reference.as_str())
            .collect::<Vec<_>>(),
        ["c2", "c3"]
    );
    assert_eq!(
        (tls_cfg.versions.clone(), tls_cfg.alpn_protocols.clone()),
        (vec!["TLSv1.3".to_owned()], vec!["http/1.1".to_owned()])
    );
    assert_eq!(t.default_pool_id, None, "a disabled default pool: 503");
    // Pools: the default and redirect pools in use, by id, with members and states.
    let pids: Vec<&str> = c.pools.iter().map(|p| p.id.as_str()).collect();
    let mut want = vec![web.as_str(), api.as_str()];
    want.sort();
    assert_eq!(pids, want, "not {off} (disabled) nor {unused} (unused)");
    let w = c.pools.iter().find(|p| p.id == web).expect("web");
    assert_eq!(w.lb_algorithm, "LEAST_CONNECTIONS");
    let sp = w.session_persistence.as_ref().expect("persistence");
    assert_eq!(
        (sp.kind.as_str(), sp.cookie_name.as_deref(), sp.timeout_s),
        ("APP_COOKIE", Some("SID"), 360)
    );
    let states: Vec<(&str, &str, u16, bool)> = w
        .members
        .iter()
        .map(|m| (m.address.as_str(), m.state.as_str(), m.weight, m.backup))
        .collect();
    let mut want = vec![
        (m1.address.as_str(), "active", 3, false),
        (m2.address.as_str(), "draining", 1, false),
        (m3.address.as_str(), "down", 1, true),
    ];
    want.sort_by_key(|(a, ..)| {
        [&m1, &m2, &m3]
            .iter()
            .find(|m| m.address == *a)
            .map(|m| m.meta.id.clone())
    });
    assert_eq!(states, want);
    let a = c.pools.iter().find(|p| p.id == api).expect("api");
    assert_eq!(
        a.session_persistence
            .as_ref()
            .map(|s| (s.kind.as_str(), s.cookie_name.clone())),
        Some(("HTTP_COOKIE", None))
    );
    // Only SNI certificates: the first serves by default too.
    let sni = f
        .listener(json!({"protocol": "TERMINATED_HTTPS", "protocol_port": 8443, "sni_container_refs": [f.r("c2"), f.r("c3")]}))
        .expect("sni only")
        .meta
        .id;
    let c = l7config::l7_config(&f.c.read(), &f.lb, &|p, r| f.certs(p, r))
        .expect("compiles")
        .expect("config");
    let s = c
        .listeners
        .iter()
        .find(|l| l.id == sni)
        .and_then(|l| l.tls.clone())
        .expect("tls");
    assert_eq!(s.default_certificate.reference, "c2");
    assert_eq!(s.sni_certificates.len(), 2);
    // A certificate that does not resolve fails the compilation.
    // (A reference that resolves when the listener is made, but not when
    // it is compiled: its container deleted since.)
    let gone = crate::keymanager::test_certificate(&f.c, "p1", "gone.test");
    f.listener(json!({"protocol": "TERMINATED_HTTPS", "protocol_port": 9443, "default_tls_container_ref": gone}))
        .expect("resolves when made");
    let e =
        l7config::l7_config(&f.c.read(), &f.lb, &|p, r| f.certs(p, r)).expect_err("unresolvable");
    assert!(e.message.contains(&gone), "{e}");
    // A load balancer that is down serves nothing; one that is gone has no config.
    run(&f.c, |s| {
        load_balancers::update(
            s,
            &f.a,
            &f.lb,
            &json!({"loadbalancer": {"admin_state_up": false}}),
        )
    })
    .expect("down");
    let c = l7config::l7_config(&f.c.read(), &f.lb, &|p, r| f.certs(p, r))
        .expect("compiles")
        .expect("config");
    assert!(c.listeners.is_empty() && c.pools.is_empty());
    assert_eq!(
        l7config::l7_config(&f.c.read(), "nope", &|p, r| f.certs(p, r)).expect("ok"),
        None
    );
    let _: Option<&LoadBalancer> = None;
}

#[test]
fn stored_objects_round_trip_and_old_listeners_load() {
    let f = fixture();
    let l = f
        .listener(json!({"protocol": "TERMINATED_HTTPS", "protocol_port": 443, "default_tls_container_ref": f.r("c1"),
            "insert_headers": {"X-Forwarded-For": "true"}, "allowed_cidrs": ["10.0.0.0/8"]}))
        .expect("listener");
    let p = f.reject(&l.meta.id, "p", None);
    let r = f
        .rule(
            &p,
            json!({"type": "COOKIE", "compare_type": "EQUAL_TO", "key": "k", "value": "v"}),
        )
        .expect("rule");
    let s = f.c.read();
    for o in [
        crate::model::Object::Listener(s.listeners[&l.meta.id].clone()),
        crate::model::Object::L7Policy(s.l7policies[&p].clone()),
        crate::model::Object::L7Rule(s.l7rules[&r.meta.id].clone()),
    ] {
        let text = serde_json::to_string(&o).expect("serialize");
        let back: crate::model::Object = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(back, o);
    }
    // A listener stored before L7 (no L7 fields) loads with empty ones.
    let mut old = serde_json::to_value(crate::model::Object::Listener(
        s.listeners[&l.meta.id].clone(),
    ))
    .expect("value");
    for k in [
        "insert_headers",
        "default_tls_container_ref",
        "sni_container_refs",
        "tls_versions",
        "alpn_protocols",
        "allowed_cidrs",
    ] {
        old["Listener"]
            .as_object_mut()
            .expect("object")
            .remove(k)
            .expect("stored flat");
    }
    let back: crate::model::Object = serde_json::from_value(old).expect("old listener");
    let crate::model::Object::Listener(back) = back else {
        panic!("a listener")
    };
    assert_eq!(back.l7, crate::model::ListenerL7::default());
    // Deletes apply to the new tables.
    let mut copy = s.clone();
    copy.apply(&crate::model::Change::Delete(
        Kind::L7Rule,
        r.meta.id.clone(),
    ));
    copy.apply(&crate::model::Change::Delete(Kind::L7Policy, p.clone()));
    assert!(copy.l7rules.is_empty() && copy.l7policies.is_empty());
}
