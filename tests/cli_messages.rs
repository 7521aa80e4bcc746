//! What `unionfs mount` and `unionfs umount` print when a mount ends or cannot
//! be made: a clean unmount prints nothing alarming, a real failure says what
//! to do. A mountpoint left behind by a killed server (ENOTCONN) is named as
//! such, with how to clear it, and `unionfs umount` clears it; a busy mount's
//! unmount error names `-z`. Needs root and FUSE.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_unionfs");

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A directory with one small layer tar and an empty mountpoint `mnt`.
struct Fixture {
    dir: tempfile::TempDir,
    layer: String,
    mnt: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        assert!(
            Path::new("/dev/fuse").exists(),
            "/dev/fuse is missing: these tests mount for real (modprobe fuse)"
        );
        let dir = tempfile::tempdir().unwrap();
        let tar_path = dir.path().join("layer.tar");
        let mut b = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
        let mut h = tar::Header::new_ustar();
        h.set_size(6);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "etc/motd", &b"hello\n"[..]).unwrap();
        b.finish().unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        Fixture {
            layer: tar_path.display().to_string(),
            mnt,
            dir,
        }
    }

    fn m(&self) -> String {
        self.mnt.display().to_string()
    }

    fn unionfs(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("XDG_CACHE_HOME", self.dir.path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("run unionfs")
    }

    /// `unionfs mount -f -v` (logs at info, fuser's at warn), stderr piped;
    /// returns once the mount is live.
    fn mount_fg(&self) -> Child {
        let mut child = Command::new(BIN)
            .args(["mount", "-f", "-v", "--layers", &self.layer])
            .arg(&self.mnt)
            .env("XDG_CACHE_HOME", self.dir.path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while !is_mounted(&self.mnt) {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "mount did not appear"
            );
            assert!(child.try_wait().unwrap().is_none(), "mount -f exited early");
            std::thread::sleep(Duration::from_millis(10));
        }
        child
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

fn is_mounted(p: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(p.to_str().unwrap()))
}

/// Waits (at most 20 s) for `child` to exit; returns its status and stderr.
fn finish(mut child: Child) -> (std::process::ExitStatus, String) {
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the server did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (out.status, stderr(&out))
}

/// Lines a user would take for trouble: warnings and errors.
fn alarming(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.starts_with("[WARN") || l.starts_with("[ERROR") || l.contains("rror"))
        .collect()
}

/// SIGINT (Ctrl-C) and SIGTERM end a foreground mount without a warning (fuser
/// used to try to unmount again after our unmount: "Failed to umount
/// filesystem: Invalid argument"), and so does an unmount from outside.
#[test]
fn a_clean_unmount_logs_no_warning() {
    let f = Fixture::new();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let child = f.mount_fg();
        // (stat only: fuser logs its own warning for the FLUSH of a close.)
        assert_eq!(std::fs::metadata(f.mnt.join("etc/motd")).unwrap().len(), 6);
        unsafe { libc::kill(child.id() as i32, sig) };
        let (status, log) = finish(child);
        assert!(status.success(), "signal {sig}: {status}\n{log}");
        assert!(
            log.contains("unmounting"),
            "signal {sig}: no -v log?\n{log}"
        );
        assert!(alarming(&log).is_empty(), "signal {sig}:\n{log}");
        assert!(!is_mounted(&f.mnt));
    }
    let child = f.mount_fg();
    let u = f.unionfs(&["umount", &f.m()]);
    assert!(u.status.success(), "{}", stderr(&u));
    let (status, log) = finish(child);
    assert!(status.success(), "{status}\n{log}");
    assert!(alarming(&log).is_empty(), "umount from outside:\n{log}");
}

