//! commit/: from an upper (and the layers under it) to something to ship.
//!
//! - [`changeset`]: the upper as an OCI changeset layer (`unionfs commit`).
//! - [`export`]: the merged view as one flat tar (`unionfs export`).
//! - [`diff`]: the changes an upper makes, `A`/`C`/`D` (`unionfs diff`).
//! - [`output`]: a new image (config, manifest) written as a docker archive,
//!   an OCI layout or an OCI archive.
//!
//! All of them read an upper that must not change meanwhile: [`open_upper`]
//! takes the lock a unionfs mount takes (so an upper in use by a live mount
//! is refused, and a mount started meanwhile is refused) and refuses an upper
//! a kernel overlayfs mount uses (`/proc/self/mountinfo`). Entries are read
//! with `*at()` calls on directory fds and `O_NOFOLLOW`, as the mount does.
//!
//! Knows tar (through `tar::write`) and the upper's formats; nothing of FUSE.

pub mod changeset;
pub mod diff;
pub mod export;
pub mod output;

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::idmap::IdMap;
use crate::stack::LayerRef;
use crate::stack::Stack;
use crate::sys;
use crate::tar::write::{Entry, EntryKind};
use crate::upper::tree::UpperTree;
use crate::upper::{is_private_xattr, Override, Upper, OVERRIDE_XATTR};

/// xattrs that say a kernel overlayfs upper object is incomplete on its own.
const INCOMPLETE_XATTRS: [&[u8]; 4] = [
    b"trusted.overlay.metacopy",
    b"user.overlay.metacopy",
    b"trusted.overlay.redirect",
    b"user.overlay.redirect",
];

/// xattrs never written to a tar besides the private ones: a label of this
/// host, not of the image (docker and umoci leave it out too).
const HOST_XATTRS: [&[u8]; 1] = [b"security.selinux"];

/// Opens `dir` to read it as an upper and loads its namespace. Refuses an
/// upper a unionfs mount (lock) or a kernel overlayfs mount (mountinfo) is
/// using: what it reads must not change under it.
pub fn open_upper(dir: &Path) -> Result<(Upper, UpperTree)> {
    let upper = Upper::open_read_only(dir).map_err(|e| match e {
        Error::Usage(m) => Error::Usage(format!(
            "{m}: unmount it first (its upper must not change while it is read)"
        )),
        e => e,
    })?;
    if let Some(mnt) = overlay_using(upper.path()) {
        return Err(Error::Usage(format!(
            "{}: this upper directory is in use by the kernel overlayfs mount on {}: \
             unmount it first (its upper must not change while it is read)",
            upper.path().display(),
            mnt
        )));
    }
    let upper = upper.with_rootless(true);
    let tree = UpperTree::scan(&upper)?;
    Ok((upper, tree))
}

/// The mountpoint of a kernel overlayfs mount whose `upperdir` is `upper`.
fn overlay_using(upper: &Path) -> Option<String> {
    let info = std::fs::read("/proc/self/mountinfo").ok()?;
    let want = upper.as_os_str().as_bytes();
    for line in info.split(|&b| b == b'\n') {
        let f: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let Some(sep) = f.iter().position(|x| *x == b"-") else {
            continue;
        };
        if f.get(sep + 1) != Some(&&b"overlay"[..]) {
            continue;
        }
        let opts = f.get(sep + 3).copied().unwrap_or_default();
        let uses = opts
            .split(|&b| b == b',')
            .filter_map(|o| o.strip_prefix(b"upperdir=".as_slice()))
            .any(|p| crate::mount::unescape_mountinfo(p) == want);
        if uses {
            return Some(
                String::from_utf8_lossy(&crate::mount::unescape_mountinfo(f.get(4)?)).into_owned(),
            );
        }
    }
    None
}

/// The first name written of each multiply-linked inode (key `K`): later
/// names become tar hard links to it.
pub(crate) struct Links<K>(std::collections::HashMap<K, Vec<u8>>);

impl<K: std::hash::Hash + Eq> Links<K> {
    pub fn new() -> Links<K> {
        Links(std::collections::HashMap::new())
    }

    /// Makes `e` a hard link to the first name of `inode` if one was
    /// written (returns true); else records `e.path` as that name. An inode
    /// with one link is left alone.
    pub fn link_or_first(&mut self, inode: K, nlink: u64, e: &mut Entry) -> bool {
        if nlink <= 1 {
            return false;
        }
        if let Some(first) = self.0.get(&inode) {
            e.kind = EntryKind::HardLink(first.clone());
            e.size = 0;
            return true;
        }
        self.0.insert(inode, e.path.clone());
        false
    }
}

