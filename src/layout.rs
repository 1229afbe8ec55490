//! The region's byte layout: header page, shared cursors and signals, unit records.
//!
//! ```text
//! offset 0            Prefix (plain data, written once by the creator, copied out and validated)
//! offset 128          Shared: one 128-byte line each for signals and the expected children
//! offset 512          `lanes` x Lane: head, tail, claim cursors, space signals, owner, reclaim
//!                     seqlock (768 bytes)
//! then                `readers` x ReaderSlot (128 bytes; MPMC reader / broadcast subscriber)
//! offset data_offset  `lanes` rings of `capacity` bytes each, addressed by u64 positions
//!                     (lane i's byte for position p: data_offset + i * capacity + (p & mask))
//! ```
//!
//! An SPSC region has one lane and one reader slot, so its header fits the first page. An MPMC
//! region has one lane per writer handle (its own SPSC ring on the writing side) and a slot per
//! reader handle; `data_offset` is the header rounded up to whole pages. The two modes share
//! every structure; they differ in how readers move through a lane (an SPSC reader alone,
//! publishing its position in the claim cursor; MPMC readers claiming units with a CAS on it).
//!
//! Every unit starts with a 64-byte record (`Record`) at a 64-aligned position. Positions grow
//! monotonically and never wrap in practice (2^64 bytes), so a record's stamp, its own start
//! position, tells a record of this lap from a stale one of an earlier lap.

use crate::sync::{AtomicU32, AtomicU64};
use crate::{Error, Result};

/// First eight bytes of every region.
pub const MAGIC: [u8; 8] = *b"SHMARENA";
/// Bumped on any incompatible change of this file or of the protocol on it. 4: an SPSC reader
/// may take a unit by its record's stamp before it sees the head, so writers store the stamp
/// with Release ordering (version 3 writers stored it Relaxed, before the Release head).
///
/// 5: one participant model for both modes. An SPSC region has one reader slot, like an MPMC
/// region with one writer and one reader (the SPSC peer slots and the closed bits are gone:
/// a handle's slot says attached, detached, or held by a dead process), and the SPSC reader
/// publishes its position in the lane's claim cursor, so a new reader can take over from a dead
/// one.
///
/// 6: the broadcast mode (mode 3): reader slots carry a subscriber's policy and pin, lanes a
/// reclaim seqlock (the unit count before the tail, for leaky subscribers' lag counts).
pub const LAYOUT_VERSION: u32 = 6;
/// Bytes before the ring of an SPSC region (one page); an MPMC header may take more pages.
pub const HEADER_SIZE: usize = 4096;
/// Offset of the lane array inside the header.
pub(crate) const LANES_OFFSET: usize = 512;
/// Most writer handles (lanes) of an MPMC region: a lane number (plus one) fits in the six low
/// bits of a 64-aligned position, which is how a reader publishes its claim intent.
pub const MAX_WRITERS: u32 = 63;
/// Most reader handles of an MPMC region: a reader's tag in a record's low six bits is
/// `CLAIMED_BASE + slot`, below 64.
pub const MAX_READERS: u32 = 61;
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

/// Ring mode stored in the prefix: one writer, one reader.
pub(crate) const MODE_SPSC: u32 = 1;
/// Ring mode stored in the prefix: one lane per writer, readers claim from any lane.
pub(crate) const MODE_MPMC: u32 = 2;
/// Ring mode stored in the prefix: one writer, every subscriber sees every unit.
pub(crate) const MODE_BROADCAST: u32 = 3;

/// A subscriber slot's policy word: the writer waits for it.
pub(crate) const POLICY_BACKPRESSURE: u64 = 1;
/// A subscriber slot's policy word: the writer never waits for its pace.
pub(crate) const POLICY_LEAKY: u64 = 2;
/// A subscriber's pin when it holds back nothing (a leaky subscriber holding no unit).
pub(crate) const UNPINNED: u64 = u64::MAX;

// Record states, kept in the low bits of [`Record::word`] next to the stamp (positions are
// multiples of 64, so the low six bits are free).
/// The writer committed the unit; readers may take it.
pub(crate) const COMMITTED: u64 = 1;
/// The reader ended the unit; its span may return to the writer once the prefix before it has.
pub(crate) const RELEASED: u64 = 2;
/// MPMC: `CLAIMED_BASE + slot` marks a unit claimed by the reader in that slot.
pub(crate) const CLAIMED_BASE: u64 = 3;
/// Mask of the state bits of a record word.
pub(crate) const STATE_MASK: u64 = BLOB_ALIGN - 1;

