//! Router SNAT (port address translation) on the gateway host that does a
//! router's SNAT. VMs without an elastic IP send their internet traffic
//! untranslated over the overlay (their network's VNI) to that host; it
//! gives each flow the router's gateway address and a free port, and sends
//! it out of the external interface. Replies (arriving on the external
//! interface, or tunnelled from another gateway host that the internet's
//! ECMP chose) are translated back and tunnelled to the VM's host.
//!
//! Mappings depend on the remote endpoint, so one external port serves a
//! flow per remote address and port: `SNAT_IN` is keyed by the whole
//! translated flow. A new flow tries a few ports (from a hash of its key)
//! with `BPF_NOEXIST`; when all are taken it is dropped and counted as
//! `snat_exhausted`. The agent removes mappings idle past
//! `snat_timeout_secs`; both tables are LRU, so a full table evicts.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::generated::bpf_xdp_adjust_head,
    macros::map,
    maps::{HashMap, LruHashMap},
    programs::XdpContext,
};
use dataplane_common::{maps, DropReason, HostInfo, NatIn, NatKey, NatOut, NatRevKey, SnatRouter};

use crate::{
    base::{
        clock::now,
        csum,
        parse::{ptr_at, ptr_at_mut, ETH_HLEN, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
        verdict::Verdict,
    },
    net::{
        fib::to_external,
        nat::{self, is_icmp_error, word},
        routing::{decrement_ttl, flow_hash},
        tunnel::encap,
    },
};

#[map]
static SNAT_ROUTERS: HashMap<u32, SnatRouter> =
    HashMap::with_max_entries(maps::SNAT_ROUTERS_MAX, 0);

#[map]
static SNAT_OUT: LruHashMap<NatKey, NatOut> = LruHashMap::with_max_entries(maps::SNAT_MAX, 0);

#[map]
static SNAT_IN: LruHashMap<NatRevKey, NatIn> = LruHashMap::with_max_entries(maps::SNAT_MAX, 0);

/// First external port handed out (below are the well-known ports).
const PORT_BASE: u32 = 1024;

const PORT_SPAN: u32 = 65536 - PORT_BASE;

/// Ports a new flow tries before it counts as exhaustion.
const TRIES: u32 = 8;

/// The (source, destination) ports of the TCP/UDP packet at `l4`, or for an
/// ICMP echo request (`ty` 8) / reply (0) of that type its identifier in
/// the port on the inside (`(id, 0)` outbound, `(0, id)` inbound).
#[inline(always)]
fn flow_ports(ctx: &XdpContext, l4: usize, proto: u8, echo: u8) -> Result<(u16, u16), DropReason> {
    match proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            let Some(p) = ptr_at::<_, [u8; 4]>(ctx, l4) else {
                return Err(DropReason::TruncatedUdp);
            };
            // SAFETY: bounds-checked.
            let p = unsafe { &*p };
            Ok((
                u16::from_be_bytes([p[0], p[1]]),
                u16::from_be_bytes([p[2], p[3]]),
            ))
        }
        IPPROTO_ICMP => {
            let Some(p) = ptr_at::<_, [u8; 8]>(ctx, l4) else {
                return Err(DropReason::TruncatedIcmp);
            };
            // SAFETY: bounds-checked.
            let p = unsafe { &*p };
            if p[0] != echo || p[1] != 0 {
                return Err(DropReason::SnatUnsupported);
            }
            let id = u16::from_be_bytes([p[4], p[5]]);
            Ok(if echo == 8 { (id, 0) } else { (0, id) })
        }
        _ => Err(DropReason::SnatUnsupported),
    }
}

/// Rewrites the inside port of the packet at `l4` (`src`: its source port,
/// else its destination port; ICMP echo: the identifier) with checksums.
#[inline(always)]
fn rewrite_port(
    ctx: &XdpContext,
    l4: usize,
    proto: u8,
    src: bool,
    to: u16,
) -> Result<(), DropReason> {
    match proto {
        IPPROTO_TCP => rewrite_in::<18>(ctx, l4, if src { 0 } else { 2 }, 16, false, to),
        IPPROTO_UDP => rewrite_in::<8>(ctx, l4, if src { 0 } else { 2 }, 6, true, to),
        _ => rewrite_in::<8>(ctx, l4, 4, 2, false, to),
    }
}

