//! `unionfs --image`: one small multi-layer image, built with umoci by
//! `tools/image-fixtures`, in every container-image form (OCI layout, OCI
//! archive, skopeo's docker-archive, Docker 20.10's `docker save`, Docker 25's
//! save, a containerd-store export, a two-image `docker save`) and with its
//! layers compressed as real tools write them (umoci's gzip layout, an OCI
//! archive with gzip layers, skopeo's single-frame zstd, multi-frame zstd,
//! multi-member gzip cut as eStargz cuts it, a containerd export with gzip
//! layers), mounted by the
//! `unionfs` binary and compared with the tree `umoci unpack` extracts from
//! the same image: names, types, permission bits, owners, sizes, contents,
//! symlink targets, devices, xattrs, file mtimes and hard-link groups. `unionfs
//! ls --image` must list the same. Then image selection by REF and
//! `--platform`, and the broken inputs of `bad/`, each refused with one line
//! naming the archive and the problem, nothing mounted.
//!
//! Needs root, FUSE, and umoci, skopeo, docker.io (dockerd), zstd, pigz and tar for the
//! fixtures, which are built once into /var/tmp/unionfs-image-fixtures/KEY
//! (KEY: a hash of the script, so a changed script rebuilds them). Nothing
//! here skips: a missing tool, binary or feature fails the tests loudly.
//!
//! The binary: `$UNIONFS_BIN` if set, else `cargo build -p unionfs --bin
//! unionfs` into this test's own target directory (cargo does not hold its
//! build lock while tests run).
//!
//! Not compared, and why: directory sizes and link counts (a merged directory
//! reports st_nlink 1, as overlayfs does; ext4 sizes are block counts) and
//! directory mtimes (umoci gives implicit parents the extraction time, unionfs
//! gives them 0, and extracting a child bumps a directory's mtime on disk).

#[path = "../../tests/model/inspect.rs"]
mod inspect_model;
mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use util::{force_unmount, is_mounted, xattrs};

/// Where the fixtures are cached (one subdirectory per script hash).
const FIXTURE_ROOT: &str = "/var/tmp/unionfs-image-fixtures";
/// Longest any one `unionfs` command may take.
const CMD_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// Fixtures and the binary

/// The fixture directory, built (or checked: the script is idempotent) once
/// per test process, under an flock so that test processes do not race.
fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        assert_eq!(
            // SAFETY: trivial getter.
            unsafe { libc::geteuid() },
            0,
            "the image tests need root (umoci keeps owners and devices; dockerd; mounts)"
        );
        let script = util::repo_root().join("tools/image-fixtures");
        let bytes = fs::read(&script).unwrap_or_else(|e| panic!("read {}: {e}", script.display()));
        let key = format!("{:x}", Sha256::digest(&bytes));
        let root = Path::new(FIXTURE_ROOT);
        fs::create_dir_all(root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
        let lock = fs::File::create(root.join(".lock")).expect("create the fixture lock");
        // SAFETY: a valid fd, held until `lock` drops at the end of this closure.
        let r = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
        assert_eq!(r, 0, "flock {}/.lock", root.display());
        let dir = root.join(&key[..16]);
        // Fixtures of older versions of the script, unused for a day (a
        // checkout of another version may be testing with its own now).
        for e in fs::read_dir(root).unwrap().flatten() {
            let n = e.file_name();
            let stale = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(86_400));
            if n != OsStr::new(&key[..16]) && n != ".lock" && e.path().is_dir() && stale {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        let t = Instant::now();
        let out = Command::new(&script)
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} {} failed ({}):\n{}{}",
            script.display(),
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "image fixtures: {} ({:.1} s)",
            dir.display(),
            t.elapsed().as_secs_f64()
        );
        dir
    })
}

/// A fixture path (`rel` relative to the fixture dir), as a string.
fn fx(rel: &str) -> String {
    fixtures().join(rel).display().to_string()
}

/// `image.json`: the digests and names of what the script built.
fn meta() -> &'static Value {
    static META: OnceLock<Value> = OnceLock::new();
    META.get_or_init(|| {
        let p = fixtures().join("image.json");
        serde_json::from_slice(&fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
            .expect("image.json is JSON")
    })
}

fn meta_str(path: &[&str]) -> String {
    let mut v = meta();
    for k in path {
        v = &v[*k];
    }
    v.as_str()
        .unwrap_or_else(|| panic!("image.json: no string at {path:?}"))
        .to_owned()
}

/// The `unionfs` binary, freshly built, with `--image`.
fn bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = util::unionfs_bin().to_path_buf();
        let help = Command::new(&bin)
            .args(["mount", "--help"])
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
        assert!(
            String::from_utf8_lossy(&help.stdout).contains("--image"),
            "{} mount --help does not mention --image: this binary does not implement \
             `unionfs mount --image` yet",
            bin.display()
        );
        bin
    })
}

// ---------------------------------------------------------------------------
// Running unionfs

#[derive(Debug)]
struct Out {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    cmd: String,
}

impl Out {
    fn ok(self) -> Out {
        assert!(
            self.status.success(),
            "`{}` failed ({}):\n{}",
            self.cmd,
            self.status,
            self.stderr
        );
        self
    }
}

