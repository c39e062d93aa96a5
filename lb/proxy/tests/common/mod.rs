//! Test members (tiny hyper servers on 127.0.0.1), an instance in a temp
//! state directory, and a plain HTTP/1.1 client. Loopback only.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use strato_l7::{Instance, Options};
use strato_proto::l7::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A member answering `member=NAME path=PATH xff=... host=...`; `/slow`
/// answers after 1.5 s; `/setcookie` sets `JSESSIONID=NAME-s`; an
/// `Upgrade` request gets 101 and an echo of the tunnel's bytes.
pub async fn member(name: &'static str) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind member");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = service_fn(move |mut req: Request<hyper::body::Incoming>| async move {
                    let h = |n: &str| {
                        req.headers()
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_string()
                    };
                    let text = format!(
                        "member={name} path={} xff={} xfport={} xfproto={} host={} conn={}",
                        req.uri().path(),
                        h("x-forwarded-for"),
                        h("x-forwarded-port"),
                        h("x-forwarded-proto"),
                        h("host"),
                        h("connection"),
                    );
                    if req.headers().contains_key(hyper::header::UPGRADE) {
                        let up = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            if let Ok(u) = up.await {
                                let mut u = TokioIo::new(u);
                                let mut buf = [0u8; 1024];
                                while let Ok(n) = u.read(&mut buf).await {
                                    if n == 0 || u.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        });
                        return Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .status(101)
                                .header("upgrade", "websocket")
                                .header("connection", "upgrade")
                                .body(Full::new(Bytes::new()))
                                .expect("response"),
                        );
                    }
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let text = format!("{text} body={}", body.len());
                    let mut r = Response::builder();
                    if text.contains("path=/slow") {
                        tokio::time::sleep(Duration::from_millis(1500)).await;
                    }
                    if text.contains("/setcookie ") {
                        r = r.header("set-cookie", format!("JSESSIONID={name}-s; Path=/"));
                    }
                    Ok(r.body(Full::new(Bytes::from(text))).expect("response"))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub fn l7member(id: &str, addr: SocketAddr) -> L7Member {
    L7Member {
        id: id.into(),
        address: addr.ip().to_string(),
        protocol_port: addr.port(),
        weight: 1,
        backup: false,
        state: "active".into(),
    }
}

pub fn l7pool(id: &str, members: Vec<L7Member>) -> L7Pool {
    L7Pool {
        id: id.into(),
        lb_algorithm: "ROUND_ROBIN".into(),
        session_persistence: None,
        members,
    }
}

pub fn listener(id: &str, port: u16, default_pool: Option<&str>) -> L7Listener {
    L7Listener {
        id: id.into(),
        protocol: "HTTP".into(),
        protocol_port: port,
        connection_limit: -1,
        timeout_client_data_ms: 10_000,
        timeout_member_connect_ms: 2_000,
        timeout_member_data_ms: 10_000,
        default_pool_id: default_pool.map(Into::into),
        ..L7Listener::default()
    }
}

pub fn config(listeners: Vec<L7Listener>, pools: Vec<L7Pool>) -> L7Config {
    L7Config {
        instance_id: "inst-1".into(),
        loadbalancer_id: "lb-1".into(),
        address: "127.0.0.1".into(),
        listeners,
        pools,
    }
}

pub fn state_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("strato-l7-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("state dir");
    d
}

pub fn write_config(dir: &std::path::Path, c: &L7Config) {
    std::fs::write(
        dir.join(CONFIG_FILE),
        serde_json::to_vec_pretty(c).expect("json"),
    )
    .expect("write config");
}

pub async fn start(name: &str, c: &L7Config) -> (Instance, PathBuf) {
    let dir = state_dir(name);
    write_config(&dir, c);
    let i = Instance::start(Options {
        state_dir: dir.clone(),
        drain_timeout: Duration::from_secs(10),
        inherited: Default::default(),
    })
    .await
    .expect("instance starts");
    (i, dir)
}

pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

/// One request on a new connection.
pub async fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Reply {
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to proxy");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    request(&mut send, path, headers).await
}

pub async fn request(
    send: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut b = Request::builder().uri(path);
    let mut has_host = false;
    for (k, v) in headers {
        has_host |= k.eq_ignore_ascii_case("host");
        b = b.header(*k, *v);
    }
    if !has_host {
        b = b.header("host", "www.example.test");
    }
    let resp = send
        .send_request(b.body(Full::new(Bytes::new())).expect("request"))
        .await
        .expect("response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// `GET path` on the control socket.
pub async fn control(dir: &std::path::Path, path: &str) -> String {
    let s = tokio::net::UnixStream::connect(dir.join(CONTROL_SOCKET))
        .await
        .expect("control socket");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let r = request(&mut send, path, &[]).await;
    assert_eq!(r.status, 200, "{path}");
    r.body
}

pub fn access_lines(dir: &std::path::Path) -> Vec<L7AccessLine<'static>> {
    std::fs::read_to_string(dir.join(ACCESS_LOG))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("access line is JSON"))
        .collect()
}

pub fn members_of(replies: &[Reply]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in replies {
        let name = r.body.split_whitespace().next().unwrap_or("").to_string();
        *m.entry(name).or_default() += 1;
    }
    m
}
