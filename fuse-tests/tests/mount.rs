//! Mount tests: every call the read-only FUSE adapter answers, exercised through
//! a real kernel mount of generated layer tars (fuser `spawn_mount`, in process).
//!
//! Owns the "does the kernel see what the index says" layer of the testing
//! pyramid (STYLE.md item 3). Merge rules are checked against kernel overlayfs in
//! `differential.rs`; here the expected values are written out by hand.

#[macro_use]
mod util;

use std::collections::{BTreeMap, HashSet};
use std::ffi::{CStr, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use unionfs::tar::IndexOptions;
use util::*;

/// lstat, panicking with the path on error.
fn st(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
}

/// The errno of a failed call (panics if it succeeded).
fn err<T: std::fmt::Debug>(r: io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("not an OS error: {e}")),
    }
}

fn lstat_errno(p: &Path) -> i32 {
    err(fs::symlink_metadata(p))
}

/// Names in `dir` in readdir order (std skips `.` and `..`).
fn names(dir: &Path) -> Vec<Vec<u8>> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect()
}

fn strs(v: &[&str]) -> Vec<Vec<u8>> {
    v.iter().map(|s| s.as_bytes().to_vec()).collect()
}

/// Everything libc `readdir` returns for `dir`: (name, d_ino, d_type), `.`/`..` included.
fn libc_readdir(dir: &Path) -> Vec<(Vec<u8>, u64, u8)> {
    let c = cpath(dir);
    // SAFETY: valid path; the DIR* is closed below.
    let d = unsafe { libc::opendir(c.as_ptr()) };
    assert!(
        !d.is_null(),
        "opendir {}: {}",
        dir.display(),
        io::Error::last_os_error()
    );
    let mut out = Vec::new();
    loop {
        // SAFETY: d is an open DIR*.
        let e = unsafe { libc::readdir(d) };
        if e.is_null() {
            break;
        }
        // SAFETY: readdir returned a valid dirent.
        let (name, ino, ty) = unsafe {
            let e = &*e;
            (
                CStr::from_ptr(e.d_name.as_ptr()).to_bytes().to_vec(),
                e.d_ino,
                e.d_type,
            )
        };
        out.push((name, ino, ty));
    }
    // SAFETY: d is open.
    unsafe { libc::closedir(d) };
    out
}

/// Reads up to `len` bytes at `off`, retrying short reads until EOF.
fn pread_full(f: &File, off: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let mut n = 0;
    while n < len {
        match f.read_at(&mut buf[n..], off + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => panic!("pread({}, {}): {e}", off + n as u64, len - n),
        }
    }
    buf.truncate(n);
    buf
}

// ---------------------------------------------------------------------------
// lookup / getattr

#[test]
fn getattr_reports_tar_metadata() {
    let mut l = Layer::new();
    l.dir("d")
        .mode(0o711)
        .owner(5, 6)
        .mtime(1_234_567_890, 987_654_321);
    l.file("d/f", "hello")
        .mode(0o640)
        .owner(1001, 1002)
        .mtime(1_234_567_890, 123_456_789);
    l.file("suid", "x").mode(0o4755);
    l.dir("tmp").mode(0o1777);
    l.file("big-ids", "").owner(3_000_000, 4_000_000_000);
    l.symlink("ln", "d/f").owner(7, 8).mtime(1_000_000_000, 5);
    l.fifo("pipe").mode(0o600).owner(9, 10);
    l.chardev("null", 1, 3).mode(0o666);
    l.blockdev("sda", 8, 1).mode(0o660).owner(0, 6);
    l.chardev("bigdev", 300, 70_000);
    l.file("implicit/child", "c");
    l.file("old", "").mtime(-100, 0);
    l.file("old-frac", "").mtime(-2, 500_000_000);
    l.dir("n");
    l.dir("n/a");
    l.dir("n/b");
    l.file("n/c", "");
    l.file("empty", "");
    l.file("f4097", vec![7u8; 4097]);
    let m = mount!([l]);

    let d = st(&m.p("d"));
    assert!(d.is_dir());
    assert_eq!(d.mode(), libc::S_IFDIR | 0o711);
    assert_eq!((d.uid(), d.gid()), (5, 6));
    assert_eq!((d.mtime(), d.mtime_nsec()), (1_234_567_890, 987_654_321));
    assert_eq!(d.nlink(), 2, "directory without subdirectories");

    let f = st(&m.p("d/f"));
    assert_eq!(f.mode(), libc::S_IFREG | 0o640);
    assert_eq!((f.uid(), f.gid()), (1001, 1002));
    assert_eq!((f.mtime(), f.mtime_nsec()), (1_234_567_890, 123_456_789));
    assert_eq!(f.size(), 5);
    assert_eq!(f.nlink(), 1);
    assert_eq!(f.blocks(), 1);
    assert_eq!(f.blksize(), 4096);

    assert_eq!(st(&m.p("suid")).mode(), libc::S_IFREG | 0o4755);
    assert_eq!(st(&m.p("tmp")).mode(), libc::S_IFDIR | 0o1777);
    let b = st(&m.p("big-ids"));
    assert_eq!(
        (b.uid(), b.gid()),
        (3_000_000, 4_000_000_000),
        "PAX uid/gid"
    );

    let s = st(&m.p("ln"));
    assert!(s.file_type().is_symlink());
    assert_eq!(s.mode(), libc::S_IFLNK | 0o777);
    assert_eq!((s.uid(), s.gid()), (7, 8));
    assert_eq!((s.mtime(), s.mtime_nsec()), (1_000_000_000, 5));
    assert_eq!(s.size(), 3, "a symlink's size is its target's length");

    let p = st(&m.p("pipe"));
    assert!(p.file_type().is_fifo());
    assert_eq!(p.mode(), libc::S_IFIFO | 0o600);
    assert_eq!((p.uid(), p.gid()), (9, 10));

    let n = st(&m.p("null"));
    assert!(n.file_type().is_char_device());
    assert_eq!(n.mode(), libc::S_IFCHR | 0o666);
    assert_eq!(n.rdev(), libc::makedev(1, 3));
    let sda = st(&m.p("sda"));
    assert!(sda.file_type().is_block_device());
    assert_eq!(sda.rdev(), libc::makedev(8, 1));
    assert_eq!(sda.gid(), 6);
    assert_eq!(st(&m.p("bigdev")).rdev(), libc::makedev(300, 70_000));

    let i = st(&m.p("implicit"));
    assert_eq!(i.mode(), libc::S_IFDIR | 0o755, "implicit parent: 0755");
    assert_eq!((i.uid(), i.gid(), i.mtime(), i.mtime_nsec()), (0, 0, 0, 0));

    let o = st(&m.p("old"));
    assert_eq!((o.mtime(), o.mtime_nsec()), (-100, 0));
    let o = st(&m.p("old-frac"));
    assert_eq!(
        (o.mtime(), o.mtime_nsec()),
        (-2, 500_000_000),
        "PAX mtime -1.5"
    );

    assert_eq!(st(&m.p("n")).nlink(), 4, "2 + two subdirectories");
    let root = st(&m.path);
    assert_eq!(root.ino(), 1);
    assert_eq!(
        root.nlink(),
        2 + 4,
        "single-layer root: 2 + subdirs d, tmp, implicit, n"
    );

    let e = st(&m.p("empty"));
    assert_eq!((e.size(), e.blocks()), (0, 0));
    let big = st(&m.p("f4097"));
    assert_eq!(
        (big.size(), big.blocks()),
        (4097, 9),
        "blocks = ceil(size / 512)"
    );

    assert_eq!(lstat_errno(&m.p("missing")), libc::ENOENT);
    assert_eq!(lstat_errno(&m.p("d/f/x")), libc::ENOTDIR);
}

