//! A request an HTTP/2 server refuses unprocessed (`REFUSED_STREAM`) is sent again, at most twice,
//! on every path a request can take: what reqwest's default retry policy does, which token-mgmt's
//! clients turn off (it copies every request to do it) and do themselves.
//!
//! Against a real HTTP/2 server (`h2`, cleartext with prior knowledge) and the local token server.
//!
//! Run with `cargo test -p token-mgmt-tests --test refused_requests`.

use futures_util::stream;
use token_mgmt::http::{HttpClient, HttpClientFactory, RequestBuilder};
use token_mgmt::tokens::{
    AccessTokenManagementService, ClientAccessTokenHandler, SkipAccessToken, TokenRequestParameters,
};
use token_mgmt_tests::h2_server::H2Server;
use token_mgmt_tests::logs::CapturedLogs;
use token_mgmt_tests::token_server::TokenServer;
use token_mgmt_tests::{CLIENT, options_for};

const TOKEN: &str = "Bearer tok-1--";

/// How a client reaches its token handler.
#[derive(Clone, Copy, Debug)]
enum Pipeline {
    /// The handler is the only middleware: called directly, no chain.
    HandlerOnly,
    /// Behind another middleware: reqwest-middleware's chain.
    Chain,
    /// No middleware at all.
    NoHandler,
}

struct Outer;

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for Outer {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut http::Extensions,
        next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        next.run(req, extensions).await
    }
}

/// An HTTP/2 API, a token server, and an HTTP/2 client of the API on `pipeline`.
fn start(pipeline: Pipeline) -> (H2Server, TokenServer, HttpClient) {
    let api = H2Server::start();
    let token_server = TokenServer::start();
    let client = client(&api, &token_server, pipeline);
    (api, token_server, client)
}

fn client(api: &H2Server, token_server: &TokenServer, pipeline: Pipeline) -> HttpClient {
    client_named(api, token_server, pipeline, "api")
}

/// The HTTP client `name`, on `pipeline`.
fn client_named(
    api: &H2Server,
    token_server: &TokenServer,
    pipeline: Pipeline,
    name: &str,
) -> HttpClient {
    let service = AccessTokenManagementService::new(options_for(token_server, |_| {})).unwrap();
    let mut builder = HttpClientFactory::builder();
    let registration = builder.register(name);
    registration.options_mut().base_address = Some(api.url());
    registration.configure_reqwest(|builder| builder.http2_prior_knowledge());
    let handler = ClientAccessTokenHandler::new(service, CLIENT).with_allowed_origin(&api.url());
    match pipeline {
        Pipeline::HandlerOnly => {
            registration.set_token_handler(handler);
        }
        Pipeline::Chain => {
            registration.with(Outer).set_token_handler(handler);
        }
        Pipeline::NoHandler => {}
    }
    builder.build().create_client(name).unwrap()
}

fn expected_authorization(pipeline: Pipeline) -> Option<String> {
    match pipeline {
        Pipeline::NoHandler => None,
        _ => Some(TOKEN.to_owned()),
    }
}

#[tokio::test]
async fn a_refused_request_is_sent_again_with_its_token_on_every_pipeline() {
    for pipeline in [Pipeline::HandlerOnly, Pipeline::Chain, Pipeline::NoHandler] {
        let (api, token_server, client) = start(pipeline);
        api.refuse_next(1);

        let response = client.get("orders?page=2").send().await.unwrap();

        assert_eq!(response.status(), 200, "{pipeline:?}");
        assert_eq!(response.text().await.unwrap(), "ok");
        let streams = api.streams();
        assert_eq!(streams.len(), 2, "sent, refused, sent again: {pipeline:?}");
        assert!(streams[0].refused && !streams[1].refused, "{pipeline:?}");
        for stream in &streams {
            assert_eq!(stream.method, "GET");
            assert_eq!(stream.path, "/orders?page=2", "{pipeline:?}");
            assert_eq!(
                stream.authorization,
                expected_authorization(pipeline),
                "the same token both times: {pipeline:?}"
            );
        }
        let token_requests = if matches!(pipeline, Pipeline::NoHandler) {
            0
        } else {
            1
        };
        assert_eq!(token_server.request_count(), token_requests, "{pipeline:?}");
    }
}

#[tokio::test]
async fn a_request_refused_every_time_fails_after_two_resends() {
    for pipeline in [Pipeline::HandlerOnly, Pipeline::Chain, Pipeline::NoHandler] {
        let (api, _token_server, client) = start(pipeline);
        api.refuse_next(usize::MAX);

        let error = client.get("orders").send().await.unwrap_err();

        assert!(
            matches!(error, reqwest_middleware::Error::Reqwest(_)),
            "{pipeline:?}: {error:?}"
        );
        // Three attempts, not reqwest's three per attempt of ours (nine).
        assert_eq!(api.streams().len(), 3, "{pipeline:?}");
        assert!(api.streams().iter().all(|stream| stream.refused));
    }
}

