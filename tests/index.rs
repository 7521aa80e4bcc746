//! The layer index: tar formats in, tree rules out.
//!
//! Each test writes one rule of `src/tar/index.rs` / `scan.rs` as an archive and
//! the tree it must give. Archives come from the raw writer in `util` (every byte
//! chosen) or from the `tar` crate (what a real writer emits).

mod util;

use proptest::prelude::*;
use unionfs::tar::index::{
    EntryId, LayerIndex, F_DETACHED, F_HARDLINK, F_HIDES_LOWER, F_IMPLICIT, F_OPAQUE, F_SPARSE,
    F_XATTRS,
};
use unionfs::tar::{persist, scan, IndexOptions, TarLayer};
use util::{
    field, find, id, index_tar, listing, meta, nsec, open_bytes, read_all, rec, Hdr, Sparse, Tar,
};

fn names(idx: &LayerIndex, dir: EntryId) -> Vec<Vec<u8>> {
    idx.children(dir)
        .map(|c| idx.name(EntryId(c)).to_vec())
        .collect()
}

// ---------------------------------------------------------------------------
// Formats

#[test]
fn ustar_entries_of_every_kind() {
    let mut t = Tar::new();
    t.entry(
        Hdr::ustar("etc", b'5', 0)
            .mode(0o750)
            .uid(12)
            .gid(34)
            .mtime(1_600_000_000),
        b"",
    )
    .entry(Hdr::ustar("etc/passwd", b'0', 5).mode(0o4711), b"root\n")
    .entry(Hdr::ustar("etc/lnk", b'2', 0).link("../usr/bin"), b"")
    .entry(Hdr::ustar("dev/null", b'3', 0).dev(1, 3), b"")
    .entry(Hdr::ustar("dev/sda", b'4', 0).dev(8, 0), b"")
    .entry(Hdr::ustar("run/fifo", b'6', 0), b"")
    .entry(Hdr::ustar("bin/c", b'7', 3), b"abc")
    // ustar prefix field: prefix "usr/share", name "doc".
    .entry(Hdr::ustar("doc", b'0', 1).prefix("usr/share"), b"d");
    let tar = t.finish();
    let idx = index_tar(&tar);
    assert_eq!(
        listing(&idx),
        [
            "bin/",
            "bin/c =3",
            "dev/",
            "dev/null c",
            "dev/sda b",
            "etc/",
            "etc/lnk -> ../usr/bin",
            "etc/passwd =5",
            "run/",
            "run/fifo p",
            "usr/",
            "usr/share/",
            "usr/share/doc =1",
        ]
    );
    let etc = meta(&idx, "etc");
    assert_eq!(etc.mode, libc::S_IFDIR | 0o750);
    assert_eq!((etc.uid, etc.gid, etc.mtime), (12, 34, 1_600_000_000));
    assert!(!rec(&idx, "etc").has(F_IMPLICIT));
    assert_eq!(rec(&idx, "etc/passwd").mode(), libc::S_IFREG | 0o4711);
    assert_eq!(rec(&idx, "etc/lnk").mode(), libc::S_IFLNK | 0o777);
    assert_eq!(
        meta(&idx, "etc/lnk").size,
        10,
        "symlink size is the target length"
    );
    assert_eq!(idx.extra(id(&idx, "dev/null")).rdev, (1, 3));
    assert_eq!(idx.extra(id(&idx, "dev/sda")).rdev, (8, 0));

    let layer = open_bytes(&tar);
    assert_eq!(read_all(&layer, id(&layer.index, "etc/passwd")), b"root\n");
    assert_eq!(read_all(&layer, id(&layer.index, "bin/c")), b"abc");
    assert_eq!(read_all(&layer, id(&layer.index, "usr/share/doc")), b"d");
}

#[test]
fn tar_crate_gnu_long_names_and_long_link_names() {
    let long_dir = "d".repeat(120);
    let long_file = format!("{long_dir}/{}", "f".repeat(150));
    let long_target = format!("/{}", "t".repeat(200));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o600);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, &long_file, &b"data"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "sym", &long_target).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    b.append_link(&mut h, "hard", &long_file).unwrap();
    let tar = b.into_inner().unwrap();

    let idx = index_tar(&tar);
    assert_eq!(
        listing(&idx),
        [
            format!("{long_dir}/"),
            format!("{long_file} =4"),
            "hard =4 ~link".to_string(),
            format!("sym -> {long_target}"),
        ]
    );
    assert_eq!(rec(&idx, &long_file).mode(), libc::S_IFREG | 0o600);
    assert_eq!(
        idx.inode_of(id(&idx, "hard")),
        id(&idx, &long_file),
        "long link name of a hard link"
    );
    let layer = open_bytes(&tar);
    assert_eq!(read_all(&layer, id(&layer.index, "hard")), b"data");
}

#[test]
fn raw_gnu_long_name_and_link_apply_to_the_next_entry_only() {
    let name = format!("a/{}/{}", "m".repeat(200), "n".repeat(250));
    let target = "x".repeat(300);
    let mut t = Tar::new();
    t.long_name(&name)
        .long_link(&target)
        .entry(Hdr::gnu("truncated", b'2', 0).link("trunc"), b"")
        .entry(Hdr::gnu("short", b'0', 0), b"");
    let idx = index_tar(&t.finish());
    assert_eq!(
        listing(&idx),
        [
            "a/".to_string(),
            format!("a/{}/", "m".repeat(200)),
            format!("{name} -> {target}"),
            "short =0".into()
        ]
    );
}

