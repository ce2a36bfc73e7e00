//! Running renderer processes (`kustomize`, `helm`): finding the binary, bounded run time
//! (the whole process group is killed on timeout), bounded output, and feeding secrets through
//! stdin so they never appear in argv or on disk.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
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

/// Locate a renderer: an explicit path (flag or ferry.yaml) wins, then `$FERRY_<TOOL>`, then
/// `PATH`. The error says all three ways to fix it.
pub fn find_tool(tool: Tool, explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = explicit {
        return if is_executable(path) {
            Ok(path.to_path_buf())
        } else {
            Err(format!(
                "the configured {} binary {} does not exist or is not executable",
                tool.name(),
                path.display()
            ))
        };
    }
    if let Some(path) = std::env::var_os(tool.env_var()).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(format!(
                "${}={} does not exist or is not executable",
                tool.env_var(),
                path.display()
            ))
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
    Err(format!(
        "`{name}` was not found on PATH; install it, set ${env} to its path, or pass --{name} PATH",
        name = tool.name(),
        env = tool.env_var()
    ))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// One process invocation.
#[derive(Debug)]
pub struct Run<'a> {
    pub program: &'a Path,
    pub args: Vec<OsString>,
    pub cwd: Option<&'a Path>,
    pub env: Vec<(OsString, OsString)>,
    /// Bytes written to the process's stdin (e.g. decrypted values for `helm -f -`).
    pub stdin: Option<Vec<u8>>,
    pub timeout: Duration,
    /// Cap on stdout; a renderer producing more is killed.
    pub max_stdout: u64,
}

impl<'a> Run<'a> {
    pub fn new(program: &'a Path, timeout: Duration, max_stdout: u64) -> Self {
        Self {
            program,
            args: Vec::new(),
            cwd: None,
            env: Vec::new(),
            stdin: None,
            timeout,
            max_stdout,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn stdin(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = Some(bytes);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
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
    #[error("{program}: {source}")]
    Io {
        program: String,
        source: std::io::Error,
    },
}

enum Event {
    StdoutDone(std::io::Result<Vec<u8>>),
    StdoutTooLarge,
    StderrDone(Vec<u8>),
    Exited(std::io::Result<ExitStatus>),
}

/// Cap on captured stderr: enough for any error message, bounded against a chatty renderer.
const MAX_STDERR: u64 = 1024 * 1024;

/// Run to completion, or kill the process group at the deadline.
pub fn run(spec: Run<'_>) -> Result<Output, RunError> {
    use std::os::unix::process::CommandExt;

    let program = spec.program.display().to_string();
    let mut command = Command::new(spec.program);
    command
        .args(&spec.args)
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
    }
    for (key, value) in &spec.env {
        command.env(key, value);
    }
    let started = Instant::now();
    let deadline = started + spec.timeout;
    let mut child = command.spawn().map_err(|source| RunError::Spawn {
        program: program.clone(),
        source,
    })?;

    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    if let (Some(bytes), Some(mut stdin)) = (spec.stdin, child.stdin.take()) {
        // A writer thread, so a renderer that fills its stdout pipe before reading all of
        // stdin cannot deadlock us. A write error (renderer exited early) shows in its status.
        handles.push(thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        }));
    }
    if let Some(stdout) = child.stdout.take() {
        let tx = tx.clone();
        let limit = spec.max_stdout;
        handles.push(thread::spawn(move || {
            let mut buf = Vec::new();
            let result = stdout.take(limit.saturating_add(1)).read_to_end(&mut buf);
            let event = match result {
                Ok(_) if buf.len() as u64 > limit => Event::StdoutTooLarge,
                Ok(_) => Event::StdoutDone(Ok(buf)),
                Err(err) => Event::StdoutDone(Err(err)),
            };
            let _ = tx.send(event);
        }));
    }
    if let Some(stderr) = child.stderr.take() {
        let tx = tx.clone();
        handles.push(thread::spawn(move || {
            let mut buf = Vec::new();
            let mut reader = stderr.take(MAX_STDERR);
            let _ = reader.read_to_end(&mut buf);
            // Drain the rest so the renderer never blocks on a full stderr pipe.
            let _ = std::io::copy(&mut reader.into_inner(), &mut std::io::sink());
            let _ = tx.send(Event::StderrDone(buf));
        }));
    }
    // A waiter thread reaps the child, so nothing here polls; the deadline is a channel
    // timeout, and a timeout kills the process group by id.
    let pid = child.id();
    let exited = Arc::new(AtomicBool::new(false));
    {
        let tx = tx.clone();
        let exited = exited.clone();
        handles.push(thread::spawn(move || {
            let status = child.wait();
            exited.store(true, Ordering::SeqCst);
            let _ = tx.send(Event::Exited(status));
        }));
    }
    drop(tx);

    let mut stdout = None;
    let mut stderr = None;
    let mut status = None;
    let mut failure = None;
    while stdout.is_none() || stderr.is_none() || status.is_none() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(remaining) {
            Ok(Event::StdoutDone(Ok(buf))) => stdout = Some(buf),
            Ok(Event::StdoutDone(Err(source))) => {
                failure = Some(RunError::Io {
                    program: program.clone(),
                    source,
                });
                break;
            }
            Ok(Event::StdoutTooLarge) => {
                failure = Some(RunError::OutputTooLarge {
                    program: program.clone(),
                    limit: spec.max_stdout,
                });
                break;
            }
            Ok(Event::StderrDone(buf)) => stderr = Some(buf),
            Ok(Event::Exited(Ok(code))) => status = Some(code),
            Ok(Event::Exited(Err(source))) => {
                failure = Some(RunError::Io {
                    program: program.clone(),
                    source,
                });
                break;
            }
            Err(_) => {
                failure = Some(RunError::Timeout {
                    program: program.clone(),
                    timeout: spec.timeout,
                    stderr: stderr.take().unwrap_or_default(),
                });
                break;
            }
        }
    }
    if let Some(mut failure) = failure {
        // The group outlives its leader while descendants hold our pipes: kill it either way.
        kill_group(pid);
        if !exited.load(Ordering::SeqCst) {
            kill_pid(pid);
        }
        // Collect whatever stderr the killed process left (readers end once pipes close).
        for event in rx.iter() {
            if let (Event::StderrDone(buf), RunError::Timeout { stderr, .. }) =
                (event, &mut failure)
            {
                *stderr = buf;
            }
        }
        for handle in handles {
            let _ = handle.join();
        }
        return Err(failure);
    }
    for handle in handles {
        let _ = handle.join();
    }
    Ok(Output {
        status: status.ok_or_else(|| RunError::Io {
            program: program.clone(),
            source: std::io::Error::other("no exit status"),
        })?,
        stdout: stdout.unwrap_or_default(),
        stderr: stderr.unwrap_or_default(),
    })
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
            .arg("-c")
            .arg("cat; echo err >&2")
            .stdin(b"hello".to_vec()))
        .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"hello");
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    fn hanging_process_group_is_killed_at_deadline() {
        let sh = sh();
        let started = Instant::now();
        // The child shell spawns a grandchild sleeper holding stdout: both must die.
        let err = run(Run::new(&sh, Duration::from_millis(300), 1024)
            .arg("-c")
            .arg("echo partial >&2; sleep 30 & sleep 30"))
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
            .arg("-c")
            .arg("yes | head -c 1000"))
        .unwrap_err();
        assert!(
            matches!(err, RunError::OutputTooLarge { limit: 100, .. }),
            "{err}"
        );
    }
}
