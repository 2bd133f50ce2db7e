//! Background renewal: tokens in use are renewed before they are due, once per key, with nobody
//! waiting; keys nobody uses are neither renewed nor kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use token_mgmt::tokens::{
    ClientAccessTokenCache, InMemoryClientAccessTokenCache, Stamp, TokenRequestParameters,
};

use crate::{
    CLIENT, clock_and_server, get_with, guard, options_for, scoped, secs, service_on, until,
};

/// 64 callers call in a loop across 5 rollovers of two keys. Each renewal is held at the server
/// until every caller has completed 3 more calls: so no caller's call waits for a token request
/// (a waiting caller would make no progress while the request is held). There is exactly one
/// request per rollover per key, at the refresh time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_rollovers_under_64_callers_renew_once_per_key_and_nobody_waits() {
    const ROLLOVERS: u64 = 5;
    const CALLERS: usize = 64;
    const CALLS_WHILE_HELD: usize = 3;
    let (clock, server) = clock_and_server();
    server.set_expires_in(Some(120)); // due after 60 s (the default 60 s buffer), expired at 115 s
    let service = service_on(options_for(&server), &clock);
    let keys = [TokenRequestParameters::default(), scoped("b")];
    let scopes = ["", "b"];

    let mut current = Vec::new();
    for key in &keys {
        current.push(get_with(&service, key).await.expect("first token"));
    }
    assert_eq!(server.request_count(), 2);

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let progress: Arc<Vec<AtomicUsize>> =
        Arc::new((0..CALLERS).map(|_| AtomicUsize::new(0)).collect());
    let callers: Vec<_> = (0..CALLERS)
        .map(|i| {
            let (service, stop, failures, progress) = (
                service.clone(),
                stop.clone(),
                failures.clone(),
                progress.clone(),
            );
            let key = keys[i % 2].clone();
            let suffix = format!("-{}-", scopes[i % 2]);
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match service.get_client_access_token(CLIENT, &key).await {
                        Ok(token) => assert!(
                            token.access_token().ends_with(&suffix),
                            "caller of key {suffix} got another key's token"
                        ),
                        Err(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    progress[i].fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();

    for rollover in 1..=ROLLOVERS {
        server.hold();
        let before = server.request_count();
        clock.advance(secs(60)); // both tokens are now due
        guard(
            "the renewals to reach the server",
            server.wait_for_requests(before + 2),
        )
        .await;
        // Both renewals are held at the server. Every caller still completes calls.
        let seen: Vec<usize> = progress.iter().map(|p| p.load(Ordering::Relaxed)).collect();
        until(
            "every caller to complete calls while renewals are held",
            || {
                progress
                    .iter()
                    .zip(&seen)
                    .all(|(p, s)| p.load(Ordering::Relaxed) >= s + CALLS_WHILE_HELD)
            },
        )
        .await;
        assert_eq!(
            server.request_count(),
            before + 2,
            "rollover {rollover}: one request per key, whatever the callers do"
        );
        server.release();
        for (k, key) in keys.iter().enumerate() {
            let old = current[k].clone();
            let renewed = guard("the renewed token to be cached", async {
                loop {
                    let token = service.get_client_access_token(CLIENT, key).await.unwrap();
                    if !token.ptr_eq(&old) {
                        break token;
                    }
                    tokio::task::yield_now().await;
                }
            })
            .await;
            assert!(
                renewed
                    .access_token()
                    .ends_with(&format!("-{}-", scopes[k]))
            );
            current[k] = renewed;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        guard("a caller to stop", caller)
            .await
            .expect("caller task");
    }

    assert_eq!(failures.load(Ordering::Relaxed), 0, "no call failed");
    let total: usize = progress.iter().map(|p| p.load(Ordering::Relaxed)).sum();
    assert!(total >= CALLERS * CALLS_WHILE_HELD * ROLLOVERS as usize);
    assert_eq!(server.request_count(), 2 * (1 + ROLLOVERS as usize));
    for scope in scopes {
        let times: Vec<Stamp> = server
            .requests()
            .iter()
            .filter(|r| r.scope == scope)
            .map(|r| r.at.unwrap())
            .collect();
        let expected: Vec<Stamp> = (0..=ROLLOVERS)
            .map(|n| Stamp::from_nanos(0).saturating_add(secs(60 * n)))
            .collect();
        assert_eq!(
            times, expected,
            "key `{scope}`: one request per rollover, at its refresh time"
        );
    }
}

/// With a 30 s idle window, a key used until 50 s is renewed at its refresh time (60 s); a key
/// nobody asked for since 0 s is not renewed and its token is dropped from the cache. Once the
/// renewed key goes unused too, it is dropped at its next refresh time.
#[tokio::test]
async fn an_idle_key_is_not_renewed_and_its_token_is_dropped() {
    let (clock, server) = clock_and_server();
    server.set_expires_in(Some(120));
    let mut options = options_for(&server);
    options.idle_timeout = Some(secs(30));
    let cache = Arc::new(InMemoryClientAccessTokenCache::with_max_entries(100));
    let service = token_mgmt::tokens::AccessTokenManagementService::builder(options)
        .clock(clock.clone())
        .cache(cache.clone())
        .build()
        .unwrap();
    let (used, idle) = (scoped("used"), scoped("idle"));
    let used_key = service.cache_key(CLIENT, &used).unwrap();
    let idle_key = service.cache_key(CLIENT, &idle).unwrap();

    let first = get_with(&service, &used).await.unwrap();
    get_with(&service, &idle).await.unwrap();
    for _ in 0..5 {
        clock.advance(secs(10));
        assert!(get_with(&service, &used).await.unwrap().ptr_eq(&first));
    }
    assert_eq!(cache.len(), 2);

    clock.advance(secs(10)); // 60 s: both refresh times
    guard("the renewal of the used key", server.wait_for_requests(3)).await;
    until("the idle token to be dropped", || {
        cache.get_cached(&idle_key).is_none()
    })
    .await;
    until("the renewed token to be cached", || {
        cache
            .get_cached(&used_key)
            .is_some_and(|t| !t.ptr_eq(&first))
    })
    .await;
    assert_eq!(cache.len(), 1);
    let renewed = cache.get_cached(&used_key).unwrap();
    assert_eq!(renewed.access_token(), "tok-3-used-");

    // Nobody uses `used` any more: at its next refresh time (120 s) it is dropped, not renewed.
    clock.advance(secs(60));
    until("the unused renewed token to be dropped", || {
        cache.is_empty()
    })
    .await;
    let scopes: Vec<String> = server.requests().into_iter().map(|r| r.scope).collect();
    assert_eq!(
        scopes,
        ["used", "idle", "used"],
        "no renewal of an idle key"
    );

    // A dropped key is simply requested again on its next use.
    let again = get_with(&service, &idle).await.unwrap();
    assert_eq!(again.access_token(), "tok-4-idle-");
}

/// A renewal is sent at 60 s and held at the server while the clock jumps to 260 s (a suspended
/// machine, a stalled network): the token it brings back (120 s from 60 s) has expired before it
/// arrives. A caller that arrived at 260 s with no valid token, and waited on that renewal, must not
/// be handed it: it gets a token requested for it.
#[tokio::test]
async fn a_token_that_expired_in_flight_is_not_handed_out() {
    let (clock, server) = clock_and_server();
    server.set_expires_in(Some(120));
    let options = options_for(&server);
    let margin = options.expiry_safety_margin;
    let service = service_on(options, &clock);
    let first = crate::get(&service).await.unwrap();

    server.hold();
    clock.advance(secs(60));
    assert!(
        crate::get(&service).await.unwrap().ptr_eq(&first),
        "due: served"
    );
    guard("the renewal", server.wait_for_requests(2)).await;
    clock.advance(secs(200));
    let waiter = {
        let service = service.clone();
        tokio::spawn(async move {
            service
                .get_client_access_token(CLIENT, &Default::default())
                .await
        })
    };
    tokio::task::yield_now().await; // one thread: the waiter runs up to its wait on the renewal
    server.release();
    let token = guard("the waiter", waiter).await.unwrap().expect("a token");
    let now = token_mgmt::tokens::Clock::system_time(&*clock);
    assert!(
        token.expires_at().unwrap() - margin > now,
        "{} expired at {:?}, now {now:?}",
        token.access_token(),
        token.expires_at()
    );
    assert_eq!(token.access_token(), "tok-3--");
    assert_eq!(server.request_count(), 3);
}
