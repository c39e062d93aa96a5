//! Connection tracking: the `CT` key and entry (one per connection and
//! host, zoned by routing domain), its states, flags and timeouts, and the
//! `CT_STATS` counters. The key function is shared with `stratoctl trace`.

/// Key of `CT`: a flow in its routing domain (the VPC: addresses are unique
/// there), addresses and ports ordered so
/// that both directions of a connection find the same entry
/// (`(addr_a, port_a) <= (addr_b, port_b)`, compared as big-endian bytes).
/// ICMP echo uses the identifier as both ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    /// The routing domain (`PortInfo::domain`) of the flow's ports: one
    /// entry per connection and host, whichever of its two ends are local.
    pub zone: u32,
    pub addr_a: [u8; 4],
    pub addr_b: [u8; 4],
    pub port_a: u16,
    pub port_b: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl CtKey {
    /// The key of a flow in `zone`, and whether the packet (`saddr`,
    /// `sport` -> `daddr`, `dport`) comes from side a. The same function
    /// in the programs and in user space (`stratoctl trace`).
    #[inline(always)]
    pub fn of_flow(
        zone: u32,
        saddr: [u8; 4],
        daddr: [u8; 4],
        sport: u16,
        dport: u16,
        proto: u8,
    ) -> (CtKey, bool) {
        let s = u32::from_be_bytes(saddr);
        let d = u32::from_be_bytes(daddr);
        let from_a = s < d || (s == d && sport <= dport);
        let key = if from_a {
            CtKey {
                zone,
                addr_a: saddr,
                addr_b: daddr,
                port_a: sport,
                port_b: dport,
                proto,
                _pad: [0; 3],
            }
        } else {
            CtKey {
                zone,
                addr_a: daddr,
                addr_b: saddr,
                port_a: dport,
                port_b: sport,
                proto,
                _pad: [0; 3],
            }
        };
        (key, from_a)
    }
}

/// A connection state's name (metrics, `stratoctl`).
pub const fn ct_state_label(state: u8) -> &'static str {
    match state {
        CT_TCP_SYN_SENT => "syn_sent",
        CT_TCP_SYN_RECV => "syn_recv",
        CT_TCP_ESTABLISHED => "established",
        CT_TCP_FIN_WAIT => "fin_wait",
        CT_TCP_TIME_WAIT => "time_wait",
        CT_TCP_CLOSE => "close",
        CT_UDP => "udp",
        CT_ICMP => "icmp",
        _ => "other",
    }
}

/// Value of `CT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    /// `bpf_ktime_get_coarse_ns` of the last packet.
    pub last_seen: u64,
    /// Per side (a, b): the policy id of that side's port under which the
    /// flow was admitted (or last checked) on this host; 0: that side's
    /// port is not here, or has no stateful policy.
    pub policy: [u32; 2],
    /// Per side: the admitting rule (`PolicyAllow::rule`).
    pub rule: [u32; 2],
    /// `CT_*` state.
    pub state: u8,
    /// `CT_F_*`.
    pub flags: u8,
    /// TCP window scale of side a and side b.
    pub wscale: [u8; 2],
    /// The policy port of the first packet (destination port, or ICMP
    /// `type << 8 | code`): what a re-check after a policy change matches.
    pub policy_port: u16,
    pub _pad: u16,
    /// TCP window tracking per side (a, b): highest sequence end sent,
    /// highest sequence end the peer allowed, largest window advertised.
    pub end: [u32; 2],
    pub maxend: [u32; 2],
    pub maxwin: [u32; 2],
}

impl CtEntry {
    /// The side (0: a, 1: b) that initiated the connection: its port
    /// admitted it by an egress rule, the other side's by an ingress rule.
    pub const fn initiator(&self) -> usize {
        if self.flags & CT_F_ORIG_A != 0 {
            0
        } else {
            1
        }
    }
}

/// `CtEntry::state` values. TCP states follow the kernel's (merged where
/// the kernel's timeouts agree).
pub const CT_TCP_SYN_SENT: u8 = 1;
pub const CT_TCP_SYN_RECV: u8 = 2;
pub const CT_TCP_ESTABLISHED: u8 = 3;
/// One side sent FIN.
pub const CT_TCP_FIN_WAIT: u8 = 4;
/// Both sides sent FIN.
pub const CT_TCP_TIME_WAIT: u8 = 5;
/// Reset.
pub const CT_TCP_CLOSE: u8 = 6;
pub const CT_UDP: u8 = 7;
pub const CT_ICMP: u8 = 8;
/// Any other protocol.
pub const CT_OTHER: u8 = 9;

/// `CtEntry::flags`: the connection's initiator is side a.
pub const CT_F_ORIG_A: u8 = 1;
/// `CtEntry::flags`: a packet in the reply direction was seen.
pub const CT_F_REPLIED: u8 = 4;
/// `CtEntry::flags`: side a / side b sent FIN.
pub const CT_F_FIN_A: u8 = 8;
pub const CT_F_FIN_B: u8 = 16;
/// `CtEntry::flags`: side a / side b offered window scaling in its SYN.
pub const CT_F_WS_A: u8 = 32;
pub const CT_F_WS_B: u8 = 64;

/// Seconds an entry lives after its last packet, per state and flags: the
/// Linux defaults (nf_conntrack_tcp_timeout_*, udp, icmp, generic).
pub const fn ct_timeout_secs(state: u8, flags: u8) -> u64 {
    match state {
        CT_TCP_SYN_SENT => 120,
        CT_TCP_SYN_RECV => 60,
        CT_TCP_ESTABLISHED => 432_000,
        CT_TCP_FIN_WAIT => 120,
        CT_TCP_TIME_WAIT => 120,
        CT_TCP_CLOSE => 10,
        CT_UDP if flags & CT_F_REPLIED != 0 => 120,
        CT_UDP => 30,
        CT_ICMP => 30,
        _ => 600,
    }
}

/// Connection tracking counters, one copy per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtStats {
    /// Packets that found their flow's entry.
    pub hits: u64,
    /// Entries created.
    pub inserts: u64,
    /// Entries the kernel refused to create (the packet was still decided
    /// by the rules, and passed only if they allow it).
    pub insert_failures: u64,
    /// Entries removed by the packet path (revoked, or reopened).
    pub removed: u64,
    /// First packets checked against the rules.
    pub policy_lookups: u64,
    /// ICMP errors passed as related to a tracked flow.
    pub related: u64,
    /// Entries checked again after their port's policy changed.
    pub rechecked: u64,
    pub _reserved: u64,
}

impl CtStats {
    pub fn accumulate(&mut self, o: &CtStats) {
        self.hits += o.hits;
        self.inserts += o.inserts;
        self.insert_failures += o.insert_failures;
        self.removed += o.removed;
        self.policy_lookups += o.policy_lookups;
        self.related += o.related;
        self.rechecked += o.rechecked;
    }
}

// Layouts are an ABI between kernel and user space: pin them.
const _: () = assert!(core::mem::size_of::<CtKey>() == 20);
const _: () = assert!(core::mem::size_of::<CtEntry>() == 56);
const _: () = assert!(core::mem::size_of::<CtStats>() == 64);

crate::pod!(CtKey, CtEntry, CtStats);
