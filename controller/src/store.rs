//! Durable store: embedded SQLite (WAL, `synchronous=FULL`), one row per
//! object (`kind`, `id`, JSON body) plus a change log of (revision, kind,
//! id). A commit is one SQLite transaction: every change of a request lands
//! together under one new global revision, or none does. The API answers 2xx
//! only after `commit` returned, so every 2xx survives a SIGKILL.
//!
//! This module owns transactions; nothing else talks to SQLite. It knows
//! nothing of validation: `state` decides what to commit.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};
use thiserror::Error;

use crate::model::{Change, Object};

/// Schema migrations, applied in order; `PRAGMA user_version` is the number
/// applied. Never edit a released entry: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: objects, change log, metadata.
    "CREATE TABLE objects (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        body TEXT NOT NULL,
        revision INTEGER NOT NULL,
        PRIMARY KEY (kind, id)
    ) WITHOUT ROWID;
    CREATE TABLE changes (
        revision INTEGER NOT NULL,
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        deleted INTEGER NOT NULL
    );
    CREATE INDEX changes_by_revision ON changes (revision);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    INSERT INTO meta (key, value) VALUES ('revision', '0');",
];

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {path} has schema version {found}, newer than this controller knows ({known}); refusing to touch it")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: usize,
    },
    #[error("database {path}: object {kind}/{id} is not valid JSON for its kind: {source}")]
    Corrupt {
        path: PathBuf,
        kind: String,
        id: String,
        #[source]
        source: serde_json::Error,
    },
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// Everything in the store, as loaded at start-up.
pub struct Loaded {
    pub revision: u64,
    pub objects: Vec<Object>,
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `path`.
    /// `:memory:` gives a throw-away store (unit tests).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        // FULL: a commit is on disk (WAL fsynced) before it returns.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        if version as usize > MIGRATIONS.len() {
            return Err(StoreError::TooNew {
                path: path.to_owned(),
                found: version,
                known: MIGRATIONS.len(),
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction().map_err(err)?;
            tx.execute_batch(sql).map_err(err)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(err)?;
            tx.commit().map_err(err)?;
            tracing::info!(db = %path.display(), version = i + 1, "schema migrated");
        }
        Ok(Store {
            conn,
            path: path.to_owned(),
        })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Reads every object and the current revision.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let revision = self.revision()?;
        let mut stmt = self
            .conn
            .prepare("SELECT kind, id, body FROM objects")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(self.err())?;
        let mut objects = Vec::new();
        for row in rows {
            let (kind, id, body) = row.map_err(self.err())?;
            let obj: Object =
                serde_json::from_str(&body).map_err(|source| StoreError::Corrupt {
                    path: self.path.clone(),
                    kind: kind.clone(),
                    id: id.clone(),
                    source,
                })?;
            objects.push(obj);
        }
        Ok(Loaded { revision, objects })
    }

    pub fn revision(&self) -> Result<u64, StoreError> {
        let v: String = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'revision'", [], |r| {
                r.get(0)
            })
            .map_err(self.err())?;
        Ok(v.parse().unwrap_or(0))
    }

    /// Commits `changes` atomically as `revision` (which must be the current
    /// revision + 1). Returns once the transaction is durable.
    pub fn commit(&mut self, revision: u64, changes: &[Change]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut put = tx
                .prepare_cached("INSERT OR REPLACE INTO objects (kind, id, body, revision) VALUES (?1, ?2, ?3, ?4)")
                .map_err(err)?;
            let mut del = tx
                .prepare_cached("DELETE FROM objects WHERE kind = ?1 AND id = ?2")
                .map_err(err)?;
            let mut log = tx
                .prepare_cached(
                    "INSERT INTO changes (revision, kind, id, deleted) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(err)?;
            for c in changes {
                let (kind, id) = (c.kind().as_str(), c.id());
                match c {
                    Change::Put(o) => {
                        let body = serde_json::to_string(o).expect("objects serialize");
                        put.execute(params![kind, id, body, revision as i64])
                            .map_err(err)?;
                        log.execute(params![revision as i64, kind, id, 0])
                            .map_err(err)?;
                    }
                    Change::Delete(_, _) => {
                        del.execute(params![kind, id]).map_err(err)?;
                        log.execute(params![revision as i64, kind, id, 1])
                            .map_err(err)?;
                    }
                }
            }
            tx.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'revision'",
                params![revision.to_string()],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(())
    }

    /// Drops change-log rows at or below `revision` (the log is for watchers
    /// catching up; objects themselves are never dropped by this).
    pub fn compact(&mut self, revision: u64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "DELETE FROM changes WHERE revision <= ?1",
                params![revision as i64],
            )
            .map_err(self.err())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, Project, Quota};

    fn project(id: &str) -> Object {
        Object::Project(Project {
            id: id.into(),
            name: id.into(),
            description: String::new(),
            domain_id: "default".into(),
            enabled: true,
        })
    }

    #[test]
    fn commit_load_and_changes() {
        let dir = std::env::temp_dir().join(format!("strato-store-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("db.sqlite");
        {
            let mut s = Store::open(&path).expect("open");
            assert_eq!(s.revision().expect("rev"), 0);
            s.commit(
                1,
                &[
                    Change::Put(project("p1")),
                    Change::Put(Object::Quota(Quota::default_for("p1"))),
                ],
            )
            .expect("commit");
            s.commit(
                2,
                &[
                    Change::Put(project("p2")),
                    Change::Delete(Kind::Project, "p1".into()),
                ],
            )
            .expect("commit");
        }
        let s = Store::open(&path).expect("reopen");
        let l = s.load().expect("load");
        assert_eq!(l.revision, 2);
        let mut ids: Vec<String> = l.objects.iter().map(Object::id).collect();
        ids.sort();
        assert_eq!(ids, vec!["p1".to_string(), "p2".to_string()]); // quota p1 and project p2
                                                                   // The change log records both changes of revision 2.
        let logged: i64 = s
            .conn
            .query_row("SELECT COUNT(*) FROM changes WHERE revision = 2", [], |r| {
                r.get(0)
            })
            .expect("count");
        assert_eq!(logged, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn refuses_newer_schema() {
        let dir = std::env::temp_dir().join(format!("strato-store-new-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("db.sqlite");
        drop(Store::open(&path).expect("open"));
        let c = Connection::open(&path).expect("raw");
        c.pragma_update(None, "user_version", 99).expect("bump");
        drop(c);
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::TooNew { found: 99, .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
