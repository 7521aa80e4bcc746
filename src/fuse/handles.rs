//! Open directory handles: each holds the listing snapshot taken at `opendir`.
//!
//! A snapshot gives readdir offsets that stay valid however the listing is read
//! (small buffers, interrupted and resumed, `seekdir` back to a telldir value).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::stack::DirEntry;

/// fh → listing.
#[derive(Debug, Default)]
pub struct DirHandles {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<[DirEntry]>>>,
}

impl DirHandles {
    /// Stores a listing; returns its handle.
    pub fn insert(&self, list: Arc<[DirEntry]>) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.open.lock().insert(fh, list);
        fh
    }
    /// The listing of handle `fh`.
    pub fn get(&self, fh: u64) -> Option<Arc<[DirEntry]>> {
        self.open.lock().get(&fh).cloned()
    }
    /// Forgets handle `fh`.
    pub fn remove(&self, fh: u64) {
        self.open.lock().remove(&fh);
    }
}
