//! End to end, VLAN tags from a tenant, in the default region: a VM sends
//! 802.1Q-tagged and QinQ (802.1ad outside 802.1Q) frames with scapy to a
//! peer on its own host and to a peer on another host. The agents attach
//! the TC build of the port program, where the kernel has already moved
//! the outer tag into the sk_buff's metadata, so this is the path the
//! program tier cannot reach (see `program_port_tc.rs`). Proven with
//! captures (tcpdump reads tags from the packet socket's auxdata):
//!
//! - the peer on the same host receives none of them;
//! - nothing tagged, and none of them inside VXLAN, leaves the sender
//!   host's uplink; the peer on the other host receives none of them;
//! - the sender port's `vlan_on_port` drop counter moves by exactly the
//!   number of tagged frames sent;
//! - the same frames untagged, sent the same way in the same run, arrive
//!   at both peers and are seen in VXLAN on the uplink (so the test cannot
//!   pass on a broken network or a capture that sees nothing).

use std::{path::PathBuf, process::Child, time::Duration};

use netns_harness::Topology;
use strato_tests::e2e::{signal_and_wait, Cloud, Vm};

/// UDP destination ports that mark the frames in the captures.
const DOT1Q_PORT: u16 = 4241;
const QINQ_PORT: u16 = 4242;
const UNTAGGED_PORT: u16 = 4243;
/// Tagged frames of each kind sent to each peer.
const EACH: u64 = 3;

