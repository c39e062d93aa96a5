//! Which entry point an interface gets ([`Attach`]), and attaching it:
//! through pinned bpf links (forwarding survives an agent restart; a new
//! program replaces the old one atomically), TC clsact on VM ports.

use std::path::Path;

use aya::{
    maps::{HashMap as BpfHashMap, MapData},
    programs::{links::FdLink, links::PinnedLink, xdp::XdpLinkId, Xdp, XdpMode},
};
use dataplane_common::{maps, programs};

use crate::{load::classifier, map_err, Dataplane, DataplaneError};

/// Points the pinned link at `prog` (atomic program replacement). The link
/// stays pinned, so it outlives this process.
pub(crate) fn adopt_link(
    prog: &mut Xdp,
    pin: &Path,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
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

impl Dataplane {
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

    pub(crate) fn attach_inner(
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
    pub(crate) fn attach_port_tc(&mut self, iface: &str) -> Result<(), DataplaneError> {
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
}
