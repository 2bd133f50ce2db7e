//! Resolving a request path against a client's base address, like .NET's `new Uri(base, relative)`.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use url::Url;

use super::error::InvalidUrlReason;

/// A client's base address, with the plain relative paths already resolved against it.
///
/// Resolving re-parses the joined path (about 1,000 instructions, a tenth of a request's client-side
/// cost); a worker requests the same few paths over and over, so each plain path (see
/// [`append_plain_path`]) is parsed once and then copied (one allocation, as for any `Url`). The memo
/// is bounded: past [`Self::CAPACITY`] paths, new ones are resolved on every request, as without it.
/// Other paths (absolute URLs, queries, dot segments) are resolved every time: they vary per request.
///
/// The memo is read on every request from every thread and written a few hundred times at most: it
/// is an immutable map swapped whole on a write (`arc-swap`), so that a read takes no lock (a
/// read-write lock's counter is one cache line that every request of every thread writes).
pub(crate) struct Resolver {
    base: Option<Url>,
    memo: ArcSwap<Memo>,
}

type Memo = HashMap<Box<str>, Arc<Url>, foldhash::fast::RandomState>;

/// A resolved request path.
pub(crate) struct Resolved {
    pub(crate) url: Url,
    /// The URL has the base address's origin by construction (a plain path appended to it).
    pub(crate) base_origin: bool,
    /// The memoized copy of `url`, shared (the token handler keeps it for a 401 replay instead of
    /// copying the URL).
    pub(crate) shared: Option<Arc<Url>>,
}

impl Resolver {
    /// How many plain paths are memoized per client.
    pub(crate) const CAPACITY: usize = 256;

    pub(crate) fn new(base: Option<Url>) -> Self {
        Self {
            base,
            memo: ArcSwap::default(),
        }
    }

    /// The base address.
    pub(crate) fn base(&self) -> Option<&Url> {
        self.base.as_ref()
    }

    /// Resolves `path` against the base address (RFC 3986 reference resolution).
    ///
    /// - An absolute `http`/`https` URL is used as it is.
    /// - A relative reference needs a base address: `http://h/api/` + `test` = `http://h/api/test`,
    ///   `http://h/api/` + `/test` = `http://h/test`, `http://h/api/` + `` = `http://h/api/`.
    /// - Any other scheme is refused (reqwest only speaks HTTP).
    pub(crate) fn resolve(&self, path: &str) -> Result<Resolved, InvalidUrlReason> {
        let other = |url| Resolved {
            url,
            base_origin: false,
            shared: None,
        };
        let Some(base) = &self.base else {
            return resolve_other(None, path).map(other);
        };
        let full = {
            let memo = self.memo.load();
            if let Some(url) = memo.get(path) {
                return Ok(Resolved {
                    url: Url::clone(url),
                    base_origin: true,
                    shared: Some(Arc::clone(url)),
                });
            }
            memo.len() >= Self::CAPACITY
        };
        let Some(url) = append_plain_path(base, path) else {
            return resolve_other(Some(base), path).map(other);
        };
        let shared = (!full).then(|| {
            let shared = Arc::new(url.clone());
            self.memo.rcu(|memo| {
                let mut memo = Memo::clone(memo);
                if memo.len() < Self::CAPACITY {
                    memo.entry(path.into())
                        .or_insert_with(|| Arc::clone(&shared));
                }
                memo
            });
            shared
        });
        Ok(Resolved {
            url,
            base_origin: true,
            shared,
        })
    }

    #[cfg(test)]
    fn memoized(&self) -> usize {
        self.memo.load().len()
    }
}

