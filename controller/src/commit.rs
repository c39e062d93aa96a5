//! The one way to change the desired state.
//!
//! [`Core::mutate`] is the only writer: it runs a command's validation
//! against the current [`State`], commits the resulting [`Change`]s to the
//! store (durable), then applies them in memory, bumps the global revision
//! and recompiles the hosts the change concerns. A command that fails
//! validation, or whose commit fails, changes nothing. Reads take a shared
//! lock and never wait on disk except behind a writer.

use std::{
    path::Path,
    sync::{Mutex, RwLock, RwLockReadGuard},
};

use strato_proto::config::Update;

use crate::state::State;
use crate::{
    compile::Compiler,
    error::ApiError,
    model::Change,
    store::{Store, StoreError},
};

/// Revisions of change log kept in the store, and how often it is trimmed.
const CHANGE_LOG_KEEP: u64 = 100_000;
const CHANGE_LOG_COMPACT_EVERY: u64 = 1_000;

/// The state, its store, and notification of new revisions.
pub struct Core {
    state: RwLock<State>,
    store: Mutex<Store>,
    /// Per-host compiled configuration; updated under the state write lock,
    /// so it always matches `state.revision`.
    compiler: Mutex<Compiler>,
    revisions: tokio::sync::watch::Sender<u64>,
}

impl Core {
    /// Opens the store at `db` and loads everything into memory.
    pub fn open(db: &Path) -> Result<Core, StoreError> {
        let store = Store::open(db)?;
        let loaded = store.load()?;
        let mut state = State {
            revision: loaded.revision,
            ..State::default()
        };
        let n = loaded.objects.len();
        for o in loaded.objects {
            state.apply(&Change::Put(o));
        }
        let compiler = Compiler::new(&state);
        tracing::info!(db = %db.display(), revision = state.revision, objects = n, hosts = compiler.sizes().len(), "state loaded and compiled");
        let (revisions, _) = tokio::sync::watch::channel(state.revision);
        Ok(Core {
            state: RwLock::new(state),
            store: Mutex::new(store),
            compiler: Mutex::new(compiler),
            revisions,
        })
    }

    /// Installs the Key Manager's key-encryption key (runtime only: never
    /// stored, not a revision); see `kek::load_or_create`.
    pub fn install_secret_key(&self, key: std::sync::Arc<crate::kek::Kek>) {
        self.state.write().expect("state lock poisoned").secret_key = Some(key);
    }

    /// A consistent read view (held briefly: writers wait for it).
    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().expect("state lock poisoned")
    }

    /// Subscribes to new global revisions.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revisions.subscribe()
    }

    /// Runs `f` against the current state; commits the changes it returns
    /// (durably, as one revision) and applies them. Nothing changes if `f`
    /// or the commit fails.
    pub fn mutate<T>(
        &self,
        f: impl FnOnce(&State) -> Result<(Vec<Change>, T), ApiError>,
    ) -> Result<T, ApiError> {
        let mut state = self.state.write().expect("state lock poisoned");
        let (changes, out) = f(&state)?;
        if changes.is_empty() {
            return Ok(out);
        }
        let revision = state.revision + 1;
        {
            let mut store = self.store.lock().expect("store lock poisoned");
            store.commit(revision, &changes).map_err(|e| {
                tracing::error!(error = %e, revision, "commit failed");
                ApiError::internal("the change could not be stored; nothing was changed")
            })?;
        }
        for c in &changes {
            state.apply(c);
        }
        state.revision = revision;
        if revision.is_multiple_of(CHANGE_LOG_COMPACT_EVERY) {
            // The change log is an audit trail of recent revisions; objects
            // themselves are never dropped by this.
            let keep_from = revision.saturating_sub(CHANGE_LOG_KEEP);
            if let Err(e) = self
                .store
                .lock()
                .expect("store lock poisoned")
                .compact(keep_from)
            {
                tracing::warn!(error = %e, "change log compaction failed");
            }
        }
        self.compiler
            .lock()
            .expect("compiler lock poisoned")
            .on_commit(&state, &changes);
        drop(state);
        self.revisions.send_replace(revision);
        Ok(out)
    }

    /// What `host`'s agent needs after `since` (see `Compiler::update`).
    pub fn host_update(&self, host: &str, since: u64, snapshot: bool) -> Option<Update> {
        self.compiler
            .lock()
            .expect("compiler lock poisoned")
            .update(host, since, snapshot)
    }

    /// Checks the incrementally maintained configuration against a full
    /// compilation; returns (full recompiles, incremental commits).
    pub fn verify_compiled(&self) -> Result<(u64, u64), String> {
        let state = self.read();
        let c = self.compiler.lock().expect("compiler lock poisoned");
        c.verify(&state)?;
        Ok((c.compiles, c.incremental))
    }

    /// Compiled entries per host.
    pub fn compiled_sizes(&self) -> std::collections::BTreeMap<String, usize> {
        self.compiler
            .lock()
            .expect("compiler lock poisoned")
            .sizes()
    }
}
