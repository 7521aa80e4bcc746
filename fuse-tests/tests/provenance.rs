//! Provenance xattrs (issue 16): `user.unionfs.layer` and
//! `user.unionfs.shadows` on every object of a mount, read through the kernel
//! with `lgetxattr` as `getfattr -n` reads them.
//!
//! Owns what the two names say (on a read-only mount, on a writable one before
//! and after a copy-up, with an image's diffIDs) and that they stay virtual:
//! absent from `listxattr` unless the mount lists them (`-o provenance`, here
//! through the library's `ProvenanceXattrs`), not copied by `cp -a` or `tar
//! --xattrs`, refused by `setxattr`/`removexattr`, never written to the upper.
//! The merge rules themselves are `tests/stack.rs`'s.

#[macro_use]
mod util;

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use fuser::{BackgroundSession, MountOption};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use unionfs::fuse::rw::RwFs;
use unionfs::fuse::{ProvenanceXattrs, UnionFs};
use unionfs::image::ImageRef;
use unionfs::layers::{self, Source};
use unionfs::overlay::{self, Overlay};
use unionfs::stack::Stack;
use unionfs::tar::IndexOptions;
use unionfs::upper::{Upper, WhiteoutFormat};
use util::*;

const LAYER: &[u8] = b"user.unionfs.layer";
const SHADOWS: &[u8] = b"user.unionfs.shadows";

/// Three layers (bottom first) where paths change in every way a view can
/// hide something.
fn layers() -> Vec<Layer> {
    let mut l0 = Layer::new();
    l0.dir("etc");
    l0.file("etc/conf", "0");
    l0.file("etc/only0", "0");
    l0.dir("o");
    l0.dir("o/sub");
    l0.file("o/sub/f0", "0");
    l0.file("w", "old");
    l0.file("p", "a file");
    l0.dir("r");
    l0.file("r/a", "0");
    l0.symlink("s", "etc/conf");
    let mut l1 = Layer::new();
    l1.dir("etc");
    l1.file("etc/conf", "1");
    l1.dir("o");
    l1.opaque("o");
    l1.dir("o/sub");
    l1.file("o/sub/f1", "1");
    l1.whiteout("w");
    l1.dir("p");
    l1.file("p/x", "1");
    l1.whiteout("r");
    l1.dir("r");
    l1.file("r/b", "1");
    let mut l2 = Layer::new();
    // No `etc/` member: the merged etc shows layer 1's (the highest listed).
    l2.file("etc/conf", "2").xattr("user.note", "kept");
    l2.file("w", "new");
    vec![l0, l1, l2]
}

/// `lgetxattr` of `name`, as text; panics on an error.
fn get(p: &Path, name: &[u8]) -> String {
    let len = lgetxattr_len(p, name).unwrap_or_else(|e| {
        panic!(
            "lgetxattr {} {}: errno {e}",
            p.display(),
            String::from_utf8_lossy(name)
        )
    });
    let v = lgetxattr_sized(p, name, len).expect("lgetxattr with its own length");
    assert_eq!(v.len(), len, "the size query and the value disagree");
    String::from_utf8(v).expect("UTF-8 value")
}

/// Both values: (`user.unionfs.layer`, `user.unionfs.shadows`).
fn prov(p: &Path) -> (String, String) {
    (get(p, LAYER), get(p, SHADOWS))
}

/// The `user.unionfs.layer` value for layer `n` of `tars`.
fn at(tars: &[PathBuf], n: usize) -> String {
    format!("{n} {}", tars[n].display())
}

/// The names `llistxattr` gives.
fn listed(p: &Path) -> BTreeSet<Vec<u8>> {
    let c = cpath(p);
    // SAFETY: size 0 asks for the length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    assert!(n >= 0, "llistxattr {}: errno {}", p.display(), errno());
    let raw = llistxattr_sized(p, n as usize).expect("llistxattr");
    raw.split(|&b| b == 0)
        .filter(|k| !k.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn has_provenance_names(p: &Path) -> bool {
    let l = listed(p);
    l.contains(LAYER) && l.contains(SHADOWS)
}

/// `lremovexattr`, Ok or Err(errno).
fn lremovexattr(p: &Path, name: &[u8]) -> Result<(), i32> {
    let c = cpath(p);
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings.
    if unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) } < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// Every path under `dir` (itself included), depth first.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if fs::symlink_metadata(dir).unwrap().is_dir() {
        for e in fs::read_dir(dir).unwrap() {
            walk(&e.unwrap().path(), out);
        }
    }
}

