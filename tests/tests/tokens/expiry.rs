//! Cache lifetime, on a paused tokio clock.
//!
//! Each test fetches over the network with the clock running, then pauses the clock, advances it to
//! just before / after the token's refresh time, and resumes it before the next network call (see the
//! note at the top of `tokens.rs`).

use std::time::Duration;

use serde_json::json;
use token_mgmt::tokens::{AccessTokenManagementService, ClientAccessToken};
use token_mgmt_tests::token_server::TokenServer;
use tokio::time::Instant;

use crate::{CLIENT, defaults, options_for, scoped, service_for};

const MILLI: Duration = Duration::from_millis(1);

async fn get(service: &AccessTokenManagementService) -> ClientAccessToken {
    service
        .get_client_access_token(CLIENT, &defaults())
        .await
        .expect("token")
}

/// Advances the paused clock to one millisecond before `at`.
async fn advance_to_just_before(at: Instant) {
    tokio::time::advance(at - Instant::now() - MILLI).await;
}

/// Advances the paused clock to one millisecond after `at`, and lets the service's refresh scheduler
/// (one task, woken by the advance) run: the service marks a token stale with a tokio timer rather
/// than reading the clock on every cache hit.
async fn advance_past(at: Instant) {
    tokio::time::advance(at + MILLI - Instant::now()).await;
    tokio::task::yield_now().await;
}

#[tokio::test]
async fn expires_in_120_is_cached_until_60_seconds_then_renewed() {
    let server = TokenServer::start();
    server.set_expires_in(Some(json!(120)));
    let service = service_for(&server);

    let first = get(&service).await;
    let expires_at = first.expires_at().expect("expires_in was sent");
    let refresh_at = first.refresh_at().expect("a refresh time");
    assert_eq!(
        expires_at - refresh_at,
        Duration::from_secs(60),
        "60 s buffer"
    );

    tokio::time::pause();
    // Just under 60 s after the response: still the cached token, no request.
    advance_to_just_before(refresh_at).await;
    for _ in 0..100 {
        assert!(get(&service).await.ptr_eq(&first));
    }
    assert_eq!(server.request_count(), 1);

    // Past 60 s: renewed.
    advance_past(refresh_at).await;
    tokio::time::resume();
    let second = get(&service).await;
    assert_eq!(second.access_token(), "tok-2--");
    assert_eq!(server.request_count(), 2);
    // The renewed token is cached in its turn.
    assert!(get(&service).await.ptr_eq(&second));
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn expires_in_30_below_the_buffer_is_still_cached_for_half_its_lifetime() {
    let server = TokenServer::start();
    server.set_expires_in(Some(json!(30)));
    let service = service_for(&server);

    let first = get(&service).await;
    let expires_at = first.expires_at().unwrap();
    let refresh_at = first.refresh_at().unwrap();
    assert_eq!(expires_at - refresh_at, Duration::from_secs(15));

    tokio::time::pause();
    for _ in 0..14 {
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..10 {
            assert!(
                get(&service).await.ptr_eq(&first),
                "not re-requested per call"
            );
        }
    }
    advance_to_just_before(refresh_at).await;
    assert!(get(&service).await.ptr_eq(&first));
    assert_eq!(server.request_count(), 1);

    advance_past(refresh_at).await;
    tokio::time::resume();
    assert_eq!(get(&service).await.access_token(), "tok-2--");
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn a_custom_buffer_is_honoured() {
    let server = TokenServer::start();
    server.set_expires_in(Some(json!(3600)));
    let mut options = options_for(&server, |_| {});
    options.cache_lifetime_buffer = Duration::from_secs(300);
    let service = AccessTokenManagementService::new(options).unwrap();
    let token = get(&service).await;
    assert_eq!(
        token.expires_at().unwrap() - token.refresh_at().unwrap(),
        Duration::from_secs(300)
    );
}

#[tokio::test]
async fn without_expires_in_the_token_is_kept_until_deleted() {
    let server = TokenServer::start();
    server.set_expires_in(None);
    let service = service_for(&server);

    let first = get(&service).await;
    assert_eq!(first.expires_at(), None);
    assert_eq!(first.refresh_at(), None);

    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(30 * 24 * 3600)).await;
    assert!(get(&service).await.ptr_eq(&first));
    assert_eq!(server.request_count(), 1);
    tokio::time::resume();

    service
        .delete_client_access_token(CLIENT, &defaults())
        .await
        .unwrap();
    assert_eq!(get(&service).await.access_token(), "tok-2--");
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn many_tokens_are_all_renewed_by_the_one_refresh_scheduler() {
    const KEYS: usize = 1_000;
    let server = TokenServer::start();
    server.set_expires_in(Some(json!(120)));
    let service = service_for(&server);
    let parameters: Vec<_> = (0..KEYS)
        .map(|i| scoped(&format!("scope.{i}"), &[]))
        .collect();

    let mut first = Vec::with_capacity(KEYS);
    for chunk in parameters.chunks(50) {
        let fetches = chunk
            .iter()
            .map(|p| service.get_client_access_token(CLIENT, p));
        for token in futures_util::future::join_all(fetches).await {
            first.push(token.expect("token"));
        }
    }
    assert_eq!(server.request_count(), KEYS);
    let earliest = first.iter().filter_map(ClientAccessToken::refresh_at).min();
    let latest = first.iter().filter_map(ClientAccessToken::refresh_at).max();
    let (earliest, latest) = (earliest.unwrap(), latest.unwrap());

    tokio::time::pause();
    advance_to_just_before(earliest).await;
    for (p, token) in parameters.iter().zip(&first) {
        let again = service.get_client_access_token(CLIENT, p).await.unwrap();
        assert!(again.ptr_eq(token), "still cached before its refresh time");
    }
    assert_eq!(server.request_count(), KEYS);

    advance_past(latest).await;
    assert!(
        first.iter().all(|t| !t.is_fresh()),
        "every token marked stale"
    );
    tokio::time::resume();
    for (p, token) in parameters.iter().zip(&first) {
        let renewed = service.get_client_access_token(CLIENT, p).await.unwrap();
        assert!(!renewed.ptr_eq(token), "renewed after its refresh time");
        assert!(renewed.is_fresh());
    }
    assert_eq!(server.request_count(), 2 * KEYS);
}

/// The refresh scheduler runs on the runtime that first armed a token. When that runtime is gone,
/// the tokens it was timing are stale (conservatively), and a service used from another runtime
/// still has its tokens marked stale at their refresh time.
#[test]
fn renewals_still_happen_on_a_new_runtime_after_the_first_is_gone() {
    let server = TokenServer::start();
    server.set_expires_in(Some(json!(120)));
    let service = service_for(&server);
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };

    let first_runtime = runtime();
    let first = first_runtime.block_on(get(&service));
    assert!(first.is_fresh());
    drop(first_runtime);
    assert!(!first.is_fresh(), "its timer went with its runtime");

    runtime().block_on(async {
        let second = get(&service).await;
        assert!(!second.ptr_eq(&first));
        assert_eq!(server.request_count(), 2);
        let refresh_at = second.refresh_at().unwrap();

        tokio::time::pause();
        advance_to_just_before(refresh_at).await;
        assert!(get(&service).await.ptr_eq(&second));
        advance_past(refresh_at).await;
        assert!(
            !second.is_fresh(),
            "marked stale by a scheduler on this runtime"
        );
        tokio::time::resume();
        let third = get(&service).await;
        assert!(!third.ptr_eq(&second));
        assert_eq!(server.request_count(), 3);
    });
}
