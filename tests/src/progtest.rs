//! Program-test tier: runs fixture rows through the real eBPF object with
//! BPF_PROG_TEST_RUN (aya `TestRun`), in the style of Katran's test tables.
//!
//! A row is data: description, attach point, ingress interface, input frame,
//! expected verdict, expected output bytes (or a checker) and expected
//! counters. A new behaviour is a new row, not new code. The object is loaded
//! by the same `Dataplane::load` the agent uses, without pinning, so rows
//! never touch a host's live maps.
//!
//! Rows run in a deterministic world ([`ProgramTester::in_test_net`]): a
//! fresh network namespace ([`TestNet`]) with an uplink whose underlay next
//! hop is a permanent neighbour (so `bpf_fib_lookup` answers the same way
//! every time), an underlay prefix whose neighbours never resolve, and VM
//! taps; and VPC tables written from compiled entries ([`World`]) by the
//! production table builder (`tables::build` + `Dataplane::apply`), so a row
//! tests compiled configuration -> maps -> packet. Each run carries an
//! `xdp_md` context with the row's ingress ifindex. A row whose frame leaves
//! by redirect is then delivered for real: the row's entry point is attached
//! (native XDP) to its ingress interface, the frame is sent into it from the
//! veth peer with a packet socket, and the row checks which interface it came
//! out of and its bytes (captured on the peers). Live frames
//! (`BPF_F_TEST_XDP_LIVE_FRAMES`) would be shorter, but kernels refuse them
//! (6.18 answers EPERM for every program), and a real interface is the
//! production path anyway. `program_kernel.rs` checks once, first, that
//! the kernel allows everything this tier needs, and says what it refuses.
//!
//! The namespace is entered by the creating thread only, so every test
//! makes its own tester and the tests run in parallel (`scripts/test
//! program` runs them with the default test threads).

use std::{
    collections::BTreeMap,
    ffi::CString,
    fs::File,
    io::Write as _,
    marker::PhantomData,
    net::Ipv4Addr,
    ops::Range,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use aya::programs::{xdp::XdpLinkId, ProgramError, TestRun, TestRunOptions};
use dataplane_common::{DropReason, DropStats, HostInfo, IfStats};
use strato_agent::vpc as tables;
use strato_dataplane::tables::Tables;
use strato_dataplane::{Attach, Counters, Dataplane};
use strato_proto::config::{AddressPair, HostRoute};
use strato_proto::config::{
    Entry, FloatingIpEntry, GatewayHost, NetworkEntry, PortEntry, RemoteEntry, RouterEntry,
    RouterExternal, RouterInterface, SgMemberEntry, SubnetEntry,
};
pub use strato_proto::config::{SecurityGroupEntry, SgRuleEntry};

/// The ingress of a run without a context: BPF_PROG_TEST_RUN then runs the
/// program as if the frame came in on the loopback device of the caller's
/// namespace. [`Fixture::ingress`] 0 means this.
pub const TEST_IFINDEX: u32 = 1;

/// The shortest frame the kernel hands to XDP (an Ethernet header).
pub const MIN_FRAME: usize = 14;

// ---------------------------------------------------------------------------
// The test network.

/// The host's uplink in a [`TestNet`] (peer `up0p`).
pub const UPLINK: &str = "up0";
/// MAC of `up0`: the outer source MAC of encapsulated frames.
pub const UPLINK_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x01, 0x01, 0x01];
/// The host's underlay (VTEP) address, on `up0` (198.18.1.1/31).
pub const UNDERLAY_IP: [u8; 4] = [198, 18, 1, 1];
/// The underlay next hop for 198.18.0.0/16, a permanent neighbour of `up0`.
pub const UNDERLAY_NEXTHOP: [u8; 4] = [198, 18, 1, 0];
/// The permanent neighbour entry's MAC: the outer destination MAC.
pub const UNDERLAY_NEXTHOP_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x01, 0x01, 0x00];
/// Underlay addresses on-link on `up0` (198.18.200.0/24 dev up0): the next
/// hop is the address itself, and it is never resolved.
pub const UNRESOLVED_UNDERLAY: [u8; 4] = [198, 18, 200, 7];
/// A second underlay interface (198.18.3.1/31, peer `up1p`) with a more
/// specific route, 198.18.100.0/24 via 198.18.3.0. The encapsulation's FIB
/// lookup is pinned to the uplink, so this route is never used.
pub const OTHER_LINK: &str = "up1";
/// An underlay address routed through [`OTHER_LINK`] (and covered by
/// up0's 198.18.0.0/16).
pub const OTHER_LINK_UNDERLAY: [u8; 4] = [198, 18, 100, 7];
/// MAC of `up1`'s next hop 198.18.3.0 (a permanent neighbour).
pub const OTHER_LINK_NEXTHOP_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x03, 0x03, 0x00];
/// An underlay address with no route at all.
pub const UNROUTED_UNDERLAY: [u8; 4] = [203, 0, 113, 9];
/// MTU of the taps and their peers: above every network's MTU, and low
/// enough for native XDP on veth without multi-buffer frames.
pub const VM_LINK_MTU: u32 = 2000;
/// The VM taps (host ends; the VM ends are `<tap>p`).
pub const TAPS: [&str; 8] = ["tp1", "tp2", "tp3", "tp4", "tp5", "tp6", "tp7", "tp8"];

/// Interfaces whose veth peer is captured: every tap and both uplinks.
fn inside_links() -> Vec<&'static str> {
    let mut v: Vec<&str> = TAPS.to_vec();
    v.push(UPLINK);
    v.push(OTHER_LINK);
    v
}

static NEXT_NET: AtomicU32 = AtomicU32::new(0);

/// `sll_pkttype` of frames the captured interface sent itself.
const PACKET_OUTGOING: u8 = 4;

/// A fresh network namespace `sprog-<pid>-<n>`, entered on the creating
/// thread (`setns` affects only the calling thread, so concurrently running
/// tests each have their own), holding:
/// - `up0` (198.18.1.1/31, MAC [`UPLINK_MAC`], IPv4 forwarding on, as the
///   agent sets it: `bpf_fib_lookup` answers only for such interfaces), peer
///   `up0p`; route 198.18.0.0/16 via 198.18.1.0, a PERMANENT neighbour with
///   MAC [`UNDERLAY_NEXTHOP_MAC`]; route 198.18.200.0/24 on-link, whose
///   neighbours are never resolved;
/// - `up1` (198.18.3.1/31), peer `up1p`; route 198.18.100.0/24 via
///   198.18.3.0 (resolved: permanent neighbour);
/// - the taps [`TAPS`] with peers `<tap>p`;
///
/// all up, IPv6 off (no neighbour discovery chatter on the captures), and a
/// packet socket on every peer to see what comes out of the inside end.
///
/// RAII: dropping it (also while unwinding from a failed assertion)
/// closes the captures, returns the thread to its original namespace and
/// deletes the namespace with everything in it. Not `Send`: it must be
/// dropped on the thread it entered.
pub struct TestNet {
    name: String,
    original: Option<OwnedFd>,
    ifindex: BTreeMap<String, u32>,
    /// Inside ifindex -> packet socket on its peer.
    captures: BTreeMap<u32, OwnedFd>,
    _thread_bound: PhantomData<*const ()>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let o = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if !o.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(())
}

