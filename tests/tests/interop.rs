//! Client authentication against a real, independent authorization server: the OpenID-certified
//! `oidc-provider` (node, pinned in `tests/interop/package.json`), started per test on 127.0.0.1 at
//! an OS-assigned port (`token_mgmt_tests::interop`). The server's own verification decides: a
//! token is only issued when it accepted the client authentication, scope and resource.
//!
//! Run with `cargo test -p token-mgmt-tests --test interop` after `npm ci` in `tests/interop`.
//! Without node or the package the tests print why and skip, except under CI (`CI=true`), where
//! they fail.

mod interop {
    mod discovery;
    mod dpop;
    mod methods;
    mod mtls;
}

use serde_json::{Value, json};
use token_mgmt::tokens::{
    AccessTokenManagementOptions, AccessTokenManagementService, ClientAccessToken,
    ClientAuthentication, TokenClientOptions, TokenError, TokenRequestParameters,
};
use token_mgmt_tests::interop::AuthorizationServer;

/// The scope every client may ask for without a resource (opaque tokens).
pub const SCOPE: &str = "api:read";
/// The resource indicator the server issues JWT access tokens for.
pub const RESOURCE: &str = "https://api.example.com/";
/// The scopes of [`RESOURCE`].
pub const RESOURCE_SCOPES: &str = "api:read api:write";
/// A client secret long enough for HS512.
pub const SECRET: &str = "interop-secret-0123456789-0123456789-0123456789-0123456789-abcdefgh";

/// oidc-provider metadata of a client `id` with `method`, allowed [`SCOPE`] and the resource's
/// scopes; `extra` is merged in.
pub fn client_metadata(id: &str, method: &str, extra: Value) -> Value {
    let mut metadata = json!({
        "client_id": id,
        "token_endpoint_auth_method": method,
        "scope": RESOURCE_SCOPES,
    });
    if let (Value::Object(target), Value::Object(extra)) = (&mut metadata, extra) {
        target.extend(extra);
    }
    metadata
}

/// Options for client `id` of `server`, authenticating with `authentication`.
pub fn client_options(
    server: &AuthorizationServer,
    id: &str,
    authentication: ClientAuthentication,
) -> TokenClientOptions {
    TokenClientOptions {
        address: server.token_endpoint.clone(),
        client_id: id.into(),
        client_secret: SECRET.into(),
        authentication,
        scope: Some(SCOPE.into()),
        ..Default::default()
    }
}

/// A service with the given clients (registered under their client ids).
pub fn service(clients: Vec<TokenClientOptions>) -> AccessTokenManagementService {
    let named = clients
        .into_iter()
        .map(|client| (client.client_id.clone(), client))
        .collect();
    service_named(named)
}

/// A service with the given clients under the given names.
pub fn service_named(
    clients: Vec<(impl Into<String>, TokenClientOptions)>,
) -> AccessTokenManagementService {
    let mut options = AccessTokenManagementOptions::default();
    for (name, client) in clients {
        options.client.clients.add(name, client);
    }
    AccessTokenManagementService::new(options).expect("valid options")
}

/// A new token for client `name` (never from the cache).
pub async fn fresh_token(
    service: &AccessTokenManagementService,
    name: &str,
) -> Result<ClientAccessToken, TokenError> {
    service
        .get_client_access_token(name, &TokenRequestParameters::force_renewal())
        .await
}

/// Asserts `result` is the server's `invalid_client` answer.
pub fn assert_invalid_client(result: Result<ClientAccessToken, TokenError>) {
    match result {
        Err(TokenError::Endpoint { status, error, .. }) => {
            assert_eq!(status.as_u16(), 401);
            assert_eq!(error.as_deref(), Some("invalid_client"));
        }
        Err(other) => panic!("expected invalid_client, got {other}"),
        Ok(_) => panic!("expected invalid_client, got a token"),
    }
}
