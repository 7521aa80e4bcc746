//! The writable upper directory: every write unionfs makes goes through here.
//!
//! Owns the upper's I/O: [`Upper`] holds fds of the upper root and of the work
//! directory, and every call is an `*at()` call on a directory fd obtained by
//! walking one component at a time with `O_PATH | O_DIRECTORY | O_NOFOLLOW`
//! ([`Upper::open_dir`]), so no symlink — in the upper or in the path asked for —
//! can make an operation land outside the upper. It also owns the on-disk
//! whiteout and opaque formats (`whiteout.rs`), copy-up (`copy_up.rs`) and the
//! in-memory mirror of the upper's namespace ([`tree::UpperTree`]).
//!
//! It does not own merge decisions (whether a delete needs a whiteout, whether a
//! directory is empty in the merged view: the FUSE core asks `stack/` and the
//! tree), it does not keep the tree in step (the caller applies each successful
//! operation to it), and it knows nothing of FUSE or tar.
//!
//! Conventions:
//! - A path is a slice of components (`&[P]`, `P: AsRef<[u8]>`), relative to the
//!   upper root; `&[]` (see [`ROOT`]) is the root. Name-creating operations take
//!   `(dir, name)`; operations on an existing object take its full path.
//! - Names starting with `.wh.` are refused with `EINVAL` anywhere in a path,
//!   except by the whiteout helpers, which are the only code that makes them.
//! - Per-operation calls return `io::Result` (the errno is what a FUSE reply
//!   needs); [`Upper::open`] and [`tree::UpperTree::scan`], which run at mount,
//!   return [`crate::Result`] with the path in the message.
//! - The process umask applies to the modes given to create calls (the FUSE
//!   adapter should run with `umask(0)`: the kernel has already applied the
//!   caller's umask to the mode it sends). Copy-up sets modes exactly.
//! - Concurrency: `Upper` is `Sync`; operations on different names are
//!   independent. Two operations racing on the same name resolve as the
//!   kernel's calls do (one create wins, the other gets `EEXIST`); copy-up of
//!   the same object is idempotent.

pub mod copy_up;
pub mod tree;

mod attr;
mod ops;
mod owner;
mod scan;
mod temp;
mod whiteout;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

pub use attr::{is_private_xattr, SetAttr, Time};
pub use ops::New;
pub use owner::{Override, OVERRIDE_XATTR};
pub use temp::TEMP_PREFIX;
pub use whiteout::{is_whiteout, OPAQUE_XATTRS};

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};
use crate::sys;

/// The root as a path: no components.
pub const ROOT: &[&[u8]] = &[];

/// How whiteouts and opaque directories are written in the upper. Both are
/// always understood when reading ([`tree::UpperTree::scan`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WhiteoutFormat {
    /// OCI image format: `.wh.NAME` empty files, `.wh..wh..opq` opaque markers.
    /// Works without privileges and is what `docker export`-style tools read.
    #[default]
    Oci,
    /// Kernel overlayfs format: 0/0 character devices, `trusted.overlay.opaque=y`.
    /// Needs `CAP_MKNOD` and `CAP_SYS_ADMIN` (trusted xattrs); an upper in this
    /// format can be mounted by kernel overlayfs.
    Overlay,
}

/// The owner to give a new object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// The upper directory and its work directory.
#[derive(Debug)]
pub struct Upper {
    root: OwnedFd,
    work: OwnedFd,
    format: WhiteoutFormat,
    path: PathBuf,
    rootless: bool,
    volatile: bool,
    read_only: bool,
}

fn eno(n: i32) -> io::Error {
    io::Error::from_raw_os_error(n)
}

/// Refuses names the upper reserves (`.wh.*`), and invalid components.
fn check_name(name: &[u8]) -> io::Result<()> {
    if crate::whiteout::is_reserved(name) {
        return Err(eno(libc::EINVAL));
    }
    sys::name(name).map(drop)
}

/// Splits a full path into (parent components, last name); `EINVAL` for the root.
fn split<P: AsRef<[u8]>>(path: &[P]) -> io::Result<(&[P], &[u8])> {
    match path.split_last() {
        Some((last, parent)) => Ok((parent, last.as_ref())),
        None => Err(eno(libc::EINVAL)),
    }
}

