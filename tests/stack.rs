//! The merge rules of `stack/`, as table tests over tiny layers, and a
//! differential test against a naive model of what docker's overlay2 and
//! containerd build: each layer extracted on its own, then stacked by overlayfs.
//!
//! Layers are listed bottom first (docker manifest order); `view` lines read
//! `path/@2,0` (a directory merged from layers 2 and 0, top first),
//! `path@1=content`, `path@1->target`.

mod util;

use std::collections::BTreeMap;

use proptest::prelude::*;
use unionfs::stack::Stack;
use unionfs::tar::index::F_IMPLICIT;
use unionfs::tar::{IndexOptions, TarLayer};
use util::{stack, view, Hdr, Tar, E, E::*};

type Spec<'a> = &'a [(&'a str, E<'a>)];

#[track_caller]
fn check(layers: &[Spec<'_>], want: &[&str]) {
    let s = stack(layers);
    assert_eq!(view(&s), want, "layers (bottom first): {layers:#?}");
}

#[test]
fn top_layer_wins() {
    check(
        &[
            &[("etc/a", File("0")), ("etc/b", File("b0"))],
            &[("etc/a", File("1"))],
        ],
        &["etc/@1,0", "etc/a@1=1", "etc/b@0=b0"],
    );
    // The top directory's metadata is the one shown, when its tar lists it.
    let s = stack(&[&[("etc", Dir)], &[("etc", Dir), ("etc/x", File(""))]]);
    let etc = s.resolve(b"etc").unwrap();
    assert_eq!(etc.top.layer.0, 1);
    assert!(!s.rec(etc.top).has(F_IMPLICIT));
}

#[test]
fn whiteout_hides_the_name_in_every_layer_below() {
    check(
        &[
            &[("a", File("0")), ("d/x", File("0"))],
            &[("a", File("1")), ("d/x", File("1"))],
            &[(".wh.a", Whiteout), ("d/.wh.x", Whiteout)],
            &[("z", File("3"))],
        ],
        &["d/@2,1,0", "z@3=3"],
    );
    // A layer above the whiteout brings the name back, alone.
    check(
        &[
            &[("a/old", File("0"))],
            &[(".wh.a", Whiteout)],
            &[("a/new", File("2"))],
        ],
        &["a/@2", "a/new@2=2"],
    );
}

#[test]
fn whiteout_does_not_hide_its_own_layer() {
    for order in [[0, 1], [1, 0]] {
        let l1 = [(".wh.a", Whiteout), ("a", File("1"))];
        let l1 = [l1[order[0]], l1[order[1]]];
        check(&[&[("a", File("0"))], &l1], &["a@1=1"]);
    }
    // A directory both whited out and filled in one layer does not merge below.
    check(
        &[
            &[("d/low", File("0"))],
            &[(".wh.d", Whiteout), ("d/high", File("1"))],
        ],
        &["d/@1", "d/high@1=1"],
    );
}

#[test]
fn opaque_directory_stops_the_merge() {
    check(
        &[
            &[("d/x", File("0")), ("e/x", File("0"))],
            &[
                ("d/.wh..wh..opq", Opaque),
                ("d/y", File("1")),
                ("e/y", File("1")),
            ],
            &[("d/z", File("2"))],
        ],
        &[
            "d/@2,1", "d/y@1=1", "d/z@2=2", "e/@1,0", "e/x@0=0", "e/y@1=1",
        ],
    );
    // An opaque directory that is empty in its layer.
    check(
        &[&[("d/x", File("0"))], &[("d/.wh..wh..opq", Opaque)]],
        &["d/@1"],
    );
}

#[test]
fn file_over_directory_and_directory_over_file() {
    check(
        &[
            &[("d/x", File("0")), ("f", File("0"))],
            &[("d", File("1")), ("f/y", File("1"))],
        ],
        &["d@1=1", "f/@1", "f/y@1=1"],
    );
    check(
        &[&[("d/x", File("0"))], &[("d", Symlink("/elsewhere"))]],
        &["d@1->/elsewhere"],
    );
    // A file in the middle cuts the directory below it off.
    check(
        &[
            &[("d/x", File("0"))],
            &[("d", File("1"))],
            &[("d/y", File("2"))],
        ],
        &["d/@2", "d/y@2=2"],
    );
}

#[test]
fn name_replaced_within_a_layer_still_merges_below() {
    // docker's overlay2 and containerd extract each layer into a directory of its
    // own: `d` replaced by a file and then by a directory there leaves a plain
    // directory, which overlayfs merges with the lower `d`. (docker's vfs driver
    // extracts onto the merged tree and would have removed the lower `d`.)
    check(
        &[
            &[("d/x", File("0"))],
            &[("d", File("1")), ("d", Dir), ("d/y", File("1"))],
        ],
        &["d/@1,0", "d/x@0=0", "d/y@1=1"],
    );
    // An opaque marker goes with the directory that held it.
    check(
        &[
            &[("d/x", File("0"))],
            &[("d/.wh..wh..opq", Opaque), ("d", Symlink("/")), ("d", Dir)],
        ],
        &["d/@1,0", "d/x@0=0"],
    );
    // A whiteout of the name itself survives the replacements.
    check(
        &[
            &[("d/x", File("0"))],
            &[(".wh.d", Whiteout), ("d", File("1")), ("d", Dir)],
        ],
        &["d/@1"],
    );
    // A directory over a directory is a merge, in one layer as across layers.
    check(
        &[
            &[("d/x", File("0"))],
            &[("d", Dir), ("d/y", File("1")), ("d", Dir)],
        ],
        &["d/@1,0", "d/x@0=0", "d/y@1=1"],
    );
}

#[test]
fn directory_below_a_whiteout_is_not_merged() {
    check(
        &[
            &[("d/x", File("0"))],
            &[(".wh.d", Whiteout)],
            &[("d/y", File("2"))],
        ],
        &["d/@2", "d/y@2=2"],
    );
    let s = stack(&[
        &[("d/x", File("0"))],
        &[(".wh.d", Whiteout)],
        &[("d/y", File("2"))],
    ]);
    assert_eq!(s.resolve(b"d/x"), None);
}

#[test]
fn listing_is_the_sorted_union_without_whiteouts_or_markers() {
    check(
        &[
            &[
                ("c", File("0")),
                ("a", File("0")),
                ("b", File("0")),
                ("B", File("0")),
            ],
            &[
                (".wh.b", Whiteout),
                ("d", File("1")),
                (".wh..wh.plnk", Whiteout),
                (".wh.nothing", Whiteout),
                ("A", File("1")),
            ],
            &[("e/.wh..wh..opq", Opaque), ("aa", File("2"))],
        ],
        &[
            "A@1=1", "B@0=0", "a@0=0", "aa@2=2", "c@0=0", "d@1=1", "e/@2",
        ],
    );
    let s = stack(&[&[("a", File(""))], &[(".wh.b", Whiteout)]]);
    let root = s.root();
    for marker in [&b".wh.b"[..], b"b", b".wh..wh..opq"] {
        assert_eq!(s.lookup(&root, marker), None, "{marker:?}");
    }
}

#[test]
fn opaque_marker_in_a_layer_root_is_ignored() {
    // overlayfs ignores `trusted.overlay.opaque` on a layer's root directory, and
    // docker's overlay2 and containerd turn the marker into exactly that xattr.
    check(
        &[
            &[("a", File("0")), ("d/x", File("0"))],
            &[(".wh..wh..opq", Opaque), ("b", File("1"))],
            &[("c", File("2"))],
        ],
        &["a@0=0", "b@1=1", "c@2=2", "d/@0", "d/x@0=0"],
    );
    let s = stack(&[
        &[("a", File("0"))],
        &[(".wh..wh..opq", Opaque)],
        &[("c", File("2"))],
    ]);
    let layers: Vec<u16> = s.root().dirs.iter().map(|r| r.layer.0).collect();
    assert_eq!(layers, [2, 1, 0]);
}

#[test]
fn four_layers() {
    check(
        &[
            // 0: base
            &[
                ("etc/passwd", File("root")),
                ("etc/hosts", File("localhost")),
                ("usr/lib/libc", File("c")),
                ("usr/lib/libm", File("m")),
                ("var/log/old", File("o")),
                ("opt/tool", File("t0")),
            ],
            // 1: removes hosts and libm, replaces var/log by a file
            &[
                ("etc/.wh.hosts", Whiteout),
                ("usr/lib/.wh.libm", Whiteout),
                ("var/log", File("log-file")),
                ("opt/tool", File("t1")),
            ],
            // 2: var/log a directory again, usr/lib opaque, hosts back
            &[
                ("var/log/new", File("n")),
                ("usr/lib/.wh..wh..opq", Opaque),
                ("usr/lib/libz", File("z")),
                ("etc/hosts", File("h2")),
            ],
            // 3: whiteout of a whole tree, and of something already gone
            &[
                (".wh.opt", Whiteout),
                ("usr/lib/.wh.libm", Whiteout),
                ("etc/passwd", Hardlink("etc/shadow")),
                ("etc/shadow", File("s3")),
                ("etc/passwd", Hardlink("etc/shadow")),
            ],
        ],
        &[
            "etc/@3,2,1,0",
            "etc/hosts@2=h2",
            "etc/passwd@3=s3",
            "etc/shadow@3=s3",
            "usr/@3,2,1,0",
            "usr/lib/@3,2",
            "usr/lib/libz@2=z",
            "var/@2,1,0",
            "var/log/@2",
            "var/log/new@2=n",
        ],
    );
}

#[test]
fn resolve_does_not_go_through_non_directories() {
    let s = stack(&[&[
        ("f", File("f")),
        ("lnk", Symlink("/etc")),
        ("etc/passwd", File("p")),
        ("d/x", File("x")),
        ("d/.wh.gone", Whiteout),
    ]]);
    for p in [
        "f/x",
        "lnk/passwd",
        "d/x/y",
        "d/gone",
        "nope",
        "d/nope/x",
        "d/.wh.gone",
    ] {
        assert_eq!(s.resolve(p.as_bytes()), None, "{p}");
    }
    for p in ["", "/", "d", "/d//x/", "./d/./x", "lnk", "etc/passwd"] {
        assert!(s.resolve(p.as_bytes()).is_some(), "{p}");
    }
    assert_eq!(s.resolve(b"/").unwrap(), s.root());
    let x = s.resolve(b"d/x").unwrap();
    assert!(!x.is_dir() && x.dirs.is_empty());
    assert!(s.read_dir(&x).is_empty(), "a file lists nothing");
}

#[test]
fn merged_dir_flags() {
    let s = stack(&[
        &[("d/x", File(""))],
        &[("d/y", File("")), ("e/z", File(""))],
    ]);
    assert!(s.resolve(b"d").unwrap().is_merged_dir());
    assert!(!s.resolve(b"e").unwrap().is_merged_dir());
    assert!(s.resolve(b"e").unwrap().is_dir());
}

// ---------------------------------------------------------------------------
// Implicit parent directories: containerd's `mkparent`

/// A directory member listed with metadata: `mode`, owner `id:id+1`, `mtime`,
/// and the xattr `user.tag` = `tag`.
fn listed_dir(t: &mut Tar, path: &str, mode: u64, id: u64, mtime: u64, tag: &str) {
    t.pax(&[("SCHILY.xattr.user.tag", tag.as_bytes())]);
    let h = Hdr::ustar(path, b'5', 0)
        .mode(mode)
        .uid(id)
        .gid(id + 1)
        .mtime(mtime);
    t.entry(h, b"");
}

/// A stack of raw tars, bottom first.
fn raw_stack(tars: &[Vec<u8>]) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let layers = tars
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let p = util::write_tar(dir.path(), &format!("{i}.tar"), t);
            TarLayer::open(&p, &IndexOptions::default()).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    Stack::new(layers)
}

