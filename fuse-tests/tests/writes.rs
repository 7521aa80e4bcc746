//! Writable mounts (`--upper`): every write operation through a real mount,
//! checked against the rules of kernel overlayfs and the OCI layer format, and
//! a differential test that runs the same random operations on kernel
//! overlayfs (`upperdir=`, `redirect_dir=on`) and on unionfs, errno by errno and
//! tree by tree.
//!
//! Owns the write cases; the read-only cases are `mount.rs`, the oracle
//! machinery `util/oracle.rs`.

#[macro_use]
mod util;

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use unionfs::upper::WhiteoutFormat;
use util::oracle::{self, Tree};
use util::*;

// ---------------------------------------------------------------------------
// Fixtures

/// A small image: a base layer and an app layer with a whiteout and an opaque dir.
fn image() -> Vec<Layer> {
    let mut base = Layer::new();
    base.dir("etc");
    base.file("etc/passwd", "root:x:0:0::/root:/bin/sh\n")
        .mode(0o644)
        .xattr("user.origin", "base");
    base.file("etc/group", "root:x:0:\n");
    base.file("etc/shadow", "root:*:1::::::\n")
        .mode(0o640)
        .owner(0, 42);
    base.dir("usr");
    base.dir("usr/bin");
    base.file("usr/bin/tool", "#!/bin/sh\necho tool\n")
        .mode(0o755);
    base.hardlink("usr/bin/tool-again", "usr/bin/tool");
    base.symlink("usr/bin/sh", "tool");
    base.dir("data").owner(1000, 1000).mode(0o750);
    let big: Vec<u8> = (0..3 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
    base.file("data/big.bin", big).owner(1000, 1000);
    base.dir("data/sub");
    base.file("data/sub/a", "a\n");
    base.file("data/sub/b", "b\n");
    base.dir("var");
    base.dir("var/cache");
    base.file("var/cache/old", "old\n");
    base.fifo("var/fifo");
    let mut app = Layer::new();
    app.dir("etc");
    app.file("etc/app.conf", "debug=0\n");
    app.whiteout("etc/group");
    app.dir("var");
    app.dir("var/cache");
    app.opaque("var/cache");
    app.file("var/cache/new", "new\n");
    app.dir("data");
    app.file("data/sub/c", "c\n");
    vec![base, app]
}

/// Layer tars, an upper and a mount, in one scratch directory.
struct Rw {
    dir: tempfile::TempDir,
    tars: Vec<PathBuf>,
    upper: PathBuf,
    m: Option<Mount>,
}

impl Rw {
    fn new(layers: &[Layer]) -> Option<Rw> {
        Rw::with_format(layers, WhiteoutFormat::Oci)
    }

    fn with_format(layers: &[Layer], format: WhiteoutFormat) -> Option<Rw> {
        if !fuse_available("writable mount test") {
            return None;
        }
        let dir = scratch_dir("unionfs-rw-");
        let tars = write_layers(dir.path(), layers);
        let upper = dir.path().join("upper");
        fs::create_dir(&upper).unwrap();
        let m = Mount::with_upper(&tars, &upper, format)?;
        Some(Rw {
            dir,
            tars,
            upper,
            m: Some(m),
        })
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.m.as_ref().unwrap().p(rel)
    }

    fn up(&self, rel: &str) -> PathBuf {
        self.upper.join(rel)
    }

    /// Unmounts and mounts the same layers and upper again.
    fn remount(&mut self) {
        self.m.take().unwrap().unmount();
        self.m = Mount::with_upper(&self.tars, &self.upper, WhiteoutFormat::Oci);
    }

    fn root(&self) -> &Path {
        &self.m.as_ref().unwrap().path
    }

    /// No temp file of a copy-up or create is left in the work dir.
    fn assert_work_dir_clean(&self) {
        let work = self.dir.path().join(".upper.unionfs-work");
        assert_eq!(
            temp_names(&work),
            Vec::<String>::new(),
            "temp files left in the work dir"
        );
    }
}

macro_rules! rw {
    ($layers:expr) => {
        match Rw::new(&$layers) {
            Some(r) => r,
            None => return,
        }
    };
}

fn errno_of<T: std::fmt::Debug>(r: io::Result<T>) -> i32 {
    r.expect_err("expected an error").raw_os_error().unwrap()
}

fn sha(p: &Path) -> String {
    format!("{:x}", Sha256::digest(fs::read(p).unwrap()))
}

/// What a work dir holds but its shared whiteout (the inode every whiteout
/// links to): temp files, which must never be left there.
fn temp_names(work: &Path) -> Vec<String> {
    names(work)
        .into_iter()
        .filter(|n| !n.starts_with("unionfs-whiteout."))
        .collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Tree dump without times (writes set them to "now" on both sides).
fn timeless(root: &Path) -> Tree {
    let mut t = oracle::dump(root, false);
    for o in t.objs.values_mut() {
        o.mtime = None;
    }
    t
}

fn assert_same(a: &Tree, b: &Tree, what: &str) {
    let d = oracle::diff(a, b);
    assert!(d.is_empty(), "{what}:\n  {}", d.join("\n  "));
}

// ---------------------------------------------------------------------------
// Copy-up

#[test]
fn append_copies_up_data_and_metadata_and_leaves_the_tars_alone() {
    let rw = rw!(image());
    let tar_sums: Vec<String> = rw.tars.iter().map(|t| sha(t)).collect();
    let before = fs::symlink_metadata(rw.p("etc/passwd")).unwrap();
    let mut f = OpenOptions::new()
        .append(true)
        .open(rw.p("etc/passwd"))
        .unwrap();
    f.write_all(b"user:x:1000:1000::/home/user:/bin/sh\n")
        .unwrap();
    drop(f);
    assert_eq!(
        fs::read_to_string(rw.p("etc/passwd")).unwrap(),
        "root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"
    );
    let up = fs::symlink_metadata(rw.up("etc/passwd")).unwrap();
    assert_eq!(up.mode() & 0o7777, 0o644);
    assert_eq!((up.uid(), up.gid()), (0, 0));
    assert_eq!(
        xattrs(&rw.up("etc/passwd")),
        vec![(b"user.origin".to_vec(), b"base".to_vec())]
    );
    // The inode number survives the copy-up (as overlayfs keeps st_ino).
    assert_eq!(
        fs::symlink_metadata(rw.p("etc/passwd")).unwrap().ino(),
        before.ino()
    );
    // Untouched neighbours stay below; the parent was copied up, metadata only.
    assert!(!rw.up("etc/shadow").exists());
    assert!(!rw.up("etc/app.conf").exists());
    assert_eq!(
        fs::symlink_metadata(rw.up("etc")).unwrap().mode() & 0o7777,
        0o755
    );
    let after: Vec<String> = rw.tars.iter().map(|t| sha(t)).collect();
    assert_eq!(tar_sums, after, "a layer tar changed");
}

/// Kernel overlayfs over `layers` (extracted), writable (index=on,
/// redirect_dir=on), in a scratch directory that lives as long as the
/// returned `Prepared`.
fn kernel_rw(layers: &[Layer]) -> (oracle::Prepared, oracle::Overlay) {
    let p = oracle::prepare(layers);
    let w = p.work.path().canonicalize().unwrap();
    let (upper, work, mnt) = (w.join("ou"), w.join("ow"), w.join("om"));
    for d in [&upper, &work, &mnt] {
        fs::create_dir(d).unwrap();
    }
    let ovl = oracle::Overlay::mount_rw(&p.lowers, &upper, &work, &mnt);
    (p, ovl)
}

/// What another process sees of `paths` under `root`, through the kernel's
/// caches: type, mode, link count, size and content digest of files, user
/// xattrs, listings (relative names, so two mounts compare; not the sizes
/// of directories, which are the upper filesystem's, nor the root's link
/// count, each upper's own).
fn observe(root: &Path, paths: &[&str]) -> String {
    let script = r#"
        for p in "$@"; do
            if [ -e "$p" ] || [ -L "$p" ]; then
                stat -c '%n %F %a' -- "$p"
                [ "$p" = . ] || stat -c 'links %h' -- "$p"
                [ -f "$p" ] && stat -c 'size %s' -- "$p" && sha256sum -- "$p"
                [ -d "$p" ] && ls -A -- "$p" | sort | tr '\n' ' ' && echo
                getfattr -h -d -m '^user\.' -- "$p" 2>/dev/null | grep -v '^#'
            else
                echo "$p: absent"
            fi
        done"#;
    let out = Command::new("sh")
        .current_dir(root)
        .args(["-c", script, "observe"])
        .args(paths)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// With long kernel cache TTLs on a writable mount, every change is seen at
/// once by another process — the names and attributes the kernel had cached
/// (each step first warms them) included — exactly as kernel overlayfs shows
/// it after the same steps: renames, unlinks, a copy-up of one name of a
/// lower hard link, a directory removed and made again (opaque), an xattr
/// change, a chmod, a create in a listed directory, a rename of a directory
/// with lower content.
#[test]
fn every_change_is_seen_at_once_by_another_process() {
    if !oracle::oracle_available() {
        return;
    }
    let layers = image();
    let rw = rw!(layers);
    let (_p, ovl) = kernel_rw(&layers);
    let watch = [
        ".",
        "etc",
        "etc/passwd",
        "etc/passwd2",
        "etc/app.conf",
        "usr/bin",
        "usr/bin/tool",
        "usr/bin/tool-again",
        "data",
        "data/sub",
        "data/sub/a",
        "data2",
        "data2/sub",
        "data2/sub/a",
        "var/cache",
        "var/cache/new",
    ];
    type Step = (&'static str, &'static str);
    let steps: [Step; 9] = [
        ("rename a file", "mv etc/passwd etc/passwd2"),
        ("chmod", "chmod 600 etc/app.conf"),
        ("an xattr", "setfattr -n user.k -v v1 etc/app.conf"),
        ("the xattr again", "setfattr -n user.k -v v2 etc/app.conf"),
        (
            "copy-up of one name of a lower hard link",
            "echo more >> usr/bin/tool",
        ),
        ("unlink of the other name", "rm usr/bin/tool-again"),
        (
            "rmdir + mkdir: opaque",
            "rm -r var/cache && mkdir var/cache",
        ),
        ("create in a listed directory", "echo n > var/cache/new"),
        ("rename of a directory with lower content", "mv data data2"),
    ];
    for (what, cmd) in steps {
        for root in [rw.root(), ovl.path.as_path()] {
            observe(root, &watch); // warm every cache
            let st = Command::new("sh")
                .current_dir(root)
                .args(["-c", cmd])
                .status()
                .unwrap();
            assert!(st.success(), "{what}: `{cmd}` failed in {}", root.display());
        }
        let (mut ours, mut theirs) = (observe(rw.root(), &watch), observe(&ovl.path, &watch));
        if cmd.starts_with("mv data ") {
            // A directory with lower content is renamed as an opaque copy
            // (README, Semantics), which counts its links; overlayfs
            // redirects it and reports 1, as for any merged directory.
            // (That its subdirectory's count changed from 1 to 2 at once is
            // checked: the kernel is told.)
            assert!(
                ours.contains("data2/sub directory 755\nlinks 2\n"),
                "{ours}"
            );
            let drop_dir_links = |s: &str| {
                let lines: Vec<&str> = s.lines().collect();
                let mut out = Vec::new();
                for (i, l) in lines.iter().enumerate() {
                    let after_dir = i > 0 && lines[i - 1].contains(" directory ");
                    if !(after_dir && l.starts_with("links ")) {
                        out.push(*l);
                    }
                }
                out.join("\n")
            };
            (ours, theirs) = (drop_dir_links(&ours), drop_dir_links(&theirs));
        }
        assert_eq!(
            ours, theirs,
            "after {what} (`{cmd}`): unionfs vs kernel overlayfs"
        );
    }
}

/// The names in a directory stream, read with libc (so that the same
/// stream can be rewound).
fn stream_names(dir: *mut libc::DIR) -> Vec<String> {
    let mut v = Vec::new();
    loop {
        // SAFETY: `dir` is an open stream; readdir returns null at its end.
        let e = unsafe { libc::readdir(dir) };
        if e.is_null() {
            break;
        }
        // SAFETY: d_name is NUL-terminated.
        let n = unsafe { std::ffi::CStr::from_ptr((*e).d_name.as_ptr()) };
        let n = n.to_string_lossy().into_owned();
        if n != "." && n != ".." {
            v.push(n);
        }
    }
    v.sort();
    v
}

/// A listing cached by the kernel is never an old one: a stream rewound
/// after a create shows the new name (`rewinddir` shows the directory as it
/// is), and so does every later listing, by any process — the snapshot a
/// handle serves from offset 0 is taken afresh, never an old one cached
/// under the directory's new mtime (found by hand with the listings cached).
#[test]
fn a_rewound_listing_shows_what_was_created_and_the_cache_keeps_it() {
    let rw = rw!(image());
    let d = rw.p("data/sub");
    let c = cpath(&d);
    // SAFETY: a valid path; the stream is closed below.
    let dir = unsafe { libc::opendir(c.as_ptr()) };
    assert!(!dir.is_null());
    assert_eq!(stream_names(dir), ["a", "b", "c"]);
    fs::write(d.join("new"), "n").unwrap();
    fs::metadata(&d).unwrap(); // the kernel refreshes the directory's attributes
                               // SAFETY: `dir` is open.
    unsafe { libc::rewinddir(dir) };
    assert_eq!(stream_names(dir), ["a", "b", "c", "new"], "rewinddir");
    // SAFETY: `dir` is open, closed once.
    unsafe { libc::closedir(dir) };
    assert_eq!(names(&d), ["a", "b", "c", "new"], "a new stream");
    let out = Command::new("ls").arg(&d).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "a\nb\nc\nnew\n",
        "another process"
    );
}

/// Inode numbers of objects in the upper stay theirs when the kernel forgets
/// them (memory pressure; here `drop_caches`): an upper-only file and
/// directory, and a copied-up file renamed away from its lower origin, as
/// overlayfs keeps reporting the upper `st_ino`.
#[test]
fn upper_inode_numbers_survive_the_kernel_forgetting_them() {
    let rw = rw!(image());
    fs::write(rw.p("f"), "f").unwrap();
    fs::create_dir(rw.p("g")).unwrap();
    fs::write(rw.p("etc/passwd"), "changed\n").unwrap();
    fs::rename(rw.p("etc/passwd"), rw.p("moved")).unwrap();
    let inos = |rw: &Rw| -> Vec<u64> {
        ["f", "g", "moved", "etc/shadow"]
            .iter()
            .map(|p| fs::symlink_metadata(rw.p(p)).unwrap().ino())
            .collect()
    };
    let before = inos(&rw);
    Command::new("sync").status().unwrap();
    fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    assert_eq!(inos(&rw), before);
}

/// An upper object removed frees its `st_ino` in the upper filesystem, which
/// may give it to a later object of its kind (ext4 often does at once, if
/// not always here). The new object must not get the number of the removed
/// one (the daemon kept upper `st_ino` → number for a directory renamed
/// over until this test's stop; `Nodes::unlink` now takes it): the kernel
/// keys its inodes by number, so a removed directory that is still some
/// process's working directory would become the new one (or, were the
/// types to differ, be declared bad: `EIO` to every later call on it).
/// Removed here three ways: a directory renamed over (its upper `rmdir`ed)
/// while a child process has it as its cwd, a file renamed over, a file
/// unlinked.
#[test]
fn a_removed_upper_object_number_never_comes_back() {
    let rw = rw!(image());
    for round in 0..3 {
        let (victim, other) = (format!("v{round}"), format!("o{round}"));
        let mut cwd = None;
        let mut held = None;
        if round == 0 {
            fs::create_dir(rw.p(&victim)).unwrap();
            fs::create_dir(rw.p(&other)).unwrap();
            // The kernel holds a cwd by its inode: no open file in the
            // daemon keeps the upper directory's st_ino from being reused.
            cwd = Some(
                Command::new("sleep")
                    .arg("30")
                    .current_dir(rw.p(&victim))
                    .spawn()
                    .unwrap(),
            );
            held = Some(File::open(rw.p(&victim)).unwrap());
        } else {
            fs::write(rw.p(&victim), "v").unwrap();
            fs::write(rw.p(&other), "o").unwrap();
        }
        let ino = fs::symlink_metadata(rw.p(&victim)).unwrap().ino();
        match round {
            2 => fs::remove_file(rw.p(&victim)).unwrap(),
            _ => fs::rename(rw.p(&other), rw.p(&victim)).unwrap(),
        }
        for i in 0..20 {
            let p = rw.p(&format!("n{round}-{i}"));
            match round {
                0 => fs::create_dir(&p).unwrap(),
                _ => fs::write(&p, "n").unwrap(),
            }
            let m = fs::symlink_metadata(&p).unwrap();
            assert_ne!(
                m.ino(),
                ino,
                "{} got the number of removed {victim}",
                p.display()
            );
        }
        if let Some(f) = held {
            // A removed directory still open answers its last attributes
            // with no link, as overlayfs (and a disk) does; its listing is
            // the kernel's ENOENT (the VFS marks it dead).
            let m = f
                .metadata()
                .expect("fstat of a removed directory still open");
            assert!(m.is_dir());
            assert_eq!((m.ino(), m.nlink()), (ino, 0));
        }
        if let Some(mut c) = cwd {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A copy-up is no change the merged view shows: the directories it passes
/// through keep their mtimes (kernel `ovl_copy_up_one` puts the parent's
/// times back), as kernel overlayfs shows, at once and after the 1 s TTL.
#[test]
fn copy_up_leaves_the_times_of_the_directories_above_alone() {
    if !oracle::oracle_available() {
        return;
    }
    let layers = image();
    let rw = rw!(layers);
    let (_p, ovl) = kernel_rw(&layers);
    let dirs = ["", "data", "data/sub", "usr", "usr/bin", "etc"];
    let times = |root: &Path| -> Vec<(String, i64, i64)> {
        dirs.iter()
            .map(|d| {
                let m = fs::symlink_metadata(root.join(d)).unwrap();
                (d.to_string(), m.mtime(), m.mtime_nsec())
            })
            .collect()
    };
    // (The root is each upper's own root directory, made at different times.)
    let before = times(rw.root());
    let ovl_before = times(&ovl.path);
    assert_eq!(before[1..], ovl_before[1..], "before any change");
    // Copy-ups three deep, of data and of metadata only.
    for root in [rw.root(), ovl.path.as_path()] {
        OpenOptions::new()
            .append(true)
            .open(root.join("data/sub/a"))
            .unwrap()
            .write_all(b"more\n")
            .unwrap();
        fs::set_permissions(root.join("usr/bin/tool"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(root.join("etc/passwd"), fs::Permissions::from_mode(0o600)).unwrap();
    }
    assert_eq!(times(rw.root()), before, "at once");
    assert_eq!(times(&ovl.path), ovl_before, "kernel overlayfs");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(times(rw.root()), before, "after the TTL");
    // A real change of a directory still shows.
    fs::write(rw.p("data/sub/new"), "n").unwrap();
    let after = times(rw.root());
    assert_ne!(
        after[2], before[2],
        "creating a file changes its directory's mtime"
    );
}

#[test]
fn chmod_chown_utimes_copy_up_and_persist_across_remount() {
    let mut rw = rw!(image());
    fs::set_permissions(rw.p("etc/shadow"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::lchown(rw.p("usr/bin/tool"), Some(7), Some(8)).unwrap();
    let c = cpath(&rw.p("data/sub/a"));
    let ts = [
        libc::timespec {
            tv_sec: 1_000_000,
            tv_nsec: 5,
        },
        libc::timespec {
            tv_sec: 2_000_000,
            tv_nsec: 7,
        },
    ];
    // SAFETY: valid path and two timespecs.
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) },
        0
    );
    let check = |rw: &Rw| {
        let s = fs::symlink_metadata(rw.p("etc/shadow")).unwrap();
        assert_eq!((s.mode() & 0o7777, s.uid(), s.gid()), (0o600, 0, 42));
        assert_eq!(
            fs::read_to_string(rw.p("etc/shadow")).unwrap(),
            "root:*:1::::::\n"
        );
        let t = fs::symlink_metadata(rw.p("usr/bin/tool")).unwrap();
        assert_eq!((t.uid(), t.gid()), (7, 8));
        let a = fs::symlink_metadata(rw.p("data/sub/a")).unwrap();
        assert_eq!((a.mtime(), a.mtime_nsec()), (2_000_000, 7));
    };
    check(&rw);
    rw.remount();
    check(&rw);
}

#[test]
fn a_reader_of_the_lower_file_keeps_its_data_while_a_writer_copies_up() {
    let rw = rw!(image());
    let mut reader = File::open(rw.p("data/big.bin")).unwrap();
    let mut head = vec![0u8; 4096];
    reader.read_exact(&mut head).unwrap();
    let mut w = OpenOptions::new()
        .write(true)
        .open(rw.p("data/big.bin"))
        .unwrap();
    w.write_all(&[0xAA; 4096]).unwrap();
    drop(w);
    let expect: Vec<u8> = (4096..8192u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut next = vec![0u8; 4096];
    reader.read_exact(&mut next).unwrap();
    assert_eq!(next, expect);
    let mut now = fs::read(rw.p("data/big.bin")).unwrap();
    assert_eq!(&now[..4096], &[0xAA; 4096][..]);
    now.truncate(8192);
    assert_eq!(&now[4096..], &expect[..]);
}

#[test]
fn racing_writers_copy_up_once_and_every_append_lands() {
    let rw = rw!(image());
    let p = rw.p("var/cache/new");
    std::thread::scope(|s| {
        for t in 0..8u8 {
            let p = p.clone();
            s.spawn(move || {
                let mut f = OpenOptions::new().append(true).open(&p).unwrap();
                f.write_all(&[b'0' + t, b'\n']).unwrap();
            });
        }
    });
    let mut lines: Vec<String> = fs::read_to_string(&p)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    let mut want: Vec<String> = (0..8).map(|t| t.to_string()).collect();
    want.push("new".into());
    want.sort();
    assert_eq!(lines, want);
    rw.assert_work_dir_clean();
}

// ---------------------------------------------------------------------------
// Whiteouts and opaque directories

#[test]
fn unlink_and_rmdir_write_whiteouts_that_survive_a_remount() {
    let mut rw = rw!(image());
    fs::remove_file(rw.p("etc/passwd")).unwrap();
    fs::remove_file(rw.p("usr/bin/sh")).unwrap();
    fs::remove_dir_all(rw.p("data/sub")).unwrap();
    let check = |rw: &Rw| {
        assert_eq!(
            errno_of(fs::symlink_metadata(rw.p("etc/passwd"))),
            libc::ENOENT
        );
        assert_eq!(names(&rw.p("etc")), ["app.conf", "shadow"]);
        assert_eq!(names(&rw.p("usr/bin")), ["tool", "tool-again"]);
        assert_eq!(names(&rw.p("data")), ["big.bin"]);
    };
    check(&rw);
    assert!(rw.up("etc/.wh.passwd").exists());
    assert!(rw.up(".wh.data").exists() || rw.up("data/.wh.sub").exists());
    rw.remount();
    check(&rw);
}

#[test]
fn rmdir_of_a_merged_directory_that_shows_entries_is_enotempty() {
    let rw = rw!(image());
    assert_eq!(errno_of(fs::remove_dir(rw.p("data/sub"))), libc::ENOTEMPTY);
    for n in ["a", "b", "c"] {
        fs::remove_file(rw.p(&format!("data/sub/{n}"))).unwrap();
    }
    fs::remove_dir(rw.p("data/sub")).unwrap();
    assert_eq!(names(&rw.p("data")), ["big.bin"]);
}

#[test]
fn a_directory_removed_and_made_again_is_opaque() {
    let mut rw = rw!(image());
    fs::remove_dir_all(rw.p("data/sub")).unwrap();
    fs::create_dir(rw.p("data/sub")).unwrap();
    fs::write(rw.p("data/sub/z"), "z").unwrap();
    assert_eq!(names(&rw.p("data/sub")), ["z"]);
    assert!(rw.up("data/sub/.wh..wh..opq").exists(), "no opaque marker");
    assert!(
        !rw.up("data/.wh.sub").exists(),
        "the whiteout was not replaced"
    );
    rw.remount();
    assert_eq!(names(&rw.p("data/sub")), ["z"]);
}

#[test]
fn creating_a_whited_out_name_removes_the_whiteout() {
    let rw = rw!(image());
    fs::remove_file(rw.p("etc/passwd")).unwrap();
    fs::write(rw.p("etc/passwd"), "new\n").unwrap();
    assert_eq!(fs::read_to_string(rw.p("etc/passwd")).unwrap(), "new\n");
    assert!(!rw.up("etc/.wh.passwd").exists());
    // A name the app layer whited out comes back only as the new file.
    fs::write(rw.p("etc/group"), "g\n").unwrap();
    assert_eq!(fs::read_to_string(rw.p("etc/group")).unwrap(), "g\n");
}

#[test]
fn whiteout_names_cannot_be_created_through_the_mount() {
    let rw = rw!(image());
    assert_eq!(
        errno_of(fs::write(rw.p("etc/.wh.passwd"), "")),
        libc::EINVAL
    );
    assert_eq!(errno_of(fs::create_dir(rw.p(".wh..wh..opq"))), libc::EINVAL);
    assert_eq!(
        errno_of(fs::rename(rw.p("etc/passwd"), rw.p("etc/.wh.x"))),
        libc::EINVAL
    );
    assert_eq!(
        errno_of(std::os::unix::fs::symlink("x", rw.p("usr/.wh.y"))),
        libc::EINVAL
    );
    assert!(rw.p("etc/passwd").exists());
}

// ---------------------------------------------------------------------------
// Open flags

#[test]
fn open_flags_trunc_append_excl_creat() {
    let rw = rw!(image());
    // O_TRUNC of a lower file: empty, copied up (without copying the data).
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(rw.p("data/big.bin"))
        .unwrap();
    assert_eq!(fs::metadata(rw.p("data/big.bin")).unwrap().len(), 0);
    assert_eq!(fs::metadata(rw.up("data/big.bin")).unwrap().len(), 0);
    // O_APPEND writes at the end whatever the offset.
    let mut f = OpenOptions::new()
        .append(true)
        .open(rw.p("etc/group"))
        .err();
    assert_eq!(
        f.take().unwrap().raw_os_error(),
        Some(libc::ENOENT),
        "group is whited out"
    );
    let mut f = OpenOptions::new()
        .read(true)
        .append(true)
        .open(rw.p("usr/bin/tool"))
        .unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(b"# end\n").unwrap();
    assert!(fs::read_to_string(rw.p("usr/bin/tool"))
        .unwrap()
        .ends_with("echo tool\n# end\n"));
    // O_EXCL on an existing lower name: EEXIST; on a new name: created.
    let excl = |p: &Path| OpenOptions::new().write(true).create_new(true).open(p);
    assert_eq!(errno_of(excl(&rw.p("etc/shadow"))), libc::EEXIST);
    excl(&rw.p("etc/new")).unwrap();
    // O_CREAT without O_EXCL on a lower file opens it (copy-up), keeps the data.
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(rw.p("etc/app.conf"))
        .unwrap();
    f.write_all(b"x=1\n").unwrap();
    assert_eq!(
        fs::read_to_string(rw.p("etc/app.conf")).unwrap(),
        "debug=0\nx=1\n"
    );
    assert_eq!(
        fs::metadata(rw.p("etc/app.conf")).unwrap().mode() & 0o777,
        0o644
    );
    // The write through usr/bin/tool copied up its lower hard link too: one
    // file under both names (overlayfs index=on).
    let (a, b) = (
        fs::metadata(rw.up("usr/bin/tool")).unwrap(),
        fs::metadata(rw.up("usr/bin/tool-again")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "linked in the upper");
    assert_eq!(
        fs::read(rw.p("usr/bin/tool-again")).unwrap(),
        fs::read(rw.p("usr/bin/tool")).unwrap()
    );
    // A read-only open of a lower file copies nothing up.
    fs::read(rw.p("usr/bin/sh")).unwrap();
    assert!(!rw.up("usr/bin/sh").exists());
}

/// The names of a lower hard link are one inode on a writable mount, before
/// and after a copy-up through any of them; a copy-up links every name, and
/// the link survives a remount. A group left half linked (a crash between
/// two links: one name in the upper, marked as the group's copy, the other
/// still lower) is mended by the next copy-up of the lower name, which joins
/// the copy instead of making one of its own.
#[test]
fn lower_hard_links_stay_one_file_and_a_half_linked_group_is_mended() {
    let mut rw = rw!(image());
    let ino_in = |rw: &Rw, rel: &str| fs::symlink_metadata(rw.p(rel)).unwrap().ino();
    let (a, b) = ("usr/bin/tool", "usr/bin/tool-again");
    macro_rules! ino {
        ($rel:expr) => {
            ino_in(&rw, $rel)
        };
    }
    assert_eq!(ino!(a), ino!(b), "one inode before any copy-up");
    let group_ino = ino!(a);
    assert_eq!(fs::metadata(rw.p(a)).unwrap().nlink(), 2);
    // chmod copies up (data too, no metacopy) and links both names.
    fs::set_permissions(rw.p(b), fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!((ino!(a), ino!(b)), (group_ino, group_ino), "numbers kept");
    let (ua, ub) = (
        fs::metadata(rw.up(a)).unwrap(),
        fs::metadata(rw.up(b)).unwrap(),
    );
    assert_eq!((ua.ino(), ua.nlink()), (ub.ino(), 2), "linked in the upper");
    assert_eq!(fs::metadata(rw.p(a)).unwrap().mode() & 0o777, 0o700);
    assert!(
        xattrs(&rw.up(a))
            .iter()
            .all(|(k, _)| !k.starts_with(b"user.unionfs")),
        "no private mark left on a fully linked group"
    );
    rw.remount();
    OpenOptions::new()
        .append(true)
        .open(rw.p(a))
        .unwrap()
        .write_all(b"# more\n")
        .unwrap();
    assert_eq!(fs::read(rw.p(a)).unwrap(), fs::read(rw.p(b)).unwrap());
    assert_eq!(ino!(a), ino!(b));

    // The half-linked state a crash can leave: `b` back to lower, `a` the
    // group's marked copy (same content as the lower file: no write yet).
    let mut rw = rw!(image());
    let group_ino = ino!(a);
    fs::set_permissions(rw.p(a), fs::Permissions::from_mode(0o755)).unwrap();
    rw.m.take().unwrap().unmount();
    fs::remove_file(rw.up(b)).unwrap();
    let origin = format!("{}:{}", (group_ino >> 32) - 1, group_ino & 0xffff_ffff);
    lsetxattr(&rw.up(a), b"user.unionfs.origin", origin.as_bytes()).unwrap();
    rw.m = Mount::with_upper(&rw.tars, &rw.upper, WhiteoutFormat::Oci);
    assert!(!rw.up(b).exists());
    assert_eq!(ino!(a), ino!(b), "still one inode");
    OpenOptions::new()
        .append(true)
        .open(rw.p(b))
        .unwrap()
        .write_all(b"# via b\n")
        .unwrap();
    let (ua, ub) = (
        fs::metadata(rw.up(a)).unwrap(),
        fs::metadata(rw.up(b)).unwrap(),
    );
    assert_eq!(ua.ino(), ub.ino(), "b joined a's copy");
    assert!(fs::read_to_string(rw.p(a)).unwrap().ends_with("# via b\n"));
    assert!(
        xattrs(&rw.up(a))
            .iter()
            .all(|(k, _)| !k.starts_with(b"user.unionfs")),
        "the mark is gone once the group is whole"
    );
}

#[test]
fn new_objects_mknod_symlink_link() {
    let rw = rw!(image());
    let c = cpath(&rw.p("var/pipe"));
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o640) }, 0);
    assert!(fs::symlink_metadata(rw.p("var/pipe"))
        .unwrap()
        .file_type()
        .is_fifo_like());
    std::os::unix::fs::symlink("../etc/passwd", rw.p("var/link")).unwrap();
    assert_eq!(
        fs::read_link(rw.p("var/link")).unwrap(),
        Path::new("../etc/passwd")
    );
    // A hard link to a lower file: copied up first, then linked.
    fs::hard_link(rw.p("etc/shadow"), rw.p("etc/shadow2")).unwrap();
    let a = fs::symlink_metadata(rw.p("etc/shadow")).unwrap();
    let b = fs::symlink_metadata(rw.p("etc/shadow2")).unwrap();
    assert_eq!((a.ino(), a.nlink(), b.nlink()), (b.ino(), 2, 2));
    fs::remove_file(rw.p("etc/shadow")).unwrap();
    assert_eq!(
        fs::symlink_metadata(rw.p("etc/shadow2")).unwrap().nlink(),
        1
    );
    assert_eq!(
        fs::read_to_string(rw.p("etc/shadow2")).unwrap(),
        "root:*:1::::::\n"
    );
}

/// A new file's xattrs, read back through the fd its creation left open in
/// the daemon (the first write's `security.capability` query is answered
/// from it), agree with what was set and removed by name; and the file
/// capability goes with the first write, as the kernel's `file_remove_privs`
/// wants (it asks for `security.capability`, then removes it).
#[test]
fn a_new_file_answers_xattrs_and_loses_its_capability_at_the_first_write() {
    let rw = rw!(image());
    let p = rw.p("var/new");
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)
        .unwrap();
    assert_eq!(lgetxattr_len(&p, b"user.k"), Err(libc::ENODATA));
    lsetxattr(&p, b"user.k", b"v1").unwrap();
    assert_eq!(lgetxattr_sized(&p, b"user.k", 64), Ok(b"v1".to_vec()));
    // VFS_CAP_REVISION_2, effective, permitted CAP_NET_BIND_SERVICE (10).
    let mut cap = Vec::new();
    for w in [0x0200_0001u32, 1 << 10, 0, 0, 0] {
        cap.extend_from_slice(&w.to_le_bytes());
    }
    lsetxattr(&p, b"security.capability", &cap).unwrap();
    assert_eq!(
        lgetxattr_sized(&p, b"security.capability", 64),
        Ok(cap.clone())
    );
    f.write_all(b"data").unwrap();
    assert_eq!(
        lgetxattr_len(&p, b"security.capability"),
        Err(libc::ENODATA),
        "the first write removes the file capability"
    );
    assert_eq!(
        lgetxattr_len(&rw.up("var/new"), b"security.capability"),
        Err(libc::ENODATA)
    );
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), b"data");
    assert_eq!(lgetxattr_sized(&p, b"user.k", 64), Ok(b"v1".to_vec()));
    assert_eq!(
        lgetxattr_sized(&rw.up("var/new"), b"user.k", 64),
        Ok(b"v1".to_vec())
    );
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_fifo()
    }
}

// ---------------------------------------------------------------------------
// Rename

#[test]
fn rename_of_a_lower_directory_moves_its_merged_content() {
    let mut rw = rw!(image());
    let before = fs::symlink_metadata(rw.p("data")).unwrap();
    fs::rename(rw.p("data"), rw.p("moved")).unwrap();
    assert_eq!(errno_of(fs::symlink_metadata(rw.p("data"))), libc::ENOENT);
    assert_eq!(names(&rw.p("moved")), ["big.bin", "sub"]);
    assert_eq!(names(&rw.p("moved/sub")), ["a", "b", "c"]);
    let m = fs::symlink_metadata(rw.p("moved")).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode(), m.mtime(), m.ino()),
        (
            before.uid(),
            before.gid(),
            before.mode(),
            before.mtime(),
            before.ino()
        )
    );
    assert_eq!(fs::read(rw.p("moved/big.bin")).unwrap().len(), 3 << 20);
    // A new directory of the old name does not see the old content.
    fs::create_dir(rw.p("data")).unwrap();
    assert_eq!(names(&rw.p("data")), Vec::<String>::new());
    rw.remount();
    assert_eq!(names(&rw.p("moved/sub")), ["a", "b", "c"]);
    assert_eq!(names(&rw.p("data")), Vec::<String>::new());
}

