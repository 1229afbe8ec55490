//! Python objects into the crate's dynamic [`Value`]: what `Writer.send` encodes (docs/FORMAT.md,
//! "Across languages"). Nothing is copied here: strings, byte strings and array data are
//! borrowed from the objects, which [`Encoded`] keeps alive (and exported) until the value has
//! been written into the ring, where each large leaf is copied once.

use std::borrow::Cow;
use std::ffi::CStr;
use std::fmt::Write as _;

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyMemoryView, PyString, PyTuple,
};
use shm_arena::codec::{Dtype, RawArray, Value, MAX_DEPTH};

/// A value borrowing from Python objects, and what keeps those borrows valid.
pub(crate) struct Encoded {
    /// Borrows (`'static` only inside this struct) from `held`; never handed out for longer
    /// than `&self`.
    value: Value<'static>,
    held: Held,
}

/// The objects and buffer exports the value borrows from.
#[derive(Default)]
struct Held {
    /// Immutable objects (str, bytes) whose contents the value points at.
    objects: Vec<Py<PyAny>>,
    /// Buffer exports (bytearray, memoryview, numpy arrays): while exported, a buffer cannot be
    /// resized or freed (its bytes may still be written by other Python threads, which only
    /// changes what is copied).
    buffers: Vec<PyUntypedBuffer>,
    /// Bytes of byte strings and array data in the value.
    leaf_bytes: usize,
}

impl Encoded {
    /// Borrows `obj` as a value.
    ///
    /// # Errors
    /// `TypeError` naming the type and where it is for anything but the supported types,
    /// `OverflowError` for an int outside 64 bits, `ValueError` beyond the nesting limit.
    pub(crate) fn new(obj: &Bound<'_, PyAny>) -> PyResult<Encoded> {
        let mut held = Held::default();
        match convert(obj, &mut held, 0) {
            Ok(value) => Ok(Encoded { value, held }),
            Err(fault) => Err(fault.into_py_err()),
        }
    }

    /// The value, for as long as the objects it borrows from are held.
    pub(crate) fn value(&self) -> &Value<'_> {
        &self.value
    }

    /// Bytes of byte strings and array data in the value (what offloading would copy).
    pub(crate) fn leaf_bytes(&self) -> usize {
        self.held.leaf_bytes
    }
}

/// Where an unsupported object was: the steps from the root, innermost last once reversed.
enum Step {
    Index(usize),
    Key(String),
}

enum FaultKind {
    Unsupported(String),
    Overflow(String),
    TooDeep,
    Key(String),
    Dtype(String),
    Python(PyErr),
}

/// A conversion failure and its path (steps pushed while unwinding, so innermost first).
struct Fault {
    kind: FaultKind,
    path: Vec<Step>,
}

impl Fault {
    fn new(kind: FaultKind) -> Fault {
        Fault {
            kind,
            path: Vec::new(),
        }
    }

    fn at(mut self, step: Step) -> Fault {
        self.path.push(step);
        self
    }

    fn into_py_err(self) -> PyErr {
        let mut at = String::from("value");
        // A path as deep as the nesting limit is shown by its ends.
        let len = self.path.len();
        let elide = len > 12;
        for (n, step) in self.path.iter().rev().enumerate() {
            if elide && n == 6 {
                at.push_str("...");
            }
            if elide && (6..len - 4).contains(&n) {
                continue;
            }
            match step {
                Step::Index(i) => {
                    let _ = write!(at, "[{i}]");
                }
                Step::Key(k) => {
                    let _ = write!(at, "[{k}]");
                }
            }
        }
        match self.kind {
            FaultKind::Unsupported(ty) => PyTypeError::new_err(format!(
                "cannot send an object of type {ty} (at {at}): send takes None, bool, int, \
                 float, str, bytes, bytearray, memoryview, list, tuple, dict and numpy arrays \
                 (convert other objects first; nothing is pickled)"
            )),
            FaultKind::Overflow(repr) => PyOverflowError::new_err(format!(
                "int {repr} (at {at}) does not fit in 64 bits (signed, or unsigned if positive)"
            )),
            FaultKind::TooDeep => PyValueError::new_err(format!(
                "the value nests deeper than {MAX_DEPTH} levels (at {at}); a list or dict that \
                 contains itself does too"
            )),
            FaultKind::Key(ty) => PyTypeError::new_err(format!(
                "dict key of type {ty} (at {at}): keys must be str or int"
            )),
            FaultKind::Dtype(dtype) => PyTypeError::new_err(format!(
                "numpy array of dtype {dtype} (at {at}): send takes arrays of uint8/16/32/64, \
                 int8/16/32/64, float32 and float64 in native byte order"
            )),
            FaultKind::Python(err) => err,
        }
    }
}

impl From<PyErr> for Fault {
    fn from(err: PyErr) -> Fault {
        Fault::new(FaultKind::Python(err))
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .fully_qualified_name()
        .map_or_else(|_| "?".to_owned(), |n| n.to_string())
}

/// Extends a borrow of bytes that `held` keeps valid to `'static`.
///
/// # Safety
/// `bytes` must stay valid and unmoved while the [`Held`] it was registered in lives.
unsafe fn extend<T: ?Sized>(bytes: &T) -> &'static T {
    // SAFETY: the caller guarantees the referent outlives the `Encoded` holding the value,
    // and `Encoded::value` never lends it for longer than `&self`.
    unsafe { &*(bytes as *const T) }
}

