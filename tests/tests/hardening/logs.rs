//! Item 8: the logs of a token request shared by several callers are not attributed to the first
//! caller.
//!
//! Before the fix the flight ran inside the first caller's span, so its events (the token endpoint,
//! scope and timing of a request made for everybody) showed up in that caller's request log.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use token_mgmt::tokens::{AccessTokenManagementOptions, AccessTokenManagementService};
use token_mgmt_tests::token_server::TokenServer;
use tracing::Instrument as _;
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

use crate::guarded;

/// A client name no other test uses: the subscriber is global, so events are told apart by it.
const PROBE: &str = "log-probe";

/// One event of the probe client: its message and the names of the spans it happened in (root
/// first).
#[derive(Debug, Clone)]
struct Recorded {
    message: String,
    scope: Vec<&'static str>,
}

type Events = Arc<Mutex<Vec<Recorded>>>;

struct Recorder(Events);

#[derive(Default)]
struct Fields {
    message: String,
    client: Option<String>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "client" => self.client = Some(format!("{value:?}")),
            _ => {}
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            "client" => self.client = Some(value.to_owned()),
            _ => {}
        }
    }
}

impl<S> Layer<S> for Recorder
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.client.as_deref() != Some(PROBE) {
            return;
        }
        let scope = ctx
            .event_scope(event)
            .map(|scope| scope.from_root().map(|span| span.name()).collect())
            .unwrap_or_default();
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Recorded {
                message: fields.message,
                scope,
            });
    }
}

/// The events of the probe client, recorded by a process-wide subscriber (the flight runs on the
/// service's own runtime thread, which a thread-local subscriber would not see).
fn recorded_events() -> &'static Events {
    static EVENTS: OnceLock<Events> = OnceLock::new();
    EVENTS.get_or_init(|| {
        let events = Events::default();
        let subscriber = tracing_subscriber::registry().with(Recorder(events.clone()));
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other test in this binary sets a global subscriber");
        events
    })
}

#[tokio::test]
async fn a_shared_token_request_is_logged_under_its_own_span_not_a_callers() {
    let events = recorded_events();
    let server = TokenServer::start();
    let mut options = AccessTokenManagementOptions::default();
    options.client.clients.add(PROBE, server.client_options());
    let service = AccessTokenManagementService::new(options).unwrap();

    // Two callers in their own request spans share one token request, held at the server until
    // both wait on it.
    server.hold_all();
    let caller = |span: tracing::Span| {
        let service = service.clone();
        tokio::spawn(
            async move {
                service
                    .get_client_access_token(PROBE, &Default::default())
                    .await
            }
            .instrument(span),
        )
    };
    let first = caller(tracing::info_span!("first_caller_request"));
    guarded("the token request", server.wait_for_requests(1)).await;
    let second = caller(tracing::info_span!("second_caller_request"));
    tokio::task::yield_now().await;
    server.release();
    let first = first.await.unwrap().unwrap();
    let second = second.await.unwrap().unwrap();
    assert!(first.ptr_eq(&second), "one shared request");
    assert_eq!(server.request_count(), 1);

    let events = events.lock().unwrap().clone();
    let received: Vec<&Recorded> = events
        .iter()
        .filter(|e| e.message == "received client credentials token")
        .collect();
    assert_eq!(received.len(), 1, "{events:#?}");
    let scope = &received[0].scope;
    assert_eq!(
        scope.first(),
        Some(&"token_request"),
        "its own root span: {scope:?}"
    );
    for event in &events {
        assert!(
            !event
                .scope
                .iter()
                .any(|span| span.ends_with("caller_request")),
            "a token request event in a caller's span: {event:?}"
        );
    }
}
