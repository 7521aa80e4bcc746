//! One pass over a layer tar: read every header, seek over every payload.
//!
//! Produces, in archive order, the [`Member`]s (every header block and the payload
//! behind it: the "tar-split" segments that let `verify` reassemble the stream) and
//! the [`RawEntry`]s (one per file-system object: ustar/GNU/v7 header merged with
//! its PAX and GNU long-name extensions, sparse map decoded). Paths are raw bytes as
//! written; normalising them and building the tree is `index.rs`'s job.
//!
//! Formats: ustar, old GNU (long names `L`/`K`, sparse `S`, dumpdir `D`), PAX local
//! (`x`) and global (`g`) headers incl. `SCHILY.xattr.*` and GNU sparse 0.0/0.1/1.0,
//! and pre-POSIX v7. Like GNU tar, the archive ends at the first zero block; an
//! archive that simply stops after a complete member is accepted too.
//!
//! PAX values are read as GNU tar reads them, so that a layer shows what its
//! extraction shows: a NUL ends a `path` or `linkpath` (a C string there), a
//! time's leading number counts and junk after it is ignored (both with a
//! warning); a time or owner that is no number at all keeps the header's value.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::header::{self, is_zero_block, padded, Header, BLOCK};

/// Largest extension payload (PAX records, GNU long name) we read into memory.
pub const MAX_EXTENSION: u64 = 16 << 20;

/// [`ReadAt::len`] of an input whose length is not known until it has been
/// read to its end (a compressed stream): the scanner then reads until a
/// short read, and asks the length again.
pub const UNKNOWN_LEN: u64 = u64::MAX;

/// Positional reads, so scanning and serving never share a file cursor.
// `len` is the input's length (fallible), not a container's: no `is_empty`.
#[allow(clippy::len_without_is_empty)]
pub trait ReadAt: Sync {
    /// Reads up to `buf.len()` bytes at `off`; returns 0 only at end of input.
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize>;
    /// Total length in bytes, or [`UNKNOWN_LEN`] for a stream read forward
    /// whose end has not been reached yet (it then answers exactly).
    fn len(&self) -> io::Result<u64>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, off)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let off = usize::try_from(off)
            .unwrap_or(usize::MAX)
            .min(<[u8]>::len(self));
        let n = buf.len().min(<[u8]>::len(self) - off);
        buf[..n].copy_from_slice(&self[off..off + n]);
        Ok(n)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(<[u8]>::len(self) as u64)
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        self.as_slice().read_at(buf, off)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.as_slice().len() as u64)
    }
}

