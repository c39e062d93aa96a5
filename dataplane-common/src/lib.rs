//! Shared dataplane definitions: the one place where every eBPF map key and
//! value, every map name and every drop reason is defined.
//!
//! This crate is compiled twice: `#![no_std]` into the kernel programs
//! (`dataplane-ebpf`), and with the `user` feature into the user-space crates
//! (agent, stratoctl, program tests), where the types implement `aya::Pod`.
//! Everything here is `#[repr(C)]` plain old data with fixed-width fields and
//! explicit padding; sizes are asserted at compile time so the two sides can
//! never disagree. This crate must never contain logic that differs between
//! the two sides, and never depend on anything but `core` in the kernel build.
#![no_std]
#![deny(unsafe_code)]

/// Map names, as they appear in the object file and under the pin directory
/// `/sys/fs/bpf/strato/<host>/`.
pub mod maps {
    /// Per-CPU array: counter slot -> [`super::IfStats`]. Slot 0 counts
    /// interfaces without a slot; the agent gives every port and uplink one
    /// (in [`super::PortInfo::slot`] / [`super::HostInfo::uplink_slot`]).
    pub const IF_STATS: &str = "IF_STATS";
    /// Per-CPU hash: [`super::DropKey`] -> [`super::DropStats`].
    pub const DROP_STATS: &str = "DROP_STATS";
    /// Hash: ifindex of a VM port's tap -> [`super::PortInfo`]: the ports
    /// table user space reads and writes.
    pub const PORTS: &str = "PORTS";
    /// Array, ifindex -> [`super::PortInfo`]: a dense copy of `PORTS` for
    /// ifindexes below [`PORT_INDEX_MAX`] (entries without
    /// [`super::PORT_F_PRESENT`] are empty). The packet path reads it first:
    /// an array lookup is a few instructions, a hash lookup a helper call.
    pub const PORT_INDEX: &str = "PORT_INDEX";
    /// Size of [`PORT_INDEX`].
    pub const PORT_INDEX_MAX: u32 = 65_536;
    /// Hash: [`super::EpKey`] (routing domain, IPv4) -> [`super::Endpoint`]:
    /// every port and router interface address of the host's VPCs.
    pub const ENDPOINTS: &str = "ENDPOINTS";
    /// LPM trie: [`super::RouteKey`] -> [`super::Route`]: the subnets and
    /// static routes of each routing domain.
    pub const ROUTES: &str = "ROUTES";
    /// Hash: VNI -> [`super::VniInfo`], for decapsulation.
    pub const VNIS: &str = "VNIS";
    /// Hash: [`super::MacKey`] (VNI, MAC) -> ifindex of the local port's tap,
    /// where decapsulated frames go.
    pub const MACS: &str = "MACS";
    /// LPM trie: [`super::AllowedKey`] (port, source prefix) -> [`super::AllowedMac`]:
    /// the addresses a port may send from besides its primary one.
    pub const ALLOWED: &str = "ALLOWED";
    /// Array of one [`super::HostInfo`]: the host's underlay.
    pub const HOST: &str = "HOST";
    /// Array of one [`super::BenchFrame`]: the frame the benchmark harness
    /// programs put back before each run.
    pub const BENCH_FRAME: &str = "BENCH_FRAME";
    /// Hash: ifindex -> [`super::BareTarget`], for the benchmark ceiling
    /// programs only (never written by an agent).
    pub const BARE: &str = "BARE";
    /// Capacity of [`PORTS`]: VM ports on one host.
    pub const PORTS_MAX: u32 = 4096;
    /// Capacity of [`IF_STATS`]: counter slots (ports and uplinks) per host.
    pub const IF_STATS_MAX: u32 = 8192;
    /// Capacity of [`DROP_STATS`]: (interface, reason) pairs one host can count.
    pub const DROP_STATS_MAX: u32 = 16384;
    /// Capacity of [`ENDPOINTS`]: addresses in the VPCs a host serves.
    pub const ENDPOINTS_MAX: u32 = 262_144;
    /// Capacity of [`ROUTES`].
    pub const ROUTES_MAX: u32 = 65_536;
    /// Capacity of [`MACS`].
    pub const MACS_MAX: u32 = 16_384;
    /// Capacity of [`VNIS`].
    pub const VNIS_MAX: u32 = 16_384;
    /// Capacity of [`ALLOWED`].
    pub const ALLOWED_MAX: u32 = 65_536;
    /// LRU hash: [`super::CtKey`] -> [`super::CtEntry`]: the connection
    /// tracking table (one per host). Its size is set by the agent at load
    /// time; the object's default is [`CT_MAX_DEFAULT`].
    pub const CT: &str = "CT";
    /// Flows one host tracks by default.
    pub const CT_MAX_DEFAULT: u32 = 1_000_000;
    /// Per-CPU array of one [`super::CtStats`].
    pub const CT_STATS: &str = "CT_STATS";
    /// LPM trie: [`super::PolicyAddrKey`] (policy, direction, remote
    /// address) -> [`super::PolicyClass`]: stage one of a policy lookup.
    pub const POLICY_ADDR: &str = "POLICY_ADDR";
    /// LPM trie: [`super::PolicyPortKey`] (class, protocol, port) ->
    /// [`super::PolicyAllow`]: stage two; a hit allows.
    pub const POLICY_PORT: &str = "POLICY_PORT";
    /// Hash: [`super::PolicyAddrKey`] -> [`super::PolicyClass`] for host
    /// addresses (/32 remote prefixes, every remote-group member), looked up
    /// before `POLICY_ADDR`: a /32 is always the longest match, and a hash
    /// lookup costs the same however many there are (an LPM trie's walk
    /// grows with its depth).
    pub const POLICY_HOST: &str = "POLICY_HOST";
    /// Hash: [`super::PolicyPortKey`] -> [`super::PolicyAllow`] for single
    /// ports (and ICMP type and code), looked up before `POLICY_PORT`
    /// (every entry is an allow: any hit allows).
    pub const POLICY_EXACT: &str = "POLICY_EXACT";
    /// Capacity of [`POLICY_ADDR`] (no preallocation: an LPM trie takes
    /// memory per entry).
    pub const POLICY_ADDR_MAX: u32 = 1 << 21;
    /// Capacity of [`POLICY_HOST`] and [`POLICY_EXACT`] each. Created
    /// without preallocation, but the kernel allocates a hash's bucket
    /// array up front (16 bytes a bucket: 2 MiB here). Entries beyond it go
    /// to the tries, which answer the same (slower).
    pub const POLICY_HASH_MAX: u32 = 1 << 17;
    /// Capacity of [`POLICY_PORT`].
    pub const POLICY_PORT_MAX: u32 = 1 << 21;
    /// Hash: elastic IP (`[u8; 4]`) -> [`super::EipEntry`]. On the host of
    /// the bound port: translate inbound traffic to the fixed IP. On gateway
    /// hosts: steer inbound traffic to that host over the overlay.
    pub const EIPS: &str = "EIPS";
    /// Capacity of [`EIPS`].
    pub const EIPS_MAX: u32 = 65_536;
    /// Hash: [`super::EpKey`] (routing domain, fixed IP) -> [`super::EipOut`]:
    /// the elastic IP outbound traffic of a local port is translated to.
    pub const EIP_OUT: &str = "EIP_OUT";
    /// Capacity of [`EIP_OUT`].
    pub const EIP_OUT_MAX: u32 = 65_536;
    /// Hash: routing domain -> [`super::SnatRouter`]: the routers whose
    /// SNAT this gateway host does (each router has one such host).
    pub const SNAT_ROUTERS: &str = "SNAT_ROUTERS";
    /// Capacity of [`SNAT_ROUTERS`].
    pub const SNAT_ROUTERS_MAX: u32 = 16_384;
    /// LRU hash: [`super::NatKey`] (a VM's flow) -> [`super::NatOut`]: the
    /// external address and port it was given.
    pub const SNAT_OUT: &str = "SNAT_OUT";
    /// LRU hash: [`super::NatRevKey`] (the translated flow as the remote
    /// end sees it) -> [`super::NatIn`]: the VM behind it.
    pub const SNAT_IN: &str = "SNAT_IN";
    /// Capacity of [`SNAT_OUT`] and [`SNAT_IN`]: translated flows per
    /// gateway host.
    pub const SNAT_MAX: u32 = 262_144;
    /// Hash: [`super::QosKey`] (elastic IP, direction) -> [`super::QosBucket`]:
    /// the bandwidth limit of an elastic IP in one direction.
    pub const EIP_QOS: &str = "EIP_QOS";
    /// Capacity of [`EIP_QOS`].
    pub const EIP_QOS_MAX: u32 = 131_072;
    /// Per-CPU LRU hash: [`super::NextHopKey`] (interface, destination) ->
    /// [`super::NextHop`]: the next hop of a tunnel (or, on gateway hosts, of
    /// the external interface) as `bpf_fib_lookup` last gave it, reused for
    /// [`NEXTHOP_TTL_NS`] (the FIB lookup is most of a tunnelled packet's
    /// cost).
    pub const NEXTHOPS: &str = "NEXTHOPS";
    /// Capacity of [`NEXTHOPS`] (per CPU).
    pub const NEXTHOPS_MAX: u32 = 16_384;
    /// How long a cached next hop is used before the FIB is asked again: a
    /// route or neighbour change reaches tunnelled traffic within this.
    pub const NEXTHOP_TTL_NS: u64 = 1_000_000_000;
    /// Program array of one: the XDP port pipeline's tail for packets
    /// leaving the VPC ([`super::programs::PORT_OUT`]).
    pub const PORT_OUT_XDP: &str = "PORT_OUT_XDP";
    /// The same for the TC build ([`super::programs::PORT_OUT_TC`]).
    pub const PORT_OUT_TC: &str = "PORT_OUT_TC";
    /// Source ports of the agents' load balancer health checks (outside
    /// Linux's ephemeral range): what VMs answer to.
    pub const PROBE_PORT_MIN: u16 = 61_000;
    pub const PROBE_PORT_MAX: u16 = 61_999;
    /// Slots of the program arrays `PORT_OUT_XDP` / `PORT_OUT_TC`.
    pub const TAIL_EXTERNAL: u32 = 0;
    /// The load balancer's translation of a packet to a VIP.
    pub const TAIL_LB: u32 = 1;
    /// The port pipeline itself: a packet the load balancer translated
    /// goes through it again, towards its backend.
    pub const TAIL_PORT: u32 = 2;
    /// Delivery of a local member's reply, translated back to the VIP.
    pub const TAIL_LB_REPLY: u32 = 3;
    pub const TAILS: u32 = 4;
    /// `LbServiceKey` -> `LbService`: the listeners of load balancers.
    pub const LB_SERVICES: &str = "LB_SERVICES";
    pub const LB_SERVICES_MAX: u32 = 65_536;
    /// Backend id -> `LbBackend`.
    pub const LB_BACKENDS: &str = "LB_BACKENDS";
    pub const LB_BACKENDS_MAX: u32 = 262_144;
    /// The Maglev lookup tables of every service, back to back: backend
    /// ids (`LbService::table_off` .. `+ table_size`).
    pub const LB_MAGLEV: &str = "LB_MAGLEV";
    pub const LB_MAGLEV_MAX: u32 = 1 << 23;
    /// `LbFlowKey` (client -> VIP) -> `LbFlow`: a connection's backend.
    pub const LB_FLOWS: &str = "LB_FLOWS";
    /// `LbFlowKey` (backend -> client, as the reply) -> `LbRev`.
    pub const LB_REV: &str = "LB_REV";
    pub const LB_FLOWS_MAX: u32 = 524_288;
    /// `LbPublicKey` -> `LbPublic`: the elastic IP of a public listener,
    /// by member and listener port (a member's host learns each internet
    /// connection's listener from its tunnel header, see `VXLAN_F_LB`).
    pub const LB_PUBLIC_OUT: &str = "LB_PUBLIC_OUT";
    pub const LB_PUBLIC_OUT_MAX: u32 = 65_536;
    /// `LbFlowKey` (client, member) -> `LbPublic`: how a member's host
    /// translates the replies of one internet connection.
    pub const LB_PUBLIC_FLOWS: &str = "LB_PUBLIC_FLOWS";
    /// A bit per (domain, address) hash ([`crate::lb_vip_bit`]), set for
    /// every listener's VIP: the port program looks a packet up in
    /// `LB_SERVICES` only when its destination's bit is set, so traffic
    /// that is not to a VIP pays an array read, not a hash lookup.
    pub const LB_VIP_FILTER: &str = "LB_VIP_FILTER";
    /// 2^20 bits in u64 words.
    pub const LB_VIP_FILTER_WORDS: u32 = 16_384;
    /// Per-CPU counters by service id and by backend id (`LbStats`).
    pub const LB_SERVICE_STATS: &str = "LB_SERVICE_STATS";
    pub const LB_BACKEND_STATS: &str = "LB_BACKEND_STATS";
}

