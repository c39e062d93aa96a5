//! Typed access to the maps: by name, hash and LPM-trie reads, upserts and
//! deletes, and the LPM key layouts.

use std::collections::BTreeMap;

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    HashMap as BpfHashMap, Map, MapData, MapError,
};
use dataplane_common::{AllowedKey, RouteKey};
use ipnetwork::Ipv4Network;

use crate::{map_err, Dataplane, DataplaneError};

pub(crate) fn lpm_key<T: aya::Pod>(
    owner: u32,
    net: Ipv4Network,
    mk: fn([u8; 4], [u8; 4]) -> T,
) -> Key<T> {
    Key::new(
        32 + net.prefix() as u32,
        mk(owner.to_be_bytes(), net.ip().octets()),
    )
}

pub(crate) fn route_key(d: [u8; 4], ip: [u8; 4]) -> RouteKey {
    RouteKey { domain: d, ip }
}

pub(crate) fn allowed_key(i: [u8; 4], ip: [u8; 4]) -> AllowedKey {
    AllowedKey { ifindex: i, ip }
}

pub(crate) fn from_lpm(prefix: u32, owner: [u8; 4], ip: [u8; 4]) -> Option<(u32, Ipv4Network)> {
    let net = Ipv4Network::new(ip.into(), prefix.checked_sub(32)? as u8).ok()?;
    Some((u32::from_be_bytes(owner), net))
}

/// A removal that found nothing is fine (the entry is gone either way).
pub(crate) fn gone(r: Result<(), MapError>, name: &'static str) -> Result<(), DataplaneError> {
    match r {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        // An LPM trie reports a missing key as the syscall's ENOENT.
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(2) => Ok(()),
        Err(e) => Err(map_err(name)(e)),
    }
}

impl Dataplane {
    pub(crate) fn map_ref(&self, name: &'static str) -> Result<&Map, DataplaneError> {
        self.ebpf.map(name).ok_or(DataplaneError::Map {
            name,
            source: "missing".into(),
        })
    }

    pub(crate) fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, DataplaneError> {
        self.ebpf.map_mut(name).ok_or(DataplaneError::Map {
            name,
            source: "missing".into(),
        })
    }

    pub(crate) fn hash_read<K: aya::Pod + Ord, V: aya::Pod>(
        &self,
        name: &'static str,
    ) -> Result<BTreeMap<K, V>, DataplaneError> {
        let m: BpfHashMap<&MapData, K, V> =
            self.map_ref(name)?.try_into().map_err(map_err(name))?;
        m.iter()
            .map(|kv| kv.map_err(map_err(name)))
            .collect::<Result<BTreeMap<K, V>, _>>()
    }

    pub(crate) fn hash_upsert<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        rows: &[(K, V)],
    ) -> Result<(), DataplaneError> {
        let mut m: BpfHashMap<&mut MapData, K, V> =
            self.map_mut(name)?.try_into().map_err(map_err(name))?;
        for (k, v) in rows {
            m.insert(k, v, 0).map_err(map_err(name))?;
        }
        Ok(())
    }

    pub(crate) fn hash_delete<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        keys: &[K],
    ) -> Result<(), DataplaneError> {
        let mut m: BpfHashMap<&mut MapData, K, V> =
            self.map_mut(name)?.try_into().map_err(map_err(name))?;
        for k in keys {
            gone(m.remove(k), name)?;
        }
        Ok(())
    }

    /// An LPM trie keyed (owner, prefix), as [`Tables`] holds it.
    pub(crate) fn lpm_read<K: aya::Pod, V: aya::Pod>(
        &self,
        name: &'static str,
        parts: fn(K) -> ([u8; 4], [u8; 4]),
    ) -> Result<BTreeMap<(u32, Ipv4Network), V>, DataplaneError> {
        let m: LpmTrie<&MapData, K, V> = self.map_ref(name)?.try_into().map_err(map_err(name))?;
        let mut out = BTreeMap::new();
        for kv in m.iter() {
            let (k, v) = kv.map_err(map_err(name))?;
            let (owner, ip) = parts(k.data());
            if let Some(key) = from_lpm(k.prefix_len(), owner, ip) {
                out.insert(key, v);
            }
        }
        Ok(out)
    }

    pub(crate) fn lpm_upsert<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        rows: &[((u32, Ipv4Network), V)],
        mk: fn([u8; 4], [u8; 4]) -> K,
    ) -> Result<(), DataplaneError> {
        let mut m: LpmTrie<&mut MapData, K, V> =
            self.map_mut(name)?.try_into().map_err(map_err(name))?;
        for ((owner, net), v) in rows {
            m.insert(&lpm_key(*owner, *net, mk), v, 0)
                .map_err(map_err(name))?;
        }
        Ok(())
    }

    pub(crate) fn lpm_delete<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        keys: &[(u32, Ipv4Network)],
        mk: fn([u8; 4], [u8; 4]) -> K,
    ) -> Result<(), DataplaneError> {
        let mut m: LpmTrie<&mut MapData, K, V> =
            self.map_mut(name)?.try_into().map_err(map_err(name))?;
        for (owner, net) in keys {
            gone(m.remove(&lpm_key(*owner, *net, mk)), name)?;
        }
        Ok(())
    }
}
