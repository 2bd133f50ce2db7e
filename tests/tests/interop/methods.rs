//! Every method that works over plain http: secrets (basic, post, JWT), private_key_jwt with every
//! key encoding, a custom assertion provider, none; scope and resource indicators.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use secrecy::SecretString;
use serde_json::{Value, json};
use token_mgmt::BoxError;
use token_mgmt::tokens::{
    AssertionContext, ClientAssertionProvider, ClientAuthentication, ClientSecretJwt,
    HmacAlgorithm, PrivateKey, PrivateKeyJwt, PrivateKeySigner, SigningAlgorithm,
    TokenRequestParameters,
};
use token_mgmt_tests::interop::{
    AuthorizationServer, NodeKey, ServerConfig, jwt_claims, node_keys,
};
use token_mgmt_tests::require_interop;

use crate::{
    RESOURCE, RESOURCE_SCOPES, SCOPE, SECRET, assert_invalid_client, client_metadata,
    client_options, fresh_token, service, service_named,
};

fn start(clients: Vec<Value>) -> AuthorizationServer {
    AuthorizationServer::start(&ServerConfig {
        clients,
        scopes: vec![SCOPE.into(), "api:write".into()],
        resources: vec![(RESOURCE.into(), RESOURCE_SCOPES.into())],
        tls: None,
        ..Default::default()
    })
}

fn with_secret(id: &str, method: &str) -> Value {
    client_metadata(id, method, json!({ "client_secret": SECRET }))
}

fn with_key(id: &str, kid: &str, key: &NodeKey) -> Value {
    client_metadata(
        id,
        "private_key_jwt",
        json!({ "jwks_pem": [{ "kid": kid, "pem": key.public }] }),
    )
}

/// Every client gets a token with the scope asked for.
async fn assert_tokens(
    server: &AuthorizationServer,
    service: &token_mgmt::tokens::AccessTokenManagementService,
    ids: &[&str],
) {
    for id in ids {
        let token = fresh_token(service, id)
            .await
            .unwrap_or_else(|e| panic!("client {id}: {e}\nserver stderr:\n{}", server.stderr()));
        assert!(!token.access_token().is_empty(), "client {id}");
        assert_eq!(token.scope(), Some(SCOPE), "client {id}");
    }
}

#[tokio::test]
async fn client_secret_basic_and_post_are_accepted_and_a_wrong_secret_is_invalid_client() {
    require_interop!();
    let server = start(vec![
        with_secret("basic", "client_secret_basic"),
        with_secret("post", "client_secret_post"),
        with_secret("wrong-secret", "client_secret_basic"),
    ]);
    let mut wrong = client_options(
        &server,
        "wrong-secret",
        ClientAuthentication::ClientSecretBasic,
    );
    wrong.client_secret = "not-the-registered-secret".into();
    let service = service(vec![
        client_options(&server, "basic", ClientAuthentication::ClientSecretBasic),
        client_options(&server, "post", ClientAuthentication::ClientSecretPost),
        wrong,
    ]);

    assert_tokens(&server, &service, &["basic", "post"]).await;
    assert_invalid_client(fresh_token(&service, "wrong-secret").await);
}

#[tokio::test]
async fn client_secret_jwt_with_each_hmac_is_accepted_and_a_wrong_secret_is_invalid_client() {
    require_interop!();
    let jwt = |id: &str, alg: &str| {
        client_metadata(
            id,
            "client_secret_jwt",
            json!({ "client_secret": SECRET, "token_endpoint_auth_signing_alg": alg }),
        )
    };
    let server = start(vec![
        jwt("hs256", "HS256"),
        jwt("hs384", "HS384"),
        jwt("hs512", "HS512"),
        jwt("hs256-wrong", "HS256"),
    ]);
    let method = |algorithm| ClientAuthentication::ClientSecretJwt(ClientSecretJwt::new(algorithm));
    let mut wrong = client_options(&server, "hs256-wrong", method(HmacAlgorithm::Hs256));
    wrong.client_secret = "another-secret-that-is-long-enough-for-hs256-0123456789".into();
    let service = service(vec![
        client_options(&server, "hs256", method(HmacAlgorithm::Hs256)),
        client_options(&server, "hs384", method(HmacAlgorithm::Hs384)),
        client_options(&server, "hs512", method(HmacAlgorithm::Hs512)),
        wrong,
    ]);

    assert_tokens(&server, &service, &["hs256", "hs384", "hs512"]).await;
    assert_invalid_client(fresh_token(&service, "hs256-wrong").await);
}

