//! Server nonces (RFC 9449 sections 8 and 9), remembered per origin.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use http::HeaderMap;
use url::Url;

use super::DPOP_NONCE_HEADER;

/// Most origins remembered; past it the store starts over (a token client talks to a handful).
const MAX_ORIGINS: usize = 256;

/// The last nonce each origin sent.
#[derive(Default)]
pub(crate) struct NonceStore {
    nonces: Mutex<HashMap<String, Arc<str>>>,
}

impl NonceStore {
    /// The nonce `url`'s origin last sent.
    pub(crate) fn get(&self, url: &Url) -> Option<Arc<str>> {
        let origin = url.origin().ascii_serialization();
        self.lock().get(&origin).cloned()
    }

    /// Remembers the `DPoP-Nonce` of a response from `url`; returns whether it carried a valid
    /// one.
    pub(crate) fn remember(&self, url: &Url, headers: &HeaderMap) -> bool {
        let Some(nonce) = headers
            .get(DPOP_NONCE_HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|nonce| is_nonce(nonce))
        else {
            return false;
        };
        let origin = url.origin().ascii_serialization();
        let mut nonces = self.lock();
        if nonces.get(&origin).is_some_and(|known| &**known == nonce) {
            return true;
        }
        if nonces.len() >= MAX_ORIGINS && !nonces.contains_key(&origin) {
            nonces.clear();
        }
        nonces.insert(origin, Arc::from(nonce));
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<str>>> {
        // The map is always consistent: a panic elsewhere cannot leave it half-written.
        self.nonces.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `nonce = 1*NQCHAR` (RFC 9449 section 8.1): printable ASCII except `"` and `\`.
fn is_nonce(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(nonce: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(DPOP_NONCE_HEADER, nonce.parse().unwrap());
        headers
    }

    #[test]
    fn nonces_are_kept_per_origin_and_replaced() {
        let store = NonceStore::default();
        let api: Url = "https://api.example.com/a?x=1".parse().unwrap();
        let same_origin: Url = "https://API.example.com:443/b".parse().unwrap();
        let other: Url = "https://api.example.com:8443/".parse().unwrap();
        assert!(store.remember(&api, &headers("n1")));
        assert!(store.remember(&api, &headers("n1")), "the same again");
        assert_eq!(store.get(&same_origin).as_deref(), Some("n1"));
        assert_eq!(store.get(&other), None);
        assert!(store.remember(&same_origin, &headers("n2")));
        assert_eq!(store.get(&api).as_deref(), Some("n2"));
        assert!(
            !store.remember(&api, &headers("bad\"quote")),
            "invalid nonce"
        );
        assert!(!store.remember(&api, &HeaderMap::new()));
        assert_eq!(store.get(&api).as_deref(), Some("n2"));
    }
}
