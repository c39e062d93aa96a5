//! Security groups in the packet path: connection tracking and the policy
//! lookup.
//!
//! A port with a policy (`PortInfo::policy != 0`) has every IPv4 packet it
//! sends checked in the egress direction, and every packet for it checked in
//! the ingress direction (on the sender's host when both are local, on the
//! receiving uplink otherwise). Stateful policies track connections in `CT`,
//! zoned by the port: a packet of a tracked flow passes without rule
//! evaluation (after TCP state and window checks); a first packet is looked
//! up in the policy and, if allowed, creates the entry. ICMP errors about a
//! tracked flow pass as related.
//!
//! The policy lookup is two LPM tries, whatever the number of rules: the
//! remote address selects a class (`POLICY_ADDR`, keyed by policy and
//! direction), the class with protocol and port selects an allow
//! (`POLICY_PORT`). The agent flattens the rules into those tries.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::generated::bpf_ktime_get_coarse_ns,
    macros::map,
    maps::{lpm_trie::Key, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use dataplane_common::{
    ct_timeout_secs, maps, CtEntry, CtKey, CtStats, DropReason, PolicyAddrKey, PolicyAllow,
    PolicyClass, PolicyPortKey, PortInfo, CT_F_FIN_A, CT_F_FIN_B, CT_F_ORIG_A, CT_F_REPLIED,
    CT_F_WS_A, CT_F_WS_B, CT_ICMP, CT_OTHER, CT_TCP_CLOSE, CT_TCP_ESTABLISHED, CT_TCP_FIN_WAIT,
    CT_TCP_SYN_RECV, CT_TCP_SYN_SENT, CT_TCP_TIME_WAIT, CT_UDP, DIR_EGRESS, DIR_INGRESS,
    PORT_F_STATELESS,
};

use crate::{
    ctx::Pkt,
    parse::{ptr_at, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
};

#[map(name = "CT")]
pub static CT: LruHashMap<CtKey, CtEntry> = LruHashMap::with_max_entries(maps::CT_MAX_DEFAULT, 0);

#[map(name = "CT_STATS")]
static CT_STATS: PerCpuArray<CtStats> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "POLICY_ADDR")]
static POLICY_ADDR: LpmTrie<PolicyAddrKey, PolicyClass> =
    LpmTrie::with_max_entries(maps::POLICY_ADDR_MAX, 0);

#[map(name = "POLICY_PORT")]
static POLICY_PORT: LpmTrie<PolicyPortKey, PolicyAllow> =
    LpmTrie::with_max_entries(maps::POLICY_PORT_MAX, 0);

#[map(name = "POLICY_HOST")]
static POLICY_HOST: HashMap<PolicyAddrKey, PolicyClass> =
    HashMap::with_max_entries(maps::POLICY_HASH_MAX, BPF_F_NO_PREALLOC);

#[map(name = "POLICY_EXACT")]
static POLICY_EXACT: HashMap<PolicyPortKey, PolicyAllow> =
    HashMap::with_max_entries(maps::POLICY_HASH_MAX, BPF_F_NO_PREALLOC);

/// Per-CPU scratch of one program run: the packet's flow, and the routing
/// step a port packet takes (`vpc`). Kept out of the 512-byte stack, and
/// read back through a pointer the compiler cannot see through
/// ([`launder`]): values written on different paths (constants included)
/// reach the verifier as plain numbers, so those paths merge instead of
/// being verified once each. Never read from user space.
#[repr(C)]
pub struct Scratch {
    pub flow: Flow,
    /// The TCP option walk (see `tcp_wscale`).
    pub options: Options,
    pub check: CheckState,
    /// The routing decision of a port packet (`vpc`): kind, argument,
    /// MTU, drop reason.
    pub step: [u32; 4],
    /// The load balancer's keys and values (`lb`).
    pub lb: crate::lb::LbScratch,
}

#[map(name = "SCRATCH")]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's scratch.
#[inline(always)]
pub fn scratch() -> Option<&'static mut Scratch> {
    // SAFETY: per-CPU value owned by this CPU for the program's run
    // (programs on one CPU do not nest).
    SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// The same reference, through a volatile read of the pointer: the
