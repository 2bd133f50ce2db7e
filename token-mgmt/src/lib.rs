//! token-mgmt: OAuth 2.0 client-credentials token management for worker applications.

pub mod di;
pub mod hosting;
pub mod http;
pub mod tokens;

pub use token_mgmt_macros::Worker;
pub use tokio_util::sync::CancellationToken;

/// The boxed error type used across token-mgmt: closures and factories return
/// `Result<_, BoxError>` so `?` works on any error inside them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything a worker application usually needs, in one `use token_mgmt::prelude::*;`.
pub mod prelude {
    pub use crate::BoxError;
    pub use crate::CancellationToken;
    pub use crate::Worker;
    pub use crate::di::{
        BuildError, BuildProblem, FromProvider, Injectable, ResolveError, ServiceCollection,
        ServiceProvider,
    };
    pub use crate::hosting::{
        ApplicationLifetime, BackgroundService, Host, HostBuilder, HostBuilderContext, HostError,
        HostedServiceExt, WorkerError,
    };
}
