//! The host record (`HOST`): underlay address, uplink and, on gateway
//! hosts, the external interface.

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

// Layouts are an ABI between kernel and user space: pin them.
const _: () = assert!(core::mem::size_of::<HostInfo>() == 32);

crate::pod!(HostInfo);
