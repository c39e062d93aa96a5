//! End to end, foundation: the default region in namespaces, the real
//! controller and one real agent per host as processes. Checks that agents
//! attach the dataplane to every uplink and VM port, that traffic flows and
//! is counted, that malformed frames are dropped and counted with their
//! reason, that forwarding survives agent restarts and a controller outage,
//! that an AZ's spine failure cuts only cross-AZ traffic, and that tearing
//! down leaves nothing behind.

use std::{path::Path, process::Command, thread, time::Duration};

use netns_harness::{FailTarget, Region, Topology, VmSpec};
use strato_proto::report::{HostStatus, Role};
use strato_tests::e2e::Cloud;

fn uplink_counters(h: &HostStatus) -> strato_proto::report::IfCounters {
    h.report
        .interfaces
        .iter()
        .find(|i| i.role == Role::Uplink)
        .unwrap_or_else(|| panic!("{} reports no uplink: {:?}", h.host, h.report.interfaces))
        .counters
}

/// Sends one raw Ethernet frame out of `iface` in `node`'s namespace.
fn send_raw(cloud: &Cloud, node: &str, iface: &str, frame: &[u8]) {
    let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
    let script = format!(
        "import socket; s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(('{iface}', 0)); s.send(bytes.fromhex('{hex}'))"
    );
    let out = cloud
        .region
        .exec(node, &["/usr/bin/python3", "-c", &script])
        .expect("exec python3");
    assert!(
        out.status.success(),
        "sending a raw frame: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Processes whose command line mentions the run prefix (agents carry
/// `--host <prefix>-...`, the controller its socket path).
/// Waits (5 s at most, `what`) until `host` reports at least `min` drops
/// for `reason` on `interface`.
fn wait_for_drops(
    cloud: &Cloud,
    host: &netns_harness::Host,
    what: &str,
    (interface, reason, min): (&str, &str, u64),
) {
    cloud.wait_until(what, Duration::from_secs(5), || {
        cloud
            .host(host)
            .report
            .drops
            .iter()
            .any(|d| d.interface == interface && d.reason == reason && d.packets >= min)
    });
}

fn processes_of(prefix: &str) -> Vec<String> {
    let needle = format!("{prefix}-");
    let sock = format!("/run/strato/{prefix}/");
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) || name == me {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if (cmd.contains(&needle) || cmd.contains(&sock)) && cmd.contains("strato") {
                found.push(format!("{name}: {cmd}"));
            }
        }
    }
    found
}

