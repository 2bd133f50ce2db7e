//! Layered configuration: `appsettings.toml`, then `appsettings.{environment}.toml`, then
//! `TOKEN_MGMT__` environment variables; a later source wins key by key.
//!
//! A variable's name after the prefix is the key path, `__` between the parts, lower-cased:
//! `TOKEN_MGMT__TOKEN_MANAGEMENT__CLIENTS__API__CLIENT_ID=worker` sets
//! `token_management.clients.api.client_id`. Missing files are skipped; a malformed file or a value
//! of the wrong type is a [`ConfigError`] naming the file or variable and the key.
//!
//! [`AccessTokenManagementOptions::bind`] reads the `[token_management]` table:
//!
//! ```no_run
//! use token_mgmt::prelude::*;
//!
//! let host = Host::create_default_builder()
//!     .configure_services(|ctx, services| {
//!         services.add_access_token_management(|options| {
//!             options.bind(ctx.configuration())?;
//!             Ok(())
//!         });
//!         Ok(())
//!     })
//!     .build()?;
//! # Ok::<(), BoxError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Deserialize;

use crate::BoxError;
use crate::tokens::{
    AccessTokenManagementOptions, ClientAuthentication, ClientSecretJwt, HmacAlgorithm, PrivateKey,
    PrivateKeyJwt, TlsClientCertificate, TokenClientOptions,
};

/// Prefix of the environment variables read as configuration.
pub const VARIABLE_PREFIX: &str = "TOKEN_MGMT__";
/// The variable naming the environment (the `{env}` of `appsettings.{env}.toml`).
pub const ENVIRONMENT_VARIABLE: &str = "TOKEN_MGMT_ENVIRONMENT";
/// The environment when [`ENVIRONMENT_VARIABLE`] is not set.
pub const DEFAULT_ENVIRONMENT: &str = "Production";
/// The table [`AccessTokenManagementOptions::bind`] reads.
pub const TOKEN_MANAGEMENT_KEY: &str = "token_management";

/// The environment name from [`ENVIRONMENT_VARIABLE`], or [`DEFAULT_ENVIRONMENT`].
pub fn environment_name_from_process() -> String {
    std::env::var(ENVIRONMENT_VARIABLE)
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| DEFAULT_ENVIRONMENT.to_owned())
}

/// The merged configuration of a host (see the [module docs](self) for the sources and their order).
#[derive(Clone)]
pub struct Configuration {
    figment: Figment,
}

impl fmt::Debug for Configuration {
    // The values may hold secrets: only the sources are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sources: Vec<String> = self.figment.metadata().map(origin).collect();
        f.debug_struct("Configuration")
            .field("sources", &sources)
            .finish()
    }
}

impl Default for Configuration {
    /// An empty configuration.
    fn default() -> Self {
        Self {
            figment: Figment::new(),
        }
    }
}

impl Configuration {
    /// Loads `dir/appsettings.toml`, `dir/appsettings.{environment}.toml` and the process's
    /// `TOKEN_MGMT__` variables.
    ///
    /// # Errors
    ///
    /// A file that cannot be read or parsed, naming it.
    pub fn load(dir: impl AsRef<Path>, environment: &str) -> Result<Self, ConfigError> {
        Self::from_parts(dir, environment, std::env::vars_os().filter_map(utf8_pair))
    }

    /// Like [`load`](Self::load), with the variables given instead of the process's (tests, or an
    /// application that filters them). Only names starting with [`VARIABLE_PREFIX`] are used.
    ///
    /// # Errors
    ///
    /// A file that cannot be read or parsed, naming it.
    pub fn from_parts(
        dir: impl AsRef<Path>,
        environment: &str,
        variables: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        // Absolute: figment searches the parent directories for a relative path.
        let dir = std::path::absolute(dir.as_ref()).unwrap_or_else(|_| dir.as_ref().to_owned());
        let mut figment = Figment::new();
        let files = [
            dir.join("appsettings.toml"),
            dir.join(format!("appsettings.{environment}.toml")),
        ];
        for file in files {
            if file.exists() {
                figment = figment.merge(Toml::file_exact(file));
            }
        }
        figment = figment.merge(Variables::new(variables));
        // Sources are read eagerly by figment but their errors surface only on extraction.
        figment
            .extract::<Dict>()
            .map_err(|error| ConfigError::from_figment(&error, None))?;
        Ok(Self { figment })
    }

