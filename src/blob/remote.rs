//! A blob in a registry, read lazily by HTTP ranges and kept in chunks on
//! disk.
//!
//! The blob is cut into fixed [`CHUNK`]-byte chunks. A read fetches only the
//! chunks it touches (a run of missing ones in one ranged request, longer for
//! a sequential reader), checks each against its sha256 in the blob's
//! [`ChunkTable`], keeps it in a small in-memory LRU and on disk under
//! `CACHE/remote/sha256/<hex>/<chunk>` (content-addressed: every mount of
//! every image sharing the blob shares the chunks), and serves it from there
//! afterwards, checking it again when it comes back from disk. Bytes that do
//! not match their digest — from the registry or the disk — are an `EIO` and
//! a log line, never data. A chunk wanted by several threads at once is
//! fetched once: the others wait for it.
//!
//! The chunk table comes from the one sequential pass that indexes the layer
//! ([`Remote::stream`]): that pass streams the whole blob in one request,
//! hashes each chunk on the way, and the table is kept only if the blob's
//! digest matched at the end. Before that there is no table, and the only
//! reads are the few header bytes that tell the blob's encoding (fetched
//! exactly, not cached; the pass that follows checks everything).
//!
//! Knows transport through [`Fetch`] only, nothing of HTTP or auth.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use lru::LruCache;
use parking_lot::{Condvar, Mutex, RwLock};
use sha2::{Digest as _, Sha256};

use crate::tar::scan::ReadAt;

/// Chunk size: the unit fetched, checked and cached. Small, so that a small
/// file read at random costs little beyond its gzip span; sequential readers
/// fetch runs of chunks in one request.
pub const CHUNK: u64 = 256 << 10;

/// Longest run of chunks one request fetches for a sequential reader (4 MiB).
const MAX_RUN: u64 = 16;

/// Chunks kept in memory per blob (verified bytes: no re-hash, no syscall).
const MEM_CHUNKS: usize = 32;

/// Bytes of the blob's start kept in the table, so that telling its encoding
/// needs no fetch.
const HEAD: usize = 16;

const TABLE_MAGIC: &[u8; 16] = b"unionfs-chunks1\n";

/// How the bytes of registry blobs are fetched.
pub trait Fetch: Send + Sync + std::fmt::Debug {
    /// Exactly `len` bytes of blob `digest` at `off`.
    fn range(&self, digest: &str, off: u64, len: u64) -> io::Result<Vec<u8>>;
    /// The blob from `off` to its end, as a stream.
    fn stream(&self, digest: &str, off: u64) -> io::Result<Box<dyn Read + Send>>;
    /// Where the blobs come from, for messages (`docker://host/repo`).
    fn origin(&self) -> String;
}

/// The sha256 of every chunk of a blob, and its first bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkTable {
    /// Bytes per chunk.
    pub chunk: u64,
    /// The blob's size.
    pub size: u64,
    /// Its first bytes (up to [`HEAD`]).
    pub head: Vec<u8>,
    /// sha256 of each chunk, in order.
    pub digests: Vec<[u8; 32]>,
}

impl ChunkTable {
    /// Serialises the table.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(48 + self.head.len() + 32 * self.digests.len());
        v.extend_from_slice(TABLE_MAGIC);
        v.extend_from_slice(&self.chunk.to_le_bytes());
        v.extend_from_slice(&self.size.to_le_bytes());
        v.extend_from_slice(&(self.head.len() as u64).to_le_bytes());
        v.extend_from_slice(&self.head);
        for d in &self.digests {
            v.extend_from_slice(d);
        }
        v
    }

    /// Parses a table, checking that it describes a blob of `size` bytes.
    pub fn from_bytes(b: &[u8], size: u64) -> Result<ChunkTable, String> {
        let u64_at = |o: usize| -> Option<u64> {
            Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
        };
        if b.get(..16) != Some(&TABLE_MAGIC[..]) {
            return Err("not a unionfs chunk table".into());
        }
        let (Some(chunk), Some(sz), Some(hl)) = (u64_at(16), u64_at(24), u64_at(32)) else {
            return Err("truncated chunk table".into());
        };
        if chunk == 0 || sz != size || hl > HEAD as u64 || hl != size.min(HEAD as u64) {
            return Err(format!(
                "chunk table for {sz} bytes in chunks of {chunk}, but the blob is {size} bytes"
            ));
        }
        let head = b[40..40 + hl as usize].to_vec();
        let rest = &b[40 + hl as usize..];
        let n = size.div_ceil(chunk);
        if rest.len() as u64 != n * 32 {
            return Err("chunk table has the wrong number of digests".into());
        }
        let digests = rest
            .chunks_exact(32)
            .map(|c| c.try_into().expect("32 bytes"))
            .collect();
        Ok(ChunkTable {
            chunk,
            size,
            head,
            digests,
        })
    }

    fn chunks(&self) -> u64 {
        self.digests.len() as u64
    }

    /// Byte range of chunk `i`.
    fn bounds(&self, i: u64) -> (u64, u64) {
        let start = i * self.chunk;
        (start, (start + self.chunk).min(self.size))
    }
}

