//! The parent's side: [`iterate_in_subprocess`], the [`Subprocess`] iterator and its items.

use std::fmt;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::error::{signal_name, WorkerError};
use super::limit::Limit;
use super::protocol::{MAX_STATUS, STATUS_DONE, STATUS_FAILED, STATUS_PANICKED, STATUS_SETUP};
use super::spawn::{spawn, Options};
use crate::codec::{self, EncodeOptions, HeapBlobs};
use crate::{Error, OwnedUnit, Reader, Role, Unit};

/// How long one wait on the ring lasts before the parent checks on the worker process. A worker
/// that dies after attaching to the ring is noticed by the ring itself (within 100 ms); this
/// catches one that dies before.
const POLL: Duration = Duration::from_millis(100);
/// After SIGTERM, how long a worker gets before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(1);

/// Starts the worker registered as `name` in a new process, passing it `args`, and returns
/// the iterator of the items it sends.
///
/// The worker process is the current executable re-executed (or [`Options::program`]); its
/// `main` must call [`Registry::run_if_worker`](super::Registry::run_if_worker) first thing.
/// `args` are encoded with [`crate::codec`] and decoded in the worker as the argument type of
/// the registered function. Returns as soon as the process is started; does not wait for it
/// to run.
///
/// # Errors
/// [`WorkerError::Arena`] with [`Error::InvalidArgument`] for a bad capacity, [`Error::Codec`]
/// if `args` do not serialize, [`Error::Io`] if the process or the shared objects cannot be
/// created. Failures inside the worker (an unknown name, arguments that do not decode) come
/// from the first `next`.
///
/// # Examples
///
/// See the [module documentation](super) (a doc test cannot be re-executed as a worker; the
/// tests in `tests/worker.rs` can).
pub fn iterate_in_subprocess<A: Serialize + ?Sized>(
    name: &str,
    args: &A,
    options: Options,
) -> Result<Subprocess, WorkerError> {
    // Self-contained envelope: no blob is offloaded with this threshold.
    let mut bytes = Vec::new();
    codec::encode(
        args,
        &EncodeOptions::with_offload_threshold(usize::MAX),
        &mut bytes,
        &mut HeapBlobs::new(),
    )?;
    let spawned = spawn(name, &bytes, &options)?;
    let pid = spawned.child.id();
    Ok(Subprocess {
        reader: Some(spawned.reader),
        process: Process {
            worker: name.to_owned(),
            pid,
            child: Some(spawned.child),
            status: Some(spawned.status),
            limit: spawned.limit.map(Arc::new),
            inactivity: options.inactivity_timeout,
            stop_timeout: options.stop_timeout,
            done: false,
        },
    })
}

/// A running worker and the items it sends: an iterator of `Result<`[`Item`]`, `[`WorkerError`]`>`.
///
/// Iterating is *the* way to consume a worker's output. Each [`Item`] is an owned unit
/// (`Send + 'static`): several may be held at once, each is ended when dropped, and
/// [`Item::decode`] reads it in place (borrowing from shared memory) or into an owned value.
///
/// Each step waits for the next item at most [`Options::inactivity_timeout`]. The iteration
/// ends with `None` when the worker's function returned `Ok`, or with one error (then `None`)
/// when it failed, panicked, exited early, was killed or went silent. Dropping it stops and
/// reaps the worker (see the [module documentation](super)).
///
/// # Examples
///
/// Owned values (`no_run`: the program must register the worker in `main`, see
/// [`Registry`](super::Registry)):
///
/// ```no_run
/// use shm_arena::worker::{iterate_in_subprocess, Options, WorkerError};
///
/// # fn main() -> Result<(), WorkerError> {
/// let mut total = 0u64;
/// for item in iterate_in_subprocess("count", &10u32, Options::new())? {
///     let n: u32 = item?.decode()?; // an owned value; the item is ended right after
///     total += u64::from(n);
/// }
/// assert_eq!(total, 45);
///
/// // All the values at once: the first error stops the collection.
/// let all = iterate_in_subprocess("count", &10u32, Options::new())?
///     .map(|item| Ok::<u32, WorkerError>(item?.decode()?))
///     .collect::<Result<Vec<u32>, _>>()?;
/// assert_eq!(all.len(), 10);
/// # Ok(())
/// # }
/// ```
pub struct Subprocess {
    reader: Option<Reader>,
    process: Process,
}

