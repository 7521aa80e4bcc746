//! Registry credentials and auth challenges, as docker and podman do them:
//! which auth file holds the credentials for a host, how a `WWW-Authenticate`
//! challenge reads, and the cache of bearer tokens. Pure: the HTTP exchanges
//! (the token request itself) belong to [`super::transport`].
//!
//! Credentials and tokens never reach a log line, an error message or a
//! `Debug` string: only the file they came from is named.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;

/// A user name and password, and the file they came from.
#[derive(Clone)]
pub(super) struct Credentials {
    user: String,
    pass: String,
    /// The auth file that held them.
    pub file: PathBuf,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials(from {})", self.file.display())
    }
}

impl Credentials {
    /// The value of an `Authorization: Basic …` header.
    pub fn basic(&self) -> String {
        let raw = format!("{}:{}", self.user, self.pass);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// What the auth files hold for one registry host.
#[derive(Clone, Debug)]
pub(super) enum Lookup {
    /// Credentials, from the first file that has an entry for the host.
    Found(Credentials),
    /// No credentials, but `file` names a credential helper for the host,
    /// which unionfs does not run.
    Helper {
        /// The auth file.
        file: PathBuf,
        /// The helper's name (`docker-credential-<name>`).
        helper: String,
    },
    /// Nothing for the host in the files searched.
    Nothing {
        /// The files looked at (existing or not).
        searched: Vec<PathBuf>,
    },
}

impl Lookup {
    /// The credentials, if any.
    pub fn credentials(&self) -> Option<&Credentials> {
        match self {
            Lookup::Found(c) => Some(c),
            _ => None,
        }
    }

    /// What to tell the user when the registry refuses us.
    pub fn hint(&self, host: &str) -> String {
        match self {
            Lookup::Found(c) => format!("check the credentials in {}", c.file.display()),
            Lookup::Helper { file, helper } => format!(
                "{} names credential helper {helper:?} for {host}, which unionfs does not run: \
                 log in with `podman login --authfile FILE {host}` and pass FILE in REGISTRY_AUTH_FILE",
                file.display()
            ),
            Lookup::Nothing { searched } => {
                let files: Vec<String> = searched.iter().map(|p| p.display().to_string()).collect();
                format!(
                    "no credentials for {host} in {}: log in with `podman login {host}` or `docker login {host}`",
                    if files.is_empty() { "any auth file".to_owned() } else { files.join(", ") }
                )
            }
        }
    }
}

/// The auth files to search, in order: `explicit` alone if given, else
/// `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`, and
/// docker's `config.json` (in `$DOCKER_CONFIG`, else `~/.docker`).
pub(super) fn auth_files(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_owned()];
    }
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let mut out = Vec::new();
    if let Some(p) = env("REGISTRY_AUTH_FILE") {
        out.push(PathBuf::from(p));
    }
    if let Some(d) = env("XDG_RUNTIME_DIR") {
        out.push(Path::new(&d).join("containers/auth.json"));
    }
    if let Some(d) = env("DOCKER_CONFIG") {
        out.push(Path::new(&d).join("config.json"));
    } else if let Some(h) = env("HOME") {
        out.push(Path::new(&h).join(".docker/config.json"));
    }
    out
}

/// Looks up `host` (for `repo`) in `files`; the first file with usable
/// credentials for it wins. A missing file is skipped; an unreadable or
/// malformed one is an error if it was named explicitly, else skipped with a
/// warning.
pub(super) fn lookup(
    files: &[PathBuf],
    explicit: bool,
    host: &str,
    repo: &str,
) -> Result<Lookup, String> {
    let mut helper = None;
    for file in files {
        let text = match std::fs::read(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => continue,
            Err(e) => return Err(format!("auth file {}: {e}", file.display())),
        };
        let found = match find(&text, file, host, repo) {
            Ok(f) => f,
            Err(e) if explicit => return Err(e),
            Err(e) => {
                log::warn!(target: "unionfs::registry", "{e}; skipping it");
                continue;
            }
        };
        match found {
            Some(Lookup::Found(c)) => return Ok(Lookup::Found(c)),
            Some(h @ Lookup::Helper { .. }) => {
                helper.get_or_insert(h);
            }
            _ => {}
        }
    }
    Ok(helper.unwrap_or(Lookup::Nothing {
        searched: files.to_vec(),
    }))
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The names Docker Hub goes by in auth files.
fn host_aliases(host: &str) -> Vec<&str> {
    if matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    ) {
        vec!["docker.io", "index.docker.io", "registry-1.docker.io"]
    } else {
        vec![host]
    }
}

