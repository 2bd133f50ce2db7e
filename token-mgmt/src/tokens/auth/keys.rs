//! Private keys for `private_key_jwt`: loading (PEM or JWK, inline or from a file), the JWS algorithm
//! they sign with, and signing.
//!
//! Parsing and signing use `aws-lc-rs`, the crypto backend reqwest's rustls already builds. Its key
//! objects live in AWS-LC, which wipes key material when it frees them; every copy of the key
//! text or DER this module makes is held in [`Zeroizing`] so it is wiped too.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPairComponents, PublicKeyComponents};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair as _, RSA_PKCS1_SHA256, RSA_PSS_SHA256, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use zeroize::{Zeroize, Zeroizing};

/// A JWS algorithm for `private_key_jwt` assertions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SigningAlgorithm {
    /// `RS256`: RSASSA-PKCS1-v1_5 with SHA-256 (RSA keys; the default for them).
    Rs256,
    /// `PS256`: RSASSA-PSS with SHA-256 (RSA keys).
    Ps256,
    /// `ES256`: ECDSA on P-256 with SHA-256.
    Es256,
    /// `ES384`: ECDSA on P-384 with SHA-384.
    Es384,
    /// `EdDSA`: Ed25519.
    EdDsa,
}

impl SigningAlgorithm {
    /// The JWS `alg` name (`RS256`, `PS256`, `ES256`, `ES384`, `EdDSA`).
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::Rs256 => "RS256",
            SigningAlgorithm::Ps256 => "PS256",
            SigningAlgorithm::Es256 => "ES256",
            SigningAlgorithm::Es384 => "ES384",
            SigningAlgorithm::EdDsa => "EdDSA",
        }
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SigningAlgorithm {
    type Err = KeyError;

    /// Parses a JWS `alg` name (`Ed25519` is accepted for `EdDSA`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "RS256" => Ok(SigningAlgorithm::Rs256),
            "PS256" => Ok(SigningAlgorithm::Ps256),
            "ES256" => Ok(SigningAlgorithm::Es256),
            "ES384" => Ok(SigningAlgorithm::Es384),
            "EdDSA" | "Ed25519" => Ok(SigningAlgorithm::EdDsa),
            other => Err(KeyError::UnsupportedAlgorithm {
                algorithm: other.chars().take(16).collect(),
            }),
        }
    }
}

/// Why a private key could not be used. Never contains key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read.
    #[error("could not read the key file {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The PEM text holds no private key (`PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`).
    #[error("the PEM text holds no readable private key")]
    NoPrivateKey,
    /// The JWK is not a private key this library can use.
    #[error("the JWK is not a usable private key: {reason}")]
    InvalidJwk {
        /// What is wrong (never a value from the JWK).
        reason: &'static str,
    },
    /// A new key could not be generated.
    #[error("could not generate a {algorithm} key")]
    Generate {
        /// The algorithm the key was for.
        algorithm: SigningAlgorithm,
    },
    /// The key is not an RSA, P-256, P-384 or Ed25519 private key, or its encoding is invalid.
    #[error("the key is not a valid RSA (2048 bits or more), P-256, P-384 or Ed25519 private key")]
    Unsupported,
    /// The algorithm named is not one of `RS256`, `PS256`, `ES256`, `ES384`, `EdDSA`.
    #[error(
        "unsupported signing algorithm `{algorithm}` (use RS256, PS256, ES256, ES384 or EdDSA)"
    )]
    UnsupportedAlgorithm {
        /// The name given (cut to 16 characters).
        algorithm: String,
    },
    /// The algorithm set does not fit the key.
    #[error("algorithm {algorithm} cannot be used with a {key_type} key")]
    AlgorithmMismatch {
        /// The algorithm set.
        algorithm: SigningAlgorithm,
        /// The key's type (`RSA`, `P-256`, `P-384`, `Ed25519`).
        key_type: &'static str,
    },
}

/// Where a private key comes from.
#[derive(Clone)]
enum KeySource {
    Pem(SecretString),
    Jwk(SecretString),
    /// PEM or JWK, told apart by the content.
    File(PathBuf),
}

