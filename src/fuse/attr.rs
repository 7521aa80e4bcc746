//! Layer records → `fuser::FileAttr` / `FileType`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};

use crate::stack::{LayerRef, Stack};
use crate::tar::index::Meta;

/// The block size reported in `st_blksize`.
pub const BLKSIZE: u32 = 4096;

/// The FUSE file type of an `st_mode`.
pub fn file_type(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

/// The attributes of a negative entry: inode 0 tells the kernel "no such
/// name" and lets it cache that answer for the reply's TTL (a plain ENOENT is
/// asked again at every lookup: every PATH search, every missing config file).
pub fn negative() -> FileAttr {
    let t = UNIX_EPOCH;
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: BLKSIZE,
        flags: 0,
    }
}

/// A Unix time as `SystemTime` (negative times included).
pub fn system_time(secs: i64, nsec: u32) -> SystemTime {
    let nsec = nsec.min(999_999_999);
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            + Duration::from_nanos(u64::from(nsec))
    }
}

/// `makedev(major, minor)` as the kernel's `new_encode_dev` packs it for FUSE.
pub fn rdev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// Attributes of the object `r` (its inode record), shown as inode `ino`.
/// `dir_nlink` is the link count of a directory (see `inode::DirNode`).
pub fn of(stack: &Stack, r: LayerRef, ino: u64, dir_nlink: Option<u32>) -> FileAttr {
    let m: Meta = stack.meta(r);
    let idx = stack.index(r);
    let kind = file_type(m.mode);
    let (size, blocks, nlink) = match kind {
        FileType::Directory => (4096, 8, dir_nlink.unwrap_or(2)),
        FileType::RegularFile => (m.size, stack.stored_blocks(r), m.nlink.max(1)),
        _ => (m.size, 0, m.nlink.max(1)),
    };
    let dev = match kind {
        FileType::CharDevice | FileType::BlockDevice => {
            let (a, b) = idx.extra(idx.inode_of(r.entry)).rdev;
            rdev(a, b)
        }
        _ => 0,
    };
    let t = system_time(m.mtime, m.mtime_nsec);
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks,
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind,
        perm: (m.mode & 0o7777) as u16,
        nlink,
        uid: m.uid,
        gid: m.gid,
        rdev: dev,
        blksize: BLKSIZE,
        flags: 0,
    }
}
