//! FUSE over io_uring transport (kernel 6.14+, protocol 7.42).
//!
//! One queue per possible CPU (the kernel routes a request to the queue of
//! the CPU its caller runs on). Each queue is a thread pinned to that CPU with
//! its own io_uring (128-byte SQEs: the command lives in the SQE). Each ring
//! entry is a header buffer (struct fuse_uring_req_header) plus a payload
//! buffer, handed to the kernel once with FUSE_IO_URING_CMD_REGISTER
//! (IORING_OP_URING_CMD on the /dev/fuse fd, sqe->addr = iovec[2]). A CQE means
//! "a request is in this entry"; the reply is written into the same buffers and
//! FUSE_IO_URING_CMD_COMMIT_AND_FETCH hands the entry back and fetches the next
//! request, in one SQE. One io_uring_enter per batch, no read/write per request.

use crate::fs::{Fs, Reply};
use crate::proto::*;
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::mem::size_of;
use std::os::fd::RawFd;
use std::ptr::addr_of_mut;
use std::sync::mpsc::Sender;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Setup {
    /// IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN
    Defer,
    /// IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG
    Coop,
    /// no extra flags
    Plain,
}

pub struct QueueCfg {
    pub qid: u16,
    pub depth: usize,
    pub payload_size: usize,
    pub fd: RawFd,
    pub setup: Setup,
    pub pin: bool,
}

#[derive(Default, Debug, Clone)]
pub struct QueueStats {
    pub requests: u64,
    pub enters: u64,
}

struct Ent {
    hdr: *mut UringReqHeader,
    payload: *mut u8,
    iov: Box<[libc::iovec; 2]>,
}

struct Bufs {
    ents: Vec<Ent>,
    payload_layout: Layout,
}

impl Drop for Bufs {
    fn drop(&mut self) {
        for e in &self.ents {
            unsafe {
                dealloc(e.hdr as *mut u8, Layout::new::<UringReqHeader>());
                dealloc(e.payload, self.payload_layout);
            }
        }
    }
}

