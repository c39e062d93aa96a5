//! End-to-end tests of the harness: real namespaces, real pings. They need
//! root and fail, saying so, otherwise (a skipped test would pass). Every test uses its own
//! prefix (`h` + a letter + pid digits) and a guard that runs `down` even when
//! the test fails, and checks at the end that nothing of its prefix is left.

use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use netns_harness::{DhcpMode, FailTarget, HarnessError, Host, Region, Topology, VmSpec};

fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and has no side effects.
    unsafe { libc::geteuid() == 0 }
}

macro_rules! require_root {
    () => {
        assert!(
            is_root(),
            "the harness tests create network namespaces: run them as root"
        );
    };
}

/// A prefix unique to this test process and test: `h<tag><pid mod 10^6>`.
fn prefix(tag: char) -> String {
    format!("h{tag}{}", std::process::id() % 1_000_000)
}

/// Runs `down` when dropped, so a failing test leaves nothing behind.
struct Guard(String);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(e) = Region::down(&self.0) {
            eprintln!("cleanup of prefix {} failed: {e}", self.0);
        }
    }
}

/// The names in `dir` that start with `start` (none if it cannot be read).
fn entries_starting(dir: &str, start: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(start))
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts nothing of `prefix` is left on the machine.
fn assert_gone(prefix: &str) {
    let start = format!("{prefix}-");
    let left = entries_starting("/run/netns", &start);
    assert!(left.is_empty(), "namespaces left for {prefix}: {left:?}");
    assert!(
        !Path::new("/run/strato").join(prefix).exists(),
        "/run/strato/{prefix} left"
    );
    let pins = entries_starting("/sys/fs/bpf/strato", &start);
    assert!(pins.is_empty(), "pin dirs left for {prefix}: {pins:?}");
    let procs = run_processes(prefix);
    assert!(procs.is_empty(), "processes left for {prefix}: {procs:?}");
}

/// Live processes whose command line names the run's state directory (the
/// VMs' udhcpc clients name their script there). Zombies have no command line.
fn run_processes(prefix: &str) -> Vec<(i32, String)> {
    let needle = format!("/run/strato/{prefix}/");
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmd.contains(&needle).then_some((pid, cmd))
        })
        .collect()
}

fn ping(region: &Region, from: &str, to: Ipv4Addr) -> bool {
    let out = region
        .exec(from, &["ping", "-c1", "-W1", "-q", &to.to_string()])
        .expect("run ping");
    out.status.success()
}

