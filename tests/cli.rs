//! The `unionfs` command as a user runs it: ls/index/verify on the sample image,
//! errors for bad input, and the mount lifecycle (returns once live, umount,
//! signals, failures leave nothing mounted). The mount tests need root and FUSE.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_unionfs");

fn unionfs(args: &[&str], cache: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .stdin(Stdio::null())
        .output()
        .expect("run unionfs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The sample image in a temp dir: (dir guard, "base:app:fix" with full paths).
fn sample() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("image");
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/sample-image"))
        .arg(&img)
        .output()
        .expect("tools/sample-image (needs python3)");
    assert!(out.status.success(), "sample-image: {}", stderr(&out));
    let layers = ["base.tar", "app.tar", "fix.tar"]
        .iter()
        .map(|l| img.join(l).display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    (dir, layers)
}

fn json_lines(o: &Output) -> Vec<Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

#[test]
fn ls_shows_the_merged_sample_image() {
    let (dir, layers) = sample();
    let o = unionfs(&["ls", "--layers", &layers, "-R", "--json"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = json_lines(&o);
    let find = |p: &str| rows.iter().find(|r| r["path"] == p).cloned();
    assert!(find("/etc/hostname").is_none(), "whited out in app.tar");
    assert!(
        find("/usr/share/doc").is_none(),
        "directory whited out in fix.tar"
    );
    assert!(find("/usr/share/doc/README").is_none());
    let apt: Vec<_> = rows
        .iter()
        .filter(|r| r["path"].as_str().unwrap().starts_with("/var/cache/apt/"))
        .map(|r| r["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        apt,
        ["/var/cache/apt/fresh.bin"],
        "opaque dir hides base's files"
    );
    assert_eq!(find("/etc/motd").unwrap()["layer"], 1);
    assert_eq!(find("/etc/passwd").unwrap()["layer"], 0);
    assert_eq!(find("/app/config.json").unwrap()["layer"], 2);
    assert!(rows
        .iter()
        .all(|r| !r["path"].as_str().unwrap().contains(".wh.")));
    // Paths are in depth-first name order, root first.
    assert_eq!(rows[0]["path"], "/");
    // Non-recursive listing of a directory: its children only.
    let o = unionfs(&["ls", "--layers", &layers, "/etc"], dir.path());
    assert!(o.status.success());
    let text = stdout(&o);
    assert!(
        text.contains("/etc/motd") && text.contains("app.tar"),
        "{text}"
    );
    assert!(!text.contains("/etc/hostname"));
}

#[test]
fn ls_of_a_missing_path_fails_clearly() {
    let (dir, layers) = sample();
    let o = unionfs(&["ls", "--layers", &layers, "/etc/hostname"], dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("/etc/hostname: no such file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn index_is_built_once_then_loaded() {
    let (dir, layers) = sample();
    let base = layers.split(':').next().unwrap();
    let first = unionfs(&["index", base], dir.path());
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(stdout(&first).contains("scanned in"), "{}", stdout(&first));
    let second = unionfs(&["index", base], dir.path());
    assert!(stdout(&second).contains("loaded in"), "{}", stdout(&second));
    assert!(stdout(&second).contains(&dir.path().join("unionfs").display().to_string()));
    let rebuilt = unionfs(&["index", "--rebuild", base], dir.path());
    assert!(stdout(&rebuilt).contains("scanned in"));
}

#[test]
fn verify_checks_the_diff_id() {
    let (dir, layers) = sample();
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("image/config.json")).unwrap())
            .unwrap();
    for (i, l) in layers.split(':').enumerate() {
        let want = cfg["rootfs"]["diff_ids"][i].as_str().unwrap();
        let ok = unionfs(&["verify", l, "--diff-id", want], dir.path());
        assert!(ok.status.success(), "{}", stderr(&ok));
        assert!(stdout(&ok).contains("diff_id matches"));
    }
    let base = layers.split(':').next().unwrap();
    let wrong = format!("sha256:{}", "0".repeat(64));
    let bad = unionfs(&["verify", base, "--diff-id", &wrong], dir.path());
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("digest mismatch"), "{}", stderr(&bad));
    let malformed = unionfs(&["verify", base, "--diff-id", "sha256:xyz"], dir.path());
    assert_eq!(malformed.status.code(), Some(1));
    assert!(stderr(&malformed).contains("64 hex"));
}

#[test]
fn bad_layers_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("layer.tar.gz");
    std::fs::write(&gz, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]).unwrap();
    let bz = dir.path().join("layer.tar.bz2");
    std::fs::write(&bz, b"BZh91AY&SY").unwrap();
    let empty = dir.path().join("empty.tar");
    std::fs::write(&empty, b"").unwrap();
    let missing = dir.path().join("missing.tar");
    let cases: [(&Path, &str); 5] = [
        (&gz, "offset 10: truncated"),
        (&bz, "bzip2-compressed"),
        (&empty, "empty"),
        (&missing, "No such file"),
        (dir.path(), "is a directory"),
    ];
    for (p, want) in cases {
        let ps = p.display().to_string();
        let o = unionfs(&["ls", "--layers", &ps], dir.path());
        assert_eq!(o.status.code(), Some(1), "{ps}");
        let e = stderr(&o);
        assert!(e.contains(&ps) && e.contains(want), "{ps}: {e}");
        assert!(!e.contains("panicked"));
    }
    let o = unionfs(&["ls", "--layers", "a.tar::b.tar"], dir.path());
    assert!(stderr(&o).contains("empty layer name"));
}

// ---------------------------------------------------------------------------
// Mount lifecycle (root + FUSE)

fn is_mounted(p: &Path) -> bool {
    let p = p.canonicalize().unwrap_or_else(|_| p.to_owned());
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(p.to_str().unwrap()))
}

fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: these tests mount for real (modprobe fuse)"
    );
}

struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

#[test]
fn mount_returns_once_live_and_umount_unmounts() {
    require_fuse();
    let (dir, layers) = sample();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _guard = Unmount(mnt.clone());
    let m = mnt.display().to_string();
    let o = unionfs(&["mount", "--layers", &layers, &m], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(is_mounted(&mnt), "mounted when the command returns");
    let motd = std::fs::read_to_string(mnt.join("etc/motd")).unwrap();
    assert!(motd.contains("app layer"), "{motd}");
    assert!(!mnt.join("etc/hostname").exists());
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info.lines().find(|l| l.contains(&m)).unwrap();
    for opt in ["ro", "nosuid", "nodev", "default_permissions"] {
        assert!(line.contains(opt), "{opt} missing: {line}");
    }
    let again = unionfs(&["mount", "--layers", &layers, &m], dir.path());
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already a mount point"),
        "{}",
        stderr(&again)
    );
    let u = unionfs(&["umount", &m], dir.path());
    assert!(u.status.success(), "{}", stderr(&u));
    assert!(!is_mounted(&mnt));
    let u2 = unionfs(&["umount", &m], dir.path());
    assert!(stderr(&u2).contains("not mounted"));
}

/// Returns true if and only if process `pid` exists and has not exited.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().next()? != "Z"))
        .unwrap_or(false)
}

/// `unionfs umount` returns once the daemon has exited, so that the upper it
/// locked can be committed, diffed or exported at once (it used to return
/// at `umount2`, and a `commit` right after could find the upper in use).
#[test]
fn umount_returns_once_the_daemon_has_exited() {
    require_fuse();
    let (dir, layers) = sample();
    let upper = dir.path().join("upper");
    std::fs::create_dir(&upper).unwrap();
    let up = upper.display().to_string();
    for round in 0..3 {
        let mnt = dir.path().join(format!("mnt{round}"));
        std::fs::create_dir(&mnt).unwrap();
        let _guard = Unmount(mnt.clone());
        let m = mnt.display().to_string();
        let o = unionfs(
            &["mount", "--layers", &layers, "--upper", &up, &m],
            dir.path(),
        );
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::write(mnt.join(format!("new{round}")), b"x").unwrap();
        let pg = Command::new("pgrep")
            .args(["-f", "--", &m])
            .output()
            .unwrap();
        let pids: Vec<u32> = stdout(&pg)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        assert_eq!(pids.len(), 1, "one daemon for {m}: {pids:?}");
        let pid = pids[0];
        // From the second round, a daemon slow to exit: stopped before the
        // unmount, continued 300 ms later.
        let slow = round > 0;
        let cont = slow.then(|| {
            // SAFETY: signals to the daemon this test started.
            assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                unsafe { libc::kill(pid as i32, libc::SIGCONT) };
            })
        });
        let t0 = Instant::now();
        let u = unionfs(&["umount", &m], dir.path());
        let took = t0.elapsed();
        if let Some(t) = cont {
            t.join().unwrap();
        }
        assert!(u.status.success(), "{}", stderr(&u));
        assert!(
            !alive(pid),
            "round {round}: the daemon outlived `unionfs umount`"
        );
        assert!(
            !slow || took >= Duration::from_millis(250),
            "round {round}: {took:?}"
        );
        let d = unionfs(&["diff", "--layers", &layers, "--upper", &up], dir.path());
        assert!(d.status.success(), "round {round}: {}", stderr(&d));
        assert!(
            stdout(&d).contains(&format!("A /new{round}")),
            "{}",
            stdout(&d)
        );
    }
}

