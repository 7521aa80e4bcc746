//! Image references as `docker://` names them: `HOST[:PORT]/REPO[:TAG|@DIGEST]`,
//! checked against the grammar of distribution's `reference` package (the one
//! docker, podman and skopeo share). Knows no HTTP.
//!
//! As docker does, a name whose first component is not a host (no `.` or `:`,
//! not `localhost`) is on Docker Hub: `alpine` is `docker.io/library/alpine`.

use std::fmt;

/// Docker Hub as references name it.
pub(super) const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's registry API endpoint.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// distribution's limit on `HOST/REPO`.
const NAME_MAX: usize = 255;
/// distribution's limit on a tag.
const TAG_MAX: usize = 128;

/// `HOST[:PORT]/REPO[:TAG|@sha256:HEX]` (what follows `docker://`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]` as given (`docker.io` for Docker Hub names).
    pub host: String,
    /// The repository path, e.g. `library/alpine`.
    pub repo: String,
    /// The tag; `latest` when neither a tag nor a digest is given.
    pub tag: Option<String>,
    /// `sha256:<hex>`, if pinned.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses a reference without its `docker://` prefix (a leading
    /// `docker://` is tolerated). The error names the reference and what is
    /// wrong with it.
    pub fn parse(s: &str) -> Result<Reference, String> {
        let spec = s.strip_prefix("docker://").unwrap_or(s);
        parse_inner(spec).map_err(|why| format!("invalid image reference {s:?}: {why}"))
    }

    /// What a manifest request names: the digest if any, else the tag.
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The `host[:port]` requests go to (`registry-1.docker.io` for `docker.io`).
    pub fn registry(&self) -> &str {
        if self.host == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.host
        }
    }

    /// `docker://host/repo`, without tag or digest.
    pub fn name(&self) -> String {
        format!("docker://{}/{}", self.host, self.repo)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "docker://{}/{}", self.host, self.repo)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn parse_inner(s: &str) -> Result<Reference, String> {
    if s.is_empty() {
        return Err("empty".into());
    }
    if s.contains("://") {
        return Err("expected HOST[:PORT]/REPO[:TAG|@DIGEST], without a URL scheme".into());
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(check_digest(d)?)),
        None => (s, None),
    };
    // A tag follows the last ':' after the last '/' (a ':' before it is a port).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => {
            let (n, t) = rest.split_at(last_slash + i);
            (n, Some(check_tag(&t[1..])?))
        }
        None => (rest, None),
    };
    let (host, repo) = split_host(name)?;
    check_repo(&repo)?;
    if host.len() + 1 + repo.len() > NAME_MAX {
        return Err(format!("name longer than {NAME_MAX} characters"));
    }
    let tag = match (&tag, &digest) {
        (None, None) => Some("latest".to_owned()),
        _ => tag,
    };
    Ok(Reference {
        host,
        repo,
        tag,
        digest,
    })
}

/// Splits off the host the way docker does and applies Docker Hub's defaults.
fn split_host(name: &str) -> Result<(String, String), String> {
    let (host, repo) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':']) || first == "localhost" || first.starts_with('[') =>
        {
            check_host(first)?;
            (first.to_owned(), rest.to_owned())
        }
        _ => (DOCKER_HUB.to_owned(), name.to_owned()),
    };
    if repo.is_empty() {
        return Err("no repository after the host".into());
    }
    let host = if host == "index.docker.io" {
        DOCKER_HUB.to_owned()
    } else {
        host
    };
    let repo = if host == DOCKER_HUB && !repo.contains('/') {
        format!("library/{repo}")
    } else {
        repo
    };
    Ok((host, repo))
}

