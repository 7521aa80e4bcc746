//! Images as users hold them: `docker save` archives (every Docker layout),
//! OCI image layouts and OCI archives, resolved to an ordered list of layers.
//!
//! `index.json` → (nested image indexes, by platform) → manifest → config, or
//! docker's `manifest.json` → config; the layers come out bottom first, each
//! with its diffID (from the config's `rootfs.diff_ids`), its blob digest and
//! media type, and a [`Blob`] holding its bytes in place (a range of the
//! archive, or a file of the layout). Every JSON document is checked against
//! its digest before it is parsed; each layer is checked against its diffID
//! when it is indexed ([`crate::tar::TarLayer::open_verified`]).
//!
//! Knows JSON and digests, nothing of tar entries or FUSE (the archive's own
//! index is [`store`]'s business).

pub mod artifact;
pub mod digest;
mod reference;
pub mod remote;
pub mod spec;
pub mod store;

use reference::name_matches;
pub use reference::ImageRef;

use std::path::{Path, PathBuf};

use crate::blob::seek::{self, Encoding};
use crate::blob::Blob;
use crate::error::{Error, Result};
use crate::tar::{IndexOptions, TarLayer};
use spec::{Descriptor, DockerImage, Platform};
use store::{image_err, read_small, ArchiveStore, DirStore, Store};

/// One layer of an image.
#[derive(Clone, Debug)]
pub struct LayerDesc {
    /// `sha256:…` of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: String,
    /// The blob's digest, where the image records one (OCI manifests).
    pub digest: Option<String>,
    /// The media type (docker's `manifest.json` records none: the docker
    /// tar type is implied).
    pub media_type: String,
    /// Bytes of the blob.
    pub size: u64,
    /// How the blob is encoded (by its bytes, whatever the media type says).
    pub encoding: Encoding,
    /// `ARCHIVE:PATH` or `DIR:PATH`, for messages.
    pub name: PathBuf,
    /// The layer's bytes.
    pub blob: Blob,
}

/// An image resolved to its layers.
#[derive(Clone, Debug)]
pub struct Image {
    /// The archive or directory it came from.
    pub source: PathBuf,
    /// Its names (tags, full names) as the archive records them.
    pub names: Vec<String>,
    /// The manifest's digest (`None` for a docker `manifest.json` image).
    pub manifest_digest: Option<String>,
    /// The config's digest (docker's image ID).
    pub config_digest: String,
    /// The platform the config names.
    pub platform: Platform,
    /// The layers, bottom first.
    pub layers: Vec<LayerDesc>,
    /// The config's bytes (checked against its digest where the image
    /// records one).
    pub config: Vec<u8>,
}

/// A candidate image before it is chosen.
struct Candidate {
    names: Vec<String>,
    /// Manifest or index digest (OCI) .
    digest: Option<String>,
    /// Config digest, where known without reading more (docker).
    config: Option<String>,
    kind: Kind,
}

enum Kind {
    Oci(Descriptor),
    Docker(DockerImage),
}

impl Candidate {
    fn label(&self) -> String {
        if self.names.is_empty() {
            format!(
                "@{}",
                self.digest
                    .as_deref()
                    .or(self.config.as_deref())
                    .unwrap_or("?")
            )
        } else {
            self.names.join(", ")
        }
    }

    fn matches(&self, r: &str) -> bool {
        let d = r.strip_prefix('@').unwrap_or(r);
        if d.starts_with("sha256:") {
            let d = d.to_ascii_lowercase();
            return self.digest.as_deref() == Some(&d) || self.config.as_deref() == Some(&d);
        }
        self.names.iter().any(|n| name_matches(n, r))
    }
}

/// Opens the store at `path`: a directory, or an archive.
fn open_store(path: &Path, opts: &IndexOptions) -> Result<Box<dyn Store>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        Ok(Box::new(DirStore::open(path)?))
    } else {
        Ok(Box::new(ArchiveStore::open(path, opts)?))
    }
}

/// Reads the blob `digest` of `store` whole and checks it against its digest.
/// `what` says what it is, for messages ("manifest for linux/amd64").
fn read_verified(store: &dyn Store, digest: &str, what: &str) -> Result<Vec<u8>> {
    read_doc_verified(store, digest, what, false)
}

