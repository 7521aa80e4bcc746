//! Turning a stream of tar entries into a [`LayerIndex`], in bounded memory.
//!
//! Entries arrive one at a time from the scanner and are applied with the rules
//! in `index.rs`'s module docs. While building, a node is already nearly its final
//! [`EntryRec`] (names and extra data go straight into the final blobs), and the
//! tree is a single hash map from (parent, hash of name) to node — no per-directory
//! maps, no copies of names — so the peak is about 150 bytes per entry. `finish`
//! lays the nodes out breadth first (each directory's children contiguous and
//! sorted), drops what was replaced, and computes link counts.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault};

use super::index::{
    normalize, EntryRec, LayerIndex, F_DETACHED, F_HARDLINK, F_HIDES_LOWER, F_IMPLICIT, F_OPAQUE,
    F_SPARSE, F_WIDE, F_XATTRS, KIND_WHITEOUT, MAX_WARNINGS, NONE, OWNER_WIDE, W_DATA, W_MTIME,
    W_NLINK, W_NSEC, W_OWNER, W_SIZE,
};
use super::scan::{Kind, Member, RawEntry};
use crate::whiteout::{self, Class};

/// An entry while it is built: every field at full width. `finish` packs
/// it into an [`EntryRec`], with what does not fit as wide fields.
#[derive(Clone, Copy, Debug, Default)]
struct Rec {
    size: u64,
    data_off: u64,
    mtime: i64,
    nsec: u32,
    mode16: u16,
    name_len: u8,
    flags: u8,
    uid: u32,
    gid: u32,
    parent: u32,
    name_off: u32,
    /// Directories: first child; hard links: the target.
    link: u32,
    /// Directories: number of children; others: link count.
    count: u32,
    /// This entry's extra data in the builder's blob: offset ([`NONE`] for
    /// none) and length. `finish` copies it into the index's blob, after the
    /// entry's wide fields.
    extra: u32,
    extra_len: u32,
}

impl Rec {
    fn kind(&self) -> u32 {
        u32::from(self.mode16) & libc::S_IFMT
    }
    fn is_dir(&self) -> bool {
        self.kind() == libc::S_IFDIR
    }
    fn is_whiteout(&self) -> bool {
        u32::from(self.mode16) == KIND_WHITEOUT
    }
}

/// A node being built: the future record plus bookkeeping.
#[derive(Clone, Copy)]
struct Node {
    rec: Rec,
    /// Hard links: the node holding the inode.
    target: u32,
    /// Next node in the same (parent, hash) bucket.
    next: u32,
    /// Still named in the tree (false once replaced).
    live: bool,
}

impl Node {
    fn is_dir(&self) -> bool {
        self.rec.is_dir()
    }
    fn is_whiteout(&self) -> bool {
        self.rec.is_whiteout()
    }
}

type Hasher = BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

/// `(uid_t)-1` / `(gid_t)-1`: the id chown(2) leaves unchanged.
const UNCHANGED_ID: u32 = u32::MAX;

/// Builds a [`LayerIndex`] from entries in archive order.
pub struct Builder {
    nodes: Vec<Node>,
    /// (parent, hash(name)) → first node of the bucket chain.
    map: HashMap<(u32, u64), u32>,
    hasher: Hasher,
    names: Vec<u8>,
    extra: Vec<u8>,
    dropped: u32,
    warnings: Vec<String>,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

fn dir_rec(mode: u32) -> Rec {
    Rec {
        mode16: (libc::S_IFDIR | (mode & 0o7777)) as u16,
        extra: NONE,
        link: NONE,
        ..Rec::default()
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

fn kind_word(rec: &Rec) -> &'static str {
    match rec.kind() {
        libc::S_IFLNK => "symlink",
        libc::S_IFDIR => "directory",
        libc::S_IFCHR | libc::S_IFBLK => "device",
        libc::S_IFIFO => "fifo",
        _ => "file",
    }
}

fn put_u32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}

impl Builder {
    /// A builder holding only the (implicit) root directory.
    pub fn new() -> Builder {
        let mut root = dir_rec(0o755);
        root.flags = F_IMPLICIT;
        Builder {
            nodes: vec![Node {
                rec: root,
                target: NONE,
                next: NONE,
                live: true,
            }],
            map: HashMap::default(),
            hasher: Hasher::default(),
            names: Vec::new(),
            extra: Vec::new(),
            dropped: 0,
            warnings: Vec::new(),
        }
    }

