//! A committed unit as a reader sees it: validation of its record, blob views, and ending it.

use std::fmt;

use crate::layout::{
    align_up, BLOB_ALIGN, COMMITTED, DESCRIPTOR_SIZE, INLINE_BLOBS, RECORD_SIZE, RELEASED,
};
use crate::reader::Reader;
use crate::storage::{Storage, Store};
use crate::sync::{fence, Arc, Ordering};
use crate::wait::{wake_if_waiting, Signal};
use crate::{Error, Result};

/// Where a unit lies. Copied out of shared memory and validated once; blob descriptors are
/// re-validated on every access because the writer's process could change them at any time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View {
    /// The lane the unit lives in (always 0 in SPSC).
    pub lane: u32,
    pub start: u64,
    pub span: u64,
    pub count: u64,
    /// Offset of the descriptor table from `start`, when `count > INLINE_BLOBS`.
    pub table: u64,
}

impl View {
    /// Reads and validates the record at `start` of `lane`; `published` is the lane's head
    /// cursor, which the caller loaded with Acquire (so the record's contents are visible).
    #[inline]
    pub(crate) fn read(store: &Store, lane: u32, start: u64, published: u64) -> Result<View> {
        let cap = store.capacity();
        let rec = store.record(lane, start);
        // Relaxed: the caller's Acquire load of the head made the record visible.
        let word = rec.word.load(Ordering::Relaxed);
        if word != start | COMMITTED {
            return Err(Error::corrupt(
                format!(
                    "unit record stamp {word:#x}, expected {:#x} (a committed unit starting here)",
                    start | COMMITTED
                ),
                start,
            ));
        }
        let span = rec.span.load(Ordering::Relaxed);
        if span % BLOB_ALIGN != 0 || span < RECORD_SIZE || span > published - start || span > cap {
            return Err(Error::corrupt(
                format!(
                    "unit span {span} (must be a multiple of 64 in 64..={})",
                    (published - start).min(cap)
                ),
                start,
            ));
        }
        let count = rec.count.load(Ordering::Relaxed);
        let mut table = 0;
        if count > INLINE_BLOBS {
            table = rec.table.load(Ordering::Relaxed);
            let fits = count
                .checked_mul(DESCRIPTOR_SIZE)
                .is_some_and(|bytes| table <= span && bytes <= span - table);
            let phys = (start + table.min(span)) & (cap - 1);
            if table % BLOB_ALIGN != 0
                || table < RECORD_SIZE
                || !fits
                || phys + count * DESCRIPTOR_SIZE > cap
            {
                return Err(Error::corrupt(
                    format!(
                        "unit of span {span} claims {count} blobs with a table at offset {table}"
                    ),
                    start,
                ));
            }
        }
        Ok(View {
            lane,
            start,
            span,
            count,
            table,
        })
    }

