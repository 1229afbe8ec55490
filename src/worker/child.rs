//! The worker process's side: what [`Registry::run_if_worker`] does, and [`Output`].

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;

use serde::Serialize;

use super::limit::Limit;
use super::protocol::{
    EXIT_DONE, EXIT_FAILED, EXIT_ORPHANED, EXIT_PANICKED, EXIT_SETUP, FDS_ENV, INIT_ENV,
    MAX_STATUS, PARENT_ENV, STATUS_DONE, STATUS_FAILED, STATUS_PANICKED, STATUS_SETUP, WORKER_ENV,
};
use crate::{Error, Region, Result, Role, Writer};

/// A worker function with its argument type erased: decodes the arguments, runs, and turns
/// the error into its message.
pub(crate) type Entry = Box<dyn Fn(&[u8], &mut Output) -> std::result::Result<(), EntryError>>;

/// Why a worker function did not complete.
pub(crate) enum EntryError {
    /// The arguments did not decode as the function's argument type.
    Args(String),
    /// The function returned this error.
    Returned(String),
}

/// An initializer with its error type erased.
pub(crate) type Init = Box<dyn Fn() -> std::result::Result<(), String>>;

/// Where [`run`] finds the functions by name. Implemented by the registry, so this file does
/// not depend on it (the registry calls [`run`]).
pub(crate) trait Workers {
    /// The worker function registered as `name`.
    fn worker(&self, name: &str) -> Option<&Entry>;
    /// The initializer registered as `name`.
    fn initializer(&self, name: &str) -> Option<&Init>;
    /// Every registered worker name, for the error message about an unknown one.
    fn worker_names(&self) -> Vec<&str>;
}

/// What a worker function sends its items through: the arena's [`Writer`], plus the
/// in-flight limit when the parent asked for one.
///
/// Every item is one unit, encoded with [`Writer::send`]: large byte strings and
/// [`Array`](crate::codec::Array)s are copied once into the shared ring, the rest goes into a
/// small envelope.
///
/// # Examples
///
/// A worker function that stops cleanly when the parent stops iterating (`no_run`: it runs in
/// a worker process, see [`Registry`](super::Registry)):
///
/// ```no_run
/// use shm_arena::worker::{Output, Registry};
///
/// fn tick(_: (), out: &mut Output) -> shm_arena::Result<()> {
///     for i in 0u64.. {
///         // Fails with `Error::Closed` once the parent dropped its iterator: returning the
///         // error then counts as a normal stop, not a failure.
///         out.send(&i)?;
///     }
///     Ok(())
/// }
///
/// fn main() {
///     Registry::new().register("tick", tick).run_if_worker();
/// }
/// ```
pub struct Output {
    writer: Writer,
    region: Region,
    limit: Option<(Limit, u32)>,
    sent: u32,
    closed: bool,
}

impl Output {
    /// Sends `item` as one unit, waiting for room in the ring (and, with
    /// [`Options::max_in_flight`](super::Options::max_in_flight), for the parent to end items).
    ///
    /// # Errors
    /// [`Error::Closed`] once the parent stopped iterating (return it: the worker then exits
    /// cleanly); [`Error::PeerGone`] if the parent died; [`Error::UnitTooLarge`] if the encoded
    /// item needs more than half the ring; [`Error::Codec`] if it does not serialize.
    pub fn send<T: Serialize + ?Sized>(&mut self, item: &T) -> Result<()> {
        if let Some((limit, max)) = &self.limit {
            let region = &self.region;
            let waited = limit.wait_below(self.sent, *max, || {
                if region.peer_alive(Role::Reader) {
                    Ok(())
                } else {
                    Err(Error::Closed(Role::Reader))
                }
            });
            if let Err(e) = waited {
                return self.note(Err(e));
            }
        }
        let sent = self.writer.send(item);
        self.note(sent)
    }

    /// Sends `item` if that needs no waiting.
    ///
    /// # Errors
    /// [`Error::WouldBlock`] if the ring is full or `max_in_flight` items are in flight;
    /// otherwise as [`send`](Self::send).
    pub fn try_send<T: Serialize + ?Sized>(&mut self, item: &T) -> Result<()> {
        if let Some((limit, max)) = &self.limit {
            if !limit.below(self.sent, *max) {
                return Err(Error::WouldBlock("max_in_flight items are in flight"));
            }
        }
        let sent = self.writer.try_send(item);
        self.note(sent)
    }

