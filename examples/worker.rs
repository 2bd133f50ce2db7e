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
//! `CLIENT_SECRET` (for the `client_secret_*` methods), `SCOPE` (optional), `RESOURCE` (optional, a
//! resource indicator), `API_BASE_ADDRESS`, `WORKER_INTERVAL_SECONDS` (optional, default 5).
//! Ctrl-C or SIGTERM stops it cleanly.
//!
//! Client authentication: `CLIENT_AUTH_METHOD` (default `client_secret_basic`; also
//! `client_secret_post`, `client_secret_jwt`, `private_key_jwt`, `tls_client_auth`,
//! `self_signed_tls_client_auth`, `none`); `CLIENT_KEY_FILE` (PEM or JWK, for `private_key_jwt`) and
//! `CLIENT_KEY_ID` (optional, its `kid`); `CLIENT_CERT_FILE` and `CLIENT_CERT_KEY_FILE` (PEM, for
//! the mTLS methods).
//!
//! DPoP (RFC 9449): `DPOP=1` binds the tokens to a key generated at start-up (ES256), or to the key
//! in `DPOP_KEY_FILE` (PEM or JWK); the server decides (`token_type: DPoP`, or Bearer as before).
//!
//! A fleet: with `REDIS_URL` set, tokens are shared through Redis, encrypted with `TOKEN_CACHE_KEY`
//! (32 bytes in base64; without it the worker refuses to start, unless `TOKEN_CACHE_PLAINTEXT=1`),
//! so copies started with the same variables make one token request between them (see
//! [`token_mgmt_examples::shared_cache`] for the other variables).

use std::env;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use token_mgmt::prelude::*;
use token_mgmt::tokens::{
    ClientSecretJwt, DpopKey, PrivateKey, PrivateKeyJwt, TlsClientCertificate,
};
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

/// Where the worker gets its tokens and what it calls.
struct Settings {
    token_endpoint: Url,
    client_id: String,
    client_secret: String,
    authentication: ClientAuthentication,
    dpop: Option<DpopKey>,
    scope: Option<String>,
    resource: Option<String>,
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
        let variable = |name: &str| env::var(name).ok().filter(|value| !value.is_empty());
        let dpop = dpop_from(variable)?;
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
                authentication: ClientAuthentication::default(),
                dpop,
                scope: Some("api".into()),
                resource: None,
                api_base_address: demo.api_base(),
                interval,
            };
            return Ok((settings, Some(demo)));
        };
        let authentication = authentication_from(variable)?;
        let client_secret = if authentication.method().starts_with("client_secret_") {
            required("CLIENT_SECRET")?
        } else {
            String::new()
        };
        let settings = Self {
            token_endpoint: parse_url("TOKEN_ENDPOINT", &token_endpoint)?,
            client_id: required("CLIENT_ID")?,
            client_secret,
            authentication,
            dpop,
            scope: variable("SCOPE"),
            resource: variable("RESOURCE"),
            api_base_address: parse_url("API_BASE_ADDRESS", &required("API_BASE_ADDRESS")?)?,
            interval,
        };
        Ok((settings, None))
    }
}

/// The client authentication named by `CLIENT_AUTH_METHOD`, with its key or certificate files;
/// `variable` reads a (non-empty) variable.
fn authentication_from(
    variable: impl Fn(&str) -> Option<String>,
) -> Result<ClientAuthentication, BoxError> {
    let method = variable("CLIENT_AUTH_METHOD").unwrap_or_else(|| "client_secret_basic".into());
    let file = |name: &str| {
        variable(name).ok_or_else(|| format!("{name} must be set for CLIENT_AUTH_METHOD={method}"))
    };
    let certificate = || -> Result<TlsClientCertificate, BoxError> {
        Ok(TlsClientCertificate::from_files(
            file("CLIENT_CERT_FILE")?,
            file("CLIENT_CERT_KEY_FILE")?,
        ))
    };
    Ok(match method.as_str() {
        "client_secret_basic" => ClientAuthentication::ClientSecretBasic,
        "client_secret_post" => ClientAuthentication::ClientSecretPost,
        "client_secret_jwt" => ClientAuthentication::ClientSecretJwt(ClientSecretJwt::default()),
        "private_key_jwt" => {
            let mut key = PrivateKey::from_file(file("CLIENT_KEY_FILE")?);
            if let Some(key_id) = variable("CLIENT_KEY_ID") {
                key = key.with_key_id(key_id);
            }
            ClientAuthentication::PrivateKeyJwt(PrivateKeyJwt::new(key))
        }
        "tls_client_auth" => ClientAuthentication::TlsClientAuth(certificate()?),
        "self_signed_tls_client_auth" => {
            ClientAuthentication::SelfSignedTlsClientAuth(certificate()?)
        }
        "none" => ClientAuthentication::None,
        other => {
            return Err(format!(
                "CLIENT_AUTH_METHOD `{other}` is not one of client_secret_basic, client_secret_post, \
                 client_secret_jwt, private_key_jwt, tls_client_auth, self_signed_tls_client_auth, none"
            )
            .into());
        }
    })
}

