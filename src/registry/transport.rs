//! Sending one logical request to a registry, with everything the ecosystem
//! expects around it: the https/http choice (pinged once), redirects
//! (followed by hand so `Authorization` never leaves the origin it was
//! meant for), anonymous-then-challenge auth with cached bearer tokens,
//! retries with backoff, and timeouts on every phase. The endpoints
//! themselves are [`super::client`]'s.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use ureq::http::{self, Method, Response, Uri};
use ureq::Body;

use super::auth::{self, Challenge, Lookup, Token, TokenResponse};
use super::retry::{self, Deadline};
use super::urls::{encode, is_loopback, origin, parse_uri, redact, resolve};
use super::{Error, Options, Reference};

const LOG: &str = "unionfs::registry";

/// How long the https probe of a host that may fall back to http waits.
const HTTPS_PROBE: Duration = Duration::from_secs(3);
/// Redirect hops followed before giving up.
const MAX_REDIRECTS: usize = 10;
/// The most of an error or ping body read.
const SMALL_BODY: u64 = 64 * 1024;
/// The shortest attempt worth starting after a backoff.
const MIN_ATTEMPT: Duration = Duration::from_millis(50);

/// Where a request goes.
pub(super) enum Target {
    /// A path under the registry's base URL, `/v2/…`.
    Registry(String),
    /// An absolute URL (an upload `Location`, a token realm).
    Url(String),
}

/// Which `Authorization` a request carries.
pub(super) enum AuthMode {
    /// The registry's (Basic or bearer), answered to 401 challenges.
    Registry,
    /// A fixed header, for the token service (the user's Basic credentials).
    Fixed(Option<String>),
}

/// One logical request; [`Transport::call`] makes attempts of it.
pub(super) struct Req<'a> {
    /// GET, HEAD, PUT, POST.
    pub method: Method,
    /// Where.
    pub target: Target,
    /// Extra headers (Accept, Range, Content-Type).
    pub headers: Vec<(&'static str, String)>,
    /// The body, for PUT and POST.
    pub body: Option<&'a [u8]>,
    /// Ask for a push token rather than a pull token.
    pub push: bool,
    /// The auth to send.
    pub auth: AuthMode,
    /// What is requested, for error messages ("blob sha256:…").
    pub what: String,
    /// The bound on one attempt including its body; for a stream, only the
    /// request and each read are bounded.
    pub budget: Duration,
    /// Leave the body unbounded in total (each read is still bounded).
    pub stream: bool,
}

impl Req<'_> {
    /// A GET of a registry path, with the pull scope and `budget` = `timeout`.
    pub fn get(path: String, what: String, timeout: Duration) -> Req<'static> {
        Req {
            method: Method::GET,
            target: Target::Registry(path),
            headers: Vec::new(),
            body: None,
            push: false,
            auth: AuthMode::Registry,
            what,
            budget: timeout,
            stream: false,
        }
    }
}

#[derive(Default)]
struct AuthState {
    challenge: Option<Challenge>,
    /// Bearer tokens: `[pull, push]`.
    tokens: [Option<Token>; 2],
}

/// The connection to one repository of one registry.
pub(super) struct Transport {
    agent: ureq::Agent,
    /// `host[:port]` requests go to.
    registry: String,
    /// `host[:port]` as the user named it (`docker.io`), for messages.
    host: String,
    repo: String,
    /// The reference, for errors.
    name: String,
    http_allowed: bool,
    /// `https://host[:port]` or `http://…`, once pinged.
    base: Mutex<Option<String>>,
    probe_lock: Mutex<()>,
    timeout: Duration,
    retries: u32,
    received: Arc<AtomicU64>,
    creds: Lookup,
    creds_logged: AtomicBool,
    auth: Mutex<AuthState>,
    token_lock: Mutex<()>,
}