/// [`read_verified`] for a manifest or an index (a registry serves those
/// from another endpoint than blobs).
fn read_manifest_verified(store: &dyn Store, digest: &str, what: &str) -> Result<Vec<u8>> {
    read_doc_verified(store, digest, what, true)
}

fn read_doc_verified(
    store: &dyn Store,
    digest: &str,
    what: &str,
    manifest: bool,
) -> Result<Vec<u8>> {
    let Some(hex) = digest::sha256_hex(digest) else {
        return Err(image_err(
            store.path().to_owned(),
            format!("the {what} has digest {digest:?}: unionfs checks sha256 digests only"),
        ));
    };
    let rel = format!("blobs/sha256/{hex}");
    let Some(bytes) = store.document(&format!("sha256:{hex}"), manifest)? else {
        return Err(image_err(
            store.path().to_owned(),
            format!("the {what} (blob {digest}) is missing"),
        ));
    };
    let actual = digest::of(&bytes);
    if actual != format!("sha256:{hex}") {
        return Err(image_err(
            store.name(&rel),
            format!(
                "the {what}'s content does not match its digest: expected {digest}, got {actual}"
            ),
        ));
    }
    Ok(bytes)
}

fn parse_json<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    rel: &str,
    what: &str,
    b: &[u8],
) -> Result<T> {
    serde_json::from_slice(b)
        .map_err(|e| image_err(store.name(rel), format!("is not a valid {what}: {e}")))
}

/// The platform the user asked for, or the host's.
#[derive(Clone, Debug)]
pub struct PlatformChoice {
    /// The platform.
    pub platform: Platform,
    /// True if the user named it (`--platform`): a single-platform image of
    /// another platform is then refused.
    pub explicit: bool,
}

impl PlatformChoice {
    /// From `--platform`, or the host's when `None`.
    pub fn new(arg: Option<&str>) -> Result<PlatformChoice> {
        Ok(match arg {
            Some(s) => PlatformChoice {
                platform: spec::parse_platform(s).map_err(Error::Usage)?,
                explicit: true,
            },
            None => PlatformChoice {
                platform: spec::host_platform(),
                explicit: false,
            },
        })
    }

    fn accepts(&self, p: &Platform) -> bool {
        let w = &self.platform;
        if p.os != w.os || p.architecture != w.architecture {
            return false;
        }
        match (&w.variant, &p.variant) {
            (Some(a), Some(b)) => a == b,
            // arm64's only variant is v8: "linux/arm64" = "linux/arm64/v8".
            (Some(a), None) => w.architecture == "arm64" && a == "v8",
            (None, _) => true,
        }
    }
}