fn mac_str(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl TestNet {
    /// Creates and enters the namespace. Panics (after cleaning up) if any
    /// step fails.
    pub fn new() -> TestNet {
        crate::require_root("program tests (network namespaces)");
        Self::remove_stale();
        let name = format!(
            "sprog-{}-{}",
            std::process::id(),
            NEXT_NET.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]).unwrap_or_else(|e| panic!("creating the test netns: {e}"));
        let mut net = TestNet {
            name,
            original: None,
            ifindex: BTreeMap::new(),
            captures: BTreeMap::new(),
            _thread_bound: PhantomData,
        };
        if let Err(e) = net.setup() {
            panic!("setting up test netns {}: {e}", net.name);
        }
        net
    }

    /// Namespaces of earlier runs whose process is gone (a run killed before
    /// its destructors ran).
    fn remove_stale() {
        let Ok(dir) = std::fs::read_dir("/run/netns") else {
            return;
        };
        for e in dir.filter_map(Result::ok) {
            let n = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = n
                .strip_prefix("sprog-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = ip(&["netns", "delete", &n]);
            }
        }
    }

    fn setup(&mut self) -> Result<(), String> {
        let cur = File::open("/proc/thread-self/ns/net")
            .map_err(|e| format!("/proc/thread-self/ns/net: {e}"))?;
        let target = File::open(format!("/run/netns/{}", self.name))
            .map_err(|e| format!("/run/netns/{}: {e}", self.name))?;
        // SAFETY: setns on a namespace file descriptor we hold open; it only
        // changes this thread's network namespace.
        if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns: {}", std::io::Error::last_os_error()));
        }
        self.original = Some(cur.into());
        // /proc/sys/net is the calling thread's namespace.
        for (k, v) in [
            ("net/ipv6/conf/all/disable_ipv6", "1"),
            ("net/ipv6/conf/default/disable_ipv6", "1"),
        ] {
            std::fs::write(format!("/proc/sys/{k}"), v).map_err(|e| format!("sysctl {k}: {e}"))?;
        }
        let mut batch = String::new();
        batch += &format!(
            "link add {UPLINK} address {} type veth peer name {UPLINK}p\n",
            mac_str(&UPLINK_MAC)
        );
        batch += &format!("link add {OTHER_LINK} type veth peer name {OTHER_LINK}p\n");
        // VM links take frames above the networks' MTU (1500), so rows can
        // send what a VM with a larger MTU would and be answered "too big".
        for t in TAPS {
            batch += &format!(
                "link add {t} mtu {VM_LINK_MTU} type veth peer name {t}p mtu {VM_LINK_MTU}\n"
            );
        }
        batch += "link set dev lo up\n";
        for l in inside_links() {
            batch += &format!("link set dev {l} up\nlink set dev {l}p up\n");
        }
        batch += &format!("address add 198.18.1.1/31 dev {UPLINK}\n");
        batch += &format!("address add 198.18.3.1/31 dev {OTHER_LINK}\n");
        batch += &format!("route add 198.18.0.0/16 via 198.18.1.0 dev {UPLINK}\n");
        batch += &format!("route add 198.18.200.0/24 dev {UPLINK} scope link\n");
        batch += &format!("route add 198.18.100.0/24 via 198.18.3.0 dev {OTHER_LINK}\n");
        batch += &format!(
            "neighbour replace 198.18.1.0 lladdr {} dev {UPLINK} nud permanent\n",
            mac_str(&UNDERLAY_NEXTHOP_MAC)
        );
        batch += &format!(
            "neighbour replace 198.18.3.0 lladdr {} dev {OTHER_LINK} nud permanent\n",
            mac_str(&OTHER_LINK_NEXTHOP_MAC)
        );
        let mut child = Command::new("ip")
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("ip -batch: {e}"))?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(batch.as_bytes())
            .map_err(|e| format!("ip -batch: {e}"))?;
        let o = child
            .wait_with_output()
            .map_err(|e| format!("ip -batch: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "ip -batch failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        // bpf_fib_lookup refuses (BPF_FIB_LKUP_RET_FWD_DISABLED) unless the
        // interface it is asked about forwards; the agent turns this on.
        // up1 doubles as a gateway host's external interface (NAT rows).
        for l in [UPLINK, OTHER_LINK] {
            let k = format!("/proc/sys/net/ipv4/conf/{l}/forwarding");
            std::fs::write(&k, "1").map_err(|e| format!("{k}: {e}"))?;
        }
        for l in inside_links() {
            for n in [l.to_string(), format!("{l}p")] {
                let c = CString::new(n.clone()).expect("no NUL");
                // SAFETY: a valid C string; looks the name up in this thread's namespace.
                let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
                if i == 0 {
                    return Err(format!("{n}: {}", std::io::Error::last_os_error()));
                }
                self.ifindex.insert(n, i);
            }
        }
        for l in inside_links() {
            let peer = self.ifindex[&format!("{l}p")];
            let fd = open_capture(peer).map_err(|e| format!("capture on {l}p: {e}"))?;
            self.captures.insert(self.ifindex[l], fd);
        }
        Ok(())
    }

    /// The namespace's name (`sprog-<pid>-<n>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// ifindex of an interface of the namespace (`up0`, `tp1`, `tp1p`, ...).
    pub fn ifindex(&self, name: &str) -> u32 {
        *self
            .ifindex
            .get(name)
            .unwrap_or_else(|| panic!("no interface {name} in the test netns"))
    }

    /// Name of an ifindex of the namespace, for messages.
    pub fn name_of(&self, ifindex: u32) -> String {
        self.ifindex
            .iter()
            .find(|(_, i)| **i == ifindex)
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| format!("ifindex {ifindex}"))
    }

    /// The VM-side peers (where frames redirected to a tap or uplink arrive).
    pub fn peers(&self) -> Vec<String> {
        inside_links().iter().map(|l| format!("{l}p")).collect()
    }

    /// Writes `frame` into inside interface `inside` from its veth peer (the
    /// peer's packet socket), as a VM or the underlay would send it.
    fn send_into(&self, inside: u32, frame: &[u8]) -> std::io::Result<()> {
        let fd = self.captures.get(&inside).ok_or_else(|| {
            std::io::Error::other(format!(
                "{} has no peer in the test net",
                self.name_of(inside)
            ))
        })?;
        // SAFETY: fd is our bound packet socket; the buffer is live for the call.
        let n = unsafe {
            libc::send(
                fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if n as usize != frame.len() {
            return Err(std::io::Error::other(format!(
                "sent {n} of {} bytes",
                frame.len()
            )));
        }
        Ok(())
    }

    /// Empties the captures and returns the frames the inside interfaces
    /// sent (nothing should be there between deliveries).
    fn drain(&self) -> Vec<(u32, Vec<u8>)> {
        let mut got = Vec::new();
        for (inside, fd) in &self.captures {
            while let Some((kind, frame)) = recv_frame(fd) {
                if kind != PACKET_OUTGOING {
                    got.push((*inside, frame));
                }
            }
        }
        got
    }

    /// Frames that came out of inside interfaces (as seen on their peers):
    /// waits up to `first` for one, then until `quiet` passes without more.
    fn collect(&self, first: Duration, quiet: Duration) -> Vec<(u32, Vec<u8>)> {
        let mut got = Vec::new();
        let start = Instant::now();
        loop {
            let wait = if got.is_empty() {
                first.saturating_sub(start.elapsed())
            } else {
                quiet
            };
            if wait.is_zero() {
                break;
            }
            let mut fds: Vec<libc::pollfd> = self
                .captures
                .values()
                .map(|fd| libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // SAFETY: fds is a live array of pollfd of the given length.
            let n = unsafe {
                libc::poll(
                    fds.as_mut_ptr(),
                    fds.len() as libc::nfds_t,
                    wait.as_millis().max(1) as i32,
                )
            };
            if n <= 0 {
                break;
            }
            for (inside, fd) in &self.captures {
                while let Some((kind, frame)) = recv_frame(fd) {
                    if kind != PACKET_OUTGOING {
                        got.push((*inside, frame));
                    }
                }
            }
        }
        got
    }
}

impl Default for TestNet {
    fn default() -> Self {
        TestNet::new()
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        self.captures.clear();
        if let Some(orig) = self.original.take() {
            // SAFETY: setns back to the namespace this thread started in.
            if unsafe { libc::setns(orig.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                eprintln!(
                    "TestNet {}: cannot return to the original netns: {}",
                    self.name,
                    std::io::Error::last_os_error()
                );
            }
        }
        if let Err(e) = ip(&["netns", "delete", &self.name]) {
            eprintln!("TestNet {}: {e}", self.name);
        }
    }
}

fn open_capture(ifindex: u32) -> std::io::Result<OwnedFd> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2) call.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            proto as i32,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a new socket we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: binding our socket to a correctly sized sockaddr_ll.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// One frame from a capture socket, with its `sll_pkttype`; `None` when empty.
fn recv_frame(fd: &OwnedFd) -> Option<(u8, Vec<u8>)> {
    let mut buf = vec![0u8; 65536];
    // SAFETY: as in open_capture.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: buffer and address are live and correctly sized.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            0,
            &mut sll as *mut libc::sockaddr_ll as *mut libc::sockaddr,
            &mut len,
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some((sll.sll_pkttype, buf))
}

// ---------------------------------------------------------------------------
// The world: a small description turned into compiled entries.

/// A network of the world (compiled into a `NetworkEntry`).
#[derive(Clone, Debug)]
pub struct Net {
    id: String,
    vni: u32,
    mtu: u32,
    admin_up: bool,
    /// (subnet id, CIDR, gateway address)
    subnets: Vec<(String, String, String)>,
}

impl Net {
    /// A network with MTU 1450, administratively up, no subnets yet.
    pub fn new(id: &str, vni: u32) -> Net {
        Net {
            id: id.into(),
            vni,
            mtu: 1450,
            admin_up: true,
            subnets: Vec::new(),
        }
    }

    pub fn mtu(mut self, mtu: u32) -> Net {
        self.mtu = mtu;
        self
    }

    pub fn subnet(mut self, id: &str, cidr: &str, gateway: &str) -> Net {
        self.subnets.push((id.into(), cidr.into(), gateway.into()));
        self
    }

    pub fn admin_down(mut self) -> Net {
        self.admin_up = false;
        self
    }
}

/// A VM as rows see it: its MAC, address and tap ("" for a port of
/// another host).
#[derive(Clone, Copy, Debug)]
pub struct Vm {
    pub mac: [u8; 6],
    pub ip: [u8; 4],
    pub tap: &'static str,
}

/// The MAC fa:16:3e:`tail` (Neutron's prefix).
pub const fn mac(tail: [u8; 3]) -> [u8; 6] {
    [0xfa, 0x16, 0x3e, tail[0], tail[1], tail[2]]
}

/// A VM with the MAC fa:16:3e:`mac_tail`.
pub const fn vm(mac_tail: [u8; 3], ip: [u8; 4], tap: &'static str) -> Vm {
    Vm {
        mac: mac(mac_tail),
        ip,
        tap,
    }
}

/// A router: interfaces on subnets (holding their gateway addresses) and
/// static routes.
#[derive(Clone, Debug)]
pub struct Router {
    id: String,
    /// (subnet id, interface MAC)
    interfaces: Vec<(String, String)>,
    /// (destination CIDR, next hop)
    routes: Vec<(String, String)>,
    external: Option<RouterExternal>,
}

impl Router {
    pub fn new(id: &str) -> Router {
        Router {
            id: id.into(),
            interfaces: Vec::new(),
            routes: Vec::new(),
            external: None,
        }
    }

    /// An external gateway on the external network with VNI `vni`
    /// (gateway port `ip`/`mac`), leaving through the gateway host at
    /// `gateway_underlay`.
    pub fn external(
        mut self,
        vni: u32,
        ip: [u8; 4],
        mac: [u8; 6],
        gateway_underlay: [u8; 4],
    ) -> Router {
        self.external = Some(RouterExternal {
            network_id: format!("ext{vni}"),
            vni,
            mtu: 1450,
            enable_snat: true,
            ip: Some(Ipv4Addr::from(ip).to_string()),
            mac: mac_str(&mac),
            gateways: vec![GatewayHost {
                name: "gw".into(),
                az: "az1".into(),
                underlay_ip: Ipv4Addr::from(gateway_underlay).to_string(),
            }],
            snat_gateway: Some(GatewayHost {
                name: "gw".into(),
                az: "az1".into(),
                underlay_ip: Ipv4Addr::from(gateway_underlay).to_string(),
            }),
        });
        self
    }

    /// The external gateway without SNAT (`enable_snat: false`).
    pub fn no_snat(mut self) -> Router {
        if let Some(x) = self.external.as_mut() {
            x.enable_snat = false;
            x.snat_gateway = None;
        }
        self
    }

    /// Router `id` with an interface on each of `interfaces` (subnet, MAC).
    pub fn on(id: &str, interfaces: &[(&str, [u8; 6])]) -> Router {
        interfaces.iter().fold(Router::new(id), |r, (subnet, mac)| {
            r.interface(subnet, *mac)
        })
    }

    /// An interface on `subnet` with `mac`, holding the subnet's gateway address.
    pub fn interface(mut self, subnet: &str, mac: [u8; 6]) -> Router {
        self.interfaces.push((subnet.into(), mac_str(&mac)));
        self
    }

    pub fn route(mut self, destination: &str, nexthop: &str) -> Router {
        self.routes.push((destination.into(), nexthop.into()));
        self
    }
}

#[derive(Clone, Debug)]
enum Place {
    Tap(String),
    Remote(String),
}

/// A port: local (on a tap of this host) or remote (on the host with an
/// underlay address).
#[derive(Clone, Debug)]
pub struct Port {
    id: String,
    network: String,
    mac: [u8; 6],
    ips: Vec<String>,
    pairs: Vec<(String, [u8; 6])>,
    security: bool,
    admin_up: bool,
    place: Place,
    groups: Vec<String>,
}

impl Port {
    /// A port of this host on `tap`, port security on, administratively up.
    pub fn local(id: &str, network: &str, tap: &str, mac: [u8; 6], ip: [u8; 4]) -> Port {
        Port {
            id: id.into(),
            network: network.into(),
            mac,
            ips: vec![Ipv4Addr::from(ip).to_string()],
            pairs: Vec::new(),
            security: true,
            admin_up: true,
            place: Place::Tap(tap.into()),
            groups: vec![OPEN_GROUP.to_owned()],
        }
    }

    /// Security groups filtering the port (the world's `group`s).
    pub fn groups(mut self, groups: &[&str]) -> Port {
        self.groups = groups.iter().map(|g| g.to_string()).collect();
        self.groups.sort();
        self
    }

    /// A port on the host whose underlay address is `underlay`.
    pub fn remote(id: &str, network: &str, underlay: [u8; 4], mac: [u8; 6], ip: [u8; 4]) -> Port {
        Port {
            place: Place::Remote(Ipv4Addr::from(underlay).to_string()),
            ..Port::local(id, network, "", mac, ip)
        }
    }

    /// A further fixed address.
    pub fn ip(mut self, ip: [u8; 4]) -> Port {
        self.ips.push(Ipv4Addr::from(ip).to_string());
        self
    }

    /// An allowed address pair (`10.0.0.0/28` or `10.0.0.9`); `mac` `None`
    /// means the port's own (what the API fills in).
    pub fn pair(mut self, ip: &str, mac: Option<[u8; 6]>) -> Port {
        let m = mac.unwrap_or(self.mac);
        self.pairs.push((ip.into(), m));
        self
    }

    pub fn no_security(mut self) -> Port {
        self.security = false;
        self
    }

    pub fn admin_down(mut self) -> Port {
        self.admin_up = false;
        self
    }
}

/// A host's view of a cloud, described briefly and compiled into the
/// entries the controller's compiler would send the host.
/// The group ports have unless a row gives them others: stateless, every
/// IPv4 packet allowed both ways (the VPC rows test forwarding, not policy).
pub const OPEN_GROUP: &str = "open";

pub fn open_group() -> SecurityGroupEntry {
    let rule = |id: &str, dir: &str| SgRuleEntry::ipv4(id, dir, None, (None, None), None, None);
    SecurityGroupEntry {
        id: OPEN_GROUP.into(),
        stateful: false,
        rules: vec![rule("open-in", "ingress"), rule("open-out", "egress")],
    }
}

#[derive(Clone, Debug, Default)]
pub struct World {
    nets: Vec<Net>,
    routers: Vec<Router>,
    ports: Vec<Port>,
    groups: Vec<SecurityGroupEntry>,
    fips: Vec<FloatingIpEntry>,
    extra: Vec<Entry>,
}

fn in_cidr(ip: &str, cidr: &str) -> bool {
    let (Some((net, len)), Ok(ip)) = (cidr.split_once('/'), ip.parse::<Ipv4Addr>()) else {
        return false;
    };
    let (Ok(net), Ok(len)) = (net.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
        return false;
    };
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(ip) & mask == u32::from(net) & mask
}

impl World {
    pub fn new() -> World {
        World::default()
    }

    pub fn net(mut self, n: Net) -> World {
        self.nets.push(n);
        self
    }

    /// A security group (rules as the compiler sends them). Members of
    /// groups named as remote groups are the world's ports listing them.
    pub fn group(mut self, g: SecurityGroupEntry) -> World {
        self.groups.push(g);
        self
    }

    pub fn router(mut self, r: Router) -> World {
        self.routers.push(r);
        self
    }

    pub fn port(mut self, p: Port) -> World {
        self.ports.push(p);
        self
    }

    /// Any further compiled entry, as the controller would send it.
    pub fn entry(mut self, e: Entry) -> World {
        self.extra.push(e);
        self
    }

    /// An elastic IP `eip` (external network VNI `vni`) bound to `fixed` of
    /// the world's port `port`, whose host has underlay `underlay`. `steer`:
    /// as compiled for a gateway host.
    pub fn floating_ip(
        mut self,
        eip: [u8; 4],
        vni: u32,
        port: &str,
        fixed: [u8; 4],
        underlay: [u8; 4],
        steer: bool,
    ) -> World {
        self.fips.push(FloatingIpEntry {
            id: format!("fip-{}", Ipv4Addr::from(eip)),
            floating_ip_address: Ipv4Addr::from(eip).to_string(),
            fixed_ip_address: Ipv4Addr::from(fixed).to_string(),
            port_id: port.into(),
            network_id: format!("ext{vni}"),
            vni,
            host: "h".into(),
            underlay_ip: Ipv4Addr::from(underlay).to_string(),
            steer,
            qos_policy_id: None,
            limits: vec![],
        });
        self
    }

    fn net_of(&self, id: &str) -> &Net {
        self.nets
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("world: no network {id}"))
    }

    /// The compiled entries, keyed as the agent keys them.
    pub fn entries(&self) -> BTreeMap<String, Entry> {
        let mut gw_mac: BTreeMap<&str, &str> = BTreeMap::new();
        let mut router_of: BTreeMap<&str, &str> = BTreeMap::new();
        let mut out = Vec::new();
        for r in &self.routers {
            let mut interfaces = Vec::new();
            for (sid, mac) in &r.interfaces {
                let (n, (_, cidr, gw)) = self
                    .nets
                    .iter()
                    .find_map(|n| n.subnets.iter().find(|s| &s.0 == sid).map(|s| (n, s)))
                    .unwrap_or_else(|| panic!("world: router {} on unknown subnet {sid}", r.id));
                gw_mac.insert(sid, mac);
                router_of.insert(&n.id, &r.id);
                interfaces.push(RouterInterface {
                    port_id: format!("{}-{sid}", r.id),
                    subnet_id: sid.clone(),
                    network_id: n.id.clone(),
                    vni: n.vni,
                    cidr: cidr.clone(),
                    ip: gw.clone(),
                    mac: mac.clone(),
                });
            }
            out.push(Entry::Router(RouterEntry {
                id: r.id.clone(),
                admin_state_up: true,
                interfaces,
                routes: r
                    .routes
                    .iter()
                    .map(|(d, n)| HostRoute {
                        destination: d.clone(),
                        nexthop: n.clone(),
                    })
                    .collect(),
                external: r.external.clone(),
            }));
        }
        for n in &self.nets {
            out.push(Entry::Network(NetworkEntry {
                id: n.id.clone(),
                vni: n.vni,
                mtu: n.mtu,
                admin_state_up: n.admin_up,
                router_id: router_of.get(n.id.as_str()).map(|r| r.to_string()),
                subnets: n
                    .subnets
                    .iter()
                    .map(|(id, cidr, gw)| SubnetEntry {
                        id: id.clone(),
                        cidr: cidr.clone(),
                        gateway_ip: Some(gw.clone()),
                        gateway_mac: gw_mac.get(id.as_str()).map(|m| m.to_string()),
                        enable_dhcp: true,
                        dns_nameservers: Vec::new(),
                        host_routes: Vec::new(),
                    })
                    .collect(),
            }));
        }
        for p in &self.ports {
            let n = self.net_of(&p.network);
            let pairs: Vec<AddressPair> = p
                .pairs
                .iter()
                .map(|(ip, mac)| AddressPair {
                    ip_address: ip.clone(),
                    mac_address: mac_str(mac),
                })
                .collect();
            out.push(match &p.place {
                Place::Tap(tap) => {
                    Entry::Port(PortEntry {
                        id: p.id.clone(),
                        tap: tap.clone(),
                        network_id: n.id.clone(),
                        vni: n.vni,
                        mtu: n.mtu,
                        mac: mac_str(&p.mac),
                        ips: p
                            .ips
                            .iter()
                            .map(|ip| {
                                let sid =
                                    n.subnets.iter().find(|s| in_cidr(ip, &s.1)).unwrap_or_else(
                                        || panic!("world: port {} address {ip} in no subnet", p.id),
                                    );
                                (sid.0.clone(), ip.clone())
                            })
                            .collect(),
                        port_security_enabled: p.security,
                        allowed_address_pairs: pairs,
                        admin_state_up: p.admin_up,
                        security_groups: if p.security {
                            p.groups.clone()
                        } else {
                            Vec::new()
                        },
                    })
                }
                Place::Remote(under) => Entry::Remote(RemoteEntry {
                    port_id: p.id.clone(),
                    network_id: n.id.clone(),
                    vni: n.vni,
                    mac: mac_str(&p.mac),
                    ips: p.ips.clone(),
                    allowed_address_pairs: pairs,
                    host: format!("host-{under}"),
                    underlay_ip: under.clone(),
                    admin_state_up: p.admin_up,
                }),
            });
        }
        for g in self.groups.iter().chain(std::iter::once(&open_group())) {
            out.push(Entry::SecurityGroup(g.clone()));
            for r in g.rules.iter().filter_map(|r| r.remote_group_id.as_ref()) {
                for p in self.ports.iter().filter(|p| p.groups.contains(r)) {
                    out.push(Entry::SgMember(SgMemberEntry {
                        group_id: r.clone(),
                        port_id: p.id.clone(),
                        ips: p.ips.clone(),
                    }));
                }
            }
        }
        out.extend(self.fips.iter().cloned().map(Entry::FloatingIp));
        out.extend(self.extra.iter().cloned());
        out.into_iter().map(|e| (e.key(), e)).collect()
    }
}

// ---------------------------------------------------------------------------
// Rows.

/// XDP verdicts (`enum xdp_action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Aborted = 0,
    Drop = 1,
    Pass = 2,
    Tx = 3,
    Redirect = 4,
}

