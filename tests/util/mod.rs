//! Shared helpers for the integration tests: a raw tar writer that can produce any
//! header (including broken ones), index/open shortcuts, and a tiny layer-spec
//! language for stack tests.
//!
//! The raw writer exists because the `tar` crate refuses to write most of what a
//! tar reader has to survive (bad checksums, negative sizes, `..` names, PAX
//! records of our choosing). Offsets of the header fields are the POSIX ustar /
//! old GNU ones.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use unionfs::stack::{Merged, Stack};
use unionfs::tar::index::{EntryRec, LayerIndex};
use unionfs::tar::{index, scan, EntryId, IndexOptions, TarLayer};

/// Field offsets (start, length) of a header block.
pub mod field {
    pub const NAME: (usize, usize) = (0, 100);
    pub const MODE: (usize, usize) = (100, 8);
    pub const UID: (usize, usize) = (108, 8);
    pub const GID: (usize, usize) = (116, 8);
    pub const SIZE: (usize, usize) = (124, 12);
    pub const MTIME: (usize, usize) = (136, 12);
    pub const CHKSUM: (usize, usize) = (148, 8);
    pub const TYPEFLAG: usize = 156;
    pub const LINKNAME: (usize, usize) = (157, 100);
    pub const MAGIC: (usize, usize) = (257, 8);
    pub const DEVMAJOR: (usize, usize) = (329, 8);
    pub const DEVMINOR: (usize, usize) = (337, 8);
    /// ustar only.
    pub const PREFIX: (usize, usize) = (345, 155);
    /// Old GNU sparse map: 4 entries of (offset, numbytes), 12 bytes each.
    pub const GNU_SPARSE: usize = 386;
    pub const GNU_ISEXTENDED: usize = 482;
    pub const GNU_REALSIZE: (usize, usize) = (483, 12);
}

/// One header block under construction. The checksum is computed when it is
/// written (see [`Hdr::bytes`]) unless [`Hdr::keep_checksum`] was called.
#[derive(Clone)]
pub struct Hdr {
    pub b: [u8; 512],
    keep_checksum: bool,
}

