//! The cache directory, seen whole: what it holds and how big it is, and
//! pruning it. Everything in it can be rebuilt from the layers: layer indexes
//! (`*.uidx`), seek tables of compressed blobs (`blobs/*.seek`), layers
//! decompressed once (`blobs/*.tar`), records of checked digests
//! (`verified/*`), and the chunks of registry blobs already fetched with
//! their chunk tables (`remote/sha256/<hex>/`). Removing any of them costs a
//! rebuild or a fetch, never data.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use std::os::unix::fs::MetadataExt;

/// What a cache file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A layer index.
    Index,
    /// A seek table of a compressed blob.
    SeekTable,
    /// A layer stored decompressed.
    Decompressed,
    /// A record that a blob was checked against its digest.
    Verified,
    /// The chunk digests of a registry blob.
    ChunkTable,
    /// A chunk of a registry blob, fetched.
    RemoteChunk,
    /// Anything else (temporary files of an interrupted write, …).
    Other,
}

impl Kind {
    /// The word for listings.
    pub fn word(self) -> &'static str {
        match self {
            Kind::Index => "layer indexes",
            Kind::SeekTable => "seek tables",
            Kind::Decompressed => "decompressed layers",
            Kind::Verified => "digest records",
            Kind::ChunkTable => "chunk tables",
            Kind::RemoteChunk => "fetched chunks",
            Kind::Other => "other",
        }
    }
}

/// One file of the cache.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Its path.
    pub path: PathBuf,
    /// What it is.
    pub kind: Kind,
    /// Bytes on disk.
    pub size: u64,
    /// Last use: the later of its access and modification times.
    pub used: SystemTime,
}

fn kind_of(rel: &Path) -> Kind {
    let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let top = rel
        .components()
        .next()
        .and_then(|c| c.as_os_str().to_str())
        .unwrap_or("");
    if name.starts_with('.') {
        Kind::Other
    } else if top == "verified" {
        Kind::Verified
    } else if top == "remote" && name == "chunks" {
        Kind::ChunkTable
    } else if top == "remote" && name.len() == 8 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        Kind::RemoteChunk
    } else if name.ends_with(".uidx") {
        Kind::Index
    } else if name.ends_with(".seek") {
        Kind::SeekTable
    } else if top == "blobs" && name.ends_with(".tar") {
        Kind::Decompressed
    } else {
        Kind::Other
    }
}

