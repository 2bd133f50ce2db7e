//! Item 3: tokens go only to allowed origins.
//!
//! Before the fix the origin guard existed only when the client had a base address: a client without
//! one, or a handler used on its own, sent its token to any URL it was given.

use reqwest::StatusCode;
use token_mgmt::http::HttpError;
use token_mgmt::prelude::*;
use token_mgmt::tokens::{ClientAccessTokenHandler, ForeignOriginError};
use token_mgmt_examples::demo::{DemoConfig, DemoServer, RecordingServer};
use url::Url;

/// Registers token client `demo` (client `m2m` of `demo`) and the access token HTTP client `api`,
/// configured by `configure`.
fn register(
    services: &mut ServiceCollection,
    demo: &DemoServer,
    configure: impl FnOnce(&mut HttpClientOptions) + 'static,
) {
    let token_endpoint = demo.token_endpoint();
    services.add_access_token_management(|options| {
        options.client.clients.add(
            "demo",
            TokenClientOptions {
                address: token_endpoint,
                client_id: "m2m".into(),
                client_secret: "secret".into(),
                ..Default::default()
            },
        );
        Ok(())
    });
    services.add_client_access_token_client("api", None, |client| {
        configure(client);
        Ok(())
    });
}

fn api_client(services: ServiceCollection) -> HttpClient {
    services
        .build()
        .unwrap()
        .get_required::<HttpClientFactory>()
        .unwrap()
        .create_client("api")
        .unwrap()
}

fn refused(error: &HttpError) -> &ForeignOriginError {
    error
        .middleware_error::<ForeignOriginError>()
        .unwrap_or_else(|| panic!("expected a ForeignOriginError: {error:?}"))
}

#[tokio::test]
async fn build_refuses_an_access_token_client_with_neither_base_address_nor_allowed_origins() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let mut services = ServiceCollection::new();
    register(&mut services, &demo, |_| {});
    let error = services.build().unwrap_err();
    let message = error.to_string();
    assert!(message.contains("HTTP client `api`"), "{message}");
    assert!(message.contains("no base address"), "{message}");
    assert!(message.contains("allowed_origins"), "{message}");

    // Either one is enough.
    let api = demo.api_base();
    let mut services = ServiceCollection::new();
    register(&mut services, &demo, move |client| {
        client.allowed_origins = vec![api]
    });
    assert!(services.build().is_ok());
}

#[tokio::test]
async fn allowed_origins_let_the_token_go_to_a_second_origin_and_nowhere_else() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let second = RecordingServer::start().await.unwrap();
    let elsewhere = RecordingServer::start().await.unwrap();
    let (api, second_url) = (demo.api_base(), second.url());
    let mut services = ServiceCollection::new();
    register(&mut services, &demo, move |client| {
        client.base_address = Some(api);
        client.allowed_origins = vec![second_url];
    });
    let client = api_client(services);

    client.get_string("test").await.unwrap();
    client
        .get_string(second.url().join("reports").unwrap())
        .await
        .unwrap();
    let error = client
        .get_string(elsewhere.url().join("collect").unwrap())
        .await
        .unwrap_err();

    let refusal = refused(&error);
    assert_eq!(refusal.client, "demo");
    assert_eq!(refusal.request_origin, origin(&elsewhere.url()));
    let requests = second.requests();
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0].headers.contains_key("authorization"),
        "the second allowed origin gets the token"
    );
    assert!(elsewhere.requests().is_empty(), "never sent");
    let counters = demo.counters();
    assert_eq!(counters.api_authorized, 1);
    assert_eq!(counters.token_requests, 1);
}

#[tokio::test]
async fn a_client_without_base_address_is_still_restricted_to_its_allowed_origins() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let elsewhere = RecordingServer::start().await.unwrap();
    let api = demo.api_base();
    let mut services = ServiceCollection::new();
    register(&mut services, &demo, move |client| {
        client.allowed_origins = vec![api];
    });
    let client = api_client(services);
    assert!(client.base_address().is_none());

    let error = client
        .get_string(elsewhere.url().join("collect").unwrap())
        .await
        .unwrap_err();
    assert_eq!(refused(&error).client, "demo");
    assert!(elsewhere.requests().is_empty(), "never sent");
    assert_eq!(demo.counters().token_requests, 0, "no token even requested");

    let same_origin = demo.api_base().join("test").unwrap();
    client.get_string(same_origin).await.unwrap();
    assert_eq!(demo.counters().api_authorized, 1);
}

#[tokio::test]
async fn a_standalone_handler_without_an_allowed_origin_refuses_every_request() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let mut options = AccessTokenManagementOptions::default();
    options.client.clients.add(
        "demo",
        TokenClientOptions {
            address: demo.token_endpoint(),
            client_id: "m2m".into(),
            client_secret: "secret".into(),
            ..Default::default()
        },
    );
    let service = AccessTokenManagementService::new(options).unwrap();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(ClientAccessTokenHandler::new(service, "demo"))
        .build();

    let error = client
        .get(demo.api_base().join("test").unwrap())
        .send()
        .await
        .unwrap_err();
    let reqwest_middleware::Error::Middleware(source) = &error else {
        panic!("expected a middleware error: {error:?}");
    };
    let refusal = source
        .downcast_ref::<ForeignOriginError>()
        .unwrap_or_else(|| panic!("expected a ForeignOriginError: {error:?}"));
    assert_eq!(refusal.client, "demo");
    assert!(refusal.to_string().contains("none configured"), "{refusal}");
    let counters = demo.counters();
    assert_eq!(counters.api_requests, 0, "never sent");
    assert_eq!(counters.token_requests, 0, "no token even requested");

    // Control: the same handler with the API's origin allowed works.
    let service = AccessTokenManagementService::new({
        let mut options = AccessTokenManagementOptions::default();
        options.client.clients.add(
            "demo",
            TokenClientOptions {
                address: demo.token_endpoint(),
                client_id: "m2m".into(),
                client_secret: "secret".into(),
                ..Default::default()
            },
        );
        options
    })
    .unwrap();
    let allowed = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(ClientAccessTokenHandler::new(service, "demo").with_allowed_origin(&demo.api_base()))
        .build();
    let response = allowed
        .get(demo.api_base().join("test").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}