impl Hdr {
    fn with_magic(name: &[u8], typeflag: u8, size: u64, magic: &[u8]) -> Hdr {
        let mut h = Hdr {
            b: [0; 512],
            keep_checksum: false,
        };
        h.b[257..257 + magic.len()].copy_from_slice(magic);
        let mode = if typeflag == b'5' { 0o755 } else { 0o644 };
        h.put(field::NAME, name)
            .octal(field::MODE, mode)
            .octal(field::UID, 0)
            .octal(field::GID, 0)
            .octal(field::SIZE, size)
            .octal(field::MTIME, 0)
            .typeflag(typeflag)
    }
    /// A POSIX ustar header (`ustar\0` `00`).
    pub fn ustar(name: impl AsRef<[u8]>, typeflag: u8, size: u64) -> Hdr {
        Hdr::with_magic(name.as_ref(), typeflag, size, b"ustar\x0000")
    }
    /// An old GNU header (`ustar  \0`).
    pub fn gnu(name: impl AsRef<[u8]>, typeflag: u8, size: u64) -> Hdr {
        Hdr::with_magic(name.as_ref(), typeflag, size, b"ustar  \0")
    }
    /// A pre-POSIX v7 header (no magic).
    pub fn v7(name: impl AsRef<[u8]>, typeflag: u8, size: u64) -> Hdr {
        Hdr::with_magic(name.as_ref(), typeflag, size, b"")
    }
    /// Writes `bytes` at the start of field `f`, NUL-filling the rest of it.
    pub fn put(mut self, (at, len): (usize, usize), bytes: &[u8]) -> Hdr {
        assert!(bytes.len() <= len, "value too long for field at {at}");
        self.b[at..at + len].fill(0);
        self.b[at..at + bytes.len()].copy_from_slice(bytes);
        self
    }
    /// Writes `v` in octal, zero padded, NUL terminated.
    pub fn octal(self, f: (usize, usize), v: u64) -> Hdr {
        let s = format!("{v:0w$o}", w = f.1 - 1);
        self.put(f, s.as_bytes())
    }
    /// Writes `v` as a GNU base-256 number (two's complement, marker bit set).
    pub fn base256(mut self, (at, len): (usize, usize), v: i64) -> Hdr {
        let bytes = i128::from(v).to_be_bytes();
        let field = &mut self.b[at..at + len];
        field.copy_from_slice(&bytes[16 - len..]);
        field[0] |= 0x80;
        self
    }
    pub fn typeflag(mut self, t: u8) -> Hdr {
        self.b[field::TYPEFLAG] = t;
        self
    }
    pub fn mode(self, m: u64) -> Hdr {
        self.octal(field::MODE, m)
    }
    pub fn uid(self, v: u64) -> Hdr {
        self.octal(field::UID, v)
    }
    pub fn gid(self, v: u64) -> Hdr {
        self.octal(field::GID, v)
    }
    pub fn mtime(self, v: u64) -> Hdr {
        self.octal(field::MTIME, v)
    }
    pub fn size(self, v: u64) -> Hdr {
        self.octal(field::SIZE, v)
    }
    pub fn link(self, target: impl AsRef<[u8]>) -> Hdr {
        self.put(field::LINKNAME, target.as_ref())
    }
    pub fn prefix(self, p: impl AsRef<[u8]>) -> Hdr {
        self.put(field::PREFIX, p.as_ref())
    }
    pub fn dev(self, major: u64, minor: u64) -> Hdr {
        self.octal(field::DEVMAJOR, major)
            .octal(field::DEVMINOR, minor)
    }
    /// Overwrites raw bytes at `at` (no NUL filling).
    pub fn raw(mut self, at: usize, bytes: &[u8]) -> Hdr {
        self.b[at..at + bytes.len()].copy_from_slice(bytes);
        self
    }
    /// Keeps whatever the checksum field holds (to write a bad checksum).
    pub fn keep_checksum(mut self) -> Hdr {
        self.keep_checksum = true;
        self
    }
    /// The block, with a correct checksum (unless told to keep the field).
    pub fn bytes(&self) -> [u8; 512] {
        let mut b = self.b;
        if !self.keep_checksum {
            b[148..156].fill(b' ');
            let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
            b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        }
        b
    }
}

/// One PAX record, `"%d %s=%s\n"` with the self-including length.
pub fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} ").into_bytes();
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    assert_eq!(r.len(), len);
    r
}

/// A tar archive under construction, byte by byte.
#[derive(Clone, Default)]
pub struct Tar {
    pub buf: Vec<u8>,
}

