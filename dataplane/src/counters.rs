//! Counters: per-interface and drop counters ([`Counters`]), reset, and
//! the memory the kernel accounts to a map.

use std::{collections::BTreeMap, path::Path};

use aya::maps::{
    Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues,
};
use dataplane_common::{maps, DropKey, DropReason, DropStats, HostInfo, IfStats, PortInfo};

use crate::{map_err, Dataplane, DataplaneError};

/// Kernel memory charged to a map (`memlock` of its fdinfo), in bytes.
pub(crate) fn fd_memlock(fd: std::os::fd::BorrowedFd<'_>) -> Option<u64> {
    use std::os::fd::AsRawFd;
    std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Kernel memory of a pinned map, in bytes.
pub fn pinned_map_memlock(path: &Path) -> Option<u64> {
    use std::os::fd::AsFd;
    let m = MapData::from_pin(path).ok()?;
    fd_memlock(m.fd().as_fd())
}

pub(crate) fn zeroes() -> Result<PerCpuValues<IfStats>, DataplaneError> {
    let n = aya::util::nr_cpus().map_err(|(what, e)| DataplaneError::Map {
        name: maps::IF_STATS,
        source: format!("{what}: {e}").into(),
    })?;
    PerCpuValues::try_from(vec![IfStats::default(); n]).map_err(|e| DataplaneError::Map {
        name: maps::IF_STATS,
        source: Box::new(e),
    })
}

/// Counters summed over CPUs: per interface index, and per (interface, reason).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub interfaces: BTreeMap<u32, IfStats>,
    pub drops: BTreeMap<(u32, DropReason), DropStats>,
}

impl Counters {
    /// Sums the counters; slots are named by the interface that holds them
    /// (ports from `PORTS`, the uplink from `HOST`); slot 0 (frames on
    /// unconfigured interfaces) is reported as interface 0.
    fn read(
        ifs: &PerCpuArray<&MapData, IfStats>,
        drops: &PerCpuHashMap<&MapData, DropKey, DropStats>,
        ports: &BpfHashMap<&MapData, u32, PortInfo>,
        host: &Array<&MapData, HostInfo>,
    ) -> Result<Counters, DataplaneError> {
        let mut c = Counters::default();
        let mut slots: Vec<(u32, u32)> = ports
            .iter()
            .filter_map(Result::ok)
            .map(|(ifindex, p)| (p.slot, ifindex))
            .collect();
        if let Ok(h) = host.get(&0, 0) {
            if h.uplink_ifindex != 0 {
                slots.push((h.uplink_slot, h.uplink_ifindex));
            }
            if h.ext_ifindex != 0 {
                slots.push((h.ext_slot, h.ext_ifindex));
            }
        }
        slots.push((0, 0));
        for (slot, ifindex) in slots {
            let Ok(v) = ifs.get(&slot, 0) else { continue };
            let mut sum = IfStats::default();
            for cpu in v.iter() {
                sum.accumulate(cpu);
            }
            if sum != IfStats::default() || ifindex != 0 {
                c.interfaces.entry(ifindex).or_default().accumulate(&sum);
            }
        }
        for entry in drops.iter() {
            let (k, v): (DropKey, PerCpuValues<DropStats>) =
                entry.map_err(map_err(maps::DROP_STATS))?;
            // A code this build does not know (a newer kernel program) is kept
            // out rather than mislabelled.
            let Some(reason) = DropReason::from_code(k.reason) else {
                continue;
            };
            let sum = c.drops.entry((k.ifindex, reason)).or_default();
            for cpu in v.iter() {
                sum.accumulate(cpu);
            }
        }
        Ok(c)
    }

