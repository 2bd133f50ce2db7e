//! The load scenarios of BENCHMARKS.md. One process per scenario:
//!
//! ```text
//! cargo run --release -p token-mgmt-benches --bin load -- <scenario> [--option value ...]
//! ```
//!
//! Scenarios: `cache-hit`, `throughput`, `per-request`, `dpop`, `stampede`, `scale`, `rollover`, `client-auth`, `all` (each
//! of them in a child process, so the counting allocator and the servers of one do not disturb
//! another).
//! Every figure is a median over `--rounds` rounds, and every ratio is taken against a baseline
//! measured in the same round, subjects alternating order between rounds. Output is markdown.
//! Our side (token-mgmt) is measured with `--features ours`; without it its rows say "pending".

use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use token_mgmt_benches::baseline::{
    bare_client_registry, bare_token_cache, raw_token_request, reqwest_fixed_header,
    reqwest012_fixed_header,
};
use token_mgmt_benches::cache::{
    MANY_KEYS, bare_cache, bare_lookup, bare_lookup_checked, client_names, key_index,
    run_threads_in,
};
use token_mgmt_benches::load::{Limit, LoadReport, RequestFn, run_load};
use token_mgmt_benches::mem::{self, CountingAllocator};
use token_mgmt_benches::peers::{OAuth2RwLockPeer, middle_client};
use token_mgmt_benches::report::{
    Table, fmt_bytes, fmt_duration, fmt_rate, fmt_ratio, fmt_seconds, machine, median,
    median_duration, median_ratio, round_order,
};
use token_mgmt_benches::servers::{Servers, TokenEndpointConfig};
use token_mgmt_benches::stampede::{run_callers, time_one};
use token_mgmt_benches::{BoxError, stampede::StampedeReport};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const SCENARIOS: [&str; 8] = [
    "cache-hit",
    "throughput",
    "per-request",
    "dpop",
    "stampede",
    "scale",
    "rollover",
    "client-auth",
];
const PENDING: &str = "pending (`--features ours`)";

/// Command-line options (`--name value`), with the defaults of BENCHMARKS.md.
#[derive(Clone, Debug)]
struct Options {
    rounds: usize,
    /// cache-hit: operations per thread per measurement.
    iters: u64,
    /// throughput: duration of one run (one subject, one concurrency, one round).
    duration: Duration,
    concurrency: Vec<usize>,
    server_threads: usize,
    client_threads: usize,
    /// stampede
    callers: usize,
    delay: Duration,
    /// scale
    clients: usize,
    scopes: usize,
    token_len: usize,
    /// rollover: real time each caller run lasts.
    run: Duration,
    /// rollover: `expires_in` of the tokens, in seconds.
    expires_in: u64,
    /// rollover: token endpoint delay.
    endpoint_delay: Duration,
    /// rollover: pause between two calls of one caller.
    pause: Duration,
    /// rollover: concurrent callers for the token-request count.
    rollover_callers: usize,
    /// per-request: sequential requests per subject.
    requests: u64,
    /// per-request: only the subject of this name, or else the subjects whose name contains this.
    subject: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        Self {
            rounds: 5,
            iters: 1_000_000,
            duration: Duration::from_secs(1),
            concurrency: vec![1, 16, 64],
            server_threads: 1,
            client_threads: cpus,
            callers: 10_000,
            delay: Duration::from_millis(50),
            clients: 10_000,
            scopes: 10,
            token_len: 64,
            run: Duration::from_secs(10),
            expires_in: 2,
            endpoint_delay: Duration::from_millis(20),
            pause: Duration::from_micros(100),
            rollover_callers: 64,
            requests: 2_000,
            subject: None,
        }
    }
}

