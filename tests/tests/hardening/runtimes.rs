//! Items 1 and 4: expired tokens are never served, and renewals happen, whatever runtime or calling
//! pattern the callers use: a synchronous facade (`block_on` per call on a runtime kept in a struct),
//! a first runtime that then sits idle while later calls run on another.
//!
//! Before the fix, freshness was a flag flipped by a refresh task spawned on the first caller's
//! runtime, and flights ran there too: with that runtime idle (or only driven inside `block_on`),
//! stale tokens were served and a renewal from another runtime could hang.

use std::time::Duration;

use serde_json::json;
use token_mgmt::tokens::{AccessTokenManagementService, ClientAccessToken};
use token_mgmt_tests::token_server::TokenServer;
use tokio::runtime::{Builder, Runtime};

use crate::{CLIENT, defaults, force, get, guarded, manual_service, options_for};

const MILLI: Duration = Duration::from_millis(1);

fn current_thread() -> Runtime {
    Builder::new_current_thread().enable_all().build().unwrap()
}

/// A synchronous token API as an application without async code writes it: its own runtime, one
/// `block_on` per call, nothing driving the runtime in between.
struct SyncTokens {
    runtime: Runtime,
    service: AccessTokenManagementService,
}

impl SyncTokens {
    fn token(&self) -> ClientAccessToken {
        self.runtime
            .block_on(self.service.get_client_access_token(CLIENT, &defaults()))
            .expect("token")
    }

    fn wait_for_requests(&self, server: &TokenServer, n: usize) {
        self.runtime.block_on(guarded(
            &format!("token request {n}"),
            server.wait_for_requests(n),
        ));
    }
}

#[test]
fn a_sync_facade_gets_a_renewal_after_the_refresh_time_and_never_an_expired_token() {
    let server = TokenServer::start();
    server.set_expires_in(Some(json!(120))); // refresh at 60 s, never served from 115 s
    let mut options = options_for(&server, |_| {});
    // Only the callers' own path may notice that the token is due.
    options.background_refresh = false;
    let (service, clock) = manual_service(options);
    let facade = SyncTokens {
        runtime: current_thread(),
        service,
    };

    let first = facade.token();
    assert_eq!(first.access_token(), "tok-1--");
    clock.advance(Duration::from_secs(60) - MILLI);
    assert!(
        facade.token().ptr_eq(&first),
        "fresh until its refresh time"
    );
    assert_eq!(server.request_count(), 1);

    // Due: served at once, and renewed although the facade's runtime is idle between calls.
    clock.advance(2 * MILLI);
    // Unless the background renewal, woken by the same advance, has already replaced it.
    let due = facade.token();
    assert!(
        due.ptr_eq(&first) || due.access_token() == "tok-2--",
        "a due token is still served"
    );
    facade.wait_for_requests(&server, 2);

    // Past the first token's expiry: never served again.
    clock.advance(Duration::from_secs(56));
    let second = facade.token();
    assert_eq!(second.access_token(), "tok-2--");
    assert_eq!(server.request_count(), 2);

    // Long past every expiry (a suspend, say): the caller waits for a new token.
    clock.advance(Duration::from_secs(3600));
    assert_eq!(facade.token().access_token(), "tok-3--");
    assert_eq!(server.request_count(), 3);
}

#[test]
fn a_first_runtime_that_then_sits_idle_does_not_stop_renewals() {
    let server = TokenServer::start();
    server.set_expires_in(Some(json!(120)));
    let (service, clock) = manual_service(options_for(&server, |_| {}));

    // The first call runs on runtime A, which is then kept alive but never driven again.
    let idle = current_thread();
    let first = idle.block_on(get(&service));
    assert_eq!(first.access_token(), "tok-1--");

    let busy = Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    busy.block_on(async {
        clock.advance(Duration::from_secs(61));
        // Due: served at once, unless the background renewal, woken by the same advance on the
        // service's own thread, has already replaced it.
        let due = guarded("a due token", get(&service)).await;
        assert!(
            due.ptr_eq(&first) || due.access_token() == "tok-2--",
            "due: the first token or its renewal, never a wait for another"
        );
        guarded("the renewal", server.wait_for_requests(2)).await;

        clock.advance(Duration::from_secs(55)); // 116 s: the first token has expired
        let second = guarded("a token", get(&service)).await;
        assert_eq!(second.access_token(), "tok-2--");

        clock.advance(Duration::from_secs(3600));
        let third = guarded("a token", get(&service)).await;
        assert_eq!(third.access_token(), "tok-3--");
    });
    assert_eq!(server.request_count(), 3);
    drop(idle);
}

#[test]
fn a_forced_renewal_from_a_second_runtime_completes_while_the_first_sits_idle() {
    let server = TokenServer::start();
    let (service, _clock) = manual_service(options_for(&server, |_| {}));

    // Runtime A makes the first request (and, before the fix, owned the pooled connection), then
    // sits idle for the rest of the test.
    let idle = current_thread();
    let first = idle.block_on(get(&service));
    assert_eq!(first.access_token(), "tok-1--");

    for other in [
        current_thread(),
        Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap(),
    ] {
        other.block_on(async {
            let renewed = guarded("a forced renewal", force(&service)).await;
            assert!(!renewed.same_token(&first), "a new token");
            let cached = guarded("a cached token", get(&service)).await;
            assert!(
                cached.ptr_eq(&renewed),
                "the renewal replaced the cached token"
            );
        });
    }
    assert_eq!(server.request_count(), 3);
    drop(idle);
}

#[test]
fn tokens_are_shared_between_threads_that_each_block_on_their_own_runtime() {
    let server = TokenServer::start();
    server.hold_all();
    let (service, clock) = manual_service(options_for(&server, |_| {}));

    // Eight threads, each with its own current-thread runtime, ask at once: one request.
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let service = service.clone();
            std::thread::spawn(move || current_thread().block_on(get(&service)))
        })
        .collect();
    current_thread().block_on(guarded("the request", server.wait_for_requests(1)));
    server.release();
    let tokens: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(tokens.iter().all(|t| t.access_token() == "tok-1--"));
    assert_eq!(server.request_count(), 1);

    // Past expiry, a thread whose runtime only lives for its one call gets a new token.
    clock.advance(Duration::from_secs(3600));
    let service2 = service.clone();
    let renewed = std::thread::spawn(move || current_thread().block_on(get(&service2)))
        .join()
        .unwrap();
    assert_eq!(renewed.access_token(), "tok-2--");
    assert_eq!(server.request_count(), 2);
}