/// The 16-bit field at `at` of the `N`-byte header at `l4` becomes `to`;
/// the checksum at `sum_at` follows (`udp`: 0 means none, and stays).
#[inline(always)]
fn rewrite_in<const N: usize>(
    ctx: &XdpContext,
    l4: usize,
    at: usize,
    sum_at: usize,
    udp: bool,
    to: u16,
) -> Result<(), DropReason> {
    let Some(h) = ptr_at_mut::<_, [u8; N]>(ctx, l4) else {
        return Err(DropReason::TruncatedTcp);
    };
    // SAFETY: bounds-checked.
    let h = unsafe { &mut *h };
    let old = u16::from_be_bytes([h[at], h[at + 1]]);
    let sum = u16::from_be_bytes([h[sum_at], h[sum_at + 1]]);
    if !(udp && sum == 0) {
        let mut c = csum::replace16(sum, old, to);
        if udp && c == 0 {
            c = 0xffff;
        }
        let c = c.to_be_bytes();
        h[sum_at] = c[0];
        h[sum_at + 1] = c[1];
    }
    let t = to.to_be_bytes();
    h[at] = t[0];
    h[at + 1] = t[1];
    Ok(())
}

#[inline(always)]
fn key_hash(k: &NatKey) -> u32 {
    let mut h = k.domain
        ^ u32::from_ne_bytes(k.inside).rotate_left(7)
        ^ u32::from_ne_bytes(k.remote).rotate_left(13)
        ^ ((k.inside_port as u32) << 16 | k.remote_port as u32)
        ^ k.proto as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846c_a68b);
    h ^ (h >> 16)
}

/// A VM's packet tunnelled to this gateway host on its network's VNI
/// (`off`: the inner frame): translated to the router's address and a port,
/// then out of the external interface.
#[inline(always)]
pub fn snat_out(ctx: &XdpContext, off: usize, domain: u32, vni: u32, host: &HostInfo) -> Verdict {
    // SAFETY: map values stay valid for the program's run.
    let Some(router) = (unsafe { SNAT_ROUTERS.get(&domain) }) else {
        return Verdict::Drop(DropReason::NotSnatGateway);
    };
    let ext_ip = router.ext_ip;
    let l3 = off + ETH_HLEN;
    // The outer source: the VM's host.
    let Some(outer) = ptr_at::<_, [u8; 4]>(ctx, ETH_HLEN + 12) else {
        return Verdict::Drop(DropReason::TruncatedIpv4);
    };
    // SAFETY: bounds-checked.
    let underlay = unsafe { *outer };
    let Some(h) = ptr_at::<_, [u8; 34]>(ctx, off) else {
        return Verdict::Drop(DropReason::TruncatedIpv4);
    };
    // SAFETY: bounds-checked: the inner Ethernet and IPv4 headers.
    let h = unsafe { &*h };
    let eth = &h[..12];
    let ip = &h[14..34];
    if ip[0] != 0x45 {
        return Verdict::Drop(DropReason::SnatUnsupported);
    }
    if (ip[6] & 0x3f) != 0 || ip[7] != 0 {
        return Verdict::Drop(DropReason::SnatFragment);
    }
    let proto = ip[9];
    let inside = [ip[12], ip[13], ip[14], ip[15]];
    let remote = [ip[16], ip[17], ip[18], ip[19]];
    let l4 = l3 + 20;
    let (inside_port, remote_port) = match flow_ports(ctx, l4, proto, 8) {
        Ok(p) => p,
        Err(r) => return Verdict::Drop(r),
    };
    let key = NatKey {
        domain,
        inside,
        remote,
        inside_port,
        remote_port,
        proto,
        _pad: [0; 3],
    };
    let t = now();
    let mut back = NatIn {
        domain,
        inside,
        underlay,
        vni,
        inside_port,
        _pad: 0,
        // The sender's host routed it: source the VM, destination its router.
        vm_mac: [eth[6], eth[7], eth[8], eth[9], eth[10], eth[11]],
        gw_mac: [eth[0], eth[1], eth[2], eth[3], eth[4], eth[5]],
        last_seen: t,
    };
    let mut rev = NatRevKey {
        ext_ip,
        remote,
        ext_port: 0,
        remote_port,
        proto,
        _pad: [0; 3],
    };
    let ext_port = match SNAT_OUT.get_ptr_mut(&key) {
        Some(o) => {
            // SAFETY: a live map value.
            let o = unsafe { &mut *o };
            o.last_seen = t;
            rev.ext_port = o.ext_port;
            // Keep the way back fresh (and there: LRU may have evicted it).
            match SNAT_IN.get_ptr_mut(&rev) {
                // SAFETY: a live map value.
                Some(b) => unsafe { (*b).last_seen = t },
                None => {
                    let _ = SNAT_IN.insert(&rev, &back, 0);
                }
            }
            rev.ext_port
        }
        None => {
            let h = key_hash(&key);
            let mut found = 0u16;
            let mut i = 0u32;
            while i < TRIES {
                let p = (PORT_BASE + (h.wrapping_add(i.wrapping_mul(40_503)) % PORT_SPAN)) as u16;
                rev.ext_port = p;
                back.last_seen = t;
                if SNAT_IN.insert(&rev, &back, BPF_NOEXIST as u64).is_ok() {
                    found = p;
                    break;
                }
                i += 1;
            }
            if found == 0 {
                return Verdict::Drop(DropReason::SnatExhausted);
            }
            let out = NatOut {
                ext_ip,
                ext_port: found,
                _pad: 0,
                last_seen: t,
            };
            if SNAT_OUT.insert(&key, &out, 0).is_err() {
                let _ = SNAT_IN.remove(&rev);
                return Verdict::Drop(DropReason::SnatExhausted);
            }
            found
        }
    };
    if let Err(r) = nat::translate(ctx, l3, nat::SRC, ext_ip) {
        return Verdict::Drop(r);
    }
    if let Err(r) = rewrite_port(ctx, l4, proto, true, ext_port) {
        return Verdict::Drop(r);
    }
    to_external(ctx, host, off)
}

