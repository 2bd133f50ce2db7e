//! Metrics and logs: counted per client, free of secrets and tokens, and a failure streak is one
//! warning.
//!
//! The services here run on the test's (one-thread) runtime, so that a recorder or subscriber set
//! for the test's thread sees everything they record.

use std::sync::Arc;

use futures_util::FutureExt as _;
use metrics_util::debugging::DebuggingRecorder;
use token_mgmt::tokens::{AccessTokenManagementService, ClientAccessToken, metric_names as names};
use token_mgmt_tests::fault_server::Fault;
use tracing::Level;
use tracing_subscriber::layer::SubscriberExt as _;

use crate::{CLIENT, Events, Recorded, clock_and_server, get, options_for, secs, until};

const SECRET: &str = "s3cr3t-never-shown";

fn unavailable() -> Fault {
    Fault::oauth(503, "temporarily_unavailable")
}

/// A service for `server` whose client secret is [`SECRET`], on the test's runtime.
fn service_here(
    server: &token_mgmt_tests::fault_server::FaultServer,
    clock: &Arc<token_mgmt::tokens::ManualClock>,
) -> AccessTokenManagementService {
    let mut options = options_for(server);
    options
        .client
        .clients
        .get_mut(CLIENT)
        .unwrap()
        .client_secret = SECRET.into();
    AccessTokenManagementService::builder(options)
        .clock(clock.clone())
        .runtime(tokio::runtime::Handle::current())
        .build()
        .unwrap()
}

/// The default token, which must be served at once (from the cache).
fn served_at_once(service: &AccessTokenManagementService) -> ClientAccessToken {
    service
        .get_client_access_token(CLIENT, &Default::default())
        .now_or_never()
        .expect("a valid token is served at once")
        .expect("a token")
}

/// A token is requested (a miss), served from the cache, renewed in the background while the
/// endpoint fails (3 attempts: 2 retries; the still-valid token is served stale meanwhile), then
/// renewed successfully. Every counter has the exact count, every metric the `client` label, and
/// nothing recorded contains the secret or a token.
#[tokio::test]
async fn metrics_count_per_client_without_secrets() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let (clock, server) = clock_and_server();
    server.set_expires_in(Some(120));
    let service = service_here(&server, &clock); // per-client counters are registered here

    let first = get(&service).await.unwrap();
    for _ in 0..4 {
        assert!(get(&service).await.unwrap().ptr_eq(&first));
    }

    server.always(unavailable());
    clock.advance(secs(60)); // due: served, renewed in the background, which fails
    let mut recorded = Recorded::default();
    let mut due_calls = 0;
    until("a stale token to be served", || {
        due_calls += 1;
        assert!(served_at_once(&service).ptr_eq(&first));
        recorded.take(&snapshotter);
        recorded.counter(names::STALE_TOKENS_SERVED, None) == 1
    })
    .await;
    assert_eq!(server.request_count(), 4);

    server.always(Fault::Issue);
    clock.advance(secs(2)); // past the cool-down
    let mut recovery_calls = 0;
    until("the renewed token", || {
        recovery_calls += 1;
        !served_at_once(&service).ptr_eq(&first)
    })
    .await;
    assert_eq!(server.request_count(), 5);

    recorded.take(&snapshotter);
    assert_eq!(recorded.counter(names::TOKEN_REQUESTS, Some("success")), 2);
    assert_eq!(recorded.counter(names::TOKEN_REQUESTS, Some("error")), 3);
    assert_eq!(recorded.counter(names::TOKEN_REQUEST_RETRIES, None), 2);
    assert_eq!(recorded.counter(names::CACHE_MISSES, None), 1);
    // Every call but the first was served from the cache: 4 fresh, then due ones, then the
    // renewed (fresh) token.
    assert_eq!(
        recorded.counter(names::CACHE_HITS, None),
        (4 + due_calls + recovery_calls) as u64,
    );
    assert_eq!(recorded.counter(names::BACKGROUND_RENEWALS, None), 2);
    // Stale: the call that found the failed renewal, then the recovery calls made while the
    // successful renewal was in flight (all but the one that started it and the one that got its
    // token).
    assert_eq!(
        recorded.counter(names::STALE_TOKENS_SERVED, None),
        1 + (recovery_calls as u64 - 2)
    );
    assert_eq!(
        recorded.samples(names::TOKEN_REQUEST_DURATION),
        5,
        "one duration per attempt"
    );
    let tokens = ["tok-1--", "tok-5--"];
    assert!(!recorded.0.is_empty());
    for (name, labels, _) in &recorded.0 {
        assert!(
            labels.iter().any(|(k, v)| k == "client" && v == CLIENT),
            "{name} has no client label"
        );
        let shown = format!("{name} {labels:?}");
        assert!(!shown.contains(SECRET), "{shown}");
        for token in tokens {
            assert!(!shown.contains(token), "{shown}");
        }
    }
}

const FAILED: &str = "token request failed";
const FAILED_AGAIN: &str = "token request failed again";
const RECOVERED: &str = "token requests succeed again";

/// A streak of 5 failed background renewals (each 3 attempts) is one WARN; the next 4 failures are
/// DEBUG. A success ends the streak (INFO), and the next failure starts a new one: one more WARN.
#[tokio::test]
async fn a_failure_streak_is_one_warning() {
    const STREAK: usize = 5;
    let events = Events::default();
    let _subscriber =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(events.clone()));
    let (clock, server) = clock_and_server();
    server.set_expires_in(Some(120));
    let service = service_here(&server, &clock);
    let first = get(&service).await.unwrap();
    let failures = || events.count(Level::WARN, FAILED) + events.count(Level::DEBUG, FAILED_AGAIN);

    server.always(unavailable());
    clock.advance(secs(60));
    for renewal in 1..=STREAK {
        if renewal > 1 {
            clock.advance(secs(2)); // past the cool-down: the next call starts another renewal
        }
        assert!(get(&service).await.unwrap().ptr_eq(&first), "still served");
        until("the renewal to fail", || failures() == renewal).await;
    }
    assert_eq!(server.request_count(), 1 + 3 * STREAK);
    let warnings = || {
        let events = events.0.lock().unwrap();
        events.iter().filter(|(l, _, _)| *l == Level::WARN).count()
    };
    assert_eq!(warnings(), 1, "{}", events.all_text());
    assert_eq!(events.count(Level::WARN, FAILED), 1);
    assert_eq!(events.count(Level::DEBUG, FAILED_AGAIN), STREAK - 1);

    server.always(Fault::Issue);
    clock.advance(secs(2));
    get(&service).await.unwrap();
    until("the renewal to succeed", || {
        events.count(Level::INFO, RECOVERED) == 1
    })
    .await;

    // The renewed token is due 60 s later; its renewal fails: a new streak, a new warning.
    server.always(unavailable());
    clock.advance(secs(60));
    get(&service).await.unwrap();
    until("the next renewal to fail", || failures() == STREAK + 1).await;
    assert_eq!(warnings(), 2, "{}", events.all_text());

    let logged = events.all_text();
    assert!(!logged.contains(SECRET), "{logged}");
    assert!(!logged.contains("tok-"), "{logged}");
}
