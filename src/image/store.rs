//! Where an image's files are: an OCI layout directory, or an archive (a
//! `docker save` archive, an OCI archive) whose members are read in place.
//!
//! A [`Store`] answers "the bytes at this path" as a [`Blob`], a byte range
//! that is never copied. In an archive the path is looked up in the archive's
//! own index (the outer tar is indexed once, like any layer) and symlinks
//! *inside the archive* are followed — skopeo's `docker-archive:` writes
//! `<id>/layer.tar` as a symlink to `<digest>.tar` — but never out of it: an
//! absolute target, or a `..` that climbs above the archive's root, is an
//! error, never a host file. In a directory, paths are opened beneath the
//! directory with no symlink followed at all.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::blob::Blob;
use crate::error::{Error, Result};
use crate::tar::index::{LayerIndex, F_HARDLINK, F_SPARSE};
use crate::tar::{EntryId, IndexOptions, TarLayer};

/// Largest JSON document read (manifests, configs, indexes): docker and the
/// distribution registry refuse manifests over 4 MiB; configs with a long
/// history can be larger.
pub const MAX_JSON: u64 = 32 << 20;

/// A place holding an image's files, by path.
pub trait Store: Send + Sync {
    /// The archive or directory, for messages.
    fn path(&self) -> &Path;
    /// The bytes of the file at `rel` (relative, `/`-separated), or `Ok(None)`
    /// if there is none.
    fn blob(&self, rel: &str) -> Result<Option<Blob>>;
    /// The bytes of document `digest` (a manifest or index if `manifest`,
    /// else a config), unchecked, or `Ok(None)` if there is none. A layout
    /// or an archive keeps both as blobs.
    fn document(&self, digest: &str, manifest: bool) -> Result<Option<Vec<u8>>> {
        let _ = manifest;
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        read_small(self, &format!("blobs/sha256/{hex}"))
    }
    /// The layer blob at `rel`, whose manifest says it has `digest` and
    /// `size` bytes (a registry needs both to read it without asking).
    fn layer(&self, rel: &str, digest: &str, size: u64) -> Result<Option<Blob>> {
        let _ = (digest, size);
        self.blob(rel)
    }
    /// The name messages give the file at `rel`: `STORE:rel`.
    fn name(&self, rel: &str) -> PathBuf {
        PathBuf::from(format!("{}:{rel}", self.path().display()))
    }
}

/// Reads the small file at `rel` whole (at most [`MAX_JSON`] bytes); `Ok(None)`
/// if absent.
pub fn read_small<S: Store + ?Sized>(store: &S, rel: &str) -> Result<Option<Vec<u8>>> {
    let Some(b) = store.blob(rel)? else {
        return Ok(None);
    };
    if b.len() > MAX_JSON {
        return Err(image_err(
            store.name(rel),
            format!(
                "is {} bytes, more than the {MAX_JSON} a manifest or config may have",
                b.len()
            ),
        ));
    }
    let mut v = vec![0u8; b.len() as usize];
    crate::tar::scan::read_exact_at(&b, &mut v, 0).map_err(|e| Error::io(store.name(rel), e))?;
    Ok(Some(v))
}

/// An error about a file of an image.
pub fn image_err(path: PathBuf, reason: String) -> Error {
    Error::Image { path, reason }
}

/// Splits a relative path into components, refusing absolute paths and `..`
/// (a path an image document gives must stay inside the image).
fn components(rel: &str) -> Option<Vec<&str>> {
    if rel.starts_with('/') {
        return None;
    }
    let parts: Vec<&str> = rel
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    (!parts.contains(&"..")).then_some(parts)
}

/// An OCI image layout directory (or a directory holding an unpacked
/// `docker save` archive).
pub struct DirStore {
    path: PathBuf,
    dir: OwnedFd,
}

impl DirStore {
    /// Opens the directory `path`.
    pub fn open(path: &Path) -> Result<DirStore> {
        let dir = crate::sys::open_dir_path(path).map_err(|e| Error::io(path, e))?;
        Ok(DirStore {
            path: path.to_owned(),
            dir,
        })
    }
}

impl Store for DirStore {
    fn path(&self) -> &Path {
        &self.path
    }

