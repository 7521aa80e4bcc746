//! Differential tests: kernel overlayfs is the oracle for our merge semantics.
//!
//! For each stack of layer tars: extract every layer with GNU tar (as root,
//! owners, modes, mtimes and xattrs preserved), turn OCI whiteouts into
//! overlayfs ones, mount `overlay -o lowerdir=TOP:…:BOTTOM`, mount unionfs on
//! the same tars, and compare the two trees entry by entry (STYLE.md item 4).
//!
//! Owns the harness and its cases; hand-written expectations live in `mount.rs`.
//!
//! Harness rules that keep the oracle honest:
//! - a parent directory a layer does not list (an implicit one) gets, in the
//!   oracle's extraction, the metadata containerd's `mkparent` gives it — the
//!   merged directory's below, else 0755, root, mtime 0 — instead of GNU tar's
//!   current time and umask (`oracle::fill_implicit_dirs`). Hand-written cases
//!   declare every parent (`explicit_parents`) unless they test implicit ones;
//!   random stacks leave one missing parent in four implicit;
//! - no path appears twice in one generated layer;
//! - a whiteout is only generated where its directory merges with the one below
//!   (overlayfs lists a whiteout device in a directory it does not merge — an
//!   oracle quirk, not a rule), and only for a path that exists below;
//! - members are shuffled (hard links stay after their targets; one directory
//!   entry in ten may follow its children), and every declared directory gets
//!   its mtime set again after extraction: GNU tar restores a directory's times
//!   when extraction leaves it, so a later member landing in it bumps them;
//! - what the whiteout conversion touched has its directory mtime restored.
//!
//! The oracle quirk, seen on Linux 6.18: in a directory overlayfs does not merge
//! (opaque, or only in one layer), `readdir` lists a whiteout device that
//! `lstat` then says does not exist. unionfs hides it, which is what we want.
//!
//! `UNIONFS_DIFF_SEEDS=N` runs N random stacks (default 30);
//! `UNIONFS_DIFF_SEED=S` runs seed S only.

#[macro_use]
mod util;

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use unionfs::upper::WhiteoutFormat;
use util::oracle::*;
use util::*;

// ---------------------------------------------------------------------------
// The oracle

/// The tree unionfs shows for `tars`; None when FUSE tests are skipped.
fn unionfs_tree(tars: &[PathBuf], padded: bool) -> Option<Tree> {
    let m = Mount::tars(tars)?;
    Some(dump(&m.path, !padded))
}

/// Runs the oracle on `layers` (bottom first). Err: the differences, described.
/// Ok(false): skipped.
fn differential(layers: &[Layer]) -> Result<bool, String> {
    if !oracle_available() {
        return Ok(false);
    }
    let p = prepare(layers);
    let ovl_tree = overlay_tree(&p);
    let Some(our_tree) = unionfs_tree(&p.tars, p.padded) else {
        return Ok(false);
    };
    let d = diff(&ovl_tree, &our_tree);
    if std::env::var_os("UNIONFS_DIFF_VERBOSE").is_some() {
        eprintln!(
            "compared {} names, {} hard-link groups; layers:\n{}",
            ovl_tree.objs.len(),
            ovl_tree.links.len(),
            describe(layers)
        );
    }
    if d.is_empty() {
        return Ok(true);
    }
    let mut msg = format!("{} difference(s) between overlayfs and unionfs:\n", d.len());
    for line in d.iter().take(25) {
        let _ = writeln!(msg, "  {line}");
    }
    if d.len() > 25 {
        let _ = writeln!(msg, "  … and {} more", d.len() - 25);
    }
    let _ = write!(msg, "layers:\n{}", describe(layers));
    Err(msg)
}

/// Adds explicit directory entries (0755, root, DEFAULT_MTIME) for parents a
/// hand-written layer does not declare, so that GNU tar never invents one.
fn explicit_parents(mut layers: Vec<Layer>) -> Vec<Layer> {
    for l in &mut layers {
        let declared: HashSet<Vec<u8>> = l
            .entries
            .iter()
            .filter(|e| e.kind == Kind::Dir)
            .map(|e| e.path.clone())
            .collect();
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        let mut out = Layer::new();
        for e in std::mem::take(&mut l.entries) {
            let comps: Vec<&[u8]> = e.path.split(|&b| b == b'/').collect();
            for i in 1..comps.len() {
                let anc = comps[..i].join(&b'/');
                if seen.contains(&anc) {
                    continue;
                }
                assert!(
                    !declared.contains(&anc),
                    "harness: {} is declared after its child {}",
                    show(&anc),
                    show(&e.path)
                );
                out.dir(&anc);
                seen.insert(anc);
            }
            seen.insert(e.path.clone());
            out.entries.push(e);
        }
        *l = out;
    }
    layers
}