impl Verdict {
    pub fn from_code(code: u32) -> Option<Verdict> {
        Some(match code {
            0 => Verdict::Aborted,
            1 => Verdict::Drop,
            2 => Verdict::Pass,
            3 => Verdict::Tx,
            4 => Verdict::Redirect,
            _ => return None,
        })
    }
}

/// How a frame was classified (which `IfStats` class counter moves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Ipv4,
    Ipv6,
    Arp,
    Other,
}

impl Class {
    /// The class of a well-formed frame by its (innermost VLAN) ethertype.
    pub fn of(frame: &[u8]) -> Option<Class> {
        let mut off = 12;
        loop {
            let t = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
            match t {
                0x8100 | 0x88a8 => off += 4,
                0x0800 => return Some(Class::Ipv4),
                0x86dd => return Some(Class::Ipv6),
                0x0806 => return Some(Class::Arp),
                _ => return Some(Class::Other),
            }
        }
    }
}

/// What a row expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Passed to the stack unchanged, counted in this class.
    Pass(Class),
    /// Dropped, unchanged, counted with this reason.
    Drop(DropReason),
    /// Redirected (to [`Fixture::egress`]), counted as forwarded.
    Forward,
    /// Answered: redirected back out of the ingress, counted as answered.
    Answer,
    /// An ICMP error sent back out of the ingress in place of the frame,
    /// which is counted as dropped with this reason.
    AnswerError(DropReason),
}

