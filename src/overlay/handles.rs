//! Open file and directory handles of a writable mount.
//!
//! Owns the table from FUSE file handle to what it reads and writes: a lower
//! file (read in place from its tar), an upper file (an open fd), or a
//! directory listing snapshot. Does not own opening (`mod.rs`, `write.rs`).

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
}

/// What a handle refers to; each carries the inode number it was opened on.
#[derive(Debug)]
pub enum Handle {
    /// A lower file, read from its layer. It keeps reading the lower data even
    /// if the file is copied up meanwhile (the lower data never changes).
    Lower(u64, LayerRef),
    /// An upper file.
    Upper(u64, File),
    /// A directory: its listing as of the last `readdir` from offset 0 (not
    /// taken at `opendir`: the kernel serves most listings from its own
    /// cache and never asks; taken again at a rewind, so that `rewinddir`
    /// shows the directory as it is, and the kernel never caches an old
    /// snapshot under a new mtime).
    Dir(u64, parking_lot::Mutex<Option<Arc<[ListEntry]>>>),
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

    /// `lstat` of inode `ino` through any open handle on it (for an object that
    /// has no name any more but is still open).
    pub(super) fn stat_open(&self, ino: u64, stack: &Stack) -> Option<libc::stat> {
        let h = self
            .map
            .lock()
            .values()
            .find(|h| match h.as_ref() {
                Handle::Lower(i, _) | Handle::Upper(i, _) | Handle::Dir(i, _) => *i == ino,
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
            Handle::Dir(..) => return None,
        };
        st.st_ino = ino;
        Some(st)
    }
}
