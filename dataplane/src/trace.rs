//! `stratoctl trace`: one frame through the read-only port pipeline.

use std::path::Path;

use aya::programs::Xdp;
use dataplane_common::{programs, DropReason};

use crate::{Attach, Counters, Dataplane, DataplaneError};

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