    /// Blob `index` as a slice of the store's memory.
    #[inline]
    pub(crate) fn blob<'s>(&self, store: &'s Store, index: usize) -> Result<&'s [u8]> {
        let i = index as u64;
        if i >= self.count {
            return Err(Error::InvalidArgument(format!(
                "blob index {index} of a unit with {} blobs",
                self.count
            )));
        }
        let (rel, len) = if self.count <= INLINE_BLOBS {
            let rec = store.record(self.lane, self.start);
            (
                rec.inline[2 * index].load(Ordering::Relaxed),
                rec.inline[2 * index + 1].load(Ordering::Relaxed),
            )
        } else {
            let at = self.start + self.table + i * DESCRIPTOR_SIZE;
            let ptr = store
                .bytes_for_read(self.lane, at, DESCRIPTOR_SIZE)
                .cast::<[u64; 2]>();
            // SAFETY: `View::read` checked that the table lies inside the unit's span and does
            // not cross the ring's end, so these 16 bytes are in bounds; the table is 64-aligned
            // and the descriptor 16-aligned within it. Volatile: another process may write it.
            let [rel, len] = unsafe { ptr.read_volatile() };
            (rel, len)
        };
        let cap = store.capacity();
        if len == 0 {
            // An empty slice at the unit's (64-aligned) start, so even empty blobs are aligned
            // for typed views.
            let ptr = store.bytes_for_read(self.lane, self.start, 0);
            // SAFETY: a zero-length slice at a non-null, aligned pointer into the ring.
            return Ok(unsafe { std::slice::from_raw_parts(ptr, 0) });
        }
        let ok = rel % BLOB_ALIGN == 0
            && rel >= RECORD_SIZE
            && rel <= self.span
            && len <= self.span - rel
            && ((self.start + rel) & (cap - 1)) + len <= cap;
        if !ok {
            return Err(Error::corrupt(
                format!(
                    "blob {index}: offset {rel} length {len} does not fit a unit of span {}",
                    self.span
                ),
                self.start,
            ));
        }
        let ptr = store.bytes_for_read(self.lane, self.start + rel, len);
        debug_assert_eq!(ptr as usize % BLOB_ALIGN as usize, 0);
        // SAFETY: the range was checked to lie inside this unit's span and not to cross the
        // ring's end; the unit stays reserved for the reader until it is ended, which needs the
        // guard the returned borrow is tied to. `len` <= capacity < isize::MAX.
        Ok(unsafe { std::slice::from_raw_parts(ptr, len as usize) })
    }

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
    pub(crate) fn release(&self, store: &Store) {
        self.release_with(store, false);
    }

    /// [`release`](Self::release) for a caller that knows no unit after this one was handed
    /// out yet (an SPSC reader ending, on its own thread, the last unit it took): then nobody
    /// can have marked the next unit, so the in-order path skips the mark check; only the
    /// wake-up handshake with a sleeping writer remains. When the next unit is handed out
    /// later, by this same thread, our tail store is ordered before it.
    #[inline]
    pub(crate) fn release_with(&self, store: &Store, next_not_taken: bool) {
        let lane = self.lane;
        let tail = &store.lane(lane).tail.0;
        let end = self.start + self.span;
        // A stale (smaller) tail only sends us down the out-of-order path, which is correct for
        // any tail; the tail never passes an unmarked unit, so it cannot be larger.
        // Acquire: pairs with the Release tail store (or CAS) that moved the tail to our unit.
        // Our plain store below is not part of that store's release sequence, so without this
        // the writer, acquiring our tail, would not be ordered after the previous unit's reads
        // when that unit was ended on another thread (loom found this with two MPMC readers).
        if tail.load(Ordering::Acquire) == self.start {
            // Release: pairs with the writer's Acquire tail load in `UnitWriter::reserve`: our
            // reads of this unit's bytes happen before the writer reuses them.
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
            // Release: pairs with the Acquire mark load in `advance_tail`, which passes our
            // reads of the unit on to the writer through its tail CAS.
            store
                .record(lane, self.start)
                .word
                .store(self.start | RELEASED, Ordering::Release);
            after_mark(store, lane);
        }
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

/// Loads a lane's head and tail and checks they can be a ring's cursors: 64-aligned, tail not
/// past the head, at most one ring apart. Used where a handle attaches.
pub(crate) fn load_cursors(store: &Store, lane: u32) -> Result<(u64, u64)> {
    let cursors = store.lane(lane);
    // Acquire: pairs with the Release store in `UnitWriter::commit`.
    let head = cursors.head.0.load(Ordering::Acquire);
    // Acquire: pairs with the tail stores in `View::release` and `advance_tail`.
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

/// Moves the tail over the longest prefix of marked (released) units; true if it moved.
/// Call after a SeqCst fence that follows the caller's own store (see [`View::release`]).
///
/// Several threads may run this at once (owned units end anywhere): each step is a CAS from the
/// tail it saw, so the tail moves once per unit. A record read here may already be reused by
/// the writer if the tail passed it meanwhile; then its stamp does not match the tail we saw, or
/// our CAS fails: stale values are never acted on.
fn advance_tail(store: &Store, lane: u32) -> bool {
    let shared = store.lane(lane);
    let mut moved = false;
    loop {
        // Acquire: pairs with the Release tail store in `View::release` and the tail CAS below
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
        // Acquire: pairs with the Release mark in `View::release`.
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
            // Pairs with the fence of the releaser of the next unit (see `View::release`)
            // before we load its mark, and with a sleeping writer's fence.
            fence(Ordering::SeqCst);
        }
    }
    moved
}

/// A committed unit, borrowed from its [`Reader`]. Dropping it ends the unit.
///
/// Blob views borrow from the guard, so the borrow checker rejects any use of a view after the
/// unit was ended. Units may be ended in any order.
pub struct Unit<'r> {
    pub(crate) reader: &'r Reader,
    pub(crate) view: View,
}

