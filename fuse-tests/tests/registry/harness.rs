//! A real OCI registry for the registry tests (fuse-tests/tests/registry.rs):
//! Debian's `docker-registry` (the CNCF distribution registry 2.8) on
//! 127.0.0.1, with no auth, htpasswd Basic auth or token (Bearer) auth
//! through `token_server.py`; pushing OCI layouts into it with skopeo;
//! client auth files; a tiny HTTP/1.1 client for readiness checks and raw
//! registry requests.
//!
//! Knows nothing of unionfs. Each `Registry` owns a scratch directory
//! (config, storage, logs, htpasswd, token-server certificate), a port, and
//! its processes, killed on drop.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tools::{run, scratch};

/// The registry binary (Debian: docker-registry).
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// How long a registry (or the token server) may take to answer after start.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The `service` and `issuer` of token auth.
const SERVICE: &str = "unionfs-test-registry";
const ISSUER: &str = "unionfs-test-token-issuer";

/// How clients authenticate to a [`Registry`].
#[derive(Clone, Debug)]
pub enum Auth {
    /// Anonymous: anyone reads and pushes.
    None,
    /// `auth: htpasswd:` (HTTP Basic), one user (bcrypt, `htpasswd -Bbn`).
    Htpasswd { user: String, pass: String },
    /// `auth: token:`: the registry answers 401 with a Bearer challenge whose
    /// realm is `token_server.py`, which takes `user:pass` as Basic
    /// credentials and issues ES256 JWTs valid `expires_in` seconds.
    Token {
        user: String,
        pass: String,
        expires_in: u32,
    },
}

impl Auth {
    /// Basic auth for `user`/`pass`.
    pub fn basic(user: &str, pass: &str) -> Auth {
        Auth::Htpasswd {
            user: user.into(),
            pass: pass.into(),
        }
    }

    /// Token auth for `user`/`pass`, tokens living `expires_in` seconds.
    pub fn token(user: &str, pass: &str, expires_in: u32) -> Auth {
        Auth::Token {
            user: user.into(),
            pass: pass.into(),
            expires_in,
        }
    }

    /// `(user, pass)`, unless anonymous.
    pub fn creds(&self) -> Option<(&str, &str)> {
        match self {
            Auth::None => None,
            Auth::Htpasswd { user, pass } | Auth::Token { user, pass, .. } => {
                Some((user.as_str(), pass.as_str()))
            }
        }
    }
}

/// A process the harness started, killed (its process group) on drop.
struct Proc {
    child: Child,
}

impl Proc {
    fn spawn(cmd: &mut Command, log: &Path, what: &'static str) -> Proc {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        // SAFETY: prctl is async-signal-safe. The child dies with the test
        // thread that spawned it (PDEATHSIG follows the forking thread), so a
        // killed test run leaves no registry behind; every Registry lives
        // and dies within one test.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {what} ({cmd:?}): {e}"));
        Proc { child }
    }

    /// Returns true if and only if it has exited.
    fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    fn kill(&mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: the process group of a child this harness spawned (process_group(0)).
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.exited() {
            self.kill();
        }
    }
}

/// A running `docker-registry serve` on 127.0.0.1 (and its token server).
pub struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    auth: Auth,
    registry: Option<Proc>,
    token: Option<(Proc, u16)>,
}

