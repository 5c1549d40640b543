//! Where connections are served: `[server] threads` single-threaded tokio
//! runtimes ("shards"), each on a thread of its own. A connection stays on the
//! shard it was given, so answering a request never hands work from one
//! thread to another: with a shared work-stealing runtime, every request
//! woke a parked worker through a futex and cost a context switch, which
//! doubled rpol's CPU per request (BENCHMARKS.md). Shards share the
//! `Shared` state (policy, caches) as before; only the tasks are pinned.
//!
//! The accept loops, signals, reloads and the metrics endpoint stay on the
//! main runtime. A new connection goes to the shard serving the fewest.
//! One shard is the default: on the 2-core test machine it answered as
//! many requests per second as two and spent 30 % less CPU on each (two
//! shards compete with each other and with Postfix for the cores).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::common::lock;

struct Shard {
    handle: Handle,
    /// Connections this shard serves now.
    open: Arc<AtomicUsize>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

pub struct Shards {
    shards: Vec<Shard>,
}

impl Shards {
    /// Starts `count` shards (at least one), each a thread running a
    /// current-thread runtime until [`Shards::stop`].
    pub fn start(count: usize) -> io::Result<Shards> {
        let mut shards = Vec::new();
        for i in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                // Connections handed over by the accept loop wait in the
                // runtime's queue for other threads. By default it is read
                // once per 31 tasks run, so a storm of new connections
                // (Postfix reconnecting after a restart) waited for 31
                // answers each: about a second for the last of 1,000. At
                // 1 a new connection is served before the ones already
                // ready; reading an empty queue is one atomic load.
                .global_queue_interval(1)
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("rpol-shard-{i}"))
                .spawn(move || {
                    // Drives the shard's connections until told to stop;
                    // dropping the runtime then cancels what is left.
                    let _ = runtime.block_on(stopped);
                })?;
            shards.push(Shard {
                handle,
                open: Arc::new(AtomicUsize::new(0)),
                stop: Mutex::new(Some(stop)),
                thread: Mutex::new(Some(thread)),
            });
        }
        Ok(Shards { shards })
    }

    /// Runs `task` on the shard with the fewest connections. It is polled
    /// only there, so the I/O objects it creates (a stream taken over with
    /// `from_std`) belong to that shard's reactor.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Some(shard) = self
            .shards
            .iter()
            .min_by_key(|s| s.open.load(Ordering::Relaxed))
        else {
            return;
        };
        let open = shard.open.clone();
        open.fetch_add(1, Ordering::Relaxed);
        shard.handle.spawn(Counted {
            task,
            _count: Decrement(open),
        });
    }

    /// Stops every shard and waits for its thread. Call it after the
    /// connections were given their time to finish.
    /// Blocks: call it off the async threads (`spawn_blocking`).
    pub fn stop(&self) {
        for shard in &self.shards {
            if let Some(stop) = lock(&shard.stop).take() {
                let _ = stop.send(());
            }
        }
        for shard in &self.shards {
            if let Some(thread) = lock(&shard.thread).take() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        self.stop();
    }
}

pin_project_lite::pin_project! {
    /// A connection's task, counted on its shard for as long as it lives.
    /// Not an `async move` block around the task: rustc keeps a future
    /// moved into an `async` block apart from the same future awaited,
    /// which would double every connection's task (5 KiB each).
    struct Counted<F> {
        #[pin]
        task: F,
        _count: Decrement,
    }
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().task.poll(cx)
    }
}

/// Counts a connection out of its shard however its task ends (also when
/// the runtime drops it unfinished).
struct Decrement(Arc<AtomicUsize>);

impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    /// Busy local work: polls itself again at once, forever, counting
    /// its polls; the shard's queue of ready tasks is never empty.
    struct Spin {
        polls: Arc<AtomicUsize>,
        stop: Arc<AtomicBool>,
    }

    impl Future for Spin {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.stop.load(Ordering::Relaxed) {
                return Poll::Ready(());
            }
            self.polls.fetch_add(1, Ordering::Relaxed);
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[test]
    fn a_busy_shard_starts_new_connections_before_its_busy_ones_go_on() {
        // A storm of connections arriving while the shard answers others
        // (Postfix reconnecting after a restart): each new one must be
        // polled at once, not one per tokio's default 31 scheduler ticks,
        // which at C=1,000 kept the last ones waiting about a second.
        let shards = Shards::start(1).unwrap();
        let polls = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        for _ in 0..8 {
            shards.spawn(Spin {
                polls: polls.clone(),
                stop: stop.clone(),
            });
        }
        while polls.load(Ordering::Relaxed) < 1000 {
            std::thread::yield_now();
        }
        // The shard's thread is held while the new connections are
        // handed over, so that they all wait in its queue at once.
        let (held, holding) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        shards.spawn(async move {
            let _ = held.send(());
            let _ = released.recv();
        });
        holding.recv().unwrap();
        let before = polls.load(Ordering::Relaxed);
        const NEW: usize = 200;
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..NEW {
            let (tx, polls) = (tx.clone(), polls.clone());
            shards.spawn(async move {
                let _ = tx.send(polls.load(Ordering::Relaxed));
            });
        }
        release.send(()).unwrap();
        let waited = (0..NEW).map(|_| rx.recv().unwrap()).max().unwrap() - before;
        stop.store(true, Ordering::Relaxed);
        assert!(
            waited <= 8,
            "the busy tasks were polled {waited} times before the {NEW} new ones had all run"
        );
    }

    #[test]
    fn a_connection_is_counted_until_its_task_ends_or_is_dropped() {
        let shards = Shards::start(1).unwrap();
        let open = || shards.shards[0].open.load(Ordering::Relaxed);
        let (done, ends) = oneshot::channel::<()>();
        shards.spawn(async move {
            let _ = ends.await;
        });
        shards.spawn(std::future::pending::<()>());
        assert_eq!(open(), 2);
        done.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while open() != 1 {
            assert!(Instant::now() < deadline, "an ended task is still counted");
            std::thread::yield_now();
        }
        // Stopping drops the runtime with the unfinished task in it.
        shards.stop();
        assert_eq!(open(), 0, "a dropped task is still counted");
    }

    #[test]
    fn tasks_run_on_the_least_busy_shard_threads() {
        let shards = Shards::start(2).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let tx = tx.clone();
            shards.spawn(async move {
                // A timer needs the shard's own runtime: this would panic
                // on a thread without one.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let name = std::thread::current().name().map(str::to_string);
                let _ = tx.send(name);
            });
        }
        let mut names: Vec<_> = (0..4).map(|_| rx.recv().unwrap().unwrap()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "rpol-shard-0",
                "rpol-shard-0",
                "rpol-shard-1",
                "rpol-shard-1"
            ]
        );
    }
}
