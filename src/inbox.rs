//! From the journal's inbox to turns: accepted events are fed to the per-user dispatcher in the order the
//! inbox holds them, at most `max_pending_events` in memory at a time.
//!
//! While there is room, the journal's writer hands each commit's new events straight to the feed (before
//! the webhook answers 200); a task of its own parses them and gives them to the dispatcher, so the writer,
//! which every acknowledgement waits for, does nothing but write. When memory is full the inbox "spills":
//! new events stay on disk only, and a refill task loads them, oldest first, as turns finish. At start the
//! inbox is treated as spilled, so the same refill resumes whatever a crash or a shutdown left, with each
//! turn's recorded progress.

use crate::app::{Core, Endpoint, TurnDispatcher};
use crate::messenger::webhook;
use crate::pipeline::{Job, Progress};
use crate::store::{DeadLetter, InboxEntry};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};

/// How often the refill task looks for room when nothing woke it.
const REFILL_TICK: Duration = Duration::from_millis(50);

pub struct Inbox {
    core: Arc<Core>,
    endpoints: HashMap<String, Arc<Endpoint>>,
    dispatcher: Arc<TurnDispatcher>,
    max_in_memory: usize,
    feed: Mutex<Feed>,
    wake: Notify,
    /// Entries on their way to the dispatcher, in sequence order (see [`Inbox::hand_over`]).
    to_dispatch: OnceLock<mpsc::UnboundedSender<InboxEntry>>,
    /// How many entries `to_dispatch` holds: they count against `max_in_memory` like dispatched ones.
    handed_over: AtomicUsize,
}

struct Feed {
    /// Events are waiting on disk that are not in memory: new ones must queue behind them.
    spilled: bool,
    /// The last sequence number handed to the dispatcher.
    last_seq: i64,
    /// The highest sequence number the writer left on disk while spilled: the refill may only stop once it
    /// has loaded that far.
    left_on_disk: i64,
}

/// Inbox entries read per refill at most: the read runs outside the lock, but smaller reads hand work to
/// the dispatcher sooner.
const REFILL_BATCH: usize = 2_048;

impl Inbox {
    pub fn new(
        core: Arc<Core>,
        endpoints: HashMap<String, Arc<Endpoint>>,
        dispatcher: Arc<TurnDispatcher>,
        max_in_memory: usize,
    ) -> Arc<Inbox> {
        Arc::new(Inbox {
            core,
            endpoints,
            dispatcher,
            max_in_memory,
            feed: Mutex::new(Feed {
                spilled: true,
                last_seq: 0,
                left_on_disk: 0,
            }),
            wake: Notify::new(),
            to_dispatch: OnceLock::new(),
            handed_over: AtomicUsize::new(0),
        })
    }

    /// Events in memory: handed over or in the dispatcher.
    fn in_memory(&self) -> usize {
        self.dispatcher.pending() + self.handed_over.load(Ordering::Acquire)
    }

    /// Queues an entry for the dispatch task. Called with the feed lock held, so entries reach the
    /// dispatcher in sequence order whichever path (the writer or the refill) loaded them.
    fn hand_over(&self, entry: InboxEntry) {
        self.handed_over.fetch_add(1, Ordering::AcqRel);
        let Some(to_dispatch) = self.to_dispatch.get() else {
            self.handed_over.fetch_sub(1, Ordering::AcqRel);
            self.submit(entry);
            return;
        };
        if let Err(unsent) = to_dispatch.send(entry) {
            // The task is gone (shutting down): the entry stays in the inbox for the next start.
            self.handed_over.fetch_sub(1, Ordering::AcqRel);
            tracing::debug!(
                seq = unsent.0.seq,
                "dispatch task gone; event left in the inbox"
            );
        }
    }

    fn feed(&self) -> std::sync::MutexGuard<'_, Feed> {
        self.feed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connects the journal to this inbox and starts the refill task (which first resumes what was left).
    pub fn start(self: &Arc<Self>) {
        let (to_dispatch, entries) = mpsc::unbounded_channel();
        let _ = self.to_dispatch.set(to_dispatch);
        tokio::spawn(dispatch_loop(Arc::downgrade(self), entries));
        let weak = Arc::downgrade(self);
        self.core.journal.set_sink(Box::new(move |entries| {
            if let Some(inbox) = weak.upgrade() {
                inbox.committed(entries);
            }
        }));
        let weak = Arc::downgrade(self);
        tokio::spawn(refill_loop(weak));
    }

