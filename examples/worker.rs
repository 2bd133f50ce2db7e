//! The worker of the "Worker Applications" document, in Rust.
//!
//! Every few seconds it calls `test` on a protected API through a named HTTP client whose requests
//! carry an access token from the client credentials grant; token management happens under the
//! covers.
//!
//! ```sh
//! cargo run --example worker                 # against the embedded demo token service and API
//! TOKEN_ENDPOINT=https://idp.example.com/connect/token CLIENT_ID=worker CLIENT_SECRET=... \
//!   SCOPE=api API_BASE_ADDRESS=https://api.example.com/ cargo run --example worker
//! ```
//!
//! Variables: `TOKEN_ENDPOINT` (when unset, the embedded demo starts on 127.0.0.1), `CLIENT_ID`,
//! `CLIENT_SECRET`, `SCOPE` (optional), `API_BASE_ADDRESS`, `WORKER_INTERVAL_SECONDS` (optional,
//! default 5). Ctrl-C or SIGTERM stops it cleanly.

use std::env;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use token_mgmt::prelude::*;
use token_mgmt_examples::demo::{DemoConfig, DemoServer};
use url::Url;

#[derive(Worker)]
struct ApiWorker {
    factory: HttpClientFactory,
    settings: Arc<WorkerSettings>,
}

struct WorkerSettings {
    interval: Duration,
}

impl BackgroundService for ApiWorker {
    async fn execute(&self, stopping: CancellationToken) -> Result<(), WorkerError> {
        let client = self.factory.create_client("client")?;
        while !stopping.is_cancelled() {
            tracing::info!(
                "Worker running at: {}",
                humantime::format_rfc3339_seconds(SystemTime::now())
            );
            let response = client.get_string("test").await?;
            tracing::info!("API response: {response}");
            tokio::select! {
                _ = tokio::time::sleep(self.settings.interval) => {}
                _ = stopping.cancelled() => {}
            }
        }
        Ok(())
    }
}

/// Where the worker gets its tokens and what it calls.
struct Settings {
    token_endpoint: Url,
    client_id: String,
    client_secret: String,
    scope: Option<String>,
    api_base_address: Url,
    interval: Duration,
}

impl Settings {
    /// Reads the variables, or starts the embedded demo when `TOKEN_ENDPOINT` is not set.
    async fn from_env_or_demo() -> Result<(Self, Option<DemoServer>), BoxError> {
        let interval = match env::var("WORKER_INTERVAL_SECONDS") {
            Ok(seconds) => Duration::from_secs(seconds.parse().map_err(|error| {
                format!("WORKER_INTERVAL_SECONDS `{seconds}` is not a number of seconds: {error}")
            })?),
            Err(_) => Duration::from_secs(5),
        };
        let Ok(token_endpoint) = env::var("TOKEN_ENDPOINT") else {
            let demo = DemoServer::start(DemoConfig::default()).await?;
            tracing::info!(
                token_endpoint = %demo.token_endpoint(),
                api = %demo.api_base(),
                "TOKEN_ENDPOINT is not set: started the embedded demo token service and API"
            );
            let settings = Self {
                token_endpoint: demo.token_endpoint(),
                client_id: "m2m.short".into(),
                client_secret: "secret".into(),
                scope: Some("api".into()),
                api_base_address: demo.api_base(),
                interval,
            };
            return Ok((settings, Some(demo)));
        };
        let settings = Self {
            token_endpoint: parse_url("TOKEN_ENDPOINT", &token_endpoint)?,
            client_id: required("CLIENT_ID")?,
            client_secret: required("CLIENT_SECRET")?,
            scope: env::var("SCOPE").ok().filter(|scope| !scope.is_empty()),
            api_base_address: parse_url("API_BASE_ADDRESS", &required("API_BASE_ADDRESS")?)?,
            interval,
        };
        Ok((settings, None))
    }
}

fn required(name: &str) -> Result<String, BoxError> {
    env::var(name).map_err(|_| format!("{name} must be set when TOKEN_ENDPOINT is set").into())
}

fn parse_url(name: &str, value: &str) -> Result<Url, BoxError> {
    value
        .parse()
        .map_err(|error| format!("{name} `{value}` is not a URL: {error}").into())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let builder = Host::create_default_builder();
    let (settings, _demo) = Settings::from_env_or_demo().await?;
    builder
        .configure_services(move |_ctx, services| {
            services.add_access_token_management(|options| {
                options.client.clients.add(
                    "identityserver",
                    TokenClientOptions {
                        address: settings.token_endpoint,
                        client_id: settings.client_id,
                        client_secret: settings.client_secret.into(),
                        scope: settings.scope,
                        ..Default::default()
                    },
                );
                Ok(())
            });
            services.add_client_access_token_client("client", None, |client| {
                client.base_address = Some(settings.api_base_address);
                Ok(())
            });
            services.add_singleton(WorkerSettings {
                interval: settings.interval,
            });
            services.add_hosted_service::<ApiWorker>();
            Ok(())
        })
        .build()?
        .run()
        .await?;
    Ok(())
}