fn check(layers: Vec<Layer>) {
    check_as_is(explicit_parents(layers));
}

/// As [`check`], leaving the parents a layer does not list implicit.
fn check_as_is(layers: Vec<Layer>) {
    if let Err(msg) = differential(&layers) {
        panic!("{msg}");
    }
}

// ---------------------------------------------------------------------------
// The harness checks itself

/// The comparison is not vacuous: overlayfs on one stack against unionfs on a
/// slightly different one reports each planted difference.
#[test]
fn harness_reports_planted_differences() {
    if !oracle_available() {
        return;
    }
    let base = |variant: bool| {
        let mut l0 = Layer::new();
        l0.dir("d");
        l0.file("d/content", if variant { "B" } else { "A" });
        l0.file("d/mode", "")
            .mode(if variant { 0o600 } else { 0o644 });
        l0.file("d/owner", "").owner(1, if variant { 3 } else { 2 });
        l0.file("d/time", "")
            .mtime(1_000_000_000, if variant { 2 } else { 1 });
        l0.file("d/xattr", "")
            .xattr("user.x", if variant { "2" } else { "1" });
        l0.symlink("d/link", if variant { "there" } else { "here" });
        l0.chardev("d/dev", 1, if variant { 4 } else { 3 });
        l0.file("d/h1", "");
        l0.file("d/h2", "");
        if variant {
            l0.hardlink("d/h3", "d/h1");
        } else {
            l0.hardlink("d/h3", "d/h2");
        }
        l0.file(if variant { "only-b" } else { "only-a" }, "");
        let mut l1 = Layer::new();
        l1.dir("d");
        l1.whiteout(if variant { "d/h2" } else { "d/content" });
        explicit_parents(vec![l0, l1])
    };
    let a = prepare(&base(false));
    let b = prepare(&base(true));
    let ovl = overlay_tree(&a);
    let Some(ours) = unionfs_tree(&b.tars, b.padded) else {
        return;
    };
    assert!(diff(&ovl, &ovl).is_empty());
    let d = diff(&ovl, &ours).join("\n");
    for want in [
        "\"d/mode\": perm",
        "\"d/owner\": gid",
        "\"d/time\": mtime",
        "\"d/xattr\": xattrs",
        "\"d/link\": symlink target",
        "\"d/dev\": rdev",
        "\"only-a\": only in overlayfs",
        "\"only-b\": only in unionfs",
        "\"d/content\": only in unionfs",
        "\"d/h2\": only in overlayfs",
        "hard-link group only in overlayfs: \"d/h2\" = \"d/h3\"",
        "hard-link group only in unionfs: \"d/h1\" = \"d/h3\"",
        "\"d/h1\": nlink",
    ] {
        assert!(d.contains(want), "diff lacks {want:?}:\n{d}");
    }
}

// ---------------------------------------------------------------------------
// (a) One stack per rule

#[test]
fn top_layer_wins() {
    let mut l0 = Layer::new();
    l0.dir("etc")
        .mode(0o700)
        .owner(1, 1)
        .mtime(1_000_000_000, 1);
    l0.file("etc/passwd", "lower")
        .mode(0o600)
        .owner(2, 2)
        .mtime(1_100_000_000, 0);
    l0.file("etc/only-lower", "l")
        .mtime(1_200_000_000, 999_999_999);
    let mut l1 = Layer::new();
    l1.dir("etc")
        .mode(0o755)
        .owner(3, 4)
        .mtime(1_300_000_000, 123_456_789);
    l1.file("etc/passwd", "upper!")
        .mode(0o644)
        .owner(5, 6)
        .mtime(1_400_000_000, 987_654_321);
    l1.file("etc/only-upper", "u");
    let mut l2 = Layer::new();
    l2.file("etc-not", "unrelated");
    check(vec![l0, l1, l2]);
}

#[test]
fn whiteout_of_a_file_and_of_a_directory() {
    let mut l0 = Layer::new();
    l0.file("f", "f");
    l0.dir("d");
    l0.dir("d/sub");
    l0.file("d/sub/x", "x");
    l0.dir("keep");
    l0.file("keep/a", "a");
    l0.file("keep/b", "b");
    let mut l1 = Layer::new();
    l1.whiteout("f");
    l1.whiteout("d");
    l1.dir("keep");
    l1.whiteout("keep/b");
    let mut l2 = Layer::new();
    l2.dir("d").mode(0o711); // re-created above its whiteout: empty, not merged
    check(vec![l0, l1, l2]);
}