    /// Called by the journal writer with each commit's new events, in order. Never waits for the refill's
    /// reads: the lock is only held for bookkeeping.
    fn committed(&self, entries: Vec<InboxEntry>) {
        let mut feed = self.feed();
        let newest = entries.last().map_or(0, |e| e.seq);
        if feed.spilled {
            feed.left_on_disk = feed.left_on_disk.max(newest);
            self.wake.notify_one();
            return;
        }
        let fresh: Vec<InboxEntry> = entries
            .into_iter()
            .filter(|e| e.seq > feed.last_seq)
            .collect();
        if self.in_memory() + fresh.len() > self.max_in_memory {
            feed.spilled = true;
            feed.left_on_disk = feed.left_on_disk.max(newest);
            self.core.metrics.inc("ferry_inbox_spills_total", &[]);
            self.wake.notify_one();
            return;
        }
        for entry in fresh {
            feed.last_seq = entry.seq;
            self.hand_over(entry);
        }
    }

    /// Loads waiting events from disk while there is room; returns how many were loaded.
    fn refill(&self) -> usize {
        if self.core.is_stopping() {
            return 0;
        }
        let after = {
            let feed = self.feed();
            if !feed.spilled {
                return 0;
            }
            feed.last_seq
        };
        let room = self.max_in_memory.saturating_sub(self.in_memory());
        if room < self.max_in_memory / 4 && room < 1024 {
            return 0;
        }
        let want = room.min(REFILL_BATCH);
        // Read without the lock: the journal writer must never wait for this.
        let entries = match self.core.journal.waiting_after(after, want) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the inbox; will retry");
                return 0;
            }
        };
        let mut feed = self.feed();
        let mut loaded = 0;
        for entry in entries {
            // Only the refill feeds while spilled, so nothing here was fed already; the check is cheap.
            if entry.seq > feed.last_seq {
                feed.last_seq = entry.seq;
                self.hand_over(entry);
                loaded += 1;
            }
        }
        if loaded < want && feed.left_on_disk <= feed.last_seq {
            // Everything committed so far is in memory; the writer may feed directly again.
            feed.spilled = false;
        }
        loaded
    }

    /// Hands one entry to the dispatcher as a job (or completes it with a dead letter when it cannot run).
    fn submit(&self, entry: InboxEntry) {
        let Some(endpoint) = self.endpoints.get(&entry.endpoint_id) else {
            self.unrunnable(
                entry,
                "unknown_endpoint",
                "the endpoint is no longer configured",
            );
            return;
        };
        let Some(event) = webhook::parse_stored(&entry.event) else {
            self.unrunnable(
                entry,
                "unreadable_event",
                "the stored event is not a JSON object",
            );
            return;
        };
        let progress = entry.progress.as_deref().and_then(|text| {
            serde_json::from_str::<Progress>(text)
                .map_err(|e| tracing::error!(seq = entry.seq, error = %e, "recorded progress unreadable; the turn starts over"))
                .ok()
        });
        let job = Job {
            core: Arc::clone(&self.core),
            endpoint: Arc::clone(endpoint),
            seq: entry.seq,
            received_ms: entry.received_ms,
            event,
            progress,
            accepted_at: Instant::now(),
        };
        self.dispatcher
            .submit((Arc::clone(&endpoint.id), entry.user_id), job);
    }

    /// An entry that can never run (its endpoint was removed from the configuration): kept as a dead letter.
    fn unrunnable(&self, entry: InboxEntry, reason: &str, error: &str) {
        tracing::warn!(endpoint = %entry.endpoint_id, seq = entry.seq, reason, "inbox entry cannot run; dead-lettered");
        self.core.metrics.inc(
            "ferry_dead_letters_total",
            &[("endpoint", &entry.endpoint_id), ("reason", reason)],
        );
        let letter = DeadLetter {
            endpoint_id: entry.endpoint_id,
            user_id: entry.user_id,
            reason: reason.to_string(),
            error: error.to_string(),
            message: entry.event,
        };
        let core = Arc::clone(&self.core);
        let seq = entry.seq;
        tokio::spawn(async move {
            if core.journal.dead_letter(letter).await.is_ok() {
                core.db.finish_turn(None, Some(seq));
            }
        });
    }
}

/// Parses handed-over entries and gives them to the dispatcher, in the order they were handed over.
async fn dispatch_loop(inbox: Weak<Inbox>, mut entries: mpsc::UnboundedReceiver<InboxEntry>) {
    while let Some(entry) = entries.recv().await {
        let Some(me) = inbox.upgrade() else { return };
        me.submit(entry);
        me.handed_over.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn refill_loop(inbox: Weak<Inbox>) {
    loop {
        let Some(me) = inbox.upgrade() else { return };
        let loaded = me.refill();
        if loaded == 0 {
            let _ = tokio::time::timeout(REFILL_TICK, me.wake.notified()).await;
        }
    }
}
