//! `unionfs inspect`: every figure checked against a model computed from
//! GNU tar's listing (`tar -tvf`) of each layer — the layers applied one by
//! one to a path map, as docker's overlay2 and containerd stack them — on
//! random stacks and on hand-made ones; `--ci` pass and fail; `ls --versions`
//! and `cat --layer` on a path three layers change; `--layer N --list`.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use unionfs::inspect;
use unionfs::stack::Stack;
use unionfs::tar::{IndexOptions, TarLayer};
use util::{layer_tar, write_tar, E, E::*};

/// One line of `tar -tvf`: (path without a trailing slash, type char, size).
fn gnu_listing(tar: &Path) -> Vec<(String, char, u64)> {
    let out = Command::new("tar")
        .args(["-tvf"])
        .arg(tar)
        .output()
        .expect("run GNU tar");
    assert!(
        out.status.success(),
        "tar -tvf {}: {:?}",
        tar.display(),
        out
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let t = f[0].chars().next().unwrap();
            let size = f[2].parse().unwrap_or(0);
            let mut name = f[5].to_string();
            if name.ends_with('/') {
                name.pop();
            }
            (name, t, size)
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq)]
struct Obj {
    layer: usize,
    kind: char,
    size: u64,
}

fn parent(p: &str) -> Option<&str> {
    p.rsplit_once('/').map(|(a, _)| a)
}

fn under<'a>(view: &'a BTreeMap<String, Obj>, p: &str) -> Vec<&'a String> {
    let pre = format!("{p}/");
    view.keys().filter(|k| k.starts_with(&pre)).collect()
}

/// Entries and file bytes of `p` and everything under it in `view`.
fn subtree(view: &BTreeMap<String, Obj>, p: &str) -> (u64, u64) {
    let mut n = 0;
    let mut b = 0;
    let mut add = |o: &Obj| {
        n += 1;
        if o.kind == '-' {
            b += o.size;
        }
    };
    if let Some(o) = view.get(p) {
        add(o);
    }
    for k in under(view, p) {
        add(&view[k]);
    }
    (n, b)
}

fn remove_tree(view: &mut BTreeMap<String, Obj>, p: &str) {
    view.remove(p);
    for k in under(view, p).into_iter().cloned().collect::<Vec<_>>() {
        view.remove(&k);
    }
}

/// What the model expects of a layer.
#[derive(Debug, Default, PartialEq)]
struct Want {
    entries: u64,
    added: (u64, u64),
    modified: (u64, u64),
    deleted: u64,
    hidden: (u64, u64),
    opaque_dirs: u64,
    stored: u64,
    shadowed: u64,
}

