//! `LayerIndex`: one layer tar as a tree of fixed-size records, ready to serve.
//!
//! Owns the in-memory (and, byte for byte, on-disk) form of a layer: entries in
//! breadth-first order so that every directory's children are one contiguous run
//! sorted by name, a names blob, an "extra" blob (symlink targets, device numbers,
//! xattrs, sparse maps, and the "wide" values a 32-byte record cannot hold), a
//! table of the layer's distinct (uid, gid) pairs, and the archive's [`Member`]
//! segments for reassembly.
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
//!   `UnpackLayer` rule). The replacement stays inside the layer: a directory
//!   that replaced a file still merges with the lower layers' directory, as with
//!   docker's overlay2 and containerd, which extract each layer on its own (a
//!   runtime that extracts onto the merged tree, like docker's vfs, would have
//!   removed the lower one too).
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

use super::scan::{Member, Scan};

/// `mode & S_IFMT` value used for whiteout entries (no real file type).
pub const KIND_WHITEOUT: u32 = 0;

/// The directory is opaque: lower layers' same-named directories are not merged.
pub const F_OPAQUE: u8 = 1 << 0;
/// A whiteout for this name exists in the same layer: hide lower layers' entries.
pub const F_HIDES_LOWER: u8 = 1 << 1;
/// Not in the archive: made for a missing parent.
pub const F_IMPLICIT: u8 = 1 << 2;
/// Has extended attributes in the extra blob.
pub const F_XATTRS: u8 = 1 << 3;
/// Is a sparse file (map in the extra blob).
pub const F_SPARSE: u8 = 1 << 4;
/// A hard link: `link` field holds the entry it shares an inode with.
pub const F_HARDLINK: u8 = 1 << 5;
/// Not reachable by name any more (replaced), kept as a hard link's data source.
pub const F_DETACHED: u8 = 1 << 6;
/// The entry has "wide" fields: values that do not fit the record (see
/// [`W_NSEC`] and the other `W_*` bits), a block at the start of its extra data.
pub const F_WIDE: u8 = 1 << 7;

/// Wide field: the mtime's nanoseconds (u32; 0 when absent).
pub const W_NSEC: u32 = 1 << 0;
/// Wide field: the mtime in seconds (i64) when it is outside `0..=u32::MAX`.
pub const W_MTIME: u32 = 1 << 1;
/// Wide field: the size (u64) when it is 4 GiB or more.
pub const W_SIZE: u32 = 1 << 2;
/// Wide field: the data offset (u64) when it is not a multiple of 512 below 2 TiB.
pub const W_DATA: u32 = 1 << 3;
/// Wide field: the link count (u32) when it is 65535 or more.
pub const W_NLINK: u32 = 1 << 4;
/// Wide field: uid and gid (two u32) when the layer has more than 65535 owners.
pub const W_OWNER: u32 = 1 << 5;
/// Every wide field, in the order their values follow the mask.
pub const W_ALL: u32 = W_NSEC | W_MTIME | W_SIZE | W_DATA | W_NLINK | W_OWNER;
/// `owner` value of an entry whose uid and gid are wide fields.
pub const OWNER_WIDE: u16 = u16::MAX;

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
///
/// A record holds what most entries need in 32 bytes; what does not fit (a
/// size of 4 GiB or more, an mtime before 1970 or after 2106, nanoseconds,
/// a link count over 65534, the 65536th distinct owner) is a "wide" field in
/// the extra blob ([`F_WIDE`]). Read the metadata with [`LayerIndex::meta`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct EntryRec {
    /// Parent directory (the root is its own parent).
    pub parent: u32,
    /// Offset of the name in the names blob.
    pub name_off: u32,
    /// Directories: first child. Hard links: the entry they share an inode
    /// with. Regular files: the data offset in 512-byte blocks (tar payloads
    /// start on a block), unless [`W_DATA`].
    pub pos: u32,
    /// Directories: number of children. Regular files and symlinks: the size
    /// (a symlink's is its target's length), unless [`W_SIZE`].
    pub len: u32,
    /// Modification time, seconds since 1970, unless [`W_MTIME`].
    pub mtime32: u32,
    /// Offset into the extra blob, or [`NONE`].
    pub extra: u32,
    /// uid and gid: an index into [`LayerIndex::owners`], or [`OWNER_WIDE`].
    pub owner: u16,
    /// Non-directories: link count, unless [`W_NLINK`] (0 in a hard link's
    /// own record and in whiteouts).
    pub nlink16: u16,
    /// `st_mode`: type bits and permissions (0 for whiteouts); both fit in
    /// 16 bits (`S_IFMT` is 0o170000). Read it with [`EntryRec::mode`].
    pub mode16: u16,
    /// Name length in bytes (at most `NAME_MAX`: longer names are dropped).
    pub name_len: u8,
    /// `F_*` flags.
    pub flags: u8,
}

// 32 bytes a record, in memory and on disk (index format 11; 56 in format 10,
// 64 in 7 to 9, 72 before). Format 11 moved uid and gid to a per-layer owner
// table, keeps the mtime in 32 bits, the size and data offset in 32 bits each,
// with the rare values that do not fit in the extra blob.
const _: () = assert!(std::mem::size_of::<EntryRec>() == 32);