/// The VXLAN UDP port (IANA).
pub const VXLAN_PORT: u16 = 4789;
/// Bytes VXLAN adds to a frame: outer Ethernet, IPv4, UDP and VXLAN headers.
pub const VXLAN_OVERHEAD: u16 = 14 + 20 + 8 + 8;

/// Program names (the entry-point function names in `dataplane-ebpf`).
pub mod programs {
    /// XDP program attached to a host's uplink (underlay NIC).
    pub const UPLINK: &str = "strato_uplink";
    /// XDP program with the VM port pipeline (the host end of its veth
    /// "tap"): used by `stratoctl trace`, tests and benchmarks.
    pub const PORT: &str = "strato_port";
    /// The same pipeline as a TC (clsact ingress) program: what agents
    /// attach to VM ports.
    pub const PORT_TC: &str = "strato_port_tc";
    /// The XDP port pipeline that reads the connection table but never
    /// writes it: what `stratoctl trace` runs over the live maps.
    pub const PORT_TRACE: &str = "strato_port_trace";
    /// Reference program that only returns XDP_PASS: the floor benchmarks
    /// compare every path against. Never attached to an interface.
    pub const FLOOR: &str = "strato_floor";
    /// Benchmark ceiling: XDP that only redirects (per `BARE`). Never
    /// attached by an agent.
    pub const BARE: &str = "strato_bare";
    /// The same ceiling as a TC (clsact ingress) program.
    pub const BARE_TC: &str = "strato_bare_tc";
    /// Benchmark harness: puts `BENCH_FRAME` back into the packet, then runs
    /// the port pipeline. A repeated BPF_PROG_TEST_RUN reuses one buffer,
    /// and paths that rewrite the frame would otherwise time something else
    /// from the second run on. Never attached.
    pub const BENCH_PORT: &str = "strato_bench_port";
    /// The same without the load balancer in front of the pipeline: what
    /// that front check costs a packet that is not to a VIP.
    pub const BENCH_PORT_PLAIN: &str = "strato_bench_port_plain";
    /// The same for the uplink program.
    pub const BENCH_UPLINK: &str = "strato_bench_uplink";
    /// The harness's own cost: puts the frame back, passes.
    pub const BENCH_RESTORE: &str = "strato_bench_restore";
    /// XDP program on a gateway host's external interface: answers ARP for
    /// elastic IPs and steers their traffic to the bound port's host.
    pub const EXTERNAL: &str = "strato_external";
    /// Benchmark harness: the frame put back, then the external program.
    pub const BENCH_EXTERNAL: &str = "strato_bench_external";
    /// Tail of the XDP port pipeline (reached by tail call through
    /// `PORT_OUT_XDP`, never attached): a packet leaving the VPC gets its
    /// elastic IP (or goes to the router's SNAT untranslated) and is
    /// tunnelled to a gateway host.
    pub const PORT_OUT: &str = "strato_port_out";
    /// The same tail for the TC build (`PORT_OUT_TC`).
    pub const PORT_OUT_TC: &str = "strato_port_out_tc";
    /// Tail of the port pipeline for packets to a load balancer VIP.
    pub const PORT_LB: &str = "strato_port_lb";
    pub const PORT_LB_TC: &str = "strato_port_lb_tc";
    /// Tail of the port pipeline for a member's packets to local ports.
    pub const PORT_LB_REPLY: &str = "strato_port_lb_reply";
    pub const PORT_LB_REPLY_TC: &str = "strato_port_lb_reply_tc";
}

