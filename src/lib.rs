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
//! # MPMC: many writers and readers
//!
//! [`Region::create_mpmc`] makes a region for up to `writers` writer handles and `readers`
//! reader handles, in any threads and processes, with the same unit API. Each writer holds a
//! *lane* of its own: an SPSC ring on the writing side, so writers never contend, a unit can
//! still grow blob by blob (no size to declare up front), and a writer that stalls or dies
//! mid-unit holds back nobody else's units. Readers claim committed units from any lane with one
//! compare-and-swap on that lane's claim cursor, taking turns over the lanes (up to 16 units
//! in a row from one lane, so that readers mostly claim without contending); units end in any
//! order, by any thread, exactly as in SPSC.
//!
//! - **Exactly once.** A committed unit is handed to exactly one reader, unless the reader that
//!   claimed it dies: then it is lost, never handed out twice (at most once for those units).
//! - **Order.** A writer's units are claimed in its commit order; there is no order across
//!   writers, and units taken by different readers are processed in parallel.
//! - **Head of line.** Nothing waits for another writer's uncommitted unit. What can hold a
//!   writer back is its own lane: a unit still held by a reader pins the lane's tail (as in
//!   SPSC), so size each lane for the units readers hold at once.
//! - **Dead writers.** The unit a dead writer had begun was never published; everything it
//!   committed is still delivered, and [`Region::writer`] can take its lane over. Readers get
//!   [`Error::Closed`] once every writer that attached was dropped and all lanes are drained
//!   ([`Error::PeerGone`] if one of them died instead).
//! - **Dead readers.** A writer blocked on a full lane checks every 100 ms for readers whose
//!   process died and releases the units they held (or were claiming) in its lane; a new
//!   reader taking over a dead reader's slot does the same for every lane. A reader's
//!   [`OwnedUnit`]s keep its slot attached, even after the [`Reader`] is dropped.
//! - **Cost.** The region has `writers` rings of `capacity` bytes each. Per unit, a reader pays
//!   one CAS on the lane's claim cursor, two stores to its own slot and one to the unit's
//!   record besides the SPSC work; writers pay nothing extra.
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
mod futex;
#[cfg(not(shm_arena_loom))]
pub mod fuzzing;
pub mod layout;
mod participants;
mod peer;
mod reader;
mod region;
mod spin;
mod storage;
mod sync;
mod unit;
mod wait;
#[cfg(all(feature = "worker", not(shm_arena_loom)))]
pub mod worker;
mod writer;

pub use error::{Error, Result, Role};

pub use reader::Reader;
pub use region::{Backing, Cursors, Mode, Region, RegionOptions, REGION_FD_ENV};
pub use unit::{unit_size, OwnedUnit, Unit};
pub use writer::{UnitWriter, Writer};
