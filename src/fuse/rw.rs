//! The FUSE adapter of a writable mount (`--upper`): decodes each request,
//! calls [`Overlay`], replies. No logic of its own.
//!
//! Caching: every change to the merged view is made through this mount (the
//! upper must not change behind it), so the kernel's own caches stay right:
//! it updates dentries and attributes from our replies, and names and
//! attributes carry long TTLs ([`RW_TTL`]). Where one operation changes what
//! another inode shows (a copy-up that makes a directory merged), the
//! overlay's invalidator tells the kernel (`notify_inval_inode`).
//!
//! Opening: by default nothing is opened. `OPEN`, `CREATE` and `OPENDIR`
//! are answered `ENOSYS`, so the kernel opens files and directories with no
//! message and no `RELEASE` (keeping page cache and listings across opens),
//! creates files with `MKNOD`, and names only the inode in `READ`/`WRITE`/
//! `READDIR` (`overlay::fileio`; listings resume at name-hash offsets). With
//! `-o passthrough` (root) files get an `OPEN` and a handle instead, so that
//! upper files can be handed to the kernel by FUSE passthrough.
//!
//! The virtual provenance xattrs (see [`super::ProvenanceXattrs`]) are answered
//! here, before the overlay's own xattrs (where `user.unionfs.*` is private):
//! `getxattr` from [`Overlay::provenance`], `setxattr`/`removexattr` refused
//! with `EPERM` before anything is copied up.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BackingId, Errno, FileAttr, FileHandle, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::attr::{file_type, system_time, BLKSIZE};
use super::passthrough::{Mode, Passthrough};
use super::requests::{Op, Requests, REQUESTS_XATTR};
use super::{is_provenance_xattr, ProvenanceXattrs, MAX_READ};
use crate::idmap::IdMap;
use crate::overlay::{Attr, Handle, Overlay};
use crate::upper::{SetAttr, Time};

/// How long the kernel may cache names and attributes on a writable mount.
pub const RW_TTL: Duration = Duration::from_secs(24 * 3600);

/// The writable union as fuser sees it.
#[derive(Debug)]
pub struct RwFs {
    ov: Overlay,
    ids: IdMap,
    /// Ask the kernel for FUSE passthrough of upper files.
    want_passthrough: bool,
    pt: Passthrough,
    /// The provenance xattrs' labels and listing.
    prov: ProvenanceXattrs,
    bufs: super::bufs::ReadBufs,
    /// The session's notifier, once mounted.
    notifier: Arc<OnceLock<fuser::Notifier>>,
    /// What the kernel has asked, per opcode.
    req: Requests,
    /// Files are served with no handle: `OPEN` and `CREATE` are answered
    /// `ENOSYS` (see `overlay::fileio`). Off only where FUSE passthrough is
    /// on, which needs an `OPEN` to give the kernel the upper file.
    no_open: bool,
}

impl RwFs {
    /// Serves `ov`, reporting owners through `ids`.
    pub fn new(ov: Overlay, ids: IdMap) -> RwFs {
        let prov = ProvenanceXattrs::of_paths(ov.stack());
        let notifier: Arc<OnceLock<fuser::Notifier>> = Arc::default();
        let n = notifier.clone();
        // The attributes of an inode changed by an operation on another one
        // (a directory a copy-up merged): the kernel drops what it cached.
        // Attributes only (offset < 0): no lock the kernel may hold for the
        // request being served is taken.
        ov.set_invalidator(Box::new(move |ino| {
            if let Some(n) = n.get() {
                if let Err(e) = n.inval_inode(INodeNo(ino), -1, 0) {
                    log::debug!(target: "unionfs::fuse", "inval_inode({ino}): {e}");
                }
            }
        }));
        RwFs {
            ov,
            ids,
            want_passthrough: false,
            pt: Passthrough::default(),
            prov,
            bufs: Default::default(),
            notifier,
            req: Requests::default(),
            no_open: true,
        }
    }

    /// Where the session's notifier goes once the session exists (the
    /// filesystem is built before it): set it right after mounting.
    pub fn notifier_slot(&self) -> Arc<OnceLock<fuser::Notifier>> {
        self.notifier.clone()
    }

    /// Answers the provenance xattrs with `prov` (default: the layers'
    /// paths as labels, names not listed).
    pub fn with_provenance(mut self, prov: ProvenanceXattrs) -> RwFs {
        self.prov = prov;
        self
    }

