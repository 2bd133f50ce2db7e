//! A cache hit for the client's default request does not allocate.
//!
//! The test binary's global allocator counts allocations made on the current thread while counting
//! is switched on (a `const` thread-local, so counting itself never allocates); other tests running
//! on other threads are not counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use token_mgmt_tests::token_server::TokenServer;

use crate::{CLIENT, defaults, service_for};

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