#[test]
fn gnu_long_name_wins_over_the_header_name_but_not_over_pax_path() {
    // Both extensions before one entry: PAX path is applied last.
    let mut t = Tar::new();
    t.long_name("from-gnu")
        .pax(&[("path", b"from-pax")])
        .file("from-header", b"");
    assert_eq!(listing(&index_tar(&t.finish())), ["from-pax =0"]);
}

#[test]
fn pax_path_linkpath_size_ids_and_mtime() {
    let long = format!("p/{}", "q".repeat(250));
    let mut t = Tar::new();
    t.pax(&[
        ("path", long.as_bytes()),
        ("uid", b"3000000000"),
        ("gid", b"2097152"),
        ("mtime", b"1700000000.123456789"),
        ("size", b"5"),
        ("atime", b"1.5"),
        ("uname", b"ignored"),
    ])
    // Header size says 0; PAX size (5) is what the payload is.
    .entry(Hdr::ustar("short-name", b'0', 0), b"hello")
    .pax(&[("linkpath", "l".repeat(200).as_bytes())])
    .symlink("sym", "short")
    .pax(&[("mtime", b"-1.25")])
    .file("old", b"")
    .pax(&[("mtime", b"-7")])
    .file("older", b"")
    .pax(&[("mtime", b"12.5")])
    .file("frac", b"")
    .file("after", b"!");
    let tar = t.finish();
    let idx = index_tar(&tar);
    let f = meta(&idx, &long);
    assert_eq!((f.uid, f.gid), (3_000_000_000, 2_097_152));
    assert_eq!((f.mtime, nsec(&idx, &long)), (1_700_000_000, 123_456_789));
    assert_eq!(f.size, 5);
    assert_eq!(idx.extra(id(&idx, "sym")).link, "l".repeat(200).as_bytes());
    let old = meta(&idx, "old");
    assert_eq!(
        (old.mtime, nsec(&idx, "old")),
        (-2, 750_000_000),
        "-1.25 s is 2 s before the epoch plus 0.75 s"
    );
    assert_eq!((meta(&idx, "older").mtime, nsec(&idx, "older")), (-7, 0));
    assert_eq!(nsec(&idx, "frac"), 500_000_000);
    // Local records do not leak into the next entry.
    let after = meta(&idx, "after");
    assert_eq!((after.uid, after.mtime, nsec(&idx, "after")), (0, 0, 0));
    let layer = open_bytes(&tar);
    assert_eq!(read_all(&layer, id(&layer.index, &long)), b"hello");
    assert_eq!(read_all(&layer, id(&layer.index, "after")), b"!");
}

