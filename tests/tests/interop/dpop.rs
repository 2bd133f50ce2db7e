//! DPoP (RFC 9449) against oidc-provider: tokens bound to the client's key (every algorithm, the
//! server computing the thumbprint itself), a server that requires nonces, a refused proof; then
//! API calls through the handler to a resource server of ours that checks every proof.

use futures_util::stream;
use serde_json::{Value, json};
use token_mgmt::tokens::{
    AccessTokenManagementService, ClientAccessTokenHandler, ClientAuthentication, DpopKey,
    PrivateKey, SigningAlgorithm, TokenClientOptions, TokenError, TokenRequestParameters,
};
use token_mgmt_tests::dpop_api::DpopApi;
use token_mgmt_tests::interop::{AuthorizationServer, ServerConfig, jwt_claims, node_keys};
use token_mgmt_tests::require_interop;

use crate::{
    RESOURCE, RESOURCE_SCOPES, SCOPE, SECRET, client_metadata, client_options, fresh_token,
    service_named,
};

/// A client that authenticates with a secret and whose tokens the server binds to a DPoP key.
fn bound(id: &str) -> Value {
    client_metadata(
        id,
        "client_secret_basic",
        json!({ "client_secret": SECRET, "dpop_bound_access_tokens": true }),
    )
}

fn start(
    clients: Vec<Value>,
    require_nonce: &[&str],
    algs: Option<&[&str]>,
) -> AuthorizationServer {
    AuthorizationServer::start(&ServerConfig {
        clients,
        scopes: vec![SCOPE.into(), "api:write".into()],
        resources: vec![(RESOURCE.into(), RESOURCE_SCOPES.into())],
        dpop_require_nonce: require_nonce.iter().map(|&id| id.to_owned()).collect(),
        dpop_signing_algs: algs.map(|algs| algs.iter().map(|&a| a.to_owned()).collect()),
        ..Default::default()
    })
}

fn with_dpop(server: &AuthorizationServer, id: &str, key: DpopKey) -> TokenClientOptions {
    TokenClientOptions {
        dpop: Some(key),
        ..client_options(server, id, ClientAuthentication::ClientSecretBasic)
    }
}

