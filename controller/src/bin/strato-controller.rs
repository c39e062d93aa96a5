//! strato-controller: the only writer of desired state. Serves the API on
//! TCP (tenants, operators, stratoctl) and optionally on a Unix socket (the
//! harness's management path for agents in host namespaces).

use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;
use clap::Parser;
use strato::{api, controller::Controller, telemetry};

#[derive(Parser, Debug)]
#[command(
    name = "strato-controller",
    version,
    about = "Strato controller: API server, desired state, compiler"
)]
struct Args {
    /// TCP address for the API.
    #[arg(long, default_value = "127.0.0.1:9696", env = "STRATO_LISTEN")]
    listen: String,
    /// Also serve the API on this Unix socket (agents in host namespaces use it).
    #[arg(long, env = "STRATO_SOCKET")]
    socket: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init("strato-controller");
    let args = Args::parse();
    let controller = Arc::new(Controller::new());
    let app = api::router(controller);

    let tcp = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding the API to {}", args.listen))?;
    tracing::info!(listen = %args.listen, "API listening");
    let mut tasks = tokio::task::JoinSet::new();
    {
        let app = app.clone();
        tasks.spawn(async move {
            axum::serve(tcp, app)
                .with_graceful_shutdown(shutdown())
                .await
        });
    }
    if let Some(path) = &args.socket {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // A socket left by a crashed controller would make bind fail.
        let _ = std::fs::remove_file(path);
        let unix = tokio::net::UnixListener::bind(path)
            .with_context(|| format!("binding {}", path.display()))?;
        tracing::info!(socket = %path.display(), "API listening on Unix socket");
        tasks.spawn(async move {
            axum::serve(unix, app)
                .with_graceful_shutdown(shutdown())
                .await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.context("server task panicked")?
            .context("serving the API")?;
    }
    if let Some(path) = &args.socket {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("controller stopped");
    Ok(())
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
