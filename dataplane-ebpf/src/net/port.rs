//! The VM ports: the port record by the tap's ifindex (`PORT_INDEX`,
//! `PORTS`) and anti-spoofing (`ALLOWED`: what else a port may send
//! from).

use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie},
};
use dataplane_common::{maps, AllowedKey, AllowedMac, DropReason, PortInfo, PORT_F_SECURITY};

use crate::base::addr::{ip_eq, mac_eq};

#[map]
pub static PORTS: HashMap<u32, PortInfo> = HashMap::with_max_entries(maps::PORTS_MAX, 0);

#[map]
pub static PORT_INDEX: Array<PortInfo> = Array::with_max_entries(maps::PORT_INDEX_MAX, 0);

/// The port whose tap is `ifindex`: the dense array when the ifindex fits,
/// else the hash.
#[inline(always)]
pub fn port(ifindex: u32) -> Option<&'static PortInfo> {
    if ifindex < maps::PORT_INDEX_MAX {
        return PORT_INDEX
            .get(ifindex)
            .filter(|p| p.flags & dataplane_common::PORT_F_PRESENT != 0);
    }
    // SAFETY: map values stay valid for the program's run.
    unsafe { PORTS.get(&ifindex) }
}

#[map]
pub static ALLOWED: LpmTrie<AllowedKey, AllowedMac> =
    LpmTrie::with_max_entries(maps::ALLOWED_MAX, 0);

/// The MAC allowed to send from `ip` on the port with tap `ifindex`.
#[inline(always)]
pub fn allowed(ifindex: u32, ip: [u8; 4]) -> Option<&'static AllowedMac> {
    ALLOWED.get(Key::new(
        64,
        AllowedKey {
            ifindex: ifindex.to_be_bytes(),
            ip,
        },
    ))
}

/// May this port send from (`mac`, `ip`)?
#[inline(always)]
pub fn source_allowed(
    ifindex: u32,
    port: &PortInfo,
    mac: &[u8; 6],
    ip: &[u8; 4],
) -> Result<(), DropReason> {
    if port.flags & PORT_F_SECURITY == 0 {
        return Ok(());
    }
    if mac_eq(mac, &port.mac) && ip_eq(ip, &port.ipv4) {
        return Ok(());
    }
    match allowed(ifindex, *ip) {
        Some(a) if mac_eq(&a.mac, mac) => Ok(()),
        _ if !mac_eq(mac, &port.mac) => Err(DropReason::SpoofedMac),
        _ => Err(DropReason::SpoofedIp),
    }
}
