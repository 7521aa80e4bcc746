//! `unionfs commit`, `unionfs export` and `unionfs diff` (issue 13), judged by
//! tools that share no code with unionfs: `docker load`/`docker save`, skopeo,
//! `umoci unpack`, GNU tar, gzip/zstd and the `tar` crate.
//!
//! Three uppers, each made by a real workload (coreutils, attr's `setfattr`)
//! through a real `unionfs mount --image FIXTURE --upper RW -o allow_other`
//! of the image of `tools/image-fixtures`, then unmounted:
//! - `oci`: as root, `--whiteout-format oci`: copy-up by append (of the
//!   1.5 MiB file too), chmod and chown of lower files and a lower directory,
//!   deleted lower files and a lower tree (`rm -rf`), a lower directory
//!   deleted and made again (opaque, with a child named to sort before
//!   `.wh..wh..opq`), a lower directory renamed (`mv`), new hard links (of a
//!   new file, of copied-up ones), symlinks (one target > 100 bytes), a fifo,
//!   a char and a block device, `user.*` xattrs set and removed, a 200-byte
//!   name, an empty file, owners above the 7-digit octal field;
//! - `overlay`: the same workload with `--whiteout-format overlay` (0/0
//!   character-device whiteouts, `trusted.overlay.opaque`);
//! - `rootless`: mounted by an unprivileged user with `--uidmap 0:UID:1
//!   --gidmap 0:GID:1` (the user is the container's root); the user writes
//!   (chmod 4755 among others), root chowns files and a lower directory to
//!   the user (container 0:0) and makes a device through `allow_other`; the
//!   upper holds `user.unionfs.override_stat` and a placeholder file.
//!
//! While mounted, the merged tree is dumped: the *recorded* tree (names,
//! types, permission bits, owners, sizes, sha256 of contents, symlink
//! targets, devices, every xattr the mount shows, non-directory mtimes in
//! seconds, hard-link groups by inode). For the rootless upper it shows host
//! ids; its *logical* tree (container ids, what a layer must carry) maps the
//! user's ids to 0 and takes the ids shown as 65534 (unmapped) from a second
//! mount of the same upper without `--uidmap`.
//!
//! Judges, for each upper (`judge_*`): `diff --json` lists exactly the
//! changes computed here from the fixture's reference tree (umoci's unpack)
//! and the recorded tree; the changeset layer's listing (order, marker form,
//! owners, private xattrs, hard links, every header against the recorded
//! tree); the OCI image through `skopeo inspect`/`skopeo copy` and `umoci
//! unpack`; digests, diffIDs, chainID and config digest recomputed here;
//! every output format (docker-archive, OCI layout with gzip, zstd and no
//! compression, OCI archive) mounted again with unionfs; reproducibility
//! (`SOURCE_DATE_EPOCH`); `export` extracted by GNU tar. Then `docker load`,
//! `docker image inspect` and `docker save` (one private dockerd for the
//! three uppers), and the safety and bad-input cases.
//!
//! Not compared, and why:
//! - directory sizes, link counts and mtimes: a merged directory reports
//!   st_nlink 1 as overlayfs does, ext4 sizes are block counts, and creating
//!   a child bumps a directory's mtime while extracting;
//! - file link counts: a writable mount reports the lower link count of a
//!   lower hard link (as overlayfs does) even after a name of it is deleted;
//! - sub-second mtimes: a layer holds whole seconds (src/commit/changeset.rs).
//!
//! One addition to the recorded tree, and why: a writable mount gives each
//! name of a lower hard link its own inode (src/overlay/mod.rs `name_ino`;
//! overlayfs with `index=off` does the same), while the image the upper is
//! committed into shows the names still in the lower layers as one inode (the
//! base layer's link is untouched). So the reference tree's link groups,
//! restricted to names the upper does not hold and the mount still shows, are
//! added to the recorded groups.
//!
//! Needs root, FUSE, kernel overlayfs, umoci, skopeo, docker.io, GNU tar,
//! gzip, zstd, attr, util-linux's setpriv, and for the rootless upper the
//! user `unionfs-rootless` (or `$UNIONFS_ROOTLESS_USER`) with /dev/fuse 0666
//! and `user_allow_other` (`tools/test` sets these up). Nothing here skips.
//!
//! The uppers are built once per process and shared by the tests, which take
//! turns on each (`scenario`); they live in /tmp/unionfs-commit-PID, removed
//! by the next run once the process is gone. What knows nothing of commit
//! (running commands, mounts, tree dumps, tar listings, dockerd) is in
//! commit/tools.rs.

#[path = "commit/tools.rs"]
mod tools;
mod util;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use serde_json::Value;
use tools::*;

/// `SOURCE_DATE_EPOCH` of the reproducibility judge, and its RFC 3339 form.
const EPOCH: &str = "1700000000";
const EPOCH_RFC3339: &str = "2023-11-14T22:13:20Z";
/// The id the mount shows for a container id no `--uidmap` range covers.
const OVERFLOW: u32 = 65534;
/// Layers of the fixture image (example/app:v1).
const BASE_LAYERS: usize = 4;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

// ---------------------------------------------------------------------------
// The image and its reference tree

/// The base image every upper sits on: the uncompressed OCI layout.
fn base() -> String {
    fx("oci")
}

/// `image.json`'s diffIDs of example/app:v1, bottom first.
fn base_diff_ids() -> Vec<String> {
    let p = fixtures().join("image.json");
    let v: Value = serde_json::from_slice(&fs::read(&p).unwrap()).expect("image.json is JSON");
    let ids: Vec<String> = v["app"]["diff_ids"]
        .as_array()
        .expect("image.json: app.diff_ids")
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), BASE_LAYERS);
    ids
}

/// The fixture's reference tree (umoci's unpack of example/app:v1).
fn reference() -> &'static Tree {
    static T: OnceLock<Tree> = OnceLock::new();
    T.get_or_init(|| {
        let t = dump(&fixtures().join("rootfs").canonicalize().unwrap());
        for p in [
            "etc/motd",
            "home/user/.profile",
            "usr/share/long",
            "app/VERSION",
        ] {
            assert!(t.objs.contains_key(p.as_bytes()), "the reference lacks {p}");
        }
        t
    })
}

/// `ls`-style sanity: `p` in `t` is `kind`.
fn assert_kind(t: &Tree, p: &str, kind: &str, what: &str) {
    assert_eq!(
        t.objs.get(p.as_bytes()).map(|o| o.kind),
        Some(kind),
        "{what}: /{p} should be a {kind}"
    );
}

// ---------------------------------------------------------------------------
// The uppers

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Root, `--whiteout-format oci`.
    Oci,
    /// Root, `--whiteout-format overlay`.
    Overlay,
    /// The rootless user, `--uidmap 0:UID:1 --gidmap 0:GID:1`.
    Rootless,
}

struct Scenario {
    kind: Kind,
    upper: PathBuf,
    /// The tree the mount showed (host ids), lower link groups added.
    seen: Tree,
    /// The same in container ids: what the layer carries (== `seen` as root).
    logical: Tree,
    /// Paths the upper holds (objects, not whiteouts or opaque markers).
    held: BTreeSet<Vec<u8>>,
    /// The mount's `--uidmap`/`--gidmap` flags (rootless), given to commit,
    /// export and the mounts of what was committed.
    ids: Vec<String>,
    /// Lower directories the workload deleted and made again (opaque).
    opaque: BTreeSet<Vec<u8>>,
}