/// The entry of one auth file for `host`/`repo`: the most specific matching
/// key of `auths` (podman allows `HOST/NAMESPACE` keys), else a helper.
fn find(text: &[u8], file: &Path, host: &str, repo: &str) -> Result<Option<Lookup>, String> {
    let parsed: AuthFile = serde_json::from_slice(text)
        .map_err(|e| format!("auth file {}: not valid JSON ({e})", file.display()))?;
    let aliases = host_aliases(host);
    let mut best: Option<(usize, &AuthEntry, &str)> = None;
    for (key, entry) in &parsed.auths {
        let Some(len) = key_matches(key, &aliases, repo) else {
            continue;
        };
        if best.is_none_or(|(l, _, _)| len > l) {
            best = Some((len, entry, key));
        }
    }
    if let Some((_, entry, key)) = best {
        if let Some(c) = decode(entry, file, key)? {
            return Ok(Some(Lookup::Found(c)));
        }
    }
    let helper = aliases
        .iter()
        .find_map(|h| parsed.cred_helpers.get(*h))
        .or(parsed.creds_store.as_ref());
    Ok(helper.map(|h| Lookup::Helper {
        file: file.to_owned(),
        helper: h.clone(),
    }))
}

/// How specific a match `key` is for the host (one of `aliases`) and `repo`,
/// or `None`. Keys are `HOST`, `HOST/NAMESPACE…`, or URLs such as
/// `https://HOST/v1/` (whose path is ignored, as docker does).
fn key_matches(key: &str, aliases: &[&str], repo: &str) -> Option<usize> {
    let (url_like, bare) = match key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
    {
        Some(b) => (true, b),
        None => (false, key),
    };
    let bare = bare.trim_end_matches('/');
    let (khost, kpath) = match bare.split_once('/') {
        Some((h, p)) if !url_like => (h, Some(p)),
        Some((h, _)) => (h, None),
        None => (bare, None),
    };
    if !aliases.contains(&khost) {
        return None;
    }
    match kpath {
        None => Some(0),
        Some(p) if repo == p || repo.starts_with(&format!("{p}/")) => Some(p.len()),
        Some(_) => None,
    }
}

/// The credentials of one entry; `None` for an entry with no `auth` (docker
/// writes those when a helper holds the secret).
fn decode(entry: &AuthEntry, file: &Path, key: &str) -> Result<Option<Credentials>, String> {
    let bad = || {
        format!(
            "auth file {}: auths.{key:?}.auth is not base64 of USER:PASSWORD",
            file.display()
        )
    };
    if let Some(a) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.trim())
            .map_err(|_| bad())?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let (user, pass) = raw.split_once(':').ok_or_else(bad)?;
        return Ok(Some(Credentials {
            user: user.to_owned(),
            pass: pass.to_owned(),
            file: file.to_owned(),
        }));
    }
    match (&entry.username, &entry.password) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Credentials {
            user: u.clone(),
            pass: p.clone(),
            file: file.to_owned(),
        })),
        _ => Ok(None),
    }
}

/// A `WWW-Authenticate` challenge unionfs can answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Challenge {
    /// `Basic realm=…`: send the credentials with every request.
    Basic,
    /// `Bearer realm=…,service=…`: get a token from `realm`.
    Bearer {
        /// The token endpoint (an absolute URL).
        realm: String,
        /// The `service` parameter, if given.
        service: Option<String>,
    },
}

/// The first Basic or Bearer challenge among the `WWW-Authenticate` values.
pub(super) fn parse_challenges<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Challenge> {
    for v in values {
        for (scheme, params) in split_challenges(v) {
            let get = |k: &str| {
                params
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v.clone())
            };
            if scheme.eq_ignore_ascii_case("basic") {
                return Some(Challenge::Basic);
            }
            if scheme.eq_ignore_ascii_case("bearer") {
                if let Some(realm) = get("realm").filter(|r| !r.is_empty()) {
                    return Some(Challenge::Bearer {
                        realm,
                        service: get("service"),
                    });
                }
            }
        }
    }
    None
}

type Params = Vec<(String, String)>;

