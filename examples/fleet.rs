//! One instance of a fleet that shares its access tokens through Redis.
//!
//! Every copy started with the same variables uses the same token: the first one that needs it
//! requests it (holding a lock in Redis while it does), the others read it from Redis; when the API
//! rejects it (`401`), the copy that saw the rejection renews it and the others drop their in-memory
//! copy. See README.md, "Sharing tokens across instances".
//!
//! ```sh
//! redis-server --port 6379 --save '' &
//! export REDIS_URL=redis://127.0.0.1:6379 TOKEN_CACHE_KEY=$(head -c 32 /dev/urandom | base64)
//! export TOKEN_ENDPOINT=https://idp.example.com/connect/token CLIENT_ID=worker CLIENT_SECRET=... \
//!   SCOPE=api API_BASE_ADDRESS=https://api.example.com/
//! for i in 1 2 3 4 5 6 7 8; do echo call | cargo run -q --example fleet & done; wait
//! # eight API calls, one token request
//! ```
//!
//! Variables: `TOKEN_ENDPOINT`, `CLIENT_ID`, `CLIENT_SECRET`, `SCOPE` (optional), `API_BASE_ADDRESS`,
//! and the shared cache's (`REDIS_URL` and `TOKEN_CACHE_KEY` at least: see
//! [`token_mgmt_examples::shared_cache`]).
//!
//! It prints `{"ready":true}`, then answers each line of its standard input with one JSON line until
//! the input ends:
//!
//! - `call`: `GET test` on the API, with the token: `{"ok":true,"token":"<digest>"}`;
//! - `token [RESOURCE]`: the token (for a resource indicator): `{"ok":true,"token":"<digest>"}`;
//! - a failure: `{"ok":false,"error":"<what failed, and why>"}`.
//!
//! A token is shown as the first 16 hex digits of its SHA-256, never itself.

use std::io::Write as _;
use std::sync::Arc;

use serde_json::json;
use sha2::{Digest as _, Sha256};
use token_mgmt::prelude::*;
use tokio::io::AsyncBufReadExt as _;
use url::Url;

/// The token client's name.
const TOKEN_CLIENT: &str = "identityserver";
/// The API client's name.
const API_CLIENT: &str = "api";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let variable = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|value| !value.is_empty())
            .ok_or_else(|| format!("{name} must be set"))
    };
    let url = |name: &str| -> Result<Url, BoxError> {
        let value = variable(name)?;
        value
            .parse()
            .map_err(|error| format!("{name} `{value}` is not a URL: {error}").into())
    };
    let token_endpoint = url("TOKEN_ENDPOINT")?;
    let api_base_address = url("API_BASE_ADDRESS")?;
    let client_id = variable("CLIENT_ID")?;
    let client_secret = variable("CLIENT_SECRET")?;
    let scope = variable("SCOPE").ok();
    let cache = token_mgmt_examples::shared_cache::from_env()
        .await?
        .ok_or("REDIS_URL must be set: the fleet shares its tokens through Redis")?;

    let mut services = ServiceCollection::new();
    services
        .add_access_token_management(|options| {
            options.client.clients.add(
                TOKEN_CLIENT,
                TokenClientOptions {
                    address: token_endpoint,
                    client_id,
                    client_secret: client_secret.into(),
                    scope,
                    ..Default::default()
                },
            );
            Ok(())
        })
        .cache(Arc::new(cache));
    services.add_client_access_token_client(API_CLIENT, None, |client| {
        client.base_address = Some(api_base_address);
        Ok(())
    });
    let provider = services.build()?;
    let tokens = provider.get_required::<AccessTokenManagementService>()?;
    let api = provider
        .get_required::<HttpClientFactory>()?
        .create_client(API_CLIENT)?;

    print_line(&json!({ "ready": true }));
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let mut words = line.split_whitespace();
        let outcome: Result<ClientAccessToken, BoxError> = match (words.next(), words.next()) {
            // The handler adds the token, and on a 401 renews it and sends the request again.
            (Some("call"), None) => match api.get_string("test").await {
                Ok(_) => token(&tokens, None).await,
                Err(error) => Err(error.into()),
            },
            (Some("token"), resource) => token(&tokens, resource).await,
            _ => Err(format!("unknown command `{line}`: use `call` or `token [RESOURCE]`").into()),
        };
        print_line(&match outcome {
            Ok(token) => json!({ "ok": true, "token": digest(&token) }),
            Err(error) => json!({ "ok": false, "error": format!("{:#}", error_chain(&*error)) }),
        });
    }
    Ok(())
}

/// The client's token (from the cache, after a call), for `resource` if given.
async fn token(
    tokens: &AccessTokenManagementService,
    resource: Option<&str>,
) -> Result<ClientAccessToken, BoxError> {
    let parameters = TokenRequestParameters {
        resources: resource.into_iter().map(str::to_owned).collect(),
        ..Default::default()
    };
    Ok(tokens
        .get_client_access_token(TOKEN_CLIENT, &parameters)
        .await?)
}

/// The first 16 hex digits of the token's SHA-256: tells tokens apart without showing them.
fn digest(token: &ClientAccessToken) -> String {
    Sha256::digest(token.access_token().as_bytes())[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn print_line(value: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    // A reader that went away ends nothing here: the input's end stops the process.
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}
