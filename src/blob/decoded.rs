//! The uncompressed bytes of a layer blob, readable at any offset.
//!
//! A plain tar is its own [`Blob`]. A gzip or zstd blob is read through its
//! seek table (gzip checkpoints, zstd frames): a read at uncompressed offset
//! `off` inflates the *span* that holds it — from the checkpoint (or frame
//! start) at or below `off` to the next — and keeps the span in a cache
//! shared by every thread and every layer of the process, bounded in bytes
//! (LRU). A span is inflated once however many threads want it at the same
//! time (the others wait for it), different spans inflate in parallel, and a
//! reader near the end of a span has the next one inflated in the background
//! (read-ahead), so a sequential reader inflates every span once and rarely
//! waits.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};

use lru::LruCache;
use parking_lot::Mutex;

use super::gzip::GzipIndex;
use super::zstd::FrameTable;
use super::Blob;
use crate::tar::scan::ReadAt;

/// Default bound of the span cache: 32 spans of the default 2 MiB gzip
/// spacing — two sequential readers per FUSE worker thread of a 2-core
/// machine each keep their current and next span, with room to spare for
/// small files read at random.
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

/// A layer's uncompressed tar, however it is stored.
#[derive(Clone, Debug)]
pub enum Decoded {
    /// Stored uncompressed: reads are `pread`s.
    Plain(Blob),
    /// gzip, with its checkpoints.
    Gzip(Arc<Compressed<GzipIndex>>),
    /// zstd with several frames, with its frame table.
    Zstd(Arc<Compressed<FrameTable>>),
}

/// A compressed blob and the seek table that enters it.
#[derive(Debug)]
pub struct Compressed<T> {
    /// The stored (compressed) bytes.
    pub src: Blob,
    /// Checkpoints or frames.
    pub table: T,
    /// This blob's key in the span cache.
    id: u64,
}

/// What the span cache needs of a seek table.
pub trait SeekTable: Send + Sync + 'static {
    /// Uncompressed length.
    fn out_len(&self) -> u64;
    /// The span holding uncompressed offset `off`.
    fn span_of(&self, off: u64) -> usize;
    /// Number of spans.
    fn spans(&self) -> usize;
    /// Where span `i` starts in the uncompressed stream.
    fn span_start(&self, i: usize) -> u64;
    /// Inflates span `i` whole.
    fn inflate(&self, src: &Blob, i: usize) -> io::Result<Vec<u8>>;
    /// The span end (the next span's start, or the end).
    fn span_end(&self, i: usize) -> u64 {
        if i + 1 < self.spans() {
            self.span_start(i + 1)
        } else {
            self.out_len()
        }
    }
}

impl SeekTable for GzipIndex {
    fn out_len(&self) -> u64 {
        self.out_len
    }
    fn span_of(&self, off: u64) -> usize {
        GzipIndex::span_of(self, off)
    }
    fn spans(&self) -> usize {
        self.checkpoints.len()
    }
    fn span_start(&self, i: usize) -> u64 {
        self.checkpoints[i].out_off
    }
    fn inflate(&self, src: &Blob, i: usize) -> io::Result<Vec<u8>> {
        super::gzip::inflate_span(src, self, i)
    }
}