    /// Adds scanner warnings to the index's list.
    pub fn warn_all(&mut self, ws: impl IntoIterator<Item = String>) {
        for w in ws {
            self.note(w);
        }
    }

    fn note(&mut self, msg: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(msg);
        }
    }

    fn drop_entry(&mut self, raw: &RawEntry, why: &str) {
        self.dropped += 1;
        let msg = format!(
            "offset {}: {:?}: {why}; entry dropped",
            raw.offset,
            String::from_utf8_lossy(&raw.path)
        );
        self.note(msg);
    }

    fn name(&self, n: u32) -> &[u8] {
        let r = &self.nodes[n as usize].rec;
        &self.names[r.name_off as usize..r.name_off as usize + r.name_len as usize]
    }

    fn key(&self, parent: u32, name: &[u8]) -> (u32, u64) {
        (parent, self.hasher.hash_one(name))
    }

    /// The current (live) child `name` of `parent`.
    fn child(&self, parent: u32, name: &[u8]) -> Option<u32> {
        let mut n = *self.map.get(&self.key(parent, name))?;
        while n != NONE {
            let node = &self.nodes[n as usize];
            if node.live && node.rec.parent == parent && self.name(n) == name {
                return Some(n);
            }
            n = node.next;
        }
        None
    }

    /// Creates a node named `name` under `parent` (the caller retired any old one).
    fn insert(&mut self, parent: u32, name: &[u8], mut rec: Rec, target: u32) -> u32 {
        let id = self.nodes.len() as u32;
        rec.parent = parent;
        rec.name_off = self.names.len() as u32;
        rec.name_len = name.len() as u8; // names over NAME_MAX were dropped
        self.names.extend_from_slice(name);
        let key = self.key(parent, name);
        let next = self.map.insert(key, id).unwrap_or(NONE);
        self.nodes.push(Node {
            rec,
            target,
            next,
            live: true,
        });
        id
    }

    /// The owner `raw` gets when extracted. uid or gid 4294967295 is
    /// `(uid_t)-1`, which chown(2) takes as "leave this id unchanged": GNU tar
    /// extracting as root (and docker's layer extraction) leaves such a file
    /// with root's 0, so the index records 0, with a warning.
    fn owner(&mut self, raw: &RawEntry) -> (u32, u32) {
        let which = match (raw.uid == UNCHANGED_ID, raw.gid == UNCHANGED_ID) {
            (false, false) => return (raw.uid, raw.gid),
            (true, true) => "uid and gid",
            (true, false) => "uid",
            (false, true) => "gid",
        };
        let msg = format!(
            "offset {}: {:?}: {which} {UNCHANGED_ID} is (uid_t)-1, which chown leaves \
             unchanged; 0 is used, as GNU tar extracts it as root",
            raw.offset,
            String::from_utf8_lossy(&raw.path)
        );
        self.note(msg);
        let fix = |id| if id == UNCHANGED_ID { 0 } else { id };
        (fix(raw.uid), fix(raw.gid))
    }

