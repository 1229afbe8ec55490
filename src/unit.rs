//! A committed unit as a reader sees it: validation of its record, blob views, and ending it.

use std::fmt;

use crate::layout::{
    align_up, BLOB_ALIGN, COMMITTED, DESCRIPTOR_SIZE, INLINE_BLOBS, RECORD_SIZE, RELEASED,
};
use crate::reader::Reader;
use crate::storage::{Storage, Store};
use crate::sync::{Arc, Ordering};
use crate::wait::{notify, Signal};
use crate::{Error, Result};

/// Where a unit lies. Copied out of shared memory and validated once; blob descriptors are
/// re-validated on every access because the writer's process could change them at any time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View {
    pub start: u64,
    pub span: u64,
    pub count: u64,
    /// Offset of the descriptor table from `start`, when `count > INLINE_BLOBS`.
    pub table: u64,
}

impl View {
    /// Reads and validates the record at `start`; `published` is the head cursor, which the
    /// caller loaded with Acquire (so the record's plain contents are visible).
    pub(crate) fn read(store: &Store, start: u64, published: u64) -> Result<View> {
        let cap = store.capacity();
        let rec = store.record(start);
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
            start,
            span,
            count,
            table,
        })
    }

    /// Blob `index` as a slice of the store's memory.
    pub(crate) fn blob<'s>(&self, store: &'s Store, index: usize) -> Result<&'s [u8]> {
        let i = index as u64;
        if i >= self.count {
            return Err(Error::InvalidArgument(format!(
                "blob index {index} of a unit with {} blobs",
                self.count
            )));
        }
        let (rel, len) = if self.count <= INLINE_BLOBS {
            let rec = store.record(self.start);
            (
                rec.inline[2 * index].load(Ordering::Relaxed),
                rec.inline[2 * index + 1].load(Ordering::Relaxed),
            )
        } else {
            let at = self.start + self.table + i * DESCRIPTOR_SIZE;
            let ptr = store.bytes_for_read(at, DESCRIPTOR_SIZE).cast::<[u64; 2]>();
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
            let ptr = store.bytes_for_read(self.start, 0);
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
        let ptr = store.bytes_for_read(self.start + rel, len);
        debug_assert_eq!(ptr as usize % BLOB_ALIGN as usize, 0);
        // SAFETY: the range was checked to lie inside this unit's span and not to cross the
        // ring's end; the unit stays reserved for the reader until it is ended, which needs the
        // guard the returned borrow is tied to. `len` <= capacity < isize::MAX.
        Ok(unsafe { std::slice::from_raw_parts(ptr, len as usize) })
    }

    /// Ends the unit: its span returns to the writer once every unit before it has ended.
    pub(crate) fn release(&self, store: &Store) {
        let shared = store.shared();
        // SeqCst: this tail load and CAS pair with the SeqCst record loads of other releasers
        // in `advance_tail` (store-buffer pattern, see there).
        let tail = shared.tail.0.load(Ordering::SeqCst);
        let mut moved = false;
        if tail == self.start {
            // The unit at the tail is ours and not marked released, so nobody else can move
            // the tail: the CAS only fails if shared memory was corrupted.
            moved = shared
                .tail
                .0
                .compare_exchange(
                    self.start,
                    self.start + self.span,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                )
                .is_ok();
        }
        if !moved {
            // SeqCst: pairs with the SeqCst tail CAS and record load in `advance_tail` run by
            // the releaser of the unit before ours: either it sees this mark, or our
            // `advance_tail` sees its tail.
            store
                .record(self.start)
                .word
                .store(self.start | RELEASED, Ordering::SeqCst);
        }
        if advance_tail(store) || moved {
            notify(store, Signal::Space);
        }
    }
}

