//! The committed units between the tail and the head, read from their records: how a writer
//! attaching learns what is in the ring, and how a joining subscriber counts the units before
//! the head. Both callers keep the writer off these bytes (the writer is the only writer; a
//! joining subscriber pins the tail first).

use crate::layout::{BLOB_ALIGN, COMMITTED, RECORD_SIZE};
use crate::storage::{Storage, Store};
use crate::sync::Ordering;
use crate::{Error, Result};

/// Calls `each` with the start of every unit from `tail` to `head`, in order.
///
/// # Errors
/// [`Error::Corrupt`] if the cursors are not a ring state, or a record between them is not a
/// committed unit that ends at or before the head.
pub(crate) fn each_unit(
    store: &Store,
    tail: u64,
    head: u64,
    mut each: impl FnMut(u64),
) -> Result<()> {
    if tail % BLOB_ALIGN != 0
        || head % BLOB_ALIGN != 0
        || head < tail
        || head - tail > store.capacity()
    {
        return Err(Error::corrupt(
            format!("broadcast tail {tail} and head {head} are not a valid ring state"),
            tail,
        ));
    }
    let mut at = tail;
    while at < head {
        let rec = store.record(0, at);
        // Acquire: pairs with the Release stamp store of the commit that wrote the unit (the
        // caller's Acquire head load covers it as well).
        let word = rec.word.load(Ordering::Acquire);
        let span = rec.span.load(Ordering::Relaxed);
        if word != at | COMMITTED
            || span % BLOB_ALIGN != 0
            || span < RECORD_SIZE
            || span > head - at
        {
            return Err(Error::corrupt(
                format!(
                    "broadcast unit at {at} (stamp {word:#x}, span {span}) below the head {head}"
                ),
                at,
            ));
        }
        each(at);
        at += span;
    }
    Ok(())
}