    /// Encodes `raw`'s metadata and extra data into a record (no name yet).
    fn record(&mut self, raw: &RawEntry) -> Rec {
        let kind = raw.kind.unwrap_or(Kind::File);
        let (uid, gid) = self.owner(raw);
        let mut rec = Rec {
            size: if kind == Kind::File { raw.size } else { 0 },
            data_off: if kind == Kind::File { raw.data_off } else { 0 },
            mtime: raw.mtime,
            nsec: raw.mtime_nsec,
            // Linux symlinks have no permissions of their own: lstat shows 0777.
            mode16: match kind {
                Kind::Symlink => libc::S_IFLNK | 0o777,
                _ => mode_bits(kind) | (raw.mode & 0o7777),
            } as u16,
            uid,
            gid,
            link: NONE,
            count: 0,
            extra: NONE,
            ..Rec::default()
        };
        let sparse = raw.sparse.as_ref().filter(|_| kind == Kind::File);
        let special = matches!(kind, Kind::Symlink | Kind::Char | Kind::Block);
        if !(special || !raw.xattrs.is_empty() || sparse.is_some()) {
            return rec;
        }
        let start = self.extra.len();
        rec.extra = start as u32;
        let x = &mut self.extra;
        if kind == Kind::Symlink {
            put_u32(x, raw.link.len() as u32);
            x.extend_from_slice(&raw.link);
            rec.size = raw.link.len() as u64;
        }
        if matches!(kind, Kind::Char | Kind::Block) {
            put_u32(x, raw.rdev.0);
            put_u32(x, raw.rdev.1);
        }
        if !raw.xattrs.is_empty() {
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
        rec.extra_len = (self.extra.len() - start) as u32;
        rec
    }

    /// Applies one entry.
    pub fn add(&mut self, raw: RawEntry) {
        let comps = match normalize(&raw.path) {
            Ok(c) => c,
            Err(why) => return self.drop_entry(&raw, why),
        };
        let Some((&leaf, dirs)) = comps.split_last() else {
            // The root itself ("./" or "/").
            if raw.kind == Some(Kind::Dir) {
                let keep = self.nodes[0].rec.flags & F_OPAQUE;
                let mut rec = self.record(&raw);
                rec.flags |= keep;
                self.nodes[0].rec = rec;
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
                self.nodes[parent as usize].rec.flags |= F_OPAQUE;
                return;
            }
            Class::Meta => return, // aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs)
            Class::Empty => return self.drop_entry(&raw, "whiteout that names no sibling"),
            Class::Whiteout(target) => return self.add_whiteout(parent, target, &raw),
        }
        if raw.kind == Some(Kind::HardLink) {
            return self.add_hardlink(parent, leaf, &raw);
        }
        let rec = self.record(&raw);
        self.put(parent, leaf, rec, NONE);
    }

    /// Walks/creates the parent directories; returns the last one.
    fn ensure_dirs(&mut self, dirs: &[&[u8]]) -> Result<u32, String> {
        let mut cur = 0u32;
        for &d in dirs {
            cur = match self.child(cur, d) {
                Some(c) if self.nodes[c as usize].is_dir() => c,
                Some(c) if self.nodes[c as usize].is_whiteout() => {
                    // `.wh.d` then `d/x` in one layer: d is a real (implicit) directory
                    // that still hides the lower layers' d.
                    self.nodes[c as usize].live = false;
                    let mut rec = dir_rec(0o755);
                    rec.flags = F_IMPLICIT | F_HIDES_LOWER;
                    self.insert(cur, d, rec, NONE)
                }
                Some(c) => {
                    return Err(format!(
                        "parent {:?} is a {}, not a directory",
                        String::from_utf8_lossy(d),
                        kind_word(&self.nodes[c as usize].rec)
                    ))
                }
                None => {
                    let mut rec = dir_rec(0o755);
                    rec.flags = F_IMPLICIT;
                    self.insert(cur, d, rec, NONE)
                }
            };
        }
        Ok(cur)
    }

    /// Places a real entry at parent/name, replacing what was there.
    fn put(&mut self, parent: u32, name: &[u8], mut rec: Rec, target: u32) {
        if let Some(old) = self.child(parent, name) {
            let o = self.nodes[old as usize];
            if o.is_whiteout() {
                rec.flags |= F_HIDES_LOWER;
            } else {
                rec.flags |= o.rec.flags & F_HIDES_LOWER;
                if o.is_dir() && rec.is_dir() {
                    // Directory over directory: metadata only; children, opacity stay.
                    let keep = o.rec.flags & (F_OPAQUE | F_HIDES_LOWER);
                    let n = &mut self.nodes[old as usize].rec;
                    rec.flags |= keep;
                    rec.parent = n.parent;
                    rec.name_off = n.name_off;
                    rec.name_len = n.name_len;
                    *n = rec;
                    return;
                }
            }
            // Anything else replaces the old entry and its subtree (the subtree
            // becomes unreachable: `finish` only walks from live parents). The
            // replacement does not hide the lower layers' entry: docker's overlay2
            // and containerd extract each layer into its own directory, so a
            // directory that ends up here merges with the ones below as usual.
            self.nodes[old as usize].live = false;
        }
        self.insert(parent, name, rec, target);
    }

    fn add_whiteout(&mut self, parent: u32, target: &[u8], raw: &RawEntry) {
        if let Some(old) = self.child(parent, target) {
            // The same layer has the name: it stays, and hides the lower layers' one.
            self.nodes[old as usize].rec.flags |= F_HIDES_LOWER;
            return;
        }
        let rec = Rec {
            mode16: KIND_WHITEOUT as u16,
            mtime: raw.mtime,
            link: NONE,
            extra: NONE,
            ..Rec::default()
        };
        self.insert(parent, target, rec, NONE);
    }

    fn add_hardlink(&mut self, parent: u32, name: &[u8], raw: &RawEntry) {
        let found = normalize(&raw.link).ok().and_then(|c| self.find(&c));
        let Some(t) = found else {
            let why = format!(
                "hard link to {:?}, which is not an earlier entry of this layer",
                String::from_utf8_lossy(&raw.link)
            );
            return self.drop_entry(raw, &why);
        };
        if self.nodes[t as usize].is_dir() {
            return self.drop_entry(raw, "hard link to a directory");
        }
        let t = match self.nodes[t as usize].target {
            NONE => t,
            canonical => canonical,
        };
        if let Some(old) = self.child(parent, name) {
            if old == t || self.nodes[old as usize].target == t {
                return; // a link to itself: already the same inode
            }
        }
        let rec = Rec {
            mode16: libc::S_IFREG as u16,
            link: NONE,
            extra: NONE,
            flags: F_HARDLINK,
            ..Rec::default()
        };
        self.put(parent, name, rec, t);
    }

    fn find(&self, comps: &[&[u8]]) -> Option<u32> {
        let mut cur = 0u32;
        for c in comps {
            cur = self.child(cur, c)?;
            if self.nodes[cur as usize].is_whiteout() {
                return None;
            }
        }
        Some(cur)
    }

    /// Lays the tree out breadth first and produces the index.
    pub fn finish(
        self,
        members: Vec<Member>,
        end_off: u64,
        tar_size: u64,
        mut scan_warnings: Vec<String>,
    ) -> LayerIndex {
        let Builder {
            nodes,
            map,
            names,
            extra,
            dropped,
            warnings,
            ..
        } = self;
        drop(map);
        // Children of every node, sorted by name: one sort of all live non-root nodes.
        let name_of = |n: u32| {
            let r = &nodes[n as usize].rec;
            &names[r.name_off as usize..r.name_off as usize + r.name_len as usize]
        };
        let mut by_parent: Vec<u32> = (1..nodes.len() as u32)
            .filter(|&n| nodes[n as usize].live)
            .collect();
        by_parent.sort_unstable_by(|&a, &b| {
            let (pa, pb) = (nodes[a as usize].rec.parent, nodes[b as usize].rec.parent);
            pa.cmp(&pb).then_with(|| name_of(a).cmp(name_of(b)))
        });
        // first[p]..first[p+1] would need a dense array; use start offsets per parent.
        let mut start: HashMap<u32, (u32, u32)> = HashMap::new();
        let mut i = 0usize;
        while i < by_parent.len() {
            let p = nodes[by_parent[i] as usize].rec.parent;
            let j = i + by_parent[i..]
                .iter()
                .take_while(|&&n| nodes[n as usize].rec.parent == p)
                .count();
            start.insert(p, (i as u32, j as u32));
            i = j;
        }
        // Breadth first from the root through live directories only.
        let mut order: Vec<u32> = Vec::with_capacity(by_parent.len() + 1);
        order.push(0);
        let mut first_child = vec![(0u32, 0u32); nodes.len()];
        let mut k = 0;
        while k < order.len() {
            let n = order[k];
            if nodes[n as usize].is_dir() {
                let (a, b) = start.get(&n).copied().unwrap_or((0, 0));
                first_child[n as usize] = (order.len() as u32, b - a);
                order.extend_from_slice(&by_parent[a as usize..b as usize]);
            }
            k += 1;
        }
        drop(by_parent);
        drop(start);
        let mut new_id = vec![NONE; nodes.len()];
        for (pos, &n) in order.iter().enumerate() {
            new_id[n as usize] = pos as u32;
        }
        // Hard-link targets that were replaced keep a record (in no directory).
        let placed = order.len();
        for i in 0..placed {
            let t = nodes[order[i] as usize].target;
            if t != NONE && new_id[t as usize] == NONE {
                new_id[t as usize] = order.len() as u32;
                order.push(t);
            }
        }
        // Link counts: one per placed, named non-directory.
        let mut nlink = vec![0u32; nodes.len()];
        for &n in &order[..placed] {
            let node = &nodes[n as usize];
            if !node.is_whiteout() && !node.is_dir() {
                let inode = if node.target == NONE { n } else { node.target };
                nlink[inode as usize] += 1;
            }
        }
        let mut entries = Vec::with_capacity(order.len());
        let mut pack = Packer {
            body: &extra,
            extra: Vec::with_capacity(extra.len()),
            owners: Vec::new(),
            owner_ids: HashMap::new(),
        };
        for (pos, &n) in order.iter().enumerate() {
            let node = &nodes[n as usize];
            let mut rec = node.rec;
            rec.parent = match new_id[rec.parent as usize] {
                _ if n == 0 => 0,
                NONE => 0, // a detached target whose directory was replaced too
                p => p,
            };
            if pos >= placed {
                rec.flags |= F_DETACHED;
            }
            if rec.is_dir() {
                let (first, count) = first_child[n as usize];
                rec.link = first;
                rec.count = count;
            } else if node.target != NONE {
                rec.link = new_id[node.target as usize];
                rec.mode16 = nodes[node.target as usize].rec.mode16; // d_type of the inode
            } else if !rec.is_whiteout() {
                rec.count = nlink[n as usize];
            }
            entries.push(pack.pack(&rec));
        }
        let Packer { extra, owners, .. } = pack;
        scan_warnings.extend(warnings);
        scan_warnings.truncate(MAX_WARNINGS);
        LayerIndex {
            entries,
            names,
            extra,
            owners,
            members,
            end_off,
            tar_size,
            dropped,
            warnings: scan_warnings,
        }
    }
}

/// Packs full-width records into [`EntryRec`]s, building the index's extra
/// blob (wide fields, then the entry's own extra data) and owner table.
struct Packer<'a> {
    /// The builder's extra blob.
    body: &'a [u8],
    extra: Vec<u8>,
    owners: Vec<[u32; 2]>,
    owner_ids: HashMap<(u32, u32), u16>,
}