    /// The value at `key` (a dotted path such as `token_management.clients.api`), converted to `T`.
    /// Strings from variables are converted to numbers and booleans where `T` wants one.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Missing`] when the key is absent; [`ConfigError::Invalid`] naming the source
    /// and the key when the value does not fit `T`.
    pub fn get<'de, T: Deserialize<'de>>(&self, key: &str) -> Result<T, ConfigError> {
        if !self.figment.contains(key) {
            return Err(ConfigError::Missing {
                key: key.to_owned(),
            });
        }
        // A table is extracted focused, so the error's path is relative to `key` (figment's
        // `extract_inner` puts `key` last); a leaf's error is about `key` itself.
        if let Ok(Value::Dict(..)) = self.figment.find_value(key) {
            return self
                .figment
                .focus(key)
                .extract_lossy()
                .map_err(|error| ConfigError::from_figment(&error, Some(key)));
        }
        self.figment.extract_inner_lossy(key).map_err(|mut error| {
            error.path.clear();
            ConfigError::from_figment(&error, Some(key))
        })
    }

    /// Whether a value is set at `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.figment.contains(key)
    }

    /// Where the value at `key` comes from (`TOML file /etc/app/appsettings.toml`, `environment
    /// variable TOKEN_MGMT__A__B`), if it is set.
    pub fn origin(&self, key: &str) -> Option<String> {
        let metadata = self.figment.find_metadata(key)?;
        Some(origin_of_key(metadata, key))
    }

    /// The underlying [`Figment`], to add sources or extract other sections.
    pub fn figment(&self) -> &Figment {
        &self.figment
    }
}

fn utf8_pair((name, value): (std::ffi::OsString, std::ffi::OsString)) -> Option<(String, String)> {
    Some((name.into_string().ok()?, value.into_string().ok()?))
}

/// `TOKEN_MGMT__` variables as a figment source: values stay strings (lossy extraction converts
/// them), so `client_id = "0042"` keeps its zeros.
struct Variables {
    values: Dict,
}

impl Variables {
    fn new(variables: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut values = Dict::new();
        for (name, value) in variables {
            let Some(rest) = strip_prefix_ignore_case(&name, VARIABLE_PREFIX) else {
                continue;
            };
            let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            // `A____B` or a trailing `__` names no key.
            if parts.iter().any(String::is_empty) {
                continue;
            }
            insert(&mut values, &parts, Value::from(value));
        }
        Self { values }
    }
}

fn strip_prefix_ignore_case<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let head = name.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &name[prefix.len()..])
}

fn insert(dict: &mut Dict, parts: &[String], value: Value) {
    let (first, rest) = parts.split_first().expect("at least one part");
    if rest.is_empty() {
        dict.insert(first.clone(), value);
        return;
    }
    let entry = dict
        .entry(first.clone())
        .or_insert_with(|| Value::from(Dict::new()));
    if !matches!(entry, Value::Dict(..)) {
        // `A=1` and `A__B=2`: the table wins.
        *entry = Value::from(Dict::new());
    }
    if let Value::Dict(_, inner) = entry {
        insert(inner, rest, value);
    }
}

impl Provider for Variables {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable").interpolater(|_: &Profile, keys: &[&str]| {
            let keys: Vec<String> = keys.iter().map(|k| k.to_ascii_uppercase()).collect();
            format!("{VARIABLE_PREFIX}{}", keys.join("__"))
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.values.clone()))
    }
}

fn file_of(metadata: &Metadata) -> Option<&Path> {
    metadata
        .source
        .as_ref()
        .and_then(figment::Source::file_path)
}

fn origin(metadata: &Metadata) -> String {
    match file_of(metadata) {
        Some(path) => format!("{} {}", metadata.name, path.display()),
        None => metadata.name.to_string(),
    }
}

/// The source and, for a variable, its name.
fn origin_of_key(metadata: &Metadata, key: &str) -> String {
    if file_of(metadata).is_some() {
        return origin(metadata);
    }
    let keys: Vec<&str> = key.split('.').collect();
    format!(
        "{} {}",
        metadata.name,
        metadata.interpolate(&Profile::Default, &keys)
    )
}

/// A configuration problem. The message names the source and the key; `source()` says what is
/// wrong with the value (never the value of a secret).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A configuration file could not be read or parsed.
    #[error("configuration file `{}` is malformed", .file.display())]
    Malformed {
        /// The file.
        file: PathBuf,
        /// What the parser reported.
        source: BoxError,
    },
    /// A value does not fit its key (a string where a number is expected, an unknown key, ...).
    #[error("configuration key `{key}` from {origin} is invalid")]
    Invalid {
        /// The dotted key path, e.g. `token_management.cache_lifetime_buffer`.
        key: String,
        /// Where the value comes from: a file or a variable name.
        origin: String,
        /// What is wrong with it.
        source: BoxError,
    },
    /// A required key is not set.
    #[error("configuration key `{key}` is not set")]
    Missing {
        /// The dotted key path.
        key: String,
    },
}

