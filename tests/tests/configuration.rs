//! Layered configuration (`appsettings.toml`, `appsettings.{env}.toml`, `TOKEN_MGMT__` variables)
//! and token clients bound from it. Variables are injected, never set in the process.

use std::error::Error as _;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use serde::Deserialize;
use token_mgmt::config::ConfigError;
use token_mgmt::prelude::*;
use token_mgmt::tokens::OptionsError;
use token_mgmt_tests::token_server::TokenServer;

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[derive(Debug, Deserialize, PartialEq)]
struct App {
    a: String,
    b: String,
    c: String,
    n: u32,
}

#[test]
fn files_then_environment_file_then_variables_later_wins() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "appsettings.toml",
        "[app]\na = \"base\"\nb = \"base\"\nc = \"base\"\nn = 1\n",
    );
    write(
        dir.path(),
        "appsettings.Staging.toml",
        "[app]\nb = \"staging\"\nc = \"staging\"\n",
    );
    // Not the selected environment: ignored.
    write(
        dir.path(),
        "appsettings.Production.toml",
        "[app]\na = \"prod\"\n",
    );
    let configuration = Configuration::from_parts(
        dir.path(),
        "Staging",
        vars(&[
            ("TOKEN_MGMT__APP__C", "variable"),
            ("TOKEN_MGMT__APP__N", "7"),
            ("OTHER__APP__A", "not ours"),
        ]),
    )
    .unwrap();
    let app: App = configuration.get("app").unwrap();
    assert_eq!(
        app,
        App {
            a: "base".into(),
            b: "staging".into(),
            c: "variable".into(),
            n: 7,
        }
    );
    assert!(
        configuration
            .origin("app.b")
            .unwrap()
            .ends_with("appsettings.Staging.toml")
    );
    assert_eq!(
        configuration.origin("app.c").unwrap(),
        "environment variable TOKEN_MGMT__APP__C"
    );
    let error = configuration.get::<u32>("app.b").unwrap_err();
    let ConfigError::Invalid { key, origin, .. } = &error else {
        panic!("not Invalid: {error:?}");
    };
    assert_eq!(key, "app.b");
    assert!(origin.ends_with("appsettings.Staging.toml"), "{origin}");
}

#[test]
fn missing_files_are_fine_and_double_underscores_nest_lower_cased_keys() {
    let dir = tempfile::tempdir().unwrap();
    let configuration = Configuration::from_parts(
        dir.path(),
        "Production",
        vars(&[
            (
                "TOKEN_MGMT__TOKEN_MANAGEMENT__CLIENTS__API__CLIENT_ID",
                "0042",
            ),
            ("TOKEN_MGMT__A____B", "no key"),
        ]),
    )
    .unwrap();
    // A string stays a string: the leading zeros are kept.
    let id: String = configuration
        .get("token_management.clients.api.client_id")
        .unwrap();
    assert_eq!(id, "0042");
    assert!(!configuration.contains("a"));
    assert!(matches!(
        configuration.get::<String>("nothing.here"),
        Err(ConfigError::Missing { key }) if key == "nothing.here"
    ));
}

#[test]
fn a_malformed_file_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "appsettings.toml", "[token_management\nx = 1\n");
    let error = Configuration::from_parts(dir.path(), "Production", vars(&[])).unwrap_err();
    let ConfigError::Malformed { file, .. } = &error else {
        panic!("not Malformed: {error:?}");
    };
    assert_eq!(file, &dir.path().join("appsettings.toml"));
    assert!(error.to_string().contains("appsettings.toml"), "{error}");
    assert!(error.source().is_some());
}

#[test]
fn a_wrongly_typed_value_names_the_file_or_the_variable_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "appsettings.toml",
        "[token_management]\ncache_lifetime_buffer = \"a minute\"\n",
    );
    let configuration = Configuration::from_parts(dir.path(), "Production", vars(&[])).unwrap();
    let error = AccessTokenManagementOptions::default()
        .bind(&configuration)
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("token_management.cache_lifetime_buffer"),
        "{message}"
    );
    assert!(message.contains("appsettings.toml"), "{message}");
    assert!(error.source().unwrap().to_string().contains("string"));

    // A variable overrides the bad value; its string is read as a number.
    let configuration = Configuration::from_parts(
        dir.path(),
        "Production",
        vars(&[("TOKEN_MGMT__TOKEN_MANAGEMENT__CACHE_LIFETIME_BUFFER", "45")]),
    )
    .unwrap();
    let mut options = AccessTokenManagementOptions::default();
    options.bind(&configuration).unwrap();
    assert_eq!(options.cache_lifetime_buffer, Duration::from_secs(45));
}

