//! The controller as a real process on loopback, driven over raw HTTP: every
//! bad input gets a clear Neutron-style error and changes nothing; every
//! binary starts and answers --help; tools fail clearly when the controller
//! is unreachable.
//!
//! Bad inputs tried: malformed JSON, a JSON array, unknown field, missing
//! field, wrong type, body over 1 MiB, report for another host, invalid host
//! names (uppercase, leading dash, too long), unknown path, unknown host,
//! wrong method; agent with --interval 0, a missing --netns, no --host.

use std::{
    net::{TcpListener, TcpStream},
    os::unix::net::UnixStream,
    process::Command,
    time::Duration,
};

use strato_tests::e2e::{bin, LocalController};

/// Raw HTTP/1.1 on a [`LocalController`]'s two listeners.
trait RawHttp {
    fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<(String, String)>, String);
    fn http_tcp(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> (u16, Vec<(String, String)>, String);
    fn hosts(&self) -> serde_json::Value;
}

impl RawHttp for LocalController {
    /// One raw HTTP/1.1 exchange on the agents' socket: (status, lowercase headers, body).
    fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<(String, String)>, String) {
        let s = UnixStream::connect(&self.socket).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        exchange(s, &self.addr, method, path, body)
    }

    /// The same on the public TCP listener.
    fn http_tcp(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> (u16, Vec<(String, String)>, String) {
        let s = TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        exchange(s, &self.addr, method, path, body)
    }

    fn hosts(&self) -> serde_json::Value {
        let (status, _, body) = self.http("GET", "/internal/v1/hosts", b"");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("hosts JSON")
    }
}

fn exchange(
    mut s: impl std::io::Read + std::io::Write,
    host: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, Vec<(String, String)>, String) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write head");
    // Over the limit, the server answers 413 from Content-Length alone
    // and closes; sending the body would only reset the connection
    // before the answer is read.
    if body.len() <= 1 << 20 {
        s.write_all(body).expect("write body");
    }
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn report(host: &str) -> String {
    serde_json::json!({
        "host": host, "agent_version": "t", "pid": 1, "started_at_ms": 0, "pin_dir": "/x",
        "interfaces": [], "drops": []
    })
    .to_string()
}

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    let c = LocalController::start("api");
    let too_big = format!("{{\"host\":\"{}\"}}", "a".repeat(1 << 20));
    let long_name = "a".repeat(64);
    let cases: Vec<(&str, String, String, u16, &str)> = vec![
        (
            "malformed JSON",
            "/internal/v1/hosts/h1".into(),
            "{\"host\": ".into(),
            400,
            "BadRequest",
        ),
        (
            "JSON array",
            "/internal/v1/hosts/h1".into(),
            "[]".into(),
            400,
            "BadRequest",
        ),
        (
            "unknown field",
            "/internal/v1/hosts/h1".into(),
            report("h1").replace("\"pid\"", "\"colour\":1,\"pid\""),
            400,
            "BadRequest",
        ),
        (
            "missing field",
            "/internal/v1/hosts/h1".into(),
            "{\"host\":\"h1\"}".into(),
            400,
            "BadRequest",
        ),
        (
            "wrong type",
            "/internal/v1/hosts/h1".into(),
            report("h1").replace("\"pid\":1", "\"pid\":\"one\""),
            400,
            "BadRequest",
        ),
        (
            "body over 1 MiB",
            "/internal/v1/hosts/h1".into(),
            too_big,
            413,
            "RequestEntityTooLarge",
        ),
        (
            "report for another host",
            "/internal/v1/hosts/h1".into(),
            report("h2"),
            400,
            "BadRequest",
        ),
        (
            "uppercase host name",
            "/internal/v1/hosts/H1".into(),
            report("H1"),
            400,
            "BadRequest",
        ),
        (
            "leading dash",
            "/internal/v1/hosts/-h".into(),
            report("-h"),
            400,
            "BadRequest",
        ),
        (
            "64-character name",
            format!("/internal/v1/hosts/{long_name}"),
            report(&long_name),
            400,
            "BadRequest",
        ),
        (
            "unknown path",
            "/internal/v1/nothing".into(),
            report("h1"),
            404,
            "HTTPNotFound",
        ),
    ];
    for (what, path, body, want, kind) in cases {
        let (status, headers, resp) = c.http("PUT", &path, body.as_bytes());
        assert_eq!(status, want, "{what}: {resp}");
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "x-openstack-request-id" && v.starts_with("req-")),
            "{what}: no request id"
        );
        let v: serde_json::Value = serde_json::from_str(&resp)
            .unwrap_or_else(|e| panic!("{what}: body {resp:?} not JSON: {e}"));
        assert_eq!(v["NeutronError"]["type"], kind, "{what}: {resp}");
        assert!(
            !v["NeutronError"]["message"]
                .as_str()
                .unwrap_or("")
                .is_empty(),
            "{what}: empty message"
        );
    }
    assert_eq!(
        c.hosts()["hosts"],
        serde_json::json!([]),
        "a rejected request changed state"
    );
    let (status, _, body) = c.http("GET", "/internal/v1/hosts/nope", b"");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("HostNotFound"), "{body}");
    let (status, _, _) = c.http("DELETE", "/internal/v1/hosts", b"");
    assert_eq!(status, 405);

    // The public listener does not take reports, and internal reads need an admin token.
    let (status, _, _) = c.http_tcp("PUT", "/internal/v1/hosts/h1", report("h1").as_bytes());
    assert!(
        matches!(status, 401 | 404 | 405),
        "PUT report over TCP answered {status}"
    );
    let (status, _, body) = c.http_tcp("GET", "/internal/v1/hosts", b"");
    assert_eq!(status, 401, "{body}");
    // A good report is accepted and listed, with its liveness.
    let (status, headers, body) = c.http("PUT", "/internal/v1/hosts/h1", report("h1").as_bytes());
    assert_eq!(status, 204, "{body}");
    assert!(headers.iter().any(|(k, _)| k == "x-openstack-request-id"));
    let hosts = c.hosts();
    assert_eq!(hosts["hosts"][0]["host"], "h1");
    assert_eq!(hosts["hosts"][0]["state"], "up");
}

#[test]
fn every_binary_answers_help() {
    for b in [
        "strato-controller",
        "strato-agent",
        "stratoctl",
        "strato-harness",
    ] {
        let o = Command::new(bin(b))
            .arg("--help")
            .output()
            .expect("run --help");
        assert!(
            o.status.success(),
            "{b} --help failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("Usage"),
            "{b} --help prints no usage"
        );
    }
}

#[test]
fn tools_fail_clearly() {
    strato_tests::require_root("agent argument checks");
    // No controller on this port: stratoctl says so and exits 1.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let o = Command::new(bin("stratoctl"))
        .args(["--controller", &format!("http://127.0.0.1:{port}"), "hosts"])
        .output()
        .expect("stratoctl");
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot reach the controller"), "{err}");
    let o = Command::new(bin("stratoctl"))
        .args(["--controller", "127.0.0.1:9696", "hosts"])
        .output()
        .expect("stratoctl");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("http://HOST:PORT"));

    for (args, needle) in [
        (
            vec!["--host", "x", "--interval", "0"],
            "--interval must be between",
        ),
        (
            vec!["--host", "x", "--netns", "strato-no-such-netns"],
            "opening network namespace",
        ),
        (vec![], "--host"),
    ] {
        let o = Command::new(bin("strato-agent"))
            .args(&args)
            .output()
            .expect("agent");
        assert!(!o.status.success(), "agent {args:?} succeeded");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "agent {args:?}: {err}");
    }
}
