//! The generic host: running, stopping and failing workers (paused clock, no real sleeps).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use token_mgmt::di::{BuildProblem, ResolveError};
use token_mgmt::hosting::{RunningHost, WorkerFailurePolicy};
use token_mgmt::prelude::*;
use tokio::sync::{Barrier, Notify};
use tokio::time::Instant;

/// Guards every test: with the paused clock this fires as soon as the test is stuck.
const STUCK: Duration = Duration::from_secs(3600);

/// Shared test state, injected into workers by clone.
#[derive(Clone)]
struct Probe {
    barrier: Arc<Barrier>,
    started: Arc<Notify>,
    cancelled_a: Arc<AtomicBool>,
    cancelled_b: Arc<AtomicBool>,
}
token_mgmt::inject_by_clone!(Probe);

impl Probe {
    fn new(parties: usize) -> Self {
        Self {
            barrier: Arc::new(Barrier::new(parties)),
            started: Arc::new(Notify::new()),
            cancelled_a: Arc::default(),
            cancelled_b: Arc::default(),
        }
    }
}

#[derive(Worker)]
struct WorkerA {
    probe: Probe,
}

impl BackgroundService for WorkerA {
    async fn execute(&self, stopping: CancellationToken) -> Result<(), WorkerError> {
        self.probe.barrier.wait().await;
        stopping.cancelled().await;
        self.probe.cancelled_a.store(true, Ordering::SeqCst);
        Ok(())
    }
}

#[derive(Worker)]
struct WorkerB {
    probe: Probe,
}

impl BackgroundService for WorkerB {
    async fn execute(&self, stopping: CancellationToken) -> Result<(), WorkerError> {
        self.probe.barrier.wait().await;
        stopping.cancelled().await;
        self.probe.cancelled_b.store(true, Ordering::SeqCst);
        Ok(())
    }
}

fn start(probe: &Probe, configure: impl FnOnce(&mut ServiceCollection)) -> RunningHost {
    start_with(Host::builder(), probe, configure)
}

fn start_with(
    builder: HostBuilder,
    probe: &Probe,
    configure: impl FnOnce(&mut ServiceCollection),
) -> RunningHost {
    builder
        .configure_services(|_ctx, services| {
            services.add_singleton(probe.clone());
            configure(services);
            Ok(())
        })
        .build()
        .expect("valid configuration")
        .start()
        .expect("host starts")
}

#[tokio::test(start_paused = true)]
async fn two_workers_run_concurrently_and_stop_cancels_both() {
    let probe = Probe::new(3);
    let host = start(&probe, |services| {
        services
            .add_hosted_service::<WorkerA>()
            .add_hosted_service::<WorkerB>();
    });
    // Both workers and the test meet at the barrier: only possible if both run at once.
    tokio::time::timeout(STUCK, probe.barrier.wait())
        .await
        .expect("both workers started");
    assert!(!probe.cancelled_a.load(Ordering::SeqCst));
    assert!(!probe.cancelled_b.load(Ordering::SeqCst));

    host.stop();
    let result = tokio::time::timeout(STUCK, host.wait())
        .await
        .expect("host stopped");
    assert!(result.is_ok(), "{result:?}");
    assert!(probe.cancelled_a.load(Ordering::SeqCst));
    assert!(probe.cancelled_b.load(Ordering::SeqCst));
}

#[derive(Worker)]
struct Stubborn {
    probe: Probe,
}

