//! Case 6, our side: `shm_arena::worker::iterate_in_subprocess`, for the same item sizes and
//! counts as `spdl_bench.py` (the SPDL side), items/s from the first item's arrival to the
//! last one's.
//!
//! Two ways to produce an item, both reported:
//! - `send`: like SPDL's worker, the item is first made in private memory (one `Vec`, refilled
//!   from a prepared source and stamped for every item, as `spdl_bench.py` refills one array),
//!   then `Output::send` copies it into the ring (as `serde_bytes`, offloaded into its own
//!   blob): two copies, as SPDL's arenas do.
//! - `send, prepared`: the item is made once before the loop and only its 8-byte stamp changes
//!   from item to item (a producer whose items already exist, e.g. decoded earlier); `send`
//!   copies it into the ring: one copy per item, as SPDL's arenas do with `spdl_bench.py`'s
//!   prepared items (its `pool_prepared` and `ring_prepared` modes).
//! - `in place`: the worker fills the unit's blob in shared memory (`Output::writer` and
//!   `UnitWriter::blob_mut`): one copy.
//!
//! The parent checksums every byte of each item where it lies.
//!
//! Compiled with the `worker` feature only (`ci/bench-report.sh` turns it on when the crate has
//! the worker API), so the harness still builds against a crate without it.

use std::time::Instant;

use shm_arena::worker::{iterate_in_subprocess, Options, Output, Registry};

use crate::util::{checksum, fill, source, stamp};

const SEND: &str = "peers-items-send";
const SEND_PREPARED: &str = "peers-items-send-prepared";
const IN_PLACE: &str = "peers-items-in-place";

/// How the worker makes each item (see the module's documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Produce {
    /// Refilled in private memory, then `send`: two copies.
    Send,
    /// Made once, stamped per item, then `send`: one copy.
    SendPrepared,
    /// Filled in the unit's blob: one copy.
    InPlace,
}

impl Produce {
    /// The variant's name in the report's case names.
    pub fn label(self) -> &'static str {
        match self {
            Produce::Send => "send",
            Produce::SendPrepared => "send, prepared item",
            Produce::InPlace => "in place",
        }
    }

    /// The contender's name in the harness's output.
    pub fn contender(self) -> &'static str {
        match self {
            Produce::Send => "shm-arena (send)",
            Produce::SendPrepared => "shm-arena (send, prepared item)",
            Produce::InPlace => "shm-arena (in place)",
        }
    }

    fn worker(self) -> &'static str {
        match self {
            Produce::Send => SEND,
            Produce::SendPrepared => SEND_PREPARED,
            Produce::InPlace => IN_PLACE,
        }
    }
}

/// First thing in `main`: in a worker process this runs the worker and exits.
pub fn run_if_worker() {
    Registry::new()
        .register(SEND, send_items)
        .register(SEND_PREPARED, send_prepared_items)
        .register(IN_PLACE, in_place_items)
        .run_if_worker();
}

fn send_items((size, count): (u64, u64), out: &mut Output) -> shm_arena::Result<()> {
    let src = source(size as usize);
    // One buffer refilled for every item, as `spdl_bench.py` refills one array with an arena
    // (`send` has copied the item into the ring when it returns): the harness measures the
    // transport, not the allocator (a fresh 32 MiB `Vec` costs ~25 ms of page faults, a fresh
    // numpy array ~7 ms).
    let mut item = Vec::with_capacity(src.len());
    for i in 0..count {
        item.clear();
        item.extend_from_slice(&src);
        stamp(&mut item, i);
        out.send(serde_bytes::Bytes::new(&item))?;
    }
    Ok(())
}

fn send_prepared_items((size, count): (u64, u64), out: &mut Output) -> shm_arena::Result<()> {
    let mut item = source(size as usize);
    for i in 0..count {
        stamp(&mut item, i);
        out.send(serde_bytes::Bytes::new(&item))?;
    }
    Ok(())
}

fn in_place_items((size, count): (u64, u64), out: &mut Output) -> shm_arena::Result<()> {
    let src = source(size as usize);
    let writer = out.writer();
    for i in 0..count {
        let mut unit = writer.begin_unit()?;
        fill(unit.blob_mut(src.len())?, &src, i);
        unit.commit()?;
    }
    Ok(())
}

/// Ring size: the crate's default (16 MiB), or the smallest power of two holding two items
/// when one item needs more than half of that (a unit may use at most half the ring).
fn capacity(size: usize) -> u64 {
    let unit = shm_arena::unit_size(&[size, 4096]);
    (2 * unit)
        .next_power_of_two()
        .max(Options::DEFAULT_CAPACITY)
}

/// Items per second through `iterate_in_subprocess`, the worker producing items as `produce`
/// says.
pub fn items_per_sec(size: usize, count: u64, produce: Produce) -> f64 {
    let name = produce.worker();
    let options = Options::new().capacity(capacity(size));
    let mut worker =
        iterate_in_subprocess(name, &(size as u64, count), options).expect("start the worker");
    let mut start = None;
    let mut seen = 0u64;
    let mut sum = 0u64;
    for item in &mut worker {
        let unit = item.expect("worker item");
        // The payload is blob 0 either way (a sent item's envelope comes last).
        let payload = unit.blob(0).expect("blob 0");
        assert_eq!(payload.len(), size, "item of the wrong size");
        sum = sum.wrapping_add(checksum(payload));
        drop(unit);
        seen += 1;
        start.get_or_insert_with(Instant::now);
    }
    let elapsed = start.expect("at least one item").elapsed();
    assert_eq!(
        seen, count,
        "the worker sent {seen} items, expected {count}"
    );
    std::hint::black_box(sum);
    (count - 1) as f64 / elapsed.as_secs_f64().max(1e-9)
}