    /// The arena writer itself, to write units blob by blob (for example filling an array in
    /// place with [`UnitWriter::blob_mut`](crate::UnitWriter::blob_mut)). The parent decodes
    /// such units only if they follow [`Writer::send`]'s layout (envelope last); otherwise it
    /// reads them with [`Item::blob`](super::Item::blob).
    ///
    /// Units written this way do not count against
    /// [`Options::max_in_flight`](super::Options::max_in_flight) (only the ring's capacity
    /// bounds them).
    pub fn writer(&mut self) -> &mut Writer {
        &mut self.writer
    }

    /// Items sent so far through [`send`](Self::send) and [`try_send`](Self::try_send).
    pub fn sent(&self) -> u64 {
        u64::from(self.sent)
    }

    /// Whether the parent has stopped iterating (seen by a failed send): the worker should
    /// return.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn note(&mut self, result: Result<()>) -> Result<()> {
        match &result {
            Ok(()) => self.sent = self.sent.wrapping_add(1),
            Err(Error::Closed(Role::Reader) | Error::PeerGone { .. }) => self.closed = true,
            Err(_) => {}
        }
        result
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Output")
            .field("writer", &self.writer)
            .field("max_in_flight", &self.limit.as_ref().map(|(_, max)| max))
            .field("sent", &self.sent)
            .field("closed", &self.closed)
            .finish()
    }
}

/// The descriptors and settings a worker inherits, from [`FDS_ENV`].
struct Inherited {
    args: OwnedFd,
    status: File,
    limit: Option<(OwnedFd, u32)>,
}

/// Takes ownership of an inherited descriptor named in [`FDS_ENV`].
fn take_fd(raw: RawFd) -> std::result::Result<OwnedFd, String> {
    if raw < 0 {
        return Err(format!("descriptor {raw} in {FDS_ENV}"));
    }
    // SAFETY: only borrowed for the check; F_GETFD does not act on the descriptor.
    let open = rustix::io::fcntl_getfd(unsafe { BorrowedFd::borrow_raw(raw) }).is_ok();
    if !open {
        return Err(format!("descriptor {raw} in {FDS_ENV} is not open"));
    }
    // SAFETY: the parent made this descriptor inheritable for this process (pre_exec in
    // `spawn`) and nothing else in the process knows its number: `run` is reached once per
    // process (it ends with exit), so this is the only owner.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // Not passed on to processes the worker itself starts.
    let _ = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC);
    Ok(fd)
}

/// Parses `args=N status=N [limit=N max=N]`.
fn inherited() -> std::result::Result<Inherited, String> {
    let value = std::env::var(FDS_ENV).map_err(|_| format!("{FDS_ENV} is not set"))?;
    let mut fields = std::collections::BTreeMap::new();
    for pair in value.split_ascii_whitespace() {
        let (key, number) = pair
            .split_once('=')
            .ok_or_else(|| format!("{FDS_ENV}: {pair:?} is not key=value"))?;
        let number: i64 = number
            .parse()
            .map_err(|_| format!("{FDS_ENV}: {pair:?} is not a number"))?;
        fields.insert(key, number);
    }
    let field = |key: &str| {
        fields
            .get(key)
            .copied()
            .ok_or_else(|| format!("{FDS_ENV}={value:?} has no {key}"))
    };
    let fd = |key: &str| -> std::result::Result<OwnedFd, String> {
        take_fd(RawFd::try_from(field(key)?).map_err(|_| format!("{FDS_ENV}: bad {key}"))?)
    };
    let status = File::from(fd("status")?);
    let args = fd("args")?;
    let limit = if fields.contains_key("limit") {
        let max = u32::try_from(field("max")?).map_err(|_| format!("{FDS_ENV}: bad max"))?;
        Some((fd("limit")?, max))
    } else {
        None
    };
    Ok(Inherited {
        args,
        status,
        limit,
    })
}

/// The last panic's message and location, recorded by the hook `run` installs.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Ok(Some(message)) = LAST_PANIC.lock().map(|mut m| m.take()) {
        return message;
    }
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

/// Writes the status message (truncated to [`MAX_STATUS`] bytes at a character boundary).
fn report(status: &mut Option<File>, kind: u8, message: &str) {
    let Some(file) = status.as_mut() else { return };
    let mut end = message.len().min(MAX_STATUS);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let mut bytes = Vec::with_capacity(end + 1);
    bytes.push(kind);
    bytes.extend_from_slice(&message.as_bytes()[..end]);
    // One write below PIPE_BUF into a pipe only we write to: atomic and never partial. A
    // parent that is gone makes it fail with EPIPE, which is fine.
    let _ = file.write_all(&bytes);
}

