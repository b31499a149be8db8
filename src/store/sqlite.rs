//! The SQLite implementation of the store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Map, Value};

use super::{Clock, SessionPolicy, StoreError, TranscriptTurn};
use crate::sessions::new_session_id;
use crate::transformer::storage::{check_session_value, SessionKey, SessionStorage};

/// Schema versions, applied in order; each runs once (recorded in `schema_version`).
const MIGRATIONS: &[&str] = &[
    // 1: sessions, plugin session storage, contacts, transcripts.
    "CREATE TABLE sessions (
        endpoint_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        started_ms BIGINT NOT NULL,
        last_seen_ms BIGINT NOT NULL,
        PRIMARY KEY (endpoint_id, user_id)
    );
    CREATE TABLE session_values (
        endpoint_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_ms BIGINT NOT NULL,
        PRIMARY KEY (endpoint_id, user_id, session_id)
    );
    CREATE TABLE contacts (
        contact_id TEXT PRIMARY KEY,
        business TEXT NOT NULL,
        first_name TEXT,
        last_name TEXT,
        profile_pic TEXT,
        profile_pic_ms BIGINT,
        locale TEXT,
        timezone DOUBLE PRECISION,
        gender TEXT,
        data TEXT NOT NULL,
        first_seen_ms BIGINT NOT NULL,
        last_seen_ms BIGINT NOT NULL
    );
    CREATE TABLE contact_psids (
        page_id TEXT NOT NULL,
        psid TEXT NOT NULL,
        endpoint_id TEXT NOT NULL,
        contact_id TEXT NOT NULL,
        PRIMARY KEY (page_id, psid)
    );
    CREATE INDEX contact_psids_by_contact ON contact_psids (contact_id);
    CREATE TABLE transcripts (
        turn_id TEXT PRIMARY KEY,
        endpoint_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        contact_id TEXT,
        session_id TEXT NOT NULL,
        at_ms BIGINT NOT NULL,
        input TEXT NOT NULL,
        outputs TEXT NOT NULL,
        sent TEXT NOT NULL,
        outcome TEXT NOT NULL
    );
    CREATE INDEX transcripts_by_contact ON transcripts (contact_id, at_ms);
    CREATE INDEX transcripts_by_user ON transcripts (endpoint_id, user_id, at_ms);",
];

/// Every table that holds user data: erasure and its test scan them all.
pub const USER_TABLES: &[&str] = &[
    "sessions",
    "session_values",
    "contacts",
    "contact_psids",
    "transcripts",
];

pub struct Db {
    conn: Mutex<Connection>,
    /// `ferry.db-wal`: the transcript writer fsyncs it itself, outside the connection's lock.
    wal_path: PathBuf,
    clock: Arc<dyn Clock>,
    /// Live sessions, so that a turn does not write `last_seen` every time (see [`LAST_SEEN_WRITE_MS`]).
    sessions: Mutex<HashMap<(String, String), CachedSession>>,
    /// Finished turns waiting for the writer (see [`Db::finish_turn`]).
    pending_turns: Mutex<Vec<FinishedTurn>>,
    /// Plugin session storage values written and not yet committed (see [`Db::set_session_value`]).
    pending_values: Mutex<HashMap<SessionKey, String>>,
    /// Told which inbox entries' turns are stored, after each commit (the journal then removes them).
    on_stored: OnceLock<Box<dyn Fn(Vec<i64>) + Send + Sync>>,
}

/// A turn that ended: its transcript (unless conversations are not collected) and its inbox entry.
struct FinishedTurn {
    transcript: Option<TranscriptTurn>,
    seq: Option<i64>,
}

#[derive(Clone)]
struct CachedSession {
    id: String,
    started_ms: i64,
    last_seen_ms: i64,
    /// The `last_seen_ms` the database holds.
    stored_last_seen_ms: i64,
}

/// `last_seen` is written at most this often per session: expiry is configured in minutes, so after a
/// crash a session may look up to this much older than it was, never younger.
const LAST_SEEN_WRITE_MS: i64 = 30_000;

/// How often the transcript writer commits queued turns.
const TRANSCRIPT_FLUSH: std::time::Duration = std::time::Duration::from_millis(50);

