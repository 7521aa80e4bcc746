//! Client tests against the scripted server of [`super::testserver`]: digests,
//! auth (Basic, bearer, renewal), ranges, retries, timeouts, redirects,
//! pushes and referrers.

use std::io::{ErrorKind, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use parking_lot::Mutex;

use super::testserver::{Reply, Request, Server};
use super::{Client, Error, Options, Reference};
use crate::image::digest;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn manifest_bytes(n: u32) -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":{n}}},"layers":[]}}"#,
        "0".repeat(64)
    )
    .into_bytes()
}

fn blob_data() -> Vec<u8> {
    (0..1000u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// An auth file holding `json`, in a directory kept alive by the caller.
fn auth_file(json: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("auth.json");
    std::fs::write(&p, json).unwrap();
    (dir, p)
}

fn creds_for(host: &str, user_pass: &str) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(user_pass);
    format!(r#"{{"auths": {{"{host}": {{"auth": "{b}"}}}}}}"#)
}

fn options(auth: &Path, timeout: Duration, retries: u32) -> Options {
    Options {
        timeout,
        retries,
        auth_file: Some(auth.to_owned()),
        ..Options::default()
    }
}

fn client_with(host: &str, o: &Options) -> Client {
    Client::new(&Reference::parse(&format!("{host}/app:v1")).unwrap(), o).unwrap()
}

/// A client of `host/app:v1` with no credentials, a 5 s timeout, 3 retries.
fn client(host: &str) -> (Client, tempfile::TempDir) {
    let (dir, auth) = auth_file("{}");
    (
        client_with(host, &options(&auth, Duration::from_secs(5), 3)),
        dir,
    )
}

/// Serves `data` honouring `Range: bytes=A-B` / `bytes=A-` with a 206.
fn ranged(req: &Request, data: &[u8]) -> Reply {
    let Some(r) = req.header("range").and_then(|r| r.strip_prefix("bytes=")) else {
        return Reply::ok(data.to_vec());
    };
    let (a, b) = r.split_once('-').unwrap();
    let a: usize = a.parse().unwrap();
    let b: usize = if b.is_empty() {
        data.len() - 1
    } else {
        b.parse().unwrap()
    };
    let cr = format!("bytes {a}-{b}/{}", data.len());
    Reply::new(206, &[("Content-Range", &cr)], data[a..=b].to_vec())
}

fn is_ping(req: &Request) -> bool {
    req.route() == "/v2/"
}

#[test]
fn client_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Client>();
}

#[test]
fn manifest_by_tag_and_digest() {
    let m = manifest_bytes(1);
    let d = digest::of(&m);
    let (m2, d2) = (m.clone(), d.clone());
    let s = Server::start(move |req| match req.route() {
        "/v2/" => Reply::ok(""),
        "/v2/app/manifests/v1" => Reply::new(
            200,
            &[
                ("Content-Type", OCI_MANIFEST),
                ("Docker-Content-Digest", &d2),
            ],
            m2.clone(),
        ),
        // A generic Content-Type: the document's mediaType is used.
        r if r == format!("/v2/app/manifests/{d2}") => {
            Reply::new(200, &[("Content-Type", "application/json")], m2.clone())
        }
        _ => Reply::error(404, "MANIFEST_UNKNOWN", "manifest unknown"),
    });
    let (c, _dir) = client(&s.host());
    let f = c.manifest("v1").unwrap();
    assert_eq!(
        (f.bytes.as_slice(), f.digest.as_str(), f.media_type.as_str()),
        (m.as_slice(), d.as_str(), OCI_MANIFEST)
    );
    let by_digest = c.manifest(&d).unwrap();
    assert_eq!(
        (by_digest.digest, by_digest.media_type),
        (d.clone(), OCI_MANIFEST.to_owned())
    );
    let accept = s.to("/v2/app/manifests/v1")[0]
        .header("accept")
        .unwrap()
        .to_owned();
    for t in [
        "oci.image.manifest",
        "oci.image.index",
        "docker.distribution.manifest.v2",
        "manifest.list.v2",
    ] {
        assert!(accept.contains(t), "{accept}");
    }
    assert_eq!(s.to("/v2/").len(), 1, "pinged once");
    assert!(c.bytes_received() >= 2 * m.len() as u64);
    let e = c.manifest("v2").unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "docker://{}/app:v1: manifest v2: manifest unknown (HTTP 404)",
            s.host()
        )
    );
    assert_eq!(
        s.to("/v2/app/manifests/v2").len(),
        1,
        "a 404 is not retried"
    );
    assert!(matches!(c.manifest("../x"), Err(Error::Invalid { .. })));
}