/// With no open handle (the default), the daemon knows a file is open only
/// from the kernel still holding its inode: a file whose last name goes
/// while it is open (unlinked, or renamed over), lower or upper, keeps its
/// data for whoever has it open, as POSIX wants.
#[test]
fn a_file_removed_or_replaced_while_open_keeps_its_data() {
    let rw = rw!(image());
    let big: Vec<u8> = (0..3 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
    // A lower file, unlinked after its first page: the rest is read after.
    let mut lower = File::open(rw.p("data/big.bin")).unwrap();
    let mut head = vec![0u8; 4096];
    lower.read_exact(&mut head).unwrap();
    fs::remove_file(rw.p("data/big.bin")).unwrap();
    let mut rest = Vec::new();
    lower.read_to_end(&mut rest).unwrap();
    head.extend_from_slice(&rest);
    assert!(head == big, "the unlinked lower file's data changed");
    assert_eq!(lower.metadata().unwrap().len(), 3 << 20);
    assert!(!rw.p("data/big.bin").exists());
    // An upper file, unlinked between two writes: written, read back,
    // truncated and stat'ed through its descriptor.
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(rw.p("var/scratch"))
        .unwrap();
    f.write_all(b"before ").unwrap();
    fs::remove_file(rw.p("var/scratch")).unwrap();
    f.write_all(b"after").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "before after");
    assert_eq!(f.metadata().unwrap().len(), 12);
    f.set_len(6).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 6);
    // A lower file renamed over while open for reading.
    let mut old = File::open(rw.p("etc/app.conf")).unwrap();
    fs::write(rw.p("etc/new.conf"), "replacement\n").unwrap();
    fs::rename(rw.p("etc/new.conf"), rw.p("etc/app.conf")).unwrap();
    let mut s = String::new();
    old.read_to_string(&mut s).unwrap();
    assert_eq!(s, "debug=0\n");
    assert_eq!(
        fs::read_to_string(rw.p("etc/app.conf")).unwrap(),
        "replacement\n"
    );
    // A copied-up file renamed over while open for writing: the writer goes
    // on writing the file it has, the name shows the new one.
    let mut w = OpenOptions::new()
        .append(true)
        .open(rw.p("etc/shadow"))
        .unwrap();
    w.write_all(b"x\n").unwrap();
    fs::write(rw.p("etc/other"), "o\n").unwrap();
    fs::rename(rw.p("etc/other"), rw.p("etc/shadow")).unwrap();
    w.write_all(b"y\n").unwrap();
    assert_eq!(
        w.metadata().unwrap().len(),
        "root:*:1::::::\nx\ny\n".len() as u64
    );
    drop((lower, f, old, w));
    assert_eq!(fs::read_to_string(rw.p("etc/shadow")).unwrap(), "o\n");
    assert_eq!(fs::read_to_string(rw.up("etc/shadow")).unwrap(), "o\n");
    rw.assert_work_dir_clean();
}

