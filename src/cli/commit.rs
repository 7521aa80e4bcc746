//! `unionfs commit`, `unionfs export` and `unionfs diff`: the command-line
//! side of `unionfs::commit`.

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;

use unionfs::blob::encode::Compression;
use unionfs::blob::seek::Encoding;
use unionfs::commit::{self, changeset, diff, export, output};
use unionfs::idmap::IdMap;
use unionfs::image::{Image, ImageRef, PlatformChoice};
use unionfs::stack::Stack;
use unionfs::tar::write::Writer;
use unionfs::tar::TarLayer;

use crate::{CacheArgs, ImageArgs};

/// Where the layers come from, when they are optional.
#[derive(Args, Clone)]
pub struct BaseArgs {
    /// Layer tars the upper sits on, bottom first, separated by ':'.
    #[arg(
        short,
        long,
        value_name = "BOTTOM.tar:…:TOP.tar",
        conflicts_with = "image"
    )]
    layers: Vec<String>,
    #[command(flatten)]
    image: ImageArgs,
    #[command(flatten)]
    cache: CacheArgs,
}

/// Id mapping of a rootless upper.
#[derive(Args, Clone)]
pub struct IdArgs {
    /// The --uidmap the (rootless) mount had: real owners of upper objects
    /// that carry no logical owner (symlinks, fifos) are mapped back with it.
    #[arg(long, value_name = "C:H:COUNT")]
    uidmap: Vec<String>,
    /// As --uidmap, for groups.
    #[arg(long, value_name = "C:H:COUNT")]
    gidmap: Vec<String>,
}

impl IdArgs {
    fn map(&self) -> Result<IdMap> {
        let ranges = |v: &[String], what: &str| -> Result<Vec<unionfs::idmap::Range>> {
            let mut out = Vec::new();
            for s in v {
                out.extend(
                    unionfs::idmap::parse_ranges(s).map_err(|e| anyhow::anyhow!("--{what} {e}"))?,
                );
            }
            Ok(out)
        };
        Ok(IdMap {
            uids: ranges(&self.uidmap, "uidmap")?,
            gids: ranges(&self.gidmap, "gidmap")?,
            ..IdMap::default()
        })
    }
}

/// The base, opened: its stack, and for an image the image.
struct Opened {
    stack: Stack,
    image: Option<Image>,
}

impl BaseArgs {
    fn given(&self) -> bool {
        !self.layers.is_empty() || self.image.image.is_some()
    }

    fn open(&self) -> Result<Option<Opened>> {
        let opts = self.cache.options();
        if let Some(spec) = &self.image.image {
            let r = ImageRef::parse(spec)?;
            let p = PlatformChoice::new(self.image.platform.as_deref())?;
            let img = Image::open(&r, &p, &opts)?;
            let layers = img.open_layers(&opts)?;
            return Ok(Some(Opened {
                stack: Stack::new(layers),
                image: Some(img),
            }));
        }
        if self.layers.is_empty() {
            return Ok(None);
        }
        let paths = crate::LayerArgs {
            layers: self.layers.clone(),
            image: self.image.clone(),
            cache: self.cache.clone(),
        }
        .paths()?;
        let layers = unionfs::tar::open_all(&paths, &opts)?;
        for l in &layers {
            if let Some(why) = unionfs::image::refuse_as_layer(l) {
                bail!("{}: {why}", l.path.display());
            }
        }
        Ok(Some(Opened {
            stack: Stack::new(layers),
            image: None,
        }))
    }
}

