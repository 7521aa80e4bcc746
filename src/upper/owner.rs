//! Logical ownership in a rootless upper: `user.unionfs.override_stat`.
//!
//! Owns what an unprivileged daemon does where root would `chown`, `chmod` or
//! `mknod`: it keeps the object's *logical* owner, mode and device number in
//! the xattr `user.unionfs.override_stat` (the idea fuse-overlayfs uses with
//! `user.fuseoverlayfs.override_stat`), and reports those in `stat`. The real
//! object keeps the daemon's ids, and a mode the daemon can always use
//! (owner read/write, and search for directories): the kernel's permission
//! checks (`default_permissions`) work on the logical attributes we report.
//!
//! Format (ASCII): `UID:GID:MODE` or, for a device, `UID:GID:MODE:MAJOR:MINOR`,
//! with MODE the full `st_mode` in octal, type bits included, e.g.
//! `0:0:0100644` or `0:6:020660:1:3`. A device the daemon cannot create is
//! stored as an empty regular file (a *placeholder*) whose override says
//! `S_IFCHR`/`S_IFBLK`. Linux allows `user.*` xattrs only on regular files and
//! directories: a rootless symlink, fifo or socket keeps the daemon's ids.
//!
//! Does not own when rootless mode applies (`Upper::with_rootless`), nor id
//! mapping between the container and the host (`crate::idmap`).

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use super::Upper;
use crate::sys;

/// The xattr holding the logical ownership.
pub const OVERRIDE_XATTR: &[u8] = b"user.unionfs.override_stat";

/// Logical attributes of an upper object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Override {
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// `st_mode`, type bits included.
    pub mode: u32,
    /// Device number (`makedev`), for `S_IFCHR`/`S_IFBLK`.
    pub rdev: u64,
}

impl Override {
    /// The xattr value.
    pub fn encode(&self) -> Vec<u8> {
        let kind = self.mode & libc::S_IFMT;
        let mut s = format!("{}:{}:0{:o}", self.uid, self.gid, self.mode);
        if kind == libc::S_IFCHR || kind == libc::S_IFBLK {
            s += &format!(":{}:{}", libc::major(self.rdev), libc::minor(self.rdev));
        }
        s.into_bytes()
    }

    /// Parses an xattr value; `None` if malformed.
    pub fn decode(v: &[u8]) -> Option<Override> {
        let s = std::str::from_utf8(v).ok()?;
        let f: Vec<&str> = s.trim_end_matches('\0').split(':').collect();
        let (uid, gid) = (f.first()?.parse().ok()?, f.get(1)?.parse().ok()?);
        let mode = u32::from_str_radix(f.get(2)?, 8).ok()?;
        let rdev = match f.len() {
            3 => 0,
            5 => libc::makedev(f[3].parse().ok()?, f[4].parse().ok()?),
            _ => return None,
        };
        Some(Override {
            uid,
            gid,
            mode,
            rdev,
        })
    }

    /// Puts the logical attributes into `st`.
    pub fn apply(&self, st: &mut libc::stat) {
        st.st_uid = self.uid;
        st.st_gid = self.gid;
        st.st_mode = self.mode;
        let kind = self.mode & libc::S_IFMT;
        if kind == libc::S_IFCHR || kind == libc::S_IFBLK {
            st.st_rdev = self.rdev;
            st.st_size = 0;
            st.st_blocks = 0;
        }
    }
}

/// The override of the object `fd` refers to, if it has a valid one.
pub fn read(fd: BorrowedFd<'_>) -> Option<Override> {
    match sys::path_getxattr(fd, OVERRIDE_XATTR) {
        Ok(v) => {
            let o = Override::decode(&v);
            if o.is_none() {
                log::warn!(target: "unionfs::upper", "ignoring a malformed {}: {:?}",
                    String::from_utf8_lossy(OVERRIDE_XATTR), String::from_utf8_lossy(&v));
            }
            o
        }
        Err(_) => None,
    }
}

/// Returns true if and only if objects of type `kind` can carry an override.
fn can_hold(kind: u32) -> bool {
    kind == libc::S_IFREG || kind == libc::S_IFDIR
}

/// What a rootless set of logical attributes changes; `None` = unchanged.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Logical {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Permission bits.
    pub perm: Option<u32>,
    /// Type and device number (placeholders of devices).
    pub kind_rdev: Option<(u32, u64)>,
}

