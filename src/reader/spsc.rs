//! The SPSC reader's way through its lane: alone, in commit order, with a private cursor that
//! it publishes in the lane's claim cursor before handing a unit out (so that a reader taking
//! over from a dead one knows which units that one held).

use std::cell::Cell;

use crate::layout::{BLOB_ALIGN, COMMITTED};
use crate::ring::participants::check_writers;
use crate::ring::view::View;
use crate::storage::{Storage, Store};
use crate::sync::Ordering;
use crate::tuning::{PREFETCH_BYTES, READ_AHEAD, STAMP_RUN};
use crate::{Error, Result};

/// Where an SPSC reader is. Cells: a reader is used from one thread at a time (`!Sync`).
#[derive(Debug)]
pub(crate) struct SpscCursor {
    /// Position of the next unit to hand out.
    next: Cell<u64>,
    /// Units before this position are known to be committed (from the head cursor, or from
    /// the stamp of the unit just taken): they need no atomic load of the head.
    head_cache: Cell<u64>,
    /// The head cursor as last loaded: it never moves back.
    head_seen: Cell<u64>,
    /// Units this reader may still take by their record's stamp, without loading the head,
    /// once it has caught up with the writer (see `take`); 0: load the head.
    by_stamp: Cell<u32>,
    /// Ring bytes before this position were prefetched.
    prefetched: Cell<u64>,
}

impl SpscCursor {
    /// A reader that just attached (possibly taking over from a dead one, whose units were
    /// released): it starts where the last reader stopped, at the claim cursor.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the lane's cursors are impossible.
    pub(crate) fn attach(store: &Store) -> Result<SpscCursor> {
        let lane = store.lane(0);
        // Acquire: pairs with the previous reader's Release claim stores in `take`.
        let claim = lane.claim.0.load(Ordering::Acquire);
        // Acquire: pairs with the tail stores in `release`.
        let tail = lane.tail.0.load(Ordering::Acquire);
        // Acquire: pairs with the Release head store in `UnitWriter::commit`. The head may lag
        // behind the claim cursor: the last reader may have taken units by their stamps.
        let head = lane.head.0.load(Ordering::Acquire);
        if claim % BLOB_ALIGN != 0
            || tail % BLOB_ALIGN != 0
            || tail > claim
            || claim - tail > store.capacity()
        {
            return Err(Error::corrupt(
                format!("claim cursor {claim} and tail {tail} are not a valid reader position"),
                claim,
            ));
        }
        Ok(SpscCursor {
            next: Cell::new(claim),
            head_cache: Cell::new(claim),
            head_seen: Cell::new(head.min(claim)),
            by_stamp: Cell::new(0),
            prefetched: Cell::new(claim),
        })
    }

    /// Whether no unit at or after `end` was handed out yet.
    #[inline]
    pub(crate) fn is_last_taken(&self, end: u64) -> bool {
        self.next.get() == end
    }

