//! Each failure of the token endpoint becomes the right `TokenError`, and nothing is cached: the next
//! call makes a new request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use token_mgmt::BoxError;
use token_mgmt::tokens::{
    AccessTokenManagementOptions, AccessTokenManagementService, CacheKey, ClientAccessToken,
    ClientAccessTokenCache, InMemoryClientAccessTokenCache, MAX_ERROR_DESCRIPTION_CHARS,
    RetryPolicy, TokenError,
};
use token_mgmt_tests::token_server::{Mode, TokenServer};

use crate::{CLIENT, defaults, options_for};

/// A service for these tests of error mapping: one attempt per call and no cool-down, so that each
/// call shows exactly one response's error (retries and the cool-down have tests of their own).
fn service_for(server: &TokenServer) -> AccessTokenManagementService {
    AccessTokenManagementService::new(single_attempt(options_for(server, |_| {}))).unwrap()
}

fn single_attempt(mut options: AccessTokenManagementOptions) -> AccessTokenManagementOptions {
    options.retry = RetryPolicy::none();
    options.failure_cooldown = Duration::ZERO;
    options
}

/// The failure behind a transient error: the retry policy gave up and says why in its source.
fn last_failure(error: &TokenError) -> &TokenError {
    match error {
        TokenError::Unavailable {
            source,
            attempts: 1,
            ..
        } => source,
        other => panic!("expected a transient failure after one attempt: {other:?}"),
    }
}

async fn get(service: &AccessTokenManagementService) -> Result<ClientAccessToken, TokenError> {
    service.get_client_access_token(CLIENT, &defaults()).await
}

/// After a failure, the server works again: the next call must make request number 2 and succeed.
async fn next_call_makes_a_new_request(
    server: &TokenServer,
    service: &AccessTokenManagementService,
) {
    server.set_mode(Mode::Issue);
    let before = server.request_count();
    let token = get(service).await.expect("a token once the server works");
    assert_eq!(
        server.request_count(),
        before + 1,
        "the error was not cached"
    );
    assert_eq!(token.access_token(), format!("tok-{}--", before + 1));
}

fn assert_names_client_and_endpoint(error: &TokenError, server: &TokenServer) {
    assert_eq!(error.client(), CLIENT);
    assert_eq!(error.endpoint(), Some(server.url().as_str()));
    let shown = error.to_string();
    assert!(shown.contains(CLIENT), "{shown}");
    assert!(shown.contains(&server.url()), "{shown}");
    assert!(!shown.contains("secret"), "{shown}");
}

#[tokio::test]
async fn oauth_error_json_is_an_endpoint_error_with_error_and_description() {
    let server = TokenServer::start();
    server.respond(
        400,
        "application/json",
        r#"{"error":"invalid_scope","error_description":"scope 'x' is not allowed"}"#,
    );
    let service = service_for(&server);
    let error = get(&service).await.unwrap_err();
    match &error {
        TokenError::Endpoint {
            status,
            error,
            error_description,
            ..
        } => {
            assert_eq!(*status, StatusCode::BAD_REQUEST);
            assert_eq!(error.as_deref(), Some("invalid_scope"));
            assert_eq!(
                error_description.as_deref(),
                Some("scope 'x' is not allowed")
            );
        }
        other => panic!("expected Endpoint, got {other:?}"),
    }
    assert_names_client_and_endpoint(&error, &server);
    assert!(error.to_string().contains("invalid_scope"));
    next_call_makes_a_new_request(&server, &service).await;
}

