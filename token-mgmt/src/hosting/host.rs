use std::any::Any;
use std::fmt;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use tokio::task::{JoinError, JoinHandle, JoinSet};

use super::builder::{HostOptions, WorkerFailurePolicy};
use super::service::HostedEntry;
use super::{ApplicationLifetime, HostBuilder, HostError, WorkerError, error_chain};
use crate::di::ServiceProvider;

/// A built application: the service provider and its hosted workers.
pub struct Host {
    provider: ServiceProvider,
    workers: Vec<HostedEntry>,
    lifetime: ApplicationLifetime,
    options: HostOptions,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field(
                "workers",
                &self.workers.iter().map(|w| w.name).collect::<Vec<_>>(),
            )
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Host {
    pub(crate) fn new(
        provider: ServiceProvider,
        workers: Vec<HostedEntry>,
        lifetime: ApplicationLifetime,
        options: HostOptions,
    ) -> Self {
        Self {
            provider,
            workers,
            lifetime,
            options,
        }
    }

    /// A builder that, with the `logging` feature (on by default), also installs a `tracing` fmt
    /// subscriber writing to stdout: filtered by `RUST_LOG` (default level `info`), coloured only
    /// when stdout is a terminal and `NO_COLOR` is unset. A global subscriber that is already set
    /// is left in place. Without the feature this is [`Host::builder`].
    #[doc(alias = "CreateDefaultBuilder")]
    pub fn create_default_builder() -> HostBuilder {
        #[cfg(feature = "logging")]
        install_default_subscriber();
        HostBuilder::new()
    }

    /// A builder that leaves logging alone.
    pub fn builder() -> HostBuilder {
        HostBuilder::new()
    }

    /// The service provider.
    pub fn services(&self) -> &ServiceProvider {
        &self.provider
    }

    /// The application lifetime (also injectable into workers).
    pub fn lifetime(&self) -> &ApplicationLifetime {
        &self.lifetime
    }

    /// Starts every hosted worker, runs until Ctrl-C / SIGTERM (unless disabled), a stop request
    /// ([`ApplicationLifetime::stop_application`]) or a worker failure, then shuts down: cancels the
    /// workers' stopping token and waits for them up to the shutdown timeout.
    ///
    /// Returns the first worker failure (under [`WorkerFailurePolicy::StopHost`]) or
    /// [`HostError::ShutdownTimeout`] naming the workers that did not stop in time.
    #[doc(alias = "RunAsync")]
    pub async fn run(self) -> Result<(), HostError> {
        self.start()?.wait().await
    }

    /// Constructs and spawns every hosted worker on the current tokio runtime and returns a handle to
    /// stop it and wait for it. Nothing is spawned if a worker cannot be constructed.
    pub fn start(self) -> Result<RunningHost, HostError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| HostError::NoRuntime)?;
        let mut futures = Vec::with_capacity(self.workers.len());
        for entry in &self.workers {
            let token = self.lifetime.stopping_token().child_token();
            let future = (entry.start)(&self.provider, token).map_err(|error| {
                tracing::error!(worker = entry.name, error = %error_chain(&error), "cannot construct worker");
                HostError::Construct {
                    worker: entry.name,
                    error,
                }
            })?;
            futures.push(future);
        }

        let mut tasks = JoinSet::new();
        let mut running = Vec::with_capacity(futures.len());
        for (index, (entry, future)) in self.workers.iter().zip(futures).enumerate() {
            tracing::info!(worker = entry.name, "starting worker");
            running.push(Some(entry.name));
            tasks.spawn_on(
                async move { (index, AssertUnwindSafe(future).catch_unwind().await) },
                &runtime,
            );
        }

        let signals = self
            .options
            .handle_signals
            .then(|| runtime.spawn(listen_for_signals(self.lifetime.clone())));

        Ok(RunningHost {
            provider: self.provider,
            lifetime: self.lifetime,
            options: self.options,
            tasks,
            running,
            signals,
        })
    }
}

/// A started host. [`stop`](RunningHost::stop) requests shutdown; [`wait`](RunningHost::wait) drives
/// the shutdown and returns the outcome. Dropping it cancels the workers' stopping token and aborts
/// their tasks.
pub struct RunningHost {
    provider: ServiceProvider,
    lifetime: ApplicationLifetime,
    options: HostOptions,
    tasks: JoinSet<WorkerExit>,
    running: Vec<Option<&'static str>>,
    signals: Option<JoinHandle<()>>,
}