/// Everything but the reader, so that the reader can be borrowed by a returned unit while
/// the process state is updated.
struct Process {
    worker: String,
    pid: u32,
    /// `None` once reaped.
    child: Option<Child>,
    /// Read end of the status pipe; `None` once read.
    status: Option<OwnedFd>,
    limit: Option<Arc<Limit>>,
    inactivity: Duration,
    stop_timeout: Duration,
    /// The iteration ended (normally or with an error).
    done: bool,
}

/// Why the wait for an item ended without one.
enum Stop {
    /// The worker closed the ring or its process is gone.
    Exited,
    /// Nothing came for the inactivity timeout.
    Inactive(Duration),
    /// The ring failed (corrupt, or an OS error).
    Arena(Error),
}

impl Subprocess {
    /// The worker process's id.
    pub fn pid(&self) -> u32 {
        self.process.pid
    }

    /// The registered name of the worker.
    pub fn worker(&self) -> &str {
        &self.process.worker
    }
}

/// Waits for the next unit, watching the worker process in between.
fn wait_unit<'r>(reader: &'r Reader, process: &mut Process) -> Result<Unit<'r>, Stop> {
    let started = Instant::now();
    loop {
        let left = process.inactivity.saturating_sub(started.elapsed());
        match reader.next_unit(left.min(POLL)) {
            Ok(unit) => return Ok(unit),
            Err(Error::Timeout { .. }) => {}
            Err(Error::Closed(Role::Writer) | Error::PeerGone { .. }) => return Err(Stop::Exited),
            Err(e) => return Err(Stop::Arena(e)),
        }
        if process.exited() {
            // Units it committed before dying are still delivered.
            return match reader.try_next_unit() {
                Ok(Some(unit)) => Ok(unit),
                Ok(None) | Err(Error::Closed(_)) => Err(Stop::Exited),
                Err(e) => Err(Stop::Arena(e)),
            };
        }
        if started.elapsed() >= process.inactivity {
            return Err(Stop::Inactive(started.elapsed()));
        }
    }
}

impl Process {
    /// Whether the child has exited (reaping it if so).
    fn exited(&mut self) -> bool {
        match &mut self.child {
            None => true,
            Some(child) => !matches!(child.try_wait(), Ok(None)),
        }
    }

    /// Ends the iteration: makes sure the process is gone and reaped, and says why it ended.
    fn finish(&mut self, stop: Stop) -> Result<(), WorkerError> {
        match stop {
            Stop::Exited => {
                let status = self.stop(self.stop_timeout);
                self.outcome(status)
            }
            Stop::Inactive(waited) => {
                // A worker that sends nothing for this long will not notice a closed ring.
                self.stop(Duration::ZERO);
                Err(WorkerError::Inactive {
                    worker: self.worker.clone(),
                    pid: self.pid,
                    waited,
                })
            }
            Stop::Arena(e) => {
                self.stop(Duration::ZERO);
                Err(WorkerError::Arena(e))
            }
        }
    }

    /// Waits up to `grace` for the child to exit by itself, then sends SIGTERM, then SIGKILL;
    /// always reaps it. Returns its exit status (`None` if it could not be obtained).
    fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Some(status) = wait_until(&mut child, Instant::now() + grace) {
            return Some(status);
        }
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            // The child is not reaped yet, so its pid cannot have been reused.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if let Some(status) = wait_until(&mut child, Instant::now() + TERM_GRACE) {
            return Some(status);
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// Reads the status message the worker left (if any).
    fn status_message(&mut self) -> Option<(u8, String)> {
        let fd = self.status.take()?;
        let mut bytes = Vec::new();
        let mut buf = [0u8; 1024];
        // Non-blocking: the worker has exited, so whatever it wrote is in the pipe now.
        while bytes.len() <= MAX_STATUS {
            match rustix::io::read(&fd, &mut buf) {
                Ok(0) => break,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => break,
            }
        }
        let (&kind, message) = bytes.split_first()?;
        Some((kind, String::from_utf8_lossy(message).into_owned()))
    }

