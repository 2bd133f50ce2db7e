//! RFC 8705 certificate-bound access tokens: an access token client presents its token client's
//! certificate to the API (`present_token_client_certificate`), against a rustls server that
//! verifies client certificates and binds the tokens it issues to the certificate of the connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_rs::digest::{SHA256, digest};
use axum::body::Body;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair,
};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use token_mgmt::prelude::*;
use token_mgmt::tokens::{ClientAuthentication, Pem, TlsClientCertificate};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A certificate and its key, in PEM and DER.
struct Issued {
    pem: String,
    key_pem: String,
    der: Vec<u8>,
    key_der: Vec<u8>,
}

struct Pki {
    ca: Issued,
    issuer: Issuer<'static, KeyPair>,
}

fn params(common_name: &str, names: Vec<String>) -> CertificateParams {
    let mut params = CertificateParams::new(names).expect("certificate parameters");
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params
}

impl Pki {
    fn new() -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut ca = params("bound-api test CA", Vec::new());
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let certificate = ca.self_signed(&key).expect("CA certificate");
        Self {
            ca: Issued {
                pem: certificate.pem(),
                key_pem: key.serialize_pem(),
                der: certificate.der().to_vec(),
                key_der: key.serialize_der(),
            },
            issuer: Issuer::new(ca, key),
        }
    }

    fn issue(&self, mut params: CertificateParams, usage: ExtendedKeyUsagePurpose) -> Issued {
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let certificate = params.signed_by(&key, &self.issuer).expect("certificate");
        Issued {
            pem: certificate.pem(),
            key_pem: key.serialize_pem(),
            der: certificate.der().to_vec(),
            key_der: key.serialize_der(),
        }
    }
}

/// The RFC 8705 thumbprint of a certificate (`cnf.x5t#S256`).
fn thumbprint(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, der))
}

/// An authorization server and API in one: `POST /token` issues a token bound to the certificate
/// of the connection (refusing a connection without one), `GET /api/resource` accepts a token only
/// over a connection presenting the certificate it is bound to. Client certificates are verified
/// against the test CA, and optional, so a connection without one reaches the handlers.
struct BoundApiServer {
    base: String,
    token_requests: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    rejected: Arc<AtomicUsize>,
}

impl BoundApiServer {
    async fn start(pki: &Pki) -> Self {
        let server = pki.issue(
            params("127.0.0.1", vec!["127.0.0.1".into()]),
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(pki.ca.der.clone()))
            .expect("CA root");
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .expect("client certificate verifier");
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from(server.der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key_der.clone())),
            )
            .expect("server certificate");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let token_requests = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let rejected = Arc::new(AtomicUsize::new(0));
        let counters = (token_requests.clone(), accepted.clone(), rejected.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let counters = counters.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let bound_to = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|certificate| thumbprint(certificate));
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let response = respond(&request, bound_to.as_deref(), &counters);
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            base: format!("https://127.0.0.1:{}", address.port()),
            token_requests,
            accepted,
            rejected,
        }
    }
}

type Counters = (Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<AtomicUsize>);

fn respond<B>(
    request: &Request<B>,
    bound_to: Option<&str>,
    (token_requests, accepted, rejected): &Counters,
) -> Response<Body> {
    let status = |status: StatusCode, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("response")
    };
    match request.uri().path() {
        "/token" => match bound_to {
            Some(thumbprint) => {
                token_requests.fetch_add(1, Ordering::SeqCst);
                status(
                    StatusCode::OK,
                    format!(
                        r#"{{"access_token":"bound.{thumbprint}","token_type":"Bearer","expires_in":3600}}"#
                    ),
                )
            }
            None => status(
                StatusCode::BAD_REQUEST,
                r#"{"error":"invalid_client","error_description":"no client certificate"}"#.into(),
            ),
        },
        "/api/resource" => {
            let presented = request
                .headers()
                .get("authorization")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer bound."));
            if presented.is_some() && presented == bound_to {
                accepted.fetch_add(1, Ordering::SeqCst);
                status(StatusCode::OK, r#"{"ok":true}"#.into())
            } else {
                rejected.fetch_add(1, Ordering::SeqCst);
                status(
                    StatusCode::UNAUTHORIZED,
                    r#"{"error":"invalid_token"}"#.into(),
                )
            }
        }
        _ => status(StatusCode::NOT_FOUND, "{}".into()),
    }
}

