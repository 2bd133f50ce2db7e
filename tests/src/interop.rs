//! The interop authorization server: `oidc-provider` (pinned in `tests/interop/package.json`),
//! run by node on 127.0.0.1 at an OS-assigned port, configured from a JSON the test writes.
//!
//! `.ci/run` installs it (`npm ci` in `tests/interop`). Under CI (`CI=true`) a missing node or
//! package fails the tests; elsewhere [`skip_reason`] tells the test to skip and why.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};
use url::Url;

/// How long the server may take to print its address.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How many times a server that does not start is started again before the test fails.
const STARTUP_ATTEMPTS: usize = 2;

/// `tests/interop`: the server script, its package.json and lock file.
pub fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// Why the interop tests cannot run here (no node, or `npm ci` not run), or `None` when they can.
///
/// # Panics
///
/// Under CI (`CI=true`), when they cannot run: there the suite must never be skipped.
pub fn skip_reason() -> Option<String> {
    let reason = unavailable();
    if let Some(reason) = &reason {
        if std::env::var("CI").is_ok_and(|ci| ci == "true") {
            panic!("interop tests must run under CI, but {reason}");
        }
        eprintln!("skipping the interop test: {reason}");
    }
    reason
}

fn unavailable() -> Option<String> {
    match Command::new("node").arg("--version").output() {
        Ok(output) if output.status.success() => {}
        Ok(_) => return Some("`node --version` failed".to_owned()),
        Err(error) => return Some(format!("node is not installed ({error})")),
    }
    let package = interop_dir().join("node_modules/oidc-provider/package.json");
    if !package.exists() {
        return Some(format!(
            "{} is missing: run `npm ci` in {}",
            package.display(),
            interop_dir().display()
        ));
    }
    None
}

/// Skips the calling test (returns) when the interop server cannot run here; see [`skip_reason`].
#[macro_export]
macro_rules! require_interop {
    () => {
        if $crate::interop::skip_reason().is_some() {
            return;
        }
    };
}

/// TLS settings of the server: its certificate and key, and the CA it trusts for client
/// certificates.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The server's certificate (PEM).
    pub cert: String,
    /// The server's private key (PEM).
    pub key: String,
    /// The CA whose client certificates count as verified (PEM).
    pub client_ca: String,
}

/// What the server is configured with.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    /// oidc-provider client metadata; a client may carry `jwks_pem` (see `server.mjs`).
    pub clients: Vec<Value>,
    /// Scopes the server knows (for tokens without a resource).
    pub scopes: Vec<String>,
    /// Resource indicators and the scopes each grants (tokens for them are JWTs).
    pub resources: Vec<(String, String)>,
    /// https with client certificates, or plain http.
    pub tls: Option<ServerTls>,
    /// Client ids whose DPoP proofs must carry a server nonce.
    pub dpop_require_nonce: Vec<String>,
    /// The DPoP proof algorithms the server accepts (`None`: RS256, PS256, ES256, ES384, EdDSA).
    pub dpop_signing_algs: Option<Vec<String>>,
}

/// A running oidc-provider. Killed on drop.
pub struct AuthorizationServer {
    child: Child,
    /// Held so the server exits on its own if this process dies without dropping us.
    _stdin: ChildStdin,
    config_path: PathBuf,
    /// The issuer identifier (`http(s)://127.0.0.1:PORT`).
    pub issuer: String,
    /// The token endpoint.
    pub token_endpoint: Url,
    stderr: Arc<Mutex<String>>,
}

