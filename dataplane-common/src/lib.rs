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
    /// Per-CPU hash: interface index -> [`super::IfStats`].
    pub const IF_STATS: &str = "IF_STATS";
    /// Per-CPU hash: [`super::DropKey`] -> [`super::DropStats`].
    pub const DROP_STATS: &str = "DROP_STATS";
    /// Hash: ifindex of a VM port's tap -> [`super::PortInfo`], written by the
    /// agent from the compiled configuration.
    pub const PORTS: &str = "PORTS";
    /// Capacity of [`PORTS`]: VM ports on one host.
    pub const PORTS_MAX: u32 = 4096;
    /// Capacity of [`IF_STATS`]: interfaces one host can count.
    pub const IF_STATS_MAX: u32 = 8192;
    /// Capacity of [`DROP_STATS`]: (interface, reason) pairs one host can count.
    pub const DROP_STATS_MAX: u32 = 16384;
}

/// Program names (the entry-point function names in `dataplane-ebpf`).
pub mod programs {
    /// XDP program attached to a host's uplink (underlay NIC).
    pub const UPLINK: &str = "strato_uplink";
    /// XDP program attached to a VM port (the host end of its veth "tap").
    pub const PORT: &str = "strato_port";
    /// Reference program that only returns XDP_PASS: the floor benchmarks
    /// compare every path against. Never attached to an interface.
    pub const FLOOR: &str = "strato_floor";
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
}

impl DropReason {
    /// Every reason, in numeric order.
    pub const ALL: [DropReason; 19] = [
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
    /// Prefix length of that address's subnet.
    pub prefix_len: u8,
    pub _pad: [u8; 3],
}

/// `PortInfo::flags`: anti-spoofing applies.
pub const PORT_F_SECURITY: u32 = 1;
/// `PortInfo::flags`: administratively up.
pub const PORT_F_ADMIN_UP: u32 = 2;

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
    /// Frames passed to the kernel stack.
    pub passed: u64,
    /// Frames dropped (the reason is counted in `DROP_STATS`).
    pub dropped: u64,
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
const _: () = assert!(core::mem::size_of::<IfStats>() == 64);
const _: () = assert!(core::mem::size_of::<DropKey>() == 8);
const _: () = assert!(core::mem::size_of::<DropStats>() == 16);
const _: () = assert!(core::mem::size_of::<PortInfo>() == 24);

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
