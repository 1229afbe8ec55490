//! The only place that names atomics, so `--cfg shm_arena_loom` can swap in loom's.
//!
//! Under loom every atomic the protocol touches is a loom atomic, which lets loom explore the
//! interleavings and weak-memory outcomes of the ring protocol exhaustively (within
//! `LOOM_MAX_PREEMPTIONS`). Real shared memory cannot hold loom atomics, so under loom the
//! storage is the heap model in `storage::model`.

#[cfg(not(shm_arena_loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
#[cfg(not(shm_arena_loom))]
pub(crate) use std::sync::Arc;

#[cfg(shm_arena_loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
#[cfg(shm_arena_loom)]
pub(crate) use loom::sync::Arc;

#[cfg(shm_arena_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(shm_arena_loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};
