//! `shm_arena` for Python: the crate's units as zero-copy buffers, and an arena backend for
//! SPDL's `iterate_in_subprocess`. No second ring: every call goes to the Rust crate.
//!
//! - `region.rs`: `Region` (create, open by name, attach writers and readers);
//! - `writer.rs`: `Writer` and `UnitWriter` (a context manager that commits on exit);
//! - `reader.rs`: `Reader` and `Unit` (blobs as memoryviews that keep the unit alive);
//! - `subscriber.rs`: `Subscriber`, a broadcast region's reader (each sees every unit);
//! - `take.rs`: taking units for both, waiting with the GIL released;
//! - `blob.rs`: the buffer exporter behind every view of shared memory;
//! - `encode.rs`, `decode.rs`: Python objects to and from the crate's `codec::Value` (`send`,
//!   `recv`);
//! - `arena.rs`: `Arena`, `ArenaWriter`, `ArenaReader` (SPDL's `ArenaProtocol`);
//! - `wait.rs`: blocking with the GIL released and signals checked;
//! - `errors.rs`: the exceptions.

mod arena;
mod blob;
mod decode;
mod encode;
mod errors;
mod reader;
mod region;
mod subscriber;
mod take;
mod wait;
mod writer;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<region::Region>()?;
    m.add_class::<writer::Writer>()?;
    m.add_class::<writer::UnitWriter>()?;
    m.add_class::<reader::Reader>()?;
    m.add_class::<reader::Unit>()?;
    m.add_class::<subscriber::Subscriber>()?;
    m.add_class::<blob::Blob>()?;
    m.add_class::<arena::Arena>()?;
    m.add_class::<arena::ArenaWriter>()?;
    m.add_class::<arena::ArenaReader>()?;
    m.add_function(wrap_pyfunction!(arena::_attach_arena, m)?)?;
    m.add("ShmArenaError", py.get_type::<errors::ShmArenaError>())?;
    m.add("ClosedError", py.get_type::<errors::ClosedError>())?;
    m.add("PeerGoneError", py.get_type::<errors::PeerGoneError>())?;
    m.add("ShutdownError", py.get_type::<errors::ShutdownError>())?;
    m.add("RoleTakenError", py.get_type::<errors::RoleTakenError>())?;
    m.add("CorruptError", py.get_type::<errors::CorruptError>())?;
    m.add("LaggedError", py.get_type::<errors::LaggedError>())?;
    Ok(())
}
