//! Baselines every ratio is measured against: plain reqwest clients sending a fixed
//! `Authorization` header, one raw token request, and bare structures for the scale figures.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderValue, header::AUTHORIZATION};
use url::Url;

use crate::cache::{BareCache, BareToken};
use crate::load::{RequestFn, request_fn};
use crate::servers::Servers;
use crate::{BoxError, CLIENT_SECRET};

fn fixed_authorization() -> HeaderValue {
    let mut value =
        HeaderValue::try_from(format!("Bearer {}", Servers::FIXED_TOKEN)).expect("ascii token");
    value.set_sensitive(true);
    value
}

/// A plain `reqwest` 0.13 client (the version token-mgmt uses) that inserts a precomputed,
/// fixed `Authorization` header into each `GET url` and reads the body.
pub fn reqwest_fixed_header(url: &Url) -> RequestFn {
    let client = reqwest::Client::new();
    let authorization = fixed_authorization();
    let url = url.clone();
    request_fn(move || {
        let request = client
            .get(url.clone())
            .header(AUTHORIZATION, authorization.clone());
        async move {
            request.send().await?.error_for_status()?.bytes().await?;
            Ok(())
        }
    })
}

/// The same with `reqwest` 0.12, the version the peers are built on (`middle` sends through
/// it), so a peer's ratio can be read apart from the HTTP client version.
pub fn reqwest012_fixed_header(url: &Url) -> RequestFn {
    let client = reqwest012::Client::new();
    let authorization = fixed_authorization();
    let url = url.clone();
    request_fn(move || {
        let request = client
            .get(url.clone())
            .header(AUTHORIZATION, authorization.clone());
        async move {
            request.send().await?.error_for_status()?.bytes().await?;
            Ok(())
        }
    })
}

/// One client-credentials token request with `reqwest` 0.13 (`client_secret_post`), its body
/// read: the floor any token library pays for a cold token.
pub async fn raw_token_request(
    client: &reqwest::Client,
    token_url: &Url,
    client_id: &str,
) -> Result<(), BoxError> {
    client
        .post(token_url.clone())
        .header(http::header::ACCEPT, "application/json")
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", CLIENT_SECRET),
            ("scope", "api"),
        ])
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    Ok(())
}

/// The least a token client registration holds.
#[derive(Clone, Debug)]
pub struct BareClientOptions {
    /// Token endpoint.
    pub address: Url,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: String,
    /// Requested scope.
    pub scope: Option<String>,
}

/// The build-time baseline: `names.len()` registrations in a `HashMap` by name.
pub fn bare_client_registry(
    token_url: &Url,
    names: &[String],
) -> HashMap<String, BareClientOptions> {
    names
        .iter()
        .map(|name| {
            let options = BareClientOptions {
                address: token_url.clone(),
                client_id: name.clone(),
                client_secret: CLIENT_SECRET.to_owned(),
                scope: Some("api".to_owned()),
            };
            (name.clone(), options)
        })
        .collect()
}

/// The scope of the `j`-th distinct cache entry of a client in the memory scenario.
pub fn scope_name(j: usize) -> String {
    format!("api.{j}")
}

/// The memory baseline: a bare cache holding `names.len() * scopes` tokens of `token_len`
/// bytes, keyed `<client>|<scope>`.
pub fn bare_token_cache(names: &[String], scopes: usize, token_len: usize) -> BareCache {
    let cache = BareCache::new();
    let mut serial = 0;
    for name in names {
        for j in 0..scopes {
            let key: Arc<str> = Arc::from(format!("{name}|{}", scope_name(j)));
            cache.insert(key, Arc::new(BareToken::new(serial, token_len)));
            serial += 1;
        }
    }
    cache
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{Limit, run_load};
    use crate::servers::TokenEndpointConfig;

    #[test]
    fn fixed_header_baselines_are_authorized_and_raw_token_request_is_counted() {
        let servers = Servers::start(1, TokenEndpointConfig::default()).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            for subject in [
                reqwest_fixed_header(&servers.api.data_url()),
                reqwest012_fixed_header(&servers.api.data_url()),
            ] {
                let report = run_load(4, Limit::Requests(20), subject).await;
                assert_eq!(
                    (report.requests, report.errors),
                    (20, 0),
                    "{:?}",
                    report.first_error
                );
            }
            raw_token_request(&reqwest::Client::new(), &servers.token.url(), "raw")
                .await
                .unwrap();
        });
        assert_eq!(servers.api.served(), 40);
        assert_eq!(servers.token.requests_for("raw"), 1);
        assert_eq!(
            bare_token_cache(&crate::cache::client_names(3), 2, 64).len(),
            6
        );
        assert_eq!(
            bare_client_registry(&servers.token.url(), &crate::cache::client_names(3)).len(),
            3
        );
    }
}