impl Image {
    /// Opens the image `r` names, for `platform`.
    pub fn open(r: &ImageRef, platform: &PlatformChoice, opts: &IndexOptions) -> Result<Image> {
        if let Some(remote) = &r.remote {
            return remote::open(remote, platform, opts);
        }
        let store = open_store(&r.path, opts)?;
        let store = store.as_ref();
        let has_layout = store.blob("oci-layout")?.is_some();
        let index_json = if has_layout {
            read_small(store, "index.json")?
        } else {
            None
        };
        let manifest_json = read_small(store, "manifest.json")?;
        if index_json.is_none() && manifest_json.is_none() {
            return Err(image_err(
                r.path.clone(),
                "is not an image: it has neither manifest.json (a docker save archive) nor oci-layout and \
                 index.json (an OCI layout); to mount loose layer tars, use --layers"
                    .into(),
            ));
        }
        let mut oci = Vec::new();
        if let Some(b) = &index_json {
            let index: spec::Index = parse_json(store, "index.json", "OCI image index", b)?;
            for d in index.manifests {
                if !(d.media_type.is_empty()
                    || spec::is_index(&d.media_type)
                    || spec::is_manifest(&d.media_type))
                {
                    continue;
                }
                let mut names: Vec<String> = Vec::new();
                for k in [spec::CONTAINERD_NAME, spec::REF_NAME] {
                    if let Some(n) = d.annotation(k) {
                        if !names.iter().any(|x| x == n) {
                            names.push(n.to_owned());
                        }
                    }
                }
                oci.push(Candidate {
                    names,
                    digest: Some(d.digest.to_ascii_lowercase()),
                    config: None,
                    kind: Kind::Oci(d),
                });
            }
        }
        let mut docker = Vec::new();
        if let Some(b) = &manifest_json {
            let images: Vec<DockerImage> =
                parse_json(store, "manifest.json", "docker manifest.json", b)?;
            for im in images {
                docker.push(Candidate {
                    names: im.repo_tags.clone().unwrap_or_default(),
                    digest: None,
                    config: config_digest_from_path(&im.config),
                    kind: Kind::Docker(im),
                });
            }
        }
        merge_oci_names(&mut oci);
        let mut chosen = choose(&r.path, r.reference.as_deref(), &oci, &docker)?;
        // Docker ≥ 25 archives describe each image twice: prefer the OCI
        // manifest (it has digests and media types) of the image a
        // manifest.json tag chose.
        if let (Kind::Docker(_), Some(cfg)) = (&chosen.kind, &chosen.config) {
            if let Some(o) = oci
                .iter()
                .find(|o| oci_config(store, o).as_deref() == Some(cfg.as_str()))
            {
                chosen = o;
            }
        }
        let mut image = match &chosen.kind {
            Kind::Oci(d) => resolve_oci(store, d, chosen, platform)?,
            Kind::Docker(im) => resolve_docker(store, im, chosen)?,
        };
        // Docker ≥ 25 archives carry both: tags of manifest.json apply too.
        for c in &docker {
            if c.config.as_deref() == Some(image.config_digest.as_str()) {
                for n in &c.names {
                    if !image.names.contains(n) {
                        image.names.push(n.clone());
                    }
                }
            }
        }
        if platform.explicit && !platform.accepts(&image.platform) {
            return Err(image_err(
                r.path.clone(),
                format!(
                    "the image is for {}, not {} (--platform)",
                    image.platform, platform.platform
                ),
            ));
        }
        Ok(image)
    }

    /// The layers' diffIDs, bottom first.
    pub fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }

    /// Indexes (or loads the indexes of) every layer, checking each against
    /// its diffID the first time its bytes are seen; in parallel.
    pub fn open_layers(&self, opts: &IndexOptions) -> Result<Vec<TarLayer>> {
        crate::tar::open_parallel(self.layers.len(), |i| {
            let l = &self.layers[i];
            TarLayer::open_verified(
                &l.name,
                digest::short(&l.diff_id),
                l.blob.clone(),
                l.digest
                    .as_deref()
                    .filter(|_| l.encoding != Encoding::Plain),
                &l.diff_id,
                opts,
            )
        })
    }
}

/// The config digest of an `index.json` entry that is a manifest (not an
/// index), if it can be read.
fn oci_config(store: &dyn Store, c: &Candidate) -> Option<String> {
    let Kind::Oci(d) = &c.kind else { return None };
    if spec::is_index(&d.media_type) {
        return None;
    }
    let b = read_manifest_verified(store, &d.digest, "manifest").ok()?;
    let m: spec::Manifest = serde_json::from_slice(&b).ok()?;
    Some(m.config.digest.to_ascii_lowercase())
}

/// Entries of `index.json` that share a digest are one image with several names.
fn merge_oci_names(oci: &mut Vec<Candidate>) {
    let mut out: Vec<Candidate> = Vec::new();
    for c in oci.drain(..) {
        if let Some(o) = out.iter_mut().find(|o| o.digest == c.digest) {
            for n in c.names {
                if !o.names.contains(&n) {
                    o.names.push(n);
                }
            }
        } else {
            out.push(c);
        }
    }
    *oci = out;
}

/// `Config` paths in `manifest.json` name the config by its digest
/// (`<hex>.json` in the classic layout, `blobs/sha256/<hex>` since Docker 25).
fn config_digest_from_path(p: &str) -> Option<String> {
    let base = p.rsplit('/').next()?;
    let hex = base.strip_suffix(".json").unwrap_or(base);
    digest::sha256_hex(&format!("sha256:{hex}")).map(|h| format!("sha256:{h}"))
}

