//! Options: the token clients and how tokens are cached and requested.
//!
//! Mirrors the documented .NET registration:
//!
//! ```
//! use token_mgmt::tokens::{AccessTokenManagementOptions, TokenClientOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut options = AccessTokenManagementOptions::default();
//! options.client.clients.add("identityserver", TokenClientOptions {
//!     address: "https://demo.identityserver.io/connect/token".parse()?,
//!     client_id: "m2m.short".into(),
//!     client_secret: "secret".into(),
//!     ..Default::default()
//! });
//! options.validate()?;
//! # Ok(()) }
//! ```

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use url::{Host, Url};

use super::auth::ClientAuthentication;
use super::cache::DEFAULT_MAX_CACHED_TOKENS;
use super::discovery::DiscoveryOptions;
use super::dpop::DpopKey;
use super::error::OptionsError;
use super::retry::RetryPolicy;

/// Default [`AccessTokenManagementOptions::cache_lifetime_buffer`]: 60 s.
pub const DEFAULT_CACHE_LIFETIME_BUFFER: Duration = Duration::from_secs(60);
/// Default [`AccessTokenManagementOptions::request_timeout`]: 10 s per attempt.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`AccessTokenManagementOptions::expiry_safety_margin`]: 5 s.
pub const DEFAULT_EXPIRY_SAFETY_MARGIN: Duration = Duration::from_secs(5);
/// Default [`AccessTokenManagementOptions::failure_cooldown`]: 1 s.
pub const DEFAULT_FAILURE_COOLDOWN: Duration = Duration::from_secs(1);
/// Default [`AccessTokenManagementOptions::min_forced_renewal_interval`]: 5 s.
pub const DEFAULT_MIN_FORCED_RENEWAL_INTERVAL: Duration = Duration::from_secs(5);
/// Default [`AccessTokenManagementOptions::max_response_body_size`]: 1 MiB.
pub const DEFAULT_MAX_RESPONSE_BODY_SIZE: usize = 1024 * 1024;
/// Default [`AccessTokenManagementOptions::cache_key_prefix`].
pub const DEFAULT_CACHE_KEY_PREFIX: &str = "token-mgmt::client-token::";

/// Form fields the token request sets itself; an extra parameter may not use these names.
pub const RESERVED_PARAMETERS: &[&str] = &[
    "grant_type",
    "client_id",
    "client_secret",
    "scope",
    "resource",
    "client_assertion",
    "client_assertion_type",
];

/// The placeholder address of [`TokenClientOptions::default`]; validation reports it as missing.
const UNSET_ADDRESS: &str = "about:blank";

/// Everything the token management service needs: the token clients and the cache and request policy.
#[derive(Debug, Clone)]
#[doc(alias = "ClientCredentialsTokenManagementOptions")]
pub struct AccessTokenManagementOptions {
    /// Client credentials token clients (`options.client.clients.add(name, ...)`).
    pub client: ClientOptions,
    /// How long before its expiry a cached token is renewed (default 60 s). When a token's lifetime is
    /// short, at most half of the lifetime is used as buffer, so a token with `expires_in = 30` is
    /// still cached for 15 s instead of not at all.
    pub cache_lifetime_buffer: Duration,
    /// Prefix of every cache key (useful with a shared remote cache).
    pub cache_key_prefix: String,
    /// Timeout of one token request attempt, from sending it to having read the whole body
    /// (default 10 s).
    pub request_timeout: Duration,
    /// Largest token response body accepted, in bytes (default 1 MiB).
    pub max_response_body_size: usize,
    /// A token is never served later than its expiry minus this margin (default 5 s), even while
    /// renewals fail. For a short-lived token the margin is at most half the time between its refresh
    /// time and its expiry, so there is always a window in which it is renewed while still served.
    pub expiry_safety_margin: Duration,
    /// How transient token request failures are retried (default: 3 attempts, full-jitter back-off).
    pub retry: RetryPolicy,
    /// After a failed token request, callers that have no valid token get that failure for this long
    /// (plus up to a quarter of it, random) without a new request (default 1 s), so an outage does not
    /// turn every caller into a request.
    pub failure_cooldown: Duration,
    /// Renew tokens that callers use in the background at their refresh time, so no caller waits for
    /// a renewal (default on). Off, the first caller after the refresh time starts the renewal (and
    /// is still served the valid token).
    pub background_refresh: bool,
    /// A key nobody asked for within this window is not renewed in the background and its token is
    /// dropped (default `None`: one token lifetime).
    pub idle_timeout: Option<Duration>,
    /// Most tokens the default in-memory cache holds (default 10,000); the least recently used are
    /// evicted beyond it.
    pub max_cached_tokens: usize,
    /// Forced renewals (after a 401) of one key are at most one per this interval (default 5 s); a
    /// forced renewal within it gets the token of the previous one.
    pub min_forced_renewal_interval: Duration,
    /// When an API's 401 makes the HTTP handler renew the token and resend (default:
    /// [`UnauthorizedRenewal::InvalidToken`]).
    pub renew_on_unauthorized: UnauthorizedRenewal,
    /// How the discovery documents of clients configured with an
    /// [`authority`](TokenClientOptions::authority) are fetched and cached.
    pub discovery: DiscoveryOptions,
}