fn resource() -> TokenRequestParameters {
    TokenRequestParameters {
        resources: vec![RESOURCE.into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn dpop_bound_tokens_need_a_proof_and_are_bound_to_the_key_of_every_algorithm() {
    require_interop!();
    let server = start(vec![bound("bound")], &[], None);
    let keys = node_keys();
    let service = service_named(vec![
        ("es256", with_dpop(&server, "bound", DpopKey::generate())),
        (
            "es384",
            with_dpop(
                &server,
                "bound",
                DpopKey::from_key(PrivateKey::from_pem(keys.p384.pkcs8.clone())),
            ),
        ),
        (
            "eddsa",
            with_dpop(
                &server,
                "bound",
                DpopKey::from_key(PrivateKey::from_jwk(keys.ed25519.jwk.clone())),
            ),
        ),
        (
            "rs256",
            with_dpop(
                &server,
                "bound",
                DpopKey::from_key(PrivateKey::from_pem(keys.rsa.pkcs8.clone())),
            ),
        ),
        (
            "ps256",
            with_dpop(
                &server,
                "bound",
                DpopKey::from_key(
                    PrivateKey::from_jwk(keys.rsa.jwk.clone())
                        .with_algorithm(SigningAlgorithm::Ps256),
                ),
            ),
        ),
        (
            "generated-eddsa",
            with_dpop(
                &server,
                "bound",
                DpopKey::generate_with(SigningAlgorithm::EdDsa),
            ),
        ),
        (
            "no-proof",
            client_options(&server, "bound", ClientAuthentication::ClientSecretBasic),
        ),
    ]);
    for name in [
        "es256",
        "es384",
        "eddsa",
        "rs256",
        "ps256",
        "generated-eddsa",
    ] {
        let token = service
            .get_client_access_token(name, &resource())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", server.stderr()));
        assert_eq!(token.token_type(), "DPoP", "{name}");
        assert!(
            token
                .authorization_header()
                .to_str()
                .unwrap()
                .starts_with("DPoP ")
        );
        let thumbprint = service
            .dpop_thumbprint(name)
            .unwrap()
            .expect("a DPoP client");
        assert_eq!(
            jwt_claims(token.access_token())["cnf"]["jkt"],
            thumbprint,
            "{name}"
        );
        // Opaque tokens (no resource) are bound too.
        assert!(
            fresh_token(&service, name).await.unwrap().is_dpop(),
            "{name}"
        );
    }
    // Each key has its own cache entry.
    let keys: std::collections::HashSet<_> = ["es256", "rs256", "no-proof"]
        .iter()
        .map(|name| service.cache_key(name, &resource()).unwrap())
        .collect();
    assert_eq!(keys.len(), 3);

    match fresh_token(&service, "no-proof").await {
        Err(TokenError::Endpoint {
            status,
            error,
            client,
            ..
        }) => {
            assert_eq!(status.as_u16(), 400);
            assert_eq!(error.as_deref(), Some("invalid_grant"));
            assert_eq!(client, "no-proof");
        }
        other => panic!("expected the server to refuse a request without a proof, got {other:?}"),
    }
}

#[tokio::test]
async fn a_server_that_requires_nonces_costs_one_extra_round_trip_once() {
    require_interop!();
    let server = start(vec![bound("nonce"), bound("free")], &["nonce"], None);
    let service = service_named(vec![
        ("nonce", with_dpop(&server, "nonce", DpopKey::generate())),
        ("free", with_dpop(&server, "free", DpopKey::generate())),
    ]);
    let token = fresh_token(&service, "nonce")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.stderr()));
    assert!(token.is_dpop());
    assert_eq!(
        server.token_requests().await,
        2,
        "use_dpop_nonce, then the token"
    );
    for expected in [3, 4, 5] {
        let renewed = fresh_token(&service, "nonce").await.unwrap();
        assert!(!renewed.same_token(&token));
        assert_eq!(
            server.token_requests().await,
            expected,
            "the nonce is reused"
        );
    }
    // A client the server does not ask for a nonce is never refused.
    for expected in [6, 7] {
        assert!(fresh_token(&service, "free").await.unwrap().is_dpop());
        assert_eq!(server.token_requests().await, expected);
    }
}

#[tokio::test]
async fn a_refused_proof_is_an_endpoint_error_naming_the_client() {
    require_interop!();
    let server = start(vec![bound("bound")], &[], Some(&["ES256"]));
    let service = service_named(vec![(
        "rsa-dpop",
        with_dpop(
            &server,
            "bound",
            DpopKey::generate_with(SigningAlgorithm::Rs256),
        ),
    )]);
    let error = fresh_token(&service, "rsa-dpop").await.unwrap_err();
    assert_eq!(error.oauth_error(), Some("invalid_dpop_proof"), "{error}");
    assert_eq!(error.client(), "rsa-dpop");
    assert!(error.to_string().contains("`rsa-dpop`"), "{error}");
}

fn api_client(
    service: &AccessTokenManagementService,
    api: &DpopApi,
) -> reqwest_middleware::ClientWithMiddleware {
    reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(
            ClientAccessTokenHandler::new(service.clone(), "api")
                .with_allowed_origin(&api.url("/")),
        )
        .build()
}

#[tokio::test]
async fn api_calls_carry_a_fresh_proof_and_reuse_the_apis_nonce() {
    require_interop!();
    let server = start(vec![bound("bound")], &[], None);
    let api = DpopApi::start();
    let service = service_named(vec![(
        "api",
        TokenClientOptions {
            resources: vec![RESOURCE.into()],
            ..with_dpop(&server, "bound", DpopKey::generate())
        },
    )]);
    let client = api_client(&service, &api);
    let get = |path: &str| client.get(api.url(path)).send();

    // The first call meets the API's nonce: one extra round trip, no failed call.
    let response = get("items?page=1").await.unwrap();
    assert_eq!(response.status(), 200, "{:?}", api.rejections());
    assert_eq!((api.requests(), api.nonce_challenges()), (2, 1));
    // Steady state: the nonce is reused, one round trip per call.
    for page in 2..=5 {
        let response = get(&format!("items?page={page}#top")).await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let response = client
        .post(api.url("items"))
        .json(&json!({ "name": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!((api.requests(), api.nonce_challenges()), (7, 1));

    // The API demands a new nonce mid-run: exactly one extra round trip.
    api.rotate_nonce();
    assert_eq!(get("items").await.unwrap().status(), 200);
    assert_eq!((api.requests(), api.nonce_challenges()), (9, 2));
    assert_eq!(server.token_requests().await, 1, "one token all along");

    // A rejected token is renewed and the request resent with a new proof for the new token.
    api.reject_next_token();
    assert_eq!(get("items").await.unwrap().status(), 200);
    assert_eq!(api.requests(), 11);
    assert_eq!(server.token_requests().await, 2);
    assert_eq!(api.tokens().len(), 2, "the resend used the renewed token");

    // A body that cannot be replayed: the nonce challenge is returned, not retried.
    api.rotate_nonce();
    let body = reqwest::Body::wrap_stream(stream::once(async {
        Ok::<_, std::io::Error>(bytes_of("streamed"))
    }));
    let response = client
        .put(api.url("items/1"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(api.requests(), 12);
    // ... but its nonce is remembered: the next call needs no extra round trip.
    assert_eq!(get("items").await.unwrap().status(), 200);
    assert_eq!(api.requests(), 13);

    // An API that never accepts a nonce: one retry, then its 401; no renewal, no loop.
    api.always_demand_a_new_nonce(true);
    let response = get("items").await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(api.requests(), 15);
    assert_eq!(
        server.token_requests().await,
        2,
        "a nonce challenge is not a renewal"
    );
    api.always_demand_a_new_nonce(false);
    assert_eq!(get("items").await.unwrap().status(), 200);
    assert_eq!(api.requests(), 16);

    assert!(api.rejections().is_empty(), "{:?}", api.rejections());
}

fn bytes_of(text: &'static str) -> Vec<u8> {
    text.as_bytes().to_vec()
}
