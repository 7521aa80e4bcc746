//! Bad layer files: each must be refused with a message that names the file and,
//! for a malformed archive, the offset of the header at fault — never a panic,
//! never a half-built index.
//!
//! Everything goes through `TarLayer::open`, so the asserted text is the `Error`
//! Display a user sees.

mod util;

use std::path::PathBuf;

use unionfs::tar::{IndexOptions, TarLayer};
use unionfs::Error;
use util::{field, pax_records, Hdr, Tar};

/// Opens `bytes` as a layer file; returns the error and the file's path.
fn open_err(bytes: &[u8]) -> (Error, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = util::write_tar(dir.path(), "layer.tar", bytes);
    let err = match TarLayer::open(&p, &IndexOptions::default()) {
        Ok(l) => panic!("opened: {:#?}", util::listing(&l.index)),
        Err(e) => e,
    };
    (err, p.display().to_string())
}

/// Asserts the archive is refused as corrupt at `offset` with a reason containing `what`.
#[track_caller]
fn assert_corrupt(bytes: &[u8], offset: u64, what: &str) {
    let (err, path) = open_err(bytes);
    let msg = err.to_string();
    assert!(
        matches!(err, Error::CorruptTar { offset: o, .. } if o == offset),
        "want CorruptTar at {offset}, got {err:?}"
    );
    assert!(msg.starts_with(&format!("{path}: ")), "{msg}");
    assert!(msg.contains(&format!("offset {offset}")), "{msg}");
    assert!(msg.contains(what), "want {what:?} in: {msg}");
}

/// Asserts the file is refused as not a tar with a reason containing each of `what`.
#[track_caller]
fn assert_not_tar(bytes: &[u8], what: &[&str]) {
    let (err, path) = open_err(bytes);
    let msg = err.to_string();
    assert!(matches!(err, Error::NotATar { .. }), "{err:?}");
    assert!(msg.starts_with(&format!("{path}: ")), "{msg}");
    for w in what {
        assert!(msg.contains(w), "want {w:?} in: {msg}");
    }
}

fn two_files() -> Vec<u8> {
    let mut t = Tar::new();
    t.file("a", &[b'a'; 1000]).file("b", b"b");
    t.finish()
}

#[test]
fn truncated_in_a_header() {
    let tar = two_files();
    // a: header 0, data 512..1512, padded to 1536; b's header at 1536.
    assert_corrupt(&tar[..1536 + 100], 1536, "truncated");
    assert_corrupt(&tar[..1536 + 100], 1536, "only 100 remain");
}

#[test]
fn truncated_in_a_payload() {
    let tar = two_files();
    assert_corrupt(
        &tar[..512 + 600],
        0,
        "declares 1000 bytes of data but only 600 remain",
    );
}

#[test]
fn archive_stopping_after_a_complete_member_is_accepted() {
    // No end-of-archive blocks, not even padding after the last payload: GNU tar
    // reads it (with "Unexpected EOF"), and so do we, with a warning.
    let tar = two_files();
    let dir = tempfile::tempdir().unwrap();
    for cut in [1536 + 512 + 1, 1536 + 1024] {
        let p = util::write_tar(dir.path(), "l.tar", &tar[..cut]);
        let l = TarLayer::open(&p, &IndexOptions::default()).unwrap();
        assert_eq!(util::listing(&l.index), ["a =1000", "b =1"]);
        assert_eq!(util::read_all(&l, util::id(&l.index, "b")), b"b");
        // ... but says so: a file cut after a whole member looks just like it.
        assert!(
            l.index
                .warnings
                .iter()
                .any(|w| w.contains("without its end-of-archive blocks")),
            "{:?}",
            l.index.warnings
        );
    }
    let p = util::write_tar(dir.path(), "whole.tar", &tar);
    let l = TarLayer::open(&p, &IndexOptions::default()).unwrap();
    assert!(l.index.warnings.is_empty(), "{:?}", l.index.warnings);
}

#[test]
fn bad_checksum_at_offset_zero_is_not_a_tar() {
    let mut tar = two_files();
    tar[0] ^= 1;
    assert_not_tar(&tar, &["not a tar archive", "offset 0", "checksum"]);
    // A text file longer than a block.
    assert_not_tar(
        &"hello world\n".repeat(100).into_bytes(),
        &["not a tar archive"],
    );
}

#[test]
fn bad_checksum_in_the_middle_names_that_entry() {
    let mut tar = two_files();
    tar[1536 + 1] ^= 1; // b's name
    assert_corrupt(&tar, 1536, "checksum mismatch");
    // A checksum field that is not a number at all.
    let mut t = Tar::new();
    t.file("a", b"").entry(
        Hdr::ustar("b", b'0', 0)
            .keep_checksum()
            .raw(field::CHKSUM.0, b"zzzzzz\0 "),
        b"",
    );
    assert_corrupt(&t.finish(), 512, "checksum");
}

