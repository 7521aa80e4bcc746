//! Writing what `unionfs commit` makes: a layer alone, or a new image — the
//! base image's layers as they are, the new layer on top, a new config and
//! manifest — as a docker archive (what `docker load` and `podman load`
//! read), an OCI layout directory or an OCI archive.
//!
//! - The new layer is streamed once: the tar goes through the encoder (which
//!   digests the tar for the diffID, compresses, and digests the blob) straight
//!   into its place in the output. In an archive its member header is written
//!   after its data (a placeholder first, then patched: names are digests,
//!   known only at the end).
//! - Base layers are copied byte for byte (same digests), and checked against
//!   their digest while they are copied: a base blob that changed since it was
//!   indexed fails the commit, it is not shipped.
//! - The config is the base image's with the new diffID appended to
//!   `rootfs.diff_ids`, a `history` entry and `created` set; a commit of loose
//!   `--layers` gets a minimal config (host platform). JSON is written with
//!   sorted keys and no spaces: the same inputs and `created` give the same
//!   bytes.
//! - Media types are OCI's (`application/vnd.oci.image.layer.v1.tar[+gzip|+zstd]`),
//!   chosen by what the bytes are, whatever the base manifest said.
//! - Nothing half-written ever carries the final name: an archive or a layer
//!   is written under a temporary name next to it, synced, then renamed; in
//!   an OCI layout each blob is, and `index.json` is replaced last.

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::blob::encode::{Compression, Digests, HashingWriter, LayerEncoder};
use crate::blob::seek::Encoding;
use crate::blob::Blob;
use crate::error::{Error, Result};
use crate::image::digest;
use crate::tar::scan::ReadAt;
use crate::tar::write::{header_bytes, Entry, EntryKind};

/// What to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The new layer alone, as a tar (compressed if asked).
    Layer,
    /// A `docker save`-style archive (`manifest.json`).
    DockerArchive,
    /// An OCI image layout directory.
    Oci,
    /// An OCI image layout in a tar.
    OciArchive,
}

impl Format {
    /// `layer`, `docker-archive`, `oci` or `oci-archive`.
    pub fn parse(s: &str) -> std::result::Result<Format, String> {
        Ok(match s {
            "layer" => Format::Layer,
            "docker-archive" | "docker" => Format::DockerArchive,
            "oci" => Format::Oci,
            "oci-archive" => Format::OciArchive,
            other => {
                return Err(format!(
                    "{other:?}: expected docker-archive, oci, oci-archive or layer"
                ))
            }
        })
    }

    /// The name the user types.
    pub fn word(self) -> &'static str {
        match self {
            Format::Layer => "layer",
            Format::DockerArchive => "docker-archive",
            Format::Oci => "oci",
            Format::OciArchive => "oci-archive",
        }
    }

    /// The compression a format gets by default: none for a layer and a
    /// docker archive (as `docker save` writes), gzip for OCI (as skopeo and
    /// umoci write, and registries expect).
    pub fn default_compression(self) -> Compression {
        match self {
            Format::Layer | Format::DockerArchive => Compression::None,
            Format::Oci | Format::OciArchive => Compression::Gzip,
        }
    }
}

/// A layer of the base image, carried over as it is.
pub struct BaseLayer {
    /// Its bytes as stored.
    pub blob: Blob,
    /// How they are encoded.
    pub encoding: Encoding,
    /// The uncompressed tar's digest (`None` for an uncompressed blob of a
    /// loose layer: its digest, computed while it is copied).
    pub diff_id: Option<String>,
    /// The blob's digest where known (else computed while copying; for an
    /// uncompressed blob it must equal the diffID).
    pub digest: Option<String>,
    /// For messages: where it comes from.
    pub name: PathBuf,
}

/// The commit's history entry and the config's times.
#[derive(Clone, Debug, Default)]
pub struct Meta {
    /// RFC 3339 time for `created`.
    pub created: String,
    /// `history[].comment` (`docker commit -m`).
    pub message: Option<String>,
    /// `author` (`docker commit -a`).
    pub author: Option<String>,
}

