//! DPoP (RFC 9449) on the wire against local servers: the proof of token requests, which token
//! types a client accepts, the nonce retry of the token endpoint and its limit, the cache key, the
//! key's checks and secrecy, and the handler with Bearer tokens of a DPoP client.
//!
//! Run with `cargo test -p token-mgmt-tests --test dpop`. Oidc-provider and a DPoP-checking API are
//! in `tests/interop/dpop.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::json;
use token_mgmt::tokens::{
    AccessTokenManagementOptions, AccessTokenManagementService, ClientAccessTokenHandler, DpopKey,
    OptionsError, PrivateKey, TokenClientOptions, TokenError, TokenRequestParameters,
};
use token_mgmt_tests::dpop_api::{thumbprint, verify_proof};
use token_mgmt_tests::token_server::TokenServer;

fn service(clients: Vec<(&str, TokenClientOptions)>) -> AccessTokenManagementService {
    let mut options = AccessTokenManagementOptions::default();
    for (name, client) in clients {
        options.client.clients.add(name, client);
    }
    AccessTokenManagementService::new(options).expect("valid options")
}

fn dpop(mut client: TokenClientOptions) -> TokenClientOptions {
    client.dpop = Some(DpopKey::generate());
    client
}

async fn token(
    service: &AccessTokenManagementService,
    name: &str,
) -> Result<token_mgmt::tokens::ClientAccessToken, TokenError> {
    service
        .get_client_access_token(name, &TokenRequestParameters::force_renewal())
        .await
}

/// An axum server on 127.0.0.1 (on the test's runtime); its base URL.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn token_requests_carry_a_proof_for_the_token_endpoint() {
    let server = TokenServer::start();
    server.set_token_type("DPoP");
    let mut client = dpop(server.client_options());
    client.address = format!("{}?tenant=a", server.url()).parse().unwrap();
    let service = service(vec![("dpop", client)]);
    let token = token(&service, "dpop").await.unwrap();
    assert_eq!(token.token_type(), "DPoP");
    assert!(
        token
            .authorization_header()
            .to_str()
            .unwrap()
            .starts_with("DPoP ")
    );

    let request = server.last_request().unwrap();
    let (header, claims) = verify_proof(request.header("dpop").expect("a proof")).unwrap();
    assert_eq!(header["typ"], "dpop+jwt");
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["jwk"]["crv"], "P-256");
    assert_eq!(claims["htm"], "POST");
    assert_eq!(claims["htu"], server.url(), "no query");
    assert!(claims.get("ath").is_none());
    assert_eq!(
        Some(thumbprint(&header["jwk"])),
        service.dpop_thumbprint("dpop").unwrap()
    );
    // Every request gets a new proof.
    token_fresh(&service).await;
    let second = server.last_request().unwrap();
    let (_, again) = verify_proof(second.header("dpop").unwrap()).unwrap();
    assert_ne!(again["jti"], claims["jti"]);
}

async fn token_fresh(service: &AccessTokenManagementService) {
    token(service, "dpop").await.unwrap();
}

#[tokio::test]
async fn a_dpop_token_is_unsupported_for_a_client_without_a_key() {
    let server = TokenServer::start();
    server.set_token_type("DPoP");
    let service = service(vec![("plain", server.client_options())]);
    match token(&service, "plain").await {
        Err(TokenError::UnsupportedTokenType {
            client, token_type, ..
        }) => {
            assert_eq!(client, "plain");
            assert_eq!(token_type, "DPoP");
        }
        other => panic!("expected UnsupportedTokenType, got {other:?}"),
    }
    assert!(server.last_request().unwrap().header("dpop").is_none());
}

