//! Child processes for the process tests: this test binary started again, running only its
//! ignored `child_main` test with a role in an environment variable, sharing a region.
//!
//! The parent holds each child in a [`ChildGuard`], which reads the child's stdout lines on a
//! thread (parsed by the test file's own report format), can release it with a byte on stdin
//! ([`ChildGuard::go`]), and kills and reaps it whatever happens to the test. A child that
//! waits for the parent ([`wait_for_go`], [`park_until_killed`]) reads its stdin, so it exits
//! on its own once the parent is gone (the pipe closes).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shm_arena::Region;

/// The command that runs only the ignored `child_main` test of this binary with `role` in
/// `role_env` (plus `env`), sharing `region`; stdin and stdout piped, stderr inherited.
pub fn command(role_env: &str, role: &str, region: &Region, env: &[(&str, String)]) -> Command {
    let exe = std::env::current_exe().expect("path of the test binary");
    let mut command = Command::new(exe);
    command
        .args([
            "--ignored",
            "--exact",
            "child_main",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(role_env, role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (key, value) in env {
        command.env(key, value);
    }
    region.share_with_child(&mut command).unwrap();
    command
}

/// A numeric environment variable a child was started with.
pub fn env_u64(name: &str) -> u64 {
    let value = std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    value
        .parse()
        .unwrap_or_else(|_| panic!("{name}={value:?} is not a number"))
}

/// In a child: waits for the parent's "go" byte; exits if the parent is gone (stdin closed).
pub fn wait_for_go() {
    let mut byte = [0u8; 1];
    if !matches!(std::io::stdin().read(&mut byte), Ok(1)) {
        std::process::exit(3);
    }
}

/// In a child: waits to be killed by the parent; exits once the parent is gone.
pub fn park_until_killed() -> ! {
    let mut buf = [0u8; 64];
    while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
    std::process::exit(3);
}

/// In a child: prints one line on stdout at once (the parent may kill us right after).
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// A child process that is killed and reaped whatever happens to the test. `R` is what one
/// line of its stdout means to the test file (a plain `String` by default).
pub struct ChildGuard<R: Send + 'static = String> {
    /// "writer 2", "reader", ...: for messages.
    pub name: String,
    child: Child,
    /// The child waits for bytes here; closing it tells the child we are gone.
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<R>,
    /// Lines taken from `lines` so far.
    seen: Vec<R>,
}

impl ChildGuard<String> {
    /// Starts this test binary as a child playing `role`, sharing `region`; every stdout line
    /// is kept.
    pub fn spawn(role_env: &str, role: &str, region: &Region, env: &[(&str, String)]) -> Self {
        ChildGuard::spawn_parsed(role.to_owned(), role_env, role, region, env, |line| {
            Some(line.to_owned())
        })
    }
}

impl<R: Send + 'static> ChildGuard<R> {
    /// Starts a child as [`ChildGuard::spawn`] does, keeping the stdout lines `parse` turns
    /// into reports (the others are skipped).
    pub fn spawn_parsed(
        name: String,
        role_env: &str,
        role: &str,
        region: &Region,
        env: &[(&str, String)],
        parse: fn(&str) -> Option<R>,
    ) -> Self {
        let mut command = command(role_env, role, region, env);
        let mut child = command.spawn().expect("spawning a child process");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(report) = parse(&line) {
                    if tx.send(report).is_err() {
                        break;
                    }
                }
            }
        });
        ChildGuard {
            name,
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the child reported so far that a wait took.
    pub fn seen(&self) -> &[R] {
        &self.seen
    }

    /// Waits until the child reports a line `wanted` accepts; returns everything it reported
    /// so far. Fails the test after `timeout`.
    pub fn wait_for(&mut self, wanted: impl Fn(&R) -> bool, timeout: Duration) -> &[R]
    where
        R: std::fmt::Debug,
    {
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(report) => {
                    let found = wanted(&report);
                    self.seen.push(report);
                    if found {
                        return &self.seen;
                    }
                }
                Err(e) => panic!(
                    "{} (pid {}) never reported what the test waits for ({e}); it reported {:?}",
                    self.name,
                    self.pid(),
                    self.seen
                ),
            }
        }
    }

    /// The next report, if one comes within `timeout` (`None` also once the child's stdout
    /// closed).
    pub fn next_report(&mut self, timeout: Duration) -> Option<&R> {
        let report = self.lines.recv_timeout(timeout).ok()?;
        self.seen.push(report);
        self.seen.last()
    }

    /// Lets the child go on: one byte on its stdin (see [`wait_for_go`]).
    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin.write_all(b"g").unwrap();
        stdin.flush().unwrap();
    }

    /// Sends SIGKILL without reaping: the child stays a zombie until it is waited for.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
    }

    /// Reaps the child (after a kill, say).
    pub fn reap(&mut self) -> ExitStatus {
        self.child.wait().unwrap()
    }

    /// Waits for the child to exit, killing it and failing the test at `deadline`.
    pub fn wait_exit(&mut self, deadline: Instant) -> ExitStatus {
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} (pid {}) still ran at its deadline",
                    self.name,
                    self.pid()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits for the child to exit, then for the end of its reports; returns its status and
    /// every report it made.
    pub fn finish(&mut self, deadline: Instant) -> (ExitStatus, Vec<R>) {
        let status = self.wait_exit(deadline);
        // The pipe closes with the child: the reading thread ends and drops its sender.
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(report) => self.seen.push(report),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("{}: stdout still open after its exit", self.name)
                }
            }
        }
        (status, std::mem::take(&mut self.seen))
    }
}

impl<R: Send + 'static> Drop for ChildGuard<R> {
    fn drop(&mut self) {
        // Errors mean it exited (and maybe was reaped) already.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills `guard`'s child (without reaping it) from another thread after `delay`, so the
/// calling thread can be blocked in the ring when the peer dies. The guard comes back through
/// the handle with the moment of the kill (and is dropped, killing and reaping, if the test
/// panics first).
pub fn kill_later<R: Send + 'static>(
    mut guard: ChildGuard<R>,
    delay: Duration,
) -> std::thread::JoinHandle<(ChildGuard<R>, Instant)> {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        guard.kill();
        (guard, Instant::now())
    })
}