/// A directory is listed with no handle: a reader resumes after the last
/// name it got (offsets are name hashes), so names made and removed between
/// two reads never make it skip or repeat a name that stayed.
#[test]
fn a_listing_changed_between_reads_skips_and_repeats_nothing_that_stayed() {
    let rw = rw!(image());
    let d = rw.p("var/cache");
    let long = "n".repeat(100);
    for i in 0..2000 {
        File::create(d.join(format!("stay-{long}-{i:04}"))).unwrap();
    }
    for i in 0..1000 {
        File::create(d.join(format!("gone-{long}-{i:04}"))).unwrap();
    }
    let mut seen: Vec<String> = Vec::new();
    let mut it = fs::read_dir(&d).unwrap();
    for _ in 0..50 {
        seen.push(
            it.next()
                .unwrap()
                .unwrap()
                .file_name()
                .into_string()
                .unwrap(),
        );
    }
    for i in 0..1000 {
        fs::remove_file(d.join(format!("gone-{long}-{i:04}"))).unwrap();
        File::create(d.join(format!("made-{long}-{i:04}"))).unwrap();
    }
    for e in it {
        seen.push(e.unwrap().file_name().into_string().unwrap());
    }
    let mut sorted = seen.clone();
    sorted.sort();
    let before = sorted.len();
    sorted.dedup();
    assert_eq!(before, sorted.len(), "a name was listed twice");
    let stayed: Vec<&String> = sorted.iter().filter(|n| n.starts_with("stay-")).collect();
    assert_eq!(stayed.len(), 2000, "a name that stayed was skipped");
    assert!(
        sorted.contains(&"new".to_string()),
        "the lower name was skipped"
    );
    // A fresh listing shows the directory as it is now.
    let now = names(&d);
    assert_eq!(now.len(), 3001);
    assert!(now.iter().all(|n| !n.starts_with("gone-")));
}

