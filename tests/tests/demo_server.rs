//! The embedded demo token service and protected API, exercised with plain reqwest.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CACHE_CONTROL, WWW_AUTHENTICATE};
use serde_json::Value;
use token_mgmt_examples::demo::{ApiClaims, DemoClient, DemoConfig, DemoServer, RecordingServer};

/// A client with no timers of its own, so a paused clock only moves when a test says so.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(None)
        .build()
        .unwrap()
}

/// `client_secret_basic` per RFC 6749 2.3.1 (these ids and secrets need no escaping).
fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

async fn request_token(
    http: &reqwest::Client,
    demo: &DemoServer,
    auth: Option<&str>,
    form: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut request = http.post(demo.token_endpoint()).form(form);
    if let Some(auth) = auth {
        request = request.header(AUTHORIZATION, auth);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn issue(http: &reqwest::Client, demo: &DemoServer, client_id: &str) -> String {
    let (status, body) = request_token(
        http,
        demo,
        Some(&basic(client_id, "secret")),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

async fn call_api(
    http: &reqwest::Client,
    demo: &DemoServer,
    token: Option<&str>,
) -> reqwest::Response {
    let mut request = http.get(demo.api_base().join("test").unwrap());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

fn challenge(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(WWW_AUTHENTICATE)
        .expect("a WWW-Authenticate challenge")
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn urls_are_loopback_with_os_ports() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    assert!(demo.addr().ip().is_loopback());
    assert_ne!(demo.addr().port(), 0);
    assert_eq!(demo.token_endpoint().path(), "/connect/token");
    assert_eq!(demo.api_base().path(), "/api/");
    assert_eq!(demo.token_endpoint().port(), Some(demo.addr().port()));
    demo.shutdown().await;
}

#[tokio::test]
async fn basic_auth_issues_a_bearer_token() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let http = client();
    let response = http
        .post(demo.token_endpoint())
        .header(AUTHORIZATION, basic("m2m", "secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "api");
    assert!(body["access_token"].as_str().unwrap().len() >= 43);
}

#[tokio::test]
async fn basic_auth_credentials_are_form_url_decoded() {
    let config = DemoConfig::default().with_client(DemoClient::new("odd id:1", "p@ss word+%"));
    let demo = DemoServer::start(config).await.unwrap();
    // RFC 6749 2.3.1: form-url-encode id and secret, then base64.
    let encoded = format!("Basic {}", STANDARD.encode("odd+id%3A1:p%40ss+word%2B%25"));
    let (status, body) = request_token(
        &client(),
        &demo,
        Some(&encoded),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(demo.counters().client("odd id:1").tokens_issued, 1);
}

#[tokio::test]
async fn post_auth_issues_a_token_with_the_client_lifetime() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let (status, body) = request_token(
        &client(),
        &demo,
        None,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "m2m.short"),
            ("client_secret", "secret"),
            ("scope", "api"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["expires_in"], 75);
    assert_eq!(body["scope"], "api");
}

#[tokio::test]
async fn bad_client_credentials_are_invalid_client() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let http = client();
    let grant = [("grant_type", "client_credentials")];

    let response = http
        .post(demo.token_endpoint())
        .header(AUTHORIZATION, basic("m2m", "wrong"))
        .form(&grant)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&response).starts_with("Basic"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");

    for (auth, form) in [
        (Some(basic("nobody", "secret")), grant.to_vec()),
        (
            None,
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "m2m"),
                ("client_secret", "wrong"),
            ],
        ),
        (None, grant.to_vec()),
    ] {
        let (status, body) = request_token(&http, &demo, auth.as_deref(), &form).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"], "invalid_client");
    }
    assert_eq!(demo.counters().tokens_issued, 0);
    assert_eq!(demo.counters().token_errors, 4);
}

#[tokio::test]
async fn scope_grant_type_and_malformed_requests_are_rfc_6749_errors() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let http = client();
    let auth = basic("m2m", "secret");
    let cases: [(&[(&str, &str)], &str); 5] = [
        (
            &[("grant_type", "client_credentials"), ("scope", "api admin")],
            "invalid_scope",
        ),
        (&[("grant_type", "password")], "unsupported_grant_type"),
        (&[("scope", "api")], "invalid_request"),
        (
            &[
                ("grant_type", "client_credentials"),
                ("scope", "api"),
                ("scope", "api"),
            ],
            "invalid_request",
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "m2m"),
                ("client_secret", "secret"),
            ],
            "invalid_request", // two authentication methods at once
        ),
    ];
    for (form, error) in cases {
        let (status, body) = request_token(&http, &demo, Some(&auth), form).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{form:?}: {body}");
        assert_eq!(body["error"], error, "{form:?}: {body}");
        assert!(body["error_description"].is_string());
    }

    let response = http
        .post(demo.token_endpoint())
        .header(AUTHORIZATION, &auth)
        .json(&serde_json::json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
}

#[tokio::test]
async fn the_api_answers_the_claims_of_an_issued_token() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let http = client();
    let (status, body) = request_token(
        &http,
        &demo,
        Some(&basic("m2m", "secret")),
        &[
            ("grant_type", "client_credentials"),
            ("resource", "urn:api:one"),
            ("resource", "urn:api:two"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let token = body["access_token"].as_str().unwrap();

    let response = call_api(&http, &demo, Some(token)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(!text.contains(token), "the API must not echo the token");
    let claims: ApiClaims = serde_json::from_str(&text).unwrap();
    assert_eq!(claims.client_id, "m2m");
    assert_eq!(claims.scope, "api");
    assert_eq!(claims.resources, ["urn:api:one", "urn:api:two"]);
    assert!(claims.expires_in <= 3600 && claims.expires_in >= 3590);
    assert_eq!(claims.path, "/api/test");
    assert_eq!(claims.method, "GET");

    // Any method, any path under /api/.
    let response = http
        .delete(demo.api_base().join("items/7").unwrap())
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let claims: ApiClaims = response.json().await.unwrap();
    assert_eq!(
        (claims.method.as_str(), claims.path.as_str()),
        ("DELETE", "/api/items/7")
    );
}

#[tokio::test]
async fn the_api_rejects_missing_unknown_and_revoked_tokens() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let http = client();

    let response = call_api(&http, &demo, None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // RFC 6750 3.1: no error code when no credentials were sent.
    assert!(challenge(&response).starts_with("Bearer"));
    assert!(!challenge(&response).contains("error="));

    let response = call_api(&http, &demo, Some("not-a-token-we-issued")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&response).contains(r#"error="invalid_token""#));

    let response = http
        .get(demo.api_base().join("test").unwrap())
        .basic_auth("m2m", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let token = issue(&http, &demo, "m2m").await;
    let other = issue(&http, &demo, "m2m.short").await;
    assert_eq!(
        call_api(&http, &demo, Some(&token)).await.status(),
        StatusCode::OK
    );
    assert_eq!(demo.revoke_client("m2m"), 1);
    let response = call_api(&http, &demo, Some(&token)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&response).contains(r#"error="invalid_token""#));
    assert_eq!(
        call_api(&http, &demo, Some(&other)).await.status(),
        StatusCode::OK
    );

    assert_eq!(demo.revoke_all(), 1);
    assert_eq!(demo.valid_tokens(), 0);
    let response = call_api(&http, &demo, Some(&other)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let counters = demo.counters();
    assert_eq!(counters.api_requests, 7);
    assert_eq!(counters.api_authorized, 2);
    assert_eq!(counters.api_unauthenticated, 2); // no header, and a Basic header
    assert_eq!(counters.api_invalid_token, 3);
}

#[tokio::test]
async fn expire_all_expires_issued_tokens() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let http = client();
    let token = issue(&http, &demo, "m2m").await;
    assert_eq!(demo.expire_all(), 1);
    let response = call_api(&http, &demo, Some(&token)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = challenge(&response);
    assert!(challenge.contains(r#"error="invalid_token""#));
    assert!(challenge.contains("expired"));
    // A new token works again.
    let token = issue(&http, &demo, "m2m").await;
    assert_eq!(
        call_api(&http, &demo, Some(&token)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test(start_paused = true)]
async fn tokens_expire_after_their_lifetime_on_a_paused_clock() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let http = client();
    let token = issue(&http, &demo, "m2m.short").await;

    tokio::time::advance(Duration::from_secs(74)).await;
    let response = call_api(&http, &demo, Some(&token)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let claims: ApiClaims = response.json().await.unwrap();
    assert!(claims.expires_in <= 1, "{claims:?}");

    tokio::time::advance(Duration::from_secs(1)).await;
    let response = call_api(&http, &demo, Some(&token)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&response).contains("expired"));
}

#[tokio::test]
async fn set_token_lifetime_changes_new_tokens() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let http = client();
    assert!(demo.set_token_lifetime("m2m", Duration::from_secs(5)));
    assert!(!demo.set_token_lifetime("nobody", Duration::from_secs(5)));
    let (_, body) = request_token(
        &http,
        &demo,
        Some(&basic("m2m", "secret")),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(body["expires_in"], 5);

    // A zero lifetime issues tokens that are already expired.
    demo.set_token_lifetime("m2m", Duration::ZERO);
    let token = issue(&http, &demo, "m2m").await;
    assert_eq!(
        call_api(&http, &demo, Some(&token)).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn injected_token_endpoint_failures_are_answered_and_counted() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let http = client();
    demo.set_token_endpoint_failure(Some((
        StatusCode::SERVICE_UNAVAILABLE,
        r#"{"error":"temporarily_unavailable"}"#.to_owned(),
    )));
    let (status, body) = request_token(
        &http,
        &demo,
        Some(&basic("m2m", "secret")),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "temporarily_unavailable");

    demo.set_token_endpoint_failure(None);
    issue(&http, &demo, "m2m").await;
    let counters = demo.counters();
    assert_eq!(counters.token_requests, 2);
    assert_eq!(counters.token_errors, 1);
    assert_eq!(counters.tokens_issued, 1);
}

#[tokio::test(start_paused = true)]
async fn token_delay_uses_tokio_time() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let http = client();
    demo.set_token_delay(Duration::from_secs(30));
    let started = tokio::time::Instant::now();
    issue(&http, &demo, "m2m").await;
    assert!(started.elapsed() >= Duration::from_secs(30));
}

#[tokio::test]
async fn counters_count_per_client() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let http = client();
    let long = issue(&http, &demo, "m2m").await;
    issue(&http, &demo, "m2m").await;
    let short = issue(&http, &demo, "m2m.short").await;
    for _ in 0..3 {
        call_api(&http, &demo, Some(&long)).await;
    }
    call_api(&http, &demo, Some(&short)).await;
    request_token(
        &http,
        &demo,
        Some(&basic("m2m.short", "bad")),
        &[("grant_type", "client_credentials")],
    )
    .await;

    let counters = demo.counters();
    assert_eq!(counters.token_requests, 4);
    assert_eq!(counters.tokens_issued, 3);
    assert_eq!(counters.api_authorized, 4);
    let m2m = counters.client("m2m");
    assert_eq!(
        (m2m.token_requests, m2m.tokens_issued, m2m.api_requests),
        (2, 2, 3)
    );
    let short = counters.client("m2m.short");
    assert_eq!(
        (
            short.token_requests,
            short.tokens_issued,
            short.api_requests
        ),
        (2, 1, 1)
    );
    assert_eq!(counters.client("nobody").token_requests, 0);

    demo.reset_counters();
    assert_eq!(demo.counters().token_requests, 0);
    assert!(demo.counters().clients.is_empty());
}

#[tokio::test]
async fn redirect_to_another_origin_drops_the_authorization_header() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let other = RecordingServer::start().await.unwrap();
    let http = client();
    let target = other.url().join("landed?x=1").unwrap();
    let response = http
        .get(demo.redirect_url(&target))
        .bearer_auth("would-be-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.url().as_str(), target.as_str());
    let requests = other.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].uri.path(), "/landed");
    assert!(requests[0].headers.get(AUTHORIZATION).is_none());
    assert_eq!(demo.counters().redirects, 1);
    other.shutdown().await;
}
