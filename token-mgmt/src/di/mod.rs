//! The service container: register services in a [`ServiceCollection`], [`build`](ServiceCollection::build)
//! it into a [`ServiceProvider`], resolve services by type.
//!
//! ```
//! use std::sync::Arc;
//! use token_mgmt::di::ServiceCollection;
//!
//! struct Config { url: String }
//! struct Api { config: Arc<Config> }
//!
//! let mut services = ServiceCollection::new();
//! services.add_singleton(Config { url: "https://example.com".into() });
//! // The factory declares what it needs (`Arc<Config>`), so `build()` can check it.
//! services.add_singleton_with(|config: Arc<Config>| Ok(Api { config }));
//! let provider = services.build()?;
//! let api = provider.get_required::<Api>()?;
//! assert_eq!(api.config.url, "https://example.com");
//! # Ok::<(), token_mgmt::BoxError>(())
//! ```
//!
//! Everything shared is an `Arc` and `Send + Sync`. `build()` reports every problem it can find at
//! once ([`BuildError`]): missing dependencies, dependency cycles between factories, duplicate
//! registrations, errors recorded by configuration closures and custom checks.

mod collection;
mod dependency;
mod error;
mod inject;
mod provider;

pub use collection::ServiceCollection;
pub use dependency::Dependency;
pub use error::{BuildError, BuildProblem, ResolveError};
pub use inject::{FromProvider, Injectable, NamedService, resolve_by_clone};
pub use provider::ServiceProvider;

#[doc(inline)]
pub use crate::inject_by_clone;
