//! What the pipeline needs from a packet context, for both attach points:
//! XDP (`XdpContext`, an xdp_buff) and TC (`TcContext`, an sk_buff). The
//! logic is written once against [`Pkt`]; only resizing and the verdict
//! codes differ.

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, xdp_action, BPF_F_ADJ_ROOM_ENCAP_L2_ETH,
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L4_UDP, BPF_F_MARK_MANGLED_0,
        BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_SHOT,
    },
    cty::c_void,
    helpers::generated::{
        bpf_l4_csum_replace, bpf_skb_change_tail, bpf_skb_pull_data, bpf_xdp_adjust_head,
        bpf_xdp_adjust_tail, bpf_xdp_get_buff_len,
    },
    macros::map,
    maps::ProgramArray,
    programs::{TcContext, XdpContext},
    EbpfContext,
};
use dataplane_common::maps;

/// The port pipeline's tails (XDP builds), by `maps::TAIL_*`: external
/// traffic, the load balancer, the pipeline itself (re-entered after the
/// load balancer's translation), local replies of load balancer members.
/// Here because [`Pkt::tail`] jumps through them.
#[map]
pub static PORT_OUT_XDP: ProgramArray = ProgramArray::with_max_entries(maps::TAILS, 0);

/// The same for the TC build.
#[map]
pub static PORT_OUT_TC: ProgramArray = ProgramArray::with_max_entries(maps::TAILS, 0);

pub trait Pkt {
    /// Verdict: continue into the kernel stack.
    const PASS: i32;
    /// Verdict: drop.
    const DROP: i32;
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    /// Whole frame length (linear part and fragments).
    fn len(&self) -> u64;
    fn ingress_ifindex(&self) -> u32;
    /// The frame carries a VLAN tag outside its data. At TC the kernel has
    /// already moved the outer 802.1Q or 802.1ad tag of a received frame
    /// into the sk_buff's metadata (`skb_vlan_untag` runs before clsact
    /// ingress), so the Ethernet header shows the inner ethertype and the
    /// tag would be put back on by whichever device the frame is redirected
    /// to (also a tag that never was in the data: one a VLAN device in a
    /// veth peer's namespace left in the sk_buff). XDP sees a tag the VM
    /// put in the frame in the data: always false there. (A tag a veth
    /// peer carried in the sk_buff is readable at XDP only through the
    /// `bpf_xdp_metadata_rx_vlan_tag` kfunc, which aya-ebpf 0.2 cannot
    /// call; a redirected xdp_frame carries no tag, so it is lost, not
    /// forwarded. Agents attach the TC build.)
    fn vlan_tagged(&self) -> bool;
    /// The raw context, for helpers that take either kind.
    fn raw(&self) -> *mut c_void;
    /// Inserts `n` bytes after the Ethernet header. Afterwards the first
    /// `14 + n` bytes are unspecified: the caller writes all of them.
    /// `encap`: the new bytes are IPv4/UDP tunnel headers plus an inner
    /// Ethernet header (so GSO packets are segmented as a tunnel).
    fn grow_l3(&self, n: u32, encap: bool) -> bool;
    /// Cuts the frame to `len` bytes.
    fn truncate(&self, len: u32) -> bool;
    /// GSO segment size of a TSO/GSO aggregate (0: a plain frame).
    fn gso_size(&self) -> u32;
    /// Updates the TCP/UDP checksum at `off` for a pseudo-header address
    /// that changed from `from` to `to` (network-order words as read). A
    /// UDP checksum of 0 (none) stays 0. At TC the kernel's helper does it,
    /// so a checksum the NIC is still to complete (CHECKSUM_PARTIAL) stays
    /// right; packet pointers must be taken again afterwards.
    fn l4_csum_replace4(&self, off: usize, from: u32, to: u32, udp: bool) -> bool;
    /// Updates the TCP/UDP checksum at `off` for a 16-bit field outside
    /// the pseudo-header (a port) that changed from `from` to `to` (host
    /// order numbers). A UDP checksum of 0 stays 0; at TC the kernel's
    /// helper leaves a checksum still to be completed alone.
    fn l4_csum_replace2(&self, off: usize, from: u16, to: u16, udp: bool) -> bool;
    /// Tail-calls the program in `slot` (`maps::TAIL_*`) of the port
    /// pipeline's program array of this context's kind; returns only if
    /// that failed.
    fn tail(&self, slot: u32);
}

