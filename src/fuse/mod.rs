//! The FUSE adapter: decodes each request, asks `stack`/`inode`, replies.
//!
//! Owns nothing but translation: inode numbers come from `inode`, merge rules from
//! `stack`, file data from `tar`. Layers never change while mounted, so replies
//! carry long TTLs and files open with `FOPEN_KEEP_CACHE`: the kernel keeps
//! names, attributes and pages cached and most repeated accesses never reach us.
//!
//! Concurrency: fuser calls these `&self` methods from several threads. The only
//! shared mutable state is the directory cache (`inode::Inodes`, a read-mostly
//! lock) and the open-directory table (`handles`); file reads are `pread`s on the
//! tar with no lock held.
//!
//! Provenance xattrs ([`ProvenanceXattrs`], shared with `rw`): `user.unionfs.layer`
//! and `user.unionfs.shadows` say which layer an object comes from and which
//! layers' entries it hides. They are virtual: answered by `getxattr`, never
//! stored, and listed by `listxattr` only on a mount made with `-o provenance`
//! (then for every regular file and directory), so that `cp -a` and `tar
//! --xattrs` do not copy them.

pub mod attr;
pub mod bufs;
pub mod passthrough;
pub mod requests;
pub mod rw;

use requests::{Op, Requests, REQUESTS_XATTR};

use std::ffi::OsStr;
use std::num::NonZeroUsize;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::Duration;

use lru::LruCache;
use parking_lot::Mutex;

use fuser::{
    AccessFlags, Errno, FileHandle, Filesystem, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};

use crate::idmap::IdMap;
use crate::inode::{self, DirNode, Inodes, ROOT};
use crate::stack::{DirEntry, LayerRef, Merged, Provenance, Stack};

/// How long the kernel may cache names and attributes of layer content.
/// Layers are immutable for the life of the mount, so this is long.
pub const LAYER_TTL: Duration = Duration::from_secs(24 * 3600);

/// Largest read the kernel may send (and readahead we ask for).
pub const MAX_READ: u32 = 1 << 20;

/// How many merged directory listings are kept (LRU) between readdir calls.
const LISTINGS: usize = 256;

/// The virtual xattr naming the layer an object comes from: `N LABEL` (`N`
/// its position, 0 = bottom; `LABEL` its diffID, or a loose tar's path), or
/// `upper` for an object of a writable mount's upper.
pub const LAYER_XATTR: &[u8] = b"user.unionfs.layer";

/// The virtual xattr listing the layers whose entries at an object's path the
/// view hides: positions, top first, comma-separated (`2,0`); empty if none.
pub const SHADOWS_XATTR: &[u8] = b"user.unionfs.shadows";

/// Returns true if and only if `name` is one of the virtual provenance xattrs.
pub fn is_provenance_xattr(name: &[u8]) -> bool {
    name == LAYER_XATTR || name == SHADOWS_XATTR
}

/// How a mount puts [`Provenance`] in words: the layers' labels, and whether
/// `listxattr` lists the two names (`-o provenance`). Never stored anywhere:
/// `getxattr` answers them from the stack, `setxattr`/`removexattr` refuse
/// them (`EPERM` on a writable mount; a read-only one is `EROFS` already).
#[derive(Clone, Debug, Default)]
pub struct ProvenanceXattrs {
    /// Each layer's label, bottom first (`crate::layers::labels`).
    labels: Vec<String>,
    /// List the names in `listxattr`.
    listed: bool,
}

impl ProvenanceXattrs {
    /// Labels the layers (bottom first) with `labels`; lists the names in
    /// `listxattr` if and only if `listed`.
    pub fn new(labels: Vec<String>, listed: bool) -> ProvenanceXattrs {
        ProvenanceXattrs { labels, listed }
    }

    /// The labels of `stack`'s layers as loose tars (their paths), unlisted:
    /// what a filesystem built without [`ProvenanceXattrs::new`] says.
    fn of_paths(stack: &Stack) -> ProvenanceXattrs {
        ProvenanceXattrs::new(crate::layers::labels(stack, None), false)
    }

    /// The value of the virtual xattr `name` (one of [`is_provenance_xattr`]'s) for `p`.
    pub fn value(&self, name: &[u8], p: &Provenance) -> Vec<u8> {
        if name == LAYER_XATTR {
            return match p.layer {
                None => b"upper".to_vec(),
                Some(l) => match self.labels.get(usize::from(l.0)) {
                    Some(label) => format!("{} {label}", l.0).into_bytes(),
                    None => l.0.to_string().into_bytes(),
                },
            };
        }
        let ids: Vec<String> = p.shadows.iter().map(|l| l.0.to_string()).collect();
        ids.join(",").into_bytes()
    }

