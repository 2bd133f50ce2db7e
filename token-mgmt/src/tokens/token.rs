//! The access token handed to callers.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use tokio::time::Instant;

/// An access token obtained with the client credentials grant.
///
/// Cloning is cheap (one [`Arc`] increment): the cache and every caller share one allocation.
/// `Debug` never shows the token. The `Authorization` header value is computed once, when the token is
/// received, and is marked sensitive.
#[derive(Clone)]
#[doc(alias = "ClientCredentialsToken")]
pub struct ClientAccessToken {
    inner: Arc<Inner>,
}

struct Inner {
    /// `<token type> <access token>`, marked sensitive. The token and its type are read back from
    /// it (one copy of the token per allocation, not three).
    authorization: HeaderValue,
    /// Where the access token starts in `authorization` (the type's length plus the space).
    token_start: u32,
    /// [`UNARMED`], [`ARMED`] or [`STALE`]: see [`ClientAccessToken::is_fresh`].
    freshness: AtomicU8,
    expires_at: Option<Instant>,
    refresh_at: Option<Instant>,
    scope: Option<Box<str>>,
}

/// No refresh timer: freshness is decided by reading the clock.
const UNARMED: u8 = 0;
/// A refresh timer is pending: the token is fresh, no clock read needed.
const ARMED: u8 = 1;
/// The refresh timer fired (or was dropped with its runtime): the token is due for renewal.
const STALE: u8 = 2;

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
    ///
    /// # Errors
    ///
    /// [`InvalidTokenCharacters`] when the token or type cannot appear in an HTTP header.
    pub fn new(
        access_token: impl Into<String>,
        token_type: Option<&str>,
        expires_at: Option<Instant>,
        refresh_at: Option<Instant>,
        scope: Option<String>,
    ) -> Result<Self, InvalidTokenCharacters> {
        let access_token: String = access_token.into();
        let token_type = normalise_token_type(token_type);
        let token_start =
            u32::try_from(token_type.len() + 1).map_err(|_| InvalidTokenCharacters)?;
        // Exactly sized: the header's bytes then take over the buffer without another allocation.
        let mut header = String::with_capacity(token_type.len() + 1 + access_token.len());
        header.push_str(token_type);
        header.push(' ');
        header.push_str(&access_token);
        drop(access_token);
        let mut authorization =
            HeaderValue::try_from(header).map_err(|_| InvalidTokenCharacters)?;
        authorization.set_sensitive(true);
        Ok(Self {
            inner: Arc::new(Inner {
                authorization,
                token_start,
                freshness: AtomicU8::new(UNARMED),
                expires_at,
                refresh_at,
                scope: scope.map(String::into_boxed_str),
            }),
        })
    }

    /// The access token itself. Secret: do not log it.
    pub fn access_token(&self) -> &str {
        let start = self.inner.token_start as usize;
        self.header_str(start..self.inner.authorization.len())
    }

    /// The token type, normalised (`Bearer`, `DPoP`, or as sent for other types).
    pub fn token_type(&self) -> &str {
        self.header_str(0..self.inner.token_start as usize - 1)
    }

    /// A part of the header value. It was built from UTF-8 strings and is split at the ASCII space
    /// between them, so each part is UTF-8.
    fn header_str(&self, range: std::ops::Range<usize>) -> &str {
        std::str::from_utf8(&self.inner.authorization.as_bytes()[range])
            .expect("the header was built from UTF-8 strings")
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
    /// Computed once when the token was received; this clones it (a reference-count increment).
    pub fn authorization_header(&self) -> HeaderValue {
        self.inner.authorization.clone()
    }

    /// Whether the token may still be served from the cache at `now` (compares with
    /// [`refresh_at`](Self::refresh_at)).
    #[inline]
    pub fn is_fresh_at(&self, now: Instant) -> bool {
        self.inner.refresh_at.is_none_or(|at| now < at)
    }

    /// Whether the token may still be served from the cache now.
    ///
    /// A token the service requested is *armed*: the service's refresh scheduler (one tokio task per
    /// service, holding every pending token in a timer queue on tokio's clock, so a paused test clock
    /// drives it) marks it stale at [`refresh_at`](Self::refresh_at). For an armed token this is one
    /// relaxed atomic load, with no clock read. If the scheduler goes away before the refresh time
    /// (its runtime shut down, or the service was dropped), the token is marked stale: a later caller
    /// requests a new one rather than trusting it forever.
    ///
    /// Other tokens are *unarmed* and compare `refresh_at` with the tokio clock: tokens built with
    /// [`new`](Self::new) (e.g. by a remote cache, or stored into a cache directly), tokens received
    /// outside a tokio runtime, and tokens due for refresh more than a year ahead. A token without a
    /// refresh time is always fresh.
    #[inline]
    pub fn is_fresh(&self) -> bool {
        match self.inner.freshness.load(Ordering::Relaxed) {
            ARMED => true,
            STALE => false,
            _ => self.inner.refresh_at.is_none_or(|at| Instant::now() < at),
        }
    }

    /// Marks the token stale now (its refresh time has passed).
    pub(crate) fn mark_stale(&self) {
        self.inner.freshness.store(STALE, Ordering::Relaxed);
    }

    /// Moves an unarmed token to armed and returns the guard that marks it stale when dropped (the
    /// refresh scheduler drops it at the refresh time); `None` when the token is already armed or
    /// stale. The caller must hand the guard to a timer: while it lives, the token reads as fresh.
    pub(crate) fn begin_arm(&self) -> Option<MarkStaleOnDrop> {
        self.inner
            .freshness
            .compare_exchange(UNARMED, ARMED, Ordering::Relaxed, Ordering::Relaxed)
            .ok()
            .map(|_| MarkStaleOnDrop(Arc::downgrade(&self.inner)))
    }

    #[cfg(test)]
    pub(crate) fn is_unarmed(&self) -> bool {
        self.inner.freshness.load(Ordering::Relaxed) == UNARMED
    }

    /// Whether two handles share the same token allocation (same token request).
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// One token shared lock-free between writers and many readers: the service's per-client copy of
/// the default token, read on every cache hit without hashing or locking.
#[derive(Default)]
pub(crate) struct TokenSlot(ArcSwapOption<Inner>);

impl TokenSlot {
    /// The token in the slot, if any (one `Arc` increment).
    #[inline]
    pub(crate) fn load(&self) -> Option<ClientAccessToken> {
        self.0.load_full().map(|inner| ClientAccessToken { inner })
    }

    /// Puts `token` in the slot, replacing what was there.
    pub(crate) fn store(&self, token: &ClientAccessToken) {
        self.0.store(Some(Arc::clone(&token.inner)));
    }

    /// Empties the slot.
    pub(crate) fn clear(&self) {
        self.0.store(None);
    }
}

/// Marks the token stale when dropped: when the refresh scheduler's timer for it fires, or when the
/// scheduler is dropped (its runtime shut down, or its service dropped) with the guard still pending.
/// Holds the token weakly: a pending refresh does not keep a dropped token's contents alive.
pub(crate) struct MarkStaleOnDrop(Weak<Inner>);

impl Drop for MarkStaleOnDrop {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            inner.freshness.store(STALE, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for ClientAccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAccessToken")
            .field("access_token", &"<redacted>")
            .field("token_type", &self.token_type())
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
        assert_eq!(t.access_token(), "abc");
        assert!(ClientAccessToken::new("a\nb", None, None, None, None).is_err());
        let t = ClientAccessToken::new("tök en", Some("Custom Type"), None, None, None).unwrap();
        assert_eq!(t.token_type(), "Custom Type");
        assert_eq!(t.access_token(), "tök en");
        let t = ClientAccessToken::new("", Some("x"), None, None, None).unwrap();
        assert_eq!((t.token_type(), t.access_token()), ("x", ""));
    }

    #[test]
    fn debug_redacts() {
        let t = ClientAccessToken::new("very-secret-token", None, None, None, None).unwrap();
        assert!(!format!("{t:?}").contains("very-secret-token"));
    }
}