    /// Serves reads and writes of upper files by FUSE passthrough where the
    /// kernel offers it (the daemon must be root: see `fuse::passthrough`).
    pub fn with_passthrough(mut self, on: bool) -> RwFs {
        self.want_passthrough = on;
        self
    }

    /// Answers the open (or create) of handle `fh` on inode `ino` in the I/O
    /// mode `fuse::passthrough` chooses: `register` makes a backing id from
    /// the reply and the upper file, `answer` replies with the mode's flags
    /// and, for passthrough, the backing id.
    fn answer_open<R>(
        &self,
        ino: u64,
        fh: u64,
        reply: R,
        register: impl FnOnce(&R, &std::fs::File) -> io::Result<BackingId>,
        answer: impl FnOnce(R, FopenFlags, Option<&BackingId>),
    ) {
        let h = self.ov.handle(fh);
        let upper = match h.as_deref() {
            Some(Handle::Upper(_, f)) => Some(f),
            _ => None,
        };
        let answer = |r, mode: Mode, b: Option<&BackingId>| answer(r, mode.flags(), b);
        self.pt.open(ino, fh, upper, reply, register, answer)
    }

    /// `lstat` → `FileAttr`, owners mapped to host ids.
    fn attr(&self, a: &Attr) -> FileAttr {
        let mut f = file_attr(a);
        f.uid = self.ids.uid_out(f.uid);
        f.gid = self.ids.gid_out(f.gid);
        f
    }

    /// The caller's ids as container ids.
    fn ids_of(&self, req: &Request) -> (u32, u32) {
        (self.ids.uid_in(req.uid()), self.ids.gid_in(req.gid()))
    }

    /// Answers an entry request (`op` of `parent`/`n`), logging the answer
    /// at trace level: the number and type given are what the kernel keys
    /// its inodes by.
    fn entry(&self, op: &str, parent: u64, n: &OsStr, reply: ReplyEntry, r: io::Result<Attr>) {
        match r {
            Ok(a) => {
                log::trace!(target: "unionfs::fuse", "{op}({parent:#x}, {n:?}) -> {:#x} mode {:o}",
                    a.ino, a.st.st_mode);
                reply.entry(&RW_TTL, &self.attr(&a), Generation(0))
            }
            Err(e) => {
                log::trace!(target: "unionfs::fuse", "{op}({parent:#x}, {n:?}) -> {e}");
                reply.error(errno(e))
            }
        }
    }
}

/// Logs (debug) a failed change of the namespace: which, where, the errno
/// answered (request logs alone do not say what was answered).
fn noted<T>(op: &str, parent: u64, n: &OsStr, r: io::Result<T>) -> io::Result<T> {
    if let Err(e) = &r {
        log::debug!(target: "unionfs::fuse", "{op}({parent}, {n:?}): {e}");
    }
    r
}

