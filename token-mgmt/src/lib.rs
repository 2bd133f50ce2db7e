//! OAuth 2.0 client-credentials token management for worker applications (long-running background
//! services).
//!
//! Register a token service, a client id and a secret once, ask the [`HttpClientFactory`] for a named
//! client, and every request it sends carries a valid access token: requested with the client
//! credentials grant, cached, renewed before it expires, shared by concurrent callers, renewed and
//! resent once on a 401. The registration API follows .NET's `AddAccessTokenManagement` /
//! `AddClientAccessTokenClient`.
//!
//! The pieces, each usable on its own:
//! - [`di`]: the service container ([`ServiceCollection`](di::ServiceCollection),
//!   [`ServiceProvider`](di::ServiceProvider)) and what `#[derive(Worker)]` implements;
//! - [`hosting`]: the [`Host`](hosting::Host) that runs [`BackgroundService`](hosting::BackgroundService)s
//!   until Ctrl-C or SIGTERM;
//! - [`http`]: named HTTP clients ([`HttpClientFactory`]) over `reqwest` and `reqwest-middleware`;
//! - [`tokens`]: the [`AccessTokenManagementService`](tokens::AccessTokenManagementService), its cache
//!   and the [`ClientAccessTokenHandler`](tokens::ClientAccessTokenHandler) middleware;
//! - [`registration`]: the `add_*` methods that tie them together in the container.
//!
//! [`HttpClientFactory`]: http::HttpClientFactory

#![deny(missing_docs)]

pub mod di;
pub mod hosting;
pub mod http;
pub mod registration;
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
        HostedServiceExt, WorkerError, error_chain,
    };
    pub use crate::http::{HttpClient, HttpClientFactory, HttpClientOptions, HttpError};
    pub use crate::registration::{
        AccessTokenManagementBuilder, HttpClientBuilder, TokenManagementServiceCollectionExt,
    };
    pub use crate::tokens::{
        AccessTokenManagementOptions, AccessTokenManagementService, ClientAccessToken,
        ClientAuthentication, TokenClientOptions, TokenError, TokenRequestParameters,
    };
}