/// What `path` shows: (layer, `st_mode`, uid, gid, mtime, `user.tag`, implicit).
type Shown = (u16, u32, u32, u32, i64, Option<String>, bool);

fn shown(s: &Stack, path: &str) -> Shown {
    let m = s
        .resolve(path.as_bytes())
        .unwrap_or_else(|| panic!("{path}: not found"));
    let e = s.rec(m.top);
    let idx = s.index(m.top);
    let tag = idx
        .extra(m.top.entry)
        .xattrs
        .iter()
        .find(|(k, _)| *k == b"user.tag")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
    (
        m.top.layer.0,
        e.mode(),
        s.meta(m.top).uid,
        s.meta(m.top).gid,
        s.meta(m.top).mtime,
        tag,
        e.has(F_IMPLICIT),
    )
}

/// The defaults of an implicit directory of layer `l`: 0755, root, mtime 0.
fn defaults(l: u16) -> Shown {
    (l, libc::S_IFDIR | 0o755, 0, 0, 0, None, true)
}

/// Every name of the stack resolves, and every listing entry is what lookup
/// shows (so readdir's inode numbers are lookup's); no two names show one entry.
#[track_caller]
fn consistent(s: &Stack) {
    let lines = view(s); // asserts listing == lookup for every name
    let mut tops = std::collections::HashSet::new();
    let mut todo = vec![(String::new(), s.root())];
    while let Some((p, m)) = todo.pop() {
        assert!(tops.insert(m.top), "{p}: shows an entry another name shows");
        for d in s.read_dir(&m) {
            let name = String::from_utf8_lossy(s.name(d.entry)).into_owned();
            let child = s.lookup(&m, s.name(d.entry)).unwrap();
            todo.push((format!("{p}/{name}"), child));
        }
    }
    assert_eq!(tops.len(), lines.len() + 1);
}