#[test]
fn root_of_several_layers_is_a_merged_directory() {
    let mut l0 = Layer::new();
    l0.dir("a");
    l0.dir("a/x");
    let mut l1 = Layer::new();
    l1.dir("a");
    l1.dir("b");
    l1.dir("b/y");
    l1.dir("b/z");
    let m = mount!([l0, l1]);
    // As overlayfs: a merged directory reports nlink 1; others 2 + subdirs.
    assert_eq!(st(&m.path).nlink(), 1);
    assert_eq!(st(&m.p("a")).nlink(), 1);
    assert_eq!(st(&m.p("b")).nlink(), 4);
    assert_eq!(st(&m.p("a/x")).nlink(), 2);
}

/// Sparse files (GNU tar `-S`, every sparse format GNU tar writes) read back
/// with holes as zeros and report the stored data in st_blocks.
#[test]
fn sparse_files() {
    if !fuse_available("sparse_files") {
        return;
    }
    let work = scratch_dir("unionfs-test-");
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    const SIZE: u64 = 4 << 20;
    let f = File::create(src.join("sp")).unwrap();
    f.set_len(SIZE).unwrap();
    let chunk_a = vec![b'A'; 4096];
    let chunk_b = vec![b'B'; 4096];
    f.write_all_at(&chunk_a, 1 << 20).unwrap();
    f.write_all_at(&chunk_b, SIZE - 4096).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let mut expect = vec![0u8; SIZE as usize];
    expect[1 << 20..(1 << 20) + 4096].copy_from_slice(&chunk_a);
    expect[SIZE as usize - 4096..].copy_from_slice(&chunk_b);

    let variants: &[(&str, &[&str])] = &[
        ("gnu", &["--format=gnu"]),
        ("pax00", &["--format=pax", "--sparse-version=0.0"]),
        ("pax01", &["--format=pax", "--sparse-version=0.1"]),
        ("pax10", &["--format=pax", "--sparse-version=1.0"]),
    ];
    let mut tars = Vec::new();
    for (name, args) in variants {
        let tar = work.path().join(format!("{name}.tar"));
        let st = Command::new("tar")
            .args(*args)
            .arg("--sparse")
            .arg("-cf")
            .arg(&tar)
            .arg("-C")
            .arg(&src)
            .arg("--transform")
            .arg(format!("s,^sp$,{name},"))
            .arg("sp")
            .status()
            .expect("run GNU tar");
        assert!(st.success(), "tar {args:?} failed");
        tars.push(tar);
    }
    let Some(m) = Mount::tars(&tars) else { return };
    for (name, _) in variants {
        let p = m.p(name);
        let s = st(&p);
        assert_eq!(s.size(), SIZE, "{name}");
        assert_eq!(s.blocks(), 16, "{name}: two 4 KiB data chunks stored");
        let got = fs::read(&p).unwrap();
        assert!(got == expect, "{name}: content differs");
        let f = File::open(&p).unwrap();
        let mut buf = vec![0u8; 10_000];
        let off = (1 << 20) - 5000;
        f.read_exact_at(&mut buf, off).unwrap();
        assert!(
            buf[..] == expect[off as usize..off as usize + 10_000],
            "{name}: read across a hole edge"
        );
    }
}

// ---------------------------------------------------------------------------
// readlink