/// Runs the worker named in [`WORKER_ENV`]; returns the exit status.
pub(crate) fn run(registry: &dyn Workers) -> i32 {
    let name = std::env::var(WORKER_ENV).unwrap_or_default();
    // The parent set PR_SET_PDEATHSIG before exec and checked its pid then; check again in
    // case the variable was inherited by a process the parent did not start for us.
    let parent: Option<i32> = std::env::var(PARENT_ENV).ok().and_then(|v| v.parse().ok());
    let ppid = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get());
    if parent != Some(ppid) {
        eprintln!(
            "shm-arena worker {name:?}: parent {parent:?} is not this process's parent \
             ({ppid}); exiting"
        );
        return EXIT_ORPHANED;
    }
    let inherited = match inherited() {
        Ok(inherited) => inherited,
        Err(message) => {
            eprintln!("shm-arena worker {name:?}: {message}");
            return EXIT_SETUP;
        }
    };
    let mut status = Some(inherited.status);
    let setup = |status: &mut Option<File>, message: String| {
        report(status, STATUS_SETUP, &message);
        EXIT_SETUP
    };

    // Attach as the writer before anything that may fail or take time, so the parent's
    // reader notices this process's death from now on.
    let region = match Region::from_env() {
        Ok(region) => region,
        Err(e) => return setup(&mut status, format!("opening the inherited arena: {e}")),
    };
    let writer = match region.writer() {
        Ok(writer) => writer,
        Err(e) => return setup(&mut status, format!("attaching as the arena's writer: {e}")),
    };
    let mut args = Vec::new();
    let mut args_file = File::from(inherited.args);
    if let Err(e) = args_file
        .seek(SeekFrom::Start(0))
        .and_then(|_| args_file.read_to_end(&mut args))
    {
        return setup(&mut status, format!("reading the arguments: {e}"));
    }
    drop(args_file);
    let limit = match inherited.limit {
        None => None,
        Some((fd, max)) => match Limit::open(&fd) {
            Ok(limit) => Some((limit, max)),
            Err(e) => return setup(&mut status, format!("opening the in-flight counter: {e}")),
        },
    };
    let Some(entry) = registry.worker(&name) else {
        let known = registry.worker_names();
        return setup(
            &mut status,
            format!("no worker named {name:?} is registered (registered: {known:?})"),
        );
    };

    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        if let Ok(mut last) = LAST_PANIC.lock() {
            *last = Some(info.to_string());
        }
        previous(info);
    }));

    if let Ok(init_name) = std::env::var(INIT_ENV) {
        let Some(init) = registry.initializer(&init_name) else {
            return setup(
                &mut status,
                format!("no initializer named {init_name:?} is registered"),
            );
        };
        match panic::catch_unwind(AssertUnwindSafe(init)) {
            Ok(Ok(())) => {}
            Ok(Err(message)) => {
                return setup(
                    &mut status,
                    format!("initializer {init_name:?} failed: {message}"),
                )
            }
            Err(payload) => {
                let message = format!("in initializer {init_name:?}: {}", panic_message(&*payload));
                report(&mut status, STATUS_PANICKED, &message);
                return EXIT_PANICKED;
            }
        }
    }

    let mut output = Output {
        writer,
        region,
        limit,
        sent: 0,
        closed: false,
    };
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| entry(&args, &mut output)));
    let code = match outcome {
        Ok(Ok(())) => {
            report(&mut status, STATUS_DONE, "");
            EXIT_DONE
        }
        // The parent stopped reading: whatever the function made of that, it was asked to stop.
        Ok(Err(_)) if output.closed => {
            report(&mut status, STATUS_DONE, "stopped by the parent");
            EXIT_DONE
        }
        Ok(Err(EntryError::Args(message))) => setup(&mut status, message),
        Ok(Err(EntryError::Returned(message))) => {
            report(&mut status, STATUS_FAILED, &message);
            EXIT_FAILED
        }
        Err(payload) => {
            report(&mut status, STATUS_PANICKED, &panic_message(&*payload));
            EXIT_PANICKED
        }
    };
    // The status is written first, then the ring is closed: a parent that sees the ring
    // closed finds the status once it has reaped this process.
    drop(output);
    drop(status);
    code
}
