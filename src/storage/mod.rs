//! Where the ring's bytes live, kept apart from the protocol that uses them.
//!
//! The protocol (`writer`, `reader`, `unit`) only sees the [`Storage`] trait. Real regions are
//! [`mapped::Mapped`]: a shared mapping (memfd or POSIX shm) or, for threads only, a zeroed heap
//! buffer with the same layout. Under `--cfg shm_arena_loom` the store is [`model::Model`],
//! whose atomics are loom's and whose bytes are tracked by loom, so loom checks the very same
//! protocol code. The choice is a type alias, not a trait object: no dynamic dispatch on the
//! hot path.

use std::time::Duration;

use crate::layout::{Geometry, Lane, ReaderSlot, Record, Shared};
use crate::sync::AtomicU32;

#[cfg(not(shm_arena_loom))]
pub(crate) mod mapped;
#[cfg(shm_arena_loom)]
pub(crate) mod model;

/// The store in this build.
#[cfg(not(shm_arena_loom))]
pub(crate) type Store = mapped::Mapped;
/// The store in this build.
#[cfg(shm_arena_loom)]
pub(crate) type Store = model::Model;

/// What the ring protocol needs from its memory.
pub(crate) trait Storage: Send + Sync + 'static {
    /// The header's global atomics.
    fn shared(&self) -> &Shared;
    /// Lane and reader-slot counts.
    fn geometry(&self) -> Geometry;
    /// Lane `lane`'s cursors (`lane < geometry().lanes`).
    fn lane(&self, lane: u32) -> &Lane;
    /// Reader slot `slot` (`slot < geometry().readers`).
    fn reader_slot(&self, slot: u32) -> &ReaderSlot;
    /// Size of each lane's ring in bytes (a power of two).
    fn capacity(&self) -> u64;
    /// The record at ring position `pos` (a multiple of 64) of `lane`.
    fn record(&self, lane: u32, pos: u64) -> &Record;
    /// Pointer to `len` bytes of `lane`'s ring at position `pos`, for the writer to fill.
    ///
    /// `pos & (capacity - 1)` plus `len` never exceeds the capacity (callers check).
    fn bytes_for_write(&self, lane: u32, pos: u64, len: u64) -> *mut u8;
    /// Pointer to `len` bytes of `lane`'s ring at position `pos`, for a reader.
    fn bytes_for_read(&self, lane: u32, pos: u64, len: u64) -> *const u8;
    /// Hints that `lane`'s ring bytes from `pos` on, up to `len` of them (stopping at the
    /// ring's end), are about to be read. Never faults, never changes memory: a no-op is fine.
    fn prefetch(&self, _lane: u32, _pos: u64, _len: u64) {}
    /// Sleeps while `word` holds `expected`, at most `timeout`; may return spuriously.
    fn futex_wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>);
    /// Wakes every sleeper on `word`.
    fn futex_wake(&self, word: &AtomicU32);
}
