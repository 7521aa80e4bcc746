//! The one place that calls zlib's C API (as implemented in Rust by zlib-rs,
//! through `libz-rs-sys`): a safe raw-deflate inflater that can stop at deflate
//! block boundaries and be primed with leftover bits and a dictionary — what
//! zran-style random access into gzip needs and zlib-rs's safe `Inflate` does
//! not offer (it has no `inflatePrime` and hides `data_type`).
//!
//! This module knows nothing of gzip headers, checkpoints or blobs: it turns
//! slices into slices. Every `unsafe` block of the gzip code lives here.

use std::ffi::CStr;
use std::fmt;

use libz_rs_sys as z;

/// A raw (headerless) deflate decoder with a 32 KiB window.
pub struct RawInflater {
    /// Boxed: zlib keeps a pointer from its state back to the stream, so the
    /// stream must not move after `inflateInit2_`.
    strm: Box<z::z_stream>,
}

// SAFETY: the inflater exclusively owns its zlib state (allocated by zlib-rs's
// thread-safe Rust allocator); `next_in`/`next_out` are set only for the
// duration of a call borrowing the buffers and reset to null afterwards, so
// nothing in the stream refers to memory of another thread.
unsafe impl Send for RawInflater {}

/// What one [`RawInflater::inflate`] call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inflated {
    /// Input bytes consumed (bits of a partly used byte are held inside).
    pub consumed: usize,
    /// Output bytes written.
    pub produced: usize,
    /// Returns true if and only if the decoder stopped just after the end of a
    /// deflate block (zlib's `data_type & 128`): a place to resume from.
    pub at_block_boundary: bool,
    /// The block being (or just) decoded is the last of the stream (`data_type & 64`).
    pub last_block: bool,
    /// The end of the deflate stream was reached (`Z_STREAM_END`); no bits of
    /// a following byte are held.
    pub stream_end: bool,
    /// Bits of already consumed input not yet used (`data_type & 63`; below 8
    /// at a block boundary, as the decoder hands whole bytes back).
    pub leftover_bits: u8,
}

/// A corrupt deflate stream, with zlib's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InflateError {
    /// Input bytes consumed by the failing call before it stopped.
    pub consumed: usize,
    /// zlib's message ("invalid block type", "invalid distance too far back", …).
    pub msg: String,
}

impl fmt::Display for InflateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl RawInflater {
    /// A raw inflater (`inflateInit2(-15)`), ready for the start of a deflate stream.
    pub fn new() -> RawInflater {
        let mut strm = Box::new(z::z_stream::default());
        // SAFETY: `strm` is a valid, default-initialised stream (null buffers,
        // the default allocator); the version string is zlib-rs's own,
        // NUL-terminated, and the size is that of the struct we pass.
        let rc = unsafe {
            z::inflateInit2_(
                &mut *strm,
                -15,
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as i32,
            )
        };
        // Only an allocation failure (which aborts in Rust) or a version
        // mismatch (impossible: same crate) can fail here.
        assert_eq!(rc, z::Z_OK, "inflateInit2 failed");
        RawInflater { strm }
    }

    /// Forgets the stream so far: ready for a new deflate stream, empty window.
    pub fn reset(&mut self) {
        // SAFETY: the stream was initialised by `inflateInit2_` and not ended.
        let rc = unsafe { z::inflateReset(&mut *self.strm) };
        debug_assert_eq!(rc, z::Z_OK);
    }

    /// Inserts the `bits` (0..=16) low bits of `value` before the next input
    /// byte: resumes a stream in the middle of a byte. Call right after
    /// [`RawInflater::reset`] (or `new`), before [`RawInflater::set_dictionary`].
    pub fn prime(&mut self, bits: u8, value: u32) -> Result<(), String> {
        if bits > 16 {
            return Err(format!("cannot prime {bits} bits"));
        }
        let value = (value & ((1u32 << bits) - 1)) as i32;
        // SAFETY: the stream was initialised and not ended; bits ≤ 16.
        let rc = unsafe { z::inflatePrime(&mut *self.strm, i32::from(bits), value) };
        if rc == z::Z_OK {
            Ok(())
        } else {
            Err(format!("inflatePrime failed ({rc})"))
        }
    }

    /// Sets the window (the output that preceded the resume point, at most
    /// the last 32 KiB are kept) that back-references may reach into.
    pub fn set_dictionary(&mut self, dict: &[u8]) -> Result<(), String> {
        let dict = &dict[dict.len().saturating_sub(1 << 15)..];
        // SAFETY: the stream was initialised and not ended; `dict` is a live
        // slice of `dict.len()` (≤ 32 KiB, fits a u32) bytes that zlib copies.
        let rc =
            unsafe { z::inflateSetDictionary(&mut *self.strm, dict.as_ptr(), dict.len() as u32) };
        if rc == z::Z_OK {
            Ok(())
        } else {
            Err(format!("inflateSetDictionary failed ({rc})"))
        }
    }

