//! Images in a registry: `--image docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`.
//!
//! The manifest (or image index, then the manifest for the platform) and
//! the config are fetched whole and checked against their digests, as for a
//! layout; each layer becomes a [`Remote`] blob that is read lazily by
//! ranges ([`crate::blob::remote`]). The resolution itself is the layout's
//! (`resolve_oci`): a registry is one more [`Store`], whose documents come
//! from `/v2/<repo>/manifests/` and `/v2/<repo>/blobs/`.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::artifact::Wanted;
use super::spec::{self, Descriptor};
use super::store::{image_err, Store, MAX_JSON};
use super::{digest, resolve_oci, Candidate, Image, Kind, PlatformChoice};
use crate::blob::remote::{Fetch, Remote};
use crate::blob::Blob;
use crate::error::{Error, Result};
use crate::registry::{Client, Reference};
use crate::tar::IndexOptions;

impl Fetch for Client {
    fn range(&self, digest: &str, off: u64, len: u64) -> io::Result<Vec<u8>> {
        self.blob_range(digest, off, len)
    }
    fn stream(&self, digest: &str, off: u64) -> io::Result<Box<dyn Read + Send>> {
        self.blob_stream(digest, off)
    }
    fn origin(&self) -> String {
        let r = self.reference();
        format!("docker://{}/{}", r.host, r.repo)
    }
}

/// A registry repository as a [`Store`].
struct RegistryStore {
    client: Arc<Client>,
    /// `docker://host/repo:tag`, for messages.
    name: PathBuf,
    /// The document the reference named, already fetched: (digest, bytes).
    top: (String, Vec<u8>),
    cache: Option<PathBuf>,
    /// Look for a pushed index artifact (not `--no-index-artifact`).
    artifact: bool,
    /// The last image manifest fetched (the one whose config comes next).
    manifest: parking_lot::Mutex<Option<(String, Vec<u8>)>>,
}

impl RegistryStore {
    /// Once the config of the manifest just fetched is known (both checked
    /// against their digests), adopts the pushed indexes of its layers,
    /// before any layer is touched: with them, no blob byte is read until a
    /// file is.
    fn adopt_indexes(&self, config_digest: &str, config: &[u8]) {
        let Some(cache) = self.cache.as_deref().filter(|_| self.artifact) else {
            return;
        };
        let Some((mdigest, mbytes)) = self.manifest.lock().clone() else {
            return;
        };
        if digest::of(&mbytes) != mdigest || digest::of(config) != config_digest {
            return; // the resolution reports it
        }
        let (Ok(m), Ok(c)) = (
            serde_json::from_slice::<spec::Manifest>(&mbytes),
            serde_json::from_slice::<spec::Config>(config),
        ) else {
            return;
        };
        if !m.config.digest.eq_ignore_ascii_case(config_digest)
            || m.layers.len() != c.rootfs.diff_ids.len()
        {
            return;
        }
        let wanted: Vec<Wanted> = m
            .layers
            .iter()
            .zip(&c.rootfs.diff_ids)
            .map(|(l, d)| Wanted {
                digest: l.digest.to_ascii_lowercase(),
                size: l.size.max(0) as u64,
                diff_id: d.to_ascii_lowercase(),
            })
            .collect();
        super::artifact::fetch(&self.client, &mdigest, &wanted, cache);
    }
}

fn registry_err(e: crate::registry::Error) -> Error {
    Error::Registry(e.to_string())
}

impl Store for RegistryStore {
    fn path(&self) -> &Path {
        &self.name
    }

    fn blob(&self, rel: &str) -> Result<Option<Blob>> {
        // Only blobs by digest exist in a registry (no oci-layout, no
        // index.json).
        let Some(hex) = rel.strip_prefix("blobs/sha256/") else {
            return Ok(None);
        };
        let d = format!("sha256:{hex}");
        let size = self.client.blob_size(&d).map_err(registry_err)?;
        self.layer(rel, &d, size)
    }

