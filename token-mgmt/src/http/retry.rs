//! Resending a request that a server refused before processing it: the retries reqwest's default
//! policy makes, made by token-mgmt's clients instead.
//!
//! reqwest's default retry policy resends a request, at most twice, when an HTTP/2 server refused
//! it unprocessed (`REFUSED_STREAM`) or closed the connection gracefully before it (`GOAWAY` with
//! `NO_ERROR`). To have the copy to resend, it clones every request before sending it (URI, header
//! map, extensions: two allocations and about 1,100 instructions per request, BENCHMARKS.md section
//! 10), although it resends nothing else. token-mgmt's clients turn that policy off
//! ([`without_reqwest_retries`]) and resend such a refusal themselves: from the copy the send future
//! keeps for a 401 anyway when the token handler authorized the request, from a copy made as
//! reqwest made it on every other path ([`execute`], [`ResendRefused`]).

use std::error::Error as _;

use async_trait::async_trait;
use http::{Extensions, HeaderMap, Method};
use reqwest::{Request, Response, Version};
use reqwest_middleware::{Middleware, Next};
use url::Url;

use super::client::HttpClient;
use crate::tokens::Forward;

/// How many times a refused request is resent, on top of the first attempt (reqwest's default).
pub(crate) const MAX_RESENDS: u8 = 2;

/// `builder` without reqwest's retry policy, whose per-request copy [`execute`] makes redundant.
pub(crate) fn without_reqwest_retries(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    // `never()` alone still clones every request (its limit of 2 is checked first): a limit of 0
    // is what skips the copy.
    builder.retry(reqwest::retry::never().max_retries_per_request(0))
}

/// Whether the server refused the request before processing it, so that it is safe to send again
/// (RFC 9113 section 8.7): the errors reqwest's default policy retries.
pub(crate) fn is_refused(error: &reqwest::Error) -> bool {
    let mut source = error.source();
    while let Some(error) = source {
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            return h2.is_remote()
                && ((h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR))
                    || (h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM)));
        }
        source = error.source();
    }
    false
}

/// A copy of `req` to send again, or `None` if its body is a stream. Requests built by a
/// `reqwest::RequestBuilder` have no extension but their timeout.
///
/// `Request::try_clone` always allocates the copy's extension map to set its timeout, none or not
/// (a hash map per request); a request without body or timeout, most of them, is copied here
/// without.
pub(crate) fn copy_request(req: &Request) -> Option<Request> {
    if req.body().is_some() || req.timeout().is_some() {
        return req.try_clone();
    }
    Some(request_of(
        req.method().clone(),
        req.url().clone(),
        req.headers().clone(),
        req.version(),
    ))
}

/// A request without body, timeout or extensions.
pub(crate) fn request_of(
    method: Method,
    url: Url,
    headers: HeaderMap,
    version: Version,
) -> Request {
    let mut request = Request::new(method, url);
    *request.headers_mut() = headers;
    *request.version_mut() = version;
    request
}

/// The network, for the token handler's own paths (waiting for a token, per-request parameters,
/// a 401): reqwest, with the resends.
impl Forward for HttpClient {
    async fn forward<'a>(
        &'a self,
        req: Request,
        _extensions: &'a mut Extensions,
    ) -> reqwest_middleware::Result<Response> {
        execute(self.pipeline().1, self.name(), req)
            .await
            .map_err(reqwest_middleware::Error::Reqwest)
    }
}

/// Sends `request` with `client`, the reqwest client of the `HttpClient` named `name`, and sends it
/// again (at most [`MAX_RESENDS`] times) while the server refuses it unprocessed. A request with a
/// streaming body is sent once.
async fn execute(
    client: &reqwest::Client,
    name: &str,
    request: Request,
) -> reqwest::Result<Response> {
    let mut copy = copy_request(&request);
    let mut response = client.execute(request).await;
    let mut resent = 0;
    loop {
        match response {
            Err(error) if resent < MAX_RESENDS && is_refused(&error) => {
                let Some(request) = copy.take() else {
                    return Err(error);
                };
                copy = copy_request(&request);
                resent += 1;
                log_resend(name, resent);
                response = client.execute(request).await;
            }
            response => return response,
        }
    }
}

/// Logs a resend by the client named `client` (not the error: it names the URL, whose query may
/// carry credentials).
pub(crate) fn log_resend(client: &str, attempt: u8) {
    tracing::debug!(
        client,
        attempt,
        "the server refused the request before processing it; sending it again"
    );
}

/// The last middleware of every client's reqwest-middleware chain (reqwest-middleware then calls
/// reqwest): [`execute`]'s resends for requests sent through the chain. Holds the client's name.
#[derive(Debug)]
pub(crate) struct ResendRefused(pub(crate) String);

#[async_trait]
impl Middleware for ResendRefused {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let mut copy = copy_request(&req);
        let mut response = next.clone().run(req, extensions).await;
        let mut resent = 0;
        loop {
            match response {
                Err(reqwest_middleware::Error::Reqwest(error))
                    if resent < MAX_RESENDS && is_refused(&error) =>
                {
                    let Some(request) = copy.take() else {
                        return Err(reqwest_middleware::Error::Reqwest(error));
                    };
                    copy = copy_request(&request);
                    resent += 1;
                    log_resend(&self.0, resent);
                    response = next.clone().run(request, extensions).await;
                }
                response => return response,
            }
        }
    }
}