#[test]
fn readlink_returns_targets_as_bytes() {
    let long = "d/".repeat(100) + "end"; // > 100 bytes: PAX linkpath
    let mut l = Layer::new();
    l.file("f", "x");
    l.symlink("short", "f");
    l.symlink("abs", "/etc/passwd");
    l.symlink("long", &long);
    l.symlink("bytes", b"caf\xe9\xff");
    l.symlink("dangling", "nowhere");
    l.symlink("sub/up", "../f");
    let m = mount!([l]);
    let rl = |p: &str| {
        fs::read_link(m.p(p))
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec()
    };
    assert_eq!(rl("short"), b"f");
    assert_eq!(rl("abs"), b"/etc/passwd");
    assert_eq!(rl("long"), long.as_bytes());
    assert_eq!(st(&m.p("long")).size(), long.len() as u64);
    assert_eq!(rl("bytes"), b"caf\xe9\xff");
    assert_eq!(rl("dangling"), b"nowhere");
    assert_eq!(rl("sub/up"), b"../f");
    assert_eq!(fs::read(m.p("sub/up")).unwrap(), b"x", "following works");
    assert_eq!(err(fs::read_link(m.p("f"))), libc::EINVAL);
    assert_eq!(err(fs::read_link(m.p("sub"))), libc::EINVAL);
}

// ---------------------------------------------------------------------------
// open / read

#[test]
fn read_whole_random_offsets_and_past_eof() {
    let mut rng = Rng::new(7);
    let mid = rng.bytes(5000);
    let mut l0 = Layer::new();
    l0.file("small", "lower version");
    let mut l1 = Layer::new();
    l1.file("small", "0123456789");
    l1.file("empty", "");
    l1.file("mid", &mid);
    let m = mount!([l0, l1]);

    assert_eq!(
        fs::read(m.p("small")).unwrap(),
        b"0123456789",
        "top layer wins"
    );
    let f = File::open(m.p("small")).unwrap();
    let mut b = [0u8; 4];
    assert_eq!(f.read_at(&mut b, 3).unwrap(), 4);
    assert_eq!(&b, b"3456");
    assert_eq!(f.read_at(&mut b, 8).unwrap(), 2, "short read at EOF");
    assert_eq!(&b[..2], b"89");
    assert_eq!(f.read_at(&mut b, 10).unwrap(), 0, "read at EOF");
    assert_eq!(f.read_at(&mut b, 1 << 40).unwrap(), 0, "read far past EOF");
    let mut all = Vec::new();
    (&f).read_to_end(&mut all).unwrap();
    assert_eq!(all, b"0123456789");

    assert_eq!(fs::read(m.p("empty")).unwrap(), b"");
    let e = File::open(m.p("empty")).unwrap();
    assert_eq!(e.read_at(&mut b, 0).unwrap(), 0);

    let f = File::open(m.p("mid")).unwrap();
    for _ in 0..300 {
        let off = rng.below(5200) as usize;
        let len = rng.below(3000) as usize + 1;
        let mut buf = vec![0u8; len];
        let n = f.read_at(&mut buf, off as u64).unwrap();
        let want = &mid[off.min(mid.len())..(off + len).min(mid.len())];
        assert_eq!(&buf[..n], want, "pread({off}, {len})");
    }
    assert_eq!(
        err(File::open(m.p("")).and_then(|mut d| d.read(&mut b))),
        libc::EISDIR
    );
    // isatty() of a file (every file Python opens): not a terminal.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), libc::TCGETS, &mut t) };
    assert_eq!((rc, errno()), (-1, libc::ENOTTY));
}

#[test]
fn multi_mib_file_byte_for_byte_and_concurrent_reads() {
    let mut rng = Rng::new(42);
    let big = rng.bytes((9 << 20) + 123);
    let mut l = Layer::new();
    l.file("before", "x");
    l.file("big", &big);
    l.file("after", "y");
    let m = mount!([l]);

    // 8 threads of random preads, before anything is in the page cache; half
    // of them with O_DIRECT, so that every read reaches unionfs concurrently.
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let big = &big;
            let path = m.p("big");
            s.spawn(move || {
                let mut rng = Rng::new(1000 + t);
                let flags = if t % 2 == 0 { libc::O_DIRECT } else { 0 };
                let f = OpenOptions::new()
                    .read(true)
                    .custom_flags(flags)
                    .open(&path)
                    .unwrap_or_else(|e| panic!("open (flags {flags:#o}): {e}"));
                for _ in 0..64 {
                    let off = rng.below(big.len() as u64 + 1000) as usize;
                    let len = rng.below(300_000) as usize + 1;
                    let got = pread_full(&f, off as u64, len);
                    let want = &big[off.min(big.len())..(off + len).min(big.len())];
                    assert!(
                        got == *want,
                        "thread {t}: pread({off}, {len}) returned {} bytes that differ",
                        got.len()
                    );
                }
            });
        }
    });
    let got = fs::read(m.p("big")).unwrap();
    assert_eq!(got.len(), big.len());
    if let Some(i) = got.iter().zip(&big).position(|(a, b)| a != b) {
        panic!("first differing byte at offset {i}");
    }
    assert_eq!(fs::read(m.p("after")).unwrap(), b"y");
}

// ---------------------------------------------------------------------------
// readdir

