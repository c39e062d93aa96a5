//! Router SNAT on gateway hosts: the mapping tables' garbage collection and
//! occupancy.

use aya::maps::{HashMap as BpfHashMap, MapData};
use dataplane_common::{maps, NatIn, NatKey, NatOut, NatRevKey};

use crate::{coarse_now_ns, map_access::gone, map_err, Dataplane, DataplaneError};

impl Dataplane {
    /// Removes router SNAT mappings idle past their timeout (and each
    /// direction whose other one is gone). Returns (live, removed).
    pub fn snat_gc(&mut self, now_ns: u64) -> Result<(u64, u64), DataplaneError> {
        let (name_in, name_out) = (maps::SNAT_IN, maps::SNAT_OUT);
        let mut dead_in = Vec::new();
        let mut live_in = std::collections::BTreeSet::new();
        {
            let m: BpfHashMap<&MapData, NatRevKey, NatIn> = self
                .map_ref(name_in)?
                .try_into()
                .map_err(map_err(name_in))?;
            for kv in m.iter() {
                let Ok((k, v)) = kv else { continue };
                let idle = now_ns.saturating_sub(v.last_seen);
                if idle > dataplane_common::snat_timeout_secs(k.proto) * 1_000_000_000 {
                    dead_in.push(k);
                } else {
                    live_in.insert((k.ext_ip, k.ext_port, k.remote, k.remote_port, k.proto));
                }
            }
        }
        let mut dead_out = Vec::new();
        let mut live = 0u64;
        {
            let m: BpfHashMap<&MapData, NatKey, NatOut> = self
                .map_ref(name_out)?
                .try_into()
                .map_err(map_err(name_out))?;
            for kv in m.iter() {
                let Ok((k, v)) = kv else { continue };
                let idle = now_ns.saturating_sub(v.last_seen);
                let back = (v.ext_ip, v.ext_port, k.remote, k.remote_port, k.proto);
                if idle > dataplane_common::snat_timeout_secs(k.proto) * 1_000_000_000
                    || !live_in.contains(&back)
                {
                    dead_out.push(k);
                } else {
                    live += 1;
                }
            }
        }
        {
            let mut m: BpfHashMap<&mut MapData, NatRevKey, NatIn> = self
                .map_mut(name_in)?
                .try_into()
                .map_err(map_err(name_in))?;
            for k in &dead_in {
                gone(m.remove(k), name_in)?;
            }
        }
        let mut m: BpfHashMap<&mut MapData, NatKey, NatOut> = self
            .map_mut(name_out)?
            .try_into()
            .map_err(map_err(name_out))?;
        for k in &dead_out {
            gone(m.remove(k), name_out)?;
        }
        Ok((live, (dead_in.len() + dead_out.len()) as u64))
    }

    /// Takes every external port in `ports` of `ext_ip` for flows to
    /// `remote`:`remote_port` (`proto`), as if other VMs held them: tests of
    /// exhaustion.
    pub fn snat_occupy(
        &mut self,
        ext_ip: [u8; 4],
        remote: [u8; 4],
        remote_port: u16,
        proto: u8,
        ports: std::ops::RangeInclusive<u16>,
    ) -> Result<(), DataplaneError> {
        let name = maps::SNAT_IN;
        let mut m: BpfHashMap<&mut MapData, NatRevKey, NatIn> =
            self.map_mut(name)?.try_into().map_err(map_err(name))?;
        let now = coarse_now_ns();
        for p in ports {
            let k = NatRevKey {
                ext_ip,
                remote,
                ext_port: p,
                remote_port,
                proto,
                _pad: [0; 3],
            };
            let v = NatIn {
                domain: 0,
                inside: [10, 255, 255, 1],
                inside_port: p,
                last_seen: now,
                ..NatIn::default()
            };
            m.insert(k, v, 0).map_err(map_err(name))?;
        }
        Ok(())
    }

    /// Every router SNAT mapping: (the VM's flow, its external address and
    /// port) (tests, `stratoctl`).
    pub fn snat_entries(&self) -> Result<Vec<(NatKey, NatOut)>, DataplaneError> {
        let name = maps::SNAT_OUT;
        let m: BpfHashMap<&MapData, NatKey, NatOut> =
            self.map_ref(name)?.try_into().map_err(map_err(name))?;
        Ok(m.iter().filter_map(Result::ok).collect())
    }
}
