//! Rootless mounts: the daemon runs as an unprivileged user and mounts through
//! `fusermount3`. Root-owned layer files stay root-owned through copy-up, a
//! chown or a device node the daemon cannot make is recorded in
//! `user.unionfs.override_stat` and reported, `--uidmap` makes a container's
//! root own the image's files, and a mount made inside `unshare --user
//! --map-root-user --mount` shows uid 0 ownership.
//!
//! Needs root (to act as the unprivileged user and, through `allow_other`, as
//! root on the user's mount), an unprivileged user (`UNIONFS_ROOTLESS_USER`,
//! default `unionfs-rootless`), `/dev/fuse` usable by that user and
//! `user_allow_other` in /etc/fuse.conf. `tools/test` sets these up; a missing
//! piece fails the test with what to do.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_unionfs");

/// The unprivileged user: (name, uid, gid).
fn user() -> (String, u32, u32) {
    let name = std::env::var("UNIONFS_ROOTLESS_USER").unwrap_or_else(|_| "unionfs-rootless".into());
    let id = |flag: &str| -> u32 {
        let o = Command::new("id").arg(flag).arg(&name).output().unwrap();
        assert!(
            o.status.success(),
            "no user {name:?} for the rootless tests: create one (useradd -m {name}) or name \
             another with UNIONFS_ROOTLESS_USER; tools/test does this"
        );
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
    };
    let (uid, gid) = (id("-u"), id("-g"));
    assert_ne!(uid, 0, "{name} must not be root");
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the rootless tests run as root (they switch users)"
    );
    let fuse = std::fs::metadata("/dev/fuse").expect("/dev/fuse is missing (modprobe fuse)");
    assert!(
        std::os::unix::fs::PermissionsExt::mode(&fuse.permissions()) & 0o006 == 0o006,
        "/dev/fuse is not usable by normal users: chmod 0666 /dev/fuse (what Debian's udev rule \
         does; tools/test does it)"
    );
    let conf = std::fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
    assert!(
        conf.lines().any(|l| l.trim() == "user_allow_other"),
        "/etc/fuse.conf lacks user_allow_other (tools/test adds it)"
    );
    (name, uid, gid)
}

/// Runs `sh -c script` as the user; `env` goes into its environment.
fn as_user(script: &str, env: &[(&str, &Path)]) -> Output {
    let (_, uid, gid) = user();
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={uid}"),
        &format!("--regid={gid}"),
        "--init-groups",
        "sh",
        "-c",
        script,
    ]);
    // The binary is copied into the scratch dir: the user may not be able to
    // reach the checkout's target/ (CI's clone may sit under a 0700 directory).
    c.env("B", "unionfs").stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
        if *k == "R" {
            c.env(
                "PATH",
                format!(
                    "{}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                    v.display()
                ),
            );
        }
    }
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

/// A scratch dir the user owns: the sample image, `upper`, `work`, `mnt`, `cache`.
struct Scratch {
    _dir: tempfile::TempDir,
    root: PathBuf,
    layers: String,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for m in ["mnt", "mnt2"] {
            let p = self.root.join(m);
            if is_mounted(&p) {
                let _ = Command::new("umount").arg("-l").arg(&p).status();
            }
        }
    }
}

fn scratch() -> Scratch {
    let (_, uid, gid) = user();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let img = root.join("image");
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/sample-image"))
        .arg(&img)
        .output()
        .expect("tools/sample-image (needs python3)");
    assert!(out.status.success(), "{}", text(&out));
    for d in ["upper", "work", "mnt", "cache"] {
        std::fs::create_dir(root.join(d)).unwrap();
    }
    std::fs::copy(BIN, root.join("unionfs")).expect("copy the binary");
    let st = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(&root)
        .status()
        .unwrap();
    assert!(st.success());
    std::os::unix::fs::chown(&root, Some(uid), Some(gid)).unwrap();
    let layers = ["base.tar", "app.tar", "fix.tar"]
        .iter()
        .map(|l| img.join(l).display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    Scratch {
        _dir: dir,
        root,
        layers,
    }
}

fn stat_ids(p: &Path) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    (m.uid(), m.gid(), m.mode())
}

fn mount_as_user(s: &Scratch, extra: &str) {
    let script = format!(
        "$B mount -o allow_other {extra} --cache-dir \"$R/cache\" --layers \"$L\" --upper \"$R/upper\" \"$R/mnt\""
    );
    let o = as_user(&script, &[("R", &s.root), ("L", Path::new(&s.layers))]);
    assert!(o.status.success(), "rootless mount failed:\n{}", text(&o));
    assert!(is_mounted(&s.root.join("mnt")));
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let m = s.root.join("mnt").display().to_string();
    let line = info.lines().find(|l| l.contains(&m)).unwrap();
    let (_, uid, _) = user();
    assert!(
        line.contains(&format!("user_id={uid}")),
        "not the user's mount: {line}"
    );
    assert!(line.contains("nosuid") && line.contains("nodev"), "{line}");
}

