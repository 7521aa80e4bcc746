//! `LayerIndex`: one layer tar as a tree of fixed-size records, ready to serve.
//!
//! Owns the in-memory (and, byte for byte, on-disk) form of a layer: entries in
//! breadth-first order so that every directory's children are one contiguous run
//! sorted by name, a names blob, an "extra" blob (symlink targets, device numbers,
//! xattrs, sparse maps) and the archive's [`Member`] segments for reassembly.
//! It applies the tar-extraction rules that make a path list a tree (normalised
//! names, later duplicates win, implicit parents, hard links); it records whiteout
//! markers but does not interpret them across layers (that is `stack/`).
//!
//! Rules chosen here (the README's "Semantics" section repeats them):
//! - Names are bytes. A leading `/` or `./` is dropped, `.` and empty components are
//!   dropped; a name with a `..` component is dropped with a warning (GNU tar skips
//!   such members; nothing ever escapes the layer root), and so is one with a
//!   component longer than [`NAME_MAX`] (no Linux file can have that name).
//! - A later entry for the same path replaces the earlier one, subtree included,
//!   except that a directory over a directory only updates metadata (docker's
//!   `UnpackLayer` rule). A directory that replaces a non-directory also hides
//!   the lower layers' entry ([`F_HIDES_LOWER`]): docker extracts onto the layers
//!   below, so its `RemoveAll` of the old entry removed theirs too.
//! - A parent that is missing becomes an implicit directory (0755, root, mtime 0);
//!   a parent that exists but is not a directory (e.g. a symlink `lnk -> /etc`
//!   followed by `lnk/passwd`) makes the child be dropped with a warning: symlinks
//!   in a layer are never followed.
//! - A hard link names an earlier entry of the same layer and shares its inode
//!   (metadata and data); one to a missing entry or to a directory is dropped with
//!   a warning.
//! - `.wh.NAME` is recorded as a whiteout entry named NAME (kind [`KIND_WHITEOUT`]);
//!   when the same layer also has NAME itself, NAME stays visible and is flagged
//!   [`F_HIDES_LOWER`] (OCI: a whiteout applies only to lower layers).
//!   `.wh..wh..opq` flags its directory [`F_OPAQUE`]; other `.wh..wh.*` names (aufs
//!   bookkeeping) are ignored.

use std::collections::HashMap;

use super::scan::{Kind, Member, RawEntry, Scan};
use crate::whiteout::{self, Class};

/// `mode & S_IFMT` value used for whiteout entries (no real file type).
pub const KIND_WHITEOUT: u32 = 0;

/// The directory is opaque: lower layers' same-named directories are not merged.
pub const F_OPAQUE: u16 = 1 << 0;
/// A whiteout for this name exists in the same layer: hide lower layers' entries.
pub const F_HIDES_LOWER: u16 = 1 << 1;
/// Not in the archive: made for a missing parent.
pub const F_IMPLICIT: u16 = 1 << 2;
/// Has extended attributes in the extra blob.
pub const F_XATTRS: u16 = 1 << 3;
/// Is a sparse file (map in the extra blob).
pub const F_SPARSE: u16 = 1 << 4;
/// A hard link: `link` field holds the entry it shares an inode with.
pub const F_HARDLINK: u16 = 1 << 5;
/// Not reachable by name any more (replaced), kept as a hard link's data source.
pub const F_DETACHED: u16 = 1 << 6;

/// "No index" marker for u32 fields.
pub const NONE: u32 = u32::MAX;

/// Index of an entry within one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId(pub u32);

impl EntryId {
    /// The layer's root directory.
    pub const ROOT: EntryId = EntryId(0);
}

/// One entry, fixed size, stored as is on disk.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct EntryRec {
    /// Logical size: file bytes; symlink target length; 0 otherwise.
    pub size: u64,
    /// Absolute tar offset of the file data.
    pub data_off: u64,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
    /// `st_mode`: type bits and permissions (0 for whiteouts).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Parent directory (the root is its own parent).
    pub parent: u32,
    /// Offset of the name in the names blob.
    pub name_off: u32,
    /// Directories: first child. Hard links: the entry they share an inode with.
    pub link: u32,
    /// Directories: number of children. Others: link count.
    pub count: u32,
    /// Offset into the extra blob, or [`NONE`].
    pub extra: u32,
    /// Member index of the main header, or [`NONE`] for implicit entries.
    pub member: u32,
    /// Name length in bytes.
    pub name_len: u16,
    /// `F_*` flags.
    pub flags: u16,
    /// Padding, always 0.
    pub _pad: u32,
}

