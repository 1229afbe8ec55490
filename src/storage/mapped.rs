//! Real memory: a shared mapping or a heap buffer laid out as a region.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::time::Duration;

use crate::layout::{Record, Shared, HEADER_SIZE, RECORD_SIZE, SHARED_OFFSET};
use crate::storage::Storage;
use crate::sync::AtomicU32;

/// What keeps the memory alive.
#[derive(Debug)]
pub(crate) enum Keep {
    /// A mapping of a memfd or POSIX shared-memory object.
    Map(#[allow(dead_code, reason = "kept for its Drop, which unmaps")] memmap2::MmapRaw),
    /// A zeroed heap allocation with this layout (threads only).
    Heap(Layout),
}

/// A region's memory: `HEADER_SIZE + capacity` bytes at `base`.
#[derive(Debug)]
pub(crate) struct Mapped {
    base: NonNull<u8>,
    capacity: u64,
    keep: Keep,
    /// A POSIX shared-memory name to unlink when the last handle goes (the creator's only).
    unlink: Option<String>,
}

// SAFETY: the memory is only accessed through atomics (header, records) and through raw
// pointers handed to the protocol, which hands out blob ranges to one side at a time; the
// mapping itself is immutable and may be unmapped from any thread.
unsafe impl Send for Mapped {}
// SAFETY: as for Send: shared access goes through atomics or protocol-owned ranges.
unsafe impl Sync for Mapped {}

impl Mapped {
    /// Wraps a mapping of `HEADER_SIZE + capacity` bytes whose prefix has been validated.
    pub(crate) fn from_map(map: memmap2::MmapRaw, capacity: u64, unlink: Option<String>) -> Self {
        debug_assert_eq!(map.len() as u64, HEADER_SIZE as u64 + capacity);
        let base = NonNull::new(map.as_mut_ptr()).expect("mmap never returns null");
        Mapped {
            base,
            capacity,
            keep: Keep::Map(map),
            unlink,
        }
    }

    /// A zeroed, page-aligned heap buffer with the region layout.
    pub(crate) fn heap(capacity: u64) -> std::io::Result<Self> {
        let size = usize::try_from(HEADER_SIZE as u64 + capacity)
            .map_err(|_| std::io::Error::other("capacity does not fit in memory"))?;
        let layout = Layout::from_size_align(size, HEADER_SIZE)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        // SAFETY: the layout has a non-zero size (at least the header page).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let base = NonNull::new(ptr).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!("allocating a {size}-byte region"),
            )
        })?;
        Ok(Mapped {
            base,
            capacity,
            keep: Keep::Heap(layout),
            unlink: None,
        })
    }

    /// The whole region, header included.
    pub(crate) fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    fn ring(&self) -> *mut u8 {
        // SAFETY: the region is HEADER_SIZE + capacity bytes long.
        unsafe { self.base.as_ptr().add(HEADER_SIZE) }
    }

    fn offset(&self, pos: u64, len: u64) -> usize {
        let off = pos & (self.capacity - 1);
        debug_assert!(off + len <= self.capacity, "range crosses the ring's end");
        off as usize
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if let Keep::Heap(layout) = self.keep {
            // SAFETY: allocated in `heap` with this layout; no handle refers to it any more
            // (this runs when the last Arc<Mapped> goes).
            unsafe { std::alloc::dealloc(self.base.as_ptr(), layout) };
        }
        if let Some(name) = self.unlink.take() {
            // Best effort: the name may already be gone (Region::unlink).
            let _ = rustix::shm::unlink(name.as_str());
        }
    }
}

impl Storage for Mapped {
    fn shared(&self) -> &Shared {
        // SAFETY: SHARED_OFFSET is inside the header page, 128-aligned from a page-aligned base
        // (checked at compile time in layout.rs); Shared is all atomics, valid for any bytes,
        // and lives as long as the mapping, which `self` keeps.
        unsafe { &*self.base.as_ptr().add(SHARED_OFFSET).cast::<Shared>() }
    }

    fn capacity(&self) -> u64 {
        self.capacity
    }

    fn record(&self, pos: u64) -> &Record {
        debug_assert_eq!(pos % RECORD_SIZE, 0);
        let off = self.offset(pos & !(RECORD_SIZE - 1), RECORD_SIZE);
        // SAFETY: off is 64-aligned and off + 64 <= capacity, so the record lies inside the
        // ring; Record is all atomics (valid for any bytes) and the mapping outlives `self`.
        unsafe { &*self.ring().add(off).cast::<Record>() }
    }

    fn bytes_for_write(&self, pos: u64, len: u64) -> *mut u8 {
        let off = self.offset(pos, len);
        // SAFETY: off + len <= capacity (callers guarantee, debug-asserted in offset).
        unsafe { self.ring().add(off) }
    }

    fn bytes_for_read(&self, pos: u64, len: u64) -> *const u8 {
        self.bytes_for_write(pos, len)
    }

    fn futex_wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        crate::wait::futex_wait(word, expected, timeout);
    }

    fn futex_wake(&self, word: &AtomicU32) {
        crate::wait::futex_wake(word);
    }
}
