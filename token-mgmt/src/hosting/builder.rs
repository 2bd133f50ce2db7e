use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::service::HostedServices;
use super::{ApplicationLifetime, Host};
use crate::BoxError;
use crate::config::{ConfigError, Configuration, environment_name_from_process};
use crate::di::{BuildError, BuildProblem, ServiceCollection};

/// What configuration closures can read about the host being built.
#[derive(Clone, Debug)]
pub struct HostBuilderContext {
    environment: String,
    configuration: Configuration,
}

impl HostBuilderContext {
    /// The environment name: set with [`HostBuilder::environment`], else `TOKEN_MGMT_ENVIRONMENT`,
    /// else `"Production"`.
    pub fn environment_name(&self) -> &str {
        &self.environment
    }

    /// The configuration loaded from `appsettings.toml`, `appsettings.{environment}.toml` and the
    /// `TOKEN_MGMT__` variables (see [`crate::config`]). Empty when it failed to load; `build()`
    /// then reports why.
    pub fn configuration(&self) -> &Configuration {
        &self.configuration
    }
}

/// Where the host's configuration is read from.
#[derive(Clone, Debug)]
struct ConfigurationSource {
    dir: PathBuf,
    /// `None`: the process's variables.
    variables: Option<Vec<(String, String)>>,
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
    configuration_source: ConfigurationSource,
    configuration_error: Option<ConfigError>,
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
    /// starts with an [`ApplicationLifetime`] registered. The configuration is loaded from the
    /// current directory and the process's variables (see [`crate::config`]).
    pub fn new() -> Self {
        let lifetime = ApplicationLifetime::new();
        let mut services = ServiceCollection::new();
        services.add_singleton(lifetime.clone());
        let mut builder = Self {
            context: HostBuilderContext {
                environment: environment_name_from_process(),
                configuration: Configuration::default(),
            },
            services,
            lifetime,
            options: HostOptions {
                shutdown_timeout: Duration::from_secs(30),
                failure_policy: WorkerFailurePolicy::default(),
                handle_signals: true,
            },
            configuration_source: ConfigurationSource {
                dir: PathBuf::from("."),
                variables: None,
            },
            configuration_error: None,
        };
        builder.reload_configuration();
        builder
    }

    /// Reads the configuration files from `dir` instead of the current directory. Call it before
    /// [`configure_services`](Self::configure_services): closures see the configuration loaded
    /// when they run.
    pub fn configuration_source(mut self, dir: impl Into<PathBuf>) -> Self {
        self.configuration_source.dir = dir.into();
        self.reload_configuration();
        self
    }

    /// Reads configuration variables from `variables` instead of the process's environment (tests,
    /// or an application that filters them); names start with `TOKEN_MGMT__`.
    pub fn configuration_variables(
        mut self,
        variables: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        self.configuration_source.variables = Some(variables.into_iter().collect());
        self.reload_configuration();
        self
    }

    fn reload_configuration(&mut self) {
        let source = &self.configuration_source;
        let environment = &self.context.environment;
        let loaded = match &source.variables {
            Some(variables) => {
                Configuration::from_parts(&source.dir, environment, variables.iter().cloned())
            }
            None => Configuration::load(&source.dir, environment),
        };
        (self.context.configuration, self.configuration_error) = match loaded {
            Ok(configuration) => (configuration, None),
            Err(error) => (Configuration::default(), Some(error)),
        };
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

    /// Sets the environment name seen by configuration closures and reloads the configuration
    /// with its `appsettings.{name}.toml`.
    pub fn environment(mut self, name: impl Into<String>) -> Self {
        self.context.environment = name.into();
        self.reload_configuration();
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
    /// A configuration that failed to load is one of the problems reported.
    pub fn build(mut self) -> Result<Host, BuildError> {
        if let Some(error) = self.configuration_error.take() {
            self.services.record_problem(BuildProblem::Configuration {
                context: "configuration".to_owned(),
                source: Box::new(error),
            });
        }
        let provider = self.services.build()?;
        let workers = provider
            .extension::<HostedServices>()
            .map(|h| h.entries.clone())
            .unwrap_or_default();
        Ok(Host::new(provider, workers, self.lifetime, self.options))
    }
}
