//! File I/O by inode number, with no open handle ("no-open" mode).
//!
//! A writable mount answers `OPEN` with `ENOSYS`, as a read-only one does:
//! the kernel then sends no `OPEN` and no `RELEASE` for any file of the
//! mount (FUSE "zero-message open", with `FOPEN_KEEP_CACHE`), and each
//! `READ`/`WRITE` names the inode alone. Two round trips fewer per `open`
//! and `close` is what makes a writable mount read like a read-only one.
//!
//! So the data of an inode is found per request:
//! - a lower file is read in place from its layer;
//! - an upper file through an fd kept in a small LRU keyed by the upper
//!   file's `st_ino` (a key the file keeps across renames, and that no other
//!   file can take while the fd is open);
//! - the first write to a lower file copies it up, as the first `open` for
//!   writing did before (overlayfs copies up at open; the difference cannot
//!   be seen through the mount: the copy has the same content, inode number
//!   and times, and the parent's times are put back);
//! - an object whose last name goes while the kernel still holds its inode
//!   (unlinked or renamed over while open) keeps its data here, an *orphan*,
//!   until the kernel forgets the inode: reads and writes through a file
//!   still open keep working, as POSIX wants.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;

use super::{eno, lower_stat, Overlay, Resolved};
use crate::stack::{LayerRef, Merged};
use crate::tar::scan::read_full;

/// How many upper files stay open between requests.
const OPEN_FILES: usize = 256;

/// Where a file's data is.
#[derive(Clone, Debug)]
pub(super) enum Data {
    /// In its layer.
    Lower(LayerRef),
    /// In the upper.
    Upper(Arc<File>),
}

/// What a removed object the kernel still holds keeps (`keep_data`).
pub(super) enum Kept {
    /// A file's data.
    Data(Data),
    /// Another object's last attributes.
    Gone(Gone),
}

/// An open upper file, with the layer entry holding its data if it is a
/// metadata-only copy (`metacopy.rs`).
pub(super) type OpenUpper = (Arc<File>, Option<LayerRef>);

/// See the module docs.
#[derive(Debug)]
pub(super) struct FileIo {
    /// Open upper files by upper `st_ino`, with the layer entry holding the
    /// data of a metadata-only copy.
    fds: Mutex<LruCache<u64, OpenUpper>>,
    /// Objects with no name left that the kernel still holds, by inode number.
    orphans: Mutex<HashMap<u64, Data>>,
    /// The same for directories, symlinks and special files: their last
    /// attributes, for `fstat` of a removed directory that is still open or
    /// some process's working directory.
    gone: Mutex<HashMap<u64, Gone>>,
    /// When an upper object last lost its last name (its space may be on
    /// its way back: `Overlay::settle_space`).
    freed_at: Mutex<Option<Instant>>,
}

/// The attributes a removed non-file answers with until the kernel forgets it.
pub(super) struct Gone(libc::stat);

impl std::fmt::Debug for Gone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gone(mode {:o})", self.0.st_mode)
    }
}

impl Default for FileIo {
    fn default() -> FileIo {
        FileIo {
            fds: Mutex::new(LruCache::new(
                NonZeroUsize::new(OPEN_FILES).expect("non-zero"),
            )),
            orphans: Mutex::new(HashMap::new()),
            gone: Mutex::new(HashMap::new()),
            freed_at: Mutex::new(None),
        }
    }
}

impl FileIo {
    /// Closes the cached fd of the upper file `st_ino` (its last name is
    /// gone: the space is freed once nothing else holds it).
    pub(super) fn drop_upper(&self, st_ino: u64) {
        self.fds.lock().pop(&st_ino);
    }

    /// Caches `f`, the upper file `st_ino` this mount has just created (read
    /// and write, not a metadata-only copy).
    pub(super) fn cache_new(&self, st_ino: u64, f: File) {
        self.fds.lock().put(st_ino, (Arc::new(f), None));
    }

    /// The cached open upper file `st_ino`, if there is one (a regular file).
    pub(super) fn cached(&self, st_ino: u64) -> Option<Arc<File>> {
        self.fds.lock().get(&st_ino).map(|(f, _)| f.clone())
    }

