//! `unionfs --image docker://HOST:PORT/REPO:TAG` (issue 14), against a real
//! registry: Debian's `docker-registry` (the CNCF distribution registry 2.8)
//! started on 127.0.0.1 by each test (registry/harness.rs), anonymous, with
//! htpasswd Basic auth, or with token auth through a token server of ours
//! (registry/token_server.py); images pushed with `skopeo copy
//! --preserve-digests` from OCI layouts (so the registry holds the layouts'
//! blobs byte for byte); in front of it, where bytes are counted or faults
//! injected, a proxy of ours (registry/proxy.rs).
//!
//! Judges: the mount equals `umoci unpack` of the same layout (gzip,
//! uncompressed and zstd layers; an image index with `--platform`), and `ls
//! -R --json --sha256` equals that of the local layout; the bytes the
//! registry served (each blob streamed once without an index; nothing but
//! manifests, the config and the index artifact before the first read with a
//! pushed index; a small read costs a small share of the layer; a second
//! mount with the same cache fetches it no more); Basic and
//! Bearer auth (token renewal with 3 s tokens), bad credentials; a registry
//! killed, stalled, corrupting a byte, ignoring Range, rate-limiting; a
//! missing tag, a missing blob, a closed port: one-line errors, in bounded
//! time, nothing mounted, no credentials printed.
//!
//! The `harness_*` and `local_*` tests check the harness itself (registry,
//! token auth, proxy, fixtures, tree comparison) with skopeo and with
//! `unionfs mount` of the local layouts: they run without the registry
//! client. The others need it: without it they fail at once, saying so.
//!
//! Needs root, FUSE, docker-registry, apache2-utils (htpasswd), python3-jwt,
//! python3-cryptography, skopeo, umoci, and the fixtures of
//! tools/image-fixtures (built on first use, as commit.rs and image.rs do).
//! Nothing here skips.

#[path = "registry/client.rs"]
mod client;
#[path = "registry/fixtures.rs"]
mod fixtures;
#[path = "registry/harness.rs"]
mod harness;
#[path = "registry/proxy.rs"]
mod proxy;
#[allow(dead_code)]
#[path = "commit/tools.rs"]
mod tools;
mod util;

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use client::*;
use fixtures::{images, layers, Blob};
use harness::{free_port, http, write_auth_file, Auth, Registry};
use proxy::{Fault, Kind, Proxy};
use serde_json::Value;
use tools::{fixtures as app_fixtures, fx, run};

/// Request timeout and retries given to the client in the fault tests, and
/// what the reader may wait beyond timeout × (retries + 1) (backoff, FUSE).
const TIMEOUT_S: u64 = 2;
const RETRIES: u64 = 1;
const SLACK: Duration = Duration::from_secs(6);
/// Longest a failing command may take (a 404, a closed port).
const FAIL_FAST: Duration = Duration::from_secs(30);
/// The share of a layer's compressed bytes one small read may fetch.
const SMALL_READ_SHARE: f64 = 0.25;
const USER: &str = "reader";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const PASS: &str = "pa55-Wörd-7f3a";

/// A registry with an image pushed, and a proxy in front of it.
struct Served {
    reg: Registry,
    proxy: Proxy,
}

impl Served {
    fn new(auth: Auth, pushes: &[(&Path, &str, &str)]) -> Served {
        let reg = Registry::start(auth);
        for (layout, tag, repo_tag) in pushes {
            reg.push(layout, tag, repo_tag);
        }
        let proxy = Proxy::start(reg.socket_addr());
        Served { reg, proxy }
    }

    /// The image through the proxy.
    fn spec(&self, repo_tag: &str) -> String {
        spec(&self.proxy.addr(), repo_tag)
    }
}

/// The bytes of `rel` in the big image's reference tree.
fn big_file(rel: &str) -> Vec<u8> {
    tools::read(&images().rootfs("big").join(rel))
}

/// The bytes the proxy served of each of `layers` (blob GETs, by digest).
fn layer_bytes(p: &Proxy, layers: &[Blob]) -> Vec<u64> {
    let got = p.blob_bytes();
    layers
        .iter()
        .map(|l| got.get(&l.digest).copied().unwrap_or(0))
        .collect()
}

// ---------------------------------------------------------------------------
// The harness itself (runs without the registry client)

