//! Issuer discovery: the token endpoint of a client configured with an
//! [`authority`](super::TokenClientOptions::authority), read from the issuer's metadata (OpenID
//! Connect Discovery 1.0, then RFC 8414).
//!
//! The document is fetched on first use (or when the service is built, with
//! [`DiscoveryOptions::eager`]), cached for [`DiscoveryOptions::cache_lifetime`], and fetched again
//! after that. While a re-fetch fails, the last good endpoint keeps being used and the next re-fetch
//! waits a back-off (5 s, doubling, at most 5 minutes). Without any document, a failure fails the
//! token request as a transient error, so the token request's retries and failure cool-down apply.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use http::header::ACCEPT;
use serde::Deserialize;
use url::Url;

use super::clock::{Clock, Stamp};
use super::error::cap_chars;
use super::options::{display_endpoint, is_loopback};

/// Default [`DiscoveryOptions::cache_lifetime`]: one hour.
pub const DEFAULT_DISCOVERY_CACHE_LIFETIME: Duration = Duration::from_secs(3600);
/// Largest discovery document accepted, in bytes.
const MAX_DOCUMENT_SIZE: usize = 512 * 1024;
/// The back-off after the first failed re-fetch; it doubles with each further failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Longest `issuer` of a foreign document kept in an error, in characters.
const MAX_ISSUER_CHARS: usize = 256;

/// How the discovery documents of clients configured with an `authority` are fetched and cached.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiscoveryOptions {
    /// How long a fetched document is used before it is fetched again (default 1 h).
    pub cache_lifetime: Duration,
    /// Fetch every document when the service is built (and when a client is added at run time)
    /// instead of on first use (default off). A failure is logged; the first token request fetches
    /// again.
    pub eager: bool,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        Self {
            cache_lifetime: DEFAULT_DISCOVERY_CACHE_LIFETIME,
            eager: false,
        }
    }
}

/// Why the token endpoint could not be discovered from the issuer's metadata.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The request could not be sent or the response not read.
    #[error("fetching the discovery document {url} failed: {kind}")]
    Transport {
        /// The document URL.
        url: String,
        /// A short description (`connection failed`, ...).
        kind: &'static str,
        /// The underlying error (URL stripped).
        #[source]
        source: reqwest::Error,
    },
    /// The issuer answered with an error status (other than a 4xx, which means "not here").
    #[error("the discovery document {url} answered HTTP {status}")]
    Status {
        /// The document URL.
        url: String,
        /// The status.
        status: StatusCode,
    },
    /// Neither well-known path has a document.
    #[error("the issuer has no metadata document (tried {})", .tried.join(" and "))]
    NotFound {
        /// The URLs tried.
        tried: Vec<String>,
    },
    /// The document is not a usable metadata document.
    #[error("{url} is not a valid metadata document: {reason}")]
    InvalidDocument {
        /// The document URL.
        url: String,
        /// What is wrong (never contains the body).
        reason: &'static str,
    },
    /// The document's `issuer` is not the configured authority (RFC 8414 section 3.3: the
    /// document must not be used).
    #[error(
        "{url} is the document of issuer `{found}`, not of the configured authority `{expected}`"
    )]
    IssuerMismatch {
        /// The document URL.
        url: String,
        /// The configured authority.
        expected: String,
        /// The document's `issuer` (capped).
        found: String,
    },
    /// The discovered token endpoint is plain `http://` to a non-loopback host, and the client
    /// does not set `allow_insecure_http`.
    #[error(
        "the discovered token endpoint {token_endpoint} uses plain http to a non-loopback host; use \
         https, or set allow_insecure_http = true on the client if you really mean it"
    )]
    InsecureTokenEndpoint {
        /// The discovered endpoint (without user info).
        token_endpoint: String,
    },
}

impl DiscoveryError {
    /// Whether fetching again later may succeed: transport failures, 5xx and 429.
    pub fn is_transient(&self) -> bool {
        match self {
            DiscoveryError::Transport { .. } => true,
            DiscoveryError::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            _ => false,
        }
    }
}

