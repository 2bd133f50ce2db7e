//! Bounded memory: the cache cap holds, whatever the number of distinct keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use token_mgmt::tokens::{AccessTokenManagementService, InMemoryClientAccessTokenCache};

use crate::{CLIENT, clock_and_server, get_with, options_for, scoped, secs, service_on};

/// `max_cached_tokens` caps the default cache: with 16 tokens cached, a 17th evicts the least
/// recently used, which is then requested again; a recently used one is still cached.
#[tokio::test]
async fn max_cached_tokens_caps_the_default_cache() {
    let (clock, server) = clock_and_server();
    let mut options = options_for(&server);
    options.max_cached_tokens = 16;
    let service = service_on(options, &clock);
    for i in 0..16 {
        get_with(&service, &scoped(&format!("s{i}"))).await.unwrap();
        clock.advance(secs(1));
    }
    get_with(&service, &scoped("s15")).await.unwrap();
    assert_eq!(server.request_count(), 16, "all 16 cached");

    get_with(&service, &scoped("s16")).await.unwrap();
    assert_eq!(server.request_count(), 17);
    let again = get_with(&service, &scoped("s0")).await.unwrap();
    assert_eq!(again.access_token(), "tok-18-s0-", "s0 was evicted");
    get_with(&service, &scoped("s15")).await.unwrap();
    assert_eq!(server.request_count(), 18, "s15 is still cached");
}

/// 100,000 calls, each with its own scope (so each a cache miss and a token request), from 32
/// concurrent workers against the local endpoint: the cache never holds more than its 1,000-token
/// cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_scopes_keeps_the_cache_at_its_cap() {
    const CALLS: usize = 100_000;
    const WORKERS: usize = 32;
    const CAP: usize = 1_000;
    let (clock, server) = clock_and_server();
    let mut options = options_for(&server);
    options.max_cached_tokens = CAP;
    let cache = Arc::new(InMemoryClientAccessTokenCache::with_max_entries(CAP));
    let service = AccessTokenManagementService::builder(options)
        .clock(clock.clone())
        .cache(cache.clone())
        .build()
        .unwrap();

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let largest = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (service, cache, next, largest) = (
                service.clone(),
                cache.clone(),
                next.clone(),
                largest.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= CALLS {
                        break;
                    }
                    let scope = format!("scope.{i}");
                    let token = service
                        .get_client_access_token(CLIENT, &scoped(&scope))
                        .await
                        .expect("token");
                    assert!(token.access_token().ends_with(&format!("-{scope}-")));
                    largest.fetch_max(cache.len(), Ordering::Relaxed);
                }
            })
        })
        .collect();
    let all = futures_util::future::join_all(workers);
    let finished = tokio::time::timeout(Duration::from_secs(600), all).await;
    for worker in finished.expect("the flood finished within 10 minutes") {
        worker.expect("worker");
    }
    eprintln!(
        "{CALLS} calls with distinct scopes took {:?}",
        started.elapsed()
    );
    assert_eq!(server.request_count(), CALLS);
    assert!(largest.load(Ordering::Relaxed) <= CAP, "{largest:?}");
    assert!(cache.len() <= CAP);
    assert!(
        cache.len() >= CAP * 7 / 8,
        "the cache is used up to its cap"
    );
}
