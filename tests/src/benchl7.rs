//! The L7 load balancer's benchmark (`strato-bench --only-l7`): the
//! `strato-l7` proxy against HAProxy (`mode http`) and nginx as a reverse
//! proxy, and wrk straight at one member (direct), in one network namespace
//! made for the run (loopback only).
//!
//! Same cores and members for every row: two nginx members (one process
//! each, a 3-byte answer) and wrk on CPU 0, the proxy alone on CPU 1 with
//! one worker (`strato-l7 --threads 1`, HAProxy `nbthread 1`, nginx
//! `worker_processes 1`), balancing round robin over both members. Per row:
//! memory per idle keep-alive connection (RSS before and after opening them),
//! keep-alive requests/s with p50/p99 latency, `Connection: close`
//! requests/s, TLS handshakes/s (TLS 1.3, ECDHE P-256, an ECDSA P-256
//! certificate made at run time; a new connection, so a full handshake, per
//! request, from the bench's own rustls client: wrk resumes its sessions),
//! and the proxy process's CPU per 1,000 requests in each.
//!
//! Every run checks its own path and fails the bench otherwise: wrk counted
//! no socket error and no non-2xx answer; both members served (their
//! `stub_status` counters) at least the requests wrk completed (direct: the
//! one member); the proxy counted them itself (strato-l7's `GET /stats` on
//! its control socket, HAProxy's stats socket, nginx's `stub_status`), and
//! a new connection per request where that is the point; the idle
//! connections are open at the proxy when its memory is read; `openssl
//! s_client` negotiates TLS 1.3 with P-256 against every TLS listener, the
//! TLS client checks every handshake (full, TLS 1.3, P-256), and the nginx
//! proxy's log shows them so too, none resumed.
//! Everything started (processes, the namespace, the temp dir) is removed
//! when the bench ends, also on an error.

use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _};
use strato_proto::l7::{
    L7Certificate, L7Config, L7Listener, L7Member, L7Pool, L7Stats, L7Tls, CONTROL_SOCKET,
};

use crate::benchkit::{self, Bound, Stat};

/// How the bench runs.
pub struct Options {
    /// Each wrk run.
    pub seconds: u64,
    /// Passes over the rows (every other one in reverse order).
    pub passes: usize,
    /// Tiny counts, every check, no figures.
    pub smoke: bool,
}

/// The CPU the proxies run on, alone; wrk and the members share the other.
const PROXY_CPU: &str = "1";
const CLIENT_CPU: &str = "0";
/// The members' plain and status ports (m1, m2); m1's TLS port (direct).
const MEMBERS: [(u16, u16); 2] = [(8081, 9081), (8082, 9082)];
const MEMBER_TLS: u16 = 8443;

/// The rows, in the order of the table.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Row {
    Direct,
    Strato,
    Haproxy,
    Nginx,
}

impl Row {
    const ALL: [Row; 4] = [Row::Direct, Row::Strato, Row::Haproxy, Row::Nginx];

    fn name(self) -> &'static str {
        match self {
            Row::Direct => "direct to one member (nginx, no proxy; on CPU 0 with wrk)",
            Row::Strato => "Strato L7 (`strato-l7 --threads 1`)",
            Row::Haproxy => "HAProxy 2.6, `mode http`, `nbthread 1`",
            Row::Nginx => "nginx 1.22 proxy, `worker_processes 1`",
        }
    }

    /// Plain and TLS ports of the row's listener.
    fn ports(self) -> (u16, u16) {
        match self {
            Row::Direct => (MEMBERS[0].0, MEMBER_TLS),
            Row::Strato => (8100, 8101),
            Row::Haproxy => (8200, 8201),
            Row::Nginx => (8300, 8301),
        }
    }
}

// ---------------------------------------------------------------------------
// The namespace, its processes and its files.

/// One network namespace with only `lo` (127.0.0.1), a temp dir, and the
/// processes started in it. Dropping it (also on an error) kills the
/// processes and removes the namespace and the dir.
struct Lab {
    ns: String,
    dir: PathBuf,
    children: std::cell::RefCell<Vec<Child>>,
}