/// Which `401 Unauthorized` responses make the [`ClientAccessTokenHandler`](super::ClientAccessTokenHandler)
/// renew the token and resend the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum UnauthorizedRenewal {
    /// When `WWW-Authenticate` carries `error="invalid_token"` or no `error` parameter (a renewal
    /// cannot fix `insufficient_scope` or a wrong audience reported as such).
    #[default]
    InvalidToken,
    /// On every 401.
    Always,
    /// Never: the 401 is returned as is.
    Never,
}

impl Default for AccessTokenManagementOptions {
    fn default() -> Self {
        Self {
            client: ClientOptions::default(),
            cache_lifetime_buffer: DEFAULT_CACHE_LIFETIME_BUFFER,
            cache_key_prefix: DEFAULT_CACHE_KEY_PREFIX.to_owned(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_response_body_size: DEFAULT_MAX_RESPONSE_BODY_SIZE,
            expiry_safety_margin: DEFAULT_EXPIRY_SAFETY_MARGIN,
            retry: RetryPolicy::default(),
            failure_cooldown: DEFAULT_FAILURE_COOLDOWN,
            background_refresh: true,
            idle_timeout: None,
            max_cached_tokens: DEFAULT_MAX_CACHED_TOKENS,
            min_forced_renewal_interval: DEFAULT_MIN_FORCED_RENEWAL_INTERVAL,
            renew_on_unauthorized: UnauthorizedRenewal::default(),
            discovery: DiscoveryOptions::default(),
        }
    }
}

impl AccessTokenManagementOptions {
    /// Checks every token client.
    ///
    /// # Errors
    ///
    /// The one problem found, or [`OptionsError::Multiple`] listing all of them.
    pub fn validate(&self) -> Result<(), OptionsError> {
        let mut problems = self.client.clients.problems();
        match problems.len() {
            0 => Ok(()),
            1 => Err(problems.remove(0)),
            _ => Err(OptionsError::Multiple(problems)),
        }
    }
}

/// Options of the client credentials token clients.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// The registered token clients, by name.
    pub clients: TokenClients,
}

/// The registered token clients, in registration order. Names must be unique; a duplicate is kept
/// here and reported by validation (so registration code stays a plain statement).
#[derive(Debug, Clone, Default)]
pub struct TokenClients {
    entries: Vec<(String, TokenClientOptions)>,
}

impl TokenClients {
    /// Registers a token client under `name`.
    pub fn add(&mut self, name: impl Into<String>, options: TokenClientOptions) -> &mut Self {
        self.entries.push((name.into(), options));
        self
    }

    /// The options of the client registered under `name` (the first, if registered twice).
    pub fn get(&self, name: &str) -> Option<&TokenClientOptions> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, o)| o)
    }

    /// Mutable access to the options of the client registered under `name`.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut TokenClientOptions> {
        self.entries
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, o)| o)
    }

    /// Whether a client is registered under `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The registered names, in registration order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// The registered clients, in registration order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &TokenClientOptions)> {
        self.entries.iter().map(|(n, o)| (n.as_str(), o))
    }

    /// How many clients are registered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no client is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every problem with the registered clients.
    pub fn problems(&self) -> Vec<OptionsError> {
        let mut problems = Vec::new();
        let mut seen = HashSet::with_capacity(self.entries.len());
        let mut duplicates = HashSet::new();
        for (name, options) in &self.entries {
            if name.is_empty() {
                problems.push(OptionsError::EmptyClientName);
            } else if !seen.insert(name.as_str()) {
                if duplicates.insert(name.as_str()) {
                    problems.push(OptionsError::DuplicateClient {
                        client: name.clone(),
                    });
                }
                continue;
            }
            problems.extend(options.problems(name));
        }
        problems
    }

    pub(crate) fn entries(&self) -> &[(String, TokenClientOptions)] {
        &self.entries
    }
}