#[test]
fn tar_crate_pax_extensions() {
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([
        ("path", "pax/name".as_bytes()),
        ("mtime", b"1.000000001"),
        ("SCHILY.xattr.user.k", b"v"),
    ])
    .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_path("ignored").unwrap();
    h.set_size(2);
    h.set_cksum();
    b.append(&h, &b"hi"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let idx = index_tar(&tar);
    assert_eq!(listing(&idx), ["pax/", "pax/name =2"]);
    let e = meta(&idx, "pax/name");
    assert_eq!((e.mtime, nsec(&idx, "pax/name")), (1, 1));
    assert_eq!(
        idx.extra(id(&idx, "pax/name")).xattrs,
        [(&b"user.k"[..], &b"v"[..])]
    );
}

#[test]
fn pax_global_headers_apply_to_every_following_entry_until_overridden() {
    let mut t = Tar::new();
    t.file("before", b"")
        .pax_global(&[("uid", b"7"), ("mtime", b"100.5")])
        .file("g1", b"")
        .pax(&[("uid", b"8")])
        .file("local", b"")
        .file("g2", b"")
        // A later global header replaces the uid and deletes the mtime (empty value).
        .pax_global(&[("uid", b"9"), ("mtime", b"")])
        .file("g3", b"");
    let idx = index_tar(&t.finish());
    let ids = |p: &str| {
        let e = meta(&idx, p);
        (e.uid, e.mtime, nsec(&idx, p))
    };
    assert_eq!(ids("before"), (0, 0, 0));
    assert_eq!(ids("g1"), (7, 100, 500_000_000));
    assert_eq!(
        ids("local"),
        (8, 100, 500_000_000),
        "local overrides global"
    );
    assert_eq!(ids("g2"), (7, 100, 500_000_000), "local applied once only");
    assert_eq!(ids("g3"), (9, 0, 0));
}

#[test]
fn of_several_pax_headers_in_a_row_the_last_applies() {
    // As GNU tar and Go's archive/tar read them: each 'x' header replaces the
    // pending one, records are not merged across headers.
    let mut t = Tar::new();
    t.pax(&[("path", b"first"), ("uid", b"1"), ("gid", b"5")])
        .pax(&[("uid", b"2"), ("mtime", b"3")])
        .pax(&[("path", b"final")])
        .entry(Hdr::ustar("header-name", b'0', 0).uid(9), b"");
    let idx = index_tar(&t.finish());
    assert_eq!(listing(&idx), ["final =0"]);
    let e = meta(&idx, "final");
    assert_eq!(
        (e.uid, e.gid, e.mtime),
        (9, 0, 0),
        "header values, not earlier PAX"
    );
    // Solaris 'X' headers are PAX headers too.
    let mut t = Tar::new();
    let data = util::pax_records(&[("path", b"solaris"), ("uid", b"4")]);
    t.entry(Hdr::ustar("X", b'X', data.len() as u64), &data)
        .file("name", b"");
    let idx = index_tar(&t.finish());
    assert_eq!(listing(&idx), ["solaris =0"]);
    assert_eq!(meta(&idx, "solaris").uid, 4);
}

#[test]
fn malformed_pax_time_or_owner_keeps_the_header_value_with_a_warning() {
    for (k, v) in [
        ("uid", &b"-1"[..]),
        ("uid", b"4294967296"),
        ("gid", b"12a"),
        ("mtime", b"abc"),
        ("mtime", b"+5"),
        ("mtime", b"-"),
        ("mtime", b""),
        ("mtime", b"99999999999999999999"),
        ("mtime", b"-9223372036854775809"),
    ] {
        let mut t = Tar::new();
        t.pax(&[(k, v)])
            .entry(Hdr::ustar("f", b'0', 0).uid(7).gid(8).mtime(9), b"");
        let tar = t.finish();
        let idx = index_tar(&tar);
        let e = meta(&idx, "f");
        assert_eq!((e.uid, e.gid, e.mtime), (7, 8, 9), "{k}={v:?}");
        assert_eq!(idx.warnings.len(), 1, "{k}={v:?}: {:?}", idx.warnings);
        let w = &idx.warnings[0];
        assert!(w.contains("offset 0") && w.contains(k), "{w}");
    }
}

/// A PAX time is read as GNU tar reads it (`decode_timespec`: strtoumax, then
/// an optional fraction): the leading number counts and what follows it is
/// ignored, so `999xxx9324.43` is 999 s (Go's `pax-bad-mtime-file.tar`);
/// a negative time with more than 9 fraction digits is rounded toward minus
/// infinity. Only junk after the number warns.
#[test]
fn pax_mtime_is_read_as_gnu_tar_reads_it() {
    let cases: &[(&[u8], (i64, u32), bool)] = &[
        (b"999xxx9324.432432444444", (999, 0), true),
        (b"1.5x", (1, 500_000_000), true),
        (b"12 ", (12, 0), true),
        (b"0x10", (0, 0), true),
        (b"-5x", (-5, 0), true),
        (b"1.2.3", (1, 200_000_000), true),
        (b"9\0junk", (9, 0), true),
        (b"7.", (7, 0), false),
        (b"-0.5", (-1, 500_000_000), false),
        (b"8.1234567891", (8, 123_456_789), false),
        (b"-8.1234567890", (-9, 876_543_211), false),
        (b"-8.1234567891", (-9, 876_543_210), false),
        (b"-1.10000000000001", (-2, 899_999_999), false),
        (b"9223372036854775807", (i64::MAX, 0), false),
    ];
    for &(v, want, warns) in cases {
        let mut t = Tar::new();
        t.pax(&[("mtime", v)])
            .entry(Hdr::ustar("f", b'0', 0).mtime(9), b"");
        let idx = index_tar(&t.finish());
        let e = meta(&idx, "f");
        let shown = String::from_utf8_lossy(v);
        assert_eq!((e.mtime, nsec(&idx, "f")), want, "mtime={shown:?}");
        assert_eq!(
            idx.warnings.len(),
            usize::from(warns),
            "mtime={shown:?}: {:?}",
            idx.warnings
        );
        if warns {
            let w = &idx.warnings[0];
            assert!(
                w.contains("offset 0") && w.contains("mtime") && w.contains("GNU tar"),
                "{w}"
            );
        }
    }
}

/// A NUL byte in a PAX path or link target ends it, as GNU tar reads the value
/// as a C string (Go's `pax-nul-path.tar`), with a warning; a name that is
/// empty then names the layer root, as GNU tar's "Substituting `.' for empty
/// member name" does, and a file there is dropped.
#[test]
fn pax_path_and_linkpath_end_at_a_nul() {
    let mut t = Tar::new();
    t.pax(&[("path", b"dir/x\0abc")])
        .file("fallback", b"x")
        .pax(&[("linkpath", b"tgt\0zz")])
        .entry(Hdr::ustar("sl", b'2', 0).link("orig"), b"")
        .pax(&[("linkpath", b"dir/x\0b")])
        .entry(Hdr::ustar("hl", b'1', 0).link("zz"), b"")
        .pax(&[("path", b"\0abc")])
        .file("gone", b"");
    let idx = index_tar(&t.finish());
    assert_eq!(
        listing(&idx),
        ["dir/", "dir/x =1", "hl =1 ~link", "sl -> tgt"]
    );
    assert_eq!(idx.dropped, 1, "{:?}", idx.warnings);
    let nul: Vec<&String> = idx.warnings.iter().filter(|w| w.contains("NUL")).collect();
    assert_eq!(nul.len(), 4, "{:?}", idx.warnings);
    assert!(
        nul[0].contains("offset 0") && nul[0].contains("path"),
        "{}",
        nul[0]
    );
    assert!(
        idx.warnings
            .iter()
            .any(|w| w.contains("names the layer root")),
        "{:?}",
        idx.warnings
    );
}

/// uid/gid 4294967295 is `(uid_t)-1`, which chown(2) takes as "leave
/// unchanged": GNU tar extracting as root (and docker's layer extraction)
/// leaves such a file owned by root. The index records 0 and warns
/// (CPython's `testtar.tar`, member `gnu/regtype-gnu-uid`).
#[test]
fn uid_or_gid_minus_one_is_the_extracting_root() {
    const MINUS_ONE: i64 = 4_294_967_295;
    let mut t = Tar::new();
    t.entry(
        Hdr::gnu("both", b'0', 0)
            .base256(field::UID, MINUS_ONE)
            .base256(field::GID, MINUS_ONE),
        b"",
    )
    .entry(
        Hdr::gnu("gid-only", b'0', 0)
            .uid(7)
            .base256(field::GID, MINUS_ONE),
        b"",
    )
    .pax(&[("uid", b"4294967295"), ("gid", b"8")])
    .file("pax-uid", b"")
    .pax(&[("uid", b"4294967294")])
    .file("just-below", b"");
    let idx = index_tar(&t.finish());
    let ids = |p: &str| (meta(&idx, p).uid, meta(&idx, p).gid);
    assert_eq!(ids("both"), (0, 0));
    assert_eq!(ids("gid-only"), (7, 0));
    assert_eq!(ids("pax-uid"), (0, 8));
    assert_eq!(ids("just-below"), (4_294_967_294, 0));
    assert_eq!(idx.warnings.len(), 3, "{:?}", idx.warnings);
    assert!(
        idx.warnings.iter().all(|w| w.contains("4294967295")),
        "{:?}",
        idx.warnings
    );
}

#[test]
fn v7_headers() {
    let mut t = Tar::new();
    t.entry(Hdr::v7("old/", 0, 0).mode(0o700), b"")
        .entry(Hdr::v7("old/file", 0, 3), b"abc")
        .entry(Hdr::v7("old/reg", b'0', 1), b"r")
        .entry(Hdr::v7("old/sym", b'2', 0).link("file"), b"")
        .entry(Hdr::v7("old/hard", b'1', 0).link("old/file"), b"")
        // v7 has no device fields: the bytes there are not numbers and are ignored.
        .entry(
            Hdr::v7("old/prefixless", b'0', 0).raw(field::PREFIX.0, b"junk"),
            b"",
        );
    let tar = t.finish();
    let idx = index_tar(&tar);
    assert_eq!(
        listing(&idx),
        [
            "old/",
            "old/file =3",
            "old/hard =3 ~link",
            "old/prefixless =0",
            "old/reg =1",
            "old/sym -> file",
        ]
    );
    assert_eq!(rec(&idx, "old").mode(), libc::S_IFDIR | 0o700);
    let layer = open_bytes(&tar);
    assert_eq!(read_all(&layer, id(&layer.index, "old/hard")), b"abc");
}

#[test]
fn typeflag_nul_with_a_trailing_slash_is_a_directory() {
    let mut t = Tar::new();
    t.entry(Hdr::ustar("d/", 0, 0), b"")
        .entry(Hdr::ustar("d/f", 0, 2), b"ok")
        .entry(Hdr::ustar("e/", b'0', 0), b"");
    let idx = index_tar(&t.finish());
    assert_eq!(listing(&idx), ["d/", "d/f =2", "e/"]);
    assert!(!rec(&idx, "d").has(F_IMPLICIT));
}

#[test]
fn base_256_numbers() {
    let data = vec![b'z'; 1000];
    let mut t = Tar::new();
    t.entry(
        Hdr::gnu("big", b'0', 0)
            .base256(field::SIZE, 1000)
            .base256(field::UID, 4_000_000_000)
            .base256(field::GID, 0o77777777 + 1)
            .base256(field::MTIME, -100),
        &data,
    )
    .file("next", b"n");
    let tar = t.finish();
    let idx = index_tar(&tar);
    let e = meta(&idx, "big");
    assert_eq!(
        (e.size, e.uid, e.gid, e.mtime),
        (1000, 4_000_000_000, 0o100000000, -100)
    );
    let layer = open_bytes(&tar);
    assert_eq!(read_all(&layer, id(&layer.index, "big")), data);
    assert_eq!(
        read_all(&layer, id(&layer.index, "next")),
        b"n",
        "payload skipped right"
    );
}

#[test]
fn xattrs_from_schily_records() {
    let cap = b"\x01\x00\x00\x02\x00\x20\x00\x00\n=\0";
    let mut t = Tar::new();
    t.pax(&[
        ("SCHILY.xattr.user.mime", b"text/plain"),
        ("SCHILY.xattr.security.capability", cap),
        ("SCHILY.xattr.user.mime", b"text/html"),
        ("SCHILY.xattr.user.empty", b""),
    ])
    .file("f", b"")
    .file("plain", b"");
    let idx = index_tar(&t.finish());
    let f = id(&idx, "f");
    assert!(idx.entry(f).has(F_XATTRS));
    let mut x = idx.extra(f).xattrs;
    x.sort();
    assert_eq!(
        x,
        [
            (&b"security.capability"[..], &cap[..]),
            (b"user.empty", b""),
            (b"user.mime", b"text/html"),
        ],
        "binary values kept, later value of a name wins"
    );
    assert!(!rec(&idx, "plain").has(F_XATTRS));
    assert!(idx.extra(id(&idx, "plain")).xattrs.is_empty());
}

// ---------------------------------------------------------------------------
// Sparse files

fn check_sparse(sp: &Sparse) {
    let variants = [
        ("GNU old S", sp.gnu_old("dir/sparse")),
        ("PAX 0.0", sp.pax_0_0("dir/sparse")),
        ("PAX 0.1", sp.pax_0_1("dir/sparse")),
        ("PAX 1.0", sp.pax_1_0("dir/sparse")),
    ];
    let want = sp.logical();
    for (what, members) in variants {
        let tar = Tar { buf: members }.file("after", b"after").finish();
        let layer = open_bytes(&tar);
        let idx = &layer.index;
        assert_eq!(
            listing(idx),
            [
                "after =5".to_string(),
                "dir/".into(),
                format!("dir/sparse ={}", sp.real)
            ],
            "{what}"
        );
        let f = id(idx, "dir/sparse");
        assert!(idx.entry(f).has(F_SPARSE), "{what}");
        assert_eq!(idx.extra(f).sparse, sp.map(), "{what}");
        let got = read_all(&layer, f);
        assert_eq!(got.len(), want.len(), "{what}");
        assert!(got == want, "{what}: content differs");
        // Reads that start in a hole and end in data, and past the end.
        for off in [
            0,
            1,
            sp.real / 3,
            sp.real.saturating_sub(1),
            sp.real,
            sp.real + 10,
        ] {
            let mut buf = [0xaau8; 100];
            let n = layer.read(f, off, &mut buf).unwrap();
            let end = (off as usize + n).min(want.len());
            assert_eq!(
                &buf[..n],
                &want[(off as usize).min(end)..end],
                "{what} @{off}"
            );
        }
        assert_eq!(read_all(&layer, id(idx, "after")), b"after", "{what}");
    }
}

#[test]
fn sparse_files_in_all_four_encodings() {
    // Leading hole, chunks of odd sizes, trailing hole.
    check_sparse(&Sparse::new(
        10_000,
        &[(700, 10), (1024, 512), (4000, 1), (9000, 600)],
    ));
}

#[test]
fn sparse_file_with_two_gnu_extension_blocks() {
    // 4 entries in the header + 21 + 5 in two extension blocks.
    let layout: Vec<(u64, usize)> = (0..30).map(|i| (i * 1000 + 100, 7 + i as usize)).collect();
    check_sparse(&Sparse::new(31_000, &layout));
}

#[test]
fn sparse_file_data_at_both_ends_and_all_hole() {
    check_sparse(&Sparse::new(2048, &[(0, 100), (2000, 48)]));
    // An all-hole file: GNU tar writes one empty chunk at the end.
    check_sparse(&Sparse::new(5000, &[(5000, 0)]));
    // GNU tar writes a final zero-length chunk at the real size.
    check_sparse(&Sparse::new(3000, &[(10, 5), (3000, 0)]));
}

#[test]
fn gnu_tar_sparse_archives() {
    // Written by GNU tar from a file with real holes: tests/fixtures/gen-gnu-sparse.sh.
    let mut want = vec![0u8; 200_000];
    want[10_000..15_000].fill(b'A');
    want[199_996..].copy_from_slice(b"tail");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for name in [
        "gnu-sparse-oldgnu.tar",
        "gnu-sparse-pax-0.0.tar",
        "gnu-sparse-pax-0.1.tar",
        "gnu-sparse-pax-1.0.tar",
    ] {
        let layer =
            unionfs::tar::TarLayer::open(&dir.join(name), &unionfs::tar::IndexOptions::default())
                .unwrap_or_else(|e| panic!("{e}"));
        let idx = &layer.index;
        assert_eq!(listing(idx), ["after =6", "sparse =200000"], "{name}");
        let s = id(idx, "sparse");
        assert!(idx.entry(s).has(F_SPARSE), "{name}: holes were found");
        assert!(read_all(&layer, s) == want, "{name}: content differs");
        assert_eq!(read_all(&layer, id(idx, "after")), b"after\n", "{name}");
    }
}

// ---------------------------------------------------------------------------
// Hard links

#[test]
fn hard_links_share_an_inode_and_count_links() {
    let mut t = Tar::new();
    t.file("a", b"one")
        .hardlink("b", "a")
        .hardlink("./dir/c", "/b") // a link to a hard link, names normalised
        .file("z", b"zzz");
    let tar = t.finish();
    let idx = index_tar(&tar);
    let a = id(&idx, "a");
    for p in ["b", "dir/c"] {
        let l = id(&idx, p);
        assert!(idx.entry(l).has(F_HARDLINK), "{p}");
        assert_eq!(idx.inode_of(l), a, "{p}");
    }
    assert_eq!(idx.inode_of(a), a);
    assert_eq!(idx.meta(a).nlink, 3, "nlink of a");
    assert_eq!(meta(&idx, "z").nlink, 1, "nlink of z");
    let layer = open_bytes(&tar);
    assert_eq!(read_all(&layer, id(&layer.index, "dir/c")), b"one");
}

#[test]
fn hard_link_keeps_the_old_content_when_its_target_path_is_replaced() {
    let mut t = Tar::new();
    t.file("a", b"old content")
        .hardlink("b", "a")
        .file("a", b"new")
        .hardlink("c", "a");
    let tar = t.finish();
    let layer = open_bytes(&tar);
    let idx = &layer.index;
    let (a, b, c) = (id(idx, "a"), id(idx, "b"), id(idx, "c"));
    assert_eq!(read_all(&layer, a), b"new");
    assert_eq!(read_all(&layer, b), b"old content");
    assert_eq!(read_all(&layer, c), b"new");
    assert_ne!(idx.inode_of(b), a);
    assert_eq!(idx.inode_of(c), a);
    assert_eq!(idx.meta(a).nlink, 2, "a and c");
    assert_eq!(
        idx.meta(idx.inode_of(b)).nlink,
        1,
        "only b names the old inode"
    );
    assert!(idx.entry(idx.inode_of(b)).has(F_DETACHED));
    assert_eq!(listing(idx), ["a =3", "b =11 ~link", "c =3 ~link"]);
}

#[test]
fn hard_link_target_inside_a_replaced_directory() {
    // d/f's directory is replaced by a file; the link must still read d/f's data,
    // and the index must stay well formed (every accessor, and persistence).
    let mut t = Tar::new();
    t.file("d/f", b"inner")
        .hardlink("l", "d/f")
        .file("d", b"now a file");
    let tar = t.finish();
    let layer = open_bytes(&tar);
    let idx = &layer.index;
    assert_eq!(listing(idx), ["d =10", "l =5 ~link"]);
    assert_eq!(read_all(&layer, id(idx, "l")), b"inner");
    persist::validate(idx).expect("index validates");
    for i in 0..idx.entries.len() as u32 {
        let _ = idx.path_of(EntryId(i));
    }
}

#[test]
fn bad_hard_links_are_dropped_with_a_warning() {
    let mut t = Tar::new();
    t.hardlink("early", "later")
        .file("later", b"x")
        .hardlink("missing", "nope")
        .dir("d")
        .hardlink("to-dir", "d")
        .hardlink("escape", "../later")
        .hardlink("self", "self");
    let idx = index_tar(&t.finish());
    assert_eq!(listing(&idx), ["d/", "later =1"]);
    assert_eq!(idx.dropped, 5, "{:#?}", idx.warnings);
    for name in ["early", "missing", "to-dir", "escape", "self"] {
        assert!(
            idx.warnings
                .iter()
                .any(|w| w.contains(&format!("\"{name}\""))),
            "no warning names {name}: {:#?}",
            idx.warnings
        );
    }
}

// ---------------------------------------------------------------------------
// Duplicates and parents

#[test]
fn later_duplicate_wins() {
    let mut t = Tar::new();
    t.file("f", b"first").file("f", b"second!");
    let tar = t.finish();
    let layer = open_bytes(&tar);
    assert_eq!(listing(&layer.index), ["f =7"]);
    assert_eq!(read_all(&layer, id(&layer.index, "f")), b"second!");
}

#[test]
fn directory_over_directory_keeps_children_and_takes_new_metadata() {
    let mut t = Tar::new();
    t.entry(Hdr::ustar("d", b'5', 0).mode(0o700).uid(1), b"")
        .file("d/keep", b"k")
        .entry(Hdr::ustar("d/", b'5', 0).mode(0o751).uid(2).mtime(99), b"")
        .file("d/new", b"n");
    let idx = index_tar(&t.finish());
    assert_eq!(listing(&idx), ["d/", "d/keep =1", "d/new =1"]);
    let d = meta(&idx, "d");
    assert_eq!((d.mode, d.uid, d.mtime), (libc::S_IFDIR | 0o751, 2, 99));
}

#[test]
fn file_over_directory_removes_the_subtree() {
    let mut t = Tar::new();
    t.file("d/sub/x", b"x").file("d/y", b"y").file("d", b"file");
    let idx = index_tar(&t.finish());
    assert_eq!(listing(&idx), ["d =4"]);
    assert!(idx.lookup_path(b"d/y").is_none());
}

#[test]
fn directory_over_file_replaces_it() {
    let mut t = Tar::new();
    t.file("d", b"file").dir("d").file("d/x", b"x");
    let idx = index_tar(&t.finish());
    // Not flagged: the replacement stays inside the layer (see tests/stack.rs).
    assert_eq!(listing(&idx), ["d/", "d/x =1"]);
}

#[test]
fn missing_parents_become_implicit_root_owned_0755_directories() {
    let mut t = Tar::new();
    t.entry(Hdr::ustar("a/b/c", b'0', 0).uid(5).mtime(77), b"");
    let idx = index_tar(&t.finish());
    assert_eq!(listing(&idx), ["a/", "a/b/", "a/b/c =0"]);
    for p in ["a", "a/b"] {
        let e = meta(&idx, p);
        assert_eq!(e.mode, libc::S_IFDIR | 0o755, "{p}");
        assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 0), "{p}");
        assert!(rec(&idx, p).has(F_IMPLICIT), "{p}");
    }
    // A later explicit entry makes it real.
    let mut t = Tar::new();
    t.file("a/x", b"")
        .entry(Hdr::ustar("a", b'5', 0).uid(3), b"");
    let idx = index_tar(&t.finish());
    assert!(!rec(&idx, "a").has(F_IMPLICIT));
    assert_eq!(meta(&idx, "a").uid, 3);
}

