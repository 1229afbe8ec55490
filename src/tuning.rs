//! Every tuning constant of the crate, with why it has its value. Figures behind them are in
//! `benches/peers/RESULTS.md` and the commit messages that set them.

use std::time::Duration;

use crate::layout::{BLOB_ALIGN, RECORD_SIZE};

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// What a reader prefetches of the next unit when it loads the head: its record and its first
/// blob line, fetched in parallel instead of one after the other (the record names the blob).
pub(crate) const PREFETCH_BYTES: u64 = RECORD_SIZE + BLOB_ALIGN;

/// How far past the unit it hands out a reader keeps committed lines prefetched: two small
/// units (record + one blob line each). A reader that follows its writer closely would
/// otherwise take two cache misses per unit, one after the other. Further ahead helped less;
/// prefetching for ownership on the writer's side (ahead of the head) made streams slower, so
/// the writer does not prefetch.
pub(crate) const READ_AHEAD: u64 = 256;

/// SPSC: how many units a reader that keeps up with its writer takes by their stamps before it
/// loads the head again. Loading the head for every unit pulls the head's line away from the
/// writer on every commit, and the writer's next head store (under its commit fence) waits for
/// it to come back; reloading every few dozen units still notices a backlog soon.
pub(crate) const STAMP_RUN: u32 = 32;

/// MPMC: how many units in a row a reader claims from one lane (while it has any) before it
/// looks at the next lane first.
///
/// Staying on a lane keeps its claim cursor, records and tail in this reader's cache, and
/// readers that meet on a lane soon spread out again, so units are mostly claimed without
/// contention and ended in order (the fast path of `release`). Moving on after every unit
/// makes readers meet on the same cursors; a bound keeps a reader from serving one busy lane
/// for ever while another lane's units wait.
pub(crate) const LANE_STREAK: u32 = 16;

// ---------------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------------

/// How often a sleeper wakes to check that the other role's processes are still alive: the
/// bound on how late a dead peer is noticed.
pub(crate) const PEER_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// A wait that reaches its deadline after at least this long checks the peers once before it
/// reports a timeout, however short it was against [`PEER_CHECK_INTERVAL`]: callers that wait
/// in slices (to look for signals) still learn that a peer died. Shorter waits do not: a caller
/// polling with tiny timeouts would read /proc on every call.
pub(crate) const MIN_WAIT_FOR_PEER_CHECK: Duration = Duration::from_millis(10);

/// Polls with only PAUSEs in between before a spinning waiter starts yielding its CPU: a
/// ping-pong's answer comes within them; later, a peer sharing our CPU needs it to progress.
pub(crate) const PAUSE_POLLS: u32 = 64;

/// Polls between two reads of the clock while spinning: each poll that finds nothing adds its
/// loop's time to the latency of the one that finds the unit, and a clock read costs a few
/// PAUSEs.
pub(crate) const MAX_SPINS_PER_CLOCK: u32 = 8;

/// A writer waiting for space backs off exponentially up to `2^WRITER_BACKOFF_LOG` PAUSEs
/// between polls of the tail: each poll takes the tail's line away from the reader, whose next
/// tail store (and the fence after it) then waits for the line to come back. When the ring is
/// full the reader is the bottleneck, so that wait is the stream's; the writer finds the space
/// at most about a microsecond late, with many units' worth freed by then.
pub(crate) const WRITER_BACKOFF_LOG: u32 = 7;

/// The longest a waiter ever spins before sleeping.
pub(crate) const MAX_SPIN: Duration = Duration::from_micros(50);
/// The budget a new waiter starts with, and the least a budget grows back to from zero.
pub(crate) const START_SPIN: Duration = Duration::from_micros(10);
/// Below this a halved budget becomes zero (spinning a few hundred nanoseconds rarely catches
/// anything that a sleep would not).
pub(crate) const MIN_SPIN: Duration = Duration::from_nanos(500);

/// A `sched_yield` that took longer than this let another thread run on our CPU. Alone on its
/// CPU a yield returns within a fraction of this; one that switches to a busy thread takes
/// microseconds to milliseconds (that thread's slice).
pub(crate) const SWITCHED: Duration = Duration::from_micros(1);

/// A waiter that believes it has its CPU to itself checks that belief with a timed yield at
/// the start of one wait in this many (probing every wait slows a ping-pong).
pub(crate) const PROBE_EVERY: u32 = 64;

/// A busy-polling subscriber (`Subscriber::set_busy_poll`) yields the CPU once per this many
/// polls: often enough that a subscriber sharing its CPU with the writer lets it run within
/// microseconds, rarely enough that the yield system call is noise next to the polls.
pub(crate) const BUSY_POLLS_PER_YIELD: u32 = 256;
