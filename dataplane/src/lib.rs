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
    maps::{
        lpm_trie::{Key, LpmTrie},
        Array, HashMap as BpfHashMap, Map, MapData, MapError, PerCpuArray, PerCpuHashMap,
        PerCpuValues,
    },
    programs::{links::FdLink, links::PinnedLink, xdp::XdpLinkId, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use dataplane_common::{
    maps, programs, AllowedKey, AllowedMac, CtEntry, CtKey, CtStats, DropKey, DropReason,
    DropStats, EipEntry, EipOut, Endpoint, EpKey, HostInfo, IfStats, MacKey, NatIn, NatKey, NatOut,
    NatRevKey, PolicyAddrKey, PolicyAllow, PolicyClass, PolicyPortKey, PortInfo, QosBucket, QosKey,
    Route, RouteKey, SnatRouter, VniInfo,
};
use ipnetwork::Ipv4Network;

pub mod lb;
pub mod security_groups;
pub mod tables;

pub use lb::LbOps;
pub use strato_proto::naming::PIN_ROOT;
use tables::{Diff, Tables};
use thiserror::Error;

/// The production object (`strato-dataplane`), built by build.rs from
/// `dataplane-ebpf`: what agents and `stratoctl` load. Its programs are
/// [`programs::PRODUCTION`], its maps [`maps::PRODUCTION`].
pub static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/strato-dataplane"));

/// The benchmark object (`strato-dataplane-bench`), from the same source:
/// the production programs and maps plus [`programs::BENCH`] and
/// [`maps::BENCH`] (floor, ceilings, harness). Benchmarks and the program
/// tests' harness only; never an agent.
pub static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/strato-dataplane-bench"));

/// Every map the agent pins (the others are private to each load).
pub const MAP_NAMES: &[&str] = maps::PINNED;

fn map_err(name: &'static str) -> impl Fn(MapError) -> DataplaneError {
    move |e| DataplaneError::Map {
        name,
        source: Box::new(e),
    }
}

fn lpm_key<T: aya::Pod>(owner: u32, net: Ipv4Network, mk: fn([u8; 4], [u8; 4]) -> T) -> Key<T> {
    Key::new(
        32 + net.prefix() as u32,
        mk(owner.to_be_bytes(), net.ip().octets()),
    )
}

fn route_key(d: [u8; 4], ip: [u8; 4]) -> RouteKey {
    RouteKey { domain: d, ip }
}

fn allowed_key(i: [u8; 4], ip: [u8; 4]) -> AllowedKey {
    AllowedKey { ifindex: i, ip }
}

fn from_lpm(prefix: u32, owner: [u8; 4], ip: [u8; 4]) -> Option<(u32, Ipv4Network)> {
    let net = Ipv4Network::new(ip.into(), prefix.checked_sub(32)? as u8).ok()?;
    Some((u32::from_be_bytes(owner), net))
}

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
    /// The redirect-only ceiling (benchmarks only; never attached by agents).
    Bare,
    /// The VPC pipeline as a TC (clsact ingress) program: what agents
    /// attach to VM ports (it keeps the VMs' offloads; `Port` is the same
    /// logic at XDP, used by tests and benchmarks).
    PortTc,
    /// The XDP port pipeline that reads but never writes the connection
    /// table: `stratoctl trace`.
    PortTrace,
    /// Benchmark harness (never attached): the frame set with
    /// [`Dataplane::bench_frame`] put back before each run, then the port
    /// pipeline, the uplink program, or nothing.
    BenchPort,
    /// `BenchPort` without the load balancer in front of the pipeline.
    BenchPortPlain,
    BenchUplink,
    BenchRestore,
    /// A gateway host's external interface.
    External,
    BenchExternal,
    /// The port pipeline's tail for external traffic (never attached;
    /// loaded with the object, see `install_tails`).
    PortOut,
    /// The port pipeline's tails for packets to load balancer VIPs and for
    /// members' replies to local ports (never attached, as `PortOut`).
    PortLb,
    PortLbReply,
}

impl Attach {
    pub fn program(self) -> &'static str {
        match self {
            Attach::Uplink => programs::UPLINK,
            Attach::Port => programs::PORT,
            Attach::Floor => programs::FLOOR,
            Attach::Bare => programs::BARE,
            Attach::PortTc => programs::PORT_TC,
            Attach::PortTrace => programs::PORT_TRACE,
            Attach::BenchPort => programs::BENCH_PORT,
            Attach::BenchPortPlain => programs::BENCH_PORT_PLAIN,
            Attach::BenchUplink => programs::BENCH_UPLINK,
            Attach::BenchRestore => programs::BENCH_RESTORE,
            Attach::External => programs::EXTERNAL,
            Attach::BenchExternal => programs::BENCH_EXTERNAL,
            Attach::PortOut => programs::PORT_OUT,
            Attach::PortLb => programs::PORT_LB,
            Attach::PortLbReply => programs::PORT_LB_REPLY,
        }
    }
}

/// A loaded instance of the dataplane object.
pub struct Dataplane {
    ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
    /// This instance fills the port pipeline's program arrays (an agent, or
    /// private maps), so the pipeline itself goes into `TAIL_PORT` when it
    /// is loaded.
    owns_tails: bool,
}