/// A failed unmount is still said: a signal while the mount is busy (a
/// process's working directory is in it) logs an error that says how to get
/// it unmounted; the mount stays served, and the next signal after that
/// process is gone ends it cleanly.
#[test]
fn a_busy_mount_on_signal_says_so() {
    let f = Fixture::new();
    let child = f.mount_fg();
    let mut inside = Command::new("sleep")
        .arg("60")
        .current_dir(f.mnt.join("etc"))
        .spawn()
        .unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(300));
    assert!(is_mounted(&f.mnt), "unmounted while busy");
    inside.kill().unwrap();
    inside.wait().unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let (status, log) = finish(child);
    assert!(status.success(), "{status}\n{log}");
    let bad = alarming(&log);
    assert_eq!(bad.len(), 1, "one error, for the busy attempt:\n{log}");
    assert!(
        bad[0].contains("busy") && bad[0].contains("umount -z"),
        "{}",
        bad[0]
    );
}

/// `kill -9` of the server leaves a mount that answers ENOTCONN. A new mount
/// there says the server is gone and how to clear it; `unionfs umount` clears
/// it; then the mount works again.
#[test]
fn a_dead_mount_is_named_and_umount_clears_it() {
    let f = Fixture::new();
    let mut child = f.mount_fg();
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    assert!(is_mounted(&f.mnt));
    let err = std::fs::metadata(&f.mnt).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    let again = f.unionfs(&["mount", "--layers", &f.layer, &f.m()]);
    assert_eq!(again.status.code(), Some(1));
    let e = stderr(&again);
    assert!(!e.contains("already a mount point"), "{e}");
    for want in [
        "server is gone",
        &format!("unionfs umount {}", f.m()),
        &format!("fusermount3 -u {}", f.m()),
    ] {
        assert!(e.contains(want), "want {want:?} in: {e}");
    }
    assert_eq!(e.lines().count(), 1, "{e}");
    let u = f.unionfs(&["umount", &f.m()]);
    assert!(u.status.success(), "{}", stderr(&u));
    assert!(!is_mounted(&f.mnt));
    let o = f.unionfs(&["mount", "--layers", &f.layer, &f.m()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(f.mnt.join("etc/motd")).unwrap(), b"hello\n");
    let u = f.unionfs(&["umount", &f.m()]);
    assert!(u.status.success(), "{}", stderr(&u));
}

/// A live mount is still "already a mount point" (not taken for a dead one).
#[test]
fn a_live_mount_is_already_a_mount_point() {
    let f = Fixture::new();
    let o = f.unionfs(&["mount", "--layers", &f.layer, &f.m()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let again = f.unionfs(&["mount", "--layers", &f.layer, &f.m()]);
    assert_eq!(again.status.code(), Some(1));
    let e = stderr(&again);
    assert!(
        e.contains("already a mount point") && !e.contains("gone"),
        "{e}"
    );
    let u = f.unionfs(&["umount", &f.m()]);
    assert!(u.status.success(), "{}", stderr(&u));
}

/// `unionfs umount` of a busy mount fails and says `-z` unmounts lazily;
/// `-z` then detaches it.
#[test]
fn umount_of_a_busy_mount_suggests_lazy() {
    let f = Fixture::new();
    let o = f.unionfs(&["mount", "--layers", &f.layer, &f.m()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let held = std::fs::File::open(f.mnt.join("etc/motd")).unwrap();
    let u = f.unionfs(&["umount", &f.m()]);
    assert_eq!(u.status.code(), Some(1));
    let e = stderr(&u);
    assert!(
        e.contains("busy") && e.contains(&format!("unionfs umount -z {}", f.m())),
        "{e}"
    );
    assert!(is_mounted(&f.mnt));
    let z = f.unionfs(&["umount", "-z", &f.m()]);
    assert!(z.status.success(), "{}", stderr(&z));
    assert!(!is_mounted(&f.mnt));
    drop(held);
}

/// A path through a symlink or with `..` names the same mount.
#[test]
fn umount_takes_a_path_with_dot_dot() {
    let f = Fixture::new();
    let o = f.unionfs(&["mount", "--layers", &f.layer, &f.m()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let odd = f.dir.path().join("mnt/../mnt");
    let u = f.unionfs(&["umount", odd.to_str().unwrap()]);
    assert!(u.status.success(), "{}", stderr(&u));
    assert!(!is_mounted(&f.mnt));
}
