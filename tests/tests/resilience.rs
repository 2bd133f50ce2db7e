//! Resilience of token management against a token endpoint that fails on purpose
//! (`token_mgmt_tests::fault_server`): background renewal, outages, retries, rate limits, bounded
//! memory, randomised interleavings, the response parser, metrics and logs.
//!
//! Run with `cargo test -p token-mgmt-tests --test resilience`.
//!
//! Time: every service runs on a [`ManualClock`] that only the test moves (expiry, renewal times,
//! back-off, `Retry-After`, cool-downs); network calls run in real time. Nothing sleeps: a test
//! waits for the server's request counter, or polls with `yield_now` under a [`guard`] that fails
//! the test if it takes longer than [`GUARD`].

mod resilience {
    mod background;
    mod memory;
    mod observability;
    mod outage;
    mod properties;
}

use std::error::Error;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use token_mgmt::tokens::{
    AccessTokenManagementOptions, AccessTokenManagementService, ClientAccessToken, ManualClock,
    RetryPolicy, TokenError, TokenRequestParameters,
};
use token_mgmt_tests::fault_server::FaultServer;

/// The token client name used by the tests.
pub const CLIENT: &str = "api";

/// Longest a test waits for anything asynchronous before failing.
pub const GUARD: Duration = Duration::from_secs(20);

/// Awaits `future`, failing the test if it takes longer than [`GUARD`] (real time).
pub async fn guard<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(GUARD, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {GUARD:?} waiting for {what}"),
    }
}

/// Yields until `condition` holds, under [`guard`].
pub async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    guard(what, async {
        while !condition() {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// The default retry policy (3 attempts), without back-off: retries then need no clock, so only
/// the tests of back-off and `Retry-After` depend on the clock for them.
pub fn immediate_retries() -> RetryPolicy {
    let mut policy = RetryPolicy::default();
    policy.initial_backoff = Duration::ZERO;
    policy.max_backoff = Duration::ZERO;
    policy
}

/// Options with one client `api` for `server`, retrying without back-off.
pub fn options_for(server: &FaultServer) -> AccessTokenManagementOptions {
    let mut options = AccessTokenManagementOptions::default();
    options.client.clients.add(CLIENT, server.client_options());
    options.retry = immediate_retries();
    options
}

/// A clock, and a fault server that stamps requests with it.
pub fn clock_and_server() -> (Arc<ManualClock>, FaultServer) {
    let clock = Arc::new(ManualClock::new());
    let server = FaultServer::with_clock(clock.clone());
    (clock, server)
}

/// A service on `clock`.
pub fn service_on(
    options: AccessTokenManagementOptions,
    clock: &Arc<ManualClock>,
) -> AccessTokenManagementService {
    AccessTokenManagementService::builder(options)
        .clock(clock.clone())
        .build()
        .expect("valid options")
}

/// Parameters asking for `scope`.
pub fn scoped(scope: &str) -> TokenRequestParameters {
    TokenRequestParameters {
        scope: Some(scope.to_owned()),
        ..Default::default()
    }
}

/// The default token of client `api`, under [`guard`].
pub async fn get(service: &AccessTokenManagementService) -> Result<ClientAccessToken, TokenError> {
    get_with(service, &TokenRequestParameters::default()).await
}

/// Client `api`'s token for `parameters`, under [`guard`].
pub async fn get_with(
    service: &AccessTokenManagementService,
    parameters: &TokenRequestParameters,
) -> Result<ClientAccessToken, TokenError> {
    guard(
        "a token call",
        service.get_client_access_token(CLIENT, parameters),
    )
    .await
}

/// Whether `error` or an error in its `source()` chain is the token endpoint's answer `status`.
pub fn chain_has_status(error: &TokenError, status: u16) -> bool {
    let mut next: Option<&(dyn Error + 'static)> = Some(error);
    while let Some(error) = next {
        if let Some(TokenError::Endpoint { status: s, .. }) = error.downcast_ref::<TokenError>() {
            if s.as_u16() == status {
                return true;
            }
        }
        next = error.source();
    }
    false
}

/// Seconds as a duration.
pub const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
