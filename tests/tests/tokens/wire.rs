//! What goes over the wire: client authentication, form fields, response parsing.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use token_mgmt::tokens::{
    AccessTokenManagementOptions, AccessTokenManagementService, ClientAuthentication, TokenError,
    TokenRequestParameters,
};
use token_mgmt_tests::token_server::TokenServer;

use crate::{CLIENT, defaults, options_for, scoped, service_for};

const ODD_ID: &str = "my:client+id ü";
const ODD_SECRET: &str = "s3cr:t+ with space ñ";

#[tokio::test]
async fn basic_auth_form_encodes_id_and_secret_before_base64() {
    let server = TokenServer::start();
    let options = options_for(&server, |client| {
        client.client_id = ODD_ID.into();
        client.client_secret = ODD_SECRET.into();
    });
    let service = AccessTokenManagementService::new(options).unwrap();
    service
        .get_client_access_token(CLIENT, &defaults())
        .await
        .unwrap();

    let request = server.last_request().unwrap();
    // RFC 6749 2.3.1: application/x-www-form-urlencoded each (`:` -> %3A, `+` -> %2B, space -> `+`,
    // non-ASCII -> UTF-8 percent-encoded), joined by `:`, then base64.
    let expected = format!(
        "Basic {}",
        STANDARD.encode("my%3Aclient%2Bid+%C3%BC:s3cr%3At%2B+with+space+%C3%B1")
    );
    assert_eq!(request.header("authorization"), Some(expected.as_str()));
    assert_eq!(request.form_value("client_id"), None);
    assert_eq!(request.form_value("client_secret"), None);
    assert_eq!(request.form_value("grant_type"), Some("client_credentials"));
    assert_eq!(request.header("accept"), Some("application/json"));
    assert_eq!(
        request.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
}

#[tokio::test]
async fn post_style_sends_id_and_secret_in_the_body_and_no_header() {
    let server = TokenServer::start();
    let options = options_for(&server, |client| {
        client.client_id = ODD_ID.into();
        client.client_secret = ODD_SECRET.into();
        client.authentication = ClientAuthentication::ClientSecretPost;
    });
    let service = AccessTokenManagementService::new(options).unwrap();
    service
        .get_client_access_token(CLIENT, &defaults())
        .await
        .unwrap();

    let request = server.last_request().unwrap();
    assert_eq!(request.header("authorization"), None);
    assert_eq!(request.form_value("client_id"), Some(ODD_ID));
    assert_eq!(request.form_value("client_secret"), Some(ODD_SECRET));
    assert_eq!(request.form_value("grant_type"), Some("client_credentials"));
}

#[tokio::test]
async fn scope_resources_and_extra_parameters_are_sent() {
    let server = TokenServer::start();
    let options = options_for(&server, |client| {
        client.scope = Some("api.read api.write".into());
        client.resources = vec!["urn:orders".into(), "urn:billing".into()];
        client.parameters = vec![("audience_hint".into(), "orders & billing".into())];
    });
    let service = AccessTokenManagementService::new(options).unwrap();
    let token = service
        .get_client_access_token(CLIENT, &defaults())
        .await
        .unwrap();
    assert_eq!(
        token.access_token(),
        "tok-1-api.read api.write-urn:orders,urn:billing"
    );
    assert_eq!(token.scope(), Some("api.read api.write"));

    let request = server.last_request().unwrap();
    assert_eq!(request.form_value("scope"), Some("api.read api.write"));
    assert_eq!(
        request.form_values("resource"),
        vec!["urn:orders", "urn:billing"]
    );
    assert_eq!(
        request.form_value("audience_hint"),
        Some("orders & billing")
    );
}

#[tokio::test]
async fn per_call_parameters_replace_the_clients_and_are_cached_separately() {
    let server = TokenServer::start();
    let options = options_for(&server, |client| {
        client.scope = Some("default".into());
        client.parameters = vec![("tenant".into(), "a".into())];
    });
    let service = AccessTokenManagementService::new(options).unwrap();

    let default = service
        .get_client_access_token(CLIENT, &defaults())
        .await
        .unwrap();
    assert_eq!(default.access_token(), "tok-1-default-");

    // The same request spelled out shares the default token.
    let explicit = TokenRequestParameters {
        scope: Some("default".into()),
        ..Default::default()
    };
    let same = service
        .get_client_access_token(CLIENT, &explicit)
        .await
        .unwrap();
    assert!(same.ptr_eq(&default));

    let other = service
        .get_client_access_token(CLIENT, &scoped("other", &["urn:x"]))
        .await
        .unwrap();
    assert_eq!(other.access_token(), "tok-2-other-urn:x");
    let request = server.last_request().unwrap();
    assert_eq!(request.form_value("tenant"), Some("a"));

    // A per-call parameter overrides the client's, and makes its own cache entry.
    let tenant_b = TokenRequestParameters {
        parameters: vec![("tenant".into(), "b".into())],
        ..Default::default()
    };
    let b = service
        .get_client_access_token(CLIENT, &tenant_b)
        .await
        .unwrap();
    assert_eq!(b.access_token(), "tok-3-default-");
    assert_eq!(
        server.last_request().unwrap().form_values("tenant"),
        vec!["b"]
    );
    let b_again = service
        .get_client_access_token(CLIENT, &tenant_b)
        .await
        .unwrap();
    assert!(b_again.ptr_eq(&b));
    assert_eq!(server.request_count(), 3);

    // Deleting one key leaves the others.
    service
        .delete_client_access_token(CLIENT, &tenant_b)
        .await
        .unwrap();
    let again = service
        .get_client_access_token(CLIENT, &defaults())
        .await
        .unwrap();
    assert!(again.ptr_eq(&default));
    assert_eq!(server.request_count(), 3);
}

#[tokio::test]
async fn a_reserved_per_call_parameter_is_refused_without_a_request() {
    let server = TokenServer::start();
    let service = service_for(&server);
    let parameters = TokenRequestParameters {
        parameters: vec![("client_secret".into(), "x".into())],
        ..Default::default()
    };
    let error = service
        .get_client_access_token(CLIENT, &parameters)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, TokenError::ReservedParameter { parameter, .. } if parameter == "client_secret"),
        "{error:?}"
    );
    assert_eq!(server.request_count(), 0);
}

