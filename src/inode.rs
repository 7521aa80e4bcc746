//! Inode numbers of the merged view, and the cache of merged directories.
//!
//! Inode numbers are *derived by construction*, not allocated: the object a name
//! resolves to is identified by the layer entry that holds its inode (the
//! topmost layer's entry; for a hard link, the entry it links to), and
//!
//! ```text
//! ino = (layer + 1) << 32 | entry        (root: FUSE_ROOT_ID = 1)
//! ```
//!
//! So inode numbers are stable for the life of the mount and across remounts of
//! the same layers, hard links share one, and plain files cost no memory at all
//! however many the kernel has looked up. Directories need their merge stack
//! (which layers' directories are merged) to answer `lookup`/`readdir`; those are
//! kept in a map filled on lookup (one entry per directory of the image at most,
//! never evicted: the image's directory count bounds it).
//!
//! Owns numbering and the directory cache only; merge rules are `stack/`.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::stack::{LayerId, LayerRef, Merged, Stack};
use crate::tar::EntryId;

/// FUSE's root inode number.
pub const ROOT: u64 = 1;

/// A merged directory as the FUSE adapter needs it.
#[derive(Debug)]
pub struct DirNode {
    /// The merge stack.
    pub merged: Merged,
    /// The parent directory's inode number (the root is its own parent).
    pub parent: u64,
    /// `st_nlink`: 1 for a merged directory (as overlayfs reports, so that `find`
    /// does not rely on link counts), else 2 + subdirectories.
    pub nlink: u32,
}

/// Inode numbering plus the directory cache.
#[derive(Debug)]
pub struct Inodes {
    dirs: RwLock<HashMap<u64, Arc<DirNode>>>,
}

/// The inode number of the object `r` names.
pub fn ino_of(stack: &Stack, r: LayerRef) -> u64 {
    let idx = stack.index(r);
    let e = idx.inode_of(r.entry);
    if e == EntryId::ROOT {
        return ROOT;
    }
    ((u64::from(r.layer.0) + 1) << 32) | u64::from(e.0)
}

/// The layer entry behind inode number `ino` (not valid for [`ROOT`]).
pub fn decode(stack: &Stack, ino: u64) -> Option<LayerRef> {
    let layer = (ino >> 32).checked_sub(1)?;
    let layer = u16::try_from(layer).ok()?;
    let entry = u32::try_from(ino & 0xffff_ffff).ok()?;
    let l = stack.layers().get(usize::from(layer))?;
    if entry as usize >= l.index.entries.len() || entry == 0 {
        return None;
    }
    Some(LayerRef {
        layer: LayerId(layer),
        entry: EntryId(entry),
    })
}

/// `st_nlink` of a lower directory: 1 if merged (as overlayfs reports), else 2 + subdirectories.
pub fn nlink_of(stack: &Stack, m: &Merged) -> u32 {
    if m.is_merged_dir() {
        return 1;
    }
    let idx = stack.index(m.top);
    let subdirs = idx
        .children(m.top.entry)
        .filter(|&c| idx.entry(EntryId(c)).is_dir())
        .count();
    2u32.saturating_add(subdirs as u32)
}

impl Inodes {
    /// A cache holding the root.
    pub fn new(stack: &Stack) -> Inodes {
        let root = stack.root();
        let nlink = nlink_of(stack, &root);
        let mut dirs = HashMap::new();
        dirs.insert(
            ROOT,
            Arc::new(DirNode {
                merged: root,
                parent: ROOT,
                nlink,
            }),
        );
        Inodes {
            dirs: RwLock::new(dirs),
        }
    }

    /// The directory with inode number `ino`, if the kernel has looked it up.
    pub fn dir(&self, ino: u64) -> Option<Arc<DirNode>> {
        self.dirs.read().get(&ino).cloned()
    }

    /// Records a directory found by lookup under `parent`; returns its node.
    pub fn remember_dir(&self, stack: &Stack, ino: u64, parent: u64, m: Merged) -> Arc<DirNode> {
        if let Some(d) = self.dir(ino) {
            return d;
        }
        let nlink = nlink_of(stack, &m);
        let node = Arc::new(DirNode {
            merged: m,
            parent,
            nlink,
        });
        self.dirs.write().entry(ino).or_insert(node).clone()
    }

    /// Number of directories cached.
    pub fn cached_dirs(&self) -> usize {
        self.dirs.read().len()
    }
}
