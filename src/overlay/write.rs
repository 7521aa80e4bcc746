//! Write operations of the writable union: copy-up, open for writing, create,
//! link, remove, rename, and metadata changes.
//!
//! Owns the order of each operation (kernel `fs/overlayfs/dir.c`): copy up the
//! parents (metadata only), check the merged view under the namespace lock,
//! change the upper, record the change in the tree, then fix the inode table.
//! The upper I/O itself (crash-safe whiteouts, temp-and-rename) is `upper/`.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{eno, lower_meta, Attr, Handle, Overlay, Path, Resolved};
use crate::stack::LayerRef;

/// Marks the upper copy of a lower hard link with its group (`LAYER:ENTRY`
/// of the layer's inode entry), so that a name of the group still lower
/// after a crash joins that copy instead of making its own. Private: never
/// listed, never committed.
pub const ORIGIN_XATTR: &[u8] = b"user.unionfs.origin";

/// Puts back an object's access and modification times as `st` had them
/// (a directory after a copy-up linked a name into it: kernel
/// `ovl_set_timestamps`; a file whose data a metadata-only copy took in).
pub(super) fn restore_times(dir: impl AsFd, st: &libc::stat) -> io::Result<()> {
    let ts = |s: i64, ns: i64| libc::timespec {
        tv_sec: s,
        tv_nsec: ns,
    };
    crate::sys::futimens(
        dir.as_fd(),
        Some(ts(st.st_atime, st.st_atime_nsec)),
        Some(ts(st.st_mtime, st.st_mtime_nsec)),
    )
}

/// `a/b/c` → components.
fn split_path(p: &[u8]) -> Path {
    p.split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}
use crate::upper::copy_up::{
    copy_up_dir, copy_up_file, copy_up_special, copy_up_symlink, CopiedUp,
};
use crate::upper::tree::UpperTree;
use crate::upper::{New, Owner, SetAttr, Time, Upper, WhiteoutFormat};
use crate::whiteout::is_reserved;

/// Refuses names over NAME_MAX (`ENAMETOOLONG`) and names only markers may
/// have (`.wh.*`: `EINVAL`). Kernel overlayfs allows the latter; unionfs does
/// not, because such a name cannot be represented in an OCI layer (it would
/// read as a whiteout).
fn check_name(name: &[u8]) -> io::Result<()> {
    if name.len() > crate::tar::index::NAME_MAX {
        return Err(eno(libc::ENAMETOOLONG));
    }
    if is_reserved(name) {
        return Err(eno(libc::EINVAL));
    }
    Ok(())
}

/// What a copy-up copies of a regular file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum How {
    /// Everything.
    Data,
    /// Metadata, size 0 (it is about to be truncated).
    Empty,
    /// Metadata, the size as a hole, and where the data is (metacopy).
    Meta,
}

fn child(dir: &[Vec<u8>], name: &[u8]) -> Path {
    let mut p = dir.to_vec();
    p.push(name.to_vec());
    p
}

/// `makedev` of a FUSE `rdev` (the kernel's `new_encode_dev` packing).
fn decode_rdev(rdev: u32) -> u64 {
    let major = (rdev & 0xfff00) >> 8;
    let minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
    libc::makedev(major, minor)
}