#[test]
fn manifest_digest_mismatch() {
    let m = manifest_bytes(1);
    let other = manifest_bytes(2);
    let d = digest::of(&m);
    let d2 = d.clone();
    let s = Server::start(move |req| match req.route() {
        "/v2/" => Reply::ok(""),
        // Different bytes than the digest asked for.
        r if r == format!("/v2/app/manifests/{d2}") => Reply::ok(other.clone()),
        // A tag whose announced digest is not that of the bytes.
        "/v2/app/manifests/v1" => Reply::new(200, &[("Docker-Content-Digest", &d2)], other.clone()),
        "/v2/app/manifests/big" => Reply::ok(vec![b' '; 5 << 20]),
        _ => Reply::error(404, "MANIFEST_UNKNOWN", "manifest unknown"),
    });
    let (c, _dir) = client(&s.host());
    match c.manifest(&d) {
        Err(Error::Digest {
            expected, actual, ..
        }) => {
            assert_eq!(
                (expected, actual),
                (d.clone(), digest::of(&manifest_bytes(2)))
            )
        }
        other => panic!("{other:?}"),
    }
    let e = c.manifest("v1").unwrap_err();
    assert!(matches!(e, Error::Digest { .. }), "{e}");
    assert!(
        e.to_string().starts_with(&format!(
            "docker://{}/app:v1: manifest digest mismatch",
            s.host()
        )),
        "{e}"
    );
    assert!(matches!(
        c.manifest("big"),
        Err(Error::TooLarge { max: 4194304, .. })
    ));
}

#[test]
fn basic_auth_from_auth_file() {
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:pw")
    );
    let (m, want2) = (manifest_bytes(1), want.clone());
    let s = Server::start(move |req| {
        if req.header("authorization") != Some(want2.as_str()) {
            return Reply::new(
                401,
                &[("WWW-Authenticate", r#"Basic realm="registry""#)],
                "",
            );
        }
        Reply::ok(m.clone())
    });
    let (_d1, good) = auth_file(&creds_for(&s.host(), "alice:pw"));
    let c = client_with(&s.host(), &options(&good, Duration::from_secs(5), 3));
    assert_eq!(c.manifest("v1").unwrap().bytes, manifest_bytes(1));
    let sent = s.to("/v2/app/manifests/v1");
    assert_eq!(
        sent.last().unwrap().header("authorization"),
        Some(want.as_str())
    );

    let (_d2, bad) = auth_file(&creds_for(&s.host(), "alice:wrong"));
    let c = client_with(&s.host(), &options(&bad, Duration::from_secs(5), 3));
    let before = s.to("/v2/app/manifests/v1").len();
    let e = c.manifest("v1").unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Auth { status: 401, .. }));
    assert_eq!(
        msg,
        format!(
            "docker://{h}/app:v1: authentication failed for {h} (HTTP 401): check the credentials in {}",
            bad.display(),
            h = s.host()
        )
    );
    assert!(!msg.contains("wrong") && !msg.contains("YWxpY2"));
    assert_eq!(
        s.to("/v2/app/manifests/v1").len() - before,
        1,
        "refused credentials are not retried"
    );

    let (_d3, none) = auth_file("{}");
    let c = client_with(&s.host(), &options(&none, Duration::from_secs(5), 3));
    let msg = c.manifest("v1").unwrap_err().to_string();
    assert!(
        msg.contains(&format!("no credentials for {}", s.host())),
        "{msg}"
    );
}

