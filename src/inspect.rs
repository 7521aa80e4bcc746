//! What each layer adds, changes, deletes and wastes, from the indexes alone
//! (`unionfs inspect`): no file data is read, no daemon is needed.
//!
//! Definitions (the README's *Inspect* section repeats them):
//! - A layer's entry is **added** if the layers below it do not show its
//!   path, **modified** if they do (a file replaced, a directory listed
//!   again). A **deletion** is a whiteout of a path the layers below show, or
//!   a path below an opaque directory of this layer that this layer does not
//!   list again; it **hides** that path and everything under it. Directories
//!   the tar does not list (implicit parents) are not counted.
//! - **Bytes** are regular files' data: a hard link's data is counted once,
//!   with the name that holds it.
//! - A layer's **shadowed** bytes are the data it stores that the merged view
//!   of the whole image does not show: a later layer replaced or deleted
//!   every name of it. **Wasted** bytes are the sum over the layers: the
//!   image's stored file data minus its **visible** data (what the merged
//!   view shows, each file once). **Efficiency** is visible ÷ stored (1 for
//!   an image without file data).
//! - dive's figures differ: dive adds up, for every path found in two or more
//!   layers, the size of *every* version (the visible one too: dive#684), and
//!   its efficiency is Σ smallest version ÷ Σ all versions over all paths.
//!   [`Report::dive`] computes them as dive does, for comparison.

use std::collections::BinaryHeap;

use crate::commit::diff::{Change, Kind};
use crate::stack::{LayerId, LayerRef, Merged, Stack};
use crate::tar::index::{F_HARDLINK, F_HIDES_LOWER, F_IMPLICIT, F_OPAQUE};
use crate::tar::{EntryId, LayerIndex};

/// Entries and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Count {
    /// Entries.
    pub entries: u64,
    /// Bytes of regular file data.
    pub bytes: u64,
}

impl Count {
    fn add(&mut self, entries: u64, bytes: u64) {
        self.entries += entries;
        self.bytes += bytes;
    }
}

/// One layer's figures.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LayerReport {
    /// Position, 0 = bottom.
    pub position: usize,
    /// Entries the tar lists (whiteouts included, implicit parents not).
    pub entries: u64,
    /// File data stored.
    pub stored: Count,
    /// Entries whose path the layers below do not show.
    pub added: Count,
    /// Entries whose path the layers below show.
    pub modified: Count,
    /// Paths deleted (whiteouts, and names an opaque directory drops)…
    pub deleted: u64,
    /// …and what they hide below: every entry under them, and its data.
    pub hidden: Count,
    /// Directories this layer makes opaque.
    pub opaque_dirs: u64,
    /// File data of this layer the merged view does not show.
    pub shadowed: Count,
}

/// A file whose data no view shows.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Waste {
    /// Its path (absolute).
    pub path: String,
    /// Its size.
    pub bytes: u64,
    /// The layer that stores it.
    pub layer: usize,
    /// The layer that replaces or deletes it.
    pub by: Option<usize>,
    /// `replaced` or `deleted`.
    pub how: &'static str,
}

/// dive's figures, computed with dive's formulas (see the module docs).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Dive {
    /// Σ smallest version ÷ Σ all versions, over every path.
    pub efficiency: f64,
    /// Σ all versions of the paths found in two layers or more.
    pub wasted_bytes: u64,
    /// `wasted_bytes` ÷ the file data of every layer but the first.
    pub user_wasted_share: f64,
}

/// The whole image's figures.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    /// Per layer, bottom first.
    pub layers: Vec<LayerReport>,
    /// File data stored in all layers.
    pub stored_bytes: u64,
    /// File data the merged view shows.
    pub visible_bytes: u64,
    /// `stored_bytes - visible_bytes`.
    pub wasted_bytes: u64,
    /// `visible_bytes / stored_bytes` (1 if nothing is stored).
    pub efficiency: f64,
    /// File data stored in every layer but the first (dive's "user" bytes).
    pub user_bytes: u64,
    /// `wasted_bytes / user_bytes` (0 if there are none).
    pub wasted_user_share: f64,
    /// The largest wasted files, largest first.
    pub largest_wasted: Vec<Waste>,
    /// The same image measured as dive measures it.
    pub dive: Dive,
}

