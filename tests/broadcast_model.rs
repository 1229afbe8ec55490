//! A model of a broadcast region, checked against the real one by proptest: one writer and one
//! to three subscribers with mixed policies run random writes, takes and ends (in any order).
//!
//! The model knows every unit's place in the ring, each subscriber's pin (a backpressure one's
//! oldest unit not ended, or its next unit; a leaky one's oldest unit held) and predicts:
//! - a write (deadline zero) succeeds exactly when the bytes it needs are pinned by nobody;
//! - a backpressure subscriber gets every unit, in order, and nothing else;
//! - a leaky subscriber gets units in order, each the one after everything it got or was told
//!   it missed (`Lagged`), never runs dry before it has accounted for every unit, and every
//!   unit is either delivered or counted as missed;
//! - no unit anyone holds ever changes (a held view is never overwritten).

mod common;

use std::time::Duration;

use common::config::proptest_config;
use proptest::prelude::*;

use shm_arena::{Backing, Error, OwnedUnit, Policy, Region, RegionOptions, Writer};

const CAP: u64 = 4096;
const ALIGN: u64 = 64;

#[derive(Debug, Clone)]
enum Op {
    Write(usize),
    Take(usize),
    /// End the held unit at this index (modulo how many are held).
    End(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..1500).prop_map(Op::Write),
        4 => (0usize..3).prop_map(Op::Take),
        2 => (0usize..3, 0usize..4).prop_map(|(s, i)| Op::End(s, i)),
    ]
}

/// The bytes of unit `seq`: its number, then a pattern.
fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![(seq % 251) as u8; len];
    for (i, b) in seq.to_le_bytes().iter().enumerate().take(len) {
        bytes[i] = *b;
    }
    bytes
}

/// Where a one-blob unit of `len` bytes starting at `start` ends (a blob never straddles the
/// ring's end: it moves to the next lap).
fn unit_end(start: u64, len: usize) -> u64 {
    let size = (len as u64).div_ceil(ALIGN) * ALIGN;
    let at = start + ALIGN;
    let phys = at % CAP;
    let pos = if size > 0 && phys + size > CAP {
        at + CAP - phys
    } else {
        at
    };
    pos + size
}

struct ModelUnit {
    start: u64,
    len: usize,
}

struct Sub {
    handle: shm_arena::Subscriber,
    policy: Policy,
    /// Backpressure: the next unit (an index into `units`). Leaky: delivered + missed.
    next: u64,
    held: Vec<(u64, OwnedUnit)>,
}

impl Sub {
    /// The subscriber's pin, as a ring position.
    fn pin(&self, units: &[ModelUnit], head: u64) -> u64 {
        let oldest_held = self
            .held
            .iter()
            .map(|(seq, _)| units[*seq as usize].start)
            .min();
        match self.policy {
            Policy::Backpressure => oldest_held
                .unwrap_or_else(|| units.get(self.next as usize).map_or(head, |u| u.start)),
            Policy::Leaky => oldest_held.unwrap_or(u64::MAX),
        }
    }
}

fn check_unit(unit: &OwnedUnit, seq: u64, units: &[ModelUnit]) -> Result<(), TestCaseError> {
    let bytes = unit
        .blob(0)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(
        bytes,
        &payload(seq, units[seq as usize].len)[..],
        "unit {}",
        seq
    );
    Ok(())
}

/// One take by subscriber `s`, checked against the model.
fn take(sub: &mut Sub, units: &[ModelUnit]) -> Result<bool, TestCaseError> {
    let committed = units.len() as u64;
    match sub.handle.try_next_unit() {
        Ok(Some(unit)) => {
            let unit = unit.into_owned();
            prop_assert!(sub.next < committed, "a unit past the last committed one");
            check_unit(&unit, sub.next, units)?;
            prop_assert!(unit.is_shared());
            sub.held.push((sub.next, unit));
            sub.next += 1;
            Ok(true)
        }
        Ok(None) => {
            prop_assert_eq!(
                sub.next,
                committed,
                "ran dry with units left ({:?})",
                sub.policy
            );
            Ok(false)
        }
        Err(Error::Lagged { missed }) => {
            prop_assert_eq!(sub.policy, Policy::Leaky);
            prop_assert!(
                missed > 0 && sub.next + missed <= committed,
                "missed {}",
                missed
            );
            sub.next += missed;
            Ok(true)
        }
        Err(e) => Err(TestCaseError::fail(format!("take: {e}"))),
    }
}

fn run(policies: Vec<Policy>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let region = Region::create_with(
        RegionOptions::new(CAP)
            .broadcast(policies.len() as u32)
            .backing(Backing::Anonymous),
    )
    .unwrap();
    let mut subs: Vec<Sub> = policies
        .iter()
        .map(|&policy| Sub {
            handle: region.subscriber(policy).unwrap(),
            policy,
            next: 0,
            held: Vec::new(),
        })
        .collect();
    let mut writer: Writer = region.writer().unwrap();
    writer.set_timeout(Some(Duration::ZERO));
    let mut units: Vec<ModelUnit> = Vec::new();
    let mut head = 0u64;
    for op in ops {
        match op {
            Op::Write(len) => {
                let end = unit_end(head, len);
                let pinned = subs.iter().map(|s| s.pin(&units, head)).min();
                let fits = end.saturating_sub(CAP) <= pinned.unwrap_or(u64::MAX);
                let seq = units.len() as u64;
                match writer.write_unit(&[&payload(seq, len)]) {
                    Ok(()) => {
                        prop_assert!(fits, "wrote over pinned bytes (unit {seq}, end {end})");
                        units.push(ModelUnit { start: head, len });
                        head = end;
                    }
                    Err(Error::Timeout { .. }) => prop_assert!(!fits, "refused unit {seq}"),
                    Err(e) => return Err(TestCaseError::fail(format!("write: {e}"))),
                }
            }
            Op::Take(s) => {
                if let Some(sub) = subs.get_mut(s) {
                    take(sub, &units)?;
                }
            }
            Op::End(s, i) => {
                if let Some(sub) = subs.get_mut(s) {
                    if !sub.held.is_empty() {
                        let i = i % sub.held.len();
                        drop(sub.held.swap_remove(i));
                    }
                }
            }
        }
        // Nothing held changed under its holder.
        for sub in &subs {
            for (seq, unit) in &sub.held {
                check_unit(unit, *seq, &units)?;
            }
        }
    }
    // Drain: everything is delivered (backpressure) or accounted for (leaky).
    for sub in &mut subs {
        sub.held.clear();
        while take(sub, &units)? {
            sub.held.clear();
        }
        prop_assert_eq!(sub.next, units.len() as u64);
    }
    Ok(())
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![Just(Policy::Backpressure), Just(Policy::Leaky)]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 400 },
        ..proptest_config("proptest-regressions/broadcast_model.txt")
    })]

    #[test]
    fn broadcast_model(
        policies in prop::collection::vec(policy(), 1..=3),
        ops in prop::collection::vec(op(), 1..if cfg!(miri) { 60 } else { 300 }),
    ) {
        run(policies, ops)?;
    }
}
