//! The reading side of a ring: takes committed units in order, hands them out as guards.

use std::cell::Cell;
use std::fmt;
use std::time::Duration;

use crate::error::Role;
use crate::layout::{BLOB_ALIGN, COMMITTED, RECORD_SIZE, WRITER_CLOSED};
use crate::participants::SlotLease;
use crate::spin::SpinBudget;
use crate::storage::{Storage, Store};
use crate::sync::{Arc, Ordering};
use crate::unit::{Unit, View};
use crate::wait::{deadline_after, notify, wait_for, Signal};
use crate::{Error, Result};

/// What a reader prefetches of the next unit: its record and its first blob line.
const PREFETCH_BYTES: u64 = RECORD_SIZE + BLOB_ALIGN;
/// How far past the unit it hands out a reader keeps committed lines prefetched: two units of
/// 64 B (record + blob). Measured (case 1, 64 B units): 256 and 512 bytes took the stream from
/// 6.5 to 10-11.5 M units/s; 1-2 KiB helped less; prefetching for ownership on the writer's
/// side (PREFETCHW ahead of the head) made it slower (6 M), so the writer does not.
pub(crate) const READ_AHEAD: u64 = 256;

/// SPSC: how many units a reader that keeps up with its writer takes by their stamps before
/// it loads the head again (see `Reader::try_next_unit`).
const STAMP_RUN: u32 = 32;

/// MPMC: how many units in a row a reader claims from one lane (while it has any) before it
/// looks at the next lane first.
///
/// Staying on a lane keeps its claim cursor, records and tail in this reader's cache, and
/// readers that meet on a lane soon spread out again, so units are mostly claimed without
/// contention and ended in order (the fast path of `View::release`). Measured with 2 writer and
/// 2 reader threads, 64 B units (case 5, 6 runs each, median): moving on after every unit
/// 7.46 M units/s; after 16: 8.3 M; 64: 8.2 M; 1024: 7.9 M. The bound keeps a reader from
/// serving one busy lane for ever while another lane's units wait.
pub(crate) const LANE_STREAK: u32 = 16;

/// A reader: the single reader of an SPSC ring, or one of an MPMC region's readers.
///
/// Units come out as [`Unit`] guards; any number may be held at once and ended in any order.
/// In SPSC they come in commit order. In MPMC each unit goes to exactly one reader; a writer's
/// units are claimed in its commit order, and readers take turns over the writers' lanes (a
/// reader takes up to 16 units in a row from one lane, and moves on at once when the lane has
/// none), so a writer that stalls mid-unit holds back no other writer's units.
///
/// A reader is `Send` but not `Sync`: one thread takes units at a time (owned units may be
/// ended from any thread). For more reading threads, attach more readers.
pub struct Reader {
    store: Arc<Store>,
    /// Position of the next unit to hand out (SPSC).
    next: Cell<u64>,
    /// Units before this position are known to be committed (from the head cursor, or from
    /// the stamp of the unit just taken): they need no atomic load of the head (SPSC).
    head_cache: Cell<u64>,
    /// The head cursor as last loaded: it never moves back (SPSC).
    head_seen: Cell<u64>,
    /// SPSC: units this reader may still take by their record's stamp, without loading the
    /// head, once it has caught up with the writer (see `try_next_unit`); 0: load the head.
    by_stamp: Cell<u32>,
    /// Ring bytes before this position were prefetched (SPSC).
    prefetched: Cell<u64>,
    /// MPMC: this reader's slot (shared with its owned units), and the lane to look at first
    /// next time.
    mpmc: Option<(Arc<SlotLease>, Cell<u32>)>,
    /// MPMC: units claimed in a row from the lane looked at first.
    streak: Cell<u32>,
    /// How long `next_unit` spins before it sleeps (adapts to how long waits turn out).
    spin: SpinBudget,
}