#[test]
fn root_entry_sets_root_metadata() {
    let mut t = Tar::new();
    t.entry(Hdr::ustar("./", b'5', 0).mode(0o700).uid(9), b"")
        .file("./f", b"")
        .entry(Hdr::ustar(".", b'0', 0), b"");
    let idx = index_tar(&t.finish());
    let root = idx.meta(EntryId::ROOT);
    assert_eq!((root.mode, root.uid), (libc::S_IFDIR | 0o700, 9));
    assert_eq!(listing(&idx), ["f =0"]);
    assert_eq!(idx.dropped, 1, "a non-directory named like the root");
}

// ---------------------------------------------------------------------------
// Whiteouts

#[test]
fn whiteouts_are_recorded_as_whiteout_entries() {
    let mut t = Tar::new();
    t.file("etc/.wh.passwd", b"").file(".wh.usr", b"");
    let idx = index_tar(&t.finish());
    assert_eq!(listing(&idx), ["etc/", "-etc/passwd", "-usr"]);
    let w = find(&idx, b"etc/passwd").unwrap();
    assert!(idx.entry(w).is_whiteout());
    assert_eq!(idx.meta(w).size, 0);
    assert_eq!(
        idx.lookup_path(b"etc/passwd"),
        None,
        "lookup_path hides whiteouts"
    );
    assert_eq!(
        idx.child(EntryId::ROOT, b".wh.usr"),
        None,
        "no raw marker name"
    );
}