/// The base layers of a commit, to carry over as they are.
fn base_of(o: &Opened) -> Result<output::Base> {
    if let Some(img) = &o.image {
        return Ok(output::Base {
            config: Some(img.config.clone()),
            layers: img
                .layers
                .iter()
                .map(|d| output::BaseLayer {
                    blob: d.blob.clone(),
                    encoding: d.encoding,
                    diff_id: Some(d.diff_id.clone()),
                    digest: d.digest.clone(),
                    name: d.name.clone(),
                })
                .collect(),
        });
    }
    let mut layers = Vec::new();
    for l in o.stack.layers() {
        let (encoding, diff_id) = match l.blob().encoding() {
            "gzip" => (Encoding::Gzip, Some(diff_id_of(l)?)),
            "zstd" => (Encoding::Zstd, Some(diff_id_of(l)?)),
            _ => (Encoding::Plain, None),
        };
        layers.push(output::BaseLayer {
            blob: l.source().clone(),
            encoding,
            diff_id,
            digest: None,
            name: l.path.clone(),
        });
    }
    Ok(output::Base {
        config: None,
        layers,
    })
}

/// The diffID of a compressed loose layer: its uncompressed bytes, hashed.
fn diff_id_of(l: &TarLayer) -> Result<String> {
    unionfs::blob::sha256(l.blob())
        .with_context(|| format!("{}: computing the diffID", l.path.display()))
}

/// `created`: `$SOURCE_DATE_EPOCH` if set (reproducible builds), else now.
fn created() -> Result<String> {
    let secs = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.trim().parse::<i64>().map_err(|_| {
            anyhow::anyhow!("SOURCE_DATE_EPOCH={v:?}: expected seconds since the epoch")
        })?,
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    };
    Ok(unionfs::report::rfc3339(secs))
}