impl Packer<'_> {
    fn pack(&mut self, r: &Rec) -> EntryRec {
        let mut wide: Vec<(u32, u64)> = Vec::new();
        if r.nsec != 0 {
            wide.push((W_NSEC, u64::from(r.nsec)));
        }
        let mtime32 = match u32::try_from(r.mtime) {
            Ok(t) => t,
            Err(_) => {
                wide.push((W_MTIME, r.mtime as u64));
                0
            }
        };
        let kind = r.kind();
        let reg = kind == libc::S_IFREG && r.flags & F_HARDLINK == 0;
        let (mut pos, mut len) = (r.link, r.count);
        if reg || kind == libc::S_IFLNK {
            len = match u32::try_from(r.size) {
                Ok(s) => s,
                Err(_) => {
                    wide.push((W_SIZE, r.size));
                    0
                }
            };
        }
        if reg {
            pos = match u32::try_from(r.data_off / 512) {
                Ok(b) if r.data_off % 512 == 0 => b,
                _ => {
                    wide.push((W_DATA, r.data_off));
                    0
                }
            };
        }
        let mut nlink16 = 0;
        if !r.is_dir() && !r.is_whiteout() && r.flags & F_HARDLINK == 0 {
            nlink16 = match u16::try_from(r.count) {
                Ok(c) if c != u16::MAX => c,
                _ => {
                    wide.push((W_NLINK, u64::from(r.count)));
                    0
                }
            };
            if !reg && kind != libc::S_IFLNK {
                len = 0;
            }
        }
        let owner = match self.owner_ids.get(&(r.uid, r.gid)) {
            Some(&o) => o,
            None if self.owners.len() < usize::from(OWNER_WIDE) => {
                let o = self.owners.len() as u16;
                self.owners.push([r.uid, r.gid]);
                self.owner_ids.insert((r.uid, r.gid), o);
                o
            }
            None => {
                wide.push((W_OWNER, u64::from(r.uid) | u64::from(r.gid) << 32));
                OWNER_WIDE
            }
        };
        let mut flags = r.flags;
        let mut extra = NONE;
        if !wide.is_empty() || r.extra != NONE {
            extra = self.extra.len() as u32;
        }
        if !wide.is_empty() {
            flags |= F_WIDE;
            let x = &mut self.extra;
            put_u32(x, wide.iter().map(|w| w.0).fold(0, |a, b| a | b));
            for (bit, v) in wide {
                match bit {
                    W_NSEC | W_NLINK => put_u32(x, v as u32),
                    W_OWNER => {
                        put_u32(x, v as u32);
                        put_u32(x, (v >> 32) as u32);
                    }
                    _ => x.extend_from_slice(&v.to_le_bytes()),
                }
            }
        }
        if r.extra != NONE {
            let s = r.extra as usize;
            self.extra
                .extend_from_slice(&self.body[s..s + r.extra_len as usize]);
        }
        EntryRec {
            parent: r.parent,
            name_off: r.name_off,
            pos,
            len,
            mtime32,
            extra,
            owner,
            nlink16,
            mode16: r.mode16,
            name_len: r.name_len,
            flags,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar::index::{Meta, OWNER_WIDE};
    use crate::tar::persist::validate;

    fn file(path: &str, f: impl FnOnce(&mut RawEntry)) -> RawEntry {
        let mut r = RawEntry {
            path: path.as_bytes().to_vec(),
            kind: Some(Kind::File),
            mode: 0o644,
            data_off: 512,
            ..RawEntry::default()
        };
        f(&mut r);
        r
    }

    fn build(raws: Vec<RawEntry>) -> LayerIndex {
        let mut b = Builder::new();
        for r in raws {
            b.add(r);
        }
        let idx = b.finish(Vec::new(), 0, 0, Vec::new());
        validate(&idx).expect("a built index is valid");
        idx
    }

    fn meta(idx: &LayerIndex, p: &str) -> Meta {
        let id = idx.lookup_path(p.as_bytes()).expect(p);
        idx.meta(idx.inode_of(id))
    }

    #[test]
    fn values_that_do_not_fit_the_record_come_back_whole() {
        let idx = build(vec![
            file("big", |r| {
                r.size = 5 << 30;
                r.data_off = 1 << 41; // 2 TiB: past 32 bits of blocks
            }),
            file("odd", |r| {
                r.size = 3;
                r.data_off = 1000; // not on a block
            }),
            file("past", |r| {
                r.mtime = -5;
                r.mtime_nsec = 7;
            }),
            file("future", |r| r.mtime = 5_000_000_000),
            file("nsec", |r| {
                r.mtime = 1_700_000_000;
                r.mtime_nsec = 999_999_999;
                r.uid = u32::MAX - 1;
                r.gid = 1 << 31;
            }),
            RawEntry {
                path: b"sym".to_vec(),
                kind: Some(Kind::Symlink),
                link: b"target".to_vec(),
                mtime: -1,
                mtime_nsec: 1,
                xattrs: vec![(b"user.k".to_vec(), b"v".to_vec())],
                ..RawEntry::default()
            },
            file("plain", |r| {
                r.size = 10;
                r.data_off = 2048;
                r.mtime = 1;
            }),
        ]);
        let m = meta(&idx, "big");
        assert_eq!((m.size, m.data_off), (5 << 30, 1 << 41));
        let m = meta(&idx, "odd");
        assert_eq!((m.size, m.data_off), (3, 1000));
        let m = meta(&idx, "past");
        assert_eq!((m.mtime, m.mtime_nsec, m.data_off), (-5, 7, 512));
        assert_eq!(meta(&idx, "future").mtime, 5_000_000_000);
        let m = meta(&idx, "nsec");
        assert_eq!(
            (m.mtime, m.mtime_nsec, m.uid, m.gid),
            (1_700_000_000, 999_999_999, u32::MAX - 1, 1 << 31)
        );
        let id = idx.lookup_path(b"sym").unwrap();
        let m = idx.meta(id);
        assert_eq!((m.size, m.mtime, m.mtime_nsec, m.nlink), (6, -1, 1, 1));
        let x = idx.extra(id);
        assert_eq!(x.link, b"target");
        assert_eq!(x.xattrs, vec![(&b"user.k"[..], &b"v"[..])]);
        assert_eq!(idx.mtime_nsec(id), 1);
        // Nothing wide: the record alone.
        let id = idx.lookup_path(b"plain").unwrap();
        assert!(!idx.entry(id).has(F_WIDE));
        assert_eq!(idx.entry(id).extra, NONE);
        let m = idx.meta(id);
        assert_eq!((m.size, m.data_off, m.mtime, m.nlink), (10, 2048, 1, 1));
        assert_eq!(idx.size(id), 10);
        assert_eq!(idx.size(idx.lookup_path(b"big").unwrap()), 5 << 30);
    }

    #[test]
    fn owners_past_the_table_are_wide_fields() {
        let n = u32::from(OWNER_WIDE) + 100;
        let idx = build(
            (0..n)
                .map(|i| file(&format!("f{i}"), |r| (r.uid, r.gid) = (i, i / 2)))
                .collect(),
        );
        assert_eq!(idx.owners.len(), usize::from(OWNER_WIDE));
        let wide = idx.entries.iter().filter(|e| e.owner == OWNER_WIDE).count();
        assert!(wide >= 100, "{wide} entries with wide owners");
        for i in (0..n).step_by(997).chain(n - 3..n) {
            let m = meta(&idx, &format!("f{i}"));
            assert_eq!((m.uid, m.gid), (i, i / 2), "f{i}");
        }
    }

    #[test]
    fn a_link_count_past_16_bits_is_a_wide_field() {
        let n = 70_000;
        let mut raws = vec![file("a", |r| r.size = 1)];
        raws.extend((0..n).map(|i| RawEntry {
            path: format!("l{i}").into_bytes(),
            kind: Some(Kind::HardLink),
            link: b"a".to_vec(),
            ..RawEntry::default()
        }));
        let idx = build(raws);
        assert_eq!(meta(&idx, "a").nlink, n + 1);
        assert_eq!(meta(&idx, "l123").nlink, n + 1);
        assert_eq!(meta(&idx, "l123").size, 1);
    }

    #[test]
    fn a_wide_mask_that_names_unknown_fields_is_refused() {
        let mut idx = build(vec![file("f", |r| r.mtime_nsec = 5)]);
        let id = idx.lookup_path(b"f").unwrap();
        let at = idx.entry(id).extra as usize;
        idx.extra[at + 3] = 0x80;
        assert!(validate(&idx).unwrap_err().contains("wide fields"));
        let mut idx = build(vec![file("f", |r| r.uid = 3)]);
        let id = idx.lookup_path(b"f").unwrap();
        idx.entries[id.0 as usize].owner = 7;
        assert!(validate(&idx).unwrap_err().contains("owner"));
    }
}
