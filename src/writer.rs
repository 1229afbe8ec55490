//! The writing side of a ring: begins units, bump-allocates blobs, commits.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::broadcast::reclaim::Reclaimer;
use crate::broadcast::slots::detach_dead;
use crate::codec::{self, BlobSink, EncodeOptions};
use crate::layout::{align_up, BLOB_ALIGN, COMMITTED, DESCRIPTOR_SIZE, INLINE_BLOBS, RECORD_SIZE};
use crate::ring::cursors::load_cursors;
use crate::ring::participants::{
    attach_writer, check_readers, detach_writer, readers_gone, shut_down,
};
use crate::ring::presence::{still_held, Held};
use crate::spin::SpinBudget;
use crate::storage::{Storage, Store};
use crate::sync::{Arc, Ordering};
use crate::wait::{deadline_after, notify, wait_for, Signal};
use crate::{Error, Result};

/// A writer: the single writer of an SPSC ring, or one of an MPMC region's writers.
///
/// Units are written with [`begin_unit`](Self::begin_unit): blobs are bump-allocated in the
/// ring ([`UnitWriter::push`] copies bytes in, [`UnitWriter::blob_mut`] hands out bytes to
/// fill in place) and [`UnitWriter::commit`] publishes them all at once. Values go through
/// [`send`](Self::send). In an MPMC region each writer holds a lane of its own (an SPSC ring
/// on the writing side), so writers never contend with one another and a slow or dead writer
/// holds back nobody else's units.
///
/// Waits for space happen inside `push`, `blob_mut`, `commit` and `send`, so their deadline is
/// the writer's: [`set_timeout`](Self::set_timeout) (default: none, waiting as long as a reader
/// lives); the `try_` variants never wait.
///
/// Dropping the writer detaches it: once every writer detached, readers drain what was
/// committed, then get [`Error::Closed`]. Another writer may then attach and continue the
/// stream after the last committed unit, as it may take over from a writer whose process died.
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
///
/// let mut unit = writer.begin_unit()?;
/// unit.push(b"a header")?;                  // copied in
/// unit.blob_mut(1000)?.fill(7);              // filled in place
/// unit.commit()?;
/// writer.write_unit(&[b"one", b"two"])?;     // the same in one call
///
/// writer.set_timeout(Some(Duration::ZERO));  // a full ring fails at once from now on
/// let too_big = writer.begin_unit()?.blob_mut(1 << 16).map(|_| ());
/// assert!(matches!(too_big, Err(Error::UnitTooLarge { .. })));
/// # drop(reader);
/// # Ok::<(), shm_arena::Error>(())
/// ```
pub struct Writer {
    store: Arc<Store>,
    /// The lane this writer fills (0 in SPSC).
    lane: u32,
    /// Our hold on the lane's writer slot.
    held: Held,
    /// Everything before this position is committed (we are the only writer).
    head: u64,
    /// Last tail loaded: space before `tail_cache + capacity` needs no atomic load.
    tail_cache: u64,
    /// How long one wait for space may take; `None`: no limit.
    timeout: Option<Duration>,
    /// How long a wait for space spins before it sleeps (adapts to how long waits turn out).
    spin: SpinBudget,
    /// Blob descriptors (offset from the unit's start, length) of the unit being written.
    descriptors: Vec<(u64, u64)>,
    /// In a [`Batch`]: how many committed units may wait for publication; 0: none (every
    /// commit publishes).
    batch_limit: u32,
    /// Committed units whose head store (and wake-up) has not happened yet.
    pending: u32,
    /// In a broadcast region: the units in the ring, for reclaiming space past subscribers.
    broadcast: Option<Reclaimer>,
}

impl Writer {
    pub(crate) fn attach(store: Arc<Store>) -> Result<Writer> {
        let (lane, held) = attach_writer(&store)?;
        let cursors = load_cursors(&store, lane).and_then(|(head, tail)| {
            let broadcast = if store.geometry().broadcast {
                Some(Reclaimer::attach(&store, head)?)
            } else {
                None
            };
            Ok((head, tail, broadcast))
        });
        let (head, tail, broadcast) = match cursors {
            Ok(cursors) => cursors,
            Err(e) => {
                detach_writer(&store, lane, held);
                return Err(e);
            }
        };
        Ok(Writer {
            store,
            lane,
            held,
            head,
            tail_cache: tail,
            timeout: None,
            spin: SpinBudget::default(),
            descriptors: Vec::new(),
            batch_limit: 0,
            pending: 0,
            broadcast,
        })
    }