/// Every auth mode: skopeo pushes, and inspects through the proxy (with
/// --creds and with an auth file of ours); wrong or missing credentials are
/// refused; token auth issues tokens, whose expiry the registry enforces.
#[test]
fn harness_registry_serves_skopeo_in_every_auth_mode() {
    let layout = PathBuf::from(fx("oci-gzip"));
    let want = fixtures::manifest_digest(&layout, "v1");
    for auth in [
        Auth::None,
        Auth::basic(USER, PASS),
        Auth::token(USER, PASS, 3),
    ] {
        let s = Served::new(auth.clone(), &[(&layout, "v1", "app:v1")]);
        let inspect = |creds: &[&str]| {
            let mut c = Command::new("skopeo");
            c.args(["inspect", "--tls-verify=false"]).args(creds);
            c.arg(format!("docker://{}/app:v1", s.proxy.addr()));
            run(&mut c)
        };
        let mut ok_args = vec![];
        let cred = format!("{USER}:{PASS}");
        if auth.creds().is_some() {
            ok_args = vec!["--creds", &cred];
        }
        let out = inspect(&ok_args);
        assert!(
            out.status.success(),
            "{auth:?}: {}\n{}",
            out.stderr,
            s.reg.log()
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["Digest"], want.as_str(), "{auth:?}");
        assert!(
            s.proxy.bytes(Kind::Manifest) > 0,
            "{auth:?}: {}",
            s.proxy.show_log()
        );
        if auth.creds().is_none() {
            continue;
        }
        // The auth file format the client is given.
        let ctx = Ctx::new();
        let af = ctx.dir.path().join("auth.json");
        write_auth_file(&af, &s.proxy.addr(), USER, PASS);
        let out = inspect(&["--authfile", af.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{auth:?} with the auth file: {}",
            out.stderr
        );
        let bad = inspect(&["--creds", &format!("{USER}:wrong")]);
        assert!(!bad.status.success(), "{auth:?}: wrong password accepted");
        let anon = inspect(&["--no-creds"]);
        assert!(!anon.status.success(), "{auth:?}: anonymous accepted");
        let (status, _, _) = http(&s.reg.addr(), "GET", "/v2/app/tags/list", &[], b"").unwrap();
        assert_eq!(status, 401, "{auth:?}: no credentials");
        if let Auth::Token { .. } = auth {
            assert!(
                s.reg.tokens_issued() >= 2,
                "tokens issued: {}",
                s.reg.tokens_issued()
            );
            assert!(s.reg.tokens_refused() >= 1);
            // A token works, and is refused once its 3 s have passed.
            let tp: u16 = fs::read_to_string(s.reg.path("token.port"))
                .unwrap()
                .parse()
                .unwrap();
            let basic = format!("Basic {}", harness::base64(cred.as_bytes()));
            let q = "/token?service=unionfs-test-registry&scope=repository:app:pull";
            let (st, _, body) = http(
                &format!("127.0.0.1:{tp}"),
                "GET",
                q,
                &[("Authorization", &basic)],
                b"",
            )
            .unwrap();
            assert_eq!(st, 200);
            let tok: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(tok["expires_in"], 3);
            let bearer = format!("Bearer {}", tok["token"].as_str().unwrap());
            let tags = || {
                http(
                    &s.reg.addr(),
                    "GET",
                    "/v2/app/tags/list",
                    &[("Authorization", &bearer)],
                    b"",
                )
                .unwrap()
                .0
            };
            assert_eq!(tags(), 200, "{}", s.reg.log());
            std::thread::sleep(Duration::from_millis(3500));
            assert_eq!(tags(), 401, "an expired token is refused");
        }
        assert!(
            !s.reg.log_text().contains(PASS),
            "the registry or token server logged the password"
        );
    }
}

/// Reads one HTTP/1.1 response with a Content-Length body off `r`.
fn read_response(r: &mut impl io::BufRead) -> io::Result<(u16, Vec<u8>)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut len = 0usize;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok((status, body))
}

