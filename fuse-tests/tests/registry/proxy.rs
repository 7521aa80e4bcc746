//! A counting, fault-injecting HTTP/1.1 proxy for the registry tests: it
//! listens on 127.0.0.1 in front of a registry, forwards each client
//! connection over its own upstream connection request by request (so
//! keep-alive works as the client uses it), and records every exchange:
//! method, path, kind (manifest, blob GET by digest, other), the Range
//! asked, the status and the response body bytes forwarded. Faults are
//! switched at run time ([`Fault`]); nothing else is rewritten.
//!
//! Parses HTTP only as far as framing needs: request and response heads,
//! `Content-Length` and `chunked` bodies, 1xx interim responses, HEAD and
//! 204/304 without bodies, read-to-close bodies. Knows nothing of registries
//! beyond the `/v2/<name>/(manifests|blobs)/<ref>` path shapes.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the proxy does to the traffic, switched with [`Proxy::set_fault`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward faithfully.
    None,
    /// Flip one byte (the middle one) of every successful blob GET body
    /// whose digest is listed (all blobs when the list is empty).
    CorruptBlobByte(Vec<String>),
    /// Strip `Range` (and `If-Range`) from requests: the registry answers
    /// 200 with the whole blob.
    IgnoreRange,
    /// Answer the next blob GET with `429 Too Many Requests` and
    /// `Retry-After: N` (not forwarded), then go back to [`Fault::None`].
    Status429 { retry_after: u32 },
    /// Read requests and never answer (until the fault changes: then the
    /// connection is closed unanswered).
    Stall,
    /// Close every connection, and each new one as soon as it is accepted.
    Down,
}

/// The kind of a request, by its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `/v2/<name>/manifests/<ref>`.
    Manifest,
    /// `/v2/<name>/blobs/<digest>` (not uploads).
    Blob,
    /// Anything else (`/v2/`, uploads, tags, referrers, ...).
    Other,
}

/// One exchange the proxy saw.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub kind: Kind,
    /// The digest of a blob request.
    pub digest: Option<String>,
    /// The `Range` header the client sent.
    pub range: Option<String>,
    /// The status the client got (0: none, the connection was closed).
    pub status: u16,
    /// Response body bytes forwarded to the client (up to a write that failed).
    pub bytes: u64,
    /// The fault applied to this exchange, if any.
    pub fault: Option<&'static str>,
    /// When the request head arrived.
    pub at: Instant,
}

struct Shared {
    upstream: SocketAddr,
    fault: Mutex<Fault>,
    changed: Condvar,
    log: Mutex<Vec<Req>>,
    conns: Mutex<HashMap<u64, Vec<TcpStream>>>,
    next_id: AtomicU64,
    closing: AtomicBool,
}

impl Shared {
    fn fault(&self) -> Fault {
        self.fault.lock().unwrap().clone()
    }

    fn record(&self, r: Req) {
        self.log.lock().unwrap().push(r);
    }