impl Lab {
    fn new() -> anyhow::Result<Lab> {
        let ns = format!("sl7b{}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("{ns}-bench"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).context("temp dir")?;
        let o = Command::new("ip").args(["netns", "add", &ns]).output()?;
        if !o.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            bail!("ip netns add {ns}: {}", String::from_utf8_lossy(&o.stderr));
        }
        // From here on, dropping it removes the namespace.
        let lab = Lab {
            ns,
            dir,
            children: Default::default(),
        };
        lab.sh(&["ip", "link", "set", "lo", "up"])?;
        for s in [
            "net.ipv4.tcp_tw_reuse=1",
            "net.ipv4.ip_local_port_range=1024 65535",
            "net.core.somaxconn=4096",
            // The rows reuse client ports towards the same listeners: no
            // TIME_WAIT sockets for a SYN to meet (as the L4 bench).
            "net.ipv4.tcp_max_tw_buckets=0",
        ] {
            lab.sh(&["sysctl", "-qw", s])?;
        }
        Ok(lab)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Runs `argv` in the namespace; its stdout, or an error with its
    /// output unless it succeeds.
    fn sh(&self, argv: &[&str]) -> anyhow::Result<String> {
        self.sh_env(argv, &[])
    }

    fn sh_env(&self, argv: &[&str], env: &[(&str, &Path)]) -> anyhow::Result<String> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).args(argv);
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c
            .stdin(Stdio::null())
            .output()
            .with_context(|| argv.join(" "))?;
        ensure!(
            o.status.success(),
            "{}: {} failed: {}{}",
            self.ns,
            argv.join(" "),
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Starts `argv` in the namespace on `cpu` (killed on drop); its pid
    /// (`ip netns exec` and `taskset` exec it: the pid is the program's).
    fn spawn(&self, cpu: &str, argv: &[&str], log: &str) -> anyhow::Result<u32> {
        let f = std::fs::File::create(self.path(log)).context("log file")?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "taskset", "-c", cpu])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("starting {}", argv.join(" ")))?;
        let pid = child.id();
        self.children.borrow_mut().push(child);
        Ok(pid)
    }

    /// Stops a process [`spawn`](Self::spawn) started.
    fn stop(&self, pid: u32) {
        let mut children = self.children.borrow_mut();
        if let Some(i) = children.iter().position(|c| c.id() == pid) {
            let mut c = children.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// An error with its log unless the process is still running.
    fn alive(&self, pid: u32, log: &str) -> anyhow::Result<()> {
        if let Some(c) = self
            .children
            .borrow_mut()
            .iter_mut()
            .find(|c| c.id() == pid)
        {
            if let Some(st) = c.try_wait()? {
                bail!(
                    "{log}: exited ({st}): {}",
                    std::fs::read_to_string(self.path(log)).unwrap_or_default()
                );
            }
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in self.children.get_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.ns])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An ECDSA P-256 certificate and key made by openssl: (cert, key) paths.
fn make_cert(lab: &Lab) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (crt, key) = (lab.path("l7.crt"), lab.path("l7.key"));
    let o = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .args([
            "-subj",
            "/CN=l7.bench",
            "-addext",
            "subjectAltName=DNS:l7.bench",
        ])
        .output()
        .context("openssl req")?;
    ensure!(
        o.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // HAProxy takes the certificate and its key in one file.
    let mut pem = std::fs::read_to_string(&crt)?;
    pem.push_str(&std::fs::read_to_string(&key)?);
    std::fs::write(lab.path("l7.pem"), pem)?;
    Ok((crt, key))
}

/// The OpenSSL configuration s_client runs with: TLS 1.3 only, the
/// P-256 group only (OpenSSL's default would offer X25519 first).
fn client_openssl_conf(lab: &Lab) -> anyhow::Result<PathBuf> {
    let p = lab.path("client-openssl.cnf");
    std::fs::write(
        &p,
        "openssl_conf = conf\n[conf]\nssl_conf = ssl\n[ssl]\nsystem_default = sys\n\
         [sys]\nMinProtocol = TLSv1.3\nGroups = P-256\n",
    )?;
    Ok(p)
}

/// nginx members: a 3-byte answer, no log, `stub_status` on a port of its
/// own; m1 also serves TLS (the direct TLS row). One process each.
fn start_members(lab: &Lab, crt: &Path, key: &Path) -> anyhow::Result<Vec<u32>> {
    let mut pids = vec![];
    for (i, (port, status)) in MEMBERS.iter().enumerate() {
        let d = lab.path(&format!("m{}", i + 1));
        std::fs::create_dir_all(&d)?;
        let tls = if i == 0 {
            format!(
                "server {{ listen 127.0.0.1:{MEMBER_TLS} ssl backlog=4096; ssl_certificate {}; ssl_certificate_key {}; \
                 ssl_protocols TLSv1.3; ssl_ecdh_curve prime256v1; location / {{ return 200 \"ok\\n\"; }} }}\n",
                crt.display(),
                key.display()
            )
        } else {
            String::new()
        };
        let conf = format!(
            "user root;\nmaster_process off;\nworker_rlimit_nofile 65536;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 16384; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n\
               fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n\
               keepalive_requests 100000000;\n  keepalive_timeout 120s;\n\
               server {{ listen 127.0.0.1:{port} backlog=4096; location / {{ return 200 \"ok\\n\"; }} }}\n\
               server {{ listen 127.0.0.1:{status}; location / {{ stub_status; }} }}\n  {tls}}}\n",
            d = d.display()
        );
        let path = d.join("nginx.conf");
        std::fs::write(&path, conf)?;
        let p = path.display().to_string();
        let log = format!("m{}.log", i + 1);
        pids.push(lab.spawn(CLIENT_CPU, &["nginx", "-c", &p, "-g", "daemon off;"], &log)?);
    }
    for (port, status) in MEMBERS {
        wait_ready(lab, port)?;
        wait_ready(lab, status)?;
    }
    Ok(pids)
}

/// GET http://127.0.0.1:`port`/ answers (from inside the namespace).
fn wait_ready(lab: &Lab, port: u16) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{port}/");
    benchkit::wait_for(&format!("{url} answers"), Duration::from_secs(10), || {
        Ok(lab
            .sh(&["curl", "-sf", "-o", "/dev/null", &url])
            .ok()
            .map(|_| ()))
    })
}

/// nginx `stub_status`: (active connections, accepts, requests).
fn stub_status(lab: &Lab, port: u16) -> anyhow::Result<(u64, u64, u64)> {
    let t = lab.sh(&["curl", "-sf", &format!("http://127.0.0.1:{port}/")])?;
    // "Active connections: 1 \nserver accepts handled requests\n 1 1 1 \n..."
    let active = t
        .lines()
        .find_map(|l| l.strip_prefix("Active connections:"))
        .and_then(|v| v.trim().parse().ok());
    let nums: Option<Vec<u64>> = t.lines().nth(2).map(|l| {
        l.split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect()
    });
    match (active, nums) {
        (Some(a), Some(n)) if n.len() == 3 => Ok((a, n[0], n[2])),
        _ => bail!("stub_status on {port}: cannot read {t:?}"),
    }
}

/// Requests the members served so far (their counters).
fn member_requests(lab: &Lab) -> anyhow::Result<[u64; 2]> {
    Ok([
        stub_status(lab, MEMBERS[0].1)?.2,
        stub_status(lab, MEMBERS[1].1)?.2,
    ])
}

// ---------------------------------------------------------------------------
// The proxies.

/// A proxy's own counters: requests it forwarded, client connections it
/// accepted, TLS handshakes where it counts them (HAProxy), connections
/// open now.
#[derive(Clone, Copy, Debug, Default)]
struct Own {
    requests: u64,
    connections: u64,
    active: u64,
    /// Requests each member got from it, where it says (Strato, HAProxy).
    members: Option<[u64; 2]>,
    /// Requests it answered with an error itself (Strato, HAProxy).
    errors: u64,
}

/// The row's server, running: its pid and how to read its counters.
struct Up {
    pid: u32,
    log: String,
    /// strato-l7's state dir; HAProxy's stats socket.
    control: PathBuf,
}

fn start_row(lab: &Lab, row: Row, members: &[u32]) -> anyhow::Result<Up> {
    let (http, https) = row.ports();
    let m = |i: usize| format!("127.0.0.1:{}", MEMBERS[i].0);
    let (pem, crt, key) = (lab.path("l7.pem"), lab.path("l7.crt"), lab.path("l7.key"));
    let up = match row {
        Row::Direct => Up {
            pid: members[0],
            log: "m1.log".into(),
            control: PathBuf::new(),
        },
        Row::Strato => {
            let dir = lab.path("strato-l7");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            let cert = L7Certificate {
                reference: "bench".into(),
                chain_pem: std::fs::read_to_string(&crt)?,
                key_pem: std::fs::read_to_string(&key)?,
            };
            let listener = |id: &str, port: u16, tls: Option<L7Tls>| L7Listener {
                id: id.into(),
                protocol: if tls.is_some() {
                    "TERMINATED_HTTPS"
                } else {
                    "HTTP"
                }
                .into(),
                protocol_port: port,
                connection_limit: -1,
                timeout_client_data_ms: 120_000,
                timeout_member_connect_ms: 5_000,
                timeout_member_data_ms: 30_000,
                tls,
                default_pool_id: Some("pool".into()),
                ..L7Listener::default()
            };
            let member = |id: &str, port: u16| L7Member {
                id: id.into(),
                address: "127.0.0.1".into(),
                protocol_port: port,
                weight: 1,
                backup: false,
                state: "active".into(),
            };
            let cfg = L7Config {
                instance_id: "bench".into(),
                loadbalancer_id: "bench-lb".into(),
                address: "127.0.0.1".into(),
                listeners: vec![
                    listener("http", http, None),
                    listener(
                        "https",
                        https,
                        Some(L7Tls {
                            default_certificate: cert,
                            versions: vec!["TLSv1.3".into()],
                            alpn_protocols: vec!["http/1.1".into()],
                            ..L7Tls::default()
                        }),
                    ),
                ],
                pools: vec![L7Pool {
                    id: "pool".into(),
                    lb_algorithm: "ROUND_ROBIN".into(),
                    session_persistence: None,
                    members: vec![member("m1", MEMBERS[0].0), member("m2", MEMBERS[1].0)],
                }],
            };
            std::fs::write(
                dir.join(strato_proto::l7::CONFIG_FILE),
                serde_json::to_vec_pretty(&cfg)?,
            )?;
            let bin = crate::e2e::bin_dir().join("strato-l7");
            ensure!(
                bin.exists(),
                "{} is missing: build the binaries first (`cargo build --bins`)",
                bin.display()
            );
            let (b, d) = (bin.display().to_string(), dir.display().to_string());
            let log = "strato-l7.log".to_string();
            let pid = lab.spawn(
                PROXY_CPU,
                &[
                    &b,
                    "--state-dir",
                    &d,
                    "--threads",
                    "1",
                    "--drain-timeout-s",
                    "1",
                ],
                &log,
            )?;
            Up {
                pid,
                log,
                control: dir,
            }
        }
        Row::Haproxy => {
            let sock = lab.path("haproxy.sock");
            let cfg = lab.path("haproxy.cfg");
            std::fs::write(
                &cfg,
                format!(
                    "global\n  maxconn 8000\n  nbthread 1\n  stats socket {sock}\n  ssl-default-bind-curves P-256\n\
                     defaults\n  mode http\n  timeout connect 5s\n  timeout client 120s\n  timeout server 30s\n  timeout http-keep-alive 120s\n\
                     frontend fe\n  bind 127.0.0.1:{http}\n  bind 127.0.0.1:{https} ssl crt {pem} ssl-min-ver TLSv1.3 alpn http/1.1\n  default_backend members\n\
                     backend members\n  balance roundrobin\n  server m1 {m1}\n  server m2 {m2}\n",
                    sock = sock.display(),
                    pem = pem.display(),
                    m1 = m(0),
                    m2 = m(1),
                ),
            )?;
            let c = cfg.display().to_string();
            let log = "haproxy.log".to_string();
            let pid = lab.spawn(PROXY_CPU, &["haproxy", "-db", "-f", &c], &log)?;
            Up {
                pid,
                log,
                control: sock,
            }
        }
        Row::Nginx => {
            let d = lab.path("nginx-proxy");
            std::fs::create_dir_all(&d)?;
            let conf = format!(
                "user root;\nmaster_process off;\nworker_processes 1;\nworker_rlimit_nofile 65536;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
                 events {{ worker_connections 16384; }}\n\
                 http {{\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n\
                   fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n\
                   keepalive_requests 100000000;\n  keepalive_timeout 120s;\n\
                   log_format l7 '$server_port $status $ssl_protocol $ssl_curve $ssl_session_reused $upstream_addr';\n\
                   access_log {d}/access.log l7 buffer=64k flush=200ms;\n\
                   upstream members {{ server {m1}; server {m2}; keepalive 64; }}\n\
                   server {{\n    listen 127.0.0.1:{http} backlog=4096;\n    listen 127.0.0.1:{https} ssl backlog=4096;\n\
                     ssl_certificate {crt};\n    ssl_certificate_key {key};\n    ssl_protocols TLSv1.3;\n    ssl_ecdh_curve prime256v1;\n\
                     location / {{ proxy_pass http://members; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n  }}\n\
                   server {{ listen 127.0.0.1:{status}; access_log off; location / {{ stub_status; }} }}\n}}\n",
                d = d.display(),
                m1 = m(0),
                m2 = m(1),
                crt = crt.display(),
                key = key.display(),
                status = NGINX_PROXY_STATUS,
            );
            let path = d.join("nginx.conf");
            std::fs::write(&path, conf)?;
            let p = path.display().to_string();
            let log = "nginx-proxy.log".to_string();
            let pid = lab.spawn(PROXY_CPU, &["nginx", "-c", &p, "-g", "daemon off;"], &log)?;
            Up {
                pid,
                log,
                control: d,
            }
        }
    };
    let r = wait_ready(lab, http);
    if let Err(e) = lab.alive(up.pid, &up.log) {
        lab.stop(up.pid);
        return Err(e);
    }
    if let Err(e) = r {
        stop_row(lab, row, &up);
        return Err(e);
    }
    Ok(up)
}

/// The nginx proxy's `stub_status` port.
const NGINX_PROXY_STATUS: u16 = 9300;

/// The row's own counters (the direct row: member m1's).
fn own(lab: &Lab, row: Row, up: &Up) -> anyhow::Result<Own> {
    match row {
        Row::Direct | Row::Nginx => {
            let port = if row == Row::Direct {
                MEMBERS[0].1
            } else {
                NGINX_PROXY_STATUS
            };
            let (active, accepts, requests) = stub_status(lab, port)?;
            // The status request itself is one of them, and open.
            Ok(Own {
                requests: requests - 1,
                connections: accepts - 1,
                active: active - 1,
                members: None,
                errors: 0,
            })
        }
        Row::Strato => {
            let sock = up.control.join(CONTROL_SOCKET);
            let body = http_unix(&sock, "/stats")?;
            let s: L7Stats =
                serde_json::from_str(&body).with_context(|| format!("strato-l7 /stats: {body}"))?;
            let mut o = Own::default();
            for l in &s.listeners {
                o.requests += l.requests;
                o.connections += l.total_connections;
                o.active += l.active_connections;
                o.errors += l.request_errors;
            }
            let mut per = [0u64; 2];
            for m in &s.members {
                match m.id.as_str() {
                    "m1" => per[0] += m.total_requests,
                    "m2" => per[1] += m.total_requests,
                    other => bail!("strato-l7 /stats: unknown member {other}"),
                }
            }
            o.members = Some(per);
            Ok(o)
        }
        Row::Haproxy => {
            let info = haproxy_cmd(&up.control, "show info")?;
            let field = |k: &str| -> anyhow::Result<u64> {
                info.lines()
                    .find_map(|l| l.strip_prefix(&format!("{k}: ")))
                    .and_then(|v| v.trim().parse().ok())
                    .with_context(|| format!("HAProxy show info: no {k}: {info}"))
            };
            let stat = haproxy_cmd(&up.control, "show stat")?;
            // CSV: "# pxname,svname,qcur,...", then a line per proxy/server.
            let head: Vec<&str> = stat
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("# "))
                .context("HAProxy show stat: no header")?
                .split(',')
                .collect();
            let col = |name: &str| head.iter().position(|h| *h == name);
            let (Some(px), Some(sv), Some(req_tot), Some(stot), Some(hrsp5)) = (
                col("pxname"),
                col("svname"),
                col("req_tot"),
                col("stot"),
                col("hrsp_5xx"),
            ) else {
                bail!("HAProxy show stat: columns missing: {head:?}");
            };
            let mut o = Own {
                active: field("CurrConns")?,
                connections: field("CumConns")?,
                ..Own::default()
            };
            let mut per = [0u64; 2];
            for l in stat.lines().skip(1) {
                let f: Vec<&str> = l.split(',').collect();
                if f.len() <= hrsp5.max(stot).max(req_tot) {
                    continue;
                }
                let n = |i: usize| f[i].parse::<u64>().unwrap_or(0);
                match (f[px], f[sv]) {
                    ("fe", "FRONTEND") => {
                        o.requests = n(req_tot);
                        o.errors = n(hrsp5);
                    }
                    ("members", "m1") => per[0] = n(stot),
                    ("members", "m2") => per[1] = n(stot),
                    _ => {}
                }
            }
            o.members = Some(per);
            Ok(o)
        }
    }
}

/// One request over a Unix socket (strato-l7's control socket): the body.
fn http_unix(sock: &Path, path: &str) -> anyhow::Result<String> {
    let mut s = std::os::unix::net::UnixStream::connect(sock)
        .with_context(|| format!("connecting to {}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: l7\r\nConnection: close\r\n\r\n"
    )?;
    let mut t = String::new();
    s.read_to_string(&mut t)?;
    let (head, body) = t
        .split_once("\r\n\r\n")
        .with_context(|| format!("{}: no HTTP answer: {t:?}", sock.display()))?;
    ensure!(
        head.starts_with("HTTP/1.1 200"),
        "{} {path}: {head}",
        sock.display()
    );
    ensure!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{} {path}: chunked answer",
        sock.display()
    );
    Ok(body.to_owned())
}

/// One command on HAProxy's stats socket: its answer.
fn haproxy_cmd(sock: &Path, cmd: &str) -> anyhow::Result<String> {
    let mut s = std::os::unix::net::UnixStream::connect(sock)
        .with_context(|| format!("connecting to {}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    writeln!(s, "{cmd}")?;
    let mut t = String::new();
    s.read_to_string(&mut t)?;
    Ok(t)
}

// ---------------------------------------------------------------------------
// Measuring.

/// CPU seconds of a process so far (every thread): user + system, and
/// system (the kernel's work on its behalf: its socket calls, and on
/// loopback the receiving side's TCP processing its sends run).
fn process_cpu(pid: u32) -> anyhow::Result<(f64, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("/proc/{pid}/stat"))?;
    let rest = s.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime); `rest` starts at field 3.
    let (user, sys) = (f[11].parse::<f64>()?, f[12].parse::<f64>()?);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ensure!(hz > 0.0, "sysconf(_SC_CLK_TCK) = {hz}");
    Ok(((user + sys) / hz, sys / hz))
}

/// VmRSS of a process, KiB.
fn rss_kib(pid: u32) -> anyhow::Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("/proc/{pid}/status: no VmRSS"))
}

/// What one wrk run reported.
#[derive(Clone, Copy, Debug, Default)]
struct Wrk {
    requests: u64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// The kinds of wrk runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    KeepAlive,
    Close,
    Tls,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::KeepAlive => "keep-alive",
            Mode::Close => "Connection: close",
            Mode::Tls => "TLS, Connection: close",
        }
    }
}