/// The proxy: counts bytes by kind and digest (a skopeo pull through it
/// streams each blob once), keeps connections alive, and injects each fault.
#[test]
fn harness_proxy_counts_and_injects_faults() {
    use std::io::{BufReader, Write};
    let im = images();
    let s = Served::new(Auth::None, &[(&im.layout, "big", "big:v1")]);
    let ls = layers(&im.layout, "big");
    // A pull through the proxy: each blob once, bytes == sizes.
    let ctx = Ctx::new();
    let dest = ctx.fresh("pulled");
    let out = run(Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{}/big:v1", s.proxy.addr()))
        .arg(format!("oci:{}:v1", dest.display())));
    assert!(
        out.status.success(),
        "{}\nproxy:\n{}",
        out.stderr,
        s.proxy.show_log()
    );
    assert_eq!(
        layer_bytes(&s.proxy, &ls),
        ls.iter().map(|l| l.size).collect::<Vec<_>>(),
        "{}",
        s.proxy.show_log()
    );
    let cfg = fixtures::config(&im.layout, "big");
    assert_eq!(s.proxy.blob_bytes().get(&cfg.digest), Some(&cfg.size));
    assert!(s.proxy.bytes(Kind::Manifest) > 0);
    s.proxy.reset();
    assert_eq!(s.proxy.requests(), 0);

    let layer = &ls[0];
    let whole = fs::read(fixtures::blob_path(&im.layout, &layer.digest)).unwrap();
    let path = format!("/v2/big/blobs/{}", layer.digest);
    let get = |range: Option<&str>| {
        let mut h = vec![];
        if let Some(r) = range {
            h.push(("Range", r));
        }
        http(&s.proxy.addr(), "GET", &path, &h, b"")
    };
    // Range, keep-alive: two requests on one connection, both answered.
    let mut c = std::net::TcpStream::connect(s.proxy.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    for (a, b) in [(0u64, 99u64), (1000, 4999)] {
        write!(
            c,
            "GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes={a}-{b}\r\n\r\n"
        )
        .unwrap();
        let (st, body) = read_response(&mut r).unwrap();
        assert_eq!(st, 206);
        assert_eq!(body, whole[a as usize..=b as usize]);
    }
    drop((c, r));
    let log = s.proxy.log();
    assert_eq!(log.len(), 2, "{}", s.proxy.show_log());
    assert!(log
        .iter()
        .all(|q| q.kind == Kind::Blob && q.digest.as_deref() == Some(&layer.digest[..])));
    assert_eq!(s.proxy.bytes(Kind::Blob), 100 + 4000);

    // IgnoreRange: 200, the whole blob.
    s.proxy.set_fault(Fault::IgnoreRange);
    let (st, _, body) = get(Some("bytes=0-99")).unwrap();
    assert_eq!((st, body.len()), (200, whole.len()));
    assert_eq!(s.proxy.log().last().unwrap().fault, Some("range stripped"));

    // CorruptBlobByte: exactly one byte differs, of the listed blobs only.
    s.proxy
        .set_fault(Fault::CorruptBlobByte(vec![layer.digest.clone()]));
    let (st, _, body) = get(Some("bytes=0-9999")).unwrap();
    assert_eq!(st, 206);
    let diff = body
        .iter()
        .zip(&whole[..10000])
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(diff, 1, "one byte flipped");
    let (_, _, cb) = http(
        &s.proxy.addr(),
        "GET",
        &format!("/v2/big/blobs/{}", cfg.digest),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(
        cb,
        fs::read(fixtures::blob_path(&im.layout, &cfg.digest)).unwrap(),
        "other blobs untouched"
    );
    // A real client notices it: skopeo's digest check fails.
    let out = run(Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{}/big:v1", s.proxy.addr()))
        .arg(format!("oci:{}:v1", ctx.fresh("pulled").display())));
    assert!(!out.status.success(), "skopeo accepted a corrupted blob");
    assert!(
        out.stderr.to_lowercase().contains("digest"),
        "{}",
        out.stderr
    );

    // Status429: once, with Retry-After, not forwarded; then served again.
    s.proxy.set_fault(Fault::Status429 { retry_after: 1 });
    let (st, hs, _) = get(Some("bytes=0-9")).unwrap();
    assert_eq!(st, 429);
    assert!(hs.iter().any(|(k, v)| k == "retry-after" && v == "1"));
    assert_eq!(s.proxy.fault(), Fault::None);
    assert_eq!(get(Some("bytes=0-9")).unwrap().0, 206);

    // Stall: no answer (the client's 10 s timeout fires); then Down: closed.
    s.proxy.set_fault(Fault::Stall);
    let mut c = std::net::TcpStream::connect(s.proxy.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let e = io::Read::read(&mut c, &mut buf);
    assert!(
        matches!(&e, Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)),
        "a stalled request got {e:?}"
    );
    assert!(t.elapsed() >= Duration::from_millis(1400));
    s.proxy.set_fault(Fault::Down);
    let r = io::Read::read(&mut c, &mut buf);
    assert!(
        matches!(r, Ok(0) | Err(_)),
        "Down closes open connections: {r:?}"
    );
    assert!(get(None).is_err(), "Down refuses new requests");
    s.proxy.set_fault(Fault::None);
    assert_eq!(get(Some("bytes=0-9")).unwrap().0, 206);
}

/// The fixtures: `big` has a multi-MB gzip layer of many files, probes in
/// it; `multi` is an index of two platforms that skopeo pushes whole
/// (`--all`) and resolves per platform from the registry.
#[test]
fn harness_fixtures_and_multi_platform_push() {
    let im = images();
    let ls = layers(&im.layout, "big");
    assert_eq!(ls.len(), 2);
    assert!(ls[0].media_type.ends_with("tar+gzip"), "{ls:?}");
    assert!(
        ls[0].size > 8 << 20,
        "the big layer: {} bytes compressed",
        ls[0].size
    );
    for p in &im.probes {
        assert!(im.rootfs("big").join(p).is_file(), "probe {p}");
    }
    let s = Served::new(Auth::None, &[]);
    s.reg.push_with(&im.layout, "multi", "multi:v1", &["--all"]);
    let raw = run(Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/multi:v1", s.proxy.addr())));
    assert!(raw.status.success(), "{}", raw.stderr);
    assert_eq!(
        tools::digest(&raw.stdout),
        fixtures::manifest_digest(&im.layout, "multi"),
        "the index lands byte for byte"
    );
    for arch in ["amd64", "arm64"] {
        let out = run(Command::new("skopeo")
            .args([
                "inspect",
                "--tls-verify=false",
                "--override-os",
                "linux",
                "--override-arch",
                arch,
            ])
            .arg(format!("docker://{}/multi:v1", s.proxy.addr())));
        assert!(out.status.success(), "{}", out.stderr);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["Architecture"], arch);
        let want: Vec<String> = layers(&im.layout, arch)
            .into_iter()
            .map(|l| l.digest)
            .collect();
        assert_eq!(
            v["Layers"],
            serde_json::json!(want),
            "{arch}: its own layers"
        );
    }
}

/// The registry restarts on the same port with the same storage (the fault
/// tests rely on it), and keeps an OCI artifact whose `subject` is an image,
/// found through the referrers tag fallback as `index --push` leaves it
/// (distribution 2.8 has no referrers API).
#[test]
fn harness_registry_restarts_and_keeps_referrers() {
    let im = images();
    let mut reg = Registry::start(Auth::None);
    reg.push(&im.layout, "amd64", "small:v1");
    reg.stop();
    assert!(
        http(&reg.addr(), "GET", "/v2/", &[], b"").is_err(),
        "still answering"
    );
    reg.restart();
    let man = fixtures::manifest_digest(&im.layout, "amd64");
    let (st, _, body) = http(
        &reg.addr(),
        "GET",
        "/v2/small/manifests/v1",
        &[("Accept", OCI_MANIFEST)],
        b"",
    )
    .unwrap();
    assert_eq!(st, 200);
    assert_eq!(tools::digest(&body), man, "the image survived the restart");

    let empty = reg.put_blob("small", b"{}");
    let payload = reg.put_blob("small", b"an index, say");
    let artifact = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.index",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/vnd.example.index.v1", "digest": payload, "size": 13}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": man, "size": fixtures::descriptor(&im.layout, "amd64")["size"]}
    }))
    .unwrap();
    let art = tools::digest(&artifact);
    reg.put_manifest("small", &art, OCI_MANIFEST, &artifact);
    let fallback = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": art, "size": artifact.len(),
                       "artifactType": "application/vnd.example.index"}]
    }))
    .unwrap();
    reg.put_manifest(
        "small",
        &man.replace(':', "-"),
        "application/vnd.oci.image.index.v1+json",
        &fallback,
    );
    let got = referrer_digests(&reg.addr(), "small", &man);
    assert_eq!(got, BTreeSet::from([art, empty, payload]));
}