/// `host[:port]`: dot-separated labels or a bracketed IPv6 address.
fn check_host(h: &str) -> Result<(), String> {
    let (host, port) = if let Some(v6) = h.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("host {h:?}: unclosed '['"))?;
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(format!("host {h:?}: bad IPv6 address"));
        }
        match after {
            "" => (addr, None),
            p => (
                addr,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("host {h:?}: junk after ']'"))?,
                ),
            ),
        }
    } else {
        match h.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (h, None),
        }
    };
    if !h.starts_with('[') {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !host.split('.').all(label_ok) {
            return Err(format!("bad host {host:?}"));
        }
    }
    if let Some(p) = port {
        let ok = !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && matches!(p.parse::<u32>(), Ok(1..=65535));
        if !ok {
            return Err(format!("bad port {p:?}"));
        }
    }
    Ok(())
}

/// Path components `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, separated by `/`.
fn check_repo(repo: &str) -> Result<(), String> {
    if repo.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("repository {repo:?} must be lowercase"));
    }
    for c in repo.split('/') {
        if !is_component(c) {
            return Err(format!(
                "repository component {c:?} must be lowercase letters and digits, \
                 separated by '.', '_', '__' or dashes"
            ));
        }
    }
    Ok(())
}

/// Returns true if and only if `c` is one path component of a repository name.
fn is_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        let sep_start = i;
        while i < b.len() && matches!(b[i], b'.' | b'_' | b'-') {
            i += 1;
        }
        let sep = &c[sep_start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
}

/// `[\w][\w.-]{0,127}`.
pub(super) fn check_tag(t: &str) -> Result<String, String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok = t.len() <= TAG_MAX
        && t.bytes().next().is_some_and(word)
        && t.bytes().all(|b| word(b) || b == b'.' || b == b'-');
    if ok {
        Ok(t.to_owned())
    } else {
        Err(format!(
            "bad tag {t:?}: letters, digits, '_', '.' and '-', not starting with '.' or '-', \
             at most {TAG_MAX}"
        ))
    }
}

/// `sha256:<64 lower-case hex>`; other algorithms are refused by name.
pub(super) fn check_digest(d: &str) -> Result<String, String> {
    match d.split_once(':') {
        Some(("sha256", h))
            if h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(d.to_owned())
        }
        Some(("sha256", _)) => Err(format!(
            "bad digest {d:?}: expected sha256:<64 lower-case hex digits>"
        )),
        Some((alg, _)) if !alg.is_empty() => Err(format!(
            "digest algorithm {alg:?} is not supported (only sha256)"
        )),
        _ => Err(format!(
            "bad digest {d:?}: expected sha256:<64 lower-case hex digits>"
        )),
    }
}