#[tokio::test]
async fn expires_in_as_a_numeric_string_is_accepted() {
    let server = TokenServer::start();
    server.set_expires_in(Some(json!("120")));
    let service = service_for(&server);
    let token = service
        .get_client_access_token(CLIENT, &defaults())
        .await
        .unwrap();
    assert_eq!(
        token
            .expires_at()
            .unwrap()
            .duration_since(token.refresh_at().unwrap())
            .unwrap(),
        Duration::from_secs(60)
    );
}

#[tokio::test]
async fn the_authorization_header_normalises_the_scheme() {
    let server = TokenServer::start();
    server.set_token_type("bearer");
    let service = service_for(&server);
    let token = service
        .get_client_access_token(CLIENT, &defaults())
        .await
        .unwrap();
    assert_eq!(token.token_type(), "Bearer");
    assert_eq!(token.authorization_header(), "Bearer tok-1--");
    assert!(token.authorization_header().is_sensitive());
}

/// RFC 6749 section 7.1: a token of a type the client does not understand is not used (nor cached).
#[tokio::test]
async fn an_unknown_token_type_is_a_typed_error_and_not_cached() {
    let server = TokenServer::start();
    server.set_token_type("mac");
    let mut options = options_for(&server, |_| {});
    options.failure_cooldown = Duration::ZERO;
    let service = AccessTokenManagementService::new(options).unwrap();
    for expected_requests in 1..=2 {
        let error = service
            .get_client_access_token(CLIENT, &defaults())
            .await
            .unwrap_err();
        assert!(
            matches!(&error, TokenError::UnsupportedTokenType { token_type, .. } if token_type == "mac"),
            "{error:?}"
        );
        assert!(error.to_string().contains("`mac`"), "{error}");
        assert_eq!(server.request_count(), expected_requests, "never cached");
    }
    server.set_token_type("Bearer");
    let token = service
        .get_client_access_token(CLIENT, &defaults())
        .await
        .unwrap();
    assert_eq!(token.authorization_header(), "Bearer tok-3--");
}

