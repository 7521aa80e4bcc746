//! FUSE passthrough for upper files: reads, writes and mmap of a file that is
//! in the upper directory go from the kernel straight to the upper file,
//! without a round trip to the daemon or a copy through it (kernel 6.9+,
//! `CONFIG_FUSE_PASSTHROUGH`; the daemon must be root of the initial user
//! namespace, which `FUSE_DEV_IOC_BACKING_OPEN` requires).
//!
//! Owns the choice of *I/O mode* for each open and the backing-file ids. The
//! kernel keeps one mode per inode and fails an open that mixes them (EIO):
//! - a *passthrough* open needs every other open of the inode to be
//!   passthrough with the same backing id: while the inode has one, any
//!   other open fails, direct I/O (`FOPEN_DIRECT_IO`) included;
//! - a *cached* open (the page cache, served by READ/WRITE requests) needs no
//!   passthrough open of the inode.
//!
//! So per inode this counts the passthrough and cached opens it has answered:
//! an upper file opens passthrough unless cached opens are outstanding (a
//! reader of the lower file while it is copied up), and then opens cached
//! without `FOPEN_KEEP_CACHE` (passthrough writes bypass the page cache, so
//! pages kept from before could be stale). A lower file opens cached (kept
//! cache: lower data never changes) unless passthrough opens are outstanding
//! (it was copied up while this open was being served), and then opens
//! passthrough to the copy. Our counts move before the kernel's on open and
//! after them on release, so they never allow what the kernel would refuse.
//!
//! If registering a backing file fails (not root, an upper on a stacked
//! filesystem, a kernel without it) passthrough is switched off for the mount
//! and every open is answered as without it.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};

use fuser::{BackingId, FopenFlags};
use parking_lot::Mutex;

/// How one open is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Served by the kernel from the upper file (`FOPEN_PASSTHROUGH`).
    Passthrough,
    /// The page cache, kept across opens.
    CachedKeep,
    /// The page cache, dropped at open.
    Cached,
}

impl Mode {
    /// The open flags of a non-passthrough answer.
    pub fn flags(self) -> FopenFlags {
        match self {
            Mode::CachedKeep => FopenFlags::FOPEN_KEEP_CACHE,
            Mode::Cached | Mode::Passthrough => FopenFlags::empty(),
        }
    }
}

#[derive(Debug)]
struct Inode<B> {
    backing: Option<B>,
    passthrough: u32,
    cached: u32,
}

impl<B> Default for Inode<B> {
    fn default() -> Self {
        Inode {
            backing: None,
            passthrough: 0,
            cached: 0,
        }
    }
}

#[derive(Debug)]
struct State<B> {
    inodes: HashMap<u64, Inode<B>>,
    /// Open file handle → (inode, mode it was answered with).
    handles: HashMap<u64, (u64, Mode)>,
}

/// See the module docs. `B` is the backing id (generic for the tests).
#[derive(Debug)]
pub struct Passthrough<B = BackingId> {
    on: AtomicBool,
    /// Some open was answered passthrough: pages cached from an earlier cached
    /// open of an upper file may be stale, so those no longer keep the cache.
    used: AtomicBool,
    state: Mutex<State<B>>,
}

impl<B> Default for Passthrough<B> {
    fn default() -> Self {
        Passthrough {
            on: AtomicBool::new(false),
            used: AtomicBool::new(false),
            state: Mutex::new(State {
                inodes: HashMap::new(),
                handles: HashMap::new(),
            }),
        }
    }
}

