//! `unionfs inspect`, `unionfs ls --versions` and `unionfs cat`: the
//! command-line side of `unionfs::inspect`.

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::{bail, Result};
use serde_json::json;

use unionfs::image::digest::chain_ids;
use unionfs::image::Image;
use unionfs::inspect::{self, Report};
use unionfs::layers;
use unionfs::report;
use unionfs::stack::{LayerId, LayerRef, Stack};
use unionfs::tar::index::{F_HARDLINK, F_OPAQUE};
use unionfs::tar::EntryId;

use crate::LayerArgs;

/// `--ci` thresholds (dive's rules and defaults).
#[derive(Clone, Copy, Debug)]
pub struct Ci {
    /// Fail below this efficiency.
    pub lowest_efficiency: f64,
    /// Fail above this share of wasted bytes among the bytes of every layer
    /// but the first.
    pub highest_wasted_share: f64,
    /// Fail above this many wasted bytes (off: `None`).
    pub highest_wasted_bytes: Option<u64>,
}

/// What `inspect` was asked.
pub struct Ask {
    /// One object.
    pub json: bool,
    /// How many wasted files to list.
    pub top: usize,
    /// `--ci` and its thresholds.
    pub ci: Option<Ci>,
    /// `--layer N --list`: that layer's changes only.
    pub list_layer: Option<usize>,
}

/// Per-layer identity: diffID, chainID, blob and tar sizes, name.
struct Ident {
    diff_id: Option<String>,
    chain_id: Option<String>,
    name: String,
    blob_bytes: u64,
    tar_bytes: u64,
}

fn idents(stack: &Stack, img: Option<&Image>) -> Vec<Ident> {
    let chains = img.map(|i| chain_ids(&i.diff_ids()));
    stack
        .layers()
        .iter()
        .enumerate()
        .map(|(i, l)| Ident {
            diff_id: img.map(|im| im.layers[i].diff_id.clone()),
            chain_id: chains.as_ref().map(|c| c[i].clone()),
            name: match img {
                Some(im) => im.layers[i].name.display().to_string(),
                None => l.path.display().to_string(),
            },
            blob_bytes: l.source().len(),
            tar_bytes: l.blob().len(),
        })
        .collect()
}

/// `1.5 MiB`-style sizes (IEC), exact below 1 KiB.
pub fn human(b: u64) -> String {
    const U: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < U.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", U[u])
}

fn short(d: &str) -> &str {
    d.get(..19).unwrap_or(d)
}

