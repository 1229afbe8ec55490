//! What the parent and the worker process agree on: the environment variables, the exit
//! statuses and the status message kinds. Both sides import this file; neither imports the
//! other's.

/// Environment variable holding the name of the worker a child process runs. Its presence is
/// what makes [`Registry::run_if_worker`](super::Registry::run_if_worker) run a worker.
pub const WORKER_ENV: &str = "SHM_ARENA_WORKER";
/// Environment variable holding the name of the initializer to run first (may be absent).
pub(crate) const INIT_ENV: &str = "SHM_ARENA_WORKER_INIT";
/// Environment variable with the inherited descriptors: `args=N status=N [limit=N max=N]`.
pub(crate) const FDS_ENV: &str = "SHM_ARENA_WORKER_FDS";
/// Environment variable with the pid of the parent that started the worker.
pub(crate) const PARENT_ENV: &str = "SHM_ARENA_WORKER_PARENT";

/// Exit status of a worker whose function returned `Ok` (or that stopped because the parent
/// closed the ring).
pub(crate) const EXIT_DONE: i32 = 0;
/// Exit status of a worker whose function returned `Err`.
pub(crate) const EXIT_FAILED: i32 = 3;
/// Exit status of a worker whose function panicked.
pub(crate) const EXIT_PANICKED: i32 = 4;
/// Exit status of a worker that could not start (unknown name, bad arguments, no region).
pub(crate) const EXIT_SETUP: i32 = 5;
/// Exit status of a worker whose parent was gone before it started.
pub(crate) const EXIT_ORPHANED: i32 = 6;

/// Longest status message a worker sends: below `PIPE_BUF`, so the write is atomic and never
/// blocks on an empty pipe.
pub(crate) const MAX_STATUS: usize = 4000;

/// Status message kinds (first byte of the message on the status pipe).
pub(crate) const STATUS_DONE: u8 = b'D';
pub(crate) const STATUS_FAILED: u8 = b'F';
pub(crate) const STATUS_PANICKED: u8 = b'P';
pub(crate) const STATUS_SETUP: u8 = b'S';
