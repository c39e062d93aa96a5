//! `strato-l7 --state-dir DIR [--threads N]`: one L7 load-balancer
//! instance. `SIGHUP` re-reads `DIR/l7.json`; `SIGTERM` (or `SIGINT`)
//! drains and exits 0. `--threads`: the runtime's worker threads (default:
//! one per available CPU).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser, Debug)]
#[command(name = "strato-l7", about = "Strato L7 load-balancer instance")]
struct Args {
    /// Holds l7.json; gets l7.sock and l7-access.log.
    #[arg(long)]
    state_dir: PathBuf,
    /// Bound on the drain at SIGTERM, seconds.
    #[arg(long, default_value_t = 60)]
    drain_timeout_s: u64,
    /// Worker threads of the runtime (default: the available parallelism).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let threads = match args.threads {
        Some(n) => usize::from(n),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    // One worker: everything on this thread (no work-stealing scheduler,
    // no cross-thread wakeups); more: tokio's multi-threaded scheduler.
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    strato_proto::telemetry::init("strato-l7");
    let inherited =
        strato_l7::inherited_listeners(std::env::var(strato_l7::LISTEN_FDS_ENV).ok().as_deref())
            .map_err(anyhow::Error::msg)?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let instance = strato_l7::Instance::start(strato_l7::Options {
        state_dir: args.state_dir,
        drain_timeout: Duration::from_secs(args.drain_timeout_s),
        inherited: std::sync::Arc::new(inherited),
    })
    .await?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let _ = instance.reload().await;
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let drained = instance.shutdown().await;
    tracing::info!(drained, "exiting");
    Ok(())
}
