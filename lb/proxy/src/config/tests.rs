//! Policy matching and configuration validation. Bad inputs tried: unknown
//! protocol, action, rule type, compare type, algorithm, persistence type
//! and member state; a bad regex; a redirect code of 200; a policy or
//! listener naming a missing pool; a HEADER rule without key; a bad CIDR;
//! port 0; a negative connection limit other than -1; duplicate ids and
//! ports; TLS on an HTTP listener and none on TERMINATED_HTTPS; a member
//! address that is not an IP; malformed JSON and unknown fields.

use super::*;
use strato_proto::l7::{L7Member, L7Policy};

fn rule(kind: &str, cmp: &str, key: Option<&str>, value: &str, invert: bool) -> L7Rule {
    L7Rule {
        id: format!("r-{kind}-{value}"),
        kind: kind.into(),
        compare_type: cmp.into(),
        key: key.map(Into::into),
        value: value.into(),
        invert,
    }
}

fn policy(id: &str, action: &str, rules: Vec<L7Rule>) -> L7Policy {
    L7Policy {
        id: id.into(),
        position: 0,
        action: action.into(),
        redirect_pool_id: (action == "REDIRECT_TO_POOL").then(|| "p2".into()),
        redirect_url: (action == "REDIRECT_TO_URL").then(|| "https://example.test/x".into()),
        redirect_prefix: (action == "REDIRECT_PREFIX").then(|| "https://example.test/".into()),
        redirect_http_code: None,
        rules,
    }
}

fn pool(id: &str) -> L7Pool {
    L7Pool {
        id: id.into(),
        lb_algorithm: "ROUND_ROBIN".into(),
        session_persistence: None,
        members: vec![L7Member {
            id: format!("{id}-m1"),
            address: "127.0.0.1".into(),
            protocol_port: 8080,
            weight: 1,
            backup: false,
            state: "active".into(),
        }],
    }
}

fn base(policies: Vec<L7Policy>) -> L7Config {
    L7Config {
        instance_id: "i1".into(),
        loadbalancer_id: "lb1".into(),
        address: "127.0.0.1".into(),
        listeners: vec![L7Listener {
            id: "l1".into(),
            protocol: "HTTP".into(),
            protocol_port: 8000,
            connection_limit: -1,
            timeout_client_data_ms: 50000,
            timeout_member_connect_ms: 5000,
            timeout_member_data_ms: 50000,
            default_pool_id: Some("p1".into()),
            policies,
            ..L7Listener::default()
        }],
        pools: vec![pool("p1"), pool("p2")],
    }
}