/// Analyses `stack`, listing at most `top` wasted files.
pub fn analyze(stack: &Stack, top: usize) -> Report {
    let visible = visible_inodes(stack);
    let mut rep = Report::default();
    let mut heap: BinaryHeap<std::cmp::Reverse<(u64, u16, u32)>> = BinaryHeap::new();
    for (i, seen) in visible.iter().enumerate() {
        let mut lr = LayerReport {
            position: i,
            ..Default::default()
        };
        let below = below_root(stack, i);
        let idx = stack.index(LayerRef {
            layer: LayerId(i as u16),
            entry: EntryId::ROOT,
        });
        walk(
            stack,
            idx,
            EntryId::ROOT,
            b"",
            below.as_ref(),
            false,
            &mut lr,
            &mut None,
        );
        for (id, e) in idx.entries.iter().enumerate() {
            if e.kind() != libc::S_IFREG || e.has(F_HARDLINK) || e.is_whiteout() {
                continue;
            }
            let size = idx.size(EntryId(id as u32));
            lr.stored.add(1, size);
            if !seen[id] {
                lr.shadowed.add(1, size);
                if top > 0 {
                    heap.push(std::cmp::Reverse((size, i as u16, id as u32)));
                    if heap.len() > top {
                        heap.pop();
                    }
                }
            }
        }
        rep.stored_bytes += lr.stored.bytes;
        rep.wasted_bytes += lr.shadowed.bytes;
        if i > 0 {
            rep.user_bytes += lr.stored.bytes;
        }
        rep.layers.push(lr);
    }
    rep.visible_bytes = rep.stored_bytes - rep.wasted_bytes;
    rep.efficiency = if rep.stored_bytes == 0 {
        1.0
    } else {
        rep.visible_bytes as f64 / rep.stored_bytes as f64
    };
    rep.wasted_user_share = if rep.user_bytes == 0 {
        0.0
    } else {
        rep.wasted_bytes as f64 / rep.user_bytes as f64
    };
    let mut big: Vec<(u64, u16, u32)> = heap.into_iter().map(|r| r.0).collect();
    big.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    for (bytes, layer, id) in big {
        let idx = stack.index(LayerRef {
            layer: LayerId(layer),
            entry: EntryId::ROOT,
        });
        let path = idx.path_of(EntryId(id));
        let (by, how) = shadowed_by(stack, layer as usize, &path);
        rep.largest_wasted.push(Waste {
            path: format!("/{}", String::from_utf8_lossy(&path)),
            bytes,
            layer: layer as usize,
            by,
            how,
        });
    }
    rep.dive = dive(stack);
    rep
}

/// Layer `n`'s changes against the layers below it (`A`, `C`, `D`), as
/// `unionfs diff` lists an upper's.
pub fn layer_changes(stack: &Stack, n: usize) -> Vec<Change> {
    let mut lr = LayerReport::default();
    let mut out = Some(Vec::new());
    let idx = stack.index(LayerRef {
        layer: LayerId(n as u16),
        entry: EntryId::ROOT,
    });
    let below = below_root(stack, n);
    walk(
        stack,
        idx,
        EntryId::ROOT,
        b"",
        below.as_ref(),
        false,
        &mut lr,
        &mut out,
    );
    let mut out = out.unwrap_or_default();
    // Depth first, by name in each directory.
    out.sort_by(|a, b| {
        a.path
            .split(|&c| c == b'/')
            .cmp(b.path.split(|&c| c == b'/'))
    });
    out
}

/// The merged root of layers `0..n` (`None` for the bottom layer).
fn below_root(stack: &Stack, n: usize) -> Option<Merged> {
    let root = stack.root();
    let dirs: Vec<LayerRef> = root
        .dirs
        .iter()
        .copied()
        .filter(|d| (d.layer.0 as usize) < n)
        .collect();
    let top = *dirs.first()?;
    Some(Merged { top, dirs })
}

/// Marks, per layer and entry, the file data the merged view shows.
fn visible_inodes(stack: &Stack) -> Vec<Vec<bool>> {
    let mut v: Vec<Vec<bool>> = stack
        .layers()
        .iter()
        .map(|l| vec![false; l.index.entries.len()])
        .collect();
    let mut pending = vec![stack.root()];
    while let Some(dir) = pending.pop() {
        for d in stack.read_dir(&dir) {
            let e = stack.rec(d.entry);
            if e.is_dir() {
                if let Some(m) = stack.lookup(&dir, stack.name(d.entry)) {
                    pending.push(m);
                }
            } else if e.kind() == libc::S_IFREG {
                let idx = stack.index(d.entry);
                let ino = idx.inode_of(d.entry.entry);
                v[d.entry.layer.0 as usize][ino.0 as usize] = true;
            }
        }
    }
    v
}

