//! Item 11: the parts of the token service can be replaced through the registration, and a token
//! survives a trip through a cache outside the process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use http::{HeaderMap, HeaderValue};
use serde_json::json;
use token_mgmt::BoxError;
use token_mgmt::prelude::*;
use token_mgmt::tokens::{
    CacheKey, ClientAccessTokenCache, InMemoryClientAccessTokenCache, ManualClock,
    StoredClientAccessToken,
};
use token_mgmt_tests::api_server::ApiServer;
use token_mgmt_tests::token_server::TokenServer;

use crate::{CLIENT, get, guarded, options_for};

/// The in-memory cache, counting the tokens stored in it.
#[derive(Default)]
struct CountingCache {
    inner: InMemoryClientAccessTokenCache,
    sets: AtomicUsize,
}

#[async_trait]
impl ClientAccessTokenCache for CountingCache {
    fn get_cached(&self, key: &CacheKey) -> Option<ClientAccessToken> {
        self.inner.get_cached(key)
    }
    async fn get(&self, key: &CacheKey) -> Result<Option<ClientAccessToken>, BoxError> {
        self.inner.get(key).await
    }
    async fn set(&self, key: &CacheKey, token: ClientAccessToken) -> Result<(), BoxError> {
        self.sets.fetch_add(1, Ordering::SeqCst);
        self.inner.set(key, token).await
    }
    async fn delete(&self, key: &CacheKey) -> Result<(), BoxError> {
        self.inner.delete(key).await
    }
}

#[tokio::test]
async fn the_registered_cache_keeps_the_services_tokens() {
    let server = TokenServer::start();
    let api = ApiServer::start();
    let cache = Arc::new(CountingCache::default());
    let mut services = ServiceCollection::new();
    let client = server.client_options();
    services
        .add_access_token_management(|options| {
            options.client.clients.add(CLIENT, client);
            Ok(())
        })
        .cache(cache.clone());
    let api_url = api.url();
    services.add_client_access_token_client("orders", None, |client| {
        client.base_address = Some(api_url);
        Ok(())
    });
    let provider = services.build().unwrap();
    let http = provider
        .get_required::<HttpClientFactory>()
        .unwrap()
        .create_client("orders")
        .unwrap();

    for _ in 0..3 {
        http.get_string("orders").await.unwrap();
    }
    assert_eq!(server.request_count(), 1);
    assert_eq!(cache.sets.load(Ordering::SeqCst), 1, "stored in our cache");
    assert_eq!(cache.inner.len(), 1);

    let service = provider
        .get_required::<AccessTokenManagementService>()
        .unwrap();
    let key = service
        .cache_key(CLIENT, &TokenRequestParameters::default())
        .unwrap();
    let stored = cache
        .inner
        .get_cached(&key)
        .expect("the token is in our cache");
    let sent = format!("Bearer {}", stored.access_token());
    assert!(
        api.authorizations()
            .iter()
            .all(|seen| seen.as_deref() == Some(sent.as_str())),
        "the API got the token held in our cache"
    );
}

#[tokio::test]
async fn the_registered_token_http_client_sends_the_token_requests() {
    let server = TokenServer::start();
    let mut headers = HeaderMap::new();
    headers.insert("x-token-client", HeaderValue::from_static("custom"));
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut services = ServiceCollection::new();
    let client = server.client_options();
    services
        .add_access_token_management(|options| {
            options.client.clients.add(CLIENT, client);
            Ok(())
        })
        .token_http_client(http);
    let service = services
        .build()
        .unwrap()
        .get_required::<AccessTokenManagementService>()
        .unwrap();

    get(&service).await;
    let request = server.last_request().expect("a token request");
    assert_eq!(request.header("x-token-client"), Some("custom"));
}

