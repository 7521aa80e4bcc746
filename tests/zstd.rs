//! zstd blobs as real tools write them (`zstd`, `pzstd`, concatenations),
//! read through `unionfs::blob::zstd`; and the benchmark behind the choice of
//! what to do with single-frame blobs (ignored: run it by hand, see below).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use unionfs::blob::zstd::{decompress_frame, read_at, Frame, FrameTable, ZstdScanner};
use unionfs::tar::scan::ReadAt;

/// Compressible pseudo-random bytes (text runs and noise).
fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x % 3 == 0 {
                (x >> 40) as u8
            } else {
                b"usr/lib/x86_64-linux-gnu/libc.so.6\n"[i % 35]
            }
        })
        .collect()
}

/// Runs a shell command; fails loudly if the tool is missing.
fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(
        st.success(),
        "{cmd}: {st} (needs the zstd package: apt-get install zstd)"
    );
}

/// Scans `blob` whole (in 256 KiB reads, as the tar scanner does), checks the
/// output and every frame, and returns the table.
fn scan_and_check(blob: &File, want: &[u8]) -> FrameTable {
    let s = ZstdScanner::new(blob);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = s.read_at(&mut buf, out.len() as u64).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert!(out == want, "decoded stream differs");
    let t = s.finish().unwrap();
    assert_eq!(FrameTable::from_bytes(&t.to_bytes()).unwrap(), t);
    for i in 0..t.frames.len() {
        let (_, o) = t.ranges(i).unwrap();
        let f = decompress_frame(blob, &t, i).unwrap();
        assert!(f == want[o.start as usize..o.end as usize], "frame {i}");
        for off in [o.start, o.start + 1, o.end - 1] {
            let mut b = [0u8; 3];
            let n = read_at(blob, &t, &mut b, off.saturating_sub(1)).unwrap();
            let lo = off.saturating_sub(1) as usize;
            assert!(b[..n] == want[lo..(lo + 3).min(want.len())]);
        }
    }
    t
}

#[test]
fn blobs_written_by_the_zstd_tools() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = data(9 << 20, 7);
    std::fs::write(d.join("raw"), &raw).unwrap();
    let run = |cmd: &str| sh(&format!("cd {} && {cmd}", d.display()));
    run("zstd -q -3 -c raw > one.zst");
    run("zstd -q -3 -T2 -B1M -c raw > threads.zst");
    run("zstd -q --no-check -c raw > nocheck.zst");
    run("pzstd -q -p 2 -3 -c raw > p.zst");
    run("head -c 3000000 raw | zstd -q -c > a.zst && tail -c +3000001 raw | zstd -q -c > b.zst && cat a.zst b.zst > cat.zst");
    run("zstd -q -c < raw > piped.zst");
    for (name, frames) in [
        // The zstd CLI writes one frame whatever -B and -T say.
        ("one.zst", Some(1)),
        ("threads.zst", Some(1)),
        ("nocheck.zst", Some(1)),
        ("piped.zst", Some(1)),
        // pzstd: a frame per job (which does not declare its size), each
        // after a skippable frame holding its compressed size.
        ("p.zst", None),
        ("cat.zst", Some(2)),
    ] {
        let f = File::open(d.join(name)).unwrap();
        let t = scan_and_check(&f, &raw);
        match frames {
            Some(n) => assert_eq!(t.frames.len(), n, "{name}"),
            None => assert!(t.frames.len() > 1, "{name}: {} frames", t.frames.len()),
        }
        assert_eq!(t.in_len, f.metadata().unwrap().len());
    }
    // zstd itself agrees on pzstd's output.
    run("zstd -q -d -c p.zst | cmp - raw");
}

// ---------------------------------------------------------------------------
// Benchmark: a single-frame blob, (a) decompressed to a cache file or
// (b) re-framed into many frames.
//
//   tar -C /usr --sort=name -cf /tmp/zb/usr.tar sbin include lib/python3.11 share/doc lib/gcc
//   zstd -3 /tmp/zb/usr.tar -o /tmp/zb/usr.tar.zst
//   UNIONFS_ZSTD_BENCH=/tmp/zb cargo test --release --test zstd -- --ignored --nocapture

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn mbs(bytes: u64, d: Duration) -> String {
    format!("{:.0} MB/s", bytes as f64 / 1e6 / d.as_secs_f64())
}