    /// Translates how the worker ended into the iteration's last result.
    fn outcome(&mut self, status: Option<ExitStatus>) -> Result<(), WorkerError> {
        let worker = self.worker.clone();
        let pid = self.pid;
        // A signal wins over any message: the message may predate the kill.
        if let Some(signal) = status.and_then(|s| s.signal()) {
            return Err(WorkerError::Signaled {
                worker,
                pid,
                signal,
                name: signal_name(signal),
            });
        }
        match self.status_message() {
            Some((STATUS_DONE, _)) => Ok(()),
            Some((STATUS_FAILED, message)) => Err(WorkerError::Failed {
                worker,
                pid,
                message,
            }),
            Some((STATUS_PANICKED, message)) => Err(WorkerError::Panicked {
                worker,
                pid,
                message,
            }),
            Some((STATUS_SETUP, message)) => Err(WorkerError::Setup {
                worker,
                pid,
                message,
            }),
            // No done message: the stream was cut short, even by an exit status of 0 (a
            // library calling `exit(0)`); only the message says the function returned.
            _ => match status.and_then(|s| s.code()) {
                Some(code) => Err(WorkerError::ExitedEarly { worker, pid, code }),
                None => Err(WorkerError::Arena(Error::io(
                    format!("reaping worker {worker:?} (pid {pid})"),
                    std::io::Error::other("no exit status"),
                ))),
            },
        }
    }
}

/// Polls the child until it exits or `deadline` passes.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    let mut sleep = Duration::from_micros(200);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            // ECHILD: reaped elsewhere (someone waited on all children); nothing left to do.
            Err(_) => return None,
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(sleep.min(deadline - now));
        sleep = (sleep * 2).min(Duration::from_millis(20));
    }
}

impl Drop for Subprocess {
    fn drop(&mut self) {
        // Closing the ring makes the worker's next send fail with `Closed`, its cooperative
        // cue to return; the counter page wakes a worker waiting for an item to end.
        drop(self.reader.take());
        if let Some(limit) = &self.process.limit {
            limit.close();
        }
        let grace = self.process.stop_timeout;
        self.process.stop(grace);
    }
}

impl Iterator for Subprocess {
    type Item = Result<Item, WorkerError>;

    /// The next item. Blocks up to [`Options::inactivity_timeout`].
    fn next(&mut self) -> Option<Self::Item> {
        if self.process.done {
            return None;
        }
        let reader = self.reader.as_ref()?;
        let process = &mut self.process;
        let stop = match wait_unit(reader, process) {
            Ok(unit) => {
                return Some(Ok(Item {
                    unit: unit.into_owned(),
                    _ticket: process.limit.clone().map(Ticket),
                }))
            }
            Err(stop) => stop,
        };
        process.done = true;
        process.finish(stop).err().map(Err)
    }
}

impl fmt::Debug for Subprocess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subprocess")
            .field("worker", &self.process.worker)
            .field("pid", &self.process.pid)
            .field("done", &self.process.done)
            .finish()
    }
}

/// Ends one item for the in-flight count when dropped (after the unit it belongs to, which
/// is declared before it).
#[derive(Debug)]
struct Ticket(Arc<Limit>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.end_one();
    }
}

/// One item from a worker: an owned unit (`Send + 'static`) in the shared ring. Its space
/// goes back to the worker when it is dropped.
///
/// # Examples
///
/// Decoding in place, holding a few items at once (`no_run`: the program must register the
/// worker in `main`, see [`Registry`](super::Registry)):
///
/// ```no_run
/// use shm_arena::codec::Array;
/// use shm_arena::worker::{iterate_in_subprocess, Item, Options};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let items: Vec<Item> = iterate_in_subprocess("frames", &4u64, Options::new())?
///     .take(2)
///     .collect::<Result<_, _>>()?;
/// for item in &items {
///     let pixels: Array<f32> = item.decode()?; // borrows from shared memory
///     assert!(pixels.is_borrowed());
/// }
/// drop(items); // ends both units: their space goes back to the worker
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Item {
    // Field order matters: the unit ends before the ticket tells the worker.
    unit: OwnedUnit,
    _ticket: Option<Ticket>,
}

impl Item {
    /// Decodes the item as the worker's [`Output::send`](super::Output::send) encoded it,
    /// borrowing from shared memory (see [`Unit::decode`]).
    ///
    /// # Errors
    /// As [`Unit::decode`].
    pub fn decode<'u, T: Deserialize<'u>>(&'u self) -> crate::Result<T> {
        self.unit.decode()
    }

    /// Blob `index` of the unit (see [`Unit::blob`]); the last blob of a sent item is its
    /// envelope.
    ///
    /// # Errors
    /// As [`Unit::blob`].
    pub fn blob(&self, index: usize) -> crate::Result<&[u8]> {
        self.unit.blob(index)
    }

    /// Number of blobs in the unit.
    pub fn blob_count(&self) -> usize {
        self.unit.blob_count()
    }

    /// The underlying unit.
    pub fn unit(&self) -> &OwnedUnit {
        &self.unit
    }
}
