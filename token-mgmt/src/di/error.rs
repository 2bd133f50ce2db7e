use std::fmt;

use crate::BoxError;
use crate::hosting::error_chain;

/// One problem found by [`ServiceCollection::build`](super::ServiceCollection::build).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildProblem {
    /// A registered factory or a hosted service needs a service that is not registered.
    #[error("`{required_by}` needs `{service}`{}, which is not registered", name_suffix(.name))]
    MissingDependency {
        /// Type name of the missing service.
        service: &'static str,
        /// The registration that needs it (a service or worker type name).
        required_by: String,
        /// The name attached to the dependency (for example a named HTTP client), if any.
        name: Option<String>,
    },
    /// Factories that depend on each other in a loop; the first type is repeated at the end.
    #[error("dependency cycle: {}", format_path(.path))]
    Cycle {
        /// The types in the cycle, in dependency order, first one repeated at the end.
        path: Vec<&'static str>,
    },
    /// The same service (or hosted service) was registered more than once.
    #[error("`{service}` is registered more than once{}", what_suffix(.what))]
    Duplicate {
        /// Type name of the service registered twice.
        service: &'static str,
        /// What kind of registration this is (`"service"`, `"hosted service"`, ...).
        what: &'static str,
    },
    /// A configuration closure failed (for example a `?` on a bad URL); `source()` says why.
    #[error("configuration failed in {context}")]
    Configuration {
        /// Where the error happened (for example `"configure_services"`, or a client name).
        context: String,
        /// The error the closure returned.
        source: BoxError,
    },
    /// A problem reported by a check added with [`add_build_check`](super::ServiceCollection::add_build_check).
    #[error("{message}")]
    Custom {
        /// Human-readable description of the problem.
        message: String,
    },
}

fn name_suffix(name: &Option<String>) -> String {
    match name {
        Some(name) => format!(" (named \"{name}\")"),
        None => String::new(),
    }
}

fn what_suffix(what: &&'static str) -> String {
    if *what == "service" {
        String::new()
    } else {
        format!(" as a {what}")
    }
}

fn format_path(path: &[&'static str]) -> String {
    path.iter()
        .map(|p| format!("`{p}`"))
        .collect::<Vec<_>>()
        .join(" -> ")
}

impl BuildProblem {
    /// A free-form problem, for build checks.
    pub fn custom(message: impl Into<String>) -> Self {
        Self::Custom {
            message: message.into(),
        }
    }

    /// A missing dependency: `required_by` needs `service`.
    pub fn missing(service: &'static str, required_by: impl Into<String>) -> Self {
        Self::MissingDependency {
            service,
            required_by: required_by.into(),
            name: None,
        }
    }
}

/// [`ServiceCollection::build`](super::ServiceCollection::build) failed: every problem found, at once.
///
/// Its message lists every problem with its causes (one line each); it has no `source()`.
#[derive(Debug)]
pub struct BuildError {
    problems: Vec<BuildProblem>,
}

impl BuildError {
    pub(crate) fn new(problems: Vec<BuildProblem>) -> Self {
        Self { problems }
    }

    /// The problems, in the order they were found (recorded errors first, then registrations,
    /// dependencies, cycles and custom checks).
    pub fn problems(&self) -> &[BuildProblem] {
        &self.problems
    }

    /// Takes the problems out.
    pub fn into_problems(self) -> Vec<BuildProblem> {
        self.problems
    }
}

// Several problems cannot all be one `source()`, so the message lists each with its causes.
impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "invalid service configuration: {}", error_chain(one)),
            many => {
                write!(
                    f,
                    "invalid service configuration ({} problems):",
                    many.len()
                )?;
                for p in many {
                    write!(f, "\n  - {}", error_chain(p))?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for BuildError {}

/// Resolving a service from the [`ServiceProvider`](super::ServiceProvider) failed.
///
/// The message says what failed; [`source`](std::error::Error::source) says why (the factory's
/// error, the field's error), and is not repeated in the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// No service of this type is registered.
    #[error("no service of type `{service}` is registered{}", required_by_suffix(.required_by))]
    NotRegistered {
        /// Type name of the requested service.
        service: &'static str,
        /// The type whose construction asked for it, when known.
        required_by: Option<&'static str>,
    },
    /// The factory registered for the service returned an error.
    #[error("the factory for `{service}` failed")]
    Factory {
        /// Type name of the service.
        service: &'static str,
        /// The factory's error.
        source: BoxError,
    },
    /// Factories resolve each other in a loop (only possible for undeclared dependencies:
    /// declared ones are caught by `build()`).
    #[error("dependency cycle while resolving: {}", format_path(.path))]
    Cycle {
        /// The types in the cycle, first one repeated at the end.
        path: Vec<&'static str>,
    },
    /// A named service (for example a named HTTP client) could not be created.
    #[error("cannot create `{service}` named \"{name}\"")]
    Named {
        /// Type name of the service.
        service: &'static str,
        /// The requested name.
        name: String,
        /// Why it failed.
        source: BoxError,
    },
    /// A field of an injected type (a worker) could not be resolved.
    #[error("cannot inject field `{field}` of `{target}`")]
    Field {
        /// Type name of the struct being constructed.
        target: &'static str,
        /// The field's name.
        field: &'static str,
        /// Why the field could not be resolved (also its `source()`).
        #[source]
        error: Box<ResolveError>,
    },
}

fn required_by_suffix(required_by: &Option<&'static str>) -> String {
    match required_by {
        Some(by) => format!(" (required by `{by}`)"),
        None => String::new(),
    }
}

impl ResolveError {
    /// The factory for `T` failed with `source`.
    pub fn factory<T: ?Sized + 'static>(source: impl Into<BoxError>) -> Self {
        Self::Factory {
            service: std::any::type_name::<T>(),
            source: source.into(),
        }
    }

    /// The service `T` named `name` could not be created.
    pub fn named<T: ?Sized + 'static>(
        name: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::Named {
            service: std::any::type_name::<T>(),
            name: name.into(),
            source: source.into(),
        }
    }

    /// Wraps `error` as the failure of field `field` of `T` (used by `#[derive(Worker)]`).
    pub fn field<T: ?Sized + 'static>(field: &'static str, error: ResolveError) -> Self {
        let target = std::any::type_name::<T>();
        let error = match error {
            Self::NotRegistered {
                service,
                required_by: None,
            } => Self::NotRegistered {
                service,
                required_by: Some(target),
            },
            other => other,
        };
        Self::Field {
            target,
            field,
            error: Box::new(error),
        }
    }
}
