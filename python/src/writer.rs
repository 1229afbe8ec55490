//! The writing side from Python: `Writer`, and `UnitWriter`, a unit being written (a context
//! manager whose exit commits, or aborts on an exception).

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyAny;
use shm_arena::codec::EncodeOptions;

use crate::blob::{Blob, Owner};
use crate::encode::Encoded;
use crate::errors::to_py;
use crate::wait::{blocking, seconds, SLICE};

/// Largest leaf bytes `send` copies while holding the GIL (a few microseconds of copying);
/// larger values release it first.
const HOLD_GIL_BYTES: usize = 64 * 1024;

/// A crate writer and the unit it is writing.
///
/// The unit borrows the writer, which lives in a box of its own: the box's contents never move
/// while the unit exists, `unit` is declared first so it is dropped first, and the writer is
/// touched directly only while no unit is open ([`WriterState::writer`]).
pub(crate) struct WriterState {
    unit: Option<shm_arena::UnitWriter<'static>>,
    writer: Option<Box<shm_arena::Writer>>,
    /// How long any one wait for space may take in all (`None`: no limit).
    timeout: Option<Duration>,
}

impl WriterState {
    pub(crate) fn new(writer: shm_arena::Writer, timeout: Option<Duration>) -> WriterState {
        WriterState {
            unit: None,
            writer: Some(Box::new(writer)),
            timeout,
        }
    }

    /// The writer, when no unit is open.
    pub(crate) fn writer(&mut self) -> PyResult<&mut shm_arena::Writer> {
        if self.unit.is_some() {
            return Err(PyRuntimeError::new_err(
                "a unit is open on this writer: commit or abort it first",
            ));
        }
        self.writer
            .as_deref_mut()
            .ok_or_else(|| PyRuntimeError::new_err("the writer is closed"))
    }

    /// The open unit.
    pub(crate) fn unit(&mut self) -> PyResult<&mut shm_arena::UnitWriter<'static>> {
        self.unit
            .as_mut()
            .ok_or_else(|| PyRuntimeError::new_err("no unit is open: call begin_unit first"))
    }

    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Begins a unit.
    pub(crate) fn begin(&mut self) -> shm_arena::Result<()> {
        let writer = self
            .writer()
            .map_err(|e| shm_arena::Error::InvalidArgument(e.to_string()))?;
        // Slices: a wait for space inside the unit returns every `SLICE` so that signals are
        // checked; the caller retries until its own timeout (see `push`).
        writer.set_timeout(Some(SLICE));
        let writer: *mut shm_arena::Writer = writer;
        // SAFETY: the writer is boxed and owned by this state; the box is neither dropped nor
        // moved out while `unit` is Some (`writer()` refuses, `close` ends the unit first), and
        // `unit` is dropped before `writer` (field order). Nothing else uses the writer while
        // the unit borrows it: every path to it goes through `writer()`.
        self.unit = Some(unsafe { &mut *writer }.begin_unit()?);
        Ok(())
    }

    /// Commits the open unit, waiting for room for its last parts up to the timeout.
    pub(crate) fn commit(&mut self) -> PyResult<shm_arena::Result<()>> {
        let mut unit = self
            .unit
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("no unit is open: call begin_unit first"))?;
        // A commit cannot be retried (on error nothing is published and the unit is gone), so
        // it gets the whole timeout; it waits only for the descriptor table or an empty
        // unit's record.
        unit.set_timeout(self.timeout);
        Ok(unit.commit())
    }

    /// Aborts the open unit, if any.
    pub(crate) fn abort(&mut self) {
        self.unit = None;
    }

    /// Ends the unit (aborted) and drops the writer: it detaches from the region.
    pub(crate) fn close(&mut self) {
        self.unit = None;
        self.writer = None;
    }
}

/// Locks a writer's state; a panic while it was held left it poisoned, which this reports.
pub(crate) fn lock(state: &Mutex<WriterState>) -> PyResult<MutexGuard<'_, WriterState>> {
    state
        .lock()
        .map_err(|_| PyRuntimeError::new_err("the writer failed earlier (poisoned)"))
}

/// The bytes of a buffer (bytes, bytearray, memoryview, numpy array...), C-contiguous.
pub(crate) fn bytes_of(data: &Bound<'_, PyAny>) -> PyResult<PyBuffer<u8>> {
    if let Ok(buffer) = PyBuffer::<u8>::get(data) {
        if buffer.is_c_contiguous() {
            return Ok(buffer);
        }
    }
    // Typed or strided buffers: as a flat view of bytes, if they are C-contiguous.
    let view = pyo3::types::PyMemoryView::from(data)?;
    if !view.getattr("c_contiguous")?.extract::<bool>()? {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "the buffer is not C-contiguous: copy it first (numpy.ascontiguousarray)",
        ));
    }
    PyBuffer::<u8>::get(&view.call_method1("cast", ("B",))?)
}

