//! Token management against a real local token endpoint (`token_mgmt_tests::token_server`).
//!
//! Run with `cargo test -p token-mgmt-tests --test tokens`.
//!
//! Time: tests that check expiry give the service a [`ManualClock`] and advance it by hand; network
//! calls run in real time (the token server runs on its own thread and runtime). Nothing sleeps.

mod tokens {
    mod concurrency;
    mod errors;
    mod expiry;
    mod hot_path;
    mod options;
    mod runtime_clients;
    mod wire;
}

use token_mgmt::tokens::{
    AccessTokenManagementOptions, AccessTokenManagementService, TokenClientOptions,
    TokenRequestParameters,
};
pub use token_mgmt_tests::manual_service;
use token_mgmt_tests::token_server::TokenServer;

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

/// A service with one client `api` for `server`.
pub fn service_for(server: &TokenServer) -> AccessTokenManagementService {
    AccessTokenManagementService::new(options_for(server, |_| {})).expect("valid options")
}

/// The default request parameters.
pub fn defaults() -> TokenRequestParameters {
    TokenRequestParameters::default()
}

/// Parameters asking for `scope` and `resources`.
pub fn scoped(scope: &str, resources: &[&str]) -> TokenRequestParameters {
    TokenRequestParameters {
        scope: Some(scope.to_owned()),
        resources: resources.iter().map(|r| (*r).to_owned()).collect(),
        ..Default::default()
    }
}