impl Upper {
    /// Opens the upper directory `upper_dir` (which must exist) with its work
    /// directory `work_dir`, by default `.<name>.unionfs-work` next to it
    /// (created mode 0700 if missing).
    ///
    /// Refuses a work directory on another filesystem (copy-up renames from one
    /// to the other) or nested in the upper (or the upper in it), and an upper or
    /// work directory that another `Upper` holds (an exclusive `flock` on each,
    /// kept while this `Upper` lives; cf. overlayfs's "inuse" check). Removes
    /// temp files left in the work directory by a crash.
    pub fn open(
        upper_dir: &Path,
        work_dir: Option<&Path>,
        format: WhiteoutFormat,
    ) -> Result<Upper> {
        let path = std::fs::canonicalize(upper_dir).map_err(|e| Error::io(upper_dir, e))?;
        let root = sys::open_dir_path(&path).map_err(|e| Error::io(&path, e))?;
        let work_path = match work_dir {
            Some(w) => canonical_new(w)?,
            None => default_work(&path)?,
        };
        let work = open_work(&work_path)?;
        check_placement(&path, root.as_fd(), &work_path, work.as_fd())?;
        lock(&path, root.as_fd(), "upper")?;
        lock(&work_path, work.as_fd(), "work")?;
        let n = temp::clean_work(work.as_fd()).map_err(|e| Error::io(&work_path, e))?;
        if n > 0 {
            log::info!(target: "unionfs::upper", "{}: removed {n} leftover temp file(s)", work_path.display());
        }
        Ok(Upper {
            root,
            work,
            format,
            path,
            rootless: false,
            volatile: false,
            read_only: false,
        })
    }

    /// Opens the upper directory `upper_dir` to read it (commit, export,
    /// diff). It must only be read: it has no work directory (what goes
    /// through one — copy-up, whiteout replacement — fails with `EROFS`).
    /// Takes a shared lock on the upper (a mount takes it exclusively), so
    /// that the upper cannot change while it is read: an upper a live unionfs
    /// mount uses is refused, and a mount started meanwhile is refused;
    /// readers do not exclude each other. (Kernel overlayfs takes no such
    /// lock: see `crate::commit` for that check.)
    pub fn open_read_only(upper_dir: &Path) -> Result<Upper> {
        let path = std::fs::canonicalize(upper_dir).map_err(|e| Error::io(upper_dir, e))?;
        let root = sys::open_dir_path(&path).map_err(|e| Error::io(&path, e))?;
        lock_shared(&path, root.as_fd())?;
        let work = root.try_clone().map_err(|e| Error::io(&path, e))?;
        Ok(Upper {
            root,
            work,
            format: WhiteoutFormat::Oci,
            path,
            rootless: false,
            volatile: false,
            read_only: true,
        })
    }

    /// Returns true if and only if this upper was opened to be read only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Rootless mode (issue 6): copy-up and create tolerate `EPERM`/`EINVAL` from
    /// `chown` (the ids cannot be mapped); the object keeps the daemon's ids.
    pub fn with_rootless(mut self, yes: bool) -> Upper {
        self.rootless = yes;
        self
    }

    /// Volatile mode (overlayfs `volatile`): copy-up skips `fsync`. A crash of
    /// the machine may then leave copied-up files empty or partial.
    pub fn with_volatile(mut self, yes: bool) -> Upper {
        self.volatile = yes;
        self
    }

    /// The whiteout format written.
    pub fn format(&self) -> WhiteoutFormat {
        self.format
    }

    /// The upper directory's path (canonical), for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns true if and only if rootless mode is on.
    pub fn is_rootless(&self) -> bool {
        self.rootless
    }

    /// Returns true if and only if volatile mode is on.
    pub fn is_volatile(&self) -> bool {
        self.volatile
    }

