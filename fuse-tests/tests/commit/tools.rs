//! Tools of the commit tests (fuse-tests/tests/commit.rs) that know nothing
//! of commit: the image fixtures and the `unionfs` binary, running commands
//! with a timeout (as root or as the rootless user), unionfs and system
//! mounts, tree dumps and their comparison, tar listings read with the `tar`
//! crate, and a private dockerd.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::util::{force_unmount, is_mounted, unescape_mountinfo, xattrs};

// ---------------------------------------------------------------------------
// The fixtures, the binary, scratch space

/// Where tools/image-fixtures builds the image (one subdirectory per script hash).
pub const FIXTURE_ROOT: &str = "/var/tmp/unionfs-image-fixtures";
/// Longest any one command may take.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest a build (of the binary, of the fixtures) may take.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(1800);

/// The checkout.
pub use crate::util::repo_root;

/// The effective uid of this process.
pub fn euid() -> u32 {
    // SAFETY: trivial getter.
    unsafe { libc::geteuid() }
}

/// The fixture directory, built (or checked: the script is idempotent) once
/// per process under an flock, as fuse-tests/tests/image.rs does.
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        assert_eq!(
            euid(),
            0,
            "the commit tests need root (mounts, devices, dockerd, umoci keeps owners)"
        );
        let script = repo_root().join("tools/image-fixtures");
        let bytes = fs::read(&script).unwrap_or_else(|e| panic!("read {}: {e}", script.display()));
        let key = format!("{:x}", Sha256::digest(&bytes));
        let root = Path::new(FIXTURE_ROOT);
        fs::create_dir_all(root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
        let lock = fs::File::create(root.join(".lock")).expect("create the fixture lock");
        // SAFETY: a valid fd, held until `lock` drops at the end of this closure.
        let r = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
        assert_eq!(r, 0, "flock {}/.lock", root.display());
        let dir = root.join(&key[..16]);
        let out = run_for(Command::new(&script).arg(&dir), BUILD_TIMEOUT);
        assert!(
            out.status.success(),
            "{} {} failed ({}):\n{}{}",
            script.display(),
            dir.display(),
            out.status,
            out.text(),
            out.stderr
        );
        dir
    })
}

/// A fixture path, as a string.
pub fn fx(rel: &str) -> String {
    fixtures().join(rel).display().to_string()
}

/// The `unionfs` binary ([`crate::util::unionfs_bin`]), checked to have
/// `commit`.
pub fn bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = crate::util::unionfs_bin().to_path_buf();
        let help = run(Command::new(&bin).args(["commit", "--help"]));
        assert!(
            help.status.success() && help.text().contains("--upper"),
            "{} has no `commit` command",
            bin.display()
        );
        bin
    })
}

/// This process's scratch root, /tmp/unionfs-commit-PID, mode 0755 (the
/// rootless user reaches its own directory below it). The roots of processes
/// that are gone are removed first, their leftover mounts detached.
pub fn work_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let tmp = std::env::temp_dir();
        for e in fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix("unionfs-commit-") else {
                continue;
            };
            if pid.parse::<u32>().is_err() || Path::new("/proc").join(pid).exists() {
                continue;
            }
            detach_mounts_under(&e.path());
            let _ = fs::remove_dir_all(e.path());
        }
        let root = tmp.join(format!("unionfs-commit-{}", std::process::id()));
        mkdir(&root);
        root.canonicalize().unwrap()
    })
}

