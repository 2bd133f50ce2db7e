//! The cache-hit baselines: a bare `DashMap<Arc<str>, Arc<BareToken>>::get` plus an `Arc` clone,
//! and the same plus one expiry check against `CLOCK_BOOTTIME` (the clock token-mgmt's hit reads),
//! and the harness both the criterion bench and the `load cache-hit` scenario use (std threads
//! started together, a future polled to completion without a runtime).

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use http::HeaderValue;

/// Number of keys in the "many keys" variants.
pub const MANY_KEYS: usize = 1024;

/// What a token cache entry holds at minimum: the token, its precomputed `Authorization` header
/// value and its expiry.
#[derive(Debug)]
pub struct BareToken {
    /// The access token.
    pub access_token: String,
    /// `Bearer <access_token>`, marked sensitive.
    pub authorization: HeaderValue,
    /// When the entry stops being served.
    pub expires_at: Instant,
    /// The same deadline in nanoseconds on [`boot_time_nanos`]'s clock (what the clock baseline
    /// compares with).
    pub expires_at_boot: u64,
}

impl BareToken {
    /// A token of `len` bytes (at least 16) numbered `serial`, valid for an hour.
    pub fn new(serial: usize, len: usize) -> Self {
        let mut access_token = format!("at{serial:014x}");
        let len = len.max(access_token.len());
        access_token.extend(std::iter::repeat_n('x', len - access_token.len()));
        let mut authorization =
            HeaderValue::try_from(format!("Bearer {access_token}")).expect("ascii token");
        authorization.set_sensitive(true);
        Self {
            access_token,
            authorization,
            expires_at: Instant::now() + Duration::from_secs(3600),
            expires_at_boot: boot_time_nanos() + 3600 * 1_000_000_000,
        }
    }
}

/// The bare cache.
pub type BareCache = DashMap<Arc<str>, Arc<BareToken>>;

/// `count` client names, `client-00000`, `client-00001`, ...
pub fn client_names(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("client-{i:05}")).collect()
}

/// A bare cache with one 64-byte token per key.
pub fn bare_cache(keys: &[String]) -> BareCache {
    let cache = BareCache::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        cache.insert(Arc::from(key.as_str()), Arc::new(BareToken::new(i, 64)));
    }
    cache
}

/// The baseline operation: look the key up and clone the `Arc` out.
#[inline]
pub fn bare_lookup(cache: &BareCache, key: &str) -> Option<Arc<BareToken>> {
    cache.get(key).map(|entry| Arc::clone(entry.value()))
}

/// Nanoseconds on `CLOCK_BOOTTIME`, read as token-mgmt's `SystemClock` reads it (one
/// `clock_gettime` through the vDSO); std's `Instant` elsewhere.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline]
pub fn boot_time_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and CLOCK_BOOTTIME exists on every supported
    // kernel; clock_gettime only writes to the pointer it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// Nanoseconds since the first call (std's `Instant`), where `CLOCK_BOOTTIME` does not exist.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[inline]
pub fn boot_time_nanos() -> u64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The clock baseline: [`bare_lookup`] plus one read of the clock and one comparison with the
/// entry's expiry (an expired entry is not served), the least a correct time-checked hit does.
#[inline]
pub fn bare_lookup_checked(cache: &BareCache, key: &str) -> Option<Arc<BareToken>> {
    let token = cache.get(key).map(|entry| Arc::clone(entry.value()))?;
    (boot_time_nanos() < token.expires_at_boot).then_some(token)
}

/// Key index for iteration `i` of thread `thread` over `keys` keys: threads walk the keys from
/// different offsets, so with many keys they mostly touch different shards.
#[inline]
pub fn key_index(thread: usize, i: u64, keys: usize) -> usize {
    ((i as usize).wrapping_add(thread * (keys / 2 + 1))) % keys
}

/// Runs `op(thread, i)` for `i in 0..iters` on each of `threads` std threads, released together
/// by a barrier. Returns the wall time from the first thread's start to the last thread's end:
/// with 2 threads, `wall / iters` is the time for *both* threads to do one operation each, so it
/// equals the single-thread time per operation when the operation scales perfectly.
pub fn run_threads<F>(threads: usize, iters: u64, op: F) -> Duration
where
    F: Fn(usize, u64) + Sync,
{
    run_threads_in(None, threads, iters, op)
}

/// [`run_threads`] with each thread inside the tokio runtime context of `runtime` (for futures
/// that need one, such as ours polled by [`poll_ready`]).
pub fn run_threads_in<F>(
    runtime: Option<&tokio::runtime::Handle>,
    threads: usize,
    iters: u64,
    op: F,
) -> Duration
where
    F: Fn(usize, u64) + Sync,
{
    let threads = threads.max(1);
    let barrier = Barrier::new(threads);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let barrier = &barrier;
                let op = &op;
                scope.spawn(move || {
                    let _entered = runtime.map(tokio::runtime::Handle::enter);
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..iters {
                        op(thread, i);
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread panicked"))
            .collect()
    });
    let start = spans
        .iter()
        .map(|s| s.0)
        .min()
        .expect("at least one thread");
    let end = spans
        .iter()
        .map(|s| s.1)
        .max()
        .expect("at least one thread");
    end - start
}

/// Polls `future` to completion on the current thread with a no-op waker, spinning while it is
/// pending. A warm cache hit is expected to be ready on the first poll; this measures the cost
/// of the future itself, without a runtime's scheduling (which the bare lookup does not pay
/// either). Call it inside a tokio runtime context (`Runtime::enter`) if the future needs one.
pub fn poll_ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn bare_lookup_clones_the_shared_entry() {
        let keys = client_names(3);
        let cache = bare_cache(&keys);
        let a = bare_lookup(&cache, "client-00001").unwrap();
        let b = bare_lookup(&cache, "client-00001").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.access_token.len(), 64);
        assert!(a.authorization.is_sensitive());
        assert!(bare_lookup(&cache, "client-00003").is_none());
        let c = bare_lookup_checked(&cache, "client-00001").unwrap();
        assert!(Arc::ptr_eq(&a, &c));
        assert!(bare_lookup_checked(&cache, "client-00003").is_none());
    }

    #[test]
    fn clock_baseline_refuses_an_expired_entry() {
        let cache = BareCache::new();
        let mut token = BareToken::new(0, 64);
        token.expires_at_boot = boot_time_nanos();
        cache.insert(Arc::from("k"), Arc::new(token));
        assert!(bare_lookup(&cache, "k").is_some());
        assert!(bare_lookup_checked(&cache, "k").is_none());
    }

    #[test]
    fn run_threads_runs_every_iteration_on_every_thread() {
        let done = AtomicU64::new(0);
        run_threads(2, 1000, |thread, i| {
            assert!(thread < 2 && i < 1000);
            done.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(done.load(Ordering::Relaxed), 2000);
        assert!(key_index(1, 5, MANY_KEYS) < MANY_KEYS);
    }

    #[test]
    fn poll_ready_drives_a_future_that_yields() {
        let mut yielded = false;
        let value = poll_ready(std::future::poll_fn(|cx| {
            if yielded {
                Poll::Ready(7)
            } else {
                yielded = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }));
        assert_eq!(value, 7);
    }
}
