//! Cost of one DPoP proof for an API request (RFC 9449), per algorithm, through the public API
//! (`AccessTokenManagementService::dpop_proof`: what the handler adds to every DPoP request), next to
//! the Bearer path of the same call (no proof: `None`), measured in the same run.
//!
//! `cargo bench -p token-mgmt-benches --bench dpop_proof`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::Method;
use token_mgmt::tokens::{
    AccessTokenManagementOptions, AccessTokenManagementService, ClientAccessToken, DpopKey,
    SigningAlgorithm, TokenClientOptions,
};
use url::Url;

fn service(algorithm: Option<SigningAlgorithm>) -> AccessTokenManagementService {
    let mut options = AccessTokenManagementOptions::default();
    options.client.clients.add(
        "api",
        TokenClientOptions {
            address: "http://127.0.0.1:1/connect/token".parse().unwrap(),
            client_id: "bench".into(),
            client_secret: "secret".into(),
            dpop: algorithm.map(DpopKey::generate_with),
            ..Default::default()
        },
    );
    AccessTokenManagementService::new(options).unwrap()
}

fn proofs(c: &mut Criterion) {
    let url: Url = "https://api.example.com/v1/orders?page=2".parse().unwrap();
    let dpop_token =
        ClientAccessToken::new("a".repeat(900), Some("DPoP"), None, None, None).unwrap();
    let bearer_token = ClientAccessToken::new("a".repeat(900), None, None, None, None).unwrap();
    let mut group = c.benchmark_group("dpop_proof");
    let bearer = service(None);
    group.bench_function("bearer (no proof)", |b| {
        b.iter(|| {
            black_box(
                bearer
                    .dpop_proof("api", &Method::GET, &url, &bearer_token)
                    .unwrap(),
            )
        })
    });
    for (name, algorithm) in [
        ("ES256", SigningAlgorithm::Es256),
        ("ES384", SigningAlgorithm::Es384),
        ("EdDSA", SigningAlgorithm::EdDsa),
        ("RS256", SigningAlgorithm::Rs256),
        ("PS256", SigningAlgorithm::Ps256),
    ] {
        let service = service(Some(algorithm));
        group.bench_function(name, |b| {
            b.iter(|| {
                black_box(
                    service
                        .dpop_proof("api", &Method::GET, &url, &dpop_token)
                        .unwrap()
                        .expect("a proof"),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, proofs);
criterion_main!(benches);