    /// Returns true if and only if the mount lists the names (`-o provenance`).
    pub fn is_listed(&self) -> bool {
        self.listed
    }

    /// Appends the names, each NUL-terminated, to the `listxattr` list of an
    /// object of type `kind` (`S_IFMT` bits), if the mount lists them and the
    /// object is a regular file or a directory: the kernel answers `ENODATA`
    /// for a `user.*` xattr of anything else without asking us (VFS
    /// `xattr_permission`), and a name listed but unreadable makes
    /// `getfattr -d` complain and `cp -a` try in vain.
    pub fn list_into(&self, kind: u32, names: &mut Vec<u8>) {
        if self.listed && (kind == libc::S_IFREG || kind == libc::S_IFDIR) {
            for n in [LAYER_XATTR, SHADOWS_XATTR] {
                names.extend_from_slice(n);
                names.push(0);
            }
        }
    }
}

/// The union filesystem as fuser sees it.
pub struct UnionFs {
    stack: Arc<Stack>,
    inodes: Inodes,
    /// Recently read merged listings by directory inode. A listing of a read-only
    /// union never changes, so offsets index into it for as long as it exists,
    /// and rebuilding an evicted one gives the same listing again.
    listings: Mutex<LruCache<u64, Arc<[DirEntry]>>>,
    /// How owners are reported (`--uidmap`, squash options).
    ids: IdMap,
    /// The provenance xattrs' labels and listing.
    prov: ProvenanceXattrs,
    bufs: bufs::ReadBufs,
    /// What the kernel has asked, per opcode.
    req: Requests,
}

impl std::fmt::Debug for UnionFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnionFs")
            .field("layers", &self.stack.layers().len())
            .field("cached_dirs", &self.inodes.cached_dirs())
            .finish()
    }
}

/// What an inode number refers to.
enum Node {
    Dir(Arc<DirNode>),
    Other(LayerRef),
}

impl UnionFs {
    /// A read-only union of `stack`.
    pub fn new(stack: Arc<Stack>) -> UnionFs {
        let inodes = Inodes::new(&stack);
        let prov = ProvenanceXattrs::of_paths(&stack);
        UnionFs {
            stack,
            inodes,
            listings: Mutex::new(LruCache::new(
                NonZeroUsize::new(LISTINGS).expect("non-zero"),
            )),
            ids: IdMap::default(),
            prov,
            bufs: Default::default(),
            req: Requests::default(),
        }
    }

    /// Answers the provenance xattrs with `prov` (default: the layers'
    /// paths as labels, names not listed).
    pub fn with_provenance(mut self, prov: ProvenanceXattrs) -> UnionFs {
        self.prov = prov;
        self
    }

    /// Reports owners through `ids`.
    pub fn with_idmap(mut self, ids: IdMap) -> UnionFs {
        self.ids = ids;
        self
    }

    /// Owners of `a` mapped to host ids.
    fn mapped(&self, mut a: fuser::FileAttr) -> fuser::FileAttr {
        a.uid = self.ids.uid_out(a.uid);
        a.gid = self.ids.gid_out(a.gid);
        a
    }

    /// Resolves an inode number the kernel sent us.
    fn node(&self, ino: INodeNo) -> Result<Node, Errno> {
        let ino = ino.0;
        if let Some(d) = self.inodes.dir(ino) {
            return Ok(Node::Dir(d));
        }
        let r = inode::decode(&self.stack, ino).ok_or(Errno::ESTALE)?;
        if self.stack.rec(r).is_dir() {
            // A directory the cache does not hold (never expected: the kernel only
            // uses numbers it got from lookup). Rebuild its merge stack by path.
            let path = self.stack.index(r).path_of(r.entry);
            let m = self.stack.resolve(&path).ok_or(Errno::ESTALE)?;
            if m.top != r {
                return Err(Errno::ESTALE);
            }
            let parent_path = match path.iter().rposition(|&b| b == b'/') {
                Some(i) => &path[..i],
                None => &[][..],
            };
            let parent = self
                .stack
                .resolve(parent_path)
                .map_or(ROOT, |pm| inode::ino_of(&self.stack, pm.top));
            return Ok(Node::Dir(self.inodes.remember_dir(
                &self.stack,
                ino,
                parent,
                m,
            )));
        }
        Ok(Node::Other(r))
    }

