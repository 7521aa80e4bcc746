//! Opening a compressed layer (gzip, zstd): its seek table and its tar index
//! come from the cache, or from one sequential pass that decodes the blob,
//! scans the tar, records the seek table and computes both digests at once.
//!
//! Knows the order of that pass and where its results are kept; the
//! decoding itself is `blob/`'s (this file never sees a deflate block).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use super::{build_index, log_warnings, persist, Built, IndexOptions, TarIdentity, TarLayer};
use crate::blob::seek::{self, Decoder, Encoding};
use crate::blob::{self, Blob, Decoded, Hashing};
use crate::error::{Error, Result};
use crate::tar::scan::UNKNOWN_LEN;

/// Where a compressed layer's results are kept, and what it must match.
pub(super) struct Keys<'a> {
    /// The tar index file.
    pub index_file: Option<PathBuf>,
    /// The seek table file.
    pub seek_file: Option<PathBuf>,
    /// What the stored seek table must have been built from.
    pub seek_id: TarIdentity,
    /// The stored index's identity: the file's (a loose layer), or `None`
    /// for an index keyed by content (it then holds the tar's length).
    pub index_id: Option<TarIdentity>,
    /// The digest the stored bytes must have (an image's blob digest).
    pub blob_digest: Option<&'a str>,
    /// The digest the tar must have (the diffID).
    pub diff_id: Option<&'a str>,
    /// Where a decompressed copy is kept, for a blob served from one
    /// ([`seek::keep_copy`]); `None`: no cache, an unlinked temporary file.
    pub copy_file: Option<PathBuf>,
}

/// What the digest record of a loose layer's decompressed copy claims: only
/// that the file is the one written (its identity), as for loose indexes.
const COPY_CLAIM: &str = "decompressed-copy";

/// The file a zstd pass writes the uncompressed stream to; removed when
/// dropped unless kept.
struct Copy {
    file: Option<File>,
    /// The temporary name it has until it is kept (`None`: unlinked).
    tmp: Option<PathBuf>,
}

