//! Client credentials token management: options, the token endpoint client, the token cache and the
//! single-flight [`AccessTokenManagementService`].
//!
//! This module knows nothing of the container, the host or the HTTP client factory: it can be used on
//! its own.
//!
//! ```no_run
//! use token_mgmt::tokens::{
//!     AccessTokenManagementOptions, AccessTokenManagementService, TokenClientOptions,
//!     TokenRequestParameters,
//! };
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut options = AccessTokenManagementOptions::default();
//! options.client.clients.add("identityserver", TokenClientOptions {
//!     address: "https://demo.identityserver.io/connect/token".parse()?,
//!     client_id: "m2m.short".into(),
//!     client_secret: "secret".into(),
//!     ..Default::default()
//! });
//! let service = AccessTokenManagementService::new(options)?;
//! let token = service
//!     .get_client_access_token("identityserver", &TokenRequestParameters::default())
//!     .await?;
//! let _header = token.authorization_header(); // `Bearer ...`, marked sensitive
//! # Ok(()) }
//! ```
//!
//! See [`service`](AccessTokenManagementService) for caching and single-flight semantics.

mod auth;
mod cache;
mod clock;
mod discovery;
mod dpop;
mod endpoint;
mod error;
mod handler;
mod metrics;
mod options;
#[cfg(feature = "redis")]
mod redis;
mod refresh;
mod retry;
mod service;
mod token;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::{
    DEFAULT_REDIS_LOCK_TTL, DEFAULT_REDIS_TIMEOUT, RedisCacheError, RedisTokenCache,
    RedisTokenCacheBuilder,
};
pub use auth::{
    AssertionClaims, AssertionContext, CertificateError, ClientAssertionProvider,
    ClientAuthentication, ClientSecretJwt, DEFAULT_ASSERTION_LIFETIME, HmacAlgorithm,
    JWT_BEARER_ASSERTION_TYPE, KeyError, Pem, PrivateKey, PrivateKeyJwt, PrivateKeySigner,
    SigningAlgorithm, TlsClientCertificate,
};
pub use cache::{
    CacheKey, ClientAccessTokenCache, DEFAULT_MAX_CACHED_TOKENS, InMemoryClientAccessTokenCache,
    PrecomputedHashBuilder, PrecomputedHasher, RequestLock, client_fingerprint,
};
pub use clock::{Clock, ManualClock, Sleep, Stamp, SystemClock};
pub use discovery::{
    DEFAULT_DISCOVERY_CACHE_LIFETIME, DiscoveryError, DiscoveryOptions, metadata_urls,
};
pub use dpop::{DPOP_HEADER, DPOP_NONCE_HEADER, DpopError, DpopKey, USE_DPOP_NONCE};
pub use error::{
    LastFailure, MAX_ERROR_CODE_CHARS, MAX_ERROR_DESCRIPTION_CHARS, OptionsError, TokenError,
};
pub(crate) use handler::{Authorized, Forward, Replay};
pub use handler::{ClientAccessTokenHandler, ForeignOriginError, SkipAccessToken};
pub use metrics::names as metric_names;
pub use options::{
    AccessTokenManagementOptions, ClientOptions, ClientSecret, DEFAULT_CACHE_KEY_PREFIX,
    DEFAULT_CACHE_LIFETIME_BUFFER, DEFAULT_EXPIRY_SAFETY_MARGIN, DEFAULT_FAILURE_COOLDOWN,
    DEFAULT_MAX_RESPONSE_BODY_SIZE, DEFAULT_MIN_FORCED_RENEWAL_INTERVAL, DEFAULT_REQUEST_TIMEOUT,
    RESERVED_PARAMETERS, TokenClientOptions, TokenClients, TokenRequestParameters,
    UnauthorizedRenewal, is_reserved,
};
// The https rule of access token clients (`registration`, with the `hosting` feature).
#[cfg(feature = "hosting")]
pub(crate) use options::{display_endpoint, is_loopback};
pub use retry::RetryPolicy;
pub use service::{AccessTokenManagementService, AccessTokenManagementServiceBuilder};
pub use token::{ClientAccessToken, InvalidToken, StoredClientAccessToken};
