//! The load balancer's maps: writes from [`LbOps`], and what the agent
//! reads back (connections for access logs and gauges, counters).

use std::collections::BTreeMap;

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuValues};
use dataplane_common::{
    maps, LbBackend, LbFlow, LbFlowKey, LbPublic, LbPublicKey, LbRev, LbService, LbServiceKey,
    LbStats,
};

use super::{map_err, Dataplane, DataplaneError};

fn lb_zeroes(name: &'static str) -> Result<PerCpuValues<LbStats>, DataplaneError> {
    let n = aya::util::nr_cpus().map_err(|(what, e)| DataplaneError::Map {
        name,
        source: format!("{what}: {e}").into(),
    })?;
    PerCpuValues::try_from(vec![LbStats::default(); n]).map_err(|e| DataplaneError::Map {
        name,
        source: Box::new(e),
    })
}

impl Dataplane {
    /// Applies load balancer writes in their order (see the agent's `lb` realiser).
    pub fn lb_apply(&mut self, ops: &LbOps) -> Result<(), DataplaneError> {
        {
            let name = maps::LB_MAGLEV;
            let mut m: Array<&mut MapData, u32> =
                self.map_mut(name)?.try_into().map_err(map_err(name))?;
            for (off, table) in &ops.tables {
                for (i, id) in table.iter().enumerate() {
                    m.set(off + i as u32, id, 0).map_err(map_err(name))?;
                }
            }
        }
        for (name, ids) in [
            (maps::LB_SERVICE_STATS, &ops.new_services),
            (maps::LB_BACKEND_STATS, &ops.new_backends),
        ] {
            let mut m: PerCpuArray<&mut MapData, LbStats> =
                self.map_mut(name)?.try_into().map_err(map_err(name))?;
            for id in ids {
                m.set(*id, lb_zeroes(name)?, 0).map_err(map_err(name))?;
            }
        }
        {
            let name = maps::LB_BACKENDS;
            let mut m: Array<&mut MapData, LbBackend> =
                self.map_mut(name)?.try_into().map_err(map_err(name))?;
            for (id, b) in &ops.backends {
                m.set(*id, b, 0).map_err(map_err(name))?;
            }
        }
        {
            let name = maps::LB_SERVICES;
            let mut m: BpfHashMap<&mut MapData, LbServiceKey, LbService> =
                self.map_mut(name)?.try_into().map_err(map_err(name))?;
            for (k, v) in &ops.services {
                m.insert(k, v, 0).map_err(map_err(name))?;
            }
            for k in &ops.service_deletes {
                match m.remove(k) {
                    Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                    Err(e) => return Err(map_err(name)(e)),
                }
            }
        }
        {
            let name = maps::LB_PUBLIC_OUT;
            let mut m: BpfHashMap<&mut MapData, LbPublicKey, LbPublic> =
                self.map_mut(name)?.try_into().map_err(map_err(name))?;
            for (k, v) in &ops.public_out {
                m.insert(k, v, 0).map_err(map_err(name))?;
            }
            for k in &ops.public_deletes {
                match m.remove(k) {
                    Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                    Err(e) => return Err(map_err(name)(e)),
                }
            }
        }
        if !ops.released.is_empty() {
            self.lb_forget(&ops.released)?;
        }
        // The filter last: a VIP's bit is set once its listener is there
        // (a bit set early, or cleared late, only costs a lookup).
        {
            let name = maps::LB_VIP_FILTER;
            let mut m: Array<&mut MapData, u64> =
                self.map_mut(name)?.try_into().map_err(map_err(name))?;
            for (w, bits) in &ops.filter {
                m.set(*w, bits, 0).map_err(map_err(name))?;
            }
        }
        Ok(())
    }