/// `dir/name`, or `name` at the root.
pub(crate) fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    if !dir.is_empty() {
        p.extend_from_slice(dir);
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// An upper object read for writing to a tar: its entry (path, logical
/// attributes, xattrs; `size` for a regular file) and the open fd.
pub(crate) struct UpperObject {
    pub entry: Entry,
    /// `O_RDONLY` for regular files and directories, `O_PATH` otherwise.
    pub fd: OwnedFd,
    /// The real inode number and link count (hard links in the upper).
    pub ino: u64,
    pub nlink: u64,
    /// A metadata-only copy's marker (`overlay::metacopy`): its data is in
    /// a layer, the file is a hole.
    pub metacopy: Option<Vec<u8>>,
}

impl UpperObject {
    /// Reads object `name` of the upper directory `dfd`, whose kind (from the
    /// tree's scan) is `kind`; `path` is its path in the tar. `None` for a
    /// socket (a tar cannot hold one; a warning is logged).
    pub fn read(
        upper: &Upper,
        dfd: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
        kind: u32,
        ids: &IdMap,
    ) -> Result<Option<UpperObject>> {
        let on_disk = || upper.path().join(std::ffi::OsStr::from_bytes(path));
        let err = |e: io::Error| Error::io(on_disk(), e);
        // Regular files and directories are opened for real (no side effect
        // for those; fgetxattr/flistxattr then work on the fd), anything else
        // as O_PATH. O_NOFOLLOW throughout: a symlink is never followed.
        let flags = match kind {
            libc::S_IFREG => libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
            libc::S_IFDIR => libc::O_RDONLY | libc::O_DIRECTORY,
            _ => libc::O_PATH,
        };
        let fd = sys::openat(dfd, name, flags, 0).map_err(err)?;
        let mut st = sys::fstat(fd.as_fd()).map_err(err)?;
        if st.st_mode & libc::S_IFMT != kind {
            return Err(err(io::Error::other(
                "changed type while the upper was read",
            )));
        }
        let by_path = flags == libc::O_PATH;
        let keys = if by_path {
            sys::path_listxattr(fd.as_fd())
        } else {
            sys::flistxattr(fd.as_fd())
        };
        let keys = match keys {
            Ok(k) => k,
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Vec::new(),
            Err(e) => return Err(err(e)),
        };
        let get = |k: &[u8]| {
            if by_path {
                sys::path_getxattr(fd.as_fd(), k)
            } else {
                sys::fgetxattr(fd.as_fd(), k)
            }
        };
        let mut xattrs = Vec::new();
        let mut logical = false;
        let mut metacopy = None;
        for k in keys.split(|&b| b == 0).filter(|k| !k.is_empty()) {
            if INCOMPLETE_XATTRS.contains(&k) {
                return Err(err(io::Error::other(format!(
                    "has {}: kernel overlayfs keeps part of it in the lower layers \
                     (metacopy=on or redirect_dir=on); make the upper without those options",
                    String::from_utf8_lossy(k)
                ))));
            }
            if k == OVERRIDE_XATTR {
                match Override::decode(&get(k).map_err(err)?) {
                    Some(o) => {
                        o.apply(&mut st);
                        logical = true;
                    }
                    None => log::warn!(target: "unionfs::commit", "{}: ignoring a malformed {}",
                        on_disk().display(), String::from_utf8_lossy(OVERRIDE_XATTR)),
                }
                continue;
            }
            if k == crate::overlay::metacopy::METACOPY_XATTR && kind == libc::S_IFREG {
                metacopy = Some(get(k).map_err(err)?);
                continue;
            }
            if is_private_xattr(k) || HOST_XATTRS.contains(&k) {
                continue;
            }
            match get(k) {
                Ok(v) => xattrs.push((k.to_vec(), v)),
                // Removed since it was listed: nothing to write.
                Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
                Err(e) => return Err(err(e)),
            }
        }
        xattrs.sort();
        if !logical {
            st.st_uid = ids.uid_in(st.st_uid);
            st.st_gid = ids.gid_in(st.st_gid);
        }
        let rdev = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
        let (kind, size) = match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => (EntryKind::Dir, 0),
            libc::S_IFLNK => (
                EntryKind::Symlink(sys::readlinkat(dfd, name).map_err(err)?),
                0,
            ),
            libc::S_IFCHR => (
                EntryKind::Char {
                    major: rdev.0,
                    minor: rdev.1,
                },
                0,
            ),
            libc::S_IFBLK => (
                EntryKind::Block {
                    major: rdev.0,
                    minor: rdev.1,
                },
                0,
            ),
            libc::S_IFIFO => (EntryKind::Fifo, 0),
            libc::S_IFSOCK => {
                log::warn!(target: "unionfs::commit", "{}: socket ignored (a tar cannot hold one)",
                    on_disk().display());
                return Ok(None);
            }
            _ => (EntryKind::File, st.st_size as u64),
        };
        Ok(Some(UpperObject {
            entry: Entry {
                path: path.to_vec(),
                kind,
                mode: st.st_mode & 0o7777,
                uid: st.st_uid,
                gid: st.st_gid,
                mtime: st.st_mtime,
                size,
                xattrs,
            },
            fd,
            ino: st.st_ino,
            nlink: st.st_nlink,
            metacopy,
        }))
    }
}