#[test]
fn readdir_is_the_sorted_union_without_markers() {
    let mut l0 = Layer::new();
    l0.dir("etc");
    l0.file("etc/c", "");
    l0.file("etc/a", "");
    l0.file("etc/b", "lower");
    l0.dir("etc/sub");
    l0.file("gone", "");
    l0.file("keep", "");
    l0.dir("opq");
    l0.file("opq/x", "");
    let mut l1 = Layer::new();
    l1.dir("etc");
    l1.file("etc/b", "upper");
    l1.file("etc/B", "");
    l1.symlink("etc/d", "a");
    l1.whiteout("etc/c");
    l1.whiteout("gone");
    l1.whiteout("never-existed");
    l1.dir("opq");
    l1.opaque("opq");
    l1.file("opq/z", "");
    l1.file(".wh..wh.plnk", ""); // aufs bookkeeping: ignored, never listed
    let m = mount!([l0, l1]);

    assert_eq!(names(&m.path), strs(&["etc", "keep", "opq"]));
    assert_eq!(names(&m.p("etc")), strs(&["B", "a", "b", "d", "sub"]));
    assert_eq!(names(&m.p("opq")), strs(&["z"]));
    assert_eq!(fs::read(m.p("etc/b")).unwrap(), b"upper");

    let raw = libc_readdir(&m.p("etc"));
    let got: Vec<&[u8]> = raw.iter().map(|(n, _, _)| n.as_slice()).collect();
    assert_eq!(got, [&b"."[..], b"..", b"B", b"a", b"b", b"d", b"sub"]);
    let by_name: BTreeMap<&[u8], (u64, u8)> = raw
        .iter()
        .map(|(n, i, t)| (n.as_slice(), (*i, *t)))
        .collect();
    assert_eq!(by_name[&b"."[..]].0, st(&m.p("etc")).ino());
    assert_eq!(by_name[&b".."[..]].0, st(&m.path).ino());
    assert_eq!(by_name[&b"d"[..]].1, libc::DT_LNK);
    assert_eq!(by_name[&b"sub"[..]].1, libc::DT_DIR);
    assert_eq!(by_name[&b"a"[..]].1, libc::DT_REG);
    for (n, ino, _) in &raw[2..] {
        let p = m.p("etc").join(OsStr::from_bytes(n));
        assert_eq!(*ino, st(&p).ino(), "d_ino of {p:?} == st_ino");
    }
    let root = libc_readdir(&m.path);
    assert_eq!((root[0].0.as_slice(), root[0].1), (&b"."[..], 1));
    assert_eq!((root[1].0.as_slice(), root[1].1), (&b".."[..], 1));
}

const HUGE: usize = 100_000;

/// Two layers whose merged `big/` has exactly HUGE entries: even names below,
/// odd names above, plus 1000 lower names the upper layer whites out.
fn huge_dir_layers() -> [Layer; 2] {
    let mut l0 = Layer::new();
    let mut l1 = Layer::new();
    l0.dir("big");
    l1.dir("big");
    for i in 0..HUGE {
        let name = format!("big/f{i:06}");
        if i % 2 == 0 {
            l0.file(name, "");
        } else {
            l1.file(name, "");
        }
    }
    for i in 0..1000 {
        l0.file(format!("big/g{i:04}"), "");
        l1.whiteout(format!("big/g{i:04}"));
    }
    [l0, l1]
}

fn expected_huge_names() -> Vec<Vec<u8>> {
    (0..HUGE).map(|i| format!("f{i:06}").into_bytes()).collect()
}

#[test]
fn readdir_100k_entries_with_a_1k_getdents_buffer() {
    let m = mount!(huge_dir_layers());
    let dir = File::open(m.p("big")).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&dir);
    let mut buf = vec![0u8; 1024];
    let mut got: Vec<Vec<u8>> = Vec::with_capacity(HUGE + 2);
    let mut calls = 0;
    loop {
        // SAFETY: buf is a writable buffer of buf.len() bytes; fd is an open directory.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) };
        assert!(n >= 0, "getdents64: {}", io::Error::last_os_error());
        if n == 0 {
            break;
        }
        calls += 1;
        let mut at = 0usize;
        while at < n as usize {
            // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
            let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
            let name = &buf[at + 19..at + reclen];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap()];
            got.push(name.to_vec());
            at += reclen;
        }
    }
    assert!(calls > 1000, "the 1 KiB buffer forced many calls ({calls})");
    assert_eq!(&got[..2], &strs(&[".", ".."])[..]);
    let rest = &got[2..];
    let unique: HashSet<&Vec<u8>> = rest.iter().collect();
    assert_eq!(unique.len(), rest.len(), "no entry repeated");
    assert_eq!(rest.len(), HUGE, "no entry skipped");
    assert!(rest == expected_huge_names(), "sorted, complete listing");
}

/// The daemon forgets a listing once its reader got to the end; when the
/// kernel has dropped its own copy too, the next reader gets the listing
/// built again, the same.
#[test]
fn a_listing_read_to_its_end_is_listed_again_after_the_kernel_drops_it() {
    let m = mount!(huge_dir_layers());
    let first = names(&m.p("big"));
    assert_eq!(first.len(), HUGE);
    fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
    assert_eq!(names(&m.p("big")), first);
    assert!(first == expected_huge_names());
}

