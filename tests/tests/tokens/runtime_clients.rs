//! Token clients added, replaced and removed while the service runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use token_mgmt::tokens::{
    AccessTokenManagementService, ClientAccessTokenHandler, OptionsError, TokenError,
};
use token_mgmt_tests::api_server::ApiServer;
use token_mgmt_tests::token_server::TokenServer;

use crate::{CLIENT, defaults, options_for};

async fn token(service: &AccessTokenManagementService, client: &str) -> Result<String, TokenError> {
    service
        .get_client_access_token(client, &defaults())
        .await
        .map(|token| token.access_token().to_owned())
}

#[tokio::test]
async fn a_client_added_at_run_time_gets_tokens_and_is_validated_like_at_build() {
    let server = TokenServer::start();
    let service = AccessTokenManagementService::new(options_for(&server, |_| {})).unwrap();
    let mut tenant = server.client_options();
    tenant.scope = Some("tenant".into());
    service.add_client("tenant", tenant.clone()).unwrap();
    assert_eq!(token(&service, "tenant").await.unwrap(), "tok-1-tenant-");
    assert_eq!(service.client_names(), vec![CLIENT, "tenant"]);

    let again = service.add_client("tenant", tenant.clone()).unwrap_err();
    assert!(matches!(again, OptionsError::DuplicateClient { ref client } if client == "tenant"));
    tenant.client_id = String::new();
    let invalid = service.add_client("other", tenant).unwrap_err();
    assert!(matches!(invalid, OptionsError::EmptyClientId { ref client } if client == "other"));
    assert_eq!(service.client_names(), vec![CLIENT, "tenant"]);
}

#[tokio::test]
async fn a_rotated_secret_keeps_the_cached_token_and_a_new_scope_does_not() {
    let server = TokenServer::start();
    let service = AccessTokenManagementService::new(options_for(&server, |c| {
        c.scope = Some("a".into());
    }))
    .unwrap();
    assert_eq!(token(&service, CLIENT).await.unwrap(), "tok-1-a-");

    let mut rotated = server.client_options();
    rotated.scope = Some("a".into());
    rotated.client_secret = "rotated".into();
    service.replace_client(CLIENT, rotated.clone()).unwrap();
    assert_eq!(
        token(&service, CLIENT).await.unwrap(),
        "tok-1-a-",
        "still valid"
    );
    assert_eq!(server.request_count(), 1);

    rotated.scope = Some("b".into());
    service.replace_client(CLIENT, rotated).unwrap();
    assert_eq!(token(&service, CLIENT).await.unwrap(), "tok-2-b-");
    assert_eq!(server.request_count(), 2);

    let unknown = service
        .replace_client("missing", server.client_options())
        .unwrap_err();
    assert!(matches!(unknown, OptionsError::UnknownClient { ref client } if client == "missing"));
}

#[tokio::test]
async fn a_removed_client_fails_with_a_typed_error_naming_it() {
    let server = TokenServer::start();
    let service = AccessTokenManagementService::new(options_for(&server, |_| {})).unwrap();
    token(&service, CLIENT).await.unwrap();
    service.remove_client(CLIENT).unwrap();
    let error = token(&service, CLIENT).await.unwrap_err();
    assert!(
        matches!(&error, TokenError::UnknownClient { name, .. } if name == CLIENT),
        "{error:?}"
    );
    assert!(matches!(
        service.remove_client(CLIENT).unwrap_err(),
        OptionsError::UnknownClient { .. }
    ));
    // Added back with the same request: a token again (the same key, so possibly the cached one).
    service.add_client(CLIENT, server.client_options()).unwrap();
    assert!(token(&service, CLIENT).await.unwrap().starts_with("tok-"));
}