impl Reader {
    pub(crate) fn attach(store: Arc<Store>) -> Result<Reader> {
        if store.geometry().is_mpmc() {
            let slot = crate::participants::attach_reader(&store)?;
            let first = slot % store.geometry().lanes;
            let lease = Arc::new(SlotLease {
                store: Arc::clone(&store),
                slot,
            });
            return Ok(Reader {
                store,
                next: Cell::new(0),
                head_cache: Cell::new(0),
                head_seen: Cell::new(0),
                by_stamp: Cell::new(0),
                prefetched: Cell::new(0),
                mpmc: Some((lease, Cell::new(first))),
                streak: Cell::new(0),
                spin: SpinBudget::default(),
            });
        }
        let (_, tail) = crate::unit::load_cursors(&store, 0)?;
        crate::peer::register(store.shared(), Role::Reader)?;
        Ok(Reader {
            store,
            next: Cell::new(tail),
            head_cache: Cell::new(tail),
            head_seen: Cell::new(tail),
            by_stamp: Cell::new(0),
            prefetched: Cell::new(tail),
            mpmc: None,
            streak: Cell::new(0),
            spin: SpinBudget::default(),
        })
    }

    /// MPMC: claims a unit from any lane; `Closed` once every writer detached and all lanes
    /// are drained (no /proc look-ups: dead writers are found by `next_unit`'s checks).
    #[inline]
    fn try_claim(&self, slot: u32, first: &Cell<u32>) -> Result<Option<View>> {
        let lanes = self.store.geometry().lanes;
        if let Some(view) = crate::claim::try_claim(&self.store, slot, first.get())? {
            // Stay on this lane for the next claim, up to `LANE_STREAK` units in a row.
            let streak = if view.lane == first.get() {
                self.streak.get() + 1
            } else {
                1
            };
            if streak >= LANE_STREAK {
                first.set((view.lane + 1) % lanes);
                self.streak.set(0);
            } else {
                first.set(view.lane);
                self.streak.set(streak);
            }
            return Ok(Some(view));
        }
        if let Err(closed) = crate::participants::check_writers(&self.store, false) {
            // Every writer detached; what they committed before is visible now (their Release
            // detach pairs with the Acquire in `check_writers`): drain it before closing.
            return match crate::claim::try_claim(&self.store, slot, first.get())? {
                Some(view) => Ok(Some(view)),
                None => Err(closed),
            };
        }
        Ok(None)
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn store_arc(&self) -> &Arc<Store> {
        &self.store
    }

    /// Whether no unit at or after `end` was handed out (SPSC only: an MPMC lane's next unit
    /// may be with another reader). Called on the reader's thread (a borrowed unit is not
    /// `Send`), so it cannot race with `try_next_unit`.
    pub(crate) fn is_last_taken(&self, end: u64) -> bool {
        self.mpmc.is_none() && self.next.get() == end
    }

    /// MPMC: the slot lease an owned unit must keep.
    pub(crate) fn lease(&self) -> Option<Arc<SlotLease>> {
        self.mpmc.as_ref().map(|(lease, _)| Arc::clone(lease))
    }

    /// The next committed unit, if there is one now. Never blocks.
    ///
    /// # Errors
    /// [`Error::Closed`] once the writer closed the ring (MPMC: every writer that attached was
    /// dropped) and every committed unit was taken; [`Error::Corrupt`] if the next record is
    /// impossible (the reader does not move past it).
    #[inline]
    pub fn try_next_unit(&self) -> Result<Option<Unit<'_>>> {
        self.take(true)
    }