/// The reason of a [`ConfigError`], as the parser or deserializer phrased it.
#[derive(Debug)]
struct Reason(String);

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Reason {}

fn reason(message: impl Into<String>) -> BoxError {
    Box::new(Reason(message.into()))
}

impl ConfigError {
    /// `prefix`: the key the failed extraction was focused on.
    fn from_figment(error: &figment::Error, prefix: Option<&str>) -> Self {
        let key = prefix
            .into_iter()
            .chain(error.path.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(".");
        let metadata = error.metadata.as_ref();
        // Only loading (no key asked for) reports a file as a whole.
        if let Some(file) = metadata.and_then(file_of).filter(|_| key.is_empty()) {
            return Self::Malformed {
                file: file.to_owned(),
                source: reason(error.kind.to_string()),
            };
        }
        // A secret given with the wrong type would otherwise be echoed by the deserializer.
        let secret = key.contains("secret");
        let cause = match &error.kind {
            figment::error::Kind::InvalidType(_, expected) if secret => {
                format!("invalid type: expected {expected}")
            }
            figment::error::Kind::InvalidValue(_, expected) if secret => {
                format!("invalid value: expected {expected}")
            }
            kind => kind.to_string(),
        };
        Self::Invalid {
            origin: metadata.map_or_else(|| "configuration".to_owned(), |m| origin_of_key(m, &key)),
            key,
            source: reason(cause),
        }
    }
}

/// `[token_management]`: the options' main settings; durations are in seconds.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenManagementSection {
    cache_lifetime_buffer: Option<u64>,
    request_timeout: Option<u64>,
    expiry_safety_margin: Option<u64>,
    failure_cooldown: Option<u64>,
    min_forced_renewal_interval: Option<u64>,
    idle_timeout: Option<u64>,
    cache_key_prefix: Option<String>,
    max_response_body_size: Option<usize>,
    max_cached_tokens: Option<usize>,
    background_refresh: Option<bool>,
    discovery: Option<DiscoverySection>,
    #[serde(default)]
    clients: BTreeMap<String, ClientSection>,
}

/// `[token_management.discovery]`: how discovery documents are cached (seconds) and fetched.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiscoverySection {
    cache_lifetime: Option<u64>,
    eager: Option<bool>,
}

/// `[token_management.clients.<name>]`. Not `Debug`: it holds the secret.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientSection {
    address: Option<String>,
    authority: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_secret_file: Option<PathBuf>,
    scope: Option<String>,
    resources: Option<Vec<String>>,
    parameters: Option<BTreeMap<String, String>>,
    auth_method: Option<String>,
    key_file: Option<PathBuf>,
    key_id: Option<String>,
    cert_file: Option<PathBuf>,
    cert_key_file: Option<PathBuf>,
    allow_insecure_http: Option<bool>,
}

impl AccessTokenManagementOptions {
    /// Sets these options from the `[token_management]` table of `configuration`: the settings it
    /// names and one token client per `[token_management.clients.<name>]` (replacing a client of
    /// that name registered before). Code may adjust the options afterwards.
    ///
    /// # Errors
    ///
    /// A value of the wrong type, an unknown key, an address that is not a URL, an unknown
    /// `auth_method`, a missing or unreadable `client_secret_file`: naming the key and its source.
    /// Keys and certificates are read later, when the options are validated.
    pub fn bind(&mut self, configuration: &Configuration) -> Result<(), ConfigError> {
        if !configuration.contains(TOKEN_MANAGEMENT_KEY) {
            return Ok(());
        }
        let section: TokenManagementSection = configuration.get(TOKEN_MANAGEMENT_KEY)?;
        let seconds = |value: Option<u64>, target: &mut Duration| {
            if let Some(value) = value {
                *target = Duration::from_secs(value);
            }
        };
        seconds(
            section.cache_lifetime_buffer,
            &mut self.cache_lifetime_buffer,
        );
        seconds(section.request_timeout, &mut self.request_timeout);
        seconds(section.expiry_safety_margin, &mut self.expiry_safety_margin);
        seconds(section.failure_cooldown, &mut self.failure_cooldown);
        seconds(
            section.min_forced_renewal_interval,
            &mut self.min_forced_renewal_interval,
        );
        if let Some(idle) = section.idle_timeout {
            self.idle_timeout = Some(Duration::from_secs(idle));
        }
        if let Some(prefix) = section.cache_key_prefix {
            self.cache_key_prefix = prefix;
        }
        if let Some(size) = section.max_response_body_size {
            self.max_response_body_size = size;
        }
        if let Some(max) = section.max_cached_tokens {
            self.max_cached_tokens = max;
        }
        if let Some(enabled) = section.background_refresh {
            self.background_refresh = enabled;
        }
        if let Some(discovery) = section.discovery {
            seconds(discovery.cache_lifetime, &mut self.discovery.cache_lifetime);
            if let Some(eager) = discovery.eager {
                self.discovery.eager = eager;
            }
        }
        for (name, client) in section.clients {
            let options = client.into_options(configuration, &name)?;
            match self.client.clients.get_mut(&name) {
                Some(existing) => *existing = options,
                None => {
                    self.client.clients.add(name, options);
                }
            }
        }
        Ok(())
    }
}