/// A token service on the registry's own port: tokens `t1`, `t2`, … each
/// valid until revoked, living `life` seconds.
struct Bearer {
    issued: AtomicUsize,
    valid: Mutex<Vec<String>>,
    life: AtomicUsize,
    refusing: AtomicBool,
    unauthorized: AtomicUsize,
}

#[test]
fn bearer_flow_renewal_and_push_scope() {
    let st = Arc::new(Bearer {
        issued: AtomicUsize::new(0),
        valid: Mutex::new(Vec::new()),
        life: AtomicUsize::new(60),
        refusing: AtomicBool::new(false),
        unauthorized: AtomicUsize::new(0),
    });
    let port = Arc::new(Mutex::new(String::new()));
    let (st2, port2, m) = (st.clone(), port.clone(), manifest_bytes(1));
    let s = Server::start(move |req| {
        if req.route() == "/token" {
            if st2.refusing.load(Ordering::SeqCst) {
                return Reply::new(401, &[], "");
            }
            let n = st2.issued.fetch_add(1, Ordering::SeqCst) + 1;
            let t = format!("t{n}");
            st2.valid.lock().push(t.clone());
            let life = st2.life.load(Ordering::SeqCst);
            return Reply::ok(format!(r#"{{"token": "{t}", "expires_in": {life}}}"#));
        }
        let ok = req
            .header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|t| st2.valid.lock().iter().any(|v| v == t));
        if !ok {
            if !is_ping(req) {
                st2.unauthorized.fetch_add(1, Ordering::SeqCst);
            }
            let ch = format!(
                r#"Bearer realm="http://{}/token",service="svc",scope="x""#,
                port2.lock()
            );
            return Reply::new(401, &[("WWW-Authenticate", &ch)], "");
        }
        match req.method.as_str() {
            "PUT" => Reply::new(201, &[], ""),
            _ => Reply::ok(m.clone()),
        }
    });
    *port.lock() = s.host();
    let (c, _dir) = client(&s.host());
    let issued = || st.issued.load(Ordering::SeqCst);

    // The ping's 401 names the realm: the first request already has a token.
    c.manifest("v1").unwrap();
    c.manifest("v1").unwrap();
    assert_eq!((issued(), st.unauthorized.load(Ordering::SeqCst)), (1, 0));
    let tok = &s.to("/token")[0];
    assert_eq!(
        (tok.query("service"), tok.query("scope")),
        (Some("svc"), Some("repository%3Aapp%3Apull"))
    );

    // A revoked token: one 401, one renewal, success.
    st.valid.lock().clear();
    c.manifest("v1").unwrap();
    assert_eq!((issued(), st.unauthorized.load(Ordering::SeqCst)), (2, 1));

    // An expiring token is renewed before it is refused.
    st.life.store(1, Ordering::SeqCst);
    st.valid.lock().clear();
    c.manifest("v1").unwrap();
    assert_eq!(issued(), 3);
    std::thread::sleep(Duration::from_millis(1100));
    c.manifest("v1").unwrap();
    assert_eq!((issued(), st.unauthorized.load(Ordering::SeqCst)), (4, 2));
    let last = s
        .to("/v2/app/manifests/v1")
        .last()
        .unwrap()
        .header("authorization")
        .map(str::to_owned);
    assert_eq!(last.as_deref(), Some("Bearer t4"));

    // Pushing asks for pull,push.
    st.life.store(60, Ordering::SeqCst);
    c.put_manifest("v2", OCI_MANIFEST, &manifest_bytes(3))
        .unwrap();
    let scope = s
        .to("/token")
        .last()
        .unwrap()
        .query("scope")
        .map(str::to_owned);
    assert_eq!(scope.as_deref(), Some("repository%3Aapp%3Apull%2Cpush"));

    assert!(
        s.to("/token")
            .iter()
            .all(|r| r.header("authorization").is_none()),
        "anonymous"
    );

    // With credentials, the token request carries them (and only it).
    let (_d, auth) = auth_file(&creds_for(&s.host(), "carol:pw"));
    let with_creds = client_with(&s.host(), &options(&auth, Duration::from_secs(5), 3));
    with_creds.manifest("v1").unwrap();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("carol:pw")
    );
    assert_eq!(
        s.to("/token").last().unwrap().header("authorization"),
        Some(basic.as_str())
    );
    let sent = s
        .to("/v2/app/manifests/v1")
        .last()
        .unwrap()
        .header("authorization")
        .map(str::to_owned);
    assert!(sent.is_some_and(|a| a.starts_with("Bearer t")));

    // A token service that refuses: an auth error, once, no loop.
    st.valid.lock().clear();
    st.refusing.store(true, Ordering::SeqCst);
    let before = s.to("/token").len();
    let e = c.manifest("v1").unwrap_err();
    assert!(matches!(e, Error::Auth { status: 401, .. }), "{e}");
    assert_eq!(s.to("/token").len() - before, 1);
}

