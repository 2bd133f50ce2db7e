//! Item 7: what the token handler does with an API's `401`.
//!
//! Before the fix every 401 forced a renewal (so an API answering 401 to everything, or for a
//! missing scope, turned each call into a token request), and a failed renewal replaced the API's
//! 401 with a token error.

use std::time::Duration;

use reqwest::StatusCode;
use token_mgmt::tokens::{
    AccessTokenManagementOptions, AccessTokenManagementService,
    DEFAULT_MIN_FORCED_RENEWAL_INTERVAL, RetryPolicy,
};
use token_mgmt_tests::api_server::ApiServer;
use token_mgmt_tests::token_server::TokenServer;

use crate::{handler_client, manual_service, options_for};

const INVALID_TOKEN: &str =
    r#"Bearer realm="api", error="invalid_token", error_description="revoked""#;

async fn status_of(client: &reqwest_middleware::ClientWithMiddleware, api: &ApiServer) -> u16 {
    client
        .get(api.url().join("orders").unwrap())
        .send()
        .await
        .expect("a response, not an error")
        .status()
        .as_u16()
}

fn service(options: AccessTokenManagementOptions) -> AccessTokenManagementService {
    AccessTokenManagementService::new(options).unwrap()
}

#[tokio::test]
async fn insufficient_scope_is_returned_without_a_renewal_or_a_resend() {
    let server = TokenServer::start();
    let api = ApiServer::start();
    api.answer(
        401,
        Some(r#"Bearer error="insufficient_scope", scope="orders.write""#),
    );
    let client = handler_client(&service(options_for(&server, |_| {})), &api.url());

    assert_eq!(status_of(&client, &api).await, 401);
    assert_eq!(api.request_count(), 1, "not resent");
    assert_eq!(server.request_count(), 1, "the first token only");
}

#[tokio::test]
async fn invalid_token_or_no_error_is_renewed_and_resent_once() {
    for challenge in [Some(INVALID_TOKEN), Some(r#"Bearer realm="api""#), None] {
        let server = TokenServer::start();
        let api = ApiServer::start();
        api.answer(401, challenge);
        let client = handler_client(&service(options_for(&server, |_| {})), &api.url());

        assert_eq!(status_of(&client, &api).await, 401, "{challenge:?}");
        let seen = api.authorizations();
        assert_eq!(seen.len(), 2, "sent and resent once: {challenge:?}");
        assert_eq!(seen[0].as_deref(), Some("Bearer tok-1--"));
        assert_eq!(
            seen[1].as_deref(),
            Some("Bearer tok-2--"),
            "with a new token"
        );
        assert_eq!(server.request_count(), 2, "{challenge:?}");
    }
}

#[tokio::test]
async fn forced_renewals_after_401s_are_at_most_one_per_interval() {
    let server = TokenServer::start();
    let api = ApiServer::start();
    api.answer(401, Some(INVALID_TOKEN));
    let (service, clock) = manual_service(options_for(&server, |_| {}));
    let client = handler_client(&service, &api.url());

    for _ in 0..20 {
        assert_eq!(status_of(&client, &api).await, 401);
    }
    assert_eq!(server.request_count(), 2, "the first token and one renewal");
    assert_eq!(
        api.request_count(),
        21,
        "one resend, then the renewed token was rejected in turn"
    );

    // Just inside the interval: still no renewal.
    clock.advance(DEFAULT_MIN_FORCED_RENEWAL_INTERVAL - Duration::from_millis(1));
    assert_eq!(status_of(&client, &api).await, 401);
    assert_eq!(server.request_count(), 2);

    // Past it: one more, then none again.
    clock.advance(Duration::from_millis(2));
    for _ in 0..10 {
        assert_eq!(status_of(&client, &api).await, 401);
    }
    assert_eq!(server.request_count(), 3);
    assert_eq!(api.request_count(), 22 + 11);
}

#[tokio::test]
async fn a_failed_renewal_returns_the_apis_401_not_a_token_error() {
    let failures = [
        (500, r#"{"error":"server_error"}"#),
        (400, r#"{"error":"invalid_client"}"#),
    ];
    for (status, body) in failures {
        let server = TokenServer::start();
        let api = ApiServer::start();
        let mut options = options_for(&server, |_| {});
        options.retry = RetryPolicy::none();
        let client = handler_client(&service(options), &api.url());
        assert_eq!(status_of(&client, &api).await, 200);

        api.answer(401, Some(INVALID_TOKEN));
        server.respond(status, "application/json", body);
        let response = client
            .get(api.url().join("orders").unwrap())
            .send()
            .await
            .unwrap_or_else(|error| panic!("token endpoint {status}: an error: {error:?}"));
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some(INVALID_TOKEN),
            "the API's own response"
        );
        assert_eq!(server.request_count(), 2, "one renewal attempt");
        assert_eq!(api.request_count(), 2, "not resent without a new token");
    }
}
