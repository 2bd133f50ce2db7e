//! The access token handed to callers, and its storable form.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use serde::{Deserialize, Serialize};

use super::clock::{Clock, Stamp};

/// An access token obtained with the client credentials grant.
///
/// Cloning is cheap (one [`Arc`] increment): the cache and every caller share one allocation.
/// `Debug` never shows the token. The `Authorization` header value is computed once, when the token is
/// received, and is marked sensitive.
///
/// Times are wall-clock ([`SystemTime`]) so that a token can be stored outside the process
/// ([`StoredClientAccessToken`]). The service decides freshness on its [`Clock`], which keeps counting
/// across suspend: a token it received (or read back from a cache) carries its deadlines on that clock.
#[derive(Clone)]
#[doc(alias = "ClientCredentialsToken")]
pub struct ClientAccessToken {
    inner: Arc<Inner>,
}

/// One per cached token, so kept compact (96 bytes): times in 8 bytes each, no `Option` tags.
struct Inner {
    /// `<token type> <access token>`, marked sensitive. The token and its type are read back from
    /// it (one copy of the token per allocation, not three).
    authorization: HeaderValue,
    expires_at: WallTime,
    refresh_at: WallTime,
    scope: Option<Box<str>>,
    /// Deadlines on the service's clock; [`Deadlines::UNANCHORED`] for a token built with
    /// [`ClientAccessToken::new`] that the service has not anchored yet.
    deadlines: Deadlines,
    /// When a caller last got this token (clock stamp, coarse): decides whether the background
    /// renewal keeps the key alive or lets it age out.
    last_used: AtomicU64,
}

const _: () = assert!(size_of::<Inner>() <= 96);

/// An optional wall-clock time in 8 bytes: nanoseconds since the Unix epoch, `i64::MIN` for none.
/// Exact from 1677 to 2262; a time outside is kept as the nearest one inside (a token's times are
/// its request's time plus at most ten years, see `endpoint.rs`).
#[derive(Clone, Copy, PartialEq, Eq)]
struct WallTime(i64);

impl WallTime {
    const NONE: i64 = i64::MIN;

    fn new(at: Option<SystemTime>) -> Self {
        let Some(at) = at else {
            return Self(Self::NONE);
        };
        let nanos = match at.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
            Err(before) => {
                i64::try_from(before.duration().as_nanos()).map_or(Self::NONE + 1, |nanos| -nanos)
            }
        };
        Self(nanos)
    }

    fn get(self) -> Option<SystemTime> {
        match self.0 {
            Self::NONE => None,
            nanos => Some(match u64::try_from(nanos) {
                Ok(after) => UNIX_EPOCH + Duration::from_nanos(after),
                Err(_) => UNIX_EPOCH - Duration::from_nanos(nanos.unsigned_abs()),
            }),
        }
    }
}

/// A token's deadlines on the service clock. `refresh` is never after `expiry`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Deadlines {
    /// From here on the token is due for renewal (still served while it has not expired).
    pub(crate) refresh: Stamp,
    /// From here on the token is never served (its expiry minus the safety margin).
    pub(crate) expiry: Stamp,
}

impl Deadlines {
    /// No deadlines yet: refresh after expiry, which real deadlines never are (expired at once).
    const UNANCHORED: Deadlines = Deadlines {
        refresh: Stamp::NEVER,
        expiry: Stamp::from_nanos(0),
    };
}

/// Where a token stands at some moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// Before its refresh time: served, nothing to do.
    Fresh,
    /// Past its refresh time, not expired: served, and a renewal is due.
    Due,
    /// Expired (or never anchored): never served.
    Expired,
}

/// Last-use stamps are only written when they move by more than this, so a hot token's cache line
/// is read, not written, by concurrent hits.
const LAST_USED_RESOLUTION: Duration = Duration::from_millis(250);

/// A token the service cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidToken {
    /// The access token or its type contains characters that cannot appear in an HTTP header.
    #[error("the access token or token type contains characters not allowed in an HTTP header")]
    HeaderCharacters,
    /// The token type is not one this client understands (RFC 6749 section 7.1: the client must not
    /// use it).
    #[error("unsupported token type `{0}` (only Bearer and DPoP are supported)")]
    UnsupportedType(String),
}

