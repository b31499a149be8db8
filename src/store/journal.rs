//! The journal: the inbox of accepted events, each turn's progress (the outbox), de-duplication keys and
//! dead letters, in `<data_dir>/journal.db`.
//!
//! Why a file of its own: every write here must be on disk before Ferry answers (a 200 to Meta, or the next
//! Send API call), so it runs with `synchronous = FULL`, while `ferry.db` (sessions, contacts, transcripts)
//! keeps the cheaper `NORMAL`. Two files also mean two writers that never wait on each other's lock.
//!
//! Group commit: one writer thread owns the connection. Callers queue operations and wait for a reply; the
//! writer takes everything queued, applies it in one transaction and commits once, so a burst of webhook
//! calls and turn steps shares one fsync. The queue is bounded: when it is full the caller is told so at
//! once (the webhook answers 503) instead of memory growing.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::{Clock, StoreError};

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS inbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        endpoint_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        event TEXT NOT NULL,
        received_ms BIGINT NOT NULL,
        progress TEXT -- unused since progress moved to its own table; kept so older files open
    );
    -- Append-only: a turn's latest record is its highest id. Appending (instead of updating the event's
    -- row) keeps each commit's writes on a few pages at the end of the file: updating rows in place
    -- rewrote pages all over the inbox and made the log about 15 times larger.
    CREATE TABLE IF NOT EXISTS progress (
        id INTEGER PRIMARY KEY,
        seq INTEGER NOT NULL,
        progress TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS progress_by_seq ON progress (seq, id);
    CREATE TABLE IF NOT EXISTS dedup (
        page_id TEXT NOT NULL,
        key TEXT NOT NULL,
        seen_ms BIGINT NOT NULL,
        PRIMARY KEY (page_id, key)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS dedup_by_age ON dedup (seen_ms);
    CREATE TABLE IF NOT EXISTS dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        endpoint_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        at_ms BIGINT NOT NULL,
        reason TEXT NOT NULL,
        error TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS dead_letters_by_user ON dead_letters (endpoint_id, user_id);";

/// Files written before the progress table kept progress in the inbox row: moved over at open.
const MOVE_OLD_PROGRESS: &str = "
    BEGIN;
    INSERT INTO progress (seq, progress) SELECT seq, progress FROM inbox WHERE progress IS NOT NULL;
    UPDATE inbox SET progress = NULL WHERE progress IS NOT NULL;
    COMMIT;";

/// Journal tables that hold user data (erasure and its test scan them).
pub const JOURNAL_USER_TABLES: &[&str] = &["inbox", "progress", "dead_letters", "dedup"];

/// Operations queued for the writer at most; beyond this, callers are refused at once.
const QUEUE_BOUND: usize = 16_384;
/// Operations applied in one transaction at most.
const MAX_BATCH: usize = 4_096;
/// How long a commit of turn records alone (no event waiting for its acknowledgement) waits for more.
const TURN_RECORDS_GATHER: std::time::Duration = std::time::Duration::from_millis(1);

/// An accepted event to store.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub endpoint_id: String,
    pub page_id: String,
    pub user_id: String,
    /// What makes this event the same as a redelivery of it (see `Event::dedup_key`).
    pub dedup_key: String,
    /// The messaging item as received.
    pub event: String,
}

/// An event in the inbox, waiting for (or in the middle of) its turn.
#[derive(Debug, Clone)]
pub struct InboxEntry {
    pub seq: i64,
    pub endpoint_id: String,
    pub user_id: String,
    pub event: String,
    pub received_ms: i64,
    /// The turn's recorded progress, when it started before a crash or restart.
    pub progress: Option<String>,
}

/// A message that will never be delivered, and why.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub endpoint_id: String,
    pub user_id: String,
    /// A stable label: `permanent_error`, `retries_exhausted`, `outside_window`, `unknown_endpoint`, ...
    pub reason: String,
    /// The error as Meta (or the transport) described it; never holds a token.
    pub error: String,
    /// The Send API message (or the stored event, for events that could not start a turn).
    pub message: String,
}