/// A lower entry's tar header (path `path`): the attributes the merged view
/// shows for it. Hard links are the caller's business.
pub(crate) fn lower_entry(stack: &Stack, r: LayerRef, path: Vec<u8>) -> Entry {
    let e = stack.rec(r);
    let m = stack.meta(r);
    let idx = stack.index(r);
    let x = idx.extra(idx.inode_of(r.entry));
    let kind = match e.kind() {
        libc::S_IFDIR => EntryKind::Dir,
        libc::S_IFLNK => EntryKind::Symlink(x.link.to_vec()),
        libc::S_IFCHR => EntryKind::Char {
            major: x.rdev.0,
            minor: x.rdev.1,
        },
        libc::S_IFBLK => EntryKind::Block {
            major: x.rdev.0,
            minor: x.rdev.1,
        },
        libc::S_IFIFO => EntryKind::Fifo,
        _ => EntryKind::File,
    };
    let size = if matches!(kind, EntryKind::File) {
        m.size
    } else {
        0
    };
    let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = x
        .xattrs
        .iter()
        .filter(|(k, _)| !is_private_xattr(k))
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    xattrs.sort();
    Entry {
        path,
        kind,
        mode: e.mode() & 0o7777,
        uid: m.uid,
        gid: m.gid,
        mtime: m.mtime,
        size,
        xattrs,
    }
}

/// Reads a lower file's data from its layer, as a stream.
pub(crate) struct LowerReader<'a> {
    stack: &'a Stack,
    r: LayerRef,
    off: u64,
    label: PathBuf,
}

/// The data of upper object `obj` at `what`: its file, or, for a
/// metadata-only copy, its layer's entry (an error naming the file if
/// `stack` does not have it).
pub(crate) fn upper_data<'a>(
    obj: UpperObject,
    stack: Option<&'a Stack>,
    labels: &[String],
    what: &Path,
) -> Result<Box<dyn io::Read + 'a>> {
    let Some(marker) = &obj.metacopy else {
        return Ok(Box::new(std::fs::File::from(obj.fd)));
    };
    let origin = stack.and_then(|s| crate::overlay::metacopy::find_origin(s, labels, marker));
    match (stack, origin) {
        (Some(s), Some(r)) if s.meta(r).size == obj.entry.size => {
            Ok(Box::new(LowerReader::new(s, r)))
        }
        (Some(_), Some(_)) => Err(Error::io(
            what,
            io::Error::other("a metadata-only copy whose size is not its layer entry's"),
        )),
        _ => Err(Error::io(
            what,
            io::Error::other(crate::overlay::metacopy::missing(marker)),
        )),
    }
}

impl<'a> LowerReader<'a> {
    /// A reader of the data of entry `r`.
    pub fn new(stack: &'a Stack, r: LayerRef) -> LowerReader<'a> {
        let label = stack.layer(r.layer).path.clone();
        LowerReader {
            stack,
            r,
            off: 0,
            label,
        }
    }
}

impl io::Read for LowerReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self
            .stack
            .layer(self.r.layer)
            .read(self.r.entry, self.off, buf)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.label.display())))?;
        self.off += n as u64;
        Ok(n)
    }
}
