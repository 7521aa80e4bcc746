//! The `unionfs` command: parse the command line, run one subcommand, map errors
//! to exit codes (0 success, 1 failure, 2 usage).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use unionfs::image::{self, Image, ImageRef, PlatformChoice};
use unionfs::layers::{self, Source};
use unionfs::mount;
use unionfs::report;
use unionfs::stack::{Merged, Stack};
use unionfs::tar::verify;
use unionfs::tar::{self, IndexOptions, TarLayer};

mod cli;

/// Serve container image layers (docker/OCI layer tars) as one merged filesystem,
/// straight from the tarballs, with overlayfs semantics.
#[derive(Parser)]
#[command(name = "unionfs", version, about, long_about = None)]
#[command(
    after_help = "Layers are given bottom first, in the order of docker's manifest.json \
(`Layers`): `--layers base.tar:app.tar` puts app.tar on top of base.tar.\n\
Examples:\n  unionfs mount --layers base.tar:app.tar --upper ./rw /mnt/c\n  unionfs ls --layers base.tar:app.tar /etc\n  unionfs ls --layers base.tar:app.tar -R --json\n  \
unionfs index base.tar\n  unionfs verify base.tar --diff-id sha256:…"
)]
struct Cli {
    /// More log output (-v: info, -vv: debug, -vvv: trace); RUST_LOG also works.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct CacheArgs {
    /// Where layer indexes are kept [default: $XDG_CACHE_HOME/unionfs or ~/.cache/unionfs].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Keep indexes in memory only: neither read nor write the cache.
    #[arg(long, conflicts_with = "cache_dir")]
    no_cache: bool,
    /// Uncompressed bytes between gzip checkpoints (K/M/G suffixes): smaller
    /// makes random reads of gzip layers cheaper and the index larger.
    #[arg(long, value_name = "SIZE", default_value = "2M", value_parser = parse_size)]
    checkpoint_spacing: u64,
    /// No progress line while a compressed layer is indexed.
    #[arg(short, long)]
    quiet: bool,
    /// For --image docker://…: allow plain HTTP and unverified TLS to any
    /// registry (loopback addresses get HTTP without it).
    #[arg(long)]
    insecure: bool,
    /// For --image docker://…: a PEM file of CA certificates to trust besides
    /// the system's.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// For --image docker://…: seconds a registry request may take before it
    /// is retried, then fails (a read of the mount then gets EIO).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    registry_timeout: u64,
    /// For --image docker://…: retries of a failed registry request (with
    /// backoff; 429 Retry-After honoured).
    #[arg(long, value_name = "N", default_value_t = 3)]
    registry_retries: u32,
    /// For --image docker://…: bound of the registry chunks kept in the
    /// cache directory (shared by every mount; least recently used go first).
    #[arg(long, value_name = "SIZE", default_value = "10G", value_parser = parse_size)]
    chunk_cache: u64,
    /// For --image docker://…: do not use an index pushed with `unionfs index
    /// --push` (each blob is then streamed once to index it).
    #[arg(long)]
    no_index_artifact: bool,
}

/// Parses `123`, `64K`, `4M`, `2G` (powers of 1024).
fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let (num, mul) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&s[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{s:?}: expected a size such as 65536, 64K, 4M or 1G"))
}

impl CacheArgs {
    fn options(&self) -> IndexOptions {
        unionfs::blob::remote::set_chunk_bound(self.chunk_cache);
        IndexOptions {
            // Absolute: a mount daemon works from `/` (it writes fetched
            // registry chunks there long after the start).
            cache_dir: if self.no_cache {
                None
            } else {
                self.cache_dir
                    .clone()
                    .or_else(IndexOptions::default_cache_dir)
                    .map(|d| std::path::absolute(&d).unwrap_or(d))
            },
            checkpoint_spacing: self.checkpoint_spacing,
            quiet: self.quiet,
            no_index_artifact: self.no_index_artifact,
            registry: unionfs::registry::Options {
                insecure: self.insecure,
                ca: self.ca.clone(),
                timeout: std::time::Duration::from_secs(self.registry_timeout.max(1)),
                retries: self.registry_retries,
                ..unionfs::registry::Options::default()
            },
            ..IndexOptions::default()
        }
    }
}

#[derive(Args, Clone)]
struct LayerArgs {
    /// Layer tars, bottom first, separated by ':' (repeat the option to add more).
    #[arg(
        short,
        long,
        value_name = "BOTTOM.tar:…:TOP.tar",
        required_unless_present = "image",
        conflicts_with = "image"
    )]
    layers: Vec<String>,
    #[command(flatten)]
    image: ImageArgs,
    #[command(flatten)]
    cache: CacheArgs,
}

