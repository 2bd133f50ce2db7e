//! Item 2: a token's lifetime counts from when its request was sent, on a clock that keeps counting
//! across suspend.
//!
//! Before the fix the times were taken after the response arrived (so a slow token endpoint made
//! tokens look younger than they were), and deadlines were on tokio's `CLOCK_MONOTONIC`, which stops
//! while the machine sleeps.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde_json::json;
use token_mgmt::BoxError;
use token_mgmt::tokens::{
    AccessTokenManagementService, CacheKey, ClientAccessToken, ClientAccessTokenCache, Clock,
    InMemoryClientAccessTokenCache, ManualClock,
};
use token_mgmt_tests::token_server::TokenServer;

use crate::{get, manual_service, options_for};

const MILLI: Duration = Duration::from_millis(1);
const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn the_lifetime_counts_from_the_send_not_from_the_response() {
    let server = TokenServer::start();
    server.set_expires_in(Some(json!(3600)));
    let mut options = options_for(&server, |_| {});
    options.background_refresh = false;
    let (service, clock) = manual_service(options);
    let sent = clock.system_time();

    // The token endpoint takes 10 s (on the service clock) to answer.
    server.hold_all();
    let call = tokio::spawn({
        let service = service.clone();
        async move { get(&service).await }
    });
    server.wait_for_requests(1).await;
    clock.advance(Duration::from_secs(10));
    server.release();
    let token = call.await.unwrap();

    assert_eq!(token.expires_at(), Some(sent + HOUR), "sent + expires_in");
    assert_eq!(
        token.refresh_at(),
        Some(sent + HOUR - Duration::from_secs(60)),
        "sent + expires_in - buffer"
    );

    // The deadlines on the service clock count from the send too: fresh until 3540 s ...
    clock.advance(Duration::from_secs(3530) - MILLI);
    assert!(get(&service).await.ptr_eq(&token));
    assert_eq!(server.request_count(), 1);
    // ... and never served from 3595 s (expiry minus the 5 s margin), although counted from the
    // response it would still have 10 s to go.
    clock.advance(Duration::from_secs(56));
    let renewed = get(&service).await;
    assert!(
        !renewed.same_token(&token),
        "an expired token is never served"
    );
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn with_the_system_clock_expires_at_is_before_the_response_plus_the_lifetime() {
    const DELAY: Duration = Duration::from_millis(50);
    let server = TokenServer::start();
    server.set_expires_in(Some(json!(3600)));
    server.set_delay(Some(DELAY));
    let service = AccessTokenManagementService::new(options_for(&server, |_| {})).unwrap();

    let before = SystemTime::now();
    let token = get(&service).await;
    let after = SystemTime::now();

    let expires_at = token.expires_at().expect("expires_in was sent");
    assert!(expires_at >= before + HOUR, "not before the send");
    // The server answered at least DELAY after the request was sent: a lifetime counted from the
    // send ends at least DELAY before one counted from the response.
    assert!(
        expires_at + DELAY <= after + HOUR,
        "counted from the send: expires_at {expires_at:?}, response by {after:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_suspend_past_expiry_expires_the_token_though_no_tokio_time_passed() {
    let server = TokenServer::start();
    server.set_expires_in(Some(json!(3600)));
    let (service, clock) = manual_service(options_for(&server, |_| {}));
    let tokio_start = tokio::time::Instant::now();

    let first = get(&service).await;
    assert!(get(&service).await.ptr_eq(&first));

    // The machine sleeps for two hours: the boot clock (the manual clock here) moves on, tokio's
    // clock (paused here, stopped by a real suspend) does not.
    clock.advance(2 * HOUR);
    let after_resume = get(&service).await;
    assert!(
        !after_resume.same_token(&first),
        "the token expired during the suspend"
    );
    assert_eq!(server.request_count(), 2);
    assert_eq!(
        tokio::time::Instant::now(),
        tokio_start,
        "no tokio time passed"
    );
}

/// The in-memory cache, except that its next read can be made to return a token read earlier: what
/// a caller holds when its thread is descheduled between reading the cache and reading the clock.
#[derive(Default)]
struct EarlierRead {
    inner: InMemoryClientAccessTokenCache,
    next_read: Mutex<Option<ClientAccessToken>>,
}

#[async_trait]
impl ClientAccessTokenCache for EarlierRead {
    async fn get(&self, key: &CacheKey) -> Result<Option<ClientAccessToken>, BoxError> {
        let earlier = self.next_read.lock().unwrap().take();
        match earlier {
            Some(earlier) => Ok(Some(earlier)),
            None => self.inner.get(key).await,
        }
    }
    async fn set(&self, key: &CacheKey, token: ClientAccessToken) -> Result<(), BoxError> {
        self.inner.set(key, token).await
    }
    async fn delete(&self, key: &CacheKey) -> Result<(), BoxError> {
        self.inner.delete(key).await
    }
}

/// A caller read the cache, then its thread stood still while the clock moved past that token's
/// expiry, its successor was stored and came due, and the successor's renewal started. The caller
/// is served the successor (read again) instead of waiting for the renewal.
#[tokio::test]
async fn a_token_read_before_a_pause_and_expired_after_it_is_read_again_before_waiting() {
    let server = TokenServer::start();
    server.set_expires_in(Some(json!(3600)));
    let mut options = options_for(&server, |_| {});
    options.background_refresh = false;
    let cache = Arc::new(EarlierRead::default());
    let clock = Arc::new(ManualClock::new());
    let service = AccessTokenManagementService::builder(options)
        .cache(cache.clone())
        .clock(clock.clone())
        .build()
        .expect("valid options");

    let read_before_pause = get(&service).await;
    clock.advance(2 * HOUR);
    let successor = get(&service).await;
    assert!(!successor.same_token(&read_before_pause));
    // The successor comes due (3540 s): a call serves it and starts its renewal, held at the server.
    clock.advance(Duration::from_secs(3550));
    server.hold_all();
    assert!(get(&service).await.ptr_eq(&successor));
    server.wait_for_requests(3).await;

    *cache.next_read.lock().unwrap() = Some(read_before_pause);
    let token = tokio::time::timeout(Duration::from_secs(10), get(&service))
        .await
        .expect("served without waiting for the held renewal");
    assert!(token.ptr_eq(&successor), "the successor, read again");
    server.release();
    assert_eq!(server.request_count(), 3);
}