#[test]
fn whiteout_and_same_name_in_one_layer_keeps_the_name_and_hides_lower() {
    for order in [["x", ".wh.x"], [".wh.x", "x"]] {
        let mut t = Tar::new();
        for n in order {
            t.file(format!("d/{n}"), n.as_bytes());
        }
        let idx = index_tar(&t.finish());
        assert_eq!(listing(&idx), ["d/", "d/x =1 hides"], "order {order:?}");
        assert!(rec(&idx, "d/x").has(F_HIDES_LOWER));
    }
    // A whiteout of a directory that the same layer then fills.
    for order in [[".wh.d", "d/x"], ["d/x", ".wh.d"]] {
        let mut t = Tar::new();
        for n in order {
            t.file(n, b"");
        }
        let idx = index_tar(&t.finish());
        assert_eq!(listing(&idx), ["d/ hides", "d/x =0"], "order {order:?}");
    }
    // Directory over directory keeps the flag.
    let mut t = Tar::new();
    t.file(".wh.d", b"").dir("d").dir("d");
    assert_eq!(listing(&index_tar(&t.finish())), ["d/ hides"]);
    // So does any later replacement of the name in the same layer.
    for order in [
        &[".wh.x", "x", "x"][..],
        &["x", ".wh.x", "x"],
        &[".wh.x", "x/", "x"],
        &["x", ".wh.x", "x/"],
    ] {
        let mut t = Tar::new();
        for n in order {
            match n.strip_suffix('/') {
                Some(d) => t.dir(d),
                None => t.file(n, b""),
            };
        }
        let idx = index_tar(&t.finish());
        let l = listing(&idx);
        assert!(
            l.len() == 1 && l[0].ends_with(" hides"),
            "order {order:?}: {l:?}"
        );
    }
}