#[test]
fn opaque_directory_with_new_children() {
    let mut l0 = Layer::new();
    l0.dir("o");
    l0.file("o/old", "");
    l0.dir("o/olddir");
    l0.file("o/olddir/x", "");
    let mut l1 = Layer::new();
    l1.dir("o").mode(0o750).mtime(1_500_000_000, 42);
    l1.opaque("o");
    l1.file("o/new", "n");
    l1.dir("o/newdir");
    let mut l2 = Layer::new();
    l2.dir("o");
    l2.file("o/newer", "");
    check(vec![l0, l1, l2]);
}

#[test]
fn file_replaces_dir_and_dir_replaces_file() {
    let mut l0 = Layer::new();
    l0.dir("x");
    l0.file("x/y", "");
    l0.file("z", "file");
    l0.symlink("s", "x");
    let mut l1 = Layer::new();
    l1.file("x", "now a file");
    l1.dir("z");
    l1.file("z/w", "");
    l1.dir("s");
    l1.file("s/inside", "");
    let mut l2 = Layer::new();
    l2.dir("x"); // dir over file over dir: only the top one
    check(vec![l0, l1, l2]);
}

#[test]
fn whiteout_and_same_name_entry_in_one_layer() {
    let mut l0 = Layer::new();
    for d in ["e", "f"] {
        l0.dir(d);
        l0.file(format!("{d}/old"), "");
    }
    l0.file("h", "h0");
    l0.dir("i");
    l0.file("i/old", "");
    let mut l1 = Layer::new();
    l1.dir("e");
    l1.file("e/new", "");
    l1.whiteout("e"); // after the entry
    l1.whiteout("f"); // before the entry
    l1.dir("f");
    l1.file("f/new", "");
    l1.file("h", "h1");
    l1.whiteout("h");
    l1.file("i", "file now"); // file over dir, plus its whiteout
    l1.whiteout("i");
    check(vec![l0, l1]);
}

#[test]
fn hard_links_including_one_hidden_above() {
    let mut l0 = Layer::new();
    l0.dir("h");
    l0.file("h/a", "shared")
        .mode(0o640)
        .owner(7, 8)
        .mtime(1_234_567_890, 5);
    l0.hardlink("h/b", "h/a");
    l0.dir("h/sub");
    l0.hardlink("h/sub/c", "h/a");
    l0.file("solo", "s");
    l0.hardlink("solo2", "solo");
    let mut l1 = Layer::new();
    l1.dir("h");
    l1.whiteout("h/b");
    l1.file("x", "x");
    l1.hardlink("y", "x");
    let mut l2 = Layer::new();
    l2.file("solo2", "replaced above");
    check(vec![l0, l1, l2]);
}

#[test]
fn hard_links_to_symlinks_fifos_and_devices() {
    let mut l0 = Layer::new();
    l0.symlink("s", "target").owner(1, 2);
    l0.hardlink("s2", "s");
    l0.fifo("p").mode(0o600);
    l0.hardlink("p2", "p");
    l0.chardev("c", 1, 5).mode(0o640);
    l0.hardlink("c2", "c");
    l0.hardlink("c3", "c2"); // a link to a link
    let mut l1 = Layer::new();
    l1.whiteout("c");
    check(vec![l0, l1]);
}

#[test]
fn hard_link_whose_target_is_replaced_later_in_the_layer() {
    let mut l0 = Layer::new();
    l0.file("r1", "old").mode(0o600);
    l0.hardlink("r2", "r1");
    l0.file("r1", "new").mode(0o644); // same path twice: r2 keeps the old inode
    check(vec![l0, Layer::new()]);
}

/// Later members for the same path: a file replaces a file, a directory over a
/// directory only updates its metadata (children stay), a directory replaces
/// an empty one's file and vice versa.
#[test]
fn same_path_twice_in_one_layer() {
    let mut l0 = Layer::new();
    l0.dir("d");
    l0.file("d/keep", "");
    l0.file("f", "first").mode(0o600);
    l0.dir("d").mode(0o711).owner(4, 5).mtime(1_222_333_444, 5);
    l0.file("f", "second").mode(0o640);
    l0.file("x", "file first");
    l0.dir("x");
    l0.file("x/in", "");
    l0.dir("e");
    l0.file("e", "file over an empty dir");
    check(vec![l0, Layer::new()]);
}

#[test]
fn symlinks() {
    let long = "t/".repeat(80) + "end";
    let mut l0 = Layer::new();
    l0.symlink("rel", "a/b")
        .owner(5, 6)
        .mtime(1_000_000_000, 777);
    l0.symlink("abs", "/etc/passwd");
    l0.symlink("dangling", "nope");
    l0.symlink("long", &long);
    l0.symlink("bytes", b"\xe9t\xe9");
    l0.symlink("replaced", "one");
    let mut l1 = Layer::new();
    l1.symlink("replaced", "two").mtime(1_600_000_000, 1);
    l1.symlink("abs2", "/");
    check(vec![l0, l1]);
}