/// Reads `buf.len()` bytes at `off`, fewer only at the end of the input;
/// returns how many.
pub fn read_full<R: ReadAt + ?Sized>(r: &R, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read_at(&mut buf[got..], off + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads exactly `buf.len()` bytes at `off`, or fails with `UnexpectedEof`.
pub fn read_exact_at<R: ReadAt + ?Sized>(
    r: &R,
    mut buf: &mut [u8],
    mut off: u64,
) -> io::Result<()> {
    while !buf.is_empty() {
        match r.read_at(buf, off) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                off += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One header block and the payload bytes behind it, as laid out in the archive.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Member {
    /// Offset of the header block.
    pub hdr_off: u64,
    /// Offset of the payload (after GNU sparse extension blocks, if any).
    pub data_off: u64,
    /// Payload bytes in the archive, before padding to a block.
    pub data_len: u64,
}

/// What kind of object an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Regular file (also contiguous `7`, sparse, and unknown vendor types).
    File,
    /// Directory (also GNU dumpdir `D`).
    Dir,
    /// Symbolic link.
    Symlink,
    /// Hard link to an earlier entry (`link` names it).
    HardLink,
    /// Character device.
    Char,
    /// Block device.
    Block,
    /// FIFO.
    Fifo,
}

/// A file-system object as one tar entry describes it, paths not yet normalised.
#[derive(Clone, Debug, Default)]
pub struct RawEntry {
    /// Offset of the main header block (for messages).
    pub offset: u64,
    /// Path as written (PAX `path`, GNU long name, or ustar prefix/name).
    pub path: Vec<u8>,
    /// Object kind.
    pub kind: Option<Kind>,
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
    /// Logical size (the real size of a sparse file).
    pub size: u64,
    /// Offset of the file data (after a PAX 1.0 sparse map).
    pub data_off: u64,
    /// Symlink or hard-link target as written.
    pub link: Vec<u8>,
    /// Device numbers (char/block).
    pub rdev: (u32, u32),
    /// Extended attributes (`SCHILY.xattr.*`).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Data chunks (offset, length) of a sparse file, stored back to back at `data_off`.
    pub sparse: Option<Vec<(u64, u64)>>,
}

/// A scan failure: where and what.
#[derive(Debug)]
pub enum ScanError {
    /// Reading the input failed.
    Io(io::Error),
    /// The archive is malformed at this offset.
    Corrupt(u64, String),
}

impl From<io::Error> for ScanError {
    fn from(e: io::Error) -> Self {
        ScanError::Io(e)
    }
}

type Res<T> = Result<T, ScanError>;

fn corrupt<T>(off: u64, msg: impl Into<String>) -> Res<T> {
    Err(ScanError::Corrupt(off, msg.into()))
}

/// A read window over the input, so that runs of small members cost one syscall.
struct Window<'a, R: ?Sized> {
    r: &'a R,
    len: u64,
    start: u64,
    buf: Vec<u8>,
    /// The last payload skipped (header offset, data offset, length): an
    /// input of unknown length that ends inside it is truncated.
    last: Option<(u64, u64, u64)>,
}

const WINDOW: usize = 256 << 10;

impl<'a, R: ReadAt + ?Sized> Window<'a, R> {
    /// Returns the block at `off`: `None` at a clean end of input.
    fn block(&mut self, off: u64) -> Res<Option<[u8; 512]>> {
        if off >= self.len {
            return Ok(None);
        }
        if off + BLOCK > self.len {
            return corrupt(
                off,
                format!(
                    "truncated: a header needs 512 bytes but only {} remain",
                    self.len - off
                ),
            );
        }
        if off < self.start || off + BLOCK > self.start + self.buf.len() as u64 {
            let n = (self.len - off).min(WINDOW as u64) as usize;
            self.buf.resize(n, 0);
            if self.len != UNKNOWN_LEN {
                read_exact_at(self.r, &mut self.buf, off)?;
                self.start = off;
            } else {
                let got = read_full(self.r, &mut self.buf, off)?;
                self.buf.truncate(got);
                self.start = off;
                if got < n {
                    // The end: the input knows its length now.
                    self.len = self.r.len()?;
                    if self.len == UNKNOWN_LEN {
                        return Err(ScanError::Io(io::Error::other(
                            "the input ended but does not know its length",
                        )));
                    }
                    if let Some((h, d, n)) = self.last {
                        payload_end(h, d, n, self.len)?;
                    }
                    return self.block(off);
                }
            }
        }
        let at = (off - self.start) as usize;
        let mut b = [0u8; 512];
        b.copy_from_slice(&self.buf[at..at + 512]);
        Ok(Some(b))
    }

    /// Reads `len` payload bytes at `off` (for extension headers and sparse maps).
    fn bytes(&mut self, off: u64, len: u64) -> Res<Vec<u8>> {
        let mut v = vec![0u8; len as usize];
        match read_exact_at(self.r, &mut v, off) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && self.len == UNKNOWN_LEN => {
                corrupt(
                    off,
                    format!("truncated: {len} bytes of extension data run past the end"),
                )
            }
            r => r.map(|()| v).map_err(ScanError::from),
        }
    }

    /// Where the next header starts after the payload of the header at
    /// `hdr_off` (`n` bytes at `data_off`); remembered for an input whose
    /// end is found later.
    fn payload_end(&mut self, hdr_off: u64, data_off: u64, n: u64) -> Res<u64> {
        self.last = Some((hdr_off, data_off, n));
        payload_end(hdr_off, data_off, n, self.len)
    }
}

/// Extension state carried from `x`/`L`/`K` headers to the entry they precede.
#[derive(Default)]
struct Pending {
    pax: Vec<(Vec<u8>, Vec<u8>)>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    first_off: Option<u64>,
}

/// The result of scanning one tar.
#[derive(Debug, Default)]
pub struct Scan {
    /// Every header block, in archive order.
    pub members: Vec<Member>,
    /// Every entry, in archive order.
    pub entries: Vec<RawEntry>,
    /// Offset just past the last member: where the end-of-archive blocks start.
    pub end_off: u64,
    /// Non-fatal oddities, for the user.
    pub warnings: Vec<String>,
}

/// Scans `r` completely, collecting every entry in [`Scan::entries`].
pub fn scan<R: ReadAt + ?Sized>(r: &R) -> Res<Scan> {
    let mut entries = Vec::new();
    let mut out = scan_with(r, |e| entries.push(e))?;
    out.entries = entries;
    Ok(out)
}

/// Scans `r` completely, handing each entry to `each` as soon as it is read
/// (so that indexing a huge layer never holds all raw entries at once);
/// [`Scan::entries`] stays empty.
pub fn scan_with<R: ReadAt + ?Sized, F: FnMut(RawEntry)>(r: &R, mut each: F) -> Res<Scan> {
    let len = r.len()?;
    let mut w = Window {
        r,
        len,
        start: 0,
        buf: Vec::new(),
        last: None,
    };
    let mut out = Scan::default();
    let mut global: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut pend = Pending::default();
    let mut pos = 0u64;
    loop {
        let off = pos;
        let Some(block) = w.block(off)? else {
            // An input of unknown length may end inside the padding after
            // the last payload: the archive ends where its bytes do.
            let off = off.min(w.len);
            if let Some(first) = pend.first_off {
                warn(
                    &mut out,
                    format!("offset {first}: extension header with no entry after it (ignored)"),
                );
            }
            // Served as GNU tar lists it ("Unexpected EOF in archive"), but said:
            // a file cut after a whole member looks exactly like this.
            warn(
                &mut out,
                format!(
                    "offset {off}: the archive ends without its end-of-archive blocks \
                     (truncated? every member before this offset is whole)"
                ),
            );
            out.end_off = off;
            return Ok(out);
        };
        if is_zero_block(&block) {
            if let Some(first) = pend.first_off {
                warn(
                    &mut out,
                    format!("offset {first}: extension header with no entry after it (ignored)"),
                );
            }
            out.end_off = off;
            return Ok(out);
        }
        let h = Header(&block);
        h.check_checksum().or_else(|e| corrupt(off, e))?;
        let tf = h.typeflag();
        let hsize = h.size().or_else(|e| corrupt(off, e))?;
        if hsize < 0 {
            return corrupt(off, format!("negative size {hsize}"));
        }
        let hsize = hsize as u64;
        match tf {
            b'x' | b'X' | b'g' | b'L' | b'K' | b'N' | b'V' => {
                if hsize > MAX_EXTENSION {
                    return corrupt(
                        off,
                        format!("extension header of {hsize} bytes (limit {MAX_EXTENSION})"),
                    );
                }
                let data_off = off + BLOCK;
                let next = w.payload_end(off, data_off, hsize)?;
                out.members.push(Member {
                    hdr_off: off,
                    data_off,
                    data_len: hsize,
                });
                pos = next;
                if matches!(tf, b'N' | b'V') {
                    // Old GNU long-name table and volume labels describe no object.
                    continue;
                }
                let data = w.bytes(data_off, hsize)?;
                match tf {
                    b'x' | b'X' | b'g' => {
                        let recs = header::parse_pax_records(&data)
                            .or_else(|e| corrupt(off, format!("PAX header: {e}")))?;
                        if tf == b'g' {
                            merge_global(&mut global, recs);
                            continue;
                        }
                        // Several 'x' headers in a row: the last one applies (as GNU
                        // tar and Go's archive/tar read them).
                        pend.pax = recs;
                    }
                    b'L' => pend.long_name = Some(header::cstr(&data).to_vec()),
                    _ => pend.long_link = Some(header::cstr(&data).to_vec()),
                }
                pend.first_off.get_or_insert(off);
            }
            b'M' => {
                return corrupt(
                    off,
                    "GNU multi-volume continuation entry: multi-volume archives are not supported",
                )
            }
            _ => {
                let p = std::mem::take(&mut pend);
                let (e, next) = entry(&mut w, &h, off, hsize, &global, p, &mut out)?;
                pos = next;
                each(e);
            }
        }
    }
}

/// Where the next header starts after a payload of `n` bytes at `data_off`.
fn payload_end(hdr_off: u64, data_off: u64, n: u64, len: u64) -> Res<u64> {
    let end = padded(n)
        .and_then(|p| data_off.checked_add(p))
        .ok_or_else(|| ScanError::Corrupt(hdr_off, format!("size {n} overflows")))?;
    if data_off.saturating_add(n) > len {
        return corrupt(
            hdr_off,
            format!(
                "truncated: entry declares {n} bytes of data but only {} remain",
                len.saturating_sub(data_off)
            ),
        );
    }
    Ok(end.min(len.max(data_off + n)))
}

/// Global PAX records: later values replace earlier ones; an empty value deletes.
fn merge_global(global: &mut Vec<(Vec<u8>, Vec<u8>)>, recs: Vec<(Vec<u8>, Vec<u8>)>) {
    for (k, v) in recs {
        global.retain(|(gk, _)| *gk != k);
        if !v.is_empty() {
            global.push((k, v));
        }
    }
}

fn to_u32(off: u64, what: &str, v: i64) -> Res<u32> {
    u32::try_from(v).or_else(|_| corrupt(off, format!("{what} {v} out of range")))
}

/// Builds the entry for the main header `h` at `off`, consuming its extensions.
fn entry<R: ReadAt + ?Sized>(
    w: &mut Window<'_, R>,
    h: &Header<'_>,
    off: u64,
    hsize: u64,
    global: &[(Vec<u8>, Vec<u8>)],
    p: Pending,
    out: &mut Scan,
) -> Res<(RawEntry, u64)> {
    let bad = |e: String| ScanError::Corrupt(off, e);
    let mut e = RawEntry {
        offset: off,
        path: h.path(),
        link: h.linkname().to_vec(),
        mode: (h.mode().map_err(bad)? & 0o7777) as u32,
        uid: to_u32(off, "uid", h.uid().map_err(bad)?)?,
        gid: to_u32(off, "gid", h.gid().map_err(bad)?)?,
        mtime: h.mtime().map_err(bad)?,
        ..RawEntry::default()
    };
    if let Some(n) = p.long_name {
        e.path = n;
    }
    if let Some(l) = p.long_link {
        e.link = l;
    }
    let tf = h.typeflag();
    let mut kind = match tf {
        b'0' | b'7' => Kind::File,
        0 if e.path.ends_with(b"/") => Kind::Dir,
        0 => Kind::File,
        b'1' => Kind::HardLink,
        b'2' => Kind::Symlink,
        b'3' => Kind::Char,
        b'4' => Kind::Block,
        b'5' | b'D' => Kind::Dir,
        b'6' => Kind::Fifo,
        b'S' => Kind::File,
        other => {
            warn(
                out,
                format!(
                    "offset {off}: unknown type flag {:?}, treated as a regular file",
                    other as char
                ),
            );
            Kind::File
        }
    };
    if matches!(kind, Kind::Char | Kind::Block) {
        let (ma, mi) = h.device().map_err(bad)?;
        e.rdev = (to_u32(off, "devmajor", ma)?, to_u32(off, "devminor", mi)?);
    }
    let mut size = hsize;
    let mut sparse = SparseInfo::default();
    for (k, v) in global.iter().chain(p.pax.iter()) {
        let at = p.first_off.unwrap_or(off);
        match apply_pax(&mut e, &mut size, &mut sparse, k, v) {
            Ok(None) => {}
            Ok(Some(note)) => warn(
                out,
                format!("offset {at}: PAX record {}: {note}", header::show(k)),
            ),
            // A bad time or owner only loses that value (GNU tar warns and keeps
            // the ustar header's); anything that changes where data or names
            // are (path, size, sparse maps) refuses the layer.
            Err(m)
                if matches!(
                    k.as_slice(),
                    b"mtime" | b"uid" | b"gid" | b"SCHILY.devmajor" | b"SCHILY.devminor"
                ) =>
            {
                warn(
                    out,
                    format!(
                        "offset {at}: PAX record {}: {m}; the header's value is used",
                        header::show(k)
                    ),
                );
            }
            Err(m) => return corrupt(at, format!("PAX record {}: {m}", header::show(k))),
        }
    }
    let mut data_off = off + BLOCK;
    let member_hdr = off;
    if tf == b'S' {
        let (real, mut map, mut ext) = h.gnu_sparse().map_err(bad)?;
        while ext {
            let Some(b) = w.block(data_off)? else {
                return corrupt(off, "truncated: sparse extension header missing");
            };
            map.extend(header::parse_sparse_entries(&b[..504], 21).map_err(bad)?);
            ext = b[504] != 0;
            data_off += BLOCK;
        }
        sparse.real = Some(real);
        sparse.map = Some(map);
    }
    // Header-only types carry no payload whatever their size field says (as Go's
    // archive/tar reads them).
    let header_only = matches!(
        kind,
        Kind::HardLink | Kind::Symlink | Kind::Char | Kind::Block | Kind::Fifo
    ) || (kind == Kind::Dir && tf != b'D');
    let stored = if header_only { 0 } else { size };
    let next = w.payload_end(off, data_off, stored)?;
    out.members.push(Member {
        hdr_off: member_hdr,
        data_off,
        data_len: stored,
    });
    e.data_off = data_off;
    e.size = if kind == Kind::File { stored } else { 0 };
    if kind == Kind::Dir && tf == b'D' {
        e.size = 0;
    }
    if sparse.is_sparse() && kind == Kind::File {
        let (map_len, map) = sparse.resolve(w, data_off, stored).map_err(bad)?;
        e.data_off = data_off + map_len;
        let real =
            validate_sparse(&map, sparse.real.unwrap_or(0), stored - map_len).map_err(bad)?;
        e.size = real;
        e.sparse = Some(map);
    }
    if kind == Kind::File && e.path.ends_with(b"/") && tf == b'0' {
        // A few old writers mark directories only by the trailing slash.
        kind = Kind::Dir;
        e.size = 0;
    }
    e.kind = Some(kind);
    Ok((e, next))
}

#[derive(Default)]
struct SparseInfo {
    major: Option<i64>,
    minor: Option<i64>,
    real: Option<i64>,
    pairs: Vec<i64>,
    map: Option<Vec<(i64, i64)>>,
}

impl SparseInfo {
    fn is_sparse(&self) -> bool {
        self.map.is_some() || self.major.is_some() || !self.pairs.is_empty()
    }

    /// Returns (bytes of in-data map to skip, data chunks).
    fn resolve<R: ReadAt + ?Sized>(
        &self,
        w: &mut Window<'_, R>,
        data_off: u64,
        stored: u64,
    ) -> Result<(u64, Vec<(u64, u64)>), String> {
        let raw: Vec<(i64, i64)> = if self.major == Some(1) {
            return read_sparse_map_1_0(w, data_off, stored);
        } else if let Some(m) = &self.map {
            m.clone()
        } else {
            if self.pairs.len() % 2 != 0 {
                return Err("GNU.sparse offset/numbytes records do not pair up".into());
            }
            self.pairs.chunks(2).map(|c| (c[0], c[1])).collect()
        };
        let _ = self.minor;
        let map = raw
            .into_iter()
            .map(|(o, n)| {
                if o < 0 || n < 0 {
                    Err(format!("negative sparse entry ({o}, {n})"))
                } else {
                    Ok((o as u64, n as u64))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((0, map))
    }
}

/// PAX sparse 1.0: the map is decimal lines at the start of the data, padded to a block.
fn read_sparse_map_1_0<R: ReadAt + ?Sized>(
    w: &mut Window<'_, R>,
    data_off: u64,
    stored: u64,
) -> Result<(u64, Vec<(u64, u64)>), String> {
    let mut nums: Vec<u64> = Vec::new();
    let mut want: Option<u64> = None;
    let mut cur: Vec<u8> = Vec::new();
    let mut used = 0u64;
    while want.is_none_or(|n| (nums.len() as u64) < 1 + 2 * n) {
        if used + BLOCK > stored {
            return Err("sparse 1.0 map runs past the entry's data".into());
        }
        let b = w
            .block(data_off + used)
            .map_err(|_| "sparse 1.0 map unreadable".to_string())?
            .ok_or("sparse 1.0 map truncated")?;
        used += BLOCK;
        for &c in b.iter() {
            if want.is_some_and(|n| nums.len() as u64 > 2 * n) {
                break;
            }
            if c == b'\n' {
                let s = std::str::from_utf8(&cur).unwrap_or("");
                let v: u64 = s.parse().map_err(|_| {
                    format!("bad number {:?} in sparse 1.0 map", header::show(&cur))
                })?;
                cur.clear();
                nums.push(v);
                if want.is_none() {
                    if v > stored / 2 + 1 {
                        return Err(format!("sparse 1.0 map claims {v} entries"));
                    }
                    want = Some(v);
                }
            } else if c.is_ascii_digit() && cur.len() < 20 {
                cur.push(c);
            } else {
                return Err(format!("unexpected byte {c:#x} in sparse 1.0 map"));
            }
        }
    }
    let map = nums[1..].chunks(2).map(|c| (c[0], c[1])).collect();
    Ok((used, map))
}

/// Checks a sparse map against the real size and the stored data; returns the real size.
fn validate_sparse(map: &[(u64, u64)], real: i64, data: u64) -> Result<u64, String> {
    if real < 0 {
        return Err(format!("negative sparse real size {real}"));
    }
    let real = real as u64;
    let mut last_end = 0u64;
    let mut sum = 0u64;
    for &(o, n) in map {
        let end = o.checked_add(n).ok_or("sparse entry overflows")?;
        if o < last_end || end > real {
            return Err(format!(
                "sparse map entry ({o}, {n}) out of order or past the real size {real}"
            ));
        }
        last_end = end;
        sum = sum.checked_add(n).ok_or("sparse map overflows")?;
    }
    if sum > data {
        return Err(format!(
            "sparse map describes {sum} bytes of data but the entry stores {data}"
        ));
    }
    Ok(real)
}

/// Applies one PAX record to the entry. `Ok(Some(note))`: applied, but read
/// leniently as GNU tar reads it (the note says how, for a warning); `Err`: the
/// value is unusable.
fn apply_pax(
    e: &mut RawEntry,
    size: &mut u64,
    sp: &mut SparseInfo,
    k: &[u8],
    v: &[u8],
) -> Result<Option<String>, String> {
    let dec = header::parse_pax_decimal;
    match k {
        b"path" | b"GNU.sparse.name" => return Ok(c_string(v, &mut e.path)),
        b"linkpath" => return Ok(c_string(v, &mut e.link)),
        b"size" => *size = u64::try_from(dec(v)?).map_err(|_| "negative size")?,
        b"uid" => e.uid = u32::try_from(dec(v)?).map_err(|_| "uid out of range")?,
        b"gid" => e.gid = u32::try_from(dec(v)?).map_err(|_| "gid out of range")?,
        b"mtime" => {
            let (secs, nanos, rest) = header::parse_pax_time(v)?;
            (e.mtime, e.mtime_nsec) = (secs, nanos);
            if !rest.is_empty() {
                return Ok(Some(format!(
                    "{:?} has junk after the number; {secs} s is used, as GNU tar reads it",
                    header::show(v)
                )));
            }
        }
        b"SCHILY.devmajor" => e.rdev.0 = u32::try_from(dec(v)?).map_err(|_| "out of range")?,
        b"SCHILY.devminor" => e.rdev.1 = u32::try_from(dec(v)?).map_err(|_| "out of range")?,
        b"GNU.sparse.major" => sp.major = Some(dec(v)?),
        b"GNU.sparse.minor" => sp.minor = Some(dec(v)?),
        b"GNU.sparse.realsize" | b"GNU.sparse.size" => sp.real = Some(dec(v)?),
        b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => sp.pairs.push(dec(v)?),
        b"GNU.sparse.map" => {
            let nums = v
                .split(|&c| c == b',')
                .filter(|s| !s.is_empty())
                .map(dec)
                .collect::<Result<Vec<_>, _>>()?;
            if nums.len() % 2 != 0 {
                return Err("odd number of values".into());
            }
            sp.map = Some(nums.chunks(2).map(|c| (c[0], c[1])).collect());
        }
        _ => {
            if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                if name.is_empty() || name.contains(&0) {
                    return Err("bad xattr name".into());
                }
                e.xattrs.retain(|(n, _)| n != name);
                e.xattrs.push((name.to_vec(), v.to_vec()));
            }
            // Other keywords (atime, ctime, uname, gname, comment, charset, vendor
            // records) do not change what is served.
        }
    }
    Ok(None)
}

/// Sets a name from a PAX value the way GNU tar does (`decode_string` takes the
/// value as a C string): a NUL ends it. Returns the note for a warning if one did.
fn c_string(v: &[u8], to: &mut Vec<u8>) -> Option<String> {
    let cut = header::cstr(v);
    *to = cut.to_vec();
    (cut.len() < v.len()).then(|| {
        format!(
            "contains a NUL byte; the name ends there ({:?}), as GNU tar reads it",
            header::show(cut)
        )
    })
}

fn warn(out: &mut Scan, msg: String) {
    // Logged with the layer's path once indexing is done (`tar::log_warnings`).
    out.warnings.push(msg);
}
