//! Running renderer processes (`kustomize`, `helm`): finding the binary, argv built only from
//! an allow-list of flags (values joined to their flag, positionals after `--`), an empty
//! environment plus an allow-list with a private `HOME`, bounded run time (the whole process
//! group is killed on timeout), bounded output, and feeding secrets through stdin so they never
//! appear in argv or on disk.

// The one place the render stage talks to the kernel directly (poll, pidfd_open, fcntl, kill);
// the crate root denies unsafe code everywhere else. Every block has a SAFETY comment.
#![allow(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
#[cfg(all(target_os = "linux", not(feature = "portable-process")))]
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Which renderer binary: the name on `PATH` and the env variable that overrides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Kustomize,
    Helm,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Kustomize => "kustomize",
            Tool::Helm => "helm",
        }
    }

    pub fn env_var(self) -> &'static str {
        match self {
            Tool::Kustomize => "FERRY_KUSTOMIZE",
            Tool::Helm => "FERRY_HELM",
        }
    }
}

/// Why a renderer binary was not found; each says how to point ferry at one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// `--helm` / `--kustomize` (or the agent's setting) names no executable.
    #[error("the configured {} binary {} does not exist or is not executable", tool.name(), path.display())]
    ConfiguredMissing { tool: Tool, path: PathBuf },
    /// `$FERRY_HELM` / `$FERRY_KUSTOMIZE` names no executable.
    #[error("${}={} does not exist or is not executable", tool.env_var(), path.display())]
    EnvMissing { tool: Tool, path: PathBuf },
    #[error("`{name}` was not found on PATH; install it, set ${env} to its path, or pass --{name} PATH", name = .0.name(), env = .0.env_var())]
    NotOnPath(Tool),
}

/// Locate a renderer: an explicit path (flag or ferry.yaml) wins, then `$FERRY_<TOOL>`, then
/// `PATH`. The error says all three ways to fix it.
pub fn find_tool(tool: Tool, explicit: Option<&Path>) -> Result<PathBuf, ToolError> {
    if let Some(path) = explicit {
        return if is_executable(path) {
            Ok(path.to_path_buf())
        } else {
            Err(ToolError::ConfiguredMissing {
                tool,
                path: path.to_path_buf(),
            })
        };
    }
    if let Some(path) = std::env::var_os(tool.env_var()).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(ToolError::EnvMissing { tool, path })
        };
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(tool.name());
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
    }
    Err(ToolError::NotOnPath(tool))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// What a [`Run::watch`] callback is told while the process runs.
#[derive(Debug, Clone, Copy)]
pub enum RunEvent<'b> {
    /// The process has been started: work meant to overlap with it can begin now (earlier,
    /// it would compete with the spawn itself).
    Started,
    /// All of stdout read so far; the pipe has run dry but is still open.
    Output(&'b [u8]),
}

/// See [`Run::watch`].
pub type RunWatcher<'a> = &'a mut dyn FnMut(RunEvent<'_>);

/// Every flag ferry ever passes to a renderer: the allow-list. A renderer's argv is built only
/// from [`Run::command`] words (static), these flags, option values joined to their flag
/// (`--set=VALUE`, so a value can never be read as a flag of its own) and positionals placed
/// after `--`. Nothing read from a repository or a tenant's object can become a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// helm `--namespace`.
    Namespace,
    /// helm `--skip-tests`.
    SkipTests,
    /// helm `--include-crds`.
    IncludeCrds,
    /// helm `--kube-version`.
    KubeVersion,
    /// helm `--api-versions`.
    ApiVersions,
    /// helm `--values` (a path, or `-` for stdin).
    Values,
    /// helm `--set`.
    Set,
    /// helm `--set-string`.
    SetString,
    /// helm `--version`.
    Version,
    /// helm `--repo`.
    Repo,
    /// helm `--destination`.
    Destination,
    /// helm `--plain-http`.
    PlainHttp,
    /// helm `--insecure-skip-tls-verify`.
    InsecureSkipTlsVerify,
    /// helm registry login `--insecure`.
    Insecure,
    /// helm `--username`.
    Username,
    /// helm `--password-stdin`.
    PasswordStdin,
    /// kustomize `--load-restrictor`.
    LoadRestrictor,
}

