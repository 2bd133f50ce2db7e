//! Errors of the token management module.
//!
//! Nothing in this file ever formats a client secret or an access token: the variants only carry names,
//! endpoints (with any user info stripped), HTTP statuses and the OAuth `error` / `error_description`
//! the token service chose to send (length-capped).

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use super::auth::{CertificateError, HmacAlgorithm, KeyError};
use super::discovery::DiscoveryError;
use super::dpop::DpopError;
use crate::BoxError;

/// Longest `error_description` kept from a token service response, in characters.
pub const MAX_ERROR_DESCRIPTION_CHARS: usize = 256;
/// Longest OAuth `error` code kept from a token service response, in characters.
pub const MAX_ERROR_CODE_CHARS: usize = 64;

/// Why a token could not be had.
///
/// Every variant that concerns a request names the token client and the token endpoint. The error is
/// [`Clone`] (sources are shared through [`Arc`]) because one token request is shared by every caller
/// waiting on the same cache key, and every one of them receives the error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// No token client is registered under this name.
    #[error("no token client named `{name}` is registered (known clients: {})", known_list(.known))]
    UnknownClient {
        /// The name asked for.
        name: String,
        /// The registered client names.
        known: Vec<String>,
    },

    /// The token endpoint answered with an error status.
    #[error(
        "token endpoint {endpoint} rejected the request of client `{client}` with HTTP {status}{}",
        oauth_suffix(.error.as_deref(), .error_description.as_deref())
    )]
    Endpoint {
        /// The token client name.
        client: String,
        /// The token endpoint (without user info).
        endpoint: String,
        /// The HTTP status of the response.
        status: StatusCode,
        /// The OAuth `error` code, when the body was an OAuth error JSON.
        error: Option<String>,
        /// The OAuth `error_description`, when present (capped to [`MAX_ERROR_DESCRIPTION_CHARS`]).
        error_description: Option<String>,
        /// The delay the server asked for in `Retry-After` (429 and 503 responses), when it did.
        retry_after: Option<Duration>,
    },

    /// The token endpoint kept failing with transient errors (connection failures, timeouts, 5xx,
    /// 429) until the retry policy gave up; the last failure is the [`source`](std::error::Error::source).
    #[error(
        "token endpoint {endpoint} is unavailable for client `{client}` (gave up after {attempts} attempt{})",
        if *.attempts == 1 { "" } else { "s" }
    )]
    Unavailable {
        /// The token client name.
        client: String,
        /// The token endpoint (without user info).
        endpoint: String,
        /// How many requests were sent.
        attempts: u32,
        /// The last failure.
        #[source]
        source: LastFailure,
    },

    /// The token endpoint issued a token of a type this client does not understand (RFC 6749
    /// section 7.1: such a token must not be used). Not cached.
    #[error(
        "token endpoint {endpoint} issued client `{client}` a token of unsupported type `{token_type}` (only Bearer, and DPoP for a client with a DPoP key, are supported)"
    )]
    UnsupportedTokenType {
        /// The token client name.
        client: String,
        /// The token endpoint (without user info).
        endpoint: String,
        /// The type the server sent (capped).
        token_type: String,
    },

    /// The request could not be sent or the response could not be read (connection refused, reset,
    /// TLS failure, ...).
    #[error("token request of client `{client}` to {endpoint} failed: {kind}")]
    Transport {
        /// The token client name.
        client: String,
        /// The token endpoint (without user info).
        endpoint: String,
        /// A short description of the failure (`connection failed`, `reading the response failed`, ...).
        kind: &'static str,
        /// The underlying error (URL stripped).
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// The token endpoint did not answer within the configured request timeout.
    #[error("token request of client `{client}` to {endpoint} timed out after {timeout:?}")]
    Timeout {
        /// The token client name.
        client: String,
        /// The token endpoint (without user info).
        endpoint: String,
        /// The timeout that elapsed.
        timeout: Duration,
    },

    /// The token endpoint answered with a success status but a body that is not a usable token
    /// response (not JSON, not an object, a field of the wrong type, ...).
    #[error(
        "token endpoint {endpoint} sent client `{client}` an invalid response (HTTP {status}): {reason}"
    )]
    InvalidResponse {
        /// The token client name.
        client: String,
        /// The token endpoint (without user info).
        endpoint: String,
        /// The HTTP status of the response.
        status: StatusCode,
        /// What is wrong with it (never contains body content).
        reason: String,
    },

    /// The response body exceeded the configured size limit.
    #[error(
        "token endpoint {endpoint} sent client `{client}` a response larger than {limit} bytes"
    )]
    BodyTooLarge {
        /// The token client name.
        client: String,
        /// The token endpoint (without user info).
        endpoint: String,
        /// The limit, in bytes.
        limit: usize,
    },

    /// The token response is JSON but has no (or an empty) `access_token`.
    #[error("token endpoint {endpoint} sent client `{client}` a response without an access_token")]
    MissingAccessToken {
        /// The token client name.
        client: String,
        /// The token endpoint (without user info).
        endpoint: String,
    },

    /// A per-request extra parameter uses a name the token request sets itself.
    #[error(
        "client `{client}`: request parameter `{parameter}` is reserved and cannot be set as an extra parameter"
    )]
    ReservedParameter {
        /// The token client name.
        client: String,
        /// The offending parameter name.
        parameter: String,
    },

    /// The cache backend failed while deleting a token. (A failing cache *read* or *write* is logged
    /// and treated as a miss; it never fails a token request.)
    #[error("token cache failed while deleting the token of client `{client}`")]
    Cache {
        /// The token client name.
        client: String,
        /// The cache backend's error.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// The request's client authentication could not be produced: the
    /// [`ClientAssertionProvider`](super::ClientAssertionProvider) failed, or the client's key or
    /// certificate could no longer be loaded when the service was built.
    #[error("could not authenticate the token request of client `{client}` to {endpoint}")]
    ClientAuthentication {
        /// The token client name.
        client: String,
        /// The token endpoint (without user info).
        endpoint: String,
        /// Why.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// No DPoP proof could be made for the request (the key could not be generated or loaded when
    /// the service was built, or signing failed).
    #[error("could not make a DPoP proof for client `{client}`")]
    DpopProof {
        /// The token client name.
        client: String,
        /// Why.
        #[source]
        source: Arc<DpopError>,
    },

    /// The token endpoint asked for a DPoP nonce (`use_dpop_nonce`), and refused the request resent
    /// with the nonce it gave.
    #[error(
        "token endpoint {endpoint} refused the DPoP proof of client `{client}` again after a nonce retry"
    )]
    DpopNonceRejected {
        /// The token client name.
        client: String,
        /// The token endpoint (without user info).
        endpoint: String,
    },

    /// The token endpoint of a client configured with an
    /// [`authority`](super::TokenClientOptions::authority) could not be discovered.
    #[error("could not discover the token endpoint of client `{client}` from issuer {authority}")]
    Discovery {
        /// The token client name.
        client: String,
        /// The configured authority (without user info).
        authority: String,
        /// Why.
        #[source]
        source: Arc<DiscoveryError>,
    },

    /// The shared token request ended without a result (its task panicked or the runtime is
    /// shutting down).
    #[error("the token request of client `{client}` to {endpoint} was aborted before it completed")]
    Aborted {
        /// The token client name.
        client: String,
        /// The token endpoint (without user info).
        endpoint: String,
    },
}

