//! The region's byte layout: header page, shared cursors and signals, unit records.
//!
//! ```text
//! offset 0     Prefix (plain data, written once by the creator, copied out and validated)
//! offset 128   Shared: one 128-byte line each for head, tail, signals, peers
//! offset 4096  the ring: `capacity` bytes, addressed by u64 positions (offset = pos & mask)
//! ```
//!
//! Every unit starts with a 64-byte record (`Record`) at a 64-aligned position. Positions grow
//! monotonically and never wrap in practice (2^64 bytes), so a record's stamp, its own start
//! position, tells a record of this lap from a stale one of an earlier lap.

use crate::sync::{AtomicU32, AtomicU64};
use crate::{Error, Result};

/// First eight bytes of every region.
pub const MAGIC: [u8; 8] = *b"SHMARENA";
/// Bumped on any incompatible change of this file.
pub const LAYOUT_VERSION: u32 = 1;
/// Bytes before the ring: one page.
pub const HEADER_SIZE: usize = 4096;
/// Offset of [`Shared`] inside the header page.
#[cfg_attr(shm_arena_loom, allow(dead_code))]
pub(crate) const SHARED_OFFSET: usize = 128;
/// Alignment of every record, blob and descriptor table, in bytes.
pub const BLOB_ALIGN: u64 = 64;
/// Size of a unit record.
pub(crate) const RECORD_SIZE: u64 = 64;
/// Smallest ring accepted.
pub const MIN_CAPACITY: u64 = 4096;
/// Largest ring accepted (1 TiB), so position arithmetic can never come near overflow.
pub const MAX_CAPACITY: u64 = 1 << 40;
/// Blob descriptors kept inside the record; more go to a table inside the unit.
pub(crate) const INLINE_BLOBS: u64 = 2;
/// Size of one descriptor in a table: relative offset then length, both u64 native-endian.
pub(crate) const DESCRIPTOR_SIZE: u64 = 16;

/// Ring mode stored in the prefix.
pub(crate) const MODE_SPSC: u32 = 1;

// Record states, kept in the low bits of [`Record::word`] next to the stamp (positions are
// multiples of 64, so the low six bits are free).
/// The writer committed the unit; readers may take it.
pub(crate) const COMMITTED: u64 = 1;
/// The reader ended the unit; its span may return to the writer once the prefix before it has.
pub(crate) const RELEASED: u64 = 2;

/// Bits of [`Signals::closed`].
pub(crate) const WRITER_CLOSED: u32 = 1;
/// The reader handle was dropped.
pub(crate) const READER_CLOSED: u32 = 2;

/// The part of the header written once at creation. Plain data: copied out, then validated.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Prefix {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`LAYOUT_VERSION`].
    pub version: u32,
    /// SPSC (1) or MPMC (2).
    pub mode: u32,
    /// Ring size in bytes: a power of two, a multiple of the page size.
    pub capacity: u64,
    /// Offset of the ring from the start of the region: [`HEADER_SIZE`].
    pub data_offset: u64,
    /// The process that created the region.
    pub creator_pid: u32,
    /// Zero.
    pub reserved: u32,
}

impl Prefix {
    #[cfg_attr(shm_arena_loom, allow(dead_code))]
    pub(crate) fn new(capacity: u64, mode: u32, creator_pid: u32) -> Self {
        Prefix {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            mode,
            capacity,
            data_offset: HEADER_SIZE as u64,
            creator_pid,
            reserved: 0,
        }
    }

    /// Checks a prefix read from a region of `region_len` bytes.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the first field that is impossible.
    pub fn validate(&self, region_len: u64) -> Result<()> {
        if self.magic != MAGIC {
            return Err(Error::corrupt(
                format!("bad magic {:02x?}, not an shm-arena region", self.magic),
                0,
            ));
        }
        if self.version != LAYOUT_VERSION {
            return Err(Error::corrupt(
                format!(
                    "layout version {} (this build reads {LAYOUT_VERSION})",
                    self.version
                ),
                8,
            ));
        }
        if self.mode != MODE_SPSC {
            return Err(Error::corrupt(
                format!("unknown ring mode {}", self.mode),
                12,
            ));
        }
        validate_capacity(self.capacity).map_err(|e| Error::corrupt(e, 16))?;
        if self.data_offset != HEADER_SIZE as u64 {
            return Err(Error::corrupt(
                format!("data offset {} (expected {HEADER_SIZE})", self.data_offset),
                24,
            ));
        }
        let expected = HEADER_SIZE as u64 + self.capacity;
        if region_len != expected {
            return Err(Error::corrupt(
                format!(
                    "region is {region_len} bytes but its header says {expected} ({HEADER_SIZE} + capacity {})",
                    self.capacity
                ),
                16,
            ));
        }
        Ok(())
    }
}