#[tokio::test]
async fn with_one_client_it_is_the_default() {
    let server = TokenServer::start();
    let service = service_for(&server);
    assert_eq!(service.default_client_name().as_deref(), Some(CLIENT));
    assert_eq!(service.client_names(), vec![CLIENT]);

    let mut options = AccessTokenManagementOptions::default();
    options.client.clients.add("one", server.client_options());
    options.client.clients.add("two", server.client_options());
    let service = AccessTokenManagementService::new(options).unwrap();
    assert_eq!(service.default_client_name(), None);
    assert_eq!(service.client_names(), vec!["one", "two"]);
    // Different clients never share a token.
    let one = service
        .get_client_access_token("one", &defaults())
        .await
        .unwrap();
    let two = service
        .get_client_access_token("two", &defaults())
        .await
        .unwrap();
    assert_ne!(one.access_token(), two.access_token());
    assert_eq!(server.request_count(), 2);
}

/// A per-call request (its scope, resources and parameters, with characters the cache key has to
/// encode, merged with the client's parameters) is renewed in the background with exactly the form
/// and authentication it was first requested with, and its renewed token replaces the old one
/// under the same key. The renewal task keeps only the key: this checks the request it recovers.
#[tokio::test]
async fn a_per_call_request_is_renewed_in_the_background_with_exactly_its_parameters() {
    let server = TokenServer::start();
    let (service, clock) = crate::manual_service(options_for(&server, |client| {
        client.scope = Some("default".into());
        client.parameters = vec![
            ("audience".into(), "the client's".into()),
            ("tenant".into(), "overridden".into()),
        ];
    }));
    let parameters = TokenRequestParameters {
        scope: Some("a b&scope=c+d ü".into()),
        resources: vec!["https://api.example/x?y=1&z".into(), "urn:ü:2".into()],
        parameters: vec![
            ("tenant".into(), "t&resource=+ ü%".into()),
            ("p.scope".into(), String::new()),
        ],
        ..Default::default()
    };
    let first = service
        .get_client_access_token(CLIENT, &parameters)
        .await
        .unwrap();
    let sent = server.last_request().unwrap();
    assert_eq!(sent.form_value("scope"), Some("a b&scope=c+d ü"));
    assert_eq!(
        sent.form_values("resource"),
        ["https://api.example/x?y=1&z", "urn:ü:2"]
    );
    assert_eq!(sent.form_values("tenant"), ["t&resource=+ ü%"]);
    assert_eq!(sent.form_value("audience"), Some("the client's"));
    assert_eq!(sent.form_value("p.scope"), Some(""));

    // 3600 s tokens, 60 s buffer: due at 3540 s, renewed then by the renewal task.
    clock.advance(Duration::from_secs(3550));
    let key = service.cache_key(CLIENT, &parameters).unwrap();
    let renewed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match service.cache().get_cached(&key) {
                Some(token) if !token.ptr_eq(&first) => break token,
                _ => tokio::task::yield_now().await,
            }
        }
    })
    .await
    .expect("the renewed token is cached under the same key");
    let renewal = server.last_request().unwrap();
    assert_eq!(renewal.form, sent.form, "the same form, in the same order");
    assert_eq!(
        renewal.header("authorization"),
        sent.header("authorization")
    );
    assert_eq!(
        renewed.access_token(),
        "tok-2-a b&scope=c+d ü-https://api.example/x?y=1&z,urn:ü:2"
    );
    assert_eq!(server.request_count(), 2);
}
