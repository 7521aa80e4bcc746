//! Random access into gzip-compressed blobs: zran checkpoints.
//!
//! A deflate stream can only be decoded from its start — unless the decoder
//! is resumed at a block boundary with the bits left over from the byte the
//! previous block ended in and the 32 KiB of output that back-references may
//! reach (the technique of zlib's `examples/zran.c`, indexed_gzip's `zran.c`
//! and SOCI's ztoc). One sequential pass ([`GzipScanner`]) inflates the whole
//! blob — every member of a multi-member gzip (pigz, eStargz) — checks each
//! member's CRC32 and ISIZE, and records a [`Checkpoint`] at every member start
//! and at the first block boundary after every `spacing` bytes of output.
//! Afterwards [`inflate_span`] decodes any span between two checkpoints
//! from the blob alone: reads cost at most one span of inflation.
//!
//! This module knows nothing of tar: it maps uncompressed offsets to bytes.
//! The zlib calls are behind the safe `RawInflater` of `zlib.rs`.
//!
//! What is rejected, each as [`GzipError::Corrupt`] with the compressed offset
//! where the problem shows: a missing or bad gzip header (magic, method,
//! reserved flags, FHCRC), a stream that ends inside a header, the deflate
//! data or a trailer (offset: the end of the input), corrupt deflate data, a
//! CRC32 or ISIZE mismatch (offset: the trailer), and trailing garbage after
//! the last member. Trailing *zero bytes* are accepted and skipped: they carry
//! no data (tape/block padding, `dd conv=sync`), GNU gzip ignores them
//! silently, and the blob's digest is checked anyway; anything else after the
//! last member — what GNU gzip only warns about as "trailing garbage" — is an
//! error, as in Go's `compress/gzip`, which docker and containerd use: bytes
//! that are not a member are a damaged or mislabelled blob, not data to drop.

use std::fmt;
use std::io;

use parking_lot::Mutex;

use super::zlib::RawInflater;
use crate::tar::scan::{ReadAt, UNKNOWN_LEN};

/// Back-references of deflate reach at most this far.
const WINDOW: usize = 32 << 10;
/// The scanner keeps at least this much output behind the furthest read.
pub const RETAIN: u64 = 1 << 20;
/// The scanner's output buffer (retained output + room to inflate into).
const OUT_CAP: usize = 4 << 20;
/// Below this much free room, the scanner drops what it need not retain.
const MIN_SPARE: usize = 512 << 10;
/// Sequential reads of the compressed blob are this large.
const SCAN_CHUNK: usize = 512 << 10;
/// Bounds of the read size when inflating one span.
const SPAN_CHUNK: (usize, usize) = (16 << 10, 1 << 20);

/// A bad gzip blob, or a failed read of it.
#[derive(Debug, thiserror::Error)]
pub enum GzipError {
    /// Reading the blob failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The blob is not a valid gzip stream.
    #[error("offset {offset}: {reason}")]
    Corrupt {
        /// Offset in the compressed blob where the problem shows.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

impl GzipError {
    /// A copy, for errors that stay sticky (io::Error is not `Clone`).
    fn dup(&self) -> GzipError {
        match self {
            GzipError::Io(e) => GzipError::Io(io::Error::new(e.kind(), e.to_string())),
            GzipError::Corrupt { offset, reason } => GzipError::Corrupt {
                offset: *offset,
                reason: reason.clone(),
            },
        }
    }
}

/// A corrupt blob is `InvalidData`, carrying the [`GzipError`] (downcast it
/// from `get_ref()` for the offset); a read error stays itself.
impl From<GzipError> for io::Error {
    fn from(e: GzipError) -> io::Error {
        match e {
            GzipError::Io(e) => e,
            c => io::Error::new(io::ErrorKind::InvalidData, c),
        }
    }
}

fn corrupt<T>(offset: u64, reason: impl Into<String>) -> Result<T, GzipError> {
    Err(GzipError::Corrupt {
        offset,
        reason: reason.into(),
    })
}

/// Where inflation can resume.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Offset in the uncompressed stream.
    pub out_off: u64,
    /// Offset in the compressed blob of the first byte not yet touched.
    pub in_off: u64,
    /// Unused high bits (0..=7) of the byte at `in_off - 1` that belong to
    /// the next block (zran's `bits`).
    pub bits: u8,
    /// The up to 32 KiB of output of the same member just before `out_off`
    /// (empty at a member's start).
    pub window: Vec<u8>,
}

/// The checkpoints of one gzip blob.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GzipIndex {
    /// Sorted by strictly increasing `out_off`; the first at `out_off` 0.
    pub checkpoints: Vec<Checkpoint>,
    /// Length of the uncompressed stream.
    pub out_len: u64,
    /// Length of the compressed blob (with any trailing zero padding).
    pub in_len: u64,
}

/// Serialised index: magic and version.
const MAGIC: &[u8; 5] = b"UGZI\x01";
/// Flag in a serialised checkpoint's bits byte: the window is stored as is.
const STORED: u8 = 0x80;

impl GzipIndex {
    /// Builds the index of `src` in one sequential pass (see [`GzipScanner`]).
    pub fn build<R: ReadAt + ?Sized>(src: &R, spacing: u64) -> Result<GzipIndex, GzipError> {
        GzipScanner::new(src, spacing).finish()
    }

    /// Index of the checkpoint at or below `out_off` (the span holding it).
    pub fn span_of(&self, out_off: u64) -> usize {
        self.checkpoints
            .partition_point(|c| c.out_off <= out_off)
            .saturating_sub(1)
    }

