//! Whiteouts and opaque directories as files in the upper, in both formats.
//!
//! OCI image spec, "Whiteouts": "A whiteout file is an empty file with a special
//! filename that signifies a path should be deleted ... the prefix `.wh.` plus
//! the basename of the path to be deleted", and an opaque whiteout is "a file
//! with the name `.wh..wh..opq` indicating that all siblings are hidden in the
//! lower layer".
//! Kernel `overlayfs.rst`: "A whiteout is created as a character device with 0/0
//! device number" and "A directory is made opaque by setting the xattr
//! `trusted.overlay.opaque` to `y`" (`user.overlay.opaque` with `userxattr`).
//!
//! Written as we write them:
//! - OCI whiteout: an empty regular file `.wh.NAME`, mode 0600, owned by the
//!   daemon (root for a root mount). 0600 is what docker's overlay-to-tar
//!   converter writes for whiteouts; readers look only at the name.
//! - OCI opaque marker: an empty file `.wh..wh..opq`, mode 0600, same owner.
//! - overlay whiteout: `mknod(NAME, S_IFCHR | 0000, 0)`, as the kernel's
//!   `vfs_whiteout` (mode 0, owner the daemon).
//! - overlay opaque: `trusted.overlay.opaque=y` (needs `CAP_SYS_ADMIN`).
//!
//! Whiteouts share one inode: each is a hard link to a whiteout kept in the
//! work dir (`unionfs-whiteout.oci` or `.chr`, per format), as overlayfs
//! links its `#whiteout` (`ovl_whiteout`, since 5.8). A link is a third of
//! the cost of a new inode on ext4, and `rm -rf` of a lower tree leaves one
//! inode, not one per name. Readers look at names (`.wh.`) or at the type
//! (0/0 character device), never at link counts: a tar of such an upper
//! carries the second and later `.wh.` names as tar hard links, which docker,
//! containerd and umoci apply as whiteouts by their name (and so do we, and
//! `commit` writes whiteouts afresh from the names). When the shared one has
//! all the links its filesystem allows (`EMLINK`) or is not there, a new one
//! replaces it; a link that fails otherwise falls back to a whiteout of its
//! own.
//!
//! Not recognised: the xattr whiteouts of overlayfs 6.7+ (`overlay.whiteout` on
//! an empty file in a directory marked `overlay.opaque=x`): the kernel only
//! honours them in lower layers and never writes them in an upper.
//!
//! Owns the formats; the decision of when to write them is the caller's.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use super::ops::oci_whiteout_name;
use super::temp::Temp;
use super::{check_name, eno, Upper, WhiteoutFormat};
use crate::sys;
use crate::whiteout::OPAQUE;

/// The xattrs that make a directory opaque in the overlay format, privileged
/// first. Read both; we write the first.
pub const OPAQUE_XATTRS: [&[u8]; 2] = [b"trusted.overlay.opaque", b"user.overlay.opaque"];

/// Mode of OCI whiteout and opaque marker files.
const MARKER_MODE: u32 = 0o600;

/// The name, in the work dir, of the whiteout that whiteouts link to.
fn shared_name(format: WhiteoutFormat) -> &'static [u8] {
    match format {
        WhiteoutFormat::Oci => b"unionfs-whiteout.oci",
        WhiteoutFormat::Overlay => b"unionfs-whiteout.chr",
    }
}

/// Returns true if and only if `st` is a whiteout of `format` as we write
/// them (an OCI one is an empty regular file).
fn is_format_whiteout(format: WhiteoutFormat, st: &libc::stat) -> bool {
    match format {
        WhiteoutFormat::Oci => st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_size == 0,
        WhiteoutFormat::Overlay => is_whiteout(st),
    }
}

/// Returns true if and only if `st` is an overlay-format whiteout: a character
/// device with device number 0/0.
pub fn is_whiteout(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

fn exists(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EEXIST)
}