#[test]
fn extended_attributes() {
    let mut l0 = Layer::new();
    l0.dir("d").xattr("user.lower", "1");
    l0.file("d/f", "").xattr("user.only-lower", "x");
    l0.file("g", "").xattr("user.g", "lower");
    let mut l1 = Layer::new();
    l1.dir("d")
        .xattr("user.upper", "2")
        .xattr("trusted.t", b"\x00\x01\xff");
    l1.file("g", "")
        .xattr("user.g", "upper")
        .xattr("user.empty", "")
        .xattr("user.big", "z".repeat(2000));
    l1.symlink("s", "g").xattr("trusted.link", "yes");
    l1.file("h", "h").xattr("user.shared", "by links");
    l1.hardlink("h2", "h");
    check(vec![l0, l1]);
}

#[test]
fn fifo_and_devices() {
    let mut l0 = Layer::new();
    l0.fifo("p")
        .mode(0o620)
        .owner(1, 2)
        .mtime(1_111_111_111, 111);
    l0.chardev("null", 1, 3).mode(0o666);
    l0.chardev("big", 300, 70_000).mode(0o600);
    l0.blockdev("sda", 8, 0).mode(0o660).owner(0, 6);
    let mut l1 = Layer::new();
    l1.chardev("p", 4, 5); // a device over a fifo
    l1.whiteout("sda");
    check(vec![l0, l1]);
}

#[test]
fn modes_owners_and_times() {
    let mut l0 = Layer::new();
    l0.dir("tmp").mode(0o1777);
    l0.file("suid", "x").mode(0o4755).owner(0, 0);
    l0.file("sgid", "x").mode(0o2711).owner(10, 20);
    l0.file("none", "x").mode(0o000);
    l0.dir("closed").mode(0o000).mtime(1, 1);
    l0.file("closed/inside", "i");
    l0.file("ids", "").owner(3_000_000, 4_000_000_000);
    l0.file("old", "").mtime(-100, 0);
    l0.file("older", "").mtime(-2, 500_000_000);
    l0.file("nsec", "").mtime(1_700_000_000, 999_999_999);
    check(vec![l0]);
}

#[test]
fn layer_root_entries() {
    let mut l0 = Layer::new();
    l0.dir(".").mode(0o700).owner(1, 2).mtime(5, 5);
    l0.file("a", "");
    let mut l1 = Layer::new();
    l1.dir("./").mode(0o751).owner(3, 4).mtime(6, 6);
    l1.file("b", "");
    check(vec![l0, l1]);
}

#[test]
fn non_utf8_and_long_names() {
    let long = "n".repeat(150);
    let mut l0 = Layer::new();
    l0.dir(b"d\xff");
    l0.file(b"d\xff/caf\xe9", "1");
    l0.file(b"d\xff/gone\x80", "2");
    l0.file(&long, "long");
    l0.dir("deep");
    l0.dir(format!("deep/{}", "x".repeat(90)));
    l0.file(
        format!("deep/{}/{}", "x".repeat(90), "y".repeat(90)),
        "long path",
    );
    let mut l1 = Layer::new();
    l1.dir(b"d\xff");
    l1.whiteout(b"d\xff/gone\x80");
    l1.file(b"\xe9t\xe9", "3");
    check(vec![l0, l1]);
}

#[test]
fn deep_merge_across_many_layers() {
    let mut layers = Vec::new();
    for i in 0..6 {
        let mut l = Layer::new();
        l.dir("a").mtime(1_000 + i, 0);
        l.dir("a/b").mode(0o755 - (i as u32));
        l.dir("a/b/c");
        l.file(format!("a/b/c/f{i}"), format!("{i}"));
        l.file("a/b/c/same", format!("layer {i}"));
        if i == 3 {
            l.whiteout("a/b/c/f1");
        }
        layers.push(l);
    }
    check(layers);
}

/// An opaque marker at a layer's root (`.wh..wh..opq` at the top level).
/// overlayfs ignores `trusted.overlay.opaque` on a lower layer's root: the root
/// always merges every layer, so `below` stays visible (and so it does under
/// docker's overlay2 and containerd's overlayfs snapshotter, which turn the
/// marker into that xattr). unionfs stops the root's merge there and hides it.
// See: src/stack/mod.rs `Stack::root` (`stops_below` honours F_OPAQUE on the
// root); fix: never stop the root's merge (a root is always a directory and
// cannot be whited out), so every layer's root joins `Merged::dirs`.
#[test]
fn opaque_marker_at_the_layer_root_is_ignored_as_by_overlayfs() {
    let mut l0 = Layer::new();
    l0.file("below", "");
    let mut l1 = Layer::new();
    l1.opaque("");
    l1.file("above", "");
    check(vec![l0, l1]);
}

