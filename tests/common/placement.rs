//! The placement model (one copy of the rule, in `shm_arena::fuzzing::placement`), the blob
//! contents the model tests write, and the one write attempt they check against the model.

// Not every test file uses every name.
#[allow(unused_imports)]
pub use shm_arena::fuzzing::placement::{
    align_up, predict, Outcome, Pending, ALIGN, DESCRIPTOR, INLINE_BLOBS,
};
use shm_arena::{Error, UnitWriter};

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

/// One blob of a write attempt: its length, and whether it is filled in place (`blob_mut`)
/// rather than copied in (`push`).
pub type BlobSpec = (usize, bool);

/// What a write attempt did, as the model predicted it.
#[derive(Debug)]
pub enum Attempt {
    /// A blob failed (or `commit` was false): the unit was aborted.
    Aborted,
    /// Every blob was placed, the commit failed (no room for the table or the record).
    CommitFailed,
    /// Committed at `start`, with this span and these blobs (position, contents).
    Committed {
        start: u64,
        span: u64,
        blobs: Vec<(u64, Vec<u8>)>,
    },
}

/// The ring being written, as a write attempt needs to know it.
pub struct Ring<'a> {
    /// Bytes of the lane's ring.
    pub cap: u64,
    /// The lane's head (where the unit starts) and tail, in the model.
    pub head: u64,
    pub tail: u64,
    /// Checks the address of a blob filled in place against its position.
    pub check_address: &'a dyn Fn(usize, u64),
    /// Whether an error is what a full ring gives this attempt (`WouldBlock`, `Timeout`, ...).
    pub full: &'a dyn Fn(&Error) -> bool,
}

/// Writes one unit, number `id`, into `unit` (begun at `ring.head`), checking every step
/// against the model: each blob lands where the placement rule says, with the index and size
/// it says, or fails as it says. A failed blob ends the unit unless `keep_going`, in which case
/// it is left out and the rest are still written (the unit stays open after an error). Commits
/// only if `commit`.
pub fn attempt(
    mut unit: UnitWriter<'_>,
    id: u64,
    ring: &Ring<'_>,
    blobs: &[BlobSpec],
    commit: bool,
    keep_going: bool,
) -> Attempt {
    let (cap, head, tail) = (ring.cap, ring.head, ring.tail);
    let mut model = Pending::at(head);
    let mut stopped = false;
    for (i, &(len, in_place)) in blobs.iter().enumerate() {
        let data = pattern(id, i, len);
        let expected = predict(cap, tail, &model, len as u64);
        let got = if in_place {
            unit.blob_mut(len).map(|dst| {
                assert_eq!(dst.len(), len);
                dst.copy_from_slice(&data);
                Some(dst.as_ptr() as usize)
            })
        } else {
            unit.push(&data).map(|index| {
                assert_eq!(index, model.blobs.len(), "push returns the blob's index");
                None
            })
        };
        match (expected, &got) {
            (Outcome::Placed(pos), Ok(addr)) => {
                if let (Some(addr), true) = (addr, len > 0) {
                    (ring.check_address)(*addr, pos);
                }
                model.place(pos, len as u64);
                model.blobs.push((pos, data));
            }
            (Outcome::TooLarge { requested }, Err(Error::UnitTooLarge { requested: r, max })) => {
                assert_eq!((*r, *max), (requested, cap / 2), "blob {i} of {len} bytes");
                stopped = !keep_going;
            }
            (Outcome::Full, Err(e)) if (ring.full)(e) => stopped = !keep_going,
            (expected, got) => panic!(
                "blob {i} of {len} bytes in unit at {head} (tail {tail}, cursor {}): model says \
                 {expected:?}, writer says {got:?}",
                model.cursor
            ),
        }
        assert_eq!(unit.blob_count(), model.blobs.len());
        assert_eq!(unit.size(), model.used);
        if stopped {
            break;
        }
    }
    if stopped || !commit {
        // Going out of scope uncommitted aborts the unit: nothing is published.
        return Attempt::Aborted;
    }
    let count = model.blobs.len();
    let table = count as u64 * DESCRIPTOR;
    let expected = if count > INLINE_BLOBS {
        predict(cap, tail, &model, table)
    } else if model.cursor - tail > cap {
        // Without blobs, nothing reserved room for the record yet.
        Outcome::Full
    } else {
        Outcome::Placed(model.cursor)
    };
    let lens: Vec<usize> = model.blobs.iter().map(|(_, b)| b.len()).collect();
    match (expected, unit.commit()) {
        (Outcome::Placed(pos), Ok(())) => {
            let end = if count > INLINE_BLOBS {
                model.place(pos, table);
                model.cursor
            } else {
                model.cursor
            };
            assert_eq!(shm_arena::unit_size(&lens), model.used);
            Attempt::Committed {
                start: head,
                span: end - head,
                blobs: model.blobs,
            }
        }
        (Outcome::TooLarge { requested }, Err(Error::UnitTooLarge { requested: r, max })) => {
            assert_eq!((r, max), (requested, cap / 2), "table of {count} blobs");
            assert!(shm_arena::unit_size(&lens) > cap / 2);
            Attempt::CommitFailed
        }
        (Outcome::Full, Err(e)) if (ring.full)(&e) => Attempt::CommitFailed,
        (expected, got) => panic!(
            "commit of {count} blobs in unit at {head} (tail {tail}, cursor {}): model says \
             {expected:?}, writer says {got:?}",
            model.cursor
        ),
    }
}
