//! Layer tarballs: open, index (or load a cached index), and read file data in place.
//!
//! A [`TarLayer`] owns the tar's open file and its [`LayerIndex`]. File data is
//! read with `pread` at the payload offset the index recorded; nothing is ever
//! extracted. This module knows nothing of unions: whiteouts are recorded as
//! entries, interpreted by `stack/`.

pub mod build;
mod compressed;
pub mod header;
pub mod index;
pub mod persist;
pub mod scan;
pub mod verify;
pub mod write;

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use index::{EntryId, EntryRec, LayerIndex};
pub use persist::TarIdentity;

use crate::blob::seek::{self, Encoding};
use crate::blob::{self, Blob, Decoded};
use crate::error::{Error, Result};
use crate::tar::scan::ReadAt;

/// Reads at least this large trigger a prefetch of what follows.
const PREFETCH_MIN: usize = 128 << 10;

/// Where and whether to keep index files.
#[derive(Clone, Debug, Default)]
pub struct IndexOptions {
    /// Directory for index files; `None` keeps indexes in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Ignore a stored index and rebuild it.
    pub rebuild: bool,
    /// Also load the member table (needed by `verify`).
    pub members: bool,
    /// Uncompressed bytes between gzip checkpoints (0: [`DEFAULT_SPACING`]).
    pub checkpoint_spacing: u64,
    /// No progress line while a compressed layer is decoded.
    pub quiet: bool,
    /// How registries are reached (`--image docker://…`).
    pub registry: crate::registry::Options,
    /// Do not look for a pushed index artifact of a registry image.
    pub no_index_artifact: bool,
}

/// Default gzip checkpoint spacing, measured on a 1.3 GB tar.gz (gzip -6):
/// 4 MiB (indexed_gzip's and SOCI's) gives a 0.3 % seek table but cold
/// random 4 KiB reads of p50 9 ms / p99 24 ms; 2 MiB: 0.6 %, 4 / 9-15 ms;
/// 1 MiB: 1.2 % (over the 1 % budget), 2 / 8 ms.
pub const DEFAULT_SPACING: u64 = 2 << 20;

impl IndexOptions {
    /// The gzip checkpoint spacing to use.
    pub fn spacing(&self) -> u64 {
        if self.checkpoint_spacing == 0 {
            DEFAULT_SPACING
        } else {
            self.checkpoint_spacing
        }
    }

    /// The default cache directory: `$XDG_CACHE_HOME/unionfs`, else `~/.cache/unionfs`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".cache"))
            })?;
        Some(base.join("unionfs"))
    }
}

/// How the index of a layer was obtained.
#[derive(Clone, Debug)]
pub struct IndexSource {
    /// True if the tar was scanned now; false if a stored index was loaded.
    pub built: bool,
    /// Time spent scanning or loading.
    pub elapsed: Duration,
    /// The index file, if one is kept.
    pub file: Option<PathBuf>,
    /// Why a stored index was not used (when `built`).
    pub rejected: Option<String>,
}

/// One read-only layer: a tar (a [`Blob`]: a file, or a range of an outer
/// archive) and its index.
#[derive(Debug)]
pub struct TarLayer {
    /// The tar's path as given (for a layer inside an archive,
    /// `ARCHIVE:PATH-IN-ARCHIVE`): what messages name.
    pub path: PathBuf,
    /// A short name for listings: the file name, or the diffID's first hex digits.
    pub label: String,
    blob: Decoded,
    /// The index.
    pub index: LayerIndex,
    /// Where the index came from.
    pub source: IndexSource,
}

/// Refuses what cannot be a tar at all, by its first bytes and its length.
fn check_head(path: &Path, blob: &Blob) -> Result<()> {
    let not_tar = |reason: String| Error::NotATar {
        path: path.to_owned(),
        reason,
    };
    if blob.is_empty() {
        return Err(not_tar("is empty (0 bytes), not a tar archive".into()));
    }
    match seek::sniff(blob).map_err(|e| Error::io(path, e))? {
        Encoding::Unsupported(kind) => {
            return Err(not_tar(format!(
                "is {kind}-compressed; layers are tar, tar+gzip or tar+zstd (OCI). Decompress it first: {kind} -dc {} > layer.tar",
                path.display()
            )))
        }
        Encoding::Gzip | Encoding::Zstd => return Ok(()),
        Encoding::Plain => {}
    }
    if blob.len() < 512 {
        return Err(not_tar(format!(
            "is {} bytes, shorter than one 512-byte tar header: not a tar archive",
            blob.len()
        )));
    }
    Ok(())
}

