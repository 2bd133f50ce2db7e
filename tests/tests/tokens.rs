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

use token_mgmt::tokens::{AccessTokenManagementService, TokenRequestParameters};
use token_mgmt_tests::token_server::TokenServer;
pub use token_mgmt_tests::{CLIENT, defaults, manual_service, options_for};

/// A service with one client `api` for `server`.
pub fn service_for(server: &TokenServer) -> AccessTokenManagementService {
    AccessTokenManagementService::new(options_for(server, |_| {})).expect("valid options")
}

/// Parameters asking for `scope` and `resources`.
pub fn scoped(scope: &str, resources: &[&str]) -> TokenRequestParameters {
    TokenRequestParameters {
        scope: Some(scope.to_owned()),
        resources: resources.iter().map(|r| (*r).to_owned()).collect(),
        ..Default::default()
    }
}
