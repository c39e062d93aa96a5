//! Loading the object: maps pinned per host (or private), the programs, the
//! port pipeline's tail-call arrays; the benchmark harness's frame.

use std::path::{Path, PathBuf};

use aya::{maps::MapData, programs::Xdp, Ebpf, EbpfLoader};
use dataplane_common::{maps, programs};

use crate::{map_err, Attach, Dataplane, DataplaneError, BENCH_OBJECT, OBJECT};

pub(crate) fn pin_note(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map(|p| format!(" (pin directory {})", p.display()))
        .unwrap_or_default()
}

/// The loaded object's TC program `name`.
pub(crate) fn classifier<'e>(
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
pub(crate) fn owned_fd(
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

    pub(crate) fn load_object(
        object: &[u8],
        pin_dir: Option<&Path>,
    ) -> Result<Dataplane, DataplaneError> {
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

    pub(crate) fn open(
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
                maps::PINNED.iter().map(|m| (*m, dir.join(m))).collect()
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
    pub(crate) fn load_classifier(
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

    pub(crate) fn set_tail(
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
    pub(crate) fn xdp(&mut self, which: Attach) -> Result<&mut Xdp, DataplaneError> {
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
}