impl Overlay {
    pub(super) fn copy_lock(&self, key: u64) -> Arc<Mutex<()>> {
        let mut locks = self.copy_locks.lock();
        if locks.len() > 4096 {
            // Drop locks nobody holds; the map stays small.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(key).or_default().clone()
    }

    /// The copy-up lock of a lower-only object (held across a copy-up, and by
    /// removals and renames of it, so they never interleave).
    fn lower_lock(&self, r: &Resolved) -> Option<Arc<Mutex<()>>> {
        match (&r.upper, &r.lower) {
            (None, Some(m)) => Some(self.copy_lock(super::lower_ino(&self.stack, m.top))),
            _ => None,
        }
    }

    // ---- copy-up -----------------------------------------------------------

    /// Makes `path` and its ancestors upper objects, ancestors first (kernel
    /// `ovl_copy_up_flags`). Directories are copied as metadata only; the last
    /// component's data is copied unless `with_data` is false (it is about to
    /// be truncated to 0).
    pub(super) fn copy_up(&self, path: &[Vec<u8>], with_data: bool) -> io::Result<()> {
        let how = if with_data { How::Data } else { How::Empty };
        self.copy_up_as(path, how)
    }

    /// Copies `path` up for a change of its metadata: without its data (a
    /// metadata-only copy) on a `metacopy=on` mount, else whole.
    pub(super) fn copy_up_meta(&self, path: &[Vec<u8>]) -> io::Result<()> {
        let how = if self.opts.metacopy {
            How::Meta
        } else {
            How::Data
        };
        self.copy_up_as(path, how)
    }

    fn copy_up_as(&self, path: &[Vec<u8>], how: How) -> io::Result<()> {
        // Space held by files just removed comes back at their FORGET or
        // RELEASE.
        self.retry_full(|| self.copy_up_as_once(path, how))
    }

    fn copy_up_as_once(&self, path: &[Vec<u8>], how: How) -> io::Result<()> {
        // The common case, on every create, remove and rename: already in the
        // upper, and then so are all its ancestors (the tree has no orphans).
        if self.resolve(path)?.upper.is_some() {
            return Ok(());
        }
        for i in 1..=path.len() {
            let h = if i < path.len() { How::Data } else { how };
            self.copy_up_one(&path[..i], h)?;
        }
        Ok(())
    }

    fn copy_up_one(&self, path: &[Vec<u8>], how: How) -> io::Result<()> {
        let r = self.resolve(path)?;
        let Some(lock) = self.lower_lock(&r) else {
            return Ok(()); // already in the upper
        };
        let _g = lock.lock();
        let r = self.resolve(path)?; // a racing copy-up may have done it
        let (None, Some(m)) = (&r.upper, &r.lower) else {
            return Ok(());
        };
        let top = m.top;
        // The parent's times, to put back once the child is linked in
        // (kernel `ovl_copy_up_one` → `ovl_set_timestamps`): a copy-up is
        // not a change the merged view shows.
        let (_, parent_path) = path.split_last().ok_or_else(|| eno(libc::EINVAL))?;
        let parent_fd = self.upper.open_dir(parent_path)?;
        let pst = crate::sys::fstat(parent_fd.as_fd())?;
        let mut meta = lower_meta(&self.stack, top);
        let rec = self.stack.rec(top);
        let idx = self.stack.index(top);
        let extra = idx.extra(idx.inode_of(top.entry));
        // The other names of a lower hard link: linked to this copy below.
        let members = match rec.kind() {
            libc::S_IFREG => self.link_members(top),
            _ => Vec::new(),
        };
        let origin = format!("{}:{}", top.layer.0, idx.inode_of(top.entry).0);
        let linked = match members.is_empty() {
            true => None,
            false => self.linked_copy(&members, origin.as_bytes()),
        };
        // A directory from one layer reports its own link count; once in the
        // upper too it is merged and reports 1 (as overlayfs): the kernel
        // must drop the count it holds.
        let becomes_merged = rec.kind() == libc::S_IFDIR && !m.is_merged_dir();
        let done = match rec.kind() {
            libc::S_IFDIR => copy_up_dir(&self.upper, path, &meta)?,
            // A name of the group is in the upper already (a crash came
            // between two links): this one joins it.
            libc::S_IFREG if linked.is_some() => {
                let from = linked.as_ref().expect("checked");
                let (name, parent) = path.split_last().ok_or_else(|| eno(libc::EINVAL))?;
                self.upper.link(from, parent, name)?;
                CopiedUp::Created(self.upper.stat(path)?)
            }
            libc::S_IFREG => {
                let layer = self.stack.layer(top.layer);
                // A metadata-only copy: the size as a hole, and the marker
                // (a hard link's names share one copy with data instead).
                let marker = match (how, members.is_empty()) {
                    (How::Meta, true) => self.metacopy_marker(top),
                    _ => None,
                };
                let with_data = how == How::Data || (how == How::Meta && marker.is_none());
                let size = if with_data || marker.is_some() {
                    self.stack.meta(top).size
                } else {
                    0
                };
                let sparse = match &marker {
                    Some(m) => {
                        meta.private = Some((super::metacopy::METACOPY_XATTR.to_vec(), m.clone()));
                        Some(&[][..])
                    }
                    None => (with_data && rec.has(crate::tar::index::F_SPARSE))
                        .then_some(extra.sparse.as_slice()),
                };
                let data = |off: u64, buf: &mut [u8]| layer.read(top.entry, off, buf);
                copy_up_file(&self.upper, path, &meta, data, size, sparse)?
            }
            libc::S_IFLNK => copy_up_symlink(&self.upper, path, &meta, extra.link)?,
            k => {
                let (a, b) = extra.rdev;
                copy_up_special(&self.upper, path, &meta, k, libc::makedev(a, b))?
            }
        };
        let st = match done {
            CopiedUp::Created(st) => {
                restore_times(&parent_fd, &pst)?;
                st
            }
            CopiedUp::Existed => self.upper.stat(path)?,
        };
        let mut tree = self.tree.write();
        let (name, parent) = path.split_last().ok_or_else(|| eno(libc::EINVAL))?;
        let pnode = tree.resolve(parent).ok_or_else(|| eno(libc::EIO))?;
        tree.insert(pnode, name, st.st_mode, st.st_ino)
            .ok_or_else(|| eno(libc::EIO))?;
        drop(tree);
        self.nodes
            .lock()
            .set_upper(super::lower_ino(&self.stack, top), st.st_ino);
        if becomes_merged {
            self.invalidate(super::lower_ino(&self.stack, top));
        }
        if !members.is_empty() {
            // The copy is marked as this group's while its other names are
            // linked, so that a name left lower by a crash in between joins
            // it at its own copy-up instead of making a copy of its own.
            let f = self
                .upper
                .open_file(path, libc::O_RDONLY | libc::O_NOFOLLOW)?;
            if linked.is_none() {
                crate::sys::fsetxattr(f.as_fd(), ORIGIN_XATTR, origin.as_bytes(), 0)?;
            }
            let mut all = true;
            for q in members {
                if let Err(e) = self.link_member(path, q) {
                    // That name stays lower: still the group's data until
                    // it is written, then a copy of its own.
                    all = false;
                    log::warn!(
                        target: "unionfs::overlay",
                        "cannot link {} to its copied-up hard link: {e}",
                        String::from_utf8_lossy(&self.stack.index(q).path_of(q.entry))
                    );
                }
            }
            if all {
                // Every name is linked (or hidden): the mark has done its
                // work, and a plain `tar` of the upper should not carry it.
                let _ = crate::sys::fremovexattr(f.as_fd(), ORIGIN_XATTR);
            }
        }
        Ok(())
    }

    /// The upper path of a name of the group whose copy carries `origin`, if
    /// one is in the upper.
    fn linked_copy(&self, members: &[LayerRef], origin: &[u8]) -> Option<Path> {
        for &q in members {
            let qpath = split_path(&self.stack.index(q).path_of(q.entry));
            let Ok(r) = self.resolve(&qpath) else {
                continue;
            };
            if r.upper.is_none() {
                continue;
            }
            let Ok(f) = self
                .upper
                .open_file(&qpath, libc::O_RDONLY | libc::O_NOFOLLOW)
            else {
                continue;
            };
            if crate::sys::fgetxattr(f.as_fd(), ORIGIN_XATTR).is_ok_and(|v| v == origin) {
                return Some(qpath);
            }
        }
        None
    }

    /// Links the name of lower entry `q` — if the merged view still shows
    /// that very entry there — to the copy at `copy` (its directories copied
    /// up first, their times kept). The group's copy-up lock is held.
    fn link_member(&self, copy: &[Vec<u8>], q: LayerRef) -> io::Result<()> {
        let qpath = split_path(&self.stack.index(q).path_of(q.entry));
        let r = self.resolve(&qpath)?;
        match (&r.upper, &r.lower) {
            (None, Some(m)) if m.top == q => {}
            _ => return Ok(()), // hidden, replaced or copied up since
        }
        let (name, parent) = qpath.split_last().ok_or_else(|| eno(libc::EINVAL))?;
        self.copy_up(parent, true)?;
        let pfd = self.upper.open_dir(parent)?;
        let pst = crate::sys::fstat(pfd.as_fd())?;
        let mut tree = self.tree.write();
        self.upper.link(copy, parent, name)?;
        let st = self.upper.stat(&qpath)?;
        let pnode = tree.resolve(parent).ok_or_else(|| eno(libc::EIO))?;
        tree.insert(pnode, name, st.st_mode, st.st_ino)
            .ok_or_else(|| eno(libc::EIO))?;
        drop(tree);
        restore_times(&pfd, &pst)
    }

    /// Copies up `path` whole: a file with its data; a directory with lower
    /// contributions with everything below it, then made opaque (so it keeps
    /// its content wherever it is renamed to). Cost: the subtree's bytes.
    /// Names of a lower hard link become separate files, as any copy-up
    /// makes them (overlayfs with `redirect_dir` would keep them lower, with
    /// the layer's link count, until each is copied up).
    fn copy_up_whole(&self, path: &[Vec<u8>]) -> io::Result<()> {
        let r = self.resolve(path)?;
        if !r.is_dir(&self.stack) {
            return self.copy_up(path, true);
        }
        if r.lower_dir().is_none() {
            return Ok(()); // nothing below that a move would lose
        }
        let ino = self.ino_peek(&r);
        self.copy_up(path, false)?;
        let st = self.upper.stat(path)?;
        let list = self.list(&self.tree.read(), path)?;
        for e in list {
            self.copy_up_whole(&child(path, &e.name))?;
        }
        let mut tree = self.tree.write();
        self.upper.set_opaque(path)?;
        let n = tree.resolve(path).ok_or_else(|| eno(libc::EIO))?;
        tree.set_opaque(n, true);
        // Copying the children in (and the marker) bumped the directory's
        // times; the merged view never changed, so neither may they.
        let times = SetAttr {
            atime: Some(Time::At(st.st_atime, st.st_atime_nsec as u32)),
            mtime: Some(Time::At(st.st_mtime, st.st_mtime_nsec as u32)),
            ..SetAttr::default()
        };
        self.upper.set_attr(path, &times)?;
        drop(tree);
        // Opaque now, it reports its own link count, no longer 1: the
        // kernel must drop the count it holds.
        self.invalidate(ino);
        Ok(())
    }

    // ---- open --------------------------------------------------------------

    /// Opens file `ino` with `flags`; returns the handle. Opening for writing
    /// (or with `O_TRUNC`) copies the file up first (without its data when
    /// truncating); a read-only open of a lower file reads it in place.
    pub fn open(&self, ino: u64, flags: i32) -> io::Result<u64> {
        let path = self.path_of(ino)?;
        let r = self.resolve(&path)?;
        match r.kind(&self.stack) {
            libc::S_IFDIR => return Err(eno(libc::EISDIR)),
            libc::S_IFREG => {}
            _ => return Err(eno(libc::EINVAL)),
        }
        let trunc = flags & libc::O_TRUNC != 0;
        let writes = flags & libc::O_ACCMODE != libc::O_RDONLY || trunc;
        if let (false, None, Some(m)) = (writes, &r.upper, &r.lower) {
            return Ok(self.handles.insert(Handle::Lower(ino, m.top)));
        }
        if r.upper.is_none() {
            self.copy_up(&path, !trunc)?;
        }
        // A metadata-only copy: read from its layer; filled before a write
        // (one opened with O_TRUNC is emptied instead, then unmarked).
        let mc = self.metacopy_at(&path, &r)?;
        match &mc {
            Some((_, o)) if !writes => return Ok(self.handles.insert(Handle::Lower(ino, *o))),
            Some((f, o)) if !trunc => self.fill_metacopy(f, *o)?,
            _ => {}
        }
        let flags = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY);
        let f = self.upper.open_file(&path, flags)?;
        if let (Some(_), true) = (&mc, trunc) {
            self.unmark_metacopy(&f)?;
        }
        Ok(self.handles.insert(Handle::Upper(ino, f)))
    }

