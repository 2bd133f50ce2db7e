//! The service's DPoP surface: proofs for API requests and the nonces their servers send.

use http::{HeaderMap, HeaderValue, Method};
use url::Url;

use crate::tokens::{AccessTokenManagementService, ClientAccessToken, TokenError};

impl AccessTokenManagementService {
    /// A new DPoP proof for a `method` request to `url` authorized with `token` (`htm`, `htu`
    /// without query and fragment, `ath` of the token, `iat`, a unique `jti`, and the nonce `url`'s
    /// origin last sent), or `None` when `token` is not DPoP-bound or `client_name` has no DPoP
    /// key. Set it as the `DPoP` header, with `Authorization: DPoP <token>`
    /// ([`ClientAccessToken::authorization_header`]). The
    /// [`ClientAccessTokenHandler`](crate::tokens::ClientAccessTokenHandler) does this itself.
    ///
    /// # Errors
    ///
    /// [`TokenError::UnknownClient`], or [`TokenError::DpopProof`] when the key is unavailable or
    /// signing failed.
    pub fn dpop_proof(
        &self,
        client_name: &str,
        method: &Method,
        url: &Url,
        token: &ClientAccessToken,
    ) -> Result<Option<HeaderValue>, TokenError> {
        let state = self.client_state(client_name)?;
        let endpoint = &state.endpoint;
        let Some(prover) = endpoint.dpop()?.filter(|_| token.is_dpop()) else {
            return Ok(None);
        };
        prover
            .proof(method.as_str(), url, Some(token.access_token()))
            .map(Some)
            .map_err(|error| endpoint.dpop_error(error.into()))
    }

    /// Remembers the `DPoP-Nonce` a response from `url` carries (if any) for the next proofs of
    /// `client_name` to `url`'s origin; returns whether the response carried a valid one. Nothing
    /// happens for a client without DPoP.
    ///
    /// # Errors
    ///
    /// [`TokenError::UnknownClient`].
    pub fn remember_dpop_nonce(
        &self,
        client_name: &str,
        url: &Url,
        headers: &HeaderMap,
    ) -> Result<bool, TokenError> {
        let state = self.client_state(client_name)?;
        Ok(match &state.endpoint.dpop {
            Some(Ok(prover)) => prover.remember_nonce(url, headers),
            _ => false,
        })
    }

    /// The JWK SHA-256 thumbprint (RFC 7638, base64url) of `client_name`'s DPoP key: what a server
    /// binds its tokens to (`cnf.jkt`, or a client's registered `dpop_jkt`). `None` without DPoP.
    ///
    /// # Errors
    ///
    /// [`TokenError::UnknownClient`], or [`TokenError::DpopProof`] when the key is unavailable.
    pub fn dpop_thumbprint(&self, client_name: &str) -> Result<Option<String>, TokenError> {
        Ok(self
            .client_state(client_name)?
            .endpoint
            .dpop()?
            .map(|prover| prover.thumbprint().to_owned()))
    }
}
