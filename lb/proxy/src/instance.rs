//! The instance: start (load, bind, serve the control socket), reload
//! (swap the configuration, add and drain listeners), shutdown (drain
//! everything within a bound).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use strato_proto::l7::{L7Stats, ACCESS_LOG, CONFIG_FILE, CONTROL_SOCKET};
use tokio::sync::Mutex;

use crate::access_log::AccessLog;
use crate::config::{Compiled, ConfigError};
use crate::server::{control, ListenerTask};
use crate::state::State;

/// How an instance is run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Holds `l7.json`; gets `l7.sock` and `l7-access.log`.
    pub state_dir: PathBuf,
    /// Bound on a drain (shutdown) before connections are dropped.
    pub drain_timeout: Duration,
    /// Listening sockets handed over by the agent, by port (see
    /// [`inherited_listeners`]): a listener on one of these ports uses it
    /// instead of binding its own, so connections outlive this process.
    pub inherited: std::sync::Arc<BTreeMap<u16, std::os::fd::OwnedFd>>,
}

/// The environment variable naming inherited listening sockets:
/// `<port>:<fd>,...` (the agent's `STRATO_L7_LISTEN_FDS`).
pub const LISTEN_FDS_ENV: &str = "STRATO_L7_LISTEN_FDS";

/// Takes the listening sockets `LISTEN_FDS_ENV` names (once: the variable
/// is read, each descriptor checked to be an open socket and made
/// close-on-exec). A malformed value or a descriptor that is not a socket
/// is an error naming it. (The one place this crate needs `unsafe`: a
/// descriptor number from the environment becomes an owned socket.)
#[allow(unsafe_code)]
pub fn inherited_listeners(
    value: Option<&str>,
) -> Result<BTreeMap<u16, std::os::fd::OwnedFd>, String> {
    use std::os::fd::FromRawFd;
    let mut out = BTreeMap::new();
    for item in value.unwrap_or("").split(',').filter(|x| !x.is_empty()) {
        let (p, f) = item
            .split_once(':')
            .ok_or_else(|| format!("{LISTEN_FDS_ENV}: {item:?} is not <port>:<fd>"))?;
        let port: u16 = p
            .parse()
            .map_err(|_| format!("{LISTEN_FDS_ENV}: {p:?} is not a port"))?;
        let fd: i32 = f
            .parse()
            .ok()
            .filter(|fd| *fd > 2)
            .ok_or_else(|| format!("{LISTEN_FDS_ENV}: {f:?} is not a descriptor above 2"))?;
        // SAFETY: fcntl and getsockopt on an integer descriptor: they only
        // answer whether it is an open socket.
        let is_socket = unsafe {
            let mut ty: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            libc::fcntl(fd, libc::F_GETFD) >= 0
                && libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_TYPE,
                    (&mut ty as *mut libc::c_int).cast(),
                    &mut len,
                ) == 0
                && ty == libc::SOCK_STREAM
        };
        if !is_socket {
            return Err(format!(
                "{LISTEN_FDS_ENV}: descriptor {fd} is not a stream socket"
            ));
        }
        if out.contains_key(&port) {
            return Err(format!("{LISTEN_FDS_ENV}: port {port} given twice"));
        }
        // SAFETY: an open socket nothing else in this process owns (it
        // was inherited for this purpose and is taken once).
        let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        // SAFETY: fcntl on a descriptor we own.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        out.insert(port, owned);
    }
    Ok(out)
}