impl AuthorizationServer {
    /// Starts the server and waits for it to listen.
    ///
    /// # Panics
    ///
    /// When it does not start in two attempts (the panic shows what each printed
    /// and how it ended).
    pub fn start(config: &ServerConfig) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let config_path = std::env::temp_dir().join(format!(
            "token-mgmt-interop-{}-{}.json",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let resources: serde_json::Map<String, Value> = config
            .resources
            .iter()
            .map(|(resource, scope)| (resource.clone(), Value::from(scope.as_str())))
            .collect();
        let tls = config
            .tls
            .as_ref()
            .map(|tls| json!({ "cert": tls.cert, "key": tls.key, "ca": tls.client_ca }));
        let document = json!({
            "clients": config.clients,
            "scopes": config.scopes,
            "resources": resources,
            "tls": tls,
            "dpop_require_nonce": config.dpop_require_nonce,
            "dpop_signing_algs": config.dpop_signing_algs,
        });
        std::fs::write(&config_path, document.to_string()).expect("write the server config");
        // A node that does not come up is started once more (seen once in three CI-like runs of
        // the whole workspace: no line on stdout, nothing on stderr but node's version warning);
        // the panic shows what every attempt printed and how it ended.
        let mut failures = Vec::new();
        for attempt in 1..=STARTUP_ATTEMPTS {
            match Self::spawn(&config_path) {
                Ok(server) => return server,
                Err(failure) => failures.push(format!("attempt {attempt}: {failure}")),
            }
        }
        let _ = std::fs::remove_file(&config_path);
        panic!(
            "the interop authorization server did not start:\n{}",
            failures.join("\n")
        );
    }

    /// One start of the server on `config_path`: the server once it listens, or what it printed
    /// and how it ended.
    fn spawn(config_path: &Path) -> Result<Self, String> {
        let mut child = Command::new("node")
            .arg(interop_dir().join("server.mjs"))
            .arg(config_path)
            .current_dir(interop_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start node");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let collected = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                collected
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        let (sender, receiver) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let line = receiver.recv_timeout(STARTUP_TIMEOUT).unwrap_or_default();
        let Ok(started) = serde_json::from_str::<Value>(&line) else {
            let _ = child.kill();
            let status = child.wait();
            let stderr = stderr.lock().unwrap().clone();
            return Err(format!(
                "stdout: {line:?}; exit: {status:?}; stderr:\n{stderr}"
            ));
        };
        Ok(Self {
            child,
            _stdin: stdin,
            config_path: config_path.to_owned(),
            issuer: started["issuer"].as_str().expect("issuer").to_owned(),
            token_endpoint: started["token_endpoint"]
                .as_str()
                .expect("token_endpoint")
                .parse()
                .expect("token endpoint URL"),
            stderr,
        })
    }

    /// How many token requests the server received so far.
    ///
    /// # Panics
    ///
    /// When the server does not answer.
    pub async fn token_requests(&self) -> u64 {
        let counts: Value = reqwest::get(format!("{}/test/counts", self.issuer))
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("GET /test/counts")
            .json()
            .await
            .expect("counts JSON");
        counts["token_requests"].as_u64().expect("token_requests")
    }

    /// What the server wrote on stderr so far (its warnings and `server_error` reports).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for AuthorizationServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config_path);
    }
}

/// A private key made by node's crypto, in every encoding the library reads.
#[derive(Debug, Clone)]
pub struct NodeKey {
    /// PKCS#8 PEM.
    pub pkcs8: String,
    /// PKCS#1 (RSA) or SEC1 (EC) PEM; `None` for Ed25519.
    pub traditional: Option<String>,
    /// The private JWK (JSON).
    pub jwk: String,
    /// The public key (SPKI PEM), to register with the server.
    pub public: String,
}

/// Keys generated once per test binary by `tests/interop/keys.mjs`.
#[derive(Debug, Clone)]
pub struct NodeKeys {
    /// RSA, 2048 bits.
    pub rsa: NodeKey,
    /// EC P-256.
    pub p256: NodeKey,
    /// EC P-384.
    pub p384: NodeKey,
    /// Ed25519.
    pub ed25519: NodeKey,
    /// Another RSA key (not registered anywhere: the "wrong key").
    pub other_rsa: NodeKey,
}

/// The keys (generated on first use).
///
/// # Panics
///
/// When node cannot run `keys.mjs`.
pub fn node_keys() -> &'static NodeKeys {
    static KEYS: OnceLock<NodeKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let first = generate_keys();
        let second = generate_keys();
        NodeKeys {
            rsa: key(&first["rsa"]),
            p256: key(&first["p256"]),
            p384: key(&first["p384"]),
            ed25519: key(&first["ed25519"]),
            other_rsa: key(&second["rsa"]),
        }
    })
}

fn generate_keys() -> Value {
    let output = Command::new("node")
        .arg(interop_dir().join("keys.mjs"))
        .output()
        .expect("run node keys.mjs");
    assert!(
        output.status.success(),
        "keys.mjs failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("keys.mjs prints JSON")
}

fn key(value: &Value) -> NodeKey {
    let text = |name: &str| value[name].as_str().map(str::to_owned);
    NodeKey {
        pkcs8: text("pkcs8").expect("pkcs8"),
        traditional: text("traditional"),
        jwk: value["jwk"].to_string(),
        public: text("public").expect("public"),
    }
}

/// The claims of a JWT (its payload decoded, signature not checked: the server that issued it is
/// trusted here).
///
/// # Panics
///
/// When `jwt` is not a JWT.
pub fn jwt_claims(jwt: &str) -> Value {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}
