//! The clock that decides when a token is due for renewal and when it has expired.
//!
//! A cache hit compares the token's deadlines with [`Clock::now`]: nothing else decides freshness, so
//! a token is correct on any runtime and in any calling pattern, whether or not a background task runs.
//!
//! [`SystemClock`] (the default) reads `CLOCK_BOOTTIME` on Linux and Android: unlike
//! `CLOCK_MONOTONIC` (std's and tokio's `Instant`), it keeps counting while the machine is suspended
//! or the VM paused, so a one-hour token is stale after a two-hour suspend. Elsewhere it reads std's
//! `Instant`. [`ManualClock`] only moves when a test says so.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

/// A point in time on a [`Clock`]: nanoseconds since the clock's own origin. Only stamps of the same
/// clock compare meaningfully.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp(u64);

impl Stamp {
    /// A stamp that never comes: the deadline of a token without an expiry.
    pub const NEVER: Stamp = Stamp(u64::MAX);

    /// The stamp `nanos` nanoseconds after the clock's origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// Nanoseconds since the clock's origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// `self + duration`, saturating at [`Stamp::NEVER`].
    pub fn saturating_add(self, duration: Duration) -> Self {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(nanos))
    }

    /// `self - duration`, saturating at the origin.
    pub fn saturating_sub(self, duration: Duration) -> Self {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        Self(self.0.saturating_sub(nanos))
    }

    /// How long after `earlier` this is (zero if it is not after it).
    pub fn saturating_duration_since(self, earlier: Stamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// A future returned by [`Clock::sleep`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Where the token service reads the time, and how it waits (retry back-off, background renewal).
///
/// Injectable so that tests drive time by hand ([`ManualClock`]); production uses [`SystemClock`].
pub trait Clock: Send + Sync + 'static {
    /// Now, on a clock that never goes backwards and keeps counting across suspend.
    fn now(&self) -> Stamp;

    /// The wall-clock time that corresponds to [`now`](Clock::now): used to store a token's expiry in a
    /// form another process can read.
    fn system_time(&self) -> SystemTime;

    /// Completes once `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> Sleep;
}

/// The production clock: `CLOCK_BOOTTIME` on Linux and Android (keeps counting across suspend),
/// std's `Instant` elsewhere; waits with tokio timers.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Stamp {
        boot_time_now()
    }

    fn system_time(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        // tokio's timer stops during a suspend: a late wake-up only delays a background renewal;
        // freshness is decided by `now`, never by this timer.
        Box::pin(tokio::time::sleep(duration))
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline]
fn boot_time_now() -> Stamp {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_BOOTTIME exists on every supported kernel
    // (2.6.39+), and clock_gettime only writes to the pointer it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    debug_assert_eq!(rc, 0, "clock_gettime(CLOCK_BOOTTIME) failed");
    let seconds = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    Stamp(seconds.saturating_mul(1_000_000_000).saturating_add(nanos))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn boot_time_now() -> Stamp {
    use std::sync::OnceLock;
    use std::time::Instant;
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    Stamp(u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
}

/// A clock that moves only when [`advance`](ManualClock::advance) is called: for tests of expiry,
/// renewal and back-off without sleeping. Sleeps on it complete when the clock is advanced past them.
pub struct ManualClock {
    nanos: AtomicU64,
    origin: SystemTime,
    changed: watch::Sender<u64>,
}

impl ManualClock {
    /// A clock at stamp zero, whose wall-clock time starts at the real time now.
    pub fn new() -> Self {
        Self {
            nanos: AtomicU64::new(0),
            origin: SystemTime::now(),
            changed: watch::Sender::new(0),
        }
    }

    /// Moves the clock forward by `duration`, waking every sleep that is then due.
    pub fn advance(&self, duration: Duration) {
        let step = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let now = self
            .nanos
            .fetch_add(step, Ordering::AcqRel)
            .saturating_add(step);
        self.changed
            .send_modify(|latest| *latest = (*latest).max(now));
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Stamp {
        Stamp(self.nanos.load(Ordering::Acquire))
    }

    fn system_time(&self) -> SystemTime {
        self.origin + Duration::from_nanos(self.nanos.load(Ordering::Acquire))
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        let deadline = self.now().saturating_add(duration);
        let mut changed = self.changed.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock; if it is gone nothing will ever advance it.
            let _ = changed.wait_for(|now| Stamp(*now) >= deadline).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_moves_forward() {
        let a = SystemClock.now();
        let b = SystemClock.now();
        assert!(b >= a);
        assert!(a.as_nanos() > 0);
    }

    #[tokio::test]
    async fn manual_sleep_completes_when_advanced_past() {
        let clock = std::sync::Arc::new(ManualClock::new());
        let sleep = clock.sleep(Duration::from_secs(2));
        let handle = tokio::spawn(sleep);
        clock.advance(Duration::from_secs(1));
        tokio::task::yield_now().await;
        assert!(!handle.is_finished());
        clock.advance(Duration::from_secs(1));
        handle.await.unwrap();
        assert_eq!(clock.now(), Stamp(2_000_000_000));
    }
}