fn drop_cache(f: &File) {
    use std::os::fd::AsRawFd;
    f.sync_all().unwrap();
    // SAFETY: a valid fd; the call only advises the kernel.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

fn warm(f: &File) {
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while let Ok(n @ 1..) = std::os::unix::fs::FileExt::read_at(f, &mut buf, off) {
        off += n as u64;
    }
}

/// Decodes `blob` forward, handing each `chunk` bytes of output to `each`.
fn stream(blob: &File, chunk: usize, mut each: impl FnMut(&[u8])) -> u64 {
    let s = ZstdScanner::new(blob);
    let mut buf = vec![0u8; chunk];
    let mut off = 0u64;
    loop {
        let n = s.read_at(&mut buf, off).unwrap();
        if n == 0 {
            break;
        }
        each(&buf[..n]);
        off += n as u64;
    }
    s.finish().unwrap();
    off
}

/// (b): decode `blob` on one thread, compress `frame` byte frames at `level`
/// on this one, write them to `dst`; returns the table of `dst`.
fn reframe_pipelined(blob: &File, dst: &Path, frame: usize, level: i32) -> FrameTable {
    use zstd_safe::{CCtx, CParameter};
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    std::thread::scope(|sc| {
        sc.spawn(move || {
            stream(blob, frame, |b| tx.send(b.to_vec()).unwrap());
        });
        let mut out = std::io::BufWriter::with_capacity(1 << 20, File::create(dst).unwrap());
        let mut c = CCtx::create();
        c.set_parameter(CParameter::CompressionLevel(level))
            .unwrap();
        c.set_parameter(CParameter::ChecksumFlag(true)).unwrap();
        let mut t = FrameTable::default();
        let mut z = Vec::with_capacity(zstd_safe::compress_bound(frame));
        for b in rx {
            z.clear();
            c.compress2(&mut z, &b).unwrap();
            t.frames.push(Frame {
                in_off: t.in_len,
                out_off: t.out_len,
            });
            out.write_all(&z).unwrap();
            t.in_len += z.len() as u64;
            t.out_len += b.len() as u64;
        }
        t.in_end = t.in_len;
        out.into_inner().unwrap().sync_all().unwrap();
        t.check().unwrap();
        t
    })
}

struct Lat {
    p50: Duration,
    p99: Duration,
}

fn latencies(n: usize, len: u64, mut read: impl FnMut(u64)) -> Lat {
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut v: Vec<Duration> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let off = x % (len - 4096);
            let t = Instant::now();
            read(off);
            t.elapsed()
        })
        .collect();
    v.sort();
    Lat {
        p50: v[n / 2],
        p99: v[n * 99 / 100],
    }
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