#[test]
fn ranges_honoured_and_ignored() {
    let data = blob_data();
    let d = digest::of(&data);
    let data2 = data.clone();
    let honours = Server::start(move |req| ranged(req, &data2));
    let data3 = data.clone();
    let ignores = Server::start(move |_| Reply::ok(data3.clone()));
    for s in [&honours, &ignores] {
        let (c, _dir) = client(&s.host());
        assert_eq!(c.blob_range(&d, 100, 50).unwrap(), data[100..150]);
        assert_eq!(c.blob_range(&d, 990, 10).unwrap(), data[990..]);
        assert_eq!(c.blob_range(&d, 0, 1).unwrap(), data[..1]);
        let mut all = Vec::new();
        c.blob_stream(&d, 300)
            .unwrap()
            .read_to_end(&mut all)
            .unwrap();
        assert_eq!(all, data[300..]);
        assert!(c.blob_range(&d, 5, 0).is_err());
        assert!(c.blob_range(&d, u64::MAX, 2).is_err());
    }
    let last = honours.to(&format!("/v2/app/blobs/{d}"));
    assert_eq!(last[0].header("range"), Some("bytes=100-149"));
    assert_eq!(last[3].header("range"), Some("bytes=300-"));

    // A short 206 is an error (after retries), as is a range that is not the one asked for.
    let data4 = data.clone();
    let short = Server::start(move |req| match req.header("range") {
        Some("bytes=0-99") => Reply::new(
            206,
            &[("Content-Range", "bytes 0-99/1000")],
            data4[..50].to_vec(),
        ),
        _ => Reply::new(
            206,
            &[("Content-Range", "bytes 7-9/1000")],
            data4[7..10].to_vec(),
        ),
    });
    let (c, _dir) = client(&short.host());
    let e = c.blob_range(&d, 0, 100).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Other);
    assert!(e.to_string().contains("ended after 50 of 100 bytes"), "{e}");
    assert_eq!(
        short.to(&format!("/v2/app/blobs/{d}")).len(),
        4,
        "tried 1 + 3 times"
    );
    let e = c.blob_range(&d, 5, 5).unwrap_err();
    assert!(e.to_string().contains("Content-Range"), "{e}");
}

#[test]
fn blob_whole_checked_and_sized() {
    let data = blob_data();
    let d = digest::of(&data);
    let d_other = digest::of(b"other");
    let (data2, dd) = (data.clone(), d_other.clone());
    let s = Server::start(move |req| match req.route() {
        r if r.ends_with(&dd) => Reply::ok(data2.clone()),
        _ => Reply::ok(data2.clone()),
    });
    let (c, _dir) = client(&s.host());
    let before = c.bytes_received();
    assert_eq!(c.blob(&d, 1000).unwrap(), data);
    assert!(c.bytes_received() - before >= 1000);
    assert_eq!(c.blob_size(&d).unwrap(), 1000);
    assert_eq!(
        s.to(&format!("/v2/app/blobs/{d}")).last().unwrap().method,
        "HEAD"
    );
    assert!(matches!(
        c.blob(&d, 999),
        Err(Error::TooLarge { max: 999, .. })
    ));
    assert!(matches!(c.blob(&d_other, 1000), Err(Error::Digest { .. })));
    let e = c.blob("sha512:00", 10).unwrap_err();
    assert!(
        matches!(e, Error::Invalid { .. }) && e.to_string().contains("sha512"),
        "{e}"
    );
}

