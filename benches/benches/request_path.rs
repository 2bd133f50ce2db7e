//! The request path of an access-token `HttpClient` (performance issue): criterion's distributions for
//! the parts the issue's fixes changed, each next to its baseline in the same group.
//!
//! ```text
//! cargo bench -p token-mgmt-benches --bench request_path
//! ```
//!
//! - `resolve`: a plain relative path against the base address, as every `client.get(path)` does
//!   (token-mgmt: the client's resolved-path memo), vs `Url::clone` (what a caller holding a parsed
//!   URL pays) and `Url::join` (resolving it again each time).
//! - `authorized_get`: one sequential authorized `GET` to the in-process API (body read), plain
//!   reqwest with a fixed header vs token-mgmt's reused client, with its default 100 s timeout and
//!   without (as plain reqwest and the peers). Loopback round trips dominate this one; the counted
//!   figures (instructions and allocations per request) are in BENCHMARKS.md section 10.

use criterion::{Criterion, criterion_group, criterion_main};
use url::Url;

fn resolve(c: &mut Criterion) {
    let base = Url::parse("http://127.0.0.1:8080/api/").expect("a valid URL");
    let path = "data";
    let mut group = c.benchmark_group("request_path/resolve");
    let resolved = base.join(path).expect("a valid path");
    group.bench_function("url_clone", |b| {
        b.iter(|| std::hint::black_box(&resolved).clone())
    });
    group.bench_function("url_join", |b| {
        b.iter(|| std::hint::black_box(&base).join(std::hint::black_box(path)))
    });
    #[cfg(feature = "ours")]
    {
        let mut builder = token_mgmt::http::HttpClientFactory::builder();
        builder.register("api").options_mut().base_address = Some(base.clone());
        let client = builder.build().create_client("api").expect("registered");
        assert_eq!(client.resolve(path).expect("resolves"), resolved);
        group.bench_function("token_mgmt", |b| {
            b.iter(|| client.resolve(std::hint::black_box(path)))
        });
    }
    group.finish();
}

fn authorized_get(c: &mut Criterion) {
    use token_mgmt_benches::servers::{Servers, TokenEndpointConfig};

    let servers = Servers::start(1, TokenEndpointConfig::default()).expect("servers");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    #[cfg_attr(
        not(feature = "ours"),
        allow(unused_mut, reason = "ours pushes its subjects")
    )]
    let mut subjects = vec![(
        "reqwest_fixed_header".to_owned(),
        token_mgmt_benches::baseline::reqwest_fixed_header(&servers.api.data_url()),
    )];
    #[cfg(feature = "ours")]
    {
        let ours = runtime
            .block_on(token_mgmt_benches::ours::request_subjects(&servers, "ours"))
            .expect("token-mgmt subjects");
        for (name, request) in ours {
            let label = match name.as_str() {
                "token-mgmt (client reused)" => "token_mgmt",
                "token-mgmt without default timeout (client reused)" => "token_mgmt_no_timeout",
                _ => continue,
            };
            subjects.push((label.to_owned(), request));
        }
    }
    let mut group = c.benchmark_group("request_path/authorized_get");
    for (label, request) in &subjects {
        // Warm: the token, the connection.
        for _ in 0..64 {
            runtime.block_on(request()).expect("an authorized request");
        }
        group.bench_function(label.as_str(), |b| {
            b.iter(|| runtime.block_on(request()).expect("an authorized request"))
        });
    }
    group.finish();
}

criterion_group!(benches, resolve, authorized_get);
criterion_main!(benches);
