//! The client side: loops of syscalls on the mounted file, timed.

use crate::uring::pin_to_cpu;
use std::ffi::CString;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Test {
    /// stat() loop: one GETATTR per call (attr TTL 0)
    Stat,
    /// open + read(4k) + close loop: OPEN, READ, FLUSH, RELEASE
    Read,
}

impl Test {
    pub fn name(self) -> &'static str {
        match self {
            Test::Stat => "stat",
            Test::Read => "open+read4k+close",
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub cpu: Duration,
    pub ctxsw: u64,
    /// Busy CPU time of the whole machine (all processes), from /proc/stat.
    pub machine_busy: Duration,
}

/// Whole-process CPU time (user+sys, all threads: client and server) and
/// context switches (voluntary+involuntary).
pub fn usage() -> Usage {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Usage {
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        ctxsw: (ru.ru_nvcsw + ru.ru_nivcsw) as u64,
        machine_busy: machine_busy(),
    }
}

/// user+nice+system+irq+softirq+steal of all CPUs (USER_HZ ticks).
fn machine_busy() -> Duration {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = s.lines().next().unwrap_or("");
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let busy = [0usize, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| v.get(i).copied().unwrap_or(0))
        .sum::<u64>();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(busy * 1_000_000 / hz)
}

fn one_thread(
    test: Test,
    path: &CString,
    iters: u64,
    progress: &AtomicU64,
    file_size: usize,
) -> io::Result<()> {
    let mut buf = vec![0u8; file_size.max(1)];
    for i in 0..iters {
        match test {
            Test::Stat => {
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                if unsafe { libc::stat(path.as_ptr(), &mut st) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                if i == 0 && st.st_size as usize != file_size {
                    return Err(io::Error::other(format!("stat size {}", st.st_size)));
                }
            }
            Test::Read => {
                let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
                let err = io::Error::last_os_error();
                unsafe { libc::close(fd) };
                if n < 0 {
                    return Err(err);
                }
                if n as usize != file_size || (i == 0 && buf[1] != 1) {
                    return Err(io::Error::other(format!("read returned {n}")));
                }
            }
        }
        if i & 255 == 0 {
            progress.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Run `test` on `threads` client threads, `iters` iterations in total
/// (split evenly). Returns the wall time.
pub fn run(
    test: Test,
    file: &Path,
    iters: u64,
    threads: usize,
    pin: bool,
    progress: Arc<AtomicU64>,
    file_size: usize,
) -> io::Result<Duration> {
    let path = CString::new(file.as_os_str().as_encoded_bytes()).unwrap();
    let per = iters / threads as u64;
    let start = Instant::now();
    let res: Vec<io::Result<()>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let path = &path;
                let progress = &progress;
                s.spawn(move || {
                    if pin {
                        pin_to_cpu(t % crate::uring::possible_cpus());
                    }
                    one_thread(test, path, per, progress, file_size)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = start.elapsed();
    for r in res {
        r?;
    }
    Ok(wall)
}

/// Baseline with no FUSE at all: two threads bounce one byte over a pair of
/// pipes (two context switches and four syscalls per round trip), pinned to
/// `cpus` (same CPU or two CPUs). Returns µs per round trip.
pub fn pingpong(iters: u64, cpus: (usize, usize)) -> f64 {
    let mut a = [0i32; 2];
    let mut b = [0i32; 2];
    unsafe {
        libc::pipe(a.as_mut_ptr());
        libc::pipe(b.as_mut_ptr());
    }
    let (a_r, a_w, b_r, b_w) = (a[0], a[1], b[0], b[1]);
    let echo = std::thread::spawn(move || {
        pin_to_cpu(cpus.1);
        let mut c = [0u8; 1];
        for _ in 0..iters {
            unsafe {
                libc::read(a_r, c.as_mut_ptr() as *mut libc::c_void, 1);
                libc::write(b_w, c.as_ptr() as *const libc::c_void, 1);
            }
        }
    });
    let us = std::thread::spawn(move || {
        pin_to_cpu(cpus.0);
        let mut c = [0u8; 1];
        let t = Instant::now();
        for _ in 0..iters {
            unsafe {
                libc::write(a_w, c.as_ptr() as *const libc::c_void, 1);
                libc::read(b_r, c.as_mut_ptr() as *mut libc::c_void, 1);
            }
        }
        t.elapsed().as_secs_f64() * 1e6 / iters as f64
    })
    .join()
    .unwrap();
    echo.join().unwrap();
    for fd in [a_r, a_w, b_r, b_w] {
        unsafe { libc::close(fd) };
    }
    us
}