    /// Removes the entries of hash map `name` for which `dead` is true;
    /// returns how many went.
    fn lb_remove_where<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
        dead: impl Fn(&V) -> bool,
    ) -> Result<u64, DataplaneError> {
        let mut m: BpfHashMap<&mut MapData, K, V> =
            self.map_mut(name)?.try_into().map_err(map_err(name))?;
        let keys: Vec<K> = m
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| dead(v))
            .map(|(k, _)| k)
            .collect();
        Ok(keys.iter().filter(|k| m.remove(k).is_ok()).count() as u64)
    }

    /// Empties the services, public translations and connections (an agent
    /// starting hands out its own numbers).
    pub fn lb_clear(&mut self) -> Result<(), DataplaneError> {
        self.lb_remove_where::<LbServiceKey, LbService>(maps::LB_SERVICES, |_| true)?;
        self.lb_remove_where::<LbPublicKey, LbPublic>(maps::LB_PUBLIC_OUT, |_| true)?;
        self.lb_remove_where::<LbFlowKey, LbPublic>(maps::LB_PUBLIC_FLOWS, |_| true)?;
        self.lb_remove_where::<LbFlowKey, LbFlow>(maps::LB_FLOWS, |_| true)?;
        self.lb_remove_where::<LbFlowKey, LbRev>(maps::LB_REV, |_| true)?;
        let name = maps::LB_VIP_FILTER;
        let mut m: Array<&mut MapData, u64> =
            self.map_mut(name)?.try_into().map_err(map_err(name))?;
        for w in 0..maps::LB_VIP_FILTER_WORDS {
            if m.get(&w, 0).map_err(map_err(name))? != 0 {
                m.set(w, 0, 0).map_err(map_err(name))?;
            }
        }
        Ok(())
    }

    /// Removes the connections of these backends from `LB_FLOWS` and
    /// `LB_REV` (before their numbers are handed out again).
    pub fn lb_forget(&mut self, backends: &[u32]) -> Result<(), DataplaneError> {
        let gone: std::collections::BTreeSet<u32> = backends.iter().copied().collect();
        self.lb_remove_where::<LbFlowKey, LbFlow>(maps::LB_FLOWS, |v| gone.contains(&v.backend))?;
        self.lb_remove_where::<LbFlowKey, LbRev>(maps::LB_REV, |v| gone.contains(&v.backend))?;
        Ok(())
    }

    /// Every balanced connection: client -> VIP.
    pub fn lb_flows(&self) -> Result<Vec<(LbFlowKey, LbFlow)>, DataplaneError> {
        let name = maps::LB_FLOWS;
        let m: BpfHashMap<&MapData, LbFlowKey, LbFlow> =
            self.map_ref(name)?.try_into().map_err(map_err(name))?;
        Ok(m.iter().filter_map(Result::ok).collect())
    }

    /// Every reply translation: (client, backend) -> VIP.
    pub fn lb_replies(&self) -> Result<Vec<(LbFlowKey, LbRev)>, DataplaneError> {
        let name = maps::LB_REV;
        let m: BpfHashMap<&MapData, LbFlowKey, LbRev> =
            self.map_ref(name)?.try_into().map_err(map_err(name))?;
        Ok(m.iter().filter_map(Result::ok).collect())
    }

    /// Removes connections idle past `idle_ns` (each service's own
    /// timeout is enforced by the program; this only frees the entries).
    /// Returns how many went.
    pub fn lb_gc(&mut self, now_ns: u64, idle_ns: u64) -> Result<u64, DataplaneError> {
        let n = self.lb_remove_where::<LbFlowKey, LbFlow>(maps::LB_FLOWS, |v| {
            now_ns.saturating_sub(v.last_seen_ns) > idle_ns
        })?;
        self.lb_remove_where::<LbFlowKey, LbRev>(maps::LB_REV, |v| {
            now_ns.saturating_sub(v.last_seen_ns) > idle_ns
        })?;
        Ok(n)
    }

    /// Counters of these service (`backends`: backend) numbers, summed
    /// over CPUs.
    pub fn lb_stats(
        &self,
        ids: impl IntoIterator<Item = u32>,
        backends: bool,
    ) -> Result<BTreeMap<u32, LbStats>, DataplaneError> {
        let name = if backends {
            maps::LB_BACKEND_STATS
        } else {
            maps::LB_SERVICE_STATS
        };
        let m: PerCpuArray<&MapData, LbStats> =
            self.map_ref(name)?.try_into().map_err(map_err(name))?;
        let mut out = BTreeMap::new();
        for id in ids {
            let mut sum = LbStats::default();
            if let Ok(v) = m.get(&id, 0) {
                for s in v.iter() {
                    sum.add(s);
                }
            }
            out.insert(id, sum);
        }
        Ok(out)
    }
}

/// Map writes, applied in field order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LbOps {
    /// `LB_MAGLEV` ranges: (offset, backend ids).
    pub tables: Vec<(u32, Vec<u32>)>,
    /// Counter slots handed out anew (zero them before use).
    pub new_services: Vec<u32>,
    pub new_backends: Vec<u32>,
    pub backends: Vec<(u32, LbBackend)>,
    pub services: Vec<(LbServiceKey, LbService)>,
    pub service_deletes: Vec<LbServiceKey>,
    /// `LB_PUBLIC_OUT`: (domain, member, member port, listener port,
    /// protocol).
    pub public_out: Vec<(LbPublicKey, LbPublic)>,
    pub public_deletes: Vec<LbPublicKey>,
    /// Backends given back: their connections are forgotten (`LB_FLOWS`,
    /// `LB_REV`) before the number is reused.
    pub released: Vec<u32>,
    /// `LB_VIP_FILTER` words that changed: (index, bits).
    pub filter: Vec<(u32, u64)>,
}

impl LbOps {
    pub fn is_empty(&self) -> bool {
        *self == LbOps::default()
    }
}