// Participant states (low two bits of `Participant::state`; the bits above
// count takeovers, so a stale compare-and-swap on a reused slot fails).
/// Nobody ever attached.
pub(crate) const SLOT_FREE: u64 = 0;
/// A live (or dead, see the pid) handle holds the slot.
pub(crate) const SLOT_ATTACHED: u64 = 1;
/// The handle that held the slot was dropped cleanly.
pub(crate) const SLOT_DETACHED: u64 = 2;

/// Bit of [`Signals::hints`]: the last reader handle to detach saw no other reader attached.
/// Only a hint for writers to fail early; they confirm it from the reader slots.
pub(crate) const READERS_GONE: u32 = 2;
/// Bit of [`Signals::hints`]: the region was shut down (`Region::shutdown`); for good.
pub(crate) const SHUT_DOWN: u32 = 4;

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
    /// Number of lanes: 1 for SPSC, the writer limit for MPMC.
    pub lanes: u32,
    /// Number of reader slots: 1 for SPSC, the reader limit for MPMC.
    pub readers: u32,
    /// [`FLAG_PREFAULT`]; other bits are zero.
    pub flags: u32,
}

/// Prefix flag: every process maps the region with its pages populated up front, so no unit
/// pays page faults on the ring's first lap.
#[cfg_attr(shm_arena_loom, allow(dead_code))]
pub const FLAG_PREFAULT: u32 = 1;

#[cfg_attr(shm_arena_loom, allow(dead_code))]
impl Prefix {
    #[cfg_attr(shm_arena_loom, allow(dead_code))]
    pub(crate) fn new(capacity: u64, geometry: Geometry, creator_pid: u32, flags: u32) -> Self {
        Prefix {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            mode: geometry.mode(),
            capacity,
            data_offset: geometry.data_offset() as u64,
            creator_pid,
            lanes: geometry.lanes,
            readers: geometry.readers,
            flags,
        }
    }

    /// The lane and reader counts (valid after [`validate`](Self::validate)).
    pub(crate) fn geometry(&self) -> Geometry {
        Geometry {
            mpmc: self.mode == MODE_MPMC,
            broadcast: self.mode == MODE_BROADCAST,
            lanes: self.lanes,
            readers: self.readers,
        }
    }

    /// Total bytes of a region with this prefix.
    pub(crate) fn region_len(&self) -> u64 {
        self.data_offset + u64::from(self.lanes) * self.capacity
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
        let geometry = self.geometry();
        let valid_geometry = match self.mode {
            MODE_SPSC => geometry == Geometry::SPSC,
            MODE_MPMC => geometry.validate_mpmc().is_ok(),
            MODE_BROADCAST => geometry.validate_broadcast().is_ok(),
            _ => {
                return Err(Error::corrupt(
                    format!("unknown ring mode {}", self.mode),
                    12,
                ))
            }
        };
        if !valid_geometry {
            return Err(Error::corrupt(
                format!(
                    "mode {} with {} lanes and {} reader slots",
                    self.mode, self.lanes, self.readers
                ),
                36,
            ));
        }
        validate_capacity(self.capacity).map_err(|e| Error::corrupt(e, 16))?;
        if self.flags & !FLAG_PREFAULT != 0 {
            return Err(Error::corrupt(
                format!("unknown flags {:#x}", self.flags),
                44,
            ));
        }
        let data_offset = geometry.data_offset() as u64;
        if self.data_offset != data_offset {
            return Err(Error::corrupt(
                format!("data offset {} (expected {data_offset})", self.data_offset),
                24,
            ));
        }
        let expected = self.region_len();
        if region_len != expected {
            return Err(Error::corrupt(
                format!(
                    "region is {region_len} bytes but its header says {expected} ({data_offset} + {} lanes x capacity {})",
                    self.lanes, self.capacity
                ),
                16,
            ));
        }
        Ok(())
    }
}

/// A region's mode and how many lanes and reader slots it has; fixes the header's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Whether readers claim units with a CAS (MPMC) or the one reader moves alone (SPSC).
    pub mpmc: bool,
    /// One writer, and subscribers that each see every unit (reader slots are subscriber
    /// slots). Never together with `mpmc`.
    pub broadcast: bool,
    /// Lanes: one per writer handle.
    pub lanes: u32,
    /// Reader slots: one per reader handle.
    pub readers: u32,
}