/// A parent directory a layer does not list (`usr/lib/x` without `usr/lib`)
/// shows the metadata of the highest merged directory below that a layer
/// lists, as containerd extracts it (`mkparent`); with none, or where the
/// implicit directory does not merge (a non-directory or a whiteout below it,
/// opaque, whited out in its own layer), 0755, root, mtime 0. The root too.
// See: src/stack/mod.rs, module docs (containerd `pkg/archive/tar.go` `mkparent`).
#[test]
fn implicit_parents_show_the_directory_below() {
    let mut l0 = Layer::new();
    l0.dir(".").mode(0o751).owner(5, 6).mtime(5, 5);
    l0.dir("usr")
        .mode(0o700)
        .owner(1, 2)
        .mtime(1_000_000_000, 5)
        .xattr("user.usr", "0");
    l0.dir("usr/lib")
        .mode(0o2750)
        .owner(3, 4)
        .mtime(1_100_000_000, 0)
        .xattr("user.lib", "0");
    l0.file("usr/lib/a", "a");
    l0.dir("mid").mode(0o711).owner(8, 9);
    l0.file("f", "a file below");
    l0.dir("w").mode(0o700).owner(1, 1);
    l0.file("w/x", "");
    l0.dir("o").mode(0o700).owner(1, 1);
    l0.file("o/x", "");
    l0.dir("gone").mode(0o700).owner(1, 1);
    let mut l1 = Layer::new();
    l1.file("usr/lib/b", "b"); // implicit over explicit (usr, usr/lib, root)
    l1.dir("mid")
        .mode(0o750)
        .owner(10, 11)
        .mtime(1_200_000_000, 7);
    l1.file("f/x", ""); // implicit over a file
    l1.whiteout("w");
    l1.file("w/y", ""); // whited out in its own layer: does not merge
    l1.opaque("o");
    l1.file("o/y", ""); // opaque: does not merge
    l1.whiteout("gone");
    l1.file("new/deep/z", ""); // implicit with nothing below
    let mut l2 = Layer::new();
    l2.file("usr/lib/c", "c"); // implicit over implicit over explicit
    l2.file("mid/m", ""); // the middle layer's explicit directory shows
    l2.file("gone/g", ""); // a whiteout below: nothing to take from
    l2.file("new/deep/zz", "");
    l2.opaque(""); // an implicit root stays merged even when opaque
    check_as_is(vec![l0, l1, l2]);
}

/// Copy-up of an implicit directory (on a writable mount) copies the metadata
/// shown, as kernel overlayfs copies up the directory extracted the containerd way.
#[test]
fn copy_up_of_an_implicit_directory_copies_the_metadata_shown() {
    if !oracle_available() {
        return;
    }
    let mut l0 = Layer::new();
    l0.dir("d")
        .mode(0o710)
        .owner(5, 6)
        .mtime(1_000_000_000, 0)
        .xattr("user.d", "lower");
    let mut l1 = Layer::new();
    l1.file("d/x", "x");
    let layers = vec![l0, l1];
    let p = prepare(&layers);
    let w = p.work.path().canonicalize().unwrap();
    for d in ["kupper", "kwork", "kmnt", "uupper"] {
        std::fs::create_dir(w.join(d)).unwrap();
    }
    let ovl = Overlay::mount_rw(
        &p.lowers,
        &w.join("kupper"),
        &w.join("kwork"),
        &w.join("kmnt"),
    );
    let Some(m) = Mount::with_upper(&p.tars, &w.join("uupper"), WhiteoutFormat::Oci) else {
        return;
    };
    for root in [&ovl.path, &m.path] {
        std::fs::write(root.join("d/new"), "n").unwrap();
    }
    let meta = |upper: &str| {
        use std::os::unix::fs::MetadataExt;
        let d = w.join(upper).join("d");
        let md = std::fs::symlink_metadata(&d).unwrap();
        let xs: Vec<_> = xattrs(&d)
            .into_iter()
            .filter(|(k, _)| k.starts_with(b"user."))
            .collect();
        (md.mode() & 0o7777, md.uid(), md.gid(), xs)
    };
    let want = (0o710, 5, 6, vec![(b"user.d".to_vec(), b"lower".to_vec())]);
    assert_eq!(meta("kupper"), want, "kernel overlayfs's copy-up");
    assert_eq!(meta("uupper"), want, "unionfs's copy-up");
}

// ---------------------------------------------------------------------------
// (b) Random stacks

/// A visible object's type, as far as the generator cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum V {
    Dir,
    File,
    Other,
}

fn is_under(p: &[u8], dir: &[u8]) -> bool {
    dir.is_empty() || (p.len() > dir.len() && p.starts_with(dir) && p[dir.len()] == b'/')
}

