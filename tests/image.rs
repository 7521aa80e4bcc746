//! Images as users hold them (`--image`): archives and layouts written here
//! byte by byte, in each form docker, skopeo and OCI tools use, then opened
//! through the library as `unionfs mount --image` opens them. Each error an
//! image can have is a case: a one-line message naming the archive and the
//! blob, and nothing opened.
//!
//! (Images written by the real tools — umoci, skopeo, docker — are compared
//! with `umoci unpack` through real mounts in `fuse-tests/tests/image.rs`.)

mod util;

use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};
use unionfs::image::{Image, ImageRef, PlatformChoice};
use unionfs::layers::{self, Source};
use unionfs::tar::IndexOptions;
use util::Tar;

fn sha(b: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(b))
}

fn hex(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap()
}

/// Three layers: a base, an app layer that deletes a base file, a fix.
fn sample_layers() -> Vec<Vec<u8>> {
    vec![
        Tar::new()
            .dir("etc")
            .file("etc/motd", b"base motd\n")
            .file("etc/passwd", b"root:x:0:0\n")
            .dir("bin")
            .file("bin/sh", b"#!sh\n")
            .finish(),
        Tar::new()
            .file("etc/.wh.motd", b"")
            .file("app/run", b"run\n")
            .finish(),
        Tar::new().file("app/run", b"run v2\n").finish(),
    ]
}

fn config(layers: &[Vec<u8>]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha(l)).collect();
    json!({"architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
           "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}})
    .to_string()
    .into_bytes()
}

/// An archive of `files` (path, bytes) and symlinks (path -> target).
fn archive(files: &[(String, Vec<u8>)], links: &[(String, String)]) -> Vec<u8> {
    let mut t = Tar::new();
    for (p, b) in files {
        t.file(p, b);
    }
    for (p, target) in links {
        t.symlink(p, target);
    }
    t.finish()
}

/// A docker-archive as skopeo writes it: layers at `<hex>.tar`, the config at
/// `<hex>.json`, and (with `legacy_links`) `<id>/layer.tar` symlinks that
/// `manifest.json` names.
fn docker_archive(images: &[(&[Vec<u8>], &[&str])], legacy_links: bool) -> Vec<u8> {
    let mut files = Vec::new();
    let mut links = Vec::new();
    let mut manifest = Vec::new();
    for (layers, tags) in images {
        let cfg = config(layers);
        let cfg_name = format!("{}.json", hex(&sha(&cfg)));
        let mut paths = Vec::new();
        for (i, l) in layers.iter().enumerate() {
            let name = format!("{}.tar", hex(&sha(l)));
            if !files.iter().any(|(n, _)| *n == name) {
                files.push((name.clone(), l.clone()));
            }
            if legacy_links {
                let id = format!("{:064x}", i + 1);
                links.push((format!("{id}/layer.tar"), format!("../{name}")));
                paths.push(format!("{id}/layer.tar"));
            } else {
                paths.push(name);
            }
        }
        files.push((cfg_name.clone(), cfg));
        manifest.push(json!({"Config": cfg_name, "RepoTags": tags, "Layers": paths}));
    }
    files.push((
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    ));
    archive(&files, &links)
}

/// An OCI layout (as files: path, bytes) for `layers`, tagged `tag`;
/// returns the files and the manifest digest.
fn oci_files(layers: &[Vec<u8>], tag: &str) -> (Vec<(String, Vec<u8>)>, String) {
    let mut files = vec![(
        "oci-layout".to_string(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    )];
    let cfg = config(layers);
    let mut descs = Vec::new();
    for l in layers {
        descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(l), "size": l.len()}));
        files.push((format!("blobs/sha256/{}", hex(&sha(l))), l.clone()));
    }
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&cfg), "size": cfg.len()},
        "layers": descs})
    .to_string()
    .into_bytes();
    let md = sha(&manifest);
    files.push((format!("blobs/sha256/{}", hex(&sha(&cfg))), cfg));
    files.push((format!("blobs/sha256/{}", hex(&md)), manifest.clone()));
    let index = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": md, "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    files.push(("index.json".into(), index.to_string().into_bytes()));
    (files, md)
}

