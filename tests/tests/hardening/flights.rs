//! Items 5 and 12: flights.
//!
//! A forced renewal is never overwritten by the token of an older, slower flight (before the fix,
//! forced and normal flights lived in separate maps and the last one to finish won). A finished
//! flight is never joined: before the fix a flight published its result before leaving the in-flight
//! map, so a caller arriving in between got the previous caller's result (an error included) without
//! a request of its own.

use std::time::Duration;

use serde_json::json;
use token_mgmt::tokens::{AccessTokenManagementService, RetryPolicy};
use token_mgmt_tests::token_server::TokenServer;

use crate::{CLIENT, defaults, force, get, guarded, manual_service, options_for, try_get};

/// Sequential calls in the item 12 tests. Each makes one real loopback request.
const SEQUENTIAL: usize = 2000;

#[tokio::test]
async fn a_slow_normal_flight_never_overwrites_a_later_forced_renewal() {
    let server = TokenServer::start();
    let (service, _clock) = manual_service(options_for(&server, |_| {}));

    // A normal caller on a cold cache: its request (token 1) is held at the server.
    server.hold_all();
    let slow = tokio::spawn({
        let service = service.clone();
        async move { get(&service).await }
    });
    server.wait_for_requests(1).await;
    // Requests from now on are answered at once (the held one stays held until `release`).
    server.hold_scope("nothing is held");

    // A forced renewal started later does not join the normal flight, and finishes first.
    let forced = guarded("the forced renewal", force(&service)).await;
    assert_eq!(forced.access_token(), "tok-2--");

    server.release();
    let older = slow.await.unwrap();
    assert_eq!(
        older.access_token(),
        "tok-1--",
        "its caller gets its own result"
    );

    // The cache holds the newer token.
    let cached = get(&service).await;
    assert!(cached.ptr_eq(&forced), "got {:?}", cached.access_token());
    let key = service.cache_key(CLIENT, &defaults()).unwrap();
    let stored = service.cache().get(&key).await.unwrap().unwrap();
    assert_eq!(stored.access_token(), "tok-2--");
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn a_slow_background_renewal_never_overwrites_the_renewal_of_a_rejected_token() {
    let server = TokenServer::start();
    server.set_expires_in(Some(json!(120)));
    let mut options = options_for(&server, |_| {});
    options.background_refresh = false;
    let (service, clock) = manual_service(options);
    let first = get(&service).await;

    // Due: the caller gets the token and a background renewal starts; it is held at the server.
    server.hold_all();
    clock.advance(Duration::from_secs(61));
    assert!(get(&service).await.ptr_eq(&first));
    server.wait_for_requests(2).await;
    server.hold_scope("nothing is held");

    // Past the first token's expiry a caller waits, and joins the background renewal (so that the
    // test can tell when that flight has finished).
    clock.advance(Duration::from_secs(55));
    let joined = tokio::spawn({
        let service = service.clone();
        async move { get(&service).await }
    });
    tokio::task::yield_now().await;

    // An API rejects the token: its renewal is forced, does not join, and finishes first.
    let renewed = guarded(
        "the renewal",
        service.renew_rejected_token(CLIENT, &defaults()),
    )
    .await
    .unwrap();
    assert_eq!(renewed.access_token(), "tok-3--");

    // The background renewal's token (requested earlier) arrives last: its caller gets it, the cache
    // keeps the newer one.
    server.release();
    let older = guarded("the background renewal", joined).await.unwrap();
    assert_eq!(older.access_token(), "tok-2--");
    let cached = get(&service).await;
    assert!(cached.ptr_eq(&renewed), "got {:?}", cached.access_token());
    assert_eq!(server.request_count(), 3);
}

fn failing_server() -> TokenServer {
    let server = TokenServer::start();
    server.respond(
        500,
        "application/json",
        r#"{"error":"temporarily_unavailable"}"#,
    );
    server
}

fn single_attempt_service(server: &TokenServer) -> AccessTokenManagementService {
    let mut options = options_for(server, |_| {});
    options.retry = RetryPolicy::none();
    options.failure_cooldown = Duration::ZERO;
    AccessTokenManagementService::new(options).unwrap()
}

/// In `#[tokio::main]`-style code: the test body calls the service directly.
#[tokio::test]
async fn sequential_calls_after_failures_each_make_their_own_request() {
    let server = failing_server();
    let service = single_attempt_service(&server);
    for i in 1..=SEQUENTIAL {
        let error = try_get(&service).await.expect_err("the endpoint fails");
        assert_eq!(error.status().map(|s| s.as_u16()), Some(500));
        assert_eq!(server.request_count(), i, "call {i} made its own request");
    }
}

#[test]
fn sequential_calls_after_failures_in_block_on_each_make_their_own_request() {
    let server = failing_server();
    let service = single_attempt_service(&server);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for i in 1..=SEQUENTIAL {
        runtime
            .block_on(try_get(&service))
            .expect_err("the endpoint fails");
        assert_eq!(server.request_count(), i, "call {i} made its own request");
    }
}

#[tokio::test]
async fn sequential_forced_renewals_each_get_a_new_token() {
    let server = TokenServer::start();
    let service = AccessTokenManagementService::new(options_for(&server, |_| {})).unwrap();
    let mut previous = get(&service).await;
    for i in 1..=SEQUENTIAL {
        let renewed = force(&service).await;
        assert!(
            !renewed.same_token(&previous),
            "forced renewal {i} returned the previous token"
        );
        previous = renewed;
    }
    assert_eq!(server.request_count(), SEQUENTIAL + 1);
}
