//! RFC 8705 mutual TLS: oidc-provider behind node's https server asking for client certificates.

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair,
};
use serde_json::json;
use token_mgmt::tokens::{ClientAuthentication, Pem, TlsClientCertificate, TokenRequestParameters};
use token_mgmt_tests::interop::{AuthorizationServer, ServerConfig, ServerTls, jwt_claims};
use token_mgmt_tests::require_interop;

use crate::{
    RESOURCE, RESOURCE_SCOPES, SCOPE, assert_invalid_client, client_metadata, client_options,
    fresh_token, service,
};

/// A certificate and its key, in PEM, and the certificate's DER.
struct Issued {
    cert: String,
    key: String,
    der: Vec<u8>,
}

fn params(common_name: &str, names: Vec<String>) -> CertificateParams {
    let mut params = CertificateParams::new(names).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params
}

struct Pki {
    ca: Issued,
    ca_issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut ca_params = params("token-mgmt interop CA", Vec::new());
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = ca_params.self_signed(&key).unwrap();
        let ca = Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        };
        Self {
            ca,
            ca_issuer: Issuer::new(ca_params, key),
        }
    }

    fn issue(&self, mut params: CertificateParams, usage: ExtendedKeyUsagePurpose) -> Issued {
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca_issuer).unwrap();
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

fn self_signed(common_name: &str) -> Issued {
    let key = KeyPair::generate().unwrap();
    let mut params = params(common_name, Vec::new());
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.self_signed(&key).unwrap();
    Issued {
        cert: cert.pem(),
        key: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

fn presenting(certificate: &Issued, ca: &Issued) -> TlsClientCertificate {
    TlsClientCertificate::from_pem(&certificate.cert, &certificate.key)
        .with_root_certificate(Pem::Inline(ca.cert.clone()))
}

/// The RFC 8705 certificate thumbprint (`cnf.x5t#S256`).
fn thumbprint(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, der))
}

#[tokio::test]
async fn tls_client_auth_and_self_signed_tls_client_auth_get_certificate_bound_tokens() {
    require_interop!();
    let pki = Pki::new();
    let server_cert = pki.issue(
        params("127.0.0.1", vec!["127.0.0.1".into()]),
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let client_cert = pki.issue(
        params("worker-mtls", Vec::new()),
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let registered_self_signed = self_signed("worker-self-signed");
    let unregistered_self_signed = self_signed("worker-self-signed");
    let server = AuthorizationServer::start(&ServerConfig {
        clients: vec![
            client_metadata(
                "mtls",
                "tls_client_auth",
                json!({
                    "tls_client_auth_subject_dn": "CN=worker-mtls",
                    "tls_client_certificate_bound_access_tokens": true,
                }),
            ),
            client_metadata(
                "self-signed",
                "self_signed_tls_client_auth",
                json!({
                    "jwks_pem": [{ "kid": "cert", "pem": registered_self_signed.cert }],
                    "tls_client_certificate_bound_access_tokens": true,
                }),
            ),
            client_metadata(
                "mtls-other-subject",
                "tls_client_auth",
                json!({ "tls_client_auth_subject_dn": "CN=someone-else" }),
            ),
            client_metadata(
                "mtls-unverified",
                "tls_client_auth",
                json!({ "tls_client_auth_subject_dn": "CN=worker-self-signed" }),
            ),
            client_metadata(
                "self-signed-unregistered",
                "self_signed_tls_client_auth",
                json!({ "jwks_pem": [{ "kid": "cert", "pem": registered_self_signed.cert }] }),
            ),
        ],
        scopes: vec![SCOPE.into(), "api:write".into()],
        resources: vec![(RESOURCE.into(), RESOURCE_SCOPES.into())],
        tls: Some(ServerTls {
            cert: server_cert.cert.clone(),
            key: server_cert.key.clone(),
            client_ca: pki.ca.cert.clone(),
        }),
        ..Default::default()
    });
    let ca = &pki.ca;
    let service = service(vec![
        client_options(
            &server,
            "mtls",
            ClientAuthentication::TlsClientAuth(presenting(&client_cert, ca)),
        ),
        client_options(
            &server,
            "self-signed",
            ClientAuthentication::SelfSignedTlsClientAuth(presenting(&registered_self_signed, ca)),
        ),
        client_options(
            &server,
            "mtls-other-subject",
            ClientAuthentication::TlsClientAuth(presenting(&client_cert, ca)),
        ),
        client_options(
            &server,
            "mtls-unverified",
            ClientAuthentication::TlsClientAuth(presenting(&registered_self_signed, ca)),
        ),
        client_options(
            &server,
            "self-signed-unregistered",
            ClientAuthentication::SelfSignedTlsClientAuth(presenting(
                &unregistered_self_signed,
                ca,
            )),
        ),
    ]);

    let parameters = TokenRequestParameters {
        resources: vec![RESOURCE.into()],
        ..Default::default()
    };
    for (id, certificate) in [
        ("mtls", &client_cert),
        ("self-signed", &registered_self_signed),
    ] {
        let token = fresh_token(&service, id)
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}\n{}", server.stderr()));
        assert_eq!(token.scope(), Some(SCOPE), "{id}");
        let bound = service
            .get_client_access_token(id, &parameters)
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}\n{}", server.stderr()));
        let claims = jwt_claims(bound.access_token());
        assert_eq!(claims["aud"], RESOURCE, "{id}");
        // The server saw our certificate on the connection and bound the token to it.
        assert_eq!(
            claims["cnf"]["x5t#S256"],
            thumbprint(&certificate.der),
            "{id}"
        );
    }
    assert_invalid_client(fresh_token(&service, "mtls-other-subject").await);
    assert_invalid_client(fresh_token(&service, "mtls-unverified").await);
    assert_invalid_client(fresh_token(&service, "self-signed-unregistered").await);
}
