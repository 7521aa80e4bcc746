//! The on-disk index file: versioned, checksummed, keyed to one exact tar file.
//!
//! Layout (little-endian, every section 8-byte aligned):
//!
//! ```text
//! FileHeader (fixed size, see the struct)   magic "UFSINDX\0", version, byte-order mark,
//!                                           the tar's identity, section lengths, checksums
//! entries   [EntryRec; n_entries]           the records exactly as held in memory
//! names     [u8; names_len]    (padded)
//! extra     [u8; extra_len]    (padded)
//! owners    [[u32; 2]; n_owners]            (uid, gid) pairs, `EntryRec::owner`
//! members   [Member; n_members]             only read by `verify` and `ls --offsets`
//! warnings  [u8; warnings_len] (padded)     '\n'-separated
//! ```
//!
//! Each section has its own xxh3-64 checksum and the header has one over itself.
//! The tar's identity (device, inode, size, mtime, ctime) is stored and compared
//! on load, so a tar that changed in any way since is re-indexed, never served
//! from a stale index. Loading is a handful of `read`s straight into the final
//! vectors: no parsing, no per-entry work beyond a bounds check.
//!
//! Does not decide *where* index files live or *when* to rebuild (that is
//! `tar/mod.rs`).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use bytemuck::{Pod, Zeroable};
use xxhash_rust::xxh3::xxh3_64;

use super::index::{
    wide_len, EntryRec, LayerIndex, F_HARDLINK, F_WIDE, NONE, OWNER_WIDE, W_ALL, W_OWNER,
};
use super::scan::Member;

const MAGIC: [u8; 8] = *b"UFSINDX\0";
/// Bump whenever the layout or the indexing rules (scan.rs, index.rs) change:
/// a stored index built by other rules must never be served.
pub const VERSION: u32 = 11;
const BOM: u32 = 0x0102_0304;

/// What makes a tar file "the same file" for the cache.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct TarIdentity {
    /// Length in bytes.
    pub size: u64,
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: i64,
    /// Status-change time, seconds (changes on any write, cannot be set by users).
    pub ctime: i64,
    /// Status-change time, nanoseconds.
    pub ctime_nsec: i64,
}