pub fn pin_to_cpu(cpu: usize) {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Number of queues the kernel wants: num_possible_cpus().
pub fn possible_cpus() -> usize {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    let mut n = 0;
    for part in s.trim().split(',') {
        if let Some((a, b)) = part.split_once('-') {
            n += b.parse::<usize>().unwrap_or(0) - a.parse::<usize>().unwrap_or(0) + 1;
        } else if !part.is_empty() {
            n += 1;
        }
    }
    n.max(1)
}

fn cmd_sqe(fd: RawFd, op: u32, qid: u16, commit_id: u64, ent: usize) -> squeue::Entry128 {
    let mut cmd = [0u8; 80];
    put(
        &mut cmd,
        &UringCmdReq {
            flags: 0,
            commit_id,
            qid,
            padding: [0; 6],
        },
    );
    opcode::UringCmd80::new(types::Fd(fd), op)
        .cmd(cmd)
        .build()
        .user_data(ent as u64)
}

fn register_sqe(fd: RawFd, qid: u16, ent: usize, iov: *const libc::iovec) -> squeue::Entry128 {
    let mut cmd = [0u8; 80];
    put(
        &mut cmd,
        &UringCmdReq {
            flags: 0,
            commit_id: 0,
            qid,
            padding: [0; 6],
        },
    );
    let mut e = opcode::UringCmd80::new(types::Fd(fd), FUSE_IO_URING_CMD_REGISTER)
        .cmd(cmd)
        .addr(Some(iov as u64))
        .build()
        .user_data(ent as u64);
    // The io-uring crate's UringCmd80 has no `len`; the kernel wants
    // sqe->len = 2 (the iovec count). Entry128 is repr(C) starting with the
    // plain io_uring_sqe, whose `len` (u32) sits at byte offset 24.
    unsafe {
        let p = &mut e as *mut squeue::Entry128 as *mut u8;
        (p.add(24) as *mut u32).write(2);
    }
    e
}

fn errno_name(e: i32) -> String {
    io::Error::from_raw_os_error(e).to_string()
}

/// Run one queue until the connection goes away. `ready` gets Ok once the
/// REGISTER commands were submitted without an immediate error, or the error.
pub fn serve_queue(
    cfg: QueueCfg,
    fs: Arc<Fs>,
    ready: Sender<Result<u16, String>>,
) -> io::Result<QueueStats> {
    if cfg.pin {
        pin_to_cpu(cfg.qid as usize);
    }
    let mut b = IoUring::<squeue::Entry128, cqueue::Entry>::builder();
    match cfg.setup {
        Setup::Defer => {
            b.setup_single_issuer().setup_defer_taskrun();
        }
        Setup::Coop => {
            b.setup_coop_taskrun().setup_taskrun_flag();
        }
        Setup::Plain => {}
    }
    let entries = (cfg.depth as u32).next_power_of_two().max(8);
    let mut ring = match b.build(entries) {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(format!("io_uring_setup(SQE128, {:?}): {e}", cfg.setup)));
            return Err(e);
        }
    };

    let payload_layout = Layout::from_size_align(cfg.payload_size, 4096).unwrap();
    let mut bufs = Bufs {
        ents: Vec::new(),
        payload_layout,
    };
    for _ in 0..cfg.depth {
        let hdr = unsafe { alloc_zeroed(Layout::new::<UringReqHeader>()) } as *mut UringReqHeader;
        let payload = unsafe { alloc_zeroed(payload_layout) };
        assert!(!hdr.is_null() && !payload.is_null());
        let iov = Box::new([
            libc::iovec {
                iov_base: hdr as *mut libc::c_void,
                iov_len: size_of::<UringReqHeader>(),
            },
            libc::iovec {
                iov_base: payload as *mut libc::c_void,
                iov_len: cfg.payload_size,
            },
        ]);
        bufs.ents.push(Ent { hdr, payload, iov });
    }

    // REGISTER every entry. Success is silent (the CQE comes with the first
    // request); an error completes at once.
    {
        let mut sq = ring.submission();
        for (i, e) in bufs.ents.iter().enumerate() {
            let sqe = register_sqe(cfg.fd, cfg.qid, i, e.iov.as_ptr());
            unsafe { sq.push(&sqe).expect("sq full") };
        }
    }
    if let Err(e) = ring.submit() {
        let _ = ready.send(Err(format!("io_uring_enter(REGISTER): {e}")));
        return Err(e);
    }
    let mut pending: Vec<(usize, i32)> = Vec::new();
    for c in ring.completion() {
        pending.push((c.user_data() as usize, c.result()));
    }
    if let Some(&(_, r)) = pending.iter().find(|(_, r)| *r < 0) {
        let msg = format!(
            "FUSE_IO_URING_CMD_REGISTER qid={} failed: res={} ({})",
            cfg.qid,
            r,
            errno_name(-r)
        );
        let _ = ready.send(Err(msg.clone()));
        return Err(io::Error::other(msg));
    }
    let _ = ready.send(Ok(cfg.qid));

    let mut stats = QueueStats::default();
    let mut dead = 0usize;
    let mut name_copy = Vec::with_capacity(256);
    loop {
        for (idx, res) in pending.drain(..) {
            if res < 0 {
                // ENOTCONN/ECONNABORTED/ECANCELED at teardown
                if !matches!(
                    -res,
                    libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED | libc::ENODEV
                ) {
                    eprintln!(
                        "queue {} entry {}: res {} ({})",
                        cfg.qid,
                        idx,
                        res,
                        errno_name(-res)
                    );
                }
                dead += 1;
                continue;
            }
            stats.requests += 1;
            let e = &bufs.ents[idx];
            // SAFETY: the kernel filled this entry and will not touch it until
            // we commit it; we only go through raw pointers.
            let (h, op_in, ent_io) = unsafe {
                let hp = e.hdr;
                let h: InHeader =
                    std::ptr::read_volatile(addr_of_mut!((*hp).in_out) as *const InHeader);
                let op_in: [u8; FUSE_URING_OP_IN_OUT_SZ] =
                    std::ptr::read_volatile(addr_of_mut!((*hp).op_in));
                let io: UringEntInOut =
                    std::ptr::read_volatile(addr_of_mut!((*hp).ring_ent_in_out));
                (h, op_in, io)
            };
            let in_sz = (ent_io.payload_sz as usize).min(cfg.payload_size);
            // The reply goes into the same payload buffer: copy the (small)
            // request payload out first (LOOKUP's name; READ has none).
            name_copy.clear();
            name_copy.extend_from_slice(unsafe { std::slice::from_raw_parts(e.payload, in_sz) });
            let out = unsafe { std::slice::from_raw_parts_mut(e.payload, cfg.payload_size) };
            let k = op_in_size(h.opcode).min(FUSE_URING_OP_IN_OUT_SZ);
            let r = fs.handle(&h, &op_in[..k], &name_copy, out);
            let (error, len) = match r {
                Reply::Ok(n) => (0, n),
                Reply::Err(e) => (e, 0),
                // never over the ring (forgets go through /dev/fuse); the
                // kernel still needs the entry back
                Reply::None => (0, 0),
            };
            unsafe {
                let hp = e.hdr;
                std::ptr::write_volatile(
                    addr_of_mut!((*hp).in_out) as *mut OutHeader,
                    OutHeader {
                        len: (size_of::<OutHeader>() + len) as u32,
                        error,
                        unique: h.unique,
                    },
                );
                std::ptr::write_volatile(
                    addr_of_mut!((*hp).ring_ent_in_out.payload_sz),
                    len as u32,
                );
            }
            let sqe = cmd_sqe(
                cfg.fd,
                FUSE_IO_URING_CMD_COMMIT_AND_FETCH,
                cfg.qid,
                ent_io.commit_id,
                idx,
            );
            unsafe { ring.submission().push(&sqe).expect("sq full") };
        }
        if dead >= cfg.depth {
            return Ok(stats);
        }
        stats.enters += 1;
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
        for c in ring.completion() {
            pending.push((c.user_data() as usize, c.result()));
        }
    }
}
