//! The refresh scheduler: one tokio task per [`AccessTokenManagementService`] that marks the service's
//! tokens stale at their refresh time, so that a cache hit decides freshness with one atomic load
//! instead of a clock read (see [`ClientAccessToken::is_fresh`]).
//!
//! Arming a token sends its [`MarkStaleOnDrop`] guard and its refresh time over an unbounded channel
//! to the scheduler task, which keeps the guards in a min-heap ordered by refresh time (24 bytes per
//! pending token; a task per token cost a task cell and a timer entry each, hundreds of bytes) and
//! one tokio [`Sleep`] set to the earliest refresh time. When it fires, every guard that is due is
//! dropped, marking its token stale. The sleep is on tokio's clock, so a paused test clock drives it:
//! after `advance`, one `yield_now` lets the scheduler run.
//!
//! Why not `tokio_util::time::DelayQueue`: its hierarchical wheel re-arms its internal sleep at every
//! cascade between wheel levels, so after a paused-clock `advance` it needs several driver turns
//! (not one `yield_now`) to hand out a token due minutes ahead, and its slab entries are 56 bytes.
//! The heap needs no cancellation (a guard for a dropped token just upgrades nothing), so it loses
//! nothing.
//!
//! - The task is spawned lazily, on the runtime of the first call that arms a token. Outside a runtime
//!   nothing is armed: the token keeps deciding freshness by reading the clock.
//! - If that runtime shuts down, the task is dropped with its heap: every pending guard marks its token
//!   stale (conservative: a later caller requests a new token), and the channel closes. The next arm
//!   notices (its send fails and hands the guard back) and spawns a new scheduler on the runtime it is
//!   called from.
//! - When the service is dropped, the last sender goes with it: the task ends, dropping its heap,
//!   which marks what it still held stale.
//!
//! The sender sits behind a mutex, taken only when a token is armed (once per token received from the
//! token endpoint), never on the cache-hit path.
//!
//! [`AccessTokenManagementService`]: super::AccessTokenManagementService
//! [`ClientAccessToken::is_fresh`]: super::ClientAccessToken::is_fresh
//! [`Sleep`]: tokio::time::Sleep

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::future::{Future as _, poll_fn};
use std::sync::{Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::token::{ClientAccessToken, MarkStaleOnDrop};

/// Tokens due for refresh further ahead than this are left unarmed (they decide freshness by reading
/// the clock), which keeps every timer deadline far from `Instant` overflow and tokio's timer limits.
const MAX_ARM_AHEAD: Duration = Duration::from_secs(365 * 24 * 3600);

/// The heap's memory is released down to twice its length once it is this large and mostly empty.
const KEEP_CAPACITY: usize = 1024;

/// A pending refresh: the guard to drop and when.
type Pending = (MarkStaleOnDrop, Instant);

/// The handle to a refresh scheduler task (see the module docs). `Default` spawns nothing.
#[derive(Default)]
pub(crate) struct RefreshScheduler {
    sender: Mutex<Option<mpsc::UnboundedSender<Pending>>>,
}

impl RefreshScheduler {
    /// Arms `token`: it is marked stale at its refresh time by this scheduler. No-op for a token
    /// without a refresh time, one already armed or stale, one due more than a year ahead, or outside
    /// a tokio runtime (the token then decides freshness by reading the clock). A token already past
    /// its refresh time is marked stale at once.
    pub(crate) fn arm(&self, token: &ClientAccessToken) {
        let Some(at) = token.refresh_at() else {
            return; // no expiry: fresh until deleted, no clock read either
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let now = Instant::now();
        if now >= at {
            token.mark_stale();
            return;
        }
        if at - now > MAX_ARM_AHEAD {
            return;
        }
        let Some(guard) = token.begin_arm() else {
            return; // already armed (or stale)
        };
        let mut pending = (guard, at);
        let mut sender = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(live) = sender.as_ref() {
            match live.send(pending) {
                Ok(()) => return,
                // The scheduler's runtime is gone: take the guard back, respawn below.
                Err(mpsc::error::SendError(back)) => pending = back,
            }
        }
        let (new_sender, receiver) = mpsc::unbounded_channel();
        if new_sender.send(pending).is_ok() {
            runtime.spawn(run(receiver));
            *sender = Some(new_sender);
        }
    }
}

/// A heap entry, ordered so that [`BinaryHeap`] (a max-heap) pops the earliest refresh time first.
struct Entry {
    at: Instant,
    guard: MarkStaleOnDrop,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.cmp(&self.at)
    }
}

/// The scheduler task: takes pending refreshes from `receiver` and drops each guard (marking its
/// token stale) when its time comes. Ends when every sender is gone; dropping the heap then marks
/// the tokens it still held stale.
async fn run(mut receiver: mpsc::UnboundedReceiver<Pending>) {
    let mut heap: BinaryHeap<Entry> = BinaryHeap::new();
    let mut sleep = std::pin::pin!(tokio::time::sleep_until(Instant::now()));
    // The deadline `sleep` is set to, while it is waiting for the earliest entry.
    let mut sleeping_until: Option<Instant> = None;
    poll_fn(|cx| {
        // Entries due by this time are expired (the sleep fired for it).
        let mut fired: Option<Instant> = None;
        loop {
            loop {
                match receiver.poll_recv(cx) {
                    Poll::Ready(Some((guard, at))) => heap.push(Entry { at, guard }),
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => break,
                }
            }
            let now = fired.map_or_else(Instant::now, |at| at.max(Instant::now()));
            while heap.peek().is_some_and(|next| next.at <= now) {
                let due = heap.pop().map(|entry| entry.guard);
                drop(due); // marks the token stale
            }
            if heap.capacity() > KEEP_CAPACITY && heap.len() * 4 < heap.capacity() {
                heap.shrink_to(heap.len() * 2);
            }
            let Some(next) = heap.peek().map(|entry| entry.at) else {
                sleeping_until = None;
                return Poll::Pending;
            };
            if sleeping_until != Some(next) {
                sleep.as_mut().reset(next);
                sleeping_until = Some(next);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            fired = Some(next);
            sleeping_until = None;
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(refresh_in: Duration) -> ClientAccessToken {
        let at = Instant::now() + refresh_in;
        ClientAccessToken::new("t", None, Some(at), Some(at), None).unwrap()
    }

    #[test]
    fn outside_a_runtime_nothing_is_armed() {
        let scheduler = RefreshScheduler::default();
        let t = token(Duration::from_secs(60));
        scheduler.arm(&t);
        assert!(t.is_unarmed());
        assert!(scheduler.sender.lock().unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn marks_stale_at_refresh_time() {
        let scheduler = RefreshScheduler::default();
        let t = token(Duration::from_secs(60));
        let never = ClientAccessToken::new("n", None, None, None, None).unwrap();
        scheduler.arm(&t);
        scheduler.arm(&never);
        assert!(never.is_unarmed());
        assert!(!t.is_unarmed() && t.is_fresh());
        tokio::time::advance(Duration::from_secs(59)).await;
        tokio::task::yield_now().await;
        assert!(t.is_fresh());
        tokio::time::advance(Duration::from_secs(2)).await;
        tokio::task::yield_now().await;
        assert!(!t.is_fresh());
        // Past its refresh time: stale at once.
        let late = token(Duration::ZERO);
        scheduler.arm(&late);
        assert!(!late.is_fresh());
    }

    #[test]
    fn a_dead_runtime_marks_pending_tokens_stale_and_a_new_one_gets_a_new_scheduler() {
        let scheduler = RefreshScheduler::default();
        let first_runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let first = first_runtime.block_on(async {
            let t = token(Duration::from_secs(3600));
            scheduler.arm(&t);
            tokio::task::yield_now().await;
            t
        });
        assert!(!first.is_unarmed() && first.is_fresh());
        drop(first_runtime);
        assert!(!first.is_fresh(), "conservatively stale");

        let second_runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        second_runtime.block_on(async {
            let t = token(Duration::from_secs(60));
            scheduler.arm(&t);
            assert!(!t.is_unarmed(), "armed by a respawned scheduler");
            tokio::time::advance(Duration::from_secs(61)).await;
            tokio::task::yield_now().await;
            assert!(!t.is_fresh());
        });
    }
}