/// Why the dataplane dropped a packet. One list, used by the kernel programs
/// (as the key of [`DropKey`]), by the agent's metrics and by `stratoctl`.
///
/// Append only: the numeric values are an ABI between a running kernel
/// program and newer user-space tools. `0` is never a drop.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// Frame shorter than an Ethernet header.
    TruncatedEthernet = 1,
    /// A VLAN tag (802.1Q/802.1ad) announced but cut off.
    TruncatedVlan = 2,
    /// More stacked VLAN tags than the parser accepts.
    TooManyVlanTags = 3,
    /// Ethertype IPv4 but fewer than 20 bytes of header.
    TruncatedIpv4 = 4,
    /// IPv4 header whose version field is not 4.
    BadIpv4Version = 5,
    /// IPv4 IHL below 5, or options running past the frame.
    BadIpv4HeaderLength = 6,
    /// IPv4 total length smaller than the header or larger than the frame.
    BadIpv4TotalLength = 7,
    /// Ethertype IPv6 but fewer than 40 bytes of header.
    TruncatedIpv6 = 8,
    /// IPv6 header whose version field is not 6.
    BadIpv6Version = 9,
    /// IPv6 payload length larger than the frame.
    BadIpv6PayloadLength = 10,
    /// An IPv6 extension header cut off by the end of the frame/payload.
    TruncatedIpv6ExtHeader = 11,
    /// More IPv6 extension headers than the parser walks.
    TooManyIpv6ExtHeaders = 12,
    /// ARP shorter than its 28-byte Ethernet/IPv4 form.
    TruncatedArp = 13,
    /// ARP that is not Ethernet/IPv4 (hardware/protocol type or lengths).
    BadArp = 14,
    /// TCP header cut off by the end of the IP payload.
    TruncatedTcp = 15,
    /// TCP data offset below 5 or past the IP payload.
    BadTcpDataOffset = 16,
    /// UDP header cut off by the end of the IP payload.
    TruncatedUdp = 17,
    /// UDP length field below 8 or past the IP payload.
    BadUdpLength = 18,
    /// ICMP/ICMPv6 header cut off by the end of the IP payload.
    TruncatedIcmp = 19,
    /// A frame on an interface the agent has not (yet) configured as a port.
    PortUnknown = 20,
    /// The port (or its network) is administratively down.
    PortDown = 21,
    /// Source MAC is not the port's (nor an allowed address pair's).
    SpoofedMac = 22,
    /// Source IPv4 address is not the port's (nor an allowed address pair's).
    SpoofedIp = 23,
    /// ARP request for an address nobody has on the port's network (never flooded).
    ArpUnknownTarget = 24,
    /// ARP reply or announcement from a VM: answered locally, never forwarded.
    ArpNotRequest = 25,
    /// Broadcast or multicast other than ARP and DHCP: not flooded.
    FloodSuppressed = 26,
    /// No endpoint with this MAC and IPv4 address on the port's network.
    UnknownDestination = 27,
    /// Routed packet with no route in its VPC (ICMP network unreachable sent).
    NoRoute = 28,
    /// Routed packet to a subnet address no port holds (ICMP host unreachable sent).
    HostUnreachable = 29,
    /// Routed packet whose TTL ran out (ICMP time exceeded sent).
    TtlExceeded = 30,
    /// Larger than the path's MTU with DF set (ICMP fragmentation needed sent).
    FragmentationNeeded = 31,
    /// Larger than the MTU and not routable with an ICMP answer (no fragmentation in the overlay).
    TooBig = 32,
    /// Addressed to a router interface but neither ping nor DHCP.
    NotForGateway = 33,
    /// VXLAN frame whose VNI is not a network of this host.
    UnknownVni = 34,
    /// VXLAN header without the I flag, or the inner frame cut off.
    BadVxlan = 35,
    /// Decapsulated frame for an endpoint that is not a port of this host.
    NotLocal = 36,
    /// The underlay next hop's MAC is not resolved yet.
    UnderlayNoNeighbour = 37,
    /// No underlay route to the destination host.
    UnderlayUnreachable = 38,
    /// IPv6 from a VM: networks are IPv4 only.
    Ipv6Unsupported = 39,
    /// Ethertype other than IPv4 and ARP from a VM.
    UnsupportedEthertype = 40,
    /// 802.1Q/802.1ad tagged frame from a VM.
    VlanOnPort = 41,
    /// The host's underlay (uplink, address) is not configured yet.
    NoUnderlay = 42,
    /// The kernel refused to grow or shrink the frame (headroom).
    AdjustFailed = 43,
    /// No security group rule of the destination port allows the packet in.
    PolicyDeniedIngress = 44,
    /// No security group rule of the source port allows the packet out.
    PolicyDeniedEgress = 45,
    /// TCP flags no connection can have (SYN+FIN, SYN+RST, FIN without
    /// ACK, none), or a SYN-ACK that acknowledges nothing we saw.
    CtInvalid = 46,
    /// TCP segment outside the window of its tracked connection.
    CtOutOfWindow = 47,
    /// A tracked connection the port's current rules no longer allow: its
    /// entry is removed and the packet dropped.
    PolicyRevoked = 48,
    /// The programs' per-CPU scratch map could not be read (never expected:
    /// a missing map).
    NoScratch = 49,
    /// A packet from a VM towards the external network, but the VM's
    /// address has no elastic IP and its router does no SNAT.
    NoElasticIp = 50,
    /// Traffic to an elastic IP that is not bound (or not to a port of this
    /// host, or on a gateway: to no known host).
    UnknownElasticIp = 51,
    /// External-network traffic reached a host that is not a gateway.
    NotGateway = 52,
    /// A gateway host has no neighbour entry for the next hop on the
    /// external network yet (the kernel resolves it; later packets pass).
    ExternalNoNeighbour = 53,
    /// A gateway host has no route on its external interface to the
    /// destination.
    ExternalUnreachable = 54,
    /// Router SNAT: every external port for this remote address and port
    /// is taken (the allocation tried several and found none free).
    SnatExhausted = 55,
    /// Router SNAT translates TCP, UDP and ICMP echo only.
    SnatUnsupported = 56,
    /// Router SNAT cannot translate IPv4 fragments (the ports are in the
    /// first fragment only).
    SnatFragment = 57,
    /// SNAT traffic for a router whose SNAT another gateway host does.
    NotSnatGateway = 58,
    /// A reply to the SNAT address with no translated flow behind it.
    SnatNoFlow = 59,
    /// The port pipeline's tail for external traffic is not loaded (the
    /// tail call failed).
    NoTailCall = 60,
    /// Over an elastic IP's bandwidth limit (its QoS policy) in this
    /// direction.
    QosRateExceeded = 61,
    /// A load balancer listener with no backend to take the connection
    /// (all members down, disabled or weight 0): TCP is answered with a
    /// reset, UDP with an ICMP port unreachable.
    LbNoBackend = 62,
    /// A packet to a load balancer's address on a port or protocol no
    /// listener serves (answered like [`DropReason::LbNoBackend`]).
    LbNoListener = 63,
    /// A packet to a load balancer's address that is neither TCP nor UDP,
    /// or a fragment (the ports are in the first fragment only).
    LbUnsupported = 64,
    /// A connection to a drained member after its listener's drain timeout:
    /// reset.
    LbDrained = 65,
    /// A VM's answer to a load balancer health check (addressed to its
    /// gateway, from a check port, or an echo reply): read by the agent's
    /// socket before this program, not forwarded.
    LbHealthAnswer = 66,
}

