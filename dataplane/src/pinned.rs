//! Reads of a host's pinned maps without loading anything (`stratoctl`).

use std::{collections::BTreeMap, path::Path};

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    HashMap as BpfHashMap, Map, MapData, MapError,
};
use dataplane_common::{
    maps, CtEntry, CtKey, Endpoint, EpKey, PolicyAddrKey, PolicyAllow, PolicyClass, PolicyPortKey,
    PortInfo,
};

use crate::{map_err, DataplaneError};

/// The ports table a host's agent pinned under `pin_dir` (stratoctl, tests).
pub fn read_pinned_ports(pin_dir: &Path) -> Result<BTreeMap<u32, PortInfo>, DataplaneError> {
    let data = MapData::from_pin(pin_dir.join(maps::PORTS)).map_err(|e| DataplaneError::Map {
        name: maps::PORTS,
        source: Box::new(e),
    })?;
    let map = aya::maps::Map::HashMap(data);
    let m: aya::maps::HashMap<&MapData, u32, PortInfo> =
        (&map)
            .try_into()
            .map_err(|e: aya::maps::MapError| DataplaneError::Map {
                name: maps::PORTS,
                source: Box::new(e),
            })?;
    let mut out = BTreeMap::new();
    for kv in m.iter() {
        let (k, v) = kv.map_err(|e| DataplaneError::Map {
            name: maps::PORTS,
            source: Box::new(e),
        })?;
        out.insert(k, v);
    }
    Ok(out)
}

/// One key of a host's pinned hash map (`lru`: an LRU hash), read only.
pub(crate) fn read_pinned_key<K: aya::Pod, V: aya::Pod>(
    pin_dir: &Path,
    name: &'static str,
    lru: bool,
    key: &K,
) -> Result<Option<V>, DataplaneError> {
    let data = MapData::from_pin(pin_dir.join(name)).map_err(|e| DataplaneError::Map {
        name,
        source: Box::new(e),
    })?;
    let map = if lru {
        Map::LruHashMap(data)
    } else {
        Map::HashMap(data)
    };
    let m: BpfHashMap<&MapData, K, V> = (&map).try_into().map_err(map_err(name))?;
    match m.get(key, 0) {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(map_err(name)(e)),
    }
}

/// The endpoint a host's dataplane holds for `ip` in routing `domain`.
pub fn read_pinned_endpoint(
    pin_dir: &Path,
    domain: u32,
    ip: std::net::Ipv4Addr,
) -> Result<Option<Endpoint>, DataplaneError> {
    let key = EpKey {
        domain,
        ip: ip.octets(),
    };
    read_pinned_key(pin_dir, maps::ENDPOINTS, false, &key)
}

/// The connection entry a host holds for `key`, if any (read only).
pub fn read_pinned_ct(pin_dir: &Path, key: &CtKey) -> Result<Option<CtEntry>, DataplaneError> {
    read_pinned_key(pin_dir, maps::CT, true, key)
}

/// The rule number of `policy` that allows (`dir`, `remote`, `proto`,
/// `port`) on a host, looked up in its pinned tries as the programs do.
pub fn read_pinned_policy(
    pin_dir: &Path,
    policy: u32,
    dir: u32,
    remote: std::net::Ipv4Addr,
    proto: u8,
    port: u16,
) -> Result<Option<u32>, DataplaneError> {
    let open = |name: &'static str| -> Result<MapData, DataplaneError> {
        MapData::from_pin(pin_dir.join(name)).map_err(|e| DataplaneError::Map {
            name,
            source: Box::new(e),
        })
    };
    // As the programs look up: the hashes first, then the tries.
    let akey = PolicyAddrKey {
        policy_dir: ((policy << 1) | dir).to_be_bytes(),
        ip: remote.octets(),
    };
    let host = Map::HashMap(open(maps::POLICY_HOST)?);
    let h: BpfHashMap<&MapData, PolicyAddrKey, PolicyClass> =
        (&host).try_into().map_err(map_err(maps::POLICY_HOST))?;
    let class = match h.get(&akey, 0) {
        Ok(c) => c.class,
        Err(MapError::KeyNotFound) => {
            let addr = Map::LpmTrie(open(maps::POLICY_ADDR)?);
            let a: LpmTrie<&MapData, PolicyAddrKey, PolicyClass> =
                (&addr).try_into().map_err(map_err(maps::POLICY_ADDR))?;
            match a.get(&Key::new(64, akey), 0) {
                Ok(c) => c.class,
                Err(MapError::KeyNotFound) => return Ok(None),
                Err(e) => return Err(map_err(maps::POLICY_ADDR)(e)),
            }
        }
        Err(e) => return Err(map_err(maps::POLICY_HOST)(e)),
    };
    let pkey = PolicyPortKey {
        class: class.to_be_bytes(),
        proto,
        port: port.to_be_bytes(),
        _pad: 0,
    };
    let exact = Map::HashMap(open(maps::POLICY_EXACT)?);
    let e: BpfHashMap<&MapData, PolicyPortKey, PolicyAllow> =
        (&exact).try_into().map_err(map_err(maps::POLICY_EXACT))?;
    match e.get(&pkey, 0) {
        Ok(v) => return Ok(Some(v.rule)),
        Err(MapError::KeyNotFound) => {}
        Err(e) => return Err(map_err(maps::POLICY_EXACT)(e)),
    }
    let ports = Map::LpmTrie(open(maps::POLICY_PORT)?);
    let p: LpmTrie<&MapData, PolicyPortKey, PolicyAllow> =
        (&ports).try_into().map_err(map_err(maps::POLICY_PORT))?;
    match p.get(&Key::new(56, pkey), 0) {
        Ok(v) => Ok(Some(v.rule)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(map_err(maps::POLICY_PORT)(e)),
    }
}