/// The comparison itself, on local layouts (no registry): `unionfs mount
/// --image LAYOUT:TAG` equals `umoci unpack` of it, for each fixture the
/// registry tests push.
#[test]
fn local_layout_mount_equals_umoci_unpack() {
    let im = images();
    let ctx = Ctx::new();
    let layout = im.layout.display().to_string();
    let app = app_fixtures().join("rootfs");
    for (spec, extra, reference) in [
        (format!("{layout}:big"), vec![], im.rootfs("big")),
        (format!("{layout}:amd64"), vec![], im.rootfs("amd64")),
        (
            format!("{layout}:multi"),
            vec!["--platform", "linux/arm64"],
            im.rootfs("arm64"),
        ),
        (format!("{}:v1", fx("oci-gzip")), vec![], app.clone()),
        (format!("{}:v1", fx("oci-zstd")), vec![], app.clone()),
        (format!("{}:v1", fx("oci")), vec![], app.clone()),
    ] {
        let mnt = ctx.fresh("mnt");
        tools::mkdir(&mnt);
        let cache = ctx.cache();
        let mut args = vec!["mount", "-q", "--image", &spec, "--cache-dir", &cache];
        args.extend(&extra);
        let m = mnt.display().to_string();
        args.extend(["-o", "allow_other", &m]);
        let out = run(Command::new(tools::bin()).args(&args));
        assert!(out.status.success(), "{args:?}: {}", out.stderr);
        let _guard = Mount {
            path: mnt.clone(),
            log: PathBuf::new(),
            out,
        };
        assert_same_tree(&reference, &mnt, &spec);
    }
}

// ---------------------------------------------------------------------------
// Mounts from the registry equal umoci unpack

/// Pushes `layout:tag`, mounts it from the registry (fresh cache), compares
/// the tree with `reference`, and `ls -R --json --sha256` with the layout's.
fn registry_mount_equals_layout(layout: &Path, tag: &str, reference: &Path, what: &str) {
    client();
    let s = Served::new(Auth::None, &[(layout, tag, "img:v1")]);
    let ctx = Ctx::new();
    let sp = s.spec("img:v1");
    let m = ctx.mount(&sp, &ctx.cache(), &[]);
    assert_same_tree(
        reference,
        &m.path,
        &format!("{what} mounted from the registry"),
    );
    drop(m);
    let local = ls_json(&ctx, &format!("{}:{tag}", layout.display()), &[]);
    assert_eq!(
        ls_json(&ctx, &sp, &[]),
        local,
        "{what}: ls -R --json --sha256, registry vs layout"
    );
}

#[test]
fn mount_gzip_image_equals_umoci_unpack() {
    let root = app_fixtures().join("rootfs");
    registry_mount_equals_layout(Path::new(&fx("oci-gzip")), "v1", &root, "gzip layers");
    let im = images();
    registry_mount_equals_layout(&im.layout, "big", &im.rootfs("big"), "the big gzip image");
}

#[test]
fn mount_uncompressed_image_equals_umoci_unpack() {
    let root = app_fixtures().join("rootfs");
    let layout = PathBuf::from(fx("oci"));
    assert!(layers(&layout, "v1")
        .iter()
        .all(|l| l.media_type.ends_with(".tar")));
    registry_mount_equals_layout(&layout, "v1", &root, "uncompressed layers");
}

#[test]
fn mount_zstd_image_equals_umoci_unpack() {
    let root = app_fixtures().join("rootfs");
    let layout = PathBuf::from(fx("oci-zstd"));
    assert!(layers(&layout, "v1")
        .iter()
        .all(|l| l.media_type.ends_with("tar+zstd")));
    registry_mount_equals_layout(&layout, "v1", &root, "zstd layers");
}

/// An image index: `--platform` picks the manifest; without it, the host's.
#[test]
fn mount_multi_platform_index_by_platform() {
    client();
    let im = images();
    let s = Served::new(Auth::None, &[]);
    s.reg.push_with(&im.layout, "multi", "multi:v1", &["--all"]);
    let ctx = Ctx::new();
    let sp = s.spec("multi:v1");
    for arch in ["arm64", "amd64"] {
        let plat = format!("linux/{arch}");
        let m = ctx.mount(&sp, &ctx.cache(), &["--platform", &plat]);
        assert_same_tree(
            &im.rootfs(arch),
            &m.path,
            &format!("{sp} --platform {plat}"),
        );
    }
    let host = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        _ => return,
    };
    let m = ctx.mount(&sp, &ctx.cache(), &[]);
    assert_same_tree(
        &im.rootfs(host),
        &m.path,
        &format!("{sp} (the host's platform)"),
    );
    let layout = format!("{}:multi", im.layout.display());
    let plat = ["--platform", "linux/arm64"];
    assert_eq!(ls_json(&ctx, &sp, &plat), ls_json(&ctx, &layout, &plat));
}

// ---------------------------------------------------------------------------
// What is fetched, when

