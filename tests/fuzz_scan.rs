//! Mutation fuzzing of the scanner and the index builder, as a proptest.
//!
//! Valid archives (the `tar` crate's ustar/GNU/PAX output, plus raw sparse files
//! in the four encodings) are damaged — bytes flipped, header fields overwritten,
//! blocks dropped or repeated, bytes inserted, the end cut off — and then scanned.
//! Whatever happens must be either a `ScanError::Corrupt` or an index on which
//! every accessor works, which passes its own `persist::validate`, whose files
//! read back in full, and which reassembles the archive byte for byte.
//!
//! Default 256 cases; for a long run: `PROPTEST_CASES=200000 cargo test --release
//! --test fuzz_scan`.

mod util;

use std::io::Write as _;

use proptest::prelude::*;
use proptest::sample::Index;
use sha2::{Digest, Sha256};
use unionfs::stack::Stack;
use unionfs::tar::index::{LayerIndex, F_DETACHED};
use unionfs::tar::{index, persist, scan, verify, EntryId, IndexOptions, TarLayer};

// ---------------------------------------------------------------------------
// Valid archives

#[derive(Clone, Debug)]
enum Kind {
    File(usize),
    Dir,
    Symlink(String),
    /// A hard link to the n-th earlier entry (modulo).
    Hardlink(Index),
    /// A raw sparse file: encoding 0..4, real size, chunks (offset, len).
    Sparse(u8, u64, Vec<(u64, usize)>),
}

#[derive(Clone, Debug)]
struct Gen {
    path: String,
    kind: Kind,
    gnu: bool,
    pax: Vec<(&'static str, Vec<u8>)>,
}

fn path() -> impl Strategy<Value = String> {
    let comp = prop_oneof![
        16 => prop::sample::select(vec!["a", "b", "etc", ".wh.a", ".wh..wh..opq", "."]).prop_map(str::to_owned),
        1 => Just("..".to_owned()),
        1 => (1usize..300).prop_map(|n| "L".repeat(n)),
    ];
    prop::collection::vec(comp, 1..4).prop_map(|v| v.join("/"))
}

fn pax() -> impl Strategy<Value = Vec<(&'static str, Vec<u8>)>> {
    let rec = prop_oneof![
        Just(("mtime", b"1700000000.5".to_vec())),
        Just(("mtime", b"-3.25".to_vec())),
        Just(("uid", b"4000000000".to_vec())),
        Just(("gid", b"12".to_vec())),
        Just(("SCHILY.xattr.user.x", b"v\n=\0".to_vec())),
        Just(("SCHILY.xattr.security.capability", vec![1, 0, 0, 2])),
        Just(("linkpath", b"somewhere/else".to_vec())),
        Just(("comment", b"hello".to_vec())),
    ];
    prop::collection::vec(rec, 0..3)
}

fn gen_entry() -> impl Strategy<Value = Gen> {
    let kind = prop_oneof![
        4 => (0usize..1500).prop_map(Kind::File),
        2 => Just(Kind::Dir),
        1 => "[a-z/.]{0,120}".prop_map(Kind::Symlink),
        1 => any::<Index>().prop_map(Kind::Hardlink),
        1 => (
            0u8..4,
            prop::collection::vec((1u64..3000, 0usize..700), 0..30),
        )
            .prop_map(|(enc, gaps)| {
                // Chunks in order: each starts `gap` after the previous end.
                let mut at = 0;
                let chunks: Vec<(u64, usize)> = gaps
                    .into_iter()
                    .map(|(gap, len)| {
                        let c = (at + gap, len);
                        at += gap + len as u64;
                        c
                    })
                    .collect();
                Kind::Sparse(enc, at + 10, chunks)
            }),
    ];
    (path(), kind, any::<bool>(), pax()).prop_map(|(path, kind, gnu, pax)| Gen {
        path,
        kind,
        gnu,
        pax,
    })
}

fn archive(entries: &[Gen]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (i, g) in entries.iter().enumerate() {
        // Each entry goes through its own builder first: the tar crate refuses
        // `..` and some other names, and then the entry (and its PAX header) is
        // left out as a whole.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = if g.gnu {
            tar::Header::new_gnu()
        } else {
            tar::Header::new_ustar()
        };
        h.set_mode(0o644);
        h.set_mtime(i as u64);
        if !g.pax.is_empty() && !matches!(g.kind, Kind::Sparse(..)) {
            b.append_pax_extensions(g.pax.iter().map(|(k, v)| (*k, v.as_slice())))
                .unwrap();
        }
        let ok = match &g.kind {
            Kind::File(n) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(*n as u64);
                let data: Vec<u8> = (0..*n).map(|j| (i + j) as u8).collect();
                b.append_data(&mut h, &g.path, data.as_slice()).is_ok()
            }
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, &g.path, std::io::empty()).is_ok()
            }
            Kind::Symlink(t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, &g.path, t).is_ok()
            }
            Kind::Hardlink(ix) => {
                if names.is_empty() {
                    false
                } else {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    let t = names[ix.index(names.len())].clone();
                    b.append_link(&mut h, &g.path, &t).is_ok()
                }
            }
            Kind::Sparse(enc, real, chunks) => {
                let sp = util::Sparse::new(*real, chunks);
                // The raw writer has no long-name support: keep names short.
                let mut name = g.path.replace("..", "__");
                name.truncate(99);
                let raw = match enc {
                    0 => sp.gnu_old(&name),
                    1 => sp.pax_0_0(&name),
                    2 => sp.pax_0_1(&name),
                    _ => sp.pax_1_0(&name),
                };
                b.get_mut().write_all(&raw).unwrap();
                true
            }
        };
        if ok {
            names.push(g.path.clone());
            out.extend_from_slice(b.get_ref());
        }
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