/// Why an append was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("the inbox is full ({0} events waiting); try again later")]
    Full(i64),
    #[error("the journal writer is overloaded; try again later")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Op {
    Append(Vec<NewEvent>, Reply<Vec<Option<i64>>>),
    Progress(i64, String, Reply<()>),
    DeadLetter(DeadLetter, Reply<()>),
    Complete(Vec<i64>),
    Sync(Reply<()>),
}

/// Called by the writer, in sequence order, with the events each commit added to the inbox.
pub type Sink = Box<dyn Fn(Vec<InboxEntry>) + Send + Sync>;

pub struct Journal {
    queue: SyncSender<Op>,
    reader: Mutex<Connection>,
    clock: Arc<dyn Clock>,
    /// Events in the inbox (accepted and not completed).
    waiting: Arc<AtomicI64>,
    max_waiting: i64,
    sink: Arc<OnceLock<Sink>>,
}

impl Journal {
    /// Opens (creating) `<data_dir>/journal.db` and starts its writer thread. `max_waiting` bounds the inbox.
    pub fn open(
        data_dir: &Path,
        clock: Arc<dyn Clock>,
        max_waiting: usize,
    ) -> Result<Journal, StoreError> {
        let path = data_dir.join("journal.db");
        let open_error = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(data_dir).map_err(|e| open_error(e.to_string()))?;
        let open = || -> rusqlite::Result<Connection> {
            let conn = Connection::open(&path)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            // FULL: a commit is on disk before the writer replies, so a 200 survives power loss too.
            conn.pragma_update(None, "synchronous", "FULL")?;
            Ok(conn)
        };
        let writer = open().map_err(|e| open_error(e.to_string()))?;
        writer
            .execute_batch(SCHEMA)
            .and_then(|_| writer.execute_batch(MOVE_OLD_PROGRESS))
            .map_err(|e| open_error(e.to_string()))?;
        // Checkpoints (copying the log into the database file, with its own fsync) run on a thread of
        // their own, so a commit never waits for one (but see `Writer::restart_log_if_too_long`).
        writer
            .pragma_update(None, "wal_autocheckpoint", 0)
            .and_then(|_| writer.pragma_update(None, "journal_size_limit", LOG_SIZE_AFTER_RESTART))
            .map_err(|e| open_error(e.to_string()))?;
        let reader = open().map_err(|e| open_error(e.to_string()))?;
        let waiting: i64 = reader
            .query_row("SELECT COUNT(*) FROM inbox", [], |r| r.get(0))
            .map_err(|e| open_error(e.to_string()))?;
        let waiting = Arc::new(AtomicI64::new(waiting));
        let sink: Arc<OnceLock<Sink>> = Arc::default();
        let alive = Arc::downgrade(&sink);
        super::spawn_checkpointer(
            "ferry-checkpoint",
            path.clone(),
            CHECKPOINT_EVERY,
            move || alive.strong_count() > 0,
        )
        .map_err(|e| open_error(format!("cannot start the journal checkpointer: {e}")))?;
        let (queue, ops) = sync_channel(QUEUE_BOUND);
        let state = Writer {
            conn: writer,
            clock: Arc::clone(&clock),
            waiting: Arc::clone(&waiting),
            sink: Arc::clone(&sink),
            unsaved_completions: Vec::new(),
            log_path: data_dir.join("journal.db-wal"),
            last_log_check: std::time::Instant::now(),
        };
        std::thread::Builder::new()
            .name("ferry-journal".into())
            .spawn(move || {
                // Every acknowledgement waits for this thread: it goes first when it can (see
                // `adjust_this_threads_priority`).
                crate::dispatch::adjust_this_threads_priority(-5);
                state.run(ops)
            })
            .map_err(|e| open_error(format!("cannot start the journal writer: {e}")))?;
        Ok(Journal {
            queue,
            reader: Mutex::new(reader),
            clock,
            waiting,
            max_waiting: max_waiting as i64,
            sink,
        })
    }

    /// Where committed events go (the dispatcher); set once, before the server accepts events.
    pub fn set_sink(&self, sink: Sink) {
        let _ = self.sink.set(sink);
    }

