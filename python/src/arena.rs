//! `Arena`: a zero-copy backend for SPDL's `iterate_in_subprocess(fn, arena=...)`, on the
//! crate's SPSC ring.
//!
//! SPDL's worker brackets each item with `begin_unit` / `commit_unit` and copies every large
//! leaf in with `write_binary`, which answers an *offset*; the parent gets the item's envelope
//! through SPDL's queue and asks `read_binary(offset, nbytes)` for each leaf, then
//! `end_unit(span, pinned)`. Here a unit is one ring unit: `commit_unit` answers the unit's
//! ring position (the "span" SPDL carries back, a u64), and a leaf's offset is that position
//! shifted left by 32 bits plus the leaf's blob index (a Python int, of any size). The reader
//! takes ring units in order as their leaves are asked for (SPDL's queue delivers envelopes in
//! commit order) and keeps them until `end_unit`.
//!
//! Views are writable memoryviews of shared memory over an exporter that holds the unit: the
//! unit's space returns when `end_unit` was called *and* the last view (or numpy array, torch
//! tensor... built on one) is gone. So a consumer that keeps items across passes sees them
//! intact, and one that keeps more than the capacity makes the producer wait, then fail with
//! `BufferError` after the timeout.
//!
//! Processes: the ring is a memfd. A forked worker inherits it. A spawned or forkserver worker
//! gets the arena pickled: (creator's pid, descriptor number), and opens
//! `/proc/<creator>/fd/<n>` when it first needs the ring (the creator keeps the descriptor open
//! while it holds the arena). Nothing ever appears in `/dev/shm`, so nothing is left there
//! whichever process is killed; `unlink` has nothing to remove.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyAny, PyTuple};
use shm_arena::{OwnedUnit, Region, RegionOptions};

use crate::blob::{Blob, Owner};
use crate::errors::{arena_full, to_py, CorruptError};
use crate::take::next_unit;
use crate::wait::seconds;
use crate::writer::{bytes_of, commit, lock, push, WriterState};

/// Where a process that does not hold the ring yet finds it.
#[derive(Debug, Clone, Copy)]
struct Source {
    pid: u32,
    fd: i32,
}

struct ArenaState {
    /// This process's handle on the ring (`None`: not attached yet, or closed).
    region: Option<Region>,
    source: Source,
    closed: bool,
}

/// A shared-memory arena for SPDL's `iterate_in_subprocess(fn, ..., arena=Arena(capacity))`:
/// items' large leaves (numpy arrays, bytes, tensors) are copied once into shared memory by
/// the worker and handed to the parent as zero-copy, writable views.
///
/// `capacity` is rounded up to a power of two (at least 4096); one item may use at most half
/// of it. `timeout`: how long the worker waits for space (the consumer holding units) before
/// failing with `BufferError`. `prefault` (default on, as for the Rust worker's `Options`):
/// the ring's pages are populated when the arena is created and mapped populated in the worker,
/// so the first items do not page-fault their way through the first lap; it costs the ring's
/// memory and the time to zero it up front, in the constructor. Off: pages come as first
/// touched.
///
/// ```python
/// from spdl.pipeline import iterate_in_subprocess
/// import shm_arena
///
/// for item in iterate_in_subprocess(make_items, arena=shm_arena.Arena(256 << 20)):
///     train(item["image"])   # a numpy array viewing shared memory
/// ```
#[pyclass(module = "shm_arena", frozen)]
pub struct Arena {
    capacity: u64,
    timeout: Option<Duration>,
    state: Mutex<ArenaState>,
}

impl Arena {
    fn lock(&self) -> PyResult<std::sync::MutexGuard<'_, ArenaState>> {
        self.state
            .lock()
            .map_err(|_| PyRuntimeError::new_err("the arena failed earlier (poisoned)"))
    }

    /// This process's ring handle, opening it from the creator when needed.
    fn with_region<T>(&self, f: impl FnOnce(&Region) -> PyResult<T>) -> PyResult<T> {
        let mut state = self.lock()?;
        if state.closed {
            return Err(PyRuntimeError::new_err("the arena is closed"));
        }
        if state.region.is_none() {
            let Source { pid, fd } = state.source;
            let path = format!("/proc/{pid}/fd/{fd}");
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| {
                    PyRuntimeError::new_err(format!(
                        "opening the arena's memory through {path} (the process that created \
                         the arena must still hold it): {e}"
                    ))
                })?;
            let region = Region::open_fd(OwnedFd::from(file)).map_err(to_py)?;
            state.region = Some(region);
        }
        f(state.region.as_ref().expect("set above"))
    }
}