/// [`Resolver::resolve`] for anything but a plain path under the base address.
fn resolve_other(base: Option<&Url>, path: &str) -> Result<Url, InvalidUrlReason> {
    let url = match Url::parse(path) {
        Ok(url) => url,
        Err(url::ParseError::RelativeUrlWithoutBase) => match base {
            Some(base) => base.join(path).map_err(InvalidUrlReason::Parse)?,
            None => return Err(InvalidUrlReason::RelativeWithoutBaseAddress),
        },
        Err(error) => return Err(InvalidUrlReason::Parse(error)),
    };
    match url.scheme() {
        "http" | "https" if url.has_host() => Ok(url),
        "http" | "https" => Err(InvalidUrlReason::Parse(url::ParseError::EmptyHost)),
        scheme => Err(InvalidUrlReason::UnsupportedScheme(scheme.to_owned())),
    }
}

/// The per-request fast path of [`Resolver::resolve`]: a plain relative path (`test`, `orders/42`: only
/// unreserved characters and `/`, no dot segment) resolved against an `http(s)` base with a path,
/// which RFC 3986 5.2.3 merges as "the base path up to its last `/`, then the reference". Only the
/// path is re-parsed, not the host (which a full [`Url::join`] runs through IDNA on every request).
/// `None` for anything else, which then takes the general path.
fn append_plain_path(base: &Url, path: &str) -> Option<Url> {
    let plain = !path.is_empty()
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~' | b'/'))
        && !path.starts_with('/')
        && matches!(base.scheme(), "http" | "https")
        && base.has_host();
    if !plain {
        return None;
    }
    let directory = &base.path()[..=base.path().rfind('/')?];
    let mut joined = String::with_capacity(directory.len() + path.len());
    joined.push_str(directory);
    joined.push_str(path);
    let mut url = base.clone();
    if url.query().is_some() {
        url.set_query(None);
    }
    if url.fragment().is_some() {
        url.set_fragment(None);
    }
    url.set_path(&joined);
    Some(url)
}

