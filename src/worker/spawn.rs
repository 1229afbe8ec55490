//! Starting a worker process: options, the inherited descriptors, and the spawner thread.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

use super::limit::Limit;
use super::protocol::{FDS_ENV, INIT_ENV, PARENT_ENV, WORKER_ENV};
use crate::{Error, Reader, Region, Result};

/// Settings for [`iterate_in_subprocess`](super::iterate_in_subprocess): private fields set
/// with builder methods.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shm_arena::worker::Options;
///
/// let options = Options::new()
///     .capacity(64 << 20) // items of up to 32 MiB
///     .max_in_flight(8)
///     .inactivity_timeout(Duration::from_secs(5));
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) capacity: u64,
    pub(crate) prefault: bool,
    pub(crate) initializer: Option<String>,
    pub(crate) inactivity_timeout: Duration,
    pub(crate) max_in_flight: Option<u32>,
    pub(crate) stop_timeout: Duration,
    pub(crate) program: Option<(PathBuf, Vec<OsString>)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            capacity: Options::DEFAULT_CAPACITY,
            prefault: true,
            initializer: None,
            inactivity_timeout: Duration::from_secs(60),
            max_in_flight: None,
            stop_timeout: Duration::from_secs(2),
            program: None,
        }
    }
}

impl Options {
    /// Default ring size: 16 MiB. Large enough for items of up to 8 MiB (a unit may use half
    /// the ring) with room to overlap producing and consuming; the benchmarks show that rings
    /// much larger than the last-level cache are slower (every byte goes to DRAM and back),
    /// so raise it for larger items rather than by default.
    pub const DEFAULT_CAPACITY: u64 = 16 << 20;

    /// Options with the defaults: 16 MiB ring, no initializer, 60 s inactivity timeout, no
    /// count limit, 2 s for a cooperative stop, the current executable as the worker program.
    pub fn new() -> Self {
        Options::default()
    }

    /// The ring's size in bytes: a power of two, at least 4096. One item may use at most half
    /// of it. See [`DEFAULT_CAPACITY`](Self::DEFAULT_CAPACITY).
    pub fn capacity(mut self, bytes: u64) -> Self {
        self.capacity = bytes;
        self
    }

    /// Whether the ring's pages are populated when the parent creates it and when the worker
    /// maps it ([`RegionOptions::prefault`](crate::RegionOptions::prefault)), so the first lap
    /// of items pays no page faults. Default: on (the ring is written in full within a few
    /// items anyway).
    pub fn prefault(mut self, prefault: bool) -> Self {
        self.prefault = prefault;
        self
    }

    /// Runs the initializer registered under `name` (see
    /// [`Registry::register_initializer`](super::Registry::register_initializer)) once in the
    /// worker, before its function.
    pub fn initializer(mut self, name: &str) -> Self {
        self.initializer = Some(name.to_owned());
        self
    }

    /// How long one call to `next` waits for the worker's next item (the first one included,
    /// so leave room for the worker to start) before it gives up with
    /// [`WorkerError::Inactive`](super::WorkerError::Inactive) and stops the worker. Default
    /// 60 s. Set once, like the writer's timeout: the iterator has no per-call timeout.
    pub fn inactivity_timeout(mut self, timeout: Duration) -> Self {
        self.inactivity_timeout = timeout;
        self
    }

    /// At most `items` items sent and not yet ended by the parent (held items count). Without
    /// it, only the ring's capacity bounds the items in flight. Zero is treated as one.
    pub fn max_in_flight(mut self, items: u32) -> Self {
        self.max_in_flight = Some(items.max(1));
        self
    }

    /// When the iterator is dropped before the worker finished: how long the worker gets to
    /// notice that the ring was closed and exit, before SIGTERM (and one second later
    /// SIGKILL). Dropping blocks at most this long plus one second. Default 2 s.
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Runs `program` with `args` as the worker instead of re-executing the current executable.
    /// The program must call [`Registry::run_if_worker`](super::Registry::run_if_worker) with
    /// the worker registered (for a test binary: the args select the one test that does, see
    /// `tests/worker.rs`).
    pub fn program<I, S>(mut self, program: impl Into<PathBuf>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.program = Some((program.into(), args.into_iter().map(Into::into).collect()));
        self
    }
}

/// A started worker process with the parent's ends of what it shares with it.
pub(crate) struct Spawned {
    pub child: Child,
    pub reader: Reader,
    /// Read end of the status pipe (non-blocking).
    pub status: OwnedFd,
    pub limit: Option<Limit>,
}