/// The DPoP key asked for with `DPOP=1` (`DPOP_KEY_FILE`, or generated); `None` without `DPOP`.
fn dpop_from(variable: impl Fn(&str) -> Option<String>) -> Result<Option<DpopKey>, BoxError> {
    match variable("DPOP").as_deref() {
        None | Some("0" | "false") => Ok(None),
        Some("1" | "true") => Ok(Some(match variable("DPOP_KEY_FILE") {
            Some(path) => DpopKey::from_key(PrivateKey::from_file(path)),
            None => DpopKey::generate(),
        })),
        Some(other) => Err(format!("DPOP `{other}` is not 1 or 0").into()),
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
    let shared_cache = token_mgmt_examples::shared_cache::from_env().await?;
    builder
        .configure_services(move |_ctx, services| {
            let token_management = services.add_access_token_management(|options| {
                options.client.clients.add(
                    "identityserver",
                    TokenClientOptions {
                        address: settings.token_endpoint,
                        client_id: settings.client_id,
                        client_secret: settings.client_secret.into(),
                        authentication: settings.authentication,
                        dpop: settings.dpop,
                        scope: settings.scope,
                        resources: settings.resource.into_iter().collect(),
                        ..Default::default()
                    },
                );
                Ok(())
            });
            if let Some(cache) = shared_cache {
                token_management.cache(Arc::new(cache));
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn method(variables: &[(&str, &str)]) -> Result<ClientAuthentication, BoxError> {
        authentication_from(|name| {
            variables
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn dpop_is_turned_on_with_dpop_1() {
        let dpop = |variables: &'static [(&str, &str)]| {
            dpop_from(|name| {
                variables
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_owned())
            })
        };
        assert!(dpop(&[]).unwrap().is_none());
        assert!(dpop(&[("DPOP", "0")]).unwrap().is_none());
        let generated = format!("{:?}", dpop(&[("DPOP", "1")]).unwrap().unwrap());
        assert!(generated.contains("ES256"), "{generated}");
        let file = format!(
            "{:?}",
            dpop(&[("DPOP", "1"), ("DPOP_KEY_FILE", "/run/dpop.pem")])
                .unwrap()
                .unwrap()
        );
        assert!(file.contains("/run/dpop.pem"), "{file}");
        assert_eq!(
            dpop(&[("DPOP", "yes")]).unwrap_err().to_string(),
            "DPOP `yes` is not 1 or 0"
        );
    }

    #[test]
    fn the_method_and_its_files_come_from_the_environment() {
        assert_eq!(method(&[]).unwrap().method(), "client_secret_basic");
        for name in ["client_secret_post", "client_secret_jwt", "none"] {
            assert_eq!(
                method(&[("CLIENT_AUTH_METHOD", name)]).unwrap().method(),
                name
            );
        }
        let jwt = method(&[
            ("CLIENT_AUTH_METHOD", "private_key_jwt"),
            ("CLIENT_KEY_FILE", "/keys/client.pem"),
            ("CLIENT_KEY_ID", "k1"),
        ])
        .unwrap();
        let shown = format!("{jwt:?}");
        assert!(
            shown.contains("/keys/client.pem") && shown.contains("k1"),
            "{shown}"
        );
        let mtls = method(&[
            ("CLIENT_AUTH_METHOD", "tls_client_auth"),
            ("CLIENT_CERT_FILE", "/certs/client.crt"),
            ("CLIENT_CERT_KEY_FILE", "/certs/client.key"),
        ])
        .unwrap();
        assert_eq!(mtls.method(), "tls_client_auth");
        assert!(format!("{mtls:?}").contains("/certs/client.key"));
    }

    #[test]
    fn a_missing_file_or_an_unknown_method_is_named() {
        let error = method(&[("CLIENT_AUTH_METHOD", "private_key_jwt")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "CLIENT_KEY_FILE must be set for CLIENT_AUTH_METHOD=private_key_jwt"
        );
        let error = method(&[("CLIENT_AUTH_METHOD", "self_signed_tls_client_auth")]).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("CLIENT_CERT_FILE must be set")
        );
        let error = method(&[("CLIENT_AUTH_METHOD", "magic")]).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("CLIENT_AUTH_METHOD `magic` is not one of")
        );
    }
}
