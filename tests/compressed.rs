//! Compressed layers (gzip, zstd) served as they are: every encoding real
//! tools write gives exactly the tree and the bytes of the uncompressed layer;
//! random reads at every checkpoint boundary return the right bytes; bad
//! streams are one-line errors naming the layer and the offset; stored seek
//! tables are used, and rebuilt when they do not match.

mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use proptest::prelude::*;
use unionfs::blob::Decoded;
use unionfs::tar::{IndexOptions, TarLayer};
use util::Tar;

const BIN: &str = env!("CARGO_BIN_EXE_unionfs");

fn sh(cmd: &str, dir: &Path) {
    let st = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .status()
        .expect("sh");
    assert!(
        st.success(),
        "{cmd} failed (needs gzip, pigz, zstd: tools/test installs them)"
    );
}

fn sample(dir: &Path) -> Vec<PathBuf> {
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/sample-image"))
        .arg(dir)
        .output()
        .expect("tools/sample-image");
    assert!(out.status.success());
    ["base.tar", "app.tar", "fix.tar"]
        .iter()
        .map(|n| dir.join(n))
        .collect()
}

fn ls(layers: &[PathBuf], cache: &Path) -> String {
    let spec = layers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let o = Command::new(BIN)
        .args(["ls", "-R", "--json", "--sha256", "--cache-dir"])
        .arg(cache)
        .args(["--layers", &spec])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "ls {spec}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Each way real tools compress a layer: (suffix, command from `$f` to `$f$suffix`).
const ENCODINGS: &[(&str, &str)] = &[
    (".gz", "gzip -c $f > $f.gz"),
    (".1.gz", "gzip -1 -c $f > $f.1.gz"),
    (".9.gz", "gzip -9 -c $f > $f.9.gz"),
    (".pigz.gz", "pigz -p 2 -b 128 -c $f > $f.pigz.gz"),
    // Multi-member (as eStargz and `cat a.gz b.gz` make): one member per 100 KiB.
    (".mm.gz", "split -b 100k -d $f $f.part. && for p in $f.part.*; do gzip -c $p; done > $f.mm.gz && rm $f.part.*"),
    (".zst", "zstd -q -c $f > $f.zst"),
    (".long.zst", "zstd -q --long=27 -19 -c $f > $f.long.zst"),
    // Multi-frame: one frame per 64 KiB (pzstd-like), with a skippable frame between.
    (".mf.zst", "split -b 64k -d $f $f.part. && for p in $f.part.*; do zstd -q -c $p; printf '\\120\\052\\115\\030\\004\\000\\000\\000skip'; done > $f.mf.zst && rm $f.part.*"),
];

#[test]
fn every_encoding_gives_the_uncompressed_tree_and_bytes() {
    let d = tempfile::tempdir().unwrap();
    let layers = sample(d.path());
    let cache = d.path().join("cache");
    let want = ls(&layers, &cache);
    assert!(want.contains("\"sha256\""));
    for (suffix, cmd) in ENCODINGS {
        for l in &layers {
            sh(&cmd.replace("$f", &l.display().to_string()), d.path());
        }
        let packed: Vec<PathBuf> = layers
            .iter()
            .map(|l| PathBuf::from(format!("{}{suffix}", l.display())))
            .collect();
        assert_eq!(ls(&packed, &cache), want, "{suffix}");
        // Again, from the stored seek tables and indexes.
        assert_eq!(ls(&packed, &cache), want, "{suffix}, cached");
        // Mixed with uncompressed layers.
        let mixed = vec![packed[0].clone(), layers[1].clone(), packed[2].clone()];
        assert_eq!(ls(&mixed, &cache), want, "{suffix}, mixed");
    }
}

/// A layer with a 3 MiB file of incompressible and of repetitive data.
fn big_layer() -> (Vec<u8>, Vec<u8>) {
    let mut data = Vec::with_capacity(3 << 20);
    let mut x: u64 = 0x9e3779b97f4a7c15;
    while data.len() < (3 << 20) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (data.len() >> 16) % 2 == 0 {
            data.extend_from_slice(&x.to_le_bytes());
        } else {
            data.extend_from_slice(b"text text ");
        }
    }
    let tar = Tar::new()
        .file("small", b"hello")
        .file("big", &data)
        .file("after", b"bye")
        .finish();
    (tar, data)
}

fn open(path: &Path, spacing: u64, cache: Option<&Path>) -> TarLayer {
    let opts = IndexOptions {
        cache_dir: cache.map(Path::to_owned),
        checkpoint_spacing: spacing,
        quiet: true,
        ..IndexOptions::default()
    };
    TarLayer::open(path, &opts).unwrap()
}