fn write_dir(dir: &Path, files: &[(String, Vec<u8>)]) {
    for (p, b) in files {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b).unwrap();
    }
}

struct Env {
    dir: tempfile::TempDir,
    opts: IndexOptions,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let opts = IndexOptions {
            cache_dir: Some(dir.path().join("cache")),
            ..IndexOptions::default()
        };
        Env { dir, opts }
    }
    fn put(&self, name: &str, bytes: &[u8]) -> PathBuf {
        util::write_tar(self.dir.path(), name, bytes)
    }
    fn spec(&self, name: &str, reference: &str) -> String {
        let p = self.dir.path().join(name);
        if reference.is_empty() {
            p.display().to_string()
        } else {
            format!("{}:{reference}", p.display())
        }
    }
    fn open(&self, spec: &str) -> unionfs::Result<Image> {
        self.open_platform(spec, None)
    }
    fn open_platform(&self, spec: &str, platform: Option<&str>) -> unionfs::Result<Image> {
        Image::open(
            &ImageRef::parse(spec)?,
            &PlatformChoice::new(platform)?,
            &self.opts,
        )
    }
    /// The merged tree of `spec`, one line per path: path, and file content.
    fn tree(&self, spec: &str) -> Vec<String> {
        let src = Source::Image {
            image: ImageRef::parse(spec).unwrap(),
            platform: None,
        };
        let (stack, _) = layers::open(&src, &self.opts).unwrap();
        let mut out = Vec::new();
        let mut todo = vec![(b"".to_vec(), stack.root())];
        while let Some((p, m)) = todo.pop() {
            let rec = stack.rec(m.top);
            let mut line = String::from_utf8_lossy(&p).into_owned();
            if rec.kind() == libc::S_IFREG {
                let mut buf = vec![0u8; stack.meta(m.top).size as usize];
                stack
                    .layer(m.top.layer)
                    .read(m.top.entry, 0, &mut buf)
                    .unwrap();
                line += &format!(" = {}", String::from_utf8_lossy(&buf).trim_end());
            }
            out.push(line);
            if m.is_dir() {
                for d in stack.read_dir(&m) {
                    let name = stack.name(d.entry).to_vec();
                    let child = stack.lookup(&m, &name).unwrap();
                    let mut cp = p.clone();
                    cp.push(b'/');
                    cp.extend_from_slice(&name);
                    todo.push((cp, child));
                }
            }
        }
        out.sort();
        out
    }
    fn err(&self, spec: &str) -> String {
        self.err_platform(spec, None)
    }
    fn err_platform(&self, spec: &str, platform: Option<&str>) -> String {
        match self
            .open_platform(spec, platform)
            .and_then(|img| img.open_layers(&self.opts).map(|_| img))
        {
            Ok(img) => panic!("{spec} opened: {img:?}"),
            Err(e) => {
                let msg = e.to_string();
                assert!(!msg.contains('\n'), "one line: {msg}");
                msg
            }
        }
    }
}

fn expected_tree() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        "/app",
        "/app/run = run v2",
        "/bin",
        "/bin/sh = #!sh",
        "/etc",
        "/etc/passwd = root:x:0:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.sort();
    v
}

#[test]
fn docker_archive_with_layer_symlinks_is_served_in_place() {
    let e = Env::new();
    let layers = sample_layers();
    e.put(
        "img.tar",
        &docker_archive(&[(&layers, &["example/app:v1"])], true),
    );
    assert_eq!(e.tree(&e.spec("img.tar", "")), expected_tree());
    let img = e.open(&e.spec("img.tar", "")).unwrap();
    assert_eq!(img.names, ["example/app:v1"]);
    assert_eq!(img.layers.len(), 3);
    // In place: each layer is a range of the archive, nothing was copied.
    for (l, bytes) in img.layers.iter().zip(&layers) {
        assert_eq!(l.size, bytes.len() as u64);
        assert_eq!(l.diff_id, sha(bytes));
        assert!(
            l.name.display().to_string().contains("img.tar:"),
            "{}",
            l.name.display()
        );
    }
    let cache: Vec<_> = std::fs::read_dir(e.dir.path().join("cache"))
        .unwrap()
        .map(|d| d.unwrap().file_name())
        .collect();
    let stored: u64 = walk_size(&e.dir.path().join("cache"));
    assert!(
        stored < 64 << 10,
        "the cache holds indexes only: {stored} bytes in {cache:?}"
    );
}

