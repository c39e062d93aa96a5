//! strato-controller: the only writer of desired state. Serves the API on
//! TCP (tenants, operators, stratoctl) and optionally on a Unix socket (the
//! harness's management path for agents in host namespaces).

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use strato_controller::{
    api,
    app::{App, Config},
    commit::Core,
};
use strato_proto::telemetry;

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
    /// SQLite database (created if missing).
    #[arg(long, env = "STRATO_DB", default_value = "/var/lib/strato/strato.db")]
    db: PathBuf,
    /// URL clients reach the API at, for the service catalog (default:
    /// http://<--listen>).
    #[arg(long, env = "STRATO_PUBLIC_URL")]
    public_url: Option<String>,
    /// Region name in the service catalog.
    #[arg(long, env = "STRATO_REGION", default_value = "RegionOne")]
    region: String,
    /// Token lifetime in seconds.
    #[arg(long, env = "STRATO_TOKEN_TTL", default_value_t = 3600)]
    token_ttl: u64,
    /// Bootstrap administrator's user name.
    #[arg(long, env = "STRATO_ADMIN_USER", default_value = "admin")]
    admin_user: String,
    /// Bootstrap administrator's password (required; from the environment
    /// preferably, so it does not show in the process list).
    #[arg(long, env = "STRATO_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: String,
    /// Write a clouds.yaml with the `strato-admin` cloud here (mode 0600),
    /// for the stock openstack CLI and openstacksdk.
    #[arg(long, env = "STRATO_CLOUDS_YAML")]
    write_clouds_yaml: Option<PathBuf>,
    /// The Key Manager's key-encryption key: 32 bytes, mode 0600, created on
    /// first start (default: secret.key beside the database). Keep it out
    /// of database backups; without it stored secrets cannot be read.
    #[arg(long, env = "STRATO_SECRET_KEY")]
    secret_key: Option<PathBuf>,
    /// Bootstrap administrator's project.
    #[arg(long, env = "STRATO_ADMIN_PROJECT", default_value = "admin")]
    admin_project: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init("strato-controller");
    let args = Args::parse();
    if !(60..=7 * 86_400).contains(&args.token_ttl) {
        anyhow::bail!(
            "--token-ttl must be between 60 s and 7 days, got {}",
            args.token_ttl
        );
    }
    if args.admin_password.len() < 8 {
        anyhow::bail!("the bootstrap admin password must have at least 8 characters");
    }
    let config = Config {
        db: args.db.clone(),
        public_url: args
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", args.listen))
            .trim_end_matches('/')
            .to_owned(),
        region: args.region.clone(),
        token_ttl: Duration::from_secs(args.token_ttl),
        admin_user: args.admin_user.clone(),
        admin_password: args.admin_password.clone(),
        admin_project: args.admin_project.clone(),
    };
    let core = Core::open(&config.db)
        .with_context(|| format!("opening the store {}", config.db.display()))?;
    let key_path = args
        .secret_key
        .clone()
        .unwrap_or_else(|| strato_controller::kek::default_path(&config.db));
    let kek = {
        let state = core.read();
        strato_controller::kek::load_or_create(
            &key_path,
            strato_controller::keymanager::sealed_payloads(&state),
        )
        .context("loading the key manager's key-encryption key")?
    };
    core.install_secret_key(Arc::new(kek));
    strato_controller::identity::bootstrap(&core, &config)
        .context("bootstrapping identity (roles, admin)")?;
    if let Some(path) = &args.write_clouds_yaml {
        let auth_url = format!("{}/v3", config.public_url);
        strato_controller::clouds::write(
            path,
            &[strato_controller::clouds::Cloud {
                name: "strato-admin",
                auth_url: &auth_url,
                username: &config.admin_user,
                password: &config.admin_password,
                project: &config.admin_project,
                region: &config.region,
            }],
        )
        .with_context(|| format!("writing {}", path.display()))?;
        tracing::info!(path = %path.display(), "clouds.yaml written (cloud strato-admin)");
    }
    let app = Arc::new(App::new(config, core));
    {
        // On SIGTERM/SIGINT: end the watches so both servers drain, and do
        // not wait on a stuck client for more than 3 s.
        let app = app.clone();
        tokio::spawn(async move {
            shutdown().await;
            app.stopping.send_replace(true);
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            tracing::warn!("connections still open 3 s after the stop signal; exiting");
            std::process::exit(0);
        });
    }
    tokio::spawn(strato_controller::reconcile::gateway_failover(app.clone()));
    tokio::spawn(strato_controller::reconcile::lb_provisioning(app.clone()));
    tokio::spawn(strato_controller::reconcile::l7_instances(app.clone()));
    let agent_app = api::agent_router(app.clone());
    let app = api::router(app);

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
        // Only root may talk to the agents' API.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
        tracing::info!(socket = %path.display(), "agents' API listening on Unix socket");
        tasks.spawn(async move {
            axum::serve(unix, agent_app)
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
