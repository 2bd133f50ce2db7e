//! JWT client assertions (RFC 7523 section 2.2, OpenID Connect Core section 9): `client_secret_jwt`,
//! `private_key_jwt`, and the [`ClientAssertionProvider`] trait for signers that live elsewhere.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::SecretString;
use serde::Serialize;

use super::keys::{KeyError, LoadedKey, PrivateKey};
use crate::BoxError;
use crate::tokens::ClientSecret;

/// The `client_assertion_type` of JWT client assertions (RFC 7523 section 2.2).
pub const JWT_BEARER_ASSERTION_TYPE: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Default lifetime of a client assertion: 60 s.
pub const DEFAULT_ASSERTION_LIFETIME: Duration = Duration::from_secs(60);

/// Produces the signed client assertion (a compact JWS) of one token request: a new one for every
/// request and every retry.
///
/// The built-in signer ([`PrivateKeySigner`]) implements it; implement it yourself to sign in a KMS
/// or HSM: take the claims from [`AssertionContext::claims`], the signing input from
/// [`AssertionClaims::signing_input`], sign that, and return [`AssertionClaims::compact`].
///
/// ```
/// use async_trait::async_trait;
/// use secrecy::SecretString;
/// use token_mgmt::BoxError;
/// use token_mgmt::tokens::{AssertionContext, ClientAssertionProvider};
///
/// struct Kms; // a client of your key service
///
/// impl Kms {
///     async fn sign_es256(&self, _message: &[u8]) -> Result<Vec<u8>, BoxError> {
///         Ok(vec![0; 64]) // the service's raw r || s signature
///     }
/// }
///
/// #[async_trait]
/// impl ClientAssertionProvider for Kms {
///     async fn client_assertion(&self, context: &AssertionContext<'_>) -> Result<SecretString, BoxError> {
///         let claims = context.claims();
///         let input = claims.signing_input("ES256", Some("kms-key-1"));
///         let signature = self.sign_es256(input.as_bytes()).await?;
///         Ok(claims.compact(input, &signature))
///     }
/// }
/// ```
#[async_trait]
pub trait ClientAssertionProvider: Send + Sync + 'static {
    /// A fresh signed assertion for `context`.
    ///
    /// # Errors
    ///
    /// Any failure to sign; the token request then fails with
    /// [`TokenError::ClientAuthentication`](crate::tokens::TokenError::ClientAuthentication).
    async fn client_assertion(
        &self,
        context: &AssertionContext<'_>,
    ) -> Result<SecretString, BoxError>;
}

/// What an assertion is for: the client and the audience.
#[derive(Debug, Clone, Copy)]
pub struct AssertionContext<'a> {
    client_name: &'a str,
    client_id: &'a str,
    audience: &'a str,
    lifetime: Duration,
}

impl<'a> AssertionContext<'a> {
    /// A context (to call a provider outside a token request, e.g. in its tests).
    pub fn new(
        client_name: &'a str,
        client_id: &'a str,
        audience: &'a str,
        lifetime: Duration,
    ) -> Self {
        Self {
            client_name,
            client_id,
            audience,
            lifetime,
        }
    }

    /// The token client's registered name.
    pub fn client_name(&self) -> &str {
        self.client_name
    }

    /// The client id: the assertion's `iss` and `sub`.
    pub fn client_id(&self) -> &str {
        self.client_id
    }

    /// The assertion's `aud`: the token endpoint URL (the issuer, for a client configured with an
    /// `authority`) unless configured otherwise.
    pub fn audience(&self) -> &str {
        self.audience
    }

    /// How long the assertion is valid (`exp - iat`).
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Fresh claims: `iss` = `sub` = the client id, `aud`, a random `jti`, `iat` now and `exp` =
    /// `iat` + the lifetime.
    pub fn claims(&self) -> AssertionClaims {
        let mut jti = [0u8; 24];
        // The system RNG failing is unrecoverable for every TLS connection too.
        SystemRandom::new()
            .fill(&mut jti)
            .expect("the system random number generator works");
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        AssertionClaims {
            iss: self.client_id.to_owned(),
            sub: self.client_id.to_owned(),
            aud: self.audience.to_owned(),
            jti: URL_SAFE_NO_PAD.encode(jti),
            iat,
            exp: iat.saturating_add(self.lifetime.as_secs().max(1)),
        }
    }
}