/// A property of an output frame that bytes alone do not pin down.
pub type Check = (&'static str, fn(&[u8]) -> Result<(), String>);

/// An expected output frame: exact bytes, except `any` ranges (values the
/// row does not fix, such as a hash), plus named checks.
#[derive(Clone, Debug)]
pub struct Expected {
    pub frame: Vec<u8>,
    pub any: Vec<Range<usize>>,
    pub checks: Vec<Check>,
}

impl From<Vec<u8>> for Expected {
    fn from(frame: Vec<u8>) -> Expected {
        Expected {
            frame,
            any: Vec::new(),
            checks: Vec::new(),
        }
    }
}

impl Expected {
    /// Bytes `r` may hold anything.
    pub fn any(mut self, r: Range<usize>) -> Expected {
        self.any.push(r);
        self
    }

    pub fn check(mut self, name: &'static str, f: fn(&[u8]) -> Result<(), String>) -> Expected {
        self.checks.push((name, f));
        self
    }

    /// Why `got` is not this frame, if it is not.
    pub fn mismatch(&self, got: &[u8]) -> Option<String> {
        let want = &self.frame;
        let free = |i: usize| self.any.iter().any(|r| r.contains(&i));
        let diff = (0..want.len().max(got.len())).find(|&i| !free(i) && want.get(i) != got.get(i));
        let mut why = Vec::new();
        if got.len() != want.len() {
            why.push(format!("length {} want {}", got.len(), want.len()));
        }
        if let Some(i) = diff {
            why.push(format!("first difference at byte {i}"));
        }
        if !why.is_empty() {
            return Some(format!(
                "{}:\n      got  {}\n      want {}",
                why.join(", "),
                hex(got),
                hex(want)
            ));
        }
        for (name, f) in &self.checks {
            if let Err(e) = f(got) {
                return Some(format!("{name}: {e}\n      got  {}", hex(got)));
            }
        }
        None
    }
}

/// One fixture row.
#[derive(Clone, Debug)]
pub struct Fixture {
    pub description: String,
    pub attach: Attach,
    /// ifindex the frame comes in on (in the tester's namespace); 0: no
    /// context (the loopback device, [`TEST_IFINDEX`]).
    pub ingress: u32,
    pub input: Vec<u8>,
    pub expect: Expect,
    /// Expected output frame; `None` means "the input, unchanged".
    pub output: Option<Expected>,
    /// Where a forwarded frame must come out (checked with a live run when
    /// the tester has a [`TestNet`]). Answers come out of the ingress.
    pub egress: Option<u32>,
}

impl Fixture {
    pub fn new(description: impl Into<String>, input: Vec<u8>, expect: Expect) -> Fixture {
        Fixture {
            description: description.into(),
            attach: Attach::Uplink,
            ingress: 0,
            input,
            expect,
            output: None,
            egress: None,
        }
    }

    pub fn on(mut self, attach: Attach) -> Fixture {
        self.attach = attach;
        self
    }

    /// Arrives on `ifindex`.
    pub fn at(mut self, ifindex: u32) -> Fixture {
        self.ingress = ifindex;
        self
    }

    pub fn output(mut self, e: impl Into<Expected>) -> Fixture {
        self.output = Some(e.into());
        self
    }

    /// Must leave through `ifindex`.
    pub fn to(mut self, ifindex: u32) -> Fixture {
        self.egress = Some(ifindex);
        self
    }

    /// The interface the frame must leave through, if it leaves.
    fn leaves_by(&self) -> Option<u32> {
        match self.expect {
            Expect::Forward => self.egress,
            Expect::Answer | Expect::AnswerError(_) => Some(self.ingress),
            Expect::Pass(_) | Expect::Drop(_) => None,
        }
    }
}

/// What one run produced.
#[derive(Debug)]
pub struct Outcome {
    pub verdict: Verdict,
    pub output: Vec<u8>,
    pub counters: Counters,
}

/// What moved between two readings of the counters (entries that did not
/// move are left out).
pub fn delta(before: &Counters, after: &Counters) -> Counters {
    let sub = |a: &IfStats, b: &IfStats| IfStats {
        rx_packets: a.rx_packets - b.rx_packets,
        rx_bytes: a.rx_bytes - b.rx_bytes,
        ipv4: a.ipv4 - b.ipv4,
        ipv6: a.ipv6 - b.ipv6,
        arp: a.arp - b.arp,
        other: a.other - b.other,
        passed: a.passed - b.passed,
        dropped: a.dropped - b.dropped,
        forwarded: a.forwarded - b.forwarded,
        answered: a.answered - b.answered,
    };
    let mut d = Counters::default();
    for (i, a) in &after.interfaces {
        let s = sub(a, &before.interfaces.get(i).copied().unwrap_or_default());
        if s != IfStats::default() {
            d.interfaces.insert(*i, s);
        }
    }
    for (k, a) in &after.drops {
        let b = before.drops.get(k).copied().unwrap_or_default();
        if a.packets != b.packets {
            d.drops.insert(
                *k,
                DropStats {
                    packets: a.packets - b.packets,
                    bytes: a.bytes - b.bytes,
                },
            );
        }
    }
    d
}

/// Loads the object once and runs rows against it.
pub struct ProgramTester {
    // Dropped before `net`: the program's links on the namespace's peers go
    // while the namespace (and this thread's place in it) still exists.
    dp: Dataplane,
    /// A tester of the production object in a [`TestNet`]: the benchmark
    /// object, every map at one entry, whose floor program sits on the
    /// veth peers (the production object has no floor).
    floor: Option<Dataplane>,
    slots: BTreeMap<u32, u32>,
    net: Option<TestNet>,
    policies: strato_agent::security_groups::Policies,
    /// The load balancer's numbering, as the agent keeps it.
    pub lb: strato_agent::lb::LbState,
    /// The entry point attached to each ingress interface that rows were
    /// delivered through (native XDP, unpinned: gone with `dp`).
    attached: BTreeMap<u32, (Attach, XdpLinkId)>,
}

/// `struct xdp_md` for BPF_PROG_TEST_RUN: data, data_end, data_meta,
/// ingress_ifindex, rx_queue_index, egress_ifindex.
fn xdp_md(ingress: u32, len: usize) -> [u8; 24] {
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ingress.to_ne_bytes());
    ctx
}

