//! How a token request authenticates the client: the OAuth `token_endpoint_auth_method`.
//!
//! See [`ClientAuthentication`] for the methods.
//!
//! Keys and certificates are loaded and checked when the options are validated (errors name the
//! client); a JWT assertion is signed anew for every token request, retries included.

mod assertion;
mod keys;
mod tls;

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderValue;
use http::header::AUTHORIZATION;
use secrecy::ExposeSecret;
use url::form_urlencoded;

pub use assertion::{
    AssertionClaims, AssertionContext, ClientAssertionProvider, ClientSecretJwt,
    DEFAULT_ASSERTION_LIFETIME, HmacAlgorithm, JWT_BEARER_ASSERTION_TYPE, PrivateKeyJwt,
    PrivateKeySigner,
};
pub(crate) use keys::LoadedKey;
pub use keys::{KeyError, PrivateKey, SigningAlgorithm};
pub use tls::{CertificateError, Pem, TlsClientCertificate};

use self::assertion::AssertionSigner;
use super::error::{OptionsError, TokenError};
use super::options::{ClientSecret, TokenClientOptions, display_endpoint};

/// How a token client authenticates at the token endpoint. Named as in the OAuth registry
/// (`token_endpoint_auth_method`):
///
/// | variant | registry name | what is sent |
/// |---|---|---|
/// | `ClientSecretBasic` (default) | `client_secret_basic` | `Authorization: Basic` with id and secret |
/// | `ClientSecretPost` | `client_secret_post` | `client_id`, `client_secret` form fields |
/// | `ClientSecretJwt` | `client_secret_jwt` | `client_assertion` signed with the secret (HS256/384/512) |
/// | `PrivateKeyJwt` | `private_key_jwt` | `client_assertion` signed with a private key or a [`ClientAssertionProvider`] |
/// | `TlsClientAuth` | `tls_client_auth` | `client_id`, over a TLS connection presenting a CA-issued client certificate |
/// | `SelfSignedTlsClientAuth` | `self_signed_tls_client_auth` | `client_id`, over TLS presenting a self-signed certificate |
/// | `None` | `none` | `client_id` only (a public client) |
///
/// Keys and certificates are loaded and checked when the options are validated (errors name the
/// client); a JWT assertion is signed anew for every token request, retries included.
///
/// ```
/// use token_mgmt::tokens::{ClientAuthentication, PrivateKey, PrivateKeyJwt, TokenClientOptions};
///
/// # fn main() -> Result<(), url::ParseError> {
/// let client = TokenClientOptions {
///     address: "https://idp.example.com/oauth2/token".parse()?,
///     client_id: "worker".into(),
///     authentication: ClientAuthentication::PrivateKeyJwt(PrivateKeyJwt::new(
///         PrivateKey::from_file("/run/secrets/client-key.pem"),
///     )),
///     ..Default::default()
/// };
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum ClientAuthentication {
    /// `client_secret_basic`: `Authorization: Basic` with the id and secret, each form-url-encoded
    /// first (RFC 6749 section 2.3.1).
    #[default]
    ClientSecretBasic,
    /// `client_secret_post`: `client_id` and `client_secret` form fields.
    ClientSecretPost,
    /// `client_secret_jwt`: a JWT assertion signed with the client secret.
    ClientSecretJwt(ClientSecretJwt),
    /// `private_key_jwt`: a JWT assertion signed with the client's private key.
    PrivateKeyJwt(PrivateKeyJwt),
    /// `tls_client_auth` (RFC 8705 section 2.1): a CA-issued client certificate; `client_id` in the
    /// body.
    TlsClientAuth(TlsClientCertificate),
    /// `self_signed_tls_client_auth` (RFC 8705 section 2.2): a self-signed client certificate
    /// registered with the server; `client_id` in the body.
    SelfSignedTlsClientAuth(TlsClientCertificate),
    /// `none`: a public client, `client_id` in the body and nothing else.
    None,
}