/// A registry blob whose indexing pass failed: bytes that fail to decode
/// may be the image's fault or the transfer's. Reads the rest of the
/// stream: if the blob does not match its digest, that is the error to
/// report (naming the blob); else the pass's own.
pub(super) fn blame_transfer<R: ReadAt + ?Sized>(
    name: &Path,
    remote: bool,
    want: Option<&str>,
    hashing: blob::Hashing<'_, R>,
    e: Error,
) -> Error {
    let (true, Some(want)) = (remote, want) else {
        return e;
    };
    match hashing.finish() {
        Ok(got) if !got.is_empty() && !got.eq_ignore_ascii_case(want) => Error::DigestMismatch {
            path: name.to_owned(),
            expected: format!("{want} (the blob's digest: the registry sent other bytes)"),
            actual: got,
        },
        _ => e,
    }
}

impl TarLayer {
    /// Opens `path`, loading its stored index or building (and storing) a new one.
    pub fn open(path: &Path, opts: &IndexOptions) -> Result<TarLayer> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        let not_tar = |reason: String| Error::NotATar {
            path: path.to_owned(),
            reason,
        };
        if meta.is_dir() {
            return Err(not_tar(
                "is a directory; a layer must be a tar file (to use a directory, tar it: tar -C DIR -cf layer.tar .)".into(),
            ));
        }
        if !meta.is_file() {
            return Err(not_tar("is not a regular file".into()));
        }
        let blob = Blob::whole(file).map_err(|e| Error::io(path, e))?;
        check_head(path, &blob)?;
        let file = blob.file().expect("a local file");
        let id = TarIdentity::of(file).map_err(|e| Error::io(path, e))?;
        let label = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let key = |ext: &str| {
            opts.cache_dir
                .as_ref()
                .map(|d| d.join(format!("{:x}-{:x}.{ext}", id.dev, id.ino)))
        };
        let enc = seek::sniff(&blob).map_err(|e| Error::io(path, e))?;
        if enc != Encoding::Plain {
            let keys = compressed::Keys {
                index_file: key("uidx"),
                seek_file: key("seek"),
                seek_id: id,
                index_id: Some(id),
                blob_digest: None,
                diff_id: None,
                copy_file: key("tar"),
            };
            return compressed::open(path, label, blob, enc, &keys, opts);
        }
        let index_file = key("uidx");
        let start = Instant::now();
        let mut rejected = None;
        if let (Some(f), false) = (&index_file, opts.rebuild) {
            match persist::load(f, Some(file), &id, opts.members) {
                Ok(Ok(index)) => {
                    let blob = Decoded::Plain(blob);
                    return Ok(TarLayer::loaded(
                        path, label, blob, index, start, index_file,
                    ));
                }
                Ok(Err(why)) => {
                    log::debug!(target: "unionfs::tar", "{}: {why}; re-indexing", f.display());
                    rejected = Some(why);
                }
                Err(e) => {
                    log::warn!(target: "unionfs::tar", "{}: {e}; re-indexing", f.display());
                    rejected = Some(e.to_string());
                }
            }
        }
        let scan_start = std::time::SystemTime::now();
        let index = build_index(path, &blob, id.size)?;
        log_warnings(path, &index);
        // A tar changed just before indexing is stored with a content checksum
        // that every load verifies (its identity alone could be stale).
        let racy_sum = if racy(&id, scan_start) {
            persist::content_sum(file).ok()
        } else {
            None
        };
        let built = Built {
            path,
            label,
            index_file,
            id,
            racy_sum,
            rejected,
            start,
        };
        Ok(built.finish(Decoded::Plain(blob), index, opts))
    }

    /// Opens a layer known by its diffID (`sha256:<hex>` of the uncompressed
    /// tar): `blob` holds the tar (e.g. a member of an image archive), `name`
    /// names it in messages, `label` in listings.
    ///
    /// The index is stored under the diffID, so a layer shared by several
    /// images is indexed once. The blob's bytes are checked against `diff_id`
    /// the first time this source (file and range) is seen — in the same pass
    /// that indexes it when there is no index yet — and the result is
    /// remembered ([`blob::verified`]); a mismatch is an error and nothing is
    /// stored.
    pub fn open_verified(
        name: &Path,
        label: String,
        blob: Blob,
        blob_digest: Option<&str>,
        diff_id: &str,
        opts: &IndexOptions,
    ) -> Result<TarLayer> {
        check_head(name, &blob)?;
        let hexpart = diff_id.strip_prefix("sha256:").unwrap_or_default();
        if hexpart.len() != 64 || !hexpart.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::NotATar {
                path: name.to_owned(),
                reason: format!("unsupported diffID {diff_id:?} (expected sha256:<64 hex digits>)"),
            });
        }
        let enc = seek::sniff(&blob).map_err(|e| Error::io(name, e))?;
        if enc != Encoding::Plain {
            // The seek table belongs to the compressed bytes: keyed by their
            // digest where the image gives it, else by this very source.
            let (seek_name, seek_id) = match blob_digest.and_then(|d| d.strip_prefix("sha256:")) {
                Some(h) => (
                    format!("sha256-{}.seek", h.to_ascii_lowercase()),
                    TarIdentity {
                        size: blob.len(),
                        ..TarIdentity::default()
                    },
                ),
                None => {
                    // (A registry blob always has its digest.)
                    let file = blob.file().ok_or_else(|| Error::Image {
                        path: name.to_owned(),
                        reason: "a compressed remote layer without a blob digest".into(),
                    })?;
                    let src_id = TarIdentity::of(file).map_err(|e| Error::io(name, e))?;
                    (
                        format!(
                            "src-{:x}-{:x}-{:x}.seek",
                            src_id.dev,
                            src_id.ino,
                            blob.base()
                        ),
                        src_id,
                    )
                }
            };
            let cache = opts.cache_dir.as_deref();
            let keys = compressed::Keys {
                index_file: cache
                    .map(|d| d.join(format!("sha256-{}.uidx", hexpart.to_ascii_lowercase()))),
                seek_file: cache.map(|d| d.join("blobs").join(seek_name)),
                seek_id,
                index_id: None,
                blob_digest,
                diff_id: Some(diff_id),
                copy_file: cache.map(|d| {
                    d.join("blobs")
                        .join(format!("sha256-{}.tar", hexpart.to_ascii_lowercase()))
                }),
            };
            return compressed::open(name, label, blob, enc, &keys, opts);
        }
        let id = TarIdentity {
            size: blob.len(),
            ..TarIdentity::default()
        };
        let cache = opts.cache_dir.as_deref();
        let index_file =
            cache.map(|d| d.join(format!("sha256-{}.uidx", hexpart.to_ascii_lowercase())));
        let start = Instant::now();
        let started = std::time::SystemTime::now();
        let mismatch = |actual: String| Error::DigestMismatch {
            path: name.to_owned(),
            expected: format!("{diff_id} (the layer's diffID)"),
            actual,
        };
        let mut rejected = None;
        if let (Some(f), false) = (&index_file, opts.rebuild) {
            match persist::load(f, blob.file(), &id, opts.members) {
                Ok(Ok(_))
                    if blob.as_remote().is_some()
                        && !blob::verified::is_verified(cache, &blob, diff_id) =>
                {
                    // Hashing a registry blob would fetch it all and keep
                    // nothing: stream it again instead.
                    rejected = Some("the blob's chunk table is missing".into());
                }
                Ok(Ok(index)) => {
                    if !blob::verified::is_verified(cache, &blob, diff_id) {
                        let actual = blob::sha256(&blob).map_err(|e| Error::io(name, e))?;
                        if !actual.eq_ignore_ascii_case(diff_id) {
                            return Err(mismatch(actual));
                        }
                        blob::verified::record(cache, &blob, diff_id, started);
                    }
                    let blob = Decoded::Plain(blob);
                    return Ok(TarLayer::loaded(
                        name, label, blob, index, start, index_file,
                    ));
                }
                Ok(Err(why)) => rejected = Some(why),
                Err(e) => {
                    log::warn!(target: "unionfs::tar", "{}: {e}; re-indexing", f.display());
                    rejected = Some(e.to_string());
                }
            }
        }
        // One pass: the scanner reads headers, the hashing reader digests
        // every byte (the payloads the scanner skips included) in order.
        // (A registry blob: one streamed request, its chunk digests taken
        // on the way and kept once the diffID matched.)
        let pass = blob.pass();
        let hashing = blob::Hashing::new(&pass);
        let index = match build_index(name, &hashing, blob.len()) {
            Ok(i) => i,
            Err(e) => {
                let remote = pass.is_remote();
                return Err(blame_transfer(name, remote, Some(diff_id), hashing, e));
            }
        };
        let actual = hashing.finish().map_err(|e| Error::io(name, e))?;
        if !actual.eq_ignore_ascii_case(diff_id) {
            return Err(mismatch(actual));
        }
        pass.keep().map_err(|e| Error::io(name, e))?;
        blob::verified::record(cache, &blob, diff_id, started);
        log_warnings(name, &index);
        let built = Built {
            path: name,
            label,
            index_file,
            id,
            racy_sum: None,
            rejected,
            start,
        };
        Ok(built.finish(Decoded::Plain(blob), index, opts))
    }

    /// A layer whose index was loaded from `file` (its warnings logged, as
    /// a build logs them).
    fn loaded(
        path: &Path,
        label: String,
        blob: Decoded,
        index: LayerIndex,
        start: Instant,
        file: Option<PathBuf>,
    ) -> TarLayer {
        log_warnings(path, &index);
        TarLayer {
            path: path.to_owned(),
            label,
            blob,
            index,
            source: IndexSource {
                built: false,
                elapsed: start.elapsed(),
                file,
                rejected: None,
            },
        }
    }

    /// Reads file data of entry `id` at `off` into `buf`; returns bytes read
    /// (0 at end of file). Holes of sparse files read as zeros.
    pub fn read(&self, id: EntryId, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        let id = self.index.inode_of(id);
        let e = self.index.entry(id);
        let m = self.index.meta(id);
        if off >= m.size || buf.is_empty() {
            return Ok(0);
        }
        let n = (m.size - off).min(buf.len() as u64) as usize;
        let buf = &mut buf[..n];
        if e.has(index::F_SPARSE) {
            let x = self.index.extra(id);
            read_sparse(&self.blob, m.data_off, &x.sparse, off, buf)?;
        } else {
            self.pread_exact(buf, m.data_off + off)?;
            if n >= PREFETCH_MIN {
                // Large reads come from sequential readers (the kernel's readahead):
                // ask the page cache to fetch what follows while we reply.
                self.prefetch(
                    m.data_off + off + n as u64,
                    (m.size - off - n as u64).min(4 * n as u64),
                );
            }
        }
        Ok(n)
    }

    fn prefetch(&self, off: u64, len: u64) {
        self.blob.prefetch(off, len);
    }

    fn pread_exact(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        scan::read_exact_at(&self.blob, buf, off).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::other(format!(
                    "{}: the tar is shorter than when it was indexed",
                    self.path.display()
                ))
            } else {
                e
            }
        })
    }

    /// The tar's bytes, uncompressed (for `verify`).
    pub fn blob(&self) -> &Decoded {
        &self.blob
    }

    /// The bytes as stored (compressed or not).
    pub fn source(&self) -> &Blob {
        self.blob.source()
    }
}

