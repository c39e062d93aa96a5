//! The access log: one [`L7AccessLine`] JSON object per request. A request
//! serialises its line into a shared in-memory buffer (no task wakeup, no
//! copy of its names); one writer task appends the buffer to the file when
//! it passes [`FLUSH_AT`] bytes, at least every second, and on shutdown (never
//! fsynced per line). Request handling never touches the file.

use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strato_proto::l7::L7AccessLine;
use tokio::sync::Notify;

/// Buffered bytes that wake the writer before its tick.
const FLUSH_AT: usize = 64 * 1024;

struct Inner {
    /// Lines not written yet.
    buf: Mutex<Vec<u8>>,
    /// Held while a buffer is taken and written: lines reach the file in
    /// the order they were logged.
    file: Mutex<std::fs::File>,
    full: Notify,
}

#[derive(Clone)]
pub struct AccessLog {
    inner: Arc<Inner>,
}

impl AccessLog {
    /// Opens (appends to) `path` and starts the writer.
    pub async fn open(path: &Path) -> std::io::Result<AccessLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let inner = Arc::new(Inner {
            buf: Mutex::new(Vec::with_capacity(FLUSH_AT * 2)),
            file: Mutex::new(file),
            full: Notify::new(),
        });
        tokio::spawn(writer(inner.clone()));
        Ok(AccessLog { inner })
    }

    pub fn log(&self, line: &L7AccessLine<'_>) {
        let full = {
            let mut buf = self.inner.buf.lock().expect("access log poisoned");
            let before = buf.len();
            if serde_json::to_writer(&mut *buf, line).is_err() {
                buf.truncate(before);
                return;
            }
            buf.push(b'\n');
            buf.len() >= FLUSH_AT
        };
        if full {
            self.inner.full.notify_one();
        }
    }

    /// Returns once every line logged before is written out.
    pub async fn flush(&self) {
        self.inner.write_out();
    }
}

impl Inner {
    /// Appends what is buffered to the file (a write into the page cache:
    /// short enough to do on the runtime's thread).
    fn write_out(&self) {
        let mut file = self.file.lock().expect("access log poisoned");
        let text = {
            let mut buf = self.buf.lock().expect("access log poisoned");
            if buf.is_empty() {
                return;
            }
            std::mem::replace(&mut *buf, Vec::with_capacity(FLUSH_AT * 2))
        };
        if let Err(e) = file.write_all(&text) {
            tracing::warn!(error = %e, bytes = text.len(), "access log write failed");
        }
    }
}

/// Writes the buffer out when it fills and every second (shutdown
/// flushes explicitly).
async fn writer(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = inner.full.notified() => {}
            _ = tick.tick() => {}
        }
        inner.write_out();
    }
}

/// RFC 3339 UTC with milliseconds. The date and time of day are made once
/// per second (per thread); a line only adds its milliseconds.
pub fn timestamp_ms(unix_ms: u64) -> String {
    use std::cell::RefCell;
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let (secs, ms) = (unix_ms / 1000, unix_ms % 1000);
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            let s = strato_proto::time::timestamp(secs);
            *cached = (secs, s.trim_end_matches('Z').to_string());
        }
        let mut out = String::with_capacity(cached.1.len() + 5);
        out.push_str(&cached.1);
        out.push('.');
        out.push(char::from(b'0' + (ms / 100) as u8));
        out.push(char::from(b'0' + (ms / 10 % 10) as u8));
        out.push(char::from(b'0' + (ms % 10) as u8));
        out.push('Z');
        out
    })
}

#[cfg(test)]
mod tests {
    use super::timestamp_ms;

    #[test]
    fn timestamps_carry_milliseconds() {
        assert_eq!(timestamp_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp_ms(1_796_601_599_007), "2026-12-06T23:59:59.007Z");
        // The same second again, then the next one (the cache moves).
        assert_eq!(timestamp_ms(1_796_601_599_999), "2026-12-06T23:59:59.999Z");
        assert_eq!(timestamp_ms(1_796_601_600_040), "2026-12-07T00:00:00.040Z");
    }
}
