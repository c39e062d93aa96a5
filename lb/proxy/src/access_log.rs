//! The access log: one [`L7AccessLine`] JSON object per request, appended
//! by one writer task through a buffer flushed at least every second and
//! on exit (never fsynced per line). Request handling only sends lines.

use std::path::Path;
use std::time::Duration;

use strato_proto::l7::L7AccessLine;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

enum Msg {
    Line(Box<L7AccessLine>),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct AccessLog {
    tx: mpsc::UnboundedSender<Msg>,
}

impl AccessLog {
    /// Opens (appends to) `path` and starts the writer.
    pub async fn open(path: &Path) -> std::io::Result<AccessLog> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(file, rx));
        Ok(AccessLog { tx })
    }

    pub fn log(&self, line: L7AccessLine) {
        let _ = self.tx.send(Msg::Line(Box::new(line)));
    }

    /// Returns once every line sent before is written out.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn writer(file: tokio::fs::File, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut out = tokio::io::BufWriter::with_capacity(64 * 1024, file);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut dirty = false;
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::Line(line)) => {
                    let mut text = serde_json::to_vec(&line).unwrap_or_default();
                    text.push(b'\n');
                    if let Err(e) = out.write_all(&text).await {
                        tracing::warn!(error = %e, "access log write failed");
                    }
                    dirty = true;
                }
                Some(Msg::Flush(done)) => {
                    if let Err(e) = out.flush().await {
                        tracing::warn!(error = %e, "access log flush failed");
                    }
                    dirty = false;
                    let _ = done.send(());
                }
                None => break,
            },
            _ = tick.tick() => {
                if dirty {
                    if let Err(e) = out.flush().await {
                        tracing::warn!(error = %e, "access log flush failed");
                    }
                    dirty = false;
                }
            }
        }
    }
    let _ = out.flush().await;
}

/// RFC 3339 UTC with milliseconds.
pub fn timestamp_ms(unix_ms: u64) -> String {
    let s = strato_proto::time::timestamp(unix_ms / 1000);
    format!("{}.{:03}Z", s.trim_end_matches('Z'), unix_ms % 1000)
}