fn errno(e: io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn name(n: &OsStr) -> &[u8] {
    n.as_bytes()
}

/// The kernel's `new_encode_dev` packing of a `dev_t`.
fn encode_dev(dev: u64) -> u32 {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// `lstat` → `FileAttr`.
fn file_attr(a: &Attr) -> FileAttr {
    let st = &a.st;
    let t = |s: i64, ns: i64| system_time(s, ns.clamp(0, 999_999_999) as u32);
    FileAttr {
        ino: INodeNo(a.ino),
        size: st.st_size.max(0) as u64,
        blocks: st.st_blocks.max(0) as u64,
        atime: t(st.st_atime, st.st_atime_nsec),
        mtime: t(st.st_mtime, st.st_mtime_nsec),
        ctime: t(st.st_ctime, st.st_ctime_nsec),
        crtime: t(st.st_ctime, st.st_ctime_nsec),
        kind: file_type(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink.min(u64::from(u32::MAX)) as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: encode_dev(st.st_rdev),
        blksize: if st.st_blksize > 0 {
            st.st_blksize as u32
        } else {
            BLKSIZE
        },
        flags: 0,
    }
}

fn time(t: TimeOrNow) -> Time {
    match t {
        TimeOrNow::Now => Time::Now,
        TimeOrNow::SpecificTime(st) => match st.duration_since(UNIX_EPOCH) {
            Ok(d) => Time::At(d.as_secs() as i64, d.subsec_nanos()),
            Err(e) => {
                let d = e.duration();
                let (mut s, mut ns) = (-(d.as_secs() as i64), d.subsec_nanos());
                if ns > 0 {
                    s -= 1;
                    ns = 1_000_000_000 - ns;
                }
                Time::At(s, ns)
            }
        },
    }
}

fn empty(reply: ReplyEmpty, r: io::Result<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

fn xattr_reply(reply: ReplyXattr, size: u32, r: io::Result<Vec<u8>>) {
    match r {
        Err(e) => reply.error(errno(e)),
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if (size as usize) < v.len() => reply.error(Errno::ERANGE),
        Ok(v) => reply.data(&v),
    }
}

impl Filesystem for RwFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        if self.want_passthrough {
            // Depth 1: the upper may not itself be a stacked filesystem (its
            // registration then fails and passthrough switches off), and this
            // mount may still be a lower layer of an overlayfs.
            let ok = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            self.pt.set_enabled(ok);
            log::info!(target: "unionfs::fuse", "FUSE passthrough for upper files: {}",
                if ok { "on" } else { "not offered by the kernel" });
        }
        self.no_open = !self.pt.enabled();
        let mut caps = vec![
            InitFlags::FUSE_DO_READDIRPLUS,
            // A symlink's target never changes (a new one is a new inode).
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_ASYNC_READ,
            InitFlags::FUSE_BIG_WRITES,
        ];
        // With no OPEN, an O_TRUNC would be lost if the kernel thought the
        // open had truncated: without ATOMIC_O_TRUNC it sends a SETATTR.
        if !self.no_open {
            caps.push(InitFlags::FUSE_ATOMIC_O_TRUNC);
        }
        super::negotiate(config, &caps);
        log::info!(target: "unionfs::fuse", "mounted {} layers with upper {}",
            self.ov.stack().layers().len(), self.ov.upper().path().display());
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEntry) {
        self.req.count(Op::Lookup);
        match self.ov.lookup(parent.0, name(n)) {
            // A negative entry: the kernel remembers the absence for the TTL.
            // Safe on a writable mount: a name can only appear through this
            // mount, and the kernel then replaces its negative dentry itself.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                reply.entry(&RW_TTL, &super::attr::negative(), Generation(0))
            }
            r => self.entry("lookup", parent.0, n, reply, r),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.req.count(Op::Forget);
        log::trace!(target: "unionfs::fuse", "forget({:#x}, {nlookup})", ino.0);
        self.ov.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.req.count(Op::Getattr);
        match self.ov.getattr(ino.0) {
            Ok(a) => {
                log::trace!(target: "unionfs::fuse", "getattr({:#x}) -> mode {:o}", ino.0, a.st.st_mode);
                reply.attr(&RW_TTL, &self.attr(&a))
            }
            Err(e) => {
                log::trace!(target: "unionfs::fuse", "getattr({:#x}) -> {e}", ino.0);
                reply.error(errno(e))
            }
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.req.count(Op::Setattr);
        let a = SetAttr {
            mode,
            uid: uid.map(|u| self.ids.uid_in(u)),
            gid: gid.map(|g| self.ids.gid_in(g)),
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
        };
        match self.ov.setattr(ino.0, fh.map(|f| f.0), &a) {
            Ok(a) => {
                log::trace!(target: "unionfs::fuse", "setattr({:#x}) -> mode {:o}", ino.0, a.st.st_mode);
                reply.attr(&RW_TTL, &self.attr(&a))
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.req.count(Op::Readlink);
        match self.ov.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        n: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.req.count(Op::Mknod);
        let ids = self.ids_of(req);
        let r = self.ov.mknod(parent.0, name(n), mode, rdev, ids);
        self.entry("mknod", parent.0, n, reply, noted("mknod", parent.0, n, r))
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        n: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.req.count(Op::Mkdir);
        let ids = self.ids_of(req);
        let r = self.ov.mkdir(parent.0, name(n), mode, ids);
        self.entry("mkdir", parent.0, n, reply, noted("mkdir", parent.0, n, r))
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        self.req.count(Op::Unlink);
        let r = self.ov.remove(parent.0, name(n), false);
        log::trace!(target: "unionfs::fuse", "unlink({:#x}, {n:?}) -> {:?}", parent.0, r.as_ref().err());
        empty(reply, noted("unlink", parent.0, n, r))
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        self.req.count(Op::Rmdir);
        let r = self.ov.remove(parent.0, name(n), true);
        log::trace!(target: "unionfs::fuse", "rmdir({:#x}, {n:?}) -> {:?}", parent.0, r.as_ref().err());
        empty(reply, noted("rmdir", parent.0, n, r))
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        n: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        self.req.count(Op::Symlink);
        let ids = self.ids_of(req);
        let t = target.as_os_str().as_bytes();
        let r = self.ov.symlink(parent.0, name(n), t, ids);
        self.entry(
            "symlink",
            parent.0,
            n,
            reply,
            noted("symlink", parent.0, n, r),
        )
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        n: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.req.count(Op::Rename);
        let r = self
            .ov
            .rename(parent.0, name(n), newparent.0, name(newname), flags.bits());
        log::trace!(target: "unionfs::fuse", "rename({:#x}, {n:?}, {:#x}, {newname:?}, {:#x}) -> {:?}",
            parent.0, newparent.0, flags.bits(), r.as_ref().err());
        empty(reply, noted("rename", parent.0, n, r))
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.req.count(Op::Link);
        let r = self.ov.link(ino.0, newparent.0, name(newname));
        self.entry(
            "link",
            newparent.0,
            newname,
            reply,
            noted("link", newparent.0, newname, r),
        )
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.req.count(Op::Open);
        if self.no_open {
            // Zero-message open from now on (no RELEASE either): the kernel
            // keeps the page cache (FOPEN_KEEP_CACHE) and I/O names the inode.
            return reply.error(Errno::ENOSYS);
        }
        let fh = match self.ov.open(ino.0, flags.0) {
            Ok(fh) => fh,
            Err(e) => return reply.error(errno(e)),
        };
        let handle = FileHandle(fh);
        self.answer_open(
            ino.0,
            fh,
            reply,
            |r, f| r.open_backing(f),
            |r, flags, backing| match backing {
                Some(b) => r.opened_passthrough(handle, flags, b),
                None => r.opened(handle, flags),
            },
        )
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.req.count(Op::Read);
        self.bufs.with(size.min(MAX_READ) as usize, |buf| {
            let r = match fh.0 {
                0 => self.ov.read_ino(ino.0, offset, buf),
                fh => self.ov.read(fh, offset, buf),
            };
            match r {
                Ok(n) => reply.data(&buf[..n]),
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.req.count(Op::Write);
        let r = match fh.0 {
            0 => self.ov.write_ino(ino.0, offset, data),
            fh => self.ov.write(fh, offset, data),
        };
        match r {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.req.count(Op::Flush);
        // Writes reach the upper synchronously (no write-back in the daemon), so
        // a close has nothing to flush or report. ENOSYS makes the kernel stop
        // sending FLUSH: one round trip less per close (5 -> 4 for a create).
        reply.error(Errno::ENOSYS)
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.req.count(Op::Release);
        self.pt.release(fh.0);
        self.ov.release(fh.0);
        reply.ok()
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.req.count(Op::Fsync);
        let r = match fh.0 {
            0 => self.ov.fsync_ino(ino.0, datasync),
            fh => self.ov.fsync(fh, datasync),
        };
        empty(reply, r)
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        self.req.count(Op::Ioctl);
        super::refuse_ioctl(reply)
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.req.count(Op::Opendir);
        // Zero-message opendir from now on (no RELEASEDIR either), with the
        // kernel's listing cache on (FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE):
        // every change goes through this mount, and the kernel drops the
        // cached listing of a directory it changed. READDIR then names the
        // directory alone, and offsets are name hashes (`ListEntry::cookie`).
        reply.error(Errno::ENOSYS)
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.req.count(Op::Readdir);
        let list = match self.ov.dir_entries(ino.0, offset == 0) {
            Ok(l) => l,
            Err(e) => return reply.error(errno(e)),
        };
        // Offsets: 1 = ".", 2 = "..", then each entry's cookie.
        let mut off = offset;
        while off < 2 {
            let (n, i) = if off == 0 {
                (".", ino.0)
            } else {
                ("..", self.ov.parent_of(ino.0))
            };
            if reply.add(INodeNo(i), off + 1, fuser::FileType::Directory, n) {
                return reply.ok();
            }
            off += 1;
        }
        let start = list.partition_point(|e| e.cookie <= off);
        if start == list.len() {
            self.ov.drop_entries(ino.0);
        }
        for e in &list[start..] {
            // d_ino is advisory; the real number comes with the lookup.
            if reply.add(
                INodeNo(e.cookie),
                e.cookie,
                file_type(e.kind),
                OsStr::from_bytes(&e.name),
            ) {
                break;
            }
        }
        reply.ok()
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.req.count(Op::Readdirplus);
        let list = match self.ov.dir_entries(ino.0, offset == 0) {
            Ok(l) => l,
            Err(e) => return reply.error(errno(e)),
        };
        let mut off = offset;
        while off < 2 {
            let i = if off == 0 {
                ino.0
            } else {
                self.ov.parent_of(ino.0)
            };
            let n = if off == 0 { "." } else { ".." };
            let a = match self.ov.getattr(i) {
                Ok(a) => a,
                Err(e) => return reply.error(errno(e)),
            };
            // The kernel takes no lookup reference for "." and "..".
            if reply.add(
                INodeNo(i),
                off + 1,
                n,
                &Duration::ZERO,
                &self.attr(&a),
                Generation(0),
            ) {
                return reply.ok();
            }
            off += 1;
        }
        let start = list.partition_point(|e| e.cookie <= off);
        if start == list.len() {
            self.ov.drop_entries(ino.0);
        }
        for e in &list[start..] {
            // A full lookup: the kernel counts a reference for each entry added.
            let a = match self.ov.lookup(ino.0, &e.name) {
                Ok(a) => a,
                Err(_) => continue, // removed since the listing was taken
            };
            log::trace!(target: "unionfs::fuse", "readdirplus({:#x}) {:?} -> {:#x} mode {:o}",
                ino.0, OsStr::from_bytes(&e.name), a.ino, a.st.st_mode);
            let full = reply.add(
                INodeNo(a.ino),
                e.cookie,
                OsStr::from_bytes(&e.name),
                &RW_TTL,
                &self.attr(&a),
                Generation(0),
            );
            if full {
                // Not added: give the reference back.
                self.ov.forget(a.ino, 1);
                break;
            }
        }
        reply.ok()
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.req.count(Op::Releasedir);
        self.pt.release(fh.0);
        self.ov.release(fh.0);
        reply.ok()
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.req.count(Op::Fsyncdir);
        reply.ok()
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.req.count(Op::Statfs);
        match self.ov.statfs() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                255,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        n: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.req.count(Op::Setxattr);
        if is_provenance_xattr(name(n)) {
            return reply.error(Errno::EPERM);
        }
        empty(reply, self.ov.setxattr(ino.0, name(n), value, flags))
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, n: &OsStr, size: u32, reply: ReplyXattr) {
        self.req.count(Op::Getxattr);
        log::trace!(target: "unionfs::fuse", "getxattr({}, {n:?})", ino.0);
        let r = if name(n) == REQUESTS_XATTR {
            Ok(self.req.text())
        } else if is_provenance_xattr(name(n)) {
            self.ov
                .provenance(ino.0)
                .map(|p| self.prov.value(name(n), &p))
        } else {
            self.ov.getxattr(ino.0, name(n))
        };
        xattr_reply(reply, size, r)
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.req.count(Op::Listxattr);
        let r = self.ov.listxattr(ino.0).and_then(|mut names| {
            if self.prov.is_listed() {
                let kind = self.ov.getattr(ino.0)?.st.st_mode & libc::S_IFMT;
                self.prov.list_into(kind, &mut names);
            }
            Ok(names)
        });
        xattr_reply(reply, size, r)
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        self.req.count(Op::Removexattr);
        if is_provenance_xattr(name(n)) {
            return reply.error(Errno::EPERM);
        }
        empty(reply, self.ov.removexattr(ino.0, name(n)))
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        self.req.count(Op::Access);
        // Only sent without default_permissions; unionfs then grants what the
        // kernel asks (the upper's own checks apply to what we do as root).
        reply.ok()
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        n: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.req.count(Op::Create);
        if self.no_open {
            // The kernel makes the file with MKNOD and opens it with no
            // message: one round trip instead of CREATE + RELEASE.
            return reply.error(Errno::ENOSYS);
        }
        let ids = self.ids_of(req);
        let (a, fh) = match self.ov.create(parent.0, name(n), mode, flags, ids) {
            Ok(r) => r,
            Err(e) => return reply.error(errno(e)),
        };
        log::trace!(target: "unionfs::fuse", "create({:#x}, {n:?}) -> {:#x} mode {:o}",
            parent.0, a.ino, a.st.st_mode);
        let attr = self.attr(&a);
        let (ttl, g, handle) = (&RW_TTL, Generation(0), FileHandle(fh));
        self.answer_open(
            a.ino,
            fh,
            reply,
            |r, f| r.open_backing(f),
            |r, flags, backing| match backing {
                Some(b) => r.created_passthrough(ttl, &attr, g, handle, flags, b),
                None => r.created(ttl, &attr, g, handle, flags),
            },
        )
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.req.count(Op::Fallocate);
        let r = match fh.0 {
            0 => self.ov.fallocate_ino(ino.0, mode, offset, length),
            fh => self.ov.fallocate(fh, mode, offset, length),
        };
        empty(reply, r)
    }
}
