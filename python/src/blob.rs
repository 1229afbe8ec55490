//! Buffers over shared memory: the object a memoryview (and a numpy array built on one) keeps
//! alive, which in turn keeps the bytes it points at alive.

use std::os::raw::{c_int, c_void};
use std::sync::Arc;

use pyo3::ffi;
use pyo3::prelude::*;
use shm_arena::OwnedUnit;

use crate::writer::Writer;

/// What keeps a blob's bytes valid.
pub(crate) enum Owner {
    /// A committed unit: it ends only when the last of these goes.
    Unit(#[allow(dead_code, reason = "held for its reference count")] Arc<OwnedUnit>),
    /// A unit being written: the writer (and with it the mapping) stays alive.
    Writer(#[allow(dead_code, reason = "held for its reference count")] Py<Writer>),
}

/// One blob of shared memory, exported through the buffer protocol. `memoryview(blob)` and
/// everything built on that view hold this object, and through it the unit (or the writer), so
/// the bytes cannot be reused while anything still points at them.
#[pyclass(module = "shm_arena", frozen)]
pub struct Blob {
    #[allow(dead_code, reason = "keeps the bytes valid while the blob lives")]
    owner: Owner,
    ptr: usize,
    len: usize,
    readonly: bool,
}

impl Blob {
    pub(crate) fn new(owner: Owner, ptr: *mut u8, len: usize, readonly: bool) -> Blob {
        Blob {
            owner,
            ptr: ptr as usize,
            len,
            readonly,
        }
    }

    /// A memoryview of `blob`.
    pub(crate) fn view<'py>(py: Python<'py>, blob: Blob) -> PyResult<Bound<'py, PyAny>> {
        let exporter = Bound::new(py, blob)?;
        Ok(pyo3::types::PyMemoryView::from(exporter.as_any())?.into_any())
    }
}

#[pymethods]
impl Blob {
    /// Exports the bytes: `PyBuffer_FillInfo` checks the flags (a writable request on a
    /// read-only blob raises `BufferError`) and makes the view hold this object.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let this = slf.get();
        let (ptr, len, readonly) = (this.ptr, this.len, this.readonly);
        let len = isize::try_from(len)
            .map_err(|_| pyo3::exceptions::PyBufferError::new_err("blob too large"))?;
        // SAFETY: `view` is the buffer CPython asks us to fill; `ptr..ptr + len` lies inside a
        // mapping that `owner` keeps alive for as long as this object lives, and the view holds
        // this object (FillInfo stores it, with a new reference, in `view.obj`).
        let filled = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                ptr as *mut c_void,
                len,
                c_int::from(readonly),
                flags,
            )
        };
        if filled == -1 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}

    fn __len__(&self) -> usize {
        self.len
    }

    /// Whether the blob's bytes may be written through its views.
    #[getter]
    fn readonly(&self) -> bool {
        self.readonly
    }
}
