//! The kernel-overlayfs oracle shared by the differential tests: extract layer
//! tars as a container runtime would (containerd: a parent directory a tar does
//! not list takes the metadata of the directory below it), convert OCI
//! whiteouts to overlayfs's form, mount `overlay`, and dump and compare trees.
//!
//! Owns the oracle machinery only; the cases live in `differential.rs` (merge
//! semantics) and `writes.rs` (operations through a writable mount).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::*;

/// Returns true if and only if the oracle can run here (root, overlayfs, GNU
/// tar, FUSE); panics otherwise unless the user opted out (see util).
pub fn oracle_available() -> bool {
    if !fuse_available("differential test") {
        return false;
    }
    // SAFETY: trivial getter.
    if unsafe { libc::geteuid() } != 0 {
        return skip_or_panic(
            "differential test",
            "needs root (GNU tar --same-owner, mknod, mount -t overlay)",
        );
    }
    let fss = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fss.lines().any(|l| l.trim_end().ends_with("\toverlay")) {
        return skip_or_panic(
            "differential test",
            "kernel overlayfs is not available (modprobe overlay)",
        );
    }
    match Command::new("tar").arg("--version").output() {
        Ok(o) if String::from_utf8_lossy(&o.stdout).contains("GNU tar") => true,
        _ => skip_or_panic("differential test", "GNU tar is not installed"),
    }
}

/// A kernel overlayfs mount; unmounted on drop.
pub struct Overlay {
    pub path: PathBuf,
}

impl Overlay {
    /// Mounts `lowers` (given bottom first) on `mnt` (absolute, canonical).
    pub fn mount(lowers: &[PathBuf], mnt: &Path) -> Overlay {
        Overlay::mount_with(&format!("lowerdir={}", lowerdir(lowers)), mnt)
    }

    /// Mounts `lowers` (bottom first) with `upper` and `work` on `mnt`, with
    /// `redirect_dir=on` so that directories with lower content can be
    /// renamed, and `index=on` so that a copy-up keeps lower hard links
    /// linked (as unionfs does).
    pub fn mount_rw(lowers: &[PathBuf], upper: &Path, work: &Path, mnt: &Path) -> Overlay {
        let opts = rw_opts(lowers, upper, work) + ",redirect_dir=on,index=on";
        Overlay::mount_with(&opts, mnt)
    }

    /// As [`Overlay::mount_rw`], without `redirect_dir` (the kernel's default).
    pub fn mount_rw_plain(lowers: &[PathBuf], upper: &Path, work: &Path, mnt: &Path) -> Overlay {
        Overlay::mount_with(&rw_opts(lowers, upper, work), mnt)
    }

    fn mount_with(opts: &str, mnt: &Path) -> Overlay {
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", opts])
            .arg(mnt)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t overlay -o {opts} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = mnt.to_path_buf();
        assert!(is_mounted(&path), "overlay not in mountinfo");
        Overlay { path }
    }
}

/// `lowerdir=…,upperdir=…,workdir=…`.
fn rw_opts(lowers: &[PathBuf], upper: &Path, work: &Path) -> String {
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lowerdir(lowers),
        upper.display(),
        work.display()
    )
}

/// overlayfs's `lowerdir=` value: top first.
fn lowerdir(lowers: &[PathBuf]) -> String {
    let v: Vec<String> = lowers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    v.join(":")
}

impl Drop for Overlay {
    fn drop(&mut self) {
        force_unmount(&self.path);
    }
}

/// Extracts `tar` into `dir` with GNU tar, as a container runtime would (but
/// for the directories the tar does not list: see [`fill_implicit_dirs`]).
pub fn extract(tar: &Path, dir: &Path) {
    fs::create_dir(dir).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("tar")
        .env("LC_ALL", "C")
        .args([
            "-xp",
            "--numeric-owner",
            "--same-owner",
            "--xattrs",
            "--xattrs-include=*",
            "-f",
        ])
        .arg(tar)
        .arg("-C")
        .arg(dir)
        .output()
        .expect("run GNU tar");
    assert!(
        out.status.success(),
        "tar -x {} failed: {}",
        tar.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sets `p`'s mtime (and atime) without following symlinks.
pub fn set_mtime(p: &Path, secs: i64, nsec: i64) {
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: nsec,
    };
    let c = cpath(p);
    // SAFETY: valid path and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [t, t].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(
        r,
        0,
        "utimensat {}: {}",
        p.display(),
        io::Error::last_os_error()
    );
}