/// A chunk being fetched by some thread; the others wait on it.
#[derive(Default)]
struct Pending {
    done: Mutex<Option<Result<Arc<Vec<u8>>, Failed>>>,
    cv: Condvar,
}

impl Pending {
    fn set(&self, r: Result<Arc<Vec<u8>>, Failed>) {
        *self.done.lock() = Some(r);
        self.cv.notify_all();
    }

    fn wait(&self) -> io::Result<Arc<Vec<u8>>> {
        let mut g = self.done.lock();
        while g.is_none() {
            self.cv.wait(&mut g);
        }
        g.clone().expect("set").map_err(Failed::error)
    }
}

/// A failed fetch, as every waiter gets it (an `io::Error` is not `Clone`).
#[derive(Clone, Debug)]
struct Failed {
    errno: Option<i32>,
    kind: io::ErrorKind,
    msg: String,
}

impl Failed {
    fn of(e: &io::Error) -> Failed {
        Failed {
            errno: e.raw_os_error(),
            kind: e.kind(),
            msg: e.to_string(),
        }
    }

    fn error(self) -> io::Error {
        match self.errno {
            Some(n) => io::Error::from_raw_os_error(n),
            None => io::Error::new(self.kind, self.msg),
        }
    }
}

/// Byte counters of every remote blob of the process.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes fetched by ranged reads.
    pub fetched: AtomicU64,
    /// Bytes streamed by indexing passes.
    pub streamed: AtomicU64,
    /// Chunks served from the disk cache.
    pub disk_hits: AtomicU64,
}

/// The process's counters.
pub static COUNTERS: Counters = Counters {
    fetched: AtomicU64::new(0),
    streamed: AtomicU64::new(0),
    disk_hits: AtomicU64::new(0),
};

/// One blob of a registry.
pub struct Remote {
    fetch: Arc<dyn Fetch>,
    digest: String,
    size: u64,
    /// `CACHE/remote/sha256/<hex>` (`None`: memory only).
    dir: Option<PathBuf>,
    /// The cache directory.
    cache: Option<PathBuf>,
    table: RwLock<Option<Arc<ChunkTable>>>,
    inflight: Mutex<HashMap<u64, Arc<Pending>>>,
    mem: Mutex<LruCache<u64, Arc<Vec<u8>>>>,
    /// Where the last read ended, and the current read-ahead run (chunks).
    last_end: AtomicU64,
    run: AtomicU64,
    /// A background prefetch is running.
    prefetching: AtomicBool,
    /// The blob's first bytes, fetched once before there is a table (the
    /// encoding is sniffed several times while an image opens).
    head: std::sync::OnceLock<Vec<u8>>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("origin", &self.fetch.origin())
            .field("digest", &self.digest)
            .field("size", &self.size)
            .finish()
    }
}

/// Bytes of chunks written to disk by this process, and the bound on the
/// chunks kept (see [`set_chunk_bound`]).
static WRITTEN: AtomicU64 = AtomicU64::new(0);
static BOUND: AtomicU64 = AtomicU64::new(DEFAULT_BOUND);
static SWEEPING: AtomicBool = AtomicBool::new(false);

/// Default bound of the fetched chunks kept on disk (all mounts together).
pub const DEFAULT_BOUND: u64 = 10 << 30;

/// Bytes written between two checks of the bound.
const SWEEP_EVERY: u64 = 64 << 20;

/// Sets the bound of the fetched chunks kept on disk, for every mount of
/// the cache directory (least recently used chunks go first).
pub fn set_chunk_bound(bytes: u64) {
    BOUND.store(bytes, Ordering::Relaxed);
}

/// Counts `n` bytes written under `cache`; every [`SWEEP_EVERY`] bytes, a
/// background sweep brings the chunks back within the bound.
fn written(cache: &Path, n: u64) {
    let before = WRITTEN.fetch_add(n, Ordering::Relaxed);
    if before / SWEEP_EVERY == (before + n) / SWEEP_EVERY || SWEEPING.swap(true, Ordering::AcqRel) {
        return;
    }
    let dir = cache.to_owned();
    let spawned = std::thread::Builder::new()
        .name("unionfs-sweep".into())
        .spawn(move || {
            match crate::cache::bound_chunks(&dir, BOUND.load(Ordering::Relaxed)) {
                Ok(p) if p.files > 0 => log::info!(
                    target: "unionfs::remote",
                    "{}: {} fetched chunks ({} bytes) evicted to stay within the bound",
                    dir.display(),
                    p.files,
                    p.bytes
                ),
                Ok(_) => {}
                Err(e) => {
                    log::warn!(target: "unionfs::remote", "{}: sweeping chunks: {e}", dir.display())
                }
            }
            SWEEPING.store(false, Ordering::Release);
        });
    if spawned.is_err() {
        SWEEPING.store(false, Ordering::Release);
    }
}

/// Where the chunk tables and chunks of remote blobs live under a cache dir.
pub fn cache_root(cache: &Path) -> PathBuf {
    cache.join("remote")
}