#[pymethods]
impl Arena {
    #[new]
    #[pyo3(signature = (capacity, *, timeout = Some(60.0), prefault = true))]
    fn new(capacity: u64, timeout: Option<f64>, prefault: bool) -> PyResult<Arena> {
        let capacity = capacity
            .max(shm_arena::MIN_CAPACITY)
            .checked_next_power_of_two()
            .filter(|&c| c <= shm_arena::MAX_CAPACITY)
            .ok_or_else(|| PyValueError::new_err(format!("capacity {capacity} is too large")))?;
        let region =
            Region::create_with(RegionOptions::new(capacity).prefault(prefault)).map_err(to_py)?;
        let fd = region
            .fd()
            .map(|fd| fd.as_raw_fd())
            .ok_or_else(|| PyRuntimeError::new_err("a memfd region has a descriptor"))?;
        Ok(Arena {
            capacity,
            timeout: seconds(timeout)?,
            state: Mutex::new(ArenaState {
                region: Some(region),
                source: Source {
                    pid: std::process::id(),
                    fd,
                },
                closed: false,
            }),
        })
    }

    /// Pickling (spawn and forkserver workers): the capacity, the timeout and where the ring
    /// is; the copy opens it lazily.
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let source = self.lock()?.source;
        let attach = py.import("shm_arena._native")?.getattr("_attach_arena")?;
        let timeout = self.timeout.map(|t| t.as_secs_f64());
        let args = (self.capacity, timeout, source.pid, source.fd).into_pyobject(py)?;
        PyTuple::new(py, [attach, args.into_any()])
    }

    /// Ring size in bytes.
    #[getter]
    fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The writer endpoint, in the worker (SPDL calls it once there).
    fn open_writer(&self) -> PyResult<ArenaWriter> {
        let writer = self.with_region(|r| r.writer().map_err(to_py))?;
        Ok(ArenaWriter {
            state: Mutex::new(WriterState::new(writer, self.timeout)),
        })
    }

    /// The reader endpoint, in the parent (SPDL calls it once there).
    fn open_reader(&self) -> PyResult<ArenaReader> {
        let reader = self.with_region(|r| r.reader().map_err(to_py))?;
        Ok(ArenaReader {
            reader: Mutex::new(reader),
            held: Mutex::new(Held::default()),
            timeout: self.timeout,
            zero_copy: true,
        })
    }

    /// Drops this process's handle on the ring. Views handed out stay valid (they hold their
    /// units, and the units the mapping).
    fn close(&self) -> PyResult<()> {
        let mut state = self.lock()?;
        state.region = None;
        state.closed = true;
        Ok(())
    }

    /// Nothing to remove: the ring is a memfd, which has no name and goes with its last
    /// handle. Kept for SPDL's protocol.
    fn unlink(&self) {}

    /// Wakes a worker blocked for space (SPDL calls it at teardown): its waits end with
    /// `ShutdownError`, for good.
    fn shutdown_arena(&self) -> PyResult<()> {
        if let Some(region) = self.lock()?.region.as_ref() {
            region.shutdown();
        }
        Ok(())
    }
}

/// Re-creates an arena from its pickled state (see `Arena.__reduce__`).
#[pyfunction]
pub fn _attach_arena(capacity: u64, timeout: Option<f64>, pid: u32, fd: i32) -> PyResult<Arena> {
    Ok(Arena {
        capacity,
        timeout: seconds(timeout)?,
        state: Mutex::new(ArenaState {
            region: None,
            source: Source { pid, fd },
            closed: false,
        }),
    })
}

/// The worker's end of an [`Arena`] (SPDL's `ArenaWriterProtocol`).
#[pyclass(module = "shm_arena", frozen)]
pub struct ArenaWriter {
    state: Mutex<WriterState>,
}

impl ArenaWriter {
    /// The open unit's ring position.
    fn position(&self) -> PyResult<u64> {
        Ok(lock(&self.state)?.unit()?.position())
    }
}

#[pymethods]
impl ArenaWriter {
    /// A new pass: nothing to do (units of earlier passes stay with their readers).
    fn reset(&self) {}

    /// Opens a unit for one item.
    fn begin_unit(&self) -> PyResult<()> {
        lock(&self.state)?.begin().map_err(to_py)?;
        Ok(())
    }

