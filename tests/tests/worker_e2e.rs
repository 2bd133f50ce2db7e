//! End to end: a `#[derive(Worker)]` worker run by the `Host`, calling the demo's protected API through
//! a named access token client registered with `add_client_access_token_client`.

use std::sync::Arc;
use std::time::Duration;

use token_mgmt::http::CreateClientError;
use token_mgmt::prelude::*;
use token_mgmt::tokens::{ForeignOriginError, ManualClock};
use token_mgmt_examples::demo::{ApiClaims, DemoConfig, DemoServer, RecordingServer};
use token_mgmt_examples::settings;
use tokio::sync::{Mutex, mpsc, oneshot};

/// Where the worker sends the outcome of one API call.
type Reply = oneshot::Sender<Result<ApiClaims, String>>;

/// Lets the test ask the worker for one API call at a time and get its outcome back.
#[derive(Clone)]
struct CallRequests(Arc<Mutex<mpsc::Receiver<Reply>>>);
token_mgmt::inject_by_clone!(CallRequests);

#[derive(Worker)]
struct ApiWorker {
    #[inject(client = "api")]
    client: HttpClient,
    requests: CallRequests,
}

impl BackgroundService for ApiWorker {
    async fn execute(&self, stopping: CancellationToken) -> Result<(), WorkerError> {
        let mut requests = self.requests.0.lock().await;
        loop {
            let reply = tokio::select! {
                reply = requests.recv() => match reply { Some(reply) => reply, None => return Ok(()) },
                () = stopping.cancelled() => return Ok(()),
            };
            let outcome = match self.client.get_string("test").await {
                Ok(body) => serde_json::from_str(&body).map_err(|error| error.to_string()),
                Err(error) => Err(error.to_string()),
            };
            let _ = reply.send(outcome);
        }
    }
}

async fn call(calls: &mpsc::Sender<Reply>) -> ApiClaims {
    let (reply, outcome) = oneshot::channel();
    calls.send(reply).await.expect("the worker is running");
    outcome
        .await
        .expect("the worker answers")
        .expect("the API call succeeds")
}

fn register_demo_client(services: &mut ServiceCollection, demo: &DemoServer) {
    register_demo_client_with_clock(services, demo, Arc::new(ManualClock::new()));
}

fn register_demo_client_with_clock(
    services: &mut ServiceCollection,
    demo: &DemoServer,
    clock: Arc<ManualClock>,
) {
    let token_endpoint = demo.token_endpoint();
    let api_base = demo.api_base();
    services
        .add_access_token_management(|options| {
            options.client.clients.add(
                "demo",
                TokenClientOptions {
                    address: token_endpoint,
                    client_id: "m2m.short".into(),
                    client_secret: "secret".into(),
                    scope: Some("api".into()),
                    ..Default::default()
                },
            );
            Ok(())
        })
        .clock(clock);
    services.add_client_access_token_client("api", None, |client| {
        client.base_address = Some(api_base);
        Ok(())
    });
}

#[tokio::test]
async fn worker_calls_the_api_with_one_token_until_it_is_due_for_renewal() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let (calls, requests) = mpsc::channel(1);
    let clock = Arc::new(ManualClock::new());
    let host = Host::builder()
        .handle_signals(false)
        .configure_services(|_ctx, services| {
            register_demo_client_with_clock(services, &demo, clock.clone());
            services.add_singleton(CallRequests(Arc::new(Mutex::new(requests))));
            services.add_hosted_service::<ApiWorker>();
            Ok(())
        })
        .build()
        .unwrap()
        .start()
        .unwrap();

    for _ in 0..5 {
        let claims = call(&calls).await;
        assert_eq!(claims.client_id, "m2m.short");
    }
    let counters = demo.counters();
    assert_eq!(counters.token_requests, 1, "one token while it is valid");
    assert_eq!(
        counters.api_authorized, 5,
        "every call carried a valid token"
    );
    assert_eq!(counters.api_unauthenticated + counters.api_invalid_token, 0);

    // m2m.short tokens live 75 s; the cache renews them at half their lifetime (the 60 s buffer
    // is more than that), in the background: the worker's calls never wait for it.
    clock.advance(Duration::from_secs(40));
    call(&calls).await;
    let renewed = async {
        while demo.counters().token_requests < 2 {
            tokio::task::yield_now().await;
        }
    };
    // A guard against a hang only.
    tokio::time::timeout(Duration::from_secs(30), renewed)
        .await
        .expect("a new token once the old one is due");
    call(&calls).await;
    let counters = demo.counters();
    assert_eq!(counters.token_requests, 2, "one renewal");
    assert_eq!(counters.api_authorized, 7);
    assert_eq!(counters.api_unauthenticated + counters.api_invalid_token, 0);

    host.stop();
    drop(calls);
    host.wait().await.unwrap();
}