/// The upper `k` (built on first use), for the caller alone: read-only
/// commands on one upper refuse to run at once (each takes the upper's
/// lock), so the tests that use an upper take turns.
fn scenario(k: Kind) -> Held {
    static S: [OnceLock<Scenario>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    static TURN: [Mutex<()>; 3] = [Mutex::new(()), Mutex::new(()), Mutex::new(())];
    let turn = TURN[k as usize].lock().unwrap_or_else(|e| e.into_inner());
    Held {
        s: S[k as usize].get_or_init(|| build(k)),
        _turn: turn,
    }
}

/// A scenario, and the turn to use its upper.
struct Held {
    s: &'static Scenario,
    _turn: MutexGuard<'static, ()>,
}

impl std::ops::Deref for Held {
    type Target = Scenario;
    fn deref(&self) -> &Scenario {
        self.s
    }
}

fn long_name() -> String {
    "n".repeat(200)
}

/// The root workload, run by `sh -e` in the mount.
fn root_workload() -> String {
    let target = format!("../{}", "t".repeat(150));
    format!(
        "printf 'appended\\n' >> etc/os-release
printf 'tail\\n' >> big/blob.bin
chmod 0640 etc/hello.txt
chmod 0750 bin/suid
rm -rf srv/www
printf 'now a file\\n' > srv/www
chmod 0705 srv
rm etc/rel-link
mkdir etc/rel-link
printf 'in\\n' > etc/rel-link/inside
chown 12:34 usr/bin/wall
chown 0:0 data/empty
rm etc/motd bin/abs-link dev/null
rm -rf opq/newsub
rm -rf home/user
mkdir -m 0711 home/user
printf 'new\\n' > home/user/new
mv usr/share/long usr/share/long2
mkdir -p newdir/sub
printf 'file\\n' > newdir/sub/file
chmod 0640 newdir/sub/file
chown 7:8 newdir/sub/file
ln newdir/sub/file newdir/file.hl
ln newdir/sub/file newdir/sub/file.hl2
ln etc/os-release etc/os-release.hl
ln app/VERSION app/VERSION.hl
ln -s ../etc/hello.txt app/link
ln -s /nonexistent/target app/dangling
ln -s {target} app/longlink
mkfifo -m 0640 app/fifo
mknod -m 0620 app/cdev c 4 5
mknod -m 0600 app/bdev b 7 0
setfattr -n user.new -v val app/VERSION
setfattr -n user.bin -v 0x00ff01 newdir/sub/file
setfattr -n user.dir -v d newdir
setfattr -x user.foo etc/hello.txt
touch newdir/empty
chown 3000000:4000000 newdir/empty
printf 'plus\\n' > home/user/+plus
printf '200\\n' > app/{long}
",
        long = long_name()
    )
}

/// The rootless user's workload (the user is the container's root).
fn user_workload() -> String {
    format!(
        "printf 'appended\\n' >> etc/os-release
chmod 4755 bin/tool
rm etc/motd
rm -rf deep
rm -rf usr/share/long
mkdir usr/share/long
printf 'new\\n' > usr/share/long/new
mv app app2
ln etc/os-release etc/os-release.hl
ln -s hello.txt etc/sym
mkfifo etc/fifo
setfattr -n user.new -v val etc/os-release
touch etc/empty
printf '200\\n' > etc/{long}
mkdir -p newdir/sub
printf 'f\\n' > newdir/sub/file
ln newdir/sub/file newdir/file.hl
chmod 0700 newdir/sub
",
        long = long_name()
    )
}

/// What root does on the rootless mount: chown to the user (container
/// 0:0), a device (which the daemon keeps as a placeholder plus override).
fn root_on_rootless_workload(uid: u32, gid: u32) -> String {
    format!(
        "chown {uid}:{gid} data/empty
chown {uid}:{gid} srv/www
mknod -m 0640 etc/cdev c 4 5
chown {uid}:{gid} etc/cdev
"
    )
}

/// Paths the upper holds: every object but the markers of either format
/// (`.wh.*` files; 0/0 character devices).
fn held_paths(upper: &Path) -> BTreeSet<Vec<u8>> {
    let mut out = BTreeSet::new();
    let mut todo = vec![Vec::new()];
    while let Some(rel) = todo.pop() {
        let dir = upper.join(OsStr::from_bytes(&rel));
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name();
            let name = name.as_bytes();
            let md = e.path().symlink_metadata().unwrap();
            if name.starts_with(b".wh.") || (md.file_type().is_char_device() && md.rdev() == 0) {
                continue;
            }
            let p = join(&rel, name);
            if md.is_dir() {
                todo.push(p.clone());
            }
            out.insert(p);
        }
    }
    out
}

/// Adds the reference's link groups restricted to names still lower (see
/// the module doc).
fn add_lower_links(seen: &mut Tree, held: &BTreeSet<Vec<u8>>) {
    for g in &reference().links {
        let still: BTreeSet<Vec<u8>> = g
            .iter()
            .filter(|p| seen.objs.contains_key(*p) && !held.contains(*p))
            .cloned()
            .collect();
        if still.len() > 1 {
            seen.links.insert(still);
        }
    }
}

/// The rootless tree in container ids: the user's ids are 0, ids shown as
/// 65534 are read from `ident` (the same upper mounted without `--uidmap`).
fn logical_view(seen: &Tree, ident: &Tree, uid: u32, gid: u32) -> Tree {
    let mut out = seen.clone();
    for (p, o) in out.objs.iter_mut() {
        let i = ident
            .objs
            .get(p)
            .unwrap_or_else(|| panic!("{}: not in the remount without --uidmap", show(p)));
        let mut d = Vec::new();
        obj_diff(
            p,
            &Obj {
                uid: o.uid,
                gid: o.gid,
                ..i.clone()
            },
            o,
            &mut d,
        );
        assert!(
            d.is_empty(),
            "the remount without --uidmap differs beyond owners: {d:?}"
        );
        let map = |shown: u32, user: u32, ident: u32, what: &str| -> u32 {
            if shown == user {
                0
            } else {
                assert_eq!(
                    shown,
                    OVERFLOW,
                    "{}: {what} {shown} shown with --uidmap",
                    show(p)
                );
                assert_ne!(ident, user, "{}: {what}", show(p));
                ident
            }
        };
        o.uid = map(o.uid, uid, i.uid, "uid");
        o.gid = map(o.gid, gid, i.gid, "gid");
    }
    out
}

/// Makes the upper `k` by its workload through a real mount, and records it.
fn build(k: Kind) -> Scenario {
    let dir = work_root().join(format!("scenario-{k:?}"));
    if dir.exists() {
        // A previous attempt in this process panicked half-way.
        detach_mounts_under(&dir);
        fs::remove_dir_all(&dir).unwrap();
    }
    let (upper, mnt) = (dir.join("upper"), dir.join("mnt"));
    mkdir(&upper);
    mkdir(&mnt);
    let (mut seen, ids, opaque, ident) = match k {
        Kind::Oci | Kind::Overlay => {
            let fmt = if k == Kind::Oci { "oci" } else { "overlay" };
            let m = Mnt::image(
                &base(),
                &[
                    "--upper",
                    &upper.display().to_string(),
                    "--whiteout-format",
                    fmt,
                ],
                &mnt,
            );
            sh_root(&root_workload(), &m.path).ok();
            let seen = dump(&m.path);
            m.umount();
            (seen, Vec::new(), ["home/user"], None)
        }
        Kind::Rootless => {
            let (_, uid, gid) = rootless_user();
            let cache = dir.join("cache");
            mkdir(&cache);
            for d in [&dir, &upper, &mnt, &cache] {
                std::os::unix::fs::chown(d, Some(uid), Some(gid)).unwrap();
            }
            let ids = vec![
                "--uidmap".to_owned(),
                format!("0:{uid}:1"),
                "--gidmap".to_owned(),
                format!("0:{gid}:1"),
            ];
            let m = Mnt::as_user(&base(), &upper, &cache, &ids, &mnt);
            sh_user(&user_workload(), &m.path).ok();
            sh_root(&root_on_rootless_workload(uid, gid), &m.path).ok();
            let seen = dump(&m.path);
            m.umount();
            let m = Mnt::as_user(&base(), &upper, &cache, &[], &mnt);
            let ident = dump(&m.path);
            m.umount();
            (seen, ids, ["usr/share/long"], Some((ident, uid, gid)))
        }
    };
    let held = held_paths(&upper);
    add_lower_links(&mut seen, &held);
    let logical = match &ident {
        Some((i, uid, gid)) => logical_view(&seen, i, *uid, *gid),
        None => seen.clone(),
    };
    let s = Scenario {
        kind: k,
        upper,
        seen,
        logical,
        held,
        ids,
        opaque: opaque.iter().map(|p| p.as_bytes().to_vec()).collect(),
    };
    check_workload(&s);
    s
}