impl ClientAccessToken {
    /// Builds a token, e.g. in a cache that read it back from outside the process.
    ///
    /// `token_type` must be `Bearer` or `DPoP` (any case); a missing or empty type is taken as
    /// `Bearer`, as most servers that omit it mean (RFC 6749 requires it). `expires_at` is when the token expires
    /// (`None`: unknown); `refresh_at` is when the service stops handing it out without renewing it
    /// (`None`: never, until deleted or rejected).
    ///
    /// Such a token has no deadlines on the service's clock yet: the service anchors it (from the
    /// wall-clock times) when it reads it from a cache.
    ///
    /// # Errors
    ///
    /// [`InvalidToken`] for an unsupported type or characters that cannot appear in a header.
    pub fn new(
        access_token: impl Into<String>,
        token_type: Option<&str>,
        expires_at: Option<SystemTime>,
        refresh_at: Option<SystemTime>,
        scope: Option<String>,
    ) -> Result<Self, InvalidToken> {
        Self::build(
            access_token.into(),
            token_type,
            expires_at,
            refresh_at,
            scope,
            None,
            Stamp::from_nanos(0),
        )
    }

    /// A token just received by the service, anchored on its clock. A `DPoP` token is accepted only
    /// by a client with a DPoP key (`dpop`).
    pub(crate) fn received(
        access_token: String,
        token_type: Option<&str>,
        times: ReceivedTimes,
        scope: Option<String>,
        dpop: bool,
    ) -> Result<Self, InvalidToken> {
        if !dpop && normalise_token_type(token_type) == Ok("DPoP") {
            return Err(InvalidToken::UnsupportedType("DPoP".to_owned()));
        }
        Self::build(
            access_token,
            token_type,
            times.expires_at,
            times.refresh_at,
            scope,
            Some(times.deadlines),
            times.received,
        )
    }

    fn build(
        access_token: String,
        token_type: Option<&str>,
        expires_at: Option<SystemTime>,
        refresh_at: Option<SystemTime>,
        scope: Option<String>,
        deadlines: Option<Deadlines>,
        last_used: Stamp,
    ) -> Result<Self, InvalidToken> {
        let token_type = normalise_token_type(token_type)?;
        // Exactly sized: the header's bytes then take over the buffer without another allocation.
        let mut header = String::with_capacity(token_type.len() + 1 + access_token.len());
        header.push_str(token_type);
        header.push(' ');
        header.push_str(&access_token);
        drop(access_token);
        let mut authorization =
            HeaderValue::try_from(header).map_err(|_| InvalidToken::HeaderCharacters)?;
        authorization.set_sensitive(true);
        Ok(Self {
            inner: Arc::new(Inner {
                authorization,
                expires_at: WallTime::new(expires_at),
                refresh_at: WallTime::new(refresh_at),
                scope: scope.map(String::into_boxed_str),
                // Held to `refresh <= expiry`, so that no deadlines are taken for none.
                deadlines: deadlines.map_or(Deadlines::UNANCHORED, |d| Deadlines {
                    refresh: d.refresh,
                    expiry: d.expiry.max(d.refresh),
                }),
                last_used: AtomicU64::new(last_used.as_nanos()),
            }),
        })
    }

    /// This token with deadlines on `clock`, derived from its wall-clock times (a copy, unless it
    /// already has them). The expiry deadline is `expires_at - safety_margin` (see
    /// [`due_window_margin`]), never before the
    /// refresh deadline.
    pub(crate) fn anchored(&self, clock: &dyn Clock, safety_margin: Duration) -> Self {
        if self.deadlines().is_some() {
            return self.clone();
        }
        let now = clock.now();
        let wall_now = clock.system_time();
        let on_clock = |at: Option<SystemTime>| match at {
            None => Stamp::NEVER,
            Some(at) => match at.duration_since(wall_now) {
                Ok(ahead) => now.saturating_add(ahead),
                Err(_) => now, // already past
            },
        };
        let (expires_at, refresh_at) = (self.expires_at(), self.refresh_at());
        let refresh = on_clock(refresh_at.or(expires_at));
        let expiry = if let Some(expires_at) = expires_at {
            // The renewal window from the token's own times (a deadline already past is clamped
            // to now on the clock, which would shrink it).
            let window = refresh_at
                .and_then(|refresh_at| expires_at.duration_since(refresh_at).ok())
                .unwrap_or_default();
            on_clock(Some(expires_at))
                .saturating_sub(due_window_margin(window, safety_margin))
                .max(refresh)
        } else {
            Stamp::NEVER
        };
        let inner = &self.inner;
        Self {
            inner: Arc::new(Inner {
                authorization: inner.authorization.clone(),
                expires_at: inner.expires_at,
                refresh_at: inner.refresh_at,
                scope: inner.scope.clone(),
                deadlines: Deadlines { refresh, expiry },
                last_used: AtomicU64::new(now.as_nanos()),
            }),
        }
    }

