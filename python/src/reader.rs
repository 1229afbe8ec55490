//! The reading side from Python: `Reader`, and `Unit`, a committed unit whose blobs are
//! zero-copy memoryviews of shared memory.

use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use shm_arena::OwnedUnit;

use shm_arena::codec::Value;

use crate::blob::{Blob, Owner};
use crate::decode::{to_python, Source};
use crate::errors::to_py;
use crate::take::{lock, next_unit, try_next_unit};
use crate::wait::seconds;

/// Decodes `unit`'s value into Python objects.
pub(crate) fn decode<'py>(
    py: Python<'py>,
    unit: &Arc<OwnedUnit>,
    copy: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let value: Value<'_> = unit.decode().map_err(to_py)?;
    to_python(py, &value, &Source::new(unit, copy))
}

/// The reader of a region (`region.reader()`).
///
/// ```python
/// unit = reader.next_unit(timeout=5.0)
/// header = bytes(unit.blob(0))
/// pixels = numpy.frombuffer(unit.blob(1), dtype=numpy.float32)  # zero-copy
/// unit.end_unit()   # the space returns once `pixels` is gone too
/// ```
#[pyclass(module = "shm_arena", frozen)]
pub struct Reader {
    pub(crate) inner: Mutex<shm_arena::Reader>,
}

#[pymethods]
impl Reader {
    /// The next committed unit, waiting at most `timeout` seconds (`None`: as long as a writer
    /// lives) with the GIL released.
    ///
    /// Raises `TimeoutError`, `ClosedError` once every writer detached and everything committed
    /// was taken, `PeerGoneError` when a writer's process died, `CorruptError`.
    #[pyo3(signature = (timeout = None))]
    fn next_unit(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Unit> {
        let unit = next_unit(py, &self.inner, seconds(timeout)?)?.map_err(to_py)?;
        Ok(Unit::new(unit))
    }

    /// The next value sent with `Writer.send` (or by a Rust `Writer::send`), waiting at most
    /// `timeout` seconds (`None`: as long as a writer lives) with the GIL released.
    ///
    /// Offloaded numpy arrays and byte strings come back as read-only views of shared memory
    /// (numpy arrays, memoryviews) that keep the unit alive: its space returns to the writer
    /// when the last of them is gone. `copy=True` returns owned copies instead (the unit ends
    /// before `recv` returns). Raises as `next_unit`, and `ValueError` for a unit that does not
    /// hold a valid envelope (the unit is ended; nothing else is lost).
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

    /// The next committed unit if there is one now (never waits), else `None`.
    fn try_next_unit(&self) -> PyResult<Option<Unit>> {
        let unit = try_next_unit(&self.inner)?.map_err(to_py)?;
        Ok(unit.map(Unit::new))
    }

    /// Bytes in the ring.
    #[getter]
    fn capacity(&self) -> PyResult<u64> {
        Ok(lock(&self.inner)?.capacity())
    }
}

/// A committed unit. `blob(i)` views its bytes in shared memory; the unit ends (its space
/// returns to the writer) once `end_unit()` was called, or the unit was garbage-collected, and
/// every view of it is gone. Also a context manager that ends the unit on exit.
#[pyclass(module = "shm_arena", frozen)]
pub struct Unit {
    unit: Mutex<Option<Arc<OwnedUnit>>>,
}

impl Unit {
    pub(crate) fn new(unit: OwnedUnit) -> Unit {
        Unit {
            unit: Mutex::new(Some(Arc::new(unit))),
        }
    }

    fn get(&self) -> PyResult<Arc<OwnedUnit>> {
        self.unit
            .lock()
            .map_err(|_| PyRuntimeError::new_err("poisoned"))?
            .clone()
            .ok_or_else(|| PyRuntimeError::new_err("the unit was ended"))
    }
}

#[pymethods]
impl Unit {
    /// Blob `index` as a read-only memoryview of shared memory (no copy); it keeps the unit
    /// alive while it (or anything built on it, such as a numpy array) lives.
    fn blob<'py>(&self, py: Python<'py>, index: usize) -> PyResult<Bound<'py, PyAny>> {
        let unit = self.get()?;
        let (ptr, len) = unit.blob_ptr(index).map_err(to_py)?;
        Blob::view(py, Blob::new(Owner::Unit(unit), ptr, len, true))
    }

    /// Decodes the value the unit holds (see `Reader.recv`); views of shared memory in it keep
    /// the unit alive after `end_unit`.
    #[pyo3(signature = (*, copy = false))]
    fn decode<'py>(&self, py: Python<'py>, copy: bool) -> PyResult<Bound<'py, PyAny>> {
        decode(py, &self.get()?, copy)
    }

    /// Number of blobs.
    #[getter]
    fn blob_count(&self) -> PyResult<usize> {
        Ok(self.get()?.blob_count())
    }

    fn __len__(&self) -> PyResult<usize> {
        self.blob_count()
    }

    /// The unit's ring position (unique in its lane for the region's lifetime).
    #[getter]
    fn position(&self) -> PyResult<u64> {
        Ok(self.get()?.position())
    }

    /// The lane the unit came from (0 in an SPSC region).
    #[getter]
    fn lane(&self) -> PyResult<u32> {
        Ok(self.get()?.lane())
    }

    /// Ends the unit: drops this object's hold on it. The space returns to the writer once the
    /// views of it are gone too (so ending can never free memory a view still points at).
    fn end_unit(&self) -> PyResult<()> {
        self.unit
            .lock()
            .map_err(|_| PyRuntimeError::new_err("poisoned"))?
            .take();
        Ok(())
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __exit__(
        &self,
        _exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.end_unit()?;
        Ok(false)
    }
}