#[test]
fn implicit_directory_shows_the_listed_directory_below() {
    let mut l0 = Tar::new();
    listed_dir(&mut l0, "usr", 0o700, 7, 1234, "usr@0");
    listed_dir(&mut l0, "usr/lib", 0o2750, 9, 99, "lib@0");
    l0.file("usr/lib/a", b"a");
    l0.file("e/x", b""); // e implicit here…
    let mut l1 = Tar::new();
    l1.file("usr/lib/b", b"b"); // usr and usr/lib implicit over listed ones
    listed_dir(&mut l1, "e", 0o711, 3, 55, "e@1"); // …and listed above
    let s = raw_stack(&[l0.finish(), l1.finish()]);
    assert_eq!(
        shown(&s, "usr"),
        (
            0,
            libc::S_IFDIR | 0o700,
            7,
            8,
            1234,
            Some("usr@0".into()),
            false
        )
    );
    assert_eq!(
        shown(&s, "usr/lib"),
        (
            0,
            libc::S_IFDIR | 0o2750,
            9,
            10,
            99,
            Some("lib@0".into()),
            false
        )
    );
    assert_eq!(
        shown(&s, "e"),
        (
            1,
            libc::S_IFDIR | 0o711,
            3,
            4,
            55,
            Some("e@1".into()),
            false
        )
    );
    // Still merged from both layers, top first.
    let usr = s.resolve(b"usr/lib").unwrap();
    let layers: Vec<u16> = usr.dirs.iter().map(|r| r.layer.0).collect();
    assert_eq!(layers, [1, 0]);
    assert_eq!(
        view(&s),
        [
            "e/@1,0",
            "e/x@0=",
            "usr/@1,0",
            "usr/lib/@1,0",
            "usr/lib/a@0=a",
            "usr/lib/b@1=b"
        ]
    );
    consistent(&s);
}

