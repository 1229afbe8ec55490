//! The crate's dynamic [`Value`] into Python objects: what `Reader.recv` and `Unit.decode`
//! return (docs/FORMAT.md, "Across languages").
//!
//! Leaves that were offloaded into blobs of their own come back as read-only views of shared
//! memory (memoryviews, numpy arrays) that keep the unit alive; leaves small enough to be inline
//! in the envelope are copied (they cost less to copy than to pin ring space for); `copy=True`
//! copies everything.

use std::ops::Range;
use std::sync::Arc;

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use shm_arena::codec::{RawArray, Value};
use shm_arena::OwnedUnit;

use crate::blob::{Blob, Owner};

/// The unit a value was decoded from, and where its envelope lies (inline leaves).
pub(crate) struct Source<'u> {
    unit: &'u Arc<OwnedUnit>,
    envelope: Range<usize>,
    copy: bool,
}

impl<'u> Source<'u> {
    /// `unit`'s value; its envelope is the last blob.
    pub(crate) fn new(unit: &'u Arc<OwnedUnit>, copy: bool) -> Source<'u> {
        let envelope = unit
            .blob_count()
            .checked_sub(1)
            .and_then(|last| unit.blob(last).ok())
            .map_or(0..0, |e| {
                let start = e.as_ptr() as usize;
                start..start + e.len()
            });
        Source {
            unit,
            envelope,
            copy,
        }
    }

    /// Whether `data` should come back as a view of shared memory: an offloaded leaf (not inside
    /// the envelope), borrowed, non-empty, and no copy asked for.
    fn shares(&self, data: &[u8]) -> bool {
        let start = data.as_ptr() as usize;
        !self.copy && !data.is_empty() && !self.envelope.contains(&start)
    }

    /// A read-only memoryview of `data`, which lies in the unit, keeping the unit alive.
    fn view<'py>(&self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        let owner = Owner::Unit(Arc::clone(self.unit));
        Blob::view(
            py,
            Blob::new(owner, data.as_ptr().cast_mut(), data.len(), true),
        )
    }
}

/// Converts `value` (decoded from `source`'s unit) into Python objects.
///
/// # Errors
/// `ValueError` for a map key Python cannot hash (a list, a dict); `ImportError` when the value
/// holds an array and numpy is not installed.
pub(crate) fn to_python<'py>(
    py: Python<'py>,
    value: &Value<'_>,
    source: &Source<'_>,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Unit | Value::None => py.None().into_bound(py),
        Value::Some(inner) => to_python(py, inner, source)?,
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Int(n) => n.into_pyobject(py)?.into_any(),
        Value::Uint(n) => n.into_pyobject(py)?.into_any(),
        Value::Int128(n) => n.into_pyobject(py)?.into_any(),
        Value::Uint128(n) => n.into_pyobject(py)?.into_any(),
        Value::F32(x) => f64::from(*x).into_pyobject(py)?.into_any(),
        Value::F64(x) => x.into_pyobject(py)?.into_any(),
        Value::Char(c) => c.into_pyobject(py)?.into_any(),
        Value::Str(s) => PyString::new(py, s).into_any(),
        Value::Bytes(b) => {
            if source.shares(b) {
                source.view(py, b)?
            } else {
                PyBytes::new(py, b).into_any()
            }
        }
        Value::Seq(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_python(py, item, source)?)?;
            }
            list.into_any()
        }
        Value::Map(entries) => {
            let dict = PyDict::new(py);
            for (k, v) in entries {
                let key = to_python(py, k, source)?;
                let value = to_python(py, v, source)?;
                dict.set_item(&key, value).map_err(|e| {
                    PyValueError::new_err(format!(
                        "the value has a map key Python cannot use ({}): {e}",
                        key.get_type()
                            .name()
                            .map_or_else(|_| "?".to_owned(), |n| n.to_string())
                    ))
                })?;
            }
            dict.into_any()
        }
        Value::Array(array) => ndarray(py, array, source)?,
        // A tag this build does not know was rejected by the decoder already.
        _ => {
            return Err(PyValueError::new_err(
                "the value holds a kind this version of shm_arena cannot convert",
            ))
        }
    })
}

static FROMBUFFER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static EMPTY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// A numpy array: a read-only view of shared memory for offloaded data, else an owned copy.
fn ndarray<'py>(
    py: Python<'py>,
    array: &RawArray<'_>,
    source: &Source<'_>,
) -> PyResult<Bound<'py, PyAny>> {
    let dtype = char::from(array.dtype().code()).to_string();
    let data = array.data();
    if !source.shares(data) {
        // An owned, writable copy like any array the caller made: allocated by numpy, filled
        // here (one Python call instead of a view, a cast and a copy).
        let empty = EMPTY.import(py, "numpy", "empty")?;
        let scalar = array.shape().is_empty();
        // A 0-d array exports no shape (the buffer wrapper refuses it): filled as one element,
        // then viewed without dimensions.
        let owned = if scalar {
            empty.call1(((1,), dtype))?
        } else {
            empty.call1((PyTuple::new(py, array.shape())?, dtype))?
        };
        if !data.is_empty() {
            let buffer = PyUntypedBuffer::get(&owned)?;
            if buffer.readonly() || !buffer.is_c_contiguous() || buffer.len_bytes() != data.len() {
                return Err(PyValueError::new_err(
                    "numpy.empty gave an unexpected buffer",
                ));
            }
            // SAFETY: the fresh array's C-contiguous, writable buffer holds exactly
            // `data.len()` bytes (checked above) and cannot overlap the unit.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    data.as_ptr(),
                    buffer.buf_ptr().cast::<u8>(),
                    data.len(),
                );
            }
        }
        if scalar {
            return owned.call_method1("reshape", (PyTuple::empty(py),));
        }
        return Ok(owned);
    }
    // numpy takes the buffer straight from the exporter, which stays the array's base.
    let owner = Owner::Unit(Arc::clone(source.unit));
    let blob = Bound::new(
        py,
        Blob::new(owner, data.as_ptr().cast_mut(), data.len(), true),
    )?;
    let frombuffer = FROMBUFFER.import(py, "numpy", "frombuffer")?;
    let flat = frombuffer.call1((blob, dtype))?;
    if array.shape().len() == 1 {
        Ok(flat)
    } else {
        flat.call_method1("reshape", (PyTuple::new(py, array.shape())?,))
    }
}