/// Milliseconds of a wrk duration ("1.23ms", "456.00us", "1.01s").
fn wrk_ms(v: &str) -> Option<f64> {
    let v = v.trim();
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|x| x * scale)
}

/// Parses wrk's report; an error if it counted any error (socket errors,
/// non-2xx answers) or no request.
fn parse_wrk(o: &str) -> anyhow::Result<Wrk> {
    let rps = o
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("wrk said: {o}"))?;
    let requests = o
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse::<u64>().ok())
        .with_context(|| format!("wrk: no request count: {o}"))?;
    let pct = |p: &str| {
        o.lines()
            .find_map(|l| l.trim().strip_prefix(p))
            .and_then(wrk_ms)
            .with_context(|| format!("wrk: no {p} latency: {o}"))
    };
    let mut errors = 0;
    for l in o.lines() {
        let l = l.trim();
        if let Some(r) = l.strip_prefix("Socket errors:") {
            for p in r.split(',') {
                let n = p.split_whitespace().last().unwrap_or_default();
                errors += n
                    .parse::<u64>()
                    .with_context(|| format!("wrk: cannot read {l:?}"))?;
            }
        } else if let Some(r) = l.strip_prefix("Non-2xx or 3xx responses:") {
            errors += r
                .trim()
                .parse::<u64>()
                .with_context(|| format!("wrk: cannot read {l:?}"))?;
        }
    }
    ensure!(
        errors == 0,
        "{errors} errors (socket errors and non-2xx answers): {o}"
    );
    ensure!(requests > 0 && rps > 0.0, "no requests: {o}");
    Ok(Wrk {
        requests,
        rps,
        p50_ms: pct("50%")?,
        p99_ms: pct("99%")?,
    })
}