impl ClientSection {
    fn into_options(
        self,
        configuration: &Configuration,
        name: &str,
    ) -> Result<TokenClientOptions, ConfigError> {
        let invalid = |field: &str, cause: BoxError| {
            let key = format!("{TOKEN_MANAGEMENT_KEY}.clients.{name}.{field}");
            ConfigError::Invalid {
                origin: configuration
                    .origin(&key)
                    .unwrap_or_else(|| "configuration".to_owned()),
                key,
                source: cause,
            }
        };
        let mut options = TokenClientOptions::default();
        if let Some(address) = self.address {
            options.address = address
                .parse()
                .map_err(|error: url::ParseError| invalid("address", Box::new(error)))?;
        }
        if let Some(authority) = self.authority {
            options.authority = Some(
                authority
                    .parse()
                    .map_err(|error: url::ParseError| invalid("authority", Box::new(error)))?,
            );
        }
        if let Some(id) = self.client_id {
            options.client_id = id;
        }
        match (self.client_secret, self.client_secret_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "client_secret_file",
                    reason("client_secret and client_secret_file are both set"),
                ));
            }
            (Some(secret), None) => options.client_secret = secret.into(),
            (None, Some(file)) => {
                let secret = std::fs::read_to_string(&file)
                    .map_err(|error| invalid("client_secret_file", Box::new(error)))?;
                // Files written by `echo` or editors end with a newline that is not the secret's.
                let secret = secret.strip_suffix('\n').unwrap_or(&secret);
                let secret = secret.strip_suffix('\r').unwrap_or(secret);
                options.client_secret = secret.into();
            }
            (None, None) => {}
        }
        options.scope = self.scope;
        options.resources = self.resources.unwrap_or_default();
        options.parameters = self.parameters.unwrap_or_default().into_iter().collect();
        options.allow_insecure_http = self.allow_insecure_http.unwrap_or(false);
        let method = self.auth_method.as_deref().unwrap_or("client_secret_basic");
        let requires = |field: &str, value: Option<PathBuf>| {
            value.ok_or_else(|| invalid(field, reason(format!("{method} needs `{field}`"))))
        };
        let certificate = |cert: Option<PathBuf>, key: Option<PathBuf>| {
            Ok::<_, ConfigError>(TlsClientCertificate::from_files(
                requires("cert_file", cert)?,
                requires("cert_key_file", key)?,
            ))
        };
        options.authentication = match method {
            "client_secret_basic" => ClientAuthentication::ClientSecretBasic,
            "client_secret_post" => ClientAuthentication::ClientSecretPost,
            "client_secret_jwt" => {
                ClientAuthentication::ClientSecretJwt(ClientSecretJwt::new(HmacAlgorithm::Hs256))
            }
            "private_key_jwt" => {
                let mut key = PrivateKey::from_file(requires("key_file", self.key_file)?);
                if let Some(id) = self.key_id {
                    key = key.with_key_id(id);
                }
                ClientAuthentication::PrivateKeyJwt(PrivateKeyJwt::new(key))
            }
            "tls_client_auth" => ClientAuthentication::TlsClientAuth(certificate(
                self.cert_file,
                self.cert_key_file,
            )?),
            "self_signed_tls_client_auth" => ClientAuthentication::SelfSignedTlsClientAuth(
                certificate(self.cert_file, self.cert_key_file)?,
            ),
            "none" => ClientAuthentication::None,
            other => {
                return Err(invalid(
                    "auth_method",
                    reason(format!(
                        "unknown method `{other}`; expected client_secret_basic, \
                         client_secret_post, client_secret_jwt, private_key_jwt, tls_client_auth, \
                         self_signed_tls_client_auth or none"
                    )),
                ));
            }
        };
        Ok(options)
    }
}
