//! Merged directory listings (cf. the kernel's `ovl_dir_read_merged`).
//!
//! Every layer's directory keeps its children sorted by name, so the merged
//! listing is a k-way merge: for each name the topmost layer's entry decides —
//! a whiteout hides it, anything else is shown. The result is sorted by name
//! bytes, which makes it deterministic and gives readdir offsets that mean the
//! same thing for as long as the directory does not change.

use super::{LayerRef, Merged, Stack};
use crate::tar::EntryId;

/// One name in a merged listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry shown under this name (its topmost layer's).
    pub entry: LayerRef,
}

/// See [`Stack::read_dir`].
pub(super) fn read_dir(stack: &Stack, dir: &Merged) -> Vec<DirEntry> {
    match dir.dirs.as_slice() {
        [] => Vec::new(),
        [only] => {
            let idx = stack.index(*only);
            idx.children(only.entry)
                .map(EntryId)
                .filter(|&c| !idx.entry(c).is_whiteout())
                .map(|c| DirEntry {
                    entry: LayerRef {
                        layer: only.layer,
                        entry: c,
                    },
                })
                .collect()
        }
        dirs => merge(stack, dirs),
    }
}

/// k-way merge of sorted child lists, top layer first; first occurrence of a name wins.
fn merge(stack: &Stack, dirs: &[LayerRef]) -> Vec<DirEntry> {
    let mut cursors: Vec<(LayerRef, std::ops::Range<u32>)> = dirs
        .iter()
        .map(|d| (*d, stack.index(*d).children(d.entry)))
        .collect();
    let total: usize = cursors.iter().map(|(_, r)| r.len()).sum();
    let mut out = Vec::with_capacity(total);
    loop {
        // The smallest current name; ties go to the topmost layer (lowest position).
        let mut best: Option<(usize, &[u8])> = None;
        for (i, (d, r)) in cursors.iter().enumerate() {
            if r.start >= r.end {
                continue;
            }
            let name = stack.index(*d).name(EntryId(r.start));
            if best.is_none_or(|(_, b)| name < b) {
                best = Some((i, name));
            }
        }
        let Some((win, name)) = best else { break };
        let (d, r) = &cursors[win];
        let c = LayerRef {
            layer: d.layer,
            entry: EntryId(r.start),
        };
        if !stack.index(c).entry(c.entry).is_whiteout() {
            out.push(DirEntry { entry: c });
        }
        for (d, r) in cursors.iter_mut() {
            if r.start < r.end && stack.index(*d).name(EntryId(r.start)) == name {
                r.start += 1;
            }
        }
    }
    out
}
