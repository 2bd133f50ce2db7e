//! Test support: local servers, and the interop authorization server.

pub mod api_server;
pub mod dpop_api;
pub mod fault_server;
pub mod h2_server;
pub mod interop;
pub mod logs;
pub mod redis_server;
pub mod serve;
pub mod token_server;

use std::sync::Arc;

use token_mgmt::tokens::{
    AccessTokenManagementOptions, AccessTokenManagementService, ManualClock, TokenClientOptions,
    TokenRequestParameters,
};

use crate::token_server::TokenServer;

/// The token client name used by most tests.
pub const CLIENT: &str = "api";

/// Options with one client `api` for `server`, adjusted by `configure`.
pub fn options_for(
    server: &TokenServer,
    configure: impl FnOnce(&mut TokenClientOptions),
) -> AccessTokenManagementOptions {
    let mut client = server.client_options();
    configure(&mut client);
    let mut options = AccessTokenManagementOptions::default();
    options.client.clients.add(CLIENT, client);
    options
}

/// The default request parameters.
pub fn defaults() -> TokenRequestParameters {
    TokenRequestParameters::default()
}

/// A service built from `options` whose time moves only when the returned clock is advanced.
pub fn manual_service(
    options: AccessTokenManagementOptions,
) -> (AccessTokenManagementService, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let service = AccessTokenManagementService::builder(options)
        .clock(clock.clone())
        .build()
        .expect("valid options");
    (service, clock)
}

/// README.md's Rust blocks, compiled (and run, unless marked `no_run`) as this crate's doc tests, so
/// that the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
