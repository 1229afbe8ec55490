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
//! # Where to start
//!
//! - **Units** ([`Region`], [`Writer`], [`Reader`]): a [`Region`] is one shared mapping (a
//!   memfd by default; [`Backing`] for POSIX shm or heap). Its [`Writer`] begins a *unit*
//!   ([`Writer::begin_unit`]), bump-allocates *blobs* in it ([`UnitWriter::push`] copies bytes
//!   in, [`UnitWriter::blob_mut`] hands out bytes to fill in place) and commits it. Its
//!   [`Reader`] takes committed units ([`Reader::next_unit`]) as [`Unit`] guards whose blobs are
//!   contiguous, 64-byte-aligned slices of shared memory; [`Unit::end_unit`] (or dropping the
//!   guard) ends the unit, in any order, and the ring's tail advances over the ended prefix.
//!   [`Unit::into_owned`] gives a `Send + 'static` [`OwnedUnit`].
//! - **Values** ([`Writer::send`], [`Unit::decode`], [`codec`]): any `serde` value in one unit.
//!   Byte strings and typed arrays ([`codec::Bytes`], [`codec::Array`]) at or above a threshold
//!   are copied once into blobs of their own and the envelope points at them with markers
//!   (`docs/FORMAT.md` specifies the bytes, for other runtimes); decoding borrows them from
//!   shared memory.
//! - **Processes**: [`Region::share_with_child`] + [`Region::from_env`] hand a memfd region to
//!   a child (nothing in `/dev/shm`); [`Backing::Named`] + [`Region::open_name`] for unrelated
//!   processes.
//! - **Many writers and readers**: [`RegionOptions::mpmc`] (see below).
//! - **Worker processes** (`worker` feature, on by default): `worker::iterate_in_subprocess`
//!   runs a registered function in a child process and iterates the values it sends, the Rust
//!   counterpart of SPDL's `iterate_in_subprocess`.
//!
//! # Blocking and timeouts
//!
//! Every blocking call has a deadline. A reader's wait for data takes it per call
//! ([`Reader::next_unit`]); a writer's waits for space happen inside `push`, `blob_mut`,
//! `commit` and `send`, so they take the writer's ([`Writer::set_timeout`], default: as long as
//! a reader lives). `try_` variants never block. Waiting spins for an adaptive budget, then
//! sleeps on a process-shared futex word in the header.
//!
//! # MPMC: many writers and readers
//!
//! [`RegionOptions::mpmc`] makes a region for up to `writers` writer handles and `readers`
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
//! - **Cost.** The region has `writers` rings of `capacity` bytes each. Per unit, a reader pays
//!   one CAS on the lane's claim cursor, two stores to its own slot and one to the unit's
//!   record besides the SPSC work; writers pay nothing extra.
//!
//! # Participants, in both modes
//!
//! Every handle holds a slot in the header (a writer its lane, a reader a reader slot) naming
//! its process (pid and start time, so a reused pid is not mistaken for it).
//!
//! - **Closing.** Readers get [`Error::Closed`] once every writer that attached was dropped and
//!   everything committed was taken; a writer gets `Closed` once every reader was dropped (a
//!   reader's [`OwnedUnit`]s keep it attached until they end).
//! - **Dead writers.** A blocked reader checks every 100 ms whether the writers' processes
//!   live, and gets [`Error::PeerGone`] (after draining what they committed) when they died.
//!   The unit a dead writer had begun was never published; [`Region::writer`] can take its lane
//!   over and continue after its last committed unit.
//! - **Dead readers.** A writer blocked on a full lane checks every 100 ms for readers whose
//!   process died and releases the units they held; a new reader taking over a dead reader's
//!   slot does the same. Those units are lost to the dead reader, never delivered twice.
//!
//! # Guarantees
//!
//! - A blob is never split at the ring's end (it moves to the next lap instead), so nothing is
//!   ever copied out. In exchange one unit may use at most half the ring
//!   ([`Writer::max_unit`]); a larger one fails at once with [`Error::UnitTooLarge`].
//! - Shared memory is untrusted: records and descriptors are validated before use and a bad one
//!   gives [`Error::Corrupt`], never an out-of-bounds access, a panic or unbounded allocation.
//! - The orderings are checked by loom models of the same protocol code on a heap store; the
//!   heap protocol runs under Miri; proptest models and multi-process tests with SIGKILL check
//!   the rest.
//!
//! # Layout of the crate
//!
//! `writer.rs` and `reader/` hold the handles and their guards; `ring/` the protocol they drive
//! (records, ending, claiming, participants); `region/` creating and opening regions;
//! `storage/` where bytes live (mapped memory, or loom's model); `wait.rs`, `spin.rs` and
//! `futex.rs` blocking; `layout.rs` the bytes of the header and records; `tuning.rs` every
//! tuning constant; `codec/` the value format; `worker/` worker processes.
#![deny(unsafe_op_in_unsafe_fn, missing_docs, missing_debug_implementations)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod broadcast;
pub mod codec;
mod error;
mod futex;
#[cfg(all(feature = "fuzzing", not(shm_arena_loom)))]
pub mod fuzzing;
mod layout;
mod reader;
mod region;
mod ring;
mod spin;
mod storage;
mod sync;
mod tuning;
mod wait;
#[cfg(all(feature = "worker", not(shm_arena_loom)))]
pub mod worker;
mod writer;

pub use error::{Error, Result, Role};

pub use layout::{BLOB_ALIGN, MAX_CAPACITY, MAX_READERS, MAX_WRITERS, MIN_CAPACITY};
pub use reader::{unit_size, BatchUnit, OwnedUnit, Policy, Reader, Subscriber, Unit, UnitBatch};
pub use region::{Backing, Cursors, Mode, Region, RegionOptions, REGION_FD_ENV};
pub use writer::{Batch, UnitWriter, Writer};
