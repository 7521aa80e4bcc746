//! An image's layer indexes as an OCI artifact in the image's own
//! repository, so that every machine mounting the image lazily starts with
//! them instead of streaming each blob once.
//!
//! `unionfs index --image docker://… --push` packs, for each layer, the
//! three files one indexing pass leaves in the cache — the blob's chunk
//! table (sha256 of every 256 KiB of the blob), its seek table (gzip
//! checkpoints or zstd frames) and the tar index — into one blob, and pushes
//! an artifact manifest whose `subject` is the image manifest:
//!
//! ```text
//! manifest  artifactType  application/vnd.unionfs.index.v1
//!           config        application/vnd.unionfs.index.v1, "{}"
//!           layers[i]     application/vnd.unionfs.layer-index.v1
//!                         annotations: dev.unionfs.blob = layer i's blob digest,
//!                                      dev.unionfs.diff-id = its diffID
//!           subject       the image manifest
//! ```
//!
//! A mount finds it through the referrers API, or the OCI 1.1 fallback tag
//! `sha256-<hex of the manifest digest>` (an index of referrers) where the
//! registry has no such API (distribution 2.8), fetches the packs (each
//! checked against its digest) and unpacks them into the cache, where the
//! usual loaders check them again (format, checksums, sizes). From then on no
//! blob byte is read until a file is, and every chunk read is checked against
//! the pushed chunk table.
//!
//! Trust: the chunk table says which bytes are the blob's. Whoever can push
//! to the repository can push an index; its chunk digests are trusted as the
//! repository's tags are. `--no-index-artifact` ignores them (each blob is
//! then streamed once and checked against its digest).
//!
//! A layer whose zstd frames are too big to serve (one frame: no random
//! access) is served from a decompressed copy; its index is not pushed and
//! the mount streams it once.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::{spec, Image, LayerDesc};
use crate::blob::remote::{cache_root, ChunkTable};
use crate::blob::seek::Encoding;
use crate::error::{Error, Result};
use crate::registry::Client;

/// The artifact type of an image's index.
pub const ARTIFACT_TYPE: &str = "application/vnd.unionfs.index.v1";
/// The media type of one layer's packed index.
pub const LAYER_INDEX_TYPE: &str = "application/vnd.unionfs.layer-index.v1";
/// Annotation: the layer blob a pack belongs to.
pub const ANN_BLOB: &str = "dev.unionfs.blob";
/// Annotation: the diffID of that layer.
pub const ANN_DIFF_ID: &str = "dev.unionfs.diff-id";

const PACK_MAGIC: &[u8; 16] = b"unionfs-lindex1\n";

/// Largest pack fetched (a tar index of a million entries is ~100 MB).
const MAX_PACK: u64 = 1 << 30;

/// Where one layer's index files are in the cache.
#[derive(Clone, Debug)]
pub struct Files {
    /// The blob's chunk table.
    pub chunks: PathBuf,
    /// Its seek table (compressed blobs only).
    pub seek: Option<PathBuf>,
    /// The tar index.
    pub index: PathBuf,
}

/// The cache files of `layer` (as `tar::TarLayer::open_verified` names them).
pub fn files(cache: &Path, layer: &LayerDesc) -> Option<Files> {
    files_of(
        cache,
        layer.digest.as_deref()?,
        &layer.diff_id,
        layer.encoding != Encoding::Plain,
    )
}

/// The cache files of the layer with blob `digest` and `diff_id`.
fn files_of(cache: &Path, digest: &str, diff_id: &str, compressed: bool) -> Option<Files> {
    let blob = crate::image::digest::sha256_hex(digest)?;
    let diff = crate::image::digest::sha256_hex(diff_id)?;
    Some(Files {
        chunks: cache_root(cache).join("sha256").join(&blob).join("chunks"),
        seek: compressed.then(|| cache.join("blobs").join(format!("sha256-{blob}.seek"))),
        index: cache.join(format!("sha256-{diff}.uidx")),
    })
}

impl Files {
    /// Returns true if and only if every file is there.
    pub fn present(&self) -> bool {
        self.chunks.exists() && self.index.exists() && self.seek.as_ref().is_none_or(|s| s.exists())
    }
}

