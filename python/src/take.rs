//! Taking units from Python, for both kinds of taker (`Reader`, `Subscriber`): a unit already
//! there without releasing the GIL, otherwise a wait in slices with the GIL released.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use shm_arena::{OwnedUnit, Unit};

use crate::wait::blocking;

/// What a Python taker wraps: the crate's `Reader` or `Subscriber`.
pub(crate) trait Taker: Send {
    /// The next unit if there is one now.
    fn try_take(&self) -> shm_arena::Result<Option<Unit<'_>>>;
    /// The next unit, waiting at most `slice`.
    fn take(&self, slice: Duration) -> shm_arena::Result<Unit<'_>>;
}

impl Taker for shm_arena::Reader {
    fn try_take(&self) -> shm_arena::Result<Option<Unit<'_>>> {
        self.try_next_unit()
    }

    fn take(&self, slice: Duration) -> shm_arena::Result<Unit<'_>> {
        self.next_unit(slice)
    }
}

impl Taker for shm_arena::Subscriber {
    fn try_take(&self) -> shm_arena::Result<Option<Unit<'_>>> {
        self.try_next_unit()
    }

    fn take(&self, slice: Duration) -> shm_arena::Result<Unit<'_>> {
        self.next_unit(slice)
    }
}

/// Locks a taker; a panic while it was held (which the crate never lets happen on purpose)
/// becomes a Python `RuntimeError` instead of a second panic.
pub(crate) fn lock<T>(taker: &Mutex<T>) -> PyResult<MutexGuard<'_, T>> {
    taker
        .lock()
        .map_err(|_| PyRuntimeError::new_err("this handle failed earlier (poisoned)"))
}

/// The next unit if there is one now (never waits).
pub(crate) fn try_next_unit<T: Taker>(
    taker: &Mutex<T>,
) -> PyResult<shm_arena::Result<Option<OwnedUnit>>> {
    Ok(lock(taker)?
        .try_take()
        .map(|unit| unit.map(Unit::into_owned)))
}

/// Takes the next unit, waiting at most `timeout` (`None`: for ever) with the GIL released,
/// signals checked every slice.
pub(crate) fn next_unit<T: Taker>(
    py: Python<'_>,
    taker: &Mutex<T>,
    timeout: Option<Duration>,
) -> PyResult<shm_arena::Result<OwnedUnit>> {
    // A unit already there is taken without releasing the GIL (releasing and taking it back
    // costs more than the take).
    match lock(taker)?.try_take() {
        Ok(Some(unit)) => return Ok(Ok(unit.into_owned())),
        Ok(None) => {}
        Err(e) => return Ok(Err(e)),
    }
    blocking(py, timeout, |slice| {
        let taker = taker.lock().map_err(|_| {
            shm_arena::Error::InvalidArgument("this handle failed earlier (poisoned)".into())
        })?;
        taker.take(slice).map(Unit::into_owned)
    })
}
