//! The mount's life: check the mountpoint, daemonize with a readiness report,
//! mount, serve, and unmount on SIGINT/SIGTERM/SIGHUP.
//!
//! By default the command returns only once the mount is live: the process forks
//! before doing anything else; the child indexes the layers and mounts, then
//! tells the parent "ready" (or the error) through a pipe; the parent prints the
//! error, if any, and exits with the matching status. So `unionfs mount … && ls
//! MNT` never races, and a failure leaves nothing mounted and nothing running.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{Config, MountOption, SessionACL};

use crate::error::{Error, Result};
use crate::fuse::rw::RwFs;
use crate::fuse::{ProvenanceXattrs, UnionFs};
use crate::idmap::IdMap;
use crate::overlay::{self, Overlay};
use crate::tar::IndexOptions;
use crate::upper::{Upper, WhiteoutFormat, OVERRIDE_XATTR};

mod daemons;

/// Everything `unionfs mount` needs.
#[derive(Clone, Debug, Default)]
pub struct MountConfig {
    /// Registry images: fetch every layer's chunks in the background once
    /// mounted (`-o prefetch`).
    pub prefetch: bool,
    /// The lower layers: loose tars or an image.
    pub source: crate::layers::Source,
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// Stay in the foreground (logs to stderr).
    pub foreground: bool,
    /// Let other users access the mount (`allow_other`).
    pub allow_other: bool,
    /// Let root access the mount (`allow_root`).
    pub allow_root: bool,
    /// Honour set-user-id bits (default: `nosuid`).
    pub suid: bool,
    /// Honour device files (default: `nodev`).
    pub dev: bool,
    /// Leave permission checks to unionfs rather than the kernel (default: kernel).
    pub no_default_permissions: bool,
    /// Open files with an `OPEN` per file and serve upper files by FUSE
    /// passthrough where the kernel allows it (`-o passthrough`; root
    /// only). Default: no open handle at all (`overlay::fileio`), two round
    /// trips fewer per `open`/`close`.
    pub passthrough: bool,
    /// Metadata-only copy-up of lower files (`-o metacopy=on`).
    pub metacopy: bool,
    /// FUSE worker threads.
    pub threads: usize,
    /// Index caching.
    pub index: IndexOptions,
    /// Where a background daemon writes its log (default: nowhere).
    pub log_file: Option<PathBuf>,
    /// The writable upper directory (none: a read-only mount).
    pub upper: Option<PathBuf>,
    /// The work directory (default: next to the upper).
    pub work: Option<PathBuf>,
    /// How whiteouts are written in the upper.
    pub whiteout_format: WhiteoutFormat,
    /// How owners are reported (`--uidmap`, `--gidmap`, squash options).
    pub idmap: IdMap,
    /// List the virtual provenance xattrs (`user.unionfs.layer`,
    /// `user.unionfs.shadows`) in `listxattr` of every regular file and
    /// directory (`-o provenance`; the kernel reads no `user.*` xattr of
    /// other objects). `getxattr` answers them either way; unlisted by
    /// default, so that `cp -a` and `tar --xattrs` do not copy them.
    pub provenance: bool,
}

/// Returns true if and only if `path` (absolute) is a mount point, according to
/// /proc/self/mountinfo (never `stat`s it: a dead FUSE mount would hang or fail).
pub fn is_mounted(path: &Path) -> io::Result<bool> {
    Ok(mount_entry(path)?.is_some())
}

/// The topmost mount on a mountpoint, as /proc/self/mountinfo lists it.
struct MountEntry {
    /// `MAJ:MIN` of the mounted filesystem.
    dev: String,
    /// Filesystem type: `fuse`, `fuse.unionfs` (mounted by fusermount3), `ext4`...
    fstype: String,
}