#[test]
fn a_wrongly_typed_variable_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let configuration = Configuration::from_parts(
        dir.path(),
        "Production",
        vars(&[("TOKEN_MGMT__TOKEN_MANAGEMENT__REQUEST_TIMEOUT", "soon")]),
    )
    .unwrap();
    let error = AccessTokenManagementOptions::default()
        .bind(&configuration)
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "configuration key `token_management.request_timeout` from environment variable \
         TOKEN_MGMT__TOKEN_MANAGEMENT__REQUEST_TIMEOUT is invalid"
    );
}

#[test]
fn a_wrongly_typed_secret_is_not_echoed() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "appsettings.toml",
        "[token_management.clients.api]\nclient_secret = 987654321\n",
    );
    let configuration = Configuration::from_parts(dir.path(), "Production", vars(&[])).unwrap();
    let error = AccessTokenManagementOptions::default()
        .bind(&configuration)
        .unwrap_err();
    let chain = format!("{error} {} {error:?}", error.source().unwrap());
    assert!(
        chain.contains("token_management.clients.api.client_secret"),
        "{chain}"
    );
    assert!(!chain.contains("987654321"), "{chain}");
}

#[test]
fn unknown_keys_and_methods_and_bad_addresses_name_the_client_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("clinet_id = \"x\"", "token_management.clients.api"),
        (
            "auth_method = \"magic\"",
            "token_management.clients.api.auth_method",
        ),
        (
            "address = \"not a url\"",
            "token_management.clients.api.address",
        ),
        (
            "authority = \"not a url\"",
            "token_management.clients.api.authority",
        ),
        (
            "auth_method = \"private_key_jwt\"",
            "token_management.clients.api.key_file",
        ),
        (
            "client_secret_file = \"/nonexistent/secret\"",
            "token_management.clients.api.client_secret_file",
        ),
    ];
    for (line, key) in cases {
        write(
            dir.path(),
            "appsettings.toml",
            &format!("[token_management.clients.api]\n{line}\n"),
        );
        let configuration = Configuration::from_parts(dir.path(), "Production", vars(&[])).unwrap();
        let error = AccessTokenManagementOptions::default()
            .bind(&configuration)
            .unwrap_err();
        assert!(error.to_string().contains(key), "{line}: {error}");
        assert!(error.source().is_some(), "{line}");
    }
}

#[tokio::test]
async fn bound_client_with_a_secret_file_requests_tokens_with_every_option() {
    let server = TokenServer::start();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "secret.txt", "from-file\n");
    write(
        dir.path(),
        "appsettings.toml",
        &format!(
            r#"
[token_management]
cache_lifetime_buffer = 30
request_timeout = 3
expiry_safety_margin = 2
failure_cooldown = 4
min_forced_renewal_interval = 6
idle_timeout = 600
cache_key_prefix = "app::"
max_response_body_size = 4096
max_cached_tokens = 99
background_refresh = false

[token_management.clients.api]
address = "{}"
client_id = "worker"
client_secret_file = "{}"
auth_method = "client_secret_post"
scope = "api.read api.write"
resources = ["urn:one", "urn:two"]
parameters = {{ audience = "api" }}
"#,
            server.url(),
            dir.path().join("secret.txt").display()
        ),
    );
    let configuration = Configuration::from_parts(dir.path(), "Production", vars(&[])).unwrap();
    let mut options = AccessTokenManagementOptions::default();
    options.bind(&configuration).unwrap();
    assert_eq!(options.cache_lifetime_buffer, Duration::from_secs(30));
    assert_eq!(options.request_timeout, Duration::from_secs(3));
    assert_eq!(options.expiry_safety_margin, Duration::from_secs(2));
    assert_eq!(options.failure_cooldown, Duration::from_secs(4));
    assert_eq!(options.min_forced_renewal_interval, Duration::from_secs(6));
    assert_eq!(options.idle_timeout, Some(Duration::from_secs(600)));
    assert_eq!(options.cache_key_prefix, "app::");
    assert_eq!(options.max_response_body_size, 4096);
    assert_eq!(options.max_cached_tokens, 99);
    assert!(!options.background_refresh);
    let client = options.client.clients.get("api").unwrap();
    assert_eq!(client.authentication.method(), "client_secret_post");
    assert!(!client.allow_insecure_http);
    assert!(!format!("{options:?}").contains("from-file"));

    let service = AccessTokenManagementService::builder(options)
        .build()
        .unwrap();
    service
        .get_client_access_token("api", &TokenRequestParameters::default())
        .await
        .unwrap();
    let request = server.last_request().unwrap();
    assert_eq!(request.form_value("client_id"), Some("worker"));
    // The file's trailing newline is not part of the secret.
    assert_eq!(request.form_value("client_secret"), Some("from-file"));
    assert_eq!(request.form_value("scope"), Some("api.read api.write"));
    assert_eq!(request.form_values("resource"), ["urn:one", "urn:two"]);
    assert_eq!(request.form_value("audience"), Some("api"));
}

