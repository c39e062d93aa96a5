//! The user-space side of the eBPF dataplane: the embedded kernel object, its
//! loading (with maps pinned per host), attachment to interfaces through
//! pinned bpf links (so forwarding survives an agent restart and a new
//! program replaces the old one atomically), and reading the counters.
//!
//! Used by the agent (production), by the program-test tier (the same
//! loading code, no pinning) and by `stratoctl`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use aya::{
    maps::{MapData, PerCpuHashMap, PerCpuValues},
    programs::{links::FdLink, links::PinnedLink, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use dataplane_common::{maps, programs, DropKey, DropReason, DropStats, IfStats, PortInfo};
use thiserror::Error;

/// The kernel programs, built by build.rs from `dataplane-ebpf`.
pub static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/strato-dataplane"));

/// Root under which every host's pinned state lives: `<root>/<host>/`.
pub const PIN_ROOT: &str = "/sys/fs/bpf/strato";

/// Every map the object defines (pinned by the agent).
pub const MAP_NAMES: [&str; 3] = [maps::IF_STATS, maps::DROP_STATS, maps::PORTS];

#[derive(Debug, Error)]
pub enum DataplaneError {
    #[error("loading the eBPF object{}: {source}", pin_note(.pin_dir))]
    Load {
        pin_dir: Option<PathBuf>,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("program {name} not found in the eBPF object")]
    NoProgram { name: &'static str },
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("attaching {program} to interface {iface}: {source}")]
    Attach {
        program: &'static str,
        iface: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("pinning {path}: {reason}")]
    Pin { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn pin_note(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map(|p| format!(" (pin directory {})", p.display()))
        .unwrap_or_default()
}

/// Points the pinned link at `prog` (atomic program replacement). The link
/// stays pinned, so it outlives this process.
fn adopt_link(prog: &mut Xdp, pin: &Path) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let pinned = PinnedLink::from_pin(pin)?;
    let fd: FdLink = pinned.into();
    let link = aya::programs::xdp::XdpLink::try_from(fd)?;
    let id = prog.attach_to_link(link)?;
    let owned = prog.take_link(id)?;
    let fd: FdLink = owned.try_into()?;
    // Dropping the fd closes our reference only; the pin keeps the link.
    drop(fd);
    Ok(())
}

/// Which entry point an interface gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    Uplink,
    Port,
    /// The do-nothing reference program (benchmarks only; never attached).
    Floor,
}

impl Attach {
    pub fn program(self) -> &'static str {
        match self {
            Attach::Uplink => programs::UPLINK,
            Attach::Port => programs::PORT,
            Attach::Floor => programs::FLOOR,
        }
    }
}

/// A loaded instance of the dataplane object.
pub struct Dataplane {
    ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
}

