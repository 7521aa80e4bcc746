//! Open file handles of a writable mount, and the listing entry type.
//!
//! Owns the table from FUSE file handle to what it reads and writes: a lower
//! file (read in place from its tar) or an upper file (an open fd), for a
//! mount made with `-o passthrough` (otherwise files have no handle:
//! `fileio.rs`). Does not own opening (`mod.rs`, `write.rs`).

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::stack::{LayerRef, Merged, Stack};

/// One name of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListEntry {
    /// The name.
    pub name: Vec<u8>,
    /// `st_mode & S_IFMT`.
    pub kind: u32,
    /// Where a listing resumes after this entry (see [`cookie`]).
    pub cookie: u64,
}

/// The `readdir` offset of the entry after `name`: a hash of the name (3 and
/// up; 1 and 2 are `.` and `..`), so that an offset keeps its meaning however
/// the directory changes between two `readdir` calls with no handle to hold
/// a snapshot: a reader resumes after the same name, never skipping or
/// repeating an entry that stayed (ext4's htree listing works alike).
pub fn cookie(name: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same for the life of the mount.
    let mut h = std::hash::DefaultHasher::new();
    name.hash(&mut h);
    3 + (h.finish() >> 2)
}

/// What a handle refers to; each carries the inode number it was opened on.
#[derive(Debug)]
pub enum Handle {
    /// A lower file, read from its layer. It keeps reading the lower data even
    /// if the file is copied up meanwhile (the lower data never changes).
    Lower(u64, LayerRef),
    /// An upper file.
    Upper(u64, File),
}

/// See the module docs.
#[derive(Debug, Default)]
pub(super) struct Handles {
    map: Mutex<HashMap<u64, Arc<Handle>>>,
    next: AtomicU64,
}

impl Handles {
    pub(super) fn insert(&self, h: Handle) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.map.lock().insert(fh, Arc::new(h));
        fh
    }

    pub(super) fn get(&self, fh: u64) -> Option<Arc<Handle>> {
        self.map.lock().get(&fh).cloned()
    }

    pub(super) fn remove(&self, fh: u64) {
        self.map.lock().remove(&fh);
    }

    /// The inodes of the open upper handles.
    pub(super) fn upper_inos(&self) -> Vec<u64> {
        self.map
            .lock()
            .values()
            .filter_map(|h| match h.as_ref() {
                Handle::Upper(i, _) => Some(*i),
                Handle::Lower(..) => None,
            })
            .collect()
    }

    /// `lstat` of inode `ino` through any open handle on it (for an object that
    /// has no name any more but is still open).
    pub(super) fn stat_open(&self, ino: u64, stack: &Stack) -> Option<libc::stat> {
        let h = self
            .map
            .lock()
            .values()
            .find(|h| match h.as_ref() {
                Handle::Lower(i, _) | Handle::Upper(i, _) => *i == ino,
            })
            .cloned()?;
        let mut st = match h.as_ref() {
            Handle::Upper(_, f) => crate::sys::fstat(f.as_fd()).ok()?,
            Handle::Lower(_, r) => super::lower_stat(
                stack,
                &Merged {
                    top: *r,
                    dirs: Vec::new(),
                },
            ),
        };
        st.st_ino = ino;
        Some(st)
    }
}