fn key_file(name: &str, contents: &str) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("token-mgmt-interop-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
}

#[tokio::test]
async fn private_key_jwt_with_every_key_type_and_encoding_is_accepted() {
    require_interop!();
    let keys = node_keys();
    let server = start(vec![
        with_key("rsa-pkcs8", "rsa", &keys.rsa),
        with_key("rsa-pkcs1-ps256", "rsa", &keys.rsa),
        with_key("rsa-jwk-file", "rsa", &keys.rsa),
        with_key("p256-sec1", "p256", &keys.p256),
        with_key("p256-pkcs8-file", "p256", &keys.p256),
        with_key("p384-jwk", "p384", &keys.p384),
        with_key("p384-sec1", "p384", &keys.p384),
        with_key("ed25519-pkcs8", "ed", &keys.ed25519),
        with_key("ed25519-jwk", "ed", &keys.ed25519),
        with_key("issuer-audience", "rsa", &keys.rsa),
    ]);
    let jwt = |key: PrivateKey| ClientAuthentication::PrivateKeyJwt(PrivateKeyJwt::new(key));
    let rsa_jwk = key_file("rsa.jwk", &keys.rsa.jwk);
    let p256_pem = key_file("p256.pem", &keys.p256.pkcs8);
    let clients = vec![
        client_options(
            &server,
            "rsa-pkcs8",
            jwt(PrivateKey::from_pem(&keys.rsa.pkcs8)),
        ),
        client_options(
            &server,
            "rsa-pkcs1-ps256",
            jwt(PrivateKey::from_pem(keys.rsa.traditional.clone().unwrap())
                .with_algorithm(SigningAlgorithm::Ps256)),
        ),
        client_options(
            &server,
            "rsa-jwk-file",
            jwt(PrivateKey::from_file(&rsa_jwk)),
        ),
        client_options(
            &server,
            "p256-sec1",
            jwt(PrivateKey::from_pem(keys.p256.traditional.clone().unwrap())),
        ),
        client_options(
            &server,
            "p256-pkcs8-file",
            jwt(PrivateKey::from_file(&p256_pem)),
        ),
        client_options(
            &server,
            "p384-jwk",
            jwt(PrivateKey::from_jwk(&keys.p384.jwk)),
        ),
        client_options(
            &server,
            "p384-sec1",
            jwt(PrivateKey::from_pem(keys.p384.traditional.clone().unwrap())),
        ),
        client_options(
            &server,
            "ed25519-pkcs8",
            jwt(PrivateKey::from_pem(&keys.ed25519.pkcs8)),
        ),
        client_options(
            &server,
            "ed25519-jwk",
            jwt(PrivateKey::from_jwk(&keys.ed25519.jwk)),
        ),
        client_options(
            &server,
            "issuer-audience",
            ClientAuthentication::PrivateKeyJwt(
                PrivateKeyJwt::new(PrivateKey::from_pem(&keys.rsa.pkcs8)).audience(&server.issuer),
            ),
        ),
    ];
    let ids: Vec<String> = clients.iter().map(|c| c.client_id.clone()).collect();
    let service = service(clients);
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();

    assert_tokens(&server, &service, &ids).await;
    // oidc-provider refuses a replayed assertion (same jti): a second request per client passes
    // only because every request signs a new one.
    assert_tokens(&server, &service, &ids).await;
    let _ = std::fs::remove_file(rsa_jwk);
    let _ = std::fs::remove_file(p256_pem);
}