fn ancestors(p: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, &b) in p.iter().enumerate() {
        if b == b'/' {
            out.push(p[..i].to_vec());
        }
    }
    out
}

const NAMES: &[&[u8]] = &[
    b"a",
    b"b",
    b"c",
    b"d",
    b"e",
    b"bin",
    b"etc",
    b".hidden",
    b"\xe9t\xe9",
];
const FILE_MODES: &[u32] = &[0o644, 0o600, 0o755, 0o444, 0o4755, 0o2711, 0o640, 0o000];
const DIR_MODES: &[u32] = &[0o755, 0o700, 0o750, 0o1777, 0o555, 0o711];
const IDS: &[u32] = &[0, 0, 0, 1, 1000, 65534, 123_456];

/// Builds one layer over the visible tree `below`.
struct LayerGen<'a> {
    rng: &'a mut Rng,
    below: &'a BTreeMap<Vec<u8>, V>,
    layer: Layer,
    /// Real entries of this layer.
    here: BTreeMap<Vec<u8>, V>,
    /// Regular files of this layer (hard-link targets).
    files: Vec<Vec<u8>>,
    /// Paths whited out in this layer.
    whiteouts: HashSet<Vec<u8>>,
    /// Directories marked opaque in this layer.
    opaque: HashSet<Vec<u8>>,
}

