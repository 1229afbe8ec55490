//! The subscribing side of a broadcast region from Python: every subscriber sees every unit,
//! through read-only views of the one copy in shared memory.

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use shm_arena::Policy;

use crate::errors::to_py;
use crate::reader::{decode, Unit};
use crate::take::{lock, next_unit, try_next_unit};
use crate::wait::seconds;

/// The name Python uses for a policy.
pub(crate) fn policy_name(policy: Policy) -> &'static str {
    match policy {
        Policy::Backpressure => "backpressure",
        Policy::Leaky => "leaky",
    }
}

/// A policy from its Python name.
///
/// # Errors
/// `ValueError` for anything but `"backpressure"` and `"leaky"`.
pub(crate) fn parse_policy(name: &str) -> PyResult<Policy> {
    match name {
        "backpressure" => Ok(Policy::Backpressure),
        "leaky" => Ok(Policy::Leaky),
        other => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "policy {other:?}: expected \"backpressure\" (the writer waits for this subscriber) \
             or \"leaky\" (the writer never waits for its pace; it may miss units)"
        ))),
    }
}

/// One subscriber of a broadcast region (`region.subscriber(policy)`): it sees every unit the
/// writer commits after it attached, in order, as read-only views shared with the other
/// subscribers (nobody can change a unit another subscriber reads).
///
/// A `"backpressure"` subscriber never misses a unit: the writer waits for it. A `"leaky"` one
/// never slows the writer down by its pace: when it falls a ring's lap behind, its next call
/// raises `LaggedError` (with `.missed`, the exact number of units it lost) and the call after
/// that returns the oldest unit still in the ring. Views it holds are never overwritten, for
/// either policy: a held unit keeps its space.
///
/// ```python
/// region = shm_arena.Region(1 << 20, subscribers=2)
/// fast, slow = region.subscriber(), region.subscriber("leaky")
/// writer = region.writer()
/// writer.send({"frame": 1, "pixels": numpy.zeros((480, 640), numpy.uint8)})
/// fast.recv(timeout=1.0)["pixels"].flags.writeable   # False: shared, read-only
/// ```
#[pyclass(module = "shm_arena", frozen)]
pub struct Subscriber {
    pub(crate) inner: Mutex<shm_arena::Subscriber>,
}

#[pymethods]
impl Subscriber {
    /// The next unit, waiting at most `timeout` seconds (`None`: as long as the writer lives)
    /// with the GIL released. Its blobs are read-only.
    ///
    /// Raises `TimeoutError`; `LaggedError` once after a leaky subscriber was lapped;
    /// `ClosedError` once the writer detached and every unit it committed was taken;
    /// `PeerGoneError` when the writer's process died (after what it committed was taken);
    /// `CorruptError`.
    #[pyo3(signature = (timeout = None))]
    fn next_unit(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Unit> {
        let unit = next_unit(py, &self.inner, seconds(timeout)?)?.map_err(to_py)?;
        debug_assert!(unit.is_shared());
        Ok(Unit::new(unit))
    }

    /// The next unit if there is one now (never waits), else `None`. Raises as `next_unit`.
    fn try_next_unit(&self) -> PyResult<Option<Unit>> {
        let unit = try_next_unit(&self.inner)?.map_err(to_py)?;
        Ok(unit.map(Unit::new))
    }

    /// The next value sent with `Writer.send` (see `Reader.recv`): offloaded arrays and byte
    /// strings come back as read-only views of shared memory that keep the unit alive;
    /// `copy=True` returns owned copies. Raises as `next_unit`, and `ValueError` for a unit
    /// that holds no valid envelope.
    #[pyo3(signature = (timeout = None, *, copy = false))]
    fn recv<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
        copy: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let unit = Arc::new(next_unit(py, &self.inner, seconds(timeout)?)?.map_err(to_py)?);
        decode(py, &unit, copy)
    }

    /// `"backpressure"` or `"leaky"`, as chosen at attach.
    #[getter]
    fn policy(&self) -> PyResult<&'static str> {
        Ok(policy_name(lock(&self.inner)?.policy()))
    }

    /// The subscriber slot this handle holds (`0 .. subscribers`).
    #[getter]
    fn slot(&self) -> PyResult<u32> {
        Ok(lock(&self.inner)?.slot())
    }
}
