//! The inode table of a writable mount: where each inode the kernel holds is.
//!
//! Owns, for every inode number the kernel has a reference to, the names it
//! was last found under (parent inode + name; several for hard links) and the
//! kernel's lookup count, so that a request naming an inode can be turned into
//! a path, and numbers of upper-only objects stay theirs for as long as they
//! exist (across `FORGET`). Does not
//! own what a path resolves to (`mod.rs`).

use std::collections::HashMap;

use crate::inode::ROOT;

/// Numbers allocated here have this bit set, so they never collide with the
/// numbers derived from layer entries (`(layer + 1) << 32 | entry`).
const ALLOCATED: u64 = 1 << 63;

#[derive(Debug, Default)]
struct Node {
    /// Where the object was found, most recent first.
    locs: Vec<(u64, Vec<u8>)>,
    nlookup: u64,
    /// `st_ino` of its upper object, once it has one.
    upper: Option<u64>,
}

/// See the module docs.
#[derive(Debug)]
pub(super) struct Nodes {
    map: HashMap<u64, Node>,
    /// Upper `st_ino` → inode number, for objects the kernel holds.
    by_upper: HashMap<u64, u64>,
    next: u64,
}

impl Nodes {
    pub(super) fn new() -> Nodes {
        Nodes {
            map: HashMap::new(),
            by_upper: HashMap::new(),
            next: 1,
        }
    }

    /// The number for an object found at `parent`/`name`: the one it already
    /// has (by its upper `st_ino`), else `fixed` (derived from its lower
    /// origin), else a new one. Counts one kernel reference.
    pub(super) fn enter(
        &mut self,
        parent: u64,
        name: &[u8],
        fixed: Option<u64>,
        upper: Option<u64>,
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
        let node = self.map.entry(ino).or_default();
        node.nlookup += 1;
        match node
            .locs
            .iter()
            .position(|(p, n)| *p == parent && n == name)
        {
            Some(0) => {}
            Some(i) => {
                let l = node.locs.remove(i);
                node.locs.insert(0, l);
            }
            None => node.locs.insert(0, (parent, name.to_vec())),
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

    /// Returns true if and only if the kernel holds a reference to `ino`.
    pub(super) fn is_held(&self, ino: u64) -> bool {
        ino == ROOT || self.map.get(&ino).is_some_and(|n| n.nlookup > 0)
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
            None => false,
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

    /// The path of `ino`, from its most recent location; `None` for a number
    /// the kernel no longer holds, or an object that has no name any more.
    pub(super) fn path(&self, ino: u64) -> Option<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let mut cur = ino;
        while cur != ROOT {
            let (parent, name) = self.map.get(&cur)?.locs.first()?;
            out.push(name.clone());
            cur = *parent;
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
        self.map.get(&ino)?.locs.first().map(|l| l.0)
    }

    /// The name `parent`/`name` no longer leads to `ino` (unlink, or renamed over).
    /// With `upper_gone`, its upper object has no name left: its `st_ino` may be
    /// reused by a new file, which must not get this number.
    pub(super) fn unlink(&mut self, ino: u64, parent: u64, name: &[u8], upper_gone: bool) {
        if let Some(node) = self.map.get_mut(&ino) {
            node.locs.retain(|(p, n)| !(*p == parent && n == name));
            if upper_gone {
                if let Some(u) = node.upper.take() {
                    if self.by_upper.get(&u) == Some(&ino) {
                        self.by_upper.remove(&u);
                    }
                }
            }
        }
    }

    /// `ino` moved from `from` to `to`.
    pub(super) fn rename(&mut self, ino: u64, from: (u64, &[u8]), to: (u64, &[u8])) {
        if let Some(node) = self.map.get_mut(&ino) {
            node.locs.retain(|(p, n)| !(*p == from.0 && n == from.1));
            node.locs.retain(|(p, n)| !(*p == to.0 && n == to.1));
            node.locs.insert(0, (to.0, to.1.to_vec()));
        }
    }

    /// `ino` now has an upper object with `st_ino` `upper` (after a copy-up).
    pub(super) fn set_upper(&mut self, ino: u64, upper: u64) {
        if let Some(node) = self.map.get_mut(&ino) {
            node.upper = Some(upper);
            self.by_upper.insert(upper, ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_paths_and_forget() {
        let mut n = Nodes::new();
        let d = n.enter(ROOT, b"d", Some(0x1_0000_0002), None);
        assert_eq!(d, 0x1_0000_0002);
        let f = n.enter(d, b"f", None, Some(77));
        assert!(f & ALLOCATED != 0);
        assert_eq!(n.path(f).unwrap(), vec![b"d".to_vec(), b"f".to_vec()]);
        // A hard link: same upper st_ino, same number, two names.
        assert_eq!(n.enter(ROOT, b"g", None, Some(77)), f);
        assert_eq!(n.path(f).unwrap(), vec![b"g".to_vec()]);
        n.unlink(f, ROOT, b"g", false);
        assert_eq!(n.path(f).unwrap(), vec![b"d".to_vec(), b"f".to_vec()]);
        n.rename(d, (ROOT, b"d"), (ROOT, b"e"));
        assert_eq!(n.path(f).unwrap(), vec![b"e".to_vec(), b"f".to_vec()]);
        n.forget(f, 2);
        assert!(n.path(f).is_none());
        // Forgotten, the object (still there) comes back under its number.
        let f2 = n.enter(d, b"f", None, Some(77));
        assert_eq!(f2, f);
        // Its last name removed, the st_ino is free: a new object gets a
        // new number.
        n.unlink(f2, d, b"f", true);
        n.forget(f2, 1);
        assert_ne!(n.enter(d, b"h", None, Some(77)), f);
    }

    #[test]
    fn unlinked_upper_inode_is_not_reused() {
        let mut n = Nodes::new();
        let f = n.enter(ROOT, b"f", None, Some(5));
        n.unlink(f, ROOT, b"f", true);
        assert!(n.path(f).is_none());
        let g = n.enter(ROOT, b"g", None, Some(5));
        assert_ne!(f, g);
    }
}