impl EntryRec {
    /// `mode & S_IFMT`.
    pub fn kind(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
    /// Returns true if and only if this is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind() == libc::S_IFDIR
    }
    /// Returns true if and only if this is a whiteout entry (not a real object).
    pub fn is_whiteout(&self) -> bool {
        self.mode == KIND_WHITEOUT
    }
    /// Returns true if and only if flag `f` is set.
    pub fn has(&self, f: u16) -> bool {
        self.flags & f != 0
    }
}

/// A layer's index. See the module docs for the layout and the rules.
#[derive(Clone, Debug, Default)]
pub struct LayerIndex {
    /// Entries; `[0]` is the root; children of a directory are contiguous and sorted.
    pub entries: Vec<EntryRec>,
    /// Entry names, back to back.
    pub names: Vec<u8>,
    /// Variable-size data referenced by `EntryRec::extra`.
    pub extra: Vec<u8>,
    /// The archive's header blocks and payloads, in order.
    pub members: Vec<Member>,
    /// Where the end-of-archive blocks start.
    pub end_off: u64,
    /// Size of the tar file.
    pub tar_size: u64,
    /// Entries dropped while indexing (bad names, dangling links...).
    pub dropped: u32,
    /// What was dropped or odd, in words (at most [`MAX_WARNINGS`]).
    pub warnings: Vec<String>,
}

/// How many warning texts an index keeps.
pub const MAX_WARNINGS: usize = 100;

/// Extra data of one entry, decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extra<'a> {
    /// Symlink target.
    pub link: &'a [u8],
    /// Device (major, minor).
    pub rdev: (u32, u32),
    /// Extended attributes.
    pub xattrs: Vec<(&'a [u8], &'a [u8])>,
    /// Sparse data chunks (offset, length).
    pub sparse: Vec<(u64, u64)>,
}

impl LayerIndex {
    /// The record of `id`.
    pub fn entry(&self, id: EntryId) -> &EntryRec {
        &self.entries[id.0 as usize]
    }

    /// The name of `id` (empty for the root).
    pub fn name(&self, id: EntryId) -> &[u8] {
        let e = self.entry(id);
        let start = e.name_off as usize;
        &self.names[start..start + e.name_len as usize]
    }

    /// The children of directory `dir`, sorted by name (whiteout entries included).
    pub fn children(&self, dir: EntryId) -> std::ops::Range<u32> {
        let e = self.entry(dir);
        if e.is_dir() {
            e.link..e.link + e.count
        } else {
            0..0
        }
    }

    /// Finds child `name` of `dir` (binary search; whiteout entries included).
    pub fn child(&self, dir: EntryId, name: &[u8]) -> Option<EntryId> {
        let r = self.children(dir);
        let slice = &self.entries[r.start as usize..r.end as usize];
        slice
            .binary_search_by(|e| {
                let s = e.name_off as usize;
                self.names[s..s + e.name_len as usize].cmp(name)
            })
            .ok()
            .map(|i| EntryId(r.start + i as u32))
    }

    /// Resolves a slash-separated path from the root (no symlinks followed).
    pub fn lookup_path(&self, path: &[u8]) -> Option<EntryId> {
        let mut cur = EntryId::ROOT;
        for c in path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
        {
            cur = self.child(cur, c)?;
            if self.entry(cur).is_whiteout() {
                return None;
            }
        }
        Some(cur)
    }

    /// The entry that holds the inode of `id`: itself, or a hard link's target.
    pub fn inode_of(&self, id: EntryId) -> EntryId {
        let e = self.entry(id);
        if e.has(F_HARDLINK) {
            EntryId(e.link)
        } else {
            id
        }
    }

    /// The full path of `id` from the layer root, without a leading slash.
    pub fn path_of(&self, id: EntryId) -> Vec<u8> {
        let mut parts = Vec::new();
        let mut cur = id;
        while cur != EntryId::ROOT {
            parts.push(self.name(cur));
            cur = EntryId(self.entry(cur).parent);
            if parts.len() > self.entries.len() {
                break; // corrupt parent chain; validated indexes never get here
            }
        }
        parts.reverse();
        parts.join(&b'/')
    }