    fn dir(&self, ino: INodeNo) -> Result<Arc<DirNode>, Errno> {
        match self.node(ino)? {
            Node::Dir(d) => Ok(d),
            Node::Other(_) => Err(Errno::ENOTDIR),
        }
    }

    /// Where inode `ino` comes from. A non-directory is asked at the path of
    /// the entry its number derives from (for a hard link: its target's).
    fn provenance(&self, ino: INodeNo) -> Result<Provenance, Errno> {
        let m = match self.node(ino)? {
            Node::Dir(d) => d.merged.clone(),
            Node::Other(r) => Merged {
                top: r,
                dirs: Vec::new(),
            },
        };
        let path = self.stack.index(m.top).path_of(m.top.entry);
        Ok(self.stack.provenance(&m, &path))
    }

    fn attr_of(&self, ino: INodeNo) -> Result<fuser::FileAttr, Errno> {
        Ok(self.mapped(match self.node(ino)? {
            Node::Dir(d) => attr::of(&self.stack, d.merged.top, ino.0, Some(d.nlink)),
            Node::Other(r) => attr::of(&self.stack, r, ino.0, None),
        }))
    }

    /// Looks `name` up in `parent`; returns the child's inode number and attributes.
    fn lookup_child(
        &self,
        parent_ino: u64,
        parent: &DirNode,
        name: &[u8],
    ) -> Option<(u64, fuser::FileAttr)> {
        let m = self.stack.lookup(&parent.merged, name)?;
        Some(self.entry_of(parent_ino, m))
    }

    fn entry_of(&self, parent_ino: u64, m: Merged) -> (u64, fuser::FileAttr) {
        let ino = inode::ino_of(&self.stack, m.top);
        let top = m.top;
        let nlink = if m.is_dir() {
            Some(
                self.inodes
                    .remember_dir(&self.stack, ino, parent_ino, m)
                    .nlink,
            )
        } else {
            None
        };
        (ino, self.mapped(attr::of(&self.stack, top, ino, nlink)))
    }

    /// A READDIR(PLUS) of `ino` from `off` past the end of `list`: the
    /// reader is done (the kernel asks until a reply is empty), so the
    /// listing goes from the cache. A later reader rebuilds the same one
    /// (a read-only union never changes); the kernel keeps its own copy
    /// (`FOPEN_CACHE_DIR`). Without this, the last 256 listings a walk read
    /// stayed: 8 bytes an entry, ~2 MB after a `find` of the 300k stack.
    fn listing_done(&self, ino: u64, off: u64, list: &[DirEntry]) {
        if off >= list.len() as u64 + 2 {
            self.listings.lock().pop(&ino);
        }
    }

    /// The merged listing of directory `ino` (cached).
    fn listing(&self, ino: u64, dir: &DirNode) -> Arc<[DirEntry]> {
        if let Some(l) = self.listings.lock().get(&ino) {
            return l.clone();
        }
        // Built without the lock held: two threads may both build it; same result.
        let list: Arc<[DirEntry]> = self.stack.read_dir(&dir.merged).into();
        self.listings.lock().put(ino, list.clone());
        list
    }
}

/// Asks the kernel for `caps` (those it lacks are logged) and for 1 MiB
/// requests. The kernel offers its default readahead (128 KiB) and a
/// filesystem may only lower it; a larger max_write raises max_pages, so that
/// once the bdi's read_ahead_kb is raised (mount.rs does, as root) reads
/// arrive in 1 MiB requests instead of 128 KiB ones.
pub(crate) fn negotiate(config: &mut KernelConfig, caps: &[InitFlags]) {
    for &cap in caps {
        if config.add_capabilities(cap).is_err() {
            log::debug!(target: "unionfs::fuse", "kernel lacks {cap:?}");
        }
    }
    if let Err(nearest) = config.set_max_readahead(MAX_READ) {
        let _ = config.set_max_readahead(nearest);
    }
    let _ = config.set_max_write(MAX_READ);
}

/// Both adapters serve no ioctl (isatty's TCGETS on every file Python opens,
/// lsattr's FS_IOC_GETFLAGS...): ENOTTY, which is also what the kernel makes
/// of ENOSYS, without fuser's default warning per call.
pub(crate) fn refuse_ioctl(reply: fuser::ReplyIoctl) {
    reply.error(Errno::ENOTTY)
}

fn name_bytes(name: &OsStr) -> &[u8] {
    name.as_bytes()
}

