//! Hand-written FUSE wire structs, from the kernel's include/uapi/linux/fuse.h
//! (protocol 7.42+: FUSE over io_uring). Only what the prototype serves.
#![allow(dead_code)]

use std::mem::size_of;

pub const FUSE_KERNEL_VERSION: u32 = 7;
/// The minor we claim at most (7.42 added FUSE_OVER_IO_URING); we echo the
/// kernel's minor when it is lower.
pub const FUSE_MAX_MINOR: u32 = 44;
pub const FUSE_ROOT_ID: u64 = 1;

// opcodes
pub const FUSE_LOOKUP: u32 = 1;
pub const FUSE_FORGET: u32 = 2;
pub const FUSE_GETATTR: u32 = 3;
pub const FUSE_OPEN: u32 = 14;
pub const FUSE_READ: u32 = 15;
pub const FUSE_STATFS: u32 = 17;
pub const FUSE_RELEASE: u32 = 18;
pub const FUSE_FLUSH: u32 = 25;
pub const FUSE_INIT: u32 = 26;
pub const FUSE_INTERRUPT: u32 = 36;
pub const FUSE_DESTROY: u32 = 38;
pub const FUSE_BATCH_FORGET: u32 = 42;
/// Opcodes are small; counters are kept for 0..MAX_OPCODE.
pub const MAX_OPCODE: usize = 64;

// init flags (flags | flags2 << 32)
pub const FUSE_ASYNC_READ: u64 = 1 << 0;
pub const FUSE_INIT_EXT: u64 = 1 << 30;
pub const FUSE_OVER_IO_URING: u64 = 1 << 41;

// open_out flags
pub const FOPEN_DIRECT_IO: u32 = 1 << 0;