/// A mount of a filesystem built here (for options `util::Mount` does not
/// take); unmounted on drop.
struct Live {
    session: Option<BackgroundSession>,
    path: PathBuf,
    _mnt: TempDir,
}

impl Live {
    fn spawn<F: fuser::Filesystem + Send + Sync + 'static>(fs: F, writable: bool) -> Live {
        let mnt = tempfile::Builder::new()
            .prefix("unionfs-prov-mnt-")
            .tempdir()
            .unwrap();
        let path = mnt.path().canonicalize().unwrap();
        let mut cfg = fuse_config();
        if writable {
            cfg.mount_options[2] = MountOption::RW;
        }
        let session = fuser::spawn_mount(fs, &path, &cfg)
            .unwrap_or_else(|e| panic!("mount on {}: {e}", path.display()));
        assert!(is_mounted(&path));
        Live {
            session: Some(session),
            path,
            _mnt: mnt,
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.umount_and_join();
        }
        force_unmount(&self.path);
    }
}

/// What every mount of [`layers`] says, writable or not, before any change.
fn check_lower_view(p: impl Fn(&str) -> PathBuf, tars: &[PathBuf]) {
    let s = |v: &str| v.to_string();
    // Changed by all three layers: the top one shows, the others are hidden.
    assert_eq!(prov(&p("etc/conf")), (at(tars, 2), s("1,0")));
    // Merged from all three; layer 2 does not list it: layer 1's metadata.
    assert_eq!(prov(&p("etc")), (at(tars, 1), s("")));
    assert_eq!(prov(&p("etc/only0")), (at(tars, 0), s("")));
    // Opaque in layer 1: layer 0's directory is not merged, at any depth.
    assert_eq!(prov(&p("o")), (at(tars, 1), s("0")));
    assert_eq!(prov(&p("o/sub")), (at(tars, 1), s("0")));
    assert_eq!(prov(&p("o/sub/f1")), (at(tars, 1), s("")));
    // Whited out in layer 1 (no real entry there), recreated in layer 2.
    assert_eq!(prov(&p("w")), (at(tars, 2), s("0")));
    // A file replaced by a directory.
    assert_eq!(prov(&p("p")), (at(tars, 1), s("0")));
    // Whited out and recreated in one layer: the lower one is not merged.
    assert_eq!(prov(&p("r")), (at(tars, 1), s("0")));
}

#[test]
fn a_read_only_mount_says_where_each_object_comes_from() {
    let dir = scratch_dir("unionfs-prov-");
    let tars = write_layers(dir.path(), &layers());
    let Some(m) = Mount::tars(&tars) else { return };
    check_lower_view(|r| m.p(r), &tars);
    // The root merges every layer; none lists it: the top one's.
    assert_eq!(prov(&m.p("")), (at(&tars, 2), String::new()));

    // Size queries and short buffers, as the stored xattrs answer them.
    let conf = m.p("etc/conf");
    let want = at(&tars, 2);
    assert_eq!(lgetxattr_len(&conf, LAYER), Ok(want.len()));
    assert_eq!(lgetxattr_sized(&conf, LAYER, 3), Err(libc::ERANGE));
    assert_eq!(lgetxattr_len(&m.p("etc"), SHADOWS), Ok(0));
    // The layer's own xattrs are still there.
    assert_eq!(get(&conf, b"user.note"), "kept");
    assert_eq!(
        lgetxattr_len(&conf, b"user.unionfs.other"),
        Err(libc::ENODATA)
    );

    // Not listed by default.
    assert_eq!(listed(&conf), BTreeSet::from([b"user.note".to_vec()]));
    assert_eq!(listed(&m.p("etc")), BTreeSet::new());

    // A read-only mount refuses every change before it reaches unionfs.
    assert_eq!(lsetxattr(&conf, LAYER, b"x"), Err(libc::EROFS));
    assert_eq!(lremovexattr(&conf, SHADOWS), Err(libc::EROFS));
}

#[test]
fn cp_and_tar_do_not_copy_them() {
    let dir = scratch_dir("unionfs-prov-");
    let tars = write_layers(dir.path(), &layers());
    let Some(m) = Mount::tars(&tars) else { return };
    let copy = dir.path().join("conf.copy");
    let st = Command::new("cp")
        .arg("-a")
        .arg(m.p("etc/conf"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a");
    // cp -a kept the layer's xattr, and nothing else.
    assert_eq!(
        xattrs(&copy),
        vec![(b"user.note".to_vec(), b"kept".to_vec())]
    );

    let archive = dir.path().join("view.tar");
    let out = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "-C"])
        .arg(&m.path)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = fs::read(&archive).unwrap();
    let has = |s: &[u8]| bytes.windows(s.len()).any(|w| w == s);
    assert!(
        has(b"SCHILY.xattr.user.note=kept"),
        "tar stored no xattrs at all"
    );
    assert!(
        !has(b"user.unionfs"),
        "tar --xattrs stored a provenance xattr"
    );
}