const USAGE: &str = "usage: load <cache-hit|throughput|per-request|dpop|stampede|scale|rollover|client-auth|all> \
[--rounds N] [--iters N] [--duration-ms N] [--concurrency 1,16,64] [--server-threads N] \
[--client-threads N] [--callers N] [--delay-ms N] [--clients N] [--scopes N] [--token-len N] \
[--run-ms N] [--expires-in SECONDS] [--endpoint-delay-ms N] [--pause-us N] [--rollover-callers N] \
[--requests N] [--subject NAME-PART]";

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--rounds" => options.rounds = number()?.max(1) as usize,
            "--iters" => options.iters = number()?.max(1),
            "--duration-ms" => options.duration = Duration::from_millis(number()?),
            "--concurrency" => {
                options.concurrency = value
                    .split(',')
                    .map(|c| {
                        c.trim()
                            .parse::<usize>()
                            .map_err(|e| format!("--concurrency {c}: {e}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--server-threads" => options.server_threads = number()? as usize,
            "--client-threads" => options.client_threads = number()?.max(1) as usize,
            "--callers" => options.callers = number()? as usize,
            "--delay-ms" => options.delay = Duration::from_millis(number()?),
            "--clients" => options.clients = number()?.max(1) as usize,
            "--scopes" => options.scopes = number()?.max(1) as usize,
            "--token-len" => options.token_len = number()? as usize,
            "--run-ms" => options.run = Duration::from_millis(number()?),
            "--expires-in" => options.expires_in = number()?.max(1),
            "--endpoint-delay-ms" => options.endpoint_delay = Duration::from_millis(number()?),
            "--pause-us" => options.pause = Duration::from_micros(number()?),
            "--rollover-callers" => options.rollover_callers = number()?.max(1) as usize,
            "--requests" => options.requests = number()?.max(1),
            "--subject" => options.subject = Some(value.clone()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(options)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(scenario) = args.first().cloned() else {
        eprintln!("{USAGE}");
        return ExitCode::FAILURE;
    };
    if scenario == "scale" || scenario == "per-request" {
        // First thing: the scale figures are live-byte deltas.
        CountingAllocator::enable();
    }
    let options = match parse(&args[1..]) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("{error}\n{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    let result = match scenario.as_str() {
        "all" => all(&args[1..]),
        "cache-hit" => cache_hit(&options),
        "throughput" => throughput(&options),
        "per-request" => per_request(&options),
        "dpop" => dpop(&options),
        "stampede" => stampede(&options),
        "scale" => scale(&options),
        "rollover" => rollover(&options),
        "client-auth" => client_auth(&options),
        other => Err(format!("unknown scenario {other}\n{USAGE}").into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn all(rest: &[String]) -> Result<(), BoxError> {
    let exe = std::env::current_exe()?;
    for scenario in SCENARIOS {
        let status = Command::new(&exe).arg(scenario).args(rest).status()?;
        if !status.success() {
            return Err(format!("scenario {scenario} failed: {status}").into());
        }
    }
    Ok(())
}

fn header(title: &str, options: &Options) {
    println!("## {title}\n");
    println!("Machine: {}. Rounds: {}.\n", machine(), options.rounds);
}

fn client_runtime(options: &Options) -> Result<tokio::runtime::Runtime, BoxError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.client_threads)
        .thread_name("bench-client")
        .enable_all()
        .build()?)
}

// ------------------------------------------------------------------------------------------------
// cache-hit
// ------------------------------------------------------------------------------------------------

/// Seconds per operation over `iters` iterations on `threads` threads (wall / iters), given
/// (threads, keys).
type Measure<'a> = Box<dyn Fn(usize, u64) -> f64 + 'a>;

fn cache_hit(options: &Options) -> Result<(), BoxError> {
    header(
        "Cache hit: warm `get_client_access_token` vs bare `DashMap::get` + `Arc` clone (+ clock check)",
        options,
    );
    let names = client_names(MANY_KEYS);
    let bare = bare_cache(&names);
    let names_ref = &names;
    let bare_ref = &bare;
    let bare_measure: Measure<'_> = Box::new(move |threads, keys| {
        run_threads_in(None, threads, options.iters, |thread, i| {
            let key = &names_ref[key_index(thread, i, keys as usize)];
            std::hint::black_box(bare_lookup(bare_ref, key));
        })
        .as_secs_f64()
            / options.iters as f64
    });
    let clock_measure: Measure<'_> = Box::new(move |threads, keys| {
        run_threads_in(None, threads, options.iters, |thread, i| {
            let key = &names_ref[key_index(thread, i, keys as usize)];
            std::hint::black_box(bare_lookup_checked(bare_ref, key));
        })
        .as_secs_f64()
            / options.iters as f64
    });

    #[cfg(feature = "ours")]
    let ours_fixture = {
        let servers = Servers::start(options.server_threads, TokenEndpointConfig::default())?;
        let runtime = client_runtime(options)?;
        let service = token_mgmt_benches::ours::token_service(&servers.token.url(), &names)?;
        runtime.block_on(token_mgmt_benches::ours::warm(&service, &names))?;
        (
            servers,
            runtime,
            service,
            token_mgmt::tokens::TokenRequestParameters::default(),
        )
    };
    #[cfg(feature = "ours")]
    let ours_measure: Option<Measure<'_>> = {
        let (_, runtime, service, parameters) = &ours_fixture;
        Some(Box::new(move |threads, keys| {
            run_threads_in(
                Some(runtime.handle()),
                threads,
                options.iters,
                |thread, i| {
                    let name = &names_ref[key_index(thread, i, keys as usize)];
                    std::hint::black_box(token_mgmt_benches::ours::cache_hit(
                        service, name, parameters,
                    ));
                },
            )
            .as_secs_f64()
                / options.iters as f64
        }))
    };
    #[cfg(not(feature = "ours"))]
    let ours_measure: Option<Measure<'_>> = None;

    let mut table = Table::new([
        "threads",
        "keys",
        "bare DashMap get + Arc clone",
        "bare + CLOCK_BOOTTIME expiry check (clock baseline)",
        "token-mgmt get_client_access_token (warm)",
        "ratio vs bare",
        "ratio vs clock baseline (goal ≤ 1.5×)",
    ]);
    for threads in [1usize, 2] {
        for keys in [1u64, MANY_KEYS as u64] {
            let mut bare_times = Vec::new();
            let mut clock_times = Vec::new();
            let mut ours_times = Vec::new();
            // Warm-up (caches, branch predictors, page faults) outside the rounds.
            bare_measure(threads, keys);
            clock_measure(threads, keys);
            if let Some(ours) = &ours_measure {
                ours(threads, keys);
            }
            for round in 0..options.rounds {
                for subject in round_order(3, round) {
                    match (subject, &ours_measure) {
                        (0, _) => bare_times.push(bare_measure(threads, keys)),
                        (1, _) => clock_times.push(clock_measure(threads, keys)),
                        (_, Some(ours)) => ours_times.push(ours(threads, keys)),
                        (_, None) => {}
                    }
                }
            }
            let bare_median = median(&bare_times);
            let (ours_cell, ratio_cell, clock_ratio_cell) = if ours_times.is_empty() {
                (
                    PENDING.to_owned(),
                    "pending".to_owned(),
                    "pending".to_owned(),
                )
            } else {
                (
                    fmt_seconds(median(&ours_times)),
                    fmt_ratio(median_ratio(&ours_times, &bare_times)),
                    fmt_ratio(median_ratio(&ours_times, &clock_times)),
                )
            };
            table.row([
                threads.to_string(),
                if keys == 1 {
                    "one".to_owned()
                } else {
                    format!("{keys} (rotating)")
                },
                fmt_seconds(bare_median),
                fmt_seconds(median(&clock_times)),
                ours_cell,
                ratio_cell,
                clock_ratio_cell,
            ]);
        }
    }
    println!("{}", table.to_markdown());
    println!(
        "Time per operation, {} operations per thread per measurement. With 2 threads: wall time for \
         both threads to do one operation each (equal to the 1-thread figure if it scales perfectly). \
         Ours is polled with a no-op waker (no runtime scheduling), as the bare lookup pays none.\n",
        options.iters
    );
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// throughput
// ------------------------------------------------------------------------------------------------

struct Subject {
    name: String,
    request: RequestFn,
    /// The token client id, for token request counts; `None` for the fixed-header baselines.
    client_id: Option<&'static str>,
    is_peer: bool,
    /// Whether the client has a 100 s request timeout (a tokio timer per request in reqwest).
    timeout: bool,
}

async fn request_subjects(servers: &Servers) -> Result<Vec<Subject>, BoxError> {
    let url = servers.api.data_url();
    let token_url = servers.token.url();
    // The peers as their docs set them up (no timeout), and with the request timeout token-mgmt's
    // clients have by default, so that each of our rows has peers doing the same work.
    let timeout = Duration::from_secs(100);
    #[cfg_attr(
        not(feature = "ours"),
        allow(unused_mut, reason = "ours pushes its subjects")
    )]
    let mut subjects = vec![
        Subject {
            name: "reqwest 0.13, fixed header (baseline)".into(),
            request: reqwest_fixed_header(&url),
            client_id: None,
            is_peer: false,
            timeout: false,
        },
        Subject {
            name: "reqwest 0.12, fixed header".into(),
            request: reqwest012_fixed_header(&url),
            client_id: None,
            is_peer: false,
            timeout: false,
        },
        Subject {
            name: "middle 0.5 (BasicClientCredentialAuthorizer)".into(),
            request: middle_client(&token_url, "middle", &url, None).await?,
            client_id: Some("middle"),
            is_peer: true,
            timeout: false,
        },
        Subject {
            name: "oauth2 5 + tokio RwLock cache".into(),
            request: OAuth2RwLockPeer::new(&token_url, "oauth2")?.request_fn(&url, None)?,
            client_id: Some("oauth2"),
            is_peer: true,
            timeout: false,
        },
        Subject {
            name: "middle 0.5, 100 s timeout".into(),
            request: middle_client(&token_url, "middle-timeout", &url, Some(timeout)).await?,
            client_id: Some("middle-timeout"),
            is_peer: true,
            timeout: true,
        },
        Subject {
            name: "oauth2 5 + tokio RwLock cache, 100 s timeout".into(),
            request: OAuth2RwLockPeer::new(&token_url, "oauth2-timeout")?
                .request_fn(&url, Some(timeout))?,
            client_id: Some("oauth2-timeout"),
            is_peer: true,
            timeout: true,
        },
    ];
    #[cfg(feature = "ours")]
    for (name, request) in token_mgmt_benches::ours::request_subjects(servers, "ours").await? {
        subjects.push(Subject {
            timeout: name != token_mgmt_benches::ours::WITHOUT_TIMEOUT,
            name,
            request,
            client_id: Some("ours"),
            is_peer: false,
        });
    }

    Ok(subjects)
}