    /// Shuts down every open socket (client and upstream sides).
    fn close_all(&self) {
        for ss in self.conns.lock().unwrap().values() {
            for s in ss {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

/// The proxy: a listener thread and a thread per client connection.
pub struct Proxy {
    port: u16,
    sh: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on 127.0.0.1:<free port>, forwarding to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = l.local_addr().unwrap().port();
        let sh = Arc::new(Shared {
            upstream,
            fault: Mutex::new(Fault::None),
            changed: Condvar::new(),
            log: Mutex::new(Vec::new()),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            closing: AtomicBool::new(false),
        });
        let sh2 = sh.clone();
        let accept = std::thread::spawn(move || {
            for c in l.incoming() {
                if sh2.closing.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(c) = c else { continue };
                if sh2.fault() == Fault::Down {
                    let _ = c.shutdown(Shutdown::Both);
                    continue;
                }
                let sh3 = sh2.clone();
                std::thread::spawn(move || serve(&sh3, c));
            }
        });
        Proxy {
            port,
            sh,
            accept: Some(accept),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Switches the fault; [`Fault::Down`] also closes the open connections.
    pub fn set_fault(&self, f: Fault) {
        let down = f == Fault::Down;
        *self.sh.fault.lock().unwrap() = f;
        self.sh.changed.notify_all();
        if down {
            self.sh.close_all();
        }
    }

    /// The current fault (a one-shot 429 resets it once served).
    pub fn fault(&self) -> Fault {
        self.sh.fault()
    }

    /// Every exchange since the last [`Proxy::reset`].
    pub fn log(&self) -> Vec<Req> {
        self.sh.log.lock().unwrap().clone()
    }

    /// Forgets the exchanges seen so far.
    pub fn reset(&self) {
        self.sh.log.lock().unwrap().clear();
    }

    /// Requests seen since the last reset.
    pub fn requests(&self) -> usize {
        self.sh.log.lock().unwrap().len()
    }

    /// Response body bytes of one kind since the last reset.
    pub fn bytes(&self, kind: Kind) -> u64 {
        self.log()
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.bytes)
            .sum()
    }

    /// Body bytes of blob GETs per digest since the last reset.
    pub fn blob_bytes(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for r in self.log() {
            if let (Kind::Blob, Some(d), "GET") = (r.kind, &r.digest, r.method.as_str()) {
                *m.entry(d.clone()).or_insert(0) += r.bytes;
            }
        }
        m
    }

    /// The log, one line an exchange in the order requests came, for messages.
    pub fn show_log(&self) -> String {
        let mut log = self.log();
        log.sort_by_key(|r| r.at);
        let t0 = log.first().map(|r| r.at);
        log.iter()
            .map(|r| {
                format!(
                    "  +{:.3}s {} {} -> {} ({} bytes){}{}",
                    t0.map_or(0.0, |t| r.at.duration_since(t).as_secs_f64()),
                    r.method,
                    r.path,
                    r.status,
                    r.bytes,
                    r.range
                        .as_ref()
                        .map_or(String::new(), |x| format!(" range {x}")),
                    r.fault.map_or(String::new(), |f| format!(" [{f}]"))
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.sh.closing.store(true, Ordering::SeqCst);
        self.sh.changed.notify_all();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        self.sh.close_all();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// One connection

/// A parsed message head: the start line and the headers, in order.
struct Head {
    start: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn remove(&mut self, name: &str) -> bool {
        let n = self.headers.len();
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        n != self.headers.len()
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case(name)
                && v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    }

    fn bytes(&self) -> Vec<u8> {
        let mut s = self.start.clone() + "\r\n";
        for (k, v) in &self.headers {
            s += &format!("{k}: {v}\r\n");
        }
        s += "\r\n";
        s.into_bytes()
    }

    /// The body framing the headers declare (RFC 9112 §6.3, minus the
    /// no-body cases the caller knows).
    fn framing(&self, request: bool) -> Framing {
        if self.has_token("transfer-encoding", "chunked") {
            Framing::Chunked
        } else if let Some(n) = self
            .get("content-length")
            .and_then(|v| v.trim().parse().ok())
        {
            Framing::Length(n)
        } else if request {
            Framing::Length(0)
        } else {
            Framing::ToClose
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Framing {
    Length(u64),
    Chunked,
    ToClose,
}

/// Reads a head; `None` at a clean EOF before any byte.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            if lines.is_empty() {
                return Ok(None);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let l = String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_owned();
        if l.is_empty() {
            if lines.is_empty() {
                continue; // a stray CRLF between messages
            }
            break;
        }
        lines.push(l);
    }
    let start = lines.remove(0);
    let headers = lines
        .into_iter()
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect();
    Ok(Some(Head { start, headers }))
}

/// Copies a body from `r` to `w` as framed; `on_payload(buf, offset)` sees
/// (and may change) each piece of payload before it is written. Returns the
/// payload bytes copied.
fn copy_body(
    r: &mut impl BufRead,
    w: &mut impl Write,
    framing: Framing,
    on_payload: &mut dyn FnMut(&mut [u8], u64),
) -> io::Result<u64> {
    let mut done = 0u64;
    let mut copy = |r: &mut dyn BufRead,
                    w: &mut dyn Write,
                    n: Option<u64>,
                    done: &mut u64|
     -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = n;
        loop {
            let want = left.map_or(buf.len(), |l| (l as usize).min(buf.len()));
            if want == 0 {
                return Ok(());
            }
            let k = r.read(&mut buf[..want])?;
            if k == 0 {
                return match left {
                    Some(_) => Err(io::ErrorKind::UnexpectedEof.into()),
                    None => Ok(()),
                };
            }
            on_payload(&mut buf[..k], *done);
            w.write_all(&buf[..k])?;
            *done += k as u64;
            if let Some(l) = left.as_mut() {
                *l -= k as u64;
            }
        }
    };
    match framing {
        Framing::Length(n) => copy(r, w, Some(n), &mut done)?,
        Framing::ToClose => copy(r, w, None, &mut done)?,
        Framing::Chunked => loop {
            let mut line = Vec::new();
            if r.read_until(b'\n', &mut line)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            w.write_all(&line)?;
            let text = String::from_utf8_lossy(&line);
            let size_hex = text.trim().split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size_hex, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "chunk size"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let mut t = Vec::new();
                    if r.read_until(b'\n', &mut t)? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    w.write_all(&t)?;
                    if t == b"\r\n" || t == b"\n" {
                        break;
                    }
                }
                break;
            }
            copy(r, w, Some(size), &mut done)?;
            let mut crlf = Vec::new();
            r.read_until(b'\n', &mut crlf)?;
            w.write_all(&crlf)?;
        },
    }
    w.flush()?;
    Ok(done)
}

/// The kind and digest of a request path.
fn classify(path: &str) -> (Kind, Option<String>) {
    let p = path.split('?').next().unwrap_or(path);
    if let Some(rest) = p.strip_prefix("/v2/") {
        if let Some(i) = rest.rfind("/manifests/") {
            if i > 0 {
                return (Kind::Manifest, None);
            }
        }
        if let Some(i) = rest.rfind("/blobs/") {
            let tail = &rest[i + "/blobs/".len()..];
            if i > 0 && !tail.starts_with("uploads") && tail.contains(':') {
                return (Kind::Blob, Some(tail.to_owned()));
            }
        }
    }
    (Kind::Other, None)
}

fn serve(sh: &Arc<Shared>, client: TcpStream) {
    let id = sh.next_id.fetch_add(1, Ordering::SeqCst);
    if let Ok(c) = client.try_clone() {
        sh.conns.lock().unwrap().entry(id).or_default().push(c);
    }
    let _ = serve_conn(sh, id, client);
    if let Some(ss) = sh.conns.lock().unwrap().remove(&id) {
        for s in ss {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn serve_conn(sh: &Arc<Shared>, id: u64, client: TcpStream) -> io::Result<()> {
    let mut cr = BufReader::new(client.try_clone()?);
    let mut cw = client;
    let mut up: Option<(BufReader<TcpStream>, TcpStream)> = None;
    loop {
        // A TLS ClientHello (clients such as skopeo try https first): close,
        // as a plain-HTTP server's error would make them fall back at once.
        if cr.fill_buf()?.first() == Some(&0x16) {
            return Ok(());
        }
        let Some(mut req) = read_head(&mut cr)? else {
            return Ok(());
        };
        if sh.closing.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut parts = req.start.split(' ');
        let method = parts.next().unwrap_or("").to_owned();
        let path = parts.next().unwrap_or("").to_owned();
        let (kind, digest) = classify(&path);
        let mut rec = Req {
            method: method.clone(),
            path: path.clone(),
            kind,
            digest,
            range: req.get("range").map(str::to_owned),
            status: 0,
            bytes: 0,
            fault: None,
            at: Instant::now(),
        };
        let blob_get = kind == Kind::Blob && method == "GET";
        let fault = sh.fault();
        match &fault {
            Fault::Down => {
                rec.fault = Some("down");
                sh.record(rec);
                return Ok(());
            }
            Fault::Stall => {
                rec.fault = Some("stall");
                sh.record(rec);
                let mut f = sh.fault.lock().unwrap();
                while *f == Fault::Stall && !sh.closing.load(Ordering::SeqCst) {
                    f = sh
                        .changed
                        .wait_timeout(f, Duration::from_millis(200))
                        .unwrap()
                        .0;
                }
                return Ok(());
            }
            Fault::Status429 { retry_after } if blob_get => {
                let framing = req.framing(true);
                copy_body(&mut cr, &mut io::sink(), framing, &mut |_, _| {})?;
                {
                    let mut f = sh.fault.lock().unwrap();
                    if *f == fault {
                        *f = Fault::None;
                    }
                }
                let body =
                    b"{\"errors\":[{\"code\":\"TOOMANYREQUESTS\",\"message\":\"slow down\"}]}";
                let head = format!(
                    "HTTP/1.1 429 Too Many Requests\r\nRetry-After: {retry_after}\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                cw.write_all(head.as_bytes())?;
                cw.write_all(body)?;
                cw.flush()?;
                rec.status = 429;
                rec.bytes = body.len() as u64;
                rec.fault = Some("429");
                sh.record(rec);
                if req.has_token("connection", "close") {
                    return Ok(());
                }
                continue;
            }
            Fault::IgnoreRange => {
                let stripped = req.remove("range");
                req.remove("if-range");
                if stripped {
                    rec.fault = Some("range stripped");
                }
            }
            _ => {}
        }
        // Forward the request, on this client's own upstream connection.
        if up.is_none() {
            let s = match TcpStream::connect_timeout(&sh.upstream, Duration::from_secs(5)) {
                Ok(s) => s,
                Err(_) => {
                    // Upstream down: the client sees its connection closed.
                    sh.record(rec);
                    return Ok(());
                }
            };
            sh.conns
                .lock()
                .unwrap()
                .entry(id)
                .or_default()
                .push(s.try_clone()?);
            up = Some((BufReader::new(s.try_clone()?), s));
        }
        let (ur, uw) = up.as_mut().unwrap();
        let req_framing = req.framing(true);
        let sent = uw
            .write_all(&req.bytes())
            .and_then(|_| copy_body(&mut cr, uw, req_framing, &mut |_, _| {}));
        if sent.is_err() {
            sh.record(rec);
            return Ok(());
        }
        // Its response (after any 1xx).
        let resp = loop {
            let Some(resp) = read_head(ur).ok().flatten() else {
                sh.record(rec);
                return Ok(());
            };
            let status: u16 = resp
                .start
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if (100..200).contains(&status) {
                cw.write_all(&resp.bytes())?;
                continue;
            }
            rec.status = status;
            break resp;
        };
        let framing = if method == "HEAD" || rec.status == 204 || rec.status == 304 {
            Framing::Length(0)
        } else {
            resp.framing(false)
        };
        let corrupt = match (&fault, blob_get, rec.status, &rec.digest) {
            (Fault::CorruptBlobByte(ds), true, 200 | 206, Some(d)) => {
                ds.is_empty() || ds.contains(d)
            }
            _ => false,
        };
        let flip_at = match framing {
            Framing::Length(n) => n / 2,
            _ => 0,
        };
        if corrupt {
            rec.fault = Some("corrupted");
        }
        let mut seen = 0u64;
        let mut on_payload = |buf: &mut [u8], off: u64| {
            if corrupt && (off..off + buf.len() as u64).contains(&flip_at) {
                buf[(flip_at - off) as usize] ^= 0x55;
            }
            seen += buf.len() as u64;
        };
        let result = cw
            .write_all(&resp.bytes())
            .and_then(|_| copy_body(ur, &mut cw, framing, &mut on_payload));
        // What reached the client, a last partial piece included.
        rec.bytes = seen;
        sh.record(rec);
        if result.is_err() {
            return Ok(());
        }
        let close = matches!(framing, Framing::ToClose)
            || resp.has_token("connection", "close")
            || req.has_token("connection", "close");
        if close {
            return Ok(());
        }
    }
}