/// The workload did what it says (so that the judges judge something).
fn check_workload(s: &Scenario) {
    let what = format!("{:?} upper", s.kind);
    let t = &s.logical;
    let gone = |p: &str| {
        assert!(
            !t.objs.contains_key(p.as_bytes()),
            "{what}: /{p} still there"
        )
    };
    let xattr = |p: &str, k: &str| {
        let o = &t.objs[p.as_bytes()];
        assert!(
            o.xattrs.iter().any(|(n, _)| n == k.as_bytes()),
            "{what}: /{p} lacks {k}: {}",
            show_xattrs(&o.xattrs)
        );
    };
    let upper_has = |p: &str| fs::symlink_metadata(s.upper.join(p)).is_ok();
    match s.kind {
        Kind::Oci | Kind::Overlay => {
            assert_eq!(t.objs[b"app/cdev".as_slice()].rdev, Some((4, 5)), "{what}");
            assert_kind(t, "app/bdev", "block", &what);
            assert_kind(t, "app/fifo", "fifo", &what);
            assert_kind(t, "app/longlink", "symlink", &what);
            assert_kind(t, &format!("app/{}", long_name()), "file", &what);
            assert_kind(t, "home/user/new", "file", &what);
            assert_kind(t, "usr/share/long2", "dir", &what);
            assert_kind(t, "srv/www", "file", &what);
            assert_kind(t, "etc/rel-link/inside", "file", &what);
            assert_eq!(t.objs[b"bin/suid".as_slice()].perm, 0o750, "{what}");
            for p in [
                "etc/motd",
                "bin/abs-link",
                "dev/null",
                "opq/newsub",
                "home/user/.profile",
            ] {
                gone(p);
            }
            gone("usr/share/long");
            xattr("app/VERSION", "user.new");
            assert_eq!(t.objs[b"usr/bin/wall".as_slice()].uid, 12, "{what}");
            let group: BTreeSet<Vec<u8>> =
                ["newdir/sub/file", "newdir/file.hl", "newdir/sub/file.hl2"]
                    .iter()
                    .map(|p| p.as_bytes().to_vec())
                    .collect();
            assert!(t.links.contains(&group), "{what}: {:?}", t.links);
            // The upper is in the format asked for.
            if s.kind == Kind::Oci {
                assert!(upper_has("etc/.wh.motd") && upper_has("home/user/.wh..wh..opq"));
            } else {
                let wh = fs::symlink_metadata(s.upper.join("etc/motd")).unwrap();
                assert!(
                    wh.file_type().is_char_device() && wh.rdev() == 0,
                    "{what}: etc/motd"
                );
                assert!(!upper_has("etc/.wh.motd"));
                assert_eq!(
                    util::lgetxattr_sized(
                        &s.upper.join("home/user"),
                        b"trusted.overlay.opaque",
                        16
                    ),
                    Ok(b"y".to_vec()),
                    "{what}: home/user is not opaque"
                );
            }
        }
        Kind::Rootless => {
            let (_, uid, _) = rootless_user();
            assert_eq!(s.seen.objs[b"data/empty".as_slice()].uid, uid, "{what}");
            assert_eq!(t.objs[b"data/empty".as_slice()].uid, 0, "{what}");
            assert_eq!(t.objs[b"bin/tool".as_slice()].perm, 0o4755, "{what}");
            assert_eq!(t.objs[b"etc/cdev".as_slice()].rdev, Some((4, 5)), "{what}");
            assert_eq!(t.objs[b"app2/run.sh".as_slice()].uid, 1000, "{what}");
            gone("etc/motd");
            gone("deep");
            xattr("etc/os-release", "user.new");
            // The upper is a rootless one: logical owners in xattrs, a
            // placeholder file for the device.
            assert!(
                util::lgetxattr_len(
                    &s.upper.join("etc/os-release"),
                    b"user.unionfs.override_stat"
                )
                .is_ok(),
                "{what}: no override xattr"
            );
            assert!(fs::symlink_metadata(s.upper.join("etc/cdev"))
                .unwrap()
                .is_file());
        }
    }
    assert!(!tree_diff(reference(), t).is_empty());
}

// ---------------------------------------------------------------------------
// Committing

/// `unionfs commit --upper UPPER args ids --json` (with `env`): its JSON.
fn commit_env(s: &Scenario, args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut a: Vec<String> = vec![
        "commit".into(),
        "--upper".into(),
        s.upper.display().to_string(),
    ];
    a.extend(args.iter().map(|x| x.to_string()));
    a.extend(s.ids.iter().cloned());
    a.push("--json".into());
    let out = uf_env(&a, env).ok();
    serde_json::from_str(out.text().trim())
        .unwrap_or_else(|e| panic!("`{}`: not JSON ({e}): {}", out.cmd, out.text()))
}

fn commit(s: &Scenario, args: &[&str]) -> Value {
    commit_env(s, args, &[])
}

fn field<'a>(w: &'a Value, k: &str) -> &'a str {
    w[k].as_str()
        .unwrap_or_else(|| panic!("commit --json: no string {k:?} in {w}"))
}

/// A commit's JSON without its `output` (the path written).
fn same_but_output(w: &Value) -> Value {
    let mut w = w.clone();
    w.as_object_mut()
        .expect("commit --json prints an object")
        .remove("output");
    w
}

/// OCI's chainID of `diff_ids` (bottom first): chainID(L0) = diffID0,
/// chainID(Ln) = sha256(chainID(Ln-1) + " " + diffIDn).
fn chain_id(diff_ids: &[String]) -> String {
    let mut c = diff_ids[0].clone();
    for d in &diff_ids[1..] {
        c = digest(format!("{c} {d}").as_bytes());
    }
    c
}

/// The layer tar of a blob of media type `media`, decompressed by gzip or zstd.
fn layer_tar(blob: &Path, media: &str) -> Vec<u8> {
    if media.ends_with("+gzip") {
        tool("gzip", &[OsStr::new("-dc"), blob.as_os_str()])
            .ok()
            .stdout
    } else if media.ends_with("+zstd") {
        tool("zstd", &[OsStr::new("-qdc"), blob.as_os_str()])
            .ok()
            .stdout
    } else {
        assert_eq!(
            media, "application/vnd.oci.image.layer.v1.tar",
            "media type"
        );
        read(blob)
    }
}

/// Checks a commit's config (its bytes `config`) against what the commit
/// printed: its digest, diff_ids (the base's, then the new layer's), the
/// chainID recomputed from them, the history entry; returns it parsed.
fn check_config(w: &Value, config: &[u8]) -> Value {
    assert_eq!(digest(config), field(w, "config_digest"), "config digest");
    let cfg: Value = serde_json::from_slice(config).expect("config is JSON");
    let mut want = base_diff_ids();
    want.push(field(w, "diff_id").to_owned());
    let got: Vec<String> = cfg["rootfs"]["diff_ids"]
        .as_array()
        .expect("config rootfs.diff_ids")
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        got, want,
        "config rootfs.diff_ids: the base's, then the new layer's"
    );
    assert_eq!(chain_id(&got), field(w, "chain_id"), "chainID");
    let hist = cfg["history"].as_array().expect("config history");
    assert_eq!(
        hist.last().unwrap()["created"],
        cfg["created"],
        "the new history entry is dated as the config"
    );
    let with_layer = hist
        .iter()
        .filter(|h| h["empty_layer"] != Value::Bool(true))
        .count();
    assert_eq!(
        with_layer,
        got.len(),
        "history entries that made a layer vs diff_ids: {}",
        cfg["history"]
    );
    cfg
}