/// RFC 7235 challenges: `scheme k=v, k="v", scheme2 k=v`. Quoted values may
/// hold commas and `\"`.
fn split_challenges(v: &str) -> Vec<(String, Params)> {
    let mut out: Vec<(String, Params)> = Vec::new();
    let b = v.as_bytes();
    let mut i = 0;
    let skip = |i: &mut usize, f: &dyn Fn(u8) -> bool| {
        while *i < b.len() && f(b[*i]) {
            *i += 1;
        }
    };
    let is_token = |c: u8| !c.is_ascii_whitespace() && !matches!(c, b',' | b'=' | b'"');
    while i < b.len() {
        skip(&mut i, &|c| c.is_ascii_whitespace() || c == b',');
        let start = i;
        skip(&mut i, &is_token);
        if i == start {
            i += 1;
            continue;
        }
        let word = &v[start..i];
        let mut j = i;
        skip(&mut j, &|c| c.is_ascii_whitespace());
        if j < b.len() && b[j] == b'=' {
            // A parameter of the current challenge.
            j += 1;
            skip(&mut j, &|c| c.is_ascii_whitespace());
            let value = if j < b.len() && b[j] == b'"' {
                let mut s = String::new();
                j += 1;
                while j < b.len() && b[j] != b'"' {
                    if b[j] == b'\\' && j + 1 < b.len() {
                        j += 1;
                    }
                    let ch = v[j..].chars().next().unwrap_or(' ');
                    s.push(ch);
                    j += ch.len_utf8();
                }
                j += 1;
                s
            } else {
                let s = j;
                skip(&mut j, &|c| c != b',' && !c.is_ascii_whitespace());
                v[s..j].to_owned()
            };
            if let Some(last) = out.last_mut() {
                last.1.push((word.to_owned(), value));
            }
            i = j;
        } else {
            out.push((word.to_owned(), Vec::new()));
        }
    }
    out
}

/// A token endpoint's answer (docker's `token`, OAuth2's `access_token`).
#[derive(Deserialize)]
pub(super) struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// The token lifetime when the endpoint names none (docker's default).
const DEFAULT_TOKEN_LIFE: Duration = Duration::from_secs(60);

impl TokenResponse {
    /// The token and how long it lives, or `None` if the answer has no token.
    pub fn into_token(self) -> Option<(String, Duration)> {
        let t = self
            .token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))?;
        let life = match self.expires_in {
            Some(s) if s > 0 => Duration::from_secs(s),
            _ => DEFAULT_TOKEN_LIFE,
        };
        Some((t, life))
    }
}

/// A bearer token and when to stop using it.
#[derive(Clone)]
pub(super) struct Token {
    value: String,
    renew_at: Instant,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// A token living `life` from now; it is renewed a little early (a tenth
    /// of its life, at most 5 s) so it does not expire in flight.
    pub fn new(value: String, life: Duration) -> Token {
        let margin = (life / 10).min(Duration::from_secs(5));
        Token {
            value,
            renew_at: Instant::now() + life - margin,
        }
    }

    /// Returns true if and only if the token should no longer be sent.
    pub fn is_expired(&self) -> bool {
        Instant::now() >= self.renew_at
    }

    /// The value of an `Authorization: Bearer …` header.
    pub fn header(&self) -> String {
        format!("Bearer {}", self.value)
    }
}

