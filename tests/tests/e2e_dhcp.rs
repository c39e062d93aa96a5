//! End to end: busybox udhcpc, a real DHCP client, gets its lease from `dhcp::Server` across a
//! veth pair between two network namespaces, then renews it by unicast. Needs root, iproute2 and
//! busybox; fails, naming what is missing, otherwise (a skipped test would pass).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use std::{fs, io, thread};

use strato_agent::dhcp::{Lease, Server, Stats};

const BUSYBOX: &str = "/usr/bin/busybox";
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];

fn lease() -> Lease {
    Lease {
        client_mac: CLIENT_MAC,
        ip: Ipv4Addr::new(10, 0, 0, 5),
        prefix_len: 24,
        gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
        server_ip: Ipv4Addr::new(10, 0, 0, 1),
        server_mac: SERVER_MAC,
        dns: vec![Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(8, 8, 8, 8)],
        routes: vec![(
            "10.1.0.0/16".parse().expect("net"),
            Ipv4Addr::new(10, 0, 0, 254),
        )],
        mtu: 1450,
        lease_secs: 3600,
        domain_name: Some("vpc.internal".into()),
    }
}

/// Runs a command to completion; panics with its output if it fails.
fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn command");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Namespaces, temp dir, server stop flag and client processes, torn down even on panic.
struct Env {
    server_ns: String,
    client_ns: String,
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    children: Vec<Child>,
}

impl Env {
    fn new() -> Env {
        let prefix = format!("sdhcp-{}-", std::process::id());
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_nanos();
        let env = Env {
            server_ns: format!("{prefix}srv"),
            client_ns: format!("{prefix}cli"),
            dir: std::env::temp_dir().join(format!("{prefix}{nanos}")),
            stop: Arc::new(AtomicBool::new(false)),
            children: Vec::new(),
        };
        fs::create_dir(&env.dir).expect("temp dir");
        let (s, c) = (env.server_ns.as_str(), env.client_ns.as_str());
        run(&["ip", "netns", "add", s]);
        run(&["ip", "netns", "add", c]);
        run(&[
            "ip", "-n", s, "link", "add", "veth0", "type", "veth", "peer", "eth0", "netns", c,
        ]);
        run(&[
            "ip",
            "-n",
            s,
            "link",
            "set",
            "veth0",
            "address",
            "02:00:00:00:00:fe",
            "up",
        ]);
        // The address answers the client's ARP when it renews by unicast.
        run(&["ip", "-n", s, "addr", "add", "10.0.0.1/24", "dev", "veth0"]);
        run(&[
            "ip",
            "-n",
            c,
            "link",
            "set",
            "eth0",
            "address",
            "02:00:00:00:00:01",
            "up",
        ]);
        run(&["ip", "-n", c, "link", "set", "lo", "up"]);
        env
    }