#[test]
fn rename_over_existing_names_and_flags() {
    let rw = rw!(image());
    // A file over a lower file: the target is replaced, the source whited out.
    fs::rename(rw.p("etc/app.conf"), rw.p("etc/passwd")).unwrap();
    assert_eq!(fs::read_to_string(rw.p("etc/passwd")).unwrap(), "debug=0\n");
    assert_eq!(names(&rw.p("etc")), ["passwd", "shadow"]);
    // Type mismatches.
    assert_eq!(
        errno_of(fs::rename(rw.p("etc/passwd"), rw.p("usr"))),
        libc::EISDIR
    );
    assert_eq!(
        errno_of(fs::rename(rw.p("usr"), rw.p("etc/passwd"))),
        libc::ENOTDIR
    );
    // A directory over a non-empty merged directory.
    assert_eq!(
        errno_of(fs::rename(rw.p("var"), rw.p("data"))),
        libc::ENOTEMPTY
    );
    // RENAME_NOREPLACE and RENAME_EXCHANGE.
    let r2 = |a: &str, b: &str, flags: u32| {
        let (a, b) = (cpath(&rw.p(a)), cpath(&rw.p(b)));
        // SAFETY: valid paths.
        let r = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                flags,
            )
        };
        if r == 0 {
            0
        } else {
            errno()
        }
    };
    assert_eq!(
        r2("etc/passwd", "etc/shadow", libc::RENAME_NOREPLACE),
        libc::EEXIST
    );
    assert_eq!(r2("etc/passwd", "etc/shadow", libc::RENAME_EXCHANGE), 0);
    assert_eq!(fs::read_to_string(rw.p("etc/shadow")).unwrap(), "debug=0\n");
    assert_eq!(
        fs::read_to_string(rw.p("etc/passwd")).unwrap(),
        "root:*:1::::::\n"
    );
    assert_eq!(r2("usr", "var", libc::RENAME_EXCHANGE), 0);
    assert_eq!(names(&rw.p("var")), ["bin"]);
    assert_eq!(names(&rw.p("usr")), ["cache", "fifo"]);
}

/// The upper in OCI format, tarred as it is, is a layer: mounting the layers
/// plus that tar read-only shows exactly what the writable mount showed.
#[test]
fn the_oci_upper_tarred_is_a_valid_layer() {
    let rw = rw!(image());
    fs::write(rw.p("etc/passwd"), "changed\n").unwrap();
    fs::remove_file(rw.p("etc/shadow")).unwrap();
    fs::remove_dir_all(rw.p("var/cache")).unwrap();
    fs::create_dir(rw.p("var/cache")).unwrap();
    fs::write(rw.p("var/cache/fresh"), "f").unwrap();
    fs::rename(rw.p("data"), rw.p("moved")).unwrap();
    fs::rename(rw.p("usr/bin/tool"), rw.p("usr/tool")).unwrap();
    fs::create_dir_all(rw.p("new/deep/dir")).unwrap();
    let want = oracle::dump(rw.root(), false);
    let layer = rw.dir.path().join("upper.tar");
    let out = Command::new("tar")
        .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-C"])
        .arg(&rw.upper)
        .arg("-cf")
        .arg(&layer)
        .arg(".")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut tars = rw.tars.clone();
    tars.push(layer);
    let ro = Mount::tars(&tars).unwrap();
    let mut got = oracle::dump(&ro.path, false);
    // The root's times and link count come from the upper root either way.
    got.objs.get_mut(&Vec::new()).unwrap().mtime = None;
    let mut want = want;
    want.objs.get_mut(&Vec::new()).unwrap().mtime = None;
    assert_same(
        &want,
        &got,
        "upper as a layer differs from the writable mount",
    );
}

// ---------------------------------------------------------------------------
// Safety

/// The daemon walks the upper one component at a time with O_NOFOLLOW: a
/// symlink swapped into the upper behind the mount's back is never followed.
#[test]
fn a_symlink_planted_in_the_upper_is_never_followed() {
    let rw = rw!(image());
    fs::write(rw.p("etc/passwd"), "x\n").unwrap(); // etc is now an upper dir
    let outside = rw.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::rename(rw.up("etc"), rw.dir.path().join("etc.real")).unwrap();
    std::os::unix::fs::symlink(&outside, rw.up("etc")).unwrap();
    let _ = fs::write(rw.p("etc/evil"), "evil");
    let _ = fs::write(rw.p("etc/passwd"), "evil");
    let _ = fs::remove_file(rw.p("etc/shadow"));
    let _ = fs::create_dir(rw.p("etc/d"));
    assert_eq!(
        names(&outside),
        Vec::<String>::new(),
        "a write escaped the upper"
    );
}

/// A tmpfs mounted with `opts` at `dir`/fs, for an upper that runs out of
/// space; unmounted when the guard goes.
fn small_tmpfs(dir: &Path, opts: &str) -> (PathBuf, impl Drop) {
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            force_unmount(&self.0);
        }
    }
    let fs_dir = dir.join("fs");
    fs::create_dir(&fs_dir).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
        .arg(&fs_dir)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs -o {opts}");
    (fs_dir.clone(), Umount(fs_dir))
}