impl LayerGen<'_> {
    fn meta(&mut self, dir: bool) -> (u32, u32, u32, i64, u32) {
        let r = &mut *self.rng;
        let mode = if dir {
            *r.pick(DIR_MODES)
        } else {
            *r.pick(FILE_MODES)
        };
        let uid = *r.pick(IDS);
        let gid = *r.pick(IDS);
        let secs = r.below(2_000_000_000) as i64;
        let nsec = if r.chance(50) {
            r.below(1_000_000_000) as u32
        } else {
            0
        };
        (mode, uid, gid, secs, nsec)
    }

    fn add(&mut self, path: Vec<u8>, kind: Kind) {
        let dir = kind == Kind::Dir;
        let (mode, uid, gid, secs, nsec) = self.meta(dir);
        let with_xattrs = matches!(kind, Kind::File(_) | Kind::Dir) && self.rng.chance(20);
        let v = match kind {
            Kind::Dir => V::Dir,
            Kind::File(_) => V::File,
            _ => V::Other,
        };
        let link = matches!(kind, Kind::HardLink(_));
        // A hard link's own header metadata (mode, owner, xattrs) is noise both
        // sides must ignore: the inode is the target's.
        let with_xattrs = with_xattrs || (link && self.rng.chance(30));
        if matches!(kind, Kind::File(_) | Kind::HardLink(_)) {
            self.files.push(path.clone()); // links to links too
        }
        self.here.insert(path.clone(), v);
        let e = self.layer.push(path, kind);
        e.mode(mode).owner(uid, gid).mtime(secs, nsec);
        if with_xattrs {
            let n = self.rng.below(2) + 1;
            for i in 0..n {
                let len = self.rng.below(40) as usize;
                let val = self.rng.bytes(len);
                e.xattr(format!("user.k{i}"), val);
            }
        }
    }

    /// Returns true if and only if `dir` (of this layer) does not merge with
    /// the layers below: opaque, or whited out in this layer.
    fn nonmerging(&self, dir: &[u8]) -> bool {
        self.opaque.contains(dir) || self.whiteouts.contains(dir)
    }

    /// Returns true if and only if some whiteout of this layer lies under `dir`.
    fn has_whiteouts_under(&self, dir: &[u8]) -> bool {
        self.whiteouts.iter().any(|w| is_under(w, dir))
    }

    /// Makes `dir` and its ancestors directories of this layer: explicit
    /// entries, but for one missing ancestor in four, left implicit (made by
    /// extraction for the entries below it). False if one of them is a
    /// non-directory here.
    fn ensure_dir(&mut self, dir: &[u8]) -> bool {
        if dir.is_empty() {
            return true;
        }
        let mut chain = ancestors(dir);
        chain.push(dir.to_vec());
        if chain
            .iter()
            .any(|a| self.here.get(a).is_some_and(|&v| v != V::Dir))
        {
            return false;
        }
        // A directory whited out in this layer becomes non-merging when added.
        if chain.iter().any(|a| {
            !self.here.contains_key(a) && self.whiteouts.contains(a) && self.has_whiteouts_under(a)
        }) {
            return false;
        }
        for a in chain {
            if self.here.contains_key(&a) {
                continue;
            }
            if self.rng.chance(25) {
                self.here.insert(a, V::Dir); // implicit
            } else {
                self.add(a, Kind::Dir);
            }
        }
        true
    }

    /// A directory to put something in: the root, one below or of this layer,
    /// or a new one under those.
    fn pick_parent(&mut self) -> Vec<u8> {
        let mut dirs: Vec<&Vec<u8>> = self
            .below
            .iter()
            .filter(|(_, &v)| v == V::Dir)
            .map(|(p, _)| p)
            .collect();
        dirs.extend(
            self.here
                .iter()
                .filter(|(_, &v)| v == V::Dir)
                .map(|(p, _)| p),
        );
        let root = Vec::new();
        dirs.push(&root);
        let mut p = (*self.rng.pick(&dirs)).clone();
        while p.iter().filter(|&&b| b == b'/').count() < 3 && self.rng.chance(25) {
            let n = *self.rng.pick(NAMES);
            p = join(&p, n);
        }
        p
    }

    fn new_name(&mut self) -> Option<Vec<u8>> {
        let parent = self.pick_parent();
        let name: Vec<u8> = if self.rng.chance(3) {
            vec![b'L'; 120]
        } else {
            self.rng.pick(NAMES).to_vec()
        };
        let p = join(&parent, &name);
        if self.here.contains_key(&p) || self.here.get(&parent).is_some_and(|&v| v != V::Dir) {
            return None;
        }
        if !self.ensure_dir(&parent) {
            return None;
        }
        Some(p)
    }

    fn add_file(&mut self) {
        if let Some(p) = self.new_name() {
            let len = match self.rng.below(10) {
                0 => 0,
                1 => 70_000 + self.rng.below(1000) as usize,
                _ => self.rng.below(3000) as usize,
            };
            let data = self.rng.bytes(len);
            self.add(p, Kind::File(data));
        }
    }

    fn add_dir(&mut self) {
        if let Some(p) = self.new_name() {
            // A directory added where this layer whites the name out does not merge.
            if self.whiteouts.contains(&p) && self.has_whiteouts_under(&p) {
                return;
            }
            self.add(p, Kind::Dir);
        }
    }

    fn add_other(&mut self) {
        let Some(p) = self.new_name() else { return };
        let kind = match self.rng.below(8) {
            0 => Kind::Fifo,
            1 => Kind::Char(1 + self.rng.below(10) as u32, self.rng.below(300) as u32),
            2 => Kind::Block(8, self.rng.below(16) as u32),
            3..=5 if !self.files.is_empty() => Kind::HardLink(self.rng.pick(&self.files).clone()),
            _ => {
                let t = match self.rng.below(4) {
                    0 => b"/etc/passwd".to_vec(),
                    1 => b"../a".to_vec(),
                    2 => self.rng.pick(NAMES).to_vec(),
                    _ => b"a/b/c".to_vec(),
                };
                Kind::Symlink(t)
            }
        };
        self.add(p, kind);
    }

    /// Whites out a path visible below (never one inside a directory this
    /// layer does not merge).
    fn whiteout(&mut self, then_replace: bool) {
        let visible: Vec<&Vec<u8>> = self.below.keys().collect();
        if visible.is_empty() {
            return;
        }
        let q = self.rng.pick(&visible).to_vec();
        if self.whiteouts.contains(&q) || ancestors(&q).iter().any(|a| self.nonmerging(a)) {
            return;
        }
        if self.here.get(&q) == Some(&V::Dir) && self.has_whiteouts_under(&q) {
            return;
        }
        let (parent, _) = split_parent(&q);
        let parent = parent.to_vec();
        if !self.ensure_dir(&parent) {
            return;
        }
        self.whiteouts.insert(q.clone());
        self.layer.whiteout(&q);
        if then_replace && !self.here.contains_key(&q) {
            if self.rng.chance(50) && !self.has_whiteouts_under(&q) {
                if self.rng.chance(30) {
                    // `.wh.q` and `q/name` only: an implicit `q` that hides below.
                    self.here.insert(q.clone(), V::Dir);
                } else {
                    self.add(q.clone(), Kind::Dir);
                }
                let name = self.rng.pick(NAMES).to_vec();
                let n = join(&q, &name);
                self.add(n, Kind::File(b"new".to_vec()));
            } else {
                self.add(q, Kind::File(b"replacement".to_vec()));
            }
        }
    }

    /// Makes a directory (usually one that exists below) opaque.
    fn make_opaque(&mut self) {
        let dirs: Vec<&Vec<u8>> = self
            .below
            .iter()
            .filter(|(p, &v)| v == V::Dir && !p.is_empty())
            .map(|(p, _)| p)
            .collect();
        let d = if dirs.is_empty() || self.rng.chance(10) {
            match self.new_name() {
                Some(p) => p,
                None => return,
            }
        } else {
            self.rng.pick(&dirs).to_vec()
        };
        if self.opaque.contains(&d) || self.has_whiteouts_under(&d) || !self.ensure_dir(&d) {
            return;
        }
        self.opaque.insert(d.clone());
        self.layer.opaque(&d);
        if self.rng.chance(70) {
            let name = self.rng.pick(NAMES).to_vec();
            let n = join(&d, &name);
            if !self.here.contains_key(&n) {
                self.add(n, Kind::File(b"in opaque".to_vec()));
            }
        }
    }

    /// The visible tree once this layer is on top of `below`.
    fn visible_after(&self) -> BTreeMap<Vec<u8>, V> {
        let mut v = self.below.clone();
        for w in &self.whiteouts {
            v.retain(|p, _| p != w && !is_under(p, w));
        }
        for o in &self.opaque {
            v.retain(|p, _| !is_under(p, o));
        }
        for (p, &k) in &self.here {
            if k != V::Dir || v.get(p).is_some_and(|&b| b != V::Dir) {
                v.retain(|q, _| q != p && !is_under(q, p));
            }
        }
        for (p, &k) in &self.here {
            v.insert(p.clone(), k);
        }
        v
    }
}