/// `unionfs inspect`.
pub fn inspect_cmd(layers: &LayerArgs, ask: &Ask) -> Result<ExitCode> {
    let (stack, img) = layers::open(&layers.source()?, &layers.cache.options())?;
    let n = stack.layers().len();
    if let Some(l) = ask.list_layer {
        if l >= n {
            bail!(
                "--layer {l}: the image has {n} layers (0 to {})",
                n.saturating_sub(1)
            );
        }
        let mut o = io::BufWriter::new(io::stdout().lock());
        for c in inspect::layer_changes(&stack, l) {
            crate::cli::commit::write_change(&mut o, &c, ask.json)?;
        }
        o.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let rep = inspect::analyze(&stack, ask.top);
    let ids = idents(&stack, img.as_ref());
    let verdicts = ask.ci.map(|c| verdicts(&rep, &c)).unwrap_or_default();
    let failed = verdicts.iter().any(|v| !v.pass);
    let mut o = io::BufWriter::new(io::stdout().lock());
    if ask.json {
        let layers: Vec<serde_json::Value> = rep
            .layers
            .iter()
            .zip(&ids)
            .map(|(l, id)| {
                let mut v = serde_json::to_value(l).unwrap_or_default();
                v["diff_id"] = json!(id.diff_id);
                v["chain_id"] = json!(id.chain_id);
                v["name"] = json!(id.name);
                v["blob_bytes"] = json!(id.blob_bytes);
                v["tar_bytes"] = json!(id.tar_bytes);
                v
            })
            .collect();
        let mut v = serde_json::to_value(&rep)?;
        v["layers"] = json!(layers);
        v["source"] = json!(img.as_ref().map(|i| i.source.display().to_string()));
        v["names"] = json!(img.as_ref().map(|i| i.names.clone()));
        v["config_digest"] = json!(img.as_ref().map(|i| i.config_digest.clone()));
        v["blob_bytes"] = json!(ids.iter().map(|i| i.blob_bytes).sum::<u64>());
        v["tar_bytes"] = json!(ids.iter().map(|i| i.tar_bytes).sum::<u64>());
        if ask.ci.is_some() {
            v["ci"] = json!({
                "pass": !failed,
                "rules": verdicts.iter().map(|r| json!({
                    "rule": r.rule, "value": r.value, "limit": r.limit, "pass": r.pass,
                })).collect::<Vec<_>>(),
            });
        }
        writeln!(o, "{v}")?;
    } else {
        text(&mut o, &rep, &ids, img.as_ref())?;
        if ask.ci.is_some() {
            writeln!(o, "ci:")?;
            for r in &verdicts {
                writeln!(
                    o,
                    "  {}  {}: {} (limit {})",
                    if r.pass { "PASS" } else { "FAIL" },
                    r.rule,
                    r.value,
                    r.limit
                )?;
            }
            writeln!(o, "  {}", if failed { "FAILED" } else { "passed" })?;
        }
    }
    o.flush()?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

struct Verdict {
    rule: &'static str,
    value: String,
    limit: String,
    pass: bool,
}

fn verdicts(rep: &Report, c: &Ci) -> Vec<Verdict> {
    let mut v = vec![
        Verdict {
            rule: "lowest-efficiency",
            value: format!("{:.4}", rep.efficiency),
            limit: format!("{}", c.lowest_efficiency),
            pass: rep.efficiency >= c.lowest_efficiency,
        },
        Verdict {
            rule: "highest-wasted-share",
            value: format!("{:.4}", rep.wasted_user_share),
            limit: format!("{}", c.highest_wasted_share),
            pass: rep.wasted_user_share <= c.highest_wasted_share,
        },
    ];
    if let Some(b) = c.highest_wasted_bytes {
        v.push(Verdict {
            rule: "highest-wasted-bytes",
            value: rep.wasted_bytes.to_string(),
            limit: b.to_string(),
            pass: rep.wasted_bytes <= b,
        });
    }
    v
}

fn text(o: &mut dyn Write, rep: &Report, ids: &[Ident], img: Option<&Image>) -> io::Result<()> {
    if let Some(i) = img {
        let title = i
            .names
            .first()
            .cloned()
            .unwrap_or_else(|| "(untagged)".into());
        writeln!(o, "{title}  ({})", i.source.display())?;
        writeln!(o, "  config:     {}", i.config_digest)?;
    }
    let blob: u64 = ids.iter().map(|i| i.blob_bytes).sum();
    let tar: u64 = ids.iter().map(|i| i.tar_bytes).sum();
    writeln!(
        o,
        "  size:       {} stored ({} as tars), {} of file data",
        human(blob),
        human(tar),
        human(rep.stored_bytes)
    )?;
    writeln!(
        o,
        "  visible:    {} ({} bytes)",
        human(rep.visible_bytes),
        rep.visible_bytes
    )?;
    writeln!(
        o,
        "  wasted:     {} ({} bytes): {:.1}% of the data, {:.1}% of the layers above the first",
        human(rep.wasted_bytes),
        rep.wasted_bytes,
        100.0 * (1.0 - rep.efficiency),
        100.0 * rep.wasted_user_share
    )?;
    writeln!(o, "  efficiency: {:.4}", rep.efficiency)?;
    writeln!(
        o,
        "  (dive's formulas: efficiency {:.4}, wasted {} bytes, {:.1}% of user bytes)",
        rep.dive.efficiency,
        rep.dive.wasted_bytes,
        100.0 * rep.dive.user_wasted_share
    )?;
    writeln!(o, "layers (bottom first):")?;
    for (l, id) in rep.layers.iter().zip(ids) {
        writeln!(
            o,
            "  {}  {}  {} blob, {} tar",
            l.position,
            id.diff_id.as_deref().map(short).unwrap_or(&id.name),
            human(id.blob_bytes),
            human(id.tar_bytes)
        )?;
        if let Some(c) = &id.chain_id {
            writeln!(o, "       chainID {}", short(c))?;
        }
        writeln!(
            o,
            "       {} entries: {} added ({}), {} modified ({}), {} deleted (hiding {} entries, {})",
            l.entries,
            l.added.entries,
            human(l.added.bytes),
            l.modified.entries,
            human(l.modified.bytes),
            l.deleted,
            l.hidden.entries,
            human(l.hidden.bytes)
        )?;
        writeln!(
            o,
            "       {} opaque dirs; {} of its {} of file data shadowed by later layers",
            l.opaque_dirs,
            human(l.shadowed.bytes),
            human(l.stored.bytes)
        )?;
    }
    if !rep.largest_wasted.is_empty() {
        writeln!(o, "largest wasted files:")?;
        for w in &rep.largest_wasted {
            let by =
                w.by.map(|b| format!(", {} by layer {b}", w.how))
                    .unwrap_or_default();
            writeln!(
                o,
                "  {:>10}  {}  (layer {}{by})",
                human(w.bytes),
                w.path,
                w.layer
            )?;
        }
    }
    Ok(())
}

/// The components of `path` (absolute or not).
fn comps(path: &str) -> Vec<&[u8]> {
    path.as_bytes()
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect()
}

/// Layer `idx`'s own entry at `rel`, whiteouts included (a whiteout of a
/// parent: none).
fn entry_at(idx: &unionfs::tar::LayerIndex, rel: &[u8]) -> Option<EntryId> {
    let mut cur = EntryId::ROOT;
    for c in rel.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        if idx.entry(cur).is_whiteout() {
            return None;
        }
        cur = idx.child(cur, c)?;
    }
    Some(cur)
}

/// `unionfs ls --versions PATH`: each layer's entry for PATH.
pub fn versions(layers: &LayerArgs, path: &str, json: bool) -> Result<ExitCode> {
    let (stack, img) = layers::open(&layers.source()?, &layers.cache.options())?;
    let ids = idents(&stack, img.as_ref());
    let rel = comps(path).join(&b'/');
    let shown = stack.resolve(&rel);
    let mut o = io::BufWriter::new(io::stdout().lock());
    let mut any = false;
    for (i, l) in stack.layers().iter().enumerate() {
        let idx = &l.index;
        let Some(id) = entry_at(idx, &rel) else {
            continue;
        };
        any = true;
        let r = LayerRef {
            layer: LayerId(i as u16),
            entry: id,
        };
        let e = idx.entry(id);
        // A hard link shows its inode's metadata (its own record has none).
        let mt = idx.meta(idx.inode_of(id));
        let is_shown = shown
            .as_ref()
            .is_some_and(|m| m.top == r || (m.is_dir() && m.dirs.contains(&r)));
        let what = if e.is_whiteout() {
            "whiteout"
        } else {
            report::type_word(e.mode())
        };
        let opaque = e.is_dir() && e.has(F_OPAQUE);
        let digest = if e.kind() == libc::S_IFREG {
            Some(report::content_sha256(&stack, r)?)
        } else {
            None
        };
        let link = (e.kind() == libc::S_IFLNK)
            .then(|| String::from_utf8_lossy(idx.extra(idx.inode_of(id)).link).into_owned());
        let label = ids[i]
            .diff_id
            .clone()
            .unwrap_or_else(|| ids[i].name.clone());
        if json {
            writeln!(
                o,
                "{}",
                json!({
                    "layer": i,
                    "layer_id": label,
                    "type": what,
                    "opaque": opaque,
                    "mode": e.mode() & 0o7777,
                    "uid": mt.uid,
                    "gid": mt.gid,
                    "size": mt.size,
                    "mtime": mt.mtime,
                    "hard_link": e.has(F_HARDLINK),
                    "link": link,
                    "sha256": digest,
                    "shown": is_shown,
                })
            )?;
        } else {
            let mut line = format!("{i:>3}  {}  {what:<8}", short(&label));
            if !e.is_whiteout() {
                line += &format!(
                    "  {} {}/{} {:>10}",
                    report::mode_string(e.mode()),
                    mt.uid,
                    mt.gid,
                    mt.size
                );
            }
            if opaque {
                line += "  opaque";
            }
            if let Some(d) = &digest {
                let hex = d.strip_prefix("sha256:").unwrap_or(d);
                line += &format!("  sha256:{}", hex.get(..12).unwrap_or(hex));
            }
            if let Some(t) = link {
                line += &format!("  -> {t}");
            }
            if is_shown {
                line += "  (shown)";
            }
            writeln!(o, "{line}")?;
        }
    }
    o.flush()?;
    if !any {
        bail!("{path}: in no layer");
    }
    Ok(ExitCode::SUCCESS)
}

/// `unionfs cat [--layer N] PATH`: a file's bytes, from the merged view or
/// from one layer.
pub fn cat(layers: &LayerArgs, path: &str, layer: Option<usize>) -> Result<ExitCode> {
    let (stack, _img) = layers::open(&layers.source()?, &layers.cache.options())?;
    let rel = comps(path).join(&b'/');
    let r = match layer {
        None => match stack.resolve(&rel) {
            Some(m) => m.top,
            None => bail!("{path}: no such file or directory in the merged view"),
        },
        Some(n) => {
            let Some(l) = stack.layers().get(n) else {
                bail!(
                    "--layer {n}: there are {} layers (0 to {})",
                    stack.layers().len(),
                    stack.layers().len().saturating_sub(1)
                );
            };
            match entry_at(&l.index, &rel) {
                Some(id) => LayerRef {
                    layer: LayerId(n as u16),
                    entry: id,
                },
                None => bail!("{path}: not in layer {n}"),
            }
        }
    };
    let e = stack.rec(r);
    if e.is_whiteout() {
        bail!("{path}: a whiteout in layer {}", r.layer.0);
    }
    if e.kind() != libc::S_IFREG {
        bail!(
            "{path}: a {} in layer {}, not a regular file",
            report::type_word(e.mode()),
            r.layer.0
        );
    }
    let layer = stack.layer(r.layer);
    let mut o = io::stdout().lock();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    loop {
        let n = layer.read(r.entry, off, &mut buf)?;
        if n == 0 {
            break;
        }
        o.write_all(&buf[..n])?;
        off += n as u64;
    }
    o.flush()?;
    Ok(ExitCode::SUCCESS)
}
