//! Blobs: the random-access byte source behind one layer's uncompressed tar.
//!
//! A [`Blob`] is a byte range of an open file: a whole loose layer tar, or one
//! member of an outer archive (a `docker save` archive, an OCI archive), whose
//! payload is one contiguous range of the outer file (tar payloads are never
//! split). Reads are `pread`s at `base + off`: nothing is copied or extracted.
//!
//! This module knows nothing of tar entries or images; it owns byte sources and
//! the digest pass over them ([`Hashing`], [`sha256`]), the record of which
//! sources were already checked ([`verified`]), and the writers that make new
//! blobs, compressed and digested in one pass ([`encode`]).

pub mod decoded;
pub mod encode;
pub mod gzip;
pub mod progress;
pub mod remote;
pub mod seek;
pub mod verified;
mod zlib;
pub mod zstd;

pub use decoded::Decoded;

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};

use crate::tar::scan::{ReadAt, UNKNOWN_LEN};

/// A contiguous byte range of an open file, or a blob in a registry.
#[derive(Clone, Debug)]
pub struct Blob {
    src: Src,
    base: u64,
    len: u64,
}

/// Where a blob's bytes are.
#[derive(Clone, Debug)]
enum Src {
    File(Arc<File>),
    Remote(Arc<remote::Remote>),
}

impl Blob {
    /// The whole of `file`.
    pub fn whole(file: File) -> io::Result<Blob> {
        let len = file.metadata()?.len();
        Ok(Blob {
            src: Src::File(Arc::new(file)),
            base: 0,
            len,
        })
    }

    /// `len` bytes of `file` from `base`.
    pub fn range(file: Arc<File>, base: u64, len: u64) -> Blob {
        Blob {
            src: Src::File(file),
            base,
            len,
        }
    }

    /// A whole blob of a registry, read by ranges ([`remote`]).
    pub fn remote(r: Arc<remote::Remote>) -> Blob {
        let len = r.size();
        Blob {
            src: Src::Remote(r),
            base: 0,
            len,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Returns true if and only if the blob has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the range starts in its file.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The local file holding the bytes (`None` for a registry blob).
    pub fn file(&self) -> Option<&File> {
        match &self.src {
            Src::File(f) => Some(f),
            Src::Remote(_) => None,
        }
    }

    /// The registry blob, if this is one.
    pub fn as_remote(&self) -> Option<&Arc<remote::Remote>> {
        match &self.src {
            Src::File(_) => None,
            Src::Remote(r) => Some(r),
        }
    }

    /// Asks for `len` bytes at `off` ahead of use: the page cache for a
    /// file, a background fetch for a registry blob.
    pub fn prefetch(&self, off: u64, len: u64) {
        let len = len.min(self.len.saturating_sub(off));
        if len > 0 {
            match &self.src {
                Src::File(f) => crate::sys::fadvise_willneed(f.as_fd(), self.base + off, len),
                Src::Remote(r) => r.prefetch(self.base + off, len),
            }
        }
    }
}

/// How a blob is read for the one sequential pass that indexes it: a file
/// range by `pread`s; a registry blob streamed in one request, the digest of
/// each chunk taken on the way ([`remote::Remote::stream`]).
pub enum Pass<'a> {
    /// A local file range.
    Local(&'a Blob),
    /// A registry blob's stream.
    Remote(Box<remote::Streaming>),
}

impl Blob {
    /// The reader for this blob's indexing pass.
    pub fn pass(&self) -> Pass<'_> {
        match &self.src {
            Src::File(_) => Pass::Local(self),
            Src::Remote(r) => Pass::Remote(Box::new(r.stream())),
        }
    }
}

impl Pass<'_> {
    /// Returns true if and only if the bytes come from a registry.
    pub fn is_remote(&self) -> bool {
        matches!(self, Pass::Remote(_))
    }

    /// Ends the pass, once the blob's digest matched: a registry blob keeps
    /// the chunk table the pass took (every later read is checked against
    /// it); nothing to do for a file.
    pub fn keep(self) -> io::Result<()> {
        match self {
            Pass::Local(_) => Ok(()),
            Pass::Remote(s) => {
                let r = s.remote().clone();
                r.install((*s).finish()?)
            }
        }
    }
}

impl ReadAt for Pass<'_> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        match self {
            Pass::Local(b) => b.read_at(buf, off),
            Pass::Remote(s) => s.read_at(buf, off),
        }
    }
    fn len(&self) -> io::Result<u64> {
        match self {
            Pass::Local(b) => ReadAt::len(*b),
            Pass::Remote(s) => s.len(),
        }
    }
}

impl ReadAt for Blob {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        if off >= self.len {
            return Ok(0);
        }
        let n = (self.len - off).min(buf.len() as u64) as usize;
        match &self.src {
            Src::File(f) => FileExt::read_at(&**f, &mut buf[..n], self.base + off),
            Src::Remote(r) => r.read_at(&mut buf[..n], self.base + off),
        }
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.len)
    }
}