/// Pings every (from, to) pair in parallel; returns the pairs whose result
/// differs from `expect`.
fn ping_all(region: &Region, pairs: &[(String, Ipv4Addr, bool)]) -> Vec<String> {
    std::thread::scope(|s| {
        let handles: Vec<_> = pairs
            .iter()
            .map(|(from, to, expect)| {
                s.spawn(move || {
                    (ping(region, from, *to) != *expect).then(|| {
                        format!(
                            "{from} -> {to} (expected {})",
                            if *expect { "reply" } else { "no reply" }
                        )
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().expect("ping thread"))
            .collect()
    })
}

fn host_pairs(
    hosts: &[Host],
    expect: impl Fn(&Host, &Host) -> bool,
) -> Vec<(String, Ipv4Addr, bool)> {
    let mut pairs = Vec::new();
    for a in hosts {
        for b in hosts {
            if a.name != b.name {
                pairs.push((a.name.clone(), b.underlay_ip, expect(a, b)));
            }
        }
    }
    pairs
}

fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

fn wait_state(pid: u32, want: char) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if proc_state(pid) == Some(want) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn region_lifecycle() {
    require_root!();
    let p = prefix('a');
    let guard = Guard(p.clone());
    // (How long `up` takes is a benchmark figure, not this test's.)
    let started = Instant::now();
    let region = Region::up(&Topology::default_region(), &p).expect("region up");
    eprintln!("up took {:?}", started.elapsed());

    let hosts = region.hosts();
    assert_eq!(hosts.len(), 6);
    assert_eq!(
        region.netns("az1-c1").expect("netns"),
        format!("{p}-az1-c1")
    );
    assert!(matches!(
        region.netns("nope"),
        Err(HarnessError::UnknownNode { .. })
    ));

    // Full mesh over the underlay.
    let bad = ping_all(&region, &host_pairs(&hosts, |_, _| true));
    assert!(bad.is_empty(), "underlay mesh: {bad:?}");
    // The internet reaches the gateways' ext addresses.
    let bad = ping_all(
        &region,
        &[
            (
                "inet-client1".to_string(),
                "203.0.113.1".parse().expect("ip"),
                true,
            ),
            (
                "inet-client1".to_string(),
                "203.0.113.3".parse().expect("ip"),
                true,
            ),
            (
                "onprem-gw".to_string(),
                "203.0.113.5".parse().expect("ip"),
                true,
            ),
            (
                "onprem-h1".to_string(),
                "172.16.200.1".parse().expect("ip"),
                true,
            ),
        ],
    );
    assert!(bad.is_empty(), "internet: {bad:?}");

    // The AZ1 spine link fails: cross-AZ traffic stops, intra-AZ goes on.
    region
        .fail(&FailTarget::Link("az1-spine".into()))
        .expect("fail link");
    let bad = ping_all(&region, &host_pairs(&hosts, |a, b| a.az == b.az));
    assert!(bad.is_empty(), "with az1-spine down: {bad:?}");
    let status = region.status().expect("status");
    assert_eq!(status.failures, [FailTarget::Link("az1-spine".into())]);
    let spine = status
        .links
        .iter()
        .find(|l| l.name == "az1-spine")
        .expect("az1-spine in status");
    assert!(spine.failed && spine.state == "down", "{spine:?}");
    assert!(status.to_string().contains("FAILED"), "{status}");

    region.heal().expect("heal");
    let bad = ping_all(&region, &host_pairs(&hosts, |_, _| true));
    assert!(bad.is_empty(), "after heal: {bad:?}");
    let status = region.status().expect("status");
    assert!(status.failures.is_empty());
    assert!(
        status.links.iter().all(|l| l.state == "up" && !l.failed),
        "{status}"
    );
    assert!(status.namespaces.iter().all(|n| n.present), "{status}");

    // A VM on az1-c1.
    let spec = VmSpec {
        mac: Some("fa:16:3e:12:34:56".parse().expect("mac")),
        addr: Some("10.0.0.5/24".parse().expect("cidr")),
        gateway: Some("10.0.0.1".parse().expect("ip")),
        mtu: Some(1450),
        ..VmSpec::new("web1", "az1-c1", "tap1a2b3c4d-5e")
    };
    let vm = region.vm_create(&spec).expect("vm create");
    assert_eq!(vm.netns, format!("{p}-vm-web1"));
    let out = region
        .exec(
            "az1-c1",
            &["ip", "-o", "link", "show", "dev", "tap1a2b3c4d-5e"],
        )
        .expect("exec");
    assert!(
        out.status.success(),
        "tap device missing in host ns: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = String::from_utf8_lossy(&out.stdout);
    assert!(link.contains("mtu 1450") && link.contains("UP"), "{link}");
    let out = region
        .exec("web1", &["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
        .expect("exec");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("10.0.0.5/24"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = region
        .exec("vm-web1", &["ip", "-o", "link", "show", "dev", "eth0"])
        .expect("exec");
    assert!(String::from_utf8_lossy(&out.stdout).contains("fa:16:3e:12:34:56"));
    let out = region
        .exec("web1", &["ip", "route", "show", "default"])
        .expect("exec");
    assert!(String::from_utf8_lossy(&out.stdout).contains("via 10.0.0.1"));
    assert!(region.vm_create(&spec).is_err(), "same VM twice");
    // Another handle on the same run sees the VM.
    let attached = Region::attach(&p).expect("attach");
    assert_eq!(attached.vms(), vec![vm.clone()]);
    assert!(
        Region::up(&Topology::default_region(), &p).is_err(),
        "second up of the same prefix"
    );

    // Processes: one in a host namespace, one in the root namespace.
    let mut sleeper = region
        .spawn("sleeper", Some("az1-c1"), {
            let mut c = Command::new("sleep");
            c.arg("1000");
            c
        })
        .expect("spawn in az1-c1");
    let mut ctl = region
        .spawn("ctl", None, {
            let mut c = Command::new("sleep");
            c.arg("1001");
            c
        })
        .expect("spawn in root ns");
    let ns_ino = |path: &str| {
        std::fs::metadata(path)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .expect(path)
    };
    assert_eq!(
        ns_ino(&format!("/proc/{}/ns/net", sleeper.id())),
        ns_ino(&format!("/run/netns/{p}-az1-c1"))
    );
    assert_eq!(
        ns_ino(&format!("/proc/{}/ns/net", ctl.id())),
        ns_ino("/proc/self/ns/net")
    );
    assert_eq!(
        ns_ino(&format!("/proc/{}/ns/mnt", sleeper.id())),
        ns_ino("/proc/self/ns/mnt"),
        "only the netns changes"
    );
    assert!(region.state_dir().join("pids/sleeper.pid").exists());
    assert!(region.state_dir().join("logs/sleeper.log").exists());
    let status = region.status().expect("status");
    let ns = status
        .namespaces
        .iter()
        .find(|n| n.node == "az1-c1")
        .expect("az1-c1");
    assert_eq!(ns.pids, [sleeper.id() as i32]);

    // A failed host stops its processes and its links; heal resumes them.
    region
        .fail(&FailTarget::Host("az1-c1".into()))
        .expect("fail host");
    assert!(
        wait_state(sleeper.id(), 'T'),
        "sleeper not stopped: {:?}",
        proc_state(sleeper.id())
    );
    assert!(!ping(&region, "az1-c2", "198.18.1.1".parse().expect("ip")));
    let status = region.status().expect("status");
    assert!(
        status
            .links
            .iter()
            .filter(|l| l.name == "az1-c1" || l.name == "vm-web1")
            .all(|l| l.failed && l.state == "down"),
        "{status}"
    );
    region.heal().expect("heal");
    assert!(
        wait_state(sleeper.id(), 'S'),
        "sleeper not resumed: {:?}",
        proc_state(sleeper.id())
    );
    assert!(ping(&region, "az1-c2", "198.18.1.1".parse().expect("ip")));
    let out = region
        .exec("web1", &["ip", "route", "show", "default"])
        .expect("exec");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("via 10.0.0.1"),
        "VM route back after heal"
    );

    // A whole AZ.
    region.fail(&FailTarget::Az("az2".into())).expect("fail az");
    let bad = ping_all(
        &region,
        &host_pairs(&hosts, |a, b| a.az == "az1" && b.az == "az1"),
    );
    assert!(bad.is_empty(), "with az2 down: {bad:?}");
    region.heal().expect("heal");
    assert!(region.fail(&FailTarget::Link("nope".into())).is_err());

    region.vm_delete("web1").expect("vm delete");
    assert!(region.vms().is_empty());
    let out = region
        .exec("az1-c1", &["ip", "link", "show", "dev", "tap1a2b3c4d-5e"])
        .expect("exec");
    assert!(!out.status.success(), "port removed with its VM");
    region
        .vm_create(&spec)
        .expect("re-create the VM with the same port at once");

    // An agent's pin directory.
    let pin = Path::new("/sys/fs/bpf/strato").join(format!("{p}-az1-c1"));
    std::fs::create_dir_all(&pin).expect("pin dir on bpffs");

    let report = Region::down(&p).expect("down");
    assert!(report.namespaces_deleted.len() >= 14, "{report:?}");
    assert!(
        report.processes_killed.contains(&(sleeper.id() as i32)),
        "{report:?}"
    );
    assert!(
        report.processes_killed.contains(&(ctl.id() as i32)),
        "{report:?}"
    );
    assert_eq!(report.pin_dirs_removed, [pin]);
    for child in [&mut sleeper, &mut ctl] {
        let st = child.wait().expect("reap");
        assert_eq!(st.signal(), Some(libc::SIGTERM), "{st:?}");
        assert!(!Path::new(&format!("/proc/{}", child.id())).exists());
    }
    assert_gone(&p);
    assert!(
        Region::down(&p).expect("down again").is_empty(),
        "down is idempotent"
    );
    assert!(Region::attach(&p).is_err());
    drop(guard);
}

#[test]
fn two_prefixes_coexist() {
    require_root!();
    let (p1, p2) = (prefix('b'), prefix('c'));
    let (g1, g2) = (Guard(p1.clone()), Guard(p2.clone()));
    let topo = Topology::default_region();
    let (r1, r2) = std::thread::scope(|s| {
        let a = s.spawn(|| Region::up(&topo, &p1));
        let b = s.spawn(|| Region::up(&topo, &p2));
        (
            a.join().expect("thread").expect("up 1"),
            b.join().expect("thread").expect("up 2"),
        )
    });
    let cross: Vec<(String, Ipv4Addr, bool)> = vec![
        ("az1-c1".into(), "198.18.2.1".parse().expect("ip"), true),
        (
            "inet-client1".into(),
            "203.0.113.3".parse().expect("ip"),
            true,
        ),
    ];
    assert!(ping_all(&r1, &cross).is_empty());
    assert!(ping_all(&r2, &cross).is_empty());
    // Failing one run does not touch the other.
    r1.fail(&FailTarget::Link("az1-spine".into()))
        .expect("fail");
    assert!(!ping(&r1, "az1-c1", "198.18.2.1".parse().expect("ip")));
    assert!(ping(&r2, "az1-c1", "198.18.2.1".parse().expect("ip")));
    Region::down(&p1).expect("down 1");
    assert_gone(&p1);
    assert!(
        ping_all(&r2, &cross).is_empty(),
        "second run survives the first's down"
    );
    assert!(r2
        .status()
        .expect("status")
        .namespaces
        .iter()
        .all(|n| n.present && n.kind != "stray"));
    Region::down(&p2).expect("down 2");
    assert_gone(&p2);
    drop((g1, g2));
}

#[test]
fn down_after_sigkill_of_up() {
    require_root!();
    let p = prefix('d');
    let _guard = Guard(p.clone());
    let bin = env!("CARGO_BIN_EXE_strato-harness");
    // Kill at several points of `up` (which takes well under a second).
    for delay_ms in [0u64, 5, 15, 30, 60, 200] {
        let mut child = Command::new(bin)
            .args(["--prefix", &p, "up"])
            .env("RUST_LOG", "debug")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start strato-harness up");
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SAFETY: kill(2) on our own child's pid, which is not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().expect("reap");
        let report = Region::down(&p).expect("down after SIGKILL");
        eprintln!("killed after {delay_ms} ms: {report}");
        assert_gone(&p);
    }
}

#[test]
fn bad_input_creates_nothing() {
    require_root!();
    let p = prefix('e');
    let _guard = Guard(p.clone());
    let dir = std::env::temp_dir().join(format!("nh-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let bad = dir.join("bad.toml");
    let text = Topology::default_region()
        .source()
        .replace("\"172.16.200.0/24\"", "\"198.18.200.0/24\"");
    std::fs::write(&bad, text).expect("write");

    let bin = env!("CARGO_BIN_EXE_strato-harness");
    let out = Command::new(bin)
        .args(["--prefix", &p, "up"])
        .arg(&bad)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml:")
            && stderr.contains("site[1].lan")
            && stderr.contains("overlaps"),
        "{stderr}"
    );
    assert_gone(&p);

    // Library: the same file never reaches `up`.
    assert!(Topology::load(&bad).is_err());
    // Invalid prefixes are refused before anything happens.
    for bad_prefix in ["Bad", "a-b", "toolong12", ""] {
        let e = Region::up(&Topology::default_region(), bad_prefix).expect_err(bad_prefix);
        assert!(matches!(e, HarnessError::InvalidPrefix { .. }), "{e}");
    }
    let out = Command::new(bin)
        .args(["--prefix", "x-y", "up"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid prefix"));
    // Bad CLI usage: clap's message, non-zero, nothing done.
    let out = Command::new(bin)
        .args(["--prefix", &p, "fail", "planet", "x"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let out = Command::new(bin)
        .args(["--prefix", &p, "status"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not up"));
    assert_gone(&p);

    // All or nothing: an `ip` that fails half-way through `up` (a wrapper
    // that refuses the AZ2 fabric's default route) leaves nothing behind.
    let real_ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("iproute2 installed");
    let wrapper_dir = dir.join("bin");
    std::fs::create_dir_all(&wrapper_dir).expect("tmp bin");
    let wrapper = wrapper_dir.join("ip");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\
             case \"$*\" in *-batch*) input=$(cat);;\n*) exec {real_ip} \"$@\";; esac\n\
             case \"$input\" in *'default via 198.18.0.2'*) echo 'Error: injected failure' >&2; echo 'Command failed -:9' >&2; exit 1;; esac\n\
             printf '%s\\n' \"$input\" | exec {real_ip} \"$@\"\n"
        ),
    )
    .expect("write wrapper");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let path = format!(
        "{}:{}",
        wrapper_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(bin)
        .args(["--prefix", &p, "up"])
        .env("PATH", path)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("injected failure") && stderr.contains(&format!("ip -n {p}-az2-fab")),
        "{stderr}"
    );
    eprintln!("{stderr}");
    assert_gone(&p);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn cli_round_trip() {
    require_root!();
    let p = prefix('f');
    let _guard = Guard(p.clone());
    let bin = env!("CARGO_BIN_EXE_strato-harness");
    let run = |args: &[&str]| {
        Command::new(bin)
            .env("STRATO_PREFIX", &p)
            .env("RUST_LOG", "warn")
            .args(args)
            .output()
            .expect("run")
    };
    let out = run(&["up"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["up"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("down"),
        "up refuses a running prefix and says to run down"
    );
    let out = run(&["exec", "az1-c1", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "exit code passed through");
    let out = run(&[
        "vm",
        "create",
        "db1",
        "--host",
        "az2-c2",
        "--port",
        "tapdb1",
        "--ip",
        "10.1.0.9/24",
        "--gw",
        "10.1.0.1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&[
        "vm",
        "create",
        "db2",
        "--host",
        "az2-c2",
        "--port",
        "tap-too-long-name",
    ]);
    assert!(!out.status.success());
    // DHCP: the default without --ip; --dhcp with --ip is refused.
    let out = run(&[
        "vm",
        "create",
        "db3",
        "--host",
        "az2-c2",
        "--port",
        "tapdb3",
        "--dhcp",
        "--ip",
        "10.1.0.10/24",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--dhcp") && stderr.contains("cannot be used with"),
        "{stderr}"
    );
    let out = run(&[
        "vm", "create", "db3", "--host", "az2-c2", "--port", "tapdb3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("addr dhcp"));
    let out = run(&["vm", "list"]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.lines()
            .any(|l| l.starts_with("db3 ") && l.trim_end().ends_with("dhcp")),
        "{list}"
    );
    let out = run(&["vm", "lease", "db3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no DHCP lease yet"));
    let out = run(&["vm", "lease", "db3", "--wait", "1", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no DHCP lease after 1") && stderr.contains("udhcpc"),
        "{stderr}"
    );
    let out = run(&["vm", "lease", "db1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("static address"));
    let out = run(&["vm", "list", "--json"]);
    let vms: serde_json::Value = serde_json::from_slice(&out.stdout).expect("vm list JSON");
    assert_eq!(vms[1]["name"], "db3");
    assert_eq!(vms[1]["dhcp"], true);
    assert!(vms[1]["lease"].is_null());
    let out = run(&["fail", "link", "az2-spine"]);
    assert!(out.status.success());
    let out = run(&["status", "--json"]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(json["failures"][0]["name"], "az2-spine");
    assert_eq!(json["vms"][0]["name"], "db1");
    let out = run(&["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAILED"));
    let db3_ns = json["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .find(|n| n["node"] == "vm-db3")
        .expect("vm-db3")
        .clone();
    let pidfile = format!("/run/strato/{p}/pids/vm-db3-udhcpc.pid");
    let udhcpc: i32 = std::fs::read_to_string(&pidfile)
        .expect("udhcpc pid file")
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .expect("pid");
    assert!(running(udhcpc));
    assert!(
        db3_ns["pids"]
            .as_array()
            .expect("pids")
            .iter()
            .any(|x| x.as_i64() == Some(udhcpc.into())),
        "udhcpc {udhcpc} in status: {db3_ns}"
    );
    assert!(run(&["heal"]).status.success());
    assert!(run(&["vm", "delete", "db1"]).status.success());
    assert!(run(&["vm", "delete", "db3"]).status.success());
    assert!(!running(udhcpc), "vm delete kills the client");
    assert!(run(&["down"]).status.success());
    assert_gone(&p);
}

/// `ethtool -k DEV` in `node`.
fn features(region: &Region, node: &str, dev: &str) -> String {
    let out = region
        .exec(node, &["ethtool", "-k", dev])
        .expect("run ethtool");
    assert!(out.status.success(), "ethtool -k {dev} in {node}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn has(features: &str, line: &str) -> bool {
    features.lines().any(|l| l.trim() == line)
}

/// Pid recorded in `pids/<name>.pid`.
fn recorded_pid(region: &Region, name: &str) -> i32 {
    let path = region.state_dir().join(format!("pids/{name}.pid"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("pid")
}

/// Whether `pid` runs (not a zombie).
fn running(pid: i32) -> bool {
    proc_state(pid as u32).is_some_and(|s| s != 'Z' && s != 'X')
}

#[test]
fn vm_dhcp_client_and_offloads() {
    require_root!();
    let p = prefix('g');
    let guard = Guard(p.clone());
    let region = Region::up(&Topology::default_region(), &p).expect("region up");

    // `up`: GRO on the peers of the ends that the hosts' XDP programs
    // redirect out of (fabric side of each uplink, internet side of each
    // ext0), and on the hosts' eth0.
    for (node, dev) in [
        ("az1-fab", "c1"),
        ("az1-fab", "gw1"),
        ("az2-fab", "c2"),
        ("internet", "az1-gw1"),
        ("internet", "az2-gw1"),
        ("az1-c1", "eth0"),
        ("az2-gw1", "eth0"),
    ] {
        let f = features(&region, node, dev);
        assert!(has(&f, "generic-receive-offload: on"), "{node} {dev}:\n{f}");
    }
    // Hosts' uplinks segment and checksum in software, like a NIC without
    // tunnel offloads.
    for node in ["az1-c1", "az2-gw1"] {
        let f = features(&region, node, "eth0");
        for want in [
            "tx-checksumming: off",
            "tcp-segmentation-offload: off",
            "generic-segmentation-offload: off",
            "tx-udp_tnl-segmentation: off",
        ] {
            assert!(has(&f, want), "{node} eth0 lacks {want:?}:\n{f}");
        }
    }

    // A VM without an address runs a DHCP client.
    let vm = region
        .vm_create(&VmSpec::new("d1", "az1-c1", "tapd1"))
        .expect("dhcp vm");
    assert!(vm.dhcp && vm.addr.is_none(), "{vm:?}");
    let f = features(&region, "d1", "eth0");
    // VMs keep their offloads (the port program runs at TC); GRO for NAPI.
    for want in [
        "generic-receive-offload: on",
        "tcp-segmentation-offload: on",
        "tx-checksumming: on",
    ] {
        assert!(has(&f, want), "VM eth0 lacks {want:?}:\n{f}");
    }

    // Tracked like any process of the run: pid file, log, in `status`.
    let pid = recorded_pid(&region, "vm-d1-udhcpc");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    let argv: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert!(argv.iter().any(|a| a == "udhcpc"), "{argv:?}");
    assert!(
        argv.iter().any(|a| a == "-f"),
        "foreground daemon: {argv:?}"
    );
    assert!(
        !argv.iter().any(|a| a == "-q" || a == "-n"),
        "must not exit: {argv:?}"
    );
    let ino = |path: String| {
        std::fs::metadata(&path)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    assert_eq!(
        ino(format!("/proc/{pid}/ns/net")),
        ino(format!("/run/netns/{p}-vm-d1")),
        "udhcpc runs in the VM's namespace"
    );
    let status = region.status().expect("status");
    let ns = status
        .namespaces
        .iter()
        .find(|n| n.node == "vm-d1")
        .expect("vm-d1 in status");
    // (Its event script may be running too: `deconfig` at start.)
    assert!(ns.pids.contains(&pid), "{status}");
    let text = status.to_string();
    assert!(
        text.lines()
            .any(|l| l.starts_with("d1 ") && l.contains(" dhcp ")),
        "{text}"
    );
    assert_eq!(region.vm_lease("d1").expect("lease"), None);
    assert!(matches!(
        region.vm_lease("nope"),
        Err(HarnessError::UnknownVm { .. })
    ));

    // Nobody answers: a clear error after the timeout, with the log's tail.
    let started = Instant::now();
    let e = region
        .vm_wait_lease("d1", Duration::from_secs(3))
        .expect_err("no DHCP server");
    let waited = started.elapsed();
    // It waited the whole timeout, and then gave up (eventually: the bound
    // is generous, only a wait that ignores its timeout can miss it).
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(3 + 60),
        "{waited:?}"
    );
    assert!(matches!(e, HarnessError::Dhcp { .. }), "{e:?}");
    let msg = e.to_string();
    for want in [
        "VM \"d1\"",
        "no DHCP lease after 3",
        "tapd1",
        "vm-d1-udhcpc.log",
        "broadcasting discover",
    ] {
        assert!(msg.contains(want), "{want:?} not in: {msg}");
    }
    assert!(running(pid), "the client keeps trying");

    // Static VMs have no client and no lease; --dhcp with --ip creates nothing.
    let s1 = VmSpec {
        addr: Some("10.5.0.5/24".parse().expect("cidr")),
        gateway: Some("10.5.0.1".parse().expect("ip")),
        ..VmSpec::new("s1", "az1-c1", "taps1")
    };
    assert!(!region.vm_create(&s1).expect("static vm").dhcp);
    assert!(!region.state_dir().join("pids/vm-s1-udhcpc.pid").exists());
    assert_eq!(region.vm_lease("s1").expect("lease"), None);
    let e = region
        .vm_wait_lease("s1", Duration::from_secs(3))
        .expect_err("static");
    assert!(e.to_string().contains("static address"), "{e}");
    let both = VmSpec {
        dhcp: DhcpMode::On,
        ..VmSpec {
            name: "s2".into(),
            port: "taps2".into(),
            ..s1.clone()
        }
    };
    let e = region.vm_create(&both).expect_err("--dhcp with --ip");
    assert!(e.to_string().contains("exclude each other"), "{e}");
    assert!(!Path::new(&format!("/run/netns/{p}-vm-s2")).exists());

    // A DHCP server on the port (busybox udhcpd in the host's namespace,
    // standing in for the dataplane): the VM gets and applies its lease.
    let conf = region.state_dir().join("udhcpd.conf");
    std::fs::write(
        &conf,
        format!(
            "start 10.7.0.50\nend 10.7.0.60\ninterface tapd1\n\
             lease_file {dir}/udhcpd.leases\npidfile {dir}/udhcpd.pid\n\
             option subnet 255.255.255.0\noption router 10.7.0.1\noption dns 10.7.0.2\n\
             option mtu 1400\noption staticroutes 10.20.0.0/16 10.7.0.1\noption lease 600\n",
            dir = region.state_dir().display()
        ),
    )
    .expect("udhcpd.conf");
    std::fs::write(region.state_dir().join("udhcpd.leases"), "").expect("leases");
    let out = region
        .exec(
            "az1-c1",
            &["ip", "addr", "add", "10.7.0.1/24", "dev", "tapd1"],
        )
        .expect("exec");
    assert!(out.status.success());
    let mut udhcpd = Command::new("busybox");
    udhcpd.args(["udhcpd", "-f", "-a", "100"]).arg(&conf);
    let mut server = region
        .spawn("udhcpd", Some("az1-c1"), udhcpd)
        .expect("spawn udhcpd");
    let lease = region
        .vm_wait_lease("d1", Duration::from_secs(15))
        .expect("lease from udhcpd");
    assert_eq!(lease.ip.prefix(), 24);
    assert!((50..=60).contains(&lease.ip.ip().octets()[3]), "{lease:?}");
    assert_eq!(lease.router, Some("10.7.0.1".parse().expect("ip")));
    assert_eq!(lease.dns, ["10.7.0.2".parse::<Ipv4Addr>().expect("ip")]);
    assert_eq!(lease.mtu, Some(1400));
    assert_eq!(
        lease.routes,
        [(
            "10.20.0.0/16".parse().expect("net"),
            "10.7.0.1".parse().expect("ip")
        )]
    );
    assert_eq!(lease.lease_secs, Some(600));
    assert_eq!(lease.server_id, Some("10.7.0.1".parse().expect("ip")));
    assert_eq!(region.vm_lease("d1").expect("lease"), Some(lease.clone()));
    let vm_routes = |region: &Region| {
        let out = region.exec("d1", &["ip", "route"]).expect("exec");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let routes = vm_routes(&region);
    assert!(
        routes.contains("default via 10.7.0.1") && routes.contains("10.20.0.0/16 via 10.7.0.1"),
        "{routes}"
    );
    let out = region
        .exec("d1", &["ip", "-o", "addr", "show", "dev", "eth0"])
        .expect("exec");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&lease.ip.to_string()));
    let out = region
        .exec("d1", &["ip", "-o", "link", "show", "dev", "eth0"])
        .expect("exec");
    assert!(String::from_utf8_lossy(&out.stdout).contains("mtu 1400"));
    assert!(ping(&region, "d1", "10.7.0.1".parse().expect("ip")));
    assert!(region
        .status()
        .expect("status")
        .to_string()
        .contains(&format!("{} (dhcp)", lease.ip)));

    // Heal puts back what a failure deleted (the routes of the lease).
    region
        .fail(&FailTarget::Link("vm-d1".into()))
        .expect("fail the VM's link");
    assert!(!vm_routes(&region).contains("default"));
    region.heal().expect("heal");
    let routes = vm_routes(&region);
    assert!(
        routes.contains("default via 10.7.0.1") && routes.contains("10.20.0.0/16 via 10.7.0.1"),
        "after heal: {routes}"
    );

    // `vm delete` kills the client and forgets its files.
    region.vm_delete("d1").expect("vm delete");
    assert!(!running(pid), "udhcpc {pid} survived vm delete");
    assert!(!region.state_dir().join("pids/vm-d1-udhcpc.pid").exists());
    assert!(!region.vm_lease_path("d1").exists());
    // The same name again gets a new client (and no stale lease).
    region
        .vm_create(&VmSpec::new("d1", "az1-c1", "tapd1"))
        .expect("re-create");
    let pid2 = recorded_pid(&region, "vm-d1-udhcpc");
    assert!(running(pid2) && pid2 != pid);

    let report = Region::down(&p).expect("down");
    assert!(!running(pid2), "udhcpc {pid2} survived down");
    assert!(report.processes_killed.contains(&pid2), "{report:?}");
    assert!(
        report.processes_killed.contains(&(server.id() as i32)),
        "{report:?}"
    );
    server.wait().expect("reap udhcpd");
    assert_gone(&p);
    drop(guard);
}
