//! `RedisTokenCache` against a real `redis-server` (started by each test, skipped with a message
//! when it is not installed, failed under `CI=true`) and the local token endpoint.
//!
//! Several cache instances on one Redis stand for a fleet of processes. The tests run on the real
//! clock: the caches talk to a real server, and a paused clock would fire their timeouts while
//! they wait for its answers.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use redis::AsyncCommands as _;
use token_mgmt::tokens::{
    AccessTokenManagementOptions, AccessTokenManagementService, CacheKey, ClientAccessToken,
    ClientAccessTokenCache, ManualClock, RedisCacheError, RedisTokenCache, RedisTokenCacheBuilder,
    TokenRequestParameters, metric_names,
};
use token_mgmt_tests::logs::CapturedLogs;
use token_mgmt_tests::redis_server::RedisServer;
use token_mgmt_tests::token_server::TokenServer;

const CLIENT: &str = "client";
const PREFIX: &str = "app:";
const KEY: [u8; 32] = [7; 32];
const OTHER_KEY: [u8; 32] = [9; 32];

/// A cache instance (one "process") on `redis`, encrypting with `KEY` under id `k1`.
async fn instance(redis: &RedisServer) -> RedisTokenCache {
    instance_builder(redis).build().await.unwrap()
}

fn instance_builder(redis: &RedisServer) -> RedisTokenCacheBuilder {
    RedisTokenCache::builder(redis.url())
        .key_prefix(PREFIX)
        .encryption_key("k1", KEY)
}

fn service(server: &TokenServer, cache: &RedisTokenCache) -> AccessTokenManagementService {
    let mut options = AccessTokenManagementOptions::default();
    options.client.clients.add(CLIENT, server.client_options());
    AccessTokenManagementService::builder(options)
        .cache(Arc::new(cache.clone()))
        .build()
        .unwrap()
}

async fn get(service: &AccessTokenManagementService) -> ClientAccessToken {
    service
        .get_client_access_token(CLIENT, &TokenRequestParameters::default())
        .await
        .unwrap()
}

fn default_key(service: &AccessTokenManagementService) -> CacheKey {
    service
        .cache_key(CLIENT, &TokenRequestParameters::default())
        .unwrap()
}

fn token(access_token: &str) -> ClientAccessToken {
    let expires = SystemTime::now() + Duration::from_secs(3600);
    ClientAccessToken::new(access_token, None, Some(expires), None, None).unwrap()
}

async fn raw_get(redis: &RedisServer, key: &str) -> Option<Vec<u8>> {
    redis.connection().await.get(key).await.unwrap()
}

async fn raw_set(redis: &RedisServer, key: &str, value: &[u8]) {
    redis
        .connection()
        .await
        .set::<_, _, ()>(key, value)
        .await
        .unwrap();
}

#[tokio::test]
async fn two_instances_share_one_token() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let server = TokenServer::start();
    let (a, b) = (instance(&redis).await, instance(&redis).await);
    let (service_a, service_b) = (service(&server, &a), service(&server, &b));

    let first = get(&service_a).await;
    assert_eq!(server.request_count(), 1);
    let key = default_key(&service_a);
    let ttl: i64 = redis
        .connection()
        .await
        .pttl(a.redis_key(&key))
        .await
        .unwrap();
    assert!(
        (3_500_000..=3_600_000).contains(&ttl),
        "the Redis entry expires with the token: {ttl} ms"
    );

    let second = get(&service_b).await;
    assert_eq!(second.access_token(), first.access_token());
    assert_eq!(server.request_count(), 1, "the second instance read Redis");
    assert!(
        b.get_cached(&key).is_some(),
        "the second instance keeps it in process"
    );
    // From now on both answer from their own memory: no Redis call at all.
    redis.kill();
    assert_eq!(get(&service_a).await.access_token(), first.access_token());
    assert_eq!(get(&service_b).await.access_token(), first.access_token());
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn eight_cold_instances_make_one_token_request() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let server = TokenServer::start();
    server.set_delay(Some(Duration::from_millis(200)));
    let mut services = Vec::new();
    for _ in 0..8 {
        services.push(service(&server, &instance(&redis).await));
    }
    let tokens = futures_util::future::join_all(services.iter().map(get)).await;
    assert_eq!(server.request_count(), 1, "one instance requested for all");
    for token in &tokens {
        assert_eq!(token.access_token(), tokens[0].access_token());
    }
}

