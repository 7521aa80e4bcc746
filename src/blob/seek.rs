//! Seek tables of compressed blobs — gzip checkpoints, zstd frames — and the
//! forward decoder that builds them in the one pass that indexes a layer.
//!
//! A [`Decoder`] serves the uncompressed stream of a blob to a reader moving
//! forward (the tar scanner), and records the table as it goes; the table
//! ([`Table`]) is stored next to the layer's index (`save`/`load`, keyed by
//! the blob), so a later mount reads no compressed byte until a file is read.

use std::fs;
use std::io;
use std::path::Path;

use xxhash_rust::xxh3::xxh3_64;

use super::decoded::{Compressed, Decoded};
use super::gzip::{GzipIndex, GzipScanner};
use super::zstd::{FrameTable, ZstdScanner};
use super::Blob;
use crate::tar::scan::ReadAt;
use crate::tar::TarIdentity;

/// How a blob's bytes are encoded, told by their first bytes (never by a
/// name or a media type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Not compressed (a tar, or something that will fail as one).
    Plain,
    /// gzip (RFC 1952), one member or several.
    Gzip,
    /// zstd (RFC 8878), one frame or several.
    Zstd,
    /// A compression unionfs does not serve: its name.
    Unsupported(&'static str),
}

/// The encoding `src`'s first bytes show.
pub fn sniff<R: ReadAt + ?Sized>(src: &R) -> io::Result<Encoding> {
    let mut head = [0u8; 6];
    let n = crate::tar::scan::read_full(src, &mut head, 0)?;
    Ok(match &head[..n] {
        [0x1f, 0x8b, ..] => Encoding::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Encoding::Zstd,
        [b'B', b'Z', b'h', ..] => Encoding::Unsupported("bzip2"),
        [0xfd, b'7', b'z', b'X', b'Z', 0] => Encoding::Unsupported("xz"),
        _ => Encoding::Plain,
    })
}

/// A seek table.
#[derive(Debug)]
pub enum Table {
    /// gzip checkpoints.
    Gzip(GzipIndex),
    /// zstd frames.
    Zstd(FrameTable),
}

/// A zstd blob whose frames are larger than this is served from a copy
/// decompressed once (in the pass that indexes it): a single-frame blob — what
/// BuildKit and skopeo write — cannot be entered in the middle, and decoding
/// a whole frame for a 4 KiB read is far too slow. Measured on a 539 MB
/// single-frame layer: the copy costs 3x the disk of re-framing it into
/// seekable zstd, but its first pass is 2.5x faster, random reads 200x and
/// sequential reads 10x (docs/performance.md).
pub const MAX_FRAME: u64 = 16 << 20;

/// Returns true if and only if the blob `table` describes is served from a
/// decompressed copy rather than through its table.
pub fn keep_copy(table: &Table) -> bool {
    matches!(table, Table::Zstd(t) if t.max_frame_len() > MAX_FRAME)
}

impl Table {
    /// Length of the uncompressed stream.
    pub fn out_len(&self) -> u64 {
        match self {
            Table::Gzip(t) => t.out_len,
            Table::Zstd(t) => t.out_len,
        }
    }

    /// Number of spans (checkpoints, frames).
    pub fn spans(&self) -> usize {
        match self {
            Table::Gzip(t) => t.checkpoints.len(),
            Table::Zstd(t) => t.frames.len(),
        }
    }

    /// The blob `src`, readable at any uncompressed offset through this table.
    pub fn into_decoded(self, src: Blob) -> Decoded {
        match self {
            Table::Gzip(t) => Decoded::Gzip(Compressed::new(src, t)),
            Table::Zstd(t) => Decoded::Zstd(Compressed::new(src, t)),
        }
    }

    fn kind(&self) -> u32 {
        match self {
            Table::Gzip(_) => 1,
            Table::Zstd(_) => 2,
        }
    }
}

