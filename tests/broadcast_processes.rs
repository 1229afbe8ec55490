//! Broadcast between processes, with SIGKILL: a subscriber killed at a random moment (possibly
//! holding units) must not stall a writer that waits for it, and a killed writer is reported
//! to every subscriber after what it committed. Every unit carries its sequence number and a
//! pattern derived from it, so duplicates, reordering and corruption are all counted.
//!
//! Children are this test binary started again (see `tests/common/child.rs`).
//! `SHM_ARENA_KILL_ROUNDS=N` runs N rounds of each test instead of 3, `SHM_ARENA_KILL_SEED`
//! repeats a run.

mod common;

use std::time::{Duration, Instant};

use common::child::{env_u64, ChildGuard};
use common::rng::Rng;

use shm_arena::{Error, Policy, Region, RegionOptions};

const ROLE_ENV: &str = "SHM_ARENA_BROADCAST_ROLE";
const COUNT_ENV: &str = "SHM_ARENA_BROADCAST_COUNT";
/// A ring small enough to be lapped many times per round.
const CAPACITY: u64 = 1 << 16;
/// A killed subscriber must stop holding the writer back well before this (the writer looks
/// for dead subscribers every 100 ms while it waits); a test failure, not a benchmark.
const RESUME_BOUND: Duration = Duration::from_secs(2);
/// A dead writer must be reported within this (subscribers check every 100 ms).
const GONE_BOUND: Duration = Duration::from_secs(2);

#[test]
#[ignore = "child-process entry point, started by the other tests"]
fn child_main() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    match role.as_str() {
        "backpressure" => child_subscriber(Policy::Backpressure, false),
        "leaky" => child_subscriber(Policy::Leaky, false),
        "victim" => child_subscriber(Policy::Backpressure, true),
        "writer" => child_writer(),
        other => panic!("unknown child role {other:?}"),
    }
}

/// Length of unit `seq`'s payload: 8 bytes of `seq`, then a pattern, 8..2000 bytes in all.
fn unit_len(seq: u64) -> usize {
    8 + (seq.wrapping_mul(7919) % 1992) as usize
}

fn fill(seq: u64, buf: &mut [u8]) {
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..].fill((seq % 251) as u8);
}

/// The unit's sequence number, if its bytes are what the writer wrote for it.
fn verify(bytes: &[u8]) -> Option<u64> {
    let seq = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    (bytes.len() == unit_len(seq) && bytes[8..].iter().all(|&b| b == (seq % 251) as u8))
        .then_some(seq)
}

/// What a subscriber saw, checked as it went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    delivered: u64,
    missed: u64,
    /// Duplicates, units out of order, units not accounted for by a lag, corrupt units.
    bad: u64,
}

impl Tally {
    /// Counts `seq`: it must be the unit right after everything delivered or missed.
    fn unit(&mut self, seq: Option<u64>) {
        if seq != Some(self.delivered + self.missed) {
            self.bad += 1;
        }
        self.delivered += 1;
    }
}