/// A URL that is safe to show in errors and logs: user info and query are removed (either may carry
/// credentials, e.g. `?api_key=`), and the fragment too.
pub(crate) fn redacted(url: &Url) -> String {
    let mut url = url.clone();
    // Both setters only fail for URLs that cannot have user info (no host): nothing to remove then.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    if url.query().is_some() {
        url.set_query(Some("[redacted]"));
    }
    url.set_fragment(None);
    url.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A first resolution, with nothing memoized.
    fn resolve(base: Option<&Url>, path: &str) -> Result<Url, InvalidUrlReason> {
        Resolver::new(base.cloned())
            .resolve(path)
            .map(|resolved| resolved.url)
    }

    fn base(s: &str) -> Url {
        s.parse().unwrap()
    }

    #[test]
    fn resolves_like_dotnet() {
        let b = base("http://h/api/");
        assert_eq!(
            resolve(Some(&b), "test").unwrap().as_str(),
            "http://h/api/test"
        );
        assert_eq!(
            resolve(Some(&b), "/test").unwrap().as_str(),
            "http://h/test"
        );
        assert_eq!(resolve(Some(&b), "").unwrap().as_str(), "http://h/api/");
        assert_eq!(
            resolve(Some(&b), "a/b?x=1").unwrap().as_str(),
            "http://h/api/a/b?x=1"
        );
        let b = base("http://h/api");
        assert_eq!(resolve(Some(&b), "test").unwrap().as_str(), "http://h/test");
        assert_eq!(
            resolve(Some(&b), "https://other:8443/x").unwrap().as_str(),
            "https://other:8443/x"
        );
    }

    #[test]
    fn the_plain_path_fast_path_agrees_with_join() {
        let bases = [
            "http://h/api/",
            "http://h/api",
            "https://h:8443/a/b/",
            "http://h",
            "http://user:pw@h/api/?q=1#f",
            "http://bücher.example/api/",
        ];
        let paths = [
            "test",
            "a/b",
            "a/",
            "a//b",
            "x~y_z-1",
            "",
            "/abs",
            "./t",
            "../t",
            "a/../b",
            "t?x=1",
            "t#f",
            "%41",
            "a b",
            "ü",
            "http://o/x",
            "//o/x",
            ".",
            "..",
        ];
        for b in bases {
            let b = base(b);
            for p in paths {
                let expected = match Url::parse(p) {
                    Ok(url) => url,
                    Err(_) => b.join(p).unwrap(),
                };
                assert_eq!(resolve(Some(&b), p).unwrap(), expected, "{b} + {p:?}");
            }
        }
    }

    #[test]
    fn the_memo_answers_like_resolve_and_stays_bounded() {
        for b in [
            "http://h/api/",
            "http://h/api",
            "https://u:p@h:8443/a/b/?q#f",
        ] {
            let resolver = Resolver::new(Some(base(b)));
            for p in [
                "test",
                "a/b",
                "test",
                "/abs",
                "t?x=1",
                "../t",
                "http://o/x",
                "",
            ] {
                for _ in 0..2 {
                    let resolved = resolver.resolve(p).unwrap();
                    let url = resolved.url;
                    assert_eq!(url, resolve(Some(&base(b)), p).unwrap(), "{b} + {p:?}");
                    assert_eq!(
                        resolved.base_origin,
                        append_plain_path(&base(b), p).is_some(),
                        "{b} + {p:?}"
                    );
                    if resolved.base_origin {
                        assert_eq!(url.origin(), base(b).origin(), "{b} + {p:?}");
                    }
                    if let Some(shared) = resolved.shared {
                        assert_eq!(*shared, url, "{b} + {p:?}");
                    }
                }
            }
            // Only the plain paths were memoized.
            assert_eq!(resolver.memoized(), 2, "{b}");
        }
        let resolver = Resolver::new(Some(base("http://h/api/")));
        for i in 0..Resolver::CAPACITY + 10 {
            let path = format!("orders/{i}");
            assert_eq!(
                resolver.resolve(&path).unwrap().url.as_str(),
                format!("http://h/api/orders/{i}")
            );
        }
        assert_eq!(resolver.memoized(), Resolver::CAPACITY);
        assert!(matches!(
            Resolver::new(None).resolve("test"),
            Err(InvalidUrlReason::RelativeWithoutBaseAddress)
        ));
    }

    #[test]
    fn concurrent_writers_keep_every_path_and_the_bound() {
        let resolver = Resolver::new(Some(base("http://h/api/")));
        std::thread::scope(|scope| {
            for thread in 0..8 {
                let resolver = &resolver;
                scope.spawn(move || {
                    for i in 0..200 {
                        // Half the paths are shared by all threads, half are the thread's own.
                        let path = if i % 2 == 0 {
                            format!("shared/{i}")
                        } else {
                            format!("t{thread}/{i}")
                        };
                        let resolved = resolver.resolve(&path).unwrap();
                        assert_eq!(resolved.url.as_str(), format!("http://h/api/{path}"));
                    }
                });
            }
        });
        assert_eq!(resolver.memoized(), Resolver::CAPACITY);
        let memo = resolver.memo.load();
        assert!(
            memo.iter()
                .all(|(path, url)| url.as_str() == format!("http://h/api/{path}"))
        );
    }

    #[test]
    fn refuses_what_it_cannot_send() {
        assert!(matches!(
            resolve(None, "test"),
            Err(InvalidUrlReason::RelativeWithoutBaseAddress)
        ));
        assert!(matches!(
            resolve(None, "ftp://h/x"),
            Err(InvalidUrlReason::UnsupportedScheme(s)) if s == "ftp"
        ));
        assert!(matches!(
            resolve(None, "http://[::1"),
            Err(InvalidUrlReason::Parse(_))
        ));
        assert_eq!(resolve(None, "http://h/x").unwrap().as_str(), "http://h/x");
    }

    #[test]
    fn redaction_removes_credentials() {
        let url = base("https://user:pw@h/a?api_key=s3cret#f");
        assert_eq!(redacted(&url), "https://h/a?[redacted]");
        assert_eq!(redacted(&base("http://h/a")), "http://h/a");
    }
}
