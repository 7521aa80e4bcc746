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
//! directory to the merged directory it was found in. So it gets no node and
//! no count: memory per held inode is then nothing, and per directory one
//! `dirs` slot (the read-only mount keeps nothing per file either).
//!
//! An implicit object becomes a node (is *materialized*, its location the
//! implicit one) the moment something moves it off its entry's place:
//! a copy-up, a rename, an unlink. Its earlier kernel references were never
//! counted, so such a node starts at one reference, and the kernel's
//! `FORGET` (which carries its whole count when it evicts an inode) drops
//! it. `dirs` is exact because a layer directory belongs to one merged
//! path, and every move of a merged directory goes through this table.
//! What it keeps per layer directory is never dropped: its size is bounded
//! by the layers' directory count.

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
    next: u64,
}

impl Nodes {
    pub(super) fn new(stack: Arc<Stack>) -> Nodes {
        Nodes {
            stack,
            map: HashMap::new(),
            by_upper: HashMap::new(),
            dirs: HashMap::new(),
            next: 1,
        }
    }

    /// The layer entry behind a number derived from one, if an object with
    /// that number can be implicit (it is its own inode and has one name).
    fn implicit_ref(&self, ino: u64) -> Option<LayerRef> {
        if ino & ALLOCATED != 0 || ino == ROOT {
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
            && (e.is_dir() || e.count <= 1)
            && !e.has(crate::tar::index::F_DETACHED)
    }

    /// Where an implicit `ino` is: (merged parent, name).
    fn implicit_loc(&self, ino: u64) -> Option<(u64, &[u8])> {
        let r = self.implicit_ref(ino)?;
        let idx = self.stack.index(r);
        let parent = *self.dirs.get(&(r.layer.0, idx.entry(r.entry).parent))?;
        Some((parent, idx.name(r.entry)))
    }

    /// The node of `ino`, made from its implicit location if it has none.
    fn materialize(&mut self, ino: u64) -> Option<&mut Node> {
        if !self.map.contains_key(&ino) {
            let (p, name) = self.implicit_loc(ino)?;
            let node = Node {
                locs: vec![(p, name.into())],
                // Its references were not counted: one stands for them all
                // (the kernel's FORGET at eviction carries the whole count).
                nlookup: 1,
                upper: None,
            };
            self.map.insert(ino, node);
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
                && crate::inode::decode(&self.stack, ino) == Some(r)
                && self.can_be_implicit(r)
            {
                let dir = self.stack.index(r).entry(r.entry).parent;
                self.dirs.insert((r.layer.0, dir), parent);
                return ino;
            }
        }
        if self.materialize(ino).is_none() {
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

    /// The number an object would be given, without recording anything (for
    /// `d_ino` in plain readdir).
    pub(super) fn peek(&self, fixed: Option<u64>, upper: Option<u64>) -> u64 {
        upper
            .and_then(|u| self.by_upper.get(&u).copied())
            .or(fixed)
            .unwrap_or_else(|| (1 << 62) | upper.unwrap_or(0))
    }

    /// Returns true if and only if the kernel may hold a reference to `ino`
    /// (an implicit object may be held: its references are not counted).
    pub(super) fn is_held(&self, ino: u64) -> bool {
        if ino == ROOT {
            return true;
        }
        match self.map.get(&ino) {
            Some(n) => n.nlookup > 0,
            None => self.implicit_loc(ino).is_some(),
        }
    }

    /// Drops `n` kernel references; the node goes when none is left (then
    /// returns true; always for an implicit object).
    pub(super) fn forget(&mut self, ino: u64, n: u64) -> bool {
        if ino == ROOT {
            return false;
        }
        let gone = match self.map.get_mut(&ino) {
            Some(node) => {
                node.nlookup = node.nlookup.saturating_sub(n);
                node.nlookup == 0
            }
            None => return true,
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
    fn loc(&self, ino: u64) -> Option<(u64, &[u8])> {
        match self.map.get(&ino) {
            Some(node) => node.locs.first().map(|(p, n)| (*p, &n[..])),
            None => self.implicit_loc(ino),
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
    /// With `upper_gone`, its upper object has no name left: its `st_ino` may be
    /// reused by a new file, which must not get this number.
    pub(super) fn unlink(&mut self, ino: u64, parent: u64, name: &[u8], upper_gone: bool) {
        let Some(node) = self.materialize(ino) else {
            return;
        };
        node.locs.retain(|(p, n)| !(*p == parent && **n == *name));
        if upper_gone {
            if let Some(u) = node.upper.take() {
                if self.by_upper.get(&u) == Some(&ino) {
                    self.by_upper.remove(&u);
                }
            }
        }
    }

    /// `ino` moved from `from` to `to`.
    pub(super) fn rename(&mut self, ino: u64, from: (u64, &[u8]), to: (u64, &[u8])) {
        if let Some(node) = self.materialize(ino) {
            node.locs.retain(|(p, n)| !(*p == from.0 && **n == *from.1));
            node.locs.retain(|(p, n)| !(*p == to.0 && **n == *to.1));
            node.locs.insert(0, (to.0, to.1.into()));
        }
    }

    /// `ino` now has an upper object with `st_ino` `upper` (after a copy-up).
    pub(super) fn set_upper(&mut self, ino: u64, upper: u64) {
        if let Some(node) = self.materialize(ino) {
            node.upper = Some(upper);
            self.by_upper.insert(upper, ino);
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
        n.unlink(f, ROOT, b"g", false);
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
        n.unlink(f2, d, b"f", true);
        n.forget(f2, 1);
        assert_ne!(n.enter(d, b"h", None, Some(77), None), f);
    }

    #[test]
    fn unlinked_upper_inode_is_not_reused() {
        let mut n = Nodes::new(Arc::new(Stack::new(Vec::new())));
        let f = n.enter(ROOT, b"f", None, Some(5), None);
        n.unlink(f, ROOT, b"f", true);
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
        n.unlink(g, e, b"g", false);
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
        n.unlink(f, ROOT, b"h", false);
        assert_eq!(n.path(f).unwrap(), vec![b"x".to_vec(), b"f".to_vec()]);
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
