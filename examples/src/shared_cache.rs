//! The Redis token cache of the examples, from environment variables.
//!
//! | variable | meaning |
//! | --- | --- |
//! | `REDIS_URL` | `redis://[:password@]host:port[/db]`; unset: no shared cache |
//! | `TOKEN_CACHE_KEY` | the AES-256-GCM key, 32 bytes in standard base64 (`head -c 32 /dev/urandom \| base64`) |
//! | `TOKEN_CACHE_KEY_ID` | its id, stored beside each value (default `1`); change it with the key |
//! | `TOKEN_CACHE_OLD_KEY` / `TOKEN_CACHE_OLD_KEY_ID` | after a rotation, the previous key and its id, to read what it wrote |
//! | `TOKEN_CACHE_PLAINTEXT` | `1`: store tokens unencrypted (instead of `TOKEN_CACHE_KEY`) |
//! | `TOKEN_CACHE_PREFIX` | put before every Redis key (default `token-mgmt:`); one per application |

use std::env;
use std::fmt;

use base64::Engine as _;
use token_mgmt::hosting::error_chain;
use token_mgmt::tokens::{RedisCacheError, RedisTokenCache, RedisTokenCacheBuilder};

/// What is wrong with the shared cache's variables, or why the cache could not be set up.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum SharedCacheError {
    /// `REDIS_URL` without a key or the plaintext opt-in.
    #[error(
        "TOKEN_CACHE_KEY (32 bytes in base64) must be set when REDIS_URL is set, \
         or TOKEN_CACHE_PLAINTEXT=1 to store tokens unencrypted"
    )]
    MissingKey,
    /// A key variable is not base64. (The decoder's error is left out: it quotes a byte of the key.)
    #[error("{variable} is not valid base64")]
    NotBase64 {
        /// The variable.
        variable: &'static str,
    },
    /// A key is not 32 bytes long.
    #[error("{variable} is {length} bytes long, not 32")]
    KeyLength {
        /// The variable.
        variable: &'static str,
        /// Its length, decoded.
        length: usize,
    },
    /// `TOKEN_CACHE_OLD_KEY` without its id.
    #[error("TOKEN_CACHE_OLD_KEY_ID must be set with TOKEN_CACHE_OLD_KEY")]
    MissingOldKeyId,
    /// `TOKEN_CACHE_PLAINTEXT` is neither `1` nor `0`.
    #[error("TOKEN_CACHE_PLAINTEXT `{0}` is not 1 or 0")]
    Plaintext(String),
    /// The cache refused its configuration, or Redis could not be reached.
    #[error("the Redis token cache (REDIS_URL) could not be set up")]
    Build(#[source] RedisCacheError),
}

impl fmt::Debug for SharedCacheError {
    // Returned from `main`, the error prints as sentences, its causes included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", error_chain(self))
    }
}

/// The Redis token cache the process's variables describe (connected), or `None` when `REDIS_URL`
/// is not set.
///
/// # Errors
///
/// A missing or malformed variable, or a cache that could not be built (Redis unreachable).
pub async fn from_env() -> Result<Option<RedisTokenCache>, SharedCacheError> {
    let Some(builder) = builder_from(|name| env::var(name).ok().filter(|v| !v.is_empty()))? else {
        return Ok(None);
    };
    builder
        .build()
        .await
        .map(Some)
        .map_err(SharedCacheError::Build)
}

/// The builder `variable` (a variable's non-empty value) describes, or `None` without `REDIS_URL`.
///
/// # Errors
///
/// A missing or malformed variable.
pub fn builder_from(
    variable: impl Fn(&str) -> Option<String>,
) -> Result<Option<RedisTokenCacheBuilder>, SharedCacheError> {
    let Some(url) = variable("REDIS_URL") else {
        return Ok(None);
    };
    let plaintext = match variable("TOKEN_CACHE_PLAINTEXT").as_deref() {
        None | Some("0") => false,
        Some("1") => true,
        Some(other) => return Err(SharedCacheError::Plaintext(other.to_owned())),
    };
    let key = |name: &'static str| -> Result<Option<[u8; 32]>, SharedCacheError> {
        let Some(text) = variable(name) else {
            return Ok(None);
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| SharedCacheError::NotBase64 { variable: name })?;
        let length = bytes.len();
        <[u8; 32]>::try_from(bytes)
            .map(Some)
            .map_err(|_| SharedCacheError::KeyLength {
                variable: name,
                length,
            })
    };
    let mut builder = RedisTokenCache::builder(url)
        .key_prefix(variable("TOKEN_CACHE_PREFIX").unwrap_or_else(|| "token-mgmt:".to_owned()));
    match key("TOKEN_CACHE_KEY")? {
        Some(current) => {
            let id = variable("TOKEN_CACHE_KEY_ID").unwrap_or_else(|| "1".to_owned());
            builder = builder.encryption_key(id, current);
        }
        None if !plaintext => return Err(SharedCacheError::MissingKey),
        None => {}
    }
    if let Some(old) = key("TOKEN_CACHE_OLD_KEY")? {
        let id = variable("TOKEN_CACHE_OLD_KEY_ID").ok_or(SharedCacheError::MissingOldKeyId)?;
        builder = builder.decryption_key(id, old);
    }
    // With a key as well, `build` refuses (`KeyAndPlaintext`): the two contradict each other.
    if plaintext {
        builder = builder.plaintext();
    }
    Ok(Some(builder))
}