/// A private key for `private_key_jwt`: PEM (PKCS#8, PKCS#1 RSA or SEC1 EC) or a JWK, inline or in a
/// file; with an optional algorithm (inferred from the key otherwise: RSA → `RS256`, P-256 →
/// `ES256`, P-384 → `ES384`, Ed25519 → `EdDSA`, or the JWK's `alg`) and key id (the JWK's `kid`
/// otherwise).
///
/// `Debug` shows where the key comes from, never the key.
///
/// ```
/// use token_mgmt::tokens::{PrivateKey, SigningAlgorithm};
///
/// let key = PrivateKey::from_file("/etc/worker/client-key.pem")
///     .with_algorithm(SigningAlgorithm::Ps256)
///     .with_key_id("worker-2026");
/// ```
#[derive(Clone)]
pub struct PrivateKey {
    source: KeySource,
    algorithm: Option<SigningAlgorithm>,
    key_id: Option<String>,
}

impl PrivateKey {
    /// A PEM private key given inline.
    pub fn from_pem(pem: impl Into<String>) -> Self {
        Self::with_source(KeySource::Pem(SecretString::from(pem.into())))
    }

    /// A private JWK (JSON) given inline.
    pub fn from_jwk(jwk: impl Into<String>) -> Self {
        Self::with_source(KeySource::Jwk(SecretString::from(jwk.into())))
    }

    /// A PEM or JWK private key read from `path` (when the options are validated and when the
    /// service is built).
    pub fn from_file(path: impl Into<PathBuf>) -> Self {
        Self::with_source(KeySource::File(path.into()))
    }

    fn with_source(source: KeySource) -> Self {
        Self {
            source,
            algorithm: None,
            key_id: None,
        }
    }

    /// Signs with `algorithm` instead of the one inferred from the key.
    pub fn with_algorithm(mut self, algorithm: SigningAlgorithm) -> Self {
        self.algorithm = Some(algorithm);
        self
    }

    /// Sends `key_id` as the JWS header `kid`.
    pub fn with_key_id(mut self, key_id: impl Into<String>) -> Self {
        self.key_id = Some(key_id.into());
        self
    }

    /// Loads and checks the key.
    pub(crate) fn load(&self) -> Result<LoadedKey, KeyError> {
        let parsed = match &self.source {
            KeySource::Pem(pem) => parse_pem(pem.expose_secret().as_bytes())?,
            KeySource::Jwk(jwk) => parse_jwk(jwk.expose_secret())?,
            KeySource::File(path) => {
                let text = read_file(path)?;
                if text.trim_ascii_start().starts_with(b"{") {
                    let text = std::str::from_utf8(&text).map_err(|_| KeyError::InvalidJwk {
                        reason: "the JSON is not UTF-8",
                    })?;
                    parse_jwk(text)?
                } else {
                    parse_pem(&text)?
                }
            }
        };
        let algorithm = match self.algorithm.or(parsed.algorithm) {
            Some(algorithm) => algorithm,
            None => parsed.key.default_algorithm(),
        };
        let key = parsed.key.for_algorithm(algorithm)?;
        Ok(LoadedKey {
            key,
            algorithm,
            key_id: self.key_id.clone().or(parsed.key_id),
        })
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("PrivateKey");
        match &self.source {
            KeySource::Pem(_) => s.field("source", &"inline PEM (redacted)"),
            KeySource::Jwk(_) => s.field("source", &"inline JWK (redacted)"),
            KeySource::File(path) => s.field("file", path),
        };
        s.field("algorithm", &self.algorithm)
            .field("key_id", &self.key_id)
            .finish()
    }
}

fn read_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })
}

/// A parsed key before its algorithm is settled.
struct Parsed {
    key: AnyKey,
    algorithm: Option<SigningAlgorithm>,
    key_id: Option<String>,
}