/// Without an index: the mount streams each layer blob exactly once (bytes
/// served == blob size), `unionfs index` likewise and keeps only the index;
/// afterwards a small read fetches a small share of its layer.
#[test]
fn without_index_each_blob_streams_once_then_reads_are_lazy() {
    client();
    let im = images();
    let s = Served::new(Auth::None, &[(&im.layout, "big", "big:v1")]);
    let ls = layers(&im.layout, "big");
    let sizes: Vec<u64> = ls.iter().map(|l| l.size).collect();
    let ctx = Ctx::new();
    let sp = s.spec("big:v1");

    // `unionfs index`: one pass per blob, only the index stored.
    let cache = ctx.cache();
    ctx.index(&sp, &cache).ok();
    assert_streamed_once(&s.proxy, &ls, &sizes, "index");
    let stored = du(Path::new(&cache));
    let total: u64 = sizes.iter().sum();
    assert!(
        stored < total / 4,
        "the cache holds {stored} bytes after `index` of {total} bytes of blobs: only the index belongs there"
    );

    // The mount: same, with a fresh cache.
    s.proxy.reset();
    let m = ctx.mount(&sp, &ctx.cache(), &[]);
    assert_streamed_once(&s.proxy, &ls, &sizes, "mount");
    s.proxy.reset();
    let probe = &im.probes[im.probes.len() / 2];
    m.read_ok(probe, &big_file(probe));
    let got = layer_bytes(&s.proxy, &ls)[0];
    assert!(
        (got as f64) < SMALL_READ_SHARE * ls[0].size as f64,
        "reading {probe} ({} bytes) fetched {got} of the layer's {} bytes\n{}",
        big_file(probe).len(),
        ls[0].size,
        s.proxy.show_log()
    );
    assert!(
        got > 0,
        "the read fetched nothing: are blobs kept whole locally?"
    );
}

/// Each blob was served once whole, plus at most its first 16 bytes, read
/// once before the pass to tell its encoding (gzip, zstd or tar).
fn assert_streamed_once(proxy: &Proxy, ls: &[Blob], sizes: &[u64], what: &str) {
    let got = layer_bytes(proxy, ls);
    for (g, s) in got.iter().zip(sizes) {
        assert!(
            *s <= *g && *g <= *s + 16,
            "{what}: one pass per blob: served {got:?} of blobs of {sizes:?} bytes\n{}",
            proxy.show_log()
        );
    }
}

/// Bytes of the files under `p`.
fn du(p: &Path) -> u64 {
    tools::files_of(p).values().map(|b| b.len() as u64).sum()
}

/// The referrers of `manifest` in `repo` of an anonymous registry, by the
/// OCI 1.1 referrers API or the `sha256-<hex>` tag fallback: every digest
/// they involve (artifact manifests, their configs and layers).
fn referrer_digests(addr: &str, repo: &str, manifest: &str) -> BTreeSet<String> {
    let accept = [(
        "Accept",
        "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json",
    )];
    let (st, _, body) = http(
        addr,
        "GET",
        &format!("/v2/{repo}/referrers/{manifest}"),
        &accept,
        b"",
    )
    .unwrap();
    let index: Value = if st == 200 {
        serde_json::from_slice(&body).unwrap()
    } else {
        let tag = manifest.replace(':', "-");
        let (st, _, body) = http(
            addr,
            "GET",
            &format!("/v2/{repo}/manifests/{tag}"),
            &accept,
            b"",
        )
        .unwrap();
        assert_eq!(
            st, 200,
            "no referrers of {manifest}: neither the API nor the tag {tag}"
        );
        serde_json::from_slice(&body).unwrap()
    };
    let mut out = BTreeSet::new();
    for d in index["manifests"].as_array().expect("a referrers index") {
        let dig = d["digest"].as_str().unwrap();
        out.insert(dig.to_owned());
        let (st, _, body) = http(
            addr,
            "GET",
            &format!("/v2/{repo}/manifests/{dig}"),
            &accept,
            b"",
        )
        .unwrap();
        assert_eq!(st, 200);
        let man: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(man["subject"]["digest"], manifest, "the artifact's subject");
        for b in
            std::iter::once(&man["config"]).chain(man["layers"].as_array().into_iter().flatten())
        {
            if let Some(d) = b["digest"].as_str() {
                out.insert(d.to_owned());
            }
        }
    }
    out
}

/// With the index pushed (`index --push`) and an empty cache: the mount
/// fetches manifests, the config and the index artifact, and not one byte
/// of a layer; a small read then fetches a small share of its layer.
#[test]
fn pushed_index_mount_fetches_no_layer_byte_before_a_read() {
    client();
    let im = images();
    let s = Served::new(Auth::None, &[(&im.layout, "big", "big:v1")]);
    let ls = layers(&im.layout, "big");
    let ctx = Ctx::new();
    let sp = s.spec("big:v1");
    ctx.uf(
        &[
            "index",
            "-q",
            "--image",
            &sp,
            "--push",
            "--cache-dir",
            &ctx.cache(),
        ],
        tools::CMD_TIMEOUT,
    )
    .0
    .ok();
    let man = fixtures::manifest_digest(&im.layout, "big");
    let allowed = referrer_digests(&s.reg.addr(), "big", &man);
    assert!(!allowed.is_empty(), "index --push pushed no artifact");
    for l in &ls {
        assert!(
            !allowed.contains(&l.digest),
            "the artifact names a layer of the image"
        );
    }

    s.proxy.reset();
    let m = ctx.mount(&sp, &ctx.cache(), &[]);
    let cfg = fixtures::config(&im.layout, "big");
    for r in s.proxy.log() {
        if r.kind == Kind::Blob && r.method == "GET" {
            let d = r.digest.clone().unwrap();
            assert!(
                d == cfg.digest || allowed.contains(&d),
                "the mount fetched blob {d} before any read (neither the config nor the index):\n{}",
                s.proxy.show_log()
            );
        }
    }
    assert_eq!(
        layer_bytes(&s.proxy, &ls),
        vec![0, 0],
        "{}",
        s.proxy.show_log()
    );
    assert!(
        s.proxy.bytes(Kind::Manifest) > 0,
        "no manifest fetched?\n{}",
        s.proxy.show_log()
    );

    // A listing needs no blob either; one small read, a small share.
    let names = fs::read_dir(m.p("data")).unwrap().count();
    assert!(names > 5);
    assert_eq!(
        layer_bytes(&s.proxy, &ls),
        vec![0, 0],
        "readdir fetched layer bytes"
    );
    let probe = &im.probes[im.probes.len() / 2];
    m.read_ok(probe, &big_file(probe));
    let got = layer_bytes(&s.proxy, &ls)[0];
    assert!(
        got > 0 && (got as f64) < SMALL_READ_SHARE * ls[0].size as f64,
        "reading {probe} fetched {got} of the layer's {} bytes\n{}",
        ls[0].size,
        s.proxy.show_log()
    );
}

