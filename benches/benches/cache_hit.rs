//! Cache hit: warm `get_client_access_token` vs a bare `DashMap<Arc<str>, Arc<Token>>::get` +
//! `Arc` clone, and vs the same plus one expiry check against `CLOCK_BOOTTIME` (the clock baseline),
//! on 1 and 2 threads, one key and many keys.
//!
//! ```text
//! cargo bench -p token-mgmt-benches --bench cache_hit                           # + token-mgmt
//! cargo bench -p token-mgmt-benches --no-default-features --bench cache_hit     # baselines only
//! ```
//!
//! Every variant uses `iter_custom` with std threads released together by a barrier (see
//! `cache::run_threads`): with 2 threads, one iteration is "both threads did one lookup each".
//! The ratio table for BENCHMARKS.md comes from `load cache-hit` (same workloads, rounds
//! alternating subject order); this bench gives criterion's distribution for each of them.

use criterion::{Criterion, criterion_group, criterion_main};
use token_mgmt_benches::cache::{
    MANY_KEYS, bare_cache, bare_lookup, bare_lookup_checked, client_names, key_index,
    run_threads_in,
};

const VARIANTS: [(usize, usize, &str); 4] = [
    (1, 1, "1_thread/one_key"),
    (1, MANY_KEYS, "1_thread/many_keys"),
    (2, 1, "2_threads/one_key"),
    (2, MANY_KEYS, "2_threads/many_keys"),
];

fn bench(c: &mut Criterion) {
    let names = client_names(MANY_KEYS);
    let bare = bare_cache(&names);
    let mut group = c.benchmark_group("cache_hit");
    for (threads, keys, label) in VARIANTS {
        group.bench_function(format!("{label}/bare_dashmap"), |b| {
            b.iter_custom(|iters| {
                run_threads_in(None, threads, iters, |thread, i| {
                    std::hint::black_box(bare_lookup(&bare, &names[key_index(thread, i, keys)]));
                })
            });
        });
        group.bench_function(format!("{label}/bare_dashmap_clock"), |b| {
            b.iter_custom(|iters| {
                run_threads_in(None, threads, iters, |thread, i| {
                    std::hint::black_box(bare_lookup_checked(
                        &bare,
                        &names[key_index(thread, i, keys)],
                    ));
                })
            });
        });
    }

    #[cfg(feature = "ours")]
    {
        use token_mgmt_benches::servers::{Servers, TokenEndpointConfig};
        let servers = Servers::start(1, TokenEndpointConfig::default()).expect("servers");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let service = token_mgmt_benches::ours::token_service(&servers.token.url(), &names)
            .expect("token service");
        runtime
            .block_on(token_mgmt_benches::ours::warm(&service, &names))
            .expect("warm cache");
        let parameters = token_mgmt::tokens::TokenRequestParameters::default();
        for (threads, keys, label) in VARIANTS {
            group.bench_function(format!("{label}/token_mgmt"), |b| {
                b.iter_custom(|iters| {
                    run_threads_in(Some(runtime.handle()), threads, iters, |thread, i| {
                        let name = &names[key_index(thread, i, keys)];
                        std::hint::black_box(token_mgmt_benches::ours::cache_hit(
                            &service,
                            name,
                            &parameters,
                        ));
                    })
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
