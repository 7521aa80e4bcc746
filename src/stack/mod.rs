//! The stack: merging read-only layers with overlayfs semantics.
//!
//! Pure logic over [`LayerIndex`]es: no I/O, no FUSE. The same code answers
//! `unionfs ls` and the mount's `lookup`/`readdir`.
//!
//! Layer numbering: a [`LayerId`] is the layer's position in the `--layers` list,
//! **bottom first** (docker `manifest.json` order), so `LayerId(0)` is the base
//! image and the highest id is the top. Merging walks from the top down. (The
//! kernel numbers the other way, upper = 0; we keep one numbering, the one users
//! see in `ls` output and `--json`'s `layer` field.)
//!
//! Rules (kernel `Documentation/filesystems/overlayfs.rst`, OCI image spec
//! "Whiteouts"), applied per name from the top layer down:
//! - the first layer that has the name wins;
//! - a whiteout `.wh.NAME` hides NAME in every layer below its own (a same-named
//!   entry in the whiteout's own layer stays visible: "whiteout files MUST only
//!   apply to resources in lower/parent layers");
//! - a directory merges with same-named directories below it, until a layer whose
//!   directory is opaque (`.wh..wh..opq`) or whited-out below, or a layer where the
//!   name is not a directory ("a non-directory stops the merge");
//! - whiteout and opaque markers are never listed;
//! - the root always merges every layer (overlayfs ignores opacity on a layer root);
//! - a merged directory shows the metadata (mode, owner, times, xattrs: the whole
//!   record) of the highest of its layer directories that its tar lists: one a
//!   tar does not list, made for a missing parent ([`F_IMPLICIT`]: 0755, root,
//!   mtime 0), says nothing about it. Only if every merged layer's directory is
//!   implicit does the topmost one show.
//!
//! The last rule is containerd's (Docker ≥ 29, Kubernetes) and umoci's. A layer
//! tar that lists `usr/lib/x` but not `usr/lib` says nothing about `usr/lib`;
//! containerd's `mkparent` (`pkg/archive/tar.go`) then creates it from the
//! same directory of the nearest parent snapshot, top first:
//!
//! ```text
//! dir, err := os.Lstat(ppath)
//! if err == nil {
//!     if !dir.IsDir() {
//!         // Replaced, do not copy attributes
//!         break
//!     }
//!     if err := copyDirInfo(dir, path); err != nil { ... }
//!     return copyUpXAttrs(path, ppath)
//! }
//! ...
//! log.G(ctx).Debugf("parent directory %q not found: default permissions(0755) used", path)
//! ```
//!
//! docker's old overlay2 driver kept the 0755 default instead, hiding the lower
//! directory's mode. An implicit directory that does not merge — opaque, or
//! whited out in its own layer (`.wh.d` then `d/x`) — has nothing below to take
//! from and keeps the defaults. We look below in the merged view, as the rest
//! of the stack does; containerd looks up the same path in each parent layer's
//! directory on its own, so it can copy from a directory that an opaque
//! ancestor in a layer in between hides. The entry shown is [`Merged::top`], so
//! inode numbers, `ls`'s layer column and copy-up all follow the shown metadata.

mod readdir;

pub use readdir::DirEntry;

use crate::tar::index::{EntryRec, LayerIndex, Meta, F_HIDES_LOWER, F_IMPLICIT, F_OPAQUE};
use crate::tar::{EntryId, TarLayer};

/// A layer's position in the `--layers` list (bottom first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LayerId(pub u16);

/// An entry of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LayerRef {
    /// Which layer.
    pub layer: LayerId,
    /// Which entry in it.
    pub entry: EntryId,
}

/// A name resolved in the merged view (cf. the kernel's `struct ovl_entry`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merged {
    /// The entry that is shown (its metadata, and the inode number derived
    /// from it): the topmost layer's, except for a directory whose topmost
    /// entries are implicit — then the highest of `dirs` that is not (see the
    /// module docs), or `dirs[0]` if all are.
    pub top: LayerRef,
    /// For a directory: every layer directory merged into it, top first, `top`
    /// included (not necessarily first). Empty for non-directories.
    pub dirs: Vec<LayerRef>,
}

