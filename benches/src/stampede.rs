//! Stampede harness: `callers` tasks are spawned, parked on a gate, released together, and timed
//! until the last one has its result.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::BoxError;

/// What a stampede measured.
#[derive(Clone, Debug)]
pub struct StampedeReport {
    /// Callers released.
    pub callers: usize,
    /// Callers that got `Ok`.
    pub ok: usize,
    /// First error seen, if any.
    pub first_error: Option<String>,
    /// From the release of the gate until every caller has its result.
    pub all_done: Duration,
}

/// Releases `callers` concurrent calls of `call` at once (on the current multi-thread tokio
/// runtime) and waits for all of them.
pub async fn run_callers<F, Fut, T>(callers: usize, call: F) -> StampedeReport
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, BoxError>> + Send + 'static,
    T: Send + 'static,
{
    let (go, gate) = tokio::sync::watch::channel(false);
    let parked = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(callers);
    for _ in 0..callers {
        let mut gate = gate.clone();
        let parked = Arc::clone(&parked);
        let future = call();
        tasks.push(tokio::spawn(async move {
            parked.fetch_add(1, Ordering::Release);
            // The sender outlives every task: `wait_for` only fails if it is dropped.
            let _ = gate.wait_for(|open| *open).await;
            future.await.map(drop).map_err(|e| e.to_string())
        }));
    }
    while parked.load(Ordering::Acquire) < callers {
        tokio::task::yield_now().await;
    }
    let start = Instant::now();
    go.send_replace(true);
    let mut ok = 0;
    let mut first_error = None;
    for task in tasks {
        match task.await.expect("stampede caller panicked") {
            Ok(()) => ok += 1,
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    StampedeReport {
        callers,
        ok,
        first_error,
        all_done: start.elapsed(),
    }
}

/// Times one call of `call`.
pub async fn time_one<Fut, T>(call: Fut) -> Result<Duration, BoxError>
where
    Fut: Future<Output = Result<T, BoxError>>,
{
    let start = Instant::now();
    call.await?;
    Ok(start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_caller_runs_once_after_release() {
        let runs = Arc::new(AtomicUsize::new(0));
        let report = run_callers(500, || {
            let runs = Arc::clone(&runs);
            async move {
                if runs.fetch_add(1, Ordering::Relaxed) == 0 {
                    return Err::<(), BoxError>("first fails".into());
                }
                Ok(())
            }
        })
        .await;
        assert_eq!(runs.load(Ordering::Relaxed), 500);
        assert_eq!(report.ok, 499);
        assert_eq!(report.first_error.as_deref(), Some("first fails"));
    }
}