/// Every file below `dir` (none if it does not exist).
pub fn list(dir: &Path) -> io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let rd = match fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for e in rd {
            let e = e?;
            let m = e.metadata()?;
            if m.is_dir() {
                todo.push(e.path());
            } else if m.is_file() {
                let rel = e.path().strip_prefix(dir).unwrap_or(&e.path()).to_owned();
                let t = |s: i64, ns: i64| {
                    SystemTime::UNIX_EPOCH + Duration::new(s.max(0) as u64, ns as u32)
                };
                out.push(Entry {
                    kind: kind_of(&rel),
                    path: e.path(),
                    size: m.blocks() * 512,
                    used: t(m.atime(), m.atime_nsec()).max(t(m.mtime(), m.mtime_nsec())),
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Keeps the fetched chunks of registry blobs under `dir` (the cache
/// directory) within `max_bytes`: the least recently used go first, down to
/// nine tenths of the bound (so that a sweep is not needed at every fetch).
pub fn bound_chunks(dir: &Path, max_bytes: u64) -> io::Result<Pruned> {
    let mut chunks: Vec<Entry> = list(&dir.join("remote"))?
        .into_iter()
        .filter(|e| {
            let rel = e.path.strip_prefix(dir).unwrap_or(&e.path);
            kind_of(rel) == Kind::RemoteChunk
        })
        .collect();
    let mut total: u64 = chunks.iter().map(|e| e.size).sum();
    let mut done = Pruned::default();
    if total <= max_bytes {
        return Ok(done);
    }
    chunks.sort_by_key(|e| e.used);
    let target = max_bytes / 10 * 9;
    for e in chunks {
        if total <= target {
            break;
        }
        match fs::remove_file(&e.path) {
            Ok(()) => {
                done.files += 1;
                done.bytes += e.size;
                total -= e.size;
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => total -= e.size,
            Err(err) => return Err(err),
        }
    }
    Ok(done)
}

/// What pruning removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Files removed.
    pub files: u64,
    /// Bytes freed.
    pub bytes: u64,
}

/// Removes from `dir`: everything (`all`), files unused for longer than
/// `older_than`, and then the least recently used files until at most
/// `max_bytes` remain.
pub fn prune(
    dir: &Path,
    all: bool,
    older_than: Option<Duration>,
    max_bytes: Option<u64>,
) -> io::Result<Pruned> {
    let mut entries = list(dir)?;
    entries.sort_by_key(|e| e.used);
    let mut total: u64 = entries.iter().map(|e| e.size).sum();
    let now = SystemTime::now();
    let mut done = Pruned::default();
    for e in entries {
        let old =
            older_than.is_some_and(|age| now.duration_since(e.used).unwrap_or_default() > age);
        let over = max_bytes.is_some_and(|m| total > m);
        if all || old || over {
            match fs::remove_file(&e.path) {
                Ok(()) => {
                    total -= e.size;
                    done.files += 1;
                    done.bytes += e.size;
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => total -= e.size,
                Err(err) => {
                    return Err(io::Error::new(
                        err.kind(),
                        format!("{}: {err}", e.path.display()),
                    ))
                }
            }
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_pruning() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        fs::create_dir_all(p.join("blobs")).unwrap();
        fs::create_dir_all(p.join("verified")).unwrap();
        fs::create_dir_all(p.join("remote/sha256/ab")).unwrap();
        for (f, n) in [
            ("a.uidx", 9000),
            ("blobs/sha256-x.seek", 100),
            ("blobs/sha256-y.tar", 50_000),
            ("verified/1-2-0", 10),
            ("remote/sha256/ab/chunks", 70),
            ("remote/sha256/ab/00000003", 300),
            (".a.uidx.tmp1-0", 5),
        ] {
            fs::write(p.join(f), vec![1u8; n]).unwrap();
        }
        let l = list(p).unwrap();
        let kinds: Vec<Kind> = l.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Other,
                Kind::Index,
                Kind::SeekTable,
                Kind::Decompressed,
                Kind::RemoteChunk,
                Kind::ChunkTable,
                Kind::Verified
            ]
        );
        // The oldest goes first: make a.uidx the most recently used.
        let f = fs::File::options()
            .write(true)
            .open(p.join("a.uidx"))
            .unwrap();
        f.set_modified(SystemTime::now() + Duration::from_secs(60))
            .unwrap();
        let total: u64 = l.iter().map(|e| e.size).sum();
        let a = l.iter().find(|e| e.kind == Kind::Index).unwrap().size;
        let r = prune(p, false, None, Some(a)).unwrap();
        assert_eq!(r.bytes, total - a);
        assert_eq!(list(p).unwrap().len(), 1);
        fs::create_dir_all(p.join("remote/sha256/cd")).unwrap();
        for f in ["00000000", "00000001", "chunks"] {
            fs::write(p.join("remote/sha256/cd").join(f), vec![1u8; 8192]).unwrap();
        }
        let r = bound_chunks(p, 10_000).unwrap();
        assert_eq!(r.files, 1, "one chunk goes; the table stays");
        assert!(p.join("remote/sha256/cd/chunks").exists());
        fs::remove_dir_all(p.join("remote")).unwrap();
        assert_eq!(prune(p, true, None, None).unwrap().files, 1);
        assert!(list(p).unwrap().is_empty());
        assert!(list(&p.join("missing")).unwrap().is_empty());
    }
}