fn throughput(options: &Options) -> Result<(), BoxError> {
    header(
        "Per-request throughput: authorized GETs against the loopback API",
        options,
    );
    let servers = Servers::start(options.server_threads, TokenEndpointConfig::default())?;
    let runtime = client_runtime(options)?;

    runtime.block_on(async {
        let subjects = request_subjects(&servers).await?;

        // Cold start: 64 concurrent first calls per subject (also warms connection pools).
        let mut cold_tokens = Vec::new();
        for subject in &subjects {
            let report = run_load(64, Limit::Requests(256), Arc::clone(&subject.request)).await;
            check(&subject.name, &report)?;
            cold_tokens.push(subject.client_id.map(|id| servers.token.requests_for(id)));
        }

        let mut table = Table::new([
            "concurrency",
            "subject",
            "req/s",
            "ratio vs baseline (goal ≥ 0.97×)",
            "ratio vs best peer, same timeout (goal ≥ 1.0×)",
            "ratio vs best peer without timeout",
            "p50",
            "p99",
        ]);
        let mut best_peers = Vec::new();
        for &concurrency in &options.concurrency {
            // results[subject][round]
            let mut results: Vec<Vec<LoadReport>> = subjects.iter().map(|_| Vec::new()).collect();
            for round in 0..options.rounds {
                for index in round_order(subjects.len(), round) {
                    let report =
                        run_load(concurrency, Limit::Duration(options.duration), Arc::clone(&subjects[index].request))
                            .await;
                    check(&subjects[index].name, &report)?;
                    results[index].push(report);
                }
            }
            let rps: Vec<Vec<f64>> = results.iter().map(|r| r.iter().map(LoadReport::rps).collect()).collect();
            // The best peer is the peer with the highest median in this cell (among the peers with
            // the same request timeout as the subject, or among the peers as their docs set them
            // up, without one), and every round is compared with that peer's figure in the same
            // round. Taking the fastest peer of each round instead would compare with the maximum
            // of noisy figures, which is above every peer's typical figure: a subject exactly as
            // fast as the peers would score < 1.0×.
            let mut best_peer = |timeout: bool| -> Vec<f64> {
                let best = subjects
                    .iter()
                    .zip(&rps)
                    .filter(|(s, _)| s.is_peer && s.timeout == timeout)
                    .max_by(|(_, a), (_, b)| median(a).total_cmp(&median(b)));
                if let Some((subject, _)) = best {
                    best_peers.push(format!("{concurrency}: {}", subject.name));
                }
                best.map(|(_, r)| r.clone()).unwrap_or_default()
            };
            let best_without_timeout = best_peer(false);
            let best_with_timeout = best_peer(true);
            for (index, subject) in subjects.iter().enumerate() {
                let p50: Vec<Duration> = results[index].iter().map(LoadReport::p50).collect();
                let p99: Vec<Duration> = results[index].iter().map(LoadReport::p99).collect();
                table.row([
                    concurrency.to_string(),
                    subject.name.clone(),
                    fmt_rate(median(&rps[index])),
                    fmt_ratio(median_ratio(&rps[index], &rps[0])),
                    if subject.client_id.is_some() {
                        let same = if subject.timeout { &best_with_timeout } else { &best_without_timeout };
                        fmt_ratio(median_ratio(&rps[index], same))
                    } else {
                        "–".into()
                    },
                    if subject.client_id.is_some() {
                        fmt_ratio(median_ratio(&rps[index], &best_without_timeout))
                    } else {
                        "–".into()
                    },
                    fmt_duration(median_duration(&p50)),
                    fmt_duration(median_duration(&p99)),
                ]);
            }
            if !cfg!(feature = "ours") {
                table.row([concurrency.to_string(), "token-mgmt (create_client per request)".into(), PENDING.into()]);
            }
        }
        println!("{}", table.to_markdown());
        println!(
            "Medians over {} rounds of {} ms per subject and concurrency; ratios are medians of per-round \
             ratios. The best peer is the peer with the highest median req/s at that concurrency among \
             the peers with the same request timeout, or without one ({}), compared round by round. Client runtime: {} worker threads; servers: {} thread(s), same process.\n",
            options.rounds,
            options.duration.as_millis(),
            best_peers.join("; "),
            options.client_threads,
            options.server_threads,
        );

        let mut tokens = Table::new(["subject", "token requests after cold start (64 concurrent first calls)", "token requests, whole run"]);
        for (subject, cold) in subjects.iter().zip(&cold_tokens) {
            if let (Some(id), Some(cold)) = (subject.client_id, cold) {
                tokens.row([subject.name.clone(), cold.to_string(), servers.token.requests_for(id).to_string()]);
            }
        }
        if !cfg!(feature = "ours") {
            tokens.row(["token-mgmt", PENDING, PENDING]);
        }
        println!("{}", tokens.to_markdown());
        println!(
            "API: {} requests served, {} rejected (401).\n",
            servers.api.served(),
            servers.api.rejected()
        );
        Ok::<(), BoxError>(())
    })?;
    drop(runtime);
    Ok(())
}