impl Tar {
    pub fn new() -> Tar {
        Tar::default()
    }
    /// Offset where the next header will go.
    pub fn offset(&self) -> u64 {
        self.buf.len() as u64
    }
    /// Appends raw bytes (no padding).
    pub fn bytes(&mut self, b: &[u8]) -> &mut Tar {
        self.buf.extend_from_slice(b);
        self
    }
    /// Pads to the next block boundary with zeros.
    pub fn pad(&mut self) -> &mut Tar {
        let n = self.buf.len().next_multiple_of(512);
        self.buf.resize(n, 0);
        self
    }
    /// Appends a header block and `data`, padded to a block.
    pub fn entry(&mut self, h: Hdr, data: &[u8]) -> &mut Tar {
        self.buf.extend_from_slice(&h.bytes());
        self.buf.extend_from_slice(data);
        self.pad()
    }
    pub fn file(&mut self, name: impl AsRef<[u8]>, data: &[u8]) -> &mut Tar {
        self.entry(Hdr::ustar(name, b'0', data.len() as u64), data)
    }
    pub fn dir(&mut self, name: impl AsRef<[u8]>) -> &mut Tar {
        self.entry(Hdr::ustar(name, b'5', 0), b"")
    }
    pub fn symlink(&mut self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> &mut Tar {
        self.entry(Hdr::ustar(name, b'2', 0).link(target), b"")
    }
    pub fn hardlink(&mut self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> &mut Tar {
        self.entry(Hdr::ustar(name, b'1', 0).link(target), b"")
    }
    /// A PAX extended header (`x`) with these records.
    pub fn pax(&mut self, recs: &[(&str, &[u8])]) -> &mut Tar {
        let data = pax_records(recs);
        self.entry(Hdr::ustar("PaxHeaders/x", b'x', data.len() as u64), &data)
    }
    /// A PAX global header (`g`) with these records.
    pub fn pax_global(&mut self, recs: &[(&str, &[u8])]) -> &mut Tar {
        let data = pax_records(recs);
        self.entry(Hdr::ustar("GlobalHead.0", b'g', data.len() as u64), &data)
    }
    /// A GNU long name (`L`) header for the next entry.
    pub fn long_name(&mut self, name: impl AsRef<[u8]>) -> &mut Tar {
        self.gnu_long(b'L', name.as_ref())
    }
    /// A GNU long link name (`K`) header for the next entry.
    pub fn long_link(&mut self, name: impl AsRef<[u8]>) -> &mut Tar {
        self.gnu_long(b'K', name.as_ref())
    }
    fn gnu_long(&mut self, t: u8, name: &[u8]) -> &mut Tar {
        let mut data = name.to_vec();
        data.push(0);
        self.entry(Hdr::gnu("././@LongLink", t, data.len() as u64), &data)
    }
    /// Appends the two zero blocks and returns the archive.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.buf);
        v.extend_from_slice(&[0u8; 1024]);
        v
    }
}

/// The payload of a PAX header with these records.
pub fn pax_records(recs: &[(&str, &[u8])]) -> Vec<u8> {
    recs.iter()
        .flat_map(|(k, v)| pax_record(k.as_bytes(), v))
        .collect()
}

// ---------------------------------------------------------------------------
// Sparse files

/// A sparse file: data chunks (offset, bytes) and the real size. The encoders
/// return the members for it (no end-of-archive blocks).
pub struct Sparse {
    pub real: u64,
    pub chunks: Vec<(u64, Vec<u8>)>,
}

impl Sparse {
    pub fn new(real: u64, layout: &[(u64, usize)]) -> Sparse {
        let chunks = layout
            .iter()
            .enumerate()
            .map(|(i, &(o, n))| (o, (0..n).map(|j| b'A' + ((i + j) % 26) as u8).collect()))
            .collect();
        Sparse { real, chunks }
    }
    /// The file as a reader must see it: zeros in holes.
    pub fn logical(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.real as usize];
        for (o, d) in &self.chunks {
            v[*o as usize..*o as usize + d.len()].copy_from_slice(d);
        }
        v
    }
    pub fn stored(&self) -> Vec<u8> {
        self.chunks.iter().flat_map(|(_, d)| d.clone()).collect()
    }
    pub fn map(&self) -> Vec<(u64, u64)> {
        self.chunks
            .iter()
            .map(|(o, d)| (*o, d.len() as u64))
            .collect()
    }

    /// Old GNU `S`: 4 map entries in the header, 21 per extension block.
    pub fn gnu_old(&self, name: &str) -> Vec<u8> {
        let stored = self.stored();
        let map = self.map();
        let mut h = Hdr::gnu(name, b'S', stored.len() as u64).octal(field::GNU_REALSIZE, self.real);
        for (i, &(o, n)) in map.iter().take(4).enumerate() {
            let at = field::GNU_SPARSE + i * 24;
            h = h.octal((at, 12), o).octal((at + 12, 12), n);
        }
        let rest: Vec<_> = map.iter().skip(4).collect();
        if !rest.is_empty() {
            h = h.raw(field::GNU_ISEXTENDED, &[1]);
        }
        let mut t = Tar::new();
        t.bytes(&h.bytes());
        let blocks: Vec<_> = rest.chunks(21).collect();
        for (bi, block) in blocks.iter().enumerate() {
            let mut b = Hdr::v7("", 0, 0);
            b.b = [0; 512];
            for (i, &&(o, n)) in block.iter().enumerate() {
                b = b.octal((i * 24, 12), o).octal((i * 24 + 12, 12), n);
            }
            if bi + 1 < blocks.len() {
                b.b[504] = 1;
            }
            t.bytes(&b.b); // extension blocks carry no checksum
        }
        t.bytes(&stored).pad();
        t.buf
    }