impl Db {
    /// Opens (creating) `<data_dir>/ferry.db` and applies the migrations.
    pub fn open(data_dir: &Path, clock: Arc<dyn Clock>) -> Result<Db, StoreError> {
        let path = data_dir.join("ferry.db");
        let open_error = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(data_dir).map_err(|e| open_error(e.to_string()))?;
        let conn = Connection::open(&path).map_err(|e| open_error(e.to_string()))?;
        conn.busy_timeout(std::time::Duration::from_secs(2))
            .map_err(|e| open_error(e.to_string()))?;
        // WAL: readers never block the writer; NORMAL sync is durable across process crashes.
        conn.pragma_update(None, "journal_mode", "WAL")
            .and_then(|_| conn.pragma_update(None, "synchronous", "NORMAL"))
            // Checkpoints run on a thread of their own (`spawn_writer`), never under `conn`'s lock.
            .and_then(|_| conn.pragma_update(None, "wal_autocheckpoint", 0))
            .map_err(|e| open_error(e.to_string()))?;
        migrate(&conn).map_err(|e| open_error(e.to_string()))?;
        Ok(Db {
            conn: Mutex::new(conn),
            wal_path: data_dir.join("ferry.db-wal"),
            clock,
            sessions: Mutex::default(),
            pending_turns: Mutex::default(),
            pending_values: Mutex::default(),
            on_stored: OnceLock::new(),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent: its own transactions guard that.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The user's current session, starting a new one when there is none or it expired. An expired
    /// session's plugin storage goes with it.
    pub fn session_for(
        &self,
        endpoint_id: &str,
        user_id: &str,
        policy: SessionPolicy,
    ) -> Result<String, StoreError> {
        let now = self.now_ms();
        let key = (endpoint_id.to_string(), user_id.to_string());
        let live = |s: &CachedSession| {
            let idle = policy.idle_ms > 0 && now - s.last_seen_ms > policy.idle_ms;
            !idle && now - s.started_ms <= policy.max_ms
        };
        let cached = {
            let mut cache = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            match cache.get_mut(&key) {
                Some(s) if live(s) => {
                    s.last_seen_ms = now;
                    let write = now - s.stored_last_seen_ms >= LAST_SEEN_WRITE_MS;
                    if write {
                        s.stored_last_seen_ms = now;
                    }
                    Some((s.id.clone(), write))
                }
                _ => None,
            }
        };
        if let Some((id, write)) = cached {
            if write {
                exec(
                    &self.conn(),
                    "UPDATE sessions SET last_seen_ms = ?3 WHERE endpoint_id = ?1 AND user_id = ?2",
                    params![endpoint_id, user_id, now],
                )?;
            }
            return Ok(id);
        }
        let (id, started_ms) = self.session_from_db(endpoint_id, user_id, policy, now)?;
        let cached = CachedSession {
            id: id.clone(),
            started_ms,
            last_seen_ms: now,
            stored_last_seen_ms: now,
        };
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, cached);
        Ok(id)
    }

    /// Forgets cached sessions (after erasure or purges, which delete rows behind the cache's back).
    fn forget_cached_sessions(&self) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The session as the database has it (creating or renewing it), with its start time.
    fn session_from_db(
        &self,
        endpoint_id: &str,
        user_id: &str,
        policy: SessionPolicy,
        now: i64,
    ) -> Result<(String, i64), StoreError> {
        let mut expired = None;
        let session = self.session_row(endpoint_id, user_id, policy, now, &mut expired);
        if let Some(session_id) = expired {
            // An expired session's storage goes with it, including writes not committed yet.
            self.pending_values().remove(&SessionKey {
                endpoint_id: endpoint_id.to_string(),
                user_id: user_id.to_string(),
                session_id,
            });
        }
        session
    }

    /// [`Db::session_from_db`] under the connection's lock; `expired` names a session it ended.
    fn session_row(
        &self,
        endpoint_id: &str,
        user_id: &str,
        policy: SessionPolicy,
        now: i64,
        expired: &mut Option<String>,
    ) -> Result<(String, i64), StoreError> {
        let conn = self.conn();
        let current: Option<(String, i64, i64)> = conn
            .query_row(
                "SELECT session_id, started_ms, last_seen_ms FROM sessions WHERE endpoint_id = ?1 AND user_id = ?2",
                params![endpoint_id, user_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        if let Some((id, started, last_seen)) = &current {
            let idle = policy.idle_ms > 0 && now - last_seen > policy.idle_ms;
            let too_old = now - started > policy.max_ms;
            if !idle && !too_old {
                exec(
                    &conn,
                    "UPDATE sessions SET last_seen_ms = ?3 WHERE endpoint_id = ?1 AND user_id = ?2",
                    params![endpoint_id, user_id, now],
                )?;
                return Ok((id.clone(), *started));
            }
            exec(
                &conn,
                "DELETE FROM session_values WHERE endpoint_id = ?1 AND user_id = ?2 AND session_id = ?3",
                params![endpoint_id, user_id, id],
            )?;
            // Not `pending_values` here: `flush` takes that lock before `conn`'s.
            *expired = Some(id.clone());
        }
        let id = new_session_id();
        exec(
            &conn,
            "INSERT INTO sessions (endpoint_id, user_id, session_id, started_ms, last_seen_ms) VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT (endpoint_id, user_id) DO UPDATE SET session_id = ?3, started_ms = ?4, last_seen_ms = ?4",
            params![endpoint_id, user_id, id, now],
        )?;
        Ok((id, now))
    }

    /// Copies a fetched profile into the user's contact (created on first sight) and returns its id.
    pub fn update_contact(
        &self,
        business: &str,
        endpoint_id: &str,
        page_id: &str,
        psid: &str,
        profile: &Value,
    ) -> Result<String, StoreError> {
        let now = self.now_ms();
        let conn = self.conn();
        let existing: Option<String> = conn
            .query_row(
                "SELECT contact_id FROM contact_psids WHERE page_id = ?1 AND psid = ?2",
                params![page_id, psid],
                |r| r.get(0),
            )
            .optional()?;
        let contact_id = match existing {
            Some(id) => id,
            None => {
                let id = new_session_id();
                exec(
                    &conn,
                    "INSERT INTO contacts (contact_id, business, data, first_seen_ms, last_seen_ms) VALUES (?1, ?2, '{}', ?3, ?3)",
                    params![id, business, now],
                )?;
                exec(
                    &conn,
                    "INSERT INTO contact_psids (page_id, psid, endpoint_id, contact_id) VALUES (?1, ?2, ?3, ?4)",
                    params![page_id, psid, endpoint_id, id],
                )?;
                id
            }
        };
        let text = |k: &str| profile.get(k).and_then(Value::as_str).map(str::to_string);
        exec(
            &conn,
            "UPDATE contacts SET
                first_name = COALESCE(?2, first_name), last_name = COALESCE(?3, last_name),
                profile_pic = COALESCE(?4, profile_pic),
                profile_pic_ms = CASE WHEN ?4 IS NULL THEN profile_pic_ms ELSE ?9 END,
                locale = COALESCE(?5, locale), timezone = COALESCE(?6, timezone), gender = COALESCE(?7, gender),
                last_seen_ms = ?9, business = ?8
             WHERE contact_id = ?1",
            params![
                contact_id,
                text("first_name"),
                text("last_name"),
                text("profile_pic"),
                text("locale"),
                profile.get("timezone").and_then(Value::as_f64),
                text("gender"),
                business,
                now
            ],
        )?;
        Ok(contact_id)
    }

    /// "Merge Contact Profiles": `others` are the same person's PSIDs on other Pages, as (page id, psid,
    /// endpoint id). Each is mapped to `contact_id`; a contact already holding one of them is folded into
    /// `contact_id` (most recent value wins per field, first seen is the earliest). Idempotent, and the same
    /// person reached through several Pages in any order ends as one contact.
    pub fn merge_contacts(
        &self,
        contact_id: &str,
        others: &[(String, String, String)],
    ) -> Result<usize, StoreError> {
        self.flush()?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut merged = 0;
        for (page_id, psid, endpoint_id) in others {
            let holder: Option<String> = tx
                .query_row(
                    "SELECT contact_id FROM contact_psids WHERE page_id = ?1 AND psid = ?2",
                    params![page_id, psid],
                    |r| r.get(0),
                )
                .optional()?;
            match holder {
                Some(other) if other == contact_id => {}
                Some(other) => {
                    fold_contact(&tx, contact_id, &other)?;
                    merged += 1;
                }
                None => {
                    tx.execute(
                        "INSERT INTO contact_psids (page_id, psid, endpoint_id, contact_id) VALUES (?1, ?2, ?3, ?4)",
                        params![page_id, psid, endpoint_id, contact_id],
                    )?;
                }
            }
        }
        tx.commit()?;
        Ok(merged)
    }

    /// Merges `patch` (a JSON object) into the contact's free `data` object (`data.contact` in a flow output).
    pub fn merge_contact_data(
        &self,
        contact_id: &str,
        patch: &Map<String, Value>,
    ) -> Result<(), StoreError> {
        let conn = self.conn();
        let current: Option<String> = conn
            .query_row(
                "SELECT data FROM contacts WHERE contact_id = ?1",
                params![contact_id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(current) = current else {
            return Ok(());
        };
        let mut data: Map<String, Value> = serde_json::from_str(&current).unwrap_or_default();
        for (k, v) in patch {
            data.insert(k.clone(), v.clone());
        }
        conn.execute(
            "UPDATE contacts SET data = ?2 WHERE contact_id = ?1",
            params![contact_id, Value::Object(data).to_string()],
        )?;
        Ok(())
    }

    /// The contact id of a user of an endpoint, if known.
    pub fn contact_of(&self, page_id: &str, psid: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT contact_id FROM contact_psids WHERE page_id = ?1 AND psid = ?2",
                params![page_id, psid],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// A contact as JSON: the profile fields, its PSIDs per Page, `data`, first and last seen.
    pub fn contact(&self, contact_id: &str) -> Result<Option<Value>, StoreError> {
        let conn = self.conn();
        let row = conn
            .query_row(
                "SELECT business, first_name, last_name, profile_pic, locale, timezone, gender, data, first_seen_ms, last_seen_ms
                 FROM contacts WHERE contact_id = ?1",
                params![contact_id],
                |r| {
                    Ok(json!({
                        "contact_id": contact_id,
                        "business": r.get::<_, String>(0)?,
                        "first_name": r.get::<_, Option<String>>(1)?,
                        "last_name": r.get::<_, Option<String>>(2)?,
                        "profile_pic": r.get::<_, Option<String>>(3)?,
                        "locale": r.get::<_, Option<String>>(4)?,
                        "timezone": r.get::<_, Option<f64>>(5)?,
                        "gender": r.get::<_, Option<String>>(6)?,
                        "data": serde_json::from_str::<Value>(&r.get::<_, String>(7)?).unwrap_or(Value::Null),
                        "first_seen_ms": r.get::<_, i64>(8)?,
                        "last_seen_ms": r.get::<_, i64>(9)?,
                    }))
                },
            )
            .optional()?;
        let Some(mut contact) = row else {
            return Ok(None);
        };
        let mut stmt = conn.prepare(
            "SELECT page_id, psid, endpoint_id FROM contact_psids WHERE contact_id = ?1",
        )?;
        let psids: Vec<Value> = stmt
            .query_map(params![contact_id], |r| {
                Ok(json!({"page_id": r.get::<_, String>(0)?, "psid": r.get::<_, String>(1)?, "endpoint": r.get::<_, String>(2)?}))
            })?
            .collect::<Result<_, _>>()?;
        contact["psids"] = Value::Array(psids);
        Ok(Some(contact))
    }

    /// Queues a finished turn for the writer, which commits queued rows together every
    /// [`TRANSCRIPT_FLUSH`]: one commit per batch instead of per turn (commits dominated a turn's cost).
    /// Only after that commit is the inbox entry `seq` released (see [`Db::on_stored`]), so a crash never
    /// loses a transcript whose event the journal already forgot. Readers flush first, so they always see
    /// every recorded turn.
    pub fn finish_turn(&self, transcript: Option<TranscriptTurn>, seq: Option<i64>) {
        let mut pending = self.pending_turns.lock().unwrap_or_else(|e| e.into_inner());
        pending.push(FinishedTurn { transcript, seq });
    }

    /// Where the sequence numbers of stored turns go (the journal's `complete`); set once.
    pub fn on_stored(&self, hook: Box<dyn Fn(Vec<i64>) + Send + Sync>) {
        let _ = self.on_stored.set(hook);
    }

    /// Writes every queued transcript row and session storage value now, then releases the turns' inbox
    /// entries.
    pub fn flush(&self) -> Result<(), StoreError> {
        let mut pending = self.pending_turns.lock().unwrap_or_else(|e| e.into_inner());
        let mut pending_values = self.pending_values();
        if pending.is_empty() && pending_values.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut *pending);
        let values = std::mem::take(&mut *pending_values);
        // The connection is taken before the queues are released: a reader that flushes after us, or
        // finds a value no longer queued, waits for this batch to be committed instead of reading around it.
        let mut conn = self.conn();
        drop(pending);
        drop(pending_values);
        let transcripts: Vec<&TranscriptTurn> =
            batch.iter().filter_map(|t| t.transcript.as_ref()).collect();
        let stored = insert_turns(&mut conn, &transcripts, &values, self.now_ms());
        drop(conn);
        // The journal forgets these turns' events right after this, so their transcripts must survive a
        // power cut too: the log is fsynced here, outside the lock, so turns reading or writing sessions
        // meanwhile never wait for the disk. (A checkpoint in between fsyncs it on its own first.)
        let stored = stored.and_then(|_| self.sync_log());
        if let Err(e) = stored {
            // Put them back: the next flush retries (rows already in are ignored), and the inbox keeps
            // their events meanwhile.
            let mut pending = self.pending_turns.lock().unwrap_or_else(|e| e.into_inner());
            let later = std::mem::replace(&mut *pending, batch);
            pending.extend(later);
            drop(pending);
            let mut pending_values = self.pending_values();
            for (key, value) in values {
                // A value written since is newer: it wins.
                pending_values.entry(key).or_insert(value);
            }
            return Err(e);
        }
        let seqs: Vec<i64> = batch.iter().filter_map(|t| t.seq).collect();
        if let Some(hook) = self.on_stored.get() {
            hook(seqs);
        }
        Ok(())
    }

    fn pending_values(&self) -> MutexGuard<'_, HashMap<SessionKey, String>> {
        self.pending_values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// A plugin's session storage value: the latest written, committed or not.
    pub fn session_value(&self, key: &SessionKey) -> Result<Option<String>, StoreError> {
        if let Some(value) = self.pending_values().get(key) {
            return Ok(Some(value.clone()));
        }
        Ok(query_row(
            &self.conn(),
            "SELECT value FROM session_values WHERE endpoint_id = ?1 AND user_id = ?2 AND session_id = ?3",
            params![key.endpoint_id, key.user_id, key.session_id],
            |r| r.get(0),
        )
        .optional()?)
    }

    /// Stores a plugin's session storage value. It is committed with the next batch of transcripts, before
    /// the inbox lets go of the events of the turns that wrote it: a write per hook call on the turn's own
    /// thread cost more than the rest of the plugin's turn. Reads see it at once.
    pub fn set_session_value(&self, key: &SessionKey, value: String) {
        self.pending_values().insert(key.clone(), value);
    }

    /// Makes every commit so far durable. `synchronous = NORMAL` commits reach the log file without an
    /// fsync; one fsync of the log file makes them survive a power cut, as `FULL` would have.
    fn sync_log(&self) -> Result<(), StoreError> {
        let sync = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.wal_path)
            .and_then(|wal| wal.sync_data());
        match sync {
            Ok(()) => Ok(()),
            // No log file: nothing is waiting in it (a full checkpoint fsynced the database and reset it).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Sql(format!(
                "cannot fsync the database log: {e}"
            ))),
        }
    }

    /// Starts the transcript writer and the checkpointer; they stop when the database is dropped.
    pub fn spawn_writer(db: &Arc<Db>) {
        let alive = Arc::downgrade(db);
        let path = db.wal_path.with_file_name("ferry.db");
        let every = std::time::Duration::from_secs(1);
        if let Err(e) = super::spawn_checkpointer("ferry-db-checkpoint", path, every, move || {
            alive.strong_count() > 0
        }) {
            tracing::error!(error = %e, "cannot start the database checkpointer");
        }
        let weak = Arc::downgrade(db);
        let spawned = std::thread::Builder::new()
            .name("ferry-transcripts".into())
            .spawn(move || {
                // Background work: acknowledgements (the journal writer) go first.
                crate::dispatch::adjust_this_threads_priority(5);
                loop {
                    std::thread::sleep(TRANSCRIPT_FLUSH);
                    let Some(db) = weak.upgrade() else { return };
                    if let Err(e) = db.flush() {
                        tracing::warn!(error = %e, "transcripts not stored");
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the transcript writer; transcripts are written by readers only");
        }
    }

    /// A contact's transcript, oldest turn first.
    pub fn transcript(&self, contact_id: &str) -> Result<Vec<Value>, StoreError> {
        self.flush()?;
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT endpoint_id, session_id, at_ms, input, outputs, sent, outcome FROM transcripts
             WHERE contact_id = ?1 ORDER BY at_ms, turn_id",
        )?;
        let parse = |s: String| serde_json::from_str::<Value>(&s).unwrap_or(Value::Null);
        let turns = stmt
            .query_map(params![contact_id], |r| {
                Ok(json!({
                    "endpoint": r.get::<_, String>(0)?,
                    "session_id": r.get::<_, String>(1)?,
                    "at_ms": r.get::<_, i64>(2)?,
                    "input": parse(r.get(3)?),
                    "outputs": parse(r.get(4)?),
                    "sent": parse(r.get(5)?),
                    "outcome": r.get::<_, String>(6)?,
                }))
            })?
            .collect::<Result<_, _>>()?;
        Ok(turns)
    }

    /// Right to erasure: the contact, its PSID mappings, its transcripts, its users' sessions and plugin
    /// session storage. Answers how many rows of each table went.
    pub fn erase_contact(&self, contact_id: &str) -> Result<Option<Value>, StoreError> {
        self.flush()?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let exists: Option<String> = tx
            .query_row(
                "SELECT contact_id FROM contacts WHERE contact_id = ?1",
                params![contact_id],
                |r| r.get(0),
            )
            .optional()?;
        if exists.is_none() {
            return Ok(None);
        }
        let users: Vec<(String, String)> = {
            let mut stmt =
                tx.prepare("SELECT endpoint_id, psid FROM contact_psids WHERE contact_id = ?1")?;
            let rows = stmt.query_map(params![contact_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut sessions = 0;
        let mut values = 0;
        let mut transcripts = 0;
        for (endpoint, psid) in &users {
            sessions += tx.execute(
                "DELETE FROM sessions WHERE endpoint_id = ?1 AND user_id = ?2",
                params![endpoint, psid],
            )?;
            values += tx.execute(
                "DELETE FROM session_values WHERE endpoint_id = ?1 AND user_id = ?2",
                params![endpoint, psid],
            )?;
            transcripts += tx.execute(
                "DELETE FROM transcripts WHERE endpoint_id = ?1 AND user_id = ?2",
                params![endpoint, psid],
            )?;
        }
        transcripts += tx.execute(
            "DELETE FROM transcripts WHERE contact_id = ?1",
            params![contact_id],
        )?;
        let psids = tx.execute(
            "DELETE FROM contact_psids WHERE contact_id = ?1",
            params![contact_id],
        )?;
        let contacts = tx.execute(
            "DELETE FROM contacts WHERE contact_id = ?1",
            params![contact_id],
        )?;
        tx.commit()?;
        drop(conn);
        self.forget_cached_sessions();
        Ok(Some(json!({
            "contact_id": contact_id,
            "deleted": {
                "contacts": contacts, "contact_psids": psids, "transcripts": transcripts,
                "sessions": sessions, "session_values": values,
            }
        })))
    }

    /// Deletes sessions (and their plugin storage) idle for longer than `max_ms`: they can never be resumed,
    /// and a user who never comes back would otherwise keep them forever.
    pub fn purge_sessions(&self, max_ms: i64) -> Result<usize, StoreError> {
        self.flush()?;
        let cutoff = self.now_ms() - max_ms;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let values = tx.execute(
            "DELETE FROM session_values WHERE EXISTS (SELECT 1 FROM sessions s WHERE s.endpoint_id = session_values.endpoint_id
               AND s.user_id = session_values.user_id AND s.session_id = session_values.session_id AND s.last_seen_ms < ?1)",
            params![cutoff],
        )?;
        let sessions = tx.execute(
            "DELETE FROM sessions WHERE last_seen_ms < ?1",
            params![cutoff],
        )?;
        tx.commit()?;
        drop(conn);
        self.forget_cached_sessions();
        Ok(values + sessions)
    }

    /// Deletes transcripts and contacts not seen for `days` (per endpoint for transcripts).
    pub fn apply_retention(&self, endpoint_id: &str, days: u64) -> Result<usize, StoreError> {
        self.flush()?;
        if days == 0 {
            return Ok(0);
        }
        let cutoff = self.now_ms() - days as i64 * 86_400_000;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut deleted = tx.execute(
            "DELETE FROM transcripts WHERE endpoint_id = ?1 AND at_ms < ?2",
            params![endpoint_id, cutoff],
        )?;
        let stale: Vec<String> = {
            let mut stmt = tx.prepare(
                "SELECT DISTINCT c.contact_id FROM contacts c JOIN contact_psids p ON p.contact_id = c.contact_id
                 WHERE p.endpoint_id = ?1 AND c.last_seen_ms < ?2",
            )?;
            let rows = stmt.query_map(params![endpoint_id, cutoff], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for id in &stale {
            deleted += tx.execute(
                "DELETE FROM contact_psids WHERE contact_id = ?1",
                params![id],
            )?;
            deleted += tx.execute("DELETE FROM contacts WHERE contact_id = ?1", params![id])?;
        }
        tx.commit()?;
        Ok(deleted)
    }

    /// Rows of a table that mention `needle` in any column (tests scan every table after an erasure).
    pub fn rows_mentioning(&self, table: &str, needle: &str) -> Result<usize, StoreError> {
        self.flush()?;
        if !USER_TABLES.contains(&table) {
            return Err(StoreError::Sql(format!("unknown table {table}")));
        }
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table}"))?;
        let columns = stmt.column_count();
        let mut rows = stmt.query([])?;
        let mut count = 0;
        while let Some(row) = rows.next()? {
            let hit = (0..columns).any(|i| {
                row.get_ref(i)
                    .ok()
                    .and_then(|v| v.as_str().ok().map(|s| s.contains(needle)))
                    .unwrap_or(false)
            });
            if hit {
                count += 1;
            }
        }
        Ok(count)
    }
}

/// Moves everything of contact `from` into `into` and deletes `from`.
fn fold_contact(tx: &rusqlite::Transaction<'_>, into: &str, from: &str) -> Result<(), StoreError> {
    type Row = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<i64>,
        Option<String>,
        Option<f64>,
        Option<String>,
        String,
        i64,
        i64,
    );
    let read = |id: &str| -> rusqlite::Result<Row> {
        tx.query_row(
            "SELECT first_name, last_name, profile_pic, profile_pic_ms, locale, timezone, gender, data, first_seen_ms, last_seen_ms
             FROM contacts WHERE contact_id = ?1",
            params![id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?)),
        )
    };
    let (a, b) = (read(into)?, read(from)?);
    // Most recent wins: the fields of the contact seen last, falling back to the other's where it has none.
    let (newer, older) = if b.9 > a.9 { (&b, &a) } else { (&a, &b) };
    let pick_s = |n: &Option<String>, o: &Option<String>| n.clone().or_else(|| o.clone());
    let mut data: Map<String, Value> = serde_json::from_str(&older.7).unwrap_or_default();
    let newer_data: Map<String, Value> = serde_json::from_str(&newer.7).unwrap_or_default();
    data.extend(newer_data);
    tx.execute(
        "UPDATE contacts SET first_name = ?2, last_name = ?3, profile_pic = ?4, profile_pic_ms = ?5, locale = ?6,
            timezone = ?7, gender = ?8, data = ?9, first_seen_ms = ?10, last_seen_ms = ?11
         WHERE contact_id = ?1",
        params![
            into,
            pick_s(&newer.0, &older.0),
            pick_s(&newer.1, &older.1),
            pick_s(&newer.2, &older.2),
            newer.3.or(older.3),
            pick_s(&newer.4, &older.4),
            newer.5.or(older.5),
            pick_s(&newer.6, &older.6),
            Value::Object(data).to_string(),
            a.8.min(b.8),
            a.9.max(b.9)
        ],
    )?;
    exec(
        tx,
        "UPDATE contact_psids SET contact_id = ?1 WHERE contact_id = ?2",
        params![into, from],
    )?;
    exec(
        tx,
        "UPDATE transcripts SET contact_id = ?1 WHERE contact_id = ?2",
        params![into, from],
    )?;
    exec(
        tx,
        "DELETE FROM contacts WHERE contact_id = ?1",
        params![from],
    )?;
    Ok(())
}

fn insert_turns(
    conn: &mut Connection,
    turns: &[&TranscriptTurn],
    values: &HashMap<SessionKey, String>,
    now: i64,
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    for (key, value) in values {
        exec(
            &tx,
            "INSERT INTO session_values (endpoint_id, user_id, session_id, value, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (endpoint_id, user_id, session_id) DO UPDATE SET value = ?4, updated_ms = ?5",
            params![key.endpoint_id, key.user_id, key.session_id, value, now],
        )?;
    }
    for turn in turns {
        exec(
            &tx,
        "INSERT OR IGNORE INTO transcripts (turn_id, endpoint_id, user_id, contact_id, session_id, at_ms, input, outputs, sent, outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            turn.turn_id,
            turn.endpoint_id,
            turn.user_id,
            turn.contact_id,
            turn.session_id,
            turn.at_ms,
            turn.input.to_string(),
            turn.outputs.to_string(),
            turn.sent.to_string(),
            turn.outcome
        ],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Runs a statement through the connection's statement cache: turns run the same few statements over
/// and over, and parsing them each time cost more than running them.
fn exec(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// `query_row` through the statement cache (see [`exec`]).
fn query_row<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    row: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, row)
}

fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let applied: i64 = query_row(
        conn,
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        conn.execute_batch(&format!(
            "BEGIN; {sql}; INSERT INTO schema_version (version) VALUES ({}); COMMIT;",
            i + 1
        ))?;
    }
    Ok(())
}

/// The plugins' `session-storage`, persisted: survives restarts, expires with the session.
pub struct DbSessionStorage(pub Arc<Db>);

impl SessionStorage for DbSessionStorage {
    fn get(&self, key: &SessionKey) -> Option<String> {
        match self.0.session_value(key) {
            Ok(value) => value,
            Err(e) => {
                tracing::warn!(error = %e, "session storage read failed");
                None
            }
        }
    }

    fn set(&self, key: &SessionKey, value: String) -> Result<(), String> {
        check_session_value(&value)?;
        self.0.set_session_value(key, value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SystemClock;

    fn key(session_id: &str) -> SessionKey {
        SessionKey {
            endpoint_id: "ep".into(),
            user_id: "u1".into(),
            session_id: session_id.into(),
        }
    }

    fn stored_values(db: &Db) -> i64 {
        db.conn()
            .query_row("SELECT COUNT(*) FROM session_values", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn session_values_are_read_back_at_once_and_committed_with_the_next_flush() {
        let dir = std::env::temp_dir().join(format!("ferry-db-values-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let db = Db::open(&dir, Arc::new(SystemClock)).unwrap();
        db.set_session_value(&key("s1"), r#"{"n":1}"#.into());
        assert_eq!(
            db.session_value(&key("s1")).unwrap().as_deref(),
            Some(r#"{"n":1}"#)
        );
        assert_eq!(
            stored_values(&db),
            0,
            "written with the next batch, not by the hook call"
        );
        db.set_session_value(&key("s1"), r#"{"n":2}"#.into());
        db.flush().unwrap();
        assert_eq!(stored_values(&db), 1);
        assert_eq!(
            db.session_value(&key("s1")).unwrap().as_deref(),
            Some(r#"{"n":2}"#)
        );
        assert_eq!(db.session_value(&key("other")).unwrap(), None);
        drop(db);
        let reopened = Db::open(&dir, Arc::new(SystemClock)).unwrap();
        assert_eq!(
            reopened.session_value(&key("s1")).unwrap().as_deref(),
            Some(r#"{"n":2}"#)
        );
    }
}
