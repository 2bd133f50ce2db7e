//! Client authentication: the cost of building and signing one client assertion (claims with a
//! random `jti`, JWS signing input, signature, compact serialisation) per algorithm, through
//! token-mgmt's public API: `PrivateKeySigner` (a `ClientAssertionProvider`) for RS256, PS256
//! (2048-bit RSA), ES256, ES384 and EdDSA; HS256 with the same public claims / signing-input /
//! compact calls and aws-lc-rs HMAC, as `client_secret_jwt` signs (its signer is private).
//!
//! ```text
//! cargo bench -p token-mgmt-benches --bench client_assertion
//! ```
//!
//! Token requests per second with each method against the loopback token endpoint:
//! `load client-auth` (BENCHMARKS.md).

use criterion::{Criterion, criterion_group, criterion_main};

#[cfg(feature = "ours")]
fn bench(c: &mut Criterion) {
    use std::time::Duration;
    use token_mgmt::tokens::{AssertionContext, DEFAULT_ASSERTION_LIFETIME};

    let keys = token_mgmt_benches::keys::generate().expect("keys");
    let signers = token_mgmt_benches::ours::assertion_signers(&keys).expect("signers");
    let context = AssertionContext::new(
        "bench",
        "bench-client",
        "http://127.0.0.1:8080/connect/token",
        DEFAULT_ASSERTION_LIFETIME,
    );
    let mut group = c.benchmark_group("client_assertion");
    group.measurement_time(Duration::from_secs(3));
    for (label, signer) in &signers {
        group.bench_function(*label, |b| {
            b.iter(|| {
                std::hint::black_box(token_mgmt_benches::ours::sign_one(
                    signer.as_ref(),
                    &context,
                ))
            });
        });
    }
    group.finish();
}

#[cfg(not(feature = "ours"))]
fn bench(_: &mut Criterion) {
    eprintln!("client_assertion measures token-mgmt only: build with the default `ours` feature");
}

criterion_group!(benches, bench);
criterion_main!(benches);