fn walk_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .unwrap()
        .map(|d| {
            let d = d.unwrap();
            let m = d.metadata().unwrap();
            if m.is_dir() {
                walk_size(&d.path())
            } else {
                m.len()
            }
        })
        .sum()
}

#[test]
fn oci_layout_and_oci_archive_give_the_same_tree() {
    let e = Env::new();
    let (files, _) = oci_files(&sample_layers(), "v1");
    write_dir(&e.dir.path().join("layout"), &files);
    e.put("oci.tar", &archive(&files, &[]));
    assert_eq!(e.tree(&e.spec("layout", "")), expected_tree());
    assert_eq!(e.tree(&e.spec("layout", "v1")), expected_tree());
    assert_eq!(e.tree(&e.spec("oci.tar", "v1")), expected_tree());
}

#[test]
fn docker_25_archive_has_both_index_json_and_manifest_json() {
    let e = Env::new();
    let layers = sample_layers();
    let (mut files, md) = oci_files(&layers, "v1");
    let cfg = config(&layers);
    let manifest = json!([{"Config": format!("blobs/sha256/{}", hex(&sha(&cfg))),
        "RepoTags": ["example/app:v1"],
        "Layers": layers.iter().map(|l| format!("blobs/sha256/{}", hex(&sha(l)))).collect::<Vec<_>>()}]);
    files.push(("manifest.json".into(), manifest.to_string().into_bytes()));
    e.put("d25.tar", &archive(&files, &[]));
    let img = e.open(&e.spec("d25.tar", "example/app:v1")).unwrap();
    assert_eq!(img.manifest_digest.as_deref(), Some(md.as_str()));
    assert!(
        img.names.contains(&"v1".to_string()) && img.names.contains(&"example/app:v1".to_string())
    );
    assert_eq!(e.tree(&e.spec("d25.tar", "")), expected_tree());
}

#[test]
fn containerd_export_picks_the_platform_and_tolerates_absent_blobs() {
    let e = Env::new();
    let layers = sample_layers();
    let (mut files, md) = oci_files(&layers, "v1");
    files.retain(|(p, _)| p != "index.json");
    let host = unionfs::image::spec::host_platform();
    let other = if host.architecture == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let absent = format!("sha256:{}", "e".repeat(64));
    let attest = format!("sha256:{}", "f".repeat(64));
    let nested = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": absent, "size": 10,
         "platform": {"os": "linux", "architecture": other}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": 10,
         "platform": {"os": "linux", "architecture": host.architecture}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": attest, "size": 10,
         "platform": {"os": "unknown", "architecture": "unknown"},
         "annotations": {"vnd.docker.reference.type": "attestation-manifest"}}]})
    .to_string()
    .into_bytes();
    let nd = sha(&nested);
    files.push((format!("blobs/sha256/{}", hex(&nd)), nested.clone()));
    let index = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": nd, "size": nested.len(),
        "annotations": {"io.containerd.image.name": "docker.io/example/app:v1", "org.opencontainers.image.ref.name": "v1"}}]});
    files.push(("index.json".into(), index.to_string().into_bytes()));
    e.put("ctr.tar", &archive(&files, &[]));
    assert_eq!(
        e.tree(&e.spec("ctr.tar", "example/app:v1")),
        expected_tree()
    );
    let msg = e.err(&e.spec("ctr.tar", &format!("@sha256:{}", "0".repeat(64))));
    assert!(
        msg.contains("has no image") && msg.contains("docker.io/example/app:v1"),
        "{msg}"
    );
    let img = e.open(&e.spec("ctr.tar", &format!("@{nd}"))).unwrap();
    assert_eq!(img.manifest_digest.as_deref(), Some(md.as_str()));
    let msg = e.err_platform(&e.spec("ctr.tar", ""), Some(&format!("linux/{other}")));
    assert!(
        msg.contains(&absent) && msg.contains("missing") && msg.contains(other),
        "{msg}"
    );
    let msg = e.err_platform(&e.spec("ctr.tar", ""), Some("linux/s390x"));
    assert!(
        msg.contains("no manifest for linux/s390x") && msg.contains(other),
        "{msg}"
    );
}