#[tokio::test]
async fn stored_values_are_encrypted() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let server = TokenServer::start();
    let cache = instance(&redis).await;
    let service = service(&server, &cache);
    let token = get(&service).await;
    let value = raw_get(&redis, &cache.redis_key(&default_key(&service)))
        .await
        .unwrap();
    let secret = token.access_token().as_bytes();
    assert!(
        !value.windows(secret.len()).any(|w| w == secret),
        "the access token is not readable in Redis"
    );
    assert_eq!(&value[..4], b"\x01\x02k1", "format 1, key id `k1`");
}

#[tokio::test]
async fn a_cache_needs_a_key_or_an_explicit_plaintext_opt_in() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let error = RedisTokenCache::builder(redis.url())
        .build()
        .await
        .unwrap_err();
    assert!(matches!(error, RedisCacheError::MissingEncryptionKey));
    let error = RedisTokenCache::builder(redis.url())
        .encryption_key("", KEY)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(error, RedisCacheError::InvalidKeyId(_)));
    let error = RedisTokenCache::builder(redis.url())
        .encryption_key("k1", KEY)
        .plaintext()
        .build()
        .await
        .unwrap_err();
    assert!(matches!(error, RedisCacheError::KeyAndPlaintext));
    let error = RedisTokenCache::builder(redis.url())
        .encryption_key("k1", KEY)
        .decryption_key("k1", OTHER_KEY)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(error, RedisCacheError::DuplicateKeyId(_)));
    let error = RedisTokenCache::builder("not a redis address")
        .encryption_key("k1", KEY)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(error, RedisCacheError::InvalidUrl(_)));
    assert!(std::error::Error::source(&error).is_some());
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let error = RedisTokenCache::builder(format!("redis://127.0.0.1:{port}"))
        .encryption_key("k1", KEY)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            RedisCacheError::Connect(_) | RedisCacheError::ConnectTimeout(_)
        ),
        "{error:?}"
    );

    let plain = RedisTokenCache::builder(redis.url())
        .key_prefix(PREFIX)
        .plaintext()
        .build()
        .await
        .unwrap();
    let key = CacheKey::new("k");
    plain.set(&key, token("plain-token")).await.unwrap();
    let value = raw_get(&redis, "app:k").await.unwrap();
    assert!(value.windows(11).any(|w| w == b"plain-token"));
    // An encrypting instance does not take an unencrypted value (it could have been planted).
    assert!(instance(&redis).await.get(&key).await.unwrap().is_none());
    // Nor a plaintext instance an encrypted one.
    let encrypted = instance(&redis).await;
    encrypted.set(&key, token("secret-token")).await.unwrap();
    let plain = RedisTokenCache::builder(redis.url())
        .key_prefix(PREFIX)
        .plaintext()
        .build()
        .await
        .unwrap();
    assert!(plain.get(&key).await.unwrap().is_none());
}

#[tokio::test]
async fn a_value_under_another_key_id_or_bytes_is_a_miss() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let key = CacheKey::new("k");
    instance(&redis).await.set(&key, token("t1")).await.unwrap();
    // Same id, other bytes: the tag does not verify.
    let wrong = RedisTokenCache::builder(redis.url())
        .key_prefix(PREFIX)
        .encryption_key("k1", OTHER_KEY)
        .build()
        .await
        .unwrap();
    assert!(wrong.get(&key).await.unwrap().is_none());
    // Another id: unknown key.
    let other = RedisTokenCache::builder(redis.url())
        .key_prefix(PREFIX)
        .encryption_key("k2", KEY)
        .build()
        .await
        .unwrap();
    assert!(other.get(&key).await.unwrap().is_none());
    // The right key reads it.
    let right = instance(&redis).await;
    assert_eq!(right.get(&key).await.unwrap().unwrap().access_token(), "t1");
}

