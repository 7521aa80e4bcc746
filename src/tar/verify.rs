//! Byte-exact reassembly of a layer tar from its index, and its sha256 (`diff_id`).
//!
//! The index keeps, for every header block, where the header starts, where its
//! payload starts and how long the payload is (tar-split's "segments"). Streaming
//! those segments in order — header bytes, payload, padding — and then the
//! end-of-archive trailer must reproduce the tar exactly: every byte covered once,
//! every header block's checksum valid. The sha256 of that stream is the layer's
//! `diff_id` as docker and the OCI image config record it.

use sha2::{Digest, Sha256};

use super::header::{padded, Header, BLOCK};
use super::TarLayer;
use crate::error::{Error, Result};

/// What a successful reassembly found.
#[derive(Debug, Clone)]
pub struct Reassembly {
    /// `sha256:<hex>` of the reassembled stream.
    pub digest: String,
    /// Bytes streamed (equals the tar's size).
    pub bytes: u64,
    /// Header blocks (members) streamed.
    pub members: usize,
}

/// Reassembles `layer` from its index; fails if the index does not tile the tar.
pub fn reassemble(layer: &TarLayer) -> Result<Reassembly> {
    let idx = &layer.index;
    let path = &layer.path;
    let size = idx.tar_size;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    let corrupt = |offset: u64, reason: String| Error::CorruptTar {
        path: path.clone(),
        offset,
        reason,
    };
    let mut copy = |from: u64, to: u64, hasher: &mut Sha256| -> Result<()> {
        let mut at = from;
        while at < to {
            let n = (to - at).min(buf.len() as u64) as usize;
            super::scan::read_exact_at(layer.blob(), &mut buf[..n], at)
                .map_err(|e| Error::io(path, e))?;
            hasher.update(&buf[..n]);
            at += n as u64;
        }
        Ok(())
    };
    if idx.members.is_empty() && idx.end_off != 0 {
        return Err(corrupt(0, "index has no member table".into()));
    }
    for m in &idx.members {
        if m.hdr_off != pos {
            return Err(corrupt(
                pos,
                format!("index leaves bytes {pos}..{} uncovered", m.hdr_off),
            ));
        }
        let mut block = [0u8; 512];
        super::scan::read_exact_at(layer.blob(), &mut block, m.hdr_off)
            .map_err(|e| Error::io(path, e))?;
        Header(&block)
            .check_checksum()
            .map_err(|e| corrupt(m.hdr_off, e))?;
        let end = padded(m.data_len)
            .and_then(|p| m.data_off.checked_add(p))
            .ok_or_else(|| corrupt(m.hdr_off, "member size overflows".into()))?
            .min(size);
        if m.data_off < m.hdr_off + BLOCK || end < m.data_off {
            return Err(corrupt(m.hdr_off, "member offsets out of order".into()));
        }
        copy(m.hdr_off, end, &mut hasher)?;
        pos = end;
    }
    if pos != idx.end_off {
        return Err(corrupt(
            pos,
            format!(
                "members end at {pos} but the archive's end is at {}",
                idx.end_off
            ),
        ));
    }
    copy(pos, size, &mut hasher)?;
    let digest = format!("sha256:{}", hex(&hasher.finalize()));
    Ok(Reassembly {
        digest,
        bytes: size,
        members: idx.members.len(),
    })
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