/// A tag or a digest, as the `reference` of a manifest request.
pub(super) fn check_manifest_ref(r: &str) -> Result<(), String> {
    if r.contains(':') {
        check_digest(r).map(drop)
    } else {
        check_tag(r).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    /// Input, host, repo, tag, digest.
    type Case = (
        String,
        &'static str,
        &'static str,
        Option<&'static str>,
        Option<String>,
    );

    #[test]
    fn good() {
        let cases: Vec<Case> = vec![
            (
                "127.0.0.1:5000/app:v1".into(),
                "127.0.0.1:5000",
                "app",
                Some("v1"),
                None,
            ),
            (
                "localhost/app".into(),
                "localhost",
                "app",
                Some("latest"),
                None,
            ),
            (
                "localhost:5000/a/b/c".into(),
                "localhost:5000",
                "a/b/c",
                Some("latest"),
                None,
            ),
            (
                format!("quay.io/org/app@{}", d('a')),
                "quay.io",
                "org/app",
                None,
                Some(d('a')),
            ),
            (
                format!("docker://quay.io/org/app:1.0@{}", d('b')),
                "quay.io",
                "org/app",
                Some("1.0"),
                Some(d('b')),
            ),
            (
                "reg.example.com:443/a__b/c-d/e..x:1.0-rc_1".replace("..", "."),
                "reg.example.com:443",
                "a__b/c-d/e.x",
                Some("1.0-rc_1"),
                None,
            ),
            (
                "alpine".into(),
                "docker.io",
                "library/alpine",
                Some("latest"),
                None,
            ),
            (
                "docker.io/alpine:3".into(),
                "docker.io",
                "library/alpine",
                Some("3"),
                None,
            ),
            (
                "index.docker.io/user/app".into(),
                "docker.io",
                "user/app",
                Some("latest"),
                None,
            ),
            (
                "user/app:_x".into(),
                "docker.io",
                "user/app",
                Some("_x"),
                None,
            ),
            (
                "[::1]:5000/app:v1".into(),
                "[::1]:5000",
                "app",
                Some("v1"),
                None,
            ),
            (
                "my-host/a---b:T".into(),
                "docker.io",
                "my-host/a---b",
                Some("T"),
                None,
            ),
        ];
        for (s, host, repo, tag, digest) in cases {
            let r = Reference::parse(&s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(r.host, host, "{s}");
            assert_eq!(r.repo, repo, "{s}");
            assert_eq!(r.tag.as_deref(), tag, "{s}");
            assert_eq!(r.digest, digest, "{s}");
        }
    }

    #[test]
    fn display_and_reference() {
        let r = Reference::parse("127.0.0.1:5000/app:v1").unwrap();
        assert_eq!(r.to_string(), "docker://127.0.0.1:5000/app:v1");
        assert_eq!(r.reference(), "v1");
        assert_eq!(r.registry(), "127.0.0.1:5000");
        let p = Reference::parse(&format!("h.io/app@{}", d('c'))).unwrap();
        assert_eq!(p.to_string(), format!("docker://h.io/app@{}", d('c')));
        assert_eq!(p.reference(), d('c'));
        let both = Reference::parse(&format!("h.io/app:v2@{}", d('c'))).unwrap();
        assert_eq!(both.reference(), d('c'));
        assert_eq!(Reference::parse(&both.to_string()).unwrap(), both);
        assert_eq!(
            Reference::parse("alpine").unwrap().registry(),
            "registry-1.docker.io"
        );
    }

    #[test]
    fn bad() {
        let long_tag = format!("h.io/app:{}", "t".repeat(129));
        let long_name = format!("h.io/{}", "a".repeat(260));
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "empty"),
            ("127.0.0.1:5000/".into(), "no repository"),
            ("h.io/App".into(), "lowercase"),
            ("h.io/app:".into(), "bad tag"),
            ("h.io/app:-x".into(), "bad tag"),
            ("h.io/app:a/b".into(), "component"),
            (long_tag, "bad tag"),
            ("h.io/app@sha256:abc".into(), "bad digest"),
            (format!("h.io/app@sha256:{}", "A".repeat(64)), "bad digest"),
            (
                format!("h.io/app@sha512:{}", "a".repeat(128)),
                "not supported",
            ),
            ("h.io/app@".into(), "bad digest"),
            ("h.io/a//b".into(), "component"),
            ("h.io/a-/b".into(), "component"),
            ("h.io/.a".into(), "component"),
            ("h.io/a___b".into(), "component"),
            ("h.io:99999/app".into(), "bad port"),
            ("h.io:/app".into(), "bad port"),
            ("-h.io/app".into(), "bad host"),
            ("[zz]:5000/app".into(), "IPv6"),
            ("http://h.io/app".into(), "scheme"),
            (long_name, "longer than"),
        ];
        for (s, want) in cases {
            match Reference::parse(&s) {
                Ok(r) => panic!("{s:?} parsed as {r:?}"),
                Err(e) => {
                    assert!(e.contains(want), "{s:?}: {e:?} lacks {want:?}");
                    assert!(e.starts_with("invalid image reference"), "{e}");
                    assert!(!e.contains('\n'));
                }
            }
        }
    }

    #[test]
    fn manifest_refs() {
        assert!(check_manifest_ref("v1.0").is_ok());
        assert!(check_manifest_ref(&d('e')).is_ok());
        assert!(check_manifest_ref("../x").is_err());
        assert!(check_manifest_ref("sha256:zz").is_err());
        assert!(check_manifest_ref("").is_err());
    }
}
