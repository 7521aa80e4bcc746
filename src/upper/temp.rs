//! Objects under construction in the work directory, and removing trees there.
//!
//! Owns the temp-name scheme (`unionfs-tmp.<pid>.<seq>`), the [`Temp`] guard
//! (a new object is built under a temp name, then renamed into the upper in one
//! step; if anything fails first, dropping the guard removes it, so the upper
//! never sees a half-made object), the cleaning of leftovers at open, and an
//! iterative `remove_tree` (`*at()` calls only, never following a symlink).
//! It does not decide what to build: callers (`ops.rs`, `copy_up.rs`) pass the
//! creating call.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Upper;
use crate::sys;

/// Prefix of every temp name in the work directory. Only names with this prefix
/// are cleaned at open, so a work directory shared with other files is safe.
pub const TEMP_PREFIX: &[u8] = b"unionfs-tmp.";

static SEQ: AtomicU64 = AtomicU64::new(0);

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// A fresh temp name: prefix, our pid, a process-wide sequence number.
fn temp_name() -> Vec<u8> {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let mut v = TEMP_PREFIX.to_vec();
    v.extend_from_slice(format!("{}.{n}", std::process::id()).as_bytes());
    v
}

/// An object in the work directory under a temp name, removed on drop unless
/// it has been [`placed`](Temp::place).
#[derive(Debug)]
pub struct Temp<'a> {
    upper: &'a Upper,
    name: Vec<u8>,
    placed: bool,
}

/// What [`Temp::place`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placed {
    /// The target name was free: the object is in place.
    New,
    /// The target was an overlay-format whiteout (0/0 char device): the object
    /// replaced it atomically (`RENAME_EXCHANGE`) and the whiteout was removed.
    OverWhiteout,
}