#[tokio::test]
async fn a_long_error_description_is_capped() {
    let server = TokenServer::start();
    let long = "d".repeat(10_000);
    server.respond(
        400,
        "application/json",
        &format!(r#"{{"error":"invalid_request","error_description":"{long}"}}"#),
    );
    let service = service_for(&server);
    let TokenError::Endpoint {
        error_description: Some(description),
        ..
    } = get(&service).await.unwrap_err()
    else {
        panic!("expected an Endpoint error with a description");
    };
    assert!(description.chars().count() <= MAX_ERROR_DESCRIPTION_CHARS + 1);
    assert!(description.ends_with('…'));
}

#[tokio::test]
async fn server_error_with_html_is_an_endpoint_error_without_oauth_fields() {
    let server = TokenServer::start();
    server.respond(
        500,
        "text/html",
        "<html><body>Internal Server Error</body></html>",
    );
    let service = service_for(&server);
    let error = get(&service).await.unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    assert!(
        matches!(
            last_failure(&error),
            TokenError::Endpoint { status, error: None, error_description: None, .. }
                if *status == StatusCode::INTERNAL_SERVER_ERROR
        ),
        "{error:?}"
    );
    assert_names_client_and_endpoint(&error, &server);
    next_call_makes_a_new_request(&server, &service).await;
}

#[tokio::test]
async fn non_json_success_is_an_invalid_response() {
    let server = TokenServer::start();
    server.respond(200, "text/plain", "here is your token: abc");
    let service = service_for(&server);
    let error = get(&service).await.unwrap_err();
    assert!(
        matches!(&error, TokenError::InvalidResponse { status, .. } if *status == StatusCode::OK),
        "{error:?}"
    );
    assert!(
        !error.to_string().contains("abc"),
        "no body content in the message"
    );
    assert_names_client_and_endpoint(&error, &server);
    next_call_makes_a_new_request(&server, &service).await;
}

#[tokio::test]
async fn missing_access_token_is_its_own_variant() {
    let server = TokenServer::start();
    server.respond(
        200,
        "application/json",
        r#"{"token_type":"Bearer","expires_in":3600}"#,
    );
    let service = service_for(&server);
    let error = get(&service).await.unwrap_err();
    assert!(
        matches!(&error, TokenError::MissingAccessToken { .. }),
        "{error:?}"
    );
    assert_names_client_and_endpoint(&error, &server);
    next_call_makes_a_new_request(&server, &service).await;
}

#[tokio::test]
async fn a_body_over_the_cap_is_rejected() {
    let server = TokenServer::start();
    server.set_mode(Mode::Oversized(2 * 1024 * 1024));
    let service = service_for(&server);
    let error = get(&service).await.unwrap_err();
    assert!(
        matches!(&error, TokenError::BodyTooLarge { limit, .. } if *limit == 1024 * 1024),
        "{error:?}"
    );
    assert_names_client_and_endpoint(&error, &server);
    next_call_makes_a_new_request(&server, &service).await;
}

/// A chunked body without `Content-Length` that never ends: reading must stop at the cap (if it did
/// not, this test would end in a timeout instead).
#[tokio::test]
async fn an_endless_body_is_read_incrementally_and_stopped_at_the_cap() {
    let server = TokenServer::start();
    server.set_mode(Mode::Endless);
    let mut options = single_attempt(options_for(&server, |_| {}));
    options.max_response_body_size = 64 * 1024;
    let service = AccessTokenManagementService::new(options).unwrap();
    let error = get(&service).await.unwrap_err();
    assert!(
        matches!(&error, TokenError::BodyTooLarge { limit, .. } if *limit == 64 * 1024),
        "{error:?}"
    );
    next_call_makes_a_new_request(&server, &service).await;
}

/// The server hangs; the request is at the server (real clock), then the test's clock is paused and
/// advanced past the timeout (the service runs its requests on the test's runtime here).
#[tokio::test]
async fn a_hang_past_the_timeout_is_a_timeout() {
    let server = TokenServer::start();
    server.set_mode(Mode::Hang);
    let mut options = single_attempt(options_for(&server, |_| {}));
    options.request_timeout = Duration::from_secs(5);
    let service = AccessTokenManagementService::builder(options)
        .runtime(tokio::runtime::Handle::current())
        .build()
        .unwrap();

    let call = {
        let service = service.clone();
        tokio::spawn(async move { get(&service).await })
    };
    server.wait_for_requests(1).await;
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(6)).await;
    let error = call.await.unwrap().unwrap_err();
    assert!(
        matches!(last_failure(&error), TokenError::Timeout { timeout, .. } if *timeout == Duration::from_secs(5)),
        "{error:?}"
    );
    assert_names_client_and_endpoint(&error, &server);
    tokio::time::resume();
    next_call_makes_a_new_request(&server, &service).await;
}

