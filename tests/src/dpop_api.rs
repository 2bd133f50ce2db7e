//! A protected API that accepts only DPoP-bound JWT access tokens (RFC 9449 sections 7 and 9), for
//! tests: it checks every request's proof as a resource server must and can demand a new nonce.
//!
//! Each request needs `Authorization: DPoP <JWT>` and one `DPoP` proof: signed by the JWK in its
//! header (`typ` `dpop+jwt`), `htm` the method, `htu` the URL without query, `ath` the token's
//! hash, a recent `iat`, a `jti` never seen before, the server's current nonce, and the key's
//! thumbprint equal to the token's `cnf.jkt`. A missing or stale nonce gets `401` with
//! `WWW-Authenticate: DPoP error="use_dpop_nonce"` and the nonce in `DPoP-Nonce`; every response
//! carries the current nonce. Any other failure is recorded (see [`DpopApi::rejections`]) and
//! answered `401 invalid_dpop_proof` / `invalid_token`.
//!
//! Runs on its own thread and runtime on 127.0.0.1 at an OS-assigned port; stops when dropped.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256,
    RSA_PSS_2048_8192_SHA256, RsaPublicKeyComponents, UnparsedPublicKey,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::interop::jwt_claims;

/// How far a proof's `iat` may be from now, in seconds.
const IAT_WINDOW: u64 = 60;

#[derive(Default)]
struct ApiState {
    nonce: String,
    nonces_issued: u32,
    jtis: HashSet<String>,
    requests: usize,
    nonce_challenges: usize,
    rejections: Vec<String>,
    reject_next_token: bool,
    always_new_nonce: bool,
    tokens: Vec<String>,
}

impl ApiState {
    fn rotate_nonce(&mut self) {
        self.nonces_issued += 1;
        self.nonce = format!("api-nonce-{}", self.nonces_issued);
    }
}

struct Shared {
    addr: SocketAddr,
    state: Mutex<ApiState>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, ApiState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running DPoP-protected API.
pub struct DpopApi {
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl DpopApi {
    /// Starts the API on 127.0.0.1 with a first nonce.
    ///
    /// # Panics
    ///
    /// When it cannot bind or start.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            addr,
            state: Mutex::new(ApiState::default()),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let shutdown =
            crate::serve::serve_on_thread(format!("dpop-api-{}", addr.port()), listener, app)
                .expect("start the API thread");
        let api = Self {
            shared: Arc::clone(&shared),
            shutdown: Some(shutdown),
        };
        api.rotate_nonce();
        api
    }

    /// The URL of `path` on this API.
    pub fn url(&self, path: &str) -> url::Url {
        format!(
            "http://{}/{}",
            self.shared.addr,
            path.trim_start_matches('/')
        )
        .parse()
        .expect("API URL")
    }

    /// Starts demanding a new nonce: the next proof with the old one is challenged.
    pub fn rotate_nonce(&self) {
        self.shared.state().rotate_nonce();
    }

    /// Demands a new nonce on every request (`true`): no proof ever has the current one.
    pub fn always_demand_a_new_nonce(&self, on: bool) {
        self.shared.state().always_new_nonce = on;
    }

    /// Answers the next request that passes every check with `401 invalid_token` (as for a
    /// revoked token).
    pub fn reject_next_token(&self) {
        self.shared.state().reject_next_token = true;
    }

    /// Requests received so far (every round trip).
    pub fn requests(&self) -> usize {
        self.shared.state().requests
    }

    /// Requests answered with `use_dpop_nonce`.
    pub fn nonce_challenges(&self) -> usize {
        self.shared.state().nonce_challenges
    }

    /// Why requests were refused, other than for a nonce (empty when every proof was right).
    pub fn rejections(&self) -> Vec<String> {
        self.shared.state().rejections.clone()
    }