/// A tcpdump started by the harness in a namespace, writing its text
/// output (`-e`: link-level headers, tags included) to its log. Stopped
/// and reaped on drop (the region's teardown would kill it too).
struct Capture {
    name: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Capture {
    fn start(cloud: &Cloud, name: &str, node: &str, iface: &str) -> Capture {
        let cmd = cloud
            .region
            .command(node, &["tcpdump", "-i", iface, "-nn", "-e", "-l"])
            .expect("command");
        let child = cloud
            .region
            .spawn(name, Some(node), cmd)
            .unwrap_or_else(|e| panic!("spawn tcpdump on {node} {iface}: {e}"));
        let log = cloud
            .region
            .state_dir()
            .join("logs")
            .join(format!("{name}.log"));
        let c = Capture {
            name: name.to_owned(),
            log,
            child: Some(child),
        };
        cloud.wait_until(
            &format!("tcpdump listens on {node} {iface}"),
            Duration::from_secs(10),
            || c.text().contains("listening on"),
        );
        c
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops tcpdump (SIGINT: it flushes) and returns everything it printed.
    fn stop(mut self) -> String {
        if let Some(mut child) = self.child.take() {
            let within = Duration::from_secs(10);
            signal_and_wait(&mut child, libc::SIGINT, "SIGINT", within, &self.name);
        }
        self.text()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Lines of a capture that carry a VLAN tag (an outer one, or one on a
/// frame inside VXLAN) or one of the tagged frames' markers.
fn tagged_lines(capture: &str) -> Vec<&str> {
    let dot1q = format!(".{DOT1Q_PORT}:");
    let qinq = format!(".{QINQ_PORT}:");
    capture
        .lines()
        .filter(|l| {
            let low = l.to_ascii_lowercase();
            low.contains("vlan")
                || low.contains("802.1q")
                || l.contains(&dot1q)
                || l.contains(&qinq)
        })
        .collect()
}

/// The port's `vlan_on_port` drops, read from the host's pinned maps
/// (current, not as of the last report).
fn vlan_drops(host: &netns_harness::Host, ifindex: u32) -> u64 {
    let dir = std::path::Path::new(strato_proto::naming::PIN_ROOT).join(Cloud::host_id(host));
    let c = strato_dataplane::Counters::read_pinned(&dir)
        .unwrap_or_else(|e| panic!("read the counters of {}: {e}", host.name));
    c.drops
        .iter()
        .filter(|((i, r), _)| *i == ifindex && r.label() == "vlan_on_port")
        .map(|(_, s)| s.packets)
        .sum()
}

#[test]
fn tagged_frames_from_a_vm_are_dropped_and_counted() {
    let cloud = Cloud::up("vln", &Topology::default_region());
    let admin = cloud.admin();
    let api = cloud.tenant("red");
    let vpc = Cloud::vpc(&api, &["10.0.1.0/24"], &[]);
    let net = &vpc.nets[0];
    // The sender and a peer on az1-c1, a peer on az1-c2 (same network:
    // switched, so the frame to it leaves az1-c1 in VXLAN).
    let sender = cloud.boot(&admin, &api, net, "v1", "az1-c1", None);
    let local = cloud.boot(&admin, &api, net, "v2", "az1-c1", None);
    let remote = cloud.boot(&admin, &api, net, "v3", "az1-c2", None);
    cloud.wait_until_active(&api, &[&sender, &local, &remote]);
    // The network works before anything is tagged.
    for peer in [&local, &remote] {
        cloud.wait_until(
            &format!("v1 pings {}", peer.name),
            Duration::from_secs(15),
            || cloud.ping(&sender.name, &peer.ip),
        );
    }

    let h1 = cloud.host_named("az1-c1");
    let ifindex = {
        let mut ifindex = None;
        cloud.wait_until(
            "az1-c1 reports v1's port with its ifindex",
            Duration::from_secs(15),
            || {
                ifindex = cloud
                    .host(&h1)
                    .report
                    .ports
                    .iter()
                    .find(|p| p.id == sender.port)
                    .and_then(|p| p.ifindex);
                ifindex.is_some()
            },
        );
        ifindex.expect("ifindex")
    };

    let cap_local = Capture::start(&cloud, "cap-v2", &local.name, "eth0");
    let cap_remote = Capture::start(&cloud, "cap-v3", &remote.name, "eth0");
    let cap_uplink = Capture::start(&cloud, "cap-az1-c1-uplink", &h1.name, &h1.uplink);
    let before = vlan_drops(&h1, ifindex);

    send(&cloud, &sender, &[&local, &remote]);

    // The untagged frames, sent after the tagged ones, arrive: at both
    // peers, and in VXLAN on the sender's uplink towards the remote one.
    let untagged = format!(".{UNTAGGED_PORT}:");
    for (what, c) in [
        ("v2 (same host)", &cap_local),
        ("v3 (other host)", &cap_remote),
        ("az1-c1's uplink", &cap_uplink),
    ] {
        cloud.wait_until(
            &format!("the untagged frame is seen at {what}"),
            Duration::from_secs(15),
            || c.text().contains(&untagged),
        );
    }
    let local_text = cap_local.stop();
    let remote_text = cap_remote.stop();
    let uplink_text = cap_uplink.stop();
    let mut seen = String::new();
    for (what, text) in [
        ("v2, the peer on the same host,", &local_text),
        ("v3, the peer on the other host,", &remote_text),
        ("az1-c1's uplink", &uplink_text),
    ] {
        let bad = tagged_lines(text);
        if !bad.is_empty() {
            seen += &format!("{what} saw tagged frames from v1:\n{}\n", bad.join("\n"));
        }
    }
    assert!(
        seen.is_empty(),
        "{seen}--- captures ---\nv2:\n{local_text}\nv3:\n{remote_text}\nuplink:\n{uplink_text}"
    );
    let sent = 2 * 2 * EACH;
    cloud.wait_until(
        &format!("v1's port counts {sent} vlan_on_port drops"),
        Duration::from_secs(15),
        || vlan_drops(&h1, ifindex) >= before + sent,
    );
    let dropped = vlan_drops(&h1, ifindex) - before;
    assert_eq!(
        dropped, sent,
        "vlan_on_port drops on v1's port (ifindex {ifindex}): {dropped}, sent {sent} tagged frames"
    );
}

/// v1 sends, with scapy on its eth0: to each peer `EACH` 802.1Q-tagged
/// (VID 100) and `EACH` QinQ (802.1ad VID 300 outside 802.1Q VID 100) UDP
/// frames, then the same UDP frame untagged (three times: the marker of
/// the captures).
fn send(cloud: &Cloud, from: &Vm, peers: &[&Vm]) {
    let peers_py: Vec<String> = peers
        .iter()
        .map(|p| format!("(\"{}\", \"{}\")", p.mac, p.ip))
        .collect();
    let script = format!(
        r#"
import logging; logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
from scapy.all import Ether, Dot1Q, Dot1AD, IP, UDP, Raw, sendp
me, mine = "{me}", "{myip}"
tagged, untagged = [], []
for mac, ip in [{peers}]:
    l3 = lambda port: IP(src=mine, dst=ip)/UDP(sport=40000, dport=port)/Raw(b"tenant-vlan")
    for _ in range({each}):
        tagged.append(Ether(src=me, dst=mac)/Dot1Q(vlan=100)/l3({dot1q}))
        tagged.append(Ether(src=me, dst=mac)/Dot1AD(vlan=300)/Dot1Q(vlan=100)/l3({qinq}))
    untagged += [Ether(src=me, dst=mac)/l3({untagged})] * 3
assert bytes(tagged[0])[12:14] == b"\x81\x00" and bytes(tagged[1])[12:14] == b"\x88\xa8"
sendp(tagged, iface="eth0", verbose=False)
sendp(untagged, iface="eth0", verbose=False)
print(len(tagged))
"#,
        me = from.mac,
        myip = from.ip,
        peers = peers_py.join(", "),
        each = EACH,
        dot1q = DOT1Q_PORT,
        qinq = QINQ_PORT,
        untagged = UNTAGGED_PORT,
    );
    let o = cloud.python(&from.name, &script, "scapy");
    let n: u64 = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .expect("scapy prints the number of tagged frames");
    assert_eq!(n, 2 * EACH * peers.len() as u64, "tagged frames sent");
}