/// The claims of one client assertion.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct AssertionClaims {
    /// Issuer: the client id.
    pub iss: String,
    /// Subject: the client id.
    pub sub: String,
    /// Audience.
    pub aud: String,
    /// Unique id (192 random bits, base64url).
    pub jti: String,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'a str,
    typ: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<&'a str>,
}

impl AssertionClaims {
    /// The JWS signing input `base64url(header) "." base64url(claims)` for the header
    /// `{"alg": algorithm, "typ": "JWT", "kid": key_id}`.
    pub fn signing_input(&self, algorithm: &str, key_id: Option<&str>) -> String {
        let header = Header {
            alg: algorithm,
            typ: "JWT",
            kid: key_id,
        };
        let header = serde_json::to_vec(&header).expect("a header serializes");
        let claims = serde_json::to_vec(self).expect("claims serialize");
        let mut input = URL_SAFE_NO_PAD.encode(header);
        input.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut input);
        input
    }

    /// The compact JWS: `signing_input "." base64url(signature)`.
    pub fn compact(&self, mut signing_input: String, signature: &[u8]) -> SecretString {
        signing_input.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut signing_input);
        SecretString::from(signing_input)
    }
}

/// How the assertion's `aud` and lifetime are chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AssertionPolicy {
    audience: Option<String>,
    lifetime: Duration,
}

impl Default for AssertionPolicy {
    fn default() -> Self {
        Self {
            audience: None,
            lifetime: DEFAULT_ASSERTION_LIFETIME,
        }
    }
}

/// An HMAC algorithm for `client_secret_jwt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum HmacAlgorithm {
    /// `HS256` (the default): HMAC with SHA-256; the secret must have 32 bytes or more.
    #[default]
    Hs256,
    /// `HS384`: HMAC with SHA-384; the secret must have 48 bytes or more.
    Hs384,
    /// `HS512`: HMAC with SHA-512; the secret must have 64 bytes or more.
    Hs512,
}

impl HmacAlgorithm {
    /// The JWS `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            HmacAlgorithm::Hs256 => "HS256",
            HmacAlgorithm::Hs384 => "HS384",
            HmacAlgorithm::Hs512 => "HS512",
        }
    }

    /// The shortest secret allowed: the hash size (RFC 7518 section 3.2).
    pub fn minimum_secret_len(self) -> usize {
        match self {
            HmacAlgorithm::Hs256 => 32,
            HmacAlgorithm::Hs384 => 48,
            HmacAlgorithm::Hs512 => 64,
        }
    }

    fn aws(self) -> hmac::Algorithm {
        match self {
            HmacAlgorithm::Hs256 => hmac::HMAC_SHA256,
            HmacAlgorithm::Hs384 => hmac::HMAC_SHA384,
            HmacAlgorithm::Hs512 => hmac::HMAC_SHA512,
        }
    }
}

impl fmt::Display for HmacAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `client_secret_jwt`: an assertion signed with the client secret (HMAC).
///
/// ```
/// use std::time::Duration;
/// use token_mgmt::tokens::{ClientSecretJwt, HmacAlgorithm};
///
/// let jwt = ClientSecretJwt::new(HmacAlgorithm::Hs512).lifetime(Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSecretJwt {
    algorithm: HmacAlgorithm,
    policy: AssertionPolicy,
}

impl ClientSecretJwt {
    /// Signs with `algorithm`.
    pub fn new(algorithm: HmacAlgorithm) -> Self {
        Self {
            algorithm,
            policy: AssertionPolicy::default(),
        }
    }

    /// The `aud` of the assertions (default: the token endpoint URL, or the issuer for a client
    /// configured with an `authority`).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.policy.audience = Some(audience.into());
        self
    }

    /// How long each assertion is valid (default 60 s).
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.policy.lifetime = lifetime;
        self
    }

    /// The HMAC algorithm.
    pub fn algorithm(&self) -> HmacAlgorithm {
        self.algorithm
    }
}

#[derive(Clone)]
enum Signer {
    Key(PrivateKey),
    Provider(Arc<dyn ClientAssertionProvider>),
}

/// `private_key_jwt`: an assertion signed with the client's private key, or by a
/// [`ClientAssertionProvider`].
///
/// ```
/// use token_mgmt::tokens::{PrivateKey, PrivateKeyJwt};
///
/// let jwt = PrivateKeyJwt::new(PrivateKey::from_file("client-key.pem").with_key_id("k1"))
///     .audience("https://idp.example.com"); // the issuer, when the server wants that
/// ```
#[derive(Clone)]
pub struct PrivateKeyJwt {
    signer: Signer,
    policy: AssertionPolicy,
}

