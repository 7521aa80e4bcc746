//! Test helpers for `upper/`: tempdir fixtures, a tmpfs guard, inspection of
//! what is on disk. Test-only; owns no behaviour.

use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Upper, WhiteoutFormat};
use crate::sys;

/// An upper directory `<tmp>/upper` (work dir: the default sibling).
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub upper: Upper,
}

impl Fixture {
    pub fn new(format: WhiteoutFormat) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("upper")).unwrap();
        let upper = Upper::open(&dir.path().join("upper"), None, format).unwrap();
        Fixture { dir, upper }
    }
    /// A path in the upper.
    pub fn up(&self, rel: &str) -> PathBuf {
        let base = self.dir.path().join("upper");
        if rel.is_empty() {
            base
        } else {
            base.join(rel)
        }
    }
    pub fn work(&self) -> PathBuf {
        self.dir.path().join(".upper.unionfs-work")
    }
    /// Names in the work dir but the shared whiteout (`whiteout.rs`): temp
    /// files, which must never be left there.
    pub fn work_names(&self) -> Vec<String> {
        ls(&self.work())
            .into_iter()
            .filter(|n| !n.starts_with("unionfs-whiteout."))
            .collect()
    }
}

/// Splits "a/b/c" into components ("" = the root).
pub fn p(s: &str) -> Vec<Vec<u8>> {
    s.split('/')
        .filter(|c| !c.is_empty())
        .map(|c| c.as_bytes().to_vec())
        .collect()
}

/// Sorted names in a directory.
pub fn ls(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub fn lstat(path: &Path) -> std::fs::Metadata {
    std::fs::symlink_metadata(path).unwrap()
}

pub fn kind(path: &Path) -> u32 {
    lstat(path).mode() & libc::S_IFMT
}

/// An xattr of `path` itself (a symlink is not followed).
pub fn xattr(path: &Path, key: &[u8]) -> Option<Vec<u8>> {
    let parent = sys::open_dir_path(path.parent().unwrap()).unwrap();
    let name = path.file_name().unwrap().as_bytes();
    let fd = sys::openat(parent.as_fd(), name, libc::O_PATH, 0).unwrap();
    sys::path_getxattr(fd.as_fd(), key).ok()
}

/// Sets an xattr on `path` itself.
pub fn set_xattr(path: &Path, key: &[u8], value: &[u8]) {
    let parent = sys::open_dir_path(path.parent().unwrap()).unwrap();
    let name = path.file_name().unwrap().as_bytes();
    let fd = sys::openat(parent.as_fd(), name, libc::O_PATH, 0).unwrap();
    sys::path_setxattr(fd.as_fd(), key, value, 0).unwrap();
}

/// `mknod` by path (for building uppers by hand).
pub fn mknod(path: &Path, mode: u32, rdev: u64) {
    let parent = sys::open_dir_path(path.parent().unwrap()).unwrap();
    sys::mknodat(
        parent.as_fd(),
        path.file_name().unwrap().as_bytes(),
        mode,
        rdev,
    )
    .unwrap();
}

pub fn errno<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    r.unwrap_err().raw_os_error().unwrap_or(0)
}

/// A tmpfs mounted at a fresh directory, unmounted on drop.
pub struct Tmpfs {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mount -t tmpfs failed (these tests run as root)"
        );
        Tmpfs { path, _dir: dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
