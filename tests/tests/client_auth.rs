//! Client authentication on the wire (against the local token server, which records every request)
//! and its validation: what each method sends, assertion claims and signatures, settings, failures,
//! and that secrets and keys never show in `Debug` or errors.
//!
//! The interop suite (`--test interop`) proves the same methods against a real authorization server.

mod client_auth {
    mod bound_api;
}

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::hmac;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use secrecy::SecretString;
use serde_json::Value;
use token_mgmt::BoxError;
use token_mgmt::tokens::{
    AccessTokenManagementOptions, AccessTokenManagementService, AssertionContext, CertificateError,
    ClientAssertionProvider, ClientAuthentication, ClientSecretJwt, JWT_BEARER_ASSERTION_TYPE,
    KeyError, OptionsError, PrivateKey, PrivateKeyJwt, SigningAlgorithm, TlsClientCertificate,
    TokenClientOptions, TokenError, TokenRequestParameters,
};
use token_mgmt_tests::interop::jwt_claims;
use token_mgmt_tests::token_server::{RecordedRequest, TokenServer};

const CLIENT: &str = "api";
const LONG_SECRET: &str = "a-client-secret-of-more-than-32-bytes-0123456789";

fn service(
    server: &TokenServer,
    authentication: ClientAuthentication,
) -> AccessTokenManagementService {
    let mut client = server.client_options();
    client.client_secret = LONG_SECRET.into();
    client.authentication = authentication;
    let mut options = AccessTokenManagementOptions::default();
    options.client.clients.add(CLIENT, client);
    AccessTokenManagementService::new(options).expect("valid options")
}

async fn request(service: &AccessTokenManagementService) -> Result<(), TokenError> {
    service
        .get_client_access_token(CLIENT, &TokenRequestParameters::force_renewal())
        .await
        .map(drop)
}

/// The assertion's header and claims, and the assertion itself.
fn assertion(request: &RecordedRequest) -> (Value, Value, String) {
    assert_eq!(request.header("authorization"), None);
    assert_eq!(request.form_value("client_secret"), None);
    assert_eq!(request.form_value("client_id"), Some("client"));
    assert_eq!(
        request.form_value("client_assertion_type"),
        Some(JWT_BEARER_ASSERTION_TYPE)
    );
    let jwt = request
        .form_value("client_assertion")
        .expect("an assertion")
        .to_owned();
    let header = URL_SAFE_NO_PAD
        .decode(jwt.split('.').next().unwrap())
        .unwrap();
    (
        serde_json::from_slice(&header).unwrap(),
        jwt_claims(&jwt),
        jwt,
    )
}

fn signing_input_and_signature(jwt: &str) -> (&str, Vec<u8>) {
    let (input, signature) = jwt.rsplit_once('.').unwrap();
    (input, URL_SAFE_NO_PAD.decode(signature).unwrap())
}

#[tokio::test]
async fn client_secret_jwt_sends_a_fresh_hmac_signed_assertion_per_request() {
    let server = TokenServer::start();
    let service = service(
        &server,
        ClientAuthentication::ClientSecretJwt(ClientSecretJwt::default()),
    );

    request(&service).await.unwrap();
    let (header, claims, jwt) = assertion(&server.last_request().unwrap());
    assert_eq!(header["alg"], "HS256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(claims["iss"], "client");
    assert_eq!(claims["sub"], "client");
    assert_eq!(claims["aud"], server.url());
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        60
    );
    let (input, signature) = signing_input_and_signature(&jwt);
    let key = hmac::Key::new(hmac::HMAC_SHA256, LONG_SECRET.as_bytes());
    hmac::verify(&key, input.as_bytes(), &signature).expect("HMAC over the client secret");

    request(&service).await.unwrap();
    let (_, second, _) = assertion(&server.last_request().unwrap());
    assert_ne!(
        second["jti"], claims["jti"],
        "every request signs a new assertion"
    );
    assert!(claims["jti"].as_str().unwrap().len() >= 22);
}

#[tokio::test]
async fn private_key_jwt_uses_the_key_id_audience_and_lifetime_set() {
    let server = TokenServer::start();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let service = service(
        &server,
        ClientAuthentication::PrivateKeyJwt(
            PrivateKeyJwt::new(PrivateKey::from_pem(key.serialize_pem()).with_key_id("key-1"))
                .audience("https://issuer.example")
                .lifetime(Duration::from_secs(30)),
        ),
    );

    request(&service).await.unwrap();
    let (header, claims, jwt) = assertion(&server.last_request().unwrap());
    assert_eq!(header["alg"], "ES256", "inferred from the P-256 key");
    assert_eq!(header["kid"], "key-1");
    assert_eq!(claims["aud"], "https://issuer.example");
    assert_eq!(claims["iss"], "client");
    assert_eq!(claims["sub"], "client");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        30
    );
    let (input, signature) = signing_input_and_signature(&jwt);
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.public_key_raw())
        .verify(input.as_bytes(), &signature)
        .expect("signed with the client's key");
}

#[tokio::test]
async fn none_sends_the_client_id_alone() {
    let server = TokenServer::start();
    let service = service(&server, ClientAuthentication::None);

    request(&service).await.unwrap();
    let request = server.last_request().unwrap();
    assert_eq!(request.header("authorization"), None);
    assert_eq!(request.form_value("client_id"), Some("client"));
    assert_eq!(request.form_value("client_secret"), None);
    assert_eq!(request.form_value("client_assertion"), None);
    assert_eq!(request.form_value("grant_type"), Some("client_credentials"));
}

struct FailingProvider;

#[async_trait]
impl ClientAssertionProvider for FailingProvider {
    async fn client_assertion(&self, _: &AssertionContext<'_>) -> Result<SecretString, BoxError> {
        Err("the key service is unreachable".into())
    }
}

