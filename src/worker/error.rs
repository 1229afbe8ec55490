//! Why a worker's iteration ended badly.

use std::time::Duration;

/// An error of a worker process or of the machinery around it.
///
/// Kept apart from [`crate::Error`] because most variants describe the *worker process* (its
/// name, pid, exit status), not the ring; ring and OS errors are wrapped in
/// [`WorkerError::Arena`] (see the [module documentation](super#errors)).
///
/// # Examples
///
/// Telling a worker's failure from an arena error (`no_run`: the program must register the
/// worker in `main`, see [`Registry`](super::Registry)):
///
/// ```no_run
/// use shm_arena::worker::{iterate_in_subprocess, Options, WorkerError};
///
/// # fn main() -> Result<(), WorkerError> {
/// for item in iterate_in_subprocess("count", &10u32, Options::new())? {
///     match item {
///         Ok(item) => println!("{}", item.decode::<u32>()?),
///         Err(WorkerError::ExitedEarly { code, .. }) => {
///             eprintln!("the stream was cut short (exit status {code})")
///         }
///         Err(e) if e.pid().is_some() => eprintln!("the worker process failed: {e}"),
///         Err(e) => return Err(e), // an arena or OS error
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The worker's function returned an error.
    #[error("worker {worker:?} (pid {pid}) failed: {message}")]
    Failed {
        /// The registered name.
        worker: String,
        /// Its process id.
        pid: u32,
        /// The error's `Display` text.
        message: String,
    },
    /// The worker's function panicked.
    #[error("worker {worker:?} (pid {pid}) panicked: {message}")]
    Panicked {
        /// The registered name.
        worker: String,
        /// Its process id.
        pid: u32,
        /// The panic message and location.
        message: String,
    },
    /// The worker could not start: no function of that name, arguments that do not decode,
    /// no inherited region, an initializer that failed.
    #[error("worker {worker:?} (pid {pid}) could not start: {message}")]
    Setup {
        /// The registered name.
        worker: String,
        /// Its process id.
        pid: u32,
        /// What went wrong.
        message: String,
    },
    /// The worker process was killed by a signal.
    #[error("worker {worker:?} (pid {pid}) was killed by signal {signal} ({name})")]
    Signaled {
        /// The registered name.
        worker: String,
        /// Its process id.
        pid: u32,
        /// The signal number.
        signal: i32,
        /// The signal's name, such as `SIGKILL`.
        name: &'static str,
    },
    /// The worker process exited, whatever its status (0 included), without its done message:
    /// its function neither returned nor panicked, so the items before this error may be only
    /// part of its stream. For example the function (or a library it calls) called
    /// [`std::process::exit`], or the program does not call
    /// [`Registry::run_if_worker`](super::Registry::run_if_worker).
    #[error(
        "worker {worker:?} (pid {pid}) exited with status {code} without finishing its stream"
    )]
    ExitedEarly {
        /// The registered name.
        worker: String,
        /// Its process id.
        pid: u32,
        /// The exit status.
        code: i32,
    },
    /// No item came for the inactivity timeout; the worker was stopped.
    #[error("worker {worker:?} (pid {pid}) sent nothing for {waited:?}")]
    Inactive {
        /// The registered name.
        worker: String,
        /// Its process id.
        pid: u32,
        /// How long the parent waited.
        waited: Duration,
    },
    /// A ring, codec or OS error (spawning, decoding an item, a corrupt region).
    #[error(transparent)]
    Arena(#[from] crate::Error),
}

impl WorkerError {
    /// The worker's pid, for variants about a worker process.
    pub fn pid(&self) -> Option<u32> {
        match self {
            WorkerError::Failed { pid, .. }
            | WorkerError::Panicked { pid, .. }
            | WorkerError::Setup { pid, .. }
            | WorkerError::Signaled { pid, .. }
            | WorkerError::ExitedEarly { pid, .. }
            | WorkerError::Inactive { pid, .. } => Some(*pid),
            WorkerError::Arena(_) => None,
        }
    }
}

/// The conventional name of a signal number (numbers differ between architectures, so they
/// come from rustix).
pub(crate) fn signal_name(signal: i32) -> &'static str {
    use rustix::process::Signal;
    const NAMES: [(Signal, &str); 16] = [
        (Signal::HUP, "SIGHUP"),
        (Signal::INT, "SIGINT"),
        (Signal::QUIT, "SIGQUIT"),
        (Signal::ILL, "SIGILL"),
        (Signal::TRAP, "SIGTRAP"),
        (Signal::ABORT, "SIGABRT"),
        (Signal::BUS, "SIGBUS"),
        (Signal::FPE, "SIGFPE"),
        (Signal::KILL, "SIGKILL"),
        (Signal::USR1, "SIGUSR1"),
        (Signal::SEGV, "SIGSEGV"),
        (Signal::USR2, "SIGUSR2"),
        (Signal::PIPE, "SIGPIPE"),
        (Signal::ALARM, "SIGALRM"),
        (Signal::TERM, "SIGTERM"),
        (Signal::SYS, "SIGSYS"),
    ];
    NAMES
        .iter()
        .find(|(s, _)| s.as_raw() == signal)
        .map_or("an unnamed signal", |(_, name)| name)
}