impl Dataplane {
    /// Loads the object and both programs. With `pin_dir`, every map is
    /// pinned there (an existing pin is adopted, so counters and, later,
    /// tables survive an agent restart); without, maps are private (tests).
    /// With `pin_dir` (inspecting a host's live dataplane: `stratoctl
    /// trace`, benchmarks) the program arrays the agent filled are left
    /// alone.
    pub fn load(pin_dir: Option<&Path>) -> Result<Dataplane, DataplaneError> {
        Dataplane::load_object(OBJECT, pin_dir)
    }

    /// [`Dataplane::load`] of the benchmark object ([`BENCH_OBJECT`]): the
    /// production programs and the benchmark ones (`Attach::Floor`,
    /// `Attach::Bare`, `Attach::Bench*`), over the same maps.
    pub fn load_bench(pin_dir: Option<&Path>) -> Result<Dataplane, DataplaneError> {
        Dataplane::load_object(BENCH_OBJECT, pin_dir)
    }

    /// The benchmark object with every map at one entry and nothing
    /// installed: only for programs that read no map (`Attach::Floor` on
    /// the veth peers of a test network), at a fraction of a full load's
    /// kernel memory.
    pub fn load_floor() -> Result<Dataplane, DataplaneError> {
        let mut loader = EbpfLoader::new();
        for name in maps::PRODUCTION.iter().chain(maps::BENCH) {
            loader.map_max_entries(name, 1);
        }
        let ebpf = loader
            .load(BENCH_OBJECT)
            .map_err(|e| DataplaneError::Load {
                pin_dir: None,
                source: Box::new(e),
            })?;
        Ok(Dataplane {
            ebpf,
            pin_dir: None,
            owns_tails: false,
        })
    }

    fn load_object(object: &[u8], pin_dir: Option<&Path>) -> Result<Dataplane, DataplaneError> {
        let mut dp = Dataplane::open(object, pin_dir, None)?;
        if pin_dir.is_none() {
            dp.install_tails()?;
        }
        Ok(dp)
    }

    /// [`Dataplane::load`] with the connection tracking table sized for
    /// `ct_max` flows (default [`maps::CT_MAX_DEFAULT`]). A pinned table is
    /// adopted only if its size matches.
    /// The agent's load: it owns the host's program arrays and fills them.
    pub fn load_with(
        pin_dir: Option<&Path>,
        ct_max: Option<u32>,
    ) -> Result<Dataplane, DataplaneError> {
        let mut dp = Dataplane::open(OBJECT, pin_dir, ct_max)?;
        dp.install_tails()?;
        Ok(dp)
    }

    fn open(
        object: &[u8],
        pin_dir: Option<&Path>,
        ct_max: Option<u32>,
    ) -> Result<Dataplane, DataplaneError> {
        let mut loader = EbpfLoader::new();
        if let Some(n) = ct_max {
            loader.map_max_entries(maps::CT, n);
        }
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
        let ebpf = loader.load(object).map_err(|e| DataplaneError::Load {
            pin_dir: pin_dir.map(Path::to_owned),
            source: Box::new(e),
        })?;
        // Programs are verified when first needed (verifying the big ones
        // takes seconds of kernel time): an agent loads what it attaches,
        // `stratoctl trace` the trace build, tests what they run. The port
        // pipeline's tails are small, and the pipeline needs them in its
        // program arrays before its first packet.
        Ok(Dataplane {
            ebpf,
            pin_dir: pin_dir.map(Path::to_owned),
            owns_tails: false,
        })
    }

    /// Loads the port pipeline's tail programs and puts them in their
    /// program arrays (a pinned array an earlier agent filled is updated).
    /// The pipeline itself (`TAIL_PORT`) goes in when it is loaded.
    pub fn install_tails(&mut self) -> Result<(), DataplaneError> {
        self.owns_tails = true;
        for (which, slot) in [
            (Attach::PortOut, maps::TAIL_EXTERNAL),
            (Attach::PortLb, maps::TAIL_LB),
            (Attach::PortLbReply, maps::TAIL_LB_REPLY),
        ] {
            let fd = owned_fd(which.program(), self.xdp(which)?.fd())?;
            self.set_tail(maps::PORT_OUT_XDP, slot, &fd)?;
        }
        for (name, slot) in [
            (programs::PORT_OUT_TC, maps::TAIL_EXTERNAL),
            (programs::PORT_LB_TC, maps::TAIL_LB),
            (programs::PORT_LB_REPLY_TC, maps::TAIL_LB_REPLY),
        ] {
            let fd = self.load_classifier(name)?;
            self.set_tail(maps::PORT_OUT_TC, slot, &fd)?;
        }
        // A pipeline loaded before (an agent's preload) goes in too.
        if let Ok(fd) = classifier(&mut self.ebpf, programs::PORT_TC)?.fd() {
            let fd = owned_fd(programs::PORT_TC, Ok(fd))?;
            self.set_tail(maps::PORT_OUT_TC, maps::TAIL_PORT, &fd)?;
        }
        Ok(())
    }