impl PrivateKeyJwt {
    /// Signs with `key` (the built-in [`PrivateKeySigner`]).
    pub fn new(key: PrivateKey) -> Self {
        Self {
            signer: Signer::Key(key),
            policy: AssertionPolicy::default(),
        }
    }

    /// Asks `provider` for every assertion.
    pub fn with_provider(provider: Arc<dyn ClientAssertionProvider>) -> Self {
        Self {
            signer: Signer::Provider(provider),
            policy: AssertionPolicy::default(),
        }
    }

    /// The `aud` of the assertions (default: the token endpoint URL, or the issuer for a client
    /// configured with an `authority`).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.policy.audience = Some(audience.into());
        self
    }

    /// How long each assertion is valid (default 60 s).
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.policy.lifetime = lifetime;
        self
    }
}

impl fmt::Debug for PrivateKeyJwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("PrivateKeyJwt");
        match &self.signer {
            Signer::Key(key) => s.field("key", key),
            Signer::Provider(_) => s.field("provider", &"custom ClientAssertionProvider"),
        };
        s.field("audience", &self.policy.audience)
            .field("lifetime", &self.policy.lifetime)
            .finish()
    }
}

/// The built-in [`ClientAssertionProvider`]: signs with a [`PrivateKey`] held in memory.
pub struct PrivateKeySigner {
    key: LoadedKey,
}

impl PrivateKeySigner {
    /// Loads and checks `key`.
    ///
    /// # Errors
    ///
    /// The key cannot be read or parsed, or its algorithm does not fit it.
    pub fn new(key: &PrivateKey) -> Result<Self, KeyError> {
        Ok(Self { key: key.load()? })
    }
}

impl fmt::Debug for PrivateKeySigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKeySigner")
            .field("algorithm", &self.key.algorithm)
            .field("key_id", &self.key.key_id)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ClientAssertionProvider for PrivateKeySigner {
    async fn client_assertion(
        &self,
        context: &AssertionContext<'_>,
    ) -> Result<SecretString, BoxError> {
        let claims = context.claims();
        let input = claims.signing_input(self.key.algorithm.as_str(), self.key.key_id.as_deref());
        let signature = self
            .key
            .sign(input.as_bytes())
            .map_err(|_| "the private key failed to sign")?;
        Ok(claims.compact(input, &signature))
    }
}

/// `client_secret_jwt`'s signer.
struct HmacSigner {
    algorithm: HmacAlgorithm,
    key: hmac::Key,
}

#[async_trait]
impl ClientAssertionProvider for HmacSigner {
    async fn client_assertion(
        &self,
        context: &AssertionContext<'_>,
    ) -> Result<SecretString, BoxError> {
        let claims = context.claims();
        let input = claims.signing_input(self.algorithm.as_str(), None);
        let tag = hmac::sign(&self.key, input.as_bytes());
        Ok(claims.compact(input, tag.as_ref()))
    }
}

/// A JWT assertion method, ready to sign: what the authenticator keeps per client.
pub(crate) struct AssertionSigner {
    pub(crate) provider: Arc<dyn ClientAssertionProvider>,
    /// The configured audience (`None`: the token endpoint, or a discovered issuer).
    pub(crate) audience: Option<String>,
    pub(crate) lifetime: Duration,
}

impl ClientSecretJwt {
    pub(crate) fn signer(&self, secret: &ClientSecret) -> AssertionSigner {
        let key = hmac::Key::new(self.algorithm.aws(), secret.expose_secret().as_bytes());
        AssertionSigner {
            provider: Arc::new(HmacSigner {
                algorithm: self.algorithm,
                key,
            }),
            audience: self.policy.audience.clone(),
            lifetime: self.policy.lifetime,
        }
    }
}

impl PrivateKeyJwt {
    /// The key to check at validation (a provider is the user's business).
    pub(crate) fn key(&self) -> Option<&PrivateKey> {
        match &self.signer {
            Signer::Key(key) => Some(key),
            Signer::Provider(_) => None,
        }
    }

    pub(crate) fn signer(&self) -> Result<AssertionSigner, KeyError> {
        let provider: Arc<dyn ClientAssertionProvider> = match &self.signer {
            Signer::Key(key) => Arc::new(PrivateKeySigner::new(key)?),
            Signer::Provider(provider) => Arc::clone(provider),
        };
        Ok(AssertionSigner {
            provider,
            audience: self.policy.audience.clone(),
            lifetime: self.policy.lifetime,
        })
    }
}
