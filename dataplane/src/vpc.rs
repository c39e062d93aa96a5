//! The VPC maps: the host record, the ports (and their dense index), and the
//! tables as one value ([`crate::tables::Tables`]) read back and written as a diff.

use std::collections::BTreeMap;

use aya::maps::{Array, MapData};
use dataplane_common::{
    maps, AllowedKey, AllowedMac, EipEntry, EipOut, Endpoint, EpKey, HostInfo, MacKey, PortInfo,
    QosBucket, QosKey, Route, RouteKey, SnatRouter, VniInfo,
};

use crate::tables::{Diff, Tables};

use crate::{map_access::allowed_key, map_access::route_key, map_err, Dataplane, DataplaneError};

impl Dataplane {
    /// The host's underlay record (`HOST[0]`).
    pub fn host(&self) -> Result<HostInfo, DataplaneError> {
        let m: Array<&MapData, HostInfo> = self
            .map_ref(maps::HOST)?
            .try_into()
            .map_err(map_err(maps::HOST))?;
        m.get(&0, 0).map_err(map_err(maps::HOST))
    }

    pub fn set_host(&mut self, h: HostInfo) -> Result<(), DataplaneError> {
        let mut m: Array<&mut MapData, HostInfo> = self
            .map_mut(maps::HOST)?
            .try_into()
            .map_err(map_err(maps::HOST))?;
        m.set(0, h, 0).map_err(map_err(maps::HOST))
    }

    /// What the VPC maps hold now (an agent adopts pinned maps with this).
    pub fn tables(&mut self) -> Result<Tables, DataplaneError> {
        Ok(Tables {
            ports: self.ports()?,
            endpoints: self.hash_read(maps::ENDPOINTS)?,
            vnis: self.hash_read(maps::VNIS)?,
            macs: self.hash_read(maps::MACS)?,
            routes: self.lpm_read(maps::ROUTES, |k: RouteKey| (k.domain, k.ip))?,
            allowed: self.lpm_read(maps::ALLOWED, |k: AllowedKey| (k.ifindex, k.ip))?,
            eips: self.hash_read(maps::EIPS)?,
            eip_out: self.hash_read(maps::EIP_OUT)?,
            snat_routers: self.hash_read(maps::SNAT_ROUTERS)?,
            eip_qos: self
                .hash_read::<QosKey, QosBucket>(maps::EIP_QOS)?
                .into_iter()
                .map(|(k, v)| (k, QosBucket { clock_ns: 0, ..v }))
                .collect(),
        })
    }

    /// Writes a diff: every upsert first (tables a port refers to before the
    /// port), then every delete (ports first). Each map update is atomic for
    /// its entry; a packet sees an entry old or new, never half written.
    pub fn apply(&mut self, d: &Diff) -> Result<(), DataplaneError> {
        self.hash_upsert(maps::ENDPOINTS, &d.endpoints.0)?;
        self.lpm_upsert(maps::ROUTES, &d.routes.0, route_key)?;
        self.hash_upsert(maps::VNIS, &d.vnis.0)?;
        self.hash_upsert(maps::MACS, &d.macs.0)?;
        self.lpm_upsert(maps::ALLOWED, &d.allowed.0, allowed_key)?;
        self.hash_upsert(maps::EIPS, &d.eips.0)?;
        self.hash_upsert(maps::EIP_OUT, &d.eip_out.0)?;
        self.hash_upsert(maps::SNAT_ROUTERS, &d.snat_routers.0)?;
        self.hash_upsert(maps::EIP_QOS, &d.eip_qos.0)?;
        for (k, v) in &d.ports.0 {
            self.set_port(*k, *v)?;
        }
        for k in &d.ports.1 {
            self.remove_port(*k)?;
        }
        self.hash_delete::<EpKey, Endpoint>(maps::ENDPOINTS, &d.endpoints.1)?;
        self.lpm_delete::<RouteKey, Route>(maps::ROUTES, &d.routes.1, route_key)?;
        self.hash_delete::<u32, VniInfo>(maps::VNIS, &d.vnis.1)?;
        self.hash_delete::<MacKey, u32>(maps::MACS, &d.macs.1)?;
        self.lpm_delete::<AllowedKey, AllowedMac>(maps::ALLOWED, &d.allowed.1, allowed_key)?;
        self.hash_delete::<[u8; 4], EipEntry>(maps::EIPS, &d.eips.1)?;
        self.hash_delete::<EpKey, EipOut>(maps::EIP_OUT, &d.eip_out.1)?;
        self.hash_delete::<u32, SnatRouter>(maps::SNAT_ROUTERS, &d.snat_routers.1)?;
        self.hash_delete::<QosKey, QosBucket>(maps::EIP_QOS, &d.eip_qos.1)?;
        Ok(())
    }

    pub(crate) fn ports_map(
        &mut self,
    ) -> Result<aya::maps::HashMap<&mut MapData, u32, PortInfo>, DataplaneError> {
        let map = self.ebpf.map_mut(maps::PORTS).ok_or(DataplaneError::Map {
            name: maps::PORTS,
            source: "missing".into(),
        })?;
        map.try_into()
            .map_err(|e: aya::maps::MapError| DataplaneError::Map {
                name: maps::PORTS,
                source: Box::new(e),
            })
    }

    /// Every entry of the ports table.
    pub fn ports(&mut self) -> Result<BTreeMap<u32, PortInfo>, DataplaneError> {
        let m = self.ports_map()?;
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

    /// Writes one port (a single map update: atomic for that port).
    pub fn set_port(&mut self, ifindex: u32, info: PortInfo) -> Result<(), DataplaneError> {
        let info = PortInfo {
            flags: info.flags | dataplane_common::PORT_F_PRESENT,
            ..info
        };
        let mut m = self.ports_map()?;
        m.insert(ifindex, info, 0)
            .map_err(|e| DataplaneError::Map {
                name: maps::PORTS,
                source: Box::new(e),
            })?;
        self.set_port_index(ifindex, info)
    }

    /// Rewrites the dense copy from the ports table (at start: a pinned
    /// table of an older agent may have no copy).
    pub fn resync_port_index(&mut self) -> Result<(), DataplaneError> {
        for (i, p) in self.ports()? {
            self.set_port_index(i, p)?;
        }
        Ok(())
    }

    /// The dense copy the packet path reads first (ifindexes that fit).
    pub(crate) fn set_port_index(
        &mut self,
        ifindex: u32,
        info: PortInfo,
    ) -> Result<(), DataplaneError> {
        if ifindex >= maps::PORT_INDEX_MAX {
            return Ok(());
        }
        let mut a: Array<&mut MapData, PortInfo> = self
            .map_mut(maps::PORT_INDEX)?
            .try_into()
            .map_err(map_err(maps::PORT_INDEX))?;
        a.set(ifindex, info, 0).map_err(map_err(maps::PORT_INDEX))
    }

    pub fn remove_port(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        // The packet path stops seeing the port first.
        self.set_port_index(ifindex, PortInfo::default())?;
        let mut m = self.ports_map()?;
        match m.remove(&ifindex) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(DataplaneError::Map {
                name: maps::PORTS,
                source: Box::new(e),
            }),
        }
    }
}
