//! The L4 load balancer, distributed: a VM's packet to a listener's VIP is
//! translated on the VM's own host (east-west, like Cilium's kube-proxy
//! replacement), before any security group sees it.
//!
//! The port pipeline finds the destination is a VIP (`EP_VIP`) and
//! tail-calls the port path's load balancer tail (`paths::port::lb_tail`): the listener (`LB_SERVICES`: domain, VIP, port,
//! protocol) gives a Maglev table; a connection already known
//! (`LB_FLOWS`) keeps its backend while that backend is active or
//! draining; a new one hashes its 5-tuple (or the client address alone,
//! for session persistence) into the table. The destination address, port
//! and MAC become the backend's, and the packet re-enters the port pipeline
//! (`TAIL_PORT`), which routes it, applies the security groups to it as
//! sent to the backend, and tracks it.
//!
//! Replies are translated back where they reach the client: on the uplink
//! after decapsulation ([`reply`]), or for a member on the same host in the
//! member's pipeline tail (`paths::port::lb_reply_tail`). `LB_REV` holds the VIP per
//! (client, backend) flow.
//!
//! No backend (all down, disabled or weight 0), no listener on the port, or
//! a connection drained past its timeout: TCP is answered with a reset,
//! UDP with an ICMP port unreachable. Never a black hole.

use aya_ebpf::programs::XdpContext;
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use dataplane_common::{
    lb_hash, lb_vip_bit, maps, DropReason, EipEntry, LbBackend, LbFlow, LbFlowKey, LbPublic,
    LbPublicKey, LbRev, LbService, LbServiceKey, LbStats, PortInfo, EP_LOCAL, EP_REMOTE,
    LB_B_ACTIVE, LB_B_DRAINING, LB_SVC_F_FULL, LB_SVC_F_SOURCE_IP, PORT_F_ADMIN_UP,
    PORT_F_SECURITY, VXLAN_F_LB,
};

use crate::{
    base::{
        addr::{ip_eq, mac_eq, mac_zero},
        clock, csum,
        ctx::Pkt,
        parse::{
            ptr_at, ptr_at_mut, ETH_HLEN, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_FIN, TCP_RST,
            TCP_SYN,
        },
        scratch::{scratch, LbScratch},
        verdict::Verdict,
    },
    net::{
        icmp::icmp_error,
        nat,
        port::port,
        routing::{decrement_ttl, endpoint, flow_hash},
        tunnel::encap,
    },
};

#[map]
static LB_SERVICES: HashMap<LbServiceKey, LbService> =
    HashMap::with_max_entries(maps::LB_SERVICES_MAX, 0);

#[map]
static LB_BACKENDS: Array<LbBackend> = Array::with_max_entries(maps::LB_BACKENDS_MAX, 0);

#[map]
static LB_MAGLEV: Array<u32> = Array::with_max_entries(maps::LB_MAGLEV_MAX, 0);

#[map]
static LB_FLOWS: LruHashMap<LbFlowKey, LbFlow> =
    LruHashMap::with_max_entries(maps::LB_FLOWS_MAX, 0);

#[map]
static LB_REV: LruHashMap<LbFlowKey, LbRev> = LruHashMap::with_max_entries(maps::LB_FLOWS_MAX, 0);

#[map]
static LB_PUBLIC_OUT: HashMap<LbPublicKey, LbPublic> =
    HashMap::with_max_entries(maps::LB_PUBLIC_OUT_MAX, 0);

#[map]
static LB_PUBLIC_FLOWS: LruHashMap<LbFlowKey, LbPublic> =
    LruHashMap::with_max_entries(maps::LB_FLOWS_MAX, 0);

#[map]
static LB_VIP_FILTER: Array<u64> = Array::with_max_entries(maps::LB_VIP_FILTER_WORDS, 0);

#[map]
static LB_SERVICE_STATS: PerCpuArray<LbStats> =
    PerCpuArray::with_max_entries(maps::LB_SERVICES_MAX, 0);

