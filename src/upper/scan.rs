//! Loading an [`UpperTree`] from an upper directory on disk.
//!
//! Owns the reading of both whiteout formats, whatever format the upper is
//! configured to write, so that an upper made by hand, by an earlier mount in the
//! other format, or by kernel overlayfs is understood:
//! - `.wh.NAME` (any file type) and a 0/0 character device `NAME` are whiteouts
//!   of NAME; `.wh..wh..opq`, or `trusted.overlay.opaque=y` /
//!   `user.overlay.opaque=y` on a directory, make it opaque; other `.wh..wh.*`
//!   names (aufs bookkeeping) and a bare `.wh.` are ignored.
//! - A real entry next to its own whiteout (`X` and `.wh.X`: left by a crash
//!   between the two steps of a create or delete, see `ops.rs`) is that entry;
//!   when it is a directory it is also opaque — the whiteout said the lower one
//!   is gone. (Same rule as a tar layer holding both, `tar/index.rs`.)
//!
//! The walk never follows a symlink and holds about one directory fd per level.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::rc::Rc;
use std::{ffi::OsStr, io};

use super::tree::{UNodeId, UpperTree};
use super::whiteout::dir_is_opaque;
use super::OPAQUE_XATTRS;
use super::{is_whiteout, Upper};
use crate::error::{Error, Result};
use crate::sys;
use crate::whiteout::{classify, Class};