impl ClientAuthentication {
    /// The registry name (`client_secret_basic`, `private_key_jwt`, ...).
    pub fn method(&self) -> &'static str {
        match self {
            ClientAuthentication::ClientSecretBasic => "client_secret_basic",
            ClientAuthentication::ClientSecretPost => "client_secret_post",
            ClientAuthentication::ClientSecretJwt(_) => "client_secret_jwt",
            ClientAuthentication::PrivateKeyJwt(_) => "private_key_jwt",
            ClientAuthentication::TlsClientAuth(_) => "tls_client_auth",
            ClientAuthentication::SelfSignedTlsClientAuth(_) => "self_signed_tls_client_auth",
            ClientAuthentication::None => "none",
        }
    }

    /// The client certificate, for the mTLS methods.
    pub fn tls_client_certificate(&self) -> Option<&TlsClientCertificate> {
        match self {
            ClientAuthentication::TlsClientAuth(certificate)
            | ClientAuthentication::SelfSignedTlsClientAuth(certificate) => Some(certificate),
            _ => None,
        }
    }

    /// Problems with this method for client `name` (loads keys and certificates to check them).
    pub(crate) fn problems(&self, name: &str, secret: &ClientSecret) -> Vec<OptionsError> {
        let client = || name.to_owned();
        let mut problems = Vec::new();
        match self {
            ClientAuthentication::ClientSecretJwt(jwt) => {
                let minimum = jwt.algorithm().minimum_secret_len();
                if secret.expose_secret().len() < minimum {
                    problems.push(OptionsError::ClientSecretTooShort {
                        client: client(),
                        algorithm: jwt.algorithm(),
                        minimum,
                    });
                }
            }
            ClientAuthentication::PrivateKeyJwt(jwt) => {
                if let Some(Err(source)) = jwt.key().map(PrivateKeySigner::new) {
                    problems.push(OptionsError::ClientKey {
                        client: client(),
                        source: Arc::new(source),
                    });
                }
            }
            ClientAuthentication::TlsClientAuth(certificate)
            | ClientAuthentication::SelfSignedTlsClientAuth(certificate) => {
                if let Err(source) = certificate.http_client() {
                    problems.push(OptionsError::ClientCertificate {
                        client: client(),
                        source: Arc::new(source),
                    });
                }
            }
            ClientAuthentication::ClientSecretBasic
            | ClientAuthentication::ClientSecretPost
            | ClientAuthentication::None => {}
        }
        problems
    }
}

/// What a request carries to authenticate, prepared once per client.
enum Credentials {
    /// The precomputed `Authorization: Basic ...` value.
    Basic(HeaderValue),
    /// `client_id` and, unless empty, `client_secret` in the body.
    Post(ClientSecret),
    /// `client_id` alone in the body (`none`, and the mTLS methods where the connection
    /// authenticates).
    ClientId,
    /// A fresh JWT assertion per request.
    Assertion(AssertionSigner),
    /// The key or certificate could not be loaded when the service was built (it was valid when
    /// the options were validated moments before: a file changed in between).
    Unavailable(Arc<OptionsError>),
}

/// A token client's authentication, built once per client: what every one of its token requests
/// carries, and the HTTP client mTLS needs.
pub(crate) struct Authenticator {
    client: Arc<str>,
    endpoint: Arc<str>,
    client_id: String,
    credentials: Credentials,
    /// The client's own HTTP client when it presents a certificate.
    http: Option<reqwest::Client>,
}

impl Authenticator {
    pub(crate) fn new(name: &str, options: &TokenClientOptions) -> Self {
        let endpoint = display_endpoint(options.location());
        let mut http = None;
        let credentials = match &options.authentication {
            ClientAuthentication::ClientSecretBasic => Credentials::Basic(basic_authorization(
                &options.client_id,
                &options.client_secret,
            )),
            ClientAuthentication::ClientSecretPost => {
                Credentials::Post(options.client_secret.clone())
            }
            ClientAuthentication::None => Credentials::ClientId,
            ClientAuthentication::ClientSecretJwt(jwt) => {
                Credentials::Assertion(jwt.signer(&options.client_secret))
            }
            ClientAuthentication::PrivateKeyJwt(jwt) => match jwt.signer() {
                Ok(signer) => Credentials::Assertion(signer),
                Err(source) => Credentials::Unavailable(Arc::new(OptionsError::ClientKey {
                    client: name.to_owned(),
                    source: Arc::new(source),
                })),
            },
            ClientAuthentication::TlsClientAuth(certificate)
            | ClientAuthentication::SelfSignedTlsClientAuth(certificate) => {
                match certificate.http_client() {
                    Ok(client) => {
                        http = Some(client);
                        Credentials::ClientId
                    }
                    Err(source) => {
                        Credentials::Unavailable(Arc::new(OptionsError::ClientCertificate {
                            client: name.to_owned(),
                            source: Arc::new(source),
                        }))
                    }
                }
            }
        };
        Self {
            client: name.into(),
            endpoint: endpoint.into(),
            client_id: options.client_id.clone(),
            credentials,
            http,
        }
    }