    /// The compact form: varint deltas, each window raw-deflated (or stored
    /// if that is no smaller), a CRC32 of it all at the end.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        put_varint(&mut b, self.out_len);
        put_varint(&mut b, self.in_len);
        put_varint(&mut b, self.checkpoints.len() as u64);
        let (mut out, mut inp) = (0u64, 0u64);
        let mut scratch = vec![0u8; zlib_rs::compress_bound(WINDOW) + 64];
        for c in &self.checkpoints {
            put_varint(&mut b, c.out_off.wrapping_sub(out));
            put_varint(&mut b, c.in_off.wrapping_sub(inp));
            (out, inp) = (c.out_off, c.in_off);
            let packed = deflate_window(&c.window, &mut scratch);
            b.push(c.bits | if packed.is_none() { STORED } else { 0 });
            put_varint(&mut b, c.window.len() as u64);
            if let Some(p) = packed {
                put_varint(&mut b, p.len() as u64);
                b.extend_from_slice(p);
            } else {
                b.extend_from_slice(&c.window);
            }
        }
        let crc = zlib_rs::crc32::crc32(0, &b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses and validates [`GzipIndex::to_bytes`]'s output: checksum,
    /// order, bounds, windows. Never panics, whatever `b` holds.
    pub fn from_bytes(b: &[u8]) -> Result<GzipIndex, String> {
        if b.len() < MAGIC.len() + 4 || &b[..MAGIC.len()] != MAGIC {
            return Err("not a gzip index (bad magic or version)".into());
        }
        let (body, crc) = b.split_at(b.len() - 4);
        let want = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if zlib_rs::crc32::crc32(0, body) != want {
            return Err("gzip index checksum mismatch".into());
        }
        let mut r = Cursor(&body[MAGIC.len()..]);
        let out_len = r.varint()?;
        let in_len = r.varint()?;
        let n = r.varint()?;
        // Each checkpoint takes at least 4 bytes: no huge allocation from garbage.
        if n == 0 || n > (r.0.len() / 4) as u64 {
            return Err(format!("bad checkpoint count {n}"));
        }
        let mut checkpoints = Vec::with_capacity(n as usize);
        let (mut out, mut inp) = (0u64, 0u64);
        for i in 0..n {
            out = out.checked_add(r.varint()?).ok_or("offset overflow")?;
            inp = inp.checked_add(r.varint()?).ok_or("offset overflow")?;
            let flags = r.byte()?;
            let wlen = r.varint()?;
            if wlen > WINDOW as u64 {
                return Err(format!("checkpoint {i}: window of {wlen} bytes"));
            }
            let window = if flags & STORED != 0 {
                r.take(wlen)?.to_vec()
            } else {
                let clen = r.varint()?;
                inflate_window(r.take(clen)?, wlen as usize)
                    .ok_or_else(|| format!("checkpoint {i}: corrupt window"))?
            };
            checkpoints.push(Checkpoint {
                out_off: out,
                in_off: inp,
                bits: flags & !STORED,
                window,
            });
        }
        if !r.0.is_empty() {
            return Err("trailing bytes after the last checkpoint".into());
        }
        let idx = GzipIndex {
            checkpoints,
            out_len,
            in_len,
        };
        idx.validate()?;
        Ok(idx)
    }

    /// Checks the invariants [`inflate_span`] relies on.
    pub fn validate(&self) -> Result<(), String> {
        let Some(first) = self.checkpoints.first() else {
            return Err("no checkpoint".into());
        };
        if first.out_off != 0 {
            return Err("the first checkpoint is not at offset 0".into());
        }
        let mut prev: Option<&Checkpoint> = None;
        for (i, c) in self.checkpoints.iter().enumerate() {
            let bad = |what: &str| Err(format!("checkpoint {i}: {what}"));
            if c.bits > 7 || (c.bits > 0 && c.in_off == 0) {
                return bad("bad bit count");
            }
            if c.in_off > self.in_len {
                return bad("compressed offset past the end");
            }
            if c.window.len() > WINDOW || c.window.len() as u64 > c.out_off {
                return bad("window longer than the output before it");
            }
            if let Some(p) = prev {
                if c.out_off <= p.out_off || c.out_off >= self.out_len {
                    return bad("uncompressed offset out of order or past the end");
                }
                let bit = |c: &Checkpoint| u128::from(c.in_off) * 8 - u128::from(c.bits);
                if bit(c) <= bit(p) {
                    return bad("compressed offset out of order");
                }
            }
            prev = Some(c);
        }
        Ok(())
    }
}

fn put_varint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push(v as u8 | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

/// A bounds-checked reader of the serialised index.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Result<u8, String> {
        let (&b, rest) = self.0.split_first().ok_or("gzip index truncated")?;
        self.0 = rest;
        Ok(b)
    }
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            if shift == 63 && b > 1 {
                break;
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("bad varint in gzip index".into())
    }
    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        if n > self.0.len() as u64 {
            return Err("gzip index truncated".into());
        }
        let (a, rest) = self.0.split_at(n as usize);
        self.0 = rest;
        Ok(a)
    }
}

/// Raw deflate of a window, or `None` where storing it is no larger.
fn deflate_window<'s>(w: &[u8], scratch: &'s mut [u8]) -> Option<&'s [u8]> {
    if w.is_empty() {
        return None;
    }
    let cfg = zlib_rs::DeflateConfig {
        level: 9,
        window_bits: -15,
        ..Default::default()
    };
    let (c, rc) = zlib_rs::compress_slice(scratch, w, cfg);
    (rc == zlib_rs::ReturnCode::Ok && c.len() < w.len()).then_some(&*c)
}

fn inflate_window(c: &[u8], len: usize) -> Option<Vec<u8>> {
    let mut w = vec![0u8; len];
    let cfg = zlib_rs::InflateConfig { window_bits: -15 };
    let (got, rc) = zlib_rs::decompress_slice(&mut w, c, cfg);
    (rc == zlib_rs::ReturnCode::Ok && got.len() == len).then_some(w)
}

/// Where the decoder is in the gzip format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before a member header (or the end).
    Header,
    /// Inside a member's deflate data.
    Deflate,
    /// After the last member.
    End,
}

/// What one [`Decoder::step`] did.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Inflated bytes into the output; `boundary` if it stopped at a block
    /// boundary where a checkpoint can be taken.
    Data { produced: usize, boundary: bool },
    /// Parsed a member header: the decoder is at the start of its deflate data.
    Member,
    /// The stream is over (after the last member and any zero padding).
    End,
}

/// The gzip format over a forward-read blob: headers, deflate data (raw
/// inflate), trailers, members one after another.
struct Decoder<'a, R: ReadAt + ?Sized> {
    src: &'a R,
    inf: RawInflater,
    /// Compressed bytes `[base, base + len)`; `pos` is the next unused one.
    buf: Vec<u8>,
    base: u64,
    pos: usize,
    len: usize,
    chunk: usize,
    state: State,
    /// Check CRC32 and ISIZE (only when decoding members from their start).
    verify: bool,
    crc: u32,
    member_out: u64,
    /// Where the current member's header starts (unknown when resumed mid-member).
    member_off: Option<u64>,
    /// Members finished: an empty input is no gzip, and after the first one
    /// the end of the input is clean.
    members: u64,
    /// Leftover bits after the last inflate call.
    bits: u8,
}

