//! The embedded store's one writer: a thread that runs the writes queued
//! since its last commit in one transaction (group commit).
//!
//! redb allows one write transaction at a time, and its commit costs far
//! more than a greylisting decision. With a transaction per write, N
//! requests queue for N commits; here the writes that arrive while one
//! commit runs share the next. Each caller is answered after the commit
//! that holds its write, never from state a failed commit could lose, and
//! each write sees those queued before it (one order, as before).
//!
//! Every commit is durable (fsynced): redb's `Durability::Eventual` is an
//! fsync on Linux like `Immediate`, and commits without one
//! (`Durability::None`) cannot free pages, which grew the file tenfold
//! under a flood (BENCHMARKS.md). What a caller was answered survives a
//! crash.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::super::{MAX_QUEUE_WAIT, StoreError};
use super::backend;

/// Writes one transaction takes at most: each is one request's records
/// or one sweep batch, so a commit stays milliseconds.
const MAX_BATCH: usize = 256;
/// Writes waiting at most (each holds one request's records, about a
/// kilobyte at most); beyond it a caller waits for room, within
/// [`MAX_QUEUE_WAIT`].
const QUEUE: usize = 4096;

/// What a write does once its transaction's fate is known: hands its
/// answer, or the commit's error, to its caller.
type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A write, given its batch's transaction or why there is none.
type Run = Box<dyn FnOnce(Result<&WriteTransaction, String>) -> Ran + Send>;

enum Ran {
    Done(Finish),
    /// The write failed part way: its transaction must not commit.
    Broken(String, Finish),
}

struct Job {
    /// Its room in the queue, given back when the job is done.
    _room: OwnedSemaphorePermit,
    started: oneshot::Sender<()>,
    run: Run,
}

pub(super) struct Writer {
    queue: Option<mpsc::Sender<Job>>,
    /// [`QUEUE`] permits: the queue's bound, waited for on the runtime.
    room: Arc<Semaphore>,
    /// Transactions committed, for the tests.
    #[cfg(test)]
    commits: Arc<std::sync::atomic::AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread.
    pub(super) fn start(db: Arc<Database>) -> Result<Writer, StoreError> {
        let (queue, jobs) = mpsc::channel();
        let commits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = commits.clone();
        let thread = std::thread::Builder::new()
            .name("rpol-store-writer".into())
            .spawn(move || serve(&db, &jobs, &counted))
            .map_err(backend)?;
        Ok(Writer {
            queue: Some(queue),
            room: Arc::new(Semaphore::new(QUEUE)),
            #[cfg(test)]
            commits,
            thread: Some(thread),
        })
    }

    /// Runs `f` in the next transaction. Waiting for room in the queue and
    /// for the transaction to start together take up to
    /// [`MAX_QUEUE_WAIT`] (then [`StoreError::Busy`], which defers: a busy
    /// store slows the answer, it never skips the check); from its start,
    /// the transaction has `timeout` to commit. A caller that stops waiting
    /// leaves its write queued: it still runs, in order.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let queued = tokio::time::Instant::now() + MAX_QUEUE_WAIT;
        let (started, on_start) = oneshot::channel();
        let (answer, on_answer) = oneshot::channel();
        let run = Box::new(move |tx: Result<&WriteTransaction, String>| {
            match tx.map_err(StoreError::Backend).and_then(f) {
                Ok(value) => Ran::Done(Box::new(move |commit: Result<(), StoreError>| {
                    let _ = answer.send(commit.map(|()| value));
                }) as Finish),
                Err(e) => Ran::Broken(
                    e.to_string(),
                    Box::new(move |_| {
                        let _ = answer.send(Err(e));
                    }),
                ),
            }
        });
        let room = match tokio::time::timeout_at(queued, self.room.clone().acquire_owned()).await {
            Err(_) => return Err(StoreError::Busy(MAX_QUEUE_WAIT)),
            Ok(room) => room.map_err(|_| stopped())?,
        };
        let job = Job {
            _room: room,
            started,
            run,
        };
        let queue = self.queue.as_ref().ok_or_else(stopped)?;
        queue.send(job).map_err(|_| stopped())?;
        if tokio::time::timeout_at(queued, on_start).await.is_err() {
            return Err(StoreError::Busy(MAX_QUEUE_WAIT));
        }
        let done = async move { on_answer.await.unwrap_or_else(|_| Err(stopped())) };
        super::super::within(timeout, done).await
    }
}

