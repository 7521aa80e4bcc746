//! Classic transport: read(2) one request from /dev/fuse, writev(2) the reply.
//! Also does the INIT handshake, which always goes over /dev/fuse.

use crate::fs::{Fs, Reply};
use crate::proto::*;
use std::io;
use std::mem::size_of;
use std::os::fd::RawFd;
use std::sync::Arc;

pub const MAX_WRITE: u32 = 128 * 1024;
/// read(2) on /dev/fuse wants room for max_write plus headers.
const BUF_SIZE: usize = MAX_WRITE as usize + 64 * 1024;

pub struct InitInfo {
    pub kernel_major: u32,
    pub kernel_minor: u32,
    pub kernel_flags: u64,
    pub reply_flags: u64,
}

fn read_req(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            // ENOENT: the request was interrupted before we read it
            Some(libc::EINTR) | Some(libc::ENOENT) | Some(libc::EAGAIN) => continue,
            _ => return Err(e),
        }
    }
}

fn write_reply(fd: RawFd, unique: u64, error: i32, data: &[u8]) -> io::Result<()> {
    let oh = OutHeader {
        len: (size_of::<OutHeader>() + data.len()) as u32,
        error,
        unique,
    };
    let iov = [
        libc::iovec {
            iov_base: &oh as *const OutHeader as *mut libc::c_void,
            iov_len: size_of::<OutHeader>(),
        },
        libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        },
    ];
    let cnt = if data.is_empty() { 1 } else { 2 };
    let n = unsafe { libc::writev(fd, iov.as_ptr(), cnt) };
    if n < 0 {
        let e = io::Error::last_os_error();
        // ENOENT: the request was aborted/interrupted meanwhile; not fatal
        if e.raw_os_error() != Some(libc::ENOENT) {
            return Err(e);
        }
    }
    Ok(())
}

/// Read INIT from /dev/fuse and answer it. `want_uring` asks for
/// FUSE_OVER_IO_URING when the kernel offers it.
pub fn init(fd: RawFd, want_uring: bool) -> io::Result<InitInfo> {
    let mut buf = vec![0u8; BUF_SIZE];
    let n = read_req(fd, &mut buf)?;
    let h: InHeader = get(&buf[..n]);
    if h.opcode != FUSE_INIT {
        return Err(io::Error::other(format!(
            "first request is opcode {}, not INIT",
            h.opcode
        )));
    }
    let i: InitIn = get(&buf[size_of::<InHeader>()..n]);
    let kflags = i.flags as u64 | ((i.flags2 as u64) << 32);
    let mut flags = FUSE_INIT_EXT | FUSE_ASYNC_READ;
    if want_uring && kflags & FUSE_OVER_IO_URING != 0 {
        flags |= FUSE_OVER_IO_URING;
    }
    flags &= kflags;
    let o = InitOut {
        major: FUSE_KERNEL_VERSION,
        minor: i.minor.min(FUSE_MAX_MINOR),
        max_readahead: i.max_readahead,
        flags: flags as u32,
        flags2: (flags >> 32) as u32,
        max_background: 64,
        congestion_threshold: 48,
        max_write: MAX_WRITE,
        time_gran: 1,
        ..Default::default()
    };
    let mut out = [0u8; size_of::<InitOut>()];
    put(&mut out, &o);
    write_reply(fd, h.unique, 0, &out)?;
    Ok(InitInfo {
        kernel_major: i.major,
        kernel_minor: i.minor,
        kernel_flags: kflags,
        reply_flags: flags,
    })
}

/// Serve requests until the connection goes away (ENODEV) or is aborted.
pub fn serve(fd: RawFd, fs: Arc<Fs>) -> io::Result<()> {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut out = vec![0u8; BUF_SIZE];
    loop {
        let n = match read_req(fd, &mut buf) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => return Ok(()),
            Err(e) => return Err(e),
        };
        if n < size_of::<InHeader>() {
            return Err(io::Error::other(format!("short read {n}")));
        }
        let h: InHeader = get(&buf[..n]);
        let body = &buf[size_of::<InHeader>()..n];
        let k = op_in_size(h.opcode).min(body.len());
        let (op_in, rest) = body.split_at(k);
        let r = fs.handle(&h, op_in, rest, &mut out);
        let res = match r {
            Reply::Ok(len) => write_reply(fd, h.unique, 0, &out[..len]),
            Reply::Err(e) => write_reply(fd, h.unique, e, &[]),
            Reply::None => Ok(()),
        };
        match res {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}
