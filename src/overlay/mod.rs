//! The writable union: the upper directory over the layer stack.
//!
//! Owns the merge of [`Upper`] (through its in-memory mirror [`UpperTree`]) with
//! the read-only [`Stack`], the inode numbers of a writable mount, file I/O
//! by inode (`fileio`) or by open handle, and the order of every write operation: copy-up
//! first, then the change, then the whiteout (kernel `fs/overlayfs/dir.c`,
//! `copy_up.c`). It knows nothing of FUSE: the adapter (`fuse/rw.rs`) decodes
//! requests and calls these methods, which return `io::Result` (the errno is
//! the reply).
//!
//! # Resolution
//! A name in a merged directory resolves as overlayfs's `ovl_lookup` does: the
//! upper answers first (an entry wins, a whiteout hides, an opaque directory
//! stops the descent), then [`Stack::lookup`] over the directory's lower stack.
//! Nothing about a path is cached: every operation resolves it again from the
//! root (an in-memory walk of O(depth) map lookups), so no cached state can go
//! stale when a directory is renamed or made opaque.
//!
//! # Inode numbers
//! - An object with a lower origin keeps the number the read-only mount gives it
//!   (derived from layer and inode entry), whether or not it has been copied
//!   up, like overlayfs keeps `st_ino` across copy-up. The names of a lower
//!   hard link share that number (see `lower_ino`), and the copy-up of any of
//!   them links every name of the group the merged view shows to the one
//!   copy (overlayfs `index=on`; `write.rs`), so they stay one file.
//! - Objects created through the mount get numbers from a counter (bit 63 set),
//!   keyed by the upper file's `st_ino` while the kernel holds them, so the
//!   names of one upper hard-linked file share a number, and a number is never
//!   reused for a different object while the kernel may still use it.
//!
//! # Locking
//! `tree` is the namespace lock: lookups take it shared; an operation that
//! changes the upper's namespace takes it exclusively around the disk change
//! and the matching tree update, so the tree never disagrees with the disk.
//! File data never moves under it: a copy-up copies data into the work dir
//! with no lock but its own per-object one, then takes the namespace lock only
//! to check the name still means the same object and record it. Lock order:
//! copy-up lock, then `tree`, then `nodes`/`handles`.

mod fileio;
mod handles;
pub mod metacopy;
mod nodes;
mod write;

pub use handles::{Handle, ListEntry};

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::inode;
use crate::stack::{LayerRef, Merged, Provenance, Stack};
use crate::upper::copy_up::Meta;
use crate::upper::tree::{UEntry, UNodeId, UpperTree};
use crate::upper::{is_private_xattr, Upper};

use handles::Handles;
use nodes::Nodes;

/// A path in the merged view: components from the root.
pub type Path = Vec<Vec<u8>>;

fn eno(n: i32) -> io::Error {
    io::Error::from_raw_os_error(n)
}

/// A name resolved in the writable union (≈ the kernel's `ovl_entry`).
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The upper object, if the upper has one (never a whiteout).
    pub upper: Option<UEntry>,
    /// The lower object: what is shown when there is no upper object; with an
    /// upper directory, the lower directories merged into it; with an upper
    /// non-directory, the lower object of the same type it was copied up from
    /// (used for its inode number only).
    pub lower: Option<Merged>,
    /// Something of this name exists in the layers, visible below this
    /// position: removing or renaming the name needs a whiteout.
    pub below: bool,
}

impl Resolved {
    /// `st_mode & S_IFMT` of what is shown.
    pub fn kind(&self, stack: &Stack) -> u32 {
        match (&self.upper, &self.lower) {
            (Some(u), _) => u.kind,
            (None, Some(m)) => stack.rec(m.top).kind(),
            (None, None) => 0,
        }
    }

    /// Returns true if and only if this is a directory.
    pub fn is_dir(&self, stack: &Stack) -> bool {
        self.kind(stack) == libc::S_IFDIR
    }