/// Reorders a layer's members at random, keeping each hard link after its
/// target and (but for one directory in ten, whose entry may then come after
/// its children, as GNU tar and unionfs both allow) each member after its
/// parent directory's entry. Whiteout and opaque markers move freely.
fn shuffle_members(layer: Layer, rng: &mut Rng) -> Layer {
    let entries = layer.entries;
    let index: BTreeMap<Vec<u8>, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.path.clone(), i))
        .collect();
    let deferred: HashSet<usize> = (0..entries.len())
        .filter(|&i| entries[i].kind == Kind::Dir && rng.chance(10))
        .collect();
    let before: Vec<Vec<usize>> = entries
        .iter()
        .map(|e| {
            let mut b: Vec<usize> = ancestors(&e.path)
                .iter()
                .filter_map(|a| index.get(a).copied())
                .filter(|a| !deferred.contains(a))
                .collect();
            if let Kind::HardLink(t) = &e.kind {
                b.push(index[t]);
            }
            b
        })
        .collect();
    let mut done = vec![false; entries.len()];
    let mut out = Layer::new();
    while out.entries.len() < entries.len() {
        let ready: Vec<usize> = (0..entries.len())
            .filter(|&i| !done[i] && before[i].iter().all(|&b| done[b]))
            .collect();
        let i = *rng.pick(&ready);
        done[i] = true;
        out.entries.push(entries[i].clone());
    }
    out
}

/// A random stack of 3–6 layers.
fn random_stack(seed: u64) -> Vec<Layer> {
    let mut rng = Rng::new(seed);
    let n = 3 + rng.below(4) as usize;
    let mut visible: BTreeMap<Vec<u8>, V> = BTreeMap::new();
    let mut layers = Vec::new();
    for _ in 0..n {
        let mut g = LayerGen {
            rng: &mut rng,
            below: &visible,
            layer: Layer::new(),
            here: BTreeMap::new(),
            files: Vec::new(),
            whiteouts: HashSet::new(),
            opaque: HashSet::new(),
        };
        if g.rng.chance(15) {
            let (mode, uid, gid, _, _) = g.meta(true);
            g.layer.dir(".").mode(mode).owner(uid, gid);
        }
        let ops = 5 + g.rng.below(25);
        for _ in 0..ops {
            match g.rng.below(20) {
                0..=5 => g.add_file(),
                6..=9 => g.add_dir(),
                10..=12 => g.add_other(),
                13..=15 => g.whiteout(false),
                16 | 17 => g.whiteout(true),
                _ => g.make_opaque(),
            }
        }
        let next = g.visible_after();
        let layer = shuffle_members(g.layer, &mut rng);
        layers.push(layer);
        visible = next;
    }
    layers
}

#[test]
fn random_stacks_match_overlayfs() {
    if !oracle_available() {
        return;
    }
    let seeds: Vec<u64> = match std::env::var("UNIONFS_DIFF_SEED") {
        Ok(s) => vec![s.parse().expect("UNIONFS_DIFF_SEED must be a number")],
        Err(_) => {
            let n = std::env::var("UNIONFS_DIFF_SEEDS")
                .ok()
                .map(|s| s.parse().expect("UNIONFS_DIFF_SEEDS must be a number"))
                .unwrap_or(30u64);
            (0..n).collect()
        }
    };
    let mut failures = Vec::new();
    for seed in seeds {
        let layers = random_stack(seed);
        if let Err(msg) = differential(&layers) {
            eprintln!("seed {seed} FAILED (rerun: UNIONFS_DIFF_SEED={seed}):\n{msg}");
            failures.push(seed);
        }
    }
    assert!(
        failures.is_empty(),
        "seeds that differ from overlayfs: {failures:?} (details above)"
    );
}
