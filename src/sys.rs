//! Every `unsafe` libc call of the crate, as safe `io::Result` functions.
//!
//! All path-taking calls are the `*at()` forms relative to a directory fd and
//! take a single name component, never a path: the upper directory is walked one
//! component at a time with `O_NOFOLLOW`, so no symlink (in the merged view or in
//! the upper directory itself) can make an operation land outside it.
//! `O_CLOEXEC` is always added to opens. The one multi-component call,
//! [`openat_beneath`], has the kernel enforce the same rule in one syscall
//! (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// A validated single name component as a C string.
///
/// Refuses `""`, `"."`, `".."`, and names containing `/` or NUL with `EINVAL`.
pub fn name(n: &[u8]) -> io::Result<CString> {
    if n.is_empty() || n == b"." || n == b".." || n.contains(&b'/') {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    CString::new(n).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn retry<F: FnMut() -> libc::c_int>(mut f: F) -> io::Result<libc::c_int> {
    loop {
        match check(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Opens `path` (validated components joined by `/`) beneath `dir` with
/// `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`:
/// one syscall for a walk that no symlink (`ELOOP`) and no `..` can leave.
/// `ENOSYS` on kernels before 5.6.
pub fn openat_beneath(dir: BorrowedFd<'_>, path: &[u8], flags: i32) -> io::Result<OwnedFd> {
    let c = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_how is plain data; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    let fd = loop {
        // SAFETY: c is a valid C string, how a valid open_how of the size
        // passed, dir a live fd.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if rc >= 0 {
            break rc as RawFd;
        }
        let e = io::Error::last_os_error();
        // EAGAIN: a concurrent rename anywhere raced the walk (RESOLVE_BENEATH).
        if !matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN)) {
            return Err(e);
        }
    };
    // SAFETY: openat2 returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC, mode)`.
pub fn openat(dir: BorrowedFd<'_>, n: &[u8], flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let c = name(n)?;
    let fd = retry(|| unsafe {
        // SAFETY: c is a valid C string; dir is a live fd.
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: openat returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a directory by absolute or relative path (the upper root only).
pub fn open_dir_path(path: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let fd = retry(|| unsafe {
        // SAFETY: c is a valid C string.
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub fn statat(dir: BorrowedFd<'_>, n: &[u8]) -> io::Result<libc::stat> {
    let c = name(n)?;
    // SAFETY: zeroed stat is a valid out buffer; c and dir are valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    retry(|| unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

/// `fstat(fd)`.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: as above.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    retry(|| unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// `mkdirat(dir, name, mode)`.
pub fn mkdirat(dir: BorrowedFd<'_>, n: &[u8], mode: u32) -> io::Result<()> {
    let c = name(n)?;
    // SAFETY: valid C string and fd.
    retry(|| unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) })?;
    Ok(())
}

/// `mknodat(dir, name, mode, dev)`.
pub fn mknodat(dir: BorrowedFd<'_>, n: &[u8], mode: u32, dev: u64) -> io::Result<()> {
    let c = name(n)?;
    // SAFETY: valid C string and fd.
    retry(|| unsafe {
        libc::mknodat(
            dir.as_raw_fd(),
            c.as_ptr(),
            mode as libc::mode_t,
            dev as libc::dev_t,
        )
    })?;
    Ok(())
}

/// `symlinkat(target, dir, name)`.
pub fn symlinkat(target: &[u8], dir: BorrowedFd<'_>, n: &[u8]) -> io::Result<()> {
    let c = name(n)?;
    let t = CString::new(target).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: valid C strings and fd.
    retry(|| unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) })?;
    Ok(())
}

/// `linkat(old_dir, old, new_dir, new, 0)` (never follows a symlink).
pub fn linkat(
    old_dir: BorrowedFd<'_>,
    old: &[u8],
    new_dir: BorrowedFd<'_>,
    new: &[u8],
) -> io::Result<()> {
    let (o, n) = (name(old)?, name(new)?);
    // SAFETY: valid C strings and fds.
    retry(|| unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            o.as_ptr(),
            new_dir.as_raw_fd(),
            n.as_ptr(),
            0,
        )
    })?;
    Ok(())
}

/// `unlinkat(dir, name, flags)` (`libc::AT_REMOVEDIR` for directories).
pub fn unlinkat(dir: BorrowedFd<'_>, n: &[u8], flags: i32) -> io::Result<()> {
    let c = name(n)?;
    // SAFETY: valid C string and fd.
    retry(|| unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) })?;
    Ok(())
}

/// `renameat2(old_dir, old, new_dir, new, flags)` (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`...).
pub fn renameat2(
    old_dir: BorrowedFd<'_>,
    old: &[u8],
    new_dir: BorrowedFd<'_>,
    new: &[u8],
    flags: u32,
) -> io::Result<()> {
    let (o, n) = (name(old)?, name(new)?);
    // SAFETY: valid C strings and fds.
    retry(|| unsafe {
        libc::renameat2(
            old_dir.as_raw_fd(),
            o.as_ptr(),
            new_dir.as_raw_fd(),
            n.as_ptr(),
            flags,
        )
    })?;
    Ok(())
}

/// `fchownat(dir, name, uid, gid, AT_SYMLINK_NOFOLLOW)`; `u32::MAX` leaves one unchanged.
pub fn lchownat(dir: BorrowedFd<'_>, n: &[u8], uid: u32, gid: u32) -> io::Result<()> {
    let c = name(n)?;
    // SAFETY: valid C string and fd.
    retry(|| unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            c.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

/// `fchown(fd, uid, gid)`.
pub fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid fd.
    retry(|| unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) })?;
    Ok(())
}

/// `fchmod(fd, mode)`.
pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: valid fd.
    retry(|| unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) })?;
    Ok(())
}