    /// Limits how long any one wait for space may take; `None` (the default) waits as long as
    /// the reader lives.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// The limit set by [`set_timeout`](Self::set_timeout).
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Bytes in the ring (in MPMC: in this writer's lane).
    pub fn capacity(&self) -> u64 {
        self.store.capacity()
    }

    /// The lane this writer fills: 0 in SPSC; in MPMC the lane its units come from
    /// ([`Unit::lane`](crate::Unit::lane)).
    pub fn lane(&self) -> u32 {
        self.lane
    }

    /// The largest unit this ring accepts, record, alignment and descriptor table included:
    /// half the capacity, so that a unit always fits whatever its start, even when a blob has to
    /// skip the ring's end (see [`unit_size`](crate::unit_size)).
    pub fn max_unit(&self) -> u64 {
        self.store.capacity() / 2
    }

    /// Starts a unit. Blobs added to it wait for space up to the writer's timeout.
    ///
    /// # Errors
    /// [`Error::Closed`] if every reader that attached has detached (a new one may attach at
    /// any time, so this is checked again whenever the writer waits for space:
    /// [`UnitWriter::push`] reports `Closed` / `PeerGone` when the ring is full and no reader
    /// is left).
    #[inline]
    pub fn begin_unit(&mut self) -> Result<UnitWriter<'_>> {
        self.begin(true)
    }

