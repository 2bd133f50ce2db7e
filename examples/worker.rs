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
//! Configuration: `examples/appsettings.toml`, `appsettings.{TOKEN_MGMT_ENVIRONMENT}.toml` beside it,
//! `TOKEN_MGMT__` variables, and the short variables of the README (`TOKEN_ENDPOINT`, or
//! `AUTHORITY` to discover the token endpoint from the issuer; `CLIENT_ID`, `CLIENT_SECRET`,
//! `CLIENT_AUTH_METHOD`, `SCOPE`, `RESOURCE`, `DPOP`, `API_BASE_ADDRESS`,
//! `WORKER_INTERVAL_SECONDS`, ...: see `token_mgmt_examples::settings`). With neither a token
//! endpoint nor an authority, the embedded demo starts on 127.0.0.1. Ctrl-C or SIGTERM stops it
//! cleanly.
//!
//! A fleet: with `REDIS_URL` set, tokens are shared through Redis, encrypted with `TOKEN_CACHE_KEY`
//! (32 bytes in base64; without it the worker refuses to start, unless `TOKEN_CACHE_PLAINTEXT=1`),
//! so copies started with the same variables make one token request between them (see
//! [`token_mgmt_examples::shared_cache`] for the other variables).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use token_mgmt::config::environment_name_from_process;
use token_mgmt::prelude::*;
use token_mgmt_examples::demo::{DemoConfig, DemoServer};
use token_mgmt_examples::settings;

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
        let client = self.factory.create_client(settings::HTTP_CLIENT)?;
        while !stopping.is_cancelled() {
            tracing::info!(
                "Worker running at: {}",
                humantime::format_rfc3339_seconds(SystemTime::now())
            );
            // A failed call (the API or the identity provider is down) is logged and retried at the
            // next tick; return the error instead to stop the host.
            match client.get_string("test").await {
                Ok(response) => tracing::info!("API response: {response}"),
                Err(error) => tracing::warn!("API call failed: {}", error_chain(&error)),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.interval) => {}
                _ = stopping.cancelled() => {}
            }
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let builder = Host::create_default_builder();
    // `examples/`, wherever cargo runs from.
    let directory = env!("CARGO_MANIFEST_DIR");
    let mut variables = settings::with_short_variables(std::env::vars());
    // Read once up front: whether to start the demo must be known before registering.
    let configuration = Configuration::from_parts(
        directory,
        &environment_name_from_process(),
        variables.clone(),
    )?;
    let _demo = if settings::has_token_service(&configuration) {
        None
    } else {
        let demo = DemoServer::start(DemoConfig::default()).await?;
        tracing::info!(
            token_endpoint = %demo.token_endpoint(),
            api = %demo.api_base(),
            "no token endpoint or authority configured: started the embedded demo token service and API"
        );
        variables.extend(settings::demo_defaults(&configuration, &demo));
        Some(demo)
    };
    let shared_cache = token_mgmt_examples::shared_cache::from_env().await?;
    builder
        .configuration_source(directory)
        .configuration_variables(variables)
        .configure_services(move |ctx, services| {
            let worker = settings::register(services, ctx.configuration())?;
            if let Some(cache) = shared_cache {
                services
                    .add_access_token_management(|_| Ok(()))
                    .cache(Arc::new(cache));
            }
            services.add_singleton(WorkerSettings {
                interval: worker.interval(),
            });
            services.add_hosted_service::<ApiWorker>();
            Ok(())
        })
        .build()?
        .run()
        .await?;
    Ok(())
}
