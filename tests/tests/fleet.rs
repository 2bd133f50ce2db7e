//! A fleet of processes sharing one Redis and one token service: copies of `examples/fleet.rs`
//! (driven line by line through their standard input and output) and of `examples/worker.rs` with
//! `REDIS_URL`, against a real `redis-server` (skipped with a message when it is not installed,
//! failed under `CI=true`) and the demo token service and API, whose counters say how many tokens
//! were requested and how many API calls were authorized.
//!
//! No test waits for a time to pass: each waits, within a generous bound, for a reply line, a log
//! line or a server's state.

use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use redis::AsyncCommands as _;
use token_mgmt_examples::demo::{DemoConfig, DemoServer};
use token_mgmt_examples::shared_cache::{SharedCacheError, builder_from};
use token_mgmt_tests::redis_server::RedisServer;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The longest a test waits for a reply, a log line or a server's state.
const WAIT: Duration = Duration::from_secs(30);
const PREFIX: &str = "fleet:";
const KEY: [u8; 32] = [7; 32];
/// The demo's client with one-hour tokens (none expires during a test).
const CLIENT_ID: &str = "m2m";

fn key_base64() -> String {
    base64::engine::general_purpose::STANDARD.encode(KEY)
}

/// The variables every copy shares: one token service and API, one Redis, one key.
fn shared_command(program: &str, redis: &RedisServer, demo: &DemoServer) -> Command {
    let mut command = Command::new(program);
    command
        .env_clear()
        .env("TOKEN_ENDPOINT", demo.token_endpoint().as_str())
        .env("API_BASE_ADDRESS", demo.api_base().as_str())
        .env("CLIENT_ID", CLIENT_ID)
        .env("CLIENT_SECRET", "secret")
        .env("SCOPE", "api")
        .env("REDIS_URL", redis.url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// One `fleet` process.
struct Instance {
    _child: Child,
    input: ChildStdin,
    output: Lines<BufReader<ChildStdout>>,
}

impl Instance {
    async fn start(redis: &RedisServer, demo: &DemoServer) -> Self {
        let mut command = shared_command(env!("CARGO_BIN_EXE_fleet"), redis, demo);
        command
            .env("TOKEN_CACHE_KEY", key_base64())
            .env("TOKEN_CACHE_PREFIX", PREFIX)
            // Its stderr stays with the test's, to show why it failed if it does.
            .stderr(Stdio::inherit());
        let mut child = command.spawn().expect("the fleet binary starts");
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut instance = Self {
            _child: child,
            input,
            output,
        };
        assert_eq!(instance.line().await["ready"], true);
        instance
    }

    async fn line(&mut self) -> serde_json::Value {
        let line = tokio::time::timeout(WAIT, self.output.next_line())
            .await
            .expect("the fleet process answers in time")
            .expect("its output is readable")
            .expect("the fleet process is running");
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a JSON line: {line:?}"))
    }

    async fn send(&mut self, command: &str) {
        self.input
            .write_all(format!("{command}\n").as_bytes())
            .await
            .unwrap();
        self.input.flush().await.unwrap();
    }

    /// The reply to the last command sent: the token's digest, or the error.
    async fn reply(&mut self) -> Result<String, String> {
        let line = self.line().await;
        if line["ok"] == true {
            Ok(line["token"].as_str().unwrap().to_owned())
        } else {
            Err(line["error"].to_string())
        }
    }

    async fn ask(&mut self, command: &str) -> Result<String, String> {
        self.send(command).await;
        self.reply().await
    }
}

async fn fleet(size: usize, redis: &RedisServer, demo: &DemoServer) -> Vec<Instance> {
    let mut instances = Vec::with_capacity(size);
    for _ in 0..size {
        instances.push(Instance::start(redis, demo).await);
    }
    instances
}

/// The Redis keys holding tokens under `prefix` (not locks).
async fn token_keys(redis: &RedisServer, prefix: &str) -> Vec<String> {
    let keys: Vec<String> = redis
        .connection()
        .await
        .keys(format!("{prefix}*"))
        .await
        .unwrap();
    let lock = format!("{prefix}lock:");
    keys.into_iter().filter(|k| !k.starts_with(&lock)).collect()
}

/// Waits (within [`WAIT`]) until `condition` holds, checking it every few milliseconds.
async fn wait_until(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: not within {WAIT:?}"));
}

/// Waits until `n` instances listen for invalidations (they subscribe on their first cache use).
async fn wait_for_subscribers(redis: &RedisServer, n: i64) {
    let mut connection = redis.connection().await;
    let channel = format!("{PREFIX}invalidate");
    wait_until("every instance subscribes", async || {
        let (_, subscribers): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channel)
            .query_async(&mut connection)
            .await
            .unwrap();
        subscribers == n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_cold_processes_make_one_token_request() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    // A slow token service: the others ask while the first request is in flight.
    demo.set_token_delay(Duration::from_millis(300));
    let mut fleet = fleet(8, &redis, &demo).await;
    for instance in &mut fleet {
        instance.send("call").await;
    }
    let mut tokens = Vec::new();
    for instance in &mut fleet {
        tokens.push(instance.reply().await.expect("the API call succeeds"));
    }
    let counters = demo.counters().client(CLIENT_ID);
    assert_eq!(
        counters.token_requests, 1,
        "one token request for the fleet"
    );
    assert_eq!(counters.api_requests, 8, "eight authorized API calls");
    assert!(tokens.iter().all(|t| *t == tokens[0]), "{tokens:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_on_one_process_renews_the_token_of_all() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let mut fleet = fleet(3, &redis, &demo).await;
    let mut first = Vec::new();
    for instance in &mut fleet {
        first.push(instance.ask("call").await.unwrap());
    }
    assert!(first.iter().all(|t| *t == first[0]), "{first:?}");
    assert_eq!(demo.counters().client(CLIENT_ID).token_requests, 1);
    wait_for_subscribers(&redis, 3).await;

    // The token service revokes the token: the API answers 401 to it.
    demo.revoke_all();
    let renewed = fleet[0].ask("call").await.expect("renewed and sent again");
    assert_ne!(renewed, first[0]);
    assert_eq!(demo.counters().client(CLIENT_ID).token_requests, 2);
    for instance in &mut fleet[1..] {
        // The invalidation comes through pub/sub: the old token may be served until it arrives.
        let mut current = String::new();
        wait_until("the others drop the revoked token", async || {
            current = instance.ask("token").await.unwrap();
            current == renewed
        })
        .await;
        assert_eq!(instance.ask("call").await.unwrap(), renewed);
    }
    let counters = demo.counters();
    assert_eq!(
        counters.client(CLIENT_ID).token_requests,
        2,
        "the others read the new token, they do not request one"
    );
    assert_eq!(
        counters.api_invalid_token, 1,
        "only the first call met a 401"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_and_restarting_redis_mid_run_fails_no_api_call() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let mut fleet = fleet(3, &redis, &demo).await;
    let mut calls = 0;
    let mut failures = Vec::new();
    let mut ask = async |instance: &mut Instance, command: &str| {
        calls += 1;
        let reply = instance.ask(command).await;
        if let Err(error) = &reply {
            failures.push(format!("{command}: {error}"));
        }
        reply
    };
    for instance in &mut fleet {
        ask(instance, "call").await.unwrap();
    }
    assert_eq!(demo.counters().client(CLIENT_ID).token_requests, 1);

    redis.kill();
    // Known tokens come from memory; new ones are requested without Redis, and so are renewals.
    for instance in &mut fleet {
        let _ = ask(instance, "call").await;
        let _ = ask(instance, "token during-outage").await;
    }
    demo.revoke_all();
    for instance in &mut fleet {
        let _ = ask(instance, "call").await;
    }

    redis.restart();
    // The fleet writes to Redis again (after its short outage pause): a token for a new resource
    // reaches it.
    let mut round = 0;
    let mut last = String::new();
    wait_until("tokens are written to Redis again", async || {
        round += 1;
        for instance in fleet.iter_mut() {
            let _ = ask(instance, "call").await;
        }
        if let Ok(token) = ask(&mut fleet[0], &format!("token after-{round}")).await {
            last = token;
        }
        !token_keys(&redis, PREFIX).await.is_empty()
    })
    .await;
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed: {failures:?}",
        failures.len()
    );
    // A new instance reads that token from Redis instead of requesting one.
    let requests = demo.counters().client(CLIENT_ID).token_requests;
    let mut late = Instance::start(&redis, &demo).await;
    assert_eq!(
        late.ask(&format!("token after-{round}")).await.unwrap(),
        last
    );
    assert_eq!(demo.counters().client(CLIENT_ID).token_requests, requests);
    assert_eq!(
        demo.counters().api_invalid_token,
        3,
        "only the revocation met 401s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_tampered_with_in_redis_is_never_used() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let mut first = Instance::start(&redis, &demo).await;
    let token = first.ask("call").await.unwrap();
    let keys = token_keys(&redis, PREFIX).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let mut connection = redis.connection().await;
    let mut value: Vec<u8> = connection.get(&keys[0]).await.unwrap();
    // One bit of the ciphertext (its last byte is the tag's).
    let last = value.len() - 1;
    value[last] ^= 1;
    connection.set::<_, _, ()>(&keys[0], &value).await.unwrap();

    let mut second = Instance::start(&redis, &demo).await;
    let own = second.ask("call").await.expect("the API call succeeds");
    assert_ne!(own, token, "the tampered value was not used");
    let counters = demo.counters();
    assert_eq!(
        counters.client(CLIENT_ID).token_requests,
        2,
        "it requested its own"
    );
    assert_eq!(
        counters.api_invalid_token + counters.api_unauthenticated,
        0,
        "no API call carried a bad token"
    );
    let stored: Vec<u8> = connection.get(&keys[0]).await.unwrap();
    assert_ne!(stored, value, "its token replaced the tampered value");
}

/// Waits until a `worker` process logs its first API response; returns its log up to there.
async fn first_api_response(worker: &mut Child) -> String {
    let mut lines = BufReader::new(worker.stdout.take().unwrap()).lines();
    let mut log = String::new();
    tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            log.push_str(&line);
            log.push('\n');
            if line.contains("API response") {
                return;
            }
        }
        panic!("the worker stopped:\n{log}");
    })
    .await
    .unwrap_or_else(|_| panic!("no API response within {WAIT:?}"));
    log
}

fn worker(redis: &RedisServer, demo: &DemoServer) -> Command {
    let mut command = shared_command(env!("CARGO_BIN_EXE_worker"), redis, demo);
    command
        .env("WORKER_INTERVAL_SECONDS", "3600")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_with_redis_url_share_one_token() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    demo.set_token_delay(Duration::from_millis(300));
    let mut workers: Vec<Child> = (0..3)
        .map(|_| {
            worker(&redis, &demo)
                .env("TOKEN_CACHE_KEY", key_base64())
                .spawn()
                .expect("the worker binary starts")
        })
        .collect();
    for worker in &mut workers {
        let log = first_api_response(worker).await;
        assert!(!log.contains("API call failed"), "{log}");
    }
    let counters = demo.counters().client(CLIENT_ID);
    assert_eq!(
        counters.token_requests, 1,
        "one token for the three workers"
    );
    assert_eq!(counters.api_requests, 3);
    // Under the default prefix, encrypted (format byte 1), never the token itself.
    let keys = token_keys(&redis, "token-mgmt:").await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let value: Vec<u8> = redis.connection().await.get(&keys[0]).await.unwrap();
    assert_eq!(value[0], 1, "encrypted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_redis_url_refuses_to_start_without_a_key_unless_plaintext() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let output = tokio::time::timeout(WAIT, worker(&redis, &demo).output())
        .await
        .expect("the worker stops at once")
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "TOKEN_CACHE_KEY (32 bytes in base64) must be set when REDIS_URL is set, \
             or TOKEN_CACHE_PLAINTEXT=1 to store tokens unencrypted"
        ),
        "{stderr}"
    );
    assert_eq!(demo.counters().token_requests, 0);

    let mut plaintext = worker(&redis, &demo)
        .env("TOKEN_CACHE_PLAINTEXT", "1")
        .spawn()
        .unwrap();
    first_api_response(&mut plaintext).await;
    let keys = token_keys(&redis, "token-mgmt:").await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let value: Vec<u8> = redis.connection().await.get(&keys[0]).await.unwrap();
    assert_eq!(value[0], 0, "stored unencrypted, as asked");
}

#[test]
fn the_shared_cache_variables_are_checked() {
    let check = |variables: &[(&str, &str)]| {
        builder_from(|name| {
            variables
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    };
    let url = ("REDIS_URL", "redis://127.0.0.1:6379");
    assert!(check(&[]).unwrap().is_none(), "no REDIS_URL, no cache");
    assert!(matches!(
        check(&[url]).unwrap_err(),
        SharedCacheError::MissingKey
    ));
    let error = check(&[url, ("TOKEN_CACHE_KEY", "not base64!")]).unwrap_err();
    assert_eq!(error.to_string(), "TOKEN_CACHE_KEY is not valid base64");
    let error = check(&[url, ("TOKEN_CACHE_KEY", "c2hvcnQ=")]).unwrap_err();
    assert_eq!(error.to_string(), "TOKEN_CACHE_KEY is 5 bytes long, not 32");
    let key = key_base64();
    let error = check(&[
        url,
        ("TOKEN_CACHE_KEY", &key),
        ("TOKEN_CACHE_OLD_KEY", &key),
    ])
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "TOKEN_CACHE_OLD_KEY_ID must be set with TOKEN_CACHE_OLD_KEY"
    );
    let error = check(&[url, ("TOKEN_CACHE_PLAINTEXT", "yes")]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "TOKEN_CACHE_PLAINTEXT `yes` is not 1 or 0"
    );

    let builder = check(&[
        url,
        ("TOKEN_CACHE_KEY", &key),
        ("TOKEN_CACHE_KEY_ID", "2026-02"),
        ("TOKEN_CACHE_PREFIX", "orders:"),
    ])
    .unwrap()
    .unwrap();
    let shown = format!("{builder:?}");
    assert!(
        shown.contains("\"orders:\"") && shown.contains("\"2026-02\""),
        "{shown}"
    );
    assert!(!shown.contains(&key), "the key is never shown: {shown}");
    let plaintext = format!(
        "{:?}",
        check(&[url, ("TOKEN_CACHE_PLAINTEXT", "1")])
            .unwrap()
            .unwrap()
    );
    assert!(plaintext.contains("plaintext: true"), "{plaintext}");
}
