//! Property tests: random interleavings never hand out another key's token or an expired one, and
//! no token response, however malformed, panics the parser or escapes the typed errors.

use std::time::Duration;

use http::{HeaderValue, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};
use token_mgmt::tokens::{
    AccessTokenManagementService, ClientAccessToken, ManualClock, RetryPolicy, TokenError,
    TokenRequestParameters,
};
use token_mgmt_tests::fault_server::{Fault, FaultServer};

use crate::{CLIENT, GUARD, clock_and_server, options_for, service_on};

/// Scopes of the keys the interleavings use; `None` is the client's default key.
const SCOPES: [Option<&str>; 4] = [None, Some("a"), Some("b"), Some("c")];

#[derive(Debug, Clone, Copy)]
enum Failure {
    Unavailable,
    TooManyRequests,
    Reset,
    InvalidClient,
}

impl Failure {
    fn fault(self) -> Fault {
        match self {
            Failure::Unavailable => Fault::oauth(503, "temporarily_unavailable"),
            Failure::TooManyRequests => Fault::status(429),
            Failure::Reset => Fault::Reset,
            Failure::InvalidClient => Fault::oauth(400, "invalid_client"),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Call(usize),
    ForceRenewal(usize),
    Delete(usize),
    Advance(Duration),
    Fail(usize, Failure),
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..SCOPES.len();
    let failure = prop_oneof![
        Just(Failure::Unavailable),
        Just(Failure::TooManyRequests),
        Just(Failure::Reset),
        Just(Failure::InvalidClient),
    ];
    prop_oneof![
        6 => key.clone().prop_map(Op::Call),
        1 => key.clone().prop_map(Op::ForceRenewal),
        1 => key.prop_map(Op::Delete),
        3 => (0u64..200_000).prop_map(|ms| Op::Advance(Duration::from_millis(ms))),
        2 => (1usize..5, failure).prop_map(|(n, f)| Op::Fail(n, f)),
    ]
}

fn parameters(key: usize, force_renewal: bool) -> TokenRequestParameters {
    TokenRequestParameters {
        scope: SCOPES[key].map(str::to_owned),
        force_renewal,
        ..Default::default()
    }
}

/// The token is `key`'s (the server encodes the scope: `tok-<n>-<scope>-`) and not expired on the
/// clock (the service never serves a token from its expiry minus the safety margin on).
fn check_token(
    token: &ClientAccessToken,
    key: usize,
    clock: &ManualClock,
    margin: Duration,
) -> Result<(), TestCaseError> {
    let scope = SCOPES[key].unwrap_or("");
    let text = token.access_token();
    let number = text
        .strip_prefix("tok-")
        .and_then(|rest| rest.strip_suffix(&format!("-{scope}-")));
    prop_assert!(
        number.is_some_and(|n| n.parse::<u64>().is_ok()),
        "key {key} (scope `{scope}`) got {text}"
    );
    let expires_at = token.expires_at().expect("the server sends expires_in");
    let now = token_mgmt::tokens::Clock::system_time(clock);
    prop_assert!(
        expires_at - margin > now,
        "expired token {text} served: expires {expires_at:?}, now {now:?}"
    );
    Ok(())
}

async fn run_interleaving(lifetime: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (clock, server) = clock_and_server();
    server.set_expires_in(Some(lifetime));
    let options = options_for(&server);
    let margin = options.expiry_safety_margin;
    let service = service_on(options, &clock);
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Call(key) | Op::ForceRenewal(key) => {
                let forced = matches!(op, Op::ForceRenewal(_));
                let parameters = parameters(key, forced);
                let call = service.get_client_access_token(CLIENT, &parameters);
                let result = tokio::time::timeout(GUARD, call)
                    .await
                    .map_err(|_| TestCaseError::fail(format!("{op:?} hung")))?;
                match result {
                    Ok(token) => check_token(&token, key, &clock, margin)
                        .map_err(|e| TestCaseError::fail(format!("step {step}, {op:?}: {e}")))?,
                    Err(error) => prop_assert!(
                        !matches!(error, TokenError::Aborted { .. }),
                        "a flight panicked: {error:?}"
                    ),
                }
            }
            Op::Delete(key) => service
                .delete_client_access_token(CLIENT, &parameters(key, false))
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?,
            Op::Advance(by) => {
                clock.advance(by);
                tokio::task::yield_now().await;
            }
            Op::Fail(n, failure) => server.fail_times(n, failure.fault()),
        }
    }
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("test runtime")
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Random sequences of calls on 4 keys, forced renewals, deletes, clock advances (background
/// renewals run meanwhile) and scripted endpoint failures: every token returned is its key's and
/// not expired; no call hangs; no flight panics.
#[test]
fn random_interleavings_never_serve_another_keys_or_an_expired_token() {
    let runtime = runtime();
    let mut runner = TestRunner::new(config(64));
    let strategy = (10u64..=300, proptest::collection::vec(op(), 1..60));
    runner
        .run(&strategy, |(lifetime, ops)| {
            runtime.block_on(run_interleaving(lifetime, ops))
        })
        .unwrap();
}

/// What the parser must make of a response.
#[derive(Debug, PartialEq)]
enum Expected {
    Token {
        access_token: String,
        scope: Option<String>,
        expires_in: Option<Duration>,
    },
    Missing,
    Invalid,
    Unsupported,
    Endpoint,
}

/// The longest `expires_in` taken at face value (ten years), as documented.
const MAX_EXPIRES_IN: f64 = 10.0 * 365.0 * 24.0 * 3600.0;

/// A reference reading of a token response (RFC 6749 section 5.1, as the library documents it).
fn expected(status: u16, body: &[u8]) -> Expected {
    if !(200..300).contains(&status) {
        return Expected::Endpoint;
    }
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body) else {
        return Expected::Invalid;
    };
    let access_token = match object.get("access_token") {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        None | Some(Value::Null | Value::String(_)) => return Expected::Missing,
        Some(_) => return Expected::Invalid,
    };
    let token_type = match object.get("token_type") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(t.trim()),
        Some(_) => return Expected::Invalid,
    };
    let scope = match object.get("scope") {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    let expires_in = match object.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(value) => {
            let seconds = match value {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            };
            match seconds {
                Some(s) if s.is_finite() && s >= 0.0 => {
                    Some(Duration::from_secs_f64(s.min(MAX_EXPIRES_IN)))
                }
                _ => return Expected::Invalid,
            }
        }
    };
    if token_type.is_some_and(|t| !t.is_empty() && !t.eq_ignore_ascii_case("bearer")) {
        return Expected::Unsupported;
    }
    if HeaderValue::try_from(format!("Bearer {access_token}")).is_err() {
        return Expected::Invalid;
    }
    Expected::Token {
        access_token,
        scope,
        expires_in,
    }
}

