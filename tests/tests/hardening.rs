//! Regression tests of the hardening issue: each module covers one of its items against real
//! loopback servers, and each test fails on the code before the fix.
//!
//! Run with `cargo test -p token-mgmt-tests --test hardening`.
//!
//! Time: expiry, rate limits and suspends are driven by a [`ManualClock`]; requests that must stay in
//! flight are held at the token server and released by the test. Timeouts appear only as guards that
//! fail a test that would otherwise hang, never to make one pass.

mod hardening {
    mod cache_keys;
    mod clock;
    mod flights;
    mod https;
    mod logs;
    mod origins;
    mod parts;
    mod runtimes;
    mod token_types;
    mod unauthorized;
}

use std::future::Future;
use std::time::Duration;

use token_mgmt::tokens::{
    AccessTokenManagementService, ClientAccessToken, ClientAccessTokenHandler, TokenError,
    TokenRequestParameters,
};
pub use token_mgmt_tests::{CLIENT, defaults, manual_service, options_for};
use url::Url;

/// How long a test waits for something that must happen before it fails instead of hanging.
pub const GUARD: Duration = Duration::from_secs(30);

/// The client's default token.
pub async fn get(service: &AccessTokenManagementService) -> ClientAccessToken {
    try_get(service).await.expect("token")
}

/// The client's default token, or the error.
pub async fn try_get(
    service: &AccessTokenManagementService,
) -> Result<ClientAccessToken, TokenError> {
    service.get_client_access_token(CLIENT, &defaults()).await
}

/// A forced renewal of the client's default token.
pub async fn force(service: &AccessTokenManagementService) -> ClientAccessToken {
    service
        .get_client_access_token(CLIENT, &TokenRequestParameters::force_renewal())
        .await
        .expect("forced token")
}

/// `future`, failing the test if it has not completed within [`GUARD`].
pub async fn guarded<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(GUARD, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not complete within {GUARD:?}"),
    }
}

/// A plain reqwest-middleware client with only the token handler of `service`'s client `api`,
/// allowed to send tokens to `origin`.
pub fn handler_client(
    service: &AccessTokenManagementService,
    origin: &Url,
) -> reqwest_middleware::ClientWithMiddleware {
    reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(ClientAccessTokenHandler::new(service.clone(), CLIENT).with_allowed_origin(origin))
        .build()
}
