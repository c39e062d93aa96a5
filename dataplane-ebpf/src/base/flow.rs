//! A packet's flow: what the security groups and connection tracking need
//! of an IPv4 packet (addresses, protocol, ports, TCP sequence space and
//! window scale, an ICMP error's quoted flow), read once into the scratch.

use dataplane_common::DropReason;

use super::{
    ctx::Pkt,
    parse::{ptr_at, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, TCP_SYN},
};

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
}

/// Where the TCP option walk works (see [`tcp_wscale`]).
#[repr(C)]
pub struct Options {
    /// The walk's position.
    pub cursor: u32,
    /// The options, copied out of the packet.
    pub bytes: [u8; 64],
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