    /// Decodes the extra data of `id` (metadata of a hard link comes from its target).
    pub fn extra(&self, id: EntryId) -> Extra<'_> {
        let e = self.entry(id);
        let mut x = Extra::default();
        if e.extra == NONE {
            return x;
        }
        let mut r = Cursor {
            b: &self.extra,
            at: e.extra as usize,
        };
        let kind = e.kind();
        if kind == libc::S_IFLNK {
            let n = r.u32() as usize;
            x.link = r.take(n);
        }
        if kind == libc::S_IFCHR || kind == libc::S_IFBLK {
            x.rdev = (r.u32(), r.u32());
        }
        if e.has(F_XATTRS) {
            for _ in 0..r.u32() {
                let kn = r.u32() as usize;
                let k = r.take(kn);
                let vn = r.u32() as usize;
                x.xattrs.push((k, r.take(vn)));
            }
        }
        if e.has(F_SPARSE) {
            for _ in 0..r.u32() {
                x.sparse.push((r.u64(), r.u64()));
            }
        }
        x
    }
}

/// Reads little-endian values from the extra blob; out-of-range reads yield zeros
/// (a validated index never does that).
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let s = self.at.min(self.b.len());
        let e = self.at.saturating_add(n).min(self.b.len());
        self.at = self.at.saturating_add(n);
        &self.b[s..e]
    }
    fn u32(&mut self) -> u32 {
        let mut a = [0u8; 4];
        let t = self.take(4);
        a[..t.len()].copy_from_slice(t);
        u32::from_le_bytes(a)
    }
    fn u64(&mut self) -> u64 {
        let mut a = [0u8; 8];
        let t = self.take(8);
        a[..t.len()].copy_from_slice(t);
        u64::from_le_bytes(a)
    }
}

// ---------------------------------------------------------------------------
// Building

/// A node while the tree is being built.
struct Node {
    raw: RawEntry,
    name: Vec<u8>,
    parent: u32,
    /// Children by name (real entries and whiteouts).
    children: HashMap<Vec<u8>, u32>,
    flags: u16,
    /// For hard links: the node holding the inode.
    target: Option<u32>,
    whiteout: bool,
    live: bool,
}

impl Node {
    fn is_dir(&self) -> bool {
        !self.whiteout && self.raw.kind == Some(Kind::Dir)
    }
}

/// Builds the index of a scanned tar. `tar_size` is the file's length.
pub fn build(scan: Scan, tar_size: u64) -> LayerIndex {
    let mut b = Builder {
        nodes: vec![Node {
            raw: RawEntry {
                kind: Some(Kind::Dir),
                mode: 0o755,
                member: NONE,
                ..RawEntry::default()
            },
            name: Vec::new(),
            parent: 0,
            children: HashMap::new(),
            flags: F_IMPLICIT,
            target: None,
            whiteout: false,
            live: true,
        }],
        dropped: 0,
        warnings: scan.warnings,
    };
    for raw in scan.entries {
        b.add(raw);
    }
    let mut idx = b.finish();
    idx.members = scan.members;
    idx.end_off = scan.end_off;
    idx.tar_size = tar_size;
    idx
}

struct Builder {
    nodes: Vec<Node>,
    dropped: u32,
    warnings: Vec<String>,
}

/// Longest name component Linux can represent (`NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// Splits a raw tar name into normalised components, or says why it is refused.
pub fn normalize(path: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("name has a '..' component"),
            c if c.len() > NAME_MAX => return Err("name has a component longer than 255 bytes"),
            c => out.push(c),
        }
    }
    Ok(out)
}