fn convert(obj: &Bound<'_, PyAny>, held: &mut Held, depth: usize) -> Result<Value<'static>, Fault> {
    // The common types first, exact checks before subclass checks where it matters (bool is an
    // int subclass).
    if obj.is_none() {
        return Ok(Value::None);
    }
    if let Ok(b) = obj.cast_exact::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        let text = s.to_str()?;
        // SAFETY: a str's UTF-8 buffer lives as long as the str, which `held` keeps.
        let text = unsafe { extend(text) };
        held.objects.push(s.clone().into_any().unbind());
        return Ok(Value::Str(Cow::Borrowed(text)));
    }
    if obj.is_instance_of::<PyInt>() {
        return int(obj);
    }
    if let Ok(x) = obj.cast::<PyFloat>() {
        return Ok(Value::F64(x.value()));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let depth = enter(depth)?;
        let mut entries = Vec::with_capacity(d.len());
        for (k, v) in d.iter() {
            let key = if let Ok(s) = k.cast::<PyString>() {
                convert(s.as_any(), held, depth)?
            } else if k.is_instance_of::<PyInt>() && !k.is_instance_of::<PyBool>() {
                int(&k)?
            } else {
                return Err(Fault::new(FaultKind::Key(type_name(&k))));
            };
            let value = convert(&v, held, depth).map_err(|f| f.at(Step::Key(key_repr(&k))))?;
            entries.push((key, value));
        }
        return Ok(Value::Map(entries));
    }
    if let Ok(l) = obj.cast::<PyList>() {
        let depth = enter(depth)?;
        let mut items = Vec::with_capacity(l.len());
        // By index, re-checking the length: other code may shrink the list meanwhile only if it
        // runs, and converting runs none, but a list is mutable, so do not trust an iterator's
        // snapshot for borrows.
        let mut i = 0;
        while i < l.len() {
            let item = l.get_item(i)?;
            items.push(convert(&item, held, depth).map_err(|f| f.at(Step::Index(i)))?);
            i += 1;
        }
        return Ok(Value::Seq(items));
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        let depth = enter(depth)?;
        let mut items = Vec::with_capacity(t.len());
        for (i, item) in t.iter().enumerate() {
            items.push(convert(&item, held, depth).map_err(|f| f.at(Step::Index(i)))?);
        }
        return Ok(Value::Seq(items));
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        // SAFETY: a bytes object is immutable and lives as long as `held` keeps it.
        let data = unsafe { extend(b.as_bytes()) };
        held.objects.push(b.clone().into_any().unbind());
        held.leaf_bytes += data.len();
        return Ok(Value::Bytes(Cow::Borrowed(data)));
    }
    if obj.is_instance_of::<PyByteArray>() || obj.is_instance_of::<PyMemoryView>() {
        return byte_buffer(obj, held);
    }
    numpy_object(obj, held, depth)
}

fn enter(depth: usize) -> Result<usize, Fault> {
    if depth >= MAX_DEPTH {
        return Err(Fault::new(FaultKind::TooDeep));
    }
    Ok(depth + 1)
}

fn key_repr(key: &Bound<'_, PyAny>) -> String {
    key.repr()
        .map_or_else(|_| "?".to_owned(), |r| r.to_string())
}

fn int(obj: &Bound<'_, PyAny>) -> Result<Value<'static>, Fault> {
    if let Ok(n) = obj.extract::<i64>() {
        return Ok(Value::Int(n));
    }
    if let Ok(n) = obj.extract::<u64>() {
        return Ok(Value::Uint(n));
    }
    Err(Fault::new(FaultKind::Overflow(key_repr(obj))))
}

/// A bytearray or memoryview: its bytes (C-contiguous), as a byte string.
fn byte_buffer(obj: &Bound<'_, PyAny>, held: &mut Held) -> Result<Value<'static>, Fault> {
    let buffer = PyUntypedBuffer::get(obj)?;
    if !buffer.is_c_contiguous() {
        return Err(PyValueError::new_err(
            "a memoryview that is not C-contiguous cannot be sent: copy it first (bytes(view))",
        )
        .into());
    }
    Ok(Value::Bytes(Cow::Borrowed(held.hold(buffer))))
}

impl Held {
    /// Keeps `buffer` exported as long as the value lives and returns its bytes, which the
    /// caller checked to be C-contiguous.
    fn hold(&mut self, buffer: PyUntypedBuffer) -> &'static [u8] {
        debug_assert!(buffer.is_c_contiguous());
        let len = buffer.len_bytes();
        let data: &'static [u8] = if len == 0 {
            &[]
        } else {
            // SAFETY: a C-contiguous export covers `len` bytes at `buf_ptr`; `self` keeps the
            // export (so the buffer cannot be resized or freed) as long as the value lives.
            unsafe { std::slice::from_raw_parts(buffer.buf_ptr().cast::<u8>(), len) }
        };
        self.buffers.push(buffer);
        self.leaf_bytes += len;
        data
    }
}