#[test]
fn readdir_100k_entries_with_seekdir_and_telldir() {
    let m = mount!(huge_dir_layers());
    let c = cpath(&m.p("big"));
    // SAFETY: valid path; closed below.
    let d = unsafe { libc::opendir(c.as_ptr()) };
    assert!(!d.is_null());
    let read = |d: *mut libc::DIR| -> Option<Vec<u8>> {
        // SAFETY: d is an open DIR*.
        let e = unsafe { libc::readdir(d) };
        // SAFETY: a non-null dirent from readdir.
        (!e.is_null()).then(|| unsafe { CStr::from_ptr((*e).d_name.as_ptr()).to_bytes().to_vec() })
    };
    let mut rng = Rng::new(99);
    let mut seen: Vec<Vec<u8>> = Vec::with_capacity(HUGE + 2);
    let mut pos: Vec<libc::c_long> = Vec::with_capacity(HUGE + 2);
    let mut jumps = 0;
    loop {
        // SAFETY: d is open.
        let here = unsafe { libc::telldir(d) };
        let Some(name) = read(d) else { break };
        seen.push(name);
        pos.push(here);
        if seen.len() > 2 && rng.chance(3) {
            // Go back up to 40 entries, re-read them, and carry on from there.
            let back = rng.below(40.min(seen.len() as u64)) as usize + 1;
            let from = seen.len() - back;
            // SAFETY: pos[from] came from telldir on this stream.
            unsafe { libc::seekdir(d, pos[from]) };
            for (i, want) in seen[from..].iter().enumerate() {
                let again = read(d).unwrap_or_else(|| panic!("EOF re-reading entry {}", from + i));
                assert_eq!(&again, want, "entry {} after seekdir", from + i);
            }
            jumps += 1;
        }
    }
    // SAFETY: d is open.
    unsafe { libc::closedir(d) };
    assert!(jumps > 1000, "{jumps} seekdirs");
    assert_eq!(&seen[..2], &strs(&[".", ".."])[..]);
    let rest = &seen[2..];
    let unique: HashSet<&Vec<u8>> = rest.iter().collect();
    assert_eq!(unique.len(), rest.len(), "no entry repeated");
    assert_eq!(rest.len(), HUGE, "no entry skipped");
    assert!(rest == expected_huge_names());
}

// ---------------------------------------------------------------------------
// statfs

#[test]
fn statfs_describes_the_layers() {
    let mut l0 = Layer::new();
    l0.file("a", vec![1u8; 100_000]);
    let mut l1 = Layer::new();
    l1.dir("d");
    l1.file("d/b", "b");
    let m = mount!([l0, l1]);
    let tar_bytes: u64 = m
        .layers
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    let entries: u64 = m
        .layers
        .iter()
        .map(|p| {
            unionfs::tar::TarLayer::open(p, &IndexOptions::default())
                .unwrap()
                .index
                .entries
                .len() as u64
        })
        .sum();
    let c = cpath(&m.path);
    // SAFETY: zeroed statfs is a valid out buffer.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out pointer.
    assert_eq!(
        unsafe { libc::statfs(c.as_ptr(), &mut s) },
        0,
        "{}",
        io::Error::last_os_error()
    );
    assert_eq!(s.f_type, 0x6573_5546, "FUSE_SUPER_MAGIC");
    assert_eq!(s.f_bsize, 4096);
    assert_eq!(s.f_blocks, tar_bytes.div_ceil(4096));
    assert_eq!((s.f_bfree, s.f_bavail, s.f_ffree), (0, 0, 0));
    assert_eq!(s.f_files, entries);
    assert_eq!(s.f_namelen, 255);
    // SAFETY: as above.
    let mut v: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut v) }, 0);
    assert_ne!(v.f_flag & libc::ST_RDONLY, 0, "read-only mount");
    assert_ne!(v.f_flag & libc::ST_NOSUID, 0);
    assert_ne!(v.f_flag & libc::ST_NODEV, 0);
    // statfs on a file inside answers the same.
    let c2 = cpath(&m.p("d/b"));
    let mut s2: libc::statfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statfs(c2.as_ptr(), &mut s2) }, 0);
    assert_eq!(s2.f_blocks, s.f_blocks);
}

// ---------------------------------------------------------------------------
// xattrs

#[test]
fn xattrs_get_list_erange_enodata() {
    let mut l0 = Layer::new();
    l0.dir("d")
        .xattr("user.lower", "hidden by the upper dir's metadata");
    let mut l1 = Layer::new();
    l1.dir("d").xattr("user.dir", "D");
    l1.file("d/f", "x")
        .xattr("user.a", "1")
        .xattr("user.empty", "")
        .xattr("trusted.bin", b"\x00\xff\x01")
        .xattr("user.long", "v".repeat(3000));
    l1.hardlink("d/link", "d/f");
    l1.symlink("s", "d/f").xattr("trusted.sym", "on the link");
    l1.file("plain", "");
    let m = mount!([l0, l1]);

    let f = m.p("d/f");
    assert_eq!(
        xattrs(&f),
        vec![
            (b"trusted.bin".to_vec(), b"\x00\xff\x01".to_vec()),
            (b"user.a".to_vec(), b"1".to_vec()),
            (b"user.empty".to_vec(), b"".to_vec()),
            (b"user.long".to_vec(), "v".repeat(3000).into_bytes()),
        ]
    );
    assert_eq!(
        xattrs(&m.p("d/link")),
        xattrs(&f),
        "a hard link shares its inode's xattrs"
    );
    assert_eq!(
        xattrs(&m.p("d")),
        vec![(b"user.dir".to_vec(), b"D".to_vec())],
        "top directory's xattrs"
    );
    assert_eq!(
        xattrs(&m.p("s")),
        vec![(b"trusted.sym".to_vec(), b"on the link".to_vec())]
    );
    assert_eq!(xattrs(&m.p("plain")), vec![]);
    assert_eq!(llistxattr_sized(&m.p("plain"), 0), Ok(vec![]));

    assert_eq!(lgetxattr_len(&f, b"user.long"), Ok(3000));
    assert_eq!(lgetxattr_sized(&f, b"user.long", 2999), Err(libc::ERANGE));
    assert_eq!(lgetxattr_sized(&f, b"user.a", 1), Ok(b"1".to_vec()));
    assert_eq!(
        lgetxattr_sized(&f, b"user.missing", 100),
        Err(libc::ENODATA)
    );
    assert_eq!(lgetxattr_len(&f, b"user.missing"), Err(libc::ENODATA));
    assert_eq!(
        lgetxattr_sized(&m.p("d"), b"user.lower", 100),
        Err(libc::ENODATA)
    );
    let list_len = llistxattr_sized(&f, 0).map(|v| v.len());
    assert_eq!(list_len, Ok(0), "size 0 writes nothing");
    let c = cpath(&f);
    // SAFETY: size 0 asks for the length.
    let need = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    let names_len = "trusted.bin\0user.a\0user.empty\0user.long\0".len();
    assert_eq!(need as usize, names_len);
    assert_eq!(llistxattr_sized(&f, names_len - 1), Err(libc::ERANGE));
    assert_eq!(llistxattr_sized(&f, names_len).unwrap().len(), names_len);
}