#[test]
#[ignore = "benchmark: set UNIONFS_ZSTD_BENCH=DIR holding usr.tar.zst (see above)"]
fn bench_single_frame() {
    let Some(dir) = std::env::var_os("UNIONFS_ZSTD_BENCH") else {
        panic!("set UNIONFS_ZSTD_BENCH=DIR holding usr.tar.zst");
    };
    let dir = Path::new(&dir);
    let src = File::open(dir.join("usr.tar.zst")).unwrap();
    let in_len = src.metadata().unwrap().len();
    let n_reads = 2000;

    // Decoding speed of the scanner (warm), in the tar scanner's 256 KiB reads.
    warm(&src);
    let mut best = Duration::MAX;
    let mut out_len = 0;
    for _ in 0..3 {
        let t = Instant::now();
        out_len = stream(&src, 256 << 10, |_| {});
        best = best.min(t.elapsed());
    }
    println!("blob: {in_len} bytes compressed, {out_len} uncompressed, one frame");
    println!(
        "scanner decode (warm, best of 3): {} = {}",
        secs(best),
        mbs(out_len, best)
    );

    // (a) decompress into a plain cache file.
    let plain = dir.join("cache.tar");
    let t = Instant::now();
    let f = File::create(&plain).unwrap();
    let s = ZstdScanner::with_sink(&src, &f);
    // The tar scanner reads headers only; model it as one 256 KiB read per MiB.
    let mut off = 0;
    while s.read_at(&mut vec![0u8; 256 << 10], off).unwrap() > 0 {
        off += 1 << 20;
    }
    s.finish().unwrap();
    let write = t.elapsed();
    f.sync_all().unwrap();
    let synced = t.elapsed();
    let f = File::open(&plain).unwrap();
    let blocks = std::os::unix::fs::MetadataExt::blocks(&f.metadata().unwrap()) * 512;
    println!(
        "(a) plain: first pass {} ({} with fsync), disk {} MB",
        secs(write),
        secs(synced),
        blocks / 1_000_000
    );
    let mut buf = vec![0u8; 4096];
    let pread = |f: &File, b: &mut [u8], off| {
        std::os::unix::fs::FileExt::read_at(f, b, off).unwrap();
    };
    drop_cache(&f);
    let cold = latencies(n_reads, out_len, |off| pread(&f, &mut buf, off));
    warm(&f);
    let hot = latencies(n_reads, out_len, |off| pread(&f, &mut buf, off));
    let mut big = vec![0u8; 128 << 10];
    let seq = |f: &File, big: &mut [u8]| {
        let t = Instant::now();
        let mut off = 0;
        while off < out_len {
            std::os::unix::fs::FileExt::read_at(f, big, off).unwrap();
            off += big.len() as u64;
        }
        t.elapsed()
    };
    drop_cache(&f);
    let seq_cold = seq(&f, &mut big);
    let seq_warm = seq(&f, &mut big);
    println!(
        "(a) plain: 4 KiB random p50/p99 cold {}/{} warm {}/{}; sequential 128 KiB cold {} warm {}",
        us(cold.p50),
        us(cold.p99),
        us(hot.p50),
        us(hot.p99),
        mbs(out_len, seq_cold),
        mbs(out_len, seq_warm)
    );

    // (b) re-frame into frames of 1 or 4 MiB at level 1 or 3.
    for (frame, level) in [(1usize << 20, 1), (1 << 20, 3), (4 << 20, 1), (4 << 20, 3)] {
        let path = dir.join(format!("reframed-{}m-{level}.zst", frame >> 20));
        let t0 = Instant::now();
        let tab = reframe_pipelined(&src, &path, frame, level);
        let first = t0.elapsed();
        assert_eq!(tab.out_len, out_len);
        let f = File::open(&path).unwrap();
        let disk = std::os::unix::fs::MetadataExt::blocks(&f.metadata().unwrap()) * 512;
        drop_cache(&f);
        let cold = latencies(n_reads, out_len, |off| {
            read_at(&f, &tab, &mut buf, off).unwrap();
        });
        warm(&f);
        let hot = latencies(n_reads, out_len, |off| {
            read_at(&f, &tab, &mut buf, off).unwrap();
        });
        // Sequential with a frame cache: each frame decoded once.
        let by_frame = |f: &File| {
            let t = Instant::now();
            for i in 0..tab.frames.len() {
                decompress_frame(f, &tab, i).unwrap();
            }
            t.elapsed()
        };
        drop_cache(&f);
        let seq_cold = by_frame(&f);
        let seq_warm = by_frame(&f);
        // Sequential 128 KiB reads without a frame cache.
        let t = Instant::now();
        let mut off = 0;
        while off < out_len {
            off += read_at(&f, &tab, &mut big, off).unwrap() as u64;
        }
        let seq_nocache = t.elapsed();
        println!(
            "(b) {} MiB frames, level {level}: first pass {} (decode ‖ compress), disk {} MB, {} frames; \
             4 KiB random p50/p99 cold {}/{} warm {}/{}; sequential by frame cold {} warm {}, \
             128 KiB reads without frame cache {}",
            frame >> 20,
            secs(first),
            disk / 1_000_000,
            tab.frames.len(),
            us(cold.p50),
            us(cold.p99),
            us(hot.p50),
            us(hot.p99),
            mbs(out_len, seq_cold),
            mbs(out_len, seq_warm),
            mbs(out_len, seq_nocache)
        );
        std::fs::remove_file(&path).unwrap();
    }

    // No cache at all: a read in a single frame decodes from the start.
    let whole = FrameTable {
        frames: vec![Frame {
            in_off: 0,
            out_off: 0,
        }],
        in_end: in_len,
        in_len,
        out_len,
    };
    let l = latencies(20, out_len, |off| {
        read_at(&src, &whole, &mut buf, off).unwrap();
    });
    println!(
        "single frame, no cache: 4 KiB random p50/p99 {}/{}",
        us(l.p50),
        us(l.p99)
    );
    std::fs::remove_file(&plain).unwrap();
}
