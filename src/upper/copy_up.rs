//! Copy-up: making a lower object an upper one before it is changed.
//!
//! Owns the copy of one object (kernel `copy_up.c`, `ovl_copy_up_workdir`): it
//! is built under a temp name in the work directory — data, then owner, mode,
//! xattrs, times — and renamed into place with `RENAME_NOREPLACE`. So the upper
//! only ever holds complete copies: a crash leaves at most a temp file in the
//! work dir (removed at the next open), an error (a failing read, a full disk)
//! removes the temp and leaves the upper unchanged. If the name appears in the
//! upper meanwhile (another thread won the race), the temp is dropped and the
//! call reports [`CopiedUp::Existed`]: copy-up is idempotent, and no lock is held
//! while data is copied.
//!
//! Does not own: reading the lower (the caller passes metadata and a data
//! callback, e.g. `TarLayer::read`), the walk that copies missing parents first
//! (the caller copies each ancestor with [`copy_up_dir`], top down), nor the
//! per-inode serialisation the FUSE core adds.
//!
//! Hard links: a lower object with several names copies up as a file of its
//! own, not linked to the other names' copies (overlayfs without `index=on`
//! does the same; the kernel docs call this "broken hardlinks").
//!
//! Xattrs (kernel `ovl_copy_xattr`): private ones (`trusted.overlay.*`, ...) are
//! never copied — a layer must not be able to plant an opaque marker;
//! `user.*` on a non-regular, non-directory object is skipped (Linux refuses
//! them there); one the upper filesystem does not support (`EOPNOTSUPP`) is
//! skipped unless it is a `security.*` or POSIX ACL xattr, which fails the copy.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;

use super::owner::{self, Logical};
use super::temp::Temp;
use super::{check_name, eno, is_private_xattr, is_whiteout, Upper};
use crate::sys;

/// Largest read-and-write step of a data copy.
pub const CHUNK: usize = 1 << 20;

/// Metadata of the lower object to reproduce in the upper.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits (`& 0o7777`; the type comes from the call).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Access time (seconds, nanoseconds).
    pub atime: (i64, u32),
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, u32),
    /// Extended attributes.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Rootless only: the object is a placeholder for a device of this type
    /// and number (`S_IFCHR`/`S_IFBLK`, `makedev`); see `owner.rs`.
    pub placeholder: Option<(u32, u64)>,
    /// A private xattr to set as well (`overlay::metacopy`'s marker of a
    /// metadata-only copy: set before the copy is renamed into place).
    pub private: Option<(Vec<u8>, Vec<u8>)>,
}

/// The result of a copy-up.
#[derive(Clone, Copy, Debug)]
pub enum CopiedUp {
    /// The copy is now in the upper; its `lstat`.
    Created(libc::stat),
    /// The upper already had the object (copied up before, or by a racing call).
    Existed,
}

/// Copies up a directory: metadata only (its entries stay below until each is
/// copied up). Its parent must already be in the upper. The root always exists.
pub fn copy_up_dir<P: AsRef<[u8]>>(upper: &Upper, path: &[P], meta: &Meta) -> io::Result<CopiedUp> {
    if path.is_empty() {
        return Ok(CopiedUp::Existed);
    }
    let make = |w: BorrowedFd<'_>, n: &[u8]| sys::mkdirat(w, n, 0o700);
    copy_up_with(upper, path, libc::S_IFDIR, meta, make, |()| Ok(()))
}

