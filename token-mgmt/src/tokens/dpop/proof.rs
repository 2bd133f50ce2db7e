//! DPoP proofs (RFC 9449 section 4): a JWT signed per request with the client's key.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue};
use serde::Serialize;
use url::{Position, Url};

use super::nonce::NonceStore;
use crate::tokens::KeyError;
use crate::tokens::auth::LoadedKey;

/// A DPoP proof could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DpopError {
    /// The key could not be generated or loaded when the service was built.
    #[error("the DPoP key is unavailable")]
    Key(#[source] KeyError),
    /// The system's random generator or the signature failed.
    #[error("signing the DPoP proof failed")]
    Signing,
}

/// A token client's DPoP key and what it proves with: the pre-serialised protected header, the
/// key's thumbprint and the nonces servers sent.
pub(crate) struct DpopProver {
    key: LoadedKey,
    /// `base64url({"typ":"dpop+jwt","alg":..,"jwk":..}) + "."`: the same for every proof.
    header: String,
    thumbprint: String,
    nonces: NonceStore,
    bearer_logged: AtomicBool,
}

/// The claims of one proof.
#[derive(Serialize)]
struct Claims<'a> {
    jti: &'a str,
    htm: &'a str,
    htu: &'a str,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ath: Option<String>,
}

impl DpopProver {
    pub(crate) fn new(key: LoadedKey) -> Self {
        let jwk = key.public_jwk();
        let thumbprint = URL_SAFE_NO_PAD.encode(digest(&SHA256, jwk.as_bytes()));
        let header = format!(
            r#"{{"typ":"dpop+jwt","alg":"{}","jwk":{jwk}}}"#,
            key.algorithm.as_str()
        );
        let mut header = URL_SAFE_NO_PAD.encode(header);
        header.push('.');
        Self {
            key,
            header,
            thumbprint,
            nonces: NonceStore::default(),
            bearer_logged: AtomicBool::new(false),
        }
    }

    /// The proofs' `alg` (`ES256`, ...).
    pub(crate) fn algorithm(&self) -> &'static str {
        self.key.algorithm.as_str()
    }

    /// The key's JWK SHA-256 thumbprint (RFC 7638), base64url: what a server binds tokens to
    /// (`cnf.jkt`).
    pub(crate) fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// A new proof for a `method` request to `url`, with the nonce `url`'s origin last sent and,
    /// for an API request, the hash of `access_token`.
    pub(crate) fn proof(
        &self,
        method: &str,
        url: &Url,
        access_token: Option<&str>,
    ) -> Result<HeaderValue, DpopError> {
        let nonce = self.nonces.get(url);
        self.proof_at(
            method,
            url,
            access_token,
            nonce.as_deref(),
            SystemTime::now(),
        )
    }

    fn proof_at(
        &self,
        method: &str,
        url: &Url,
        access_token: Option<&str>,
        nonce: Option<&str>,
        now: SystemTime,
    ) -> Result<HeaderValue, DpopError> {
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).map_err(|_| DpopError::Signing)?;
        let jti = URL_SAFE_NO_PAD.encode(jti);
        let claims = Claims {
            jti: &jti,
            htm: method,
            htu: &htu(url),
            iat: now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            nonce,
            ath: access_token.map(ath),
        };
        let claims = serde_json::to_vec(&claims).map_err(|_| DpopError::Signing)?;
        let mut jwt = String::with_capacity(self.header.len() + claims.len() * 4 / 3 + 400);
        jwt.push_str(&self.header);
        URL_SAFE_NO_PAD.encode_string(claims, &mut jwt);
        let signature = self
            .key
            .sign(jwt.as_bytes())
            .map_err(|_| DpopError::Signing)?;
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut jwt);
        HeaderValue::try_from(jwt).map_err(|_| DpopError::Signing)
    }

    /// Remembers the `DPoP-Nonce` of a response from `url`; returns whether it carried one.
    pub(crate) fn remember_nonce(&self, url: &Url, headers: &HeaderMap) -> bool {
        self.nonces.remember(url, headers)
    }

    /// The server issued a Bearer token although a proof was sent: said once per client.
    pub(crate) fn bearer_issued(&self, client: &str) {
        if !self.bearer_logged.swap(true, Ordering::Relaxed) {
            tracing::info!(
                client,
                "the token endpoint issued a Bearer token to a DPoP client; sending it as Bearer"
            );
        }
    }
}