#[test]
fn a_full_upper_gives_enospc_and_stays_consistent() {
    if !fuse_available("full disk test") {
        return;
    }
    let dir = scratch_dir("unionfs-full-");
    let tars = write_layers(dir.path(), &image());
    let (upper_fs, _u) = small_tmpfs(dir.path(), "size=1m");
    let upper = upper_fs.join("upper");
    fs::create_dir(&upper).unwrap();
    let m = Mount::with_upper(&tars, &upper, WhiteoutFormat::Oci).unwrap();
    // Copy-up of a 3 MiB file into a 1 MiB filesystem: at the open (with
    // passthrough) or at the first write (with no open handle).
    let e = OpenOptions::new()
        .append(true)
        .open(m.p("data/big.bin"))
        .and_then(|mut f| f.write_all(b"x"));
    assert_eq!(errno_of(e), libc::ENOSPC);
    assert_eq!(
        fs::read(m.p("data/big.bin")).unwrap().len(),
        3 << 20,
        "lower data lost"
    );
    assert!(
        !upper.join("data/big.bin").exists(),
        "a partial copy is visible"
    );
    // Filling the disk by writing: ENOSPC, and what was written stays readable.
    let mut f = File::create(m.p("fill")).unwrap();
    let chunk = vec![1u8; 64 << 10];
    let mut written = 0usize;
    let err = loop {
        match f.write_all(&chunk).and_then(|()| f.flush()) {
            Ok(()) => written += chunk.len(),
            Err(e) => break e,
        }
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
    drop(f);
    assert!(fs::metadata(m.p("fill")).unwrap().len() >= written as u64);
    // Removing it frees the space; the mount works on. The daemon drops its
    // last reference to the upper file at the kernel's FORGET (and, with
    // `-o passthrough`, RELEASE), which FUSE sends after `unlink`/`close`
    // return: a write or copy-up the daemon serves waits for them at
    // ENOSPC. A passthrough write goes straight to the upper file and
    // cannot: there the space must be seen back first (README *Limits*).
    fs::remove_file(m.p("fill")).unwrap();
    if std::env::var_os("UNIONFS_TEST_PASSTHROUGH").is_some() {
        let free = || {
            let c = std::ffi::CString::new(upper_fs.as_os_str().as_bytes()).unwrap();
            // SAFETY: a valid C string and a zeroed out-struct.
            let mut v: libc::statvfs = unsafe { std::mem::zeroed() };
            assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut v) }, 0);
            v.f_bavail as usize * v.f_frsize as usize
        };
        let t = std::time::Instant::now();
        while free() < written / 2 {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(10),
                "the space of a removed file never came back"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    fs::write(m.p("etc/passwd"), "ok\n").unwrap();
    assert_eq!(fs::read_to_string(m.p("etc/passwd")).unwrap(), "ok\n");
    let work = upper_fs.join(".upper.unionfs-work");
    assert_eq!(
        temp_names(&work),
        Vec::<String>::new(),
        "temp files left in the work dir"
    );
}

/// An upper out of inodes: a create, or the whiteout of an `rm`, right
/// after `rm` of a file succeeds. The daemon lets go of a removed file at
/// the kernel's FORGET, which can come after the next request: that request
/// waits for it, as a write does.
#[test]
fn a_create_or_rm_right_after_a_removal_on_an_upper_out_of_inodes_succeeds() {
    if !fuse_available("inode exhaustion test") {
        return;
    }
    let dir = scratch_dir("unionfs-inodes-");
    let tars = write_layers(dir.path(), &image());
    let (upper_fs, _u) = small_tmpfs(dir.path(), "size=4m,nr_inodes=64");
    let upper = upper_fs.join("upper");
    fs::create_dir(&upper).unwrap();
    let m = Mount::with_upper(&tars, &upper, WhiteoutFormat::Oci).unwrap();
    // Lower names to remove once the inodes ran out: each `rm` makes a
    // whiteout, a link to the shared whiteout inode, which tmpfs counts as
    // an inode. Their directories are copied up (chmod to the same mode)
    // and the shared whiteout made (rm of another lower file) first, while
    // there are inodes: then each such `rm` needs exactly one.
    let lower = [
        "data/sub/a",
        "data/sub/b",
        "etc/passwd",
        "etc/shadow",
        "var/cache/new",
        "usr/bin/sh",
    ];
    for d in [
        "data",
        "data/sub",
        "etc",
        "var",
        "var/cache",
        "usr",
        "usr/bin",
    ] {
        let mode = fs::metadata(m.p(d)).unwrap().permissions();
        fs::set_permissions(m.p(d), mode).unwrap();
    }
    fs::remove_file(m.p("data/sub/c")).unwrap();
    fs::create_dir(m.p("d")).unwrap();
    let mut made = Vec::new();
    let err = loop {
        let p = m.p(format!("d/f{}", made.len()));
        match File::create(&p) {
            Ok(_) => made.push(p),
            Err(e) => break e,
        }
        assert!(made.len() < 100, "64 inodes never ran out");
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(made.len() > 40, "only {} files", made.len());
    // Each round frees one inode and takes one: the upper stays full, and
    // every request comes right after a removal.
    let mut free = made.iter();
    for i in 0..30 {
        fs::remove_file(free.next().unwrap()).unwrap();
        let q = m.p(format!("d/g{i}"));
        File::create(&q)
            .and_then(|mut f| f.write_all(b"x"))
            .unwrap_or_else(|e| panic!("create {i} right after a removal: {e}"));
        fs::remove_file(&q).unwrap();
        fs::create_dir(&q).unwrap_or_else(|e| panic!("mkdir {i} right after a removal: {e}"));
        fs::remove_dir(&q).unwrap();
        std::os::unix::fs::symlink("t", &q)
            .unwrap_or_else(|e| panic!("symlink {i} right after a removal: {e}"));
    }
    for l in lower {
        fs::remove_file(free.next().unwrap()).unwrap();
        fs::remove_file(m.p(l)).unwrap_or_else(|e| panic!("rm {l} right after a removal: {e}"));
        assert!(fs::symlink_metadata(m.p(l)).is_err(), "{l} is still there");
    }
    let work = upper_fs.join(".upper.unionfs-work");
    assert_eq!(temp_names(&work), Vec::<String>::new());
}

// ---------------------------------------------------------------------------
// The overlay whiteout format

/// With `--whiteout-format overlay` the upper is one kernel overlayfs accepts:
/// mounting it over the extracted layers shows what unionfs showed.
#[test]
fn an_overlay_format_upper_works_with_kernel_overlayfs() {
    if !oracle::oracle_available() {
        return;
    }
    let layers = image();
    let Some(mut rw) = Rw::with_format(&layers, WhiteoutFormat::Overlay) else {
        return;
    };
    fs::remove_file(rw.p("etc/passwd")).unwrap();
    fs::remove_dir_all(rw.p("var/cache")).unwrap();
    fs::create_dir(rw.p("var/cache")).unwrap();
    fs::write(rw.p("var/cache/x"), "x").unwrap();
    fs::write(rw.p("usr/bin/tool"), "changed").unwrap();
    let ours = timeless(rw.root());
    rw.m.take().unwrap().unmount();
    assert!(fs::symlink_metadata(rw.up("etc/passwd"))
        .unwrap()
        .file_type()
        .is_char_device_like());
    let p = oracle::prepare(&layers);
    let mnt = p.work.path().join("ovl");
    fs::create_dir(&mnt).unwrap();
    let mnt = mnt.canonicalize().unwrap();
    let work = rw.dir.path().join("kwork");
    fs::create_dir(&work).unwrap();
    let ovl = oracle::Overlay::mount_rw(&p.lowers, &rw.upper, &work, &mnt);
    let theirs = timeless(&ovl.path);
    assert_same(
        &theirs,
        &ours,
        "kernel overlayfs reads our upper differently",
    );
}

trait CharDevLike {
    fn is_char_device_like(&self) -> bool;
}
impl CharDevLike for fs::FileType {
    fn is_char_device_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_char_device()
    }
}

// ---------------------------------------------------------------------------
// Differential: random operations on kernel overlayfs and on unionfs

/// One operation, on paths relative to the mount root.
#[derive(Clone)]
enum Op {
    Write(Vec<u8>, u64, Vec<u8>),
    Append(Vec<u8>, Vec<u8>),
    Truncate(Vec<u8>, u64),
    Create(Vec<u8>, u32),
    Mkdir(Vec<u8>, u32),
    Unlink(Vec<u8>),
    Rmdir(Vec<u8>),
    Rename(Vec<u8>, Vec<u8>, u32),
    Chmod(Vec<u8>, u32),
    Chown(Vec<u8>, u32, u32),
    Utime(Vec<u8>, i64),
    Symlink(Vec<u8>, Vec<u8>),
    Link(Vec<u8>, Vec<u8>),
    SetXattr(Vec<u8>, Vec<u8>),
    Mkfifo(Vec<u8>),
}

/// Paths as text (the generator's names are ASCII), data as its length.
impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match self {
            Op::Write(a, off, d) => write!(f, "Write({}, {off}, {} bytes)", p(a), d.len()),
            Op::Append(a, d) => write!(f, "Append({}, {} bytes)", p(a), d.len()),
            Op::Truncate(a, n) => write!(f, "Truncate({}, {n})", p(a)),
            Op::Create(a, m) => write!(f, "Create({}, {m:o})", p(a)),
            Op::Mkdir(a, m) => write!(f, "Mkdir({}, {m:o})", p(a)),
            Op::Unlink(a) => write!(f, "Unlink({})", p(a)),
            Op::Rmdir(a) => write!(f, "Rmdir({})", p(a)),
            Op::Rename(a, b, fl) => write!(f, "Rename({}, {}, {fl:#x})", p(a), p(b)),
            Op::Chmod(a, m) => write!(f, "Chmod({}, {m:o})", p(a)),
            Op::Chown(a, u, g) => write!(f, "Chown({}, {u}, {g})", p(a)),
            Op::Utime(a, t) => write!(f, "Utime({}, {t})", p(a)),
            Op::Symlink(t, a) => write!(f, "Symlink({} -> {})", p(a), p(t)),
            Op::Link(a, b) => write!(f, "Link({}, {})", p(a), p(b)),
            Op::SetXattr(a, v) => write!(f, "SetXattr({}, {} bytes)", p(a), v.len()),
            Op::Mkfifo(a) => write!(f, "Mkfifo({})", p(a)),
        }
    }
}

fn c_at(root: &Path, rel: &[u8]) -> std::ffi::CString {
    cpath(&root.join(OsStr::from_bytes(rel)))
}

/// Runs `op` under `root`; returns 0 or the errno.
fn apply(root: &Path, op: &Op) -> i32 {
    let rc = |r: libc::c_int| if r < 0 { errno() } else { 0 };
    // SAFETY (all blocks below): valid C strings and buffers owned here.
    unsafe {
        match op {
            Op::Write(p, off, data) => write_at(root, p, 0, *off, data),
            Op::Append(p, data) => write_at(root, p, libc::O_APPEND, 0, data),
            Op::Truncate(p, n) => rc(libc::truncate(c_at(root, p).as_ptr(), *n as i64)),
            Op::Create(p, mode) => {
                let c = c_at(root, p);
                let fd = libc::open(
                    c.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                    *mode,
                );
                if fd < 0 {
                    return errno();
                }
                libc::close(fd);
                0
            }
            Op::Mkdir(p, mode) => rc(libc::mkdir(c_at(root, p).as_ptr(), *mode)),
            Op::Unlink(p) => rc(libc::unlink(c_at(root, p).as_ptr())),
            Op::Rmdir(p) => rc(libc::rmdir(c_at(root, p).as_ptr())),
            Op::Rename(a, b, flags) => rc(libc::renameat2(
                libc::AT_FDCWD,
                c_at(root, a).as_ptr(),
                libc::AT_FDCWD,
                c_at(root, b).as_ptr(),
                *flags,
            )),
            Op::Chmod(p, mode) => rc(libc::chmod(c_at(root, p).as_ptr(), *mode)),
            Op::Chown(p, u, g) => rc(libc::lchown(c_at(root, p).as_ptr(), *u, *g)),
            Op::Utime(p, t) => {
                let ts = [libc::timespec {
                    tv_sec: *t,
                    tv_nsec: 0,
                }; 2];
                rc(libc::utimensat(
                    libc::AT_FDCWD,
                    c_at(root, p).as_ptr(),
                    ts.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                ))
            }
            Op::Symlink(target, p) => {
                let t = std::ffi::CString::new(target.clone()).unwrap();
                rc(libc::symlink(t.as_ptr(), c_at(root, p).as_ptr()))
            }
            Op::Link(a, b) => rc(libc::link(c_at(root, a).as_ptr(), c_at(root, b).as_ptr())),
            Op::SetXattr(p, v) => rc(libc::lsetxattr(
                c_at(root, p).as_ptr(),
                c"user.test".as_ptr(),
                v.as_ptr().cast(),
                v.len(),
                0,
            )),
            Op::Mkfifo(p) => rc(libc::mkfifo(c_at(root, p).as_ptr(), 0o644)),
        }
    }
}