impl Remote {
    /// Blob `digest` (`sha256:<hex>`, `size` bytes) fetched through `fetch`,
    /// its chunks kept under `cache` (if any). Loads the chunk table kept
    /// there by an earlier pass, if any.
    pub fn new(fetch: Arc<dyn Fetch>, digest: &str, size: u64, cache: Option<&Path>) -> Remote {
        let hex = digest
            .strip_prefix("sha256:")
            .unwrap_or(digest)
            .to_ascii_lowercase();
        let dir = cache.map(|c| cache_root(c).join("sha256").join(&hex));
        let r = Remote {
            fetch,
            digest: format!("sha256:{hex}"),
            size,
            dir,
            cache: cache.map(Path::to_owned),
            table: RwLock::new(None),
            inflight: Mutex::new(HashMap::new()),
            mem: Mutex::new(LruCache::new(NonZeroUsize::new(MEM_CHUNKS).expect("> 0"))),
            last_end: AtomicU64::new(u64::MAX),
            run: AtomicU64::new(1),
            prefetching: AtomicBool::new(false),
            head: std::sync::OnceLock::new(),
        };
        r.load_table();
        r
    }

    /// Loads the chunk table kept on disk, if there is one.
    fn load_table(&self) -> Option<Arc<ChunkTable>> {
        let p = self.table_path()?;
        match fs::read(&p) {
            Ok(b) => match ChunkTable::from_bytes(&b, self.size) {
                Ok(t) => {
                    let t = Arc::new(t);
                    *self.table.write() = Some(t.clone());
                    Some(t)
                }
                Err(why) => {
                    log::warn!(
                        target: "unionfs::remote",
                        "{}: {why}; the blob will be streamed again",
                        p.display()
                    );
                    None
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                log::warn!(target: "unionfs::remote", "{}: {e}", p.display());
                None
            }
        }
    }

    /// The blob's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The blob's digest.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// `docker://host/repo@sha256:…`, for messages.
    pub fn name(&self) -> String {
        format!("{}@{}", self.fetch.origin(), self.digest)
    }

    fn table_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("chunks"))
    }

    fn chunk_path(&self, i: u64) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{i:08x}")))
    }

    /// Returns true if and only if the chunk table is known (a pass over the
    /// whole blob matched its digest, here or on an earlier run).
    pub fn has_table(&self) -> bool {
        self.table().is_some()
    }

    /// The chunk table, if known (here, or on disk since: another process,
    /// or an index artifact, may have written it).
    pub fn table(&self) -> Option<Arc<ChunkTable>> {
        let t = self.table.read().clone();
        t.or_else(|| self.load_table())
    }

    /// Adopts `t` (from a pass whose blob digest matched, or from an index
    /// artifact) and keeps it on disk.
    pub fn install(&self, t: ChunkTable) -> io::Result<()> {
        if t.size != self.size {
            return Err(io::Error::other(format!(
                "{}: chunk table for {} bytes, but the blob is {}",
                self.name(),
                t.size,
                self.size
            )));
        }
        if let Some(p) = self.table_path() {
            if let Some(d) = p.parent() {
                fs::create_dir_all(d)?;
            }
            super::verified::write_atomic(&p, &t.to_bytes())?;
        }
        *self.table.write() = Some(Arc::new(t));
        Ok(())
    }

    /// A reader for the one sequential pass over the whole blob: one
    /// streamed request instead of ranges, hashing each chunk as it goes.
    pub fn stream(self: &Arc<Self>) -> Streaming {
        Streaming {
            remote: self.clone(),
            st: Mutex::new(StreamState {
                body: None,
                pos: 0,
                win: Vec::new(),
                win_start: 0,
                hasher: Sha256::new(),
                digests: Vec::new(),
                head: Vec::new(),
                reopened: 0,
            }),
        }
    }

    /// Reads at `off` (within the blob); `buf` is not longer than what is left.
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        if buf.is_empty() || off >= self.size {
            return Ok(0);
        }
        let n = buf.len().min((self.size - off) as usize);
        let Some(t) = self.table() else {
            // Before any pass: only the header bytes that tell the encoding
            // are read this way (see the module comment), once.
            let head_len = self.size.min(HEAD as u64);
            if off + n as u64 <= head_len {
                let head = match self.head.get() {
                    Some(h) => h,
                    None => {
                        let got = self.fetch.range(&self.digest, 0, head_len)?;
                        COUNTERS
                            .fetched
                            .fetch_add(got.len() as u64, Ordering::Relaxed);
                        self.head.get_or_init(|| got)
                    }
                };
                buf[..n].copy_from_slice(&head[off as usize..off as usize + n]);
                return Ok(n);
            }
            let got = self.fetch.range(&self.digest, off, n as u64)?;
            COUNTERS
                .fetched
                .fetch_add(got.len() as u64, Ordering::Relaxed);
            buf[..n].copy_from_slice(&got[..n]);
            return Ok(n);
        };
        if off + n as u64 <= t.head.len() as u64 {
            buf[..n].copy_from_slice(&t.head[off as usize..off as usize + n]);
            return Ok(n);
        }
        // The chunks this read needs are fetched in one request. Read-ahead
        // beyond them only for small reads: a small read starting where the
        // last one ended doubles the run, any other resets it. A read of a
        // chunk or more (a gzip span inflated whole, a FUSE read of 1 MiB)
        // says exactly what it wants; fetching past it cost /bin/true
        // megabytes it never read (the span read-ahead of `Decoded` and the
        // prefetch of sequential file reads look ahead already).
        let first = off / t.chunk;
        let needed = (off + n as u64 - 1) / t.chunk - first + 1;
        let sequential = self.last_end.swap(off + n as u64, Ordering::Relaxed) == off;
        let run = if n as u64 >= t.chunk {
            self.run.store(1, Ordering::Relaxed);
            needed
        } else if sequential {
            let r = (self.run.load(Ordering::Relaxed) * 2).min(MAX_RUN);
            self.run.store(r, Ordering::Relaxed);
            r.max(needed)
        } else {
            self.run.store(1, Ordering::Relaxed);
            needed
        };
        let mut done = 0;
        while done < n {
            let at = off + done as u64;
            let i = at / t.chunk;
            // (Later chunks of this read are mostly in memory by now.)
            let c = self.chunk(&t, i, (first + run).saturating_sub(i).max(1))?;
            let (start, _) = t.bounds(i);
            let from = (at - start) as usize;
            let k = (c.len() - from).min(n - done);
            buf[done..done + k].copy_from_slice(&c[from..from + k]);
            done += k;
        }
        Ok(n)
    }

    /// Fetches, on a background thread, every chunk not cached yet, in
    /// runs of [`MAX_RUN`] (`-o prefetch`). Readers go first: a chunk they
    /// want is fetched by them, or waited for if this thread has it in
    /// flight.
    pub fn fetch_all(self: Arc<Self>) {
        if self.dir.is_none() {
            log::warn!(target: "unionfs::remote", "prefetch: no cache directory to keep {} in", self.name());
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("unionfs-prefetch-all".into())
            .spawn(move || {
                let Some(t) = self.table() else { return };
                let start = std::time::Instant::now();
                let mut i = 0;
                while i < t.chunks() {
                    let cached = self.chunk_path(i).is_some_and(|p| p.exists())
                        || self.mem.lock().contains(&i);
                    if !cached {
                        if let Err(e) = self.chunk(&t, i, MAX_RUN) {
                            log::warn!(target: "unionfs::remote", "prefetch of {} stopped: {e}", self.name());
                            return;
                        }
                    }
                    i += 1;
                }
                log::info!(
                    target: "unionfs::remote",
                    "{}: all {} chunks cached in {:.1} s",
                    self.name(),
                    t.chunks(),
                    start.elapsed().as_secs_f64()
                );
            });
        if let Err(e) = spawned {
            log::warn!(target: "unionfs::remote", "cannot start a prefetch thread: {e}");
        }
    }

    /// Fetches, in the background, the chunks holding `len` bytes at `off`
    /// (one prefetch at a time per blob; skipped while one runs).
    pub fn prefetch(self: &Arc<Self>, off: u64, len: u64) {
        let Some(t) = self.table() else { return };
        if self.prefetching.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("unionfs-prefetch".into())
            .spawn(move || {
                let first = off / t.chunk;
                let last = (off + len).min(t.size).saturating_sub(1) / t.chunk;
                let mut i = first;
                while i <= last {
                    if let Err(e) = me.chunk(&t, i, MAX_RUN.min(last - i + 1)) {
                        log::debug!(target: "unionfs::remote", "prefetch: {e}");
                        break;
                    }
                    i += 1;
                }
                me.prefetching.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            self.prefetching.store(false, Ordering::Release);
        }
    }

    /// Chunk `i`, from memory, disk or the registry (fetching up to `run`
    /// missing chunks from `i` in one request).
    fn chunk(&self, t: &ChunkTable, i: u64, run: u64) -> io::Result<Arc<Vec<u8>>> {
        if let Some(c) = self.mem.lock().get(&i) {
            return Ok(c.clone());
        }
        // Someone fetching it already, or ours to fetch?
        let (mine, pending) = {
            let mut g = self.inflight.lock();
            if let Some(c) = self.mem.lock().get(&i) {
                return Ok(c.clone());
            }
            match g.get(&i) {
                Some(p) => (Vec::new(), p.clone()),
                None => {
                    let mut mine = Vec::new();
                    for j in i..(i + run.max(1)).min(t.chunks()) {
                        if j > i && (g.contains_key(&j) || self.mem.lock().contains(&j)) {
                            break;
                        }
                        let p = Arc::new(Pending::default());
                        g.insert(j, p.clone());
                        mine.push((j, p));
                    }
                    let p = mine[0].1.clone();
                    (mine, p)
                }
            }
        };
        if mine.is_empty() {
            return pending.wait();
        }
        let results = self.load_run(t, &mine);
        {
            let mut g = self.inflight.lock();
            let mut mem = self.mem.lock();
            for ((j, p), r) in mine.iter().zip(results) {
                if let Ok(c) = &r {
                    mem.put(*j, c.clone());
                }
                p.set(r.map_err(|e| Failed::of(&e)));
                g.remove(j);
            }
        }
        pending.wait()
    }

    /// Loads the chunks of `run` (consecutive), each from disk if it is
    /// there and intact, the others from the registry in one request.
    fn load_run(
        &self,
        t: &ChunkTable,
        run: &[(u64, Arc<Pending>)],
    ) -> Vec<io::Result<Arc<Vec<u8>>>> {
        let mut out: Vec<Option<io::Result<Arc<Vec<u8>>>>> = run
            .iter()
            .map(|(j, _)| self.disk_chunk(t, *j).map(|c| Ok(Arc::new(c))))
            .collect();
        // The missing ones: from the first missing to the last missing.
        let mut first = out.iter().position(Option::is_none);
        let mut last = out.iter().rposition(Option::is_none);
        // Other processes (mounts of the same cache) may be fetching these
        // very chunks: take the run's range of the blob's lock file (an OFD
        // byte-range lock per chunk index, waited for), then look on disk
        // again, and fetch only what is still missing. The lock goes with
        // the descriptor, at the end of this function or the process.
        let _lock = match (first, last) {
            (Some(a), Some(b)) => self.lock_chunks(run[a].0, run[b].0 + 1 - run[a].0),
            _ => None,
        };
        if _lock.is_some() {
            for (k, slot) in out.iter_mut().enumerate() {
                if slot.is_none() {
                    *slot = self.disk_chunk(t, run[k].0).map(|c| Ok(Arc::new(c)));
                }
            }
            first = out.iter().position(Option::is_none);
            last = out.iter().rposition(Option::is_none);
        }
        if let (Some(a), Some(b)) = (first, last) {
            let (ja, jb) = (run[a].0, run[b].0);
            let (start, _) = t.bounds(ja);
            let (_, end) = t.bounds(jb);
            match self.fetch.range(&self.digest, start, end - start) {
                Ok(bytes) => {
                    COUNTERS
                        .fetched
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    for (k, slot) in out.iter_mut().enumerate().take(b + 1).skip(a) {
                        let j = run[k].0;
                        let (s, e) = t.bounds(j);
                        let c = &bytes[(s - start) as usize..(e - start) as usize];
                        if slot.is_none() {
                            *slot = Some(self.accept(t, j, c.to_vec()));
                        }
                    }
                }
                Err(e) => {
                    let msg = format!(
                        "{}: bytes {start}-{} : {e}",
                        self.name(),
                        end.saturating_sub(1)
                    );
                    log::error!(target: "unionfs::remote", "{msg}");
                    for slot in out.iter_mut().take(b + 1).skip(a) {
                        if slot.is_none() {
                            *slot = Some(Err(io::Error::new(e.kind(), msg.clone())));
                        }
                    }
                }
            }
        }
        out.into_iter()
            .map(|r| r.expect("every chunk has a result"))
            .collect()
    }

    /// Locks chunks `first..first + n` of this blob against other processes
    /// sharing the cache (waits for them); `None` without a cache directory,
    /// or if the lock file cannot be had (then each process fetches alone).
    fn lock_chunks(&self, first: u64, n: u64) -> Option<std::fs::File> {
        let dir = self.dir.as_ref()?;
        fs::create_dir_all(dir).ok()?;
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("lock"))
            .ok()?;
        // SAFETY: all-zero is a valid `flock`; the fields are set below.
        let mut l: libc::flock = unsafe { std::mem::zeroed() };
        l.l_type = libc::F_WRLCK as libc::c_short;
        l.l_whence = libc::SEEK_SET as libc::c_short;
        l.l_start = first as libc::off_t;
        l.l_len = n as libc::off_t;
        loop {
            use std::os::fd::AsRawFd;
            // SAFETY: a valid descriptor and a valid `flock`.
            let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLKW, &l) };
            if r == 0 {
                return Some(f);
            }
            if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return None;
            }
        }
    }

    /// Checks fetched chunk `j` against its digest and keeps it on disk.
    fn accept(&self, t: &ChunkTable, j: u64, c: Vec<u8>) -> io::Result<Arc<Vec<u8>>> {
        if Sha256::digest(&c)[..] != t.digests[j as usize] {
            let (s, e) = t.bounds(j);
            let msg = format!(
                "{}: the registry sent bytes {s}-{} that do not match their digest",
                self.name(),
                e - 1
            );
            log::error!(target: "unionfs::remote", "{msg}");
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        if let Some(p) = self.chunk_path(j) {
            match write_chunk(&p, &c) {
                Ok(()) => written(self.cache.as_deref().expect("a dir"), c.len() as u64),
                Err(e) => log::warn!(target: "unionfs::remote", "cannot keep {}: {e}", p.display()),
            }
        }
        Ok(Arc::new(c))
    }

    /// Chunk `j` from the disk cache, if there and matching its digest (a
    /// damaged one is removed).
    fn disk_chunk(&self, t: &ChunkTable, j: u64) -> Option<Vec<u8>> {
        let p = self.chunk_path(j)?;
        let c = fs::read(&p).ok()?;
        if Sha256::digest(&c)[..] != t.digests[j as usize] {
            log::warn!(
                target: "unionfs::remote",
                "{}: cached chunk does not match its digest; fetching it again",
                p.display()
            );
            let _ = fs::remove_file(&p);
            return None;
        }
        COUNTERS.disk_hits.fetch_add(1, Ordering::Relaxed);
        touch(&p);
        Some(c)
    }
}