    /// Inflates from `input` into `output` until either runs out, the stream
    /// ends, or — if `stop_at_block` (zlib's `Z_BLOCK`) — a deflate block ends.
    /// `output` should not be empty; at most 4 GiB of each slice are used.
    pub fn inflate(
        &mut self,
        input: &[u8],
        output: &mut [u8],
        stop_at_block: bool,
    ) -> Result<Inflated, InflateError> {
        let avail_in = input.len().min(u32::MAX as usize) as u32;
        let avail_out = output.len().min(u32::MAX as usize) as u32;
        let s = &mut *self.strm;
        s.next_in = input.as_ptr();
        s.avail_in = avail_in;
        s.next_out = output.as_mut_ptr();
        s.avail_out = avail_out;
        let flush = if stop_at_block {
            z::Z_BLOCK
        } else {
            z::Z_NO_FLUSH
        };
        // SAFETY: the stream was initialised and not ended; `next_in` points
        // to `avail_in` readable bytes of `input` and `next_out` to
        // `avail_out` writable bytes of `output`, both borrowed for this call
        // only; the pointers are cleared below before the borrows end.
        let rc = unsafe { z::inflate(s, flush) };
        let consumed = (avail_in - s.avail_in) as usize;
        let produced = (avail_out - s.avail_out) as usize;
        s.next_in = std::ptr::null();
        s.avail_in = 0;
        s.next_out = std::ptr::null_mut();
        s.avail_out = 0;
        match rc {
            z::Z_OK | z::Z_BUF_ERROR | z::Z_STREAM_END => {
                let dt = s.data_type;
                Ok(Inflated {
                    consumed,
                    produced,
                    at_block_boundary: dt & 128 != 0,
                    last_block: dt & 64 != 0,
                    stream_end: rc == z::Z_STREAM_END,
                    leftover_bits: (dt & 63) as u8,
                })
            }
            _ => Err(InflateError {
                consumed,
                msg: self.message(rc),
            }),
        }
    }

    /// zlib's message for the last error, or a name for `rc`.
    fn message(&self, rc: i32) -> String {
        if !self.strm.msg.is_null() {
            // SAFETY: zlib sets `msg` to null or to a static NUL-terminated string.
            let m = unsafe { CStr::from_ptr(self.strm.msg) };
            return m.to_string_lossy().into_owned();
        }
        match rc {
            z::Z_NEED_DICT => "a preset dictionary is needed".into(),
            z::Z_DATA_ERROR => "invalid deflate data".into(),
            z::Z_MEM_ERROR => "out of memory".into(),
            _ => format!("zlib error {rc}"),
        }
    }
}

impl Default for RawInflater {
    fn default() -> Self {
        RawInflater::new()
    }
}

impl Drop for RawInflater {
    fn drop(&mut self) {
        // SAFETY: the stream was initialised by `inflateInit2_` and is ended
        // exactly once, here.
        unsafe {
            z::inflateEnd(&mut *self.strm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deflate_raw(data: &[u8], level: i32) -> Vec<u8> {
        let mut out = vec![0u8; zlib_rs::compress_bound(data.len()) + 64];
        let cfg = zlib_rs::DeflateConfig {
            level,
            window_bits: -15,
            ..Default::default()
        };
        let (c, rc) = zlib_rs::compress_slice(&mut out, data, cfg);
        assert_eq!(rc, zlib_rs::ReturnCode::Ok);
        c.to_vec()
    }

    fn sample(n: usize) -> Vec<u8> {
        let mut x = 12345u32;
        (0..n)
            .map(|i| {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                if i % 7 < 4 {
                    b"abcdefgh"[(x >> 28) as usize % 8]
                } else {
                    (x >> 24) as u8
                }
            })
            .collect()
    }

    #[test]
    fn inflates_whole_stream_and_reports_its_end() {
        let data = sample(300_000);
        let c = deflate_raw(&data, 6);
        let mut inf = RawInflater::new();
        let mut out = vec![0u8; data.len() + 10];
        let r = inf.inflate(&c, &mut out, false).unwrap();
        assert!(r.stream_end);
        assert_eq!(r.consumed, c.len());
        assert_eq!(&out[..r.produced], &data[..]);
    }

    /// Stop at every block boundary, then resume a fresh inflater there with
    /// the leftover bits and the window, as zran does.
    #[test]
    fn resumes_at_block_boundaries() {
        let data = sample(400_000);
        let c = deflate_raw(&data, 9);
        let mut inf = RawInflater::new();
        let mut out = vec![0u8; data.len()];
        let (mut cin, mut cout, mut points) = (0usize, 0usize, Vec::new());
        loop {
            let r = inf.inflate(&c[cin..], &mut out[cout..], true).unwrap();
            cin += r.consumed;
            cout += r.produced;
            if r.stream_end {
                break;
            }
            if r.at_block_boundary && !r.last_block {
                assert!(r.leftover_bits < 8);
                points.push((cin, r.leftover_bits, cout));
            }
        }
        assert_eq!(out, data);
        assert!(points.len() > 2, "{points:?}");
        for &(cin, bits, cout) in &points {
            let mut inf = RawInflater::new();
            if bits > 0 {
                inf.prime(bits, u32::from(c[cin - 1] >> (8 - bits)))
                    .unwrap();
            }
            inf.set_dictionary(&data[..cout]).unwrap();
            let mut o = vec![0u8; data.len() - cout];
            let r = inf.inflate(&c[cin..], &mut o, false).unwrap();
            assert!(r.stream_end);
            assert_eq!(o, &data[cout..]);
        }
    }

    #[test]
    fn corrupt_input_is_an_error_with_a_message() {
        let mut inf = RawInflater::new();
        let mut out = [0u8; 100];
        // BTYPE = 3 (reserved).
        let e = inf.inflate(&[0x07, 0, 0], &mut out, false).unwrap_err();
        assert!(e.msg.contains("invalid block type"), "{e}");
        assert!(inf.prime(17, 0).is_err());
    }
}