// ---------------------------------------------------------------------------
// The TLS handshake client.
//
// wrk keeps an OpenSSL session across its reconnections (`SSL_clear`), so
// its TLS 1.3 "new connections" are resumptions (checked: the nginx proxy
// logged them resumed); OpenSSL offers no client setting against it, and
// strato-l7 cannot be told to refuse resumption. So the TLS column uses
// this client: rustls with resumption disabled, TLS 1.3 and the P-256
// group only, `connections` connections at once, each a loop of connect,
// full handshake, one `Connection: close` request, its answer.

/// Accepts the bench's certificate only, and checks the handshake's
/// signatures with it.
#[derive(Debug)]
struct OnlyOurCert {
    der: Vec<u8>,
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for OnlyOurCert {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _name: &rustls_pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.der.as_slice() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the bench's certificate".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

fn tls_client(cert: &Path) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls_pki_types::pem::PemObject as _;
    let der = rustls_pki_types::CertificateDer::from_pem_file(cert)
        .with_context(|| format!("{}", cert.display()))?
        .to_vec();
    // ring, as strato-l7 (rustls deprecates it only for its lack of
    // post-quantum key exchange, which this client does not offer anyway).
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![rustls::crypto::ring::kx_group::SECP256R1];
    let algs = provider.signature_verification_algorithms;
    let mut cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(OnlyOurCert { der, algs }))
        .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::disabled();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)))
}