    /// Reads the counters a host's agent pinned under `pin_dir`, without
    /// loading anything (stratoctl, tests).
    pub fn read_pinned(pin_dir: &Path) -> Result<Counters, DataplaneError> {
        let open = |name: &'static str| {
            MapData::from_pin(pin_dir.join(name)).map_err(|e| DataplaneError::Map {
                name,
                source: Box::new(e),
            })
        };
        let ifs_map = Map::PerCpuArray(open(maps::IF_STATS)?);
        let drops_map = Map::PerCpuHashMap(open(maps::DROP_STATS)?);
        let ports_map = Map::HashMap(open(maps::PORTS)?);
        let host_map = Map::Array(open(maps::HOST)?);
        let ifs: PerCpuArray<&MapData, IfStats> =
            (&ifs_map).try_into().map_err(map_err(maps::IF_STATS))?;
        let drops: PerCpuHashMap<&MapData, DropKey, DropStats> =
            (&drops_map).try_into().map_err(map_err(maps::DROP_STATS))?;
        let ports: BpfHashMap<&MapData, u32, PortInfo> =
            (&ports_map).try_into().map_err(map_err(maps::PORTS))?;
        let host: Array<&MapData, HostInfo> =
            (&host_map).try_into().map_err(map_err(maps::HOST))?;
        Counters::read(&ifs, &drops, &ports, &host)
    }

    /// Totals over all interfaces.
    pub fn total(&self) -> IfStats {
        let mut t = IfStats::default();
        for s in self.interfaces.values() {
            t.accumulate(s);
        }
        t
    }
}

impl Dataplane {
    /// Sums the per-CPU counters of this instance.
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        let ifs: PerCpuArray<&MapData, IfStats> = self
            .map_ref(maps::IF_STATS)?
            .try_into()
            .map_err(map_err(maps::IF_STATS))?;
        let drops: PerCpuHashMap<&MapData, DropKey, DropStats> = self
            .map_ref(maps::DROP_STATS)?
            .try_into()
            .map_err(map_err(maps::DROP_STATS))?;
        let ports: BpfHashMap<&MapData, u32, PortInfo> = self
            .map_ref(maps::PORTS)?
            .try_into()
            .map_err(map_err(maps::PORTS))?;
        let host: Array<&MapData, HostInfo> = self
            .map_ref(maps::HOST)?
            .try_into()
            .map_err(map_err(maps::HOST))?;
        Counters::read(&ifs, &drops, &ports, &host)
    }

    /// Clears every counter (tests run fixture rows one at a time).
    pub fn reset_counters(&mut self) -> Result<(), DataplaneError> {
        {
            let mut m: PerCpuArray<&mut MapData, IfStats> = self
                .map_mut(maps::IF_STATS)?
                .try_into()
                .map_err(map_err(maps::IF_STATS))?;
            for i in 0..m.len() {
                m.set(i, zeroes()?, 0).map_err(map_err(maps::IF_STATS))?;
            }
        }
        let mut m: PerCpuHashMap<&mut MapData, DropKey, DropStats> = self
            .map_mut(maps::DROP_STATS)?
            .try_into()
            .map_err(map_err(maps::DROP_STATS))?;
        let keys: Vec<DropKey> = m.keys().filter_map(Result::ok).collect();
        for k in keys {
            let _ = m.remove(&k);
        }
        Ok(())
    }

    /// Zeroes one counter slot (before it is given to a new interface).
    pub fn reset_slot(&mut self, slot: u32) -> Result<(), DataplaneError> {
        let mut m: PerCpuArray<&mut MapData, IfStats> = self
            .map_mut(maps::IF_STATS)?
            .try_into()
            .map_err(map_err(maps::IF_STATS))?;
        m.set(slot, zeroes()?, 0).map_err(map_err(maps::IF_STATS))
    }

    /// Kernel memory of one of this instance's maps, in bytes.
    pub fn map_memlock(&self, name: &'static str) -> Option<u64> {
        use std::os::fd::AsFd;
        let m = self.map_ref(name).ok()?;
        let data = match m {
            Map::LruHashMap(d) | Map::HashMap(d) | Map::LpmTrie(d) | Map::PerCpuArray(d) => d,
            _ => return None,
        };
        fd_memlock(data.fd().as_fd())
    }
}
