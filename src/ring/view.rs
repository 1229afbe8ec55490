//! A committed unit as a reader sees it: its record, validated once, and its blobs, validated on
//! every access.

use crate::layout::{BLOB_ALIGN, COMMITTED, DESCRIPTOR_SIZE, INLINE_BLOBS, RECORD_SIZE};
use crate::storage::{Storage, Store};
use crate::sync::Ordering;
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
        let (ptr, len) = self.blob_range(store, index, false)?;
        // SAFETY: `blob_range` checked that the range lies inside this unit's span and does not
        // cross the ring's end (or is empty at the unit's aligned start); the unit stays
        // reserved for the reader until it is ended, which needs the guard the returned borrow
        // is tied to. `len` <= capacity < isize::MAX.
        Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
    }

    /// Blob `index` as a pointer and length into the store's memory, validated as for
    /// [`blob`](Self::blob); with `write`, the pointer may be written through by a caller that
    /// owns the unit's bytes (the ring's one reader, once it holds the unit), otherwise it is
    /// for reading only (a broadcast subscriber's unit is read by the others at the same time;
    /// the loom model tells the two accesses apart).
    #[inline]
    pub(crate) fn blob_range(
        &self,
        store: &Store,
        index: usize,
        write: bool,
    ) -> Result<(*mut u8, usize)> {
        let bytes = |pos: u64, len: u64| {
            if write {
                store.bytes_for_write(self.lane, pos, len)
            } else {
                store.bytes_for_read(self.lane, pos, len).cast_mut()
            }
        };
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
            // An empty range at the unit's (64-aligned) start, so even empty blobs are aligned
            // for typed views.
            return Ok((bytes(self.start, 0), 0));
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
        let ptr = bytes(self.start + rel, len);
        debug_assert_eq!(ptr as usize % BLOB_ALIGN as usize, 0);
        Ok((ptr, len as usize))
    }
}