#[tokio::test]
async fn a_failing_assertion_provider_fails_the_request_before_it_is_sent() {
    let server = TokenServer::start();
    let service = service(
        &server,
        ClientAuthentication::PrivateKeyJwt(PrivateKeyJwt::with_provider(Arc::new(
            FailingProvider,
        ))),
    );

    let error = request(&service).await.unwrap_err();
    assert!(
        matches!(&error, TokenError::ClientAuthentication { client, .. } if client == CLIENT),
        "{error:?}"
    );
    assert_eq!(
        error.source().unwrap().to_string(),
        "the key service is unreachable"
    );
    assert!(
        !error.to_string().contains("unreachable"),
        "cause only in source()"
    );
    assert_eq!(server.request_count(), 0);
}

fn client(authentication: ClientAuthentication) -> TokenClientOptions {
    TokenClientOptions {
        address: "https://idp.example/token".parse().unwrap(),
        client_id: "id".into(),
        client_secret: "tiny-secret-value".into(),
        authentication,
        ..Default::default()
    }
}

fn certificate_for(key: &KeyPair) -> String {
    CertificateParams::new(vec!["worker".to_owned()])
        .unwrap()
        .self_signed(key)
        .unwrap()
        .pem()
}

#[test]
fn unusable_keys_secrets_and_certificates_are_reported_at_validation_with_the_client_name() {
    let ec = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let jwt = |key: PrivateKey| ClientAuthentication::PrivateKeyJwt(PrivateKeyJwt::new(key));
    let mut options = AccessTokenManagementOptions::default();
    let clients = &mut options.client.clients;
    clients.add("garbage", client(jwt(PrivateKey::from_pem("not a key"))));
    clients.add(
        "missing-file",
        client(jwt(PrivateKey::from_file("/nonexistent/key.pem"))),
    );
    clients.add(
        "wrong-algorithm",
        client(jwt(
            PrivateKey::from_pem(ec.serialize_pem()).with_algorithm(SigningAlgorithm::Rs256)
        )),
    );
    clients.add(
        "public-jwk",
        client(jwt(PrivateKey::from_jwk(
            r#"{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"}"#,
        ))),
    );
    clients.add(
        "short-secret",
        client(ClientAuthentication::ClientSecretJwt(
            ClientSecretJwt::default(),
        )),
    );
    clients.add(
        "foreign-key",
        client(ClientAuthentication::TlsClientAuth(
            TlsClientCertificate::from_pem(certificate_for(&ec), other.serialize_pem()),
        )),
    );
    clients.add(
        "no-certificate",
        client(ClientAuthentication::SelfSignedTlsClientAuth(
            TlsClientCertificate::from_pem("", other.serialize_pem()),
        )),
    );

    let error = AccessTokenManagementService::new(options).expect_err("invalid");
    let message = error.to_string();
    assert!(
        !message.contains("PRIVATE KEY") && !message.contains("tiny-secret-value"),
        "{message}"
    );
    let problems = error.problems();
    assert_eq!(problems.len(), 7, "{message}");
    let key_error = |name: &str| {
        problems
            .iter()
            .find_map(|p| match p {
                OptionsError::ClientKey { client, source } if client == name => {
                    Some(source.clone())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no key problem for {name}: {message}"))
    };
    assert!(matches!(*key_error("garbage"), KeyError::NoPrivateKey));
    assert!(matches!(*key_error("missing-file"), KeyError::Read { .. }));
    assert!(matches!(
        *key_error("wrong-algorithm"),
        KeyError::AlgorithmMismatch {
            algorithm: SigningAlgorithm::Rs256,
            key_type: "P-256"
        }
    ));
    assert!(matches!(
        *key_error("public-jwk"),
        KeyError::InvalidJwk { .. }
    ));
    assert!(problems.iter().any(|p| matches!(
        p,
        OptionsError::ClientSecretTooShort { client, minimum: 32, .. } if client == "short-secret"
    )));
    let certificate_error = |name: &str| {
        problems
            .iter()
            .find_map(|p| match p {
                OptionsError::ClientCertificate { client, source } if client == name => {
                    Some(source.clone())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no certificate problem for {name}: {message}"))
    };
    let rejected = certificate_error("foreign-key");
    assert!(matches!(*rejected, CertificateError::Rejected { .. }));
    assert!(matches!(
        *certificate_error("no-certificate"),
        CertificateError::NoCertificate
    ));
}

#[test]
fn debug_hides_secrets_keys_the_address_password_and_parameter_values() {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let pem = key.serialize_pem();
    let body = pem.lines().nth(1).unwrap().to_owned();
    let options = TokenClientOptions {
        address: "https://user:hunter2@idp.example/token".parse().unwrap(),
        client_id: "worker".into(),
        client_secret: "s3cr3t-value".into(),
        authentication: ClientAuthentication::PrivateKeyJwt(PrivateKeyJwt::new(
            PrivateKey::from_pem(pem.clone()),
        )),
        parameters: vec![("audience".into(), "parameter-value".into())],
        ..Default::default()
    };
    let mtls = ClientAuthentication::TlsClientAuth(TlsClientCertificate::from_pem(
        certificate_for(&key),
        pem,
    ));

    let shown = format!("{options:?} {options:#?} {mtls:?}");
    for secret in ["hunter2", "s3cr3t-value", "parameter-value", body.as_str()] {
        assert!(!shown.contains(secret), "{secret} shown in {shown}");
    }
    assert!(shown.contains("audience"), "parameter names stay: {shown}");
    assert!(shown.contains("user"), "the user name stays: {shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}