    /// The access token itself. Secret: do not log it.
    pub fn access_token(&self) -> &str {
        self.header_str(self.token_type_len() + 1..self.inner.authorization.len())
    }

    /// The token type, normalised (`Bearer` or `DPoP`).
    pub fn token_type(&self) -> &str {
        self.header_str(0..self.token_type_len())
    }

    /// The length of the type the header starts with: one of two, told apart by the first letter.
    fn token_type_len(&self) -> usize {
        match self.inner.authorization.as_bytes().first() {
            Some(b'D') => "DPoP".len(),
            _ => "Bearer".len(),
        }
    }

    /// Whether the token is bound to the client's DPoP key (`token_type` `DPoP`): every request
    /// it authorizes needs a DPoP proof.
    pub fn is_dpop(&self) -> bool {
        // Bytes, not `token_type()`: this is asked on every request, and the UTF-8 check is not
        // needed to compare with an ASCII literal.
        self.inner.authorization.as_bytes().starts_with(b"DPoP ")
    }

    /// A part of the header value. It was built from UTF-8 strings and is split at the ASCII space
    /// between them, so each part is UTF-8.
    fn header_str(&self, range: std::ops::Range<usize>) -> &str {
        std::str::from_utf8(&self.inner.authorization.as_bytes()[range])
            .expect("the header was built from UTF-8 strings")
    }

    /// When the token expires: when the request was sent plus `expires_in` (a lower bound, since the
    /// server counts from a later moment). `None` when the token service did not say.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.inner.expires_at.get()
    }

    /// When the service stops serving this token without renewing it (`None`: never, until it is
    /// deleted or rejected).
    pub fn refresh_at(&self) -> Option<SystemTime> {
        self.inner.refresh_at.get()
    }

    /// The scope the token service granted, when it said.
    pub fn scope(&self) -> Option<&str> {
        self.inner.scope.as_deref()
    }

    /// The `Authorization` header value (`Bearer <token>` or `DPoP <token>`), marked sensitive.
    /// Computed once when the token was received; this clones it (a reference-count increment).
    pub fn authorization_header(&self) -> HeaderValue {
        self.inner.authorization.clone()
    }

    /// Whether two handles share the same token allocation (same token request).
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Whether two handles carry the same access token (same allocation, or the same value read back
    /// from a cache).
    pub fn same_token(&self, other: &Self) -> bool {
        self.ptr_eq(other) || self.inner.authorization == other.inner.authorization
    }

    /// The storable form of this token (for a cache outside the process). Contains the secret.
    pub fn to_stored(&self) -> StoredClientAccessToken {
        StoredClientAccessToken {
            access_token: self.access_token().to_owned(),
            token_type: self.token_type().to_owned(),
            expires_at: self.expires_at(),
            refresh_at: self.refresh_at(),
            scope: self.inner.scope.as_deref().map(str::to_owned),
        }
    }

    pub(crate) fn deadlines(&self) -> Option<Deadlines> {
        let deadlines = self.inner.deadlines;
        (deadlines != Deadlines::UNANCHORED).then_some(deadlines)
    }

    /// Where the token stands at `now` (a token without deadlines counts as expired: it must be
    /// anchored first). Expiry is compared first: unanchored, it is the clock's origin.
    #[inline]
    pub(crate) fn freshness_at(&self, now: Stamp) -> Freshness {
        let deadlines = &self.inner.deadlines;
        if now >= deadlines.expiry {
            Freshness::Expired
        } else if now < deadlines.refresh {
            Freshness::Fresh
        } else {
            Freshness::Due
        }
    }

    /// Records a use at `now` (written only when it moved by more than the resolution).
    #[inline]
    pub(crate) fn touch(&self, now: Stamp) {
        let last = self.inner.last_used.load(Ordering::Relaxed);
        if now.as_nanos().saturating_sub(last) > LAST_USED_RESOLUTION.as_nanos() as u64 {
            self.inner
                .last_used
                .store(now.as_nanos(), Ordering::Relaxed);
        }
    }

    /// When a caller last got this token.
    pub(crate) fn last_used(&self) -> Stamp {
        Stamp::from_nanos(self.inner.last_used.load(Ordering::Relaxed))
    }

    /// Takes over `previous`'s last use, when earlier (a renewal nobody asked for is not a use).
    pub(crate) fn inherit_last_use(&self, previous: &ClientAccessToken) {
        self.inner
            .last_used
            .fetch_min(previous.last_used().as_nanos(), Ordering::Relaxed);
    }

    pub(crate) fn downgrade(&self) -> WeakToken {
        WeakToken(Arc::downgrade(&self.inner))
    }
}