#[test]
fn region_traffic_counters_faults_and_cleanup() {
    let cloud = Cloud::up("fnd", &Topology::default_region());
    let prefix = cloud.prefix().to_owned();
    let hosts = cloud.region.hosts();
    assert_eq!(
        hosts.len(),
        6,
        "default region: 2 AZs x (2 compute + 1 gateway)"
    );

    // Every agent attached the uplink program and reports it.
    for h in &hosts {
        let s = cloud.host(h);
        let up = s
            .report
            .interfaces
            .iter()
            .find(|i| i.name == h.uplink)
            .expect("uplink reported");
        assert_eq!(up.role, Role::Uplink);
        assert_eq!(up.error, None, "{}: {:?}", h.name, up.error);
        assert!(
            Path::new(&s.report.pin_dir)
                .join(dataplane_common::maps::IF_STATS)
                .exists(),
            "{}: maps not pinned",
            h.name
        );
        assert!(
            Path::new(&s.report.pin_dir)
                .join("links")
                .join(&h.uplink)
                .exists(),
            "{}: link not pinned",
            h.name
        );
    }

    // Full mesh over the underlay, through every host's XDP program.
    let before: Vec<u64> = hosts
        .iter()
        .map(|h| uplink_counters(&cloud.host(h)).ipv4)
        .collect();
    thread::scope(|s| {
        for a in &hosts {
            for b in &hosts {
                if a.name == b.name {
                    continue;
                }
                let cloud = &cloud;
                s.spawn(move || {
                    assert!(
                        cloud.ping(&a.name, &b.underlay_ip.to_string()),
                        "{} cannot ping {}",
                        a.name,
                        b.name
                    );
                });
            }
        }
    });
    // Each host received 5 echo requests and 5 replies: counters moved by at least 10.
    cloud.wait_until(
        "uplink IPv4 counters reflect the mesh",
        Duration::from_secs(5),
        || {
            hosts
                .iter()
                .zip(&before)
                .all(|(h, b)| uplink_counters(&cloud.host(h)).ipv4 >= b + 10)
        },
    );

    // A malformed frame from the fabric is dropped and counted with its reason.
    let c1 = hosts.iter().find(|h| h.name == "az1-c1").expect("az1-c1");
    let mut bad = strato_tests::packets::ipv4_udp(b"payload");
    bad[0..6].copy_from_slice(&[0xff; 6]);
    bad[16..18].copy_from_slice(&1400u16.to_be_bytes()); // total length past the frame
    strato_tests::packets::fix_ipv4_checksum(&mut bad);
    for _ in 0..3 {
        send_raw(&cloud, "az1-fab", "c1", &bad);
    }
    wait_for_drops(
        &cloud,
        c1,
        "az1-c1 counts bad_ipv4_total_length drops",
        ("eth0", "bad_ipv4_total_length", 3),
    );

    // A VM port appears: the agent attaches the port program and counts its traffic.
    let mut spec = VmSpec::new("v1", "az1-c1", "tapfnd0001-aa");
    spec.addr = Some("10.0.0.5/24".parse().expect("cidr"));
    spec.gateway = Some("10.0.0.1".parse().expect("ip"));
    cloud.region.vm_create(&spec).expect("vm create");
    cloud.wait_until(
        "the agent attached to the VM port",
        Duration::from_secs(5),
        || {
            cloud
                .host(c1)
                .report
                .interfaces
                .iter()
                .any(|i| i.name == "tapfnd0001-aa" && i.role == Role::Port && i.error.is_none())
        },
    );
    // No port is configured for this tap: whatever the VM sends is dropped
    // (denied by default) and counted against the tap as port_unknown.
    let _ = cloud
        .region
        .exec("vm-v1", &["ping", "-c2", "-W1", "-q", "10.0.0.1"]);
    wait_for_drops(
        &cloud,
        c1,
        "the port program dropped the unconfigured VM's frames",
        ("tapfnd0001-aa", "port_unknown", 1),
    );
    cloud.region.vm_delete("v1").expect("vm delete");
    cloud.wait_until(
        "the agent forgot the deleted port",
        Duration::from_secs(5),
        || {
            !cloud
                .host(c1)
                .report
                .interfaces
                .iter()
                .any(|i| i.name == "tapfnd0001-aa")
        },
    );
    assert!(
        !Path::new(&cloud.host(c1).report.pin_dir)
            .join("links/tapfnd0001-aa")
            .exists(),
        "stale link pin"
    );

    // Agent restart during a continuous ping over the underlay (through the
    // uplink programs of both hosts): programs stay attached through their
    // pinned links and the agent is not on the path, so not one probe may
    // be lost. The ping runs from before the stop until after the new
    // agent has reported.
    let c2 = hosts.iter().find(|h| h.name == "az2-c1").expect("az2-c1");
    let target = c2.underlay_ip.to_string();
    assert!(cloud.ping("az1-c1", &target), "no path before the restart");
    let old = cloud.host(c2).report;
    let pinger = cloud.pinger("ping-agent-restart", "az1-c1", &target);
    thread::sleep(Duration::from_millis(500));
    cloud.stop("agent-az2-c1");
    thread::sleep(Duration::from_millis(300));
    let restarted_ms = strato_proto::time::now_ms();
    cloud.start_agent(c2);
    cloud.wait_until(
        "the restarted agent reports (a report newer than the restart)",
        Duration::from_secs(60),
        || {
            let s = cloud.host(c2);
            s.state == "up"
                && s.report.pid != old.pid
                && s.report.started_at_ms >= restarted_ms
                && s.report
                    .interfaces
                    .iter()
                    .any(|i| i.name == "eth0" && i.error.is_none())
        },
    );
    thread::sleep(Duration::from_millis(500));
    let ping = pinger.stop();
    ping.assert_all_answered("across an agent restart");

    // The AZ's spine link fails: cross-AZ traffic stops, intra-AZ goes on.
    cloud
        .region
        .fail(&FailTarget::Link("az1-spine".into()))
        .expect("fail link");
    let az1_c2 = hosts.iter().find(|h| h.name == "az1-c2").expect("az1-c2");
    assert!(
        cloud.ping("az1-c1", &az1_c2.underlay_ip.to_string()),
        "intra-AZ ping failed during the spine failure"
    );
    assert!(
        !cloud.ping("az1-c1", &target),
        "cross-AZ ping succeeded with az1's spine link down"
    );
    cloud.region.heal().expect("heal");
    cloud.wait_until(
        "cross-AZ traffic is back after heal",
        Duration::from_secs(10),
        || cloud.ping("az1-c1", &target),
    );

    // Down leaves no namespace, pin, process or state behind.
    drop(cloud);
    let left: Vec<String> = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip")
            .stdout,
    )
    .lines()
    .filter(|l| l.starts_with(&format!("{prefix}-")))
    .map(str::to_owned)
    .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    let pins: Vec<_> = std::fs::read_dir("/sys/fs/bpf/strato")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{prefix}-")))
                .collect()
        })
        .unwrap_or_default();
    assert!(pins.is_empty(), "pin dirs left: {pins:?}");
    assert!(
        !Path::new("/run/strato").join(&prefix).exists(),
        "state dir left"
    );
    let procs = processes_of(&prefix);
    assert!(procs.is_empty(), "processes left: {procs:?}");
}

