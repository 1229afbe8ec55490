//! The loom model of a region: the same layout types built from loom atomics on the heap.
//!
//! Ring bytes live in a plain buffer, but every 64-byte slot has a `loom::cell::UnsafeCell`
//! that the store touches whenever the protocol hands out a range for writing or reading, so
//! loom reports any access to ring bytes that is not ordered by the protocol's atomics
//! (a missing Release/Acquire pair shows up as a causality violation).
//! The futex is modelled by a loom mutex and condition variable: the check of the word and the
//! sleep are atomic with respect to a wake, exactly the kernel's guarantee.

use std::cell::UnsafeCell;
use std::time::Duration;

use loom::sync::{Condvar, Mutex};

use crate::layout::{Geometry, Lane, ReaderSlot, Record, Shared, BLOB_ALIGN, RECORD_SIZE};
use crate::storage::Storage;
use crate::sync::{AtomicU32, Ordering};

/// A heap region for loom.
#[derive(Debug)]
pub(crate) struct Model {
    shared: Shared,
    geometry: Geometry,
    lanes: Vec<Lane>,
    readers: Vec<ReaderSlot>,
    capacity: u64,
    records: Vec<Record>,
    slots: Vec<loom::cell::UnsafeCell<()>>,
    bytes: Box<[UnsafeCell<u8>]>,
    futex: Mutex<()>,
    wakeup: Condvar,
}

// SAFETY: ring bytes are handed to one side at a time by the protocol, and loom checks that
// claim through `slots`; everything else is loom atomics and loom locks.
unsafe impl Send for Model {}
// SAFETY: as for Send.
unsafe impl Sync for Model {}

impl Model {
    pub(crate) fn new(capacity: u64, geometry: Geometry) -> Self {
        let slots = (u64::from(geometry.lanes) * capacity / BLOB_ALIGN) as usize;
        Model {
            shared: Shared::default(),
            geometry,
            lanes: (0..geometry.lanes).map(|_| Lane::default()).collect(),
            readers: (0..geometry.readers)
                .map(|_| ReaderSlot::default())
                .collect(),
            capacity,
            records: (0..slots).map(|_| Record::default()).collect(),
            slots: (0..slots)
                .map(|_| loom::cell::UnsafeCell::new(()))
                .collect(),
            bytes: (0..u64::from(geometry.lanes) * capacity)
                .map(|_| UnsafeCell::new(0))
                .collect(),
            futex: Mutex::new(()),
            wakeup: Condvar::new(),
        }
    }

    /// Offset of `lane`'s position `pos` in the flat byte buffer.
    fn offset(&self, lane: u32, pos: u64, len: u64) -> usize {
        assert!(lane < self.geometry.lanes);
        let off = pos & (self.capacity - 1);
        assert!(off + len <= self.capacity, "range crosses the ring's end");
        (u64::from(lane) * self.capacity + off) as usize
    }

    fn slot_range(&self, lane: u32, pos: u64, len: u64) -> std::ops::Range<usize> {
        let first = self.offset(lane, pos, len) / BLOB_ALIGN as usize;
        let n = len.div_ceil(BLOB_ALIGN) as usize;
        first..first + n
    }
}

impl Storage for Model {
    fn shared(&self) -> &Shared {
        &self.shared
    }

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn lane(&self, lane: u32) -> &Lane {
        &self.lanes[lane as usize]
    }

    fn reader_slot(&self, slot: u32) -> &ReaderSlot {
        &self.readers[slot as usize]
    }

    fn capacity(&self) -> u64 {
        self.capacity
    }

    fn record(&self, lane: u32, pos: u64) -> &Record {
        &self.records[self.offset(lane, pos, RECORD_SIZE) / RECORD_SIZE as usize]
    }

    fn bytes_for_write(&self, lane: u32, pos: u64, len: u64) -> *mut u8 {
        for slot in self.slot_range(lane, pos, len) {
            self.slots[slot].with_mut(|_| ());
        }
        let off = self.offset(lane, pos, len);
        // SAFETY: off + len <= capacity (asserted in offset); UnsafeCell<u8> has u8's layout.
        unsafe { UnsafeCell::raw_get(self.bytes.as_ptr()).add(off) }
    }

    fn bytes_for_read(&self, lane: u32, pos: u64, len: u64) -> *const u8 {
        for slot in self.slot_range(lane, pos, len) {
            self.slots[slot].with(|_| ());
        }
        let off = self.offset(lane, pos, len);
        // SAFETY: as in bytes_for_write.
        unsafe { UnsafeCell::raw_get(self.bytes.as_ptr()).add(off) }
    }

    fn futex_wait(&self, word: &AtomicU32, expected: u32, _timeout: Option<Duration>) {
        // Timeouts are not modelled: a missed wake-up must show as a loom deadlock.
        let guard = self.futex.lock().unwrap();
        // SeqCst: the kernel compares the word under its bucket lock; any wake that bumps the
        // word before this load makes us return, any later one finds us on the condvar.
        if word.load(Ordering::SeqCst) == expected {
            drop(self.wakeup.wait(guard).unwrap());
        }
    }

    fn futex_wake(&self, _word: &AtomicU32) {
        let _guard = self.futex.lock().unwrap();
        self.wakeup.notify_all();
    }
}