    /// Starts a unit whose blobs never wait: a full ring gives [`Error::WouldBlock`].
    ///
    /// # Errors
    /// As [`begin_unit`](Self::begin_unit). With every MPMC reader gone, a full lane gives
    /// [`Error::WouldBlock`] (this never waits, so it never looks at the readers).
    pub fn try_begin_unit(&mut self) -> Result<UnitWriter<'_>> {
        self.begin(false)
    }

    #[inline]
    fn begin(&mut self, blocking: bool) -> Result<UnitWriter<'_>> {
        readers_gone(&self.store, self.lane)?;
        self.descriptors.clear();
        let start = self.head;
        debug_assert_eq!(start % BLOB_ALIGN, 0);
        Ok(UnitWriter {
            start,
            cursor: start + RECORD_SIZE,
            used: RECORD_SIZE,
            blocking,
            writer: self,
        })
    }

    /// Writes one unit made of `blobs`, copied in, and commits it.
    ///
    /// # Errors
    /// As [`UnitWriter::push`] and [`UnitWriter::commit`].
    pub fn write_unit(&mut self, blobs: &[&[u8]]) -> Result<()> {
        let mut unit = self.begin_unit()?;
        for blob in blobs {
            unit.push(blob)?;
        }
        unit.commit()
    }

    /// Starts a batch: units committed through it are published together, with one head
    /// store and one wake-up of a sleeping reader per `max_units` units instead of one per
    /// unit. The batch derefs to the writer, so `begin_unit`, `write_unit` and `send` work on
    /// it as on the writer.
    ///
    /// A unit of a batch becomes visible to readers at the latest when the batch is flushed
    /// ([`Batch::flush`]) or dropped, when `max_units` units are pending, or when the writer
    /// has to wait for space (a reader that keeps up may take a unit earlier, by its record's
    /// stamp). So a batch trades latency for throughput: use it for streams of small units,
    /// and keep its scope short where latency matters. `max_units` of 0 or 1 publishes every
    /// unit at once, as without a batch.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use shm_arena::Region;
    ///
    /// let region = Region::create(1 << 16)?;
    /// let (mut writer, reader) = (region.writer()?, region.reader()?);
    /// {
    ///     let mut batch = writer.begin_batch(64);
    ///     for i in 0..100u32 {
    ///         batch.write_unit(&[&i.to_le_bytes()])?; // published 64 at a time
    ///     }
    /// } // the last 36 are published here
    /// let units = reader.next_batch(128, Duration::from_secs(1))?;
    /// assert_eq!(units.len(), 100);
    /// assert_eq!(units.get(99).unwrap().blob(0)?, 99u32.to_le_bytes());
    /// # Ok::<(), shm_arena::Error>(())
    /// ```
    pub fn begin_batch(&mut self, max_units: u32) -> Batch<'_> {
        self.batch_limit = max_units;
        Batch { writer: self }
    }

    /// Publishes every committed unit whose publication a batch deferred.
    #[inline]
    fn publish(&mut self) {
        publish(&self.store, self.lane, self.head, &mut self.pending);
    }

    /// Encodes `value` as one unit and commits it, waiting for space up to the writer's
    /// timeout.
    ///
    /// Byte strings (`serde_bytes`, [`codec::Bytes`]) and [`codec::Array`]s of at least the
    /// offload threshold (4096 bytes by default, see [`send_with`](Self::send_with)) are copied
    /// once, straight into the ring; the rest is encoded into a small envelope (the format is
    /// specified in `docs/FORMAT.md`). A plain `Vec<u8>` is a serde sequence and stays inline:
    /// wrap it in `serde_bytes` or [`codec::Bytes`] to offload it. Readers decode it with
    /// [`Unit::decode`](crate::Unit::decode).
    ///
    /// # Errors
    /// [`Error::Codec`] if serialization fails; [`Error::UnitTooLarge`] if the encoded value
    /// needs more than [`max_unit`](Self::max_unit); otherwise as [`UnitWriter::push`]. On
    /// error nothing is published.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use serde::{Deserialize, Serialize};
    /// use shm_arena::{codec::Array, Region};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Frame<'a> {
    ///     name: &'a str,
    ///     #[serde(borrow)]
    ///     pixels: Array<'a, f32>,
    /// }
    ///
    /// let region = Region::create(1 << 20)?;
    /// let (mut writer, reader) = (region.writer()?, region.reader()?);
    /// let data = vec![0.5f32; 64 * 64];
    /// writer.send(&Frame { name: "cam0", pixels: Array::from_slice(&data, &[64, 64])? })?;
    ///
    /// let unit = reader.next_unit(Duration::from_secs(1))?;
    /// let frame: Frame = unit.decode()?;          // borrows from shared memory
    /// assert_eq!(frame.name, "cam0");
    /// assert_eq!(frame.pixels.shape(), &[64, 64]);
    /// assert!(frame.pixels.is_borrowed());        // zero copies out
    /// assert_eq!(frame.pixels.as_slice()[4095], 0.5);
    /// # Ok::<(), shm_arena::Error>(())
    /// ```
    pub fn send<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.send_with(value, &EncodeOptions::default())
    }

    /// [`send`](Self::send) with encoder options (the offload threshold).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_with<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        options: &EncodeOptions,
    ) -> Result<()> {
        let mut unit = self.begin_unit()?;
        codec::arena::encode_unit(value, options, &mut unit)?;
        unit.commit()
    }

    /// [`send`](Self::send) that never waits: a full ring gives [`Error::WouldBlock`] and
    /// nothing is published.
    ///
    /// # Errors
    /// As [`send`](Self::send), plus [`Error::WouldBlock`].
    pub fn try_send<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.try_send_with(value, &EncodeOptions::default())
    }

    /// [`try_send`](Self::try_send) with encoder options.
    ///
    /// # Errors
    /// As [`try_send`](Self::try_send).
    pub fn try_send_with<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        options: &EncodeOptions,
    ) -> Result<()> {
        let mut unit = self.try_begin_unit()?;
        codec::arena::encode_unit(value, options, &mut unit)?;
        unit.commit()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Not in a copy made by `fork`, nor after a takeover: the lane is someone else's then.
        if still_held(&self.store.lane(self.lane).writer.0, self.held) {
            self.publish();
        }
        detach_writer(&self.store, self.lane, self.held);
    }
}

/// Stores the head, publishing every unit committed before it, and wakes sleeping readers, if
/// units are `pending`.
#[inline]
fn publish(store: &Store, lane: u32, head: u64, pending: &mut u32) {
    if *pending == 0 {
        return;
    }
    // Release: pairs with the Acquire load of the head in the readers (`SpscCursor::take`,
    // `claim_in_lane`, `advance_tail`): the records and blob bytes of every unit before it are
    // visible to them.
    store.lane(lane).head.0.store(head, Ordering::Release);
    *pending = 0;
    notify(store, Signal::Data);
}

