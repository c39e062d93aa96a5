//! End-to-end support: a region from the namespace harness with the real
//! controller and one real agent per host running as processes, talked to
//! only through the API. Dropping a [`Cloud`] tears everything down (also
//! when the test panics).

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use netns_harness::{Host, Region, Topology};
use strato_proto::{client::Endpoint, report::HostStatus};

/// The bootstrap administrator's password in every test controller.
pub const ADMIN_PASSWORD: &str = "test-admin-password";

/// Where the workspace's binaries are (`STRATO_BIN_DIR` overrides).
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("STRATO_BIN_DIR") {
        return PathBuf::from(d);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug")
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (make test does)",
        p.display()
    );
    p
}

/// A run prefix unique to this process and tag (`[a-z][a-z0-9]{0,7}`).
pub fn unique_prefix(tag: &str) -> String {
    assert!(
        tag.len() <= 3 && tag.chars().all(|c| c.is_ascii_lowercase()),
        "tag {tag:?}"
    );
    format!("{tag}{}", std::process::id() % 10000)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("addr")
        .port()
}

/// Sends `signal` (called `signal_name`) to `child` and waits up to
/// `within` for it to exit; else kills it and panics, naming it `name`.
pub fn signal_and_wait(
    child: &mut Child,
    signal: libc::c_int,
    signal_name: &str,
    within: Duration,
    name: &str,
) {
    // SAFETY: plain kill(2) on a child this test started and has not reaped.
    unsafe { libc::kill(child.id() as i32, signal) };
    let deadline = Instant::now() + within;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{name} did not exit within {} s of {signal_name}",
                within.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The token an identity call answered with (`X-Subject-Token`).
pub fn subject_token(headers: &strato_proto::client::HeaderMap) -> String {
    headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .expect("X-Subject-Token")
        .to_owned()
}

/// The OpenStack clients' virtualenv the bootstrap installs.
pub const OPENSTACK_VENV: &str = "/opt/strato/venv";

/// Its Python (panics, saying so, when it is missing).
pub fn openstack_python() -> PathBuf {
    let python = std::path::Path::new(OPENSTACK_VENV).join("bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/bootstrap (make test does)",
        python.display()
    );
    python
}

/// Processes a test starts in VMs and nodes (servers, listeners) for its
/// whole length: `reap` kills and waits for them (the region's teardown
/// would kill them anyway; reaping leaves no zombies). A test keeps one in
/// a `static` and reaps at its end.
pub struct Servers(Mutex<Vec<Child>>);

impl Servers {
    pub const fn new() -> Servers {
        Servers(Mutex::new(Vec::new()))
    }

    pub fn keep(&self, c: Child) {
        self.0.lock().expect("servers").push(c);
    }

    /// Runs `f`, then reaps the servers, also when `f` panics; then
    /// `on_panic` runs (logs, ...) and the panic goes on.
    pub fn run_then_reap(&self, f: impl FnOnce(), on_panic: impl FnOnce()) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        self.reap();
        if let Err(e) = result {
            on_panic();
            std::panic::resume_unwind(e);
        }
    }

    pub fn reap(&self) {
        let children = self
            .0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        for mut c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Default for Servers {
    fn default() -> Servers {
        Servers::new()
    }
}

pub struct Cloud {
    pub region: Region,
    /// The API on loopback, as tenants and stratoctl reach it.
    pub api: Endpoint,
    /// The controller's Unix socket, as agents in host namespaces reach it.
    pub socket: PathBuf,
    /// Processes started through the harness, by run name (reaped on stop/drop).
    children: Mutex<Vec<(String, Child)>>,
    /// Seconds between the agents' full reconcile passes.
    pub agent_interval: String,
}

impl Cloud {
    /// Brings up `topology` under a unique prefix, starts the controller and
    /// an agent on every host, and waits until every host reports.
    pub fn up(tag: &str, topology: &Topology) -> Cloud {
        crate::require_root("end-to-end tests");
        let prefix = unique_prefix(tag);
        // A previous run of this test that was SIGKILLed may have left its
        // region behind; down is idempotent and removes it.
        let _ = Region::down(&prefix);
        let region = Region::up(topology, &prefix).unwrap_or_else(|e| panic!("region up: {e}"));
        let socket = region.state_dir().join("controller.sock");
        let api = Endpoint::Tcp(format!("127.0.0.1:{}", free_port()));
        let cloud = Cloud {
            region,
            api,
            socket,
            children: Mutex::new(Vec::new()),
            agent_interval: std::env::var("STRATO_AGENT_INTERVAL").unwrap_or_else(|_| "0.2".into()),
        };
        cloud.start_controller();
        for h in cloud.region.hosts() {
            cloud.start_agent(&h);
        }
        let n = cloud.region.hosts().len();
        // Generous: six agents verify the object at once, on a 2-core
        // machine that may be busy with other work (30 s was not enough).
        let wait = Duration::from_secs(180);
        let deadline = Instant::now() + wait;
        loop {
            let hosts = cloud.hosts();
            let ready = |h: &HostStatus| {
                h.state == "up" && h.report.interfaces.iter().any(|i| i.error.is_none())
            };
            if hosts.len() == n && hosts.iter().all(ready) {
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {wait:?} waiting for every host's agent to report; {} of {n} report.\n{}\n{}",
                    hosts.len(),
                    cloud.log_tail("controller", 20),
                    cloud.log_tail(&format!("agent-{}", cloud.region.hosts()[0].name), 20)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        cloud
    }

    /// The last `n` lines of a spawned process's log (for failure messages).
    pub fn log_tail(&self, name: &str, n: usize) -> String {
        let path = self
            .region
            .state_dir()
            .join("logs")
            .join(format!("{name}.log"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| format!("({}: {e})", path.display()));
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- {name} log ---\n{}",
            lines[lines.len().saturating_sub(n)..].join("\n")
        )
    }

    pub fn prefix(&self) -> &str {
        self.region.prefix()
    }

    pub fn start_controller(&self) {
        let Endpoint::Tcp(addr) = &self.api else {
            unreachable!()
        };
        let mut cmd = Command::new(bin("strato-controller"));
        cmd.args(["--listen", addr, "--socket"])
            .arg(&self.socket)
            .arg("--db")
            .arg(self.region.state_dir().join("strato.db"))
            .env("STRATO_ADMIN_PASSWORD", ADMIN_PASSWORD);
        let child = self
            .region
            .spawn("controller", None, cmd)
            .unwrap_or_else(|e| panic!("spawn controller: {e}"));
        self.children
            .lock()
            .expect("children")
            .push(("controller".into(), child));
        self.wait_until("the controller answers", Duration::from_secs(10), || {
            self.get("/").is_ok()
        });
    }

    /// Host id as the agents and the controller know it: the namespace name
    /// (unique across concurrent runs, so pin directories never collide).
    pub fn host_id(h: &Host) -> String {
        h.netns.clone()
    }

    pub fn start_agent(&self, h: &Host) {
        let mut cmd = Command::new(bin("strato-agent"));
        cmd.args([
            "--host",
            &Self::host_id(h),
            "--uplink",
            &h.uplink,
            "--interval",
            &self.agent_interval,
            "--az",
            &h.az,
            "--controller",
        ])
        .arg(format!("unix:{}", self.socket.display()));
        if h.role == netns_harness::HostRole::Gateway {
            cmd.args(["--external", netns_harness::EXTERNAL_IFACE]);
        }
        // Access log and metrics inside the region's state directory
        // (removed with the region).
        cmd.arg("--state-dir").arg(self.agent_dir(h));
        let name = format!("agent-{}", h.name);
        let child = self
            .region
            .spawn(&name, Some(&h.name), cmd)
            .unwrap_or_else(|e| panic!("spawn agent on {}: {e}", h.name));
        self.children.lock().expect("children").push((name, child));
    }

    /// The agent's state directory on `h` (access log, metrics).
    pub fn agent_dir(&self, h: &Host) -> std::path::PathBuf {
        self.region.state_dir().join("agents").join(&h.name)
    }

    /// Takes the spawned process `name` out of this run's children (it is
    /// no longer reaped at teardown) and forgets its pid file.
    fn take_child(&self, name: &str) -> Child {
        let mut children = self.children.lock().expect("children");
        let i = children
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no process {name} in this run"));
        let (_, child) = children.remove(i);
        let _ = std::fs::remove_file(
            self.region
                .state_dir()
                .join("pids")
                .join(format!("{name}.pid")),
        );
        child
    }

    /// SIGKILLs a spawned process and reaps it.
    pub fn kill(&self, name: &str) {
        let mut child = self.take_child(name);
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops a spawned process with SIGTERM and waits (up to 5 s) for it to exit.
    pub fn stop(&self, name: &str) {
        let mut child = self.take_child(name);
        signal_and_wait(
            &mut child,
            libc::SIGTERM,
            "SIGTERM",
            Duration::from_secs(5),
            name,
        );
    }

    /// The agents' (and operators') API on the controller's Unix socket.
    pub fn internal(&self) -> Endpoint {
        Endpoint::Unix(self.socket.clone())
    }

    /// GET on the internal API (Unix socket, no token).
    pub fn get(&self, path: &str) -> Result<serde_json::Value, strato_proto::client::ClientError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(strato_proto::client::get_json(&self.internal(), path))
    }

    pub fn hosts(&self) -> Vec<HostStatus> {
        match self.get("/internal/v1/hosts") {
            Ok(v) => serde_json::from_value(v["hosts"].clone()).expect("hosts JSON"),
            Err(_) => Vec::new(),
        }
    }

    pub fn host(&self, h: &Host) -> HostStatus {
        let v = self
            .get(&format!("/internal/v1/hosts/{}", Self::host_id(h)))
            .expect("host status");
        serde_json::from_value(v["host"].clone()).expect("host JSON")
    }

    /// Polls `f` until true or panics after `timeout` naming `what`.
    pub fn wait_until(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if f() {
                return;
            }
            if Instant::now() > deadline {
                panic!("timed out after {timeout:?} waiting until {what}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The region's host `name` (panics if there is none).
    pub fn host_named(&self, name: &str) -> Host {
        self.region
            .hosts()
            .into_iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in the region"))
    }

    /// Runs the Python script `script` on `node`, which must succeed (else
    /// panics with `what` and its stderr); its output.
    pub fn python(&self, node: &str, script: &str, what: &str) -> std::process::Output {
        let o = self
            .region
            .exec(node, &["/usr/bin/python3", "-c", script])
            .expect("exec python3");
        assert!(
            o.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    /// One ping from a node to an address, 1 s timeout.
    /// The operator's external network with the elastic IP pool
    /// 198.51.100.10-250 (the harness's internet routes 198.51.100.0/24 to
    /// the gateway hosts); its id.
    pub fn external_network(admin: &Api) -> String {
        use serde_json::json;
        let ext = admin.create(
            "/v2.0/networks",
            "network",
            json!({"name": "internet", "router:external": true}),
        );
        admin.expect(
            201,
            "POST",
            "/v2.0/subnets",
            Some(
                json!({"subnet": {"network_id": ext, "cidr": "198.51.100.0/24", "ip_version": 4,
                "gateway_ip": "198.51.100.1", "enable_dhcp": false,
                "allocation_pools": [{"start": "198.51.100.10", "end": "198.51.100.250"}]}}),
            ),
        );
        ext
    }

    /// Gives `router` a gateway on external network `ext` (SNAT on).
    pub fn router_gateway(api: &Api, router: &str, ext: &str) {
        api.expect(
            200,
            "PUT",
            &format!("/v2.0/routers/{router}"),
            Some(serde_json::json!({"router": {"external_gateway_info": {"network_id": ext}}})),
        );
    }

    /// Waits until every VM's port is ACTIVE and the VM holds its DHCP lease.
    pub fn wait_until_active(&self, api: &Api, vms: &[&Vm]) {
        for vm in vms {
            self.wait_until(
                &format!("port of {} ACTIVE", vm.name),
                Duration::from_secs(15),
                || {
                    api.expect(200, "GET", &format!("/v2.0/ports/{}", vm.port), None)["port"]
                        ["status"]
                        == "ACTIVE"
                },
            );
            self.region
                .vm_wait_lease(&vm.name, Duration::from_secs(20))
                .unwrap_or_else(|e| panic!("{}: {e}", vm.name));
        }
    }

    /// Every host's drop counter for `reason` (a label), summed, read from
    /// the pinned maps (current, not as of the last report).
    pub fn drops(&self, reason: &str) -> u64 {
        let mut n = 0;
        for h in self.region.hosts() {
            let dir = std::path::Path::new(strato_proto::naming::PIN_ROOT).join(Cloud::host_id(&h));
            if let Ok(c) = strato_dataplane::Counters::read_pinned(&dir) {
                n += c
                    .drops
                    .iter()
                    .filter(|((_, r), _)| r.label() == reason)
                    .map(|(_, s)| s.packets)
                    .sum::<u64>();
            }
        }
        n
    }

    pub fn ping(&self, node: &str, addr: &str) -> bool {
        self.region
            .exec(node, &["ping", "-c1", "-W1", "-q", addr])
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        if std::env::var("STRATO_KEEP").as_deref() == Ok("1") {
            eprintln!(
                "STRATO_KEEP=1: region {} left up (strato-harness --prefix {} down)",
                self.region.prefix(),
                self.region.prefix()
            );
            return;
        }
        match Region::down(self.region.prefix()) {
            Ok(r) => eprintln!("cleanup: {r}"),
            Err(e) => eprintln!("cleanup of {} failed: {e}", self.region.prefix()),
        }
        // down killed them; reap so no zombie outlives the test.
        for (_, mut c) in self
            .children
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A caller of the public API (Keystone + Neutron) with a token.
pub struct Api {
    pub endpoint: Endpoint,
    pub token: String,
}

/// The body of a password, project-scoped token request.
pub fn password_auth(user: &str, password: &str, project: &str) -> serde_json::Value {
    serde_json::json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {"name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}
    }})
}

/// One call to the public API; returns status, headers and the JSON body
/// (`Null` when empty).
pub fn call(
    endpoint: &Endpoint,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> (u16, strato_proto::client::HeaderMap, serde_json::Value) {
    let headers: Vec<(&str, &str)> = token.map(|t| vec![("x-auth-token", t)]).unwrap_or_default();
    call_raw(
        endpoint,
        &headers,
        method,
        path,
        body.map(|b| serde_json::to_vec(b).expect("json")),
    )
}

/// [`call_raw`] that returns a transport failure instead of panicking: a
/// server that refuses a body from its `Content-Length` (413) and closes
/// may do so while the body is still being written, and the client then
/// sees a write error rather than the answer.
pub fn try_call_raw(
    endpoint: &Endpoint,
    headers: &[(&str, &str)],
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(u16, strato_proto::client::HeaderMap, serde_json::Value), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let method: strato_proto::client::Method = method.parse().expect("method");
    let (status, headers, bytes) = rt
        .block_on(strato_proto::client::call(
            endpoint,
            method,
            path,
            headers,
            body,
            Duration::from_secs(30),
        ))
        .map_err(|e| e.to_string())?;
    let v = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        })
    };
    Ok((status.as_u16(), headers, v))
}

/// [`call`] with any request headers and a raw body (malformed JSON,
/// `If-Match`, ...).
pub fn call_raw(
    endpoint: &Endpoint,
    headers: &[(&str, &str)],
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> (u16, strato_proto::client::HeaderMap, serde_json::Value) {
    try_call_raw(endpoint, headers, method, path, body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

impl Api {
    /// Logs in with a password, scoped to `project`.
    pub fn login(endpoint: &Endpoint, user: &str, password: &str, project: &str) -> Api {
        let (status, headers, body) = call(
            endpoint,
            None,
            "POST",
            "/v3/auth/tokens",
            Some(&password_auth(user, password, project)),
        );
        assert_eq!(status, 201, "login {user}@{project}: {body}");
        let token = subject_token(&headers);
        Api {
            endpoint: endpoint.clone(),
            token,
        }
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let (s, _, v) = call(
            &self.endpoint,
            Some(&self.token),
            method,
            path,
            body.as_ref(),
        );
        (s, v)
    }

    /// A call that must answer `want`; returns the body.
    pub fn expect(
        &self,
        want: u16,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let (s, v) = self.call(method, path, body);
        assert_eq!(s, want, "{method} {path}: {v}");
        v
    }
}

impl Cloud {
    /// The bootstrap administrator, scoped to the admin project.
    pub fn admin(&self) -> Api {
        Api::login(&self.api, "admin", ADMIN_PASSWORD, "admin")
    }
}

/// A controller process on its own, without a region or agents: the public
/// API on a free loopback port, the agents' Unix socket, its database and
/// log in a temporary directory (`strato-e2e-<tag>-<pid>-<port>`). The
/// process and the directory go when it is dropped (the directory stays,
/// with the log, when the test panics).
pub struct LocalController {
    child: Child,
    /// `127.0.0.1:<port>` of the public API.
    pub addr: String,
    /// The public API.
    pub api: Endpoint,
    /// The agents' socket.
    pub socket: PathBuf,
    pub dir: PathBuf,
    /// Environment given to the process on every start.
    env: Vec<(String, String)>,
}

impl LocalController {
    /// Starts it and waits until both listeners answer (panics with the
    /// log if the process exits or does not listen within 30 s).
    pub fn start(tag: &str) -> LocalController {
        LocalController::start_with_env(tag, &[])
    }

    /// [`LocalController::start`] with extra environment variables for the
    /// process (`RUST_LOG`, ...), kept for restarts.
    pub fn start_with_env(tag: &str, env: &[(&str, &str)]) -> LocalController {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let dir =
            std::env::temp_dir().join(format!("strato-e2e-{tag}-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let socket = dir.join("controller.sock");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let child = LocalController::spawn(&addr, &dir, &socket, &env);
        let mut c = LocalController {
            child,
            api: Endpoint::Tcp(addr.clone()),
            addr,
            socket,
            dir,
            env,
        };
        c.wait_listening();
        c
    }

    /// The process on `addr` with its database, socket and log (appended
    /// to) in `dir`.
    fn spawn(
        addr: &str,
        dir: &std::path::Path,
        socket: &PathBuf,
        env: &[(String, String)],
    ) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("controller.log"))
            .expect("log file");
        Command::new(bin("strato-controller"))
            .args(["--listen", addr, "--db"])
            .arg(dir.join("strato.db"))
            .arg("--socket")
            .arg(socket)
            .env("STRATO_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start controller")
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&self.addr).is_err()
            || std::os::unix::net::UnixStream::connect(&self.socket).is_err()
        {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("controller exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "controller did not listen on {}:\n{}",
                self.addr,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL (no chance to flush anything), then start again on the same
    /// port, database and socket, and wait until it listens.
    pub fn kill9_and_restart(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
        let _ = std::fs::remove_file(&self.socket);
        self.child = LocalController::spawn(&self.addr, &self.dir, &self.socket, &self.env);
        self.wait_listening();
    }

    /// The agents' socket as an endpoint.
    pub fn agent(&self) -> Endpoint {
        Endpoint::Unix(self.socket.clone())
    }

    /// The configuration revision the controller has compiled.
    pub fn revision(&self) -> u64 {
        let (s, _, v) = call(&self.agent(), None, "GET", "/internal/v1/compiled", None);
        assert_eq!(s, 200, "{v}");
        v["revision"].as_u64().expect("revision")
    }

    /// Its whole log, over restarts.
    pub fn full_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("controller.log")).unwrap_or_default()
    }

    /// The last 40 lines of its log.
    pub fn log(&self) -> String {
        let all = self.full_log();
        let tail: Vec<&str> = all.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for LocalController {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("controller log kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A new tenant made by `admin`: project `name` and a user of the same name
/// (password `<name>-password`) with `role` on it, logged in; and the
/// project's id.
pub fn new_tenant(admin: &Api, name: &str, role: &str) -> (Api, String) {
    let p = admin.expect(
        201,
        "POST",
        "/v3/projects",
        Some(serde_json::json!({"project": {"name": name, "domain_id": "default"}})),
    );
    let pid = p["project"]["id"].as_str().expect("project id").to_owned();
    let password = format!("{name}-password");
    let u = admin.expect(
        201,
        "POST",
        "/v3/users",
        Some(serde_json::json!({"user": {"name": name, "password": password, "domain_id": "default", "default_project_id": pid}})),
    );
    let uid = u["user"]["id"].as_str().expect("user id").to_owned();
    let roles = admin.expect(200, "GET", &format!("/v3/roles?name={role}"), None);
    let rid = roles["roles"][0]["id"]
        .as_str()
        .expect("role id")
        .to_owned();
    admin.expect(
        204,
        "PUT",
        &format!("/v3/projects/{pid}/users/{uid}/roles/{rid}"),
        None,
    );
    (Api::login(&admin.endpoint, name, &password, name), pid)
}

impl Cloud {
    /// A new tenant: project `name`, a member user of the same name; logged in.
    pub fn tenant(&self, name: &str) -> Api {
        new_tenant(&self.admin(), name, "member").0
    }
}

/// A VPC built through the API: a router with one network and subnet per
/// CIDR attached.
pub struct Vpc {
    pub router: String,
    pub nets: Vec<String>,
    pub subnets: Vec<String>,
}

/// A VM booted by [`Cloud::boot`]: its port's address, MAC and id.
#[derive(Clone, Debug)]
pub struct Vm {
    pub name: String,
    pub ip: String,
    pub mac: String,
    pub port: String,
}

/// The JSON lines of a log written so far (an event log of a tool in a
/// VM); lines that are not JSON, or a log not there yet, give nothing.
pub fn json_lines(log: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The id of the `kind` object in an API answer (`{"<kind>": {"id": ...}}`).
pub fn id(v: &serde_json::Value, kind: &str) -> String {
    v[kind]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{kind} id in {v}"))
        .to_owned()
}

impl Api {
    /// POST `{"<kind>": body}` to `path`, which must answer 201 Created;
    /// the new object's id.
    pub fn create(&self, path: &str, kind: &str, body: serde_json::Value) -> String {
        let v = self.expect(201, "POST", path, Some(serde_json::json!({ kind: body })));
        id(&v, kind)
    }

    /// A new security group `name` (201 Created); its id.
    pub fn security_group(&self, name: &str) -> String {
        self.create(
            "/v2.0/security-groups",
            "security_group",
            serde_json::json!({ "name": name }),
        )
    }

    /// A new rule `r` in `group` (201 Created); its id.
    pub fn security_group_rule(&self, group: &str, mut r: serde_json::Value) -> String {
        r["security_group_id"] = serde_json::json!(group);
        self.create("/v2.0/security-group-rules", "security_group_rule", r)
    }

    /// A new rule in `group` admitting TCP `port` from the addresses in
    /// `cidr` (201 Created); its id.
    pub fn allow_tcp_from_cidr(&self, group: &str, port: u16, cidr: &str) -> String {
        self.security_group_rule(
            group,
            serde_json::json!({"direction": "ingress", "protocol": "tcp", "port_range_min": port,
                "port_range_max": port, "remote_ip_prefix": cidr}),
        )
    }

    /// A new rule in `group` admitting TCP `port` from the members of
    /// `remote_group` (201 Created); its id.
    pub fn allow_tcp_from_group(&self, group: &str, port: u16, remote_group: &str) -> String {
        self.security_group_rule(
            group,
            serde_json::json!({"direction": "ingress", "protocol": "tcp", "port_range_min": port,
                "port_range_max": port, "remote_group_id": remote_group}),
        )
    }
}

impl Cloud {
    /// A router with a network and subnet per CIDR (subnets get `dns`).
    pub fn vpc(api: &Api, cidrs: &[&str], dns: &[&str]) -> Vpc {
        use serde_json::json;
        let r = api.create("/v2.0/routers", "router", json!({"name": "vpc"}));
        let mut out = Vpc {
            router: r.clone(),
            nets: vec![],
            subnets: vec![],
        };
        for (i, cidr) in cidrs.iter().enumerate() {
            let n = api.create(
                "/v2.0/networks",
                "network",
                json!({"name": format!("net{i}")}),
            );
            let s = api.create(
                "/v2.0/subnets",
                "subnet",
                json!({"network_id": n, "cidr": cidr, "ip_version": 4,
                        "dns_nameservers": dns}),
            );
            api.expect(
                200,
                "PUT",
                &format!("/v2.0/routers/{r}/add_router_interface"),
                Some(json!({"subnet_id": s})),
            );
            out.nets.push(n);
            out.subnets.push(s);
        }
        out
    }

    /// Binds port `pid` to `host` for the VM `name`, as Nova does
    /// (`binding:host_id`, `device_id`, `device_owner` compute:<AZ>): 200.
    pub fn bind_port(admin: &Api, pid: &str, name: &str, host: &Host) {
        admin.expect(
            200,
            "PUT",
            &format!("/v2.0/ports/{pid}"),
            Some(
                serde_json::json!({"port": {"binding:host_id": Cloud::host_id(host), "device_id": name,
                "device_owner": format!("compute:{}", host.az)}}),
            ),
        );
    }

    /// Plays Nova: a port on `net` (in `groups`, or the project's default
    /// group), a VM namespace with its tap (the VM runs udhcpc), then the
    /// binding to `host`.
    pub fn boot(
        &self,
        admin: &Api,
        api: &Api,
        net: &str,
        name: &str,
        host: &str,
        groups: Option<&[&str]>,
    ) -> Vm {
        use serde_json::json;
        let mut body = json!({"port": {"network_id": net, "name": name}});
        if let Some(g) = groups {
            body["port"]["security_groups"] = json!(g);
        }
        let p = api.expect(201, "POST", "/v2.0/ports", Some(body))["port"].clone();
        let pid = p["id"].as_str().expect("id").to_owned();
        let ip = p["fixed_ips"][0]["ip_address"]
            .as_str()
            .expect("ip")
            .to_owned();
        let mac = p["mac_address"].as_str().expect("mac").to_owned();
        let h = self.host_named(host);
        let mut spec =
            netns_harness::VmSpec::new(name, host, &strato_proto::naming::tap_name(&pid));
        spec.mac = Some(mac.parse().expect("mac"));
        self.region.vm_create(&spec).expect("vm create");
        Cloud::bind_port(admin, &pid, name, &h);
        Vm {
            name: name.to_owned(),
            ip,
            mac,
            port: pid,
        }
    }

    /// A TCP service on port 7000 of VM `name` that answers with
    /// `hello-from-<name>` (the caller keeps the child and reaps it).
    pub fn hello_server(&self, name: &str) -> std::process::Child {
        let server = self
            .region
            .command(
                name,
                &[
                    "busybox",
                    "nc",
                    "-ll",
                    "-p",
                    "7000",
                    "-e",
                    "/bin/echo",
                    &format!("hello-from-{name}"),
                ],
            )
            .expect("command");
        self.region
            .spawn(&format!("tcp-{name}"), None, server)
            .expect("spawn tcp server")
    }
}

/// A ping every 20 ms from a node (host or VM) that runs until
/// [`Pinger::stop`], so it spans whatever happens in between however long
/// that takes. Spawned through the region: its teardown kills it if the
/// test fails first (and `-w` ends it after 10 minutes anyway).
pub struct Pinger {
    name: String,
    child: Child,
    log: PathBuf,
    pidfile: PathBuf,
}

/// What a [`Pinger`] saw.
#[derive(Debug)]
pub struct PingSummary {
    pub transmitted: u64,
    pub received: u64,
    /// Sequence numbers without a reply, except the last one sent: that
    /// one may have been in flight when the ping was stopped.
    pub unanswered: Vec<u64>,
    /// ping's own output.
    pub output: String,
}

impl PingSummary {
    /// Asserts every probe was answered `during` something ("across an
    /// agent restart").
    #[track_caller]
    pub fn assert_all_answered(&self, during: &str) {
        assert!(
            self.unanswered.is_empty(),
            "{} of {} probes unanswered {during} ({:?}):\n{}",
            self.unanswered.len(),
            self.transmitted,
            self.unanswered,
            self.output
        );
    }
}

impl Cloud {
    /// Starts a [`Pinger`] from `node` to `target`; `name` must be unique
    /// in the region (`[A-Za-z0-9_.-]`).
    pub fn pinger(&self, name: &str, node: &str, target: &str) -> Pinger {
        let mut cmd = Command::new("ping");
        cmd.args(["-i", "0.02", "-w", "600", "-W", "1", target]);
        let child = self
            .region
            .spawn(name, Some(node), cmd)
            .unwrap_or_else(|e| panic!("spawn ping {name} on {node}: {e}"));
        let dir = self.region.state_dir();
        Pinger {
            name: name.to_owned(),
            child,
            log: dir.join("logs").join(format!("{name}.log")),
            pidfile: dir.join("pids").join(format!("{name}.pid")),
        }
    }
}

impl Pinger {
    /// Stops the ping (SIGINT: it prints its summary) and reads the
    /// summary; panics if it ended early or printed none.
    pub fn stop(mut self) -> PingSummary {
        assert!(
            self.child.try_wait().expect("ping status").is_none(),
            "ping {} ended before it was stopped: {}",
            self.name,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.pidfile);
        let output = std::fs::read_to_string(&self.log)
            .unwrap_or_else(|e| panic!("ping log {}: {e}", self.log.display()));
        let line = output
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("no ping summary from {}: {output}", self.name));
        let nums: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|t| t.parse().ok())
            .collect();
        let answered: std::collections::BTreeSet<u64> = output
            .lines()
            .filter(|l| l.contains(" bytes from "))
            .filter_map(|l| l.split("icmp_seq=").nth(1))
            .filter_map(|t| t.split_whitespace().next()?.parse().ok())
            .collect();
        let (transmitted, received) = (nums[0], nums[1]);
        PingSummary {
            transmitted,
            received,
            unanswered: (1..transmitted).filter(|n| !answered.contains(n)).collect(),
            output,
        }
    }
}

impl Cloud {
    /// Host `host`'s (by harness name) drop counter for `reason` (a label),
    /// summed over its interfaces, read from its pinned maps now.
    pub fn host_drops(&self, host: &str, reason: &str) -> u64 {
        let h = self.host_named(host);
        let dir = std::path::Path::new(strato_proto::naming::PIN_ROOT).join(Cloud::host_id(&h));
        let c = strato_dataplane::Counters::read_pinned(&dir)
            .unwrap_or_else(|e| panic!("counters of {host}: {e}"));
        c.drops
            .iter()
            .filter(|((_, r), _)| r.label() == reason)
            .map(|(_, s)| s.packets)
            .sum()
    }

    /// Waits until host `host` (by harness name) has realised the
    /// controller's current configuration revision: for a change that
    /// touches that host, its tables now hold it.
    pub fn wait_realised(&self, host: &str) {
        let h = self.host_named(host);
        let id = Cloud::host_id(&h);
        let r = self
            .get("/internal/v1/compiled")
            .expect("the compiled revision")["revision"]
            .as_u64()
            .expect("revision");
        self.wait_until(
            &format!("{host} realises revision {r}"),
            Duration::from_secs(120),
            || {
                self.hosts()
                    .iter()
                    .any(|s| s.host == id && s.report.realised_revision >= r)
            },
        );
    }

    /// Asserts that `attempt` (which says whether it got through) does not
    /// get through, and that `host`'s dataplane counted drops for `reason`
    /// while it ran: a broken network, which loses the packets elsewhere,
    /// cannot pass for the refusal.
    #[track_caller]
    pub fn assert_dropped(
        &self,
        host: &str,
        reason: &str,
        what: &str,
        attempt: impl FnOnce() -> bool,
    ) {
        let before = self.host_drops(host, reason);
        assert!(!attempt(), "{what}: got through");
        let after = self.host_drops(host, reason);
        assert!(
            after > before,
            "{what}: not counted as {reason} on {host} ({before} -> {after})"
        );
    }
}
