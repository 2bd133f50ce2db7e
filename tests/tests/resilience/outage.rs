//! Outages and refusals: a valid token outlives an outage, retries follow the policy exactly, an
//! outage costs a bounded number of requests however many callers ask, and errors are typed.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use token_mgmt::tokens::{
    AccessTokenManagementService, ClientAccessToken, RetryPolicy, TokenError,
};
use token_mgmt_tests::fault_server::Fault;

use metrics_util::debugging::DebuggingRecorder;
use token_mgmt::tokens::metric_names as names;

use crate::{
    CLIENT, Recorded, chain_has_status, clock_and_server, get, guard, options_for, scoped, secs,
    service_on, until,
};

const STEP: Duration = Duration::from_millis(500);

fn unavailable() -> Fault {
    Fault::oauth(503, "temporarily_unavailable")
}

/// The error every caller gets once the retry policy gave up on a 503.
fn assert_gave_up_on_503(error: &TokenError, attempts_expected: u32) {
    assert!(
        matches!(error, TokenError::Unavailable { attempts, .. } if *attempts == attempts_expected),
        "{error:?}"
    );
    assert!(chain_has_status(error, 503), "{error:?}");
    assert_eq!(error.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
}

/// The token (120 s: due at 60 s, never served from 115 s) is obtained, then the endpoint answers
/// 503 for two whole lifetimes (240 s). Until 115 s every call gets the token at once, while
/// background renewals keep failing; from 115 s every call fails with the 503 in its source chain.
/// When the endpoint recovers, calls within the failure cool-down still get the failure without a
/// request, and the first call after it succeeds.
///
/// The service runs on the test's runtime: after each call the test lets any renewal it started
/// run to its end (seen in the service's metrics), so renewals really run while the token is valid.
#[tokio::test]
async fn a_valid_token_outlives_an_outage_until_its_expiry() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let recorded = RefCell::new(Recorded::default());
    let (clock, server) = clock_and_server();
    server.set_expires_in(Some(120));
    let service = AccessTokenManagementService::builder(options_for(&server))
        .clock(clock.clone())
        .runtime(tokio::runtime::Handle::current())
        .build()
        .unwrap();
    let first = get(&service).await.unwrap();
    server.always(unavailable());
    // Every renewal from now on makes 3 attempts; the last attempt's count is recorded in the same
    // poll of the flight that ends it.
    let settle = || async {
        until("running renewals to end", || {
            let mut recorded = recorded.borrow_mut();
            recorded.take(&snapshotter);
            let started = recorded.counter(names::BACKGROUND_RENEWALS, None);
            started * 3 == recorded.counter(names::TOKEN_REQUESTS, Some("error"))
        })
        .await;
    };

    let mut now = Duration::ZERO;
    let mut served = 0;
    while now + STEP < secs(115) {
        clock.advance(STEP);
        now += STEP;
        let token = get(&service)
            .await
            .unwrap_or_else(|e| panic!("call at {now:?} failed before expiry: {e:?}"));
        assert!(token.ptr_eq(&first));
        served += 1;
        settle().await;
    }
    assert_eq!(served, 229);
    // Renewals ran while the token was valid: one flight of 3 attempts at 60 s, then one at the
    // first step after each cool-down (1 s to 1.25 s, so every 1.5 s): 37 flights up to 114.5 s.
    let renewal_times: Vec<Duration> = server.request_times()[1..]
        .iter()
        .map(|t| Duration::from_nanos(t.as_nanos()))
        .collect();
    let expected: Vec<Duration> = (0..37u64)
        .flat_map(|k| [secs(60) + Duration::from_millis(1500 * k); 3])
        .collect();
    assert_eq!(renewal_times, expected);

    clock.advance(STEP);
    now += STEP;
    assert_eq!(now, secs(115));
    let error = get(&service).await.expect_err("the token has expired");
    assert_gave_up_on_503(&error, 3);

    while now < secs(240) {
        clock.advance(STEP);
        now += STEP;
        let error = get(&service).await.expect_err("the outage goes on");
        assert_gave_up_on_503(&error, 3);
    }

    // Recovery. The last failure is within its cool-down: no request for a while.
    let requests = server.request_count();
    server.always(Fault::Issue);
    let error = get(&service).await.expect_err("within the cool-down");
    assert_gave_up_on_503(&error, 3);
    assert_eq!(
        server.request_count(),
        requests,
        "no request during the cool-down"
    );
    clock.advance(Duration::from_millis(1300)); // past the longest cool-down (1 s + 25 %)
    let token = get(&service).await.expect("the endpoint recovered");
    assert_eq!(token.access_token(), format!("tok-{}--", requests + 1));
    assert_eq!(server.request_count(), requests + 1);
}