/// Fills `buf` with the logical bytes at `off` of a sparse file whose chunks
/// (offset, length) are stored back to back at `data_off`.
fn read_sparse(
    f: &Decoded,
    data_off: u64,
    map: &[(u64, u64)],
    off: u64,
    buf: &mut [u8],
) -> io::Result<()> {
    buf.fill(0);
    let end = off + buf.len() as u64;
    let mut stored = data_off;
    for &(co, cl) in map {
        let ce = co + cl;
        if ce > off && co < end {
            let from = co.max(off);
            let to = ce.min(end);
            let dst = &mut buf[(from - off) as usize..(to - off) as usize];
            scan::read_exact_at(f, dst, stored + (from - co))?;
        }
        if co >= end {
            break;
        }
        stored += cl;
    }
    Ok(())
}

/// Returns true if and only if the tar's ctime is not safely before `scan_start`.
///
/// Such an index is "racy" (as git calls it): a change to the tar in the same
/// clock tick as its last one (timestamps are kernel-tick coarse), same size,
/// mtime put back, would keep the identity the index is keyed on. 50 ms is
/// several ticks at any HZ.
pub(crate) fn racy(id: &TarIdentity, scan_start: std::time::SystemTime) -> bool {
    let start = match scan_start.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(_) => return true,
    };
    let ctime = i128::from(id.ctime) * 1_000_000_000 + i128::from(id.ctime_nsec);
    ctime > start - 50_000_000
}

