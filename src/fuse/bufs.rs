//! Read buffers shared by the FUSE worker threads.
//!
//! A READ borrows a buffer (grown to the request's size once, never zeroed
//! again), fills it with `pread`, replies from it and gives it back. So the
//! daemon holds as many buffers as reads ran at once, instead of a fresh
//! zeroed allocation per read that each thread's malloc arena then keeps
//! (measured before: 3.8 MiB of arenas after reading a rootfs, 4 threads ×
//! the 1 MiB `max_read`).

use parking_lot::Mutex;

/// How many idle buffers are kept (more concurrent reads allocate and free).
const KEEP: usize = 4;

/// See the module docs.
#[derive(Debug, Default)]
pub struct ReadBufs(Mutex<Vec<Vec<u8>>>);

impl ReadBufs {
    /// Runs `f` on a buffer of exactly `size` bytes (contents unspecified).
    pub fn with<R>(&self, size: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        let mut b = self.0.lock().pop().unwrap_or_default();
        if b.len() < size {
            b.resize(size, 0);
        }
        let r = f(&mut b[..size]);
        let mut idle = self.0.lock();
        if idle.len() < KEEP {
            idle.push(b);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_sized_to_the_request() {
        let bufs = ReadBufs::default();
        let p1 = bufs.with(1000, |b| {
            assert_eq!(b.len(), 1000);
            b.fill(7);
            b.as_ptr() as usize
        });
        let p2 = bufs.with(10, |b| {
            assert_eq!(b.len(), 10);
            b.as_ptr() as usize
        });
        assert_eq!(p1, p2, "the idle buffer is reused");
        // Nested use (two reads at once) gets two buffers.
        bufs.with(5, |a| bufs.with(5, |b| assert_ne!(a.as_ptr(), b.as_ptr())));
        assert!(bufs.0.lock().len() <= KEEP);
    }
}