    /// The data orphan `ino` keeps, if it is one.
    pub(super) fn orphan(&self, ino: u64) -> Option<Data> {
        self.orphans.lock().get(&ino).cloned()
    }

    /// The kernel forgot `ino`: an orphan's data goes.
    pub(super) fn forgotten(&self, ino: u64) {
        self.orphans.lock().remove(&ino);
        self.gone.lock().remove(&ino);
    }

    /// `lstat` of orphan `ino`, if it is one.
    pub(super) fn stat_orphan(&self, ino: u64, ov: &Overlay) -> Option<libc::stat> {
        if let Some(g) = self.gone.lock().get(&ino) {
            return Some(g.0);
        }
        let d = self.orphans.lock().get(&ino).cloned()?;
        let mut st = match d {
            Data::Upper(f) => {
                let (mut st, logical) = ov.upper.fstat_logical(f.as_fd()).ok()?;
                ov.fix_ids(&mut st, logical);
                st
            }
            Data::Lower(r) => lower_stat(
                &ov.stack,
                &Merged {
                    top: r,
                    dirs: Vec::new(),
                },
            ),
        };
        st.st_ino = ino;
        Some(st)
    }
}

/// How long after an upper object lost its last name an ENOSPC waits for
/// its space (the FORGET or RELEASE still in flight).
const SETTLE_AFTER_FREE: Duration = Duration::from_secs(2);

impl Overlay {
    /// The upper is full: if an upper object lost its last name in the last
    /// 2 s, its space (blocks, an inode) may be on its way back. The daemon
    /// lets go of a removed file at the kernel's FORGET of it (or the RELEASE
    /// of its last open handle, `-o passthrough`), which FUSE sends after
    /// `unlink`/`close` return, and some filesystems free blocks after that
    /// in the background (XFS). Waits until the upper's free blocks or free
    /// inodes grow or a removed object is let go: up to 1 s while removed
    /// objects are still held, 50 ms if none is. Returns true if a retry is worth it. (A file removed earlier and
    /// closed just now is not waited for: the daemon does not see a `close`
    /// before its RELEASE.)
    pub(super) fn settle_space(&self) -> bool {
        // Only right after a removal: an upper full for good (or a deleted
        // file held open for long) fails at once, not seconds later each time.
        if !self.freed_recently() {
            return false;
        }
        // Free blocks and free inodes: a create needs an inode, which the
        // filesystem gives back when the last reference to a removed file
        // goes (the daemon's, or a passthrough file's in the kernel).
        let free = || self.statfs().map_or((0, 0), |s| (s.f_bfree, s.f_ffree));
        let held = || {
            let orphans = self.io.orphans.lock().len();
            let open = self.handles.upper_inos();
            let nodes = self.nodes.lock();
            orphans + open.iter().filter(|&&i| nodes.path(i).is_none()).count()
        };
        let (free0, held0) = (free(), held());
        let polls = if held0 > 0 { 200 } else { 10 };
        for i in 0..polls {
            std::thread::sleep(Duration::from_millis(5));
            let now = free();
            if now.0 > free0.0 || now.1 > free0.1 || held() < held0 {
                log::debug!(target: "unionfs::overlay",
                    "upper full: space coming back after {} ms; retrying", 5 * (i + 1));
                return true;
            }
        }
        log::debug!(target: "unionfs::overlay",
            "upper full: no space came back in {} ms ({held0} removed objects still held)",
            5 * polls);
        false
    }

    /// Returns true if an upper object lost its last name in the last 2 s.
    fn freed_recently(&self) -> bool {
        self.io
            .freed_at
            .lock()
            .is_some_and(|t| t.elapsed() < SETTLE_AFTER_FREE)
    }