/// Checks that `capacity` can be a ring size; the message says why not.
pub(crate) fn validate_capacity(capacity: u64) -> std::result::Result<(), String> {
    if !capacity.is_power_of_two() {
        return Err(format!("capacity {capacity} is not a power of two"));
    }
    if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
        return Err(format!(
            "capacity {capacity} is outside {MIN_CAPACITY}..={MAX_CAPACITY}"
        ));
    }
    Ok(())
}

/// Validates the header of a region given as raw bytes (the whole region, or at least its
/// header page together with the region's real length).
///
/// This is what opening a region runs before trusting anything, exposed for fuzzing.
///
/// # Errors
/// [`Error::Corrupt`] if the bytes are too short or any prefix field is impossible.
pub fn validate_header_bytes(bytes: &[u8], region_len: u64) -> Result<Prefix> {
    let size = std::mem::size_of::<Prefix>();
    if bytes.len() < size || region_len < HEADER_SIZE as u64 {
        return Err(Error::corrupt(
            format!("region of {region_len} bytes is shorter than its {HEADER_SIZE}-byte header"),
            0,
        ));
    }
    let prefix: Prefix = bytemuck::pod_read_unaligned(&bytes[..size]);
    prefix.validate(region_len)?;
    Ok(prefix)
}

/// A value alone on its cache line pair (128 bytes: adjacent-line prefetch on x86 pulls two).
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub(crate) struct Line<T>(pub T);

/// Futex words and waiter counts. A side that makes progress only issues a wake syscall when the
/// matching waiter count is non-zero.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Signals {
    /// Bumped by the writer after a commit when a reader sleeps.
    pub data_seq: AtomicU32,
    /// Readers sleeping (or about to) on `data_seq`.
    pub data_waiters: AtomicU32,
    /// Bumped by a releaser after the tail moved when a writer sleeps.
    pub space_seq: AtomicU32,
    /// Writers sleeping (or about to) on `space_seq`.
    pub space_waiters: AtomicU32,
    /// [`WRITER_CLOSED`] | [`READER_CLOSED`].
    pub closed: AtomicU32,
}

/// One participant: pid and start time (clock ticks since boot), so a reused pid is told apart.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct PeerSlot {
    pub pid: AtomicU64,
    pub start_time: AtomicU64,
}

/// Who plays which role.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Peers {
    pub writer: PeerSlot,
    pub reader: PeerSlot,
}

/// The header's atomics. Each line is written by a different side.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Publish cursor: every unit before it is committed. Written by the writer only.
    pub head: Line<AtomicU64>,
    /// Release cursor: every unit before it is ended; the writer may reuse its bytes.
    pub tail: Line<AtomicU64>,
    pub signals: Line<Signals>,
    pub peers: Line<Peers>,
}

/// The 64 bytes at the start of every unit. All fields are atomics because a stale releaser
/// may read a record while the writer reuses its bytes (it then only ever sees a stamp
/// mismatch or loses a CAS on the tail); nothing in it is trusted before validation.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub(crate) struct Record {
    /// Stamp (the unit's start position, a multiple of 64) | state.
    pub word: AtomicU64,
    /// Bytes from the unit's start to its end, record, blobs, padding and table included.
    pub span: AtomicU64,
    /// Number of blobs.
    pub count: AtomicU64,
    /// Offset of the descriptor table from the unit's start, when count > [`INLINE_BLOBS`].
    pub table: AtomicU64,
    /// Descriptors of the first blobs: (offset from the unit's start, length) pairs.
    pub inline: [AtomicU64; 4],
}

#[cfg(not(shm_arena_loom))]
const _: () = {
    assert!(std::mem::size_of::<Record>() == RECORD_SIZE as usize);
    assert!(std::mem::size_of::<Prefix>() <= SHARED_OFFSET);
    assert!(SHARED_OFFSET + std::mem::size_of::<Shared>() <= HEADER_SIZE);
    assert!(std::mem::align_of::<Shared>() <= SHARED_OFFSET);
};

/// Rounds `n` up to the blob alignment.
pub(crate) const fn align_up(n: u64) -> u64 {
    (n + (BLOB_ALIGN - 1)) & !(BLOB_ALIGN - 1)
}
