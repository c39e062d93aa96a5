//! The L4 load balancer: listeners (`LB_SERVICES`), backends and their
//! Maglev tables, connection and reply tables, public listeners, the VIP
//! filter and counters, and the hashes shared by kernel and user space.

use crate::maps;

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
/// `LbService::flags`: the listener is at its connection limit: new
/// connections are refused ([`crate::DropReason::LbConnectionLimit`]),
/// established ones go on.
pub const LB_SVC_F_FULL: u32 = 2;

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

// Layouts are an ABI between kernel and user space: pin them.
const _: () = assert!(core::mem::size_of::<LbServiceKey>() == 12);
const _: () = assert!(core::mem::size_of::<LbService>() == 32);
const _: () = assert!(core::mem::size_of::<LbBackend>() == 32);
const _: () = assert!(core::mem::size_of::<LbFlowKey>() == 20);
const _: () = assert!(core::mem::size_of::<LbFlow>() == 40);
const _: () = assert!(core::mem::size_of::<LbRev>() == 40);
const _: () = assert!(core::mem::size_of::<LbStats>() == 48);
const _: () = assert!(core::mem::size_of::<LbPublic>() == 12);
const _: () = assert!(core::mem::size_of::<LbPublicKey>() == 16);
const _: () = assert!(maps::LB_VIP_FILTER_WORDS.is_power_of_two());

crate::pod!(
    LbServiceKey,
    LbService,
    LbBackend,
    LbFlowKey,
    LbFlow,
    LbRev,
    LbStats,
    LbPublic,
    LbPublicKey
);
