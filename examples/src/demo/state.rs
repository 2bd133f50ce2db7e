//! The demo server's shared state: clients, issued tokens, counters and test controls.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use axum::http::StatusCode;
use tokio::time::Instant;

use super::config::{DemoClient, DemoConfig};
use super::counters::Counters;

/// A token in the server-side table.
#[derive(Debug, Clone)]
pub(crate) struct IssuedToken {
    pub(crate) client_id: String,
    pub(crate) scope: String,
    pub(crate) resources: Vec<String>,
    pub(crate) expires_at: Instant,
}

/// Why a bearer token was refused.
pub(crate) enum TokenRejection {
    Unknown,
    Expired,
}

/// When the table grows past this, expired entries are dropped on the next issue.
const PRUNE_ABOVE: usize = 10_000;

pub(crate) struct DemoState {
    clients: Mutex<HashMap<String, DemoClient>>,
    tokens: Mutex<HashMap<String, IssuedToken>>,
    pub(crate) counters: Counters,
    failure: Mutex<Option<(StatusCode, String)>>,
    delay: Mutex<Duration>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // State stays consistent under every lock: a panic elsewhere does not poison the demo.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl DemoState {
    pub(crate) fn new(config: DemoConfig) -> Self {
        Self {
            clients: Mutex::new(
                config
                    .clients
                    .into_iter()
                    .map(|c| (c.client_id.clone(), c))
                    .collect(),
            ),
            tokens: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            failure: Mutex::new(None),
            delay: Mutex::new(Duration::ZERO),
        }
    }

    pub(crate) fn client(&self, client_id: &str) -> Option<DemoClient> {
        lock(&self.clients).get(client_id).cloned()
    }

    pub(crate) fn set_token_lifetime(&self, client_id: &str, lifetime: Duration) -> bool {
        match lock(&self.clients).get_mut(client_id) {
            Some(client) => {
                client.token_lifetime = lifetime;
                true
            }
            None => false,
        }
    }

    pub(crate) fn failure(&self) -> Option<(StatusCode, String)> {
        lock(&self.failure).clone()
    }

    pub(crate) fn set_failure(&self, failure: Option<(StatusCode, String)>) {
        *lock(&self.failure) = failure;
    }

    pub(crate) fn delay(&self) -> Duration {
        *lock(&self.delay)
    }

    pub(crate) fn set_delay(&self, delay: Duration) {
        *lock(&self.delay) = delay;
    }

    pub(crate) fn insert_token(&self, token: String, issued: IssuedToken) {
        let mut tokens = lock(&self.tokens);
        if tokens.len() >= PRUNE_ABOVE {
            let now = Instant::now();
            tokens.retain(|_, t| t.expires_at > now);
        }
        tokens.insert(token, issued);
    }

    pub(crate) fn check_token(&self, token: &str) -> Result<IssuedToken, TokenRejection> {
        let tokens = lock(&self.tokens);
        let issued = tokens.get(token).ok_or(TokenRejection::Unknown)?;
        if Instant::now() >= issued.expires_at {
            return Err(TokenRejection::Expired);
        }
        Ok(issued.clone())
    }

    /// Removes every issued token; returns how many.
    pub(crate) fn revoke(&self, client_id: Option<&str>) -> usize {
        let mut tokens = lock(&self.tokens);
        let before = tokens.len();
        tokens.retain(|_, t| client_id.is_some_and(|id| t.client_id != id));
        before - tokens.len()
    }

    /// Makes every issued token expired now; returns how many were still valid.
    pub(crate) fn expire_all(&self) -> usize {
        let now = Instant::now();
        let mut count = 0;
        for token in lock(&self.tokens).values_mut() {
            if token.expires_at > now {
                token.expires_at = now;
                count += 1;
            }
        }
        count
    }

    pub(crate) fn valid_tokens(&self) -> usize {
        let now = Instant::now();
        lock(&self.tokens)
            .values()
            .filter(|t| t.expires_at > now)
            .count()
    }
}
