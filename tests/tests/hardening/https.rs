//! The https rule: token endpoints, authorities and the API addresses an access token client sends
//! tokens to are `https://`, or `http://` to a loopback host, unless the client opts out; a
//! violation is a `build()` error naming the client (discovered endpoints: `tests/discovery.rs`).

use std::error::Error as _;

use token_mgmt::http::HttpOptionsError;
use token_mgmt::prelude::*;
use token_mgmt::tokens::OptionsError;

/// Builds a container with one token client and an access token client `api` configured by
/// `configure`.
fn build(configure: impl FnOnce(&mut HttpClientOptions)) -> Result<ServiceProvider, BuildError> {
    let mut services = ServiceCollection::new();
    services.add_access_token_management(|options| {
        options.client.clients.add(
            "idp",
            TokenClientOptions {
                address: "https://idp.example.com/connect/token".parse()?,
                client_id: "worker".into(),
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
    services.build()
}

fn insecure_address(error: &BuildError) -> &HttpOptionsError {
    let [BuildProblem::Configuration { source, .. }] = error.problems() else {
        panic!("expected one configuration problem: {error}");
    };
    source
        .downcast_ref::<HttpOptionsError>()
        .unwrap_or_else(|| panic!("expected an HttpOptionsError: {error}"))
}

#[test]
fn a_plain_http_api_base_address_is_a_build_error_naming_the_client() {
    let error = build(|client| {
        client.base_address = Some("http://api.example.com/v1/".parse().unwrap());
    })
    .unwrap_err();
    assert_eq!(
        insecure_address(&error),
        &HttpOptionsError::InsecureAddress {
            client: "api".into(),
            address: "http://api.example.com/v1/".into(),
        }
    );
    let message = error.to_string();
    assert!(
        message.contains("HTTP client `api`") && message.contains("allow_insecure_http"),
        "{message}"
    );
}

#[test]
fn a_plain_http_allowed_origin_is_refused_too() {
    let error = build(|client| {
        client.base_address = Some("https://api.example.com/".parse().unwrap());
        client.allowed_origins = vec!["http://files.example.com".parse().unwrap()];
    })
    .unwrap_err();
    assert!(matches!(
        insecure_address(&error),
        HttpOptionsError::InsecureAddress { client, address }
            if client == "api" && address == "http://files.example.com/"
    ));
}

#[test]
fn https_loopback_and_the_opt_out_build() {
    for base in [
        "https://api.example.com/",
        "http://127.0.0.1:8080/api/",
        "http://localhost/api/",
        "http://[::1]:9000/",
    ] {
        build(|client| client.base_address = Some(base.parse().unwrap()))
            .unwrap_or_else(|error| panic!("{base}: {error}"));
    }
    build(|client| {
        client.base_address = Some("http://api.internal/".parse().unwrap());
        client.allow_insecure_http = true;
    })
    .expect("the documented opt-out");
}

#[test]
fn a_plain_http_authority_is_refused_and_an_address_with_an_authority_is_ambiguous() {
    let by_issuer = |authority: &str| TokenClientOptions {
        authority: Some(authority.parse().unwrap()),
        client_id: "worker".into(),
        client_secret: "secret".into(),
        ..Default::default()
    };
    let error = by_issuer("http://idp.example.com")
        .problems("orders")
        .remove(0);
    assert!(
        matches!(&error, OptionsError::InsecureAddress { client, address }
            if client == "orders" && address == "http://idp.example.com/"),
        "{error}"
    );
    let mut opted_out = by_issuer("http://idp.internal");
    opted_out.allow_insecure_http = true;
    assert!(opted_out.problems("orders").is_empty());

    let mut both = by_issuer("https://idp.example.com");
    both.address = "https://idp.example.com/connect/token".parse().unwrap();
    let problems = both.problems("orders");
    assert!(
        matches!(problems.as_slice(), [OptionsError::AddressAndAuthority { client }] if client == "orders"),
        "{problems:?}"
    );
    assert!(problems[0].source().is_none());
}