/// Gives every directory the layer declares its declared mtime again. GNU tar
/// restores a directory's times when extraction leaves it, so a later member
/// that lands in it again (a hard link, a whiteout, a file) bumps its mtime.
pub fn restore_dir_mtimes(layer: &Layer, dir: &Path) {
    for e in layer.entries.iter().filter(|e| e.kind == Kind::Dir) {
        let rel: Vec<&[u8]> = e
            .path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect();
        let p = if rel.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(OsStr::from_bytes(&rel.join(&b'/')))
        };
        if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            set_mtime(&p, e.mtime, i64::from(e.nsec));
        }
    }
}

/// The directories a layer lists, as normalised relative paths (the layer
/// root as the empty path).
fn declared_dirs(layer: &Layer) -> BTreeSet<Vec<u8>> {
    layer
        .entries
        .iter()
        .filter(|e| e.kind == Kind::Dir)
        .map(|e| {
            let comps: Vec<&[u8]> = e
                .path
                .split(|&b| b == b'/')
                .filter(|c| !c.is_empty() && *c != b".")
                .collect();
            comps.join(&b'/')
        })
        .collect()
}

/// Every directory under `root` (itself included, as the empty path), without
/// following symlinks.
fn all_dirs(root: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut todo = vec![Vec::new()];
    while let Some(rel) = todo.pop() {
        let p = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(OsStr::from_bytes(&rel))
        };
        for e in fs::read_dir(&p).unwrap_or_else(|e| panic!("readdir {}: {e}", p.display())) {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                todo.push(join(&rel, e.file_name().as_bytes()));
            }
        }
        out.push(rel);
    }
    out
}

/// Returns true if and only if `p` carries overlayfs's opaque xattr.
fn is_opaque(p: &Path) -> bool {
    lgetxattr_sized(p, b"trusted.overlay.opaque", 16).is_ok_and(|v| v == b"y")
}

/// The directories kernel overlayfs merges at `rel` over extracted, converted
/// `layers` (top first), top first: a whiteout or any non-directory stops the
/// merge, and so does an opaque directory (after joining it); every layer's
/// root takes part (overlayfs ignores opacity on a layer root).
fn merged_dirs(layers: &[&Path], rel: &[u8]) -> Vec<PathBuf> {
    let mut cur: Vec<PathBuf> = layers.iter().map(|p| p.to_path_buf()).collect();
    for c in rel.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        for base in &cur {
            let p = base.join(OsStr::from_bytes(c));
            let Ok(md) = fs::symlink_metadata(&p) else {
                continue;
            };
            if !md.is_dir() {
                break;
            }
            let stop = is_opaque(&p);
            next.push(p);
            if stop {
                break;
            }
        }
        cur = next;
    }
    cur
}

/// Gives every directory of the extracted layer `dir` that `layer` does not
/// list (GNU tar made it for a missing parent, with the current time and
/// umask) the metadata containerd's `mkparent` gives it: the mode, owner,
/// times and xattrs (but overlayfs's own) of the directory overlayfs merges
/// right below it in `below` (extracted layers, bottom first, themselves
/// already filled in), else 0755, root, mtime 0. A directory that does not
/// merge (opaque, or whited out in its layer) keeps those defaults: it is
/// exactly what unionfs shows for an implicit directory (see
/// `src/stack/mod.rs`).
pub fn fill_implicit_dirs(layer: &Layer, dir: &Path, below: &[PathBuf]) {
    let declared = declared_dirs(layer);
    let mut stack: Vec<&Path> = vec![dir];
    stack.extend(below.iter().rev().map(PathBuf::as_path));
    for rel in all_dirs(dir) {
        if declared.contains(&rel) {
            continue;
        }
        let p = if rel.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(OsStr::from_bytes(&rel))
        };
        let src = merged_dirs(&stack, &rel).into_iter().nth(1);
        copy_dir_info(src.as_deref(), &p);
    }
}

