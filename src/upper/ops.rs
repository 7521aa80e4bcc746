//! Namespace operations on the upper: create, link, unlink, rmdir, rename.
//!
//! Owns how a name is made in the upper, including over a whiteout (overlayfs
//! `ovl_create_over_whiteout`): a free name is created in place (so the
//! filesystem applies set-group-ID and default-ACL inheritance as usual), then
//! chowned (undone if that fails). A name held by an overlay-format whiteout
//! (0/0 char device) is built in the work directory and swapped in with
//! `RENAME_EXCHANGE`, so the name is never free in between (a crash cannot
//! uncover the lower object). A name with an OCI whiteout `.wh.NAME` is created
//! in place, then `.wh.NAME` is removed: every intermediate state reads back the
//! same (an upper entry next to its own whiteout is simply that entry, and a
//! directory next to one is opaque, see `scan.rs`).
//!
//! Does not own the decision to whiteout or the merged-view emptiness check
//! (the caller's), nor metadata changes of existing objects (`attr.rs`).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::owner;
use super::temp::{self, Placed, Temp};
use super::{check_name, eno, is_whiteout, Owner, Upper};
use crate::sys;
use crate::whiteout::{classify, Class, PREFIX};

/// A new object made by a create call.
#[derive(Clone, Copy, Debug)]
pub struct New {
    /// Its `lstat` (`st_ino` and type for the tree).
    pub stat: libc::stat,
    /// It replaced a whiteout (either format). A directory that did so was made
    /// opaque, as overlayfs does: the lower directory it replaces must not show
    /// through.
    pub replaced_whiteout: bool,
}

/// `.wh.NAME`, or `None` if that would exceed `NAME_MAX` (no such file can exist).
pub(super) fn oci_whiteout_name(name: &[u8]) -> Option<Vec<u8>> {
    (PREFIX.len() + name.len() <= crate::tar::index::NAME_MAX).then(|| [PREFIX, name].concat())
}

/// Removes a freshly created `dir/name` on drop unless disarmed.
struct Undo<'a> {
    dir: BorrowedFd<'a>,
    name: &'a [u8],
    armed: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = temp::remove_tree(self.dir, self.name) {
                log::warn!(target: "unionfs::upper", "cannot undo a failed create: {e}");
            }
        }
    }
}

impl Upper {
    /// Creates a regular file (`O_CREAT | O_EXCL` added to `flags`) and returns
    /// it open. `EEXIST` if the name is taken by anything but a whiteout.
    pub fn create_file<P: AsRef<[u8]>>(
        &self,
        dir: &[P],
        name: &[u8],
        flags: i32,
        mode: u32,
        owner: Option<Owner>,
    ) -> io::Result<(File, New)> {
        if flags & (libc::O_PATH | libc::O_DIRECTORY | libc::O_TMPFILE) != 0 {
            return Err(eno(libc::EINVAL));
        }
        let flags = flags | libc::O_CREAT | libc::O_EXCL;
        let make = |d: BorrowedFd<'_>, n: &[u8]| sys::openat(d, n, flags, mode & !libc::S_IFMT);
        let (fd, new) = self.create_with(dir, name, owner, false, make)?;
        Ok((File::from(fd), new))
    }

    /// Creates a directory.
    pub fn mkdir<P: AsRef<[u8]>>(
        &self,
        dir: &[P],
        name: &[u8],
        mode: u32,
        owner: Option<Owner>,
    ) -> io::Result<New> {
        let make = |d: BorrowedFd<'_>, n: &[u8]| sys::mkdirat(d, n, mode & 0o7777);
        Ok(self.create_with(dir, name, owner, true, make)?.1)
    }