/// A reader that computes the sha256 of everything under it while a scanner
/// reads it: each read first hashes the bytes between the last hashed offset
/// and its own start (the payloads the scanner seeks over), so that one
/// sequential pass both indexes a layer and digests it.
///
/// Reads must be at non-decreasing offsets or re-read bytes already hashed (as
/// the tar scanner does); [`Hashing::finish`] hashes the rest and returns the
/// digest.
pub struct Hashing<'a, R: ReadAt + ?Sized> {
    inner: &'a R,
    /// `None`: a pass-through that only counts (no digest wanted).
    state: Option<Mutex<(Sha256, u64, Vec<u8>)>>,
    /// The furthest offset read so far (for progress).
    pos: Arc<AtomicU64>,
}

impl<'a, R: ReadAt + ?Sized> Hashing<'a, R> {
    /// Wraps `inner`; nothing is hashed yet.
    pub fn new(inner: &'a R) -> Self {
        Self::new_if(inner, true)
    }

    /// Wraps `inner`, hashing only if `hash` (else reads pass through and
    /// [`Hashing::finish`] returns an empty string).
    pub fn new_if(inner: &'a R, hash: bool) -> Self {
        Hashing {
            inner,
            state: hash.then(|| Mutex::new((Sha256::new(), 0, Vec::new()))),
            pos: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How far the reader has come, as a counter another thread can watch.
    pub fn meter(&self) -> Arc<AtomicU64> {
        self.pos.clone()
    }

    /// Hashes what is left up to the end (of a stream of unknown length: up
    /// to where it ends) and returns `sha256:<hex>`.
    pub fn finish(self) -> io::Result<String> {
        let Some(state) = self.state else {
            return Ok(String::new());
        };
        let len = self.inner.len()?;
        let mut st = state.into_inner();
        hash_gap(self.inner, &mut st, len)?;
        Ok(format!("sha256:{}", hex(&st.0.finalize())))
    }
}

/// Hashes `inner`'s bytes from the state's offset up to `to`.
fn hash_gap<R: ReadAt + ?Sized>(
    inner: &R,
    st: &mut (Sha256, u64, Vec<u8>),
    to: u64,
) -> io::Result<()> {
    let (h, at, buf) = st;
    if *at >= to {
        return Ok(());
    }
    if buf.is_empty() {
        buf.resize(1 << 20, 0);
    }
    while *at < to {
        let n = (to - *at).min(buf.len() as u64) as usize;
        if to == UNKNOWN_LEN {
            // A stream whose end is not known yet: hash until it ends.
            let got = crate::tar::scan::read_full(inner, &mut buf[..n], *at)?;
            h.update(&buf[..got]);
            *at += got as u64;
            if got < n {
                break;
            }
        } else {
            crate::tar::scan::read_exact_at(inner, &mut buf[..n], *at)?;
            h.update(&buf[..n]);
            *at += n as u64;
        }
    }
    Ok(())
}

impl<R: ReadAt + ?Sized> ReadAt for Hashing<'_, R> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let n = match &self.state {
            None => self.inner.read_at(buf, off)?,
            Some(state) => {
                let mut st = state.lock();
                hash_gap(self.inner, &mut st, off)?;
                let n = self.inner.read_at(buf, off)?;
                let end = off + n as u64;
                if end > st.1 {
                    let from = (st.1 - off) as usize;
                    st.0.update(&buf[from..n]);
                    st.1 = end;
                }
                n
            }
        };
        self.pos.fetch_max(off + n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

/// `sha256:<hex>` of all of `r`.
pub fn sha256<R: ReadAt + ?Sized>(r: &R) -> io::Result<String> {
    Hashing::new(r).finish()
}

/// `sha256:<hex>` of a byte slice.
pub fn sha256_bytes(b: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(b)))
}

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_covers_skipped_and_reread_bytes_once() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        let want = sha256_bytes(&data);
        let h = Hashing::new(&data);
        let mut b = [0u8; 100];
        // Forward jumps, re-reads, overlapping reads, a read past the end.
        for off in [0u64, 50, 40, 1000, 1000, 1050, 4990] {
            h.read_at(&mut b, off).unwrap();
        }
        assert_eq!(h.finish().unwrap(), want);
        assert_eq!(sha256(&data).unwrap(), want);
        assert_eq!(sha256(&Vec::<u8>::new()).unwrap(), sha256_bytes(b""));
    }

    #[test]
    fn range_reads_stay_inside() {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, b"0123456789").unwrap();
        let b = Blob::range(Arc::new(f), 3, 4);
        let mut buf = [0u8; 10];
        assert_eq!(b.read_at(&mut buf, 0).unwrap(), 4);
        assert_eq!(&buf[..4], b"3456");
        assert_eq!(b.read_at(&mut buf, 3).unwrap(), 1);
        assert_eq!(b.read_at(&mut buf, 4).unwrap(), 0);
        assert_eq!(sha256(&b).unwrap(), sha256_bytes(b"3456"));
    }
}