/// One client credentials token client: where to ask, as whom, for what.
///
/// `Debug` hides the secret, a password in `address` and the values of `parameters`.
#[derive(Clone)]
#[doc(alias("ClientCredentialsClient", "ClientCredentialsTokenRequest"))]
pub struct TokenClientOptions {
    /// The token endpoint. Must be `https://`, or `http://` to a loopback host, or any `http://` with
    /// [`TokenClientOptions::allow_insecure_http`]. Set this or [`authority`](Self::authority), not
    /// both.
    #[doc(alias("TokenEndpoint", "Address"))]
    pub address: Url,
    /// The issuer (`https://idp.example.com`, `https://login.example.com/tenant/v2.0`), instead of
    /// `address`: the token endpoint is read from the issuer's discovery document
    /// (`/.well-known/openid-configuration`, else RFC 8414's
    /// `/.well-known/oauth-authorization-server`), whose `issuer` must be this URL. The same https
    /// rule as `address` applies to it and to the discovered endpoint. It is also the default
    /// audience of `client_secret_jwt` and `private_key_jwt` assertions.
    #[doc(alias("Authority", "Issuer"))]
    pub authority: Option<Url>,
    /// The client id.
    pub client_id: String,
    /// The client secret (never printed). Used by `client_secret_basic` (the default),
    /// `client_secret_post` and `client_secret_jwt`.
    pub client_secret: ClientSecret,
    /// How the client authenticates at the token endpoint (default:
    /// [`ClientAuthentication::ClientSecretBasic`]).
    pub authentication: ClientAuthentication,
    /// Space-separated scopes to request (`None`: none, the token service's default).
    pub scope: Option<String>,
    /// Resource indicators (RFC 8707), one `resource` field each.
    pub resources: Vec<String>,
    /// Extra form fields sent with every token request of this client.
    pub parameters: Vec<(String, String)>,
    /// Allow a plain `http://` address to a non-loopback host (the secret travels in clear text).
    pub allow_insecure_http: bool,
    /// DPoP (RFC 9449): prove possession of this key on every token request and, when the server
    /// binds the token to it (`token_type: DPoP`), on every API request (`None`: Bearer tokens).
    pub dpop: Option<DpopKey>,
}

impl Default for TokenClientOptions {
    fn default() -> Self {
        Self {
            address: Url::parse(UNSET_ADDRESS).expect("static URL parses"),
            authority: None,
            client_id: String::new(),
            client_secret: ClientSecret::default(),
            authentication: ClientAuthentication::default(),
            scope: None,
            resources: Vec::new(),
            parameters: Vec::new(),
            allow_insecure_http: false,
            dpop: None,
        }
    }
}

impl fmt::Debug for TokenClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut address = self.address.clone();
        if address.password().is_some() {
            let _ = address.set_password(Some("<redacted>"));
        }
        let parameters: Vec<(&str, &str)> = self
            .parameters
            .iter()
            .map(|(name, _)| (name.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("TokenClientOptions")
            .field("address", &address.as_str())
            .field("authority", &self.authority.as_ref().map(display_endpoint))
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("authentication", &self.authentication)
            .field("scope", &self.scope)
            .field("resources", &self.resources)
            .field("parameters", &parameters)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("dpop", &self.dpop)
            .finish()
    }
}

impl TokenClientOptions {
    /// Every problem with this client's options; `name` is used in the messages.
    pub fn problems(&self, name: &str) -> Vec<OptionsError> {
        let mut problems = Vec::new();
        let client = || name.to_owned();
        if self.client_id.trim().is_empty() {
            problems.push(OptionsError::EmptyClientId { client: client() });
        }
        if let Some(problem) = self.address_problem(name) {
            problems.push(problem);
        }
        for (key, _) in &self.parameters {
            if is_reserved(key) {
                problems.push(OptionsError::ReservedParameter {
                    client: client(),
                    parameter: key.clone(),
                });
            }
        }
        problems.extend(self.authentication.problems(name, &self.client_secret));
        if let Some(Err(source)) = self.dpop.as_ref().map(DpopKey::check) {
            problems.push(OptionsError::DpopKey {
                client: client(),
                source: Arc::new(source),
            });
        }
        problems
    }

    /// Whether `address` was set (it holds a placeholder otherwise).
    pub(crate) fn has_address(&self) -> bool {
        self.address.as_str() != UNSET_ADDRESS
    }

    /// The authority of a client whose token endpoint is discovered.
    pub(crate) fn discovered_from(&self) -> Option<&Url> {
        self.authority.as_ref().filter(|_| !self.has_address())
    }

    /// Where the client's tokens come from, as configured: the token endpoint, or the authority of
    /// a discovered one. Identifies the client in cache keys, errors and logs.
    pub(crate) fn location(&self) -> &Url {
        self.discovered_from().unwrap_or(&self.address)
    }

