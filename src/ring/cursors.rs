//! A lane's cursors as a handle attaching to it finds them.

use crate::layout::{BLOB_ALIGN, COMMITTED, RECORD_SIZE, RELEASED};
use crate::storage::{Storage, Store};
use crate::sync::Ordering;
use crate::wait::{notify, Signal};
use crate::{Error, Result};

/// Loads a lane's head and tail and checks they can be a ring's cursors: 64-aligned, tail not
/// past the head, at most one ring apart. Used where a handle attaches.
pub(crate) fn load_cursors(store: &Store, lane: u32) -> Result<(u64, u64)> {
    let cursors = store.lane(lane);
    // Acquire: pairs with the Release store in `UnitWriter::commit`.
    let head = cursors.head.0.load(Ordering::Acquire);
    // Acquire: pairs with the tail stores in `release::release` and `advance_tail`.
    let tail = cursors.tail.0.load(Ordering::Acquire);
    if head % BLOB_ALIGN != 0
        || tail % BLOB_ALIGN != 0
        || tail > head
        || head - tail > store.capacity()
    {
        return Err(Error::corrupt(
            format!("cursors head {head} and tail {tail} are not a valid ring state"),
            tail,
        ));
    }
    Ok((head, tail))
}

/// After a writer took over the lane of a dead one: publishes the units the dead writer had
/// stamped COMMITTED but not yet published with its head store (it died between the stamp and
/// the head store, or inside a batch, which defers the head store over several units).
///
/// An SPSC reader may already have taken such units by their stamps (and even ended them: the
/// tail may be past the head), so the new writer must not overwrite them: each is complete
/// (the stamp is stored last, with Release, after the record and the blobs), so they are
/// published as the dead writer would have.
///
/// # Errors
/// [`Error::Corrupt`] if the head or a stamped record are impossible (the writer then checks
/// the cursors again with [`load_cursors`]).
pub(crate) fn publish_stamped(store: &Store, lane: u32) -> Result<()> {
    let cursors = store.lane(lane);
    let cap = store.capacity();
    // Acquire: pairs with the dead writer's Release head store.
    let head = cursors.head.0.load(Ordering::Acquire);
    // Acquire: pairs with the tail stores in `release::release` and `advance_tail` (a reader
    // may have taken and ended stamped units already: then the tail is past the head).
    let tail = cursors.tail.0.load(Ordering::Acquire);
    if head % BLOB_ALIGN != 0 || tail % BLOB_ALIGN != 0 || tail.min(head) + cap < tail.max(head) {
        return Err(Error::corrupt(
            format!("cursors head {head} and tail {tail} of a dead writer's lane"),
            head,
        ));
    }
    let mut end = head;
    // At most a ring's worth of units past the older of head and tail.
    while end - tail.min(head) < cap {
        let rec = store.record(lane, end);
        // Acquire: pairs with the Release stamp store in `UnitWriter::commit` (and with the
        // Release mark of a reader that ended the unit out of order).
        let word = rec.word.load(Ordering::Acquire);
        if word != end | COMMITTED && word != end | RELEASED {
            break;
        }
        let span = rec.span.load(Ordering::Relaxed);
        let next = end.saturating_add(span);
        if span % BLOB_ALIGN != 0 || span < RECORD_SIZE || next - tail.min(head) > cap {
            return Err(Error::corrupt(
                format!("a dead writer's unit at {end} has span {span}"),
                end,
            ));
        }
        end = next;
    }
    if end > head {
        // Release: pairs with the Acquire head loads of readers, as the dead writer's would
        // have.
        cursors.head.0.store(end, Ordering::Release);
        notify(store, Signal::Data);
    }
    Ok(())
}

#[cfg(all(test, not(shm_arena_loom), not(miri)))]
mod tests {
    use std::time::Duration;

    use crate::ring::presence::attached_by;
    use crate::storage::Storage;
    use crate::sync::Ordering;
    use crate::{Backing, Region, RegionOptions};

    /// A pid no process has: above the kernel's pid limit (at most 2^22).
    const DEAD_PID: u64 = (1 << 22) + 12345;

    /// The writer died between the stamp of its last unit and the head store: an SPSC reader
    /// may have taken the unit by its stamp already, so the writer taking over publishes it
    /// instead of writing over it.
    #[test]
    fn a_writer_taking_over_publishes_the_dead_writers_stamped_unit() {
        let region =
            Region::create_with(RegionOptions::new(4096).backing(Backing::Anonymous)).unwrap();
        let mut dead = region.writer().unwrap();
        dead.write_unit(&[b"first"]).unwrap();
        dead.write_unit(&[b"stamped"]).unwrap();
        let store = region.store();
        let lane = store.lane(0);
        let end = lane.head.0.load(Ordering::Relaxed);
        // As if the head store of the second unit never happened, and the process died.
        lane.head.0.store(128, Ordering::Relaxed);
        lane.writer
            .0
            .state
            .store(attached_by(DEAD_PID), Ordering::Relaxed);
        drop(dead); // taken from it: the drop leaves the slot alone

        let mut writer = region.writer().unwrap();
        assert_eq!(
            lane.head.0.load(Ordering::Relaxed),
            end,
            "the stamped unit is published"
        );
        writer.write_unit(&[b"new"]).unwrap();
        let reader = region.reader().unwrap();
        for expected in [&b"first"[..], b"stamped", b"new"] {
            let unit = reader.next_unit(Duration::from_secs(1)).unwrap();
            assert_eq!(unit.blob(0).unwrap(), expected);
        }
        assert!(reader.try_next_unit().unwrap().is_none());
    }
}