    /// The upper root directory fd.
    pub fn root_fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// The work directory fd.
    pub fn work_fd(&self) -> BorrowedFd<'_> {
        self.work.as_fd()
    }

    /// Opens directory `dir` (`O_PATH`): a symlink anywhere is `ENOTDIR`,
    /// never followed. One `openat2` beneath the upper root where the kernel
    /// has it, else one `openat(O_NOFOLLOW | O_DIRECTORY)` per component.
    pub fn open_dir<P: AsRef<[u8]>>(&self, dir: &[P]) -> io::Result<OwnedFd> {
        static OPENAT2: AtomicBool = AtomicBool::new(true);
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        if dir.is_empty() {
            return self.root.try_clone();
        }
        if OPENAT2.load(Ordering::Relaxed) {
            let mut path = Vec::with_capacity(dir.iter().map(|c| c.as_ref().len() + 1).sum());
            for c in dir {
                check_name(c.as_ref())?;
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(c.as_ref());
            }
            match sys::openat_beneath(self.root.as_fd(), &path, flags) {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    OPENAT2.store(false, Ordering::Relaxed)
                }
                // A symlink component: what the per-component walk says.
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                    return Err(io::Error::from_raw_os_error(libc::ENOTDIR))
                }
                r => return r,
            }
        }
        self.walk_dir(dir)
    }

    /// [`Upper::open_dir`] without `openat2`: one `openat(O_NOFOLLOW |
    /// O_DIRECTORY)` per component.
    pub(crate) fn walk_dir<P: AsRef<[u8]>>(&self, dir: &[P]) -> io::Result<OwnedFd> {
        let mut cur: Option<OwnedFd> = None;
        for c in dir {
            check_name(c.as_ref())?;
            let base = cur.as_ref().map_or(self.root.as_fd(), |f| f.as_fd());
            let flags = libc::O_PATH | libc::O_DIRECTORY;
            cur = Some(sys::openat(base, c.as_ref(), flags, 0)?);
        }
        cur.map_or_else(|| self.root.try_clone(), Ok)
    }

    /// Opens any object by path with `O_PATH | O_NOFOLLOW` (a symlink is opened
    /// itself): no side effect even for fifos and devices.
    pub fn open_path<P: AsRef<[u8]>>(&self, path: &[P]) -> io::Result<OwnedFd> {
        match path.split_last() {
            None => self.root.try_clone(),
            Some((last, parent)) => {
                check_name(last.as_ref())?;
                let d = self.open_dir(parent)?;
                sys::openat(d.as_fd(), last.as_ref(), libc::O_PATH, 0)
            }
        }
    }

    /// `lstat` of an object.
    pub fn stat<P: AsRef<[u8]>>(&self, path: &[P]) -> io::Result<libc::stat> {
        match path.split_last() {
            None => sys::fstat(self.root.as_fd()),
            Some((last, parent)) => {
                check_name(last.as_ref())?;
                sys::statat(self.open_dir(parent)?.as_fd(), last.as_ref())
            }
        }
    }

    /// Opens an existing regular file for I/O (`flags`: access mode plus e.g.
    /// `O_APPEND`, `O_TRUNC`; `O_CREAT` is refused, use [`Upper::create_file`]).
    /// A symlink is `ELOOP`.
    pub fn open_file<P: AsRef<[u8]>>(&self, path: &[P], flags: i32) -> io::Result<File> {
        if flags & (libc::O_CREAT | libc::O_PATH | libc::O_DIRECTORY) != 0 {
            return Err(eno(libc::EINVAL));
        }
        let (parent, name) = split(path)?;
        check_name(name)?;
        let d = self.open_dir(parent)?;
        // O_PATH first: opening a fifo or a device must not block or have
        // effects before we know it is a regular file; then reopen that inode.
        let fd = sys::openat(d.as_fd(), name, libc::O_PATH, 0)?;
        match sys::fstat(fd.as_fd())?.st_mode & libc::S_IFMT {
            libc::S_IFREG => Ok(File::from(sys::reopen(fd.as_fd(), flags)?)),
            libc::S_IFDIR => Err(eno(libc::EISDIR)),
            libc::S_IFLNK => Err(eno(libc::ELOOP)),
            _ => Err(eno(libc::EINVAL)),
        }
    }

    /// The target of a symlink.
    pub fn readlink<P: AsRef<[u8]>>(&self, path: &[P]) -> io::Result<Vec<u8>> {
        let (parent, name) = split(path)?;
        check_name(name)?;
        sys::readlinkat(self.open_dir(parent)?.as_fd(), name)
    }

    /// Applies a `chown` result: in rootless mode `EPERM`/`EINVAL` are tolerated.
    fn chown_result(&self, r: io::Result<()>) -> io::Result<()> {
        match r {
            Err(e)
                if self.rootless
                    && matches!(e.raw_os_error(), Some(libc::EPERM | libc::EINVAL)) =>
            {
                log::debug!(target: "unionfs::upper", "rootless: chown refused ({e}); keeping our ids");
                Ok(())
            }
            r => r,
        }
    }
}

