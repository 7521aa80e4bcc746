//! The stored index: what is loaded equals what was built, and an index that
//! does not belong to the tar exactly as it is now, or is damaged in any section,
//! is rebuilt — never trusted.

mod util;

use std::fs;
use std::path::{Path, PathBuf};

use unionfs::tar::index::LayerIndex;
use unionfs::tar::{IndexOptions, TarLayer};
use util::{field, id, listing, read_all, Hdr, Tar};

/// A layer that uses every part of the index: hard links (one to a detached
/// inode), symlinks, devices, xattrs, a sparse file, whiteouts, an opaque
/// directory, implicit parents, and a dropped entry (so there is a warning).
fn rich_tar() -> Vec<u8> {
    let mut t = Tar::new();
    t.dir("etc")
        .file("etc/passwd", b"root:x:0:0\n")
        .hardlink("etc/passwd-", "etc/passwd")
        .file("etc/passwd", b"replaced\n")
        .symlink("etc/mtab", "/proc/self/mounts")
        .entry(Hdr::ustar("dev/null", b'3', 0).dev(1, 3), b"")
        .pax(&[
            ("SCHILY.xattr.user.a", b"1"),
            ("SCHILY.xattr.trusted.b", b"\0\xff"),
        ])
        .file("usr/bin/tool", b"#!/bin/sh\n")
        .file("usr/.wh.lib", b"")
        .file("var/.wh..wh..opq", b"")
        .file("../escape", b"")
        .entry(
            Hdr::gnu("sparse", b'S', 3)
                .octal(field::GNU_REALSIZE, 5000)
                .octal((field::GNU_SPARSE, 12), 4096)
                .octal((field::GNU_SPARSE + 12, 12), 3),
            b"abc",
        );
    t.finish()
}

fn opts(cache: &Path) -> IndexOptions {
    IndexOptions {
        cache_dir: Some(cache.to_owned()),
        members: true,
        ..IndexOptions::default()
    }
}

fn open(tar: &Path, o: &IndexOptions) -> TarLayer {
    TarLayer::open(tar, o).unwrap_or_else(|e| panic!("{e}"))
}

#[track_caller]
fn assert_same(a: &LayerIndex, b: &LayerIndex) {
    assert_eq!(format!("{:?}", a.entries), format!("{:?}", b.entries));
    assert_eq!(a.names, b.names);
    assert_eq!(a.extra, b.extra);
    assert_eq!(a.members, b.members);
    assert_eq!(
        (a.end_off, a.tar_size, a.dropped),
        (b.end_off, b.tar_size, b.dropped)
    );
    assert_eq!(a.warnings, b.warnings);
}

struct Fixture {
    _dir: tempfile::TempDir,
    tar: PathBuf,
    cache: PathBuf,
}

/// A tar and a cache directory holding its freshly stored index.
fn fixture() -> (Fixture, TarLayer) {
    let dir = tempfile::tempdir().unwrap();
    let tar = util::write_tar(dir.path(), "layer.tar", &rich_tar());
    let cache = dir.path().join("cache");
    let built = open(&tar, &opts(&cache));
    assert!(built.source.built);
    assert_eq!(built.source.rejected.as_deref(), Some("no index yet"));
    assert!(built.source.file.as_ref().is_some_and(|f| f.is_file()));
    (
        Fixture {
            _dir: dir,
            tar,
            cache,
        },
        built,
    )
}

#[test]
fn stored_index_loads_identical() {
    let (fx, built) = fixture();
    assert!(built.index.dropped == 1 && built.index.warnings.len() == 1);
    let loaded = open(&fx.tar, &opts(&fx.cache));
    assert!(!loaded.source.built, "{:?}", loaded.source);
    assert_eq!(loaded.source.rejected, None);
    assert_eq!(loaded.source.file, built.source.file);
    assert_same(&built.index, &loaded.index);
    // And it serves the same bytes.
    for p in ["etc/passwd", "etc/passwd-", "usr/bin/tool", "sparse"] {
        assert_eq!(
            read_all(&loaded, id(&loaded.index, p)),
            read_all(&built, id(&built.index, p)),
            "{p}"
        );
    }
    assert_eq!(
        read_all(&loaded, id(&loaded.index, "etc/passwd-")),
        b"root:x:0:0\n"
    );
    // Without the member table: the same tree.
    let slim = open(
        &fx.tar,
        &IndexOptions {
            members: false,
            ..opts(&fx.cache)
        },
    );
    assert!(!slim.source.built);
    assert!(slim.index.members.is_empty());
    assert_eq!(listing(&slim.index), listing(&built.index));
}

#[test]
fn rebuild_option_ignores_the_stored_index() {
    let (fx, _) = fixture();
    let o = IndexOptions {
        rebuild: true,
        ..opts(&fx.cache)
    };
    let l = open(&fx.tar, &o);
    assert!(l.source.built);
    assert_eq!(l.source.rejected, None);
}

