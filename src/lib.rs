//! Lock-free shared-memory unit arena: one copy in, zero copies out.
#![deny(unsafe_op_in_unsafe_fn, missing_docs, missing_debug_implementations)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod codec;
mod error;
#[cfg(not(shm_arena_loom))]
pub mod fuzzing;
pub mod layout;
mod peer;
mod reader;
mod region;
mod storage;
mod sync;
mod unit;
mod wait;
mod writer;

pub use error::{Error, Result, Role};
pub use reader::Reader;
pub use region::{Backing, Cursors, Region, RegionOptions, REGION_FD_ENV};
pub use unit::{unit_size, OwnedUnit, Unit};
pub use writer::{UnitWriter, Writer};