/// One connection: a full TLS 1.3 handshake with P-256 (checked), one
/// request, its 200 answer.
async fn tls_request(c: &tokio_rustls::TlsConnector, port: u16) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .context("connect")?;
    tcp.set_nodelay(true)?;
    let name = rustls_pki_types::ServerName::try_from("l7.bench")?;
    let mut tls = c.connect(name, tcp).await.context("TLS handshake")?;
    let conn = tls.get_ref().1;
    let got = (
        conn.protocol_version(),
        conn.negotiated_key_exchange_group().map(|g| g.name()),
        conn.handshake_kind(),
    );
    ensure!(
        got == (
            Some(rustls::ProtocolVersion::TLSv1_3),
            Some(rustls::NamedGroup::secp256r1),
            Some(rustls::HandshakeKind::Full)
        ),
        "negotiated {got:?}, not a full TLS 1.3 handshake with P-256"
    );
    tls.write_all(b"GET / HTTP/1.1\r\nHost: l7.bench\r\nConnection: close\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    match tls.read_to_end(&mut buf).await {
        Ok(_) => {}
        // A server may close without close_notify after its answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
        Err(e) => return Err(anyhow::Error::from(e).context("reading the answer")),
    }
    ensure!(
        buf.starts_with(b"HTTP/1.1 200") && buf.ends_with(b"ok\n"),
        "answer: {}",
        String::from_utf8_lossy(&buf)
    );
    Ok(())
}

/// Pins the calling thread to `cpu`.
fn pin_thread(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes
    // within it; sched_setaffinity(0) reads it for the calling thread.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    ensure!(
        r == 0,
        "pinning to CPU {cpu}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// TLS handshakes for `seconds` from a thread in the namespace pinned to
/// the client CPU, `connections` at once; any failed connection fails it.
fn tls_load(c: &Client<'_>, port: u16) -> anyhow::Result<Wrk> {
    let connector = tls_client(c.cert)?;
    let ns = PathBuf::from("/run/netns").join(&c.lab.ns);
    let (seconds, connections) = (c.seconds, c.connections);
    std::thread::scope(|sc| {
        sc.spawn(move || -> anyhow::Result<Wrk> {
            let f = std::fs::File::open(&ns).context("netns")?;
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
            pin_thread(CLIENT_CPU.parse()?)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let started = Instant::now();
                let deadline = started + Duration::from_secs(seconds);
                let mut tasks = tokio::task::JoinSet::new();
                for _ in 0..connections {
                    let c = connector.clone();
                    tasks.spawn(async move {
                        let mut ms = vec![];
                        while Instant::now() < deadline {
                            let t0 = Instant::now();
                            tokio::time::timeout(Duration::from_secs(10), tls_request(&c, port))
                                .await
                                .context("no answer within 10 s")??;
                            ms.push(t0.elapsed().as_secs_f64() * 1000.0);
                        }
                        anyhow::Ok(ms)
                    });
                }
                let mut ms = vec![];
                while let Some(r) = tasks.join_next().await {
                    ms.extend(r.context("TLS client task")??);
                }
                let wall = started.elapsed().as_secs_f64();
                ensure!(!ms.is_empty(), "no TLS request completed");
                ms.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
                let at = |p: usize| ms[(ms.len() * p / 100).min(ms.len() - 1)];
                Ok(Wrk {
                    requests: ms.len() as u64,
                    rps: ms.len() as f64 / wall,
                    p50_ms: at(50),
                    p99_ms: at(99),
                })
            })
        })
        .join()
        .expect("TLS client thread")
    })
}

/// One checked wrk run against the row, with the proxy's CPU around it.
struct Run {
    wrk: Wrk,
    /// The proxy process's CPU per 1,000 requests, ms.
    cpu_ms_per_k: f64,
    /// Of which system time.
    sys_ms_per_k: f64,
    /// Its CPU time over the run's wall time (1.0: one CPU busy).
    busy: f64,
}

struct Client<'a> {
    lab: &'a Lab,
    conf: &'a Path,
    /// The bench's certificate (PEM).
    cert: &'a Path,
    seconds: u64,
    connections: usize,
}