/// The image the new layer goes on.
pub struct Base {
    /// The base config (`None`: loose layers, a minimal config is made).
    pub config: Option<Vec<u8>>,
    /// Its layers, bottom first.
    pub layers: Vec<BaseLayer>,
}

/// What was written.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Written {
    /// The output path.
    pub output: PathBuf,
    /// Its format.
    pub format: &'static str,
    /// The new layer's diffID.
    pub diff_id: String,
    /// The new layer blob's digest.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes, as stored.
    pub size: u64,
    /// Its uncompressed size.
    pub tar_size: u64,
    /// The config's digest (the image ID), for an image.
    pub config_digest: Option<String>,
    /// The manifest's digest, for an image.
    pub manifest_digest: Option<String>,
    /// The image's chainID (of all its layers), for an image.
    pub chain_id: Option<String>,
    /// The tag written, if any.
    pub tag: Option<String>,
}

/// Writes `base` plus a new layer (written as a tar by `layer` into the
/// writer it is given) to `out` in `format`.
pub fn write(
    out: &Path,
    format: Format,
    compression: Compression,
    tag: Option<&str>,
    meta: &Meta,
    base: Option<&Base>,
    layer: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
) -> Result<Written> {
    let media_type = compression.oci_media_type().to_owned();
    match format {
        Format::Layer => {
            let tmp = TempFile::new(out)?;
            let f = Writeback::new(tmp.create()?);
            let mut enc =
                LayerEncoder::new(BufWriter::with_capacity(1 << 20, f), compression, None)
                    .map_err(|e| Error::io(out, e))?;
            layer(&mut enc)?;
            let (w, d) = enc.finish().map_err(|e| Error::io(out, e))?;
            let f = w.into_inner().map_err(|e| Error::io(out, e.into_error()))?;
            tmp.commit(f.into_file())?;
            Ok(written(out, format, &d, media_type, None, None, None, tag))
        }
        Format::DockerArchive | Format::OciArchive => {
            let base = base.ok_or_else(|| no_base(format))?;
            let tmp = TempFile::new(out)?;
            let mut a = Archive::new(tmp.create()?, out);
            let oci = format == Format::OciArchive;
            let name = |hex: &str| {
                if oci {
                    format!("blobs/sha256/{hex}")
                } else {
                    format!("{hex}.tar")
                }
            };
            if oci {
                a.bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
                a.dir("blobs")?;
                a.dir("blobs/sha256")?;
            }
            let mut descs = Vec::new();
            for l in &base.layers {
                let d = a.streamed(|w| copy_verified(l, w), |d| name(hex(&d.digest)))?;
                descs.push(d);
            }
            let mut failed = None;
            let d = a.streamed(
                |w| encode(w, compression, layer, &mut failed),
                |d| name(hex(&d.digest)),
            );
            let d = stashed(d, failed)?;
            let new = d.clone();
            descs.push(d);
            let img = Image::new(base, &descs, &media_type, meta)?;
            let cfg_hex = hex(&img.config_digest).to_owned();
            let manifest_digest = if oci {
                a.bytes(&name(&cfg_hex), &img.config)?;
                let md = digest::of(&img.manifest);
                a.bytes(&name(hex(&md)), &img.manifest)?;
                let index = oci_index(&[], &md, img.manifest.len(), tag);
                a.bytes("index.json", &index)?;
                Some(md)
            } else {
                a.bytes(&format!("{cfg_hex}.json"), &img.config)?;
                let layers: Vec<String> = descs.iter().map(|d| name(hex(&d.digest))).collect();
                let m = json!([{
                    "Config": format!("{cfg_hex}.json"),
                    "RepoTags": tag.map(|t| vec![t.to_owned()]),
                    "Layers": layers,
                }]);
                a.bytes("manifest.json", &to_json(&m))?;
                None
            };
            tmp.commit(a.finish()?)?;
            Ok(written(
                out,
                format,
                &new,
                media_type,
                Some(img.config_digest),
                manifest_digest,
                Some(img.chain_id),
                tag,
            ))
        }
        Format::Oci => {
            let base = base.ok_or_else(|| no_base(format))?;
            let layout = Layout::open(out)?;
            let r = write_layout(&layout, out, compression, tag, meta, base, layer);
            if r.is_err() && layout.created {
                // Ours alone: nothing of a failed commit stays.
                let _ = std::fs::remove_dir_all(out);
            }
            r
        }
    }
}

