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
    let c1 = cloud.boot(&admin, &api, &vpc.nets[0], "c1", "az1-c2", None);
    let vms: Vec<&Vm> = vec![&m1, &m2, &c1];
    cloud.wait_until_active(&api, &vms);
    for m in [&m1, &m2] {
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
    let load = cloud
        .region
        .command("c1", &[PYTHON, CLIENT, "load", &vip, "80", "8"])
        .expect("command")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("load");
    std::thread::sleep(Duration::from_secs(2));
    let victim = amphorae[0]["id"].as_str().expect("id").to_owned();
    let pid = cloud
        .region
        .hosts()
        .iter()
        .find_map(|h| {
            std::fs::read_to_string(cloud.agent_dir(h).join("l7").join(&victim).join("l7.pid")).ok()
        })
        .expect("the instance's pid file");
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

    // Stats count the connections.
    let stats = cli.json(&["loadbalancer", "listener", "stats", "show", &listener]);
    assert!(
        stats["total_connections"].as_u64().unwrap_or(0) >= 20,
        "{stats}"
    );
}
