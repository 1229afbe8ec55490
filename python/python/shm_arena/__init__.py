"""Zero-copy shared-memory units between processes, on the Rust crate ``shm-arena``.

Two ways in:

* ``Arena``: a backend for SPDL's ``iterate_in_subprocess(fn, arena=Arena(capacity))``. The
  worker copies each item's large leaves (numpy arrays, bytes) into shared memory once; the
  parent gets them as zero-copy views that keep their unit alive.
* ``Region``: the crate's own API. ``region.writer()`` / ``region.reader()``;
  ``writer.send(value)`` / ``reader.recv(timeout)`` for values (dicts, lists, str, numbers,
  bytes, numpy arrays) in the envelope format a Rust ``Writer::send`` / ``Unit::decode`` speaks
  too (docs/FORMAT.md, "Across languages"); for raw units,
  ``with writer.begin_unit() as unit: unit.push(data); unit.blob_mut(n)``;
  ``unit = reader.next_unit(timeout)``, ``unit.blob(i)`` (a memoryview of shared memory),
  ``unit.end_unit()``. ``Region(capacity, subscribers=N)`` makes a broadcast region: one
  writer, up to N ``region.subscriber(policy)`` that each see every unit, read-only.

A view of shared memory (and any numpy array or tensor built on one) keeps its unit alive:
the unit's space returns to the writer only when the last of them is gone, so ending a unit
can never free memory something still points at.
"""

from ._native import (
    Arena,
    ArenaReader,
    ArenaWriter,
    Blob,
    ClosedError,
    CorruptError,
    LaggedError,
    PeerGoneError,
    Reader,
    Region,
    RoleTakenError,
    ShmArenaError,
    ShutdownError,
    Subscriber,
    Unit,
    UnitWriter,
    Writer,
)

__all__ = [
    "Arena",
    "ArenaReader",
    "ArenaWriter",
    "Blob",
    "ClosedError",
    "CorruptError",
    "LaggedError",
    "PeerGoneError",
    "Reader",
    "Region",
    "RoleTakenError",
    "ShmArenaError",
    "ShutdownError",
    "Subscriber",
    "Unit",
    "UnitWriter",
    "Writer",
]
