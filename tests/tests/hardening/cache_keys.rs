//! Item 6: cache keys.
//!
//! Before the fix the key sorted the extra parameters (so two requests that the server sees
//! differently shared a token) and named neither the token endpoint nor the client id (so two
//! deployments sharing a cache and a client name exchanged tokens); the service also kept a copy of
//! the default token of its own, so a `delete` made on the cache was not seen.

use std::sync::Arc;

use token_mgmt::tokens::{
    AccessTokenManagementService, ClientAccessTokenCache, InMemoryClientAccessTokenCache,
    TokenRequestParameters,
};
use token_mgmt_tests::token_server::TokenServer;

use crate::{CLIENT, defaults, get, options_for};

fn with_parameters(parameters: &[(&str, &str)]) -> TokenRequestParameters {
    TokenRequestParameters {
        parameters: parameters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    }
}

fn field_names(server: &TokenServer) -> Vec<String> {
    server
        .last_request()
        .unwrap()
        .form
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name == "tenant" || name == "audience")
        .collect()
}

#[tokio::test]
async fn extra_parameters_in_another_order_are_another_key_and_another_request() {
    let server = TokenServer::start();
    let service = AccessTokenManagementService::new(options_for(&server, |_| {})).unwrap();
    let ab = with_parameters(&[("tenant", "t1"), ("audience", "orders")]);
    let ba = with_parameters(&[("audience", "orders"), ("tenant", "t1")]);
    assert_ne!(
        service.cache_key(CLIENT, &ab).unwrap(),
        service.cache_key(CLIENT, &ba).unwrap()
    );

    let first = service.get_client_access_token(CLIENT, &ab).await.unwrap();
    assert_eq!(field_names(&server), ["tenant", "audience"]);
    let second = service.get_client_access_token(CLIENT, &ba).await.unwrap();
    assert_eq!(
        field_names(&server),
        ["audience", "tenant"],
        "sent as given"
    );
    assert!(!second.same_token(&first));
    assert_eq!(server.request_count(), 2);

    // Each order is cached under its own key.
    let again = service.get_client_access_token(CLIENT, &ab).await.unwrap();
    assert!(again.ptr_eq(&first));
    let again = service.get_client_access_token(CLIENT, &ba).await.unwrap();
    assert!(again.ptr_eq(&second));
    assert_eq!(server.request_count(), 2);
}

fn sharing(
    server: &TokenServer,
    client_id: &str,
    cache: &Arc<InMemoryClientAccessTokenCache>,
) -> AccessTokenManagementService {
    let options = options_for(server, |client| client.client_id = client_id.to_owned());
    AccessTokenManagementService::builder(options)
        .cache(cache.clone())
        .build()
        .unwrap()
}

#[tokio::test]
async fn services_sharing_a_cache_and_a_client_name_never_exchange_tokens() {
    let cache = Arc::new(InMemoryClientAccessTokenCache::new());
    let idp_a = TokenServer::start();
    let idp_b = TokenServer::start();

    // Same client name and client id, other token endpoint.
    let a = sharing(&idp_a, "client", &cache);
    let b = sharing(&idp_b, "client", &cache);
    // Same client name and token endpoint, other client id.
    let c = sharing(&idp_a, "other-client", &cache);

    let token_a = get(&a).await;
    let token_b = get(&b).await;
    assert_eq!(idp_b.request_count(), 1, "b asked its own token endpoint");
    assert!(!token_b.ptr_eq(&token_a));
    let token_c = get(&c).await;
    assert_eq!(
        idp_a.last_request().unwrap().header("authorization"),
        Some(basic("other-client").as_str()),
        "c asked as its own client"
    );
    assert!(!token_c.same_token(&token_a));
    assert_eq!(idp_a.request_count(), 2);
    assert_eq!(cache.len(), 3);

    // Each service keeps getting its own token from the shared cache.
    assert!(get(&a).await.ptr_eq(&token_a));
    assert!(get(&b).await.ptr_eq(&token_b));
    assert!(get(&c).await.ptr_eq(&token_c));
    assert_eq!(idp_a.request_count() + idp_b.request_count(), 3);
}

fn basic(client_id: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:secret"));
    format!("Basic {encoded}")
}

#[tokio::test]
async fn a_delete_made_directly_on_the_shared_cache_is_seen_by_the_next_call() {
    let server = TokenServer::start();
    let cache = Arc::new(InMemoryClientAccessTokenCache::new());
    let service = sharing(&server, "client", &cache);
    let first = get(&service).await;
    assert!(get(&service).await.ptr_eq(&first));

    let key = service.cache_key(CLIENT, &defaults()).unwrap();
    cache.delete(&key).await.unwrap();
    let second = get(&service).await;
    assert_eq!(second.access_token(), "tok-2--", "a new token request");
    assert_eq!(server.request_count(), 2);

    // A token set directly on the cache is what the next call gets, too.
    cache.set(&key, first.clone()).await.unwrap();
    assert!(get(&service).await.ptr_eq(&first));
    assert_eq!(server.request_count(), 2);
}