// ---------------------------------------------------------------------------
// Mutations

#[derive(Clone, Debug)]
enum Mutation {
    Flip(Index, u8),
    /// Overwrite the start of a header field of some block with these bytes.
    Field(Index, usize, Vec<u8>),
    Insert(Index, Vec<u8>),
    DropBlock(Index),
    RepeatBlock(Index),
    Truncate(Index),
}

const FIELDS: [usize; 18] = [
    0, 99, 100, 108, 116, 124, 130, 136, 148, 156, 157, 257, 329, 337, 345, 386, 482, 483,
];

fn mutation() -> impl Strategy<Value = Mutation> {
    let junk = prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(b"0123456789 \n=.,-x".to_vec()),
            1 => Just(0u8),
            1 => Just(0x80u8),
            1 => Just(0xffu8),
            1 => any::<u8>(),
        ],
        1..13,
    );
    prop_oneof![
        4 => (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::Flip(i, v)),
        4 => (any::<Index>(), prop::sample::select(FIELDS.to_vec()), junk.clone())
            .prop_map(|(i, f, j)| Mutation::Field(i, f, j)),
        2 => (any::<Index>(), junk).prop_map(|(i, j)| Mutation::Insert(i, j)),
        1 => any::<Index>().prop_map(Mutation::DropBlock),
        1 => any::<Index>().prop_map(Mutation::RepeatBlock),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

/// Gives every non-zero block at a 512-byte boundary a valid header checksum, so
/// that damage reaches past the checksum check into the fields behind it.
fn fix_checksums(tar: &mut [u8]) {
    for b in tar.chunks_exact_mut(512) {
        if b.iter().all(|&x| x == 0) {
            continue;
        }
        b[148..156].fill(b' ');
        let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
        b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }
}

fn apply(tar: &mut Vec<u8>, m: &Mutation) {
    if tar.is_empty() {
        return;
    }
    let blocks = tar.len().div_ceil(512);
    match m {
        Mutation::Flip(i, v) => {
            let at = i.index(tar.len());
            tar[at] = *v;
        }
        Mutation::Field(i, f, bytes) => {
            let at = i.index(blocks) * 512 + f;
            for (k, b) in bytes.iter().enumerate() {
                if let Some(x) = tar.get_mut(at + k) {
                    *x = *b;
                }
            }
        }
        Mutation::Insert(i, bytes) => {
            let at = i.index(tar.len() + 1);
            tar.splice(at..at, bytes.iter().copied());
        }
        Mutation::DropBlock(i) => {
            let at = i.index(blocks) * 512;
            tar.drain(at..(at + 512).min(tar.len()));
        }
        Mutation::RepeatBlock(i) => {
            let at = i.index(blocks) * 512;
            let b: Vec<u8> = tar[at..(at + 512).min(tar.len())].to_vec();
            tar.splice(at..at, b);
        }
        Mutation::Truncate(i) => {
            let n = i.index(tar.len() + 1);
            tar.truncate(n);
        }
    }
}

// ---------------------------------------------------------------------------
// Checks

/// Every accessor on every entry; panics (fails) on any inconsistency.
fn exercise(idx: &LayerIndex) {
    persist::validate(idx).expect("a built index validates");
    let n = idx.entries.len() as u32;
    let mut reachable = 0usize;
    for i in 0..n {
        let id = EntryId(i);
        let e = idx.entry(id);
        let _ = idx.name(id);
        let _ = idx.extra(id);
        let _ = idx.mtime_nsec(id);
        let ino = idx.inode_of(id);
        assert!(ino.0 < n);
        let path = idx.path_of(id);
        if e.is_dir() {
            let kids = idx.children(id);
            assert!(kids.end <= n);
            let mut prev: Option<&[u8]> = None;
            for c in kids {
                let name = idx.name(EntryId(c));
                assert!(prev.is_none_or(|p| p < name), "children sorted");
                prev = Some(name);
                assert_eq!(idx.child(id, name), Some(EntryId(c)));
                assert_eq!(idx.entry(EntryId(c)).parent, i);
                reachable += 1;
            }
        }
        if !e.has(F_DETACHED) && i != 0 && !e.is_whiteout() {
            assert!(!path.is_empty());
            // Reachable by its path unless an ancestor is... nothing: every
            // named entry is reachable.
            assert_eq!(
                idx.lookup_path(&path),
                Some(id),
                "{:?}",
                String::from_utf8_lossy(&path)
            );
        }
    }
    let detached = idx.entries.iter().filter(|e| e.has(F_DETACHED)).count();
    assert_eq!(
        reachable + 1 + detached,
        n as usize,
        "every record is named once or detached"
    );
}

/// Returns true if and only if `TarLayer::open` refuses `bytes` before scanning
/// (empty, or the magic of a compressor).
fn refused_up_front(bytes: &[u8]) -> bool {
    let magics: [&[u8]; 4] = [b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"BZh", b"\xfd7zXZ\0"];
    bytes.is_empty() || magics.iter().any(|m| bytes.starts_with(m))
}

/// Opens the damaged archive as a layer: reads every file, reassembles the tar,
/// and stacks it over the undamaged one to walk the merged view.
fn check_layer(bytes: &[u8], pristine: &[u8], idx: &LayerIndex, dir: &std::path::Path) {
    if refused_up_front(bytes) {
        return;
    }
    let opts = IndexOptions {
        members: true,
        ..IndexOptions::default()
    };
    let p = util::write_tar(dir, "f.tar", bytes);
    let layer = TarLayer::open(&p, &opts)
        .unwrap_or_else(|e| panic!("scan accepted it but open refused: {e}"));
    assert_eq!(util::listing(&layer.index), util::listing(idx));
    for i in 0..layer.index.entries.len() as u32 {
        let id = EntryId(i);
        let e = layer.index.entry(layer.index.inode_of(id));
        if e.kind() == libc::S_IFREG {
            let data = util::read_all(&layer, id);
            assert_eq!(
                data.len() as u64,
                layer.index.meta(layer.index.inode_of(id)).size
            );
        }
    }
    let r = verify::reassemble(&layer).unwrap_or_else(|e| panic!("reassembly failed: {e}"));
    assert_eq!(r.bytes, bytes.len() as u64);
    let want = format!("sha256:{}", verify::hex(&Sha256::digest(bytes)));
    assert_eq!(r.digest, want, "reassembly differs from the tar");
    // `view` asserts that listing and lookup agree on every name.
    let low = util::write_tar(dir, "low.tar", pristine);
    let low = TarLayer::open(&low, &opts).unwrap();
    let _ = util::view(&Stack::new(vec![low, layer]));
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An input read forward in odd-sized pieces whose length is unknown until a
/// read finds its end, as a decompressing reader serves a compressed layer.
struct Streamed<'a> {
    data: &'a [u8],
    ended: std::sync::atomic::AtomicBool,
}

impl scan::ReadAt for Streamed<'_> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
        let want = buf.len().min(7001);
        let n = self.data.read_at(&mut buf[..want], off)?;
        if n < want {
            self.ended.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(n)
    }
    fn len(&self) -> std::io::Result<u64> {
        Ok(if self.ended.load(std::sync::atomic::Ordering::Relaxed) {
            self.data.len() as u64
        } else {
            scan::UNKNOWN_LEN
        })
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(256),
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_archives_never_break_the_scanner(
        entries in prop::collection::vec(gen_entry(), 0..12),
        mutations in prop::collection::vec(mutation(), 0..4),
        fix in prop::bool::weighted(0.7),
    ) {
        let original = archive(&entries);
        let mut bytes = original.clone();
        let pristine = mutations.is_empty();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        if fix && !pristine {
            fix_checksums(&mut bytes);
        }
        let known = scan::scan(&bytes);
        // The same bytes as a decompressor serves them: length unknown until
        // the end, reads in pieces. Same index, or refused too.
        let streamed = scan::scan(&Streamed { data: &bytes, ended: Default::default() });
        match (&known, &streamed) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(a.end_off, b.end_off);
                prop_assert_eq!(&a.warnings, &b.warnings);
                prop_assert_eq!(format!("{:?}", a.entries), format!("{:?}", b.entries));
            }
            (Err(scan::ScanError::Corrupt(..)), Err(scan::ScanError::Corrupt(..))) => {}
            (a, b) => prop_assert!(false, "known length: {:?}; streamed: {:?}", a.as_ref().err(), b.as_ref().err()),
        }
        match known {
            Err(scan::ScanError::Io(e)) => panic!("I/O error on an in-memory archive: {e}"),
            Err(scan::ScanError::Corrupt(off, msg)) => {
                prop_assert!(!pristine, "valid archive refused at {}: {}", off, msg);
                prop_assert!(off <= bytes.len() as u64, "offset {} past the end", off);
            }
            Ok(s) => {
                let idx = index::build(s, bytes.len() as u64);
                exercise(&idx);
                let dir = tempfile::tempdir().unwrap();
                check_layer(&bytes, &original, &idx, dir.path());
            }
        }
    }
}
