//! The changes an upper makes to the layers under it (`unionfs diff`, as
//! `docker diff`): one line a path, `A`dded, `C`hanged or `D`eleted.
//!
//! Reads only the upper's namespace (the tree its scan loads) and the layers'
//! indexes — never a file's data, never a walk of the image:
//! - an upper entry whose name the layers show too is `C` (a file copied up
//!   or replaced, a directory copied up because something in it changed, as
//!   docker reports the parents of a change); one they do not show is `A`;
//! - a whiteout of a name the layers show is `D`;
//! - an opaque directory replaces the lower one: every lower name in it the
//!   upper does not have again is `D` (and one it has again is `C`), and the
//!   same comparison goes on below it.
//!
//! Paths are absolute (`/etc/passwd`), depth first, sorted by name in each
//! directory. A whiteout or an opaque marker that hides nothing is no change.

use crate::stack::{Merged, Stack};
use crate::upper::tree::{UNodeId, UpperTree};

/// What happened to a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Kind {
    /// Not in the layers, in the upper.
    #[serde(rename = "A")]
    Added,
    /// In both (the upper's wins).
    #[serde(rename = "C")]
    Changed,
    /// In the layers, deleted by the upper.
    #[serde(rename = "D")]
    Deleted,
}

impl Kind {
    /// `A`, `C` or `D`.
    pub fn letter(self) -> char {
        match self {
            Kind::Added => 'A',
            Kind::Changed => 'C',
            Kind::Deleted => 'D',
        }
    }
}

/// One change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// What happened.
    pub kind: Kind,
    /// The path, absolute, as bytes.
    pub path: Vec<u8>,
}

/// The changes `tree` (an upper's namespace) makes to `stack`.
pub fn changes(tree: &UpperTree, stack: &Stack) -> Vec<Change> {
    let mut out = Vec::new();
    walk(
        tree,
        stack,
        UNodeId::ROOT,
        b"",
        Some(&stack.root()),
        false,
        &mut out,
    );
    out
}

/// Directory `node` at `rel`, over the lower directory `old` (what the layers
/// show at that path, if a directory). `replaced`: the upper directory does
/// not merge with `old` (it, or a parent, is opaque): lower names it lacks
/// are deleted.
fn walk(
    tree: &UpperTree,
    stack: &Stack,
    node: UNodeId,
    rel: &[u8],
    old: Option<&Merged>,
    replaced: bool,
    out: &mut Vec<Change>,
) {
    // (name, change, descend into: (node, old child, replaced))
    type Sub = Option<(UNodeId, Option<Merged>, bool)>;
    let mut here: Vec<(Vec<u8>, Kind, Sub)> = Vec::new();
    for (name, e) in tree.children(node) {
        let below = old.and_then(|m| stack.lookup(m, name));
        if e.whiteout {
            if below.is_some() {
                here.push((name.to_vec(), Kind::Deleted, None));
            }
            continue;
        }
        let kind = if below.is_some() {
            Kind::Changed
        } else {
            Kind::Added
        };
        let sub = e
            .is_dir()
            .then(|| (e.node, below.filter(Merged::is_dir), replaced || e.opaque));
        here.push((name.to_vec(), kind, sub));
    }
    if replaced {
        if let Some(m) = old {
            for d in stack.read_dir(m) {
                let name = stack.name(d.entry);
                // A name the upper has again was listed above; one it
                // whites out too, if it hid something.
                if tree.lookup(node, name).is_none() {
                    here.push((name.to_vec(), Kind::Deleted, None));
                }
            }
        }
    }
    here.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, kind, sub) in here {
        let path = [rel, b"/", &name].concat();
        out.push(Change {
            kind,
            path: path.clone(),
        });
        if let Some((n, low, rep)) = sub {
            walk(tree, stack, n, &path, low.as_ref(), rep, out);
        }
    }
}
