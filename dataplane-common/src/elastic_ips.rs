//! Elastic IPs (distributed 1:1 NAT): the inbound (`EIPS`) and outbound
//! (`EIP_OUT`) bindings and their bandwidth limits (`EIP_QOS`).

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

/// Value of `EIP_OUT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EipOut {
    pub eip: [u8; 4],
    pub flags: u32,
}

// Layouts are an ABI between kernel and user space: pin them.
const _: () = assert!(core::mem::size_of::<EipEntry>() == 20);
const _: () = assert!(core::mem::size_of::<EipOut>() == 8);
const _: () = assert!(core::mem::size_of::<QosKey>() == 8);
const _: () = assert!(core::mem::size_of::<QosBucket>() == 24);

crate::pod!(EipEntry, EipOut, QosKey, QosBucket);