impl Builder {
    fn drop_entry(&mut self, raw: &RawEntry, why: &str) {
        self.dropped += 1;
        let msg = format!(
            "offset {}: {:?}: {why}; entry dropped",
            raw.offset,
            String::from_utf8_lossy(&raw.path)
        );
        log::warn!(target: "unionfs::tar", "{msg}");
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(msg);
        }
    }

    fn add(&mut self, raw: RawEntry) {
        let comps = match normalize(&raw.path) {
            Ok(c) => c.into_iter().map(<[u8]>::to_vec).collect::<Vec<_>>(),
            Err(why) => return self.drop_entry(&raw, why),
        };
        let Some((leaf, dirs)) = comps.split_last() else {
            // The root itself ("./" or "/").
            if raw.kind == Some(Kind::Dir) {
                self.set_meta(0, raw);
            } else {
                self.drop_entry(&raw, "names the layer root but is not a directory");
            }
            return;
        };
        if dirs.iter().any(|d| whiteout::is_reserved(d)) {
            return self.drop_entry(&raw, "a parent directory has a whiteout name");
        }
        let parent = match self.ensure_dirs(dirs) {
            Ok(p) => p,
            Err(why) => return self.drop_entry(&raw, &why),
        };
        match whiteout::classify(leaf) {
            Class::Plain => {}
            Class::Opaque => {
                self.nodes[parent as usize].flags |= F_OPAQUE;
                return;
            }
            Class::Meta => return,
            Class::Empty => return self.drop_entry(&raw, "whiteout of an empty name"),
            Class::Whiteout(target) => return self.add_whiteout(parent, target.to_vec(), raw),
        }
        if raw.kind == Some(Kind::HardLink) {
            return self.add_hardlink(parent, leaf.clone(), raw);
        }
        self.put(parent, leaf.clone(), raw, None);
    }

    /// Walks/creates the parent directories; returns the last one.
    fn ensure_dirs(&mut self, dirs: &[Vec<u8>]) -> Result<u32, String> {
        let mut cur = 0u32;
        for d in dirs {
            let existing = self.nodes[cur as usize].children.get(d).copied();
            cur = match existing {
                Some(c) if self.nodes[c as usize].is_dir() => c,
                Some(c) if self.nodes[c as usize].whiteout => {
                    // `.wh.d` then `d/x` in one layer: d is a real (implicit) dir that
                    // still hides the lower layers' d.
                    let n = self.new_node(cur, d.clone(), implicit_dir(), F_IMPLICIT);
                    self.nodes[n as usize].flags |= F_HIDES_LOWER;
                    self.nodes[c as usize].live = false;
                    self.link_child(cur, d.clone(), n);
                    n
                }
                Some(c) => {
                    return Err(format!(
                        "parent {:?} is a {}, not a directory",
                        String::from_utf8_lossy(d),
                        kind_word(&self.nodes[c as usize])
                    ))
                }
                None => {
                    let n = self.new_node(cur, d.clone(), implicit_dir(), F_IMPLICIT);
                    self.link_child(cur, d.clone(), n);
                    n
                }
            };
        }
        Ok(cur)
    }

    fn new_node(&mut self, parent: u32, name: Vec<u8>, raw: RawEntry, flags: u16) -> u32 {
        self.nodes.push(Node {
            raw,
            name,
            parent,
            children: HashMap::new(),
            flags,
            target: None,
            whiteout: false,
            live: true,
        });
        (self.nodes.len() - 1) as u32
    }

    fn link_child(&mut self, parent: u32, name: Vec<u8>, child: u32) {
        self.nodes[parent as usize].children.insert(name, child);
    }

    fn set_meta(&mut self, n: u32, raw: RawEntry) {
        let node = &mut self.nodes[n as usize];
        node.raw = raw;
        node.flags &= !F_IMPLICIT;
    }

    /// Places a real entry at parent/name, replacing what was there.
    fn put(&mut self, parent: u32, name: Vec<u8>, raw: RawEntry, target: Option<u32>) {
        let mut flags = 0;
        if let Some(old) = self.nodes[parent as usize].children.get(&name).copied() {
            let o = &self.nodes[old as usize];
            if o.whiteout {
                flags |= F_HIDES_LOWER;
            } else {
                flags |= o.flags & F_HIDES_LOWER;
                if o.is_dir() && raw.kind == Some(Kind::Dir) {
                    // Directory over directory: metadata only, children stay.
                    let keep = o.flags & (F_OPAQUE | F_HIDES_LOWER);
                    self.set_meta(old, raw);
                    self.nodes[old as usize].flags |= keep;
                    return;
                }
                // Any other replacement: docker extracts onto the tree of the
                // layers below, where removing the old entry (`RemoveAll`) also
                // removed what those layers had at this path. (Only a directory
                // can merge with them, so only a directory needs the flag.)
                if raw.kind == Some(Kind::Dir) {
                    flags |= F_HIDES_LOWER;
                }
            }
            self.detach(old);
        }
        let n = self.new_node(parent, name.clone(), raw, flags);
        self.nodes[n as usize].target = target;
        self.link_child(parent, name, n);
    }

    /// Takes a node (and its subtree) out of the tree.
    fn detach(&mut self, n: u32) {
        let mut stack = vec![n];
        while let Some(x) = stack.pop() {
            let node = &mut self.nodes[x as usize];
            node.live = false;
            stack.extend(node.children.drain().map(|(_, c)| c));
        }
    }

    fn add_whiteout(&mut self, parent: u32, target: Vec<u8>, raw: RawEntry) {
        if let Some(old) = self.nodes[parent as usize].children.get(&target).copied() {
            // Same layer has the name: it stays, and hides the lower layers' one.
            self.nodes[old as usize].flags |= F_HIDES_LOWER;
            return;
        }
        let n = self.new_node(parent, target.clone(), raw, 0);
        self.nodes[n as usize].whiteout = true;
        self.link_child(parent, target, n);
    }

    fn add_hardlink(&mut self, parent: u32, name: Vec<u8>, raw: RawEntry) {
        let found = match normalize(&raw.link) {
            Ok(comps) => self.find(&comps),
            Err(_) => None,
        };
        let Some(t) = found else {
            let why = format!(
                "hard link to {:?}, which is not an earlier entry of this layer",
                String::from_utf8_lossy(&raw.link)
            );
            return self.drop_entry(&raw, &why);
        };
        if self.nodes[t as usize].is_dir() {
            return self.drop_entry(&raw, "hard link to a directory");
        }
        let t = self.nodes[t as usize].target.unwrap_or(t);
        if let Some(old) = self.nodes[parent as usize].children.get(&name).copied() {
            let o = &self.nodes[old as usize];
            if old == t || o.target == Some(t) {
                return; // a link to itself: already the same inode
            }
        }
        self.put(parent, name, raw, Some(t));
    }

    fn find(&self, comps: &[&[u8]]) -> Option<u32> {
        let mut cur = 0u32;
        for c in comps {
            cur = *self.nodes[cur as usize].children.get(*c)?;
            if self.nodes[cur as usize].whiteout {
                return None;
            }
        }
        Some(cur)
    }

    /// Lays the tree out breadth-first and encodes the records.
    fn finish(self) -> LayerIndex {
        let nodes = self.nodes;
        // BFS order: each directory's children contiguous and sorted by name.
        let mut order: Vec<u32> = vec![0];
        let mut first_child: Vec<(u32, u32)> = vec![(0, 0); nodes.len()];
        let mut i = 0;
        while i < order.len() {
            let n = order[i] as usize;
            if nodes[n].is_dir() {
                let mut kids: Vec<(&Vec<u8>, u32)> =
                    nodes[n].children.iter().map(|(k, &v)| (k, v)).collect();
                kids.sort_unstable();
                first_child[n] = (order.len() as u32, kids.len() as u32);
                order.extend(kids.into_iter().map(|(_, v)| v));
            }
            i += 1;
        }
        // Detached nodes that hard links still use keep a record (not in any dir).
        let mut new_id = vec![NONE; nodes.len()];
        for (pos, &n) in order.iter().enumerate() {
            new_id[n as usize] = pos as u32;
        }
        for i in 0..order.len() {
            if let Some(t) = nodes[order[i] as usize].target {
                if new_id[t as usize] == NONE {
                    new_id[t as usize] = order.len() as u32;
                    order.push(t);
                }
            }
        }
        // Link counts: one per live name of the inode.
        let mut nlink = vec![0u32; nodes.len()];
        for &n in &order {
            let node = &nodes[n as usize];
            let is_named = n == 0 || node.live;
            if is_named && !node.whiteout {
                nlink[node.target.unwrap_or(n) as usize] += 1;
            }
        }
        let mut idx = LayerIndex {
            dropped: self.dropped,
            warnings: self.warnings,
            ..LayerIndex::default()
        };
        idx.entries.reserve_exact(order.len());
        for &n in &order {
            let node = &nodes[n as usize];
            // A detached hard-link target may sit in a directory that was itself
            // replaced and has no record: hang it under the root (it has no name
            // there; only its hard links reach it).
            let parent = match new_id[node.parent as usize] {
                NONE => 0,
                p => p,
            };
            let rec = encode(
                &mut idx,
                node,
                n,
                parent,
                first_child[n as usize],
                node.target.map(|t| new_id[t as usize]),
                nlink[n as usize],
            );
            idx.entries.push(rec);
        }
        // A hard link's record reports its inode's type (for readdir's d_type).
        for i in 0..idx.entries.len() {
            let e = idx.entries[i];
            if e.has(F_HARDLINK) {
                idx.entries[i].mode = idx.entries[e.link as usize].mode;
            }
        }
        idx
    }
}