#[test]
fn implicit_over_implicit_over_listed() {
    let mut l0 = Tar::new();
    listed_dir(&mut l0, "d", 0o700, 1, 10, "d@0");
    listed_dir(&mut l0, "m", 0o700, 1, 10, "m@0");
    l0.file("a/x", b"");
    let mut l1 = Tar::new();
    l1.file("d/1", b"");
    listed_dir(&mut l1, "m", 0o750, 2, 20, "m@1");
    l1.file("a/y", b"");
    let mut l2 = Tar::new();
    l2.file("d/2", b"");
    l2.file("m/2", b"");
    let s = raw_stack(&[l0.finish(), l1.finish(), l2.finish()]);
    assert_eq!(
        shown(&s, "d"),
        (
            0,
            libc::S_IFDIR | 0o700,
            1,
            2,
            10,
            Some("d@0".into()),
            false
        )
    );
    // The highest listed one, not the lowest.
    assert_eq!(
        shown(&s, "m"),
        (
            1,
            libc::S_IFDIR | 0o750,
            2,
            3,
            20,
            Some("m@1".into()),
            false
        )
    );
    // Implicit in every layer: the topmost, with the defaults.
    assert_eq!(shown(&s, "a"), defaults(1));
    consistent(&s);
}

#[test]
fn implicit_over_a_non_directory_keeps_the_defaults() {
    let mut l0 = Tar::new();
    l0.file("f", b"file");
    listed_dir(&mut l0, "g", 0o700, 1, 10, "g@0");
    listed_dir(&mut l0, "k", 0o700, 1, 10, "k@0");
    let mut l1 = Tar::new();
    l1.file("f/x", b""); // over a file
    l1.file(".wh.g", b"");
    l1.file("k", b"cuts k off");
    let mut l2 = Tar::new();
    l2.file("g/y", b""); // over a whiteout
    l2.file("k/z", b""); // over a file over a directory
    let s = raw_stack(&[l0.finish(), l1.finish(), l2.finish()]);
    assert_eq!(shown(&s, "f"), defaults(1));
    assert_eq!(shown(&s, "g"), defaults(2));
    assert_eq!(shown(&s, "k"), defaults(2));
    assert_eq!(
        view(&s),
        ["f/@1", "f/x@1=", "g/@2", "g/y@2=", "k/@2", "k/z@2="]
    );
    consistent(&s);
}

