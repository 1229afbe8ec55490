//! `Region` from Python: the shared mapping writers and readers attach to.

use std::sync::Mutex;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use shm_arena::{Backing, RegionOptions};

use crate::errors::to_py;
use crate::reader::Reader;
use crate::subscriber::{parse_policy, Subscriber};
use crate::wait::seconds;
use crate::writer::{Writer, WriterState};

/// One shared mapping: a header and a ring of `capacity` bytes (a power of two, at least
/// 4096). `backing` is `"memfd"` (the default: no name anywhere, inherited by forked
/// children), `"named"` (a random POSIX shm name, for unrelated processes) or `"anonymous"`
/// (this process's threads only).
///
/// `subscribers=N` makes a broadcast region: one writer, up to `N` subscribers
/// (`region.subscriber()`), each of which sees every unit; without it, each unit goes to the
/// one reader (`region.reader()`).
///
/// `prefault=True` populates every page of the region now, and in every process that opens
/// it, instead of faulting them in during the ring's first lap (the constructor then pays for
/// zeroing the whole ring). Default: off.
///
/// ```python
/// region = shm_arena.Region(1 << 20)
/// writer, reader = region.writer(), region.reader()
///
/// news = shm_arena.Region(1 << 20, subscribers=4)
/// a, b = news.subscriber(), news.subscriber("leaky")
/// ```
#[pyclass(module = "shm_arena", frozen)]
pub struct Region {
    pub(crate) inner: shm_arena::Region,
}

#[pymethods]
impl Region {
    #[new]
    #[pyo3(signature = (capacity, *, backing = "memfd", subscribers = None, prefault = false))]
    fn new(
        capacity: u64,
        backing: &str,
        subscribers: Option<u32>,
        prefault: bool,
    ) -> PyResult<Region> {
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
        let mut options = RegionOptions::new(capacity)
            .backing(backing)
            .prefault(prefault);
        if let Some(n) = subscribers {
            options = options.broadcast(n);
        }
        let inner = shm_arena::Region::create_with(options).map_err(to_py)?;
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

    /// Attaches this process's reader (not on a broadcast region: use `subscriber`).
    fn reader(&self) -> PyResult<Reader> {
        let reader = self.inner.reader().map_err(to_py)?;
        Ok(Reader {
            inner: Mutex::new(reader),
        })
    }

    /// Attaches a subscriber of a broadcast region (`Region(..., subscribers=N)`): it sees
    /// every unit committed from now on. `policy` is `"backpressure"` (the default: the writer
    /// waits for it, it misses nothing) or `"leaky"` (the writer never waits for its pace;
    /// when lapped, its next call raises `LaggedError` with the number of units it missed).
    ///
    /// Raises `RoleTakenError` when all `N` slots are held by live subscribers, `ValueError`
    /// for an unknown policy or on a region that is not a broadcast one.
    ///
    /// `busy_poll=True` makes its waits poll without sleeping: a CPU for as long as it waits,
    /// for the lowest latency when every busy subscriber has a CPU of its own.
    #[pyo3(signature = (policy = "backpressure", *, busy_poll = false))]
    fn subscriber(&self, policy: &str, busy_poll: bool) -> PyResult<Subscriber> {
        let mut subscriber = self
            .inner
            .subscriber(parse_policy(policy)?)
            .map_err(to_py)?;
        subscriber.set_busy_poll(busy_poll);
        Ok(Subscriber {
            inner: Mutex::new(subscriber),
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
