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
//! - [`tokens`]: the [`AccessTokenManagementService`](tokens::AccessTokenManagementService), its cache
//!   and the [`ClientAccessTokenHandler`](tokens::ClientAccessTokenHandler) middleware;
//! - [`http`]: named HTTP clients ([`HttpClientFactory`]) over `reqwest` and `reqwest-middleware`;
//! - `di` (feature `hosting`): the service container (`ServiceCollection`, `ServiceProvider`) and
//!   what `#[derive(Worker)]` implements;
//! - `hosting` (feature `hosting`): the `Host` that runs `BackgroundService`s until Ctrl-C or
//!   SIGTERM;
//! - `registration` (feature `hosting`): the `add_*` methods that tie them together in the
//!   container.
//!
//! # Cargo features
//!
//! | feature | default | what | fresh debug build of the crate* |
//! | --- | --- | --- | --- |
//! | `hosting` | yes | `di`, `hosting`, `registration`, `#[derive(Worker)]` and the [`prelude`] | with `logging`: +7 s over the core |
//! | `logging` | yes | `Host::create_default_builder` installs a `tracing-subscriber` fmt subscriber (implies `hosting`) | (above) |
//! | `rustls` | yes | TLS through rustls with the aws-lc-rs crypto provider (builds aws-lc's C code) | core: 44 s |
//! | `rustls-ring` | no | TLS through rustls with the ring crypto provider | core: 33 s |
//! | `native-tls` | no | TLS through the platform's library (OpenSSL on Linux, with its headers) | core: 30 s |
//!
//! \* Wall time on 2 cores (BENCHMARKS.md); the default features build in 51 s.
//!
//! The core (tokens, cache, endpoint client, middleware, HTTP client factory) builds with
//! `default-features = false` plus one TLS feature; without any TLS feature only `http://`
//! endpoints can be reached. A library that brings its own logging set-up turns `logging` off.
//! `rustls-ring` installs ring as the process's default rustls crypto provider when the crate
//! builds its first HTTP client, unless a provider is already installed; a `reqwest::Client` the
//! application builds itself before that (for the middleware on its own, say) needs the provider
//! installed first: `rustls::crypto::ring::default_provider().install_default()`.
//!
//! [`HttpClientFactory`]: http::HttpClientFactory

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "hosting")]
pub mod config;
#[cfg(feature = "hosting")]
pub mod di;
#[cfg(feature = "hosting")]
pub mod hosting;
pub mod http;
#[cfg(feature = "hosting")]
pub mod registration;
mod tls;
pub mod tokens;

#[cfg(feature = "hosting")]
pub use token_mgmt_macros::Worker;
#[cfg(feature = "hosting")]
pub use tokio_util::sync::CancellationToken;

/// The boxed error type used across token-mgmt: closures and factories return
/// `Result<_, BoxError>` so `?` works on any error inside them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything a worker application usually needs, in one `use token_mgmt::prelude::*;`.
#[cfg(feature = "hosting")]
pub mod prelude {
    pub use crate::BoxError;
    pub use crate::CancellationToken;
    pub use crate::Worker;
    pub use crate::config::{ConfigError, Configuration};
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