impl Copy {
    fn create(dest: Option<&Path>) -> std::io::Result<Copy> {
        let tmp = match dest {
            Some(d) => {
                if let Some(dir) = d.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                persist::temp_name(d)
            }
            None => persist::temp_name(&std::env::temp_dir().join("unionfs-layer.tar")),
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        let mut c = Copy {
            file: Some(file),
            tmp: Some(tmp),
        };
        if dest.is_none() {
            // No cache: the copy lives as long as the process holds it.
            std::fs::remove_file(c.tmp.take().expect("just set"))?;
        }
        Ok(c)
    }

    fn sink(&self) -> std::io::Result<File> {
        self.file.as_ref().expect("not kept yet").try_clone()
    }

    /// Makes the copy durable under `dest` (if any) and returns it as a blob.
    fn keep(mut self, dest: Option<&Path>) -> std::io::Result<Blob> {
        let file = self.file.take().expect("kept once");
        if let (Some(tmp), Some(d)) = (self.tmp.take(), dest) {
            file.sync_data()?;
            std::fs::rename(tmp, d)?;
        }
        Blob::whole(file)
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        if let Some(tmp) = &self.tmp {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

impl Keys<'_> {
    fn index_identity(&self, out_len: u64) -> TarIdentity {
        self.index_id.unwrap_or(TarIdentity {
            size: out_len,
            ..TarIdentity::default()
        })
    }

    /// What a verified record of this source claims: the blob digest where
    /// the image gives one, else the diffID.
    fn claim(&self) -> Option<&str> {
        self.blob_digest.or(self.diff_id)
    }
}

/// Opens the compressed layer `src` (encoded as `enc`).
pub(super) fn open(
    name: &Path,
    label: String,
    src: Blob,
    enc: Encoding,
    k: &Keys,
    opts: &IndexOptions,
) -> Result<TarLayer> {
    let start = Instant::now();
    let started = SystemTime::now();
    let cache = opts.cache_dir.as_deref();
    let mut rejected = None;
    if let (Some(sf), Some(xf), false) = (&k.seek_file, &k.index_file, opts.rebuild) {
        match cached(name, &src, k, sf, xf, opts, started)? {
            Ok(mut layer) => {
                layer.label = label;
                layer.source.elapsed = start.elapsed();
                return Ok(layer);
            }
            Err(why) => rejected = Some(why),
        }
    }
    // One pass: blob bytes → (digest) → decoder → (diffID) → tar scanner;
    // a zstd decoder also writes a copy, kept if its frames are too big.
    let copy = match enc {
        Encoding::Zstd => {
            let dest = k.copy_file.as_deref();
            let c = Copy::create(dest)
                .map_err(|e| Error::io(dest.unwrap_or(Path::new("a temporary file")), e))?;
            Some(c)
        }
        _ => None,
    };
    let sink = match &copy {
        Some(c) => Some(c.sink().map_err(|e| Error::io(name, e))?),
        None => None,
    };
    let pass = src.pass();
    let src_h = Hashing::new_if(&pass, k.blob_digest.is_some());
    let dec = Decoder::new(enc, &src_h, opts.spacing(), sink).map_err(|e| Error::io(name, e))?;
    let out_h = Hashing::new_if(&dec, k.diff_id.is_some());
    let progress = blob::progress::Progress::start(name, &src_h, &out_h, src.len(), opts.quiet);
    let built = build_index(name, &out_h, UNKNOWN_LEN);
    let diff_id = built.and_then(|i| Ok((i, out_h.finish().map_err(|e| Error::io(name, e))?)));
    drop(progress);
    let remote = pass.is_remote();
    let (mut index, diff_id) = match diff_id {
        Ok(v) => v,
        Err(e) => {
            drop(dec);
            return Err(super::blame_transfer(name, remote, k.blob_digest, src_h, e));
        }
    };
    let table = match dec.finish() {
        Ok(t) => t,
        Err(e) => {
            let e = Error::io(name, e);
            return Err(super::blame_transfer(name, remote, k.blob_digest, src_h, e));
        }
    };
    let digest = src_h.finish().map_err(|e| Error::io(name, e))?;
    for (want, got, what) in [
        (k.blob_digest, &digest, "the blob's digest"),
        (k.diff_id, &diff_id, "the layer's diffID"),
    ] {
        if let Some(want) = want {
            if !want.eq_ignore_ascii_case(got) {
                return Err(Error::DigestMismatch {
                    path: name.to_owned(),
                    expected: format!("{want} ({what})"),
                    actual: got.clone(),
                });
            }
        }
    }
    // Only now, with the digests matched, is a registry blob's chunk table
    // worth keeping (a remote layer always has a blob digest: checked by
    // `TarLayer::open_verified`).
    pass.keep().map_err(|e| Error::io(name, e))?;
    index.tar_size = table.out_len();
    log_warnings(name, &index);
    if let Some(c) = k.claim() {
        blob::verified::record(cache, &src, c, started);
    }
    // A loose file changed just before this pass keeps a content checksum
    // with its index, as a plain tar's does.
    let racy_sum = k
        .index_id
        .filter(|id| super::racy(id, started))
        .and_then(|_| src.file().and_then(|f| persist::content_sum(f).ok()));
    // The index is stored only with its seek table (one is useless alone).
    let index_file = match (&k.index_file, &k.seek_file) {
        (Some(xf), Some(sf)) => match seek::save(sf, &table, &k.seek_id) {
            Ok(()) => Some(xf.clone()),
            Err(e) => {
                log::warn!(
                    target: "unionfs::tar",
                    "cannot store the seek table of {} in {}: {e} (it will be rebuilt next time)",
                    name.display(),
                    sf.display()
                );
                None
            }
        },
        _ => None,
    };
    let id = k.index_identity(table.out_len());
    let blob = match copy {
        Some(c) if seek::keep_copy(&table) => {
            let dest = k.copy_file.as_deref();
            let b = c
                .keep(dest)
                .map_err(|e| Error::io(dest.unwrap_or(name), e))?;
            if dest.is_some() {
                // Just written from bytes that passed their digests: its
                // identity now is the one to trust (it was written after
                // `started`, so it would count as "racy" against it).
                let now = SystemTime::now() + std::time::Duration::from_millis(100);
                blob::verified::record(cache, &b, k.diff_id.unwrap_or(COPY_CLAIM), now);
            }
            Decoded::Plain(b)
        }
        _ => table.into_decoded(src),
    };
    log::info!(
        target: "unionfs::tar",
        "{}: {} layer, {} bytes decoded into {} spans in {:.2} s",
        name.display(),
        match enc {
            Encoding::Gzip => "gzip",
            _ => "zstd",
        },
        blob.len(),
        blob.spans(),
        start.elapsed().as_secs_f64()
    );
    let built = Built {
        path: name,
        label,
        index_file,
        id,
        racy_sum,
        rejected,
        start,
    };
    Ok(built.finish(blob, index, opts))
}

/// The layer from its stored seek table and index, if both are there and
/// belong to these bytes; `Ok(Err(why))` if not.
fn cached(
    name: &Path,
    src: &Blob,
    k: &Keys,
    sf: &Path,
    xf: &Path,
    opts: &IndexOptions,
    started: SystemTime,
) -> Result<std::result::Result<TarLayer, String>> {
    let cache = opts.cache_dir.as_deref();
    let Some(table) = seek::load(sf, &k.seek_id).map_err(|e| Error::io(sf, e))? else {
        return Ok(Err("no seek table yet".into()));
    };
    let mut index = match persist::load(
        xf,
        src.file(),
        &k.index_identity(table.out_len()),
        opts.members,
    ) {
        Ok(Ok(i)) => i,
        Ok(Err(why)) => return Ok(Err(why)),
        Err(e) => return Ok(Err(e.to_string())),
    };
    if let Some(claim) = k.claim() {
        if !blob::verified::is_verified(cache, src, claim) {
            if src.as_remote().is_some() {
                // Hashing it would fetch it all and keep nothing: stream it.
                return Ok(Err("the blob's chunk table is missing".into()));
            }
            match k.blob_digest {
                // The stored bytes' digest vouches for the table and index
                // built from bytes with that digest: hash them, no decoding.
                Some(want) => {
                    let got = blob::sha256(src).map_err(|e| Error::io(name, e))?;
                    if !want.eq_ignore_ascii_case(&got) {
                        return Err(Error::DigestMismatch {
                            path: name.to_owned(),
                            expected: format!("{want} (the blob's digest)"),
                            actual: got,
                        });
                    }
                    blob::verified::record(cache, src, want, started);
                }
                // Only a diffID to check: that takes a decoding pass.
                None => return Ok(Err("this source is not checked yet".into())),
            }
        }
    }
    index.tar_size = table.out_len();
    let blob = if seek::keep_copy(&table) {
        match cached_copy(name, k, table.out_len(), opts, started)? {
            Ok(b) => Decoded::Plain(b),
            Err(why) => return Ok(Err(why)),
        }
    } else {
        table.into_decoded(src.clone())
    };
    let file = Some(xf.to_owned());
    Ok(Ok(TarLayer::loaded(
        name,
        String::new(),
        blob,
        index,
        Instant::now(),
        file,
    )))
}

/// The stored decompressed copy of a blob whose frames are too big to serve,
/// if it is there and still the bytes written (`Ok(Err(why))` if not).
fn cached_copy(
    name: &Path,
    k: &Keys,
    out_len: u64,
    opts: &IndexOptions,
    started: SystemTime,
) -> Result<std::result::Result<Blob, String>> {
    let cache = opts.cache_dir.as_deref();
    let Some(cf) = &k.copy_file else {
        return Ok(Err("no decompressed copy".into()));
    };
    let f = match File::open(cf) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Err("the decompressed copy is gone".into()))
        }
        Err(e) => return Err(Error::io(cf, e)),
    };
    let b = Blob::whole(f).map_err(|e| Error::io(cf, e))?;
    if b.len() != out_len {
        return Ok(Err("the decompressed copy has the wrong size".into()));
    }
    let claim = k.diff_id.unwrap_or(COPY_CLAIM);
    if !blob::verified::is_verified(cache, &b, claim) {
        let Some(want) = k.diff_id else {
            return Ok(Err("the decompressed copy changed".into()));
        };
        let got = blob::sha256(&b).map_err(|e| Error::io(cf, e))?;
        if !want.eq_ignore_ascii_case(&got) {
            log::warn!(
                target: "unionfs::tar",
                "{}: {} does not match the diffID; decompressing again",
                name.display(),
                cf.display()
            );
            return Ok(Err("the decompressed copy does not match the diffID".into()));
        }
        blob::verified::record(cache, &b, want, started);
    }
    Ok(Ok(b))
}
