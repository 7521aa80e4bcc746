//! `unionfs inspect`: every figure checked against a model computed from
//! GNU tar's listing (`tar -tvf`) of each layer — the layers applied one by
//! one to a path map, as docker's overlay2 and containerd stack them — on
//! random stacks and on hand-made ones; `--ci` pass and fail; `ls --versions`
//! and `cat --layer` on a path three layers change; `--layer N --list`.

#[path = "model/inspect.rs"]
mod model;
mod util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use model::{gnu_listing, model, Want};
use unionfs::inspect;
use unionfs::stack::Stack;
use unionfs::tar::{IndexOptions, TarLayer};
use util::{layer_tar, write_tar, E, E::*};

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