/// A reply to a router's SNAT address, the frame at offset 0 (arrived on
/// the external interface, or its tunnel already removed): translated back
/// and tunnelled to the VM's host.
#[inline(always)]
pub fn snat_in(ctx: &XdpContext) -> Verdict {
    let l3 = ETH_HLEN;
    let Some(ip) = ptr_at::<_, [u8; 20]>(ctx, l3) else {
        return Verdict::Drop(DropReason::TruncatedIpv4);
    };
    // SAFETY: bounds-checked.
    let ip = unsafe { &*ip };
    if ip[0] != 0x45 {
        return Verdict::Drop(DropReason::SnatUnsupported);
    }
    if (ip[6] & 0x3f) != 0 || ip[7] != 0 {
        return Verdict::Drop(DropReason::SnatFragment);
    }
    if ip[8] <= 1 {
        return Verdict::Drop(DropReason::TtlExceeded);
    }
    let proto = ip[9];
    let remote = [ip[12], ip[13], ip[14], ip[15]];
    let ext_ip = [ip[16], ip[17], ip[18], ip[19]];
    let l4 = l3 + 20;
    // An ICMP error about a translated flow (path MTU discovery, port
    // unreachable): the flow is the one it quotes.
    let quoted = if proto == IPPROTO_ICMP {
        match ptr_at::<_, [u8; 1]>(ctx, l4) {
            // SAFETY: bounds-checked.
            Some(t) => is_icmp_error(unsafe { (*t)[0] }),
            None => return Verdict::Drop(DropReason::TruncatedIcmp),
        }
    } else {
        false
    };
    let rev = if quoted {
        match quoted_key(ctx, l4, ext_ip) {
            Ok(k) => k,
            Err(r) => return Verdict::Drop(r),
        }
    } else {
        let (remote_port, ext_port) = match flow_ports(ctx, l4, proto, 0) {
            Ok(p) => p,
            Err(r) => return Verdict::Drop(r),
        };
        NatRevKey {
            ext_ip,
            remote,
            ext_port,
            remote_port,
            proto,
            _pad: [0; 3],
        }
    };
    let Some(b) = SNAT_IN.get_ptr_mut(&rev) else {
        return Verdict::Drop(DropReason::SnatNoFlow);
    };
    // SAFETY: a live map value; copied out before the packet changes.
    let b = unsafe { &mut *b };
    b.last_seen = now();
    let (inside, inside_port, vni, underlay, vm_mac, gw_mac) = (
        b.inside,
        b.inside_port,
        b.vni,
        b.underlay,
        b.vm_mac,
        b.gw_mac,
    );
    if let Err(r) = nat::translate(ctx, l3, nat::DST, inside) {
        return Verdict::Drop(r);
    }
    let r = if quoted {
        rewrite_quoted_port(ctx, l4, rev.proto, inside_port)
    } else {
        rewrite_port(ctx, l4, proto, false, inside_port)
    };
    if let Err(r) = r {
        return Verdict::Drop(r);
    }
    let (Some(eth), Some(ip)) = (
        ptr_at_mut::<_, [u8; 14]>(ctx, 0),
        ptr_at_mut::<_, [u8; 20]>(ctx, l3),
    ) else {
        return Verdict::Drop(DropReason::TruncatedIpv4);
    };
    // SAFETY: both bounds-checked.
    let (eth, ip) = unsafe { (&mut *eth, &mut *ip) };
    decrement_ttl(ip);
    let mut i = 0;
    while i < 6 {
        eth[i] = vm_mac[i];
        eth[6 + i] = gw_mac[i];
        i += 1;
    }
    let hash = flow_hash(ctx, ip, l4);
    match encap(ctx, vni, underlay, hash) {
        Ok(out) => Verdict::Redirect(out),
        Err(r) => Verdict::Drop(r),
    }
}

