//! Single flight: one request per cache key, whoever asks and however many.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use token_mgmt::tokens::{
    AccessTokenManagementService, ClientAccessToken, TokenError, TokenRequestParameters,
};
use token_mgmt_tests::token_server::TokenServer;
use tokio::sync::Barrier;

use crate::{CLIENT, defaults, options_for, scoped, service_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_callers_on_a_cold_cache_make_one_request() {
    let server = TokenServer::start();
    let service = service_for(&server);
    let barrier = Arc::new(Barrier::new(1000));
    let callers: Vec<_> = (0..1000)
        .map(|_| {
            let service = service.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                service.get_client_access_token(CLIENT, &defaults()).await
            })
        })
        .collect();
    let mut tokens = Vec::with_capacity(1000);
    for caller in callers {
        tokens.push(caller.await.expect("caller task").expect("token"));
    }
    assert_eq!(server.request_count(), 1);
    let first = tokens[0].access_token().to_owned();
    assert_eq!(first, "tok-1--");
    assert!(tokens.iter().all(|t| t.access_token() == first));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_scopes_times_two_resources_times_200_callers_make_six_requests() {
    let server = TokenServer::start();
    let service = service_for(&server);
    let scopes = ["read", "write", "admin"];
    let resources = ["urn:orders", "urn:billing"];
    let barrier = Arc::new(Barrier::new(scopes.len() * resources.len() * 200));
    let mut callers = Vec::new();
    for _ in 0..200 {
        for scope in scopes {
            for resource in resources {
                let service = service.clone();
                let barrier = barrier.clone();
                callers.push(tokio::spawn(async move {
                    barrier.wait().await;
                    let token = service
                        .get_client_access_token(CLIENT, &scoped(scope, &[resource]))
                        .await;
                    (scope, resource, token)
                }));
            }
        }
    }
    let mut per_key: HashMap<(&str, &str), String> = HashMap::new();
    for caller in callers {
        let (scope, resource, token) = caller.await.expect("caller task");
        let token = token.expect("token").access_token().to_owned();
        // The server encodes the request's scope and resource into the token.
        assert!(
            token.ends_with(&format!("-{scope}-{resource}")),
            "caller for {scope}/{resource} got {token}"
        );
        let seen = per_key
            .entry((scope, resource))
            .or_insert_with(|| token.clone());
        assert_eq!(*seen, token, "all callers of one key share one token");
    }
    assert_eq!(per_key.len(), 6);
    assert_eq!(server.request_count(), 6);
}

/// The first caller starts the request and is aborted while the server holds it; the callers that
/// joined still get the token, and there is still only one request.
#[tokio::test]
async fn cancelling_the_first_caller_does_not_fail_the_others() {
    let server = TokenServer::start();
    server.hold_all();
    let service = service_for(&server);

    let first = {
        let service = service.clone();
        tokio::spawn(async move { service.get_client_access_token(CLIENT, &defaults()).await })
    };
    server.wait_for_requests(1).await; // the first caller's request is at the server, held
    let spawn_waiter = || {
        let service = service.clone();
        tokio::spawn(async move { service.get_client_access_token(CLIENT, &defaults()).await })
    };
    let mut waiters: Vec<_> = (0..20).map(|_| spawn_waiter()).collect();
    // Current-thread runtime: one yield lets every spawned waiter run up to its wait on the flight.
    tokio::task::yield_now().await;

    first.abort();
    let aborted = first.await.expect_err("the first caller was aborted");
    assert!(aborted.is_cancelled());
    waiters.extend((0..5).map(|_| spawn_waiter())); // callers arriving after the abort join too

    server.release();
    for waiter in waiters {
        let token = waiter.await.expect("waiter task").expect("token");
        assert_eq!(token.access_token(), "tok-1--");
    }
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn a_slow_key_does_not_delay_another_key() {
    let server = TokenServer::start();
    server.hold_scope("slow");
    let service = service_for(&server);

    let slow = {
        let service = service.clone();
        tokio::spawn(async move {
            service
                .get_client_access_token(CLIENT, &scoped("slow", &[]))
                .await
        })
    };
    server.wait_for_requests(1).await;

    // Same client, other keys: the default one and another scope, while `slow` is held.
    let fast = service
        .get_client_access_token(CLIENT, &scoped("fast", &[]))
        .await
        .expect("fast token");
    assert_eq!(fast.access_token(), "tok-2-fast-");
    let default = service
        .get_client_access_token(CLIENT, &defaults())
        .await
        .expect("default token");
    assert_eq!(default.access_token(), "tok-3--");
    assert!(
        !slow.is_finished(),
        "the slow key is still held at the server"
    );

    server.release();
    let slow = slow.await.expect("slow task").expect("slow token");
    assert_eq!(slow.access_token(), "tok-1-slow-");
    assert_eq!(server.request_count(), 3);
}

#[tokio::test]
async fn errors_reach_every_waiter_and_are_not_cached() {
    let server = TokenServer::start();
    server.hold_all();
    server.respond(
        400,
        "application/json",
        r#"{"error":"invalid_client","error_description":"unknown client"}"#,
    );
    let mut options = options_for(&server, |_| {});
    options.failure_cooldown = Duration::ZERO; // the cool-down has tests of its own
    let service = AccessTokenManagementService::new(options).unwrap();
    let waiters: Vec<_> = (0..50)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move { service.get_client_access_token(CLIENT, &defaults()).await })
        })
        .collect();
    server.wait_for_requests(1).await;
    server.release();
    for waiter in waiters {
        let error = waiter.await.expect("waiter task").expect_err("an error");
        assert!(
            matches!(&error, TokenError::Endpoint { error: Some(e), .. } if e == "invalid_client"),
            "{error:?}"
        );
    }
    assert_eq!(server.request_count(), 1);

    server.set_mode(token_mgmt_tests::token_server::Mode::Issue);
    let token = service
        .get_client_access_token(CLIENT, &defaults())
        .await
        .expect("token after the error");
    assert_eq!(token.access_token(), "tok-2--");
}