fn implicit_dir() -> RawEntry {
    RawEntry {
        kind: Some(Kind::Dir),
        mode: 0o755,
        member: NONE,
        ..RawEntry::default()
    }
}

fn kind_word(n: &Node) -> &'static str {
    match n.raw.kind {
        Some(Kind::Symlink) => "symlink",
        Some(Kind::Dir) => "directory",
        Some(Kind::Char) | Some(Kind::Block) => "device",
        Some(Kind::Fifo) => "fifo",
        _ => "file",
    }
}

fn mode_bits(kind: Kind) -> u32 {
    match kind {
        Kind::File | Kind::HardLink => libc::S_IFREG,
        Kind::Dir => libc::S_IFDIR,
        Kind::Symlink => libc::S_IFLNK,
        Kind::Char => libc::S_IFCHR,
        Kind::Block => libc::S_IFBLK,
        Kind::Fifo => libc::S_IFIFO,
    }
}

fn put_u32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}

/// Encodes one node into a record, appending its name and extra data.
fn encode(
    idx: &mut LayerIndex,
    node: &Node,
    n: u32,
    parent: u32,
    (first, count): (u32, u32),
    target: Option<u32>,
    nlink: u32,
) -> EntryRec {
    let raw = &node.raw;
    let kind = raw.kind.unwrap_or(Kind::File);
    let mut rec = EntryRec {
        size: raw.size,
        data_off: raw.data_off,
        mtime: raw.mtime,
        mtime_nsec: raw.mtime_nsec,
        mode: match kind {
            _ if node.whiteout => KIND_WHITEOUT,
            // Linux symlinks have no permissions of their own: lstat shows 0777.
            Kind::Symlink => libc::S_IFLNK | 0o777,
            _ => mode_bits(kind) | raw.mode,
        },
        uid: raw.uid,
        gid: raw.gid,
        parent: if n == 0 { 0 } else { parent },
        name_off: idx.names.len() as u32,
        name_len: node.name.len().min(u16::MAX as usize) as u16,
        link: NONE,
        count: nlink,
        extra: NONE,
        member: raw.member,
        flags: node.flags,
        _pad: 0,
    };
    idx.names
        .extend_from_slice(&node.name[..rec.name_len as usize]);
    if !node.live && n != 0 {
        rec.flags |= F_DETACHED;
    }
    if node.whiteout {
        rec.size = 0;
        return rec;
    }
    if let Some(t) = target {
        // Hard link: the inode (kind, metadata, data) is the target's; the record
        // keeps only its own name, parent and member.
        rec.flags |= F_HARDLINK;
        rec.link = t;
        return rec;
    }
    if kind == Kind::Dir {
        rec.link = first;
        rec.count = count;
        rec.size = 0;
    }
    let has_xattrs = !raw.xattrs.is_empty();
    let sparse = raw.sparse.as_ref().filter(|_| kind == Kind::File);
    let needs_extra =
        matches!(kind, Kind::Symlink | Kind::Char | Kind::Block) || has_xattrs || sparse.is_some();
    if needs_extra {
        rec.extra = idx.extra.len() as u32;
        let x = &mut idx.extra;
        if kind == Kind::Symlink {
            put_u32(x, raw.link.len() as u32);
            x.extend_from_slice(&raw.link);
            rec.size = raw.link.len() as u64;
        }
        if matches!(kind, Kind::Char | Kind::Block) {
            put_u32(x, raw.rdev.0);
            put_u32(x, raw.rdev.1);
        }
        if has_xattrs {
            rec.flags |= F_XATTRS;
            put_u32(x, raw.xattrs.len() as u32);
            for (k, v) in &raw.xattrs {
                put_u32(x, k.len() as u32);
                x.extend_from_slice(k);
                put_u32(x, v.len() as u32);
                x.extend_from_slice(v);
            }
        }
        if let Some(map) = sparse {
            rec.flags |= F_SPARSE;
            put_u32(x, map.len() as u32);
            for &(o, l) in map {
                x.extend_from_slice(&o.to_le_bytes());
                x.extend_from_slice(&l.to_le_bytes());
            }
        }
    }
    if !matches!(kind, Kind::File | Kind::Symlink) {
        rec.data_off = 0;
    }
    rec
}
