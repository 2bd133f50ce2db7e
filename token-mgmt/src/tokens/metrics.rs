//! The metrics token management records, through the [`metrics`] facade: install any exporter
//! (Prometheus, OpenTelemetry, ...) as the global recorder before building the service. Labels carry
//! client names and outcomes only, never a secret or a token.

use std::time::Duration;

use ::metrics::{Counter, counter, histogram};

/// Metric names, in one place.
pub mod names {
    /// Counter: token requests that completed, labels `client` and `outcome` (`success`, `error`).
    pub const TOKEN_REQUESTS: &str = "token_mgmt_token_requests_total";
    /// Counter: retries of failed token requests, label `client`.
    pub const TOKEN_REQUEST_RETRIES: &str = "token_mgmt_token_request_retries_total";
    /// Histogram: seconds one token request attempt took, label `client`.
    pub const TOKEN_REQUEST_DURATION: &str = "token_mgmt_token_request_duration_seconds";
    /// Counter: calls served from the cache, label `client`.
    pub const CACHE_HITS: &str = "token_mgmt_cache_hits_total";
    /// Counter: calls that found no usable token in the cache, label `client`.
    pub const CACHE_MISSES: &str = "token_mgmt_cache_misses_total";
    /// Counter: renewals started in the background, label `client`.
    pub const BACKGROUND_RENEWALS: &str = "token_mgmt_background_renewals_total";
    /// Counter: calls served a still-valid token while its renewal was failing, label `client`.
    pub const STALE_TOKENS_SERVED: &str = "token_mgmt_stale_tokens_served_total";
    /// Counter: requests resent after a 401 with a renewed token, label `client`.
    pub const UNAUTHORIZED_REPLAYS: &str = "token_mgmt_unauthorized_replays_total";
    /// Counter: tokens dropped because nobody used their key for the idle window, label `client`.
    pub const IDLE_EVICTIONS: &str = "token_mgmt_idle_evictions_total";
    /// Counter: failed calls to a shared token cache (Redis), label `operation`.
    pub const CACHE_ERRORS: &str = "token_mgmt_cache_errors_total";
}

/// A client's hit counter, registered once (a hit then costs one call on the handle).
pub(crate) fn cache_hits(client: &str) -> Counter {
    counter!(names::CACHE_HITS, "client" => client.to_owned())
}

pub(crate) fn count(name: &'static str, client: &str) {
    counter!(name, "client" => client.to_owned()).increment(1);
}

pub(crate) fn token_request(client: &str, success: bool, took: Duration) {
    let outcome = if success { "success" } else { "error" };
    counter!(names::TOKEN_REQUESTS, "client" => client.to_owned(), "outcome" => outcome)
        .increment(1);
    histogram!(names::TOKEN_REQUEST_DURATION, "client" => client.to_owned())
        .record(took.as_secs_f64());
}