#[derive(Args, Clone)]
struct ImageArgs {
    /// An image instead of --layers: a `docker save` archive, an OCI layout
    /// directory or an OCI archive, read in place. REF picks one image: a tag,
    /// a name (example/app:v2) or @sha256:… (an existing PATH wins over a split
    /// at ':'). Or docker://HOST[:PORT]/REPO[:TAG|@DIGEST]: an image in a
    /// registry, read lazily (only the bytes read are fetched).
    #[arg(long, value_name = "PATH[:REF] | docker://…")]
    image: Option<String>,
    /// With --image: the platform to take from a multi-platform image
    /// [default: the host's].
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", requires = "image")]
    platform: Option<String>,
}

impl ImageArgs {
    fn open(&self, cache: &CacheArgs) -> Result<Option<Image>> {
        let Some(spec) = &self.image else {
            return Ok(None);
        };
        let r = ImageRef::parse(spec)?;
        let p = PlatformChoice::new(self.platform.as_deref())?;
        Ok(Some(Image::open(&r, &p, &cache.options())?))
    }
}

impl LayerArgs {
    fn paths(&self) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for spec in &self.layers {
            for p in spec.split(':') {
                if p.is_empty() {
                    bail!("--layers {spec:?}: empty layer name (two ':' in a row, or a leading/trailing ':')");
                }
                out.push(PathBuf::from(p));
            }
        }
        if out.len() > usize::from(u16::MAX) {
            bail!("too many layers ({}, at most {})", out.len(), u16::MAX);
        }
        Ok(out)
    }

    fn source(&self) -> Result<Source> {
        Ok(match &self.image.image {
            Some(spec) => Source::Image {
                image: ImageRef::parse(spec)?,
                platform: self.image.platform.clone(),
            },
            None => Source::Layers(self.paths()?),
        })
    }

    fn stack(&self) -> Result<Stack> {
        Ok(layers::open(&self.source()?, &self.cache.options())?.0)
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Mount the merged view of the layers on MOUNTPOINT: read-only, or with
    /// --upper DIR writable (changes land in DIR, as with overlayfs upperdir=).
    ///
    /// Layers are listed bottom first (docker's manifest.json order). Returns
    /// once the mount is live (the server stays in the background; use
    /// --foreground to keep it attached). Unmount with `unionfs umount MOUNTPOINT`,
    /// `fusermount3 -u MOUNTPOINT`, or Ctrl-C / SIGTERM to a foreground server.
    /// A normal user mounts through fusermount3 (rootless: owners kept in xattrs).
    Mount {
        #[command(flatten)]
        layers: LayerArgs,
        /// Directory to mount on.
        mountpoint: PathBuf,
        /// Stay in the foreground; log to stderr.
        #[arg(short, long)]
        foreground: bool,
        /// Mount options, comma-separated: allow_other, allow_root, suid, dev,
        /// no_default_permissions, passthrough (writable mounts as root: an
        /// OPEN per file, and upper files read and written by FUSE
        /// passthrough, instead of files served with no open handle),
        /// provenance (list the virtual user.unionfs.layer and
        /// user.unionfs.shadows xattrs in listxattr; getxattr always answers
        /// them), metacopy=on (writable mounts: chmod, chown, utimes and
        /// xattr changes of a lower file copy its metadata only; its data is
        /// copied at the first write; the upper is then not a complete layer
        /// on its own) (default: nosuid, nodev, kernel permission checks,
        /// metacopy=off),
        /// prefetch (registry images: fetch every layer's chunks in the
        /// background once mounted, reads first).
        #[arg(short = 'o', value_name = "OPT[,OPT…]")]
        options: Vec<String>,
        /// FUSE worker threads.
        #[arg(long, default_value_t = default_threads())]
        threads: usize,
        /// Memory for decompressed spans of gzip/zstd layers, shared by all
        /// readers (K/M/G).
        #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
        span_cache: u64,
        /// Log file for the background server (default: none).
        #[arg(long, value_name = "FILE")]
        log_file: Option<PathBuf>,
        /// Writable upper directory: every change lands here (copy-up, whiteouts),
        /// the layers are never written. Without it the mount is read-only.
        #[arg(long, value_name = "DIR")]
        upper: Option<PathBuf>,
        /// Work directory for atomic copy-up, on the upper's filesystem
        /// (default: .NAME.unionfs-work next to the upper).
        #[arg(long, value_name = "DIR", requires = "upper")]
        work: Option<PathBuf>,
        /// How deletions are recorded in the upper: `oci` (.wh.NAME files; the
        /// upper tarred is a valid image layer) or `overlay` (0/0 char devices and
        /// trusted.overlay.opaque; the upper works with kernel overlayfs).
        #[arg(long, value_name = "FORMAT", default_value = "oci", requires = "upper")]
        whiteout_format: String,
        /// Report container uid C as host uid H, for COUNT ids
        /// (C:H:COUNT[,…], newuidmap's order), e.g. 0:$(id -u):1 so that a rootless
        /// container's root owns the image's root files. Unmapped ids show as 65534.
        #[arg(long, value_name = "C:H:COUNT")]
        uidmap: Vec<String>,
        /// As --uidmap, for groups.
        #[arg(long, value_name = "C:H:COUNT")]
        gidmap: Vec<String>,
        /// Report every file as owned by uid 0 and gid 0.
        #[arg(long)]
        squash_to_root: bool,
        /// Report every file as owned by this uid.
        #[arg(long, value_name = "UID", conflicts_with = "squash_to_root")]
        squash_to_uid: Option<u32>,
        /// Report every file's group as this gid.
        #[arg(long, value_name = "GID", conflicts_with = "squash_to_root")]
        squash_to_gid: Option<u32>,
    },
    /// Show what the index cache holds (layer indexes, seek tables of
    /// compressed layers, digest records) and prune it. Everything in it can be
    /// rebuilt from the layers.
    Cache {
        /// The cache directory [default: $XDG_CACHE_HOME/unionfs or ~/.cache/unionfs].
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// Remove everything.
        #[arg(long)]
        prune_all: bool,
        /// Remove files unused for more than DAYS days.
        #[arg(long, value_name = "DAYS")]
        older_than: Option<u64>,
        /// Remove the least recently used files until at most SIZE remain (K/M/G).
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max_size: Option<u64>,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Unmount a unionfs mount.
    #[command(alias = "unmount")]
    Umount {
        /// The mountpoint.
        mountpoint: PathBuf,
        /// Detach now, clean up when no longer busy (umount -l).
        #[arg(short = 'z', long)]
        lazy: bool,
    },
    /// List the merged view of PATH without mounting, with the layer each entry comes from.
    Ls {
        #[command(flatten)]
        layers: LayerArgs,
        /// Path inside the merged view.
        #[arg(default_value = "/")]
        path: String,
        /// List PATH itself and everything below it (like find).
        #[arg(short = 'R', long)]
        recursive: bool,
        /// One JSON object per line (schema in the README).
        #[arg(long)]
        json: bool,
        /// With --json: add the sha256 of each regular file's content.
        #[arg(long, requires = "json")]
        sha256: bool,
        /// List each layer's entry for PATH instead (file, directory, whiteout,
        /// opaque directory), with its content digest; `(shown)` marks what
        /// the merged view shows.
        #[arg(long, conflicts_with_all = ["recursive", "sha256"])]
        versions: bool,
    },
    /// Print a file's content from the merged view, or with --layer N as
    /// layer N stores it (whatever the layers above do to it).
    Cat {
        #[command(flatten)]
        layers: LayerArgs,
        /// Take the file from this layer (0 = bottom).
        #[arg(long, value_name = "N")]
        layer: Option<usize>,
        /// The file's path.
        path: String,
    },
    /// What each layer adds, modifies, deletes and wastes, from the indexes
    /// alone (no file data read): per layer and for the image, with the
    /// largest wasted files. --ci fails (exit 1) on dive's thresholds.
    Inspect {
        #[command(flatten)]
        layers: LayerArgs,
        /// One JSON object (with --layer N --list: one object per line).
        #[arg(long)]
        json: bool,
        /// How many of the largest wasted files to list.
        #[arg(long, value_name = "N", default_value_t = 10)]
        top: usize,
        /// Check the thresholds below; exit 1 if one fails.
        #[arg(long)]
        ci: bool,
        /// With --ci: the lowest efficiency allowed (visible ÷ stored file data).
        #[arg(long, value_name = "RATIO", default_value_t = 0.9, requires = "ci")]
        lowest_efficiency: f64,
        /// With --ci: the highest share of wasted bytes allowed, relative to the
        /// file data of every layer but the first (dive's "user" bytes).
        #[arg(long, value_name = "RATIO", default_value_t = 0.1, requires = "ci")]
        highest_wasted_share: f64,
        /// With --ci: the most wasted bytes allowed (K/M/G) [default: no limit].
        #[arg(long, value_name = "SIZE", value_parser = parse_size, requires = "ci")]
        highest_wasted_bytes: Option<u64>,
        /// One layer (0 = bottom): with --list, its changes against the layers
        /// below (A, C, D, as `unionfs diff`).
        #[arg(long, value_name = "N", requires = "list")]
        layer: Option<usize>,
        /// With --layer N: list that layer's changes.
        #[arg(long, requires = "layer")]
        list: bool,
    },
    /// Build (or load) the index of layer tars, or of every layer of an image
    /// (--image: with its digests, diffIDs and chainIDs), and print a summary.
    Index {
        /// Layer tars.
        #[arg(required_unless_present = "image", conflicts_with = "image")]
        tars: Vec<PathBuf>,
        #[command(flatten)]
        image: ImageArgs,
        #[command(flatten)]
        cache: CacheArgs,
        /// Rebuild even if a valid stored index exists.
        #[arg(long)]
        rebuild: bool,
        /// With --image: print one JSON object.
        #[arg(long, requires = "image")]
        json: bool,
        /// With --image docker://…: push the layer indexes to the image's
        /// repository as an OCI artifact referring to the image, so that
        /// mounts elsewhere fetch no blob byte until a file is read.
        #[arg(long, requires = "image")]
        push: bool,
    },
    /// Write the changes in an upper directory as an OCI layer, or as a new
    /// image: the base image (--image) or layers (--layers) with that layer on
    /// top, as a docker archive (`docker load`), an OCI layout or an OCI archive.
    ///
    /// The layer is deterministic (the same upper gives the same bytes):
    /// sorted, numeric owners, the logical owners and modes of a rootless
    /// upper, whiteouts and opaque directories in OCI form whatever the upper's
    /// format. Refuses an upper a mount is using. Prints the layer's diffID,
    /// the image's chainID and config digest.
    Commit {
        #[command(flatten)]
        base: cli::commit::BaseArgs,
        /// The upper directory to commit.
        #[arg(long, value_name = "DIR")]
        upper: PathBuf,
        /// Where to write: a file (layer, docker-archive, oci-archive) or a
        /// directory (oci; added to an existing layout).
        #[arg(short, long, value_name = "PATH")]
        output: PathBuf,
        /// docker-archive, oci, oci-archive or layer [default: docker-archive
        /// with --image/--layers, else layer].
        #[arg(long, value_name = "FORMAT")]
        format: Option<String>,
        /// The new layer's compression: gzip, zstd or none [default: none for
        /// layer and docker-archive, gzip for oci and oci-archive]. Base layers
        /// are carried over as they are.
        #[arg(long, value_name = "ALGO")]
        compress: Option<String>,
        /// Name the new image NAME:TAG.
        #[arg(short, long, value_name = "NAME:TAG")]
        tag: Option<String>,
        /// A comment for the image's history (docker commit -m).
        #[arg(short, long)]
        message: Option<String>,
        /// The author (docker commit -a).
        #[arg(short, long)]
        author: Option<String>,
        #[command(flatten)]
        ids: cli::commit::IdArgs,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Write the merged view (the layers, and an upper over them if given) as
    /// one flat tar, whiteouts applied, hard links and xattrs kept (docker export).
    Export {
        #[command(flatten)]
        base: cli::commit::BaseArgs,
        /// An upper directory over the layers.
        #[arg(long, value_name = "DIR")]
        upper: Option<PathBuf>,
        /// Write to FILE (complete, or not at all) instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        ids: cli::commit::IdArgs,
    },
    /// List the changes an upper directory makes to its layers, one per line:
    /// A (added), C (changed), D (deleted), as docker diff. Reads only the
    /// upper and the layers' indexes.
    Diff {
        #[command(flatten)]
        base: cli::commit::BaseArgs,
        /// The upper directory.
        #[arg(long, value_name = "DIR")]
        upper: PathBuf,
        /// One JSON object per line: {"kind":"A","path":"/x"}.
        #[arg(long)]
        json: bool,
    },
    /// Reassemble a layer tar from its index and check its sha256 (the diff_id);
    /// with --image, every layer of the image against its diffID.
    Verify {
        /// The layer tar.
        #[arg(required_unless_present = "image", conflicts_with = "image")]
        tar: Option<PathBuf>,
        #[command(flatten)]
        image: ImageArgs,
        /// Expected digest, `sha256:<64 hex>` (as in an image config's rootfs.diff_ids).
        #[arg(long, value_name = "sha256:HEX", conflicts_with = "image")]
        diff_id: Option<String>,
        #[command(flatten)]
        cache: CacheArgs,
    },
}

/// `e` and its causes, each once: our errors that name a file already end with
/// their cause's text (`PATH: No such file or directory`), which `{:#}` would
/// print a second time.
fn error_text(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.ends_with(&c) {
            msg = format!("{msg}: {c}");
        }
    }
    msg
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logger(cli.verbose);
    match run(cli.cmd) {
        Ok(code) => code,
        Err(e) => {
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("unionfs: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

fn init_logger(verbose: u8) {
    // fuser's own warnings (a request it answers by default, an unmount it
    // would retry) are noise to a user: only its errors show unless -v.
    let level = match verbose {
        0 => "warn,fuser=error",
        1 => "info,fuser=warn",
        2 => "debug",
        _ => "trace",
    };
    // ureq logs raw request headers (Authorization among them) at trace:
    // never below debug, whatever RUST_LOG says.
    let cap = match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .filter_module("ureq", cap)
        .filter_module("ureq_proto", cap)
        .format_timestamp(None)
        .init();
}

fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() * 2)
        .unwrap_or(4)
        .clamp(2, 16)
}

fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Mount {
            layers,
            mountpoint,
            foreground,
            options,
            threads,
            span_cache,
            log_file,
            upper,
            work,
            whiteout_format,
            uidmap,
            gidmap,
            squash_to_root,
            squash_to_uid,
            squash_to_gid,
        } => {
            let ranges = |v: &[String], what: &str| -> Result<Vec<unionfs::idmap::Range>> {
                let mut out = Vec::new();
                for s in v {
                    out.extend(
                        unionfs::idmap::parse_ranges(s)
                            .map_err(|e| anyhow::anyhow!("--{what} {e}"))?,
                    );
                }
                Ok(out)
            };
            let idmap = unionfs::idmap::IdMap {
                uids: ranges(&uidmap, "uidmap")?,
                gids: ranges(&gidmap, "gidmap")?,
                squash_uid: if squash_to_root {
                    Some(0)
                } else {
                    squash_to_uid
                },
                squash_gid: if squash_to_root {
                    Some(0)
                } else {
                    squash_to_gid
                },
            };
            let whiteout_format = match whiteout_format.as_str() {
                "oci" => unionfs::upper::WhiteoutFormat::Oci,
                "overlay" => unionfs::upper::WhiteoutFormat::Overlay,
                other => bail!("--whiteout-format {other}: expected `oci` or `overlay`"),
            };
            let mut cfg = mount::MountConfig {
                idmap,
                upper,
                work,
                whiteout_format,
                source: layers.source()?,
                mountpoint,
                foreground,
                threads,
                index: layers.cache.options(),
                log_file,
                ..Default::default()
            };
            for o in options.iter().flat_map(|o| o.split(',')) {
                match o {
                    "" => {}
                    "allow_other" => cfg.allow_other = true,
                    "allow_root" => cfg.allow_root = true,
                    "suid" => cfg.suid = true,
                    "nosuid" => cfg.suid = false,
                    "dev" => cfg.dev = true,
                    "nodev" => cfg.dev = false,
                    "default_permissions" => cfg.no_default_permissions = false,
                    "no_default_permissions" => cfg.no_default_permissions = true,
                    "passthrough" => cfg.passthrough = true,
                    "nopassthrough" => cfg.passthrough = false,
                    "provenance" => cfg.provenance = true,
                    "metacopy=on" | "metacopy" => cfg.metacopy = true,
                    "metacopy=off" | "nometacopy" => cfg.metacopy = false,
                    "prefetch" => cfg.prefetch = true,
                    "ro" => {}
                    other => bail!("-o {other}: unknown mount option (known: allow_other, allow_root, suid, dev, no_default_permissions, passthrough, metacopy=on|off, provenance, prefetch)"),
                }
            }
            unionfs::blob::decoded::set_cache_bytes(span_cache);
            unionfs::sys::large_allocations_mapped(1 << 20);
            mount::run(&cfg)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Cache {
            cache_dir,
            prune_all,
            older_than,
            max_size,
            json,
        } => cache_cmd(cache_dir, prune_all, older_than, max_size, json),
        Cmd::Umount { mountpoint, lazy } => {
            mount::unmount(&mountpoint, lazy)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ls {
            layers,
            path,
            recursive,
            json,
            sha256,
            versions,
        } => {
            if versions {
                cli::inspect::versions(&layers, &path, json)
            } else {
                ls(&layers, &path, recursive, json, sha256)
            }
        }
        Cmd::Cat {
            layers,
            layer,
            path,
        } => cli::inspect::cat(&layers, &path, layer),
        Cmd::Inspect {
            layers,
            json,
            top,
            ci,
            lowest_efficiency,
            highest_wasted_share,
            highest_wasted_bytes,
            layer,
            list,
        } => {
            for (name, v) in [
                ("--lowest-efficiency", lowest_efficiency),
                ("--highest-wasted-share", highest_wasted_share),
            ] {
                if !(0.0..=1.0).contains(&v) {
                    bail!("{name} {v}: expected a ratio between 0 and 1");
                }
            }
            let ask = cli::inspect::Ask {
                json,
                top,
                ci: ci.then_some(cli::inspect::Ci {
                    lowest_efficiency,
                    highest_wasted_share,
                    highest_wasted_bytes,
                }),
                list_layer: if list { layer } else { None },
            };
            cli::inspect::inspect_cmd(&layers, &ask)
        }
        Cmd::Index {
            tars,
            image,
            cache,
            rebuild,
            json,
            push,
        } => match image.image {
            Some(_) => index_image(&image, &cache, rebuild, json, push),
            None => index(&tars, &cache, rebuild),
        },
        Cmd::Commit {
            base,
            upper,
            output,
            format,
            compress,
            tag,
            message,
            author,
            ids,
            json,
        } => cli::commit::commit(
            &base,
            &upper,
            &output,
            format.as_deref(),
            compress.as_deref(),
            tag.as_deref(),
            message,
            author,
            &ids,
            json,
        ),
        Cmd::Export {
            base,
            upper,
            output,
            ids,
        } => cli::commit::export_cmd(&base, upper.as_deref(), output.as_deref(), &ids),
        Cmd::Diff { base, upper, json } => cli::commit::diff_cmd(&base, &upper, json),
        Cmd::Verify {
            tar,
            image,
            diff_id,
            cache,
        } => match tar {
            Some(tar) => verify_cmd(&tar, diff_id.as_deref(), &cache),
            None => verify_image(&image, &cache),
        },
    }
}

fn ls(
    layers: &LayerArgs,
    path: &str,
    recursive: bool,
    json: bool,
    sha256: bool,
) -> Result<ExitCode> {
    let stack = layers.stack()?;
    let Some(m) = stack.resolve(path.as_bytes()) else {
        bail!("{path}: no such file or directory in the merged view");
    };
    let out = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 16, out.lock());
    let mut base = b"/".to_vec();
    base.extend(
        path.as_bytes()
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>()
            .join(&b'/'),
    );
    let emit = |out: &mut dyn Write, p: &[u8], m: &Merged| -> io::Result<()> {
        if json {
            let mut v = report::json_entry(&stack, p, m);
            if sha256 && stack.rec(m.top).kind() == libc::S_IFREG {
                let digest = report::content_sha256(&stack, m.top)?;
                v["sha256"] = digest.into();
            }
            writeln!(out, "{v}")
        } else {
            writeln!(out, "{}", report::human_line(&stack, p, m))
        }
    };
    if recursive {
        // Depth-first, each directory's entries in name order, PATH itself first.
        let mut todo: Vec<(Vec<u8>, Merged)> = vec![(base, m)];
        while let Some((p, m)) = todo.pop() {
            emit(&mut out, &p, &m)?;
            if m.is_dir() {
                let kids = stack.read_dir(&m);
                for d in kids.iter().rev() {
                    let name = stack.name(d.entry);
                    let child = stack
                        .lookup(&m, name)
                        .context("listing and lookup disagree")?;
                    todo.push((join(&p, name), child));
                }
            }
        }
    } else if m.is_dir() {
        for d in stack.read_dir(&m) {
            let name = stack.name(d.entry);
            let child = stack
                .lookup(&m, name)
                .context("listing and lookup disagree")?;
            emit(&mut out, &join(&base, name), &child)?;
        }
    } else {
        emit(&mut out, &base, &m)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if p.last() != Some(&b'/') {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn index(tars: &[PathBuf], cache: &CacheArgs, rebuild: bool) -> Result<ExitCode> {
    let mut opts = cache.options();
    opts.rebuild = rebuild;
    opts.members = true;
    let mut failed = false;
    for t in tars {
        let start = Instant::now();
        match TarLayer::open(t, &opts) {
            Ok(layer) => print_index_summary(&layer, start.elapsed())?,
            Err(e) => {
                eprintln!("unionfs: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// What a layer holds, counted from its index.
#[derive(Default)]
struct Counts {
    kinds: std::collections::BTreeMap<&'static str, u64>,
    data: u64,
    whiteouts: u64,
    hardlinks: u64,
}

impl Counts {
    fn of(idx: &tar::LayerIndex) -> Counts {
        let mut c = Counts::default();
        for (id, e) in idx.entries.iter().enumerate() {
            if e.has(tar::index::F_DETACHED) {
                continue;
            }
            if e.is_whiteout() {
                c.whiteouts += 1;
            } else if e.has(tar::index::F_HARDLINK) {
                c.hardlinks += 1;
            } else {
                *c.kinds.entry(report::type_word(e.mode())).or_default() += 1;
                if e.kind() == libc::S_IFREG {
                    c.data += idx.size(tar::EntryId(id as u32));
                }
            }
        }
        c
    }

    fn words(&self) -> String {
        let kinds: Vec<String> = self.kinds.iter().map(|(k, v)| format!("{v} {k}")).collect();
        format!(
            "{}, {} hard links, {} whiteouts",
            kinds.join(", "),
            self.hardlinks,
            self.whiteouts
        )
    }
}

fn print_index_summary(layer: &TarLayer, total: std::time::Duration) -> Result<()> {
    let idx = &layer.index;
    let c = Counts::of(idx);
    let (data, words) = (c.data, c.words());
    let mut out = io::stdout().lock();
    writeln!(out, "{}", layer.path.display())?;
    writeln!(
        out,
        "  entries:   {} ({words}), {} dropped",
        idx.entries.len(),
        idx.dropped
    )?;
    writeln!(
        out,
        "  file data: {data} bytes in a {} byte tar ({} members)",
        idx.tar_size,
        idx.members.len()
    )?;
    if layer.blob().encoding() != "tar" {
        writeln!(
            out,
            "  encoding:  {}, {} bytes ({:.1}% of the tar), {} spans (random reads start at one)",
            layer.blob().encoding(),
            layer.source().len(),
            100.0 * layer.source().len() as f64 / idx.tar_size.max(1) as f64,
            layer.blob().spans()
        )?;
    }
    let how = if layer.source.built {
        "scanned"
    } else {
        "loaded"
    };
    writeln!(
        out,
        "  index:     {how} in {:.1} ms (total {:.1} ms){}",
        layer.source.elapsed.as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3,
        layer
            .source
            .rejected
            .as_ref()
            .map(|r| format!("; stored index not used: {r}"))
            .unwrap_or_default()
    )?;
    match &layer.source.file {
        Some(f) => {
            let len = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
            writeln!(
                out,
                "  stored:    {} ({len} bytes, {:.1} bytes/entry)",
                f.display(),
                len as f64 / idx.entries.len().max(1) as f64
            )?;
        }
        None => writeln!(out, "  stored:    not stored (memory only)")?,
    }
    for w in &idx.warnings {
        writeln!(out, "  warning:   {w}")?;
    }
    Ok(())
}

fn verify_cmd(tar_path: &Path, diff_id: Option<&str>, cache: &CacheArgs) -> Result<ExitCode> {
    if let Some(d) = diff_id {
        let hexpart = d.strip_prefix("sha256:").unwrap_or("");
        if hexpart.len() != 64 || !hexpart.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("--diff-id {d:?}: expected sha256:<64 hex digits>");
        }
    }
    let mut opts = cache.options();
    opts.members = true;
    let layer = TarLayer::open(tar_path, &opts)?;
    let r = verify::reassemble(&layer)?;
    println!(
        "{}: reassembled {} bytes from {} members: {}",
        tar_path.display(),
        r.bytes,
        r.members,
        r.digest
    );
    if let Some(want) = diff_id {
        if !want.eq_ignore_ascii_case(&r.digest) {
            return Err(unionfs::Error::DigestMismatch {
                path: tar_path.to_owned(),
                expected: want.to_owned(),
                actual: r.digest,
            }
            .into());
        }
        println!("{}: diff_id matches", tar_path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn index_image(
    args: &ImageArgs,
    cache: &CacheArgs,
    rebuild: bool,
    json: bool,
    push: bool,
) -> Result<ExitCode> {
    let start = Instant::now();
    let img = args.open(cache)?.context("--image is required")?;
    let mut opts = cache.options();
    opts.rebuild = rebuild;
    let layers = img.open_layers(&opts)?;
    let total = start.elapsed();
    let pushed = if push {
        let r = ImageRef::parse(args.image.as_deref().unwrap_or_default())?;
        let Some(remote) = &r.remote else {
            bail!(
                "--push: {} is not a registry image (docker://…)",
                r.path.display()
            );
        };
        let dir = opts.cache_dir.clone().context(
            "--push needs the cache directory the indexes are built in (not --no-cache)",
        )?;
        let client = image::remote::client(remote, &opts)?;
        let (digest, n) = image::artifact::push(&client, &img, &dir)?;
        if !json {
            eprintln!(
                "pushed the indexes of {n} of {} layers as {} (artifact of {})",
                img.layers.len(),
                digest,
                img.manifest_digest.as_deref().unwrap_or("?")
            );
        }
        Some((digest, n))
    } else {
        None
    };
    let chains = image::digest::chain_ids(&img.diff_ids());
    let mut out = io::stdout().lock();
    if json {
        let ls: Vec<serde_json::Value> = img
            .layers
            .iter()
            .zip(&layers)
            .zip(&chains)
            .enumerate()
            .map(|(i, ((d, l), chain))| {
                let c = Counts::of(&l.index);
                serde_json::json!({
                    "position": i,
                    "diff_id": d.diff_id,
                    "chain_id": chain,
                    "digest": d.digest,
                    "media_type": d.media_type,
                    "size": d.size,
                    "encoding": l.blob().encoding(),
                    "spans": l.blob().spans(),
                    "tar_size": l.blob().len(),
                    "path": d.name.to_string_lossy(),
                    "entries": l.index.entries.len(),
                    "counts": c.kinds,
                    "hard_links": c.hardlinks,
                    "whiteouts": c.whiteouts,
                    "file_bytes": c.data,
                    "index": if l.source.built { "built" } else { "loaded" },
                    "index_ms": l.source.elapsed.as_secs_f64() * 1e3,
                    "index_file": l.source.file.as_ref().map(|f| f.to_string_lossy().into_owned()),
                    "warnings": l.index.warnings,
                })
            })
            .collect();
        let v = serde_json::json!({
            "source": img.source.to_string_lossy(),
            "names": img.names,
            "manifest_digest": img.manifest_digest,
            "config_digest": img.config_digest,
            "platform": img.platform.to_string(),
            "chain_id": chains.last(),
            "layers": ls,
            "index_artifact": pushed.as_ref().map(|(d, n)| serde_json::json!({"digest": d, "layers": n})),
            "total_ms": total.as_secs_f64() * 1e3,
        });
        writeln!(out, "{v}")?;
        return Ok(ExitCode::SUCCESS);
    }
    let title = img
        .names
        .first()
        .cloned()
        .unwrap_or_else(|| "(untagged)".into());
    writeln!(out, "{title}  ({})", img.source.display())?;
    if img.names.len() > 1 {
        writeln!(out, "  names:     {}", img.names.join(", "))?;
    }
    if let Some(m) = &img.manifest_digest {
        writeln!(out, "  manifest:  {m}")?;
    }
    writeln!(out, "  config:    {}", img.config_digest)?;
    writeln!(out, "  platform:  {}", img.platform)?;
    if let Some(c) = chains.last() {
        writeln!(out, "  chainID:   {c}")?;
    }
    writeln!(
        out,
        "  layers:    {} (bottom first), opened in {:.1} ms",
        layers.len(),
        total.as_secs_f64() * 1e3
    )?;
    for (i, ((d, l), chain)) in img.layers.iter().zip(&layers).zip(&chains).enumerate() {
        let c = Counts::of(&l.index);
        writeln!(out, "  layer {i}")?;
        writeln!(out, "    diffID:  {}", d.diff_id)?;
        writeln!(out, "    chainID: {chain}")?;
        if let Some(dg) = &d.digest {
            writeln!(out, "    blob:    {dg}")?;
        }
        writeln!(out, "    type:    {}, {} bytes", d.media_type, d.size)?;
        if l.blob().encoding() != "tar" {
            writeln!(
                out,
                "    stored:  {}, {} spans, {} bytes uncompressed",
                l.blob().encoding(),
                l.blob().spans(),
                l.blob().len()
            )?;
        }
        writeln!(
            out,
            "    entries: {} ({}), {} bytes of file data",
            l.index.entries.len(),
            c.words(),
            c.data
        )?;
        let how = if l.source.built {
            "scanned and checked against the diffID"
        } else {
            "loaded"
        };
        writeln!(
            out,
            "    index:   {how} in {:.1} ms{}",
            l.source.elapsed.as_secs_f64() * 1e3,
            l.source
                .file
                .as_ref()
                .map(|f| format!(", {}", f.display()))
                .unwrap_or_default()
        )?;
        for w in &l.index.warnings {
            writeln!(out, "    warning: {w}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify_image(args: &ImageArgs, cache: &CacheArgs) -> Result<ExitCode> {
    let img = args.open(cache)?.context("--image is required")?;
    let mut opts = cache.options();
    opts.members = true;
    let layers = img.open_layers(&opts)?;
    for (i, (d, l)) in img.layers.iter().zip(&layers).enumerate() {
        let r = verify::reassemble(l)?;
        if !r.digest.eq_ignore_ascii_case(&d.diff_id) {
            return Err(unionfs::Error::DigestMismatch {
                path: d.name.clone(),
                expected: d.diff_id.clone(),
                actual: r.digest,
            }
            .into());
        }
        println!(
            "layer {i}: reassembled {} bytes from {} members: {} matches the diffID",
            r.bytes, r.members, r.digest
        );
    }
    println!("{}: {} layers verified", img.source.display(), layers.len());
    Ok(ExitCode::SUCCESS)
}

fn cache_cmd(
    dir: Option<PathBuf>,
    all: bool,
    older_than: Option<u64>,
    max_size: Option<u64>,
    json: bool,
) -> Result<ExitCode> {
    use unionfs::cache;
    let dir = dir
        .or_else(IndexOptions::default_cache_dir)
        .context("no cache directory: set --cache-dir, XDG_CACHE_HOME or HOME")?;
    let pruned = if all || older_than.is_some() || max_size.is_some() {
        let age = older_than.map(|d| std::time::Duration::from_secs(d * 86_400));
        Some(
            cache::prune(&dir, all, age, max_size)
                .with_context(|| format!("pruning {}", dir.display()))?,
        )
    } else {
        None
    };
    let entries = cache::list(&dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut by_kind = std::collections::BTreeMap::<cache::Kind, (u64, u64)>::new();
    for e in &entries {
        let k = by_kind.entry(e.kind).or_default();
        k.0 += 1;
        k.1 += e.size;
    }
    let total: u64 = entries.iter().map(|e| e.size).sum();
    let mut out = io::stdout().lock();
    if json {
        let kinds: serde_json::Map<String, serde_json::Value> = by_kind
            .iter()
            .map(|(k, (n, b))| {
                (
                    k.word().replace(' ', "_"),
                    serde_json::json!({"files": n, "bytes": b}),
                )
            })
            .collect();
        let v = serde_json::json!({
            "dir": dir.to_string_lossy(),
            "files": entries.len(),
            "bytes": total,
            "kinds": kinds,
            "pruned": pruned.map(|p| serde_json::json!({"files": p.files, "bytes": p.bytes})),
        });
        writeln!(out, "{v}")?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(p) = pruned {
        writeln!(out, "pruned {} files, {} bytes", p.files, p.bytes)?;
    }
    writeln!(
        out,
        "{}: {} files, {} bytes",
        dir.display(),
        entries.len(),
        total
    )?;
    for (k, (n, b)) in &by_kind {
        writeln!(out, "  {:<20} {n:>6} files {b:>14} bytes", k.word())?;
    }
    let mut big: Vec<&cache::Entry> = entries.iter().collect();
    big.sort_by_key(|e| std::cmp::Reverse(e.size));
    if !big.is_empty() {
        writeln!(out, "largest:")?;
        for e in big.iter().take(5) {
            writeln!(out, "  {:>14}  {}", e.size, e.path.display())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