// ---------------------------------------------------------------------------
// access and permissions

/// Runs `f` on a fresh thread whose filesystem uid/gid are `uid`/`gid`
/// (setfsuid is per thread, so other tests are unaffected).
fn as_user<T: Send>(uid: u32, gid: u32, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: plain syscalls changing this thread's credentials only.
            unsafe {
                libc::setfsgid(gid);
                libc::setfsuid(uid);
                assert_eq!(libc::setfsuid(u32::MAX) as u32, uid, "setfsuid failed");
            }
            f()
        })
        .join()
        .unwrap()
    })
}

fn access(p: &Path, mode: i32, flags: i32) -> i32 {
    let c = cpath(p);
    // SAFETY: valid path.
    if unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), mode, flags) } == 0 {
        0
    } else {
        errno()
    }
}

#[test]
fn access_and_permission_checks() {
    // SAFETY: trivial getter.
    if unsafe { libc::geteuid() } != 0 {
        skip_or_panic(
            "access_and_permission_checks",
            "needs root (to act as another uid)",
        );
        return;
    }
    let mut l = Layer::new();
    l.file("mine", "m").mode(0o600).owner(1000, 1000);
    l.file("rootonly", "r").mode(0o600);
    l.file("public", "p").mode(0o644);
    l.file("script", "#!/bin/sh\n").mode(0o755);
    l.dir("locked").mode(0o700);
    l.file("locked/x", "");
    l.dir("open").mode(0o755);
    l.file("open/y", "");
    let m = mount!([l]);

    // As root.
    assert_eq!(access(&m.p("public"), libc::R_OK, 0), 0);
    assert_eq!(access(&m.p("public"), libc::F_OK, 0), 0);
    assert_eq!(access(&m.p("public"), libc::W_OK, 0), libc::EROFS);
    assert_eq!(
        access(&m.p("public"), libc::X_OK, 0),
        libc::EACCES,
        "no x bit at all: even root"
    );
    assert_eq!(access(&m.p("script"), libc::X_OK, 0), 0);
    assert_eq!(access(&m.p("rootonly"), libc::R_OK, 0), 0);
    assert_eq!(access(&m.p("locked"), libc::W_OK, 0), libc::EROFS);
    assert_eq!(access(&m.p("nope"), libc::F_OK, 0), libc::ENOENT);

    // As uid 1000 (kernel permission checks: default_permissions).
    let m2 = &m;
    let (mine, rootonly, public, locked_x, locked_ls, open_y, w) = as_user(1000, 1000, move || {
        let e = |r: io::Result<Vec<u8>>| r.map_err(|e| e.raw_os_error().unwrap());
        (
            e(fs::read(m2.p("mine"))),
            e(fs::read(m2.p("rootonly"))),
            e(fs::read(m2.p("public"))),
            fs::symlink_metadata(m2.p("locked/x"))
                .map(|_| ())
                .map_err(|e| e.raw_os_error().unwrap()),
            fs::read_dir(m2.p("locked"))
                .map(|_| ())
                .map_err(|e| e.raw_os_error().unwrap()),
            e(fs::read(m2.p("open/y"))),
            access(&m2.p("mine"), libc::W_OK, libc::AT_EACCESS),
        )
    });
    assert_eq!(mine, Ok(b"m".to_vec()));
    assert_eq!(rootonly, Err(libc::EACCES));
    assert_eq!(public, Ok(b"p".to_vec()));
    assert_eq!(locked_x, Err(libc::EACCES));
    assert_eq!(locked_ls, Err(libc::EACCES));
    assert_eq!(open_y, Ok(b"".to_vec()));
    assert_eq!(w, libc::EROFS);
}

// ---------------------------------------------------------------------------
// writes