fn read(l: &TarLayer, path: &str, off: u64, len: usize) -> Vec<u8> {
    let id = l.index.lookup_path(path.as_bytes()).unwrap();
    let mut buf = vec![0u8; len];
    let n = l.read(id, off, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn random_reads_at_every_checkpoint_boundary_return_the_right_bytes() {
    let d = tempfile::tempdir().unwrap();
    let (tar, data) = big_layer();
    let p = d.path().join("big.tar");
    std::fs::write(&p, &tar).unwrap();
    sh("gzip -k big.tar && zstd -q -k big.tar && split -b 300k -d big.tar p. && for f in p.*; do zstd -q -c $f; done > big.mf.zst", d.path());
    for (name, kind) in [
        ("big.tar.gz", "gzip"),
        ("big.mf.zst", "zstd"),
        ("big.tar.zst", "zstd"),
    ] {
        let l = open(&d.path().join(name), 64 << 10, None);
        assert_eq!(l.blob().encoding(), kind);
        let base = l.index.meta(l.index.lookup_path(b"big").unwrap()).data_off;
        let starts: Vec<u64> = match l.blob() {
            Decoded::Gzip(c) => c.table.checkpoints.iter().map(|c| c.out_off).collect(),
            Decoded::Zstd(c) => c.table.frames.iter().map(|f| f.out_off).collect(),
            Decoded::Plain(_) => unreachable!(),
        };
        let want_spans = match name {
            "big.tar.gz" => 20, // 3 MiB at 64 KiB spacing (or at deflate blocks, if larger)
            "big.mf.zst" => 10, // 300 KiB frames
            _ => 1,
        };
        assert!(starts.len() >= want_spans, "{name}: {} spans", starts.len());
        let mut offs: Vec<u64> = vec![0, 1, data.len() as u64 - 1, data.len() as u64 - 4096];
        for s in starts
            .iter()
            .filter(|&&s| s > base && s < base + data.len() as u64)
        {
            let rel = s - base;
            offs.extend([rel - 1, rel, rel + 1, rel.saturating_sub(4000)]);
        }
        for off in offs {
            for len in [1usize, 4096, 70_000] {
                let end = (off as usize + len).min(data.len());
                assert_eq!(
                    read(&l, "big", off, len),
                    &data[off as usize..end],
                    "{name} at {off}+{len}"
                );
            }
        }
        assert_eq!(read(&l, "after", 0, 10), b"bye");
        assert_eq!(read(&l, "small", 0, 10), b"hello");
        // Whole-file reads across every span, from 2 threads at once.
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| assert_eq!(read(&l, "big", 0, data.len()), data, "{name} whole"));
            }
        });
    }
}

#[test]
fn a_stored_seek_table_is_used_and_a_damaged_one_rebuilt() {
    let d = tempfile::tempdir().unwrap();
    let (tar, data) = big_layer();
    std::fs::write(d.path().join("l.tar"), &tar).unwrap();
    sh("gzip l.tar", d.path());
    let gz = d.path().join("l.tar.gz");
    let cache = d.path().join("cache");
    assert!(open(&gz, 0, Some(&cache)).source.built);
    let l = open(&gz, 0, Some(&cache));
    assert!(!l.source.built, "loaded from the cache");
    assert_eq!(read(&l, "big", 12345, 100), &data[12345..12445]);
    let seek = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seek"))
        .expect("a seek table is stored");
    let mut b = std::fs::read(&seek).unwrap();
    let n = b.len();
    b[n - 3] ^= 0x55;
    std::fs::write(&seek, b).unwrap();
    let l = open(&gz, 0, Some(&cache));
    assert!(
        l.source.built,
        "a damaged seek table is rebuilt, never trusted"
    );
    assert_eq!(
        read(&l, "big", 2 << 20, 100),
        &data[2 << 20..(2 << 20) + 100]
    );
}

fn err(path: &Path) -> String {
    let e = TarLayer::open(
        path,
        &IndexOptions {
            quiet: true,
            ..IndexOptions::default()
        },
    )
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(!e.contains('\n'), "one line: {e}");
    assert!(
        e.starts_with(&path.display().to_string()),
        "names the layer: {e}"
    );
    e
}

