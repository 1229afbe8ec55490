//! The broadcast writer's side: which bytes it may reuse. The lane's tail is the reclaim
//! limit, written by the writer alone (docs/BROADCAST.md, "Writer: reclaiming space").

use std::collections::VecDeque;

use crate::storage::{Storage, Store};
use crate::sync::{fence, Ordering};
use crate::Result;

use super::units::each_unit;
use super::{seqlock, slots};

/// The writer's private account of the units in the ring: their starts in order, and how many
/// units lie before the first. Nothing here is read from memory another process can write
/// after the writer attached.
#[derive(Debug)]
pub(crate) struct Reclaimer {
    /// Starts of the committed units at or after the published tail, oldest first.
    units: VecDeque<u64>,
    /// Units before `units[0]` (before the head when `units` is empty).
    seq: u64,
    /// The tail as last published.
    published: u64,
}

impl Reclaimer {
    /// The account of a writer attaching to the lane: the units from the tail to the head,
    /// counted from their records (the previous writer, if any, is gone; subscribers never
    /// write records).
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the cursors or a record between them are impossible.
    pub(crate) fn attach(store: &Store, head: u64) -> Result<Reclaimer> {
        let (tail, seq) = seqlock::read(store)?;
        let mut units = VecDeque::new();
        each_unit(store, tail, head, |at| units.push_back(at))?;
        Ok(Reclaimer {
            units,
            seq,
            published: tail,
        })
    }

    /// Records a committed unit starting at `start`.
    #[inline]
    pub(crate) fn committed(&mut self, start: u64) {
        debug_assert!(self.units.back().map_or(true, |&last| last < start));
        self.units.push_back(start);
    }

    /// Tries to make every byte before `end` reusable: publishes a new tail if the pins allow
    /// one at or past `end - capacity` and returns it once no attached subscriber pins below
    /// it. `head` is where the unit being written starts (every unit before it committed).
    ///
    /// `Ok(None)`: a subscriber holds the space; wait for a pin to move and call again.
    ///
    /// The fence pair with leaky subscribers (docs/BROADCAST.md): the tail is published, then
    /// a SeqCst fence (F_w), then the pins are scanned again. A subscriber stores its pin, then
    /// its fence (F_s), then loads the tail. Either F_w comes first and the subscriber sees the
    /// new tail (and skips what it covers), or F_s does and this scan sees the pin (and waits).
    /// So no byte a subscriber reads is reused under it.
    pub(crate) fn reclaim(&mut self, store: &Store, end: u64, head: u64) -> Option<u64> {
        let cap = store.capacity();
        let need = end.saturating_sub(cap);
        // The first unit boundary at or past `need`.
        let first = self.units.partition_point(|&s| s < need);
        let least = self
            .units
            .get(first)
            .copied()
            .unwrap_or(head)
            .max(self.published);
        let limit = slots::min_pin(store);
        if limit < least {
            return None;
        }
        // A quarter ring more than needed, where the pins allow it: the next units then fit
        // without coming back here (each visit scans every slot and fences).
        let aim = need.saturating_add(cap / 4).min(limit).min(head).max(least);
        let (tail, below) = if aim >= head {
            (head, self.units.len())
        } else {
            let k = self.units.partition_point(|&s| s <= aim) - 1;
            (self.units[k], k)
        };
        debug_assert!(tail >= least && tail <= limit.min(head));
        if tail > self.published {
            seqlock::publish(store, tail, self.seq + below as u64);
            self.published = tail;
        }
        // SeqCst fence (F_w): pairs with the fence of a subscriber taking a unit
        // (`take::Cursor::take`) or joining (`slots::join`) after storing its pin.
        fence(Ordering::SeqCst);
        if slots::min_pin(store) < self.published {
            return None;
        }
        let gone = self.units.partition_point(|&s| s < self.published);
        self.units.drain(..gone);
        self.seq += gone as u64;
        debug_assert!(end - self.published <= cap);
        Some(self.published)
    }
}