/// A token that does not keep its allocation alive (the renewal schedule holds these).
pub(crate) struct WeakToken(Weak<Inner>);

impl WeakToken {
    pub(crate) fn upgrade(&self) -> Option<ClientAccessToken> {
        self.0.upgrade().map(|inner| ClientAccessToken { inner })
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.0.strong_count() > 0
    }
}

/// The safety margin actually kept before a token's expiry: the configured one, but at most half of
/// the time between its refresh time and its expiry, so that even a short-lived token has a window
/// in which it is due for renewal and still served (no caller waits at a rollover).
pub(crate) fn due_window_margin(refresh_to_expiry: Duration, configured: Duration) -> Duration {
    configured.min(refresh_to_expiry / 2)
}

/// The times of a token the service just received.
pub(crate) struct ReceivedTimes {
    pub(crate) expires_at: Option<SystemTime>,
    pub(crate) refresh_at: Option<SystemTime>,
    pub(crate) deadlines: Deadlines,
    /// When the request was sent, on the service clock (the token's first use).
    pub(crate) received: Stamp,
}

/// A token in a form that can be stored outside the process (serde): wall-clock times, no
/// process-local state. Contains the secret access token: encrypt it at rest.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredClientAccessToken {
    /// The access token.
    pub access_token: String,
    /// The token type (`Bearer` or `DPoP`).
    pub token_type: String,
    /// When the token expires.
    pub expires_at: Option<SystemTime>,
    /// When the service renews it.
    pub refresh_at: Option<SystemTime>,
    /// The granted scope.
    pub scope: Option<String>,
}

impl TryFrom<StoredClientAccessToken> for ClientAccessToken {
    type Error = InvalidToken;

    fn try_from(stored: StoredClientAccessToken) -> Result<Self, InvalidToken> {
        ClientAccessToken::new(
            stored.access_token,
            Some(&stored.token_type),
            stored.expires_at,
            stored.refresh_at,
            stored.scope,
        )
    }
}

impl fmt::Debug for StoredClientAccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredClientAccessToken")
            .field("access_token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_at", &self.expires_at)
            .field("refresh_at", &self.refresh_at)
            .field("scope", &self.scope)
            .finish()
    }
}

impl fmt::Debug for ClientAccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAccessToken")
            .field("access_token", &"<redacted>")
            .field("token_type", &self.token_type())
            .field("expires_at", &self.expires_at())
            .field("refresh_at", &self.refresh_at())
            .field("scope", &self.inner.scope)
            .finish()
    }
}