/// A subscriber child: reads until the writer is gone, holding up to three units and ending
/// them in a shuffled order; reports `DONE delivered missed bad` and how the end came. The
/// victim reads slowly, so the writer mostly waits for it.
fn child_subscriber(policy: Policy, slow: bool) {
    let region = Region::from_env().unwrap();
    let sub = region.subscriber(policy).unwrap();
    common::child::say(&format!("READY {}", sub.slot()));
    let mut rng = Rng::new(u64::from(std::process::id()));
    let mut tally = Tally::default();
    let mut held = Vec::new();
    let end = loop {
        match sub.next_unit(Duration::from_secs(30)) {
            Ok(unit) => {
                tally.unit(unit.blob(0).ok().and_then(verify));
                held.push(unit);
                if held.len() > rng.below(4) as usize {
                    while !held.is_empty() {
                        drop(held.swap_remove(rng.below(held.len() as u64) as usize));
                    }
                }
                if slow {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            Err(Error::Lagged { missed }) => {
                if policy == Policy::Backpressure {
                    tally.bad += 1;
                }
                tally.missed += missed;
            }
            Err(Error::Closed(_)) => break "closed",
            Err(Error::PeerGone { .. }) => break "gone",
            Err(e) => break Box::leak(e.to_string().into_boxed_str()),
        }
    };
    common::child::say(&format!(
        "DONE {} {} {} {end}",
        tally.delivered, tally.missed, tally.bad
    ));
}

/// A writer child: commits `COUNT` units (or until killed), reporting every 1000th.
fn child_writer() {
    let count = env_u64(COUNT_ENV);
    let region = Region::from_env().unwrap();
    let mut writer = region.writer().unwrap();
    writer.set_timeout(Some(Duration::from_secs(30)));
    common::child::say("READY writer");
    for seq in 0..count {
        let mut unit = writer.begin_unit().unwrap();
        fill(seq, unit.blob_mut(unit_len(seq)).unwrap());
        unit.commit().unwrap();
        if seq % 1000 == 999 {
            common::child::say(&format!("COMMITTED {}", seq + 1));
        }
    }
}

fn spawn(role: &str, region: &Region, env: &[(&str, String)]) -> ChildGuard {
    let mut child = ChildGuard::spawn(ROLE_ENV, role, region, env);
    child.wait_for(|l| l.contains("READY"), Duration::from_secs(30));
    child
}

/// The `DONE` report of a subscriber child: its tally and how its stream ended.
fn done(child: &mut ChildGuard) -> (Tally, String) {
    let lines = child.wait_for(|l| l.contains("DONE "), Duration::from_secs(60));
    let line = lines.iter().rev().find(|l| l.contains("DONE ")).unwrap();
    let mut fields = line[line.find("DONE ").unwrap() + 5..].split(' ');
    let mut number = || fields.next().unwrap().parse::<u64>().unwrap();
    let tally = Tally {
        delivered: number(),
        missed: number(),
        bad: number(),
    };
    (tally, fields.collect::<Vec<_>>().join(" "))
}

fn rounds_and_seed(test: &str) -> (u64, Rng) {
    let rounds = std::env::var("SHM_ARENA_KILL_ROUNDS")
        .map(|v| v.parse().expect("SHM_ARENA_KILL_ROUNDS"))
        .unwrap_or(3);
    let seed = std::env::var("SHM_ARENA_KILL_SEED")
        .map(|v| v.parse().expect("SHM_ARENA_KILL_SEED"))
        .unwrap_or_else(|_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{test}: {rounds} rounds, SHM_ARENA_KILL_SEED={seed}");
    (rounds, Rng::new(seed))
}

/// Each round: this process writes; three subscriber processes read (one backpressure, one
/// leaky, and a slow backpressure victim); the victim is SIGKILLed after a random number of
/// units, holding units or not. The writer must resume within [`RESUME_BOUND`] (it laps the
/// ring once more), and the survivors must see every unit (backpressure) or account for every
/// unit as delivered or missed (leaky), in order, uncorrupted.
#[test]
fn broadcast_kill_subscriber() {
    let (rounds, mut rng) = rounds_and_seed("broadcast_kill_subscriber");
    let (mut worst, mut leaky_missed, mut leaky_delivered) = (Duration::ZERO, 0, 0);
    for round in 0..rounds {
        let region = Region::create_with(RegionOptions::new(CAPACITY).broadcast(3)).unwrap();
        let mut survivor = spawn("backpressure", &region, &[]);
        let mut leaky = spawn("leaky", &region, &[]);
        let mut victim = spawn("victim", &region, &[]);
        let mut writer = region.writer().unwrap();
        writer.set_timeout(Some(Duration::from_secs(30)));
        let count = 3_000 + rng.below(3_000);
        let kill_at = 50 + rng.below(count / 2);
        let mut killed = None;
        let mut lapped_since_kill = 0u64;
        let mut buf = vec![0u8; 2000];
        for seq in 0..count {
            if seq == kill_at {
                victim.kill();
                killed = Some(Instant::now());
            }
            let len = unit_len(seq);
            fill(seq, &mut buf[..len]);
            writer.write_unit(&[&buf[..len]]).unwrap();
            if let Some(at) = killed {
                lapped_since_kill += len as u64 + 64;
                if lapped_since_kill > 2 * CAPACITY {
                    // Two laps written after the kill: the dead pin no longer holds the writer.
                    let resumed = at.elapsed();
                    assert!(
                        resumed < RESUME_BOUND,
                        "round {round}: the writer stalled {resumed:?} on a killed subscriber"
                    );
                    worst = worst.max(resumed);
                    killed = None;
                }
            }
        }
        assert!(
            killed.is_none(),
            "round {round}: too few units after the kill"
        );
        drop(writer);
        let (tally, end) = done(&mut survivor);
        assert_eq!(
            (tally, end.as_str()),
            (
                Tally {
                    delivered: count,
                    missed: 0,
                    bad: 0
                },
                "closed"
            ),
            "round {round}: the backpressure survivor"
        );
        let (tally, end) = done(&mut leaky);
        assert_eq!(tally.bad, 0, "round {round}: leaky {tally:?}");
        assert_eq!(
            tally.delivered + tally.missed,
            count,
            "round {round}: leaky {tally:?}"
        );
        assert_eq!(end, "closed");
        leaky_missed += tally.missed;
        leaky_delivered += tally.delivered;
        victim.reap();
    }
    eprintln!(
        "broadcast_kill_subscriber: {rounds} rounds; writer resumed at worst {worst:?} after \
         the kill (two laps written); leaky survivors: {leaky_delivered} delivered + \
         {leaky_missed} missed, every unit accounted for; 0 duplicates, 0 reordered, 0 corrupt"
    );
}

/// Each round: a writer process commits units until it is SIGKILLed at a random moment; two
/// subscribers here (backpressure and leaky, each on its thread) must receive an in-order,
/// duplicate-free, uncorrupted stream and then `PeerGone` within [`GONE_BOUND`]; the
/// backpressure one every unit committed, the leaky one every unit delivered or missed.
#[test]
fn broadcast_kill_writer() {
    let (rounds, mut rng) = rounds_and_seed("broadcast_kill_writer");
    let (mut worst, mut total) = (Duration::ZERO, 0);
    for round in 0..rounds {
        let region = Region::create_with(RegionOptions::new(CAPACITY).broadcast(2)).unwrap();
        let subs = [Policy::Backpressure, Policy::Leaky].map(|p| region.subscriber(p).unwrap());
        let mut writer = spawn("writer", &region, &[(COUNT_ENV, u64::MAX.to_string())]);
        let readers: Vec<_> = subs
            .into_iter()
            .map(|sub| {
                std::thread::spawn(move || {
                    let mut tally = Tally::default();
                    loop {
                        match sub.next_unit(Duration::from_secs(30)) {
                            Ok(unit) => tally.unit(unit.blob(0).ok().and_then(verify)),
                            Err(Error::Lagged { missed }) => {
                                if sub.policy() == Policy::Backpressure {
                                    tally.bad += 1;
                                }
                                tally.missed += missed;
                            }
                            Err(Error::PeerGone { .. }) => break (tally, Instant::now()),
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        let units = 1000 * (1 + rng.below(20));
        writer.wait_for(
            |l| l.contains(&format!("COMMITTED {units}")),
            Duration::from_secs(60),
        );
        std::thread::sleep(Duration::from_micros(rng.below(3000)));
        writer.kill();
        let killed = Instant::now();
        writer.reap();
        let results: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
        let (bp, _) = results[0];
        let (leaky, _) = results[1];
        assert_eq!(bp.bad, 0, "round {round}: {bp:?}");
        assert_eq!(bp.missed, 0, "round {round}: {bp:?}");
        assert!(bp.delivered >= units, "round {round}: {bp:?}");
        assert_eq!(leaky.bad, 0, "round {round}: {leaky:?}");
        assert_eq!(
            leaky.delivered + leaky.missed,
            bp.delivered,
            "round {round}: every committed unit delivered or missed"
        );
        for (_, gone_at) in &results {
            let delay = gone_at.saturating_duration_since(killed);
            assert!(
                delay < GONE_BOUND,
                "round {round}: PeerGone after {delay:?}"
            );
            worst = worst.max(delay);
        }
        total += bp.delivered;
    }
    eprintln!(
        "broadcast_kill_writer: {rounds} rounds, {total} units committed and delivered; \
         PeerGone at worst {worst:?} after the kill; 0 duplicates, 0 reordered, 0 corrupt"
    );
}
