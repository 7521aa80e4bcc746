//! The distribution-spec endpoints of one repository: manifests by tag or
//! digest, blobs whole, by range or as a stream, their sizes, pushes, and
//! referrers (with the OCI 1.1 tag-schema fallback). Every request goes
//! through [`Transport::call`], which owns schemes, auth, retries and timeouts.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;
use ureq::http::Method;
use ureq::ResponseExt;

use super::reference::{check_digest, check_manifest_ref};
use super::transport::{content_length, header, AuthMode, Counted, Req, Target, Transport};
use super::urls;
use super::{secs, Error, Fetched, Options, Reference};
use crate::image::digest;
use crate::image::spec::{self, Descriptor};

const LOG: &str = "unionfs::registry";
/// The largest manifest, index or referrers list accepted (what registries
/// themselves accept by default).
const MANIFEST_MAX: u64 = 4 << 20;
/// Every manifest type unionfs reads.
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";
/// A transfer of this many bytes gets one more `timeout` of budget.
const BYTES_PER_TIMEOUT: u64 = 4 << 20;

/// A client of one repository of one registry. `Send + Sync`: share it
/// through an `Arc`; tokens and the scheme choice are shared too.
pub struct Client {
    reference: Reference,
    t: Transport,
    /// The registry answered a ranged GET with 200 (logged once).
    ranges_ignored: AtomicBool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("reference", &self.reference.to_string())
            .field("bytes_received", &self.bytes_received())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `r`'s repository. Checks the reference, reads `--ca`
    /// and the auth files; makes no request yet.
    pub fn new(r: &Reference, o: &Options) -> Result<Client, Error> {
        let reference = Reference::parse(&r.to_string()).map_err(|reason| Error::Invalid {
            reference: r.to_string(),
            reason,
        })?;
        Ok(Client {
            t: Transport::new(&reference, o)?,
            reference,
            ranges_ignored: AtomicBool::new(false),
        })
    }

    /// The reference the client was made for.
    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// Response body bytes received so far by this client (all requests).
    pub fn bytes_received(&self) -> u64 {
        self.t.received()
    }

    /// `GET /v2/<repo>/manifests/<reference>` for any manifest or index
    /// type. The bytes must hash to `reference` if it is a digest, and to
    /// `Docker-Content-Digest` if the registry sends one; at most 4 MiB.
    pub fn manifest(&self, reference: &str) -> Result<Fetched, Error> {
        check_manifest_ref(reference).map_err(|e| self.invalid(e))?;
        let what = if reference == self.reference.reference() {
            "manifest".to_owned()
        } else {
            format!("manifest {reference}")
        };
        let mut req = Req::get(
            self.path("manifests", reference),
            what.clone(),
            self.t.timeout(),
        );
        req.headers.push(("accept", ACCEPT_MANIFESTS.into()));
        let (bytes, content_type, announced) = self.t.call(&req, |resp| {
            let ct = header(&resp, "content-type").map(bare_media_type);
            let announced = header(&resp, "docker-content-digest").map(str::to_owned);
            Ok((self.t.read_body(resp, MANIFEST_MAX, &what)?, ct, announced))
        })?;
        let digest = digest::of(&bytes);
        let expected = if reference.contains(':') {
            Some(reference.to_owned())
        } else {
            announced.filter(|d| d.starts_with("sha256:"))
        };
        if let Some(expected) = expected.filter(|e| *e != digest) {
            return Err(self.mismatch(what, expected, digest));
        }
        let media_type = media_type(content_type, &bytes);
        Ok(Fetched {
            bytes,
            media_type,
            digest,
        })
    }

    /// A small blob (a config) whole, checked against `digest`; at most `max` bytes.
    pub fn blob(&self, digest: &str, max: u64) -> Result<Vec<u8>, Error> {
        check_digest(digest).map_err(|e| self.invalid(e))?;
        let what = format!("blob {digest}");
        let req = Req::get(self.path("blobs", digest), what.clone(), self.budget(max));
        let bytes = self
            .t
            .call(&req, |resp| self.t.read_body(resp, max, &what))?;
        let actual = digest::of(&bytes);
        if actual != digest {
            return Err(self.mismatch(what, digest.to_owned(), actual));
        }
        Ok(bytes)
    }

