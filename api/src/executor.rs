//! The query executor: DataFusion work (the analyses, `POST /api/v1/query`, the charts' SQL, reports) runs
//! on threads of its own, at a lower OS priority than the threads serving HTTP.
//!
//! An analysis over millions of records keeps every core busy for seconds. On the HTTP runtime its tasks
//! (one per partition, each polled for milliseconds at a time) would queue in front of every other request,
//! so that even `/healthz` and answers served from the analysis cache waited behind them. On separate
//! threads, niced on Linux, the kernel's scheduler runs an HTTP worker as soon as a request arrives and the
//! queries take whatever CPU is left: a busy server stays responsive (the pattern of InfluxDB 3's
//! `DedicatedExecutor`).

use crate::error::ApiError;
use std::future::Future;
use std::thread::JoinHandle;
use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// How much lower the executor's threads are scheduled than the process (Linux `nice` increment).
const NICE_INCREMENT: i32 = 10;

/// A tokio runtime on its own threads for CPU-heavy work; see the module docs. Dropping it stops the
/// runtime (tasks still running are abandoned at their next await).
#[derive(Debug)]
pub struct Executor {
    handle: Handle,
    /// Dropping the sender ends the thread that owns the runtime; the runtime is dropped there, outside
    /// any async context.
    shutdown: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Executor {
    /// An executor with `threads` worker threads named `name-N`.
    pub fn new(name: &str, threads: usize) -> std::io::Result<Executor> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(name)
            .on_thread_start(lower_priority)
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let owner = std::thread::Builder::new().name(format!("{name}-owner")).spawn(move || {
            runtime.block_on(async {
                // An error only means the sender was dropped: also the signal to stop.
                let _ = stopped.await;
            });
            runtime.shutdown_background();
        })?;
        Ok(Executor { handle, shutdown: Some((stop, owner)) })
    }

    /// An executor with one worker per core the process may run on.
    pub fn for_queries() -> std::io::Result<Executor> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Executor::new("meshlens-query", threads)
    }

    /// Runs `work` on the executor's threads and waits for its result here. Dropping the returned future
    /// (a client that went away, a timeout) cancels the work.
    pub async fn run<F, T>(&self, work: F) -> Result<T, ApiError>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let task = self.handle.spawn(work);
        let abort = task.abort_handle();
        // Aborts the task if this future is dropped before it finished.
        struct AbortOnDrop(tokio::task::AbortHandle);
        impl Drop for AbortOnDrop {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let _guard = AbortOnDrop(abort);
        task.await.map_err(|e| ApiError::internal(format!("query task ended abnormally: {e}")))
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        if let Some((stop, owner)) = self.shutdown.take() {
            drop(stop);
            // The owner thread only calls `shutdown_background`, which does not wait for tasks.
            let _ = owner.join();
        }
    }
}

/// Lowers the calling thread's scheduling priority (Linux applies `setpriority` to one thread when given
/// its thread id). Failing to is harmless: the work still runs, only at normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        let current = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
        if let Err(e) = rustix::process::setpriority_process(Some(tid), current + NICE_INCREMENT) {
            tracing::debug!(error = %e, "could not lower the query threads' priority");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn work_runs_on_the_executor_threads_and_returns_its_result() {
        let executor = Executor::new("test-exec", 1).unwrap();
        let name = executor.run(async { std::thread::current().name().map(str::to_owned) }).await.unwrap();
        assert_eq!(name.as_deref(), Some("test-exec"));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn executor_threads_run_at_a_lower_priority() {
        let executor = Executor::new("test-nice", 1).unwrap();
        let own = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        let theirs = executor
            .run(async { rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap() })
            .await
            .unwrap();
        assert_eq!(theirs, (own + NICE_INCREMENT).min(19));
    }

    #[tokio::test]
    async fn dropping_the_caller_cancels_the_work() {
        let executor = Executor::new("test-cancel", 1).unwrap();
        let (started, wait_started) = oneshot::channel();
        let (dropped, was_dropped) = oneshot::channel::<()>();
        struct Flag(Option<oneshot::Sender<()>>);
        impl Drop for Flag {
            fn drop(&mut self) {
                if let Some(tx) = self.0.take() {
                    let _ = tx.send(());
                }
            }
        }
        let caller = executor.run(async move {
            let _flag = Flag(Some(dropped));
            let _ = started.send(());
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        tokio::select! {
            _ = caller => panic!("the work cannot finish"),
            _ = wait_started => {}
        }
        // The caller future is gone now; the task must be aborted, dropping its state.
        tokio::time::timeout(Duration::from_secs(10), was_dropped).await.unwrap().unwrap();
    }
}