    /// [`try_next_unit`](Self::try_next_unit); `by_stamp`: whether an SPSC reader that keeps up
    /// with its writer may take the next unit by its record's stamp. A reader that is waiting
    /// polls the head instead, and prefetches the unit's lines with it (the stamp would make a
    /// ping-pong's hop ~7 ns slower: the record and then the blob, one miss after the other).
    #[inline]
    fn take(&self, by_stamp: bool) -> Result<Option<Unit<'_>>> {
        if let Some((lease, first)) = &self.mpmc {
            return Ok(self
                .try_claim(lease.slot, first)?
                .map(|view| Unit { reader: self, view }));
        }
        let pos = self.next.get();
        // Caught up with the writer, which last published one unit at a time: take the next
        // unit by its record's stamp, without loading the head. A reader that loads the head
        // for every unit pulls the head's line from the writer on every commit, and the
        // writer's next head store (under its commit fence) waits for the line to come back:
        // a consumer faster than its producer slowed the producer ~3x that way (64 B units,
        // the producer pausing ~25 ns per unit: 129 ns per unit instead of ~45). The record's
        // line has to travel to the reader anyway. Every `STAMP_RUN` units the head is loaded
        // again, so a backlog (many units per head load, prefetched ahead) is noticed.
        let stamps_left = self.by_stamp.get();
        if by_stamp
            && pos == self.head_cache.get()
            && stamps_left > 0
            // Acquire: pairs with the Release stamp store in `UnitWriter::commit`: the record
            // and the blobs are visible.
            && self.store.record(0, pos).word.load(Ordering::Acquire) == pos | COMMITTED
        {
            // Committed, so the unit lies within one ring of `pos`; the head that bounds it
            // below may still be on its way.
            let view = View::read(&self.store, 0, pos, pos + self.store.capacity())?;
            let next = pos + view.span;
            self.next.set(next);
            self.head_cache.set(next);
            self.by_stamp.set(stamps_left - 1);
            return Ok(Some(Unit { reader: self, view }));
        }
        let reloaded = pos == self.head_cache.get();
        if reloaded {
            let signals = &self.store.shared().signals.0;
            // Acquire: pairs with the Release `fetch_or` in `Writer::drop`; loaded before the
            // head so that a closed flag seen here comes with the writer's final head.
            let closed = signals.closed.load(Ordering::Acquire);
            // Acquire: pairs with the Release store in `UnitWriter::commit`.
            let head = self.store.lane(0).head.0.load(Ordering::Acquire);
            // The head may lag behind `pos` (never behind the head loaded before): units taken
            // by their stamps (above) may be ahead of the writer's head store that follows
            // each stamp. A closed writer's final head is past every unit it committed.
            let closed = closed & WRITER_CLOSED != 0;
            if head < self.head_seen.get()
                || head > pos + self.store.capacity()
                || (closed && head < pos)
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
            self.store.prefetch(0, pos, PREFETCH_BYTES);
            if head <= pos {
                return if closed {
                    Err(Error::Closed(Role::Writer))
                } else {
                    Ok(None)
                };
            }
            self.head_cache.set(head);
        }
        let view = View::read(&self.store, 0, pos, self.head_cache.get())?;
        let next = pos + view.span;
        self.next.set(next);
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
            self.store.prefetch(0, from, ahead - from);
            self.prefetched.set(ahead);
        }
        Ok(Some(Unit { reader: self, view }))
    }

    /// The next committed unit, waiting at most `timeout` for one.
    ///
    /// Spins briefly (for a budget that adapts to how long this reader's waits are), then
    /// sleeps on a futex in the region's header; a writer that commits wakes it. While
    /// sleeping it checks every 100 ms that the writer's process is alive (in MPMC: that some
    /// writer is attached and alive).
    ///
    /// # Errors
    /// [`Error::Timeout`] after `timeout`; [`Error::Closed`] when the writer closed the ring and
    /// everything committed was taken; [`Error::PeerGone`] when the writer's process died (after
    /// everything it committed was taken); [`Error::Corrupt`] as for
    /// [`try_next_unit`](Self::try_next_unit).
    #[inline]
    pub fn next_unit(&self, timeout: Duration) -> Result<Unit<'_>> {
        if let Some(unit) = self.try_next_unit()? {
            return Ok(unit);
        }
        let deadline = deadline_after(Some(timeout));
        let store = &*self.store;
        let view = wait_for(
            store,
            Signal::Data,
            &self.spin,
            deadline,
            "a committed unit",
            || {
                if self.mpmc.is_some() {
                    crate::participants::check_writers(store, true)
                } else {
                    crate::peer::check(store.shared(), Role::Writer)
                }
            },
            || Ok(self.take(false)?.map(Unit::into_view)),
        )?;
        Ok(Unit { reader: self, view })
    }

    /// Bytes in the ring (in MPMC: in each lane).
    pub fn capacity(&self) -> u64 {
        self.store.capacity()
    }
}