/// Copies owner, mode, xattrs (not `trusted.overlay.*`) and times of the
/// directory `src` onto the directory `dst`; with no `src`, sets root, 0755,
/// times 0.
fn copy_dir_info(src: Option<&Path>, dst: &Path) {
    let (uid, gid, mode, atime, mtime) = match src {
        Some(s) => {
            let md = fs::symlink_metadata(s).unwrap();
            (
                md.uid(),
                md.gid(),
                md.mode() & 0o7777,
                (md.atime(), md.atime_nsec()),
                (md.mtime(), md.mtime_nsec()),
            )
        }
        None => (0, 0, 0o755, (0, 0), (0, 0)),
    };
    std::os::unix::fs::lchown(dst, Some(uid), Some(gid)).unwrap();
    // After the chown, which may clear set-id bits.
    fs::set_permissions(dst, fs::Permissions::from_mode(mode)).unwrap();
    if let Some(s) = src {
        for (k, v) in xattrs(s) {
            if !k.starts_with(b"trusted.overlay.") {
                lsetxattr(dst, &k, &v).unwrap_or_else(|e| {
                    panic!(
                        "lsetxattr {} {:?}: errno {e}",
                        dst.display(),
                        String::from_utf8_lossy(&k)
                    )
                });
            }
        }
    }
    let t = |(secs, nsec): (i64, i64)| libc::timespec {
        tv_sec: secs,
        tv_nsec: nsec,
    };
    let c = cpath(dst);
    // SAFETY: valid path and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [t(atime), t(mtime)].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(
        r,
        0,
        "utimensat {}: {}",
        dst.display(),
        io::Error::last_os_error()
    );
}

pub fn set_opaque(dir: &Path) {
    lsetxattr(dir, b"trusted.overlay.opaque", b"y")
        .unwrap_or_else(|e| panic!("set trusted.overlay.opaque on {}: errno {e}", dir.display()));
}

/// Rewrites OCI whiteouts under `dir` into overlayfs form, then restores the
/// mtime of every directory it changed.
pub fn convert_whiteouts(dir: &Path) {
    let md = fs::symlink_metadata(dir).unwrap();
    let mut changed = false;
    let mut subdirs = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        let name = name.as_bytes();
        let p = e.path();
        if name == b".wh..wh..opq" {
            fs::remove_file(&p).unwrap();
            set_opaque(dir);
            changed = true;
        } else if name.starts_with(b".wh..wh.") || name == b".wh." {
            fs::remove_file(&p).unwrap();
            changed = true;
        } else if let Some(target) = name.strip_prefix(b".wh.") {
            fs::remove_file(&p).unwrap();
            changed = true;
            let t = dir.join(OsStr::from_bytes(target));
            match fs::symlink_metadata(&t) {
                Ok(m) if m.is_dir() => set_opaque(&t),
                Ok(_) => {}
                Err(_) => {
                    let c = cpath(&t);
                    // SAFETY: valid path; a 0/0 character device is overlayfs's whiteout.
                    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, libc::makedev(0, 0)) };
                    assert_eq!(
                        r,
                        0,
                        "mknod {}: {}",
                        t.display(),
                        io::Error::last_os_error()
                    );
                }
            }
        } else if e.file_type().unwrap().is_dir() {
            subdirs.push(p);
        }
    }
    for s in subdirs {
        convert_whiteouts(&s);
    }
    if changed {
        set_mtime(dir, md.mtime(), md.mtime_nsec());
    }
}

// ---------------------------------------------------------------------------
// Tree dumps