    /// The TC program `name`, loaded on first use; its fd.
    fn load_classifier(
        &mut self,
        name: &'static str,
    ) -> Result<aya::programs::ProgramFd, DataplaneError> {
        let prog = classifier(&mut self.ebpf, name)?;
        let first = prog.fd().is_err();
        if first {
            prog.load().map_err(|e| DataplaneError::Program {
                name,
                source: Box::new(e),
            })?;
        }
        let fd = owned_fd(name, prog.fd())?;
        if first && name == programs::PORT_TC && self.owns_tails {
            self.set_tail(maps::PORT_OUT_TC, maps::TAIL_PORT, &fd)?;
        }
        Ok(fd)
    }

    /// Empties `slot` of the port pipeline's program arrays (both
    /// builds): a tail call to it fails, and the packet is dropped as
    /// `no_tail_call`. For tests that show what runs without that tail.
    pub fn clear_tail(&mut self, slot: u32) -> Result<(), DataplaneError> {
        for map in [maps::PORT_OUT_XDP, maps::PORT_OUT_TC] {
            let mut arr: aya::maps::ProgramArray<&mut MapData> =
                self.map_mut(map)?.try_into().map_err(map_err(map))?;
            arr.clear_index(&slot).map_err(map_err(map))?;
        }
        Ok(())
    }

    fn set_tail(
        &mut self,
        map: &'static str,
        slot: u32,
        fd: &aya::programs::ProgramFd,
    ) -> Result<(), DataplaneError> {
        let mut arr: aya::maps::ProgramArray<&mut MapData> =
            self.map_mut(map)?.try_into().map_err(map_err(map))?;
        arr.set(slot, fd, 0).map_err(map_err(map))
    }

    /// Loads (verifies) the programs for these attach points now; an agent
    /// does this at start so a broken object fails there, not at the first
    /// port.
    pub fn preload(&mut self, which: &[Attach]) -> Result<(), DataplaneError> {
        for w in which {
            match w {
                Attach::PortTc => {
                    self.load_classifier(programs::PORT_TC)?;
                }
                _ => {
                    self.xdp(*w)?;
                }
            }
        }
        Ok(())
    }

    /// Benchmarks: the frame the harness programs (`Attach::Bench*`) put
    /// back before each run.
    pub fn bench_frame(&mut self, frame: &[u8]) -> Result<(), DataplaneError> {
        let name = maps::BENCH_FRAME;
        if frame.is_empty() || frame.len() > dataplane_common::BENCH_FRAME_MAX {
            return Err(DataplaneError::Map {
                name,
                source: Box::new(std::io::Error::other(format!(
                    "a benchmark frame is 1 to {} bytes, not {}",
                    dataplane_common::BENCH_FRAME_MAX,
                    frame.len()
                ))),
            });
        }
        let mut v = dataplane_common::BenchFrame {
            len: frame.len() as u32,
            bytes: [0; dataplane_common::BENCH_FRAME_MAX],
        };
        v.bytes[..frame.len()].copy_from_slice(frame);
        let mut m: aya::maps::Array<&mut MapData, dataplane_common::BenchFrame> =
            self.map_mut(name)?.try_into().map_err(map_err(name))?;
        m.set(0, v, 0).map_err(map_err(name))
    }

    /// Instructions the kernel's verifier processed to accept an entry
    /// point (loading it if needed): its share of the 1,000,000 budget.
    pub fn verified_instructions(&mut self, which: Attach) -> Result<u32, DataplaneError> {
        self.preload(&[which])?;
        let name = which.program();
        let prog = self
            .ebpf
            .program(name)
            .ok_or(DataplaneError::NoProgram { name })?;
        let info = prog.info().map_err(|e| DataplaneError::Program {
            name,
            source: Box::new(e),
        })?;
        Ok(info.verified_instruction_count().unwrap_or(0))
    }