enum AnyKey {
    Rsa(RsaKeyPair),
    P256(EcdsaKeyPair),
    P384(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl AnyKey {
    fn key_type(&self) -> &'static str {
        match self {
            AnyKey::Rsa(_) => "RSA",
            AnyKey::P256(_) => "P-256",
            AnyKey::P384(_) => "P-384",
            AnyKey::Ed25519(_) => "Ed25519",
        }
    }

    fn default_algorithm(&self) -> SigningAlgorithm {
        match self {
            AnyKey::Rsa(_) => SigningAlgorithm::Rs256,
            AnyKey::P256(_) => SigningAlgorithm::Es256,
            AnyKey::P384(_) => SigningAlgorithm::Es384,
            AnyKey::Ed25519(_) => SigningAlgorithm::EdDsa,
        }
    }

    fn for_algorithm(self, algorithm: SigningAlgorithm) -> Result<SigningKey, KeyError> {
        use SigningAlgorithm as A;
        match (self, algorithm) {
            (AnyKey::Rsa(key), A::Rs256 | A::Ps256) => Ok(SigningKey::Rsa(key)),
            (AnyKey::P256(key), A::Es256) | (AnyKey::P384(key), A::Es384) => {
                Ok(SigningKey::Ecdsa(key))
            }
            (AnyKey::Ed25519(key), A::EdDsa) => Ok(SigningKey::Ed25519(key)),
            (key, algorithm) => Err(KeyError::AlgorithmMismatch {
                algorithm,
                key_type: key.key_type(),
            }),
        }
    }
}

fn parse_pem(pem: &[u8]) -> Result<Parsed, KeyError> {
    let mut der =
        Zeroizing::new(PrivateKeyDer::from_pem_slice(pem).map_err(|_| KeyError::NoPrivateKey)?);
    let key = match &*der {
        PrivateKeyDer::Pkcs1(pkcs1) => RsaKeyPair::from_der(pkcs1.secret_pkcs1_der())
            .map(AnyKey::Rsa)
            .map_err(|_| KeyError::Unsupported),
        PrivateKeyDer::Sec1(sec1) => ec_from_der(sec1.secret_sec1_der()),
        PrivateKeyDer::Pkcs8(pkcs8) => {
            let bytes = pkcs8.secret_pkcs8_der();
            RsaKeyPair::from_pkcs8(bytes)
                .map(AnyKey::Rsa)
                .or_else(|_| ec_from_der(bytes))
                .or_else(|_| {
                    Ed25519KeyPair::from_pkcs8_maybe_unchecked(bytes)
                        .map(AnyKey::Ed25519)
                        .map_err(|_| KeyError::Unsupported)
                })
        }
        _ => Err(KeyError::Unsupported),
    };
    der.zeroize();
    Ok(Parsed {
        key: key?,
        algorithm: None,
        key_id: None,
    })
}

/// SEC1 or PKCS#8 EC keys, on P-256 or P-384.
fn ec_from_der(der: &[u8]) -> Result<AnyKey, KeyError> {
    EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
        .map(AnyKey::P256)
        .or_else(|_| {
            EcdsaKeyPair::from_private_key_der(&ECDSA_P384_SHA384_FIXED_SIGNING, der)
                .map(AnyKey::P384)
        })
        .map_err(|_| KeyError::Unsupported)
}

/// The members of a private JWK (RFC 7517, RFC 7518 section 6, RFC 8037). Private members are wiped
/// on drop.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    crv: Option<String>,
    alg: Option<String>,
    kid: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
    d: Option<String>,
    p: Option<String>,
    q: Option<String>,
    dp: Option<String>,
    dq: Option<String>,
    qi: Option<String>,
}

impl Drop for Jwk {
    fn drop(&mut self) {
        for private in [
            &mut self.d,
            &mut self.p,
            &mut self.q,
            &mut self.dp,
            &mut self.dq,
            &mut self.qi,
        ] {
            private.zeroize();
        }
    }
}

impl Jwk {
    /// A base64url member, decoded; `Err` names the member missing or malformed.
    fn member(
        &self,
        value: &Option<String>,
        missing: &'static str,
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let value = value
            .as_deref()
            .ok_or(KeyError::InvalidJwk { reason: missing })?;
        URL_SAFE_NO_PAD
            .decode(value.trim_end_matches('='))
            .map(Zeroizing::new)
            .map_err(|_| KeyError::InvalidJwk {
                reason: "a member is not base64url",
            })
    }
}