#[map]
static LB_BACKEND_STATS: PerCpuArray<LbStats> =
    PerCpuArray::with_max_entries(maps::LB_BACKENDS_MAX, 0);

#[inline(always)]
fn stats(map: &PerCpuArray<LbStats>, i: u32) -> Option<&'static mut LbStats> {
    // SAFETY: per-CPU value owned by this CPU for the program's run.
    map.get_ptr_mut(i).map(|p| unsafe { &mut *p })
}

/// What the translation needs of a packet: addresses, ports, TCP flags.
struct Tuple {
    saddr: [u8; 4],
    daddr: [u8; 4],
    sport: u16,
    dport: u16,
    proto: u8,
    flags: u8,
    ttl: u8,
    l4: usize,
}

/// The tuple of the IPv4 packet at `l3`; `None` for anything but a whole
/// (or first-fragment-free) TCP or UDP packet.
#[inline(always)]
fn tuple<C: Pkt>(ctx: &C, l3: usize) -> Option<Tuple> {
    let ip = ptr_at::<_, [u8; 20]>(ctx, l3)?;
    // SAFETY: bounds-checked.
    let ip = unsafe { &*ip };
    let proto = ip[9];
    if (proto != IPPROTO_TCP && proto != IPPROTO_UDP) || (ip[6] & 0x3f) != 0 || ip[7] != 0 {
        return None;
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    if ihl < 20 {
        return None;
    }
    let l4 = l3 + (ihl & 0x3c);
    let p = ptr_at::<_, [u8; 14]>(ctx, l4);
    let (sport, dport, flags) = match p {
        // SAFETY: bounds-checked.
        Some(p) => unsafe {
            let p = &*p;
            let f = if proto == IPPROTO_TCP { p[13] } else { 0 };
            (
                u16::from_be_bytes([p[0], p[1]]),
                u16::from_be_bytes([p[2], p[3]]),
                f,
            )
        },
        None => {
            // A UDP header is 8 bytes.
            let p = ptr_at::<_, [u8; 8]>(ctx, l4)?;
            // SAFETY: bounds-checked.
            let p = unsafe { &*p };
            if proto != IPPROTO_UDP {
                return None;
            }
            (
                u16::from_be_bytes([p[0], p[1]]),
                u16::from_be_bytes([p[2], p[3]]),
                0,
            )
        }
    };
    Some(Tuple {
        saddr: [ip[12], ip[13], ip[14], ip[15]],
        daddr: [ip[16], ip[17], ip[18], ip[19]],
        sport,
        dport,
        proto,
        flags,
        ttl: ip[8],
        l4,
    })
}

/// May a connection on `b` go on at `now`?
#[inline(always)]
fn usable(b: &LbBackend, now: u64) -> bool {
    b.flags & LB_B_ACTIVE != 0 || (b.flags & LB_B_DRAINING != 0 && now < b.drain_until_ns)
}

/// Chooses (or finds) the packet's backend and rewrites its destination
/// to it. `Err`: the verdict instead (a refusal answered, or a drop).
#[inline(always)]
pub fn to_backend<C: Pkt>(ctx: &C, port: &PortInfo, len: u64) -> Result<(), Verdict> {
    let Some(t) = tuple(ctx, ETH_HLEN) else {
        return Err(Verdict::Drop(DropReason::LbUnsupported));
    };
    let Some(s) = lb_scratch() else {
        return Err(Verdict::Drop(DropReason::NoScratch));
    };
    let b = match select(port.domain, t.daddr, &t, len, true, s) {
        Ok(c) => c,
        Err(r) => return Err(refuse(ctx, port, &t, r)),
    };
    to_member(ctx, port, &t, b).map_err(Verdict::Drop)
}

/// Whether a VM's frame may be to a VIP: IPv4 from a known port, its
/// destination's bit set in `LB_VIP_FILTER`. Two array reads and a hash
/// of a few instructions, inlined before the call to [`port_balance`]:
/// what every other frame pays for the load balancer.
#[inline(always)]
pub fn may_balance<C: Pkt>(ctx: &C) -> Option<&'static PortInfo> {
    // A tagged frame (tag in the sk_buff's metadata at TC; in the data the
    // ethertype check below refuses it) is the pipeline's to drop.
    if ctx.vlan_tagged() {
        return None;
    }
    let port = port(ctx.ingress_ifindex())?;
    let h = ptr_at::<_, [u8; 34]>(ctx, 0)?;
    // SAFETY: bounds-checked.
    let h = unsafe { &*h };
    if h[12] != 0x08 || h[13] != 0x00 {
        return None;
    }
    let (word, bit) = lb_vip_bit(port.domain, [h[30], h[31], h[32], h[33]]);
    match LB_VIP_FILTER.get(word) {
        Some(w) if *w & bit != 0 => Some(port),
        _ => None,
    }
}

