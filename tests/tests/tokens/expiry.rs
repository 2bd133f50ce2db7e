//! Cache lifetime, on a [`ManualClock`](token_mgmt::tokens::ManualClock): the service decides
//! freshness by reading its clock on every call, so nothing here depends on a background task.

use std::time::Duration;

use serde_json::json;
use token_mgmt::tokens::{AccessTokenManagementService, ClientAccessToken};
use token_mgmt_tests::token_server::TokenServer;

use crate::{CLIENT, defaults, manual_service, options_for, scoped};

const MILLI: Duration = Duration::from_millis(1);

async fn get(service: &AccessTokenManagementService) -> ClientAccessToken {
    service
        .get_client_access_token(CLIENT, &defaults())
        .await
        .expect("token")
}

#[tokio::test]
async fn expires_in_120_is_cached_until_60_seconds_then_renewed() {
    let server = TokenServer::start();
    server.set_expires_in(Some(json!(120)));
    let mut options = options_for(&server, |_| {});
    options.background_refresh = false;
    let (service, clock) = manual_service(options);

    let first = get(&service).await;
    assert_eq!(
        first
            .expires_at()
            .unwrap()
            .duration_since(first.refresh_at().unwrap())
            .unwrap(),
        Duration::from_secs(60),
        "60 s buffer"
    );

    // Just under 60 s after the request was sent: still the cached token, no request.
    clock.advance(Duration::from_secs(60) - MILLI);
    for _ in 0..100 {
        assert!(get(&service).await.ptr_eq(&first));
    }
    assert_eq!(server.request_count(), 1);

    // Past 60 s: due. The caller still gets the valid token at once; the renewal runs behind it.
    clock.advance(2 * MILLI);
    assert!(get(&service).await.ptr_eq(&first), "served while renewing");
    server.wait_for_requests(2).await;
    let second = wait_for_new_token(&service, &first).await;
    assert_eq!(second.access_token(), "tok-2--");
    assert_eq!(server.request_count(), 2);
    // The renewed token is cached in its turn.
    assert!(get(&service).await.ptr_eq(&second));
    assert_eq!(server.request_count(), 2);
}

/// Polls (without sleeping: each call yields to the runtime) until the cache holds a token other
/// than `old`.
async fn wait_for_new_token(
    service: &AccessTokenManagementService,
    old: &ClientAccessToken,
) -> ClientAccessToken {
    loop {
        let token = get(service).await;
        if !token.ptr_eq(old) {
            return token;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn expires_in_30_below_the_buffer_is_still_cached_for_half_its_lifetime() {
    let server = TokenServer::start();
    server.set_expires_in(Some(json!(30)));
    let mut options = options_for(&server, |_| {});
    options.background_refresh = false;
    let (service, clock) = manual_service(options);

    let first = get(&service).await;
    assert_eq!(
        first
            .expires_at()
            .unwrap()
            .duration_since(first.refresh_at().unwrap())
            .unwrap(),
        Duration::from_secs(15)
    );
    for _ in 0..14 {
        clock.advance(Duration::from_secs(1));
        for _ in 0..10 {
            assert!(
                get(&service).await.ptr_eq(&first),
                "not re-requested per call"
            );
        }
    }
    clock.advance(Duration::from_secs(1) - MILLI);
    assert!(get(&service).await.ptr_eq(&first));
    assert_eq!(server.request_count(), 1);

    // Past its expiry (30 s, minus the 5 s safety margin): never served; the caller waits.
    clock.advance(Duration::from_secs(10) + 2 * MILLI);
    assert_eq!(get(&service).await.access_token(), "tok-2--");
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn a_custom_buffer_is_honoured() {
    let server = TokenServer::start();
    server.set_expires_in(Some(json!(3600)));
    let mut options = options_for(&server, |_| {});
    options.cache_lifetime_buffer = Duration::from_secs(300);
    let (service, _clock) = manual_service(options);
    let token = get(&service).await;
    assert_eq!(
        token
            .expires_at()
            .unwrap()
            .duration_since(token.refresh_at().unwrap())
            .unwrap(),
        Duration::from_secs(300)
    );
}

#[tokio::test]
async fn without_expires_in_the_token_is_kept_until_deleted() {
    let server = TokenServer::start();
    server.set_expires_in(None);
    let (service, clock) = manual_service(options_for(&server, |_| {}));

    let first = get(&service).await;
    assert_eq!(first.expires_at(), None);
    assert_eq!(first.refresh_at(), None);

    clock.advance(Duration::from_secs(30 * 24 * 3600));
    assert!(get(&service).await.ptr_eq(&first));
    assert_eq!(server.request_count(), 1);

    service
        .delete_client_access_token(CLIENT, &defaults())
        .await
        .unwrap();
    assert_eq!(get(&service).await.access_token(), "tok-2--");
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn an_expired_token_is_never_returned_on_any_key() {
    const KEYS: usize = 200;
    let server = TokenServer::start();
    server.set_expires_in(Some(json!(120)));
    let mut options = options_for(&server, |_| {});
    options.background_refresh = false;
    let (service, clock) = manual_service(options);
    let parameters: Vec<_> = (0..KEYS)
        .map(|i| scoped(&format!("scope.{i}"), &[]))
        .collect();

    let fetches = parameters
        .iter()
        .map(|p| service.get_client_access_token(CLIENT, p));
    let first: Vec<_> = futures_util::future::join_all(fetches)
        .await
        .into_iter()
        .map(|t| t.expect("token"))
        .collect();
    assert_eq!(server.request_count(), KEYS);

    clock.advance(Duration::from_secs(60) - MILLI);
    for (p, token) in parameters.iter().zip(&first) {
        let again = service.get_client_access_token(CLIENT, p).await.unwrap();
        assert!(again.ptr_eq(token), "still cached before its refresh time");
    }
    assert_eq!(server.request_count(), KEYS);

    // Past every expiry: each key waits for a new token.
    clock.advance(Duration::from_secs(120));
    for (p, token) in parameters.iter().zip(&first) {
        let renewed = service.get_client_access_token(CLIENT, p).await.unwrap();
        assert!(!renewed.ptr_eq(token), "an expired token is never served");
    }
    assert_eq!(server.request_count(), 2 * KEYS);
}

/// A 2-second token: the 5 s safety margin is capped at half its 1 s renewal window, so between its
/// refresh time (1 s) and its last serving moment (1.5 s) callers still get it at once while it is
/// renewed; nobody waits for the endpoint at the rollover.
#[tokio::test]
async fn a_short_lived_token_keeps_a_window_in_which_it_is_renewed_while_served() {
    let server = TokenServer::start();
    server.set_expires_in(Some(json!(2)));
    let mut options = options_for(&server, |_| {});
    options.background_refresh = false;
    let (service, clock) = manual_service(options);
    let first = get(&service).await;

    clock.advance(Duration::from_millis(1200));
    assert!(get(&service).await.ptr_eq(&first), "due, still served");
    server.wait_for_requests(2).await;
    let second = wait_for_new_token(&service, &first).await;
    assert_eq!(second.access_token(), "tok-2--");

    clock.advance(Duration::from_millis(1600));
    let third = get(&service).await;
    assert!(
        !third.ptr_eq(&second),
        "past 1.5 s of its life it is never served"
    );
}