    /// The udhcpc event script: records its environment per event and applies the lease.
    fn write_script(&self) -> PathBuf {
        let script = self.dir.join("udhcpc.sh");
        let body = format!(
            r#"#!/bin/sh
PATH=/usr/sbin:/usr/bin:/sbin:/bin
env | sort > "{dir}/$1.env.tmp" && mv "{dir}/$1.env.tmp" "{dir}/$1.env"
case "$1" in
deconfig) ip addr flush dev "$interface" ;;
bound|renew)
    ip addr replace "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    for r in $router; do ip route replace default via "$r" dev "$interface"; done ;;
esac
exit 0
"#,
            dir = self.dir.display()
        );
        fs::write(&script, body).expect("write script");
        run(&["chmod", "755", script.to_str().expect("utf-8 path")]);
        script
    }

    /// `ip netns exec` execs in place, so the spawned process is udhcpc itself.
    fn udhcpc(&self, script: &Path, extra: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.client_ns,
            BUSYBOX,
            "udhcpc",
            "-i",
            "eth0",
            "-f",
        ])
        .args([
            "-t",
            "5",
            "-T",
            "1",
            "-s",
            script.to_str().expect("utf-8 path"),
        ])
        .args(extra);
        cmd
    }

    fn event(&self, name: &str) -> Option<BTreeMap<String, String>> {
        let text = fs::read_to_string(self.dir.join(format!("{name}.env"))).ok()?;
        // Only udhcpc's own variables (lower case), not the inherited environment.
        let pairs = text.lines().filter_map(|l| l.split_once('='));
        let pairs = pairs.filter(|(k, _)| k.starts_with(|c: char| c.is_ascii_lowercase()));
        Some(pairs.map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    fn wait_event(&self, name: &str) -> BTreeMap<String, String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(vars) = self.event(name) {
                return vars;
            }
            assert!(
                Instant::now() < deadline,
                "udhcpc never ran its script with {name}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Moves the calling thread (only) into the named network namespace.
fn enter_netns(name: &str) -> io::Result<()> {
    let file = fs::File::open(format!("/run/netns/{name}"))?;
    // SAFETY: `file` is an open namespace descriptor; setns affects only this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn ifindex(name: &str) -> io::Result<u32> {
    let name = CString::new(name).expect("no NUL");
    // SAFETY: `name` is a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        index => Ok(index),
    }
}

fn missing_prerequisite() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    if !Path::new(BUSYBOX).exists() {
        return Some(format!("{BUSYBOX} is missing"));
    }
    let ip = Command::new("ip").arg("-V").output();
    if !ip.is_ok_and(|o| o.status.success()) {
        return Some("iproute2 `ip` is missing".into());
    }
    None
}

#[test]
fn udhcpc_gets_and_renews_the_lease() {
    if let Some(why) = missing_prerequisite() {
        panic!("the udhcpc integration test cannot run: {why} (run `make bootstrap` and the tests as root)");
    }
    let mut env = Env::new();
    let script = env.write_script();

    let (ready_tx, ready_rx) = mpsc::channel();
    let (server_ns, stop) = (env.server_ns.clone(), env.stop.clone());
    let server = thread::spawn(move || -> io::Result<Stats> {
        enter_netns(&server_ns)?;
        let port = ifindex("veth0")?;
        let server = Server::open()?;
        ready_tx.send(()).expect("test waits for the server");
        server.serve(|index| (index == port).then(lease), &stop)?;
        Ok(server.stats())
    });
    if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
        let result = server.join().expect("server thread panicked");
        panic!("server did not start: {result:?}");
    }

    // 1. Discover, offer, request (selecting), ack; udhcpc quits once bound.
    let mut first = env
        .udhcpc(&script, &["-n", "-q"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("udhcpc");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = first.try_wait().expect("wait for udhcpc") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = first.kill();
            panic!("udhcpc -q did not finish within 30 s");
        }
        thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    io::Read::read_to_string(&mut first.stderr.take().expect("piped"), &mut log).expect("log");
    assert!(status.success(), "udhcpc failed: {log}");
    let vars = env.wait_event("bound");
    let want = [
        ("interface", "eth0"),
        ("ip", "10.0.0.5"),
        ("mask", "24"),
        ("subnet", "255.255.255.0"),
        ("router", "10.0.0.1"),
        ("mtu", "1450"),
        ("dns", "10.0.0.2 8.8.8.8"),
        ("staticroutes", "10.1.0.0/16 10.0.0.254 0.0.0.0/0 10.0.0.1"),
        ("domain", "vpc.internal"),
        ("serverid", "10.0.0.1"),
        ("lease", "3600"),
    ];
    for (key, value) in want {
        assert_eq!(
            vars.get(key).map(String::as_str),
            Some(value),
            "${key}; all: {vars:#?}"
        );
    }
    let c = env.client_ns.clone();
    let addrs = run(&["ip", "-n", &c, "-4", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains("inet 10.0.0.5/24"), "{addrs}");
    assert!(run(&["ip", "-n", &c, "link", "show", "eth0"]).contains("mtu 1450"));
    assert!(run(&["ip", "-n", &c, "route"]).contains("default via 10.0.0.1 dev eth0"));

    // 2. A fresh client that stays running; SIGUSR1 makes it renew by unicast to the server.
    let _ = fs::remove_file(env.dir.join("bound.env"));
    let child = env
        .udhcpc(&script, &[])
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn udhcpc");
    let pid = child.id() as libc::pid_t;
    env.children.push(child);
    env.wait_event("bound");
    // SAFETY: plain syscall; `pid` is our child, alive until Env drops it.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0);
    let renewed = env.wait_event("renew");
    assert_eq!(
        renewed.get("ip").map(String::as_str),
        Some("10.0.0.5"),
        "{renewed:#?}"
    );
    assert_eq!(renewed.get("lease").map(String::as_str), Some("3600"));

    env.stop.store(true, Ordering::Relaxed);
    let stats = server
        .join()
        .expect("server thread panicked")
        .expect("server failed");
    eprintln!("server stats: {stats:?}");
    // offer + ack, offer + ack, renewal ack.
    assert!(stats.replied >= 5, "{stats:?}");
    assert_eq!(stats.errors, 0, "{stats:?}");
    assert!(stats.received >= stats.replied, "{stats:?}");
}
