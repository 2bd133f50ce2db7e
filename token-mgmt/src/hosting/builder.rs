use std::fmt;
use std::time::Duration;

use super::service::HostedServices;
use super::{ApplicationLifetime, Host};
use crate::BoxError;
use crate::di::{BuildError, ServiceCollection};

/// What configuration closures can read about the host being built.
#[derive(Clone, Debug)]
pub struct HostBuilderContext {
    environment: String,
}

impl HostBuilderContext {
    /// The environment name (`"Production"` unless set with [`HostBuilder::environment`]).
    pub fn environment_name(&self) -> &str {
        &self.environment
    }
}

/// What the host does when a worker returns an error or panics (like .NET's
/// `BackgroundServiceExceptionBehavior`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerFailurePolicy {
    /// Log the failure and stop the host; `run()` returns the failure naming the worker (default).
    #[default]
    StopHost,
    /// Log the failure and keep the other workers running.
    Ignore,
}

#[derive(Clone, Debug)]
pub(crate) struct HostOptions {
    pub(crate) shutdown_timeout: Duration,
    pub(crate) failure_policy: WorkerFailurePolicy,
    pub(crate) handle_signals: bool,
}

/// Builds a [`Host`]: configure services, then [`build`](HostBuilder::build).
pub struct HostBuilder {
    context: HostBuilderContext,
    services: ServiceCollection,
    lifetime: ApplicationLifetime,
    options: HostOptions,
}

impl fmt::Debug for HostBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostBuilder")
            .field("context", &self.context)
            .field("services", &self.services)
            .field("options", &self.options)
            .finish()
    }
}

impl Default for HostBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl HostBuilder {
    /// A builder with no logging set up ([`Host::create_default_builder`] adds it). The container
    /// starts with an [`ApplicationLifetime`] registered.
    pub fn new() -> Self {
        let lifetime = ApplicationLifetime::new();
        let mut services = ServiceCollection::new();
        services.add_singleton(lifetime.clone());
        Self {
            context: HostBuilderContext {
                environment: "Production".to_owned(),
            },
            services,
            lifetime,
            options: HostOptions {
                shutdown_timeout: Duration::from_secs(30),
                failure_policy: WorkerFailurePolicy::default(),
                handle_signals: true,
            },
        }
    }

    /// Adds services. Callable several times; closures run in order. An error returned by the
    /// closure is reported by [`build`](Self::build), with every other problem.
    #[doc(alias = "ConfigureServices")]
    pub fn configure_services<F>(mut self, configure: F) -> Self
    where
        F: FnOnce(&HostBuilderContext, &mut ServiceCollection) -> Result<(), BoxError>,
    {
        if let Err(error) = configure(&self.context, &mut self.services) {
            self.services.record_error("configure_services", error);
        }
        self
    }

    /// Sets the environment name seen by configuration closures.
    pub fn environment(mut self, name: impl Into<String>) -> Self {
        self.context.environment = name.into();
        self
    }

    /// How long the host waits for workers after cancelling their stopping token (default 30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.options.shutdown_timeout = timeout;
        self
    }

    /// What a worker error or panic does (default [`WorkerFailurePolicy::StopHost`]).
    pub fn worker_failure_policy(mut self, policy: WorkerFailurePolicy) -> Self {
        self.options.failure_policy = policy;
        self
    }

    /// Whether the host stops on Ctrl-C and (on Unix) SIGTERM (default `true`).
    pub fn handle_signals(mut self, enabled: bool) -> Self {
        self.options.handle_signals = enabled;
        self
    }

    /// Validates every registration and builds the host; see [`ServiceCollection::build`].
    pub fn build(self) -> Result<Host, BuildError> {
        let provider = self.services.build()?;
        let workers = provider
            .extension::<HostedServices>()
            .map(|h| h.entries.clone())
            .unwrap_or_default();
        Ok(Host::new(provider, workers, self.lifetime, self.options))
    }
}
