//! The package's exceptions, and how the crate's errors map onto Python's.

use pyo3::create_exception;
use pyo3::exceptions::{
    PyBlockingIOError, PyBufferError, PyException, PyOSError, PyTimeoutError, PyValueError,
};
use pyo3::types::PyAnyMethods;
use pyo3::{PyErr, Python};
use shm_arena::Error;

create_exception!(
    shm_arena,
    ShmArenaError,
    PyException,
    "Base class of the errors only shm_arena raises."
);
create_exception!(
    shm_arena,
    ClosedError,
    ShmArenaError,
    "The other side closed the ring (and, for a reader, everything committed was taken)."
);
create_exception!(
    shm_arena,
    PeerGoneError,
    ShmArenaError,
    "The other side's process died (after everything it committed was taken)."
);
create_exception!(
    shm_arena,
    ShutdownError,
    ClosedError,
    "The region was shut down (Region.shutdown, Arena.shutdown_arena)."
);
create_exception!(
    shm_arena,
    RoleTakenError,
    ShmArenaError,
    "Another live handle already plays this role on the region."
);
create_exception!(
    shm_arena,
    CorruptError,
    ShmArenaError,
    "Shared memory holds something the protocol can never produce."
);

create_exception!(
    shm_arena,
    LaggedError,
    ShmArenaError,
    "A leaky subscriber fell a ring's lap behind the writer: `missed` units are lost to it. \
     The next call returns the oldest unit still in the ring."
);

/// The Python exception for a crate error; the message is the crate's, with its context.
pub(crate) fn to_py(err: Error) -> PyErr {
    let message = err.to_string();
    match err {
        Error::Timeout { .. } => PyTimeoutError::new_err(message),
        Error::WouldBlock(_) => PyBlockingIOError::new_err(message),
        Error::UnitTooLarge { .. } | Error::InvalidArgument(_) | Error::Codec(_) => {
            PyValueError::new_err(message)
        }
        Error::Closed(_) => ClosedError::new_err(message),
        Error::PeerGone { .. } => PeerGoneError::new_err(message),
        Error::Shutdown => ShutdownError::new_err(message),
        Error::RoleTaken { .. } => RoleTakenError::new_err(message),
        Error::Corrupt { .. } => CorruptError::new_err(message),
        Error::Io { .. } => PyOSError::new_err(message),
        Error::Lagged { missed } => lagged(message, missed),
        _ => ShmArenaError::new_err(message),
    }
}

/// The error an arena writer gives when the ring stays full: SPDL's backends raise
/// `BufferError` when a reservation cannot be satisfied.
pub(crate) fn arena_full(err: Error, nbytes: usize) -> PyErr {
    match err {
        Error::Timeout { waited, .. } => PyBufferError::new_err(format!(
            "no room for {nbytes} bytes in the arena after {waited:?}: the consumer holds \
             (pins) units worth more than the arena's capacity, or stopped reading"
        )),
        Error::UnitTooLarge { requested, max } => PyBufferError::new_err(format!(
            "an item needs {requested} bytes of arena, more than the {max} one item may use \
             (half the capacity): create the Arena with a larger capacity"
        )),
        other => to_py(other),
    }
}

/// `LaggedError` with its `missed` attribute set.
fn lagged(message: String, missed: u64) -> PyErr {
    Python::attach(|py| {
        let err = LaggedError::new_err(message);
        match err.value(py).setattr("missed", missed) {
            Ok(()) => err,
            Err(failed) => failed,
        }
    })
}