#[test]
fn every_write_fails_with_erofs() {
    let mut l = Layer::new();
    l.file("f", "data").mode(0o666);
    l.dir("d").mode(0o777);
    l.file("d/g", "");
    l.symlink("s", "f");
    let m = mount!([l]);
    let f = m.p("f");
    let c = cpath(&f);
    let erofs = |what: &str, r: io::Result<()>| {
        assert_eq!(err(r), libc::EROFS, "{what}");
    };
    erofs(
        "open O_WRONLY",
        OpenOptions::new().write(true).open(&f).map(drop),
    );
    erofs(
        "open O_RDWR",
        OpenOptions::new().read(true).write(true).open(&f).map(drop),
    );
    erofs(
        "open O_APPEND",
        OpenOptions::new().append(true).open(&f).map(drop),
    );
    erofs(
        "open O_RDONLY|O_TRUNC",
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_TRUNC)
            .open(&f)
            .map(drop),
    );
    erofs("create", File::create(m.p("new")).map(drop));
    erofs("create in subdir", File::create(m.p("d/new")).map(drop));
    erofs(
        "O_CREAT on existing",
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&f)
            .map(drop),
    );
    erofs("mkdir", fs::create_dir(m.p("newdir")));
    erofs("unlink", fs::remove_file(&f));
    erofs("unlink symlink", fs::remove_file(m.p("s")));
    erofs("rmdir", fs::remove_dir(m.p("d")));
    erofs("rename", fs::rename(&f, m.p("f2")));
    erofs("rename over", fs::rename(&f, m.p("d/g")));
    erofs(
        "chmod",
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)),
    );
    erofs("chown", std::os::unix::fs::chown(&f, Some(1), Some(1)));
    erofs("symlink", std::os::unix::fs::symlink("f", m.p("s2")));
    erofs("link", fs::hard_link(&f, m.p("h")));
    erofs(
        "setxattr",
        lsetxattr(&f, b"user.x", b"1").map_err(io::Error::from_raw_os_error),
    );
    erofs("truncate", {
        // SAFETY: valid path.
        let r = unsafe { libc::truncate(c.as_ptr(), 0) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    });
    erofs(
        "utimes",
        File::open(&f).and_then(|h| h.set_modified(std::time::SystemTime::now())),
    );
    erofs("mknod", {
        let p = cpath(&m.p("fifo"));
        // SAFETY: valid path.
        let r = unsafe { libc::mknod(p.as_ptr(), libc::S_IFIFO | 0o644, 0) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    });
    erofs("removexattr", {
        let n = std::ffi::CString::new("user.x").unwrap();
        // SAFETY: valid C strings.
        let r = unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    });
    // Nothing changed.
    assert_eq!(fs::read(&f).unwrap(), b"data");
    assert_eq!(names(&m.path), strs(&["d", "f", "s"]));
}

// ---------------------------------------------------------------------------
// merge rules

#[test]
fn whiteouts_hide_lower_entries() {
    let mut l0 = Layer::new();
    l0.file("a", "a0");
    l0.dir("b");
    l0.file("b/x", "");
    l0.dir("c");
    l0.file("c/y", "");
    l0.file("c/keep", "");
    l0.file("d", "d0");
    l0.file(b"caf\xe9", "");
    let mut l1 = Layer::new();
    l1.whiteout("a");
    l1.whiteout("b");
    l1.dir("c");
    l1.whiteout("c/y");
    l1.whiteout(b"caf\xe9");
    let mut l2 = Layer::new();
    l2.file("a", "a2");
    let m = mount!([l0, l1, l2]);
    assert_eq!(
        fs::read(m.p("a")).unwrap(),
        b"a2",
        "re-created above its whiteout"
    );
    assert_eq!(lstat_errno(&m.p("b")), libc::ENOENT);
    assert_eq!(lstat_errno(&m.p("b/x")), libc::ENOENT);
    assert_eq!(lstat_errno(&m.p("c/y")), libc::ENOENT);
    assert_eq!(lstat_errno(&m.p(b"caf\xe9")), libc::ENOENT);
    assert_eq!(
        lstat_errno(&m.p(".wh.b")),
        libc::ENOENT,
        "markers are not names"
    );
    assert_eq!(names(&m.p("c")), strs(&["keep"]));
    assert_eq!(names(&m.path), strs(&["a", "c", "d"]));
    assert_eq!(fs::read(m.p("d")).unwrap(), b"d0");
}

#[test]
fn opaque_directory_hides_lower_children() {
    let mut l0 = Layer::new();
    l0.dir("o");
    l0.file("o/p", "");
    l0.dir("o/q");
    l0.file("o/q/deep", "");
    l0.dir("o2");
    l0.file("o2/old", "");
    let mut l1 = Layer::new();
    l1.dir("o").mode(0o750);
    l1.opaque("o");
    l1.file("o/r", "");
    l1.opaque("o2"); // marker before (without) its directory's own entry
    l1.file("o2/new", "");
    let mut l2 = Layer::new();
    l2.dir("o");
    l2.file("o/s", "");
    let m = mount!([l0, l1, l2]);
    assert_eq!(
        names(&m.p("o")),
        strs(&["r", "s"]),
        "L2 merges with the opaque L1 only"
    );
    assert_eq!(lstat_errno(&m.p("o/p")), libc::ENOENT);
    assert_eq!(lstat_errno(&m.p("o/q/deep")), libc::ENOENT);
    assert_eq!(names(&m.p("o2")), strs(&["new"]));
    assert_eq!(
        st(&m.p("o")).mode(),
        libc::S_IFDIR | 0o755,
        "top layer's metadata"
    );
    assert_eq!(st(&m.p("o")).nlink(), 1, "merged (L2 + L1)");
    assert_eq!(
        st(&m.p("o2")).nlink(),
        2,
        "opaque, single layer: not merged"
    );
}

#[test]
fn whiteout_does_not_hide_its_own_layers_entry() {
    let mut l0 = Layer::new();
    for d in ["e", "f", "g"] {
        l0.dir(d);
        l0.file(format!("{d}/old"), "");
    }
    l0.file("h", "h0");
    let mut l1 = Layer::new();
    // whiteout after the entry
    l1.dir("e");
    l1.file("e/new", "");
    l1.whiteout("e");
    // whiteout before the entry
    l1.whiteout("f");
    l1.dir("f");
    l1.file("f/new", "");
    // whiteout, then only a child (implicit parent)
    l1.whiteout("g");
    l1.file("g/new", "");
    // a file and its whiteout
    l1.file("h", "h1");
    l1.whiteout("h");
    let m = mount!([l0, l1]);
    for d in ["e", "f", "g"] {
        assert_eq!(
            names(&m.p(d)),
            strs(&["new"]),
            "{d}: same-layer whiteout hides only the lower {d}"
        );
    }
    assert_eq!(fs::read(m.p("h")).unwrap(), b"h1");
    assert_eq!(names(&m.path), strs(&["e", "f", "g", "h"]));
}

#[test]
fn file_replaces_dir_and_dir_replaces_file() {
    let mut l0 = Layer::new();
    l0.dir("x");
    l0.file("x/y", "");
    l0.file("z", "file");
    let mut l1 = Layer::new();
    l1.file("x", "now a file");
    l1.dir("z");
    l1.file("z/w", "");
    let m = mount!([l0, l1]);
    assert_eq!(fs::read(m.p("x")).unwrap(), b"now a file");
    assert_eq!(lstat_errno(&m.p("x/y")), libc::ENOTDIR);
    assert_eq!(names(&m.p("z")), strs(&["w"]));
    assert_eq!(
        st(&m.p("z")).nlink(),
        2,
        "a directory over a file is not merged"
    );
}

#[test]
fn non_utf8_names_are_bytes() {
    let names_in = [
        &b"caf\xe9"[..],
        b"\xff\xfe",
        b"new\nline",
        b"sp ace",
        b"\xc3\xa9t\xc3\xa9",
    ];
    let mut l = Layer::new();
    l.dir(b"d\x80");
    for (i, n) in names_in.iter().enumerate() {
        l.file([&b"d\x80/"[..], n].concat(), format!("{i}"));
    }
    let m = mount!([l]);
    assert_eq!(names(&m.path), vec![b"d\x80".to_vec()]);
    let mut want: Vec<Vec<u8>> = names_in.iter().map(|n| n.to_vec()).collect();
    want.sort();
    assert_eq!(names(&m.p(b"d\x80")), want);
    for (i, n) in names_in.iter().enumerate() {
        let p = m.p([&b"d\x80/"[..], n].concat());
        assert_eq!(fs::read(&p).unwrap(), format!("{i}").into_bytes(), "{p:?}");
    }
}

#[test]
fn hard_links_share_inode_and_count_links() {
    let mut l0 = Layer::new();
    l0.dir("h");
    l0.file("h/a", "shared").mode(0o600).owner(3, 4);
    l0.hardlink("h/b", "h/a");
    l0.hardlink("h/sub/c", "h/a");
    l0.file("r1", "old");
    l0.hardlink("r2", "r1");
    l0.file("r1", "new"); // replaces r1; r2 keeps the old inode
    let mut l1 = Layer::new();
    l1.dir("h");
    l1.whiteout("h/b");
    let m = mount!([l0, l1]);
    let a = st(&m.p("h/a"));
    let c = st(&m.p("h/sub/c"));
    assert_eq!(a.ino(), c.ino());
    assert_eq!(lstat_errno(&m.p("h/b")), libc::ENOENT);
    // As overlayfs: a lower inode keeps its layer's link count even when an
    // upper layer hides one of its names.
    assert_eq!(a.nlink(), 3);
    assert_eq!(c.nlink(), 3);
    assert_eq!((c.mode(), c.uid(), c.gid()), (libc::S_IFREG | 0o600, 3, 4));
    assert_eq!(fs::read(m.p("h/sub/c")).unwrap(), b"shared");
    let d_ino = libc_readdir(&m.p("h/sub"))
        .into_iter()
        .find(|(n, _, _)| n == b"c")
        .unwrap()
        .1;
    assert_eq!(d_ino, a.ino(), "readdir's d_ino agrees");

    let r1 = st(&m.p("r1"));
    let r2 = st(&m.p("r2"));
    assert_ne!(r1.ino(), r2.ino());
    assert_eq!((r1.nlink(), r2.nlink()), (1, 1));
    assert_eq!(fs::read(m.p("r1")).unwrap(), b"new");
    assert_eq!(fs::read(m.p("r2")).unwrap(), b"old");
}

// ---------------------------------------------------------------------------
// inode numbers

/// path → st_ino for every name under `root` (lstat, no symlinks followed).
fn inode_map(root: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let md = st(&p);
            if md.is_dir() {
                todo.push(p.clone());
            }
            out.insert(p.strip_prefix(root).unwrap().to_path_buf(), md.ino());
        }
    }
    out
}