/// Marks a cached chunk as used (its mtime orders eviction).
fn touch(p: &Path) {
    let Ok(c) = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()))
    else {
        return;
    };
    // SAFETY: a valid C string; a null `times` means "now".
    unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0) };
}

/// Writes a chunk atomically (a reader never sees a part of one).
fn write_chunk(p: &Path, c: &[u8]) -> io::Result<()> {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d)?;
    }
    let tmp = p.with_extension(format!("tmp{}", std::process::id()));
    let mut f = fs::File::create(&tmp)?;
    let r = f.write_all(c).and_then(|_| fs::rename(&tmp, p));
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r
}

/// How far behind the furthest byte streamed a pass may read again.
const WINDOW: usize = 8 << 20;

struct StreamState {
    body: Option<Box<dyn Read + Send>>,
    /// Bytes taken from the stream so far.
    pos: u64,
    /// The last bytes taken, from `win_start` to `pos`.
    win: Vec<u8>,
    win_start: u64,
    hasher: Sha256,
    digests: Vec<[u8; 32]>,
    head: Vec<u8>,
    reopened: u32,
}

/// The one sequential pass over a remote blob (see [`Remote::stream`]).
pub struct Streaming {
    remote: Arc<Remote>,
    st: Mutex<StreamState>,
}