/// Copies up a regular file of `size` bytes, read with `data(offset, buf)`
/// (returns bytes read; 0 before `size` is an error). With `sparse_map`
/// (offset, length chunks, e.g. `Extra::sparse`), only the chunks are read and
/// written and the rest stays holes. Data moves in steps of at most [`CHUNK`],
/// and is `fsync`ed before the rename unless the upper is volatile.
pub fn copy_up_file<P, F>(
    upper: &Upper,
    path: &[P],
    meta: &Meta,
    data: F,
    size: u64,
    sparse_map: Option<&[(u64, u64)]>,
) -> io::Result<CopiedUp>
where
    P: AsRef<[u8]>,
    F: Fn(u64, &mut [u8]) -> io::Result<usize>,
{
    let make = |w: BorrowedFd<'_>, n: &[u8]| {
        sys::openat(w, n, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0o600)
    };
    // No data written (an empty file, a metadata-only copy): nothing for an
    // fsync to make durable (kernel overlayfs syncs only copied data too).
    let no_data = size == 0 || sparse_map.is_some_and(|m| m.is_empty());
    let fill = |fd| {
        let f = File::from(fd);
        copy_data(&f, &data, size, sparse_map)?;
        if !upper.is_volatile() && !no_data {
            sys::fsync(f.as_fd(), true)?;
        }
        Ok(())
    };
    copy_up_with(upper, path, libc::S_IFREG, meta, make, fill)
}

/// Copies up a symlink with target `target`.
pub fn copy_up_symlink<P: AsRef<[u8]>>(
    upper: &Upper,
    path: &[P],
    meta: &Meta,
    target: &[u8],
) -> io::Result<CopiedUp> {
    let make = |w: BorrowedFd<'_>, n: &[u8]| sys::symlinkat(target, w, n);
    copy_up_with(upper, path, libc::S_IFLNK, meta, make, |()| Ok(()))
}

/// Copies up a fifo, socket or device of type `kind` (`S_IFIFO`, ...) and
/// device number `rdev`. A 0/0 character device is `EPERM`: in the upper it
/// would read as a whiteout.
pub fn copy_up_special<P: AsRef<[u8]>>(
    upper: &Upper,
    path: &[P],
    meta: &Meta,
    kind: u32,
    rdev: u64,
) -> io::Result<CopiedUp> {
    match kind {
        libc::S_IFCHR if rdev == 0 => return Err(eno(libc::EPERM)),
        libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO | libc::S_IFSOCK => {}
        _ => return Err(eno(libc::EINVAL)),
    }
    if upper.is_rootless() && owner::is_device(kind) {
        // An unprivileged daemon cannot make devices: a placeholder file whose
        // override records the device (see `owner.rs`).
        let meta = Meta {
            placeholder: Some((kind, rdev)),
            ..meta.clone()
        };
        let make = |w: BorrowedFd<'_>, n: &[u8]| {
            sys::openat(w, n, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0o600).map(drop)
        };
        return copy_up_with(upper, path, libc::S_IFREG, &meta, make, |()| Ok(()));
    }
    let make = |w: BorrowedFd<'_>, n: &[u8]| sys::mknodat(w, n, kind | 0o600, rdev);
    copy_up_with(upper, path, kind, meta, make, |()| Ok(()))
}

/// The common path: make the temp with `make`, `fill` it, set `meta`, rename.
fn copy_up_with<P, T>(
    upper: &Upper,
    path: &[P],
    kind: u32,
    meta: &Meta,
    make: impl FnMut(BorrowedFd<'_>, &[u8]) -> io::Result<T>,
    fill: impl FnOnce(T) -> io::Result<()>,
) -> io::Result<CopiedUp>
where
    P: AsRef<[u8]>,
{
    let (parent, name) = super::split(path)?;
    check_name(name)?;
    let d = upper.open_dir(parent)?;
    if let Some(done) = existing(d.as_fd(), name, kind)? {
        return Ok(done);
    }
    let (tmp, t) = Temp::create(upper, make)?;
    fill(t)?;
    let fd = tmp.open_path()?;
    set_meta(upper, fd.as_fd(), kind, meta)?;
    let st = sys::fstat(fd.as_fd())?;
    match tmp.place_new(d.as_fd(), name) {
        Ok(()) => {
            log::debug!(target: "unionfs::upper", "copied up {:?}", String::from_utf8_lossy(name));
            Ok(CopiedUp::Created(st))
        }
        // Lost the race: the winner's copy stands (ours was dropped with `tmp`).
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            existing(d.as_fd(), name, kind)?.ok_or(e)
        }
        Err(e) => Err(e),
    }
}