impl TarIdentity {
    /// The identity of an open file.
    pub fn of(f: &File) -> io::Result<Self> {
        let m = f.metadata()?;
        Ok(TarIdentity {
            size: m.len(),
            dev: m.dev(),
            ino: m.ino(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ctime: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
        })
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
struct FileHeader {
    magic: [u8; 8],
    version: u32,
    bom: u32,
    id: TarIdentity,
    n_entries: u64,
    names_len: u64,
    extra_len: u64,
    n_owners: u64,
    n_members: u64,
    warnings_len: u64,
    end_off: u64,
    dropped: u64,
    /// Non-zero: the tar changed just before it was indexed ("racy"), and this is
    /// a checksum of its whole content, checked on every load.
    racy_sum: u64,
    sum_entries: u64,
    sum_names: u64,
    sum_extra: u64,
    sum_owners: u64,
    sum_members: u64,
    sum_warnings: u64,
    sum_header: u64,
}

fn pad8(n: u64) -> u64 {
    (n + 7) & !7
}

/// Writes `idx` for the tar `id` to `path`, atomically (temp file + rename).
///
/// `racy_sum`: see [`content_sum`]; `None` for a tar whose identity alone is proof.
pub fn save(
    path: &Path,
    idx: &LayerIndex,
    id: &TarIdentity,
    racy_sum: Option<u64>,
) -> io::Result<()> {
    let warnings = idx.warnings.join("\n").into_bytes();
    let entries: &[u8] = bytemuck::cast_slice(&idx.entries);
    let members: &[u8] = bytemuck::cast_slice(&idx.members);
    let owners: &[u8] = bytemuck::cast_slice(&idx.owners);
    let mut h = FileHeader {
        magic: MAGIC,
        version: VERSION,
        bom: BOM,
        id: *id,
        n_entries: idx.entries.len() as u64,
        names_len: idx.names.len() as u64,
        extra_len: idx.extra.len() as u64,
        n_owners: idx.owners.len() as u64,
        n_members: idx.members.len() as u64,
        warnings_len: warnings.len() as u64,
        end_off: idx.end_off,
        dropped: u64::from(idx.dropped),
        racy_sum: racy_sum.map_or(0, |v| v.max(1)),
        sum_entries: xxh3_64(entries),
        sum_names: xxh3_64(&idx.names),
        sum_extra: xxh3_64(&idx.extra),
        sum_owners: xxh3_64(owners),
        sum_members: xxh3_64(members),
        sum_warnings: xxh3_64(&warnings),
        sum_header: 0,
    };
    h.sum_header = xxh3_64(bytemuck::bytes_of(&h));
    let tmp = temp_name(path);
    let res = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        let mut w = io::BufWriter::with_capacity(1 << 20, &mut f);
        w.write_all(bytemuck::bytes_of(&h))?;
        for sec in [entries, &idx.names, &idx.extra, owners, members, &warnings] {
            w.write_all(sec)?;
            let pad = (pad8(sec.len() as u64) - sec.len() as u64) as usize;
            w.write_all(&[0u8; 8][..pad])?;
        }
        w.flush()?;
        drop(w);
        f.sync_data()?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Why a stored index was not used.
pub type Reject = String;

/// A checksum of a whole tar's content (xxh3), stored for "racy" indexes.
pub fn content_sum(f: &File) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    loop {
        let n = f.read_at(&mut buf, off)?;
        if n == 0 {
            return Ok(h.digest().max(1));
        }
        h.update(&buf[..n]);
        off += n as u64;
    }
}

/// Loads the index at `path` if it is intact and belongs to the tar `id`.
///
/// `tar` is the open tar: an index stored as racy is only accepted if the tar's
/// content still has the checksum it had.
///
/// With `members == false` the member table (only `verify` needs it) is skipped.
/// `Ok(Err(reason))` means "no usable index here": missing, stale or corrupt.
pub fn load(
    path: &Path,
    tar: Option<&File>,
    id: &TarIdentity,
    members: bool,
) -> io::Result<Result<LayerIndex, Reject>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Err("no index yet".into())),
        Err(e) => return Err(e),
    };
    let file_len = f.metadata()?.len();
    let mut h = FileHeader::zeroed();
    if f.read_exact(bytemuck::bytes_of_mut(&mut h)).is_err() {
        return Ok(Err("shorter than its header".into()));
    }
    if h.magic != MAGIC {
        return Ok(Err("not a unionfs index (bad magic)".into()));
    }
    if h.version != VERSION || h.bom != BOM {
        return Ok(Err(format!(
            "index format {} (this build reads {VERSION})",
            h.version
        )));
    }
    let stored_sum = h.sum_header;
    h.sum_header = 0;
    if xxh3_64(bytemuck::bytes_of(&h)) != stored_sum {
        return Ok(Err("header checksum mismatch".into()));
    }
    if h.id != *id {
        return Ok(Err("the tar changed since it was indexed".into()));
    }
    if h.racy_sum != 0 {
        let same = match tar {
            Some(t) => content_sum(t)? == h.racy_sum,
            None => false,
        };
        if !same {
            return Ok(Err("the tar changed since it was indexed (content)".into()));
        }
    }
    let rec = std::mem::size_of::<EntryRec>() as u64;
    let mem = std::mem::size_of::<Member>() as u64;
    let total = std::mem::size_of::<FileHeader>() as u64
        + pad8(h.n_entries.saturating_mul(rec))
        + pad8(h.names_len)
        + pad8(h.extra_len)
        + pad8(h.n_owners.saturating_mul(8))
        + pad8(h.n_members.saturating_mul(mem))
        + pad8(h.warnings_len);
    if total != file_len
        || h.n_entries == 0
        || h.n_entries >= u64::from(NONE)
        || h.n_owners > u64::from(OWNER_WIDE)
    {
        return Ok(Err("section sizes do not match the file".into()));
    }
    let mut idx = LayerIndex {
        entries: vec![EntryRec::zeroed(); h.n_entries as usize],
        names: vec![0; h.names_len as usize],
        extra: vec![0; h.extra_len as usize],
        owners: vec![[0, 0]; h.n_owners as usize],
        end_off: h.end_off,
        tar_size: id.size,
        dropped: h.dropped as u32,
        ..LayerIndex::default()
    };
    let mut checks = Vec::new();
    read_section(&mut f, bytemuck::cast_slice_mut(&mut idx.entries))?;
    checks.push((
        "entries",
        xxh3_64(bytemuck::cast_slice(&idx.entries)) == h.sum_entries,
    ));
    read_section(&mut f, &mut idx.names)?;
    checks.push(("names", xxh3_64(&idx.names) == h.sum_names));
    read_section(&mut f, &mut idx.extra)?;
    checks.push(("extra", xxh3_64(&idx.extra) == h.sum_extra));
    read_section(&mut f, bytemuck::cast_slice_mut(&mut idx.owners))?;
    checks.push((
        "owners",
        xxh3_64(bytemuck::cast_slice(&idx.owners)) == h.sum_owners,
    ));
    let mut warnings = vec![0u8; h.warnings_len as usize];
    if members {
        idx.members = vec![Member::zeroed(); h.n_members as usize];
        read_section(&mut f, bytemuck::cast_slice_mut(&mut idx.members))?;
        checks.push((
            "members",
            xxh3_64(bytemuck::cast_slice(&idx.members)) == h.sum_members,
        ));
    } else {
        // Skip the members (only `verify` needs them); the warnings still load,
        // so a layer served from a stored index reports what indexing dropped.
        let len = h.n_members * std::mem::size_of::<Member>() as u64;
        io::Seek::seek(&mut f, io::SeekFrom::Current(pad8(len) as i64))?;
    }
    read_section(&mut f, &mut warnings)?;
    checks.push(("warnings", xxh3_64(&warnings) == h.sum_warnings));
    idx.warnings = String::from_utf8_lossy(&warnings)
        .split('\n')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some((name, _)) = checks.iter().find(|(_, ok)| !ok) {
        return Ok(Err(format!("{name} section checksum mismatch")));
    }
    if let Err(why) = validate(&idx) {
        return Ok(Err(why));
    }
    Ok(Ok(idx))
}

