//! How long a blocking call spins before it sleeps: a budget that adapts to how long its waits
//! turn out to be.
//!
//! Spinning wins when the condition comes true within a few microseconds (a ping-pong, a
//! stream whose sides run at the same pace): no syscall and no wake-up. It loses when the wait
//! is long: the CPU time is wasted, and on Linux (EEVDF) it also delays the wake-up itself. A
//! waiter that burnt CPU before sleeping is woken onto the waker's CPU without preempting it,
//! so it runs only once the waker blocks: measured here (2 CPUs, a unit every 2 ms, the reader
//! woken by the commit's futex wake) 8 us from commit to reader with a fixed ~2 us spin-and-
//! yield phase, 1.5-2.2 us with none, as fast as a pipe.
//!
//! So each waiter keeps a budget, like the guest halt-polling governor does: a wait that ended
//! while spinning keeps it; a wait that had to sleep but would have ended within
//! [`MAX_SPIN`] doubles it (spinning longer would have saved the sleep); a longer wait halves
//! it, down to zero. Within the budget the waiter polls with `PAUSE`s for its first 64 polls
//! (a ping-pong's answer comes within them), then yields between polls, so that a peer sharing
//! its CPU can make the progress it waits for (see `wait.rs`).

use std::cell::Cell;
use std::time::Duration;

/// The longest a waiter ever spins before sleeping.
pub(crate) const MAX_SPIN: Duration = Duration::from_micros(50);
/// The budget a new waiter starts with, and the least a budget grows back to from zero.
pub(crate) const START_SPIN: Duration = Duration::from_micros(10);
/// Below this a halved budget becomes zero (spinning a few hundred nanoseconds rarely catches
/// anything that a sleep would not).
const MIN_SPIN: Duration = Duration::from_nanos(500);

/// One waiter's spin budget (a `Reader`'s or a `Writer`'s: neither is shared between threads).
#[derive(Debug)]
pub(crate) struct SpinBudget {
    nanos: Cell<u32>,
}

impl Default for SpinBudget {
    fn default() -> Self {
        SpinBudget {
            nanos: Cell::new(as_nanos(START_SPIN)),
        }
    }
}

fn as_nanos(d: Duration) -> u32 {
    u32::try_from(d.as_nanos()).unwrap_or(u32::MAX)
}

impl SpinBudget {
    /// How long to spin now.
    pub(crate) fn limit(&self) -> Duration {
        Duration::from_nanos(u64::from(self.nanos.get()))
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
    fn waits_that_ended_while_spinning_keep_the_budget() {
        let budget = SpinBudget::default();
        budget.learn(Duration::from_secs(1), false);
        assert_eq!(budget.limit(), START_SPIN);
    }
}