impl<'a, R: ReadAt + ?Sized> Decoder<'a, R> {
    fn new(src: &'a R, at: u64, chunk: usize, state: State, inf: RawInflater) -> Self {
        Decoder {
            src,
            inf,
            buf: vec![0u8; chunk],
            base: at,
            pos: 0,
            len: 0,
            chunk,
            state,
            verify: state == State::Header,
            crc: 0,
            member_out: 0,
            member_off: (state == State::Header).then_some(at),
            members: u64::from(state != State::Header),
            bits: 0,
        }
    }

    /// "; member at offset N", for messages.
    fn which(&self) -> String {
        self.member_off
            .map_or(String::new(), |m| format!("; member at offset {m}"))
    }

    /// Offset of the next unused compressed byte.
    fn in_pos(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Where a checkpoint taken now resumes: (in_off, bits), as zran.
    fn resume_point(&self) -> (u64, u8) {
        let bit = self.in_pos() * 8 - u64::from(self.bits);
        let in_off = bit.div_ceil(8);
        (in_off, (in_off * 8 - bit) as u8)
    }

    /// Reads the next chunk once the buffer is used up; false at the end.
    fn refill(&mut self) -> Result<bool, GzipError> {
        debug_assert_eq!(self.pos, self.len);
        self.base += self.len as u64;
        self.pos = 0;
        self.len = 0;
        loop {
            match self.src.read_at(&mut self.buf[..self.chunk], self.base) {
                Ok(n) => {
                    self.len = n;
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn byte(&mut self) -> Result<Option<u8>, GzipError> {
        if self.pos == self.len && !self.refill()? {
            return Ok(None);
        }
        self.pos += 1;
        Ok(Some(self.buf[self.pos - 1]))
    }

    /// A byte that must be there: else "truncated {what}" at the input's end.
    fn need(&mut self, what: &str) -> Result<u8, GzipError> {
        match self.byte()? {
            Some(b) => Ok(b),
            None => corrupt(
                self.in_pos(),
                format!("truncated gzip {what} (the input ends{})", self.which()),
            ),
        }
    }

    fn step(&mut self, out: &mut [u8], stop_at_block: bool) -> Result<Step, GzipError> {
        match self.state {
            State::End => Ok(Step::End),
            State::Header => {
                if self.header()? {
                    self.state = State::Deflate;
                    Ok(Step::Member)
                } else {
                    self.state = State::End;
                    Ok(Step::End)
                }
            }
            State::Deflate => self.inflate(out, stop_at_block),
        }
    }

    /// Parses a member header (RFC 1952 §2.3); false at a clean end.
    fn header(&mut self) -> Result<bool, GzipError> {
        let start = self.in_pos();
        self.member_off = Some(start);
        let Some(id1) = self.byte()? else {
            if self.members == 0 {
                return corrupt(start, "empty input: no gzip member");
            }
            return Ok(false);
        };
        if id1 == 0 && self.members > 0 {
            return self.zero_padding();
        }
        let id2 = self.byte()?;
        if id1 != 0x1f || id2.is_some_and(|b| b != 0x8b) {
            if self.members == 0 {
                return corrupt(start, "not gzip (no 1f 8b magic)");
            }
            return corrupt(start, "trailing garbage after the last gzip member");
        }
        if id2.is_none() {
            return corrupt(self.in_pos(), "truncated gzip header (the input ends)");
        }
        let mut h = [id1, 0x8b, 0, 0, 0, 0, 0, 0, 0, 0];
        for b in &mut h[2..] {
            *b = self.need("header")?;
        }
        let (cm, flg) = (h[2], h[3]);
        if cm != 8 {
            return corrupt(start, format!("unsupported compression method {cm}"));
        }
        if flg & 0xe0 != 0 {
            return corrupt(
                start,
                format!("reserved gzip header flags set ({flg:#04x})"),
            );
        }
        let mut hcrc = zlib_rs::crc32::crc32(0, &h);
        let mut take = |d: &mut Self, what: &str| -> Result<u8, GzipError> {
            let b = d.need(what)?;
            if flg & 2 != 0 {
                hcrc = zlib_rs::crc32::crc32(hcrc, &[b]);
            }
            Ok(b)
        };
        if flg & 4 != 0 {
            // FEXTRA: XLEN, then XLEN bytes of subfields.
            let xlen = u16::from_le_bytes([take(self, "header")?, take(self, "header")?]);
            for _ in 0..xlen {
                take(self, "header (extra field)")?;
            }
        }
        for (flag, what) in [(8, "header (file name)"), (16, "header (comment)")] {
            // FNAME, FCOMMENT: zero-terminated.
            if flg & flag != 0 {
                while take(self, what)? != 0 {}
            }
        }
        if flg & 2 != 0 {
            // FHCRC: the low 16 bits of the CRC32 of the header so far.
            let at = self.in_pos();
            let want = u16::from_le_bytes([self.need("header")?, self.need("header")?]);
            if want != hcrc as u16 {
                return corrupt(at, "gzip header CRC16 mismatch");
            }
        }
        self.inf.reset();
        self.crc = 0;
        self.member_out = 0;
        self.bits = 0;
        self.verify = true;
        Ok(true)
    }

    /// After the last member: zero bytes to the end, else garbage.
    fn zero_padding(&mut self) -> Result<bool, GzipError> {
        loop {
            if self.pos == self.len && !self.refill()? {
                return Ok(false);
            }
            let rest = &self.buf[self.pos..self.len];
            if let Some(i) = rest.iter().position(|&b| b != 0) {
                return corrupt(
                    self.in_pos() + i as u64,
                    "trailing garbage after the last gzip member (after zero padding)",
                );
            }
            self.pos = self.len;
        }
    }

    fn inflate(&mut self, out: &mut [u8], stop_at_block: bool) -> Result<Step, GzipError> {
        if self.pos == self.len && !self.refill()? {
            let why = format!("truncated deflate data (the input ends{})", self.which());
            return corrupt(self.in_pos(), why);
        }
        let r = match self
            .inf
            .inflate(&self.buf[self.pos..self.len], out, stop_at_block)
        {
            Ok(r) => r,
            Err(e) => {
                let at = self.in_pos() + e.consumed as u64;
                return corrupt(at, format!("corrupt deflate data: {}", e.msg));
            }
        };
        self.pos += r.consumed;
        self.bits = r.leftover_bits;
        if self.verify {
            self.crc = zlib_rs::crc32::crc32(self.crc, &out[..r.produced]);
        }
        self.member_out += r.produced as u64;
        if r.stream_end {
            self.trailer()?;
        } else if r.consumed == 0 && r.produced == 0 && !out.is_empty() {
            return corrupt(self.in_pos(), "deflate decoder made no progress");
        }
        Ok(Step::Data {
            produced: r.produced,
            boundary: stop_at_block && r.at_block_boundary && !r.last_block && !r.stream_end,
        })
    }

    /// CRC32 and ISIZE (RFC 1952 §2.3.1) after a member's deflate data.
    fn trailer(&mut self) -> Result<(), GzipError> {
        let at = self.in_pos();
        let mut t = [0u8; 8];
        for b in &mut t {
            *b = self.need("trailer")?;
        }
        let crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
        let isize = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
        let m = self.which();
        if self.verify && crc != self.crc {
            let why = format!(
                "CRC32 mismatch in a gzip trailer{m}: stored {crc:08x}, data has {:08x}",
                self.crc
            );
            return corrupt(at, why);
        }
        if self.verify && u64::from(isize) != self.member_out & 0xffff_ffff {
            let why = format!(
                "ISIZE mismatch in a gzip trailer{m}: stored {isize}, data has {} bytes",
                self.member_out
            );
            return corrupt(at, why);
        }
        self.members += 1;
        self.state = State::Header;
        Ok(())
    }
}

/// Forward-only reader of the uncompressed stream of the gzip blob `src` (all
/// members), building the index as it goes.
///
/// As a [`ReadAt`] it serves any offset at or after the furthest offset
/// served so far minus [`RETAIN`] (1 MiB): it keeps that much output,
/// inflates forward as far as a read needs (passing through checkpoints and
/// CRC checks), and returns fewer bytes than asked only at the end of the
/// stream. A read further behind is an `io::Error` (a caller bug); a corrupt
/// blob is an `InvalidData` error carrying the [`GzipError`], and stays so.
/// [`ReadAt::len`] answers [`UNKNOWN_LEN`] until the end has been reached.
///
/// The blob is read strictly forward in 512 KiB reads. Memory: a 4 MiB
/// output buffer, a 512 KiB input buffer, the inflater's ~40 KiB, the index.
pub struct GzipScanner<'a, R: ReadAt + ?Sized> {
    inner: Mutex<Scan<'a, R>>,
}

struct Scan<'a, R: ReadAt + ?Sized> {
    dec: Decoder<'a, R>,
    spacing: u64,
    /// Output `[out_base, out_base + filled)`.
    out: Vec<u8>,
    out_base: u64,
    filled: usize,
    /// The furthest offset a read reached (or started at).
    furthest: u64,
    /// Where the current member's output started.
    member_start: u64,
    checkpoints: Vec<Checkpoint>,
    done: bool,
    error: Option<GzipError>,
}

impl<'a, R: ReadAt + ?Sized> GzipScanner<'a, R> {
    /// A scanner of `src` taking a checkpoint at every member start and at
    /// the first deflate block boundary after each `spacing` bytes of output.
    pub fn new(src: &'a R, spacing: u64) -> Self {
        let dec = Decoder::new(src, 0, SCAN_CHUNK, State::Header, RawInflater::new());
        GzipScanner {
            inner: Mutex::new(Scan {
                dec,
                spacing,
                out: vec![0u8; OUT_CAP],
                out_base: 0,
                filled: 0,
                furthest: 0,
                member_start: 0,
                checkpoints: Vec::new(),
                done: false,
                error: None,
            }),
        }
    }

    /// Inflates what is left to the end (checking every trailer) and returns
    /// the index.
    pub fn finish(self) -> Result<GzipIndex, GzipError> {
        let mut s = self.inner.into_inner();
        if let Some(e) = s.error.take() {
            return Err(e);
        }
        s.furthest = u64::MAX;
        while s.advance()? {}
        let out_len = s.produced();
        let mut checkpoints = s.checkpoints;
        // Checkpoints at the very end (empty trailing members) hold no span.
        while checkpoints.len() > 1 && checkpoints.last().is_some_and(|c| c.out_off >= out_len) {
            checkpoints.pop();
        }
        Ok(GzipIndex {
            checkpoints,
            out_len,
            in_len: s.dec.in_pos(),
        })
    }
}

impl<'a, R: ReadAt + ?Sized> Scan<'a, R> {
    fn produced(&self) -> u64 {
        self.out_base + self.filled as u64
    }

    /// Inflates one step into the output buffer; false at the end.
    fn advance(&mut self) -> Result<bool, GzipError> {
        if self.done {
            return Ok(false);
        }
        if self.out.len() - self.filled < MIN_SPARE {
            self.shift();
        }
        let produced = self.produced();
        // Stop exactly where the spacing is reached, then at the next block end.
        let since = self.checkpoints.last().map_or(0, |c| produced - c.out_off);
        let (room, at_block) = match self.spacing.checked_sub(since) {
            Some(left) if left > 0 => ((self.out.len() - self.filled).min(left as usize), false),
            _ => (self.out.len() - self.filled, !self.checkpoints.is_empty()),
        };
        let out = &mut self.out[self.filled..self.filled + room];
        match self.dec.step(out, at_block)? {
            Step::End => self.done = true,
            Step::Member => {
                self.member_start = produced;
                let in_off = self.dec.in_pos();
                self.push(Checkpoint {
                    out_off: produced,
                    in_off,
                    bits: 0,
                    window: Vec::new(),
                });
            }
            Step::Data {
                produced: n,
                boundary,
            } => {
                self.filled += n;
                if boundary {
                    let (in_off, bits) = self.dec.resume_point();
                    let w = (self.produced() - self.member_start).min(WINDOW as u64) as usize;
                    let window = self.out[self.filled - w..self.filled].to_vec();
                    let out_off = self.produced();
                    self.push(Checkpoint {
                        out_off,
                        in_off,
                        bits,
                        window,
                    });
                }
            }
        }
        Ok(!self.done)
    }

    /// Records a checkpoint; one at the same output offset as the last replaces it.
    fn push(&mut self, c: Checkpoint) {
        match self.checkpoints.last_mut() {
            Some(last) if last.out_off == c.out_off => *last = c,
            _ => self.checkpoints.push(c),
        }
    }

    /// Drops the output no read may ask for again (keeps ≥ RETAIN ≥ WINDOW).
    fn shift(&mut self) {
        let keep_from = self
            .furthest
            .min(self.produced())
            .saturating_sub(RETAIN)
            .max(self.out_base);
        let drop = (keep_from - self.out_base) as usize;
        self.out.copy_within(drop..self.filled, 0);
        self.filled -= drop;
        self.out_base = keep_from;
    }

    fn read(&mut self, buf: &mut [u8], off: u64) -> Result<usize, GzipError> {
        self.furthest = self.furthest.max(off);
        let mut n = 0;
        while n < buf.len() {
            let cur = off + n as u64;
            if cur < self.produced() {
                let from = (cur - self.out_base) as usize;
                let k = (buf.len() - n).min(self.filled - from);
                buf[n..n + k].copy_from_slice(&self.out[from..from + k]);
                n += k;
                self.furthest = self.furthest.max(off + n as u64);
            } else if !self.advance()? {
                break;
            }
        }
        Ok(n)
    }
}

impl<R: ReadAt + ?Sized> ReadAt for GzipScanner<'_, R> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let mut s = self.inner.lock();
        if let Some(e) = &s.error {
            return Err(e.dup().into());
        }
        if off < s.out_base {
            return Err(io::Error::other(format!(
                "gzip stream: read at {off} is behind the retained output (from {})",
                s.out_base
            )));
        }
        s.read(buf, off).map_err(|e| {
            s.error = Some(e.dup());
            e.into()
        })
    }

    fn len(&self) -> io::Result<u64> {
        let s = self.inner.lock();
        Ok(if s.done { s.produced() } else { UNKNOWN_LEN })
    }
}

impl<R: ReadAt + ?Sized> fmt::Debug for GzipScanner<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.inner.lock();
        f.debug_struct("GzipScanner")
            .field("produced", &s.produced())
            .field("checkpoints", &s.checkpoints.len())
            .field("done", &s.done)
            .finish()
    }
}