/// The scope of a token: pull, or pull and push.
pub(super) fn scope(repo: &str, push: bool) -> String {
    format!(
        "repository:{repo}:{}",
        if push { "pull,push" } else { "pull" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn keys_and_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(
            dir.path(),
            "a.json",
            &format!(
                r#"{{"auths": {{"other.io": {{"auth": "{}"}},
                   "https://index.docker.io/v1/": {{"auth": "{}"}},
                   "http://r.io:5000": {{"auth": "{}"}},
                   "q.io": {{"auth": "{}"}}, "q.io/team": {{"auth": "{}"}}}}}}"#,
                b64("o:o"),
                b64("hub:pw"),
                b64("r:pw:with:colons"),
                b64("q:any"),
                b64("q:team")
            ),
        );
        let b = write(
            dir.path(),
            "b.json",
            &format!(
                r#"{{"auths": {{"r.io:5000": {{"auth": "{}"}}}}}}"#,
                b64("late:x")
            ),
        );
        let files = [dir.path().join("missing.json"), a.clone(), b.clone()];
        let basic = |host: &str, repo: &str| {
            lookup(&files, false, host, repo)
                .unwrap()
                .credentials()
                .map(|c| c.basic())
        };
        assert_eq!(
            basic("docker.io", "library/alpine"),
            Some(format!("Basic {}", b64("hub:pw")))
        );
        assert_eq!(
            basic("r.io:5000", "x"),
            Some(format!("Basic {}", b64("r:pw:with:colons")))
        );
        assert_eq!(
            basic("q.io", "team/app"),
            Some(format!("Basic {}", b64("q:team")))
        );
        assert_eq!(
            basic("q.io", "teamx/app"),
            Some(format!("Basic {}", b64("q:any")))
        );
        assert_eq!(basic("none.io", "x"), None);
        // The first file with an entry wins, a later one is not consulted.
        let l = lookup(&files, false, "r.io:5000", "x").unwrap();
        assert_eq!(l.credentials().unwrap().file, a);
        match lookup(&files, false, "none.io", "x").unwrap() {
            Lookup::Nothing { searched } => assert_eq!(searched.len(), 3),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn helpers_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(
            dir.path(),
            "c.json",
            r#"{"auths": {"h.io": {}}, "credHelpers": {"h.io": "ecr-login"}, "credsStore": "desktop"}"#,
        );
        match lookup(std::slice::from_ref(&f), true, "h.io", "x").unwrap() {
            Lookup::Helper { helper, .. } => assert_eq!(helper, "ecr-login"),
            other => panic!("{other:?}"),
        }
        let hint = lookup(std::slice::from_ref(&f), true, "z.io", "x")
            .unwrap()
            .hint("z.io");
        assert!(
            hint.contains("\"desktop\"") && hint.contains("does not run"),
            "{hint}"
        );
        let bad = write(
            dir.path(),
            "bad.json",
            r#"{"auths": {"h.io": {"auth": "!!"}}}"#,
        );
        let e = lookup(std::slice::from_ref(&bad), true, "h.io", "x").unwrap_err();
        assert!(e.contains("not base64"), "{e}");
        let junk = write(dir.path(), "junk.json", "{");
        assert!(lookup(std::slice::from_ref(&junk), true, "h.io", "x")
            .unwrap_err()
            .contains("not valid JSON"));
        // A malformed file found by the search is skipped, not fatal.
        assert!(matches!(
            lookup(&[junk], false, "h.io", "x"),
            Ok(Lookup::Nothing { .. })
        ));
        assert!(lookup(&[dir.path().join("nope")], true, "h.io", "x").is_err());
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let c = Credentials {
            user: "alice".into(),
            pass: "s3cret".into(),
            file: "/f".into(),
        };
        let s = format!(
            "{c:?} {:?} {:?}",
            Lookup::Found(c.clone()),
            Token::new("tok3n".into(), DEFAULT_TOKEN_LIFE)
        );
        assert!(
            !s.contains("s3cret") && !s.contains("alice") && !s.contains("tok3n"),
            "{s}"
        );
        assert_eq!(Lookup::Found(c).hint("h"), "check the credentials in /f");
    }

    #[test]
    fn challenges() {
        let bearer = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#;
        assert_eq!(
            parse_challenges([bearer]),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            })
        );
        assert_eq!(
            parse_challenges([r#"Basic realm="Registry Realm""#]),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenges([r#"Negotiate, Bearer realm=http://a/t?x=1 , service="a \"b\", c""#]),
            Some(Challenge::Bearer {
                realm: "http://a/t?x=1".into(),
                service: Some("a \"b\", c".into())
            })
        );
        assert_eq!(parse_challenges(["Negotiate", "Bearer service=x"]), None);
    }

    #[test]
    fn tokens() {
        let r: TokenResponse =
            serde_json::from_str(r#"{"access_token": "a", "expires_in": 300}"#).unwrap();
        assert_eq!(
            r.into_token().map(|(t, l)| (t, l.as_secs())),
            Some(("a".into(), 300))
        );
        let r: TokenResponse =
            serde_json::from_str(r#"{"token": "t", "access_token": "a"}"#).unwrap();
        assert_eq!(
            r.into_token().map(|(t, l)| (t, l.as_secs())),
            Some(("t".into(), 60))
        );
        let r: TokenResponse = serde_json::from_str(r#"{"token": ""}"#).unwrap();
        assert!(r.into_token().is_none());
        assert!(Token::new("x".into(), Duration::ZERO).is_expired());
        assert!(!Token::new("x".into(), DEFAULT_TOKEN_LIFE).is_expired());
        assert_eq!(scope("a/b", true), "repository:a/b:pull,push");
    }
}