#[tokio::test]
async fn unknown_token_client_fails_build_naming_it_and_the_registered_ones() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let mut services = ServiceCollection::new();
    register_demo_client(&mut services, &demo);
    services.add_client_access_token_client("other", Some("nope"), |_| Ok(()));
    let error = services.build().unwrap_err();
    let message = error.to_string();
    assert!(message.contains("`other`"), "{message}");
    assert!(message.contains("`nope`"), "{message}");
    assert!(message.contains("registered: demo"), "{message}");
}

#[tokio::test]
async fn omitted_token_client_name_needs_exactly_one_token_client() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let mut services = ServiceCollection::new();
    register_demo_client(&mut services, &demo);
    services.add_access_token_management(|options| {
        let mut second = options.client.clients.get("demo").unwrap().clone();
        second.client_id = "m2m".into();
        options.client.clients.add("second", second);
        Ok(())
    });
    let message = services.build().unwrap_err().to_string();
    assert!(
        message.contains("HTTP client `api` names no token client"),
        "{message}"
    );
}

#[tokio::test]
async fn access_token_client_without_token_management_fails_build() {
    let mut services = ServiceCollection::new();
    services.add_client_access_token_client("api", None, |_| Ok(()));
    let message = services.build().unwrap_err().to_string();
    assert!(
        message.contains("add_access_token_management was never called"),
        "{message}"
    );
}

#[tokio::test]
async fn build_reports_every_problem_at_once() {
    let mut services = ServiceCollection::new();
    services.add_access_token_management(|options| {
        options.client.clients.add(
            "bad",
            TokenClientOptions {
                address: "ftp://idp.example.com/token".parse()?,
                client_id: String::new(),
                ..Default::default()
            },
        );
        Ok(())
    });
    services.add_http_client("broken", |client| {
        client.base_address = Some("not a url".parse()?);
        Ok(())
    });
    services.add_client_access_token_client("api", Some("missing"), |_| Ok(()));
    let error = services.build().unwrap_err();
    let message = error.to_string();
    assert!(message.contains("`bad`"), "{message}");
    assert!(message.contains("HTTP client `broken`"), "{message}");
    assert!(message.contains("`missing`"), "{message}");
    assert!(error.problems().len() >= 4, "{message}");
}

#[tokio::test]
async fn injecting_an_unregistered_named_client_fails_build() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    #[derive(Worker)]
    struct Misnamed {
        #[inject(client = "apii")]
        _client: HttpClient,
    }
    impl BackgroundService for Misnamed {
        async fn execute(&self, _stopping: CancellationToken) -> Result<(), WorkerError> {
            Ok(())
        }
    }
    let mut services = ServiceCollection::new();
    register_demo_client(&mut services, &demo);
    services.add_hosted_service::<Misnamed>();
    let message = services.build().unwrap_err().to_string();
    assert!(message.contains("HTTP client `apii`"), "{message}");
    assert!(message.contains("registered: api"), "{message}");
}

#[tokio::test]
async fn create_client_with_an_unknown_name_lists_the_registered_ones() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let mut services = ServiceCollection::new();
    register_demo_client(&mut services, &demo);
    let provider = services.build().unwrap();
    let factory = provider.get_required::<HttpClientFactory>().unwrap();
    let error = factory.create_client("clinet").unwrap_err();
    assert!(
        matches!(&error, CreateClientError::UnknownClient { name, registered } if name == "clinet" && registered == &["api"]),
        "{error:?}"
    );
    assert!(error.to_string().contains("api"), "{error}");
}

