//! The JSON documents of an image, as the OCI image spec (image-layout,
//! image-index, manifest, config) and docker's `docker save` format
//! (`manifest.json`) define them. Only the fields unionfs reads; unknown
//! fields are ignored, as the specs require of consumers.

use std::collections::BTreeMap;

use serde::Deserialize;

/// OCI image index (`index.json`, or a nested index blob).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker manifest list (what an OCI index is to docker).
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// `org.opencontainers.image.ref.name`: the tag (or name) of an index entry.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// `io.containerd.image.name`: the full name containerd and Docker ≥ 25 record.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// A content descriptor.
#[derive(Clone, Debug, Deserialize)]
pub struct Descriptor {
    /// Media type ("" when absent).
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// `algorithm:hex`.
    pub digest: String,
    /// Size in bytes.
    #[serde(default)]
    pub size: i64,
    /// Annotations.
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    /// The platform of a manifest in an index.
    #[serde(default)]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// The annotation `key`, if present.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }
}

/// A platform, as an index entry or a config records it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Platform {
    /// CPU architecture, GOARCH style (`amd64`, `arm64`).
    #[serde(default)]
    pub architecture: String,
    /// Operating system (`linux`).
    #[serde(default)]
    pub os: String,
    /// CPU variant (`v7`, `v8`).
    #[serde(default)]
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = self.variant.as_deref().filter(|v| !v.is_empty()) {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// An image index (also a docker manifest list).
#[derive(Clone, Debug, Deserialize)]
pub struct Index {
    /// Media type, if given.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// The manifests (or nested indexes) it lists.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// An image manifest.
#[derive(Clone, Debug, Deserialize)]
pub struct Manifest {
    /// Media type, if given.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// The config blob.
    pub config: Descriptor,
    /// The layers, bottom first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// The parts of an image config unionfs reads.
#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    /// Architecture the image was built for.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// CPU variant.
    #[serde(default)]
    pub variant: Option<String>,
    /// The layers' diffIDs, bottom first.
    pub rootfs: RootFs,
}

/// `rootfs` of an image config.
#[derive(Clone, Debug, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// sha256 of each uncompressed layer tar, bottom first.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// One image of a `docker save` archive's `manifest.json`.
#[derive(Clone, Debug, Deserialize)]
pub struct DockerImage {
    /// Path of the config in the archive.
    #[serde(rename = "Config")]
    pub config: String,
    /// The image's names.
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    /// Paths of the layer tars in the archive, bottom first.
    #[serde(rename = "Layers", default)]
    pub layers: Vec<String>,
}

/// How a layer's bytes are encoded, from its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerEncoding {
    /// A plain tar.
    Tar,
    /// A compressed tar (the compression's name).
    Compressed(&'static str),
}

/// The encoding a layer media type names, or `None` for a type that is not
/// a layer at all.
pub fn layer_encoding(media_type: &str) -> Option<LayerEncoding> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar" => Some(LayerEncoding::Tar),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
            Some(LayerEncoding::Compressed("gzip"))
        }
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => {
            Some(LayerEncoding::Compressed("zstd"))
        }
        _ => None,
    }
}

/// Returns true if and only if `media_type` is an image index or manifest list.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// Returns true if and only if `media_type` is an image manifest.
pub fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// The platform this build runs on, GOARCH style (`linux/amd64`).
pub fn host_platform() -> Platform {
    let (architecture, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", None),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
        "powerpc64" => ("ppc64", None),
        "loongarch64" => ("loong64", None),
        other => (other, None),
    };
    Platform {
        architecture: architecture.into(),
        os: std::env::consts::OS.into(),
        variant: variant.map(str::to_owned),
    }
}

/// Parses `OS/ARCH[/VARIANT]`.
pub fn parse_platform(s: &str) -> Result<Platform, String> {
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
            os: (*os).into(),
            architecture: (*arch).into(),
            variant: parts
                .get(2)
                .filter(|v| !v.is_empty())
                .map(|v| (*v).to_owned()),
        }),
        _ => Err(format!(
            "--platform {s:?}: expected OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm/v7"
        )),
    }
}
