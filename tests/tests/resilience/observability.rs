//! Metrics and logs: counted per client, free of secrets and tokens, and a failure streak is one
//! warning.
//!
//! The services here run on the test's (one-thread) runtime, so that a recorder or subscriber set
//! for the test's thread sees everything they record.

use std::sync::{Arc, Mutex};

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use token_mgmt::tokens::{AccessTokenManagementService, metric_names as names};
use token_mgmt_tests::fault_server::Fault;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};

use crate::{CLIENT, clock_and_server, get, options_for, secs, until};

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
    options.client.clients.get_mut(CLIENT).unwrap().client_secret = SECRET.into();
    AccessTokenManagementService::builder(options)
        .clock(clock.clone())
        .runtime(tokio::runtime::Handle::current())
        .build()
        .unwrap()
}

/// One metric as recorded: name, labels, value.
struct Recorded {
    name: String,
    labels: Vec<(String, String)>,
    value: DebugValue,
}

fn counter(metrics: &[Recorded], name: &str, outcome: Option<&str>) -> u64 {
    metrics
        .iter()
        .filter(|m| m.name == name)
        .filter(|m| {
            outcome.is_none_or(|o| m.labels.iter().any(|(k, v)| k == "outcome" && v == o))
        })
        .map(|m| match m.value {
            DebugValue::Counter(n) => n,
            _ => panic!("{name} is not a counter"),
        })
        .sum()
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
    let stale = || {
        let snapshot = snapshotter.snapshot().into_vec();
        snapshot.iter().any(|(key, _, _, value)| {
            key.key().name() == names::STALE_TOKENS_SERVED && *value == DebugValue::Counter(1)
        })
    };
    let mut due_calls = 0;
    until("a stale token to be served", || {
        due_calls += 1;
        let token = futures_util::FutureExt::now_or_never(service.get_client_access_token(
            CLIENT,
            &Default::default(),
        ))
        .expect("a due token is served at once")
        .unwrap();
        assert!(token.ptr_eq(&first));
        stale()
    })
    .await;
    assert_eq!(server.request_count(), 4);

    server.always(Fault::Issue);
    clock.advance(secs(2)); // past the cool-down
    let mut more_calls = 0;
    until("the renewed token", || {
        more_calls += 1;
        let token = futures_util::FutureExt::now_or_never(service.get_client_access_token(
            CLIENT,
            &Default::default(),
        ))
        .expect("a due token is served at once")
        .unwrap();
        !token.ptr_eq(&first)
    })
    .await;
    assert_eq!(server.request_count(), 5);

    let metrics: Vec<Recorded> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| Recorded {
            name: key.key().name().to_owned(),
            labels: key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect(),
            value,
        })
        .collect();
    assert_eq!(counter(&metrics, names::TOKEN_REQUESTS, Some("success")), 2);
    assert_eq!(counter(&metrics, names::TOKEN_REQUESTS, Some("error")), 3);
    assert_eq!(counter(&metrics, names::TOKEN_REQUEST_RETRIES, None), 2);
    assert_eq!(counter(&metrics, names::CACHE_MISSES, None), 1);
    // Every call but the first was served from the cache: 4 fresh, then due ones, then the
    // renewed (fresh) token.
    assert_eq!(
        counter(&metrics, names::CACHE_HITS, None),
        (4 + due_calls + more_calls) as u64,
    );
    assert_eq!(counter(&metrics, names::BACKGROUND_RENEWALS, None), 2);
    assert_eq!(counter(&metrics, names::STALE_TOKENS_SERVED, None), 1);
    assert!(
        metrics
            .iter()
            .any(|m| m.name == names::TOKEN_REQUEST_DURATION
                && matches!(&m.value, DebugValue::Histogram(v) if v.len() == 5)),
        "one duration per attempt"
    );
    let tokens = ["tok-1--", "tok-5--"];
    for metric in &metrics {
        assert!(
            metric.labels.iter().any(|(k, v)| k == "client" && v == CLIENT),
            "{} has no client label",
            metric.name
        );
        let shown = format!("{} {:?}", metric.name, metric.labels);
        assert!(!shown.contains(SECRET), "{shown}");
        for token in tokens {
            assert!(!shown.contains(token), "{shown}");
        }
    }
}

/// Every event from token-mgmt: level, message and all fields as text.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<(Level, String, String)>>>);

impl Events {
    fn count(&self, level: Level, message: &str) -> usize {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter(|(l, m, _)| *l == level && m == message)
            .count()
    }

    fn all_text(&self) -> String {
        let events = self.0.lock().unwrap();
        events.iter().map(|(_, m, f)| format!("{m} {f}\n")).collect()
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    all: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text.clone();
        }
        self.all.push_str(&format!("{}={text} ", field.name()));
    }
}

impl<S: Subscriber> Layer<S> for Events {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if !event.metadata().target().starts_with("token_mgmt") {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), fields.message, fields.all));
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
    until("the renewal to succeed", || events.count(Level::INFO, RECOVERED) == 1).await;

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
