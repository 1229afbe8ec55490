//! Liveness at the edges, with real child processes and real SIGKILL:
//!
//! - a writer that dies before it attaches is noticed by a waiting reader (`PeerGone`, not a
//!   full-timeout wait);
//! - an SPSC reader that dies holding units is replaced: a new reader takes the role over,
//!   the dead one's units are released (lost to it, never delivered twice) and the writer
//!   continues;
//! - an SPSC writer that dies mid-stream is replaced: a new writer continues after the last
//!   unit the dead one committed;
//! - kill rounds (`SHM_ARENA_KILL_ROUNDS`, default 10) kill each role at random moments and
//!   check every delivered unit, the order, and how late the death was noticed.
//!
//! Children are this test binary started again running the ignored `child_main` test with a
//! role in an environment variable (see `common::child`).

mod common;

use std::time::{Duration, Instant};

use common::child::{env_u64, park_until_killed as park, say, ChildGuard};
use common::rng::{checksum, Rng};
use shm_arena::{Error, Reader, Region, RegionOptions, Role, Unit, Writer};

const ROLE_ENV: &str = "SHM_ARENA_LIVENESS_ROLE";
/// Seed of the stream (and of the kill moments) a child uses.
const SEED_ENV: &str = "SHM_ARENA_LIVENESS_SEED";
/// Number of units a reader child takes before it says how many it holds and parks.
const TAKE_ENV: &str = "SHM_ARENA_LIVENESS_TAKE";
/// What every wait in these tests may take at most; a dead peer must be noticed far sooner.
const LONG: Duration = Duration::from_secs(10);

#[test]
#[ignore = "child-process entry point, started by the other tests"]
fn child_main() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    match role.as_str() {
        "never_attaches" => park(),
        "holding_reader" => child_holding_reader(),
        "stream_writer" => child_stream_writer(),
        "one_unit_writer" => child_one_unit_writer(),
        other => panic!("unknown child role {other:?}"),
    }
}

/// A child playing `role`, sharing `region`.
fn spawn(role: &str, region: &Region, env: &[(&str, String)]) -> ChildGuard {
    ChildGuard::spawn(ROLE_ENV, role, region, env)
}

/// The text after `prefix` in the first line of the child's that holds it.
fn wait_line(child: &mut ChildGuard, prefix: &str) -> String {
    let seen = child.wait_for(|line| line.contains(prefix), LONG);
    let line = seen.last().expect("the line waited for");
    // The harness prints "test child_main ... " without a line break first.
    let at = line.find(prefix).expect("the line holds the prefix");
    line[at + prefix.len()..].trim().to_string()
}

// ---------------------------------------------------------------------------------------------
// The stream: unit `seq` holds its sequence number, then bytes from a seeded generator, and a
// checksum of both, so a reader can tell a unit that is wrong, torn, repeated or missing.
// ---------------------------------------------------------------------------------------------

fn write_seq(writer: &mut Writer, seed: u64, seq: u64) -> shm_arena::Result<()> {
    let mut rng = Rng::new(seed ^ seq.wrapping_mul(0x9E37_79B9));
    let len = 64 + rng.below(3000) as usize;
    let mut unit = writer.begin_unit()?;
    unit.push(&seq.to_le_bytes())?;
    let body = unit.blob_mut(len)?;
    rng.fill(body);
    let sum = checksum(seq, body);
    unit.push(&sum.to_le_bytes())?;
    unit.commit()
}

/// The unit's sequence number, after checking its bytes.
fn check_seq(unit: &Unit<'_>) -> u64 {
    assert_eq!(
        unit.blob_count(),
        3,
        "unit at {} has a wrong shape",
        unit.position()
    );
    let seq = u64::from_le_bytes(unit.blob(0).unwrap().try_into().unwrap());
    let body = unit.blob(1).unwrap();
    let sum = u64::from_le_bytes(unit.blob(2).unwrap().try_into().unwrap());
    assert_eq!(checksum(seq, body), sum, "unit {seq} is corrupt");
    seq
}

/// Takes `n` units, checking they continue the stream from `first`; ends them as it goes.
fn read_in_order(reader: &Reader, first: u64, n: u64) {
    for expected in first..first + n {
        let unit = reader.next_unit(LONG).unwrap();
        assert_eq!(check_seq(&unit), expected, "order or duplicate");
    }
}

/// Attaches a reader, retrying while the dead holder is not yet seen dead (a killed process
/// takes a moment to become a zombie).
fn take_over_reader(region: &Region) -> Reader {
    let until = Instant::now() + LONG;
    loop {
        match region.reader() {
            Ok(reader) => return reader,
            Err(Error::RoleTaken { .. }) if Instant::now() < until => {
                std::thread::sleep(Duration::from_micros(200))
            }
            other => panic!("taking over the reader role: {other:?}"),
        }
    }
}

