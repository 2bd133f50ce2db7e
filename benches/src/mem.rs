//! A counting global allocator, for the memory figures of the `scale` scenario and the allocations
//! per request of `per-request`.
//!
//! Only a binary can install it (`#[global_allocator]`); the `load` binary does. Counting is off
//! until [`CountingAllocator::enable`] so that scenarios which do not need it pay one relaxed load
//! per allocation and nothing else.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting live bytes while enabled.
#[derive(Debug, Default)]
pub struct CountingAllocator;

impl CountingAllocator {
    /// Starts counting. Blocks allocated before this and freed after it make the count drift
    /// down, so enable it first thing in `main` and compare [`live_bytes`](Self::live_bytes)
    /// deltas only.
    pub fn enable() {
        ENABLED.store(true, Ordering::SeqCst);
    }

    /// Whether this allocator is installed and counting: allocates and checks the count moved.
    pub fn is_active() -> bool {
        let before = Self::live_bytes();
        let probe = std::hint::black_box(vec![0u8; 4096]);
        let during = Self::live_bytes();
        drop(probe);
        during - before >= 4096
    }

    /// Live bytes allocated since counting started (may be negative, see [`enable`](Self::enable)).
    pub fn live_bytes() -> i64 {
        LIVE.load(Ordering::SeqCst) as i64
    }

    /// Allocations (and reallocations) made since counting started.
    pub fn allocations() -> u64 {
        ALLOCATIONS.load(Ordering::SeqCst)
    }

    /// Bytes requested by those allocations (a reallocation counts its new size).
    pub fn allocated_bytes() -> u64 {
        ALLOCATED.load(Ordering::SeqCst)
    }
}

#[inline]
fn count(delta: isize) {
    if ENABLED.load(Ordering::Relaxed) {
        LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

#[inline]
fn count_allocation(size: usize) {
    if ENABLED.load(Ordering::Relaxed) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED.fetch_add(size as u64, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments; counting has no effect
// on the memory handed out.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize);
            count_allocation(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize);
            count_allocation(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(new_size as isize - layout.size() as isize);
            count_allocation(new_size);
        }
        new
    }
}

/// Live bytes retained by what `build` returns: counted from just before to just after it, with
/// the result still alive. Returns the value and the byte delta.
pub fn retained_by<T>(build: impl FnOnce() -> T) -> (T, i64) {
    let before = CountingAllocator::live_bytes();
    let value = build();
    let after = CountingAllocator::live_bytes();
    (value, after - before)
}
