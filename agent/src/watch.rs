//! The agent's configuration stream: follows the controller's watch of
//! this host (a snapshot, then deltas, and heartbeats), reconnecting with
//! the last applied revision, or 0 (a snapshot) after a failed delta.
//!
//! Only reads and forwards updates to the agent's loop; never applies
//! them and never touches the dataplane.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context as _;
use http_body_util::BodyExt as _;
use strato_proto::{
    client::{self, Endpoint},
    config::Update,
};

/// Follows the host's configuration stream, reconnecting with the last
/// applied revision (or 0 after a failed delta, which yields a snapshot).
pub(crate) async fn watch(
    ep: Endpoint,
    host: String,
    applied: Arc<AtomicU64>,
    resync: Arc<AtomicU64>,
    tx: tokio::sync::mpsc::Sender<Option<Update>>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut seen_resync = 0;
    let mut first = true;
    loop {
        let r = resync.load(Ordering::SeqCst);
        // At start and after a failed delta: ask for a snapshot.
        let since = if first || r != seen_resync {
            0
        } else {
            applied.load(Ordering::SeqCst)
        };
        seen_resync = r;
        first = false;
        let path = format!("/internal/v1/hosts/{host}/watch?since={since}");
        match follow(&ep, &path, &tx, &resync, r).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), "watch interrupted");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

/// Reads one watch response until it ends, fails, goes silent for 3
/// heartbeats, or a resync is requested.
async fn follow(
    ep: &Endpoint,
    path: &str,
    tx: &tokio::sync::mpsc::Sender<Option<Update>>,
    resync: &AtomicU64,
    resync_at_start: u64,
) -> anyhow::Result<()> {
    let resp = client::stream(ep, path).await?;
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(16), body.frame())
            .await
            .context("watch silent for 16 s")?;
        let Some(frame) = frame else { return Ok(()) };
        let frame = frame.context("reading the watch stream")?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let v: serde_json::Value =
                serde_json::from_slice(&line).context("watch line is not JSON")?;
            if v.get("kind").and_then(|k| k.as_str()) == Some("heartbeat") {
                continue;
            }
            let u: Update = serde_json::from_value(v).context("watch line is not an update")?;
            if tx.send(Some(u)).await.is_err() {
                return Ok(());
            }
        }
        if resync.load(Ordering::SeqCst) != resync_at_start {
            anyhow::bail!("resync requested");
        }
    }
}