#[test]
fn retry_after_429_then_success() {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let data = blob_data();
    let s = Server::start(move |req| {
        if is_ping(req) {
            return Reply::ok("");
        }
        if n2.fetch_add(1, Ordering::SeqCst) == 0 {
            return Reply::new(429, &[("Retry-After", "1")], "");
        }
        ranged(req, &data)
    });
    let (c, _dir) = client(&s.host());
    let t = Instant::now();
    assert_eq!(
        c.blob_range(&digest::of(&blob_data()), 0, 10).unwrap(),
        blob_data()[..10]
    );
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(990) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(n.load(Ordering::SeqCst), 2);
}

#[test]
fn server_errors_retried_then_reported() {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let m = manifest_bytes(1);
    let s = Server::start(move |req| match req.route() {
        "/v2/" => Reply::ok(""),
        "/v2/app/manifests/v1" if n2.fetch_add(1, Ordering::SeqCst) < 2 => {
            Reply::error(503, "UNAVAILABLE", "try later")
        }
        "/v2/app/manifests/v1" => Reply::ok(m.clone()),
        _ => Reply::error(500, "", ""),
    });
    let (c, _dir) = client(&s.host());
    assert_eq!(c.manifest("v1").unwrap().bytes, manifest_bytes(1));
    assert_eq!(n.load(Ordering::SeqCst), 3);
    let (_d, auth) = auth_file("{}");
    let c1 = client_with(&s.host(), &options(&auth, Duration::from_secs(5), 1));
    let e = c1.manifest("v9").unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "docker://{}/app:v1: manifest v9: internal server error (HTTP 500)",
            s.host()
        )
    );
    assert_eq!(s.to("/v2/app/manifests/v9").len(), 2);
}

#[test]
fn silent_server_times_out_within_bound() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let held = Arc::new(Mutex::new(Vec::new()));
    let held2 = held.clone();
    std::thread::spawn(move || {
        for c in listener.incoming().flatten() {
            held2.lock().push(c);
        }
    });
    let (_d, auth) = auth_file("{}");
    let c = client_with(&host, &options(&auth, Duration::from_millis(300), 3));
    let t = Instant::now();
    let e = c.blob_range(&digest::of(b"x"), 0, 1).unwrap_err();
    let took = t.elapsed();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert!(e.to_string().contains("no response in 0.3 s"), "{e}");
    // (retries + 1) × timeout, plus the backoffs (0.7 s at most).
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(2300),
        "{took:?}"
    );
    assert!(held.lock().len() >= 2, "it retried");

    // A registry that answers its ping, then not the request.
    let s = Server::start(|req| {
        if is_ping(req) {
            Reply::ok("")
        } else {
            Reply::Hang
        }
    });
    let c = client_with(&s.host(), &options(&auth, Duration::from_millis(300), 3));
    let t = Instant::now();
    let e = c.manifest("v1").unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert!(
        t.elapsed() < Duration::from_millis(2300),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(s.to("/v2/app/manifests/v1").len(), 4, "1 + 3 retries");
}