impl Transport {
    /// Builds the agent (roots, proxy) and finds the credentials.
    pub fn new(r: &Reference, o: &Options) -> Result<Transport, Error> {
        let name = r.to_string();
        let invalid = |reason: String| Error::Invalid {
            reference: name.clone(),
            reason,
        };
        if o.timeout.is_zero() {
            return Err(invalid("the request timeout must be positive".into()));
        }
        let roots = roots(o.ca.as_deref()).map_err(invalid)?;
        let loopback = is_loopback(&r.host);
        // `insecure` is docker's insecure-registries: https without
        // verification, then http.
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(roots)
            .disable_verification(o.insecure)
            .build();
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("unionfs/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls);
        if loopback {
            // As Go's ProxyFromEnvironment: loopback is never proxied.
            config = config.proxy(None);
        }
        let files = auth::auth_files(o.auth_file.as_deref());
        let creds =
            auth::lookup(&files, o.auth_file.is_some(), &r.host, &r.repo).map_err(invalid)?;
        Ok(Transport {
            agent: config.build().new_agent(),
            registry: r.registry().to_owned(),
            host: r.host.clone(),
            repo: r.repo.clone(),
            name,
            http_allowed: loopback || o.insecure,
            base: Mutex::new(None),
            probe_lock: Mutex::new(()),
            timeout: o.timeout,
            retries: o.retries,
            received: Arc::new(AtomicU64::new(0)),
            creds,
            creds_logged: AtomicBool::new(false),
            auth: Mutex::new(AuthState::default()),
            token_lock: Mutex::new(()),
        })
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The reference, as errors start.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The repository.
    pub fn repo(&self) -> &str {
        &self.repo
    }

    /// Body bytes received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Makes attempts of `req` until one gives a 2xx that `take` accepts, an
    /// error that is not transient, the retries run out, or the call's
    /// deadline passes. A 401 from the registry is answered once per call.
    pub fn call<T>(
        &self,
        req: &Req,
        mut take: impl FnMut(Response<Body>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let deadline = Deadline::new(req.budget, self.retries);
        let mut tries = 0u32;
        let mut answered_401 = false;
        loop {
            let mut wait = None;
            let err = match self.attempt(req, &deadline) {
                Ok((resp, sent_auth)) => match resp.status().as_u16() {
                    200..=299 => match take(resp) {
                        Ok(v) => return Ok(v),
                        Err(e) => e,
                    },
                    401 if matches!(req.auth, AuthMode::Registry) && !answered_401 => {
                        answered_401 = true;
                        self.on_unauthorized(&resp, req.push, sent_auth.as_deref())?;
                        continue;
                    }
                    401 | 403
                        if !matches!(req.auth, AuthMode::Registry) || resp.status() == 401 =>
                    {
                        return Err(self.auth_error(resp.status().as_u16()));
                    }
                    429 | 503 => {
                        wait = header(&resp, "retry-after")
                            .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
                        self.status_error(req, resp)
                    }
                    _ => self.status_error(req, resp),
                },
                Err(e) => e,
            };
            if !err.is_retryable() || tries >= self.retries {
                return Err(err);
            }
            let want = wait.unwrap_or_else(|| retry::backoff(tries));
            let Some(sleep) = deadline.sleep_for(want, MIN_ATTEMPT) else {
                return Err(err);
            };
            log::debug!(target: LOG, "{} {}: {err}; retrying in {sleep:?}", req.method, self.what_path(req));
            std::thread::sleep(sleep);
            tries += 1;
        }
    }

    /// The path of a request, for logs (never a query: it may be signed).
    fn what_path<'r>(&self, req: &'r Req) -> &'r str {
        match &req.target {
            Target::Registry(p) => p,
            Target::Url(u) => u.split('?').next().unwrap_or(""),
        }
    }

    /// One attempt: the request and its redirects. Returns the final
    /// response and the `Authorization` sent to the registry, if any.
    fn attempt(
        &self,
        req: &Req,
        deadline: &Deadline,
    ) -> Result<(Response<Body>, Option<String>), Error> {
        // The base first: its ping may teach us the challenge.
        let needs_base =
            matches!(req.target, Target::Registry(_)) || matches!(req.auth, AuthMode::Registry);
        let registry = if needs_base {
            Some(self.base(deadline)?)
        } else {
            None
        };
        let auth = match &req.auth {
            AuthMode::Registry => self.authorization(req.push)?,
            AuthMode::Fixed(a) => a.clone(),
        };
        let mut url = match &req.target {
            Target::Registry(path) => format!("{}{path}", registry.as_deref().unwrap_or_default()),
            Target::Url(u) => u.clone(),
        };
        // Credentials go only to the origin they are for: the registry's, or
        // the token service's.
        let auth_origin =
            origin(&parse_uri(registry.as_deref().unwrap_or(&url)).map_err(|e| self.protocol(e))?);
        let mut method = req.method.clone();
        let mut body = req.body;
        for _ in 0..=MAX_REDIRECTS {
            let uri = parse_uri(&url).map_err(|e| self.protocol(e))?;
            let send = auth.as_deref().filter(|_| origin(&uri) == auth_origin);
            let timing = Timing::new(self.timeout, req, deadline);
            let resp = self
                .send_once(&method, uri.clone(), &req.headers, send, body, timing)
                .map_err(|e| self.map_err(e, &uri, timing))?;
            let status = resp.status().as_u16();
            let location = header(&resp, "location").map(str::to_owned);
            match (status, location) {
                (301 | 302 | 303 | 307 | 308, Some(loc)) => {
                    url = resolve(&uri, &loc).map_err(|e| self.protocol(e))?;
                    if status == 303 || (matches!(status, 301 | 302) && method == Method::POST) {
                        method = Method::GET;
                        body = None;
                    }
                }
                _ => {
                    return Ok((
                        resp,
                        auth.filter(|_| matches!(req.auth, AuthMode::Registry)),
                    ))
                }
            }
        }
        Err(self.protocol(format!("more than {MAX_REDIRECTS} redirects")))
    }

    /// One HTTP exchange, no redirects followed.
    fn send_once(
        &self,
        method: &Method,
        uri: Uri,
        headers: &[(&'static str, String)],
        auth: Option<&str>,
        body: Option<&[u8]>,
        t: Timing,
    ) -> Result<Response<Body>, ureq::Error> {
        let mut b = http::Request::builder().method(method.clone()).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, v);
        }
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        match body {
            Some(bytes) => self.agent.run(t.apply(&self.agent, b.body(bytes)?)),
            None => self.agent.run(t.apply(&self.agent, b.body(())?)),
        }
    }

    /// The base URL, pinging `/v2/` on first use: https, or for loopback and
    /// `insecure` hosts http if https fails (as docker does for insecure
    /// registries). The choice is kept.
    fn base(&self, deadline: &Deadline) -> Result<String, Error> {
        if let Some(b) = self.base.lock().clone() {
            return Ok(b);
        }
        let _probing = self.probe_lock.lock();
        if let Some(b) = self.base.lock().clone() {
            return Ok(b);
        }
        let https = format!("https://{}", self.registry);
        // Where http may follow, the https probe gets a short bound: a
        // registry answers a TLS hello at once, and an endpoint that
        // accepts the connection but never answers it (a plain-HTTP proxy
        // that waits for a request line) must not cost the whole timeout.
        let probe = if self.http_allowed {
            self.timeout.min(HTTPS_PROBE)
        } else {
            self.timeout
        };
        let chosen = match self.ping(&https, deadline, probe) {
            Ok(()) => https,
            // A 5xx over https is the registry, failing: retry, do not downgrade.
            Err(e) if self.http_allowed && !matches!(e, Error::Status { .. }) => {
                let http = format!("http://{}", self.registry);
                match self.ping(&http, deadline, self.timeout) {
                    Ok(()) => {
                        log::debug!(target: LOG, "{}: https failed ({e}); using http", self.registry);
                        http
                    }
                    // An untrusted certificate says more than a refused http port.
                    Err(e2)
                        if matches!(e, Error::Tls { .. })
                            && e2.kind() == io::ErrorKind::ConnectionRefused =>
                    {
                        return Err(e)
                    }
                    Err(e2) => return Err(e2),
                }
            }
            Err(e) => return Err(e),
        };
        *self.base.lock() = Some(chosen.clone());
        Ok(chosen)
    }

    /// `GET /v2/`: an answer a registry (or a proxy in front of one) gives
    /// means the scheme works; a 401 also tells how to authenticate.
    fn ping(&self, base: &str, deadline: &Deadline, limit: Duration) -> Result<(), Error> {
        let uri = parse_uri(&format!("{base}/v2/")).map_err(|e| self.protocol(e))?;
        let bound = limit
            .min(deadline.remaining())
            .max(Duration::from_millis(1));
        let t = Timing {
            step: bound,
            total: Some(bound),
            budget: self.timeout,
        };
        let resp = self
            .send_once(&Method::GET, uri.clone(), &[], None, None, t)
            .map_err(|e| self.map_err(e, &uri, t))?;
        let status = resp.status().as_u16();
        if status == 401 {
            if let Some(c) = auth::parse_challenges(header_all(&resp, "www-authenticate")) {
                self.auth.lock().challenge = Some(c);
            }
        }
        match status {
            // The spec's answers (200, 401, 404 without the API), and what
            // proxies in front of registries say.
            200..=399 | 401 | 403 | 404 => {
                let _ = self.read_small(resp);
                Ok(())
            }
            500.. => {
                Err(self.status_error(&Req::get("/v2/".into(), "ping".into(), self.timeout), resp))
            }
            // E.g. 400 "plain HTTP request sent to an HTTPS port".
            s => Err(self.protocol(format!(
                "{base}/v2/ does not answer as a registry (HTTP {s})"
            ))),
        }
    }

    /// The `Authorization` for a request: none until a challenge is known;
    /// Basic credentials; or a cached bearer token, fetched when missing or
    /// about to expire.
    fn authorization(&self, push: bool) -> Result<Option<String>, Error> {
        let challenge = {
            let state = self.auth.lock();
            if let Some(t) = state.tokens[push as usize]
                .as_ref()
                .filter(|t| !t.is_expired())
            {
                if matches!(state.challenge, Some(Challenge::Bearer { .. })) {
                    return Ok(Some(t.header()));
                }
            }
            state.challenge.clone()
        };
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.credentials().map(auth::Credentials::basic)),
            Some(Challenge::Bearer { realm, service }) => {
                let _one_fetch = self.token_lock.lock();
                if let Some(t) = self.auth.lock().tokens[push as usize]
                    .as_ref()
                    .filter(|t| !t.is_expired())
                {
                    return Ok(Some(t.header()));
                }
                let token = self.fetch_token(&realm, service.as_deref(), push)?;
                let h = token.header();
                self.auth.lock().tokens[push as usize] = Some(token);
                Ok(Some(h))
            }
        }
    }

    /// A 401 from the registry: take its challenge and drop the token that
    /// was refused, so the next attempt authenticates afresh.
    fn on_unauthorized(
        &self,
        resp: &Response<Body>,
        push: bool,
        sent: Option<&str>,
    ) -> Result<(), Error> {
        let Some(c) = auth::parse_challenges(header_all(resp, "www-authenticate")) else {
            return Err(self.auth_error(401));
        };
        let mut state = self.auth.lock();
        if c == Challenge::Basic && (self.creds.credentials().is_none() || sent.is_some()) {
            return Err(self.auth_error(401));
        }
        let slot = &mut state.tokens[push as usize];
        // Another thread may have renewed it already: drop only the refused one.
        if slot
            .as_ref()
            .is_some_and(|t| Some(t.header().as_str()) == sent)
        {
            *slot = None;
        }
        state.challenge = Some(c);
        Ok(())
    }

    /// `GET realm?service=…&scope=repository:REPO:pull[,push]`, with the
    /// user's Basic credentials if there are any.
    fn fetch_token(&self, realm: &str, service: Option<&str>, push: bool) -> Result<Token, Error> {
        let mut url = realm.to_owned();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        if let Some(s) = service {
            url.push_str(&format!("{sep}service={}", encode(s)));
            sep = '&';
        }
        url.push_str(&format!(
            "{sep}scope={}",
            encode(&auth::scope(&self.repo, push))
        ));
        let basic = self.credentials().map(auth::Credentials::basic);
        let mut req = Req::get(String::new(), "token".into(), self.timeout);
        req.target = Target::Url(url);
        req.auth = AuthMode::Fixed(basic);
        req.headers.push(("accept", "application/json".into()));
        let body = self.call(&req, |resp| {
            self.read_body(resp, SMALL_BODY, "token response")
        })?;
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            self.protocol(format!("token service {}: bad JSON ({e})", redact(realm)))
        })?;
        let (value, life) = parsed.into_token().ok_or_else(|| {
            self.protocol(format!("token service {} sent no token", redact(realm)))
        })?;
        Ok(Token::new(value, life))
    }

    /// The credentials, logging once where they came from (never what they are).
    fn credentials(&self) -> Option<&auth::Credentials> {
        let c = self.creds.credentials()?;
        if !self.creds_logged.swap(true, Ordering::Relaxed) {
            log::debug!(target: LOG, "using credentials from {} for {}", c.file.display(), self.registry);
        }
        Some(c)
    }

    fn auth_error(&self, status: u16) -> Error {
        Error::Auth {
            reference: self.name.clone(),
            host: self.host.clone(),
            status,
            hint: self.creds.hint(&self.host),
        }
    }

    /// An error status, with the registry's own message if it sent one
    /// (`{"errors": [{"code": …, "message": …}]}`).
    fn status_error(&self, req: &Req, resp: Response<Body>) -> Error {
        let status = resp.status();
        let body = self.read_small(resp).unwrap_or_default();
        let mut message = registry_message(&body)
            .or_else(|| status.canonical_reason().map(str::to_ascii_lowercase))
            .unwrap_or_else(|| "error".into());
        // "manifest unknown" needs no "manifest: " before it; "blob sha256:…: " does.
        if !message.starts_with(req.what.as_str()) {
            message = format!("{}: {message}", req.what);
        }
        Error::Status {
            reference: self.name.clone(),
            message,
            status: status.as_u16(),
        }
    }

    /// Up to [`SMALL_BODY`] of a body, for pings and errors.
    fn read_small(&self, resp: Response<Body>) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.counted(resp).take(SMALL_BODY).read_to_end(&mut out)?;
        Ok(out)
    }

    /// A body of at most `max` bytes, whole.
    pub fn read_body(&self, resp: Response<Body>, max: u64, what: &str) -> Result<Vec<u8>, Error> {
        let too_large = || Error::TooLarge {
            reference: self.name.clone(),
            what: what.to_owned(),
            max,
        };
        if content_length(&resp).is_some_and(|n| n > max) {
            return Err(too_large());
        }
        let mut out = Vec::new();
        self.counted(resp)
            .take(max.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| self.body_error(e, what))?;
        if out.len() as u64 > max {
            return Err(too_large());
        }
        Ok(out)
    }

    /// The body's reader, adding what it reads to [`Transport::received`].
    pub fn counted(&self, resp: Response<Body>) -> Counted {
        Counted {
            inner: resp.into_body().into_reader(),
            received: self.received.clone(),
        }
    }

    /// An error while reading a body: a timeout, or a broken transfer.
    pub fn body_error(&self, e: io::Error, what: &str) -> Error {
        match ureq::Error::from(e) {
            ureq::Error::Timeout(_) => Error::Timeout {
                reference: self.name.clone(),
                after: self.timeout,
            },
            ureq::Error::Io(e) => Error::Transfer {
                reference: self.name.clone(),
                reason: format!("{what}: connection lost: {e}"),
            },
            e => Error::Transfer {
                reference: self.name.clone(),
                reason: format!("{what}: {e}"),
            },
        }
    }

    /// A ureq error of a request to `uri`.
    fn map_err(&self, e: ureq::Error, uri: &Uri, t: Timing) -> Error {
        let reference = self.name.clone();
        let host = uri.authority().map_or_else(String::new, |a| a.to_string());
        match e {
            ureq::Error::Timeout(which) => Error::Timeout {
                reference,
                // The bound as configured, not as a deadline may have cut it.
                after: match which {
                    ureq::Timeout::Global => t.budget,
                    _ => self.timeout,
                },
            },
            ureq::Error::Io(e) => {
                use io::ErrorKind::*;
                match e.kind() {
                    ConnectionRefused | NetworkUnreachable | HostUnreachable | AddrNotAvailable
                    | NetworkDown => Error::Connect {
                        reference,
                        reason: format!("{host}: {}", io_reason(&e)),
                        kind: e.kind(),
                    },
                    _ => Error::Transfer {
                        reference,
                        reason: format!("{host}: connection lost: {}", io_reason(&e)),
                    },
                }
            }
            ureq::Error::HostNotFound => Error::Connect {
                reference,
                reason: format!("host {} not found", uri.host().unwrap_or("")),
                kind: io::ErrorKind::NotFound,
            },
            ureq::Error::ConnectionFailed => Error::Connect {
                reference,
                reason: format!("{host}: connection failed"),
                kind: io::ErrorKind::Other,
            },
            ureq::Error::Rustls(r) => {
                // ureq does not re-export rustls' error type: its text names
                // certificate problems ("invalid peer certificate: …").
                if r.to_string().contains("certificate") {
                    Error::Tls {
                        reference,
                        host,
                        reason: format!("{r} (a private CA can be added with --ca FILE)"),
                    }
                } else {
                    Error::Transfer {
                        reference,
                        reason: format!("{host}: TLS: {r}"),
                    }
                }
            }
            e @ (ureq::Error::Tls(_) | ureq::Error::Pem(_)) => Error::Tls {
                reference,
                host,
                reason: e.to_string(),
            },
            ureq::Error::BodyExceedsLimit(n) => Error::TooLarge {
                reference,
                what: "response".into(),
                max: n,
            },
            e => Error::Protocol {
                reference,
                reason: format!("{host}: {e}"),
            },
        }
    }

    /// A protocol error.
    pub fn protocol(&self, reason: impl Into<String>) -> Error {
        Error::Protocol {
            reference: self.name.clone(),
            reason: reason.into(),
        }
    }
}