    /// The distinct access tokens accepted so far, in order of first use.
    pub fn tokens(&self) -> Vec<String> {
        self.shared.state().tokens.clone()
    }
}

impl Drop for DpopApi {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

enum Refusal {
    Nonce,
    Proof(String),
    Token(String),
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    _body: Bytes,
) -> Response {
    let mut state = shared.state();
    state.requests += 1;
    if state.always_new_nonce {
        state.rotate_nonce();
    }
    let htu = format!("http://{}{}", shared.addr, uri.path());
    let result = check(&mut state, &method, &htu, &headers);
    let nonce = state.nonce.clone();
    let (status, challenge) = match result {
        Ok(_) if state.reject_next_token => {
            state.reject_next_token = false;
            (
                StatusCode::UNAUTHORIZED,
                Some(r#"DPoP error="invalid_token", error_description="revoked""#.to_owned()),
            )
        }
        Ok(token) => {
            if !state.tokens.contains(&token) {
                state.tokens.push(token);
            }
            (StatusCode::OK, None)
        }
        Err(Refusal::Nonce) => {
            state.nonce_challenges += 1;
            (
                StatusCode::UNAUTHORIZED,
                Some(
                    r#"DPoP error="use_dpop_nonce", error_description="a nonce is required""#
                        .to_owned(),
                ),
            )
        }
        Err(Refusal::Proof(reason)) => {
            state.rejections.push(reason);
            (
                StatusCode::UNAUTHORIZED,
                Some(r#"DPoP error="invalid_dpop_proof""#.to_owned()),
            )
        }
        Err(Refusal::Token(reason)) => {
            state.rejections.push(reason);
            (
                StatusCode::UNAUTHORIZED,
                Some(r#"DPoP error="invalid_token""#.to_owned()),
            )
        }
    };
    drop(state);
    let mut response = (
        status,
        axum::Json(json!({ "method": method.as_str(), "path": uri.path() })),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert("dpop-nonce", nonce.parse().expect("nonce header"));
    if let Some(challenge) = challenge {
        headers.insert(
            header::WWW_AUTHENTICATE,
            challenge.parse().expect("challenge header"),
        );
    }
    response
}

/// Checks the request; the access token when it passes.
fn check(
    state: &mut ApiState,
    method: &Method,
    htu: &str,
    headers: &HeaderMap,
) -> Result<String, Refusal> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("DPoP "))
        .ok_or_else(|| Refusal::Token("no `Authorization: DPoP` header".into()))?
        .to_owned();
    let proofs: Vec<_> = headers.get_all("dpop").iter().collect();
    let [proof] = proofs.as_slice() else {
        return Err(Refusal::Proof(format!("{} DPoP headers", proofs.len())));
    };
    let proof = proof
        .to_str()
        .map_err(|_| Refusal::Proof("proof not ASCII".into()))?;
    let (header, claims) = verify_proof(proof).map_err(Refusal::Proof)?;
    let fail = |what: &str| Err(Refusal::Proof(what.to_owned()));
    if header["typ"] != "dpop+jwt" {
        return fail("typ");
    }
    if claims["htm"] != method.as_str() {
        return fail("htm");
    }
    if claims["htu"] != htu {
        return Err(Refusal::Proof(format!("htu {} != {htu}", claims["htu"])));
    }
    if claims["ath"] != URL_SAFE_NO_PAD.encode(digest(&SHA256, token.as_bytes())) {
        return fail("ath");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    if claims["iat"]
        .as_u64()
        .is_none_or(|iat| iat.abs_diff(now) > IAT_WINDOW)
    {
        return fail("iat");
    }
    let Some(jti) = claims["jti"].as_str().filter(|j| !j.is_empty()) else {
        return fail("jti missing");
    };
    if !state.jtis.insert(jti.to_owned()) {
        return fail("jti replayed");
    }
    let jkt = jwt_claims(&token)["cnf"]["jkt"].clone();
    if jkt != thumbprint(&header["jwk"]) {
        return Err(Refusal::Token(
            "the proof key is not the token's cnf.jkt".into(),
        ));
    }
    if claims["nonce"] != state.nonce.as_str() {
        return Err(Refusal::Nonce);
    }
    Ok(token)
}

/// The JWK SHA-256 thumbprint (RFC 7638) of a public JWK.
pub fn thumbprint(jwk: &Value) -> String {
    let canonical = match jwk["kty"].as_str() {
        Some("EC") => format!(
            r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
            jwk["crv"], jwk["x"], jwk["y"]
        ),
        Some("RSA") => format!(r#"{{"e":{},"kty":"RSA","n":{}}}"#, jwk["e"], jwk["n"]),
        _ => format!(r#"{{"crv":{},"kty":"OKP","x":{}}}"#, jwk["crv"], jwk["x"]),
    };
    URL_SAFE_NO_PAD.encode(digest(&SHA256, canonical.as_bytes()))
}

/// Verifies a proof's signature with the JWK of its own header; its header and claims.
///
/// # Errors
///
/// What is wrong with it.
pub fn verify_proof(proof: &str) -> Result<(Value, Value), String> {
    let b64 = |s: &str| {
        URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| "not base64url".to_owned())
    };
    let (input, signature) = proof.rsplit_once('.').ok_or("not a JWS")?;
    let (header, claims) = input.split_once('.').ok_or("not a JWS")?;
    let header: Value = serde_json::from_slice(&b64(header)?).map_err(|e| e.to_string())?;
    let claims: Value = serde_json::from_slice(&b64(claims)?).map_err(|e| e.to_string())?;
    let jwk = &header["jwk"];
    if jwk.get("d").is_some() {
        return Err("the header JWK has a private member".into());
    }
    let member = |name: &str| b64(jwk[name].as_str().unwrap_or_default());
    let signature = b64(signature)?;
    let input = input.as_bytes();
    let verified = match header["alg"].as_str().unwrap_or_default() {
        alg @ ("ES256" | "ES384") => {
            let mut point = vec![4];
            point.extend(member("x")?);
            point.extend(member("y")?);
            let algorithm = if alg == "ES256" {
                &ECDSA_P256_SHA256_FIXED
            } else {
                &ECDSA_P384_SHA384_FIXED
            };
            UnparsedPublicKey::new(algorithm, point).verify(input, &signature)
        }
        "EdDSA" => UnparsedPublicKey::new(&ED25519, member("x")?).verify(input, &signature),
        alg @ ("RS256" | "PS256") => {
            let algorithm = if alg == "RS256" {
                &RSA_PKCS1_2048_8192_SHA256
            } else {
                &RSA_PSS_2048_8192_SHA256
            };
            RsaPublicKeyComponents {
                n: member("n")?,
                e: member("e")?,
            }
            .verify(algorithm, input, &signature)
        }
        other => return Err(format!("unexpected alg {other}")),
    };
    verified.map_err(|_| "bad signature".to_owned())?;
    Ok((header, claims))
}