/// What is mounted on top at `path` (absolute): the last mountinfo line for it.
fn mount_entry(path: &Path) -> io::Result<Option<MountEntry>> {
    let info = std::fs::read("/proc/self/mountinfo")?;
    let want = path.as_os_str().as_bytes();
    let text = |f: &[u8]| String::from_utf8_lossy(f).into_owned();
    Ok(info.split(|&b| b == b'\n').rev().find_map(|line| {
        let f: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        if f.len() < 5 || unescape_mountinfo(f[4]) != want {
            return None;
        }
        // Optional fields end with "-"; the filesystem type follows.
        let sep = f.iter().skip(5).position(|&x| x == b"-")? + 5;
        Some(MountEntry {
            dev: text(f[2]),
            fstype: text(f.get(sep + 1)?),
        })
    }))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub(crate) fn unescape_mountinfo(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && i + 3 < s.len()
            && s[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (s[i + 1] - b'0') * 64 + (s[i + 2] - b'0') * 8 + (s[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// `mp` made absolute as mountinfo lists it: the parent canonical, the last
/// component not resolved (it may be a dead mount, which cannot be `stat`ed).
fn mount_path(mp: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(mp).map_err(|e| Error::io(mp, e))?;
    Ok(match (abs.parent(), abs.file_name()) {
        (Some(p), Some(n)) => p.canonicalize().map_err(|e| Error::io(p, e))?.join(n),
        _ => abs,
    })
}

/// Returns true if and only if the FUSE mount at `path` has lost its server
/// (killed, crashed): the kernel answers `ENOTCONN`. Asked from a helper thread
/// with a deadline, because a server that is alive but stuck makes `stat` wait.
fn is_dead_fuse(path: &Path) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.to_owned();
    let asked = std::thread::Builder::new()
        .name("stat".into())
        .spawn(move || {
            let errno = std::fs::symlink_metadata(&p)
                .err()
                .and_then(|e| e.raw_os_error());
            let _ = tx.send(errno);
        });
    let Ok(helper) = asked else { return false };
    match rx.recv_timeout(Duration::from_secs(2)) {
        Ok(errno) => {
            // Gone before anything forks (mount daemonizes after this check).
            let _ = helper.join();
            errno == Some(libc::ENOTCONN)
        }
        Err(_) => false,
    }
}

/// Checks the mountpoint and returns its absolute path.
pub fn check_mountpoint(mp: &Path) -> Result<PathBuf> {
    let abs = mount_path(mp)?;
    let entry = mount_entry(&abs).map_err(|e| Error::io("/proc/self/mountinfo", e))?;
    if let Some(entry) = entry {
        let fuse = entry.fstype == "fuse"
            || entry.fstype == "fuseblk"
            || entry.fstype.starts_with("fuse.");
        if fuse && is_dead_fuse(&abs) {
            return Err(Error::Usage(format!(
                "{0}: the FUSE mount there is dead, its server is gone (killed or crashed: \
                 the mountpoint answers \"Transport endpoint is not connected\"); clear it \
                 with: unionfs umount {0} (or: fusermount3 -u {0}), then mount again",
                abs.display()
            )));
        }
        return Err(Error::Usage(format!(
            "{}: already a mount point (unmount it first: unionfs umount {})",
            abs.display(),
            abs.display()
        )));
    }
    let meta = std::fs::metadata(&abs).map_err(|e| Error::io(&abs, e))?;
    if !meta.is_dir() {
        return Err(Error::Usage(format!(
            "{}: mountpoint is not a directory",
            abs.display()
        )));
    }
    Ok(abs)
}

fn fuse_config(cfg: &MountConfig) -> Config {
    let mut opts = vec![
        MountOption::FSName("unionfs".into()),
        MountOption::Subtype("unionfs".into()),
        if cfg.upper.is_some() {
            MountOption::RW
        } else {
            MountOption::RO
        },
        if cfg.suid {
            MountOption::Suid
        } else {
            MountOption::NoSuid
        },
        if cfg.dev {
            MountOption::Dev
        } else {
            MountOption::NoDev
        },
    ];
    if !cfg.no_default_permissions {
        opts.push(MountOption::DefaultPermissions);
    }
    let mut c = Config::default();
    c.mount_options = opts;
    c.acl = if cfg.allow_other {
        SessionACL::All
    } else if cfg.allow_root {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    c.n_threads = Some(cfg.threads.max(1));
    c.clone_fd = cfg.threads > 1;
    c
}

/// Explains a mount failure in terms of what the user can do.
fn mount_error(mp: &Path, e: io::Error) -> Error {
    let dev_fuse_closed = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_err_and(|e| e.raw_os_error() == Some(libc::EACCES));
    if dev_fuse_closed {
        return Error::Io {
            path: "/dev/fuse".into(),
            source: io::Error::new(
                e.kind(),
                "cannot be opened by this user, so nothing can be mounted: it is usually \
                 mode 0666 (Debian's udev rule); on a machine without udev, as root: \
                 chmod 0666 /dev/fuse",
            ),
        };
    }
    let hint = match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => {
            " (is /dev/fuse accessible, and fusermount3 installed? for -o allow_other as a \
             normal user, /etc/fuse.conf needs user_allow_other)"
        }
        Some(libc::ENOENT) => " (is the fuse3 package installed, and /dev/fuse present?)",
        _ => "",
    };
    Error::Io {
        path: mp.to_owned(),
        source: io::Error::new(e.kind(), format!("mount failed: {e}{hint}")),
    }
}

/// Mounts per `cfg` and serves until unmounted. Returns after unmount in the
/// foreground; in the background, the calling (parent) process exits once the
/// mount is live and this returns only in the daemon, after unmount.
pub fn run(cfg: &MountConfig) -> Result<()> {
    let mp = check_mountpoint(&cfg.mountpoint)?;
    let mut ready = if cfg.foreground {
        None
    } else {
        Some(daemonize()?)
    };
    let result = serve(cfg, &mp, &mut ready);
    if let (Err(e), Some(pipe)) = (&result, ready.as_mut()) {
        let _ = writeln!(pipe, "ERR {e}");
        std::process::exit(1);
    }
    result
}

fn serve(cfg: &MountConfig, mp: &Path, ready: &mut Option<File>) -> Result<()> {
    let (stack, image) = crate::layers::open(&cfg.source, &cfg.index)?;
    if cfg.prefetch {
        for l in stack.layers() {
            if let Some(r) = l.blob().stored().as_remote() {
                r.clone().fetch_all();
            }
        }
    }
    let labels = crate::layers::labels(&stack, image.as_ref());
    let copy_labels = crate::layers::copy_labels(&stack, image.as_ref());
    drop(image);
    let prov = ProvenanceXattrs::new(labels, cfg.provenance);
    let stack = Arc::new(stack);
    match &cfg.upper {
        None => serve_fs(
            UnionFs::new(stack)
                .with_idmap(cfg.idmap.clone())
                .with_provenance(prov),
            cfg,
            mp,
            ready,
            None,
        ),
        Some(dir) => {
            let rootless = !privileged();
            let upper = Upper::open(dir, cfg.work.as_deref(), cfg.whiteout_format)
                .map_err(|e| match cfg.work {
                    None => explain_default_work(e),
                    Some(_) => e,
                })?
                .with_rootless(rootless);
            if rootless {
                log::info!(target: "unionfs", "rootless: owners, modes and devices the daemon \
                           cannot set are kept in {} xattrs", String::from_utf8_lossy(OVERRIDE_XATTR));
            }
            // SAFETY: umask(2) cannot fail. Create modes arrive with the
            // caller's umask already applied by the kernel: ours must not apply.
            unsafe { libc::umask(0) };
            let opts = overlay::Options {
                ids: cfg.idmap.clone(),
                metacopy: cfg.metacopy,
                labels: copy_labels,
            };
            let ov = Overlay::new(stack, upper, opts)?;
            let fs = RwFs::new(ov, cfg.idmap.clone())
                .with_passthrough(!rootless && cfg.passthrough)
                .with_provenance(prov);
            let slot = fs.notifier_slot();
            serve_fs(fs, cfg, mp, ready, Some(slot))
        }
    }
}

/// A default work directory (`.NAME.unionfs-work` next to the upper) that
/// cannot be made or opened is a surprise to a user who never named one: say
/// where it goes and that `--work` chooses another place.
fn explain_default_work(e: Error) -> Error {
    let Error::Io { path, source } = e else {
        return e;
    };
    let is_work = path
        .file_name()
        .is_some_and(|n| n.as_bytes().ends_with(b".unionfs-work"));
    let denied = matches!(
        source.raw_os_error(),
        Some(libc::EACCES | libc::EPERM | libc::EROFS)
    );
    if !(is_work && denied) {
        return Error::Io { path, source };
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    let why = format!(
        "{source}: the work directory goes next to the upper directory by default, and \
         this user cannot create it in {}; give one with --work DIR (a directory this user \
         can write, on the same filesystem as the upper, not inside it)",
        parent.display()
    );
    Error::Io {
        path,
        source: io::Error::new(source.kind(), why),
    }
}

/// Returns true if and only if this process is root of the initial user
/// namespace: able to chown to any id and make devices. Otherwise (a normal
/// user, or root of a user namespace) a writable mount runs rootless.
pub fn privileged() -> bool {
    // SAFETY: trivial getter.
    if unsafe { libc::geteuid() } != 0 {
        return false;
    }
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(m) => {
            let f: Vec<&str> = m.split_whitespace().collect();
            f == ["0", "0", "4294967295"]
        }
        Err(_) => true,
    }
}

fn serve_fs<F: fuser::Filesystem + Send + Sync + 'static>(
    fs: F,
    cfg: &MountConfig,
    mp: &Path,
    ready: &mut Option<File>,
    notifier: Option<std::sync::Arc<std::sync::OnceLock<fuser::Notifier>>>,
) -> Result<()> {
    let sigs = block_signals();
    let session = fuser::Session::new(fs, mp, &fuse_config(cfg)).map_err(|e| mount_error(mp, e))?;
    if let Some(slot) = notifier {
        let _ = slot.set(session.notifier());
    }
    log::info!(target: "unionfs", "mounted on {}", mp.display());
    let ours = mount_device(mp);
    if let (Some(dev), Ok(abs)) = (&ours, mount_path(mp)) {
        daemons::register(dev, &abs);
    }
    raise_readahead(mp);
    if let Some(mut pipe) = ready.take() {
        let _ = writeln!(pipe, "OK");
        drop(pipe);
        detach_stdio(cfg.log_file.as_deref());
    }
    // Unmounting is ours alone (signals below, `unionfs umount`, fusermount3 -u
    // from outside), so fuser's handle on the mount is never dropped: fuser 0.18
    // unmounts the path again when its session ends, because its "still
    // mounted?" check is inverted (it takes the dead connection's POLLERR for
    // "mounted"; fixed upstream by cberner/fuser#703). After a clean unmount that
    // logged "Failed to umount filesystem: Invalid argument", and had something
    // new been mounted on the path meanwhile, it would have unmounted that. The
    // handle holds a /dev/fuse fd and a path until the process exits. (Its
    // thread handle is swapped for a finished one, to be joined below.)
    let mut session = ManuallyDrop::new(session.spawn().map_err(|e| Error::io(mp, e))?);
    let loops = std::mem::replace(&mut session.guard, std::thread::spawn(|| Ok(())));
    let worker = std::thread::Builder::new()
        .name("fuse".into())
        .spawn(move || {
            let r = loops.join();
            // Wake the signal loop: the session ended (unmounted from outside).
            unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
            r
        })
        .map_err(|e| Error::io(mp, e))?;
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `sigs` is an initialised signal set; `sig` is a valid out pointer.
        let rc = unsafe { libc::sigwait(&sigs, &mut sig) };
        if rc != 0 || sig == libc::SIGUSR1 {
            break;
        }
        log::info!(target: "unionfs", "signal {sig}: unmounting {}", mp.display());
        // Our own unmount, not fuser's one-shot unmounter: that one forgets the
        // mount on its first try, so after an EBUSY no later signal could
        // unmount. A busy mount keeps being served; the next signal tries again.
        if let Err(e) = unmount(mp, false) {
            log::error!(target: "unionfs", "{e}; still served: signal again to retry");
        }
    }
    if let Some(dev) = &ours {
        daemons::unregister(dev);
    }
    let ended = match worker.join() {
        Ok(Ok(Ok(()))) => return Ok(()),
        Ok(Ok(Err(e))) => Err(Error::io(mp, e)),
        Ok(Err(_)) | Err(_) => Err(Error::Usage("the FUSE session thread panicked".into())),
    };
    // A session that ends cleanly ended because the kernel closed the
    // connection: the mount is gone, and whatever is on the path now is
    // someone else's. One that failed leaves our mount there with nobody to
    // serve it: detach it (if it is still ours), as fuser did.
    if ours.is_some() && mount_device(mp) == ours {
        log::warn!(target: "unionfs", "the FUSE session failed; unmounting {} lazily", mp.display());
        if let Err(e) = unmount(mp, true) {
            log::error!(target: "unionfs", "{e}");
        }
    }
    ended
}

/// How long `unionfs umount` waits for the daemon of the mount to exit.
const DAEMON_EXIT_WAIT: Duration = Duration::from_secs(10);

/// Readahead for the mount, in KiB (the kernel's FUSE default is 128).
const READ_AHEAD_KB: u32 = 1024;

/// Raises the mount's readahead (`/sys/class/bdi/MAJ:MIN/read_ahead_kb`) so that
/// sequential reads reach us in 1 MiB requests: an eighth of the round trips.
/// Needs root; otherwise the kernel default stays (logged at debug level).
fn raise_readahead(mp: &Path) {
    let Some(dev) = mount_device(mp) else { return };
    let knob = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    match std::fs::write(&knob, READ_AHEAD_KB.to_string()) {
        Ok(()) => log::debug!(target: "unionfs", "{knob} = {READ_AHEAD_KB}"),
        Err(e) => log::debug!(target: "unionfs", "cannot raise {knob}: {e}"),
    }
}

/// The `MAJ:MIN` of the filesystem mounted at `mp`, from /proc/self/mountinfo.
fn mount_device(mp: &Path) -> Option<String> {
    mount_entry(mp).ok().flatten().map(|m| m.dev)
}

/// Blocks the signals the main thread waits for, in this thread and (by
/// inheritance) every thread spawned after.
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain libc calls on a local, zero-initialised sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Forks. The parent waits for the child's report and exits; the child returns
/// the write end of the report pipe.
fn daemonize() -> Result<File> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::io("pipe", io::Error::last_os_error()));
    }
    // SAFETY: the fds were just created and are owned here.
    let (mut rd, wr) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    // SAFETY: called before any thread is started by this process (mount is the
    // first thing the CLI does), so the child is a faithful single-threaded copy.
    match unsafe { libc::fork() } {
        -1 => Err(Error::io("fork", io::Error::last_os_error())),
        0 => {
            drop(rd);
            // SAFETY: plain libc call in the child.
            unsafe { libc::setsid() };
            Ok(wr)
        }
        child => {
            drop(wr);
            let mut msg = Vec::new();
            let mut byte = [0u8; 1];
            while msg.len() < 65536 {
                match rd.read(&mut byte) {
                    Ok(1) if byte[0] == b'\n' => break,
                    Ok(1) => msg.push(byte[0]),
                    _ => break,
                }
            }
            let msg = String::from_utf8_lossy(&msg);
            if msg == "OK" {
                std::process::exit(0);
            }
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(child, &mut status, 0) };
            match msg.strip_prefix("ERR ") {
                Some(m) => eprintln!("unionfs: {m}"),
                None => eprintln!("unionfs: the mount process exited before the mount was ready"),
            }
            std::process::exit(1);
        }
    }
}

