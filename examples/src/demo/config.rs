//! [`DemoConfig`] and [`DemoClient`]: who may get tokens from the demo token service.

use std::fmt;
use std::time::Duration;

/// One client of the demo token service.
#[derive(Clone)]
pub struct DemoClient {
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub secret: String,
    /// The scopes the client may request; a request without `scope` gets all of them.
    pub allowed_scopes: Vec<String>,
    /// How long the tokens issued to this client live (`expires_in`).
    pub token_lifetime: Duration,
}

impl DemoClient {
    /// A client with scope `api` and one-hour tokens.
    pub fn new(client_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            secret: secret.into(),
            allowed_scopes: vec!["api".to_owned()],
            token_lifetime: Duration::from_secs(3600),
        }
    }

    /// Sets the allowed scopes.
    pub fn with_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the token lifetime.
    pub fn with_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_lifetime = lifetime;
        self
    }
}

impl fmt::Debug for DemoClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemoClient")
            .field("client_id", &self.client_id)
            .field("secret", &"[redacted]")
            .field("allowed_scopes", &self.allowed_scopes)
            .field("token_lifetime", &self.token_lifetime)
            .finish()
    }
}

/// Configuration of a [`DemoServer`](super::DemoServer).
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// The clients the token service knows.
    pub clients: Vec<DemoClient>,
}

impl DemoConfig {
    /// A configuration with no client.
    pub fn empty() -> Self {
        Self {
            clients: Vec::new(),
        }
    }

    /// Adds (or replaces, by id) a client.
    pub fn with_client(mut self, client: DemoClient) -> Self {
        self.clients.retain(|c| c.client_id != client.client_id);
        self.clients.push(client);
        self
    }
}

impl Default for DemoConfig {
    /// The clients of the document's demo server: `m2m` (3600 s tokens) and `m2m.short` (75 s
    /// tokens), both with secret `secret` and scope `api`.
    fn default() -> Self {
        Self::empty()
            .with_client(DemoClient::new("m2m", "secret"))
            .with_client(
                DemoClient::new("m2m.short", "secret").with_token_lifetime(Duration::from_secs(75)),
            )
    }
}