    /// PAX 0.0: repeated GNU.sparse.offset / GNU.sparse.numbytes records.
    pub fn pax_0_0(&self, name: &str) -> Vec<u8> {
        let stored = self.stored();
        let real = self.real.to_string();
        let n = self.chunks.len().to_string();
        let nums: Vec<(String, String)> = self
            .map()
            .iter()
            .map(|(o, l)| (o.to_string(), l.to_string()))
            .collect();
        let mut recs: Vec<(&str, &[u8])> = vec![
            ("GNU.sparse.size", real.as_bytes()),
            ("GNU.sparse.numblocks", n.as_bytes()),
        ];
        for (o, l) in &nums {
            recs.push(("GNU.sparse.offset", o.as_bytes()));
            recs.push(("GNU.sparse.numbytes", l.as_bytes()));
        }
        let mut t = Tar::new();
        t.pax(&recs)
            .entry(Hdr::ustar(name, b'0', stored.len() as u64), &stored);
        t.buf
    }

    /// PAX 0.1: one GNU.sparse.map record; the real name in GNU.sparse.name.
    pub fn pax_0_1(&self, name: &str) -> Vec<u8> {
        let stored = self.stored();
        let real = self.real.to_string();
        let map: Vec<String> = self
            .map()
            .iter()
            .flat_map(|(o, l)| [o.to_string(), l.to_string()])
            .collect();
        let map = map.join(",");
        let n = self.chunks.len().to_string();
        let mut t = Tar::new();
        t.pax(&[
            ("GNU.sparse.size", real.as_bytes()),
            ("GNU.sparse.numblocks", n.as_bytes()),
            ("GNU.sparse.map", map.as_bytes()),
            ("GNU.sparse.name", name.as_bytes()),
        ])
        .entry(
            Hdr::ustar("GNUSparseFile.99/x", b'0', stored.len() as u64),
            &stored,
        );
        t.buf
    }

    /// PAX 1.0: the map is decimal lines at the start of the data, block padded.
    pub fn pax_1_0(&self, name: &str) -> Vec<u8> {
        let mut data = format!("{}\n", self.chunks.len()).into_bytes();
        for (o, l) in self.map() {
            data.extend(format!("{o}\n{l}\n").bytes());
        }
        data.resize(data.len().next_multiple_of(512), 0);
        data.extend(self.stored());
        let real = self.real.to_string();
        let mut t = Tar::new();
        t.pax(&[
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.name", name.as_bytes()),
            ("GNU.sparse.realsize", real.as_bytes()),
        ])
        .entry(
            Hdr::ustar("GNUSparseFile.0/x", b'0', data.len() as u64),
            &data,
        );
        t.buf
    }
}

// ---------------------------------------------------------------------------
// Indexing shortcuts

/// Scans and indexes an in-memory tar; panics with the scan error.
pub fn index_tar(tar: &[u8]) -> LayerIndex {
    let tar = tar.to_vec();
    match scan::scan(&tar) {
        Ok(s) => index::build(s, tar.len() as u64),
        Err(e) => panic!("scan failed: {e:?}"),
    }
}

/// The scan error of an in-memory tar: (offset, message); panics if it scans.
pub fn scan_err(tar: &[u8]) -> (u64, String) {
    match scan::scan(&tar.to_vec()) {
        Ok(s) => panic!("scan succeeded, expected an error: {:?}", s.entries),
        Err(scan::ScanError::Corrupt(off, msg)) => (off, msg),
        Err(scan::ScanError::Io(e)) => panic!("I/O error, expected Corrupt: {e}"),
    }
}