/// A spawn request for the spawner thread.
type Job = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `command` from a thread that lives as long as the process.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process:
/// a worker started from a short-lived thread (a test, a thread pool task) would be killed when
/// that thread ends. Forking from one long-lived thread ties the signal to the process's death.
fn spawn_from_spawner(command: Command) -> Result<Child> {
    static SPAWNER: OnceLock<std::io::Result<mpsc::Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("shm-arena-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .map(|_| tx)
    });
    let spawner = spawner.as_ref().map_err(|e| {
        Error::io(
            "starting the spawner thread",
            std::io::Error::new(e.kind(), e.to_string()),
        )
    })?;
    let (reply, answer) = mpsc::channel();
    spawner.send((command, reply)).map_err(|_| {
        Error::io(
            "spawning a worker",
            std::io::Error::other("spawner is gone"),
        )
    })?;
    answer
        .recv()
        .map_err(|_| {
            Error::io(
                "spawning a worker",
                std::io::Error::other("spawner is gone"),
            )
        })?
        .map_err(|e| Error::io("spawning the worker process", e))
}

/// Creates the arena and the other shared objects, and starts the worker.
pub(crate) fn spawn(name: &str, args: &[u8], options: &Options) -> Result<Spawned> {
    let region = Region::create_with(
        crate::RegionOptions::new(options.capacity).prefault(options.prefault),
    )?;
    let reader = region.reader()?;

    let (status_read, status_write) = rustix::pipe::pipe_with(
        rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
    )
    .map_err(|e| Error::io("creating the status pipe", e))?;
    let args_fd = args_memfd(args)?;
    let limit = match options.max_in_flight {
        Some(max) => Some((Limit::create()?, max)),
        None => None,
    };

    let (program, extra) = match &options.program {
        Some((program, extra)) => (program.clone(), extra.clone()),
        None => (
            std::env::current_exe().map_err(|e| Error::io("finding the current executable", e))?,
            Vec::new(),
        ),
    };
    let mut command = Command::new(&program);
    command.args(&extra).stdin(Stdio::null());
    command.env(WORKER_ENV, name);
    match &options.initializer {
        Some(init) => command.env(INIT_ENV, init),
        None => command.env_remove(INIT_ENV),
    };
    let mut inherit: Vec<RawFd> = vec![args_fd.as_raw_fd(), status_write.as_raw_fd()];
    let mut fds = format!(
        "args={} status={}",
        args_fd.as_raw_fd(),
        status_write.as_raw_fd()
    );
    if let Some(((_, fd), max)) = &limit {
        fds.push_str(&format!(" limit={} max={max}", fd.as_raw_fd()));
        inherit.push(fd.as_raw_fd());
    }
    command.env(FDS_ENV, fds);
    let parent = rustix::process::getpid();
    command.env(PARENT_ENV, parent.as_raw_nonzero().get().to_string());
    region.share_with_child(&mut command)?;
    // SAFETY: the closure runs in the forked child before exec. It only makes system calls
    // that are async-signal-safe (fcntl, prctl, getppid) on descriptor numbers inherited from
    // fork, and allocates nothing (`inherit` was built before the fork and is only read).
    unsafe {
        command.pre_exec(move || {
            for &fd in &inherit {
                rustix::io::fcntl_setfd(BorrowedFd::borrow_raw(fd), rustix::io::FdFlags::empty())?;
            }
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            // The parent may have died between fork and prctl, in which case no signal will
            // ever come: we were re-parented already.
            if rustix::process::getppid() != Some(parent) {
                return Err(std::io::Error::other("the parent exited during spawn"));
            }
            Ok(())
        });
    }
    let child = spawn_from_spawner(command)?;
    // Our copies of the child's ends go now (the memfd region stays mapped by the reader):
    // the child holds the only write end of the status pipe.
    drop((status_write, args_fd, region));
    Ok(Spawned {
        child,
        reader,
        status: status_read,
        limit: limit.map(|((limit, _), _)| limit),
    })
}

/// The encoded arguments in a sealed memfd.
fn args_memfd(args: &[u8]) -> Result<OwnedFd> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd = rustix::fs::memfd_create(
        "shm-arena-args",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .map_err(|e| Error::io("memfd_create for the worker's arguments", e))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(args)
        .map_err(|e| Error::io("writing the worker's arguments", e))?;
    let fd = OwnedFd::from(file);
    rustix::fs::fcntl_add_seals(
        &fd,
        SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
    )
    .map_err(|e| Error::io("sealing the worker's arguments", e))?;
    Ok(fd)
}
