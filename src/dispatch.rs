//! Per-user ordering: events of one (endpoint, user) run strictly one after another in the order they were
//! accepted; different users run concurrently.
//!
//! A user with work has exactly one worker task draining their queue; the task ends when the queue is empty,
//! so idle users cost nothing. The inbox (see `inbox`) bounds how many jobs are pending here.
//!
//! Turns run on their own runtime, whose threads have a lower scheduling priority than the ones that answer
//! webhooks: under a burst, Meta's calls are acknowledged first (the events are safe in the inbox) and turns
//! use the CPU that is left, instead of acknowledgements queueing behind turns.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Runs jobs of type `J` with `handler`, serially per key.
pub struct Dispatcher<K, J, H> {
    queues: Mutex<HashMap<K, VecDeque<J>>>,
    pending: AtomicUsize,
    handler: H,
    /// Jobs may be submitted from threads outside the runtime (the journal writer): workers spawn here.
    runtime: Option<tokio::runtime::Handle>,
}

impl<K, J, H, F> Dispatcher<K, J, H>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    J: Send + 'static,
    H: Fn(J) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    /// Workers run on `runtime` (the current runtime when `None`).
    pub fn new(handler: H, runtime: Option<tokio::runtime::Handle>) -> Arc<Self> {
        Arc::new(Dispatcher {
            queues: Mutex::new(HashMap::new()),
            pending: AtomicUsize::new(0),
            handler,
            runtime: runtime.or_else(|| tokio::runtime::Handle::try_current().ok()),
        })
    }

    /// Events accepted and not yet finished.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Queues a job behind the key's earlier jobs.
    pub fn submit(self: &Arc<Self>, key: K, job: J) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        self.enqueue(key, job);
    }

    fn enqueue(self: &Arc<Self>, key: K, job: J) {
        let mut queues = match self.queues.lock() {
            Ok(q) => q,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(queue) = queues.get_mut(&key) {
            queue.push_back(job);
            return;
        }
        // An entry (even empty) marks that a worker is running for this key.
        queues.insert(key.clone(), VecDeque::new());
        drop(queues);
        let me = Arc::clone(self);
        let work = async move { me.drain(key, job).await };
        match &self.runtime {
            Some(runtime) => drop(runtime.spawn(work)),
            None => drop(tokio::spawn(work)),
        }
    }

    async fn drain(self: Arc<Self>, key: K, first: J) {
        let mut job = first;
        loop {
            (self.handler)(job).await;
            self.pending.fetch_sub(1, Ordering::AcqRel);
            let mut queues = match self.queues.lock() {
                Ok(q) => q,
                Err(poisoned) => poisoned.into_inner(),
            };
            match queues.get_mut(&key).and_then(VecDeque::pop_front) {
                Some(next) => job = next,
                None => {
                    queues.remove(&key);
                    return;
                }
            }
        }
    }
}

/// A multi-threaded tokio runtime for turns, owned by a thread of its own so that it can be dropped from
/// anywhere (a runtime may not be dropped inside another one).
pub struct TurnRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<std::sync::mpsc::Sender<()>>,
}

impl TurnRuntime {
    /// `niceness`: how much nicer than the calling thread the turn threads run (Linux), so that a burst of
    /// webhook calls is acknowledged first (see `server.turn_niceness`).
    pub fn start(workers: usize, niceness: i32) -> std::io::Result<TurnRuntime> {
        // Every thread of the runtime gets the same absolute value: its blocking-pool threads are started
        // by worker threads that are already nicer, and adding to what they inherit would compound.
        let target = this_threads_niceness().saturating_add(niceness);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .thread_name("ferry-turns")
            .on_thread_start(move || set_this_threads_niceness(target))
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("ferry-turns-owner".into())
            .spawn(move || {
                let _ = stopped.recv();
                // Turns still running are abandoned; their progress is in the journal.
                runtime.shutdown_background();
            })?;
        Ok(TurnRuntime {
            handle,
            stop: Some(stop),
        })
    }

    pub fn handle(&self) -> tokio::runtime::Handle {
        self.handle.clone()
    }
}

impl Drop for TurnRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Changes the calling thread's niceness by `delta` (Linux; elsewhere nothing). Raising the priority needs
/// CAP_SYS_NICE: without it the call fails quietly and the thread keeps its priority.
pub fn adjust_this_threads_priority(delta: i32) {
    set_this_threads_niceness(this_threads_niceness().saturating_add(delta));
}

/// The calling thread's niceness (Linux; elsewhere 0).
fn this_threads_niceness() -> i32 {
    #[cfg(target_os = "linux")]
    // SAFETY: getpriority on the calling thread's own id; no memory is passed.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::getpriority(libc::PRIO_PROCESS, tid)
    }
    #[cfg(not(target_os = "linux"))]
    0
}

/// Sets the calling thread's niceness (Linux; elsewhere nothing), clamped to -20..=19. Lowering it needs
/// CAP_SYS_NICE: without it the call fails quietly.
fn set_this_threads_niceness(niceness: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority on the calling thread's own id; no memory is passed.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, niceness.clamp(-20, 19));
    }
    #[cfg(not(target_os = "linux"))]
    let _ = niceness;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn per_key_order_is_kept_and_keys_run_concurrently() {
        let log = Arc::new(Mutex::new(Vec::<(u32, u32)>::new()));
        let sink = Arc::clone(&log);
        let turns = TurnRuntime::start(2, 0).unwrap();
        let d = Dispatcher::new(
            move |(user, n): (u32, u32)| {
                let sink = Arc::clone(&sink);
                async move {
                    // Later jobs sleep less: without per-key serialisation they would overtake.
                    tokio::time::sleep(Duration::from_millis(u64::from(10 - n))).await;
                    sink.lock().unwrap().push((user, n));
                }
            },
            Some(turns.handle()),
        );
        let start = std::time::Instant::now();
        for n in 0..10 {
            for user in 0..20 {
                d.submit(user, (user, n));
            }
        }
        while d.pending() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // 20 users x ~55 ms of sleeps each: concurrent users finish far sooner than 20 x 55 ms.
        assert!(
            start.elapsed() < Duration::from_millis(800),
            "{:?}",
            start.elapsed()
        );
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 200);
        for user in 0..20 {
            let seq: Vec<u32> = log
                .iter()
                .filter(|(u, _)| *u == user)
                .map(|(_, n)| *n)
                .collect();
            assert_eq!(seq, (0..10).collect::<Vec<_>>(), "user {user}");
        }
        assert!(d.queues.lock().unwrap().is_empty());
    }
}