#[tokio::test]
async fn a_bearer_answer_to_a_dpop_client_is_used_as_bearer() {
    let server = TokenServer::start();
    let service = service(vec![("dpop", dpop(server.client_options()))]);
    let token = token(&service, "dpop").await.unwrap();
    assert_eq!(token.token_type(), "Bearer");
    assert!(server.last_request().unwrap().header("dpop").is_some());
    let url = "https://api.example.com/x".parse().unwrap();
    assert_eq!(
        service
            .dpop_proof("dpop", &http::Method::GET, &url, &token)
            .unwrap(),
        None
    );

    // Through the handler: `Authorization: Bearer`, no proof.
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = Arc::clone(&seen);
    let api = serve(Router::new().route(
        "/x",
        get(move |headers: axum::http::HeaderMap| async move {
            recorded.lock().unwrap().push((
                headers
                    .get("authorization")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned(),
                headers.contains_key("dpop"),
            ));
            "ok"
        }),
    ))
    .await;
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(
            ClientAccessTokenHandler::new(service.clone(), "dpop")
                .with_allowed_origin(&api.parse().unwrap()),
        )
        .build();
    let response = client.get(format!("{api}/x")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let seen = seen.lock().unwrap();
    assert!(seen[0].0.starts_with("Bearer "), "{:?}", seen[0].0);
    assert!(!seen[0].1, "no proof with a Bearer token");
}

/// A token endpoint that answers `use_dpop_nonce` with a new nonce `refusals` times, then issues a
/// DPoP token if the proof carries the last nonce. Counts requests.
async fn nonce_endpoint(refusals: usize) -> (String, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    let app = Router::new().route(
        "/token",
        post(move |headers: axum::http::HeaderMap| async move {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            let proof = headers.get("dpop").unwrap().to_str().unwrap().to_owned();
            let (_, claims) = verify_proof(&proof).unwrap();
            let nonce = format!("nonce-{n}");
            if n <= refusals {
                return (
                    StatusCode::BAD_REQUEST,
                    [("dpop-nonce", nonce)],
                    axum::Json(json!({ "error": "use_dpop_nonce" })),
                )
                    .into_response();
            }
            assert_eq!(
                claims["nonce"],
                format!("nonce-{}", n - 1),
                "the last nonce"
            );
            (
                [("dpop-nonce", nonce)],
                axum::Json(json!({
                    "access_token": format!("at-{n}"), "token_type": "DPoP", "expires_in": 3600
                })),
            )
                .into_response()
        }),
    );
    (format!("{}/token", serve(app).await), count)
}

fn client_for(address: &str) -> TokenClientOptions {
    dpop(TokenClientOptions {
        address: address.parse().unwrap(),
        client_id: "client".into(),
        client_secret: "secret".into(),
        ..Default::default()
    })
}

#[tokio::test]
async fn the_token_endpoints_nonce_is_retried_once() {
    let (address, count) = nonce_endpoint(1).await;
    let service = service(vec![("dpop", client_for(&address))]);
    let token = token(&service, "dpop").await.unwrap();
    assert_eq!(token.access_token(), "at-2");
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_nonce_refused_again_is_a_typed_error_after_two_requests() {
    let (address, count) = nonce_endpoint(usize::MAX).await;
    let service = service(vec![("dpop", client_for(&address))]);
    match token(&service, "dpop").await {
        Err(error @ TokenError::DpopNonceRejected { .. }) => {
            assert_eq!(error.client(), "dpop");
            assert!(error.to_string().contains("`dpop`"), "{error}");
        }
        other => panic!("expected DpopNonceRejected, got {other:?}"),
    }
    assert_eq!(count.load(Ordering::SeqCst), 2, "one retry, no loop");
}

#[tokio::test]
async fn the_cache_key_includes_the_keys_thumbprint() {
    let server = TokenServer::start();
    let service = service(vec![
        ("plain", server.client_options()),
        ("a", dpop(server.client_options())),
        ("b", dpop(server.client_options())),
    ]);
    let defaults = TokenRequestParameters::default();
    let key = |name| service.cache_key(name, &defaults).unwrap();
    let fingerprint = |name| {
        let key = key(name);
        let (_, id) = key.as_str().split_once("&id=").expect("the id field");
        id.to_owned()
    };
    // Same endpoint and client id: only the DPoP key tells them apart.
    assert_ne!(fingerprint("plain"), fingerprint("a"));
    assert_ne!(fingerprint("a"), fingerprint("b"));
    assert!(
        key("a")
            .as_str()
            .contains(&service.dpop_thumbprint("a").unwrap().unwrap())
    );
}

#[test]
fn an_unusable_key_is_an_options_error_naming_the_client() {
    let mut options = AccessTokenManagementOptions::default();
    let mut client = TokenClientOptions {
        address: "https://idp.example.com/token".parse().unwrap(),
        client_id: "id".into(),
        client_secret: "secret".into(),
        ..Default::default()
    };
    client.dpop = Some(DpopKey::from_key(PrivateKey::from_pem("not a key")));
    options.client.clients.add("broken", client);
    match AccessTokenManagementService::new(options) {
        Err(error @ OptionsError::DpopKey { .. }) => {
            assert!(error.to_string().contains("`broken`"), "{error}");
            assert!(std::error::Error::source(&error).is_some());
        }
        other => panic!("expected OptionsError::DpopKey, got {other:?}"),
    }
}

#[test]
fn the_private_key_is_never_shown() {
    let jwk = r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","d":"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"}"#;
    let key = DpopKey::from_key(PrivateKey::from_jwk(jwk));
    let client = TokenClientOptions {
        dpop: Some(key.clone()),
        ..Default::default()
    };
    for shown in [format!("{key:?}"), format!("{client:?}")] {
        assert!(!shown.contains("jpsQnnGQmL"), "{shown}");
        assert!(shown.contains("DpopKey"), "{shown}");
    }
    assert!(format!("{:?}", DpopKey::generate()).contains("ES256"));
}