/// Nothing listens on the port: a transport error. Then a server starts on that port, and the next
/// call reaches it.
#[tokio::test]
async fn connection_refused_is_a_transport_error() {
    let port_holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = port_holder.local_addr().unwrap();
    drop(port_holder);

    let mut options = token_mgmt::tokens::AccessTokenManagementOptions::default();
    options.client.clients.add(
        CLIENT,
        token_mgmt::tokens::TokenClientOptions {
            address: format!("http://{addr}/connect/token").parse().unwrap(),
            client_id: "client".into(),
            client_secret: "secret".into(),
            ..Default::default()
        },
    );
    let service = AccessTokenManagementService::new(single_attempt(options)).unwrap();
    let error = get(&service).await.unwrap_err();
    let cause = last_failure(&error);
    assert!(
        matches!(cause, TokenError::Transport { kind, .. } if *kind == "connection failed"),
        "{error:?}"
    );
    assert!(std::error::Error::source(cause).is_some());

    let server = TokenServer::start_on(addr).expect("the port is free again");
    assert_names_client_and_endpoint(&error, &server);
    assert_eq!(get(&service).await.unwrap().access_token(), "tok-1--");
    assert_eq!(server.request_count(), 1);
}

/// A cache whose every operation fails: each call still gets a token (a miss, logged).
#[derive(Default)]
struct BrokenCache {
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl ClientAccessTokenCache for BrokenCache {
    async fn get(&self, _key: &CacheKey) -> Result<Option<ClientAccessToken>, BoxError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err("cache unavailable".into())
    }
    async fn set(&self, _key: &CacheKey, _token: ClientAccessToken) -> Result<(), BoxError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err("cache unavailable".into())
    }
    async fn delete(&self, _key: &CacheKey) -> Result<(), BoxError> {
        Err("cache unavailable".into())
    }
}

#[tokio::test]
async fn a_failing_cache_is_a_miss_not_a_failure() {
    let server = TokenServer::start();
    let cache = Arc::new(BrokenCache::default());
    let service =
        AccessTokenManagementService::builder(single_attempt(options_for(&server, |_| {})))
            .cache(cache.clone())
            .build()
            .unwrap();
    assert_eq!(get(&service).await.unwrap().access_token(), "tok-1--");
    assert!(
        cache.calls.load(Ordering::SeqCst) >= 2,
        "read and write tried"
    );
    // The service keeps no copy of its own: with the cache failing, the next call asks again.
    assert_eq!(get(&service).await.unwrap().access_token(), "tok-2--");
    assert_eq!(server.request_count(), 2);
    let error = service
        .delete_client_access_token(CLIENT, &defaults())
        .await
        .unwrap_err();
    assert!(matches!(error, TokenError::Cache { .. }), "{error:?}");
}

/// A remote-style cache (no synchronous fast path) is read through `get`.
struct RemoteLikeCache(InMemoryClientAccessTokenCache);

#[async_trait::async_trait]
impl ClientAccessTokenCache for RemoteLikeCache {
    async fn get(&self, key: &CacheKey) -> Result<Option<ClientAccessToken>, BoxError> {
        self.0.get(key).await
    }
    async fn set(&self, key: &CacheKey, token: ClientAccessToken) -> Result<(), BoxError> {
        self.0.set(key, token).await
    }
    async fn delete(&self, key: &CacheKey) -> Result<(), BoxError> {
        self.0.delete(key).await
    }
}

#[tokio::test]
async fn a_cache_without_the_fast_path_is_used_through_get() {
    let server = TokenServer::start();
    let service =
        AccessTokenManagementService::builder(single_attempt(options_for(&server, |_| {})))
            .cache(Arc::new(RemoteLikeCache(
                InMemoryClientAccessTokenCache::new(),
            )))
            .build()
            .unwrap();
    let first = get(&service).await.unwrap();
    assert!(get(&service).await.unwrap().ptr_eq(&first));
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn an_unknown_client_lists_the_known_ones() {
    let server = TokenServer::start();
    let service = service_for(&server);
    let error = service
        .get_client_access_token("nope", &defaults())
        .await
        .unwrap_err();
    match &error {
        TokenError::UnknownClient { name, known } => {
            assert_eq!(name, "nope");
            assert_eq!(known, &vec![CLIENT.to_owned()]);
        }
        other => panic!("expected UnknownClient, got {other:?}"),
    }
    assert!(error.to_string().contains("`api`"));
    assert_eq!(server.request_count(), 0);
}