impl BackgroundService for Stubborn {
    async fn execute(&self, _stopping: CancellationToken) -> Result<(), WorkerError> {
        self.probe.started.notify_one();
        loop {
            tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_worker_ignoring_cancellation_is_reported_after_the_default_timeout() {
    let probe = Probe::new(1);
    let host = start(&probe, |services| {
        services.add_hosted_service::<Stubborn>();
    });
    probe.started.notified().await;
    let stopping_at = Instant::now();
    let result = tokio::time::timeout(STUCK, host.shutdown())
        .await
        .expect("shutdown returned");
    let elapsed = stopping_at.elapsed();
    match result {
        Err(HostError::ShutdownTimeout { timeout, workers }) => {
            assert_eq!(timeout, Duration::from_secs(30));
            assert_eq!(workers.len(), 1);
            assert!(workers[0].ends_with("::Stubborn"), "{workers:?}");
        }
        other => panic!("expected a shutdown timeout, got {other:?}"),
    }
    assert!(elapsed >= Duration::from_secs(30), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(31), "{elapsed:?}");
}

#[tokio::test(start_paused = true)]
async fn the_shutdown_timeout_is_configurable() {
    let probe = Probe::new(1);
    let builder = Host::builder().shutdown_timeout(Duration::from_secs(5));
    let host = start_with(builder, &probe, |services| {
        services.add_hosted_service::<Stubborn>();
    });
    probe.started.notified().await;
    let stopping_at = Instant::now();
    let error = host.shutdown().await.unwrap_err();
    assert!(
        matches!(error, HostError::ShutdownTimeout { timeout, .. } if timeout == Duration::from_secs(5))
    );
    assert_eq!(stopping_at.elapsed().as_secs(), 5);
    assert!(error.to_string().contains("Stubborn"), "{error}");
}

#[derive(Worker)]
struct Failing {
    probe: Probe,
}

impl BackgroundService for Failing {
    async fn execute(&self, _stopping: CancellationToken) -> Result<(), WorkerError> {
        self.probe.barrier.wait().await;
        let _port: u16 = "not a number".parse()?;
        Ok(())
    }
}

#[derive(Worker)]
struct Panicking {
    probe: Probe,
}

impl BackgroundService for Panicking {
    async fn execute(&self, _stopping: CancellationToken) -> Result<(), WorkerError> {
        self.probe.barrier.wait().await;
        panic!("the worker gave up");
    }
}

#[tokio::test(start_paused = true)]
async fn a_worker_error_stops_the_host_and_names_the_worker() {
    let probe = Probe::new(2);
    let host = start(&probe, |services| {
        services
            .add_hosted_service::<Failing>()
            .add_hosted_service::<WorkerA>();
    });
    let result = tokio::time::timeout(STUCK, host.wait())
        .await
        .expect("the failure stopped the host");
    let error = result.unwrap_err();
    match &error {
        HostError::WorkerFailed { worker, error } => {
            assert!(worker.ends_with("::Failing"), "{worker}");
            assert!(error.to_string().contains("invalid digit"), "{error}");
        }
        other => panic!("expected a worker failure, got {other:?}"),
    }
    // What failed in the message, why in `source()`: the worker's own error, not repeated.
    assert_eq!(error.to_string(), "worker `hosting::Failing` failed");
    let cause = std::error::Error::source(&error).expect("the worker's error");
    assert_eq!(cause.to_string(), "invalid digit found in string");
    assert_eq!(
        format!("{error:?}"),
        "worker `hosting::Failing` failed\n\nCaused by:\n    invalid digit found in string"
    );
    assert!(
        probe.cancelled_a.load(Ordering::SeqCst),
        "the other worker was cancelled"
    );
}

#[tokio::test(start_paused = true)]
async fn a_worker_panic_stops_the_host_and_names_the_worker() {
    let probe = Probe::new(2);
    let host = start(&probe, |services| {
        services
            .add_hosted_service::<Panicking>()
            .add_hosted_service::<WorkerA>();
    });
    let result = tokio::time::timeout(STUCK, host.wait())
        .await
        .expect("the panic stopped the host");
    match result {
        Err(HostError::WorkerPanicked { worker, message }) => {
            assert!(worker.ends_with("::Panicking"), "{worker}");
            assert_eq!(message, "the worker gave up");
        }
        other => panic!("expected a worker panic, got {other:?}"),
    }
    assert!(
        probe.cancelled_a.load(Ordering::SeqCst),
        "the other worker was cancelled"
    );
}

#[tokio::test(start_paused = true)]
async fn the_ignore_policy_keeps_the_host_running() {
    let probe = Probe::new(2);
    let builder = Host::builder().worker_failure_policy(WorkerFailurePolicy::Ignore);
    let host = start_with(builder, &probe, |services| {
        services
            .add_hosted_service::<Failing>()
            .add_hosted_service::<WorkerA>();
    });
    // Let the failure happen and an hour pass: the host keeps running.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(
        !probe.cancelled_a.load(Ordering::SeqCst),
        "WorkerA still runs"
    );
    assert!(!host.lifetime().is_stop_requested());
    let result = host.shutdown().await;
    assert!(result.is_ok(), "{result:?}");
    assert!(probe.cancelled_a.load(Ordering::SeqCst));
}

#[derive(Worker)]
struct OneShot {
    lifetime: ApplicationLifetime,
    probe: Probe,
}

impl BackgroundService for OneShot {
    async fn execute(&self, stopping: CancellationToken) -> Result<(), WorkerError> {
        self.probe.barrier.wait().await;
        self.lifetime.stop_application();
        stopping.cancelled().await;
        self.probe.cancelled_b.store(true, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_stop_request_from_a_worker_ends_run() {
    let probe = Probe::new(2);
    let host = Host::builder()
        .configure_services(|_ctx, services| {
            services.add_singleton(probe.clone());
            Ok(())
        })
        .configure_services(|_ctx, services| {
            services
                .add_hosted_service::<OneShot>()
                .add_hosted_service::<WorkerA>();
            Ok(())
        })
        .build()
        .unwrap();
    let stopped = host.lifetime().application_stopped();
    let result = tokio::time::timeout(STUCK, host.run())
        .await
        .expect("run() returned");
    assert!(result.is_ok(), "{result:?}");
    assert!(probe.cancelled_a.load(Ordering::SeqCst));
    assert!(probe.cancelled_b.load(Ordering::SeqCst));
    assert!(stopped.is_cancelled());
}

#[derive(Worker)]
#[allow(dead_code)]
struct NeedsTwo {
    first: Arc<String>,
    second: Arc<Vec<u8>>,
    probe: Probe,
}

impl BackgroundService for NeedsTwo {
    async fn execute(&self, _stopping: CancellationToken) -> Result<(), WorkerError> {
        Ok(())
    }
}

#[test]
fn build_reports_both_missing_dependencies_of_a_worker() {
    let error = Host::builder()
        .configure_services(|_ctx, services| {
            services.add_singleton(Probe::new(1));
            services.add_hosted_service::<NeedsTwo>();
            Ok(())
        })
        .build()
        .unwrap_err();
    let missing: Vec<_> = error
        .problems()
        .iter()
        .filter_map(|p| match p {
            BuildProblem::MissingDependency {
                service,
                required_by,
                ..
            } => Some((*service, required_by.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(missing.len(), 2, "{error}");
    assert!(missing.iter().all(|(_, by)| by.ends_with("::NeedsTwo")));
    assert!(missing.iter().any(|(s, _)| s.ends_with("String")));
    assert!(missing.iter().any(|(s, _)| s.contains("Vec<u8>")));
}

#[test]
fn configuration_errors_and_duplicate_workers_are_reported_by_build() {
    let error = Host::builder()
        .configure_services(|_ctx, services| {
            services.add_singleton(Probe::new(1));
            services
                .add_hosted_service::<WorkerA>()
                .add_hosted_service::<WorkerA>();
            let _: u16 = "70000".parse()?;
            Ok(())
        })
        .build()
        .unwrap_err();
    let problems = error.problems();
    assert_eq!(problems.len(), 2, "{error}");
    assert!(problems.iter().any(|p| matches!(p, BuildProblem::Duplicate { service, what } if service.ends_with("::WorkerA") && *what == "hosted service")));
    assert!(problems.iter().any(|p| matches!(p, BuildProblem::Configuration { context, .. } if context == "configure_services")));
    let host_error = HostError::from(error);
    assert!(host_error.to_string().contains("WorkerA"), "{host_error}");
    // `main() -> Result<(), HostError>` prints the `Debug`: sentences, with the closure's cause.
    let printed = format!("{host_error:?}");
    assert!(
        printed.starts_with("invalid service configuration (2 problems):"),
        "{printed}"
    );
    assert!(
        printed.contains("configuration failed in configure_services: number too large"),
        "{printed}"
    );
    assert!(
        !printed.contains("BuildError {") && !printed.contains("Build("),
        "{printed}"
    );
}

/// An error whose `Debug` differs from its `Display`, like one that carries a backtrace.
#[derive(Debug, thiserror::Error)]
#[error("token service unreachable")]
struct WithBacktrace {
    backtrace: &'static str,
}

#[derive(Debug, thiserror::Error)]
#[error("refreshing the token failed")]
struct Refresh(#[source] WithBacktrace);

#[test]
fn host_error_debug_prints_messages_not_structures_or_backtraces() {
    let error = HostError::WorkerFailed {
        worker: "my::Worker",
        error: WorkerError::from(WithBacktrace {
            backtrace: "0: std::backtrace::Backtrace::capture",
        }),
    };
    let printed = format!("{error:?}");
    assert_eq!(
        printed,
        "worker `my::Worker` failed\n\nCaused by:\n    token service unreachable"
    );

    // A worker error shows its own message, its causes with `{:#}`, and sentences with `{:?}`.
    let worker_error = WorkerError::from(Refresh(WithBacktrace {
        backtrace: "0: frames",
    }));
    assert_eq!(worker_error.to_string(), "refreshing the token failed");
    assert_eq!(
        format!("{worker_error:#}"),
        "refreshing the token failed: token service unreachable"
    );
    assert!(!format!("{worker_error:?}").contains("frames"));
    assert!(worker_error.source().is_some(), "derefs to the inner error");
}

#[derive(Worker)]
struct BrokenDependency {
    _value: Arc<u32>,
}

impl BackgroundService for BrokenDependency {
    async fn execute(&self, _stopping: CancellationToken) -> Result<(), WorkerError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_cannot_be_constructed_fails_start() {
    let host = Host::builder()
        .configure_services(|_ctx, services| {
            services.add_singleton_factory::<u32, _>(|_| Err("no value today".into()));
            services.add_hosted_service::<BrokenDependency>();
            Ok(())
        })
        .build()
        .unwrap();
    let error = host.run().await.unwrap_err();
    match &error {
        HostError::Construct { worker, error } => {
            assert!(worker.ends_with("::BrokenDependency"));
            assert!(
                matches!(
                    &error,
                    ResolveError::Field {
                        field: "_value",
                        ..
                    }
                ),
                "{error:?}"
            );
        }
        other => panic!("expected a construction error, got {other:?}"),
    }
    // Each level says what failed; its source says why. `Debug` (what `main` prints) shows them all.
    assert_eq!(
        format!("{error:?}"),
        "cannot construct worker `hosting::BrokenDependency`\n\
         \n\
         Caused by:\n    \
         0: cannot inject field `_value` of `hosting::BrokenDependency`\n    \
         1: the factory for `u32` failed\n    \
         2: no value today"
    );
    assert_eq!(
        token_mgmt::hosting::error_chain(&error).to_string(),
        "cannot construct worker `hosting::BrokenDependency`: \
         cannot inject field `_value` of `hosting::BrokenDependency`: \
         the factory for `u32` failed: no value today"
    );
}

#[test]
fn start_outside_a_runtime_is_an_error() {
    let host = Host::builder().build().unwrap();
    assert!(matches!(host.start(), Err(HostError::NoRuntime)));
}

#[tokio::test(start_paused = true)]
async fn the_default_builder_tolerates_an_existing_subscriber() {
    // A subscriber is already installed: the default builder leaves it in place (and keeps the
    // other tests' output quiet), and calling it twice does not panic.
    let _ = tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default());
    let _ = Host::create_default_builder();
    let host = Host::create_default_builder()
        .handle_signals(false)
        .build()
        .unwrap();
    let running = host.start().unwrap();
    running.stop();
    assert!(running.wait().await.is_ok());
}