/// Takes bytes of `r`'s stream up to `to` (or the blob's end).
fn fill(r: &Remote, st: &mut StreamState, to: u64) -> io::Result<()> {
    {
        let to = to.min(r.size);
        let mut buf = vec![0u8; 256 << 10];
        while st.pos < to {
            if st.body.is_none() {
                st.body = Some(
                    r.fetch
                        .stream(&r.digest, st.pos)
                        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", r.name())))?,
                );
            }
            let want = (r.size - st.pos).min(buf.len() as u64) as usize;
            let got = match st.body.as_mut().expect("opened").read(&mut buf[..want]) {
                Ok(0) => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{}: the stream ended at byte {} of {}",
                        r.name(),
                        st.pos,
                        r.size
                    ),
                )),
                Ok(n) => Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let n = match got {
                Ok(n) => n,
                Err(e) => {
                    // A dropped connection: go on from here with a new
                    // request, a few times.
                    st.body = None;
                    st.reopened += 1;
                    if st.reopened > 3 {
                        return Err(io::Error::new(e.kind(), format!("{}: {e}", r.name())));
                    }
                    log::warn!(target: "unionfs::remote", "{}: {e}; resuming at byte {}", r.name(), st.pos);
                    continue;
                }
            };
            COUNTERS.streamed.fetch_add(n as u64, Ordering::Relaxed);
            let mut b = &buf[..n];
            if st.head.len() < HEAD {
                let k = (HEAD - st.head.len()).min(b.len());
                st.head.extend_from_slice(&b[..k]);
            }
            // Chunk digests, cut at chunk boundaries.
            let mut at = st.pos;
            while !b.is_empty() {
                let room = (CHUNK - at % CHUNK) as usize;
                let k = room.min(b.len());
                st.hasher.update(&b[..k]);
                at += k as u64;
                if at % CHUNK == 0 || at == r.size {
                    let h = std::mem::take(&mut st.hasher);
                    st.digests.push(h.finalize().into());
                }
                b = &b[k..];
            }
            st.win.extend_from_slice(&buf[..n]);
            st.pos += n as u64;
            if st.win.len() > 2 * WINDOW {
                let drop = st.win.len() - WINDOW;
                st.win.drain(..drop);
                st.win_start += drop as u64;
            }
        }
    }
    Ok(())
}