/// The two well-known URLs of an issuer, in the order they are tried: OpenID Connect Discovery
/// (`{issuer}/.well-known/openid-configuration`) and RFC 8414 (the well-known segment inserted
/// between host and path: `https://h/.well-known/oauth-authorization-server/tenant`).
pub fn metadata_urls(authority: &Url) -> [Url; 2] {
    let path = authority.path().trim_end_matches('/');
    let mut openid = authority.clone();
    openid.set_query(None);
    openid.set_fragment(None);
    let mut oauth = openid.clone();
    openid.set_path(&format!("{path}/.well-known/openid-configuration"));
    oauth.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    [openid, oauth]
}

/// The fields of a metadata document this crate uses (RFC 8414 section 2, RFC 8705 section 5,
/// RFC 9449 section 5.1).
#[derive(Deserialize)]
struct Document {
    issuer: Option<serde_json::Value>,
    token_endpoint: Option<serde_json::Value>,
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
    dpop_signing_alg_values_supported: Option<Vec<String>>,
    mtls_endpoint_aliases: Option<MtlsAliases>,
}

#[derive(Deserialize)]
struct MtlsAliases {
    token_endpoint: Option<String>,
}

/// What a client uses of its issuer's document.
#[derive(Debug)]
pub(crate) struct Discovered {
    /// Where token requests go (the mTLS alias for an mTLS client, when the issuer has one).
    pub(crate) token_endpoint: Url,
    /// The issuer as the document writes it: the default audience of client assertions.
    pub(crate) issuer: String,
}

struct Cached {
    discovered: Arc<Discovered>,
    fetched: Stamp,
}

#[derive(Default)]
struct State {
    document: Option<Cached>,
    /// Failed re-fetches in a row (with a document cached).
    failures: u32,
    /// No re-fetch before this, after a failed one.
    retry_at: Option<Stamp>,
    /// A document was accepted once (its warnings logged).
    seen: bool,
}

/// What the checks of a document need to know about the client.
pub(crate) struct ClientTraits {
    /// Its `token_endpoint_auth_method`.
    pub(crate) method: &'static str,
    /// It authenticates with a TLS client certificate.
    pub(crate) mtls: bool,
    /// Its DPoP key's algorithm (`None`: no DPoP).
    pub(crate) dpop_algorithm: Option<&'static str>,
    pub(crate) allow_insecure_http: bool,
}

/// One client's discovery: where, how it authenticates (for the checks), and the cached document.
pub(crate) struct Discovery {
    client: Arc<str>,
    authority: Url,
    traits: ClientTraits,
    options: DiscoveryOptions,
    clock: Arc<dyn Clock>,
    /// An async lock: one fetch at a time; callers arriving meanwhile use its result.
    state: tokio::sync::Mutex<State>,
}