impl fmt::Debug for DpopProver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopProver")
            .field("algorithm", &self.key.algorithm)
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

/// `htu` (RFC 9449 section 4.2): the URL without query and fragment (nor user info). The `url`
/// crate already lower-cases the scheme and host and drops a default port.
pub(crate) fn htu(url: &Url) -> std::borrow::Cow<'_, str> {
    if url.username().is_empty() && url.password().is_none() {
        std::borrow::Cow::Borrowed(&url[..Position::AfterPath])
    } else {
        let mut url = url.clone();
        let _ = url.set_username("");
        let _ = url.set_password(None);
        std::borrow::Cow::Owned(url[..Position::AfterPath].to_owned())
    }
}

/// `ath` (RFC 9449 section 4.2): base64url of the SHA-256 of the access token.
pub(crate) fn ath(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, access_token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256,
        RSA_PSS_2048_8192_SHA256, RsaPublicKeyComponents, UnparsedPublicKey,
    };
    use serde_json::Value;

    use super::*;
    use crate::tokens::SigningAlgorithm;

    fn b64(text: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(text).unwrap()
    }

    /// Checks the proof's signature with the public key of its own header (as a server does) and
    /// returns its header and claims.
    fn verify(proof: &HeaderValue) -> (Value, Value) {
        let proof = proof.to_str().unwrap();
        let (input, signature) = proof.rsplit_once('.').unwrap();
        let (header, claims) = input.split_once('.').unwrap();
        let header: Value = serde_json::from_slice(&b64(header)).unwrap();
        let claims: Value = serde_json::from_slice(&b64(claims)).unwrap();
        let jwk = &header["jwk"];
        let member = |name: &str| b64(jwk[name].as_str().unwrap());
        let signature = b64(signature);
        let input = input.as_bytes();
        match header["alg"].as_str().unwrap() {
            alg @ ("ES256" | "ES384") => {
                let mut point = vec![4];
                point.extend(member("x"));
                point.extend(member("y"));
                let algorithm = if alg == "ES256" {
                    &ECDSA_P256_SHA256_FIXED
                } else {
                    &ECDSA_P384_SHA384_FIXED
                };
                UnparsedPublicKey::new(algorithm, point)
                    .verify(input, &signature)
                    .unwrap();
            }
            "EdDSA" => UnparsedPublicKey::new(&ED25519, member("x"))
                .verify(input, &signature)
                .unwrap(),
            alg @ ("RS256" | "PS256") => {
                let algorithm = if alg == "RS256" {
                    &RSA_PKCS1_2048_8192_SHA256
                } else {
                    &RSA_PSS_2048_8192_SHA256
                };
                RsaPublicKeyComponents {
                    n: member("n"),
                    e: member("e"),
                }
                .verify(algorithm, input, &signature)
                .unwrap();
            }
            other => panic!("unexpected alg {other}"),
        }
        assert!(jwk.get("d").is_none(), "no private member in the header");
        (header, claims)
    }

    fn prover(algorithm: SigningAlgorithm) -> DpopProver {
        DpopProver::new(LoadedKey::generate(algorithm).unwrap())
    }

    #[test]
    fn token_request_proofs_verify_with_every_algorithm() {
        use SigningAlgorithm as A;
        let url: Url = "https://idp.example.com/connect/token?x=1#f"
            .parse()
            .unwrap();
        for algorithm in [A::Es256, A::Es384, A::EdDsa, A::Rs256, A::Ps256] {
            let prover = prover(algorithm);
            let now = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
            let proof = prover.proof_at("POST", &url, None, None, now).unwrap();
            let (header, claims) = verify(&proof);
            assert_eq!(header["typ"], "dpop+jwt");
            assert_eq!(header["alg"], algorithm.as_str());
            assert_eq!(claims["htm"], "POST");
            assert_eq!(claims["htu"], "https://idp.example.com/connect/token");
            assert_eq!(claims["iat"], 1_700_000_000);
            assert!(claims.get("ath").is_none());
            assert!(claims.get("nonce").is_none());
            assert_eq!(claims["jti"].as_str().unwrap().len(), 22);
            // The thumbprint is that of the header's JWK (RFC 7638: required members, sorted).
            let jwk = &header["jwk"];
            let canonical = match jwk["kty"].as_str().unwrap() {
                "EC" => format!(
                    r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
                    jwk["crv"], jwk["x"], jwk["y"]
                ),
                "RSA" => format!(r#"{{"e":{},"kty":"RSA","n":{}}}"#, jwk["e"], jwk["n"]),
                _ => format!(r#"{{"crv":{},"kty":"OKP","x":{}}}"#, jwk["crv"], jwk["x"]),
            };
            assert_eq!(
                prover.thumbprint(),
                URL_SAFE_NO_PAD.encode(digest(&SHA256, canonical.as_bytes()))
            );
        }
    }

    #[test]
    fn api_request_proofs_carry_ath_and_the_origins_nonce() {
        let prover = prover(SigningAlgorithm::Es256);
        let url: Url = "https://api.example.com/v1/items?page=2".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("DPoP-Nonce", HeaderValue::from_static("server-nonce-1"));
        assert!(prover.remember_nonce(&url, &headers));
        let proof = prover.proof("GET", &url, Some("token-abc")).unwrap();
        let (_, claims) = verify(&proof);
        assert_eq!(claims["htm"], "GET");
        assert_eq!(claims["htu"], "https://api.example.com/v1/items");
        assert_eq!(claims["nonce"], "server-nonce-1");
        assert_eq!(claims["ath"], ath("token-abc"));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(claims["iat"].as_u64().unwrap().abs_diff(now) <= 5);
        let other: Url = "https://other.example.com/".parse().unwrap();
        let (_, claims) = verify(&prover.proof("GET", &other, Some("t")).unwrap());
        assert!(claims.get("nonce").is_none(), "nonces are per origin");
    }

    #[test]
    fn ath_of_a_known_token() {
        // SHA-256("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"), RFC 9449 section 7.1's token.
        assert_eq!(
            ath("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
            "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
        );
    }

    #[test]
    fn htu_drops_query_fragment_user_info_default_port_and_host_case() {
        let htu = |s: &str| htu(&s.parse().unwrap()).into_owned();
        assert_eq!(
            htu("HTTPS://API.Example.COM:443/a/b?c=d#e"),
            "https://api.example.com/a/b"
        );
        assert_eq!(htu("http://Host:80/x"), "http://host/x");
        assert_eq!(htu("http://host:8080/x?"), "http://host:8080/x");
        assert_eq!(htu("https://user:pw@host/p"), "https://host/p");
        assert_eq!(htu("https://host"), "https://host/");
    }

    #[test]
    fn every_proof_has_a_new_jti() {
        let prover = prover(SigningAlgorithm::Es256);
        let url: Url = "https://api.example.com/".parse().unwrap();
        let jtis: std::collections::HashSet<String> = (0..200)
            .map(|_| {
                let (_, claims) = verify(&prover.proof("GET", &url, Some("t")).unwrap());
                claims["jti"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(jtis.len(), 200);
    }

    #[test]
    fn debug_shows_no_key() {
        let prover = prover(SigningAlgorithm::Es256);
        let shown = format!("{prover:?}");
        assert!(shown.contains(prover.thumbprint()));
        assert!(!shown.contains("\"d\""));
    }
}