impl Streaming {
    /// The chunk table of the bytes streamed, once all were; keep it only
    /// after the blob's digest matched ([`Remote::install`]).
    pub fn finish(self) -> io::Result<ChunkTable> {
        let mut st = self.st.into_inner();
        let r = &self.remote;
        // Bytes the pass did not need (none, when it hashed the blob).
        fill(r, &mut st, r.size)?;
        if r.size == 0 {
            st.digests.clear();
        }
        Ok(ChunkTable {
            chunk: CHUNK,
            size: r.size,
            head: st.head,
            digests: st.digests,
        })
    }

    /// The blob this pass reads.
    pub fn remote(&self) -> &Arc<Remote> {
        &self.remote
    }
}

impl ReadAt for Streaming {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let size = self.remote.size;
        if off >= size || buf.is_empty() {
            return Ok(0);
        }
        let n = buf.len().min((size - off) as usize);
        let mut st = self.st.lock();
        if off < st.win_start {
            return Err(io::Error::other(format!(
                "{}: the indexing pass read back to byte {off}, behind its window",
                self.remote.name()
            )));
        }
        fill(&self.remote, &mut st, off + n as u64)?;
        let from = (off - st.win_start) as usize;
        buf[..n].copy_from_slice(&st.win[from..from + n]);
        Ok(n)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.remote.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// An in-memory registry with fault switches.
    #[derive(Debug, Default)]
    struct Mem {
        data: Vec<u8>,
        ranges: AtomicUsize,
        bytes: AtomicU64,
        corrupt: AtomicBool,
        down: AtomicBool,
        /// Streams fail after this many bytes (0: never).
        cut: AtomicU64,
        /// Milliseconds each range request takes.
        slow_ms: AtomicU64,
    }