/// The load balancer in front of the port pipeline, for every frame a VM
/// sends: a packet to a listener's VIP gets its connection's backend, or a
/// new one by Maglev, and its destination address, port and MAC become the
/// backend's (the MAC as the VM would have sent it: the backend's own on
/// the VM's network, else the router's). The pipeline then decides
/// everything for the backend, in the same program run: routing, security
/// groups, connection tracking, delivery.
///
/// Only what is plainly balanced is done here: a unicast IPv4 TCP or UDP
/// packet from the port's own addresses (when port security is on), to a
/// VIP whose bit is set in `LB_VIP_FILTER` ([`may_balance`], the caller),
/// addressed as the VIP's port would be (its MAC on its network, or
/// routed). Anything else, refusals
/// included, is left untouched with no table changed: the pipeline finds
/// the VIP (`EP_VIP`) and the tail [`port_lb`] answers it.
///
/// A function of its own (a BPF-to-BPF call, not inlined), called before
/// the pipeline: whichever way it returns, the pipeline starts from the
/// same state, so the verifier checks the pipeline once, not once per way
/// through the load balancer.
#[inline(never)]
pub fn port_balance<C: Pkt>(ctx: &C, port: &PortInfo) {
    let Some(s) = lb_scratch() else {
        return;
    };
    if port.flags & PORT_F_ADMIN_UP == 0 {
        return;
    }
    let Some(eth) = ptr_at::<_, [u8; 14]>(ctx, 0) else {
        return;
    };
    // SAFETY: bounds-checked.
    let eth = unsafe { &*eth };
    if eth[0] & 1 != 0 {
        return;
    }
    let dmac = [eth[0], eth[1], eth[2], eth[3], eth[4], eth[5]];
    let smac = [eth[6], eth[7], eth[8], eth[9], eth[10], eth[11]];
    let Some(t) = tuple(ctx, ETH_HLEN) else {
        return;
    };
    if port.flags & PORT_F_SECURITY != 0
        && !(mac_eq(&smac, &port.mac) && ip_eq(&t.saddr, &port.ipv4))
    {
        return;
    }
    let len = ctx.len();
    let now = clock::now();
    let b = match known(port.domain, t.daddr, &t, len, now, s) {
        Known::Goes(b) => b,
        Known::Drained => return,
        Known::New => {
            let Some(svc) = service(port.domain, t.daddr, &t, s) else {
                return;
            };
            // Addressed to the VIP as to its port: switched on the VIP's
            // own network, or routed by the sender's router.
            let routed = !mac_zero(&port.gw_mac) && mac_eq(&dmac, &port.gw_mac);
            if !(routed && t.ttl > 1 || !routed && svc.vni == port.vni && mac_eq(&dmac, &svc.mac)) {
                return;
            }
            match open(svc, port.domain, t.daddr, &t, len, true, now, s) {
                Ok(b) => b,
                Err(_) => return,
            }
        }
    };
    // A rewrite cannot fail after `tuple`; the pipeline drops what is left.
    let _ = to_member(ctx, port, &t, b);
}

/// This CPU's load balancer scratch, for the programs that do not hold
/// the whole scratch already.
#[inline(always)]
fn lb_scratch() -> Option<&'static mut LbScratch> {
    scratch().map(|s| &mut s.lb)
}