#[tokio::test]
async fn a_token_round_trips_through_its_stored_form() {
    let server = TokenServer::start();
    let service = AccessTokenManagementService::new(options_for(&server, |client| {
        client.scope = Some("orders".into());
    }))
    .unwrap();
    let token = get(&service).await;

    let json = serde_json::to_string(&token.to_stored()).unwrap();
    let stored: StoredClientAccessToken = serde_json::from_str(&json).unwrap();
    assert_eq!(stored, token.to_stored());
    let back = ClientAccessToken::try_from(stored).unwrap();
    assert!(back.same_token(&token));
    assert_eq!(back.access_token(), "tok-1-orders-");
    assert_eq!(back.token_type(), "Bearer");
    assert_eq!(back.expires_at(), token.expires_at());
    assert_eq!(back.refresh_at(), token.refresh_at());
    assert_eq!(back.scope(), Some("orders"));
    assert_eq!(back.authorization_header(), token.authorization_header());
}

/// A cache as one outside the process would be: JSON text by key, only `get`/`set`/`delete` (no
/// synchronous fast path), every read a new token.
#[derive(Default)]
struct JsonCache {
    entries: Mutex<HashMap<String, String>>,
}

#[async_trait]
impl ClientAccessTokenCache for JsonCache {
    async fn get(&self, key: &CacheKey) -> Result<Option<ClientAccessToken>, BoxError> {
        let json = self.entries.lock().unwrap().get(key.as_str()).cloned();
        json.map(|json| {
            let stored: StoredClientAccessToken = serde_json::from_str(&json)?;
            Ok(ClientAccessToken::try_from(stored)?)
        })
        .transpose()
    }
    async fn set(&self, key: &CacheKey, token: ClientAccessToken) -> Result<(), BoxError> {
        let json = serde_json::to_string(&token.to_stored())?;
        self.entries
            .lock()
            .unwrap()
            .insert(key.as_str().to_owned(), json);
        Ok(())
    }
    async fn delete(&self, key: &CacheKey) -> Result<(), BoxError> {
        self.entries.lock().unwrap().remove(key.as_str());
        Ok(())
    }
}

/// A service (one "process") on its own manual clock, sharing `cache`.
fn process(
    server: &TokenServer,
    cache: &Arc<JsonCache>,
) -> (AccessTokenManagementService, Arc<ManualClock>) {
    let mut options = options_for(server, |_| {});
    options.background_refresh = false;
    let clock = Arc::new(ManualClock::new());
    let service = AccessTokenManagementService::builder(options)
        .cache(cache.clone())
        .clock(clock.clone())
        .build()
        .unwrap();
    (service, clock)
}

#[tokio::test]
async fn a_remote_style_cache_serves_tokens_with_their_freshness() {
    const MILLI: Duration = Duration::from_millis(1);
    let server = TokenServer::start();
    server.set_expires_in(Some(json!(120))); // refresh at 60 s, not served from 115 s
    let cache = Arc::new(JsonCache::default());
    let (a, clock_a) = process(&server, &cache);
    let (b, clock_b) = process(&server, &cache);

    let first = get(&a).await;
    let again = get(&a).await;
    assert!(
        again.same_token(&first) && !again.ptr_eq(&first),
        "read back from JSON"
    );
    assert!(
        get(&b).await.same_token(&first),
        "the other process uses it too"
    );
    assert_eq!(server.request_count(), 1);

    // Fresh until its refresh time, then due (served, and renewed) ...
    clock_a.advance(Duration::from_secs(60) - MILLI);
    assert!(get(&a).await.same_token(&first));
    assert_eq!(server.request_count(), 1);
    clock_a.advance(2 * MILLI);
    assert!(get(&a).await.same_token(&first), "due: still served");
    guarded("the renewal", server.wait_for_requests(2)).await;
    // ... and never served past its expiry.
    clock_a.advance(Duration::from_secs(55));
    let second = get(&a).await;
    assert_eq!(second.access_token(), "tok-2--");
    assert_eq!(server.request_count(), 2);

    // The other process reads the renewed token, fresh by its wall-clock times ...
    assert!(get(&b).await.same_token(&second));
    assert_eq!(server.request_count(), 2);
    // ... and, on its own clock, stops serving it once expired.
    clock_b.advance(Duration::from_secs(200));
    let third = get(&b).await;
    assert_eq!(third.access_token(), "tok-3--");
    assert_eq!(server.request_count(), 3);
}
