//! Opening a compressed layer (gzip, zstd): its seek table and its tar index
//! come from the cache, or from one sequential pass that decodes the blob,
//! scans the tar, records the seek table and computes both digests at once.
//!
//! Knows the order of that pass and where its results are kept; the
//! decoding itself is `blob/`'s (this file never sees a deflate block).

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use super::{
    build_index, log_warnings, persist, store, IndexOptions, IndexSource, TarIdentity, TarLayer,
};
use crate::blob::seek::{self, Decoder, Encoding};
use crate::blob::{self, Blob, Hashing};
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
    // One pass: blob bytes → (digest) → decoder → (diffID) → tar scanner.
    let src_h = Hashing::new_if(&src, k.blob_digest.is_some());
    let dec = Decoder::new(enc, &src_h, opts.spacing()).map_err(|e| Error::io(name, e))?;
    let out_h = Hashing::new_if(&dec, k.diff_id.is_some());
    let progress = blob::progress::Progress::start(name, &src_h, &out_h, src.len(), opts.quiet);
    let built = build_index(name, &out_h, UNKNOWN_LEN);
    let diff_id = built.and_then(|i| Ok((i, out_h.finish().map_err(|e| Error::io(name, e))?)));
    drop(progress);
    let (mut index, diff_id) = diff_id?;
    let table = dec.finish().map_err(|e| Error::io(name, e))?;
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
    index.tar_size = table.out_len();
    log_warnings(name, &index);
    if let Some(c) = k.claim() {
        blob::verified::record(cache, &src, c, started);
    }
    let mut kept = None;
    if let (Some(xf), Some(sf)) = (&k.index_file, &k.seek_file) {
        // A loose file changed just before this pass keeps a content
        // checksum with its index, as a plain tar's does.
        let racy_sum = k
            .index_id
            .filter(|id| super::racy(id, started))
            .and_then(|_| persist::content_sum(src.file()).ok());
        let stored = seek::save(sf, &table, &k.seek_id)
            .and_then(|()| store(xf, &index, &k.index_identity(table.out_len()), racy_sum));
        match stored {
            Ok(()) => kept = Some(xf.clone()),
            Err(e) => log::warn!(
                target: "unionfs::tar",
                "cannot store the index of {} in {}: {e} (it will be rebuilt next time)",
                name.display(),
                xf.display()
            ),
        }
    }
    if !opts.members {
        index.members = Vec::new();
    }
    index.shrink_to_fit();
    log::info!(
        target: "unionfs::tar",
        "{}: {} layer, {} bytes decoded into {} spans in {:.2} s",
        name.display(),
        match enc {
            Encoding::Gzip => "gzip",
            _ => "zstd",
        },
        table.out_len(),
        table.spans(),
        start.elapsed().as_secs_f64()
    );
    Ok(TarLayer {
        path: name.to_owned(),
        label,
        blob: table.into_decoded(src),
        index,
        source: IndexSource {
            built: true,
            elapsed: start.elapsed(),
            file: kept,
            rejected,
        },
    })
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
    log_warnings(name, &index);
    Ok(Ok(TarLayer {
        path: name.to_owned(),
        label: String::new(),
        blob: table.into_decoded(src.clone()),
        index,
        source: IndexSource {
            built: false,
            elapsed: std::time::Duration::ZERO,
            file: Some(xf.to_owned()),
            rejected: None,
        },
    }))
}