    /// The lower directories that merge into this directory (`None` if none
    /// do: upper-only, or opaque).
    fn lower_dir(&self) -> Option<&Merged> {
        match (&self.upper, &self.lower) {
            (Some(u), _) if u.opaque || !u.is_dir() => None,
            (_, Some(m)) if m.is_dir() => Some(m),
            _ => None,
        }
    }

    /// Returns true if and only if this is a directory with contributions from
    /// several places (`st_nlink` is then 1, as overlayfs reports).
    fn is_merged_dir(&self) -> bool {
        match self.lower_dir() {
            Some(m) => self.upper.is_some() || m.is_merged_dir(),
            None => false,
        }
    }
}

/// Options of a writable union. New objects always get the caller's ids
/// (chowned as root, recorded in the override when rootless).
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The id mapping: a rootless upper's real ids are host ids, turned into
    /// container ids with it before they are reported like any other.
    pub ids: crate::idmap::IdMap,
    /// Metadata-only copy-up (`-o metacopy=on`; see `metacopy.rs`).
    pub metacopy: bool,
    /// Each layer's label, bottom first, as metadata-only copies name their
    /// layer: its diffID, or a loose tar's absolute path.
    pub labels: Vec<String>,
}

/// The writable union. See the module docs.
#[derive(Debug)]
pub struct Overlay {
    stack: Arc<Stack>,
    upper: Upper,
    tree: RwLock<UpperTree>,
    nodes: Mutex<Nodes>,
    handles: Handles,
    /// File data by inode number (no-open mode).
    io: fileio::FileIo,
    /// The last listing taken of each directory being read (no-open mode).
    listings: Mutex<lru::LruCache<u64, Arc<[ListEntry]>>>,
    copy_locks: Mutex<HashMap<u64, Arc<Mutex<()>>>>,
    /// Per layer with hard links: every hard-link group, by its inode entry
    /// (built on first need).
    groups: Mutex<HashMap<u16, Arc<Groups>>>,
    /// Tells the kernel that an inode's attributes changed (set by the
    /// adapter once mounted).
    invalidate: std::sync::OnceLock<Invalidator>,
    opts: Options,
}

/// See [`Overlay::set_invalidator`].
pub type Invalidate = Box<dyn Fn(u64) + Send + Sync>;

struct Invalidator(Invalidate);

impl std::fmt::Debug for Invalidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Invalidator")
    }
}

/// A layer's hard-link groups: inode entry → every entry naming it.
type Groups = HashMap<u32, Vec<u32>>;

/// Attributes of an object as the adapter replies them.
#[derive(Clone, Copy, Debug)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// `lstat` of the object (`st_ino` replaced by `ino`).
    pub st: libc::stat,
}