    // ---- create ------------------------------------------------------------

    /// The owner of a new object made by `uid`/`gid` in `dir` (a set-group-ID
    /// directory gives its group, as the kernel's `inode_init_owner`).
    fn owner(&self, dir: &[Vec<u8>], (uid, gid): (u32, u32)) -> io::Result<Owner> {
        let st = self.upper.stat(dir)?;
        let gid = if st.st_mode & libc::S_ISGID != 0 {
            st.st_gid
        } else {
            gid
        };
        Ok(Owner { uid, gid })
    }

    /// The common create path: `make(upper, dir path, owner)` makes the object
    /// once the name is known to be free in the merged view. An upper that is
    /// full right after a removal is given the time to free it
    /// ([`Overlay::retry_full`]): a failed attempt changed nothing.
    fn make<T>(
        &self,
        parent: u64,
        name: &[u8],
        ids: Option<(u32, u32)>,
        make: impl Fn(&Upper, &[Vec<u8>], Option<Owner>) -> io::Result<(T, New)>,
    ) -> io::Result<(Attr, T)> {
        self.retry_full(|| self.make_once(parent, name, ids, &make))
    }

    fn make_once<T>(
        &self,
        parent: u64,
        name: &[u8],
        ids: Option<(u32, u32)>,
        make: impl Fn(&Upper, &[Vec<u8>], Option<Owner>) -> io::Result<(T, New)>,
    ) -> io::Result<(Attr, T)> {
        check_name(name)?;
        let dir = self.path_of(parent)?;
        self.copy_up(&dir, false)?;
        let mut tree = self.tree.write();
        let rd = self
            .resolve_in(&tree, &dir)
            .ok_or_else(|| eno(libc::ENOENT))?;
        let pnode = match &rd.upper {
            Some(u) if u.is_dir() => u.node,
            _ => return Err(eno(libc::ENOTDIR)),
        };
        if self.resolve_child(&tree, &rd, name).is_some() {
            return Err(eno(libc::EEXIST));
        }
        // A hard link (no `ids`) keeps its file's owner.
        let owner = ids.map(|ids| self.owner(&dir, ids)).transpose()?;
        let (t, new) = make(&self.upper, &dir, owner)?;
        let kind = new.stat.st_mode & libc::S_IFMT;
        let unode = tree
            .insert(pnode, name, kind, new.stat.st_ino)
            .ok_or_else(|| eno(libc::EIO))?;
        if kind == libc::S_IFDIR && new.replaced_whiteout {
            tree.set_opaque(unode, true);
        }
        // A new object (`ids`) gets a new number, a hard link the number of
        // its file; entered before the tree lock goes, so that the number
        // table changes with the tree (as in `remove` and `rename`).
        let mut nodes = self.nodes.lock();
        let ino = match ids {
            Some(_) => nodes.enter_new(parent, name, new.stat.st_ino),
            None => nodes.enter(parent, name, None, Some(new.stat.st_ino), None),
        };
        drop(nodes);
        drop(tree);
        let mut st = if self.upper.is_rootless() {
            self.upper_stat(&child(&dir, name))?
        } else {
            new.stat
        };
        st.st_ino = ino;
        Ok((Attr { ino, st }, t))
    }