    /// Exactly bytes `[off, off + len)` of a blob (`len > 0`, within the
    /// blob), not digest-checked (the caller checks its spans). A registry
    /// that ignores `Range` and answers 200 is read from the start.
    pub fn blob_range(&self, digest: &str, off: u64, len: u64) -> io::Result<Vec<u8>> {
        check_digest(digest).map_err(|e| self.invalid(e))?;
        let end = off
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or_else(|| self.invalid(format!("bad range of {len} bytes at {off}")))?
            - 1;
        let what = format!("blob {digest} bytes {off}-{end}");
        // A registry known to send whole blobs gets the time to send the prefix.
        let span = if self.ranges_ignored.load(Ordering::Relaxed) {
            end + 1
        } else {
            len
        };
        let mut req = Req::get(self.path("blobs", digest), what.clone(), self.budget(span));
        req.headers.push(("range", format!("bytes={off}-{end}")));
        let out = self.t.call(&req, |resp| {
            let skip = match resp.status().as_u16() {
                206 => {
                    self.check_content_range(header(&resp, "content-range"), off, end)?;
                    0
                }
                200 => {
                    self.note_ranges_ignored();
                    off
                }
                s => return Err(self.t.protocol(format!("{what}: unexpected HTTP {s}"))),
            };
            let mut body = self.t.counted(resp);
            let skipped = io::copy(&mut (&mut body).take(skip), &mut io::sink())
                .map_err(|e| self.t.body_error(e, &what))?;
            if skipped < skip {
                return Err(self.short(&what, 0, len));
            }
            read_exact(&self.t, body, len, &what)
        })?;
        Ok(out)
    }

    /// The blob from `off` to its end, as a stream for one sequential pass.
    /// The request is retried as any other; each read of the body that
    /// stalls longer than the timeout fails with `TimedOut`.
    pub fn blob_stream(&self, digest: &str, off: u64) -> io::Result<Box<dyn Read + Send>> {
        check_digest(digest).map_err(|e| self.invalid(e))?;
        let what = format!("blob {digest}");
        let mut req = Req::get(self.path("blobs", digest), what.clone(), self.t.timeout());
        req.stream = true;
        if off > 0 {
            req.headers.push(("range", format!("bytes={off}-")));
        }
        let (inner, skip) = self.t.call(&req, |resp| {
            let skip = match resp.status().as_u16() {
                206 => {
                    self.check_content_range(header(&resp, "content-range"), off, u64::MAX)?;
                    0
                }
                200 => {
                    if off > 0 {
                        self.note_ranges_ignored();
                    }
                    off
                }
                s => return Err(self.t.protocol(format!("{what}: unexpected HTTP {s}"))),
            };
            Ok((self.t.counted(resp), skip))
        })?;
        Ok(Box::new(Stream {
            inner,
            skip,
            name: self.t.name().to_owned(),
            what,
            timeout: self.t.timeout(),
        }))
    }

    /// `HEAD` of a blob: its size.
    pub fn blob_size(&self, digest: &str) -> Result<u64, Error> {
        check_digest(digest).map_err(|e| self.invalid(e))?;
        let what = format!("blob {digest}");
        let mut req = Req::get(self.path("blobs", digest), what.clone(), self.t.timeout());
        req.method = Method::HEAD;
        self.t.call(&req, |resp| {
            content_length(&resp).ok_or_else(|| {
                self.t
                    .protocol(format!("{what}: no Content-Length in the answer to HEAD"))
            })
        })
    }

    /// Uploads a blob (`POST …/blobs/uploads/`, then `PUT ?digest=`) unless
    /// `HEAD` says the registry has it. Returns its digest. A retried `PUT`
    /// reuses the upload session, which some registries forget after a failure.
    pub fn push_blob(&self, bytes: &[u8]) -> Result<String, Error> {
        let digest = digest::of(bytes);
        let what = format!("blob {digest}");
        let mut head = Req::get(self.path("blobs", &digest), what.clone(), self.t.timeout());
        head.method = Method::HEAD;
        head.push = true;
        match self.t.call(&head, |_| Ok(())) {
            Ok(()) => {
                log::debug!(target: LOG, "{}: {what} already there", self.t.name());
                return Ok(digest);
            }
            Err(e) if e.status() == Some(404) => {}
            Err(e) => return Err(e),
        }
        let start = Req {
            method: Method::POST,
            target: Target::Registry(format!("/v2/{}/blobs/uploads/", self.t.repo())),
            headers: Vec::new(),
            body: Some(&[]),
            push: true,
            auth: AuthMode::Registry,
            what: format!("upload of {what}"),
            budget: self.t.timeout(),
            stream: false,
        };
        let location = self.t.call(&start, |resp| {
            let loc = header(&resp, "location").ok_or_else(|| {
                self.t
                    .protocol(format!("upload of {what}: no Location in the answer"))
            })?;
            urls::resolve(resp.get_uri(), loc).map_err(|e| self.t.protocol(e))
        })?;
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = Req {
            method: Method::PUT,
            target: Target::Url(format!("{location}{sep}digest={}", urls::encode(&digest))),
            headers: vec![("content-type", "application/octet-stream".into())],
            body: Some(bytes),
            push: true,
            auth: AuthMode::Registry,
            what: format!("upload of {what}"),
            budget: self.budget(bytes.len() as u64),
            stream: false,
        };
        self.t
            .call(&put, |resp| self.check_announced(&resp, &what, &digest))?;
        Ok(digest)
    }

