//! Counters: why a packet was dropped ([`DropReason`], one list for the
//! kernel, the agent's metrics and `stratoctl`), per-interface counters
//! (`IF_STATS`) and per-(interface, reason) drop counters (`DROP_STATS`).

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
    /// A new connection to a listener at its `connection_limit` (the
    /// region-wide count of its open connections, as the controller sums
    /// the hosts' reports): TCP is answered with a reset, UDP with an
    /// ICMP port unreachable. Established connections are not affected.
    LbConnectionLimit = 67,
}

impl DropReason {
    /// Every reason, in numeric order.
    pub const ALL: [DropReason; 67] = [
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
        DropReason::LbConnectionLimit,
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
            DropReason::LbConnectionLimit => "lb_connection_limit",
        }
    }

    /// The reason with this numeric code, if any.
    pub fn from_code(code: u32) -> Option<DropReason> {
        DropReason::ALL.iter().copied().find(|r| *r as u32 == code)
    }
}

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
const _: () = assert!(core::mem::size_of::<IfStats>() == 80);
const _: () = assert!(core::mem::size_of::<DropKey>() == 8);
const _: () = assert!(core::mem::size_of::<DropStats>() == 16);

crate::pod!(IfStats, DropKey, DropStats);

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