/// `Some(Existed)` if `d/name` is already an object of type `kind`, `None` if
/// the name is free, `EEXIST` if it holds something else (a whiteout, another
/// type: the caller's view of the upper is wrong).
fn existing(d: BorrowedFd<'_>, name: &[u8], kind: u32) -> io::Result<Option<CopiedUp>> {
    match sys::statat(d, name) {
        Ok(st) if !is_whiteout(&st) && st.st_mode & libc::S_IFMT == kind => {
            Ok(Some(CopiedUp::Existed))
        }
        Ok(_) => Err(eno(libc::EEXIST)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Owner, mode, xattrs, then times (each later step may change what an earlier
/// one set: chown clears set-user-ID bits, setxattr on some filesystems bumps
/// ctime only, but data writes and chmod never touch the times set last).
fn set_meta(upper: &Upper, fd: BorrowedFd<'_>, kind: u32, meta: &Meta) -> io::Result<()> {
    if upper.is_rootless() {
        let l = Logical {
            uid: Some(meta.uid),
            gid: Some(meta.gid),
            perm: Some(meta.mode),
            kind_rdev: meta.placeholder,
        };
        upper.set_logical(fd, l)?;
    } else {
        upper.chown_result(sys::fchown_empty(fd, meta.uid, meta.gid))?;
        if kind != libc::S_IFLNK {
            sys::path_chmod(fd, meta.mode & 0o7777)?;
        }
    }
    for (k, v) in &meta.xattrs {
        copy_xattr(fd, kind, k, v)?;
    }
    if let Some((k, v)) = &meta.private {
        sys::path_setxattr(fd, k, v, 0)?;
    }
    let ts = |(s, ns): (i64, u32)| libc::timespec {
        tv_sec: s,
        tv_nsec: i64::from(ns.min(999_999_999)),
    };
    sys::futimens(fd, Some(ts(meta.atime)), Some(ts(meta.mtime)))
}

/// Returns true if and only if failing to copy xattr `k` must fail the copy-up
/// (kernel `ovl_must_copy_xattr`: security labels and POSIX ACLs).
fn must_copy(k: &[u8]) -> bool {
    k.starts_with(b"security.")
        || k == b"system.posix_acl_access"
        || k == b"system.posix_acl_default"
}

fn copy_xattr(fd: BorrowedFd<'_>, kind: u32, k: &[u8], v: &[u8]) -> io::Result<()> {
    let user_ok = kind == libc::S_IFREG || kind == libc::S_IFDIR;
    if is_private_xattr(k) || (k.starts_with(b"user.") && !user_ok) {
        log::debug!(target: "unionfs::upper", "copy-up: not copying xattr {:?}", String::from_utf8_lossy(k));
        return Ok(());
    }
    match sys::path_setxattr(fd, k, v, 0) {
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) && !must_copy(k) => {
            log::debug!(target: "unionfs::upper", "copy-up: xattr {:?} not supported by the upper", String::from_utf8_lossy(k));
            Ok(())
        }
        r => r,
    }
}

/// Writes the file's data: everything, or only the sparse map's chunks; then
/// sets the size (the holes of a sparse file stay holes).
/// Writes `size` bytes read with `data` (only the chunks of `sparse_map`,
/// if given) into `f`, and sets its size.
pub(crate) fn copy_data<F>(
    f: &File,
    data: &F,
    size: u64,
    sparse_map: Option<&[(u64, u64)]>,
) -> io::Result<()>
where
    F: Fn(u64, &mut [u8]) -> io::Result<usize>,
{
    let mut buf = vec![0u8; usize::try_from(size).unwrap_or(usize::MAX).min(CHUNK)];
    match sparse_map {
        None => copy_range(f, data, 0, size, &mut buf)?,
        Some(map) => {
            for &(off, len) in map {
                let end = off.saturating_add(len).min(size);
                if off < end {
                    copy_range(f, data, off, end, &mut buf)?;
                }
            }
        }
    }
    sys::ftruncate(f.as_fd(), size)
}

fn copy_range<F>(f: &File, data: &F, mut off: u64, end: u64, buf: &mut [u8]) -> io::Result<()>
where
    F: Fn(u64, &mut [u8]) -> io::Result<usize>,
{
    while off < end {
        let want = usize::try_from(end - off)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = data(off, &mut buf[..want])?.min(want);
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("copy-up: the lower file ended at {off}, before its size {end}"),
            ));
        }
        f.write_all_at(&buf[..n], off)?;
        off += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::super::testutil::*;
    use super::super::WhiteoutFormat;
    use super::*;

    fn meta(mode: u32, uid: u32) -> Meta {
        Meta {
            mode,
            uid,
            gid: uid + 1,
            atime: (1_500_000_000, 123),
            mtime: (1_600_000_000, 456_789),
            xattrs: vec![
                (b"user.a".to_vec(), b"1".to_vec()),
                (b"trusted.b".to_vec(), b"2".to_vec()),
                (b"trusted.overlay.opaque".to_vec(), b"y".to_vec()),
                (b"user.unionfs.x".to_vec(), b"z".to_vec()),
            ],
            placeholder: None,
            private: None,
        }
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    /// A data callback over a byte vector, like `TarLayer::read`.
    fn reader(data: &[u8]) -> impl Fn(u64, &mut [u8]) -> io::Result<usize> + '_ {
        move |off, buf| {
            let rest = data.get(off as usize..).unwrap_or_default();
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            Ok(n)
        }
    }

    fn check_meta(path: &std::path::Path, m: &Meta, xattrs: bool) {
        let st = lstat(path);
        if st.file_type().is_symlink() {
            assert_eq!((st.uid(), st.gid()), (m.uid, m.gid));
        } else {
            assert_eq!(
                (st.mode() & 0o7777, st.uid(), st.gid()),
                (m.mode, m.uid, m.gid)
            );
        }
        assert_eq!((st.mtime(), st.mtime_nsec() as u32), m.mtime);
        assert_eq!((st.atime(), st.atime_nsec() as u32), m.atime);
        if xattrs {
            assert_eq!(xattr(path, b"user.a").unwrap(), b"1");
        }
        assert_eq!(xattr(path, b"trusted.b").unwrap(), b"2");
        assert_eq!(
            xattr(path, b"trusted.overlay.opaque"),
            None,
            "private xattrs are never copied"
        );
        assert_eq!(xattr(path, b"user.unionfs.x"), None);
    }

    #[test]
    fn file_copy_up_preserves_data_and_metadata() {
        let f = Fixture::new(WhiteoutFormat::Oci);
        std::fs::create_dir(f.up("etc")).unwrap();
        let data = pattern(3 * CHUNK + 17);
        let m = meta(0o4755, 1000);
        let r = copy_up_file(
            &f.upper,
            &p("etc/passwd"),
            &m,
            reader(&data),
            data.len() as u64,
            None,
        )
        .unwrap();
        let CopiedUp::Created(st) = r else {
            panic!("{r:?}")
        };
        check_meta(&f.up("etc/passwd"), &m, true); // before a read moves the atime
        assert_eq!(std::fs::read(f.up("etc/passwd")).unwrap(), data);
        assert_eq!(st.st_ino, lstat(&f.up("etc/passwd")).ino());
        assert!(f.work_names().is_empty());
        let again = copy_up_file(&f.upper, &p("etc/passwd"), &m, reader(b""), 0, None).unwrap();
        assert!(matches!(again, CopiedUp::Existed));
        assert_eq!(
            std::fs::read(f.up("etc/passwd")).unwrap(),
            data,
            "untouched"
        );
        let empty = copy_up_file(&f.upper, &p("etc/empty"), &m, reader(b""), 0, None).unwrap();
        assert!(matches!(empty, CopiedUp::Created(_)));
        assert_eq!(lstat(&f.up("etc/empty")).len(), 0);
    }

    #[test]
    fn sparse_copy_up_keeps_holes() {
        let f = Fixture::new(WhiteoutFormat::Oci);
        let size: u64 = 16 << 20;
        let map = [
            (0, 4096),
            (8 << 20, 8192),
            (size - 100, 100),
            (size + 5, 10),
        ];
        let logical = |off: u64| -> u8 {
            let in_chunk = map.iter().any(|&(o, l)| off >= o && off < o + l);
            if in_chunk {
                (off % 251) as u8 + 1
            } else {
                0
            }
        };
        let data = |off: u64, buf: &mut [u8]| -> io::Result<usize> {
            let n = buf.len().min((size - off) as usize);
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = logical(off + i as u64);
            }
            Ok(n)
        };
        let reads = AtomicUsize::new(0);
        let counted = |off: u64, buf: &mut [u8]| {
            reads.fetch_add(buf.len(), Ordering::Relaxed);
            data(off, buf)
        };
        copy_up_file(
            &f.upper,
            &p("sparse"),
            &meta(0o644, 0),
            counted,
            size,
            Some(&map),
        )
        .unwrap();
        assert_eq!(
            reads.load(Ordering::Relaxed),
            4096 + 8192 + 100,
            "only the chunks are read"
        );
        let st = lstat(&f.up("sparse"));
        assert_eq!(st.len(), size);
        assert!(
            st.blocks() * 512 < 1 << 20,
            "holes stay holes: {} blocks",
            st.blocks()
        );
        let got = std::fs::read(f.up("sparse")).unwrap();
        let bad = (0..size).find(|&o| got[o as usize] != logical(o));
        assert_eq!(bad, None);
    }

    #[test]
    fn concurrent_copy_ups_make_exactly_one_file() {
        let f = Fixture::new(WhiteoutFormat::Oci);
        let data = pattern(2 * CHUNK);
        let m = meta(0o644, 0);
        let created = AtomicUsize::new(0);
        let start = std::sync::Barrier::new(8);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    start.wait();
                    let r = copy_up_file(
                        &f.upper,
                        &p("f"),
                        &m,
                        reader(&data),
                        data.len() as u64,
                        None,
                    );
                    if let CopiedUp::Created(_) = r.unwrap() {
                        created.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(created.load(Ordering::Relaxed), 1);
        assert_eq!(ls(&f.up("")), ["f"]);
        assert_eq!(std::fs::read(f.up("f")).unwrap(), data);
        assert!(f.work_names().is_empty());
    }

    #[test]
    fn losing_the_race_at_the_rename_is_success() {
        let f = Fixture::new(WhiteoutFormat::Oci);
        let data = pattern(100);
        let winner = f.up("f");
        // Another copy-up completes while this one is copying data.
        let racing = |off: u64, buf: &mut [u8]| {
            if !winner.exists() {
                std::fs::write(&winner, b"winner").unwrap();
            }
            reader(&data)(off, buf)
        };
        let r = copy_up_file(&f.upper, &p("f"), &meta(0o644, 0), racing, 100, None).unwrap();
        assert!(matches!(r, CopiedUp::Existed));
        assert_eq!(std::fs::read(&winner).unwrap(), b"winner");
        assert!(f.work_names().is_empty(), "the loser's temp is removed");
    }

    #[test]
    fn a_failed_copy_up_leaves_nothing() {
        let f = Fixture::new(WhiteoutFormat::Oci);
        let data = pattern(3 * CHUNK);
        let failing = |off: u64, buf: &mut [u8]| {
            if off >= CHUNK as u64 {
                return Err(io::Error::other("lower read failed"));
            }
            reader(&data)(off, buf)
        };
        let e = copy_up_file(
            &f.upper,
            &p("f"),
            &meta(0o644, 0),
            failing,
            data.len() as u64,
            None,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "lower read failed");
        let short = copy_up_file(
            &f.upper,
            &p("f"),
            &meta(0o644, 0),
            reader(&data[..10]),
            20,
            None,
        )
        .unwrap_err();
        assert_eq!(short.kind(), io::ErrorKind::UnexpectedEof);
        let e = copy_up_file(
            &f.upper,
            &p("missing/f"),
            &meta(0o644, 0),
            reader(b""),
            0,
            None,
        )
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        assert!(ls(&f.up("")).is_empty());
        assert!(f.work_names().is_empty());
    }

    #[test]
    fn a_full_disk_leaves_the_upper_unchanged() {
        let t = Tmpfs::mount("1m");
        std::fs::create_dir(t.path.join("u")).unwrap();
        let w = t.path.join("w");
        let upper = Upper::open(&t.path.join("u"), Some(&w), WhiteoutFormat::Oci).unwrap();
        let data = pattern(4 << 20);
        let r = copy_up_file(
            &upper,
            &p("big"),
            &meta(0o644, 0),
            reader(&data),
            data.len() as u64,
            None,
        );
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ENOSPC));
        assert!(ls(&t.path.join("u")).is_empty());
        assert!(ls(&w).is_empty(), "no temp file left");
        drop(upper);
    }

    #[test]
    fn dir_copy_up_is_idempotent() {
        let f = Fixture::new(WhiteoutFormat::Overlay);
        let m = meta(0o2750, 10);
        let r = copy_up_dir(&f.upper, &p("d"), &m).unwrap();
        assert!(matches!(r, CopiedUp::Created(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR));
        check_meta(&f.up("d"), &m, true);
        assert!(
            !f.upper.is_opaque(&p("d")).unwrap(),
            "a layer cannot plant an opaque marker"
        );
        assert!(matches!(
            copy_up_dir(&f.upper, &p("d"), &m).unwrap(),
            CopiedUp::Existed
        ));
        assert!(matches!(
            copy_up_dir(&f.upper, &p(""), &m).unwrap(),
            CopiedUp::Existed
        ));
        copy_up_dir(&f.upper, &p("d/e"), &meta(0o700, 0)).unwrap();
        assert_eq!(errno(copy_up_dir(&f.upper, &p("x/y"), &m)), libc::ENOENT);
        std::fs::write(f.up("file"), b"").unwrap();
        assert_eq!(errno(copy_up_dir(&f.upper, &p("file"), &m)), libc::EEXIST);
        f.upper.write_whiteout(&p(""), b"wh").unwrap();
        assert_eq!(errno(copy_up_dir(&f.upper, &p("wh"), &m)), libc::EEXIST);
        let data = [1u8];
        let r = copy_up_file(&f.upper, &p("wh"), &m, reader(&data), 1, None);
        assert_eq!(errno(r), libc::EEXIST, "never over a whiteout");
        assert_eq!(errno(copy_up_dir(&f.upper, &p(".wh.x"), &m)), libc::EINVAL);
        assert!(f.work_names().is_empty());
    }

    #[test]
    fn symlink_and_special_copy_up() {
        let f = Fixture::new(WhiteoutFormat::Oci);
        let m = meta(0o777, 5);
        copy_up_symlink(&f.upper, &p("l"), &m, b"../somewhere").unwrap();
        check_meta(&f.up("l"), &m, false); // before readlink moves the atime
        assert_eq!(
            std::fs::read_link(f.up("l")).unwrap(),
            std::path::Path::new("../somewhere")
        );
        assert_eq!(
            xattr(&f.up("l"), b"user.a"),
            None,
            "user.* cannot exist on a symlink"
        );
        let m = meta(0o640, 6);
        copy_up_special(&f.upper, &p("fifo"), &m, libc::S_IFIFO, 0).unwrap();
        assert_eq!(kind(&f.up("fifo")), libc::S_IFIFO);
        check_meta(&f.up("fifo"), &m, false);
        copy_up_special(
            &f.upper,
            &p("null"),
            &meta(0o666, 0),
            libc::S_IFCHR,
            libc::makedev(1, 3),
        )
        .unwrap();
        assert_eq!(lstat(&f.up("null")).rdev(), libc::makedev(1, 3));
        let e = copy_up_special(&f.upper, &p("wh"), &m, libc::S_IFCHR, 0);
        assert_eq!(errno(e), libc::EPERM);
        assert_eq!(
            errno(copy_up_special(&f.upper, &p("r"), &m, libc::S_IFREG, 0)),
            libc::EINVAL
        );
        assert!(f.work_names().is_empty());
    }
}