impl ProgramTester {
    /// Loads the real (production) object in the caller's namespace, with
    /// empty tables. Needs root (CAP_BPF + CAP_NET_ADMIN): the program-test
    /// tier is privileged and says so instead of skipping.
    pub fn new() -> ProgramTester {
        crate::require_root("program tests (BPF_PROG_TEST_RUN)");
        let dp =
            Dataplane::load(None).unwrap_or_else(|e| panic!("loading the dataplane object: {e:#}"));
        ProgramTester::with(dp)
    }

    /// [`ProgramTester::new`] with the benchmark object: the production
    /// programs and the benchmark ones (`Attach::Bench*`, `Attach::Floor`,
    /// `Attach::Bare`) over one set of tables.
    pub fn bench() -> ProgramTester {
        crate::require_root("program benchmarks (BPF_PROG_TEST_RUN)");
        let dp = Dataplane::load_bench(None)
            .unwrap_or_else(|e| panic!("loading the benchmark object: {e:#}"));
        ProgramTester::with(dp)
    }

    fn with(dp: Dataplane) -> ProgramTester {
        ProgramTester {
            dp,
            floor: None,
            slots: BTreeMap::new(),
            net: None,
            lb: strato_agent::lb::LbState::default(),
            attached: BTreeMap::new(),
            policies: {
                let mut p = strato_agent::security_groups::Policies::default();
                p.start_after(0, 0);
                p
            },
        }
    }