impl fmt::Debug for RunningHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningHost")
            .field(
                "running",
                &self.running.iter().flatten().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// A worker task's output: its index and its result, or its panic payload.
type WorkerExit = (usize, Result<Result<(), WorkerError>, Box<dyn Any + Send>>);
type Joined = Result<WorkerExit, JoinError>;

impl RunningHost {
    /// Requests a graceful shutdown (same as [`ApplicationLifetime::stop_application`]).
    pub fn stop(&self) {
        self.lifetime.stop_application();
    }

    /// The application lifetime.
    pub fn lifetime(&self) -> &ApplicationLifetime {
        &self.lifetime
    }

    /// The service provider.
    pub fn services(&self) -> &ServiceProvider {
        &self.provider
    }

    /// Requests shutdown and waits for it: `stop()` then `wait()`.
    pub async fn shutdown(self) -> Result<(), HostError> {
        self.stop();
        self.wait().await
    }

    /// Waits until shutdown is requested (signal, [`stop`](Self::stop), the application lifetime) or a
    /// worker fails (under [`WorkerFailurePolicy::StopHost`]), then cancels the workers' stopping token
    /// and waits for them up to the shutdown timeout.
    pub async fn wait(mut self) -> Result<(), HostError> {
        let stop_requested = self.lifetime.stop_requested_token().clone();
        let mut failure = None;
        loop {
            tokio::select! {
                _ = stop_requested.cancelled() => break,
                Some(joined) = self.tasks.join_next() => {
                    if let Some(error) = self.record_exit(joined) {
                        if self.options.failure_policy == WorkerFailurePolicy::StopHost {
                            failure = Some(error);
                            break;
                        }
                    }
                }
            }
        }

        tracing::info!("application is shutting down");
        self.lifetime.stopping_token().cancel();
        let timeout = self.options.shutdown_timeout;
        let drained = tokio::time::timeout(timeout, async {
            while let Some(joined) = self.tasks.join_next().await {
                if let Some(error) = self.record_exit(joined) {
                    if self.options.failure_policy == WorkerFailurePolicy::StopHost
                        && failure.is_none()
                    {
                        failure = Some(error);
                    }
                }
            }
        })
        .await;

        let mut result = match failure {
            Some(error) => Err(error),
            None => Ok(()),
        };
        if drained.is_err() {
            let workers: Vec<&'static str> = self.running.iter().flatten().copied().collect();
            tracing::error!(
                ?timeout,
                ?workers,
                "workers did not stop within the shutdown timeout; aborting them"
            );
            self.tasks.abort_all();
            if result.is_ok() {
                result = Err(HostError::ShutdownTimeout { timeout, workers });
            }
        }
        self.lifetime.stopped_token().cancel();
        result
    }

    /// Logs a finished worker; returns its failure, if it failed.
    fn record_exit(&mut self, joined: Joined) -> Option<HostError> {
        let (index, outcome) = match joined {
            Ok(done) => done,
            Err(error) => {
                tracing::warn!(%error, "a worker task was cancelled");
                return None;
            }
        };
        let worker = self
            .running
            .get_mut(index)
            .and_then(Option::take)
            .unwrap_or("<unknown>");
        match outcome {
            Ok(Ok(())) => {
                tracing::info!(worker, "worker completed");
                None
            }
            Ok(Err(error)) => {
                tracing::error!(worker, error = %error_chain(&*error), "worker failed");
                Some(HostError::WorkerFailed { worker, error })
            }
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                tracing::error!(worker, panic = %message, "worker panicked");
                Some(HostError::WorkerPanicked { worker, message })
            }
        }
    }
}

impl Drop for RunningHost {
    fn drop(&mut self) {
        self.lifetime.stopping_token().cancel();
        if let Some(signals) = self.signals.take() {
            signals.abort();
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}

async fn listen_for_signals(lifetime: ApplicationLifetime) {
    let ctrl_c = async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => tracing::info!("Ctrl-C received"),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
                tracing::info!("SIGTERM received");
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    lifetime.stop_application();
}

/// The subscriber of [`Host::create_default_builder`].
#[cfg(feature = "logging")]
fn install_default_subscriber() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::LevelFilter;

    // The application's (or a test's) own subscriber wins.
    if tracing::dispatcher::has_been_set() {
        return;
    }
    // Lossy: a malformed directive in `RUST_LOG` is skipped, the others still apply.
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    // Escape codes would litter log files, pipes and journald.
    let ansi = std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    // Another thread may have set one since the check above: then it wins too.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .try_init();
}