impl Discovery {
    pub(crate) fn new(
        client: Arc<str>,
        authority: Url,
        traits: ClientTraits,
        options: DiscoveryOptions,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            client,
            authority,
            traits,
            options,
            clock,
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    /// Whether the document is fetched when the client is set up.
    pub(crate) fn eager(&self) -> bool {
        self.options.eager
    }

    /// The token endpoint and issuer: cached, or fetched now.
    pub(crate) async fn discovered(
        &self,
        http: &reqwest::Client,
    ) -> Result<Arc<Discovered>, DiscoveryError> {
        let mut state = self.state.lock().await;
        let now = self.clock.now();
        if let Some(cached) = &state.document {
            let fresh = now.saturating_duration_since(cached.fetched) < self.options.cache_lifetime;
            let backing_off = state.retry_at.is_some_and(|at| now < at);
            if fresh || backing_off {
                return Ok(Arc::clone(&cached.discovered));
            }
        }
        let first = !state.seen;
        match self.fetch(http, first).await {
            Ok(discovered) => {
                let discovered = Arc::new(discovered);
                state.seen = true;
                state.failures = 0;
                state.retry_at = None;
                state.document = Some(Cached {
                    discovered: Arc::clone(&discovered),
                    fetched: self.clock.now(),
                });
                Ok(discovered)
            }
            Err(error) => {
                let Some(cached) = &state.document else {
                    return Err(error);
                };
                let discovered = Arc::clone(&cached.discovered);
                state.failures += 1;
                let backoff = FIRST_BACKOFF
                    .saturating_mul(1 << (state.failures - 1).min(10))
                    .min(MAX_BACKOFF);
                state.retry_at = Some(self.clock.now().saturating_add(backoff));
                tracing::warn!(
                    client = %self.client,
                    authority = %display_endpoint(&self.authority),
                    error = &error as &dyn std::error::Error,
                    retry_in_secs = backoff.as_secs(),
                    "re-fetching the discovery document failed; using the last known token endpoint"
                );
                Ok(discovered)
            }
        }
    }

    /// Fetches the document (OpenID path first, RFC 8414 path when the first is not there) and
    /// checks it. `first`: log what the client should know about the issuer's document.
    async fn fetch(
        &self,
        http: &reqwest::Client,
        first: bool,
    ) -> Result<Discovered, DiscoveryError> {
        let mut tried = Vec::with_capacity(2);
        for url in metadata_urls(&self.authority) {
            let shown = display_endpoint(&url);
            tracing::debug!(client = %self.client, url = %shown, "fetching the discovery document");
            let response = http
                .get(url)
                .header(ACCEPT, "application/json")
                .send()
                .await
                .map_err(|e| transport(&shown, "sending the request failed", e))?;
            let status = response.status();
            if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
                tried.push(shown);
                continue;
            }
            if !status.is_success() {
                return Err(DiscoveryError::Status { url: shown, status });
            }
            let body = read_limited(response, &shown).await?;
            return self.check(&shown, &body, first);
        }
        Err(DiscoveryError::NotFound { tried })
    }

    fn check(&self, url: &str, body: &[u8], first: bool) -> Result<Discovered, DiscoveryError> {
        let invalid = |reason| DiscoveryError::InvalidDocument {
            url: url.to_owned(),
            reason,
        };
        let document: Document = serde_json::from_slice(body)
            .map_err(|_| invalid("the body is not a JSON object with the expected fields"))?;
        let Some(serde_json::Value::String(issuer)) = document.issuer else {
            return Err(invalid("`issuer` is missing or not a string"));
        };
        if !same_issuer(&issuer, &self.authority) {
            return Err(DiscoveryError::IssuerMismatch {
                url: url.to_owned(),
                expected: issuer_identifier(&self.authority),
                found: cap_chars(&issuer, MAX_ISSUER_CHARS),
            });
        }
        let Some(serde_json::Value::String(token_endpoint)) = document.token_endpoint else {
            return Err(invalid("`token_endpoint` is missing or not a string"));
        };
        let alias = document
            .mtls_endpoint_aliases
            .and_then(|aliases| aliases.token_endpoint)
            .filter(|_| self.traits.mtls);
        let chosen = alias.as_deref().unwrap_or(&token_endpoint);
        let token_endpoint: Url = chosen
            .parse()
            .map_err(|_| invalid("the token endpoint is not a URL"))?;
        let secure = match token_endpoint.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(invalid("the token endpoint is not an http(s) URL")),
        };
        let loopback = token_endpoint.host().is_some_and(|h| is_loopback(&h));
        if !secure && !loopback && !self.traits.allow_insecure_http {
            return Err(DiscoveryError::InsecureTokenEndpoint {
                token_endpoint: display_endpoint(&token_endpoint),
            });
        }
        if first {
            self.warn_unsupported(
                document.token_endpoint_auth_methods_supported.as_deref(),
                document.dpop_signing_alg_values_supported.as_deref(),
            );
            tracing::info!(
                client = %self.client,
                authority = %display_endpoint(&self.authority),
                token_endpoint = %display_endpoint(&token_endpoint),
                "discovered the token endpoint"
            );
        }
        Ok(Discovered {
            token_endpoint,
            issuer,
        })
    }

    /// Warns when the issuer does not list what the client is configured to use (the request may
    /// still work: the lists are advisory, and some servers leave methods out).
    fn warn_unsupported(&self, methods: Option<&[String]>, dpop: Option<&[String]>) {
        if let Some(methods) = methods.filter(|m| !m.iter().any(|m| m == self.traits.method)) {
            tracing::warn!(
                client = %self.client,
                authority = %display_endpoint(&self.authority),
                auth_method = self.traits.method,
                supported = %methods.join(" "),
                "the issuer does not list the client's authentication method in \
                 token_endpoint_auth_methods_supported"
            );
        }
        if let (Some(algorithm), Some(supported)) = (self.traits.dpop_algorithm, dpop) {
            if !supported.iter().any(|a| a == algorithm) {
                tracing::warn!(
                    client = %self.client,
                    authority = %display_endpoint(&self.authority),
                    dpop_algorithm = algorithm,
                    supported = %supported.join(" "),
                    "the issuer does not list the client's DPoP key algorithm in \
                     dpop_signing_alg_values_supported"
                );
            }
        }
    }
}

