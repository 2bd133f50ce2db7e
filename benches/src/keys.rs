//! Private keys for the client-assertion figures, generated per process with aws-lc-rs (the crypto
//! backend token-mgmt uses) and handed over as PKCS#8 PEM, the form users load.

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
};
use base64::Engine as _;
use token_mgmt::tokens::SigningAlgorithm;

use crate::BoxError;

/// The `client_secret_jwt` secret (HS256 needs at least 32 bytes).
pub const HMAC_SECRET: &str = "bench-hmac-secret-0123456789abcdef0123456789";

/// A generated key and the algorithm it signs with.
#[derive(Clone)]
pub struct BenchKey {
    /// The JWS algorithm name (`RS256`, ...).
    pub label: &'static str,
    /// The algorithm to sign with.
    pub algorithm: SigningAlgorithm,
    /// PKCS#8 PEM.
    pub pem: String,
}

impl std::fmt::Debug for BenchKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchKey")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

fn pem(der: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

/// RS256 and PS256 (one 2048-bit RSA key), ES256, ES384 and EdDSA keys.
pub fn generate() -> Result<Vec<BenchKey>, BoxError> {
    let rng = SystemRandom::new();
    let rsa = aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048)
        .map_err(|_| "RSA key generation failed")?;
    let rsa = pem(rsa
        .as_der()
        .map_err(|_| "RSA key encoding failed")?
        .as_ref());
    let p256 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| "P-256 key generation failed")?;
    let p384 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng)
        .map_err(|_| "P-384 key generation failed")?;
    let ed = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| "Ed25519 key generation failed")?;
    Ok(vec![
        BenchKey {
            label: "RS256",
            algorithm: SigningAlgorithm::Rs256,
            pem: rsa.clone(),
        },
        BenchKey {
            label: "PS256",
            algorithm: SigningAlgorithm::Ps256,
            pem: rsa,
        },
        BenchKey {
            label: "ES256",
            algorithm: SigningAlgorithm::Es256,
            pem: pem(p256.as_ref()),
        },
        BenchKey {
            label: "ES384",
            algorithm: SigningAlgorithm::Es384,
            pem: pem(p384.as_ref()),
        },
        BenchKey {
            label: "EdDSA",
            algorithm: SigningAlgorithm::EdDsa,
            pem: pem(ed.as_ref()),
        },
    ])
}