fn unmount_as_user(s: &Scratch) {
    let o = as_user("$B umount \"$R/mnt\"", &[("R", &s.root)]);
    assert!(o.status.success(), "unmount as the user:\n{}", text(&o));
    assert!(!is_mounted(&s.root.join("mnt")));
}

/// The user mounts; root-owned files stay root-owned through a copy-up; a
/// chown and a char device made (by root, through allow_other) are recorded and
/// reported; a remount shows the same; the user unmounts.
#[test]
fn rootless_mount_keeps_ownership_in_override_xattrs() {
    let s = scratch();
    let (_, uid, _) = user();
    mount_as_user(&s, "");
    let mnt = s.root.join("mnt");
    // The user reads a root-owned file and sees it root-owned.
    let o = as_user(
        "stat -c '%u:%g' \"$R/mnt/etc/passwd\" && head -c 4 \"$R/mnt/etc/passwd\"",
        &[("R", &s.root)],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "0:0\nroot");
    // ... and may not write it (kernel permission checks on the logical owner).
    let o = as_user("echo x >> \"$R/mnt/etc/passwd\"", &[("R", &s.root)]);
    assert!(!o.status.success(), "the user wrote a root-owned 0644 file");
    // Root writes it: the copy-up is owned by the user on disk, root in the mount.
    std::fs::OpenOptions::new()
        .append(true)
        .open(mnt.join("etc/passwd"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"x:x:5:5::/:/bin/sh\n"))
        .unwrap();
    assert_eq!(stat_ids(&mnt.join("etc/passwd")), (0, 0, 0o100644));
    assert_eq!(
        stat_ids(&s.root.join("upper/etc/passwd")).0,
        uid,
        "copy-up not made by the user"
    );
    // chown to another uid: stored, reported.
    std::os::unix::fs::chown(mnt.join("etc/passwd"), Some(7), Some(8)).unwrap();
    assert_eq!(stat_ids(&mnt.join("etc/passwd")), (7, 8, 0o100644));
    // chmod: reported, and the user's real file stays usable by the daemon.
    std::fs::set_permissions(
        mnt.join("etc/passwd"),
        std::os::unix::fs::PermissionsExt::from_mode(0o400),
    )
    .unwrap();
    assert_eq!(stat_ids(&mnt.join("etc/passwd")).2, 0o100400);
    // mknod of a char device: a placeholder, reported as the device.
    let c = std::ffi::CString::new(mnt.join("null").to_str().unwrap()).unwrap();
    assert_eq!(
        unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) },
        0
    );
    let check = |mnt: &Path| {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(mnt.join("null")).unwrap();
        assert_eq!(
            (m.mode() & libc::S_IFMT, m.rdev()),
            (libc::S_IFCHR, libc::makedev(1, 3))
        );
        assert_eq!((m.uid(), m.gid()), (0, 0));
        assert_eq!(stat_ids(&mnt.join("etc/passwd")), (7, 8, 0o100400));
        assert_eq!(
            std::fs::read_to_string(mnt.join("etc/passwd"))
                .unwrap()
                .lines()
                .last(),
            Some("x:x:5:5::/:/bin/sh")
        );
    };
    check(&mnt);
    let placeholder = std::fs::symlink_metadata(s.root.join("upper/null")).unwrap();
    assert!(placeholder.is_file(), "the upper holds a placeholder file");
    unmount_as_user(&s);
    mount_as_user(&s, "");
    check(&mnt);
    unmount_as_user(&s);
}

/// With `--uidmap 0:UID:1 --gidmap 0:GID:1` the user owns the image's root
/// files: it writes one (copy-up), and the logical owner stays container root.
#[test]
fn uidmap_makes_the_container_root_the_user() {
    let s = scratch();
    let (_, uid, gid) = user();
    mount_as_user(&s, &format!("--uidmap 0:{uid}:1 --gidmap 0:{gid}:1"));
    let mnt = s.root.join("mnt");
    assert_eq!(stat_ids(&mnt.join("etc/passwd")), (uid, gid, 0o100644));
    // Image uid 1000 is not mapped: the overflow id.
    assert_eq!(stat_ids(&mnt.join("home/user")).0, 65534);
    let o = as_user(
        "echo mine >> \"$R/mnt/etc/motd\" && mkdir \"$R/mnt/newdir\" && stat -c '%u:%g' \"$R/mnt/etc/motd\" \"$R/mnt/newdir\"",
        &[("R", &s.root)],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("{uid}:{gid}\n{uid}:{gid}\n")
    );
    // On disk: the user's files; logically (the override): container root.
    let x = Command::new("getfattr")
        .args(["--only-values", "-n", "user.unionfs.override_stat"])
        .arg(s.root.join("upper/etc/motd"))
        .output()
        .expect("getfattr (attr package)");
    assert_eq!(String::from_utf8_lossy(&x.stdout), "0:0:0100644");
    unmount_as_user(&s);
}

