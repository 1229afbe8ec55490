//! A lock-free shared-memory unit arena: one copy in, zero copies out.
//!
//! ```
//! use std::time::Duration;
//! use shm_arena::Region;
//!
//! let region = Region::create(1 << 20)?;   // a memfd; share it with `share_with_child`
//! let mut writer = region.writer()?;
//! let reader = region.reader()?;
//! std::thread::scope(|s| {
//!     s.spawn(move || {
//!         for i in 0..100u32 {
//!             let mut unit = writer.begin_unit().unwrap();
//!             unit.push(&i.to_le_bytes()).unwrap();        // copy in...
//!             unit.blob_mut(10_000).unwrap().fill(i as u8); // ...or fill in place
//!             unit.commit().unwrap();
//!         }
//!     }); // dropping the writer closes the ring
//!     for i in 0..100u32 {
//!         let unit = reader.next_unit(Duration::from_secs(5)).unwrap();
//!         assert_eq!(unit.blob(0).unwrap(), i.to_le_bytes()); // zero-copy view
//!         assert!(unit.blob(1).unwrap().iter().all(|&b| b == i as u8));
//!     } // each unit is ended when dropped
//! });
//! assert!(matches!(reader.next_unit(Duration::from_secs(1)), Err(shm_arena::Error::Closed(_))));
//! # Ok::<(), shm_arena::Error>(())
//! ```
//!
//! # Model
//!
//! A [`Region`] is one shared mapping: a header page, then a ring of `capacity` bytes addressed by
//! ever-growing `u64` positions. Its single [`Writer`] begins a *unit*, bump-allocates *blobs* in
//! it ([`UnitWriter::push`] copies bytes in, [`UnitWriter::blob_mut`] hands out the bytes to fill
//! in place) and commits it. Its single [`Reader`] takes committed units in order as [`Unit`]
//! guards whose blobs are contiguous, 64-byte-aligned slices of shared memory; dropping a guard
//! ends the unit, in any order, and the ring's tail advances over the ended prefix.
//!
//! # Guarantees
//!
//! - A blob is never split at the ring's end (it moves to the next lap instead), so nothing is
//!   ever copied out. In exchange one unit may use at most half the ring
//!   ([`Writer::max_unit`]); a larger one fails at once with [`Error::UnitTooLarge`].
//! - Every blocking call has a deadline; `try_` variants never block. Sleepers use a futex in
//!   the header; wakers make a syscall only when someone sleeps.
//! - A peer that dies is noticed within about 100 ms by a blocked side ([`Error::PeerGone`]);
//!   closing wakes everyone ([`Error::Closed`]) after the reader drained what was committed.
//! - Shared memory is untrusted: records and descriptors are validated before use and a bad one
//!   gives [`Error::Corrupt`], never an out-of-bounds access, a panic or unbounded allocation.
#![deny(unsafe_op_in_unsafe_fn, missing_docs, missing_debug_implementations)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod claim;
pub mod codec;
mod envelope;
mod error;
#[cfg(not(shm_arena_loom))]
pub mod fuzzing;
pub mod layout;
mod participants;
mod peer;
mod reader;
mod region;
mod storage;
mod sync;
mod unit;
mod wait;
#[cfg(not(shm_arena_loom))]
pub mod worker;
mod writer;

pub use error::{Error, Result, Role};
pub use reader::Reader;
pub use region::{Backing, Cursors, Mode, Region, RegionOptions, REGION_FD_ENV};
pub use unit::{unit_size, OwnedUnit, Unit};
pub use writer::{UnitWriter, Writer};