#[test]
fn implicit_directory_that_does_not_merge_keeps_the_defaults() {
    let mut l0 = Tar::new();
    listed_dir(&mut l0, "o", 0o700, 1, 10, "o@0");
    listed_dir(&mut l0, "w", 0o700, 1, 10, "w@0");
    l0.file("o/x", b"");
    l0.file("w/x", b"");
    let mut l1 = Tar::new();
    l1.file("o/.wh..wh..opq", b""); // opaque
    l1.file("o/y", b"");
    l1.file(".wh.w", b""); // whited out and filled in one layer
    l1.file("w/y", b"");
    let mut l2 = Tar::new();
    l2.file("o/z", b""); // implicit over implicit that stops the merge
    let s = raw_stack(&[l0.finish(), l1.finish(), l2.finish()]);
    assert_eq!(shown(&s, "o"), defaults(2));
    assert_eq!(shown(&s, "w"), defaults(1));
    assert_eq!(view(&s), ["o/@2,1", "o/y@1=", "o/z@2=", "w/@1", "w/y@1="]);
    consistent(&s);
}

#[test]
fn implicit_root_shows_the_listed_root_below() {
    let mut l0 = Tar::new();
    listed_dir(&mut l0, "./", 0o751, 5, 50, "root@0");
    l0.file("a", b"");
    let mut l1 = Tar::new();
    l1.file("b", b""); // no `./` member: the root is implicit
    let mut l2 = Tar::new();
    l2.file(".wh..wh..opq", b""); // ignored in a root: still merged
    l2.file("c", b"");
    let s = raw_stack(&[l0.finish(), l1.finish(), l2.finish()]);
    let want = (
        0,
        libc::S_IFDIR | 0o751,
        5,
        6,
        50,
        Some("root@0".into()),
        false,
    );
    assert_eq!(shown(&s, "/"), want);
    assert_eq!(shown(&s, ""), want);
    let root = s.root();
    let layers: Vec<u16> = root.dirs.iter().map(|r| r.layer.0).collect();
    assert_eq!(layers, [2, 1, 0]);
    consistent(&s);
    // A listed root above an implicit one shows; no root listed: the topmost.
    let mut l3 = Tar::new();
    listed_dir(&mut l3, ".", 0o700, 8, 80, "root@3");
    let s = raw_stack(&[Tar::new().file("a", b"").finish(), l3.finish()]);
    assert_eq!(
        shown(&s, "/"),
        (
            1,
            libc::S_IFDIR | 0o700,
            8,
            9,
            80,
            Some("root@3".into()),
            false
        )
    );
    let s = stack(&[&[("a", File(""))], &[("b", File(""))]]);
    assert_eq!(shown(&s, "/"), defaults(1));
}