/// The bounds of one exchange: `step` on connecting, sending, waiting for
/// the response and each read; `total` on everything including the body.
#[derive(Clone, Copy, Debug)]
struct Timing {
    step: Duration,
    total: Option<Duration>,
    /// `total` before the call's deadline cut it, for messages.
    budget: Duration,
}

impl Timing {
    fn new(timeout: Duration, req: &Req, deadline: &Deadline) -> Timing {
        let left = deadline.remaining().max(Duration::from_millis(1));
        Timing {
            step: timeout.min(left),
            total: (!req.stream).then(|| req.budget.min(left)),
            budget: req.budget,
        }
    }

    fn apply<S: ureq::AsSendBody>(
        &self,
        agent: &ureq::Agent,
        r: http::Request<S>,
    ) -> http::Request<S> {
        agent
            .configure_request(r)
            .timeout_connect(Some(self.step))
            .timeout_send_request(Some(self.step))
            .timeout_recv_response(Some(self.step))
            .timeout_per_read(Some(self.step))
            .timeout_per_write(Some(self.step))
            .timeout_global(self.total)
            .build()
    }
}

/// A body reader that counts what it reads.
pub(super) struct Counted {
    inner: ureq::BodyReader<'static>,
    received: Arc<AtomicU64>,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.received.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The first value of a header, if it is text.
pub(super) fn header<'r>(resp: &'r Response<Body>, name: &str) -> Option<&'r str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

