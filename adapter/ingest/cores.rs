//! The CPU work of a push (parsing, checking and preparing each entry) spread over the cores.
//!
//! The request's own thread starts on the items at once and helpers, one per further core,
//! join in when they wake; each takes the next item not yet taken. A woken thread starts tens
//! to hundreds of microseconds late on a virtual machine, and a task that waits for threads
//! it handed all the work to is woken late again: with a Bundle taking a few milliseconds,
//! those hand-offs cost more than the second core gave (docs/performance.md).

use crate::error::{ApiError, ApiResult};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Fewer items than this are done on the request's thread alone: a helper's start costs
/// about as much as a few items.
const ALONE: usize = 16;

/// More items than this are a long run for the request's thread ([`on_this_thread`]).
const LONG: usize = 400;

/// How long the request's thread spins for a helper's last item before it sleeps on it.
const SPIN: Duration = Duration::from_micros(200);

/// `f` of every item, in order.
pub async fn each<T, U, F>(items: Vec<T>, f: F) -> ApiResult<Vec<U>>
where
    T: Send + 'static,
    U: Send + 'static,
    F: Fn(T) -> U + Send + Sync + 'static,
{
    let long = items.len() > LONG;
    let helpers = cores().saturating_sub(1).min(items.len() / ALONE);
    if helpers == 0 {
        return Ok(on_this_thread(long, || items.into_iter().map(f).collect()));
    }
    let results = items.iter().map(|_| Mutex::new(None)).collect();
    let work = Arc::new(Work {
        items: items.into_iter().map(|t| Mutex::new(Some(t))).collect(),
        results,
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
        finished: tokio::sync::Notify::new(),
        f,
    });
    for _ in 0..helpers {
        let work = work.clone();
        // Not awaited: a helper that wakes after the last item was taken finds nothing to do.
        drop(tokio::task::spawn_blocking(move || work.run()));
    }
    on_this_thread(long, || work.run());
    work.wait().await;
    if work.failed.load(Ordering::Acquire) {
        return Err(ApiError::internal(anyhow::anyhow!(
            "a worker stopped in the middle of an item"
        )));
    }
    work.results
        .iter()
        .map(|slot| {
            slot.lock()
                .ok()
                .and_then(|mut s| s.take())
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("an item was not done")))
        })
        .collect()
}

/// `run` on the request's thread. A long run (a Bundle of thousands of entries takes a tenth
/// of a second or more) first tells the runtime, which moves the other tasks waiting for this
/// thread to another, so that the portal's requests are not held up behind it.
fn on_this_thread<R>(long: bool, run: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let shared =
        Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if long && shared {
        tokio::task::block_in_place(run)
    } else {
        run()
    }
}

/// The number of cores, read once.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The items, their results and who is at which.
struct Work<T, U, F> {
    items: Vec<Mutex<Option<T>>>,
    results: Vec<Mutex<Option<U>>>,
    /// The next item not yet taken.
    next: AtomicUsize,
    /// Items finished (or given up on by a panicking thread).
    done: AtomicUsize,
    failed: AtomicBool,
    /// Told when the last item is done.
    finished: tokio::sync::Notify,
    f: F,
}

impl<T, U, F: Fn(T) -> U> Work<T, U, F> {
    /// Takes items until none is left.
    fn run(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(slot) = self.items.get(i) else {
                return;
            };
            // Counts the item as done even if `f` panics, so that nobody waits for it.
            let _done = Done(self);
            let item = slot.lock().ok().and_then(|mut s| s.take());
            if let Some(item) = item {
                let result = (self.f)(item);
                if let Ok(mut s) = self.results[i].lock() {
                    *s = Some(result);
                }
            }
        }
    }

    /// Until every item is done: a spin while a helper finishes its last one, then a sleep.
    async fn wait(&self) {
        let all = self.items.len();
        let started = Instant::now();
        while self.done.load(Ordering::Acquire) < all {
            if started.elapsed() > SPIN {
                // `notify_one` leaves a permit when nobody waits yet: no wake-up is lost.
                self.finished.notified().await;
                continue;
            }
            std::thread::yield_now();
        }
    }
}

/// Marks one item done when dropped.
struct Done<'a, T, U, F>(&'a Work<T, U, F>);

impl<T, U, F> Drop for Done<'_, T, U, F> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.failed.store(true, Ordering::Release);
        }
        if self.0.done.fetch_add(1, Ordering::AcqRel) + 1 == self.0.items.len() {
            self.0.finished.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_item_is_done_once_and_in_order() {
        for n in [0, 1, ALONE - 1, ALONE, 3 * ALONE + 1, 1000] {
            let items: Vec<usize> = (0..n).collect();
            let out = each(items, |i| {
                // Uneven items, so that the threads overtake each other.
                std::thread::sleep(Duration::from_micros((i % 7) as u64 * 20));
                i * 2
            })
            .await
            .unwrap();
            assert_eq!(out, (0..n).map(|i| i * 2).collect::<Vec<_>>(), "{n} items");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_run_lets_the_other_tasks_of_its_thread_go_on() {
        // A task spawned on the long run's thread waits in that thread's own slot, which no
        // other thread takes from, unless the runtime is told (block_in_place).
        let ran = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicBool::new(false));
        let n = 2 * LONG;
        let (ran2, seen2) = (ran.clone(), seen.clone());
        let out = tokio::spawn(async move {
            let ran3 = ran2.clone();
            drop(tokio::spawn(
                async move { ran3.store(true, Ordering::SeqCst) },
            ));
            each((0..n).collect::<Vec<usize>>(), move |i| {
                if i == n - 1 {
                    seen2.store(ran2.load(Ordering::SeqCst), Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_micros(20));
                i
            })
            .await
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(out.len(), n);
        assert!(
            seen.load(Ordering::SeqCst),
            "the other task ran before the last item"
        );
    }

    #[tokio::test]
    async fn a_long_run_on_a_single_threaded_runtime_is_done_in_place() {
        let out = each((0..2 * LONG).collect::<Vec<usize>>(), |i| i + 1)
            .await
            .unwrap();
        assert_eq!(out, (1..=2 * LONG).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_helper_that_stops_on_an_item_fails_the_call_instead_of_hanging_it() {
        if cores() < 2 {
            eprintln!("skipped: one core, no helper");
            return;
        }
        // A helper panics on the odd items it takes; the thread that calls never does.
        let result = tokio::task::spawn(async move {
            // The items the caller does itself run in this same poll, on this thread.
            let main = std::thread::current().id();
            each((0..200).collect::<Vec<u32>>(), move |i| {
                if std::thread::current().id() != main && i % 2 == 1 {
                    panic!("item {i} broke its thread");
                }
                std::thread::sleep(Duration::from_micros(50));
                i
            })
            .await
        })
        .await;
        // Either the helper took an item and the call failed, or it never started in time.
        match result {
            Ok(Err(e)) => assert_eq!(e.status, 500),
            Ok(Ok(out)) => assert_eq!(out, (0..200).collect::<Vec<_>>()),
            Err(join) => panic!("the call itself panicked: {join}"),
        }
    }
}
