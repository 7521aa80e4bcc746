//! The rootless container story of the README, end to end, with the real
//! binary and Debian's podman: an unprivileged user mounts an image with
//! `--uidmap 0:UID:1 --gidmap 0:GID:1 --upper`, rootless `podman run --rootfs`
//! runs it as container root, and the container's writes land in the upper
//! owned by the user on disk, by root logically (`user.unionfs.override_stat`),
//! its deletions as whiteouts. Then an image user other than root, which
//! needs the mount to map podman's whole subordinate id range and
//! `-o allow_other`.
//!
//! Podman runs first, before the mount (as a user's podman has, from an
//! earlier container): its pause process then holds a mount namespace made
//! before the mount, which sees the mount, and later its unmount, only because
//! `/` is a shared mount. The tests check both. Each test has its own podman
//! (`HOME` and `XDG_RUNTIME_DIR` in its scratch dir) and kills its pause
//! process at the end. The image is `tools/podman-image`'s: the sample image
//! plus a static busybox as /bin/sh.
//!
//! Needs root (it switches to the user), the rootless tests' user
//! (`UNIONFS_ROOTLESS_USER`, default `unionfs-rootless`), `/dev/fuse` 0666,
//! `/` shared (`mount --make-rshared /`), and the Debian packages podman,
//! runc, uidmap and busybox-static; the second test also needs a range for
//! the user in /etc/subuid and /etc/subgid (Debian's useradd adds one) and
//! `user_allow_other` in /etc/fuse.conf. `tools/test` sets these up; a missing
//! piece fails the test with what to do — it never skips.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_unionfs");
const HOW: &str = "tools/test installs and sets up what tests/podman.rs needs";

/// The unprivileged user: (name, uid, gid), after checking what the test needs.
fn user() -> (String, u32, u32) {
    let name = std::env::var("UNIONFS_ROOTLESS_USER").unwrap_or_else(|_| "unionfs-rootless".into());
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "tests/podman.rs runs as root (it switches to {name})"
    );
    let id = |flag: &str| -> u32 {
        let o = Command::new("id").arg(flag).arg(&name).output().unwrap();
        assert!(
            o.status.success(),
            "no user {name:?}: useradd --create-home {name} ({HOW})"
        );
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
    };
    let (uid, gid) = (id("-u"), id("-g"));
    assert_ne!(uid, 0, "{name} must not be root");
    let fuse = std::fs::metadata("/dev/fuse").expect("/dev/fuse is missing (modprobe fuse)");
    assert!(
        fuse.mode() & 0o006 == 0o006,
        "/dev/fuse is not usable by normal users: chmod 0666 /dev/fuse ({HOW})"
    );
    for (tool, package) in [
        ("podman", "podman"),
        ("runc", "runc"),
        ("newuidmap", "uidmap"),
        ("fusermount3", "fuse3"),
    ] {
        let found = ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"]
            .iter()
            .any(|d| Path::new(d).join(tool).exists());
        assert!(
            found,
            "{tool} is missing: apt-get install -y --no-install-recommends {package} ({HOW})"
        );
    }
    // A mount made after podman's namespace exists reaches it only by
    // propagation; so does its unmount.
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = info
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some("/"))
        .expect("no / in mountinfo");
    assert!(
        root.split(" - ").next().unwrap().contains(" shared:"),
        "/ is not a shared mount, so podman's namespace never sees a later mount: \
         mount --make-rshared / ({HOW}; systemd does it at boot)\n{root}"
    );
    (name, uid, gid)
}

/// Runs `sh -c script` as the user, in a clean environment of its own:
/// `HOME` and `XDG_RUNTIME_DIR` inside the scratch dir `$R`, so podman's
/// storage, configuration and pause process are this test's alone.
fn as_user(root: &Path, script: &str) -> Output {
    let (name, uid, gid) = user();
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={uid}"),
        &format!("--regid={gid}"),
        "--init-groups",
        "sh",
        "-c",
        script,
    ]);
    c.env_clear()
        .env(
            "PATH",
            format!(
                "{}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                root.display()
            ),
        )
        .env("HOME", root.join("home"))
        .env("XDG_RUNTIME_DIR", root.join("run"))
        .env("USER", &name)
        .env("LOGNAME", &name)
        .env("R", root)
        .current_dir(root)
        .stdin(Stdio::null());
    c.output().expect("run setpriv (util-linux)")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn is_mounted(p: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(p.to_str().unwrap()))
}

/// Processes whose command line has `arg` as one of its arguments.
fn pids_with_arg(arg: &Path) -> Vec<i32> {
    let want = arg.as_os_str().as_encoded_bytes();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmd.split(|&b| b == 0).any(|a| a == want) {
            pids.push(pid);
        }
    }
    pids
}

/// Whether `pid` is still running (a zombie counts as gone).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn wait_gone(pid: i32, within: Duration) -> bool {
    let t = Instant::now();
    while alive(pid) {
        if t.elapsed() > within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn xattr(p: &Path, name: &str) -> Option<String> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = [0u8; 256];
    let len =
        unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| String::from_utf8_lossy(&buf[..len as usize]).into_owned())
}

