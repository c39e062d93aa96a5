//! Security groups: the two-stage policy lookup tables (`POLICY_ADDR` /
//! `POLICY_HOST`: remote address -> class; `POLICY_PORT` / `POLICY_EXACT`:
//! class, protocol and port -> allow) and the direction bit of their keys.

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

// Layouts are an ABI between kernel and user space: pin them.
const _: () = assert!(core::mem::size_of::<PolicyAddrKey>() == 8);
const _: () = assert!(core::mem::size_of::<PolicyClass>() == 4);
const _: () = assert!(core::mem::size_of::<PolicyPortKey>() == 8);
const _: () = assert!(core::mem::size_of::<PolicyAllow>() == 4);

crate::pod!(PolicyAddrKey, PolicyClass, PolicyPortKey, PolicyAllow);
