//! Resilience of token management against a token endpoint that fails on purpose
//! (`token_mgmt_tests::fault_server`): background renewal, outages, retries, rate limits, bounded
//! memory, randomised interleavings, the response parser, metrics and logs.
//!
//! Run with `cargo test -p token-mgmt-tests --test resilience`.
//!
//! Time: every service runs on a [`ManualClock`] that only the test moves (expiry, renewal times,
//! back-off, `Retry-After`, cool-downs); network calls run in real time. Nothing sleeps: a test
//! waits for the server's request counter, or polls with `yield_now` under a [`guard`] that fails
//! the test if it takes longer than [`GUARD`].

mod resilience {
    mod background;
    mod memory;
    mod observability;
    mod outage;
    mod properties;
}

use std::error::Error;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, Snapshotter};
use token_mgmt::tokens::{
    AccessTokenManagementOptions, AccessTokenManagementService, ClientAccessToken, ManualClock,
    RetryPolicy, TokenError, TokenRequestParameters,
};
use token_mgmt_tests::fault_server::FaultServer;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// The token client name used by the tests.
pub const CLIENT: &str = "api";

/// Longest a test waits for anything asynchronous before failing.
pub const GUARD: Duration = Duration::from_secs(20);

/// Awaits `future`, failing the test if it takes longer than [`GUARD`] (real time).
pub async fn guard<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(GUARD, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {GUARD:?} waiting for {what}"),
    }
}

/// Yields until `condition` holds, under [`guard`].
pub async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    guard(what, async {
        while !condition() {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// The default retry policy (3 attempts), without back-off: retries then need no clock, so only
/// the tests of back-off and `Retry-After` depend on the clock for them.
pub fn immediate_retries() -> RetryPolicy {
    let mut policy = RetryPolicy::default();
    policy.initial_backoff = Duration::ZERO;
    policy.max_backoff = Duration::ZERO;
    policy
}

/// Options with one client `api` for `server`, retrying without back-off.
pub fn options_for(server: &FaultServer) -> AccessTokenManagementOptions {
    let mut options = AccessTokenManagementOptions::default();
    options.client.clients.add(CLIENT, server.client_options());
    options.retry = immediate_retries();
    options
}

/// A clock, and a fault server that stamps requests with it.
pub fn clock_and_server() -> (Arc<ManualClock>, FaultServer) {
    let clock = Arc::new(ManualClock::new());
    let server = FaultServer::with_clock(clock.clone());
    (clock, server)
}

/// A service on `clock`.
pub fn service_on(
    options: AccessTokenManagementOptions,
    clock: &Arc<ManualClock>,
) -> AccessTokenManagementService {
    AccessTokenManagementService::builder(options)
        .clock(clock.clone())
        .build()
        .expect("valid options")
}

/// Parameters asking for `scope`.
pub fn scoped(scope: &str) -> TokenRequestParameters {
    TokenRequestParameters {
        scope: Some(scope.to_owned()),
        ..Default::default()
    }
}

/// The default token of client `api`, under [`guard`].
pub async fn get(service: &AccessTokenManagementService) -> Result<ClientAccessToken, TokenError> {
    get_with(service, &TokenRequestParameters::default()).await
}

/// Client `api`'s token for `parameters`, under [`guard`].
pub async fn get_with(
    service: &AccessTokenManagementService,
    parameters: &TokenRequestParameters,
) -> Result<ClientAccessToken, TokenError> {
    guard(
        "a token call",
        service.get_client_access_token(CLIENT, parameters),
    )
    .await
}

/// Whether `error` or an error in its `source()` chain is the token endpoint's answer `status`.
pub fn chain_has_status(error: &TokenError, status: u16) -> bool {
    let mut next: Option<&(dyn Error + 'static)> = Some(error);
    while let Some(error) = next {
        // `Unavailable` holds its cause boxed, and reports the box as its source.
        let token_error = error
            .downcast_ref::<TokenError>()
            .or_else(|| error.downcast_ref::<Box<TokenError>>().map(|b| &**b));
        if let Some(TokenError::Endpoint { status: s, .. }) = token_error {
            if s.as_u16() == status {
                return true;
            }
        }
        next = error.source();
    }
    false
}

/// Seconds as a duration.
pub const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Every event from token-mgmt: level, message and all fields as text.
#[derive(Clone, Default)]
pub struct Events(pub Arc<Mutex<Vec<(Level, String, String)>>>);

impl Events {
    /// How many events of `level` had this message.
    pub fn count(&self, level: Level, message: &str) -> usize {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter(|(l, m, _)| *l == level && m == message)
            .count()
    }

    /// Every event as text, one a line.
    pub fn all_text(&self) -> String {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .map(|(_, m, f)| format!("{m} {f}\n"))
            .collect()
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

/// Everything recorded so far. The debugging recorder's snapshots drain it (counters are swapped
/// to zero, histograms cleared), so each snapshot is appended here and values are summed.
#[derive(Default)]
pub struct Recorded(pub Vec<Metric>);

/// One recorded metric: name, labels, value.
pub type Metric = (String, Vec<(String, String)>, DebugValue);

impl Recorded {
    /// Appends what was recorded since the last snapshot.
    pub fn take(&mut self, snapshotter: &Snapshotter) {
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let labels = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            self.0.push((key.key().name().to_owned(), labels, value));
        }
    }

    /// The total of counter `name` (with label `outcome`, when given).
    pub fn counter(&self, name: &str, outcome: Option<&str>) -> u64 {
        self.0
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && outcome.is_none_or(|o| labels.iter().any(|(k, v)| k == "outcome" && v == o))
            })
            .map(|(_, _, value)| match value {
                DebugValue::Counter(n) => *n,
                _ => panic!("{name} is not a counter"),
            })
            .sum()
    }

    /// How many values histogram `name` received.
    pub fn samples(&self, name: &str) -> usize {
        self.0
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, _, value)| match value {
                DebugValue::Histogram(values) => values.len(),
                _ => panic!("{name} is not a histogram"),
            })
            .sum()
    }
}