/// gzip and zstd layers are served (tests/compressed.rs); bzip2 and xz are
/// no OCI layer types: refused, with the command that decompresses them.
#[test]
fn unsupported_compressions_say_how_to_decompress() {
    assert_not_tar(
        b"BZh91AY&SY",
        &["bzip2-compressed", "bzip2 -dc", "layer.tar"],
    );
    assert_not_tar(b"\xfd7zXZ\0\0\0", &["xz-compressed", "xz -dc", "layer.tar"]);
}

#[test]
fn empty_file() {
    assert_not_tar(b"", &["empty"]);
}

#[test]
fn tiny_file() {
    let (err, path) = open_err(b"hi\n");
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("{path}: ")), "{msg}");
    assert!(matches!(err, Error::NotATar { .. }), "{err:?}");
    assert!(
        msg.contains("3 bytes, shorter than one 512-byte tar header"),
        "{msg}"
    );
}

#[test]
fn directory_given_as_a_layer() {
    let dir = tempfile::tempdir().unwrap();
    let err = TarLayer::open(dir.path(), &IndexOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::NotATar { .. }), "{err:?}");
    assert!(msg.starts_with(&dir.path().display().to_string()), "{msg}");
    assert!(msg.contains("is a directory"), "{msg}");
    assert!(msg.contains("tar -C"), "says how to make a tar: {msg}");
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let p: PathBuf = dir.path().join("nope.tar");
    let err = TarLayer::open(&p, &IndexOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(msg.starts_with(&p.display().to_string()), "{msg}");
    assert!(msg.contains("No such file"), "{msg}");
    assert_eq!(err.errno(), libc::ENOENT);
}

/// A tar whose second member is a PAX header with this raw payload.
fn with_pax_payload(payload: &[u8]) -> Vec<u8> {
    let mut t = Tar::new();
    t.file("ok", b"")
        .entry(
            Hdr::ustar("PaxHeaders/x", b'x', payload.len() as u64),
            payload,
        )
        .file("x", b"");
    t.finish()
}

#[test]
fn malformed_pax_records() {
    let cases: &[(&[u8], &str)] = &[
        (b"99999999999999999999 a=b\n", "PAX record at byte 0"),
        (b"999999 a=b\n", "out of range"),
        (b"-5 a=b\n", "bad length"),
        (b"7 abcd\n", "no '='"),
        (b"8 a=bcdX", "not newline-terminated"),
        (b"5 =x\n", "empty keyword"),
        (b"abc\n", "no length field"),
        (b"6 a=b\n3 x", "PAX record at byte 6"),
        (b"2 \n", "out of range"),
    ];
    for (payload, what) in cases {
        assert_corrupt(&with_pax_payload(payload), 512, what);
    }
}

#[test]
fn bad_pax_values_that_move_data_or_names_name_the_record() {
    // (A bad mtime/uid/gid only loses that value, and a NUL ends a path as in
    // GNU tar: tests/index.rs.)
    let cases: &[(&str, &[u8], &str)] = &[
        ("size", b"", "PAX record size: bad decimal"),
        ("size", b"-5", "bad decimal"),
        ("SCHILY.xattr.", b"v", "bad xattr name"),
        ("GNU.sparse.map", b"1,2,3", "odd number"),
        ("GNU.sparse.major", b"one", "bad decimal"),
    ];
    for (k, v, what) in cases {
        let tar = with_pax_payload(&pax_records(&[(k, v)]));
        assert_corrupt(&tar, 512, what);
    }
}

#[test]
fn negative_size() {
    let mut t = Tar::new();
    t.file("a", b"")
        .entry(Hdr::gnu("neg", b'0', 0).base256(field::SIZE, -1), b"");
    assert_corrupt(&t.finish(), 512, "negative size -1");
}