#[test]
fn mount_failures_leave_nothing_mounted() {
    require_fuse();
    let (dir, layers) = sample();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _guard = Unmount(mnt.clone());
    let m = mnt.display().to_string();
    let missing_mp = dir.path().join("nope").display().to_string();
    let o = unionfs(&["mount", "--layers", &layers, &missing_mp], dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("nope"), "{}", stderr(&o));
    // One line, the cause said once.
    assert_eq!(
        stderr(&o),
        format!("unionfs: {missing_mp}: No such file or directory (os error 2)\n")
    );
    let bad = dir.path().join("bad.tar");
    std::fs::write(&bad, vec![7u8; 1024]).unwrap();
    let with_bad = format!("{layers}:{}", bad.display());
    let o = unionfs(&["mount", "--layers", &with_bad, &m], dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("bad.tar"), "{}", stderr(&o));
    assert!(!is_mounted(&mnt));
    let o = unionfs(
        &["mount", "-o", "bogus", "--layers", &layers, &m],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("bogus"));
    assert!(!is_mounted(&mnt));
}

#[test]
fn foreground_mount_unmounts_on_sigterm() {
    require_fuse();
    let (dir, layers) = sample();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _guard = Unmount(mnt.clone());
    let mut child = mount_fg(&["--layers", &layers], &mnt, dir.path());
    assert!(mnt.join("etc/passwd").exists());
    // Busy: a file is open. The signal cannot unmount; the mount stays served.
    let held = std::fs::File::open(mnt.join("etc/passwd")).unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "exited while busy");
    assert!(is_mounted(&mnt));
    assert!(std::fs::read(mnt.join("etc/passwd")).is_ok());
    // Closed: the next signal unmounts (the first attempt must not have used
    // up the unmount).
    drop(held);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the second SIGTERM did not end the server");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert!(!is_mounted(&mnt));
}

#[test]
fn fusermount3_unmount_ends_the_server() {
    require_fuse();
    let (dir, layers) = sample();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _guard = Unmount(mnt.clone());
    let mut child = mount_fg(&["--layers", &layers], &mnt, dir.path());
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "server kept running after unmount"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!is_mounted(&mnt));
}

// ---------------------------------------------------------------------------
// Writable mounts through the binary