#[tokio::test]
async fn an_access_token_client_refuses_absolute_urls_to_other_origins() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let elsewhere = RecordingServer::start().await.unwrap();
    let mut services = ServiceCollection::new();
    register_demo_client(&mut services, &demo);
    let provider = services.build().unwrap();
    let client = provider
        .get_required::<HttpClientFactory>()
        .unwrap()
        .create_client("api")
        .unwrap();

    let error = client
        .get_string(elsewhere.url().join("collect").unwrap())
        .await
        .unwrap_err();
    let refused = error
        .middleware_error::<ForeignOriginError>()
        .unwrap_or_else(|| panic!("{error:?}"));
    assert_eq!(refused.client, "demo");
    assert!(
        elsewhere.requests().is_empty(),
        "nothing reached the other origin"
    );
    assert_eq!(
        demo.counters().token_requests,
        0,
        "no token was even requested"
    );

    // An absolute URL on the configured origin is fine.
    let same_origin = demo.api_base().join("test").unwrap();
    client.get_string(same_origin).await.unwrap();
    assert_eq!(demo.counters().api_authorized, 1);
}

/// The worker example's configuration (`token_mgmt_examples::settings`) with only the short
/// variables, as `AUTHORITY=... cargo run --example worker` would get them.
fn short_variables(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    settings::with_short_variables(
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone())),
    )
}

#[tokio::test]
async fn the_worker_example_discovers_its_token_endpoint_from_authority() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let empty = tempfile::tempdir().unwrap();
    let variables = short_variables(&[
        ("AUTHORITY", demo.issuer().to_string()),
        ("CLIENT_ID", "m2m.short".into()),
        ("CLIENT_SECRET", "secret".into()),
        ("SCOPE", "api".into()),
        ("API_BASE_ADDRESS", demo.api_base().to_string()),
        ("WORKER_INTERVAL_SECONDS", "7".into()),
    ]);
    let interval = Arc::new(std::sync::Mutex::new(None));
    let seen = Arc::clone(&interval);
    let host = Host::builder()
        .handle_signals(false)
        .configuration_source(empty.path())
        .configuration_variables(variables)
        .configure_services(move |ctx, services| {
            let worker = settings::register(services, ctx.configuration())?;
            *seen.lock().unwrap() = Some(worker.interval());
            Ok(())
        })
        .build()
        .unwrap();
    assert_eq!(*interval.lock().unwrap(), Some(Duration::from_secs(7)));
    let service = host
        .services()
        .get_required::<AccessTokenManagementService>()
        .unwrap();
    let client = host
        .services()
        .get_required::<HttpClientFactory>()
        .unwrap()
        .create_client(settings::HTTP_CLIENT)
        .unwrap();
    let body = client.get_string("test").await.unwrap();
    let claims: ApiClaims = serde_json::from_str(&body).unwrap();
    assert_eq!(claims.client_id, "m2m.short");
    // No token endpoint was configured: the one token request went where discovery said.
    assert_eq!(demo.counters().token_requests, 1);
    assert_eq!(service.client_names(), [settings::TOKEN_CLIENT]);
}

#[tokio::test]
async fn the_worker_examples_settings_file_runs_the_demo_and_short_variables_win() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    // No variables: the shipped file configures no token service, so the demo fills it in.
    let configuration = Configuration::from_parts(shipped, "Production", Vec::new()).unwrap();
    assert!(!settings::has_token_service(&configuration));
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let defaults = settings::demo_defaults(&configuration, &demo);
    let configuration = Configuration::from_parts(shipped, "Production", defaults).unwrap();
    let mut services = ServiceCollection::new();
    let worker = settings::register(&mut services, &configuration).unwrap();
    assert_eq!(worker.interval(), Duration::from_secs(5));
    let provider = services.build().unwrap();
    let client = provider
        .get_required::<HttpClientFactory>()
        .unwrap()
        .create_client(settings::HTTP_CLIENT)
        .unwrap();
    client.get_string("test").await.unwrap();
    assert_eq!(demo.counters().token_requests, 1);

    // A short variable wins over the long one; TOKEN_ENDPOINT means no demo.
    let variables = short_variables(&[
        (
            "TOKEN_MGMT__TOKEN_MANAGEMENT__CLIENTS__IDENTITYSERVER__CLIENT_ID",
            "long".into(),
        ),
        ("CLIENT_ID", "short".into()),
        (
            "TOKEN_ENDPOINT",
            "https://idp.example.com/connect/token".into(),
        ),
        ("SCOPE", String::new()),
    ]);
    let configuration = Configuration::from_parts(shipped, "Production", variables).unwrap();
    assert!(settings::has_token_service(&configuration));
    let mut options = AccessTokenManagementOptions::default();
    options.bind(&configuration).unwrap();
    let client = options.client.clients.get(settings::TOKEN_CLIENT).unwrap();
    assert_eq!(client.client_id, "short");
    assert_eq!(client.scope, None, "an empty short variable is unset");
}