/// Inflates span `i` of `idx`: from checkpoint `i`'s `out_off` up to the
/// next checkpoint's (or the end), reading only that part of `src`.
pub fn inflate_span<R: ReadAt + ?Sized>(src: &R, idx: &GzipIndex, i: usize) -> io::Result<Vec<u8>> {
    let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
    let cp = idx
        .checkpoints
        .get(i)
        .ok_or_else(|| invalid(format!("no checkpoint {i}")))?;
    let next = idx.checkpoints.get(i + 1);
    let end = next.map_or(idx.out_len, |c| c.out_off);
    let want = end
        .checked_sub(cp.out_off)
        .and_then(|w| usize::try_from(w).ok())
        .ok_or_else(|| invalid(format!("bad span {i}")))?;
    let mut out = vec![0u8; want];
    if want == 0 {
        return Ok(out);
    }
    let in_end = next.map_or(idx.in_len, |c| c.in_off);
    let hint = in_end.saturating_sub(cp.in_off) as usize + 16;
    let chunk = hint.clamp(SPAN_CHUNK.0, SPAN_CHUNK.1);
    let prime_byte = u64::from(cp.bits > 0);
    let start = cp
        .in_off
        .checked_sub(prime_byte)
        .ok_or_else(|| invalid("bad checkpoint".into()))?;
    let mut dec = Decoder::new(src, start, chunk, State::Deflate, RawInflater::new());
    if cp.bits > 0 {
        let b = dec.need("deflate data")?;
        dec.inf
            .prime(cp.bits, u32::from(b >> (8 - cp.bits)))
            .map_err(invalid)?;
    }
    if !cp.window.is_empty() {
        dec.inf.set_dictionary(&cp.window).map_err(invalid)?;
    }
    let mut n = 0;
    while n < want {
        match dec.step(&mut out[n..], false)? {
            Step::Data { produced, .. } => n += produced,
            Step::Member => {}
            Step::End => {
                let reason = format!("the gzip stream ends before span {i} does (stale index?)");
                let offset = dec.in_pos();
                return Err(GzipError::Corrupt { offset, reason }.into());
            }
        }
    }
    Ok(out)
}