/// The fetched-span cache is on disk and shared: a second mount with the
/// same cache dir reads a file the first one read without fetching again.
#[test]
fn second_mount_with_the_same_cache_fetches_no_span_again() {
    client();
    let im = images();
    let s = Served::new(Auth::None, &[(&im.layout, "big", "big:v1")]);
    let ls = layers(&im.layout, "big");
    let ctx = Ctx::new();
    let sp = s.spec("big:v1");
    let cache = ctx.cache();
    let probe = &im.probes[3];
    let m1 = ctx.mount(&sp, &cache, &[]);
    m1.read_ok(probe, &big_file(probe));
    s.proxy.reset();
    let m2 = ctx.mount(&sp, &cache, &[]);
    m2.read_ok(probe, &big_file(probe));
    assert_eq!(
        layer_bytes(&s.proxy, &ls),
        vec![0, 0],
        "the second mount fetched the span again\n{}",
        s.proxy.show_log()
    );
    drop(m1);
}

// ---------------------------------------------------------------------------
// Auth

/// Asserts that nothing the client printed or logged holds the password (or
/// the Basic credentials made of it).
fn assert_no_secret(what: &str, texts: &[&str]) {
    let basic = harness::base64(format!("{USER}:{PASS}").as_bytes());
    for t in texts {
        assert!(
            !t.contains(PASS),
            "{what}: the password was printed or logged:\n{t}"
        );
        assert!(
            !t.contains(&basic),
            "{what}: the Basic credentials were printed or logged:\n{t}"
        );
    }
}

/// Basic (htpasswd) auth: the mount works with the auth file's credentials.
#[test]
fn basic_auth_mount() {
    client();
    let layout = PathBuf::from(fx("oci-gzip"));
    let s = Served::new(Auth::basic(USER, PASS), &[(&layout, "v1", "app:v1")]);
    let ctx = Ctx::new().with_auth(&s.proxy.addr(), USER, PASS);
    let m = ctx.mount(&s.spec("app:v1"), &ctx.cache(), &["-vv"]);
    assert_same_tree(&app_fixtures().join("rootfs"), &m.path, "basic auth");
    assert!(
        s.proxy.log().iter().any(|r| r.status == 401),
        "the registry never challenged: is auth on?\n{}",
        s.proxy.show_log()
    );
    assert_no_secret("basic auth", &[&m.out.stderr, &m.out.text(), &m.log_text()]);
}

/// Bearer (token) auth with 3 s tokens: reads keep working across a > 4 s
/// loop, the client fetching new tokens as they expire.
#[test]
fn token_auth_mount_renews_expired_tokens() {
    client();
    let im = images();
    let s = Served::new(Auth::token(USER, PASS, 3), &[(&im.layout, "big", "big:v1")]);
    let ctx = Ctx::new().with_auth(&s.proxy.addr(), USER, PASS);
    let m = ctx.mount(&s.spec("big:v1"), &ctx.cache(), &["-vv"]);
    let before = s.reg.tokens_issued();
    assert!(before >= 1);
    let t0 = Instant::now();
    for (i, p) in im.probes.iter().enumerate() {
        m.read_ok(p, &big_file(p));
        if t0.elapsed() > Duration::from_millis(4500) && i >= 6 {
            break;
        }
        std::thread::sleep(Duration::from_millis(600));
    }
    assert!(
        t0.elapsed() > Duration::from_secs(4),
        "the loop outlived a token"
    );
    assert!(
        s.reg.tokens_issued() > before,
        "no token fetched after the first expired ({before} issued, reads after 3 s succeeded: \
         did they reach the registry?)\n{}",
        s.proxy.show_log()
    );
    assert_no_secret("token auth", &[&m.out.stderr, &m.out.text(), &m.log_text()]);
}

