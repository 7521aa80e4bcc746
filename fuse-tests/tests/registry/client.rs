//! How the registry tests run the client: the `unionfs` binary (checked to
//! have the registry transport), a per-test context (scratch dir, fresh
//! caches, an auth file, no host credentials), mounts with reads that time
//! out instead of hanging, one-line error checks, tree comparisons.
//!
//! Starts no registry or proxy: the tests hand it image references.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use crate::harness::write_auth_file;
use crate::tools::{self, assert_tree, dump, run, run_for, Out};
use crate::util::{force_unmount, is_mounted};

/// Longest a read may take before the test calls it hung.
pub const HUNG: Duration = Duration::from_secs(60);

/// The unionfs binary; panics at once, saying why, if it has no registry
/// client yet (`mount --help` lacks `--registry-timeout`).
pub fn client() -> &'static Path {
    static C: OnceLock<PathBuf> = OnceLock::new();
    C.get_or_init(|| {
        let b = tools::bin();
        let help = run(Command::new(b).args(["mount", "--help"]));
        assert!(
            help.text().contains("--registry-timeout"),
            "{} has no registry client (issue 14): `unionfs mount --help` lacks \
             --registry-timeout, so `--image docker://…` cannot be tested yet",
            b.display()
        );
        b.to_owned()
    })
}

/// `docker://ADDR/REPO_TAG`.
pub fn spec(addr: &str, repo_tag: &str) -> String {
    format!("docker://{addr}/{repo_tag}")
}

/// One test's client side: a scratch dir (caches, mount points, logs, a
/// HOME and XDG_RUNTIME_DIR of its own so no host auth file is read), and
/// the auth file given as `$REGISTRY_AUTH_FILE`.
pub struct Ctx {
    pub dir: tempfile::TempDir,
    pub auth_file: Option<PathBuf>,
    n: std::cell::Cell<u32>,
}

impl Ctx {
    pub fn new() -> Ctx {
        let dir = tools::scratch("registry-client-");
        for d in ["home", "run", "xdg-cache"] {
            tools::mkdir(&dir.path().join(d));
        }
        Ctx {
            dir,
            auth_file: None,
            n: std::cell::Cell::new(0),
        }
    }

    /// With an auth file giving `user:pass` for `host`.
    pub fn with_auth(mut self, host: &str, user: &str, pass: &str) -> Ctx {
        let p = self.dir.path().join("auth.json");
        write_auth_file(&p, host, user, pass);
        self.auth_file = Some(p);
        self
    }

    /// A fresh name under the scratch dir (`what-N`).
    pub fn fresh(&self, what: &str) -> PathBuf {
        self.n.set(self.n.get() + 1);
        self.dir.path().join(format!("{what}-{}", self.n.get()))
    }

    /// A fresh, empty cache directory.
    pub fn cache(&self) -> String {
        let p = self.fresh("cache");
        tools::mkdir(&p);
        p.display().to_string()
    }

    /// `unionfs index -q --image SPEC --cache-dir CACHE` (success not checked).
    pub fn index(&self, spec: &str, cache: &str) -> Out {
        let args = ["index", "-q", "--image", spec, "--cache-dir", cache];
        self.uf(&args, tools::CMD_TIMEOUT).0
    }

    /// `unionfs ARGS`, killed after `timeout`; with the time it took.
    pub fn uf(&self, args: &[&str], timeout: Duration) -> (Out, Duration) {
        let mut c = Command::new(client());
        c.args(args)
            .env("HOME", self.dir.path().join("home"))
            .env("XDG_RUNTIME_DIR", self.dir.path().join("run"))
            .env("XDG_CACHE_HOME", self.dir.path().join("xdg-cache"))
            .env_remove("DOCKER_CONFIG");
        match &self.auth_file {
            Some(p) => c.env("REGISTRY_AUTH_FILE", p),
            None => c.env_remove("REGISTRY_AUTH_FILE"),
        };
        let t = Instant::now();
        let mut out = run_for(&mut c, timeout);
        out.cmd = format!("unionfs {}", args.join(" "));
        (out, t.elapsed())
    }

    /// `unionfs mount -q --image SPEC --cache-dir CACHE --log-file LOG EXTRA
    /// -o allow_other MNT`, or the failed command's output (then nothing
    /// may be mounted).
    pub fn try_mount(&self, spec: &str, cache: &str, extra: &[&str]) -> Result<Mount, Out> {
        let mnt = self.fresh("mnt");
        tools::mkdir(&mnt);
        let log = self.fresh("mount.log");
        let (m, l) = (mnt.display().to_string(), log.display().to_string());
        let mut args = vec!["mount", "-q", "--image", spec, "--cache-dir", cache];
        args.extend(["--log-file", &l]);
        args.extend(extra);
        args.extend(["-o", "allow_other", &m]);
        let (out, _) = self.uf(&args, tools::CMD_TIMEOUT);
        if !out.status.success() {
            assert!(!is_mounted(&mnt), "`{}` failed but left a mount", out.cmd);
            return Err(out);
        }
        assert!(
            is_mounted(&mnt),
            "`{}` succeeded but nothing is mounted on {m}",
            out.cmd
        );
        Ok(Mount {
            path: mnt,
            log,
            out,
        })
    }