fn route_of(cfg: &L7Config, uri: &str, headers: &[(&str, &str)]) -> (Option<String>, String) {
    let c = Compiled::compile(cfg).expect("valid config");
    let l = &c.listeners["l1"];
    let uri: hyper::Uri = uri.parse().expect("uri");
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.append(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    let r = l.route(&RequestView::new(&uri, &h));
    let action = match r.action {
        Decision::Pool(p) => format!("pool {p}"),
        Decision::Reject => "reject".into(),
        Decision::Redirect { location, code } => format!("{code} {location}"),
        Decision::NoPool => "503".into(),
    };
    (r.policy.map(str::to_string), action)
}

#[test]
fn rules_route_requests() {
    // (rule, uri, headers, expected action)
    type Row<'a> = (L7Rule, &'a str, Vec<(&'a str, &'a str)>, &'a str);
    let rows: Vec<Row> = vec![
        (
            rule("HOST_NAME", "EQUAL_TO", None, "API.example.test", false),
            "/",
            vec![("host", "api.EXAMPLE.test:8000")],
            "pool p2",
        ),
        (
            rule("HOST_NAME", "EQUAL_TO", None, "api.example.test", false),
            "/",
            vec![("host", "www.example.test")],
            "pool p1",
        ),
        (
            rule("HOST_NAME", "ENDS_WITH", None, ".example.test", false),
            "/",
            vec![("host", "a.example.test")],
            "pool p2",
        ),
        (
            rule("PATH", "STARTS_WITH", None, "/api", false),
            "/api/v1?x=1",
            vec![],
            "pool p2",
        ),
        (
            rule("PATH", "STARTS_WITH", None, "/api", true),
            "/api/v1",
            vec![],
            "pool p1",
        ),
        (
            rule("PATH", "STARTS_WITH", None, "/api", true),
            "/web",
            vec![],
            "pool p2",
        ),
        (
            rule("PATH", "EQUAL_TO", None, "/a", false),
            "/a?q=/b",
            vec![],
            "pool p2",
        ),
        (
            rule("PATH", "CONTAINS", None, "mid", false),
            "/x/middle/y",
            vec![],
            "pool p2",
        ),
        (
            rule("PATH", "REGEX", None, "^/v[0-9]+/", false),
            "/v12/x",
            vec![],
            "pool p2",
        ),
        (
            rule("PATH", "REGEX", None, "v[0-9]+", false),
            "/api/v3",
            vec![],
            "pool p2",
        ),
        (
            rule("PATH", "REGEX", None, "^/v[0-9]+/", false),
            "/vx/x",
            vec![],
            "pool p1",
        ),
        (
            rule("FILE_TYPE", "EQUAL_TO", None, "jpg", false),
            "/img/a.b.jpg",
            vec![],
            "pool p2",
        ),
        (
            rule("FILE_TYPE", "EQUAL_TO", None, "jpg", false),
            "/img.jpg/a",
            vec![],
            "pool p1",
        ),
        (
            rule("FILE_TYPE", "EQUAL_TO", None, "jpg", false),
            "/a.JPG",
            vec![],
            "pool p1",
        ),
        (
            rule("HEADER", "EQUAL_TO", Some("X-Env"), "canary", false),
            "/",
            vec![("x-env", "canary")],
            "pool p2",
        ),
        (
            rule("HEADER", "EQUAL_TO", Some("X-Env"), "canary", false),
            "/",
            vec![("x-env", "Canary")],
            "pool p1",
        ),
        // A missing header matches nothing, and so its inverse matches.
        (
            rule("HEADER", "CONTAINS", Some("X-Env"), "", false),
            "/",
            vec![],
            "pool p1",
        ),
        (
            rule("HEADER", "CONTAINS", Some("X-Env"), "", true),
            "/",
            vec![],
            "pool p2",
        ),
        (
            rule("COOKIE", "EQUAL_TO", Some("beta"), "1", false),
            "/",
            vec![("cookie", "a=b; beta=1")],
            "pool p2",
        ),
        (
            rule("COOKIE", "EQUAL_TO", Some("beta"), "1", false),
            "/",
            vec![("cookie", "a=b"), ("cookie", "beta=1")],
            "pool p2",
        ),
        (
            rule("COOKIE", "EQUAL_TO", Some("beta"), "1", false),
            "/",
            vec![("cookie", "xbeta=1")],
            "pool p1",
        ),
    ];
    for (i, (r, uri, headers, want)) in rows.into_iter().enumerate() {
        let cfg = base(vec![policy("pol", "REDIRECT_TO_POOL", vec![r])]);
        let (_, got) = route_of(&cfg, uri, &headers);
        assert_eq!(got, want, "row {i}: {uri} {headers:?}");
    }
}

#[test]
fn policies_first_match_wins_and_actions() {
    let mut cfg = base(vec![
        policy(
            "deny",
            "REJECT",
            vec![rule("PATH", "STARTS_WITH", None, "/admin", false)],
        ),
        policy(
            "moved",
            "REDIRECT_PREFIX",
            vec![rule("PATH", "STARTS_WITH", None, "/old", false)],
        ),
        policy(
            "url",
            "REDIRECT_TO_URL",
            vec![rule("PATH", "STARTS_WITH", None, "/", false)],
        ),
    ]);
    cfg.listeners[0].policies[1].redirect_http_code = Some(301);
    for (i, p) in cfg.listeners[0].policies.iter_mut().enumerate() {
        p.position = i as u32 + 1;
    }
    assert_eq!(
        route_of(&cfg, "/admin/x", &[]),
        (Some("deny".into()), "reject".into())
    );
    assert_eq!(
        route_of(&cfg, "/old/a?b=c", &[]),
        (
            Some("moved".into()),
            "301 https://example.test/old/a?b=c".into()
        )
    );
    assert_eq!(
        route_of(&cfg, "/x", &[]),
        (Some("url".into()), "302 https://example.test/x".into())
    );
    // Positions, not the list order, decide.
    cfg.listeners[0].policies[2].position = 0;
    assert_eq!(route_of(&cfg, "/admin", &[]).0.as_deref(), Some("url"));
    // No policy and no default pool: 503.
    let mut none = base(vec![]);
    none.listeners[0].default_pool_id = None;
    assert_eq!(route_of(&none, "/", &[]), (None, "503".into()));
    // A policy without rules always matches.
    let always = base(vec![policy("all", "REJECT", vec![])]);
    assert_eq!(route_of(&always, "/", &[]).1, "reject");
}

#[test]
fn bad_configurations_name_their_field() {
    type Case = (&'static str, Box<dyn Fn(&mut L7Config)>);
    let cases: Vec<Case> = vec![
        (
            "listeners[0].protocol",
            Box::new(|c| c.listeners[0].protocol = "TCP".into()),
        ),
        (
            "listeners[0].protocol_port",
            Box::new(|c| c.listeners[0].protocol_port = 0),
        ),
        (
            "listeners[0].connection_limit",
            Box::new(|c| c.listeners[0].connection_limit = -2),
        ),
        (
            "listeners[0].default_pool_id",
            Box::new(|c| c.listeners[0].default_pool_id = Some("nope".into())),
        ),
        (
            "listeners[0].tls",
            Box::new(|c| c.listeners[0].protocol = "TERMINATED_HTTPS".into()),
        ),
        (
            "listeners[0].tls",
            Box::new(|c| c.listeners[0].tls = Some(Default::default())),
        ),
        (
            "listeners[0].allowed_cidrs[0]",
            Box::new(|c| c.listeners[0].allowed_cidrs = vec!["10.0.0.0/33".into()]),
        ),
        (
            "listeners[0].policies[0].action",
            Box::new(|c| c.listeners[0].policies = vec![policy("p", "DROP", vec![])]),
        ),
        (
            "listeners[0].policies[0].redirect_http_code",
            Box::new(|c| {
                let mut p = policy("p", "REDIRECT_TO_URL", vec![]);
                p.redirect_http_code = Some(200);
                c.listeners[0].policies = vec![p];
            }),
        ),
        (
            "listeners[0].policies[0].redirect_url",
            Box::new(|c| {
                let mut p = policy("p", "REDIRECT_TO_URL", vec![]);
                p.redirect_url = None;
                c.listeners[0].policies = vec![p];
            }),
        ),
        (
            "listeners[0].policies[0].redirect_pool_id",
            Box::new(|c| {
                let mut p = policy("p", "REDIRECT_TO_POOL", vec![]);
                p.redirect_pool_id = Some("nope".into());
                c.listeners[0].policies = vec![p];
            }),
        ),
        (
            "listeners[0].policies[0].rules[0].type",
            Box::new(|c| {
                c.listeners[0].policies = vec![policy(
                    "p",
                    "REJECT",
                    vec![rule("SSL_CONN_HAS_CERT", "EQUAL_TO", None, "x", false)],
                )]
            }),
        ),
        (
            "listeners[0].policies[0].rules[0].compare_type",
            Box::new(|c| {
                c.listeners[0].policies = vec![policy(
                    "p",
                    "REJECT",
                    vec![rule("PATH", "LIKE", None, "x", false)],
                )]
            }),
        ),
        (
            "listeners[0].policies[0].rules[0].value",
            Box::new(|c| {
                c.listeners[0].policies = vec![policy(
                    "p",
                    "REJECT",
                    vec![rule("PATH", "REGEX", None, "(unclosed", false)],
                )]
            }),
        ),
        (
            "listeners[0].policies[0].rules[0].key",
            Box::new(|c| {
                c.listeners[0].policies = vec![policy(
                    "p",
                    "REJECT",
                    vec![rule("HEADER", "EQUAL_TO", None, "x", false)],
                )]
            }),
        ),
        (
            "listeners[0].policies[0].rules[0].key",
            Box::new(|c| {
                c.listeners[0].policies = vec![policy(
                    "p",
                    "REJECT",
                    vec![rule("HEADER", "EQUAL_TO", Some("bad header"), "x", false)],
                )]
            }),
        ),
        (
            "listeners[1].protocol_port",
            Box::new(|c| {
                let mut l = c.listeners[0].clone();
                l.id = "l2".into();
                c.listeners.push(l);
            }),
        ),
        ("pools[1].id", Box::new(|c| c.pools[1].id = "p1".into())),
        (
            "pools[0].lb_algorithm",
            Box::new(|c| c.pools[0].lb_algorithm = "RANDOM".into()),
        ),
        (
            "pools[0].members[0].address",
            Box::new(|c| c.pools[0].members[0].address = "host.example".into()),
        ),
        (
            "pools[0].members[0].state",
            Box::new(|c| c.pools[0].members[0].state = "up".into()),
        ),
        (
            "pools[0].members[0].protocol_port",
            Box::new(|c| c.pools[0].members[0].protocol_port = 0),
        ),
        (
            "pools[0].session_persistence.type",
            Box::new(|c| {
                c.pools[0].session_persistence = Some(strato_proto::l7::L7Persistence {
                    kind: "URL".into(),
                    cookie_name: None,
                    timeout_s: 1,
                })
            }),
        ),
        (
            "pools[0].session_persistence.cookie_name",
            Box::new(|c| {
                c.pools[0].session_persistence = Some(strato_proto::l7::L7Persistence {
                    kind: "APP_COOKIE".into(),
                    cookie_name: None,
                    timeout_s: 1,
                })
            }),
        ),
        ("address", Box::new(|c| c.address = "".into())),
    ];
    for (field, mutate) in cases {
        let mut cfg = base(vec![]);
        mutate(&mut cfg);
        match Compiled::compile(&cfg) {
            Err(ConfigError::Invalid { field: f, message }) => {
                assert_eq!(f, field, "wrong field ({message})")
            }
            Err(e) => panic!("{field}: unexpected error {e}"),
            Ok(_) => panic!("{field}: accepted"),
        }
    }
    assert!(Compiled::compile(&base(vec![])).is_ok());
}

#[test]
fn malformed_json_is_refused() {
    let dir = std::env::temp_dir().join(format!("strato-l7-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("l7.json");
    for text in [
        "",
        "{",
        "[]",
        r#"{"instance_id": 1}"#,
        r#"{"instance_id":"i","loadbalancer_id":"l","address":"127.0.0.1","listeners":[],"pools":[],"extra":1}"#,
    ] {
        std::fs::write(&path, text).expect("write");
        assert!(
            matches!(Compiled::load(&path), Err(ConfigError::Parse { .. })),
            "{text:?}"
        );
    }
    assert!(matches!(
        Compiled::load(&dir.join("absent.json")),
        Err(ConfigError::Read { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cidrs_and_hosts() {
    let c = Cidr::parse("10.1.0.0/16").expect("cidr");
    assert!(c.contains("10.1.200.3".parse().expect("ip")));
    assert!(!c.contains("10.2.0.1".parse().expect("ip")));
    assert!(c.contains("::ffff:10.1.0.9".parse().expect("ip")));
    assert!(Cidr::parse("0.0.0.0/0")
        .expect("cidr")
        .contains("1.2.3.4".parse().expect("ip")));
    assert!(Cidr::parse("fd00::/8")
        .expect("cidr")
        .contains("fd12::1".parse().expect("ip")));
    assert!(Cidr::parse("127.0.0.1")
        .expect("cidr")
        .contains("127.0.0.1".parse().expect("ip")));
    for bad in ["", "10.0.0.0/", "10.0.0.0/x", "fd00::/129", "300.0.0.0/8"] {
        assert!(Cidr::parse(bad).is_none(), "{bad}");
    }
    assert_eq!(strip_port("a.test:80"), "a.test");
    assert_eq!(strip_port("[::1]:80"), "::1");
    assert_eq!(strip_port("::1"), "::1");
    assert_eq!(file_type("/a/b.tar.gz"), "gz");
    assert_eq!(file_type("/a/b"), "");
}