/// Spawns `unionfs mount -f` with `args` and waits until `mnt` is mounted.
fn mount_fg(args: &[&str], mnt: &Path, cache: &Path) -> std::process::Child {
    let mut child = Command::new(BIN)
        .args(["mount", "-f"])
        .args(args)
        .arg(mnt)
        .env("XDG_CACHE_HOME", cache)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !is_mounted(mnt) {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "mount did not appear"
        );
        assert!(child.try_wait().unwrap().is_none(), "mount -f exited early");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

const CRASH_FILES: usize = 150;
const CRASH_SIZE: usize = 256 << 10;

fn crash_pattern(i: usize) -> Vec<u8> {
    (0..CRASH_SIZE)
        .map(|j| ((i * 31 + j * 7) % 253) as u8)
        .collect()
}

/// `kill -9` of the daemon while a client copies files up (1-byte appends to
/// lower files): after a remount every file is whole — its lower data,
/// followed only by the appends that were acknowledged or in flight — and the
/// upper holds no partial copy (copies are built in the work dir, fsynced and
/// renamed into place).
#[test]
fn kill_9_during_copy_ups_leaves_no_partial_file() {
    require_fuse();
    let dir = tempfile::tempdir().unwrap();
    let tar_path = dir.path().join("layer.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
        for i in 0..CRASH_FILES {
            let data = crash_pattern(i);
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            b.append_data(&mut h, format!("f{i:03}"), &data[..])
                .unwrap();
        }
        b.finish().unwrap();
    }
    let upper = dir.path().join("upper");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&upper).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let _guard = Unmount(mnt.clone());
    let layers = tar_path.display().to_string();
    let up = upper.display().to_string();
    let args = ["--layers", &layers, "--upper", &up];
    let rounds = 3;
    for round in 0..rounds {
        let mut child = mount_fg(&args, &mnt, dir.path());
        let m = mnt.clone();
        let writer = std::thread::spawn(move || {
            for k in 0..CRASH_FILES {
                let i = (k * 37 + round * 11) % CRASH_FILES;
                let f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(m.join(format!("f{i:03}")));
                match f.and_then(|mut f| std::io::Write::write_all(&mut f, b"+")) {
                    Ok(()) => {}
                    Err(_) => return k, // the server is gone
                }
            }
            CRASH_FILES
        });
        std::thread::sleep(Duration::from_millis(100 - 30 * round as u64));
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        let done = writer.join().unwrap();
        eprintln!("round {round}: killed after {done} appends");
        let _ = Command::new("umount").arg("-l").arg(&mnt).status();
        assert!(!is_mounted(&mnt));
    }
    // No partial copy ever sits in the upper.
    for e in std::fs::read_dir(&upper).unwrap() {
        let e = e.unwrap();
        let len = e.metadata().unwrap().len() as usize;
        assert!(
            (CRASH_SIZE..=CRASH_SIZE + rounds).contains(&len),
            "{:?}: {len} bytes in the upper",
            e.file_name()
        );
    }
    let mut child = mount_fg(&args, &mnt, dir.path());
    let mut copied = 0;
    for i in 0..CRASH_FILES {
        let got = std::fs::read(mnt.join(format!("f{i:03}"))).unwrap();
        assert!(got.len() >= CRASH_SIZE, "f{i:03}: {} bytes", got.len());
        assert!(
            got[..CRASH_SIZE] == crash_pattern(i)[..],
            "f{i:03}: data changed"
        );
        assert!(
            got[CRASH_SIZE..].iter().all(|&b| b == b'+'),
            "f{i:03}: garbage appended"
        );
        assert!(got.len() <= CRASH_SIZE + rounds);
        copied += usize::from(got.len() > CRASH_SIZE);
    }
    assert!(
        copied > 0,
        "no copy-up happened before the kills: the test proves nothing"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let work = dir.path().join(".upper.unionfs-work");
    // Nothing but the shared whiteout (every whiteout links to it).
    let left: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("unionfs-whiteout."))
        .collect();
    assert!(left.is_empty(), "temp files left after remount: {left:?}");
}

/// A dropped entry is reported with the layer file's name, whether the index
/// is built now or loaded from the cache.
#[test]
fn warnings_name_the_layer_file() {
    let dir = tempfile::tempdir().unwrap();
    let tar_path = dir.path().join("escaping-layer.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        h.set_mode(0o644);
        h.as_old_mut().name[..9].copy_from_slice(b"../escape");
        h.set_cksum();
        b.append(&h, &b"x\n"[..]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "ok", &b""[..]).unwrap();
        b.finish().unwrap();
    }
    let t = tar_path.display().to_string();
    for pass in ["built", "loaded"] {
        let o = unionfs(&["ls", "--layers", &t, "/"], dir.path());
        assert!(o.status.success(), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("escaping-layer.tar") && err.contains("../escape"),
            "index {pass}: warning without the layer's name: {err}"
        );
        assert!(stdout(&o).contains("/ok") && !stdout(&o).contains("escape"));
    }
}

