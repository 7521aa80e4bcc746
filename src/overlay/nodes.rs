//! The inode table of a writable mount: where each inode the kernel holds is.
//!
//! Owns, for every inode number the kernel has a reference to, the names it
//! was last found under (parent inode + name; several for hard links) and the
//! kernel's lookup count, so that a request naming an inode can be turned into
//! a path, and numbers of upper-only objects stay theirs for as long as they
//! exist (across `FORGET`). Does not own what a path resolves to (`mod.rs`).
//!
//! # Implicit entries
//! Most of what the kernel holds on a container's root filesystem is lower
//! objects nobody changed. Such an object (no upper, not a lower hard link)
//! is where its layer entry is: its number decodes to the entry, the entry
//! gives its name and its layer directory, and `dirs` maps that layer
//! directory to the merged directory it was found in. So it gets no node:
//! what it costs is its kernel reference count, 4 bytes in a per-layer
//! array indexed by entry (allocated zeroed, so pages nobody touched cost
//! nothing), and per directory one `dirs` slot (the read-only mount keeps
//! nothing per file either).
//!
//! An implicit object becomes a node (is *materialized*, its location the
//! implicit one, its count moved over) the moment something moves it off
//! its entry's place: a copy-up, a rename, an unlink, if the kernel holds
//! it. The count must be exact: when the kernel evicts an inode while a
//! lookup of the same name makes a new one, the new inode's LOOKUP can
//! reach us before the old one's FORGET, which carries the old count; a
//! count standing in for an unknown number would drop the node under the
//! new inode, whose number then falls back to its layer place (another
//! object, or none: the kernel saw ENOENT, or a type change and EIO).
//! `dirs` is exact because a layer directory belongs to one merged path,
//! and every move of a merged directory goes through this table. What it
//! keeps per layer directory is never dropped: its size is bounded by the
//! layers' directory count.

use std::collections::HashMap;
use std::sync::Arc;

use crate::inode::ROOT;
use crate::stack::{LayerRef, Stack};

/// Numbers allocated here have this bit set, so they never collide with the
/// numbers derived from layer entries (`(layer + 1) << 32 | entry`).
const ALLOCATED: u64 = 1 << 63;

#[derive(Debug, Default)]
struct Node {
    /// Where the object was found, most recent first (empty: no name left).
    locs: Vec<(u64, Box<[u8]>)>,
    nlookup: u64,
    /// `st_ino` of its upper object, once it has one.
    upper: Option<u64>,
}

/// See the module docs.
#[derive(Debug)]
pub(super) struct Nodes {
    stack: Arc<Stack>,
    map: HashMap<u64, Node>,
    /// Upper `st_ino` → inode number, for objects the kernel holds.
    by_upper: HashMap<u64, u64>,
    /// (layer, directory entry) → the merged directory it was found in, for
    /// the implicit entries under it.
    dirs: HashMap<(u16, u32), u64>,
    /// Kernel references to implicit objects, per layer, by entry (empty
    /// until the layer's first implicit lookup). One byte an entry: an
    /// object looked up a 256th time without a FORGET becomes a node, which
    /// takes its count.
    counts: Vec<Vec<u8>>,
    /// Numbers of lower objects moved or unlinked: their layer place is no
    /// longer theirs, so they are never implicit again (once the kernel
    /// forgets one, its number has no place until a lookup finds it by its
    /// upper object; a rename always copies up first).
    displaced: std::collections::HashSet<u64>,
    next: u64,
}

impl Nodes {
    pub(super) fn new(stack: Arc<Stack>) -> Nodes {
        Nodes {
            stack,
            map: HashMap::new(),
            by_upper: HashMap::new(),
            dirs: HashMap::new(),
            counts: Vec::new(),
            displaced: std::collections::HashSet::new(),
            next: 1,
        }
    }

