//! `UpperTree`: the in-memory mirror of the upper directory's namespace.
//!
//! Owns names, types, whiteouts, opacity and `st_ino` of everything in the
//! upper, so that a lookup in the merged view never touches the disk to learn
//! whether the upper has a name. Loaded by one scan at mount (`scan.rs`, which
//! reads both whiteout formats), then kept in step by the caller after every
//! successful [`Upper`](super::Upper) operation (overlayfs forbids changing the
//! upper under a mount; so do we). Pure data: no I/O, no locking (the caller
//! wraps it in a lock), no merge rules.
//!
//! A whiteout is a node named by the name it hides (`.wh.X` and the overlay 0/0
//! char device `X` both become node "X" with `whiteout = true`), as
//! `tar/index.rs` records tar whiteouts; its `kind` and `ino` are the marker
//! object's. An opaque marker is a flag on its directory, never a node.
//!
//! Memory: one `BTreeMap` from (parent id, name) — one key of 4 + name bytes,
//! shared with the node by an `Arc` — to node id, plus one 40-byte slot per node.
//! The map's order makes a directory's children one contiguous run in name
//! (byte) order.
//!
//! Node ids of removed nodes are reused. So a `UNodeId` is not an inode number:
//! the FUSE inode table must allocate its own numbers for upper-only objects
//! and keep each until the kernel's `FORGET` (an unlinked file may stay open
//! long after its node is gone), mapping them to nodes while the node lives.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use crate::tar::index::NAME_MAX;

/// A node of the [`UpperTree`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UNodeId(pub u32);

impl UNodeId {
    /// The upper root directory.
    pub const ROOT: UNodeId = UNodeId(0);
}

/// What the upper has at a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UEntry {
    /// The node.
    pub node: UNodeId,
    /// `st_mode & S_IFMT` of the upper object (of the marker, for a whiteout).
    pub kind: u32,
    /// The name is whited out: it hides lower objects and shows nothing.
    pub whiteout: bool,
    /// A directory that does not merge with lower directories.
    pub opaque: bool,
    /// `st_ino` of the upper object.
    pub ino: u64,
}

impl UEntry {
    /// Returns true if and only if this is a real directory (not a whiteout).
    pub fn is_dir(&self) -> bool {
        !self.whiteout && self.kind == libc::S_IFDIR
    }
}

const F_WHITEOUT: u8 = 1;
const F_OPAQUE: u8 = 2;

#[derive(Clone, Debug)]
struct Node {
    /// Parent id (4 bytes, big-endian: map order is parent, then name) + name.
    /// Empty for the root.
    key: Arc<[u8]>,
    ino: u64,
    kind: u32,
    flags: u8,
}

impl Node {
    fn parent(&self) -> Option<UNodeId> {
        let b: [u8; 4] = self.key.get(..4)?.try_into().ok()?;
        Some(UNodeId(u32::from_be_bytes(b)))
    }
    fn name(&self) -> &[u8] {
        self.key.get(4..).unwrap_or_default()
    }
}

/// The in-memory mirror of the upper's namespace. See the module docs.
#[derive(Clone, Debug)]
pub struct UpperTree {
    nodes: Vec<Option<Node>>,
    free: Vec<u32>,
    by_name: BTreeMap<Arc<[u8]>, UNodeId>,
}

/// Returns true if and only if `name` can be a node's name: a valid component,
/// not a reserved `.wh.` name (those are markers, recorded as flags).
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && name != b"."
        && name != b".."
        && !name.iter().any(|&b| b == b'/' || b == 0)
        && !crate::whiteout::is_reserved(name)
}

/// Runs `f` on the map key of `(parent, name)` built on the stack.
fn with_key<R>(parent: UNodeId, name: &[u8], f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    if name.len() > NAME_MAX {
        return None;
    }
    let mut buf = [0u8; 4 + NAME_MAX];
    buf[..4].copy_from_slice(&parent.0.to_be_bytes());
    buf[4..4 + name.len()].copy_from_slice(name);
    Some(f(&buf[..4 + name.len()]))
}

impl UpperTree {
    /// A tree with only the root (whose `st_ino` is `root_ino`).
    pub fn new(root_ino: u64) -> UpperTree {
        let root = Node {
            key: Arc::from(&[][..]),
            ino: root_ino,
            kind: libc::S_IFDIR,
            flags: 0,
        };
        UpperTree {
            nodes: vec![Some(root)],
            free: Vec::new(),
            by_name: BTreeMap::new(),
        }
    }