/// Picks the image `reference` names (or the only one).
fn choose<'a>(
    path: &Path,
    reference: Option<&str>,
    oci: &'a [Candidate],
    docker: &'a [Candidate],
) -> Result<&'a Candidate> {
    let all = || -> String {
        let mut v: Vec<String> = oci.iter().map(Candidate::label).collect();
        for d in docker {
            let l = d.label();
            if !v.contains(&l) {
                v.push(l);
            }
        }
        v.join("; ")
    };
    let pick =
        |cands: Vec<&'a Candidate>| -> Result<Option<&'a Candidate>> {
            match cands.len() {
                0 => Ok(None),
                1 => Ok(Some(cands[0])),
                _ => {
                    Err(image_err(
                        path.to_owned(),
                        format!(
                    "holds {} images{}; name one as PATH:REF (a tag, a name or @sha256:…): {}",
                    cands.len(),
                    reference.map(|r| format!(" matching {r:?}")).unwrap_or_default(),
                    cands.iter().map(|c| c.label()).collect::<Vec<_>>().join("; ")
                ),
                    ))
                }
            }
        };
    match reference {
        Some(r) => {
            if let Some(c) = pick(oci.iter().filter(|c| c.matches(r)).collect())? {
                return Ok(c);
            }
            if let Some(c) = pick(docker.iter().filter(|c| c.matches(r)).collect())? {
                return Ok(c);
            }
            Err(image_err(
                path.to_owned(),
                format!("has no image {r:?}; it holds: {}", all()),
            ))
        }
        None => {
            let from = if oci.is_empty() { docker } else { oci };
            if let Some(c) = pick(from.iter().collect())? {
                return Ok(c);
            }
            Err(image_err(
                path.to_owned(),
                "holds no image (its index lists none)".into(),
            ))
        }
    }
}

/// Follows an OCI descriptor (index or manifest) to an image.
fn resolve_oci(
    store: &dyn Store,
    d: &Descriptor,
    c: &Candidate,
    want: &PlatformChoice,
) -> Result<Image> {
    let (manifest_desc, plat) = if spec::is_index(&d.media_type) {
        let (m, p) = pick_platform(store, d, want, 0)?;
        (m, Some(p))
    } else {
        (d.clone(), None)
    };
    let what = match &plat {
        Some(p) => format!("manifest for {p}"),
        None => "manifest".to_owned(),
    };
    let bytes = read_manifest_verified(store, &manifest_desc.digest, &what)?;
    let rel = blob_rel(&manifest_desc.digest);
    let m: spec::Manifest = parse_json(store, &rel, "image manifest", &bytes)?;
    if !(m.media_type.is_empty() || spec::is_manifest(&m.media_type)) {
        return Err(image_err(
            store.name(&rel),
            format!("has media type {}, not an image manifest", m.media_type),
        ));
    }
    let for_plat = plat
        .as_ref()
        .map(|p| format!(" for {p}"))
        .unwrap_or_default();
    let cbytes = read_verified(store, &m.config.digest, &format!("config{for_plat}"))?;
    let config: spec::Config =
        parse_json(store, &blob_rel(&m.config.digest), "image config", &cbytes)?;
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != m.layers.len() {
        return Err(image_err(
            store.name(&rel),
            format!(
                "the manifest lists {} layers but the config's rootfs.diff_ids has {}",
                m.layers.len(),
                diff_ids.len()
            ),
        ));
    }
    let mut layers = Vec::new();
    for (i, (l, diff_id)) in m.layers.iter().zip(diff_ids).enumerate() {
        let lrel = blob_rel(&l.digest);
        let name = store.name(&lrel);
        if spec::layer_encoding(&l.media_type).is_none() {
            return Err(image_err(
                name,
                format!(
                    "layer {i} has media type {:?}, which is not a layer type unionfs knows",
                    l.media_type
                ),
            ));
        }
        if digest::sha256_hex(&l.digest).is_none() {
            return Err(image_err(
                name,
                format!(
                    "layer {i} has digest {:?}: unionfs checks sha256 digests only",
                    l.digest
                ),
            ));
        }
        let Some(blob) = store.layer(&lrel, &l.digest, l.size.max(0) as u64)? else {
            return Err(image_err(
                store.path().to_owned(),
                format!("layer {i} (blob {}){for_plat} is missing", l.digest),
            ));
        };
        if blob.len() != l.size as u64 {
            return Err(image_err(
                name,
                format!(
                    "layer {i} is {} bytes, but the manifest says {}",
                    blob.len(),
                    l.size
                ),
            ));
        }
        // The bytes decide, not the media type (skopeo 1.9 labels the
        // uncompressed layers of a docker-archive it copies `tar+gzip`).
        let enc = sniff(store, &lrel, &blob, i)?;
        if enc == Encoding::Plain && !l.digest.eq_ignore_ascii_case(diff_id) {
            return Err(image_err(
                name,
                format!(
                    "layer {i} is an uncompressed tar, so its digest {} must equal its diffID, but the config says {diff_id}",
                    l.digest
                ),
            ));
        }
        layers.push(LayerDesc {
            diff_id: diff_id.to_ascii_lowercase(),
            digest: Some(l.digest.to_ascii_lowercase()),
            media_type: l.media_type.clone(),
            encoding: enc,
            size: blob.len(),
            name,
            blob,
        });
    }
    Ok(Image {
        source: store.path().to_owned(),
        names: c.names.clone(),
        manifest_digest: Some(manifest_desc.digest.to_ascii_lowercase()),
        config_digest: m.config.digest.to_ascii_lowercase(),
        platform: config_platform(&config),
        layers,
        config: cbytes,
    })
}

