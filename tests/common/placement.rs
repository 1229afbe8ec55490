//! The ring's placement constants and the blob contents the model tests write.

/// Size of a unit record, and the alignment of records, blobs and tables.
pub const ALIGN: u64 = 64;
/// Blob descriptors kept inside the record; more need a table.
pub const INLINE_BLOBS: usize = 2;
/// Bytes per descriptor in a table.
pub const DESCRIPTOR: u64 = 16;

pub fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

/// 0, 1, ..., 255, 0, 1, ..., 255: any 256 consecutive bytes of it count up from some value.
pub const COUNTING: [u8; 512] = {
    let mut bytes = [0u8; 512];
    let mut i = 0;
    while i < 512 {
        bytes[i] = i as u8;
        i += 1;
    }
    bytes
};

/// Contents of blob `blob` of the `unit`-th write attempt (aborted ones included), so that
/// bytes left over from another unit or another blob are told apart from the right ones.
///
/// Byte `j` is `seed + j + 13 * (j / 256)` (mod 256), built from slices of a counting sequence
/// so that Miri copies instead of interpreting a loop per byte.
pub fn pattern(unit: u64, blob: usize, len: usize) -> Vec<u8> {
    let seed = (unit as u8).wrapping_mul(97) ^ ((unit >> 8) as u8) ^ (blob as u8).wrapping_mul(29);
    let mut bytes = Vec::with_capacity(len);
    let mut chunk = 0u8;
    while bytes.len() < len {
        let from = usize::from(seed.wrapping_add(chunk.wrapping_mul(13)));
        let n = (len - bytes.len()).min(256);
        bytes.extend_from_slice(&COUNTING[from..from + n]);
        chunk = chunk.wrapping_add(1);
    }
    bytes
}

/// The model of a unit being written.
pub struct Pending {
    /// Next free position.
    pub cursor: u64,
    /// Bytes counted against the unit limit: record and aligned blobs, no skipped bytes.
    pub used: u64,
    pub blobs: Vec<(u64, Vec<u8>)>,
}

/// What the model says an allocation of one blob (or the table) must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Succeeds at this position.
    Placed(u64),
    /// Fails at once: the unit would need `requested` bytes, over the limit.
    TooLarge { requested: u64 },
    /// Not enough free space before the (lane's) tail.
    Full,
}

/// The placement rule: where `len` more bytes of a unit go, and whether they fit.
pub fn predict(cap: u64, tail: u64, unit: &Pending, len: u64) -> Outcome {
    let size = align_up(len);
    let used = unit.used + size;
    if used > cap / 2 {
        return Outcome::TooLarge { requested: used };
    }
    let phys = unit.cursor % cap;
    let pos = if size > 0 && phys + size > cap {
        unit.cursor + (cap - phys)
    } else {
        unit.cursor
    };
    // Free space is what lies before the tail's position one lap on; skipped bytes count.
    if pos + size - tail > cap {
        Outcome::Full
    } else {
        Outcome::Placed(pos)
    }
}