fn measure(c: &Client<'_>, row: Row, up: &Up, mode: Mode) -> anyhow::Result<Run> {
    let (http, https) = row.ports();
    let url = match mode {
        Mode::Tls => format!("https://127.0.0.1:{https}/"),
        _ => format!("http://127.0.0.1:{http}/"),
    };
    let m0 = member_requests(c.lab)?;
    let own0 = own(c.lab, row, up)?;
    let (cpu0, t0) = (process_cpu(up.pid)?, Instant::now());
    let d = format!("{}s", c.seconds);
    let conns = format!("-c{}", c.connections);
    let mut argv = vec![
        "taskset",
        "-c",
        CLIENT_CPU,
        "wrk",
        "-t1",
        &conns,
        "-d",
        &d,
        "--latency",
    ];
    if mode != Mode::KeepAlive {
        argv.extend(["-H", "Connection: close"]);
    }
    argv.push(&url);
    let what = format!("{}, {}", row.name(), mode.name());
    let w = if mode == Mode::Tls {
        tls_load(c, https)
    } else {
        c.lab.sh(&argv).and_then(|o| parse_wrk(&o))
    };
    let (cpu1, wall) = (process_cpu(up.pid)?, t0.elapsed().as_secs_f64());
    let w = w.with_context(|| what.clone())?;
    // The members served every request wrk completed (wrk may have a few
    // more in flight at its end), both of them behind a proxy.
    let m1 = member_requests(c.lab)?;
    // The members' counters count the reads of themselves.
    let served = [m1[0] - m0[0] - 1, m1[1] - m0[1] - 1];
    match row {
        Row::Direct => ensure!(
            served[0] >= w.requests,
            "{what}: member m1 served {} requests, wrk completed {}",
            served[0],
            w.requests
        ),
        _ => ensure!(
            served[0] > 0 && served[1] > 0 && served[0] + served[1] >= w.requests,
            "{what}: the members served {served:?} requests, wrk completed {}: not balanced over both",
            w.requests
        ),
    }
    // The row's server counted them itself.
    let own1 = own(c.lab, row, up)?;
    let (req, conn) = (
        own1.requests - own0.requests,
        own1.connections - own0.connections,
    );
    ensure!(
        req >= w.requests,
        "{what}: the server on the path counted {req} requests, wrk completed {}",
        w.requests
    );
    ensure!(
        own1.errors == own0.errors,
        "{what}: the proxy answered {} requests with an error itself",
        own1.errors - own0.errors
    );
    if let (Some(a), Some(b)) = (own0.members, own1.members) {
        ensure!(
            b[0] > a[0] && b[1] > a[1],
            "{what}: the proxy's per-member counters did not both move: {a:?} -> {b:?}"
        );
    }
    if mode != Mode::KeepAlive {
        // A new connection (a full handshake for TLS) per request.
        ensure!(
            conn >= w.requests,
            "{what}: {conn} connections for {} requests: not one per request",
            w.requests
        );
    } else {
        ensure!(
            conn <= 2 * c.connections as u64 + 2,
            "{what}: {conn} connections for {} keep-alive connections",
            c.connections
        );
    }
    let (cpu, sys) = (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1);
    ensure!(cpu > 0.0, "{what}: the server's CPU time did not move");
    Ok(Run {
        wrk: w,
        cpu_ms_per_k: cpu * 1000.0 / (w.requests as f64 / 1000.0),
        sys_ms_per_k: sys * 1000.0 / (w.requests as f64 / 1000.0),
        busy: cpu / wall,
    })
}

/// `openssl s_client` against the row's TLS port, with `-groups P-256
/// -tls1_3` and with the client configuration alone: both must negotiate TLS
/// 1.3 with P-256 and our certificate.
fn check_tls(c: &Client<'_>, row: Row) -> anyhow::Result<()> {
    let (_, https) = row.ports();
    let addr = format!("127.0.0.1:{https}");
    for flags in [&["-groups", "P-256", "-tls1_3"][..], &[][..]] {
        let mut argv = vec!["openssl", "s_client", "-connect", &addr, "-brief"];
        argv.extend(flags);
        // -brief prints the summary on stderr: run through sh to get it.
        let cmd = format!("{} </dev/null 2>&1", argv.join(" "));
        let o = c
            .lab
            .sh_env(&["sh", "-c", &cmd], &[("OPENSSL_CONF", c.conf)])
            .with_context(|| format!("{}: openssl s_client", row.name()))?;
        ensure!(
            o.contains("Protocol version: TLSv1.3")
                && o.contains("Server Temp Key: ECDH, prime256v1")
                && o.contains("CN = l7.bench"),
            "{}: openssl s_client {} did not negotiate TLS 1.3 with P-256 and the bench's certificate: {o}",
            row.name(),
            flags.join(" ")
        );
    }
    Ok(())
}

/// The nginx proxy's access log: the TLS client's requests were TLS 1.3
/// with P-256, none resumed (the server's view of the client's own check).
fn check_client_tls(lab: &Lab) -> anyhow::Result<()> {
    // The log is flushed every 200 ms.
    std::thread::sleep(Duration::from_millis(600));
    let log = std::fs::read_to_string(lab.path("nginx-proxy/access.log"))?;
    let port = Row::Nginx.ports().1.to_string();
    let tls: Vec<&str> = log
        .lines()
        .filter(|l| l.split(' ').next() == Some(&port))
        .collect();
    ensure!(!tls.is_empty(), "nginx proxy: no TLS request in its log");
    let bad: Vec<&&str> = tls
        .iter()
        .filter(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.get(2..5) != Some(&["TLSv1.3", "prime256v1", "."][..])
        })
        .collect();
    ensure!(
        bad.is_empty(),
        "nginx proxy: {} of {} TLS requests were not full TLS 1.3 P-256 handshakes, e.g. {:?}",
        bad.len(),
        tls.len(),
        bad.first()
    );
    Ok(())
}

/// Opens `k` keep-alive connections to the row's plain port, one request
/// each (answered 200), and keeps them open: the process's RSS before and
/// after, and the connections the server says are open then: KiB per
/// connection.
fn idle_memory(lab: &Lab, row: Row, up: &Up, k: usize) -> anyhow::Result<f64> {
    let (http, _) = row.ports();
    let before = rss_kib(up.pid)?;
    let base = own(lab, row, up)?.active;
    let ns = PathBuf::from("/run/netns").join(&lab.ns);
    // The connections are made from a thread in the namespace.
    let conns = std::thread::scope(|sc| {
        sc.spawn(|| -> anyhow::Result<Vec<std::net::TcpStream>> {
            let f = std::fs::File::open(&ns).context("netns")?;
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
            let mut v = Vec::with_capacity(k);
            let mut buf = [0u8; 4096];
            for i in 0..k {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", http))
                    .with_context(|| format!("idle connection {i}"))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(b"GET / HTTP/1.1\r\nHost: l7.bench\r\n\r\n")?;
                let mut got = Vec::new();
                // The answer: its head, then "ok\n".
                while !(got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"ok\n")) {
                    let n = s
                        .read(&mut buf)
                        .with_context(|| format!("idle connection {i}: reading the answer"))?;
                    ensure!(n > 0, "idle connection {i}: closed before the answer");
                    got.extend_from_slice(&buf[..n]);
                }
                ensure!(
                    got.starts_with(b"HTTP/1.1 200"),
                    "idle connection {i}: {}",
                    String::from_utf8_lossy(&got)
                );
                v.push(s);
            }
            Ok(v)
        })
        .join()
        .expect("idle connections thread")
    })
    .with_context(|| format!("{}: idle connections", row.name()))?;
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(up.pid)?;
    let active = own(lab, row, up)?.active;
    ensure!(
        active >= base + k as u64,
        "{}: {} connections open at the server with {k} idle ones from the bench ({base} before)",
        row.name(),
        active
    );
    drop(conns);
    Ok((after - before) / k as f64)
}