/// A run of units published together (see [`Writer::begin_batch`]). Derefs to the writer;
/// dropping it publishes what is pending and ends the batch.
///
/// # Examples
///
/// ```
/// use shm_arena::Region;
///
/// let region = Region::create(1 << 16)?;
/// let mut writer = region.writer()?;
/// let _reader = region.reader()?;
/// let mut batch = writer.begin_batch(100);
/// batch.write_unit(&[b"one"])?;
/// batch.send(&"two")?;
/// assert_eq!(batch.pending(), 2);
/// assert_eq!(region.cursors().head, 0); // not published yet
/// batch.flush();
/// assert_eq!(batch.pending(), 0);
/// assert!(region.cursors().head > 0);
/// # Ok::<(), shm_arena::Error>(())
/// ```
pub struct Batch<'w> {
    writer: &'w mut Writer,
}

impl Batch<'_> {
    /// Publishes every unit committed so far in the batch; the batch goes on.
    pub fn flush(&mut self) {
        self.writer.publish();
    }

    /// Committed units not published yet.
    pub fn pending(&self) -> u32 {
        self.writer.pending
    }
}

impl std::ops::Deref for Batch<'_> {
    type Target = Writer;

    fn deref(&self) -> &Writer {
        self.writer
    }
}

impl std::ops::DerefMut for Batch<'_> {
    fn deref_mut(&mut self) -> &mut Writer {
        self.writer
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.writer.publish();
        self.writer.batch_limit = 0;
    }
}

impl fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("limit", &self.writer.batch_limit)
            .field("pending", &self.writer.pending)
            .finish()
    }
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("lane", &self.lane)
            .field("head", &self.head)
            .field("capacity", &self.store.capacity())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A unit being written. Blobs are bump-allocated one after another; [`commit`](Self::commit)
/// publishes them all at once. Dropping it without committing aborts the unit: nothing was
/// published and its space is reused by the next unit.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shm_arena::Region;
///
/// let region = Region::create(1 << 16)?;
/// let (mut writer, reader) = (region.writer()?, region.reader()?);
///
/// let mut unit = writer.begin_unit()?;
/// unit.push(b"aborted")?;
/// drop(unit);                                   // never published
///
/// let mut unit = writer.begin_unit()?;
/// let index = unit.push(b"kept")?;
/// let samples = unit.blob_mut(8 * 4)?;          // fill in place, e.g. from a decoder
/// samples.copy_from_slice(&[0u8; 32]);
/// assert_eq!((index, unit.blob_count()), (0, 2));
/// unit.commit()?;
///
/// let got = reader.next_unit(Duration::from_secs(1))?;
/// assert_eq!(got.blob(0)?, b"kept");
/// # Ok::<(), shm_arena::Error>(())
/// ```
pub struct UnitWriter<'w> {
    writer: &'w mut Writer,
    start: u64,
    /// Next free position.
    cursor: u64,
    /// Bytes counted against `max_unit`: record, aligned blobs (not the skip at the ring's end).
    used: u64,
    blocking: bool,
}