fn parse_jwk(text: &str) -> Result<Parsed, KeyError> {
    let jwk: Jwk = serde_json::from_str(text).map_err(|_| KeyError::InvalidJwk {
        reason: "it is not a JSON object with a string `kty`",
    })?;
    let key = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("RSA", _) => {
            let d = jwk.member(&jwk.d, "it has no private member `d` (a public key?)")?;
            let components = KeyPairComponents {
                public_key: PublicKeyComponents {
                    n: jwk.member(&jwk.n, "the RSA member `n` is missing")?,
                    e: jwk.member(&jwk.e, "the RSA member `e` is missing")?,
                },
                d,
                p: jwk.member(&jwk.p, "the RSA member `p` is missing")?,
                q: jwk.member(&jwk.q, "the RSA member `q` is missing")?,
                dP: jwk.member(&jwk.dp, "the RSA member `dp` is missing")?,
                dQ: jwk.member(&jwk.dq, "the RSA member `dq` is missing")?,
                qInv: jwk.member(&jwk.qi, "the RSA member `qi` is missing")?,
            };
            RsaKeyPair::from_components(&components)
                .map(AnyKey::Rsa)
                .map_err(|_| KeyError::Unsupported)?
        }
        ("EC", Some(curve @ ("P-256" | "P-384"))) => {
            let d = jwk.member(&jwk.d, "it has no private member `d` (a public key?)")?;
            let mut public = vec![0x04];
            public.extend_from_slice(&jwk.member(&jwk.x, "the EC member `x` is missing")?);
            public.extend_from_slice(&jwk.member(&jwk.y, "the EC member `y` is missing")?);
            let key = if curve == "P-256" {
                EcdsaKeyPair::from_private_key_and_public_key(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &d,
                    &public,
                )
                .map(AnyKey::P256)
            } else {
                EcdsaKeyPair::from_private_key_and_public_key(
                    &ECDSA_P384_SHA384_FIXED_SIGNING,
                    &d,
                    &public,
                )
                .map(AnyKey::P384)
            };
            key.map_err(|_| KeyError::Unsupported)?
        }
        ("OKP", Some("Ed25519")) => {
            let d = jwk.member(&jwk.d, "it has no private member `d` (a public key?)")?;
            let x = jwk.member(&jwk.x, "the OKP member `x` is missing")?;
            Ed25519KeyPair::from_seed_and_public_key(&d, &x)
                .map(AnyKey::Ed25519)
                .map_err(|_| KeyError::Unsupported)?
        }
        _ => return Err(KeyError::Unsupported),
    };
    let algorithm = jwk.alg.as_deref().map(str::parse).transpose()?;
    Ok(Parsed {
        key,
        algorithm,
        key_id: jwk.kid.clone(),
    })
}

/// A key bound to the algorithm it signs with.
enum SigningKey {
    Rsa(RsaKeyPair),
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A loaded, checked key: what the built-in signer signs with.
pub(crate) struct LoadedKey {
    key: SigningKey,
    pub(crate) algorithm: SigningAlgorithm,
    pub(crate) key_id: Option<String>,
}

impl LoadedKey {
    /// A new random key for `algorithm` (RSA keys are 2048 bits).
    pub(crate) fn generate(algorithm: SigningAlgorithm) -> Result<Self, KeyError> {
        use SigningAlgorithm as A;
        let key = match algorithm {
            A::Rs256 | A::Ps256 => {
                RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map(SigningKey::Rsa)
            }
            A::Es256 => {
                EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map(SigningKey::Ecdsa)
            }
            A::Es384 => {
                EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).map(SigningKey::Ecdsa)
            }
            A::EdDsa => Ed25519KeyPair::generate().map(SigningKey::Ed25519),
        };
        Ok(Self {
            key: key.map_err(|_| KeyError::Generate { algorithm })?,
            algorithm,
            key_id: None,
        })
    }

    /// The public key as a JWK with only the members RFC 7638 section 3.2 requires, in
    /// lexicographic order and without whitespace: the input of the JWK thumbprint, and a valid
    /// public JWK to send.
    pub(crate) fn public_jwk(&self) -> String {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        match &self.key {
            SigningKey::Rsa(key) => {
                let public = key.public_key();
                format!(
                    r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                    b64(public.exponent().big_endian_without_leading_zero()),
                    b64(public.modulus().big_endian_without_leading_zero()),
                )
            }
            SigningKey::Ecdsa(key) => {
                // An uncompressed point: 0x04, then x and y of equal length.
                let point = &key.public_key().as_ref()[1..];
                let (x, y) = point.split_at(point.len() / 2);
                let curve = if self.algorithm == SigningAlgorithm::Es384 {
                    "P-384"
                } else {
                    "P-256"
                };
                format!(
                    r#"{{"crv":"{curve}","kty":"EC","x":"{}","y":"{}"}}"#,
                    b64(x),
                    b64(y)
                )
            }
            SigningKey::Ed25519(key) => format!(
                r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                b64(key.public_key().as_ref())
            ),
        }
    }

    /// The signature of `message` (JWS encoding: fixed-size `r || s` for ECDSA).
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, aws_lc_rs::error::Unspecified> {
        let rng = SystemRandom::new();
        match &self.key {
            SigningKey::Rsa(key) => {
                let padding = if self.algorithm == SigningAlgorithm::Ps256 {
                    &RSA_PSS_SHA256
                } else {
                    &RSA_PKCS1_SHA256
                };
                let mut signature = vec![0; key.public_modulus_len()];
                key.sign(padding, &rng, message, &mut signature)?;
                Ok(signature)
            }
            SigningKey::Ecdsa(key) => Ok(key.sign(&rng, message)?.as_ref().to_vec()),
            SigningKey::Ed25519(key) => Ok(key.sign(message).as_ref().to_vec()),
        }
    }
}
