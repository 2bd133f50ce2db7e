//! Background renewal: one task per service, on the service's runtime, that renews each token at its
//! refresh time if its key was used within the idle window, and drops it otherwise.
//!
//! This is an optimisation on top of a hit path that is correct by itself: a caller that finds a due
//! token starts its renewal anyway, so nothing breaks if this task is late (the machine was
//! suspended) or not running at all.
//!
//! Each token the service stores is sent (with its refresh time, its idle window, a weak handle on
//! it and its key) over a channel to the task, which keeps them in a min-heap ordered by refresh
//! time and sleeps on the service clock until the earliest. An entry whose token was replaced,
//! deleted or evicted meanwhile is skipped; the heap is compacted of dropped tokens when it grows
//! past twice the cache capacity, so a flood of distinct keys cannot grow it without bound.
//!
//! An entry is as small as it can be (40 bytes: there is one per cached token): the key's text,
//! shared with the cache, stands for the request. When the entry comes due, the client is looked up
//! by name in the current client table and the scope, resources and parameters are parsed back from
//! the key ([`Inner::current_request`]).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;

use super::cache::CacheKey;
use super::clock::Stamp;
use super::service::{Inner, Request, WeakInner};
use super::token::{ClientAccessToken, WeakToken};

/// The handle to a service's renewal task. `Default` spawns nothing; the task starts with the first
/// token scheduled.
#[derive(Default)]
pub(crate) struct RenewalScheduler {
    sender: Mutex<Option<mpsc::UnboundedSender<Scheduled>>>,
}

struct Scheduled {
    at: Stamp,
    window: IdleWindow,
    /// The key's text (its hash is recomputed when the entry comes due).
    key: Arc<str>,
    token: WeakToken,
}

const _: () = assert!(size_of::<Scheduled>() <= 40);

/// The idle window in nanoseconds (saturating at 292 years), and in the top bit whether the token
/// is of its client's default request (which is renewed only while the client's default key
/// stays the same).
#[derive(Clone, Copy)]
struct IdleWindow(u64);

impl IdleWindow {
    const DEFAULT_REQUEST: u64 = 1 << 63;

    fn new(idle: Duration, default_request: bool) -> Self {
        let nanos = u64::try_from(idle.as_nanos())
            .unwrap_or(u64::MAX)
            .min(Self::DEFAULT_REQUEST - 1);
        Self(
            nanos
                | if default_request {
                    Self::DEFAULT_REQUEST
                } else {
                    0
                },
        )
    }

    fn idle(self) -> Duration {
        Duration::from_nanos(self.0 & !Self::DEFAULT_REQUEST)
    }

    fn default_request(self) -> bool {
        self.0 & Self::DEFAULT_REQUEST != 0
    }
}

impl RenewalScheduler {
    /// Renews `token` (just stored under `request.key`) at its refresh time, unless it went unused.
    pub(crate) fn schedule(
        &self,
        inner: &Arc<Inner>,
        request: &Request,
        token: &ClientAccessToken,
    ) {
        let Some(deadlines) = token.deadlines() else {
            return;
        };
        if deadlines.refresh == Stamp::NEVER {
            return; // no expiry: nothing to renew
        }
        let now = inner.clock.now();
        let idle = inner
            .policy
            .idle_timeout
            .unwrap_or_else(|| deadlines.expiry.saturating_duration_since(now));
        let mut entry = Scheduled {
            at: deadlines.refresh,
            window: IdleWindow::new(idle, request.is_default()),
            key: Arc::clone(request.key.shared_text()),
            token: token.downgrade(),
        };
        let mut sender = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(live) = sender.as_ref() {
            match live.send(entry) {
                Ok(()) => return,
                // The task is gone (its runtime shut down): start another below.
                Err(mpsc::error::SendError(back)) => entry = back,
            }
        }
        let (new_sender, receiver) = mpsc::unbounded_channel();
        if new_sender.send(entry).is_ok() {
            let compact_above = 2 * inner.policy.max_keys.max(1024);
            drop(
                inner
                    .runtime()
                    .spawn(run(Arc::downgrade(inner), receiver, compact_above)),
            );
            *sender = Some(new_sender);
        }
    }
}

/// A heap entry, ordered so that [`BinaryHeap`] (a max-heap) pops the earliest refresh time first.
struct Entry(Scheduled);

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.0.at == other.0.at
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
        other.0.at.cmp(&self.0.at)
    }
}

/// The renewal task. Ends when the service is dropped (its sender goes with it).
async fn run(
    service: WeakInner,
    mut receiver: mpsc::UnboundedReceiver<Scheduled>,
    compact_above: usize,
) {
    let Some(clock) = service.upgrade().map(|inner| Arc::clone(&inner.clock)) else {
        return;
    };
    let mut heap: BinaryHeap<Entry> = BinaryHeap::new();
    loop {
        let next = heap.peek().map(|entry| entry.0.at);
        let wait = async {
            match next {
                Some(at) => clock.sleep(at.saturating_duration_since(clock.now())).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            scheduled = receiver.recv() => {
                let Some(scheduled) = scheduled else { return };
                if heap.len() == heap.capacity() {
                    // Grown by a quarter, not doubled: the heap holds an entry per cached token,
                    // and doubling would leave up to as much again allocated and unused.
                    heap.reserve_exact(heap.len() / 4 + 64);
                }
                heap.push(Entry(scheduled));
                if heap.len() > compact_above {
                    heap.retain(|entry| entry.0.token.is_alive());
                    heap.shrink_to_fit();
                }
            }
            () = wait => {
                let Some(inner) = service.upgrade() else { return };
                let now = clock.now();
                while heap.peek().is_some_and(|entry| entry.0.at <= now) {
                    if let Some(Entry(due)) = heap.pop() {
                        renew_or_evict(&inner, due, now).await;
                    }
                }
            }
        }
    }
}

async fn renew_or_evict(inner: &Arc<Inner>, due: Scheduled, now: Stamp) {
    let Some(token) = due.token.upgrade() else {
        return; // evicted and dropped
    };
    let key = CacheKey::new(due.key);
    // Every scheduled key is one the service made, with its prefix.
    let Some(parsed) = inner.parse_key(&key) else {
        return;
    };
    let still_cached = inner
        .cached(&key, &parsed.client)
        .await
        .is_some_and(|current| current.same_token(&token));
    if !still_cached {
        return; // replaced or deleted meanwhile
    }
    let client = parsed.client.clone();
    match inner.current_request(&key, parsed, due.window.default_request()) {
        Some(request) if now.saturating_duration_since(token.last_used()) < due.window.idle() => {
            inner.renew_in_background(&request);
        }
        // Unused for the idle window, or its client was removed or now asks for something else.
        _ => inner.evict_idle(&key, &client).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_window_keeps_its_duration_and_the_request_kind() {
        for idle in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_secs(3600),
        ] {
            for default_request in [false, true] {
                let window = IdleWindow::new(idle, default_request);
                assert_eq!(window.idle(), idle);
                assert_eq!(window.default_request(), default_request);
            }
        }
        let longest = IdleWindow::new(Duration::MAX, true);
        assert!(longest.default_request());
        assert!(longest.idle() > Duration::from_secs(292 * 365 * 24 * 3600));
    }
}