/// Logs what indexing `path` dropped or noticed, naming the layer file (the
/// index keeps the messages, so a layer served from a stored index warns too).
fn log_warnings(path: &Path, index: &LayerIndex) {
    for w in &index.warnings {
        log::warn!(target: "unionfs::tar", "{}: {w}", path.display());
    }
}

/// Scans and indexes `file` (the tar at `path`), entry by entry.
pub fn build_index<R: scan::ReadAt + ?Sized>(
    path: &Path,
    file: &R,
    size: u64,
) -> Result<LayerIndex> {
    let mut b = build::Builder::new();
    let scanned = scan::scan_with(file, |raw| b.add(raw)).map_err(|e| match e {
        scan::ScanError::Io(e) => Error::io(path, e),
        scan::ScanError::Corrupt(0, reason) if reason.contains("checksum") => Error::NotATar {
            path: path.to_owned(),
            reason: format!("not a tar archive (no valid tar header at offset 0: {reason})"),
        },
        scan::ScanError::Corrupt(offset, reason) => Error::CorruptTar {
            path: path.to_owned(),
            offset,
            reason,
        },
    })?;
    Ok(b.finish(scanned.members, scanned.end_off, size, scanned.warnings))
}

/// A layer whose index was just built: where to store it, and what to say
/// of how it was obtained.
struct Built<'a> {
    path: &'a Path,
    label: String,
    index_file: Option<PathBuf>,
    /// What the stored index must match at load.
    id: TarIdentity,
    racy_sum: Option<u64>,
    rejected: Option<String>,
    start: Instant,
}