impl Registry {
    /// Writes the config (storage under a fresh scratch dir, `delete:
    /// enabled`, a free port, log level warn into `registry.log`), starts the
    /// token server if `auth` needs one, then the registry; returns once
    /// `GET /v2/` answers (any status), or panics with the log after
    /// [`START_TIMEOUT`].
    pub fn start(auth: Auth) -> Registry {
        assert!(
            Path::new(REGISTRY_BIN).is_file(),
            "{REGISTRY_BIN} is missing: apt-get install docker-registry (the CNCF distribution \
             registry; .ci/run installs it)"
        );
        let dir = scratch("registry-");
        let mut r = Registry {
            dir,
            port: free_port(),
            auth,
            registry: None,
            token: None,
        };
        fs::create_dir_all(r.storage()).unwrap();
        let auth_yaml = match r.auth.clone() {
            Auth::None => String::new(),
            Auth::Htpasswd { user, pass } => {
                let out = run(Command::new("htpasswd").args(["-Bbn", &user, &pass]));
                assert!(
                    out.status.success(),
                    "htpasswd -Bbn failed (apt-get install apache2-utils): {}",
                    out.stderr
                );
                let file = r.path("htpasswd");
                fs::write(&file, out.text().trim_end().to_owned() + "\n").unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: unionfs-test\n    path: {}\n",
                    file.display()
                )
            }
            Auth::Token {
                user,
                pass,
                expires_in,
            } => {
                let port = r.start_token_server(&user, &pass, expires_in);
                format!(
                    "auth:\n  token:\n    realm: http://127.0.0.1:{port}/token\n    \
                     service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                    r.path("token-root.pem").display()
                )
            }
        };
        let config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  formatter: text\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{}\n  secret: unionfs-registry-tests\n\
             {auth_yaml}",
            r.storage().display(),
            r.port
        );
        fs::write(r.path("config.yml"), config).unwrap();
        r.restart();
        r
    }

    /// Starts token_server.py; returns its port.
    fn start_token_server(&mut self, user: &str, pass: &str, expires_in: u32) -> u16 {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/registry/token_server.py");
        let port_file = self.path("token.port");
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(&script)
            .arg("--port-file")
            .arg(&port_file)
            .arg("--cert")
            .arg(self.path("token-root.pem"))
            .args(["--user", user, "--password", pass])
            .args(["--issuer", ISSUER, "--service", SERVICE])
            .args(["--expires-in", &expires_in.to_string()])
            .arg("--log")
            .arg(self.path("token.log"));
        let mut p = Proc::spawn(&mut cmd, &self.path("token.log"), "token_server.py");
        let deadline = Instant::now() + START_TIMEOUT;
        let port = loop {
            if let Some(port) = fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse::<u16>().ok())
            {
                break port;
            }
            assert!(
                !p.exited() && Instant::now() < deadline,
                "token_server.py did not start (needs python3-jwt, python3-cryptography):\n{}",
                tail(&self.path("token.log"), 30)
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        self.token = Some((p, port));
        port
    }

    /// (Re)starts the registry process on the same port and storage; returns
    /// once `GET /v2/` answers.
    pub fn restart(&mut self) {
        self.stop();
        let mut cmd = Command::new(REGISTRY_BIN);
        cmd.arg("serve").arg(self.path("config.yml"));
        let mut p = Proc::spawn(&mut cmd, &self.path("registry.log"), "docker-registry");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if http(&self.addr(), "GET", "/v2/", &[], b"").is_ok() {
                break;
            }
            if p.exited() || Instant::now() > deadline {
                p.kill();
                panic!(
                    "docker-registry serve {} did not answer GET /v2/ on {} within {:?}:\n{}",
                    self.path("config.yml").display(),
                    self.addr(),
                    START_TIMEOUT,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.registry = Some(p);
    }

    /// Kills the registry (SIGKILL: it goes away as a crashed server does);
    /// the token server stays. Connections to the port are refused until
    /// [`Registry::restart`].
    pub fn stop(&mut self) {
        if let Some(mut p) = self.registry.take() {
            p.kill();
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's socket address.
    pub fn socket_addr(&self) -> SocketAddr {
        self.addr().parse().unwrap()
    }

    /// A file in its scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Its storage root (the filesystem driver's `rootdirectory`).
    pub fn storage(&self) -> PathBuf {
        self.path("storage")
    }

    /// Where the filesystem driver keeps the bytes of blob `digest`
    /// (`sha256:HEX`): deleting its directory makes the blob missing while
    /// the manifests still name it.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The registry's log (and the token server's), for messages.
    pub fn log(&self) -> String {
        let mut s = tail(&self.path("registry.log"), 40);
        if self.token.is_some() {
            s += "\n--- token server ---\n";
            s += &tail(&self.path("token.log"), 20);
        }
        s
    }

    /// The full text of the registry's and the token server's logs.
    pub fn log_text(&self) -> String {
        let r = fs::read_to_string(self.path("registry.log")).unwrap_or_default();
        let t = fs::read_to_string(self.path("token.log")).unwrap_or_default();
        r + &t
    }

    /// Tokens the token server issued so far (0 without token auth).
    pub fn tokens_issued(&self) -> u64 {
        self.token_stats("issued")
    }

    /// Token requests the token server refused (bad or missing credentials).
    pub fn tokens_refused(&self) -> u64 {
        self.token_stats("refused")
    }

    fn token_stats(&self, key: &str) -> u64 {
        let Some((_, port)) = &self.token else {
            return 0;
        };
        let (status, _, body) = http(&format!("127.0.0.1:{port}"), "GET", "/stats", &[], b"")
            .unwrap_or_else(|e| panic!("token server /stats: {e}"));
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("/stats is JSON");
        v[key].as_u64().expect("a count")
    }

    /// `skopeo copy --preserve-digests [--all] oci:LAYOUT:TAG
    /// docker://ADDR/REPO_TAG`, with this registry's credentials: the image
    /// lands byte for byte (no recompression, no blob substituted from
    /// skopeo's blob-info cache), so the layout's digests and sizes are the
    /// registry's. `repo_tag` is `REPO:TAG`.
    pub fn push(&self, layout: &Path, tag: &str, repo_tag: &str) {
        self.push_with(layout, tag, repo_tag, &[]);
    }

    /// [`Registry::push`] with extra skopeo flags (e.g. `--all` for an index).
    pub fn push_with(&self, layout: &Path, tag: &str, repo_tag: &str, extra: &[&str]) {
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "copy",
            "--quiet",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ])
        .args(extra);
        if let Some((u, p)) = self.auth.creds() {
            cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
        }
        cmd.arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.addr()));
        let out = run(&mut cmd);
        assert!(
            out.status.success(),
            "skopeo copy oci:{}:{tag} -> {}/{repo_tag} failed:\n{}\nregistry log:\n{}",
            layout.display(),
            self.addr(),
            out.stderr,
            self.log()
        );
    }
}

