//! The reclaim limit and the number of units before it, published as one seqlock: a leaky
//! subscriber that fell behind needs both, from the same update, to count what it missed.

use crate::storage::{Storage, Store};
use crate::sync::{fence, Ordering};
use crate::{Error, Result};

/// Publishes `tail` (the reclaim limit: bytes before it may be overwritten) with `seq`, the
/// number of units before it. The writer alone calls this.
pub(crate) fn publish(store: &Store, tail: u64, seq: u64) {
    let lane = store.lane(0);
    let version = lane.reclaim.0.version.load(Ordering::Relaxed);
    debug_assert!(version % 2 == 0, "the writer is the only publisher");
    lane.reclaim.0.version.store(version + 1, Ordering::Relaxed);
    // Release fence: pairs with the Acquire fence in `read`: a reader that sees any of the
    // stores below also sees the odd version, and retries.
    fence(Ordering::Release);
    lane.reclaim.0.seq.store(seq, Ordering::Relaxed);
    // Release: pairs with the Acquire tail loads of subscribers (`take`) and of `read`.
    lane.tail.0.store(tail, Ordering::Release);
    // Release: pairs with the Acquire version load in `read`: both stores above come first.
    lane.reclaim.0.version.store(version + 2, Ordering::Release);
}

/// The tail and the unit count before it, from one update.
///
/// # Errors
/// [`Error::Corrupt`] if no consistent pair can be read in many tries (the version word is
/// stuck odd: the writer died mid-update, or shared memory was overwritten).
pub(crate) fn read(store: &Store) -> Result<(u64, u64)> {
    let lane = store.lane(0);
    for _ in 0..10_000 {
        // Acquire: pairs with the Release version store that ends an update.
        let before = lane.reclaim.0.version.load(Ordering::Acquire);
        if before % 2 == 1 {
            std::hint::spin_loop();
            #[cfg(shm_arena_loom)]
            loom::thread::yield_now();
            continue;
        }
        // Acquire: pairs with the Release tail store in `publish`.
        let tail = lane.tail.0.load(Ordering::Acquire);
        let seq = lane.reclaim.0.seq.load(Ordering::Relaxed);
        // Acquire fence: pairs with the Release fence in `publish`: if the loads above saw a
        // later update's stores, the version load below sees its odd (or later) version.
        fence(Ordering::Acquire);
        if lane.reclaim.0.version.load(Ordering::Relaxed) == before {
            return Ok((tail, seq));
        }
    }
    Err(Error::corrupt(
        "the broadcast reclaim seqlock stays locked (a writer died mid-update?)",
        0,
    ))
}