#[test]
fn references_choose_among_several_images_and_list_them_when_ambiguous() {
    let e = Env::new();
    let layers = sample_layers();
    e.put(
        "multi.tar",
        &docker_archive(
            &[
                (&layers, &["example/app:v1"]),
                (&layers[..2], &["example/other:v2", "example/other:latest"]),
            ],
            true,
        ),
    );
    let msg = e.err(&e.spec("multi.tar", ""));
    assert!(
        msg.contains("example/app:v1")
            && msg.contains("example/other:v2")
            && msg.contains("PATH:REF"),
        "{msg}"
    );
    assert_eq!(e.open(&e.spec("multi.tar", "v2")).unwrap().layers.len(), 2);
    assert_eq!(
        e.open(&e.spec("multi.tar", "example/app:v1"))
            .unwrap()
            .layers
            .len(),
        3
    );
    assert_eq!(
        e.open(&e.spec("multi.tar", "docker.io/example/other"))
            .unwrap()
            .layers
            .len(),
        2
    );
    let id = e.open(&e.spec("multi.tar", "v1")).unwrap().config_digest;
    assert_eq!(
        e.open(&e.spec("multi.tar", &format!("@{id}")))
            .unwrap()
            .layers
            .len(),
        3
    );
    let msg = e.err(&e.spec("multi.tar", "v9"));
    assert!(
        msg.contains("no image \"v9\"") && msg.contains("example/other:latest"),
        "{msg}"
    );
    // A path with ':' in its name still works: an existing path wins.
    std::fs::copy(e.dir.path().join("multi.tar"), e.dir.path().join("a:b.tar")).unwrap();
    assert_eq!(e.open(&e.spec("a:b.tar", "v2")).unwrap().layers.len(), 2);
}

#[test]
fn symlinks_leaving_the_archive_are_errors_never_host_files() {
    let e = Env::new();
    let layers = sample_layers();
    let mut files = Vec::new();
    let cfg = config(&layers[..1]);
    files.push(("c.json".to_string(), cfg));
    files.push((
        "manifest.json".into(),
        json!([{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["l/layer.tar"]}])
            .to_string()
            .into_bytes(),
    ));
    e.put(
        "up.tar",
        &archive(&files, &[("l/layer.tar".into(), "../../etc/passwd".into())]),
    );
    let msg = e.err(&e.spec("up.tar", ""));
    assert!(
        msg.contains("up.tar:l/layer.tar") && msg.contains("leads out of the archive"),
        "{msg}"
    );
    e.put(
        "abs.tar",
        &archive(&files, &[("l/layer.tar".into(), "/etc/passwd".into())]),
    );
    let msg = e.err(&e.spec("abs.tar", ""));
    assert!(msg.contains("absolute path /etc/passwd"), "{msg}");
    let mut bad = files.clone();
    bad[1].1 = json!([{"Config": "c.json", "Layers": ["../etc/passwd"]}])
        .to_string()
        .into_bytes();
    e.put("path.tar", &archive(&bad, &[]));
    let msg = e.err(&e.spec("path.tar", ""));
    assert!(msg.contains("leads out of the archive"), "{msg}");
}

