//! End to end, the L7 load balancer, in the default region (two AZs),
//! configured only through the stock `openstack` CLI (python-octaviaclient
//! and python-barbicanclient, from the bootstrap's venv), with real HTTP
//! from VMs to members running tests/interop/httpmember.py:
//!
//! - an HTTP listener gets an instance in each zone of its members
//!   (`openstack loadbalancer amphora list`), both READY; requests are
//!   spread over the members, and X-Forwarded-For / -Proto are the client
//!   VM's address and `http`;
//! - an instance's process killed under load: new connections wait for its
//!   restart in the backlog of the socket the agent holds, so no request
//!   fails beyond those in flight on it;
//! - L7 policies through `openstack loadbalancer l7policy/l7rule`: host,
//!   path, header, cookie and file-type routing to a second pool, a
//!   redirect (301 with its Location) and a reject (403), first match by
//!   position;
//! - HTTP_COOKIE persistence: a client with the cookie stays on one member;
//! - TERMINATED_HTTPS with two certificates made by openssl and stored with
//!   `openstack secret store` / `secret container create`: the default one
//!   and the one SNI picks; HTTP/2 by ALPN (`curl --http2`);
//! - a WebSocket upgrade passed through;
//! - a slow request survives its member being disabled (draining), and new
//!   requests avoid the member;
//! - the access log has the requests (`stratoctl l7-log`);
//! - public: a floating IP on the VIP; the internet client's requests reach
//!   the members with its own address in X-Forwarded-For;
//! - the instances' metrics through `stratoctl l7-metrics`;
//! - a host fails (agent killed, instance frozen): its instance goes ERROR
//!   and requests are served by the other;
//! - listener stats count the requests' connections.

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use netns_harness::Topology;
use serde_json::Value;
use strato_tests::e2e::{Cloud, Servers, Vm, OPENSTACK_VENV};

const MEMBER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/httpmember.py");
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/httpclient.py");
const PYTHON: &str = "/usr/bin/python3";
/// The internet namespace's client.
const INTERNET: &str = "inet-client1";

static SERVERS: Servers = Servers::new();

#[test]
fn l7_load_balancer_end_to_end() {
    let cloud = Cloud::up("sev", &Topology::default_region());
    SERVERS.run_then_reap(
        || run(&cloud),
        || {
            eprintln!("{}", cloud.log_tail("controller", 40));
            for h in cloud.region.hosts() {
                eprintln!("{}", cloud.log_tail(&format!("agent-{}", h.name), 20));
                let l7 = cloud.agent_dir(&h).join("l7");
                for e in std::fs::read_dir(&l7).into_iter().flatten().flatten() {
                    let log = std::fs::read_to_string(e.path().join("l7.log")).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    eprintln!(
                        "--- {} ---\n{}",
                        e.path().display(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            }
        },
    );
}

/// The stock CLI as one user of one project.
struct Cli {
    env: Vec<(String, String)>,
}

impl Cli {
    fn new(cloud: &Cloud, user: &str, password: &str, project: &str) -> Cli {
        let strato_proto::client::Endpoint::Tcp(addr) = &cloud.api else {
            unreachable!("the API is on TCP")
        };
        let env = [
            ("OS_AUTH_URL", format!("http://{addr}/v3")),
            ("OS_USERNAME", user.to_owned()),
            ("OS_PASSWORD", password.to_owned()),
            ("OS_PROJECT_NAME", project.to_owned()),
            ("OS_USER_DOMAIN_NAME", "Default".into()),
            ("OS_PROJECT_DOMAIN_NAME", "Default".into()),
            ("OS_IDENTITY_API_VERSION", "3".into()),
            ("OS_INTERFACE", "public".into()),
        ];
        Cli {
            env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(Path::new(OPENSTACK_VENV).join("bin/openstack"))
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run openstack")
    }

    /// Runs a command that must succeed; its JSON output (`-f json`).
    #[track_caller]
    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-f", "json"]);
        let o = self.run(&a);
        assert!(
            o.status.success(),
            "openstack {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "openstack {}: {e}: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stdout)
            )
        })
    }

    #[track_caller]
    fn id(&self, args: &[&str]) -> String {
        self.json(args)["id"].as_str().expect("id").to_owned()
    }
}

