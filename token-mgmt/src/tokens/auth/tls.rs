//! Mutual TLS client authentication (RFC 8705): the client certificate a token client presents.
// Without the `rustls` feature the certificate is kept in the options but never loaded: validation
// reports `CertificateError::TlsUnavailable` instead.
#![cfg_attr(not(feature = "rustls"), allow(dead_code, unused_imports))]

use std::fmt;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

/// PEM text, inline or in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pem {
    /// The PEM text itself.
    Inline(String),
    /// A file holding it (read when the options are validated and when the service is built).
    File(PathBuf),
}

impl Pem {
    fn read(&self) -> Result<Zeroizing<Vec<u8>>, CertificateError> {
        match self {
            Pem::Inline(text) => Ok(Zeroizing::new(text.as_bytes().to_vec())),
            Pem::File(path) => read_file(path),
        }
    }
}

#[derive(Clone)]
enum KeyPem {
    Inline(SecretString),
    File(PathBuf),
}

/// Why a client certificate cannot be used. Never contains key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// A certificate or key file could not be read.
    #[error("could not read {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The certificate chain holds no `CERTIFICATE`.
    #[error("the certificate chain holds no PEM certificate")]
    NoCertificate,
    /// The key holds no private key (`PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`).
    #[error("the client certificate's key holds no PEM private key")]
    NoPrivateKey,
    /// A root certificate holds no `CERTIFICATE`.
    #[error("a root certificate holds no PEM certificate")]
    NoRootCertificate,
    /// The TLS stack rejected the certificate and key: the key does not belong to the
    /// certificate, or it is of an unsupported type.
    #[error(
        "the client certificate and key were rejected (does the key belong to the certificate?)"
    )]
    Rejected {
        /// The TLS stack's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// token-mgmt was built without its `rustls` feature, so it cannot present a certificate.
    #[error("mutual TLS needs token-mgmt's `rustls` feature")]
    TlsUnavailable,
}

/// The client certificate (chain) and key a token client presents to the token endpoint
/// (`tls_client_auth`, `self_signed_tls_client_auth`), and extra roots to trust for the server.
///
/// Token requests of such a client go through an HTTP client of its own that presents the
/// certificate (a custom client given to the service builder is not used for them). `Debug` never
/// shows the key.
///
/// ```
/// use token_mgmt::tokens::{Pem, TlsClientCertificate};
///
/// let certificate = TlsClientCertificate::from_files("client.crt", "client.key")
///     .with_root_certificate(Pem::File("private-ca.crt".into()));
/// ```
#[derive(Clone)]
pub struct TlsClientCertificate {
    certificate_chain: Pem,
    key: KeyPem,
    root_certificates: Vec<Pem>,
}

impl TlsClientCertificate {
    /// The certificate chain (end-entity first) and its private key (PKCS#8, PKCS#1 or SEC1), as
    /// PEM text.
    pub fn from_pem(certificate_chain: impl Into<String>, private_key: impl Into<String>) -> Self {
        Self {
            certificate_chain: Pem::Inline(certificate_chain.into()),
            key: KeyPem::Inline(SecretString::from(private_key.into())),
            root_certificates: Vec::new(),
        }
    }

    /// The certificate chain and its private key, from PEM files.
    pub fn from_files(
        certificate_chain: impl Into<PathBuf>,
        private_key: impl Into<PathBuf>,
    ) -> Self {
        Self {
            certificate_chain: Pem::File(certificate_chain.into()),
            key: KeyPem::File(private_key.into()),
            root_certificates: Vec::new(),
        }
    }

    /// Also trusts `root` (PEM, one or more certificates) for the token endpoint's server
    /// certificate, besides the platform's roots (e.g. a private PKI's CA).
    pub fn with_root_certificate(mut self, root: Pem) -> Self {
        self.root_certificates.push(root);
        self
    }

    /// The certificate chain and key as a reqwest [`Identity`](reqwest::Identity), e.g. to present
    /// the same certificate to an API that accepts only certificate-bound access tokens.
    ///
    /// # Errors
    ///
    /// A file cannot be read, or holds no certificate or no key.
    #[cfg(feature = "rustls")]
    pub fn identity(&self) -> Result<reqwest::Identity, CertificateError> {
        let chain = self.certificate_chain.read()?;
        if CertificateDer::pem_slice_iter(&chain).next().is_none() {
            return Err(CertificateError::NoCertificate);
        }
        let key = match &self.key {
            KeyPem::Inline(pem) => Zeroizing::new(pem.expose_secret().as_bytes().to_vec()),
            KeyPem::File(path) => read_file(path)?,
        };
        if PrivateKeyDer::from_pem_slice(&key).is_err() {
            return Err(CertificateError::NoPrivateKey);
        }
        // reqwest wants the key and the certificates in one PEM buffer.
        let mut both = Zeroizing::new(Vec::with_capacity(key.len() + chain.len() + 1));
        both.extend_from_slice(&key);
        both.push(b'\n');
        both.extend_from_slice(&chain);
        reqwest::Identity::from_pem(&both).map_err(|e| CertificateError::Rejected {
            source: Box::new(e),
        })
    }

    /// The HTTP client for this token client's token requests: presents the certificate, follows
    /// no redirects (like the default token client), trusts the extra roots. Building it checks
    /// that the key belongs to the certificate.
    #[cfg(feature = "rustls")]
    pub(crate) fn http_client(&self) -> Result<reqwest::Client, CertificateError> {
        let mut builder = crate::tls::client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("token-mgmt/", env!("CARGO_PKG_VERSION")))
            .identity(self.identity()?);
        for root in &self.root_certificates {
            let pem = root.read()?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|roots| !roots.is_empty())
                .ok_or(CertificateError::NoRootCertificate)?;
            for certificate in roots {
                builder = builder.add_root_certificate(certificate);
            }
        }
        builder.build().map_err(|e| CertificateError::Rejected {
            source: Box::new(e),
        })
    }

    #[cfg(not(feature = "rustls"))]
    pub(crate) fn http_client(&self) -> Result<reqwest::Client, CertificateError> {
        Err(CertificateError::TlsUnavailable)
    }
}

impl fmt::Debug for TlsClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key: &dyn fmt::Debug = match &self.key {
            KeyPem::Inline(_) => &"inline PEM (redacted)",
            KeyPem::File(path) => path,
        };
        f.debug_struct("TlsClientCertificate")
            .field("certificate_chain", &self.certificate_chain)
            .field("key", key)
            .field("root_certificates", &self.root_certificates)
            .finish()
    }
}

fn read_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, CertificateError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|source| CertificateError::Read {
            path: path.to_owned(),
            source,
        })
}
