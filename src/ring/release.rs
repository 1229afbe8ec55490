//! Ending units: the tail moves over the longest ended prefix, in any order of ends, and the
//! lane's writer is woken when it moves.

use crate::layout::{BLOB_ALIGN, RELEASED};
use crate::ring::view::View;
use crate::storage::{Storage, Store};
use crate::sync::{fence, Ordering};
use crate::wait::{wake_if_waiting, Signal};

/// Ends the unit: its span returns to the writer once every unit before it has ended.
///
/// Two paths. In order (the unit is at the tail, the common case): nobody else can move
/// the tail, so a plain store moves it past the unit. Out of order: the unit's record is
/// marked RELEASED and whoever ends the unit before it will move the tail over it.
///
/// The hand-over between the two is a store-buffer (Dekker) pattern, made with SeqCst
/// *fences* (loom models fences exactly, but treats SeqCst accesses as AcqRel):
/// - the in-order releaser stores the tail, fences, then loads the next record's mark;
/// - the out-of-order releaser stores its mark, fences, then loads the tail.
///
/// At least one of them sees the other's store, so a marked unit at the tail is never left
/// behind. The same fence pairs with a sleeping writer's fence in `wait_for` (tail stored,
/// then the waiter count loaded), so wake-ups are not lost either.
pub(crate) fn release(store: &Store, view: &View) {
    release_with(store, view, false);
}

/// [`release`] for a caller that knows no unit after this one was handed
/// out yet (an SPSC reader ending, on its own thread, the last unit it took): then nobody
/// can have marked the next unit, so the in-order path skips the mark check; only the
/// wake-up handshake with a sleeping writer remains. When the next unit is handed out
/// later, by this same thread, our tail store is ordered before it.
#[inline]
pub(crate) fn release_with(store: &Store, view: &View, next_not_taken: bool) {
    release_run(store, std::slice::from_ref(view), next_not_taken);
}

/// [`release_with`] for a run of units the caller holds: contiguous in one lane, in order
/// (an SPSC reader's batch). In order, one tail store and one fence end them all.
#[inline]
pub(crate) fn release_run(store: &Store, run: &[View], next_not_taken: bool) {
    let (Some(first), Some(last)) = (run.first(), run.last()) else {
        return;
    };
    debug_assert!(run
        .windows(2)
        .all(|w| w[0].lane == w[1].lane && w[0].start + w[0].span == w[1].start));
    let lane = first.lane;
    let tail = &store.lane(lane).tail.0;
    let end = last.start + last.span;
    // A stale (smaller) tail only sends us down the out-of-order path, which is correct for
    // any tail; the tail never passes an unmarked unit, so it cannot be larger.
    // Acquire: pairs with the Release tail store (or CAS) that moved the tail to our unit.
    // Our plain store below is not part of that store's release sequence, so without this
    // the writer, acquiring our tail, would not be ordered after the previous unit's reads
    // when that unit was ended on another thread (loom found this with two MPMC readers).
    if tail.load(Ordering::Acquire) == first.start {
        // Release: pairs with the writer's Acquire tail load in `UnitWriter::reserve`: our
        // reads of these units' bytes happen before the writer reuses them.
        tail.store(end, Ordering::Release);
        // SeqCst fence: pairs with a sleeping writer's fence in `wait_for` (tail stored,
        // then the waiter count loaded) and, below, with an out-of-order releaser's fence.
        fence(Ordering::SeqCst);
        if next_not_taken {
            wake_if_waiting(store, Signal::Space(lane));
            return;
        }
        // Acquire: pairs with the Release mark in the out-of-order path below.
        if store.record(lane, end).word.load(Ordering::Acquire) == end | RELEASED {
            advance_tail(store, lane);
        }
        wake_if_waiting(store, Signal::Space(lane));
    } else {
        for view in run {
            // Release: pairs with the Acquire mark load in `advance_tail`, which passes our
            // reads of the unit on to the writer through its tail CAS.
            store
                .record(lane, view.start)
                .word
                .store(view.start | RELEASED, Ordering::Release);
        }
        after_mark(store, lane);
    }
}

/// After a unit was marked RELEASED (by its reader, or by a survivor for a dead reader): moves
/// the tail over the released prefix and wakes the lane's writer if it moved.
pub(crate) fn after_mark(store: &Store, lane: u32) {
    // SeqCst fence: pairs with the fence of the in-order releaser of the unit before the
    // marked one (it stored the tail, then loads our mark; we stored the mark, then load the
    // tail in `advance_tail`).
    fence(Ordering::SeqCst);
    if advance_tail(store, lane) {
        wake_if_waiting(store, Signal::Space(lane));
    }
}

/// Moves the tail over the longest prefix of marked (released) units; true if it moved.
/// Call after a SeqCst fence that follows the caller's own store (see [`release`]).
///
/// Several threads may run this at once (owned units end anywhere): each step is a CAS from the
/// tail it saw, so the tail moves once per unit. A record read here may already be reused by
/// the writer if the tail passed it meanwhile; then its stamp does not match the tail we saw, or
/// our CAS fails: stale values are never acted on.
fn advance_tail(store: &Store, lane: u32) -> bool {
    let shared = store.lane(lane);
    let mut moved = false;
    loop {
        // Acquire: pairs with the Release tail store in `release` and the tail CAS below
        // run by another ender, so the marks we read next are at least as new as that tail.
        let tail = shared.tail.0.load(Ordering::Acquire);
        // Acquire: pairs with the Release store in `UnitWriter::commit`: records before the
        // head are complete.
        let head = shared.head.0.load(Ordering::Acquire);
        if tail >= head || tail % BLOB_ALIGN != 0 {
            // Nothing to do, or a corrupt tail: never act on a misaligned position.
            break;
        }
        let rec = store.record(lane, tail);
        // Acquire: pairs with the Release mark in `release`.
        if rec.word.load(Ordering::Acquire) != tail | RELEASED {
            break;
        }
        let span = rec.span.load(Ordering::Relaxed);
        if span % BLOB_ALIGN != 0 || span == 0 || span > head - tail {
            // Corrupt record: leave the tail; the writer will time out rather than overwrite
            // bytes we cannot account for.
            break;
        }
        // AcqRel: the Release half pairs with the writer's Acquire tail load in
        // `UnitWriter::reserve` (the marker's reads happen before the bytes are reused).
        if shared
            .tail
            .0
            .compare_exchange(tail, tail + span, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            moved = true;
            // Pairs with the fence of the releaser of the next unit (see `release`)
            // before we load its mark, and with a sleeping writer's fence.
            fence(Ordering::SeqCst);
        }
    }
    moved
}