impl DropReason {
    /// Every reason, in numeric order.
    pub const ALL: [DropReason; 66] = [
        DropReason::TruncatedEthernet,
        DropReason::TruncatedVlan,
        DropReason::TooManyVlanTags,
        DropReason::TruncatedIpv4,
        DropReason::BadIpv4Version,
        DropReason::BadIpv4HeaderLength,
        DropReason::BadIpv4TotalLength,
        DropReason::TruncatedIpv6,
        DropReason::BadIpv6Version,
        DropReason::BadIpv6PayloadLength,
        DropReason::TruncatedIpv6ExtHeader,
        DropReason::TooManyIpv6ExtHeaders,
        DropReason::TruncatedArp,
        DropReason::BadArp,
        DropReason::TruncatedTcp,
        DropReason::BadTcpDataOffset,
        DropReason::TruncatedUdp,
        DropReason::BadUdpLength,
        DropReason::TruncatedIcmp,
        DropReason::PortUnknown,
        DropReason::PortDown,
        DropReason::SpoofedMac,
        DropReason::SpoofedIp,
        DropReason::ArpUnknownTarget,
        DropReason::ArpNotRequest,
        DropReason::FloodSuppressed,
        DropReason::UnknownDestination,
        DropReason::NoRoute,
        DropReason::HostUnreachable,
        DropReason::TtlExceeded,
        DropReason::FragmentationNeeded,
        DropReason::TooBig,
        DropReason::NotForGateway,
        DropReason::UnknownVni,
        DropReason::BadVxlan,
        DropReason::NotLocal,
        DropReason::UnderlayNoNeighbour,
        DropReason::UnderlayUnreachable,
        DropReason::Ipv6Unsupported,
        DropReason::UnsupportedEthertype,
        DropReason::VlanOnPort,
        DropReason::NoUnderlay,
        DropReason::AdjustFailed,
        DropReason::PolicyDeniedIngress,
        DropReason::PolicyDeniedEgress,
        DropReason::CtInvalid,
        DropReason::CtOutOfWindow,
        DropReason::PolicyRevoked,
        DropReason::NoScratch,
        DropReason::NoElasticIp,
        DropReason::UnknownElasticIp,
        DropReason::NotGateway,
        DropReason::ExternalNoNeighbour,
        DropReason::ExternalUnreachable,
        DropReason::SnatExhausted,
        DropReason::SnatUnsupported,
        DropReason::SnatFragment,
        DropReason::NotSnatGateway,
        DropReason::SnatNoFlow,
        DropReason::NoTailCall,
        DropReason::QosRateExceeded,
        DropReason::LbNoBackend,
        DropReason::LbNoListener,
        DropReason::LbUnsupported,
        DropReason::LbDrained,
        DropReason::LbHealthAnswer,
    ];

    /// Stable snake_case label, used as a metric label and in `stratoctl`.
    pub const fn label(self) -> &'static str {
        match self {
            DropReason::TruncatedEthernet => "truncated_ethernet",
            DropReason::TruncatedVlan => "truncated_vlan",
            DropReason::TooManyVlanTags => "too_many_vlan_tags",
            DropReason::TruncatedIpv4 => "truncated_ipv4",
            DropReason::BadIpv4Version => "bad_ipv4_version",
            DropReason::BadIpv4HeaderLength => "bad_ipv4_header_length",
            DropReason::BadIpv4TotalLength => "bad_ipv4_total_length",
            DropReason::TruncatedIpv6 => "truncated_ipv6",
            DropReason::BadIpv6Version => "bad_ipv6_version",
            DropReason::BadIpv6PayloadLength => "bad_ipv6_payload_length",
            DropReason::TruncatedIpv6ExtHeader => "truncated_ipv6_ext_header",
            DropReason::TooManyIpv6ExtHeaders => "too_many_ipv6_ext_headers",
            DropReason::TruncatedArp => "truncated_arp",
            DropReason::BadArp => "bad_arp",
            DropReason::TruncatedTcp => "truncated_tcp",
            DropReason::BadTcpDataOffset => "bad_tcp_data_offset",
            DropReason::TruncatedUdp => "truncated_udp",
            DropReason::BadUdpLength => "bad_udp_length",
            DropReason::TruncatedIcmp => "truncated_icmp",
            DropReason::PortUnknown => "port_unknown",
            DropReason::PortDown => "port_down",
            DropReason::SpoofedMac => "spoofed_mac",
            DropReason::SpoofedIp => "spoofed_ip",
            DropReason::ArpUnknownTarget => "arp_unknown_target",
            DropReason::ArpNotRequest => "arp_not_request",
            DropReason::FloodSuppressed => "flood_suppressed",
            DropReason::UnknownDestination => "unknown_destination",
            DropReason::NoRoute => "no_route",
            DropReason::HostUnreachable => "host_unreachable",
            DropReason::TtlExceeded => "ttl_exceeded",
            DropReason::FragmentationNeeded => "fragmentation_needed",
            DropReason::TooBig => "too_big",
            DropReason::NotForGateway => "not_for_gateway",
            DropReason::UnknownVni => "unknown_vni",
            DropReason::BadVxlan => "bad_vxlan",
            DropReason::NotLocal => "not_local",
            DropReason::UnderlayNoNeighbour => "underlay_no_neighbour",
            DropReason::UnderlayUnreachable => "underlay_unreachable",
            DropReason::Ipv6Unsupported => "ipv6_unsupported",
            DropReason::UnsupportedEthertype => "unsupported_ethertype",
            DropReason::VlanOnPort => "vlan_on_port",
            DropReason::NoUnderlay => "no_underlay",
            DropReason::AdjustFailed => "adjust_failed",
            DropReason::PolicyDeniedIngress => "policy_denied_ingress",
            DropReason::PolicyDeniedEgress => "policy_denied_egress",
            DropReason::CtInvalid => "ct_invalid",
            DropReason::CtOutOfWindow => "ct_out_of_window",
            DropReason::PolicyRevoked => "policy_revoked",
            DropReason::NoScratch => "no_scratch",
            DropReason::NoElasticIp => "no_elastic_ip",
            DropReason::UnknownElasticIp => "unknown_elastic_ip",
            DropReason::NotGateway => "not_gateway",
            DropReason::ExternalNoNeighbour => "external_no_neighbour",
            DropReason::ExternalUnreachable => "external_unreachable",
            DropReason::SnatExhausted => "snat_exhausted",
            DropReason::SnatUnsupported => "snat_unsupported",
            DropReason::SnatFragment => "snat_fragment",
            DropReason::NotSnatGateway => "not_snat_gateway",
            DropReason::SnatNoFlow => "snat_no_flow",
            DropReason::NoTailCall => "no_tail_call",
            DropReason::QosRateExceeded => "qos_rate_exceeded",
            DropReason::LbNoBackend => "lb_no_backend",
            DropReason::LbNoListener => "lb_no_listener",
            DropReason::LbUnsupported => "lb_unsupported",
            DropReason::LbDrained => "lb_drained",
            DropReason::LbHealthAnswer => "lb_health_answer",
        }
    }

    /// The reason with this numeric code, if any.
    pub fn from_code(code: u32) -> Option<DropReason> {
        DropReason::ALL.iter().copied().find(|r| *r as u32 == code)
    }
}

/// A VM port as the dataplane sees it (value of `PORTS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortInfo {
    /// VXLAN network identifier of the port's network.
    pub vni: u32,
    /// `PORT_F_*` bits.
    pub flags: u32,
    /// The port's MAC address.
    pub mac: [u8; 6],
    /// MTU of the network (what the VM is told).
    pub mtu: u16,
    /// The port's first fixed IPv4 address, network byte order as bytes.
    pub ipv4: [u8; 4],
    /// Gateway address of that address's subnet (source of ICMP errors).
    pub gw_ip: [u8; 4],
    /// MAC of the router interface on the port's network; all zero when the
    /// network has no router (then nothing is routed).
    pub gw_mac: [u8; 6],
    /// Prefix length of the port's subnet.
    pub prefix_len: u8,
    pub _pad: u8,
    /// Counter slot in `IF_STATS`.
    pub slot: u32,
    /// Routing domain: the VPC (router) or the lone network the port is in.
    pub domain: u32,
    /// Security policy (the compiled union of the port's groups); 0: none
    /// (port security off). A rebuilt policy gets a new id, so a tracked
    /// connection admitted under another id is checked again.
    pub policy: u32,
}