    /// The HTTP client to send this client's token requests with: its own (mTLS) or `shared`.
    pub(crate) fn http_client<'a>(&'a self, shared: &'a reqwest::Client) -> &'a reqwest::Client {
        self.http.as_ref().unwrap_or(shared)
    }

    /// Completes one token request: adds the credentials (a header, or form fields after the
    /// grant's fields in `form`) and sets the body. Signs a new assertion on every call, for the
    /// configured audience or else `default_audience` (the token endpoint, or a discovered issuer).
    pub(crate) async fn apply(
        &self,
        request: reqwest::RequestBuilder,
        form: String,
        default_audience: &str,
    ) -> Result<reqwest::RequestBuilder, TokenError> {
        // The assertion is awaited before the serializer exists: it is not `Send`.
        let assertion = match &self.credentials {
            Credentials::Assertion(signer) => {
                let context = AssertionContext::new(
                    &self.client,
                    &self.client_id,
                    signer.audience.as_deref().unwrap_or(default_audience),
                    signer.lifetime,
                );
                let assertion = signer
                    .provider
                    .client_assertion(&context)
                    .await
                    .map_err(|source| self.error(Arc::from(source)))?;
                Some(assertion)
            }
            Credentials::Unavailable(problem) => return Err(self.error(problem.clone())),
            _ => None,
        };
        // Appends after the grant's fields (start 0: the whole string is the form so far).
        let mut form = form_urlencoded::Serializer::for_suffix(form, 0);
        let request = match &self.credentials {
            Credentials::Basic(authorization) => {
                request.header(AUTHORIZATION, authorization.clone())
            }
            Credentials::Post(secret) => {
                form.append_pair("client_id", &self.client_id);
                if !secret.is_empty() {
                    form.append_pair("client_secret", secret.expose_secret());
                }
                request
            }
            Credentials::ClientId | Credentials::Unavailable(_) => {
                form.append_pair("client_id", &self.client_id);
                request
            }
            Credentials::Assertion(_) => {
                form.append_pair("client_id", &self.client_id);
                form.append_pair("client_assertion_type", JWT_BEARER_ASSERTION_TYPE);
                if let Some(assertion) = &assertion {
                    form.append_pair("client_assertion", assertion.expose_secret());
                }
                request
            }
        };
        Ok(request.body(form.finish()))
    }

    fn error(&self, source: Arc<dyn std::error::Error + Send + Sync + 'static>) -> TokenError {
        TokenError::ClientAuthentication {
            client: self.client.to_string(),
            endpoint: self.endpoint.to_string(),
            source,
        }
    }
}

/// `client_secret_basic` per RFC 6749 section 2.3.1: the client id and secret are each encoded with
/// the `application/x-www-form-urlencoded` algorithm, joined by `:`, then base64-encoded.
pub(crate) fn basic_authorization(client_id: &str, client_secret: &ClientSecret) -> HeaderValue {
    let id: String = form_urlencoded::byte_serialize(client_id.as_bytes()).collect();
    let secret = zeroize::Zeroizing::new(
        form_urlencoded::byte_serialize(client_secret.expose_secret().as_bytes())
            .collect::<String>(),
    );
    let joined = zeroize::Zeroizing::new(format!("{id}:{}", secret.as_str()));
    let encoded = zeroize::Zeroizing::new(STANDARD.encode(joined.as_bytes()));
    let mut value = HeaderValue::try_from(format!("Basic {}", encoded.as_str()))
        .expect("base64 is a valid header value");
    value.set_sensitive(true);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_authorization_form_encodes_before_base64() {
        let value = basic_authorization("my:client+id ü", &ClientSecret::from("p@ss word:+"));
        let expected = STANDARD.encode("my%3Aclient%2Bid+%C3%BC:p%40ss+word%3A%2B");
        assert_eq!(value, format!("Basic {expected}").as_str());
        assert!(value.is_sensitive());
    }
}