/// What we compare of one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Obj {
    pub kind: &'static str,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: Option<u64>,
    pub mtime: Option<(i64, i64)>,
    pub link: Option<Vec<u8>>,
    sha256: Option<String>,
    pub rdev: Option<u64>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub nlink: Option<u64>,
}

pub struct Tree {
    pub objs: BTreeMap<Vec<u8>, Obj>,
    /// Hard-link groups: sets of non-directory paths sharing an st_ino (size ≥ 2).
    pub links: BTreeSet<BTreeSet<Vec<u8>>>,
}

pub fn kind_of(ft: fs::FileType) -> &'static str {
    if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_char_device() {
        "chardev"
    } else if ft.is_block_device() {
        "blockdev"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "socket"
    }
}

/// Walks `root` without following symlinks. `root_nlink`: compare the root's
/// link count (not when the oracle needed an extra empty layer).
pub fn dump(root: &Path, root_nlink: bool) -> Tree {
    let mut objs = BTreeMap::new();
    let mut inos: BTreeMap<u64, BTreeSet<Vec<u8>>> = BTreeMap::new();
    let mut todo: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(rel) = todo.pop() {
        let p = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(OsStr::from_bytes(&rel))
        };
        let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        let ft = md.file_type();
        let kind = kind_of(ft);
        let is_root = rel.is_empty();
        let obj = Obj {
            kind,
            perm: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: (!ft.is_dir()).then(|| md.size()),
            mtime: (!is_root).then(|| (md.mtime(), md.mtime_nsec())),
            link: ft
                .is_symlink()
                .then(|| fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec()),
            sha256: ft.is_file().then(|| {
                let data = fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
                format!("{:x}", Sha256::digest(&data))
            }),
            rdev: (ft.is_char_device() || ft.is_block_device()).then(|| md.rdev()),
            xattrs: xattrs(&p),
            nlink: (!is_root || root_nlink).then(|| md.nlink()),
        };
        if ft.is_dir() {
            for e in fs::read_dir(&p).unwrap_or_else(|e| panic!("readdir {}: {e}", p.display())) {
                let e = e.unwrap();
                todo.push(join(&rel, e.file_name().as_bytes()));
            }
        } else {
            inos.entry(md.ino()).or_default().insert(rel.clone());
        }
        objs.insert(rel, obj);
    }
    let links = inos.into_values().filter(|g| g.len() > 1).collect();
    Tree { objs, links }
}

pub fn show(b: &[u8]) -> String {
    if b.is_empty() {
        return "/".into();
    }
    format!("{:?}", String::from_utf8_lossy(b))
}

/// Describes the differences (overlayfs first); empty if none.
pub fn diff(ovl: &Tree, ours: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (p, o) in &ovl.objs {
        let Some(u) = ours.objs.get(p) else {
            out.push(format!("{}: only in overlayfs ({})", show(p), o.kind));
            continue;
        };
        macro_rules! field {
            ($f:ident) => {
                if o.$f != u.$f {
                    out.push(format!(
                        "{}: {}: overlayfs {:?} != unionfs {:?}",
                        show(p),
                        stringify!($f),
                        o.$f,
                        u.$f
                    ));
                }
            };
        }
        field!(kind);
        if o.kind != u.kind {
            continue;
        }
        if o.perm != u.perm {
            out.push(format!(
                "{}: perm: overlayfs {:o} != unionfs {:o}",
                show(p),
                o.perm,
                u.perm
            ));
        }
        field!(uid);
        field!(gid);
        field!(size);
        field!(mtime);
        if o.link != u.link {
            out.push(format!(
                "{}: symlink target: overlayfs {} != unionfs {}",
                show(p),
                show(o.link.as_deref().unwrap_or_default()),
                show(u.link.as_deref().unwrap_or_default())
            ));
        }
        field!(sha256);
        field!(rdev);
        if o.xattrs != u.xattrs {
            let fmt = |x: &[(Vec<u8>, Vec<u8>)]| {
                x.iter()
                    .map(|(k, v)| {
                        format!(
                            "{}={}",
                            String::from_utf8_lossy(k),
                            String::from_utf8_lossy(v)
                        )
                    })
                    .collect::<Vec<_>>()
            };
            out.push(format!(
                "{}: xattrs: overlayfs {:?} != unionfs {:?}",
                show(p),
                fmt(&o.xattrs),
                fmt(&u.xattrs)
            ));
        }
        field!(nlink);
    }
    for (p, u) in &ours.objs {
        if !ovl.objs.contains_key(p) {
            out.push(format!("{}: only in unionfs ({})", show(p), u.kind));
        }
    }
    let fmt_group =
        |g: &BTreeSet<Vec<u8>>| g.iter().map(|p| show(p)).collect::<Vec<_>>().join(" = ");
    for g in ovl.links.difference(&ours.links) {
        out.push(format!(
            "hard-link group only in overlayfs: {}",
            fmt_group(g)
        ));
    }
    for g in ours.links.difference(&ovl.links) {
        out.push(format!("hard-link group only in unionfs: {}", fmt_group(g)));
    }
    out
}

