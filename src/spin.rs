//! How long a blocking call spins before it sleeps: a budget that adapts to how long its waits
//! turn out to be.
//!
//! Spinning wins when the condition comes true within a few microseconds (a ping-pong, a
//! stream whose sides run at the same pace): no syscall and no wake-up. It loses when the wait
//! is long: the CPU time is wasted, and on Linux (EEVDF) it also delays the wake-up itself. A
//! waiter that burnt CPU before sleeping is woken onto the waker's CPU without preempting it,
//! so it runs only once the waker blocks: a fixed spin-and-yield phase made a reader woken by a
//! commit several times slower to run than one that slept at once (figures in
//! `benches/peers/RESULTS.md`, case 7).
//!
//! So each waiter keeps a budget, like the guest halt-polling governor does: a wait that ended
//! while spinning keeps it; a wait that had to sleep but would have ended within
//! [`MAX_SPIN`] doubles it (spinning longer would have saved the sleep); a longer wait halves
//! it, down to zero. Within the budget the waiter polls with `PAUSE`s for its first 64 polls
//! (a ping-pong's answer comes within them), then yields between polls, so that a peer sharing
//! its CPU can make the progress it waits for (see `wait.rs`).
//!
//! The budget also remembers whether the waiter's CPU is shared: every yield is timed, and
//! one that let another thread run means a spin should yield from its first poll on (more
//! threads than CPUs: pausing only burns the time the awaited peer needs). A waiter that
//! believes its CPU is its own checks with one timed yield in [`PROBE_EVERY`] waits.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::tuning::{MAX_SPIN, MIN_SPIN, PROBE_EVERY, START_SPIN, SWITCHED};

/// One waiter's spin budget (a `Reader`'s or a `Writer`'s: neither is shared between threads).
#[derive(Debug)]
pub(crate) struct SpinBudget {
    nanos: Cell<u32>,
    /// The last timed yield switched to another thread: our CPU has more runnable threads than
    /// one, so a spin should yield between polls from the start (see [`SpinBudget::poll_gap`]).
    cpu_shared: Cell<bool>,
    /// Waits begun since the last probe (see [`PROBE_EVERY`]).
    waits: Cell<u32>,
}

impl Default for SpinBudget {
    fn default() -> Self {
        SpinBudget {
            nanos: Cell::new(as_nanos(START_SPIN)),
            cpu_shared: Cell::new(false),
            waits: Cell::new(0),
        }
    }
}

/// What a spinning waiter does between two polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gap {
    /// Busy-wait (`PAUSE`s): the answer may come within nanoseconds.
    Pause,
    /// Give the CPU away with a timed `sched_yield`, then [`SpinBudget::yielded`].
    Yield,
}

fn as_nanos(d: Duration) -> u32 {
    u32::try_from(d.as_nanos()).unwrap_or(u32::MAX)
}

impl SpinBudget {
    /// How long to spin now.
    pub(crate) fn limit(&self) -> Duration {
        Duration::from_nanos(u64::from(self.nanos.get()))
    }

    /// Between the `polls`-th failed poll of a wait and the next: yield if our CPU is known to
    /// be shared, if `pause_polls` polls have gone by already, or to probe (at the first gap
    /// of one wait in [`PROBE_EVERY`]); pause otherwise.
    ///
    /// With more threads than CPUs, yielding from the first gap lets the peer a waiter waits
    /// for run (a waiter's `PAUSE`s burn the CPU that peer needs); yielding at every first gap
    /// unconditionally slows a ping-pong whose sides each have a CPU of their own, hence the
    /// belief, probed now and then.
    pub(crate) fn poll_gap(&self, polls: u32, pause_polls: u32) -> Gap {
        if self.cpu_shared.get() || polls > pause_polls {
            return Gap::Yield;
        }
        if polls == 1 {
            let waits = self.waits.get() + 1;
            if waits >= PROBE_EVERY {
                self.waits.set(0);
                return Gap::Yield;
            }
            self.waits.set(waits);
        }
        Gap::Pause
    }

    /// Learns from a yield that took `took`: whether another thread ran on our CPU meanwhile.
    pub(crate) fn yielded(&self, took: Duration) {
        self.cpu_shared.set(took > SWITCHED);
    }

    /// Learns from a wait that began at `started` and just ended (successfully).
    ///
    /// A wait that ended without sleeping leaves the budget as it is (see `learn`), so the
    /// clock is read only after a sleep: otherwise that read would sit between the unit's
    /// arrival and its delivery, on the path of every ping-pong hop.
    pub(crate) fn wait_ended(&self, started: Instant, slept: bool) {
        if slept {
            self.learn(started.elapsed(), true);
        }
    }

    /// Learns from a wait that ended (successfully) after `waited`, `slept` or not.
    pub(crate) fn learn(&self, waited: Duration, slept: bool) {
        if !slept {
            return;
        }
        let now = self.nanos.get();
        let next = if waited <= MAX_SPIN {
            now.saturating_mul(2)
                .max(as_nanos(START_SPIN))
                .min(as_nanos(MAX_SPIN))
        } else if now / 2 < as_nanos(MIN_SPIN) {
            0
        } else {
            now / 2
        };
        debug_assert!(next <= as_nanos(MAX_SPIN));
        self.nanos.set(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_waits_shrink_the_budget_to_zero() {
        let budget = SpinBudget::default();
        for _ in 0..8 {
            budget.learn(Duration::from_millis(2), true);
        }
        assert_eq!(budget.limit(), Duration::ZERO);
    }

    #[test]
    fn a_short_sleep_grows_the_budget_back_and_caps_it() {
        let budget = SpinBudget::default();
        for _ in 0..8 {
            budget.learn(Duration::from_millis(2), true);
        }
        budget.learn(Duration::from_micros(3), true);
        assert_eq!(budget.limit(), START_SPIN);
        for _ in 0..8 {
            budget.learn(Duration::from_micros(3), true);
        }
        assert_eq!(budget.limit(), MAX_SPIN);
    }

    #[test]
    fn a_shared_cpu_is_probed_now_and_then_and_yields_at_once_once_seen() {
        let budget = SpinBudget::default();
        // Believed alone: the first gap of a wait pauses, except in one wait of PROBE_EVERY.
        let first_gaps: Vec<Gap> = (0..2 * PROBE_EVERY)
            .map(|_| budget.poll_gap(1, 64))
            .collect();
        let probes = first_gaps.iter().filter(|g| **g == Gap::Yield).count();
        assert_eq!(probes, 2, "{first_gaps:?}");
        assert_eq!(budget.poll_gap(2, 64), Gap::Pause);
        assert_eq!(budget.poll_gap(65, 64), Gap::Yield, "past the pause polls");
        // A yield that switched: every gap yields until a yield comes back at once.
        budget.yielded(Duration::from_micros(40));
        assert_eq!(budget.poll_gap(1, 64), Gap::Yield);
        assert_eq!(budget.poll_gap(2, 64), Gap::Yield);
        budget.yielded(Duration::from_nanos(200));
        assert_eq!(budget.poll_gap(2, 64), Gap::Pause);
    }

    #[test]
    fn waits_that_ended_while_spinning_keep_the_budget() {
        let budget = SpinBudget::default();
        budget.learn(Duration::from_secs(1), false);
        assert_eq!(budget.limit(), START_SPIN);
    }
}