impl Flag {
    pub fn name(self) -> &'static str {
        match self {
            Flag::Namespace => "--namespace",
            Flag::SkipTests => "--skip-tests",
            Flag::IncludeCrds => "--include-crds",
            Flag::KubeVersion => "--kube-version",
            Flag::ApiVersions => "--api-versions",
            Flag::Values => "--values",
            Flag::Set => "--set",
            Flag::SetString => "--set-string",
            Flag::Version => "--version",
            Flag::Repo => "--repo",
            Flag::Destination => "--destination",
            Flag::PlainHttp => "--plain-http",
            Flag::InsecureSkipTlsVerify => "--insecure-skip-tls-verify",
            Flag::Insecure => "--insecure",
            Flag::Username => "--username",
            Flag::PasswordStdin => "--password-stdin",
            Flag::LoadRestrictor => "--load-restrictor",
        }
    }
}

/// Environment variables passed through from ferry's own environment to renderers: operator
/// settings a renderer needs to reach the network at all (proxies, a private CA bundle) and a
/// temp directory. Everything else (kubeconfigs, `SOPS_AGE_KEY`, cloud credentials, tokens, the
/// user's own `HELM_*`/`GIT_*`/`KUSTOMIZE_*` settings) is withheld: renderers start from an
/// empty environment. See docs/render.md, "Renderer environment".
pub const PASSED_ENV: [&str; 9] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "TMPDIR",
];

/// The operator's own additions to [`PASSED_ENV`]: `FERRY_RENDERER_ENV=NAME,NAME` (e.g. a
/// `GIT_SSH_COMMAND` for private remote bases). Names only; values come from ferry's
/// environment as it is.
pub const EXTRA_ENV_VAR: &str = "FERRY_RENDERER_ENV";

fn extra_passed_env() -> Vec<String> {
    std::env::var(EXTRA_ENV_VAR)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty() && !name.contains('='))
        .map(str::to_string)
        .collect()
}

/// One process invocation.
pub struct Run<'a> {
    pub program: &'a Path,
    /// Subcommand words, flags and `--flag=value` options, in order.
    args: Vec<OsString>,
    /// Positional arguments, passed after `--`.
    positionals: Vec<OsString>,
    /// Set when a positional was refused: [`run`] fails without starting anything.
    refused: Option<String>,
    pub cwd: Option<&'a Path>,
    /// Variables set on top of the allow-listed environment (see [`PASSED_ENV`]).
    env: Vec<(OsString, OsString)>,
    /// `HOME` for the process: a private directory; [`run`] makes a throw-away one if unset.
    home: Option<&'a Path>,
    /// Bytes written to the process's stdin (e.g. decrypted values for `helm -f -`).
    pub stdin: Option<Vec<u8>>,
    pub timeout: Duration,
    /// Cap on stdout; a renderer producing more is killed.
    pub max_stdout: u64,
    /// Told when the process has started, and given all of stdout read so far whenever the
    /// pipe runs dry while the process still runs. A Go renderer prints everything, then
    /// spends milliseconds tearing its heap down before end of file: the caller can parse
    /// what it has meanwhile.
    pub watcher: Option<RunWatcher<'a>>,
}

impl<'a> Run<'a> {
    pub fn new(program: &'a Path, timeout: Duration, max_stdout: u64) -> Self {
        Self {
            program,
            args: Vec::new(),
            positionals: Vec::new(),
            refused: None,
            cwd: None,
            env: Vec::new(),
            home: None,
            stdin: None,
            timeout,
            max_stdout,
            watcher: None,
        }
    }

    pub fn watch(mut self, watcher: RunWatcher<'a>) -> Self {
        self.watcher = Some(watcher);
        self
    }