/// A 429 with `Retry-After: 2` is retried after 2 s on the service clock, not before (the policy's
/// own back-off is zero here, so the wait is the server's). The service runs on the test's runtime
/// so that the test sees the flight's retry counted, after which its wait has begun.
#[tokio::test]
async fn retry_after_is_honoured_on_the_service_clock() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut recorded = Recorded::default();
    let (clock, server) = clock_and_server();
    server.script([Fault::throttled(429, "2")]);
    let service = AccessTokenManagementService::builder(options_for(&server))
        .clock(clock.clone())
        .runtime(tokio::runtime::Handle::current())
        .build()
        .unwrap();
    let call = {
        let service = service.clone();
        tokio::spawn(async move {
            service
                .get_client_access_token(CLIENT, &Default::default())
                .await
        })
    };
    // The retry is counted in the poll that starts the flight's wait.
    until("the flight to wait before its retry", || {
        recorded.take(&snapshotter);
        recorded.counter(names::TOKEN_REQUEST_RETRIES, None) == 1
    })
    .await;
    assert_eq!(server.request_count(), 1);

    clock.advance(Duration::from_millis(1900));
    // A request of another key through the same runtime and server: the waiting flight had every
    // chance to run meanwhile.
    let probe = crate::get_with(&service, &scoped("probe")).await.unwrap();
    assert_eq!(probe.access_token(), "tok-2-probe-");
    let default_requests = || {
        server
            .requests()
            .iter()
            .filter(|r| r.scope.is_empty())
            .count()
    };
    assert_eq!(default_requests(), 1, "no retry before 2 s");
    assert!(!call.is_finished());

    clock.advance(Duration::from_millis(200));
    let token = guard("the retried call", call).await.unwrap().unwrap();
    assert_eq!(token.access_token(), "tok-3--");
    assert_eq!(default_requests(), 2);
    let times = server.request_times();
    assert_eq!(
        times[2].saturating_duration_since(times[0]),
        Duration::from_millis(2100)
    );
}