/// `utimensat(dir, name, times, AT_SYMLINK_NOFOLLOW)`; `None` = `UTIME_OMIT`.
pub fn lutimensat(
    dir: BorrowedFd<'_>,
    n: &[u8],
    atime: Option<libc::timespec>,
    mtime: Option<libc::timespec>,
) -> io::Result<()> {
    let c = name(n)?;
    let omit = libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::UTIME_OMIT,
    };
    let ts = [atime.unwrap_or(omit), mtime.unwrap_or(omit)];
    // SAFETY: valid C string, fd and a two-element array.
    retry(|| unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

/// `readlinkat(dir, name)`.
pub fn readlinkat(dir: BorrowedFd<'_>, n: &[u8]) -> io::Result<Vec<u8>> {
    let c = name(n)?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: buf is writable for buf.len() bytes.
        let r = unsafe {
            libc::readlinkat(
                dir.as_raw_fd(),
                c.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let r = r as usize;
        if r < buf.len() {
            buf.truncate(r);
            return Ok(buf);
        }
        buf.resize(buf.len() * 2, 0);
    }
}

/// `fsetxattr(fd, name, value, flags)`.
pub fn fsetxattr(fd: BorrowedFd<'_>, key: &[u8], value: &[u8], flags: i32) -> io::Result<()> {
    let k = CString::new(key).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: valid fd, C string and value buffer.
    retry(|| unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            k.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })?;
    Ok(())
}

/// `fgetxattr(fd, name)`: the whole value.
pub fn fgetxattr(fd: BorrowedFd<'_>, key: &[u8]) -> io::Result<Vec<u8>> {
    let k = CString::new(key).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    sized(|buf: &mut [u8]| unsafe {
        // SAFETY: buf is writable for its length (0 = size query with a null pointer).
        libc::fgetxattr(fd.as_raw_fd(), k.as_ptr(), buf_ptr(buf), buf.len())
    })
}

/// `flistxattr(fd)`: NUL-separated names.
pub fn flistxattr(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    sized(|buf: &mut [u8]| unsafe {
        // SAFETY: as above.
        libc::flistxattr(fd.as_raw_fd(), buf_ptr(buf).cast(), buf.len())
    })
}

/// `fremovexattr(fd, name)`.
pub fn fremovexattr(fd: BorrowedFd<'_>, key: &[u8]) -> io::Result<()> {
    let k = CString::new(key).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: valid fd and C string.
    retry(|| unsafe { libc::fremovexattr(fd.as_raw_fd(), k.as_ptr()) })?;
    Ok(())
}

fn buf_ptr(buf: &mut [u8]) -> *mut libc::c_void {
    if buf.is_empty() {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    }
}

/// Calls a "size query, then fill" style function until the value fits.
fn sized<F: FnMut(&mut [u8]) -> libc::ssize_t>(mut f: F) -> io::Result<Vec<u8>> {
    // Most lists and values are short (often empty): one call into a small
    // buffer, the size query only when it does not fit.
    let mut buf = vec![0u8; 256];
    let m = f(&mut buf);
    if m >= 0 {
        buf.truncate(m as usize);
        return Ok(buf);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::ERANGE) {
        return Err(e);
    }
    loop {
        let n = f(&mut []);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; n as usize];
        let m = f(&mut buf);
        if m < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue; // grew between the two calls
            }
            return Err(e);
        }
        buf.truncate(m as usize);
        return Ok(buf);
    }
}