impl Merged {
    /// Returns true if and only if this is a directory.
    pub fn is_dir(&self) -> bool {
        !self.dirs.is_empty()
    }
    /// The layers whose entries the view shows here: every layer of `dirs`
    /// for a directory, else `top`'s alone.
    pub fn shown_layers(&self) -> Vec<LayerId> {
        if self.is_dir() {
            self.dirs.iter().map(|d| d.layer).collect()
        } else {
            vec![self.top.layer]
        }
    }
    /// Returns true if and only if more than one layer contributes to this directory.
    pub fn is_merged_dir(&self) -> bool {
        self.dirs.len() > 1
    }
}

/// Where an object of the view comes from: what the `user.unionfs.layer` and
/// `user.unionfs.shadows` xattrs say (the FUSE adapters put it in words).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provenance {
    /// The layer whose entry is shown (a merged directory's [`Merged::top`]);
    /// `None` for an object of a writable mount's upper.
    pub layer: Option<LayerId>,
    /// The layers, top first, with a real entry (not a whiteout) at the
    /// object's path that the view does not show: see [`Stack::shadows`].
    pub shadows: Vec<LayerId>,
}

/// Read-only layers, stacked.
#[derive(Debug)]
pub struct Stack {
    layers: Vec<TarLayer>,
}

/// Returns true if and only if `e` stops the merge of same-named directories below.
fn stops_below(e: &EntryRec) -> bool {
    !e.is_dir() || e.has(F_OPAQUE) || e.has(F_HIDES_LOWER)
}

/// Returns true if and only if the directory `e` may take its metadata from a
/// same-named directory below: the tar does not list it, and it merges.
fn borrows_below(e: &EntryRec) -> bool {
    e.is_dir() && e.has(F_IMPLICIT) && !stops_below(e)
}

impl Stack {
    /// Stacks `layers`, given bottom first.
    pub fn new(layers: Vec<TarLayer>) -> Stack {
        assert!(layers.len() <= usize::from(u16::MAX), "too many layers");
        Stack { layers }
    }

    /// The layers, bottom first.
    pub fn layers(&self) -> &[TarLayer] {
        &self.layers
    }

    /// The layer `id`.
    pub fn layer(&self, id: LayerId) -> &TarLayer {
        &self.layers[usize::from(id.0)]
    }

    /// The index holding `r`.
    #[allow(clippy::should_implement_trait)] // not `ops::Index`: it returns a whole layer's index
    pub fn index(&self, r: LayerRef) -> &LayerIndex {
        &self.layer(r.layer).index
    }

    /// The record describing `r`'s inode (a hard link's target for hard links).
    pub fn rec(&self, r: LayerRef) -> &EntryRec {
        let idx = self.index(r);
        idx.entry(idx.inode_of(r.entry))
    }

    /// The metadata of `r` (of its inode: a hard link's target).
    pub fn meta(&self, r: LayerRef) -> Meta {
        let idx = self.index(r);
        idx.meta(idx.inode_of(r.entry))
    }

    /// `st_blocks` (512-byte units) of the regular file `r`: its data, without
    /// the holes of a sparse file.
    pub fn stored_blocks(&self, r: LayerRef) -> u64 {
        let e = self.rec(r);
        let idx = self.index(r);
        let stored: u64 = if e.has(crate::tar::index::F_SPARSE) {
            idx.extra(idx.inode_of(r.entry))
                .sparse
                .iter()
                .map(|&(_, l)| l)
                .sum()
        } else {
            self.meta(r).size
        };
        stored.div_ceil(512)
    }

    /// The name of `r` in its directory.
    pub fn name(&self, r: LayerRef) -> &[u8] {
        self.index(r).name(r.entry)
    }

    /// The merged root directory.
    ///
    /// Every layer's root takes part: an opaque marker at the top of a layer tar
    /// (`.wh..wh..opq` in the root) is ignored, as overlayfs ignores
    /// `trusted.overlay.opaque` on a layer's root directory (docker's overlay2 and
    /// containerd turn the marker into exactly that xattr).
    pub fn root(&self) -> Merged {
        let dirs: Vec<LayerRef> = (0..self.layers.len())
            .rev()
            .map(|l| LayerRef {
                layer: LayerId(l as u16),
                entry: EntryId::ROOT,
            })
            .collect();
        if dirs.is_empty() {
            // No layers at all: an empty root. Callers always pass at least one.
            return Merged {
                top: LayerRef {
                    layer: LayerId(0),
                    entry: EntryId::ROOT,
                },
                dirs,
            };
        }
        Merged {
            top: self.shown(&dirs),
            dirs,
        }
    }