/// Appends a blob holding a copy of `buffer` to the open unit, with the GIL released, waiting
/// for space slice by slice up to the timeout. Returns the blob's index.
pub(crate) fn push(
    py: Python<'_>,
    state: &Mutex<WriterState>,
    buffer: &PyBuffer<u8>,
) -> PyResult<shm_arena::Result<usize>> {
    let (ptr, len) = (buffer.buf_ptr() as usize, buffer.len_bytes());
    let timeout = lock(state)?.timeout();
    blocking(py, timeout, |_| {
        let mut state = state.lock().map_err(|_| poisoned())?;
        let unit = state.unit.as_mut().ok_or_else(no_unit)?;
        // SAFETY: `buffer` (held by the caller for this whole call) exports `len` bytes at
        // `ptr`, C-contiguous (checked in `bytes_of`); Python code may change them meanwhile,
        // which only changes what is copied.
        let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
        unit.push(bytes)
    })
}

/// Commits the open unit with the GIL released.
pub(crate) fn commit(py: Python<'_>, state: &Mutex<WriterState>) -> PyResult<()> {
    py.detach(|| lock(state)?.commit())?.map_err(to_py)
}

fn poisoned() -> shm_arena::Error {
    shm_arena::Error::InvalidArgument("the writer failed earlier (poisoned)".into())
}

fn no_unit() -> shm_arena::Error {
    shm_arena::Error::InvalidArgument("no unit is open: call begin_unit first".into())
}

/// The writer of a region (`region.writer()`).
///
/// ```python
/// with writer.begin_unit() as unit:     # commits on exit, aborts on an exception
///     unit.push(header_bytes)           # one copy into shared memory
///     view = unit.blob_mut(4096)        # a writable memoryview of shared memory
///     view[:] = payload                 # fill it in place
/// ```
#[pyclass(module = "shm_arena", frozen)]
pub struct Writer {
    pub(crate) state: Mutex<WriterState>,
}

#[pymethods]
impl Writer {
    /// Begins a unit; use it as a context manager (`with writer.begin_unit() as unit:`), or
    /// call `commit()` / `abort()` on it.
    fn begin_unit(slf: Bound<'_, Self>) -> PyResult<UnitWriter> {
        lock(&slf.get().state)?.begin().map_err(to_py)?;
        Ok(UnitWriter {
            writer: slf.unbind(),
        })
    }

    /// Writes one unit made of copies of `blobs` (buffers) and commits it.
    fn write_unit(slf: Bound<'_, Self>, blobs: Vec<Bound<'_, PyAny>>) -> PyResult<()> {
        let buffers = blobs.iter().map(bytes_of).collect::<PyResult<Vec<_>>>()?;
        let py = slf.py();
        let state = &slf.get().state;
        lock(state)?.begin().map_err(to_py)?;
        for buffer in &buffers {
            if let Err(e) = push(py, state, buffer)? {
                lock(state)?.abort();
                return Err(to_py(e));
            }
        }
        commit(py, state)
    }

    /// Sends `value` as one unit in the envelope format (docs/FORMAT.md), readable by
    /// `Reader.recv` here and by `Unit::decode` in Rust: `None`, `bool`, `int` (64-bit),
    /// `float`, `str`, `bytes`, `bytearray`, `memoryview`, `list`, `tuple`, `dict` (str or int
    /// keys), numpy arrays of (u)int8..64, float32, float64 (made C-contiguous if they are not)
    /// and numpy scalars (as `.item()`). Byte strings and arrays of at least
    /// `offload_threshold` bytes are copied once into a blob of their own (a reader gets them
    /// as views of shared memory); smaller ones go inline in the envelope.
    ///
    /// Waits for space up to the writer's `timeout`, with the GIL released. Raises `TypeError`
    /// naming an unsupported object's type and where it is in the value, `OverflowError` for
    /// an int beyond 64 bits, `ValueError` for nesting deeper than 128 levels or a unit larger
    /// than `max_unit`; nothing is sent then.
    #[pyo3(signature = (value, *, offload_threshold = 4096))]
    fn send(
        &self,
        py: Python<'_>,
        value: &Bound<'_, PyAny>,
        offload_threshold: usize,
    ) -> PyResult<()> {
        let encoded = Encoded::new(value)?;
        let options = EncodeOptions::with_offload_threshold(offload_threshold);
        // Small values: one attempt without releasing the GIL (cheaper than releasing it),
        // which copies little while holding it.
        if encoded.leaf_bytes() <= HOLD_GIL_BYTES {
            match lock(&self.state)?
                .writer()?
                .try_send_with(encoded.value(), &options)
            {
                Err(shm_arena::Error::WouldBlock(_)) => {}
                other => return other.map_err(to_py),
            }
        }
        let timeout = lock(&self.state)?.timeout();
        let value = encoded.value();
        blocking(py, timeout, |slice| {
            let mut state = self.state.lock().map_err(|_| poisoned())?;
            let writer = state
                .writer()
                .map_err(|e| shm_arena::Error::InvalidArgument(e.to_string()))?;
            // Slices, so that signals are checked; a value cut short by a slice's end is
            // aborted and sent again whole.
            writer.set_timeout(Some(slice));
            writer.send_with(value, &options)
        })?
        .map_err(to_py)
    }