    impl Fetch for Mem {
        fn range(&self, _: &str, off: u64, len: u64) -> io::Result<Vec<u8>> {
            if self.down.load(Ordering::Relaxed) {
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "down"));
            }
            self.ranges.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(len, Ordering::Relaxed);
            std::thread::sleep(std::time::Duration::from_millis(
                self.slow_ms.load(Ordering::Relaxed),
            ));
            let mut v = self.data[off as usize..(off + len) as usize].to_vec();
            if self.corrupt.load(Ordering::Relaxed) {
                v[0] ^= 1;
            }
            Ok(v)
        }
        fn stream(&self, _: &str, off: u64) -> io::Result<Box<dyn Read + Send>> {
            let cut = self.cut.swap(0, Ordering::Relaxed);
            let end = if cut == 0 {
                self.data.len()
            } else {
                (off + cut) as usize
            };
            let v = self.data[off as usize..end].to_vec();
            let r: Box<dyn Read + Send> = if cut == 0 {
                Box::new(io::Cursor::new(v))
            } else {
                Box::new(io::Cursor::new(v).chain(Failing))
            };
            Ok(r)
        }
        fn origin(&self) -> String {
            "docker://test/repo".into()
        }
    }

    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"))
        }
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn streamed(mem: &Arc<Mem>, cache: Option<&Path>) -> Arc<Remote> {
        let r = Arc::new(Remote::new(
            mem.clone(),
            "sha256:ab",
            mem.data.len() as u64,
            cache,
        ));
        let s = r.stream();
        let mut b = vec![0u8; 100_000];
        let mut off = 0;
        while off < mem.data.len() as u64 {
            let n = s.read_at(&mut b, off).unwrap();
            assert_eq!(&b[..n], &mem.data[off as usize..off as usize + n]);
            // Read back a little, as the tar scanner does.
            if off > 10 {
                s.read_at(&mut b[..10], off - 10).unwrap();
            }
            off += n as u64;
        }
        let t = s.finish().unwrap();
        r.install(t).unwrap();
        r
    }

    #[test]
    fn pass_then_lazy_reads_fetch_only_what_is_read() {
        let mem = Arc::new(Mem {
            data: data(5 * CHUNK as usize + 1234),
            ..Mem::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let r = streamed(&mem, Some(dir.path()));
        assert_eq!(mem.ranges.load(Ordering::Relaxed), 0, "the pass streams");
        let mut b = vec![0u8; 4096];
        r.read_at(&mut b, 3 * CHUNK + 10).unwrap();
        assert_eq!(&b[..], &mem.data[3 * CHUNK as usize + 10..][..4096]);
        assert_eq!(mem.bytes.load(Ordering::Relaxed), CHUNK);
        // Memory, then disk (a new Remote on the same cache): no fetch.
        r.read_at(&mut b, 3 * CHUNK + 20).unwrap();
        let r2 = Remote::new(
            mem.clone(),
            "sha256:ab",
            mem.data.len() as u64,
            Some(dir.path()),
        );
        assert!(r2.has_table());
        r2.read_at(&mut b, 3 * CHUNK + 30).unwrap();
        assert_eq!(&b[..], &mem.data[3 * CHUNK as usize + 30..][..4096]);
        assert_eq!(mem.bytes.load(Ordering::Relaxed), CHUNK);
        // The head needs no fetch.
        let mut h = [0u8; 6];
        r2.read_at(&mut h, 0).unwrap();
        assert_eq!(&h, &mem.data[..6]);
        assert_eq!(mem.ranges.load(Ordering::Relaxed), 1);
        // The last, short chunk.
        let mut t = vec![0u8; 2000];
        let n = r2.read_at(&mut t, mem.data.len() as u64 - 1000).unwrap();
        assert_eq!(n, 1000);
        assert_eq!(&t[..n], &mem.data[mem.data.len() - 1000..]);
    }

    #[test]
    fn wrong_bytes_are_eio_never_data_and_a_damaged_cache_is_refetched() {
        let mem = Arc::new(Mem {
            data: data(3 * CHUNK as usize),
            ..Mem::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let r = streamed(&mem, Some(dir.path()));
        mem.corrupt.store(true, Ordering::Relaxed);
        let mut b = vec![0u8; 100];
        let e = r.read_at(&mut b, CHUNK).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
        mem.corrupt.store(false, Ordering::Relaxed);
        r.read_at(&mut b, CHUNK).unwrap();
        assert_eq!(&b[..], &mem.data[CHUNK as usize..][..100]);
        // Damage the kept chunk: a new reader refetches it.
        let p = r.chunk_path(1).unwrap();
        let mut c = fs::read(&p).unwrap();
        c[5] ^= 0xff;
        fs::write(&p, c).unwrap();
        let before = mem.bytes.load(Ordering::Relaxed);
        let r2 = Remote::new(
            mem.clone(),
            "sha256:ab",
            mem.data.len() as u64,
            Some(dir.path()),
        );
        r2.read_at(&mut b, CHUNK).unwrap();
        assert_eq!(&b[..], &mem.data[CHUNK as usize..][..100]);
        assert_eq!(mem.bytes.load(Ordering::Relaxed), before + CHUNK);
    }

    #[test]
    fn registry_down_is_an_error_and_the_next_read_works() {
        let mem = Arc::new(Mem {
            data: data(2 * CHUNK as usize),
            ..Mem::default()
        });
        let r = streamed(&mem, None);
        mem.down.store(true, Ordering::Relaxed);
        let mut b = vec![0u8; 10];
        let e = r.read_at(&mut b, 500).unwrap_err();
        assert!(
            e.to_string().contains("docker://test/repo@sha256:ab"),
            "{e}"
        );
        mem.down.store(false, Ordering::Relaxed);
        r.read_at(&mut b, 500).unwrap();
        assert_eq!(&b[..], &mem.data[500..510]);
    }

    #[test]
    fn a_stream_cut_midway_resumes_and_the_table_is_whole() {
        let mem = Arc::new(Mem {
            data: data(3 * CHUNK as usize + 7),
            ..Mem::default()
        });
        mem.cut.store(CHUNK + 5, Ordering::Relaxed);
        let r = streamed(&mem, None);
        let t = r.table().unwrap();
        assert_eq!(t.digests.len(), 4);
        for (i, d) in t.digests.iter().enumerate() {
            let (s, e) = t.bounds(i as u64);
            assert_eq!(&Sha256::digest(&mem.data[s as usize..e as usize])[..], d);
        }
        assert_eq!(ChunkTable::from_bytes(&t.to_bytes(), t.size).unwrap(), *t);
        assert!(ChunkTable::from_bytes(&t.to_bytes(), t.size + 1).is_err());
    }

    #[test]
    fn concurrent_readers_fetch_a_chunk_once() {
        let mem = Arc::new(Mem {
            data: data(4 * CHUNK as usize),
            ..Mem::default()
        });
        let r = streamed(&mem, None);
        std::thread::scope(|s| {
            for k in 0..8 {
                let r = &r;
                let mem = &mem;
                s.spawn(move || {
                    let mut b = vec![0u8; 1000];
                    r.read_at(&mut b, 2 * CHUNK + k * 100).unwrap();
                    assert_eq!(&b[..], &mem.data[(2 * CHUNK + k * 100) as usize..][..1000]);
                });
            }
        });
        assert_eq!(mem.ranges.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn mounts_sharing_a_cache_fetch_a_chunk_once_even_at_the_same_time() {
        let mem = Arc::new(Mem {
            data: data(4 * CHUNK as usize),
            ..Mem::default()
        });
        let dir = tempfile::tempdir().unwrap();
        streamed(&mem, Some(dir.path()));
        mem.slow_ms.store(200, Ordering::Relaxed);
        // Two blobs on one cache: their lock files are two open file
        // descriptions, as two processes' would be.
        let size = mem.data.len() as u64;
        let (r1, r2) = (
            Remote::new(mem.clone(), "sha256:ab", size, Some(dir.path())),
            Remote::new(mem.clone(), "sha256:ab", size, Some(dir.path())),
        );
        std::thread::scope(|s| {
            for r in [&r1, &r2] {
                let mem = &mem;
                s.spawn(move || {
                    let mut b = vec![0u8; 1000];
                    r.read_at(&mut b, 2 * CHUNK + 5).unwrap();
                    assert_eq!(&b[..], &mem.data[(2 * CHUNK + 5) as usize..][..1000]);
                });
            }
        });
        assert_eq!(mem.ranges.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn sequential_readers_fetch_growing_runs() {
        let mem = Arc::new(Mem {
            data: data(40 * CHUNK as usize),
            ..Mem::default()
        });
        let r = streamed(&mem, None);
        let mut b = vec![0u8; 128 << 10];
        let mut off = 0;
        while off < mem.data.len() as u64 {
            let n = r.read_at(&mut b, off).unwrap();
            assert_eq!(&b[..n], &mem.data[off as usize..][..n]);
            off += n as u64;
        }
        let reqs = mem.ranges.load(Ordering::Relaxed);
        assert!(reqs <= 8, "{reqs} requests for 40 chunks read in order");
        assert_eq!(mem.bytes.load(Ordering::Relaxed), 40 * CHUNK);
    }
}
