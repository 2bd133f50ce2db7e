//! Options validation, and redaction of secrets and tokens.

use token_mgmt::tokens::{
    AccessTokenManagementOptions, AccessTokenManagementService, OptionsError, TokenClientOptions,
    TokenError,
};
use token_mgmt_tests::token_server::TokenServer;

use crate::{CLIENT, defaults};

fn valid() -> TokenClientOptions {
    TokenClientOptions {
        address: "https://login.example.com/connect/token".parse().unwrap(),
        client_id: "m2m".into(),
        client_secret: "hunter2-secret".into(),
        ..Default::default()
    }
}

fn single_problem(client: TokenClientOptions) -> OptionsError {
    let mut options = AccessTokenManagementOptions::default();
    options.client.clients.add("orders", client);
    let error = AccessTokenManagementService::new(options).unwrap_err();
    assert_eq!(error.problems().len(), 1, "{error}");
    assert!(
        error.to_string().contains("`orders`"),
        "names the client: {error}"
    );
    error
}

#[test]
fn the_documented_registration_is_valid() {
    let mut options = AccessTokenManagementOptions::default();
    options.client.clients.add(
        "identityserver",
        TokenClientOptions {
            address: "https://demo.identityserver.io/connect/token"
                .parse()
                .unwrap(),
            client_id: "m2m.short".into(),
            client_secret: "secret".into(),
            ..Default::default()
        },
    );
    options.validate().unwrap();
}

#[test]
fn empty_client_id_is_rejected() {
    let error = single_problem(TokenClientOptions {
        client_id: "  ".into(),
        ..valid()
    });
    assert!(matches!(error, OptionsError::EmptyClientId { client } if client == "orders"));
}

#[test]
fn a_missing_address_is_rejected() {
    let error = single_problem(TokenClientOptions {
        client_id: "m2m".into(),
        ..Default::default()
    });
    assert!(matches!(error, OptionsError::MissingAddress { client } if client == "orders"));
}

#[test]
fn a_non_http_address_is_rejected() {
    let error = single_problem(TokenClientOptions {
        address: "ftp://login.example.com/token".parse().unwrap(),
        ..valid()
    });
    assert!(
        matches!(&error, OptionsError::InvalidAddress { client, .. } if client == "orders"),
        "{error:?}"
    );
}

#[test]
fn plain_http_needs_loopback_or_an_explicit_opt_in() {
    let error = single_problem(TokenClientOptions {
        address: "http://login.example.com/token".parse().unwrap(),
        ..valid()
    });
    assert!(
        matches!(&error, OptionsError::InsecureAddress { client, .. } if client == "orders"),
        "{error:?}"
    );

    for address in [
        "http://127.0.0.1:8080/token",
        "http://localhost/token",
        "http://[::1]/token",
    ] {
        let mut options = AccessTokenManagementOptions::default();
        options.client.clients.add(
            "local",
            TokenClientOptions {
                address: address.parse().unwrap(),
                ..valid()
            },
        );
        options.validate().unwrap();
    }

    let mut options = AccessTokenManagementOptions::default();
    options.client.clients.add(
        "opted-in",
        TokenClientOptions {
            address: "http://login.internal/token".parse().unwrap(),
            allow_insecure_http: true,
            ..valid()
        },
    );
    options.validate().unwrap();
}

#[test]
fn reserved_extra_parameters_are_rejected() {
    for reserved in [
        "grant_type",
        "client_id",
        "client_secret",
        "scope",
        "resource",
        "client_assertion",
        "Client_Assertion_Type",
    ] {
        let error = single_problem(TokenClientOptions {
            parameters: vec![(reserved.to_owned(), "x".to_owned())],
            ..valid()
        });
        assert!(
            matches!(&error, OptionsError::ReservedParameter { client, parameter }
                if client == "orders" && parameter == reserved),
            "{error:?}"
        );
    }
}

#[test]
fn duplicate_names_are_rejected_and_every_problem_is_listed() {
    let mut options = AccessTokenManagementOptions::default();
    options.client.clients.add("orders", valid());
    options.client.clients.add("orders", valid());
    options.client.clients.add(
        "billing",
        TokenClientOptions {
            client_id: String::new(),
            ..valid()
        },
    );
    let error = options.validate().unwrap_err();
    let problems = error.problems();
    assert_eq!(problems.len(), 2, "{error}");
    assert!(matches!(problems[0], OptionsError::DuplicateClient { client } if client == "orders"));
    assert!(matches!(problems[1], OptionsError::EmptyClientId { client } if client == "billing"));
    let shown = error.to_string();
    assert!(
        shown.contains("`orders`") && shown.contains("`billing`"),
        "{shown}"
    );
}

#[test]
fn debug_of_options_never_shows_the_secret() {
    let mut options = AccessTokenManagementOptions::default();
    options.client.clients.add("orders", valid());
    let shown = format!("{options:?} {options:#?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("<redacted>"));
    assert!(shown.contains("m2m"), "the rest is shown");
}

#[tokio::test]
async fn debug_of_token_and_errors_never_show_the_token_or_secret() {
    let server = TokenServer::start();
    let mut options = AccessTokenManagementOptions::default();
    options.client.clients.add(
        CLIENT,
        TokenClientOptions {
            client_secret: "hunter2-secret".into(),
            ..server.client_options()
        },
    );
    let service = AccessTokenManagementService::new(options).unwrap();
    let token = service
        .get_client_access_token(CLIENT, &defaults())
        .await
        .unwrap();
    assert_eq!(token.access_token(), "tok-1--");
    let shown = format!("{token:?} {token:#?} {:?}", token.authorization_header());
    assert!(!shown.contains("tok-1"), "{shown}");
    assert!(!format!("{service:?}").contains("hunter2"));

    server.respond(401, "application/json", r#"{"error":"invalid_client"}"#);
    let error = service
        .get_client_access_token(
            CLIENT,
            &token_mgmt::tokens::TokenRequestParameters::force_renewal(),
        )
        .await
        .unwrap_err();
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(matches!(error, TokenError::Endpoint { .. }));
}

#[tokio::test]
async fn many_clients_are_found_by_name() {
    let server = TokenServer::start();
    let mut options = AccessTokenManagementOptions::default();
    for i in 0..20 {
        options
            .client
            .clients
            .add(format!("client-{i}"), server.client_options());
    }
    let service = AccessTokenManagementService::new(options).unwrap();
    let token = service
        .get_client_access_token("client-17", &defaults())
        .await
        .unwrap();
    assert_eq!(token.access_token(), "tok-1--");
    assert!(matches!(
        service
            .get_client_access_token("client-20", &defaults())
            .await,
        Err(TokenError::UnknownClient { .. })
    ));
}