/// Packs the index files of one layer into one blob.
pub fn pack(f: &Files) -> std::io::Result<Vec<u8>> {
    let mut out = PACK_MAGIC.to_vec();
    let parts = [
        Some(fs::read(&f.chunks)?),
        match &f.seek {
            Some(s) => Some(fs::read(s)?),
            None => None,
        },
        Some(fs::read(&f.index)?),
    ];
    for p in parts {
        let p = p.unwrap_or_default();
        out.extend_from_slice(&(p.len() as u64).to_le_bytes());
        out.extend_from_slice(&p);
    }
    Ok(out)
}

/// The parts of a pack: chunk table, seek table (empty for a plain
/// layer), tar index.
fn parts(pack: &[u8]) -> std::result::Result<[&[u8]; 3], String> {
    let mut rest = pack
        .strip_prefix(&PACK_MAGIC[..])
        .ok_or("not a unionfs layer index")?;
    let mut parts = Vec::new();
    for _ in 0..3 {
        let n = rest
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .ok_or("truncated")?;
        let n = usize::try_from(n).map_err(|_| "truncated")?;
        let body = rest.get(8..8 + n).ok_or("truncated")?;
        parts.push(body);
        rest = &rest[8 + n..];
    }
    if !rest.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok([parts[0], parts[1], parts[2]])
}

/// Unpacks a pack into the cache files `f` of a blob of `size` bytes (each
/// written atomically), after checking its chunk table against that size.
pub fn unpack(pack: &[u8], size: u64, f: &Files) -> std::result::Result<(), String> {
    let parts = parts(pack)?;
    ChunkTable::from_bytes(parts[0], size)?;
    if f.seek.is_some() == parts[1].is_empty() {
        return Err("its seek table does not fit the layer's encoding".into());
    }
    let write = |p: &Path, b: &[u8]| -> std::result::Result<(), String> {
        if let Some(d) = p.parent() {
            fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        crate::blob::verified::write_atomic(p, b).map_err(|e| format!("{}: {e}", p.display()))
    };
    // The chunk table last: a blob counts as indexed once it is there.
    if let Some(s) = &f.seek {
        write(s, parts[1])?;
    }
    write(&f.index, parts[2])?;
    write(&f.chunks, parts[0])
}

fn registry_err(e: crate::registry::Error) -> Error {
    Error::Registry(e.to_string())
}

/// Pushes the indexes of `img`'s layers (built into `cache` already) as an
/// artifact referring to its manifest; returns the artifact's digest and
/// the number of layers packed.
pub fn push(client: &Client, img: &Image, cache: &Path) -> Result<(String, usize)> {
    let subject = img
        .manifest_digest
        .as_deref()
        .ok_or_else(|| Error::Usage("the image has no manifest digest".into()))?;
    let manifest = client.manifest(subject).map_err(registry_err)?;
    let mut layers = Vec::new();
    for (i, l) in img.layers.iter().enumerate() {
        let Some(f) = files(cache, l) else { continue };
        if !f.present() {
            log::warn!(
                target: "unionfs::image",
                "layer {i} ({}) has no index in {} to push (a single-frame zstd layer is served from a decompressed copy); mounts will stream it once",
                l.name.display(),
                cache.display()
            );
            continue;
        }
        let bytes = pack(&f).map_err(|e| Error::io(&f.index, e))?;
        let d = client.push_blob(&bytes).map_err(registry_err)?;
        layers.push(json!({
            "mediaType": LAYER_INDEX_TYPE,
            "digest": d,
            "size": bytes.len(),
            "annotations": {
                ANN_BLOB: l.digest,
                ANN_DIFF_ID: l.diff_id,
            },
        }));
    }
    let n = layers.len();
    let config = b"{}";
    let config_digest = client.push_blob(config).map_err(registry_err)?;
    let m = json!({
        "schemaVersion": 2,
        "mediaType": spec::OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": ARTIFACT_TYPE, "digest": config_digest, "size": config.len()},
        "layers": layers,
        "subject": {
            "mediaType": manifest.media_type,
            "digest": manifest.digest,
            "size": manifest.bytes.len(),
        },
        "annotations": {
            "org.opencontainers.image.created": crate::report::rfc3339(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64)
            ),
        },
    });
    let body = serde_json::to_vec(&m).expect("JSON");
    let digest = crate::image::digest::of(&body);
    client
        .put_manifest(&digest, spec::OCI_MANIFEST, &body)
        .map_err(registry_err)?;
    client
        .add_referrer(&manifest.digest, &digest, body.len() as u64, ARTIFACT_TYPE)
        .map_err(registry_err)?;
    Ok((digest, n))
}