/// The metadata of one entry, decoded from its record and wide fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// `st_mode` (0 for whiteouts).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Regular files: data bytes; symlinks: target length; 0 otherwise.
    pub size: u64,
    /// Regular files: absolute offset of the data in the tar stream.
    pub data_off: u64,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
    /// Non-directories: link count (names in this layer). 0 for
    /// directories, whiteouts and a hard link's own record.
    pub nlink: u32,
}

impl EntryRec {
    /// `st_mode`: type bits and permissions (0 for whiteouts).
    pub fn mode(&self) -> u32 {
        u32::from(self.mode16)
    }
    /// `mode & S_IFMT`.
    pub fn kind(&self) -> u32 {
        self.mode() & libc::S_IFMT
    }
    /// Returns true if and only if this is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind() == libc::S_IFDIR
    }
    /// Returns true if and only if this is a whiteout entry (not a real object).
    pub fn is_whiteout(&self) -> bool {
        self.mode() == KIND_WHITEOUT
    }
    /// Returns true if and only if flag `f` is set.
    pub fn has(&self, f: u8) -> bool {
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
    /// The distinct (uid, gid) pairs of the layer, indexed by `EntryRec::owner`.
    pub owners: Vec<[u32; 2]>,
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

impl LayerIndex {
    /// Frees the spare capacity the build left in every table.
    pub fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
        self.names.shrink_to_fit();
        self.extra.shrink_to_fit();
        self.owners.shrink_to_fit();
        self.members.shrink_to_fit();
        self.warnings.shrink_to_fit();
    }
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
            e.pos..e.pos + e.len
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
            EntryId(e.pos)
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

    /// The metadata of `id` as its record and wide fields hold it. A hard
    /// link's record holds only its mode: ask for its [`Self::inode_of`].
    pub fn meta(&self, id: EntryId) -> Meta {
        let e = self.entry(id);
        let kind = e.kind();
        let reg = kind == libc::S_IFREG && !e.has(F_HARDLINK);
        let [uid, gid] = self
            .owners
            .get(usize::from(e.owner))
            .copied()
            .unwrap_or([0, 0]);
        let mut m = Meta {
            mode: e.mode(),
            uid,
            gid,
            size: if reg || kind == libc::S_IFLNK {
                u64::from(e.len)
            } else {
                0
            },
            data_off: if reg { u64::from(e.pos) * 512 } else { 0 },
            mtime: i64::from(e.mtime32),
            mtime_nsec: 0,
            nlink: u32::from(e.nlink16),
        };
        if e.has(F_WIDE) {
            let mut r = self.cursor(e);
            let mask = r.u32();
            if mask & W_NSEC != 0 {
                m.mtime_nsec = r.u32();
            }
            if mask & W_MTIME != 0 {
                m.mtime = r.u64() as i64;
            }
            if mask & W_SIZE != 0 {
                m.size = r.u64();
            }
            if mask & W_DATA != 0 {
                m.data_off = r.u64();
            }
            if mask & W_NLINK != 0 {
                m.nlink = r.u32();
            }
            if mask & W_OWNER != 0 {
                m.uid = r.u32();
                m.gid = r.u32();
            }
        }
        m
    }

    /// The size of `id` as its own record holds it (a hard link's is 0):
    /// [`Meta::size`] without the rest.
    pub fn size(&self, id: EntryId) -> u64 {
        let e = self.entry(id);
        if e.has(F_WIDE) {
            return self.meta(id).size;
        }
        match e.kind() {
            libc::S_IFREG if !e.has(F_HARDLINK) => u64::from(e.len),
            libc::S_IFLNK => u64::from(e.len),
            _ => 0,
        }
    }

    /// The nanoseconds of `id`'s mtime (0 for most entries: tar headers carry
    /// whole seconds, only PAX records more).
    pub fn mtime_nsec(&self, id: EntryId) -> u32 {
        let e = self.entry(id);
        if !e.has(F_WIDE) {
            return 0;
        }
        let mut r = self.cursor(e);
        if r.u32() & W_NSEC == 0 {
            return 0;
        }
        r.u32()
    }

    fn cursor(&self, e: &EntryRec) -> Cursor<'_> {
        Cursor {
            b: &self.extra,
            at: e.extra as usize,
        }
    }

    /// Decodes the extra data of `id` (metadata of a hard link comes from its target).
    pub fn extra(&self, id: EntryId) -> Extra<'_> {
        let e = self.entry(id);
        let mut x = Extra::default();
        if e.extra == NONE {
            return x;
        }
        let mut r = self.cursor(e);
        if e.has(F_WIDE) {
            let mask = r.u32();
            r.take(wide_len(mask) - 4);
        }
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

/// Bytes of a wide block with `mask`: the mask itself and the values it names.
pub fn wide_len(mask: u32) -> usize {
    let mut n = 4;
    for (bit, len) in [
        (W_NSEC, 4),
        (W_MTIME, 8),
        (W_SIZE, 8),
        (W_DATA, 8),
        (W_NLINK, 4),
        (W_OWNER, 8),
    ] {
        if mask & bit != 0 {
            n += len;
        }
    }
    n
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
// Building (see build.rs)

/// Builds the index of a scanned tar (entries collected in `scan.entries`).
/// `tar_size` is the file's length.
pub fn build(scan: Scan, tar_size: u64) -> LayerIndex {
    let mut b = super::build::Builder::new();
    for raw in scan.entries {
        b.add(raw);
    }
    b.finish(scan.members, scan.end_off, tar_size, scan.warnings)
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
