//! The proxy end to end on 127.0.0.1: real members, a real instance.
//! Bad inputs tried here: a request that is not HTTP (400), a reload with
//! a malformed l7.json (refused, old configuration kept), a connection
//! over the limit, a member that refuses connections.

mod common;

use std::time::Duration;

use common::*;
use strato_l7::{inherited_listeners, Instance, Options, LISTEN_FDS_ENV};
use strato_proto::l7::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rule(kind: &str, cmp: &str, key: Option<&str>, value: &str) -> L7Rule {
    L7Rule {
        id: format!("r-{value}"),
        kind: kind.into(),
        compare_type: cmp.into(),
        key: key.map(Into::into),
        value: value.into(),
        invert: false,
    }
}

fn to_pool(id: &str, pos: u32, r: L7Rule) -> L7Policy {
    L7Policy {
        id: id.into(),
        position: pos,
        action: "REDIRECT_TO_POOL".into(),
        redirect_pool_id: Some("pb".into()),
        rules: vec![r],
        ..L7Policy::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_redirects_headers_log_and_stats() {
    let a = member("a").await;
    let b = member("b").await;
    let (p1, p2) = (free_port(), free_port());
    let mut l1 = listener("l1", p1, Some("pa"));
    l1.insert_headers = InsertHeaders {
        x_forwarded_for: true,
        x_forwarded_port: true,
        x_forwarded_proto: true,
    };
    l1.policies = vec![
        L7Policy {
            id: "deny".into(),
            position: 1,
            action: "REJECT".into(),
            rules: vec![rule("PATH", "STARTS_WITH", None, "/admin")],
            ..L7Policy::default()
        },
        L7Policy {
            id: "prefix".into(),
            position: 2,
            action: "REDIRECT_PREFIX".into(),
            redirect_prefix: Some("https://new.example.test".into()),
            redirect_http_code: Some(301),
            rules: vec![rule("PATH", "STARTS_WITH", None, "/old")],
            ..L7Policy::default()
        },
        L7Policy {
            id: "url".into(),
            position: 3,
            action: "REDIRECT_TO_URL".into(),
            redirect_url: Some("https://elsewhere.example.test/".into()),
            redirect_http_code: Some(308),
            rules: vec![rule("PATH", "EQUAL_TO", None, "/moved")],
            ..L7Policy::default()
        },
        to_pool(
            "host",
            4,
            rule("HOST_NAME", "EQUAL_TO", None, "api.example.test"),
        ),
        to_pool("path", 5, rule("PATH", "REGEX", None, "^/v[0-9]+/")),
        to_pool(
            "header",
            6,
            rule("HEADER", "EQUAL_TO", Some("X-Env"), "canary"),
        ),
        to_pool("cookie", 7, rule("COOKIE", "EQUAL_TO", Some("beta"), "1")),
        to_pool("ftype", 8, rule("FILE_TYPE", "EQUAL_TO", None, "png")),
    ];
    let l2 = listener("l2", p2, None);
    let cfg = config(
        vec![l1, l2],
        vec![
            l7pool("pa", vec![l7member("ma", a)]),
            l7pool("pb", vec![l7member("mb", b)]),
        ],
    );
    let (inst, dir) = start("routing", &cfg).await;

    type Row<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, &'a str);
    let rows: Vec<Row> = vec![
        ("/", vec![], 200, "member=a"),
        ("/", vec![("host", "API.example.test:80")], 200, "member=b"),
        ("/v2/items", vec![], 200, "member=b"),
        ("/v/items", vec![], 200, "member=a"),
        ("/", vec![("x-env", "canary")], 200, "member=b"),
        ("/", vec![("x-env", "prod")], 200, "member=a"),
        ("/", vec![("cookie", "x=y; beta=1")], 200, "member=b"),
        ("/img/logo.png", vec![], 200, "member=b"),
        ("/img/logo.jpg", vec![], 200, "member=a"),
        ("/admin/users", vec![], 403, ""),
    ];
    for (path, headers, status, want) in rows {
        let r = get(p1, path, &headers).await;
        assert_eq!(r.status, status, "{path} {headers:?}: {}", r.body);
        assert!(r.body.starts_with(want), "{path} {headers:?}: {}", r.body);
    }
    let r = get(p1, "/old/page?x=1", &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.headers["location"],
        "https://new.example.test/old/page?x=1"
    );
    let r = get(p1, "/moved", &[]).await;
    assert_eq!(r.status, 308);
    assert_eq!(r.headers["location"], "https://elsewhere.example.test/");
    // No default pool: 503.
    assert_eq!(get(p2, "/", &[]).await.status, 503);

    // X-Forwarded-*: the client's values are replaced; hop-by-hop
    // headers do not reach the member.
    let r = get(
        p1,
        "/xff",
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
        ],
    )
    .await;
    assert!(r.body.contains("xff=127.0.0.1 "), "{}", r.body);
    assert!(r.body.contains(&format!("xfport={p1} ")), "{}", r.body);
    assert!(r.body.contains("xfproto=http "), "{}", r.body);
    assert!(r.body.contains("host=www.example.test"), "{}", r.body);

    // Not HTTP at all: 400 from hyper, connection closed.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", p1))
        .await
        .expect("connect");
    s.write_all(b"\x16\x03\x01 garbage\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 400"),
        "{out:?}"
    );

    // Access log.
    inst.flush_access_log().await;
    let lines = access_lines(&dir);
    assert_eq!(lines.len(), 14, "{lines:#?}");
    let deny = lines
        .iter()
        .find(|l| l.path == "/admin/users")
        .expect("logged");
    assert_eq!((deny.status, &*deny.policy, &*deny.pool), (403, "deny", ""));
    let to_b = lines
        .iter()
        .find(|l| l.path == "/v2/items")
        .expect("logged");
    assert_eq!(
        (&*to_b.pool, &*to_b.member, &*to_b.policy, &*to_b.listener),
        ("pb", "mb", "path", "l1")
    );
    assert_eq!(
        (&*to_b.instance, &*to_b.method, &*to_b.version),
        ("inst-1", "GET", "HTTP/1.1")
    );
    assert!(to_b.client.starts_with("127.0.0.1:"));
    assert!(to_b.bytes_out > 20 && to_b.bytes_in > 20, "{to_b:?}");
    assert!(
        to_b.time.ends_with('Z') && to_b.time.len() == 24,
        "{}",
        to_b.time
    );
    assert!(to_b.response_ms >= to_b.request_ms);

    // Stats and metrics.
    let stats: L7Stats = serde_json::from_str(&control(&dir, "/stats").await).expect("stats JSON");
    let l1s = stats
        .listeners
        .iter()
        .find(|l| l.id == "l1")
        .expect("l1 stats");
    assert_eq!(l1s.requests, 13);
    assert_eq!(l1s.responses, [0, 10, 2, 1, 0]);
    assert_eq!(l1s.total_connections, 14);
    assert!(l1s.bytes_in > 0 && l1s.bytes_out > 0);
    let l2s = stats
        .listeners
        .iter()
        .find(|l| l.id == "l2")
        .expect("l2 stats");
    assert_eq!((l2s.request_errors, l2s.responses[4]), (1, 1));
    let mb = stats
        .members
        .iter()
        .find(|m| m.id == "mb")
        .expect("mb stats");
    assert_eq!(
        (mb.pool_id.as_str(), mb.total_requests, mb.active_requests),
        ("pb", 5, 0)
    );
    assert!(mb.bytes_in > 0);
    assert!(stats.cpu_us > 0);
    let metrics = control(&dir, "/metrics").await;
    for want in [
        "strato_l7_listener_requests_total{listener=\"l1\"} 13",
        "strato_l7_listener_responses_total{listener=\"l1\",class=\"4xx\"} 1",
        "strato_l7_member_requests_total{pool=\"pb\",member=\"mb\"} 5",
        "strato_l7_listener_request_duration_seconds_count{listener=\"l1\"} 13",
        "strato_l7_listener_active_connections{listener=\"l1\"}",
        "strato_l7_member_active_requests{pool=\"pa\",member=\"ma\"} 0",
    ] {
        assert!(metrics.contains(want), "{want} not in\n{metrics}");
    }
    assert!(inst.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_persistence_and_failover() {
    let a = member("a").await;
    let b = member("b").await;
    // A member that refuses connections: requests are retried on another.
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let p = free_port();
    let mut pool = l7pool("p", vec![l7member("ma", a), l7member("mb", b)]);
    pool.session_persistence = Some(L7Persistence {
        kind: "HTTP_COOKIE".into(),
        cookie_name: None,
        timeout_s: 300,
    });
    let mut app = l7pool("app", vec![l7member("ma", a), l7member("mb", b)]);
    app.session_persistence = Some(L7Persistence {
        kind: "APP_COOKIE".into(),
        cookie_name: Some("JSESSIONID".into()),
        timeout_s: 300,
    });
    let retry = l7pool("retry", vec![l7member("dead", dead), l7member("mb", b)]);
    let mut l = listener("l", p, Some("p"));
    l.policies = vec![
        L7Policy {
            id: "app".into(),
            position: 1,
            action: "REDIRECT_TO_POOL".into(),
            redirect_pool_id: Some("app".into()),
            rules: vec![rule("PATH", "STARTS_WITH", None, "/app")],
            ..L7Policy::default()
        },
        L7Policy {
            id: "retry".into(),
            position: 2,
            action: "REDIRECT_TO_POOL".into(),
            redirect_pool_id: Some("retry".into()),
            rules: vec![rule("PATH", "STARTS_WITH", None, "/retry")],
            ..L7Policy::default()
        },
    ];
    let (inst, _dir) = start("cookie", &config(vec![l], vec![pool, app, retry])).await;

    // Without the cookie: round robin, and the cookie is set.
    let first = get(p, "/", &[]).await;
    let set = first.headers["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        set.starts_with("STRATO_LB=") && set.contains("Max-Age=300"),
        "{set}"
    );
    let second = get(p, "/", &[]).await;
    assert_ne!(members_of(&[first]), members_of(&[second]));
    // With it: always the same member, no new cookie.
    let cookie = set.split(';').next().expect("cookie").to_string();
    let mut replies = Vec::new();
    for _ in 0..6 {
        let r = get(p, "/", &[("cookie", &cookie)]).await;
        assert!(!r.headers.contains_key("set-cookie"));
        replies.push(r);
    }
    assert_eq!(members_of(&replies).len(), 1, "{:?}", members_of(&replies));
    // A stale cookie: a member is chosen and the cookie set again.
    let r = get(p, "/", &[("cookie", "STRATO_LB=ffffffffffffffff")]).await;
    assert!(r.headers.contains_key("set-cookie"));

    // APP_COOKIE: learnt from the member's Set-Cookie.
    let r = get(p, "/app/setcookie", &[]).await;
    let sess = r.headers["set-cookie"]
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("c")
        .to_string();
    let owner = r
        .body
        .split_whitespace()
        .next()
        .expect("member")
        .to_string();
    for _ in 0..4 {
        let r = get(p, "/app/x", &[("cookie", &sess)]).await;
        assert!(r.body.starts_with(&owner), "{} vs {owner}", r.body);
    }

    // The dead member is skipped (one retry per request).
    for _ in 0..4 {
        let r = get(p, "/retry", &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.starts_with("member=b"));
    }
    let stats = inst.stats();
    let dead_stats = stats
        .members
        .iter()
        .find(|m| m.id == "dead")
        .expect("dead stats");
    assert!(dead_stats.request_errors >= 1);
    assert!(inst.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_is_tunnelled() {
    let a = member("a").await;
    let p = free_port();
    let (inst, _dir) = start(
        "ws",
        &config(
            vec![listener("l", p, Some("p"))],
            vec![l7pool("p", vec![l7member("ma", a)])],
        ),
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", p))
        .await
        .expect("connect");
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .expect("head in time")
            .expect("read");
        assert_eq!(n, 1, "closed after {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for msg in [&b"hello"[..], b"\x81\x05world"] {
        s.write_all(msg).await.expect("write");
        let mut buf = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .expect("echo in time")
            .expect("read");
        assert_eq!(buf, msg);
    }
    drop(s);
    assert!(inst.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_drains_removed_member_and_listener() {
    let a = member("a").await;
    let b = member("b").await;
    let (p, p_old, p_new) = (free_port(), free_port(), free_port());
    let before = config(
        vec![
            listener("l", p, Some("p")),
            listener("old", p_old, Some("p")),
        ],
        vec![l7pool("p", vec![l7member("ma", a)])],
    );
    let (inst, dir) = start("reload", &before).await;
    assert!(get(p, "/", &[]).await.body.starts_with("member=a"));
    // A slow request to a, in flight across the reload.
    let slow = tokio::spawn(get(p, "/slow", &[]));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A malformed file is refused and changes nothing.
    std::fs::write(dir.join(CONFIG_FILE), b"{\"listeners\": [").expect("write");
    assert!(inst.reload().await.is_err());
    assert!(get(p, "/", &[]).await.body.starts_with("member=a"));

    // a leaves (b joins), listener `old` leaves, `new` arrives.
    let mut after = config(
        vec![
            listener("l", p, Some("p")),
            listener("new", p_new, Some("p")),
        ],
        vec![l7pool("p", vec![l7member("mb", b)])],
    );
    write_config(&dir, &after);
    inst.reload().await.expect("reload");
    for _ in 0..4 {
        assert!(get(p, "/", &[]).await.body.starts_with("member=b"));
    }
    assert!(get(p_new, "/", &[]).await.body.starts_with("member=b"));
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", p_old))
            .await
            .is_err(),
        "old listener still accepts"
    );
    let r = slow.await.expect("slow request");
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with("member=a path=/slow"), "{}", r.body);

    // b turns draining: no member takes requests.
    after.pools[0].members[0].state = "draining".into();
    write_config(&dir, &after);
    inst.reload().await.expect("reload");
    assert_eq!(get(p, "/", &[]).await.status, 503);
    let stats: L7Stats = serde_json::from_str(&control(&dir, "/stats").await).expect("stats");
    assert!(stats
        .members
        .iter()
        .any(|m| m.id == "ma" && m.total_requests == 3 && m.active_requests == 0));
    assert!(control(&dir, "/metrics")
        .await
        .contains("strato_l7_reload_errors_total 1"));
    assert!(inst.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_and_connection_limit() {
    let a = member("a").await;
    let p = free_port();
    let mut l = listener("l", p, Some("p"));
    l.connection_limit = 1;
    let (inst, _dir) = start(
        "drain",
        &config(vec![l], vec![l7pool("p", vec![l7member("ma", a)])]),
    )
    .await;
    // One connection, kept alive.
    let s = tokio::net::TcpStream::connect(("127.0.0.1", p))
        .await
        .expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .expect("handshake");
    let conn = tokio::spawn(conn);
    assert_eq!(request(&mut send, "/", &[]).await.status, 200);
    // A second one is over the limit: closed at once.
    let mut s2 = tokio::net::TcpStream::connect(("127.0.0.1", p))
        .await
        .expect("connect");
    let _ = s2.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s2.read_to_end(&mut buf))
        .await
        .expect("closed in time");
    assert!(
        n.is_err() || buf.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
    assert_eq!(inst.stats().listeners[0].active_connections, 1);

    // A slow request in flight when the drain starts finishes; the
    // keep-alive connection is closed after it; nothing new is accepted.
    let slow = tokio::spawn(async move { request(&mut send, "/slow", &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    assert!(inst.shutdown().await);
    assert!(started.elapsed() >= Duration::from_millis(900));
    let r = slow.await.expect("slow");
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with("member=a path=/slow"));
    tokio::time::timeout(Duration::from_secs(2), conn)
        .await
        .expect("keep-alive connection closed")
        .expect("join")
        .ok();
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", p))
        .await
        .is_err());
}

/// The agent's way of keeping connections across a process's death: a
/// listening socket it made and hands over. A connection that arrives
/// while no instance runs waits in the socket's backlog and is served by
/// the next instance given the same socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inherited_socket_keeps_connections_across_instances() {
    let a = member("a").await;
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let p = held.local_addr().expect("addr").port();
    let c = config(
        vec![listener("l", p, Some("p"))],
        vec![l7pool("p", vec![l7member("ma", a)])],
    );
    let dir = state_dir("inherit");
    write_config(&dir, &c);
    let opts = |held: &std::net::TcpListener| Options {
        state_dir: dir.clone(),
        drain_timeout: Duration::from_secs(5),
        inherited: std::sync::Arc::new(std::collections::BTreeMap::from([(
            p,
            std::os::fd::OwnedFd::from(held.try_clone().expect("dup")),
        )])),
    };
    let first = Instance::start(opts(&held)).await.expect("first instance");
    assert_eq!(
        get(p, "/x", &[]).await.status,
        200,
        "served through the held socket"
    );
    assert!(first.shutdown().await, "drained");
    // No instance now: the connection is accepted by the kernel and waits.
    let waiting = tokio::spawn(async move { get(p, "/queued", &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "nothing answers while no instance runs"
    );
    let second = Instance::start(opts(&held)).await.expect("second instance");
    let r = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("answered once an instance runs")
        .expect("task");
    assert_eq!(r.status, 200, "{}", r.body);
    second.shutdown().await;
}

#[test]
fn inherited_socket_descriptions_are_checked() {
    // Bad inputs: not port:fd, a port out of range, stdin/stdout/stderr,
    // a descriptor that is not open, a file that is not a socket.
    assert!(inherited_listeners(None).expect("none").is_empty());
    assert!(inherited_listeners(Some("")).expect("empty").is_empty());
    for bad in ["80", "70000:5", "80:x", "80:1", "80:987654"] {
        let e = inherited_listeners(Some(bad)).expect_err(bad);
        assert!(e.contains(LISTEN_FDS_ENV), "{e}");
    }
    let f = std::fs::File::open("/proc/self/stat").expect("a file");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    let e = inherited_listeners(Some(&format!("80:{fd}"))).expect_err("a file");
    assert!(e.contains("not a stream socket"), "{e}");
}

/// The client timeout (`timeout_client_data`) bounds an idle keep-alive
/// connection and the time to send a request head (a head sent a byte at
/// a time does not keep its connection), never a request in flight to a
/// slow member (the member's own timeout does that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_timeout_bounds_idle_connections_and_slow_heads() {
    let a = member("a").await;
    let p = free_port();
    let mut l = listener("l", p, Some("p"));
    l.timeout_client_data_ms = 600;
    let (inst, _dir) = start(
        "client-timeout",
        &config(vec![l], vec![l7pool("p", vec![l7member("ma", a)])]),
    )
    .await;
    let closed_within = |mut s: tokio::net::TcpStream, bound: Duration| async move {
        let started = std::time::Instant::now();
        let mut buf = Vec::new();
        let r = tokio::time::timeout(bound, s.read_to_end(&mut buf)).await;
        (
            r.is_ok(),
            started.elapsed(),
            String::from_utf8_lossy(&buf).to_string(),
        )
    };

    // Idle after one request: closed after about the timeout.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", p))
        .await
        .expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut first = [0u8; 12];
    s.read_exact(&mut first).await.expect("answer");
    assert_eq!(&first, b"HTTP/1.1 200");
    let (closed, took, _) = closed_within(s, Duration::from_secs(5)).await;
    assert!(closed, "an idle connection stays open");
    assert!(took >= Duration::from_millis(400), "closed after {took:?}");

    // A head dribbled a byte every 100 ms (each byte well within the
    // timeout): cut before it is complete, never answered.
    let s = tokio::net::TcpStream::connect(("127.0.0.1", p))
        .await
        .expect("connect");
    let (mut rd, mut wr) = s.into_split();
    let dribble = tokio::spawn(async move {
        for b in b"GET / HTTP/1.1\r\nHost: a-rather-long-host-name.example\r\n\r\n" {
            if wr.write_all(&[*b]).await.is_err() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    });
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut buf)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a dribbled head kept the connection {:?}",
        started.elapsed()
    );
    assert!(
        !String::from_utf8_lossy(&buf).contains("200"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    dribble.abort();

    // A request to a slow member (about a second, past the client
    // timeout) is answered.
    let r = get(p, "/slow", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with("member=a path=/slow"), "{}", r.body);
    drop(inst);
}