impl Filesystem for UnionFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // READDIRPLUS always, not READDIRPLUS_AUTO: the adaptive mode sends plus
        // only for a directory's first chunk, then plain READDIR plus one LOOKUP
        // per entry for `find -printf %s`, `ls -l`, `du`... (measured: 16k
        // LOOKUPs for a 20k-entry tree). Attributes cost us nothing to add.
        negotiate(
            config,
            &[
                InitFlags::FUSE_DO_READDIRPLUS,
                InitFlags::FUSE_CACHE_SYMLINKS,
                InitFlags::FUSE_PARALLEL_DIROPS,
                InitFlags::FUSE_ASYNC_READ,
            ],
        );
        log::info!(
            target: "unionfs::fuse",
            "mounted {} layers, FUSE ABI {:?}",
            self.stack.layers().len(),
            config.kernel_abi()
        );
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.req.count(Op::Lookup);
        log::trace!(target: "unionfs::fuse", "lookup({}, {:?})", parent.0, name);
        let dir = match self.dir(parent) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        // FUSE passes names up to 1024 bytes; no layer or upper can hold one
        // over NAME_MAX, and POSIX says so with ENAMETOOLONG, not ENOENT.
        if name_bytes(name).len() > crate::tar::index::NAME_MAX {
            return reply.error(Errno::ENAMETOOLONG);
        }
        match self.lookup_child(parent.0, &dir, name_bytes(name)) {
            Some((_, attr)) => reply.entry(&LAYER_TTL, &attr, Generation(0)),
            // Layers never change: the kernel may remember the absence as long.
            None => reply.entry(&LAYER_TTL, &attr::negative(), Generation(0)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.req.count(Op::Getattr);
        log::trace!(target: "unionfs::fuse", "getattr({})", ino.0);
        match self.attr_of(ino) {
            Ok(a) => reply.attr(&LAYER_TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.req.count(Op::Readlink);
        match self.node(ino) {
            Ok(Node::Other(r)) if self.stack.rec(r).kind() == libc::S_IFLNK => {
                let idx = self.stack.index(r);
                reply.data(idx.extra(idx.inode_of(r.entry)).link);
            }
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.req.count(Op::Open);
        log::trace!(target: "unionfs::fuse", "open({}, {:#o})", ino.0, flags.0);
        // Nothing to set up per open file, and layer content never changes: ENOSYS
        // makes the kernel stop sending OPEN/RELEASE and open every file with
        // FOPEN_KEEP_CACHE (FUSE "zero-message open", kernel 3.19+). Writes never
        // get here: the mount is read-only, so the VFS says EROFS first.
        reply.error(Errno::ENOSYS)
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.req.count(Op::Read);
        log::trace!(target: "unionfs::fuse", "read({}, {offset}, {size})", ino.0);
        let r = match self.node(ino) {
            Ok(Node::Other(r)) => r,
            Ok(Node::Dir(_)) => return reply.error(Errno::EISDIR),
            Err(e) => return reply.error(e),
        };
        self.bufs.with(size.min(MAX_READ) as usize, |buf| {
            match self.stack.layer(r.layer).read(r.entry, offset, buf) {
                Ok(n) => reply.data(&buf[..n]),
                Err(e) => {
                    log::error!(target: "unionfs::fuse", "read of inode {}: {e}", ino.0);
                    reply.error(Errno::from(e))
                }
            }
        })
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
        refuse_ioctl(reply)
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
        // Nothing is ever written: a close has nothing to flush. ENOSYS makes
        // the kernel stop sending FLUSH (fuser's default says the same, with a
        // "not implemented" warning at every first close).
        reply.error(Errno::ENOSYS)
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.req.count(Op::Opendir);
        log::trace!(target: "unionfs::fuse", "opendir({})", ino.0);
        // As for open: no per-handle state; the kernel then also caches listings
        // (FOPEN_CACHE_DIR), so a directory is read from us once.
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
        log::trace!(target: "unionfs::fuse", "readdir({}, {offset})", ino.0);
        let dir = match self.dir(ino) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        let list = self.listing(ino.0, &dir);
        // Offsets: 1 = ".", 2 = "..", 3 + i = list[i]; the listing of a read-only
        // union never changes, so an offset always means the same entry.
        let mut off = offset;
        while off < 2 {
            let (name, ino2) = if off == 0 {
                (".", ino.0)
            } else {
                ("..", dir.parent)
            };
            if reply.add(INodeNo(ino2), off + 1, fuser::FileType::Directory, name) {
                return reply.ok();
            }
            off += 1;
        }
        for (i, d) in list.iter().enumerate().skip((off - 2) as usize) {
            let rec = self.stack.rec(d.entry);
            let child_ino = inode::ino_of(&self.stack, d.entry);
            let name = OsStr::from_bytes(self.stack.name(d.entry));
            if reply.add(
                INodeNo(child_ino),
                i as u64 + 3,
                attr::file_type(rec.mode()),
                name,
            ) {
                break;
            }
        }
        self.listing_done(ino.0, off, &list);
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
        log::trace!(target: "unionfs::fuse", "readdirplus({}, {offset})", ino.0);
        let dir = match self.dir(ino) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        let list = self.listing(ino.0, &dir);
        let mut off = offset;
        while off < 2 {
            let (name, ino2) = if off == 0 {
                (".", ino.0)
            } else {
                ("..", dir.parent)
            };
            let attr = match self.attr_of(INodeNo(ino2)) {
                Ok(a) => a,
                Err(e) => return reply.error(e),
            };
            // The kernel does not take a lookup reference for "." and "..".
            if reply.add(
                INodeNo(ino2),
                off + 1,
                name,
                &Duration::ZERO,
                &attr,
                Generation(0),
            ) {
                return reply.ok();
            }
            off += 1;
        }
        for (i, d) in list.iter().enumerate().skip((off - 2) as usize) {
            let name = self.stack.name(d.entry);
            let (child_ino, attr) = if self.stack.rec(d.entry).is_dir() {
                match self.lookup_child(ino.0, &dir, name) {
                    Some(x) => x,
                    None => continue,
                }
            } else {
                let child_ino = inode::ino_of(&self.stack, d.entry);
                (
                    child_ino,
                    self.mapped(attr::of(&self.stack, d.entry, child_ino, None)),
                )
            };
            let full = reply.add(
                INodeNo(child_ino),
                i as u64 + 3,
                OsStr::from_bytes(name),
                &LAYER_TTL,
                &attr,
                Generation(0),
            );
            if full {
                break;
            }
        }
        self.listing_done(ino.0, off, &list);
        reply.ok()
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.req.count(Op::Statfs);
        let layers = self.stack.layers();
        let bytes: u64 = layers.iter().map(|l| l.index.tar_size).sum();
        let files: u64 = layers.iter().map(|l| l.index.entries.len() as u64).sum();
        let bsize = u64::from(attr::BLKSIZE);
        reply.statfs(
            bytes.div_ceil(bsize),
            0,
            0,
            files,
            0,
            attr::BLKSIZE,
            255,
            attr::BLKSIZE,
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.req.count(Op::Getxattr);
        if name_bytes(name) == REQUESTS_XATTR {
            return xattr_reply(reply, size, &self.req.text());
        }
        if is_provenance_xattr(name_bytes(name)) {
            return match self.provenance(ino) {
                Ok(p) => xattr_reply(reply, size, &self.prov.value(name_bytes(name), &p)),
                Err(e) => reply.error(e),
            };
        }
        let r = match self.node(ino) {
            Ok(Node::Dir(d)) => d.merged.top,
            Ok(Node::Other(r)) => r,
            Err(e) => return reply.error(e),
        };
        let idx = self.stack.index(r);
        let x = idx.extra(idx.inode_of(r.entry));
        match x.xattrs.iter().find(|(k, _)| *k == name_bytes(name)) {
            None => reply.error(Errno::ENODATA),
            Some((_, v)) => xattr_reply(reply, size, v),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.req.count(Op::Listxattr);
        let r = match self.node(ino) {
            Ok(Node::Dir(d)) => d.merged.top,
            Ok(Node::Other(r)) => r,
            Err(e) => return reply.error(e),
        };
        let kind = self.stack.rec(r).kind();
        let idx = self.stack.index(r);
        let mut names = Vec::new();
        for (k, _) in idx.extra(idx.inode_of(r.entry)).xattrs {
            // A layer's own xattr of a provenance name is never answered.
            if !is_provenance_xattr(k) {
                names.extend_from_slice(k);
                names.push(0);
            }
        }
        self.prov.list_into(kind, &mut names);
        xattr_reply(reply, size, &names)
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        self.req.count(Op::Access);
        if let Err(e) = self.node(ino) {
            return reply.error(e);
        }
        if mask.contains(AccessFlags::W_OK) {
            return reply.error(Errno::EROFS);
        }
        reply.ok()
    }
}

/// Answers a get/listxattr: the size when asked for it, ERANGE when too small.
fn xattr_reply(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32)
    } else if (size as usize) < value.len() {
        reply.error(Errno::ERANGE)
    } else {
        reply.data(value)
    }
}