    /// Events accepted and not yet completed.
    pub fn waiting(&self) -> i64 {
        self.waiting.load(Ordering::Acquire)
    }

    /// Stores events durably, skipping redeliveries: one result per event, its sequence number, or `None`
    /// for a duplicate. The sink receives the new ones before this returns.
    pub async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Option<i64>>, AppendError> {
        // Room is reserved up front, so concurrent calls cannot overshoot the bound together; the writer
        // gives back what duplicates and failures did not use.
        let n = events.len() as i64;
        let before = self.waiting.fetch_add(n, Ordering::AcqRel);
        if before + n > self.max_waiting {
            self.waiting.fetch_sub(n, Ordering::AcqRel);
            return Err(AppendError::Full(before));
        }
        let (reply, answer) = oneshot::channel();
        if self.submit(Op::Append(events, reply)).is_err() {
            self.waiting.fetch_sub(n, Ordering::AcqRel);
            return Err(AppendError::Busy);
        }
        Ok(wait(answer).await?)
    }

    /// Records a turn's progress durably (the outputs of its flow, the messages sent so far).
    pub async fn save_progress(&self, seq: i64, progress: String) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit_patiently(Op::Progress(seq, progress, reply))
            .await?;
        wait(answer).await
    }

    /// Stores a dead letter durably.
    pub async fn dead_letter(&self, letter: DeadLetter) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit_patiently(Op::DeadLetter(letter, reply)).await?;
        wait(answer).await
    }

    /// Queues an operation of a turn in progress: when the queue is full (a burst of webhook calls), the
    /// turn waits for room rather than go on unrecorded.
    async fn submit_patiently(&self, mut op: Op) -> Result<(), StoreError> {
        loop {
            match self.queue.try_send(op) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(back)) => {
                    op = back;
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                Err(TrySendError::Disconnected(_)) => return Err(writer_gone()),
            }
        }
    }

    /// Removes finished turns from the inbox (queued: the next commit carries it; a crash before it only
    /// means the finished turn is found complete again at start).
    pub fn complete(&self, seqs: Vec<i64>) {
        if seqs.is_empty() {
            return;
        }
        if let Err(e) = self.queue.send(Op::Complete(seqs)) {
            tracing::error!(error = %e, "journal writer gone; finished turns stay in the inbox");
        }
    }

    /// Waits until everything queued so far is committed.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        // Blocking send: a sync must not be refused for a full queue.
        self.queue
            .send(Op::Sync(reply))
            .map_err(|_| writer_gone())?;
        wait(answer).await
    }

    fn submit(&self, op: Op) -> Result<(), StoreError> {
        self.queue.try_send(op).map_err(|e| match e {
            TrySendError::Full(_) => StoreError::Sql("the journal queue is full".into()),
            TrySendError::Disconnected(_) => writer_gone(),
        })
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Inbox entries after `after_seq`, oldest first, at most `limit`.
    pub fn waiting_after(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, endpoint_id, user_id, event, received_ms,
                    (SELECT progress FROM progress p WHERE p.seq = inbox.seq ORDER BY id DESC LIMIT 1)
             FROM inbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after_seq, limit as i64], |r| {
            Ok(InboxEntry {
                seq: r.get(0)?,
                endpoint_id: r.get(1)?,
                user_id: r.get(2)?,
                event: r.get(3)?,
                received_ms: r.get(4)?,
                progress: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Dead letters, newest first (all endpoints when `endpoint_id` is `None`).
    pub fn dead_letters(
        &self,
        endpoint_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Value>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT id, endpoint_id, user_id, at_ms, reason, error, message FROM dead_letters
             WHERE ?1 IS NULL OR endpoint_id = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![endpoint_id, limit as i64], |r| {
            let message: String = r.get(6)?;
            Ok(json!({
                "id": r.get::<_, i64>(0)?,
                "endpoint": r.get::<_, String>(1)?,
                "user_id": r.get::<_, String>(2)?,
                "at_ms": r.get::<_, i64>(3)?,
                "reason": r.get::<_, String>(4)?,
                "error": r.get::<_, String>(5)?,
                "message": serde_json::from_str::<Value>(&message).unwrap_or(Value::String(message)),
            }))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets de-duplication keys older than `keep_ms`.
    pub fn purge_keys(&self, keep_ms: i64) -> Result<usize, StoreError> {
        let cutoff = self.clock.now_ms() - keep_ms;
        Ok(self
            .reader()
            .execute("DELETE FROM dedup WHERE seen_ms < ?1", params![cutoff])?)
    }

    /// Deletes an endpoint's dead letters older than `days` (0 keeps them for ever, like transcripts).
    pub fn purge_dead_letters(&self, endpoint_id: &str, days: u64) -> Result<usize, StoreError> {
        if days == 0 {
            return Ok(0);
        }
        let cutoff = self.clock.now_ms() - days as i64 * 86_400_000;
        Ok(self.reader().execute(
            "DELETE FROM dead_letters WHERE endpoint_id = ?1 AND at_ms < ?2",
            params![endpoint_id, cutoff],
        )?)
    }

    /// Deletes a user's dead letters and the de-duplication keys that name them (erasure); returns the
    /// dead letters deleted. Waiting events are left: they are turns Meta was promised.
    pub fn erase_user(&self, endpoint_id: &str, user_id: &str) -> Result<usize, StoreError> {
        let conn = self.reader();
        let letters = conn.execute(
            "DELETE FROM dead_letters WHERE endpoint_id = ?1 AND user_id = ?2",
            params![endpoint_id, user_id],
        )?;
        // Keys of events without a message id are `kind:user:moment` (see `Event::dedup_key`).
        conn.execute(
            "DELETE FROM dedup WHERE key LIKE '%:' || ?1 || ':%' AND key NOT LIKE 'mid:%'",
            params![user_id],
        )?;
        Ok(letters)
    }

    /// Rows of `table` whose text contains `needle` (the erasure test's scan).
    pub fn rows_mentioning(&self, table: &str, needle: &str) -> Result<usize, StoreError> {
        let conn = self.reader();
        let columns: Vec<String> = conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let test = columns
            .iter()
            .map(|c| format!("CAST({c} AS TEXT) LIKE ?1"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let n: i64 = conn.query_row(
            &format!("SELECT COUNT(*) FROM {table} WHERE {test}"),
            params![format!("%{needle}%")],
            |r| r.get(0),
        )?;
        Ok(n as usize)
    }

    /// The stored progress of one inbox entry (tests and tools).
    pub fn progress_of(&self, seq: i64) -> Result<Option<String>, StoreError> {
        Ok(self
            .reader()
            .query_row(
                "SELECT progress FROM progress WHERE seq = ?1 ORDER BY id DESC LIMIT 1",
                params![seq],
                |r| r.get(0),
            )
            .optional()?)
    }
}

/// How often the log is copied into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// How often the writer looks at the log's size.
const LOG_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// A log longer than this is started over by the writer itself (see `Writer::restart_log_if_too_long`).
const MAX_LOG_BYTES: u64 = 1 << 30;
/// What a log is cut back to when it starts over.
const LOG_SIZE_AFTER_RESTART: i64 = 64 << 20;

async fn wait<T>(answer: oneshot::Receiver<Result<T, StoreError>>) -> Result<T, StoreError> {
    answer.await.map_err(|_| writer_gone())?
}

fn writer_gone() -> StoreError {
    StoreError::Sql("the journal writer stopped".into())
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    clock: Arc<dyn Clock>,
    waiting: Arc<AtomicI64>,
    sink: Arc<OnceLock<Sink>>,
    /// Completions whose commit failed: retried with the next batch, so no finished turn runs again.
    unsaved_completions: Vec<i64>,
    /// `journal.db-wal`, watched by [`Writer::restart_log_if_too_long`].
    log_path: std::path::PathBuf,
    last_log_check: std::time::Instant,
}

/// What one batch's commit produced, to hand out after it.
#[derive(Default)]
struct Committed {
    appended: Vec<InboxEntry>,
    completed: i64,
}

/// Waits up to [`TURN_RECORDS_GATHER`] for more operations to commit with turn records. Every commit costs a
/// flush to disk, and most of a commit's pages are the same few hot pages whatever it carries: when turns
/// are many, a commit per handful of records spent a third of a core on flushes, taken from the turns
/// themselves. An event to acknowledge ends the wait (Meta is waiting for the answer).
fn gather_turn_records(ops: &Receiver<Op>, batch: &mut Vec<Op>) {
    let deadline = std::time::Instant::now() + TURN_RECORDS_GATHER;
    while batch.len() < MAX_BATCH {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match ops.recv_timeout(left) {
            Ok(op) => {
                let append = matches!(op, Op::Append(..));
                batch.push(op);
                if append {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

impl Writer {
    fn run(mut self, ops: Receiver<Op>) {
        while let Ok(first) = ops.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match ops.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            // Also on an idle host, where a turn's record then waits up to 1 ms for nothing: measured, the
            // variants that skip the wait when idle (the last commit ended over 2 ms ago; a lone
            // operation) lost most of the gain under load, and 1 ms is nothing next to a Send API call.
            if !batch.iter().any(|op| matches!(op, Op::Append(..))) {
                gather_turn_records(&ops, &mut batch);
            }
            self.commit(batch);
            self.restart_log_if_too_long();
        }
    }

    /// Starts the log over when it grew past [`MAX_LOG_BYTES`] (checked every [`LOG_CHECK_EVERY`]).
    ///
    /// The checkpointer thread copies the log into the database file in the background, but the log only
    /// starts over when that copy catches up with the writer, which a steady stream of events at full speed
    /// can prevent for as long as it lasts. Restarting from here costs the writer a few milliseconds (the
    /// rest of the copy and an fsync), so it is kept for that case; measured, restarting every second cut
    /// acknowledgements by a sixth. After a restart SQLite truncates the log to `journal_size_limit`.
    fn restart_log_if_too_long(&mut self) {
        if self.last_log_check.elapsed() < LOG_CHECK_EVERY {
            return;
        }
        self.last_log_check = std::time::Instant::now();
        let long = std::fs::metadata(&self.log_path).is_ok_and(|m| m.len() > MAX_LOG_BYTES);
        if !long {
            return;
        }
        if let Err(e) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "journal checkpoint failed");
        }
    }

    fn commit(&mut self, batch: Vec<Op>) {
        let now = self.clock.now_ms();
        let mut appended: Vec<Vec<Option<i64>>> = Vec::new();
        let result = self.apply(&batch, now, &mut appended);
        // Room the appends reserved (see `Journal::append`).
        let reserved: i64 = batch
            .iter()
            .map(|op| match op {
                Op::Append(events, _) => events.len() as i64,
                _ => 0,
            })
            .sum();
        let completions: Vec<i64> = batch
            .iter()
            .filter_map(|op| match op {
                Op::Complete(seqs) => Some(seqs.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        match result {
            Ok(committed) => {
                self.waiting.fetch_add(
                    committed.appended.len() as i64 - reserved - committed.completed,
                    Ordering::AcqRel,
                );
                // The sink runs before any append is answered: the dispatcher has the events, in order,
                // before Meta hears 200 (and before a later batch can be fed).
                if !committed.appended.is_empty() {
                    if let Some(sink) = self.sink.get() {
                        sink(committed.appended);
                    }
                }
                let mut results = appended.into_iter();
                for op in batch {
                    match op {
                        Op::Append(_, reply) => {
                            let _ = reply.send(Ok(results.next().unwrap_or_default()));
                        }
                        Op::Progress(_, _, reply) | Op::DeadLetter(_, reply) | Op::Sync(reply) => {
                            let _ = reply.send(Ok(()));
                        }
                        Op::Complete(_) => {}
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, ops = batch.len(), "journal commit failed");
                self.waiting.fetch_sub(reserved, Ordering::AcqRel);
                self.unsaved_completions.extend(completions);
                for op in batch {
                    match op {
                        Op::Append(_, reply) => {
                            let _ = reply.send(Err(e.clone()));
                        }
                        Op::Progress(_, _, reply) | Op::DeadLetter(_, reply) | Op::Sync(reply) => {
                            let _ = reply.send(Err(e.clone()));
                        }
                        Op::Complete(_) => {}
                    }
                }
            }
        }
    }

    fn apply(
        &mut self,
        batch: &[Op],
        now: i64,
        appended: &mut Vec<Vec<Option<i64>>>,
    ) -> Result<Committed, StoreError> {
        let retry_completions = std::mem::take(&mut self.unsaved_completions);
        let result = self.apply_in_transaction(&retry_completions, batch, now, appended);
        if result.is_err() {
            // Nothing of the batch was stored: completions carried over must be tried again.
            self.unsaved_completions = retry_completions;
        }
        result
    }

    fn apply_in_transaction(
        &mut self,
        retry_completions: &[i64],
        batch: &[Op],
        now: i64,
        appended: &mut Vec<Vec<Option<i64>>>,
    ) -> Result<Committed, StoreError> {
        let tx = self.conn.transaction()?;
        let mut committed = Committed::default();
        for seq in retry_completions {
            committed.completed += complete_one(&tx, *seq)?;
        }
        for op in batch {
            match op {
                Op::Append(events, _) => {
                    let mut results = Vec::with_capacity(events.len());
                    for event in events {
                        results.push(append_one(&tx, event, now, &mut committed.appended)?);
                    }
                    appended.push(results);
                }
                Op::Progress(seq, progress, _) => {
                    tx.prepare_cached("INSERT INTO progress (seq, progress) VALUES (?1, ?2)")?
                        .execute(params![seq, progress])?;
                }
                Op::DeadLetter(letter, _) => {
                    tx.prepare_cached(
                        "INSERT INTO dead_letters (endpoint_id, user_id, at_ms, reason, error, message)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?
                    .execute(params![
                        letter.endpoint_id,
                        letter.user_id,
                        now,
                        letter.reason,
                        letter.error,
                        letter.message
                    ])?;
                }
                Op::Complete(seqs) => {
                    for seq in seqs {
                        committed.completed += complete_one(&tx, *seq)?;
                    }
                }
                Op::Sync(_) => {}
            }
        }
        tx.commit()?;
        Ok(committed)
    }
}

/// Removes a finished turn's event and progress records; returns 1 when the event was still there.
fn complete_one(tx: &rusqlite::Transaction<'_>, seq: i64) -> Result<i64, StoreError> {
    tx.prepare_cached("DELETE FROM progress WHERE seq = ?1")?
        .execute(params![seq])?;
    Ok(tx
        .prepare_cached("DELETE FROM inbox WHERE seq = ?1")?
        .execute(params![seq])? as i64)
}

/// Inserts one event unless its key was seen; returns its sequence number, `None` for a duplicate.
fn append_one(
    tx: &rusqlite::Transaction<'_>,
    event: &NewEvent,
    now: i64,
    appended: &mut Vec<InboxEntry>,
) -> Result<Option<i64>, StoreError> {
    let fresh = tx
        .prepare_cached(
            "INSERT INTO dedup (page_id, key, seen_ms) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        )?
        .execute(params![event.page_id, event.dedup_key, now])?;
    if fresh == 0 {
        return Ok(None);
    }
    tx.prepare_cached(
        "INSERT INTO inbox (endpoint_id, user_id, event, received_ms) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![event.endpoint_id, event.user_id, event.event, now])?;
    let seq = tx.last_insert_rowid();
    appended.push(InboxEntry {
        seq,
        endpoint_id: event.endpoint_id.clone(),
        user_id: event.user_id.clone(),
        event: event.event.clone(),
        received_ms: now,
        progress: None,
    });
    Ok(Some(seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ManualClock, SystemClock};

    fn event(key: &str, user: &str) -> NewEvent {
        NewEvent {
            endpoint_id: "ep".into(),
            page_id: "1".into(),
            user_id: user.into(),
            dedup_key: key.into(),
            event: format!("{{\"k\":\"{key}\"}}"),
        }
    }

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ferry-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[tokio::test]
    async fn appends_skip_seen_keys_feed_the_sink_in_order_and_survive_reopening() {
        let d = dir("append");
        let journal = Journal::open(&d, Arc::new(SystemClock), 100).unwrap();
        let fed: Arc<Mutex<Vec<i64>>> = Arc::default();
        let sink = Arc::clone(&fed);
        journal.set_sink(Box::new(move |entries| {
            sink.lock().unwrap().extend(entries.iter().map(|e| e.seq));
        }));
        let first = journal
            .append(vec![event("a", "u1"), event("a", "u1"), event("b", "u2")])
            .await
            .unwrap();
        assert!(first[0].is_some() && first[1].is_none() && first[2].is_some());
        let again = journal.append(vec![event("b", "u2")]).await.unwrap();
        assert_eq!(again, vec![None]);
        assert_eq!(journal.waiting(), 2);
        let seqs: Vec<i64> = first.iter().flatten().copied().collect();
        assert_eq!(*fed.lock().unwrap(), seqs);

        journal
            .save_progress(seqs[0], "{\"step\":1}".into())
            .await
            .unwrap();
        journal.complete(vec![seqs[1]]);
        journal.sync().await.unwrap();
        assert_eq!(journal.waiting(), 1);
        drop(journal);

        let reopened = Journal::open(&d, Arc::new(SystemClock), 100).unwrap();
        assert_eq!(reopened.waiting(), 1);
        let left = reopened.waiting_after(0, 10).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].seq, seqs[0]);
        assert_eq!(left[0].progress.as_deref(), Some("{\"step\":1}"));
        // The key of the completed event is still known: a redelivery runs nothing.
        assert_eq!(
            reopened.append(vec![event("b", "u2")]).await.unwrap(),
            vec![None]
        );
    }

    #[tokio::test]
    async fn the_latest_progress_record_wins_and_completion_removes_them_all() {
        let journal = Journal::open(&dir("progress"), Arc::new(SystemClock), 100).unwrap();
        let seqs = journal
            .append(vec![event("p1", "u1"), event("p2", "u2")])
            .await
            .unwrap();
        let (a, b) = (seqs[0].unwrap(), seqs[1].unwrap());
        for step in 1..=3 {
            journal
                .save_progress(a, format!("{{\"step\":{step}}}"))
                .await
                .unwrap();
        }
        journal
            .save_progress(b, "{\"step\":9}".into())
            .await
            .unwrap();
        assert_eq!(
            journal.progress_of(a).unwrap().as_deref(),
            Some("{\"step\":3}")
        );
        let waiting = journal.waiting_after(0, 10).unwrap();
        assert_eq!(waiting[0].progress.as_deref(), Some("{\"step\":3}"));
        assert_eq!(waiting[1].progress.as_deref(), Some("{\"step\":9}"));
        journal.complete(vec![a]);
        journal.sync().await.unwrap();
        assert_eq!(journal.progress_of(a).unwrap(), None);
        assert_eq!(journal.rows_mentioning("progress", "step").unwrap(), 1);
    }

    #[tokio::test]
    async fn progress_kept_in_the_inbox_row_by_older_versions_is_moved_at_open() {
        let d = dir("old-progress");
        std::fs::create_dir_all(&d).unwrap();
        {
            // The layout before the progress table: progress in the event's own row.
            let old = Connection::open(d.join("journal.db")).unwrap();
            old.execute_batch(
                "CREATE TABLE inbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, endpoint_id TEXT NOT NULL,
                     user_id TEXT NOT NULL, event TEXT NOT NULL, received_ms BIGINT NOT NULL, progress TEXT);
                 INSERT INTO inbox (endpoint_id, user_id, event, received_ms, progress)
                     VALUES ('ep', 'u1', '{}', 1, '{\"step\":7}'), ('ep', 'u2', '{}', 2, NULL);",
            )
            .unwrap();
        }
        let journal = Journal::open(&d, Arc::new(SystemClock), 100).unwrap();
        let waiting = journal.waiting_after(0, 10).unwrap();
        assert_eq!(waiting.len(), 2);
        assert_eq!(waiting[0].progress.as_deref(), Some("{\"step\":7}"));
        assert_eq!(waiting[1].progress, None);
        drop(journal);
        // Moved, not copied: opening again does not duplicate it.
        let journal = Journal::open(&d, Arc::new(SystemClock), 100).unwrap();
        assert_eq!(journal.rows_mentioning("progress", "step").unwrap(), 1);
        assert_eq!(journal.rows_mentioning("inbox", "step").unwrap(), 0);
    }

    #[tokio::test]
    async fn a_full_inbox_refuses_the_whole_batch() {
        let journal = Journal::open(&dir("full"), Arc::new(SystemClock), 2).unwrap();
        journal.append(vec![event("a", "u1")]).await.unwrap();
        let refused = journal
            .append(vec![event("b", "u1"), event("c", "u1")])
            .await;
        assert!(matches!(refused, Err(AppendError::Full(1))), "{refused:?}");
        // Nothing of the refused batch was stored: its keys are still new.
        assert_eq!(
            journal.append(vec![event("b", "u1")]).await.unwrap().len(),
            1
        );
        assert_eq!(journal.waiting(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_never_overshoot_the_bound_and_duplicates_give_room_back() {
        let journal = Arc::new(Journal::open(&dir("race"), Arc::new(SystemClock), 10).unwrap());
        let calls = (0..40).map(|i| {
            let journal = Arc::clone(&journal);
            tokio::spawn(async move { journal.append(vec![event(&format!("k{i}"), "u")]).await })
        });
        let results = futures::future::join_all(calls).await;
        let stored = results
            .iter()
            .filter(|r| matches!(r, Ok(Ok(v)) if v[0].is_some()))
            .count();
        assert_eq!(stored, 10);
        assert_eq!(journal.waiting(), 10);
        // While full, even a redelivery of a stored event is refused (Meta retries it), and counts nothing.
        let stored_key = results
            .iter()
            .position(|r| matches!(r, Ok(Ok(v)) if v[0].is_some()))
            .map(|i| format!("k{i}"))
            .unwrap();
        assert!(journal.append(vec![event(&stored_key, "u")]).await.is_err());
        assert_eq!(journal.waiting(), 10);
    }

    #[tokio::test]
    async fn dead_letters_are_listed_erased_and_purged_with_old_keys() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let journal = Journal::open(&dir("dead"), clock.clone(), 100).unwrap();
        for (user, reason) in [("u1", "permanent_error"), ("u2", "outside_window")] {
            let letter = DeadLetter {
                endpoint_id: "ep".into(),
                user_id: user.into(),
                reason: reason.into(),
                error: "Graph API error".into(),
                message: "{\"message\":{\"text\":\"hi\"}}".into(),
            };
            journal.dead_letter(letter).await.unwrap();
        }
        journal.append(vec![event("k", "u1")]).await.unwrap();
        let all = journal.dead_letters(None, 10).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0]["reason"], "outside_window");
        assert_eq!(all[1]["message"]["message"]["text"], "hi");
        assert_eq!(journal.dead_letters(Some("other"), 10).unwrap().len(), 0);
        assert_eq!(journal.erase_user("ep", "u1").unwrap(), 1);
        assert_eq!(journal.rows_mentioning("dead_letters", "u1").unwrap(), 0);

        // 49 hours later, with keys kept 48 hours and letters 30 days: the key goes, the letter stays.
        clock.advance_minutes(49 * 60);
        assert_eq!(journal.purge_keys(48 * 3_600_000).unwrap(), 1);
        assert_eq!(journal.purge_dead_letters("ep", 30).unwrap(), 0);
        assert_eq!(journal.dead_letters(None, 10).unwrap().len(), 1);
        // 31 days: gone, unless the endpoint keeps everything (0 days).
        clock.advance_minutes(31 * 24 * 60);
        assert_eq!(journal.purge_dead_letters("ep", 0).unwrap(), 0);
        assert_eq!(journal.purge_dead_letters("ep", 30).unwrap(), 1);
        let seq = journal.append(vec![event("k", "u1")]).await.unwrap();
        assert!(
            seq[0].is_some(),
            "a key older than the keep time is forgotten"
        );
    }
}
