//! MPMC readers: claiming committed units from any lane.
//!
//! Each lane's writer publishes units exactly as in SPSC (record, then the Release head
//! store). Readers share the lane's *claim cursor*: a reader that sees `claim < head` reads the
//! record at `claim`, then moves the cursor past the unit with a CAS. The winner owns the unit;
//! a loser retries with the new cursor. A record read by a loser may already be reused by the
//! writer (another reader took the unit, ended it, and the tail moved on); the CAS fails in
//! that case, because positions grow monotonically and never repeat, so stale contents are
//! never acted on.
//!
//! Units are ended exactly as in SPSC (`release.rs`): the in-order fast path and the
//! out-of-order marks are already safe for concurrent enders.
//!
//! Around the CAS the reader publishes its intent and afterwards tags the record with its slot,
//! so that survivors can release the units of a reader that dies (see `reap.rs`).

use crate::layout::{ReaderSlot, BLOB_ALIGN, CLAIMED_BASE};
use crate::ring::view::View;
use crate::storage::{Storage, Store};
use crate::sync::Ordering;
use crate::tuning::READ_AHEAD;
use crate::{Error, Result};

/// Tries to claim one committed unit, looking at every lane once starting with `first`.
/// `slot` is the caller's reader slot.
///
/// # Errors
/// [`Error::Corrupt`] if a lane's cursors or a record are impossible (and no other reader
/// moved the cursor meanwhile, which would explain it).
#[inline]
pub(crate) fn try_claim(store: &Store, slot: u32, first: u32) -> Result<Option<View>> {
    let lanes = store.geometry().lanes;
    let reader = store.reader_slot(slot);
    for i in 0..lanes {
        let lane = (first + i) % lanes;
        if let Some(view) = claim_in_lane(store, reader, slot, lane)? {
            return Ok(Some(view));
        }
    }
    Ok(None)
}

#[inline]
fn claim_in_lane(store: &Store, reader: &ReaderSlot, slot: u32, lane: u32) -> Result<Option<View>> {
    let cursors = store.lane(lane);
    let cap = store.capacity();
    loop {
        // Acquire: pairs with the AcqRel claim CAS of the reader that moved it here, so the
        // head we load next is at least the one that reader saw (claim <= head).
        let claim = cursors.claim.0.load(Ordering::Acquire);
        // Acquire: pairs with the Release store in `UnitWriter::commit`: the record and blobs
        // of every unit before the head are visible.
        let head = cursors.head.0.load(Ordering::Acquire);
        if claim == head {
            return Ok(None);
        }
        let read = if claim > head || head - claim > cap || claim % BLOB_ALIGN != 0 {
            Err(Error::corrupt(
                format!("lane {lane}: claim cursor {claim} and head {head} are not a ring state"),
                claim,
            ))
        } else {
            // The record and the blob lines after it, fetched together rather than the blob's
            // after the record's (as the SPSC reader does: `READ_AHEAD`).
            store.prefetch(lane, claim, (head - claim).min(READ_AHEAD));
            View::read(store, lane, claim, head)
        };
        let view = match read {
            Ok(view) => view,
            Err(e) => {
                // Either the lane is corrupt, or another reader claimed the unit meanwhile (and
                // tagged it, or even ended it and let the writer move on and reuse its bytes).
                // A plain load of the cursor could still return the old value after we saw
                // newer data, so ask with a no-op CAS instead: if the cursor is still `claim`
                // at that point, any claim past it comes later in the cursor's modification
                // order and synchronises with our CAS, so nothing we read can come from after
                // it: the lane really is corrupt.
                // AcqRel: both halves are needed for that argument.
                if cursors
                    .claim
                    .0
                    .compare_exchange(claim, claim, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    return Err(e);
                }
                continue;
            }
        };
        let intent = claim | u64::from(lane + 1);
        // Relaxed: ordered before the CAS by the CAS's Release half; a survivor that sees the
        // CAS's value (Acquire) sees this intent (see `reap.rs`).
        reader.intent.store(intent, Ordering::Relaxed);
        // AcqRel: Release publishes the intent (above) to survivors and our head load to the
        // next claimer; Acquire orders us after the previous claimer.
        if cursors
            .claim
            .0
            .compare_exchange(
                claim,
                claim + view.span,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            continue;
        }
        // Release: pairs with the Acquire word load in `reap_lane`: a survivor that sees the
        // tag knows the owner without looking at intents.
        store
            .record(lane, claim)
            .word
            .store(claim | (CLAIMED_BASE + u64::from(slot)), Ordering::Release);
        // Release: a survivor that reads the cleared intent also sees the tag above.
        reader.intent.store(0, Ordering::Release);
        return Ok(Some(view));
    }
}
