//! strato-agent: one per host. Owns the host's eBPF dataplane (loads,
//! attaches, pins) and reports to the controller.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use strato_agent::agent::{Agent, AgentConfig};
use strato_proto::{client::Endpoint, naming::PIN_ROOT, telemetry};

#[derive(Parser, Debug)]
#[command(
    name = "strato-agent",
    version,
    about = "Strato host agent: loads and attaches the eBPF dataplane, reports to the controller"
)]
struct Args {
    /// This host's name (also its pin directory under --pin-root).
    #[arg(long, env = "STRATO_HOST")]
    host: String,
    /// Controller endpoint: http://HOST:PORT or unix:/path/to/socket. Without
    /// it the agent runs standalone.
    #[arg(long, env = "STRATO_CONTROLLER")]
    controller: Option<Endpoint>,
    /// Underlay NIC(s) that get the uplink program.
    #[arg(long = "uplink", default_value = "eth0")]
    uplinks: Vec<String>,
    /// Interfaces whose names start with this are VM ports (Nova's tap devices).
    #[arg(long = "port-prefix", default_value = "tap")]
    port_prefixes: Vec<String>,
    /// bpffs directory under which <host>/ holds the pinned maps and links.
    #[arg(long, default_value = PIN_ROOT)]
    pin_root: PathBuf,
    /// Seconds between full reports (every interface's counters, every
    /// port); status reports with what changed go out in between.
    #[arg(long, default_value_t = 2.0)]
    full_report_interval: f64,
    /// Seconds between reconcile-and-report passes.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Enter this named network namespace (/run/netns/NAME) first; for hosts
    /// simulated by the harness. Only the network namespace changes, so the
    /// pins stay in the machine's bpffs.
    #[arg(long)]
    netns: Option<String>,
    /// Detach from every interface and remove the pins on exit (default:
    /// programs stay attached and keep forwarding).
    #[arg(long)]
    detach_on_exit: bool,
    /// Flows the connection tracking table holds (LRU: the least recently
    /// used entry makes room when it is full). Memory is reserved up front,
    /// about 100 bytes per flow.
    #[arg(long, env = "STRATO_CT_MAX", default_value_t = dataplane_common::maps::CT_MAX_DEFAULT)]
    ct_max: u32,
    /// Availability zone of this host.
    #[arg(long, env = "STRATO_AZ", default_value = "")]
    az: String,
    /// Gateway hosts: the interface on the external network (towards the
    /// internet); it gets the external program.
    #[arg(long)]
    external: Option<String>,
    /// Where the load balancer access log (`lb-access.log`) and metrics
    /// (`metrics.prom`, Prometheus text) are written; default
    /// `/run/strato/agent-<host>`.
    #[arg(long)]
    state_dir: Option<std::path::PathBuf>,
    /// The L7 load balancer instance executable (default: `strato-l7`
    /// next to this one).
    #[arg(long, env = "STRATO_L7_BINARY")]
    l7_binary: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    telemetry::init("strato-agent");
    let args = Args::parse();
    if !(0.05..=3600.0).contains(&args.interval) {
        anyhow::bail!(
            "--interval must be between 0.05 and 3600 seconds, got {}",
            args.interval
        );
    }
    if !(1024..=64_000_000).contains(&args.ct_max) {
        anyhow::bail!(
            "--ct-max must be between 1024 and 64000000 flows, got {}",
            args.ct_max
        );
    }
    if let Some(ns) = &args.netns {
        // Before any thread exists: setns applies to the calling thread only.
        let path = PathBuf::from("/run/netns").join(ns);
        let f = std::fs::File::open(&path)
            .with_context(|| format!("opening network namespace {}", path.display()))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering network namespace {ns}"))?;
    }
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from(format!("/run/strato/agent-{}", args.host)));
    let cfg = AgentConfig {
        host: args.host,
        controller: args.controller,
        uplinks: args.uplinks,
        port_prefixes: args.port_prefixes,
        pin_root: args.pin_root,
        interval: Duration::from_secs_f64(args.interval),
        full_report_interval: Duration::from_secs_f64(
            args.full_report_interval.clamp(0.05, 3600.0),
        ),
        ct_max: Some(args.ct_max),
        az: args.az,
        external: args.external,
        state_dir: Some(state_dir),
        l7_binary: args.l7_binary.unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(|d| d.join("strato-l7")))
                .unwrap_or_else(|| PathBuf::from("strato-l7"))
        }),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async move {
        let _span = tracing::info_span!("agent", host = %cfg.host).entered();
        let agent = Agent::start(cfg)?;
        drop(_span);
        agent.run(shutdown(), args.detach_on_exit).await
    })
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
