//! Raw mount(2) over /dev/fuse, connection lookup and clean-up.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

pub struct Mount {
    pub dir: PathBuf,
    pub fd: OwnedFd,
    /// Name of the directory under /sys/fs/fuse/connections/.
    pub conn: Option<String>,
    mounted: bool,
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

impl Mount {
    pub fn new(dir: &Path) -> io::Result<Mount> {
        std::fs::create_dir_all(dir)?;
        let path = CString::new("/dev/fuse").unwrap();
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let opts = CString::new(format!(
            "fd={},rootmode=40000,user_id=0,group_id=0,allow_other",
            fd.as_raw_fd()
        ))
        .unwrap();
        let src = CString::new("fuse-uring-bench").unwrap();
        let fstype = CString::new("fuse.fuse-uring-bench").unwrap();
        let target = cstr(dir);
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                opts.as_ptr() as *const libc::c_void,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let conn = conn_of(dir);
        Ok(Mount {
            dir: dir.to_path_buf(),
            fd,
            conn,
            mounted: true,
        })
    }

    /// Abort the connection: every pending and future request fails, the
    /// server's reads and ring commands end.
    pub fn abort(&self) {
        abort_conn(self.conn.as_deref(), &self.dir);
    }

    /// Lazy unmount (MNT_DETACH). Unmounting a FUSE superblock aborts the
    /// connection, which ends the server threads.
    pub fn umount(&mut self) {
        if !self.mounted {
            return;
        }
        let target = cstr(&self.dir);
        let rc = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        // EINVAL: already gone (an abort by MNT_FORCE unmounted it)
        if rc != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            eprintln!(
                "umount2 {}: {}",
                self.dir.display(),
                io::Error::last_os_error()
            );
        }
        self.mounted = false;
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted {
            self.abort();
            self.umount();
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Abort a FUSE connection: through fusectl
/// (/sys/fs/fuse/connections/N/abort) when it is mounted, else with
/// umount2(MNT_FORCE), whose umount_begin aborts the connection too (fusectl is
/// not mounted on this machine).
pub fn abort_conn(conn: Option<&str>, dir: &Path) {
    if let Some(c) = conn {
        let p = format!("/sys/fs/fuse/connections/{c}/abort");
        if Path::new(&p).exists() {
            match std::fs::write(&p, "1") {
                Ok(()) => return,
                Err(e) => eprintln!("abort {p}: {e}"),
            }
        }
    }
    let target = cstr(dir);
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_FORCE) } != 0 {
        let e = io::Error::last_os_error();
        // EBUSY: the connection is aborted but the mount stays until
        // MNT_DETACH; EINVAL: already unmounted
        if !matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EINVAL)) {
            eprintln!("umount2(MNT_FORCE) {}: {e}", dir.display());
        }
    }
}

/// Connection id of the FUSE mount at `dir`, from /proc/self/mountinfo
/// (`major:minor` of the superblock; fusectl names it by the dev_t).
fn conn_of(dir: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = dir.to_str()?;
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() > 4 && f[4] == want {
            let (maj, min) = f[2].split_once(':')?;
            let maj: u64 = maj.parse().ok()?;
            let min: u64 = min.parse().ok()?;
            return Some(((maj << 20) | min).to_string());
        }
    }
    None
}