#[test]
fn stalled_stream_times_out() {
    let data = blob_data();
    let s = Server::start(move |req| match req.route() {
        "/v2/" => Reply::ok(""),
        _ => Reply::Stall {
            status: 200,
            headers: vec![],
            prefix: data[..10].to_vec(),
        },
    });
    let (_d, auth) = auth_file("{}");
    let c = client_with(&s.host(), &options(&auth, Duration::from_millis(300), 3));
    let mut r = c.blob_stream(&digest::of(&blob_data()), 0).unwrap();
    let mut buf = [0u8; 100];
    let n = r.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], &blob_data()[..n]);
    let t = Instant::now();
    let mut rest = Vec::new();
    let e = r.read_to_end(&mut rest).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert!(e.to_string().contains("no data in 0.3 s"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn connection_refused_fails_fast() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("127.0.0.1:{port}");
    let (c, _dir) = client(&host);
    let t = Instant::now();
    let e = c.blob_range(&digest::of(b"x"), 0, 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("docker://{host}/app:v1: cannot connect: ")),
        "{e}"
    );
    assert!(e.to_string().ends_with("connection refused"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn redirects_keep_authorization_at_home() {
    let data = blob_data();
    let d = digest::of(&data);
    let data2 = data.clone();
    let storage = Server::start(move |req| ranged(req, &data2));
    let target = format!("http://{}/bucket/blob?sig=abc", storage.host());
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("bob:pw")
    );
    let want2 = want.clone();
    let data3 = data.clone();
    let registry = Server::start(move |req| {
        if req.header("authorization") != Some(want2.as_str()) {
            return Reply::new(401, &[("WWW-Authenticate", r#"Basic realm="r""#)], "");
        }
        match req.route() {
            "/v2/" => Reply::ok(""),
            r if r.starts_with("/v2/app/blobs/") => Reply::new(307, &[("Location", &target)], ""),
            // A redirect within the registry keeps the credentials.
            r if r.starts_with("/v2/app/manifests/") => {
                Reply::new(302, &[("Location", "/v2/app/moved")], "")
            }
            "/v2/app/moved" => Reply::ok(data3.clone()),
            _ => Reply::error(404, "NOT_FOUND", "no"),
        }
    });
    let (_d, auth) = auth_file(&creds_for(&registry.host(), "bob:pw"));
    let c = client_with(&registry.host(), &options(&auth, Duration::from_secs(5), 3));
    assert_eq!(c.blob_range(&d, 10, 20).unwrap(), data[10..30]);
    let at_registry = registry.to(&format!("/v2/app/blobs/{d}"));
    assert_eq!(
        at_registry.last().unwrap().header("authorization"),
        Some(want.as_str())
    );
    let at_storage = storage.to("/bucket/blob");
    assert_eq!(at_storage.len(), 1);
    assert_eq!(at_storage[0].header("authorization"), None);
    assert_eq!(at_storage[0].header("range"), Some("bytes=10-29"));
    assert_eq!(at_storage[0].query("sig"), Some("abc"));
    // Same origin: followed with the credentials.
    assert_eq!(c.manifest("v1").unwrap().bytes, data);
    assert_eq!(registry.to("/v2/app/moved").len(), 1);
}

#[test]
fn push_blob_and_manifest() {
    type Store = Mutex<Vec<(String, Vec<u8>)>>;
    let store: Arc<Store> = Arc::default();
    let store2 = store.clone();
    let s = Server::start(move |req| {
        let r = req.route();
        match (req.method.as_str(), r) {
            (_, "/v2/") => Reply::ok(""),
            ("HEAD", _) if r.starts_with("/v2/app/blobs/") => {
                let d = &r["/v2/app/blobs/".len()..];
                match store2.lock().iter().find(|(k, _)| k == d) {
                    Some((_, b)) => {
                        Reply::new(200, &[("Content-Length", &b.len().to_string())], "")
                    }
                    None => Reply::new(404, &[], ""),
                }
            }
            ("POST", "/v2/app/blobs/uploads/") => {
                Reply::new(202, &[("Location", "/upload/7?state=s1")], "")
            }
            ("PUT", "/upload/7") => {
                let d = req.query("digest").unwrap().replace("%3A", ":");
                assert_eq!(req.query("state"), Some("s1"));
                if digest::of(&req.body) != d {
                    return Reply::error(400, "DIGEST_INVALID", "digest invalid");
                }
                store2.lock().push((d.clone(), req.body.clone()));
                Reply::new(201, &[("Docker-Content-Digest", &d)], "")
            }
            ("PUT", "/v2/app/manifests/v2") => {
                assert_eq!(req.header("content-type"), Some(OCI_MANIFEST));
                store2.lock().push(("v2".into(), req.body.clone()));
                Reply::new(201, &[], "")
            }
            _ => Reply::error(404, "NOT_FOUND", "no"),
        }
    });
    let (c, _dir) = client(&s.host());
    let data = blob_data();
    let d = c.push_blob(&data).unwrap();
    assert_eq!(d, digest::of(&data));
    assert_eq!(store.lock()[0], (d.clone(), data.clone()));
    assert_eq!(c.push_blob(&data).unwrap(), d);
    assert_eq!(
        s.to("/v2/app/blobs/uploads/").len(),
        1,
        "an existing blob is not uploaded again"
    );
    let m = manifest_bytes(4);
    assert_eq!(
        c.put_manifest("v2", OCI_MANIFEST, &m).unwrap(),
        digest::of(&m)
    );
    assert_eq!(store.lock()[1], ("v2".to_owned(), m.clone()));
    let e = c
        .put_manifest(&digest::of(b"else"), OCI_MANIFEST, &m)
        .unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
}

#[test]
fn referrers_api_tag_fallback_and_none() {
    let subject = digest::of(b"subject");
    let hex = subject.trim_start_matches("sha256:").to_owned();
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":10,"artifactType":"application/sig"}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":20,"artifactType":"application/sbom"}}]}}"#,
        digest::of(b"a"),
        digest::of(b"b")
    );
    let (i2, s2) = (index.clone(), subject.clone());
    let api = Server::start(move |req| match req.route() {
        "/v2/" => Reply::ok(""),
        r if r == format!("/v2/app/referrers/{s2}") => Reply::new(
            200,
            &[("Content-Type", "application/vnd.oci.image.index.v1+json")],
            i2.clone(),
        ),
        _ => Reply::error(404, "NOT_FOUND", "no"),
    });
    let (c, _dir) = client(&api.host());
    let sigs = c.referrers(&subject, Some("application/sig")).unwrap();
    assert_eq!(sigs.len(), 1);
    assert_eq!(sigs[0].digest, digest::of(b"a"));
    assert_eq!(sigs[0].size, 10);
    assert_eq!(c.referrers(&subject, None).unwrap().len(), 2);
    assert_eq!(
        api.to(&format!("/v2/app/referrers/{subject}"))[0].query("artifactType"),
        Some("application%2Fsig")
    );

    let (i3, tag) = (index.clone(), format!("/v2/app/manifests/sha256-{hex}"));
    let fallback = Server::start(move |req| match req.route() {
        "/v2/" => Reply::ok(""),
        r if r == tag => Reply::new(
            200,
            &[("Content-Type", "application/vnd.oci.image.index.v1+json")],
            i3.clone(),
        ),
        _ => Reply::error(404, "NOT_FOUND", "no"),
    });
    let (c, _dir2) = client(&fallback.host());
    let sboms = c.referrers(&subject, Some("application/sbom")).unwrap();
    assert_eq!(sboms.iter().map(|d| d.size).collect::<Vec<_>>(), [20]);

    let none = Server::start(|req| match req.route() {
        "/v2/" => Reply::ok(""),
        _ => Reply::error(404, "NOT_FOUND", "no"),
    });
    let (c, _dir3) = client(&none.host());
    assert!(c.referrers(&subject, None).unwrap().is_empty());
    assert_eq!(none.requests().len(), 3, "ping, API, tag");
}

