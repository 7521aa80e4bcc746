//! `tar::write` judged by the readers our archives meet: the `tar` crate, our own
//! scanner, and GNU tar (listing, and extracting as root with xattrs, owners, devices
//! and hard links).
//!
//! One corpus covers every entry kind and every reason for a PAX header: names of 100,
//! 101 and 255-byte components, prefix splits, paths only PAX can hold (UTF-8 and not),
//! long link targets, setuid/setgid/sticky modes, ids over 0o7777777, mtimes before 1970
//! and after 2242, binary xattr values, an empty file and a 1 MiB one.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use unionfs::tar::scan::{self, Kind};
use unionfs::tar::write::{header_bytes, Entry, EntryKind, Writer};

/// 2020-09-13 12:26:40 UTC.
const T: i64 = 1_600_000_000;
/// 1969-01-01 00:00:00 UTC: before the epoch, needs PAX.
const BEFORE_1970: i64 = -31_536_000;
/// 2286-11-20 17:46:40 UTC: after ustar's 2242, needs PAX.
const AFTER_2242: i64 = 10_000_000_000;
const BIG_UID: u32 = 4_000_000_000;
const BIG_GID: u32 = 4_000_000_001;

fn entry(path: impl Into<Vec<u8>>, kind: EntryKind, mode: u32) -> Entry {
    Entry {
        path: path.into(),
        kind,
        mode,
        mtime: T,
        ..Entry::default()
    }
}

fn dir(path: impl Into<Vec<u8>>) -> Entry {
    entry(path, EntryKind::Dir, 0o755)
}

fn file(path: impl Into<Vec<u8>>, data: &[u8]) -> (Entry, Vec<u8>) {
    let mut e = entry(path, EntryKind::File, 0o644);
    e.size = data.len() as u64;
    (e, data.to_vec())
}

fn none(e: Entry) -> (Entry, Vec<u8>) {
    (e, Vec::new())
}

