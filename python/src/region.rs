//! `Region` from Python: the shared mapping writers and readers attach to.

use std::sync::Mutex;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use shm_arena::{Backing, RegionOptions};

use crate::errors::to_py;
use crate::reader::Reader;
use crate::wait::seconds;
use crate::writer::{Writer, WriterState};

/// One shared mapping: a header and a ring of `capacity` bytes (a power of two, at least
/// 4096). `backing` is `"memfd"` (the default: no name anywhere, inherited by forked
/// children), `"named"` (a random POSIX shm name, for unrelated processes) or `"anonymous"`
/// (this process's threads only).
///
/// ```python
/// region = shm_arena.Region(1 << 20)
/// writer, reader = region.writer(), region.reader()
/// ```
#[pyclass(module = "shm_arena", frozen)]
pub struct Region {
    pub(crate) inner: shm_arena::Region,
}

#[pymethods]
impl Region {
    #[new]
    #[pyo3(signature = (capacity, *, backing = "memfd"))]
    fn new(capacity: u64, backing: &str) -> PyResult<Region> {
        let backing = match backing {
            "memfd" => Backing::Memfd,
            "named" => Backing::Named,
            "anonymous" => Backing::Anonymous,
            other => {
                return Err(PyValueError::new_err(format!(
                    "backing {other:?}: expected \"memfd\", \"named\" or \"anonymous\""
                )))
            }
        };
        let inner = shm_arena::Region::create_with(RegionOptions::new(capacity).backing(backing))
            .map_err(to_py)?;
        Ok(Region { inner })
    }

    /// Opens a region another process created with `backing="named"`, by its name.
    #[staticmethod]
    fn open_name(name: &str) -> PyResult<Region> {
        let inner = shm_arena::Region::open_name(name).map_err(to_py)?;
        Ok(Region { inner })
    }

    /// Attaches this process's writer. Its waits for space last at most `timeout` seconds
    /// each (`None`: as long as a reader lives).
    #[pyo3(signature = (*, timeout = Some(60.0)))]
    fn writer(&self, timeout: Option<f64>) -> PyResult<Writer> {
        let writer = self.inner.writer().map_err(to_py)?;
        Ok(Writer {
            state: Mutex::new(WriterState::new(writer, seconds(timeout)?)),
        })
    }

    /// Attaches this process's reader.
    fn reader(&self) -> PyResult<Reader> {
        let reader = self.inner.reader().map_err(to_py)?;
        Ok(Reader {
            inner: Mutex::new(reader),
        })
    }

    /// Ring size in bytes.
    #[getter]
    fn capacity(&self) -> u64 {
        self.inner.capacity()
    }

    /// The POSIX shm name of a named region this process created, else `None`.
    #[getter]
    fn name(&self) -> Option<&str> {
        self.inner.name()
    }

    /// Ends every wait on the region, in every process, for good: writers and readers get
    /// `ShutdownError` (readers after draining what was committed).
    fn shutdown(&self) {
        self.inner.shutdown();
    }
}