// struct fuse_uring_req_header sizes
pub const FUSE_URING_IN_OUT_HEADER_SZ: usize = 128;
pub const FUSE_URING_OP_IN_OUT_SZ: usize = 128;
// enum fuse_uring_cmd
pub const FUSE_IO_URING_CMD_REGISTER: u32 = 1;
pub const FUSE_IO_URING_CMD_COMMIT_AND_FETCH: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct InHeader {
    pub len: u32,
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    pub total_extlen: u16,
    pub padding: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OutHeader {
    pub len: u32,
    pub error: i32,
    pub unique: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct InitIn {
    pub major: u32,
    pub minor: u32,
    pub max_readahead: u32,
    pub flags: u32,
    pub flags2: u32,
    pub unused: [u32; 11],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct InitOut {
    pub major: u32,
    pub minor: u32,
    pub max_readahead: u32,
    pub flags: u32,
    pub max_background: u16,
    pub congestion_threshold: u16,
    pub max_write: u32,
    pub time_gran: u32,
    pub max_pages: u16,
    pub map_alignment: u16,
    pub flags2: u32,
    pub max_stack_depth: u32,
    pub request_timeout: u16,
    pub unused: [u16; 11],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: u64,
    pub mtime: u64,
    pub ctime: u64,
    pub atimensec: u32,
    pub mtimensec: u32,
    pub ctimensec: u32,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
    pub flags: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EntryOut {
    pub nodeid: u64,
    pub generation: u64,
    pub entry_valid: u64,
    pub attr_valid: u64,
    pub entry_valid_nsec: u32,
    pub attr_valid_nsec: u32,
    pub attr: Attr,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AttrOut {
    pub attr_valid: u64,
    pub attr_valid_nsec: u32,
    pub dummy: u32,
    pub attr: Attr,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GetattrIn {
    pub getattr_flags: u32,
    pub dummy: u32,
    pub fh: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenIn {
    pub flags: u32,
    pub open_flags: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenOut {
    pub fh: u64,
    pub open_flags: u32,
    pub backing_id: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadIn {
    pub fh: u64,
    pub offset: u64,
    pub size: u32,
    pub read_flags: u32,
    pub lock_owner: u64,
    pub flags: u32,
    pub padding: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ReleaseIn {
    pub fh: u64,
    pub flags: u32,
    pub release_flags: u32,
    pub lock_owner: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FlushIn {
    pub fh: u64,
    pub unused: u32,
    pub padding: u32,
    pub lock_owner: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ForgetIn {
    pub nlookup: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Kstatfs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
    pub padding: u32,
    pub spare: [u32; 6],
}

/// struct fuse_uring_ent_in_out
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UringEntInOut {
    pub flags: u64,
    /// the request's unique; echoed in fuse_uring_cmd_req.commit_id
    pub commit_id: u64,
    /// bytes valid in the payload buffer (either direction)
    pub payload_sz: u32,
    pub padding: u32,
    pub reserved: u64,
}

/// struct fuse_uring_req_header: iov[0] of a REGISTER
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UringReqHeader {
    /// fuse_in_header on fetch, fuse_out_header on commit
    pub in_out: [u8; FUSE_URING_IN_OUT_HEADER_SZ],
    /// the per-opcode header (in_args[0])
    pub op_in: [u8; FUSE_URING_OP_IN_OUT_SZ],
    pub ring_ent_in_out: UringEntInOut,
}

/// struct fuse_uring_cmd_req: the first bytes of the SQE128's 80-byte cmd area
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UringCmdReq {
    pub flags: u64,
    pub commit_id: u64,
    pub qid: u16,
    pub padding: [u8; 6],
}

const _: () = {
    assert!(size_of::<InHeader>() == 40);
    assert!(size_of::<OutHeader>() == 16);
    assert!(size_of::<InitIn>() == 64);
    assert!(size_of::<InitOut>() == 64);
    assert!(size_of::<Attr>() == 88);
    assert!(size_of::<EntryOut>() == 128);
    assert!(size_of::<AttrOut>() == 104);
    assert!(size_of::<GetattrIn>() == 16);
    assert!(size_of::<OpenOut>() == 16);
    assert!(size_of::<ReadIn>() == 40);
    assert!(size_of::<ReleaseIn>() == 24);
    assert!(size_of::<FlushIn>() == 24);
    assert!(size_of::<Kstatfs>() == 80);
    assert!(size_of::<UringEntInOut>() == 32);
    assert!(size_of::<UringReqHeader>() == 288);
    assert!(size_of::<UringCmdReq>() == 24);
};

/// Size of the fixed per-opcode in-struct (in_args[0]) for the opcodes served.
/// io_uring puts it in `op_in`; /dev/fuse puts it right after the in-header.
pub fn op_in_size(opcode: u32) -> usize {
    match opcode {
        FUSE_GETATTR => size_of::<GetattrIn>(),
        FUSE_OPEN => size_of::<OpenIn>(),
        FUSE_READ => size_of::<ReadIn>(),
        FUSE_RELEASE => size_of::<ReleaseIn>(),
        FUSE_FLUSH => size_of::<FlushIn>(),
        FUSE_FORGET => size_of::<ForgetIn>(),
        FUSE_INIT => size_of::<InitIn>(),
        _ => 0, // LOOKUP (name only), STATFS, DESTROY, unknown
    }
}

pub fn opcode_name(op: u32) -> &'static str {
    match op {
        FUSE_LOOKUP => "LOOKUP",
        FUSE_FORGET => "FORGET",
        FUSE_GETATTR => "GETATTR",
        FUSE_OPEN => "OPEN",
        FUSE_READ => "READ",
        FUSE_STATFS => "STATFS",
        FUSE_RELEASE => "RELEASE",
        FUSE_FLUSH => "FLUSH",
        FUSE_INIT => "INIT",
        FUSE_INTERRUPT => "INTERRUPT",
        FUSE_DESTROY => "DESTROY",
        FUSE_BATCH_FORGET => "BATCH_FORGET",
        _ => "other",
    }
}

/// Read a plain-old-data struct from the front of `buf` (zero-filled if short).
pub fn get<T: Copy + Default>(buf: &[u8]) -> T {
    let mut v = T::default();
    let n = size_of::<T>().min(buf.len());
    // SAFETY: T is one of the repr(C) integer-only structs above.
    unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), &mut v as *mut T as *mut u8, n) };
    v
}

/// Write a plain-old-data struct at the front of `buf`; returns its size.
pub fn put<T: Copy>(buf: &mut [u8], v: &T) -> usize {
    let n = size_of::<T>();
    assert!(buf.len() >= n);
    // SAFETY: T is one of the repr(C) integer-only structs above.
    unsafe { std::ptr::copy_nonoverlapping(v as *const T as *const u8, buf.as_mut_ptr(), n) };
    n
}