impl TokenError {
    /// The token client this error concerns (for [`TokenError::UnknownClient`], the name asked for).
    pub fn client(&self) -> &str {
        match self {
            TokenError::UnknownClient { name, .. } => name,
            TokenError::Endpoint { client, .. }
            | TokenError::Transport { client, .. }
            | TokenError::Timeout { client, .. }
            | TokenError::InvalidResponse { client, .. }
            | TokenError::BodyTooLarge { client, .. }
            | TokenError::MissingAccessToken { client, .. }
            | TokenError::ReservedParameter { client, .. }
            | TokenError::Cache { client, .. }
            | TokenError::Unavailable { client, .. }
            | TokenError::UnsupportedTokenType { client, .. }
            | TokenError::ClientAuthentication { client, .. }
            | TokenError::DpopProof { client, .. }
            | TokenError::DpopNonceRejected { client, .. }
            | TokenError::Discovery { client, .. }
            | TokenError::Aborted { client, .. } => client,
        }
    }

    /// The token endpoint this error concerns, when it concerns a request (for
    /// [`TokenError::Discovery`], the authority).
    pub fn endpoint(&self) -> Option<&str> {
        match self {
            TokenError::Endpoint { endpoint, .. }
            | TokenError::Transport { endpoint, .. }
            | TokenError::Timeout { endpoint, .. }
            | TokenError::InvalidResponse { endpoint, .. }
            | TokenError::BodyTooLarge { endpoint, .. }
            | TokenError::MissingAccessToken { endpoint, .. }
            | TokenError::Unavailable { endpoint, .. }
            | TokenError::UnsupportedTokenType { endpoint, .. }
            | TokenError::ClientAuthentication { endpoint, .. }
            | TokenError::DpopNonceRejected { endpoint, .. }
            | TokenError::Aborted { endpoint, .. } => Some(endpoint),
            TokenError::Discovery { authority, .. } => Some(authority),
            TokenError::UnknownClient { .. }
            | TokenError::DpopProof { .. }
            | TokenError::ReservedParameter { .. }
            | TokenError::Cache { .. } => None,
        }
    }