#[tokio::test]
async fn a_rotated_key_still_decrypts_and_the_new_key_writes() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let key = CacheKey::new("k");
    let old = instance(&redis).await;
    old.set(&key, token("written-with-k1")).await.unwrap();

    let rotated = RedisTokenCache::builder(redis.url())
        .key_prefix(PREFIX)
        .encryption_key("k2", OTHER_KEY)
        .decryption_key("k1", KEY)
        .build()
        .await
        .unwrap();
    let read = rotated.get(&key).await.unwrap().unwrap();
    assert_eq!(read.access_token(), "written-with-k1");

    rotated.set(&key, token("written-with-k2")).await.unwrap();
    let value = raw_get(&redis, &rotated.redis_key(&key)).await.unwrap();
    assert_eq!(&value[..4], b"\x01\x02k2", "the current key writes");
    // An instance with only the old key no longer reads it; one with the new key does.
    assert!(instance(&redis).await.get(&key).await.unwrap().is_none());
    let new_only = RedisTokenCache::builder(redis.url())
        .key_prefix(PREFIX)
        .encryption_key("k2", OTHER_KEY)
        .build()
        .await
        .unwrap();
    let read = new_only.get(&key).await.unwrap().unwrap();
    assert_eq!(read.access_token(), "written-with-k2");
}

#[tokio::test]
async fn a_value_copied_under_another_key_is_rejected() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (low, high) = (CacheKey::new("scope=read"), CacheKey::new("scope=admin"));
    let cache = instance(&redis).await;
    cache.set(&low, token("read-only")).await.unwrap();
    let value = raw_get(&redis, &cache.redis_key(&low)).await.unwrap();
    raw_set(&redis, &cache.redis_key(&high), &value).await;

    let fresh = instance(&redis).await;
    assert!(
        fresh.get(&high).await.unwrap().is_none(),
        "the Redis key is the associated data"
    );
    assert!(fresh.get(&low).await.unwrap().is_some());
}

#[tokio::test]
async fn a_tampered_value_is_a_miss() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let key = CacheKey::new("k");
    let cache = instance(&redis).await;
    cache.set(&key, token("t1")).await.unwrap();
    let redis_key = cache.redis_key(&key);
    let value = raw_get(&redis, &redis_key).await.unwrap();
    for at in [value.len() - 1, value.len() / 2 + 8, 5] {
        let mut tampered = value.clone();
        tampered[at] ^= 1;
        raw_set(&redis, &redis_key, &tampered).await;
        assert!(
            instance(&redis).await.get(&key).await.unwrap().is_none(),
            "byte {at} flipped"
        );
    }
    for truncated in [&value[..0], &value[..1], &value[..3], &value[..10]] {
        raw_set(&redis, &redis_key, truncated).await;
        assert!(instance(&redis).await.get(&key).await.unwrap().is_none());
    }
    raw_set(&redis, &redis_key, &value).await;
    assert!(instance(&redis).await.get(&key).await.unwrap().is_some());
}

