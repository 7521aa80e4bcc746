//! fuse-uring-bench: measurement prototype for issue 15 (FUSE over io_uring).
//!
//! Mounts a trivial FUSE filesystem (root dir + one file `f`) over raw
//! /dev/fuse, served either by the classic transport (threads doing
//! read(/dev/fuse) + writev) or by FUSE over io_uring (a queue per CPU,
//! REGISTER + COMMIT_AND_FETCH uring commands), and times client loops on it.
//! See README.md.

mod bench;
mod classic;
mod fs;
mod mount;
mod proto;
mod uring;

use bench::Test;
use fs::Fs;
use mount::Mount;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Classic,
    Uring,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Classic => "classic",
            Kind::Uring => "io_uring",
        }
    }
}

#[derive(Clone, Debug)]
struct Args {
    iters: u64,
    repeat: usize,
    kinds: Vec<Kind>,
    tests: Vec<(Test, usize)>,
    classic_threads: usize,
    depth: usize,
    setup: uring::Setup,
    direct_io: bool,
    flush_enosys: bool,
    pin_clients: bool,
    pin_queues: bool,
    file_size: usize,
    keep_param: bool,
    renice: bool,
    pin_classic: bool,
    baseline: bool,
    payload_kib: Option<usize>,
    stall_after: Option<u64>,
}

