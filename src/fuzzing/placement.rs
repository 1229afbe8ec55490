//! The writer's placement rule, restated independently of `writer.rs` from the documented
//! layout (docs/FORMAT.md), so that tests and fuzz targets can check the writer against it: the
//! one model of the rule, used by `arena_ops` and by the model tests (tests/common).
//!
//! A unit starts at the head with a 64-byte record; each blob follows at the next 64-aligned
//! position, skipping to the next lap when it would cross the ring's end (the skipped bytes
//! belong to the unit); a unit of more than two blobs ends with a table of 16-byte
//! descriptors. Each step first checks the unit limit (half the ring, skipped bytes not
//! counted), then the space before the tail.

/// Size of a unit record, and the alignment of records, blobs and tables.
pub const ALIGN: u64 = 64;
/// Blob descriptors kept inside the record; more need a table.
pub const INLINE_BLOBS: usize = 2;
/// Bytes per descriptor in a table.
pub const DESCRIPTOR: u64 = 16;

/// `n` rounded up to [`ALIGN`].
pub fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

/// The model of a unit being written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Next free position.
    pub cursor: u64,
    /// Bytes counted against the unit limit: record and aligned blobs, no skipped bytes.
    pub used: u64,
    /// Position and contents of each blob placed so far.
    pub blobs: Vec<(u64, Vec<u8>)>,
}

impl Pending {
    /// A unit begun at `head`: its record is placed.
    pub fn at(head: u64) -> Pending {
        Pending {
            cursor: head + ALIGN,
            used: ALIGN,
            blobs: Vec::new(),
        }
    }

    /// Places `len` bytes at `pos` (what [`predict`] said).
    pub fn place(&mut self, pos: u64, len: u64) {
        self.cursor = pos + align_up(len);
        self.used += align_up(len);
    }
}

/// What the model says an allocation of one blob (or the table) must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Succeeds at this position.
    Placed(u64),
    /// Fails at once: the unit would need `requested` bytes, over the limit.
    TooLarge {
        /// Bytes the unit would need.
        requested: u64,
    },
    /// Not enough free space before the (lane's) tail.
    Full,
}

/// Where `len` more bytes of `unit` go in a ring of `cap` bytes whose tail is at `tail`, and
/// whether they fit.
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

/// What the commit of a whole unit does: its span, or why it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitOutcome {
    /// Committed, with this span.
    Span(u64),
    /// Over the unit limit.
    TooLarge,
    /// Not enough free space before the tail.
    Full,
}

/// A whole unit with blobs of `lens` bytes begun at `start`: blob by blob with [`predict`],
/// then the table of descriptors, then room for the record when there is nothing else.
pub fn predict_unit(start: u64, lens: &[usize], cap: u64, tail: u64) -> UnitOutcome {
    let mut unit = Pending::at(start);
    let table = (lens.len() > INLINE_BLOBS).then(|| lens.len() as u64 * DESCRIPTOR);
    for len in lens.iter().map(|&l| l as u64).chain(table) {
        match predict(cap, tail, &unit, len) {
            Outcome::Placed(pos) => unit.place(pos, len),
            Outcome::TooLarge { .. } => return UnitOutcome::TooLarge,
            Outcome::Full => return UnitOutcome::Full,
        }
    }
    if unit.cursor - tail > cap {
        return UnitOutcome::Full;
    }
    UnitOutcome::Span(unit.cursor - start)
}
