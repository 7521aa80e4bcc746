//! Metadata of existing upper objects: `setattr` (owner, mode, size, times) and
//! extended attributes.
//!
//! Owns the order of a combined `setattr` and which xattrs are private. Every
//! call acts on an fd: an open file's, or an `O_PATH | O_NOFOLLOW` fd of the
//! named object, so a symlink is acted on itself (or refused: it has no mode or
//! size), never followed. Does not own copy-up (the caller copies an object up
//! before changing it).
//!
//! Private xattrs (overlayfs `ovl_is_private_xattr`, plus ours): `trusted.overlay.*`,
//! `user.overlay.*` (markers of the overlay format and of `userxattr` mounts) and
//! `user.unionfs.*` (issue 6's rootless overrides). They are hidden from
//! `list_xattr`, read as absent (`ENODATA`) by `get_xattr`, and cannot be set or
//! removed (`EPERM`; the kernel answers `EOPNOTSUPP` for its own). So a user can
//! never forge a whiteout or an opaque marker through the mount.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use super::owner::Logical;
use super::{eno, Upper};
use crate::sys;

const PRIVATE_PREFIXES: [&[u8]; 3] = [b"trusted.overlay.", b"user.overlay.", b"user.unionfs."];

/// Returns true if and only if `key` is an xattr the upper keeps for itself.
pub fn is_private_xattr(key: &[u8]) -> bool {
    PRIVATE_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// A time to set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Time {
    /// The current time (`UTIME_NOW`).
    Now,
    /// Seconds and nanoseconds since the epoch.
    At(i64, u32),
}

impl Time {
    fn timespec(self) -> libc::timespec {
        match self {
            Time::Now => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_NOW,
            },
            Time::At(s, ns) => libc::timespec {
                tv_sec: s,
                tv_nsec: i64::from(ns.min(999_999_999)),
            },
        }
    }
}

/// The attributes a `setattr` changes; `None` = unchanged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// Permission bits (`& 0o7777`).
    pub mode: Option<u32>,
    /// Owner.
    pub uid: Option<u32>,
    /// Group.
    pub gid: Option<u32>,
    /// Size (regular files only).
    pub size: Option<u64>,
    /// Access time.
    pub atime: Option<Time>,
    /// Modification time.
    pub mtime: Option<Time>,
}

/// Applies `a` to the object `fd` refers to, in the order that keeps each step
/// from undoing another: owner (a chown clears set-user-ID bits), mode, size,
/// then times (a truncate sets the mtime). Returns the resulting `lstat`.
fn apply(upper: &Upper, fd: BorrowedFd<'_>, a: &SetAttr) -> io::Result<libc::stat> {
    if upper.is_rootless() {
        // Owner and mode are logical: recorded in the override (`owner.rs`).
        if a.uid.is_some() || a.gid.is_some() || a.mode.is_some() {
            let l = Logical {
                uid: a.uid,
                gid: a.gid,
                perm: a.mode,
                kind_rdev: None,
            };
            upper.set_logical(fd, l)?;
        }
    } else {
        if a.uid.is_some() || a.gid.is_some() {
            sys::fchown_empty(fd, a.uid.unwrap_or(u32::MAX), a.gid.unwrap_or(u32::MAX))?;
        }
        if let Some(m) = a.mode {
            sys::path_chmod(fd, m & 0o7777)?;
        }
    }
    if let Some(s) = a.size {
        sys::path_truncate(fd, s)?;
    }
    if a.atime.is_some() || a.mtime.is_some() {
        sys::futimens(fd, a.atime.map(Time::timespec), a.mtime.map(Time::timespec))?;
    }
    let mut st = sys::fstat(fd)?;
    if upper.is_rootless() {
        if let Some(o) = super::owner::read(fd) {
            o.apply(&mut st);
        }
    }
    Ok(st)
}

impl Upper {
    /// `setattr` of the object at `path` (never following a symlink: a symlink
    /// can change owner and times; mode is `EOPNOTSUPP`, size `EINVAL`).
    pub fn set_attr<P: AsRef<[u8]>>(&self, path: &[P], a: &SetAttr) -> io::Result<libc::stat> {
        apply(self, self.open_path(path)?.as_fd(), a)
    }

    /// `setattr` through an open fd (a FUSE file handle) or an `O_PATH` fd.
    pub fn set_attr_fd(&self, fd: BorrowedFd<'_>, a: &SetAttr) -> io::Result<libc::stat> {
        apply(self, fd, a)
    }

    /// The value of xattr `key` of the object at `path` (`ENODATA` for private ones).
    pub fn get_xattr<P: AsRef<[u8]>>(&self, path: &[P], key: &[u8]) -> io::Result<Vec<u8>> {
        if is_private_xattr(key) {
            return Err(eno(libc::ENODATA));
        }
        sys::path_getxattr(self.open_path(path)?.as_fd(), key)
    }

    /// The xattr names of the object at `path`, private ones left out.
    pub fn list_xattr<P: AsRef<[u8]>>(&self, path: &[P]) -> io::Result<Vec<Vec<u8>>> {
        let raw = sys::path_listxattr(self.open_path(path)?.as_fd())?;
        Ok(raw
            .split(|&b| b == 0)
            .filter(|k| !k.is_empty() && !is_private_xattr(k))
            .map(<[u8]>::to_vec)
            .collect())
    }

    /// Sets xattr `key` (`flags`: `XATTR_CREATE`/`XATTR_REPLACE`); `EPERM` for private ones.
    pub fn set_xattr<P: AsRef<[u8]>>(
        &self,
        path: &[P],
        key: &[u8],
        value: &[u8],
        flags: i32,
    ) -> io::Result<()> {
        if is_private_xattr(key) {
            return Err(eno(libc::EPERM));
        }
        sys::path_setxattr(self.open_path(path)?.as_fd(), key, value, flags)
    }

    /// Removes xattr `key`; `EPERM` for private ones.
    pub fn remove_xattr<P: AsRef<[u8]>>(&self, path: &[P], key: &[u8]) -> io::Result<()> {
        if is_private_xattr(key) {
            return Err(eno(libc::EPERM));
        }
        sys::path_removexattr(self.open_path(path)?.as_fd(), key)
    }
}