/// One layer as a manifest and its config describe it.
#[derive(Clone, Debug)]
pub struct Wanted {
    /// The blob's digest.
    pub digest: String,
    /// Its size.
    pub size: u64,
    /// Its diffID (from the config).
    pub diff_id: String,
}

/// Finds the newest index artifact of the manifest `subject`, whose layers
/// are `layers` (from the manifest and the config, both checked against
/// their digests), and unpacks the indexes of the layers whose cache files
/// are missing; returns how many were adopted. A pack is taken only for a
/// layer of this image, under the blob digest and diffID this image gives
/// it (never a key the artifact names alone). Anything wrong with an
/// artifact is logged and skipped (those blobs are then streamed): an index
/// is an optimisation, never a requirement.
pub fn fetch(client: &Client, subject: &str, layers: &[Wanted], cache: &Path) -> usize {
    let missing = |compressed: bool, l: &Wanted| {
        files_of(cache, &l.digest, &l.diff_id, compressed).filter(|f| !f.present())
    };
    // Whether a layer is compressed is known only from its pack: a layer
    // counts as missing if either form of its files is incomplete.
    if layers
        .iter()
        .all(|l| missing(true, l).is_none() || missing(false, l).is_none())
    {
        return 0;
    }
    let refs = match client.referrers(subject, Some(ARTIFACT_TYPE)) {
        Ok(r) => r,
        Err(e) => {
            log::warn!(target: "unionfs::image", "looking for an index artifact: {e}");
            return 0;
        }
    };
    // The newest, by its creation annotation (the referrers API lists in
    // no set order).
    let Some(d) = refs.iter().max_by_key(|d| {
        d.annotation("org.opencontainers.image.created")
            .map(str::to_owned)
            .unwrap_or_default()
    }) else {
        log::info!(target: "unionfs::image", "no index artifact for {subject}: each blob is streamed once");
        return 0;
    };
    let m = match client.manifest(&d.digest) {
        Ok(m) => m,
        Err(e) => {
            log::warn!(target: "unionfs::image", "index artifact {}: {e}", d.digest);
            return 0;
        }
    };
    let m: spec::Manifest = match serde_json::from_slice(&m.bytes) {
        Ok(m) => m,
        Err(e) => {
            log::warn!(target: "unionfs::image", "index artifact {}: not a manifest: {e}", d.digest);
            return 0;
        }
    };
    let mut adopted = 0;
    for (i, l) in layers.iter().enumerate() {
        let Some(p) = m.layers.iter().find(|p| {
            p.media_type == LAYER_INDEX_TYPE
                && p.annotation(ANN_BLOB)
                    .is_some_and(|b| b.eq_ignore_ascii_case(&l.digest))
                && p.annotation(ANN_DIFF_ID)
                    .is_some_and(|b| b.eq_ignore_ascii_case(&l.diff_id))
        }) else {
            continue;
        };
        let r = client
            .blob(&p.digest, MAX_PACK)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                let compressed = !parts(&b)?[1].is_empty();
                match missing(compressed, l) {
                    Some(f) => unpack(&b, l.size, &f).map(|()| true),
                    None => Ok(false),
                }
            });
        match r {
            Ok(true) => adopted += 1,
            Ok(false) => {}
            Err(why) => log::warn!(
                target: "unionfs::image",
                "index artifact {}: layer {i}: {why}; the blob will be streamed",
                d.digest
            ),
        }
    }
    log::info!(
        target: "unionfs::image",
        "index artifact {}: {adopted} layer indexes adopted",
        d.digest
    );
    adopted
}
