//! Shared test helpers: a layer tar builder, an in-process mount guard, and a
//! few libc wrappers the standard library lacks (xattrs, raw errno checks).
//!
//! Owns test scaffolding only; what is asserted lives in `mount.rs` and
//! `differential.rs`.
//!
//! Every helper works in the caller's own temporary directories, so tests run in
//! parallel on cargo's test threads.
#![allow(dead_code)]

use std::ffi::CString;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{BackgroundSession, Config, MountOption, SessionACL};
use tempfile::TempDir;

pub mod oracle;

use unionfs::fuse::rw::RwFs;
use unionfs::fuse::UnionFs;
use unionfs::overlay::{self, Overlay};
use unionfs::stack::Stack;
use unionfs::tar::IndexOptions;
use unionfs::upper::{Upper, WhiteoutFormat};

/// The environment variable that turns "FUSE is missing" from a failure into a skip.
pub const SKIP_ENV: &str = "UNIONFS_SKIP_FUSE_TESTS";

/// Default mtime of built entries (whole seconds: no PAX record needed).
pub const DEFAULT_MTIME: i64 = 1_700_000_000;

// ---------------------------------------------------------------------------
// Layer tars

/// What a tar entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file with this content.
    File(Vec<u8>),
    /// A directory.
    Dir,
    /// A symlink to this target.
    Symlink(Vec<u8>),
    /// A hard link to this earlier path of the same layer.
    HardLink(Vec<u8>),
    /// A character device (major, minor).
    Char(u32, u32),
    /// A block device (major, minor).
    Block(u32, u32),
    /// A named pipe.
    Fifo,
}

/// One tar member, with explicit metadata.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The member name, as bytes (no trailing slash: added for directories).
    pub path: Vec<u8>,
    /// Its type and payload.
    pub kind: Kind,
    /// Permission bits (incl. setuid/setgid/sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds (may be negative).
    pub mtime: i64,
    /// Modification time, nanoseconds (a PAX `mtime` record when non-zero).
    pub nsec: u32,
    /// Extended attributes, as PAX `SCHILY.xattr.NAME` records.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    /// Sets the permission bits.
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = mode;
        self
    }
    /// Sets owner and group.
    pub fn owner(&mut self, uid: u32, gid: u32) -> &mut Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
    /// Sets the modification time.
    pub fn mtime(&mut self, secs: i64, nsec: u32) -> &mut Self {
        self.mtime = secs;
        self.nsec = nsec;
        self
    }
    /// Adds an extended attribute.
    pub fn xattr(&mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> &mut Self {
        self.xattrs
            .push((name.as_ref().to_vec(), value.as_ref().to_vec()));
        self
    }
}

/// A layer: tar members in archive order.
#[derive(Clone, Debug, Default)]
pub struct Layer {
    /// The members, written in this order.
    pub entries: Vec<Entry>,
}

/// Splits `a/b/c` into (`a/b`, `c`); the parent of a top-level name is empty.
pub fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&b""[..], path),
    }
}

/// Joins a parent path and a name.
pub fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        [parent, b"/", name].concat()
    }
}

impl Layer {
    /// An empty layer.
    pub fn new() -> Layer {
        Layer::default()
    }