impl Dataplane {
    /// Loads the object and both programs. With `pin_dir`, every map is
    /// pinned there (an existing pin is adopted, so counters and, later,
    /// tables survive an agent restart); without, maps are private (tests).
    pub fn load(pin_dir: Option<&Path>) -> Result<Dataplane, DataplaneError> {
        let mut loader = EbpfLoader::new();
        let paths: Vec<(&str, PathBuf)> = match pin_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| DataplaneError::Io {
                    path: dir.to_owned(),
                    source,
                })?;
                MAP_NAMES.iter().map(|m| (*m, dir.join(m))).collect()
            }
            None => Vec::new(),
        };
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(OBJECT).map_err(|e| DataplaneError::Load {
            pin_dir: pin_dir.map(Path::to_owned),
            source: Box::new(e),
        })?;
        for name in [programs::UPLINK, programs::PORT, programs::FLOOR] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or(DataplaneError::NoProgram { name })?
                .try_into()
                .map_err(|e| DataplaneError::Program {
                    name,
                    source: Box::new(e),
                })?;
            prog.load().map_err(|e| DataplaneError::Program {
                name,
                source: Box::new(e),
            })?;
            if let Some(dir) = pin_dir {
                // Pinned so that `stratoctl trace` can run the live program.
                let path = dir.join(format!("prog_{name}"));
                let _ = std::fs::remove_file(&path);
                prog.pin(&path).map_err(|e| DataplaneError::Pin {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            }
        }
        Ok(Dataplane {
            ebpf,
            pin_dir: pin_dir.map(Path::to_owned),
        })
    }

    /// The loaded program for an attach point (for BPF_PROG_TEST_RUN).
    pub fn program(&mut self, which: Attach) -> &mut Xdp {
        self.ebpf
            .program_mut(which.program())
            .and_then(|p| <&mut Xdp>::try_from(p).ok())
            .expect("every program was checked in load()")
    }

    /// Attaches an entry point to an interface (in this process's network
    /// namespace). With a pin directory the bpf link is pinned at
    /// `<pin>/links/<iface>`: if one is already there (an earlier agent), the
    /// link is updated to this program atomically, so not a packet is lost.
    pub fn attach(&mut self, which: Attach, iface: &str) -> Result<(), DataplaneError> {
        let program = which.program();
        let link_pin = self.pin_dir.as_ref().map(|d| d.join("links").join(iface));
        let attach_err = |e: Box<dyn std::error::Error + Send + Sync>| DataplaneError::Attach {
            program,
            iface: iface.to_owned(),
            source: e,
        };
        let prog = self.program(which);
        if let Some(pin) = &link_pin {
            if pin.exists() {
                match adopt_link(prog, pin) {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        // The interface was recreated, or the pin is not ours:
                        // start over with a fresh link.
                        tracing::info!(iface, pin = %pin.display(), error = %e, "cannot adopt pinned link; re-attaching");
                        let _ = std::fs::remove_file(pin);
                    }
                }
            }
        }
        let id = prog
            .attach(iface, XdpMode::default())
            .map_err(|e| attach_err(Box::new(e)))?;
        if let Some(pin) = link_pin {
            let dir = pin.parent().expect("links dir");
            std::fs::create_dir_all(dir).map_err(|source| DataplaneError::Io {
                path: dir.to_owned(),
                source,
            })?;
            let owned = prog.take_link(id).map_err(|e| attach_err(Box::new(e)))?;
            let fd: FdLink = owned
                .try_into()
                .map_err(|e: aya::programs::links::LinkError| attach_err(Box::new(e)))?;
            fd.pin(&pin).map_err(|e| attach_err(Box::new(e)))?;
        }
        Ok(())
    }

    /// Detaches whatever this host pinned on `iface` (the port went away).
    pub fn detach(&mut self, iface: &str) -> Result<(), DataplaneError> {
        if let Some(pin) = self.pin_dir.as_ref().map(|d| d.join("links").join(iface)) {
            if pin.exists() {
                if let Ok(p) = PinnedLink::from_pin(&pin) {
                    // Unpinning and dropping the fd detaches the link.
                    let _ = p.unpin();
                } else {
                    let _ = std::fs::remove_file(&pin);
                }
            }
        }
        Ok(())
    }

    /// Sums the per-CPU counters of this instance.
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        let ifs: PerCpuHashMap<&MapData, u32, IfStats> = self
            .ebpf
            .map(maps::IF_STATS)
            .ok_or(DataplaneError::Map {
                name: maps::IF_STATS,
                source: "missing".into(),
            })?
            .try_into()
            .map_err(|e: aya::maps::MapError| DataplaneError::Map {
                name: maps::IF_STATS,
                source: Box::new(e),
            })?;
        let drops: PerCpuHashMap<&MapData, DropKey, DropStats> = self
            .ebpf
            .map(maps::DROP_STATS)
            .ok_or(DataplaneError::Map {
                name: maps::DROP_STATS,
                source: "missing".into(),
            })?
            .try_into()
            .map_err(|e: aya::maps::MapError| DataplaneError::Map {
                name: maps::DROP_STATS,
                source: Box::new(e),
            })?;
        Counters::read(&ifs, &drops)
    }

    /// Clears every counter (tests run fixture rows one at a time).
    pub fn reset_counters(&mut self) -> Result<(), DataplaneError> {
        for name in MAP_NAMES {
            let map = self.ebpf.map_mut(name).ok_or(DataplaneError::Map {
                name,
                source: "missing".into(),
            })?;
            match name {
                maps::PORTS => continue,
                maps::IF_STATS => {
                    let mut m: PerCpuHashMap<&mut MapData, u32, IfStats> =
                        map.try_into()
                            .map_err(|e: aya::maps::MapError| DataplaneError::Map {
                                name,
                                source: Box::new(e),
                            })?;
                    let keys: Vec<u32> = m.keys().filter_map(Result::ok).collect();
                    for k in keys {
                        let _ = m.remove(&k);
                    }
                }
                _ => {
                    let mut m: PerCpuHashMap<&mut MapData, DropKey, DropStats> = map
                        .try_into()
                        .map_err(|e: aya::maps::MapError| DataplaneError::Map {
                            name,
                            source: Box::new(e),
                        })?;
                    let keys: Vec<DropKey> = m.keys().filter_map(Result::ok).collect();
                    for k in keys {
                        let _ = m.remove(&k);
                    }
                }
            }
        }
        Ok(())
    }
}