impl UpperTree {
    /// Reads the whole upper directory into a tree (see the module docs).
    pub fn scan(upper: &Upper) -> Result<UpperTree> {
        let root = upper.root_fd();
        let st = sys::fstat(root).map_err(|e| Error::io(upper.path(), e))?;
        let mut t = UpperTree::new(st.st_ino);
        if dir_is_opaque(root) {
            t.set_opaque(UNodeId::ROOT, true);
        }
        // getdents' d_ino is st_ino except on overlayfs (a merged directory
        // may report the lower inode): stat there.
        const OVERLAYFS_MAGIC: i64 = 0x794c_7630;
        let dirents = sys::fs_type(root).is_ok_and(|t| t != OVERLAYFS_MAGIC);
        let root = Rc::new(
            root.try_clone_to_owned()
                .map_err(|e| Error::io(upper.path(), e))?,
        );
        let mut pending: Vec<(UNodeId, Rc<OwnedFd>, Vec<u8>)> = Vec::new();
        let subdirs = scan_dir(&mut t, UNodeId::ROOT, root.as_fd(), dirents)
            .map_err(|e| Error::io(upper.path(), e))?;
        pending.extend(subdirs.into_iter().map(|(id, n)| (id, root.clone(), n)));
        while let Some((id, parent, name)) = pending.pop() {
            let err = |t: &UpperTree, e| Error::io(rel_path(upper, t, id), e);
            // Opened for reading (not O_PATH): getdents and fgetxattr on the
            // fd itself, no /proc lookups and no second open per directory.
            let fd = sys::openat(parent.as_fd(), &name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                .map_err(|e| err(&t, e))?;
            // The marker file, if any, is among the entries scan_dir reads.
            if OPAQUE_XATTRS
                .iter()
                .any(|k| sys::fgetxattr(fd.as_fd(), k).is_ok_and(|v| v == b"y"))
            {
                t.set_opaque(id, true);
            }
            let entries = sys::read_dir_fresh(fd.as_fd()).map_err(|e| err(&t, e))?;
            let subdirs =
                scan_entries(&mut t, id, fd.as_fd(), entries, dirents).map_err(|e| err(&t, e))?;
            let fd = Rc::new(fd);
            pending.extend(subdirs.into_iter().map(|(c, n)| (c, fd.clone(), n)));
        }
        log::debug!(target: "unionfs::upper", "{}: {} upper nodes", upper.path().display(), t.len());
        Ok(t)
    }
}

/// The on-disk path of node `id`, for an error message.
fn rel_path(upper: &Upper, t: &UpperTree, id: UNodeId) -> PathBuf {
    let mut p = upper.path().to_owned();
    for c in t.path(id).unwrap_or_default() {
        p.push(OsStr::from_bytes(&c));
    }
    p
}

/// `S_IFMT` bits of a `d_type` that says enough (`None`: a character device,
/// which may be a whiteout, or a filesystem that does not say).
fn kind_of_dtype(t: u8) -> Option<u32> {
    Some(match t {
        libc::DT_DIR => libc::S_IFDIR,
        libc::DT_REG => libc::S_IFREG,
        libc::DT_LNK => libc::S_IFLNK,
        libc::DT_FIFO => libc::S_IFIFO,
        libc::DT_SOCK => libc::S_IFSOCK,
        libc::DT_BLK => libc::S_IFBLK,
        _ => return None,
    })
}

/// Records the entries of directory `fd` (node `id`); returns its
/// subdirectories. With `dirents`, an entry's type and inode number come from
/// `getdents` (no `stat`), except for character devices (whiteouts are told
/// by their device number) and unknown types.
fn scan_dir(
    t: &mut UpperTree,
    id: UNodeId,
    fd: BorrowedFd<'_>,
    dirents: bool,
) -> io::Result<Vec<(UNodeId, Vec<u8>)>> {
    let entries = sys::read_dir_entries(fd)?;
    scan_entries(t, id, fd, entries, dirents)
}

/// [`scan_dir`] of entries already read.
fn scan_entries(
    t: &mut UpperTree,
    id: UNodeId,
    fd: BorrowedFd<'_>,
    entries: Vec<(Vec<u8>, u8, u64)>,
    dirents: bool,
) -> io::Result<Vec<(UNodeId, Vec<u8>)>> {
    let mut subdirs = Vec::new();
    // (target, kind, ino) of whiteouts.
    let mut whiteouts: Vec<(Vec<u8>, u32, u64)> = Vec::new();
    for (name, dtype, d_ino) in entries {
        let (kind, ino, whiteout) = match kind_of_dtype(dtype).filter(|_| dirents) {
            Some(k) => (k, d_ino, false),
            None => match sys::statat(fd, &name) {
                Ok(st) => (st.st_mode & libc::S_IFMT, st.st_ino, is_whiteout(&st)),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(e),
            },
        };
        match classify(&name) {
            Class::Plain if whiteout => whiteouts.push((name, kind, ino)),
            Class::Plain => {
                if let Some(n) = t.insert(id, &name, kind, ino) {
                    if kind == libc::S_IFDIR {
                        subdirs.push((n, name));
                    }
                }
            }
            Class::Whiteout(target) => whiteouts.push((target.to_vec(), kind, ino)),
            Class::Opaque => {
                t.set_opaque(id, true);
            }
            Class::Meta | Class::Empty => {
                log::debug!(target: "unionfs::upper", "ignoring {:?} in the upper", String::from_utf8_lossy(&name));
            }
        }
    }
    // After the real entries, so that an entry next to its whiteout wins.
    for (target, kind, ino) in whiteouts {
        apply_whiteout(t, id, &target, kind, ino);
    }
    Ok(subdirs)
}

/// Records a whiteout of `dir/target` found on disk (its marker's kind and
/// inode number).
fn apply_whiteout(t: &mut UpperTree, dir: UNodeId, target: &[u8], kind: u32, ino: u64) {
    match t.lookup(dir, target) {
        Some(e) if e.is_dir() => {
            t.set_opaque(e.node, true);
        }
        Some(e) if !e.whiteout => {}
        _ => {
            t.set_whiteout(dir, target, kind, ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::super::testutil::*;
    use super::super::{Owner, WhiteoutFormat};
    use super::*;

    /// Every node as "path kind flags ino", depth first in name order.
    fn dump(t: &UpperTree) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![UNodeId::ROOT];
        while let Some(id) = stack.pop() {
            let e = t.get(id).unwrap();
            let path: Vec<String> = t
                .path(id)
                .unwrap()
                .iter()
                .map(|c| String::from_utf8_lossy(c).into())
                .collect();
            let flags = format!(
                "{}{}",
                if e.whiteout { "W" } else { "" },
                if e.opaque { "O" } else { "" }
            );
            out.push(format!(
                "/{} {:o} {flags} {}",
                path.join("/"),
                e.kind >> 12,
                e.ino
            ));
            let kids: Vec<UNodeId> = t.children(id).map(|(_, e)| e.node).collect();
            stack.extend(kids.into_iter().rev());
        }
        out
    }

    fn names(t: &UpperTree, path: &str) -> Vec<String> {
        let id = t.resolve(&p(path)).unwrap();
        t.children(id)
            .map(|(n, e)| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(n),
                    if e.whiteout { "(wh)" } else { "" }
                )
            })
            .collect()
    }

    #[test]
    fn scan_reads_both_formats_whatever_the_configured_one() {
        for fmt in [WhiteoutFormat::Oci, WhiteoutFormat::Overlay] {
            let f = Fixture::new(fmt);
            for d in ["a", "b", "c", "d", "xonly", "e/f/g/h", ".wh..wh.plnk"] {
                std::fs::create_dir_all(f.up(d)).unwrap();
            }
            for n in [
                "a/.wh..wh..opq",
                "a/file",
                ".wh.gone",
                "x",
                ".wh.x",
                ".wh.d",
                ".wh.",
                "e/f/g/h/deep",
                "h1",
            ] {
                std::fs::write(f.up(n), b"").unwrap();
            }
            std::fs::hard_link(f.up("h1"), f.up("h2")).unwrap();
            set_xattr(&f.up("b"), b"trusted.overlay.opaque", b"y");
            set_xattr(&f.up("c"), b"user.overlay.opaque", b"y");
            set_xattr(&f.up("xonly"), b"trusted.overlay.opaque", b"x");
            mknod(&f.up("gone2"), libc::S_IFCHR, 0);
            mknod(&f.up("null"), libc::S_IFCHR | 0o666, libc::makedev(1, 3));
            std::os::unix::fs::symlink("/etc", f.up("l")).unwrap();
            let t = UpperTree::scan(&f.upper).unwrap();
            assert_eq!(
                names(&t, ""),
                [
                    "a",
                    "b",
                    "c",
                    "d",
                    "e",
                    "gone(wh)",
                    "gone2(wh)",
                    "h1",
                    "h2",
                    "l",
                    "null",
                    "x",
                    "xonly"
                ],
                "{fmt:?}"
            );
            let get = |path: &str| t.get(t.resolve(&p(path)).unwrap()).unwrap();
            assert!(get("a").opaque && get("b").opaque && get("c").opaque);
            assert!(
                get("d").opaque,
                "a directory next to its own whiteout is opaque"
            );
            assert!(!get("xonly").opaque && !get("e").opaque);
            assert!(
                !get("x").whiteout,
                "an entry next to its own whiteout is that entry"
            );
            assert_eq!(get("l").kind, libc::S_IFLNK);
            assert_eq!(get("h1").ino, get("h2").ino);
            assert_eq!(get("e/f/g/h/deep").ino, lstat(&f.up("e/f/g/h/deep")).ino());
            assert_eq!(get("").ino, lstat(&f.up("")).ino());
            assert_eq!(names(&t, "a"), ["file"]);
            let gone = t.lookup(UNodeId::ROOT, b"gone").unwrap();
            assert_eq!(
                (gone.kind, gone.ino),
                (libc::S_IFREG, lstat(&f.up(".wh.gone")).ino())
            );
            assert_eq!(
                t.lookup(UNodeId::ROOT, b"gone2").unwrap().kind,
                libc::S_IFCHR
            );
        }
    }

    #[test]
    fn scan_of_an_empty_upper_and_an_opaque_root() {
        let f = Fixture::new(WhiteoutFormat::Oci);
        let t = UpperTree::scan(&f.upper).unwrap();
        assert!(t.is_empty() && !t.get(UNodeId::ROOT).unwrap().opaque);
        f.upper.set_opaque(&p("")).unwrap();
        assert!(
            UpperTree::scan(&f.upper)
                .unwrap()
                .get(UNodeId::ROOT)
                .unwrap()
                .opaque
        );
    }

    /// Operations applied to the disk and, as the FUSE core will, to a tree:
    /// a fresh scan must read back the same tree.
    #[test]
    fn a_tree_kept_in_step_matches_a_rescan() {
        for fmt in [WhiteoutFormat::Oci, WhiteoutFormat::Overlay] {
            let f = Fixture::new(fmt);
            let u = &f.upper;
            let mut t = UpperTree::scan(u).unwrap();
            let r = UNodeId::ROOT;
            let own = Some(Owner { uid: 3, gid: 4 });
            let d = u.mkdir(&p(""), b"d", 0o755, own).unwrap();
            let dn = t.insert(r, b"d", d.stat.st_mode, d.stat.st_ino).unwrap();
            let (_, nf) = u
                .create_file(&p("d"), b"f", libc::O_WRONLY, 0o644, own)
                .unwrap();
            t.insert(dn, b"f", nf.stat.st_mode, nf.stat.st_ino).unwrap();
            let w = u.write_whiteout(&p("d"), b"lower").unwrap();
            t.set_whiteout(dn, b"lower", w.st_mode, w.st_ino).unwrap();
            let w = u.replace_with_whiteout(&p("d"), b"f").unwrap();
            t.set_whiteout(dn, b"f", w.st_mode, w.st_ino).unwrap();
            let nd = u.mkdir(&p("d"), b"f", 0o700, None).unwrap();
            assert!(nd.replaced_whiteout);
            let id = t.insert(dn, b"f", nd.stat.st_mode, nd.stat.st_ino).unwrap();
            t.set_opaque(id, true);
            u.rename(&p(""), b"d", &p(""), b"e", 0).unwrap();
            t.rename(r, b"d", r, b"e").unwrap();
            let s = u.symlink(&p("e/f"), b"s", b"/etc", None).unwrap();
            t.insert(id, b"s", s.stat.st_mode, s.stat.st_ino).unwrap();
            u.unlink(&p("e/f"), b"s").unwrap();
            t.remove(id, b"s");
            assert_eq!(dump(&t), dump(&UpperTree::scan(u).unwrap()), "{fmt:?}");
            assert_eq!(dump(&t).len(), 4);
        }
    }
}