/// Points stdin/stdout at /dev/null and stderr at the log file (or /dev/null).
fn detach_stdio(log: Option<&Path>) {
    let null = File::options().read(true).write(true).open("/dev/null");
    let err = log
        .and_then(|p| File::options().create(true).append(true).open(p).ok())
        .or_else(|| null.as_ref().ok().and_then(|f| f.try_clone().ok()));
    if let Ok(null) = &null {
        // SAFETY: duplicating valid fds onto the standard descriptors.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
    if let Some(err) = err {
        // SAFETY: as above.
        unsafe { libc::dup2(err.as_raw_fd(), 2) };
    }
    let _ = std::env::set_current_dir("/");
}

/// Unmounts `mp`: `umount2` when permitted (root), else `fusermount3 -u`. Works
/// on a dead mount (its server gone) too; a busy one is refused, with the hint
/// that `-z` (`lazy`) detaches it now.
pub fn unmount(mp: &Path, lazy: bool) -> Result<()> {
    let abs = mount_path(mp)?;
    if !is_mounted(&abs).map_err(|e| Error::io("/proc/self/mountinfo", e))? {
        return Err(Error::Usage(format!("{}: not mounted", abs.display())));
    }
    let c = std::ffi::CString::new(abs.as_os_str().as_bytes())
        .map_err(|_| Error::Usage("mountpoint contains a NUL byte".into()))?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // The daemon serving it (not this process: a daemon unmounts itself on
    // signals), waited for once the mount is gone: its exit releases the
    // upper, which `commit`, `diff` and `export` lock.
    let daemon = match lazy {
        true => None,
        false => mount_device(&abs)
            .and_then(|d| daemons::daemon_of(&d, &abs))
            .filter(|&p| p != std::process::id()),
    };
    let gone = || {
        if let Some(pid) = daemon {
            if !daemons::wait_exit(pid, DAEMON_EXIT_WAIT) {
                log::warn!(
                    target: "unionfs",
                    "{}: unmounted here, but its daemon (pid {pid}) still runs after {} s: \
                     another mount namespace may hold a copy of the mount (its upper stays locked)",
                    abs.display(),
                    DAEMON_EXIT_WAIT.as_secs()
                );
            }
        }
    };
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
        gone();
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EPERM) {
        let busy = err.raw_os_error() == Some(libc::EBUSY);
        return Err(Error::Io {
            source: io::Error::new(
                err.kind(),
                format!("unmount failed: {err}{}", busy_hint(&abs, busy)),
            ),
            path: abs,
        });
    }
    let mut args: Vec<OsString> = vec!["-u".into()];
    if lazy {
        args.push("-z".into());
    }
    args.push(abs.clone().into());
    let out = std::process::Command::new("fusermount3")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::io("fusermount3", e))?;
    if out.status.success() {
        gone();
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr);
    let said = said.trim();
    let busy = said.contains("busy");
    Err(Error::Usage(format!(
        "{}: fusermount3 -u failed ({}): {said}{}",
        abs.display(),
        out.status,
        busy_hint(&abs, busy)
    )))
}

/// For a busy mount: what uses it, and how to detach it anyway.
fn busy_hint(mp: &Path, busy: bool) -> String {
    if !busy {
        return String::new();
    }
    format!(
        " (in use: open files or a working directory inside it; close them and retry, \
         or detach it now, to be cleaned up once unused: unionfs umount -z {})",
        mp.display()
    )
}
