//! The arena's error type, [`Error`]: every ring, region, codec and OS error.
//!
//! The worker (the `worker` feature) has its own, `worker::WorkerError`, because most of its
//! variants describe a worker *process* (its name, pid, exit status, the panic message it
//! sent) rather than the arena; an arena error met by the worker machinery is wrapped in
//! `WorkerError::Arena(Error)`, never flattened, so `Error` stays the whole story of the arena.

use std::fmt;
use std::io;
use std::time::Duration;

/// Which side of a ring a handle or a peer plays.
///
/// # Examples
///
/// ```
/// use shm_arena::{Error, Region, Role};
///
/// let region = Region::create(1 << 16)?;
/// let _writer = region.writer()?;
/// match region.writer() {
///     Err(Error::RoleTaken { role: Role::Writer, pid }) => assert_eq!(pid, std::process::id()),
///     other => panic!("{other:?}"),
/// }
/// assert!(region.peer_alive(Role::Writer));
/// # Ok::<(), shm_arena::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The side that begins, fills and commits units.
    Writer,
    /// The side that takes committed units and ends them.
    Reader,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Writer => "writer",
            Role::Reader => "reader",
        })
    }
}

/// Everything that can go wrong in this crate.
///
/// Every variant carries enough context to say what happened without a debugger: sizes,
/// positions, the peer's pid, the operation that timed out, or the OS call that failed.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shm_arena::{Error, Region, Role};
///
/// let region = Region::create(1 << 16)?;
/// let (mut writer, reader) = (region.writer()?, region.reader()?);
/// match reader.next_unit(Duration::from_millis(10)) {
///     Err(Error::Timeout { what, waited }) => {
///         assert_eq!(what, "a committed unit");
///         assert!(waited >= Duration::from_millis(10));
///     }
///     other => panic!("{other:?}"),
/// }
/// let err = writer.begin_unit()?.blob_mut(1 << 20).unwrap_err();
/// assert!(matches!(err, Error::UnitTooLarge { max: 32768, .. }), "{err}");
/// drop(writer);
/// assert!(matches!(reader.try_next_unit(), Err(Error::Closed(Role::Writer))));
/// # Ok::<(), shm_arena::Error>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A unit needs more room than the ring can ever give one unit.
    ///
    /// Returned at once, never after waiting: waiting could not help.
    #[error("unit of {requested} bytes (with records and alignment) exceeds the ring's unit limit of {max} bytes")]
    UnitTooLarge {
        /// Bytes the unit would need, headers and alignment included.
        requested: u64,
        /// The largest unit this ring accepts (half its capacity).
        max: u64,
    },
    /// A non-blocking call found no room (writer) or no committed unit (reader).
    #[error("would block: {0}")]
    WouldBlock(&'static str),
    /// A blocking call reached its deadline.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What the call was waiting for.
        what: &'static str,
        /// How long it waited.
        waited: Duration,
    },
    /// The other side closed the ring (and, for a reader, everything committed was drained).
    #[error("the {0} closed the ring")]
    Closed(Role),
    /// The other side's process died (or its pid now belongs to another process).
    #[error("the {role} process (pid {pid}) is gone")]
    PeerGone {
        /// The role the dead process played.
        role: Role,
        /// Its pid.
        pid: u32,
    },
    /// The region was shut down ([`Region::shutdown`](crate::Region::shutdown)): every wait
    /// on it ends and no unit can be begun any more (readers still drain what was committed).
    #[error("the region was shut down")]
    Shutdown,
    /// Another live handle already plays this role on the region.
    #[error("the {role} role of this region is already taken by pid {pid}")]
    RoleTaken {
        /// The role asked for.
        role: Role,
        /// The process holding it.
        pid: u32,
    },
    /// A leaky subscriber fell behind the writer by more than the ring holds: `missed` units
    /// were overwritten before it read them. Returned once; the next call returns the oldest
    /// unit still in the ring.
    #[error("lagged: the writer overwrote {missed} units this leaky subscriber had not read")]
    Lagged {
        /// Units lost to this subscriber, exactly.
        missed: u64,
    },
    /// Shared memory holds something the protocol can never produce.
    ///
    /// The region is not trusted further by the handle that saw this; nothing out of bounds was
    /// read or written.
    #[error("corrupt region: {what} (at position {position})")]
    Corrupt {
        /// What was wrong.
        what: String,
        /// The ring position (or header offset) where it was found.
        position: u64,
    },
    /// An argument was out of range (capacity not a power of two, blob index too large, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Encoding or decoding a value failed.
    #[error("codec: {0}")]
    Codec(String),
    /// An OS call failed.
    #[error("{context}: {source}")]
    Io {
        /// The operation that failed, with its object.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn corrupt(what: impl Into<String>, position: u64) -> Self {
        Error::Corrupt {
            what: what.into(),
            position,
        }
    }

    #[cfg_attr(shm_arena_loom, allow(dead_code))]
    pub(crate) fn io(context: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Error::Io {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
