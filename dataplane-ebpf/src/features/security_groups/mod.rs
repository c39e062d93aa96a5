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

//!
//! [`Check`] is one packet's passage through the groups of this host;
//! `policy` holds the rule tables and their lookup, `conntrack` the
//! connection table and its TCP tracking.

mod conntrack;
mod policy;

use dataplane_common::{
    CtEntry, CtKey, DropReason, PortInfo, CT_F_ORIG_A, CT_F_WS_A, CT_F_WS_B, CT_ICMP, CT_OTHER,
    CT_TCP_CLOSE, CT_TCP_ESTABLISHED, CT_TCP_FIN_WAIT, CT_TCP_SYN_SENT, CT_TCP_TIME_WAIT, CT_UDP,
    DIR_EGRESS, DIR_INGRESS, PORT_F_STATELESS,
};

use self::{
    conntrack::{expired, related, stats, tcp_flags_invalid, track, CT, CT_F_LIBERAL},
    policy::{denied, lookup, remote},
};
use crate::base::{
    clock,
    flow::Flow,
    parse::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    scratch::CheckState,
};

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
    /// laundered pointer at each stage (see `base::scratch::Scratch`).
    s: *mut CheckState,
    /// The flow's entry when looked up and found; null otherwise.
    entry: *mut CtEntry,
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
        st.now = clock::now();
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
        let remote = remote(f, dir);
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