#[test]
fn appended_bytes_make_it_rebuild() {
    let (fx, built) = fixture();
    let mut bytes = fs::read(&fx.tar).unwrap();
    bytes.extend_from_slice(&[0u8; 512]);
    fs::write(&fx.tar, &bytes).unwrap();
    let l = open(&fx.tar, &opts(&fx.cache));
    assert!(l.source.built);
    assert_eq!(
        l.source.rejected.as_deref(),
        Some("the tar changed since it was indexed")
    );
    assert_eq!(l.index.tar_size, built.index.tar_size + 512);
    // The new index was stored: the next open loads it.
    assert!(!open(&fx.tar, &opts(&fx.cache)).source.built);
}

#[test]
fn same_size_rewrite_makes_it_rebuild() {
    let (fx, built) = fixture();
    let old_mtime = fs::metadata(&fx.tar).unwrap().modified().unwrap();
    // Same length, one byte of file data changed; written in place (same inode).
    let mut bytes = fs::read(&fx.tar).unwrap();
    let e = built.index.meta(id(&built.index, "usr/bin/tool"));
    bytes[e.data_off as usize] = b'X';
    fs::write(&fx.tar, &bytes).unwrap();
    // A touched mtime.
    let f = fs::File::options().write(true).open(&fx.tar).unwrap();
    f.set_modified(old_mtime + std::time::Duration::from_secs(1))
        .unwrap();
    drop(f);
    let l = open(&fx.tar, &opts(&fx.cache));
    assert!(l.source.built);
    assert_eq!(
        l.source.rejected.as_deref(),
        Some("the tar changed since it was indexed")
    );
    assert_eq!(read_all(&l, id(&l.index, "usr/bin/tool")), b"X!/bin/sh\n");
}

#[test]
fn same_size_rewrite_with_the_mtime_put_back_makes_it_rebuild() {
    // Like `cp --preserve=timestamps` over the old file: size and mtime as before,
    // only the ctime (which no user can set) tells. The kernel stamps ctime from a
    // clock that ticks every few ms: step past one tick so the rewrite gets a new one.
    let (fx, built) = fixture();
    let old_mtime = fs::metadata(&fx.tar).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut bytes = fs::read(&fx.tar).unwrap();
    let e = built.index.meta(id(&built.index, "usr/bin/tool"));
    bytes[e.data_off as usize] = b'Y';
    fs::write(&fx.tar, &bytes).unwrap();
    let f = fs::File::options().write(true).open(&fx.tar).unwrap();
    f.set_modified(old_mtime).unwrap();
    drop(f);
    assert_eq!(
        fs::metadata(&fx.tar).unwrap().modified().unwrap(),
        old_mtime
    );
    let l = open(&fx.tar, &opts(&fx.cache));
    assert!(l.source.built);
    assert_eq!(read_all(&l, id(&l.index, "usr/bin/tool")), b"Y!/bin/sh\n");
}

#[test]
fn replaced_tar_file_is_indexed_anew() {
    let (fx, _) = fixture();
    let mut t = Tar::new();
    t.file("other", b"o");
    let tmp = util::write_tar(fx.cache.parent().unwrap(), "new.tar", &t.finish());
    fs::rename(&tmp, &fx.tar).unwrap();
    let l = open(&fx.tar, &opts(&fx.cache));
    assert!(l.source.built);
    assert_eq!(listing(&l.index), ["other =1"]);
}

/// Byte ranges of the index file's sections, computed from the index they hold.
fn sections(file_len: u64, idx: &LayerIndex) -> Vec<(&'static str, u64, u64)> {
    let pad8 = |n: u64| n.next_multiple_of(8);
    let warnings = idx.warnings.join("\n").len() as u64;
    let lens = [
        (
            "entries",
            (idx.entries.len() * std::mem::size_of_val(&idx.entries[0])) as u64,
        ),
        ("names", idx.names.len() as u64),
        ("extra", idx.extra.len() as u64),
        ("owners", (idx.owners.len() * 8) as u64),
        (
            "members",
            (idx.members.len() * std::mem::size_of_val(&idx.members[0])) as u64,
        ),
        ("warnings", warnings),
    ];
    let body: u64 = lens.iter().map(|(_, n)| pad8(*n)).sum();
    let mut at = file_len - body;
    let mut out = vec![("header", 0, at)];
    for (name, n) in lens {
        assert!(n > 0, "{name} section is empty; the fixture must fill it");
        out.push((name, at, at + n));
        at += pad8(n);
    }
    assert_eq!(at, file_len);
    out
}

