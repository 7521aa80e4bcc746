//! The images of the registry tests that `tools/image-fixtures` lacks, built
//! once per test process with umoci into one OCI layout:
//! - `big`: two gzip layers (umoci's), ~24 MiB of varied files in the first
//!   (text and random bytes: gzip needs several checkpoints to cross it), a
//!   second that rewrites, deletes (a file and a directory: whiteouts) and
//!   adds; small "probe" files spread through the first layer in tar order;
//! - `amd64`, `arm64`: one small layer each, configs of those architectures;
//! - `multi`: an image index (written here) naming both, with platforms.
//!
//! Each tag's reference tree is `umoci unpack` of it (as root: owners kept).
//! Knows nothing of registries or unionfs.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::tools::{digest, euid, mkdir, run, work_root};
use crate::util::Rng;

/// Files of the big layer, and every how-many-th is a small probe.
const FILES: usize = 360;
const PROBE_EVERY: usize = 24;
/// Files per directory of the big layer.
const PER_DIR: usize = 30;

/// The layout and what the tests need to know of it.
pub struct Images {
    /// The OCI layout (tags `big`, `amd64`, `arm64`, `multi`).
    pub layout: PathBuf,
    /// Small files of `big`'s first layer, in tar order (paths relative to
    /// the root), none of them changed by the second layer.
    pub probes: Vec<String>,
    dir: PathBuf,
}

/// A blob a manifest names.
#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

impl Images {
    /// The reference tree of `tag`: umoci's unpack of it.
    pub fn rootfs(&self, tag: &str) -> PathBuf {
        self.dir.join(format!("ref-{tag}/rootfs"))
    }
}

/// The images, built on first use (needs root: umoci keeps owners).
pub fn images() -> &'static Images {
    static I: OnceLock<Images> = OnceLock::new();
    I.get_or_init(build)
}

fn umoci(args: &[&str]) {
    let out = run(Command::new("umoci").args(args));
    assert!(
        out.status.success(),
        "umoci {} failed (apt-get install umoci):\n{}",
        args.join(" "),
        out.stderr
    );
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

/// `n` bytes: runs of words from a fixed vocabulary (gzip gets ~3:1) and of
/// random bytes (incompressible), about 70:30.
fn content(rng: &mut Rng, n: usize, vocab: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 64);
    while out.len() < n {
        if rng.chance(30) {
            let k = 256 + rng.below(4096) as usize;
            out.extend(rng.bytes(k));
        } else {
            for _ in 0..(20 + rng.below(200)) {
                out.extend_from_slice(rng.pick(vocab).as_bytes());
                out.push(if rng.chance(10) { b'\n' } else { b' ' });
            }
        }
    }
    out.truncate(n);
    out
}

fn vocabulary(rng: &mut Rng) -> Vec<String> {
    (0..2000)
        .map(|_| {
            let len = 2 + rng.below(10) as usize;
            (0..len)
                .map(|_| (b'a' + rng.below(26) as u8) as char)
                .collect()
        })
        .collect()
}

/// The path of file `i` of the big layer (zero-padded: tar order = `i` order).
fn big_file(i: usize) -> String {
    let ext = if i % PROBE_EVERY == PROBE_EVERY / 2 {
        "txt"
    } else if i.is_multiple_of(3) {
        "bin"
    } else {
        "dat"
    };
    format!("data/d{:02}/f{i:04}.{ext}", i / PER_DIR)
}