impl Dataplane {
    fn ports_map(
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
        let mut m = self.ports_map()?;
        m.insert(ifindex, info, 0).map_err(|e| DataplaneError::Map {
            name: maps::PORTS,
            source: Box::new(e),
        })
    }

    pub fn remove_port(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
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

/// What a synthetic packet did in a host's live program.
#[derive(Debug)]
pub struct Trace {
    /// XDP action (0 aborted, 1 drop, 2 pass, 3 tx, 4 redirect).
    pub action: u32,
    pub output: Vec<u8>,
    /// Drop reasons counted on the ingress interface during the run.
    pub drops: Vec<DropReason>,
    /// Nanoseconds the run took in the kernel.
    pub duration_ns: u64,
}

/// Runs `frame` once through the live program pinned under `pin_dir` (the
/// agent pins them) with BPF_PROG_TEST_RUN, as if it arrived on interface
/// `ingress_ifindex` of the calling thread's network namespace, against the
/// live maps. The run is counted like a real packet.
pub fn trace(
    pin_dir: &Path,
    which: Attach,
    ingress_ifindex: u32,
    frame: &[u8],
) -> Result<Trace, DataplaneError> {
    use aya::programs::{TestRun, TestRunOptions};
    let program = which.program();
    let path = pin_dir.join(format!("prog_{program}"));
    let prog = Xdp::from_pin(&path, aya_obj::programs::XdpAttachType::Interface).map_err(|e| {
        DataplaneError::Program {
            name: program,
            source: Box::new(e),
        }
    })?;
    let before = Counters::read_pinned(pin_dir)?;
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    let mut out = vec![0u8; frame.len() + 512];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: Some(&ctx),
        repeat: 1,
        ..Default::default()
    };
    let r = prog.test_run(opts).map_err(|e| DataplaneError::Program {
        name: program,
        source: Box::new(e),
    })?;
    out.truncate(r.data_size_out as usize);
    let after = Counters::read_pinned(pin_dir)?;
    let drops = after
        .drops
        .iter()
        .filter(|((i, reason), s)| {
            *i == ingress_ifindex
                && before.drops.get(&(*i, *reason)).map(|b| b.packets) != Some(s.packets)
        })
        .map(|((_, reason), _)| *reason)
        .collect();
    Ok(Trace {
        action: r.return_value,
        output: out,
        drops,
        duration_ns: r.duration.as_nanos() as u64,
    })
}

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

/// Counters summed over CPUs: per interface index, and per (interface, reason).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub interfaces: BTreeMap<u32, IfStats>,
    pub drops: BTreeMap<(u32, DropReason), DropStats>,
}

impl Counters {
    fn read(
        ifs: &PerCpuHashMap<&MapData, u32, IfStats>,
        drops: &PerCpuHashMap<&MapData, DropKey, DropStats>,
    ) -> Result<Counters, DataplaneError> {
        let mut c = Counters::default();
        for entry in ifs.iter() {
            let (k, v): (u32, PerCpuValues<IfStats>) = entry.map_err(|e| DataplaneError::Map {
                name: maps::IF_STATS,
                source: Box::new(e),
            })?;
            let sum = c.interfaces.entry(k).or_default();
            for cpu in v.iter() {
                sum.accumulate(cpu);
            }
        }
        for entry in drops.iter() {
            let (k, v): (DropKey, PerCpuValues<DropStats>) =
                entry.map_err(|e| DataplaneError::Map {
                    name: maps::DROP_STATS,
                    source: Box::new(e),
                })?;
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
        let ifs = open(maps::IF_STATS)?;
        let drops = open(maps::DROP_STATS)?;
        let ifs_map = aya::maps::Map::PerCpuHashMap(ifs);
        let drops_map = aya::maps::Map::PerCpuHashMap(drops);
        let ifs: PerCpuHashMap<&MapData, u32, IfStats> =
            (&ifs_map)
                .try_into()
                .map_err(|e: aya::maps::MapError| DataplaneError::Map {
                    name: maps::IF_STATS,
                    source: Box::new(e),
                })?;
        let drops: PerCpuHashMap<&MapData, DropKey, DropStats> =
            (&drops_map)
                .try_into()
                .map_err(|e: aya::maps::MapError| DataplaneError::Map {
                    name: maps::DROP_STATS,
                    source: Box::new(e),
                })?;
        Counters::read(&ifs, &drops)
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
