//! Routing in a VPC: where each address lives (`ENDPOINTS`), the
//! routes of each routing domain (`ROUTES`), the TTL, and the flow hash
//! that spreads a flow's tunnelled packets.

use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::Key, HashMap, LpmTrie},
};
use dataplane_common::{maps, Endpoint, EpKey, Route, RouteKey};

use crate::base::{csum, ctx::Pkt, parse::ptr_at};

#[map]
pub static ENDPOINTS: HashMap<EpKey, Endpoint> = HashMap::with_max_entries(maps::ENDPOINTS_MAX, 0);

#[map]
pub static ROUTES: LpmTrie<RouteKey, Route> = LpmTrie::with_max_entries(maps::ROUTES_MAX, 0);

#[inline(always)]
pub fn endpoint(domain: u32, ip: [u8; 4]) -> Option<&'static Endpoint> {
    // SAFETY: map values stay valid for the program's run (RCU).
    unsafe { ENDPOINTS.get(&EpKey { domain, ip }) }
}

#[inline(always)]
pub fn route(domain: u32, ip: [u8; 4]) -> Option<&'static Route> {
    ROUTES.get(Key::new(
        64,
        RouteKey {
            domain: domain.to_be_bytes(),
            ip,
        },
    ))
}

#[inline(always)]
pub fn decrement_ttl(ip: &mut [u8; 20]) {
    let ttl = ip[8];
    let sum = u16::from_be_bytes([ip[10], ip[11]]);
    let old = u16::from_be_bytes([ttl, ip[9]]);
    let new = u16::from_be_bytes([ttl.wrapping_sub(1), ip[9]]);
    ip[8] = ttl.wrapping_sub(1);
    let c = csum::replace16(sum, old, new).to_be_bytes();
    ip[10] = c[0];
    ip[11] = c[1];
}

/// Entropy for the outer UDP source port: addresses and, when present, the
/// L4 ports of the inner packet.
#[inline(always)]
pub fn flow_hash<C: Pkt>(ctx: &C, ip: &[u8; 20], l4_off: usize) -> u32 {
    let mut h = u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]])
        ^ u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]).rotate_left(16)
        ^ ip[9] as u32;
    if l4_off != 0 {
        if let Some(p) = ptr_at::<_, [u8; 4]>(ctx, l4_off) {
            // SAFETY: bounds-checked.
            h ^= u32::from_ne_bytes(unsafe { *p });
        }
    }
    h ^= h >> 16;
    h = h.wrapping_mul(0x45d9_f3b);
    h ^ (h >> 16)
}