impl SeekTable for FrameTable {
    fn out_len(&self) -> u64 {
        self.out_len
    }
    fn span_of(&self, off: u64) -> usize {
        self.frame_of(off)
    }
    fn spans(&self) -> usize {
        self.frames.len()
    }
    fn span_start(&self, i: usize) -> u64 {
        self.frames[i].out_off
    }
    fn inflate(&self, src: &Blob, i: usize) -> io::Result<Vec<u8>> {
        super::zstd::decompress_frame(src, self, i)
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl<T: SeekTable> Compressed<T> {
    /// A compressed blob entered through `table`.
    pub fn new(src: Blob, table: T) -> Arc<Self> {
        Arc::new(Compressed {
            src,
            table,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The uncompressed bytes of span `i`, from the cache or inflated now.
    fn span(self: &Arc<Self>, i: usize) -> io::Result<Arc<Vec<u8>>> {
        let slot = CACHE.slot(
            self.id,
            i,
            self.table.span_end(i) - self.table.span_start(i),
        );
        let got = slot.get_or_init(|| {
            self.table
                .inflate(&self.src, i)
                // Arc<Vec>, not Arc<[u8]>: no second 2 MiB allocation and copy.
                .map(Arc::new)
                .map_err(|e| (e.kind(), e.to_string()))
        });
        match got {
            Ok(b) => Ok(b.clone()),
            Err((kind, msg)) => {
                // Not kept: the next read tries again.
                CACHE.forget(self.id, i);
                Err(io::Error::new(*kind, msg.clone()))
            }
        }
    }

    /// Inflates span `i` in the background unless it is cached or being inflated.
    fn read_ahead(self: &Arc<Self>, i: usize) {
        if i >= self.table.spans() || CACHE.has(self.id, i) {
            return;
        }
        if AHEAD.fetch_add(1, Ordering::AcqRel) >= MAX_AHEAD {
            AHEAD.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("unionfs-readahead".into())
            .spawn(move || {
                let _ = me.span(i);
                AHEAD.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            AHEAD.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn read_at(self: &Arc<Self>, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let len = self.table.out_len();
        if off >= len || buf.is_empty() {
            return Ok(0);
        }
        let want = (len - off).min(buf.len() as u64) as usize;
        let mut done = 0;
        while done < want {
            let at = off + done as u64;
            let i = self.table.span_of(at);
            let start = self.table.span_start(i);
            let span = self.span(i)?;
            let from = (at - start) as usize;
            if from >= span.len() {
                return Err(io::Error::other(format!(
                    "span {i} inflated to {} bytes, short of offset {at}",
                    span.len()
                )));
            }
            let n = (span.len() - from).min(want - done);
            buf[done..done + n].copy_from_slice(&span[from..from + n]);
            done += n;
            // Near the end of a span: a sequential reader wants the next one.
            if from + n > span.len() - span.len() / 4 {
                self.read_ahead(i + 1);
            }
        }
        Ok(done)
    }
}

/// Background read-aheads running at most at once.
const MAX_AHEAD: usize = 2;
static AHEAD: AtomicUsize = AtomicUsize::new(0);

impl Decoded {
    /// Length of the uncompressed tar.
    pub fn len(&self) -> u64 {
        match self {
            Decoded::Plain(b) => b.len(),
            Decoded::Gzip(c) => c.table.out_len(),
            Decoded::Zstd(c) => c.table.out_len(),
        }
    }

    /// Returns true if and only if the tar has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stored bytes.
    pub fn source(&self) -> &Blob {
        match self {
            Decoded::Plain(b) => b,
            Decoded::Gzip(c) => &c.src,
            Decoded::Zstd(c) => &c.src,
        }
    }

    /// Spans a read can start at: checkpoints or frames (1 for a plain blob).
    pub fn spans(&self) -> usize {
        match self {
            Decoded::Plain(_) => 1,
            Decoded::Gzip(c) => c.table.spans(),
            Decoded::Zstd(c) => c.table.spans(),
        }
    }

    /// The stored bytes (compressed, for a compressed blob).
    pub fn stored(&self) -> &Blob {
        match self {
            Decoded::Plain(b) => b,
            Decoded::Gzip(c) => &c.src,
            Decoded::Zstd(c) => &c.src,
        }
    }

    /// How the bytes are stored: `tar`, `gzip` or `zstd`.
    pub fn encoding(&self) -> &'static str {
        match self {
            Decoded::Plain(_) => "tar",
            Decoded::Gzip(_) => "gzip",
            Decoded::Zstd(_) => "zstd",
        }
    }

    /// Asks for `len` bytes at `off` ahead of use (page cache for a plain
    /// blob; nothing for compressed ones, whose read-ahead is per span).
    pub fn prefetch(&self, off: u64, len: u64) {
        if let Decoded::Plain(b) = self {
            b.prefetch(off, len);
        }
    }
}

impl ReadAt for Decoded {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        match self {
            Decoded::Plain(b) => b.read_at(buf, off),
            Decoded::Gzip(c) => c.read_at(buf, off),
            Decoded::Zstd(c) => c.read_at(buf, off),
        }
    }
    fn len(&self) -> io::Result<u64> {
        Ok(Decoded::len(self))
    }
}

type Slot = Arc<OnceLock<Result<Arc<Vec<u8>>, (io::ErrorKind, String)>>>;
type Spans = LruCache<(u64, usize), (Slot, u64)>;

/// The process-wide span cache: LRU by bytes.
struct SpanCache {
    /// The spans by (blob, span), each with its size; the bytes held.
    inner: Mutex<(Spans, u64)>,
    limit: AtomicU64,
}

static CACHE: LazyLock<SpanCache> = LazyLock::new(|| SpanCache {
    inner: Mutex::new((LruCache::unbounded(), 0)),
    limit: AtomicU64::new(DEFAULT_CACHE_BYTES),
});

impl SpanCache {
    /// The slot of span `i` of blob `id` (`size` bytes once inflated),
    /// created empty if absent; evicts least recently used spans beyond the
    /// bound (a span in use stays alive through its `Arc`).
    fn slot(&self, id: u64, i: usize, size: u64) -> Slot {
        let mut g = self.inner.lock();
        let (lru, total) = &mut *g;
        if let Some((s, _)) = lru.get(&(id, i)) {
            return s.clone();
        }
        let s: Slot = Arc::new(OnceLock::new());
        lru.put((id, i), (s.clone(), size));
        *total += size;
        let limit = self.limit.load(Ordering::Relaxed);
        while *total > limit && lru.len() > 1 {
            match lru.pop_lru() {
                Some((_, (_, n))) => *total -= n,
                None => break,
            }
        }
        s
    }

    fn has(&self, id: u64, i: usize) -> bool {
        self.inner.lock().0.contains(&(id, i))
    }

    fn forget(&self, id: u64, i: usize) {
        let mut g = self.inner.lock();
        if let Some((_, n)) = g.0.pop(&(id, i)) {
            g.1 -= n;
        }
    }
}

/// Sets the span cache's bound in bytes (at least one span is always kept).
pub fn set_cache_bytes(n: u64) {
    CACHE.limit.store(n, Ordering::Relaxed);
}
