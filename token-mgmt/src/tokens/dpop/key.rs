//! Which key a token client proves possession of.

use std::fmt;

use crate::tokens::auth::LoadedKey;
use crate::tokens::{KeyError, PrivateKey, SigningAlgorithm};

/// The DPoP key of a token client: generated when the service is built (ES256 on P-256 by
/// default) or supplied as a [`PrivateKey`] (PEM or JWK, inline or in a file; ES256, ES384, EdDSA,
/// RS256 or PS256).
///
/// `Debug` shows where the key comes from, never the key.
///
/// ```
/// use token_mgmt::tokens::{DpopKey, PrivateKey, SigningAlgorithm};
///
/// let generated = DpopKey::generate(); // ES256, a new key per process
/// let eddsa = DpopKey::generate_with(SigningAlgorithm::EdDsa);
/// let supplied = DpopKey::from_key(PrivateKey::from_file("/run/secrets/dpop-key.pem"));
/// ```
#[derive(Clone)]
pub struct DpopKey {
    source: Source,
}

#[derive(Clone)]
enum Source {
    Generate(SigningAlgorithm),
    Supplied(PrivateKey),
}

impl DpopKey {
    /// A P-256 key (ES256) generated when the service is built.
    pub fn generate() -> Self {
        Self::generate_with(SigningAlgorithm::Es256)
    }

    /// A key for `algorithm` generated when the service is built (RSA keys are 2048 bits).
    pub fn generate_with(algorithm: SigningAlgorithm) -> Self {
        Self {
            source: Source::Generate(algorithm),
        }
    }

    /// A key of yours (its algorithm inferred from the key unless set on it).
    pub fn from_key(key: PrivateKey) -> Self {
        Self {
            source: Source::Supplied(key),
        }
    }

    /// Checks a supplied key (a generated one cannot be checked before it exists).
    pub(crate) fn check(&self) -> Result<(), KeyError> {
        match &self.source {
            Source::Generate(_) => Ok(()),
            Source::Supplied(key) => key.load().map(drop),
        }
    }

    /// Generates or loads the key.
    pub(crate) fn load(&self) -> Result<LoadedKey, KeyError> {
        match &self.source {
            Source::Generate(algorithm) => LoadedKey::generate(*algorithm),
            Source::Supplied(key) => key.load(),
        }
    }
}

impl Default for DpopKey {
    fn default() -> Self {
        Self::generate()
    }
}

impl fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Generate(algorithm) => f
                .debug_struct("DpopKey")
                .field("generated", &format_args!("{algorithm}"))
                .finish(),
            Source::Supplied(key) => f.debug_struct("DpopKey").field("key", key).finish(),
        }
    }
}