/// One pass of one row: its figures.
#[derive(Clone, Copy, Debug)]
struct Figures {
    keep: (f64, f64, f64, f64),
    /// Keep-alive: system CPU per 1,000 requests, ms.
    keep_sys: f64,
    close: (f64, f64),
    tls: (f64, f64),
    /// KiB per idle connection.
    mem: f64,
    busy: [f64; 3],
}

fn measure_row(c: &Client<'_>, row: Row, members: &[u32], idle: usize) -> anyhow::Result<Figures> {
    let lab = c.lab;
    let up = start_row(lab, row, members)?;
    let r = (|| {
        check_tls(c, row)?;
        // A few requests first (the process's first allocations), then the
        // idle connections on the fresh process.
        for _ in 0..4 {
            wait_ready(lab, row.ports().0)?;
        }
        let mem = idle_memory(lab, row, &up, idle)?;
        let keep = measure(c, row, &up, Mode::KeepAlive)?;
        let close = measure(c, row, &up, Mode::Close)?;
        let tls = measure(c, row, &up, Mode::Tls)?;
        if row == Row::Nginx {
            check_client_tls(lab)?;
        }
        lab.alive(up.pid, &up.log)?;
        Ok(Figures {
            keep: (
                keep.wrk.rps,
                keep.wrk.p50_ms,
                keep.wrk.p99_ms,
                keep.cpu_ms_per_k,
            ),
            keep_sys: keep.sys_ms_per_k,
            close: (close.wrk.rps, close.cpu_ms_per_k),
            tls: (tls.wrk.rps, tls.cpu_ms_per_k),
            mem,
            busy: [keep.busy, close.busy, tls.busy],
        })
    })();
    stop_row(lab, row, &up);
    r.map_err(|e: anyhow::Error| {
        let log = std::fs::read_to_string(lab.path(&up.log)).unwrap_or_default();
        if log.trim().is_empty() {
            e
        } else {
            e.context(format!("{}: {}", up.log, log.trim()))
        }
    })
}

/// Stops the row's server (the direct row's member keeps running).
fn stop_row(lab: &Lab, row: Row, up: &Up) {
    if row != Row::Direct {
        lab.stop(up.pid);
    }
}

// ---------------------------------------------------------------------------
// The run.

/// Raises this process's open-file limit to its hard limit (the idle
/// connections; the servers inherit it).
fn raise_nofile() -> anyhow::Result<()> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct we own.
    let ok = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r) == 0
        }
    };
    ensure!(
        ok,
        "raising the open-file limit: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

pub fn run(opts: &Options, out: &mut String) -> anyhow::Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    ensure!(
        cpus >= 2,
        "the L7 bench pins the proxy and the client to two different CPUs: {cpus} available"
    );
    raise_nofile()?;
    let (connections, idle) = if opts.smoke { (4, 50) } else { (50, 1000) };
    eprintln!(
        "bench: L7 proxies (wrk -t1 -c{connections}, {} s runs, 2 nginx members, {idle} idle connections)",
        opts.seconds
    );
    let lab = Lab::new()?;
    let (crt, key) = make_cert(&lab)?;
    let conf = client_openssl_conf(&lab)?;
    let members = start_members(&lab, &crt, &key)?;
    let mut samples: Vec<Vec<Figures>> = Row::ALL.iter().map(|_| vec![]).collect();
    for pass in 0..opts.passes {
        let mut order: Vec<usize> = (0..Row::ALL.len()).collect();
        if pass % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let row = Row::ALL[i];
            eprintln!("bench: L7 ({}/{}): {}", pass + 1, opts.passes, row.name());
            let client = Client {
                lab: &lab,
                conf: &conf,
                cert: &crt,
                seconds: opts.seconds,
                connections,
            };
            let f = measure_row(&client, row, &members, idle);
            let f = f.with_context(|| row.name().to_owned())?;
            eprintln!(
                "bench:   keep-alive {:.0} req/s (p50 {:.2} ms, p99 {:.2} ms, {:.1} ms CPU/1k), close {:.0} req/s, TLS {:.0} handshakes/s, {:.1} KiB/idle conn, busy {:.2}/{:.2}/{:.2}",
                f.keep.0, f.keep.1, f.keep.2, f.keep.3, f.close.0, f.tls.0, f.mem, f.busy[0], f.busy[1], f.busy[2]
            );
            samples[i].push(f);
        }
    }
    drop(lab);
    if opts.smoke {
        return Ok(());
    }
    write_results(opts, connections, idle, &samples, out)
}

/// A figure of the Strato / HAProxy table: its name, how it is read from
/// a pass, its decimals.
type Figure<'a> = (&'a str, &'a dyn Fn(&Figures) -> f64, usize);