/// Entries and file bytes of the merged subtree `m` (itself included).
fn subtree(stack: &Stack, m: &Merged) -> (u64, u64) {
    let e = stack.rec(m.top);
    if !m.is_dir() {
        let bytes = if e.kind() == libc::S_IFREG && !e.has(F_HARDLINK) {
            stack.meta(m.top).size
        } else {
            0
        };
        return (1, bytes);
    }
    let (mut n, mut b) = (1, 0);
    let mut pending = vec![m.clone()];
    while let Some(dir) = pending.pop() {
        for d in stack.read_dir(&dir) {
            n += 1;
            let e = stack.rec(d.entry);
            if e.is_dir() {
                if let Some(c) = stack.lookup(&dir, stack.name(d.entry)) {
                    pending.push(c);
                }
            } else if e.kind() == libc::S_IFREG && !e.has(F_HARDLINK) {
                b += stack.meta(d.entry).size;
            }
        }
    }
    (n, b)
}

/// Walks directory `dir` of layer `i` over `old` (what the layers below show
/// at its path). `replaced`: it does not merge with `old` (it or a parent is
/// opaque), so names of `old` it lacks are deleted.
#[allow(clippy::too_many_arguments)]
fn walk(
    stack: &Stack,
    idx: &LayerIndex,
    dir: EntryId,
    rel: &[u8],
    old: Option<&Merged>,
    replaced: bool,
    lr: &mut LayerReport,
    out: &mut Option<Vec<Change>>,
) {
    let mut note = |path: &dyn Fn() -> Vec<u8>, kind: Kind| {
        if let Some(o) = out.as_mut() {
            o.push(Change { kind, path: path() });
        }
    };
    let mut subdirs: Vec<(EntryId, Vec<u8>, Option<Merged>, bool)> = Vec::new();
    for c in idx.children(dir) {
        let c = EntryId(c);
        let e = idx.entry(c);
        let name = idx.name(c);
        let below = old.and_then(|m| stack.lookup(m, name));
        // Built only where it is used: a change listed, a directory entered.
        let path = || [rel, b"/", name].concat();
        if e.is_whiteout() {
            lr.entries += 1;
            if let Some(b) = &below {
                lr.deleted += 1;
                let (n, bytes) = subtree(stack, b);
                lr.hidden.add(n, bytes);
                note(&path, Kind::Deleted);
            }
            continue;
        }
        let implicit = e.has(F_IMPLICIT);
        if !implicit {
            lr.entries += 1;
            let bytes = if e.kind() == libc::S_IFREG && !e.has(F_HARDLINK) {
                idx.size(c)
            } else {
                0
            };
            if below.is_some() {
                lr.modified.add(1, bytes);
                note(&path, Kind::Changed);
            } else {
                lr.added.add(1, bytes);
                note(&path, Kind::Added);
            }
        }
        if e.is_dir() {
            let opaque = e.has(F_OPAQUE) || e.has(F_HIDES_LOWER);
            let lower_dir = below.filter(Merged::is_dir);
            if e.has(F_OPAQUE) && lower_dir.is_some() {
                lr.opaque_dirs += 1;
            }
            subdirs.push((c, path(), lower_dir, replaced || opaque));
        }
    }
    if replaced {
        if let Some(m) = old {
            for d in stack.read_dir(m) {
                let name = stack.name(d.entry);
                if idx.child(dir, name).is_none() {
                    lr.deleted += 1;
                    if let Some(b) = stack.lookup(m, name) {
                        let (n, bytes) = subtree(stack, &b);
                        lr.hidden.add(n, bytes);
                    }
                    note(&|| [rel, b"/", name].concat(), Kind::Deleted);
                }
            }
        }
    }
    for (c, path, old_c, rep_c) in subdirs {
        walk(stack, idx, c, &path, old_c.as_ref(), rep_c, lr, out);
    }
}

/// The first layer above `layer` that replaces or deletes `path` (relative),
/// and how.
fn shadowed_by(stack: &Stack, layer: usize, path: &[u8]) -> (Option<usize>, &'static str) {
    let comps: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    for j in layer + 1..stack.layers().len() {
        let idx = stack.index(LayerRef {
            layer: LayerId(j as u16),
            entry: EntryId::ROOT,
        });
        let mut cur = EntryId::ROOT;
        for (k, c) in comps.iter().enumerate() {
            let last = k + 1 == comps.len();
            if idx.entry(cur).has(F_OPAQUE) && cur != EntryId::ROOT {
                return (Some(j), "deleted");
            }
            let Some(next) = idx.child(cur, c) else {
                break;
            };
            let e = idx.entry(next);
            if e.is_whiteout() {
                return (Some(j), "deleted");
            }
            if last || !e.is_dir() {
                return (Some(j), "replaced");
            }
            if e.has(F_HIDES_LOWER) {
                return (Some(j), "deleted");
            }
            cur = next;
        }
    }
    (None, "hidden")
}