/// Returns true if and only if directory `fd` is opaque in either format (an
/// unreadable xattr counts as absent).
pub(super) fn dir_is_opaque(fd: BorrowedFd<'_>) -> bool {
    sys::statat(fd, OPAQUE).is_ok()
        || OPAQUE_XATTRS
            .iter()
            .any(|k| sys::path_getxattr(fd, k).is_ok_and(|v| v == b"y"))
}

impl Upper {
    /// Writes a whiteout for `name` in `dir`, in the configured format, and
    /// returns its `lstat`. Idempotent. Does not remove an upper entry `name`
    /// (see [`Upper::replace_with_whiteout`]); in the overlay format such an
    /// entry makes it `EEXIST`. In the OCI format a `name` longer than 251 bytes
    /// cannot be whited out (`ENAMETOOLONG`: `.wh.NAME` would exceed `NAME_MAX`).
    pub fn write_whiteout<P: AsRef<[u8]>>(&self, dir: &[P], name: &[u8]) -> io::Result<libc::stat> {
        check_name(name)?;
        self.write_whiteout_at(self.open_dir(dir)?.as_fd(), name)
    }

    fn write_whiteout_at(&self, d: BorrowedFd<'_>, name: &[u8]) -> io::Result<libc::stat> {
        let target = match self.format() {
            WhiteoutFormat::Oci => {
                oci_whiteout_name(name).ok_or_else(|| eno(libc::ENAMETOOLONG))?
            }
            WhiteoutFormat::Overlay => name.to_vec(),
        };
        match self.link_shared(d, &target) {
            Ok(st) => return Ok(st),
            // Taken: what is there is judged below, as a new whiteout's
            // EEXIST is.
            Err(e) if exists(&e) => {}
            Err(e) => {
                log::debug!(target: "unionfs::upper", "cannot link the shared whiteout: {e}; making one of its own")
            }
        }
        match self.make_whiteout(d, &target) {
            Ok(()) => sys::statat(d, &target),
            // Idempotent: an OCI `.wh.NAME` is one by its name; in the
            // overlay format NAME must be a 0/0 device.
            Err(e) if exists(&e) => match sys::statat(d, &target) {
                Ok(st) if self.format() == WhiteoutFormat::Oci || is_whiteout(&st) => Ok(st),
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Makes a whiteout object of its own at `dir/name` (`EEXIST` if taken).
    fn make_whiteout(&self, d: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
        match self.format() {
            WhiteoutFormat::Oci => {
                let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY;
                sys::openat(d, name, flags, MARKER_MODE).map(drop)
            }
            WhiteoutFormat::Overlay => sys::mknodat(d, name, libc::S_IFCHR, 0),
        }
    }

    /// Links `dir/name` to the shared whiteout (made first if missing, made
    /// anew if it is full or not a whiteout); returns the link's `lstat`.
    fn link_shared(&self, d: BorrowedFd<'_>, name: &[u8]) -> io::Result<libc::stat> {
        let shared = shared_name(self.format());
        let mut last = eno(libc::EMLINK);
        for _ in 0..3 {
            match sys::linkat(self.work_fd(), shared, d, name) {
                Ok(()) => {
                    let st = sys::statat(d, name)?;
                    if is_format_whiteout(self.format(), &st) {
                        return Ok(st);
                    }
                    // Something else took the shared name: undo, replace it.
                    sys::unlinkat(d, name, 0)?;
                    last = eno(libc::EINVAL);
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EMLINK)) => last = e,
                Err(e) => return Err(e),
            }
            self.new_shared_whiteout()?;
        }
        Err(last)
    }

    /// Makes a new shared whiteout in the work dir (replacing the old one,
    /// whose links stay whiteouts).
    fn new_shared_whiteout(&self) -> io::Result<()> {
        let (tmp, ()) = Temp::create(self, |w, n| self.make_whiteout(w, n))?;
        tmp.place_over(self.work_fd(), shared_name(self.format()))
    }

    /// Removes the whiteout for `name` in `dir`, in whichever format it is.
    /// Returns `Ok(false)` if there was none.
    pub fn remove_whiteout<P: AsRef<[u8]>>(&self, dir: &[P], name: &[u8]) -> io::Result<bool> {
        check_name(name)?;
        let d = self.open_dir(dir)?;
        let mut removed = false;
        if let Some(w) = oci_whiteout_name(name) {
            if sys::statat(d.as_fd(), &w).is_ok() {
                sys::unlinkat(d.as_fd(), &w, 0)?;
                removed = true;
            }
        }
        if sys::statat(d.as_fd(), name).is_ok_and(|st| is_whiteout(&st)) {
            sys::unlinkat(d.as_fd(), name, 0)?;
            removed = true;
        }
        Ok(removed)
    }

    /// Makes directory `dir` opaque, in the configured format. Idempotent.
    pub fn set_opaque<P: AsRef<[u8]>>(&self, dir: &[P]) -> io::Result<()> {
        self.mark_opaque(self.open_dir(dir)?.as_fd())
    }

    /// Returns true if and only if directory `dir` is opaque, in either format.
    pub fn is_opaque<P: AsRef<[u8]>>(&self, dir: &[P]) -> io::Result<bool> {
        Ok(dir_is_opaque(self.open_dir(dir)?.as_fd()))
    }

    /// Marks the directory `fd` refers to opaque.
    pub(super) fn mark_opaque(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        match self.format() {
            WhiteoutFormat::Oci => {
                match sys::openat(
                    fd,
                    OPAQUE,
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                    MARKER_MODE,
                ) {
                    Err(e) if !exists(&e) => Err(e),
                    _ => Ok(()),
                }
            }
            WhiteoutFormat::Overlay => sys::path_setxattr(fd, OPAQUE_XATTRS[0], b"y", 0),
        }
    }

    /// Replaces the upper entry `dir/name` (if any) by a whiteout, and returns the
    /// whiteout's `lstat`. A directory must hold no real entry (`ENOTEMPTY`; its
    /// whiteouts and markers go with it). Crash-safe: overlay format — the
    /// whiteout is made in the work dir and swapped in with `RENAME_EXCHANGE`
    /// (kernel `ovl_remove_and_whiteout`); OCI format — `.wh.NAME` is written
    /// first (NAME then still reads as itself), then NAME is moved into the work
    /// dir in one rename and removed there.
    pub fn replace_with_whiteout<P: AsRef<[u8]>>(
        &self,
        dir: &[P],
        name: &[u8],
    ) -> io::Result<libc::stat> {
        check_name(name)?;
        let d = self.open_dir(dir)?;
        let d = d.as_fd();
        match sys::statat(d, name) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                return self.write_whiteout_at(d, name)
            }
            Err(e) => return Err(e),
            Ok(st) if is_whiteout(&st) => return Ok(st),
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                self.only_markers(d, name)?;
            }
            Ok(_) => {}
        }
        match self.format() {
            WhiteoutFormat::Overlay => {
                let (tmp, ()) = Temp::create(self, |w, n| match self.link_shared(w, n) {
                    Err(e) if !exists(&e) => self.make_whiteout(w, n),
                    r => r.map(drop),
                })?;
                sys::renameat2(self.work_fd(), tmp.name(), d, name, libc::RENAME_EXCHANGE)?;
                drop(tmp); // now the old entry: removed
                sys::statat(d, name)
            }
            WhiteoutFormat::Oci => {
                let st = self.write_whiteout_at(d, name)?;
                let (tmp, ()) = Temp::create(self, |w, n| {
                    sys::renameat2(d, name, w, n, libc::RENAME_NOREPLACE)
                })?;
                drop(tmp);
                Ok(st)
            }
        }
    }
}