/// Moves the tail over the longest prefix of released units; true if it moved.
///
/// Several threads may run this at once (owned units end anywhere): each step is a CAS from the
/// tail it saw, so the tail moves once per unit. A record read here may already be reused by
/// the writer if the tail passed it meanwhile; then its stamp does not match the tail we saw, or
/// our CAS fails: stale values are never acted on.
fn advance_tail(store: &Store) -> bool {
    let shared = store.shared();
    let mut moved = false;
    loop {
        let tail = shared.tail.0.load(Ordering::SeqCst);
        // Acquire: pairs with the Release store in `UnitWriter::commit`: records before the
        // head are complete.
        let head = shared.head.0.load(Ordering::Acquire);
        if tail >= head {
            break;
        }
        let rec = store.record(tail);
        // SeqCst: pairs with the SeqCst RELEASED store in `View::release`.
        if rec.word.load(Ordering::SeqCst) != tail | RELEASED {
            break;
        }
        let span = rec.span.load(Ordering::Relaxed);
        if span % BLOB_ALIGN != 0 || span == 0 || span > head - tail {
            // Corrupt record: leave the tail; the writer will time out rather than overwrite
            // bytes we cannot account for.
            break;
        }
        // SeqCst: Release half pairs with the writer's Acquire tail load in
        // `UnitWriter::reserve` (every read of these bytes happens before their reuse);
        // SeqCst for the store-buffer pairing described in `View::release`.
        if shared
            .tail
            .0
            .compare_exchange(tail, tail + span, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            moved = true;
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

impl<'r> Unit<'r> {
    /// Number of blobs in the unit.
    pub fn blob_count(&self) -> usize {
        self.view.count as usize
    }

    /// Blob `index`: contiguous, 64-byte aligned, straight from shared memory.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if there is no such blob; [`Error::Corrupt`] if the writer's
    /// descriptor of it points outside the unit.
    pub fn blob(&self, index: usize) -> Result<&[u8]> {
        self.view.blob(self.reader.store(), index)
    }

    /// Every blob in order.
    pub fn blobs(&self) -> impl Iterator<Item = Result<&[u8]>> + '_ {
        (0..self.blob_count()).map(|i| self.blob(i))
    }

    /// The unit's ring position (unique for the region's lifetime).
    pub fn position(&self) -> u64 {
        self.view.start
    }

    /// Bytes the unit occupies in the ring, record and padding included.
    pub fn span(&self) -> u64 {
        self.view.span
    }

    /// Detaches the unit from the reader's borrow: the owned form is `Send + 'static` and keeps
    /// the region mapped. The space stays reserved until it is dropped.
    pub fn into_owned(self) -> OwnedUnit {
        let owned = OwnedUnit {
            store: Arc::clone(self.reader.store_arc()),
            view: self.view,
        };
        std::mem::forget(self);
        owned
    }

    /// Ends the unit (the same as dropping it).
    pub fn end(self) {}
}

impl Drop for Unit<'_> {
    fn drop(&mut self) {
        self.view.release(self.reader.store());
    }
}

impl fmt::Debug for Unit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unit")
            .field("position", &self.view.start)
            .field("span", &self.view.span)
            .field("blobs", &self.view.count)
            .finish()
    }
}

/// A committed unit that owns a handle on its region: it may move to another thread and outlive
/// the reader's borrow. Dropping it ends the unit.
pub struct OwnedUnit {
    store: Arc<Store>,
    view: View,
}

impl OwnedUnit {
    /// Number of blobs in the unit.
    pub fn blob_count(&self) -> usize {
        self.view.count as usize
    }

    /// Blob `index`, as [`Unit::blob`].
    ///
    /// # Errors
    /// As [`Unit::blob`].
    pub fn blob(&self, index: usize) -> Result<&[u8]> {
        self.view.blob(&self.store, index)
    }

    /// Every blob in order.
    pub fn blobs(&self) -> impl Iterator<Item = Result<&[u8]>> + '_ {
        (0..self.blob_count()).map(|i| self.blob(i))
    }

    /// The unit's ring position.
    pub fn position(&self) -> u64 {
        self.view.start
    }

    /// Bytes the unit occupies in the ring.
    pub fn span(&self) -> u64 {
        self.view.span
    }

    /// Ends the unit (the same as dropping it).
    pub fn end(self) {}
}

impl Drop for OwnedUnit {
    fn drop(&mut self) {
        self.view.release(&self.store);
    }
}

impl fmt::Debug for OwnedUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedUnit")
            .field("position", &self.view.start)
            .field("span", &self.view.span)
            .field("blobs", &self.view.count)
            .finish()
    }
}

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
