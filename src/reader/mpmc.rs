//! An MPMC reader's way through the lanes: claiming units from any lane, staying on one for a
//! bounded streak.

use std::cell::Cell;

use crate::ring::claim::try_claim;
use crate::ring::participants::check_writers;
use crate::ring::view::View;
use crate::storage::{Storage, Store};
use crate::tuning::LANE_STREAK;
use crate::Result;

/// Where an MPMC reader looks next. Cells: a reader is used from one thread at a time.
#[derive(Debug)]
pub(crate) struct MpmcCursor {
    /// This reader's slot (its tag on the units it claims).
    slot: u32,
    /// The lane to look at first next time.
    first: Cell<u32>,
    /// Units claimed in a row from `first`.
    streak: Cell<u32>,
}

impl MpmcCursor {
    /// A reader in `slot`; readers start on different lanes.
    pub(crate) fn new(store: &Store, slot: u32) -> MpmcCursor {
        MpmcCursor {
            slot,
            first: Cell::new(slot % store.geometry().lanes),
            streak: Cell::new(0),
        }
    }

    /// Claims a unit from any lane; `Closed` once every writer detached and all lanes are
    /// drained (no /proc look-ups: dead writers are found by `next_unit`'s checks).
    ///
    /// # Errors
    /// [`crate::Error::Closed`] as above; [`crate::Error::Corrupt`] from the claim.
    #[inline]
    pub(crate) fn take(&self, store: &Store) -> Result<Option<View>> {
        let lanes = store.geometry().lanes;
        let first = self.first.get();
        if let Some(view) = try_claim(store, self.slot, first)? {
            // Stay on this lane for the next claim, up to `LANE_STREAK` units in a row.
            let streak = if view.lane == first {
                self.streak.get() + 1
            } else {
                1
            };
            if streak >= LANE_STREAK {
                self.first.set((view.lane + 1) % lanes);
                self.streak.set(0);
            } else {
                self.first.set(view.lane);
                self.streak.set(streak);
            }
            return Ok(Some(view));
        }
        if let Err(closed) = check_writers(store, false) {
            // Every writer detached; what they committed before is visible now (their Release
            // detach pairs with the Acquire in `check_writers`): drain it before closing.
            return match try_claim(store, self.slot, first)? {
                Some(view) => Ok(Some(view)),
                None => Err(closed),
            };
        }
        Ok(None)
    }
}