// ---------------------------------------------------------------------------
// Differential: the stack against a naive overlay2-style model

#[derive(Clone, Debug, PartialEq, Eq)]
enum K {
    File,
    Dir,
    Symlink,
}

/// One generated tar entry: its path components and what it is. A whiteout's
/// last component is the name it hides; an opaque marker's path is its directory.
#[derive(Clone, Debug)]
enum Op {
    Put(Vec<&'static str>, K),
    Whiteout(Vec<&'static str>),
    Opaque(Vec<&'static str>),
}

fn comps(min: usize) -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), min..=3)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (comps(1), prop_oneof![Just(K::File), Just(K::Dir), Just(K::Symlink)])
            .prop_map(|(p, k)| Op::Put(p, k)),
        2 => comps(1).prop_map(Op::Whiteout),
        1 => comps(0).prop_map(|mut p| { p.truncate(2); Op::Opaque(p) }),
    ]
}

fn own(p: &[&str]) -> Vec<String> {
    p.iter().map(|s| s.to_string()).collect()
}

/// A node of the model: kind, the layer that shows it (for a directory, the
/// highest merged one its tar lists, else the topmost: containerd's
/// `mkparent`), whether that one is implicit, and for a directory every layer
/// merged into it, top first.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Node {
    kind: K,
    layer: usize,
    implicit: bool,
    dirs: Vec<usize>,
}

type Tree = BTreeMap<Vec<String>, Node>;

/// What a path of one extracted layer is: an object, a directory the tar does
/// not list (made for a missing parent), or a marker file.
#[derive(Clone, Debug, PartialEq, Eq)]
enum T {
    Obj(K),
    Implicit,
    Whiteout,
    Opaque,
}

impl T {
    fn is_dir(&self) -> bool {
        matches!(self, T::Obj(K::Dir) | T::Implicit)
    }
}

/// One layer extracted on its own into an empty directory, entry by entry in
/// tar order: a directory over a directory keeps its children (and is listed
/// now), anything else replaces the old entry with its subtree (markers in it
/// included); missing parents are created (implicit); an entry below a
/// non-directory is dropped.
fn extract(ops: &[Op]) -> BTreeMap<Vec<String>, T> {
    let mut t: BTreeMap<Vec<String>, T> = BTreeMap::new();
    for op in ops {
        let (dirs, path, kind) = match op {
            Op::Put(p, k) => (&p[..p.len() - 1], own(p), T::Obj(k.clone())),
            Op::Whiteout(p) => {
                let mut q = own(&p[..p.len() - 1]);
                q.push(format!(".wh.{}", p[p.len() - 1]));
                (&p[..p.len() - 1], q, T::Whiteout)
            }
            Op::Opaque(p) => {
                let mut q = own(p);
                q.push(".wh..wh..opq".into());
                (&p[..], q, T::Opaque)
            }
        };
        let mut ok = true;
        for n in 1..=dirs.len() {
            match t.get(&own(&dirs[..n])) {
                Some(v) if v.is_dir() => {}
                Some(_) => {
                    ok = false;
                    break;
                }
                None => {
                    t.insert(own(&dirs[..n]), T::Implicit);
                }
            }
        }
        if !ok {
            continue;
        }
        if t.get(&path).is_some_and(T::is_dir) && kind == T::Obj(K::Dir) {
            t.insert(path, kind);
            continue;
        }
        t.retain(|q, _| !q.starts_with(&path));
        t.insert(path, kind);
    }
    t
}