/// A listening socket for `port` from the inherited ones, if there is one
/// (a duplicate: the inherited one stays for later listeners on the port).
fn inherited_for(opts: &Options, port: u16) -> Option<std::net::TcpListener> {
    let fd = opts.inherited.get(&port)?.try_clone().ok()?;
    Some(std::net::TcpListener::from(fd))
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("opening the access log {path}: {source}")]
    AccessLog {
        path: String,
        source: std::io::Error,
    },
    #[error("binding the control socket {path}: {source}")]
    Control {
        path: String,
        source: std::io::Error,
    },
    #[error("binding listener {id} on {bind}: {source}")]
    Bind {
        id: String,
        bind: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// A running instance.
pub struct Instance {
    opts: Options,
    state: Arc<State>,
    listeners: Mutex<BTreeMap<String, ListenerTask>>,
    draining: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    control: tokio::task::JoinHandle<()>,
}

impl Instance {
    /// Loads the configuration, binds every listener and the control
    /// socket. A configuration that does not load is an error here.
    pub async fn start(opts: Options) -> Result<Instance, StartError> {
        let config = Compiled::load(&opts.state_dir.join(CONFIG_FILE))?;
        let log_path = opts.state_dir.join(ACCESS_LOG);
        let log = AccessLog::open(&log_path)
            .await
            .map_err(|source| StartError::AccessLog {
                path: log_path.display().to_string(),
                source,
            })?;
        let listeners_cfg: Vec<_> = config.listeners.values().cloned().collect();
        let state = Arc::new(State::new(config, log));
        state.metrics.reloads.inc();
        let mut listeners = BTreeMap::new();
        for l in listeners_cfg {
            let task = ListenerTask::start(
                state.clone(),
                l.clone(),
                inherited_for(&opts, l.bind.port()),
            )
            .await
            .map_err(|source| StartError::Bind {
                id: l.id.clone(),
                bind: l.bind,
                source,
            })?;
            listeners.insert(l.id.clone(), task);
        }
        let sock = opts.state_dir.join(CONTROL_SOCKET);
        let _ = std::fs::remove_file(&sock);
        let unix = tokio::net::UnixListener::bind(&sock).map_err(|source| StartError::Control {
            path: sock.display().to_string(),
            source,
        })?;
        let control = tokio::spawn(control(state.clone(), unix));
        tracing::info!(
            state_dir = %opts.state_dir.display(),
            listeners = listeners.len(),
            "instance started"
        );
        Ok(Instance {
            opts,
            state,
            listeners: Mutex::new(listeners),
            draining: Mutex::default(),
            control,
        })
    }

    /// Re-reads the configuration. An invalid one is refused (the old one
    /// stays) and counted. Listeners that left stop accepting and drain;
    /// new ones are bound (a failed bind is logged and counted, the rest
    /// of the configuration still applies).
    pub async fn reload(&self) -> Result<(), ConfigError> {
        let config = match Compiled::load(&self.opts.state_dir.join(CONFIG_FILE)) {
            Ok(c) => c,
            Err(e) => {
                self.state.metrics.reload_errors.inc();
                tracing::error!(error = %e, "configuration refused, keeping the previous one");
                return Err(e);
            }
        };
        let wanted: BTreeMap<_, _> = config
            .listeners
            .iter()
            .map(|(id, l)| (id.clone(), l.clone()))
            .collect();
        self.state.install(config);
        self.state.metrics.reloads.inc();
        let mut listeners = self.listeners.lock().await;
        let mut draining = self.draining.lock().await;
        let stale: Vec<String> = listeners
            .iter()
            .filter(|(id, t)| {
                wanted
                    .get(*id)
                    .is_none_or(|l| l.bind != t.bind || l.tls.is_some() != t.tls)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            if let Some(t) = listeners.remove(&id) {
                tracing::info!(listener = %id, "listener removed, draining");
                draining.push(t.stop().await);
            }
        }
        draining.retain(|h| !h.is_finished());
        let mut failed = false;
        for (id, l) in wanted {
            if listeners.contains_key(&id) {
                continue;
            }
            let inherited = inherited_for(&self.opts, l.bind.port());
            match ListenerTask::start(self.state.clone(), l.clone(), inherited).await {
                Ok(t) => {
                    listeners.insert(id, t);
                }
                Err(e) => {
                    failed = true;
                    tracing::error!(listener = %id, bind = %l.bind, error = %e, "cannot bind listener");
                }
            }
        }
        if failed {
            self.state.metrics.reload_errors.inc();
        }
        tracing::info!(listeners = listeners.len(), "configuration reloaded");
        Ok(())
    }

    /// Stops accepting everywhere, lets what is in flight finish
    /// (keep-alive connections close after their current request, HTTP/2
    /// gets GOAWAY), flushes the access log. True when everything drained
    /// within the bound.
    pub async fn shutdown(&self) -> bool {
        let mut handles = std::mem::take(&mut *self.draining.lock().await);
        let tasks = std::mem::take(&mut *self.listeners.lock().await);
        for (_, t) in tasks {
            handles.push(t.stop().await);
        }
        tracing::info!(listeners = handles.len(), "draining");
        let all = async {
            for h in handles {
                let _ = h.await;
            }
        };
        let drained = tokio::time::timeout(self.opts.drain_timeout, all)
            .await
            .is_ok();
        if !drained {
            tracing::warn!(
                bound_s = self.opts.drain_timeout.as_secs(),
                "drain bound reached"
            );
        }
        self.control.abort();
        let _ = std::fs::remove_file(self.opts.state_dir.join(CONTROL_SOCKET));
        self.state.log.flush().await;
        drained
    }

    /// The `GET /stats` answer.
    pub fn stats(&self) -> L7Stats {
        self.state.metrics.stats()
    }

    /// Writes out the access log lines so far.
    pub async fn flush_access_log(&self) {
        self.state.log.flush().await;
    }

    /// Addresses of the listeners accepting now, by id.
    pub async fn listening(&self) -> BTreeMap<String, std::net::SocketAddr> {
        self.listeners
            .lock()
            .await
            .iter()
            .map(|(id, t)| (id.clone(), t.bind))
            .collect()
    }
}