/// Checks an OCI layout (a directory, or an extracted OCI archive) against
/// the commit's JSON; returns the new layer's tar.
fn check_oci_layout(dir: &Path, w: &Value, tag: &str) -> Vec<u8> {
    let blob = |d: &str| {
        dir.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let index: Value = serde_json::from_slice(&read(&dir.join("index.json"))).expect("index.json");
    let m = index["manifests"]
        .as_array()
        .expect("index.json manifests")
        .iter()
        .find(|m| m["annotations"][REF_NAME] == tag)
        .unwrap_or_else(|| panic!("index.json names no manifest {tag}: {index}"))
        .clone();
    assert_eq!(m["mediaType"], OCI_MANIFEST, "index.json's descriptor");
    assert_eq!(
        m["digest"],
        field(w, "manifest_digest"),
        "index.json → manifest"
    );
    let mbytes = read(&blob(field(w, "manifest_digest")));
    assert_eq!(
        digest(&mbytes),
        field(w, "manifest_digest"),
        "manifest blob digest"
    );
    assert_eq!(m["size"], mbytes.len(), "manifest size in index.json");
    let man: Value = serde_json::from_slice(&mbytes).unwrap();
    assert_eq!(man["mediaType"], OCI_MANIFEST);
    assert_eq!(man["config"]["digest"], field(w, "config_digest"));
    let config = read(&blob(field(w, "config_digest")));
    assert_eq!(man["config"]["size"], config.len());
    check_config(w, &config);
    let layers = man["layers"].as_array().expect("manifest layers");
    assert_eq!(layers.len(), BASE_LAYERS + 1, "layers in the manifest");
    // The base layers are carried over byte for byte: the fixture's uncompressed blobs.
    for (l, d) in layers.iter().zip(base_diff_ids()) {
        assert_eq!(l["digest"], d.as_str(), "a base layer changed");
        assert_eq!(digest(&read(&blob(&d))), d, "base blob {d}");
        assert_eq!(l["size"], read(&blob(&d)).len());
        assert_eq!(
            l["mediaType"], "application/vnd.oci.image.layer.v1.tar",
            "a base layer's media type (its bytes are an uncompressed tar)"
        );
    }
    let top = &layers[BASE_LAYERS];
    assert_eq!(top["digest"], field(w, "digest"), "the new layer's digest");
    assert_eq!(top["mediaType"], field(w, "media_type"));
    let path = blob(field(w, "digest"));
    let bytes = read(&path);
    assert_eq!(
        digest(&bytes),
        field(w, "digest"),
        "the new layer blob's digest"
    );
    assert_eq!(top["size"], bytes.len());
    assert_eq!(w["size"], bytes.len());
    let tar = layer_tar(&path, field(w, "media_type"));
    assert_eq!(
        digest(&tar),
        field(w, "diff_id"),
        "diffID = sha256 of the uncompressed tar"
    );
    assert_eq!(w["tar_size"], tar.len());
    tar
}

/// Checks a docker archive (`manifest.json`, `<diffid>.tar` layers) against
/// the commit's JSON; returns the config.
fn check_docker_archive(file: &Path, w: &Value, tag: &str) -> Value {
    let t = scratch("da-");
    tool(
        "tar",
        &[
            OsStr::new("-xf"),
            file.as_os_str(),
            OsStr::new("-C"),
            t.path().as_os_str(),
        ],
    )
    .ok();
    let m: Value =
        serde_json::from_slice(&read(&t.path().join("manifest.json"))).expect("manifest.json");
    let m = m.as_array().expect("manifest.json is an array");
    assert_eq!(m.len(), 1, "one image");
    assert_eq!(m[0]["RepoTags"], serde_json::json!([tag]));
    let config = read(&t.path().join(m[0]["Config"].as_str().unwrap()));
    let cfg = check_config(w, &config);
    let layers = m[0]["Layers"].as_array().unwrap();
    let diff_ids = cfg["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(layers.len(), BASE_LAYERS + 1);
    for (l, d) in layers.iter().zip(diff_ids) {
        let bytes = read(&t.path().join(l.as_str().unwrap()));
        assert_eq!(
            digest(&bytes),
            d.as_str().unwrap(),
            "layer {l} (uncompressed)"
        );
    }
    cfg
}

// ---------------------------------------------------------------------------
// Expected changes

/// `(kind, path)` of every change, computed from the reference tree and the
/// logical tree (the rule of src/commit/diff.rs and docker's):
/// - A: only after — every such path, children of an added directory too;
/// - D: only before, and its parent is a directory after (only the topmost
///   deleted path; the children of a deleted directory are not listed, but a
///   lower name under a directory the upper holds again, opaque or not, is);
/// - C: before and after, and the upper holds it (a copy-up, a replacement,
///   a directory holding a change). A path the upper does not hold must be
///   unchanged; that is checked here too.
///
/// Ordered depth first, each directory's names sorted.
fn expected_changes(s: &Scenario) -> Vec<(char, Vec<u8>)> {
    let (before, after) = (&reference().objs, &s.logical.objs);
    let mut out = Vec::new();
    let mut unexplained = Vec::new();
    for (p, o) in after {
        if p.is_empty() {
            continue;
        }
        match before.get(p) {
            None => out.push(('A', p.clone())),
            Some(_) if s.held.contains(p) => out.push(('C', p.clone())),
            Some(b) => obj_diff(p, b, o, &mut unexplained),
        }
    }
    assert!(
        unexplained.is_empty(),
        "{:?} upper: paths the upper does not hold changed: {unexplained:?}",
        s.kind
    );
    for p in before.keys() {
        if !p.is_empty()
            && !after.contains_key(p)
            && after.get(parent(p)).is_some_and(|o| o.kind == "dir")
        {
            out.push(('D', p.clone()));
        }
    }
    out.sort_by(|a, b| comps(&a.1).cmp(&comps(&b.1)));
    out
}

fn show_changes(v: &[(char, Vec<u8>)]) -> String {
    v.iter()
        .map(|(k, p)| format!("{k} {}", show(p)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The whiteouts a changeset over the base must hold: the deleted paths
/// that no opaque directory (the path's strict ancestor) already hides.
fn expected_whiteouts(s: &Scenario) -> BTreeSet<Vec<u8>> {
    expected_changes(s)
        .into_iter()
        .filter(|(k, p)| {
            *k == 'D'
                && !s
                    .opaque
                    .iter()
                    .any(|o| p.starts_with(o) && p.get(o.len()) == Some(&b'/'))
        })
        .map(|(_, p)| p)
        .collect()
}

// ---------------------------------------------------------------------------
// The judges

/// `unionfs diff --json` lists exactly the expected changes, in order; the
/// text form says the same.
fn judge_diff(k: Kind) {
    let held = scenario(k);
    let s: &Scenario = &held;
    let want = expected_changes(s);
    assert!(
        want.iter().any(|c| c.0 == 'A')
            && want.iter().any(|c| c.0 == 'C')
            && want.iter().any(|c| c.0 == 'D'),
        "the workload makes all three kinds of change:\n{}",
        show_changes(&want)
    );
    let up = s.upper.display().to_string();
    let json = uf(&["diff", "--image", &base(), "--upper", &up, "--json"]).ok();
    let got: Vec<(char, Vec<u8>)> = json
        .text()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("`{}`: bad JSON line {l:?}: {e}", json.cmd));
            let kind = v["kind"].as_str().unwrap_or_default();
            let path = v["path"].as_str().unwrap_or_default();
            assert!(path.starts_with('/'), "{l}: paths are absolute");
            assert!(matches!(kind, "A" | "C" | "D"), "{l}: kind A, C or D");
            (
                kind.chars().next().unwrap_or('?'),
                path.as_bytes()[1..].to_vec(),
            )
        })
        .collect();
    assert!(
        got == want,
        "`{}` of the {k:?} upper:\n--- got\n{}\n--- want\n{}",
        json.cmd,
        show_changes(&got),
        show_changes(&want)
    );
    let text = uf(&["diff", "--image", &base(), "--upper", &up]).ok();
    assert_eq!(
        text.text().trim_end(),
        show_changes(&want),
        "`{}`",
        text.cmd
    );
}

/// Checks a changeset layer's listing: order, markers, owners, private
/// xattrs, hard links, and every object's header against the logical tree.
/// `over_base`: committed with the base, so markers hide something (exact
/// sets); without it every marker of the upper is kept.
fn check_listing(s: &Scenario, bytes: &[u8], over_base: bool) {
    let what = format!("{:?} upper's layer (over the base: {over_base})", s.kind);
    let entries = parse_tar(bytes);
    let mut errs: Vec<String> = Vec::new();
    let mut dirs: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut objects = BTreeSet::new();
    let mut whiteouts = BTreeSet::new();
    let mut opaque = BTreeSet::new();
    // The names written with the data of a hard-linked inode.
    let mut firsts: BTreeSet<Vec<u8>> = BTreeSet::new();
    for (i, e) in entries.iter().enumerate() {
        let p = &e.path;
        if i > 0 && order_key(&entries[i - 1].path) >= order_key(p) {
            errs.push(format!(
                "{} after {}: not sorted depth first",
                show(p),
                show(&entries[i - 1].path)
            ));
        }
        let par = parent(p);
        if !par.is_empty() && !dirs.contains(par) {
            errs.push(format!(
                "{}: its directory is not written before it",
                show(p)
            ));
        }
        if !e.uname.is_empty() || !e.gname.is_empty() {
            errs.push(format!(
                "{}: owner names {:?}:{:?}",
                show(p),
                e.uname,
                e.gname
            ));
        }
        for (k, _) in &e.pax {
            if k == "uname"
                || k == "gname"
                || k.contains(".unionfs.")
                || k.contains("trusted.overlay.")
            {
                errs.push(format!("{}: PAX record {k}", show(p)));
            }
        }
        if !b"0123456".contains(&e.typeflag) {
            errs.push(format!("{}: typeflag {:?}", show(p), e.typeflag as char));
        }
        if e.typeflag == b'3' && e.rdev == Some((0, 0)) {
            errs.push(format!(
                "{}: a 0/0 character device (an overlay whiteout) in the layer",
                show(p)
            ));
        }
        let name = name_of(p);
        if name.starts_with(b".wh.") {
            if e.typeflag != b'0' || e.size != 0 {
                errs.push(format!(
                    "{}: a marker must be an empty regular file",
                    show(p)
                ));
            }
            if name == b".wh..wh..opq" {
                if i == 0 || entries[i - 1].path != par || entries[i - 1].typeflag != b'5' {
                    errs.push(format!(
                        "{}: not right after its directory's header",
                        show(p)
                    ));
                }
                opaque.insert(par.to_vec());
            } else {
                whiteouts.insert(join(par, &name[4..]));
            }
            continue;
        }
        objects.insert(p.clone());
        if e.typeflag == b'5' {
            dirs.insert(p.clone());
        }
        let Some(want) = s.logical.objs.get(p) else {
            errs.push(format!(
                "{}: in the layer, not in the recorded tree",
                show(p)
            ));
            continue;
        };
        if e.typeflag == b'1' {
            // Its attributes are its target's (one inode).
            let target = e.link.clone().unwrap_or_default();
            let group = s.logical.links.iter().find(|g| g.contains(p));
            if !group.is_some_and(|g| g.contains(&target)) || !firsts.contains(&target) {
                errs.push(format!(
                    "{}: a hard link to {}, which is not the first name of its group written",
                    show(p),
                    show(&target)
                ));
            }
            continue;
        }
        if let Some(g) = s.logical.links.iter().find(|g| g.contains(p)) {
            if let Some(f) = g.iter().find(|n| firsts.contains(*n)) {
                errs.push(format!(
                    "{}: written as a file, yet {} has its inode",
                    show(p),
                    show(f)
                ));
            }
            firsts.insert(p.clone());
        }
        let kind = match e.typeflag {
            b'0' => "file",
            b'2' => "symlink",
            b'3' => "char",
            b'4' => "block",
            b'5' => "dir",
            b'6' => "fifo",
            _ => "?",
        };
        let got = Obj {
            kind,
            perm: e.mode & 0o7777,
            uid: e.uid as u32,
            gid: e.gid as u32,
            size: match kind {
                "file" => Some(e.size),
                "symlink" => e.link.as_ref().map(|l| l.len() as u64),
                _ => None,
            },
            mtime: (kind != "dir").then_some(e.mtime as i64),
            link: if kind == "symlink" {
                e.link.clone()
            } else {
                None
            },
            sha256: (kind == "file").then(|| sha_hex(&e.data)),
            rdev: e.rdev,
            xattrs: e.xattrs(),
        };
        obj_diff(p, want, &got, &mut errs);
    }
    for g in &s.logical.links {
        if g.iter().all(|p| s.held.contains(p)) && !g.iter().any(|p| firsts.contains(p)) {
            errs.push(format!(
                "hard-link group {:?} not written",
                g.iter().map(|p| show(p)).collect::<Vec<_>>()
            ));
        }
    }
    if objects != s.held {
        errs.push(format!(
            "objects only in the layer: {:?}; only in the upper: {:?}",
            objects
                .difference(&s.held)
                .map(|p| show(p))
                .collect::<Vec<_>>(),
            s.held
                .difference(&objects)
                .map(|p| show(p))
                .collect::<Vec<_>>()
        ));
    }
    let want_wh = expected_whiteouts(s);
    let wh_ok = if over_base {
        whiteouts == want_wh
    } else {
        whiteouts.is_superset(&want_wh)
    };
    if !wh_ok {
        errs.push(format!(
            "whiteouts {:?}, want {:?}",
            whiteouts.iter().map(|p| show(p)).collect::<Vec<_>>(),
            want_wh.iter().map(|p| show(p)).collect::<Vec<_>>()
        ));
    }
    let opq_ok = if over_base {
        opaque == s.opaque
    } else {
        opaque.is_superset(&s.opaque)
    };
    if !opq_ok {
        errs.push(format!(
            "opaque directories {:?}, want {:?}",
            opaque.iter().map(|p| show(p)).collect::<Vec<_>>(),
            s.opaque.iter().map(|p| show(p)).collect::<Vec<_>>()
        ));
    }
    assert!(
        errs.is_empty(),
        "{what}, {} problem(s):\n  {}",
        errs.len(),
        errs.join("\n  ")
    );
}

/// The changeset layer: the same bytes twice (without and with the base),
/// its diffID, and its listing.
fn judge_layer(k: Kind) {
    let held = scenario(k);
    let s: &Scenario = &held;
    let t = scratch("layer-");
    let p = |n: &str| t.path().join(n).display().to_string();
    let a = commit(s, &["--format", "layer", "-o", &p("a.tar")]);
    let b = commit(s, &["--format", "layer", "-o", &p("b.tar")]);
    assert!(
        read(&t.path().join("a.tar")) == read(&t.path().join("b.tar")),
        "two commits of one upper differ"
    );
    assert_eq!(same_but_output(&a), same_but_output(&b));
    let c = commit(
        s,
        &["--image", &base(), "--format", "layer", "-o", &p("c.tar")],
    );
    commit(
        s,
        &["--image", &base(), "--format", "layer", "-o", &p("d.tar")],
    );
    let bytes = read(&t.path().join("c.tar"));
    assert!(
        bytes == read(&t.path().join("d.tar")),
        "two commits of one upper over the base differ"
    );
    for (w, f) in [(&a, "a.tar"), (&c, "c.tar")] {
        let bytes = read(&t.path().join(f));
        assert_eq!(
            field(w, "diff_id"),
            digest(&bytes),
            "{f}: diffID = sha256 of the tar"
        );
        assert_eq!(field(w, "digest"), field(w, "diff_id"), "{f}: uncompressed");
        assert_eq!(w["size"], bytes.len());
        assert_eq!(w["tar_size"], bytes.len());
        assert!(
            w["config_digest"].is_null() && w["chain_id"].is_null(),
            "{f}: a layer alone: {w}"
        );
    }
    check_listing(s, &bytes, true);
    check_listing(s, &read(&t.path().join("a.tar")), false);
}

/// The OCI image (gzip, the default): digests, `skopeo inspect`, `skopeo
/// copy` to an OCI archive (mounted again), `umoci unpack`.
fn judge_oci(k: Kind) {
    let held = scenario(k);
    let s: &Scenario = &held;
    let t = scratch("oci-");
    let out = t.path().join("out");
    let o = out.display().to_string();
    let w = commit(
        s,
        &[
            "--image",
            &base(),
            "--format",
            "oci",
            "--tag",
            "t/x:v1",
            "-o",
            &o,
        ],
    );
    assert!(
        field(&w, "media_type").ends_with("+gzip"),
        "OCI layers are gzip by default: {w}"
    );
    let tar = check_oci_layout(&out, &w, "v1");
    check_listing(s, &tar, true);
    let insp = tool("skopeo", &["inspect", &format!("oci:{o}:v1")]).ok();
    let v: Value = serde_json::from_slice(&insp.stdout).expect("skopeo inspect prints JSON");
    let mut want: Vec<Value> = base_diff_ids().into_iter().map(Value::from).collect();
    want.push(w["digest"].clone());
    assert_eq!(
        v["Layers"],
        Value::from(want),
        "skopeo inspect: N+1 layers, the new one on top"
    );
    assert_eq!(
        v["Digest"], w["manifest_digest"],
        "skopeo inspect: the manifest digest"
    );
    let copy = t.path().join("copy.tar").display().to_string();
    tool(
        "skopeo",
        &[
            "copy",
            &format!("oci:{o}:v1"),
            &format!("oci-archive:{copy}:v1"),
        ],
    )
    .ok();
    let bundle = t.path().join("bundle");
    tool(
        "umoci",
        &[
            OsStr::new("unpack"),
            OsStr::new("--image"),
            OsStr::new(&format!("{o}:v1")),
            bundle.as_os_str(),
        ],
    )
    .ok();
    assert_tree(
        &s.logical,
        &dump(&bundle.join("rootfs")),
        "umoci unpack of the commit",
        &format!("the {k:?} mount"),
    );
    let m = Mnt::image(&copy, &s.ids, &t.path().join("mnt"));
    let got = dump(&m.path);
    m.umount();
    assert_tree(
        &s.seen,
        &got,
        "a mount of skopeo's copy of the commit",
        &format!("the {k:?} mount"),
    );
}

/// Every output format, mounted again, shows the recorded tree; each one's
/// digests check.
fn judge_formats(k: Kind) {
    let held = scenario(k);
    let s: &Scenario = &held;
    let t = scratch("formats-");
    let p = |n: &str| t.path().join(n).display().to_string();
    let b = base();
    let forms: [(&str, Vec<&str>); 5] = [
        ("docker-archive", vec!["--format", "docker-archive"]),
        ("oci-gzip", vec!["--format", "oci", "--compress", "gzip"]),
        ("oci-zstd", vec!["--format", "oci", "--compress", "zstd"]),
        ("oci-none", vec!["--format", "oci", "--compress", "none"]),
        ("oci-archive", vec!["--format", "oci-archive"]),
    ];
    let mut diff_ids = BTreeSet::new();
    for (name, args) in forms {
        let out = p(name);
        let mut a = vec!["--image", &b, "--tag", "t/x:v1", "-o", &out];
        a.extend(args);
        let w = commit(s, &a);
        diff_ids.insert(field(&w, "diff_id").to_owned());
        match name {
            "docker-archive" => {
                check_docker_archive(Path::new(&out), &w, "t/x:v1");
            }
            "oci-archive" => {
                let x = t.path().join("oci-archive-x");
                mkdir(&x);
                tool(
                    "tar",
                    &[
                        OsStr::new("-xf"),
                        OsStr::new(&out),
                        OsStr::new("-C"),
                        x.as_os_str(),
                    ],
                )
                .ok();
                check_oci_layout(&x, &w, "v1");
            }
            _ => {
                let media = match name {
                    "oci-gzip" => "+gzip",
                    "oci-zstd" => "+zstd",
                    _ => ".tar",
                };
                assert!(field(&w, "media_type").ends_with(media), "{name}: {w}");
                check_oci_layout(Path::new(&out), &w, "v1");
            }
        }
        let m = Mnt::image(&out, &s.ids, &t.path().join(format!("mnt-{name}")));
        let got = dump(&m.path);
        m.umount();
        assert_tree(
            &s.seen,
            &got,
            &format!("a mount of the {name} commit"),
            &format!("the {k:?} mount"),
        );
    }
    assert_eq!(
        diff_ids.len(),
        1,
        "one upper, one diffID whatever the format: {diff_ids:?}"
    );
}

/// With `SOURCE_DATE_EPOCH`, two commits of every format are byte-identical
/// and dated by it; the layer alone is the image's layer.
fn judge_reproducible(k: Kind) {
    let held = scenario(k);
    let s: &Scenario = &held;
    let t = scratch("repro-");
    let env = [("SOURCE_DATE_EPOCH", EPOCH)];
    let b = base();
    let mut diff_id = None;
    for (name, fmt, compress) in [
        ("docker-archive", "docker-archive", "none"),
        ("oci-archive", "oci-archive", "gzip"),
        ("oci-gzip", "oci", "gzip"),
        ("oci-zstd", "oci", "zstd"),
        ("layer", "layer", "none"),
    ] {
        let outs: Vec<PathBuf> = ["a", "b"]
            .iter()
            .map(|n| t.path().join(format!("{n}-{name}")))
            .collect();
        let mut ws = Vec::new();
        for o in &outs {
            let o = o.display().to_string();
            let mut args = vec!["--image", &b, "--format", fmt, "--compress", compress];
            args.extend(["-o", &o]);
            if fmt != "layer" {
                args.extend(["--tag", "t/x:v1"]);
            }
            ws.push(commit_env(s, &args, &env));
        }
        assert_eq!(
            same_but_output(&ws[0]),
            same_but_output(&ws[1]),
            "{name}: what the two commits printed"
        );
        assert!(
            files_of(&outs[0]) == files_of(&outs[1]),
            "{name}: two commits with SOURCE_DATE_EPOCH={EPOCH} differ"
        );
        let d = field(&ws[0], "diff_id").to_owned();
        assert_eq!(
            diff_id.get_or_insert_with(|| d.clone()),
            &d,
            "{name}: the layer differs"
        );
        if fmt == "layer" {
            assert_eq!(digest(&read(&outs[0])), d);
        } else if fmt == "docker-archive" {
            let cfg = check_docker_archive(&outs[0], &ws[0], "t/x:v1");
            assert_eq!(cfg["created"], EPOCH_RFC3339, "config created");
        }
    }
}

/// `unionfs export --upper`, extracted by GNU tar, is the recorded tree.
fn judge_export(k: Kind) {
    let held = scenario(k);
    let s: &Scenario = &held;
    let t = scratch("export-");
    let flat = t.path().join("flat.tar");
    let mut a: Vec<String> = ["export", "--image", &base(), "--upper"]
        .iter()
        .map(|x| x.to_string())
        .collect();
    a.push(s.upper.display().to_string());
    a.extend(["-o".to_owned(), flat.display().to_string()]);
    a.extend(s.ids.iter().cloned());
    uf(&a).ok();
    check_flat_export(
        &flat,
        &s.logical,
        &format!("export of the {k:?} upper"),
        &format!("the {k:?} mount"),
    );
}

/// `flat` has no whiteout or opaque marker and, extracted by GNU tar, is `want`.
fn check_flat_export(flat: &Path, want: &Tree, what: &str, of: &str) {
    let bytes = read(flat);
    let markers: Vec<String> = parse_tar(&bytes)
        .iter()
        .filter(|e| comps(&e.path).iter().any(|c| c.starts_with(b".wh.")))
        .map(|e| show(&e.path))
        .collect();
    assert!(
        markers.is_empty(),
        "{what}: whiteout names in a flat tar: {markers:?}"
    );
    let x = flat.with_extension("x");
    mkdir(&x);
    tool(
        "tar",
        &[
            OsStr::new("--xattrs"),
            OsStr::new("--xattrs-include=*"),
            OsStr::new("--numeric-owner"),
            OsStr::new("-xpf"),
            flat.as_os_str(),
            OsStr::new("-C"),
            x.as_os_str(),
        ],
    )
    .ok();
    assert_tree(
        want,
        &dump(&x),
        &format!("GNU tar's extraction of the {what}"),
        of,
    );
}

macro_rules! judges {
    ($($judge:ident: $doc:literal;)*) => {
        $(
            #[doc = $doc]
            mod $judge {
                use super::*;
                #[test]
                fn oci_upper() {
                    super::$judge(Kind::Oci)
                }
                #[test]
                fn overlay_upper() {
                    super::$judge(Kind::Overlay)
                }
                #[test]
                fn rootless_upper() {
                    super::$judge(Kind::Rootless)
                }
            }
        )*
    };
}

judges! {
    judge_diff: "`diff --json` lists exactly the changes the workload made.";
    judge_layer: "The changeset layer: deterministic, OCI form, headers as recorded.";
    judge_oci: "The OCI image: skopeo inspect/copy and umoci unpack.";
    judge_formats: "Every format, mounted again, is the recorded tree.";
    judge_reproducible: "SOURCE_DATE_EPOCH: byte-identical images of every format.";
    judge_export: "export --upper extracted by GNU tar is the recorded tree.";
}

// ---------------------------------------------------------------------------
// docker

/// Each upper's docker-archive: `docker load` takes it, `docker image
/// inspect` shows the config's diff_ids (the new one the printed diffID) and
/// the config digest as the image ID, and what `docker save` gives back,
/// mounted, is the recorded tree. One dockerd for the three.
#[test]
fn docker_loads_and_saves_every_commit() {
    let t = scratch("docker-");
    let d = Dockerd::start(t.path());
    for k in [Kind::Oci, Kind::Overlay, Kind::Rootless] {
        let held = scenario(k);
        let s: &Scenario = &held;
        let tag = format!("t/{}:v1", format!("{k:?}").to_lowercase());
        let out = t.path().join(format!("{k:?}.tar")).display().to_string();
        let w = commit(
            s,
            &[
                "--image",
                &base(),
                "--format",
                "docker-archive",
                "--tag",
                &tag,
                "-o",
                &out,
            ],
        );
        let cfg = check_docker_archive(Path::new(&out), &w, &tag);
        let loaded = d.docker(&["load", "-i", &out]);
        assert!(
            loaded.text().contains(&tag),
            "`{}`: {}",
            loaded.cmd,
            loaded.text()
        );
        let insp = d.docker(&["image", "inspect", &tag]);
        let v: Value =
            serde_json::from_slice(&insp.stdout).expect("docker image inspect prints JSON");
        let layers = &v[0]["RootFS"]["Layers"];
        assert_eq!(
            layers, &cfg["rootfs"]["diff_ids"],
            "{k:?}: docker's layers are the config's diff_ids"
        );
        assert_eq!(layers.as_array().map(Vec::len), Some(BASE_LAYERS + 1));
        assert_eq!(
            layers[BASE_LAYERS], w["diff_id"],
            "{k:?}: the new layer as docker has it"
        );
        assert_eq!(
            v[0]["Id"], w["config_digest"],
            "{k:?}: the image ID is the config digest"
        );
        let saved = t.path().join(format!("{k:?}-saved.tar"));
        d.docker(&["save", "-o", &saved.display().to_string(), &tag]);
        let m = Mnt::image(
            &saved.display().to_string(),
            &[] as &[&str],
            &t.path().join(format!("mnt-{k:?}")),
        );
        let got = dump(&m.path);
        m.umount();
        assert_tree(
            &s.logical,
            &got,
            "a mount of docker save's archive",
            &format!("the {k:?} mount"),
        );
    }
    drop(d);
    assert!(mounts_under(t.path()).is_empty(), "dockerd left mounts");
}

/// `--tag NAME` without a version means `NAME:latest`, as for `docker tag`
/// and `docker commit`: `docker load` of the archive tags the image so (it
/// refuses a RepoTags entry without a tag as "invalid tag").
#[test]
fn docker_load_tags_a_name_without_version_as_latest() {
    let held = scenario(Kind::Oci);
    let s: &Scenario = &held;
    let t = scratch("docker-latest-");
    let d = Dockerd::start(t.path());
    for name in ["t/notag", "localhost:5000/t/port"] {
        let out = t.path().join("out.tar").display().to_string();
        let w = commit(
            s,
            &[
                "--image",
                &base(),
                "--format",
                "docker-archive",
                "--tag",
                name,
                "-o",
                &out,
            ],
        );
        let loaded = d.docker(&["load", "-i", &out]);
        let said = format!("{}{}", loaded.text(), loaded.stderr);
        assert!(
            !said.contains("invalid"),
            "`{}` with --tag {name}: {said}",
            loaded.cmd
        );
        let insp = d.docker(&["image", "inspect", &format!("{name}:latest")]);
        let v: Value = serde_json::from_slice(&insp.stdout).unwrap();
        assert_eq!(v[0]["Id"], w["config_digest"], "{name}:latest");
    }
}

// ---------------------------------------------------------------------------
// export without an upper

/// `unionfs export` of the image alone, extracted by GNU tar, is what
/// `umoci unpack` extracts.
#[test]
fn export_without_upper_is_the_image() {
    let t = scratch("export-image-");
    let flat = t.path().join("image.tar");
    uf(&[
        "export",
        "--image",
        &base(),
        "-o",
        &flat.display().to_string(),
    ])
    .ok();
    let want = reference();
    assert!(
        !want.links.is_empty(),
        "the reference has hard links to keep"
    );
    check_flat_export(&flat, want, "export of the image", "umoci unpack");
}

// ---------------------------------------------------------------------------
// Safety

/// Nothing under `dir` but `keep`: no output, no `.NAME.unionfs-tmp-*`.
fn assert_only(dir: &Path, keep: &[&str], what: &str) {
    let names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect();
    assert!(
        names.is_empty(),
        "{what}: left behind in {}: {names:?}",
        dir.display()
    );
}

/// A commit (any format), a diff or an export of an upper a live unionfs
/// mount uses is refused, one line saying "in use", nothing written; after
/// the unmount the commit works.
#[test]
fn commit_refuses_an_upper_in_use_by_a_mount() {
    let t = scratch("live-");
    let upper = t.path().join("upper");
    mkdir(&upper);
    let m = Mnt::image(
        &base(),
        &["--upper", &upper.display().to_string()],
        &t.path().join("mnt"),
    );
    fs::write(m.path.join("etc/new"), b"new\n").unwrap();
    let outs = t.path().join("outs");
    mkdir(&outs);
    for (fmt, name) in [
        ("docker-archive", "out.tar"),
        ("oci", "out-oci"),
        ("layer", "layer.tar"),
    ] {
        let o = outs.join(name).display().to_string();
        let up = upper.display().to_string();
        let msg = uf(&[
            "commit",
            "--image",
            &base(),
            "--upper",
            &up,
            "--format",
            fmt,
            "-o",
            &o,
        ])
        .refused();
        assert!(msg.contains("in use"), "{fmt}: {msg}");
        assert!(
            msg.contains(&up),
            "{fmt}: the message names the upper: {msg}"
        );
        assert_only(&outs, &[], fmt);
    }
    let up = upper.display().to_string();
    let msg = uf(&["diff", "--image", &base(), "--upper", &up]).refused();
    assert!(msg.contains("in use"), "diff: {msg}");
    let flat = outs.join("flat.tar").display().to_string();
    let msg = uf(&["export", "--image", &base(), "--upper", &up, "-o", &flat]).refused();
    assert!(msg.contains("in use"), "export: {msg}");
    assert_only(&outs, &[], "export");
    m.umount();
    let o = outs.join("after.tar").display().to_string();
    uf(&["commit", "--upper", &up, "-o", &o]).ok();
    assert!(Path::new(&o).is_file());
}

/// While `export` reads an upper (blocked writing to a pipe nobody reads
/// yet), a mount of that upper is refused (it would change what is read).
/// `diff` then either runs (it only reads the upper too) or is refused for
/// what holds the upper, not for a mount: none uses it.
#[test]
fn an_upper_being_read_refuses_a_mount_and_is_not_called_mounted() {
    use std::io::Read;
    let t = scratch("readers-");
    let upper = t.path().join("upper");
    mkdir(&upper);
    let up = upper.display().to_string();
    let m = Mnt::image(&base(), &["--upper", &up], &t.path().join("mnt"));
    fs::write(m.path.join("etc/new"), b"new\n").unwrap();
    m.umount();
    let mut child = std::process::Command::new(bin())
        .args(["export", "--image", &base(), "--upper", &up])
        .env("XDG_CACHE_HOME", work_root().join("cache"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut pipe = child.stdout.take().unwrap();
    let mut flat = vec![0u8; 512];
    // The export has the upper open and locked once it writes.
    pipe.read_exact(&mut flat).expect("export writes");
    let child = Reap(child);
    let mnt = t.path().join("mnt2");
    mkdir(&mnt);
    let mounted = uf(&[
        "mount",
        "--image",
        &base(),
        "--upper",
        &up,
        &mnt.display().to_string(),
    ]);
    let mounted_ok = mounted.status.success();
    util::force_unmount(&mnt);
    assert!(
        !mounted_ok,
        "`{}` mounted an upper an export was reading",
        mounted.cmd
    );
    let diff = uf(&["diff", "--image", &base(), "--upper", &up]);
    pipe.read_to_end(&mut flat).unwrap();
    let mut child = child;
    assert!(child.0.wait().unwrap().success(), "the export failed");
    assert!(parse_tar(&flat).iter().any(|e| e.path == b"etc/new"));
    assert!(
        diff.status.success() || !diff.stderr.contains("mount"),
        "`{}` while an export (no mount) read the upper: {}",
        diff.cmd,
        diff.stderr
    );
    if diff.status.success() {
        assert_eq!(diff.text(), "C /etc\nA /etc/new\n");
    }
}

/// A commit of an upper a kernel overlayfs mount uses is refused, naming
/// that mount's mountpoint; after the unmount it works.
#[test]
fn commit_refuses_an_upper_of_a_kernel_overlay_mount() {
    let t = scratch("kovl-");
    let [lower, upper, work, mnt] = ["lower", "upper", "work", "mnt"].map(|n| t.path().join(n));
    for d in [&lower, &upper, &work, &mnt] {
        mkdir(d);
    }
    fs::write(lower.join("a"), b"a\n").unwrap();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let ovl = SysMount::new(&["-t", "overlay", "overlay", "-o", &opts], &mnt);
    fs::write(mnt.join("b"), b"b\n").unwrap();
    let o = t.path().join("out.tar").display().to_string();
    let up = upper.display().to_string();
    let msg = uf(&["commit", "--upper", &up, "-o", &o]).refused();
    assert!(
        msg.contains(&mnt.display().to_string()),
        "the message names the overlay mount: {msg}"
    );
    assert!(msg.contains("overlay"), "{msg}");
    assert!(!Path::new(&o).exists());
    drop(ovl);
    uf(&["commit", "--upper", &up, "-o", &o]).ok();
    let names: Vec<Vec<u8>> = parse_tar(&read(Path::new(&o)))
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(names, vec![b"b".to_vec()], "the layer of the overlay upper");
}

/// `unionfs commit --image BASE --upper UPPER --format FMT -o OUT`.
fn commit_args<'a>(up: &'a str, fmt: &'a str, out: &'a str, base: &'a str) -> [&'a str; 9] {
    [
        "commit", "--image", base, "--upper", up, "--format", fmt, "-o", out,
    ]
}

/// Checks an OCI layout a failed commit added to: `index.json` as it was,
/// no temporary file, every blob complete under its name.
fn assert_layout_intact(layout: &Path, index: &[u8]) {
    assert_eq!(
        read(&layout.join("index.json")),
        index,
        "a failed commit changed index.json"
    );
    for (p, b) in files_of(layout) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.contains("unionfs-tmp"),
            "temporary file left: {}",
            p.display()
        );
        if p.starts_with("blobs/sha256") {
            assert_eq!(
                sha_hex(&b),
                name,
                "a half-written blob under its final name"
            );
        }
    }
}

/// Writing to a read-only filesystem or a full one fails (exit 1, one line,
/// the system's reason), and neither the output nor a temporary file
/// remains; an existing OCI layout a failed commit was adding to keeps its
/// `index.json`, and holds only complete blobs.
#[test]
fn a_failed_commit_leaves_nothing() {
    let held = scenario(Kind::Oci);
    let s: &Scenario = &held;
    let t = scratch("fail-");
    let (up, b) = (s.upper.display().to_string(), base());
    let ro = SysMount::new(
        &["-t", "tmpfs", "-o", "size=1m,ro", "tmpfs"],
        &t.path().join("ro"),
    );
    let full = SysMount::new(
        &["-t", "tmpfs", "-o", "size=1m", "tmpfs"],
        &t.path().join("full"),
    );
    // An existing (tiny) layout on the full filesystem.
    let layout = full.0.join("layout");
    mkdir(&layout.join("blobs/sha256"));
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let index = br#"{"schemaVersion":2,"manifests":[]}"#;
    fs::write(layout.join("index.json"), index).unwrap();
    for (dir, reason) in [
        (&ro.0, "Read-only file system"),
        (&full.0, "No space left on device"),
    ] {
        for (fmt, name) in [
            ("docker-archive", "out.tar"),
            ("oci-archive", "out-oci.tar"),
            ("layer", "layer.tar"),
        ] {
            let o = dir.join(name).display().to_string();
            let msg = uf(&commit_args(&up, fmt, &o, &b)).refused();
            assert!(msg.contains(reason), "{fmt} into {}: {msg}", dir.display());
            assert_only(dir, &["layout"], &format!("{fmt} ({reason})"));
        }
    }
    let o = layout.display().to_string();
    let msg = uf(&commit_args(&up, "oci", &o, &b)).refused();
    assert!(msg.contains("No space left on device"), "{msg}");
    assert_layout_intact(&layout, index);
}

/// A failed `--format oci` commit to a directory that did not exist leaves
/// no directory behind (a layout without `index.json` is no image).
#[test]
fn a_failed_oci_commit_leaves_no_new_layout() {
    let held = scenario(Kind::Oci);
    let s: &Scenario = &held;
    let t = scratch("fail-oci-");
    let (up, b) = (s.upper.display().to_string(), base());
    let ro = SysMount::new(
        &["-t", "tmpfs", "-o", "size=1m,ro", "tmpfs"],
        &t.path().join("ro"),
    );
    let full = SysMount::new(
        &["-t", "tmpfs", "-o", "size=1m", "tmpfs"],
        &t.path().join("full"),
    );
    for (dir, reason) in [
        (&ro.0, "Read-only file system"),
        (&full.0, "No space left on device"),
    ] {
        let o = dir.join("out-oci").display().to_string();
        let msg = uf(&commit_args(&up, "oci", &o, &b)).refused();
        assert!(msg.contains(reason), "oci into {}: {msg}", dir.display());
        let left: Vec<String> = files_of(dir)
            .keys()
            .map(|p| p.display().to_string())
            .collect();
        assert_only(
            dir,
            &[],
            &format!("a failed commit to a new OCI layout ({reason}), files {left:?}"),
        );
    }
}

/// Names are bytes: a name that is not UTF-8, made through the mount, is
/// what `diff` prints (as `docker diff` does) and what the layer and the
/// export hold.
#[test]
fn non_utf8_names_stay_bytes() {
    let t = scratch("bytes-");
    let upper = t.path().join("upper");
    mkdir(&upper);
    let name: &[u8] = b"caf\xe9";
    let m = Mnt::image(
        &base(),
        &["--upper", &upper.display().to_string()],
        &t.path().join("mnt"),
    );
    fs::write(m.path.join("etc").join(OsStr::from_bytes(name)), b"x\n").unwrap();
    m.umount();
    let up = upper.display().to_string();
    let layer = t.path().join("layer.tar");
    uf(&["commit", "--upper", &up, "-o", &layer.display().to_string()]).ok();
    let path = [b"etc/".as_slice(), name].concat();
    assert!(
        parse_tar(&read(&layer)).iter().any(|e| e.path == path),
        "the layer lacks /etc/caf\\xe9"
    );
    let flat = t.path().join("flat.tar");
    uf(&[
        "export",
        "--image",
        &base(),
        "--upper",
        &up,
        "-o",
        &flat.display().to_string(),
    ])
    .ok();
    assert!(parse_tar(&read(&flat)).iter().any(|e| e.path == path));
    let out = uf(&["diff", "--image", &base(), "--upper", &up]).ok();
    let want = [b"C /etc\nA /etc/".as_slice(), name, b"\n"].concat();
    assert!(
        out.stdout == want,
        "`{}` printed {:?}, want {:?}",
        out.cmd,
        out.stdout.escape_ascii().to_string(),
        want.escape_ascii().to_string()
    );
}

// ---------------------------------------------------------------------------
// Bad input

#[test]
fn commit_of_a_missing_upper_names_it() {
    let t = scratch("missing-");
    let o = t.path().join("out.tar").display().to_string();
    for extra in [&[][..], &["--image", &base()][..]] {
        let mut a = vec!["commit", "--upper", "/nonexistent/upper", "-o", &o];
        a.extend(extra);
        let msg = uf(&a).refused();
        assert!(msg.contains("/nonexistent/upper"), "{msg}");
        assert_only(t.path(), &[], "commit of a missing upper");
    }
}

#[test]
fn oci_output_into_a_foreign_directory_is_refused() {
    let held = scenario(Kind::Oci);
    let s: &Scenario = &held;
    let t = scratch("foreign-");
    let dir = t.path().join("mine");
    mkdir(&dir);
    fs::write(dir.join("notes.txt"), b"mine\n").unwrap();
    let o = dir.display().to_string();
    let up = s.upper.display().to_string();
    let msg = uf(&[
        "commit",
        "--image",
        &base(),
        "--upper",
        &up,
        "--format",
        "oci",
        "-o",
        &o,
    ])
    .refused();
    assert!(msg.contains(&o), "the message names the directory: {msg}");
    assert_only(&dir, &["notes.txt"], "a refused OCI commit");
    assert_eq!(read(&dir.join("notes.txt")), b"mine\n");
}