fn check(name: &str, report: &LoadReport) -> Result<(), BoxError> {
    if report.errors > 0 {
        return Err(format!(
            "{name}: {} of {} requests failed: {}",
            report.errors,
            report.errors + report.requests,
            report.first_error.as_deref().unwrap_or("?")
        )
        .into());
    }
    Ok(())
}

/// What one request costs each subject, free of the machine's load: heap allocations per request
/// (counted by the global allocator; the whole process, so the API server's own allocations are in
/// every row alike), and the wall time per request for reference. Requests are sequential, on a
/// current-thread client runtime. With `--subject`, only the matching subjects run, for
/// `benches/instructions.sh`, which counts instructions per request under callgrind.
fn per_request(options: &Options) -> Result<(), BoxError> {
    header(
        "Per-request cost: allocations per authorized GET, sequential",
        options,
    );
    let servers = Servers::start(options.server_threads, TokenEndpointConfig::default())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let subjects = request_subjects(&servers).await?;
        let mut table = Table::new([
            "subject",
            "allocations per request",
            "vs baseline",
            "bytes allocated per request",
            "time per request (noisy)",
        ]);
        let mut baseline = None;
        // A name given in full selects that subject only (one name can be part of another's).
        let exact = |part: &str| subjects.iter().any(|subject| subject.name == part);
        for subject in &subjects {
            if options.subject.as_deref().is_some_and(|part| {
                if exact(part) { subject.name != part } else { !subject.name.contains(part) }
            }) {
                continue;
            }
            // Warm: the token, the connection, the allocator's pools.
            for _ in 0..64 {
                (subject.request)().await?;
            }
            let (allocations, bytes) = (CountingAllocator::allocations(), CountingAllocator::allocated_bytes());
            let started = Instant::now();
            for _ in 0..options.requests {
                (subject.request)().await?;
            }
            let elapsed = started.elapsed();
            let per = |count: u64| count as f64 / options.requests as f64;
            let allocations = per(CountingAllocator::allocations() - allocations);
            let bytes = per(CountingAllocator::allocated_bytes() - bytes);
            let baseline = *baseline.get_or_insert(allocations);
            table.row([
                subject.name.clone(),
                format!("{allocations:.1}"),
                format!("{:+.1}", allocations - baseline),
                format!("{bytes:.0}"),
                fmt_duration(elapsed / options.requests as u32),
            ]);
        }
        println!("{}", table.to_markdown());
        println!(
            "{} sequential requests per subject after 64 warm-up requests; the allocations of the whole \
             process (client and API server) per request.\n",
            options.requests
        );
        Ok(())
    })
}