#[tokio::test]
async fn private_key_jwt_with_a_wrong_key_or_kid_is_invalid_client() {
    require_interop!();
    let keys = node_keys();
    let server = start(vec![
        with_key("wrong-key", "rsa", &keys.rsa),
        client_metadata(
            "two-keys",
            "private_key_jwt",
            json!({ "jwks_pem": [
                { "kid": "current", "pem": keys.rsa.public },
                { "kid": "retired", "pem": keys.other_rsa.public },
            ] }),
        ),
        with_key("wrong-audience", "rsa", &keys.rsa),
    ]);
    let jwt = |key: PrivateKey| ClientAuthentication::PrivateKeyJwt(PrivateKeyJwt::new(key));
    let service = service_named(vec![
        (
            "wrong-key",
            client_options(
                &server,
                "wrong-key",
                jwt(PrivateKey::from_pem(&keys.other_rsa.pkcs8)),
            ),
        ),
        (
            "current",
            client_options(
                &server,
                "two-keys",
                jwt(PrivateKey::from_pem(&keys.rsa.pkcs8).with_key_id("current")),
            ),
        ),
        (
            // The right key, announced as the other one: the server checks it against the
            // key the kid names.
            "retired",
            client_options(
                &server,
                "two-keys",
                jwt(PrivateKey::from_pem(&keys.rsa.pkcs8).with_key_id("retired")),
            ),
        ),
        (
            "wrong-audience",
            client_options(
                &server,
                "wrong-audience",
                ClientAuthentication::PrivateKeyJwt(
                    PrivateKeyJwt::new(PrivateKey::from_pem(&keys.rsa.pkcs8))
                        .audience("https://somewhere-else.example/"),
                ),
            ),
        ),
    ]);

    assert_tokens(&server, &service, &["current"]).await;
    assert_invalid_client(fresh_token(&service, "wrong-key").await);
    assert_invalid_client(fresh_token(&service, "retired").await);
    assert_invalid_client(fresh_token(&service, "wrong-audience").await);
}

/// A provider standing in for a KMS: signs with the built-in signer and counts its calls.
struct CountingProvider {
    signer: PrivateKeySigner,
    calls: AtomicUsize,
}

#[async_trait]
impl ClientAssertionProvider for CountingProvider {
    async fn client_assertion(
        &self,
        context: &AssertionContext<'_>,
    ) -> Result<SecretString, BoxError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.signer.client_assertion(context).await
    }
}

#[tokio::test]
async fn a_custom_assertion_provider_is_asked_for_every_request() {
    require_interop!();
    let keys = node_keys();
    let server = start(vec![with_key("kms", "p256", &keys.p256)]);
    let provider = Arc::new(CountingProvider {
        signer: PrivateKeySigner::new(&PrivateKey::from_pem(&keys.p256.pkcs8)).unwrap(),
        calls: AtomicUsize::new(0),
    });
    let service = service(vec![client_options(
        &server,
        "kms",
        ClientAuthentication::PrivateKeyJwt(PrivateKeyJwt::with_provider(provider.clone())),
    )]);

    assert_tokens(&server, &service, &["kms", "kms"]).await;
    assert_eq!(provider.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_public_client_authenticates_with_its_client_id_only() {
    require_interop!();
    let server = start(vec![
        client_metadata("public", "none", json!({})),
        // A confidential client cannot pass for a public one.
        with_secret("confidential", "client_secret_basic"),
    ]);
    let service = service(vec![
        client_options(&server, "public", ClientAuthentication::None),
        client_options(&server, "confidential", ClientAuthentication::None),
    ]);

    assert_tokens(&server, &service, &["public"]).await;
    assert_invalid_client(fresh_token(&service, "confidential").await);
}

#[tokio::test]
async fn a_resource_indicator_gets_a_jwt_for_that_audience_with_the_scope_asked_for() {
    require_interop!();
    let keys = node_keys();
    let server = start(vec![
        with_secret("basic", "client_secret_basic"),
        with_key("signed", "ed", &keys.ed25519),
    ]);
    let service = service(vec![
        client_options(&server, "basic", ClientAuthentication::ClientSecretBasic),
        client_options(
            &server,
            "signed",
            ClientAuthentication::PrivateKeyJwt(PrivateKeyJwt::new(PrivateKey::from_jwk(
                &keys.ed25519.jwk,
            ))),
        ),
    ]);
    let parameters = TokenRequestParameters {
        scope: Some("api:write".into()),
        resources: vec![RESOURCE.into()],
        ..Default::default()
    };
    for id in ["basic", "signed"] {
        let token = service
            .get_client_access_token(id, &parameters)
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}\n{}", server.stderr()));
        let claims = jwt_claims(token.access_token());
        assert_eq!(claims["aud"], RESOURCE, "{id}");
        assert_eq!(claims["scope"], "api:write", "{id}");
        assert_eq!(claims["client_id"], id);
        assert_eq!(claims["iss"], server.issuer.as_str());
        assert_eq!(token.scope(), Some("api:write"));
    }

    let unknown = TokenRequestParameters {
        resources: vec!["https://unknown.example/".into()],
        ..Default::default()
    };
    match service.get_client_access_token("basic", &unknown).await {
        Err(token_mgmt::tokens::TokenError::Endpoint { error, .. }) => {
            assert_eq!(error.as_deref(), Some("invalid_target"));
        }
        other => panic!("expected invalid_target, got {:?}", other.map(|_| ())),
    }
}