    /// Appends a member with default metadata (0644 / 0755 for directories,
    /// root-owned, [`DEFAULT_MTIME`]).
    pub fn push(&mut self, path: impl AsRef<[u8]>, kind: Kind) -> &mut Entry {
        let mode = match kind {
            Kind::Dir => 0o755,
            Kind::Symlink(_) => 0o777,
            _ => 0o644,
        };
        self.entries.push(Entry {
            path: path.as_ref().to_vec(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: DEFAULT_MTIME,
            nsec: 0,
            xattrs: Vec::new(),
        });
        self.entries.last_mut().unwrap()
    }

    /// A regular file.
    pub fn file(&mut self, path: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> &mut Entry {
        self.push(path, Kind::File(data.as_ref().to_vec()))
    }
    /// A directory.
    pub fn dir(&mut self, path: impl AsRef<[u8]>) -> &mut Entry {
        self.push(path, Kind::Dir)
    }
    /// A symlink.
    pub fn symlink(&mut self, path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> &mut Entry {
        self.push(path, Kind::Symlink(target.as_ref().to_vec()))
    }
    /// A hard link to an earlier member of this layer.
    pub fn hardlink(&mut self, path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> &mut Entry {
        self.push(path, Kind::HardLink(target.as_ref().to_vec()))
    }
    /// A character device.
    pub fn chardev(&mut self, path: impl AsRef<[u8]>, major: u32, minor: u32) -> &mut Entry {
        self.push(path, Kind::Char(major, minor))
    }
    /// A block device.
    pub fn blockdev(&mut self, path: impl AsRef<[u8]>, major: u32, minor: u32) -> &mut Entry {
        self.push(path, Kind::Block(major, minor))
    }
    /// A named pipe.
    pub fn fifo(&mut self, path: impl AsRef<[u8]>) -> &mut Entry {
        self.push(path, Kind::Fifo)
    }
    /// The whiteout `dir/.wh.NAME` that hides `dir/NAME` of lower layers.
    pub fn whiteout(&mut self, hidden: impl AsRef<[u8]>) -> &mut Entry {
        let (parent, name) = split_parent(hidden.as_ref());
        let p = join(parent, &[b".wh.", name].concat());
        self.push(p, Kind::File(Vec::new()))
    }
    /// The opaque marker `dir/.wh..wh..opq`.
    pub fn opaque(&mut self, dir: impl AsRef<[u8]>) -> &mut Entry {
        let p = join(dir.as_ref(), b".wh..wh..opq");
        self.push(p, Kind::File(Vec::new()))
    }

    /// Writes the layer as a PAX tar at `path`.
    pub fn write(&self, path: &Path) {
        let f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        let mut b = tar::Builder::new(BufWriter::new(f));
        for e in &self.entries {
            append_entry(&mut b, e).unwrap_or_else(|err| {
                panic!(
                    "write {:?} to {}: {err}",
                    String::from_utf8_lossy(&e.path),
                    path.display()
                )
            });
        }
        b.into_inner()
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
            .unwrap_or_else(|e| panic!("finish {}: {e}", path.display()));
    }
}

/// Appends one PAX record `LEN KEY=VALUE\n` (LEN counts itself).
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    loop {
        let l = body + len.to_string().len();
        if l == len {
            break;
        }
        len = l;
    }
    out.extend_from_slice(format!("{len} ").as_bytes());
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// PAX time: `SECS.NNNNNNNNN`, negative times as `-S.F` meaning -(S.F).
fn pax_time(secs: i64, nsec: u32) -> String {
    if secs >= 0 {
        format!("{secs}.{nsec:09}")
    } else if nsec == 0 {
        format!("{secs}")
    } else {
        // secs + nsec/1e9 = -(|secs| - 1) - (1e9 - nsec)/1e9
        format!("-{}.{:09}", secs.unsigned_abs() - 1, 1_000_000_000 - nsec)
    }
}

const USTAR_ID_MAX: u32 = 0o7777777;

fn append_entry<W: Write>(b: &mut tar::Builder<W>, e: &Entry) -> io::Result<()> {
    let mut name = e.path.clone();
    if e.kind == Kind::Dir && !name.ends_with(b"/") {
        name.push(b'/');
    }
    let mut pax = Vec::new();
    if name.len() > 100 {
        pax_record(&mut pax, b"path", &name);
    }
    let link: &[u8] = match &e.kind {
        Kind::Symlink(t) | Kind::HardLink(t) => t,
        _ => b"",
    };
    if link.len() > 100 {
        pax_record(&mut pax, b"linkpath", link);
    }
    if e.nsec != 0 || e.mtime < 0 {
        pax_record(&mut pax, b"mtime", pax_time(e.mtime, e.nsec).as_bytes());
    }
    if e.uid > USTAR_ID_MAX {
        pax_record(&mut pax, b"uid", e.uid.to_string().as_bytes());
    }
    if e.gid > USTAR_ID_MAX {
        pax_record(&mut pax, b"gid", e.gid.to_string().as_bytes());
    }
    for (k, v) in &e.xattrs {
        pax_record(&mut pax, &[b"SCHILY.xattr.", &k[..]].concat(), v);
    }
    if !pax.is_empty() {
        let mut h = tar::Header::new_ustar();
        let (_, base) = split_parent(e.path.as_slice());
        let pname = [b"PaxHeaders/", base].concat();
        set_bytes(&mut h.as_old_mut().name, &pname[..pname.len().min(99)]);
        h.set_mode(0o644);
        h.set_size(pax.len() as u64);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_cksum();
        b.append(&h, pax.as_slice())?;
    }
    let mut h = tar::Header::new_ustar();
    set_bytes(&mut h.as_old_mut().name, &name[..name.len().min(100)]);
    set_bytes(&mut h.as_old_mut().linkname, &link[..link.len().min(100)]);
    h.set_mode(e.mode);
    h.set_uid(u64::from(e.uid.min(USTAR_ID_MAX)));
    h.set_gid(u64::from(e.gid.min(USTAR_ID_MAX)));
    h.set_mtime(e.mtime.max(0) as u64);
    let (ty, data): (tar::EntryType, &[u8]) = match &e.kind {
        Kind::File(d) => (tar::EntryType::Regular, d),
        Kind::Dir => (tar::EntryType::Directory, b""),
        Kind::Symlink(_) => (tar::EntryType::Symlink, b""),
        Kind::HardLink(_) => (tar::EntryType::Link, b""),
        Kind::Char(..) => (tar::EntryType::Char, b""),
        Kind::Block(..) => (tar::EntryType::Block, b""),
        Kind::Fifo => (tar::EntryType::Fifo, b""),
    };
    h.set_entry_type(ty);
    h.set_size(data.len() as u64);
    if let Kind::Char(ma, mi) | Kind::Block(ma, mi) = e.kind {
        h.set_device_major(ma)?;
        h.set_device_minor(mi)?;
    } else {
        h.set_device_major(0)?;
        h.set_device_minor(0)?;
    }
    h.set_cksum();
    b.append(&h, data)
}

fn set_bytes(field: &mut [u8], v: &[u8]) {
    field.fill(0);
    field[..v.len()].copy_from_slice(v);
}

/// A fresh scratch directory: on /dev/shm when it is a writable tmpfs (fast to
/// fill and to delete, and it keeps user and trusted xattrs), else in $TMPDIR.
pub fn scratch_dir(prefix: &str) -> TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new().prefix(prefix).tempdir_in(shm) {
            return d;
        }
    }
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create a temporary directory")
}

/// Writes `layers` (bottom first) as `L0.tar`, `L1.tar`… in `dir`; returns the paths.
pub fn write_layers(dir: &Path, layers: &[Layer]) -> Vec<PathBuf> {
    layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let p = dir.join(format!("L{i}.tar"));
            l.write(&p);
            p
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Mounting

/// Returns true if and only if FUSE tests can run. Panics when /dev/fuse is
/// missing, unless the user opted out with `UNIONFS_SKIP_FUSE_TESTS=1` (then
/// prints a loud SKIPPED line and returns false).
pub fn fuse_available(what: &str) -> bool {
    if Path::new("/dev/fuse").exists() {
        return true;
    }
    skip_or_panic(
        what,
        "/dev/fuse is missing (load the fuse module / run with --device /dev/fuse)",
    )
}

/// Panics with `why`, or, if `UNIONFS_SKIP_FUSE_TESTS=1`, prints a SKIPPED line
/// and returns false.
pub fn skip_or_panic(what: &str, why: &str) -> bool {
    if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
        eprintln!("\n*** SKIPPED: {what}: {why} ({SKIP_ENV}=1) ***\n");
        return false;
    }
    panic!(
        "{what}: {why}. These tests need FUSE; set {SKIP_ENV}=1 to skip them instead of failing."
    );
}

/// Returns true if and only if `path` (absolute, canonical) is a mount point
/// according to /proc/self/mountinfo. Never `stat`s the path: a dead FUSE
/// mount would hang or fail.
pub fn is_mounted(path: &Path) -> bool {
    let info = std::fs::read("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let want = path.as_os_str().as_bytes();
    info.split(|&b| b == b'\n').any(|line| {
        line.split(|&b| b == b' ')
            .nth(4)
            .is_some_and(|mp| unescape_mountinfo(mp) == want)
    })
}

/// A mountinfo field with its octal escapes (`\040` for a space) decoded.
pub fn unescape_mountinfo(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && i + 3 < s.len()
            && s[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((s[i + 1] - b'0') * 64 + (s[i + 2] - b'0') * 8 + (s[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// Unmounts `path` with `umount2`, lazily if a plain unmount fails; reports
/// what happened on stderr. Checks mountinfo first, never the path itself.
pub fn force_unmount(path: &Path) {
    if !is_mounted(path) {
        return;
    }
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return;
    }
    let e = io::Error::last_os_error();
    eprintln!("umount {}: {e}; detaching lazily", path.display());
    // SAFETY: as above.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        eprintln!(
            "umount -l {}: {}",
            path.display(),
            io::Error::last_os_error()
        );
    }
}

/// The FUSE configuration `src/mount.rs`'s `fuse_config` builds for a default
/// mount (read-only, nosuid, nodev, kernel permission checks), with
/// `allow_other` so that tests acting as another uid reach the mount.
/// With `UNIONFS_TEST_LOG=FILE`, the in-process daemons of this test binary
/// log to FILE (appended; level `UNIONFS_TEST_LOG_LEVEL`, default trace):
/// every request and what it was answered, to place an intermittent failure.
fn test_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Some(path) = std::env::var_os("UNIONFS_TEST_LOG") else {
            return;
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("UNIONFS_TEST_LOG: open the log file");
        let level = std::env::var("UNIONFS_TEST_LOG_LEVEL").unwrap_or_else(|_| "trace".into());
        env_logger::Builder::new()
            .parse_filters(&level)
            .format_timestamp_micros()
            .target(env_logger::Target::Pipe(Box::new(file)))
            .init();
    });
}

pub fn fuse_config() -> Config {
    let mut c = Config::default();
    c.mount_options = vec![
        MountOption::FSName("unionfs".into()),
        MountOption::Subtype("unionfs".into()),
        MountOption::RO,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::DefaultPermissions,
    ];
    c.acl = SessionACL::All;
    c.n_threads = Some(4);
    c.clone_fd = true;
    c
}

/// A live unionfs mount on a temporary mountpoint; unmounted on drop.
pub struct Mount {
    session: Option<BackgroundSession>,
    /// The mountpoint (absolute, canonical).
    pub path: PathBuf,
    /// The layer tars, bottom first.
    pub layers: Vec<PathBuf>,
    mnt_dir: Option<TempDir>,
    // Dropped after the unmount (fields drop after `Drop::drop`).
    _tar_dir: Option<TempDir>,
}

impl Mount {
    /// Mounts existing layer tars (bottom first) with in-memory indexes.
    /// `None`: FUSE is unavailable and the user asked to skip.
    pub fn tars(layers: &[PathBuf]) -> Option<Mount> {
        Mount::with_options(layers, &IndexOptions::default())
    }

    /// Writes `layers` to a fresh temporary directory and mounts them.
    pub fn layers(layers: &[Layer]) -> Option<Mount> {
        if !fuse_available("mount test") {
            return None;
        }
        let dir = scratch_dir("unionfs-layers-");
        let tars = write_layers(dir.path(), layers);
        let mut m = Mount::tars(&tars)?;
        m._tar_dir = Some(dir);
        Some(m)
    }

    /// Mounts existing layer tars (bottom first) with the given index options.
    pub fn with_options(layers: &[PathBuf], opts: &IndexOptions) -> Option<Mount> {
        if !fuse_available("mount test") {
            return None;
        }
        let tars = unionfs::tar::open_all(layers, opts).expect("open layers");
        let stack = Arc::new(Stack::new(tars));
        Some(Mount::spawn(UnionFs::new(stack), &fuse_config(), layers))
    }

    /// Mounts `fs` with `cfg` on a fresh temporary mountpoint.
    fn spawn<F: fuser::Filesystem + Send + Sync + 'static>(
        fs: F,
        cfg: &Config,
        layers: &[PathBuf],
    ) -> Mount {
        test_log();
        let mnt_dir = tempfile::Builder::new()
            .prefix("unionfs-mnt-")
            .tempdir()
            .expect("mountpoint tempdir");
        let path = mnt_dir.path().canonicalize().expect("canonical mountpoint");
        let session = fuser::spawn_mount(fs, &path, cfg)
            .unwrap_or_else(|e| panic!("mount unionfs on {}: {e}", path.display()));
        assert!(
            is_mounted(&path),
            "{} not in mountinfo after mount",
            path.display()
        );
        Mount {
            session: Some(session),
            path,
            layers: layers.to_vec(),
            mnt_dir: Some(mnt_dir),
            _tar_dir: None,
        }
    }

    /// Mounts existing layer tars (bottom first) with the writable upper
    /// directory `upper` (work dir: the default, next to it), read-write, as
    /// the `unionfs` binary mounts by default: files served with no open
    /// handle. With `UNIONFS_TEST_PASSTHROUGH` set, as `-o passthrough` does
    /// instead: OPEN per file, upper files by FUSE passthrough (`tools/test`
    /// runs the write tests both ways).
    pub fn with_upper(layers: &[PathBuf], upper: &Path, format: WhiteoutFormat) -> Option<Mount> {
        Mount::with_upper_metacopy(layers, upper, format, false)
    }

    /// As [`Mount::with_upper`], with `-o metacopy=on` if `metacopy`.
    pub fn with_upper_metacopy(
        layers: &[PathBuf],
        upper: &Path,
        format: WhiteoutFormat,
        metacopy: bool,
    ) -> Option<Mount> {
        if !fuse_available("mount test") {
            return None;
        }
        let tars = unionfs::tar::open_all(layers, &IndexOptions::default()).expect("open layers");
        let stack = Stack::new(tars);
        let opts = overlay::Options {
            metacopy,
            labels: unionfs::layers::copy_labels(&stack, None),
            ..Default::default()
        };
        let stack = Arc::new(stack);
        let up = Upper::open(upper, None, format).expect("open upper");
        let ov = Overlay::new(stack, up, opts).expect("scan upper");
        let mut cfg = fuse_config();
        cfg.mount_options[2] = MountOption::RW;
        let passthrough = std::env::var_os("UNIONFS_TEST_PASSTHROUGH").is_some();
        let fs = RwFs::new(ov, Default::default()).with_passthrough(passthrough);
        let slot = fs.notifier_slot();
        let m = Mount::spawn(fs, &cfg, layers);
        let _ = slot.set(m.session.as_ref().expect("live").notifier());
        Some(m)
    }

    /// A path inside the mount (`rel` may be bytes, not UTF-8).
    pub fn p(&self, rel: impl AsRef<[u8]>) -> PathBuf {
        let rel = rel.as_ref();
        if rel.is_empty() {
            return self.path.clone();
        }
        self.path.join(std::ffi::OsStr::from_bytes(rel))
    }

    /// Unmounts now (also done on drop); panics if the mount outlives it.
    pub fn unmount(mut self) {
        self.do_unmount();
        assert!(
            !is_mounted(&self.path),
            "{} still mounted",
            self.path.display()
        );
    }

    fn do_unmount(&mut self) {
        if let Some(s) = self.session.take() {
            if let Err(e) = s.umount_and_join() {
                eprintln!("unmount {}: {e}", self.path.display());
            }
        }
        force_unmount(&self.path);
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.do_unmount();
        if is_mounted(&self.path) {
            // Never rmdir a live mountpoint: leak the directory instead.
            if let Some(d) = self.mnt_dir.take() {
                let _ = d.keep();
            }
        }
    }
}

/// `let m = mount!(layers);` — mounts, or returns from the test when skipping.
#[macro_export]
macro_rules! mount {
    ($layers:expr) => {
        match $crate::util::Mount::layers(&$layers) {
            Some(m) => m,
            None => return,
        }
    };
}

// ---------------------------------------------------------------------------
// libc wrappers

/// A path as a C string.
pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// The errno of the last failed libc call.
pub fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `lgetxattr` with a buffer of `size` bytes: Ok(value) or Err(errno).
pub fn lgetxattr_sized(p: &Path, name: &[u8], size: usize) -> Result<Vec<u8>, i32> {
    let c = cpath(p);
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; size];
    // SAFETY: valid C strings and a buffer of `size` bytes.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), size) };
    if r < 0 {
        return Err(errno());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

/// `lgetxattr` with size 0: the value's length, or Err(errno).
pub fn lgetxattr_len(p: &Path, name: &[u8]) -> Result<usize, i32> {
    let c = cpath(p);
    let n = CString::new(name).unwrap();
    // SAFETY: a NULL buffer with size 0 asks for the length.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r as usize)
    }
}

/// `llistxattr` with a buffer of `size` bytes: the raw NUL-separated list, or Err(errno).
pub fn llistxattr_sized(p: &Path, size: usize) -> Result<Vec<u8>, i32> {
    let c = cpath(p);
    let mut buf = vec![0u8; size];
    // SAFETY: a buffer of `size` bytes (NULL-equivalent when 0 is fine: size 0 never writes).
    let r = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), size) };
    if r < 0 {
        return Err(errno());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

/// All extended attributes of `p` (not following symlinks), sorted by name.
pub fn xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let c = cpath(p);
    // SAFETY: size 0 asks for the length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    assert!(
        n >= 0,
        "llistxattr {}: {}",
        p.display(),
        io::Error::last_os_error()
    );
    let list = llistxattr_sized(p, n as usize).expect("llistxattr");
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = list
        .split(|&b| b == 0)
        .filter(|k| !k.is_empty())
        .map(|k| {
            let len = lgetxattr_len(p, k).unwrap_or_else(|e| {
                panic!(
                    "lgetxattr {} {:?}: errno {e}",
                    p.display(),
                    String::from_utf8_lossy(k)
                )
            });
            let v = lgetxattr_sized(p, k, len).expect("lgetxattr");
            (k.to_vec(), v)
        })
        .collect();
    out.sort();
    out
}

