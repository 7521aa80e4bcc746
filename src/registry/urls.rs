//! URLs as the registry client handles them: parsing, origins (whom
//! credentials may go to), `Location` resolution, query encoding, and what
//! counts as loopback. Pure functions, no I/O.

use ureq::http::Uri;

/// An absolute http(s) URL.
pub(super) fn parse_uri(s: &str) -> Result<Uri, String> {
    let uri: Uri = s
        .parse()
        .map_err(|e| format!("bad URL {:?}: {e}", redact(s)))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(uri),
        _ => Err(format!("bad URL {:?}: not http(s)", redact(s))),
    }
}

/// A URL without its query, which may be signed.
pub(super) fn redact(s: &str) -> &str {
    s.split('?').next().unwrap_or("")
}

/// `(scheme, host, port)`, the default port filled in.
pub(super) fn origin(u: &Uri) -> (String, String, u16) {
    let scheme = u.scheme_str().unwrap_or("").to_ascii_lowercase();
    let port = u
        .port_u16()
        .unwrap_or(if scheme == "http" { 80 } else { 443 });
    (scheme, u.host().unwrap_or("").to_ascii_lowercase(), port)
}

/// A `Location` resolved against the URL it came from.
pub(super) fn resolve(base: &Uri, loc: &str) -> Result<String, String> {
    let scheme = base.scheme_str().unwrap_or("https");
    let authority = base.authority().map_or("", |a| a.as_str());
    // RFC 3986: a scheme is a letter, then letters, digits, '+', '-', '.', then ':'.
    let has_scheme = loc.split_once(':').is_some_and(|(s, _)| {
        s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    });
    let abs = if has_scheme {
        loc.to_owned()
    } else if let Some(rest) = loc.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if loc.starts_with('/') {
        format!("{scheme}://{authority}{loc}")
    } else {
        let path = base.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("{scheme}://{authority}{dir}{loc}")
    };
    parse_uri(&abs).map(|_| abs)
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
pub(super) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Returns true if and only if `host[:port]` names this machine:
/// `localhost`, 127.0.0.0/8 or `::1`.
pub(super) fn is_loopback(host: &str) -> bool {
    let h = if host.parse::<std::net::IpAddr>().is_ok() {
        host
    } else if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_locations() {
        let base: Uri = "https://r.io:5000/v2/app/blobs/x?y=1".parse().unwrap();
        let cases = [
            ("https://s3.example/b?sig=1", "https://s3.example/b?sig=1"),
            ("//cdn.example/b", "https://cdn.example/b"),
            (
                "/v2/app/blobs/uploads/u1?state=a",
                "https://r.io:5000/v2/app/blobs/uploads/u1?state=a",
            ),
            ("z", "https://r.io:5000/v2/app/blobs/z"),
        ];
        for (loc, want) in cases {
            assert_eq!(resolve(&base, loc).unwrap(), want);
        }
        assert!(resolve(&base, "ftp://x/y").is_err());
    }

    #[test]
    fn origins_and_encoding() {
        let o = |s: &str| origin(&parse_uri(s).unwrap());
        assert_eq!(o("https://R.io/a"), o("https://r.io:443/b?c"));
        assert_ne!(o("https://r.io/a"), o("http://r.io/a"));
        assert_ne!(o("http://127.0.0.1:1/a"), o("http://127.0.0.1:2/a"));
        assert_eq!(
            encode("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
        assert_eq!(redact("https://x/y?sig=secret"), "https://x/y");
        assert!(parse_uri("/relative").is_err());
    }

    #[test]
    fn loopback() {
        assert!(
            is_loopback("127.0.0.2:5000") && is_loopback("[::1]:5000") && is_loopback("localhost")
        );
        assert!(is_loopback("LOCALHOST:80") && is_loopback("::1"));
        assert!(
            !is_loopback("example.com:5000")
                && !is_loopback("10.0.0.1")
                && !is_loopback("[fe80::1]")
        );
    }
}