    /// `PUT /v2/<repo>/manifests/<reference>`. Returns the manifest's digest.
    pub fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String, Error> {
        check_manifest_ref(reference).map_err(|e| self.invalid(e))?;
        let digest = digest::of(bytes);
        if reference.contains(':') && reference != digest {
            return Err(self.invalid(format!(
                "manifest to push has digest {digest}, not {reference}"
            )));
        }
        let what = format!("manifest {reference}");
        if bytes.len() as u64 > MANIFEST_MAX {
            return Err(Error::TooLarge {
                reference: self.t.name().to_owned(),
                what,
                max: MANIFEST_MAX,
            });
        }
        let req = Req {
            method: Method::PUT,
            target: Target::Registry(self.path("manifests", reference)),
            headers: vec![("content-type", media_type.to_owned())],
            body: Some(bytes),
            push: true,
            auth: AuthMode::Registry,
            what: what.clone(),
            budget: self.t.timeout(),
            stream: false,
        };
        self.t
            .call(&req, |resp| self.check_announced(&resp, &what, &digest))?;
        Ok(digest)
    }

    /// The manifests that refer to `subject_digest` (of `artifact_type`, if
    /// given): `GET /v2/<repo>/referrers/<digest>`, or where the registry
    /// has no such API (404), the OCI 1.1 tag schema's index `sha256-<hex>`;
    /// neither means none.
    pub fn referrers(
        &self,
        subject_digest: &str,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, Error> {
        check_digest(subject_digest).map_err(|e| self.invalid(e))?;
        let what = format!("referrers of {subject_digest}");
        let mut path = self.path("referrers", subject_digest);
        if let Some(a) = artifact_type {
            path.push_str(&format!("?artifactType={}", urls::encode(a)));
        }
        let mut req = Req::get(path, what.clone(), self.t.timeout());
        req.headers.push(("accept", spec::OCI_INDEX.into()));
        let index = match self
            .t
            .call(&req, |resp| self.t.read_body(resp, MANIFEST_MAX, &what))
        {
            Ok(body) => body,
            Err(e) if e.status() == Some(404) => {
                let tag = subject_digest.replacen(':', "-", 1);
                match self.manifest(&tag) {
                    Ok(f) => f.bytes,
                    Err(e) if e.status() == Some(404) => return Ok(Vec::new()),
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        parse_referrers(&index, artifact_type).map_err(|e| self.t.protocol(format!("{what}: {e}")))
    }

    /// Records `digest` (a pushed manifest of `size` bytes and
    /// `artifact_type` whose `subject` is `subject_digest`) among the
    /// subject's referrers where the registry has no referrers API. As OCI
    /// 1.1 asks of clients: fetch the tag schema's index `sha256-<hex>` (none
    /// yet: start empty), append the manifest's descriptor with its
    /// annotations unless it is there, push the index back. A registry with
    /// the API indexes the subject itself: then nothing is done. Not atomic:
    /// two clients adding at once may lose one entry.
    pub fn add_referrer(
        &self,
        subject_digest: &str,
        digest: &str,
        size: u64,
        artifact_type: &str,
    ) -> Result<(), Error> {
        check_digest(subject_digest).map_err(|e| self.invalid(e))?;
        check_digest(digest).map_err(|e| self.invalid(e))?;
        let what = format!("referrers of {subject_digest}");
        let mut probe = Req::get(
            self.path("referrers", subject_digest),
            what.clone(),
            self.t.timeout(),
        );
        probe.headers.push(("accept", spec::OCI_INDEX.into()));
        match self
            .t
            .call(&probe, |resp| self.t.read_body(resp, MANIFEST_MAX, &what))
        {
            Ok(_) => return Ok(()),
            Err(e) if e.status() == Some(404) => {}
            Err(e) => return Err(e),
        }
        let tag = subject_digest.replacen(':', "-", 1);
        let mut index = match self.manifest(&tag) {
            Ok(f) if spec::is_index(&f.media_type) => {
                serde_json::from_slice::<serde_json::Value>(&f.bytes)
                    .ok()
                    .filter(serde_json::Value::is_object)
                    .ok_or_else(|| {
                        self.t
                            .protocol(format!("{what}: tag {tag} is not valid JSON"))
                    })?
            }
            Ok(f) => {
                return Err(self.t.protocol(format!(
                    "{what}: tag {tag} holds a {}, not an image index",
                    f.media_type
                )))
            }
            Err(e) if e.status() == Some(404) => serde_json::json!({
                "schemaVersion": 2,
                "mediaType": spec::OCI_INDEX,
                "manifests": [],
            }),
            Err(e) => return Err(e),
        };
        let referrer = self.manifest(digest)?;
        if referrer.bytes.len() as u64 != size {
            return Err(self.invalid(format!(
                "{digest} is {} bytes, not {size}",
                referrer.bytes.len()
            )));
        }
        let mut entry = serde_json::json!({
            "mediaType": referrer.media_type,
            "digest": digest,
            "size": size,
            "artifactType": artifact_type,
        });
        // "All annotations from the pushed manifest MUST be copied."
        let annotations = serde_json::from_slice::<serde_json::Value>(&referrer.bytes)
            .ok()
            .and_then(|m| m.get("annotations").filter(|a| a.is_object()).cloned());
        if let Some(a) = annotations {
            entry["annotations"] = a;
        }
        if !index["manifests"].is_array() {
            index["manifests"] = serde_json::Value::Array(Vec::new());
        }
        let Some(list) = index["manifests"].as_array_mut() else {
            return Err(self
                .t
                .protocol(format!("{what}: tag {tag} has no manifests list")));
        };
        if list.iter().any(|m| m["digest"] == digest) {
            return Ok(());
        }
        list.push(entry);
        let bytes = serde_json::to_vec(&index).map_err(|e| self.t.protocol(e.to_string()))?;
        self.put_manifest(&tag, spec::OCI_INDEX, &bytes)?;
        Ok(())
    }

    /// `/v2/<repo>/<kind>/<reference>`.
    fn path(&self, kind: &str, reference: &str) -> String {
        format!("/v2/{}/{kind}/{reference}", self.t.repo())
    }

    /// The budget of a request moving `bytes`: one timeout, and one more per
    /// [`BYTES_PER_TIMEOUT`].
    fn budget(&self, bytes: u64) -> Duration {
        let n = u32::try_from(1 + bytes / BYTES_PER_TIMEOUT).unwrap_or(u32::MAX);
        self.t.timeout().saturating_mul(n)
    }

    fn note_ranges_ignored(&self) {
        if !self.ranges_ignored.swap(true, Ordering::Relaxed) {
            log::debug!(
                target: LOG,
                "{}: the registry ignores Range requests; blobs are read from their start",
                self.t.name()
            );
        }
    }

    /// A 206's `Content-Range: bytes A-B/N` must start at `off` and cover up
    /// to `end` (or to the blob's end when `end` is `u64::MAX`).
    fn check_content_range(&self, v: Option<&str>, off: u64, end: u64) -> Result<(), Error> {
        let Some(v) = v else { return Ok(()) };
        let parsed = v
            .trim()
            .strip_prefix("bytes ")
            .and_then(|r| r.split('/').next())
            .and_then(|r| r.split_once('-'))
            .and_then(|(a, b)| {
                Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?))
            });
        match parsed {
            Some((a, b)) if a == off && (end == u64::MAX || b >= end) => Ok(()),
            _ => Err(self.t.protocol(format!(
                "asked for bytes {off}-{}, the registry sent Content-Range {v:?}",
                if end == u64::MAX {
                    String::new()
                } else {
                    end.to_string()
                }
            ))),
        }
    }

    /// A `Docker-Content-Digest` in an answer to a push must be ours.
    fn check_announced(
        &self,
        resp: &ureq::http::Response<ureq::Body>,
        what: &str,
        digest: &str,
    ) -> Result<(), Error> {
        match header(resp, "docker-content-digest") {
            Some(d) if d.starts_with("sha256:") && d != digest => {
                Err(self.mismatch(what.to_owned(), digest.to_owned(), d.to_owned()))
            }
            _ => Ok(()),
        }
    }

    fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::Invalid {
            reference: self.t.name().to_owned(),
            reason: reason.into(),
        }
    }

    fn mismatch(&self, what: String, expected: String, actual: String) -> Error {
        Error::Digest {
            reference: self.t.name().to_owned(),
            what,
            expected,
            actual,
        }
    }

    fn short(&self, what: &str, got: u64, want: u64) -> Error {
        Error::Transfer {
            reference: self.t.name().to_owned(),
            reason: format!("{what}: the body ended after {got} of {want} bytes"),
        }
    }
}

/// Exactly `len` bytes of `body`, or a (retryable) transfer error.
fn read_exact(t: &Transport, body: Counted, len: u64, what: &str) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(len.min(16 << 20) as usize);
    body.take(len)
        .read_to_end(&mut out)
        .map_err(|e| t.body_error(e, what))?;
    if (out.len() as u64) < len {
        return Err(Error::Transfer {
            reference: t.name().to_owned(),
            reason: format!("{what}: the body ended after {} of {len} bytes", out.len()),
        });
    }
    Ok(out)
}

