//! VM ports: the port record (`PORTS`, `PORT_INDEX`) and the addresses a
//! port may send from besides its own (`ALLOWED`, anti-spoofing).

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

// Layouts are an ABI between kernel and user space: pin them.
const _: () = assert!(core::mem::size_of::<PortInfo>() == 44);
const _: () = assert!(core::mem::size_of::<AllowedKey>() == 8);
const _: () = assert!(core::mem::size_of::<AllowedMac>() == 8);

crate::pod!(PortInfo, AllowedKey, AllowedMac);