#[test]
fn listed_only_with_the_provenance_option() {
    let dir = scratch_dir("unionfs-prov-");
    let tars = write_layers(dir.path(), &layers());
    if !fuse_available("provenance test") {
        return;
    }
    // What `mount.rs` builds for `-o provenance` (MountConfig::provenance).
    let open = |src: &Source| {
        let (stack, img) = layers::open(src, &IndexOptions::default()).unwrap();
        let labels = layers::labels(&stack, img.as_ref());
        (Arc::new(stack), labels)
    };
    let (stack, labels) = open(&Source::Layers(tars.clone()));
    let ro = Live::spawn(
        UnionFs::new(stack).with_provenance(ProvenanceXattrs::new(labels, true)),
        false,
    );
    for rel in ["etc/conf", "etc", "o/sub", ""] {
        assert!(has_provenance_names(&ro.p(rel)), "{rel:?}: not listed");
    }
    assert!(listed(&ro.p("etc/conf")).contains(b"user.note".as_slice()));
    // Listed once, whatever a layer's own xattrs are called.
    assert_eq!(listed(&ro.p("etc/conf")).len(), 3);
    check_lower_view(|r| ro.p(r), &tars);
    let out = Command::new("getfattr")
        .args(["--absolute-names", "-d", "-m", "-"])
        .arg(ro.p("etc/conf"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    assert!(said.contains("user.unionfs.shadows=\"1,0\"\n"), "{said}");
    assert!(said.contains(&format!("user.unionfs.layer=\"{}\"\n", at(&tars, 2))));
    // The kernel reads no user.* xattr of a symlink (ENODATA without asking
    // unionfs): listing the names there would list what cannot be read.
    let link = ro.p("s");
    assert_eq!(lgetxattr_len(&link, LAYER), Err(libc::ENODATA));
    assert_eq!(listed(&link), BTreeSet::new());
    let out = Command::new("getfattr")
        .args(["--absolute-names", "-h", "-d", "-m", "-"])
        .arg(&link)
        .output()
        .unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");

    let (stack, labels) = open(&Source::Layers(tars.clone()));
    let upper = dir.path().join("upper");
    fs::create_dir(&upper).unwrap();
    let up = Upper::open(&upper, None, WhiteoutFormat::Oci).unwrap();
    let ov = Overlay::new(stack, up, overlay::Options::default()).unwrap();
    let rw = Live::spawn(
        RwFs::new(ov, Default::default()).with_provenance(ProvenanceXattrs::new(labels, true)),
        true,
    );
    assert!(has_provenance_names(&rw.p("etc/conf")));
    fs::write(rw.p("etc/new"), "n").unwrap();
    assert!(has_provenance_names(&rw.p("etc/new")));
    assert!(has_provenance_names(&rw.p("etc")));
    assert_eq!(listed(&rw.p("s")), BTreeSet::new());
    std::os::unix::fs::symlink("etc/new", rw.p("s2")).unwrap();
    assert_eq!(listed(&rw.p("s2")), BTreeSet::new());
}

#[test]
fn a_writable_mount_says_upper_after_a_copy_up() {
    let dir = scratch_dir("unionfs-prov-");
    let tars = write_layers(dir.path(), &layers());
    let upper = dir.path().join("upper");
    fs::create_dir(&upper).unwrap();
    let Some(m) = Mount::with_upper(&tars, &upper, WhiteoutFormat::Oci) else {
        return;
    };
    check_lower_view(|r| m.p(r), &tars);
    let s = |v: &str| v.to_string();
    let up = || s("upper");
    // The root is the upper directory, always merged with every layer.
    assert_eq!(prov(&m.p("")), (up(), s("")));

    // Refused before anything is copied up.
    let conf = m.p("etc/conf");
    assert_eq!(lsetxattr(&conf, LAYER, b"0 forged"), Err(libc::EPERM));
    assert_eq!(lsetxattr(&conf, SHADOWS, b""), Err(libc::EPERM));
    assert_eq!(lremovexattr(&conf, LAYER), Err(libc::EPERM));
    // Any private name is refused before a copy-up, not after it.
    assert_eq!(
        lsetxattr(&conf, b"user.unionfs.other", b"x"),
        Err(libc::EPERM)
    );
    assert_eq!(
        lsetxattr(&conf, b"trusted.overlay.x", b"x"),
        Err(libc::EPERM)
    );
    assert_eq!(lremovexattr(&conf, b"trusted.overlay.x"), Err(libc::EPERM));
    assert!(!upper.join("etc").exists(), "a refused setxattr copied up");
    assert_eq!(prov(&conf), (at(&tars, 2), s("1,0")));

    // chmod copies up: the upper file hides every layer's.
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(upper.join("etc/conf").exists());
    assert_eq!(prov(&conf), (up(), s("2,1,0")));
    assert_eq!(get(&conf, b"user.note"), "kept");
    // Its directory came up too, and still merges every lower etc.
    assert_eq!(prov(&m.p("etc")), (up(), s("")));
    // A new file hides nothing.
    fs::write(m.p("etc/new"), "n").unwrap();
    assert_eq!(prov(&m.p("etc/new")), (up(), s("")));
    // An upper directory over an opaque lower one: merges layer 1's only.
    fs::write(m.p("o/sub/g"), "g").unwrap();
    assert_eq!(prov(&m.p("o/sub")), (up(), s("0")));
    assert_eq!(prov(&m.p("o/sub/f1")), (at(&tars, 1), s("")));
    // Removed and made again: an opaque upper directory merges nothing.
    fs::remove_dir_all(m.p("p")).unwrap();
    fs::create_dir(m.p("p")).unwrap();
    assert_eq!(prov(&m.p("p")), (up(), s("1,0")));
    // Whited out in the upper, then recreated as a file.
    fs::remove_file(m.p("w")).unwrap();
    fs::write(m.p("w"), "newest").unwrap();
    assert_eq!(prov(&m.p("w")), (up(), s("2,0")));

    // Still refused on an upper object; still unlisted.
    assert_eq!(lsetxattr(&conf, LAYER, b"x"), Err(libc::EPERM));
    assert_eq!(lremovexattr(&conf, SHADOWS), Err(libc::EPERM));
    assert_eq!(listed(&conf), BTreeSet::from([b"user.note".to_vec()]));
    assert_eq!(listed(&m.p("etc/new")), BTreeSet::new());
    // Other private names stay refused too.
    assert_eq!(lsetxattr(&conf, b"user.unionfs.x", b"y"), Err(libc::EPERM));
    m.unmount();

    // Nothing of the kind was ever written into the upper.
    let mut all = Vec::new();
    walk(&upper, &mut all);
    assert!(all.len() > 5, "the upper holds what was written");
    for p in all {
        for (k, _) in xattrs(&p) {
            assert!(
                !k.starts_with(b"user.unionfs."),
                "{}: {} stored in the upper",
                p.display(),
                String::from_utf8_lossy(&k)
            );
        }
    }
}

/// A `docker save`-style image directory of `layers`: their diffIDs.
fn write_image(dir: &Path, layers: &[Layer]) -> Vec<String> {
    let tars = write_layers(dir, layers);
    let diff_ids: Vec<String> = tars
        .iter()
        .map(|t| format!("sha256:{:x}", Sha256::digest(fs::read(t).unwrap())))
        .collect();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let names: Vec<String> = (0..tars.len()).map(|i| format!("L{i}.tar")).collect();
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": ["example/prov:v1"],
        "Layers": names,
    }]);
    fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    diff_ids
}