#[tokio::test]
async fn a_refused_request_with_a_body_is_sent_again_with_the_body() {
    for pipeline in [Pipeline::HandlerOnly, Pipeline::Chain, Pipeline::NoHandler] {
        let (api, _token_server, client) = start(pipeline);
        api.refuse_next(1);

        let response = client
            .post("orders")
            .body("{\"id\":7}")
            .send()
            .await
            .unwrap();

        assert_eq!(response.status(), 200, "{pipeline:?}");
        let streams = api.streams();
        assert_eq!(streams.len(), 2, "{pipeline:?}");
        assert_eq!(streams[1].method, "POST");
        assert_eq!(streams[1].body, b"{\"id\":7}", "{pipeline:?}");
        assert_eq!(streams[1].authorization, expected_authorization(pipeline));
    }
}

#[tokio::test]
async fn a_streaming_body_cannot_be_copied_and_is_sent_once() {
    for pipeline in [Pipeline::HandlerOnly, Pipeline::Chain, Pipeline::NoHandler] {
        let (api, _token_server, client) = start(pipeline);
        api.refuse_next(1);
        let chunks: Vec<Result<&'static str, std::io::Error>> = vec![Ok("a"), Ok("b")];

        let result = client
            .post("orders")
            .body(reqwest::Body::wrap_stream(stream::iter(chunks)))
            .send()
            .await;

        assert!(result.is_err(), "{pipeline:?}: the refusal is the answer");
        assert_eq!(api.streams().len(), 1, "{pipeline:?}");
    }
}

/// What a test adds to a request before sending it.
type Extend = fn(RequestBuilder) -> RequestBuilder;

#[tokio::test]
async fn requests_the_handler_does_not_authorize_at_once_are_sent_again_too() {
    // Per-request parameters and a skipped token take the handler's boxed path, not the direct one.
    let (api, _token_server, client) = start(Pipeline::HandlerOnly);
    let cases: [(&str, Extend, Option<&str>); 2] = [
        (
            "orders",
            |request| {
                request.with_extension(TokenRequestParameters {
                    scope: Some("orders".into()),
                    ..TokenRequestParameters::default()
                })
            },
            Some("Bearer tok-1-orders-"),
        ),
        (
            "public",
            |request| request.with_extension(SkipAccessToken),
            None,
        ),
    ];

    for (path, extend, authorization) in cases {
        api.refuse_next(1);
        let sent = api.streams().len();
        let response = extend(client.get(path)).send().await.unwrap();

        assert_eq!(response.status(), 200, "{path}");
        let streams = api.streams();
        assert_eq!(streams.len(), sent + 2, "sent, refused, sent again: {path}");
        assert_eq!(streams[sent + 1].authorization.as_deref(), authorization);
    }
}

#[tokio::test]
async fn the_inner_middleware_client_sends_refused_requests_again() {
    let (api, _token_server, client) = start(Pipeline::HandlerOnly);
    api.refuse_next(1);

    let response = client
        .inner()
        .get(api.url().join("orders").unwrap())
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let streams = api.streams();
    assert_eq!(streams.len(), 2);
    assert_eq!(streams[1].authorization.as_deref(), Some(TOKEN));
}

#[tokio::test]
async fn a_resend_is_logged_with_the_client_name_and_neither_url_nor_token() {
    let logs = CapturedLogs::capture_global(tracing::Level::DEBUG);
    for (pipeline, name) in [
        (Pipeline::HandlerOnly, "log-probe-direct"),
        (Pipeline::Chain, "log-probe-chain"),
        (Pipeline::NoHandler, "log-probe-plain"),
    ] {
        let api = H2Server::start();
        let token_server = TokenServer::start();
        let client = client_named(&api, &token_server, pipeline, name);
        api.refuse_next(1);

        let response = client.get("orders?api_key=query-secret").send().await;

        assert_eq!(response.unwrap().status(), 200, "{pipeline:?}");
        // This test's lines: the other tests of this binary log too.
        let text = logs.text();
        let ours: Vec<&str> = text.lines().filter(|line| line.contains(name)).collect();
        let resends: Vec<&&str> = ours
            .iter()
            .filter(|line| line.contains("sending it again"))
            .collect();
        assert_eq!(resends.len(), 1, "{pipeline:?}: {ours:#?}");
        assert!(resends[0].contains("attempt=1"), "{}", resends[0]);
        for secret in ["query-secret", "tok-1", "/orders"] {
            assert!(
                ours.iter().all(|line| !line.contains(secret)),
                "{pipeline:?}: {secret} logged in:\n{ours:#?}"
            );
        }
    }
}