    /// How many nodes, the root included.
    pub fn len(&self) -> usize {
        self.by_name.len() + 1
    }

    /// Returns true if and only if the tree holds nothing but the root.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    fn node(&self, id: UNodeId) -> Option<&Node> {
        self.nodes.get(id.0 as usize)?.as_ref()
    }

    fn node_mut(&mut self, id: UNodeId) -> Option<&mut Node> {
        self.nodes.get_mut(id.0 as usize)?.as_mut()
    }

    fn entry_of(&self, id: UNodeId) -> Option<UEntry> {
        let n = self.node(id)?;
        Some(UEntry {
            node: id,
            kind: n.kind,
            whiteout: n.flags & F_WHITEOUT != 0,
            opaque: n.flags & F_OPAQUE != 0,
            ino: n.ino,
        })
    }

    /// The entry of node `id`, if it exists.
    pub fn get(&self, id: UNodeId) -> Option<UEntry> {
        self.entry_of(id)
    }

    /// What the upper has at `dir/name`: a real entry, a whiteout, or nothing.
    pub fn lookup(&self, dir: UNodeId, name: &[u8]) -> Option<UEntry> {
        let id = with_key(dir, name, |k| self.by_name.get(k).copied())??;
        self.entry_of(id)
    }

    /// The children of `dir` (whiteouts included), in name order.
    pub fn children(&self, dir: UNodeId) -> impl Iterator<Item = (&[u8], UEntry)> + '_ {
        let prefix = dir.0.to_be_bytes();
        self.by_name
            .range::<[u8], _>((Bound::Included(&prefix[..]), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, &id)| Some((k.get(4..)?, self.entry_of(id)?)))
    }

    /// The name of `id` (empty for the root).
    pub fn name(&self, id: UNodeId) -> Option<&[u8]> {
        Some(self.node(id)?.name())
    }

    /// The parent of `id` (`None` for the root or a missing node).
    pub fn parent(&self, id: UNodeId) -> Option<UNodeId> {
        self.node(id)?.parent()
    }

    /// The path of `id` from the root, as components (`Some(vec![])` for the root).
    pub fn path(&self, id: UNodeId) -> Option<Vec<Vec<u8>>> {
        let mut parts = Vec::new();
        let mut cur = self.node(id)?;
        while let Some(p) = cur.parent() {
            parts.push(cur.name().to_vec());
            cur = self.node(p)?;
            if parts.len() > self.nodes.len() {
                debug_assert!(false, "cycle in the upper tree");
                return None;
            }
        }
        parts.reverse();
        Some(parts)
    }

    /// The node at `path`, through real directories only; `None` if any
    /// component is missing or a whiteout.
    pub fn resolve<P: AsRef<[u8]>>(&self, path: &[P]) -> Option<UNodeId> {
        let mut cur = UNodeId::ROOT;
        for c in path {
            if !self.entry_of(cur)?.is_dir() {
                return None;
            }
            let e = self.lookup(cur, c.as_ref())?;
            if e.whiteout {
                return None;
            }
            cur = e.node;
        }
        Some(cur)
    }

    /// Records a real object at `dir/name`, replacing whatever was there (a
    /// whiteout, or an entry and its subtree). `None` if `dir` is not a real
    /// directory of the tree or `name` is not a valid non-reserved name.
    pub fn insert(&mut self, dir: UNodeId, name: &[u8], kind: u32, ino: u64) -> Option<UNodeId> {
        self.put(dir, name, kind & libc::S_IFMT, ino, 0)
    }

    /// Records a whiteout for `dir/name` (`kind`, `ino`: the marker's), replacing
    /// whatever was there.
    pub fn set_whiteout(
        &mut self,
        dir: UNodeId,
        name: &[u8],
        kind: u32,
        ino: u64,
    ) -> Option<UNodeId> {
        self.put(dir, name, kind & libc::S_IFMT, ino, F_WHITEOUT)
    }

    fn put(
        &mut self,
        dir: UNodeId,
        name: &[u8],
        kind: u32,
        ino: u64,
        flags: u8,
    ) -> Option<UNodeId> {
        if !valid_name(name) || !self.entry_of(dir)?.is_dir() {
            return None;
        }
        if let Some(old) = self.lookup(dir, name) {
            self.remove_subtree(old.node);
        }
        let key: Arc<[u8]> = with_key(dir, name, |k| Arc::from(k))?;
        let node = Node {
            key: key.clone(),
            ino,
            kind,
            flags,
        };
        let id = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = Some(node);
                UNodeId(i)
            }
            None => {
                let i = u32::try_from(self.nodes.len()).ok()?;
                self.nodes.push(Some(node));
                UNodeId(i)
            }
        };
        self.by_name.insert(key, id);
        Some(id)
    }

    /// Removes the whiteout at `dir/name`; false if there is none (a real entry
    /// is left alone).
    pub fn clear_whiteout(&mut self, dir: UNodeId, name: &[u8]) -> bool {
        match self.lookup(dir, name) {
            Some(e) if e.whiteout => {
                self.remove_subtree(e.node);
                true
            }
            _ => false,
        }
    }

    /// Sets or clears the opaque flag of directory `id`; false if it is not one.
    pub fn set_opaque(&mut self, id: UNodeId, opaque: bool) -> bool {
        if !self.entry_of(id).is_some_and(|e| e.is_dir()) {
            return false;
        }
        let Some(n) = self.node_mut(id) else {
            return false;
        };
        n.flags = if opaque {
            n.flags | F_OPAQUE
        } else {
            n.flags & !F_OPAQUE
        };
        true
    }

    /// Updates the `st_ino` of `id`; false if it does not exist.
    pub fn set_ino(&mut self, id: UNodeId, ino: u64) -> bool {
        self.node_mut(id).map(|n| n.ino = ino).is_some()
    }

    /// Removes `dir/name` (entry or whiteout) and everything under it; false if absent.
    pub fn remove(&mut self, dir: UNodeId, name: &[u8]) -> bool {
        match self.lookup(dir, name) {
            Some(e) => {
                self.remove_subtree(e.node);
                true
            }
            None => false,
        }
    }

    fn remove_subtree(&mut self, id: UNodeId) {
        if id == UNodeId::ROOT {
            return;
        }
        let mut stack = vec![id];
        while let Some(n) = stack.pop() {
            stack.extend(self.children(n).map(|(_, e)| e.node));
            if let Some(node) = self.nodes.get_mut(n.0 as usize).and_then(Option::take) {
                self.by_name.remove(&node.key);
                self.free.push(n.0);
            }
        }
    }

    /// Returns true if and only if `a` is `b` or one of its ancestors.
    fn is_ancestor(&self, a: UNodeId, b: UNodeId) -> bool {
        let mut cur = Some(b);
        for _ in 0..=self.nodes.len() {
            match cur {
                Some(c) if c == a => return true,
                Some(c) => cur = self.parent(c),
                None => return false,
            }
        }
        false
    }

    /// Moves `from_dir/from_name` (with its subtree, keeping its id) to
    /// `to_dir/to_name`, replacing whatever was there. `None` if the source is
    /// missing, the target directory is not a real directory, the name is
    /// invalid, or a directory would move into itself.
    pub fn rename(
        &mut self,
        from_dir: UNodeId,
        from_name: &[u8],
        to_dir: UNodeId,
        to_name: &[u8],
    ) -> Option<UNodeId> {
        let src = self.lookup(from_dir, from_name)?.node;
        if (from_dir, from_name) == (to_dir, to_name) {
            return Some(src);
        }
        if !valid_name(to_name) || !self.entry_of(to_dir)?.is_dir() || self.is_ancestor(src, to_dir)
        {
            return None;
        }
        if let Some(old) = self.lookup(to_dir, to_name) {
            if self.is_ancestor(old.node, src) {
                return None; // over its own ancestor
            }
            self.remove_subtree(old.node);
        }
        self.rekey(src, to_dir, to_name)?;
        Some(src)
    }

    /// Swaps `a_dir/a_name` and `b_dir/b_name` (`RENAME_EXCHANGE`); false if
    /// either is missing or a directory would move into itself.
    pub fn exchange(
        &mut self,
        a_dir: UNodeId,
        a_name: &[u8],
        b_dir: UNodeId,
        b_name: &[u8],
    ) -> bool {
        let (Some(a), Some(b)) = (self.lookup(a_dir, a_name), self.lookup(b_dir, b_name)) else {
            return false;
        };
        if a.node == b.node || self.is_ancestor(a.node, b_dir) || self.is_ancestor(b.node, a_dir) {
            return a.node == b.node;
        }
        self.rekey(a.node, b_dir, b_name).is_some() && self.rekey(b.node, a_dir, a_name).is_some()
    }

    /// Gives node `id` the key `(dir, name)` (overwriting that key's map entry).
    fn rekey(&mut self, id: UNodeId, dir: UNodeId, name: &[u8]) -> Option<()> {
        let key: Arc<[u8]> = with_key(dir, name, |k| Arc::from(k))?;
        let node = self.node_mut(id)?;
        let old = std::mem::replace(&mut node.key, key.clone());
        if self.by_name.get(&old) == Some(&id) {
            self.by_name.remove(&old);
        }
        self.by_name.insert(key, id);
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: u32 = libc::S_IFDIR;
    const F: u32 = libc::S_IFREG;

    fn names(t: &UpperTree, dir: UNodeId) -> Vec<String> {
        t.children(dir)
            .map(|(n, e)| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(n),
                    if e.whiteout { "(wh)" } else { "" }
                )
            })
            .collect()
    }

    #[test]
    fn insert_lookup_children_path() {
        let mut t = UpperTree::new(2);
        let etc = t.insert(UNodeId::ROOT, b"etc", D | 0o755, 10).unwrap();
        t.insert(etc, b"passwd", F, 11).unwrap();
        t.insert(etc, b"group", F, 12).unwrap();
        t.set_whiteout(etc, b"shadow", libc::S_IFCHR, 13).unwrap();
        t.insert(UNodeId::ROOT, b"a", F, 14).unwrap();
        assert_eq!(names(&t, UNodeId::ROOT), ["a", "etc"]);
        assert_eq!(names(&t, etc), ["group", "passwd", "shadow(wh)"]);
        let p = t.lookup(etc, b"passwd").unwrap();
        assert_eq!((p.kind, p.ino, p.whiteout), (F, 11, false));
        assert_eq!(
            t.path(p.node).unwrap(),
            [b"etc".to_vec(), b"passwd".to_vec()]
        );
        assert_eq!(t.resolve(&[&b"etc"[..], b"passwd"]), Some(p.node));
        assert_eq!(t.resolve(&[&b"etc"[..], b"shadow"]), None);
        assert_eq!(t.resolve(&[&b"a"[..], b"x"]), None, "a is not a directory");
        assert_eq!(t.resolve::<&[u8]>(&[]), Some(UNodeId::ROOT));
        assert_eq!(t.path(UNodeId::ROOT).unwrap(), Vec::<Vec<u8>>::new());
        assert_eq!(t.get(UNodeId::ROOT).unwrap().ino, 2);
        assert_eq!(t.len(), 6);
    }

    #[test]
    fn refuses_bad_names_and_non_directories() {
        let mut t = UpperTree::new(1);
        let f = t.insert(UNodeId::ROOT, b"f", F, 2).unwrap();
        for bad in [
            &b""[..],
            b".",
            b"..",
            b"a/b",
            b"a\0",
            b".wh.x",
            b".wh..wh..opq",
        ] {
            assert_eq!(t.insert(UNodeId::ROOT, bad, F, 3), None);
        }
        assert_eq!(t.insert(UNodeId::ROOT, &[b'x'; 256], F, 3), None);
        assert!(t.insert(UNodeId::ROOT, &[b'x'; 255], F, 3).is_some());
        assert_eq!(t.insert(f, b"child", F, 3), None);
        assert_eq!(t.insert(UNodeId(999), b"child", F, 3), None);
        let w = t.set_whiteout(UNodeId::ROOT, b"w", F, 4).unwrap();
        assert_eq!(
            t.insert(w, b"child", F, 3),
            None,
            "a whiteout is not a directory"
        );
        assert!(!t.set_opaque(f, true));
        assert!(t.lookup(UNodeId::ROOT, &[b'x'; 300]).is_none());
    }

    #[test]
    fn whiteouts_are_replaced_by_entries_and_back() {
        let mut t = UpperTree::new(1);
        t.set_whiteout(UNodeId::ROOT, b"x", F, 5).unwrap();
        assert!(t.lookup(UNodeId::ROOT, b"x").unwrap().whiteout);
        let x = t.insert(UNodeId::ROOT, b"x", D, 6).unwrap();
        assert!(t.set_opaque(x, true));
        let e = t.lookup(UNodeId::ROOT, b"x").unwrap();
        assert!(!e.whiteout && e.opaque && e.is_dir());
        assert!(
            !t.clear_whiteout(UNodeId::ROOT, b"x"),
            "a real entry is not a whiteout"
        );
        t.insert(x, b"inner", F, 7).unwrap();
        t.set_whiteout(UNodeId::ROOT, b"x", F, 8).unwrap();
        assert_eq!(t.len(), 2, "the subtree went with the entry");
        assert!(t.clear_whiteout(UNodeId::ROOT, b"x"));
        assert!(t.lookup(UNodeId::ROOT, b"x").is_none());
        assert!(t.is_empty());
    }

    #[test]
    fn remove_takes_the_subtree_and_ids_are_reused() {
        let mut t = UpperTree::new(1);
        let a = t.insert(UNodeId::ROOT, b"a", D, 2).unwrap();
        let b = t.insert(a, b"b", D, 3).unwrap();
        t.insert(b, b"c", F, 4).unwrap();
        t.insert(UNodeId::ROOT, b"z", F, 5).unwrap();
        assert!(t.remove(UNodeId::ROOT, b"a"));
        assert!(!t.remove(UNodeId::ROOT, b"a"));
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(b), None);
        assert_eq!(t.path(b), None);
        let n = t.insert(UNodeId::ROOT, b"n", F, 6).unwrap();
        assert!(n.0 <= 3, "a freed id is reused");
        assert_eq!(names(&t, UNodeId::ROOT), ["n", "z"]);
    }

    #[test]
    fn rename_moves_subtrees_and_keeps_ids() {
        let mut t = UpperTree::new(1);
        let a = t.insert(UNodeId::ROOT, b"a", D, 2).unwrap();
        let f = t.insert(a, b"f", F, 3).unwrap();
        let d = t.insert(UNodeId::ROOT, b"d", D, 4).unwrap();
        t.insert(d, b"old", F, 5).unwrap();
        t.insert(UNodeId::ROOT, b"victim", D, 6).unwrap();
        assert_eq!(t.rename(UNodeId::ROOT, b"a", d, b"a2"), Some(a));
        assert_eq!(
            t.path(f).unwrap(),
            [b"d".to_vec(), b"a2".to_vec(), b"f".to_vec()]
        );
        assert_eq!(t.rename(d, b"a2", UNodeId::ROOT, b"victim"), Some(a));
        assert_eq!(names(&t, UNodeId::ROOT), ["d", "victim"]);
        assert_eq!(t.lookup(UNodeId::ROOT, b"victim").unwrap().ino, 2);
        assert_eq!(
            t.rename(UNodeId::ROOT, b"victim", a, b"x"),
            None,
            "into itself"
        );
        assert_eq!(t.rename(UNodeId::ROOT, b"d", a, b"x"), Some(d));
        assert_eq!(t.rename(a, b"x", d, b"y"), None, "into its own child");
        assert_eq!(t.rename(UNodeId::ROOT, b"nope", a, b"x"), None);
        assert_eq!(
            t.rename(UNodeId::ROOT, b"victim", UNodeId::ROOT, b"victim"),
            Some(a)
        );
        assert_eq!(
            t.rename(d, b"old", UNodeId::ROOT, b"victim"),
            None,
            "over its own ancestor"
        );
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn exchange_swaps_names() {
        let mut t = UpperTree::new(1);
        let a = t.insert(UNodeId::ROOT, b"a", D, 2).unwrap();
        let b = t.insert(UNodeId::ROOT, b"b", F, 3).unwrap();
        let c = t.insert(a, b"c", F, 4).unwrap();
        assert!(t.exchange(UNodeId::ROOT, b"a", UNodeId::ROOT, b"b"));
        assert_eq!(t.lookup(UNodeId::ROOT, b"a").unwrap().node, b);
        assert_eq!(t.lookup(UNodeId::ROOT, b"b").unwrap().node, a);
        assert_eq!(t.path(c).unwrap(), [b"b".to_vec(), b"c".to_vec()]);
        assert!(t.exchange(UNodeId::ROOT, b"a", a, b"c"));
        assert_eq!(t.path(b).unwrap(), [b"b".to_vec(), b"c".to_vec()]);
        assert!(
            !t.exchange(UNodeId::ROOT, b"b", a, b"c"),
            "a directory into itself"
        );
        assert!(!t.exchange(UNodeId::ROOT, b"nope", UNodeId::ROOT, b"b"));
        assert_eq!(t.len(), 4);
    }
}