#[tokio::test]
async fn a_set_evicts_the_other_instances_copies() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let key = CacheKey::new("k");
    let (a, b) = (instance(&redis).await, instance(&redis).await);
    a.set(&key, token("old")).await.unwrap();
    assert_eq!(b.get(&key).await.unwrap().unwrap().access_token(), "old");
    // Both listen once they are used; wait until both subscriptions are in place.
    let channel = format!("{PREFIX}invalidate");
    let mut connection = redis.connection().await;
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let (_, subscribers): (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(&mut connection)
                .await
                .unwrap();
            if subscribers == 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("both instances subscribe");

    a.set(&key, token("new")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while b.get_cached(&key).is_some() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("b drops its copy");
    assert_eq!(b.get(&key).await.unwrap().unwrap().access_token(), "new");
    assert_eq!(
        a.get_cached(&key).unwrap().access_token(),
        "new",
        "a keeps its own"
    );
}

#[tokio::test]
async fn a_redis_outage_leaves_token_calls_working() {
    let (logs, _logging) = CapturedLogs::capture(tracing::Level::INFO);
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let server = TokenServer::start();
    let (a, b) = (instance(&redis).await, instance(&redis).await);
    let (service_a, service_b) = (service(&server, &a), service(&server, &b));
    let first = get(&service_a).await;
    // `a` released its lock (in the background) before the outage: the failures below are `b`'s.
    let lock = format!("{PREFIX}lock:{}", default_key(&service_a).as_str());
    tokio::time::timeout(Duration::from_secs(5), async {
        while raw_get(&redis, &lock).await.is_some() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("a releases its lock");

    redis.kill();
    // `a` answers from memory.
    assert_eq!(get(&service_a).await.access_token(), first.access_token());
    assert_eq!(server.request_count(), 1);
    // `b` cannot read Redis: it requests its own token, within a bounded delay: the first call waits
    // for a few timeouts at most (not the lock's 5 s), the next ones not even one (Redis is not tried
    // for a second after a failure).
    for n in 0..3 {
        let started = Instant::now();
        let token = service_b
            .get_client_access_token(
                CLIENT,
                &TokenRequestParameters {
                    scope: Some(format!("scope{n}")),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(token.access_token().contains(&format!("scope{n}")));
        let bound = if n == 0 { 1500 } else { 240 };
        assert!(
            started.elapsed() < Duration::from_millis(bound),
            "call {n} took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(server.request_count(), 4);
    let errors: u64 = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == metric_names::CACHE_ERRORS)
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum();
    assert!(errors >= 3, "every failed call counts: {errors}");
    let logs = logs.text();
    assert_eq!(
        logs.matches("Redis token cache unavailable").count(),
        1,
        "one warning per outage: {logs}"
    );
}

#[tokio::test]
async fn the_lock_holder_s_token_ends_the_wait() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let key = CacheKey::new("k");
    let (a, b) = (instance(&redis).await, instance(&redis).await);
    let guard = a
        .lock_for_request(&key)
        .await
        .unwrap()
        .expect("a takes the lock");
    let ttl: i64 = redis
        .connection()
        .await
        .pttl(format!("{PREFIX}lock:k"))
        .await
        .unwrap();
    assert!((4_000..=5_000).contains(&ttl), "the lock lives 5 s: {ttl}");

    let waiting = tokio::spawn({
        let b = b.clone();
        let key = key.clone();
        async move { b.lock_for_request(&key).await.unwrap().is_some() }
    });
    tokio::task::yield_now().await;
    a.set(&key, token("from-a")).await.unwrap();
    drop(guard);
    assert!(
        !waiting.await.unwrap(),
        "b waited, and did not take the lock"
    );
    assert_eq!(b.get(&key).await.unwrap().unwrap().access_token(), "from-a");
}

#[tokio::test]
async fn a_released_lock_without_a_token_is_taken_over() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let key = CacheKey::new("k");
    let (a, b) = (instance(&redis).await, instance(&redis).await);
    let guard = a.lock_for_request(&key).await.unwrap().unwrap();
    let started = Instant::now();
    let waiting = tokio::spawn({
        let b = b.clone();
        let key = key.clone();
        async move { b.lock_for_request(&key).await.unwrap().is_some() }
    });
    tokio::task::yield_now().await;
    // a's request failed: it stores nothing and lets go.
    drop(guard);
    assert!(waiting.await.unwrap(), "b takes the lock and requests");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "without waiting for the lock's ttl"
    );
}

#[tokio::test]
async fn a_lock_nobody_releases_is_waited_for_its_ttl_only() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let key = CacheKey::new("k");
    let a = instance(&redis).await;
    let b = RedisTokenCache::builder(redis.url())
        .key_prefix(PREFIX)
        .encryption_key("k1", KEY)
        .lock_ttl(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let _held = a.lock_for_request(&key).await.unwrap().unwrap();
    let started = Instant::now();
    assert!(b.lock_for_request(&key).await.unwrap().is_none());
    let waited = started.elapsed();
    assert!(
        (Duration::from_millis(250)..Duration::from_secs(2)).contains(&waited),
        "{waited:?}"
    );
}

#[tokio::test]
async fn a_lock_is_released_only_by_its_owner() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = instance(&redis).await;
    let (expired, own) = (CacheKey::new("x"), CacheKey::new("y"));
    let expired_guard = a.lock_for_request(&expired).await.unwrap().unwrap();
    let own_guard = a.lock_for_request(&own).await.unwrap().unwrap();
    // The first lock expired and another instance took it.
    let (x, y) = (format!("{PREFIX}lock:x"), format!("{PREFIX}lock:y"));
    raw_set(&redis, &x, b"another-owner").await;
    // Releases run in order on one connection: once `y` is gone, `x`'s release has run too.
    drop(expired_guard);
    drop(own_guard);
    tokio::time::timeout(Duration::from_secs(5), async {
        while raw_get(&redis, &y).await.is_some() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the owner's lock is released");
    assert_eq!(
        raw_get(&redis, &x).await.as_deref(),
        Some(&b"another-owner"[..])
    );
}

/// Background renewal goes through the fleet lock too: when the token of a fleet reaches its
/// refresh time, the instances' background renewals make one token request between them, and
/// every instance ends up with that one new token. The services and their caches share a
/// [`ManualClock`] (the fleet's time); Redis and the token endpoint run on the real clock.
#[tokio::test]
async fn background_renewals_of_a_fleet_make_one_token_request() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let server = TokenServer::start();
    server.set_expires_in(Some(serde_json::json!(60)));
    // Long enough that every instance's renewal starts while the first one is still requesting.
    server.set_delay(Some(Duration::from_millis(200)));
    let clock = Arc::new(ManualClock::new());
    let mut services = Vec::new();
    for _ in 0..4 {
        let mut options = AccessTokenManagementOptions::default();
        options.client.clients.add(CLIENT, server.client_options());
        let cache = instance_builder(&redis)
            .clock(clock.clone())
            .build()
            .await
            .unwrap();
        services.push(
            AccessTokenManagementService::builder(options)
                .cache(Arc::new(cache))
                .clock(clock.clone())
                .build()
                .unwrap(),
        );
    }
    let first = get(&services[0]).await;
    for service in &services[1..] {
        assert_eq!(get(service).await.access_token(), first.access_token());
    }
    assert_eq!(server.request_count(), 1);

    // Past the refresh time (half of the 60 s lifetime) of every instance, before the expiry: the
    // instances' renewals (their schedulers', or the one a call starts) all begin while the first
    // token request is still on its way (200 ms).
    clock.advance(Duration::from_secs(45));
    let served = futures_util::future::join_all(services.iter().map(get)).await;
    for token in &served {
        assert_eq!(
            token.access_token(),
            first.access_token(),
            "still valid: served"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for service in &services {
        loop {
            let token = get(service).await;
            if token.access_token() != first.access_token() {
                break;
            }
            assert!(Instant::now() < deadline, "no renewed token within 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let renewed = get(&services[0]).await;
    for service in &services[1..] {
        assert_eq!(get(service).await.access_token(), renewed.access_token());
    }
    assert_eq!(server.request_count(), 2, "one renewal for the whole fleet");
}

/// A Redis emptied behind the fleet's back, or one that stops answering: every call still gets a
/// token, the second within the Redis call timeouts instead of waiting for Redis.
#[tokio::test]
async fn a_flushed_or_hanging_redis_leaves_token_calls_working() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let server = TokenServer::start();
    let a = instance(&redis).await;
    let service_a = service(&server, &a);
    let first = get(&service_a).await;
    assert_eq!(server.request_count(), 1);

    // Flushed: the instance keeps serving its own copy; a new instance requests a token anew.
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut redis.connection().await)
        .await
        .unwrap();
    assert_eq!(get(&service_a).await.access_token(), first.access_token());
    assert_eq!(server.request_count(), 1);
    let service_b = service(&server, &instance(&redis).await);
    get(&service_b).await;
    assert_eq!(server.request_count(), 2);

    // Hanging: connections stay open, nothing answers. A token nobody has is requested and served
    // after the cache's calls time out (250 ms each), long before Redis would answer.
    redis.freeze();
    let other = TokenRequestParameters {
        scope: Some("other".into()),
        ..Default::default()
    };
    let started = Instant::now();
    let token = service_a.get_client_access_token(CLIENT, &other).await;
    let waited = started.elapsed();
    redis.thaw();
    assert!(token.is_ok(), "{token:?}");
    assert_eq!(server.request_count(), 3);
    assert!(
        waited < Duration::from_secs(5),
        "a hanging Redis held the call for {waited:?}"
    );
    // Redis answers again: calls go on getting tokens (`get` fails the test on an error).
    get(&service_a).await;
    get(&service_b).await;
}