/// 32 tasks call in a loop while the client's scope is replaced: once `replace_client` has
/// returned, no call that starts gets a token of the old scope; one token request per scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_concurrent_use_no_call_after_a_replace_gets_the_old_request_token() {
    let server = TokenServer::start();
    let service = AccessTokenManagementService::new(options_for(&server, |c| {
        c.scope = Some("old".into());
    }))
    .unwrap();
    token(&service, CLIENT).await.unwrap();
    let replaced = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let calls_after_replace = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..32)
        .map(|_| {
            let (service, replaced, stop) = (service.clone(), replaced.clone(), stop.clone());
            let calls_after_replace = calls_after_replace.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let after_replace = replaced.load(Ordering::SeqCst);
                    let token = token(&service, CLIENT).await.expect("a token");
                    if after_replace {
                        calls_after_replace.fetch_add(1, Ordering::SeqCst);
                        assert!(
                            token.ends_with("-new-"),
                            "old request's token after replace: {token}"
                        );
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    let mut replacement = server.client_options();
    replacement.scope = Some("new".into());
    service.replace_client(CLIENT, replacement).unwrap();
    replaced.store(true, Ordering::SeqCst);
    // Let the callers make calls after the replace (a guard against a hang only).
    let enough = async {
        while calls_after_replace.load(Ordering::SeqCst) < 256 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), enough)
        .await
        .expect("calls after the replace");
    stop.store(true, Ordering::SeqCst);
    for caller in callers {
        caller.await.expect("no caller got the old request's token");
    }
    assert_eq!(server.request_count(), 2, "one token request per scope");
}

/// A replaced client's old token is dropped at its refresh time, not renewed with the old options;
/// the new client's token is renewed as usual.
#[tokio::test]
async fn the_old_request_of_a_replaced_client_is_not_renewed_in_the_background() {
    let server = TokenServer::start();
    let (service, clock) = crate::manual_service(options_for(&server, |c| {
        c.scope = Some("old".into());
    }));
    assert_eq!(token(&service, CLIENT).await.unwrap(), "tok-1-old-");
    let old_key = service.cache_key(CLIENT, &defaults()).unwrap();
    let mut replacement = server.client_options();
    replacement.scope = Some("new".into());
    service.replace_client(CLIENT, replacement).unwrap();
    assert_eq!(token(&service, CLIENT).await.unwrap(), "tok-2-new-");

    // Past both refresh times (3600 s tokens, 60 s buffer): only the new request is renewed.
    clock.advance(std::time::Duration::from_secs(3550));
    server.wait_for_requests(3).await;
    let dropped = async {
        while service.cache().get_cached(&old_key).is_some() {
            tokio::task::yield_now().await;
        }
    };
    // A guard against a hang only: the drop happens as soon as the renewal task runs.
    tokio::time::timeout(std::time::Duration::from_secs(30), dropped)
        .await
        .expect("the old token is dropped");
    let renewal = server.last_request().unwrap();
    assert_eq!(renewal.form_value("scope"), Some("new"));
    assert_eq!(server.request_count(), 3);
}

/// Waits (a guard against a hang only) until `condition` holds.
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let wait = async {
        while !condition() {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// A per-call token of a client whose secret was rotated keeps being renewed under its key, with
/// the new secret and its own scope; once the client's id changes (another identity: its key would
/// be another), it is dropped at its refresh time instead of renewed.
#[tokio::test]
async fn a_per_call_token_is_renewed_after_a_rotated_secret_and_dropped_after_a_new_client_id() {
    let server = TokenServer::start();
    let (service, clock) = crate::manual_service(options_for(&server, |c| {
        c.scope = Some("default".into());
    }));
    let parameters = token_mgmt::tokens::TokenRequestParameters {
        scope: Some("per-call".into()),
        ..Default::default()
    };
    let key = service.cache_key(CLIENT, &parameters).unwrap();
    let first = service
        .get_client_access_token(CLIENT, &parameters)
        .await
        .unwrap();
    let first_auth = server
        .last_request()
        .unwrap()
        .header("authorization")
        .map(str::to_owned);

    let mut rotated = server.client_options();
    rotated.scope = Some("default".into());
    rotated.client_secret = "rotated".into();
    service.replace_client(CLIENT, rotated.clone()).unwrap();
    assert_eq!(service.cache_key(CLIENT, &parameters).unwrap(), key);

    // 3600 s tokens, 60 s buffer: due at 3540 s.
    clock.advance(std::time::Duration::from_secs(3550));
    until("the renewal to be cached", || {
        service
            .cache()
            .get_cached(&key)
            .is_some_and(|t| !t.ptr_eq(&first))
    })
    .await;
    let renewal = server.last_request().unwrap();
    assert_eq!(renewal.form_value("scope"), Some("per-call"));
    assert!(renewal.header("authorization").is_some());
    assert_ne!(
        renewal.header("authorization").map(str::to_owned),
        first_auth,
        "renewed with the rotated secret"
    );
    // Used again, so only the client change can stop its next renewal.
    let renewed = service
        .get_client_access_token(CLIENT, &parameters)
        .await
        .unwrap();
    assert_eq!(renewed.access_token(), "tok-2-per-call-");

    rotated.client_id = "another".into();
    service.replace_client(CLIENT, rotated).unwrap();
    clock.advance(std::time::Duration::from_secs(3550));
    until("the old identity's token to be dropped", || {
        service.cache().get_cached(&key).is_none()
    })
    .await;
    assert_eq!(server.request_count(), 2, "not renewed as another client");
}

/// A per-call token of a removed client is dropped at its refresh time, not renewed.
#[tokio::test]
async fn a_per_call_token_of_a_removed_client_is_dropped_not_renewed() {
    let server = TokenServer::start();
    let (service, clock) = crate::manual_service(options_for(&server, |_| {}));
    let parameters = token_mgmt::tokens::TokenRequestParameters {
        scope: Some("per-call".into()),
        resources: vec!["urn:r".into()],
        ..Default::default()
    };
    let key = service.cache_key(CLIENT, &parameters).unwrap();
    service
        .get_client_access_token(CLIENT, &parameters)
        .await
        .unwrap();
    service.remove_client(CLIENT).unwrap();
    clock.advance(std::time::Duration::from_secs(3550));
    until("the removed client's token to be dropped", || {
        service.cache().get_cached(&key).is_none()
    })
    .await;
    assert_eq!(server.request_count(), 1);
}

/// An HTTP client whose token client was removed fails each request with the typed error naming
/// it, and sends nothing to the API.
#[tokio::test]
async fn an_http_client_of_a_removed_token_client_fails_with_a_typed_error_naming_it() {
    let server = TokenServer::start();
    let api = ApiServer::start();
    let service = AccessTokenManagementService::new(options_for(&server, |_| {})).unwrap();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(
            ClientAccessTokenHandler::new(service.clone(), CLIENT).with_allowed_origin(&api.url()),
        )
        .build();
    let response = client.get(api.url()).send().await.unwrap();
    assert_eq!(response.status(), 200);

    service.remove_client(CLIENT).unwrap();
    let error = client.get(api.url()).send().await.unwrap_err();
    let reqwest_middleware::Error::Middleware(source) = &error else {
        panic!("expected the handler's error, got {error:?}");
    };
    assert!(
        matches!(source.downcast_ref::<TokenError>(), Some(TokenError::UnknownClient { name, .. }) if name == CLIENT),
        "{error:?}"
    );
    assert_eq!(api.request_count(), 1, "the failed request was not sent");
}