/// Opens `p` for writing with `extra` flags and writes `data` at `off`.
fn write_at(root: &Path, p: &[u8], extra: i32, off: u64, data: &[u8]) -> i32 {
    let c = c_at(root, p);
    // SAFETY: a valid path; a buffer we own; the fd is closed here.
    unsafe {
        // O_NONBLOCK: a fifo without a reader is ENXIO, not a hang.
        let fd = libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_NONBLOCK | extra);
        if fd < 0 {
            return errno();
        }
        let n = libc::pwrite(fd, data.as_ptr().cast(), data.len(), off as i64);
        let e = if n < 0 { errno() } else { 0 };
        libc::close(fd);
        e
    }
}

/// Every path under `root` (no root itself), for picking operands.
fn all_paths(root: &Path) -> Vec<Vec<u8>> {
    oracle::dump(root, false)
        .objs
        .into_keys()
        .filter(|p| !p.is_empty())
        .collect()
}

fn random_op(rng: &mut Rng, existing: &[Vec<u8>]) -> Op {
    let pick = |rng: &mut Rng| -> Vec<u8> {
        if existing.is_empty() || rng.chance(15) {
            rng.pick(&[
                &b"new"[..],
                b"etc/new",
                b"usr/bin/x",
                b"data/sub/n",
                b"var/q",
            ])
            .to_vec()
        } else {
            rng.pick(existing).clone()
        }
    };
    let fresh = |rng: &mut Rng| -> Vec<u8> {
        let dirs: Vec<&Vec<u8>> = existing.iter().collect();
        let base: Vec<u8> = if dirs.is_empty() || rng.chance(30) {
            Vec::new()
        } else {
            rng.pick(&dirs).to_vec()
        };
        let name = format!("n{}", rng.below(6));
        join(&base, name.as_bytes())
    };
    let data = |rng: &mut Rng| {
        let n = rng.below(64) as usize;
        rng.bytes(n)
    };
    match rng.below(17) {
        0 => {
            let p = pick(rng);
            Op::Write(p, rng.below(100), data(rng))
        }
        1 => Op::Append(pick(rng), data(rng)),
        2 => Op::Truncate(pick(rng), rng.below(50)),
        3 => Op::Create(fresh(rng), *rng.pick(&[0o644u32, 0o600, 0o755])),
        4 => Op::Mkdir(fresh(rng), *rng.pick(&[0o755u32, 0o700, 0o1777])),
        5 | 6 => Op::Unlink(pick(rng)),
        7 => Op::Rmdir(pick(rng)),
        8 | 9 => {
            let a = pick(rng);
            let b = if rng.chance(50) {
                pick(rng)
            } else {
                fresh(rng)
            };
            let flags = *rng.pick(&[0u32, 0, 0, libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE]);
            Op::Rename(a, b, flags)
        }
        10 => Op::Chmod(
            pick(rng),
            *rng.pick(&[0o600u32, 0o755, 0o4755, 0o1777, 0o000]),
        ),
        11 => Op::Chown(
            pick(rng),
            *rng.pick(&[0u32, 1, 1000]),
            *rng.pick(&[0u32, 5, 1000]),
        ),
        12 => Op::Utime(pick(rng), 1_500_000_000 + rng.below(1000) as i64),
        13 => Op::Symlink(pick(rng), fresh(rng)),
        14 => Op::Link(pick(rng), fresh(rng)),
        15 => Op::SetXattr(pick(rng), data(rng)),
        _ => Op::Mkfifo(fresh(rng)),
    }
}

/// Tree dump for the write differential: no times, no inode-based link groups
/// (on a writable mount each name of a lower hard link has its own inode
/// number, see `overlay::name_ino`; overlayfs reports the lower st_ino), and
/// no link counts of directories (a directory renamed by overlayfs keeps
/// merging with its lower one through a redirect, one unionfs renamed is a
/// whole opaque copy: subdirectory counts differ).
///
/// One known difference is left out: the link count of the names of the
/// image's lower hard link (`tool`, `tool-again`) once their directory was
/// renamed. overlayfs (`redirect_dir=on`) leaves them lower, reporting the
/// layer's count (2); unionfs copies a renamed directory up whole, each name
/// a separate file (1), which is what overlayfs shows too once they are
/// copied up. Contents and every other attribute are still compared.
fn comparable(root: &Path) -> Tree {
    let mut t = timeless(root);
    t.links.clear();
    for (p, o) in t.objs.iter_mut() {
        let base = p.rsplit(|&b| b == b'/').next().unwrap_or_default();
        if o.kind == "dir" || base == b"tool" || base == b"tool-again" {
            o.nlink = None;
        }
    }
    t
}

fn run_ops(seed: u64, steps: usize) -> Result<(), String> {
    // The image without its 3 MiB file: every step hashes both trees.
    let mut layers = image();
    layers[0].entries.retain(|e| e.path != b"data/big.bin");
    let p = oracle::prepare(&layers);
    let w = p.work.path().canonicalize().unwrap();
    for d in ["kupper", "kwork", "kmnt", "uupper"] {
        fs::create_dir(w.join(d)).unwrap();
    }
    let kmnt = w.join("kmnt");
    let ovl = oracle::Overlay::mount_rw(&p.lowers, &w.join("kupper"), &w.join("kwork"), &kmnt);
    let Some(m) = Mount::with_upper(&p.tars, &w.join("uupper"), WhiteoutFormat::Oci) else {
        return Ok(());
    };
    let mut rng = Rng::new(seed);
    let mut log = Vec::new();
    for step in 0..steps {
        let existing = all_paths(&ovl.path);
        let op = random_op(&mut rng, &existing);
        // Captured by the harness, shown if a step panics (a failed lstat
        // in the tree dump does): which seed, which operations.
        eprintln!("seed {seed} step {step}: {op:?}");
        log::info!("seed {seed} step {step}: {op:?}");
        let a = apply(&ovl.path, &op);
        let b = apply(&m.path, &op);
        log.push(format!("{step}: {op:?} -> overlayfs {a}, unionfs {b}"));
        if a != b {
            return Err(format!(
                "seed {seed}: errno differs at step {step}:\n  {}",
                log.join("\n  ")
            ));
        }
        let d = oracle::diff(&comparable(&ovl.path), &comparable(&m.path));
        if !d.is_empty() {
            return Err(format!(
                "seed {seed}: trees differ after step {step}:\n  {}\nops:\n  {}",
                d.join("\n  "),
                log.join("\n  ")
            ));
        }
    }
    Ok(())
}