/// The `oci` format, into `layout` (opened at `out`).
fn write_layout(
    layout: &Layout,
    out: &Path,
    compression: Compression,
    tag: Option<&str>,
    meta: &Meta,
    base: &Base,
    layer: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
) -> Result<Written> {
    let media_type = compression.oci_media_type().to_owned();
    let format = Format::Oci;
    let mut descs = Vec::new();
    for l in &base.layers {
        descs.push(layout.blob(|w| copy_verified(l, w))?);
    }
    let mut failed = None;
    let new = layout.blob(|w| encode(w, compression, layer, &mut failed));
    let new = stashed(new, failed)?;
    descs.push(new.clone());
    let img = Image::new(base, &descs, &media_type, meta)?;
    layout.bytes(&img.config)?;
    let manifest_digest = layout.bytes(&img.manifest)?;
    layout.set_index(&manifest_digest, img.manifest.len(), tag)?;
    Ok(written(
        out,
        format,
        &new,
        media_type,
        Some(img.config_digest),
        Some(manifest_digest),
        Some(img.chain_id),
        tag,
    ))
}

/// Encodes the layer `layer` writes into `w`; a failure of `layer` itself
/// (an upper file it could not read) is kept in `failed`, to be reported as
/// it is rather than as an error of the output.
fn encode(
    w: &mut dyn Write,
    compression: Compression,
    layer: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
    failed: &mut Option<Error>,
) -> io::Result<Digests> {
    let mut enc = LayerEncoder::new(w, compression, None)?;
    if let Err(e) = layer(&mut enc) {
        *failed = Some(e);
        return Err(io::Error::other("the layer could not be written"));
    }
    Ok(enc.finish()?.1)
}

fn stashed<T>(r: Result<T>, failed: Option<Error>) -> Result<T> {
    match (r, failed) {
        (_, Some(e)) => Err(e),
        (r, None) => r,
    }
}

#[allow(clippy::too_many_arguments)]
fn written(
    out: &Path,
    format: Format,
    d: &Digests,
    media_type: String,
    config_digest: Option<String>,
    manifest_digest: Option<String>,
    chain_id: Option<String>,
    tag: Option<&str>,
) -> Written {
    Written {
        output: out.to_owned(),
        format: format.word(),
        diff_id: d.diff_id.clone(),
        digest: d.digest.clone(),
        media_type,
        size: d.size,
        tar_size: d.uncompressed_size,
        config_digest,
        manifest_digest,
        chain_id,
        tag: tag.map(str::to_owned),
    }
}

fn no_base(f: Format) -> Error {
    Error::Usage(format!(
        "--format {} writes an image: give the base with --image or --layers (or use --format layer)",
        f.word()
    ))
}

fn hex(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap_or(d)
}

fn to_json(v: &Value) -> Vec<u8> {
    // serde_json's maps are sorted (no preserve_order): deterministic.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Copies a base layer's bytes to `w`, checking them against its digest
/// (and, uncompressed, its diffID).
fn copy_verified(l: &BaseLayer, w: &mut dyn Write) -> io::Result<Digests> {
    let mut h = HashingWriter::new(w);
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    let len = l.blob.len();
    while off < len {
        let want = (len - off).min(buf.len() as u64) as usize;
        let n = l.blob.read_at(&mut buf[..want], off)?;
        if n == 0 {
            return Err(io::Error::other(format!(
                "{}: ends at byte {off} of {len}: it changed since it was read",
                l.name.display()
            )));
        }
        h.write_all(&buf[..n])?;
        off += n as u64;
    }
    let (_, got, size) = h.finish();
    let want = match (&l.digest, &l.diff_id, l.encoding) {
        (Some(d), _, _) => Some(d.as_str()),
        (None, Some(d), Encoding::Plain) => Some(d.as_str()),
        _ => None,
    };
    if let Some(want) = want {
        if !want.eq_ignore_ascii_case(&got) {
            return Err(io::Error::other(format!(
                "{}: digest mismatch while copying the layer: expected {want}, got {got} (it changed since it was indexed)",
                l.name.display()
            )));
        }
    }
    let diff_id = match (&l.diff_id, l.encoding) {
        (Some(d), _) => d.clone(),
        (None, Encoding::Plain) => got.clone(),
        (None, _) => {
            return Err(io::Error::other(format!(
                "{}: a compressed layer without a known diffID",
                l.name.display()
            )))
        }
    };
    Ok(Digests {
        diff_id,
        digest: got,
        size,
        uncompressed_size: 0,
    })
}

/// The layer media type of a base layer, by what its bytes are.
fn base_media_type(e: Encoding) -> &'static str {
    match e {
        Encoding::Gzip => Compression::Gzip.oci_media_type(),
        Encoding::Zstd => Compression::Zstd.oci_media_type(),
        _ => Compression::None.oci_media_type(),
    }
}