#[test]
fn bad_streams_are_one_line_errors_with_the_offset() {
    let d = tempfile::tempdir().unwrap();
    let (tar, _) = big_layer();
    std::fs::write(d.path().join("l.tar"), &tar).unwrap();
    sh(
        "gzip -k l.tar && zstd -q -k l.tar && gzip -c /etc/services > text.gz",
        d.path(),
    );
    let gz = std::fs::read(d.path().join("l.tar.gz")).unwrap();
    let zst = std::fs::read(d.path().join("l.tar.zst")).unwrap();
    let put = |name: &str, b: &[u8]| {
        let p = d.path().join(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    let e = err(&put("cut.gz", &gz[..gz.len() / 2]));
    assert!(
        e.contains("offset") && e.to_lowercase().contains("truncated"),
        "{e}"
    );
    let mut crc = gz.clone();
    let n = crc.len();
    crc[n - 6] ^= 1;
    let e = err(&put("crc.gz", &crc));
    assert!(
        e.contains("offset") && e.to_uppercase().contains("CRC"),
        "{e}"
    );
    let mut bad = gz.clone();
    bad[gz.len() / 3] ^= 0xff;
    bad[gz.len() / 3 + 1] ^= 0xff;
    let e = err(&put("flip.gz", &bad));
    assert!(e.contains("offset"), "{e}");
    let mut garbage = gz.clone();
    garbage.extend_from_slice(b"garbage after the stream");
    let e = err(&put("trail.gz", &garbage));
    assert!(e.contains("offset") && e.contains("trailing"), "{e}");
    let e = err(&d.path().join("text.gz"));
    assert!(e.contains("not a tar"), "{e}");
    let e = err(&put("cut.zst", &zst[..zst.len() - 100]));
    assert!(e.contains("offset"), "{e}");
    let mut sum = zst.clone();
    let n = sum.len();
    sum[n - 1] ^= 1; // the frame's content checksum
    let e = err(&put("sum.zst", &sum));
    assert!(e.contains("offset") && e.contains("checksum"), "{e}");
    std::fs::write(d.path().join("x.tar"), &tar).unwrap();
    sh("xz -k x.tar", d.path());
    let e = err(&d.path().join("x.tar.xz"));
    assert!(e.contains("xz-compressed"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// For random files and a random checkpoint spacing, every byte of every
    /// file reads back right, whatever the offset.
    #[test]
    fn every_byte_reads_back(sizes in prop::collection::vec(0usize..200_000, 1..6), spacing_k in 1u64..256, seed: u64) {
        let d = tempfile::tempdir().unwrap();
        let mut t = Tar::new();
        let mut files = Vec::new();
        let mut x = seed | 1;
        for (i, n) in sizes.iter().enumerate() {
            let data: Vec<u8> = (0..*n).map(|j| {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                if (j / 5000) % 2 == 0 { x as u8 } else { b'a' + (j % 7) as u8 }
            }).collect();
            t.file(format!("f{i}"), &data);
            files.push(data);
        }
        std::fs::write(d.path().join("t.tar"), t.finish()).unwrap();
        sh("gzip -k t.tar", d.path());
        let l = open(&d.path().join("t.tar.gz"), spacing_k << 10, None);
        for (i, data) in files.iter().enumerate() {
            let name = format!("f{i}");
            prop_assert_eq!(&read(&l, &name, 0, data.len() + 10), data);
            for k in 0..20u64 {
                let off = (k * 7919 * (seed % 97 + 1)) % (data.len() as u64 + 1);
                let len = ((k * 4099) % 9000) as usize + 1;
                let end = (off as usize + len).min(data.len());
                prop_assert_eq!(&read(&l, &name, off, len)[..], &data[off as usize..end]);
            }
        }
    }
}

/// A zstd layer of one big frame (what BuildKit and skopeo write) is served
/// from a copy decompressed in the indexing pass, kept in the cache and
/// checked like every other cached byte.
#[test]
fn a_single_frame_zstd_layer_is_served_from_a_decompressed_copy() {
    let d = tempfile::tempdir().unwrap();
    let mut data = Vec::with_capacity(20 << 20);
    let mut x: u32 = 1;
    while data.len() < 20 << 20 {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        data.extend_from_slice(format!("line {} of the big file\n", x >> 20).as_bytes());
    }
    let tar = Tar::new().file("big", &data).file("after", b"bye").finish();
    std::fs::write(d.path().join("l.tar"), &tar).unwrap();
    sh("zstd -q --rm l.tar", d.path());
    let zst = d.path().join("l.tar.zst");
    let cache = d.path().join("cache");
    let l = open(&zst, 0, Some(&cache));
    assert!(l.source.built);
    assert_eq!(l.blob().encoding(), "tar", "served from the copy");
    let copy = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "tar"))
        .expect("the copy is kept in the cache");
    assert_eq!(std::fs::metadata(&copy).unwrap().len(), tar.len() as u64);
    assert_eq!(
        read(&l, "big", 10 << 20, 5000),
        &data[10 << 20..(10 << 20) + 5000]
    );
    drop(l);
    let l = open(&zst, 0, Some(&cache));
    assert!(!l.source.built, "index, seek table and copy loaded");
    assert_eq!(read(&l, "after", 0, 10), b"bye");
    drop(l);
    // A copy changed behind our back is not trusted: the layer is decoded again.
    let mut b = std::fs::read(&copy).unwrap();
    b[1000] ^= 1;
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&copy, b).unwrap();
    let l = open(&zst, 0, Some(&cache));
    assert!(l.source.built, "rebuilt");
    assert_eq!(read(&l, "big", 0, 2000), &data[..2000]);
    // Without a cache the copy is an unlinked temporary file.
    let l = open(&zst, 0, None);
    assert_eq!(
        read(&l, "big", 15 << 20, 100),
        &data[15 << 20..(15 << 20) + 100]
    );
}
