//! The Redis token cache (`RedisTokenCache`), against a throw-away `redis-server` on 127.0.0.1
//! (started here with the tests' helper; without one installed the bench says so and measures
//! nothing):
//!
//! - `redis_cache/hit/*`: a warm `get_client_access_token` with the default in-process cache vs with
//!   the Redis cache configured (a hit is answered by its in-process level, without a Redis call);
//! - `redis_cache/l1_miss/*`: the Redis cache's `get` after its in-process copy was dropped (one
//!   Redis `GET`, AES-256-GCM decryption, the in-process insert; the drop itself is in the
//!   iteration) vs a raw `GET` of the same value on the same kind of connection;
//! - printed once before each group, its two subjects in alternating batches (medians and ratio),
//!   steadier on a busy machine than two criterion measurements one after the other;
//! - before those, printed once: token requests (and the time until every instance has its token)
//!   for N cold instances, each with its own Redis connection and service, all asking at once, with
//!   the Redis cache and with the in-process cache only.
//!
//! ```text
//! cargo bench -p token-mgmt-benches --bench redis_cache
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use redis::AsyncCommands as _;
use token_mgmt::tokens::{ClientAccessTokenCache, RedisTokenCache, TokenRequestParameters};
use token_mgmt_benches::cache::client_names;
use token_mgmt_benches::ours::{cache_hit, token_service, token_service_with_cache, warm};
use token_mgmt_benches::servers::{Servers, TokenEndpointConfig};
use token_mgmt_tests::redis_server::RedisServer;

const KEY: [u8; 32] = [7; 32];

async fn redis_cache(redis: &RedisServer, prefix: &str) -> RedisTokenCache {
    RedisTokenCache::builder(redis.url())
        .key_prefix(prefix)
        .encryption_key("k1", KEY)
        .build()
        .await
        .expect("Redis token cache")
}

/// N cold instances asking at once: token requests, and the time until the last has its token.
fn cold_instances(redis: &RedisServer) {
    // A token endpoint with an identity provider's latency: the instances overlap.
    let servers = Servers::start(
        1,
        TokenEndpointConfig {
            delay: Duration::from_millis(20),
            ..Default::default()
        },
    )
    .expect("servers");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let names = client_names(1);
    let parameters = TokenRequestParameters::default();
    println!("cold instances (token endpoint answers after 20 ms):");
    for n in [1, 8, 32] {
        for shared in [true, false] {
            let before = servers.token.requests();
            let elapsed = runtime.block_on(async {
                let mut services = Vec::with_capacity(n);
                for _ in 0..n {
                    services.push(
                        if shared {
                            let cache = redis_cache(redis, &format!("cold-{n}:")).await;
                            token_service_with_cache(&servers.token.url(), &names, Arc::new(cache))
                        } else {
                            token_service(&servers.token.url(), &names)
                        }
                        .expect("token service"),
                    );
                }
                let started = Instant::now();
                let fetches = services
                    .iter()
                    .map(|service| service.get_client_access_token(&names[0], &parameters));
                for token in futures_util::future::join_all(fetches).await {
                    token.expect("token");
                }
                started.elapsed()
            });
            println!(
                "  {n:>2} instances, {:<16} {:>2} token request(s), all served in {:.1} ms",
                if shared {
                    "Redis cache:"
                } else {
                    "in-process only:"
                },
                servers.token.requests() - before,
                elapsed.as_secs_f64() * 1e3
            );
        }
    }
}

fn bench(c: &mut Criterion, redis: &RedisServer) {
    let servers = Servers::start(1, TokenEndpointConfig::default()).expect("servers");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let names = client_names(1);
    let name = &names[0];
    let parameters = TokenRequestParameters::default();
    let cache = runtime.block_on(redis_cache(redis, "bench:"));
    let in_process = token_service(&servers.token.url(), &names).expect("token service");
    let shared = token_service_with_cache(&servers.token.url(), &names, Arc::new(cache.clone()))
        .expect("token service");
    runtime.block_on(async {
        warm(&in_process, &names).await.expect("warm");
        warm(&shared, &names).await.expect("warm");
    });

    interleaved(
        "hit with the Redis cache configured vs in-process hit",
        100_000,
        |n| {
            for _ in 0..n {
                black_box(cache_hit(&shared, name, &parameters));
            }
        },
        |n| {
            for _ in 0..n {
                black_box(cache_hit(&in_process, name, &parameters));
            }
        },
    );
    let mut group = c.benchmark_group("redis_cache/hit");
    group.bench_function("in_process_cache", |b| {
        b.iter(|| black_box(cache_hit(&in_process, name, &parameters)));
    });
    group.bench_function("redis_cache_configured", |b| {
        b.iter(|| black_box(cache_hit(&shared, name, &parameters)));
    });
    group.finish();

    let key = shared.cache_key(name, &parameters).expect("cache key");
    let redis_key = cache.redis_key(&key);
    let raw = runtime.block_on(async {
        let client = redis::Client::open(redis.url()).expect("Redis address");
        redis::aio::ConnectionManager::new(client)
            .await
            .expect("Redis connection")
    });
    interleaved(
        "L1 miss served from Redis vs raw GET",
        200,
        |n| {
            runtime.block_on(async {
                for _ in 0..n {
                    cache.local().delete(&key).await.expect("in-process delete");
                    black_box(cache.get(&key).await.expect("Redis GET").expect("stored"));
                }
            });
        },
        |n| {
            let mut connection = raw.clone();
            runtime.block_on(async {
                for _ in 0..n {
                    let value: Vec<u8> = connection.get(&redis_key).await.expect("Redis GET");
                    black_box(value);
                }
            });
        },
    );
    let mut group = c.benchmark_group("redis_cache/l1_miss");
    group.bench_function("redis_cache_get", |b| {
        b.to_async(&runtime).iter(|| async {
            cache.local().delete(&key).await.expect("in-process delete");
            black_box(cache.get(&key).await.expect("Redis GET").expect("stored"))
        });
    });
    group.bench_function("raw_redis_get", |b| {
        b.to_async(&runtime).iter(|| {
            let mut connection = raw.clone();
            let redis_key = &redis_key;
            async move {
                let value: Vec<u8> = connection.get(redis_key).await.expect("Redis GET");
                black_box(value)
            }
        });
    });
    group.finish();
}

/// `a` and `b` (each runs a batch of `batch` calls) in alternating batches: on a shared machine,
/// criterion's back-to-back groups can land in different load phases. Prints the median per call
/// of each, and their ratio.
fn interleaved(what: &str, batch: u32, mut a: impl FnMut(u32), mut b: impl FnMut(u32)) {
    const ROUNDS: usize = 41;
    let (mut a_times, mut b_times) = (Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS));
    for _ in 0..ROUNDS {
        let started = Instant::now();
        a(batch);
        a_times.push(started.elapsed() / batch);
        let started = Instant::now();
        b(batch);
        b_times.push(started.elapsed() / batch);
    }
    a_times.sort();
    b_times.sort();
    let (a, b) = (a_times[ROUNDS / 2], b_times[ROUNDS / 2]);
    println!(
        "{what}, interleaved ({ROUNDS} rounds of {batch} calls each, medians): {:.3} µs vs {:.3} µs, ratio {:.3}",
        a.as_secs_f64() * 1e6,
        b.as_secs_f64() * 1e6,
        a.as_secs_f64() / b.as_secs_f64()
    );
}

fn redis_cache_benches(c: &mut Criterion) {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    cold_instances(&redis);
    bench(c, &redis);
}

criterion_group!(benches, redis_cache_benches);
criterion_main!(benches);