    /// Runs `op` again while it fails with ENOSPC and
    /// [`settle_space`](Self::settle_space) sees space coming back: a few
    /// times at most. Every operation that allocates in the upper goes
    /// through it (writes, fallocate, copy-up, create, mkdir, mknod,
    /// symlink, link, the whiteout of `unlink` and `rmdir`) except `rename`,
    /// whose steps cannot all be retried whole.
    pub(super) fn retry_full<T>(&self, mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
        let mut tries = 0;
        loop {
            match op() {
                // The first failure is retried once more even if
                // `settle_space` saw no space come back: it may have come
                // back between the failure and its first look (a handle
                // closed, its count gone), which nothing shows afterwards.
                Err(e)
                    if e.raw_os_error() == Some(libc::ENOSPC)
                        && tries < 4
                        && (self.settle_space() || (tries == 0 && self.freed_recently())) =>
                {
                    tries += 1;
                }
                r => return r,
            }
        }
    }

    /// The open upper file of `st_ino` at `path`: cached, or opened (read and
    /// write) and checked to be
    /// that file; with the layer entry holding its data if it is a
    /// metadata-only copy.
    pub(super) fn upper_fd(&self, path: &[Vec<u8>], st_ino: u64) -> io::Result<OpenUpper> {
        if let Some(f) = self.io.fds.lock().get(&st_ino) {
            return Ok(f.clone());
        }
        // Read-only where the upper refuses writing: then not cached, so that
        // a write later (the refusal gone) never meets a read-only fd.
        let (f, cache) = match self.upper.open_file(path, libc::O_RDWR) {
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EACCES | libc::EROFS | libc::ETXTBSY | libc::EPERM)
                ) =>
            {
                (self.upper.open_file(path, libc::O_RDONLY)?, false)
            }
            r => (r?, true),
        };
        // A rename between the resolution and the open: not the same file.
        if crate::sys::fstat(f.as_fd())?.st_ino != st_ino {
            return Err(eno(libc::ESTALE));
        }
        let origin = self.metacopy_origin(&f, path)?;
        let v = (Arc::new(f), origin);
        if cache {
            self.io.fds.lock().put(st_ino, v.clone());
        }
        Ok(v)
    }

    /// Where the data of file `ino` is; for `write`, in the upper (copied up
    /// first).
    pub(super) fn data(&self, ino: u64, write: bool) -> io::Result<Data> {
        for _ in 0..3 {
            let found = {
                let tree = self.tree.read();
                let path = self.nodes.lock().path(ino);
                path.and_then(|p| self.resolve_in(&tree, &p).map(|r| (p, r)))
            };
            let Some((path, r)) = found else {
                let kept = self.io.orphan(ino);
                if kept.is_none() {
                    log::warn!(target: "unionfs::overlay", "inode {ino:#x}: no name and no data kept: ESTALE");
                }
                return kept.ok_or_else(|| eno(libc::ESTALE));
            };
            match r.kind(&self.stack) {
                libc::S_IFREG => {}
                libc::S_IFDIR => return Err(eno(libc::EISDIR)),
                _ => return Err(eno(libc::EINVAL)),
            }
            match (&r.upper, &r.lower) {
                (Some(u), _) => match self.upper_fd(&path, u.ino) {
                    Err(e) if e.raw_os_error() == Some(libc::ESTALE) => continue,
                    Err(e) => return Err(e),
                    Ok((f, None)) => return Ok(Data::Upper(f)),
                    // A metadata-only copy: read from its layer, filled at
                    // the first write.
                    Ok((_, Some(o))) if !write => return Ok(Data::Lower(o)),
                    Ok((f, Some(o))) => self.fill_metacopy(&f, o)?,
                },
                (None, Some(m)) if !write => return Ok(Data::Lower(m.top)),
                (None, Some(_)) => self.copy_up(&path, true)?,
                (None, None) => return Err(eno(libc::ENOENT)),
            }
        }
        log::warn!(target: "unionfs::overlay", "inode {ino:#x}: its upper file changed under three opens in a row: ESTALE");
        Err(eno(libc::ESTALE))
    }

    /// Reads file `ino` at `off`.
    pub fn read_ino(&self, ino: u64, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        match self.data(ino, false)? {
            Data::Lower(r) => self.stack.layer(r.layer).read(r.entry, off, buf),
            Data::Upper(f) => read_full(&*f, buf, off),
        }
    }

    /// Writes file `ino` at `off` (copying it up first if it is lower).
    pub fn write_ino(&self, ino: u64, off: u64, data: &[u8]) -> io::Result<usize> {
        self.retry_full(|| match self.data(ino, true)? {
            Data::Upper(f) => f.write_at(data, off),
            Data::Lower(_) => Err(eno(libc::EIO)),
        })
    }

    /// `fsync`/`fdatasync` of file `ino` (a lower file: nothing to do).
    pub fn fsync_ino(&self, ino: u64, datasync: bool) -> io::Result<()> {
        match self.data(ino, false)? {
            Data::Upper(f) => crate::sys::fsync(f.as_fd(), datasync),
            Data::Lower(_) => Ok(()),
        }
    }

    /// `fallocate` of file `ino` (copying it up first).
    pub fn fallocate_ino(&self, ino: u64, mode: i32, off: u64, len: u64) -> io::Result<()> {
        self.retry_full(|| match self.data(ino, true)? {
            Data::Upper(f) => fallocate(&f, mode, off, len),
            Data::Lower(_) => Err(eno(libc::EIO)),
        })
    }

    /// Before the name of `r` (at `path`, inode `ino`) goes: what to keep if
    /// the kernel still holds it: a file's data, another object's attributes.
    pub(super) fn keep_data(&self, path: &[Vec<u8>], r: &Resolved, ino: u64) -> Option<Kept> {
        if !self.nodes.lock().is_held(ino) {
            return None;
        }
        if r.kind(&self.stack) != libc::S_IFREG {
            let mut st = self.stat_of(path, r, ino).ok()?;
            // As overlayfs: an upper object's link count drops to 0 with
            // its name; a lower one (whited out) keeps its layer's.
            if r.upper.is_some() {
                st.st_nlink = 0;
            }
            return Some(Kept::Gone(Gone(st)));
        }
        self.keep_file_data(path, r).map(Kept::Data)
    }

    /// The data of file `r` at `path`, to keep past its last name.
    fn keep_file_data(&self, path: &[Vec<u8>], r: &Resolved) -> Option<Data> {
        match (&r.upper, &r.lower) {
            // A metadata-only copy keeps its layer's data (read-only).
            (Some(u), _) => match self.upper_fd(path, u.ino).ok()? {
                (_, Some(o)) => Some(Data::Lower(o)),
                (f, None) => Some(Data::Upper(f)),
            },
            (None, Some(m)) => Some(Data::Lower(m.top)),
            (None, None) => None,
        }
    }

    /// After a name of `ino` went (`upper_gone`: with its upper object's
    /// last name, `st_ino` `upper_ino`): keeps `kept` as the orphan's data if
    /// the kernel knows no name of it any more; closes the cached fd.
    pub(super) fn name_gone(
        &self,
        ino: u64,
        kept: Option<Kept>,
        upper_gone: bool,
        upper_ino: Option<u64>,
    ) {
        if let (true, Some(u)) = (upper_gone, upper_ino) {
            self.io.drop_upper(u);
            *self.io.freed_at.lock() = Some(Instant::now());
        }
        let Some(k) = kept else { return };
        let nodes = self.nodes.lock();
        if nodes.is_held(ino) && nodes.path(ino).is_none() {
            match k {
                Kept::Data(d) => {
                    self.io.orphans.lock().insert(ino, d);
                }
                Kept::Gone(g) => {
                    self.io.gone.lock().insert(ino, g);
                }
            }
        }
    }
}

/// `fallocate(2)` on `f`.
pub(super) fn fallocate(f: &File, mode: i32, off: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (off, len) = (
        i64::try_from(off).map_err(|_| eno(libc::EFBIG))?,
        i64::try_from(len).map_err(|_| eno(libc::EFBIG))?,
    );
    // SAFETY: a valid fd; plain integers.
    let rc = unsafe { libc::fallocate(f.as_raw_fd(), mode, off, len) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