    /// How long any one wait for space may take, in seconds (`None`: as long as a reader
    /// lives).
    #[getter]
    fn get_timeout(&self) -> PyResult<Option<f64>> {
        Ok(lock(&self.state)?.timeout.map(|t| t.as_secs_f64()))
    }

    #[setter]
    fn set_timeout(&self, timeout: Option<f64>) -> PyResult<()> {
        lock(&self.state)?.timeout = seconds(timeout)?;
        Ok(())
    }

    /// The largest unit the ring accepts, in bytes (half its capacity).
    #[getter]
    fn max_unit(&self) -> PyResult<u64> {
        Ok(lock(&self.state)?.writer()?.max_unit())
    }

    /// Detaches the writer (aborting an open unit): readers drain, then see the ring closed.
    fn close(&self) -> PyResult<()> {
        lock(&self.state)?.close();
        Ok(())
    }
}

/// A unit being written (`writer.begin_unit()`): a context manager whose exit commits it, or
/// aborts it when the block raised.
#[pyclass(module = "shm_arena", frozen)]
pub struct UnitWriter {
    writer: Py<Writer>,
}

#[pymethods]
impl UnitWriter {
    /// Appends a blob holding a copy of `data` (any C-contiguous buffer: bytes, bytearray,
    /// memoryview, numpy array); returns its index. Waits for space up to the writer's
    /// timeout, with the GIL released.
    fn push(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        let buffer = bytes_of(data)?;
        push(py, &self.writer.get().state, &buffer)?.map_err(to_py)
    }

    /// Appends a blob of `n` bytes and returns a writable memoryview of it in shared memory,
    /// to fill in place (e.g. `numpy.frombuffer(view, dtype)[:] = ...`). Its contents are
    /// unspecified until written. Use the view only until the unit is committed.
    fn blob_mut<'py>(&self, py: Python<'py>, n: usize) -> PyResult<Bound<'py, PyAny>> {
        let state = &self.writer.get().state;
        let timeout = lock(state)?.timeout();
        let (ptr, len) = blocking(py, timeout, |_| {
            let mut state = state.lock().map_err(|_| poisoned())?;
            let unit = state.unit.as_mut().ok_or_else(no_unit)?;
            let blob = unit.blob_mut(n)?;
            Ok((blob.as_mut_ptr() as usize, blob.len()))
        })?
        .map_err(to_py)?;
        let owner = Owner::Writer(self.writer.clone_ref(py));
        Blob::view(py, Blob::new(owner, ptr as *mut u8, len, false))
    }

    /// Number of blobs so far.
    #[getter]
    fn blob_count(&self) -> PyResult<usize> {
        Ok(lock(&self.writer.get().state)?.unit()?.blob_count())
    }

    /// The unit's ring position (`Unit.position` on the reading side).
    #[getter]
    fn position(&self) -> PyResult<u64> {
        Ok(lock(&self.writer.get().state)?.unit()?.position())
    }

    /// Publishes the unit.
    fn commit(&self, py: Python<'_>) -> PyResult<()> {
        commit(py, &self.writer.get().state)
    }

    /// Drops the unit unpublished; its space is reused.
    fn abort(&self) -> PyResult<()> {
        lock(&self.writer.get().state)?.abort();
        Ok(())
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Commits the unit if the block succeeded, aborts it if it raised (the exception goes on).
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if exc_type.is_some() {
            self.abort()?;
        } else {
            self.commit(py)?;
        }
        Ok(false)
    }
}
