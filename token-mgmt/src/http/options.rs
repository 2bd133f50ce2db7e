//! [`HttpClientOptions`]: what a named client is configured with.

use std::fmt;
use std::time::Duration;

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION};
use url::Url;

/// The default request timeout, the same as .NET's `HttpClient.Timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(100);

/// Options of one named HTTP client (the counterpart of .NET's `HttpClient` properties).
///
/// Fields are public so configuration closures can set them:
///
/// ```
/// # use token_mgmt::http::HttpClientOptions;
/// let mut client = HttpClientOptions::default();
/// client.base_address = Some("https://demo.identityserver.io/api/".parse().unwrap());
/// client.timeout = None; // no overall timeout
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct HttpClientOptions {
    /// The URL that relative request paths are resolved against (RFC 3986, like .NET's `Uri`):
    /// `https://h/api/` + `test` gives `https://h/api/test`; without the trailing slash the last
    /// segment is replaced (`https://h/api` + `test` gives `https://h/test`). `None`: every request
    /// needs an absolute URL.
    #[doc(alias = "BaseAddress")]
    pub base_address: Option<Url>,
    /// Headers sent with every request. `Authorization`, `Proxy-Authorization` and `Cookie` values are
    /// marked sensitive when the client is built (hidden from `Debug`, not HPACK-indexed).
    pub default_headers: HeaderMap,
    /// Overall timeout of a request (connect, send, and reading the response body). Defaults to
    /// [`DEFAULT_TIMEOUT`] (100 s, like .NET); `None` disables it.
    pub timeout: Option<Duration>,
    /// Timeout of the connect phase only. `None` (the default): only `timeout` applies.
    pub connect_timeout: Option<Duration>,
    /// Origins besides the base address's that an access token client may send its token to. An
    /// access token client needs a base address or at least one of these; requests to any other
    /// origin are refused.
    pub allowed_origins: Vec<Url>,
    /// Let an access token client send its tokens over plain `http://` to a host that is not
    /// loopback (default off: `build()` rejects such a base address or allowed origin, as the
    /// tokens would travel in clear text). Only for a trusted network.
    pub allow_insecure_http: bool,
}

impl Default for HttpClientOptions {
    fn default() -> Self {
        Self {
            base_address: None,
            default_headers: HeaderMap::new(),
            timeout: Some(DEFAULT_TIMEOUT),
            connect_timeout: None,
            allowed_origins: Vec::new(),
            allow_insecure_http: false,
        }
    }
}

impl HttpClientOptions {
    /// Options with the defaults: no base address, no default headers, a 100 s timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the base address (builder style).
    pub fn with_base_address(mut self, base_address: Url) -> Self {
        self.base_address = Some(base_address);
        self
    }

    /// Sets the overall request timeout (builder style); `None` disables it.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// The default headers with credential-bearing values marked sensitive.
    pub(crate) fn sanitized_default_headers(&self) -> HeaderMap {
        let mut headers = self.default_headers.clone();
        for name in [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE] {
            if let http::header::Entry::Occupied(mut entry) = headers.entry(name) {
                for value in entry.iter_mut() {
                    value.set_sensitive(true);
                }
            }
        }
        headers
    }
}

impl fmt::Debug for HttpClientOptions {
    /// Lists header *names* only: default headers may carry credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClientOptions")
            .field(
                "base_address",
                &self.base_address.as_ref().map(super::resolve::redacted),
            )
            .field("default_headers", &HeaderNames(&self.default_headers))
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field(
                "allowed_origins",
                &self
                    .allowed_origins
                    .iter()
                    .map(|url| url.origin().ascii_serialization())
                    .collect::<Vec<_>>(),
            )
            .field("allow_insecure_http", &self.allow_insecure_http)
            .finish()
    }
}

struct HeaderNames<'a>(&'a HeaderMap);

impl fmt::Debug for HeaderNames<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}