/// `lsetxattr`, Ok or Err(errno).
pub fn lsetxattr(p: &Path, name: &[u8], value: &[u8]) -> Result<(), i32> {
    let c = cpath(p);
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings and value slice.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// Tiny deterministic PRNG (xorshift64*), so that tests need no extra crates.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03 | 1)
    }
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// True with probability `pct`%.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    /// A random element.
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

/// The repository's root (the `unionfs` crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("fuse-tests has a parent")
        .to_path_buf()
}

/// The `unionfs` binary, built once per test process into this test's
/// target directory and profile (`$UNIONFS_BIN` if set).
pub fn unionfs_bin() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(b) = std::env::var_os("UNIONFS_BIN") {
            return PathBuf::from(b);
        }
        // target/<profile>/deps/TEST-HASH -> target/<profile>/unionfs
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary in target/<profile>/deps");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "unionfs", "--bin", "unionfs"])
            .arg("--manifest-path")
            .arg(repo_root().join("Cargo.toml"))
            .arg("--target-dir")
            .arg(profile_dir.parent().expect("target dir"))
            .stdin(std::process::Stdio::null());
        if profile_dir.file_name() == Some(std::ffi::OsStr::new("release")) {
            cmd.arg("--release");
        }
        let out = cmd.output().expect("run cargo build");
        assert!(
            out.status.success(),
            "cargo build --bin unionfs failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = profile_dir.join("unionfs");
        assert!(bin.is_file(), "{} is missing", bin.display());
        bin
    })
}
