//! A scripted HTTP/1.1 server on 127.0.0.1 for the registry tests: std::net,
//! a thread per connection, keep-alive, a handler deciding each answer and a
//! log of every request. A TLS ClientHello (our https probe) is hung up on
//! at once, as a plain-http registry effectively does.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

/// A request as the server saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value of query parameter `k`, still percent-encoded.
    pub fn query(&self, k: &str) -> Option<&str> {
        let q = self.path.split_once('?')?.1;
        q.split('&')
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
    }

    /// The path without the query.
    pub fn route(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }
}

/// What the handler answers.
pub enum Reply {
    /// A complete response; `Content-Length` is added unless given.
    Send {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Headers and the first part of the body, then silence.
    Stall {
        status: u16,
        headers: Vec<(String, String)>,
        prefix: Vec<u8>,
    },
    /// Never answer.
    Hang,
}

impl Reply {
    /// A response with `status`, headers and body.
    pub fn new(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Reply {
        Reply::Send {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.into(),
        }
    }

    /// 200 with `body`.
    pub fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply::new(200, &[], body)
    }

    /// `status` with a distribution-spec error body.
    pub fn error(status: u16, code: &str, message: &str) -> Reply {
        let body = format!(r#"{{"errors":[{{"code":"{code}","message":"{message}"}}]}}"#);
        Reply::new(status, &[("Content-Type", "application/json")], body)
    }
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// A running server; stops accepting when dropped.
pub struct Server {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Starts a server answering with `handler`. `GET /v2/` (the ping) is
    /// answered by the handler too.
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (log2, stop2) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (h, l, s) = (handler.clone(), log2.clone(), stop2.clone());
                std::thread::spawn(move || serve(conn, &*h, &l, &s));
            }
        });
        Server { addr, log, stop }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Every request so far, the pings included.
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().clone()
    }

    /// The requests to `route` (path without query), in order.
    pub fn to(&self, route: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.route() == route)
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(conn: TcpStream, handler: &Handler, log: &Mutex<Vec<Request>>, stop: &AtomicBool) {
    let mut first = [0u8; 1];
    // 0x16: a TLS handshake record; a plain-http server would not understand it.
    if conn.peek(&mut first).map_or(true, |n| n == 0) || first[0] == 0x16 {
        return;
    }
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        let Some(req) = read_request(&mut r) else {
            return;
        };
        log.lock().push(req.clone());
        match handler(&req) {
            Reply::Send {
                status,
                headers,
                body,
            } => {
                // A HEAD gets the length of the body it is not sent.
                let head = head(status, &headers, body.len());
                if w.write_all(head.as_bytes()).is_err() {
                    return;
                }
                if req.method != "HEAD" && w.write_all(&body).is_err() {
                    return;
                }
            }
            Reply::Stall {
                status,
                headers,
                prefix,
            } => {
                let mut headers = headers;
                if !headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                {
                    headers.push((
                        "Content-Length".into(),
                        (prefix.len() + 1_000_000).to_string(),
                    ));
                }
                let _ = w.write_all(head(status, &headers, 0).as_bytes());
                let _ = w.write_all(&prefix);
                hang(r.get_mut(), stop);
                return;
            }
            Reply::Hang => {
                hang(r.get_mut(), stop);
                return;
            }
        }
    }
}

/// Waits for the client to give up (or the server to stop).
fn hang(conn: &mut TcpStream, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

fn head(status: u16, headers: &[(String, String)], len: usize) -> String {
    let mut s = format!("HTTP/1.1 {status} X\r\n");
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    let has_len = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    if !has_len {
        s.push_str(&format!("Content-Length: {len}\r\n"));
    }
    s.push_str("\r\n");
    s
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path, version) = (parts.next()?, parts.next()?, parts.next()?);
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        method: method.to_owned(),
        path: path.to_owned(),
        headers,
        body,
    })
}