    /// The layer entry behind a number derived from one, if an object with
    /// that number can be implicit (it is its own inode and has one name).
    fn implicit_ref(&self, ino: u64) -> Option<LayerRef> {
        if ino & ALLOCATED != 0 || ino == ROOT || self.displaced.contains(&ino) {
            return None;
        }
        let r = crate::inode::decode(&self.stack, ino)?;
        self.can_be_implicit(r).then_some(r)
    }

    /// Returns true if and only if entry `r` is an inode of its own with no
    /// other name (a directory, or a non-directory with a link count of 1).
    fn can_be_implicit(&self, r: LayerRef) -> bool {
        let idx = self.stack.index(r);
        let e = idx.entry(r.entry);
        idx.inode_of(r.entry) == r.entry
            && (e.is_dir() || idx.meta(r.entry).nlink <= 1)
            && !e.has(crate::tar::index::F_DETACHED)
    }

    /// Where an implicit `ino` is: (merged parent, name).
    fn implicit_loc(&self, ino: u64) -> Option<(u64, &[u8])> {
        let r = self.implicit_ref(ino)?;
        let idx = self.stack.index(r);
        let parent = *self.dirs.get(&(r.layer.0, idx.entry(r.entry).parent))?;
        Some((parent, idx.name(r.entry)))
    }

    /// The kernel's count of implicit `r` (its slot, made on first use).
    fn count_slot(&mut self, r: LayerRef) -> &mut u8 {
        let l = usize::from(r.layer.0);
        if self.counts.len() <= l {
            self.counts.resize_with(l + 1, Vec::new);
        }
        if self.counts[l].is_empty() {
            self.counts[l] = vec![0; self.stack.index(r).entries.len()];
        }
        &mut self.counts[l][r.entry.0 as usize]
    }

    /// The kernel's count of implicit `r` (0 if never looked up).
    fn count_of(&self, r: LayerRef) -> u8 {
        self.counts
            .get(usize::from(r.layer.0))
            .and_then(|c| c.get(r.entry.0 as usize))
            .copied()
            .unwrap_or(0)
    }

    /// The count of implicit `r`, if its layer has any (never allocates).
    fn count_mut(&mut self, r: LayerRef) -> Option<&mut u8> {
        self.counts
            .get_mut(usize::from(r.layer.0))
            .and_then(|c| c.get_mut(r.entry.0 as usize))
    }

    /// The node of `ino`, made from its implicit location (with its count)
    /// if it has none and the kernel holds it; `None` if neither.
    fn materialize(&mut self, ino: u64) -> Option<&mut Node> {
        if !self.map.contains_key(&ino) {
            let r = self.implicit_ref(ino)?;
            if self.count_of(r) == 0 {
                return None;
            }
            let (p, name) = self.implicit_loc(ino)?;
            let locs = vec![(p, name.into())];
            let nlookup = u64::from(self.count_mut(r).map_or(0, std::mem::take));
            self.map.insert(
                ino,
                Node {
                    locs,
                    nlookup,
                    upper: None,
                },
            );
        }
        self.map.get_mut(&ino)
    }

    /// The number for an object found at `parent`/`name`: the one it already
    /// has (by its upper `st_ino`), else `fixed` (derived from its lower
    /// origin, `lower`), else a new one. Counts one kernel reference, except
    /// for an implicit object (see the module docs).
    pub(super) fn enter(
        &mut self,
        parent: u64,
        name: &[u8],
        fixed: Option<u64>,
        upper: Option<u64>,
        lower: Option<LayerRef>,
    ) -> u64 {
        let known = upper.and_then(|u| self.by_upper.get(&u).copied());
        let ino = match known.or(fixed) {
            Some(i) => i,
            None => {
                self.next += 1;
                ALLOCATED | self.next
            }
        };
        if ino == ROOT {
            return ino;
        }
        if let (None, None, Some(r)) = (upper, known, lower) {
            if !self.map.contains_key(&ino)
                && fixed == Some(ino)
                && self.implicit_ref(ino) == Some(r)
            {
                let dir = self.stack.index(r).entry(r.entry).parent;
                self.dirs.insert((r.layer.0, dir), parent);
                let c = self.count_slot(r);
                if *c < u8::MAX {
                    *c += 1;
                    return ino;
                }
                // Past a byte: a node takes the count (`materialize`) and
                // counts this lookup below.
            }
        }
        // An object with an upper is never held uncounted (a copy-up
        // materializes it, a lookup counts it): with no node, the kernel
        // holds none of it, and where its layer entry is says nothing of
        // where it is now (it may have moved, then been forgotten).
        if upper.is_some() {
            self.map.entry(ino).or_default();
        } else if self.materialize(ino).is_none() {
            self.map.insert(ino, Node::default());
        }
        let node = self.map.get_mut(&ino).expect("just made");
        node.nlookup += 1;
        match node
            .locs
            .iter()
            .position(|(p, n)| *p == parent && **n == *name)
        {
            Some(0) => {}
            Some(i) => {
                let l = node.locs.remove(i);
                node.locs.insert(0, l);
            }
            None => node.locs.insert(0, (parent, name.into())),
        }
        if let Some(u) = upper {
            node.upper = Some(u);
            self.by_upper.insert(u, ino);
        }
        ino
    }