    /// Instructions the verifier processed for an entry point.
    pub fn verified_instructions(&mut self, which: Attach) -> u32 {
        self.dp
            .verified_instructions(which)
            .unwrap_or_else(|e| panic!("loading {}: {e:#}", which.program()))
    }

    /// A tester in a fresh [`TestNet`] (entered on this thread), with the
    /// host record written (underlay [`UNDERLAY_IP`] on [`UPLINK`]) and the
    /// do-nothing program on every veth peer, so that frames redirected to
    /// an inside interface are received (a veth delivers redirected frames
    /// only to a peer running XDP) and captured.
    pub fn in_test_net() -> ProgramTester {
        let net = TestNet::new();
        let mut t = ProgramTester::new();
        t.floor = Some(
            Dataplane::load_floor().unwrap_or_else(|e| panic!("loading the floor program: {e:#}")),
        );
        t.in_net(net)
    }

    /// [`ProgramTester::in_test_net`] with the benchmark object
    /// ([`ProgramTester::bench`]).
    pub fn bench_in_test_net() -> ProgramTester {
        let net = TestNet::new();
        ProgramTester::bench().in_net(net)
    }

    fn in_net(self, net: TestNet) -> ProgramTester {
        let mut t = self;
        for p in net.peers() {
            t.floor()
                .attach(Attach::Floor, &p)
                .unwrap_or_else(|e| panic!("attaching the floor program to {p}: {e:#}"));
        }
        t.net = Some(net);
        let host = t.default_host();
        t.set_host(host);
        t
    }

    /// The instance whose floor program (`Attach::Floor`) this tester
    /// runs: the benchmark object's (the tester's own, or the one on the
    /// veth peers of a production tester's test network).
    pub fn floor(&mut self) -> &mut Dataplane {
        self.floor.as_mut().unwrap_or(&mut self.dp)
    }

    /// Every connection tracking entry.
    pub fn ct_entries(&self) -> Vec<(dataplane_common::CtKey, dataplane_common::CtEntry)> {
        self.dp.ct_entries().expect("read the connection table")
    }

    /// Connection tracking counters.
    pub fn ct_stats(&self) -> dataplane_common::CtStats {
        self.dp.ct_stats().expect("read the connection counters")
    }

    /// Empties the connection table.
    pub fn ct_clear(&mut self) {
        self.dp
            .ct_gc(0, &|_| true)
            .expect("empty the connection table");
    }

    /// Benchmarks: the frame the harness programs put back before each run.
    pub fn bench_frame(&mut self, frame: &[u8]) {
        self.dp
            .bench_frame(frame)
            .expect("write the benchmark frame");
    }

    /// Frames the programs counted, over every interface: (forwarded or
    /// answered, dropped).
    pub fn outcomes(&self) -> (u64, u64) {
        let c = self.dp.counters().expect("read counters");
        c.interfaces.values().fold((0, 0), |(ok, dropped), s| {
            (ok + s.forwarded + s.answered, dropped + s.dropped)
        })
    }

    /// Fills the connection table with `n` synthetic entries.
    pub fn ct_fill(&mut self, zone: u32, n: u32) {
        self.dp.ct_fill(zone, n).expect("fill the connection table");
    }

    /// Kernel memory of a map, in bytes.
    /// The dataplane under test (for what no helper here covers).
    pub fn dataplane(&mut self) -> &mut Dataplane {
        &mut self.dp
    }

    pub fn map_memlock(&self, name: &'static str) -> Option<u64> {
        self.dp.map_memlock(name)
    }

    /// The test network. Panics for a tester made with [`ProgramTester::new`].
    pub fn net(&self) -> &TestNet {
        self.net
            .as_ref()
            .expect("this tester has no TestNet (use ProgramTester::in_test_net)")
    }

    /// ifindex of an interface of the test network.
    pub fn ifindex(&self, name: &str) -> u32 {
        self.net().ifindex(name)
    }

    pub fn slot_for(&mut self, ifindex: u32) -> u32 {
        let next = self.slots.len() as u32 + 1;
        *self.slots.entry(ifindex).or_insert(next)
    }

    /// The host record of the test network: underlay 198.18.1.1 on `up0`.
    pub fn default_host(&mut self) -> HostInfo {
        let up = self.ifindex(UPLINK);
        HostInfo {
            underlay_ip: UNDERLAY_IP,
            uplink_ifindex: up,
            uplink_slot: self.slot_for(up),
            ..HostInfo::default()
        }
    }

    pub fn set_host(&mut self, h: HostInfo) {
        self.dp.set_host(h).expect("write HOST");
    }

    /// Writes the world's tables with the agent's code path: compiled
    /// entries -> `tables::build` (taps resolved in the test network, a
    /// counter slot each) -> diff against the maps -> `Dataplane::apply`.
    /// Returns what the maps now hold.
    pub fn install(&mut self, world: &World) -> Tables {
        let taps: BTreeMap<String, u32> = TAPS
            .iter()
            .map(|t| (t.to_string(), self.ifindex(t)))
            .collect();
        for i in taps.values() {
            self.slot_for(*i);
        }
        let slots = self.slots.clone();
        let entries = world.entries();
        let want = write_as_the_agent(
            &mut self.dp,
            &entries,
            &mut self.policies,
            &mut self.lb,
            &taps,
            &slots,
        )
        .expect("write the world's tables");
        for ops in std::mem::take(&mut self.policies.retired) {
            self.dp.policy_apply(&ops).expect("remove an unused policy");
        }
        assert_eq!(
            self.dp.tables().expect("read the tables"),
            want,
            "the maps hold what was written"
        );
        want
    }

    /// Runs one frame through an entry point with fresh counters, arriving
    /// on `ingress` (0: no context).
    pub fn run(&mut self, attach: Attach, ingress: u32, input: &[u8]) -> Outcome {
        self.try_run(attach, ingress, input).unwrap_or_else(|e| {
            panic!(
                "BPF_PROG_TEST_RUN on {} byte frame at ifindex {ingress}: {e}",
                input.len()
            )
        })
    }

    /// As [`run`](Self::run), but returns the kernel's refusal instead of panicking.
    pub fn try_run(
        &mut self,
        attach: Attach,
        ingress: u32,
        input: &[u8],
    ) -> Result<Outcome, ProgramError> {
        // Counters are read before and after, and the row sees the
        // difference: cheaper than clearing every slot of IF_STATS per run.
        let before = self.dp.counters().expect("read counters");
        // Room for programs that grow the frame (encapsulation, ICMP errors).
        let mut out = vec![0u8; input.len() + 256];
        let ctx = xdp_md(ingress, input.len());
        let result = {
            // The floor is the benchmark object's (see `floor`).
            let prog = if attach == Attach::Floor {
                self.floor().program(attach)
            } else {
                self.dp.program(attach)
            };
            let opts = TestRunOptions {
                data_in: Some(input),
                data_out: Some(&mut out),
                ctx_in: (ingress != 0).then_some(&ctx[..]),
                repeat: 1,
                ..Default::default()
            };
            prog.test_run(opts)?
        };
        out.truncate(result.data_size_out as usize);
        let verdict = Verdict::from_code(result.return_value).unwrap_or_else(|| {
            panic!(
                "program returned {} which is not an XDP action",
                result.return_value
            )
        });
        let counters = delta(&before, &self.dp.counters().expect("read counters"));
        Ok(Outcome {
            verdict,
            output: out,
            counters,
        })
    }