/// The backend of the connection `t` to the listener at `vip` in `domain`:
/// the one it has while that one may go on, else a new choice (`rev`: also
/// record how replies are translated back). `Err`: why it is refused (a
/// TCP connection whose backend was drained is forgotten too).
#[inline(always)]
fn select(
    domain: u32,
    vip: [u8; 4],
    t: &Tuple,
    len: u64,
    rev: bool,
    s: &mut LbScratch,
) -> Result<&'static LbBackend, DropReason> {
    let now = clock::now();
    match known(domain, vip, t, len, now, s) {
        Known::Goes(b) => return Ok(b),
        Known::Drained => {
            let _ = LB_FLOWS.remove(&s.fkey);
            return Err(DropReason::LbDrained);
        }
        Known::New => {}
    }
    let Some(svc) = service(domain, vip, t, s) else {
        return Err(DropReason::LbNoListener);
    };
    open(svc, domain, vip, t, len, rev, now, s)
}

/// What [`known`] found of a connection.
enum Known {
    /// It goes on to this backend (counted).
    Goes(&'static LbBackend),
    /// A TCP connection whose backend was drained (or is gone, with its
    /// listener): it cannot move, the client is told (`s.fkey` is its key).
    Drained,
    /// Not known, idle past its listener's timeout, or opening again: a
    /// new choice.
    New,
}

/// The connection `t` to `vip` in `LB_FLOWS` (its key left in `s.fkey`).
/// A known connection needs no listener lookup: its backend entry carries
/// the listener's idle timeout, and a removed listener's backends are gone.
#[inline(always)]
fn known(domain: u32, vip: [u8; 4], t: &Tuple, len: u64, now: u64, s: &mut LbScratch) -> Known {
    s.fkey = LbFlowKey {
        domain,
        client: t.saddr,
        remote: vip,
        client_port: t.sport,
        remote_port: t.dport,
        proto: t.proto,
        _pad: [0; 3],
    };
    let Some(f) = LB_FLOWS.get_ptr_mut(&s.fkey) else {
        return Known::New;
    };
    // SAFETY: a map value, valid for the program's run.
    let f = unsafe { &mut *f };
    let Some(b) = LB_BACKENDS.get(f.backend) else {
        return Known::New;
    };
    let syn = t.proto == IPPROTO_TCP && t.flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    let idle = now.saturating_sub(f.last_seen_ns) > b.idle_timeout_s as u64 * 1_000_000_000;
    if !idle && usable(b, now) && (!syn || b.flags & LB_B_ACTIVE != 0) {
        f.last_seen_ns = now;
        f.packets += 1;
        f.bytes += len;
        count(f.service, f.backend, len, true);
        return Known::Goes(b);
    }
    if t.proto == IPPROTO_TCP && !syn && !idle {
        return Known::Drained;
    }
    Known::New
}

/// A packet of `len` bytes in the counters of a listener and a backend:
/// client to backend (`in`), or the reply.
#[inline(always)]
fn count(service: u32, backend: u32, len: u64, inbound: bool) {
    for (map, i) in [(&LB_SERVICE_STATS, service), (&LB_BACKEND_STATS, backend)] {
        if let Some(st) = stats(map, i) {
            if inbound {
                st.packets_in += 1;
                st.bytes_in += len;
            } else {
                st.packets_out += 1;
                st.bytes_out += len;
            }
        }
    }
}

/// The listener `t` is for at `vip` in `domain`.
#[inline(always)]
fn service(domain: u32, vip: [u8; 4], t: &Tuple, s: &mut LbScratch) -> Option<&'static LbService> {
    s.skey = LbServiceKey {
        domain,
        vip,
        port: t.dport,
        proto: t.proto,
        _pad: 0,
    };
    // SAFETY: map values stay valid for the program's run.
    unsafe { LB_SERVICES.get(&s.skey) }
}