/// RFC 1624 update of the checksum at `off` in the linear part for a
/// 32-bit word that changed; the XDP implementation of
/// [`Pkt::l4_csum_replace4`].
#[inline(always)]
fn csum_replace4_direct(
    data: usize,
    data_end: usize,
    off: usize,
    from: u32,
    to: u32,
    udp: bool,
) -> bool {
    if data + off + 2 > data_end {
        return false;
    }
    let p = (data + off) as *mut [u8; 2];
    // SAFETY: bounds-checked above.
    let b = unsafe { &mut *p };
    let old = u16::from_be_bytes(*b);
    if udp && old == 0 {
        return true;
    }
    let f = from.to_ne_bytes();
    let t = to.to_ne_bytes();
    let mut c = super::csum::replace16(
        old,
        u16::from_be_bytes([f[0], f[1]]),
        u16::from_be_bytes([t[0], t[1]]),
    );
    c = super::csum::replace16(
        c,
        u16::from_be_bytes([f[2], f[3]]),
        u16::from_be_bytes([t[2], t[3]]),
    );
    if udp && c == 0 {
        c = 0xffff;
    }
    *b = c.to_be_bytes();
    true
}

impl Pkt for XdpContext {
    const PASS: i32 = xdp_action::XDP_PASS as i32;
    const DROP: i32 = xdp_action::XDP_DROP as i32;
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }
    #[inline(always)]
    fn len(&self) -> u64 {
        // SAFETY: self.ctx is the live xdp_md.
        unsafe { bpf_xdp_get_buff_len(self.ctx) }
    }
    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        XdpContext::ingress_ifindex(self) as u32
    }
    #[inline(always)]
    fn vlan_tagged(&self) -> bool {
        false
    }
    #[inline(always)]
    fn raw(&self) -> *mut c_void {
        self.ctx as *mut c_void
    }
    #[inline(always)]
    fn grow_l3(&self, n: u32, _encap: bool) -> bool {
        // Growing the head: the old Ethernet header ends up at n..n+14,
        // inside the bytes the caller rewrites.
        // SAFETY: the kernel checks the headroom.
        unsafe { bpf_xdp_adjust_head(self.ctx, -(n as i32)) == 0 }
    }
    #[inline(always)]
    fn truncate(&self, len: u32) -> bool {
        let cur = self.len() as i64;
        // SAFETY: shrinking only; the kernel checks the bounds.
        unsafe { bpf_xdp_adjust_tail(self.ctx, (len as i64 - cur) as i32) == 0 }
    }
    #[inline(always)]
    fn gso_size(&self) -> u32 {
        0
    }
    #[inline(always)]
    fn l4_csum_replace4(&self, off: usize, from: u32, to: u32, udp: bool) -> bool {
        csum_replace4_direct(self.data(), self.data_end(), off, from, to, udp)
    }
    #[inline(always)]
    fn l4_csum_replace2(&self, off: usize, from: u16, to: u16, udp: bool) -> bool {
        let (data, end) = (self.data(), self.data_end());
        if data + off + 2 > end {
            return false;
        }
        let p = (data + off) as *mut [u8; 2];
        // SAFETY: bounds-checked above.
        let b = unsafe { &mut *p };
        let old = u16::from_be_bytes(*b);
        if udp && old == 0 {
            return true;
        }
        let mut c = super::csum::replace16(old, from, to);
        if udp && c == 0 {
            c = 0xffff;
        }
        *b = c.to_be_bytes();
        true
    }
    #[inline(always)]
    fn tail(&self, slot: u32) {
        // SAFETY: the array holds XDP programs of the same kind (frags).
        unsafe { PORT_OUT_XDP.tail_call(self, slot) }
    }
}