/// Writes `damage(bytes)` over the stored index, opens the tar again and returns
/// why the stored index was rejected (it must be, and the layer must still work).
fn reject_reason(fx: &Fixture, index_file: &Path, damage: impl FnOnce(&mut Vec<u8>)) -> String {
    let good = fs::read(index_file).unwrap();
    let mut bad = good.clone();
    damage(&mut bad);
    fs::write(index_file, &bad).unwrap();
    let l = open(&fx.tar, &opts(&fx.cache));
    assert!(l.source.built, "a damaged index was used");
    assert_eq!(read_all(&l, id(&l.index, "etc/passwd")), b"replaced\n");
    // The rebuilt index was stored again, intact: the next open loads it. (Not
    // byte-compared with `good`: an index built within 50 ms of the tar's last
    // change carries a content checksum that a later rebuild does not.)
    let again = open(&fx.tar, &opts(&fx.cache));
    assert!(
        !again.source.built,
        "the rebuilt index was not stored intact"
    );
    assert_eq!(
        read_all(&again, id(&again.index, "etc/passwd")),
        b"replaced\n"
    );
    l.source.rejected.expect("a reason")
}

#[test]
fn damage_in_any_section_is_detected() {
    let (fx, built) = fixture();
    let f = built.source.file.clone().unwrap();
    let len = fs::metadata(&f).unwrap().len();
    for (name, start, end) in sections(len, &built.index) {
        for at in [start, (start + end) / 2, end - 1] {
            let why = reject_reason(&fx, &f, |b| b[at as usize] ^= 0x20);
            let want = if name == "header" {
                // Magic, version or any other header byte.
                ["bad magic", "index format", "header checksum"]
                    .into_iter()
                    .find(|w| why.contains(w))
                    .unwrap_or("header checksum")
            } else {
                name
            };
            assert!(why.contains(want), "byte {at} ({name}): {why}");
        }
    }
}

#[test]
fn truncated_or_foreign_index_files_are_rebuilt() {
    let (fx, built) = fixture();
    let f = built.source.file.clone().unwrap();
    let why = reject_reason(&fx, &f, |b| b.truncate(b.len() - 8));
    assert!(why.contains("section sizes"), "{why}");
    let why = reject_reason(&fx, &f, |b| b.truncate(100));
    assert!(why.contains("shorter than its header"), "{why}");
    let why = reject_reason(&fx, &f, |b| b.clear());
    assert!(why.contains("shorter than its header"), "{why}");
    let why = reject_reason(&fx, &f, |b| b.extend_from_slice(&[0; 8]));
    assert!(why.contains("section sizes"), "{why}");
    let why = reject_reason(&fx, &f, |b| b[..8].copy_from_slice(b"NOTINDEX"));
    assert!(why.contains("bad magic"), "{why}");
    let why = reject_reason(&fx, &f, |b| b[8..12].copy_from_slice(&999u32.to_le_bytes()));
    assert!(why.contains("index format 999"), "{why}");
    // An index file that is a tar, not an index.
    let why = reject_reason(&fx, &f, |b| *b = rich_tar());
    assert!(why.contains("bad magic"), "{why}");
}

#[test]
fn unwritable_cache_dir_keeps_the_index_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let tar = util::write_tar(dir.path(), "layer.tar", &rich_tar());
    // A cache "directory" below a regular file: not creatable, even by root.
    let blocker = util::write_tar(dir.path(), "file", b"");
    let o = opts(&blocker.join("cache"));
    for _ in 0..2 {
        let l = open(&tar, &o);
        assert!(l.source.built);
        assert_eq!(l.source.file, None);
        assert_eq!(read_all(&l, id(&l.index, "etc/passwd-")), b"root:x:0:0\n");
    }
}

#[test]
fn index_path_taken_by_a_directory_still_works() {
    // The cache dir holds a directory where the index file should be.
    let (fx, built) = fixture();
    let f = built.source.file.clone().unwrap();
    fs::remove_file(&f).unwrap();
    fs::create_dir(&f).unwrap();
    let l = open(&fx.tar, &opts(&fx.cache));
    assert!(l.source.built);
    assert_eq!(l.source.file, None, "could not store over a directory");
    assert!(l.source.rejected.is_some());
}

#[test]
fn rewrite_within_the_same_clock_tick_is_caught_by_the_racy_checksum() {
    // No sleep this time: the fixture's tar was written a moment ago, so its index
    // is "racy" and carries a content checksum. Rewrite it at once, same size,
    // mtime put back: even if the kernel gives the rewrite the same ctime tick,
    // the checksum tells, and the old index is not served.
    let (fx, built) = fixture();
    let old_mtime = fs::metadata(&fx.tar).unwrap().modified().unwrap();
    let mut bytes = fs::read(&fx.tar).unwrap();
    let e = built.index.meta(id(&built.index, "usr/bin/tool"));
    bytes[e.data_off as usize] = b'Z';
    fs::write(&fx.tar, &bytes).unwrap();
    let f = fs::File::options().write(true).open(&fx.tar).unwrap();
    f.set_modified(old_mtime).unwrap();
    drop(f);
    let l = open(&fx.tar, &opts(&fx.cache));
    assert!(l.source.built, "a stale index was served");
    assert_eq!(read_all(&l, id(&l.index, "usr/bin/tool")), b"Z!/bin/sh\n");
}