    /// The HTTP status of the token endpoint's response, when there was one (for
    /// [`TokenError::Unavailable`], the last attempt's).
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            TokenError::Endpoint { status, .. } | TokenError::InvalidResponse { status, .. } => {
                Some(*status)
            }
            TokenError::Unavailable { source, .. } => source.status(),
            _ => None,
        }
    }

    /// The OAuth `error` code the token endpoint sent, when it sent one.
    pub fn oauth_error(&self) -> Option<&str> {
        match self {
            TokenError::Endpoint { error, .. } => error.as_deref(),
            TokenError::Unavailable { source, .. } => source.oauth_error(),
            _ => None,
        }
    }

    /// Whether a later attempt may succeed without any change on our side: connection failures,
    /// timeouts, 5xx and 429. OAuth errors such as `invalid_client` or `invalid_scope`, other 4xx
    /// and invalid response bodies are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            TokenError::Transport { .. } | TokenError::Timeout { .. } => true,
            TokenError::Discovery { source, .. } => source.is_transient(),
            TokenError::Endpoint { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            _ => false,
        }
    }

    /// The delay the token endpoint asked for with `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            TokenError::Endpoint { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub(crate) fn cache(client: &str, source: BoxError) -> Self {
        TokenError::Cache {
            client: client.to_owned(),
            source: Arc::from(source),
        }
    }
}

/// The last failure behind [`TokenError::Unavailable`]: a [`TokenError`] (derefs to it), so that
/// `error.source()` downcasts to `TokenError`.
#[derive(Debug, Clone)]
pub struct LastFailure(Box<TokenError>);

impl LastFailure {
    pub(crate) fn new(error: TokenError) -> Self {
        Self(Box::new(error))
    }

    /// The failure.
    pub fn into_inner(self) -> TokenError {
        *self.0
    }
}

impl std::ops::Deref for LastFailure {
    type Target = TokenError;

