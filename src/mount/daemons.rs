//! Which process serves which mount, so that `unionfs umount` can wait for it.
//!
//! `umount2` returns once the kernel has detached the mount; the daemon then
//! sees its connection end and exits a little later, and only its exit
//! releases the upper's lock. `unionfs umount m && unionfs commit …` would
//! meet that lock. So the daemon records its pid under the mount's device
//! number (`MAJ:MIN` of mountinfo, unique among live mounts) in a private
//! runtime directory, and `umount` waits for that pid to exit.
//!
//! Owns the record files only. The directory is `$XDG_RUNTIME_DIR/unionfs`,
//! else `/run/unionfs` for root, else `$TMPDIR/unionfs-UID`; it must be a
//! real directory owned by the caller and not writable by others, or nothing
//! is recorded (waiting is a courtesy, never a reason to fail).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The runtime directory, made if missing; `None` if it cannot be trusted.
fn dir() -> Option<PathBuf> {
    // SAFETY: plain libc call.
    let uid = unsafe { libc::geteuid() };
    let d = match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(r) => PathBuf::from(r).join("unionfs"),
        None if uid == 0 => PathBuf::from("/run/unionfs"),
        None => std::env::temp_dir().join(format!("unionfs-{uid}")),
    };
    let _ = fs::DirBuilder::new().mode(0o700).create(&d);
    let m = fs::symlink_metadata(&d).ok()?;
    (m.is_dir() && m.uid() == uid && m.mode() & 0o022 == 0).then_some(d)
}

fn record(dev: &str) -> Option<PathBuf> {
    if dev.is_empty() || dev.contains('/') {
        return None;
    }
    Some(dir()?.join(format!("{dev}.pid")))
}

/// Records that this process serves the mount of device `dev` at `mp`, and
/// removes the records of daemons that died without removing theirs
/// (`kill -9`). Best effort: a failure is logged at debug level.
pub fn register(dev: &str, mp: &Path) {
    let Some(path) = record(dev) else { return };
    if let Some(Ok(entries)) = path.parent().map(fs::read_dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "pid")
                && read(&p).is_none_or(|(pid, _)| !alive(pid))
            {
                let _ = fs::remove_file(&p);
            }
        }
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let body = format!("{}\n{}\n", std::process::id(), mp.display());
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| f.write_all(body.as_bytes()))
        .and_then(|()| fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        log::debug!(target: "unionfs", "cannot record the daemon of {}: {e}", mp.display());
    }
}

/// Removes this process's record for device `dev` (at exit).
pub fn unregister(dev: &str) {
    let Some(path) = record(dev) else { return };
    if read(&path).is_some_and(|(pid, _)| pid == std::process::id()) {
        let _ = fs::remove_file(&path);
    }
}

fn read(path: &Path) -> Option<(u32, PathBuf)> {
    let s = fs::read_to_string(path).ok()?;
    let (pid, mp) = s.split_once('\n')?;
    Some((pid.parse().ok()?, PathBuf::from(mp.trim_end_matches('\n'))))
}

/// The pid serving the mount of device `dev` at `mp`, if one is recorded and
/// alive.
pub fn daemon_of(dev: &str, mp: &Path) -> Option<u32> {
    let (pid, at) = read(&record(dev)?)?;
    (at == mp && alive(pid)).then_some(pid)
}

/// Returns true if and only if `pid` exists and has not exited (a zombie has).
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Waits up to `limit` for `pid` to exit; returns false if it is still there.
pub fn wait_exit(pid: u32, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while alive(pid) {
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}
