//! Router SNAT (port address translation) on a gateway host: the routers
//! it translates for (`SNAT_ROUTERS`) and the flow tables both ways
//! (`SNAT_OUT`, `SNAT_IN`).

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

// Layouts are an ABI between kernel and user space: pin them.
const _: () = assert!(core::mem::size_of::<SnatRouter>() == 8);
const _: () = assert!(core::mem::size_of::<NatKey>() == 20);
const _: () = assert!(core::mem::size_of::<NatOut>() == 16);
const _: () = assert!(core::mem::size_of::<NatRevKey>() == 16);
const _: () = assert!(core::mem::size_of::<NatIn>() == 40);

crate::pod!(SnatRouter, NatKey, NatOut, NatRevKey, NatIn);