    fn deref(&self) -> &TokenError {
        &self.0
    }
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        "none".to_owned()
    } else {
        known
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn oauth_suffix(error: Option<&str>, description: Option<&str>) -> String {
    match (error, description) {
        (Some(e), Some(d)) => format!(": {e} ({d})"),
        (Some(e), None) => format!(": {e}"),
        (None, Some(d)) => format!(" ({d})"),
        (None, None) => String::new(),
    }
}

/// Keeps at most `max` characters of `s`, without control characters, marking a cut with `…`.
pub(crate) fn cap_chars(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .filter(|c| !c.is_control())
        .take(max + 1)
        .collect();
    if out.chars().count() > max {
        let cut = out.char_indices().nth(max).map_or(out.len(), |(i, _)| i);
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// A token client registration is invalid. Each variant names the client.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum OptionsError {
    /// A token client was registered with an empty name.
    #[error("a token client was registered with an empty name")]
    EmptyClientName,

    /// Two token clients share a name.
    #[error(
        "token client `{client}` is registered more than once: every client needs a unique name"
    )]
    DuplicateClient {
        /// The repeated name.
        client: String,
    },

    /// `client_id` is empty.
    #[error("token client `{client}` has an empty client_id")]
    EmptyClientId {
        /// The token client name.
        client: String,
    },

    /// Neither `address` nor `authority` was set.
    #[error("token client `{client}` has neither a token endpoint address nor an authority")]
    MissingAddress {
        /// The token client name.
        client: String,
    },

    /// Both `address` and `authority` were set: which one to use would be a guess.
    #[error(
        "token client `{client}` sets both a token endpoint address and an authority: set only one"
    )]
    AddressAndAuthority {
        /// The token client name.
        client: String,
    },

    /// `address` is not a usable HTTP(S) URL.
    #[error("token client `{client}` has an invalid token endpoint address `{address}`: {reason}")]
    InvalidAddress {
        /// The token client name.
        client: String,
        /// The address (without user info).
        address: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// `address` is plain `http://` to a host that is not loopback, and `allow_insecure_http` is off:
    /// the client secret would travel in clear text.
    #[error(
        "token client `{client}` uses plain http to a non-loopback host ({address}); use https, or set \
         allow_insecure_http = true if you really mean it"
    )]
    InsecureAddress {
        /// The token client name.
        client: String,
        /// The address (without user info).
        address: String,
    },

    /// An extra parameter collides with one the token request sets itself.
    #[error(
        "token client `{client}`: extra parameter `{parameter}` is reserved (set by the token request itself)"
    )]
    ReservedParameter {
        /// The token client name.
        client: String,
        /// The offending parameter name.
        parameter: String,
    },

    /// `client_secret_jwt` needs a secret at least as long as the HMAC's hash (RFC 7518 section
    /// 3.2).
    #[error(
        "token client `{client}` uses client_secret_jwt with {algorithm}, which needs a client_secret \
         of at least {minimum} bytes"
    )]
    ClientSecretTooShort {
        /// The token client name.
        client: String,
        /// The HMAC algorithm.
        algorithm: HmacAlgorithm,
        /// The shortest secret allowed, in bytes.
        minimum: usize,
    },

    /// The `private_key_jwt` key cannot be used (unreadable, unparseable, or its algorithm does not
    /// fit it).
    #[error("token client `{client}`: the private_key_jwt key cannot be used")]
    ClientKey {
        /// The token client name.
        client: String,
        /// What is wrong with the key.
        #[source]
        source: Arc<KeyError>,
    },

    /// The DPoP key cannot be used (unreadable, unparseable, or its algorithm does not fit it).
    #[error("token client `{client}`: the DPoP key cannot be used")]
    DpopKey {
        /// The token client name.
        client: String,
        /// What is wrong with the key.
        #[source]
        source: Arc<KeyError>,
    },

    /// The mTLS client certificate cannot be used (unreadable, unparseable, or the key does not
    /// belong to the certificate).
    #[error("token client `{client}`: the TLS client certificate cannot be used")]
    ClientCertificate {
        /// The token client name.
        client: String,
        /// What is wrong with the certificate or key.
        #[source]
        source: Arc<CertificateError>,
    },

    /// The default HTTP client could not be built.
    #[error("could not build the HTTP client for token requests")]
    HttpClient {
        /// The underlying error.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// A run-time change names a token client that is not registered.
    #[error("token client `{client}` is not registered")]
    UnknownClient {
        /// The token client name.
        client: String,
    },

    /// The process's shared token runtime could not be started.
    #[error("could not start the runtime for token requests")]
    Runtime {
        /// The underlying error.
        #[source]
        source: Arc<std::io::Error>,
    },

    /// More than one problem; each is listed.
    #[error("{} problems with the token clients: {}", .0.len(), join_problems(.0))]
    Multiple(Vec<OptionsError>),
}

fn join_problems(problems: &[OptionsError]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl OptionsError {
    /// Each individual problem (one element unless this is [`OptionsError::Multiple`]).
    pub fn problems(&self) -> Vec<&OptionsError> {
        match self {
            OptionsError::Multiple(all) => all.iter().flat_map(OptionsError::problems).collect(),
            other => vec![other],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_downcasts_its_source_to_the_last_failure() {
        let last = TokenError::Timeout {
            client: "c".into(),
            endpoint: "e".into(),
            timeout: Duration::from_secs(1),
        };
        let error = TokenError::Unavailable {
            client: "c".into(),
            endpoint: "e".into(),
            attempts: 3,
            source: LastFailure::new(last),
        };
        let source = std::error::Error::source(&error).expect("a source");
        assert!(matches!(
            source.downcast_ref::<TokenError>(),
            Some(TokenError::Timeout { .. })
        ));
        assert!(!error.to_string().contains("timed out"), "{error}");
    }

    #[test]
    fn cap_chars_cuts_on_char_boundary() {
        assert_eq!(cap_chars("héllo", 3), "hél…");
        assert_eq!(cap_chars("abc", 3), "abc");
        assert_eq!(cap_chars("a\nb", 3), "ab");
    }
}
