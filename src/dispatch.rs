//! Per-user ordering: events of one (endpoint, user) run strictly one after another in the order they were
//! accepted; different users run concurrently.
//!
//! A user with work has exactly one worker task draining their queue; the task ends when the queue is empty,
//! so idle users cost nothing. A global bound on pending events turns overload into refused acknowledgements
//! (Meta retries) instead of unbounded memory.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("too many events pending ({0}); try again later")]
    Overloaded(usize),
}

/// Runs jobs of type `J` with `handler`, serially per key.
pub struct Dispatcher<K, J, H> {
    queues: Mutex<HashMap<K, VecDeque<J>>>,
    pending: AtomicUsize,
    max_pending: usize,
    handler: H,
}

impl<K, J, H, F> Dispatcher<K, J, H>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    J: Send + 'static,
    H: Fn(J) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    pub fn new(max_pending: usize, handler: H) -> Arc<Self> {
        Arc::new(Dispatcher {
            queues: Mutex::new(HashMap::new()),
            pending: AtomicUsize::new(0),
            max_pending,
            handler,
        })
    }

    /// Events accepted and not yet finished.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Reserves room for `n` events, or refuses them all: a webhook batch is acknowledged whole or not at all.
    pub fn reserve(&self, n: usize) -> Result<Reservation<'_, K, J, H>, DispatchError> {
        let before = self.pending.fetch_add(n, Ordering::AcqRel);
        if before + n > self.max_pending {
            self.pending.fetch_sub(n, Ordering::AcqRel);
            return Err(DispatchError::Overloaded(before));
        }
        Ok(Reservation {
            dispatcher: self,
            left: n,
        })
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
        tokio::spawn(async move { me.drain(key, job).await });
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

/// Room for a known number of events; what is not submitted is given back on drop.
pub struct Reservation<'a, K, J, H> {
    dispatcher: &'a Dispatcher<K, J, H>,
    left: usize,
}

impl<K, J, H, F> Reservation<'_, K, J, H>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    J: Send + 'static,
    H: Fn(J) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    pub fn submit(&mut self, dispatcher: &Arc<Dispatcher<K, J, H>>, key: K, job: J) {
        if self.left == 0 {
            // More submissions than reserved: count the extra one so `pending` stays exact.
            dispatcher.pending.fetch_add(1, Ordering::AcqRel);
        } else {
            self.left -= 1;
        }
        dispatcher.enqueue(key, job);
    }
}

impl<K, J, H> Drop for Reservation<'_, K, J, H> {
    fn drop(&mut self) {
        if self.left > 0 {
            self.dispatcher
                .pending
                .fetch_sub(self.left, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn per_key_order_is_kept_and_keys_run_concurrently() {
        let log = Arc::new(Mutex::new(Vec::<(u32, u32)>::new()));
        let sink = Arc::clone(&log);
        let d = Dispatcher::new(10_000, move |(user, n): (u32, u32)| {
            let sink = Arc::clone(&sink);
            async move {
                // Later jobs sleep less: without per-key serialisation they would overtake.
                tokio::time::sleep(Duration::from_millis(u64::from(10 - n))).await;
                sink.lock().unwrap().push((user, n));
            }
        });
        let start = std::time::Instant::now();
        for n in 0..10 {
            for user in 0..20 {
                let mut r = d.reserve(1).unwrap();
                r.submit(&d, user, (user, n));
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

    #[tokio::test]
    async fn overload_refuses_whole_batches_and_releases_unused_room() {
        let d = Dispatcher::new(3, |_: u32| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        assert!(d.reserve(4).is_err());
        assert_eq!(d.pending(), 0);
        {
            let mut r = d.reserve(3).unwrap();
            r.submit(&d, 1u32, 1);
        }
        assert_eq!(d.pending(), 1);
        assert!(d.reserve(3).is_err());
        assert!(d.reserve(2).is_ok());
    }
}