/// Reads uncompressed bytes at `off` through the index (inflating each span
/// touched); returns fewer than `buf.len()` only at the end of the stream.
pub fn read_at<R: ReadAt + ?Sized>(
    src: &R,
    idx: &GzipIndex,
    buf: &mut [u8],
    off: u64,
) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() && off + (n as u64) < idx.out_len {
        let cur = off + n as u64;
        let i = idx.span_of(cur);
        let span = inflate_span(src, idx, i)?;
        let from = (cur - idx.checkpoints[i].out_off) as usize;
        if from >= span.len() {
            break;
        }
        let k = (buf.len() - n).min(span.len() - from);
        buf[n..n + k].copy_from_slice(&span[from..from + k]);
        n += k;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    /// A pseudo-random generator (xorshift), for reproducible data.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Text-like data with repeats, random bytes and zero runs mixed.
    pub(super) fn mixed(n: usize, seed: u64) -> Vec<u8> {
        let mut r = Rng(seed | 1);
        let words: [&[u8]; 6] = [
            b"layer ",
            b"tar ",
            b"gzip\n",
            b"0644 ",
            b"usr/lib/",
            b"deflate ",
        ];
        let mut v = Vec::with_capacity(n + 64);
        while v.len() < n {
            match r.next() % 10 {
                0 => v.extend((0..r.next() % 3000).map(|_| r.next() as u8)),
                1 => v.resize(v.len() + (r.next() % 5000) as usize, 0),
                _ => v.extend_from_slice(words[(r.next() % 6) as usize]),
            }
        }
        v.truncate(n);
        v
    }

    /// One gzip member made in process: `flags` adds FEXTRA, FNAME, FCOMMENT, FHCRC.
    fn member(data: &[u8], level: i32, flags: u8) -> Vec<u8> {
        let mut h = vec![0x1f, 0x8b, 8, flags, 1, 2, 3, 4, 0, 3];
        if flags & 4 != 0 {
            h.extend_from_slice(&[5, 0, b'A', b'B', 1, 0, 9]);
        }
        if flags & 8 != 0 {
            h.extend_from_slice(b"name.tar\0");
        }
        if flags & 16 != 0 {
            h.extend_from_slice(b"a comment\0");
        }
        if flags & 2 != 0 {
            let c = zlib_rs::crc32::crc32(0, &h) as u16;
            h.extend_from_slice(&c.to_le_bytes());
        }
        let mut c = vec![0u8; zlib_rs::compress_bound(data.len()) + 64];
        let cfg = zlib_rs::DeflateConfig {
            level,
            window_bits: -15,
            ..Default::default()
        };
        let (d, rc) = zlib_rs::compress_slice(&mut c, data, cfg);
        assert_eq!(rc, zlib_rs::ReturnCode::Ok);
        h.extend_from_slice(d);
        h.extend_from_slice(&zlib_rs::crc32::crc32(0, data).to_le_bytes());
        h.extend_from_slice(&(data.len() as u32).to_le_bytes());
        h
    }

    /// `prog args` with `input` on stdin; `None` if `prog` is not installed.
    pub(super) fn run(prog: &str, args: &[&str], input: &[u8]) -> Option<Vec<u8>> {
        let mut ch = Command::new(prog)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        let mut stdin = ch.stdin.take().unwrap();
        let input = input.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&input));
        let out = ch.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        assert!(out.status.success(), "{prog} {args:?} failed");
        Some(out.stdout)
    }

    /// A real layer-like tar: this crate's sources, a random file, zeros.
    pub(super) fn sample_tar() -> Vec<u8> {
        let mut b = ::tar::Builder::new(Vec::new());
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        b.append_dir_all("src", root.join("src")).unwrap();
        let mut rng = Rng(42);
        for (name, data) in [
            (
                "random.bin",
                (0..700_000).map(|_| rng.next() as u8).collect(),
            ),
            ("zeros", vec![0u8; 1 << 20]),
            ("mixed", mixed(1 << 20, 7)),
        ] {
            let mut h = ::tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// Builds the index of `gz`, checks it against `plain` everywhere that matters.
    fn check(gz: &[u8], plain: &[u8], spacing: u64) -> GzipIndex {
        let idx = GzipIndex::build(gz, spacing).unwrap();
        idx.validate().unwrap();
        assert_eq!(idx.out_len, plain.len() as u64);
        assert_eq!(idx.in_len, gz.len() as u64);
        assert_eq!(GzipIndex::from_bytes(&idx.to_bytes()).unwrap(), idx);
        // Every span, hence every byte.
        for i in 0..idx.checkpoints.len() {
            let c = &idx.checkpoints[i];
            let span = inflate_span(gz, &idx, i).unwrap();
            let o = c.out_off as usize;
            assert_eq!(
                &span[..],
                &plain[o..o + span.len()],
                "span {i} of {}",
                idx.checkpoints.len()
            );
        }
        // Reads at and around each boundary, across it, and the last byte.
        let mut buf = vec![0u8; 300];
        let offs = idx.checkpoints.iter().flat_map(|c| {
            (c.out_off.saturating_sub(2)..c.out_off + 2).chain([c.out_off.saturating_sub(150)])
        });
        for off in offs.chain([plain.len().saturating_sub(1) as u64, plain.len() as u64]) {
            for len in [1usize, 300] {
                let n = read_at(gz, &idx, &mut buf[..len], off).unwrap();
                let want = &plain[(off as usize).min(plain.len())..]
                    [..len.min(plain.len().saturating_sub(off as usize))];
                assert_eq!(&buf[..n], want, "read of {len} at {off}");
            }
        }
        idx
    }

    #[test]
    fn round_trip_in_process_levels() {
        let data = mixed(600_000, 1);
        for level in [0, 1, 6, 9] {
            for spacing in [0, 1000, 64 << 10, 1 << 30] {
                let idx = check(&member(&data, level, 0), &data, spacing);
                // zlib-rs's level 1 (deflate_quick) writes one block: no boundary.
                if spacing == 64 << 10 && level > 1 {
                    assert!(
                        idx.checkpoints.len() > 3,
                        "level {level}: {}",
                        idx.checkpoints.len()
                    );
                }
            }
        }
    }

    #[test]
    fn round_trip_gzip_tool_on_a_tar() {
        let tar = sample_tar();
        for args in [&["-c"][..], &["-1", "-c"], &["-9", "-c"]] {
            let gz = run("gzip", args, &tar).expect("gzip is installed");
            for spacing in [64 << 10, 1 << 20] {
                let idx = check(&gz, &tar, spacing);
                let n = idx.checkpoints.len() as u64;
                // Blocks are what they are (1 MiB of zeros is one): a few at least.
                assert!(n >= 2, "{args:?} {spacing}: {n} checkpoints");
            }
        }
    }

    #[test]
    fn round_trip_pigz_multi_member() {
        let tar = sample_tar();
        let Some(a) = run("pigz", &["-c", "-b", "128"], &tar) else {
            eprintln!("pigz is not installed (apt-get install pigz): skipped");
            return;
        };
        check(&a, &tar, 256 << 10);
        let b = run("pigz", &["-c", "-i", "-9"], &tar[..tar.len() / 3]).unwrap();
        check(&b, &tar[..tar.len() / 3], 100 << 10);
        // Concatenated members, as pigz's and eStargz's multi-member blobs.
        let mut gz = a.clone();
        gz.extend_from_slice(&b);
        let mut plain = tar.clone();
        plain.extend_from_slice(&tar[..tar.len() / 3]);
        let idx = check(&gz, &plain, 1 << 20);
        assert!(idx
            .checkpoints
            .iter()
            .any(|c| c.out_off == tar.len() as u64 && c.window.is_empty()));
    }

    #[test]
    fn multi_member_with_empty_members() {
        let (x, y) = (mixed(70_000, 3), mixed(50_000, 4));
        let e = member(b"", 6, 0);
        let parts: [&[u8]; 6] = [&e, &member(&x, 6, 8), &e, &e, &member(&y, 1, 30), &e];
        let gz = parts.concat();
        let plain = [x.clone(), y.clone()].concat();
        let idx = check(&gz, &plain, 1 << 30);
        let offs: Vec<u64> = idx.checkpoints.iter().map(|c| c.out_off).collect();
        assert_eq!(offs, [0, x.len() as u64]);
        // Only empty members.
        let idx = check(&[e.clone(), e.clone()].concat(), b"", 0);
        assert_eq!(idx.checkpoints.len(), 1);
        // Trailing zero padding is accepted.
        let mut padded = gz.clone();
        padded.resize(gz.len() + 1000, 0);
        check(&padded, &plain, 10_000);
    }

    #[test]
    fn header_fields_are_parsed() {
        let data = mixed(10_000, 5);
        for flags in [2, 4, 8, 16, 30] {
            check(&member(&data, 6, flags), &data, 0);
        }
        let mut bad = member(&data, 6, 30);
        let at = 10 + 7 + 9 + 10;
        bad[at] ^= 1;
        expect(&bad, at as u64, "header CRC16 mismatch");
    }

    /// The offset and reason of the scanner's error on `gz`.
    fn corrupt_at(gz: &[u8]) -> (u64, String) {
        match GzipIndex::build(gz, 1 << 16) {
            Err(GzipError::Corrupt { offset, reason }) => (offset, reason),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[track_caller]
    fn expect(gz: &[u8], offset: u64, words: &str) {
        let (o, r) = corrupt_at(gz);
        assert!(r.contains(words), "{r:?} lacks {words:?}");
        assert_eq!(o, offset, "{r}");
    }

    #[test]
    fn bad_inputs_are_corrupt_with_their_offset() {
        let data = mixed(200_000, 6);
        let gz = member(&data, 6, 8); // header of 10 + 9 bytes
        let n = gz.len() as u64;
        expect(b"", 0, "empty input");
        expect(b"PK\x03\x04", 0, "not gzip");
        expect(&gz[..1], 1, "truncated gzip header");
        expect(&gz[..5], 5, "truncated gzip header");
        expect(&gz[..14], 14, "truncated gzip header (file name)");
        expect(&gz[..gz.len() / 2], n / 2, "truncated deflate data");
        expect(&gz[..gz.len() - 3], n - 3, "truncated gzip trailer");
        let mut g = gz.clone();
        g[2] = 7;
        expect(&g, 0, "compression method 7");
        let mut g = gz.clone();
        g[3] |= 0x20;
        expect(&g, 0, "reserved gzip header flags");
        let mut g = gz.clone();
        g[19] |= 0b110; // BTYPE 3 in the first block header
        let (o, r) = corrupt_at(&g);
        assert!(
            r.contains("corrupt deflate data") && r.contains("block type"),
            "{r}"
        );
        assert!((19..=20).contains(&o), "{o}");
        let mut g = gz.clone();
        g[gz.len() - 8] ^= 1;
        expect(&g, n - 8, "CRC32 mismatch");
        let mut g = gz.clone();
        g[gz.len() - 1] ^= 1;
        expect(&g, n - 8, "ISIZE mismatch");
        let mut g = gz.clone();
        g.extend_from_slice(b"junk");
        expect(&g, n, "trailing garbage");
        let mut g = gz.clone();
        g.extend_from_slice(&[0, 0, 0, 1]);
        expect(&g, n + 3, "trailing garbage");
        let mut g = gz.clone();
        g.extend_from_slice(&[0x1f]);
        expect(&g, n + 1, "truncated gzip header");
        let mut g = gz.clone();
        g.extend_from_slice(&gz[..30]);
        expect(&g, n + 30, "truncated deflate data");
    }

    /// Random damage never panics: either the same data (a changed mtime)
    /// or a clean error.
    #[test]
    fn damaged_blobs_never_panic() {
        let data = mixed(100_000, 11);
        let gz = [member(&data, 6, 30), member(&data[..500], 9, 0)].concat();
        let plain = [&data[..], &data[..500]].concat();
        let mut r = Rng(77);
        for _ in 0..300 {
            let mut g = gz.clone();
            for _ in 0..1 + r.next() % 3 {
                let i = (r.next() % g.len() as u64) as usize;
                g[i] ^= 1 << (r.next() % 8);
            }
            if let Ok(idx) = GzipIndex::build(&g, 10_000) {
                let all: Vec<u8> = (0..idx.checkpoints.len())
                    .flat_map(|i| inflate_span(&g, &idx, i).unwrap())
                    .collect();
                assert_eq!(all, plain);
            }
        }
    }

    #[test]
    fn scanner_serves_forward_reads_and_keeps_a_megabyte() {
        let data = mixed(9 << 20, 8);
        let gz = member(&data, 6, 0);
        let s = GzipScanner::new(&gz[..], 1 << 20);
        assert_eq!(s.len().unwrap(), UNKNOWN_LEN);
        let mut r = Rng(99);
        let mut off = 0u64;
        let mut buf = vec![0u8; 3 << 20];
        while off < data.len() as u64 {
            let len = [1, 512, 10_000, 1 << 20, 3 << 20][(r.next() % 5) as usize];
            let n = s.read_at(&mut buf[..len], off).unwrap();
            let want = &data[off as usize..][..len.min(data.len() - off as usize)];
            assert_eq!(&buf[..n], want, "{len} at {off}");
            // Re-read up to 1 MiB behind the furthest byte served.
            let end = off + n as u64;
            let back = end.saturating_sub(RETAIN);
            let k = s.read_at(&mut buf[..100], back).unwrap();
            assert_eq!(&buf[..k], &data[back as usize..][..k]);
            off = end + [0, 0, 1, 12345, 2 << 20][(r.next() % 5) as usize];
        }
        assert_eq!(s.read_at(&mut buf[..10], data.len() as u64).unwrap(), 0);
        assert_eq!(s.read_at(&mut buf[..10], u64::MAX - 5).unwrap(), 0);
        assert_eq!(s.len().unwrap(), data.len() as u64);
        let e = s.read_at(&mut buf[..10], 0).unwrap_err();
        assert!(e.to_string().contains("behind"), "{e}");
        let idx = s.finish().unwrap();
        assert_eq!(idx, GzipIndex::build(&gz[..], 1 << 20).unwrap());
        assert!(idx.checkpoints.len() >= 8, "{}", idx.checkpoints.len());
    }

    #[test]
    fn scanner_errors_are_invalid_data_and_sticky() {
        let data = mixed(300_000, 9);
        let mut gz = member(&data, 6, 0);
        let n = gz.len();
        gz[n - 5] ^= 0xff;
        let s = GzipScanner::new(&gz, 1 << 20);
        let mut buf = vec![0u8; data.len()];
        // The scanner inflates ahead: the read meets the trailer already.
        let e = s.read_at(&mut buf[..1000], 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let g = e.get_ref().unwrap().downcast_ref::<GzipError>().unwrap();
        assert!(
            matches!(g, GzipError::Corrupt { offset, .. } if *offset == n as u64 - 8),
            "{g}"
        );
        assert!(s.read_at(&mut buf[..1], data.len() as u64).is_err());
        let f = s.finish().unwrap_err();
        assert_eq!(
            f.to_string(),
            format!(
                "offset {}: {}",
                n - 8,
                g.to_string().split_once(": ").unwrap().1
            )
        );
    }

    #[test]
    fn index_serialisation_round_trips_and_rejects_garbage() {
        let data = mixed(400_000, 10);
        let gz = member(&data, 6, 0);
        let idx = check(&gz, &data, 50_000);
        let b = idx.to_bytes();
        // Every truncation and every flipped bit (the checksum) is refused.
        for n in (0..64).chain((64..b.len()).step_by(97)) {
            assert!(GzipIndex::from_bytes(&b[..n]).is_err(), "truncated to {n}");
        }
        for i in (0..64).chain((64..b.len()).step_by(89)) {
            let mut c = b.clone();
            c[i] ^= 1 << (i % 8);
            assert!(GzipIndex::from_bytes(&c).is_err(), "bit flip at {i}");
        }
        let mut r = Rng(5);
        for n in [0, 4, 9, 100, 5000] {
            let mut g: Vec<u8> = (0..n).map(|_| r.next() as u8).collect();
            assert!(GzipIndex::from_bytes(&g).is_err());
            if g.len() > 9 {
                g[..5].copy_from_slice(MAGIC);
                let l = g.len();
                let crc = zlib_rs::crc32::crc32(0, &g[..l - 4]);
                g[l - 4..].copy_from_slice(&crc.to_le_bytes());
                assert!(GzipIndex::from_bytes(&g).is_err());
            }
        }
        // Well-sealed but inconsistent indexes.
        let bad: [fn(&mut GzipIndex); 9] = [
            |i| i.checkpoints.clear(),
            |i| i.checkpoints[0].out_off = 1,
            |i| i.checkpoints.swap(1, 2),
            |i| i.checkpoints[2].out_off = i.checkpoints[1].out_off,
            |i| i.checkpoints[1].bits = 8,
            |i| i.checkpoints[1].in_off = i.in_len + 1,
            |i| i.checkpoints[2].in_off = i.checkpoints[1].in_off - 1,
            |i| i.checkpoints[1].window = vec![0; WINDOW + 1],
            |i| i.out_len = i.checkpoints.last().unwrap().out_off,
        ];
        for (k, f) in bad.iter().enumerate() {
            let mut i = idx.clone();
            f(&mut i);
            assert!(GzipIndex::from_bytes(&i.to_bytes()).is_err(), "case {k}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Any data, any spacing, any split into members: every byte reads back.
        #[test]
        fn every_byte_reads_back(
            seed in any::<u64>(),
            len in 0usize..300_000,
            spacing in 0u64..120_000,
            level in 0i32..10,
            cuts in proptest::collection::vec(0usize..300_000, 0..4),
        ) {
            let data = mixed(len, seed);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(len)).collect();
            cuts.push(0);
            cuts.push(len);
            cuts.sort();
            let gz: Vec<u8> = cuts.windows(2).flat_map(|w| member(&data[w[0]..w[1]], level, 0)).collect();
            let idx = GzipIndex::build(&gz, spacing).unwrap();
            prop_assert_eq!(idx.out_len, len as u64);
            let mut all = Vec::new();
            for i in 0..idx.checkpoints.len() {
                all.extend(inflate_span(&gz, &idx, i).unwrap());
            }
            prop_assert!(all == data);
            let mut r = Rng(seed | 1);
            let mut buf = [0u8; 64];
            for _ in 0..20 {
                let off = r.next() % (len as u64 + 10);
                let n = read_at(&gz, &idx, &mut buf, off).unwrap();
                let o = (off as usize).min(len);
                prop_assert_eq!(&buf[..n], &data[o..(o + 64).min(len)]);
            }
            prop_assert_eq!(GzipIndex::from_bytes(&idx.to_bytes()).unwrap(), idx);
        }
    }

    /// `GZIP_BENCH=file.tar.gz cargo test --release --lib blob::gzip::tests::bench -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench() {
        let Ok(path) = std::env::var("GZIP_BENCH") else {
            return;
        };
        let f = std::fs::File::open(&path).unwrap();
        let t = std::time::Instant::now();
        let s = GzipScanner::new(&f, 4 << 20);
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0u64;
        loop {
            let n = s.read_at(&mut buf, off).unwrap();
            if n == 0 {
                break;
            }
            off += n as u64;
        }
        let idx = s.finish().unwrap();
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "scanner: {off} bytes out in {secs:.2} s = {:.0} MB/s (of output), {} checkpoints",
            off as f64 / secs / 1e6,
            idx.checkpoints.len()
        );
        for spacing in [1u64 << 20, 4 << 20, 16 << 20] {
            let t = std::time::Instant::now();
            let idx = GzipIndex::build(&f, spacing).unwrap();
            let secs = t.elapsed().as_secs_f64();
            let size = idx.to_bytes().len();
            eprintln!(
                "spacing {} MiB: {} checkpoints, index {size} bytes = {:.3} % = {:.2} MB per GB of output; build {:.0} MB/s",
                spacing >> 20,
                idx.checkpoints.len(),
                size as f64 * 100.0 / idx.out_len as f64,
                size as f64 * 1e9 / idx.out_len as f64 / 1e6,
                idx.out_len as f64 / secs / 1e6
            );
            let t = std::time::Instant::now();
            let mid = idx.checkpoints.len() / 2;
            let span = inflate_span(&f, &idx, mid).unwrap();
            eprintln!(
                "  one span: {} bytes in {:.1} ms",
                span.len(),
                t.elapsed().as_secs_f64() * 1e3
            );
        }
    }
}