/// Agents keep forwarding (and counting) while the controller is down and
/// report again when it is back.
#[test]
fn controller_outage_does_not_stop_the_dataplane() {
    let cloud = Cloud::up("out", &Topology::default_region());
    let hosts = cloud.region.hosts();
    let a = &hosts[0];
    let b = hosts
        .iter()
        .find(|h| h.az != a.az)
        .expect("a host in the other AZ");
    cloud.stop("controller");
    assert!(
        cloud.hosts().is_empty(),
        "controller still answering after stop"
    );
    let pin_dir = Path::new(strato_proto::naming::PIN_ROOT).join(Cloud::host_id(b));
    let before = strato_dataplane::Counters::read_pinned(&pin_dir)
        .expect("pinned counters")
        .total();
    assert!(
        cloud.ping(&a.name, &b.underlay_ip.to_string()),
        "forwarding stopped with the controller down"
    );
    let after = strato_dataplane::Counters::read_pinned(&pin_dir)
        .expect("pinned counters")
        .total();
    assert!(
        after.ipv4 > before.ipv4,
        "counting stopped with the controller down: {before:?} -> {after:?}"
    );
    let restarted_ms = strato_proto::time::now_ms();
    cloud.start_controller();
    cloud.wait_until(
        "every agent reports to the restarted controller (reports newer than its start)",
        Duration::from_secs(30),
        || {
            let seen = cloud.hosts();
            seen.len() == hosts.len()
                && seen.iter().all(|s| {
                    s.state == "up"
                        && s.last_seen_ms_ago <= strato_proto::time::now_ms() - restarted_ms
                })
        },
    );
    // The harness state of the run is intact and re-attachable (as `make down` does).
    let again = Region::attach(cloud.prefix()).expect("attach to the run");
    assert_eq!(again.hosts().len(), hosts.len());
}