/// Runs `unionfs ARGS` with its index cache in `cache`, stdin closed, killed
/// after [`CMD_TIMEOUT`]. (A mount's daemon must not keep our pipes: reading
/// them ends when the command's own process and its daemon have let go.)
fn unionfs<S: AsRef<OsStr>>(args: &[S], cache: &Path) -> Out {
    let cmd = format!(
        "unionfs {}",
        args.iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut child = Command::new(bin())
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
    let (tx, rx) = mpsc::channel();
    for (i, mut pipe) in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ]
    .into_iter()
    .enumerate()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send((i, buf));
        });
    }
    let deadline = Instant::now() + CMD_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{cmd}` did not finish within {CMD_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut bufs = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(5);
        let (i, b) = rx.recv_timeout(left).unwrap_or_else(|_| {
            panic!("`{cmd}` exited but something (its daemon?) still holds its stdout/stderr")
        });
        bufs[i] = b;
    }
    Out {
        status,
        stdout: String::from_utf8_lossy(&bufs[0]).into_owned(),
        stderr: String::from_utf8_lossy(&bufs[1]).into_owned(),
        cmd,
    }
}

/// A scratch dir for one test: index cache, mountpoint, upper.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("unionfs-image-")
        .tempdir()
        .expect("tempdir")
}

/// A live `unionfs mount --image`; `unionfs umount` (then umount2) on drop.
struct ImageMount {
    path: PathBuf,
    cache: PathBuf,
}

impl ImageMount {
    /// Mounts `spec` (and `extra` options) read-only with allow_other on
    /// `dir/mnt`, or returns the failed command's output.
    fn new(spec: &str, extra: &[&str], dir: &Path) -> Result<ImageMount, Out> {
        let mnt = dir.join("mnt");
        fs::create_dir_all(&mnt).unwrap();
        let mnt = mnt.canonicalize().unwrap();
        let cache = dir.join("cache");
        let mut args: Vec<OsString> = vec!["mount".into(), "--image".into(), spec.into()];
        args.extend(extra.iter().map(OsString::from));
        args.extend(["-o".into(), "allow_other".into(), mnt.clone().into()]);
        let out = unionfs(&args, &cache);
        if !out.status.success() {
            assert!(
                !is_mounted(&mnt),
                "`{}` failed but left {} mounted",
                out.cmd,
                mnt.display()
            );
            return Err(out);
        }
        assert!(
            is_mounted(&mnt),
            "`{}` succeeded but {} is not in /proc/self/mountinfo",
            out.cmd,
            mnt.display()
        );
        Ok(ImageMount { path: mnt, cache })
    }

    fn mount(spec: &str, extra: &[&str], dir: &Path) -> ImageMount {
        ImageMount::new(spec, extra, dir)
            .unwrap_or_else(|o| panic!("`{}` failed ({}):\n{}", o.cmd, o.status, o.stderr))
    }

    /// The mount's line in /proc/self/mountinfo.
    fn mountinfo(&self) -> String {
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let want = self.path.display().to_string();
        info.lines()
            .find(|l| l.split(' ').nth(4) == Some(want.as_str()))
            .unwrap_or_else(|| panic!("{want} not in mountinfo"))
            .to_owned()
    }

    /// `unionfs umount`, checked. EBUSY is retried for a while: a child that
    /// another test thread is forking holds copies of this thread's open fds
    /// (into the mount) until it execs.
    fn umount(self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let out = loop {
            let out = unionfs(&[OsStr::new("umount"), self.path.as_os_str()], &self.cache);
            if out.status.success() || !out.stderr.contains("busy") || Instant::now() > deadline {
                break out;
            }
            eprintln!("{}: busy, retrying: {}", out.cmd, out.stderr.trim_end());
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(out.status.success(), "`{}` failed: {}", out.cmd, out.stderr);
        assert!(
            !is_mounted(&self.path),
            "{} still mounted",
            self.path.display()
        );
    }
}

impl Drop for ImageMount {
    fn drop(&mut self) {
        if is_mounted(&self.path) {
            let _ = unionfs(&[OsStr::new("umount"), self.path.as_os_str()], &self.cache);
            force_unmount(&self.path);
        }
    }
}

// ---------------------------------------------------------------------------
// Trees

/// What is compared of one name (see the module doc for what is not).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Obj {
    kind: &'static str,
    perm: u32,
    uid: u32,
    gid: u32,
    /// Files and symlinks.
    size: Option<u64>,
    /// Everything but directories.
    mtime: Option<(i64, i64)>,
    link: Option<Vec<u8>>,
    sha256: Option<String>,
    rdev: Option<(u32, u32)>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Regular files.
    nlink: Option<u64>,
}

#[derive(Clone)]
struct Tree {
    /// Relative path ("" = the root) -> object.
    objs: BTreeMap<Vec<u8>, Obj>,
    /// Sets of paths sharing an inode (hard links).
    links: BTreeSet<BTreeSet<Vec<u8>>>,
}

fn kind_of(ft: fs::FileType) -> &'static str {
    if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "socket"
    }
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        [parent, b"/", name].concat()
    }
}

/// Walks `root` without following symlinks.
fn dump(root: &Path) -> Tree {
    let mut objs = BTreeMap::new();
    let mut inos: BTreeMap<u64, BTreeSet<Vec<u8>>> = BTreeMap::new();
    let mut todo = vec![Vec::new()];
    while let Some(rel) = todo.pop() {
        let p = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(OsStr::from_bytes(&rel))
        };
        let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        let ft = md.file_type();
        let is_root = rel.is_empty();
        let obj = Obj {
            kind: kind_of(ft),
            perm: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: (ft.is_file() || ft.is_symlink()).then(|| md.size()),
            mtime: (!ft.is_dir() && !is_root).then(|| (md.mtime(), md.mtime_nsec())),
            link: ft
                .is_symlink()
                .then(|| fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec()),
            sha256: ft.is_file().then(|| {
                let data = fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
                format!("{:x}", Sha256::digest(&data))
            }),
            rdev: (ft.is_char_device() || ft.is_block_device())
                .then(|| (libc::major(md.rdev()), libc::minor(md.rdev()))),
            xattrs: xattrs(&p),
            nlink: ft.is_file().then(|| md.nlink()),
        };
        if ft.is_dir() {
            for e in fs::read_dir(&p).unwrap_or_else(|e| panic!("readdir {}: {e}", p.display())) {
                todo.push(join(&rel, e.unwrap().file_name().as_bytes()));
            }
        } else {
            inos.entry(md.ino()).or_default().insert(rel.clone());
        }
        objs.insert(rel, obj);
    }
    let links = inos.into_values().filter(|g| g.len() > 1).collect();
    Tree { objs, links }
}

fn show(p: &[u8]) -> String {
    if p.is_empty() {
        "/".into()
    } else {
        format!("/{}", String::from_utf8_lossy(p))
    }
}

fn show_xattrs(x: &[(Vec<u8>, Vec<u8>)]) -> String {
    let v: Vec<String> = x
        .iter()
        .map(|(k, v)| format!("{}={}", String::from_utf8_lossy(k), xattr_text(v)))
        .collect();
    format!("{{{}}}", v.join(", "))
}

/// The differences between the reference tree and the mount; empty if none.
fn diff(want: &Tree, got: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (p, w) in &want.objs {
        let Some(g) = got.objs.get(p) else {
            out.push(format!("{}: missing from the mount ({})", show(p), w.kind));
            continue;
        };
        if w.kind != g.kind {
            out.push(format!("{}: type {} != {}", show(p), g.kind, w.kind));
            continue;
        }
        let mut field = |name: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{}: {name}: mount {b}, umoci {a}", show(p)));
            }
        };
        field("mode", format!("{:o}", w.perm), format!("{:o}", g.perm));
        field(
            "owner",
            format!("{}:{}", w.uid, w.gid),
            format!("{}:{}", g.uid, g.gid),
        );
        field("size", format!("{:?}", w.size), format!("{:?}", g.size));
        field("mtime", format!("{:?}", w.mtime), format!("{:?}", g.mtime));
        field(
            "symlink target",
            format!("{:?}", w.link.as_deref().map(String::from_utf8_lossy)),
            format!("{:?}", g.link.as_deref().map(String::from_utf8_lossy)),
        );
        field(
            "sha256",
            format!("{:?}", w.sha256),
            format!("{:?}", g.sha256),
        );
        field("device", format!("{:?}", w.rdev), format!("{:?}", g.rdev));
        field("xattrs", show_xattrs(&w.xattrs), show_xattrs(&g.xattrs));
        field("nlink", format!("{:?}", w.nlink), format!("{:?}", g.nlink));
    }
    for (p, g) in &got.objs {
        if !want.objs.contains_key(p) {
            out.push(format!("{}: only in the mount ({})", show(p), g.kind));
        }
    }
    let fmt = |g: &BTreeSet<Vec<u8>>| g.iter().map(|p| show(p)).collect::<Vec<_>>().join(" = ");
    for g in want.links.difference(&got.links) {
        out.push(format!(
            "hard-link group missing from the mount: {}",
            fmt(g)
        ));
    }
    for g in got.links.difference(&want.links) {
        out.push(format!("hard-link group only in the mount: {}", fmt(g)));
    }
    out
}

#[derive(Clone, Copy, Debug)]
enum Oracle {
    /// example/app:v1 (4 layers): `rootfs`.
    App,
    /// example/other:v2 (app minus its top layer): `rootfs-other`.
    Other,
}

impl Oracle {
    fn dir(self) -> &'static str {
        match self {
            Oracle::App => "rootfs",
            Oracle::Other => "rootfs-other",
        }
    }

    fn tree(self) -> &'static Tree {
        static APP: OnceLock<Tree> = OnceLock::new();
        static OTHER: OnceLock<Tree> = OnceLock::new();
        let cell = match self {
            Oracle::App => &APP,
            Oracle::Other => &OTHER,
        };
        cell.get_or_init(|| {
            let root = fixtures().join(self.dir()).canonicalize().unwrap();
            let t = dump(&root);
            // The reference is not vacuous: what the image is meant to hold is there.
            for p in [
                "etc/hello.txt",
                "bin/suid",
                "opq/four",
                "deep/a/b/c/file.txt",
                "dev/zero",
            ] {
                assert!(
                    t.objs.contains_key(p.as_bytes()),
                    "{}: no {p}",
                    root.display()
                );
            }
            for p in ["old", "opq/one", "opq/sub", "data/.wh.fifo"] {
                assert!(
                    !t.objs.contains_key(p.as_bytes()),
                    "{}: {p} is deleted",
                    root.display()
                );
            }
            let v1 = matches!(self, Oracle::App);
            assert_eq!(
                t.objs.contains_key(b"app/VERSION".as_slice()),
                v1,
                "app/ is in v1 only"
            );
            // Whited out in L2, a file again in L4.
            assert_eq!(
                t.objs.get(b"etc/rel-link".as_slice()).map(|o| o.kind),
                v1.then_some("file")
            );
            t
        })
    }
}

/// Mounts `spec` and compares the tree with the reference.
fn check_mount(spec: &str, oracle: Oracle) {
    let dir = scratch();
    let m = ImageMount::mount(&fx(spec), &[], dir.path());
    let line = m.mountinfo();
    for opt in ["ro", "nosuid", "nodev"] {
        assert!(
            line.split([' ', ',']).any(|o| o == opt),
            "{opt} missing from the mount options: {line}"
        );
    }
    let got = dump(&m.path);
    let d = diff(oracle.tree(), &got);
    m.umount();
    assert!(
        d.is_empty(),
        "unionfs mount --image {spec} differs from umoci unpack ({}), {} difference(s):\n  {}",
        oracle.dir(),
        d.len(),
        d.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// `ls --json`

/// An xattr value as `ls --json` shows it: text as is, anything else as 0x+hex.
fn xattr_text(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_owned(),
        _ => format!(
            "0x{}",
            v.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
    }
}

/// Decodes a `ls --json` xattr value (text, or 0x+hex for binary values).
fn xattr_matches(json: &Value, want: &[u8]) -> bool {
    let Some(s) = json.as_str() else { return false };
    if s.as_bytes() == want {
        return true;
    }
    let Some(hex) = s.strip_prefix("0x") else {
        return false;
    };
    hex.len() == 2 * want.len()
        && want
            .iter()
            .enumerate()
            .all(|(i, b)| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16) == Ok(*b))
}

fn ls_rows(spec: &str, extra: &[&str], cache: &Path) -> Vec<Value> {
    let mut args = vec!["ls", "--image", spec];
    args.extend(extra);
    args.extend(["-R", "--json", "--sha256"]);
    let out = unionfs(&args, cache).ok();
    out.stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("`{}`: bad JSON line {l:?}: {e}", out.cmd))
        })
        .collect()
}

/// The path of a row, as the reference tree keys it ("" = root).
fn row_path(r: &Value) -> Vec<u8> {
    let p = r["path"]
        .as_str()
        .unwrap_or_else(|| panic!("row without a path: {r}"));
    p.trim_start_matches('/').as_bytes().to_vec()
}

/// `unionfs ls --image spec -R --json --sha256` lists the reference tree.
fn check_ls(spec: &str, oracle: Oracle) {
    let dir = scratch();
    let rows = ls_rows(&fx(spec), &[], dir.path());
    let want = oracle.tree();
    let mut d = Vec::new();
    let mut seen = BTreeSet::new();
    for r in &rows {
        let p = row_path(r);
        if !seen.insert(p.clone()) {
            d.push(format!("{}: listed twice", show(&p)));
        }
        let Some(w) = want.objs.get(&p) else {
            d.push(format!("{}: only in ls ({})", show(&p), r["type"]));
            continue;
        };
        let mut check = |what: &str, ok: bool| {
            if !ok {
                d.push(format!("{}: {what}: ls says {r}", show(&p)));
            }
        };
        check("type", r["type"] == w.kind);
        check("mode", r["mode"].as_u64() == Some(u64::from(w.perm)));
        check("uid", r["uid"].as_u64() == Some(u64::from(w.uid)));
        check("gid", r["gid"].as_u64() == Some(u64::from(w.gid)));
        if w.kind == "file" {
            check("size", r["size"].as_u64() == w.size);
            check("nlink", r["nlink"].as_u64() == w.nlink);
            let sha = r["sha256"]
                .as_str()
                .map(|s| s.trim_start_matches("sha256:"));
            check("sha256", sha == w.sha256.as_deref());
        }
        if let Some(link) = &w.link {
            check(
                "link",
                r["link"].as_str().map(str::as_bytes) == Some(link.as_slice()),
            );
        }
        if let Some((ma, mi)) = w.rdev {
            check("rdev", r["rdev"] == serde_json::json!([ma, mi]));
        }
        let empty = serde_json::Map::new();
        let got = r["xattrs"].as_object().unwrap_or(&empty);
        let same = got.len() == w.xattrs.len()
            && w.xattrs.iter().all(|(k, v)| {
                got.get(&*String::from_utf8_lossy(k))
                    .is_some_and(|j| xattr_matches(j, v))
            });
        check("xattrs", same);
    }
    for (p, w) in &want.objs {
        if !seen.contains(p) {
            d.push(format!("{}: missing from ls ({})", show(p), w.kind));
        }
    }
    assert!(
        d.is_empty(),
        "unionfs ls --image {spec} -R --json differs from umoci unpack ({}), {} difference(s):\n  {}",
        oracle.dir(),
        d.len(),
        d.join("\n  ")
    );
}

/// The set of paths `ls --image spec` lists.
fn ls_paths(spec: &str, extra: &[&str]) -> BTreeSet<Vec<u8>> {
    let dir = scratch();
    ls_rows(spec, extra, dir.path())
        .iter()
        .map(row_path)
        .collect()
}

fn oracle_paths(o: Oracle) -> BTreeSet<Vec<u8>> {
    o.tree().objs.keys().cloned().collect()
}

/// `ls --image spec` selects the image of `o`.
fn assert_selects(spec: &str, extra: &[&str], o: Oracle) {
    let got = ls_paths(spec, extra);
    let want = oracle_paths(o);
    assert!(
        got == want,
        "ls --image {spec} {extra:?} did not list {} ({}): only listed {:?}, not listed {:?}",
        match o {
            Oracle::App => "example/app:v1",
            Oracle::Other => "example/other:v2",
        },
        o.dir(),
        got.difference(&want).map(|p| show(p)).collect::<Vec<_>>(),
        want.difference(&got).map(|p| show(p)).collect::<Vec<_>>(),
    );
}

// ---------------------------------------------------------------------------
// `verify` and `index`

fn check_verify_and_index(spec: &str, oracle: Oracle) {
    let dir = scratch();
    let spec = fx(spec);
    unionfs(&["verify", "--image", &spec], dir.path()).ok();
    let key = match oracle {
        Oracle::App => "app",
        Oracle::Other => "other",
    };
    let diff_ids: Vec<String> = meta()[key]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().trim_start_matches("sha256:").to_owned())
        .collect();
    let config = meta_str(&[key, "config"])
        .trim_start_matches("sha256:")
        .to_owned();
    let text = unionfs(&["index", "--image", &spec], dir.path()).ok();
    let json = unionfs(&["index", "--image", &spec, "--json"], dir.path()).ok();
    let parses = serde_json::from_str::<Value>(&json.stdout).is_ok()
        || json
            .stdout
            .lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok());
    assert!(parses, "`{}` is not JSON:\n{}", json.cmd, json.stdout);
    for out in [&text, &json] {
        for (i, d) in diff_ids.iter().enumerate() {
            assert!(
                out.stdout.contains(d.as_str()),
                "`{}` does not show layer {i}'s diffID {d}:\n{}",
                out.cmd,
                out.stdout
            );
        }
        assert!(
            out.stdout.contains(&config),
            "`{}` does not show the config digest {config}:\n{}",
            out.cmd,
            out.stdout
        );
    }
    // Bottom first, as in the config.
    let pos: Vec<usize> = diff_ids
        .iter()
        .map(|d| text.stdout.find(d.as_str()).unwrap())
        .collect();
    assert!(
        pos.windows(2).all(|w| w[0] < w[1]),
        "`{}` does not list the layers bottom first:\n{}",
        text.cmd,
        text.stdout
    );
}

// ---------------------------------------------------------------------------
// Every form: the mount, ls, verify and index

macro_rules! forms {
    ($($name:ident: $spec:expr => $oracle:expr;)*) => {
        /// `unionfs mount --image FORM` shows what `umoci unpack` extracts.
        mod mount_matches_umoci {
            use super::*;
            $( #[test] fn $name() { check_mount($spec, $oracle) } )*
        }
        /// `unionfs ls --image FORM -R --json --sha256` lists the same tree.
        mod ls_matches_umoci {
            use super::*;
            $( #[test] fn $name() { check_ls($spec, $oracle) } )*
        }
        /// `unionfs verify --image FORM` passes; `index --image FORM` shows every layer.
        mod verify_and_index {
            use super::*;
            $( #[test] fn $name() { check_verify_and_index($spec, $oracle) } )*
        }
    };
}

forms! {
    oci_layout: "oci" => Oracle::App;
    oci_layout_other: "oci-other" => Oracle::Other;
    oci_archive: "oci.tar" => Oracle::App;
    docker_archive_skopeo: "docker-archive.tar" => Oracle::App;
    docker_save_20_10: "docker-save.tar" => Oracle::App;
    docker_save_25: "docker25.tar" => Oracle::App;
    containerd_export: "containerd.tar" => Oracle::App;
    multi_app_by_name: "multi.tar:example/app:v1" => Oracle::App;
    multi_other_by_name: "multi.tar:example/other:v2" => Oracle::Other;
    // Compressed layers.
    oci_gzip_umoci: "oci-gzip" => Oracle::App;
    umoci_gzip_layout_v2: "umoci-gzip:v2" => Oracle::Other;
    oci_gzip_archive: "oci-gzip.tar" => Oracle::App;
    oci_zstd_skopeo: "oci-zstd" => Oracle::App;
    oci_zstd_multiframe: "oci-zstd-multiframe" => Oracle::App;
    oci_gzip_multimember: "oci-gzip-multimember" => Oracle::App;
    containerd_export_gzip: "containerd-gzip.tar" => Oracle::App;
}

// ---------------------------------------------------------------------------
// Choosing the image: REF and --platform

#[test]
fn multi_tar_ref_by_tag_name_and_full_name() {
    let multi = fx("multi.tar");
    for (r, o) in [
        ("example/other:v2", Oracle::Other),
        ("v2", Oracle::Other),
        ("docker.io/example/other:v2", Oracle::Other),
        ("example/app:v1", Oracle::App),
        ("v1", Oracle::App),
        ("docker.io/example/app:v1", Oracle::App),
    ] {
        assert_selects(&format!("{multi}:{r}"), &[], o);
    }
}

#[test]
fn multi_tar_mounts_the_image_its_tag_names() {
    let dir = scratch();
    let m = ImageMount::mount(&format!("{}:v2", fx("multi.tar")), &[], dir.path());
    let d = diff(Oracle::Other.tree(), &dump(&m.path));
    m.umount();
    assert!(d.is_empty(), "multi.tar:v2:\n  {}", d.join("\n  "));
}

/// A `docker save` archive of the old format has no manifest: its images are
/// named by their image ID, the config digest (`docker images --digests`
/// shows no digest for them; `docker image inspect` shows the ID).
#[test]
fn multi_tar_ref_by_image_id_digest() {
    let multi = fx("multi.tar");
    assert_selects(
        &format!("{multi}:@{}", meta_str(&["other", "config"])),
        &[],
        Oracle::Other,
    );
    assert_selects(
        &format!("{multi}:@{}", meta_str(&["app", "config"])),
        &[],
        Oracle::App,
    );
}

#[test]
fn multi_tar_without_ref_fails_naming_both_images() {
    let dir = scratch();
    let multi = fx("multi.tar");
    let out = unionfs(&["ls", "--image", multi.as_str(), "-R"], dir.path());
    assert!(
        !out.status.success(),
        "`{}` succeeded:\n{}",
        out.cmd,
        out.stdout
    );
    for name in ["example/app:v1", "example/other:v2", "multi.tar"] {
        assert!(
            out.stderr.contains(name),
            "`{}`: the error should name {name}: {}",
            out.cmd,
            out.stderr
        );
    }
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    let err = ImageMount::new(&multi, &[], dir.path())
        .err()
        .expect("mount --image multi.tar without a REF succeeded");
    for name in ["example/app:v1", "example/other:v2"] {
        assert!(err.stderr.contains(name), "`{}`: {}", err.cmd, err.stderr);
    }
}

#[test]
fn ref_by_tag_and_name_in_every_single_image_form() {
    for (form, refs) in [
        ("oci", &["v1"][..]),
        ("oci.tar", &["v1"]),
        (
            "docker-archive.tar",
            &["v1", "example/app:v1", "docker.io/example/app:v1"],
        ),
        (
            "docker-save.tar",
            &["v1", "example/app:v1", "docker.io/example/app:v1"],
        ),
        (
            "docker25.tar",
            &["v1", "example/app:v1", "docker.io/example/app:v1"],
        ),
        (
            "containerd.tar",
            &["v1", "example/app:v1", "docker.io/example/app:v1"],
        ),
        ("oci-gzip", &["v1"]),
        ("oci-gzip.tar", &["v1"]),
        ("oci-zstd", &["v1"]),
        ("oci-zstd-multiframe", &["v1"]),
        ("oci-gzip-multimember", &["v1"]),
        (
            "containerd-gzip.tar",
            &["v1", "example/app:v1", "docker.io/example/app:v1"],
        ),
    ] {
        for r in refs {
            assert_selects(&format!("{}:{r}", fx(form)), &[], Oracle::App);
        }
    }
}

#[test]
fn ref_by_manifest_digest() {
    let manifest = meta_str(&["app", "manifest"]);
    for form in ["oci", "oci.tar", "docker25.tar"] {
        assert_selects(&format!("{}:@{manifest}", fx(form)), &[], Oracle::App);
    }
    assert_selects(
        &format!("{}:@{}", fx("oci-other"), meta_str(&["other", "manifest"])),
        &[],
        Oracle::Other,
    );
    // The containerd export names the image by its index's digest.
    let index = meta_str(&["containerd", "index"]);
    assert_selects(
        &format!("{}:@{index}", fx("containerd.tar")),
        &[],
        Oracle::App,
    );
    // umoci's own manifest (gzip layers), kept as is by the copy and by skopeo.
    let gzip = meta_str(&["gzip", "manifest"]);
    for form in ["oci-gzip", "oci-gzip.tar", "umoci-gzip"] {
        assert_selects(&format!("{}:@{gzip}", fx(form)), &[], Oracle::App);
    }
    let index = meta_str(&["containerd_gzip", "index"]);
    assert_selects(
        &format!("{}:@{index}", fx("containerd-gzip.tar")),
        &[],
        Oracle::App,
    );
}

#[test]
fn unknown_ref_fails_naming_it() {
    let dir = scratch();
    let absent = format!("sha256:{}", "0".repeat(64));
    for (form, r) in [
        ("oci", "v9"),
        ("multi.tar", "example/other:v9"),
        ("docker25.tar", "nope"),
        ("containerd.tar", "example/zzz:v1"),
        ("oci", &format!("@{absent}")[..]),
    ] {
        let spec = format!("{}:{r}", fx(form));
        let err = ImageMount::new(&spec, &[], dir.path())
            .err()
            .unwrap_or_else(|| panic!("mount --image {spec} succeeded"));
        let shown = r.trim_start_matches('@');
        assert!(
            err.stderr.replace(&fx(form), "").contains(shown),
            "`{}`: the error should name {shown}: {}",
            err.cmd,
            err.stderr
        );
        assert_eq!(
            err.stderr.trim_end().lines().count(),
            1,
            "one line: {}",
            err.stderr
        );
    }
}

#[test]
fn containerd_export_platform_choice() {
    let c = fx("containerd.tar");
    assert_selects(&c, &["--platform", "linux/amd64"], Oracle::App);
    let dir = scratch();
    let m = ImageMount::mount(&c, &["--platform", "linux/amd64"], dir.path());
    assert!(m.path.join("app/VERSION").is_file());
    m.umount();
}

// ---------------------------------------------------------------------------
// A writable mount of an image

#[test]
fn writable_image_mount_writes_to_the_upper() {
    let dir = scratch();
    let upper = dir.path().join("upper");
    fs::create_dir(&upper).unwrap();
    let up = upper.display().to_string();
    let m = ImageMount::mount(&fx("oci.tar"), &["--upper", &up], dir.path());
    assert!(
        m.mountinfo().split([' ', ',']).any(|o| o == "rw"),
        "an --upper mount is rw: {}",
        m.mountinfo()
    );
    fs::write(m.path.join("etc/new.txt"), b"new\n").unwrap();
    fs::remove_file(m.path.join("etc/motd")).unwrap();
    fs::write(m.path.join("opq/four"), b"changed\n").unwrap();
    assert_eq!(fs::read(m.path.join("etc/new.txt")).unwrap(), b"new\n");
    assert!(!m.path.join("etc/motd").exists());
    m.umount();
    assert_eq!(fs::read(upper.join("etc/new.txt")).unwrap(), b"new\n");
    assert_eq!(fs::read(upper.join("opq/four")).unwrap(), b"changed\n");
    assert!(
        fs::symlink_metadata(upper.join("etc/.wh.motd")).is_ok(),
        "deleting a lower file writes a whiteout in the upper"
    );
    // The image itself is untouched: a fresh read-only mount shows the reference.
    check_mount("oci.tar", Oracle::App);
}

// ---------------------------------------------------------------------------
// Broken inputs

/// Mounting `spec` fails: non-zero exit, one line on stderr that names the
/// archive (`name`) and says one of `keywords` (case-insensitive), nothing
/// mounted.
fn check_refused(spec: &str, extra: &[&str], name: &str, keywords: &[&str]) {
    let dir = scratch();
    let err = match ImageMount::new(spec, extra, dir.path()) {
        Ok(m) => {
            m.umount();
            panic!("unionfs mount --image {spec} {extra:?} succeeded; it must be refused");
        }
        Err(e) => e,
    };
    let msg = err.stderr.trim_end();
    assert!(!msg.contains("panicked"), "`{}` panicked:\n{msg}", err.cmd);
    assert_eq!(
        msg.lines().count(),
        1,
        "`{}`: expected one line on stderr, got:\n{msg}",
        err.cmd
    );
    assert!(
        msg.contains(name),
        "`{}`: the error should name {name}: {msg}",
        err.cmd
    );
    // The keyword must be in what the message says, not in the file's name
    // ("missing-layer.tar" says "missing").
    let lower = msg.replace(spec, "").replace(name, "").to_lowercase();
    assert!(
        keywords.iter().any(|k| lower.contains(k)),
        "`{}`: the error should say one of {keywords:?}: {msg}",
        err.cmd
    );
    assert!(!is_mounted(&dir.path().join("mnt").canonicalize().unwrap()));
}

macro_rules! bad {
    ($($name:ident: $spec:expr, $extra:expr, $shown:expr => $keywords:expr;)*) => {
        /// Each broken input is refused with one clear line, nothing mounted.
        mod bad_input_refused {
            use super::*;
            $( #[test] fn $name() { check_refused(&fx($spec), $extra, $shown, $keywords) } )*
        }
    };
}

bad! {
    layer_bytes_do_not_match_diff_id: "bad/diffid-mismatch.tar", &[], "diffid-mismatch.tar"
        => &["diff"];
    manifest_names_a_missing_layer: "bad/missing-layer.tar", &[], "missing-layer.tar"
        => &["missing", "not found", "no such", "lacks", "absent"];
    config_has_one_diff_id_too_few: "bad/diffid-count.tar", &[], "diffid-count.tar"
        => &["diff"];
    unknown_layer_media_type: "bad/unknown-media-type", &[], "unknown-media-type"
        => &["media type"];
    layer_symlink_escapes_the_archive: "bad/symlink-escape.tar", &[], "symlink-escape.tar"
        => &["outside", "escape", "out of the archive"];
    layer_symlink_is_absolute: "bad/symlink-absolute.tar", &[], "symlink-absolute.tar"
        => &["outside", "escape", "out of the archive", "absolute"];
    manifest_blob_does_not_match_its_digest: "bad/manifest-digest", &[], "manifest-digest"
        => &["digest"];
    platform_whose_blobs_are_absent: "containerd.tar", &["--platform", "linux/arm64"], "containerd.tar"
        => &["missing", "not found", "no such", "lacks", "absent"];
    containerd_gzip_platform_whose_blobs_are_absent: "containerd-gzip.tar", &["--platform", "linux/arm64"],
        "containerd-gzip.tar" => &["missing", "not found", "no such", "lacks", "absent"];
    gzip_trailer_crc_flipped: "bad/gzip-crc", &[], "gzip-crc"
        => &["digest", "crc"];
    gzip_header_byte_flipped_blob_digest: "bad/gzip-blob-digest", &[], "gzip-blob-digest"
        => &["digest"];
    gzip_layer_does_not_decompress_to_its_diff_id: "bad/gzip-diffid", &[], "gzip-diffid"
        => &["diff"];
    gzip_layer_truncated: "bad/gzip-truncated", &[], "gzip-truncated"
        => &["truncated", "offset"];
    bzip2_layer: "bad/bzip2-layer.tar", &[], "bzip2-layer.tar"
        => &["bzip2"];
}

/// The comparison is not vacuous: v1's mount against v2's reference, and
/// against a reference with a mode, an owner, an xattr, a symlink target and a
/// hard-link group changed, shows exactly those differences.
#[test]
fn comparison_is_not_vacuous() {
    let dir = scratch();
    let m = ImageMount::mount(&fx("oci"), &[], dir.path());
    let got = dump(&m.path);
    m.umount();
    let d = diff(Oracle::Other.tree(), &got).join("\n");
    for want in [
        "/app/VERSION: only in the mount (file)",
        "/etc/rel-link: only in the mount (file)",
        "/etc/motd.hl: only in the mount (file)",
        "/data/fifo: missing from the mount (fifo)",
        "/opq/four: sha256: mount",
        "/big/blob.bin: owner: mount 2000:2000, umoci 0:0",
        "hard-link group only in the mount: /etc/motd = /etc/motd.hl",
    ] {
        assert!(d.contains(want), "the diff should say {want:?}:\n{d}");
    }
    let mut w = Oracle::App.tree().clone();
    fn obj<'a>(w: &'a mut Tree, p: &str) -> &'a mut Obj {
        w.objs.get_mut(p.as_bytes()).unwrap()
    }
    obj(&mut w, "bin/suid").perm = 0o755;
    obj(&mut w, "home/user").uid = 0;
    obj(&mut w, "etc/hello.txt").xattrs.clear();
    obj(&mut w, "bin/abs-link").link = Some(b"/etc/other".to_vec());
    obj(&mut w, "dev/zero").rdev = Some((1, 3));
    w.links.retain(|g| !g.contains(b"bin/tool".as_slice()));
    let d = diff(&w, &got).join("\n");
    for want in [
        "/bin/suid: mode: mount 4755, umoci 755",
        "/home/user: owner: mount 1000:1000, umoci 0:1000",
        "/etc/hello.txt: xattrs: mount {user.foo=baz}, umoci {}",
        "/bin/abs-link: symlink target",
        "/dev/zero: device: mount Some((1, 5)), umoci Some((1, 3))",
        "hard-link group only in the mount: /bin/tool = /usr/bin/tool-hl",
    ] {
        assert!(d.contains(want), "the diff should say {want:?}:\n{d}");
    }
    assert_eq!(d.lines().count(), 6, "{d}");
}

#[test]
fn verify_detects_a_layer_that_does_not_match_its_diff_id() {
    for (form, keywords) in [
        ("diffid-mismatch.tar", &["diff"][..]),
        ("gzip-diffid", &["diff"]),
        ("gzip-crc", &["digest", "crc"]),
        ("gzip-blob-digest", &["digest"]),
        ("gzip-truncated", &["truncated", "offset"]),
    ] {
        let dir = scratch();
        let out = unionfs(
            &["verify", "--image", &fx(&format!("bad/{form}"))],
            dir.path(),
        );
        assert!(
            !out.status.success(),
            "`{}` passed:\n{}",
            out.cmd,
            out.stdout
        );
        let said = format!("{}{}", out.stdout, out.stderr)
            .replace(form, "")
            .to_lowercase();
        assert!(
            keywords.iter().any(|k| said.contains(k)),
            "`{}`: should say one of {keywords:?}: {}{}",
            out.cmd,
            out.stdout,
            out.stderr
        );
    }
}

/// Broken compressed layers share their diffIDs with the good ones (the
/// config is the same): with one index cache, refusing them leaves nothing
/// a good image would then use (an index of the wrong bytes under the
/// diffID), and a good image indexed first does not let them through.
#[test]
fn broken_layers_do_not_poison_a_shared_cache() {
    let dir = scratch();
    let bad = [
        "bad/gzip-diffid",
        "bad/gzip-crc",
        "bad/gzip-blob-digest",
        "bad/gzip-truncated",
        "bad/diffid-mismatch.tar",
    ];
    let refuse = |form: &str| {
        if let Ok(m) = ImageMount::new(&fx(form), &[], dir.path()) {
            m.umount();
            panic!("{form} was mounted with a shared cache; it must be refused");
        }
    };
    let good = |form: &str| {
        let m = ImageMount::mount(&fx(form), &[], dir.path());
        let d = diff(Oracle::App.tree(), &dump(&m.path));
        m.umount();
        assert!(
            d.is_empty(),
            "{form} after broken forms, one cache, differs from umoci unpack:\n  {}",
            d.join("\n  ")
        );
    };
    bad.iter().for_each(|f| refuse(f));
    good("oci-gzip");
    bad.iter().for_each(|f| refuse(f));
    good("oci-gzip-multimember");
    good("oci");
    bad.iter().for_each(|f| refuse(f));
}

/// Reads `len` bytes at `off` (fewer only at the end of the file).
fn read_at_full(f: &fs::File, off: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    let mut n = 0;
    while n < len {
        match f.read_at(&mut buf[n..], off + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => panic!("pread({off}+{n}): {e}"),
        }
    }
    buf.truncate(n);
    buf
}

/// Random access into compressed layers: preads of the 1.5 MiB file (in
/// layers 0 and 3) at and around every 64 KiB (the multi-frame zstd frames;
/// gzip checkpoints with `--checkpoint-spacing 64K`) and at pseudo-random
/// offsets, in shuffled order, from four threads at once, with a span cache
/// smaller than the file, return the reference's bytes.
#[test]
fn random_reads_of_compressed_layers() {
    let want = fs::read(fixtures().join("rootfs/big/blob.bin")).unwrap();
    let len = want.len() as u64;
    for form in [
        "oci-gzip",
        "oci-zstd",
        "oci-zstd-multiframe",
        "oci-gzip-multimember",
        "containerd-gzip.tar",
    ] {
        let dir = scratch();
        let m = ImageMount::mount(
            &fx(form),
            &["--span-cache", "256K", "--checkpoint-spacing", "64K"],
            dir.path(),
        );
        let path = m.path.join("big/blob.bin");
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (path, want) = (&path, &want);
                s.spawn(move || {
                    let f = fs::File::open(path).unwrap();
                    let mut offs: Vec<u64> = vec![0, len - 1, len, len + 10];
                    for k in 1..=len / 65536 {
                        offs.extend([k * 65536 - 1000, k * 65536 - 1, k * 65536, k * 65536 + 1]);
                    }
                    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (t + 1);
                    let mut next = move || {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x
                    };
                    offs.extend((0..200).map(|_| next() % len));
                    for i in (1..offs.len()).rev() {
                        offs.swap(i, (next() % (i as u64 + 1)) as usize);
                    }
                    for off in offs {
                        let n = [1usize, 512, 4096, 70_000, 300_000][(next() % 5) as usize];
                        let got = read_at_full(&f, off, n);
                        let lo = (off.min(len)) as usize;
                        let hi = (off + n as u64).min(len) as usize;
                        assert!(
                            got == want[lo..hi],
                            "{form}: pread of {n} bytes at {off} of big/blob.bin: {} bytes, \
                             not the reference's {}",
                            got.len(),
                            hi - lo
                        );
                    }
                });
            }
        });
        m.umount();
    }
}

/// A writable mount of compressed layers copies a file up whole from its
/// compressed blob (an append to the 1.5 MiB file; a chmod of a small one).
#[test]
fn writable_mount_of_compressed_layers_copies_up() {
    let reference = fixtures().join("rootfs");
    for form in ["oci-zstd-multiframe", "oci-gzip"] {
        let dir = scratch();
        let upper = dir.path().join("upper");
        fs::create_dir(&upper).unwrap();
        let up = upper.display().to_string();
        let m = ImageMount::mount(&fx(form), &["--upper", &up], dir.path());
        let mut want = fs::read(reference.join("big/blob.bin")).unwrap();
        {
            use std::io::Write;
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(m.path.join("big/blob.bin"))
                .unwrap();
            f.write_all(b"appended\n").unwrap();
        }
        want.extend_from_slice(b"appended\n");
        fs::set_permissions(
            m.path.join("etc/hello.txt"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        assert!(
            fs::read(m.path.join("big/blob.bin")).unwrap() == want,
            "{form}: through the mount"
        );
        m.umount();
        assert!(
            fs::read(upper.join("big/blob.bin")).unwrap() == want,
            "{form}: the upper's copy"
        );
        let md = fs::metadata(upper.join("big/blob.bin")).unwrap();
        assert_eq!(
            (md.uid(), md.gid()),
            (2000, 2000),
            "{form}: copy-up keeps the owner"
        );
        assert_eq!(
            fs::read(upper.join("etc/hello.txt")).unwrap(),
            fs::read(reference.join("etc/hello.txt")).unwrap(),
            "{form}: a chmod copies the data up too"
        );
        assert_eq!(
            fs::metadata(upper.join("etc/hello.txt")).unwrap().mode() & 0o7777,
            0o600
        );
    }
}

/// One index cache for every form of the image, mounted one after the
/// other: the layer indexes are shared by diffID, while the blobs differ
/// (plain, gzip of one member or many, zstd of one frame or many), so each
/// mount must read its own blob through its own seek table, never another
/// form's offsets. Every mount shows the reference tree.
#[test]
fn one_cache_serves_every_form_of_the_same_layers() {
    let dir = scratch();
    for form in [
        "oci",
        "oci-gzip",
        "oci-zstd",
        "oci-gzip-multimember",
        "oci-zstd-multiframe",
        "oci.tar",
        "oci-gzip.tar",
        "containerd-gzip.tar",
        "docker-save.tar",
        "oci-gzip",
    ] {
        let m = ImageMount::mount(&fx(form), &[], dir.path());
        let d = diff(Oracle::App.tree(), &dump(&m.path));
        m.umount();
        assert!(
            d.is_empty(),
            "{form}, mounted with the cache of the forms before it, differs from umoci \
             unpack, {} difference(s):\n  {}",
            d.len(),
            d.join("\n  ")
        );
    }
}

/// The fixtures are what they claim: every form's layers are the same four
/// tars, the docker archives lay out their layers as the real tools do.
#[test]
fn fixtures_have_the_expected_shape() {
    let dir = fixtures();
    for f in [
        "oci/index.json",
        "oci.tar",
        "docker-archive.tar",
        "docker-save.tar",
        "docker25.tar",
        "containerd.tar",
        "multi.tar",
        "oci-gzip/index.json",
        "oci-gzip.tar",
        "oci-zstd/index.json",
        "oci-zstd-multiframe/index.json",
        "oci-gzip-multimember/index.json",
        "containerd-gzip.tar",
        "rootfs/etc/hello.txt",
        "rootfs-other/opq/four",
        "bad/README.txt",
    ] {
        assert!(dir.join(f).exists(), "{} missing", dir.join(f).display());
    }
    let list = |tar: &str| -> String {
        let out = Command::new("tar")
            .args(["-tvf"])
            .arg(dir.join(tar))
            .output()
            .expect("run tar");
        assert!(out.status.success(), "tar -tvf {tar}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // skopeo's docker-archive: <v1id>/layer.tar are symlinks to <diffid>.tar.
    let da = list("docker-archive.tar");
    assert!(
        da.lines()
            .any(|l| l.starts_with('l') && l.contains("/layer.tar -> ../")),
        "{da}"
    );
    // docker 20.10: real layer.tar files; in multi.tar, other:v2's top layer is
    // a symlink to app's copy of the same layer.
    let ds = list("docker-save.tar");
    assert!(
        ds.lines()
            .any(|l| l.starts_with('-') && l.ends_with("/layer.tar")),
        "{ds}"
    );
    let multi = list("multi.tar");
    assert!(
        multi
            .lines()
            .any(|l| l.starts_with('l') && l.contains("/layer.tar -> ../")),
        "{multi}"
    );
    assert_eq!(meta()["app"]["diff_ids"].as_array().unwrap().len(), 4);
}

/// The compressed forms are compressed as they claim: in each OCI layout
/// every layer blob starts with the magic bytes of its media type's
/// compression, and (counted by the script, which decompressed every layer
/// and checked it against its diffID) single-frame / single-member forms have
/// one piece per layer, the multi-piece forms many in their large layers.
#[test]
fn compressed_fixtures_are_compressed_as_claimed() {
    let dir = fixtures();
    let gzip = "application/vnd.oci.image.layer.v1.tar+gzip";
    let zstd = "application/vnd.oci.image.layer.v1.tar+zstd";
    for (layout, media, magic) in [
        ("oci-gzip", gzip, &[0x1f, 0x8b][..]),
        ("oci-zstd", zstd, &[0x28, 0xb5, 0x2f, 0xfd]),
        ("oci-zstd-multiframe", zstd, &[0x28, 0xb5, 0x2f, 0xfd]),
        ("oci-gzip-multimember", gzip, &[0x1f, 0x8b]),
    ] {
        let root = dir.join(layout);
        let blob = |digest: &str| {
            let p = root
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:"));
            fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        };
        let index: Value =
            serde_json::from_slice(&fs::read(root.join("index.json")).unwrap()).unwrap();
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 1, "{layout}: one image");
        let man: Value =
            serde_json::from_slice(&blob(manifests[0]["digest"].as_str().unwrap())).unwrap();
        assert_eq!(
            man["config"]["digest"].as_str(),
            Some(meta_str(&["app", "config"]).as_str()),
            "{layout}: the config is umoci's, unchanged"
        );
        let layers = man["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 4, "{layout}");
        for (i, l) in layers.iter().enumerate() {
            assert_eq!(l["mediaType"].as_str(), Some(media), "{layout}: layer {i}");
            let b = blob(l["digest"].as_str().unwrap());
            assert!(
                b.starts_with(magic),
                "{layout}: layer {i} starts {:02x?}",
                &b[..4]
            );
            assert_eq!(
                format!("sha256:{:x}", Sha256::digest(&b)),
                l["digest"].as_str().unwrap(),
                "{layout}: layer {i}"
            );
        }
    }
    let shapes = &meta()["compressed"];
    let pieces = |form: &str| -> Vec<u64> {
        shapes[form]
            .as_array()
            .unwrap_or_else(|| panic!("image.json: no compressed.{form}"))
            .iter()
            .map(|l| l["pieces"].as_u64().unwrap())
            .collect()
    };
    for form in [
        "oci-gzip",
        "oci-gzip.tar",
        "oci-zstd",
        "containerd-gzip.tar",
    ] {
        assert_eq!(
            pieces(form),
            [1, 1, 1, 1],
            "{form}: one gzip member / zstd frame per layer"
        );
    }
    // Layers 0 and 3 hold the 1.5 MiB file: 64 KiB frames, members per entry and per 64 KiB.
    for form in ["oci-zstd-multiframe", "oci-gzip-multimember"] {
        let p = pieces(form);
        assert!(p[0] > 20 && p[3] > 20, "{form}: pieces per layer {p:?}");
    }
    assert!(
        pieces("oci-gzip-multimember").iter().all(|&n| n > 2),
        "every multi-member gzip layer has several members"
    );
}

/// `unionfs inspect` on the umoci image (uncompressed OCI layout): every
/// per-layer figure equals the model computed from GNU tar's listing of the
/// layer blobs; the image totals add up; `--ci` fails on this image (it
/// rewrites a 1.5 MB file to change its owner: efficiency 0.5) and passes
/// with thresholds it meets; `--layer N --list` agrees with the counts.
#[test]
fn inspect_figures_match_gnu_tar_listings_of_the_umoci_image() {
    let sc = scratch();
    let spec = format!("{}:v1", fx("oci"));
    let o = unionfs(
        &["inspect", "--image", &spec, "--json", "--top", "3"],
        sc.path(),
    );
    assert!(o.status.success(), "{o:?}");
    let v: Value = serde_json::from_str(&o.stdout).expect("inspect --json is JSON");
    let layers = v["layers"].as_array().expect("layers");
    assert!(layers.len() >= 3, "{v}");
    let listings: Vec<_> = layers
        .iter()
        .map(|l| {
            let d = l["diff_id"].as_str().unwrap();
            let blob = fixtures()
                .join("oci/blobs/sha256")
                .join(d.strip_prefix("sha256:").unwrap());
            inspect_model::gnu_listing(&blob)
        })
        .collect();
    let want = inspect_model::model(&listings);
    let pair = |l: &Value, k: &str| {
        (
            l[k]["entries"].as_u64().unwrap(),
            l[k]["bytes"].as_u64().unwrap(),
        )
    };
    for (i, (l, w)) in layers.iter().zip(&want).enumerate() {
        let got = inspect_model::Want {
            entries: l["entries"].as_u64().unwrap(),
            added: pair(l, "added"),
            modified: pair(l, "modified"),
            deleted: l["deleted"].as_u64().unwrap(),
            hidden: pair(l, "hidden"),
            opaque_dirs: l["opaque_dirs"].as_u64().unwrap(),
            stored: l["stored"]["bytes"].as_u64().unwrap(),
            shadowed: l["shadowed"]["bytes"].as_u64().unwrap(),
        };
        assert_eq!(&got, w, "layer {i}: {l}");
        // The listing --layer N --list prints: one line per change.
        let o = unionfs(
            &[
                "inspect",
                "--image",
                &spec,
                "--layer",
                &i.to_string(),
                "--list",
            ],
            sc.path(),
        );
        assert!(o.status.success(), "{o:?}");
        let count = |k: char| o.stdout.lines().filter(|x| x.starts_with(k)).count() as u64;
        assert_eq!(count('D'), w.deleted, "layer {i}: {}", o.stdout);
        assert_eq!(count('A'), w.added.0, "layer {i}: {}", o.stdout);
        assert_eq!(count('C'), w.modified.0, "layer {i}: {}", o.stdout);
    }
    let stored: u64 = want.iter().map(|w| w.stored).sum();
    let wasted: u64 = want.iter().map(|w| w.shadowed).sum();
    assert_eq!(v["stored_bytes"].as_u64(), Some(stored));
    assert_eq!(v["wasted_bytes"].as_u64(), Some(wasted));
    assert_eq!(v["visible_bytes"].as_u64(), Some(stored - wasted));
    assert!(
        wasted > 0,
        "the fixture wastes bytes (a rewritten big file): {v}"
    );
    // The largest wasted file is the 1.5 MB blob layer 0 stores and layer 3 rewrites.
    let top = &v["largest_wasted"][0];
    assert_eq!(top["path"], "/big/blob.bin", "{v}");
    assert_eq!(top["how"], "replaced");
    let o = unionfs(&["inspect", "--image", &spec, "--ci"], sc.path());
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(o.stdout.contains("FAIL  lowest-efficiency"), "{}", o.stdout);
    let o = unionfs(
        &[
            "inspect",
            "--image",
            &spec,
            "--ci",
            "--lowest-efficiency",
            "0.4",
            "--highest-wasted-share",
            "1",
        ],
        sc.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
}