    /// Copies `data` into the open unit (the one copy; the GIL is released meanwhile) and
    /// returns `(offset, nbytes)` for the reader. Raises `BufferError` if no room comes within
    /// the arena's timeout.
    fn write_binary(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<(u128, usize)> {
        let buffer = bytes_of(data)?;
        let nbytes = buffer.len_bytes();
        let position = self.position()?;
        let index = push(py, &self.state, &buffer)?.map_err(|e| arena_full(e, nbytes))?;
        let index = u32::try_from(index)
            .map_err(|_| PyValueError::new_err("more than 2^32 binaries in one item"))?;
        Ok(((u128::from(position) << 32) | u128::from(index), nbytes))
    }

    /// Publishes the unit; returns its ring position, which SPDL hands back to `end_unit`.
    fn commit_unit(&self, py: Python<'_>) -> PyResult<u64> {
        let position = self.position()?;
        commit(py, &self.state).map_err(|e| {
            if e.is_instance_of::<pyo3::exceptions::PyTimeoutError>(py) {
                // No room for the unit's last parts: the arena is full, as for write_binary.
                pyo3::exceptions::PyBufferError::new_err(e.to_string())
            } else {
                e
            }
        })?;
        Ok(position)
    }

    /// Drops the open unit unpublished.
    fn abort_unit(&self) -> PyResult<()> {
        lock(&self.state)?.abort();
        Ok(())
    }
}

/// Units an arena reader took from the ring and SPDL has not ended yet.
#[derive(Default)]
struct Held {
    /// (position, unit), in ring order.
    units: VecDeque<(u64, Arc<OwnedUnit>)>,
    /// Position of the last unit taken, if any: a unit at or before it that is not held was
    /// ended already.
    last: Option<u64>,
}

/// The parent's end of an [`Arena`] (SPDL's `ArenaReaderProtocol`); `zero_copy` is true.
#[pyclass(module = "shm_arena", frozen)]
pub struct ArenaReader {
    reader: Mutex<shm_arena::Reader>,
    /// Units taken and not ended yet, in ring order: (position, unit).
    held: Mutex<Held>,
    timeout: Option<Duration>,
    /// `read_binary` hands out views of shared memory, not copies.
    #[pyo3(get)]
    zero_copy: bool,
}

impl ArenaReader {
    /// The unit at ring position `position`, taking units from the ring until it comes.
    fn unit(&self, py: Python<'_>, position: u64) -> PyResult<Arc<OwnedUnit>> {
        loop {
            {
                let held = self
                    .held
                    .lock()
                    .map_err(|_| PyRuntimeError::new_err("poisoned"))?;
                if let Some((_, unit)) = held.units.iter().find(|(p, _)| *p == position) {
                    return Ok(Arc::clone(unit));
                }
                if held.last.is_some_and(|last| last >= position) {
                    return Err(CorruptError::new_err(format!(
                        "the arena unit at {position} was ended already, or is not from this \
                         arena"
                    )));
                }
            }
            let unit = next_unit(py, &self.reader, self.timeout)?.map_err(to_py)?;
            let taken = unit.position();
            let mut held = self
                .held
                .lock()
                .map_err(|_| PyRuntimeError::new_err("poisoned"))?;
            held.units.push_back((taken, Arc::new(unit)));
            held.last = Some(taken);
            drop(held);
            if taken > position {
                return Err(CorruptError::new_err(format!(
                    "the arena unit at {position} never came (the next one is at {taken})"
                )));
            }
        }
    }
}

#[pymethods]
impl ArenaReader {
    /// A new pass: nothing to do (the ring's cursors belong to the worker and the units held).
    fn reset(&self) {}

    /// A writable memoryview of `nbytes` bytes of shared memory, for the binary at `offset`
    /// (from `write_binary`). It keeps its unit alive while it, or anything built on it,
    /// lives.
    fn read_binary<'py>(
        &self,
        py: Python<'py>,
        offset: u128,
        nbytes: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let position = u64::try_from(offset >> 32).map_err(|_| {
            PyValueError::new_err(format!("offset {offset} is not from this arena"))
        })?;
        let index = (offset & u128::from(u32::MAX)) as usize;
        let unit = self.unit(py, position)?;
        let (ptr, len) = unit.blob_ptr(index).map_err(to_py)?;
        if len != nbytes {
            return Err(CorruptError::new_err(format!(
                "binary {index} of the unit at {position} holds {len} bytes, not {nbytes}"
            )));
        }
        Blob::view(py, Blob::new(Owner::Unit(unit), ptr, len, false))
    }

    /// Done with the unit SPDL's `span` names (read, or discarded unread): drops this reader's
    /// hold on it. Its space returns once every view of it (the `pinned` anchors among them)
    /// is gone too.
    #[pyo3(signature = (span, pinned = None))]
    fn end_unit(
        &self,
        py: Python<'_>,
        span: u64,
        pinned: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let _ = pinned; // the views hold their unit themselves
        self.unit(py, span)?;
        let mut held = self
            .held
            .lock()
            .map_err(|_| PyRuntimeError::new_err("poisoned"))?;
        held.units.retain(|(p, _)| *p != span);
        Ok(())
    }
}