#[tokio::test]
async fn private_key_jwt_reads_the_key_file_and_sends_its_key_id() {
    let server = TokenServer::start();
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    write(dir.path(), "key.pem", &key.serialize_pem());
    let configuration = Configuration::from_parts(
        dir.path(),
        "Production",
        vars(&[
            (
                "TOKEN_MGMT__TOKEN_MANAGEMENT__CLIENTS__JWT__ADDRESS",
                &server.url(),
            ),
            (
                "TOKEN_MGMT__TOKEN_MANAGEMENT__CLIENTS__JWT__CLIENT_ID",
                "worker",
            ),
            (
                "TOKEN_MGMT__TOKEN_MANAGEMENT__CLIENTS__JWT__AUTH_METHOD",
                "private_key_jwt",
            ),
            (
                "TOKEN_MGMT__TOKEN_MANAGEMENT__CLIENTS__JWT__KEY_FILE",
                dir.path().join("key.pem").to_str().unwrap(),
            ),
            ("TOKEN_MGMT__TOKEN_MANAGEMENT__CLIENTS__JWT__KEY_ID", "k-1"),
        ]),
    )
    .unwrap();
    let mut options = AccessTokenManagementOptions::default();
    options.bind(&configuration).unwrap();
    options.validate().unwrap();
    let service = AccessTokenManagementService::builder(options)
        .build()
        .unwrap();
    service
        .get_client_access_token("jwt", &TokenRequestParameters::default())
        .await
        .unwrap();
    let request = server.last_request().unwrap();
    let assertion = request.form_value("client_assertion").unwrap();
    let header = URL_SAFE_NO_PAD
        .decode(assertion.split('.').next().unwrap())
        .unwrap();
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    assert_eq!(header["kid"], "k-1");
    assert_eq!(header["alg"], "ES256");
}

#[test]
fn tls_methods_none_and_insecure_http_are_bound() {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = CertificateParams::new(vec!["worker".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap()
        .pem();
    write(dir.path(), "client.crt", &cert);
    write(dir.path(), "client.key", &key.serialize_pem());
    let (crt, key) = (dir.path().join("client.crt"), dir.path().join("client.key"));
    write(
        dir.path(),
        "appsettings.toml",
        &format!(
            r#"
[token_management.clients.mtls]
address = "https://idp.example.com/token"
client_id = "a"
auth_method = "tls_client_auth"
cert_file = "{crt}"
cert_key_file = "{key}"

[token_management.clients.self_signed]
address = "https://idp.example.com/token"
client_id = "b"
auth_method = "self_signed_tls_client_auth"
cert_file = "{crt}"
cert_key_file = "{key}"

[token_management.clients.public]
address = "http://idp.internal/token"
client_id = "c"
auth_method = "none"
allow_insecure_http = true

[token_management.clients.hmac]
address = "https://idp.example.com/token"
client_id = "d"
client_secret = "0123456789abcdef0123456789abcdef"
auth_method = "client_secret_jwt"
"#,
            crt = crt.display(),
            key = key.display()
        ),
    );
    let configuration = Configuration::from_parts(dir.path(), "Production", vars(&[])).unwrap();
    let mut options = AccessTokenManagementOptions::default();
    options.bind(&configuration).unwrap();
    let shown = format!("{configuration:?} {options:?}");
    assert!(!shown.contains("0123456789abcdef"), "{shown}");
    // Validation reads the certificates and keys: they were wired from the files.
    options.validate().unwrap();
    let clients = &options.client.clients;
    let method = |name| clients.get(name).unwrap().authentication.method();
    assert_eq!(method("mtls"), "tls_client_auth");
    assert_eq!(method("self_signed"), "self_signed_tls_client_auth");
    assert_eq!(method("public"), "none");
    assert_eq!(method("hmac"), "client_secret_jwt");
    assert!(clients.get("public").unwrap().allow_insecure_http);

    // A certificate file that is not there is reported by validation, naming the client.
    std::fs::remove_file(&crt).unwrap();
    let mut options = AccessTokenManagementOptions::default();
    options.bind(&configuration).unwrap();
    let problems = match options.validate().unwrap_err() {
        OptionsError::Multiple(problems) => problems,
        other => vec![other],
    };
    assert!(
        problems.iter().any(
            |p| matches!(p, OptionsError::ClientCertificate { client, .. } if client == "mtls")
        )
    );
}

#[test]
fn bind_replaces_a_client_of_the_same_name_and_code_adjusts_after() {
    let dir = tempfile::tempdir().unwrap();
    let configuration = Configuration::from_parts(
        dir.path(),
        "Production",
        vars(&[
            (
                "TOKEN_MGMT__TOKEN_MANAGEMENT__CLIENTS__API__CLIENT_ID",
                "from-config",
            ),
            (
                "TOKEN_MGMT__TOKEN_MANAGEMENT__CLIENTS__API__ADDRESS",
                "https://idp.example.com/token",
            ),
        ]),
    )
    .unwrap();
    let mut options = AccessTokenManagementOptions::default();
    options.client.clients.add(
        "api",
        TokenClientOptions {
            client_id: "from-code".into(),
            ..Default::default()
        },
    );
    options.bind(&configuration).unwrap();
    assert_eq!(options.client.clients.len(), 1);
    let api = options.client.clients.get_mut("api").unwrap();
    assert_eq!(api.client_id, "from-config");
    api.scope = Some("adjusted".into());
    assert_eq!(
        options.client.clients.get("api").unwrap().scope.as_deref(),
        Some("adjusted")
    );
}

#[test]
fn a_host_reads_its_configuration_and_reports_a_malformed_file_from_build() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "appsettings.Test.toml",
        "[token_management.clients.api]\naddress = \"https://idp.example.com/token\"\n",
    );
    let mut seen = None;
    let host = Host::builder()
        .handle_signals(false)
        .configuration_source(dir.path())
        .configuration_variables(vars(&[(
            "TOKEN_MGMT__TOKEN_MANAGEMENT__CLIENTS__API__CLIENT_ID",
            "worker",
        )]))
        .environment("Test")
        .configure_services(|ctx, services| {
            seen = Some(ctx.configuration().clone());
            services.add_access_token_management(|options| {
                options.bind(ctx.configuration())?;
                options.client.clients.get_mut("api").unwrap().client_secret = "s".into();
                Ok(())
            });
            Ok(())
        })
        .build()
        .unwrap();
    let service = host
        .services()
        .get_required::<AccessTokenManagementService>()
        .unwrap();
    drop(service);
    let seen = seen.unwrap();
    let id: String = seen.get("token_management.clients.api.client_id").unwrap();
    assert_eq!(id, "worker");
    assert!(seen.contains("token_management.clients.api.address"));

    write(dir.path(), "appsettings.toml", "this is = not toml =\n");
    let error = Host::builder()
        .handle_signals(false)
        .configuration_source(dir.path())
        .configuration_variables(vars(&[]))
        .build()
        .unwrap_err();
    let [BuildProblem::Configuration { context, source }] = error.problems() else {
        panic!("{error:?}");
    };
    assert_eq!(context, "configuration");
    assert!(source.to_string().contains("appsettings.toml"), "{source}");
}