/// A readable listing of the layers, for failure messages.
pub fn describe(layers: &[Layer]) -> String {
    let mut s = String::new();
    for (i, l) in layers.iter().enumerate() {
        let _ = writeln!(s, "  layer {i} (bottom = 0):");
        for e in &l.entries {
            let what = match &e.kind {
                Kind::File(d) => format!("file {}B", d.len()),
                Kind::Dir => "dir".into(),
                Kind::Symlink(t) => format!("symlink -> {}", show(t)),
                Kind::HardLink(t) => format!("hardlink -> {}", show(t)),
                Kind::Char(a, b) => format!("chardev {a},{b}"),
                Kind::Block(a, b) => format!("blockdev {a},{b}"),
                Kind::Fifo => "fifo".into(),
            };
            let _ = writeln!(
                s,
                "    {} {what} {:o} {}:{} {}.{:09}{}",
                show(&e.path),
                e.mode,
                e.uid,
                e.gid,
                e.mtime,
                e.nsec,
                if e.xattrs.is_empty() {
                    String::new()
                } else {
                    format!(" xattrs {}", e.xattrs.len())
                }
            );
        }
    }
    s
}

/// Runs the oracle on `layers` (bottom first). Err: the differences, described.
/// Ok(false): skipped.
/// Layer tars and their overlayfs-ready extraction, in one scratch directory.
pub struct Prepared {
    pub work: tempfile::TempDir,
    pub tars: Vec<PathBuf>,
    /// Extracted and converted layers, bottom first.
    pub lowers: Vec<PathBuf>,
    /// An empty bottom layer was added (overlayfs needs two lowers).
    pub padded: bool,
}

pub fn prepare(layers: &[Layer]) -> Prepared {
    let work = scratch_dir("unionfs-diff-");
    let w = work.path().canonicalize().unwrap();
    let tars = write_layers(&w, layers);
    let mut lowers = Vec::new();
    for (i, t) in tars.iter().enumerate() {
        let d = w.join(format!("x{i}"));
        extract(t, &d);
        restore_dir_mtimes(&layers[i], &d);
        convert_whiteouts(&d);
        fill_implicit_dirs(&layers[i], &d, &lowers);
        lowers.push(d);
    }
    let padded = lowers.len() == 1;
    if padded {
        // overlayfs needs two lowers without an upper: add an empty bottom one.
        let d = w.join("empty");
        fs::create_dir(&d).unwrap();
        lowers.insert(0, d);
    }
    Prepared {
        work,
        tars,
        lowers,
        padded,
    }
}

/// The tree kernel overlayfs shows for `p` (mounted, dumped, unmounted).
pub fn overlay_tree(p: &Prepared) -> Tree {
    let mnt = p.work.path().join("ovl");
    fs::create_dir(&mnt).unwrap();
    let mnt = mnt.canonicalize().unwrap(); // before mounting: never stat a mount
    let ovl = Overlay::mount(&p.lowers, &mnt);
    dump(&ovl.path, !p.padded)
}