fn read_section(f: &mut File, buf: &mut [u8]) -> io::Result<()> {
    f.read_exact(buf)?;
    let pad = (pad8(buf.len() as u64) - buf.len() as u64) as usize;
    let mut p = [0u8; 8];
    f.read_exact(&mut p[..pad])
}

/// Bounds-checks every cross reference, so that no accessor can index out of range.
pub fn validate(idx: &LayerIndex) -> Result<(), String> {
    let n = idx.entries.len() as u64;
    if idx.entries.first().is_none_or(|r| !r.is_dir()) {
        return Err("root entry is not a directory".into());
    }
    for (i, e) in idx.entries.iter().enumerate() {
        let bad = |what: &str| Err(format!("entry {i}: {what} out of range"));
        if u64::from(e.name_off) + u64::from(e.name_len) > idx.names.len() as u64 {
            return bad("name");
        }
        if u64::from(e.parent) >= n {
            return bad("parent");
        }
        if e.is_dir() && u64::from(e.pos) + u64::from(e.len) > n {
            return bad("children");
        }
        if e.has(F_HARDLINK) {
            let t = idx.entries.get(e.pos as usize);
            if t.is_none_or(|t| t.has(F_HARDLINK) || t.is_dir()) {
                return bad("hard link target");
            }
        }
        if e.extra != NONE && u64::from(e.extra) >= idx.extra.len() as u64 {
            return bad("extra");
        }
        let mut wide = 0;
        if e.has(F_WIDE) {
            let at = e.extra as usize;
            let Some(m) = idx.extra.get(at..at.saturating_add(4)) else {
                return bad("wide fields");
            };
            wide = u32::from_le_bytes(m.try_into().unwrap_or_default());
            if wide & !W_ALL != 0 || at.saturating_add(wide_len(wide)) > idx.extra.len() {
                return bad("wide fields");
            }
        }
        if (e.owner == OWNER_WIDE) != (wide & W_OWNER != 0)
            || (e.owner != OWNER_WIDE && usize::from(e.owner) >= idx.owners.len())
        {
            return bad("owner");
        }
    }
    Ok(())
}

/// A temporary name next to `path`, unique per process and per call: two
/// threads storing the same file (an image that lists one layer twice, as
/// docker's empty layers are) never write one temporary file together.
pub fn temp_name(path: &Path) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = path.parent().unwrap_or(Path::new("."));
    dir.join(format!(
        ".{}.tmp{}-{n}",
        path.file_name().and_then(|s| s.to_str()).unwrap_or("index"),
        std::process::id()
    ))
}