/// The names in directory `fd` (excluding `.` and `..`) with their `d_type`,
/// read with `getdents64` on a duplicate of the fd so the caller's offset is
/// untouched.
pub fn read_dir_names(fd: BorrowedFd<'_>) -> io::Result<Vec<(Vec<u8>, u8)>> {
    Ok(read_dir_entries(fd)?
        .into_iter()
        .map(|(n, t, _)| (n, t))
        .collect())
}

/// [`read_dir_names`] with each entry's `d_ino` too.
pub fn read_dir_entries(fd: BorrowedFd<'_>) -> io::Result<Vec<(Vec<u8>, u8, u64)>> {
    let dup = fd.try_clone_to_owned()?;
    // Reopen "." to get an independent file offset.
    let own = openat_dot(dup.as_raw_fd())?;
    read_dir_fresh(std::os::fd::AsFd::as_fd(&own))
}

/// [`read_dir_entries`] of a directory opened (`O_RDONLY | O_DIRECTORY`) by
/// the caller for this alone: read from its offset, which must be the start.
pub fn read_dir_fresh(own: BorrowedFd<'_>) -> io::Result<Vec<(Vec<u8>, u8, u64)>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        // SAFETY: buf is writable for its length; own is a directory fd.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                own.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(out);
        }
        let mut at = 0usize;
        while at < n as usize {
            // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
            let ino = u64::from_ne_bytes(buf[at..at + 8].try_into().unwrap_or([0; 8]));
            let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
            let dtype = buf[at + 18];
            let name_bytes = &buf[at + 19..at + reclen];
            let end = name_bytes
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(name_bytes.len());
            let nm = &name_bytes[..end];
            if nm != b"." && nm != b".." {
                out.push((nm.to_vec(), dtype, ino));
            }
            at += reclen.max(1);
        }
    }
}

