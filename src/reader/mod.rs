//! The reading side: takes committed units and hands them out as guards ([`Unit`],
//! [`OwnedUnit`]) whose blobs are views of shared memory.
//!
//! The mode is decided once, when the reader attaches: an SPSC reader moves through its lane
//! alone ([`spsc`]), MPMC readers claim units from any lane ([`mpmc`]). Waiting, ending units
//! and decoding values are the same for both.

mod batch;
mod mpmc;
mod spsc;
mod subscriber;
mod unit;

use std::cell::Cell;
use std::fmt;
use std::time::Duration;

use crate::ring::participants::{attach_reader, check_writers, SlotLease};
use crate::ring::view::View;
use crate::spin::SpinBudget;
use crate::storage::{Storage, Store};
use crate::sync::Arc;
use crate::wait::{deadline_after, wait_for, Signal};
use crate::Result;

pub use batch::UnitBatch;
pub use subscriber::{Policy, Subscriber};
pub use unit::{unit_size, BatchUnit, OwnedUnit, Unit};

use mpmc::MpmcCursor;
use spsc::SpscCursor;

/// How a reader moves through the region, decided when it attaches.
#[derive(Debug)]
enum Cursor {
    Spsc(SpscCursor),
    Mpmc(MpmcCursor),
}

/// A reader: the single reader of an SPSC ring, or one of an MPMC region's readers.
///
/// Units come out as [`Unit`] guards; any number may be held at once and ended in any order
/// ([`Unit::end_unit`], or dropping it). In SPSC they come in commit order. In MPMC each unit
/// goes to exactly one reader; a writer's units are claimed in its commit order, and readers
/// take turns over the writers' lanes (a reader takes up to 16 units in a row from one lane,
/// and moves on at once when the lane has none), so a writer that stalls mid-unit holds back
/// no other writer's units.
///
/// A reader is `Send` but not `Sync`: one thread takes units at a time ([`OwnedUnit`]s may be
/// ended from any thread). For more reading threads, attach more readers (MPMC).
///
/// Dropping the reader detaches it once its owned units are gone too: a writer waiting for
/// space then fails with [`Error::Closed`](crate::Error::Closed), and another reader may attach
/// and continue after the last unit this one took. A reader whose process dies is replaced the
/// same way: the units it held are released (lost to it, never delivered twice).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shm_arena::{Error, Region};
///
/// let region = Region::create(1 << 16)?;
/// let mut writer = region.writer()?;
/// let reader = region.reader()?;
/// writer.write_unit(&[b"one"])?;
/// writer.write_unit(&[b"two"])?;
///
/// let first = reader.next_unit(Duration::from_secs(1))?;
/// let second = reader.try_next_unit()?.expect("committed before");
/// assert_eq!(second.blob(0)?, b"two");
/// second.end_unit(); // units end in any order
/// assert_eq!(first.blob(0)?, b"one");
/// drop(first);
///
/// drop(writer); // the writer detaches: the reader drains, then sees the ring closed
/// assert!(matches!(reader.try_next_unit(), Err(Error::Closed(_))));
/// # Ok::<(), shm_arena::Error>(())
/// ```
pub struct Reader {
    /// The region (the lease holds it too; this copy spares every take a second pointer hop).
    store: Arc<Store>,
    cursor: Cursor,
    /// This reader's slot, shared with the owned units it hands out.
    lease: Arc<SlotLease>,
    /// How long `next_unit` spins before it sleeps (adapts to how long waits turn out).
    spin: SpinBudget,
    /// The buffer of the last batch, kept so that batches allocate nothing in a steady state.
    batch_views: Cell<Vec<View>>,
}