    /// Subcommand words (`&["template"]`, `&["repo", "add"]`): static text only.
    pub fn command(mut self, words: &'static [&'static str]) -> Self {
        self.args.extend(words.iter().map(OsString::from));
        self
    }

    /// A boolean flag from the allow-list.
    pub fn flag(mut self, flag: Flag) -> Self {
        self.args.push(OsString::from(flag.name()));
        self
    }

    /// A flag with its value, as one argument `--flag=value`: however the value starts, the
    /// renderer reads it as this flag's value.
    pub fn option(mut self, flag: Flag, value: impl AsRef<OsStr>) -> Self {
        let mut arg = OsString::from(flag.name());
        arg.push("=");
        arg.push(value.as_ref());
        self.args.push(arg);
        self
    }

    /// A positional argument, passed after `--` so the renderer never parses it as a flag.
    /// One starting with `-` is refused outright (defence in depth; callers validate first).
    pub fn positional(mut self, value: impl AsRef<OsStr>) -> Self {
        let value = value.as_ref();
        if value.as_encoded_bytes().starts_with(b"-") && self.refused.is_none() {
            self.refused = Some(format!(
                "refusing to pass {:?} to a renderer: an argument may not start with '-'",
                value.to_string_lossy()
            ));
        }
        self.positionals.push(value.to_os_string());
        self
    }

    pub fn stdin(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = Some(bytes);
        self
    }

    /// Set a variable for the process (on top of the allow-listed environment).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// `HOME` for the process (a private directory the caller owns).
    pub fn home(mut self, home: &'a Path) -> Self {
        self.home = Some(home);
        self
    }

    /// The full argv after the program name, as it will be passed.
    pub fn argv(&self) -> Vec<OsString> {
        let mut argv = self.args.clone();
        if !self.positionals.is_empty() {
            argv.push(OsString::from("--"));
            argv.extend(self.positionals.iter().cloned());
        }
        argv
    }

    /// A raw argument, for the unit tests' `/bin/sh -c` only.
    #[cfg(test)]
    fn raw(mut self, arg: &str) -> Self {
        self.args.push(OsString::from(arg));
        self
    }
}

/// What a finished process left behind.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error(
        "{program} did not finish within {timeout:?} and was killed (raise `limits.timeoutSeconds` in ferry.yaml or pass --render-timeout if it is legitimately slow)"
    )]
    Timeout {
        program: String,
        timeout: Duration,
        stderr: Vec<u8>,
    },
    #[error(
        "{program} produced more than {limit} bytes of output and was killed (raise `limits.maxTotalBytes` in ferry.yaml)"
    )]
    OutputTooLarge { program: String, limit: u64 },
    /// An argument that could have been read as a flag; nothing was started.
    #[error("{program}: {message}")]
    Refused { program: String, message: String },
    #[error("{program}: {source}")]
    Io {
        program: String,
        source: std::io::Error,
    },
}

/// Linux's default pipe buffer.
const PIPE_CAPACITY: usize = 64 * 1024;

/// Cap on captured stderr: enough for any error message, bounded against a chatty renderer.
const MAX_STDERR: usize = 1024 * 1024;

/// Run to completion, or kill the process group at the deadline.
///
/// The I/O loop ([`supervise`]) has two implementations: on Linux a single thread with
/// poll(2) and a pidfd; elsewhere (or on Linux with the `portable-process` feature, which is
/// how the portable one is tested) reader and writer threads and `try_wait`.
pub fn run(mut spec: Run<'_>) -> Result<Output, RunError> {
    use std::os::unix::process::CommandExt;

    let program = spec.program.display().to_string();
    let io_error = |source: std::io::Error| RunError::Io {
        program: program.clone(),
        source,
    };
    if let Some(message) = spec.refused.take() {
        return Err(RunError::Refused {
            program: program.clone(),
            message,
        });
    }
    // A throw-away HOME when the caller gave none, removed when the run is over.
    let own_home;
    let home = match spec.home {
        Some(home) => home,
        None => {
            own_home = tempfile::Builder::new()
                .prefix("ferry-render-home-")
                .tempdir()
                .map_err(io_error)?;
            own_home.path()
        }
    };
    let mut command = Command::new(spec.program);
    // An empty environment plus an allow-list: renderers run code from the repository
    // (templates, plugins, kustomize's git), so they see no credentials of ferry's.
    command.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command.env("HOME", home);
    for key in PASSED_ENV {
        if let Some(value) = std::env::var_os(key) {
            command.env(key, value);
        }
    }
    // The operator may pass more of ferry's own environment by name (their decision; a
    // repository or a tenant cannot set ferry's environment).
    for key in extra_passed_env() {
        if let Some(value) = std::env::var_os(&key) {
            command.env(key, value);
        }
    }
    command
        .args(spec.argv())
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Own process group, so a timeout kills whatever the renderer spawned too.
        .process_group(0);
    if let Some(cwd) = spec.cwd {
        command.current_dir(cwd);
    } else {
        // Relative paths in a renderer never resolve against ferry's own working directory.
        command.current_dir(home);
    }
    for (key, value) in &spec.env {
        command.env(key, value);
    }
    let deadline = Instant::now() + spec.timeout;
    let child = command.spawn().map_err(|source| RunError::Spawn {
        program: program.clone(),
        source,
    })?;
    supervise(child, &program, &mut spec, deadline)
}