impl Geometry {
    /// One lane, one reader slot.
    pub(crate) const SPSC: Geometry = Geometry {
        mpmc: false,
        broadcast: false,
        lanes: 1,
        readers: 1,
    };

    /// An MPMC geometry (limits not checked: see [`validate_mpmc`](Self::validate_mpmc)).
    pub(crate) const fn mpmc(writers: u32, readers: u32) -> Geometry {
        Geometry {
            mpmc: true,
            broadcast: false,
            lanes: writers,
            readers,
        }
    }

    /// A broadcast geometry: one lane, `subscribers` slots (limits not checked: see
    /// [`validate_broadcast`](Self::validate_broadcast)).
    pub(crate) const fn broadcast(subscribers: u32) -> Geometry {
        Geometry {
            mpmc: false,
            broadcast: true,
            lanes: 1,
            readers: subscribers,
        }
    }

    /// Checks the broadcast limits; the message says why not.
    pub(crate) fn validate_broadcast(self) -> std::result::Result<(), String> {
        if self.mpmc || self.lanes != 1 || !(1..=MAX_READERS).contains(&self.readers) {
            return Err(format!(
                "{} subscribers: a broadcast region takes 1..={MAX_READERS} subscribers (and one writer)",
                self.readers
            ));
        }
        Ok(())
    }

    /// The mode as stored in the prefix.
    pub(crate) fn mode(self) -> u32 {
        if self.mpmc {
            MODE_MPMC
        } else if self.broadcast {
            MODE_BROADCAST
        } else {
            MODE_SPSC
        }
    }

    /// Checks the MPMC limits; the message says why not.
    pub(crate) fn validate_mpmc(self) -> std::result::Result<(), String> {
        if !(1..=MAX_WRITERS).contains(&self.lanes) || !(1..=MAX_READERS).contains(&self.readers) {
            return Err(format!(
                "{} writers and {} readers: an MPMC region takes 1..={MAX_WRITERS} writers and 1..={MAX_READERS} readers",
                self.lanes, self.readers
            ));
        }
        Ok(())
    }

    /// Offset of reader slot 0.
    pub(crate) fn readers_offset(self) -> usize {
        LANES_OFFSET + self.lanes as usize * std::mem::size_of::<Lane>()
    }

    /// Offset of the first lane's ring: the header rounded up to whole pages.
    pub(crate) fn data_offset(self) -> usize {
        let end = self.readers_offset() + self.readers as usize * std::mem::size_of::<ReaderSlot>();
        end.div_ceil(HEADER_SIZE) * HEADER_SIZE
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
#[cfg_attr(shm_arena_loom, allow(dead_code))]
pub fn validate_header_bytes(bytes: &[u8], region_len: u64) -> Result<Prefix> {
    let size = std::mem::size_of::<Prefix>();
    if bytes.len() < size || region_len < HEADER_SIZE as u64 {
        return Err(Error::corrupt(
            format!("region of {region_len} bytes is shorter than its {HEADER_SIZE}-byte header"),
            0,
        ));
    }
    let prefix: Prefix = bytemuck::pod_read_unaligned(&bytes[..size]);
    if prefix.lanes > MAX_WRITERS || prefix.readers > MAX_READERS {
        return Err(Error::corrupt(
            format!(
                "{} lanes and {} reader slots (limits {MAX_WRITERS} and {MAX_READERS})",
                prefix.lanes, prefix.readers
            ),
            36,
        ));
    }
    prefix.validate(region_len)?;
    Ok(prefix)
}

/// A value alone on its cache line pair (128 bytes: adjacent-line prefetch on x86 pulls two).
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub(crate) struct Line<T>(pub T);

/// Futex words. A side that makes progress only issues a wake syscall when the matching word
/// is armed (bit 0, see `wait.rs`).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Signals {
    /// Readers sleep on it: bit 0 armed by a reader about to sleep, cleared (and the rest
    /// bumped) by the writer that wakes them after a commit.
    pub data_futex: AtomicU32,
    /// Reserved, zero (layout version 2 counted sleeping readers here).
    pub _reserved: AtomicU32,
    /// [`READERS_GONE`], set and cleared by readers attaching and detaching; [`SHUT_DOWN`].
    pub hints: AtomicU32,
}

/// A lane's space signal: its writer sleeps on it; a releaser that moved the lane's tail wakes
/// it.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct SpaceSignal {
    /// Bit 0 armed by the writer about to sleep, cleared (and the rest bumped) by the waker.
    pub futex: AtomicU32,
    /// Reserved, zero (layout version 2 counted sleeping writers here).
    pub _reserved: AtomicU32,
}