/// A new connection `t` (key in `s.fkey`, from [`known`]) to the listener
/// `svc`: a backend by Maglev, recorded in `LB_FLOWS` (and `LB_REV` when
/// `rev`) and counted.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn open(
    svc: &LbService,
    domain: u32,
    vip: [u8; 4],
    t: &Tuple,
    len: u64,
    rev: bool,
    now: u64,
    s: &mut LbScratch,
) -> Result<&'static LbBackend, DropReason> {
    if svc.flags & LB_SVC_F_FULL != 0 {
        return Err(DropReason::LbConnectionLimit);
    }
    let Some((id, b)) = choose(svc, t) else {
        return Err(DropReason::LbNoBackend);
    };
    s.flow = LbFlow {
        backend: id,
        service: svc.id,
        created_ns: now,
        last_seen_ns: now,
        packets: 1,
        bytes: len,
    };
    let _ = LB_FLOWS.insert(&s.fkey, &s.flow, 0);
    if rev {
        s.rkey = LbFlowKey {
            domain,
            client: t.saddr,
            remote: b.ip,
            client_port: t.sport,
            remote_port: b.port,
            proto: t.proto,
            _pad: [0; 3],
        };
        s.rev = LbRev {
            vip,
            vip_port: t.dport,
            _pad: 0,
            service: svc.id,
            backend: id,
            last_seen_ns: now,
            packets: 0,
            bytes: 0,
        };
        let _ = LB_REV.insert(&s.rkey, &s.rev, 0);
    }
    if let Some(st) = stats(&LB_SERVICE_STATS, svc.id) {
        st.connections += 1;
    }
    if let Some(st) = stats(&LB_BACKEND_STATS, id) {
        st.connections += 1;
    }
    count(svc.id, id, len, true);
    Ok(b)
}

/// On a gateway host: a packet from the internet to the elastic IP of a
/// load balancer's VIP (`e`). The connection gets a member as a VM's would
/// (the same tables, so every gateway makes the same choice), the packet
/// is routed to it (destination address and port, MACs, TTL) and tunnelled
/// to the member's host. The member's host answers as the elastic IP
/// itself ([`public_reply`]). Refused TCP is reset from the elastic IP.
#[inline(always)]
pub fn from_internet(ctx: &XdpContext, e: &EipEntry) -> Verdict {
    let len = Pkt::len(ctx);
    let Some(t) = tuple(ctx, ETH_HLEN) else {
        return Verdict::Drop(DropReason::LbUnsupported);
    };
    let Some(s) = lb_scratch() else {
        return Verdict::Drop(DropReason::NoScratch);
    };
    let b = match select(e.domain, e.fixed, &t, len, false, s) {
        Ok(c) => c,
        Err(r) => {
            if t.proto == IPPROTO_TCP && t.flags & TCP_RST == 0 && t.l4 == ETH_HLEN + 20 {
                return reset(ctx, &t, r);
            }
            return Verdict::Drop(r);
        }
    };
    let ep = match endpoint(e.domain, b.ip) {
        Some(ep) if ep.kind == EP_REMOTE => ep,
        Some(ep) if ep.kind == EP_LOCAL => ep,
        _ => return Verdict::Drop(DropReason::UnknownDestination),
    };
    if let Err(r) = nat::translate(ctx, ETH_HLEN, nat::DST, b.ip) {
        return Verdict::Drop(r);
    }
    if let Err(r) = set_port(ctx, &t, false, b.port) {
        return Verdict::Drop(r);
    }
    let (Some(eth), Some(ip)) = (
        ptr_at_mut::<_, [u8; 12]>(ctx, 0),
        ptr_at_mut::<_, [u8; 20]>(ctx, ETH_HLEN),
    ) else {
        return Verdict::Drop(DropReason::TruncatedIpv4);
    };
    // SAFETY: both bounds-checked.
    let (eth, ip) = unsafe { (&mut *eth, &mut *ip) };
    if ip[8] <= 1 {
        return Verdict::Drop(DropReason::TtlExceeded);
    }
    decrement_ttl(ip);
    let mut i = 0;
    while i < 6 {
        eth[i] = ep.mac[i];
        eth[6 + i] = ep.gw_mac[i];
        i += 1;
    }
    if ep.kind == EP_LOCAL {
        return Verdict::Redirect(ep.ifindex);
    }
    let hash = flow_hash(ctx, ip, t.l4);
    let out = match encap(ctx, ep.vni, ep.underlay, hash) {
        Ok(out) => out,
        Err(r) => return Verdict::Drop(r),
    };
    // The listener's port rides in the tunnel header (see `VXLAN_F_LB`).
    let Some(vx) = ptr_at_mut::<_, [u8; 4]>(ctx, dataplane_common::VXLAN_OVERHEAD as usize - 8)
    else {
        return Verdict::Drop(DropReason::AdjustFailed);
    };
    // SAFETY: bounds-checked.
    let vx = unsafe { &mut *vx };
    let p = t.dport.to_be_bytes();
    vx[0] |= VXLAN_F_LB;
    vx[1] = p[0];
    vx[2] = p[1];
    Verdict::Redirect(out)
}