impl<'a> Temp<'a> {
    /// Creates an object in the work dir with `make(work, name)`, which must fail
    /// with `EEXIST` if the name is taken (`O_EXCL`, `mkdirat`, ...): then a new
    /// name is tried. Returns the guard and what `make` returned.
    pub fn create<T>(
        upper: &'a Upper,
        mut make: impl FnMut(BorrowedFd<'_>, &[u8]) -> io::Result<T>,
    ) -> io::Result<(Temp<'a>, T)> {
        if upper.is_read_only() {
            return Err(io::Error::from_raw_os_error(libc::EROFS));
        }
        let mut tries = 0;
        loop {
            let name = temp_name();
            match make(upper.work_fd(), &name) {
                Ok(t) => {
                    let tmp = Temp {
                        upper,
                        name,
                        placed: false,
                    };
                    return Ok((tmp, t));
                }
                Err(e) if errno(&e) == libc::EEXIST && tries < 100 => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// The temp name (in the work dir).
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// An `O_PATH` fd of the object (for metadata calls on any kind of object).
    pub fn open_path(&self) -> io::Result<OwnedFd> {
        sys::openat(self.upper.work_fd(), &self.name, libc::O_PATH, 0)
    }

    /// Renames the object to `dir/name` with `RENAME_NOREPLACE` (`EEXIST` if
    /// the name is taken by anything, a whiteout included).
    pub fn place_new(mut self, dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
        sys::renameat2(
            self.upper.work_fd(),
            &self.name,
            dir,
            name,
            libc::RENAME_NOREPLACE,
        )?;
        self.placed = true;
        Ok(())
    }

    /// Renames the object to `dir/name`, replacing what is there.
    pub fn place_over(mut self, dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
        sys::renameat2(self.upper.work_fd(), &self.name, dir, name, 0)?;
        self.placed = true;
        Ok(())
    }

    /// Renames the object to `dir/name` without replacing anything
    /// (`RENAME_NOREPLACE`: `EEXIST` if the name is taken), except an
    /// overlay-format whiteout, which is exchanged with it and then removed.
    pub fn place(mut self, dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Placed> {
        let work = self.upper.work_fd();
        let r = sys::renameat2(work, &self.name, dir, name, libc::RENAME_NOREPLACE);
        match r {
            Ok(()) => {
                self.placed = true;
                Ok(Placed::New)
            }
            Err(e) if errno(&e) == libc::EEXIST && is_whiteout_at(dir, name) => {
                self.exchange_with_whiteout(dir, name)
            }
            Err(e) => Err(e),
        }
    }

    /// `RENAME_EXCHANGE` with the whiteout at `dir/name`, then removes the
    /// whiteout (now under the temp name). If what came back is not a whiteout
    /// (a concurrent change), swaps back and reports `EEXIST`.
    fn exchange_with_whiteout(mut self, dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Placed> {
        let work = self.upper.work_fd();
        sys::renameat2(work, &self.name, dir, name, libc::RENAME_EXCHANGE)?;
        if !is_whiteout_at(work, &self.name) {
            // Not ours to delete: swap it back. Should that fail, leave it in
            // the work dir rather than remove someone's object on drop.
            if let Err(e) = sys::renameat2(work, &self.name, dir, name, libc::RENAME_EXCHANGE) {
                self.placed = true;
                log::error!(target: "unionfs::upper", "cannot swap back a displaced upper entry ({e}); it is in the work dir as {}", String::from_utf8_lossy(&self.name));
                return Err(e);
            }
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        // From here the object is in place; the old whiteout is ours to delete
        // (if that fails, the next open cleans it).
        self.placed = true;
        if let Err(e) = sys::unlinkat(work, &self.name, 0) {
            log::warn!(target: "unionfs::upper", "cannot remove a replaced whiteout from the work dir: {e}");
        }
        Ok(Placed::OverWhiteout)
    }
}

impl Drop for Temp<'_> {
    fn drop(&mut self) {
        if self.placed {
            return;
        }
        if let Err(e) = remove_tree(self.upper.work_fd(), &self.name) {
            log::warn!(
                target: "unionfs::upper",
                "cannot remove temp {} from the work dir: {e} (removed at next open)",
                String::from_utf8_lossy(&self.name)
            );
        }
    }
}

/// Returns true if and only if `dir/name` is an overlay-format whiteout (0/0 char device).
pub fn is_whiteout_at(dir: BorrowedFd<'_>, name: &[u8]) -> bool {
    sys::statat(dir, name).is_ok_and(|st| super::is_whiteout(&st))
}

/// A directory being emptied by [`remove_tree`]: its parent and its name.
enum Step {
    Enter(Rc<OwnedFd>, Vec<u8>),
    Leave(Rc<OwnedFd>, Vec<u8>),
}

/// Removes `dir/name` and, if it is a directory, everything under it. Never
/// follows a symlink; iterative (fds held: about one per level being emptied).
pub fn remove_tree(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    match sys::unlinkat(dir, name, 0) {
        Err(e) if errno(&e) == libc::EISDIR => {}
        r => return r,
    }
    let mut steps = vec![Step::Enter(
        Rc::new(dir.try_clone_to_owned()?),
        name.to_vec(),
    )];
    while let Some(step) = steps.pop() {
        match step {
            Step::Leave(parent, n) => sys::unlinkat(parent.as_fd(), &n, libc::AT_REMOVEDIR)?,
            Step::Enter(parent, n) => {
                let fd = sys::openat(parent.as_fd(), &n, libc::O_PATH | libc::O_DIRECTORY, 0)?;
                let fd = Rc::new(fd);
                steps.push(Step::Leave(parent, n));
                for (child, _) in sys::read_dir_names(fd.as_fd())? {
                    match sys::unlinkat(fd.as_fd(), &child, 0) {
                        Ok(()) => {}
                        Err(e) if errno(&e) == libc::EISDIR => {
                            steps.push(Step::Enter(fd.clone(), child));
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
    Ok(())
}

/// Removes every temp-named entry of the work directory (left by a crash or a
/// failed cleanup); returns how many there were.
pub fn clean_work(work: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n = 0;
    for (name, _) in sys::read_dir_names(work)? {
        if name.starts_with(TEMP_PREFIX) {
            remove_tree(work, &name)?;
            n += 1;
        }
    }
    Ok(n)
}