/// The same for the writer role.
fn take_over_writer(region: &Region) -> Writer {
    let until = Instant::now() + LONG;
    loop {
        match region.writer() {
            Ok(writer) => return writer,
            Err(Error::RoleTaken { .. }) if Instant::now() < until => {
                std::thread::sleep(Duration::from_micros(200))
            }
            other => panic!("taking over the writer role: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. A writer that dies before it attaches
// ---------------------------------------------------------------------------------------------

/// The child is killed right after it was started (before it could open the region); the
/// reader waiting for its first unit gets `PeerGone` with the child's pid within a few peer
/// checks, not `Timeout` after its whole deadline. Reaped or left a zombie: both are dead.
#[test]
fn a_writer_that_dies_before_attaching_is_noticed() {
    for reap in [false, true] {
        let region = Region::create(1 << 16).unwrap();
        let reader = region.reader().unwrap();
        let mut child = spawn("never_attaches", &region, &[]);
        let pid = child.pid();
        child.kill();
        if reap {
            child.reap();
        }
        let started = Instant::now();
        match reader.next_unit(LONG) {
            Err(Error::PeerGone {
                role: Role::Writer,
                pid: gone,
            }) => assert_eq!(gone, pid),
            other => panic!("reap {reap}: expected PeerGone, got {other:?}"),
        }
        let waited = started.elapsed();
        assert!(waited < LONG / 4, "noticed only after {waited:?}");
        // The same for a side asking for the other to attach.
        assert!(matches!(
            region.wait_for_peer(Role::Writer, LONG),
            Err(Error::PeerGone { pid: gone, .. }) if gone == pid
        ));
    }
}

/// A child that lives but has not attached yet is waited for (no false `PeerGone`), and once
/// a handle attaches in the parent the region no longer expects the child.
#[test]
fn a_live_child_that_has_not_attached_is_waited_for() {
    let region = Region::create(1 << 16).unwrap();
    let reader = region.reader().unwrap();
    let _child = spawn("never_attaches", &region, &[]);
    // Three peer checks' worth: the child runs, so nothing but the deadline ends the wait.
    assert!(matches!(
        reader.next_unit(Duration::from_millis(350)),
        Err(Error::Timeout { .. })
    ));
    assert!(matches!(
        region.wait_for_peer(Role::Writer, Duration::from_millis(50)),
        Err(Error::Timeout { .. })
    ));
}

/// Attaches as the writer, commits one unit, says so, and waits to be killed.
fn child_one_unit_writer() {
    let region = Region::from_env().unwrap();
    let mut writer = region.writer().unwrap();
    writer.write_unit(&[b"only"]).unwrap();
    say("wrote 1");
    park();
}

/// A caller that waits in slices shorter than the peer-check interval (a binding looking for
/// signals between them) still learns that the writer died: each slice that times out looks at
/// the peers once.
#[test]
fn waits_in_short_slices_still_see_a_dead_writer() {
    let region = Region::create(1 << 16).unwrap();
    let reader = region.reader().unwrap();
    let mut child = spawn("one_unit_writer", &region, &[]);
    assert_eq!(wait_line(&mut child, "wrote "), "1");
    assert_eq!(reader.next_unit(LONG).unwrap().blob(0).unwrap(), b"only");
    child.kill();
    let killed_at = Instant::now();
    loop {
        match reader.next_unit(Duration::from_millis(50)) {
            Err(Error::Timeout { .. }) if killed_at.elapsed() < LONG => {}
            Err(Error::PeerGone {
                role: Role::Writer, ..
            }) => break,
            other => panic!("waiting in 50 ms slices for a killed writer: {other:?}"),
        }
    }
    assert!(
        killed_at.elapsed() < LONG / 4,
        "noticed after {:?}",
        killed_at.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// 2. SPSC reader takeover
// ---------------------------------------------------------------------------------------------

/// Takes `TAKE_ENV` units (checking them), keeps every one of them, says how many it took,
/// and waits to be killed.
fn child_holding_reader() {
    let region = Region::from_env().unwrap();
    let reader = region.reader().unwrap();
    let take = env_u64(TAKE_ENV);
    let mut held = Vec::new();
    for expected in 0..take {
        let unit = reader.next_unit(LONG).unwrap();
        assert_eq!(check_seq(&unit), expected);
        held.push(unit);
    }
    say(&format!("took {take}"));
    park();
}

/// A reader killed while it holds units, with the writer blocked on a full ring: the writer
/// gets its space back (its wait ends within a few peer checks), a new reader takes the role
/// over and continues right after the last unit the dead one took (none delivered twice, none
/// skipped that the dead one had not taken).
#[test]
fn a_dead_spsc_reader_is_replaced_and_the_writer_continues() {
    let region = Region::create(1 << 16).unwrap();
    let mut writer = region.writer().unwrap();
    writer.set_timeout(Some(LONG));
    let seed = 7;
    let take = 5;
    let mut child = spawn(
        "holding_reader",
        &region,
        &[(SEED_ENV, seed.to_string()), (TAKE_ENV, take.to_string())],
    );
    // Fill the ring: units 0..n; the child holds the first `take`.
    let mut next = 0;
    while write_seq_now(&mut writer, seed, next) {
        next += 1;
    }
    assert!(next > take, "the ring holds more than the child takes");
    assert_eq!(wait_line(&mut child, "took "), take.to_string());
    // The writer blocks for space; the reader dies under it.
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        child.kill();
        (child, Instant::now())
    });
    let blocked = write_seq(&mut writer, seed, next);
    let (child, killed_at) = killer.join().unwrap();
    let resumed = killed_at.elapsed();
    // The dead reader's units were released, so the write found room (or, had it not, the
    // dead reader was reported); either way within a few peer checks, not the deadline.
    match blocked {
        Ok(()) => next += 1,
        Err(Error::PeerGone {
            role: Role::Reader, ..
        }) => {}
        other => panic!("blocked write: {other:?}"),
    }
    assert!(
        resumed < LONG / 4,
        "the writer waited {resumed:?} after the kill"
    );
    let reader = take_over_reader(&region);
    read_in_order(&reader, take, next - take);
    // The stream goes on through the new reader, more than a ring's worth.
    for seq in next..next + 100 {
        write_seq(&mut writer, seed, seq).unwrap();
        let unit = reader.next_unit(LONG).unwrap();
        assert_eq!(check_seq(&unit), seq);
    }
    drop(child);
}

/// `write_seq` only if it fits without waiting.
fn write_seq_now(writer: &mut Writer, seed: u64, seq: u64) -> bool {
    let timeout = writer.timeout();
    writer.set_timeout(Some(Duration::ZERO));
    let done = write_seq(writer, seed, seq);
    writer.set_timeout(timeout);
    match done {
        Ok(()) => true,
        Err(Error::Timeout { .. }) => false,
        Err(e) => panic!("writing unit {seq}: {e:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 3. SPSC writer takeover
// ---------------------------------------------------------------------------------------------

/// Writes the stream from 0 as fast as the ring allows (saying so after unit 10) until killed.
fn child_stream_writer() {
    let region = Region::from_env().unwrap();
    let mut writer = region.writer().unwrap();
    writer.set_timeout(Some(LONG * 6));
    let seed = env_u64(SEED_ENV);
    for seq in 0.. {
        if write_seq(&mut writer, seed, seq).is_err() {
            park();
        }
        if seq == 10 {
            say("wrote 10");
        }
    }
}

/// A writer killed mid-stream: the reader gets every unit it committed, in order and intact,
/// then `PeerGone` within a few peer checks; a new writer takes the role over and its units
/// follow the dead one's last committed unit.
#[test]
fn a_dead_spsc_writer_is_replaced_and_the_stream_continues() {
    let region = Region::create(1 << 16).unwrap();
    let reader = region.reader().unwrap();
    let seed = 11;
    let mut child = spawn("stream_writer", &region, &[(SEED_ENV, seed.to_string())]);
    let mut next = 0;
    // Read 50 units, then kill the child mid-stream.
    read_in_order(&reader, 0, 50);
    next += 50;
    assert_eq!(wait_line(&mut child, "wrote "), "10");
    child.kill();
    let killed_at = Instant::now();
    let noticed = loop {
        match reader.next_unit(LONG) {
            Ok(unit) => {
                assert_eq!(check_seq(&unit), next, "order or duplicate");
                next += 1;
            }
            Err(Error::PeerGone {
                role: Role::Writer, ..
            }) => break killed_at.elapsed(),
            Err(e) => panic!("after unit {next}: {e:?}"),
        }
    };
    assert!(next >= 50, "every committed unit is delivered ({next})");
    assert!(
        noticed < LONG / 4,
        "the death was noticed after {noticed:?}"
    );
    let mut writer = take_over_writer(&region);
    for seq in next..next + 200 {
        write_seq(&mut writer, seed, seq).unwrap();
        let unit = reader.next_unit(LONG).unwrap();
        assert_eq!(check_seq(&unit), seq, "the new writer continues the stream");
    }
    drop(child);
}

// ---------------------------------------------------------------------------------------------
// 4. Kill rounds
// ---------------------------------------------------------------------------------------------

fn kill_rounds() -> u64 {
    std::env::var("SHM_ARENA_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// Each round: a reader child takes a random number of units and is killed at a random moment
/// while the parent writes; the parent takes the reader role over and must continue exactly
/// after the units the child took (it reports them; a unit taken between its report and its
/// death counts as taken: it must never come again, and nothing after it may be missing).
#[test]
fn kill_rounds_spsc_reader() {
    let rounds = kill_rounds();
    let mut worst = Duration::ZERO;
    for round in 0..rounds {
        let seed = 1000 + round;
        let mut rng = Rng::new(seed);
        let region = Region::create_with(RegionOptions::new(1 << 16)).unwrap();
        let mut writer = region.writer().unwrap();
        writer.set_timeout(Some(LONG));
        let take = 1 + rng.below(20);
        let mut child = spawn(
            "holding_reader",
            &region,
            &[(SEED_ENV, seed.to_string()), (TAKE_ENV, take.to_string())],
        );
        let mut next = 0;
        // Some rounds kill the child while it is still taking units, others once it holds
        // them all and the writer is blocked on a full ring.
        let early = rng.below(2) == 0;
        if early {
            for _ in 0..rng.below(take) {
                write_seq(&mut writer, seed, next).unwrap();
                next += 1;
            }
            std::thread::sleep(Duration::from_micros(rng.below(2000)));
            child.kill();
        } else {
            while write_seq_now(&mut writer, seed, next) {
                next += 1;
            }
            assert_eq!(wait_line(&mut child, "took "), take.to_string());
            child.kill();
        }
        let killed_at = Instant::now();
        let reader = take_over_reader(&region);
        worst = worst.max(killed_at.elapsed());
        // Where the new reader starts says how many units the child took: never fewer than
        // it reported, never more than were written; from there on nothing is missing or
        // repeated, through the units the child left unread and 40 new ones.
        let target = next + 40;
        let mut written = next;
        let mut expected: Option<u64> = None;
        while expected != Some(target) {
            while written < target && write_seq_now(&mut writer, seed, written) {
                written += 1;
            }
            let unit = reader.next_unit(LONG).unwrap();
            let got = check_seq(&unit);
            match expected {
                None => assert!(
                    got <= next && (early || got == take),
                    "round {round}: the new reader started at unit {got} (written {next}, \
                     child took {take}, killed early: {early})"
                ),
                Some(e) => assert_eq!(got, e, "round {round}: a unit is missing or repeated"),
            }
            expected = Some(got + 1);
        }
        drop(child);
    }
    println!("kill rounds (SPSC reader): {rounds}, worst time from SIGKILL to takeover {worst:?}");
}

/// Each round: a writer child streams and is killed at a random moment; the parent reads
/// every unit it committed (in order, intact), gets `PeerGone`, takes the writer role over
/// and continues the stream.
#[test]
fn kill_rounds_spsc_writer() {
    let rounds = kill_rounds();
    let mut worst = Duration::ZERO;
    for round in 0..rounds {
        let seed = 5000 + round;
        let mut rng = Rng::new(seed);
        let region = Region::create(1 << 16).unwrap();
        let reader = region.reader().unwrap();
        let mut child = spawn("stream_writer", &region, &[(SEED_ENV, seed.to_string())]);
        let mut next = 0;
        let before = rng.below(150);
        read_in_order(&reader, 0, before);
        next += before;
        std::thread::sleep(Duration::from_micros(rng.below(3000)));
        child.kill();
        let killed_at = Instant::now();
        let noticed = loop {
            match reader.next_unit(LONG) {
                Ok(unit) => {
                    assert_eq!(check_seq(&unit), next, "round {round}: order or duplicate");
                    next += 1;
                }
                Err(Error::PeerGone {
                    role: Role::Writer, ..
                }) => break killed_at.elapsed(),
                Err(e) => panic!("round {round} after unit {next}: {e:?}"),
            }
        };
        worst = worst.max(noticed);
        assert!(
            noticed < LONG / 4,
            "round {round}: noticed after {noticed:?}"
        );
        let mut writer = take_over_writer(&region);
        for seq in next..next + 20 {
            write_seq(&mut writer, seed, seq).unwrap();
            let unit = reader.next_unit(LONG).unwrap();
            assert_eq!(check_seq(&unit), seq, "round {round}: the stream continues");
        }
        drop(child);
    }
    println!("kill rounds (SPSC writer): {rounds}, worst time from SIGKILL to PeerGone {worst:?}");
}