/// The new image's config and manifest.
struct Image {
    config: Vec<u8>,
    config_digest: String,
    manifest: Vec<u8>,
    chain_id: String,
}

impl Image {
    /// `descs`: every layer, base ones first, as written.
    fn new(base: &Base, descs: &[Digests], media_type: &str, meta: &Meta) -> Result<Image> {
        let mut cfg: Value = match &base.config {
            Some(b) => serde_json::from_slice(b).map_err(|e| {
                Error::Usage(format!("the base image's config is not valid JSON: {e}"))
            })?,
            None => {
                let p = crate::image::spec::host_platform();
                let mut v = json!({
                    "architecture": p.architecture,
                    "os": p.os,
                    "config": {},
                });
                if let Some(var) = p.variant {
                    v["variant"] = json!(var);
                }
                v
            }
        };
        let Some(obj) = cfg.as_object_mut() else {
            return Err(Error::Usage(
                "the base image's config is not a JSON object".into(),
            ));
        };
        let diff_ids: Vec<String> = descs.iter().map(|d| d.diff_id.clone()).collect();
        obj.insert(
            "rootfs".into(),
            json!({"type": "layers", "diff_ids": diff_ids}),
        );
        obj.insert("created".into(), json!(meta.created));
        if let Some(a) = &meta.author {
            obj.insert("author".into(), json!(a));
        }
        let mut h = serde_json::Map::new();
        h.insert("created".into(), json!(meta.created));
        h.insert("created_by".into(), json!("unionfs commit"));
        if let Some(m) = &meta.message {
            h.insert("comment".into(), json!(m));
        }
        if let Some(a) = &meta.author {
            h.insert("author".into(), json!(a));
        }
        let history = obj.entry("history").or_insert_with(|| json!([]));
        match history.as_array_mut() {
            Some(a) => a.push(Value::Object(h)),
            None => *history = json!([Value::Object(h)]),
        }
        let config = to_json(&cfg);
        let config_digest = digest::of(&config);
        let mut layers = Vec::new();
        let n = descs.len();
        for (i, d) in descs.iter().enumerate() {
            let mt = if i + 1 == n {
                media_type
            } else {
                base_media_type(base.layers[i].encoding)
            };
            layers.push(json!({"mediaType": mt, "digest": d.digest, "size": d.size}));
        }
        let manifest = to_json(&json!({
            "schemaVersion": 2,
            "mediaType": crate::image::spec::OCI_MANIFEST,
            "config": {
                "mediaType": crate::image::spec::OCI_CONFIG,
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": layers,
        }));
        let chain_id = digest::chain_ids(&diff_ids).pop().unwrap_or_default();
        Ok(Image {
            config,
            config_digest,
            manifest,
            chain_id,
        })
    }
}

/// An `index.json` with the manifests of `keep` and the new one.
fn oci_index(keep: &[Value], manifest_digest: &str, size: usize, tag: Option<&str>) -> Vec<u8> {
    let mut d = json!({
        "mediaType": crate::image::spec::OCI_MANIFEST,
        "digest": manifest_digest,
        "size": size,
    });
    if let Some(t) = tag {
        // ref.name is the tag (what `skopeo copy oci:DIR:TAG` and `umoci
        // unpack --image DIR:TAG` look for); containerd's name is the whole.
        d["annotations"] = json!({
            crate::image::spec::REF_NAME: tag_part(t),
            crate::image::spec::CONTAINERD_NAME: t,
        });
    }
    let mut manifests: Vec<Value> = keep.to_vec();
    manifests.push(d);
    to_json(&json!({
        "schemaVersion": 2,
        "mediaType": crate::image::spec::OCI_INDEX,
        "manifests": manifests,
    }))
}

/// The tag of `NAME[:TAG]` (`latest` if none; a `:` before the last `/` is
/// a registry's port).
pub fn tag_part(name: &str) -> &str {
    let last = name.rsplit('/').next().unwrap_or(name);
    last.rsplit_once(':').map_or("latest", |(_, t)| t)
}

/// Checks `NAME[:TAG]` as docker's reference grammar does (a lowercase
/// repository path, an optional registry host with a port first, a tag of
/// word characters, `.` and `-`) and returns it with `:latest` added when it
/// has no tag, as `docker commit` and `docker tag` do. (`docker load` loads
/// an image whose tag it cannot parse untagged, without an error.)
pub fn full_tag(name: &str) -> std::result::Result<String, String> {
    let bad = |why: &str| Err(format!("--tag {name:?}: {why}"));
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], &name[last_slash + i + 1..]),
        None => (name, "latest"),
    };
    let tag_ok = tag.len() <= 128
        && tag
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !tag_ok {
        return bad("the tag must be 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'");
    }
    let mut comps: Vec<&str> = repo.split('/').collect();
    // A first component with a '.' or ':' (or localhost) is a registry host.
    if comps.len() > 1
        && (comps[0].contains('.') || comps[0].contains(':') || comps[0] == "localhost")
    {
        comps.remove(0);
    }
    let comp_ok = |c: &str| {
        !c.is_empty()
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
            && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
    };
    if comps.is_empty() || !comps.iter().all(|c| comp_ok(c)) {
        return bad("the name must be lowercase letters, digits and '.', '_' or '-' separators, components separated by '/'");
    }
    Ok(format!("{repo}:{tag}"))
}