/// A participant slot: who holds a lane's writer role or a reader slot, and whether it is
/// attached.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Participant {
    /// Holder's pid << 32 | takeover count << 2 | [`SLOT_FREE`], [`SLOT_ATTACHED`] or
    /// [`SLOT_DETACHED`], set in one compare-and-swap by the attaching holder.
    pub state: AtomicU64,
    /// Process of the holder, for people reading the header (the state word is the truth).
    pub pid: AtomicU64,
    /// Its start time (clock ticks since boot), to tell a reused pid apart, tagged with the
    /// low 16 bits of the takeover count above bit 48 (a tag that does not match the state
    /// word's is an earlier holder's: unknown).
    pub start_time: AtomicU64,
}

/// One lane: an SPSC ring's cursors. In MPMC, readers share the claim cursor.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Lane {
    /// Publish cursor: every unit before it is committed. Written by the lane's writer only.
    pub head: Line<AtomicU64>,
    /// Release cursor: every unit before it is ended; the writer may reuse its bytes.
    pub tail: Line<AtomicU64>,
    /// Claim cursor: every unit before it was taken by a reader (MPMC: moved by readers with a
    /// CAS; SPSC: stored by the one reader before it hands a unit out).
    pub claim: Line<AtomicU64>,
    pub space: Line<SpaceSignal>,
    /// The writer holding the lane.
    pub writer: Line<Participant>,
    /// Broadcast: the unit count that goes with the tail (the reclaim limit), under a seqlock.
    pub reclaim: Line<Reclaim>,
}

/// Broadcast: how many units lie before the lane's tail, published with it as one seqlock
/// (the writer alone writes it): `version` is odd while the writer changes the tail and `seq`.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Reclaim {
    /// Seqlock version: odd while an update is under way.
    pub version: AtomicU64,
    /// Units committed before the tail.
    pub seq: AtomicU64,
}

/// A reader handle's slot.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub(crate) struct ReaderSlot {
    pub reader: Participant,
    /// MPMC: the claim in progress: position | (lane + 1), or 0. Published before the claim
    /// CAS so that survivors can tell which unit a reader that died mid-claim may have taken.
    pub intent: AtomicU64,
    /// Broadcast: [`POLICY_BACKPRESSURE`] or [`POLICY_LEAKY`], stored before the attach CAS.
    pub policy: AtomicU64,
    /// Broadcast: the subscriber's pin, written by it alone: the writer reuses no byte at or
    /// after it. A backpressure subscriber's oldest unit not ended (or its next position); a
    /// leaky one's oldest unit held, or [`UNPINNED`].
    pub pin: AtomicU64,
    /// Broadcast: the subscriber's next position (for people reading the header).
    pub cursor: AtomicU64,
}

/// Processes a region was shared with that have not attached yet (see
/// `Region::share_with_child`): a handle waiting for the other role counts such a child's
/// death as the other side's, instead of waiting for its deadline.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Expected {
    /// Pids of children started with the region; 0: an empty entry. Set by the child itself
    /// between fork and exec, cleared when a handle attaches in it.
    pub pids: [AtomicU64; EXPECTED_CHILDREN],
}

/// Most children a region remembers as expected at once.
pub(crate) const EXPECTED_CHILDREN: usize = 8;

/// The header's global atomics.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub signals: Line<Signals>,
    pub expected: Line<Expected>,
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
    assert!(SHARED_OFFSET + std::mem::size_of::<Shared>() <= LANES_OFFSET);
    assert!(std::mem::align_of::<Shared>() <= SHARED_OFFSET);
    assert!(std::mem::size_of::<Lane>() == 768);
    assert!(std::mem::size_of::<ReaderSlot>() == 128);
    assert!(LANES_OFFSET + std::mem::size_of::<Lane>() <= HEADER_SIZE);
    assert!(CLAIMED_BASE + MAX_READERS as u64 <= STATE_MASK + 1);
};

/// Rounds `n` up to the blob alignment.
pub(crate) const fn align_up(n: u64) -> u64 {
    (n + (BLOB_ALIGN - 1)) & !(BLOB_ALIGN - 1)
}