/// compiler must load what was stored through it again instead of reusing
/// the stored values (see [`Scratch`]).
#[inline(always)]
pub fn launder<T>(r: &'static mut T) -> &'static mut T {
    let p: *mut T = r;
    // SAFETY: reads back the pointer just written; it stays valid.
    unsafe { &mut *core::ptr::read_volatile(&p) }
}

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
/// Smallest window the ACK check allows for (the kernel's MAXACKWINDOW floor).
const MIN_ACK_WINDOW: u32 = 66_000;
/// Entries picked up mid-connection skip the window checks (the kernel's
/// "be liberal" for loose pickup): their window scale is unknown.
const CT_F_LIBERAL: u8 = 128;

/// What the policy and conntrack need of an IPv4 packet.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Flow {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub proto: u8,
    /// TCP/UDP ports; the ICMP echo identifier in both; 0 otherwise.
    pub sport: u16,
    pub dport: u16,
    /// What rules match: the destination port, or ICMP `type << 8 | code`.
    pub policy_port: u16,
    pub tcp_flags: u8,
    /// An ICMP error (destination unreachable, source quench, time exceeded,
    /// parameter problem): `inner` holds the quoted flow.
    pub icmp_error: bool,
    /// TCP: sequence, acknowledgement, raw window, payload length, and the
    /// window scale the segment offers (SYN only; 0xff: none).
    pub seq: u32,
    pub ack: u32,
    pub win: u16,
    pub wscale: u8,
    pub payload: u32,
    /// The quoted flow of an ICMP error, in its own orientation (valid
    /// when `icmp_error` and `inner.proto != 0`).
    pub inner: Inner,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Inner {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

#[inline(always)]
fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

#[inline(always)]
fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

impl Flow {
    /// Reads the flow of the IPv4 packet at `l3`. The header must have been
    /// checked (the port parser, or our own encapsulation on the uplink);
    /// what cannot be read is an error with the parser's reasons.
    #[inline(always)]
    pub fn read_into<C: Pkt>(
        ctx: &C,
        l3: usize,
        out: &mut Flow,
        options: &mut Options,
    ) -> Result<(), DropReason> {
        *out = Flow::read(ctx, l3, options)?;
        Ok(())
    }

    #[inline(always)]
    fn read<C: Pkt>(ctx: &C, l3: usize, options: &mut Options) -> Result<Flow, DropReason> {
        let ip = ptr_at::<_, [u8; 20]>(ctx, l3).ok_or(DropReason::TruncatedIpv4)?;
        // SAFETY: bounds-checked.
        let ip = unsafe { &*ip };
        let ihl = ((ip[0] & 0x0f) as usize) * 4;
        if ihl < 20 {
            return Err(DropReason::BadIpv4HeaderLength);
        }
        let total = be16(ip, 2) as u32;
        let mut f = Flow {
            saddr: [ip[12], ip[13], ip[14], ip[15]],
            daddr: [ip[16], ip[17], ip[18], ip[19]],
            proto: ip[9],
            sport: 0,
            dport: 0,
            policy_port: 0,
            tcp_flags: 0,
            icmp_error: false,
            seq: 0,
            ack: 0,
            win: 0,
            wscale: 0xff,
            payload: 0,
            inner: Inner::default(),
        };
        // A later fragment carries no ports: matched by protocol only.
        if be16(ip, 6) & 0x1fff != 0 {
            return Ok(f);
        }
        let l4 = l3 + (ihl & 0x3c);
        match f.proto {
            IPPROTO_TCP => {
                let t = ptr_at::<_, [u8; 20]>(ctx, l4).ok_or(DropReason::TruncatedTcp)?;
                // SAFETY: bounds-checked.
                let t = unsafe { &*t };
                f.sport = be16(t, 0);
                f.dport = be16(t, 2);
                f.policy_port = f.dport;
                f.seq = be32(t, 4);
                f.ack = be32(t, 8);
                f.tcp_flags = t[13];
                f.win = be16(t, 14);
                let doff = ((t[12] >> 4) as u32) * 4;
                f.payload = total.saturating_sub(ihl as u32 + doff);
                if f.tcp_flags & TCP_SYN != 0 && doff > 20 {
                    f.wscale = tcp_wscale(ctx, l4 + 20, doff as usize - 20, options);
                }
            }
            IPPROTO_UDP => {
                let u = ptr_at::<_, [u8; 4]>(ctx, l4).ok_or(DropReason::TruncatedUdp)?;
                // SAFETY: bounds-checked.
                let u = unsafe { &*u };
                f.sport = be16(u, 0);
                f.dport = be16(u, 2);
                f.policy_port = f.dport;
            }
            IPPROTO_ICMP => {
                let c = ptr_at::<_, [u8; 8]>(ctx, l4).ok_or(DropReason::TruncatedIcmp)?;
                // SAFETY: bounds-checked.
                let c = unsafe { &*c };
                f.policy_port = be16(c, 0);
                match c[0] {
                    0 | 8 => {
                        f.sport = be16(c, 4);
                        f.dport = f.sport;
                    }
                    3 | 4 | 11 | 12 => {
                        f.icmp_error = true;
                        read_inner(ctx, l4 + 8, &mut f.inner);
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(f)
    }

    /// The remote address of a packet in direction `dir` of the port.
    #[inline(always)]
    fn remote(&self, dir: u32) -> [u8; 4] {
        if dir == DIR_EGRESS {
            self.daddr
        } else {
            self.saddr
        }
    }
}

/// Where the TCP option walk works (see [`tcp_wscale`]).
#[repr(C)]
pub struct Options {
    /// The walk's position.
    cursor: u32,
    /// The options, copied out of the packet.
    bytes: [u8; 64],
}

/// Copies `N` option bytes at `start` into the scratch (volatile stores:
/// never a `memcpy` call with a packet pointer).
#[inline(always)]
fn copy_options<C: Pkt, const N: usize>(ctx: &C, start: usize, o: &mut Options) -> bool {
    let Some(p) = ptr_at::<_, [u8; N]>(ctx, start) else {
        return false;
    };
    // SAFETY: bounds-checked.
    let p = unsafe { &*p };
    let mut i = 0;
    while i < N {
        // SAFETY: `i < N <= 40 < 64`.
        unsafe { core::ptr::write_volatile(&mut o.bytes[i], p[i]) };
        i += 1;
    }
    true
}

/// The window scale a SYN offers (RFC 7323: option 3, length 3), capped at
/// 14 as the kernel does; 0xff when it offers none. `len` option bytes (a
/// multiple of 4, at most 40) are copied out of the packet by constant-size
/// reads, then walked in at most 20 steps; a malformed list ends the walk
/// (the segment is judged without scaling). The position goes through the
/// scratch at each step, so the verifier follows one state per step rather
/// than one per combination of option lengths.
#[inline(always)]
fn tcp_wscale<C: Pkt>(ctx: &C, start: usize, len: usize, o: &mut Options) -> u8 {
    let copied = match len {
        4 => copy_options::<C, 4>(ctx, start, o),
        8 => copy_options::<C, 8>(ctx, start, o),
        12 => copy_options::<C, 12>(ctx, start, o),
        16 => copy_options::<C, 16>(ctx, start, o),
        20 => copy_options::<C, 20>(ctx, start, o),
        24 => copy_options::<C, 24>(ctx, start, o),
        28 => copy_options::<C, 28>(ctx, start, o),
        32 => copy_options::<C, 32>(ctx, start, o),
        36 => copy_options::<C, 36>(ctx, start, o),
        40 => copy_options::<C, 40>(ctx, start, o),
        _ => false,
    };
    if !copied {
        return 0xff;
    }
    // SAFETY: plain field of this CPU's scratch.
    unsafe { core::ptr::write_volatile(&mut o.cursor, 0) };
    for _ in 0..20 {
        // SAFETY: as above.
        let mut i = unsafe { core::ptr::read_volatile(&o.cursor) } as usize;
        if i >= len {
            break;
        }
        match o.bytes[i & 63] {
            0 => break,
            1 => i += 1,
            kind => {
                let olen = o.bytes[(i + 1) & 63] as usize;
                if kind == 3 {
                    return if olen == 3 {
                        o.bytes[(i + 2) & 63].min(14)
                    } else {
                        0xff
                    };
                }
                if olen < 2 {
                    break;
                }
                i += olen;
            }
        }
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(&mut o.cursor, i as u32) };
    }
    0xff
}

/// The flow an ICMP error quotes (its IPv4 header and first 8 bytes).
#[inline(always)]
fn read_inner<C: Pkt>(ctx: &C, off: usize, i: &mut Inner) {
    let Some(ip) = ptr_at::<_, [u8; 20]>(ctx, off) else {
        return;
    };
    // SAFETY: bounds-checked.
    let ip = unsafe { &*ip };
    if ip[0] != 0x45 {
        // Quoted headers with options are not matched (never related).
        return;
    }
    let Some(l4) = ptr_at::<_, [u8; 8]>(ctx, off + 20) else {
        return;
    };
    i.saddr = [ip[12], ip[13], ip[14], ip[15]];
    i.daddr = [ip[16], ip[17], ip[18], ip[19]];
    i.proto = ip[9];
    // SAFETY: bounds-checked.
    let l4 = unsafe { &*l4 };
    match i.proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            i.sport = be16(l4, 0);
            i.dport = be16(l4, 2);
        }
        IPPROTO_ICMP if l4[0] == 8 || l4[0] == 0 => {
            i.sport = be16(l4, 4);
            i.dport = i.sport;
        }
        _ => {}
    }
}

/// The rule of `policy` that allows `proto`/`port` to or from `remote` in
/// `dir`, if any: a hash lookup and at most a trie lookup per stage,
/// whatever the rule count (host addresses and single ports are hashed; the
/// tries hold only real prefixes and ranges).
#[inline(always)]
pub fn lookup(policy: u32, dir: u32, remote: [u8; 4], proto: u8, port: u16) -> Option<u32> {
    let akey = PolicyAddrKey {
        policy_dir: ((policy << 1) | dir).to_be_bytes(),
        ip: remote,
    };
    // SAFETY: map values stay valid for the program's run.
    let class = match unsafe { POLICY_HOST.get(&akey) } {
        Some(c) => c.class,
        None => POLICY_ADDR.get(Key::new(64, akey))?.class,
    };
    let pkey = PolicyPortKey {
        class: class.to_be_bytes(),
        proto,
        port: port.to_be_bytes(),
        _pad: 0,
    };
    // SAFETY: as above.
    if let Some(a) = unsafe { POLICY_EXACT.get(&pkey) } {
        return Some(a.rule);
    }
    POLICY_PORT.get(Key::new(56, pkey)).map(|a| a.rule)
}

#[inline(always)]
fn stats() -> Option<&'static mut CtStats> {
    // SAFETY: per-CPU value owned by this CPU for the program's run.
    CT_STATS.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

#[inline(always)]
fn denied(dir: u32) -> DropReason {
    if dir == DIR_EGRESS {
        DropReason::PolicyDeniedEgress
    } else {
        DropReason::PolicyDeniedIngress
    }
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: plain helper call.
    unsafe { bpf_ktime_get_coarse_ns() }
}

#[inline(always)]
fn expired(e: &CtEntry, now: u64) -> bool {
    now.wrapping_sub(e.last_seen) > ct_timeout_secs(e.state, e.flags) * 1_000_000_000
}

/// TCP flag combinations no connection has.
#[inline(always)]
fn tcp_flags_invalid(fl: u8) -> bool {
    let f = fl & (TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK);
    f == 0
        || (f & TCP_SYN != 0 && f & (TCP_FIN | TCP_RST) != 0)
        || (f & TCP_FIN != 0 && f & TCP_ACK == 0)
}

/// One packet's passage through the security groups of this host: the
/// sender's egress rules (`sender`, early, before anything is answered or
/// rewritten), the receiver's ingress rules when it is local (`receiver`),
/// then `commit` updates or creates the flow's one connection entry.
///
/// The entry is keyed in the flow's routing domain and records, per side,
/// the policy its port admitted the flow under: a packet between two local
/// ports costs one table lookup, and TCP is tracked once per host.
pub struct Check {
    /// This run's [`CheckState`] in the scratch, read back through a
    /// laundered pointer at each stage (see [`Scratch`]).
    s: *mut CheckState,
    /// The flow's entry when looked up and found; null otherwise.
    entry: *mut CtEntry,
}

/// What a [`Check`] carries from stage to stage.
#[repr(C)]
pub struct CheckState {
    key: CtKey,
    /// The packet comes from side a of `key`: 1, else 0.
    from_a: u32,
    /// `CS_*` bits.
    flags: u32,
    now: u64,
    /// Per side, when its `CS_ADMITTED` bit is set: the policy and rule a
    /// first packet was admitted under, for the entry `commit` creates.
    policy: [u32; 2],
    rule: [u32; 2],
}

/// `CheckState::flags`: the entry was looked up (`Check::entry` is the
/// result).
const CS_LOOKED_UP: u32 = 1;
/// The entry is live: not expired, not a TCP connection reopened.
const CS_LIVE: u32 = 2;
/// A stateful side saw this packet: `commit` has work.
const CS_TRACKED: u32 = 4;
/// Side a's rules admitted a first packet (side b: shifted by one).
const CS_ADMITTED: u32 = 8;

impl Check {
    #[inline(always)]
    pub fn new(domain: u32, f: &Flow, state: &'static mut CheckState) -> Check {
        let (key, from_a) = CtKey::of_flow(domain, f.saddr, f.daddr, f.sport, f.dport, f.proto);
        // Word by word, volatile: the compiler would otherwise turn the
        // key's zero padding (and any run of zeros) into calls to `memset`,
        // a loop the verifier runs byte by byte, on every packet.
        // SAFETY: `CtKey` is five plain words (`repr(C)`, 20 bytes, its
        // padding a zeroed field); the destination is this CPU's scratch.
        unsafe {
            let words: [u32; 5] = core::mem::transmute(key);
            let dst = &mut state.key as *mut CtKey as *mut u32;
            let mut i = 0;
            while i < 5 {
                core::ptr::write_volatile(dst.add(i), words[i]);
                i += 1;
            }
            core::ptr::write_volatile(&mut state.from_a, from_a as u32);
            core::ptr::write_volatile(&mut state.flags, 0);
        }
        Check {
            s: state,
            entry: core::ptr::null_mut(),
        }
    }

    /// The state, through a pointer the compiler must load again: values
    /// written before are read from memory, unknown to the verifier.
    #[inline(always)]
    fn st(&mut self) -> &'static mut CheckState {
        // SAFETY: reads back the pointer to this CPU's scratch.
        unsafe {
            self.s = core::ptr::read_volatile(&self.s);
            &mut *self.s
        }
    }

    /// The sender's egress rules.
    #[inline(always)]
    pub fn sender<const TRACE: bool>(
        &mut self,
        port: &PortInfo,
        f: &Flow,
    ) -> Result<(), DropReason> {
        let side = (self.st().from_a ^ 1) as usize & 1;
        self.side::<TRACE>(port, DIR_EGRESS, side, f)
    }

    /// The (local) receiver's ingress rules.
    #[inline(always)]
    pub fn receiver<const TRACE: bool>(
        &mut self,
        port: &PortInfo,
        f: &Flow,
    ) -> Result<(), DropReason> {
        let side = self.st().from_a as usize & 1;
        self.side::<TRACE>(port, DIR_INGRESS, side, f)
    }

    /// Finds the flow's entry, once per packet.
    #[inline(always)]
    fn lookup_entry(&mut self, f: &Flow) {
        let st = self.st();
        if st.flags & CS_LOOKED_UP != 0 {
            return;
        }
        st.flags |= CS_LOOKED_UP;
        st.now = now();
        // Kept as the raw lookup result (never a computed select between
        // pointers, which the verifier would see as a plain number).
        self.entry = CT.get_ptr_mut(&st.key).unwrap_or(core::ptr::null_mut());
        // SAFETY: map values stay valid for the program's run.
        if let Some(r) = unsafe { self.entry.as_ref() } {
            let reopen = f.proto == IPPROTO_TCP
                && f.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
                && (r.state == CT_TCP_TIME_WAIT || r.state == CT_TCP_CLOSE);
            if !expired(r, st.now) && !reopen {
                st.flags |= CS_LIVE;
            }
        }
    }

    /// The flow's live entry, if any.
    #[inline(always)]
    fn live_entry(&mut self) -> Option<&'static mut CtEntry> {
        if self.st().flags & CS_LIVE == 0 {
            return None;
        }
        // SAFETY: a map value found by `lookup_entry`, valid for the
        // program's run; concurrent updates of one entry from two CPUs are
        // benign (last writer wins).
        unsafe { self.entry.as_mut() }
    }

    #[inline(always)]
    fn side<const TRACE: bool>(
        &mut self,
        port: &PortInfo,
        dir: u32,
        side: usize,
        f: &Flow,
    ) -> Result<(), DropReason> {
        if port.policy == 0 {
            return Ok(());
        }
        let remote = f.remote(dir);
        if port.flags & PORT_F_STATELESS != 0 {
            return match lookup(port.policy, dir, remote, f.proto, f.policy_port) {
                Some(_) => Ok(()),
                None => Err(denied(dir)),
            };
        }
        self.lookup_entry(f);
        self.st().flags |= CS_TRACKED;
        if let Some(e) = self.live_entry() {
            if e.policy[side & 1] == port.policy {
                return Ok(());
            }
            // The port's policy changed since (or the side was not
            // checked here yet): the flow as first admitted must still be
            // allowed.
            return self.recheck::<TRACE>(e, side, port.policy);
        }
        let st = self.st();
        if f.icmp_error && f.inner.proto != 0 && related(st.key.zone, f, port.policy, st.now) {
            if !TRACE {
                if let Some(s) = stats() {
                    s.related += 1;
                }
            }
            return Ok(());
        }
        if f.proto == IPPROTO_TCP && tcp_flags_invalid(f.tcp_flags) {
            return Err(DropReason::CtInvalid);
        }
        if !TRACE {
            if let Some(s) = stats() {
                s.policy_lookups += 1;
            }
        }
        let Some(rule) = lookup(port.policy, dir, remote, f.proto, f.policy_port) else {
            return Err(denied(dir));
        };
        let st = self.st();
        st.policy[side & 1] = port.policy;
        st.rule[side & 1] = rule;
        st.flags |= CS_ADMITTED << (side & 1);
        Ok(())
    }

    /// A tracked flow whose port on `side` has another policy now: still
    /// allowed (as first admitted: that side's direction, the other side's
    /// address, the first packet's port) keeps it, else it is cut.
    #[inline(always)]
    fn recheck<const TRACE: bool>(
        &mut self,
        e: &mut CtEntry,
        side: usize,
        policy: u32,
    ) -> Result<(), DropReason> {
        let dir = if side == e.initiator() {
            DIR_EGRESS
        } else {
            DIR_INGRESS
        };
        let st = self.st();
        let remote = if side == 0 {
            st.key.addr_b
        } else {
            st.key.addr_a
        };
        let found = lookup(policy, dir, remote, st.key.proto, e.policy_port);
        if TRACE {
            return found.map(|_| ()).ok_or(DropReason::PolicyRevoked);
        }
        if let Some(s) = stats() {
            s.rechecked += 1;
        }
        match found {
            Some(rule) => {
                e.policy[side & 1] = policy;
                e.rule[side & 1] = rule;
                Ok(())
            }
            None => {
                let _ = CT.remove(&st.key);
                st.flags &= !(CS_LIVE | CS_TRACKED);
                if let Some(s) = stats() {
                    s.removed += 1;
                }
                Err(DropReason::PolicyRevoked)
            }
        }
    }

    /// After every check passed: the tracked flow's state and window are
    /// updated (and may still refuse the packet), or a first packet creates
    /// the entry. Nothing when no stateful side saw the packet.
    #[inline(always)]
    pub fn commit(&mut self, f: &Flow) -> Result<(), DropReason> {
        if self.st().flags & CS_TRACKED == 0 {
            return Ok(());
        }
        let mut counters = stats();
        if let Some(e) = self.live_entry() {
            if let Some(s) = counters.as_deref_mut() {
                s.hits += 1;
            }
            let st = self.st();
            return track(e, st.from_a & 1 != 0, f, st.now);
        }
        // Untracked: related errors, errors allowed by a rule of their
        // own, and resets.
        if f.icmp_error || (f.proto == IPPROTO_TCP && f.tcp_flags & TCP_RST != 0) {
            return Ok(());
        }
        let st = self.st();
        let from_a = st.from_a & 1 != 0;
        let admitted = |side: usize| st.flags & (CS_ADMITTED << side) != 0;
        let mut e = CtEntry {
            last_seen: st.now,
            policy: [
                if admitted(0) { st.policy[0] } else { 0 },
                if admitted(1) { st.policy[1] } else { 0 },
            ],
            rule: [
                if admitted(0) { st.rule[0] } else { 0 },
                if admitted(1) { st.rule[1] } else { 0 },
            ],
            state: CT_OTHER,
            flags: if from_a { CT_F_ORIG_A } else { 0 },
            wscale: [0; 2],
            policy_port: f.policy_port,
            _pad: 0,
            end: [0; 2],
            maxend: [0; 2],
            maxwin: [0; 2],
        };
        match f.proto {
            IPPROTO_TCP => {
                let s = if from_a { 0 } else { 1 };
                if f.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
                    e.state = CT_TCP_SYN_SENT;
                    let end = f.seq.wrapping_add(f.payload).wrapping_add(1);
                    e.end[s] = end;
                    e.maxend[s] = end;
                    e.maxwin[s] = if f.win == 0 { 1 } else { f.win as u32 };
                    if f.wscale != 0xff {
                        e.wscale[s] = f.wscale;
                        e.flags |= if from_a { CT_F_WS_A } else { CT_F_WS_B };
                    }
                } else {
                    // Picked up mid-connection (an entry lost to eviction,
                    // or a policy that now allows it): tracked liberally.
                    e.state = if f.tcp_flags & TCP_FIN != 0 {
                        CT_TCP_FIN_WAIT
                    } else {
                        CT_TCP_ESTABLISHED
                    };
                    e.flags |= CT_F_LIBERAL;
                }
            }
            IPPROTO_UDP => e.state = CT_UDP,
            IPPROTO_ICMP => e.state = CT_ICMP,
            _ => {}
        }
        match CT.insert(&st.key, &e, 0) {
            Ok(()) => {
                if let Some(s) = counters {
                    s.inserts += 1;
                }
            }
            Err(_) => {
                // Not tracked: this packet was allowed by the rules; its
                // replies will be decided by the rules too (never fail open).
                if let Some(s) = counters {
                    s.insert_failures += 1;
                }
            }
        }
        Ok(())
    }
}

