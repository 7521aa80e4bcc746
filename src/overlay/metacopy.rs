//! Metadata-only copy-up (`-o metacopy=on`, as kernel overlayfs's option).
//!
//! A chmod, chown, utimes or xattr change of a lower file copies up only its
//! metadata: the upper file gets the lower file's size as a hole, its
//! attributes and xattrs, and the marker [`METACOPY_XATTR`] saying where its
//! data is: `LABEL` NUL `PATH`, the layer's label (its diffID for an image
//! layer, the tar's absolute path for a loose one) and the entry's path in
//! that layer. Reads of such a file come from the layer; the first write,
//! truncate or `fallocate` copies the data in.
//!
//! The data goes into the same upper inode (so names linked to it and its
//! attributes stay), then is `fsync`ed, then the times are put back and the
//! marker removed: until the marker goes, reads still come from the layer,
//! so a crash in between leaves a file that reads right and is filled again
//! at its next write. The marker is found by reading the xattr when an upper
//! file is opened (once per file while its fd is cached), whether or not the
//! mount has `metacopy=on`: an upper made with it reads right without.
//!
//! A layer missing from the stack at a later mount (another image, a moved
//! tar) makes reads of its metacopy files fail with EIO and a log line naming
//! the file and the layer, never a file of zeros. `commit`, `export` and
//! `diff` write such files whole (`commit::UpperObject`). Off by default: a
//! plain upper is a self-contained layer (`tar -C UPPER -c .` is complete);
//! with metacopy it is not.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;

use super::{eno, Overlay};
use crate::stack::{LayerRef, Stack};
use crate::tar::EntryId;

/// The marker xattr of a metadata-only copy (private: never listed, read or
/// set through the mount).
pub const METACOPY_XATTR: &[u8] = b"user.unionfs.metacopy";

/// The marker's value for the entry at `path` in the layer labelled `label`.
pub fn encode(label: &str, path: &[u8]) -> Vec<u8> {
    let mut v = label.as_bytes().to_vec();
    v.push(0);
    v.extend_from_slice(path);
    v
}

/// The label and the path of a marker's value.
pub fn decode(v: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = v.iter().position(|&b| b == 0)?;
    Some((&v[..i], &v[i + 1..]))
}

/// The entry of the layer labelled as `marker` says, at its path (the
/// topmost layer of that label: a layer may be stacked twice), if `stack`
/// has it and it is a regular file. `labels`: each layer's, bottom first
/// ([`crate::layers::copy_labels`]).
pub fn find_origin(stack: &Stack, labels: &[String], marker: &[u8]) -> Option<LayerRef> {
    let (label, lpath) = decode(marker)?;
    labels
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, l)| l.as_bytes() == label)
        .find_map(|(i, _)| {
            let layer = crate::stack::LayerId(u16::try_from(i).ok()?);
            let entry: EntryId = stack.layer(layer).index.lookup_path(lpath)?;
            let r = LayerRef { layer, entry };
            (stack.rec(r).kind() == libc::S_IFREG).then_some(r)
        })
}

/// Says what is wrong with a marker that [`find_origin`] cannot follow.
pub fn missing(marker: &[u8]) -> String {
    match decode(marker) {
        Some((label, lpath)) => format!(
            "a metadata-only copy (metacopy=on) whose data is {} in layer {}, which is not among the layers given",
            String::from_utf8_lossy(lpath),
            String::from_utf8_lossy(label)
        ),
        None => format!(
            "a malformed {} marker: its data cannot be found",
            String::from_utf8_lossy(METACOPY_XATTR)
        ),
    }
}

impl Overlay {
    /// The marker for a metadata-only copy of lower entry `r` (`None` if its
    /// layer has no label).
    pub(super) fn metacopy_marker(&self, r: LayerRef) -> Option<Vec<u8>> {
        let label = self.opts.labels.get(usize::from(r.layer.0))?;
        Some(encode(label, &self.stack.index(r).path_of(r.entry)))
    }

    /// The layer entry holding the data of upper file `f` (at `path`), if it
    /// is a metadata-only copy.
    pub(super) fn metacopy_origin(
        &self,
        f: &File,
        path: &[Vec<u8>],
    ) -> io::Result<Option<LayerRef>> {
        let v = match crate::sys::fgetxattr(f.as_fd(), METACOPY_XATTR) {
            Ok(v) => v,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODATA | libc::EOPNOTSUPP)) => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        match find_origin(&self.stack, &self.opts.labels, &v) {
            Some(r) => Ok(Some(r)),
            None => {
                log::error!(target: "unionfs::overlay", "{}: {}",
                    String::from_utf8_lossy(&path.join(&b'/')), missing(&v));
                Err(eno(libc::EIO))
            }
        }
    }

    /// The upper file at `path` (resolved as `r`) and the layer entry with
    /// its data, if it is a metadata-only copy.
    pub(super) fn metacopy_at(
        &self,
        path: &[Vec<u8>],
        r: &super::Resolved,
    ) -> io::Result<Option<(std::sync::Arc<File>, LayerRef)>> {
        match &r.upper {
            Some(u) if u.kind == libc::S_IFREG && !u.whiteout => {
                let (f, o) = self.upper_fd(path, u.ino)?;
                Ok(o.map(|o| (f, o)))
            }
            _ => Ok(None),
        }
    }

    /// Copies the data of the metadata-only copy `f` (at `path`) in from
    /// `origin`, in place (see the module docs for the order).
    pub(super) fn fill_metacopy(&self, f: &File, origin: LayerRef) -> io::Result<()> {
        let st = crate::sys::fstat(f.as_fd())?;
        // Keyed apart from lower copy-up locks (lower numbers have bit 63
        // clear and a layer above bit 32; this is a plain st_ino with bit 62).
        let lock = self.copy_lock(st.st_ino | (1 << 62));
        let _g = lock.lock();
        match crate::sys::fgetxattr(f.as_fd(), METACOPY_XATTR) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => return Ok(()), // filled meanwhile
            Err(e) => return Err(e),
        }
        let rec = self.stack.rec(origin);
        let idx = self.stack.index(origin);
        let extra = idx.extra(idx.inode_of(origin.entry));
        let sparse = rec
            .has(crate::tar::index::F_SPARSE)
            .then_some(extra.sparse.as_slice());
        let layer = self.stack.layer(origin.layer);
        let data = |off: u64, buf: &mut [u8]| layer.read(origin.entry, off, buf);
        crate::upper::copy_up::copy_data(f, &data, self.stack.meta(origin).size, sparse)?;
        if !self.upper.is_volatile() {
            crate::sys::fsync(f.as_fd(), true)?;
        }
        super::write::restore_times(f, &st)?;
        self.unmark_metacopy(f)?;
        if !self.upper.is_volatile() {
            crate::sys::fsync(f.as_fd(), false)?;
        }
        Ok(())
    }

    /// Removes the marker of `f`, whose data is now its own (filled, or
    /// truncated to 0), and forgets its cached fd (cached with the marker).
    pub(super) fn unmark_metacopy(&self, f: &File) -> io::Result<()> {
        crate::sys::fremovexattr(f.as_fd(), METACOPY_XATTR)?;
        self.io.drop_upper(crate::sys::fstat(f.as_fd())?.st_ino);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_round_trips_any_path() {
        let v = encode("sha256:ab", b"usr/bin/a\nb:c");
        assert_eq!(
            decode(&v),
            Some((&b"sha256:ab"[..], &b"usr/bin/a\nb:c"[..]))
        );
        assert_eq!(decode(b"no separator"), None);
    }
}
