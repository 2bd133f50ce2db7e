//! A closed-loop load driver: `concurrency` tasks each send one request after another until a
//! request count or a duration is reached; every latency is recorded.
//!
//! Latencies go into a `Vec<u64>` (nanoseconds) that is sorted once at the end: a run records at
//! most a few hundred thousand samples, sorting them takes milliseconds, and the percentiles are
//! exact. An HDR histogram (`hdrhistogram`) would only pay off for unbounded or streamed runs, so
//! the driver does without the extra dependency.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::BoxError;

/// A boxed request future, so different subjects fit one type.
pub type RequestFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

/// Makes one authorized request and reads its body; `Err` for a transport error or a non-2xx.
pub type RequestFn = Arc<dyn Fn() -> RequestFuture + Send + Sync>;

/// Wraps an async closure as a [`RequestFn`].
pub fn request_fn<F, Fut>(f: F) -> RequestFn
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    Arc::new(move || Box::pin(f()) as RequestFuture)
}

/// When a run stops.
#[derive(Clone, Copy, Debug)]
pub enum Limit {
    /// After this many requests in total.
    Requests(u64),
    /// After this long (requests in flight at the deadline complete and are counted).
    Duration(Duration),
}

/// What one run measured.
#[derive(Clone, Debug)]
pub struct LoadReport {
    /// Concurrency of the run.
    pub concurrency: usize,
    /// Successful requests.
    pub requests: u64,
    /// Failed requests (not in the latencies).
    pub errors: u64,
    /// First error seen, for diagnostics.
    pub first_error: Option<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Sorted latencies of successful requests, in nanoseconds.
    latencies_ns: Vec<u64>,
}

impl LoadReport {
    /// Successful requests per second.
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// Latency at quantile `q` (0.0..=1.0), nearest-rank.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies_ns.is_empty() {
            return Duration::ZERO;
        }
        let rank = (q.clamp(0.0, 1.0) * self.latencies_ns.len() as f64).ceil() as usize;
        let index = rank.saturating_sub(1).min(self.latencies_ns.len() - 1);
        Duration::from_nanos(self.latencies_ns[index])
    }

    /// Median latency.
    pub fn p50(&self) -> Duration {
        self.quantile(0.50)
    }

    /// 99th percentile latency.
    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }
}

/// Runs `request` at `concurrency` until `limit`, on the current tokio runtime.
pub async fn run_load(concurrency: usize, limit: Limit, request: RequestFn) -> LoadReport {
    let concurrency = concurrency.max(1);
    let issued = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let deadline = match limit {
        Limit::Duration(d) => Some(start + d),
        Limit::Requests(_) => None,
    };
    let max_requests = match limit {
        Limit::Requests(n) => n,
        Limit::Duration(_) => u64::MAX,
    };

    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let request = Arc::clone(&request);
        let issued = Arc::clone(&issued);
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(4096);
            let mut errors = 0u64;
            let mut first_error = None;
            loop {
                if stop.load(Ordering::Relaxed)
                    || issued.fetch_add(1, Ordering::Relaxed) >= max_requests
                {
                    break;
                }
                let t0 = Instant::now();
                match request().await {
                    Ok(()) => latencies.push(t0.elapsed().as_nanos() as u64),
                    Err(error) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| error.to_string());
                    }
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    stop.store(true, Ordering::Relaxed);
                    break;
                }
            }
            (latencies, errors, first_error)
        }));
    }

    let mut latencies_ns = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let (l, e, f) = task.await.expect("load task panicked");
        latencies_ns.extend(l);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let elapsed = start.elapsed();
    latencies_ns.sort_unstable();
    LoadReport {
        concurrency,
        requests: latencies_ns.len() as u64,
        errors,
        first_error,
        elapsed,
        latencies_ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_requests_errors_and_quantiles() {
        let calls = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&calls);
        let request = request_fn(move || {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            async move {
                if n % 10 == 9 {
                    Err("every tenth fails".into())
                } else {
                    Ok(())
                }
            }
        });
        let report = run_load(4, Limit::Requests(100), request).await;
        assert_eq!(calls.load(Ordering::Relaxed), 100);
        assert_eq!(report.requests, 90);
        assert_eq!(report.errors, 10);
        assert_eq!(report.first_error.as_deref(), Some("every tenth fails"));
        assert!(report.p50() <= report.p99());
        assert!(report.rps() > 0.0);
    }

    #[test]
    fn nearest_rank_quantiles() {
        let report = LoadReport {
            concurrency: 1,
            requests: 100,
            errors: 0,
            first_error: None,
            elapsed: Duration::from_secs(1),
            latencies_ns: (1..=100).collect(),
        };
        assert_eq!(report.p50(), Duration::from_nanos(50));
        assert_eq!(report.p99(), Duration::from_nanos(99));
        assert_eq!(report.quantile(1.0), Duration::from_nanos(100));
        assert_eq!(report.quantile(0.0), Duration::from_nanos(1));
    }

    #[tokio::test]
    async fn duration_limit_stops_the_run() {
        let request = request_fn(|| async {
            tokio::task::yield_now().await;
            Ok(())
        });
        let report = run_load(2, Limit::Duration(Duration::from_millis(5)), request).await;
        assert!(
            report.requests >= 2,
            "each task completes the request it started"
        );
        assert!(report.elapsed >= Duration::from_millis(5));
        assert_eq!(report.errors, 0);
    }
}