#[test]
fn a_layer_that_does_not_match_its_diff_id_is_refused_and_not_indexed() {
    let e = Env::new();
    let layers = sample_layers();
    let mut arch = docker_archive(&[(&layers, &["x:1"])], false);
    // Flip a byte of the base layer's file data (not a header: the tar
    // stays valid, only the digest tells).
    let at = find(&arch, b"base motd").unwrap();
    arch[at] = b'B';
    e.put("bad.tar", &arch);
    let msg = e.err(&e.spec("bad.tar", ""));
    assert!(
        msg.contains(&format!("bad.tar:{}.tar", hex(&sha(&layers[0]))))
            && msg.contains("digest mismatch")
            && msg.contains("diffID"),
        "{msg}"
    );
    let stored = std::fs::read_dir(e.dir.path().join("cache"))
        .unwrap()
        .any(|d| {
            d.unwrap()
                .file_name()
                .to_string_lossy()
                .contains(hex(&sha(&layers[0])))
        });
    assert!(
        !stored,
        "no index is stored for a layer that failed its digest"
    );
}

#[test]
fn a_shared_layer_is_indexed_once_but_each_archive_is_checked() {
    let e = Env::new();
    let layers = sample_layers();
    e.put("a.tar", &docker_archive(&[(&layers, &["a:1"])], false));
    e.put("b.tar", &docker_archive(&[(&layers[..1], &["b:1"])], true));
    let open = |name: &str| {
        let img = e.open(&e.spec(name, "")).unwrap();
        img.open_layers(&e.opts).unwrap()
    };
    assert!(open("a.tar").iter().all(|l| l.source.built));
    assert!(
        open("a.tar").iter().all(|l| !l.source.built),
        "second mount: indexes loaded"
    );
    assert!(
        !open("b.tar")[0].source.built,
        "the base layer's index is shared"
    );
    // A rewritten archive whose base layer no longer matches its diffID is
    // caught although the index is cached.
    let mut arch = docker_archive(&[(&layers[..1], &["b:1"])], true);
    let at = find(&arch, b"base motd").unwrap();
    arch[at] = b'X';
    std::thread::sleep(std::time::Duration::from_millis(20));
    e.put("b.tar", &arch);
    assert!(e.err(&e.spec("b.tar", "")).contains("digest mismatch"));
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn broken_images_get_one_line_naming_the_archive_and_the_blob() {
    let e = Env::new();
    let layers = sample_layers();
    // Config lists one diffID fewer than manifest.json lists layers.
    let cfg = config(&layers[..2]);
    let mut files = vec![(format!("{}.json", hex(&sha(&cfg))), cfg.clone())];
    for l in &layers {
        files.push((format!("{}.tar", hex(&sha(l))), l.clone()));
    }
    let names: Vec<String> = layers
        .iter()
        .map(|l| format!("{}.tar", hex(&sha(l))))
        .collect();
    let m = |layers: &[String]| {
        json!([{"Config": format!("{}.json", hex(&sha(&cfg))), "Layers": layers}])
            .to_string()
            .into_bytes()
    };
    let mut f1 = files.clone();
    f1.push(("manifest.json".into(), m(&names)));
    e.put("count.tar", &archive(&f1, &[]));
    let msg = e.err(&e.spec("count.tar", ""));
    assert!(
        msg.contains("count.tar:manifest.json")
            && msg.contains("lists 3 layers")
            && msg.contains("has 2"),
        "{msg}"
    );
    // A layer manifest.json names that is not in the archive.
    let mut f2 = files.clone();
    f2.push((
        "manifest.json".into(),
        m(&[names[0].clone(), "gone.tar".into()]),
    ));
    e.put("missing.tar", &archive(&f2, &[]));
    let msg = e.err(&e.spec("missing.tar", ""));
    assert!(
        msg.contains("missing.tar") && msg.contains("gone.tar") && msg.contains("lacks"),
        "{msg}"
    );
    // A config whose content does not match the digest its name says.
    let mut f3 = files.clone();
    f3[0].1 = config(&layers);
    f3.push(("manifest.json".into(), m(&names[..2])));
    e.put("cfg.tar", &archive(&f3, &[]));
    let msg = e.err(&e.spec("cfg.tar", ""));
    assert!(
        msg.contains("cfg.tar:") && msg.contains("does not match"),
        "{msg}"
    );
    // Not an image at all.
    e.put("plain.tar", &layers[0]);
    let msg = e.err(&e.spec("plain.tar", ""));
    assert!(
        msg.contains("is not an image") && msg.contains("--layers"),
        "{msg}"
    );
}

#[test]
fn oci_errors_name_the_blob() {
    let e = Env::new();
    let layers = sample_layers();
    let (files, md) = oci_files(&layers, "v1");
    // A manifest blob whose content does not match its digest.
    let mut f = files.clone();
    for (p, b) in f.iter_mut() {
        if p.ends_with(hex(&md)) {
            b.push(b' ');
        }
    }
    e.put("tampered.tar", &archive(&f, &[]));
    let msg = e.err(&e.spec("tampered.tar", ""));
    assert!(
        msg.contains(&format!("tampered.tar:blobs/sha256/{}", hex(&md)))
            && msg.contains("does not match its digest"),
        "{msg}"
    );
    // An unknown layer media type, and a missing layer blob.
    let swap = |from: &str, to: &str, drop_layer: bool| -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        let mut new_md = String::new();
        for (p, b) in &files {
            if p.ends_with(hex(&md)) {
                let s = String::from_utf8(b.clone()).unwrap().replace(from, to);
                new_md = sha(s.as_bytes());
                out.push((format!("blobs/sha256/{}", hex(&new_md)), s.into_bytes()));
            } else if drop_layer && p.ends_with(hex(&sha(&layers[1]))) {
            } else if p != "index.json" {
                out.push((p.clone(), b.clone()));
            }
        }
        let index = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": new_md, "size": 1}]});
        out.push(("index.json".into(), index.to_string().into_bytes()));
        out
    };
    e.put(
        "mt.tar",
        &archive(
            &swap("image.layer.v1.tar\"", "image.layer.v1.squashfs\"", false),
            &[],
        ),
    );
    let msg = e.err(&e.spec("mt.tar", ""));
    assert!(
        msg.contains("squashfs") && msg.contains("not a layer type"),
        "{msg}"
    );
    e.put("gone.tar", &archive(&swap("", "", true), &[]));
    let msg = e.err(&e.spec("gone.tar", ""));
    assert!(
        msg.contains(&sha(&layers[1])) && msg.contains("is missing"),
        "{msg}"
    );
}