/// The I/O loop on Linux: one thread does everything with poll(2), feeding stdin, reading
/// stdout and stderr, and noticing the exit through a pidfd. Reader and waiter threads each
/// added a wake-up between the renderer finishing and ferry going on, which showed next to a
/// 40 ms `helm template`.
#[cfg(all(target_os = "linux", not(feature = "portable-process")))]
fn supervise(
    mut child: Child,
    program: &str,
    spec: &mut Run<'_>,
    deadline: Instant,
) -> Result<Output, RunError> {
    let program = program.to_string();
    let io_error = |source: std::io::Error| RunError::Io {
        program: program.clone(),
        source,
    };
    let pid = child.id();
    let exit_fd = pidfd_open(pid);
    if let Some(watcher) = spec.watcher.as_mut() {
        watcher(RunEvent::Started);
    }

    let mut stdin = child
        .stdin
        .take()
        .zip(spec.stdin.take())
        .map(|(pipe, bytes)| (pipe, bytes, 0));
    let mut stdout_pipe = child.stdout.take();
    let mut stderr_pipe = child.stderr.take();
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    // Set once the child has exited. With a pidfd it stays unreaped (a zombie) until the end,
    // so its pid, and the process group id, cannot be reused before the group is killed.
    let mut exited = false;
    let mut status: Option<ExitStatus> = None;
    // Every failure from here on goes through the kill-and-reap path below.
    let mut failure = [
        stdin.as_ref().map(|(pipe, ..)| pipe.as_raw_fd()),
        stdout_pipe.as_ref().map(AsRawFd::as_raw_fd),
        stderr_pipe.as_ref().map(AsRawFd::as_raw_fd),
    ]
    .into_iter()
    .flatten()
    .try_for_each(set_nonblocking)
    .err()
    .map(io_error);
    while failure.is_none() {
        if stdout_pipe.is_none() && stderr_pipe.is_none() && stdin.is_none() {
            if !exited && exit_fd.is_none() {
                match child.try_wait() {
                    Ok(reaped) => {
                        exited = reaped.is_some();
                        status = reaped;
                    }
                    Err(err) => {
                        failure = Some(io_error(err));
                        break;
                    }
                }
            }
            if exited {
                break;
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            failure = Some(RunError::Timeout {
                program: program.clone(),
                timeout: spec.timeout,
                stderr: Vec::new(),
            });
            break;
        }
        let mut fds = Vec::with_capacity(4);
        let mut watch = |fd: Option<RawFd>, events: libc::c_short| {
            fds.push(libc::pollfd {
                fd: fd.unwrap_or(-1),
                events,
                revents: 0,
            })
        };
        watch(
            stdin.as_ref().map(|(pipe, ..)| pipe.as_raw_fd()),
            libc::POLLOUT,
        );
        watch(stdout_pipe.as_ref().map(AsRawFd::as_raw_fd), libc::POLLIN);
        watch(stderr_pipe.as_ref().map(AsRawFd::as_raw_fd), libc::POLLIN);
        let exit_watch = exit_fd.as_ref().filter(|_| !exited);
        watch(exit_watch.map(AsRawFd::as_raw_fd), libc::POLLIN);
        // Without a pidfd (kernels before 5.3) the exit is polled every millisecond once the
        // pipes are closed.
        let no_exit_signal = exit_fd.is_none() && fds[..3].iter().all(|fd| fd.fd < 0);
        let wait_ms = if no_exit_signal {
            1
        } else {
            remaining.as_millis().clamp(1, i32::MAX as u128) as i32
        };
        // SAFETY: `fds` is a valid, initialised array of pollfd for the duration of the call;
        // negative fds are ignored by poll(2).
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
        if ready < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            failure = Some(io_error(err));
            break;
        }
        if fds[0].revents != 0
            && let Some((pipe, bytes, written)) = stdin.as_mut()
        {
            match pipe.write(&bytes[*written..]) {
                Ok(n) => *written += n,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                // The renderer exited or closed stdin early; its status tells the story.
                Err(_) => *written = bytes.len(),
            }
            if *written >= bytes.len() {
                stdin = None;
            }
        }
        if fds[1].revents != 0
            && let Some(pipe) = stdout_pipe.as_mut()
        {
            let cap = usize::try_from(spec.max_stdout.saturating_add(1)).unwrap_or(usize::MAX);
            let read_before = stdout.len();
            match drain(pipe, &mut stdout, cap, OverCap::Stop) {
                Ok(open) if !open => stdout_pipe = None,
                Ok(_) => {}
                Err(err) => {
                    failure = Some(io_error(err));
                    break;
                }
            }
            if stdout.len() as u64 > spec.max_stdout {
                failure = Some(RunError::OutputTooLarge {
                    program: program.clone(),
                    limit: spec.max_stdout,
                });
                break;
            }
            // A full pipe's worth in one go means the writer was blocked mid-write: more
            // follows at once, and working on it now would only hold the renderer up. (Also
            // watching output that pauses after such rounds was tried: no gain measured.)
            if stdout_pipe.is_some()
                && fds[3].revents == 0
                && stdout.len() - read_before < PIPE_CAPACITY
                && let Some(watcher) = spec.watcher.as_mut()
            {
                watcher(RunEvent::Output(&stdout));
            }
        }
        if fds[2].revents != 0
            && let Some(pipe) = stderr_pipe.as_mut()
            && !drain(pipe, &mut stderr, MAX_STDERR, OverCap::Discard).unwrap_or(false)
        {
            stderr_pipe = None;
        }
        if fds[3].revents != 0 {
            exited = true;
        }
    }
    if let Some(mut failure) = failure {
        // The group outlives its leader while descendants hold our pipes: kill it either way,
        // unless the leader was already reaped (the no-pidfd fallback), when its id may be
        // someone else's by now.
        if status.is_none() {
            kill_group(pid);
        }
        if !exited {
            kill_pid(pid);
        }
        let _ = child.wait();
        // Whatever stderr the killed processes left, for the timeout message.
        if let (RunError::Timeout { stderr: shown, .. }, Some(pipe)) =
            (&mut failure, stderr_pipe.as_mut())
        {
            let _ = drain(pipe, &mut stderr, MAX_STDERR, OverCap::Discard);
            *shown = stderr;
        } else if let RunError::Timeout { stderr: shown, .. } = &mut failure {
            *shown = stderr;
        }
        return Err(failure);
    }
    let status = match status {
        Some(status) => status,
        None => child.wait().map_err(io_error)?,
    };
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// The portable I/O loop, for Unix systems without poll(2)-able pidfds (and on Linux with the
/// `portable-process` feature, which is how it is tested: `cargo test -p ferry-engine
/// --features portable-process`). Plain blocking I/O on threads: one writes stdin, one reads
/// stdout, one reads stderr, each reporting to this thread over a channel, which waits with
/// the deadline as its timeout. The exit is noticed with `try_wait` once all pipes are closed.
/// It costs the wake-ups the Linux loop avoids, which matters only next to very fast renders.
#[cfg(any(not(target_os = "linux"), feature = "portable-process"))]
fn supervise(
    mut child: Child,
    program: &str,
    spec: &mut Run<'_>,
    deadline: Instant,
) -> Result<Output, RunError> {
    use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
    use std::sync::{Arc, Mutex, PoisonError};

    /// What the pipe threads tell the supervising thread.
    enum Event {
        /// Bytes read from stdout (never empty).
        Stdout(Vec<u8>),
        /// Reading stdout failed.
        StdoutError(std::io::Error),
        /// A pipe is done: end of file, or stdin fully written (or refused by the renderer).
        Closed,
    }

    let program = program.to_string();
    let io_error = |source: std::io::Error| RunError::Io {
        program: program.clone(),
        source,
    };
    let pid = child.id();
    if let Some(watcher) = spec.watcher.as_mut() {
        watcher(RunEvent::Started);
    }
    let (events, inbox) = mpsc::channel::<Event>();
    // Captured stderr, shared so a timeout can show what is there without joining a reader
    // that a surviving grandchild could keep blocked.
    let stderr_buf = Arc::new(Mutex::new(Vec::new()));
    let mut open_pipes = 0usize;
    let mut failure: Option<RunError> = None;

    // A pipe thread, named for debuggers; failing to start one fails the run.
    fn spawn(name: &str, work: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(work)
            .map(drop)
    }
    let stdin = child.stdin.take().zip(spec.stdin.take());
    if let Some((mut pipe, bytes)) = stdin {
        let events = events.clone();
        open_pipes += 1;
        let started = spawn(
            "ferry-render-stdin",
            Box::new(move || {
                // An error means the renderer exited or closed stdin early; its exit status
                // tells the story.
                let _ = pipe.write_all(&bytes);
                drop(pipe);
                let _ = events.send(Event::Closed);
            }),
        );
        if let Err(err) = started {
            failure = Some(io_error(err));
        }
    }
    if let Some(mut pipe) = child.stdout.take() {
        let events = events.clone();
        // One byte over the cap is enough to know the renderer said too much; reading stops
        // there so a runaway renderer cannot grow ferry's memory.
        let cap = spec.max_stdout.saturating_add(1);
        open_pipes += 1;
        let started = spawn(
            "ferry-render-stdout",
            Box::new(move || {
                let mut chunk = vec![0u8; PIPE_CAPACITY];
                let mut total = 0u64;
                loop {
                    match pipe.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => {
                            total += n as u64;
                            if events.send(Event::Stdout(chunk[..n].to_vec())).is_err()
                                || total >= cap
                            {
                                return;
                            }
                        }
                        Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(err) => {
                            let _ = events.send(Event::StdoutError(err));
                            return;
                        }
                    }
                }
                let _ = events.send(Event::Closed);
            }),
        );
        if let Err(err) = started {
            failure.get_or_insert(io_error(err));
        }
    }
    if let Some(mut pipe) = child.stderr.take() {
        let events = events.clone();
        let shared = Arc::clone(&stderr_buf);
        open_pipes += 1;
        let started = spawn(
            "ferry-render-stderr",
            Box::new(move || {
                let mut chunk = vec![0u8; PIPE_CAPACITY];
                loop {
                    match pipe.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => {
                            // Keep up to the cap, read and drop the rest so the writer never
                            // blocks on a full pipe.
                            let mut buf = shared.lock().unwrap_or_else(PoisonError::into_inner);
                            let keep = n.min(MAX_STDERR.saturating_sub(buf.len()));
                            buf.extend_from_slice(&chunk[..keep]);
                        }
                        Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                let _ = events.send(Event::Closed);
            }),
        );
        if let Err(err) = started {
            failure.get_or_insert(io_error(err));
        }
    }
    drop(events);

    let mut stdout = Vec::new();
    let mut status: Option<ExitStatus> = None;
    let limit = spec.timeout;
    let timeout = || RunError::Timeout {
        program: program.clone(),
        timeout: limit,
        stderr: Vec::new(),
    };
    // Pipes first: every thread reports its end (or the deadline passes).
    while failure.is_none() && open_pipes > 0 {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut event = match inbox.recv_timeout(remaining) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => {
                failure = Some(timeout());
                break;
            }
            // Every sender is gone although a pipe was not reported closed: a thread
            // panicked. Treat the pipe as closed; the exit status decides.
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // Handle everything that is already queued before telling the watcher: it hears
        // only of output after which the pipe has run dry, as on Linux.
        let mut dry_after_partial_read = false;
        loop {
            match event {
                Event::Stdout(bytes) => {
                    dry_after_partial_read = bytes.len() < PIPE_CAPACITY;
                    stdout.extend_from_slice(&bytes);
                }
                Event::StdoutError(err) => {
                    failure = Some(io_error(err));
                    break;
                }
                Event::Closed => {
                    open_pipes -= 1;
                    dry_after_partial_read = false;
                }
            }
            match inbox.try_recv() {
                Ok(next) => event = next,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        if stdout.len() as u64 > spec.max_stdout {
            failure = Some(RunError::OutputTooLarge {
                program: program.clone(),
                limit: spec.max_stdout,
            });
            break;
        }
        if failure.is_none()
            && dry_after_partial_read
            && let Some(watcher) = spec.watcher.as_mut()
        {
            watcher(RunEvent::Output(&stdout));
        }
    }
    // Then the exit. A renderer has usually exited by the time its pipes close; the wait is
    // for the rare one that closes them early. The group is killed before the leader is
    // reaped (below), so the pid cannot have been reused when it is signalled.
    let mut pause = Duration::from_micros(100);
    while failure.is_none() {
        match child.try_wait() {
            Ok(Some(reaped)) => {
                status = Some(reaped);
                break;
            }
            Ok(None) => {}
            Err(err) => {
                failure = Some(io_error(err));
                break;
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            failure = Some(timeout());
            break;
        }
        std::thread::sleep(pause.min(remaining));
        pause = (pause * 2).min(Duration::from_millis(5));
    }
    let take_stderr =
        || std::mem::take(&mut *stderr_buf.lock().unwrap_or_else(PoisonError::into_inner));
    if let Some(mut failure) = failure {
        // Not reaped yet (a reaped leader ends the loop above without a failure): the pid
        // and the group id are still ours.
        kill_group(pid);
        kill_pid(pid);
        let _ = child.wait();
        if let RunError::Timeout { stderr: shown, .. } = &mut failure {
            *shown = take_stderr();
        }
        return Err(failure);
    }
    let status = match status {
        Some(status) => status,
        None => child.wait().map_err(io_error)?,
    };
    Ok(Output {
        status,
        stdout,
        stderr: take_stderr(),
    })
}

/// What [`drain`] does with bytes beyond its cap.
#[cfg(all(target_os = "linux", not(feature = "portable-process")))]
#[derive(Clone, Copy, PartialEq, Eq)]
enum OverCap {
    /// Stop reading (the caller fails the run).
    Stop,
    /// Read and drop them, so the writer never blocks on a full pipe.
    Discard,
}

/// Read what `pipe` has now into `buf`, keeping at most `cap` bytes. `Ok(false)` at end of
/// file.
#[cfg(all(target_os = "linux", not(feature = "portable-process")))]
fn drain(
    pipe: &mut impl Read,
    buf: &mut Vec<u8>,
    cap: usize,
    over_cap: OverCap,
) -> std::io::Result<bool> {
    let mut chunk = [0u8; PIPE_CAPACITY];
    loop {
        if over_cap == OverCap::Stop && buf.len() >= cap {
            return Ok(true);
        }
        match pipe.read(&mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                let keep = n.min(cap.saturating_sub(buf.len()));
                buf.extend_from_slice(&chunk[..keep]);
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

#[cfg(all(target_os = "linux", not(feature = "portable-process")))]
fn set_nonblocking(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl(2) on a pipe fd we own; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A pidfd for the child (readable once it exits), or `None` where the kernel has none.
#[cfg(all(target_os = "linux", not(feature = "portable-process")))]
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = RawFd::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn kill_pid(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) has no memory-safety preconditions; the child is not reaped yet
        // (checked by the caller), so the pid is still ours.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

fn kill_group(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) with a negative pid signals the process group we created with
        // process_group(0); it has no memory-safety preconditions.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh() -> PathBuf {
        PathBuf::from("/bin/sh")
    }

    #[test]
    fn captures_output_and_stdin() {
        let sh = sh();
        let out = run(Run::new(&sh, Duration::from_secs(10), 1024)
            .raw("-c")
            .raw("cat; echo err >&2")
            .stdin(b"hello".to_vec()))
        .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"hello");
        assert_eq!(out.stderr, b"err\n");
    }

    /// Both pipes beyond their buffer size at once: stdin is fed while stdout is read.
    /// The watcher hears of the start first, then of output that has paused while the process
    /// still runs (here: before a sleep), always as a prefix of the final stdout.
    #[test]
    fn watcher_sees_the_start_and_paused_output() {
        let sh = sh();
        let mut events = Vec::new();
        let mut watch = |event: RunEvent<'_>| {
            events.push(match event {
                RunEvent::Started => None,
                RunEvent::Output(so_far) => Some(so_far.to_vec()),
            })
        };
        let out = run(Run::new(&sh, Duration::from_secs(10), 1024)
            .raw("-c")
            .raw("printf 'a: 1\\n'; sleep 0.3; printf 'b: 2\\n'")
            .watch(&mut watch))
        .unwrap();
        assert_eq!(out.stdout, b"a: 1\nb: 2\n");
        assert_eq!(events.first(), Some(&None), "Started comes first");
        let outputs: Vec<&Vec<u8>> = events.iter().flatten().collect();
        assert!(outputs.contains(&&b"a: 1\n".to_vec()), "{events:?}");
        assert!(outputs.iter().all(|seen| out.stdout.starts_with(seen)));
    }

    #[test]
    fn large_stdin_and_stdout_do_not_deadlock() {
        let sh = sh();
        let input = vec![b'x'; 3 * 1024 * 1024];
        let out = run(Run::new(&sh, Duration::from_secs(30), 8 * 1024 * 1024)
            .raw("-c")
            .raw("cat; head -c 2000000 /dev/zero >&2")
            .stdin(input.clone()))
        .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, input);
        assert_eq!(
            out.stderr.len(),
            MAX_STDERR,
            "stderr is capped, the rest drained"
        );
    }

    #[test]
    fn hanging_process_group_is_killed_at_deadline() {
        let sh = sh();
        let started = Instant::now();
        // The child shell spawns a grandchild sleeper holding stdout: both must die.
        let err = run(Run::new(&sh, Duration::from_millis(300), 1024)
            .raw("-c")
            .raw("echo partial >&2; sleep 30 & sleep 30"))
        .unwrap_err();
        assert!(matches!(err, RunError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        if let RunError::Timeout { stderr, .. } = err {
            assert_eq!(stderr, b"partial\n");
        }
    }

    #[test]
    fn oversized_output_is_refused() {
        let sh = sh();
        let err = run(Run::new(&sh, Duration::from_secs(10), 100)
            .raw("-c")
            // Far beyond the pipe buffer: reading stops at the limit instead of draining it.
            .raw("head -c 5000000 /dev/zero"))
        .unwrap_err();
        assert!(
            matches!(err, RunError::OutputTooLarge { limit: 100, .. }),
            "{err}"
        );
    }

    #[test]
    fn argv_joins_values_and_puts_positionals_after_dashes() {
        let sh = sh();
        let run = Run::new(&sh, Duration::from_secs(1), 1)
            .command(&["template"])
            .option(Flag::Set, "--post-renderer=x")
            .flag(Flag::SkipTests)
            .positional("release")
            .positional("/chart");
        let argv: Vec<String> = run
            .argv()
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            argv,
            [
                "template",
                "--set=--post-renderer=x",
                "--skip-tests",
                "--",
                "release",
                "/chart"
            ]
        );
    }

    #[test]
    fn a_positional_starting_with_a_dash_starts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let sh = sh();
        let err = run(Run::new(&sh, Duration::from_secs(10), 1024)
            .raw("-c")
            .raw(&format!("touch {}", marker.display()))
            .positional("--post-renderer=/bin/sh"))
        .unwrap_err();
        assert!(matches!(err, RunError::Refused { .. }), "{err}");
        assert!(!marker.exists(), "nothing may run");
    }

    #[test]
    fn the_environment_is_an_allow_list_with_a_private_home() {
        let sh = sh();
        let out = run(Run::new(&sh, Duration::from_secs(10), 1 << 20)
            .raw("-c")
            .raw("env; pwd")
            .env("HELM_CACHE_HOME", "/x"))
        .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let keys: Vec<&str> = text
            .lines()
            .filter_map(|line| line.split_once('=').map(|(k, _)| k))
            .collect();
        for key in &keys {
            assert!(
                [
                    "PATH",
                    "HOME",
                    "HELM_CACHE_HOME",
                    "PWD",
                    "SHLVL",
                    "_",
                    "OLDPWD"
                ]
                .contains(key)
                    || PASSED_ENV.contains(key),
                "{key} leaked into the renderer's environment:\n{text}"
            );
        }
        let home = text.lines().find_map(|l| l.strip_prefix("HOME=")).unwrap();
        assert!(home.contains("ferry-render-home-"), "{home}");
        assert_eq!(text.lines().last(), Some(home), "cwd is the private home");
    }
}
