//! The database: sessions with expiry, the plugins' session storage, contacts and transcripts.
//!
//! SQLite (bundled through `rusqlite`: nothing to install) in the data directory, WAL mode, migrations applied
//! at start. The SQL is portable (no SQLite-only syntax), so a PostgreSQL backend for several replicas can
//! implement the same methods without touching the pipeline.
//!
//! Calls are short and synchronous behind one connection: SQLite serialises writers anyway, and a query
//! takes microseconds, far less than a hop to a blocking thread.

mod journal;
mod sqlite;

pub use journal::{
    AppendError, DeadLetter, InboxEntry, Journal, NewEvent, Sink, JOURNAL_USER_TABLES,
};
pub use sqlite::{Db, DbSessionStorage, USER_TABLES};

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why the database could not be used. Never carries user data.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("database error: {0}")]
    Sql(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sql(e.to_string())
    }
}

/// Starts a thread that copies a WAL-mode database's log into the database file every `every`, for as
/// long as `alive` says so. Checkpoints fsync the database file; done here, no writer (and no turn waiting
/// for a writer's lock) ever waits for one. The connections must have `wal_autocheckpoint = 0`.
pub(crate) fn spawn_checkpointer(
    name: &str,
    path: PathBuf,
    every: Duration,
    alive: impl Fn() -> bool + Send + 'static,
) -> std::io::Result<()> {
    let conn = rusqlite::Connection::open(&path).map_err(std::io::Error::other)?;
    let _ = conn.busy_timeout(Duration::from_secs(5));
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            while alive() {
                std::thread::sleep(every);
                // PASSIVE: never blocks a writer; what it cannot copy now is copied next time.
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(path = %path.display(), error = %e, "checkpoint failed");
                }
            }
        })
        .map(|_| ())
}

/// Time as the store sees it: the system clock in production, a hand-moved one in tests (expiry is tested
/// without sleeping).
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to.
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start_ms: i64) -> ManualClock {
        ManualClock(AtomicI64::new(start_ms))
    }

    pub fn advance_minutes(&self, minutes: i64) {
        self.0.fetch_add(minutes * 60_000, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// How long sessions live: `idle_ms` of inactivity (0 = no idle limit) and at most `max_ms` in all.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    pub idle_ms: i64,
    pub max_ms: i64,
}

/// One turn as kept in the transcript.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TranscriptTurn {
    /// Unique per accepted event: storing the same turn twice keeps one row.
    pub turn_id: String,
    pub endpoint_id: String,
    pub user_id: String,
    pub contact_id: Option<String>,
    pub session_id: String,
    pub at_ms: i64,
    /// The flow input after the input hook.
    pub input: serde_json::Value,
    pub outputs: serde_json::Value,
    /// The Send API messages with their message ids.
    pub sent: serde_json::Value,
    /// completed, flow_failed, dropped, replied.
    pub outcome: String,
}