/// numpy's types, looked up once numpy is imported (by whoever made the object).
struct Numpy {
    module: Py<PyAny>,
    ndarray: Py<PyAny>,
    generic: Py<PyAny>,
}

static NUMPY: PyOnceLock<Numpy> = PyOnceLock::new();

impl Numpy {
    /// numpy, if this process imported it: without it, nothing can be a numpy object, and
    /// sending must not import it just to find out.
    fn get(py: Python<'_>) -> PyResult<Option<&'static Numpy>> {
        if let Some(numpy) = NUMPY.get(py) {
            return Ok(Some(numpy));
        }
        let modules = py.import("sys")?.getattr("modules")?;
        let Ok(module) = modules.get_item("numpy") else {
            return Ok(None);
        };
        let numpy = Numpy {
            ndarray: module.getattr("ndarray")?.unbind(),
            generic: module.getattr("generic")?.unbind(),
            module: module.unbind(),
        };
        Ok(Some(NUMPY.get_or_init(py, || numpy)))
    }
}

/// numpy arrays (made C-contiguous) and numpy scalars (as the Python scalar `.item()` gives);
/// anything else is unsupported.
fn numpy_object(
    obj: &Bound<'_, PyAny>,
    held: &mut Held,
    depth: usize,
) -> Result<Value<'static>, Fault> {
    let py = obj.py();
    let unsupported = || Fault::new(FaultKind::Unsupported(type_name(obj)));
    let Some(numpy) = Numpy::get(py)? else {
        return Err(unsupported());
    };
    if !obj.is_instance(numpy.ndarray.bind(py))? {
        if obj.is_instance(numpy.generic.bind(py))? {
            let item = obj.call_method0("item")?;
            if item.is_instance(numpy.generic.bind(py))? {
                return Err(unsupported());
            }
            return convert(&item, held, depth);
        }
        return Err(unsupported());
    }
    let dtype_fault = || {
        let name = obj
            .getattr("dtype")
            .and_then(|d| d.str())
            .map_or_else(|_| "?".to_owned(), |s| s.to_string());
        Fault::new(FaultKind::Dtype(name))
    };
    // The common case in one step: a C-contiguous array exports its bytes as they are. A 0-d
    // array exports no shape (the buffer wrapper refuses it), a strided one is not contiguous:
    // those go the slow way.
    if let Ok(buffer) = PyUntypedBuffer::get(obj) {
        if buffer.is_c_contiguous() {
            let dtype = dtype_of(buffer.format(), buffer.item_size()).ok_or_else(dtype_fault)?;
            let shape = buffer.shape().iter().map(|&d| d as u64).collect();
            return array(dtype, shape, held.hold(buffer));
        }
    }
    let module = numpy.module.bind(py);
    // A 0-d array is exported as one element (whatever `ascontiguousarray` makes of it) and
    // sent with an empty shape.
    let scalar = obj.getattr("ndim")?.extract::<usize>()? == 0;
    let mut exported = module.call_method1("ascontiguousarray", (obj,))?;
    if scalar {
        exported = exported.call_method1("reshape", (1,))?;
    }
    let buffer = PyUntypedBuffer::get(&exported).map_err(|_| dtype_fault())?;
    let dtype = dtype_of(buffer.format(), buffer.item_size()).ok_or_else(dtype_fault)?;
    if !buffer.is_c_contiguous() {
        return Err(PyValueError::new_err("numpy did not make the array C-contiguous").into());
    }
    let shape = if scalar {
        Vec::new()
    } else {
        buffer.shape().iter().map(|&d| d as u64).collect()
    };
    array(dtype, shape, held.hold(buffer))
}

fn array(dtype: Dtype, shape: Vec<u64>, data: &'static [u8]) -> Result<Value<'static>, Fault> {
    let raw =
        RawArray::new(dtype, shape, data).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(Value::Array(raw))
}

/// The dtype of a buffer's struct-module format (native or little-endian byte order only; the
/// integer letters' sizes vary by platform, so the item size decides).
fn dtype_of(format: &CStr, item_size: usize) -> Option<Dtype> {
    let format = format.to_bytes();
    let code = match format {
        [b'@' | b'=' | b'<', code] | [code] => *code,
        _ => return None,
    };
    let dtype = match (code, item_size) {
        (b'f', 4) => Dtype::F32,
        (b'd', 8) => Dtype::F64,
        (b'b' | b'h' | b'i' | b'l' | b'q' | b'n', n) => match n {
            1 => Dtype::I8,
            2 => Dtype::I16,
            4 => Dtype::I32,
            8 => Dtype::I64,
            _ => return None,
        },
        (b'B' | b'H' | b'I' | b'L' | b'Q' | b'N', n) => match n {
            1 => Dtype::U8,
            2 => Dtype::U16,
            4 => Dtype::U32,
            8 => Dtype::U64,
            _ => return None,
        },
        _ => return None,
    };
    Some(dtype)
}
