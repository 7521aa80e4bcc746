//! The merged view as one flat tar (`unionfs export`, as `docker export`).
//!
//! What a mount would show, written depth first from the root (not written
//! itself), each directory's entries sorted by name; no whiteouts (they are
//! applied), no opaque markers. Attributes are the merged view's: a lower
//! entry's from its layer's index, an upper object's logical ones (see
//! `changeset.rs` for the override, id mapping and xattr rules, which are the
//! same here). Hard links stay hard links where the view has one inode: the
//! names of a lower link that are all still lower, and the names of an upper
//! link. (A writable mount breaks a lower link when one name is copied up:
//! the export shows what the mount shows.)

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::{join, lower_entry, Links, LowerReader, UpperObject};
use crate::error::{Error, Result};
use crate::idmap::IdMap;
use crate::stack::{LayerRef, Merged, Stack};
use crate::tar::write::{EntryKind, Writer};
use crate::upper::tree::{UEntry, UNodeId, UpperTree};
use crate::upper::Upper;

/// What an export holds.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stats {
    /// Tar entries written.
    pub entries: u64,
    /// Of them from the upper.
    pub from_upper: u64,
    /// Bytes of file data.
    pub file_bytes: u64,
    /// Hard links (names after the first).
    pub hard_links: u64,
}

/// The upper side of an export.
pub struct UpperSide<'a> {
    /// The upper directory.
    pub upper: &'a Upper,
    /// Its namespace.
    pub tree: &'a UpperTree,
    /// Real ids to container ids, for objects without an override.
    pub ids: &'a IdMap,
    /// The layers' labels, as metadata-only copies name them
    /// (`layers::copy_labels`).
    pub labels: &'a [String],
}

/// Writes the merged view of `upper` (if any) over `stack` to `out`.
pub fn write<W: Write>(
    stack: &Stack,
    upper: Option<UpperSide<'_>>,
    out: &mut Writer<W>,
) -> Result<Stats> {
    let mut w = Walker {
        stack,
        upper,
        links: Links::new(),
        stats: Stats::default(),
    };
    let root_fd = match &w.upper {
        Some(u) => Some(
            u.upper
                .root_fd()
                .try_clone_to_owned()
                .map_err(|e| Error::io(u.upper.path(), e))?,
        ),
        None => None,
    };
    let up = root_fd.as_ref().map(|fd| (UNodeId::ROOT, fd.as_fd()));
    w.dir(up, Some(&stack.root()), b"", out)?;
    Ok(w.stats)
}

/// The identity of an inode of the merged view.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Inode {
    Upper(u64),
    Lower(LayerRef),
}

struct Walker<'a> {
    stack: &'a Stack,
    upper: Option<UpperSide<'a>>,
    links: Links<Inode>,
    stats: Stats,
}

/// One name of a merged directory: the upper's object, or the layers'.
enum Source {
    Upper(UEntry),
    Lower(Merged),
}

impl Walker<'_> {
    /// Writes the entries of the merged directory made of the upper directory
    /// `up` (node, fd) and the lower directory `low`.
    fn dir<W: Write>(
        &mut self,
        up: Option<(UNodeId, BorrowedFd<'_>)>,
        low: Option<&Merged>,
        rel: &[u8],
        out: &mut Writer<W>,
    ) -> Result<()> {
        let stack = self.stack;
        let mut names: Vec<(Vec<u8>, Source)> = Vec::new();
        let mut taken = std::collections::HashSet::new();
        if let (Some(u), Some((node, _))) = (&self.upper, up) {
            for (name, e) in u.tree.children(node) {
                taken.insert(name.to_vec());
                if !e.whiteout {
                    names.push((name.to_vec(), Source::Upper(e)));
                }
            }
        }
        if let Some(m) = low {
            for d in stack.read_dir(m) {
                let name = stack.name(d.entry);
                if taken.contains(name) {
                    continue;
                }
                if let Some(mm) = stack.lookup(m, name) {
                    names.push((name.to_vec(), Source::Lower(mm)));
                }
            }
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, src) in names {
            let path = join(rel, &name);
            match src {
                Source::Upper(e) => {
                    let (node, dfd) = up.expect("upper entries come from an upper directory");
                    let _ = node;
                    let below = low.and_then(|m| stack.lookup(m, &name));
                    if let Some(fd) = self.upper_object(dfd, &name, &path, &e, out)? {
                        let merge = if e.opaque {
                            None
                        } else {
                            below.filter(Merged::is_dir)
                        };
                        self.dir(Some((e.node, fd.as_fd())), merge.as_ref(), &path, out)?;
                    }
                }
                Source::Lower(m) => {
                    self.lower_object(&m, path.clone(), out)?;
                    if m.is_dir() {
                        self.dir(None, Some(&m), &path, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn append<W: Write>(
        &mut self,
        out: &mut Writer<W>,
        e: &crate::tar::write::Entry,
        data: &mut dyn io::Read,
        what: impl FnOnce() -> std::path::PathBuf,
    ) -> Result<()> {
        out.append(e, data).map_err(|err| Error::io(what(), err))?;
        self.stats.entries += 1;
        Ok(())
    }

    fn upper_object<W: Write>(
        &mut self,
        dfd: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
        e: &UEntry,
        out: &mut Writer<W>,
    ) -> Result<Option<OwnedFd>> {
        let u = self.upper.as_ref().expect("an upper object needs an upper");
        let upper = u.upper;
        let what = || {
            upper
                .path()
                .join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(path))
        };
        let Some(mut obj) = UpperObject::read(upper, dfd, name, path, e.kind, u.ids)? else {
            return Ok(None);
        };
        self.stats.from_upper += 1;
        if let EntryKind::Dir = obj.entry.kind {
            self.append(out, &obj.entry, &mut io::empty(), what)?;
            return Ok(Some(obj.fd));
        }
        if self
            .links
            .link_or_first(Inode::Upper(obj.ino), obj.nlink, &mut obj.entry)
        {
            self.stats.hard_links += 1;
            self.append(out, &obj.entry, &mut io::empty(), what)?;
        } else if let EntryKind::File = obj.entry.kind {
            self.stats.file_bytes += obj.entry.size;
            let entry = obj.entry.clone();
            let mut f = super::upper_data(obj, Some(self.stack), u.labels, &what())?;
            self.append(out, &entry, &mut f, what)?;
        } else {
            self.append(out, &obj.entry, &mut io::empty(), what)?;
        }
        Ok(None)
    }

    fn lower_object<W: Write>(
        &mut self,
        m: &Merged,
        path: Vec<u8>,
        out: &mut Writer<W>,
    ) -> Result<()> {
        let stack = self.stack;
        let r = m.top;
        let mut entry = lower_entry(stack, r, path);
        let label = stack.layer(r.layer).path.clone();
        let what = || label.clone();
        if m.is_dir() {
            return self.append(out, &entry, &mut io::empty(), what);
        }
        let idx = stack.index(r);
        let inode = LayerRef {
            layer: r.layer,
            entry: idx.inode_of(r.entry),
        };
        let nlink = u64::from(idx.meta(inode.entry).nlink.max(1));
        if self
            .links
            .link_or_first(Inode::Lower(inode), nlink, &mut entry)
        {
            self.stats.hard_links += 1;
            return self.append(out, &entry, &mut io::empty(), what);
        }
        if let EntryKind::File = entry.kind {
            self.stats.file_bytes += entry.size;
            let mut rd = LowerReader::new(stack, r);
            return self.append(out, &entry, &mut rd, what);
        }
        self.append(out, &entry, &mut io::empty(), what)
    }
}
