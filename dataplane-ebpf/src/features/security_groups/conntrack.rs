//! The connection table (`CT`, one entry per connection and host, zoned by
//! routing domain), its counters, and TCP state and window tracking.

use aya_ebpf::{
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use dataplane_common::{
    ct_timeout_secs, maps, CtEntry, CtKey, CtStats, DropReason, CT_F_FIN_A, CT_F_FIN_B,
    CT_F_ORIG_A, CT_F_REPLIED, CT_F_WS_A, CT_F_WS_B, CT_TCP_CLOSE, CT_TCP_ESTABLISHED,
    CT_TCP_FIN_WAIT, CT_TCP_SYN_RECV, CT_TCP_SYN_SENT, CT_TCP_TIME_WAIT,
};

use crate::base::{
    flow::Flow,
    parse::{IPPROTO_TCP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

#[map]
pub static CT: LruHashMap<CtKey, CtEntry> = LruHashMap::with_max_entries(maps::CT_MAX_DEFAULT, 0);

#[map]
static CT_STATS: PerCpuArray<CtStats> = PerCpuArray::with_max_entries(1, 0);

/// Smallest window the ACK check allows for (the kernel's MAXACKWINDOW floor).
const MIN_ACK_WINDOW: u32 = 66_000;

/// Entries picked up mid-connection skip the window checks (the kernel's
/// "be liberal" for loose pickup): their window scale is unknown.
pub const CT_F_LIBERAL: u8 = 128;

#[inline(always)]
pub fn stats() -> Option<&'static mut CtStats> {
    // SAFETY: per-CPU value owned by this CPU for the program's run.
    CT_STATS.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

#[inline(always)]
pub fn expired(e: &CtEntry, now: u64) -> bool {
    now.wrapping_sub(e.last_seen) > ct_timeout_secs(e.state, e.flags) * 1_000_000_000
}

/// TCP flag combinations no connection has.
#[inline(always)]
pub fn tcp_flags_invalid(fl: u8) -> bool {
    let f = fl & (TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK);
    f == 0
        || (f & TCP_SYN != 0 && f & (TCP_FIN | TCP_RST) != 0)
        || (f & TCP_FIN != 0 && f & TCP_ACK == 0)
}

/// An ICMP error quoting a live flow that `policy` admitted on either side.
#[inline(always)]
pub fn related(domain: u32, f: &Flow, policy: u32, now: u64) -> bool {
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
pub fn track(e: &mut CtEntry, from_a: bool, f: &Flow, now: u64) -> Result<(), DropReason> {
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