fn normalise_token_type(token_type: Option<&str>) -> Result<&'static str, InvalidToken> {
    match token_type.map(str::trim) {
        None | Some("") => Ok("Bearer"),
        Some(t) if t.eq_ignore_ascii_case("bearer") => Ok("Bearer"),
        Some(t) if t.eq_ignore_ascii_case("dpop") => Ok("DPoP"),
        Some(other) => Err(InvalidToken::UnsupportedType(
            other.chars().take(32).collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::clock::ManualClock;

    #[test]
    fn scheme_is_normalised_and_header_sensitive() {
        let t = ClientAccessToken::new("abc", Some("bearer"), None, None, None).unwrap();
        assert_eq!(t.token_type(), "Bearer");
        assert_eq!(t.authorization_header(), "Bearer abc");
        assert!(t.authorization_header().is_sensitive());
        let t = ClientAccessToken::new("abc", None, None, None, None).unwrap();
        assert_eq!(t.authorization_header(), "Bearer abc");
        assert_eq!(t.access_token(), "abc");
        assert_eq!(
            ClientAccessToken::new("a\nb", None, None, None, None).unwrap_err(),
            InvalidToken::HeaderCharacters
        );
        assert_eq!(
            ClientAccessToken::new("abc", Some("mac"), None, None, None).unwrap_err(),
            InvalidToken::UnsupportedType("mac".into())
        );
    }

    #[test]
    fn dpop_tokens_are_accepted_only_for_dpop_clients() {
        let t = ClientAccessToken::new("abc", Some("dpop"), None, None, None).unwrap();
        assert_eq!(t.authorization_header(), "DPoP abc");
        assert!(t.is_dpop());
        assert!(
            !ClientAccessToken::new("abc", None, None, None, None)
                .unwrap()
                .is_dpop()
        );
        let times = || ReceivedTimes {
            expires_at: None,
            refresh_at: None,
            deadlines: Deadlines {
                refresh: Stamp::NEVER,
                expiry: Stamp::NEVER,
            },
            received: Stamp::from_nanos(0),
        };
        let received =
            |dpop| ClientAccessToken::received("abc".into(), Some("DPoP"), times(), None, dpop);
        assert!(received(true).unwrap().is_dpop());
        assert_eq!(
            received(false).unwrap_err(),
            InvalidToken::UnsupportedType("DPoP".into())
        );
    }

    #[test]
    fn wall_times_keep_their_value_to_the_nanosecond() {
        let now = SystemTime::now();
        let times = [
            None,
            Some(UNIX_EPOCH),
            Some(now),
            Some(now + Duration::from_nanos(3_600_000_000_007)),
            Some(UNIX_EPOCH - Duration::from_nanos(1_500_000_001)),
            Some(UNIX_EPOCH + Duration::from_nanos(i64::MAX as u64)),
        ];
        for at in times {
            assert_eq!(WallTime::new(at).get(), at);
            let t = ClientAccessToken::new("t", None, at, at, None).unwrap();
            assert_eq!((t.expires_at(), t.refresh_at()), (at, at));
            assert_eq!(t.to_stored().expires_at, at);
        }
        // Beyond 2262: the latest time kept.
        let far = UNIX_EPOCH + Duration::from_secs(400 * 365 * 24 * 3600);
        assert_eq!(
            WallTime::new(Some(far)).get(),
            Some(UNIX_EPOCH + Duration::from_nanos(i64::MAX as u64))
        );
    }

    #[test]
    fn a_token_from_new_has_no_deadlines_and_a_received_one_has_its_own() {
        let t = ClientAccessToken::new("t", None, None, None, None).unwrap();
        assert_eq!(t.deadlines(), None);
        for now in [0, 1, u64::MAX - 1, u64::MAX] {
            assert_eq!(t.freshness_at(Stamp::from_nanos(now)), Freshness::Expired);
        }
        let received = |refresh: u64, expiry: u64| {
            let deadlines = Deadlines {
                refresh: Stamp::from_nanos(refresh),
                expiry: Stamp::from_nanos(expiry),
            };
            let times = ReceivedTimes {
                expires_at: None,
                refresh_at: None,
                deadlines,
                received: Stamp::from_nanos(0),
            };
            let t = ClientAccessToken::received("t".into(), None, times, None, false).unwrap();
            assert_eq!(t.deadlines(), Some(deadlines));
            t
        };
        // Deadlines at the clock's origin are deadlines, not none.
        assert_eq!(
            received(0, 0).freshness_at(Stamp::from_nanos(0)),
            Freshness::Expired
        );
        let t = received(10, 20);
        let at = |n| t.freshness_at(Stamp::from_nanos(n));
        assert_eq!(
            (at(9), at(10), at(19), at(20)),
            (
                Freshness::Fresh,
                Freshness::Due,
                Freshness::Due,
                Freshness::Expired
            )
        );
        let never = received(u64::MAX, u64::MAX);
        assert_eq!(
            never.freshness_at(Stamp::from_nanos(u64::MAX - 1)),
            Freshness::Fresh
        );
    }

    #[test]
    fn debug_redacts() {
        let t = ClientAccessToken::new("very-secret-token", None, None, None, None).unwrap();
        assert!(!format!("{t:?}").contains("very-secret-token"));
        assert!(!format!("{:?}", t.to_stored()).contains("very-secret-token"));
    }

    #[test]
    fn anchoring_derives_deadlines_from_wall_clock_times() {
        let clock = ManualClock::new();
        clock.advance(Duration::from_secs(100));
        let wall = clock.system_time();
        let t = ClientAccessToken::new(
            "t",
            None,
            Some(wall + Duration::from_secs(60)),
            Some(wall + Duration::from_secs(30)),
            None,
        )
        .unwrap();
        assert_eq!(
            t.freshness_at(clock.now()),
            Freshness::Expired,
            "unanchored"
        );
        let t = t.anchored(&clock, Duration::from_secs(5));
        let at = |s: u64| Stamp::from_nanos(s * 1_000_000_000);
        assert_eq!(t.freshness_at(at(129)), Freshness::Fresh);
        assert_eq!(t.freshness_at(at(130)), Freshness::Due);
        assert_eq!(t.freshness_at(at(154)), Freshness::Due);
        assert_eq!(t.freshness_at(at(155)), Freshness::Expired);
        let stored = t.to_stored();
        let back = ClientAccessToken::try_from(stored.clone()).unwrap();
        assert_eq!(back.to_stored(), stored);
    }
}