/// `path` made absolute and canonical, for a path whose last component may not
/// exist yet (its parent must).
fn canonical_new(path: &Path) -> Result<PathBuf> {
    if let Ok(p) = std::fs::canonicalize(path) {
        return Ok(p);
    }
    let name = path.file_name().ok_or_else(|| {
        Error::Usage(format!(
            "{}: not a usable work directory path",
            path.display()
        ))
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = std::fs::canonicalize(parent).map_err(|e| Error::io(parent, e))?;
    Ok(parent.join(name))
}

/// `.<name>.unionfs-work` next to the (canonical) upper directory.
fn default_work(upper: &Path) -> Result<PathBuf> {
    match (upper.parent(), upper.file_name()) {
        (Some(parent), Some(name)) => {
            let mut n = std::ffi::OsString::from(".");
            n.push(name);
            n.push(".unionfs-work");
            Ok(parent.join(n))
        }
        _ => Err(Error::Usage(format!(
            "{}: the upper directory has no parent to hold its work directory; give one explicitly",
            upper.display()
        ))),
    }
}

/// Creates (mode 0700) or opens the work directory; a symlink as its last
/// component is refused.
fn open_work(path: &Path) -> Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(Error::Usage(format!(
            "{}: not a usable work directory",
            path.display()
        )));
    };
    let pfd = sys::open_dir_path(parent).map_err(|e| Error::io(parent, e))?;
    let name = name.as_bytes();
    match sys::mkdirat(pfd.as_fd(), name, 0o700) {
        Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(Error::io(path, e)),
        _ => {}
    }
    sys::openat(pfd.as_fd(), name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
        .map_err(|e| Error::io(path, e))
}

/// Same filesystem, and neither directory inside the other.
fn check_placement(
    upper: &Path,
    root: BorrowedFd<'_>,
    work: &Path,
    wfd: BorrowedFd<'_>,
) -> Result<()> {
    let su = sys::fstat(root).map_err(|e| Error::io(upper, e))?;
    let sw = sys::fstat(wfd).map_err(|e| Error::io(work, e))?;
    if su.st_dev != sw.st_dev {
        return Err(Error::Usage(format!(
            "work directory {} is not on the same filesystem as the upper directory {} \
             (copy-up renames from one to the other); choose a work directory next to the upper",
            work.display(),
            upper.display()
        )));
    }
    let nested = |inner: BorrowedFd<'_>, outer: &libc::stat, p: &Path| {
        is_within(inner, outer).map_err(|e| Error::io(p, e))
    };
    if nested(wfd, &su, work)? || nested(root, &sw, upper)? {
        return Err(Error::Usage(format!(
            "the work directory {} and the upper directory {} must not be inside one another",
            work.display(),
            upper.display()
        )));
    }
    Ok(())
}

/// Returns true if and only if `dir` is `outer` or below it (walks `..` up to `/`).
fn is_within(dir: BorrowedFd<'_>, outer: &libc::stat) -> io::Result<bool> {
    let mut cur = dir.try_clone_to_owned()?;
    let mut st = sys::fstat(cur.as_fd())?;
    loop {
        if (st.st_dev, st.st_ino) == (outer.st_dev, outer.st_ino) {
            return Ok(true);
        }
        let parent = sys::open_parent(cur.as_fd())?;
        let pst = sys::fstat(parent.as_fd())?;
        if (pst.st_dev, pst.st_ino) == (st.st_dev, st.st_ino) {
            return Ok(false);
        }
        (cur, st) = (parent, pst);
    }
}

/// How long a lock held by someone else is waited for: a daemon still
/// exiting after `unionfs umount` returned holds it for a moment.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Runs `take` until it does not fail with `EWOULDBLOCK` or [`LOCK_WAIT`]
/// has passed.
fn with_wait(take: impl Fn() -> std::io::Result<()>) -> std::io::Result<()> {
    let until = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match take() {
            Err(e)
                if e.raw_os_error() == Some(libc::EWOULDBLOCK)
                    && std::time::Instant::now() < until =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            r => return r,
        }
    }
}

fn lock(path: &Path, fd: BorrowedFd<'_>, what: &str) -> Result<()> {
    with_wait(|| sys::flock_exclusive(fd)).map_err(|e| {
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Error::Usage(format!(
                "{}: this {what} directory is in use by another unionfs mount, or being read \
                 by unionfs commit, export or diff",
                path.display()
            ))
        } else {
            Error::io(path, e)
        }
    })
}

/// A reader's lock: shared with other readers, refused while a mount holds
/// the exclusive one (and refusing a mount meanwhile).
fn lock_shared(path: &Path, fd: BorrowedFd<'_>) -> Result<()> {
    with_wait(|| sys::flock_shared(fd)).map_err(|e| {
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Error::Usage(format!(
                "{}: this upper directory is in use by a unionfs mount",
                path.display()
            ))
        } else {
            Error::io(path, e)
        }
    })
}