impl Overlay {
    /// The union of `upper` over `stack`; scans the upper once.
    pub fn new(stack: Arc<Stack>, upper: Upper, opts: Options) -> crate::Result<Overlay> {
        let tree = UpperTree::scan(&upper)?;
        log::info!(target: "unionfs::overlay", "upper {}: {} entries", upper.path().display(), tree.len());
        Ok(Overlay {
            nodes: Mutex::new(Nodes::new(Arc::clone(&stack))),
            stack,
            upper,
            tree: RwLock::new(tree),
            handles: Handles::default(),
            io: fileio::FileIo::default(),
            listings: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(64).expect("non-zero"),
            )),
            copy_locks: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
            invalidate: std::sync::OnceLock::new(),
            opts,
        })
    }

    /// Sets what tells the kernel that inode `ino`'s attributes changed by
    /// an operation on another inode (a directory a copy-up made merged:
    /// its `st_nlink` becomes 1). Once; later calls are ignored.
    pub fn set_invalidator(&self, f: Invalidate) {
        let _ = self.invalidate.set(Invalidator(f));
    }

    /// Tells the kernel, if it can be told, that `ino`'s attributes changed.
    pub(super) fn invalidate(&self, ino: u64) {
        if let Some(f) = self.invalidate.get() {
            (f.0)(ino);
        }
    }

    /// The layer stack.
    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    /// The upper directory.
    pub fn upper(&self) -> &Upper {
        &self.upper
    }

    // ---- resolution --------------------------------------------------------

    fn root_resolved(&self, tree: &UpperTree) -> Resolved {
        let mut root = tree.get(UNodeId::ROOT);
        if let Some(r) = root.as_mut() {
            r.opaque = false; // overlayfs ignores opacity on the upper root
        }
        Resolved {
            upper: root,
            lower: Some(self.stack.root()),
            below: false,
        }
    }

    /// Resolves `name` in the directory `dir` (which must be one).
    fn resolve_child(&self, tree: &UpperTree, dir: &Resolved, name: &[u8]) -> Option<Resolved> {
        let low = dir.lower_dir().and_then(|m| self.stack.lookup(m, name));
        let up = match &dir.upper {
            Some(u) if u.is_dir() => tree.lookup(u.node, name),
            _ => None,
        };
        let below = low.is_some();
        match up {
            Some(e) if e.whiteout => None,
            Some(e) => {
                let lower = low.filter(|m| {
                    let k = self.stack.rec(m.top).kind();
                    k == e.kind && (k != libc::S_IFDIR || !e.opaque)
                });
                Some(Resolved {
                    upper: Some(e),
                    lower,
                    below,
                })
            }
            None => low.map(|m| Resolved {
                upper: None,
                lower: Some(m),
                below: true,
            }),
        }
    }

    /// Resolves `path` from the root.
    fn resolve_in(&self, tree: &UpperTree, path: &[Vec<u8>]) -> Option<Resolved> {
        let mut cur = self.root_resolved(tree);
        for c in path {
            if !cur.is_dir(&self.stack) {
                return None;
            }
            cur = self.resolve_child(tree, &cur, c)?;
        }
        Some(cur)
    }

    /// Resolves `path` (ENOENT if it does not exist).
    pub fn resolve(&self, path: &[Vec<u8>]) -> io::Result<Resolved> {
        self.resolve_in(&self.tree.read(), path)
            .ok_or_else(|| eno(libc::ENOENT))
    }

    /// The path of inode `ino` (ESTALE if the kernel sent a number we forgot).
    pub fn path_of(&self, ino: u64) -> io::Result<Path> {
        self.nodes.lock().path(ino).ok_or_else(|| {
            log::debug!(target: "unionfs::overlay", "inode {ino:#x}: a number with no name: ESTALE");
            eno(libc::ESTALE)
        })
    }

    // ---- inode numbers and attributes --------------------------------------

    /// The inode number for `r` (found at `parent`/`name`), counting one
    /// kernel lookup reference.
    fn ino_for(&self, r: &Resolved, parent: u64, name: &[u8]) -> u64 {
        let fixed = self.origin_ino(r);
        let upper_ino = r.upper.map(|u| u.ino);
        let lower = r.lower.as_ref().map(|m| m.top);
        self.nodes
            .lock()
            .enter(parent, name, fixed, upper_ino, lower)
    }

    /// The number derived from `r`'s lower origin (the lower object of the
    /// same type at its name), if it has one.
    fn origin_ino(&self, r: &Resolved) -> Option<u64> {
        r.lower.as_ref().map(|m| lower_ino(&self.stack, m.top))
    }

    /// The other names (entries) of `r`'s lower hard-link group, in its
    /// layer; empty if it has none.
    fn link_members(&self, r: LayerRef) -> Vec<LayerRef> {
        let idx = self.stack.index(r);
        let inode = idx.inode_of(r.entry);
        let groups = {
            let mut g = self.groups.lock();
            g.entry(r.layer.0)
                .or_insert_with(|| {
                    let mut m = Groups::new();
                    for (i, e) in idx.entries.iter().enumerate() {
                        if e.has(crate::tar::index::F_HARDLINK) {
                            m.entry(e.pos).or_insert_with(|| vec![e.pos]).push(i as u32);
                        }
                    }
                    Arc::new(m)
                })
                .clone()
        };
        groups
            .get(&inode.0)
            .map(|v| {
                v.iter()
                    .filter(|&&e| e != r.entry.0)
                    .map(|&e| LayerRef {
                        layer: r.layer,
                        entry: crate::tar::EntryId(e),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The number the kernel knows `r` by, without counting a reference.
    fn ino_peek(&self, r: &Resolved) -> u64 {
        let fixed = self.origin_ino(r);
        self.nodes.lock().peek(fixed, r.upper.map(|u| u.ino))
    }

    /// `lstat` of the object `r` at `path`, shown as inode `ino`.
    fn stat_of(&self, path: &[Vec<u8>], r: &Resolved, ino: u64) -> io::Result<libc::stat> {
        let mut st = match (&r.upper, &r.lower) {
            (Some(_), _) => {
                let mut st = self.upper_stat(path)?;
                // A metadata-only copy is a hole: its blocks are its layer's
                // (as overlayfs reports them). Fewer blocks than its size
                // needs tell a hole (the marker may take a block of its own).
                if st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_blocks * 512 < st.st_size {
                    if let Ok(Some((_, o))) = self.metacopy_at(path, r) {
                        st.st_blocks = self.stack.stored_blocks(o) as i64;
                    }
                }
                st
            }
            (None, Some(m)) => lower_stat(&self.stack, m),
            (None, None) => return Err(eno(libc::ENOENT)),
        };
        if r.is_merged_dir() {
            st.st_nlink = 1;
        }
        st.st_ino = ino;
        Ok(st)
    }

    /// `lstat` of the upper object at `path`, with its logical attributes.
    pub(super) fn upper_stat(&self, path: &[Vec<u8>]) -> io::Result<libc::stat> {
        let (mut st, logical) = self.upper.stat_logical(path)?;
        self.fix_ids(&mut st, logical);
        Ok(st)
    }

    /// A rootless upper's real ids are host ids (the daemon's): as container
    /// ids they are reported like the layers' and the overrides' ones.
    pub(super) fn fix_ids(&self, st: &mut libc::stat, logical: bool) {
        if self.upper.is_rootless() && !logical {
            st.st_uid = self.opts.ids.uid_in(st.st_uid);
            st.st_gid = self.opts.ids.gid_in(st.st_gid);
        }
    }

    /// Looks `name` up in directory `parent` and counts a kernel reference.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> io::Result<Attr> {
        // FUSE passes names up to 1024 bytes: past NAME_MAX it is ENAMETOOLONG
        // (pjdfstest checks it), never ENOENT.
        if name.len() > crate::tar::index::NAME_MAX {
            return Err(eno(libc::ENAMETOOLONG));
        }
        let mut path = self.path_of(parent)?;
        path.push(name.to_vec());
        let tree = self.tree.read();
        let r = self
            .resolve_in(&tree, &path)
            .ok_or_else(|| eno(libc::ENOENT))?;
        let ino = self.ino_for(&r, parent, name);
        match self.stat_of(&path, &r, ino) {
            Ok(st) => Ok(Attr { ino, st }),
            Err(e) => {
                self.nodes.lock().forget(ino, 1);
                Err(e)
            }
        }
    }

    /// Drops `n` kernel references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        if self.nodes.lock().forget(ino, n) {
            self.io.forgotten(ino);
        }
    }

    /// Attributes of inode `ino` (by its path; an unlinked object still open is
    /// answered from its open handle).
    pub fn getattr(&self, ino: u64) -> io::Result<Attr> {
        let tree = self.tree.read();
        let found = self
            .nodes
            .lock()
            .path(ino)
            .and_then(|p| self.resolve_in(&tree, &p).map(|r| (p, r)));
        match found {
            Some((path, r)) => Ok(Attr {
                ino,
                st: self.stat_of(&path, &r, ino)?,
            }),
            None => {
                drop(tree);
                self.handles
                    .stat_open(ino, &self.stack)
                    .or_else(|| self.io.stat_orphan(ino, self))
                    .map(|st| Attr { ino, st })
                    .ok_or_else(|| eno(libc::ENOENT))
            }
        }
    }

    /// The target of symlink `ino`.
    pub fn readlink(&self, ino: u64) -> io::Result<Vec<u8>> {
        let path = self.path_of(ino)?;
        let r = self.resolve(&path)?;
        if r.kind(&self.stack) != libc::S_IFLNK {
            return Err(eno(libc::EINVAL));
        }
        match (&r.upper, &r.lower) {
            (Some(_), _) => self.upper.readlink(&path),
            (None, Some(m)) => {
                let idx = self.stack.index(m.top);
                Ok(idx.extra(idx.inode_of(m.top.entry)).link.to_vec())
            }
            (None, None) => Err(eno(libc::ENOENT)),
        }
    }

    // ---- directories -------------------------------------------------------

    /// The merged listing of directory `path` (sorted by name, no markers).
    fn list(&self, tree: &UpperTree, path: &[Vec<u8>]) -> io::Result<Vec<ListEntry>> {
        let r = self
            .resolve_in(tree, path)
            .ok_or_else(|| eno(libc::ENOENT))?;
        if !r.is_dir(&self.stack) {
            return Err(eno(libc::ENOTDIR));
        }
        let mut out: Vec<ListEntry> = Vec::new();
        let mut taken: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
        if let Some(u) = &r.upper {
            for (name, e) in tree.children(u.node) {
                taken.insert(name);
                if !e.whiteout {
                    out.push(ListEntry {
                        name: name.to_vec(),
                        kind: e.kind,
                        cookie: handles::cookie(name),
                    });
                }
            }
        }
        if let Some(m) = r.lower_dir() {
            for d in self.stack.read_dir(m) {
                let name = self.stack.name(d.entry);
                if !taken.contains(name) {
                    out.push(ListEntry {
                        name: name.to_vec(),
                        kind: self.stack.rec(d.entry).kind(),
                        cookie: handles::cookie(name),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The listing of directory `ino` in cookie order ([`handles::cookie`];
    /// two names of one cookie, never seen in practice, get consecutive
    /// ones), for a `readdir` with no handle: taken afresh when the reader
    /// starts over (`from_start`), else the last one taken (kept per
    /// directory while the reader goes on; a name made or removed since may
    /// or may not show, as POSIX allows, and no other is skipped or
    /// repeated, whichever listing a later call gets).
    pub fn dir_entries(&self, ino: u64, from_start: bool) -> io::Result<Arc<[ListEntry]>> {
        if !from_start {
            if let Some(l) = self.listings.lock().get(&ino) {
                return Ok(l.clone());
            }
        }
        let path = self.path_of(ino)?;
        let mut list = self.list(&self.tree.read(), &path)?;
        list.sort_unstable_by(|a, b| (a.cookie, &a.name).cmp(&(b.cookie, &b.name)));
        for i in 1..list.len() {
            if list[i].cookie <= list[i - 1].cookie {
                list[i].cookie = list[i - 1].cookie + 1;
            }
        }
        let list: Arc<[ListEntry]> = list.into();
        self.listings.lock().put(ino, list.clone());
        Ok(list)
    }

    /// Forgets the listing [`Overlay::dir_entries`] keeps for `ino` (its
    /// reader reached the end).
    pub fn drop_entries(&self, ino: u64) {
        self.listings.lock().pop(&ino);
    }

    /// The parent directory's inode number of directory `ino` (for `..`).
    pub fn parent_of(&self, ino: u64) -> u64 {
        self.nodes.lock().parent(ino).unwrap_or(inode::ROOT)
    }

    /// The handle `fh` (for the adapter's I/O-mode choice).
    pub fn handle(&self, fh: u64) -> Option<Arc<Handle>> {
        self.handles.get(fh)
    }

    /// Releases any handle.
    pub fn release(&self, fh: u64) {
        self.handles.remove(fh);
    }

    // ---- files -------------------------------------------------------------

    /// Reads from file handle `fh`.
    pub fn read(&self, fh: u64, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        match self.handles.get(fh).as_deref() {
            Some(Handle::Lower(_, r)) => self.stack.layer(r.layer).read(r.entry, off, buf),
            Some(Handle::Upper(_, f)) => crate::tar::scan::read_full(f, buf, off),
            _ => Err(eno(libc::EBADF)),
        }
    }

    /// Writes to file handle `fh`.
    pub fn write(&self, fh: u64, off: u64, data: &[u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let h = self.handles.get(fh);
        match h.as_deref() {
            Some(Handle::Upper(_, f)) => self.retry_full(|| f.write_at(data, off)),
            _ => Err(eno(libc::EBADF)),
        }
    }

    /// `fsync`/`fdatasync` of file handle `fh` (a lower file: nothing to do).
    pub fn fsync(&self, fh: u64, datasync: bool) -> io::Result<()> {
        use std::os::fd::AsFd;
        match self.handles.get(fh).as_deref() {
            Some(Handle::Upper(_, f)) => crate::sys::fsync(f.as_fd(), datasync),
            Some(_) => Ok(()),
            None => Err(eno(libc::EBADF)),
        }
    }

    /// `fallocate` on file handle `fh`.
    pub fn fallocate(&self, fh: u64, mode: i32, off: u64, len: u64) -> io::Result<()> {
        let h = self.handles.get(fh);
        match h.as_deref() {
            Some(Handle::Upper(_, f)) => self.retry_full(|| fileio::fallocate(f, mode, off, len)),
            _ => Err(eno(libc::EBADF)),
        }
    }

    // ---- xattrs ------------------------------------------------------------

    /// The value of xattr `key` of `ino`.
    pub fn getxattr(&self, ino: u64, key: &[u8]) -> io::Result<Vec<u8>> {
        let path = self.path_of(ino)?;
        let r = self.resolve(&path)?;
        match (&r.upper, &r.lower) {
            // A file with an open fd cached (written or created through
            // this mount) answers with one syscall: the first write to every
            // file brings a `security.capability` query (the kernel's
            // `file_remove_privs`), right after its open or create.
            (Some(u), _) if !is_private_xattr(key) => match self.io.cached(u.ino) {
                Some(f) => crate::sys::fgetxattr(std::os::fd::AsFd::as_fd(&*f), key),
                None => self.upper.get_xattr(&path, key),
            },
            (Some(_), _) => self.upper.get_xattr(&path, key),
            (None, Some(m)) => {
                if is_private_xattr(key) {
                    return Err(eno(libc::ENODATA));
                }
                let idx = self.stack.index(m.top);
                idx.extra(idx.inode_of(m.top.entry))
                    .xattrs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.to_vec())
                    .ok_or_else(|| eno(libc::ENODATA))
            }
            (None, None) => Err(eno(libc::ENOENT)),
        }
    }

    /// Where `ino` comes from, for the virtual provenance xattrs (the adapter
    /// answers those, before [`Overlay::getxattr`], which reads the private
    /// `user.unionfs.*` as absent). An upper object has no layer, and shadows
    /// every layer with an entry at its path but the lower directories merged
    /// into it; a lower one is the stack's business ([`Stack::provenance`]).
    pub fn provenance(&self, ino: u64) -> io::Result<Provenance> {
        let path = self.path_of(ino)?;
        let r = self.resolve(&path)?;
        let joined = path.join(&b'/');
        match (&r.upper, &r.lower) {
            (Some(_), _) => {
                let merged = r.lower_dir().map(Merged::shown_layers);
                Ok(Provenance {
                    layer: None,
                    shadows: self.stack.shadows(&joined, &merged.unwrap_or_default()),
                })
            }
            (None, Some(m)) => Ok(self.stack.provenance(m, &joined)),
            (None, None) => Err(eno(libc::ENOENT)),
        }
    }

    /// The xattr names of `ino`, each followed by a NUL.
    pub fn listxattr(&self, ino: u64) -> io::Result<Vec<u8>> {
        let path = self.path_of(ino)?;
        let r = self.resolve(&path)?;
        let names: Vec<Vec<u8>> = match (&r.upper, &r.lower) {
            (Some(_), _) => self.upper.list_xattr(&path)?,
            (None, Some(m)) => {
                let idx = self.stack.index(m.top);
                idx.extra(idx.inode_of(m.top.entry))
                    .xattrs
                    .iter()
                    .filter(|(k, _)| !is_private_xattr(k))
                    .map(|(k, _)| k.to_vec())
                    .collect()
            }
            (None, None) => return Err(eno(libc::ENOENT)),
        };
        let mut out = Vec::new();
        for n in names {
            out.extend_from_slice(&n);
            out.push(0);
        }
        Ok(out)
    }

    /// `statfs` of the upper filesystem (where writes go).
    pub fn statfs(&self) -> io::Result<libc::statvfs> {
        use std::os::fd::AsRawFd;
        let mut sv: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid directory fd and a valid out pointer.
        let rc = unsafe { libc::fstatvfs(self.upper.root_fd().as_raw_fd(), &mut sv) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sv)
    }
}

/// The inode number of the lower object `r`: from its layer and its inode
/// entry (a hard link's target), so every name of a lower hard link is one
/// inode, as on a read-only mount.
fn lower_ino(stack: &Stack, r: LayerRef) -> u64 {
    let entry = stack.index(r).inode_of(r.entry);
    name_ino(LayerRef {
        layer: r.layer,
        entry,
    })
}

/// The number derived from a layer and an entry.
fn name_ino(r: LayerRef) -> u64 {
    if r.entry == crate::tar::EntryId::ROOT {
        return inode::ROOT;
    }
    ((u64::from(r.layer.0) + 1) << 32) | u64::from(r.entry.0)
}

/// The `lstat` the read-only mount reports for a lower object.
fn lower_stat(stack: &Stack, m: &Merged) -> libc::stat {
    let r = m.top;
    let e = stack.meta(r);
    let idx = stack.index(r);
    // SAFETY: all-zero is a valid `libc::stat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    st.st_mode = e.mode;
    st.st_uid = e.uid;
    st.st_gid = e.gid;
    let nsec = i64::from(e.mtime_nsec);
    st.st_mtime = e.mtime;
    st.st_mtime_nsec = nsec;
    st.st_atime = e.mtime;
    st.st_atime_nsec = nsec;
    st.st_ctime = e.mtime;
    st.st_ctime_nsec = nsec;
    st.st_blksize = 4096;
    match e.mode & libc::S_IFMT {
        libc::S_IFDIR => {
            st.st_size = 4096;
            st.st_blocks = 8;
            st.st_nlink = u64::from(inode::nlink_of(stack, m));
        }
        libc::S_IFREG => {
            st.st_size = e.size as i64;
            st.st_blocks = stack.stored_blocks(r) as i64;
            st.st_nlink = u64::from(e.nlink.max(1));
        }
        libc::S_IFCHR | libc::S_IFBLK => {
            let (a, b) = idx.extra(idx.inode_of(r.entry)).rdev;
            st.st_rdev = libc::makedev(a, b);
            st.st_nlink = u64::from(e.nlink.max(1));
        }
        _ => {
            st.st_size = e.size as i64;
            st.st_nlink = u64::from(e.nlink.max(1));
        }
    }
    st
}

/// The metadata of a lower object to reproduce on copy-up.
fn lower_meta(stack: &Stack, r: LayerRef) -> Meta {
    let e = stack.meta(r);
    let idx = stack.index(r);
    let x = idx.extra(idx.inode_of(r.entry));
    let nsec = e.mtime_nsec;
    Meta {
        mode: e.mode & 0o7777,
        uid: e.uid,
        gid: e.gid,
        atime: (e.mtime, nsec),
        mtime: (e.mtime, nsec),
        xattrs: x
            .xattrs
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect(),
        placeholder: None,
        private: None,
    }
}