/// `PortInfo::flags`: anti-spoofing applies.
pub const PORT_F_SECURITY: u32 = 1;
/// `PortInfo::flags`: administratively up (port and network).
pub const PORT_F_ADMIN_UP: u32 = 2;
/// `PortInfo::flags`: the entry is a configured port (set on every entry
/// written; an all-zero `PORT_INDEX` slot is no port).
pub const PORT_F_PRESENT: u32 = 4;
/// `PortInfo::flags`: the port's groups are stateless: every packet is
/// checked against the rules, nothing is tracked.
pub const PORT_F_STATELESS: u32 = 8;
/// `PortInfo::flags`: an address of the port is a load balancer member:
/// what it delivers to local ports may be a reply to translate back to a
/// VIP.
pub const PORT_F_LB_MEMBER: u32 = 16;

/// Policy direction, seen from the port (the low bit of a policy key).
pub const DIR_INGRESS: u32 = 0;
pub const DIR_EGRESS: u32 = 1;

/// Data of a `POLICY_ADDR` key; the prefix length covers `policy_dir` (32
/// bits) plus the remote prefix's length.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyAddrKey {
    /// `(policy << 1) | direction`, big-endian bytes.
    pub policy_dir: [u8; 4],
    /// The remote address (source for ingress, destination for egress).
    pub ip: [u8; 4],
}

/// Value of `POLICY_ADDR`: the port class of the longest matching prefix
/// (every rule whose remote prefix contains it, flattened).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyClass {
    pub class: u32,
}

/// Data of a `POLICY_PORT` key; the prefix length is 32 (class) for any
/// protocol, 40 for any port of `proto`, 40 + n for a port prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyPortKey {
    /// Big-endian bytes.
    pub class: [u8; 4],
    pub proto: u8,
    /// Destination port (TCP, UDP, SCTP, UDP-Lite, DCCP), or ICMP
    /// `type << 8 | code`; big-endian bytes.
    pub port: [u8; 2],
    pub _pad: u8,
}

/// Value of `POLICY_PORT`: the rule that allows (index in the agent's rule
/// table, for `stratoctl trace` and counters).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyAllow {
    pub rule: u32,
}

/// Key of `CT`: a flow in its routing domain (the VPC: addresses are unique
/// there), addresses and ports ordered so
/// that both directions of a connection find the same entry
/// (`(addr_a, port_a) <= (addr_b, port_b)`, compared as big-endian bytes).
/// ICMP echo uses the identifier as both ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    /// The routing domain (`PortInfo::domain`) of the flow's ports: one
    /// entry per connection and host, whichever of its two ends are local.
    pub zone: u32,
    pub addr_a: [u8; 4],
    pub addr_b: [u8; 4],
    pub port_a: u16,
    pub port_b: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl CtKey {
    /// The key of a flow in `zone`, and whether the packet (`saddr`,
    /// `sport` -> `daddr`, `dport`) comes from side a. The same function
    /// in the programs and in user space (`stratoctl trace`).
    #[inline(always)]
    pub fn of_flow(
        zone: u32,
        saddr: [u8; 4],
        daddr: [u8; 4],
        sport: u16,
        dport: u16,
        proto: u8,
    ) -> (CtKey, bool) {
        let s = u32::from_be_bytes(saddr);
        let d = u32::from_be_bytes(daddr);
        let from_a = s < d || (s == d && sport <= dport);
        let key = if from_a {
            CtKey {
                zone,
                addr_a: saddr,
                addr_b: daddr,
                port_a: sport,
                port_b: dport,
                proto,
                _pad: [0; 3],
            }
        } else {
            CtKey {
                zone,
                addr_a: daddr,
                addr_b: saddr,
                port_a: dport,
                port_b: sport,
                proto,
                _pad: [0; 3],
            }
        };
        (key, from_a)
    }
}

/// A connection state's name (metrics, `stratoctl`).
pub const fn ct_state_label(state: u8) -> &'static str {
    match state {
        CT_TCP_SYN_SENT => "syn_sent",
        CT_TCP_SYN_RECV => "syn_recv",
        CT_TCP_ESTABLISHED => "established",
        CT_TCP_FIN_WAIT => "fin_wait",
        CT_TCP_TIME_WAIT => "time_wait",
        CT_TCP_CLOSE => "close",
        CT_UDP => "udp",
        CT_ICMP => "icmp",
        _ => "other",
    }
}

/// Value of `CT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    /// `bpf_ktime_get_coarse_ns` of the last packet.
    pub last_seen: u64,
    /// Per side (a, b): the policy id of that side's port under which the
    /// flow was admitted (or last checked) on this host; 0: that side's
    /// port is not here, or has no stateful policy.
    pub policy: [u32; 2],
    /// Per side: the admitting rule (`PolicyAllow::rule`).
    pub rule: [u32; 2],
    /// `CT_*` state.
    pub state: u8,
    /// `CT_F_*`.
    pub flags: u8,
    /// TCP window scale of side a and side b.
    pub wscale: [u8; 2],
    /// The policy port of the first packet (destination port, or ICMP
    /// `type << 8 | code`): what a re-check after a policy change matches.
    pub policy_port: u16,
    pub _pad: u16,
    /// TCP window tracking per side (a, b): highest sequence end sent,
    /// highest sequence end the peer allowed, largest window advertised.
    pub end: [u32; 2],
    pub maxend: [u32; 2],
    pub maxwin: [u32; 2],
}

impl CtEntry {
    /// The side (0: a, 1: b) that initiated the connection: its port
    /// admitted it by an egress rule, the other side's by an ingress rule.
    pub const fn initiator(&self) -> usize {
        if self.flags & CT_F_ORIG_A != 0 {
            0
        } else {
            1
        }
    }
}

/// `CtEntry::state` values. TCP states follow the kernel's (merged where
/// the kernel's timeouts agree).
pub const CT_TCP_SYN_SENT: u8 = 1;
pub const CT_TCP_SYN_RECV: u8 = 2;
pub const CT_TCP_ESTABLISHED: u8 = 3;
/// One side sent FIN.
pub const CT_TCP_FIN_WAIT: u8 = 4;
/// Both sides sent FIN.
pub const CT_TCP_TIME_WAIT: u8 = 5;
/// Reset.
pub const CT_TCP_CLOSE: u8 = 6;
pub const CT_UDP: u8 = 7;
pub const CT_ICMP: u8 = 8;
/// Any other protocol.
pub const CT_OTHER: u8 = 9;

/// `CtEntry::flags`: the connection's initiator is side a.
pub const CT_F_ORIG_A: u8 = 1;
/// `CtEntry::flags`: a packet in the reply direction was seen.
pub const CT_F_REPLIED: u8 = 4;
/// `CtEntry::flags`: side a / side b sent FIN.
pub const CT_F_FIN_A: u8 = 8;
pub const CT_F_FIN_B: u8 = 16;
/// `CtEntry::flags`: side a / side b offered window scaling in its SYN.
pub const CT_F_WS_A: u8 = 32;
pub const CT_F_WS_B: u8 = 64;

/// Seconds an entry lives after its last packet, per state and flags: the
/// Linux defaults (nf_conntrack_tcp_timeout_*, udp, icmp, generic).
pub const fn ct_timeout_secs(state: u8, flags: u8) -> u64 {
    match state {
        CT_TCP_SYN_SENT => 120,
        CT_TCP_SYN_RECV => 60,
        CT_TCP_ESTABLISHED => 432_000,
        CT_TCP_FIN_WAIT => 120,
        CT_TCP_TIME_WAIT => 120,
        CT_TCP_CLOSE => 10,
        CT_UDP if flags & CT_F_REPLIED != 0 => 120,
        CT_UDP => 30,
        CT_ICMP => 30,
        _ => 600,
    }
}