    /// Hands out the next unit, if one is committed.
    ///
    /// `by_stamp`: whether a reader that keeps up with its writer may take the next unit by its
    /// record's stamp. A reader that is waiting polls the head instead, and prefetches the
    /// unit's lines with it (the stamp would make a ping-pong's hop slower: the record and
    /// then the blob, one miss after the other).
    ///
    /// # Errors
    /// [`Error::Closed`] / [`Error::PeerGone`] once the writer detached and everything it
    /// committed was taken; [`Error::Corrupt`] if the head or the next record is impossible
    /// (the reader does not move past it).
    #[inline]
    pub(crate) fn take(&self, store: &Store, by_stamp: bool) -> Result<Option<View>> {
        let pos = self.next.get();
        // Caught up with the writer, which last published one unit at a time: take the next
        // unit by its record's stamp, without loading the head. A reader that loads the head
        // for every unit pulls the head's line from the writer on every commit, and the
        // writer's next head store (under its commit fence) waits for the line to come back,
        // which slowed a producer that a faster consumer kept up with. The record's line has
        // to travel to the reader anyway. Every `STAMP_RUN` units the head is loaded again,
        // so a backlog (many units per head load, prefetched ahead) is noticed.
        let stamps_left = self.by_stamp.get();
        if by_stamp
            && pos == self.head_cache.get()
            && stamps_left > 0
            // Acquire: pairs with the Release stamp store in `UnitWriter::commit`: the record
            // and the blobs are visible.
            && store.record(0, pos).word.load(Ordering::Acquire) == pos | COMMITTED
        {
            // Committed, so the unit lies within one ring of `pos`; the head that bounds it
            // below may still be on its way.
            let view = View::read(store, 0, pos, pos + store.capacity())?;
            let next = pos + view.span;
            self.hand_out(store, next);
            self.head_cache.set(next);
            self.by_stamp.set(stamps_left - 1);
            return Ok(Some(view));
        }
        let reloaded = pos == self.head_cache.get();
        if reloaded {
            // Acquire (in `check_writers`): pairs with the Release detach of the writer; loaded
            // before the head so that a writer seen gone comes with its final head.
            let gone = check_writers(store, false).err();
            // Acquire: pairs with the Release store in `UnitWriter::commit`.
            let head = store.lane(0).head.0.load(Ordering::Acquire);
            // The head may lag behind `pos` (never behind the head loaded before): units taken
            // by their stamps (above) may be ahead of the writer's head store that follows
            // each stamp. A detached writer's final head is past every unit it committed.
            if head < self.head_seen.get()
                || head > pos + store.capacity()
                || (gone.is_some() && head < pos)
            {
                return Err(Error::corrupt(
                    format!(
                        "head cursor {head} is not within one ring of the reader at {pos} \
                         (or moved back from {})",
                        self.head_seen.get()
                    ),
                    pos,
                ));
            }
            self.head_seen.set(head);
            // The next unit's record and first blob line: fetched now, in parallel, instead of
            // one after the other when `View::read` follows the record to the blob. While the
            // ring is empty this re-fetches the lines the writer is about to fill, so the
            // reader that spins gets them together with the head (one round of cache misses
            // per unit instead of three).
            store.prefetch(0, pos, PREFETCH_BYTES);
            if head <= pos {
                return match gone {
                    Some(e) => Err(e),
                    None => Ok(None),
                };
            }
            self.head_cache.set(head);
        }
        let view = View::read(store, 0, pos, self.head_cache.get())?;
        let next = pos + view.span;
        self.hand_out(store, next);
        if reloaded {
            // A head load that published just this unit: the writer is publishing one unit at
            // a time and we keep up with it; take the next ones by their stamps.
            self.by_stamp.set(if next == self.head_cache.get() {
                STAMP_RUN
            } else {
                0
            });
        }
        // Keep the lines of the next units (those already committed) on their way: a reader
        // that follows the writer closely would otherwise take two cache misses per unit, one
        // after the other (record, then the blob it names).
        let ahead = (next + READ_AHEAD).min(self.head_cache.get());
        let from = self.prefetched.get().max(next);
        if from < ahead {
            store.prefetch(0, from, ahead - from);
            self.prefetched.set(ahead);
        }
        Ok(Some(view))
    }

    /// Moves past the unit about to be handed out, publishing the new position first: a reader
    /// that dies after this store loses the unit (it is released by whoever takes over), one
    /// that dies before it never handed the unit out.
    #[inline]
    fn hand_out(&self, store: &Store, next: u64) {
        self.next.set(next);
        // Release: pairs with the Acquire claim loads in `reap_lane` and `SpscCursor::attach`
        // (a reader taking over): the units below it were ours.
        store.lane(0).claim.0.store(next, Ordering::Release);
    }

    /// Position of the next unit to hand out (for tests and `Debug`).
    #[cfg(test)]
    pub(crate) fn next(&self) -> u64 {
        self.next.get()
    }
}