/// Wrong credentials: one line naming the host and "authentication", no
/// panic, no password; nothing mounted. Both auth modes; ls and mount.
#[test]
fn bad_credentials_fail_with_one_line() {
    client();
    let layout = PathBuf::from(fx("oci-gzip"));
    for auth in [Auth::basic(USER, PASS), Auth::token(USER, PASS, 60)] {
        let s = Served::new(auth.clone(), &[(&layout, "v1", "app:v1")]);
        let ctx = Ctx::new().with_auth(&s.proxy.addr(), USER, "not-the-password");
        let sp = s.spec("app:v1");
        let cache = ctx.cache();
        let (ls, t) = ctx.uf(
            &["ls", "-q", "--image", &sp, "--cache-dir", &cache, "/"],
            FAIL_FAST,
        );
        let line = one_line_error(&ls);
        assert!(t < FAIL_FAST, "{auth:?}: {t:?}");
        for want in [s.proxy.addr().as_str(), "authentication"] {
            assert!(
                line.contains(want),
                "{auth:?}: `{}`: {line:?} does not name {want:?}",
                ls.cmd
            );
        }
        let err = ctx
            .try_mount(&sp, &ctx.cache(), &[])
            .err()
            .expect("the mount must fail");
        let mline = one_line_error(&err);
        assert!(mline.contains("authentication"), "{auth:?}: mount: {mline}");
        let printed = [ls.stderr.as_str(), &ls.text(), &err.stderr, &err.text()].concat();
        assert!(
            !printed.contains("not-the-password"),
            "{auth:?}: the password was printed"
        );
    }
}

// ---------------------------------------------------------------------------
// Faults

/// Asserts that a read failed with EIO within the client's bound.
fn assert_eio_in_time(r: &io::Result<Vec<u8>>, t: Duration, what: &str) {
    let bound = Duration::from_secs(TIMEOUT_S * (RETRIES + 1)) + SLACK;
    match r {
        Ok(b) => panic!(
            "{what}: the read succeeded ({} bytes) with the registry gone",
            b.len()
        ),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{what}: {e}"),
    }
    assert!(
        t <= bound,
        "{what}: EIO after {t:?}, beyond timeout × (retries + 1) + slack = {bound:?}"
    );
}

fn fault_flags() -> [String; 4] {
    [
        "--registry-timeout".into(),
        TIMEOUT_S.to_string(),
        "--registry-retries".into(),
        RETRIES.to_string(),
    ]
}

/// The registry killed during a read loop: a read of a file not yet read
/// fails with EIO in time, the mount stays (and lists), and after the
/// registry is back the next read returns the right bytes.
#[test]
fn registry_killed_mid_read_loop_gives_eio_then_recovers() {
    client();
    let im = images();
    let mut reg = Registry::start(Auth::None);
    reg.push(&im.layout, "big", "big:v1");
    let ctx = Ctx::new();
    let flags = fault_flags();
    let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    let m = ctx.mount(&spec(&reg.addr(), "big:v1"), &ctx.cache(), &extra);
    let (first, last) = (&im.probes[0], im.probes.last().unwrap());
    m.read_ok(first, &big_file(first));
    reg.stop();
    let (r, t) = m.read(last);
    assert_eio_in_time(&r, t, &format!("/{last} with the registry killed"));
    assert!(m.alive(), "the mount died with the registry");
    assert!(
        fs::read_dir(m.p("data")).is_ok(),
        "listing needs no registry"
    );
    reg.restart();
    m.read_ok(last, &big_file(last));
    m.read_ok(&im.probes[1], &big_file(&im.probes[1]));
}

/// A registry that accepts and never answers: EIO in time; then it answers.
#[test]
fn stalled_registry_gives_eio_within_the_timeout() {
    client();
    let im = images();
    let s = Served::new(Auth::None, &[(&im.layout, "big", "big:v1")]);
    let ctx = Ctx::new();
    let flags = fault_flags();
    let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    let m = ctx.mount(&s.spec("big:v1"), &ctx.cache(), &extra);
    s.proxy.set_fault(Fault::Stall);
    let p = &im.probes[2];
    let (r, t) = m.read(p);
    assert_eio_in_time(&r, t, &format!("/{p} with the registry stalled"));
    assert!(m.alive());
    s.proxy.set_fault(Fault::None);
    m.read_ok(p, &big_file(p));
}

/// A corrupted byte in every layer response, the index already local: each
/// read either fails with EIO or returns the right bytes (never wrong ones),
/// and some fail; once the registry serves right bytes again, reads work.
#[test]
fn corrupted_byte_with_index_gives_eio_never_wrong_bytes() {
    client();
    let im = images();
    let s = Served::new(Auth::None, &[(&im.layout, "big", "big:v1")]);
    let ls = layers(&im.layout, "big");
    let ctx = Ctx::new();
    let sp = s.spec("big:v1");
    let cache = ctx.cache();
    ctx.index(&sp, &cache).ok();
    s.proxy.set_fault(Fault::CorruptBlobByte(
        ls.iter().map(|l| l.digest.clone()).collect(),
    ));
    let m = ctx.mount(&sp, &cache, &[]);
    let mut eio = 0;
    for p in &im.probes {
        let (r, _) = m.read(p);
        match r {
            Ok(b) => assert!(
                b == big_file(p),
                "/{p}: WRONG BYTES from a corrupted registry"
            ),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EIO), "/{p}: {e}");
                eio += 1;
            }
        }
    }
    assert!(
        eio > 0,
        "no read failed, yet every layer response was corrupted:\n{}",
        s.proxy.show_log()
    );
    assert!(s.proxy.log().iter().any(|r| r.fault == Some("corrupted")));
    assert!(m.alive());
    s.proxy.set_fault(Fault::None);
    for p in &im.probes {
        m.read_ok(p, &big_file(p));
    }
}