/// Connection tracking counters, one copy per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtStats {
    /// Packets that found their flow's entry.
    pub hits: u64,
    /// Entries created.
    pub inserts: u64,
    /// Entries the kernel refused to create (the packet was still decided
    /// by the rules, and passed only if they allow it).
    pub insert_failures: u64,
    /// Entries removed by the packet path (revoked, or reopened).
    pub removed: u64,
    /// First packets checked against the rules.
    pub policy_lookups: u64,
    /// ICMP errors passed as related to a tracked flow.
    pub related: u64,
    /// Entries checked again after their port's policy changed.
    pub rechecked: u64,
    pub _reserved: u64,
}

impl CtStats {
    pub fn accumulate(&mut self, o: &CtStats) {
        self.hits += o.hits;
        self.inserts += o.inserts;
        self.insert_failures += o.insert_failures;
        self.removed += o.removed;
        self.policy_lookups += o.policy_lookups;
        self.related += o.related;
        self.rechecked += o.rechecked;
    }
}

/// Key of `ENDPOINTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EpKey {
    pub domain: u32,
    pub ip: [u8; 4],
}

/// Where an address of a VPC lives (value of `ENDPOINTS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// MAC of the address's owner (router interface MAC for a gateway).
    pub mac: [u8; 6],
    /// MAC of the router interface on the endpoint's network: the source MAC
    /// of packets routed to it (zero when its network has no router).
    pub gw_mac: [u8; 6],
    /// `EP_*`.
    pub kind: u8,
    /// `EP_F_*`.
    pub flags: u8,
    /// MTU of the endpoint's network.
    pub mtu: u16,
    /// VNI of the endpoint's network.
    pub vni: u32,
    /// `EP_LOCAL`: ifindex of the port's tap.
    pub ifindex: u32,
    /// `EP_REMOTE`: underlay address of the port's host.
    pub underlay: [u8; 4],
}

/// `Endpoint::kind`: a port on this host.
pub const EP_LOCAL: u8 = 1;
/// `Endpoint::kind`: a port on another host (reached over VXLAN).
pub const EP_REMOTE: u8 = 2;
/// `Endpoint::kind`: a router interface (the subnet's gateway address).
pub const EP_GATEWAY: u8 = 3;
/// `Endpoint::kind`: the way out of a routing domain whose router has an
/// external gateway (key: the domain and 0.0.0.0). `vni` is the external
/// network's, `underlay` the gateway host's, `mtu` the external network's.
pub const EP_EXTERNAL: u8 = 4;
/// `Endpoint::kind`: a load balancer's VIP: packets to it are translated
/// to a backend (`LB_SERVICES`) and routed again.
pub const EP_VIP: u8 = 5;
/// `Endpoint::flags`: the port (or its network) is administratively down:
/// nothing is delivered to it.
pub const EP_F_DOWN: u8 = 1;

/// A `MACS` value: no port receives (the port is administratively down).
pub const MACS_DOWN: u32 = 0;

/// Data of a `ROUTES` key; the trie's prefix length covers `domain` (32
/// bits) plus the route's prefix length.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteKey {
    /// Big-endian bytes so that the trie matches the domain first.
    pub domain: [u8; 4],
    pub ip: [u8; 4],
}

/// Value of `ROUTES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// `ROUTE_*`.
    pub kind: u32,
    /// `ROUTE_NEXTHOP`: the next hop, an endpoint of the domain.
    pub nexthop: [u8; 4],
}

/// `Route::kind`: a subnet of the domain (destinations are endpoints).
pub const ROUTE_CONNECTED: u32 = 1;
/// `Route::kind`: a static route of the router.
pub const ROUTE_NEXTHOP: u32 = 2;
/// `Route::kind`: the default route of a router with an external gateway:
/// out through the [`EP_EXTERNAL`] endpoint.
pub const ROUTE_EXTERNAL: u32 = 3;

/// `VniInfo::flags`: the VNI of an external network (elastic IP traffic
/// between gateway hosts and the hosts of bound ports).
pub const VNI_F_EXTERNAL: u32 = 1;

/// Value of `EIPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EipEntry {
    /// `EIP_F_LOCAL`: the bound fixed IP (inbound destination after DNAT).
    pub fixed: [u8; 4],
    /// `EIP_F_LOCAL`: the routing domain of the fixed IP.
    pub domain: u32,
    /// `EIP_F_STEER`: underlay address of the bound port's host.
    pub underlay: [u8; 4],
    /// `EIP_F_STEER`: VNI of the external network (the tunnel to that host).
    pub vni: u32,
    /// `EIP_F_*`.
    pub flags: u32,
}

/// `EipEntry::flags`: the bound port is on this host: translate.
pub const EIP_F_LOCAL: u32 = 1;
/// `EipEntry::flags`: a gateway host forwards to `underlay`.
pub const EIP_F_STEER: u32 = 2;
/// `EipEntry::flags`: a router's SNAT address, translated on this gateway
/// host (see `SNAT_IN`).
pub const EIP_F_SNAT: u32 = 4;
/// `EipEntry::flags` / `EipOut::flags`: the elastic IP has a bandwidth
/// limit in that direction (inbound / outbound): see `EIP_QOS`.
pub const EIP_F_QOS: u32 = 8;
/// `EipEntry::flags`: the elastic IP of a load balancer's VIP (`fixed`,
/// in `domain`): a gateway host balances its connections itself and
/// tunnels them to the chosen member.
pub const EIP_F_LB: u32 = 16;

/// Key of `EIP_QOS`. `direction` as Neutron's: [`DIR_INGRESS`] towards the
/// VM, [`DIR_EGRESS`] from it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QosKey {
    pub eip: [u8; 4],
    pub direction: u32,
}

/// Value of `EIP_QOS`: a token bucket kept as a virtual clock. A packet of
/// `len` bytes costs `len * 8e9 / rate_bps` ns; it conforms if the clock,
/// after being pulled up to no earlier than `now - burst_ns` (a full
/// bucket), plus the cost is not in the future; then the clock advances by
/// the cost. Otherwise it is dropped (policing).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QosBucket {
    pub rate_bps: u64,
    /// Bucket depth as time at the rate.
    pub burst_ns: u64,
    /// The virtual clock (written by the dataplane; 0 for a fresh bucket).
    pub clock_ns: u64,
}

/// `VniInfo::flags`: a VNI of a routing domain whose router's SNAT this
/// gateway host does: untranslated traffic from VMs arrives on it.
pub const VNI_F_SNAT: u32 = 2;

/// `Endpoint::flags` of an [`EP_EXTERNAL`] endpoint: VMs without an elastic
/// IP leave through SNAT (the router's `enable_snat`).
pub const EP_F_SNAT: u8 = 2;

/// Key of `NEXTHOPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NextHopKey {
    /// The interface the lookup is pinned to (uplink or external).
    pub ifindex: u32,
    pub ip: [u8; 4],
}

/// Value of `NEXTHOPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    /// `bpf_ktime_get_coarse_ns` after which the FIB is asked again.
    pub expires_ns: u64,
    /// Interface the tunnel leaves by.
    pub ifindex: u32,
    /// The largest outer IPv4 length the FIB accepted (its MTU check); a
    /// larger plain frame asks the FIB again.
    pub max_len: u16,
    pub _pad: u16,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    pub _pad2: [u8; 4],
}

/// Value of `SNAT_ROUTERS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnatRouter {
    /// The router's gateway port address: the translated source.
    pub ext_ip: [u8; 4],
    pub flags: u32,
}

/// Key of `SNAT_OUT`: a VM's flow (ICMP echo: the identifier as the
/// inside port, remote port 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NatKey {
    pub domain: u32,
    pub inside: [u8; 4],
    pub remote: [u8; 4],
    pub inside_port: u16,
    pub remote_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Value of `SNAT_OUT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatOut {
    pub ext_ip: [u8; 4],
    pub ext_port: u16,
    pub _pad: u16,
    /// `bpf_ktime_get_coarse_ns` of the last packet out.
    pub last_seen: u64,
}

/// Key of `SNAT_IN`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NatRevKey {
    pub ext_ip: [u8; 4],
    pub remote: [u8; 4],
    pub ext_port: u16,
    pub remote_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Value of `SNAT_IN`: the VM behind a translated flow, and how to reach it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatIn {
    pub domain: u32,
    pub inside: [u8; 4],
    /// Underlay address of the VM's host (the tunnel it came through).
    pub underlay: [u8; 4],
    /// VNI of the VM's network.
    pub vni: u32,
    pub inside_port: u16,
    pub _pad: u16,
    pub vm_mac: [u8; 6],
    /// MAC of the router interface on the VM's network.
    pub gw_mac: [u8; 6],
    /// `bpf_ktime_get_coarse_ns` of the last packet either way.
    pub last_seen: u64,
}

/// Seconds a translated flow lives without traffic.
pub const fn snat_timeout_secs(proto: u8) -> u64 {
    match proto {
        6 => 7440,
        _ => 60,
    }
}

/// Value of `EIP_OUT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EipOut {
    pub eip: [u8; 4],
    pub flags: u32,
}