// ------------------------------------------------------------------------------------------------
// stampede
// ------------------------------------------------------------------------------------------------

fn stampede(options: &Options) -> Result<(), BoxError> {
    header("Stampede: concurrent callers on a cold key", options);
    let config = TokenEndpointConfig {
        delay: options.delay,
        ..TokenEndpointConfig::default()
    };
    let servers = Servers::start(options.server_threads, config)?;
    let runtime = client_runtime(options)?;
    let token_url = servers.token.url();

    runtime.block_on(async {
        let raw_client = reqwest::Client::new();
        raw_token_request(&raw_client, &token_url, "warm-up").await?;
        let mut raw_single = Vec::new();
        let mut peer_single = Vec::new();
        let mut peer_runs: Vec<(StampedeReport, u64)> = Vec::new();
        #[cfg(feature = "ours")]
        let mut ours_runs: Vec<token_mgmt_benches::ours::StampedeFigures> = Vec::new();
        for round in 0..options.rounds {
            for subject in round_order(3, round) {
                match subject {
                    0 => raw_single.push(time_one(raw_token_request(&raw_client, &token_url, "raw")).await?),
                    1 => {
                        let single = OAuth2RwLockPeer::new(&token_url, &format!("oauth2-single-{round}"))?;
                        peer_single.push(time_one(single.authorization()).await?);
                        let id = format!("oauth2-stampede-{round}");
                        let peer = OAuth2RwLockPeer::new(&token_url, &id)?;
                        let report = run_callers(options.callers, || {
                            let peer = peer.clone();
                            async move { peer.authorization().await }
                        })
                        .await;
                        peer_runs.push((report, servers.token.requests_for(&id)));
                    }
                    _ => {
                        #[cfg(feature = "ours")]
                        ours_runs.push(token_mgmt_benches::ours::stampede(&servers.token, options.callers, round).await?);
                    }
                }
            }
        }
        let raw = median_duration(&raw_single);
        let mut table = Table::new([
            "subject",
            "callers",
            "token requests (goal 1)",
            "one cold call alone",
            "all callers have their token",
            "ratio vs raw token request",
            "ratio vs its own single call",
            "failed callers",
        ]);
        table.row([
            "raw token request, reqwest 0.13 (baseline)".to_owned(),
            "1".into(),
            "1".into(),
            fmt_duration(raw),
            fmt_duration(raw),
            fmt_ratio(1.0),
            fmt_ratio(1.0),
            "0".into(),
        ]);
        let mut row = |name: &str, singles: &[Duration], runs: &[(StampedeReport, u64)]| {
            let all: Vec<Duration> = runs.iter().map(|(r, _)| r.all_done).collect();
            let all_secs: Vec<f64> = all.iter().map(Duration::as_secs_f64).collect();
            let raw_secs: Vec<f64> = raw_single.iter().map(Duration::as_secs_f64).collect();
            let single_secs: Vec<f64> = singles.iter().map(Duration::as_secs_f64).collect();
            let tokens: Vec<String> = runs.iter().map(|(_, t)| t.to_string()).collect();
            let failed: usize = runs.iter().map(|(r, _)| r.callers - r.ok).sum();
            table.row([
                name.to_owned(),
                options.callers.to_string(),
                tokens.join(", "),
                fmt_duration(median_duration(singles)),
                fmt_duration(median_duration(&all)),
                fmt_ratio(median_ratio(&all_secs, &raw_secs)),
                fmt_ratio(median_ratio(&all_secs, &single_secs)),
                failed.to_string(),
            ]);
        };
        row("oauth2 5 + tokio RwLock cache (peer reference)", &peer_single, &peer_runs);
        #[cfg(feature = "ours")]
        {
            let singles: Vec<Duration> = ours_runs.iter().map(|f| f.single).collect();
            let runs: Vec<(StampedeReport, u64)> =
                ours_runs.iter().map(|f| (f.stampede.clone(), f.token_requests)).collect();
            row("token-mgmt get_client_access_token", &singles, &runs);
        }
        #[cfg(not(feature = "ours"))]
        table.row(["token-mgmt get_client_access_token", options.callers.to_string().as_str(), PENDING]);
        println!("{}", table.to_markdown());
        println!(
            "Token endpoint delay {} ms. Token requests are listed per round; times are medians over {} \
             rounds; each round uses a fresh client (cold key).\n",
            options.delay.as_millis(),
            options.rounds
        );
        Ok::<(), BoxError>(())
    })?;
    drop(runtime);
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// scale
// ------------------------------------------------------------------------------------------------

fn scale(options: &Options) -> Result<(), BoxError> {
    header("Scale: registered token clients and cached tokens", options);
    if !CountingAllocator::is_active() {
        return Err("the counting allocator is not active".into());
    }
    let names = client_names(options.clients);
    let config = TokenEndpointConfig {
        token_len: options.token_len,
        record: false,
        ..TokenEndpointConfig::default()
    };
    let servers = Servers::start(options.server_threads, config)?;
    let token_url = servers.token.url();

    // Build: `clients` registrations. Baseline: the same data in a HashMap by name.
    let mut bare_build = Vec::new();
    let mut bare_build_bytes = 0;
    #[cfg(feature = "ours")]
    let mut ours_build = Vec::new();
    #[cfg(feature = "ours")]
    let mut ours_build_bytes = 0;
    for round in 0..options.rounds {
        for subject in round_order(2, round) {
            if subject == 0 {
                let start = Instant::now();
                let (registry, bytes) =
                    mem::retained_by(|| bare_client_registry(&token_url, &names));
                bare_build.push(start.elapsed().as_secs_f64());
                bare_build_bytes = bytes;
                drop(registry);
            } else {
                #[cfg(feature = "ours")]
                {
                    let (elapsed, bytes) =
                        token_mgmt_benches::ours::scale_build(&token_url, &names)?;
                    ours_build.push(elapsed.as_secs_f64());
                    ours_build_bytes = bytes;
                }
            }
        }
    }

    // Memory: clients × scopes cached tokens. Baseline: a bare DashMap with the same entries.
    let tokens = options.clients * options.scopes;
    let (bare_tokens, bare_token_bytes) =
        mem::retained_by(|| bare_token_cache(&names, options.scopes, options.token_len));
    assert_eq!(bare_tokens.len(), tokens);
    drop(bare_tokens);

    let mut table = Table::new(["figure", "baseline", "token-mgmt", "ratio", "goal"]);
    let build_label = format!("build {} registered token clients: time", options.clients);
    let bytes_label = format!("build {} registered token clients: memory", options.clients);
    let tokens_label = format!(
        "{tokens} cached tokens ({} B each): memory",
        options.token_len
    );
    #[cfg(feature = "ours")]
    {
        let runtime = client_runtime(options)?;
        let (fetched, ours_token_bytes) = runtime.block_on(
            token_mgmt_benches::ours::scale_memory(&token_url, &names, options.scopes),
        )?;
        assert_eq!(fetched as usize, tokens);
        drop(runtime);
        table.row([
            build_label,
            fmt_duration(Duration::from_secs_f64(median(&bare_build))),
            fmt_duration(Duration::from_secs_f64(median(&ours_build))),
            fmt_ratio(median_ratio(&ours_build, &bare_build)),
            "–".into(),
        ]);
        table.row([
            bytes_label,
            fmt_bytes(bare_build_bytes.max(0) as u64),
            fmt_bytes(ours_build_bytes.max(0) as u64),
            fmt_ratio(ours_build_bytes as f64 / bare_build_bytes as f64),
            "–".into(),
        ]);
        table.row([
            tokens_label,
            fmt_bytes(bare_token_bytes.max(0) as u64),
            fmt_bytes(ours_token_bytes.max(0) as u64),
            fmt_ratio(ours_token_bytes as f64 / bare_token_bytes as f64),
            "< 50 MB".into(),
        ]);
    }
    #[cfg(not(feature = "ours"))]
    {
        table.row([
            build_label,
            fmt_duration(Duration::from_secs_f64(median(&bare_build))),
            PENDING.into(),
            "pending".into(),
            "–".into(),
        ]);
        table.row([
            bytes_label,
            fmt_bytes(bare_build_bytes.max(0) as u64),
            PENDING.into(),
            "pending".into(),
            "–".into(),
        ]);
        table.row([
            tokens_label,
            fmt_bytes(bare_token_bytes.max(0) as u64),
            PENDING.into(),
            "pending".into(),
            "< 50 MB".into(),
        ]);
    }
    println!("{}", table.to_markdown());
    println!(
        "Memory: live bytes retained (counting global allocator), not RSS. Baselines: a `HashMap<String, \
         BareClientOptions>` and a bare `DashMap<Arc<str>, Arc<BareToken>>` (token, precomputed header, \
         expiry) with the same keys. Build time: median of {} rounds. The token endpoint runs in-process \
         with its bookkeeping off.\n",
        options.rounds
    );
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// rollover
// ------------------------------------------------------------------------------------------------

/// The rollover configurations: (label, expiry safety margin).
#[cfg(feature = "ours")]
const MARGINS: [(&str, Duration); 2] = [
    ("default margin (5 s)", Duration::from_secs(5)),
    ("margin 200 ms", Duration::from_millis(200)),
];

#[cfg(feature = "ours")]
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[cfg(feature = "ours")]
fn rollover(options: &Options) -> Result<(), BoxError> {
    use token_mgmt_benches::ours::{concurrent_callers, paced_caller, rollover_service};
    header(
        "Rollover: short-lived tokens, background refresh on vs off (real clock)",
        options,
    );
    let config = TokenEndpointConfig {
        delay: options.endpoint_delay,
        expires_in: options.expires_in,
        ..TokenEndpointConfig::default()
    };
    let servers = Servers::start(options.server_threads, config)?;
    let token_url = servers.token.url();

    let mut table = Table::new([
        "configuration",
        "background refresh",
        "calls",
        "rollovers",
        "token requests",
        "p50",
        "p99",
        "p99.9",
        "max",
        "calls > 1 ms",
        "max / p50",
    ]);
    let mut run = 0;
    for (label, margin) in MARGINS {
        for refresh in [true, false] {
            run += 1;
            let id = format!("rollover-paced-{run}");
            let service = rollover_service(&token_url, &id, refresh, margin)?;
            let report = paced_caller(&service, &id, options.run, options.pause)?;
            let l = &report.latencies;
            let p50 = quantile(l, 0.5);
            let max = l.last().copied().unwrap_or_default();
            table.row([
                label.to_owned(),
                if refresh { "on" } else { "off" }.to_owned(),
                l.len().to_string(),
                (report.distinct_tokens - 1).to_string(),
                servers.token.requests_for(&id).to_string(),
                fmt_duration(p50),
                fmt_duration(quantile(l, 0.99)),
                fmt_duration(quantile(l, 0.999)),
                fmt_duration(max),
                l.iter()
                    .filter(|d| **d > Duration::from_millis(1))
                    .count()
                    .to_string(),
                fmt_ratio(max.as_secs_f64() / p50.as_secs_f64()),
            ]);
        }
    }
    println!(
        "### One caller, one call every {} µs\n",
        options.pause.as_micros()
    );
    println!("{}", table.to_markdown());
    println!(
        "Tokens with `expires_in` {} s from the loopback endpoint answering after {} ms; one caller \
         thread calls `get_client_access_token` for {} ms of real time (SystemClock), sleeping {} µs \
         between calls; the first (cold) call is not counted. Default `cache_lifetime_buffer` (capped \
         at half the lifetime: renewal due after {} ms); no retries. Latency includes two \
         `Instant::now()` reads.\n",
        options.expires_in,
        options.endpoint_delay.as_millis(),
        options.run.as_millis(),
        options.pause.as_micros(),
        options.expires_in * 500,
    );

    let runtime = client_runtime(options)?;
    let mut table = Table::new([
        "configuration",
        "background refresh",
        "callers",
        "calls",
        "token requests",
        "distinct tokens served",
        "token requests per rollover (goal 1)",
        "p50",
        "p99",
        "max",
    ]);
    for (label, margin) in MARGINS {
        for refresh in [true, false] {
            run += 1;
            let id = format!("rollover-concurrent-{run}");
            let service = rollover_service(&token_url, &id, refresh, margin)?;
            let report = runtime.block_on(async {
                // Cold start outside the measured window.
                service
                    .get_client_access_token(&id, &Default::default())
                    .await?;
                concurrent_callers(
                    &service,
                    &id,
                    options.rollover_callers,
                    options.run,
                    Duration::from_millis(1),
                    options.endpoint_delay * 5,
                )
                .await
            })?;
            let requests = servers.token.requests_for(&id);
            let l = &report.latencies;
            table.row([
                label.to_owned(),
                if refresh { "on" } else { "off" }.to_owned(),
                options.rollover_callers.to_string(),
                l.len().to_string(),
                requests.to_string(),
                report.distinct_tokens.to_string(),
                format!(
                    "{:.2}",
                    requests as f64 / report.distinct_tokens.max(1) as f64
                ),
                fmt_duration(quantile(l, 0.5)),
                fmt_duration(quantile(l, 0.99)),
                fmt_duration(l.last().copied().unwrap_or_default()),
            ]);
        }
    }
    drop(runtime);
    println!(
        "### {} concurrent callers, one call per caller every 1 ms\n",
        options.rollover_callers
    );
    println!("{}", table.to_markdown());
    println!(
        "Same tokens and endpoint; {} tasks on the client runtime ({} worker threads) for {} ms. \
         Token requests: every request the endpoint received for the key (the cold one included); \
         distinct tokens: every token any caller was served, plus the one cached {} ms after the run \
         (so a renewal that finished after the last call counts). 1.00 = one request per rollover.\n",
        options.rollover_callers,
        options.client_threads,
        options.run.as_millis(),
        (options.endpoint_delay * 5).as_millis(),
    );
    Ok(())
}

#[cfg(not(feature = "ours"))]
fn rollover(options: &Options) -> Result<(), BoxError> {
    header("Rollover", options);
    println!("{PENDING}: the rollover scenario measures token-mgmt only.\n");
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// client-auth
// ------------------------------------------------------------------------------------------------

#[cfg(feature = "ours")]
fn client_auth(options: &Options) -> Result<(), BoxError> {
    header(
        "Client authentication: token requests/s per method (forced renewals)",
        options,
    );
    let servers = Servers::start(options.server_threads, TokenEndpointConfig::default())?;
    let runtime = client_runtime(options)?;
    let keys = token_mgmt_benches::keys::generate()?;
    let subjects = token_mgmt_benches::ours::client_auth_subjects(&servers.token.url(), &keys)?;
    runtime.block_on(async {
        // Warm-up: connections, key loading, one request per method.
        for (name, request, _) in &subjects {
            let report = run_load(4, Limit::Requests(64), Arc::clone(request)).await;
            check(name, &report)?;
        }
        let mut table = Table::new([
            "concurrency",
            "method",
            "token requests/s (received by the endpoint)",
            "ratio vs client_secret_basic",
            "calls/s (concurrent forced calls share a flight)",
            "p50 call",
            "p99 call",
        ]);
        for &concurrency in &options.concurrency {
            let mut results: Vec<Vec<LoadReport>> = subjects.iter().map(|_| Vec::new()).collect();
            // Token requests per second the endpoint received during each run.
            let mut received: Vec<Vec<f64>> = subjects.iter().map(|_| Vec::new()).collect();
            for round in 0..options.rounds {
                for index in round_order(subjects.len(), round) {
                    let (name, request, id) = &subjects[index];
                    let before = servers.token.requests_for(id);
                    let report = run_load(
                        concurrency,
                        Limit::Duration(options.duration),
                        Arc::clone(request),
                    )
                    .await;
                    let requests = servers.token.requests_for(id) - before;
                    check(name, &report)?;
                    received[index].push(requests as f64 / report.elapsed.as_secs_f64());
                    results[index].push(report);
                }
            }
            for (index, (name, _, _)) in subjects.iter().enumerate() {
                let calls: Vec<f64> = results[index].iter().map(LoadReport::rps).collect();
                let p50: Vec<Duration> = results[index].iter().map(LoadReport::p50).collect();
                let p99: Vec<Duration> = results[index].iter().map(LoadReport::p99).collect();
                table.row([
                    concurrency.to_string(),
                    name.clone(),
                    fmt_rate(median(&received[index])),
                    fmt_ratio(median_ratio(&received[index], &received[0])),
                    fmt_rate(median(&calls)),
                    fmt_duration(median_duration(&p50)),
                    fmt_duration(median_duration(&p99)),
                ]);
            }
        }
        println!("{}", table.to_markdown());
        let counted: Vec<String> = subjects
            .iter()
            .map(|(_, _, id)| format!("{id} {}", servers.token.requests_for(id)))
            .collect();
        println!(
            "Each call is `get_client_access_token` with `force_renewal` (a new token request with an \
             assertion signed anew; concurrent forced calls of one key share one flight, so with \
             concurrency > 1 there are fewer requests than calls) against the loopback endpoint (no delay; it checks assertion \
             claims, not signatures). Medians over {} rounds of {} ms; ratios are medians of \
             per-round ratios. Client runtime: {} worker threads (flights run on token-mgmt's shared \
             one-thread runtime); servers: {} thread(s), same process. Token requests received per \
             client: {}.\n",
            options.rounds,
            options.duration.as_millis(),
            options.client_threads,
            options.server_threads,
            counted.join(", "),
        );
        Ok::<(), BoxError>(())
    })?;
    drop(runtime);
    Ok(())
}

/// Authorized requests/s of DPoP-bound clients (a new proof per request) against a Bearer client,
/// same run, same API.
#[cfg(feature = "ours")]
fn dpop(options: &Options) -> Result<(), BoxError> {
    header("DPoP: authorized requests/s, DPoP-bound vs Bearer", options);
    let servers = Servers::start(options.server_threads, TokenEndpointConfig::default())?;
    let runtime = client_runtime(options)?;
    runtime.block_on(async {
        let subjects = token_mgmt_benches::ours::dpop_subjects(&servers).await?;
        for (name, request) in &subjects {
            let report = run_load(16, Limit::Requests(256), Arc::clone(request)).await;
            check(name, &report)?;
        }
        let mut table = Table::new(["concurrency", "subject", "req/s", "ratio vs Bearer", "p50", "p99"]);
        for &concurrency in &options.concurrency {
            let mut results: Vec<Vec<LoadReport>> = subjects.iter().map(|_| Vec::new()).collect();
            for round in 0..options.rounds {
                for index in round_order(subjects.len(), round) {
                    let report =
                        run_load(concurrency, Limit::Duration(options.duration), Arc::clone(&subjects[index].1)).await;
                    check(&subjects[index].0, &report)?;
                    results[index].push(report);
                }
            }
            let rps: Vec<Vec<f64>> = results.iter().map(|r| r.iter().map(LoadReport::rps).collect()).collect();
            for (index, (name, _)) in subjects.iter().enumerate() {
                let p50: Vec<Duration> = results[index].iter().map(LoadReport::p50).collect();
                let p99: Vec<Duration> = results[index].iter().map(LoadReport::p99).collect();
                table.row([
                    concurrency.to_string(),
                    name.clone(),
                    fmt_rate(median(&rps[index])),
                    fmt_ratio(median_ratio(&rps[index], &rps[0])),
                    fmt_duration(median_duration(&p50)),
                    fmt_duration(median_duration(&p99)),
                ]);
            }
        }
        println!("{}", table.to_markdown());
        println!(
            "Medians over {} rounds of {} ms; ratios are medians of per-round ratios. The API checks the \
             `DPoP` scheme and that a proof is present, not the proof's signature: the difference is the \
             client's proof cost. API: {} requests served, {} rejected. Client runtime: {} worker \
             threads; servers: {} thread(s), same process.\n",
            options.rounds,
            options.duration.as_millis(),
            servers.api.served(),
            servers.api.rejected(),
            options.client_threads,
            options.server_threads,
        );
        Ok::<(), BoxError>(())
    })?;
    drop(runtime);
    Ok(())
}

#[cfg(not(feature = "ours"))]
fn dpop(options: &Options) -> Result<(), BoxError> {
    header("DPoP", options);
    println!("{PENDING}: the dpop scenario measures token-mgmt only.\n");
    Ok(())
}

#[cfg(not(feature = "ours"))]
fn client_auth(options: &Options) -> Result<(), BoxError> {
    header("Client authentication", options);
    println!("{PENDING}: the client-auth scenario measures token-mgmt only.\n");
    Ok(())
}
