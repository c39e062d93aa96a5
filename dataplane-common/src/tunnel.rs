//! The overlay: VXLAN constants, decapsulation's tables (`VNIS`, `MACS`)
//! and the underlay next-hop cache (`NEXTHOPS`).

/// The VXLAN UDP port (IANA).
pub const VXLAN_PORT: u16 = 4789;
/// Bytes VXLAN adds to a frame: outer Ethernet, IPv4, UDP and VXLAN headers.
pub const VXLAN_OVERHEAD: u16 = 14 + 20 + 8 + 8;

/// A `MACS` value: no port receives (the port is administratively down).
pub const MACS_DOWN: u32 = 0;

/// `VniInfo::flags`: the VNI of an external network (elastic IP traffic
/// between gateway hosts and the hosts of bound ports).
pub const VNI_F_EXTERNAL: u32 = 1;

/// `VniInfo::flags`: a VNI of a routing domain whose router's SNAT this
/// gateway host does: untranslated traffic from VMs arrives on it.
pub const VNI_F_SNAT: u32 = 2;

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

// Layouts are an ABI between kernel and user space: pin them.
const _: () = assert!(core::mem::size_of::<VniInfo>() == 8);
const _: () = assert!(core::mem::size_of::<MacKey>() == 12);
const _: () = assert!(core::mem::size_of::<NextHop>() == 32);
const _: () = assert!(core::mem::size_of::<NextHopKey>() == 8);

crate::pod!(VniInfo, MacKey, NextHop, NextHopKey);
