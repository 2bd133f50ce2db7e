//! The cache hit for the client's default request: it does not allocate, and its fast path (the
//! default cache and clock read without dynamic dispatch) keeps every guarantee.
//!
//! The test binary's global allocator counts allocations made on the current thread while counting
//! is switched on (a `const` thread-local, so counting itself never allocates); other tests running
//! on other threads are not counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;
use token_mgmt::tokens::{
    AccessTokenManagementService, ClientAccessToken, ClientAccessTokenCache as _,
    InMemoryClientAccessTokenCache,
};
use token_mgmt_tests::token_server::TokenServer;

use crate::{CLIENT, defaults, manual_service, options_for, service_for};

struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to `System`; only adds a thread-local counter.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

#[tokio::test]
async fn a_default_cache_hit_does_not_allocate() {
    let server = TokenServer::start();
    let service = service_for(&server);
    let parameters = defaults();
    let first = service
        .get_client_access_token(CLIENT, &parameters)
        .await
        .unwrap();

    COUNTING.with(|c| c.set(true));
    for _ in 0..1_000 {
        let token = service
            .get_client_access_token(CLIENT, &parameters)
            .await
            .unwrap();
        assert!(token.ptr_eq(&first));
    }
    COUNTING.with(|c| c.set(false));
    assert_eq!(ALLOCATIONS.with(Cell::get), 0);
    assert_eq!(server.request_count(), 1);
}

async fn get(service: &AccessTokenManagementService) -> ClientAccessToken {
    service
        .get_client_access_token(CLIENT, &defaults())
        .await
        .expect("token")
}

/// A token stored directly in a cache, valid for an hour.
fn direct_token() -> ClientAccessToken {
    let expires_at = SystemTime::now() + Duration::from_secs(3600);
    ClientAccessToken::new("direct", None, Some(expires_at), None, None).expect("valid token")
}

/// The hit of a service built with a clock of its own reads that clock, not the system's.
#[tokio::test]
async fn a_hit_decides_freshness_on_the_injected_clock() {
    let server = TokenServer::start();
    server.set_expires_in(Some(json!(3600)));
    let mut options = options_for(&server, |_| {});
    options.background_refresh = false;
    let (service, clock) = manual_service(options);
    let first = get(&service).await;
    assert!(get(&service).await.ptr_eq(&first));

    // Two hours on the service clock, none on the system's: the hit must not serve the token.
    clock.advance(Duration::from_secs(2 * 3600));
    let second = get(&service).await;
    assert!(!second.same_token(&first), "an expired token was served");
    assert_eq!(server.request_count(), 2);
}

/// The default cache the hit reads directly is the one `cache()` returns: what is stored in or
/// deleted from it is what the next call sees.
#[tokio::test]
async fn the_hit_reads_the_cache_the_service_exposes() {
    let server = TokenServer::start();
    let service = service_for(&server);
    let first = get(&service).await;
    let key = service.cache_key(CLIENT, &defaults()).unwrap();

    service.cache().set(&key, direct_token()).await.unwrap();
    assert_eq!(get(&service).await.access_token(), "direct");
    service.cache().delete(&key).await.unwrap();
    let renewed = get(&service).await;
    assert!(!renewed.same_token(&first));
    assert_eq!(server.request_count(), 2);
}

/// A custom cache stays the only store: the service reads it on every call.
#[tokio::test]
async fn a_custom_cache_is_the_store_a_hit_reads() {
    let server = TokenServer::start();
    let cache = Arc::new(InMemoryClientAccessTokenCache::new());
    let service = AccessTokenManagementService::builder(options_for(&server, |_| {}))
        .cache(cache.clone())
        .build()
        .unwrap();
    let first = get(&service).await;
    let key = service.cache_key(CLIENT, &defaults()).unwrap();
    assert!(cache.get_cached(&key).unwrap().ptr_eq(&first));

    cache.set(&key, direct_token()).await.unwrap();
    assert_eq!(get(&service).await.access_token(), "direct");
    assert_eq!(server.request_count(), 1);
}