    /// Creates a fifo, socket, device or empty regular file (`mode` includes the
    /// type). A 0/0 character device is `EPERM`: it would be a whiteout
    /// (overlayfs refuses it the same way).
    pub fn mknod<P: AsRef<[u8]>>(
        &self,
        dir: &[P],
        name: &[u8],
        mode: u32,
        rdev: u64,
        owner: Option<Owner>,
    ) -> io::Result<New> {
        match mode & libc::S_IFMT {
            libc::S_IFCHR if rdev == 0 => return Err(eno(libc::EPERM)),
            0 | libc::S_IFREG | libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO | libc::S_IFSOCK => {}
            _ => return Err(eno(libc::EINVAL)),
        }
        if self.is_rootless() && owner::is_device(mode) {
            // A placeholder file whose override records the device (`owner.rs`).
            let make = |d: BorrowedFd<'_>, n: &[u8]| {
                let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY;
                sys::openat(d, n, flags, 0o600).map(drop)
            };
            let new = self.create_with(dir, name, owner, false, make)?.1;
            let fd = self.open_dir(dir)?;
            let f = sys::openat(fd.as_fd(), name, libc::O_PATH, 0)?;
            let l = owner::Logical {
                perm: Some(mode & 0o7777),
                kind_rdev: Some((mode & libc::S_IFMT, rdev)),
                ..Default::default()
            };
            self.set_logical(f.as_fd(), l)?;
            return Ok(new);
        }
        let make = |d: BorrowedFd<'_>, n: &[u8]| sys::mknodat(d, n, mode, rdev);
        Ok(self.create_with(dir, name, owner, false, make)?.1)
    }

    /// Creates a symlink to `target` (stored as is, never resolved by us).
    pub fn symlink<P: AsRef<[u8]>>(
        &self,
        dir: &[P],
        name: &[u8],
        target: &[u8],
        owner: Option<Owner>,
    ) -> io::Result<New> {
        let make = |d: BorrowedFd<'_>, n: &[u8]| sys::symlinkat(target, d, n);
        Ok(self.create_with(dir, name, owner, false, make)?.1)
    }

    /// Makes `to_dir/to_name` a hard link to the upper object at `from`.
    pub fn link<P: AsRef<[u8]>, Q: AsRef<[u8]>>(
        &self,
        from: &[P],
        to_dir: &[Q],
        to_name: &[u8],
    ) -> io::Result<New> {
        let (fdir, fname) = super::split(from)?;
        check_name(fname)?;
        let fd = self.open_dir(fdir)?;
        let make = |d: BorrowedFd<'_>, n: &[u8]| sys::linkat(fd.as_fd(), fname, d, n);
        Ok(self.create_with(to_dir, to_name, None, false, make)?.1)
    }

    /// Gives a new object its owner: `chown` as root; rootless, the owner is
    /// recorded in the override (with the mode the daemon can keep using).
    fn own(&self, fd: BorrowedFd<'_>, o: Owner) -> io::Result<()> {
        if !self.is_rootless() {
            return self.chown_result(sys::fchown_empty(fd, o.uid, o.gid));
        }
        let perm = sys::fstat(fd)?.st_mode & 0o7777;
        let l = owner::Logical {
            uid: Some(o.uid),
            gid: Some(o.gid),
            perm: Some(perm),
            kind_rdev: None,
        };
        self.set_logical(fd, l)
    }

    /// The common create path: checks, then in place or over a whiteout.
    fn create_with<P: AsRef<[u8]>, T>(
        &self,
        dir: &[P],
        name: &[u8],
        owner: Option<Owner>,
        is_dir: bool,
        make: impl FnMut(BorrowedFd<'_>, &[u8]) -> io::Result<T>,
    ) -> io::Result<(T, New)> {
        check_name(name)?;
        let d = self.open_dir(dir)?;
        match sys::statat(d.as_fd(), name) {
            Ok(st) if is_whiteout(&st) => {
                return self.create_over_whiteout(d.as_fd(), name, owner, is_dir, make)
            }
            Ok(_) => return Err(eno(libc::EEXIST)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        self.create_in_place(d.as_fd(), name, owner, is_dir, make)
    }

    /// Creates `d/name` where the name is free, then chowns it (undone on
    /// failure); over an OCI whiteout `.wh.NAME`, removes that afterwards.
    fn create_in_place<T>(
        &self,
        d: BorrowedFd<'_>,
        name: &[u8],
        owner: Option<Owner>,
        is_dir: bool,
        mut make: impl FnMut(BorrowedFd<'_>, &[u8]) -> io::Result<T>,
    ) -> io::Result<(T, New)> {
        let t = make(d, name)?;
        let mut undo = Undo {
            dir: d,
            name,
            armed: true,
        };
        let fd = sys::openat(d, name, libc::O_PATH, 0)?;
        if let Some(o) = owner {
            self.own(fd.as_fd(), o)?;
        }
        let wh = oci_whiteout_name(name).filter(|w| sys::statat(d, w).is_ok());
        if is_dir && wh.is_some() {
            self.mark_opaque(fd.as_fd())?;
        }
        let stat = sys::fstat(fd.as_fd())?;
        undo.armed = false;
        if let Some(w) = &wh {
            // The entry is in place; a whiteout left next to it would only hide
            // the lower object, which the entry hides anyway.
            if let Err(e) = sys::unlinkat(d, w, 0) {
                log::warn!(target: "unionfs::upper", "cannot remove a replaced whiteout: {e}");
            }
        }
        let replaced_whiteout = wh.is_some();
        Ok((
            t,
            New {
                stat,
                replaced_whiteout,
            },
        ))
    }

    /// Builds the object in the work dir and exchanges it with the overlay-format
    /// whiteout at `d/name`. The work dir has no set-group-ID bit to inherit, so
    /// the parent's is applied by hand (default ACLs are not: see the module docs).
    fn create_over_whiteout<T>(
        &self,
        d: BorrowedFd<'_>,
        name: &[u8],
        owner: Option<Owner>,
        is_dir: bool,
        make: impl FnMut(BorrowedFd<'_>, &[u8]) -> io::Result<T>,
    ) -> io::Result<(T, New)> {
        let (tmp, t) = Temp::create(self, make)?;
        let fd = tmp.open_path()?;
        let parent = sys::fstat(d)?;
        let sgid = parent.st_mode & libc::S_ISGID != 0;
        let uid = owner.map_or(u32::MAX, |o| o.uid);
        let gid = if sgid {
            parent.st_gid
        } else {
            owner.map_or(u32::MAX, |o| o.gid)
        };
        if (uid, gid) != (u32::MAX, u32::MAX) {
            self.own(fd.as_fd(), Owner { uid, gid })?;
        }
        if is_dir {
            if sgid {
                let mode = sys::fstat(fd.as_fd())?.st_mode & 0o7777;
                sys::path_chmod(fd.as_fd(), mode | libc::S_ISGID)?;
            }
            self.mark_opaque(fd.as_fd())?;
        }
        // `New` if the whiteout went away meanwhile: then there is nothing to replace.
        let replaced_whiteout = tmp.place(d, name)? == Placed::OverWhiteout;
        let stat = sys::fstat(fd.as_fd())?;
        Ok((
            t,
            New {
                stat,
                replaced_whiteout,
            },
        ))
    }

    /// Removes a non-directory.
    pub fn unlink<P: AsRef<[u8]>>(&self, dir: &[P], name: &[u8]) -> io::Result<()> {
        check_name(name)?;
        sys::unlinkat(self.open_dir(dir)?.as_fd(), name, 0)
    }

    /// Removes a directory that holds no real entry: whiteouts and markers in it
    /// go with it (`ENOTEMPTY` if anything else is there). Such a directory is
    /// first moved into the work dir in one rename, then emptied there, so the
    /// markers never disappear while the directory is still visible.
    pub fn rmdir<P: AsRef<[u8]>>(&self, dir: &[P], name: &[u8]) -> io::Result<()> {
        check_name(name)?;
        let d = self.open_dir(dir)?;
        if self.only_markers(d.as_fd(), name)? {
            let (tmp, ()) = Temp::create(self, |w, n| {
                sys::renameat2(d.as_fd(), name, w, n, libc::RENAME_NOREPLACE)
            })?;
            drop(tmp); // removes it, markers and all
            Ok(())
        } else {
            sys::unlinkat(d.as_fd(), name, libc::AT_REMOVEDIR)
        }
    }

    /// Returns `Ok(true)` if and only if directory `d/name` holds whiteouts or
    /// markers and nothing else, `Ok(false)` if it is empty, `ENOTEMPTY` if it
    /// holds a real entry, `ENOTDIR` if it is not a directory.
    pub(super) fn only_markers(&self, d: BorrowedFd<'_>, name: &[u8]) -> io::Result<bool> {
        let fd: OwnedFd = sys::openat(d, name, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        let names = sys::read_dir_names(fd.as_fd())?;
        for (n, _) in &names {
            let marker = classify(n) != Class::Plain || temp::is_whiteout_at(fd.as_fd(), n);
            if !marker {
                return Err(eno(libc::ENOTEMPTY));
            }
        }
        Ok(!names.is_empty())
    }

    /// `renameat2` with `flags` passed through: `RENAME_NOREPLACE`,
    /// `RENAME_EXCHANGE`, and `RENAME_WHITEOUT` (leaves a 0/0 char device at
    /// the source: only in the overlay format, else `EINVAL`).
    pub fn rename<P: AsRef<[u8]>, Q: AsRef<[u8]>>(
        &self,
        from_dir: &[P],
        from_name: &[u8],
        to_dir: &[Q],
        to_name: &[u8],
        flags: u32,
    ) -> io::Result<()> {
        let known = libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE | libc::RENAME_WHITEOUT;
        let oci_whiteout =
            flags & libc::RENAME_WHITEOUT != 0 && self.format() == super::WhiteoutFormat::Oci;
        if flags & !known != 0 || oci_whiteout {
            return Err(eno(libc::EINVAL));
        }
        check_name(from_name)?;
        check_name(to_name)?;
        let fd = self.open_dir(from_dir)?;
        let td = self.open_dir(to_dir)?;
        sys::renameat2(fd.as_fd(), from_name, td.as_fd(), to_name, flags)
    }
}
