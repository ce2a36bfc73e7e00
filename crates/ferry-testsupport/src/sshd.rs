//! A real OpenSSH server serving git over SSH for tests: `/usr/sbin/sshd` (installed by
//! `.ci/run`, package openssh-server) started by the test on a free loopback port, with a fresh
//! host key and a fresh client key, serving bare repositories from a temporary directory
//! through the real `git-upload-pack` / `git-receive-pack`. The shared test environment has no
//! SSH server (testenv/README.md); this one lives and dies with the test that starts it.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Where Debian's openssh-server puts the daemon (sshd must be started by absolute path).
pub const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd; killed and its directory removed on drop.
pub struct SshGitServer {
    dir: PathBuf,
    child: Child,
    pub port: u16,
    /// The account the client logs in as (the user running the test).
    pub user: String,
    /// The client's private key (OpenSSH format), authorised on the server.
    pub identity: String,
    /// A known_hosts line for this server's host key (`[127.0.0.1]:PORT ssh-ed25519 …`).
    pub known_hosts: String,
    /// Another key pair's private key, NOT authorised on the server.
    pub other_identity: String,
    /// A known_hosts line naming this server with a different host key.
    pub wrong_known_hosts: String,
    /// Directory holding the bare repositories.
    pub repos: PathBuf,
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn keygen(path: &Path) -> Result<()> {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ferry-test", "-f"])
        .arg(path))?;
    Ok(())
}

/// A git command run in `dir` with a fixed identity (tests own their commits).
pub fn git(dir: &Path, args: &[&str]) -> Result<String> {
    run(Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=ferry-test",
            "-c",
            "user.email=ferry-test@example.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args))
}

impl SshGitServer {
    /// Start sshd and wait (up to 20 s) until it accepts connections.
    pub fn start() -> Result<Self> {
        if !Path::new(SSHD).is_file() {
            bail!("{SSHD} is missing: install openssh-server (.ci/run does)");
        }
        let dir = std::env::temp_dir().join(crate::unique_name("ferry-sshd"));
        std::fs::create_dir_all(&dir)?;
        let repos = dir.join("repos");
        std::fs::create_dir_all(&repos)?;
        for key in ["host_key", "client_key", "other_key", "other_host_key"] {
            keygen(&dir.join(key))?;
        }
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys"))?;
        let user = run(Command::new("id").arg("-un"))?.trim().to_string();
        // A free port: bind, read it, release it for sshd.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\nPidFile {dir}/sshd.pid\n\
             AuthorizedKeysFile {dir}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\nAllowUsers {user}\nLogLevel VERBOSE\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config)?;
        // sshd running as root insists on its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let log = std::fs::File::create(dir.join("sshd.log"))?;
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {SSHD}"))?;
        let host_pub = std::fs::read_to_string(dir.join("host_key.pub"))?;
        let other_host_pub = std::fs::read_to_string(dir.join("other_host_key.pub"))?;
        let known = |public: &str| {
            let mut fields = public.split_whitespace();
            let kind = fields.next().unwrap_or_default();
            let blob = fields.next().unwrap_or_default();
            format!("[127.0.0.1]:{port} {kind} {blob}\n")
        };
        let mut server = Self {
            known_hosts: known(&host_pub),
            wrong_known_hosts: known(&other_host_pub),
            identity: std::fs::read_to_string(dir.join("client_key"))?,
            other_identity: std::fs::read_to_string(dir.join("other_key"))?,
            dir,
            child,
            port,
            user,
            repos,
        };
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("sshd exited ({status}): {}", server.log());
            }
            if Instant::now() >= deadline {
                bail!(
                    "sshd did not listen on {address} within 20 s: {}",
                    server.log()
                );
            }
            // Poll interval of a deadline-bound wait for the daemon to listen.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What sshd logged (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// Create the bare repository `name` (e.g. `app.git`) with one commit on `main` holding
    /// `files`; returns its path.
    pub fn create_repo(&self, name: &str, files: &[(&str, &str)]) -> Result<PathBuf> {
        let bare = self.repos.join(name);
        run(Command::new("git")
            .args(["init", "-q", "--bare", "-b", "main"])
            .arg(&bare))?;
        let work = self.dir.join(format!("seed-{}", crate::unique_name("w")));
        std::fs::create_dir_all(&work)?;
        git(&work, &["init", "-q", "-b", "main"])?;
        for (path, text) in files {
            let file = work.join(path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(file, text)?;
        }
        git(&work, &["add", "-A"])?;
        git(&work, &["commit", "-q", "-m", "seed"])?;
        git(&work, &["push", "-q", &bare.display().to_string(), "main"])?;
        Ok(bare)
    }

    /// `ssh://USER@127.0.0.1:PORT/<repos>/<name>`
    pub fn url(&self, name: &str) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            self.repos.join(name).display()
        )
    }
}

impl Drop for SshGitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