    fn address_problem(&self, name: &str) -> Option<OptionsError> {
        let client = || name.to_owned();
        let address = match (&self.authority, self.has_address()) {
            (None, false) => return Some(OptionsError::MissingAddress { client: client() }),
            (Some(_), true) => {
                return Some(OptionsError::AddressAndAuthority { client: client() });
            }
            (Some(authority), false) => {
                if authority.query().is_some() {
                    return Some(OptionsError::InvalidAddress {
                        client: client(),
                        address: display_endpoint(authority),
                        reason: "an authority (issuer) cannot have a query",
                    });
                }
                authority
            }
            (None, true) => &self.address,
        };
        let invalid = |reason| OptionsError::InvalidAddress {
            client: name.to_owned(),
            address: display_endpoint(address),
            reason,
        };
        let secure = match address.scheme() {
            "https" => true,
            "http" => false,
            _ => return Some(invalid("the scheme must be http or https")),
        };
        let Some(host) = address.host() else {
            return Some(invalid("the address has no host"));
        };
        if address.fragment().is_some() {
            return Some(invalid("a token endpoint address cannot have a fragment"));
        }
        if !secure && !self.allow_insecure_http && !is_loopback(&host) {
            return Some(OptionsError::InsecureAddress {
                client: name.to_owned(),
                address: display_endpoint(address),
            });
        }
        None
    }
}

/// Whether `name` is a form field the token request sets itself.
pub fn is_reserved(name: &str) -> bool {
    RESERVED_PARAMETERS
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
}

/// Whether `host` is this machine: `localhost` (and `*.localhost`), `127.0.0.0/8`, `::1`.
pub(crate) fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(d) => {
            d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost")
        }
        Host::Ipv4(ip) => IpAddr::V4(*ip).is_loopback(),
        Host::Ipv6(ip) => IpAddr::V6(*ip).is_loopback(),
    }
}

/// The endpoint as shown in errors and logs: without user name, password, query or fragment.
pub(crate) fn display_endpoint(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// A client secret, held in a [`SecretString`]: never shown by `Debug`, wiped from memory on drop.
///
/// Built from a string: `client_secret: "secret".into()`.
#[derive(Clone, Default)]
pub struct ClientSecret(Option<SecretString>);

impl ClientSecret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        let secret: String = secret.into();
        if secret.is_empty() {
            Self(None)
        } else {
            Self(Some(SecretString::from(secret)))
        }
    }

    /// The secret itself. Do not log it.
    pub fn expose_secret(&self) -> &str {
        self.0.as_ref().map_or("", ExposeSecret::expose_secret)
    }

    /// Whether the secret is empty (a public client, or one that authenticates otherwise).
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            f.write_str("ClientSecret(<empty>)")
        } else {
            f.write_str("ClientSecret(<redacted>)")
        }
    }
}

impl From<&str> for ClientSecret {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for ClientSecret {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

impl From<SecretString> for ClientSecret {
    fn from(s: SecretString) -> Self {
        if s.expose_secret().is_empty() {
            Self(None)
        } else {
            Self(Some(s))
        }
    }
}

/// Per-call choices for [`AccessTokenManagementService::get_client_access_token`](super::AccessTokenManagementService::get_client_access_token).
///
/// `scope` and `resources`, when set, replace the client's configured ones; `parameters` are added to
/// the client's (a name present in both takes the value given here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenRequestParameters {
    /// Skip the cache read and request a new token (coalesced with other forced callers); the new
    /// token replaces the cached one.
    pub force_renewal: bool,
    /// Scope to request instead of the client's.
    pub scope: Option<String>,
    /// Resource indicators to request instead of the client's.
    pub resources: Vec<String>,
    /// Extra form fields for this request.
    pub parameters: Vec<(String, String)>,
}

impl TokenRequestParameters {
    /// Parameters that force a renewal and otherwise use the client's defaults.
    pub fn force_renewal() -> Self {
        Self {
            force_renewal: true,
            ..Self::default()
        }
    }

    /// Whether the token requested is the client's default one (ignoring `force_renewal`).
    #[inline]
    pub fn is_client_default(&self) -> bool {
        self.scope.is_none() && self.resources.is_empty() && self.parameters.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(address: &str) -> TokenClientOptions {
        TokenClientOptions {
            address: address.parse().unwrap(),
            client_id: "id".into(),
            client_secret: "secret".into(),
            ..Default::default()
        }
    }

    #[test]
    fn loopback_http_is_allowed_remote_is_not() {
        assert!(
            client("http://127.0.0.1:5000/token")
                .problems("c")
                .is_empty()
        );
        assert!(client("http://localhost/token").problems("c").is_empty());
        assert!(client("http://[::1]/token").problems("c").is_empty());
        let p = client("http://example.com/token").problems("c");
        assert!(
            matches!(p.as_slice(), [OptionsError::InsecureAddress { client, .. }] if client == "c")
        );
        let mut opt_in = client("http://example.com/token");
        opt_in.allow_insecure_http = true;
        assert!(opt_in.problems("c").is_empty());
    }

    #[test]
    fn display_endpoint_strips_credentials() {
        let url: Url = "https://user:pw@example.com/token?x=1".parse().unwrap();
        assert_eq!(display_endpoint(&url), "https://example.com/token");
    }
}
