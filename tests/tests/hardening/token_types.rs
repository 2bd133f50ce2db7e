//! Item 13: token types. `Bearer` in any case, or no type at all, is a bearer token; any other type
//! is refused with a typed error and never cached (`mac` is covered in `tokens/wire.rs`).

use token_mgmt::tokens::{AccessTokenManagementService, TokenError};
use token_mgmt_tests::token_server::{Mode, TokenServer};

use crate::{get, options_for, try_get};

fn service(server: &TokenServer) -> AccessTokenManagementService {
    AccessTokenManagementService::new(options_for(server, |_| {})).unwrap()
}

#[tokio::test]
async fn a_missing_token_type_is_taken_as_bearer_and_cached() {
    let server = TokenServer::start();
    server.respond(
        200,
        "application/json",
        r#"{"access_token":"untyped","expires_in":3600}"#,
    );
    let service = service(&server);
    let token = get(&service).await;
    assert_eq!(token.token_type(), "Bearer");
    assert_eq!(token.authorization_header(), "Bearer untyped");
    assert!(get(&service).await.ptr_eq(&token), "cached");
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn upper_case_bearer_is_accepted() {
    let server = TokenServer::start();
    server.set_token_type("BEARER");
    let token = get(&service(&server)).await;
    assert_eq!(token.token_type(), "Bearer");
    assert_eq!(token.authorization_header(), "Bearer tok-1--");
}

#[tokio::test]
async fn another_type_is_refused_and_not_cached() {
    let server = TokenServer::start();
    server.set_token_type("DPoP");
    let mut options = options_for(&server, |_| {});
    options.failure_cooldown = std::time::Duration::ZERO;
    let service = AccessTokenManagementService::new(options).unwrap();
    let error = try_get(&service).await.unwrap_err();
    assert!(
        matches!(&error, TokenError::UnsupportedTokenType { token_type, .. } if token_type == "DPoP"),
        "{error:?}"
    );
    server.set_mode(Mode::Issue);
    server.set_token_type("Bearer");
    assert_eq!(get(&service).await.access_token(), "tok-2--", "not cached");
}