fn usage_text() -> &'static str {
    "usage: fuse-uring-bench [--iters N] [--repeat R] [--transport classic|uring|both]
       [--tests stat,read,stat2,read2] [--classic-threads K] [--queue-depth D]
       [--uring-setup defer|coop|plain] [--no-direct-io] [--flush-enosys]
       [--pin-clients] [--no-pin-queues] [--file-size BYTES] [--keep-param]
       [--no-renice] [--pin-classic] [--no-baseline]
       [--payload-kib N (ring payload buffer; too small shows REGISTER's error path)]
       [--stall-after N (the Nth request sleeps 30 s: shows the watchdog)]
Run as root. Mounts under /tmp, unmounts at the end (MNT_DETACH).
Runs at nice -20 (all its threads, client and server) unless --no-renice,
so that other work on the machine disturbs the figures less."
}

fn parse_args() -> Result<Args, String> {
    let ncpu = uring::possible_cpus();
    let mut a = Args {
        iters: 200_000,
        repeat: 1,
        kinds: vec![Kind::Classic, Kind::Uring],
        tests: vec![
            (Test::Stat, 1),
            (Test::Read, 1),
            (Test::Stat, 2),
            (Test::Read, 2),
        ],
        classic_threads: ncpu,
        depth: 4,
        setup: uring::Setup::Defer,
        direct_io: true,
        flush_enosys: false,
        pin_clients: false,
        pin_queues: true,
        file_size: 4096,
        keep_param: false,
        renice: true,
        pin_classic: false,
        baseline: true,
        payload_kib: None,
        stall_after: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--iters" => a.iters = val()?.parse().map_err(|e| format!("--iters: {e}"))?,
            "--repeat" => a.repeat = val()?.parse().map_err(|e| format!("--repeat: {e}"))?,
            "--transport" => {
                a.kinds = match val()?.as_str() {
                    "classic" => vec![Kind::Classic],
                    "uring" | "io_uring" => vec![Kind::Uring],
                    "both" => vec![Kind::Classic, Kind::Uring],
                    v => return Err(format!("--transport {v}?")),
                }
            }
            "--tests" => {
                a.tests = val()?
                    .split(',')
                    .map(|t| match t {
                        "stat" => Ok((Test::Stat, 1)),
                        "read" => Ok((Test::Read, 1)),
                        "stat2" => Ok((Test::Stat, 2)),
                        "read2" => Ok((Test::Read, 2)),
                        _ => Err(format!("unknown test {t}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--classic-threads" => {
                a.classic_threads = val()?.parse().map_err(|e| format!("{e}"))?
            }
            "--queue-depth" => a.depth = val()?.parse().map_err(|e| format!("{e}"))?,
            "--uring-setup" => {
                a.setup = match val()?.as_str() {
                    "defer" => uring::Setup::Defer,
                    "coop" => uring::Setup::Coop,
                    "plain" => uring::Setup::Plain,
                    v => return Err(format!("--uring-setup {v}?")),
                }
            }
            "--no-direct-io" => a.direct_io = false,
            "--flush-enosys" => a.flush_enosys = true,
            "--pin-clients" => a.pin_clients = true,
            "--no-pin-queues" => a.pin_queues = false,
            "--file-size" => a.file_size = val()?.parse().map_err(|e| format!("{e}"))?,
            "--keep-param" => a.keep_param = true,
            "--no-renice" => a.renice = false,
            "--pin-classic" => a.pin_classic = true,
            "--no-baseline" => a.baseline = false,
            "--stall-after" => a.stall_after = Some(val()?.parse().map_err(|e| format!("{e}"))?),
            "--payload-kib" => a.payload_kib = Some(val()?.parse().map_err(|e| format!("{e}"))?),
            "-h" | "--help" => {
                println!("{}", usage_text());
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {arg}\n{}", usage_text())),
        }
    }
    Ok(a)
}

struct Row {
    kind: Kind,
    test: Test,
    threads: usize,
    iters: u64,
    wall: Duration,
    cpu: Duration,
    ctxsw: u64,
    /// CPUs' worth of time used by other processes meanwhile
    foreign: f64,
    ops: Vec<(u32, u64)>,
}

impl Row {
    fn us_per_iter(&self) -> f64 {
        self.wall.as_secs_f64() * 1e6 / self.iters as f64
    }
    fn reqs_per_iter(&self) -> f64 {
        self.ops.iter().map(|(_, n)| *n).sum::<u64>() as f64 / self.iters as f64
    }
    fn ops_text(&self) -> String {
        self.ops
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(op, n)| {
                format!(
                    "{}={:.2}",
                    proto::opcode_name(*op),
                    *n as f64 / self.iters as f64
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Make sure the fuse module lets connections use io_uring. Returns the
/// original value of the parameter.
fn enable_uring_param() -> Result<String, String> {
    let orig = std::fs::read_to_string(PARAM)
        .map_err(|e| format!("{PARAM}: {e} (kernel without FUSE over io_uring?)"))?
        .trim()
        .to_string();
    if orig != "Y" {
        std::fs::write(PARAM, "Y").map_err(|e| format!("writing Y to {PARAM}: {e}"))?;
        let now = std::fs::read_to_string(PARAM).unwrap_or_default();
        if now.trim() != "Y" {
            return Err(format!(
                "{PARAM} still reads {:?} after writing Y",
                now.trim()
            ));
        }
        eprintln!("# {PARAM}: was {orig}, set to Y");
    }
    Ok(orig)
}

fn join_all(handles: Vec<JoinHandle<String>>, m: &Mount, what: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while handles.iter().any(|h| !h.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if handles.iter().any(|h| !h.is_finished()) {
        eprintln!(
            "# {what}: server threads still running 5 s after umount; aborting the connection"
        );
        m.abort();
    }
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|_| "panicked".into()))
        .collect()
}

fn run_transport(kind: Kind, a: &Args, rep: usize, verbose: bool) -> Result<Vec<Row>, String> {
    let dir = PathBuf::from(format!(
        "/tmp/fuse-uring-bench.{}.{}",
        std::process::id(),
        kind.name()
    ));
    let mut m = Mount::new(&dir).map_err(|e| format!("mount {}: {e}", dir.display()))?;
    let fd = m.fd.as_raw_fd();
    let info = classic::init(fd, kind == Kind::Uring).map_err(|e| format!("INIT: {e}"))?;
    if verbose {
        eprintln!(
            "# kernel FUSE {}.{}, offers FUSE_OVER_IO_URING: {}; conn {:?}",
            info.kernel_major,
            info.kernel_minor,
            info.kernel_flags & proto::FUSE_OVER_IO_URING != 0,
            m.conn
        );
    }
    if kind == Kind::Uring && info.reply_flags & proto::FUSE_OVER_IO_URING == 0 {
        return Err(format!(
            "kernel did not offer FUSE_OVER_IO_URING in INIT (flags {:#x}); {PARAM} = {:?}",
            info.kernel_flags,
            std::fs::read_to_string(PARAM).unwrap_or_default().trim()
        ));
    }
    let mut fs = Fs::new(a.file_size, a.direct_io, a.flush_enosys);
    fs.stall_after = a.stall_after;
    let fs = Arc::new(fs);
    let mut handles: Vec<JoinHandle<String>> = Vec::new();
    let dev_threads = if kind == Kind::Classic {
        a.classic_threads
    } else {
        1
    };
    let ncpu = uring::possible_cpus();
    for i in 0..dev_threads {
        let fs = fs.clone();
        let pin = a.pin_classic && kind == Kind::Classic;
        handles.push(std::thread::spawn(move || {
            if pin {
                uring::pin_to_cpu(i % ncpu);
            }
            match classic::serve(fd, fs) {
                Ok(()) => "dev: ok".into(),
                Err(e) => format!("dev: {e}"),
            }
        }));
    }
    if kind == Kind::Uring {
        let nq = uring::possible_cpus();
        let (tx, rx) = mpsc::channel();
        let payload = a
            .payload_kib
            .map(|k| k * 1024)
            .unwrap_or((classic::MAX_WRITE as usize).max(32 * 4096));
        for qid in 0..nq {
            let cfg = uring::QueueCfg {
                qid: qid as u16,
                depth: a.depth,
                payload_size: payload,
                fd,
                setup: a.setup,
                pin: a.pin_queues,
            };
            let fs = fs.clone();
            let tx = tx.clone();
            handles.push(std::thread::spawn(move || {
                match uring::serve_queue(cfg, fs, tx) {
                    Ok(s) => format!(
                        "queue {qid}: {} requests, {} io_uring_enter",
                        s.requests, s.enters
                    ),
                    Err(e) => format!("queue {qid}: {e}"),
                }
            }));
        }
        for _ in 0..nq {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    m.abort();
                    m.umount();
                    join_all(handles, &m, kind.name());
                    return Err(e);
                }
                Err(e) => {
                    m.abort();
                    m.umount();
                    join_all(handles, &m, kind.name());
                    return Err(format!("queue registration: no answer ({e})"));
                }
            }
        }
        if verbose {
            eprintln!(
                "# io_uring: {nq} queues x {} entries registered ({} B header + {} KiB payload each), setup {:?}",
                a.depth,
                std::mem::size_of::<proto::UringReqHeader>(),
                payload / 1024,
                a.setup
            );
        }
    }

    // Watchdog: abort the connection if the clients make no progress.
    let progress = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let wd = {
        let progress = progress.clone();
        let done = done.clone();
        let conn = m.conn.clone();
        let dir = m.dir.clone();
        std::thread::spawn(move || {
            let mut last = u64::MAX;
            let mut still = 0;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let p = progress.load(Ordering::Relaxed);
                if p == last {
                    still += 1;
                    if still == 100 {
                        eprintln!("# watchdog: no progress for 20 s, aborting connection {conn:?}");
                        mount::abort_conn(conn.as_deref(), &dir);
                    }
                } else {
                    still = 0;
                    last = p;
                }
            }
        })
    };

    let file = dir.join("f");
    let result = (|| -> Result<Vec<Row>, String> {
        // warm-up (and correctness check): LOOKUP once, then cached dentry
        for t in [Test::Stat, Test::Read] {
            bench::run(t, &file, 2000, 1, false, progress.clone(), a.file_size)
                .map_err(|e| format!("{} warm-up on {}: {e}", t.name(), kind.name()))?;
        }
        let mut rows = Vec::new();
        for &(test, threads) in &a.tests {
            let c0 = fs.snapshot();
            let u0 = bench::usage();
            let wall = bench::run(
                test,
                &file,
                a.iters,
                threads,
                a.pin_clients,
                progress.clone(),
                a.file_size,
            )
            .map_err(|e| format!("{} x{threads} on {}: {e}", test.name(), kind.name()))?;
            let u1 = bench::usage();
            // RELEASE is asynchronous: let the last ones land before counting
            std::thread::sleep(Duration::from_millis(20));
            let c1 = fs.snapshot();
            let iters = a.iters / threads as u64 * threads as u64;
            let row = Row {
                kind,
                test,
                threads,
                iters,
                wall,
                cpu: u1.cpu - u0.cpu,
                ctxsw: u1.ctxsw - u0.ctxsw,
                foreign: ((u1.machine_busy.as_secs_f64() - u0.machine_busy.as_secs_f64())
                    - (u1.cpu - u0.cpu).as_secs_f64())
                .max(0.0)
                    / wall.as_secs_f64(),
                ops: (0..c0.len()).map(|i| (i as u32, c1[i] - c0[i])).collect(),
            };
            println!(
                "run {rep} {:<8} {:<18} x{} {:>8.2} us/iter  {:>5.2} req/iter  {:>6.2} us/req  cpu {:>6.2} us/iter  {:>5.2} ctxsw/iter  other load {:.2} CPUs  [{}]",
                kind.name(),
                test.name(),
                threads,
                row.us_per_iter(),
                row.reqs_per_iter(),
                row.us_per_iter() / row.reqs_per_iter().max(1e-9),
                row.cpu.as_secs_f64() * 1e6 / iters as f64,
                row.ctxsw as f64 / iters as f64,
                row.foreign,
                row.ops_text()
            );
            rows.push(row);
        }
        Ok(rows)
    })();

    done.store(true, Ordering::Relaxed);
    let _ = wd.join();
    m.umount();
    let msgs = join_all(handles, &m, kind.name());
    if verbose {
        for s in msgs {
            eprintln!("# {}: {s}", kind.name());
        }
    }
    result
}

/// median, min, max of µs/iter; medians of CPU µs/iter, ctxsw/iter, req/iter; runs
type Summary = (f64, f64, f64, f64, f64, f64, usize);

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("run as root (mount(2), /dev/fuse, {PARAM})");
        std::process::exit(2);
    }
    if a.renice {
        // before any thread is spawned: threads inherit the nice value
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -20) };
    }
    let mut kinds = a.kinds.clone();
    let mut orig_param = None;
    let mut uring_error = None;
    if kinds.contains(&Kind::Uring) {
        match enable_uring_param() {
            Ok(o) => orig_param = Some(o),
            Err(e) => {
                eprintln!("# io_uring unavailable: {e}; measuring classic only");
                uring_error = Some(e);
                kinds.retain(|k| *k != Kind::Uring);
            }
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "# {} iterations per test, {} repetition(s), file {} B, direct_io {}, flush {}, cpus {}, nice {}, loadavg {}",
        a.iters,
        a.repeat,
        a.file_size,
        a.direct_io,
        if a.flush_enosys { "ENOSYS" } else { "0" },
        uring::possible_cpus(),
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) },
        load.trim()
    );
    if a.baseline {
        let n = (a.iters / 2).max(1000);
        let same = bench::pingpong(n, (0, 0));
        let cross = if uring::possible_cpus() > 1 {
            bench::pingpong(n, (0, 1))
        } else {
            f64::NAN
        };
        println!(
            "baseline: pipe ping-pong between two threads (no FUSE): same CPU {same:.2} us/round trip, two CPUs {cross:.2} us/round trip"
        );
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut failed = false;
    for rep in 0..a.repeat {
        for &k in &kinds {
            match run_transport(k, &a, rep, rep == 0) {
                Ok(r) => rows.extend(r),
                Err(e) => {
                    eprintln!("# {} failed: {e}", k.name());
                    if k == Kind::Uring {
                        uring_error = Some(e);
                    }
                    failed = true;
                }
            }
        }
        if uring_error.is_some() {
            kinds.retain(|k| *k != Kind::Uring);
        }
    }
    if let Some(o) = orig_param {
        if o != "Y" && !a.keep_param {
            let _ = std::fs::write(PARAM, &o);
            eprintln!("# {PARAM}: restored to {o}");
        }
    }

    // Summary: median (min..max) per test and transport, and the ratio.
    println!();
    println!(
        "| test | client threads | classic µs/iter | io_uring µs/iter | io_uring ÷ classic | req/iter | classic µs/req | io_uring µs/req | CPU µs/iter classic → io_uring | ctxsw/iter classic → io_uring |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &(test, threads) in &a.tests {
        let stat = |k: Kind| {
            let sel: Vec<&Row> = rows
                .iter()
                .filter(|r| r.kind == k && r.test == test && r.threads == threads)
                .collect();
            if sel.is_empty() {
                return None;
            }
            let mut us: Vec<f64> = sel.iter().map(|r| r.us_per_iter()).collect();
            let min = us.iter().cloned().fold(f64::MAX, f64::min);
            let max = us.iter().cloned().fold(0.0, f64::max);
            let med = median(&mut us);
            let mut cpu: Vec<f64> = sel
                .iter()
                .map(|r| r.cpu.as_secs_f64() * 1e6 / r.iters as f64)
                .collect();
            let mut cs: Vec<f64> = sel
                .iter()
                .map(|r| r.ctxsw as f64 / r.iters as f64)
                .collect();
            let mut rq: Vec<f64> = sel.iter().map(|r| r.reqs_per_iter()).collect();
            Some((
                med,
                min,
                max,
                median(&mut cpu),
                median(&mut cs),
                median(&mut rq),
                sel.len(),
            ))
        };
        let c = stat(Kind::Classic);
        let u = stat(Kind::Uring);
        let fmt = |s: &Option<Summary>| match s {
            Some((med, min, max, _, _, _, n)) if *n > 1 => format!("{med:.2} ({min:.2}–{max:.2})"),
            Some((med, ..)) => format!("{med:.2}"),
            None => "–".into(),
        };
        let ratio = match (&c, &u) {
            (Some(c), Some(u)) => format!("{:.2}", u.0 / c.0),
            _ => "–".into(),
        };
        let rq = c.as_ref().or(u.as_ref()).map(|s| s.5).unwrap_or(0.0);
        let per_req = |s: &Option<Summary>| match s {
            Some(s) => format!("{:.2}", s.0 / s.5.max(1e-9)),
            None => "–".into(),
        };
        let pair = |f: fn(&Summary) -> f64| {
            format!(
                "{} → {}",
                c.as_ref()
                    .map(|s| format!("{:.2}", f(s)))
                    .unwrap_or("–".into()),
                u.as_ref()
                    .map(|s| format!("{:.2}", f(s)))
                    .unwrap_or("–".into())
            )
        };
        println!(
            "| {} | {} | {} | {} | {} | {:.2} | {} | {} | {} | {} |",
            test.name(),
            threads,
            fmt(&c),
            fmt(&u),
            ratio,
            rq,
            per_req(&c),
            per_req(&u),
            pair(|s| s.3),
            pair(|s| s.4)
        );
    }
    if let Some(e) = uring_error {
        println!("\nio_uring transport not measured: {e}");
    }
    if failed {
        std::process::exit(1);
    }
}