/// The merged tree, the way docker's overlay2 and containerd build it: each
/// layer extracted on its own ([`extract`]), its markers turned into overlayfs
/// whiteouts and opaque directories (`.wh.NAME` next to NAME makes a directory
/// NAME opaque), and the layers stacked with overlayfs rules: a whiteout hides
/// the name below, an opaque directory hides everything below it, a directory
/// merges with a directory below, anything else replaces what is below. An
/// opaque marker in a layer's root is ignored (as overlayfs ignores opacity on a
/// layer root). A merged directory shows the highest layer that lists it.
fn model(layers: &[Vec<Op>]) -> (Vec<usize>, Tree) {
    let mut root: Vec<usize> = Vec::new();
    let mut m = Tree::new();
    for (l, ops) in layers.iter().enumerate() {
        let t = extract(ops);
        let mut whiteouts = Vec::new();
        let mut opaque = Vec::new();
        let mut objs: BTreeMap<Vec<String>, (K, bool)> = BTreeMap::new();
        for (p, v) in &t {
            let (name, dir) = p.split_last().unwrap();
            match v {
                T::Obj(k) => {
                    objs.insert(p.clone(), (k.clone(), false));
                }
                T::Implicit => {
                    objs.insert(p.clone(), (K::Dir, true));
                }
                T::Opaque if !dir.is_empty() => opaque.push(dir.to_vec()),
                T::Opaque => {}
                T::Whiteout => {
                    let mut target = dir.to_vec();
                    target.push(name[4..].to_string());
                    match t.get(&target) {
                        Some(v) if v.is_dir() => opaque.push(target),
                        Some(_) => {}
                        None => whiteouts.push(target),
                    }
                }
            }
        }
        for w in &whiteouts {
            remove_tree(&mut m, w);
        }
        for q in &opaque {
            // Put back from `objs` below, merged with nothing.
            remove_tree(&mut m, q);
        }
        root.insert(0, l);
        for (p, (k, implicit)) in objs {
            put(&mut m, l, p, k, implicit);
        }
    }
    (root, m)
}

fn remove_tree(m: &mut Tree, p: &[String]) {
    m.retain(|q, _| !q.starts_with(p));
}

/// Stacks `k` at `p` from layer `l`: a directory over a directory merges
/// (and shows unless it is implicit over a listed one), anything else
/// replaces what is below, subtree included.
fn put(m: &mut Tree, l: usize, p: Vec<String>, k: K, implicit: bool) {
    if let Some(old) = m.get_mut(&p) {
        if old.kind == K::Dir && k == K::Dir {
            old.dirs.insert(0, l);
            if !implicit || old.implicit {
                old.layer = l;
                old.implicit = implicit;
            }
            return;
        }
    }
    remove_tree(m, &p);
    let dirs = if k == K::Dir { vec![l] } else { vec![] };
    m.insert(
        p,
        Node {
            kind: k,
            layer: l,
            implicit,
            dirs,
        },
    );
}

/// A layer spec entry that owns its strings.
enum Owned {
    File(String),
    Dir,
    Symlink,
    Whiteout,
    Opaque,
}

impl Owned {
    fn e(&self) -> E<'_> {
        match self {
            Owned::File(c) => File(c),
            Owned::Dir => Dir,
            Owned::Symlink => Symlink("target"),
            Owned::Whiteout => Whiteout,
            Owned::Opaque => Opaque,
        }
    }
}

/// The tar entries of each layer; a file's content is `layer:path`.
fn layer_specs(layers: &[Vec<Op>]) -> Vec<Vec<(String, Owned)>> {
    let marker = |dir: &[&str], name: String| {
        let mut q = own(dir);
        q.push(name);
        q.join("/")
    };
    layers
        .iter()
        .enumerate()
        .map(|(l, ops)| {
            ops.iter()
                .map(|op| match op {
                    Op::Put(p, k) => {
                        let path = p.join("/");
                        let e = match k {
                            K::File => Owned::File(format!("{l}:{path}")),
                            K::Dir => Owned::Dir,
                            K::Symlink => Owned::Symlink,
                        };
                        (path, e)
                    }
                    Op::Whiteout(p) => (
                        marker(&p[..p.len() - 1], format!(".wh.{}", p[p.len() - 1])),
                        Owned::Whiteout,
                    ),
                    Op::Opaque(p) => (marker(p, ".wh..wh..opq".into()), Owned::Opaque),
                })
                .collect()
        })
        .collect()
}