/// Value of `VNIS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VniInfo {
    pub domain: u32,
    pub flags: u32,
}

/// Key of `MACS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacKey {
    pub vni: u32,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Data of an `ALLOWED` key; prefix length is 32 (ifindex) + the prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllowedKey {
    /// ifindex of the port's tap, big-endian bytes.
    pub ifindex: [u8; 4],
    pub ip: [u8; 4],
}

/// Value of `ALLOWED`: the MAC that may send from the prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllowedMac {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Value of `BARE`: where the ceiling programs send a frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BareTarget {
    pub ifindex: u32,
    /// `BARE_F_MACS`: rewrite the MACs.
    pub flags: u32,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
}

/// `BareTarget::flags`: rewrite destination and source MAC.
pub const BARE_F_MACS: u32 = 1;

/// Value of `BENCH_FRAME[0]`: a frame of `len` bytes (1 to
/// [`BENCH_FRAME_MAX`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchFrame {
    pub len: u32,
    pub bytes: [u8; BENCH_FRAME_MAX],
}

/// Largest frame the benchmark harness restores.
pub const BENCH_FRAME_MAX: usize = 252;

/// Value of `HOST[0]`: the host's underlay.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostInfo {
    /// The host's underlay (VTEP) address; zero = not configured.
    pub underlay_ip: [u8; 4],
    /// ifindex of the uplink.
    pub uplink_ifindex: u32,
    /// Counter slot of the uplink.
    pub uplink_slot: u32,
    /// `HOST_F_*`.
    pub flags: u32,
    /// Gateway hosts: ifindex of the external interface (0: none).
    pub ext_ifindex: u32,
    /// Counter slot of the external interface.
    pub ext_slot: u32,
    /// MAC of the external interface (the answer to ARP for elastic IPs).
    pub ext_mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// `HostInfo::flags`: a gateway host (external traffic leaves here).
pub const HOST_F_GATEWAY: u32 = 1;
/// `HostInfo::flags`: load balancers are configured: replies arriving on
/// the uplink may need translating back to a VIP (`LB_REV`).
pub const HOST_F_LB: u32 = 2;

/// Per-interface counters, one copy per CPU (sum them in user space).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfStats {
    /// Frames seen by the program.
    pub rx_packets: u64,
    /// Bytes seen (whole frame, including fragments of multi-buffer frames).
    pub rx_bytes: u64,
    /// Well-formed IPv4 frames.
    pub ipv4: u64,
    /// Well-formed IPv6 frames.
    pub ipv6: u64,
    /// Well-formed ARP frames.
    pub arp: u64,
    /// Frames of any other ethertype (passed untouched).
    pub other: u64,
    /// Frames passed to the kernel stack (uplink: underlay traffic for the
    /// host; port: DHCP to the agent's slow path).
    pub passed: u64,
    /// Frames dropped (the reason is counted in `DROP_STATS`).
    pub dropped: u64,
    /// Frames forwarded (redirected to a port or, encapsulated, the uplink).
    pub forwarded: u64,
    /// Frames answered by the dataplane itself (ARP, ICMP from the gateway).
    pub answered: u64,
}

impl IfStats {
    /// Adds another CPU's (or interface's) counters into this one.
    pub fn accumulate(&mut self, o: &IfStats) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.ipv4 += o.ipv4;
        self.ipv6 += o.ipv6;
        self.arp += o.arp;
        self.other += o.other;
        self.passed += o.passed;
        self.dropped += o.dropped;
        self.forwarded += o.forwarded;
        self.answered += o.answered;
    }
}

/// Key of `DROP_STATS`: which interface dropped, and why.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DropKey {
    pub ifindex: u32,
    /// A [`DropReason`] code.
    pub reason: u32,
}

/// Value of `DROP_STATS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropStats {
    pub packets: u64,
    pub bytes: u64,
}

impl DropStats {
    pub fn accumulate(&mut self, o: &DropStats) {
        self.packets += o.packets;
        self.bytes += o.bytes;
    }
}

// Layouts are an ABI between kernel and user space: pin them.
/// Key of `LB_SERVICES`: a listener, as the address and port clients
/// connect to in a routing domain.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LbServiceKey {
    pub domain: u32,
    pub vip: [u8; 4],
    /// Host byte order.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Value of `LB_SERVICES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbService {
    /// The listener's number on this host: its slot in `LB_SERVICE_STATS`.
    pub id: u32,
    /// `LB_SVC_F_*`.
    pub flags: u32,
    /// The service's Maglev table: `LB_MAGLEV[table_off .. table_off +
    /// table_size]` (a prime size); 0: no backend takes new connections.
    pub table_off: u32,
    pub table_size: u32,
    /// A connection idle this long is forgotten (the next packet chooses
    /// again).
    pub idle_timeout_s: u32,
    /// The VIP port's network (VNI) and MAC: a VM on that network may
    /// address the VIP directly, any other through its router. VNI 0:
    /// not known here (a gateway host).
    pub vni: u32,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// `LbService::flags`: session persistence by source address: the backend
/// is chosen from a hash of the client address alone.
pub const LB_SVC_F_SOURCE_IP: u32 = 1;

/// Value of `LB_BACKENDS` (indexed by backend id, the values of
/// `LB_MAGLEV`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbBackend {
    pub ip: [u8; 4],
    /// Host byte order.
    pub port: u16,
    /// `LB_B_*`; 0: gone (its connections are reset).
    pub flags: u16,
    /// `LB_B_DRAINING`: `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC) after
    /// which its connections are reset.
    pub drain_until_ns: u64,
    /// Its listener's idle timeout: a connection idle this long is
    /// forgotten (here, so a known connection needs no listener lookup).
    pub idle_timeout_s: u32,
    /// The member's port: its network (VNI; 0: not known here) and MAC,
    /// the destination MAC of a VM on that network balanced to it.
    pub vni: u32,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// `LbBackend::flags`: healthy and enabled: in its service's table.
pub const LB_B_ACTIVE: u16 = 1;
/// `LbBackend::flags`: removed, disabled or weight 0: no new connections,
/// established ones continue until `drain_until_ns`.
pub const LB_B_DRAINING: u16 = 2;

/// Key of `LB_FLOWS` (client -> VIP, `remote` the VIP) and `LB_REV`
/// (the reply, `remote` the backend).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LbFlowKey {
    pub domain: u32,
    pub client: [u8; 4],
    pub remote: [u8; 4],
    /// Host byte order.
    pub client_port: u16,
    pub remote_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Value of `LB_FLOWS`: the backend a connection was given, and what it
/// sent (client to backend).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbFlow {
    pub backend: u32,
    pub service: u32,
    pub created_ns: u64,
    pub last_seen_ns: u64,
    pub packets: u64,
    pub bytes: u64,
}

/// Value of `LB_REV`: how a backend's reply is translated back, and what
/// the backend sent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbRev {
    pub vip: [u8; 4],
    /// Host byte order.
    pub vip_port: u16,
    pub _pad: u16,
    pub service: u32,
    pub backend: u32,
    pub last_seen_ns: u64,
    pub packets: u64,
    pub bytes: u64,
}

/// Key of `LB_PUBLIC_OUT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LbPublicKey {
    pub domain: u32,
    pub member: [u8; 4],
    /// Host byte order, both.
    pub member_port: u16,
    pub listener_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// VXLAN flags bit (a reserved bit, only ever set between Strato hosts):