#[test]
fn opaque_marker_flags_its_directory_wherever_it_is() {
    let orders: [&[&str]; 4] = [
        &["d/", "d/.wh..wh..opq", "d/a"],
        &["d/.wh..wh..opq", "d/", "d/a"],
        &["d/", "d/a", "d/.wh..wh..opq"],
        &["d/a", "d/.wh..wh..opq"],
    ];
    for order in orders {
        let mut t = Tar::new();
        for n in order {
            if n.ends_with('/') {
                t.dir(n);
            } else {
                t.file(n, b"");
            }
        }
        let idx = index_tar(&t.finish());
        assert_eq!(listing(&idx), ["d/ opaque", "d/a =0"], "order {order:?}");
        assert!(rec(&idx, "d").has(F_OPAQUE));
    }
    let mut t = Tar::new();
    t.file(".wh..wh..opq", b"").file("x", b"");
    let idx = index_tar(&t.finish());
    assert!(idx.entry(EntryId::ROOT).has(F_OPAQUE), "root opaque");
    assert_eq!(listing(&idx), ["x =0"]);
}

#[test]
fn aufs_metadata_names_are_ignored() {
    let mut t = Tar::new();
    t.file(".wh..wh.plnk", b"")
        .file(".wh..wh.aufs", b"")
        .file("d/.wh..wh.orph", b"")
        .file(".wh..wh.plnk/1.2", b"")
        .file("keep", b"");
    let idx = index_tar(&t.finish());
    assert_eq!(listing(&idx), ["d/", "keep =0"]);
}

