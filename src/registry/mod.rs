//! A blocking client for the OCI distribution API (`/v2/…`): manifests,
//! whole and ranged blob reads, pushes and referrers, against one repository
//! of one registry, as `docker://HOST/REPO:TAG` names it.
//!
//! - `reference.rs`: the reference grammar (no HTTP).
//! - `auth.rs`: auth files, `WWW-Authenticate` challenges, bearer tokens (no HTTP).
//! - `retry.rs`: backoff, `Retry-After`, call deadlines (no HTTP).
//! - `urls.rs`: origins, `Location` resolution, query encoding (no I/O).
//! - `transport.rs`: the one place requests are sent: scheme choice, redirects,
//!   auth, retries, timeouts.
//! - `client.rs`: the distribution-spec endpoints on top of it.
//!
//! Knows HTTP and JSON, nothing of tar, blobs' encodings or FUSE: the caller
//! checks the digests of spans it reads by range. Holds no global state; one
//! [`Client`] per repository, shared by threads through an `Arc`.
//!
//! Credentials and tokens are never logged or put in an error. ureq and
//! ureq-proto dump the wire (headers included) at `trace` level, so the
//! logger should keep those crates at `debug` or below.

mod auth;
mod client;
mod reference;
mod retry;
mod transport;
mod urls;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testserver;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

pub use client::Client;
pub use reference::Reference;

/// How a [`Client`] reaches its registry.
#[derive(Clone, Debug)]
pub struct Options {
    /// Docker's insecure registry: https without certificate verification,
    /// then plain http if https fails. (Loopback hosts get the http fallback
    /// without this, but keep verification.)
    pub insecure: bool,
    /// A PEM file of extra root certificates, trusted besides the system's.
    pub ca: Option<PathBuf>,
    /// The bound on each request: connecting, waiting for the response, and
    /// (for buffered reads) the whole body; for streams, each read.
    pub timeout: Duration,
    /// How many times a request that failed transiently (connection error,
    /// timeout, 5xx, 429) is tried again.
    pub retries: u32,
    /// The auth file to use instead of searching `$REGISTRY_AUTH_FILE`,
    /// `$XDG_RUNTIME_DIR/containers/auth.json` and `~/.docker/config.json`.
    pub auth_file: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            insecure: false,
            ca: None,
            timeout: Duration::from_secs(30),
            retries: 3,
            auth_file: None,
        }
    }
}

/// A document fetched by digest or tag.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// Its bytes, exactly as the registry sent them.
    pub bytes: Vec<u8>,
    /// Its media type (the `Content-Type`, else the document's `mediaType`).
    pub media_type: String,
    /// `sha256:` of `bytes`.
    pub digest: String,
}

/// What went wrong talking to a registry. Every message is one line that
/// starts with the image reference.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A malformed argument or option (a digest, `--ca`, the auth file).
    #[error("{reference}: {reason}")]
    Invalid {
        /// The client's reference.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// The registry answered with an error status.
    #[error("{reference}: {message} (HTTP {status})")]
    Status {
        /// The client's reference.
        reference: String,
        /// The object and the registry's own error message.
        message: String,
        /// The HTTP status.
        status: u16,
    },
    /// The registry (or its token service) refused our credentials or the
    /// lack of them.
    #[error("{reference}: authentication failed for {host} (HTTP {status}): {hint}")]
    Auth {
        /// The client's reference.
        reference: String,
        /// The registry host.
        host: String,
        /// The HTTP status (401 or 403).
        status: u16,
        /// Where the credentials came from, or why there are none.
        hint: String,
    },
    /// No connection could be made, or it broke before a response.
    #[error("{reference}: cannot connect: {reason}")]
    Connect {
        /// The client's reference.
        reference: String,
        /// The cause.
        reason: String,
        /// The cause's kind (`ConnectionRefused`, `NotFound` for DNS).
        kind: io::ErrorKind,
    },
    /// A request, or a read of its body, took longer than its bound.
    #[error("{reference}: no response in {}", secs(.after))]
    Timeout {
        /// The client's reference.
        reference: String,
        /// The bound.
        after: Duration,
    },
    /// The connection broke while a body was being read, or the body was short.
    #[error("{reference}: {reason}")]
    Transfer {
        /// The client's reference.
        reference: String,
        /// What broke.
        reason: String,
    },
    /// The TLS handshake failed (an untrusted certificate, mostly).
    #[error("{reference}: TLS with {host} failed: {reason}")]
    Tls {
        /// The client's reference.
        reference: String,
        /// The host.
        host: String,
        /// The cause.
        reason: String,
    },
    /// Content did not match its digest.
    #[error("{reference}: {what} digest mismatch: expected {expected}, got {actual}")]
    Digest {
        /// The client's reference.
        reference: String,
        /// Which document.
        what: String,
        /// The digest asked for (or announced by the registry).
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// A document is larger than unionfs accepts.
    #[error("{reference}: {what} is larger than {max} bytes")]
    TooLarge {
        /// The client's reference.
        reference: String,
        /// Which document.
        what: String,
        /// The limit.
        max: u64,
    },
    /// The registry answered something that is not the protocol.
    #[error("{reference}: {reason}")]
    Protocol {
        /// The client's reference.
        reference: String,
        /// What is wrong with the answer.
        reason: String,
    },
}

/// `30 s`, `0.3 s`.
fn secs(d: &Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} s", (d.as_millis() as f64) / 1000.0)
    }
}

impl Error {
    /// The `io::ErrorKind` this error maps to: `TimedOut`, the connection
    /// error's kind, else `Other`.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Error::Timeout { .. } => io::ErrorKind::TimedOut,
            Error::Connect { kind, .. } => *kind,
            _ => io::ErrorKind::Other,
        }
    }

    /// The HTTP status, for errors that are one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } | Error::Auth { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Returns true if and only if trying again may succeed: a connection
    /// error other than an unknown host, a timeout, a broken transfer, or a
    /// 5xx/429 status.
    fn is_retryable(&self) -> bool {
        match self {
            Error::Connect { kind, .. } => *kind != io::ErrorKind::NotFound,
            Error::Timeout { .. } | Error::Transfer { .. } => true,
            Error::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}