/// Manifests by reference: (tag or digest, Content-Type, bytes).
type Manifests = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// A registry keeping manifests in memory, with or without the referrers API.
fn manifest_store(api: bool) -> (Server, Manifests) {
    let store: Manifests = Arc::default();
    let st = store.clone();
    let s = Server::start(move |req| {
        let r = req.route();
        if r == "/v2/" {
            return Reply::ok("");
        }
        if r.starts_with("/v2/app/referrers/") {
            return match api {
                true => Reply::ok(r#"{"schemaVersion":2,"manifests":[]}"#),
                false => Reply::error(404, "NOT_FOUND", "no"),
            };
        }
        let Some(reference) = r.strip_prefix("/v2/app/manifests/") else {
            return Reply::error(404, "NOT_FOUND", "no");
        };
        match req.method.as_str() {
            "PUT" => {
                let ct = req.header("content-type").unwrap_or("").to_owned();
                let mut st = st.lock();
                st.retain(|(k, _, _)| k != reference);
                st.push((reference.to_owned(), ct.clone(), req.body.clone()));
                st.push((digest::of(&req.body), ct, req.body.clone()));
                Reply::new(201, &[], "")
            }
            _ => match st.lock().iter().rev().find(|(k, _, _)| k == reference) {
                Some((_, ct, b)) => Reply::new(200, &[("Content-Type", ct.as_str())], b.clone()),
                None => Reply::error(404, "MANIFEST_UNKNOWN", "manifest unknown"),
            },
        }
    });
    (s, store)
}

#[test]
fn add_referrer_keeps_the_tag_schema_index() {
    let subject = digest::of(b"subject");
    let tag = subject.replacen(':', "-", 1);
    let (s, store) = manifest_store(false);
    let (c, _dir) = client(&s.host());
    let artifact = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/x.idx","annotations":{{"k":"v"}}}}"#
    );
    let d = c
        .put_manifest(
            &digest::of(artifact.as_bytes()),
            OCI_MANIFEST,
            artifact.as_bytes(),
        )
        .unwrap();
    c.add_referrer(&subject, &d, artifact.len() as u64, "application/x.idx")
        .unwrap();
    c.add_referrer(&subject, &d, artifact.len() as u64, "application/x.idx")
        .unwrap();
    let refs = c.referrers(&subject, Some("application/x.idx")).unwrap();
    assert_eq!(refs.len(), 1, "added once");
    assert_eq!(
        (refs[0].digest.as_str(), refs[0].size),
        (d.as_str(), artifact.len() as i64)
    );
    assert_eq!(refs[0].annotation("k"), Some("v"));
    let tagged = store.lock().iter().filter(|(k, _, _)| *k == tag).count();
    assert_eq!(tagged, 1);
    assert_eq!(
        s.to(&format!("/v2/app/manifests/{tag}"))
            .iter()
            .filter(|r| r.method == "PUT")
            .count(),
        1
    );
    assert!(
        c.add_referrer(&subject, &d, 1, "application/x.idx")
            .is_err(),
        "size is checked"
    );

    // With the API, the registry indexes the subject itself.
    let (s, store) = manifest_store(true);
    let (c, _dir) = client(&s.host());
    c.add_referrer(&subject, &d, artifact.len() as u64, "application/x.idx")
        .unwrap();
    assert!(store.lock().is_empty());
}

/// An endpoint that takes the connection but never answers a TLS hello (a
/// plain-HTTP proxy waiting for a request line) costs the https probe of a
/// loopback host a few seconds, not the whole timeout, before http is used.
#[test]
fn a_silent_tls_handshake_falls_back_to_http_quickly() {
    use std::io::Write;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let host = format!("127.0.0.1:{}", l.local_addr().unwrap().port());
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            std::thread::spawn(move || {
                let mut first = [0u8; 1];
                if c.peek(&mut first).is_err() || first[0] == 0x16 {
                    std::thread::sleep(Duration::from_secs(60)); // never answers TLS
                    return;
                }
                let mut req = Vec::new();
                let mut b = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&b[..n]),
                    }
                }
                let status = if req.starts_with(b"GET /v2/ ") {
                    "200 OK"
                } else {
                    "404 Not Found"
                };
                let _ = write!(
                    c,
                    "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                );
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("auth.json");
    std::fs::write(&f, "{}").unwrap();
    let c = client_with(&host, &options(&f, Duration::from_secs(20), 0));
    let t = Instant::now();
    let e = c.manifest("latest").unwrap_err();
    assert!(e.to_string().contains("404"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
}