/// Every entry reachable by name, depth-first in name order, one line each:
/// `path/` for directories, `path -> target` for symlinks, `path =N` for files of
/// N bytes (`path =N ~link` for a hard link), `-path` for whiteouts, `other` kinds by
/// their type letter. Flags follow: ` opaque`, ` hides`.
pub fn listing(idx: &LayerIndex) -> Vec<String> {
    let mut out = Vec::new();
    walk(idx, EntryId::ROOT, &mut out);
    out
}

fn walk(idx: &LayerIndex, dir: EntryId, out: &mut Vec<String>) {
    for c in idx.children(dir).map(EntryId) {
        out.push(describe(idx, c));
        if idx.entry(c).is_dir() {
            walk(idx, c, out);
        }
    }
}

/// One line of [`listing`] for `id`.
pub fn describe(idx: &LayerIndex, id: EntryId) -> String {
    let path = String::from_utf8_lossy(&idx.path_of(id)).into_owned();
    let own = idx.entry(id);
    let e = idx.entry(idx.inode_of(id));
    let mut s = if own.is_whiteout() {
        format!("-{path}")
    } else {
        match e.kind() {
            libc::S_IFDIR => format!("{path}/"),
            libc::S_IFLNK => format!(
                "{path} -> {}",
                String::from_utf8_lossy(idx.extra(idx.inode_of(id)).link)
            ),
            libc::S_IFREG => format!("{path} ={}", idx.meta(idx.inode_of(id)).size),
            libc::S_IFCHR => format!("{path} c"),
            libc::S_IFBLK => format!("{path} b"),
            libc::S_IFIFO => format!("{path} p"),
            k => format!("{path} ?{k:o}"),
        }
    };
    if own.has(index::F_HARDLINK) {
        s.push_str(" ~link");
    }
    if own.has(index::F_OPAQUE) {
        s.push_str(" opaque");
    }
    if own.has(index::F_HIDES_LOWER) {
        s.push_str(" hides");
    }
    s
}

/// The entry at `path`; panics with the listing when there is none.
pub fn id(idx: &LayerIndex, path: &str) -> EntryId {
    find(idx, path.as_bytes()).unwrap_or_else(|| panic!("no entry {path:?} in {:#?}", listing(idx)))
}

/// The entry at `path` (whiteout entries included, unlike `lookup_path`).
pub fn find(idx: &LayerIndex, path: &[u8]) -> Option<EntryId> {
    let mut cur = EntryId::ROOT;
    for c in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        cur = idx.child(cur, c)?;
    }
    Some(cur)
}

/// The record of the inode at `path` (a hard link's target for hard links).
pub fn rec<'a>(idx: &'a LayerIndex, path: &str) -> &'a EntryRec {
    idx.entry(idx.inode_of(id(idx, path)))
}

/// The metadata of the inode at `path` (mode, owner, size, times, links).
pub fn meta(idx: &LayerIndex, path: &str) -> unionfs::tar::index::Meta {
    idx.meta(idx.inode_of(id(idx, path)))
}

/// The nanoseconds of the mtime of the inode at `path`.
pub fn nsec(idx: &LayerIndex, path: &str) -> u32 {
    idx.mtime_nsec(idx.inode_of(id(idx, path)))
}

// ---------------------------------------------------------------------------
// Files