#[test]
fn an_image_layer_is_named_by_its_diff_id() {
    if !fuse_available("provenance test") {
        return;
    }
    let dir = scratch_dir("unionfs-prov-img-");
    let diff_ids = write_image(dir.path(), &layers());
    let src = Source::Image {
        image: ImageRef::parse(&dir.path().display().to_string()).unwrap(),
        platform: None,
    };
    let (stack, img) = layers::open(&src, &IndexOptions::default()).unwrap();
    let labels = layers::labels(&stack, img.as_ref());
    assert_eq!(labels, diff_ids);
    let stack: Arc<Stack> = Arc::new(stack);
    let m = Live::spawn(
        UnionFs::new(stack).with_provenance(ProvenanceXattrs::new(labels, false)),
        false,
    );
    let conf = get(&m.p("etc/conf"), LAYER);
    assert_eq!(conf, format!("2 {}", diff_ids[2]));
    assert!(conf.starts_with("2 sha256:") && conf.len() == 2 + 7 + 64);
    assert_eq!(get(&m.p("o"), LAYER), format!("1 {}", diff_ids[1]));
    assert_eq!(get(&m.p("etc/only0"), LAYER), format!("0 {}", diff_ids[0]));
    assert_eq!(get(&m.p("etc/conf"), SHADOWS), "1,0");
}
