//! Request counters of the demo server, for tests and benchmarks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the demo server's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DemoCounters {
    /// Every `POST /connect/token`, answered or failed.
    pub token_requests: u64,
    /// Tokens issued.
    pub tokens_issued: u64,
    /// Token requests answered with an error (including injected failures).
    pub token_errors: u64,
    /// Every request on a protected `/api/...` route.
    pub api_requests: u64,
    /// API requests that carried a valid token.
    pub api_authorized: u64,
    /// API requests without a bearer token.
    pub api_unauthenticated: u64,
    /// API requests with a bearer token that is unknown, revoked or expired.
    pub api_invalid_token: u64,
    /// `GET /api/redirect-to` requests.
    pub redirects: u64,
    /// Per client id.
    pub clients: HashMap<String, ClientCounters>,
}

impl DemoCounters {
    /// The counters of one client (zeros when it made no request).
    pub fn client(&self, client_id: &str) -> ClientCounters {
        self.clients.get(client_id).cloned().unwrap_or_default()
    }
}

/// Counters of one client id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientCounters {
    /// Token requests naming this client id (authenticated or not).
    pub token_requests: u64,
    /// Tokens issued to this client.
    pub tokens_issued: u64,
    /// API requests authorized with this client's tokens.
    pub api_requests: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    token_requests: AtomicU64,
    tokens_issued: AtomicU64,
    token_errors: AtomicU64,
    api_requests: AtomicU64,
    api_authorized: AtomicU64,
    api_unauthenticated: AtomicU64,
    api_invalid_token: AtomicU64,
    redirects: AtomicU64,
    clients: Mutex<HashMap<String, ClientCounters>>,
}

/// What happened, to count.
pub(crate) enum Event<'a> {
    TokenRequest(Option<&'a str>),
    TokenIssued(&'a str),
    TokenError,
    ApiAuthorized(&'a str),
    ApiUnauthenticated,
    ApiInvalidToken,
    Redirect,
}

impl Counters {
    pub(crate) fn record(&self, event: Event<'_>) {
        let bump = |c: &AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
        };
        match event {
            Event::TokenRequest(client) => {
                bump(&self.token_requests);
                if let Some(client) = client {
                    self.client(client, |c| c.token_requests += 1);
                }
            }
            Event::TokenIssued(client) => {
                bump(&self.tokens_issued);
                self.client(client, |c| c.tokens_issued += 1);
            }
            Event::TokenError => bump(&self.token_errors),
            Event::ApiAuthorized(client) => {
                bump(&self.api_requests);
                bump(&self.api_authorized);
                self.client(client, |c| c.api_requests += 1);
            }
            Event::ApiUnauthenticated => {
                bump(&self.api_requests);
                bump(&self.api_unauthenticated);
            }
            Event::ApiInvalidToken => {
                bump(&self.api_requests);
                bump(&self.api_invalid_token);
            }
            Event::Redirect => bump(&self.redirects),
        }
    }

    fn client(&self, client_id: &str, update: impl FnOnce(&mut ClientCounters)) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        update(clients.entry(client_id.to_owned()).or_default());
    }

    pub(crate) fn snapshot(&self) -> DemoCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DemoCounters {
            token_requests: get(&self.token_requests),
            tokens_issued: get(&self.tokens_issued),
            token_errors: get(&self.token_errors),
            api_requests: get(&self.api_requests),
            api_authorized: get(&self.api_authorized),
            api_unauthenticated: get(&self.api_unauthenticated),
            api_invalid_token: get(&self.api_invalid_token),
            redirects: get(&self.redirects),
            clients: self
                .clients
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    pub(crate) fn reset(&self) {
        for c in [
            &self.token_requests,
            &self.tokens_issued,
            &self.token_errors,
            &self.api_requests,
            &self.api_authorized,
            &self.api_unauthenticated,
            &self.api_invalid_token,
            &self.redirects,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
