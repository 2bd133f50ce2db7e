//! Random tokens, client secret comparison and `client_secret_basic` decoding.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// A new opaque access token: 32 bytes (256 bits) from the operating system's CSPRNG, base64url.
pub(crate) fn new_token() -> String {
    let mut bytes = [0_u8; 32];
    // The OS random source failing is not something a token service can work around.
    getrandom::fill(&mut bytes).expect("the operating system random source is available");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Compares two secrets without an early exit on the first differing byte.
pub(crate) fn secrets_equal(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Decodes an `Authorization: Basic` value per RFC 6749 2.3.1: base64 of
/// `urlencode(client_id) ":" urlencode(secret)` (form encoding: `+` is a space).
pub(crate) fn decode_basic(header: &str) -> Option<(String, String)> {
    let (scheme, value) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(value.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id)?, form_decode(secret)?))
}

/// Decodes one `application/x-www-form-urlencoded` component.
fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_and_distinct() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let value = format!("Basic {}", STANDARD.encode("m2m.short:s%3Ae+cr%25t"));
        assert_eq!(
            decode_basic(&value),
            Some(("m2m.short".to_owned(), "s:e cr%t".to_owned()))
        );
        assert_eq!(decode_basic("Bearer abc"), None);
        assert_eq!(
            decode_basic(&format!("Basic {}", STANDARD.encode("a:%zz"))),
            None
        );
    }

    #[test]
    fn secret_comparison() {
        assert!(secrets_equal("secret", "secret"));
        assert!(!secrets_equal("secret", "secreT"));
        assert!(!secrets_equal("secret", "secrets"));
    }
}