/// An ICMP error quoting a live flow that `policy` admitted on either side.
#[inline(always)]
fn related(domain: u32, f: &Flow, policy: u32, now: u64) -> bool {
    let i = f.inner;
    let (k, _) = CtKey::of_flow(domain, i.saddr, i.daddr, i.sport, i.dport, i.proto);
    // SAFETY: map values stay valid for the program's run.
    match unsafe { CT.get(&k) } {
        Some(e) => !expired(e, now) && (e.policy[0] == policy || e.policy[1] == policy),
        None => false,
    }
}

#[inline(always)]
fn before_eq(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) <= 0
}

/// Updates a tracked flow with its packet from side a (`from_a`) or b.
#[inline(always)]
fn track(e: &mut CtEntry, from_a: bool, f: &Flow, now: u64) -> Result<(), DropReason> {
    let orig = from_a == (e.flags & CT_F_ORIG_A != 0);
    if f.proto == IPPROTO_TCP {
        tcp(e, from_a, orig, f)?;
    }
    if !orig {
        e.flags |= CT_F_REPLIED;
    }
    e.last_seen = now;
    Ok(())
}

#[inline(always)]
fn tcp(e: &mut CtEntry, from_a: bool, orig: bool, f: &Flow) -> Result<(), DropReason> {
    let fl = f.tcp_flags;
    if tcp_flags_invalid(fl) {
        return Err(DropReason::CtInvalid);
    }
    let (s, r) = if from_a { (0, 1) } else { (1, 0) };
    let syn = fl & TCP_SYN != 0;
    let ack = fl & TCP_ACK != 0;
    if syn && ack {
        // SYN-ACK: the responder's first segment, acknowledging the SYN.
        if orig || (e.state != CT_TCP_SYN_SENT && e.state != CT_TCP_SYN_RECV) {
            if e.flags & CT_F_LIBERAL == 0 && e.state != CT_TCP_ESTABLISHED {
                return Err(DropReason::CtInvalid);
            }
        } else if e.flags & CT_F_LIBERAL == 0 && f.ack != e.end[r] {
            return Err(DropReason::CtInvalid);
        } else if f.wscale != 0xff {
            e.wscale[s] = f.wscale;
            e.flags |= if from_a { CT_F_WS_A } else { CT_F_WS_B };
        }
    }
    if e.flags & CT_F_LIBERAL == 0 {
        window(e, s, r, f)?;
    }
    if fl & TCP_RST != 0 {
        e.state = CT_TCP_CLOSE;
    } else if syn && ack {
        if e.state == CT_TCP_SYN_SENT {
            e.state = CT_TCP_SYN_RECV;
        }
    } else if fl & TCP_FIN != 0 {
        e.flags |= if from_a { CT_F_FIN_A } else { CT_F_FIN_B };
        e.state = if e.flags & (CT_F_FIN_A | CT_F_FIN_B) == (CT_F_FIN_A | CT_F_FIN_B) {
            CT_TCP_TIME_WAIT
        } else {
            CT_TCP_FIN_WAIT
        };
    } else if ack && e.state == CT_TCP_SYN_RECV && orig {
        e.state = CT_TCP_ESTABLISHED;
    }
    Ok(())
}