fn config_platform(c: &spec::Config) -> Platform {
    Platform {
        architecture: c.architecture.clone(),
        os: c.os.clone(),
        variant: c.variant.clone().filter(|v| !v.is_empty()),
    }
}

fn blob_rel(digest: &str) -> String {
    format!(
        "blobs/sha256/{}",
        digest::sha256_hex(digest).unwrap_or_default()
    )
}

/// How a layer blob is encoded, by its first bytes; a compression that is
/// no OCI layer type (bzip2, xz) is an error.
fn sniff(store: &dyn Store, rel: &str, blob: &Blob, i: usize) -> Result<Encoding> {
    match seek::sniff(blob).map_err(|e| Error::io(store.name(rel), e))? {
        Encoding::Unsupported(kind) => Err(image_err(
            store.name(rel),
            format!("layer {i} is {kind}-compressed, which is not an OCI layer type (tar, tar+gzip, tar+zstd)"),
        )),
        enc => Ok(enc),
    }
}

/// Chooses the manifest for `want` in the index `d` (nested indexes followed).
fn pick_platform(
    store: &dyn Store,
    d: &Descriptor,
    want: &PlatformChoice,
    depth: u32,
) -> Result<(Descriptor, Platform)> {
    if depth > 4 {
        return Err(image_err(
            store.name(&blob_rel(&d.digest)),
            "image indexes nest too deep".into(),
        ));
    }
    let bytes = read_manifest_verified(store, &d.digest, "image index")?;
    let index: spec::Index = parse_json(store, &blob_rel(&d.digest), "image index", &bytes)?;
    let mut seen = Vec::new();
    for m in &index.manifests {
        if spec::is_index(&m.media_type) {
            if m.platform.as_ref().is_none_or(|p| want.accepts(p)) {
                if let Ok(found) = pick_platform(store, m, want, depth + 1) {
                    return Ok(found);
                }
            }
            continue;
        }
        let Some(p) = &m.platform else { continue };
        if m.annotation("vnd.docker.reference.type").is_some() || p.os == "unknown" {
            continue; // attestations, signatures
        }
        if want.accepts(p) {
            return Ok((m.clone(), p.clone()));
        }
        seen.push(p.to_string());
    }
    Err(image_err(
        store.path().to_owned(),
        format!(
            "has no manifest for {} in its image index {} (it has: {}); choose one with --platform",
            want.platform,
            digest::short(&d.digest),
            if seen.is_empty() {
                "none".into()
            } else {
                seen.join(", ")
            }
        ),
    ))
}