/// On a member's host: a packet a gateway balanced from the internet
/// (`listener_port` from its tunnel header), inner IPv4 at `l3`, for a
/// port in `domain`. Its connection's replies will leave as the listener's
/// elastic IP and port.
#[inline(always)]
pub fn public_inbound<C: Pkt>(ctx: &C, l3: usize, domain: u32, listener_port: u16) {
    let Some(t) = tuple(ctx, l3) else {
        return;
    };
    let key = LbPublicKey {
        domain,
        member: t.daddr,
        member_port: t.dport,
        listener_port,
        proto: t.proto,
        _pad: [0; 3],
    };
    // SAFETY: map values stay valid for the program's run.
    let Some(o) = (unsafe { LB_PUBLIC_OUT.get(&key) }) else {
        return;
    };
    let o = *o;
    let fkey = LbFlowKey {
        domain,
        client: t.saddr,
        remote: t.daddr,
        client_port: t.sport,
        remote_port: t.dport,
        proto: t.proto,
        _pad: [0; 3],
    };
    // SAFETY: as above.
    if unsafe { LB_PUBLIC_FLOWS.get(&fkey) } != Some(&o) {
        let _ = LB_PUBLIC_FLOWS.insert(&fkey, &o, 0);
    }
}

/// On a member's host: its packet leaving the VPC, if it answers a
/// connection to a public listener, leaves as the listener's elastic IP and
/// port. Whether it was translated.
#[inline(always)]
pub fn public_reply<C: Pkt>(ctx: &C, domain: u32) -> Result<bool, DropReason> {
    let Some(t) = tuple(ctx, ETH_HLEN) else {
        return Ok(false);
    };
    let key = LbFlowKey {
        domain,
        client: t.daddr,
        remote: t.saddr,
        client_port: t.dport,
        remote_port: t.sport,
        proto: t.proto,
        _pad: [0; 3],
    };
    // SAFETY: map values stay valid for the program's run.
    let Some(o) = (unsafe { LB_PUBLIC_FLOWS.get(&key) }) else {
        return Ok(false);
    };
    let (eip, port, service) = (o.eip, o.port, o.service);
    let len = ctx.len().saturating_sub(ETH_HLEN as u64);
    if let Some(s) = stats(&LB_SERVICE_STATS, service) {
        s.packets_out += 1;
        s.bytes_out += len;
    }
    nat::translate(ctx, ETH_HLEN, nat::SRC, eip)?;
    set_port(ctx, &t, true, port)?;
    Ok(true)
}

/// A new connection's backend: its hash's slot in the service's Maglev
/// table.
#[inline(always)]
fn choose(svc: &LbService, t: &Tuple) -> Option<(u32, &'static LbBackend)> {
    if svc.table_size == 0 {
        return None;
    }
    let h = lb_hash(
        t.saddr,
        t.daddr,
        t.sport,
        t.dport,
        t.proto,
        svc.flags & LB_SVC_F_SOURCE_IP != 0,
    );
    let slot = h.checked_rem(svc.table_size)?;
    let id = *LB_MAGLEV.get(svc.table_off.wrapping_add(slot))?;
    let b = LB_BACKENDS.get(id)?;
    if b.flags & LB_B_ACTIVE == 0 {
        return None;
    }
    Some((id, b))
}