/// a gateway host balanced this packet from the internet; the next two
/// header bytes hold the listener's port (big-endian), so the member's
/// host can answer as the listener.
pub const VXLAN_F_LB: u8 = 0x01;

/// Value of `LB_PUBLIC_OUT` and `LB_PUBLIC_FLOWS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbPublic {
    pub eip: [u8; 4],
    /// The listener's port (host byte order).
    pub port: u16,
    pub _pad: u16,
    /// The listener's number on this host (its counters).
    pub service: u32,
}

/// Per-CPU counters of a service (`LB_SERVICE_STATS`) or a backend
/// (`LB_BACKEND_STATS`). `in` is client to backend, `out` the replies
/// (the seed's "incoming" and "outgoing" traffic of a listener).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbStats {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    /// Connections given a backend.
    pub connections: u64,
    /// Packets answered with a reset or unreachable: no backend, no
    /// listener, drained.
    pub refused: u64,
}

impl LbStats {
    pub fn add(&mut self, o: &LbStats) {
        self.packets_in += o.packets_in;
        self.bytes_in += o.bytes_in;
        self.packets_out += o.packets_out;
        self.bytes_out += o.bytes_out;
        self.connections += o.connections;
        self.refused += o.refused;
    }
}

/// The hash that picks a connection's slot in its service's Maglev table
/// (the same function in the programs and in user space, so tests can
/// predict a choice). `source_only`: session persistence by client address.
#[inline(always)]
pub fn lb_hash(
    saddr: [u8; 4],
    daddr: [u8; 4],
    sport: u16,
    dport: u16,
    proto: u8,
    source_only: bool,
) -> u32 {
    let mut h = fmix32(u32::from_be_bytes(saddr) ^ 0x9e37_79b9);
    if !source_only {
        h = fmix32(h ^ u32::from_be_bytes(daddr));
        h = fmix32(h ^ ((sport as u32) << 16 | dport as u32) ^ ((proto as u32) << 8));
    }
    h
}

/// The bit of `LB_VIP_FILTER` for address `ip` in routing `domain`:
/// (word, mask).
#[inline(always)]
pub fn lb_vip_bit(domain: u32, ip: [u8; 4]) -> (u32, u64) {
    let h = fmix32(domain.wrapping_mul(0x9e37_79b9) ^ u32::from_be_bytes(ip));
    let bit = h & (maps::LB_VIP_FILTER_WORDS * 64 - 1);
    (bit / 64, 1u64 << (bit % 64))
}

/// MurmurHash3's finaliser: every input bit affects every output bit.
#[inline(always)]
pub fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

const _: () = assert!(core::mem::size_of::<IfStats>() == 80);
const _: () = assert!(core::mem::size_of::<LbServiceKey>() == 12);
const _: () = assert!(core::mem::size_of::<LbService>() == 32);
const _: () = assert!(maps::LB_VIP_FILTER_WORDS.is_power_of_two());
const _: () = assert!(core::mem::size_of::<LbBackend>() == 32);
const _: () = assert!(core::mem::size_of::<LbFlowKey>() == 20);
const _: () = assert!(core::mem::size_of::<LbFlow>() == 40);
const _: () = assert!(core::mem::size_of::<LbRev>() == 40);
const _: () = assert!(core::mem::size_of::<LbStats>() == 48);
const _: () = assert!(core::mem::size_of::<LbPublic>() == 12);
const _: () = assert!(core::mem::size_of::<LbPublicKey>() == 16);
const _: () = assert!(core::mem::size_of::<DropKey>() == 8);
const _: () = assert!(core::mem::size_of::<DropStats>() == 16);
const _: () = assert!(core::mem::size_of::<PortInfo>() == 44);
const _: () = assert!(core::mem::size_of::<PolicyAddrKey>() == 8);
const _: () = assert!(core::mem::size_of::<PolicyClass>() == 4);
const _: () = assert!(core::mem::size_of::<PolicyPortKey>() == 8);
const _: () = assert!(core::mem::size_of::<PolicyAllow>() == 4);
const _: () = assert!(core::mem::size_of::<CtKey>() == 20);
const _: () = assert!(core::mem::size_of::<CtEntry>() == 56);
const _: () = assert!(core::mem::size_of::<CtStats>() == 64);
const _: () = assert!(core::mem::size_of::<EpKey>() == 8);
const _: () = assert!(core::mem::size_of::<Endpoint>() == 28);
const _: () = assert!(core::mem::size_of::<RouteKey>() == 8);
const _: () = assert!(core::mem::size_of::<Route>() == 8);
const _: () = assert!(core::mem::size_of::<VniInfo>() == 8);
const _: () = assert!(core::mem::size_of::<MacKey>() == 12);
const _: () = assert!(core::mem::size_of::<AllowedKey>() == 8);
const _: () = assert!(core::mem::size_of::<AllowedMac>() == 8);
const _: () = assert!(core::mem::size_of::<HostInfo>() == 32);
const _: () = assert!(core::mem::size_of::<EipEntry>() == 20);
const _: () = assert!(core::mem::size_of::<EipOut>() == 8);
const _: () = assert!(core::mem::size_of::<SnatRouter>() == 8);
const _: () = assert!(core::mem::size_of::<QosKey>() == 8);
const _: () = assert!(core::mem::size_of::<NextHop>() == 32);
const _: () = assert!(core::mem::size_of::<NextHopKey>() == 8);
const _: () = assert!(core::mem::size_of::<QosBucket>() == 24);
const _: () = assert!(core::mem::size_of::<NatKey>() == 20);
const _: () = assert!(core::mem::size_of::<NatOut>() == 16);
const _: () = assert!(core::mem::size_of::<NatRevKey>() == 16);
const _: () = assert!(core::mem::size_of::<NatIn>() == 40);
const _: () = assert!(core::mem::size_of::<BareTarget>() == 20);
const _: () = assert!(core::mem::size_of::<BenchFrame>() == 256);

#[cfg(feature = "user")]
mod pod {
    #![allow(unsafe_code)]
    // SAFETY: all three are #[repr(C)], contain only fixed-width integers and
    // have no implicit padding (sizes asserted above), so any bit pattern is
    // a valid value and they can be copied to and from map memory.
    unsafe impl aya::Pod for super::IfStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DropKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DropStats {}
    // SAFETY: as above (explicit padding field, size asserted).
    unsafe impl aya::Pod for super::PortInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EpKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Endpoint {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RouteKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Route {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VniInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MacKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AllowedKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AllowedMac {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::HostInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BareTarget {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EipEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EipOut {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SnatRouter {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::QosKey {}
    // SAFETY: as above (explicit padding fields, size asserted).
    unsafe impl aya::Pod for super::NextHop {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NextHopKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::QosBucket {}
    // SAFETY: as above (explicit padding fields, sizes asserted).
    unsafe impl aya::Pod for super::NatKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NatOut {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NatRevKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NatIn {}
    unsafe impl aya::Pod for super::BenchFrame {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PolicyAddrKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PolicyClass {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PolicyPortKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PolicyAllow {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CtKey {}
    // SAFETY: as above (explicit padding fields, size asserted).
    unsafe impl aya::Pod for super::CtEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CtStats {}
    // SAFETY: as above (load balancer tables: explicit padding, sizes
    // asserted).
    unsafe impl aya::Pod for super::LbServiceKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LbService {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LbBackend {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LbFlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LbFlow {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LbRev {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LbStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LbPublic {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LbPublicKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reason_codes_are_dense_and_round_trip() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as u32, i as u32 + 1, "{r:?} out of order in ALL");
            assert_eq!(DropReason::from_code(*r as u32), Some(*r));
        }
        assert_eq!(DropReason::from_code(0), None);
        assert_eq!(DropReason::from_code(10_000), None);
    }

    #[test]
    fn labels_are_unique_snake_case() {
        for (i, a) in DropReason::ALL.iter().enumerate() {
            let l = a.label();
            assert!(
                l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()),
                "{l}"
            );
            for b in &DropReason::ALL[i + 1..] {
                assert_ne!(l, b.label());
            }
        }
    }
}