    /// Creates and opens a regular file; returns its attributes and handle.
    pub fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: i32,
        ids: (u32, u32),
    ) -> io::Result<(Attr, u64)> {
        let flags = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_TRUNC);
        let (attr, f) = self.make(parent, name, Some(ids), |up, dir, owner| {
            up.create_file(dir, name, flags, mode, owner)
        })?;
        let fh = self.handles.insert(Handle::Upper(attr.ino, f));
        Ok((attr, fh))
    }

    /// Creates a directory.
    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32, ids: (u32, u32)) -> io::Result<Attr> {
        let mk = |up: &Upper, dir: &[Vec<u8>], owner| Ok(((), up.mkdir(dir, name, mode, owner)?));
        Ok(self.make(parent, name, Some(ids), mk)?.0)
    }

    /// Creates a fifo, socket, device or regular file (`mode` has the type).
    pub fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
        ids: (u32, u32),
    ) -> io::Result<Attr> {
        if matches!(mode & libc::S_IFMT, 0 | libc::S_IFREG) {
            // A regular file is made open, read and write, and its fd goes
            // into the cache that `WRITE` by inode looks in: the write that
            // nearly always follows (no OPEN comes first on a writable mount)
            // then opens and checks nothing (8 syscalls fewer per new file).
            // A new file is never a metadata-only copy.
            let mk = |up: &Upper, dir: &[Vec<u8>], owner| {
                let (f, new) = up.create_file(dir, name, libc::O_RDWR, mode, owner)?;
                Ok(((f, new.stat.st_ino), new))
            };
            let (attr, (f, st_ino)) = self.make(parent, name, Some(ids), mk)?;
            self.io.cache_new(st_ino, f);
            return Ok(attr);
        }
        let dev = decode_rdev(rdev);
        let mk =
            |up: &Upper, dir: &[Vec<u8>], owner| Ok(((), up.mknod(dir, name, mode, dev, owner)?));
        Ok(self.make(parent, name, Some(ids), mk)?.0)
    }

    /// Creates a symlink to `target`.
    pub fn symlink(
        &self,
        parent: u64,
        name: &[u8],
        target: &[u8],
        ids: (u32, u32),
    ) -> io::Result<Attr> {
        let mk =
            |up: &Upper, dir: &[Vec<u8>], owner| Ok(((), up.symlink(dir, name, target, owner)?));
        Ok(self.make(parent, name, Some(ids), mk)?.0)
    }

    /// Makes `newparent`/`newname` a hard link to `ino` (copied up first).
    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> io::Result<Attr> {
        let src = self.path_of(ino)?;
        let r = self.resolve(&src)?;
        if r.is_dir(&self.stack) {
            return Err(eno(libc::EPERM));
        }
        self.copy_up(&src, true)?;
        let mk = |up: &Upper, dir: &[Vec<u8>], _| Ok(((), up.link(&src, dir, newname)?));
        let (mut a, ()) = self.make(newparent, newname, None, mk)?;
        // The link count changed for every name: report the upper's.
        a.st.st_nlink = self.upper.stat(&src).map_or(a.st.st_nlink, |s| s.st_nlink);
        Ok(a)
    }

    // ---- remove ------------------------------------------------------------

    /// `unlink` (`dir` false) or `rmdir` (`dir` true) of `parent`/`name`.
    /// A name with lower objects below is replaced by a whiteout; a directory
    /// must be empty in the merged view (`ENOTEMPTY`, as overlayfs). A
    /// whiteout that meets an upper full right after a removal waits for its
    /// space ([`Overlay::retry_full`]): a failed attempt changed nothing but
    /// perhaps the copy-up of the parent directory.
    pub fn remove(&self, parent: u64, name: &[u8], dir: bool) -> io::Result<()> {
        self.retry_full(|| self.remove_once(parent, name, dir))
    }

    fn remove_once(&self, parent: u64, name: &[u8], dir: bool) -> io::Result<()> {
        let dpath = self.path_of(parent)?;
        let path = child(&dpath, name);
        let r = self.resolve(&path)?;
        let lock = self.lower_lock(&r);
        let _g = lock.as_ref().map(|l| l.lock());
        self.copy_up(&dpath, false)?;
        let mut tree = self.tree.write();
        let rd = self
            .resolve_in(&tree, &dpath)
            .ok_or_else(|| eno(libc::ENOENT))?;
        let r = self
            .resolve_child(&tree, &rd, name)
            .ok_or_else(|| eno(libc::ENOENT))?;
        let is_dir = r.is_dir(&self.stack);
        if dir && !is_dir {
            return Err(eno(libc::ENOTDIR));
        }
        if !dir && is_dir {
            return Err(eno(libc::EISDIR));
        }
        if dir && !self.list(&tree, &path)?.is_empty() {
            return Err(eno(libc::ENOTEMPTY));
        }
        let pnode = rd.upper.map(|u| u.node).ok_or_else(|| eno(libc::EIO))?;
        let upper_gone = match &r.upper {
            Some(_) => is_dir || self.upper.stat(&path)?.st_nlink <= 1,
            None => false,
        };
        let ino = self.ino_peek(&r);
        let kept = self.keep_data(&path, &r, ino);
        if r.below {
            let st = self.upper.replace_with_whiteout(&dpath, name)?;
            tree.set_whiteout(pnode, name, st.st_mode, st.st_ino);
        } else {
            if dir {
                self.upper.rmdir(&dpath, name)?;
            } else {
                self.upper.unlink(&dpath, name)?;
            }
            tree.remove(pnode, name);
        }
        // The number table learns that the upper st_ino is free before the
        // tree lock goes: a create (which holds it while the filesystem
        // allocates) may get that st_ino at once, and must not find it
        // still recorded for this object (see `Nodes::enter_new`).
        let gone_upper = r.upper.filter(|_| upper_gone).map(|u| u.ino);
        self.nodes.lock().unlink(ino, parent, name, gone_upper);
        drop(tree);
        self.name_gone(ino, kept, upper_gone, r.upper.map(|u| u.ino));
        Ok(())
    }

    // ---- rename ------------------------------------------------------------

    /// Makes directory `path` (in the upper) opaque, on disk and in `tree`.
    fn make_opaque(&self, tree: &mut UpperTree, path: &[Vec<u8>]) -> io::Result<()> {
        self.upper.set_opaque(path)?;
        let n = tree.resolve(path).ok_or_else(|| eno(libc::EIO))?;
        tree.set_opaque(n, true);
        Ok(())
    }

    /// `rename` with `flags` (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`).
    ///
    /// Unlike overlayfs without `redirect_dir` (EXDEV), a directory with lower
    /// contributions can be renamed: it is first copied up whole and made
    /// opaque (`Overlay::copy_up_whole`), so the upper alone holds its
    /// content and the result is a plain layer. Order: the object is placed
    /// under its new name, then the old name gets its whiteout: a crash in
    /// between shows both names, never neither.
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
    ) -> io::Result<()> {
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 {
            return Err(eno(libc::EINVAL));
        }
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        check_name(name)?;
        check_name(newname)?;
        let sdir = self.path_of(parent)?;
        let ddir = self.path_of(newparent)?;
        let spath = child(&sdir, name);
        let dpath = child(&ddir, newname);
        let s = self.resolve(&spath)?;
        let d = self.resolve(&dpath).ok();
        self.check_rename(&self.tree.read(), &s, d.as_ref(), &dpath, flags)?;
        if d.as_ref()
            .is_some_and(|d| !exchange && self.ino_peek(d) == self.ino_peek(&s))
        {
            return Ok(()); // two names of one file: POSIX says do nothing
        }
        self.copy_up(&sdir, false)?;
        self.copy_up(&ddir, false)?;
        self.copy_up_whole(&spath)?;
        if exchange {
            self.copy_up_whole(&dpath)?;
        }
        let mut tree = self.tree.write();
        let rs = self
            .resolve_in(&tree, &sdir)
            .ok_or_else(|| eno(libc::ENOENT))?;
        let rd = self
            .resolve_in(&tree, &ddir)
            .ok_or_else(|| eno(libc::ENOENT))?;
        let s = self
            .resolve_child(&tree, &rs, name)
            .ok_or_else(|| eno(libc::ENOENT))?;
        let d = self.resolve_child(&tree, &rd, newname);
        self.check_rename(&tree, &s, d.as_ref(), &dpath, flags)?;
        let (Some(ps), Some(pd), Some(_)) = (rs.upper, rd.upper, s.upper) else {
            return Err(eno(libc::EIO)); // copied up above
        };
        let s_dir = s.is_dir(&self.stack);
        let d_below = rd
            .lower_dir()
            .and_then(|m| self.stack.lookup(m, newname))
            .is_some();
        let mut d_upper_gone = false;
        // A file replaced while open keeps its data for its reader.
        let d_kept = match (&d, exchange) {
            (Some(d), false) => self.keep_data(&dpath, d, self.ino_peek(d)),
            _ => None,
        };
        if exchange {
            let d = d.as_ref().ok_or_else(|| eno(libc::ENOENT))?;
            if s_dir && d_below {
                self.make_opaque(&mut tree, &spath)?;
            }
            if d.is_dir(&self.stack) && s.below {
                self.make_opaque(&mut tree, &dpath)?;
            }
            self.upper
                .rename(&sdir, name, &ddir, newname, libc::RENAME_EXCHANGE)?;
            tree.exchange(ps.node, name, pd.node, newname);
        } else {
            let d_whiteout = tree.lookup(pd.node, newname).is_some_and(|e| e.whiteout);
            if s_dir && (d_below || d_whiteout) {
                self.make_opaque(&mut tree, &spath)?;
            }
            if let Some(du) = d.as_ref().and_then(|d| d.upper) {
                if du.is_dir() {
                    // Merged-empty, but it may hold whiteouts: rename(2) would say
                    // ENOTEMPTY. Remove it (markers and all) first.
                    self.upper.rmdir(&ddir, newname)?;
                    tree.remove(pd.node, newname);
                    d_upper_gone = true;
                } else {
                    d_upper_gone = self.upper.stat(&dpath)?.st_nlink <= 1;
                }
            }
            if d_whiteout && s_dir && self.upper.format() == WhiteoutFormat::Overlay {
                // A directory cannot replace the 0/0 char device by rename(2).
                self.upper.remove_whiteout(&ddir, newname)?;
            }
            self.upper.rename(&sdir, name, &ddir, newname, 0)?;
            if d_whiteout {
                // OCI: `.wh.NEWNAME` next to the entry would read as "opaque" for a
                // directory and as nothing for a file; remove it either way.
                self.upper.remove_whiteout(&ddir, newname)?;
            }
            tree.rename(ps.node, name, pd.node, newname)
                .ok_or_else(|| eno(libc::EIO))?;
            if s.below {
                let st = self.upper.write_whiteout(&sdir, name)?;
                tree.set_whiteout(ps.node, name, st.st_mode, st.st_ino);
            }
        }
        // The number table follows before the tree lock goes (as in
        // `remove`: a freed upper st_ino must not stay recorded while a
        // create can take it).
        let s_ino = self.ino_peek(&s);
        let d_ino = d.as_ref().map(|d| self.ino_peek(d));
        let mut nodes = self.nodes.lock();
        if let (true, Some(di)) = (exchange, d_ino) {
            nodes.rename(di, (newparent, newname), (parent, name));
        } else if let Some(di) = d_ino {
            let gone = d.as_ref().and_then(|d| d.upper).filter(|_| d_upper_gone);
            nodes.unlink(di, newparent, newname, gone.map(|u| u.ino));
        }
        nodes.rename(s_ino, (parent, name), (newparent, newname));
        drop(nodes);
        drop(tree);
        if let (false, Some(d), Some(di)) = (exchange, &d, d_ino) {
            self.name_gone(di, d_kept, d_upper_gone, d.upper.map(|u| u.ino));
        }
        Ok(())
    }

    /// The merged-view checks of a rename (the kernel's VFS has done the
    /// permission and ancestry checks).
    fn check_rename(
        &self,
        tree: &UpperTree,
        s: &Resolved,
        d: Option<&Resolved>,
        dpath: &[Vec<u8>],
        flags: u32,
    ) -> io::Result<()> {
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        let Some(d) = d else {
            return if exchange {
                Err(eno(libc::ENOENT))
            } else {
                Ok(())
            };
        };
        if flags & libc::RENAME_NOREPLACE != 0 {
            return Err(eno(libc::EEXIST));
        }
        if exchange {
            return Ok(());
        }
        match (s.is_dir(&self.stack), d.is_dir(&self.stack)) {
            (false, true) => Err(eno(libc::EISDIR)),
            (true, false) => Err(eno(libc::ENOTDIR)),
            (true, true) if !self.list(tree, dpath)?.is_empty() => Err(eno(libc::ENOTEMPTY)),
            _ => Ok(()),
        }
    }

    // ---- metadata ----------------------------------------------------------

    /// `setattr` of `ino` (through handle `fh` when the kernel gives one):
    /// copies the object up first (without data when truncating to 0).
    pub fn setattr(&self, ino: u64, fh: Option<u64>, a: &SetAttr) -> io::Result<Attr> {
        if let Some(h) = fh.and_then(|fh| self.handles.get(fh)) {
            if let Handle::Upper(_, f) = h.as_ref() {
                self.upper.set_attr_fd(f.as_fd(), a)?;
                let (mut st, logical) = self.upper.fstat_logical(f.as_fd())?;
                self.fix_ids(&mut st, logical);
                st.st_ino = ino;
                return Ok(Attr { ino, st });
            }
        }
        let path = match self.path_of(ino) {
            Ok(p) => p,
            // Unlinked while open: through the data it keeps.
            Err(e) => match self.io.orphan(ino) {
                Some(super::fileio::Data::Upper(f)) => {
                    self.upper.set_attr_fd(f.as_fd(), a)?;
                    let (mut st, logical) = self.upper.fstat_logical(f.as_fd())?;
                    self.fix_ids(&mut st, logical);
                    st.st_ino = ino;
                    return Ok(Attr { ino, st });
                }
                Some(_) => return Err(eno(libc::EROFS)),
                None => return Err(e),
            },
        };
        let r = self.resolve(&path)?;
        let mut emptied = None;
        match (&r.upper, a.size) {
            (None, None) => self.copy_up_meta(&path)?,
            (None, Some(s)) => self.copy_up(&path, s != 0)?,
            // A metadata-only copy gets its data before a size change; one
            // truncated to 0 needs none: its marker goes once it is empty.
            (Some(_), Some(s)) => match self.metacopy_at(&path, &r)? {
                Some((f, _)) if s == 0 => emptied = Some(f),
                Some((f, o)) => self.fill_metacopy(&f, o)?,
                None => {}
            },
            (Some(_), None) => {}
        }
        self.upper.set_attr(&path, a)?;
        if let Some(f) = emptied {
            self.unmark_metacopy(&f)?;
        }
        let st = self.stat_of(&path, &self.resolve(&path)?, ino)?;
        Ok(Attr { ino, st })
    }

    /// Sets xattr `key` of `ino` (copied up first).
    pub fn setxattr(&self, ino: u64, key: &[u8], value: &[u8], flags: i32) -> io::Result<()> {
        let path = self.path_of(ino)?;
        // Refused before any copy-up: a failed call leaves nothing behind.
        if crate::upper::is_private_xattr(key) {
            return Err(eno(libc::EPERM));
        }
        self.copy_up_meta(&path)?;
        self.upper.set_xattr(&path, key, value, flags)
    }

    /// Removes xattr `key` of `ino` (copied up first).
    pub fn removexattr(&self, ino: u64, key: &[u8]) -> io::Result<()> {
        let path = self.path_of(ino)?;
        if crate::upper::is_private_xattr(key) {
            return Err(eno(libc::EPERM));
        }
        let r = self.resolve(&path)?;
        if r.upper.is_none() {
            // Nothing to copy up for an xattr the object does not have.
            self.getxattr(ino, key)?;
        }
        self.copy_up_meta(&path)?;
        self.upper.remove_xattr(&path, key)
    }
}
