//! A model of `unionfs inspect`'s per-layer figures, computed from GNU tar's
//! listings (`tar -tvf`) of the layers: each layer applied in turn to a path
//! map, as docker's overlay2 and containerd stack them. Shared by
//! tests/inspect.rs (random stacks) and fuse-tests/tests/image.rs (the umoci
//! image), which include it with `#[path]`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// One line of `tar -tvf`: (path without a trailing slash, type char, size).
pub fn gnu_listing(tar: &Path) -> Vec<(String, char, u64)> {
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
            let mut name = f[5].trim_start_matches("./").to_string();
            if name.ends_with('/') {
                name.pop();
            }
            (name, t, size)
        })
        // The layer's root (`./`) is no entry of it.
        .filter(|(name, _, _)| !name.is_empty() && name != ".")
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
pub struct Want {
    pub entries: u64,
    pub added: (u64, u64),
    pub modified: (u64, u64),
    pub deleted: u64,
    pub hidden: (u64, u64),
    pub opaque_dirs: u64,
    pub stored: u64,
    pub shadowed: u64,
}

/// Applies the layers' listings one by one; returns per-layer figures.
pub fn model(listings: &[Vec<(String, char, u64)>]) -> Vec<Want> {
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
