//! `POST /connect/token`: the client credentials grant (RFC 6749 4.4).

use std::sync::Arc;

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, PRAGMA, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::time::Instant;

use super::counters::Event;
use super::secret::{decode_basic, new_token, secrets_equal};
use super::state::{DemoState, IssuedToken};

/// A successful token response (RFC 6749 5.1).
#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    scope: String,
}

/// An error response (RFC 6749 5.2).
#[derive(Serialize)]
struct ErrorBody {
    error: &'static str,
    error_description: String,
}

struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    basic_challenge: bool,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            basic_challenge: false,
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    fn invalid_client(basic_challenge: bool) -> Self {
        Self {
            basic_challenge,
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            )
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            axum::Json(ErrorBody {
                error: self.error,
                error_description: self.description,
            }),
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.basic_challenge {
            headers.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"demo\""),
            );
        }
        response
    }
}

/// The form fields, RFC 6749 3.2: every parameter but `resource` at most once.
#[derive(Default)]
struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
    resources: Vec<String>,
}

impl TokenForm {
    fn parse(pairs: Vec<(String, String)>) -> Result<Self, OAuthError> {
        let mut form = TokenForm::default();
        for (key, value) in pairs {
            let slot = match key.as_str() {
                "grant_type" => &mut form.grant_type,
                "client_id" => &mut form.client_id,
                "client_secret" => &mut form.client_secret,
                "scope" => &mut form.scope,
                "resource" => {
                    form.resources.push(value);
                    continue;
                }
                _ => continue, // extra parameters are allowed and ignored
            };
            if slot.replace(value).is_some() {
                return Err(OAuthError::invalid_request(format!(
                    "parameter `{key}` appears more than once"
                )));
            }
        }
        Ok(form)
    }
}

pub(crate) async fn token(
    State(state): State<Arc<DemoState>>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    let delay = state.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let result = match form {
        Ok(Form(pairs)) => issue(&state, &headers, pairs),
        Err(rejection) => {
            state.counters.record(Event::TokenRequest(None));
            Err(Failure::from(OAuthError::invalid_request(format!(
                "expected an application/x-www-form-urlencoded body: {rejection}"
            ))))
        }
    };
    match result {
        Ok(response) => {
            let mut response = axum::Json(response).into_response();
            let headers = response.headers_mut();
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
            response
        }
        Err(error) => {
            state.counters.record(Event::TokenError);
            error.into_response()
        }
    }
}

fn issue(
    state: &DemoState,
    headers: &HeaderMap,
    pairs: Vec<(String, String)>,
) -> Result<TokenResponse, Failure> {
    let form = TokenForm::parse(pairs);
    let basic = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| decode_basic(v).ok_or_else(|| OAuthError::invalid_client(true)));
    let presented_id = match (&basic, &form) {
        (Some(Ok((id, _))), _) => Some(id.as_str()),
        (_, Ok(form)) => form.client_id.as_deref(),
        _ => None,
    };
    state.counters.record(Event::TokenRequest(presented_id));

    if let Some((status, body)) = state.failure() {
        return Err(Failure::Injected(status, body));
    }
    let form = form?;

    // Client authentication: exactly one method (RFC 6749 2.3).
    let (client_id, secret, basic_used) = match basic {
        Some(basic) => {
            let (id, secret) = basic?;
            if form.client_secret.is_some() {
                return Err(OAuthError::invalid_request(
                    "more than one client authentication method",
                )
                .into());
            }
            if form
                .client_id
                .as_deref()
                .is_some_and(|form_id| form_id != id)
            {
                return Err(OAuthError::invalid_request(
                    "client_id differs from the authenticated client",
                )
                .into());
            }
            (id, secret, true)
        }
        None => match (form.client_id.clone(), form.client_secret.clone()) {
            (Some(id), Some(secret)) => (id, secret, false),
            _ => return Err(OAuthError::invalid_client(false).into()),
        },
    };
    let client = state
        .client(&client_id)
        .filter(|client| secrets_equal(&client.secret, &secret))
        .ok_or_else(|| OAuthError::invalid_client(basic_used))?;

    match form.grant_type.as_deref() {
        Some("client_credentials") => {}
        Some(other) => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("grant type `{other}` is not supported"),
            )
            .into());
        }
        None => return Err(OAuthError::invalid_request("missing grant_type").into()),
    }

    let scope = match form.scope.as_deref().map(str::split_whitespace) {
        None => client.allowed_scopes.join(" "),
        Some(requested) => {
            let requested: Vec<&str> = requested.collect();
            if requested.is_empty() {
                client.allowed_scopes.join(" ")
            } else if let Some(bad) = requested
                .iter()
                .find(|s| !client.allowed_scopes.iter().any(|a| a == *s))
            {
                return Err(OAuthError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    format!("scope `{bad}` is not allowed for this client"),
                )
                .into());
            } else {
                requested.join(" ")
            }
        }
    };

    let token = new_token();
    let issued_at = Instant::now();
    state.insert_token(
        token.clone(),
        IssuedToken {
            client_id: client.client_id.clone(),
            scope: scope.clone(),
            resources: form.resources,
            expires_at: issued_at + client.token_lifetime,
        },
    );
    state.counters.record(Event::TokenIssued(&client.client_id));
    Ok(TokenResponse {
        access_token: token,
        token_type: "Bearer",
        expires_in: client.token_lifetime.as_secs(),
        scope,
    })
}

/// Why a token request failed: an RFC 6749 error, or a failure injected by a test.
enum Failure {
    OAuth(OAuthError),
    Injected(StatusCode, String),
}

impl From<OAuthError> for Failure {
    fn from(error: OAuthError) -> Self {
        Failure::OAuth(error)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::OAuth(error) => error.into_response(),
            Failure::Injected(status, body) => {
                // Sent as configured; JSON when it looks like JSON.
                let content_type = if body.trim_start().starts_with('{') {
                    "application/json"
                } else {
                    "text/plain; charset=utf-8"
                };
                (status, [(CONTENT_TYPE, content_type)], body).into_response()
            }
        }
    }
}
