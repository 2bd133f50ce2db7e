//! The protected API (`/api/...`) and the redirect helper.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header::{AUTHORIZATION, LOCATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::counters::Event;
use super::state::{DemoState, TokenRejection};

/// What the protected API answers for a valid token: the token's claims, never the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ApiClaims {
    /// The client the token was issued to.
    pub client_id: String,
    /// The granted scopes, space-separated.
    pub scope: String,
    /// The `resource` indicators of the token request.
    pub resources: Vec<String>,
    /// Seconds until the token expires (rounded down).
    pub expires_in: u64,
    /// The request method.
    pub method: String,
    /// The request path.
    pub path: String,
}

pub(crate) async fn protected(
    State(state): State<Arc<DemoState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let Some(token) = bearer_token(&headers) else {
        state.counters.record(Event::ApiUnauthenticated);
        return challenge(None);
    };
    match state.check_token(token) {
        Ok(issued) => {
            state
                .counters
                .record(Event::ApiAuthorized(&issued.client_id));
            let expires_in = issued
                .expires_at
                .saturating_duration_since(Instant::now())
                .as_secs();
            axum::Json(ApiClaims {
                client_id: issued.client_id,
                scope: issued.scope,
                resources: issued.resources,
                expires_in,
                method: method.to_string(),
                path: uri.path().to_owned(),
            })
            .into_response()
        }
        Err(rejection) => {
            state.counters.record(Event::ApiInvalidToken);
            challenge(Some(match rejection {
                TokenRejection::Unknown => "The access token is unknown or revoked",
                TokenRejection::Expired => "The access token expired",
            }))
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A 401 with an RFC 6750 3.1 challenge: no error code when no credentials were sent.
fn challenge(invalid: Option<&'static str>) -> Response {
    let value = match invalid {
        None => HeaderValue::from_static("Bearer realm=\"demo\""),
        Some(description) => HeaderValue::from_str(&format!(
            "Bearer realm=\"demo\", error=\"invalid_token\", error_description=\"{description}\""
        ))
        .expect("a constant ASCII description"),
    };
    (StatusCode::UNAUTHORIZED, [(WWW_AUTHENTICATE, value)]).into_response()
}

/// `GET /api/redirect-to?url=...`: `302 Found` to `url`.
pub(crate) async fn redirect_to(
    State(state): State<Arc<DemoState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    state.counters.record(Event::Redirect);
    match query.get("url").map(|url| HeaderValue::from_str(url)) {
        Some(Ok(location)) => (StatusCode::FOUND, [(LOCATION, location)]).into_response(),
        _ => (StatusCode::BAD_REQUEST, "expected ?url=<absolute URL>").into_response(),
    }
}