    /// Enters an object this mount has just created in the upper, whose
    /// `st_ino` `upper` the filesystem has just allocated: it gets a new
    /// number. A number still recorded for that `st_ino` belongs to an
    /// object that is gone without its `unlink` reaching this table; given to
    /// the new one, the kernel (which may still hold it for the old object)
    /// would alias the two (a new directory then fails with ESTALE, which the
    /// VFS retries into EEXIST). So it is dropped, with a warning: no known
    /// path leaves one behind.
    pub(super) fn enter_new(&mut self, parent: u64, name: &[u8], upper: u64) -> u64 {
        if let Some(stale) = self.by_upper.remove(&upper) {
            log::warn!(target: "unionfs::overlay",
                "new upper object (st_ino {upper}) found the number {stale:#x} of a removed one still recorded: dropped");
            if let Some(node) = self.map.get_mut(&stale) {
                if node.upper == Some(upper) {
                    node.upper = None;
                }
            }
        }
        self.enter(parent, name, None, Some(upper), None)
    }

    /// The number an object would be given, without recording anything (for
    /// `d_ino` in plain readdir).
    pub(super) fn peek(&self, fixed: Option<u64>, upper: Option<u64>) -> u64 {
        upper
            .and_then(|u| self.by_upper.get(&u).copied())
            .or(fixed)
            .unwrap_or_else(|| (1 << 62) | upper.unwrap_or(0))
    }

    /// Returns true if and only if the kernel holds a reference to `ino`.
    pub(super) fn is_held(&self, ino: u64) -> bool {
        if ino == ROOT {
            return true;
        }
        match self.map.get(&ino) {
            Some(n) => n.nlookup > 0,
            None => self.implicit_ref(ino).is_some_and(|r| self.count_of(r) > 0),
        }
    }

    /// Drops `n` kernel references; the node goes when none is left (then
    /// returns true).
    pub(super) fn forget(&mut self, ino: u64, n: u64) -> bool {
        if ino == ROOT {
            return false;
        }
        let gone = match self.map.get_mut(&ino) {
            Some(node) => {
                node.nlookup = node.nlookup.saturating_sub(n);
                node.nlookup == 0
            }
            None => {
                let n = u8::try_from(n).unwrap_or(u8::MAX);
                return match self.implicit_ref(ino).and_then(|r| self.count_mut(r)) {
                    Some(c) if *c > 0 => {
                        *c = c.saturating_sub(n);
                        *c == 0
                    }
                    _ => true,
                };
            }
        };
        if gone {
            // The number stays the upper object's (`by_upper` keeps it) for
            // as long as the object exists, as overlayfs reports the upper
            // `st_ino` of an upper-only object: an object the kernel forgot
            // (memory pressure, `drop_caches`) comes back under the same
            // number, so `stat` never shows it change (pjdfstest's rename
            // tests saw new numbers). Only removing the object's last name
            // frees the number (`unlink`).
            self.map.remove(&ino);
        }
        gone
    }

