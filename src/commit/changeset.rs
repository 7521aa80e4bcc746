//! An upper directory as an OCI changeset layer.
//!
//! OCI image spec, "Representing Changes": a layer holds the added and
//! modified entries, and a deletion as `.wh.NAME`; `.wh..wh..opq` in a
//! directory hides every lower sibling. The upper already is that changeset,
//! in one of two on-disk formats and with unionfs's own bookkeeping; this
//! writes it in the one form every reader accepts:
//! - Order: depth first from the root (the root itself is not written), a
//!   directory's header, then its opaque marker, then its children sorted by
//!   the name written (`.wh.NAME` sorts as that). Parents come before
//!   children, and the same upper always gives the same bytes.
//! - Deletions in either upper format (`.wh.NAME` files, 0/0 character
//!   devices; `.wh..wh..opq`, `trusted.overlay.opaque=y`, `user.overlay.opaque=y`)
//!   become `.wh.NAME` and `.wh..wh..opq`: empty regular files, mode 0600,
//!   owner 0:0, mtime 0 (the upper's own markers' attributes mean nothing).
//!   With the layers below given, a whiteout or an opaque marker that hides
//!   nothing is left out.
//! - Attributes are the logical ones a mount shows: a rootless upper's
//!   `user.unionfs.override_stat` is applied (owner, mode, device type and
//!   number) and never written; real ids of objects without one are mapped
//!   with `--uidmap`/`--gidmap` as the mount did. Times: mtime in whole
//!   seconds, no atime or ctime. Owners are numeric.
//! - xattrs: every one but unionfs's and overlayfs's private ones and
//!   `security.selinux` (a label of this host, not of the image).
//! - Hard links within the upper are tar hard links to the first name written.
//! - A socket cannot be in a tar: it is left out with a warning (as GNU tar does).
//! - A kernel overlayfs upper made with `metacopy=on` or `redirect_dir=on`
//!   holds files whose data, or directories whose content, live in the lower
//!   layers: refused, naming the file, rather than written incomplete.

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::{join, Links, UpperObject};
use crate::error::{Error, Result};
use crate::idmap::IdMap;
use crate::stack::{Merged, Stack};
use crate::tar::write::{Entry, EntryKind, Writer};
use crate::upper::tree::{UEntry, UNodeId, UpperTree};
use crate::upper::Upper;
use crate::whiteout::{OPAQUE, PREFIX as WHITEOUT_PREFIX};

/// What a changeset holds.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stats {
    /// Tar entries written (markers included).
    pub entries: u64,
    /// Regular files written with their data.
    pub files: u64,
    /// Bytes of file data.
    pub file_bytes: u64,
    /// Directories.
    pub dirs: u64,
    /// Hard links (names after the first).
    pub hard_links: u64,
    /// `.wh.NAME` entries.
    pub whiteouts: u64,
    /// `.wh..wh..opq` entries.
    pub opaque: u64,
    /// Whiteouts and opaque markers left out: they hide nothing below.
    pub redundant_markers: u64,
    /// Sockets left out.
    pub sockets: u64,
}

/// Writes the changeset of `upper` (its namespace in `tree`) to `out`.
/// `stack`, when given, is what the upper sits on: markers that hide nothing
/// in it are left out. `ids` maps real ids of objects without an override
/// (a rootless upper's symlinks, fifos) to container ids.
pub fn write<W: Write>(
    upper: &Upper,
    tree: &UpperTree,
    stack: Option<&Stack>,
    ids: &IdMap,
    labels: &[String],
    out: &mut Writer<W>,
) -> Result<Stats> {
    let mut w = Walker {
        upper,
        tree,
        stack,
        ids,
        labels,
        links: Links::new(),
        stats: Stats::default(),
    };
    let root = upper
        .root_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::io(upper.path(), e))?;
    let lower = stack.map(Stack::root);
    w.dir(UNodeId::ROOT, root.as_fd(), &[], lower.as_ref(), out)?;
    Ok(w.stats)
}

struct Walker<'a> {
    upper: &'a Upper,
    tree: &'a UpperTree,
    stack: Option<&'a Stack>,
    ids: &'a IdMap,
    /// The layers' labels, as metadata-only copies name them.
    labels: &'a [String],
    /// Upper inode → the path written for its first name.
    links: Links<u64>,
    stats: Stats,
}

/// One child of a directory, in the order written.
struct Child<'t> {
    /// The name as written (`.wh.NAME` for a whiteout).
    written: Vec<u8>,
    name: &'t [u8],
    e: UEntry,
}

