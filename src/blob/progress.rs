//! Progress of a long decoding pass, on stderr when it is a terminal: bytes
//! in (of how many), bytes out, rate, time left. Silent for passes under a
//! second, for `-q`, and when stderr is not a terminal (logs, CI).

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Hashing;
use crate::tar::scan::ReadAt;

/// A running progress line; cleared when dropped.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn mb(n: u64) -> String {
    if n >= 10 << 30 {
        format!("{:.1} GB", n as f64 / 1e9)
    } else {
        format!("{} MB", n / 1_000_000)
    }
}

impl Progress {
    /// Starts reporting the pass that reads `input` (`total` bytes) and
    /// produces `output`, named `name`.
    pub fn start<A: ReadAt + ?Sized, B: ReadAt + ?Sized>(
        name: &Path,
        input: &Hashing<A>,
        output: &Hashing<B>,
        total: u64,
        quiet: bool,
    ) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        if quiet || !std::io::stderr().is_terminal() {
            return Progress { stop, thread: None };
        }
        let (inp, out, flag) = (input.meter(), output.meter(), stop.clone());
        let name = name.display().to_string();
        let thread = std::thread::Builder::new()
            .name("unionfs-progress".into())
            .spawn(move || report(&name, &inp, &out, total, &flag))
            .ok();
        Progress { stop, thread }
    }
}

fn report(name: &str, inp: &AtomicU64, out: &AtomicU64, total: u64, stop: &AtomicBool) {
    let start = Instant::now();
    let mut shown = false;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
        let t = start.elapsed().as_secs_f64();
        if t < 1.0 || stop.load(Ordering::Relaxed) {
            continue;
        }
        let (i, o) = (
            inp.load(Ordering::Relaxed).min(total),
            out.load(Ordering::Relaxed),
        );
        let rate = i as f64 / t;
        let left = if rate > 0.0 {
            (total - i) as f64 / rate
        } else {
            0.0
        };
        eprint!(
            "\r\x1b[K{name}: {} of {} read ({:.0}%), {} out, {:.0} MB/s, {:.0} s left",
            mb(i),
            mb(total),
            100.0 * i as f64 / total.max(1) as f64,
            mb(o),
            rate / 1e6,
            left
        );
        let _ = std::io::stderr().flush();
        shown = true;
    }
    if shown {
        eprint!("\r\x1b[K");
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
