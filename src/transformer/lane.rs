//! The plugin lane: one task that runs the plugin work (instantiation, hook calls, teardown) of every turn.
//!
//! Why: a turn's plugin work is small (about 20 µs for a Rust plugin), but when the host's worker threads
//! each ran it inside their own turns, under load it cost three times as much. Every instantiation and
//! teardown goes through state the whole engine shares (the instance pool and its locks, the code
//! registry, reference counts), and with plugin work on every core at once those cache lines moved
//! between cores on every turn. Funnelled through one task, that state stays with one core, and the turn
//! rate with a plugin rose by about a fifth (see the README's performance section).
//!
//! One task must not become something a bad plugin can hold: a job that has run on the lane for longer
//! than [`SLICE`] in total is moved to a task of its own, and a plugin whose hooks are slow (Python and
//! JavaScript take about a millisecond) runs on its turns' own tasks from the start (see
//! [`Lane::fits`]). A guest in an endless loop yields at every epoch tick, so it holds the lane for at
//! most one tick before it is moved.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;

/// Work for the lane: it owns everything it touches and reports back through a channel of its own.
pub type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Time a job may run on the lane, summed over its polls, before it moves to a task of its own.
pub const SLICE: Duration = Duration::from_micros(500);
/// A plugin whose recent hook calls took longer than this on average runs on its turns' own tasks.
const SLOW_CALL: Duration = Duration::from_micros(250);

/// Where a runtime's lane task takes jobs; the task is started on first use, on the caller's tokio runtime,
/// and again if that runtime has gone away.
#[derive(Default)]
pub struct Lane {
    sender: Mutex<Option<mpsc::UnboundedSender<Job>>>,
}

impl Lane {
    /// Hands `job` to the lane. Gives it back when the lane cannot take it (no tokio runtime here), so the
    /// caller can run it itself.
    pub fn submit(&self, job: Job) -> Result<(), Job> {
        let mut sender = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        let open = sender.as_ref().filter(|s| !s.is_closed());
        let sender = match open {
            Some(s) => s.clone(),
            None => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return Err(job);
                };
                let (tx, rx) = mpsc::unbounded_channel();
                runtime.spawn(run_lane(rx));
                *sender = Some(tx.clone());
                tx
            }
        };
        sender.send(job).map_err(|e| e.0)
    }

    /// Whether a plugin with these recent call times should use the lane.
    pub fn fits(recent: &CallTimes) -> bool {
        recent.average() <= SLOW_CALL
    }
}

async fn run_lane(mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut running = FuturesUnordered::new();
    loop {
        tokio::select! {
            job = jobs.recv() => match job {
                Some(job) => running.push(Sliced { job: Some(job), spent: Duration::ZERO }),
                None => break,
            },
            Some(outcome) = running.next(), if !running.is_empty() => {
                if let Some(job) = outcome {
                    tokio::spawn(job);
                }
            }
        }
    }
    // The lane's sender is gone (the runtime is being dropped): finish what was started.
    while let Some(outcome) = running.next().await {
        if let Some(job) = outcome {
            job.await;
        }
    }
}

/// A job on the lane, with the time it has spent there. Resolves to `None` when the job is done, or to the
/// job itself once it has used up its slice.
struct Sliced {
    job: Option<Job>,
    spent: Duration,
}

impl Future for Sliced {
    type Output = Option<Job>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Job>> {
        let Some(job) = self.job.as_mut() else {
            return Poll::Ready(None);
        };
        let started = Instant::now();
        let poll = job.as_mut().poll(cx);
        self.spent += started.elapsed();
        match poll {
            Poll::Ready(()) => {
                self.job = None;
                Poll::Ready(None)
            }
            Poll::Pending if self.spent > SLICE => Poll::Ready(self.job.take()),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A plugin's recent hook call times (an exponential average), to tell fast plugins from slow ones.
#[derive(Debug, Default)]
pub struct CallTimes {
    average_us: AtomicU64,
}

impl CallTimes {
    pub fn record(&self, took: Duration) {
        let took = took.as_micros().min(u64::MAX as u128) as u64;
        // Races between turns lose an update now and then, which an average can afford.
        let old = self.average_us.load(Ordering::Relaxed);
        let new = if old == 0 { took } else { (old * 7 + took) / 8 };
        self.average_us.store(new.max(1), Ordering::Relaxed);
    }

    pub fn average(&self) -> Duration {
        Duration::from_micros(self.average_us.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_jobs_on_one_task_and_moves_a_job_that_overstays_to_a_task_of_its_own() {
        let lane = Lane::default();
        // A job that spins well past the slice between its awaits: the task it runs on, poll by poll.
        let (hog_done, hog_rx) = oneshot::channel();
        let hog: Job = Box::pin(async move {
            let mut tasks = Vec::new();
            for _ in 0..3 {
                tasks.push(tokio::task::try_id());
                let until = Instant::now() + SLICE * 4;
                while Instant::now() < until {}
                tokio::task::yield_now().await;
            }
            let _ = hog_done.send(tasks);
        });
        assert!(lane.submit(hog).is_ok());
        let mut quick = Vec::new();
        for _ in 0..20 {
            let (tx, rx) = oneshot::channel();
            let job: Job = Box::pin(async move {
                let _ = tx.send(tokio::task::try_id());
            });
            assert!(lane.submit(job).is_ok());
            quick.push(rx);
        }
        let hog_tasks = hog_rx.await.unwrap();
        let lane_task = hog_tasks[0];
        assert!(lane_task.is_some());
        for rx in quick {
            assert_eq!(
                rx.await.unwrap(),
                lane_task,
                "quick jobs run on the lane's task"
            );
        }
        assert!(
            hog_tasks[1..]
                .iter()
                .all(|t| t.is_some() && *t != lane_task),
            "after its first slice the hog ran on a task of its own: {hog_tasks:?}"
        );
    }

    #[test]
    fn without_a_tokio_runtime_the_job_comes_back() {
        let lane = Lane::default();
        let job: Job = Box::pin(async {});
        assert!(lane.submit(job).is_err());
    }

    #[test]
    fn slow_plugins_do_not_fit_the_lane() {
        let times = CallTimes::default();
        assert!(Lane::fits(&times), "a new plugin tries the lane");
        times.record(Duration::from_micros(20));
        assert!(Lane::fits(&times));
        for _ in 0..20 {
            times.record(Duration::from_millis(1));
        }
        assert!(!Lane::fits(&times));
    }
}