/// Writes `bytes` to `dir/name`.
pub fn write_tar(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Opens an in-memory tar as a layer (temp file, no index cache).
pub fn open_bytes(bytes: &[u8]) -> TarLayer {
    let dir = tempfile::tempdir().unwrap();
    let p = write_tar(dir.path(), "layer.tar", bytes);
    // The open file outlives the directory entry. The member table is kept:
    // index tests check it (a mount drops it after the build).
    let opts = IndexOptions {
        members: true,
        ..IndexOptions::default()
    };
    TarLayer::open(&p, &opts).unwrap_or_else(|e| panic!("{e}"))
}

/// Reads a whole file of `layer` through `TarLayer::read`, in odd-sized chunks so
/// that reads start and end inside chunks and holes.
pub fn read_all(layer: &TarLayer, id: EntryId) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 777];
    loop {
        let n = layer.read(id, out.len() as u64, &mut buf).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

// ---------------------------------------------------------------------------
// Layer specs for stack tests

/// What a path in a layer spec is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum E<'a> {
    /// A regular file with this content.
    File(&'a str),
    /// A directory (0755).
    Dir,
    /// A symlink to this target.
    Symlink(&'a str),
    /// A hard link to this earlier path.
    Hardlink(&'a str),
    /// A whiteout marker: the path's last component must start with `.wh.`.
    Whiteout,
    /// An opaque marker: the path must end with `.wh..wh..opq`.
    Opaque,
}

/// A layer tar from a spec, entries in the given order.
pub fn layer_tar<S: AsRef<str>>(spec: &[(S, E<'_>)]) -> Vec<u8> {
    let mut t = Tar::new();
    for (path, e) in spec {
        let path = path.as_ref();
        let base = path.rsplit('/').next().unwrap();
        match *e {
            E::File(c) => t.file(path, c.as_bytes()),
            E::Dir => t.dir(path),
            E::Symlink(to) => t.symlink(path, to),
            E::Hardlink(to) => t.hardlink(path, to),
            E::Whiteout => {
                assert!(base.starts_with(".wh."), "{path}: not a whiteout name");
                t.file(path, b"")
            }
            E::Opaque => {
                assert_eq!(base, ".wh..wh..opq", "{path}: not an opaque marker");
                t.file(path, b"")
            }
        };
    }
    t.finish()
}

/// A stack of layers given bottom first.
pub fn stack<S: AsRef<str>>(layers: &[&[(S, E<'_>)]]) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let opened = layers
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let p = write_tar(dir.path(), &format!("{i}.tar"), &layer_tar(spec));
            TarLayer::open(&p, &IndexOptions::default()).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    Stack::new(opened)
}

/// The merged view, depth-first in listing order, one line per entry:
/// `path/@2,0` for a directory merged from layers 2 and 0 (top first),
/// `path@1=content` for a file from layer 1, `path@1->target` for a symlink.
pub fn view(stack: &Stack) -> Vec<String> {
    let mut out = Vec::new();
    view_dir(stack, &stack.root(), "", &mut out);
    out
}

fn view_dir(stack: &Stack, dir: &Merged, prefix: &str, out: &mut Vec<String>) {
    for d in stack.read_dir(dir) {
        let raw = stack.name(d.entry);
        let path = format!("{prefix}{}", String::from_utf8_lossy(raw));
        let m = stack
            .lookup(dir, raw)
            .unwrap_or_else(|| panic!("{path}: listed but lookup finds nothing"));
        assert_eq!(m.top, d.entry, "{path}: listing and lookup disagree");
        out.push(describe_merged(stack, &path, &m));
        if m.is_dir() {
            view_dir(stack, &m, &format!("{path}/"), out);
        }
    }
}

/// One line of [`view`].
pub fn describe_merged(stack: &Stack, path: &str, m: &Merged) -> String {
    let e = stack.rec(m.top);
    let layer = m.top.layer.0;
    match e.kind() {
        libc::S_IFDIR => {
            let ls: Vec<String> = m.dirs.iter().map(|r| r.layer.0.to_string()).collect();
            format!("{path}/@{}", ls.join(","))
        }
        libc::S_IFLNK => {
            let idx = stack.index(m.top);
            let link = idx.extra(idx.inode_of(m.top.entry)).link;
            format!("{path}@{layer}->{}", String::from_utf8_lossy(link))
        }
        _ => {
            let data = read_all(stack.layer(m.top.layer), m.top.entry);
            format!("{path}@{layer}={}", String::from_utf8_lossy(&data))
        }
    }
}