/// The translated flow an ICMP error (header at `l4`) quotes: the packet
/// the VM sent, as it left (source `ext_ip` and the external port).
#[inline(always)]
fn quoted_key(ctx: &XdpContext, l4: usize, ext_ip: [u8; 4]) -> Result<NatRevKey, DropReason> {
    let Some(m) = ptr_at::<_, [u8; 36]>(ctx, l4) else {
        return Err(DropReason::TruncatedIcmp);
    };
    // SAFETY: bounds-checked: ICMP header, quoted IPv4 header, 8 bytes.
    let m = unsafe { &*m };
    if m[8] != 0x45 || m[20..24] != ext_ip || (m[14] & 0x1f) != 0 || m[15] != 0 {
        return Err(DropReason::SnatUnsupported);
    }
    let proto = m[17];
    let (ext_port, remote_port) = match proto {
        IPPROTO_TCP | IPPROTO_UDP => (word(m, 28), word(m, 30)),
        IPPROTO_ICMP if m[28] == 8 => (word(m, 32), 0),
        _ => return Err(DropReason::SnatUnsupported),
    };
    Ok(NatRevKey {
        ext_ip,
        remote: [m[24], m[25], m[26], m[27]],
        ext_port,
        remote_port,
        proto,
        _pad: [0; 3],
    })
}

/// In an ICMP error (header at `l4`) quoting a translated packet of
/// protocol `proto`: its source port (ICMP echo: identifier) back to `to`,
/// the quoted L4 checksum when the quote holds it, and the ICMP checksum.
#[inline(always)]
fn rewrite_quoted_port(ctx: &XdpContext, l4: usize, proto: u8, to: u16) -> Result<(), DropReason> {
    // Port at 28 (ICMP: identifier at 32); quoted checksum: UDP at 34,
    // inner ICMP at 30, TCP at 44 (only when the quote reaches it).
    let (at, sum_at) = match proto {
        IPPROTO_TCP => (28, 44),
        IPPROTO_UDP => (28, 34),
        _ => (32, 30),
    };
    if let Some(m) = ptr_at_mut::<_, [u8; 46]>(ctx, l4) {
        // SAFETY: bounds-checked.
        let m = unsafe { &mut *m };
        quoted_port_in(m, at, sum_at, proto == IPPROTO_UDP, to);
        return Ok(());
    }
    let Some(m) = ptr_at_mut::<_, [u8; 36]>(ctx, l4) else {
        return Err(DropReason::TruncatedIcmp);
    };
    // SAFETY: bounds-checked.
    let m = unsafe { &mut *m };
    // A short quote: the TCP checksum is not in it (nothing to update).
    let sum_at = if sum_at + 2 <= 36 { sum_at } else { 0 };
    quoted_port_in(m, at, sum_at, proto == IPPROTO_UDP, to);
    Ok(())
}

#[inline(always)]
fn quoted_port_in<const N: usize>(m: &mut [u8; N], at: usize, sum_at: usize, udp: bool, to: u16) {
    let mut icmp = word(m, 2);
    let old = word(m, at);
    icmp = csum::replace16(icmp, old, to);
    let t = to.to_be_bytes();
    m[at] = t[0];
    m[at + 1] = t[1];
    if sum_at != 0 {
        let sum = word(m, sum_at);
        if !(udp && sum == 0) {
            let mut new = csum::replace16(sum, old, to);
            if udp && new == 0 {
                new = 0xffff;
            }
            icmp = csum::replace16(icmp, sum, new);
            let n = new.to_be_bytes();
            m[sum_at] = n[0];
            m[sum_at + 1] = n[1];
        }
    }
    let c = icmp.to_be_bytes();
    m[2] = c[0];
    m[3] = c[1];
}

/// [`snat_in`] for a frame tunnelled from another gateway host: the outer
/// headers (`off` bytes) go first.
#[inline(always)]
pub fn snat_in_tunnelled(ctx: &XdpContext, off: usize) -> Verdict {
    // SAFETY: shrinking the head by the outer headers, checked by the caller.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, off as i32) } != 0 {
        return Verdict::Drop(DropReason::AdjustFailed);
    }
    snat_in(ctx)
}