#[tokio::test]
async fn force_renewal_replaces_the_cached_token() {
    let server = TokenServer::start();
    let service = service_for(&server);
    let first = service
        .get_client_access_token(CLIENT, &defaults())
        .await
        .unwrap();
    let cached = service
        .get_client_access_token(CLIENT, &defaults())
        .await
        .unwrap();
    assert!(cached.ptr_eq(&first));
    assert_eq!(server.request_count(), 1);

    let renewed = service
        .get_client_access_token(CLIENT, &TokenRequestParameters::force_renewal())
        .await
        .unwrap();
    assert_eq!(renewed.access_token(), "tok-2--");
    assert_eq!(server.request_count(), 2);

    let after = service
        .get_client_access_token(CLIENT, &defaults())
        .await
        .unwrap();
    assert!(
        after.ptr_eq(&renewed),
        "the forced token replaced the cached one"
    );
    assert_eq!(server.request_count(), 2);
}

/// Forced callers that arrive while a forced renewal is in flight share it.
#[tokio::test]
async fn concurrent_forced_renewals_are_coalesced() {
    let server = TokenServer::start();
    let service = service_for(&server);
    let first = service
        .get_client_access_token(CLIENT, &defaults())
        .await
        .unwrap();
    assert_eq!(first.access_token(), "tok-1--");

    server.hold_all();
    let forced: Vec<_> = (0..50)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move {
                service
                    .get_client_access_token(CLIENT, &TokenRequestParameters::force_renewal())
                    .await
            })
        })
        .collect();
    // Current-thread runtime: the 50 callers run (and join one flight) before the flight's task
    // sends the request, so once the server has seen it every forced caller is waiting on it.
    server.wait_for_requests(2).await;

    // A normal caller meanwhile still gets the cached token without waiting.
    let normal = service
        .get_client_access_token(CLIENT, &defaults())
        .await
        .unwrap();
    assert!(normal.ptr_eq(&first));

    server.release();
    let tokens: Vec<ClientAccessToken> = futures_util::future::join_all(forced)
        .await
        .into_iter()
        .map(|r| r.expect("forced task").expect("forced token"))
        .collect();
    assert!(tokens.iter().all(|t| t.access_token() == "tok-2--"));
    assert_eq!(server.request_count(), 2);
}

/// A caller that joined a flight and then stopped polling (kept in a `select!` that moved on, a
/// task starved by blocking work) must not hold up the others' tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_stops_polling_does_not_hold_up_the_others() {
    let server = TokenServer::start();
    server.hold_all();
    let service = service_for(&server);

    // Joins the flight (first, so first in any queue of waiters), then is never polled again.
    let parameters = defaults();
    let mut stalled = Box::pin(service.get_client_access_token(CLIENT, &parameters));
    let noop = std::task::Waker::noop();
    assert!(
        stalled
            .as_mut()
            .poll(&mut std::task::Context::from_waker(noop))
            .is_pending()
    );
    server.wait_for_requests(1).await;

    let callers: Vec<_> = (0..8)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move { service.get_client_access_token(CLIENT, &defaults()).await })
        })
        .collect();
    tokio::task::yield_now().await;
    server.release();
    for caller in callers {
        let token = tokio::time::timeout(Duration::from_secs(20), caller)
            .await
            .expect("a caller waited on the stalled one")
            .expect("caller task")
            .expect("token");
        assert_eq!(token.access_token(), "tok-1--");
    }
    assert_eq!(server.request_count(), 1);
    drop(stalled);
}