/// The window checks of the kernel's tcp_in_window (Rooij's), reduced:
/// sequence inside what the peer allowed, not older than a window, and an
/// acknowledgement of nothing unsent.
#[inline(always)]
fn window(e: &mut CtEntry, s: usize, r: usize, f: &Flow) -> Result<(), DropReason> {
    let fl = f.tcp_flags;
    let syn = fl & TCP_SYN != 0;
    let end = f
        .seq
        .wrapping_add(f.payload)
        .wrapping_add(syn as u32)
        .wrapping_add((fl & TCP_FIN != 0) as u32);
    let both_ws = e.flags & (CT_F_WS_A | CT_F_WS_B) == (CT_F_WS_A | CT_F_WS_B);
    let shift = if both_ws && !syn { e.wscale[s] & 15 } else { 0 };
    let win = (f.win as u32) << shift;
    let has_ack = fl & TCP_ACK != 0;
    if e.maxwin[s] == 0 || e.maxwin[r] == 0 {
        // The side's first segment (the SYN-ACK), or the peer has not sent
        // yet (SYN retransmissions): nothing to check against.
        if e.maxwin[s] != 0 && !before_eq(f.seq, e.maxend[s]) {
            return Err(DropReason::CtOutOfWindow);
        }
        if e.maxwin[s] == 0 {
            e.end[s] = end;
            e.maxend[s] = end;
            e.maxwin[s] = if win == 0 { 1 } else { win };
        }
    } else {
        let ack = if has_ack { f.ack } else { e.end[r] };
        let in_window = before_eq(f.seq, e.maxend[s])
            && before_eq(e.end[s].wrapping_sub(e.maxwin[r]), end)
            && before_eq(ack, e.end[r])
            && before_eq(
                e.end[r].wrapping_sub(if e.maxwin[s] > MIN_ACK_WINDOW {
                    e.maxwin[s]
                } else {
                    MIN_ACK_WINDOW
                }),
                ack,
            );
        if !in_window {
            return Err(DropReason::CtOutOfWindow);
        }
        if e.maxwin[s] < win {
            e.maxwin[s] = win;
        }
        if !before_eq(end, e.end[s]) {
            e.end[s] = end;
        }
    }
    if has_ack {
        let me = f.ack.wrapping_add(if win == 0 { 1 } else { win });
        if !before_eq(me, e.maxend[r]) {
            e.maxend[r] = me;
        }
    }
    Ok(())
}