impl UnitWriter<'_> {
    /// Appends a blob holding a copy of `bytes`; returns its index in the unit.
    ///
    /// # Errors
    /// [`Error::UnitTooLarge`] at once if the unit would exceed
    /// [`Writer::max_unit`]; [`Error::WouldBlock`] (from `try_begin_unit`) or
    /// [`Error::Timeout`] if the ring stays full; [`Error::Closed`] or [`Error::PeerGone`] if
    /// the reader went away while waiting. The unit stays open after an error.
    pub fn push(&mut self, bytes: &[u8]) -> Result<usize> {
        let index = self.writer.descriptors.len();
        let dst = self.blob_mut(bytes.len())?;
        dst.copy_from_slice(bytes);
        Ok(index)
    }

    /// Appends a blob of `len` bytes and returns it to be filled in place (for example by a
    /// decoder writing straight into shared memory). Its previous contents are unspecified.
    ///
    /// # Errors
    /// As [`push`](Self::push).
    #[inline]
    pub fn blob_mut(&mut self, len: usize) -> Result<&mut [u8]> {
        let len = len as u64;
        let pos = self.alloc(len)?;
        self.writer.descriptors.push((pos - self.start, len));
        if len == 0 {
            return Ok(&mut []);
        }
        let ptr = self
            .writer
            .store
            .bytes_for_write(self.writer.lane, pos, len);
        debug_assert_eq!(ptr as usize % BLOB_ALIGN as usize, 0);
        // SAFETY: `alloc` reserved [pos, pos + len) for this unit: it lies inside the ring
        // without crossing its end, and the tail is at least pos + len - capacity, so no reader
        // holds those bytes. The slice borrows `self`, so no other blob of this unit aliases it.
        Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len as usize) })
    }

    /// Sets the writer's timeout (see [`Writer::set_timeout`]) while this unit is open: the
    /// deadline of its next waits for space.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.writer.timeout = timeout;
    }

    /// The unit's ring position: where its record starts, the [`Unit::position`] its reader
    /// will see (with [`Writer::lane`], it names the unit).
    ///
    /// [`Unit::position`]: crate::Unit::position
    pub fn position(&self) -> u64 {
        self.start
    }

    /// Number of blobs so far.
    pub fn blob_count(&self) -> usize {
        self.writer.descriptors.len()
    }

    /// Bytes the unit needs so far, counted against [`Writer::max_unit`].
    pub fn size(&self) -> u64 {
        self.used
    }

    /// Reserves `len` bytes (64-aligned start) after the cursor, skipping to the next lap when
    /// they would cross the ring's end; returns their position.
    #[inline]
    fn alloc(&mut self, len: u64) -> Result<u64> {
        let size = align_up(len.min(u64::MAX / 4));
        let max = self.writer.max_unit();
        let used = self.used.saturating_add(size);
        if used > max {
            return Err(Error::UnitTooLarge {
                requested: used,
                max,
            });
        }
        let cap = self.writer.store.capacity();
        let phys = self.cursor & (cap - 1);
        let pos = if size > 0 && phys + size > cap {
            self.cursor + (cap - phys)
        } else {
            self.cursor
        };
        let end = pos + size;
        // With used <= cap / 2 the span stays within one ring whatever the start (the skip is
        // only needed when the unit started in the second half of the ring).
        debug_assert!(end - self.start <= cap);
        self.reserve(end)?;
        self.cursor = end;
        self.used = used;
        Ok(pos)
    }

    /// Makes sure every position before `end` is free, waiting for the reader if needed.
    #[inline]
    fn reserve(&mut self, end: u64) -> Result<()> {
        if end - self.writer.tail_cache <= self.writer.store.capacity() {
            return Ok(());
        }
        self.reserve_slow(end)
    }

    /// [`reserve`](Self::reserve) when the cached tail does not leave room: loads the tail,
    /// then waits.
    #[cold]
    fn reserve_slow(&mut self, end: u64) -> Result<()> {
        if self.writer.broadcast.is_some() {
            return self.reserve_broadcast(end);
        }
        let cap = self.writer.store.capacity();
        let writer = &mut *self.writer;
        let store = &*writer.store;
        let lane = writer.lane;
        let head = writer.head;
        let load_tail = |cache: &mut u64| -> Result<bool> {
            // Acquire: pairs with the SeqCst (releasing) tail CAS in `advance_tail`: every read
            // of the released units happened before we overwrite their bytes.
            let tail = store.lane(lane).tail.0.load(Ordering::Acquire);
            if tail < *cache || tail > head || tail % BLOB_ALIGN != 0 {
                return Err(Error::corrupt(
                    format!("tail cursor {tail} outside [{}, head {head}]", *cache),
                    tail,
                ));
            }
            *cache = tail;
            Ok(end - tail <= cap)
        };
        if load_tail(&mut writer.tail_cache)? {
            return Ok(());
        }
        // Units a batch has not published yet must become visible before we wait (or give
        // up): the reader cannot free space it cannot see.
        publish(store, lane, head, &mut writer.pending);
        if !self.blocking {
            return Err(Error::WouldBlock("the ring is full"));
        }
        let cache = &mut writer.tail_cache;
        wait_for(
            store,
            Signal::Space(lane),
            &writer.spin,
            deadline_after(writer.timeout),
            "space in the ring",
            // Also releases units held by dead readers, which is what frees our lane.
            || check_readers(store, lane, true),
            || {
                if load_tail(cache)? {
                    return Ok(Some(()));
                }
                // Only clean detaches here (no /proc look-ups on every poll).
                check_readers(store, lane, false)?;
                Ok(None)
            },
        )
    }

    /// [`reserve_slow`](Self::reserve_slow) in a broadcast region: the tail is ours to move,
    /// as far as the subscribers' pins allow.
    #[cold]
    fn reserve_broadcast(&mut self, end: u64) -> Result<()> {
        let writer = &mut *self.writer;
        let store = &*writer.store;
        let head = writer.head;
        let Some(reclaimer) = writer.broadcast.as_mut() else {
            unreachable!("called for broadcast writers only");
        };
        if let Some(tail) = reclaimer.reclaim(store, end, head) {
            writer.tail_cache = tail;
            return Ok(());
        }
        // Subscribers cannot end units they cannot see.
        publish(store, writer.lane, head, &mut writer.pending);
        if !self.blocking {
            return Err(Error::WouldBlock(
                "the ring is full (a subscriber holds the space)",
            ));
        }
        writer.tail_cache = wait_for(
            store,
            Signal::Space(writer.lane),
            &writer.spin,
            deadline_after(writer.timeout),
            "space in the ring (subscribers hold it)",
            // A dead subscriber's pin holds nothing back any more; shut down ends the wait.
            || {
                detach_dead(store);
                shut_down(store)
            },
            || {
                shut_down(store)?;
                Ok(reclaimer.reclaim(store, end, head))
            },
        )?;
        Ok(())
    }

    /// Publishes the unit: the reader can take it from now on.
    ///
    /// # Errors
    /// As [`push`](Self::push) (the descriptor table of a unit with more than two blobs needs
    /// room too). On error nothing is published.
    #[inline]
    pub fn commit(mut self) -> Result<()> {
        let count = self.writer.descriptors.len() as u64;
        let mut table = 0;
        if count > INLINE_BLOBS {
            let bytes = count * DESCRIPTOR_SIZE;
            let pos = self.alloc(bytes)?;
            table = pos - self.start;
            let dst = self
                .writer
                .store
                .bytes_for_write(self.writer.lane, pos, bytes)
                .cast::<[u64; 2]>();
            for (i, &(rel, len)) in self.writer.descriptors.iter().enumerate() {
                // SAFETY: `alloc` reserved `count * 16` bytes at `pos` inside the ring, 64-aligned;
                // nobody else reads them before the commit below publishes them.
                unsafe { dst.add(i).write([rel, len]) };
            }
        }
        self.reserve(self.cursor)?;
        let store = &*self.writer.store;
        let lane = self.writer.lane;
        let rec = store.record(lane, self.start);
        let span = self.cursor - self.start;
        debug_assert!(span >= RECORD_SIZE && span % BLOB_ALIGN == 0);
        // Relaxed: all record fields are published by the Release stores of the stamp and the
        // head below.
        rec.span.store(span, Ordering::Relaxed);
        rec.count.store(count, Ordering::Relaxed);
        rec.table.store(table, Ordering::Relaxed);
        for (i, &(rel, len)) in self
            .writer
            .descriptors
            .iter()
            .take(INLINE_BLOBS as usize)
            .enumerate()
        {
            rec.inline[2 * i].store(rel, Ordering::Relaxed);
            rec.inline[2 * i + 1].store(len, Ordering::Relaxed);
        }
        // Release: pairs with the Acquire stamp load in `SpscCursor::take`, which may take the
        // unit before it sees the head stored below: the record and blobs are visible.
        rec.word.store(self.start | COMMITTED, Ordering::Release);
        if let Some(reclaimer) = &mut self.writer.broadcast {
            reclaimer.committed(self.start);
        }
        self.writer.head = self.cursor;
        self.writer.pending += 1;
        if self.writer.pending >= self.writer.batch_limit {
            // Not in a batch (limit 0), or the batch is full: publish now.
            self.writer.publish();
        }
        Ok(())
    }
}

/// The codec copies each offloaded leaf straight into a blob of the unit.
impl BlobSink for UnitWriter<'_> {
    fn put_blob(&mut self, bytes: &[u8]) -> Result<u32> {
        let index = self.push(bytes)?;
        u32::try_from(index)
            .map_err(|_| Error::Codec(format!("a unit holds at most {} blobs", u32::MAX)))
    }
}

impl fmt::Debug for UnitWriter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnitWriter")
            .field("start", &self.start)
            .field("blobs", &self.writer.descriptors.len())
            .field("size", &self.used)
            .finish()
    }
}