/// A container with token client `mtls` (tls_client_auth with `client`) and access token client
/// `api`, which presents the certificate when `present` is set.
fn services(
    server: &BoundApiServer,
    pki: &Pki,
    client: &Issued,
    present: bool,
) -> ServiceCollection {
    let mut services = ServiceCollection::new();
    let address = format!("{}/token", server.base);
    let ca = pki.ca.pem.clone();
    let certificate = TlsClientCertificate::from_pem(&client.pem, &client.key_pem)
        .with_root_certificate(Pem::Inline(ca.clone()));
    services.add_access_token_management(move |options| {
        options.client.clients.add(
            "mtls",
            TokenClientOptions {
                address: address.parse()?,
                client_id: "worker".into(),
                authentication: ClientAuthentication::TlsClientAuth(certificate),
                ..Default::default()
            },
        );
        Ok(())
    });
    let base = format!("{}/api/", server.base);
    let api_root = reqwest::Certificate::from_pem(ca.as_bytes()).expect("CA certificate");
    let api = services
        .add_client_access_token_client("api", None, move |options| {
            options.base_address = Some(base.parse()?);
            Ok(())
        })
        .configure_reqwest(move |builder| builder.add_root_certificate(api_root.clone()));
    if present {
        api.present_token_client_certificate();
    }
    services
}

/// A fresh server and PKI, and the `api` client of [`services`] (a client certificate issued by the
/// server's CA; presented to the API when `present` is set).
async fn bound_api_client(present: bool) -> (BoundApiServer, HttpClient) {
    let pki = Pki::new();
    let server = BoundApiServer::start(&pki).await;
    let client = pki.issue(
        params("worker", Vec::new()),
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let provider = services(&server, &pki, &client, present)
        .build()
        .expect("valid registrations");
    let api = provider
        .get_required::<HttpClientFactory>()
        .expect("factory")
        .create_client("api")
        .expect("client");
    (server, api)
}

#[tokio::test]
async fn an_access_token_client_presents_the_token_clients_certificate_to_the_api() {
    let (server, api) = bound_api_client(true).await;

    for _ in 0..3 {
        let response = api.get("resource").send().await.expect("API call");
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(server.token_requests.load(Ordering::SeqCst), 1);
    assert_eq!(server.accepted.load(Ordering::SeqCst), 3);
    assert_eq!(server.rejected.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn without_the_option_the_api_sees_no_certificate_and_refuses_the_bound_token() {
    let (server, api) = bound_api_client(false).await;

    let response = api.get("resource").send().await.expect("API call");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // The token was issued over the token client's own mTLS connection; the API refused it (and the
    // handler's one renewal) because the API connection presented no certificate.
    assert!(server.token_requests.load(Ordering::SeqCst) >= 1);
    assert_eq!(server.accepted.load(Ordering::SeqCst), 0);
}

#[test]
fn presenting_a_certificate_needs_an_mtls_token_client_and_an_access_token_client() {
    let mut services = ServiceCollection::new();
    services.add_access_token_management(|options| {
        options.client.clients.add(
            "secret",
            TokenClientOptions {
                address: "https://idp.example/token".parse()?,
                client_id: "worker".into(),
                client_secret: "secret".into(),
                ..Default::default()
            },
        );
        Ok(())
    });
    services
        .add_client_access_token_client("api", Some("secret"), |options| {
            options.base_address = Some("https://api.example/".parse()?);
            Ok(())
        })
        .present_token_client_certificate();
    services
        .add_http_client("plain", |_| Ok(()))
        .present_token_client_certificate();

    let message = services
        .build()
        .expect_err("invalid registrations")
        .to_string();
    assert!(
        message.contains(
            "HTTP client `api` presents the certificate of token client `secret`, whose authentication is not tls_client_auth"
        ),
        "{message}"
    );
    assert!(
        message.contains("HTTP client `plain` presents its token client's certificate, but it is not an access token client"),
        "{message}"
    );
}

#[test]
fn a_certificate_whose_key_does_not_load_is_reported_at_build_without_the_key() {
    let pki = Pki::new();
    let client = pki.issue(
        params("worker", Vec::new()),
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let not_a_key =
        "-----BEGIN NOTHING-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END NOTHING-----\n";
    let mut services = ServiceCollection::new();
    let certificate = TlsClientCertificate::from_pem(&client.pem, not_a_key);
    services.add_access_token_management(move |options| {
        options.client.clients.add(
            "mtls",
            TokenClientOptions {
                address: "https://idp.example/token".parse()?,
                client_id: "worker".into(),
                authentication: ClientAuthentication::TlsClientAuth(certificate),
                ..Default::default()
            },
        );
        Ok(())
    });
    services
        .add_client_access_token_client("api", None, |options| {
            options.base_address = Some("https://api.example/".parse()?);
            Ok(())
        })
        .present_token_client_certificate();

    let message = services
        .build()
        .expect_err("invalid registrations")
        .to_string();
    assert!(
        message.contains("HTTP client `api` cannot present the certificate of token client `mtls`"),
        "{message}"
    );
    assert!(!message.contains("c2VjcmV0"), "{message}");
}