impl Unit<'_> {
    /// Gives up the guard without ending the unit (it is re-wrapped by the caller).
    fn into_view(self) -> View {
        let view = self.view;
        std::mem::forget(self);
        view
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if self.mpmc.is_some() {
            // The lease detaches the slot once our owned units are gone too.
            return;
        }
        // Release: pairs with the Acquire load of `closed` in `UnitWriter::reserve`.
        self.store
            .shared()
            .signals
            .0
            .closed
            .fetch_or(crate::layout::READER_CLOSED, Ordering::Release);
        notify(&self.store, Signal::Space(0));
    }
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("next", &self.next.get())
            .field("capacity", &self.store.capacity())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::LANE_STREAK;
    use crate::storage::Storage;
    use crate::sync::Ordering;
    use crate::{Backing, Error, Region, RegionOptions};

    /// A reader that keeps up with its writer takes the next unit by its record's stamp even
    /// when the head store after it has not landed yet, and a head that lags behind it is not
    /// taken for corruption; a head that moves back from one it saw is.
    #[test]
    fn a_unit_is_taken_by_its_stamp_ahead_of_the_head() {
        let region =
            Region::create_with(RegionOptions::new(4096).backing(Backing::Anonymous)).unwrap();
        let mut writer = region.writer().unwrap();
        let reader = region.reader().unwrap();
        writer.write_unit(&[b"first"]).unwrap();
        // One head load that published one unit: the reader switches to stamps.
        assert_eq!(
            reader.try_next_unit().unwrap().unwrap().blob(0).unwrap(),
            b"first"
        );
        let second_at = reader.next.get();
        writer.write_unit(&[b"second"]).unwrap();
        let head = &reader.store().lane(0).head.0;
        let published = head.load(Ordering::Relaxed);
        // As if the writer's head store were still on its way.
        head.store(second_at, Ordering::Relaxed);
        let unit = reader.try_next_unit().unwrap().expect("taken by its stamp");
        assert_eq!(unit.blob(0).unwrap(), b"second");
        drop(unit);
        assert!(
            reader.try_next_unit().unwrap().is_none(),
            "a lagging head is not an error"
        );
        head.store(published, Ordering::Relaxed);
        assert!(reader.try_next_unit().unwrap().is_none());
        head.store(second_at - 64, Ordering::Relaxed);
        assert!(matches!(reader.try_next_unit(), Err(Error::Corrupt { .. })));
    }

    /// One reader, three full lanes: it takes `LANE_STREAK` units from a lane, then moves on
    /// (not one unit per lane, not one lane until it is empty), and moves on early from a
    /// lane that runs dry.
    #[test]
    fn a_reader_takes_a_bounded_streak_from_each_lane() {
        let region = Region::create_with(
            RegionOptions::new(8192)
                .mpmc(3, 1)
                .backing(Backing::Anonymous),
        )
        .unwrap();
        let per_lane = 2 * LANE_STREAK + 5;
        let mut writers: Vec<_> = (0..3).map(|_| region.writer().unwrap()).collect();
        for writer in &mut writers {
            for i in 0..per_lane {
                writer.write_unit(&[&i.to_le_bytes()]).unwrap();
            }
        }
        let reader = region.reader().unwrap();
        let mut runs: Vec<(u32, u32)> = Vec::new();
        while let Some(unit) = reader.try_next_unit().unwrap() {
            match runs.last_mut() {
                Some((lane, n)) if *lane == unit.lane() => *n += 1,
                _ => runs.push((unit.lane(), 1)),
            }
        }
        let s = LANE_STREAK;
        let expected = [
            (0, s),
            (1, s),
            (2, s),
            (0, s),
            (1, s),
            (2, s),
            (0, 5),
            (1, 5),
            (2, 5),
        ];
        assert_eq!(runs, expected);
    }
}