impl Registry {
    /// Uploads `bytes` as a blob of `repo` (monolithic upload; anonymous
    /// registries only); returns its digest.
    pub fn put_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = crate::tools::digest(bytes);
        let (st, hs, body) = http(
            &self.addr(),
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            b"",
        )
        .expect("POST blobs/uploads");
        assert_eq!(
            st,
            202,
            "POST /v2/{repo}/blobs/uploads/: {}",
            String::from_utf8_lossy(&body)
        );
        let loc = hs
            .iter()
            .find(|(k, _)| k == "location")
            .map(|(_, v)| v.clone())
            .expect("a Location");
        let loc = loc
            .strip_prefix(&format!("http://{}", self.addr()))
            .unwrap_or(&loc);
        let sep = if loc.contains('?') { '&' } else { '?' };
        let (st, _, body) = http(
            &self.addr(),
            "PUT",
            &format!("{loc}{sep}digest={digest}"),
            &[("Content-Type", "application/octet-stream")],
            bytes,
        )
        .expect("PUT the blob");
        assert_eq!(
            st,
            201,
            "PUT blob {digest}: {}",
            String::from_utf8_lossy(&body)
        );
        digest
    }

    /// Puts `bytes` as manifest `reference` (a tag or digest) of `repo`
    /// (anonymous registries only).
    pub fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
        let (st, _, body) = http(
            &self.addr(),
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            bytes,
        )
        .expect("PUT the manifest");
        assert_eq!(
            st,
            201,
            "PUT /v2/{repo}/manifests/{reference}: {}\n{}",
            String::from_utf8_lossy(&body),
            self.log()
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
        self.token = None;
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The last `n` lines of a file.
pub fn tail(p: &Path, n: usize) -> String {
    let s = fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `base64` (standard alphabet, padded).
pub fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Writes a containers-auth.json (`podman login`'s format, which
/// `$REGISTRY_AUTH_FILE` names) giving `user:pass` for `host` (`HOST:PORT`).
pub fn write_auth_file(path: &Path, host: &str, user: &str, pass: &str) {
    let v = serde_json::json!({
        "auths": { host: { "auth": base64(format!("{user}:{pass}").as_bytes()) } }
    });
    fs::write(path, serde_json::to_vec_pretty(&v).unwrap())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// An HTTP response: status, headers (names lowercased, in order), body.
pub type Response = (u16, Vec<(String, String)>, Vec<u8>);

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), 10 s
/// timeouts; the response's status, headers (names lowercased) and body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let sa: SocketAddr = addr
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
    let mut s = TcpStream::connect_timeout(&sa, Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        let _ = write!(req, "{k}: {v}\r\n");
    }
    let _ = write!(req, "Content-Length: {}\r\n\r\n", body.len());
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("status line {line:?}"))
        })?;
    let mut hs = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            hs.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let mut body = Vec::new();
    if method != "HEAD" {
        r.read_to_end(&mut body)?;
    }
    Ok((status, hs, body))
}