    fn document(&self, digest: &str, manifest: bool) -> Result<Option<Vec<u8>>> {
        let bytes = if digest.eq_ignore_ascii_case(&self.top.0) {
            self.top.1.clone()
        } else if manifest {
            self.client.manifest(digest).map_err(registry_err)?.bytes
        } else {
            self.client.blob(digest, MAX_JSON).map_err(registry_err)?
        };
        if manifest {
            *self.manifest.lock() = Some((digest.to_ascii_lowercase(), bytes.clone()));
        } else {
            self.adopt_indexes(digest, &bytes);
        }
        Ok(Some(bytes))
    }

    fn layer(&self, _rel: &str, digest: &str, size: u64) -> Result<Option<Blob>> {
        let fetch: Arc<dyn Fetch> = self.client.clone();
        let r = Remote::new(fetch, digest, size, self.cache.as_deref());
        Ok(Some(Blob::remote(Arc::new(r))))
    }

    fn name(&self, rel: &str) -> PathBuf {
        match rel.strip_prefix("blobs/sha256/") {
            Some(hex) => {
                let r = self.client.reference();
                PathBuf::from(format!("docker://{}/{}@sha256:{hex}", r.host, r.repo))
            }
            None => PathBuf::from(format!("{}:{rel}", self.name.display())),
        }
    }
}

/// A client for the repository of `r`.
pub fn client(r: &Reference, opts: &IndexOptions) -> Result<Client> {
    Client::new(r, &opts.registry).map_err(registry_err)
}

/// Resolves `r` in its registry to an image whose layers are read lazily.
pub fn open(r: &Reference, platform: &PlatformChoice, opts: &IndexOptions) -> Result<Image> {
    let client = Arc::new(Client::new(r, &opts.registry).map_err(registry_err)?);
    let top = client.manifest(r.reference()).map_err(registry_err)?;
    let name = PathBuf::from(r.to_string());
    let media_type = if top.media_type.is_empty() {
        media_type_of(&top.bytes)
    } else {
        top.media_type.clone()
    };
    if !(spec::is_index(&media_type) || spec::is_manifest(&media_type)) {
        return Err(image_err(
            name,
            format!("is a {media_type:?}, not an image manifest or index"),
        ));
    }
    let desc = Descriptor {
        media_type,
        digest: top.digest.to_ascii_lowercase(),
        size: top.bytes.len() as i64,
        annotations: None,
        platform: None,
    };
    let store = RegistryStore {
        client,
        name: name.clone(),
        top: (desc.digest.clone(), top.bytes),
        cache: opts.cache_dir.clone(),
        artifact: !(opts.no_index_artifact || opts.rebuild),
        manifest: parking_lot::Mutex::new(None),
    };
    let names = match &r.tag {
        Some(t) => vec![format!("{}/{}:{t}", r.host, r.repo)],
        None => Vec::new(),
    };
    let cand = Candidate {
        names,
        digest: Some(desc.digest.clone()),
        config: None,
        kind: Kind::Oci(desc.clone()),
    };
    let image = resolve_oci(&store, &desc, &cand, platform)?;
    if platform.explicit && !platform.accepts(&image.platform) {
        return Err(image_err(
            name,
            format!(
                "the image is for {}, not {} (--platform)",
                image.platform, platform.platform
            ),
        ));
    }
    log::info!(
        target: "unionfs::image",
        "{}: manifest {}, {} layers",
        r,
        digest::short(image.manifest_digest.as_deref().unwrap_or("?")),
        image.layers.len()
    );
    Ok(image)
}

/// The `mediaType` a manifest or index names itself, where the registry
/// sent no Content-Type.
fn media_type_of(b: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct M {
        #[serde(rename = "mediaType", default)]
        media_type: String,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<M>(b) {
        Ok(m) if !m.media_type.is_empty() => m.media_type,
        Ok(m) if m.manifests.is_some() => spec::OCI_INDEX.into(),
        _ => spec::OCI_MANIFEST.into(),
    }
}