/// The authority as an issuer identifier: without the `/` that URL parsing adds to an empty path
/// (`https://idp.example.com`, as issuers write themselves).
pub(crate) fn issuer_identifier(authority: &Url) -> String {
    let shown = display_endpoint(authority);
    if authority.path() == "/" {
        shown.trim_end_matches('/').to_owned()
    } else {
        shown
    }
}

/// `issuer` equals the authority, up to a trailing slash (`https://idp` parses as `https://idp/`).
fn same_issuer(issuer: &str, authority: &Url) -> bool {
    let Ok(issuer) = Url::parse(issuer) else {
        return false;
    };
    issuer.as_str().trim_end_matches('/') == authority.as_str().trim_end_matches('/')
}

fn transport(url: &str, context: &'static str, error: reqwest::Error) -> DiscoveryError {
    let kind = if error.is_connect() {
        "connection failed"
    } else if error.is_timeout() {
        "timed out"
    } else {
        context
    };
    DiscoveryError::Transport {
        url: url.to_owned(),
        kind,
        source: error.without_url(),
    }
}

async fn read_limited(
    mut response: reqwest::Response,
    url: &str,
) -> Result<Vec<u8>, DiscoveryError> {
    let too_large = || DiscoveryError::InvalidDocument {
        url: url.to_owned(),
        reason: "larger than 512 KiB",
    };
    if response
        .content_length()
        .is_some_and(|len| len > MAX_DOCUMENT_SIZE as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport(url, "reading the response failed", e))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_SIZE {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_urls_follow_both_specifications() {
        let [openid, oauth] = metadata_urls(&"https://idp.example.com".parse().unwrap());
        assert_eq!(
            openid.as_str(),
            "https://idp.example.com/.well-known/openid-configuration"
        );
        assert_eq!(
            oauth.as_str(),
            "https://idp.example.com/.well-known/oauth-authorization-server"
        );
        let [openid, oauth] = metadata_urls(&"https://idp.example.com/tenant/v2/".parse().unwrap());
        assert_eq!(
            openid.as_str(),
            "https://idp.example.com/tenant/v2/.well-known/openid-configuration"
        );
        assert_eq!(
            oauth.as_str(),
            "https://idp.example.com/.well-known/oauth-authorization-server/tenant/v2"
        );
    }

    #[test]
    fn issuers_compare_up_to_a_trailing_slash() {
        let authority: Url = "https://idp.example.com".parse().unwrap();
        assert!(same_issuer("https://idp.example.com", &authority));
        assert!(same_issuer("https://idp.example.com/", &authority));
        assert!(!same_issuer("https://idp.example.com/other", &authority));
        assert!(!same_issuer("https://evil.example.com", &authority));
        assert_eq!(issuer_identifier(&authority), "https://idp.example.com");
    }
}