/// The scratch dir (the user's): `unionfs`, `img/image.tar`, `rw`, `mnt`,
/// `home`, `run`. Dropping it kills what the test started and unmounts.
struct Scratch {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Scratch {
    /// Podman's pause process, which holds its user and mount namespaces.
    fn pause_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.root.join("run/libpod/tmp/pause.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mnt = self.root.join("mnt");
        if is_mounted(&mnt) {
            let _ = Command::new("umount").arg("-l").arg(&mnt).status();
        }
        for pid in pids_with_arg(&mnt) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if let Some(pid) = self.pause_pid() {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn scratch() -> Scratch {
    let (_, uid, gid) = user();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/podman-image"))
        .arg(root.join("img"))
        .output()
        .expect("tools/podman-image (needs python3)");
    assert!(out.status.success(), "tools/podman-image:\n{}", text(&out));
    for d in ["rw", "mnt", "home", "run"] {
        std::fs::create_dir(root.join(d)).unwrap();
    }
    std::fs::set_permissions(
        root.join("run"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    // A copy the user can run: the checkout's target/ may sit under a 0700 dir.
    std::fs::copy(BIN, root.join("unionfs")).expect("copy the binary");
    let st = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(&root)
        .status()
        .unwrap();
    assert!(st.success());
    Scratch { _dir: dir, root }
}

/// Podman, as the README's user would run it, plus what a CI machine needs:
/// no systemd user session (cgroupfs), no slirp4netns (no network), and runc:
/// crun 1.8 refuses hosts whose cgroups are split between v1 and v2 ("hybrid
/// mode not supported"), which runc runs on, as it does on cgroup v2.
const PODMAN: &str = "podman --cgroup-manager=cgroupfs --runtime runc";

/// A live story: podman's pause process, made before the mount, and the
/// unionfs server of the user's mount.
struct Live {
    pause: i32,
    daemon: i32,
}

/// Podman runs first (its pause process — user and mount namespace — now
/// predates the mount, as a user's has after any earlier container); then the
/// user mounts the image on `$R/mnt` with `$R/rw` as the upper.
fn podman_then_mount(s: &Scratch, mount_options: &str) -> Live {
    let (name, _, _) = user();
    let r = &s.root;
    let o = as_user(r, &format!("{PODMAN} unshare true"));
    assert!(
        o.status.success(),
        "podman unshare as {name}:\n{}",
        text(&o)
    );
    let pause = s.pause_pid().expect("podman made no pause process");
    let o = as_user(
        r,
        &format!(
            "unionfs mount {mount_options} --image \"$R/img/image.tar\" --upper \"$R/rw\" \"$R/mnt\""
        ),
    );
    assert!(o.status.success(), "rootless mount:\n{}", text(&o));
    let mnt = r.join("mnt");
    assert!(is_mounted(&mnt));
    let daemon = pids_with_arg(&mnt);
    assert_eq!(daemon.len(), 1, "one unionfs server for {}", mnt.display());
    Live {
        pause,
        daemon: daemon[0],
    }
}

/// `podman run --rm --rootfs $R/mnt [ARGS] /bin/sh -c SCRIPT`; its stdout.
fn podman_run(s: &Scratch, args: &str, script: &str) -> String {
    let t = Instant::now();
    let o = as_user(
        &s.root,
        &format!(
            "{PODMAN} run --rm --network none {args} --rootfs \"$R/mnt\" /bin/sh -c '{script}'"
        ),
    );
    assert!(o.status.success(), "podman run --rootfs:\n{}", text(&o));
    eprintln!("podman run --rootfs took {:?}", t.elapsed());
    String::from_utf8(o.stdout).unwrap()
}

/// The user unmounts; the server must exit (nothing else holds the mount);
/// then the pause process is killed (it is this test's: its XDG_RUNTIME_DIR
/// is the scratch dir's).
fn unmount_and_stop(s: &Scratch, live: Live) {
    let (name, _, _) = user();
    let r = &s.root;
    let o = as_user(r, "unionfs umount \"$R/mnt\"");
    assert!(o.status.success(), "unmount as {name}:\n{}", text(&o));
    assert!(!is_mounted(&r.join("mnt")));
    assert!(
        wait_gone(live.daemon, Duration::from_secs(10)),
        "the unionfs server still runs after the unmount: podman's namespace (pause \
         process {}) still holds the mount, which happens when / is not shared",
        live.pause
    );
    unsafe { libc::kill(live.pause, libc::SIGKILL) };
    assert!(
        wait_gone(live.pause, Duration::from_secs(5)),
        "podman pause {}",
        live.pause
    );
    std::fs::remove_file(r.join("run/libpod/tmp/pause.pid")).unwrap();
}

/// Asserts that `rw/PATH` is the user's on disk and records `want` as its
/// logical `UID:GID:MODE`.
fn assert_override(s: &Scratch, path: &str, want: &str) {
    let (_, uid, gid) = user();
    let p = s.root.join("rw").join(path);
    let m = std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_eq!(
        (m.uid(), m.gid()),
        (uid, gid),
        "on disk, {path} is the user's"
    );
    assert_eq!(
        xattr(&p, "user.unionfs.override_stat").as_deref(),
        Some(want),
        "the logical owner and mode of {path}"
    );
}

/// The README's story: podman has run before; the user mounts the image with
/// itself as the image's root and an upper; `podman run --rootfs` runs it as
/// container root, reads the image, writes and deletes; after the unmount the
/// upper holds the writes, logically root-owned, and a whiteout.
#[test]
fn rootless_podman_runs_the_mounted_image_as_container_root() {
    let s = scratch();
    let (_, uid, gid) = user();
    let r = &s.root;
    let live = podman_then_mount(&s, "--uidmap 0:$(id -u):1 --gidmap 0:$(id -g):1");
    let out = podman_run(
        &s,
        "",
        "id -u; id -g; stat -c %u:%g /etc/passwd /home/user; cat /etc/motd; \
         echo x > /newfile && stat -c %u:%g:%a /newfile; \
         echo more >> /etc/motd && stat -c %u:%g:%a /etc/motd; \
         rm /etc/app.conf && test ! -e /etc/app.conf && echo removed",
    );
    assert_eq!(
        out,
        "0\n0\n\
         0:0\n65534:65534\n\
         Welcome to the unionfs sample image (app layer).\n\
         0:0:644\n\
         0:0:644\n\
         removed\n",
        "container root owns the image's root files (image uid 1000 is unmapped: \
         nobody); its writes are root's"
    );
    // Outside, the user (only the user: no allow_other) sees itself as the
    // owner of what container root made.
    let o = as_user(
        r,
        "stat -c %u:%g \"$R/mnt/newfile\" && test ! -e \"$R/mnt/etc/app.conf\" && echo removed",
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("{uid}:{gid}\nremoved\n"),
        "{}",
        text(&o)
    );
    unmount_and_stop(&s, live);

    // The upper: the user's files on disk, root's by the override xattr.
    let rw = r.join("rw");
    assert_eq!(std::fs::read_to_string(rw.join("newfile")).unwrap(), "x\n");
    assert_override(&s, "newfile", "0:0:0100644");
    assert_override(&s, "etc/motd", "0:0:0100644");
    assert_override(&s, "etc", "0:0:040755");
    assert!(std::fs::read_to_string(rw.join("etc/motd"))
        .unwrap()
        .ends_with("(app layer).\nmore\n"));
    let wh = std::fs::symlink_metadata(rw.join("etc/.wh.app.conf"))
        .expect("a whiteout for the removed lower file");
    assert!(wh.is_file() && wh.len() == 0, "an OCI whiteout: {wh:?}");
    assert!(!rw.join("etc/app.conf").exists());
}

/// The user's first subordinate id range in /etc/subuid or /etc/subgid:
/// (start, count). Podman maps container ids 1.. onto it.
fn subids(file: &str, name: &str, id: u32) -> (u32, u32) {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split(':').collect();
            (f.len() == 3 && (f[0] == name || f[0] == id.to_string()))
                .then(|| Some((f[1].parse().ok()?, f[2].parse().ok()?)))
                .flatten()
        })
        .next()
        .unwrap_or_else(|| {
            panic!(
                "{file} has no range for {name}: usermod --add-subuids 100000-165535 \
                 --add-subgids 100000-165535 {name} (Debian's useradd adds one; {HOW})"
            )
        })
}

/// An image user other than root: the mount maps podman's whole range
/// (`--uidmap 0:UID:1,1:SUBUID:COUNT`, as /etc/subuid gives it to podman) and
/// lets the container's other ids in (`-o allow_other`); `podman run --user
/// 1000` then owns the image's uid-1000 files and its writes are uid 1000's.
#[test]
fn a_container_user_other_than_root_needs_the_subid_range_and_allow_other() {
    let s = scratch();
    let (name, uid, gid) = user();
    let conf = std::fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
    assert!(
        conf.lines().any(|l| l.trim() == "user_allow_other"),
        "/etc/fuse.conf lacks user_allow_other ({HOW})"
    );
    let (su, nu) = subids("/etc/subuid", &name, uid);
    let (sg, ng) = subids("/etc/subgid", &name, gid);
    assert!(
        nu > 1000 && ng > 1000,
        "{name}'s subordinate ranges are too small for uid 1000"
    );
    let live = podman_then_mount(
        &s,
        &format!("-o allow_other --uidmap 0:{uid}:1,1:{su}:{nu} --gidmap 0:{gid}:1,1:{sg}:{ng}"),
    );
    let out = podman_run(
        &s,
        "--user 1000:1000",
        "id -u; stat -c %u:%g /home/user/notes.txt /etc/passwd; head -c 9 /home/user/notes.txt; \
         echo; echo hi > /home/user/new && stat -c %u:%g:%a /home/user/new",
    );
    assert_eq!(out, "1000\n1000:1000\n0:0\nremember:\n1000:1000:644\n");
    unmount_and_stop(&s, live);
    assert_override(&s, "home/user/new", "1000:1000:0100644");
}
