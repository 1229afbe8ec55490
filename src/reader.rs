//! The reading side of a ring: takes committed units in order, hands them out as guards.

use std::cell::Cell;
use std::fmt;
use std::time::Duration;

use crate::error::Role;
use crate::layout::WRITER_CLOSED;
use crate::storage::{Storage, Store};
use crate::sync::{Arc, Ordering};
use crate::unit::{Unit, View};
use crate::wait::{deadline_after, notify, wait_for, Signal};
use crate::{Error, Result};

/// The single reader of an SPSC ring.
///
/// Units come out in commit order as [`Unit`] guards; any number may be held at once and ended
/// in any order. A reader is `Send` but not `Sync`: one thread takes units at a time (owned
/// units may be ended from any thread).
pub struct Reader {
    store: Arc<Store>,
    /// Position of the next unit to hand out.
    next: Cell<u64>,
    /// Last head cursor loaded: units before it need no atomic load of the head.
    head_cache: Cell<u64>,
}

impl Reader {
    pub(crate) fn attach(store: Arc<Store>) -> Result<Reader> {
        let (_, tail) = crate::unit::load_cursors(&store)?;
        crate::peer::register(store.shared(), Role::Reader)?;
        Ok(Reader {
            store,
            next: Cell::new(tail),
            head_cache: Cell::new(tail),
        })
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn store_arc(&self) -> &Arc<Store> {
        &self.store
    }

    /// The next committed unit, if there is one now. Never blocks.
    ///
    /// # Errors
    /// [`Error::Closed`] once the writer closed the ring and every committed unit was taken;
    /// [`Error::Corrupt`] if the next record is impossible (the reader does not move past it).
    pub fn try_next_unit(&self) -> Result<Option<Unit<'_>>> {
        let pos = self.next.get();
        if pos == self.head_cache.get() {
            let signals = &self.store.shared().signals.0;
            // Acquire: pairs with the Release `fetch_or` in `Writer::drop`; loaded before the
            // head so that a closed flag seen here comes with the writer's final head.
            let closed = signals.closed.load(Ordering::Acquire);
            // Acquire: pairs with the Release store in `UnitWriter::commit`.
            let head = self.store.shared().head.0.load(Ordering::Acquire);
            if head < pos || head - pos > self.store.capacity() {
                return Err(Error::corrupt(
                    format!("head cursor {head} is not within one ring of the reader at {pos}"),
                    pos,
                ));
            }
            self.head_cache.set(head);
            if head == pos {
                return if closed & WRITER_CLOSED != 0 {
                    Err(Error::Closed(Role::Writer))
                } else {
                    Ok(None)
                };
            }
        }
        let view = View::read(&self.store, pos, self.head_cache.get())?;
        self.next.set(pos + view.span);
        Ok(Some(Unit { reader: self, view }))
    }

    /// The next committed unit, waiting at most `timeout` for one.
    ///
    /// Spins briefly, then sleeps on a futex in the region's header; a writer that commits wakes
    /// it. While sleeping it checks every 100 ms that the writer's process is alive.
    ///
    /// # Errors
    /// [`Error::Timeout`] after `timeout`; [`Error::Closed`] when the writer closed the ring and
    /// everything committed was taken; [`Error::PeerGone`] when the writer's process died (after
    /// everything it committed was taken); [`Error::Corrupt`] as for
    /// [`try_next_unit`](Self::try_next_unit).
    pub fn next_unit(&self, timeout: Duration) -> Result<Unit<'_>> {
        if let Some(unit) = self.try_next_unit()? {
            return Ok(unit);
        }
        let deadline = deadline_after(Some(timeout));
        let view = wait_for(
            &self.store,
            Signal::Data,
            deadline,
            "a committed unit",
            Role::Writer,
            || Ok(self.try_next_unit()?.map(Unit::into_view)),
        )?;
        Ok(Unit { reader: self, view })
    }

    /// Bytes in the ring.
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
        // Release: pairs with the Acquire load of `closed` in `UnitWriter::reserve`.
        self.store
            .shared()
            .signals
            .0
            .closed
            .fetch_or(crate::layout::READER_CLOSED, Ordering::Release);
        notify(&self.store, Signal::Space);
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
