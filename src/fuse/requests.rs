//! Counts of the FUSE requests a mount has received, per opcode, readable
//! live through the virtual xattr [`REQUESTS_XATTR`] on any inode of the
//! mount (`getfattr --only-values -n user.unionfs.requests MNT`): one line
//! `OPNAME COUNT` per opcode that was received, in a fixed order.
//!
//! For measuring what an operation costs in round trips (tools/bench). The
//! getxattr that reads the counts is counted before it answers. Never listed
//! by `listxattr`; `setxattr`/`removexattr` of it are refused like the
//! provenance names (`user.unionfs.*` is private on an upper).

use std::sync::atomic::{AtomicU64, Ordering};

/// The virtual xattr that answers the counts.
pub const REQUESTS_XATTR: &[u8] = b"user.unionfs.requests";

/// A FUSE opcode the adapters serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Op {
    Lookup,
    Forget,
    Getattr,
    Setattr,
    Readlink,
    Mknod,
    Mkdir,
    Unlink,
    Rmdir,
    Symlink,
    Rename,
    Link,
    Open,
    Read,
    Write,
    Flush,
    Release,
    Fsync,
    Ioctl,
    Opendir,
    Readdir,
    Readdirplus,
    Releasedir,
    Fsyncdir,
    Statfs,
    Setxattr,
    Getxattr,
    Listxattr,
    Removexattr,
    Access,
    Create,
    Fallocate,
}

const NAMES: [&str; 32] = [
    "lookup",
    "forget",
    "getattr",
    "setattr",
    "readlink",
    "mknod",
    "mkdir",
    "unlink",
    "rmdir",
    "symlink",
    "rename",
    "link",
    "open",
    "read",
    "write",
    "flush",
    "release",
    "fsync",
    "ioctl",
    "opendir",
    "readdir",
    "readdirplus",
    "releasedir",
    "fsyncdir",
    "statfs",
    "setxattr",
    "getxattr",
    "listxattr",
    "removexattr",
    "access",
    "create",
    "fallocate",
];

/// The counters of one mount.
#[derive(Debug, Default)]
pub struct Requests {
    counts: [AtomicU64; NAMES.len()],
}

impl Requests {
    /// Counts one request of `op`.
    #[inline]
    pub fn count(&self, op: Op) {
        self.counts[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The xattr's value: `OPNAME COUNT` lines for the opcodes received.
    pub fn text(&self) -> Vec<u8> {
        let mut s = String::new();
        for (name, c) in NAMES.iter().zip(&self.counts) {
            let n = c.load(Ordering::Relaxed);
            if n > 0 {
                s.push_str(&format!("{name} {n}\n"));
            }
        }
        s.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_by_name_in_order_and_only_when_nonzero() {
        let r = Requests::default();
        assert_eq!(r.text(), b"");
        r.count(Op::Mknod);
        r.count(Op::Lookup);
        r.count(Op::Lookup);
        r.count(Op::Fallocate);
        assert_eq!(
            String::from_utf8(r.text()).unwrap(),
            "lookup 2\nmknod 1\nfallocate 1\n"
        );
    }
}