/// dive's efficiency and wasted bytes (`filetree/efficiency.go`): over the
/// leaves of each layer's own tree, a path's versions are summed; a whiteout
/// counts the size of the directory it deletes (a deleted file counts 0).
///
/// The layers' trees are walked together, one directory of all of them at a
/// time (their children merged by name), so that no path is built or hashed
/// but a whiteout's: a path only one layer has adds the same size to both
/// sums and is never wasted.
fn dive(stack: &Stack) -> Dive {
    let mut acc = DiveSums::default();
    let roots: Vec<(usize, EntryId)> = (0..stack.layers().len())
        .map(|i| (i, EntryId::ROOT))
        .collect();
    dive_dir(stack, &roots, b"", &mut acc);
    for (i, l) in stack.layers().iter().enumerate().skip(1) {
        let _ = i;
        for (id, e) in l.index.entries.iter().enumerate() {
            if e.kind() == libc::S_IFREG && !e.has(F_HARDLINK) {
                acc.user += l.index.size(EntryId(id as u32));
            }
        }
    }
    let Dive { .. } = Dive::default();
    Dive {
        efficiency: if acc.all == 0 {
            1.0
        } else {
            acc.min as f64 / acc.all as f64
        },
        wasted_bytes: acc.wasted,
        user_wasted_share: if acc.user == 0 {
            0.0
        } else {
            acc.wasted as f64 / acc.user as f64
        },
    }
}

#[derive(Default)]
struct DiveSums {
    min: u64,
    all: u64,
    wasted: u64,
    user: u64,
}

/// One directory path `rel` as each layer in `dirs` has it.
fn dive_dir(stack: &Stack, dirs: &[(usize, EntryId)], rel: &[u8], acc: &mut DiveSums) {
    // Every child of every layer's directory, grouped by name.
    let mut kids: Vec<(&[u8], usize, EntryId)> = Vec::new();
    for &(i, d) in dirs {
        let idx = &stack.layers()[i].index;
        for c in idx.children(d) {
            let c = EntryId(c);
            kids.push((idx.name(c), i, c));
        }
    }
    kids.sort_by(|a, b| a.0.cmp(b.0).then(a.1.cmp(&b.1)));
    let mut at = 0;
    while at < kids.len() {
        let name = kids[at].0;
        let end = at + kids[at..].iter().take_while(|k| k.0 == name).count();
        let group = &kids[at..end];
        at = end;
        let (mut n, mut total, mut min) = (0u32, 0u64, u64::MAX);
        let mut subdirs: Vec<(usize, EntryId)> = Vec::new();
        for &(_, i, c) in group {
            let idx = &stack.layers()[i].index;
            let e = idx.entry(c);
            if e.is_dir() && idx.children(c).next().is_some() {
                subdirs.push((i, c));
                continue; // not a leaf of this layer's tree
            }
            let size = if e.is_whiteout() {
                whiteout_size(stack, i, &[rel, b"/", name].concat())
            } else if e.kind() == libc::S_IFREG {
                idx.size(c)
            } else {
                0
            };
            n += 1;
            total += size;
            min = min.min(size);
        }
        if n > 0 {
            acc.all += total;
            acc.min += min;
            if n >= 2 {
                acc.wasted += total;
            }
        }
        if !subdirs.is_empty() {
            dive_dir(stack, &subdirs, &[rel, b"/", name].concat(), acc);
        }
    }
}

/// What dive counts for a whiteout in layer `i` at `path`: the data of the
/// directory it deletes in the layers below (0 for a file).
fn whiteout_size(stack: &Stack, i: usize, path: &[u8]) -> u64 {
    let Some(mut cur) = below_root(stack, i) else {
        return 0;
    };
    for c in path.split(|&x| x == b'/').filter(|c| !c.is_empty()) {
        if !cur.is_dir() {
            return 0;
        }
        match stack.lookup(&cur, c) {
            Some(m) => cur = m,
            None => return 0,
        }
    }
    if cur.is_dir() {
        subtree(stack, &cur).1
    } else {
        0
    }
}