/// 1 MiB that is not all the same byte.
fn mib() -> Vec<u8> {
    (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn with(f: impl FnOnce(&mut Entry), (mut e, data): (Entry, Vec<u8>)) -> (Entry, Vec<u8>) {
    f(&mut e);
    (e, data)
}

/// Every kind of entry, every reason for PAX, in an order GNU tar can extract (parents
/// first, hard-link targets before their links).
fn corpus() -> Vec<(Entry, Vec<u8>)> {
    let (a60, b60, c30) = ("a".repeat(60), "b".repeat(60), "c".repeat(30));
    let l255 = "L".repeat(255);
    // Five 61-byte components: 315 bytes in all, only PAX holds it.
    let deep: String = (0..5).map(|i| format!("{}{i}/", "x".repeat(59))).collect();
    let mut v = vec![
        none(dir("d")),
        file("d/hello.txt", b"hello world"),
        file("d/empty", b""),
        file("d/mib", &mib()),
        // The name field exactly full (no NUL), and one byte over: split at "d/".
        file(format!("d/{}", "n".repeat(98)), b"100"),
        file(format!("d/{}", "m".repeat(99)), b"101"),
        // 255-byte components: no split can hold them.
        file(format!("d/{l255}"), b"255"),
        none(dir(format!("d/{}", "D".repeat(255)))),
        none(dir(format!("d/{a60}"))),
        none(dir(format!("d/{a60}/{b60}"))),
        file(format!("d/{a60}/{b60}/{c30}"), b"split"),
    ];
    for i in 1..=5 {
        v.push(none(dir(format!("d/{}", &deep[..61 * i - 1]))));
    }
    v.push(file(format!("d/{deep}deep.txt"), b"deep"));
    v.extend([
        with(|e| e.mode = 0o4755, file("d/setuid", b"#!/bin/sh\n")),
        none(Entry {
            mode: 0o2775,
            ..dir("d/setgid")
        }),
        none(Entry {
            mode: 0o1777,
            ..dir("d/sticky")
        }),
        with(|e| (e.uid, e.gid) = (1000, 100), file("d/owned", b"ids")),
        with(
            |e| (e.uid, e.gid) = (BIG_UID, BIG_GID),
            file("d/big-ids", b"big ids"),
        ),
        with(|e| e.mtime = BEFORE_1970, file("d/old", b"1969")),
        with(|e| e.mtime = AFTER_2242, file("d/future", b"2286")),
        with(
            |e| {
                e.xattrs = vec![
                    (b"user.zz".to_vec(), b"last".to_vec()),
                    (b"user.bin".to_vec(), vec![0, 1, 0xff, b'\n', b'=', b' ', 0]),
                    (b"user.empty".to_vec(), Vec::new()),
                ]
            },
            file("d/xattrs", b"xattrs"),
        ),
        none(Entry {
            xattrs: vec![(b"user.dir".to_vec(), b"on a directory".to_vec())],
            ..dir("d/xdir")
        }),
        none(entry(
            "d/hard",
            EntryKind::HardLink(b"d/hello.txt".to_vec()),
            0o644,
        )),
        none(entry(
            "d/hard-long",
            EntryKind::HardLink(format!("d/{l255}").into_bytes()),
            0o644,
        )),
        none(entry(
            "d/sym",
            EntryKind::Symlink(b"hello.txt".to_vec()),
            0o777,
        )),
        none(entry(
            "d/sym-long",
            EntryKind::Symlink(format!("{}target", "../".repeat(40)).into_bytes()),
            0o777,
        )),
        none(entry(
            "d/null",
            EntryKind::Char { major: 1, minor: 3 },
            0o666,
        )),
        none(entry(
            "d/loop",
            EntryKind::Block {
                major: 7,
                minor: 200,
            },
            0o660,
        )),
        none(entry("d/fifo", EntryKind::Fifo, 0o600)),
        // Not UTF-8 and short: raw bytes in ustar. Long: raw bytes in PAX.
        file(b"d/\xff\xfe-raw".to_vec(), b"raw"),
        file([&b"d/"[..], &[0xe9; 120]].concat(), b"latin-1"),
        // UTF-8, 122 bytes: PAX path.
        file(format!("d/{}", "\u{e9}".repeat(60)), b"utf-8"),
        none(entry(
            "d/sym-bin",
            EntryKind::Symlink([&[0xfe; 110][..], b"/x"].concat()),
            0o777,
        )),
    ]);
    v
}

fn write(entries: &[(Entry, Vec<u8>)]) -> Vec<u8> {
    let mut w = Writer::new(Vec::new());
    for (e, data) in entries {
        let before = w.position();
        w.append(e, &mut &data[..]).unwrap();
        let h = header_bytes(e).unwrap();
        assert_eq!(
            w.position() - before,
            h.len() as u64 + (data.len() as u64).next_multiple_of(512)
        );
        assert_eq!(w.get_ref()[before as usize..][..h.len()], h[..]);
    }
    let out = w.finish().unwrap();
    assert_eq!(out.len() % 512, 0);
    assert!(out[out.len() - 1024..].iter().all(|&b| b == 0));
    out
}

/// The path as it appears in the archive (directories with a trailing '/').
fn archive_path(e: &Entry) -> Vec<u8> {
    let mut p = e.path.clone();
    if e.kind == EntryKind::Dir {
        p.push(b'/');
    }
    p
}

fn link_of(e: &Entry) -> Option<&[u8]> {
    match &e.kind {
        EntryKind::HardLink(t) | EntryKind::Symlink(t) => Some(t),
        _ => None,
    }
}

fn sorted_xattrs(e: &Entry) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut x = e.xattrs.clone();
    x.sort();
    x
}

#[test]
fn same_entries_same_bytes() {
    let c = corpus();
    let one = write(&c);
    assert_eq!(write(&c), one);
    let mut shuffled = c.clone();
    for (e, _) in &mut shuffled {
        e.xattrs.reverse();
    }
    assert_eq!(write(&shuffled), one, "xattr order does not matter");
}

#[test]
fn the_tar_crate_reads_every_field() {
    // The tar crate splits PAX records at '\n' (see the next test): no newlines here.
    let mut c = corpus();
    for (e, _) in &mut c {
        for (_, v) in &mut e.xattrs {
            v.retain(|&b| b != b'\n');
        }
    }
    let bytes = write(&c);
    let mut ar = tar::Archive::new(&bytes[..]);
    let mut n = 0;
    for (got, (e, data)) in ar.entries().unwrap().zip(&c) {
        let mut got = got.unwrap();
        let what = String::from_utf8_lossy(&e.path).into_owned();
        assert_eq!(&got.path_bytes()[..], archive_path(e), "{what}");
        assert_eq!(got.link_name_bytes().as_deref(), link_of(e), "{what}");
        let want_type = match e.kind {
            EntryKind::File => tar::EntryType::Regular,
            EntryKind::HardLink(_) => tar::EntryType::Link,
            EntryKind::Symlink(_) => tar::EntryType::Symlink,
            EntryKind::Char { .. } => tar::EntryType::Char,
            EntryKind::Block { .. } => tar::EntryType::Block,
            EntryKind::Dir => tar::EntryType::Directory,
            EntryKind::Fifo => tar::EntryType::Fifo,
        };
        let h = got.header().clone();
        assert_eq!(h.entry_type(), want_type, "{what}");
        assert!(h.as_ustar().is_some(), "{what}: ustar magic");
        assert_eq!(h.mode().unwrap(), e.mode & 0o7777, "{what}");
        assert_eq!(h.uid().unwrap(), u64::from(e.uid), "{what}");
        assert_eq!(h.gid().unwrap(), u64::from(e.gid), "{what}");
        assert_eq!(h.username_bytes(), Some(&b""[..]), "{what}");
        assert_eq!(h.groupname_bytes(), Some(&b""[..]), "{what}");
        let dev = match e.kind {
            EntryKind::Char { major, minor } | EntryKind::Block { major, minor } => (major, minor),
            _ => (0, 0),
        };
        assert_eq!(
            (h.device_major().unwrap(), h.device_minor().unwrap()),
            (Some(dev.0), Some(dev.1)),
            "{what}"
        );
        assert_eq!(got.size(), e.size, "{what}");

        // The PAX records, exactly: only what ustar cannot hold.
        let mut pax: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        if let Some(exts) = got.pax_extensions().unwrap() {
            for x in exts {
                let x = x.unwrap();
                assert!(pax
                    .insert(x.key_bytes().to_vec(), x.value_bytes().to_vec())
                    .is_none());
            }
        }
        let mut want: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let p = archive_path(e);
        if p.len() > 100 && !splittable(&p) {
            want.insert(b"path".to_vec(), p.clone());
        }
        if let Some(t) = link_of(e).filter(|t| t.len() > 100) {
            want.insert(b"linkpath".to_vec(), t.to_vec());
        }
        if e.uid > 0o7777777 {
            want.insert(b"uid".to_vec(), e.uid.to_string().into_bytes());
        }
        if e.gid > 0o7777777 {
            want.insert(b"gid".to_vec(), e.gid.to_string().into_bytes());
        }
        if e.mtime < 0 || e.mtime > 0o77777777777 {
            want.insert(b"mtime".to_vec(), e.mtime.to_string().into_bytes());
            assert_eq!(h.mtime().unwrap(), 0, "{what}");
        } else {
            assert_eq!(h.mtime().unwrap(), e.mtime as u64, "{what}");
        }
        for (k, v) in &e.xattrs {
            want.insert([&b"SCHILY.xattr."[..], k].concat(), v.clone());
        }
        assert_eq!(pax, want, "{what}");

        let mut body = Vec::new();
        got.read_to_end(&mut body).unwrap();
        assert_eq!(&body, data, "{what}");
        n += 1;
    }
    assert_eq!(n, c.len());
}

/// The tar crate cuts PAX records at every '\n', so it cannot read an xattr value holding
/// one, and it stops looking for `size`, `uid` and `gid` at the first piece it cannot
/// parse. The writer puts those records first, so it still reads them right.
#[test]
fn the_tar_crate_reads_ids_and_size_despite_a_newline_in_an_xattr() {
    let (mut e, data) = file("f", b"data");
    (e.uid, e.gid, e.mtime) = (BIG_UID, BIG_GID, BEFORE_1970);
    e.xattrs = vec![(
        b"security.capability".to_vec(),
        vec![1, 0, 0, 2, b'\n', 0, 0, 0],
    )];
    let bytes = write(&[(e, data)]);
    let mut ar = tar::Archive::new(&bytes[..]);
    let mut got = ar.entries().unwrap().next().unwrap().unwrap();
    let h = got.header();
    assert_eq!(
        (h.uid().unwrap(), h.gid().unwrap()),
        (BIG_UID.into(), BIG_GID.into())
    );
    assert_eq!(got.size(), 4);
    let mut body = Vec::new();
    got.read_to_end(&mut body).unwrap();
    assert_eq!(body, b"data");
}

/// Returns true if and only if ustar's prefix/name split can hold `p` (independently of
/// the writer: some '/' leaves at most 155 bytes before it and 1 to 100 after it).
fn splittable(p: &[u8]) -> bool {
    let body = p.strip_suffix(b"/").unwrap_or(p);
    (0..body.len()).any(|i| body[i] == b'/' && i <= 155 && p.len() - i - 1 <= 100 && i > 0)
}

#[test]
fn our_scanner_reads_every_field() {
    let c = corpus();
    let bytes = write(&c);
    let s = scan::scan(&bytes).unwrap();
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    assert_eq!(s.entries.len(), c.len());
    assert_eq!(s.end_off, bytes.len() as u64 - 1024);
    for (got, (e, data)) in s.entries.iter().zip(&c) {
        let what = String::from_utf8_lossy(&e.path).into_owned();
        let kind = match e.kind {
            EntryKind::File => Kind::File,
            EntryKind::HardLink(_) => Kind::HardLink,
            EntryKind::Symlink(_) => Kind::Symlink,
            EntryKind::Char { .. } => Kind::Char,
            EntryKind::Block { .. } => Kind::Block,
            EntryKind::Dir => Kind::Dir,
            EntryKind::Fifo => Kind::Fifo,
        };
        assert_eq!(got.path, archive_path(e), "{what}");
        assert_eq!(got.kind, Some(kind), "{what}");
        assert_eq!(
            (
                got.mode,
                got.uid,
                got.gid,
                got.mtime,
                got.mtime_nsec,
                got.size
            ),
            (e.mode & 0o7777, e.uid, e.gid, e.mtime, 0, e.size),
            "{what}"
        );
        assert_eq!(got.link, link_of(e).unwrap_or_default(), "{what}");
        if let EntryKind::Char { major, minor } | EntryKind::Block { major, minor } = e.kind {
            assert_eq!(got.rdev, (major, minor), "{what}");
        }
        let mut xattrs = got.xattrs.clone();
        xattrs.sort();
        assert_eq!(xattrs, sorted_xattrs(e), "{what}");
        let off = got.data_off as usize;
        assert_eq!(&bytes[off..off + data.len()], data, "{what}");
    }
}

/// A temporary directory on a file system that keeps `user.*` xattrs.
fn xattr_tempdir() -> tempfile::TempDir {
    let supports = |d: &Path| {
        let f = File::create(d.join("probe")).unwrap();
        unionfs::sys::fsetxattr(f.as_fd(), b"user.probe", b"1", 0).is_ok()
    };
    let d = tempfile::tempdir().unwrap();
    if supports(d.path()) {
        return d;
    }
    let d = tempfile::tempdir_in("/var/tmp").unwrap();
    assert!(
        supports(d.path()),
        "neither {} nor /var/tmp keeps user.* xattrs",
        std::env::temp_dir().display()
    );
    d
}

/// Runs GNU tar with a fixed time zone and locale; returns stdout, having checked that
/// it succeeded without a word on stderr.
fn gnu_tar(args: &[&OsStr]) -> String {
    let out = Command::new("/usr/bin/tar")
        .args(args)
        .env("TZ", "UTC")
        .env("LC_ALL", "C")
        .output()
        .expect("GNU tar at /usr/bin/tar");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tar {args:?}: {}\n{stderr}",
        out.status
    );
    assert!(stderr.is_empty(), "tar {args:?} warned:\n{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

fn save(dir: &Path, bytes: &[u8]) -> PathBuf {
    let p = dir.join("out.tar");
    fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn gnu_tar_lists_it() {
    let c = corpus();
    let tmp = tempfile::tempdir().unwrap();
    let tar = save(tmp.path(), &write(&c));
    let listing = gnu_tar(&["--full-time".as_ref(), "-tvf".as_ref(), tar.as_os_str()]);
    let lines: Vec<String> = listing
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(lines.len(), c.len(), "{listing}");
    let line = |path: &str| {
        let i = c
            .iter()
            .position(|(e, _)| e.path == path.as_bytes())
            .unwrap();
        lines[i].as_str()
    };
    let l255 = "L".repeat(255);
    let (a60, b60, c30) = ("a".repeat(60), "b".repeat(60), "c".repeat(30));
    for (path, want) in [
        ("d", "drwxr-xr-x 0/0 0 2020-09-13 12:26:40 d/".to_string()),
        (
            "d/hello.txt",
            "-rw-r--r-- 0/0 11 2020-09-13 12:26:40 d/hello.txt".into(),
        ),
        (
            "d/mib",
            "-rw-r--r-- 0/0 1048576 2020-09-13 12:26:40 d/mib".into(),
        ),
        (
            "d/setuid",
            "-rwsr-xr-x 0/0 10 2020-09-13 12:26:40 d/setuid".into(),
        ),
        (
            "d/setgid",
            "drwxrwsr-x 0/0 0 2020-09-13 12:26:40 d/setgid/".into(),
        ),
        (
            "d/sticky",
            "drwxrwxrwt 0/0 0 2020-09-13 12:26:40 d/sticky/".into(),
        ),
        (
            "d/owned",
            "-rw-r--r-- 1000/100 3 2020-09-13 12:26:40 d/owned".into(),
        ),
        (
            "d/big-ids",
            "-rw-r--r-- 4000000000/4000000001 7 2020-09-13 12:26:40 d/big-ids".into(),
        ),
        ("d/old", "-rw-r--r-- 0/0 4 1969-01-01 00:00:00 d/old".into()),
        (
            "d/future",
            "-rw-r--r-- 0/0 4 2286-11-20 17:46:40 d/future".into(),
        ),
        (
            "d/hard",
            "hrw-r--r-- 0/0 0 2020-09-13 12:26:40 d/hard link to d/hello.txt".into(),
        ),
        (
            &format!("d/{l255}"),
            format!("-rw-r--r-- 0/0 3 2020-09-13 12:26:40 d/{l255}"),
        ),
        (
            "d/hard-long",
            format!("hrw-r--r-- 0/0 0 2020-09-13 12:26:40 d/hard-long link to d/{l255}"),
        ),
        (
            "d/sym",
            "lrwxrwxrwx 0/0 0 2020-09-13 12:26:40 d/sym -> hello.txt".into(),
        ),
        (
            &format!("d/{a60}/{b60}/{c30}"),
            format!("-rw-r--r-- 0/0 5 2020-09-13 12:26:40 d/{a60}/{b60}/{c30}"),
        ),
        (
            "d/null",
            "crw-rw-rw- 0/0 1,3 2020-09-13 12:26:40 d/null".into(),
        ),
        (
            "d/loop",
            "brw-rw---- 0/0 7,200 2020-09-13 12:26:40 d/loop".into(),
        ),
        (
            "d/fifo",
            "prw------- 0/0 0 2020-09-13 12:26:40 d/fifo".into(),
        ),
    ] {
        assert_eq!(line(path), want);
    }
}

/// glibc's `major`/`minor` of a `dev_t`.
fn dev_numbers(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major as u32, minor as u32)
}

fn xattrs_of(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let f = File::open(p).unwrap();
    let names = unionfs::sys::flistxattr(f.as_fd()).unwrap();
    let mut out: Vec<_> = names
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| (n.to_vec(), unionfs::sys::fgetxattr(f.as_fd(), n).unwrap()))
        .collect();
    out.sort();
    out
}

#[test]
fn gnu_tar_extracts_it() {
    let tmp = xattr_tempdir();
    let owner = fs::metadata(tmp.path().join("probe")).unwrap().uid();
    assert_eq!(
        owner, 0,
        "extracting owners and devices needs root: run this test as root"
    );
    let c = corpus();
    let tar = save(tmp.path(), &write(&c));
    let root = tmp.path().join("x");
    fs::create_dir(&root).unwrap();
    gnu_tar(&[
        // Else: "implausibly old time stamp", "time stamp ... in the future".
        "--warning=no-timestamp".as_ref(),
        "--xattrs".as_ref(),
        "--xattrs-include=*".as_ref(),
        "--numeric-owner".as_ref(),
        "-xpf".as_ref(),
        tar.as_os_str(),
        "-C".as_ref(),
        root.as_os_str(),
    ]);

    let at = |p: &[u8]| root.join(OsStr::from_bytes(p));
    for (e, data) in &c {
        let what = String::from_utf8_lossy(&e.path).into_owned();
        let p = at(&e.path);
        let m = fs::symlink_metadata(&p).unwrap_or_else(|err| panic!("{what}: {err}"));
        let ft = m.file_type();
        match &e.kind {
            EntryKind::File => {
                assert!(ft.is_file(), "{what}");
                assert_eq!(&fs::read(&p).unwrap(), data, "{what}");
            }
            EntryKind::HardLink(t) => {
                let target = fs::symlink_metadata(at(t)).unwrap();
                assert_eq!((m.dev(), m.ino()), (target.dev(), target.ino()), "{what}");
                assert_eq!(m.nlink(), 2, "{what}");
                continue; // its other fields are the target's
            }
            EntryKind::Symlink(t) => {
                assert!(ft.is_symlink(), "{what}");
                assert_eq!(fs::read_link(&p).unwrap().as_os_str().as_bytes(), &t[..]);
            }
            EntryKind::Char { major, minor } => {
                assert!(ft.is_char_device(), "{what}");
                assert_eq!(dev_numbers(m.rdev()), (*major, *minor), "{what}");
            }
            EntryKind::Block { major, minor } => {
                assert!(ft.is_block_device(), "{what}");
                assert_eq!(dev_numbers(m.rdev()), (*major, *minor), "{what}");
            }
            EntryKind::Dir => assert!(ft.is_dir(), "{what}"),
            EntryKind::Fifo => assert!(ft.is_fifo(), "{what}"),
        }
        assert_eq!((m.uid(), m.gid()), (e.uid, e.gid), "{what}");
        assert_eq!(m.mtime(), e.mtime, "{what}");
        if !ft.is_symlink() {
            assert_eq!(m.mode() & 0o7777, e.mode, "{what}");
            if matches!(e.kind, EntryKind::File | EntryKind::Dir) {
                assert_eq!(xattrs_of(&p), sorted_xattrs(e), "{what}");
            }
        }
    }
    // Nothing else was extracted: every directory holds exactly the corpus's children.
    let mut want: Vec<PathBuf> = c.iter().map(|(e, _)| at(&e.path)).collect();
    want.sort();
    let mut got = Vec::new();
    walk(&root, &mut got);
    got.sort();
    assert_eq!(got, want);
}

fn walk(d: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(d).unwrap() {
        let e = e.unwrap();
        out.push(e.path());
        if e.file_type().unwrap().is_dir() {
            walk(&e.path(), out);
        }
    }
}

/// Counts bytes and keeps none.
struct Count(u64);

impl Write for Count {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn sizes_of_8_gib_and_more_go_to_pax() {
    const SIZE: u64 = 8 << 30; // 0o100000000000: one digit too many for ustar
    let (mut e, _) = file("huge", b"");
    e.size = SIZE + 1;
    let h = header_bytes(&e).unwrap();
    assert_eq!(
        h.len(),
        3 * 512,
        "PAX header, its records, the ustar header"
    );

    // Streamed: exactly the size, padded, and the trailer.
    let mut w = Writer::new(Count(0));
    w.append(&e, &mut io::repeat(7)).unwrap();
    assert_eq!(w.position(), 3 * 512 + SIZE + 512);
    assert_eq!(w.finish().unwrap().0, 3 * 512 + SIZE + 512 + 1024);

    // A sparse archive of the same shape, for the readers.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("huge.tar");
    let mut f = File::create(&path).unwrap();
    f.write_all(&h).unwrap();
    let data_off = h.len() as u64;
    f.set_len(data_off + SIZE + 512 + 1024).unwrap();
    drop(f);

    let f = File::open(&path).unwrap();
    let s = scan::scan(&f).unwrap();
    assert_eq!(s.entries.len(), 1);
    assert_eq!(
        (s.entries[0].size, s.entries[0].data_off),
        (SIZE + 1, data_off)
    );

    let mut ar = tar::Archive::new(File::open(&path).unwrap());
    let mut entries = ar.entries().unwrap();
    let got = entries.next().unwrap().unwrap();
    assert_eq!(got.size(), SIZE + 1);
    assert_eq!(got.raw_file_position(), data_off);
    assert_eq!(&got.path_bytes()[..], b"huge");

    let listing = gnu_tar(&["--full-time".as_ref(), "-tvf".as_ref(), path.as_os_str()]);
    let words: Vec<&str> = listing.split_whitespace().collect();
    assert_eq!(
        words,
        [
            "-rw-r--r--",
            "0/0",
            "8589934593",
            "2020-09-13",
            "12:26:40",
            "huge"
        ]
    );
}