impl Built<'_> {
    /// Stores the index (a failure only costs a rebuild next time: logged)
    /// and returns the layer, holding what a load from the cache would: no
    /// member list unless asked for, no growth slack of the build (a
    /// 300k-entry layer: 37 -> 28 MiB of heap after a cold mount; a warm one
    /// holds 23 MiB).
    fn finish(self, blob: Decoded, mut index: LayerIndex, opts: &IndexOptions) -> TarLayer {
        let elapsed = self.start.elapsed();
        let mut kept = None;
        if let Some(f) = self.index_file {
            match store(&f, &index, &self.id, self.racy_sum) {
                Ok(()) => kept = Some(f),
                Err(e) => log::warn!(
                    target: "unionfs::tar",
                    "cannot store the index of {} in {}: {e} (it will be rebuilt next time)",
                    self.path.display(),
                    f.display()
                ),
            }
        }
        if !opts.members {
            index.members = Vec::new();
        }
        index.shrink_to_fit();
        TarLayer {
            path: self.path.to_owned(),
            label: self.label,
            blob,
            index,
            source: IndexSource {
                built: true,
                elapsed,
                file: kept,
                rejected: self.rejected,
            },
        }
    }
}

fn store(f: &Path, index: &LayerIndex, id: &TarIdentity, racy_sum: Option<u64>) -> io::Result<()> {
    if let Some(dir) = f.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    persist::save(f, index, id, racy_sum)
}

/// Opens every layer, indexing those without a usable stored index in parallel
/// (at most one thread per CPU). Fails on the first layer (in list order) that
/// cannot be opened.
pub fn open_all(paths: &[PathBuf], opts: &IndexOptions) -> Result<Vec<TarLayer>> {
    open_parallel(paths.len(), |i| TarLayer::open(&paths[i], opts))
}

/// Runs `open(0..n)` on at most one thread per CPU and returns the results in
/// order; fails with the first error in that order.
pub fn open_parallel<T: Send>(
    n: usize,
    open: impl Fn(usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(n.max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut slots: Vec<Option<Result<T>>> = (0..n).map(|_| None).collect();
    let results = parking_lot::Mutex::new(&mut slots);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let r = open(i);
                results.lock()[i] = Some(r);
            });
        }
    });
    slots
        .into_iter()
        .map(|r| r.expect("every item was attempted"))
        .collect()
}