impl<B> Passthrough<B> {
    /// Whether opens of upper files are answered passthrough.
    pub fn enabled(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Switches passthrough on (the kernel accepted it) or off.
    pub fn set_enabled(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    /// Answers the open of handle `fh` on inode `ino`, made on `upper` (an
    /// upper file) or on a lower file (`None`): chooses its mode, registers
    /// the inode's backing file with `register(&reply, file)` if passthrough
    /// needs one (`ReplyOpen::open_backing`), then calls `answer(reply, mode,
    /// backing id if passthrough)`. The lock is held until `answer` returns, so
    /// that no other open of the inode is answered in between.
    pub fn open<R>(
        &self,
        ino: u64,
        fh: u64,
        upper: Option<&File>,
        reply: R,
        register: impl FnOnce(&R, &File) -> std::io::Result<B>,
        answer: impl FnOnce(R, Mode, Option<&B>),
    ) {
        let mut st = self.state.lock();
        let State { inodes, handles } = &mut *st;
        let node = inodes.entry(ino).or_default();
        let mode = match upper {
            Some(f) if node.passthrough > 0 || (self.enabled() && node.cached == 0) => {
                if node.backing.is_none() {
                    match register(&reply, f) {
                        Ok(b) => node.backing = Some(b),
                        Err(e) => self.unavailable(&e),
                    }
                }
                if node.backing.is_some() {
                    Mode::Passthrough
                } else {
                    Mode::Cached
                }
            }
            Some(_) if self.used.load(Ordering::Relaxed) || self.enabled() => Mode::Cached,
            Some(_) => Mode::CachedKeep,
            // A lower open (a read-only open resolved before a concurrent
            // copy-up whose opens were answered first) of an inode open
            // passthrough: the kernel refuses any other mode, even direct
            // I/O (`fuse_file_io_open`: EIO). The upper file is the copy,
            // complete before any passthrough open: read it.
            None if node.passthrough > 0 => Mode::Passthrough,
            None => Mode::CachedKeep,
        };
        match mode {
            Mode::Passthrough => {
                node.passthrough += 1;
                self.used.store(true, Ordering::Relaxed);
            }
            Mode::Cached | Mode::CachedKeep => node.cached += 1,
        }
        handles.insert(fh, (ino, mode));
        let backing = node.backing.as_ref().filter(|_| mode == Mode::Passthrough);
        answer(reply, mode, backing)
    }

    /// Registering a backing file failed with `e`: passthrough is off for the
    /// mount from now on.
    fn unavailable(&self, e: &std::io::Error) {
        let why = match e.raw_os_error() {
            Some(libc::ELOOP) => {
                "the upper directory is on a stacked filesystem (such as overlayfs)".to_string()
            }
            Some(libc::EPERM) => "the kernel allows it to root only".to_string(),
            _ => e.to_string(),
        };
        log::warn!(target: "unionfs::fuse",
            "FUSE passthrough unavailable: {why}; upper files are served through the daemon");
        self.set_enabled(false);
    }

    /// Forgets handle `fh`; the backing id of its inode is closed with the
    /// inode's last passthrough open.
    pub fn release(&self, fh: u64) {
        let mut st = self.state.lock();
        let Some((ino, mode)) = st.handles.remove(&fh) else {
            return;
        };
        let Some(node) = st.inodes.get_mut(&ino) else {
            return;
        };
        match mode {
            Mode::Passthrough => {
                node.passthrough = node.passthrough.saturating_sub(1);
                if node.passthrough == 0 {
                    node.backing = None;
                }
            }
            Mode::Cached | Mode::CachedKeep => node.cached = node.cached.saturating_sub(1),
        }
        if node.passthrough == 0 && node.cached == 0 {
            st.inodes.remove(&ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A backing id that counts how many are live.
    struct Id<'a>(&'a Cell<i32>);
    impl Drop for Id<'_> {
        fn drop(&mut self) {
            self.0.set(self.0.get() - 1);
        }
    }

    /// The mode `p` answers an open with.
    fn answer<B>(
        p: &Passthrough<B>,
        ino: u64,
        fh: u64,
        upper: Option<&File>,
        register: impl FnOnce(&File) -> std::io::Result<B>,
    ) -> Mode {
        let mut got = None;
        p.open(
            ino,
            fh,
            upper,
            (),
            |_, f| register(f),
            |(), m, b| {
                assert_eq!(m == Mode::Passthrough, b.is_some());
                got = Some(m);
            },
        );
        got.expect("answered")
    }

    fn open<'a>(
        p: &Passthrough<Id<'a>>,
        live: &'a Cell<i32>,
        ino: u64,
        fh: u64,
        upper: bool,
    ) -> Mode {
        let f = File::open("/dev/null").unwrap();
        let reg = |_: &File| {
            live.set(live.get() + 1);
            Ok(Id(live))
        };
        answer(p, ino, fh, upper.then_some(&f), reg)
    }

    #[test]
    fn upper_files_open_passthrough_with_one_backing_id_per_inode() {
        let live = Cell::new(0);
        let p = Passthrough::default();
        p.set_enabled(true);
        assert_eq!(open(&p, &live, 7, 1, true), Mode::Passthrough);
        assert_eq!(open(&p, &live, 7, 2, true), Mode::Passthrough);
        assert_eq!(live.get(), 1, "one backing id for both opens");
        // A lower open of the same inode (a race with copy-up) can be
        // neither cached nor direct: the kernel takes only passthrough.
        assert_eq!(open(&p, &live, 7, 3, false), Mode::Passthrough);
        assert_eq!(live.get(), 1, "the same backing id");
        p.release(1);
        p.release(2);
        assert_eq!(live.get(), 1, "fh 3 is passthrough too");
        p.release(3);
        assert_eq!(live.get(), 0, "closed with the last passthrough open");
        assert_eq!(open(&p, &live, 7, 4, false), Mode::CachedKeep);
    }

    #[test]
    fn an_upper_open_during_a_cached_open_is_cached_and_drops_the_page_cache() {
        let live = Cell::new(0);
        let p = Passthrough::default();
        p.set_enabled(true);
        assert_eq!(open(&p, &live, 9, 1, false), Mode::CachedKeep);
        assert_eq!(open(&p, &live, 9, 2, true), Mode::Cached);
        assert_eq!(live.get(), 0);
        p.release(1);
        // Still one cached open (fh 2): passthrough would make the kernel refuse.
        assert_eq!(open(&p, &live, 9, 3, true), Mode::Cached);
        p.release(2);
        p.release(3);
        assert_eq!(open(&p, &live, 9, 4, true), Mode::Passthrough);
        // Releasing an unknown handle is harmless.
        p.release(99);
    }

    #[test]
    fn a_failed_registration_switches_passthrough_off() {
        let p: Passthrough<u32> = Passthrough::default();
        p.set_enabled(true);
        let f = File::open("/dev/null").unwrap();
        let eperm = |_: &File| Err(std::io::Error::from_raw_os_error(libc::EPERM));
        let m = answer(&p, 1, 1, Some(&f), eperm);
        assert_eq!(m, Mode::Cached);
        assert!(!p.enabled());
        let m = answer(&p, 2, 2, Some(&f), |_| unreachable!());
        assert_eq!(
            m,
            Mode::CachedKeep,
            "without passthrough, upper files keep their cache"
        );
    }

    #[test]
    fn without_passthrough_every_open_keeps_the_cache() {
        let p: Passthrough<u32> = Passthrough::default();
        let f = File::open("/dev/null").unwrap();
        let none = |_: &File| -> std::io::Result<u32> { unreachable!() };
        assert_eq!(answer(&p, 1, 1, Some(&f), none), Mode::CachedKeep);
        assert_eq!(answer(&p, 1, 2, None, none), Mode::CachedKeep);
    }
}