#[test]
fn random_operations_match_kernel_overlayfs() {
    if !oracle::oracle_available() {
        return;
    }
    let seeds: Vec<u64> = match std::env::var("UNIONFS_WRITE_SEED") {
        Ok(s) => vec![s.parse().expect("UNIONFS_WRITE_SEED must be a number")],
        Err(_) => (0..std::env::var("UNIONFS_WRITE_SEEDS")
            .ok()
            .map(|s| s.parse().expect("UNIONFS_WRITE_SEEDS must be a number"))
            .unwrap_or(12u64))
            .collect(),
    };
    let steps = 60;
    let failures: Vec<String> = seeds
        .iter()
        .filter_map(|&s| run_ops(s, steps).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---------------------------------------------------------------------------
// Concurrency

/// Every path under `root`, tolerating names that vanish while it walks.
fn paths_racy(root: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut todo = vec![Vec::new()];
    while let Some(rel) = todo.pop() {
        let dir = root.join(OsStr::from_bytes(&rel));
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let p = join(&rel, e.file_name().as_bytes());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// Several threads run random operations on overlapping paths for a fixed
/// time: no deadlock (the test ends), no panic, and the tree the mount shows
/// at the end is exactly what a remount shows (the in-memory view of the
/// upper never drifted from the disk), with no temp file left behind.
#[test]
fn concurrent_random_operations_leave_a_consistent_upper() {
    let mut layers = image();
    layers[0].entries.retain(|e| e.path != b"data/big.bin");
    let Some(mut rw) = Rw::new(&layers) else {
        return;
    };
    let root = rw.root().to_path_buf();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(4);
    let counts: Vec<(usize, usize)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..6u64)
            .map(|t| {
                let root = root.clone();
                s.spawn(move || {
                    let mut rng = Rng::new(1000 + t);
                    let (mut ok, mut total) = (0, 0);
                    while std::time::Instant::now() < deadline {
                        let existing = paths_racy(&root);
                        let op = random_op(&mut rng, &existing);
                        total += 1;
                        if apply(&root, &op) == 0 {
                            ok += 1;
                        }
                    }
                    (ok, total)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("a worker panicked"))
            .collect()
    });
    let (ok, total) = counts.iter().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    eprintln!("{total} operations, {ok} succeeded");
    assert!(
        ok > 50,
        "too few operations succeeded ({ok}/{total}): the test proves nothing"
    );
    let before = comparable(rw.root());
    rw.remount();
    let after = comparable(rw.root());
    assert_same(&before, &after, "the view changed across a remount");
    rw.assert_work_dir_clean();
}

/// Names over NAME_MAX are ENAMETOOLONG for every call, as pjdfstest expects
/// (FUSE itself passes names of up to 1024 bytes).
#[test]
fn names_over_name_max_are_enametoolong() {
    let rw = rw!(image());
    let long = "x".repeat(256);
    let p = rw.p(&format!("etc/{long}"));
    assert_eq!(errno_of(fs::symlink_metadata(&p)), libc::ENAMETOOLONG);
    assert_eq!(errno_of(fs::write(&p, "")), libc::ENAMETOOLONG);
    assert_eq!(errno_of(fs::create_dir(&p)), libc::ENAMETOOLONG);
    assert_eq!(errno_of(fs::remove_file(&p)), libc::ENAMETOOLONG);
    assert_eq!(
        errno_of(fs::rename(rw.p("etc/passwd"), &p)),
        libc::ENAMETOOLONG
    );
    let ok = rw.p(&format!("etc/{}", "y".repeat(255)));
    fs::write(&ok, "255 bytes is fine").unwrap();
    assert_eq!(fs::read_to_string(&ok).unwrap(), "255 bytes is fine");
}

/// An upper written by kernel overlayfs (0/0 char device whiteouts, the
/// `trusted.overlay.opaque` xattr) is served by unionfs as overlayfs serves it.
#[test]
fn an_upper_written_by_kernel_overlayfs_is_served_the_same() {
    if !oracle::oracle_available() {
        return;
    }
    let mut layers = image();
    layers[0].entries.retain(|e| e.path != b"data/big.bin");
    let p = oracle::prepare(&layers);
    let w = p.work.path().canonicalize().unwrap();
    for d in ["kupper", "kwork", "kmnt"] {
        fs::create_dir(w.join(d)).unwrap();
    }
    let kmnt = w.join("kmnt");
    let theirs = {
        // No redirect_dir: a renamed lower directory would need its xattr.
        let ovl =
            oracle::Overlay::mount_rw_plain(&p.lowers, &w.join("kupper"), &w.join("kwork"), &kmnt);
        let m = &ovl.path;
        fs::write(m.join("etc/passwd"), "changed by the kernel\n").unwrap();
        fs::remove_file(m.join("etc/shadow")).unwrap();
        fs::remove_dir_all(m.join("data/sub")).unwrap();
        fs::create_dir(m.join("data/sub")).unwrap();
        fs::write(m.join("data/sub/new"), "n").unwrap();
        fs::remove_file(m.join("usr/bin/sh")).unwrap();
        fs::create_dir(m.join("fresh")).unwrap();
        std::os::unix::fs::symlink("etc/passwd", m.join("fresh/link")).unwrap();
        timeless(m)
    };
    let up = w.join("kupper");
    assert!(
        fs::symlink_metadata(up.join("etc/shadow"))
            .unwrap()
            .file_type()
            .is_char_device_like(),
        "the kernel did not write an overlay-format whiteout"
    );
    let Some(m) = Mount::with_upper(&p.tars, &up, WhiteoutFormat::Oci) else {
        return;
    };
    let mut ours = timeless(&m.path);
    // The one known difference: lower hard links' st_ino on a writable mount
    // (see `comparable`).
    let mut theirs = theirs;
    theirs.links.clear();
    ours.links.clear();
    assert_same(
        &theirs,
        &ours,
        "unionfs serves the kernel's upper differently",
    );
}

/// An upper on a stacked filesystem (here a kernel overlayfs): the kernel
/// refuses it as a passthrough backing file, so the first open switches
/// passthrough off and every open, that one included, is served through the
/// daemon. Reads, writes, appends and a shared mmap all work.
#[test]
fn an_upper_on_overlayfs_is_served_without_passthrough() {
    if !fuse_available("writable mount test") {
        return;
    }
    let dir = scratch_dir("unionfs-rw-stacked-");
    let tars = write_layers(dir.path(), &image());
    let ovl = dir.path().join("ovl");
    for d in ["l", "u", "w", "m"] {
        fs::create_dir_all(ovl.join(d)).unwrap();
    }
    let (l, u, w) = (ovl.join("l"), ovl.join("u"), ovl.join("w"));
    let _ovl = oracle::Overlay::mount_rw_plain(&[l], &u, &w, &ovl.join("m"));
    let upper = ovl.join("m/upper");
    fs::create_dir(&upper).unwrap();
    {
        let m = Mount::with_upper(&tars, &upper, WhiteoutFormat::Oci).unwrap();
        fs::write(m.p("new"), b"fresh\n").unwrap();
        assert_eq!(fs::read(m.p("new")).unwrap(), b"fresh\n");
        let mut f = OpenOptions::new()
            .append(true)
            .open(m.p("etc/passwd"))
            .unwrap();
        f.write_all(b"more\n").unwrap();
        drop(f);
        assert_eq!(
            fs::read_to_string(m.p("etc/passwd")).unwrap(),
            "root:x:0:0::/root:/bin/sh\nmore\n"
        );
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.p("new"))
            .unwrap();
        unsafe {
            use std::os::fd::AsRawFd;
            let p = libc::mmap(
                std::ptr::null_mut(),
                6,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            *(p as *mut u8) = b'F';
            assert_eq!(libc::msync(p, 6, libc::MS_SYNC), 0);
            libc::munmap(p, 6);
        }
        drop(f);
        assert_eq!(fs::read(m.p("new")).unwrap(), b"Fresh\n");
        m.unmount();
    }
    assert_eq!(fs::read(upper.join("new")).unwrap(), b"Fresh\n");
    assert_eq!(
        fs::read_to_string(upper.join("etc/passwd")).unwrap(),
        "root:x:0:0::/root:/bin/sh\nmore\n"
    );
}

/// Readers of lower files, appenders (copy-up, then passthrough) and
/// read-write openers race on the same files from 6 threads. The kernel fails
/// with EIO any open that mixes passthrough and page-cache I/O on one inode;
/// the adapter's per-inode counts must never let that happen. Every read sees
/// the lower data first, and every acknowledged append lands exactly once.
#[test]
fn racing_readers_and_writers_never_mix_io_modes() {
    const FILES: usize = 24;
    const BASE: usize = 64 << 10;
    let base = |i: usize| -> Vec<u8> {
        format!("base-{i:02}\n")
            .into_bytes()
            .into_iter()
            .cycle()
            .take(BASE)
            .collect()
    };
    let mut l = Layer::new();
    l.dir("f");
    for i in 0..FILES {
        l.file(format!("f/{i:02}"), base(i));
    }
    let rw = rw!([l]);
    let appended = std::sync::Mutex::new(vec![Vec::<String>::new(); FILES]);
    std::thread::scope(|s| {
        for t in 0..6u64 {
            let (rw, appended) = (&rw, &appended);
            s.spawn(move || {
                let mut rng = Rng::new(100 + t);
                let mut held = Vec::new();
                for k in 0..150 {
                    let i = rng.below(FILES as u64) as usize;
                    let p = rw.p(&format!("f/{i:02}"));
                    match rng.below(3) {
                        0 => {
                            let mut f = File::open(&p).unwrap_or_else(|e| panic!("open {i}: {e}"));
                            let mut got = vec![0u8; BASE];
                            f.read_exact(&mut got)
                                .unwrap_or_else(|e| panic!("read {i}: {e}"));
                            assert!(got == base(i), "file {i}: lower data changed");
                            held.push(f); // kept open across later opens
                        }
                        1 => {
                            let line = format!("t{t}-{k}");
                            let mut f = OpenOptions::new()
                                .append(true)
                                .open(&p)
                                .unwrap_or_else(|e| panic!("open {i} for append: {e}"));
                            f.write_all(format!("{line}\n").as_bytes())
                                .unwrap_or_else(|e| panic!("append to {i}: {e}"));
                            appended.lock().unwrap()[i].push(line);
                        }
                        _ => {
                            let f = OpenOptions::new()
                                .read(true)
                                .write(true)
                                .open(&p)
                                .unwrap_or_else(|e| panic!("open {i} rw: {e}"));
                            let mut got = vec![0u8; 4096];
                            use std::os::unix::fs::FileExt;
                            f.read_exact_at(&mut got, 0)
                                .unwrap_or_else(|e| panic!("pread {i}: {e}"));
                            assert!(got[..] == base(i)[..4096], "file {i}: head changed");
                        }
                    }
                    if held.len() > 3 {
                        held.remove(0);
                    }
                }
            });
        }
    });
    let appended = appended.into_inner().unwrap();
    for (i, lines) in appended.iter().enumerate() {
        let got = fs::read(rw.p(&format!("f/{i:02}"))).unwrap();
        assert!(got[..BASE] == base(i)[..], "file {i}: lower part");
        let mut tail: Vec<String> = String::from_utf8(got[BASE..].to_vec())
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        let mut want = lines.clone();
        tail.sort();
        want.sort();
        assert_eq!(tail, want, "file {i}: appends");
    }
    rw.assert_work_dir_clean();
}

// ---------------------------------------------------------------------------
// Metadata-only copy-up (-o metacopy=on)

const METACOPY: &[u8] = b"user.unionfs.metacopy";

impl Rw {
    /// Unmounts and mounts again, with `-o metacopy=on` if `on`.
    fn remount_metacopy(&mut self, on: bool) {
        self.m.take().unwrap().unmount();
        self.m = Mount::with_upper_metacopy(&self.tars, &self.upper, WhiteoutFormat::Oci, on);
    }
}

fn big_data() -> Vec<u8> {
    (0..3 << 20).map(|i: u32| (i * 7 % 251) as u8).collect()
}

#[test]
fn metacopy_copies_metadata_only_until_the_first_write() {
    let mut rw = rw!(image());
    rw.remount_metacopy(true);
    let big = big_data();
    let sum = format!("{:x}", Sha256::digest(&big));
    fs::set_permissions(rw.p("data/big.bin"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(rw.p("data/big.bin"), Some(7), Some(8)).unwrap();
    let up = rw.up("data/big.bin");
    let st = fs::symlink_metadata(&up).unwrap();
    assert_eq!(st.len(), 3 << 20);
    // (An xattr too big for the inode takes a block of its own on ext4.)
    assert!(st.blocks() < 64, "chmod copied the data");
    assert_eq!(st.mode() & 0o7777, 0o600);
    let marker = lgetxattr_sized(&up, METACOPY, 4096).expect("the marker");
    assert!(marker.ends_with(b"\0data/big.bin"), "{marker:?}");
    // Through the mount: the new metadata, the layer's size and blocks; the
    // marker is private.
    let m = fs::symlink_metadata(rw.p("data/big.bin")).unwrap();
    assert_eq!(
        (m.mode() & 0o7777, m.uid(), m.gid(), m.len()),
        (0o600, 7, 8, 3 << 20)
    );
    assert!(
        m.blocks() > 0,
        "a metadata-only copy reports its layer's blocks"
    );
    assert_eq!(
        lgetxattr_len(&rw.p("data/big.bin"), METACOPY),
        Err(libc::ENODATA)
    );
    // Remounted, with metacopy on and off: the layer's data, the new mode.
    for on in [true, false] {
        rw.remount_metacopy(on);
        assert_eq!(sha(&rw.p("data/big.bin")), sum, "metacopy={on}");
        let m = fs::symlink_metadata(rw.p("data/big.bin")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o600);
    }
    rw.remount_metacopy(true);
    // The first write copies the data in: the same upper inode, marker gone.
    let ino = fs::symlink_metadata(&up).unwrap().ino();
    let mut f = OpenOptions::new()
        .append(true)
        .open(rw.p("data/big.bin"))
        .unwrap();
    f.write_all(b"!").unwrap();
    drop(f);
    let st = fs::symlink_metadata(&up).unwrap();
    assert_eq!(st.ino(), ino);
    assert!(st.blocks() > 0);
    assert_eq!(lgetxattr_len(&up, METACOPY), Err(libc::ENODATA));
    let mut want = big;
    want.push(b'!');
    assert!(fs::read(&up).unwrap() == want, "the upper's data");
    assert!(
        fs::read(rw.p("data/big.bin")).unwrap() == want,
        "the mount's data"
    );
    // A metadata-only copy truncated to 0 needs no data.
    fs::set_permissions(rw.p("etc/passwd"), fs::Permissions::from_mode(0o600)).unwrap();
    assert!(lgetxattr_len(&rw.up("etc/passwd"), METACOPY).is_ok());
    fs::write(rw.p("etc/passwd"), "new\n").unwrap();
    assert_eq!(fs::read_to_string(rw.p("etc/passwd")).unwrap(), "new\n");
    assert_eq!(fs::read_to_string(rw.up("etc/passwd")).unwrap(), "new\n");
    assert_eq!(
        lgetxattr_len(&rw.up("etc/passwd"), METACOPY),
        Err(libc::ENODATA)
    );
    // Off (the default), chmod copies the data.
    rw.remount_metacopy(false);
    fs::set_permissions(rw.p("etc/app.conf"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        fs::read_to_string(rw.up("etc/app.conf")).unwrap(),
        "debug=0\n"
    );
    assert_eq!(
        lgetxattr_len(&rw.up("etc/app.conf"), METACOPY),
        Err(libc::ENODATA)
    );
    rw.assert_work_dir_clean();
}

/// A data copy-up of a metadata-only copy cut short (kill -9 between its
/// data and its marker's removal; built here by hand: half the data written,
/// the marker still there) reads as the layer's data after a remount, and the
/// next write copies the data in again. The order in `overlay/metacopy.rs`
/// (data, fsync, then the marker) makes that the only torn state.
#[test]
fn a_metacopy_data_copy_cut_short_reads_the_layer_and_is_redone() {
    let mut rw = rw!(image());
    rw.remount_metacopy(true);
    fs::set_permissions(rw.p("data/big.bin"), fs::Permissions::from_mode(0o640)).unwrap();
    rw.m.take().unwrap().unmount();
    let up = rw.up("data/big.bin");
    {
        let f = OpenOptions::new().write(true).open(&up).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&vec![0xEE; 1 << 20], 0).unwrap();
    }
    assert!(lgetxattr_len(&up, METACOPY).is_ok());
    rw.m = Mount::with_upper_metacopy(&rw.tars, &rw.upper, WhiteoutFormat::Oci, true);
    let big = big_data();
    assert!(
        fs::read(rw.p("data/big.bin")).unwrap() == big,
        "torn data shown"
    );
    OpenOptions::new()
        .append(true)
        .open(rw.p("data/big.bin"))
        .unwrap()
        .write_all(b"!")
        .unwrap();
    let mut want = big;
    want.push(b'!');
    rw.remount_metacopy(false);
    assert!(fs::read(rw.p("data/big.bin")).unwrap() == want);
    assert!(fs::read(&up).unwrap() == want);
    assert_eq!(lgetxattr_len(&up, METACOPY), Err(libc::ENODATA));
}

/// `commit` and `export` write a metadata-only copy whole, from its layer;
/// without the layers it is refused, naming the file, never written as a
/// hole of zeros.
#[test]
fn metacopy_files_are_committed_and_exported_whole() {
    use unionfs::commit::{changeset, export};
    use unionfs::idmap::IdMap;
    use unionfs::tar::write::Writer;
    let mut rw = rw!(image());
    rw.remount_metacopy(true);
    fs::set_permissions(rw.p("data/big.bin"), fs::Permissions::from_mode(0o600)).unwrap();
    rw.m.take().unwrap().unmount();
    let tars = unionfs::tar::open_all(&rw.tars, &unionfs::tar::IndexOptions::default()).unwrap();
    let stack = unionfs::stack::Stack::new(tars);
    let labels = unionfs::layers::copy_labels(&stack, None);
    let (u, tree) = unionfs::commit::open_upper(&rw.upper).unwrap();
    let big = big_data();
    let file_in = |tar: Vec<u8>| -> (u32, Vec<u8>) {
        let mut a = tar::Archive::new(&tar[..]);
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_str() == Some("data/big.bin") {
                let mode = e.header().mode().unwrap();
                let mut v = Vec::new();
                e.read_to_end(&mut v).unwrap();
                return (mode, v);
            }
        }
        panic!("data/big.bin not written");
    };
    let mut w = Writer::new(Vec::new());
    changeset::write(&u, &tree, Some(&stack), &IdMap::default(), &labels, &mut w).unwrap();
    let (mode, data) = file_in(w.finish().unwrap());
    assert_eq!(mode & 0o7777, 0o600);
    assert!(data == big, "the changeset's copy is not the layer's data");
    let ids = IdMap::default();
    let mut w = Writer::new(Vec::new());
    let side = export::UpperSide {
        upper: &u,
        tree: &tree,
        ids: &ids,
        labels: &labels,
    };
    export::write(&stack, Some(side), &mut w).unwrap();
    let (_, data) = file_in(w.finish().unwrap());
    assert!(data == big, "the export's copy is not the layer's data");
    let mut w = Writer::new(Vec::new());
    let e = changeset::write(&u, &tree, None, &IdMap::default(), &[], &mut w)
        .expect_err("a metadata-only copy without its layers");
    let msg = e.to_string();
    assert!(
        msg.contains("data/big.bin") && msg.contains("metacopy"),
        "{msg}"
    );
}

/// `unionfs mount -f -o OPTS --layers TAR --upper UPPER MNT`, once mounted.
fn spawn_daemon(
    bin: &Path,
    tar: &Path,
    upper: &Path,
    mnt: &Path,
    opts: &str,
) -> std::process::Child {
    let mut daemon = Command::new(bin)
        .args(["mount", "-f", "-o", opts, "--layers"])
        .arg(tar)
        .arg("--upper")
        .arg(upper)
        .arg(mnt)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !is_mounted(mnt) {
        if let Some(st) = daemon.try_wait().unwrap() {
            panic!("unionfs mount -o {opts} exited: {st}");
        }
        assert!(t0.elapsed().as_secs() < 20, "the mount did not come up");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    daemon
}

/// Writes `!` at offset 0 of `rel` in the mount of `daemon`, kills the daemon
/// (SIGKILL) `delay` ms later, and detaches the dead mount.
fn kill_while_writing(mut daemon: std::process::Child, mnt: &Path, rel: &str, delay: u64) {
    let p = mnt.join(rel);
    let writer = std::thread::spawn(move || {
        use std::os::unix::fs::FileExt;
        OpenOptions::new()
            .write(true)
            .open(&p)
            .and_then(|f| f.write_all_at(b"!", 0))
    });
    std::thread::sleep(std::time::Duration::from_millis(delay));
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let _ = writer.join();
    force_unmount(mnt);
}

/// kill -9 of the daemon during the copy-up of a lower hard link (a 48 MiB
/// file with four names in three directories; killed at several moments of
/// the copy and the linking): after a remount, every name shows one file —
/// one inode number, the same data — and a write through any name is seen
/// through all (each name was still lower or linked, never a half-linked
/// group that stays split).
///
/// It was ignored for a while: now and then a read through one of the names
/// after the remount failed with ESTALE. Not seen since the kernel-count race
/// of implicit nodes (a FORGET of an evicted inode arriving after the LOOKUP
/// that made its successor) was fixed in dec44de, most likely its cause: 0
/// failures in 80 runs, 50 of them beside CPU hogs and `drop_caches` every
/// 200 ms.
#[test]
fn kill_9_during_a_linked_copy_up_never_splits_the_group() {
    if !fuse_available("kill -9 test") {
        return;
    }
    let bin = unionfs_bin();
    let dir = scratch_dir("unionfs-kill-links-");
    let big: Vec<u8> = (0..48u32 << 20).map(|i| (i * 17 % 251) as u8).collect();
    let mut l = Layer::new();
    for d in ["a", "b", "c"] {
        l.dir(d);
    }
    l.file("a/f", big.clone());
    l.hardlink("a/g", "a/f");
    l.hardlink("b/f", "a/f");
    l.hardlink("c/f", "a/f");
    let tars = write_layers(dir.path(), &[l]);
    let names = ["a/f", "a/g", "b/f", "c/f"];
    for (round, delay) in [4u64, 10, 16, 22, 28, 34, 60].into_iter().enumerate() {
        let upper = dir.path().join(format!("up{round}"));
        let mnt = dir.path().join(format!("mnt{round}"));
        fs::create_dir(&upper).unwrap();
        fs::create_dir(&mnt).unwrap();
        let daemon = spawn_daemon(bin, &tars[0], &upper, &mnt, "nosuid");
        kill_while_writing(daemon, &mnt, "b/f", delay);
        let in_upper = names.iter().filter(|n| upper.join(n).exists()).count();
        eprintln!("round {round}: killed after {delay} ms; names in the upper: {in_upper}");
        let m = Mount::with_upper(&tars, &upper, WhiteoutFormat::Oci).unwrap();
        let inos: Vec<u64> = names
            .iter()
            .map(|n| fs::metadata(m.p(n)).unwrap().ino())
            .collect();
        assert!(
            inos.iter().all(|&i| i == inos[0]),
            "round {round}: {inos:?}"
        );
        let first = fs::read(m.p("a/f")).unwrap();
        assert!(first[1..] == big[1..] && (first[0] == big[0] || first[0] == b'!'));
        let f = OpenOptions::new().write(true).open(m.p("c/f")).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"#", 1).unwrap();
        drop(f);
        for n in names {
            let got = match fs::read(m.p(n)) {
                Ok(g) => g,
                Err(e) => {
                    let ls = Command::new("sh")
                        .arg("-c")
                        .arg(format!(
                            "ls -liR {u}; for n in a/f a/g b/f c/f; do stat -c '%i %h %s %n' {m}/$n; cat {m}/$n | wc -c; done",
                            u = upper.display(),
                            m = m.path.display()
                        ))
                        .output()
                        .unwrap();
                    panic!(
                        "round {round}: reading {n}: {e}\n{}{}",
                        String::from_utf8_lossy(&ls.stdout),
                        String::from_utf8_lossy(&ls.stderr)
                    );
                }
            };
            assert!(
                got == first[..1]
                    .iter()
                    .chain(b"#")
                    .chain(&big[2..])
                    .copied()
                    .collect::<Vec<u8>>(),
                "round {round}: {n} does not show the write through c/f"
            );
            assert_eq!(
                fs::metadata(m.p(n)).unwrap().nlink(),
                4,
                "round {round}: {n}"
            );
        }
        m.unmount();
    }
}

/// kill -9 of the daemon while it copies the data of a metadata-only copy
/// in (a 48 MiB file; killed at several moments of the copy): after a
/// remount the file reads as the layer's data, or as that with the write,
/// never torn, and takes the write again.
#[test]
fn kill_9_during_a_metacopy_data_copy_never_tears_the_file() {
    if !fuse_available("kill -9 test") {
        return;
    }
    let bin = unionfs_bin();
    let dir = scratch_dir("unionfs-kill-");
    let big: Vec<u8> = (0..48u32 << 20).map(|i| (i * 13 % 251) as u8).collect();
    let mut l = Layer::new();
    l.dir("d");
    l.file("d/big", big.clone());
    let tars = write_layers(dir.path(), &[l]);
    let mut with = big.clone();
    with[0] = b'!';
    for (round, delay) in [5u64, 40, 150].into_iter().enumerate() {
        let upper = dir.path().join(format!("up{round}"));
        let mnt = dir.path().join(format!("mnt{round}"));
        fs::create_dir(&upper).unwrap();
        fs::create_dir(&mnt).unwrap();
        let daemon = spawn_daemon(bin, &tars[0], &upper, &mnt, "metacopy=on");
        let p = mnt.join("d/big");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(lgetxattr_len(&upper.join("d/big"), METACOPY).is_ok());
        kill_while_writing(daemon, &mnt, "d/big", delay);
        let m = Mount::with_upper_metacopy(&tars, &upper, WhiteoutFormat::Oci, true).unwrap();
        let got = fs::read(m.p("d/big")).unwrap();
        eprintln!(
            "round {round}: killed after {delay} ms; the write had landed: {}",
            got == with
        );
        assert!(
            got == big || got == with,
            "round {round} (killed after {delay} ms): the file is torn"
        );
        let f = OpenOptions::new().write(true).open(m.p("d/big")).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"!", 0).unwrap();
        drop(f);
        assert!(fs::read(m.p("d/big")).unwrap() == with, "round {round}");
        assert_eq!(fs::metadata(m.p("d/big")).unwrap().mode() & 0o7777, 0o600);
        m.unmount();
        assert_eq!(
            lgetxattr_len(&upper.join("d/big"), METACOPY),
            Err(libc::ENODATA)
        );
    }
}