/// A corrupted byte while the index is built: `index` and `mount` fail with
/// one line naming the blob's digest and "digest"; nothing mounted.
#[test]
fn corrupted_byte_without_index_fails_naming_the_digest() {
    client();
    let im = images();
    let s = Served::new(Auth::None, &[(&im.layout, "big", "big:v1")]);
    let ls = layers(&im.layout, "big");
    let ctx = Ctx::new();
    let sp = s.spec("big:v1");
    s.proxy
        .set_fault(Fault::CorruptBlobByte(vec![ls[0].digest.clone()]));
    let cache = ctx.cache();
    let out = ctx.index(&sp, &cache);
    let line = one_line_error(&out);
    assert!(
        line.contains("digest") && line.contains(short(&ls[0].digest)),
        "index: {line}"
    );
    let err = ctx
        .try_mount(&sp, &ctx.cache(), &[])
        .err()
        .expect("the mount must fail");
    let line = one_line_error(&err);
    assert!(
        line.contains("digest") && line.contains(short(&ls[0].digest)),
        "mount: {line}"
    );
}

/// A registry that ignores Range (200, whole blob): reads are still right.
#[test]
fn registry_ignoring_range_still_reads_right() {
    client();
    let im = images();
    let s = Served::new(Auth::None, &[(&im.layout, "big", "big:v1")]);
    let ctx = Ctx::new();
    let m = ctx.mount(&s.spec("big:v1"), &ctx.cache(), &[]);
    s.proxy.set_fault(Fault::IgnoreRange);
    s.proxy.reset();
    for p in im.probes.iter().step_by(3) {
        m.read_ok(p, &big_file(p));
    }
    assert!(
        s.proxy
            .log()
            .iter()
            .any(|r| r.fault == Some("range stripped") && r.status == 200),
        "no Range request was answered whole: did the reads reach the registry?\n{}",
        s.proxy.show_log()
    );
}

/// 429 with Retry-After: 1: the read waits, retries, and succeeds.
#[test]
fn rate_limit_429_is_honoured() {
    client();
    let im = images();
    let s = Served::new(Auth::None, &[(&im.layout, "big", "big:v1")]);
    let ctx = Ctx::new();
    let m = ctx.mount(&s.spec("big:v1"), &ctx.cache(), &[]);
    s.proxy.reset();
    s.proxy.set_fault(Fault::Status429 { retry_after: 1 });
    let p = &im.probes[4];
    let t = m.read_ok(p, &big_file(p));
    let log = s.proxy.log();
    let hit = log.iter().position(|r| r.status == 429).unwrap_or_else(|| {
        panic!(
            "the read sent no blob request (span cached?):\n{}",
            s.proxy.show_log()
        )
    });
    let retry = log[hit + 1..]
        .iter()
        .find(|r| r.kind == Kind::Blob && (200..300).contains(&r.status))
        .unwrap_or_else(|| panic!("no retry after the 429:\n{}", s.proxy.show_log()));
    assert!(
        retry.at.duration_since(log[hit].at) >= Duration::from_millis(950)
            && t >= Duration::from_secs(1),
        "retried {:?} after a 429 asking for 1 s (read took {t:?})",
        retry.at.duration_since(log[hit].at)
    );
}

/// A tag the registry lacks, a blob missing from its storage, a closed
/// port: one line naming the reference (or blob), in bounded time, nothing
/// mounted.
#[test]
fn missing_tag_blob_and_host_fail_clearly() {
    client();
    let im = images();
    let s = Served::new(Auth::None, &[(&im.layout, "big", "big:v1")]);
    let ctx = Ctx::new();
    let flags = fault_flags();
    let run_ls = |sp: &str| {
        let cache = ctx.cache();
        let mut args = vec!["ls", "-q", "--image", sp, "--cache-dir", &cache];
        args.extend(flags.iter().map(String::as_str));
        args.push("/");
        let (out, t) = ctx.uf(&args, FAIL_FAST + Duration::from_secs(30));
        assert!(t < FAIL_FAST, "`{}` took {t:?}", out.cmd);
        one_line_error(&out)
    };
    // 404 for the tag.
    let reference = format!("{}/big:nope", s.proxy.addr());
    let line = run_ls(&format!("docker://{reference}"));
    assert!(
        line.contains(&reference),
        "a missing tag: {line:?} does not name {reference}"
    );
    // A closed port.
    let dead = format!("127.0.0.1:{}/big:v1", free_port());
    let line = run_ls(&format!("docker://{dead}"));
    assert!(
        line.contains(&dead),
        "a closed port: {line:?} does not name {dead}"
    );
    // A blob deleted from the registry's storage (the manifest still names it).
    let ls = layers(&im.layout, "big");
    let data = s.reg.blob_data(&ls[1].digest);
    fs::remove_dir_all(data.parent().unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", data.display()));
    let (st, _, _) = http(
        &s.reg.addr(),
        "GET",
        &format!("/v2/big/blobs/{}", ls[1].digest),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(st, 404, "the registry still serves the deleted blob");
    let sp = s.spec("big:v1");
    let cache = ctx.cache();
    let mut args = vec!["index", "-q", "--image", &sp, "--cache-dir", &cache];
    args.extend(flags.iter().map(String::as_str));
    let (out, t) = ctx.uf(&args, FAIL_FAST + Duration::from_secs(30));
    assert!(t < FAIL_FAST, "`{}` took {t:?}", out.cmd);
    let line = one_line_error(&out);
    assert!(
        line.contains(short(&ls[1].digest)),
        "a missing blob: {line:?} does not name it"
    );
    let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    let err = ctx
        .try_mount(&sp, &ctx.cache(), &extra)
        .err()
        .expect("the mount must fail");
    let line = one_line_error(&err);
    assert!(
        line.contains(short(&ls[1].digest)),
        "mount, a missing blob: {line:?}"
    );
}