#[test]
fn a_bind_error_inside_the_registration_is_a_build_problem_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let error = Host::builder()
        .handle_signals(false)
        .configuration_source(dir.path())
        .configuration_variables(vars(&[(
            "TOKEN_MGMT__TOKEN_MANAGEMENT__REQUEST_TIMEOUT",
            "soon",
        )]))
        .configure_services(|ctx, services| {
            services.add_access_token_management(|options| {
                options.bind(ctx.configuration())?;
                Ok(())
            });
            Ok(())
        })
        .build()
        .unwrap_err();
    let shown = error_chain(&error).to_string();
    assert!(
        shown.contains("add_access_token_management")
            && shown.contains("TOKEN_MGMT__TOKEN_MANAGEMENT__REQUEST_TIMEOUT")
            && shown.contains("token_management.request_timeout"),
        "{shown}"
    );
}

#[test]
fn an_authority_and_the_discovery_settings_are_bound() {
    let issuer = "https://idp.example.com/tenant";
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "appsettings.toml",
        &format!(
            "[token_management.discovery]\ncache_lifetime = 120\neager = true\n\n\
             [token_management.clients.api]\nauthority = \"{issuer}\"\nclient_id = \"worker\"\n\
             client_secret = \"secret\"\n"
        ),
    );
    let variables = vars(&[(
        "TOKEN_MGMT__TOKEN_MANAGEMENT__DISCOVERY__CACHE_LIFETIME",
        "300",
    )]);
    let configuration = Configuration::from_parts(dir.path(), "Production", variables).unwrap();
    let mut options = AccessTokenManagementOptions::default();
    options.bind(&configuration).unwrap();
    assert_eq!(
        options.discovery.cache_lifetime,
        Duration::from_secs(300),
        "the variable wins"
    );
    assert!(options.discovery.eager);
    let client = options.client.clients.get("api").unwrap();
    assert_eq!(
        client
            .authority
            .as_ref()
            .map(|a| a.as_str().trim_end_matches('/')),
        Some(issuer)
    );
    options.validate().unwrap();
}