/// Applies the layers' listings one by one; returns per-layer figures.
fn model(listings: &[Vec<(String, char, u64)>]) -> Vec<Want> {
    let mut view: BTreeMap<String, Obj> = BTreeMap::new();
    let mut wants = Vec::new();
    let mut stored: Vec<Vec<(String, u64)>> = Vec::new();
    for (l, list) in listings.iter().enumerate() {
        let mut w = Want::default();
        let before = view.clone();
        let name_of = |p: &str| p.rsplit('/').next().unwrap().to_string();
        // Paths this layer lists, and their parents (implicit or not).
        let mut listed: BTreeSet<String> = BTreeSet::new();
        let mut opaque: Vec<String> = Vec::new();
        let mut whiteouts: Vec<String> = Vec::new();
        for (p, _, _) in list {
            let base = name_of(p);
            let dir = parent(p).map(str::to_string);
            let target = if base == ".wh..wh..opq" {
                opaque.push(dir.clone().unwrap_or_default());
                None
            } else if let Some(t) = base.strip_prefix(".wh.") {
                let t = match &dir {
                    Some(d) => format!("{d}/{t}"),
                    None => t.to_string(),
                };
                whiteouts.push(t.clone());
                Some(t)
            } else {
                Some(p.clone())
            };
            let mut cur = target.or(dir);
            while let Some(c) = cur {
                if c.is_empty() {
                    break;
                }
                cur = parent(&c).map(str::to_string);
                listed.insert(c);
            }
        }
        // Deletions: whiteouts of shown paths…
        for t in &whiteouts {
            w.entries += 1;
            if before.contains_key(t) {
                w.deleted += 1;
                let (n, b) = subtree(&before, t);
                w.hidden.0 += n;
                w.hidden.1 += b;
                remove_tree(&mut view, t);
            }
        }
        // …and, below an opaque directory, every shown path this layer does
        // not list, counted at the topmost.
        for d in &opaque {
            if before.get(d).is_some_and(|o| o.kind == 'd') {
                w.opaque_dirs += 1;
            }
            for k in under(&before, d) {
                let top = parent(k).is_some_and(|p| p == d || listed.contains(p));
                if !listed.contains(k.as_str()) && top && view.contains_key(k) {
                    w.deleted += 1;
                    let (n, b) = subtree(&before, k);
                    w.hidden.0 += n;
                    w.hidden.1 += b;
                    remove_tree(&mut view, k);
                }
            }
        }
        // Every parent of what the layer lists (whiteouts and markers too)
        // is a directory in it: implicit ones replace what is not a
        // directory (containerd's mkparent, then overlayfs stacking).
        for (p, _, _) in list {
            let mut anc = parent(p);
            while let Some(a) = anc {
                if view.get(a).is_none_or(|o| o.kind != 'd') {
                    // A non-directory has nothing under it: replaced alone.
                    view.insert(
                        a.to_string(),
                        Obj {
                            layer: l,
                            kind: 'd',
                            size: 0,
                        },
                    );
                }
                anc = parent(a);
            }
        }
        let mut files = Vec::new();
        for (p, t, size) in list {
            let base = name_of(p);
            if base.starts_with(".wh.") {
                continue;
            }
            w.entries += 1;
            let bytes = if *t == '-' { *size } else { 0 };
            if before.contains_key(p) {
                w.modified.0 += 1;
                w.modified.1 += bytes;
            } else {
                w.added.0 += 1;
                w.added.1 += bytes;
            }
            let replaces_dir_tree = *t != 'd';
            if replaces_dir_tree {
                remove_tree(&mut view, p);
            }
            view.insert(
                p.clone(),
                Obj {
                    layer: l,
                    kind: *t,
                    size: *size,
                },
            );
            if *t == '-' {
                w.stored += size;
                files.push((p.clone(), *size));
            }
        }
        stored.push(files);
        wants.push(w);
    }
    for (l, files) in stored.iter().enumerate() {
        for (p, size) in files {
            let shown = view.get(p).is_some_and(|o| o.layer == l && o.kind == '-');
            if !shown {
                wants[l].shadowed += size;
            }
        }
    }
    wants
}

fn got(r: &inspect::LayerReport) -> Want {
    Want {
        entries: r.entries,
        added: (r.added.entries, r.added.bytes),
        modified: (r.modified.entries, r.modified.bytes),
        deleted: r.deleted,
        hidden: (r.hidden.entries, r.hidden.bytes),
        opaque_dirs: r.opaque_dirs,
        stored: r.stored.bytes,
        shadowed: r.shadowed.bytes,
    }
}

