//! Which blobs were already checked against their digest.
//!
//! Checking a layer against its diffID reads every byte once. The result is
//! remembered per *source* — the exact file (device, inode, size, mtime,
//! ctime) and the byte range in it — so a later mount of the same archive pays
//! nothing, while the same layer in another archive, or an archive rewritten in
//! place, is checked again. One small text file per source, under
//! `CACHE/verified/`, written atomically; anything unreadable or different is
//! "not verified".

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::Blob;
use crate::tar::TarIdentity;

const MAGIC: &str = "unionfs-verified 1";

fn record_path(cache: &Path, id: &TarIdentity, blob: &Blob) -> PathBuf {
    cache
        .join("verified")
        .join(format!("{:x}-{:x}-{:x}", id.dev, id.ino, blob.base()))
}

fn line(id: &TarIdentity, blob: &Blob, digest: &str) -> String {
    format!(
        "{MAGIC} {} {} {} {} {} {} {} {} {} {digest}\n",
        id.size,
        id.dev,
        id.ino,
        id.mtime,
        id.mtime_nsec,
        id.ctime,
        id.ctime_nsec,
        blob.base(),
        blob.len()
    )
}

/// Returns true if and only if `blob`, as its file is now, was checked to
/// have `digest` before.
///
/// A registry blob counts as checked once its chunk table is known: the
/// table is kept only after a pass whose bytes matched the blob's digest, and
/// every chunk read later is checked against it.
pub fn is_verified(cache: Option<&Path>, blob: &Blob, digest: &str) -> bool {
    if let Some(r) = blob.as_remote() {
        return r.has_table() && digest.eq_ignore_ascii_case(r.digest());
    }
    let Some(cache) = cache else { return false };
    let Some(Ok(id)) = blob.file().map(TarIdentity::of) else {
        return false;
    };
    fs::read_to_string(record_path(cache, &id, blob)).is_ok_and(|s| s == line(&id, blob, digest))
}

/// Remembers that `blob` has `digest`, as checked by a pass that started at
/// `started`. Not remembered when the file changed too close to that start to
/// trust its identity (a same-size rewrite within one clock tick would keep
/// it: git's "racy" case). Failing to write is only logged.
pub fn record(cache: Option<&Path>, blob: &Blob, digest: &str, started: SystemTime) {
    let Some(cache) = cache else { return };
    // (A registry blob's record is its chunk table.)
    let Some(Ok(id)) = blob.file().map(TarIdentity::of) else {
        return;
    };
    if crate::tar::racy(&id, started) {
        return;
    }
    let path = record_path(cache, &id, blob);
    if let Err(e) = write_atomic(&path, line(&id, blob, digest).as_bytes()) {
        log::warn!(target: "unionfs::blob", "cannot record a checked digest in {}: {e}", path.display());
    }
}

/// Writes `data` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .or_else(|e| if dir.is_dir() { Ok(()) } else { Err(e) })?;
    let tmp = crate::tar::persist::temp_name(path);
    let res = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_data()?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

use std::os::unix::fs::DirBuilderExt;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_record_holds_for_the_same_file_and_range_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        fs::write(&p, b"0123456789").unwrap();
        let f = Arc::new(fs::File::open(&p).unwrap());
        let b = Blob::range(f.clone(), 2, 4);
        let cache = Some(dir.path());
        let later = SystemTime::now() + std::time::Duration::from_secs(1);
        assert!(!is_verified(cache, &b, "sha256:x"));
        record(cache, &b, "sha256:x", later);
        assert!(is_verified(cache, &b, "sha256:x"));
        assert!(!is_verified(cache, &b, "sha256:y"));
        assert!(!is_verified(cache, &Blob::range(f, 2, 5), "sha256:x"));
        assert!(!is_verified(None, &b, "sha256:x"));
        // A rewrite changes the identity: not verified any more.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&p, b"0123456789").unwrap();
        let b2 = Blob::range(Arc::new(fs::File::open(&p).unwrap()), 2, 4);
        assert!(!is_verified(cache, &b2, "sha256:x"));
        // A file changed just before the pass started is not recorded.
        record(cache, &b2, "sha256:x", SystemTime::now());
        assert!(!is_verified(cache, &b2, "sha256:x"));
    }
}