#[test]
fn an_image_archive_given_as_a_layer_is_refused() {
    let e = Env::new();
    let p = e.put(
        "img.tar",
        &docker_archive(&[(&sample_layers(), &["x:1"])], true),
    );
    let err = layers::open(&Source::Layers(vec![p.clone()]), &e.opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("docker save archive") && err.contains(&format!("--image {}", p.display())),
        "{err}"
    );
    let (files, _) = oci_files(&sample_layers(), "v1");
    let p = e.put("oci.tar", &archive(&files, &[]));
    let err = layers::open(&Source::Layers(vec![p]), &e.opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("OCI archive") && err.contains("--image"),
        "{err}"
    );
}

#[test]
fn a_layer_listed_twice_is_indexed_safely_in_parallel() {
    // Docker images repeat the empty layer (1024 zero bytes) for metadata-only
    // steps: the same blob, indexed by two threads at once, must store one
    // good index.
    let e = Env::new();
    let empty = vec![0u8; 1024];
    let base = sample_layers().remove(0);
    let layers = vec![base, empty.clone(), empty.clone(), empty];
    e.put("empty.tar", &docker_archive(&[(&layers, &["x:1"])], false));
    for _ in 0..2 {
        let img = e.open(&e.spec("empty.tar", "")).unwrap();
        let opened = img.open_layers(&e.opts).unwrap();
        assert_eq!(opened.len(), 4);
        assert!(
            opened[1..].iter().all(|l| l.index.entries.len() == 1),
            "only a root"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(e.dir.path().join("cache"))
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