#[test]
fn inode_numbers_are_stable_across_lookups_and_remounts() {
    if !fuse_available("inode stability") {
        return;
    }
    let mut l0 = Layer::new();
    l0.dir("a");
    l0.file("a/f", "");
    l0.hardlink("a/g", "a/f");
    l0.dir("a/sub");
    l0.file("gone", "");
    let mut l1 = Layer::new();
    l1.dir("a");
    l1.file("a/h", "");
    l1.symlink("s", "a");
    l1.whiteout("gone");
    l1.dir("b");
    l1.fifo("b/p");
    let work = scratch_dir("unionfs-test-");
    let tars = write_layers(work.path(), &[l0, l1]);
    let cache = IndexOptions {
        cache_dir: Some(work.path().join("cache")),
        ..IndexOptions::default()
    };

    let Some(m) = Mount::with_options(&tars, &cache) else {
        return;
    };
    let first = inode_map(&m.path);
    let second = inode_map(&m.path);
    assert_eq!(first, second, "two lookups agree");
    assert_eq!(first.len(), 8);
    assert_eq!(first[Path::new("a/f")], first[Path::new("a/g")]);
    let distinct: HashSet<u64> = first.values().copied().collect();
    assert_eq!(
        distinct.len(),
        first.len() - 1,
        "only the hard link pair shares a number"
    );
    m.unmount();

    // Remount: the index now comes from the cache.
    let Some(m) = Mount::with_options(&tars, &cache) else {
        return;
    };
    assert!(
        fs::read_dir(work.path().join("cache")).unwrap().count() >= 2,
        "indexes were stored"
    );
    assert_eq!(
        inode_map(&m.path),
        first,
        "same numbers after remount (cached index)"
    );
    m.unmount();
    let Some(m) = Mount::tars(&tars) else { return };
    assert_eq!(
        inode_map(&m.path),
        first,
        "same numbers after remount (fresh index)"
    );
}