fn header_all<'r>(resp: &'r Response<Body>, name: &str) -> impl Iterator<Item = &'r str> {
    resp.headers()
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
}

/// `Content-Length`, if given.
pub(super) fn content_length(resp: &Response<Body>) -> Option<u64> {
    header(resp, "content-length").and_then(|v| v.trim().parse().ok())
}

/// The message of a distribution-spec error body, if it is one.
fn registry_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let first = v.get("errors")?.get(0)?;
    let msg = first
        .get("message")
        .and_then(|m| m.as_str())
        .filter(|m| !m.is_empty());
    let code = first
        .get("code")
        .and_then(|c| c.as_str())
        .filter(|c| !c.is_empty());
    let text = match (msg, code) {
        (Some(m), _) => m.to_owned(),
        (None, Some(c)) => c.to_ascii_lowercase().replace('_', " "),
        (None, None) => return None,
    };
    // One line, and not a page of it.
    Some(
        text.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(300)
            .collect(),
    )
}

/// The text of an io error without ureq's wrapping.
fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::UnexpectedEof => "connection closed".into(),
        _ => e.to_string(),
    }
}

/// The roots to trust: the system's (what the platform verifier would use),
/// plus those of `ca`.
fn roots(ca: Option<&std::path::Path>) -> Result<ureq::tls::RootCerts, String> {
    let Some(path) = ca else {
        return Ok(ureq::tls::RootCerts::PlatformVerifier);
    };
    let pem = std::fs::read(path).map_err(|e| format!("--ca {}: {e}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(format!("--ca {}: {e}", path.display())),
        }
    }
    if certs.is_empty() {
        return Err(format!("--ca {}: no PEM certificate in it", path.display()));
    }
    let system = rustls_native_certs::load_native_certs();
    for c in system.certs {
        certs.push(ureq::tls::Certificate::from_der(c.as_ref()).to_owned());
    }
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}