fn kind_of(s: &Stack, m: &unionfs::stack::Merged) -> K {
    match s.rec(m.top).kind() {
        libc::S_IFDIR => K::Dir,
        libc::S_IFLNK => K::Symlink,
        _ => K::File,
    }
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn stack_agrees_with_an_overlay2_style_model(
        raw in prop::collection::vec(prop::collection::vec(op(), 0..8), 1..=4)
    ) {
        let layers = raw;
        let specs = layer_specs(&layers);
        let spec_refs: Vec<Vec<(&str, E<'_>)>> = specs
            .iter()
            .map(|s| s.iter().map(|(p, e)| (p.as_str(), e.e())).collect())
            .collect();
        let slices: Vec<&[(&str, E<'_>)]> = spec_refs.iter().map(|v| v.as_slice()).collect();
        let s = stack(&slices);
        let (root_dirs, m) = model(&layers);

        let got_root: Vec<usize> = s.root().dirs.iter().map(|r| usize::from(r.layer.0)).collect();
        // No layer lists its root here: the topmost shows.
        prop_assert_eq!(usize::from(s.root().top.layer.0), root_dirs[0], "root shown");
        prop_assert_eq!(got_root, root_dirs, "root layers");
        // Every path of the model resolves to the same thing.
        for (p, node) in &m {
            let path = p.join("/");
            let got = s.resolve(path.as_bytes());
            prop_assert!(got.is_some(), "{} missing from the stack", path);
            let got = got.unwrap();
            prop_assert_eq!(kind_of(&s, &got), node.kind.clone(), "{}", path);
            prop_assert_eq!(usize::from(got.top.layer.0), node.layer, "{}", path);
            prop_assert_eq!(s.rec(got.top).has(F_IMPLICIT), node.implicit, "{} implicit", path);
            let dirs: Vec<usize> = got.dirs.iter().map(|r| usize::from(r.layer.0)).collect();
            prop_assert_eq!(dirs, node.dirs.clone(), "{} merged layers", path);
            if node.kind == K::File {
                let data = util::read_all(s.layer(got.top.layer), got.top.entry);
                prop_assert_eq!(data, format!("{}:{}", node.layer, path).into_bytes());
            }
        }
        // Every directory lists exactly the model's children.
        let mut dirs: Vec<Vec<String>> = vec![vec![]];
        dirs.extend(m.iter().filter(|(_, n)| n.kind == K::Dir).map(|(p, _)| p.clone()));
        for d in dirs {
            let merged = s.resolve(d.join("/").as_bytes()).unwrap();
            let list = s.read_dir(&merged);
            for e in &list {
                let top = s.lookup(&merged, s.name(e.entry)).map(|c| c.top);
                prop_assert_eq!(top, Some(e.entry), "listing and lookup of /{}", d.join("/"));
            }
            let got: Vec<String> = list
                .iter()
                .map(|e| String::from_utf8_lossy(s.name(e.entry)).into_owned())
                .collect();
            let want: Vec<String> = m
                .keys()
                .filter(|q| q.len() == d.len() + 1 && q.starts_with(&d))
                .map(|q| q.last().unwrap().clone())
                .collect();
            prop_assert_eq!(got, want, "listing of /{}", d.join("/"));
        }
        // Every other path the layers mention is absent.
        for ops in &layers {
            for op in ops {
                let (Op::Put(p, _) | Op::Whiteout(p) | Op::Opaque(p)) = op;
                for n in 1..=p.len() {
                    let q = own(&p[..n]);
                    if !m.contains_key(&q) {
                        prop_assert_eq!(s.resolve(q.join("/").as_bytes()), None, "{}", q.join("/"));
                    }
                }
            }
        }
    }
}
