//! How the worker example (`examples/worker.rs`) reads its configuration: `examples/appsettings.toml`,
//! `appsettings.{environment}.toml` beside it, `TOKEN_MGMT__` variables, and the short variables of
//! the README (`TOKEN_ENDPOINT`, `AUTHORITY`, `CLIENT_ID`, ...), each a shorthand for a key of the
//! `identityserver` token client or of the `[worker]` section. A short variable wins over the long
//! one. With neither a token endpoint nor an authority configured, the worker uses the embedded
//! demo ([`demo_defaults`]).
//!
//! ```no_run
//! use token_mgmt::config::Configuration;
//! use token_mgmt::prelude::*;
//! use token_mgmt_examples::settings;
//!
//! # fn main() -> Result<(), BoxError> {
//! let variables = settings::with_short_variables([("AUTHORITY".into(), "https://idp.example.com".into())]);
//! let configuration = Configuration::from_parts("examples", "Production", variables)?;
//! let mut services = ServiceCollection::new();
//! let worker = settings::register(&mut services, &configuration)?;
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use token_mgmt::config::Configuration;
use token_mgmt::prelude::*;
use token_mgmt::tokens::{DpopKey, PrivateKey};
use url::Url;

use crate::demo::DemoServer;

/// The worker's token client.
pub const TOKEN_CLIENT: &str = "identityserver";
/// The worker's access token HTTP client.
pub const HTTP_CLIENT: &str = "client";
/// The configuration key of the worker's token client.
const CLIENT_KEY: &str = "token_management.clients.identityserver";
const CLIENT_VARIABLE: &str = "TOKEN_MGMT__TOKEN_MANAGEMENT__CLIENTS__IDENTITYSERVER__";
const WORKER_VARIABLE: &str = "TOKEN_MGMT__WORKER__";

/// Each short variable and the key it stands for: of the token client, or (`worker.`) of the
/// `[worker]` section.
pub const SHORT_VARIABLES: &[(&str, &str)] = &[
    ("TOKEN_ENDPOINT", "address"),
    ("AUTHORITY", "authority"),
    ("CLIENT_ID", "client_id"),
    ("CLIENT_SECRET", "client_secret"),
    ("CLIENT_AUTH_METHOD", "auth_method"),
    ("CLIENT_KEY_FILE", "key_file"),
    ("CLIENT_KEY_ID", "key_id"),
    ("CLIENT_CERT_FILE", "cert_file"),
    ("CLIENT_CERT_KEY_FILE", "cert_key_file"),
    ("SCOPE", "scope"),
    ("RESOURCE", "worker.resource"),
    ("DPOP", "worker.dpop"),
    ("DPOP_KEY_FILE", "worker.dpop_key_file"),
    ("API_BASE_ADDRESS", "worker.api_base_address"),
    ("WORKER_INTERVAL_SECONDS", "worker.interval_seconds"),
];

/// `variables`, then the configuration variable of each non-empty short variable among them
/// (after the others, so that it wins).
pub fn with_short_variables(
    variables: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = variables.into_iter().collect();
    let expanded: Vec<(String, String)> = all
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .filter_map(|(name, value)| {
            let (_, key) = SHORT_VARIABLES.iter().find(|(short, _)| short == name)?;
            Some((variable_for(key), value.clone()))
        })
        .collect();
    all.extend(expanded);
    all
}

fn variable_for(key: &str) -> String {
    match key.strip_prefix("worker.") {
        Some(key) => format!("{WORKER_VARIABLE}{}", key.to_ascii_uppercase()),
        None => format!("{CLIENT_VARIABLE}{}", key.to_ascii_uppercase()),
    }
}

/// Whether the configuration gives the worker's token client a token endpoint or an authority;
/// without one, the worker uses the embedded demo.
pub fn has_token_service(configuration: &Configuration) -> bool {
    ["address", "authority"]
        .iter()
        .any(|key| configuration.contains(&format!("{CLIENT_KEY}.{key}")))
}

/// Variables pointing the worker at the embedded `demo` (its token endpoint, the `m2m.short`
/// client, the `api` scope and its API), for the keys `configuration` leaves unset.
pub fn demo_defaults(configuration: &Configuration, demo: &DemoServer) -> Vec<(String, String)> {
    let defaults = [
        ("address", demo.token_endpoint().to_string()),
        ("client_id", "m2m.short".to_owned()),
        ("client_secret", "secret".to_owned()),
        ("scope", "api".to_owned()),
        ("worker.api_base_address", demo.api_base().to_string()),
    ];
    defaults
        .into_iter()
        .filter(|(key, _)| {
            let full = match key.strip_prefix("worker.") {
                Some(_) => (*key).to_owned(),
                None => format!("{CLIENT_KEY}.{key}"),
            };
            !configuration.contains(&full)
        })
        .map(|(key, value)| (variable_for(key), value))
        .collect()
}

/// The `[worker]` section.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSection {
    /// The API's base address; the worker calls `test` relative to it.
    pub api_base_address: Option<String>,
    /// Seconds between calls (default 5).
    pub interval_seconds: Option<u64>,
    /// A resource indicator (RFC 8707) to request tokens for.
    pub resource: Option<String>,
    /// `1` binds tokens to a DPoP key: generated (ES256), or the one in `dpop_key_file`.
    pub dpop: Option<String>,
    /// The DPoP key, PEM or JWK.
    pub dpop_key_file: Option<PathBuf>,
}

impl WorkerSection {
    /// The time between two calls.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_seconds.unwrap_or(5))
    }

    fn dpop_key(&self) -> Result<Option<DpopKey>, BoxError> {
        match self.dpop.as_deref() {
            None | Some("0" | "false") => Ok(None),
            Some("1" | "true") => Ok(Some(match &self.dpop_key_file {
                Some(path) => DpopKey::from_key(PrivateKey::from_file(path)),
                None => DpopKey::generate(),
            })),
            Some(other) => Err(format!("DPOP (worker.dpop) `{other}` is not 1 or 0").into()),
        }
    }
}

/// Registers the worker's token client (bound from `[token_management]`) and its access token HTTP
/// client, and returns the `[worker]` section.
///
/// # Errors
///
/// A configuration value of the wrong type, a missing or invalid API base address, an invalid
/// `DPOP`; invalid token client options are reported by `build()`.
pub fn register(
    services: &mut ServiceCollection,
    configuration: &Configuration,
) -> Result<WorkerSection, BoxError> {
    let worker: WorkerSection = if configuration.contains("worker") {
        configuration.get("worker")?
    } else {
        WorkerSection::default()
    };
    let api_base_address: Url = worker
        .api_base_address
        .as_deref()
        .ok_or("the API base address is not configured: set API_BASE_ADDRESS or [worker] api_base_address")?
        .parse()
        .map_err(|error| format!("API_BASE_ADDRESS (worker.api_base_address) is not a URL: {error}"))?;
    let dpop = worker.dpop_key()?;
    let resource = worker.resource.clone();
    services.add_access_token_management(|options| {
        options.bind(configuration)?;
        if let Some(client) = options.client.clients.get_mut(TOKEN_CLIENT) {
            client.resources.extend(resource);
            client.dpop = dpop;
        }
        Ok(())
    });
    services.add_client_access_token_client(HTTP_CLIENT, Some(TOKEN_CLIENT), |client| {
        client.base_address = Some(api_base_address);
        Ok(())
    });
    Ok(worker)
}