// ---------------------------------------------------------------------------
// Names

#[test]
fn non_utf8_names_are_kept_as_bytes() {
    let name: &[u8] = b"caf\xe9/\xff\xfe";
    let mut t = Tar::new();
    t.file(name, b"x").symlink("s", b"\x80target");
    let idx = index_tar(&t.finish());
    let dir = idx.child(EntryId::ROOT, b"caf\xe9").expect("dir");
    let f = idx.child(dir, b"\xff\xfe").expect("file");
    assert_eq!(idx.path_of(f), name);
    assert_eq!(idx.lookup_path(name), Some(f));
    assert_eq!(idx.extra(id(&idx, "s")).link, b"\x80target");
}

#[test]
fn dot_slash_leading_slash_and_empty_components_are_stripped() {
    let mut t = Tar::new();
    t.file("./a", b"")
        .file("/b", b"")
        .file(".//c//./d", b"")
        .file("///e/./f/", b"")
        .dir("./")
        .dir(".");
    let idx = index_tar(&t.finish());
    assert_eq!(
        listing(&idx),
        ["a =0", "b =0", "c/", "c/d =0", "e/", "e/f/"]
    );
    assert_eq!(idx.dropped, 0);
}

#[test]
fn names_with_dot_dot_are_dropped_with_a_warning() {
    let mut t = Tar::new();
    t.file("../evil", b"")
        .file("a/../../b", b"")
        .file("a/..", b"")
        .file("ok/..x/..y", b"");
    let idx = index_tar(&t.finish());
    assert_eq!(listing(&idx), ["ok/", "ok/..x/", "ok/..x/..y =0"]);
    assert_eq!(idx.dropped, 3);
    assert_eq!(idx.warnings.len(), 3);
    assert!(
        idx.warnings.iter().all(|w| w.contains("'..'")),
        "{:#?}",
        idx.warnings
    );
    assert!(idx.warnings[0].contains("offset 0"), "{}", idx.warnings[0]);
    assert!(idx.warnings[0].contains("../evil"), "{}", idx.warnings[0]);
}

#[test]
fn symlink_parents_are_never_followed() {
    let mut t = Tar::new();
    t.symlink("lnk", "/etc").file("lnk/passwd", b"pwned");
    let idx = index_tar(&t.finish());
    assert_eq!(listing(&idx), ["lnk -> /etc"]);
    assert_eq!(idx.dropped, 1);
    assert!(idx.warnings[0].contains("symlink"), "{}", idx.warnings[0]);
}

