//! The rule tables and their lookup: two LPM tries (and two hashes in
//! front of them for host addresses and single ports), whatever the number
//! of rules.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{lpm_trie::Key, HashMap, LpmTrie},
};
use dataplane_common::{
    maps, DropReason, PolicyAddrKey, PolicyAllow, PolicyClass, PolicyPortKey, DIR_EGRESS,
};

use crate::base::flow::Flow;

#[map]
static POLICY_ADDR: LpmTrie<PolicyAddrKey, PolicyClass> =
    LpmTrie::with_max_entries(maps::POLICY_ADDR_MAX, 0);

#[map]
static POLICY_PORT: LpmTrie<PolicyPortKey, PolicyAllow> =
    LpmTrie::with_max_entries(maps::POLICY_PORT_MAX, 0);

#[map]
static POLICY_HOST: HashMap<PolicyAddrKey, PolicyClass> =
    HashMap::with_max_entries(maps::POLICY_HASH_MAX, BPF_F_NO_PREALLOC);

#[map]
static POLICY_EXACT: HashMap<PolicyPortKey, PolicyAllow> =
    HashMap::with_max_entries(maps::POLICY_HASH_MAX, BPF_F_NO_PREALLOC);

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
pub fn denied(dir: u32) -> DropReason {
    if dir == DIR_EGRESS {
        DropReason::PolicyDeniedEgress
    } else {
        DropReason::PolicyDeniedIngress
    }
}

/// The remote address of a packet in direction `dir` of the port.
#[inline(always)]
pub fn remote(f: &Flow, dir: u32) -> [u8; 4] {
    if dir == DIR_EGRESS {
        f.daddr
    } else {
        f.saddr
    }
}