    /// Where `ino` is now: (parent, name) of its most recent location.
    ///
    /// The most recent location whose parent is still known, that is:
    /// a hard link's other name may be under a directory the kernel has
    /// forgotten (it dropped that alias, and then its parent, while it keeps
    /// the inode by another name).
    fn loc(&self, ino: u64) -> Option<(u64, &[u8])> {
        match self.map.get(&ino) {
            // One name (every directory, most files): nothing to choose, and
            // no second lookup per level on this path of every request.
            Some(node) if node.locs.len() <= 1 => node.locs.first().map(|(p, n)| (*p, &n[..])),
            Some(node) => node
                .locs
                .iter()
                .find(|(p, _)| self.known(*p))
                .map(|(p, n)| (*p, &n[..])),
            None => self.implicit_loc(ino),
        }
    }

    /// Returns true if `ino` has a location (the root, a node with a name,
    /// or an implicit place).
    fn known(&self, ino: u64) -> bool {
        ino == ROOT
            || match self.map.get(&ino) {
                Some(node) => !node.locs.is_empty(),
                None => self.implicit_loc(ino).is_some(),
            }
    }

    /// The path of `ino`, from its most recent location; `None` for a number
    /// the kernel no longer holds, or an object that has no name any more.
    pub(super) fn path(&self, ino: u64) -> Option<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let mut cur = ino;
        while cur != ROOT {
            let (parent, name) = self.loc(cur)?;
            out.push(name.to_vec());
            cur = parent;
            if out.len() > 4096 {
                return None; // a cycle: never expected
            }
        }
        out.reverse();
        Some(out)
    }

    /// The parent of `ino` (its most recent location's).
    pub(super) fn parent(&self, ino: u64) -> Option<u64> {
        if ino == ROOT {
            return Some(ROOT);
        }
        self.loc(ino).map(|l| l.0)
    }

    /// The name `parent`/`name` no longer leads to `ino` (unlink, or renamed over).
    /// `gone_upper`: the `st_ino` of its upper object, which has no name
    /// left: the filesystem may give that `st_ino` to a new object, which
    /// must not get this number (it would reach the kernel with the number
    /// of an inode of another type, which the kernel then declares bad:
    /// `EIO` for whoever holds it).
    pub(super) fn unlink(&mut self, ino: u64, parent: u64, name: &[u8], gone_upper: Option<u64>) {
        if let Some(u) = gone_upper {
            // By the st_ino, not by the node: a node made again after a
            // FORGET does not know it.
            if self.by_upper.get(&u) == Some(&ino) {
                self.by_upper.remove(&u);
            }
        }
        self.materialize(ino);
        self.displace(ino);
        let Some(node) = self.map.get_mut(&ino) else {
            return;
        };
        node.locs.retain(|(p, n)| !(*p == parent && **n == *name));
        if gone_upper.is_some() {
            node.upper = None;
        }
    }

    /// `ino` moved from `from` to `to`.
    pub(super) fn rename(&mut self, ino: u64, from: (u64, &[u8]), to: (u64, &[u8])) {
        self.materialize(ino);
        self.displace(ino);
        if let Some(node) = self.map.get_mut(&ino) {
            node.locs.retain(|(p, n)| !(*p == from.0 && **n == *from.1));
            node.locs.retain(|(p, n)| !(*p == to.0 && **n == *to.1));
            node.locs.insert(0, (to.0, to.1.into()));
        }
    }

    /// `ino` (if a lower object's number) is off its layer place for good.
    fn displace(&mut self, ino: u64) {
        if self.implicit_ref(ino).is_some() {
            self.displaced.insert(ino);
        }
    }

    /// `ino` now has an upper object with `st_ino` `upper` (after a copy-up).
    /// Recorded even if the kernel does not hold it: an object copied up
    /// inside a directory that then moves is found again by its upper.
    pub(super) fn set_upper(&mut self, ino: u64, upper: u64) {
        self.by_upper.insert(upper, ino);
        if let Some(node) = self.materialize(ino) {
            node.upper = Some(upper);
        }
    }

    /// How many nodes and implicit-directory slots are kept (for tests).
    #[cfg(test)]
    pub(super) fn sizes(&self) -> (usize, usize) {
        (self.map.len(), self.dirs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_paths_and_forget() {
        let mut n = Nodes::new(Arc::new(Stack::new(Vec::new())));
        let d = n.enter(ROOT, b"d", Some(0x1_0000_0002), None, None);
        assert_eq!(d, 0x1_0000_0002);
        let f = n.enter(d, b"f", None, Some(77), None);
        assert!(f & ALLOCATED != 0);
        assert_eq!(n.path(f).unwrap(), vec![b"d".to_vec(), b"f".to_vec()]);
        // A hard link: same upper st_ino, same number, two names.
        assert_eq!(n.enter(ROOT, b"g", None, Some(77), None), f);
        assert_eq!(n.path(f).unwrap(), vec![b"g".to_vec()]);
        n.unlink(f, ROOT, b"g", None);
        assert_eq!(n.path(f).unwrap(), vec![b"d".to_vec(), b"f".to_vec()]);
        n.rename(d, (ROOT, b"d"), (ROOT, b"e"));
        assert_eq!(n.path(f).unwrap(), vec![b"e".to_vec(), b"f".to_vec()]);
        n.forget(f, 2);
        assert!(n.path(f).is_none());
        // Forgotten, the object (still there) comes back under its number.
        let f2 = n.enter(d, b"f", None, Some(77), None);
        assert_eq!(f2, f);
        // Its last name removed, the st_ino is free: a new object gets a
        // new number.
        n.unlink(f2, d, b"f", Some(77));
        n.forget(f2, 1);
        assert_ne!(n.enter(d, b"h", None, Some(77), None), f);
    }

    #[test]
    fn a_new_object_never_takes_a_stale_number() {
        let mut n = Nodes::new(Arc::new(Stack::new(Vec::new())));
        let f = n.enter(ROOT, b"f", None, Some(5), None);
        // Gone without an unlink reaching the table (no known path does
        // that): a new object with the same st_ino still gets a new number.
        let g = n.enter_new(ROOT, b"g", 5);
        assert_ne!(f, g);
        assert_eq!(n.path(g).unwrap(), vec![b"g".to_vec()]);
        // And it owns the st_ino from then on.
        assert_eq!(n.enter(ROOT, b"g2", None, Some(5), None), g);
    }

    #[test]
    fn unlinked_upper_inode_is_not_reused() {
        let mut n = Nodes::new(Arc::new(Stack::new(Vec::new())));
        let f = n.enter(ROOT, b"f", None, Some(5), None);
        n.unlink(f, ROOT, b"f", Some(5));
        assert!(n.path(f).is_none());
        let g = n.enter(ROOT, b"g", None, Some(5), None);
        assert_ne!(f, g);
    }

    /// A one-layer stack: d/, d/e/, d/f, d/e/g, and h, a hard link to d/f.
    fn stack() -> (tempfile::TempDir, Arc<Stack>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.tar");
        let mut b = ::tar::Builder::new(std::fs::File::create(&path).unwrap());
        let mut add = |name: &str, kind: ::tar::EntryType, link: Option<&str>| {
            let mut h = ::tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(0o755);
            h.set_size(0);
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            b.append_data(&mut h, name, &[][..]).unwrap();
        };
        add("d/", ::tar::EntryType::Directory, None);
        add("d/e/", ::tar::EntryType::Directory, None);
        add("d/f", ::tar::EntryType::Regular, None);
        add("d/e/g", ::tar::EntryType::Regular, None);
        add("h", ::tar::EntryType::Link, Some("d/f"));
        b.into_inner().unwrap();
        let opts = crate::tar::IndexOptions::default();
        let layer = crate::tar::TarLayer::open(&path, &opts).unwrap();
        (dir, Arc::new(Stack::new(vec![layer])))
    }

    fn at(stack: &Stack, path: &[u8]) -> (u64, LayerRef) {
        let r = LayerRef {
            layer: crate::stack::LayerId(0),
            entry: stack.layers()[0].index.lookup_path(path).unwrap(),
        };
        (crate::inode::ino_of(stack, r), r)
    }

    #[test]
    fn unchanged_lower_objects_cost_no_node_until_moved() {
        let (_t, stack) = stack();
        let mut n = Nodes::new(Arc::clone(&stack));
        let (d, dr) = at(&stack, b"d");
        let (e, er) = at(&stack, b"d/e");
        let (g, gr) = at(&stack, b"d/e/g");
        assert_eq!(n.enter(ROOT, b"d", Some(d), None, Some(dr)), d);
        assert_eq!(n.enter(d, b"e", Some(e), None, Some(er)), e);
        assert_eq!(n.enter(e, b"g", Some(g), None, Some(gr)), g);
        // Three held objects, no node: one slot per layer directory.
        assert_eq!(n.sizes(), (0, 3));
        assert_eq!(
            n.path(g).unwrap(),
            vec![b"d".to_vec(), b"e".to_vec(), b"g".to_vec()]
        );
        assert_eq!(n.parent(g), Some(e));
        assert!(n.is_held(g));

        // A rename of d materializes d alone; what is under it follows.
        n.rename(d, (ROOT, b"d"), (ROOT, b"x"));
        assert_eq!(n.sizes().0, 1);
        assert_eq!(
            n.path(g).unwrap(),
            vec![b"x".to_vec(), b"e".to_vec(), b"g".to_vec()]
        );

        // An unlink leaves a node with no name (still held: its data is an
        // orphan's) until the kernel forgets it.
        n.unlink(g, e, b"g", None);
        assert!(n.path(g).is_none());
        assert!(n.is_held(g));
        assert!(n.forget(g, 3));
        assert_eq!(n.sizes().0, 1);

        // A copy-up records the upper object: the number comes back by it.
        let (f, fr) = at(&stack, b"d/f");
        let (h, hr) = at(&stack, b"h");
        assert_eq!(h, f, "a hard link shares the number");
        // The names of a lower hard link are never implicit.
        assert_eq!(n.enter(d, b"f", Some(f), None, Some(fr)), f);
        assert_eq!(n.enter(ROOT, b"h", Some(h), None, Some(hr)), f);
        assert_eq!(n.sizes().0, 2);
        assert_eq!(n.path(f).unwrap(), vec![b"h".to_vec()]);
        n.unlink(f, ROOT, b"h", None);
        assert_eq!(n.path(f).unwrap(), vec![b"x".to_vec(), b"f".to_vec()]);
    }

    #[test]
    fn an_implicit_count_past_a_byte_moves_to_a_node() {
        let (_t, stack) = stack();
        let mut n = Nodes::new(Arc::clone(&stack));
        let (d, dr) = at(&stack, b"d");
        for _ in 0..300 {
            assert_eq!(n.enter(ROOT, b"d", Some(d), None, Some(dr)), d);
        }
        // 255 in the byte, then a node with every reference.
        assert_eq!(n.sizes().0, 1);
        assert_eq!(n.count_of(dr), 0);
        assert!(!n.forget(d, 299));
        assert!(n.is_held(d));
        assert_eq!(n.path(d).unwrap(), vec![b"d".to_vec()]);
        assert!(n.forget(d, 1));
        assert!(!n.is_held(d));
        // Forgotten, it is implicit again: a byte, no node.
        assert_eq!(n.enter(ROOT, b"d", Some(d), None, Some(dr)), d);
        assert_eq!((n.sizes().0, n.count_of(dr)), (0, 1));
    }

    /// The kernel evicts an inode while a lookup of the same name makes a
    /// new one: the new LOOKUP can come before the old FORGET, which carries
    /// every reference of the old inode. Once the object has moved, a count
    /// short of the kernel's would drop the node under the new inode.
    #[test]
    fn a_forget_of_an_evicted_inode_leaves_the_new_lookup_counted() {
        let (_t, stack) = stack();
        let mut n = Nodes::new(Arc::clone(&stack));
        let (d, dr) = at(&stack, b"d");
        let (e, er) = at(&stack, b"d/e");
        n.enter(ROOT, b"d", Some(d), None, Some(dr));
        for _ in 0..3 {
            n.enter(d, b"e", Some(e), None, Some(er));
        }
        assert!(n.is_held(e));
        n.rename(e, (d, b"e"), (ROOT, b"moved"));
        n.set_upper(e, 42);
        // The new inode's LOOKUP, then the old inode's FORGET(3).
        assert_eq!(n.enter(ROOT, b"moved", None, Some(42), None), e);
        assert!(!n.forget(e, 3));
        assert_eq!(n.path(e).unwrap(), vec![b"moved".to_vec()]);
        assert!(n.forget(e, 1));
        assert!(!n.is_held(e));
        // An implicit object's count is exact too.
        let (f, fr) = at(&stack, b"d/e/g");
        n.enter(e, b"g", Some(f), None, Some(fr));
        n.enter(e, b"g", Some(f), None, Some(fr));
        assert!(!n.forget(f, 1));
        assert!(n.is_held(f));
        assert!(n.forget(f, 1));
        assert!(!n.is_held(f));
    }

    /// A moved directory the kernel forgot has no place: its layer place is
    /// not where it is. A hard link's name under it is then skipped for
    /// its other name, the one the kernel still holds it by.
    #[test]
    fn a_forgotten_moved_directory_has_no_place_and_its_aliases_are_skipped() {
        let (_t, stack) = stack();
        let mut n = Nodes::new(Arc::clone(&stack));
        let (d, dr) = at(&stack, b"d");
        let (f, fr) = at(&stack, b"d/f");
        let (h, hr) = at(&stack, b"h");
        n.enter(ROOT, b"d", Some(d), None, Some(dr));
        n.enter(ROOT, b"h", Some(h), None, Some(hr));
        n.enter(d, b"f", Some(f), None, Some(fr));
        assert_eq!(n.path(f).unwrap(), vec![b"d".to_vec(), b"f".to_vec()]);
        n.rename(d, (ROOT, b"d"), (ROOT, b"x"));
        n.set_upper(d, 7);
        assert_eq!(n.path(f).unwrap(), vec![b"x".to_vec(), b"f".to_vec()]);
        // The kernel drops d/f's alias, then d; it keeps f as h.
        assert!(n.forget(d, 1));
        assert!(n.path(d).is_none(), "no stale layer place");
        assert_eq!(n.path(f).unwrap(), vec![b"h".to_vec()]);
        // Found again by its upper object, d has its place back.
        assert_eq!(n.enter(ROOT, b"x", None, Some(7), None), d);
        assert_eq!(n.path(d).unwrap(), vec![b"x".to_vec()]);
    }

    #[test]
    fn a_copied_up_implicit_object_keeps_its_number_and_place() {
        let (_t, stack) = stack();
        let mut n = Nodes::new(Arc::clone(&stack));
        let (d, dr) = at(&stack, b"d");
        let (e, er) = at(&stack, b"d/e");
        n.enter(ROOT, b"d", Some(d), None, Some(dr));
        n.enter(d, b"e", Some(e), None, Some(er));
        n.set_upper(e, 99);
        assert_eq!(n.sizes().0, 1);
        assert_eq!(n.path(e).unwrap(), vec![b"d".to_vec(), b"e".to_vec()]);
        // Found again with its upper: the same number, still one node.
        assert_eq!(n.enter(d, b"e", Some(e), Some(99), Some(er)), e);
        assert_eq!(n.sizes().0, 1);
        assert_eq!(n.peek(None, Some(99)), e);
        // The kernel's FORGET carries its whole count: the node goes, the
        // number stays the upper object's.
        assert!(n.forget(e, 2));
        assert_eq!(n.sizes().0, 0);
        assert_eq!(n.peek(None, Some(99)), e);
    }
}
