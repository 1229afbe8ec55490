//! Real memory: a shared mapping or a heap buffer laid out as a region.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::time::Duration;

use crate::layout::{
    Geometry, Lane, ReaderSlot, Record, Shared, BLOB_ALIGN, HEADER_SIZE, LANES_OFFSET, RECORD_SIZE,
    SHARED_OFFSET,
};
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

/// A region's memory: `data_offset + lanes * capacity` bytes at `base`.
#[derive(Debug)]
pub(crate) struct Mapped {
    base: NonNull<u8>,
    capacity: u64,
    geometry: Geometry,
    /// `geometry.data_offset()`, computed once: every ring access adds it.
    data_offset: usize,
    keep: Keep,
    /// A POSIX shared-memory name to unlink when the last handle goes (the creator's only), and
    /// the creating process: a copy of this handle in a forked child must not remove the name.
    unlink: Option<(String, u32)>,
}

// SAFETY: the memory is only accessed through atomics (header, records) and through raw
// pointers handed to the protocol, which hands out blob ranges to one side at a time; the
// mapping itself is immutable and may be unmapped from any thread.
unsafe impl Send for Mapped {}
// SAFETY: as for Send: shared access goes through atomics or protocol-owned ranges.
unsafe impl Sync for Mapped {}

impl Mapped {
    /// Wraps a mapping of `data_offset + lanes * capacity` bytes whose prefix has been
    /// validated.
    pub(crate) fn from_map(
        map: memmap2::MmapRaw,
        capacity: u64,
        geometry: Geometry,
        unlink: Option<String>,
    ) -> Self {
        debug_assert_eq!(map.len() as u64, region_len(capacity, geometry));
        let base = NonNull::new(map.as_mut_ptr()).expect("mmap never returns null");
        Mapped {
            base,
            capacity,
            geometry,
            data_offset: geometry.data_offset(),
            keep: Keep::Map(map),
            unlink: unlink.map(|name| (name, std::process::id())),
        }
    }

    /// A zeroed, page-aligned heap buffer with the region layout.
    pub(crate) fn heap(capacity: u64, geometry: Geometry) -> std::io::Result<Self> {
        let size = usize::try_from(region_len(capacity, geometry))
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
            geometry,
            data_offset: geometry.data_offset(),
            keep: Keep::Heap(layout),
            unlink: None,
        })
    }

    /// Writes every page of a heap region once, so later accesses take no page faults. The
    /// buffer is already zero and the region is not shared yet: writing zeros changes nothing.
    pub(crate) fn touch_pages(&self) {
        let len = region_len(self.capacity, self.geometry) as usize;
        for off in (0..len).step_by(HEADER_SIZE) {
            // SAFETY: off < len, inside the allocation; no other handle exists yet (called
            // right after `heap`), so the write races with nothing.
            unsafe { self.base.as_ptr().add(off).write_volatile(0) };
        }
    }

    /// The whole region, header included.
    pub(crate) fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Start of `lane`'s ring.
    fn ring(&self, lane: u32) -> *mut u8 {
        assert!(lane < self.geometry.lanes, "lane {lane} out of range");
        let off = self.data_offset + lane as usize * self.capacity as usize;
        // SAFETY: the region is data_offset + lanes * capacity bytes long and lane < lanes.
        unsafe { self.base.as_ptr().add(off) }
    }

    fn offset(&self, pos: u64, len: u64) -> usize {
        let off = pos & (self.capacity - 1);
        debug_assert!(off + len <= self.capacity, "range crosses the ring's end");
        off as usize
    }
}

/// Bytes of a region: header pages, then the lanes' rings.
pub(crate) fn region_len(capacity: u64, geometry: Geometry) -> u64 {
    geometry.data_offset() as u64 + u64::from(geometry.lanes) * capacity
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if let Keep::Heap(layout) = self.keep {
            // SAFETY: allocated in `heap` with this layout; no handle refers to it any more
            // (this runs when the last Arc<Mapped> goes).
            unsafe { std::alloc::dealloc(self.base.as_ptr(), layout) };
        }
        if let Some((name, creator)) = self.unlink.take() {
            // Best effort: the name may already be gone (Region::unlink).
            if creator == std::process::id() {
                let _ = rustix::shm::unlink(name.as_str());
            }
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

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn lane(&self, lane: u32) -> &Lane {
        assert!(lane < self.geometry.lanes, "lane {lane} out of range");
        let off = LANES_OFFSET + lane as usize * std::mem::size_of::<Lane>();
        // SAFETY: the lane array lies inside the header (data_offset covers it), 128-aligned
        // from a page-aligned base; Lane is all atomics, valid for any bytes.
        unsafe { &*self.base.as_ptr().add(off).cast::<Lane>() }
    }

    fn reader_slot(&self, slot: u32) -> &ReaderSlot {
        assert!(
            slot < self.geometry.readers,
            "reader slot {slot} out of range"
        );
        let off =
            self.geometry.readers_offset() + slot as usize * std::mem::size_of::<ReaderSlot>();
        // SAFETY: as for `lane`: the slots follow the lanes inside the header.
        unsafe { &*self.base.as_ptr().add(off).cast::<ReaderSlot>() }
    }

    fn capacity(&self) -> u64 {
        self.capacity
    }

    fn record(&self, lane: u32, pos: u64) -> &Record {
        debug_assert_eq!(pos % RECORD_SIZE, 0);
        let off = self.offset(pos & !(RECORD_SIZE - 1), RECORD_SIZE);
        // SAFETY: off is 64-aligned and off + 64 <= capacity, so the record lies inside the
        // lane's ring; Record is all atomics (valid for any bytes) and the mapping outlives
        // `self`.
        unsafe { &*self.ring(lane).add(off).cast::<Record>() }
    }

    fn bytes_for_write(&self, lane: u32, pos: u64, len: u64) -> *mut u8 {
        let off = self.offset(pos, len);
        // SAFETY: off + len <= capacity (callers guarantee, debug-asserted in offset).
        unsafe { self.ring(lane).add(off) }
    }

    fn bytes_for_read(&self, lane: u32, pos: u64, len: u64) -> *const u8 {
        self.bytes_for_write(lane, pos, len)
    }

    #[inline]
    fn prefetch(&self, lane: u32, pos: u64, len: u64) {
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        {
            let off = pos & (self.capacity - 1);
            let end = (off + len).min(self.capacity);
            let ring = self.ring(lane);
            for line in (off..end).step_by(BLOB_ALIGN as usize) {
                // SAFETY: line < capacity, so the address lies inside the lane's ring; a
                // prefetch reads nothing architecturally and cannot fault.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        ring.add(line as usize).cast::<i8>(),
                    );
                }
            }
        }
        #[cfg(not(all(target_arch = "x86_64", not(miri))))]
        let _ = (lane, pos, len);
    }

    fn futex_wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        crate::futex::wait(word, expected, timeout);
    }

    fn futex_wake(&self, word: &AtomicU32) {
        crate::futex::wake(word);
    }
}