/// Destination address, port and MAC become the backend's, as if the VM
/// had sent the packet to it: its port's own MAC when that port is on the
/// sender's network (switched), else the sender's router (routed by the
/// pipeline).
#[inline(always)]
fn to_member<C: Pkt>(ctx: &C, port: &PortInfo, t: &Tuple, b: &LbBackend) -> Result<(), DropReason> {
    let dmac = if b.vni != 0 && b.vni == port.vni {
        b.mac
    } else {
        port.gw_mac
    };
    nat::translate(ctx, ETH_HLEN, nat::DST, b.ip)?;
    set_port(ctx, t, false, b.port)?;
    let Some(eth) = ptr_at_mut::<_, [u8; 6]>(ctx, 0) else {
        return Err(DropReason::TruncatedEthernet);
    };
    // SAFETY: bounds-checked.
    unsafe { *eth = dmac };
    Ok(())
}

/// The source (`src`) or destination port of the TCP/UDP packet becomes
/// `to`, with its checksum.
#[inline(always)]
fn set_port<C: Pkt>(ctx: &C, t: &Tuple, src: bool, to: u16) -> Result<(), DropReason> {
    let (at, from) = if src { (0, t.sport) } else { (2, t.dport) };
    if from == to {
        return Ok(());
    }
    let (sum_at, udp) = if t.proto == IPPROTO_TCP {
        (16, false)
    } else {
        (6, true)
    };
    if !ctx.l4_csum_replace2(t.l4 + sum_at, from, to, udp) {
        return Err(DropReason::TruncatedTcp);
    }
    let Some(p) = ptr_at_mut::<_, [u8; 4]>(ctx, t.l4) else {
        return Err(DropReason::TruncatedTcp);
    };
    // SAFETY: bounds-checked.
    let p = unsafe { &mut *p };
    let b = to.to_be_bytes();
    p[at & 2] = b[0];
    p[(at & 2) + 1] = b[1];
    Ok(())
}

/// A backend's packet to a client, at `l3` in the frame, in `domain`: if it
/// belongs to a balanced connection, its source becomes the VIP and the
/// listener's port. Returns the destination (the client).
#[inline(always)]
pub fn reply<C: Pkt>(ctx: &C, l3: usize, domain: u32) -> Result<[u8; 4], DropReason> {
    let Some(t) = tuple(ctx, l3) else {
        return match ptr_at::<_, [u8; 20]>(ctx, l3) {
            // SAFETY: bounds-checked.
            Some(ip) => unsafe { Ok([(*ip)[16], (*ip)[17], (*ip)[18], (*ip)[19]]) },
            None => Err(DropReason::TruncatedIpv4),
        };
    };
    let key = LbFlowKey {
        domain,
        client: t.daddr,
        remote: t.saddr,
        client_port: t.dport,
        remote_port: t.sport,
        proto: t.proto,
        _pad: [0; 3],
    };
    let Some(r) = LB_REV.get_ptr_mut(&key) else {
        return Ok(t.daddr);
    };
    // SAFETY: a map value, valid for the program's run.
    let r = unsafe { &mut *r };
    let len = ctx.len().saturating_sub(l3 as u64 - ETH_HLEN as u64);
    r.last_seen_ns = clock::now();
    r.packets += 1;
    r.bytes += len;
    let (vip, vport) = (r.vip, r.vip_port);
    count(r.service, r.backend, len, false);
    nat::translate(ctx, l3, nat::SRC, vip)?;
    set_port(ctx, &t, true, vport)?;
    Ok(t.daddr)
}