/// `BPF_F_ADJ_ROOM_ENCAP_L2(len)`: the inner L2 header's length.
const fn adj_room_encap_l2(len: u64) -> u64 {
    (len & 0xff) << 56
}

impl Pkt for TcContext {
    const PASS: i32 = TC_ACT_OK;
    const DROP: i32 = TC_ACT_SHOT;
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }
    #[inline(always)]
    fn len(&self) -> u64 {
        TcContext::len(self) as u64
    }
    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        // SAFETY: the live __sk_buff; on clsact ingress `ifindex` is the
        // device the packet arrived on.
        unsafe { (*self.skb.skb).ifindex }
    }
    #[inline(always)]
    fn vlan_tagged(&self) -> bool {
        // SAFETY: the live __sk_buff; `vlan_present` reads the skb's tag
        // (the kernel rewrites the access to its `vlan_all`).
        unsafe { (*self.skb.skb).vlan_present != 0 }
    }
    #[inline(always)]
    fn raw(&self) -> *mut c_void {
        self.as_ptr()
    }
    #[inline(always)]
    fn grow_l3(&self, n: u32, encap: bool) -> bool {
        let flags = if encap {
            (BPF_F_ADJ_ROOM_ENCAP_L3_IPV4
                | BPF_F_ADJ_ROOM_ENCAP_L4_UDP
                | BPF_F_ADJ_ROOM_ENCAP_L2_ETH) as u64
                | adj_room_encap_l2(14)
        } else {
            0
        };
        self.skb
            .adjust_room(n as i32, BPF_ADJ_ROOM_MAC, flags)
            .is_ok()
    }
    #[inline(always)]
    fn truncate(&self, len: u32) -> bool {
        // SAFETY: the live __sk_buff.
        unsafe { bpf_skb_change_tail(self.skb.skb, len, 0) == 0 }
    }
    #[inline(always)]
    fn gso_size(&self) -> u32 {
        // SAFETY: the live __sk_buff.
        unsafe { (*self.skb.skb).gso_size }
    }
    #[inline(always)]
    fn l4_csum_replace4(&self, off: usize, from: u32, to: u32, udp: bool) -> bool {
        let mut flags = (BPF_F_PSEUDO_HDR | 4) as u64;
        if udp {
            flags |= BPF_F_MARK_MANGLED_0 as u64;
        }
        // SAFETY: the live __sk_buff; the helper checks the offset.
        unsafe { bpf_l4_csum_replace(self.skb.skb, off as u32, from as u64, to as u64, flags) == 0 }
    }
    #[inline(always)]
    fn l4_csum_replace2(&self, off: usize, from: u16, to: u16, udp: bool) -> bool {
        let mut flags = 2u64;
        if udp {
            flags |= BPF_F_MARK_MANGLED_0 as u64;
        }
        // The helper takes the values as they sit in the packet.
        let (f, t) = (from.to_be() as u64, to.to_be() as u64);
        // SAFETY: the live __sk_buff; the helper checks the offset.
        unsafe { bpf_l4_csum_replace(self.skb.skb, off as u32, f, t, flags) == 0 }
    }
    #[inline(always)]
    fn tail(&self, slot: u32) {
        // SAFETY: the array holds TC programs.
        unsafe { PORT_OUT_TC.tail_call(self, slot) }
    }
}

/// Makes the first `want` bytes of an sk_buff directly readable (headers
/// of a non-linear skb may sit in its fragments).
#[inline(always)]
pub fn tc_linearize(ctx: &TcContext, want: u32) {
    let len = ctx.len();
    let want = if len < want { len } else { want };
    if ((ctx.data_end() - ctx.data()) as u32) < want {
        // SAFETY: the live __sk_buff.
        unsafe {
            let _ = bpf_skb_pull_data(ctx.skb.skb, want);
        }
    }
}