/// `curl` in VM `from`; (status, body).
fn curl(cloud: &Cloud, from: &str, args: &[&str]) -> (u16, String) {
    let mut argv = vec!["curl", "-s", "-m", "10", "-w", "\n%{http_code}"];
    argv.extend(args);
    let o = cloud.region.exec(from, &argv).expect("exec curl");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// A certificate container (P-256, CN `cn`, made by openssl) stored
/// through `openstack secret store` and `secret container create`; its
/// reference.
fn certificate(cli: &Cli, cn: &str) -> String {
    let dir = std::env::temp_dir().join(format!("strato-e2e-l7-{}-{cn}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let o = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
        ])
        .arg(format!("/CN={cn}"))
        .current_dir(&dir)
        .output()
        .expect("openssl");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut refs = Vec::new();
    for (name, f) in [("certificate", "cert.pem"), ("private_key", "key.pem")] {
        let payload = std::fs::read_to_string(dir.join(f)).expect("pem");
        let v = cli.json(&[
            "secret",
            "store",
            "--name",
            &format!("{cn}-{name}"),
            "--payload",
            &payload,
            "--payload-content-type",
            "text/plain",
        ]);
        refs.push(format!(
            "{name}={}",
            v["Secret href"].as_str().expect("href")
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let o = cli.run(&[
        "secret",
        "container",
        "create",
        "--name",
        cn,
        "--type",
        "certificate",
        "--secret",
        &refs[0],
        "--secret",
        &refs[1],
        "-f",
        "value",
        "-c",
        "Container href",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn member_of(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["member"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn run(cloud: &Cloud) {
    let admin = cloud.admin();
    let api = cloud.tenant("l7t");
    let cli = Cli::new(cloud, "l7t", "l7t-password", "l7t");
    let admin_cli = Cli::new(cloud, "admin", strato_tests::e2e::ADMIN_PASSWORD, "admin");
    let vpc = Cloud::vpc(&api, &["10.0.1.0/24", "10.0.2.0/24"], &[]);
    // Members answer the VPC on 8080 (the instances' addresses are in the
    // VIP's subnet).
    let groups = api.expect(200, "GET", "/v2.0/security-groups?name=default", None);
    let default_sg = groups["security_groups"][0]["id"]
        .as_str()
        .expect("default group")
        .to_owned();
    api.allow_tcp_from_cidr(&default_sg, 8080, "10.0.0.0/16");
    let m1 = cloud.boot(&admin, &api, &vpc.nets[0], "m1", "az1-c1", None);
    let m2 = cloud.boot(&admin, &api, &vpc.nets[1], "m2", "az2-c1", None);
    let m3 = cloud.boot(&admin, &api, &vpc.nets[0], "m3", "az1-c2", None);
    let c1 = cloud.boot(&admin, &api, &vpc.nets[0], "c1", "az1-c2", None);
    let vms: Vec<&Vm> = vec![&m1, &m2, &m3, &c1];
    cloud.wait_until_active(&api, &vms);
    for m in [&m1, &m2, &m3] {
        SERVERS.keep(
            cloud
                .region
                .command(&m.name, &[PYTHON, MEMBER, &m.name, "8080"])
                .expect("command")
                .spawn()
                .expect("spawn member"),
        );
    }

    // Through the stock CLI.
    let lb = cli.json(&[
        "loadbalancer",
        "create",
        "--name",
        "web",
        "--vip-subnet-id",
        &vpc.subnets[0],
    ]);
    let lb_id = lb["id"].as_str().expect("lb id").to_owned();
    let vip = lb["vip_address"].as_str().expect("vip").to_owned();
    let listener = cli.id(&[
        "loadbalancer",
        "listener",
        "create",
        "--name",
        "http",
        "--protocol",
        "HTTP",
        "--protocol-port",
        "80",
        "--insert-headers",
        "X-Forwarded-For=true,X-Forwarded-Proto=true",
        &lb_id,
    ]);
    let pool = cli.id(&[
        "loadbalancer",
        "pool",
        "create",
        "--name",
        "main",
        "--lb-algorithm",
        "ROUND_ROBIN",
        "--listener",
        &listener,
        "--protocol",
        "HTTP",
    ]);
    for (m, s) in [(&m1, &vpc.subnets[0]), (&m2, &vpc.subnets[1])] {
        cli.id(&[
            "loadbalancer",
            "member",
            "create",
            "--name",
            &m.name,
            "--address",
            &m.ip,
            "--protocol-port",
            "8080",
            "--subnet-id",
            s,
            &pool,
        ]);
    }

    // An instance in each zone of the members, both serving.
    let mut amphorae = Vec::new();
    cloud.wait_until("two READY L7 instances", Duration::from_secs(60), || {
        let v = admin_cli.json(&["loadbalancer", "amphora", "list", "--loadbalancer", &lb_id]);
        amphorae = v.as_array().cloned().unwrap_or_default();
        amphorae.len() == 2 && amphorae.iter().all(|a| a["status"] == "READY")
    });
    // A tenant does not see them.
    assert!(
        !cli.run(&["loadbalancer", "amphora", "list"])
            .status
            .success(),
        "amphorae are for administrators"
    );
    let zones: std::collections::BTreeSet<String> = amphorae
        .iter()
        .filter_map(|a| {
            let id = a["id"].as_str()?;
            let full = admin_cli.json(&["loadbalancer", "amphora", "show", id]);
            full["cached_zone"].as_str().map(str::to_owned)
        })
        .collect();
    assert_eq!(zones.len(), 2, "one instance per member zone: {amphorae:?}");

    // Requests are spread and carry the client's address.
    let url = format!("http://{vip}/hello");
    cloud.wait_until("the VIP answers HTTP", Duration::from_secs(20), || {
        curl(cloud, "c1", &[&url]).0 == 200
    });
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..20 {
        let (status, body) = curl(cloud, "c1", &[&url]);
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("member JSON");
        assert_eq!(v["headers"]["x-forwarded-for"], c1.ip, "{body}");
        assert_eq!(v["headers"]["x-forwarded-proto"], "http", "{body}");
        *seen.entry(member_of(&body)).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "both members answered: {seen:?}");

    // An instance killed under load: only what was in flight on it may
    // fail (sequential requests: at most one).
    let victim = amphorae[0]["id"].as_str().expect("id").to_owned();
    let victim_dir = cloud
        .region
        .hosts()
        .iter()
        .map(|h| cloud.agent_dir(h).join("l7").join(&victim))
        .find(|d| d.join("l7.pid").exists())
        .expect("the instance's directory");
    let served = || {
        std::fs::read_to_string(victim_dir.join(strato_proto::l7::ACCESS_LOG))
            .map_or(0, |t| t.lines().count())
    };
    let before = served();
    let load = cloud
        .region
        .command("c1", &[PYTHON, CLIENT, "load", &vip, "80", "8"])
        .expect("command")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("load");
    // The instance is serving the load (its log is written every second).
    cloud.wait_until(
        "the instance serves the load",
        Duration::from_secs(6),
        || served() > before,
    );
    let pid = std::fs::read_to_string(victim_dir.join("l7.pid")).expect("the instance's pid file");
    let pid: i32 = pid.trim().parse().expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the instance");
    let out = load.wait_with_output().expect("load result");
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("load client: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    eprintln!("under load, one instance killed: {r}");
    assert!(r["ok"].as_u64().unwrap_or(0) > 50, "{r}");
    assert!(r["failed"].as_u64().unwrap_or(99) <= 1, "{r}");
    // It serves again (restarted by its agent).
    cloud.wait_until(
        "the killed instance READY again",
        Duration::from_secs(20),
        || admin_cli.json(&["loadbalancer", "amphora", "show", &victim])["status"] == "READY",
    );

    // L7 policies: a second pool (m3) for images and the API.
    let images = cli.id(&[
        "loadbalancer",
        "pool",
        "create",
        "--name",
        "images",
        "--lb-algorithm",
        "ROUND_ROBIN",
        "--loadbalancer",
        &lb_id,
        "--protocol",
        "HTTP",
    ]);
    cli.id(&[
        "loadbalancer",
        "member",
        "create",
        "--name",
        "m3",
        "--address",
        &m3.ip,
        "--protocol-port",
        "8080",
        "--subnet-id",
        &vpc.subnets[0],
        &images,
    ]);
    let policy = |name: &str, extra: &[&str]| -> String {
        let mut a = vec!["loadbalancer", "l7policy", "create", "--name", name];
        a.extend(extra);
        a.push(&listener);
        cli.id(&a)
    };
    let rule = |policy: &str, args: &[&str]| {
        let mut a = vec!["loadbalancer", "l7rule", "create"];
        a.extend(args);
        a.push(policy);
        cli.id(&a);
    };
    let p_reject = policy("reject-admin", &["--action", "REJECT", "--position", "1"]);
    rule(
        &p_reject,
        &[
            "--type",
            "PATH",
            "--compare-type",
            "STARTS_WITH",
            "--value",
            "/admin",
        ],
    );
    let p_redirect = policy(
        "redirect-old",
        &[
            "--action",
            "REDIRECT_TO_URL",
            "--redirect-url",
            "https://new.example/",
            "--redirect-http-code",
            "301",
        ],
    );
    rule(
        &p_redirect,
        &[
            "--type",
            "HOST_NAME",
            "--compare-type",
            "EQUAL_TO",
            "--value",
            "old.example",
        ],
    );
    let p_img = policy(
        "images",
        &["--action", "REDIRECT_TO_POOL", "--redirect-pool", &images],
    );
    rule(
        &p_img,
        &[
            "--type",
            "FILE_TYPE",
            "--compare-type",
            "EQUAL_TO",
            "--value",
            "jpg",
        ],
    );
    let p_hdr = policy(
        "beta",
        &["--action", "REDIRECT_TO_POOL", "--redirect-pool", &images],
    );
    rule(
        &p_hdr,
        &[
            "--type",
            "HEADER",
            "--compare-type",
            "EQUAL_TO",
            "--key",
            "X-Beta",
            "--value",
            "yes",
        ],
    );
    let p_cookie = policy(
        "cookie",
        &["--action", "REDIRECT_TO_POOL", "--redirect-pool", &images],
    );
    rule(
        &p_cookie,
        &[
            "--type",
            "COOKIE",
            "--compare-type",
            "REGEX",
            "--key",
            "tier",
            "--value",
            "^gold",
        ],
    );
    let p_path = policy(
        "api",
        &["--action", "REDIRECT_TO_POOL", "--redirect-pool", &images],
    );
    rule(
        &p_path,
        &[
            "--type",
            "PATH",
            "--compare-type",
            "STARTS_WITH",
            "--value",
            "/api/",
        ],
    );
    // Two rules ANDed: host shop.example and not path /cart.
    let p_and = policy(
        "shop",
        &["--action", "REDIRECT_TO_POOL", "--redirect-pool", &images],
    );
    rule(
        &p_and,
        &[
            "--type",
            "HOST_NAME",
            "--compare-type",
            "ENDS_WITH",
            "--value",
            "shop.example",
        ],
    );
    rule(
        &p_and,
        &[
            "--type",
            "PATH",
            "--compare-type",
            "STARTS_WITH",
            "--value",
            "/cart",
            "--invert",
        ],
    );
    let vip80 = format!("http://{vip}");
    cloud.wait_until("the policies are served", Duration::from_secs(20), || {
        curl(cloud, "c1", &[&format!("{vip80}/admin/x")]).0 == 403
    });
    let cases: &[(&str, &[&str], u16, &str)] = &[
        ("/admin/users", &[], 403, ""),
        ("/", &["-H", "Host: old.example"], 301, ""),
        ("/photos/cat.jpg", &[], 200, "m3"),
        ("/photos/cat.png", &[], 200, "main"),
        ("/x", &["-H", "X-Beta: yes"], 200, "m3"),
        ("/x", &["-H", "X-Beta: no"], 200, "main"),
        ("/x", &["-b", "tier=golden"], 200, "m3"),
        ("/x", &["-b", "tier=silver"], 200, "main"),
        ("/api/v1", &[], 200, "m3"),
        ("/apis", &[], 200, "main"),
        ("/", &["-H", "Host: www.shop.example"], 200, "m3"),
        ("/cart", &["-H", "Host: www.shop.example"], 200, "main"),
    ];
    for (path, extra, want, member) in cases {
        let url = format!("{vip80}{path}");
        let mut args: Vec<&str> = extra.to_vec();
        args.push(&url);
        let (status, body) = curl(cloud, "c1", &args);
        assert_eq!(status, *want, "{path} {extra:?}: {body}");
        match *member {
            "" => {}
            "main" => assert!(
                ["m1", "m2"].contains(&member_of(&body).as_str()),
                "{path} {extra:?}: {body}"
            ),
            m => assert_eq!(member_of(&body), m, "{path} {extra:?}: {body}"),
        }
    }
    let (_, loc) = {
        let o = cloud
            .region
            .exec(
                "c1",
                &[
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{redirect_url}",
                    "-H",
                    "Host: old.example",
                    &vip80,
                ],
            )
            .expect("curl");
        (0, String::from_utf8_lossy(&o.stdout).into_owned())
    };
    assert_eq!(loc, "https://new.example/", "the redirect's Location");

    // Cookie persistence: with the cookie, one member; the cookie is set
    // by the load balancer.
    cli.run(&[
        "loadbalancer",
        "pool",
        "set",
        "--session-persistence",
        "type=HTTP_COOKIE",
        &pool,
    ]);
    let jar = "/tmp/strato-e2e-l7-jar";
    cloud.wait_until(
        "a persistence cookie is set",
        Duration::from_secs(20),
        || {
            let _ = std::fs::remove_file(jar);
            let (s, _) = curl(cloud, "c1", &["-c", jar, &format!("{vip80}/p")]);
            s == 200
                && std::fs::read_to_string(jar)
                    .unwrap_or_default()
                    .contains(strato_proto::l7::PERSISTENCE_COOKIE)
        },
    );
    let mut sticky = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let (s, body) = curl(cloud, "c1", &["-b", jar, &format!("{vip80}/p")]);
        assert_eq!(s, 200);
        sticky.insert(member_of(&body));
    }
    let _ = std::fs::remove_file(jar);
    assert_eq!(sticky.len(), 1, "one member with the cookie: {sticky:?}");

    // A WebSocket upgrade passes through.
    let o = cloud
        .region
        .exec("c1", &[PYTHON, CLIENT, "ws", &vip, "80"])
        .expect("ws client");
    let ws: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("ws client: {e}: {}", String::from_utf8_lossy(&o.stderr)));
    assert_eq!(ws, serde_json::json!({"status": 101, "echoed": true}));

    // TERMINATED_HTTPS: two certificates in the Key Manager.
    let default_ref = certificate(&cli, "www.example");
    let sni_ref = certificate(&cli, "api.example");
    let tls = cli.id(&[
        "loadbalancer",
        "listener",
        "create",
        "--name",
        "https",
        "--protocol",
        "TERMINATED_HTTPS",
        "--protocol-port",
        "443",
        "--default-tls-container-ref",
        &default_ref,
        "--sni-container-refs",
        &sni_ref,
        "--default-pool",
        &images,
        &lb_id,
    ]);
    let https = |host: &str, extra: &[&str]| -> Output {
        let resolve = format!("{host}:443:{vip}");
        let url = format!("https://{host}/tls");
        let mut a = vec!["curl", "-sk", "-m", "10", "-v", "--resolve", &resolve];
        a.extend(extra);
        a.push(&url);
        cloud.region.exec("c1", &a).expect("curl https")
    };
    cloud.wait_until("TERMINATED_HTTPS answers", Duration::from_secs(30), || {
        https("www.example", &[]).status.success()
    });
    let o = https("api.example", &["--http2"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        err.contains("CN=api.example"),
        "SNI picks its certificate: {err}"
    );
    assert!(err.contains("HTTP/2 200"), "HTTP/2 by ALPN: {err}");
    let v: Value = serde_json::from_slice(&o.stdout).expect("member JSON");
    assert_eq!(v["member"], "m3");
    let o = https("other.example", &["--http1.1"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        err.contains("CN=www.example"),
        "the default certificate: {err}"
    );
    let _ = tls;

    // Draining: a slow request to m3 survives m3 being disabled; new
    // requests avoid it (the images pool has m3 only: 503).
    let slow = cloud
        .region
        .command(
            "c1",
            &[
                "curl",
                "-s",
                "-m",
                "20",
                "-w",
                "\n%{http_code}",
                &format!("{vip80}/slow.jpg?ms=4000"),
            ],
        )
        .expect("command")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("slow request");
    std::thread::sleep(Duration::from_millis(800));
    let m3_id = cli.json(&["loadbalancer", "member", "show", &images, "m3"])["id"]
        .as_str()
        .expect("m3 id")
        .to_owned();
    cli.run(&[
        "loadbalancer",
        "member",
        "set",
        "--disable",
        &images,
        &m3_id,
    ]);
    cloud.wait_until(
        "no new request to a disabled member",
        Duration::from_secs(20),
        || curl(cloud, "c1", &[&format!("{vip80}/x.jpg")]).0 == 503,
    );
    let out = slow.wait_with_output().expect("slow result");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.trim_end().ends_with("200"),
        "the slow request finished: {text}"
    );
    assert_eq!(member_of(text.lines().next().unwrap_or("")), "m3", "{text}");

    // The access log, through stratoctl on the instances' hosts.
    let mut lines = Vec::new();
    for h in cloud.region.hosts() {
        let o = Command::new(strato_tests::e2e::bin("stratoctl"))
            .args(["--json", "l7-log", "--state-dir"])
            .arg(cloud.agent_dir(&h))
            .output()
            .expect("stratoctl l7-log");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Vec<Value> = serde_json::from_slice(&o.stdout).expect("l7-log JSON");
        lines.extend(v);
    }
    let admin_line = lines
        .iter()
        .find(|l| l["path"] == "/admin/users")
        .unwrap_or_else(|| panic!("the rejected request is logged: {} lines", lines.len()));
    assert_eq!(admin_line["status"], 403);
    assert_eq!(
        admin_line["client"]
            .as_str()
            .unwrap_or("")
            .split(':')
            .next(),
        Some(c1.ip.as_str())
    );
    assert!(
        lines
            .iter()
            .any(|l| l["sni"] == "api.example" && l["tls_version"] == "TLSv1.3"),
        "TLS requests are logged with SNI and version"
    );

    // Public: a floating IP on the VIP port; the internet client's
    // requests are balanced by the gateway hosts to the instances, which
    // see (and pass on) the client's own address.
    let ext = Cloud::external_network(&admin);
    Cloud::router_gateway(&api, &vpc.router, &ext);
    let vip_port = cli.json(&["loadbalancer", "show", &lb_id])["vip_port_id"]
        .as_str()
        .expect("vip port")
        .to_owned();
    let fip = api.expect(
        201,
        "POST",
        "/v2.0/floatingips",
        Some(serde_json::json!({"floatingip": {"floating_network_id": ext, "port_id": vip_port}})),
    )["floatingip"]["floating_ip_address"]
        .as_str()
        .expect("floating ip")
        .to_owned();
    let public = format!("http://{fip}/public");
    cloud.wait_until(
        "the public VIP answers HTTP",
        Duration::from_secs(30),
        || curl(cloud, INTERNET, &[&public]).0 == 200,
    );
    let inet_ip = {
        let o = cloud
            .region
            .exec(INTERNET, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
            .expect("ip addr");
        let t = String::from_utf8_lossy(&o.stdout).into_owned();
        t.split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .expect("the internet client's address")
            .to_owned()
    };
    for _ in 0..5 {
        let (status, body) = curl(cloud, INTERNET, &[&public]);
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("member JSON");
        assert_eq!(v["headers"]["x-forwarded-for"], inet_ip.as_str(), "{body}");
    }

    // Metrics of the instances, through stratoctl on their hosts.
    let metrics: String = cloud
        .region
        .hosts()
        .iter()
        .filter_map(|h| {
            let o = Command::new(strato_tests::e2e::bin("stratoctl"))
                .args(["l7-metrics", "--state-dir"])
                .arg(cloud.agent_dir(h))
                .output()
                .ok()?;
            o.status
                .success()
                .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
        })
        .collect();
    assert!(
        metrics.contains(&listener) && metrics.contains("2xx"),
        "per-listener request metrics: {}",
        &metrics[..metrics.len().min(2000)]
    );

    // A host fails (its agent killed, its instance frozen): its instance
    // goes ERROR once the host stops reporting, and new requests go to
    // the other instance only. (Not the client's own host: a client whose
    // host failed is gone with it.)
    let client_host = Cloud::host_id(&cloud.host_named("az1-c2"));
    let (victim_id, compute) = admin_cli
        .json(&["loadbalancer", "amphora", "list", "--loadbalancer", &lb_id])
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a["status"] == "READY")
        .filter_map(|a| {
            let id = a["id"].as_str()?.to_owned();
            let full = admin_cli.json(&["loadbalancer", "amphora", "show", &id]);
            let compute = full["compute_id"].as_str()?.to_owned();
            (compute != client_host).then_some((id, compute))
        })
        .next()
        .expect("a READY instance away from the client");
    let host = cloud
        .region
        .hosts()
        .into_iter()
        .find(|h| Cloud::host_id(h) == compute)
        .expect("the instance's host");
    let pid: i32 = std::fs::read_to_string(
        cloud
            .agent_dir(&host)
            .join("l7")
            .join(&victim_id)
            .join("l7.pid"),
    )
    .expect("pid file")
    .trim()
    .parse()
    .expect("pid");
    let pid = nix::unistd::Pid::from_raw(pid);
    // The requests go to m3 (images), on the client's own host: a failed
    // host's members fail with it, and their checks run on their host, so
    // only the instance's failover is measured here.
    cli.run(&["loadbalancer", "member", "set", "--enable", &images, &m3_id]);
    let images_url = format!("{vip80}/photos/after.jpg");
    cloud.wait_until("m3 takes requests again", Duration::from_secs(20), || {
        curl(cloud, "c1", &[&images_url]).0 == 200
    });
    cloud.kill(&format!("agent-{}", host.name));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("freeze the instance");
    cloud.wait_until(
        "the failed host's instance ERROR",
        Duration::from_secs(20),
        || admin_cli.json(&["loadbalancer", "amphora", "show", &victim_id])["status"] != "READY",
    );
    // Once the hosts have the change, every request is served.
    cloud.wait_until(
        "requests reach the surviving instance",
        Duration::from_secs(20),
        || curl(cloud, "c1", &["-m", "2", &images_url]).0 == 200,
    );
    for i in 0..20 {
        let (status, body) = curl(cloud, "c1", &["-m", "5", &images_url]);
        if status != 200 {
            let o = cloud
                .region
                .exec("c1", &["curl", "-v", "-m", "5", &images_url])
                .expect("curl");
            panic!(
                "request {i} after the host failed ({compute} down): {status} {body}\n{}\n{}",
                String::from_utf8_lossy(&o.stderr),
                admin_cli.json(&["loadbalancer", "amphora", "list", "--loadbalancer", &lb_id])
            );
        }
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("thaw");
    cloud.start_agent(&host);

    // Stats count the connections.
    let stats = cli.json(&["loadbalancer", "listener", "stats", "show", &listener]);
    assert!(
        stats["total_connections"].as_u64().unwrap_or(0) >= 20,
        "{stats}"
    );
}