impl Reader {
    pub(crate) fn attach(store: Arc<Store>) -> Result<Reader> {
        let (slot, held) = attach_reader(&store)?;
        // From here on the lease detaches the slot, whatever happens.
        let lease = Arc::new(SlotLease {
            store: Arc::clone(&store),
            slot,
            held,
        });
        let cursor = if store.geometry().mpmc {
            Cursor::Mpmc(MpmcCursor::new(&store, slot))
        } else {
            Cursor::Spsc(SpscCursor::attach(&store)?)
        };
        Ok(Reader {
            store,
            cursor,
            lease,
            spin: SpinBudget::default(),
            batch_views: Cell::new(Vec::new()),
        })
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Whether no unit at or after `end` was handed out (SPSC only: an MPMC lane's next unit
    /// may be with another reader). Called on the reader's thread (a borrowed unit is not
    /// `Send`), so it cannot race with `try_next_unit`.
    #[inline]
    pub(crate) fn is_last_taken(&self, end: u64) -> bool {
        match &self.cursor {
            Cursor::Spsc(cursor) => cursor.is_last_taken(end),
            Cursor::Mpmc(_) => false,
        }
    }

    /// The handle an owned unit keeps: the region and this reader's slot.
    pub(crate) fn lease(&self) -> Arc<SlotLease> {
        Arc::clone(&self.lease)
    }

    /// The next committed unit, if there is one now. Never blocks.
    ///
    /// # Errors
    /// [`Error::Closed`](crate::Error::Closed) once every writer that attached detached and
    /// every committed unit was taken; [`Error::Corrupt`](crate::Error::Corrupt) if the next
    /// record is impossible (the reader does not move past it).
    #[inline]
    pub fn try_next_unit(&self) -> Result<Option<Unit<'_>>> {
        Ok(self.take(true)?.map(|view| Unit::new(self, view)))
    }

    #[inline]
    fn take(&self, by_stamp: bool) -> Result<Option<View>> {
        match &self.cursor {
            Cursor::Spsc(cursor) => cursor.take(&self.store, by_stamp),
            Cursor::Mpmc(cursor) => cursor.take(&self.store),
        }
    }

    /// The next committed unit, waiting at most `timeout` for one.
    ///
    /// Spins briefly (for a budget that adapts to how long this reader's waits are), then
    /// sleeps on a futex in the region's header; a writer that commits wakes it. While
    /// sleeping it checks every 100 ms that a writer's process is alive.
    ///
    /// # Errors
    /// [`Error::Timeout`](crate::Error::Timeout) after `timeout`;
    /// [`Error::Closed`](crate::Error::Closed) when every writer detached and everything
    /// committed was taken; [`Error::PeerGone`](crate::Error::PeerGone) when a writer's process
    /// died (after everything it committed was taken); [`Error::Corrupt`](crate::Error::Corrupt)
    /// as for [`try_next_unit`](Self::try_next_unit).
    #[inline]
    pub fn next_unit(&self, timeout: Duration) -> Result<Unit<'_>> {
        if let Some(unit) = self.try_next_unit()? {
            return Ok(unit);
        }
        let store = &*self.store;
        let view = wait_for(
            store,
            Signal::Data,
            &self.spin,
            deadline_after(Some(timeout)),
            "a committed unit",
            || check_writers(store, true),
            || self.take(false),
        )?;
        Ok(Unit::new(self, view))
    }

    /// Up to `max` committed units at once, waiting at most `timeout` for the first one; the
    /// others are those committed by then. They end together, when the batch is dropped: a
    /// contiguous run with one tail store and one wake-up check (see [`UnitBatch`]). With a
    /// writer that publishes in batches too ([`Writer::begin_batch`](crate::Writer::begin_batch))
    /// small units cost a fraction of their one-by-one price.
    ///
    /// # Errors
    /// As [`next_unit`](Self::next_unit), for the first unit; an error after the first unit
    /// ends the batch early and comes back from the next call.
    pub fn next_batch(&self, max: usize, timeout: Duration) -> Result<UnitBatch<'_>> {
        let first = self.next_unit(timeout)?;
        let mut views = self.batch_views.take();
        views.clear();
        views.push(first.into_view());
        self.fill_batch(&mut views, max);
        Ok(UnitBatch::new(self, views))
    }

    /// Up to `max` units committed now, without waiting (the batch may be empty).
    ///
    /// # Errors
    /// As [`try_next_unit`](Self::try_next_unit), when no unit was taken.
    pub fn try_next_batch(&self, max: usize) -> Result<UnitBatch<'_>> {
        let mut views = self.batch_views.take();
        views.clear();
        if max > 0 {
            match self.take(true) {
                Ok(Some(view)) => views.push(view),
                Ok(None) => {}
                Err(e) => {
                    self.batch_views.set(views);
                    return Err(e);
                }
            }
        }
        if !views.is_empty() {
            self.fill_batch(&mut views, max);
        }
        Ok(UnitBatch::new(self, views))
    }

    /// Takes units into `views` until it holds `max` or none is committed.
    #[inline]
    fn fill_batch(&self, views: &mut Vec<View>, max: usize) {
        while views.len() < max {
            match self.take(true) {
                Ok(Some(view)) => views.push(view),
                Ok(None) | Err(_) => break,
            }
        }
    }

    /// A batch's buffer, back for the next batch.
    pub(crate) fn recycle(&self, views: Vec<View>) {
        self.batch_views.set(views);
    }

    /// Bytes in the ring (in MPMC: in each lane).
    pub fn capacity(&self) -> u64 {
        self.store.capacity()
    }

    #[cfg(test)]
    fn spsc_next(&self) -> u64 {
        match &self.cursor {
            Cursor::Spsc(cursor) => cursor.next(),
            Cursor::Mpmc(_) => panic!("not an SPSC reader"),
        }
    }
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("slot", &self.lease.slot)
            .field("cursor", &self.cursor)
            .field("capacity", &self.store.capacity())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::storage::Storage;
    use crate::sync::Ordering;
    use crate::tuning::LANE_STREAK;
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
        let second_at = reader.spsc_next();
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
