//! Discovery against oidc-provider's real metadata document: a client configured with the issuer
//! only (`authority`) finds the token endpoint and gets tokens, with a secret and with a
//! `private_key_jwt` assertion whose default audience is the issuer.

use serde_json::json;
use token_mgmt::tokens::{
    AccessTokenManagementOptions, AccessTokenManagementService, ClientAuthentication, PrivateKey,
    PrivateKeyJwt, TokenClientOptions,
};
use token_mgmt_tests::interop::{AuthorizationServer, ServerConfig, node_keys};
use token_mgmt_tests::require_interop;

use crate::{RESOURCE, RESOURCE_SCOPES, SCOPE, SECRET, client_metadata, fresh_token};

#[tokio::test]
async fn clients_configured_with_the_issuer_discover_the_token_endpoint() {
    require_interop!();
    let keys = node_keys();
    let server = AuthorizationServer::start(&ServerConfig {
        clients: vec![
            client_metadata(
                "post",
                "client_secret_post",
                json!({ "client_secret": SECRET }),
            ),
            client_metadata(
                "signed",
                "private_key_jwt",
                json!({ "jwks_pem": [{ "kid": "rsa", "pem": keys.rsa.public }] }),
            ),
        ],
        scopes: vec![SCOPE.into(), "api:write".into()],
        resources: vec![(RESOURCE.into(), RESOURCE_SCOPES.into())],
        tls: None,
        ..Default::default()
    });
    let by_issuer = |id: &str, authentication| TokenClientOptions {
        authority: Some(server.issuer.parse().unwrap()),
        client_id: id.into(),
        client_secret: SECRET.into(),
        authentication,
        scope: Some(SCOPE.into()),
        ..Default::default()
    };
    let mut options = AccessTokenManagementOptions::default();
    options.client.clients.add(
        "post",
        by_issuer("post", ClientAuthentication::ClientSecretPost),
    );
    options.client.clients.add(
        "signed",
        by_issuer(
            "signed",
            ClientAuthentication::PrivateKeyJwt(PrivateKeyJwt::new(
                PrivateKey::from_pem(&keys.rsa.pkcs8).with_key_id("rsa"),
            )),
        ),
    );
    let service = AccessTokenManagementService::new(options).expect("valid options");
    for name in ["post", "signed"] {
        let token = fresh_token(&service, name)
            .await
            .unwrap_or_else(|e| panic!("client {name}: {e}\nserver stderr:\n{}", server.stderr()));
        assert_eq!(token.scope(), Some(SCOPE), "client {name}");
    }
}