/// Id mapping on a read-only mount: ranges, the overflow id, squashing.
#[test]
fn uidmap_and_squash_options_report_mapped_owners() {
    use std::os::unix::fs::MetadataExt;
    require_fuse();
    let (dir, layers) = sample();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _guard = Unmount(mnt.clone());
    let m = mnt.display().to_string();
    let ids = |p: &str| {
        let md = std::fs::symlink_metadata(mnt.join(p)).unwrap();
        (md.uid(), md.gid())
    };
    let o = unionfs(
        &[
            "mount",
            "--uidmap",
            "1000:5000:1",
            "--gidmap",
            "1000:6000:1,0:7000:1",
            "--layers",
            &layers,
            &m,
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(ids("home/user"), (5000, 6000));
    assert_eq!(
        ids("etc/passwd"),
        (65534, 7000),
        "uid 0 is not mapped: overflow id"
    );
    assert!(unionfs(&["umount", &m], dir.path()).status.success());
    let o = unionfs(
        &[
            "mount",
            "--squash-to-uid",
            "4242",
            "--squash-to-gid",
            "4343",
            "--layers",
            &layers,
            &m,
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(ids("home/user"), (4242, 4343));
    assert_eq!(ids("etc/passwd"), (4242, 4343));
    assert!(unionfs(&["umount", &m], dir.path()).status.success());
    let bad = unionfs(
        &["mount", "--uidmap", "0:1000", "--layers", &layers, &m],
        dir.path(),
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("--uidmap") && stderr(&bad).contains("CONTAINER_ID:HOST_ID:COUNT"),
        "{}",
        stderr(&bad)
    );
    assert!(!is_mounted(&mnt));
}

/// Bytes the process `pid` has written by syscalls (`wchar` of /proc/PID/io):
/// a FUSE daemon's replies to READ and its writes to the upper both count.
fn wchar(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("wchar in /proc/PID/io")
}

/// As root with `-o passthrough`, reads and writes of upper files go by FUSE
/// passthrough: the daemon moves none of their bytes. By default (files
/// opened with no message) the daemon serves them. Either way the bytes land
/// in the upper, through write(2), through a shared mmap and after a copy-up
/// of a lower file.
#[test]
fn upper_file_io_goes_by_passthrough_when_asked() {
    require_fuse();
    let (dir, layers) = sample();
    const MIB: usize = 1 << 20;
    let pattern: Vec<u8> = (0..16 * MIB).map(|i| (i % 251) as u8).collect();
    for passthrough in [true, false] {
        let case = dir.path().join(format!("pt-{passthrough}"));
        let (upper, mnt) = (case.join("upper"), case.join("mnt"));
        std::fs::create_dir_all(&upper).unwrap();
        std::fs::create_dir_all(&mnt).unwrap();
        let _guard = Unmount(mnt.clone());
        let up = upper.display().to_string();
        let mut args = vec!["--layers", &layers, "--upper", &up];
        if passthrough {
            args.extend(["-o", "passthrough"]);
        }
        let mut child = mount_fg(&args, &mnt, dir.path());
        let pid = child.id();

        let before = wchar(pid);
        std::fs::write(mnt.join("new.bin"), &pattern).unwrap();
        let got = std::fs::read(mnt.join("new.bin")).unwrap();
        let moved = wchar(pid) - before;
        assert!(
            got == pattern,
            "passthrough={passthrough}: read back differs"
        );
        assert!(
            std::fs::read(upper.join("new.bin")).unwrap() == pattern,
            "passthrough={passthrough}: upper file differs"
        );
        if passthrough {
            assert!(
                moved < MIB as u64,
                "the daemon moved {moved} bytes of a passthrough file"
            );
        } else {
            assert!(
                moved >= pattern.len() as u64,
                "the daemon moved only {moved} bytes"
            );
        }

        // A shared writable mmap of a copied-up lower file (etc/motd of the
        // sample's base layer): the change reaches the upper.
        let motd = mnt.join("etc/motd");
        let lower = std::fs::read(&motd).unwrap();
        assert!(!lower.is_empty());
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&motd)
            .unwrap();
        unsafe {
            use std::os::fd::AsRawFd;
            let len = lower.len();
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            );
            assert_ne!(
                p,
                libc::MAP_FAILED,
                "mmap: {}",
                std::io::Error::last_os_error()
            );
            *(p as *mut u8) = b'#';
            assert_eq!(libc::msync(p, len, libc::MS_SYNC), 0);
            libc::munmap(p, len);
        }
        drop(f);
        let mut want = lower.clone();
        want[0] = b'#';
        assert_eq!(std::fs::read(upper.join("etc/motd")).unwrap(), want);
        assert_eq!(
            std::fs::read(&motd).unwrap(),
            want,
            "passthrough={passthrough}"
        );

        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        assert!(child.wait().unwrap().success());
    }
}