impl Upper {
    /// Sets logical attributes of the object `fd` refers to, rootless-style:
    /// into its override (created from its real attributes if missing), while
    /// its real mode stays usable by the daemon. An object that cannot carry
    /// an override (symlink, fifo, socket) gets a real `chmod`, and its owner
    /// stays the daemon's.
    pub(super) fn set_logical(&self, fd: BorrowedFd<'_>, l: Logical) -> io::Result<()> {
        let st = sys::fstat(fd)?;
        let real_kind = st.st_mode & libc::S_IFMT;
        if !can_hold(real_kind) {
            if let (Some(p), true) = (l.perm, real_kind != libc::S_IFLNK) {
                sys::path_chmod(fd, p & 0o7777)?;
            }
            if l.uid.is_some() || l.gid.is_some() {
                log::debug!(target: "unionfs::upper", "rootless: cannot record an owner on this file type");
            }
            return Ok(());
        }
        let mut o = read(fd).unwrap_or(Override {
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode,
            rdev: 0,
        });
        o.uid = l.uid.unwrap_or(o.uid);
        o.gid = l.gid.unwrap_or(o.gid);
        if let Some(p) = l.perm {
            o.mode = (o.mode & libc::S_IFMT) | (p & 0o7777);
        }
        if let Some((kind, rdev)) = l.kind_rdev {
            o.mode = kind | (o.mode & 0o7777);
            o.rdev = rdev;
        }
        let access = if real_kind == libc::S_IFDIR {
            0o700
        } else {
            0o600
        };
        let real = (o.mode & 0o777) | access;
        if st.st_mode & 0o7777 != real {
            sys::path_chmod(fd, real)?;
        }
        let plain = Override {
            uid: st.st_uid,
            gid: st.st_gid,
            mode: real_kind | real,
            rdev: 0,
        };
        if o == plain && read(fd).is_none() {
            return Ok(()); // the real attributes say it all
        }
        sys::path_setxattr(fd, OVERRIDE_XATTR, &o.encode(), 0).map_err(|e| {
            if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                io::Error::new(
                    e.kind(),
                    format!(
                        "the upper's filesystem has no user xattrs, which rootless mode needs: {e}"
                    ),
                )
            } else {
                e
            }
        })
    }

    /// `fstat` of `fd` with its override applied (rootless mode). The flag
    /// says whether the ids are logical (from an override) rather than the
    /// real ones (the daemon's, or whoever made the file).
    pub fn fstat_logical(&self, fd: BorrowedFd<'_>) -> io::Result<(libc::stat, bool)> {
        let mut st = sys::fstat(fd)?;
        if self.is_rootless() && can_hold(st.st_mode & libc::S_IFMT) {
            if let Some(o) = read(fd) {
                o.apply(&mut st);
                return Ok((st, true));
            }
        }
        Ok((st, false))
    }

    /// `lstat` of `path` with its override applied; see [`Upper::fstat_logical`].
    pub fn stat_logical<P: AsRef<[u8]>>(&self, path: &[P]) -> io::Result<(libc::stat, bool)> {
        if !self.is_rootless() {
            return Ok((self.stat(path)?, false));
        }
        self.fstat_logical(self.open_path(path)?.as_fd())
    }
}

/// Returns true if and only if `mode` is a character or block device.
pub(super) fn is_device(mode: u32) -> bool {
    matches!(mode & libc::S_IFMT, libc::S_IFCHR | libc::S_IFBLK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let f = Override {
            uid: 0,
            gid: 0,
            mode: libc::S_IFREG | 0o644,
            rdev: 0,
        };
        assert_eq!(f.encode(), b"0:0:0100644");
        assert_eq!(Override::decode(&f.encode()), Some(f));
        let d = Override {
            uid: 5,
            gid: 6,
            mode: libc::S_IFCHR | 0o660,
            rdev: libc::makedev(1, 3),
        };
        assert_eq!(d.encode(), b"5:6:020660:1:3");
        assert_eq!(Override::decode(&d.encode()), Some(d));
        for bad in [
            &b""[..],
            b"1:2",
            b"x:0:0644",
            b"0:0:9",
            b"0:0:0644:1",
            b"\xff",
        ] {
            assert_eq!(Override::decode(bad), None, "{bad:?}");
        }
    }
}