/// The header of an OCI marker file (`.wh.NAME`, `.wh..wh..opq`).
fn marker(path: Vec<u8>) -> Entry {
    Entry {
        path,
        kind: EntryKind::File,
        mode: 0o600,
        uid: 0,
        gid: 0,
        mtime: 0,
        size: 0,
        xattrs: Vec::new(),
    }
}

impl Walker<'_> {
    fn on_disk(&self, rel: &[u8]) -> PathBuf {
        self.upper.path().join(std::ffi::OsStr::from_bytes(rel))
    }

    fn err(&self, rel: &[u8], e: io::Error) -> Error {
        Error::io(self.on_disk(rel), e)
    }

    fn append<W: Write>(
        &mut self,
        out: &mut Writer<W>,
        e: &Entry,
        data: &mut dyn io::Read,
    ) -> Result<()> {
        out.append(e, data).map_err(|err| self.err(&e.path, err))?;
        self.stats.entries += 1;
        Ok(())
    }

    /// Writes the children of directory `node` (open as `fd`, at `rel`);
    /// `lower` is the merged lower directory it sits on, if any.
    fn dir<W: Write>(
        &mut self,
        node: UNodeId,
        fd: BorrowedFd<'_>,
        rel: &[u8],
        lower: Option<&Merged>,
        out: &mut Writer<W>,
    ) -> Result<()> {
        let tree = self.tree;
        let mut kids: Vec<Child<'_>> = tree
            .children(node)
            .map(|(name, e)| Child {
                written: if e.whiteout {
                    [WHITEOUT_PREFIX, name].concat()
                } else {
                    name.to_vec()
                },
                name,
                e,
            })
            .collect();
        kids.sort_by(|a, b| a.written.cmp(&b.written));
        for k in kids {
            let below = match (self.stack, lower) {
                (Some(s), Some(m)) => s.lookup(m, k.name),
                _ => None,
            };
            // Without the layers, every marker is kept: it may hide something.
            let hides = self.stack.is_none() || below.is_some();
            let path = join(rel, &k.written);
            if k.e.whiteout {
                if hides {
                    self.append(out, &marker(path), &mut io::empty())?;
                    self.stats.whiteouts += 1;
                } else {
                    self.stats.redundant_markers += 1;
                }
                continue;
            }
            let child_fd = self.object(fd, k.name, &path, &k.e, out)?;
            if let Some(cfd) = child_fd {
                // A lower directory it merges with (overlayfs ignores what
                // is below an opaque one, and a non-directory below is
                // simply replaced).
                let lower_dir = below.filter(Merged::is_dir);
                if k.e.opaque {
                    if self.stack.is_none() || lower_dir.is_some() {
                        let m = join(&path, OPAQUE);
                        self.append(out, &marker(m), &mut io::empty())?;
                        self.stats.opaque += 1;
                    } else {
                        self.stats.redundant_markers += 1;
                    }
                }
                let next = if k.e.opaque { None } else { lower_dir };
                self.dir(k.e.node, cfd.as_fd(), &path, next.as_ref(), out)?;
            }
        }
        Ok(())
    }

    /// Writes the object `name` of directory `dfd` (`path` in the layer);
    /// returns its fd if it is a directory, to descend into.
    fn object<W: Write>(
        &mut self,
        dfd: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
        e: &UEntry,
        out: &mut Writer<W>,
    ) -> Result<Option<OwnedFd>> {
        let Some(mut obj) = UpperObject::read(self.upper, dfd, name, path, e.kind, self.ids)?
        else {
            self.stats.sockets += 1;
            return Ok(None);
        };
        if let EntryKind::Dir = obj.entry.kind {
            self.append(out, &obj.entry, &mut io::empty())?;
            self.stats.dirs += 1;
            return Ok(Some(obj.fd));
        }
        if self.links.link_or_first(obj.ino, obj.nlink, &mut obj.entry) {
            self.append(out, &obj.entry, &mut io::empty())?;
            self.stats.hard_links += 1;
            return Ok(None);
        }
        if let EntryKind::File = obj.entry.kind {
            let entry = obj.entry.clone();
            let mut f = super::upper_data(obj, self.stack, self.labels, &self.on_disk(path))?;
            self.append(out, &entry, &mut f)?;
            self.stats.files += 1;
            self.stats.file_bytes += entry.size;
        } else {
            self.append(out, &obj.entry, &mut io::empty())?;
        }
        Ok(None)
    }
}