    /// The XDP program of an attach point, loaded on first use. With a pin
    /// directory the uplink program is pinned there too (`stratoctl trace`
    /// of the uplink runs the live one).
    fn xdp(&mut self, which: Attach) -> Result<&mut Xdp, DataplaneError> {
        let name = which.program();
        let pin = self
            .pin_dir
            .as_ref()
            .filter(|_| which == Attach::Uplink || which == Attach::External)
            .map(|d| d.join(format!("prog_{name}")));
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or(DataplaneError::NoProgram { name })?
            .try_into()
            .map_err(|e| DataplaneError::Program {
                name,
                source: Box::new(e),
            })?;
        if prog.fd().is_err() {
            prog.load().map_err(|e| DataplaneError::Program {
                name,
                source: Box::new(e),
            })?;
            if let Some(path) = pin {
                let _ = std::fs::remove_file(&path);
                prog.pin(&path).map_err(|e| DataplaneError::Pin {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            }
            if which == Attach::Port && self.owns_tails {
                let fd = owned_fd(name, prog.fd())?;
                self.set_tail(maps::PORT_OUT_XDP, maps::TAIL_PORT, &fd)?;
            }
        }
        self.ebpf
            .program_mut(name)
            .ok_or(DataplaneError::NoProgram { name })?
            .try_into()
            .map_err(|e| DataplaneError::Program {
                name,
                source: Box::new(e),
            })
    }

    /// The program for an attach point (for BPF_PROG_TEST_RUN), loaded on
    /// first use. Panics if the kernel refuses it (tests and benchmarks).
    pub fn program(&mut self, which: Attach) -> &mut Xdp {
        self.xdp(which)
            .unwrap_or_else(|e| panic!("loading {}: {e}", which.program()))
    }

    /// Attaches an entry point to an interface (in this process's network
    /// namespace). With a pin directory the bpf link is pinned at
    /// `<pin>/links/<iface>`: if one is already there (an earlier agent), the
    /// link is updated to this program atomically, so not a packet is lost.
    pub fn attach(&mut self, which: Attach, iface: &str) -> Result<(), DataplaneError> {
        self.attach_inner(which, iface, true)
    }

    /// Attaches an XDP entry point without pinning the link: it lasts as
    /// long as this instance (benchmarks run the XDP port program over an
    /// agent's pinned maps this way).
    pub fn attach_transient(&mut self, which: Attach, iface: &str) -> Result<(), DataplaneError> {
        self.attach_inner(which, iface, false)
    }

    fn attach_inner(
        &mut self,
        which: Attach,
        iface: &str,
        pin: bool,
    ) -> Result<(), DataplaneError> {
        if which == Attach::PortTc {
            return self.attach_port_tc(iface);
        }
        let program = which.program();
        let link_pin = self
            .pin_dir
            .as_ref()
            .filter(|_| pin)
            .map(|d| d.join("links").join(iface));
        let attach_err = |e: Box<dyn std::error::Error + Send + Sync>| DataplaneError::Attach {
            program,
            iface: iface.to_owned(),
            source: e,
        };
        let prog = self.xdp(which)?;
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

    /// Attaches an XDP entry point to `iface` in native (driver) mode,
    /// unpinned, and returns its link for [`Dataplane::detach_link`]: the
    /// program tier moves an interface between entry points row by row and
    /// sends real frames through them. Native mode is asked for explicitly,
    /// so a kernel that would fall back to generic XDP refuses instead.
    pub fn attach_link(&mut self, which: Attach, iface: &str) -> Result<XdpLinkId, DataplaneError> {
        let program = which.program();
        self.xdp(which)?
            .attach(iface, XdpMode::Driver)
            .map_err(|e| DataplaneError::Attach {
                program,
                iface: iface.to_owned(),
                source: Box::new(e),
            })
    }

    /// Detaches a link made by [`Dataplane::attach_link`].
    pub fn detach_link(&mut self, which: Attach, link: XdpLinkId) -> Result<(), DataplaneError> {
        let name = which.program();
        self.xdp(which)?
            .detach(link)
            .map_err(|e| DataplaneError::Program {
                name,
                source: Box::new(e),
            })
    }

    /// Attaches the TC port program to `iface`'s clsact ingress as a
    /// netlink (cls_bpf, direct-action) filter at a fixed priority and
    /// handle. Such a filter outlives the agent without a pin, and a filter
    /// an earlier agent left there is replaced atomically (no packet sees no
    /// program). Not a TCX link: attaching one waits for an RCU grace period
    /// (about 10 ms), which would sit on the path from binding to ACTIVE.
    /// A TCX link pinned by an earlier agent is still adopted.
    fn attach_port_tc(&mut self, iface: &str) -> Result<(), DataplaneError> {
        use aya::programs::{
            tc::{NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
            TcAttachType,
        };
        const PRIORITY: u16 = 1;
        let handle = TcHandle::new(0, 1);
        let name = programs::PORT_TC;
        let link_pin = self.pin_dir.as_ref().map(|d| d.join("links").join(iface));
        let err = |e: Box<dyn std::error::Error + Send + Sync>| DataplaneError::Attach {
            program: name,
            iface: iface.to_owned(),
            source: e,
        };
        self.preload(&[Attach::PortTc])?;
        let prog = classifier(&mut self.ebpf, name)?;
        if let Some(pin) = link_pin.as_ref().filter(|p| p.exists()) {
            let adopted = (|| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
                let fd: FdLink = PinnedLink::from_pin(pin)?.into();
                let link = SchedClassifierLink::try_from(fd)?;
                let id = prog.attach_to_link(link)?;
                let owned = prog.take_link(id)?;
                let fd: FdLink = owned.try_into()?;
                drop(fd);
                Ok(())
            })();
            match adopted {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::info!(iface, pin = %pin.display(), error = %e, "cannot adopt pinned link; re-attaching");
                    let _ = std::fs::remove_file(pin);
                }
            }
        }
        // An existing clsact qdisc is fine.
        let _ = aya::programs::tc::qdisc_add_clsact(iface);
        // Replace our filter if an earlier agent left one, else create it.
        let replaced =
            SchedClassifierLink::attached(iface, TcAttachType::Ingress, PRIORITY, handle, None)
                .map_err(|e| err(Box::new(e)))
                .and_then(|link| prog.attach_to_link(link).map_err(|e| err(Box::new(e))));
        let id = match replaced {
            Ok(id) => id,
            Err(_) => prog
                .attach_with_options(
                    iface,
                    TcAttachType::Ingress,
                    TcAttachOptions::Netlink(NlOptions {
                        priority: PRIORITY,
                        handle,
                        ..NlOptions::default()
                    }),
                )
                .map_err(|e| err(Box::new(e)))?,
        };
        // The filter stays when this process ends: never detach it on drop.
        let link = prog.take_link(id).map_err(|e| err(Box::new(e)))?;
        std::mem::forget(link);
        Ok(())
    }

    /// Runs `frame` once through the TC port program (BPF_PROG_TEST_RUN
    /// with an sk_buff) as if it arrived on `ingress` of the calling thread's
    /// network namespace; returns the TC verdict and the frame as it left
    /// the program (tests: the TC build against the XDP one).
    pub fn test_run_tc(
        &mut self,
        ingress: u32,
        frame: &[u8],
    ) -> Result<(i32, Vec<u8>), DataplaneError> {
        use aya::programs::{TestRun, TestRunOptions};
        let name = programs::PORT_TC;
        self.preload(&[Attach::PortTc])?;
        let prog = classifier(&mut self.ebpf, name)?;
        // struct __sk_buff up to `ifindex` (offset 40): the device the
        // packet arrives on; everything before it must be zero.
        let mut ctx = [0u8; 44];
        ctx[40..44].copy_from_slice(&ingress.to_ne_bytes());
        let mut out = vec![0u8; frame.len() + 512];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            repeat: 1,
            ..Default::default()
        };
        let r = prog.test_run(opts).map_err(|e| DataplaneError::Program {
            name,
            source: Box::new(e),
        })?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value as i32, out))
    }

    /// Benchmarks: attaches the TC (clsact ingress) redirect-only ceiling to
    /// `iface` in this thread's network namespace (the link lives as long as
    /// this instance). A netlink cls_bpf filter, as agents attach the port
    /// program: the ceiling and Strato's rows differ only by the program
    /// (and `tc filter show` lists it, so the benchmark can read its runs).
    pub fn attach_bare_tc(&mut self, iface: &str) -> Result<(), DataplaneError> {
        use aya::programs::{
            tc::{self, NlOptions, TcAttachOptions},
            TcAttachType,
        };
        let name = programs::BARE_TC;
        let err = |e: Box<dyn std::error::Error + Send + Sync>| DataplaneError::Attach {
            program: name,
            iface: iface.to_owned(),
            source: e,
        };
        // An existing clsact qdisc is fine.
        let _ = tc::qdisc_add_clsact(iface);
        let prog = classifier(&mut self.ebpf, name)?;
        if prog.fd().is_err() {
            prog.load().map_err(|e| err(Box::new(e)))?;
        }
        prog.attach_with_options(
            iface,
            TcAttachType::Ingress,
            TcAttachOptions::Netlink(NlOptions::default()),
        )
        .map_err(|e| err(Box::new(e)))?;
        Ok(())
    }

    /// Benchmarks: where the ceiling programs send frames arriving on `ifindex`.
    pub fn set_bare(
        &mut self,
        ifindex: u32,
        target: dataplane_common::BareTarget,
    ) -> Result<(), DataplaneError> {
        let mut m: BpfHashMap<&mut MapData, u32, dataplane_common::BareTarget> = self
            .map_mut(maps::BARE)?
            .try_into()
            .map_err(map_err(maps::BARE))?;
        m.insert(ifindex, target, 0).map_err(map_err(maps::BARE))
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

    fn map_ref(&self, name: &'static str) -> Result<&Map, DataplaneError> {
        self.ebpf.map(name).ok_or(DataplaneError::Map {
            name,
            source: "missing".into(),
        })
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, DataplaneError> {
        self.ebpf.map_mut(name).ok_or(DataplaneError::Map {
            name,
            source: "missing".into(),
        })
    }

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

    fn hash_read<K: aya::Pod + Ord, V: aya::Pod>(
        &self,
        name: &'static str,
    ) -> Result<BTreeMap<K, V>, DataplaneError> {
        let m: BpfHashMap<&MapData, K, V> =
            self.map_ref(name)?.try_into().map_err(map_err(name))?;
        m.iter()
            .map(|kv| kv.map_err(map_err(name)))
            .collect::<Result<BTreeMap<K, V>, _>>()
    }

    fn hash_upsert<K: aya::Pod, V: aya::Pod>(
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

    fn hash_delete<K: aya::Pod, V: aya::Pod>(
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
    fn lpm_read<K: aya::Pod, V: aya::Pod>(
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

    fn lpm_upsert<K: aya::Pod, V: aya::Pod>(
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

    fn lpm_delete<K: aya::Pod, V: aya::Pod>(
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

/// A `POLICY_ADDR` key.
fn policy_addr_key(policy: u32, dir: u32, net: Ipv4Network) -> Key<PolicyAddrKey> {
    Key::new(
        32 + net.prefix() as u32,
        PolicyAddrKey {
            policy_dir: ((policy << 1) | dir).to_be_bytes(),
            ip: net.network().octets(),
        },
    )
}

/// A `POLICY_PORT` key.
fn policy_port_key(class: u32, m: &crate::security_groups::PortMatch) -> Key<PolicyPortKey> {
    Key::new(
        m.key_prefix_len(),
        PolicyPortKey {
            class: class.to_be_bytes(),
            proto: m.proto.unwrap_or(0),
            port: m.port.to_be_bytes(),
            _pad: 0,
        },
    )
}

/// Connection tracking state, read by the agent's garbage collection and
/// `stratoctl`.
#[derive(Clone, Copy, Debug, Default)]
pub struct CtSummary {
    pub entries: u64,
    pub expired_removed: u64,
    pub stats: CtStats,
}

impl Dataplane {
    /// Applies one policy's writes in their safe order (see
    /// [`crate::security_groups::PolicyOps`]).
    pub fn policy_apply(
        &mut self,
        ops: &crate::security_groups::PolicyOps,
    ) -> Result<(), DataplaneError> {
        // Host addresses and single ports go to the hashes, the rest to the
        // tries (`lookup` in the programs tries the hash first).
        let exact = |pm: &crate::security_groups::PortMatch| pm.proto.is_some() && pm.plen == 16;
        for (class, entries) in &ops.new_classes {
            for (pm, rule) in entries {
                let v = PolicyAllow { rule: *rule };
                let mut in_hash = false;
                if exact(pm) {
                    let name = maps::POLICY_EXACT;
                    let mut m: BpfHashMap<&mut MapData, PolicyPortKey, PolicyAllow> =
                        self.map_mut(name)?.try_into().map_err(map_err(name))?;
                    // Full: the trie takes it (the lookup falls back to it).
                    in_hash = m.insert(policy_port_key(*class, pm).data(), v, 0).is_ok();
                }
                if !in_hash {
                    let name = maps::POLICY_PORT;
                    let mut m: LpmTrie<&mut MapData, PolicyPortKey, PolicyAllow> =
                        self.map_mut(name)?.try_into().map_err(map_err(name))?;
                    m.insert(&policy_port_key(*class, pm), v, 0)
                        .map_err(map_err(name))?;
                }
            }
        }
        for (dir, net, class) in &ops.addr_upserts {
            let k = policy_addr_key(ops.id, *dir, *net);
            let v = PolicyClass { class: *class };
            let mut in_hash = false;
            if net.prefix() == 32 {
                let name = maps::POLICY_HOST;
                let mut m: BpfHashMap<&mut MapData, PolicyAddrKey, PolicyClass> =
                    self.map_mut(name)?.try_into().map_err(map_err(name))?;
                // Full: the trie takes it (the lookup falls back to it).
                in_hash = m.insert(k.data(), v, 0).is_ok();
            }
            if !in_hash {
                let name = maps::POLICY_ADDR;
                let mut m: LpmTrie<&mut MapData, PolicyAddrKey, PolicyClass> =
                    self.map_mut(name)?.try_into().map_err(map_err(name))?;
                m.insert(&k, v, 0).map_err(map_err(name))?;
            }
        }
        for (dir, net) in &ops.addr_deletes {
            // From the hash and the trie: a host address may have
            // overflowed into the trie.
            let k = policy_addr_key(ops.id, *dir, *net);
            if net.prefix() == 32 {
                let name = maps::POLICY_HOST;
                let mut m: BpfHashMap<&mut MapData, PolicyAddrKey, PolicyClass> =
                    self.map_mut(name)?.try_into().map_err(map_err(name))?;
                gone(m.remove(&k.data()), name)?;
            }
            let name = maps::POLICY_ADDR;
            let mut m: LpmTrie<&mut MapData, PolicyAddrKey, PolicyClass> =
                self.map_mut(name)?.try_into().map_err(map_err(name))?;
            gone(m.remove(&k), name)?;
        }
        for (class, shape) in &ops.class_deletes {
            for pm in shape {
                let k = policy_port_key(*class, pm);
                if exact(pm) {
                    let name = maps::POLICY_EXACT;
                    let mut m: BpfHashMap<&mut MapData, PolicyPortKey, PolicyAllow> =
                        self.map_mut(name)?.try_into().map_err(map_err(name))?;
                    gone(m.remove(&k.data()), name)?;
                }
                let name = maps::POLICY_PORT;
                let mut m: LpmTrie<&mut MapData, PolicyPortKey, PolicyAllow> =
                    self.map_mut(name)?.try_into().map_err(map_err(name))?;
                gone(m.remove(&k), name)?;
            }
        }
        Ok(())
    }

    /// Removes every policy entry whose policy id is not `live` (ids) and
    /// every class not in `live_classes` (an agent adopting the tables of a
    /// previous one). Returns the largest policy id and class seen.
    pub fn policy_sweep(
        &mut self,
        live: &dyn Fn(u32) -> bool,
        live_class: &dyn Fn(u32) -> bool,
    ) -> Result<(u32, u32), DataplaneError> {
        let (mut max_id, mut max_class) = (0, 0);
        {
            let name = maps::POLICY_ADDR;
            let mut m: LpmTrie<&mut MapData, PolicyAddrKey, PolicyClass> =
                self.map_mut(name)?.try_into().map_err(map_err(name))?;
            let keys: Vec<Key<PolicyAddrKey>> = m.keys().filter_map(Result::ok).collect();
            for k in keys {
                let id = u32::from_be_bytes(k.data().policy_dir) >> 1;
                max_id = max_id.max(id);
                if !live(id) {
                    gone(m.remove(&k), name)?;
                }
            }
        }
        {
            let name = maps::POLICY_HOST;
            let mut m: BpfHashMap<&mut MapData, PolicyAddrKey, PolicyClass> =
                self.map_mut(name)?.try_into().map_err(map_err(name))?;
            let keys: Vec<PolicyAddrKey> = m.keys().filter_map(Result::ok).collect();
            for k in keys {
                let id = u32::from_be_bytes(k.policy_dir) >> 1;
                max_id = max_id.max(id);
                if !live(id) {
                    gone(m.remove(&k), name)?;
                }
            }
        }
        {
            let name = maps::POLICY_EXACT;
            let mut m: BpfHashMap<&mut MapData, PolicyPortKey, PolicyAllow> =
                self.map_mut(name)?.try_into().map_err(map_err(name))?;
            let keys: Vec<PolicyPortKey> = m.keys().filter_map(Result::ok).collect();
            for k in keys {
                let c = u32::from_be_bytes(k.class);
                max_class = max_class.max(c);
                if !live_class(c) {
                    gone(m.remove(&k), name)?;
                }
            }
        }
        let name = maps::POLICY_PORT;
        let mut m: LpmTrie<&mut MapData, PolicyPortKey, PolicyAllow> =
            self.map_mut(name)?.try_into().map_err(map_err(name))?;
        let keys: Vec<Key<PolicyPortKey>> = m.keys().filter_map(Result::ok).collect();
        for k in keys {
            let c = u32::from_be_bytes(k.data().class);
            max_class = max_class.max(c);
            if !live_class(c) {
                gone(m.remove(&k), name)?;
            }
        }
        Ok((max_id, max_class))
    }

    /// Connection tracking counters, summed over CPUs.
    pub fn ct_stats(&self) -> Result<CtStats, DataplaneError> {
        let name = maps::CT_STATS;
        let m: PerCpuArray<&MapData, CtStats> =
            self.map_ref(name)?.try_into().map_err(map_err(name))?;
        let mut total = CtStats::default();
        for v in m.get(&0, 0).map_err(map_err(name))?.iter() {
            total.accumulate(v);
        }
        Ok(total)
    }

    /// One garbage collection pass over the connection table: removes
    /// entries past their state's timeout (at `now_ns`, the coarse
    /// monotonic clock the programs use) and those of zones (routing domains)
    /// `drop_zone` says are gone. Returns the live entries left and those removed.
    pub fn ct_gc(
        &mut self,
        now_ns: u64,
        drop_zone: &dyn Fn(u32) -> bool,
    ) -> Result<(u64, u64), DataplaneError> {
        let name = maps::CT;
        let mut m: BpfHashMap<&mut MapData, CtKey, CtEntry> =
            self.map_mut(name)?.try_into().map_err(map_err(name))?;
        let mut dead = Vec::new();
        let mut live = 0u64;
        for kv in m.iter() {
            let Ok((k, e)) = kv else { continue };
            let age = now_ns.saturating_sub(e.last_seen);
            if drop_zone(k.zone)
                || age > dataplane_common::ct_timeout_secs(e.state, e.flags) * 1_000_000_000
            {
                dead.push(k);
            } else {
                live += 1;
            }
        }
        for k in &dead {
            gone(m.remove(k), name)?;
        }
        Ok((live, dead.len() as u64))
    }

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

    /// One connection table entry.
    pub fn ct_get(&self, key: &CtKey) -> Result<Option<CtEntry>, DataplaneError> {
        let name = maps::CT;
        let m: BpfHashMap<&MapData, CtKey, CtEntry> =
            self.map_ref(name)?.try_into().map_err(map_err(name))?;
        match m.get(key, 0) {
            Ok(e) => Ok(Some(e)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(name)(e)),
        }
    }

    /// Every connection table entry (tests, `stratoctl`).
    pub fn ct_entries(&self) -> Result<Vec<(CtKey, CtEntry)>, DataplaneError> {
        let name = maps::CT;
        let m: BpfHashMap<&MapData, CtKey, CtEntry> =
            self.map_ref(name)?.try_into().map_err(map_err(name))?;
        Ok(m.iter().filter_map(Result::ok).collect())
    }
}

/// Kernel memory charged to a map (`memlock` of its fdinfo), in bytes.
fn fd_memlock(fd: std::os::fd::BorrowedFd<'_>) -> Option<u64> {
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

impl Dataplane {
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

    /// Benchmarks: fills the connection table with `n` entries of zone
    /// `zone` (synthetic flows 198.51.x.y, fresh) from user space.
    pub fn ct_fill(&mut self, zone: u32, n: u32) -> Result<(), DataplaneError> {
        let name = maps::CT;
        let now = coarse_now_ns();
        let mut m: BpfHashMap<&mut MapData, CtKey, CtEntry> =
            self.map_mut(name)?.try_into().map_err(map_err(name))?;
        for i in 0..n {
            let (k, _) = CtKey::of_flow(
                zone,
                [198, 51, (i >> 16) as u8, (i >> 8) as u8],
                [203, 0, 113, i as u8],
                40_000,
                443,
                17,
            );
            let e = CtEntry {
                last_seen: now,
                state: dataplane_common::CT_UDP,
                ..CtEntry::default()
            };
            m.insert(k, e, 0).map_err(map_err(name))?;
        }
        Ok(())
    }
}

/// The coarse monotonic clock the programs stamp entries with.
pub fn coarse_now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// The loaded object's TC program `name`.
fn classifier<'e>(
    ebpf: &'e mut Ebpf,
    name: &'static str,
) -> Result<&'e mut aya::programs::SchedClassifier, DataplaneError> {
    ebpf.program_mut(name)
        .ok_or(DataplaneError::NoProgram { name })?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| DataplaneError::Program {
            name,
            source: Box::new(e),
        })
}

/// A loaded program's fd, owned (the program array keeps its own reference).
fn owned_fd(
    name: &'static str,
    fd: Result<&aya::programs::ProgramFd, aya::programs::ProgramError>,
) -> Result<aya::programs::ProgramFd, DataplaneError> {
    fd.map_err(|e| DataplaneError::Program {
        name,
        source: Box::new(e),
    })?
    .try_clone()
    .map_err(|source| DataplaneError::Io {
        path: PathBuf::from(name),
        source,
    })
}

/// A removal that found nothing is fine (the entry is gone either way).
fn gone(r: Result<(), MapError>, name: &'static str) -> Result<(), DataplaneError> {
    match r {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        // An LPM trie reports a missing key as the syscall's ENOENT.
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(2) => Ok(()),
        Err(e) => Err(map_err(name)(e)),
    }
}

fn zeroes() -> Result<PerCpuValues<IfStats>, DataplaneError> {
    let n = aya::util::nr_cpus().map_err(|(what, e)| DataplaneError::Map {
        name: maps::IF_STATS,
        source: format!("{what}: {e}").into(),
    })?;
    PerCpuValues::try_from(vec![IfStats::default(); n]).map_err(|e| DataplaneError::Map {
        name: maps::IF_STATS,
        source: Box::new(e),
    })
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
    fn set_port_index(&mut self, ifindex: u32, info: PortInfo) -> Result<(), DataplaneError> {
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
    // A port: the pipeline's trace build (decides as the live one, writes
    // no connection entry), loaded here over the host's pinned maps. The
    // uplink: the agent's pinned program.
    let mut own = None;
    let pinned;
    let (program, prog): (&'static str, &Xdp) = if which == Attach::Port {
        let dp = own.insert(Dataplane::load(Some(pin_dir))?);
        let p = dp.xdp(Attach::PortTrace)?;
        (programs::PORT_TRACE, &*p)
    } else {
        let program = which.program();
        let path = pin_dir.join(format!("prog_{program}"));
        pinned =
            Xdp::from_pin(&path, aya_obj::programs::XdpAttachType::Interface).map_err(|e| {
                DataplaneError::Program {
                    name: program,
                    source: Box::new(e),
                }
            })?;
        (program, &pinned)
    };
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

/// One key of a host's pinned hash map (`lru`: an LRU hash), read only.
fn read_pinned_key<K: aya::Pod, V: aya::Pod>(
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

#[cfg(test)]
mod objects {
    //! The two kernel objects against the lists in `dataplane_common`: a
    //! map or program added on one side only fails here, before anything
    //! is loaded.
    use std::collections::BTreeSet;

    use dataplane_common::{maps, programs};

    use super::{BENCH_OBJECT, OBJECT};

    /// (maps, programs) of an object, by name; the compiler's data
    /// sections (`.rodata`, `.bss`, ...) are not maps of ours.
    fn contents(object: &[u8]) -> (BTreeSet<String>, BTreeSet<String>) {
        let obj = aya_obj::Object::parse(object).expect("parse the eBPF object");
        let maps = obj
            .maps
            .keys()
            .filter(|m| !m.starts_with('.'))
            .cloned()
            .collect();
        let programs = obj.programs.keys().cloned().collect();
        (maps, programs)
    }

    fn set<'a>(lists: impl IntoIterator<Item = &'a [&'a str]>) -> BTreeSet<String> {
        lists.into_iter().flatten().map(|s| s.to_string()).collect()
    }

    #[test]
    fn production_object_has_exactly_the_production_maps_and_programs() {
        let (m, p) = contents(OBJECT);
        assert_eq!(m, set([maps::PRODUCTION]), "maps of strato-dataplane");
        assert_eq!(
            p,
            set([programs::PRODUCTION]),
            "programs of strato-dataplane"
        );
    }

    #[test]
    fn production_object_carries_no_benchmark_program_or_map() {
        let (m, p) = contents(OBJECT);
        for name in maps::BENCH {
            assert!(
                !m.contains(*name),
                "benchmark map {name} in the production object"
            );
        }
        for name in programs::BENCH {
            assert!(
                !p.contains(*name),
                "benchmark program {name} in the production object"
            );
        }
    }

    #[test]
    fn bench_object_is_production_plus_bench() {
        let (m, p) = contents(BENCH_OBJECT);
        assert_eq!(
            m,
            set([maps::PRODUCTION, maps::BENCH]),
            "maps of strato-dataplane-bench"
        );
        assert_eq!(
            p,
            set([programs::PRODUCTION, programs::BENCH]),
            "programs of strato-dataplane-bench"
        );
    }

    #[test]
    fn the_agent_pins_only_production_maps() {
        let production = set([maps::PRODUCTION]);
        for name in super::MAP_NAMES {
            assert!(
                production.contains(*name),
                "{name} pinned but not in the object"
            );
        }
    }
}