#[test]
fn file_parents_drop_the_child() {
    let mut t = Tar::new();
    t.file("f", b"")
        .file("f/x", b"")
        .hardlink("h", "f")
        .file("h/y", b"");
    let idx = index_tar(&t.finish());
    assert_eq!(listing(&idx), ["f =0", "h =0 ~link"]);
    assert_eq!(idx.dropped, 2);
    assert!(
        idx.warnings[0].contains("not a directory"),
        "{}",
        idx.warnings[0]
    );
}

#[test]
fn warnings_are_capped() {
    let mut t = Tar::new();
    for i in 0..150 {
        t.file(format!("../{i}"), b"");
    }
    let idx = index_tar(&t.finish());
    assert_eq!(idx.dropped, 150);
    assert_eq!(idx.warnings.len(), unionfs::tar::index::MAX_WARNINGS);
}

#[test]
fn unknown_typeflag_is_a_file_with_a_warning() {
    let mut t = Tar::new();
    t.entry(Hdr::ustar("odd", b'Z', 2), b"zz");
    let tar = t.finish();
    let s = scan::scan(&tar).unwrap();
    assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
    let idx = index_tar(&tar);
    assert_eq!(listing(&idx), ["odd =2"]);
}

#[test]
fn children_are_sorted_by_bytes_and_child_finds_each() {
    let names_in: [&[u8]; 10] = [
        b"b",
        b"a",
        b"B",
        b"a.b",
        b"a-b",
        b"aa",
        b"\xc3\xa9",
        b"\x7f",
        b"_",
        b"a0",
    ];
    let mut t = Tar::new();
    for n in names_in {
        t.file([b"d/".as_slice(), n].concat(), b"");
    }
    let idx = index_tar(&t.finish());
    let d = id(&idx, "d");
    let mut want: Vec<Vec<u8>> = names_in.iter().map(|n| n.to_vec()).collect();
    want.sort();
    assert_eq!(names(&idx, d), want);
    for n in names_in {
        let c = idx.child(d, n).expect("found");
        assert_eq!(idx.name(c), n);
    }
    assert_eq!(idx.child(d, b"ab"), None);
    assert_eq!(idx.child(d, b""), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the names and their order in the tar, every directory's children
    /// are strictly increasing by bytes and `child` finds each of them.
    #[test]
    fn child_finds_every_child(paths in prop::collection::vec(
        prop::collection::vec(prop::sample::select(vec![
            &b"a"[..], b"b", b"ab", b"\xff", b"A", b"a b", b"z.z", b"."
        ]), 1..4),
        1..40,
    )) {
        let mut t = Tar::new();
        for p in &paths {
            let path = p.join(&b'/');
            t.entry(Hdr::ustar(&path, b'5', 0), b"");
        }
        let idx = index_tar(&t.finish());
        let mut todo = vec![EntryId::ROOT];
        let mut seen = 0;
        while let Some(d) = todo.pop() {
            let kids = names(&idx, d);
            prop_assert!(kids.windows(2).all(|w| w[0] < w[1]), "{kids:?}");
            for (i, n) in kids.iter().enumerate() {
                let c = idx.child(d, n);
                prop_assert_eq!(c, Some(EntryId(idx.children(d).start + i as u32)));
                todo.push(c.unwrap());
                seen += 1;
            }
        }
        prop_assert_eq!(seen + 1, idx.entries.len());
    }
}

#[test]
fn name_components_longer_than_name_max_are_dropped() {
    // Linux cannot name them (NAME_MAX is 255 bytes); GNU tar fails on such a
    // member and goes on. Longer than 65535 bytes they would not even fit the
    // index's u16 name length, and two of them with a common prefix would sort
    // and look up wrong.
    let ok = "o".repeat(255);
    let long = "x".repeat(256);
    let huge_a = "h".repeat(70_000);
    let huge_b = format!("{huge_a}b");
    let mut t = Tar::new();
    t.pax(&[("path", ok.as_bytes())])
        .file("x", b"")
        .pax(&[("path", format!("d/{long}/f").as_bytes())])
        .file("x", b"")
        .pax(&[("path", huge_a.as_bytes())])
        .file("x", b"")
        .pax(&[("path", huge_b.as_bytes())])
        .file("x", b"")
        .pax(&[("linkpath", long.as_bytes())])
        .symlink("s", "");
    let idx = index_tar(&t.finish());
    assert_eq!(
        listing(&idx),
        [format!("{ok} =0"), format!("s -> {long}")],
        "a long symlink target is fine"
    );
    assert_eq!(idx.dropped, 3);
    assert!(
        idx.warnings.iter().all(|w| w.contains("255")),
        "{:#?}",
        idx.warnings
    );
}

#[test]
fn a_built_index_keeps_the_member_table_only_when_asked() {
    // A mount does not need the members (only `verify` does): a freshly built
    // index drops them, as a load from the cache never reads them.
    let tar = Tar::new().file("a", b"x").file("b", b"y").finish();
    let dir = tempfile::tempdir().unwrap();
    let p = util::write_tar(dir.path(), "layer.tar", &tar);
    let without = TarLayer::open(&p, &IndexOptions::default()).unwrap();
    assert!(without.index.members.is_empty());
    assert_eq!(read_all(&without, id(&without.index, "b")), b"y");
    let opts = IndexOptions {
        members: true,
        ..IndexOptions::default()
    };
    let with = TarLayer::open(&p, &opts).unwrap();
    assert!(with.index.members.len() >= 2);
}