/// Answers a refused packet: TCP with a reset (RFC 9293 3.10.7.1), UDP
/// with an ICMP port unreachable from the port's gateway; a reset or
/// anything else is only dropped. Counted as dropped with `reason`.
#[inline(always)]
fn refuse<C: Pkt>(ctx: &C, port: &PortInfo, t: &Tuple, reason: DropReason) -> Verdict {
    if let Some(s) = stats(&LB_SERVICE_STATS, 0) {
        // Slot 0 is never a service: refusals in total.
        s.refused += 1;
    }
    if t.proto == IPPROTO_UDP {
        return icmp_error(ctx, port, 3, 3, 0, reason);
    }
    if t.flags & TCP_RST != 0 || t.l4 != ETH_HLEN + 20 {
        return Verdict::Drop(reason);
    }
    reset(ctx, t, reason)
}

const RST_LEN: usize = ETH_HLEN + 20 + 20;

/// Turns the TCP segment into the reset that answers it, back to its
/// sender.
#[inline(always)]
fn reset<C: Pkt>(ctx: &C, t: &Tuple, reason: DropReason) -> Verdict {
    let Some(h) = ptr_at_mut::<_, [u8; RST_LEN]>(ctx, 0) else {
        return Verdict::Drop(reason);
    };
    // SAFETY: bounds-checked.
    let h = unsafe { &mut *h };
    let total = u16::from_be_bytes([h[16], h[17]]) as u32;
    const T: usize = ETH_HLEN + 20;
    let doff = ((h[T + 12] >> 4) as u32) * 4;
    let payload = total.saturating_sub(20 + doff);
    let seq = u32::from_be_bytes([h[T + 4], h[T + 5], h[T + 6], h[T + 7]]);
    let ack = u32::from_be_bytes([h[T + 8], h[T + 9], h[T + 10], h[T + 11]]);
    let (rseq, rack, rflags) = if t.flags & TCP_ACK != 0 {
        (ack, 0, TCP_RST)
    } else {
        let mut n = seq.wrapping_add(payload);
        if t.flags & TCP_SYN != 0 {
            n = n.wrapping_add(1);
        }
        if t.flags & TCP_FIN != 0 {
            n = n.wrapping_add(1);
        }
        (0, n, TCP_RST | TCP_ACK)
    };
    // Ethernet: back to the sender, from what it sent to.
    let mut i = 0;
    while i < 6 {
        let d = h[i];
        h[i] = h[6 + i];
        h[6 + i] = d;
        i += 1;
    }
    let iph = csum::ipv4_header_with_checksum(0, 40, 0x40, IPPROTO_TCP, t.daddr, t.saddr);
    let mut i = 0;
    while i < 20 {
        h[ETH_HLEN + i] = iph[i];
        i += 1;
    }
    let sp = t.dport.to_be_bytes();
    let dp = t.sport.to_be_bytes();
    let s = rseq.to_be_bytes();
    let a = rack.to_be_bytes();
    let tcp: [u8; 20] = [
        sp[0], sp[1], dp[0], dp[1], s[0], s[1], s[2], s[3], a[0], a[1], a[2], a[3], 0x50, rflags,
        0, 0, 0, 0, 0, 0,
    ];
    let mut i = 0;
    while i < 20 {
        h[T + i] = tcp[i];
        i += 1;
    }
    // Pseudo-header (addresses, protocol, TCP length) and the header.
    let mut sum = (u16::from_be_bytes([t.saddr[0], t.saddr[1]]) as u64)
        + (u16::from_be_bytes([t.saddr[2], t.saddr[3]]) as u64)
        + (u16::from_be_bytes([t.daddr[0], t.daddr[1]]) as u64)
        + (u16::from_be_bytes([t.daddr[2], t.daddr[3]]) as u64)
        + IPPROTO_TCP as u64
        + 20;
    let mut i = 0;
    while i < 20 {
        sum += u16::from_be_bytes([tcp[i], tcp[i + 1]]) as u64;
        i += 2;
    }
    let c = !csum::fold(sum);
    let c = c.to_be_bytes();
    h[T + 16] = c[0];
    h[T + 17] = c[1];
    if !ctx.truncate(RST_LEN as u32) {
        return Verdict::Drop(DropReason::AdjustFailed);
    }
    Verdict::TxError(reason)
}