/// Writes the layers, opens them as a stack; returns it and the tar paths.
fn build(dir: &Path, layers: &[Vec<(String, E<'_>)>]) -> (Stack, Vec<PathBuf>) {
    let mut paths = Vec::new();
    let mut opened = Vec::new();
    for (i, spec) in layers.iter().enumerate() {
        let p = write_tar(dir, &format!("{i}.tar"), &layer_tar(spec));
        opened.push(TarLayer::open(&p, &IndexOptions::default()).unwrap());
        paths.push(p);
    }
    (Stack::new(opened), paths)
}

fn check(layers: &[Vec<(String, E<'_>)>]) {
    let d = tempfile::tempdir().unwrap();
    let (stack, tars) = build(d.path(), layers);
    let listings: Vec<_> = tars.iter().map(|t| gnu_listing(t)).collect();
    let want = model(&listings);
    let rep = inspect::analyze(&stack, 5);
    for (i, (w, r)) in want.iter().zip(&rep.layers).enumerate() {
        assert_eq!(&got(r), w, "layer {i} of {layers:?}\nlistings {listings:?}");
    }
    let stored: u64 = want.iter().map(|w| w.stored).sum();
    let wasted: u64 = want.iter().map(|w| w.shadowed).sum();
    assert_eq!(rep.stored_bytes, stored);
    assert_eq!(rep.wasted_bytes, wasted);
    assert_eq!(rep.visible_bytes, stored - wasted);
    let eff = if stored == 0 {
        1.0
    } else {
        (stored - wasted) as f64 / stored as f64
    };
    assert!((rep.efficiency - eff).abs() < 1e-12);
}

/// A tiny deterministic generator.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random clean layer: unique paths, no entry under a file of the same
/// layer, no entry and whiteout of one name, opaque markers on listed dirs.
fn random_layer(rng: &mut Rng) -> Vec<(String, E<'static>)> {
    const NAMES: [&str; 4] = ["a", "b", "c", "d"];
    const DATA: [&str; 4] = ["", "x", "hello", "a longer file body"];
    let mut kinds: BTreeMap<String, char> = BTreeMap::new();
    let mut out: Vec<(String, E<'static>)> = Vec::new();
    for _ in 0..rng.below(9) {
        let depth = 1 + rng.below(3) as usize;
        let comps: Vec<&str> = (0..depth).map(|_| NAMES[rng.below(4) as usize]).collect();
        let p = comps.join("/");
        // Parents must be directories in this layer (listed or implicit).
        let ok = (1..depth).all(|k| {
            let a = comps[..k].join("/");
            kinds.get(&a).is_none_or(|&c| c == 'd')
        });
        // Nor may a non-directory come after entries under its path (it
        // would replace the implicit directory and drop them).
        let has_children = kinds.keys().any(|k| k.starts_with(&format!("{p}/")));
        if !ok || kinds.contains_key(&p) {
            continue;
        }
        let whiteout_of = |p: &str| match p.rsplit_once('/') {
            Some((d, n)) => format!("{d}/.wh.{n}"),
            None => format!(".wh.{p}"),
        };
        match rng.below(6) {
            0 | 1 if !has_children => {
                kinds.insert(p.clone(), '-');
                out.push((p, File(DATA[rng.below(4) as usize])));
            }
            2 => {
                kinds.insert(p.clone(), 'd');
                out.push((p, Dir));
            }
            3 if !has_children => {
                kinds.insert(p.clone(), 'l');
                out.push((p, Symlink("target")));
            }
            4 if !has_children => {
                kinds.insert(p.clone(), 'w');
                out.push((whiteout_of(&p), Whiteout));
            }
            5 => {
                kinds.insert(p.clone(), 'd');
                out.push((p.clone(), Dir));
                out.push((format!("{p}/.wh..wh..opq"), Opaque));
            }
            _ => {}
        }
    }
    // A later entry under a path whited out earlier in this layer: dropped.
    let wh: Vec<String> = kinds
        .iter()
        .filter(|(_, &c)| c == 'w')
        .map(|(k, _)| k.clone())
        .collect();
    out.retain(|(p, _)| !wh.iter().any(|w| p.starts_with(&format!("{w}/"))));
    out
}

#[test]
fn figures_match_a_model_of_gnu_tar_listings_on_random_stacks() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let cases = std::env::var("UNIONFS_INSPECT_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    for _ in 0..cases {
        let n = 1 + rng.below(4) as usize;
        let layers: Vec<_> = (0..n).map(|_| random_layer(&mut rng)).collect();
        check(&layers);
    }
}

fn spec(v: &[(&str, E<'static>)]) -> Vec<(String, E<'static>)> {
    v.iter().map(|(p, e)| (p.to_string(), *e)).collect()
}

/// A path three layers change, an opaque directory, a deleted tree, a file
/// replaced by a directory: the figures by hand and by the model.
fn three_layers() -> Vec<Vec<(String, E<'static>)>> {
    vec![
        spec(&[
            ("etc", Dir),
            ("etc/motd", File("one")),
            ("etc/big", File("0123456789")),
            ("var", Dir),
            ("var/cache", Dir),
            ("var/cache/x", File("xxxx")),
            ("var/cache/y", File("yy")),
            ("opt", File("file")),
        ]),
        spec(&[
            ("etc", Dir),
            ("etc/motd", File("two!")),
            ("var/.wh.cache", Whiteout),
            ("opt", Dir),
            ("opt/new", File("n")),
        ]),
        spec(&[
            ("etc", Dir),
            ("etc/.wh..wh..opq", Opaque),
            ("etc/motd", File("three")),
        ]),
    ]
}

#[test]
fn figures_by_hand() {
    let layers = three_layers();
    check(&layers);
    let d = tempfile::tempdir().unwrap();
    let (stack, _) = build(d.path(), &layers);
    let rep = inspect::analyze(&stack, 10);
    // Layer 0's data: 3+10+4+2+4 = 23 bytes; only nothing of it survives
    // (motd replaced, big under the opaque etc, cache deleted, opt replaced).
    assert_eq!(rep.layers[0].stored.bytes, 23);
    assert_eq!(rep.layers[0].shadowed.bytes, 23);
    // Layer 1: motd (4) replaced by layer 2; opt/new (1) visible.
    assert_eq!(rep.layers[1].shadowed.bytes, 4);
    assert_eq!(rep.layers[1].deleted, 1);
    assert_eq!(rep.layers[1].hidden.entries, 3);
    assert_eq!(rep.layers[1].hidden.bytes, 6);
    assert_eq!(rep.layers[2].opaque_dirs, 1);
    assert_eq!(rep.layers[2].deleted, 1); // etc/big
    assert_eq!(rep.visible_bytes, 5 + 1);
    assert_eq!(rep.wasted_bytes, 27);
    let w = &rep.largest_wasted[0];
    assert_eq!((w.path.as_str(), w.bytes, w.layer), ("/etc/big", 10, 0));
    assert_eq!((w.by, w.how), (Some(2), "deleted"));
    let cache = rep
        .largest_wasted
        .iter()
        .find(|w| w.path == "/var/cache/x")
        .unwrap();
    assert_eq!((cache.by, cache.how), (Some(1), "deleted"));
    let opt = rep
        .largest_wasted
        .iter()
        .find(|w| w.path == "/opt")
        .unwrap();
    assert_eq!((opt.by, opt.how), (Some(1), "replaced"));
    // dive: etc/motd 3+4+5 over three versions (min 3), etc/big alone,
    // var/cache/{x,y} alone, var/cache's whiteout counts the deleted dir
    // (6) against its first version (a dir with children: not a leaf, so
    // none), opt 4 (leaf in 0) and opt/new 1.
    let changes: Vec<String> = inspect::layer_changes(&stack, 2)
        .iter()
        .map(|c| format!("{} {}", c.kind.letter(), String::from_utf8_lossy(&c.path)))
        .collect();
    assert_eq!(changes, ["C /etc", "D /etc/big", "C /etc/motd"]);
    let changes: Vec<String> = inspect::layer_changes(&stack, 1)
        .iter()
        .map(|c| format!("{} {}", c.kind.letter(), String::from_utf8_lossy(&c.path)))
        .collect();
    assert_eq!(
        changes,
        [
            "C /etc",
            "C /etc/motd",
            "C /opt",
            "A /opt/new",
            "D /var/cache"
        ]
    );
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_unionfs"))
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .arg("--no-cache")
        .output()
        .expect("run unionfs")
}

#[test]
fn ci_exit_status_and_the_cli() {
    let d = tempfile::tempdir().unwrap();
    let (_, tars) = build(d.path(), &three_layers());
    let layers = tars
        .iter()
        .map(|p| p.to_str().unwrap())
        .collect::<Vec<_>>()
        .join(":");
    // Wasteful: efficiency 6/33.
    let o = run(&["inspect", "--layers", &layers, "--ci"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL  lowest-efficiency"), "{text}");
    let o = run(&[
        "inspect",
        "--layers",
        &layers,
        "--ci",
        "--lowest-efficiency",
        "0.1",
        "--highest-wasted-share",
        "1",
    ]);
    // The share of wasted bytes among the upper layers' 13 bytes is over 1.
    assert_eq!(o.status.code(), Some(1));
    // A lean image passes.
    let lean = write_tar(
        d.path(),
        "lean.tar",
        &layer_tar(&spec(&[("app", Dir), ("app/bin", File("binary"))])),
    );
    let top = write_tar(
        d.path(),
        "top.tar",
        &layer_tar(&spec(&[("app/conf", File("c"))])),
    );
    let both = format!("{}:{}", lean.display(), top.display());
    let o = run(&["inspect", "--layers", &both, "--ci", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ci"]["pass"], true);
    assert_eq!(v["efficiency"], 1.0);
    assert_eq!(v["layers"][1]["added"]["entries"], 1);
    // --versions: three layers' motd, the top one shown.
    let o = run(&[
        "ls",
        "--layers",
        &layers,
        "--versions",
        "/etc/motd",
        "--json",
    ]);
    assert!(o.status.success(), "{o:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (i, (body, shown)) in [("one", false), ("two!", false), ("three", true)]
        .iter()
        .enumerate()
    {
        assert_eq!(lines[i]["layer"], i);
        assert_eq!(lines[i]["size"], body.len());
        assert_eq!(lines[i]["shown"], *shown);
        let digest = unionfs::blob::sha256_bytes(body.as_bytes());
        let got = lines[i]["sha256"].as_str().unwrap();
        assert!(digest.ends_with(got), "{digest} vs {got}");
        let c = run(&[
            "cat",
            "--layers",
            &layers,
            "--layer",
            &i.to_string(),
            "etc/motd",
        ]);
        assert_eq!(String::from_utf8_lossy(&c.stdout), *body);
    }
    let c = run(&["cat", "--layers", &layers, "/etc/motd"]);
    assert_eq!(String::from_utf8_lossy(&c.stdout), "three");
    let c = run(&["cat", "--layers", &layers, "--layer", "1", "var/cache"]);
    assert!(!c.status.success());
    assert!(String::from_utf8_lossy(&c.stderr).contains("var/cache: a whiteout in layer 1"));
    // --layer N --list.
    let o = run(&["inspect", "--layers", &layers, "--layer", "2", "--list"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "C /etc\nD /etc/big\nC /etc/motd\n"
    );
}
