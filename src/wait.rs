//! Blocking: a spin of adaptive length ([`crate::spin`]), then a process-shared futex in the
//! header, with deadlines.
//!
//! Each signal is one futex word of the armed-bit protocol in [`crate::futex`].

use std::time::{Duration, Instant};

use crate::futex::{arm, disarm};
use crate::spin::{Gap, SpinBudget};
use crate::storage::{Storage, Store};
use crate::sync::{fence, AtomicU32, Ordering};
use crate::tuning::{
    MAX_SPINS_PER_CLOCK, MIN_WAIT_FOR_PEER_CHECK, PAUSE_POLLS, PEER_CHECK_INTERVAL,
    WRITER_BACKOFF_LOG,
};
use crate::Result;

/// How many PAUSEs a spinning waiter leaves between its `polls`-th poll and the next: a reader
/// waiting for data polls as often as it can (that is the latency of a ping-pong); a writer
/// waiting for space backs off (see [`WRITER_BACKOFF_LOG`]).
fn pauses_between_polls(signal: Signal, polls: u32) -> u32 {
    match signal {
        Signal::Data => 1,
        Signal::Space(_) => 1 << polls.min(WRITER_BACKOFF_LOG),
    }
}

/// Which condition a waiter sleeps on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Signal {
    /// A unit was committed (readers wait for this).
    Data,
    /// The tail of this lane moved (its writer waits for this).
    Space(u32),
}

fn word(store: &Store, signal: Signal) -> &AtomicU32 {
    match signal {
        Signal::Data => &store.shared().signals.0.data_futex,
        Signal::Space(lane) => &store.lane(lane).space.0.futex,
    }
}

/// Wakes the sleepers on `signal`, if there are any. Call after publishing the progress.
pub(crate) fn notify(store: &Store, signal: Signal) {
    // SeqCst fence: pairs with the fence in `wait_for` between arming the word and
    // re-checking the condition (Dekker): the progress stored before this fence is seen by
    // that re-check, or the arming is seen by the load in `wake_if_waiting`.
    fence(Ordering::SeqCst);
    wake_if_waiting(store, signal);
}

/// [`notify`] for a caller that has already issued a SeqCst fence after its progress.
pub(crate) fn wake_if_waiting(store: &Store, signal: Signal) {
    let word = word(store, signal);
    if disarm(word) {
        store.futex_wake(word);
    }
}

/// Deadline of a blocking call: `None` waits for ever.
pub(crate) fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// Polls until `poll` yields a value or an error, spinning for up to `spin`'s budget, then
/// sleeping on `signal` in between.
///
/// `poll` must return `Ok(None)` only while the condition does not hold. While sleeping,
/// `check_peers` runs every [`PEER_CHECK_INTERVAL`] (it looks for dead peers, and may clean up
/// after them); its error ends the wait (after a last poll, so everything a dead peer
/// committed is still seen).
pub(crate) fn wait_for<T>(
    store: &Store,
    signal: Signal,
    spin: &SpinBudget,
    deadline: Option<Instant>,
    what: &'static str,
    mut check_peers: impl FnMut() -> Result<()>,
    mut poll: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let started = Instant::now();
    let word = word(store, signal);
    // Under loom a spin is just more of the same interleavings: go straight to the futex.
    let spin_limit = if cfg!(shm_arena_loom) {
        Duration::ZERO
    } else {
        spin.limit()
    };
    let mut slept = false;
    // Polls that found nothing, in all.
    let mut polls = 0u32;
    // Polls since the clock was last read (a zero budget skips the spin altogether).
    let mut spins = if spin_limit.is_zero() {
        MAX_SPINS_PER_CLOCK
    } else {
        0
    };
    let mut next_peer_check = started + PEER_CHECK_INTERVAL;
    // Under loom every peer is alive, and a check that ran or not depending on wall-clock time
    // would make an execution's atomics depend on how fast loom ran it: loom then fails with
    // "unexpected exploration state" (a long bound-2 search hit that). So never check there.
    let check_peers_now = |now: Instant, next: Instant| !cfg!(shm_arena_loom) && now >= next;
    loop {
        if let Some(v) = poll()? {
            spin.wait_ended(started, slept);
            return Ok(v);
        }
        if !slept && spins < MAX_SPINS_PER_CLOCK {
            // Between clock reads only PAUSEs: each poll that finds nothing adds its loop's
            // time to the latency of the one that finds the unit, and a clock read costs a few
            // PAUSEs.
            spins += 1;
            polls = polls.saturating_add(1);
            match spin.poll_gap(polls, PAUSE_POLLS) {
                // Give the CPU away between polls: if the peer shares our CPU (more threads
                // than CPUs), spinning cannot see it progress, and sleeping costs a futex wait
                // and wake. On a CPU of our own the yield returns at once: a slower poll. The
                // yield is timed so that the budget learns which of the two it was.
                Gap::Yield => {
                    let before = Instant::now();
                    std::thread::yield_now();
                    spin.yielded(before.elapsed());
                }
                Gap::Pause => {
                    for _ in 0..pauses_between_polls(signal, polls) {
                        std::hint::spin_loop();
                    }
                }
            }
            continue;
        }
        spins = 0;
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            // A wait shorter than the check interval (a binding waiting in slices to look for
            // signals, say) would otherwise never look at the peers: look once before giving
            // up, so that a dead peer is reported, not a timeout. Not for waits of a few
            // milliseconds (a caller polling with tiny timeouts would read /proc every time).
            if !cfg!(shm_arena_loom) && now - started >= MIN_WAIT_FOR_PEER_CHECK {
                if let Some(end) = after_peer_check(&mut check_peers, &mut poll) {
                    return end;
                }
            }
            return Err(crate::Error::Timeout {
                what,
                waited: now - started,
            });
        }
        if !slept && now - started < spin_limit {
            continue;
        }
        // From here on the clock is read on every round (each one sleeps).
        spins = MAX_SPINS_PER_CLOCK;
        if check_peers_now(now, next_peer_check) {
            if let Some(end) = after_peer_check(&mut check_peers, &mut poll) {
                return end;
            }
            next_peer_check = now + PEER_CHECK_INTERVAL;
        }
        let slice = deadline.map_or(PEER_CHECK_INTERVAL, |d| (d - now).min(PEER_CHECK_INTERVAL));
        let armed = arm(word);
        // SeqCst fence: pairs with the fence in `notify` (see the module docs) and the fences
        // of the release paths.
        fence(Ordering::SeqCst);
        let polled = poll();
        if matches!(polled, Ok(None)) {
            store.futex_wait(word, armed, Some(slice));
            slept = true;
        }
        if let Some(v) = polled? {
            spin.wait_ended(started, slept);
            return Ok(v);
        }
    }
}

/// Runs `check_peers`; when it finds the other side gone, the end of the wait: what the peer
/// made just before dying (one last poll), else its error. `None`: the peers are fine.
fn after_peer_check<T>(
    check_peers: &mut impl FnMut() -> Result<()>,
    poll: &mut impl FnMut() -> Result<Option<T>>,
) -> Option<Result<T>> {
    let gone = check_peers().err()?;
    Some(match poll() {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(gone),
        Err(e) => Err(e),
    })
}
