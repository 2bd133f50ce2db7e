//! Resolving a request path against a client's base address, like .NET's `new Uri(base, relative)`.

use url::Url;

use super::error::InvalidUrlReason;

/// Resolves `path` against `base` (RFC 3986 reference resolution).
///
/// - An absolute `http`/`https` URL is used as it is.
/// - A relative reference needs a base address: `http://h/api/` + `test` = `http://h/api/test`,
///   `http://h/api/` + `/test` = `http://h/test`, `http://h/api/` + `` = `http://h/api/`.
/// - Any other scheme is refused (reqwest only speaks HTTP).
pub(crate) fn resolve(base: Option<&Url>, path: &str) -> Result<Url, InvalidUrlReason> {
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
