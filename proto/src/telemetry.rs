//! Logging setup shared by the binaries: `tracing` to stderr, filtered by
//! `RUST_LOG` (default `info`), JSON lines with `STRATO_LOG_FORMAT=json`.

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber. Safe to call once per process.
pub fn init(binary: &'static str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("STRATO_LOG_FORMAT")
        .map(|v| v == "json")
        .unwrap_or(false);
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    tracing::debug!(
        binary,
        version = env!("CARGO_PKG_VERSION"),
        "logging initialised"
    );
}
