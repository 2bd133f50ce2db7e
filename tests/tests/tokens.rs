//! Token management against a real local token endpoint (`token_mgmt_tests::token_server`).
//!
//! Run with `cargo test -p token-mgmt-tests --test tokens`.
//!
//! Time: tests that check cache expiry pause the tokio clock *between* network calls
//! (`tokio::time::pause` / `advance` / `resume` on a current-thread runtime). Network calls run with
//! the clock going, because a paused clock auto-advances to the next timer while the runtime waits on
//! real sockets, which would fire the request timeout spuriously. The token server runs on its own
//! thread and runtime, so pausing the test's clock never affects it. Nothing sleeps.

mod tokens {
    mod concurrency;
    mod errors;
    mod expiry;
    mod options;
    mod wire;
}

use token_mgmt::tokens::{
    AccessTokenManagementOptions, AccessTokenManagementService, TokenClientOptions,
    TokenRequestParameters,
};
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