/// Inside `unshare --user --map-root-user --mount`, the user's mount shows the
/// image's root files as owned by (namespace) root, and root can write them.
#[test]
fn inside_a_user_namespace_root_owns_the_image() {
    let s = scratch();
    let o = as_user(
        "unshare --user --map-root-user --mount sh -c '\
           $B mount --cache-dir \"$R/cache\" --layers \"$L\" --upper \"$R/upper\" \"$R/mnt\" || exit 1; \
           stat -c %u:%g \"$R/mnt/etc/passwd\"; \
           echo ns >> \"$R/mnt/etc/passwd\" && stat -c %u:%g \"$R/mnt/etc/passwd\"; \
           tail -n1 \"$R/mnt/etc/passwd\"; \
           $B umount \"$R/mnt\"'",
        &[("R", &s.root), ("L", Path::new(&s.layers))],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "0:0\n0:0\nns\n");
}

/// Where the system forbids the mount, the error says why and nothing is left
/// mounted: a mountpoint the user may not write.
#[test]
fn a_mountpoint_the_user_cannot_write_is_a_clear_error() {
    let s = scratch();
    let root_owned = s.root.join("mnt2");
    std::fs::create_dir(&root_owned).unwrap(); // root's, 0755
    let o = as_user(
        "$B mount --cache-dir \"$R/cache\" --layers \"$L\" \"$R/mnt2\"",
        &[("R", &s.root), ("L", Path::new(&s.layers))],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("mnt2") && err.contains("mount failed"),
        "{err}"
    );
    assert!(!is_mounted(&root_owned));
}

/// The default work directory goes next to the upper: where the user cannot
/// write the upper's parent, the error says so and names `--work`; with a
/// `--work` the user can write, on the same filesystem, the mount works.
#[test]
fn an_upper_whose_parent_the_user_cannot_write_names_work() {
    let s = scratch();
    let (_, uid, gid) = user();
    let locked = s.root.join("locked"); // root's, 0755
    std::fs::create_dir(&locked).unwrap();
    std::fs::create_dir(locked.join("upper")).unwrap();
    std::os::unix::fs::chown(locked.join("upper"), Some(uid), Some(gid)).unwrap();
    let mount = |work: &str| {
        as_user(
            &format!(
                "$B mount --cache-dir \"$R/cache\" --layers \"$L\" --upper \"$R/locked/upper\" \
                 {work} \"$R/mnt\""
            ),
            &[("R", &s.root), ("L", Path::new(&s.layers))],
        )
    };
    let o = mount("");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for want in [
        ".upper.unionfs-work",
        "Permission denied",
        "next to the upper",
        "--work DIR",
        "same filesystem",
    ] {
        assert!(err.contains(want), "want {want:?} in: {err}");
    }
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!is_mounted(&s.root.join("mnt")));
    let o = mount("--work \"$R/work\"");
    assert!(o.status.success(), "{}", text(&o));
    unmount_as_user(&s);
}

/// `kill -9` of the user's server: the user's new mount says the server is
/// gone and how to clear it, and the user's `unionfs umount` (through
/// fusermount3) clears the dead mount. A busy mount's unmount error names `-z`,
/// and `-z` detaches it.
#[test]
fn the_user_clears_a_dead_mount_and_is_told_about_busy_ones() {
    let s = scratch();
    let o = as_user(
        "$B mount -f --cache-dir \"$R/cache\" --layers \"$L\" \"$R/mnt\" 2>/dev/null & pid=$!; \
         i=0; until grep -q \" $R/mnt \" /proc/self/mountinfo; do \
           sleep 0.05; i=$((i+1)); [ $i -lt 400 ] || exit 9; done; \
         kill -9 $pid; wait $pid; \
         $B mount --cache-dir \"$R/cache\" --layers \"$L\" \"$R/mnt\"; echo \"remount=$?\"; \
         $B umount \"$R/mnt\"; echo \"umount=$?\"",
        &[("R", &s.root), ("L", Path::new(&s.layers))],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(out, "remount=1\numount=0\n", "{}", text(&o));
    assert!(
        err.contains("server is gone") && err.contains("fusermount3 -u"),
        "{err}"
    );
    assert!(!is_mounted(&s.root.join("mnt")));
    let o = as_user(
        "$B mount --cache-dir \"$R/cache\" --layers \"$L\" \"$R/mnt\" || exit 1; \
         cd \"$R/mnt/etc\" && $B umount \"$R/mnt\"; echo \"busy=$?\"; \
         $B umount -z \"$R/mnt\"; echo \"lazy=$?\"",
        &[("R", &s.root), ("L", Path::new(&s.layers))],
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "busy=1\nlazy=0\n",
        "{}",
        text(&o)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("busy") && err.contains("unionfs umount -z"),
        "{err}"
    );
    assert!(!is_mounted(&s.root.join("mnt")));
}