    /// The directory of `dirs` (merged, top first; not empty) whose metadata
    /// the merged directory shows: the highest one its tar lists, else the
    /// topmost (containerd's `mkparent`, see the module docs).
    fn shown(&self, dirs: &[LayerRef]) -> LayerRef {
        dirs.iter()
            .copied()
            .find(|&d| !self.index(d).entry(d.entry).has(F_IMPLICIT))
            .unwrap_or(dirs[0])
    }

    /// Looks `name` up in the merged directory `dir` (cf. `ovl_lookup_single`).
    /// `None`: no such name (absent everywhere, or whited out).
    pub fn lookup(&self, dir: &Merged, name: &[u8]) -> Option<Merged> {
        let mut out: Option<Merged> = None;
        for &d in &dir.dirs {
            let idx = self.index(d);
            let Some(c) = idx.child(d.entry, name) else {
                continue;
            };
            let r = LayerRef {
                layer: d.layer,
                entry: c,
            };
            let e = idx.entry(c);
            if e.is_whiteout() {
                break; // hides the name here and in every layer below
            }
            match &mut out {
                None => {
                    let dirs = if e.is_dir() { vec![r] } else { Vec::new() };
                    out = Some(Merged { top: r, dirs });
                }
                Some(m) => {
                    if !e.is_dir() {
                        break;
                    }
                    m.dirs.push(r);
                }
            }
            if stops_below(e) {
                break;
            }
        }
        if let Some(m) = &mut out {
            if m.is_merged_dir() {
                m.top = self.shown(&m.dirs);
            }
        }
        out
    }

    /// Resolves a slash-separated path from the merged root; symlinks are not followed.
    pub fn resolve(&self, path: &[u8]) -> Option<Merged> {
        let mut cur = self.root();
        for c in path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
        {
            if !cur.is_dir() {
                return None;
            }
            cur = self.lookup(&cur, c)?;
        }
        Some(cur)
    }

    /// The layers, top first, that have a real entry (not a whiteout) at
    /// `path` in their own index and are not in `shown`: what the view hides
    /// at `path`. Each layer is asked on its own ([`LayerIndex::lookup_path`]),
    /// whatever the layers above it hide: an entry below an opaque directory,
    /// below a whiteout, or under a file that a higher layer replaced by a
    /// directory counts; a layer whose path is only a whiteout does not.
    pub fn shadows(&self, path: &[u8], shown: &[LayerId]) -> Vec<LayerId> {
        (0..self.layers.len())
            .rev()
            .map(|l| LayerId(l as u16))
            .filter(|l| !shown.contains(l))
            .filter(|&l| self.layer(l).index.lookup_path(path).is_some())
            .collect()
    }

    /// The provenance of the object `m` that the view shows at `path`: `top`'s
    /// layer, and for shadows every other layer with an entry there (for a
    /// directory, every layer with an entry there that is not merged into it).
    pub fn provenance(&self, m: &Merged, path: &[u8]) -> Provenance {
        Provenance {
            layer: Some(m.top.layer),
            shadows: self.shadows(path, &m.shown_layers()),
        }
    }

    /// The merged listing of directory `dir`, sorted by name, markers excluded.
    /// Each entry is what [`Stack::lookup`] of its name shows (`Merged::top`),
    /// so a listing's inode numbers are the ones `lookup` gives.
    pub fn read_dir(&self, dir: &Merged) -> Vec<DirEntry> {
        let mut list = readdir::read_dir(self, dir);
        if dir.is_merged_dir() {
            // The k-way merge yields each name's topmost entry; a subdirectory
            // the tar does not list shows a lower layer's (rare: look it up).
            for d in &mut list {
                if borrows_below(self.index(d.entry).entry(d.entry.entry)) {
                    if let Some(m) = self.lookup(dir, self.name(d.entry)) {
                        d.entry = m.top;
                    }
                }
            }
        }
        list
    }
}