/// Creates `p` (and parents), mode 0755.
pub fn mkdir(p: &Path) {
    fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A fresh directory for one test, mode 0755, removed when dropped.
pub fn scratch(prefix: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(work_root())
        .expect("tempdir");
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// The mount points under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = info
        .split(|&b| b == b'\n')
        .filter_map(|l| l.split(|&b| b == b' ').nth(4))
        .map(|mp| PathBuf::from(OsStr::from_bytes(&unescape_mountinfo(mp))))
        .filter(|mp| mp.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    out
}

/// Unmounts (lazily if need be) everything mounted under `dir`.
pub fn detach_mounts_under(dir: &Path) {
    for mp in mounts_under(dir) {
        force_unmount(&mp);
    }
}

// ---------------------------------------------------------------------------
// Running commands

/// What a command did.
pub struct Out {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub cmd: String,
}

impl Out {
    /// Its stdout, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Asserts success.
    pub fn ok(self) -> Out {
        assert!(
            self.status.success(),
            "`{}` failed ({}):\n{}{}",
            self.cmd,
            self.status,
            self.text(),
            self.stderr
        );
        self
    }

    /// Asserts a clean refusal: exit status 1, one line on stderr, no panic.
    /// Returns that line.
    pub fn refused(self) -> String {
        assert!(
            !self.status.success(),
            "`{}` succeeded; it must be refused:\n{}",
            self.cmd,
            self.text()
        );
        let msg = self.stderr.trim_end();
        assert!(!msg.contains("panicked"), "`{}` panicked:\n{msg}", self.cmd);
        assert_eq!(
            self.status.code(),
            Some(1),
            "`{}`: exit status {} (want 1): {msg}",
            self.cmd,
            self.status
        );
        assert_eq!(
            msg.lines().count(),
            1,
            "`{}`: expected one line on stderr, got:\n{msg}",
            self.cmd
        );
        msg.to_owned()
    }
}

/// Runs `c` with stdin closed, output captured, killed after [`CMD_TIMEOUT`].
pub fn run(c: &mut Command) -> Out {
    run_for(c, CMD_TIMEOUT)
}

/// Runs `c` with stdin closed, output captured, killed after `timeout`.
pub fn run_for(c: &mut Command, timeout: Duration) -> Out {
    let cmd = format!("{c:?}").replace('"', "");
    let mut child = c
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
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{cmd}` did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut bufs = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(5);
        let (i, b) = rx.recv_timeout(left).unwrap_or_else(|_| {
            panic!("`{cmd}` exited but something (a daemon?) still holds its stdout/stderr")
        });
        bufs[i] = b;
    }
    let [stdout, stderr] = bufs;
    Out {
        status,
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        cmd,
    }
}

/// Runs `prog args`.
pub fn tool<S: AsRef<OsStr>>(prog: &str, args: &[S]) -> Out {
    run(Command::new(prog).args(args))
}

/// Runs `unionfs args` as root, with this process's index cache and `env`.
pub fn uf_env<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &str)]) -> Out {
    let mut c = Command::new(bin());
    c.args(args)
        .env("XDG_CACHE_HOME", work_root().join("cache"));
    c.env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in env {
        c.env(k, v);
    }
    let mut out = run(&mut c);
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    let env: String = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    out.cmd = format!("{env}unionfs {}", shown.join(" "));
    out
}

/// Runs `unionfs args` as root, with this process's index cache.
pub fn uf<S: AsRef<OsStr>>(args: &[S]) -> Out {
    uf_env(args, &[])
}

/// Runs `sh -ec script` in `cwd` as root.
pub fn sh_root(script: &str, cwd: &Path) -> Out {
    run(Command::new("sh").args(["-ec", script]).current_dir(cwd))
}

/// The unprivileged user of the rootless upper: (name, uid, gid). Fails
/// loudly, saying what to set up, if the machine cannot run it.
pub fn rootless_user() -> (String, u32, u32) {
    let name = std::env::var("UNIONFS_ROOTLESS_USER").unwrap_or_else(|_| "unionfs-rootless".into());
    let id = |flag: &str| -> u32 {
        let o = tool("id", &[flag, &name]);
        assert!(
            o.status.success(),
            "no user {name:?} for the rootless upper: create one (useradd --create-home {name}) \
             or name another with UNIONFS_ROOTLESS_USER; tools/test does this"
        );
        o.text().trim().parse().unwrap()
    };
    let (uid, gid) = (id("-u"), id("-g"));
    assert_ne!(uid, 0, "{name} must not be root");
    let fuse = fs::metadata("/dev/fuse").expect("/dev/fuse is missing (modprobe fuse)");
    assert!(
        fuse.permissions().mode() & 0o006 == 0o006,
        "/dev/fuse is not usable by normal users: chmod 0666 /dev/fuse (tools/test does it)"
    );
    let fm = fs::metadata("/usr/bin/fusermount3")
        .expect("fusermount3 is missing (apt-get install fuse3)");
    assert!(
        fm.mode() & 0o4000 != 0,
        "/usr/bin/fusermount3 is not setuid"
    );
    let conf = fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
    assert!(
        conf.lines().any(|l| l.trim() == "user_allow_other"),
        "/etc/fuse.conf lacks user_allow_other (tools/test adds it)"
    );
    (name, uid, gid)
}

/// The binary where the rootless user can run it (a copy under the work
/// root: the checkout's target/ may sit below a directory the user cannot
/// enter).
pub fn user_bin() -> &'static Path {
    static B: OnceLock<PathBuf> = OnceLock::new();
    B.get_or_init(|| {
        let p = work_root().join("unionfs-user");
        fs::copy(bin(), &p).expect("copy the binary");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        p
    })
}

/// Runs `sh -ec script` in `cwd` as the rootless user; `$B` is the binary.
pub fn sh_user(script: &str, cwd: &Path) -> Out {
    let (_, uid, gid) = rootless_user();
    run(Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--init-groups",
            "sh",
            "-ec",
            script,
        ])
        .env("B", user_bin())
        .current_dir(cwd))
}

// ---------------------------------------------------------------------------
// Mounts

/// A live unionfs mount; unmounted (by its owner) on `umount`, detached by
/// root on drop if still there.
pub struct Mnt {
    pub path: PathBuf,
    /// Mounted by the rootless user (who must unmount it).
    pub user: bool,
}

impl Mnt {
    /// `unionfs mount --image spec extra -o allow_other mnt`, as root.
    pub fn image<S: AsRef<OsStr>>(spec: &str, extra: &[S], mnt: &Path) -> Mnt {
        mkdir(mnt);
        let mut args: Vec<OsString> = vec!["mount".into(), "--image".into(), spec.into()];
        args.extend(extra.iter().map(|a| a.as_ref().to_owned()));
        args.extend(["-o".into(), "allow_other".into(), mnt.into()]);
        let out = uf(&args).ok();
        assert!(
            is_mounted(mnt),
            "`{}` succeeded but nothing is mounted",
            out.cmd
        );
        Mnt {
            path: mnt.to_owned(),
            user: false,
        }
    }

    /// The rootless user mounts the image `spec` with `upper` (its own) on `mnt`.
    pub fn as_user(spec: &str, upper: &Path, cache: &Path, ids: &[String], mnt: &Path) -> Mnt {
        let script = format!(
            "\"$B\" mount --image '{}' --upper '{}' --cache-dir '{}' {} -o allow_other '{}'",
            spec,
            upper.display(),
            cache.display(),
            ids.join(" "),
            mnt.display()
        );
        sh_user(&script, mnt.parent().unwrap()).ok();
        assert!(
            is_mounted(mnt),
            "the user's mount of {} is not there",
            mnt.display()
        );
        Mnt {
            path: mnt.to_owned(),
            user: true,
        }
    }

    /// Unmounts, checked. EBUSY is retried a while (a forked child of
    /// another test thread may hold an fd into the mount until it execs).
    pub fn umount(self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = if self.user {
                sh_user(
                    &format!("\"$B\" umount '{}'", self.path.display()),
                    Path::new("/"),
                )
            } else {
                uf(&[OsStr::new("umount"), self.path.as_os_str()])
            };
            if out.status.success() {
                break;
            }
            assert!(
                out.stderr.contains("busy") && Instant::now() < deadline,
                "`{}` failed: {}",
                out.cmd,
                out.stderr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !is_mounted(&self.path),
            "{} still mounted",
            self.path.display()
        );
    }
}

impl Drop for Mnt {
    fn drop(&mut self) {
        force_unmount(&self.path);
    }
}

/// A tmpfs (or any `mount -t TYPE`) mounted by the test; unmounted on drop.
pub struct SysMount(pub PathBuf);

impl SysMount {
    /// `mount ARGS MNT`.
    pub fn new(args: &[&str], mnt: &Path) -> SysMount {
        mkdir(mnt);
        let mut a: Vec<OsString> = args.iter().map(OsString::from).collect();
        a.push(mnt.into());
        tool("mount", &a).ok();
        assert!(is_mounted(mnt));
        SysMount(mnt.to_owned())
    }
}

impl Drop for SysMount {
    fn drop(&mut self) {
        force_unmount(&self.0);
    }
}

// ---------------------------------------------------------------------------
// Trees

/// What is compared of one name (commit.rs's module doc says what is not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Obj {
    pub kind: &'static str,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    /// Files and symlinks.
    pub size: Option<u64>,
    /// Seconds; everything but directories.
    pub mtime: Option<i64>,
    pub link: Option<Vec<u8>>,
    pub sha256: Option<String>,
    pub rdev: Option<(u32, u32)>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A dumped tree.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    /// Relative path ("" = the root) -> object.
    pub objs: BTreeMap<Vec<u8>, Obj>,
    /// Sets of paths sharing an inode (hard links).
    pub links: BTreeSet<BTreeSet<Vec<u8>>>,
}

/// The type of a file, as a word.
pub fn kind_of(ft: fs::FileType) -> &'static str {
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

/// `parent/name`, or `name` at the root.
pub fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        [parent, b"/", name].concat()
    }
}

/// The parent of a relative path ("" for a top-level name).
pub fn parent(p: &[u8]) -> &[u8] {
    p.iter()
        .rposition(|&b| b == b'/')
        .map_or(&[][..], |i| &p[..i])
}

/// The last component of a relative path.
pub fn name_of(p: &[u8]) -> &[u8] {
    p.iter()
        .rposition(|&b| b == b'/')
        .map_or(p, |i| &p[i + 1..])
}

/// Path components: comparing them orders paths depth first, each
/// directory's children by name.
pub fn comps(p: &[u8]) -> Vec<&[u8]> {
    p.split(|&b| b == b'/').collect()
}

/// The order of a changeset: depth first, a directory's opaque marker
/// right after its header, then its children by the name written (a
/// whiteout `.wh.NAME` sorts as that).
pub fn order_key(p: &[u8]) -> Vec<&[u8]> {
    let mut c = comps(p);
    if c.last() == Some(&&b".wh..wh..opq"[..]) {
        *c.last_mut().unwrap() = b"";
    }
    c
}

/// sha256 of `b`, in hex.
pub fn sha_hex(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

/// `sha256:HEX` of `b`.
pub fn digest(b: &[u8]) -> String {
    format!("sha256:{}", sha_hex(b))
}

/// The bytes of the file `p`.
pub fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Walks `root` without following symlinks.
pub fn dump(root: &Path) -> Tree {
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
        let obj = Obj {
            kind: kind_of(ft),
            perm: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: (ft.is_file() || ft.is_symlink()).then(|| md.size()),
            mtime: (!ft.is_dir()).then(|| md.mtime()),
            link: ft
                .is_symlink()
                .then(|| fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec()),
            sha256: ft.is_file().then(|| sha_hex(&read(&p))),
            rdev: (ft.is_char_device() || ft.is_block_device())
                .then(|| (libc::major(md.rdev()), libc::minor(md.rdev()))),
            xattrs: xattrs(&p),
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

/// A relative path as an absolute one, for messages.
pub fn show(p: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(p))
}

/// xattrs, for messages.
pub fn show_xattrs(x: &[(Vec<u8>, Vec<u8>)]) -> String {
    let v: Vec<String> = x
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={:?}",
                String::from_utf8_lossy(k),
                String::from_utf8_lossy(v)
            )
        })
        .collect();
    format!("{{{}}}", v.join(", "))
}

/// How `got` differs from `want`, one line a difference (empty: the same).
pub fn obj_diff(p: &[u8], want: &Obj, got: &Obj, out: &mut Vec<String>) {
    if want.kind != got.kind {
        out.push(format!(
            "{}: type {} (want {})",
            show(p),
            got.kind,
            want.kind
        ));
        return;
    }
    let mut field = |name: &str, w: String, g: String| {
        if w != g {
            out.push(format!("{}: {name} {g} (want {w})", show(p)));
        }
    };
    field(
        "mode",
        format!("{:o}", want.perm),
        format!("{:o}", got.perm),
    );
    field(
        "owner",
        format!("{}:{}", want.uid, want.gid),
        format!("{}:{}", got.uid, got.gid),
    );
    field(
        "size",
        format!("{:?}", want.size),
        format!("{:?}", got.size),
    );
    field(
        "mtime",
        format!("{:?}", want.mtime),
        format!("{:?}", got.mtime),
    );
    field(
        "symlink target",
        format!("{:?}", want.link.as_deref().map(String::from_utf8_lossy)),
        format!("{:?}", got.link.as_deref().map(String::from_utf8_lossy)),
    );
    field(
        "sha256",
        format!("{:?}", want.sha256),
        format!("{:?}", got.sha256),
    );
    field(
        "device",
        format!("{:?}", want.rdev),
        format!("{:?}", got.rdev),
    );
    field(
        "xattrs",
        show_xattrs(&want.xattrs),
        show_xattrs(&got.xattrs),
    );
}

/// The differences between two trees; empty if none.
pub fn tree_diff(want: &Tree, got: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (p, w) in &want.objs {
        match got.objs.get(p) {
            None => out.push(format!("{}: missing ({})", show(p), w.kind)),
            Some(g) => obj_diff(p, w, g, &mut out),
        }
    }
    for (p, g) in &got.objs {
        if !want.objs.contains_key(p) {
            out.push(format!("{}: unexpected ({})", show(p), g.kind));
        }
    }
    let fmt = |g: &BTreeSet<Vec<u8>>| g.iter().map(|p| show(p)).collect::<Vec<_>>().join(" = ");
    for g in want.links.difference(&got.links) {
        out.push(format!("hard-link group missing: {}", fmt(g)));
    }
    for g in got.links.difference(&want.links) {
        out.push(format!("unexpected hard-link group: {}", fmt(g)));
    }
    out
}

/// Asserts that `got` (what `what` shows) is `want` (what `of` is).
pub fn assert_tree(want: &Tree, got: &Tree, what: &str, of: &str) {
    let d = tree_diff(want, got);
    assert!(
        d.is_empty(),
        "{what} differs from {of}, {} difference(s):\n  {}",
        d.len(),
        d.join("\n  ")
    );
}

/// Every file under `p` (or `p` itself) with its bytes.
pub fn files_of(p: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    if p.is_file() {
        out.insert(PathBuf::new(), read(p));
        return out;
    }
    let mut todo = vec![p.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap().path();
            if e.is_dir() {
                todo.push(e);
            } else {
                out.insert(e.strip_prefix(p).unwrap().to_path_buf(), read(&e));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Tar listings (the `tar` crate)

/// One member of a tar, as the `tar` crate reads it (PAX records applied).
pub struct TarEntry {
    pub path: Vec<u8>,
    pub typeflag: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub size: u64,
    pub link: Option<Vec<u8>>,
    pub rdev: Option<(u32, u32)>,
    pub uname: Vec<u8>,
    pub gname: Vec<u8>,
    /// PAX records (key, value).
    pub pax: Vec<(String, Vec<u8>)>,
    pub data: Vec<u8>,
}

impl TarEntry {
    /// xattrs from `SCHILY.xattr.*` records, sorted.
    pub fn xattrs(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut x: Vec<(Vec<u8>, Vec<u8>)> = self
            .pax
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("SCHILY.xattr.")
                    .map(|n| (n.as_bytes().to_vec(), v.clone()))
            })
            .collect();
        x.sort();
        x
    }
}

/// Every member of the tar `bytes`.
pub fn parse_tar(bytes: &[u8]) -> Vec<TarEntry> {
    let mut a = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for e in a.entries().expect("a tar") {
        let mut e = e.expect("a tar entry");
        let pax: Vec<(String, Vec<u8>)> = match e.pax_extensions().expect("PAX records") {
            Some(p) => p
                .map(|r| {
                    let r = r.expect("a PAX record");
                    (
                        r.key().expect("a UTF-8 key").to_owned(),
                        r.value_bytes().to_vec(),
                    )
                })
                .collect(),
            None => Vec::new(),
        };
        let h = e.header().clone();
        let mut path = e.path_bytes().into_owned();
        if path.starts_with(b"./") {
            path.drain(..2);
        }
        while path.last() == Some(&b'/') {
            path.pop();
        }
        let link = e.link_name_bytes().map(|l| l.into_owned());
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let typeflag = h.entry_type().as_byte();
        out.push(TarEntry {
            path,
            typeflag,
            mode: h.mode().unwrap(),
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            mtime: h.mtime().unwrap(),
            size: e.size(),
            link,
            rdev: matches!(typeflag, b'3' | b'4').then(|| {
                (
                    h.device_major().unwrap().unwrap(),
                    h.device_minor().unwrap().unwrap(),
                )
            }),
            uname: h.username_bytes().unwrap_or_default().to_vec(),
            gname: h.groupname_bytes().unwrap_or_default().to_vec(),
            pax,
            data,
        });
    }
    out
}

// ---------------------------------------------------------------------------
// docker

/// A private dockerd (own data-root, exec-root, socket; no network setup),
/// stopped on drop whatever happens, as tools/image-fixtures runs one.
pub struct Dockerd {
    pub dir: PathBuf,
    pub child: std::process::Child,
    pub sock: String,
    pub client: String,
}

impl Dockerd {
    /// Starts one with its state in `dir`; returns once it answers.
    pub fn start(dir: &Path) -> Dockerd {
        use std::os::unix::process::CommandExt;
        let log = fs::File::create(dir.join("dockerd.log")).unwrap();
        let sock = format!("unix://{}", dir.join("docker.sock").display());
        let child = Command::new("dockerd")
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--ip-masq=false",
            ])
            .args(["--storage-driver", "vfs", "--data-root"])
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .args(["-H", &sock])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start dockerd (docker.io)");
        let mut d = Dockerd {
            dir: dir.to_owned(),
            child,
            sock,
            client: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        // The Debian client matches the daemon; a newer one negotiates down.
        let candidates = ["/usr/bin/docker", "docker"];
        while Instant::now() < deadline {
            if let Some(st) = d.child.try_wait().unwrap() {
                panic!("dockerd exited ({st}):\n{}", d.log_tail());
            }
            for c in candidates {
                let o = run(Command::new(c).args([
                    "-H",
                    &d.sock,
                    "version",
                    "--format",
                    "{{.Server.Version}}",
                ]));
                if o.status.success() {
                    d.client = c.to_owned();
                    return d;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("dockerd did not answer within 60 s:\n{}", d.log_tail());
    }

    /// The end of its log, for messages.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `docker ARGS` against it, checked.
    pub fn docker(&self, args: &[&str]) -> Out {
        let out = run(Command::new(&self.client)
            .args(["-H", &self.sock])
            .args(args));
        assert!(
            out.status.success(),
            "`{}` failed:\n{}\ndockerd log:\n{}",
            out.cmd,
            out.stderr,
            self.log_tail()
        );
        out
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: signals to the dockerd this test started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                // SAFETY: its process group (process_group(0) at spawn).
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Its containerd (own process group), should dockerd have left it:
        // the processes whose command line names this dockerd's exec-root
        // or data-root.
        let mine: Vec<Vec<u8>> = ["exec", "data"]
            .iter()
            .map(|d| self.dir.join(d).into_os_string().into_vec())
            .collect();
        for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
            let names = |m: &Vec<u8>| cmdline.windows(m.len()).any(|w| w == m.as_slice());
            if p != std::process::id() as i32 && mine.iter().any(names) {
                // SAFETY: a process of this test's dockerd, by its pid.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
        detach_mounts_under(&self.dir);
    }
}