/// One server and service for a parser property: each case scripts the next response and makes a
/// forced request (one attempt, no cool-down, no background renewal: one request per case).
struct ParserBench {
    runtime: tokio::runtime::Runtime,
    clock: std::sync::Arc<ManualClock>,
    server: FaultServer,
    service: AccessTokenManagementService,
}

impl ParserBench {
    fn new() -> Self {
        let (clock, server) = clock_and_server();
        let mut options = options_for(&server);
        options.retry = RetryPolicy::none();
        options.failure_cooldown = Duration::ZERO;
        options.background_refresh = false;
        let service = service_on(options, &clock);
        Self {
            runtime: runtime(),
            clock,
            server,
            service,
        }
    }

    fn check(&self, status: u16, body: Vec<u8>) -> Result<(), TestCaseError> {
        let expected = expected(status, &body);
        self.server.script([Fault::Body { status, body }]);
        let result = self.runtime.block_on(async {
            tokio::time::timeout(
                GUARD,
                self.service
                    .get_client_access_token(CLIENT, &TokenRequestParameters::force_renewal()),
            )
            .await
        });
        let result = result.map_err(|_| TestCaseError::fail("the request hung"))?;
        let error = match (result, &expected) {
            (
                Ok(token),
                Expected::Token {
                    access_token,
                    scope,
                    expires_in,
                },
            ) => {
                prop_assert_eq!(token.access_token(), access_token);
                prop_assert_eq!(token.scope(), scope.as_deref());
                let now = token_mgmt::tokens::Clock::system_time(&*self.clock);
                prop_assert_eq!(token.expires_at(), expires_in.map(|d| now + d));
                return Ok(());
            }
            (Ok(token), other) => {
                return Err(TestCaseError::fail(format!(
                    "expected {other:?}, got a token {:?}",
                    token.access_token()
                )));
            }
            (Err(error), _) => error,
        };
        let matches = match (&expected, &error) {
            (Expected::Missing, TokenError::MissingAccessToken { .. })
            | (Expected::Unsupported, TokenError::UnsupportedTokenType { .. }) => true,
            (Expected::Invalid, TokenError::InvalidResponse { status: s, .. }) => {
                s.as_u16() == status
            }
            (Expected::Endpoint, TokenError::Endpoint { status: s, .. }) => {
                s.as_u16() == status && !error.is_transient()
            }
            // 429 and 5xx are transient: the one attempt's error is wrapped.
            (
                Expected::Endpoint,
                TokenError::Unavailable {
                    attempts: 1,
                    source,
                    ..
                },
            ) => source.is_transient() && source.status() == StatusCode::from_u16(status).ok(),
            _ => false,
        };
        prop_assert!(matches, "expected {expected:?}, got {error:?}");
        Ok(())
    }
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => Just(200u16),
        1 => prop::sample::select(vec![201u16, 202, 400, 401, 403, 404, 429, 500, 502, 503]),
    ]
}

