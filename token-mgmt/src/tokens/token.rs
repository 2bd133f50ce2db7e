//! The access token handed to callers.

use std::fmt;
use std::sync::Arc;

use http::HeaderValue;
use tokio::time::Instant;

/// An access token obtained with the client credentials grant.
///
/// Cloning is cheap (one [`Arc`] increment): the cache and every caller share one allocation.
/// `Debug` never shows the token. The `Authorization` header value is computed once, when the token is
/// received, and is marked sensitive.
#[derive(Clone)]
pub struct ClientAccessToken {
    inner: Arc<Inner>,
}

struct Inner {
    access_token: Box<str>,
    token_type: Box<str>,
    expires_at: Option<Instant>,
    refresh_at: Option<Instant>,
    scope: Option<Box<str>>,
    authorization: HeaderValue,
}

/// The access token contains characters that cannot appear in an HTTP header.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the access token contains characters that are not allowed in an HTTP header")]
#[non_exhaustive]
pub struct InvalidTokenCharacters;

impl ClientAccessToken {
    /// Builds a token. `token_type` is normalised: `bearer` (any case) or a missing type becomes
    /// `Bearer`, `dpop` (any case) becomes `DPoP`; any other type is kept as sent.
    ///
    /// `expires_at` is when the token expires (`None`: unknown). `refresh_at` is when the token
    /// management service stops handing it out from the cache and requests a new one (usually
    /// `expires_at` minus the cache lifetime buffer; `None`: never, until deleted). Remote cache
    /// implementations use this to rebuild a token they stored.
    pub fn new(
        access_token: impl Into<String>,
        token_type: Option<&str>,
        expires_at: Option<Instant>,
        refresh_at: Option<Instant>,
        scope: Option<String>,
    ) -> Result<Self, InvalidTokenCharacters> {
        let access_token: String = access_token.into();
        let token_type = normalise_token_type(token_type);
        let mut authorization = HeaderValue::try_from(format!("{token_type} {access_token}"))
            .map_err(|_| InvalidTokenCharacters)?;
        authorization.set_sensitive(true);
        Ok(Self {
            inner: Arc::new(Inner {
                access_token: access_token.into_boxed_str(),
                token_type: token_type.into(),
                expires_at,
                refresh_at,
                scope: scope.map(String::into_boxed_str),
                authorization,
            }),
        })
    }

    /// The access token itself. Secret: do not log it.
    pub fn access_token(&self) -> &str {
        &self.inner.access_token
    }

    /// The token type, normalised (`Bearer`, `DPoP`, or as sent for other types).
    pub fn token_type(&self) -> &str {
        &self.inner.token_type
    }

    /// When the token expires, computed from the moment the response arrived plus `expires_in`.
    /// `None` when the token service did not say.
    pub fn expires_at(&self) -> Option<Instant> {
        self.inner.expires_at
    }

    /// When the service stops serving this token from the cache (see [`ClientAccessToken::new`]).
    pub fn refresh_at(&self) -> Option<Instant> {
        self.inner.refresh_at
    }

    /// The scope the token service granted, when it said.
    pub fn scope(&self) -> Option<&str> {
        self.inner.scope.as_deref()
    }

    /// The `Authorization` header value (`Bearer <token>` / `DPoP <token>`), marked sensitive.
    pub fn authorization_header(&self) -> &HeaderValue {
        &self.inner.authorization
    }

    /// Whether the token may still be served from the cache at `now`.
    #[inline]
    pub fn is_fresh_at(&self, now: Instant) -> bool {
        self.inner.refresh_at.is_none_or(|at| now < at)
    }

    /// Whether the token may still be served from the cache now. Reads the clock only when the token
    /// has a refresh time.
    #[inline]
    pub fn is_fresh(&self) -> bool {
        self.inner.refresh_at.is_none_or(|at| Instant::now() < at)
    }

    /// Whether two handles share the same token allocation (same token request).
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl fmt::Debug for ClientAccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAccessToken")
            .field("access_token", &"<redacted>")
            .field("token_type", &self.inner.token_type)
            .field("expires_at", &self.inner.expires_at)
            .field("refresh_at", &self.inner.refresh_at)
            .field("scope", &self.inner.scope)
            .finish()
    }
}

fn normalise_token_type(token_type: Option<&str>) -> &str {
    match token_type.map(str::trim) {
        None | Some("") => "Bearer",
        Some(t) if t.eq_ignore_ascii_case("bearer") => "Bearer",
        Some(t) if t.eq_ignore_ascii_case("dpop") => "DPoP",
        Some(t) => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_is_normalised_and_header_sensitive() {
        let t = ClientAccessToken::new("abc", Some("bearer"), None, None, None).unwrap();
        assert_eq!(t.token_type(), "Bearer");
        assert_eq!(t.authorization_header(), "Bearer abc");
        assert!(t.authorization_header().is_sensitive());
        let t = ClientAccessToken::new("abc", Some("DPOP"), None, None, None).unwrap();
        assert_eq!(t.authorization_header(), "DPoP abc");
        let t = ClientAccessToken::new("abc", None, None, None, None).unwrap();
        assert_eq!(t.authorization_header(), "Bearer abc");
        assert!(ClientAccessToken::new("a\nb", None, None, None, None).is_err());
    }

    #[test]
    fn debug_redacts() {
        let t = ClientAccessToken::new("very-secret-token", None, None, None, None).unwrap();
        assert!(!format!("{t:?}").contains("very-secret-token"));
    }
}