fn openat_dot(dir: RawFd) -> io::Result<OwnedFd> {
    let fd = retry(|| unsafe {
        // SAFETY: "." is a valid C string; dir is a live directory fd.
        libc::openat(
            dir,
            c".".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `posix_fadvise(fd, off, len, POSIX_FADV_WILLNEED)`: start reading into the page
/// cache; a hint, so failures are ignored.
pub fn fadvise_willneed(fd: BorrowedFd<'_>, off: u64, len: u64) {
    let (Ok(off), Ok(len)) = (i64::try_from(off), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a plain advisory call on a valid fd.
    unsafe { libc::posix_fadvise(fd.as_raw_fd(), off, len, libc::POSIX_FADV_WILLNEED) };
}

/// `fsync` or `fdatasync`.
pub fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> io::Result<()> {
    // SAFETY: valid fd.
    retry(|| unsafe {
        if datasync {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    })?;
    Ok(())
}

/// `ftruncate(fd, len)`.
pub fn ftruncate(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: valid fd.
    retry(|| unsafe { libc::ftruncate(fd.as_raw_fd(), len) })?;
    Ok(())
}

/// `utimensat(fd, "", times, AT_EMPTY_PATH)`: sets the times of the object `fd`
/// refers to, which may be an `O_PATH` fd (a symlink itself included); `None` =
/// `UTIME_OMIT`.
pub fn futimens(
    fd: BorrowedFd<'_>,
    atime: Option<libc::timespec>,
    mtime: Option<libc::timespec>,
) -> io::Result<()> {
    let omit = libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::UTIME_OMIT,
    };
    let ts = [atime.unwrap_or(omit), mtime.unwrap_or(omit)];
    // SAFETY: "" is a valid C string, fd is live, ts has two elements.
    retry(|| unsafe {
        libc::utimensat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            ts.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

/// `fchownat(fd, "", uid, gid, AT_EMPTY_PATH)`: changes the owner of the object
/// `fd` refers to, which may be an `O_PATH` fd (a symlink itself included);
/// `u32::MAX` leaves one unchanged.
pub fn fchown_empty(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: "" is a valid C string and fd is live.
    retry(|| unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

/// Opens the parent of directory `dir` (`openat(dir, "..", O_PATH | O_DIRECTORY)`).
pub fn open_parent(dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let fd = retry(|| unsafe {
        // SAFETY: ".." is a valid C string; dir is a live fd.
        libc::openat(
            dir.as_raw_fd(),
            c"..".as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `sync_file_range(fd, off, len, SYNC_FILE_RANGE_WRITE)`: starts writeback
/// of that range and returns (a hint; errors are the caller's to ignore).
pub fn start_writeback(fd: BorrowedFd<'_>, off: u64, len: u64) -> io::Result<()> {
    let (off, len) = (off as libc::off64_t, len as libc::off64_t);
    // SAFETY: valid fd; plain integers.
    retry(|| unsafe {
        libc::sync_file_range(fd.as_raw_fd(), off, len, libc::SYNC_FILE_RANGE_WRITE)
    })?;
    Ok(())
}

/// `fstatfs(fd).f_type`: the filesystem's magic number.
pub fn fs_type(fd: BorrowedFd<'_>) -> io::Result<i64> {
    // SAFETY: all-zero is a valid statfs; valid fd and out pointer.
    let mut sf: libc::statfs = unsafe { std::mem::zeroed() };
    retry(|| unsafe { libc::fstatfs(fd.as_raw_fd(), &mut sf) })?;
    #[allow(clippy::unnecessary_cast)]
    Ok(sf.f_type as i64)
}

/// `flock(fd, LOCK_SH | LOCK_NB)`: `EWOULDBLOCK` if another open file holds
/// it exclusively. The lock lasts as long as the open file.
pub fn flock_shared(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: valid fd.
    retry(|| unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) })?;
    Ok(())
}

/// `flock(fd, LOCK_EX | LOCK_NB)`: `EWOULDBLOCK` if another open file holds it.
/// The lock lasts as long as the open file (all its duplicates).
pub fn flock_exclusive(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: valid fd.
    retry(|| unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) })?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Calls on the object an fd refers to, through `/proc/self/fd/N`.
//
// An `O_PATH | O_NOFOLLOW` fd can name any object without opening it (a symlink,
// a fifo, a device: no side effect), but `fgetxattr`, `fchmod`, ... refuse such
// fds. The path `/proc/self/fd/N` is a "magic link": resolving it jumps straight
// to the object the fd refers to and resolution ends there, so even when that
// object is a symlink it is the symlink itself that is acted on, never its
// target. This is what glibc's `fchmodat(AT_SYMLINK_NOFOLLOW)` does. It needs
// `/proc` to be mounted.

fn proc_fd(fd: BorrowedFd<'_>) -> CString {
    // Digits only: cannot contain a NUL.
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

fn xattr_key(key: &[u8]) -> io::Result<CString> {
    CString::new(key).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `getxattr` on the object `fd` refers to (any fd, `O_PATH` included).
pub fn path_getxattr(fd: BorrowedFd<'_>, key: &[u8]) -> io::Result<Vec<u8>> {
    let (p, k) = (proc_fd(fd), xattr_key(key)?);
    sized(|buf: &mut [u8]| unsafe {
        // SAFETY: valid C strings; buf is writable for its length.
        libc::getxattr(p.as_ptr(), k.as_ptr(), buf_ptr(buf), buf.len())
    })
}

/// `setxattr` on the object `fd` refers to (any fd, `O_PATH` included).
pub fn path_setxattr(fd: BorrowedFd<'_>, key: &[u8], value: &[u8], flags: i32) -> io::Result<()> {
    let (p, k) = (proc_fd(fd), xattr_key(key)?);
    // SAFETY: valid C strings and value buffer.
    retry(|| unsafe {
        libc::setxattr(
            p.as_ptr(),
            k.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })?;
    Ok(())
}

/// `listxattr` on the object `fd` refers to: NUL-separated names.
pub fn path_listxattr(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let p = proc_fd(fd);
    sized(|buf: &mut [u8]| unsafe {
        // SAFETY: valid C string; buf is writable for its length.
        libc::listxattr(p.as_ptr(), buf_ptr(buf).cast(), buf.len())
    })
}

/// `removexattr` on the object `fd` refers to.
pub fn path_removexattr(fd: BorrowedFd<'_>, key: &[u8]) -> io::Result<()> {
    let (p, k) = (proc_fd(fd), xattr_key(key)?);
    // SAFETY: valid C strings.
    retry(|| unsafe { libc::removexattr(p.as_ptr(), k.as_ptr()) })?;
    Ok(())
}

/// Opens the object `fd` refers to anew with `flags` (e.g. an `O_PATH` fd
/// turned into a readable one): the same inode, whatever its name now points to.
/// `O_NOFOLLOW` is dropped (it would refuse the magic link itself); `O_CREAT`
/// is refused with `EINVAL`.
pub fn reopen(fd: BorrowedFd<'_>, flags: i32) -> io::Result<OwnedFd> {
    if flags & libc::O_CREAT != 0 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let flags = (flags & !libc::O_NOFOLLOW) | libc::O_CLOEXEC;
    let p = proc_fd(fd);
    let fd = retry(|| unsafe {
        // SAFETY: valid C string.
        libc::open(p.as_ptr(), flags, 0)
    })?;
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `chmod` of the object `fd` refers to (`EOPNOTSUPP` for a symlink, as
/// `fchmodat(AT_SYMLINK_NOFOLLOW)` says: Linux symlinks have no mode).
pub fn path_chmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    if fstat(fd)?.st_mode & libc::S_IFMT == libc::S_IFLNK {
        return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    let p = proc_fd(fd);
    // SAFETY: valid C string.
    retry(|| unsafe { libc::chmod(p.as_ptr(), mode as libc::mode_t) })?;
    Ok(())
}

/// `truncate` of the object `fd` refers to (must be a regular file: `EISDIR`
/// for a directory, `EINVAL` for anything else, as `truncate(2)` says).
pub fn path_truncate(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    match fstat(fd)?.st_mode & libc::S_IFMT {
        libc::S_IFREG => {}
        libc::S_IFDIR => return Err(io::Error::from_raw_os_error(libc::EISDIR)),
        _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
    }
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    let p = proc_fd(fd);
    // SAFETY: valid C string.
    retry(|| unsafe { libc::truncate(p.as_ptr(), len) })?;
    Ok(())
}

/// Makes every heap allocation of at least `bytes` its own mapping, returned
/// to the kernel when freed. glibc otherwise raises this threshold after the
/// first large free and serves later large blocks from per-thread arenas,
/// which keep freed memory: a mount whose span cache cycles 2 MiB spans of
/// gzip layers held twice its cache (160 MB peak for a 64 MiB cache, 83 MB
/// with a fixed 1 MiB threshold).
pub fn large_allocations_mapped(bytes: usize) {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; any value is valid.
    unsafe {
        libc::mallopt(
            libc::M_MMAP_THRESHOLD,
            bytes.min(i32::MAX as usize) as libc::c_int,
        );
    }
    #[cfg(not(target_env = "gnu"))]
    let _ = bytes;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn names_are_single_components() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0b"] {
            assert_eq!(name(bad).unwrap_err().raw_os_error(), Some(libc::EINVAL));
        }
        assert!(name(b".wh.x").is_ok());
    }

    #[test]
    fn symlinks_are_never_followed() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("etc")).unwrap();
        let root = open_dir_path(d.path()).unwrap();
        // With O_DIRECTORY the kernel says ENOTDIR, without it ELOOP: never /etc.
        let e = openat(root.as_fd(), b"etc", libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR));
        let e = openat(root.as_fd(), b"etc", libc::O_RDONLY, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        let st = statat(root.as_fd(), b"etc").unwrap();
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFLNK);
        assert_eq!(readlinkat(root.as_fd(), b"etc").unwrap(), b"/etc");
    }

    #[test]
    fn lists_and_renames() {
        let d = tempfile::tempdir().unwrap();
        let root = open_dir_path(d.path()).unwrap();
        mkdirat(root.as_fd(), b"a", 0o755).unwrap();
        symlinkat(b"x", root.as_fd(), b"l").unwrap();
        renameat2(root.as_fd(), b"a", root.as_fd(), b"b", 0).unwrap();
        let e = renameat2(
            root.as_fd(),
            b"l",
            root.as_fd(),
            b"b",
            libc::RENAME_NOREPLACE,
        )
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        let mut names = read_dir_names(root.as_fd()).unwrap();
        names.sort();
        assert_eq!(
            names,
            vec![(b"b".to_vec(), libc::DT_DIR), (b"l".to_vec(), libc::DT_LNK)]
        );
    }

    #[test]
    fn o_path_calls_act_on_a_symlink_itself() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("target"), b"x").unwrap();
        std::os::unix::fs::symlink(d.path().join("target"), d.path().join("l")).unwrap();
        let root = open_dir_path(d.path()).unwrap();
        let l = openat(root.as_fd(), b"l", libc::O_PATH, 0).unwrap();
        let t = openat(root.as_fd(), b"target", libc::O_RDONLY, 0).unwrap();
        // trusted.* xattrs are allowed on symlinks (root only).
        path_setxattr(l.as_fd(), b"trusted.t", b"v", 0).unwrap();
        assert_eq!(path_getxattr(l.as_fd(), b"trusted.t").unwrap(), b"v");
        assert!(path_listxattr(l.as_fd())
            .unwrap()
            .starts_with(b"trusted.t\0"));
        let e = fgetxattr(t.as_fd(), b"trusted.t").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODATA));
        path_removexattr(l.as_fd(), b"trusted.t").unwrap();
        // chmod/truncate refuse a symlink rather than reaching the target.
        let e = path_chmod(l.as_fd(), 0o600).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP));
        let e = path_truncate(l.as_fd(), 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        // chown and times land on the symlink, not on the target.
        fchown_empty(l.as_fd(), 1234, 5678).unwrap();
        let ts = libc::timespec {
            tv_sec: 12345,
            tv_nsec: 6,
        };
        futimens(l.as_fd(), Some(ts), Some(ts)).unwrap();
        let (sl, st) = (fstat(l.as_fd()).unwrap(), fstat(t.as_fd()).unwrap());
        assert_eq!((sl.st_uid, sl.st_gid, sl.st_mtime), (1234, 5678, 12345));
        assert_eq!((st.st_uid, st.st_size), (0, 1));
        assert_ne!(st.st_mtime, 12345);
    }

    #[test]
    fn o_path_chmod_truncate_on_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"hello").unwrap();
        let root = open_dir_path(d.path()).unwrap();
        let f = openat(root.as_fd(), b"f", libc::O_PATH, 0).unwrap();
        path_chmod(f.as_fd(), 0o4711).unwrap();
        path_truncate(f.as_fd(), 2).unwrap();
        let st = fstat(f.as_fd()).unwrap();
        assert_eq!((st.st_mode & 0o7777, st.st_size), (0o4711, 2));
        let e = path_truncate(root.as_fd(), 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EISDIR));
        let w = openat(root.as_fd(), b"f", libc::O_WRONLY, 0).unwrap();
        ftruncate(w.as_fd(), 10).unwrap();
        assert_eq!(fstat(w.as_fd()).unwrap().st_size, 10);
        let p = open_parent(root.as_fd()).unwrap();
        let up = std::fs::metadata(d.path().parent().unwrap()).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fstat(p.as_fd()).unwrap().st_ino, up.ino());
    }

    #[test]
    fn flock_is_exclusive_per_open_file() {
        let d = tempfile::tempdir().unwrap();
        let a = open_dir_path(d.path()).unwrap();
        let b = open_dir_path(d.path()).unwrap();
        flock_exclusive(a.as_fd()).unwrap();
        let e = flock_exclusive(b.as_fd()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EWOULDBLOCK));
        drop(a);
        flock_exclusive(b.as_fd()).unwrap();
    }
}