fn build() -> Images {
    assert_eq!(
        euid(),
        0,
        "the registry tests need root (umoci keeps owners; mounts)"
    );
    let dir = work_root().join("registry-fixtures");
    let _ = fs::remove_dir_all(&dir);
    mkdir(&dir);
    let layout = dir.join("layout");
    let l = s(&layout);
    umoci(&["init", "--layout", &l]);

    // big, layer 1: the data files, a few of every kind of entry.
    umoci(&["new", "--image", &format!("{l}:big")]);
    let bundle = dir.join("bundle-big");
    umoci(&["unpack", "--image", &format!("{l}:big"), &s(&bundle)]);
    let root = bundle.join("rootfs");
    let mut rng = Rng::new(14);
    let vocab = vocabulary(&mut rng);
    let mut probes = Vec::new();
    for i in 0..FILES {
        let rel = big_file(i);
        let size = if rel.ends_with(".txt") {
            probes.push(rel.clone());
            2000 + rng.below(3000) as usize
        } else {
            16 * 1024 + rng.below(112 * 1024) as usize
        };
        write(&root, &rel, &content(&mut rng, size, &vocab));
    }
    write(
        &root,
        "etc/os-release",
        b"NAME=registry-fixture\nID=unionfs\n",
    );
    write(&root, "etc/secret", b"only root\n");
    fs::set_permissions(root.join("etc/secret"), fs::Permissions::from_mode(0o600)).unwrap();
    write(&root, "home/user/notes", b"owned by 1000\n");
    std::os::unix::fs::chown(root.join("home/user"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::chown(root.join("home/user/notes"), Some(1000), Some(1000)).unwrap();
    write(&root, "empty", b"");
    symlink("../etc/os-release", root.join("data/os-release")).unwrap();
    fs::hard_link(
        root.join("etc/os-release"),
        root.join("etc/os-release.hard"),
    )
    .unwrap();
    umoci(&[
        "repack",
        "--refresh-bundle",
        "--image",
        &format!("{l}:big"),
        &s(&bundle),
    ]);

    // big, layer 2: a rewrite, a deleted file and a deleted directory, an addition.
    let changed = big_file(5);
    write(&root, &changed, b"rewritten by layer 2\n");
    fs::remove_file(root.join(big_file(100))).unwrap();
    let gone_dir = root.join(format!("data/d{:02}", (FILES - 1) / PER_DIR));
    probes.retain(|p| !root.join(p).starts_with(&gone_dir) && *p != changed);
    fs::remove_dir_all(&gone_dir).unwrap();
    write(&root, "app/VERSION", b"2\n");
    umoci(&["repack", "--image", &format!("{l}:big"), &s(&bundle)]);
    let _ = fs::remove_dir_all(&bundle);

    // One small image per platform.
    for arch in ["amd64", "arm64"] {
        let img = format!("{l}:{arch}");
        umoci(&["new", "--image", &img]);
        umoci(&[
            "config",
            "--image",
            &img,
            "--os",
            "linux",
            "--architecture",
            arch,
        ]);
        let b = dir.join(format!("bundle-{arch}"));
        umoci(&["unpack", "--image", &img, &s(&b)]);
        let r = b.join("rootfs");
        write(&r, "platform", format!("linux/{arch}\n").as_bytes());
        write(&r, "etc/hostname", format!("{arch}-box\n").as_bytes());
        write(
            &r,
            &format!("usr/lib/{arch}/libc.so"),
            &content(&mut rng, 40_000, &vocab),
        );
        umoci(&["repack", "--image", &img, &s(&b)]);
        let _ = fs::remove_dir_all(&b);
    }
    write_multi_index(&layout, "multi", &[("amd64", "amd64"), ("arm64", "arm64")]);

    for tag in ["big", "amd64", "arm64"] {
        umoci(&[
            "unpack",
            "--image",
            &format!("{l}:{tag}"),
            &s(&dir.join(format!("ref-{tag}"))),
        ]);
    }
    assert!(probes.len() >= 10, "probes: {probes:?}");
    Images {
        layout,
        probes,
        dir,
    }
}

/// Adds tag `tag` to the layout: an image index naming the manifests of
/// `(tag, architecture)` with their linux platforms.
fn write_multi_index(layout: &Path, tag: &str, images: &[(&str, &str)]) {
    let manifests: Vec<Value> = images
        .iter()
        .map(|(t, arch)| {
            let d = descriptor(layout, t);
            json!({
                "mediaType": d["mediaType"], "digest": d["digest"], "size": d["size"],
                "platform": {"architecture": arch, "os": "linux"}
            })
        })
        .collect();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests
    }))
    .unwrap();
    let dig = digest(&index);
    fs::write(blob_path(layout, &dig), &index).unwrap();
    let p = layout.join("index.json");
    let mut top: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    top["manifests"].as_array_mut().unwrap().push(json!({
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": dig, "size": index.len(),
        "annotations": {"org.opencontainers.image.ref.name": tag}
    }));
    fs::write(&p, serde_json::to_vec(&top).unwrap()).unwrap();
}

/// Where a layout keeps blob `digest`.
pub fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").expect("sha256 digest"))
}

/// The parsed JSON blob `digest` of a layout.
pub fn blob_json(layout: &Path, digest: &str) -> Value {
    let p = blob_path(layout, digest);
    serde_json::from_slice(&fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The index.json descriptor of `tag` in a layout.
pub fn descriptor(layout: &Path, tag: &str) -> Value {
    let top: Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    top["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("{}: no tag {tag}", layout.display()))
        .clone()
}

/// The manifest digest of `tag` (an image manifest, or an index).
pub fn manifest_digest(layout: &Path, tag: &str) -> String {
    descriptor(layout, tag)["digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The image manifest of `tag` (which must name an image, not an index).
pub fn manifest(layout: &Path, tag: &str) -> Value {
    blob_json(layout, &manifest_digest(layout, tag))
}

fn blob_of(v: &Value) -> Blob {
    Blob {
        digest: v["digest"].as_str().unwrap().to_owned(),
        size: v["size"].as_u64().unwrap(),
        media_type: v["mediaType"].as_str().unwrap_or("").to_owned(),
    }
}

/// The layer blobs of image `tag`, bottom first.
pub fn layers(layout: &Path, tag: &str) -> Vec<Blob> {
    manifest(layout, tag)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(blob_of)
        .collect()
}

/// The config blob of image `tag`.
pub fn config(layout: &Path, tag: &str) -> Blob {
    blob_of(&manifest(layout, tag)["config"])
}