    pub fn mount(&self, spec: &str, cache: &str, extra: &[&str]) -> Mount {
        self.try_mount(spec, cache, extra)
            .unwrap_or_else(|o| panic!("`{}` failed ({}):\n{}", o.cmd, o.status, o.stderr))
    }
}

/// A live mount; unmounted on drop (its daemon killed first if a read hung).
pub struct Mount {
    pub path: PathBuf,
    pub log: PathBuf,
    /// What `unionfs mount` printed.
    pub out: Out,
}

impl Mount {
    pub fn p(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// Reads `rel` on another thread; the result and how long it took. A
    /// read that has not returned after `HUNG` kills the mount's daemon (so
    /// the reader gets ENOTCONN and the test can end) and fails the test.
    pub fn read(&self, rel: &str) -> (io::Result<Vec<u8>>, Duration) {
        let p = self.p(rel);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let t = Instant::now();
            let r = fs::read(&p);
            let _ = tx.send((r, t.elapsed()));
        });
        match rx.recv_timeout(HUNG) {
            Ok(r) => r,
            Err(_) => {
                kill_daemon(&self.path);
                panic!(
                    "reading /{rel} through {} did not return within {HUNG:?} (daemon killed)\n\
                     mount log:\n{}",
                    self.path.display(),
                    self.log_text()
                );
            }
        }
    }

    /// Reads `rel`, which must succeed with `want`.
    pub fn read_ok(&self, rel: &str, want: &[u8]) -> Duration {
        let (r, t) = self.read(rel);
        let got = r.unwrap_or_else(|e| panic!("read /{rel}: {e}\nmount log:\n{}", self.log_text()));
        assert!(
            got == want,
            "/{rel}: {} bytes, not the image's {} (wrong bytes!)",
            got.len(),
            want.len()
        );
        t
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn alive(&self) -> bool {
        is_mounted(&self.path)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if is_mounted(&self.path) {
            force_unmount(&self.path);
        }
    }
}

/// SIGKILLs the unionfs processes whose command line names `mnt`.
pub fn kill_daemon(mnt: &Path) {
    let want = mnt.as_os_str().as_bytes();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
        let mut args = cmdline.split(|&b| b == 0);
        let is_unionfs = args.next().is_some_and(|a0| a0.ends_with(b"unionfs"));
        if is_unionfs && args.any(|a| a == want) && pid != std::process::id() as i32 {
            // SAFETY: a unionfs server of this test's own mount point.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Asserts a clean failure: non-zero exit (not a panic), exactly one line
/// on stderr; returns it.
pub fn one_line_error(out: &Out) -> String {
    assert!(
        !out.status.success(),
        "`{}` succeeded; it must fail:\n{}",
        out.cmd,
        out.text()
    );
    let msg = out.stderr.trim_end();
    assert!(!msg.contains("panicked"), "`{}` panicked:\n{msg}", out.cmd);
    assert_ne!(
        out.status.code(),
        Some(101),
        "`{}` panicked: {msg}",
        out.cmd
    );
    assert!(
        out.status.code().is_some(),
        "`{}` died of a signal: {msg}",
        out.cmd
    );
    let lines: Vec<&str> = msg.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "`{}`: want one line on stderr, got:\n{msg}",
        out.cmd
    );
    lines[0].to_owned()
}

/// The first 12 hex digits of a digest (what a message must name at least).
pub fn short(digest: &str) -> &str {
    &digest.trim_start_matches("sha256:")[..12]
}

/// Asserts that `got` (the mount) shows the tree `reference` holds.
pub fn assert_same_tree(reference: &Path, mnt: &Path, what: &str) {
    let want = dump(&reference.canonicalize().unwrap());
    assert_tree(
        &want,
        &dump(mnt),
        what,
        &format!("umoci unpack ({})", reference.display()),
    );
}

/// `unionfs ls -R --json --sha256 --image SPEC /` (with `extra`), as text.
pub fn ls_json(ctx: &Ctx, spec: &str, extra: &[&str]) -> String {
    let cache = ctx.cache();
    let mut args = vec!["ls", "-q", "--image", spec, "--cache-dir", &cache];
    args.extend(extra);
    args.extend(["-R", "--json", "--sha256", "/"]);
    let (out, _) = ctx.uf(&args, tools::CMD_TIMEOUT);
    out.ok().text()
}
