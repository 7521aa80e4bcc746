//! The trivial filesystem both transports serve: a root directory holding one
//! file `f`. Request handling is transport-neutral: it gets the opcode, the
//! per-opcode in-struct and the rest of the request, and writes the reply's
//! out-args into a buffer it is given.

use crate::proto::*;
use std::sync::atomic::{AtomicU64, Ordering};

pub const FILE_INO: u64 = 2;
pub const FILE_NAME: &[u8] = b"f";

pub struct Fs {
    pub data: Vec<u8>,
    /// Reply FOPEN_DIRECT_IO on OPEN (every read goes to the server).
    pub direct_io: bool,
    /// Reply ENOSYS to FLUSH (kernel then stops sending it) instead of 0.
    pub flush_enosys: bool,
    /// Entry TTL (seconds) on LOOKUP; attributes always get TTL 0.
    pub entry_ttl: u64,
    pub counts: Vec<AtomicU64>,
    /// Test hook: the Nth request sleeps 30 s (exercises the watchdog).
    pub stall_after: Option<u64>,
    total: AtomicU64,
}

pub enum Reply {
    /// Success with this many bytes of out-args.
    Ok(usize),
    /// Negative errno.
    Err(i32),
    /// No reply (FORGET, BATCH_FORGET).
    None,
}

impl Fs {
    pub fn new(file_size: usize, direct_io: bool, flush_enosys: bool) -> Fs {
        Fs {
            data: (0..file_size).map(|i| (i % 251) as u8).collect(),
            direct_io,
            flush_enosys,
            entry_ttl: 3600,
            counts: (0..MAX_OPCODE).map(|_| AtomicU64::new(0)).collect(),
            stall_after: None,
            total: AtomicU64::new(0),
        }
    }

    pub fn snapshot(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    fn attr(&self, ino: u64) -> Option<Attr> {
        let mut a = Attr {
            ino,
            uid: 0,
            gid: 0,
            blksize: 4096,
            atime: 1_700_000_000,
            mtime: 1_700_000_000,
            ctime: 1_700_000_000,
            ..Default::default()
        };
        match ino {
            FUSE_ROOT_ID => {
                a.mode = libc::S_IFDIR | 0o755;
                a.nlink = 2;
            }
            FILE_INO => {
                a.mode = libc::S_IFREG | 0o644;
                a.nlink = 1;
                a.size = self.data.len() as u64;
                a.blocks = a.size.div_ceil(512);
            }
            _ => return None,
        }
        Some(a)
    }

    /// Handle one request. `op_in` is the per-opcode in-struct, `rest` what
    /// follows it (LOOKUP's name). Out-args go to `out`.
    pub fn handle(&self, h: &InHeader, op_in: &[u8], rest: &[u8], out: &mut [u8]) -> Reply {
        if let Some(c) = self.counts.get(h.opcode as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(n) = self.stall_after {
            if self.total.fetch_add(1, Ordering::Relaxed) + 1 == n {
                eprintln!("# --stall-after {n}: server sleeps 30 s");
                std::thread::sleep(std::time::Duration::from_secs(30));
            }
        }
        match h.opcode {
            FUSE_LOOKUP => {
                let name = rest.split(|&b| b == 0).next().unwrap_or(&[]);
                if h.nodeid != FUSE_ROOT_ID || name != FILE_NAME {
                    return Reply::Err(-libc::ENOENT);
                }
                let e = EntryOut {
                    nodeid: FILE_INO,
                    generation: 1,
                    entry_valid: self.entry_ttl,
                    attr_valid: 0,
                    attr: self.attr(FILE_INO).unwrap(),
                    ..Default::default()
                };
                Reply::Ok(put(out, &e))
            }
            FUSE_GETATTR => match self.attr(h.nodeid) {
                Some(attr) => Reply::Ok(put(
                    out,
                    &AttrOut {
                        attr_valid: 0,
                        attr,
                        ..Default::default()
                    },
                )),
                None => Reply::Err(-libc::ENOENT),
            },
            FUSE_OPEN => {
                if h.nodeid != FILE_INO {
                    return Reply::Err(-libc::EISDIR);
                }
                let o = OpenOut {
                    fh: 7,
                    open_flags: if self.direct_io { FOPEN_DIRECT_IO } else { 0 },
                    backing_id: 0,
                };
                Reply::Ok(put(out, &o))
            }
            FUSE_READ => {
                let r: ReadIn = get(op_in);
                let len = self.data.len() as u64;
                let start = r.offset.min(len) as usize;
                let end = (r.offset.saturating_add(r.size as u64)).min(len) as usize;
                let n = (end - start).min(out.len());
                out[..n].copy_from_slice(&self.data[start..start + n]);
                Reply::Ok(n)
            }
            FUSE_FLUSH => {
                if self.flush_enosys {
                    Reply::Err(-libc::ENOSYS)
                } else {
                    Reply::Ok(0)
                }
            }
            FUSE_RELEASE => Reply::Ok(0),
            FUSE_STATFS => {
                let s = Kstatfs {
                    blocks: 1,
                    bsize: 4096,
                    frsize: 4096,
                    namelen: 255,
                    files: 2,
                    ..Default::default()
                };
                Reply::Ok(put(out, &s))
            }
            FUSE_FORGET | FUSE_BATCH_FORGET => Reply::None,
            FUSE_DESTROY => Reply::Ok(0),
            FUSE_INTERRUPT => Reply::None, // requests finish fast; let them
            _ => Reply::Err(-libc::ENOSYS),
        }
    }
}