    fn blob(&self, rel: &str) -> Result<Option<Blob>> {
        let Some(parts) = components(rel) else {
            return Err(image_err(
                self.name(rel),
                "the path leads out of the image directory (absolute, or through ..)".into(),
            ));
        };
        let joined = parts.join("/");
        let fd = match crate::sys::openat_beneath(self.dir.as_fd(), joined.as_bytes(), libc::O_RDONLY) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(image_err(
                    self.name(rel),
                    "is or goes through a symlink; unionfs does not follow symlinks in an image directory".into(),
                ))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                match File::open(self.path.join(&joined)) {
                    Ok(f) => f.into(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(Error::io(self.name(rel), e)),
                }
            }
            Err(e) => return Err(Error::io(self.name(rel), e)),
        };
        let f = File::from(fd);
        let meta = f.metadata().map_err(|e| Error::io(self.name(rel), e))?;
        if !meta.is_file() {
            return Err(image_err(self.name(rel), "is not a regular file".into()));
        }
        Blob::whole(f)
            .map(Some)
            .map_err(|e| Error::io(self.name(rel), e))
    }
}

/// An archive (a tar) holding an image: its members are served in place.
pub struct ArchiveStore {
    outer: TarLayer,
    file: Arc<File>,
}

/// How many symlinks one lookup may follow (Linux's `MAXSYMLINKS`).
const MAX_HOPS: usize = 40;

impl ArchiveStore {
    /// Indexes (or loads the index of) the archive at `path`.
    pub fn open(path: &Path, opts: &IndexOptions) -> Result<ArchiveStore> {
        let mut opts = opts.clone();
        opts.members = false;
        let outer = TarLayer::open(path, &opts)?;
        let file = Arc::new(
            outer
                .source()
                .file()
                .expect("an archive is a local file")
                .try_clone()
                .map_err(|e| Error::io(path, e))?,
        );
        Ok(ArchiveStore { outer, file })
    }

    /// The archive's own index.
    pub fn index(&self) -> &LayerIndex {
        &self.outer.index
    }

    /// Resolves `rel`, following symlinks inside the archive; `Ok(None)` if
    /// nothing is there.
    fn resolve(&self, rel: &str) -> Result<Option<EntryId>> {
        let idx = &self.outer.index;
        let escape = |why: &str| {
            image_err(
                self.name(rel),
                format!("{why}: unionfs follows links inside the archive only"),
            )
        };
        let Some(first) = components(rel) else {
            return Err(escape(
                "the path leads out of the archive (absolute, or through ..)",
            ));
        };
        // The directories walked so far (the root first), for `..`.
        let mut dirs = vec![EntryId::ROOT];
        let mut todo: Vec<Vec<u8>> = first.iter().rev().map(|c| c.as_bytes().to_vec()).collect();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            if c.is_empty() || c == b"." {
                continue;
            }
            if c == b".." {
                if dirs.len() == 1 {
                    return Err(escape("a symlink leads out of the archive (through ..)"));
                }
                dirs.pop();
                continue;
            }
            let cur = *dirs.last().expect("root stays");
            let Some(e) = idx.child(cur, &c) else {
                return Ok(None);
            };
            let rec = idx.entry(e);
            if rec.is_whiteout() {
                return Ok(None);
            }
            if rec.kind() == libc::S_IFLNK {
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(escape("too many levels of symlinks"));
                }
                let target = idx.extra(e).link.to_vec();
                if target.starts_with(b"/") {
                    return Err(escape(&format!(
                        "a symlink points to the absolute path {}",
                        String::from_utf8_lossy(&target)
                    )));
                }
                for t in target.split(|&b| b == b'/').rev() {
                    todo.push(t.to_vec());
                }
                continue;
            }
            if todo.iter().any(|t| !t.is_empty() && t != b".") && !rec.is_dir() {
                return Ok(None);
            }
            dirs.push(e);
        }
        let last = *dirs.last().expect("root stays");
        Ok((last != EntryId::ROOT).then_some(last))
    }
}

impl Store for ArchiveStore {
    fn path(&self) -> &Path {
        &self.outer.path
    }

    fn blob(&self, rel: &str) -> Result<Option<Blob>> {
        let Some(e) = self.resolve(rel)? else {
            return Ok(None);
        };
        let idx = &self.outer.index;
        let ino = idx.inode_of(e);
        let rec = idx.entry(ino);
        if rec.kind() != libc::S_IFREG {
            return Err(image_err(
                self.name(rel),
                "is not a regular file in the archive".into(),
            ));
        }
        if rec.has(F_SPARSE) {
            return Err(image_err(
                self.name(rel),
                "is stored as a sparse file in the archive, so its bytes are not one range; extract it first".into(),
            ));
        }
        debug_assert!(!rec.has(F_HARDLINK));
        let m = idx.meta(ino);
        Ok(Some(Blob::range(self.file.clone(), m.data_off, m.size)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_refuse_escapes() {
        assert_eq!(components("a/./b//c"), Some(vec!["a", "b", "c"]));
        assert_eq!(components("/etc/passwd"), None);
        assert_eq!(components("a/../../b"), None);
    }
}