/// A `Retry-After` longer than `max_retry_after` (30 s) ends the retries at once.
#[tokio::test]
async fn a_retry_after_beyond_the_cap_is_not_waited_for() {
    let (clock, server) = clock_and_server();
    server.always(Fault::throttled(429, "60"));
    let service = service_on(options_for(&server), &clock);
    let error = get(&service).await.unwrap_err();
    match &error {
        TokenError::Unavailable {
            attempts: 1,
            source,
            ..
        } => assert!(
            matches!(**source, TokenError::Endpoint { status, retry_after: Some(d), .. }
                if status == StatusCode::TOO_MANY_REQUESTS && d == secs(60)),
            "{source:?}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(server.request_count(), 1);
}

/// `invalid_client` cannot be fixed by retrying: exactly one request, the endpoint's error as is,
/// and no request later either (nothing retries in the background; calls in the cool-down get the
/// same error).
#[tokio::test]
async fn invalid_client_is_never_retried() {
    let (clock, server) = clock_and_server();
    server.always(Fault::oauth(400, "invalid_client"));
    let service = service_on(options_for(&server), &clock);
    let error = get(&service).await.unwrap_err();
    assert!(
        matches!(&error, TokenError::Endpoint { status, error: Some(e), .. }
            if *status == StatusCode::BAD_REQUEST && e == "invalid_client"),
        "{error:?}"
    );
    assert!(!error.is_transient());
    assert_eq!(server.request_count(), 1);
    let again = get(&service).await.unwrap_err();
    assert_eq!(again.oauth_error(), Some("invalid_client"));
    clock.advance(secs(60)); // past any back-off
    let probe = crate::get_with(&service, &scoped("probe"))
        .await
        .unwrap_err();
    assert_eq!(probe.oauth_error(), Some("invalid_client"));
    assert_eq!(
        server.request_count(),
        2,
        "one request per flight: the call's and the probe's"
    );
}

/// Spawns `n` callers of the default token; returns when every one has run up to its wait (the test
/// runtime has one thread: a caller that counted itself has already been polled to its first
/// pending point).
async fn spawn_callers(
    service: &AccessTokenManagementService,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Result<ClientAccessToken, TokenError>>> {
    let entered = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..n)
        .map(|_| {
            let (service, entered) = (service.clone(), entered.clone());
            tokio::spawn(async move {
                entered.fetch_add(1, Ordering::Relaxed);
                service
                    .get_client_access_token(CLIENT, &Default::default())
                    .await
            })
        })
        .collect();
    until("every caller to start", || {
        entered.load(Ordering::Relaxed) == n
    })
    .await;
    callers
}

async fn assert_all_gave_up(
    callers: Vec<tokio::task::JoinHandle<Result<ClientAccessToken, TokenError>>>,
    attempts: u32,
) {
    for caller in callers {
        let error = guard("a caller", caller)
            .await
            .expect("caller task")
            .expect_err("the endpoint is down");
        assert_gave_up_on_503(&error, attempts);
    }
}

/// 10,000 concurrent callers, no valid token, the endpoint down: one flight, so exactly
/// `max_attempts` (3) requests; 10,000 more callers within the cool-down get the failure without a
/// request; after the cool-down, 10,000 more cost exactly one more flight.
#[tokio::test]
async fn ten_thousand_callers_during_an_outage_cost_one_flight() {
    const CALLERS: usize = 10_000;
    let max_attempts = RetryPolicy::default().max_attempts as usize;
    assert_eq!(max_attempts, 3);
    let (clock, server) = clock_and_server();
    server.always(unavailable());
    let service = service_on(options_for(&server), &clock);

    server.hold(); // the first attempt waits at the server until every caller has joined
    let callers = spawn_callers(&service, CALLERS).await;
    guard("the first attempt", server.wait_for_requests(1)).await;
    server.release();
    assert_all_gave_up(callers, 3).await;
    assert_eq!(server.request_count(), max_attempts);

    let callers = spawn_callers(&service, CALLERS).await;
    assert_all_gave_up(callers, 3).await;
    assert_eq!(
        server.request_count(),
        max_attempts,
        "the cool-down spares the endpoint"
    );

    clock.advance(Duration::from_millis(1300));
    server.hold();
    let callers = spawn_callers(&service, CALLERS).await;
    guard(
        "the next flight",
        server.wait_for_requests(max_attempts + 1),
    )
    .await;
    server.release();
    assert_all_gave_up(callers, 3).await;
    assert_eq!(server.request_count(), 2 * max_attempts);
}

/// Connection resets are transient: two resets then a token cost one call three requests; three
/// resets exhaust the policy with a transport error as the reason.
#[tokio::test]
async fn connection_resets_are_retried_then_reported() {
    let (clock, server) = clock_and_server();
    server.fail_times(2, Fault::Reset);
    let service = service_on(options_for(&server), &clock);
    let token = get(&service).await.expect("third attempt succeeds");
    assert_eq!(token.access_token(), "tok-3--");
    assert_eq!(server.request_count(), 3);

    server.always(Fault::Reset);
    assert!(
        get(&service).await.is_ok(),
        "the cached token is still valid"
    );
    let error = crate::get_with(&service, &scoped("other"))
        .await
        .unwrap_err();
    match &error {
        TokenError::Unavailable {
            attempts: 3,
            source,
            ..
        } => assert!(
            matches!(**source, TokenError::Transport { .. }),
            "{source:?}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(std::error::Error::source(&error).is_some());
    assert_eq!(server.request_count(), 6);
}

/// A request that hangs, then one slower than the request timeout, each time out and are retried;
/// the third attempt gets the token. The service runs on the test's runtime here, whose clock is
/// paused and advanced past the timeout once each request is at the server.
#[tokio::test]
async fn hanging_and_slow_responses_time_out_and_are_retried() {
    let (clock, server) = clock_and_server();
    server.script([Fault::Hang, Fault::Delay(secs(3600))]);
    let mut options = options_for(&server);
    options.request_timeout = secs(2);
    let service = AccessTokenManagementService::builder(options)
        .clock(clock.clone())
        .runtime(tokio::runtime::Handle::current())
        .build()
        .unwrap();
    let call = {
        let service = service.clone();
        tokio::spawn(async move {
            service
                .get_client_access_token(CLIENT, &Default::default())
                .await
        })
    };
    for attempt in 1..=2 {
        guard(
            "the attempt to reach the server",
            server.wait_for_requests(attempt),
        )
        .await;
        tokio::time::pause();
        tokio::time::advance(Duration::from_millis(2100)).await;
        tokio::time::resume();
    }
    let token = guard("the call", call)
        .await
        .unwrap()
        .expect("third attempt");
    assert_eq!(token.access_token(), "tok-3--");
    assert_eq!(server.request_count(), 3);
}