#[test]
fn numbers_that_are_not_numbers() {
    let mut t = Tar::new();
    t.entry(Hdr::ustar("a", b'0', 0).put(field::UID, b"12x4"), b"");
    assert_corrupt(&t.finish(), 0, "uid: invalid octal");
    let mut t = Tar::new();
    t.file("a", b"")
        .entry(Hdr::ustar("b", b'0', 0).put(field::SIZE, b"9"), b"");
    assert_corrupt(&t.finish(), 512, "size: invalid octal");
    let mut t = Tar::new();
    t.entry(
        Hdr::gnu("big", b'0', 0).raw(
            field::SIZE.0,
            &[
                0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
        ),
        b"",
    );
    assert_corrupt(&t.finish(), 0, "overflows");
    let mut t = Tar::new();
    t.entry(Hdr::ustar("dev", b'3', 0).put(field::DEVMAJOR, b"x"), b"");
    assert_corrupt(&t.finish(), 0, "devmajor");
}

#[test]
fn extension_header_with_no_entry_after_it_is_ignored_with_a_warning() {
    let open = |bytes: &[u8]| {
        let dir = tempfile::tempdir().unwrap();
        let p = util::write_tar(dir.path(), "layer.tar", bytes);
        TarLayer::open(&p, &IndexOptions::default()).unwrap_or_else(|e| panic!("{e}"))
    };
    // Followed by the end-of-archive blocks.
    let mut t = Tar::new();
    t.file("a", b"").pax(&[("path", b"p")]);
    let l = open(&t.finish());
    assert_eq!(util::listing(&l.index), ["a =0"]);
    assert_eq!(
        l.index.warnings,
        ["offset 512: extension header with no entry after it (ignored)"]
    );
    // Followed by nothing at all.
    let mut t = Tar::new();
    t.file("a", b"").long_name("n");
    let l = open(&t.buf);
    assert_eq!(util::listing(&l.index), ["a =0"]);
    assert!(
        l.index.warnings[0].starts_with("offset 512: "),
        "{:?}",
        l.index.warnings
    );
    // Only an extension header.
    let mut t = Tar::new();
    t.long_link("target");
    let l = open(&t.finish());
    assert!(util::listing(&l.index).is_empty());
    assert_eq!(l.index.warnings.len(), 1);
}

#[test]
fn extension_header_cut_short() {
    let mut t = Tar::new();
    t.file("a", b"")
        .pax(&[("path", "p".repeat(600).as_bytes())]);
    let tar = t.buf.clone();
    assert_corrupt(
        &tar[..512 + 512 + 100],
        512,
        "declares 610 bytes of data but only 100 remain",
    );
}

#[test]
fn pax_size_bigger_than_the_file() {
    let mut t = Tar::new();
    t.file("a", b"")
        .pax(&[("size", b"1000000")])
        .file("big", b"tiny");
    assert_corrupt(&t.finish(), 1536, "declares 1000000 bytes");
}

#[test]
fn extension_header_over_the_limit() {
    let mut t = Tar::new();
    t.entry(Hdr::ustar("PaxHeaders/x", b'x', 0).size(64 << 20), b"");
    assert_corrupt(&t.finish(), 0, "limit");
}

#[test]
fn multi_volume_continuation_is_refused() {
    let mut t = Tar::new();
    t.file("a", b"").entry(Hdr::gnu("cont", b'M', 0), b"");
    assert_corrupt(&t.finish(), 512, "multi-volume");
}

#[test]
fn bad_sparse_maps() {
    // Old GNU: a chunk past the real size.
    let mut t = Tar::new();
    t.entry(
        Hdr::gnu("s", b'S', 4)
            .octal(field::GNU_REALSIZE, 10)
            .octal((field::GNU_SPARSE, 12), 8)
            .octal((field::GNU_SPARSE + 12, 12), 4),
        b"data",
    );
    assert_corrupt(&t.finish(), 0, "past the real size");
    // Old GNU: the map describes more data than stored.
    let mut t = Tar::new();
    t.entry(
        Hdr::gnu("s", b'S', 2)
            .octal(field::GNU_REALSIZE, 10)
            .octal((field::GNU_SPARSE, 12), 0)
            .octal((field::GNU_SPARSE + 12, 12), 4),
        b"da",
    );
    assert_corrupt(
        &t.finish(),
        0,
        "describes 4 bytes of data but the entry stores 2",
    );
    // Old GNU: an extension block promised but the archive ends.
    let mut t = Tar::new();
    t.bytes(
        &Hdr::gnu("s", b'S', 0)
            .octal(field::GNU_REALSIZE, 10)
            .raw(field::GNU_ISEXTENDED, &[1])
            .bytes(),
    );
    assert_corrupt(&t.buf, 0, "sparse extension header missing");
    // PAX sparse errors name the file's own header (after the PAX header).
    // PAX 0.1: chunks out of order.
    let mut t = Tar::new();
    t.pax(&[
        ("GNU.sparse.size", b"100"),
        ("GNU.sparse.map", b"50,1,10,1"),
    ])
    .entry(Hdr::ustar("s", b'0', 2), b"ab");
    assert_corrupt(&t.finish(), 1024, "out of order");
    // PAX 0.0: offsets without numbytes.
    let mut t = Tar::new();
    t.pax(&[("GNU.sparse.size", b"100"), ("GNU.sparse.offset", b"5")])
        .entry(Hdr::ustar("s", b'0', 0), b"");
    assert_corrupt(&t.finish(), 1024, "do not pair up");
    // PAX 1.0: garbage in the map, a map longer than the data, a huge count.
    for (map, what) in [
        (&b"1\n0\nx\n"[..], "unexpected byte"),
        (b"1\n0\n", "runs past"),
        (b"99999999\n", "claims 99999999 entries"),
    ] {
        let mut data = map.to_vec();
        data.resize(512, 0);
        if what == "runs past" {
            // 255 entries announced, a block full of numbers, no second block.
            data = [b"255\n".to_vec(), b"1\n".repeat(254)].concat();
        }
        let mut t = Tar::new();
        t.pax(&[
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.realsize", b"10"),
        ])
        .entry(Hdr::ustar("s", b'0', data.len() as u64), &data);
        assert_corrupt(&t.finish(), 1024, what);
    }
}