/// Arbitrary bytes as the body (and arbitrary JSON documents), with 200 and other statuses.
#[test]
fn arbitrary_response_bodies_are_a_token_or_a_typed_error() {
    let bench = ParserBench::new();
    let json_text = arbitrary_json().prop_map(|v| v.to_string().into_bytes());
    let body = prop_oneof![proptest::collection::vec(any::<u8>(), 0..256), json_text,];
    let mut runner = TestRunner::new(config(64));
    runner
        .run(&(status(), body), |(status, body)| {
            bench.check(status, body)
        })
        .unwrap();
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec(("[a-z_]{1,12}", inner), 0..4)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

fn printable(len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::char::range('!', '~'), len)
        .prop_map(|chars| chars.into_iter().collect())
}

/// A field: absent, or a plausible value, or any JSON value.
fn field(plausible: BoxedStrategy<Value>) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        1 => Just(None),
        4 => plausible.prop_map(Some),
        2 => arbitrary_json().prop_map(Some),
    ]
}

/// Token responses whose every field (`access_token`, `token_type`, `expires_in`, `scope`) is
/// absent, plausible or an arbitrary JSON value, with 200 and other statuses.
#[test]
fn arbitrary_field_values_are_a_token_or_a_typed_error() {
    let bench = ParserBench::new();
    let access_token = prop_oneof![
        printable(1..40).prop_map(Value::from),
        Just(json!("")),
        any::<String>().prop_map(Value::from),
    ]
    .boxed();
    let token_type = prop_oneof![
        Just(json!("Bearer")),
        Just(json!("bearer")),
        Just(json!(" BEARER ")),
        Just(json!("")),
        Just(json!("DPoP")),
        printable(1..10).prop_map(Value::from),
    ]
    .boxed();
    let expires_in = prop_oneof![
        (0u64..100_000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e3f64..1e12).prop_map(Value::from),
        (0u64..100_000).prop_map(|n| Value::from(n.to_string())),
        Just(json!("3600.5")),
        Just(json!(" 60 ")),
        Just(json!("inf")),
        Just(json!("NaN")),
        Just(json!("soon")),
    ]
    .boxed();
    let scope = prop_oneof![printable(0..30).prop_map(Value::from)].boxed();
    let fields = (
        field(access_token),
        field(token_type),
        field(expires_in),
        field(scope),
    );
    let mut runner = TestRunner::new(config(64));
    runner
        .run(&(status(), fields), |(status, (a, t, e, s))| {
            let mut object = Map::new();
            for (name, value) in [
                ("access_token", a),
                ("token_type", t),
                ("expires_in", e),
                ("scope", s),
            ] {
                if let Some(value) = value {
                    object.insert(name.to_owned(), value);
                }
            }
            bench.check(status, Value::Object(object).to_string().into_bytes())
        })
        .unwrap();
}
