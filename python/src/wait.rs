//! Blocking from Python: the GIL released, and signals (Ctrl-C) checked between slices.

use std::time::{Duration, Instant};

use pyo3::prelude::*;
use shm_arena::Error;

/// The longest the GIL stays released in one go, and how soon a signal is noticed.
pub(crate) const SLICE: Duration = Duration::from_millis(100);

/// Converts a Python timeout in seconds (`None`: no limit) into a duration.
pub(crate) fn seconds(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_finite() && t >= 0.0 => Ok(Some(Duration::from_secs_f64(t))),
        Some(t) => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "timeout {t} is not a number of seconds >= 0"
        ))),
    }
}

/// Calls `attempt(slice)` with the GIL released until it returns anything but
/// [`Error::Timeout`], or `timeout` has passed (then the last `Timeout`, with the whole wait);
/// between slices, pending signals run their Python handlers (KeyboardInterrupt ends the wait
/// with its exception).
pub(crate) fn blocking<T: Send>(
    py: Python<'_>,
    timeout: Option<Duration>,
    mut attempt: impl FnMut(Duration) -> shm_arena::Result<T> + Send,
) -> PyResult<shm_arena::Result<T>> {
    let started = Instant::now();
    loop {
        let left = timeout.map(|t| t.saturating_sub(started.elapsed()));
        let slice = left.map_or(SLICE, |l| l.min(SLICE));
        let result = py.detach(|| attempt(slice));
        match result {
            Err(Error::Timeout { what, .. }) => {
                if left.is_some_and(|l| l <= slice) {
                    return Ok(Err(Error::Timeout {
                        what,
                        waited: started.elapsed(),
                    }));
                }
                py.check_signals()?;
            }
            other => return Ok(other),
        }
    }
}