/// `unionfs commit`.
#[allow(clippy::too_many_arguments)]
pub fn commit(
    base: &BaseArgs,
    upper: &Path,
    out: &Path,
    format: Option<&str>,
    compress: Option<&str>,
    tag: Option<&str>,
    message: Option<String>,
    author: Option<String>,
    ids: &IdArgs,
    json: bool,
) -> Result<ExitCode> {
    let format = match format {
        Some(f) => output::Format::parse(f).map_err(|e| anyhow::anyhow!("--format {e}"))?,
        None if base.given() => output::Format::DockerArchive,
        None => output::Format::Layer,
    };
    let compression = match compress {
        Some(c) => Compression::parse(c).map_err(|e| anyhow::anyhow!("--compress {e}"))?,
        None => format.default_compression(),
    };
    if tag.is_some() && format == output::Format::Layer {
        bail!("--tag names an image: it needs --format docker-archive, oci or oci-archive");
    }
    let tag = tag
        .map(output::full_tag)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let tag = tag.as_deref();
    let ids = ids.map()?;
    let (up, tree) = commit::open_upper(upper)?;
    let opened = base.open()?;
    let image_base = match (&opened, format) {
        (_, output::Format::Layer) => None,
        (Some(o), _) => Some(base_of(o)?),
        (None, _) => None,
    };
    let meta = output::Meta {
        created: created()?,
        message,
        author,
    };
    let stack = opened.as_ref().map(|o| &o.stack);
    let labels = opened
        .as_ref()
        .map(|o| unionfs::layers::copy_labels(&o.stack, o.image.as_ref()))
        .unwrap_or_default();
    let mut stats = changeset::Stats::default();
    let w = output::write(
        out,
        format,
        compression,
        tag,
        &meta,
        image_base.as_ref(),
        &mut |w: &mut dyn Write| {
            let mut tw = Writer::new(w);
            stats = changeset::write(&up, &tree, stack, &ids, &labels, &mut tw)?;
            tw.finish().map_err(|e| unionfs::Error::io(out, e))?;
            Ok(())
        },
    )?;
    let mut o = io::stdout().lock();
    if json {
        let mut v = serde_json::to_value(&w)?;
        v["changes"] = serde_json::to_value(&stats)?;
        writeln!(o, "{v}")?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(o, "{} ({})", w.output.display(), w.format)?;
    writeln!(
        o,
        "  layer:    {} ({} entries: {} files, {} bytes; {} dirs, {} hard links, {} whiteouts, {} opaque dirs)",
        w.diff_id,
        stats.entries,
        stats.files,
        stats.file_bytes,
        stats.dirs,
        stats.hard_links,
        stats.whiteouts,
        stats.opaque
    )?;
    if w.digest != w.diff_id {
        writeln!(
            o,
            "  blob:     {} ({}, {} bytes)",
            w.digest, w.media_type, w.size
        )?;
    } else {
        writeln!(o, "  blob:     {} bytes, uncompressed", w.size)?;
    }
    if let Some(c) = &w.chain_id {
        writeln!(o, "  chainID:  {c}")?;
    }
    if let Some(c) = &w.config_digest {
        writeln!(o, "  config:   {c} (image ID)")?;
    }
    if let Some(m) = &w.manifest_digest {
        writeln!(o, "  manifest: {m}")?;
    }
    if let Some(t) = &w.tag {
        writeln!(o, "  tag:      {t}")?;
    }
    if stats.redundant_markers > 0 {
        writeln!(
            o,
            "  note:     {} whiteouts/opaque markers hid nothing in the layers and were left out",
            stats.redundant_markers
        )?;
    }
    if stats.sockets > 0 {
        writeln!(
            o,
            "  note:     {} sockets left out (a tar cannot hold one)",
            stats.sockets
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `unionfs export`.
pub fn export_cmd(
    base: &BaseArgs,
    upper: Option<&Path>,
    out: Option<&Path>,
    ids: &IdArgs,
) -> Result<ExitCode> {
    if !base.given() {
        bail!("export needs the layers: --image PATH[:REF] or --layers A.tar:B.tar");
    }
    if out.is_none() && io::stdout().is_terminal() {
        bail!("refusing to write a tar to a terminal: give -o FILE or redirect the output");
    }
    let ids = ids.map()?;
    let opened = base.open()?.context("export needs the layers")?;
    let up = upper.map(commit::open_upper).transpose()?;
    let labels = unionfs::layers::copy_labels(&opened.stack, opened.image.as_ref());
    let side = up.as_ref().map(|(u, t)| export::UpperSide {
        upper: u,
        tree: t,
        ids: &ids,
        labels: &labels,
    });
    match out {
        Some(path) => {
            let tmp = output::TempFile::new(path)?;
            let f = tmp.create()?;
            let mut tw = Writer::new(io::BufWriter::with_capacity(1 << 20, f));
            export::write(&opened.stack, side, &mut tw)?;
            let f = tw
                .finish()
                .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
                .map_err(|e| unionfs::Error::io(path, e))?;
            tmp.commit(f)?;
        }
        None => {
            let stdout = io::stdout().lock();
            let mut tw = Writer::new(io::BufWriter::with_capacity(1 << 20, stdout));
            export::write(&opened.stack, side, &mut tw)?;
            tw.finish()?.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `unionfs diff`.
pub fn diff_cmd(base: &BaseArgs, upper: &Path, json: bool) -> Result<ExitCode> {
    if !base.given() {
        bail!("diff compares the upper with its layers: give --image PATH[:REF] or --layers A.tar:B.tar");
    }
    let opened = base.open()?.context("diff needs the layers")?;
    let (_up, tree) = commit::open_upper(upper)?;
    let changes = diff::changes(&tree, &opened.stack);
    let mut o = io::BufWriter::new(io::stdout().lock());
    for c in &changes {
        write_change(&mut o, c, json)?;
    }
    o.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// One change as a line: `K /path` with the path's bytes as they are (as
/// `docker diff`), or a JSON object whose `path` is the name as UTF-8 (U+FFFD
/// for bytes that are not) plus `path_hex` when it is not UTF-8, as `ls --json`.
pub fn write_change(o: &mut dyn Write, c: &diff::Change, json: bool) -> io::Result<()> {
    if json {
        let mut v = serde_json::json!({"kind": c.kind, "path": String::from_utf8_lossy(&c.path)});
        if std::str::from_utf8(&c.path).is_err() {
            v["path_hex"] = unionfs::blob::hex(&c.path).into();
        }
        writeln!(o, "{v}")
    } else {
        write!(o, "{} ", c.kind.letter())?;
        o.write_all(&c.path)?;
        writeln!(o)
    }
}