fn write_results(
    opts: &Options,
    connections: usize,
    idle: usize,
    samples: &[Vec<Figures>],
    out: &mut String,
) -> anyhow::Result<()> {
    let col =
        |i: usize, f: &dyn Fn(&Figures) -> f64| samples[i].iter().map(f).collect::<Vec<f64>>();
    let (strato, hap) = (1, 2);
    debug_assert_eq!(
        (Row::ALL[strato], Row::ALL[hap]),
        (Row::Strato, Row::Haproxy)
    );
    let keep = |i| col(i, &|f| f.keep.0);
    let p99 = |i| col(i, &|f| f.keep.2);
    let cpu_keep = |i| col(i, &|f| f.keep.3);
    let close = |i| col(i, &|f| f.close.0);
    let tls = |i| col(i, &|f| f.tls.0);
    let table = "L7 proxies";
    let ratio = |a: Vec<f64>, b: Vec<f64>| Stat::of(&benchkit::ratios(&a, &b));
    benchkit::target(
        table,
        "Strato: keep-alive requests/s >= 1.2x HAProxy",
        Bound::AtLeast(1.2),
        &ratio(keep(strato), keep(hap)),
        2,
        "x",
    );
    benchkit::target(
        table,
        "Strato: CPU per keep-alive request <= 0.8x HAProxy's",
        Bound::AtMost(0.8),
        &ratio(cpu_keep(strato), cpu_keep(hap)),
        2,
        "x",
    );
    benchkit::target(
        table,
        "Strato: keep-alive p99 latency <= HAProxy's",
        Bound::AtMost(1.0),
        &ratio(p99(strato), p99(hap)),
        2,
        "x",
    );
    benchkit::target(
        table,
        "Strato: TLS handshakes/s >= 1.0x HAProxy",
        Bound::AtLeast(1.0),
        &ratio(tls(strato), tls(hap)),
        2,
        "x",
    );
    let (s, p) = (opts.seconds, opts.passes);
    let bin = crate::e2e::bin_dir().join("strato-l7");
    let cwd = std::env::current_dir().unwrap_or_default();
    let bin = bin.strip_prefix(&cwd).unwrap_or(&bin).display().to_string();
    writeln!(out, "### L7 proxies: requests/s, TLS handshakes/s, latency, CPU and memory ({s} s runs, {p} passes, wrk 1 thread {connections} connections, 2 nginx members)\n")?;
    writeln!(out, "One network namespace, loopback only. Each proxy alone on CPU 1 with one worker (`{bin} --threads 1`, HAProxy `nbthread 1`, nginx `worker_processes 1`), balancing round robin over two nginx members (one process each, a 3-byte answer) that share CPU 0 with wrk; direct: wrk straight at member m1 (its own TLS listener for the TLS column). Per pass each proxy is started fresh, {idle} idle keep-alive connections are opened (one request each) and closed, then wrk runs keep-alive and `Connection: close`, then the TLS run: TLS 1.3 with ECDHE P-256 and an ECDSA P-256 certificate, a new connection, a full handshake and one `Connection: close` request each, {connections} at once, from the bench's own client (rustls, resumption off, on CPU 0: wrk keeps its OpenSSL session across reconnections and would resume); TLS p50/p99 are not shown. Rows in turn, the order reversed every other pass; every figure is the median (min-max) of the passes, ratios per pass. CPU: the server process's user + system time (/proc/<pid>/stat) over the run per 1,000 requests, and the system (kernel) part of it for keep-alive: its socket calls, where on loopback each send also runs the receiver's TCP processing; busy: that time over the run's wall time (1.00: its CPU saturated). Memory: the server's RSS with the idle connections open minus before, per connection. strato-l7 writes its access log (one JSON line per request, buffered); the nginx proxy logs too (buffered), HAProxy does not. The bench fails on any wrk error (socket errors, non-2xx answers), unless both members served at least the requests wrk completed and the proxy counted them itself (strato-l7 `/stats`, HAProxy's stats socket, nginx `stub_status`; a connection per request in the close and TLS runs), unless the idle connections were open at the server when its memory was read, unless `openssl s_client` negotiated TLS 1.3 with P-256 on every TLS listener, and unless every handshake of the TLS client was a full TLS 1.3 one with P-256 (the client's own check, and the nginx proxy's log: none resumed). A proxy busy well under 1.00 was not the bound: the client side (wrk and both members on CPU 0) was; compare CPU per request then.\n")?;
    writeln!(out, "| row | keep-alive req/s | x HAProxy | p50 ms | p99 ms | CPU ms / 1k req | of which kernel | close req/s | x HAProxy | CPU ms / 1k req | TLS handshakes/s | x HAProxy | CPU ms / 1k handshakes | busy (keep-alive, close, TLS) | KiB / idle conn |")?;
    writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )?;
    for (i, row) in Row::ALL.iter().enumerate() {
        let med = |f: &dyn Fn(&Figures) -> f64| Stat::of(&col(i, f)).median;
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2}, {:.2}, {:.2} | {} |",
            row.name(),
            Stat::of(&keep(i)).fmt(0),
            benchkit::ratio_text(&keep(i), &keep(hap)),
            Stat::of(&col(i, &|f| f.keep.1)).fmt(2),
            Stat::of(&p99(i)).fmt(2),
            Stat::of(&cpu_keep(i)).fmt(1),
            Stat::of(&col(i, &|f| f.keep_sys)).fmt(1),
            Stat::of(&close(i)).fmt(0),
            benchkit::ratio_text(&close(i), &close(hap)),
            Stat::of(&col(i, &|f| f.close.1)).fmt(1),
            Stat::of(&tls(i)).fmt(0),
            benchkit::ratio_text(&tls(i), &tls(hap)),
            Stat::of(&col(i, &|f| f.tls.1)).fmt(1),
            med(&|f| f.busy[0]),
            med(&|f| f.busy[1]),
            med(&|f| f.busy[2]),
            Stat::of(&col(i, &|f| f.mem)).fmt(1),
        )?;
    }
    writeln!(out)?;
    writeln!(out, "Strato / HAProxy, per pass (median (min-max)):\n")?;
    writeln!(out, "| figure | Strato | HAProxy | Strato / HAProxy |")?;
    writeln!(out, "| --- | ---: | ---: | ---: |")?;
    let figs: [Figure<'_>; 10] = [
        ("keep-alive requests/s", &|f| f.keep.0, 0),
        ("keep-alive p50 latency, ms", &|f| f.keep.1, 2),
        ("keep-alive p99 latency, ms", &|f| f.keep.2, 2),
        ("CPU per 1,000 keep-alive requests, ms", &|f| f.keep.3, 1),
        ("of which user space, ms", &|f| f.keep.3 - f.keep_sys, 1),
        ("of which kernel (system time), ms", &|f| f.keep_sys, 1),
        ("`Connection: close` requests/s", &|f| f.close.0, 0),
        ("TLS handshakes/s", &|f| f.tls.0, 0),
        ("CPU per 1,000 TLS handshakes, ms", &|f| f.tls.1, 1),
        ("memory per idle connection, KiB", &|f| f.mem, 1),
    ];
    for (name, f, prec) in figs {
        writeln!(
            out,
            "| {name} | {} | {} | {} |",
            Stat::of(&col(strato, f)).fmt(prec),
            Stat::of(&col(hap, f)).fmt(prec),
            benchkit::ratio_text(&col(strato, f), &col(hap, f)),
        )?;
    }
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk() {
        let o = "Running 1s test @ http://127.0.0.1:8100/\n  1 threads and 4 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   210.37us  101.51us   3.09ms   93.78%\n  Latency Distribution\n     50%  191.00us\n     75%  224.00us\n     90%  278.00us\n     99%    1.01ms\n  18744 requests in 1.00s, 2.71MB read\nRequests/sec:  18725.27\nTransfer/sec:      2.71MB\n";
        let w = parse_wrk(o).expect("parses");
        assert_eq!(w.requests, 18744);
        assert!((w.p50_ms - 0.191).abs() < 1e-9 && (w.p99_ms - 1.01).abs() < 1e-9);
        let bad = o.replace(
            "Requests/sec",
            "  Socket errors: connect 0, read 2, write 0, timeout 0\nRequests/sec",
        );
        assert!(parse_wrk(&bad).is_err());
        assert_eq!(wrk_ms("1.50s"), Some(1500.0));
    }
}