impl Drop for Writer {
    /// Lets the queued writes finish and the thread close its handle on the
    /// file, so that the file can be opened again at once.
    fn drop(&mut self) {
        self.queue = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Backend("store writer stopped".into())
}

/// The writer thread: takes what is queued, up to [`MAX_BATCH`], and
/// commits it; until the queue closes.
fn serve(db: &Database, jobs: &mpsc::Receiver<Job>, commits: &std::sync::atomic::AtomicU64) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    loop {
        if batch.is_empty() {
            match jobs.recv() {
                Ok(job) => batch.push(job),
                Err(_) => return,
            }
        }
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let taken = std::mem::take(&mut batch);
        // A panic in a write (a bug) fails its batch, not the store: the
        // callers' answers are dropped, which they read as an error.
        match std::panic::catch_unwind(AssertUnwindSafe(|| commit(db, taken))) {
            Ok((rest, committed)) => {
                batch = rest;
                commits.fetch_add(u64::from(committed), std::sync::atomic::Ordering::Relaxed);
            }
            Err(_) => tracing::error!("store writer: a write panicked; its batch was not written"),
        }
    }
}

/// Runs `jobs` in one transaction and commits it. A write that fails part
/// way drops the transaction: it and the writes before it in the batch
/// fail, and the writes after it are returned, to run in the next.
/// Whether it committed.
fn commit(db: &Database, jobs: Vec<Job>) -> (Vec<Job>, bool) {
    let mut tx = match db.begin_write() {
        Ok(tx) => tx,
        Err(e) => {
            let e = e.to_string();
            for job in jobs {
                let _ = job.started.send(());
                if let Ran::Broken(_, finish) = (job.run)(Err(e.clone())) {
                    finish(Ok(()));
                }
            }
            return (Vec::new(), false);
        }
    };
    tx.set_durability(Durability::Immediate);
    let mut finishes = Vec::with_capacity(jobs.len());
    let mut jobs = jobs.into_iter();
    while let Some(job) = jobs.next() {
        let _ = job.started.send(());
        match (job.run)(Ok(&tx)) {
            Ran::Done(finish) => finishes.push(finish),
            Ran::Broken(why, finish) => {
                drop(tx);
                finish(Ok(()));
                for finish in finishes {
                    finish(Err(StoreError::Backend(format!(
                        "not written: a write in the same transaction failed: {why}"
                    ))));
                }
                return (jobs.collect(), false);
            }
        }
    }
    match tx.commit() {
        Ok(()) => {
            finishes.into_iter().for_each(|finish| finish(Ok(())));
            (Vec::new(), true)
        }
        Err(e) => {
            let e = e.to_string();
            for finish in finishes {
                finish(Err(StoreError::Backend(e.clone())));
            }
            (Vec::new(), false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableTable, TableDefinition};

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");
    const SECOND: Duration = Duration::from_secs(1);

    fn open(dir: &tempfile::TempDir) -> (Arc<Database>, Writer) {
        let db = Arc::new(Database::create(dir.path().join("w.redb")).unwrap());
        let writer = Writer::start(db.clone()).unwrap();
        (db, writer)
    }

    fn put(tx: &WriteTransaction, k: u64) -> Result<(), StoreError> {
        tx.open_table(T)
            .map_err(backend)?
            .insert(k, k)
            .map_err(backend)?;
        Ok(())
    }

    fn keys(db: &Database) -> Vec<u64> {
        let tx = db.begin_read().unwrap();
        let Ok(t) = tx.open_table(T) else {
            return Vec::new();
        };
        t.iter().unwrap().map(|e| e.unwrap().0.value()).collect()
    }

    /// Holds the writer in a write until the returned sender is used, so
    /// that what is queued meanwhile forms one batch.
    async fn hold(
        writer: &Arc<Writer>,
    ) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (running, on_running) = oneshot::channel();
        let w = writer.clone();
        let held = tokio::spawn(async move {
            w.write(10 * SECOND, move |_| {
                let _ = running.send(());
                let _ = wait.recv();
                Ok(())
            })
            .await
            .unwrap();
        });
        on_running.await.unwrap();
        (release, held)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_queued_during_a_commit_share_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let (db, writer) = open(&dir);
        let writer = Arc::new(writer);
        let (release, held) = hold(&writer).await;
        let mut calls = Vec::new();
        for k in 0..100 {
            let w = writer.clone();
            calls.push(tokio::spawn(async move {
                w.write(SECOND, move |tx| put(tx, k)).await
            }));
        }
        // All queued (each holds its room) before the held write ends.
        while writer.room.available_permits() > QUEUE - 101 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        held.await.unwrap();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        assert_eq!(keys(&db).len(), 100);
        // Stopped, so that the count holds the last commit.
        let commits = writer.commits.clone();
        drop(Arc::into_inner(writer));
        assert_eq!(commits.load(std::sync::atomic::Ordering::Relaxed), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_fails_its_batch_so_far_and_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let (db, writer) = open(&dir);
        let writer = Arc::new(writer);
        let (release, held) = hold(&writer).await;
        let queue = |k: u64, fail: bool| {
            let w = writer.clone();
            tokio::spawn(async move {
                w.write(SECOND, move |tx| {
                    put(tx, k)?;
                    if fail {
                        return Err(StoreError::Backend("broken part way".into()));
                    }
                    Ok(())
                })
                .await
            })
        };
        let before = queue(1, false);
        while writer.room.available_permits() > QUEUE - 2 {
            tokio::task::yield_now().await;
        }
        let failing = queue(2, true);
        while writer.room.available_permits() > QUEUE - 3 {
            tokio::task::yield_now().await;
        }
        let after = queue(3, false);
        while writer.room.available_permits() > QUEUE - 4 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        held.await.unwrap();
        let before = before.await.unwrap().unwrap_err().to_string();
        assert!(
            before.contains("not written") && before.contains("broken part way"),
            "{before}"
        );
        assert_eq!(
            failing.await.unwrap().unwrap_err().to_string(),
            "broken part way"
        );
        after.await.unwrap().unwrap();
        assert_eq!(keys(&db), vec![3]);
    }

    #[tokio::test]
    async fn a_panicking_write_fails_alone_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (db, writer) = open(&dir);
        let panicked = writer
            .write(SECOND, |tx| -> Result<(), StoreError> {
                put(tx, 1)?;
                panic!("a bug in a write")
            })
            .await;
        assert!(panicked.is_err());
        writer.write(SECOND, |tx| put(tx, 2)).await.unwrap();
        assert_eq!(keys(&db), vec![2]);
    }

    /// The file as a crash of rpol would leave it: copied while the writer
    /// runs, then opened (redb repairs it to its last durable commit).
    fn after_a_crash(dir: &tempfile::TempDir) -> Vec<u64> {
        let copy = dir.path().join("copy.redb");
        std::fs::copy(dir.path().join("w.redb"), &copy).unwrap();
        keys(&Database::create(&copy).unwrap())
    }

    #[tokio::test]
    async fn what_was_answered_survives_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, writer) = open(&dir);
        writer.write(SECOND, |tx| put(tx, 7)).await.unwrap();
        assert_eq!(after_a_crash(&dir), vec![7]);
    }
}