/// Follows a `manifest.json` entry to an image.
fn resolve_docker(store: &dyn Store, im: &DockerImage, c: &Candidate) -> Result<Image> {
    let Some(cbytes) = read_small(store, &im.config)? else {
        return Err(image_err(
            store.path().to_owned(),
            format!(
                "manifest.json names the config {}, which the archive lacks",
                im.config
            ),
        ));
    };
    let config_digest = digest::of(&cbytes);
    if let Some(want) = &c.config {
        if *want != config_digest {
            return Err(image_err(
                store.name(&im.config),
                format!("the config's content does not match its name: expected {want}, got {config_digest}"),
            ));
        }
    }
    let config: spec::Config = parse_json(store, &im.config, "image config", &cbytes)?;
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != im.layers.len() {
        return Err(image_err(
            store.name("manifest.json"),
            format!(
                "lists {} layers but the config's rootfs.diff_ids has {}",
                im.layers.len(),
                diff_ids.len()
            ),
        ));
    }
    let mut layers = Vec::new();
    for (i, (p, diff_id)) in im.layers.iter().zip(diff_ids).enumerate() {
        let Some(blob) = store.blob(p)? else {
            return Err(image_err(
                store.path().to_owned(),
                format!("manifest.json names layer {i} at {p}, which the archive lacks"),
            ));
        };
        let enc = sniff(store, p, &blob, i)?;
        // A layer at blobs/sha256/<hex> (Docker ≥ 25) is named by its digest.
        let digest = (enc != Encoding::Plain)
            .then(|| config_digest_from_path(p))
            .flatten();
        layers.push(LayerDesc {
            diff_id: diff_id.to_ascii_lowercase(),
            digest,
            encoding: enc,
            media_type: match enc {
                Encoding::Gzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Encoding::Zstd => "application/vnd.docker.image.rootfs.diff.tar.zstd",
                _ => "application/vnd.docker.image.rootfs.diff.tar",
            }
            .into(),
            size: blob.len(),
            name: store.name(p),
            blob,
        });
    }
    Ok(Image {
        source: store.path().to_owned(),
        names: c.names.clone(),
        manifest_digest: None,
        config_digest,
        platform: config_platform(&config),
        layers,
        config: cbytes,
    })
}

/// Returns the reason to refuse `layer` as a loose layer tar, if its root
/// holds an image's own files: `manifest.json` (a `docker save` archive) or
/// `oci-layout` + `index.json` (an OCI archive). Serving it as a layer would
/// show the archive's files instead of the image.
pub fn refuse_as_layer(layer: &TarLayer) -> Option<String> {
    let idx = &layer.index;
    let root = crate::tar::EntryId::ROOT;
    let has = |n: &[u8]| {
        idx.child(root, n)
            .is_some_and(|e| !idx.entry(e).is_whiteout() && !idx.entry(e).is_dir())
    };
    let what = if has(b"manifest.json") {
        "a docker save archive (it has manifest.json)"
    } else if has(b"oci-layout") && has(b"index.json") {
        "an OCI archive (it has oci-layout and index.json)"
    } else {
        return None;
    };
    Some(format!(
        "is {what}, not a layer tar: use --image {}",
        layer.path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_digests_from_manifest_json_paths() {
        let h = "ab".repeat(32);
        assert_eq!(
            config_digest_from_path(&format!("{h}.json")),
            Some(format!("sha256:{h}"))
        );
        assert_eq!(
            config_digest_from_path(&format!("blobs/sha256/{h}")),
            Some(format!("sha256:{h}"))
        );
        assert_eq!(config_digest_from_path("config.json"), None);
    }

    #[test]
    fn platforms() {
        let c = PlatformChoice::new(Some("linux/arm64/v8")).unwrap();
        let p = |a: &str, v: Option<&str>| Platform {
            os: "linux".into(),
            architecture: a.into(),
            variant: v.map(Into::into),
        };
        assert!(c.accepts(&p("arm64", None)));
        assert!(c.accepts(&p("arm64", Some("v8"))));
        assert!(!c.accepts(&p("amd64", None)));
        let c = PlatformChoice::new(Some("linux/arm")).unwrap();
        assert!(c.accepts(&p("arm", Some("v7"))));
        assert!(PlatformChoice::new(Some("linux")).is_err());
    }
}