/// `application/json; charset=utf-8` → `application/json`.
fn bare_media_type(v: &str) -> String {
    v.split(';').next().unwrap_or("").trim().to_owned()
}

/// The `Content-Type`, unless it is generic; then the document's own
/// `mediaType`.
fn media_type(content_type: Option<String>, bytes: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Typed {
        #[serde(rename = "mediaType", default)]
        media_type: String,
    }
    let generic = |c: &str| {
        matches!(
            c,
            "" | "application/json" | "application/octet-stream" | "text/plain"
        )
    };
    match content_type {
        Some(c) if !generic(&c) => c,
        c => serde_json::from_slice::<Typed>(bytes)
            .ok()
            .map(|t| t.media_type)
            .filter(|m| !m.is_empty())
            .or(c)
            .unwrap_or_default(),
    }
}

/// The descriptors of a referrers index, keeping those of `artifact_type`
/// (a registry may ignore the filter; the tag schema never applies it).
fn parse_referrers(body: &[u8], artifact_type: Option<&str>) -> Result<Vec<Descriptor>, String> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        manifests: Vec<serde_json::Value>,
    }
    let raw: Raw = serde_json::from_slice(body).map_err(|e| format!("not an image index ({e})"))?;
    let mut out = Vec::new();
    for m in raw.manifests {
        let kind = m.get("artifactType").and_then(|v| v.as_str());
        if artifact_type.is_some_and(|want| kind != Some(want)) {
            continue;
        }
        out.push(serde_json::from_value(m).map_err(|e| format!("bad descriptor ({e})"))?);
    }
    Ok(out)
}

/// A blob body being streamed: skips what a registry that ignored `Range`
/// sent before the offset, and names the blob in its errors.
struct Stream {
    inner: Counted,
    skip: u64,
    name: String,
    what: String,
    timeout: Duration,
}

impl Stream {
    fn error(&self, e: io::Error) -> io::Error {
        match ureq::Error::from(e) {
            ureq::Error::Timeout(_) => io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{}: {}: no data in {}",
                    self.name,
                    self.what,
                    secs(&self.timeout)
                ),
            ),
            ureq::Error::Io(e) => io::Error::new(
                e.kind(),
                format!("{}: {}: connection lost: {e}", self.name, self.what),
            ),
            e => io::Error::other(format!("{}: {}: {e}", self.name, self.what)),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.skip > 0 {
            let mut scratch = [0u8; 64 * 1024];
            let want = scratch
                .len()
                .min(usize::try_from(self.skip).unwrap_or(usize::MAX));
            let n = self
                .inner
                .read(&mut scratch[..want])
                .map_err(|e| self.error(e))?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{}: {}: the body ended before the requested offset",
                        self.name, self.what
                    ),
                ));
            }
            self.skip -= n as u64;
        }
        self.inner.read(buf).map_err(|e| self.error(e))
    }
}