/// Removes what an interrupted run left next to `out` (`PREFIX<pid>` of a
/// process that no longer exists: Ctrl-C or a crash skips the cleanup).
/// Best effort: a name whose process is alive, or unreadable, stays.
fn remove_stale(out: &Path, prefix: &std::ffi::OsStr) {
    use std::os::unix::ffi::OsStrExt;
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = prefix.as_bytes();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.as_bytes().strip_prefix(prefix) else {
            continue;
        };
        let alive = std::str::from_utf8(pid)
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| Path::new("/proc").join(p.to_string()).exists());
        if !alive {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A file written under a temporary name next to its final one, renamed
/// when complete (removed if dropped before).
pub struct TempFile {
    path: PathBuf,
    tmp: PathBuf,
    done: bool,
}

impl TempFile {
    /// The temporary name for `out`: `.NAME.unionfs-tmp-PID` next to it.
    pub fn new(out: &Path) -> Result<TempFile> {
        let name = out
            .file_name()
            .ok_or_else(|| Error::Usage(format!("{}: not a file name to write", out.display())))?;
        let mut t = std::ffi::OsString::from(".");
        t.push(name);
        t.push(".unionfs-tmp-");
        remove_stale(out, &t);
        t.push(std::process::id().to_string());
        Ok(TempFile {
            path: out.to_owned(),
            tmp: out.with_file_name(t),
            done: false,
        })
    }

    /// Creates the temporary file (mode 0644, not following a symlink).
    pub fn create(&self) -> Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o644)
            .open(&self.tmp)
            // Named by the path the user gave: the temporary name means nothing to them.
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Syncs `f` and gives it the final name.
    pub fn commit(mut self, f: File) -> Result<()> {
        f.sync_all().map_err(|e| Error::io(&self.path, e))?;
        drop(f);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A file written front to back whose dirty pages are sent to the disk as
/// they are written (every [`WRITEBACK_STEP`]), so that the `fsync` before
/// the rename has little left to do: a 1 GiB layer no longer waits for the
/// whole of it at the end.
struct Writeback {
    f: File,
    /// Where the next write goes.
    pos: u64,
    /// Writeback has been started below this offset.
    started: u64,
}

/// How much is written before writeback of it is started.
const WRITEBACK_STEP: u64 = 8 << 20;

impl Writeback {
    fn new(f: File) -> Writeback {
        Writeback {
            f,
            pos: 0,
            started: 0,
        }
    }

    fn into_file(self) -> File {
        self.f
    }
}

impl Write for Writeback {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        use std::os::fd::AsFd;
        let n = self.f.write(b)?;
        self.pos += n as u64;
        if self.pos >= self.started + WRITEBACK_STEP {
            // A hint: a filesystem that refuses it just syncs later.
            let _ =
                crate::sys::start_writeback(self.f.as_fd(), self.started, self.pos - self.started);
            self.started = self.pos;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.f.flush()
    }
}

impl Seek for Writeback {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = self.f.seek(to)?;
        Ok(self.pos)
    }
}

/// A counting writer: where the archive is.
struct Counting<W: Write> {
    inner: W,
    pos: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A tar archive of image files, members in the order written; a member
/// of unknown size and name is written data first, header patched after.
struct Archive {
    w: Counting<BufWriter<Writeback>>,
    path: PathBuf,
}

/// Member headers: root, 0644, mtime 0 — nothing of this host.
fn member(name: &str, kind: EntryKind, size: u64) -> Entry {
    Entry {
        path: name.as_bytes().to_vec(),
        mode: if matches!(kind, EntryKind::Dir) {
            0o755
        } else {
            0o644
        },
        kind,
        uid: 0,
        gid: 0,
        mtime: 0,
        size,
        xattrs: Vec::new(),
    }
}

impl Archive {
    fn new(f: File, path: &Path) -> Archive {
        Archive {
            w: Counting {
                inner: BufWriter::with_capacity(1 << 20, Writeback::new(f)),
                pos: 0,
            },
            path: path.to_owned(),
        }
    }

    fn err(&self, e: io::Error) -> Error {
        Error::io(&self.path, e)
    }

    fn pad(&mut self) -> io::Result<()> {
        let r = (self.w.pos % 512) as usize;
        if r != 0 {
            self.w.write_all(&[0u8; 512][..512 - r])?;
        }
        Ok(())
    }

    fn dir(&mut self, name: &str) -> Result<()> {
        let h = header_bytes(&member(name, EntryKind::Dir, 0)).map_err(|e| self.err(e))?;
        self.w.write_all(&h).map_err(|e| self.err(e))
    }

    fn bytes(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let h = header_bytes(&member(name, EntryKind::File, data.len() as u64))
            .map_err(|e| self.err(e))?;
        self.w.write_all(&h).map_err(|e| self.err(e))?;
        self.w.write_all(data).map_err(|e| self.err(e))?;
        self.pad().map_err(|e| self.err(e))
    }

    /// A member whose data `data` writes and whose name `name` gives from
    /// the digests: header patched in place afterwards.
    fn streamed(
        &mut self,
        data: impl FnOnce(&mut dyn Write) -> io::Result<Digests>,
        name: impl FnOnce(&Digests) -> String,
    ) -> Result<Digests> {
        let at = self.w.pos;
        self.w.write_all(&[0u8; 512]).map_err(|e| self.err(e))?;
        let d = data(&mut self.w).map_err(|e| self.err(e))?;
        let size = self.w.pos - at - 512;
        self.pad().map_err(|e| self.err(e))?;
        let h = header_bytes(&member(&name(&d), EntryKind::File, size)).map_err(|e| self.err(e))?;
        if h.len() != 512 {
            return Err(self.err(io::Error::other(format!(
                "a layer of {size} bytes does not fit a plain tar header in an archive \
                 (over 8 GiB): use --format oci"
            ))));
        }
        let end = self.w.pos;
        let f = &mut self.w.inner;
        f.seek(SeekFrom::Start(at))
            .and_then(|_| f.write_all(&h))
            .and_then(|_| f.seek(SeekFrom::Start(end)))
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(d)
    }

    fn finish(mut self) -> Result<File> {
        self.w.write_all(&[0u8; 1024]).map_err(|e| self.err(e))?;
        let path = self.path.clone();
        self.w
            .inner
            .into_inner()
            .map(Writeback::into_file)
            .map_err(|e| Error::io(&path, e.into_error()))
    }
}

/// An OCI image layout directory being added to.
struct Layout {
    dir: PathBuf,
    /// The directory did not exist before.
    created: bool,
}

impl Layout {
    /// Opens `dir` (created if missing) as an OCI layout: it must be empty or
    /// already one.
    fn open(dir: &Path) -> Result<Layout> {
        let created = match std::fs::create_dir(dir) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let meta = std::fs::symlink_metadata(dir).map_err(|e| Error::io(dir, e))?;
                if !meta.is_dir() {
                    return Err(Error::Usage(format!(
                        "{}: exists and is not a directory (--format oci writes a layout directory; \
                         use --format oci-archive or docker-archive for a file)",
                        dir.display()
                    )));
                }
                let empty = std::fs::read_dir(dir)
                    .map_err(|e| Error::io(dir, e))?
                    .next()
                    .is_none();
                if !empty && !dir.join("oci-layout").exists() {
                    return Err(Error::Usage(format!(
                        "{}: a directory that is neither empty nor an OCI layout (no oci-layout file): \
                         refusing to write into it",
                        dir.display()
                    )));
                }
                false
            }
            Err(e) => return Err(Error::io(dir, e)),
        };
        let l = Layout {
            dir: dir.to_owned(),
            created,
        };
        let blobs = dir.join("blobs/sha256");
        if let Err(e) = std::fs::create_dir_all(&blobs) {
            if created {
                let _ = std::fs::remove_dir_all(dir);
            }
            return Err(Error::io(&blobs, e));
        }
        let ol = dir.join("oci-layout");
        if !ol.exists() {
            l.replace(&ol, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        Ok(l)
    }

    /// Writes `path` whole under a temporary name, then renames it.
    fn replace(&self, path: &Path, data: &[u8]) -> Result<()> {
        let tmp = TempFile::new(path)?;
        let mut f = tmp.create()?;
        f.write_all(data).map_err(|e| Error::io(&tmp.tmp, e))?;
        tmp.commit(f)
    }

    /// A blob whose bytes `data` writes; named by their digest once known.
    fn blob(&self, data: impl FnOnce(&mut dyn Write) -> io::Result<Digests>) -> Result<Digests> {
        let tmp = TempFile::new(&self.dir.join("blobs/sha256/new"))?;
        let f = Writeback::new(tmp.create()?);
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let d = data(&mut w).map_err(|e| Error::io(&tmp.tmp, e))?;
        let f = w
            .into_inner()
            .map(Writeback::into_file)
            .map_err(|e| Error::io(&tmp.tmp, e.into_error()))?;
        let mut tmp = tmp;
        tmp.path = self.dir.join("blobs/sha256").join(hex(&d.digest));
        tmp.commit(f)?;
        Ok(d)
    }

    /// A small blob: its digest.
    fn bytes(&self, data: &[u8]) -> Result<String> {
        let d = digest::of(data);
        self.replace(&self.dir.join("blobs/sha256").join(hex(&d)), data)?;
        Ok(d)
    }

    /// Adds the manifest to `index.json`, replacing an entry of the same tag.
    fn set_index(&self, manifest_digest: &str, size: usize, tag: Option<&str>) -> Result<()> {
        let path = self.dir.join("index.json");
        let mut keep: Vec<Value> = Vec::new();
        match std::fs::read(&path) {
            Ok(b) => {
                let v: Value = serde_json::from_slice(&b).map_err(|e| {
                    Error::Usage(format!("{}: not valid JSON: {e}", path.display()))
                })?;
                let new_ref = tag.map(tag_part);
                for m in v["manifests"].as_array().cloned().unwrap_or_default() {
                    let r = m["annotations"][crate::image::spec::REF_NAME].as_str();
                    if new_ref.is_some() && r == new_ref {
                        continue;
                    }
                    keep.push(m);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
        self.replace(&path, &oci_index(&keep, manifest_digest, size, tag))
    }
}