    /// Sends the frame into `ingress` for real and returns what came out of
    /// inside interfaces of the test network: (inside ifindex, frame).
    ///
    /// The entry point `attach` is attached (native XDP) to the ingress
    /// interface (replacing another entry point a previous row left there),
    /// and the frame is written by a packet socket on its veth peer, so the
    /// program runs in the kernel's receive path with the interface's real
    /// ifindex and its redirect, XDP_TX or pass really happens.
    pub fn deliver(&mut self, attach: Attach, ingress: u32, input: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let net = self
            .net
            .as_ref()
            .expect("deliveries need a TestNet (ProgramTester::in_test_net)");
        assert!(
            ingress != 0,
            "a delivered frame must arrive on an interface of the test net (Fixture::at)"
        );
        let iface = net.name_of(ingress);
        match self.attached.get(&ingress) {
            Some((a, _)) if *a == attach => {}
            _ => {
                if let Some((old, link)) = self.attached.remove(&ingress) {
                    self.dp.detach_link(old, link).unwrap_or_else(|e| {
                        panic!("detaching {} from {iface}: {e:#}", old.program())
                    });
                }
                let link = self.dp.attach_link(attach, &iface).unwrap_or_else(|e| {
                    panic!(
                        "attaching {} to {iface} (native XDP) to deliver a row: {e:#}",
                        attach.program()
                    )
                });
                self.attached.insert(ingress, (attach, link));
            }
        }
        let net = self.net.as_ref().expect("checked above");
        let stale = net.drain();
        assert!(
            stale.is_empty(),
            "frames came out of [{}] after the previous delivery was collected",
            stale
                .iter()
                .map(|(i, fr)| format!(
                    "{} ({} bytes: {})",
                    net.name_of(*i),
                    fr.len(),
                    hex(&fr[..fr.len().min(48)])
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        net.send_into(ingress, input)
            .unwrap_or_else(|e| panic!("sending {} bytes into {iface}: {e}", input.len()));
        net.collect(Duration::from_secs(1), Duration::from_millis(30))
    }

    /// The interface whose counters a run on `ingress` moves: a port's own,
    /// the uplink's (the uplink program always counts on the host's slot),
    /// or 0 (slot 0: frames on interfaces without one).
    pub fn counted_on(&mut self, attach: Attach, ingress: u32) -> u32 {
        let i = if ingress == 0 { TEST_IFINDEX } else { ingress };
        match attach {
            Attach::Port if self.dp.ports().expect("read PORTS").contains_key(&i) => i,
            Attach::Uplink => self.dp.host().map(|h| h.uplink_ifindex).unwrap_or(0),
            Attach::External => self.dp.host().map(|h| h.ext_ifindex).unwrap_or(0),
            // The reference programs count nothing.
            _ => 0,
        }
    }

    /// Runs every row of a table ([`ProgramTester::check`] each, in order).
    pub fn check_rows(&mut self, rows: Vec<Fixture>) {
        eprintln!("{} rows", rows.len());
        for f in rows {
            self.check(&f);
        }
    }

    /// A row on the port program, arriving on the tap `from`.
    pub fn port_row(
        &self,
        description: &str,
        from: &str,
        input: Vec<u8>,
        expect: Expect,
    ) -> Fixture {
        Fixture::new(description, input, expect)
            .on(Attach::Port)
            .at(self.ifindex(from))
    }

    /// A row on the uplink program, arriving on the uplink ([`UPLINK`]).
    pub fn uplink_row(&self, description: &str, input: Vec<u8>, expect: Expect) -> Fixture {
        Fixture::new(description, input, expect)
            .on(Attach::Uplink)
            .at(self.ifindex(UPLINK))
    }

    /// Runs a row and panics with the row's description and every mismatch.
    ///
    /// Frames shorter than an Ethernet header cannot reach an XDP program:
    /// the kernel refuses them (BPF_PROG_TEST_RUN answers EINVAL, and packet
    /// injection checks the link-layer header length). For such rows the
    /// test asserts that refusal, and the row must expect TruncatedEthernet
    /// (the program still checks it, as defence in depth).
    pub fn check(&mut self, f: &Fixture) {
        if f.input.len() < MIN_FRAME {
            assert_eq!(
                f.expect,
                Expect::Drop(DropReason::TruncatedEthernet),
                "fixture '{}'",
                f.description
            );
            assert!(
                self.try_run(f.attach, f.ingress, &f.input).is_err(),
                "fixture '{}': kernel ran a {}-byte frame",
                f.description,
                f.input.len()
            );
            return;
        }
        let counted_on = self.counted_on(f.attach, f.ingress);
        let drop_if = if f.ingress == 0 {
            TEST_IFINDEX
        } else {
            f.ingress
        };
        let expected = f
            .output
            .clone()
            .unwrap_or_else(|| Expected::from(f.input.clone()));
        let mut problems = Vec::new();
        // A row whose frame must leave (forwarded or answered) runs once, for
        // real: only a delivery shows where a redirect goes, and a second run
        // would touch the connection table, SNAT ports, balancer flows and
        // buckets twice. Every other row runs through BPF_PROG_TEST_RUN.
        let delivered = match (f.leaves_by(), self.net.is_some()) {
            (Some(egress), true) => Some(egress),
            _ => None,
        };
        let o = match delivered {
            Some(egress) => self.deliver_row(f, egress, &expected, &mut problems),
            None => self.run(f.attach, f.ingress, &f.input),
        };
        let len = f.input.len() as u64;
        let moved: Vec<u32> = o
            .counters
            .interfaces
            .iter()
            .filter(|(_, s)| **s != IfStats::default())
            .map(|(i, _)| *i)
            .collect();
        if moved != [counted_on] {
            problems.push(format!(
                "counters moved on interfaces {moved:?}, want only {counted_on}"
            ));
        }
        let stats = o
            .counters
            .interfaces
            .get(&counted_on)
            .copied()
            .unwrap_or_default();
        let mut want = IfStats {
            rx_packets: 1,
            rx_bytes: len,
            ..Default::default()
        };
        let set_class = |want: &mut IfStats, c: Option<Class>| match c {
            Some(Class::Ipv4) => want.ipv4 = 1,
            Some(Class::Ipv6) => want.ipv6 = 1,
            Some(Class::Arp) => want.arp = 1,
            Some(Class::Other) => want.other = 1,
            None => {}
        };
        let (verdict, reason) = match &f.expect {
            Expect::Pass(c) => {
                want.passed = 1;
                set_class(&mut want, Some(*c));
                (Verdict::Pass, None)
            }
            Expect::Drop(r) => {
                want.dropped = 1;
                // Where the drop happened decides whether the frame was
                // classified; at most one class counter may move.
                if stats.ipv4 + stats.ipv6 + stats.arp + stats.other <= 1 {
                    (want.ipv4, want.ipv6, want.arp, want.other) =
                        (stats.ipv4, stats.ipv6, stats.arp, stats.other);
                }
                (Verdict::Drop, Some(*r))
            }
            Expect::Forward => {
                want.forwarded = 1;
                set_class(&mut want, Class::of(&f.input));
                (Verdict::Redirect, None)
            }
            Expect::Answer => {
                want.answered = 1;
                set_class(&mut want, Class::of(&f.input));
                (Verdict::Redirect, None)
            }
            Expect::AnswerError(r) => {
                want.dropped = 1;
                set_class(&mut want, Class::of(&f.input));
                (Verdict::Redirect, Some(*r))
            }
        };
        if o.verdict != verdict {
            problems.push(format!(
                "verdict {:?}, want {verdict:?} ({:?})",
                o.verdict, f.expect
            ));
        }
        if stats != want {
            problems.push(format!(
                "interface counters\n      got  {stats:?}\n      want {want:?}"
            ));
        }
        let got_drops: Vec<_> = o.counters.drops.iter().map(|(k, v)| (*k, *v)).collect();
        let want_drops: Vec<_> = reason
            .map(|r| {
                (
                    (drop_if, r),
                    DropStats {
                        packets: 1,
                        bytes: len,
                    },
                )
            })
            .into_iter()
            .collect();
        if got_drops != want_drops {
            let show = |v: &[((u32, DropReason), DropStats)]| {
                v.iter()
                    .map(|((i, r), s)| format!("{i}/{}={}", r.label(), s.packets))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            problems.push(format!(
                "drop counters [{}], want [{}]",
                show(&got_drops),
                show(&want_drops)
            ));
        }
        if delivered.is_none() {
            if let Some(why) = expected.mismatch(&o.output) {
                problems.push(format!("output {why}"));
            }
            // Where did it go? Only a real delivery shows the redirect's
            // target, so every row that expects one names where it must
            // come out, in a test network.
            if o.verdict == Verdict::Redirect && verdict == Verdict::Redirect {
                problems.push(if self.net.is_none() {
                    "a redirect row needs a TestNet (ProgramTester::in_test_net) to prove where the frame goes".into()
                } else {
                    "a forwarding row must name its egress (Fixture::to)".into()
                });
            }
        }
        if !problems.is_empty() {
            panic!(
                "fixture '{}' ({} bytes at {}: {}):\n  - {}",
                f.description,
                f.input.len(),
                self.net
                    .as_ref()
                    .map(|n| n.name_of(drop_if))
                    .unwrap_or_else(|| drop_if.to_string()),
                hex(&f.input[..f.input.len().min(64)]),
                problems.join("\n  - ")
            );
        }
    }

    /// Delivers a row's frame for real ([`deliver`](Self::deliver)) and
    /// returns what the checks need: the frame that came out of `egress`
    /// (problems pushed when it is not exactly one frame, out of `egress`,
    /// with the expected bytes), the counters it moved, and the verdict the
    /// kernel's receive path shows: a frame out means a redirect; nothing
    /// out, the drop or pass the program counted (a run that counted
    /// neither is reported as aborted).
    fn deliver_row(
        &mut self,
        f: &Fixture,
        egress: u32,
        expected: &Expected,
        problems: &mut Vec<String>,
    ) -> Outcome {
        let before = self.dp.counters().expect("read counters");
        let out = self.deliver(f.attach, f.ingress, &f.input);
        let counters = delta(&before, &self.dp.counters().expect("read counters"));
        let net = self.net();
        let name = net.name_of(egress);
        let output = match out.as_slice() {
            [(i, frame)] if *i == egress => {
                if let Some(why) = expected.mismatch(frame) {
                    problems.push(format!("frame out of {name} {why}"));
                }
                frame.clone()
            }
            [] => {
                problems.push(format!("delivered: nothing came out (want {name})"));
                Vec::new()
            }
            many => {
                problems.push(format!(
                    "delivered: frames came out of [{}], want one out of {name}",
                    many.iter()
                        .map(|(i, fr)| format!("{} ({} bytes)", net.name_of(*i), fr.len()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                Vec::new()
            }
        };
        let total = counters
            .interfaces
            .values()
            .fold(IfStats::default(), |mut t, s| {
                t.dropped += s.dropped;
                t.passed += s.passed;
                t
            });
        let verdict = if !out.is_empty() {
            Verdict::Redirect
        } else if total.dropped > 0 {
            Verdict::Drop
        } else if total.passed > 0 {
            Verdict::Pass
        } else {
            Verdict::Aborted
        };
        Outcome {
            verdict,
            output,
            counters,
        }
    }

    /// Runs one frame through the TC build of the port pipeline arriving on
    /// `ingress`: (TC verdict, output frame).
    pub fn run_tc(&mut self, ingress: u32, input: &[u8]) -> (i32, Vec<u8>) {
        self.dp
            .test_run_tc(ingress, input)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN (TC) on {} bytes: {e:#}", input.len()))
    }

    /// Mean time per packet over `repeat` runs inside the kernel (the
    /// benchmark primitive: BPF_PROG_TEST_RUN's own duration), without a
    /// context (the loopback device is the ingress).
    pub fn time(&mut self, attach: Attach, input: &[u8], repeat: u32) -> Duration {
        self.time_on(attach, 0, input, repeat)
    }

    /// As [`time`](Self::time), arriving on `ingress` (0: no context).
    pub fn time_on(&mut self, attach: Attach, ingress: u32, input: &[u8], repeat: u32) -> Duration {
        let mut out = vec![0u8; input.len() + 256];
        let ctx = xdp_md(ingress, input.len());
        let prog = self.dp.program(attach);
        let opts = TestRunOptions {
            data_in: Some(input),
            data_out: Some(&mut out),
            ctx_in: (ingress != 0).then_some(&ctx[..]),
            repeat,
            ..Default::default()
        };
        prog.test_run(opts).expect("BPF_PROG_TEST_RUN").duration
    }
}

impl Default for ProgramTester {
    fn default() -> Self {
        ProgramTester::new()
    }
}

/// Writes `entries` into `dp` with the agent's code: policies planned and
/// written (`policies`, the ports pointed at them), `tables::build` (taps
/// resolved by `taps`, counter slots from `slots`), the load balancers'
/// tables (`lb`) before their VIPs appear, then the diff against the maps
/// (`Dataplane::apply`). Returns what it wrote.
pub fn write_as_the_agent(
    dp: &mut Dataplane,
    entries: &BTreeMap<String, Entry>,
    policies: &mut strato_agent::security_groups::Policies,
    lb: &mut strato_agent::lb::LbState,
    taps: &BTreeMap<String, u32>,
    slots: &BTreeMap<u32, u32>,
) -> anyhow::Result<Tables> {
    for ops in &policies.plan(entries, true).ops {
        dp.policy_apply(ops)?;
    }
    let pols = policies.port_policies(entries);
    let want = tables::build(
        entries,
        &|tap| taps.get(tap).copied(),
        &mut |i| slots.get(&i).copied().unwrap_or(0),
        &|id| pols.get(id).copied().unwrap_or_default(),
    );
    let lbs = entries.values().filter_map(|e| match e {
        Entry::LoadBalancer(l) => Some(l),
        _ => None,
    });
    let specs = strato_agent::lb::specs(lbs, &tables::domains(entries), &want.endpoints);
    dp.lb_apply(&lb.sync(&specs, strato_dataplane::coarse_now_ns()))?;
    let have = dp.tables()?;
    dp.apply(&want.diff(&have))?;
    Ok(want)
}

/// `inner` in VXLAN `vni` to the host at `underlay`, as this host sends it:
/// outer MACs from the uplink to its permanent neighbour, IPv4
/// [`UNDERLAY_IP`] -> `underlay` (TTL 64, DF set, id 0), UDP -> 4789
/// without checksum, VXLAN with the I flag. The outer UDP source port
/// (bytes 34..36) is a flow hash: any value.
pub fn encapsulated_frame(inner: &[u8], vni: u32, underlay: [u8; 4]) -> Expected {
    let udp_len = 8 + 8 + inner.len();
    let mut ip = etherparse::Ipv4Header::new(
        udp_len as u16,
        64,
        etherparse::IpNumber::UDP,
        UNDERLAY_IP,
        underlay,
    )
    .expect("small");
    // DF: the underlay must not fragment tunnelled frames.
    ip.dont_fragment = true;
    ip.header_checksum = ip.calc_header_checksum();
    let mut out = UNDERLAY_NEXTHOP_MAC.to_vec();
    out.extend_from_slice(&UPLINK_MAC);
    out.extend_from_slice(&[0x08, 0x00]);
    out.extend_from_slice(&ip.to_bytes());
    out.extend_from_slice(&[0, 0]); // source port: see `any` below
    out.extend_from_slice(&4789u16.to_be_bytes());
    out.extend_from_slice(&(udp_len as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&crate::packets::vxlan_header(0x08, vni));
    out.extend_from_slice(inner);
    Expected::from(out).any(34..36)
}

pub fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join("")
}