impl Unit<'_> {
    fn store(&self) -> &Store {
        self.reader.store()
    }

    /// Detaches the unit from the reader's borrow: the owned form is `Send + 'static` and keeps
    /// the region mapped. The space stays reserved until it is dropped.
    pub fn into_owned(self) -> OwnedUnit {
        let owned = OwnedUnit {
            store: Arc::clone(self.reader.store_arc()),
            view: self.view,
            _lease: self.reader.lease(),
        };
        std::mem::forget(self);
        owned
    }
}

impl Drop for Unit<'_> {
    fn drop(&mut self) {
        let next_not_taken = self.reader.is_last_taken(self.view.start + self.view.span);
        self.view.release_with(self.reader.store(), next_not_taken);
    }
}

/// A committed unit that owns a handle on its region: it may move to another thread and outlive
/// the reader's borrow. Dropping it ends the unit.
pub struct OwnedUnit {
    pub(crate) store: Arc<Store>,
    pub(crate) view: View,
    /// MPMC: keeps the reader's slot attached while this unit carries its tag (dropped after
    /// the unit is ended, in `Drop`).
    _lease: Option<Arc<crate::participants::SlotLease>>,
}

impl OwnedUnit {
    fn store(&self) -> &Store {
        &self.store
    }
}

impl Drop for OwnedUnit {
    fn drop(&mut self) {
        self.view.release(&self.store);
    }
}

/// The read access both unit forms share, written once.
macro_rules! unit_access {
    ($unit:ty, $name:literal) => {
        impl $unit {
            /// Number of blobs in the unit.
            pub fn blob_count(&self) -> usize {
                self.view.count as usize
            }

            /// Blob `index`: contiguous, 64-byte aligned, straight from shared memory.
            ///
            /// # Errors
            /// [`Error::InvalidArgument`] if there is no such blob; [`Error::Corrupt`] if the
            /// writer's descriptor of it points outside the unit.
            #[inline]
            pub fn blob(&self, index: usize) -> Result<&[u8]> {
                self.view.blob(self.store(), index)
            }

            /// Every blob in order.
            pub fn blobs(&self) -> impl Iterator<Item = Result<&[u8]>> + '_ {
                (0..self.blob_count()).map(|i| self.blob(i))
            }

            /// The unit's ring position in its lane (unique for the region's lifetime within
            /// the lane: `(lane(), position())` names a unit).
            pub fn position(&self) -> u64 {
                self.view.start
            }

            /// The lane the unit came from: always 0 in an SPSC region, the writer's lane
            /// ([`Writer::lane`](crate::Writer::lane)) in an MPMC region.
            pub fn lane(&self) -> u32 {
                self.view.lane
            }

            /// Bytes the unit occupies in the ring, record and padding included.
            pub fn span(&self) -> u64 {
                self.view.span
            }

            /// Ends the unit (the same as dropping it).
            pub fn end(self) {}
        }

        impl fmt::Debug for $unit {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct($name)
                    .field("lane", &self.view.lane)
                    .field("position", &self.view.start)
                    .field("span", &self.view.span)
                    .field("blobs", &self.view.count)
                    .finish()
            }
        }
    };
}

unit_access!(Unit<'_>, "Unit");
unit_access!(OwnedUnit, "OwnedUnit");

/// Bytes a unit with blobs of these lengths needs, record and alignment included, not counting
/// padding at the ring's end (which the [`crate::Writer::max_unit`] limit already allows for).
pub fn unit_size(blob_lengths: &[usize]) -> u64 {
    let blobs = blob_lengths.iter().fold(0u64, |sum, &l| {
        sum.saturating_add(align_up((l as u64).min(u64::MAX / 2)))
    });
    let table = if blob_lengths.len() as u64 > INLINE_BLOBS {
        align_up(blob_lengths.len() as u64 * DESCRIPTOR_SIZE)
    } else {
        0
    };
    RECORD_SIZE.saturating_add(blobs).saturating_add(table)
}