/// The forward decoder of one pass.
pub enum Decoder<'a, R: ReadAt + ?Sized> {
    /// gzip.
    Gzip(GzipScanner<'a, R>),
    /// zstd.
    Zstd(ZstdScanner<'a, R>),
}

impl<'a, R: ReadAt + ?Sized> Decoder<'a, R> {
    /// A decoder of `src` (`enc` must be gzip or zstd); gzip checkpoints
    /// every `spacing` uncompressed bytes. A zstd decoder also writes the
    /// whole uncompressed stream to `copy`, if given (see [`keep_copy`]).
    pub fn new(
        enc: Encoding,
        src: &'a R,
        spacing: u64,
        copy: Option<fs::File>,
    ) -> io::Result<Self> {
        match enc {
            Encoding::Gzip => Ok(Decoder::Gzip(GzipScanner::new(src, spacing))),
            Encoding::Zstd => Ok(Decoder::Zstd(match copy {
                Some(f) => ZstdScanner::with_sink(src, io::BufWriter::with_capacity(1 << 20, f)),
                None => ZstdScanner::new(src),
            })),
            other => Err(io::Error::other(format!(
                "{other:?} is not a compression unionfs decodes"
            ))),
        }
    }

    /// Decodes what is left and returns the table; a corrupt or truncated
    /// stream is an error naming the compressed offset.
    pub fn finish(self) -> io::Result<Table> {
        match self {
            Decoder::Gzip(d) => d.finish().map(Table::Gzip).map_err(io::Error::other),
            Decoder::Zstd(d) => d.finish().map(Table::Zstd).map_err(io::Error::from),
        }
    }
}

impl<R: ReadAt + ?Sized> ReadAt for Decoder<'_, R> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        match self {
            Decoder::Gzip(d) => d.read_at(buf, off),
            Decoder::Zstd(d) => d.read_at(buf, off),
        }
    }
    fn len(&self) -> io::Result<u64> {
        match self {
            Decoder::Gzip(d) => d.len(),
            Decoder::Zstd(d) => d.len(),
        }
    }
}

const MAGIC: [u8; 8] = *b"UFSSEEK\0";
const VERSION: u32 = 1;
/// magic, version, kind, identity (7 × u64), payload length, payload checksum.
const HEADER: usize = 8 + 4 + 4 + 7 * 8 + 8 + 8;

fn identity_bytes(id: &TarIdentity) -> Vec<u8> {
    bytemuck::bytes_of(id).to_vec()
}

/// Stores `table` for the blob `id` at `path` (atomically).
pub fn save(path: &Path, table: &Table, id: &TarIdentity) -> io::Result<()> {
    let payload = match table {
        Table::Gzip(t) => t.to_bytes(),
        Table::Zstd(t) => t.to_bytes(),
    };
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&table.kind().to_le_bytes());
    out.extend_from_slice(&identity_bytes(id));
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&xxh3_64(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    super::verified::write_atomic(path, &out)
}

/// Loads the table stored at `path` for the blob `id`: `Ok(None)` if there
/// is none, or it is for another blob, or it is damaged in any way (it is
/// then rebuilt, never trusted).
pub fn load(path: &Path, id: &TarIdentity) -> io::Result<Option<Table>> {
    let b = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if b.len() < HEADER || b[..8] != MAGIC || b[8..12] != VERSION.to_le_bytes() {
        return Ok(None);
    }
    let kind = u32::from_le_bytes(b[12..16].try_into().expect("4 bytes"));
    if b[16..16 + 56] != identity_bytes(id)[..] {
        return Ok(None);
    }
    let len = u64::from_le_bytes(b[72..80].try_into().expect("8 bytes"));
    let sum = u64::from_le_bytes(b[80..88].try_into().expect("8 bytes"));
    let payload = &b[HEADER..];
    if payload.len() as u64 != len || xxh3_64(payload) != sum {
        return Ok(None);
    }
    let table = match kind {
        1 => GzipIndex::from_bytes(payload).ok().map(Table::Gzip),
        2 => FrameTable::from_bytes(payload).ok().map(Table::Zstd),
        _ => None,
    };
    Ok(table)
}
